"""One WebSocket connection: what picows leaves to the application.

picows parses frames and answers pings; this listener reassembles fragmented messages,
inflates permessage-deflate messages (RFC 7692), validates UTF-8, enforces size limits,
and owns the outgoing side: pre-built frames written straight to the socket, with
backpressure (pause/resume from the transport) and a hard cap per connection.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Protocol

from picows import WSFrame, WSListener, WSMsgType, WSTransport

from fastchat.errors import CloseCode
from fastchat.ws.deflate import ContextDeflater, InflateError, Inflater, SharedDeflater
from fastchat.ws.frames import VALID_CLOSE_CODES, build_close_frame

if TYPE_CHECKING:
    from fastchat.config import WebSocketConfig
    from fastchat.fanout.hub import Room
    from fastchat.metrics import Metrics
    from fastchat.ws.peer import Registry

log = logging.getLogger("fastchat.ws")

_TEXT = WSMsgType.TEXT
_CONTINUATION = WSMsgType.CONTINUATION
_BINARY = WSMsgType.BINARY
_CLOSE = WSMsgType.CLOSE
_PING = WSMsgType.PING
_CLOSE_TIMEOUT_SECONDS = 2.0  # longest wait for the peer's side of the closing handshake


class MessageHandler(Protocol):
    """The chat side of a connection (see :mod:`fastchat.session`)."""

    def on_open(self, conn: Connection) -> None: ...
    def on_text(self, conn: Connection, text: str) -> None: ...
    def on_close(self, conn: Connection) -> None: ...


class Connection(WSListener):
    """A picows listener with an outgoing queue, one per upgraded socket (see :mod:`.upgrade`).

    It implements :class:`~fastchat.ws.peer.Peer` for the hub and reports its opening and
    closing to its :class:`~fastchat.ws.peer.Registry`.
    """

    __slots__ = (
        "_config",
        "_fragments",
        "_fragments_rsv1",
        "_fragments_size",
        "_handler",
        "_inflater",
        "_metrics",
        "_registry",
        "client",
        "closed",
        "compress",
        "deflater",
        "held",
        "held_bytes",
        "idle",
        "out",
        "paused",
        "raw",
        "rooms",
        "session",
        "transport",
        "user_id",
    )

    def __init__(
        self,
        registry: Registry,
        handler: MessageHandler,
        config: WebSocketConfig,
        metrics: Metrics,
        *,
        client: str,
        compress: int,
        deflater: SharedDeflater | ContextDeflater | None,
    ):
        self._registry = registry
        self._handler = handler
        self._config = config
        self._metrics = metrics
        self.client = client
        self.compress = compress  # ws.peer.PLAIN / SHARED / DEDICATED
        self.deflater = deflater  # this connection's own compressor, when DEDICATED
        # We always answer client_no_context_takeover: every incoming message stands alone.
        self._inflater: Inflater | None = (
            Inflater(config.max_message_bytes, context_takeover=False) if compress else None
        )
        self.transport: WSTransport | None = None
        self.raw: asyncio.Transport | None = None
        self.out: bytes | list[bytes] | None = None
        self.paused = False
        self.held: list[bytes] | None = None  # lists made on demand: most never need one
        self.held_bytes = 0
        self.closed = False
        self.idle = 0  # see fastchat.ws.keepalive
        self.rooms: list[Room] = []  # a list: a connection is in few rooms, and it is smaller
        self.user_id: str | None = None
        self.session: object = None  # the handler's per-connection state
        self._fragments: list[bytes] | None = None
        self._fragments_size = 0
        self._fragments_rsv1 = False

    # --- picows callbacks -----------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        # picows keeps the handshake for the connection's lifetime; its headers are not needed.
        transport.request.headers.clear()
        transport.response.headers.clear()
        self.transport = transport
        raw = transport.underlying_transport
        self.raw = raw
        raw.set_write_buffer_limits(high=self._config.backpressure_soft_bytes)
        self._metrics.connections_opened += 1
        self._registry.opened(self)
        self._handler.on_open(self)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.closed = True
        self.held = None
        self.held_bytes = 0
        self.out = None
        self._registry.closed(self)
        self._metrics.connections_closed += 1
        self._handler.on_close(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        self.idle = 0  # keepalive.ACTIVE: the peer is alive
        self._metrics.frames_in += 1
        if self.closed or transport.is_close_frame_sent:
            # A close frame is out, ours or the one picows sends on a malformed frame before
            # it delivers the valid frames in front of that one (docs/conformance.md, 7.1.2):
            # nothing more may be sent, so wait for the peer's close and ignore the rest.
            self.closed = True
            if msg_type is _CLOSE:
                transport.disconnect()
            return
        if frame.rsv2 or frame.rsv3:  # no extension defines them (RFC 6455 section 5.2)
            self.fail(CloseCode.PROTOCOL_ERROR, "reserved bits set")
            return
        if msg_type is _TEXT:
            if frame.fin and not self._fragments:
                if frame.rsv1:
                    self._deliver_compressed(frame.get_payload_as_bytes())
                else:
                    try:
                        text = frame.get_payload_as_utf8_text()
                    except UnicodeDecodeError:
                        self.fail(CloseCode.INVALID_TEXT, "invalid UTF-8")
                        return
                    self._handler.on_text(self, text)
                return
            if self._fragments:
                self.fail(CloseCode.PROTOCOL_ERROR, "new message inside a fragmented one")
                return
            self._fragments_rsv1 = frame.rsv1
            self._add_fragment(frame)
        elif msg_type is _CONTINUATION:
            if not self._fragments:
                self.fail(CloseCode.PROTOCOL_ERROR, "continuation without a message")
                return
            if frame.rsv1:
                self.fail(CloseCode.PROTOCOL_ERROR, "RSV1 on a continuation frame")
                return
            self._add_fragment(frame)
        elif msg_type is _BINARY:
            self.fail(CloseCode.UNSUPPORTED_DATA, "binary messages are not supported")
        elif frame.rsv1:  # RFC 7692 section 6: RSV1 belongs to data frames only
            self.fail(CloseCode.PROTOCOL_ERROR, "RSV1 on a control frame")
        elif msg_type is _PING:
            transport.send_pong(frame.get_payload_as_bytes())
        elif msg_type is _CLOSE:
            self._on_close_frame(transport, frame)
        # A PONG only marks the peer alive (above).

    def pause_writing(self) -> None:
        self.paused = True
        self._metrics.write_pauses += 1

    def resume_writing(self) -> None:
        self.paused = False
        if self.held and not self.closed and self.raw is not None:
            held = self.held
            self.held = None
            self.held_bytes = 0
            self.raw.write(b"".join(held))

    # --- incoming -------------------------------------------------------------------------

    def _add_fragment(self, frame: WSFrame) -> None:
        if frame.rsv1 and self._inflater is None:
            self.fail(CloseCode.PROTOCOL_ERROR, "RSV1 set without negotiated compression")
            return
        if self._fragments is None:
            self._fragments = []
        self._fragments.append(frame.get_payload_as_bytes())
        self._fragments_size += frame.payload_size
        if self._fragments_size > self._config.max_message_bytes:
            self.fail(CloseCode.MESSAGE_TOO_BIG, "message too big")
            return
        if len(self._fragments) > self._config.max_fragments:
            self.fail(CloseCode.MESSAGE_TOO_BIG, "too many fragments")
            return
        if not frame.fin:
            return
        payload = b"".join(self._fragments)
        compressed = self._fragments_rsv1
        self._fragments = None
        self._fragments_size = 0
        self._fragments_rsv1 = False
        if compressed:
            self._deliver_compressed(payload)
        else:
            self._deliver_bytes(payload)

    def _deliver_compressed(self, data: bytes) -> None:
        if self._inflater is None:
            self.fail(CloseCode.PROTOCOL_ERROR, "RSV1 set without negotiated compression")
            return
        try:
            payload = self._inflater.inflate(data)
        except InflateError as exc:
            self.fail(exc.close_code, exc.reason)
            return
        self._deliver_bytes(payload)

    def _deliver_bytes(self, payload: bytes) -> None:
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            self.fail(CloseCode.INVALID_TEXT, "invalid UTF-8")
            return
        self._handler.on_text(self, text)

    def _on_close_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        """Answer the peer's close with its own code (1000 if it gave none), then disconnect."""
        echo = CloseCode.NORMAL
        if frame.payload_size:  # picows has refused a 1-byte payload and a non-UTF-8 reason
            echo = frame.get_close_code()
            if echo not in VALID_CLOSE_CODES:  # e.g. 0, 1005, 1006, 5000 (RFC 6455 §7.4.2)
                self.fail(CloseCode.PROTOCOL_ERROR, f"invalid close code {echo}")
                return
        self.flush()
        transport.send_close(echo)
        transport.disconnect()

    # --- outgoing -------------------------------------------------------------------------

    def deliver(self, blob: bytes) -> None:
        """Write pre-built frames now (called by the hub's flush, nothing else pending)."""
        if self.paused:
            self.hold(blob)
        elif not self.closed:
            self.raw.write(blob)  # type: ignore[union-attr]

    def flush(self) -> None:
        out = self.out
        if out is None:
            return
        self.out = None
        if self.closed:
            return
        if self.paused:
            self.hold(out if type(out) is bytes else b"".join(out))
        else:
            self.raw.write(out if type(out) is bytes else b"".join(out))  # type: ignore[union-attr, arg-type]

    def hold(self, blob: bytes) -> None:
        """Keep ``blob`` while the socket is paused; close the connection past the hard limit."""
        if self.closed:
            return
        if self.held is None:
            self.held = []
        self.held.append(blob)
        self.held_bytes += len(blob)
        buffered = self.held_bytes + self.raw.get_write_buffer_size()  # type: ignore[union-attr]
        if buffered > self._config.max_backpressure_bytes:
            self._metrics.slow_consumer_closes += 1
            log.info("closing slow consumer %s (%d bytes buffered)", self.client, buffered)
            self.close(CloseCode.POLICY_VIOLATION, "slow consumer", slow=True)

    def fail(self, code: CloseCode, reason: str) -> None:
        """Fail the connection for what the peer sent (RFC 6455 section 7.1.7).

        The one exit for protocol violations, refused data and exceeded limits: the partial
        message is dropped and the closing handshake starts with ``code``.
        """
        log.debug("failing WebSocket from %s: %d %s", self.client, code, reason)
        self._fragments = None
        self._fragments_size = 0
        self.close(code, reason)

    def close(self, code: CloseCode, reason: str = "", *, slow: bool = False) -> None:
        """Start the closing handshake (RFC 6455 section 7): our close frame, then FIN.

        The socket stays open for reading until the peer answers or a timeout: closing it
        with the peer's data unread would reset the connection and could destroy the close
        frame before the peer reads it. ``slow`` (a consumer over its limit) drops what is
        still queued here and gives the rest a short grace period before aborting.
        """
        if self.closed or self.transport is None:
            return
        if not slow:
            self._registry.closing(self)
            self.flush()
        self.closed = True
        self.held = None
        self.held_bytes = 0
        self.out = None
        raw = self.raw
        assert raw is not None
        raw.write(build_close_frame(code, reason))
        if slow or not raw.can_write_eof():
            raw.close()
        else:
            raw.write_eof()
        asyncio.get_running_loop().call_later(_CLOSE_TIMEOUT_SECONDS, raw.abort)
