"""Raw HTTP over a plain socket, for tests that need the exact bytes the server sends."""

from __future__ import annotations

import socket


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """Everything ``sock`` receives until the server closes it or ``timeout`` passes."""
    sock.settimeout(timeout)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except TimeoutError:
        pass
    return b"".join(chunks)
