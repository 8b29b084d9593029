"""HTTP: the protocol (httptools), the routes, the static client, file uploads."""
