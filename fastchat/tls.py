"""TLS on the server's own port: the certificate chain and key, loaded once at start."""

from __future__ import annotations

import ssl

from fastchat.config import ConfigError, ServerConfig


def server_context(config: ServerConfig) -> ssl.SSLContext | None:
    """The context for https and wss, or None when no certificate is configured.

    Raises :class:`ConfigError` naming the key and the file when a file is missing or the
    certificate and key cannot be used together.
    """
    cert, key = config.tls_cert_file, config.tls_key_file
    if cert is None or key is None:
        return None
    for name, path in (("tls_cert_file", cert), ("tls_key_file", key)):
        if not path.is_file():
            raise ConfigError(f"'server.{name}' {path}: file not found")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        problem = (
            "the key does not belong to the certificate"
            if exc.reason == "KEY_VALUES_MISMATCH"
            else f"not a PEM certificate chain and its private key ({exc.reason or exc})"
        )
        raise ConfigError(
            f"'server.tls_cert_file' {cert}, 'server.tls_key_file' {key}: {problem}"
        ) from None
    except OSError as exc:  # unreadable: permissions, a folder, I/O errors
        raise ConfigError(
            f"'server.tls_cert_file' {cert}, 'server.tls_key_file' {key}: {exc.strerror}"
        ) from None
    return context
