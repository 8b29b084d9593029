"""Accept a WebSocket upgrade and hand its socket to picows (the one place building its protocol).

picows can only accept WebSocket connections on its own listening socket; fastchat serves
HTTP and WebSocket on one port, so the HTTP protocol parses the request and this module
builds picows' ``WSProtocol`` on the same transport and replays the request bytes into it.
picows then validates the handshake itself and answers 101 with our extension header.
``WSProtocol``'s constructor is internal API, hence the exact picows pin in pyproject.toml.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import TYPE_CHECKING

from picows import WSAutoPingStrategy, WSUpgradeResponse, WSUpgradeResponseWithListener
from picows.picows import WSProtocol  # type: ignore[attr-defined]

from fastchat.config import WebSocketConfig
from fastchat.ratelimit import EventThrottle
from fastchat.web.http import Request, Response, error_response
from fastchat.ws.connection import Connection, MessageHandler
from fastchat.ws.deflate import (
    ContextDeflater,
    ExtensionHeaderError,
    SharedDeflater,
    negotiate,
    shared_deflater,
)
from fastchat.ws.peer import DEDICATED, PLAIN, SHARED

if TYPE_CHECKING:
    from fastchat.metrics import Metrics
    from fastchat.ws.peer import Registry

_HANDSHAKE_TIMEOUT_SECONDS = 5.0
_PEER_ERROR_LOG_INTERVAL_SECONDS = 10.0


class PeerErrorLimiter(logging.Filter):
    """Logs a peer's protocol errors as warnings, at most one per ``interval`` seconds.

    picows reports every malformed frame it parses ("WS parser error: ...") at ERROR: the
    peer's fault, not the server's, and any client can send them as fast as it likes. The
    line let through says how many were dropped since the previous one.
    """

    def __init__(self, interval: float) -> None:
        super().__init__()
        self._throttle = EventThrottle(interval)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.ERROR or not str(record.msg).startswith("WS parser error"):
            return True
        if not self._throttle.hit("peer error", time.monotonic()):
            return False
        record.levelno = logging.WARNING
        record.levelname = logging.getLevelName(logging.WARNING)
        dropped = self._throttle.take_held("peer error")
        if dropped:
            record.msg = f"{record.msg} ({dropped} more dropped since the last one)"
        return True


_picows_logger = logging.getLogger("fastchat.picows")
_picows_logger.addFilter(PeerErrorLimiter(_PEER_ERROR_LOG_INTERVAL_SECONDS))
# A LoggerAdapter, not a Logger: picows would create a child Logger per connection otherwise.
_PICOWS_LOG = logging.LoggerAdapter(_picows_logger, {})


class _Released(asyncio.Protocol):
    """What an upgraded transport holds instead of the HTTP protocol's ``data_received``.

    uvloop's transport keeps the ``data_received`` of the last protocol that had one, and
    picows' buffered protocol has none: handed over directly, the transport would keep the
    HTTP protocol (and what it refers to) alive for the life of the WebSocket. Setting this
    protocol first replaces it with one function that every connection shares.
    """

    __slots__ = ()

    @staticmethod
    def data_received(data: bytes) -> None:
        """Never called: a buffered protocol reads through ``get_buffer``."""


_RELEASED = _Released()

# What picows needs to validate the handshake; picows keeps the parsed request for the
# connection's lifetime, so cookies, user agents and the like are not passed on.
_HANDSHAKE_HEADERS = frozenset(
    (b"host", b"upgrade", b"connection", b"sec-websocket-key", b"sec-websocket-version")
)


def raw_request(request: Request) -> bytes:
    """Rebuild the request head from what the HTTP parser saw, for picows to parse again."""
    lines = [b"GET " + request.target + b" HTTP/1.1\r\n"]
    lines.extend(
        name + b": " + value + b"\r\n"
        for name, value in request.raw_headers
        if name.lower() in _HANDSHAKE_HEADERS and name.lower() != b"connection"
    )
    # httptools has accepted the upgrade; picows wants exactly "Upgrade", while browsers
    # may send a list such as Firefox's "keep-alive, Upgrade".
    lines.append(b"Connection: Upgrade\r\n\r\n")
    return b"".join(lines)


def accept(
    request: Request,
    transport: asyncio.Transport,
    tail: bytes,
    *,
    registry: Registry,
    handler: MessageHandler,
    config: WebSocketConfig,
    metrics: Metrics,
) -> Response | None:
    """Negotiate permessage-deflate, build the :class:`Connection` and hand the socket over.

    The caller has checked path, method and origin. Returns a 400 for an extension header
    that does not parse; otherwise ``transport`` belongs to picows afterwards.
    """
    try:
        negotiated = negotiate(
            request.headers.get("sec-websocket-extensions", []), config.compression
        )
    except ExtensionHeaderError as exc:
        return error_response(400, f"Malformed Sec-WebSocket-Extensions: {exc}")
    deflater: SharedDeflater | ContextDeflater | None = None
    if negotiated is None:
        compress = PLAIN
    elif negotiated.server_no_context_takeover and negotiated.server_max_window_bits == 15:
        compress = SHARED  # the hub's one compressor serves it
    else:
        compress = DEDICATED
        bits = negotiated.server_max_window_bits
        deflater = (
            shared_deflater(bits)
            if negotiated.server_no_context_takeover
            else ContextDeflater(bits)
        )
    connection = Connection(
        registry,
        handler,
        config,
        metrics,
        client=sys.intern(request.client),  # one string per address, not per socket
        compress=compress,
        deflater=deflater,
    )
    hand_over(
        transport,
        raw_request(request),
        tail,
        config,
        connection,
        negotiated.response_header if negotiated else None,
    )
    return None


def hand_over(
    transport: asyncio.Transport,
    head: bytes,
    tail: bytes,
    config: WebSocketConfig,
    connection: Connection,
    extension_header: str | None,
) -> None:
    """Make picows own ``transport``; ``connection`` becomes its listener."""
    headers = {"Sec-WebSocket-Extensions": extension_header} if extension_header else None

    def listener_factory(_request: object) -> WSUpgradeResponseWithListener:
        return WSUpgradeResponseWithListener(
            WSUpgradeResponse.create_101_response(headers), connection
        )

    protocol = WSProtocol(
        None,
        None,
        False,
        listener_factory,
        _PICOWS_LOG,
        True,  # disconnect on exception from the listener
        _HANDSHAKE_TIMEOUT_SECONDS,
        False,  # no auto-ping task per connection: see fastchat.ws.keepalive
        config.ping_interval_seconds,
        config.ping_timeout_seconds,
        WSAutoPingStrategy.PING_WHEN_IDLE,
        False,  # pings are answered by the listener, after checking reserved bits
        config.max_message_bytes,
        None,
        config.read_buffer_bytes,
    )
    transport.set_protocol(_RELEASED)
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    _feed(protocol, head + tail)


def _feed(protocol: asyncio.BufferedProtocol, data: bytes) -> None:
    view = memoryview(data)
    while view:
        buffer = protocol.get_buffer(len(view))
        n = min(len(buffer), len(view))
        buffer[:n] = view[:n]
        protocol.buffer_updated(n)
        view = view[n:]
