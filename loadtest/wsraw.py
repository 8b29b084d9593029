"""A minimal client-side WebSocket (RFC 6455) on a raw asyncio ``BufferedProtocol``.

Built for counting millions of frames per second from Python: in *count* mode a read is
walked header by header (2/4/10-byte headers, payloads skipped, no copies, no JSON). In
*message* mode every message is reassembled (and inflated when permessage-deflate was
negotiated) and handed to a callback with the receive time. A client starts in message
mode (to see ``authenticated``/``room_joined``) and can switch to count mode at any point.
In count mode, ``on_data`` (when set) also sees every read, unparsed: a publisher scans the
raw stream for its own markers (:class:`MarkerCounter`) instead of parsing every broadcast.

All protocols share one receive buffer: the event loop calls ``get_buffer`` and then
``buffer_updated`` back to back on one thread, and count mode never keeps a reference to it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import struct
import time
import zlib
from collections.abc import Callable

from tests.support.frames import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, client_frame
from tests.support.upgrade import upgrade_request

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_SHARED_BUFFER = bytearray(256 * 1024)
_SHARED_VIEW = memoryview(_SHARED_BUFFER)
_HEAD = struct.Struct(">BBH")  # opcode byte, length byte, 16-bit extended length
_DEFLATE_OFFER = ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")
_MAX_HEAD = 16 * 1024

OnMessage = Callable[[bytes, int], None]
OnData = Callable[[bytearray, int, int], None]  # (buffer, start, end), valid during the call


def ignore(_payload: bytes, _received_ns: int) -> None:
    """The default handler: stay in message mode (keeps the inflater in sync) and drop it."""


class MarkerCounter:
    """Counts a marker in a byte stream read in chunks, including markers cut by a read."""

    __slots__ = ("_carry", "count", "marker")

    def __init__(self, marker: bytes):
        self.marker = marker
        self.count = 0
        self._carry = b""  # the stream's last len(marker) - 1 bytes

    def feed(self, buf: bytes | bytearray, start: int, end: int) -> None:
        marker = self.marker
        keep = len(marker) - 1
        # Neither the carry nor the chunk's first `keep` bytes can hold a whole marker, so
        # every match in their junction spans the boundary and was not counted before.
        junction = self._carry + bytes(buf[start : min(end, start + keep)])
        self.count += junction.count(marker) + buf.count(marker, start, end)
        if end - start >= keep:
            self._carry = bytes(buf[end - keep : end])
        else:
            self._carry = junction[-keep:]


class HandshakeError(Exception):
    """The server did not answer the upgrade with a valid 101."""


class RawClient(asyncio.BufferedProtocol):
    """One WebSocket connection; ``frames`` counts data frames received since the upgrade."""

    def __init__(self, host: str, port: int, path: str, *, compression: bool = False):
        self.frames = 0
        self.close_code: int | None = None
        self.on_message: OnMessage | None = ignore
        self.on_data: OnData | None = None  # count mode only, plain (uncompressed) streams
        self.transport: asyncio.Transport | None = None
        self.deflate = False
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        headers = [_DEFLATE_OFFER] if compression else []
        self._request, key = upgrade_request(host, port, path, headers)
        self._accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        self._handshake: bytearray | None = bytearray()
        self._pending = bytearray()  # message mode: bytes not yet parsed
        self._fragments: list[bytes] = []
        self._compressed = False  # the message being reassembled has RSV1 set
        self._skip = 0  # count mode: payload bytes of the current frame still to come
        self._head = b""  # count mode: an incomplete header (or control frame) carried over
        self._inflater: zlib._Decompress | None = None
        self._reset_inflater = False

    # --- sending --------------------------------------------------------------------------

    def send(self, payload: bytes) -> None:
        """Send one text message (``payload`` is UTF-8 JSON)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(OP_TEXT, payload))

    def send_many(self, payloads: list[bytes]) -> None:
        """Send several text messages in one write."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(client_frame(OP_TEXT, payload) for payload in payloads))

    def close(self, code: int = 1000) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(OP_CLOSE, code.to_bytes(2, "big")))
            self.transport.close()

    # --- asyncio protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(exc or HandshakeError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _SHARED_VIEW

    def buffer_updated(self, nbytes: int) -> None:
        buf = _SHARED_BUFFER
        start = 0
        if self._handshake is not None:
            start = self._read_handshake(buf, nbytes)
            if start < 0:
                return
        if self.on_message is None and not self._pending:
            if self.on_data is not None:
                self.on_data(buf, start, nbytes)
            self._count(buf, start, nbytes)
        else:
            self._pending += _SHARED_VIEW[start:nbytes]
            self._parse(time.monotonic_ns())

    # --- handshake ------------------------------------------------------------------------

    def _read_handshake(self, buf: bytearray, nbytes: int) -> int:
        """Returns where the frames start in ``buf``, or -1 while the head is incomplete."""
        assert self._handshake is not None
        before = len(self._handshake)
        self._handshake += _SHARED_VIEW[:nbytes]
        end = self._handshake.find(b"\r\n\r\n")
        if end < 0:
            if len(self._handshake) > _MAX_HEAD:
                self._fail(HandshakeError("response head too large"))
            return -1
        head = bytes(self._handshake[:end]).decode("latin-1")
        self._handshake = None
        status, *header_lines = head.split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        accepted = headers.get("sec-websocket-accept") == self._accept.decode()
        if not status.startswith("HTTP/1.1 101") or not accepted:
            self._fail(HandshakeError(f"upgrade refused: {status}"))
            return -1
        extensions = headers.get("sec-websocket-extensions", "")
        if "permessage-deflate" in extensions:
            self.deflate = True
            self._inflater = zlib.decompressobj(-15)
            self._reset_inflater = "server_no_context_takeover" in extensions
        self.upgraded.set_result(None)
        return end + 4 - before

    def _fail(self, exc: Exception) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    # --- count mode: walk headers only ----------------------------------------------------

    def _count(self, buf: bytes | bytearray, pos: int, end: int) -> None:
        if self._head:
            # Finish the frame whose header was cut: at most 10 header + 125 control bytes.
            head = self._head
            joined = head + bytes(buf[pos : min(end, pos + 136)])
            self._head = b""
            nxt = self._frame(joined, 0, len(joined))
            if nxt < 0:
                self._head = joined
                return
            pos += nxt - len(head)
        pos += self._skip
        frames = 0
        unpack = _HEAD.unpack_from
        while True:
            limit = end - 4
            while pos <= limit:  # the fast path: text frames with 7- or 16-bit lengths
                op, n, ext = unpack(buf, pos)
                if (op != 0x81 and op != 0xC1) or n == 127:  # literals: no global lookups
                    break
                pos += 4 + ext if n == 126 else 2 + n
                frames += 1
            if pos >= end:
                break
            nxt = self._frame(buf, pos, end)
            if nxt < 0:
                break
            pos = nxt
        self.frames += frames
        if pos < end:
            self._head = bytes(buf[pos:end])
            self._skip = 0
        else:
            self._skip = pos - end

    def _frame(self, buf: bytes | bytearray, pos: int, end: int) -> int:
        """Walk one frame of any kind; returns where the next starts, -1 if the header is cut."""
        if pos + 2 > end:
            return -1
        op = buf[pos]
        n = buf[pos + 1]
        if n < 126:
            nxt = pos + 2 + n
        elif n == 126:
            if pos + 4 > end:
                return -1
            nxt = pos + 4 + (buf[pos + 2] << 8 | buf[pos + 3])
        else:
            if pos + 10 > end:
                return -1
            nxt = pos + 10 + int.from_bytes(buf[pos + 2 : pos + 10], "big")
        if op & 0x0F >= 8:
            if nxt > end:
                return -1  # control frames are small: keep it whole for the next read
            self._control(op & 0x0F, bytes(buf[pos + 2 : nxt]))
        elif op & 0x80:
            self.frames += 1
        return nxt

    # --- message mode ---------------------------------------------------------------------

    def _parse(self, received_ns: int) -> None:
        data = self._pending
        pos, end = 0, len(data)
        while pos + 2 <= end:
            op = data[pos]
            n = data[pos + 1] & 0x7F
            start = pos + 2
            if n == 126:
                start = pos + 4
                if start > end:
                    break
                n = int.from_bytes(data[pos + 2 : start], "big")
            elif n == 127:
                start = pos + 10
                if start > end:
                    break
                n = int.from_bytes(data[pos + 2 : start], "big")
            if start + n > end:
                break
            payload = bytes(data[start : start + n])
            pos = start + n
            opcode = op & 0x0F
            if opcode >= 8:
                self._control(opcode, payload)
                continue
            self._fragments.append(payload)
            if opcode == 1:
                self._compressed = bool(op & 0x40)
            if not op & 0x80:
                continue
            message = b"".join(self._fragments)
            self._fragments = []
            self.frames += 1
            if self._compressed and self._inflater is not None:
                message = self._inflater.decompress(message + b"\x00\x00\xff\xff")
                if self._reset_inflater:
                    self._inflater = zlib.decompressobj(-15)
            if self.on_message is not None:
                self.on_message(message, received_ns)
            if self.on_message is None:  # switched to count mode: count the rest
                rest = bytes(data[pos:end])
                self._pending = bytearray()
                if self.on_data is not None:
                    self.on_data(bytearray(rest), 0, len(rest))
                self._count(rest, 0, len(rest))
                return
        del data[:pos]

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == OP_PING and self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            if self.transport is not None:
                self.transport.close()


async def connect(
    host: str,
    port: int,
    path: str = "/ws",
    *,
    compression: bool = False,
    local_addr: tuple[str, int] | None = None,
    on_message: OnMessage | None = ignore,
    timeout: float = 15.0,
) -> RawClient:
    """Open a TCP connection and complete the WebSocket upgrade."""
    loop = asyncio.get_running_loop()
    protocol = RawClient(host, port, path, compression=compression)
    protocol.on_message = on_message
    await loop.create_connection(lambda: protocol, host, port, local_addr=local_addr)
    await asyncio.wait_for(asyncio.shield(protocol.upgraded), timeout)
    return protocol
