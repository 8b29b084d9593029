"""Ping idle WebSocket peers and close the ones that stopped answering (half-open TCP).

One timer for all connections instead of a task per connection (what picows' auto-ping
does): a task and its coroutine frame cost more memory than the rest of an idle connection.
Every ``interval`` seconds, a connection that received nothing since the previous sweep is
pinged; if it still has received nothing ``timeout`` seconds later, it is closed.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from fastchat.errors import CloseCode

if TYPE_CHECKING:
    from fastchat.ws.connection import Connection

# Connection.idle: reset to ACTIVE by every received frame.
ACTIVE = 0
QUIET = 1  # nothing received during the last interval
PINGED = 2  # pinged, waiting for any frame (the pong) to come back


class Keepalive:
    """Runs the sweep over ``connections`` until :meth:`stop`."""

    def __init__(self, connections: set[Connection], interval: float, timeout: float):
        self._connections = connections
        self._interval = interval
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(interval, self._sweep)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _sweep(self) -> None:
        pinged = []
        for conn in self._connections:
            if conn.idle == ACTIVE:
                conn.idle = QUIET
            elif conn.idle == QUIET and conn.transport is not None and not conn.closed:
                conn.idle = PINGED
                conn.transport.send_ping()
                pinged.append(conn)
        if pinged:
            self._loop.call_later(self._timeout, self._reap, pinged)
        self._timer = self._loop.call_later(self._interval, self._sweep)

    @staticmethod
    def _reap(pinged: list[Connection]) -> None:
        for conn in pinged:
            if conn.idle == PINGED:
                conn.close(CloseCode.GOING_AWAY, "ping timeout", slow=True)
