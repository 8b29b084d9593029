"""Threads: the replies to a message (deleted ones left out), and its reply count."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastchat import protocol as p
from fastchat.protocol import event
from fastchat.storage import ops

if TYPE_CHECKING:
    from fastchat.chat.history import History
    from fastchat.chat.rooms import Room
    from fastchat.chat.users import User
    from fastchat.chat.writes import Writes
    from fastchat.fanout.broker import Broker
    from fastchat.fanout.hub import Hub
    from fastchat.storage.base import Store
    from fastchat.ws.peer import Peer as Connection


class Threads:
    """``get_thread`` pages, and counting a reply into its parent (``thread_updated``)."""

    def __init__(
        self,
        hub: Hub,
        broker: Broker,
        store: Store,
        history: History,
        writes: Writes,
    ):
        self._hub = hub
        self._broker = broker
        self._store = store
        self._history = history
        self._writes = writes

    async def get_thread(self, conn: Connection, user: User, cmd: p.GetThread) -> None:
        room, parent = await self._history.visible_message(cmd.message_id, user, cmd.TYPE)
        rows = await self._store.replies_page(parent["id"], before=cmd.before, limit=cmd.limit + 1)
        merged = {m["seq"]: m for m in await self._history.from_rows(rows)}
        # The window holds the newest replies, those not stored yet among them.
        for message in room.history or ():
            if (
                message["replyTo"] == parent["id"]
                and not message.get("deleted")
                and (cmd.before is None or message["seq"] < cmd.before)
            ):
                merged[message["seq"]] = message
        replies = [merged[seq] for seq in sorted(merged)]
        self._hub.send(
            conn,
            event(
                "thread",
                {
                    "messageId": parent["id"],
                    "replies": replies[-cmd.limit :],
                    "hasMore": len(replies) > cmd.limit,
                },
            ),
        )

    def count_reply(self, room: Room, parent: dict[str, Any]) -> None:
        """A reply to ``parent`` was accepted: one more in its count, for everyone in the room.

        The caller checked capacity for this op.
        """
        self._writes.submit(ops.count_reply(parent["id"], 1))
        self._show_count(room, parent, parent.get("replyCount", 0) + 1)

    async def uncount_reply(self, room: Room, parent_id: str) -> None:
        """A reply to ``parent_id`` was deleted, ``ops.count_reply(parent_id, -1)`` committed
        with it: one less in its count, for everyone in the room."""
        found = await self._history.find(parent_id)
        if found is not None:
            parent = found[1]
            self._show_count(room, parent, max(parent.get("replyCount", 0) - 1, 0))

    def _show_count(self, room: Room, parent: dict[str, Any], reply_count: int) -> None:
        self._history.replace(room, {**parent, "replyCount": reply_count})
        self._broker.publish(
            room.channel,
            event(
                "thread_updated",
                {"messageId": parent["id"], "roomId": room.id, "replyCount": reply_count},
            ),
        )
