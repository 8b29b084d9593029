"""The seam between the chat and the fan-out: how room and user events get published.

The chat publishes through a :class:`Broker` and never writes the hub itself. A broker
also allocates each room's ``seq`` (and the direct messages' one), because a broker that
spans processes must order a room's events where it distributes them.
:class:`LocalBroker` serves one process: it calls the hub synchronously and counts in
memory, so ordering and speed are the hub's own. :class:`~fastchat.fanout.redis_broker.
RedisBroker` spans processes and nodes (``[broker] kind = "redis"``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from fastchat.protocol import event

if TYPE_CHECKING:
    from fastchat.fanout.hub import Hub, Room
    from fastchat.ws.peer import Peer


class AlreadyPublished(Exception):
    """``publish_message``'s outcome for a clientId published before, by this process or
    another: the message now has the original's id, seq and timestamp, and was not
    published again."""


class Broker(Protocol):
    """Publishes the chat's events and hands out sequence numbers."""

    def open_room(self, room_id: str, last_seq: int) -> Room:
        """Start serving a room whose last handed-out seq is ``last_seq``; its fan-out room."""
        ...

    def open_direct(self, last_seq: int) -> None:
        """Continue direct-message seqs after ``last_seq``."""
        ...

    def publish_message(
        self, room: Room, message: dict[str, Any], then: Callable[..., None], *args: Any
    ) -> None:
        """Give ``message`` (a message JSON whose ``seq`` is 0) the room's next seq, deliver
        it as ``new_message`` to the room, then call ``then(error, message, *args)``; ``error``
        is None, an :class:`AlreadyPublished`, or the ChatError that kept the message from
        being published."""
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

    def send_control(self, data: bytes) -> None:
        """Hand ``data`` (a change to state every process keeps) to every other process."""
        ...

    async def follow(self, room: Room) -> None:
        """Get ready to deliver ``room`` here before a connection enters it."""
        ...

    def online_elsewhere(self, user_id: str) -> bool:
        """Whether ``user_id`` has connections in another process."""
        ...

    def users_elsewhere(self) -> Collection[str]:
        """The users with connections in other processes."""
        ...

    def share_presence(self, user_id: str, online: bool) -> None:
        """Tell the other processes this one got its first connection of ``user_id`` (True)
        or lost its last (False)."""
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

    def publish_message(
        self, room: Room, message: dict[str, Any], then: Callable[..., None], *args: Any
    ) -> None:
        seqs = self._seqs
        seqs[room.id] = message["seq"] = seqs[room.id] + 1
        self.publish(room, event("new_message", {"message": message}))
        then(None, message, *args)

    def next_direct_seq(self) -> int:
        self._direct_seq += 1
        return self._direct_seq

    def send_control(self, data: bytes) -> None:
        """Nothing to do: there is no other process."""

    def online_elsewhere(self, user_id: str) -> bool:
        return False

    def users_elsewhere(self) -> Collection[str]:
        return ()

    async def follow(self, room: Room) -> None:
        """Nothing to do: every room is delivered here."""

    def share_presence(self, user_id: str, online: bool) -> None:
        """Nothing to do: there is no other process."""

    def send_user(self, user_id: str, payload: bytes, *, droppable: bool = False) -> None:
        self._hub.send_many(self._hub.user_conns(user_id), payload, droppable=droppable)
