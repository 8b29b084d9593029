"""A raw-socket WebSocket client for tests that need byte-level control of the wire.

Unlike the picows client it shows every frame exactly as received (header included),
sends frames the way the test builds them (any opcode, RSV1, FIN, size), reads only when
the test asks (so a test can stop reading and let the server's buffers fill up), and
hands back the HTTP response of a refused upgrade.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import orjson

from fastchat.ws.frames import (  # noqa: F401  (re-exported for the tests)
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
)

_TAIL = b"\x00\x00\xff\xff"


@dataclass(frozen=True, slots=True)
class Frame:
    """One server frame: its parsed fields and its exact bytes on the wire."""

    fin: bool
    rsv1: bool
    opcode: int
    payload: bytes
    raw: bytes

    @property
    def close_code(self) -> int | None:
        if self.opcode != OP_CLOSE:
            return None
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else 1005


def mask(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte masking ``key`` (RFC 6455 section 5.3)."""
    n = len(payload)
    if not n:
        return b""
    keystream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(n, "big")


def client_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv1: bool = False,
    rsv2: bool = False,
    rsv3: bool = False,
    masked: bool = True,
) -> bytes:
    """A client-to-server frame, masked unless told otherwise."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    first |= (0x20 if rsv2 else 0) | (0x10 if rsv3 else 0)
    mask_bit = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", first, mask_bit | n)
    elif n < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, n)
    if not masked:
        return header + payload
    key = os.urandom(4)
    return header + key + mask(payload, key)


def compress_message(payload: bytes) -> bytes:
    """``payload`` as a permessage-deflate message body (raw deflate without the tail)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(_TAIL)
    return data[:-4]


class RawWS:
    """One TCP connection speaking WebSocket by hand (see the module docstring)."""

    def __init__(self, sock: socket.socket, status: int, headers: dict[str, list[str]]):
        self.sock = sock
        self.status = status
        self.headers = headers  # lower-cased names -> values, of the handshake response
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._inflater = zlib.decompressobj(-15)

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        path: str = "/ws",
        headers: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
        *,
        connection: str = "Upgrade",
        rcvbuf: int | None = None,
        timeout: float = 5.0,
    ) -> RawWS:
        """Connect and send the upgrade request; ``status`` tells whether it was accepted.

        ``connection`` is the Connection header's value. ``rcvbuf`` sets SO_RCVBUF before
        connecting, which caps the TCP window the server can fill while the test is not
        reading.
        """
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            f"Connection: {connection}",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in headers),
        ]
        await loop.sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode())
        client = cls(sock, 0, {})
        head = await asyncio.wait_for(client._read_until(b"\r\n\r\n"), timeout)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        client.status = int(status_line.split(" ", 2)[1])
        for line in header_lines:
            name, _, value = line.partition(":")
            client.headers.setdefault(name.strip().lower(), []).append(value.strip())
        return client

    @property
    def extensions(self) -> str | None:
        """The response's Sec-WebSocket-Extensions, if any."""
        values = self.headers.get("sec-websocket-extensions")
        return ", ".join(values) if values else None

    # --- sending --------------------------------------------------------------------------

    async def send_bytes(self, data: bytes) -> None:
        await self._loop.sock_sendall(self.sock, data)

    async def send_frame(
        self, opcode: int, payload: bytes, *, fin: bool = True, rsv1: bool = False
    ) -> None:
        await self.send_bytes(client_frame(opcode, payload, fin=fin, rsv1=rsv1))

    async def send_json(self, **message: Any) -> None:
        await self.send_frame(OP_TEXT, orjson.dumps(message))

    # --- receiving ------------------------------------------------------------------------

    async def _fill(self) -> None:
        data = await self._loop.sock_recv(self.sock, 65536)
        if not data:
            raise EOFError("connection closed by the server")
        self._buffer += data

    async def _read_until(self, marker: bytes) -> bytes:
        while (end := self._buffer.find(marker)) < 0:
            await self._fill()
        head = bytes(self._buffer[:end])
        del self._buffer[: end + len(marker)]
        return head

    async def _read_exactly(self, n: int) -> None:
        while len(self._buffer) < n:
            await self._fill()

    async def recv_frame(self, timeout: float = 5.0) -> Frame:
        """The next frame; raises EOFError (or ConnectionResetError) when the socket ends."""
        return await asyncio.wait_for(self._recv_frame(), timeout)

    async def _recv_frame(self) -> Frame:
        await self._read_exactly(2)
        first, second = self._buffer[0], self._buffer[1]
        assert not second & 0x80, "server frames must not be masked"
        length = second & 0x7F
        offset = 2
        if length == 126:
            await self._read_exactly(4)
            length = struct.unpack_from("!H", self._buffer, 2)[0]
            offset = 4
        elif length == 127:
            await self._read_exactly(10)
            length = struct.unpack_from("!Q", self._buffer, 2)[0]
            offset = 10
        await self._read_exactly(offset + length)
        raw = bytes(self._buffer[: offset + length])
        del self._buffer[: offset + length]
        return Frame(
            fin=bool(first & 0x80),
            rsv1=bool(first & 0x40),
            opcode=first & 0x0F,
            payload=raw[offset:],
            raw=raw,
        )

    def decode(self, frame: Frame) -> dict[str, Any]:
        """The JSON event in a single-frame text message, inflating it if RSV1 is set.

        One long-lived inflater handles both server modes: a full flush (shared mode)
        simply leaves it nothing to refer back to.
        """
        assert frame.opcode == OP_TEXT and frame.fin, frame
        payload = frame.payload
        if frame.rsv1:
            payload = self._inflater.decompress(payload + _TAIL)
        return orjson.loads(payload)

    async def next_event(self, timeout: float = 5.0) -> tuple[Frame, dict[str, Any]]:
        """The next text frame and its event, skipping pings."""
        while True:
            frame = await self.recv_frame(timeout)
            if frame.opcode == OP_TEXT:
                return frame, self.decode(frame)
            assert frame.opcode == OP_PING, f"unexpected frame {frame}"

    async def expect(
        self, event_type: str, timeout: float = 5.0, **match: Any
    ) -> tuple[Frame, dict[str, Any]]:
        """Skip events until one of ``event_type`` whose data has ``match``; (frame, data)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame, message = await self.next_event(max(deadline - loop.time(), 0))
            data = message["data"]
            if message["type"] == event_type and all(data.get(k) == v for k, v in match.items()):
                return frame, data

    async def closed(self, timeout: float = 5.0) -> int | None:
        """Read until the server ends the connection; the close code it sent, if any."""

        async def drain() -> int | None:
            code = None
            try:
                while True:
                    frame = await self._recv_frame()
                    if frame.opcode == OP_CLOSE:
                        code = frame.close_code
            except (EOFError, ConnectionResetError):
                return code

        return await asyncio.wait_for(drain(), timeout)

    def close(self) -> None:
        self.sock.close()
