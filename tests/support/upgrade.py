"""The HTTP/1.1 request that asks a server to upgrade a connection to WebSocket."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable


def upgrade_request(
    host: str,
    port: int,
    path: str = "/ws",
    headers: Iterable[tuple[str, str]] = (),
    *,
    connection: str = "Upgrade",
) -> tuple[bytes, bytes]:
    """The request (with ``headers`` added) and its base64 Sec-WebSocket-Key.

    ``connection`` is the Connection header's value.
    """
    key = base64.b64encode(os.urandom(16))
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        f"Connection: {connection}",
        f"Sec-WebSocket-Key: {key.decode()}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), key
