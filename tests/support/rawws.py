"""A raw-socket WebSocket client for tests that need byte-level control of the wire.

Unlike the picows client it shows every frame exactly as received (header included),
sends frames the way the test builds them (any opcode, RSV1, FIN, size), reads only when
the test asks (so a test can stop reading and let the server's buffers fill up), and
hands back the HTTP response of a refused upgrade.
"""

from __future__ import annotations

import asyncio
import socket
import zlib
from typing import Any

import orjson

from tests.support.frames import (
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    TAIL,
    Frame,
    client_frame,
    parse_frame,
)
from tests.support.upgrade import upgrade_request
from tests.support.waiting import is_event


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
        request, _key = upgrade_request(host, port, path, headers, connection=connection)
        await loop.sock_sendall(sock, request)
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

    async def recv_frame(self, timeout: float = 5.0) -> Frame:
        """The next frame; raises EOFError (or ConnectionResetError) when the socket ends."""
        return await asyncio.wait_for(self._recv_frame(), timeout)

    async def _recv_frame(self) -> Frame:
        while (frame := parse_frame(self._buffer)) is None:
            await self._fill()
        del self._buffer[: len(frame.raw)]
        assert not frame.masked, "server frames must not be masked"
        return frame

    def decode(self, frame: Frame) -> dict[str, Any]:
        """The JSON event in a single-frame text message, inflating it if RSV1 is set.

        One long-lived inflater handles both server modes: a full flush (shared mode)
        simply leaves it nothing to refer back to.
        """
        assert frame.opcode == OP_TEXT and frame.fin, frame
        payload = frame.payload
        if frame.rsv1:
            payload = self._inflater.decompress(payload + TAIL)
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
            if is_event(message, event_type, match):
                return frame, message["data"]

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
