"""Typing indicators: droppable hints that expire on their own."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastchat import protocol as p
from fastchat.protocol import event

if TYPE_CHECKING:
    from fastchat.chat.rooms import Room, RoomDirectory
    from fastchat.chat.users import User
    from fastchat.fanout.broker import Broker
    from fastchat.fanout.hub import Hub
    from fastchat.ws.peer import Peer as Connection

TYPING_EXPIRES_SECONDS = 6.0


class Typing:
    """Who is typing in each room (``Room.typing``: a timer per typist)."""

    def __init__(self, directory: RoomDirectory, hub: Hub, broker: Broker):
        self._directory = directory
        self._hub = hub
        self._broker = broker

    def typing(self, conn: Connection, user: User, cmd: p.Typing) -> None:
        room = self._directory.entered(cmd.room_id, conn, cmd.TYPE)
        if cmd.typing:
            timer = room.typing.pop(user.id, None)
            if timer is not None:
                timer.cancel()
            room.typing[user.id] = self._hub.loop.call_later(
                TYPING_EXPIRES_SECONDS, self.stop, room, user
            )
            self._publish(room, user, True)
        else:
            self.stop(room, user)

    def stop(self, room: Room, user: User) -> None:
        """``user`` stopped typing in ``room`` (sent, left, or the hint expired)."""
        timer = room.typing.pop(user.id, None)
        if timer is None:
            return
        timer.cancel()
        self._publish(room, user, False)

    def _publish(self, room: Room, user: User, typing: bool) -> None:
        payload = event(
            "user_typing",
            {"userId": user.id, "username": user.username, "roomId": room.id, "typing": typing},
        )
        self._broker.publish(
            room.channel, payload, droppable=True, exclude=self._hub.user_conns(user.id)
        )
