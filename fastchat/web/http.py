"""The small HTTP/1.1 server in front of everything: one asyncio protocol per TCP connection.

Parsing is done by ``httptools`` (llhttp, the parser behind Node.js): it is a callback
parser written in C that never copies the body, rejects malformed requests precisely, and
signals WebSocket upgrades without consuming the bytes after the headers — exactly what we
need to hand a socket over to picows. (h11 is pure Python and allocates an event object per
step, which costs more than the whole request handling on our hot paths.)

This module knows nothing about chat: a :class:`Router` maps requests to handlers, and an
upgrade request is passed to ``on_upgrade`` together with the socket.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Protocol
from urllib.parse import parse_qs, unquote

import httptools
import orjson

from fastchat.config import ServerConfig

log = logging.getLogger("fastchat.http")

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
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    close: bool = False
    content_length: int | None = None  # for HEAD: the length the GET body would have

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


_NO_QUEUE: deque = deque(maxlen=0)  # the request queue of an upgraded connection


class _Reject(Exception):
    """Raised from a parser callback to answer at once and close the connection."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class HttpProtocol(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection. Requests are handled one at a time, in order."""

    # uvloop's transport keeps a bound method of its first protocol for the life of the
    # socket, so after a WebSocket upgrade this object lives on: keep it small.
    __slots__ = (
        "_body",
        "_client",
        "_config",
        "_connections",
        "_detached",
        "_header_bytes",
        "_in_request",
        "_loop",
        "_parser",
        "_queue",
        "_raw_headers",
        "_request",
        "_router",
        "_sink",
        "_task",
        "_timer",
        "_transport",
        "_url",
    )

    def __init__(self, router: Router, config: ServerConfig, connections: set[HttpProtocol]):
        self._router = router
        self._config = config
        self._connections = connections
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._client = ""
        self._timer: asyncio.TimerHandle | None = None
        self._queue: deque[tuple[Request, BodySink | None, bool]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._in_request = False
        self._detached = False  # upgraded or rejected: no more HTTP on this socket
        self._reset()

    # --- connection lifecycle -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self._client = peer[0] if peer else ""
        self._connections.add(self)
        self._arm_timer(self._config.header_timeout_seconds)

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self._cancel_timer()
        if self._sink is not None:
            self._sink.abort()
            self._sink = None
        if self._task is not None:
            self._task.cancel()
        self._transport = None

    def close_if_idle(self) -> None:
        """Used at shutdown: close now unless a request is being answered."""
        if self._transport is not None and self._task is None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
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
        self._arm_timer(self._config.header_timeout_seconds)

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
        self._request = request = Request(
            method=self._parser.get_method().decode("ascii", "replace"),
            path=unquote((parsed.path or b"/").decode("latin-1")),
            query_string=(parsed.query or b"").decode("latin-1"),
            headers=headers,
            client=self._client,
            target=self._url,
            raw_headers=self._raw_headers,
        )
        if self._parser.should_upgrade():
            return
        self._arm_timer(self._config.header_timeout_seconds)  # the body must keep coming
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
        self._arm_timer(self._config.header_timeout_seconds)
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
                response.content_length = len(response.body)
                response.body = b""
            self._send(response)
        self._task = None
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def _send(self, response: Response) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        keep_alive = not response.close
        transport.write(response.encode(keep_alive))
        if keep_alive:
            self._arm_timer(self._config.keepalive_timeout_seconds)
        else:
            self._cancel_timer()
            transport.close()

    def _fail(self, status: int, message: str) -> None:
        self._detached = True
        response = error_response(status, message)
        response.close = True
        self._send(response)

    def _upgrade(self, tail: bytes) -> None:
        request = self._request
        transport = self._transport
        if request is None or transport is None:  # pragma: no cover - defensive
            return
        self._cancel_timer()
        refusal = self._router.on_upgrade(request, transport, tail)
        if refusal is not None:
            refusal.close = True
            self._send(refusal)
        self._detached = True
        self._connections.discard(self)
        # Drop everything but the slots themselves (see __slots__ above).
        self._reset()
        self._request = None
        self._queue = _NO_QUEUE
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

    def _arm_timer(self, seconds: float) -> None:
        self._cancel_timer()
        self._timer = self._loop.call_later(seconds, self._on_timeout)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timeout(self) -> None:
        self._timer = None
        if self._transport is None or self._task is not None:
            return
        if self._in_request or self._request is None:
            self._fail(408, "Request timeout")  # slow or silent client
        else:
            self._transport.close()  # idle keep-alive connection: just close
