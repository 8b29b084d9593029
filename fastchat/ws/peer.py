"""What the hub and a connection need from each other, declared once.

:class:`Peer` is the part of a connection (:class:`~fastchat.ws.connection.Connection`)
that the fan-out reads and writes; :class:`Registry` is what a connection reports about
its life (the hub implements it; the app wires the two together).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from fastchat.fanout.hub import Room
    from fastchat.ws.deflate import ContextDeflater, SharedDeflater

# Peer.compress values: how the connection's frames are compressed.
PLAIN = 0  # not at all
SHARED = 1  # by the hub's one shared compressor (permessage-deflate, no context takeover)
DEDICATED = 2  # by the connection's own compressor (Peer.deflater)


class Peer(Protocol):
    """A connection as the hub sees it: its outgoing queue, its state, its rooms."""

    out: bytes | list[bytes] | None  # queued frames not yet written, in order
    paused: bool  # the transport asked to stop writing (backpressure)
    closed: bool
    compress: int  # PLAIN, SHARED or DEDICATED
    deflater: SharedDeflater | ContextDeflater | None  # when DEDICATED
    rooms: list[Room]  # kept by Hub.enter / Hub.leave
    user_id: str | None  # set by Hub.bind_user

    def deliver(self, blob: bytes) -> None:
        """Write pre-built frames now (nothing of its own is queued)."""

    def flush(self) -> None:
        """Write ``out``."""

    def hold(self, blob: bytes) -> None:
        """Keep ``blob`` while paused; close the connection past its backpressure limit."""


class Registry(Protocol):
    """Told by each connection when it opens, is about to close, and has closed."""

    def opened(self, conn: Peer) -> None: ...
    def closing(self, conn: Peer) -> None: ...
    def closed(self, conn: Peer) -> None: ...
