"""The chat's side of the write-behind queue: capacity checks before anything is broadcast,
and the writes that are committed before they take effect."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastchat.errors import Overloaded

if TYPE_CHECKING:
    from fastchat.storage.base import OnDone, Op, Writer


class Writes:
    """Hands ops to the writer; refuses requests the queue has no room for."""

    __slots__ = ("_queue_max", "_writer")

    def __init__(self, writer: Writer, queue_max: int):
        self._writer = writer
        self._queue_max = queue_max

    def check_capacity(self, request_type: str, ops_needed: int = 1) -> None:
        """Raise Overloaded unless ``ops_needed`` more ops fit.

        Checked before anything is broadcast, so a later :meth:`submit` cannot fail half-way.
        """
        if self._writer.queue_depth + ops_needed > self._queue_max:
            raise Overloaded("Server is overloaded, try again shortly", request_type=request_type)

    def submit(self, op: Op, on_done: OnDone | None = None) -> None:
        """Queue ``op``; raises Overloaded when the queue is full."""
        if not self._writer.submit(op, on_done):
            raise Overloaded("Server is overloaded, try again shortly")

    def offer(self, op: Op) -> None:
        """Queue ``op`` if there is room: for writes that may be skipped (last-seen times)."""
        self._writer.submit(op)

    async def commit(self, *ops: Op) -> None:
        """Queue ``ops`` and return once they have all committed (the writer keeps their
        order, so waiting for the last is waiting for all); raises Overloaded or the last
        op's error."""
        for op in ops[:-1]:
            self.submit(op)
        await self._writer.execute(ops[-1])
