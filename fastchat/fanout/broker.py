"""The seam between the chat and the fan-out: how room and user events get published.

The chat publishes through a :class:`Broker` and never writes the hub itself. A broker
also allocates each room's ``seq`` (and the direct messages' one), because a broker that
spans processes must order a room's events where it distributes them.
:class:`LocalBroker`, the only one today, serves one process: it calls the hub
synchronously and counts in memory, so ordering and speed are the hub's own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from fastchat.fanout.hub import Hub, Room
    from fastchat.ws.peer import Peer


class Broker(Protocol):
    """Publishes the chat's events and hands out sequence numbers."""

    def open_room(self, room_id: str, last_seq: int) -> Room:
        """Start serving a room whose last handed-out seq is ``last_seq``; its fan-out room."""
        ...

    def open_direct(self, last_seq: int) -> None:
        """Continue direct-message seqs after ``last_seq``."""
        ...

    def next_seq(self, room_id: str) -> int:
        """The room's next seq."""
        ...

    def next_direct_seq(self) -> int:
        """The next direct-message seq (one sequence for every conversation)."""
        ...

    def publish(
        self,
        room: Room,
        payload: bytes,
        *,
        droppable: bool = False,
        exclude: Iterable[Peer] = (),
    ) -> None:
        """Deliver an encoded event to every connection in ``room``."""
        ...

    def send_user(self, user_id: str, payload: bytes, *, droppable: bool = False) -> None:
        """Deliver an encoded event to every connection of a user."""
        ...

    def send_everyone(self, payload: bytes) -> None:
        """Deliver an encoded event to every authenticated connection."""
        ...


class LocalBroker:
    """The broker of a single process: the hub's methods, and counters in memory."""

    __slots__ = ("_direct_seq", "_hub", "_seqs", "publish", "send_everyone")

    def __init__(self, hub: Hub):
        self._hub = hub
        self._seqs: dict[str, int] = {}
        self._direct_seq = 0
        # Bound once: publishing a message costs no call more than calling the hub.
        self.publish = hub.publish
        self.send_everyone = hub.send_to_all

    def open_room(self, room_id: str, last_seq: int) -> Room:
        self._seqs[room_id] = last_seq
        return self._hub.open_room(room_id)

    def open_direct(self, last_seq: int) -> None:
        self._direct_seq = last_seq

    def next_seq(self, room_id: str) -> int:
        seqs = self._seqs
        seqs[room_id] = seq = seqs[room_id] + 1
        return seq

    def next_direct_seq(self) -> int:
        self._direct_seq += 1
        return self._direct_seq

    def send_user(self, user_id: str, payload: bytes, *, droppable: bool = False) -> None:
        self._hub.send_many(self._hub.user_conns(user_id), payload, droppable=droppable)
