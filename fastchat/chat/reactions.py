"""Reactions: one emoji per user per message, at most a few distinct ones per message."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastchat import protocol as p
from fastchat.clock import utc_now_iso
from fastchat.errors import ValidationError
from fastchat.protocol import event
from fastchat.storage import ops

if TYPE_CHECKING:
    from fastchat.chat.direct import Direct
    from fastchat.chat.history import History
    from fastchat.chat.users import User
    from fastchat.chat.writes import Writes
    from fastchat.fanout.broker import Broker
    from fastchat.storage.base import Op
    from fastchat.ws.peer import Peer as Connection

MAX_DISTINCT_REACTIONS = 20
"""Distinct emoji on one message, at most."""


def toggled(
    reactions: list[dict[str, Any]] | tuple[()], cmd: p.Reaction, user_id: str
) -> list[dict[str, Any]] | None:
    """``reactions`` with ``cmd`` applied by ``user_id``; None when that changes nothing."""
    changed = list(reactions)
    index = next((i for i, r in enumerate(changed) if r["emoji"] == cmd.emoji), None)
    user_ids: list[str] = [] if index is None else changed[index]["userIds"]
    if cmd.added == (user_id in user_ids):
        return None  # already there, or already gone
    if cmd.added:
        if index is None and len(changed) >= MAX_DISTINCT_REACTIONS:
            raise ValidationError(
                f"A message can carry at most {MAX_DISTINCT_REACTIONS} different reactions",
                request_type=cmd.TYPE,
                field="emoji",
            )
        user_ids = [*user_ids, user_id]
    else:
        user_ids = [u for u in user_ids if u != user_id]
    entry = {"emoji": cmd.emoji, "count": len(user_ids), "userIds": user_ids}
    if index is None:
        changed.append(entry)
    elif user_ids:
        changed[index] = entry
    else:
        del changed[index]
    return changed


class Reactions:
    """``add_reaction`` and ``remove_reaction``, on room messages and direct messages."""

    def __init__(self, broker: Broker, history: History, direct: Direct, writes: Writes):
        self._broker = broker
        self._history = history
        self._direct = direct
        self._writes = writes

    async def react(self, conn: Connection, user: User, cmd: p.Reaction) -> None:
        if await self._history.find(cmd.message_id) is None:
            await self._react_direct(user, cmd)
            return
        room, message = await self._history.visible_message(cmd.message_id, user, cmd.TYPE)
        reactions = toggled(message.get("reactions", ()), cmd, user.id)
        if reactions is None:
            return
        self._writes.check_capacity(cmd.TYPE)
        stored = self._history.change(room, {**message, "reactions": reactions})
        self._writes.submit(self._op(cmd, user), stored)
        self._broker.publish(room.channel, self._event(cmd, user, {"roomId": room.id}))

    async def _react_direct(self, user: User, cmd: p.Reaction) -> None:
        message = await self._direct.visible(cmd.message_id, user, cmd.TYPE)
        reactions = toggled(message["reactions"], cmd, user.id)
        if reactions is None:
            return
        self._writes.check_capacity(cmd.TYPE)
        self._direct.replace(
            {**message, "reactions": reactions}, self._op(cmd, user), self._event(cmd, user, {})
        )

    @staticmethod
    def _op(cmd: p.Reaction, user: User) -> Op:
        if cmd.added:
            return ops.add_reaction(cmd.message_id, cmd.emoji, user.id, utc_now_iso())
        return ops.remove_reaction(cmd.message_id, cmd.emoji, user.id)

    @staticmethod
    def _event(cmd: p.Reaction, user: User, where: dict[str, str]) -> bytes:
        return event(
            "reaction_added" if cmd.added else "reaction_removed",
            {
                "messageId": cmd.message_id,
                **where,
                "emoji": cmd.emoji,
                "userId": user.id,
                "username": user.username,
            },
        )
