"""The small HTTP/1.1 server in front of everything: one asyncio protocol per TCP connection.

Parsing is done by ``httptools`` (llhttp, the parser behind Node.js): it is a callback
parser written in C that never copies the body, rejects malformed requests precisely, and
signals WebSocket upgrades without consuming the bytes after the headers — exactly what we
need to hand a socket over to picows. (h11 is pure Python and allocates an event object per
step, which costs more than the whole request handling on our hot paths.)

This module knows nothing about chat: a :class:`Router` maps requests to handlers, and an
upgrade request is passed to ``on_upgrade`` together with the socket.

What one client can make the server hold is bounded: deadlines for the head and the whole
request, a minimum body rate, a cap on connections per client address, no reading while
answers wait to be read, and a lingering close after errors (docs/protocol.md, 2.1).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import BinaryIO, Protocol
from urllib.parse import parse_qs, unquote

import httptools
import orjson

from fastchat.config import ServerConfig
from fastchat.ratelimit import ConnectionCounter, EventThrottle

log = logging.getLogger("fastchat.http")

_MAX_PIPELINED = 64  # requests queued on one connection; the next one gets 429
_STREAM_CHUNK_BYTES = 64 * 1024  # file bodies are read and sent in pieces of this size
# Lingering close (see HttpProtocol._linger): how long and how much input is discarded.
_LINGER_SECONDS = 5.0
_LINGER_IDLE_SECONDS = 2.0
_LINGER_MAX_BYTES = 64 * 1024 * 1024
_SHED_LOG_WINDOW_SECONDS = 10.0

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


@dataclass(slots=True)
class Request:
    """One parsed HTTP request. Header names are lower-case; repeated headers keep all values."""

    method: str
    path: str
    query_string: str
    headers: dict[str, list[str]]
    client: str
    target: bytes = b"/"
    body: bytes = b""
    raw_headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        values = self.headers.get(name)
        return values[0] if values else None

    def query(self, name: str) -> str | None:
        values = parse_qs(self.query_string).get(name)
        return values[0] if values else None

    def json(self) -> object:
        """The body as JSON; raises ``ValueError`` for anything else."""
        return orjson.loads(self.body)


@dataclass(slots=True)
class FileBody:
    """``length`` bytes of an open file from ``offset``, sent in chunks as the client reads."""

    file: BinaryIO
    offset: int
    length: int


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    close: bool = False
    content_length: int | None = None  # set when the body sent is not ``body`` (HEAD, file)
    file: FileBody | None = None  # the body, streamed from a file, instead of ``body``

    def drop_body(self) -> None:
        """For HEAD: keep the length the GET body would have, send no body."""
        if self.content_length is None:
            self.content_length = len(self.body)
        self.body = b""
        if self.file is not None:
            self.file.file.close()
            self.file = None

    def encode(self, keep_alive: bool) -> bytes:
        lines = [b"HTTP/1.1 %d %s\r\n" % (self.status, _REASONS.get(self.status, b"Unknown"))]
        for name, value in self.headers:
            lines.append(b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1")))
        length = len(self.body) if self.content_length is None else self.content_length
        lines.append(b"Content-Length: %d\r\n" % length)
        lines.append(b"Date: %s\r\n" % formatdate(usegmt=True).encode())
        lines.append(
            b"Connection: keep-alive\r\n\r\n" if keep_alive else b"Connection: close\r\n\r\n"
        )
        lines.append(self.body)
        return b"".join(lines)


def json_response(
    status: int, payload: object, headers: list[tuple[str, str]] | None = None
) -> Response:
    hdrs = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
    if headers:
        hdrs.extend(headers)
    return Response(status, orjson.dumps(payload), hdrs)


def error_response(status: int, message: str, **extra: object) -> Response:
    return json_response(status, {"error": message, **extra})


class BodySink(Protocol):
    """Receives a request body as it arrives instead of buffering it (uploads)."""

    def write(self, chunk: bytes) -> None: ...
    def abort(self) -> None: ...


Handler = Callable[[Request], Awaitable[Response]]


class Router(Protocol):
    """What the HTTP protocol needs from the application."""

    def body_limit(self, request: Request) -> int:
        """The largest body this request may carry."""
        ...

    def body_sink(self, request: Request) -> BodySink | None:
        """A sink to stream this request's body into, or None to buffer it (small bodies)."""
        ...

    async def handle(self, request: Request, sink: BodySink | None) -> Response: ...

    def on_upgrade(
        self, request: Request, transport: asyncio.Transport, tail: bytes
    ) -> Response | None:
        """Take over ``transport`` for a WebSocket (``tail``: bytes read after the headers).

        Returns a response instead to refuse the upgrade.
        """
        ...


class _Reject(Exception):
    """Raised from a parser callback to answer at once and close the connection."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class HttpConnections:
    """What the connections of one listening socket share: the open set (for shutdown), the
    per-address cap, the trusted proxies and the rate-limited log of what is shed."""

    def __init__(self, router: Router, config: ServerConfig) -> None:
        self.router = router
        self.config = config
        self.open: set[HttpProtocol] = set()
        self.per_address = ConnectionCounter()
        self._trusted = tuple(ip_network(entry, strict=False) for entry in config.trusted_proxies)
        self._shed_log = EventThrottle(_SHED_LOG_WINDOW_SECONDS)
        self._loop = asyncio.get_running_loop()

    def protocol(self) -> HttpProtocol:
        """The protocol factory for ``loop.create_server``."""
        return HttpProtocol(self)

    def close_idle(self) -> None:
        """Used at shutdown: close every connection that is not answering a request."""
        for protocol in list(self.open):
            protocol.close_if_idle()

    def is_trusted(self, address: str) -> bool:
        """Whether ``address`` (a peer) is one of ``server.trusted_proxies``."""
        if not self._trusted:
            return False
        try:
            return self._trusted_address(ip_address(address))
        except ValueError:
            return False

    def forwarded_client(self, peer: str, forwarded_for: list[str] | None) -> str:
        """The client behind a trusted proxy: the right-most ``X-Forwarded-For`` address that
        is not itself a trusted proxy (entries left of it can be forged by the client)."""
        client = peer
        if not forwarded_for:
            return client
        hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
        for hop in reversed(hops):
            try:
                address = ip_address(hop)
            except ValueError:
                break  # not written by a proxy we trust: stop at the last address we can
            client = str(address)
            if not self._trusted_address(address):
                break
        return client

    def _trusted_address(self, address: IPv4Address | IPv6Address) -> bool:
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._trusted)

    def shed(self, event: str, client: str) -> None:
        """Log a refused or cut-off connection: one line per kind of event per window,
        then one line with how many more there were."""
        if self._shed_log.hit(event, self._loop.time()):
            log.warning("HTTP: %s (client %s)", event, client)
            self._loop.call_later(_SHED_LOG_WINDOW_SECONDS, self._report_held, event)

    def _report_held(self, event: str) -> None:
        held = self._shed_log.take_held(event)
        if held:
            log.warning(
                "HTTP: %s, %d more times in the last %.0f s",
                event,
                held,
                _SHED_LOG_WINDOW_SECONDS,
            )


class HttpProtocol(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection. Requests are handled one at a time, in order.

    Reading is paused while a request is answered and while the client is not reading what
    was sent (the transport's write buffer is above its high-water mark), so a client that
    pipelines requests and never reads costs a bounded amount of memory.
    """

    __slots__ = (
        "_body",
        "_body_received",
        "_body_started",
        "_config",
        "_counted",
        "_detached",
        "_drained",
        "_final",
        "_head_deadline",
        "_header_bytes",
        "_in_request",
        "_last_read_at",
        "_linger_bytes",
        "_linger_until",
        "_listener",
        "_loop",
        "_parser",
        "_peer",
        "_peer_trusted",
        "_queue",
        "_raw_headers",
        "_request",
        "_request_deadline",
        "_router",
        "_sink",
        "_task",
        "_timer",
        "_transport",
        "_url",
        "_write_paused",
    )

    def __init__(self, listener: HttpConnections):
        self._listener = listener
        self._router = listener.router
        self._config = listener.config
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._peer = ""
        self._peer_trusted = False
        self._counted = False  # holds a place in the per-address cap
        self._timer: asyncio.TimerHandle | None = None
        self._queue: deque[tuple[Request, BodySink | None, bool]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._in_request = False
        self._detached = False  # upgraded or failed: no more HTTP on this socket
        self._final: Response | None = None  # an error to send once the queue is answered
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._linger_bytes = -1  # while lingering: how much more input may be discarded
        self._linger_until = 0.0
        self._head_deadline = 0.0
        self._request_deadline = 0.0
        self._body_started = 0.0
        self._body_received = 0
        self._last_read_at = 0.0
        self._reset()

    # --- connection lifecycle -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self._peer = peer[0] if peer else ""
        listener = self._listener
        listener.open.add(self)
        self._peer_trusted = listener.is_trusted(self._peer)
        if not self._peer_trusted:
            if not listener.per_address.acquire(
                self._peer, self._config.max_http_connections_per_ip
            ):
                listener.shed(
                    "connection refused: over server.max_http_connections_per_ip", self._peer
                )
                self._fail(503, "Too many connections from your address")
                return
            self._counted = True
        self._arm_timer(self._config.header_timeout_seconds)

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()
        self._cancel_timer()
        self._abort_sink()
        self._final = None
        for _request, sink, _keep_alive in self._queue:
            if sink is not None:
                sink.abort()
        self._queue.clear()
        if self._task is not None:
            self._task.cancel()
        self._transport = None

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._transport is not None and self._linger_bytes < 0:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if self._task is None and not self._detached and self._transport is not None:
            self._transport.resume_reading()

    def close_if_idle(self) -> None:
        """Used at shutdown: close now unless a request is being answered."""
        if self._transport is not None and self._task is None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        if self._linger_bytes >= 0:
            self._discard(len(data))
            return
        if self._detached:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset = upgrade.args[0]
            self._upgrade(data[offset:])
        except (httptools.HttpParserError, _Reject) as exc:
            # httptools wraps exceptions raised by callbacks in HttpParserCallbackError
            reject = exc if isinstance(exc, _Reject) else exc.__context__
            if isinstance(reject, _Reject):
                self._fail(reject.status, reject.message)
            elif "header overflow" in str(exc).lower():
                self._fail(431, "Request header fields too large")
            else:
                self._fail(400, "Malformed HTTP request")

    # --- httptools callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._reset()
        self._in_request = True
        now = self._loop.time()
        self._head_deadline = now + self._config.header_timeout_seconds
        self._request_deadline = now + self._config.request_timeout_seconds
        self._arm_at(min(self._head_deadline, self._request_deadline))

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_bytes += len(url)
        if self._header_bytes > self._config.max_header_bytes:
            raise _Reject(431, "Request header fields too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self._config.max_header_bytes:
            raise _Reject(431, "Request header fields too large")
        self._raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        parsed = httptools.parse_url(self._url)
        headers: dict[str, list[str]] = {}
        for name, value in self._raw_headers:
            headers.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        client = self._peer
        if self._peer_trusted:
            client = self._listener.forwarded_client(client, headers.get("x-forwarded-for"))
        self._request = request = Request(
            method=self._parser.get_method().decode("ascii", "replace"),
            path=unquote((parsed.path or b"/").decode("latin-1")),
            query_string=(parsed.query or b"").decode("latin-1"),
            headers=headers,
            client=client,
            target=self._url,
            raw_headers=self._raw_headers,
        )
        if self._parser.should_upgrade():
            return
        self._body_started = self._last_read_at = self._loop.time()
        self._body_received = 0
        if "transfer-encoding" in headers:
            raise _Reject(411, "Content-Length required (chunked bodies are not accepted)")
        length_header = request.header("content-length")
        if length_header is None:
            if request.method in ("POST", "PUT", "PATCH"):
                raise _Reject(411, "Content-Length required")
            return
        length = int(length_header)  # llhttp has validated it
        limit = self._router.body_limit(request)
        if length > limit:
            raise _Reject(413, f"Body too large (limit {limit} bytes)")
        if length:
            self._sink = self._router.body_sink(request)

    def on_body(self, body: bytes) -> None:
        # No timer per chunk: the deadline timer checks these when it fires.
        self._body_received += len(body)
        self._last_read_at = self._loop.time()
        if self._sink is not None:
            self._sink.write(body)
        else:
            self._body.append(body)

    def on_message_complete(self) -> None:
        self._cancel_timer()
        self._in_request = False
        request = self._request
        if request is None or self._parser.should_upgrade():
            return  # an upgrade is handed over when feed_data raises HttpParserUpgrade
        if len(self._queue) >= _MAX_PIPELINED:
            self._listener.shed("too many pipelined requests", self._peer)
            raise _Reject(429, f"Too many pipelined requests (at most {_MAX_PIPELINED})")
        request.body = b"".join(self._body)
        self._body = []
        self._queue.append((request, self._sink, self._parser.should_keep_alive()))
        self._sink = None
        if self._task is None:
            assert self._transport is not None
            self._transport.pause_reading()
            self._task = self._loop.create_task(self._respond_all())

    # --- responding -----------------------------------------------------------------------

    async def _respond_all(self) -> None:
        """Answer queued (possibly pipelined) requests one by one, in order."""
        while self._queue:
            if self._write_paused and not await self._drain():
                return
            request, sink, keep_alive = self._queue.popleft()
            try:
                response = await self._router.handle(request, sink)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("unhandled error answering %s %s", request.method, request.path)
                response = error_response(500, "Internal server error")
            if not keep_alive:
                response.close = True
            if request.method == "HEAD":
                response.drop_body()
            if response.file is None:
                self._write(response)
            elif not await self._stream(response):
                return
            if response.close:
                self._task = None
                self._linger()
                return
        self._task = None
        final, self._final = self._final, None
        if final is not None:
            self._write(final)
            self._linger()
            return
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._in_request:  # a pipelined request was cut in two: its deadlines run on
            self._arm_at(min(self._head_deadline, self._request_deadline))
        else:
            self._arm_timer(self._config.keepalive_timeout_seconds)
        if not self._write_paused:
            transport.resume_reading()

    def _write(self, response: Response) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(response.encode(not response.close))

    async def _stream(self, response: Response) -> bool:
        """Send a file body in chunks as the client reads them; False if the connection ended."""
        body = response.file
        assert body is not None
        with body.file:
            self._write(response)  # the head: the body is in the file
            fd = body.file.fileno()
            offset, left = body.offset, body.length
            while left:
                if self._write_paused and not await self._drain():
                    return False
                transport = self._transport
                if transport is None or transport.is_closing():
                    return False
                chunk = os.pread(fd, min(_STREAM_CHUNK_BYTES, left), offset)
                if not chunk:
                    log.error("file %s ended %d bytes early", body.file.name, left)
                    transport.abort()
                    return False
                transport.write(chunk)
                offset += len(chunk)
                left -= len(chunk)
        return True

    async def _drain(self) -> bool:
        """Wait for the client to read what is buffered; False (connection aborted) if it
        reads nothing for ``send_timeout_seconds``."""
        self._drained = self._loop.create_future()
        try:
            async with asyncio.timeout(self._config.send_timeout_seconds):
                await self._drained
        except TimeoutError:
            self._listener.shed("response not read: over server.send_timeout_seconds", self._peer)
            if self._transport is not None:
                self._transport.abort()
            return False
        finally:
            self._drained = None
        return self._transport is not None

    def _fail(self, status: int, message: str) -> None:
        """Answer an early error (after any answers still due), then close lingering."""
        self._detached = True
        self._cancel_timer()
        self._abort_sink()
        response = error_response(status, message)
        response.close = True
        if self._task is not None:
            self._final = response  # pipelined requests before the error get their answers
            return
        self._write(response)
        self._linger()

    def _linger(self) -> None:
        """Close like nginx's lingering close: half-close, then read and drop what the client
        still sends (bounded in time and size), so that closing with unread input does not
        reset the connection and destroy the answer before the client has read it."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self._detached = True
        now = self._loop.time()
        self._linger_bytes = _LINGER_MAX_BYTES
        self._linger_until = now + _LINGER_SECONDS
        self._last_read_at = now
        if transport.can_write_eof():
            transport.write_eof()  # sent once the buffered answer is
        transport.resume_reading()
        self._arm_at(min(self._linger_until, now + _LINGER_IDLE_SECONDS))

    def _discard(self, size: int) -> None:
        self._linger_bytes -= size
        self._last_read_at = self._loop.time()
        if self._linger_bytes < 0 or self._last_read_at >= self._linger_until:
            self._close_now()

    def _close_now(self) -> None:
        self._cancel_timer()
        transport = self._transport
        if transport is None:
            return
        if transport.get_write_buffer_size():
            transport.abort()  # the client has not read what was sent: don't wait for it to
        else:
            transport.close()

    def _upgrade(self, tail: bytes) -> None:
        request = self._request
        transport = self._transport
        if request is None or transport is None:  # pragma: no cover - defensive
            return
        self._cancel_timer()
        refusal = self._router.on_upgrade(request, transport, tail)
        if refusal is not None:
            refusal.close = True
            self._write(refusal)
            transport.close()
        self._detached = True
        self._forget()  # a WebSocket now: counted by the session's caps, not these
        # The parser refers back to this protocol: without it, nothing keeps this object
        # once the transport belongs to picows (see fastchat.ws.upgrade.hand_over).
        self._parser = None  # type: ignore[assignment]
        self._transport = None

    # --- helpers --------------------------------------------------------------------------

    def _reset(self) -> None:
        self._url = b""
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._request: Request | None = None
        self._body: list[bytes] = []
        self._sink: BodySink | None = None

    def _forget(self) -> None:
        self._listener.open.discard(self)
        if self._counted:
            self._counted = False
            self._listener.per_address.release(self._peer)

    def _abort_sink(self) -> None:
        if self._sink is not None:
            self._sink.abort()
            self._sink = None

    def _arm_timer(self, seconds: float) -> None:
        self._cancel_timer()
        self._timer = self._loop.call_later(seconds, self._on_timeout)

    def _arm_at(self, when: float) -> None:
        self._cancel_timer()
        self._timer = self._loop.call_at(when, self._on_timeout)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timeout(self) -> None:
        self._timer = None
        if self._transport is None or self._task is not None:
            return  # answering: the send timeout applies, the read deadlines run on after
        now = self._loop.time()
        if self._linger_bytes >= 0:
            deadline = min(self._linger_until, self._last_read_at + _LINGER_IDLE_SECONDS)
            if now < deadline:
                self._timer = self._loop.call_at(deadline, self._on_timeout)
            else:
                self._close_now()
            return
        if not self._in_request:
            if self._request is None:
                self._fail(408, "Request timeout")  # a connection that sends nothing
            else:
                self._close_now()  # idle keep-alive connection: just close
            return
        config = self._config
        if self._request is None:  # still reading the head
            deadlines = {
                "request head not received within server.header_timeout_seconds": (
                    self._head_deadline
                ),
            }
        else:
            deadlines = {
                "request body stalled for server.header_timeout_seconds": (
                    self._last_read_at + config.header_timeout_seconds
                ),
                "request body below server.min_body_bytes_per_second": (
                    self._body_started
                    + config.header_timeout_seconds
                    + self._body_received / config.min_body_bytes_per_second
                ),
            }
        deadlines["request not received within server.request_timeout_seconds"] = (
            self._request_deadline
        )
        event, deadline = min(deadlines.items(), key=lambda item: item[1])
        if now < deadline:
            self._timer = self._loop.call_at(deadline, self._on_timeout)  # more has arrived
            return
        self._listener.shed(event, self._peer)
        self._fail(408, "Request timeout")
