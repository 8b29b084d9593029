"""Room history: the newest messages of each room in memory, older pages from storage.

Memory holds the newest ``history_cache`` messages of a room, among them every one not yet
on disk, so read-your-writes holds; pages past that window are read from storage and
merged. A page that memory can answer is answered synchronously (:meth:`History.cached_page`);
only a page that needs storage awaits it. All windows together hold at most
``history_cache_total`` messages: past that, the least recently active rooms' windows lose
their oldest stored messages (each keeps its newest one and every one not yet stored).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Awaitable, Callable
from itertools import islice
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import orjson

from fastchat import protocol as p
from fastchat.chat.accounts import DELETED_USER
from fastchat.errors import NotFound
from fastchat.protocol import event

if TYPE_CHECKING:
    from fastchat.chat.rooms import Room, RoomDirectory
    from fastchat.chat.users import User, Users
    from fastchat.fanout.hub import Hub
    from fastchat.fanout.hub import Room as Channel
    from fastchat.storage.base import MessageRow, Store
    from fastchat.ws.peer import Peer as Connection

_seq = itemgetter("seq")
_MESSAGE_EVENTS = (
    b'{"type":"new_message"',
    b'{"type":"message_edited"',
    b'{"type":"message_deleted"',
    b'{"type":"thread_updated"',
)

Page = tuple[list[dict[str, Any]], bool]
"""Messages oldest first, and whether there are more past them."""


def reactions_json(reactions: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """``(emoji, user_id)`` pairs, oldest first, as messages carry them: one entry per
    emoji, in the order each was first used."""
    by_emoji: dict[str, list[str]] = {}
    for emoji, user_id in reactions:
        by_emoji.setdefault(emoji, []).append(user_id)
    return [
        {"emoji": emoji, "count": len(user_ids), "userIds": user_ids}
        for emoji, user_ids in by_emoji.items()
    ]


class History:
    """Each room's recent messages, messages not yet stored, and history pages."""

    def __init__(
        self,
        directory: RoomDirectory,
        hub: Hub,
        store: Store,
        users: Users,
        history_cache: int,
        history_cache_total: int,
    ):
        self._directory = directory
        self._hub = hub
        self._store = store
        self._users = users
        self._history_cache = history_cache
        self._total = history_cache_total
        # messages the windows may still gain before their sizes are summed again
        self._headroom = history_cache_total
        self._trimmed: set[str] = set()  # rooms whose window lost messages to the total
        # message id -> (room, message) for messages handed to the writer, until committed
        self.pending: dict[str, tuple[Room, dict[str, Any]]] = {}
        # message id -> (room, message) changed by a write not stored yet (a reaction)
        self._changed: dict[str, tuple[Room, dict[str, Any]]] = {}

    async def load(self, room: Room) -> None:
        """Read the room's newest messages into memory, once."""
        if room.history is not None:
            return
        rows = await self._store.messages_page(room.id, limit=self._history_cache)
        messages = await self.from_rows(rows)
        if room.history is None:  # another join may have loaded it while this one waited
            room.history = deque(messages, maxlen=self._history_cache)
            self._headroom -= len(messages)
            if self._headroom < 0:
                self._trim()

    def remember(self, room: Room, message: dict[str, Any]) -> None:
        """Add a new message (its room was loaded when its sender joined), in seq order."""
        history: deque[dict[str, Any]] = room.history  # type: ignore[assignment]
        if history and history[-1]["seq"] > message["seq"]:  # another node's came first
            if len(history) == history.maxlen:
                history.popleft()
            history.insert(bisect_left(history, message["seq"], key=_seq), message)
        else:
            history.append(message)
        self._headroom -= 1
        if self._headroom < 0:
            self._trim()

    def _trim(self) -> None:
        """Bring the windows' total back to 90 % of ``history_cache_total``, least recently
        active rooms first, and leave headroom enough that this runs once per tenth of it."""
        rooms = [room for room in self._directory.by_id.values() if room.history]
        held = sum(len(room.history) for room in rooms)  # type: ignore[arg-type]
        target = self._total - self._total // 10
        if held > target:
            pending, changed = self.pending, self._changed
            rooms.sort(key=lambda room: room.history[-1]["timestamp"])  # type: ignore[index]
            for room in rooms:
                history: deque[dict[str, Any]] = room.history  # type: ignore[assignment]
                before = held
                while (
                    held > target
                    and len(history) > 1
                    and history[0]["id"] not in pending
                    and history[0]["id"] not in changed
                ):
                    history.popleft()
                    held -= 1
                if held < before:
                    self._trimmed.add(room.id)
                if held <= target:
                    break
        self._headroom = max(self._total - held, self._total // 10)

    def holds_after(self, room: Room, seq: int) -> bool:
        """Whether the room's window holds every message of the room newer than ``seq``."""
        history = room.history
        if history is None:
            return False
        return (bool(history) and history[0]["seq"] <= seq + 1) or self._complete(room)

    def _complete(self, room: Room) -> bool:
        """Whether the room's (loaded) window holds every message the room has."""
        history: deque[dict[str, Any]] = room.history  # type: ignore[assignment]
        return len(history) < self._history_cache and room.id not in self._trimmed

    def apply_remote(self, channel: Channel, payload: bytes) -> None:
        """Keep the window true to what another node published in the room (messages,
        edits, deletions, reply counts); other events leave it alone."""
        room = self._directory.by_id.get(channel.id)
        if room is None or room.history is None or not payload.startswith(_MESSAGE_EVENTS):
            return
        parsed = orjson.loads(payload)
        kind, data = parsed["type"], parsed["data"]
        if kind == "message_deleted":
            for index, old in enumerate(room.history):
                if old["id"] == data["messageId"]:
                    deleted = {k: v for k, v in old.items() if k != "attachment"}
                    room.history[index] = {**deleted, "content": "", "deleted": True}
            return
        if kind == "thread_updated":
            for old in room.history:
                if old["id"] == data["messageId"]:
                    self.replace(room, {**old, "replyCount": data["replyCount"]})
                    break
            return
        if kind == "message_edited":
            self.replace(room, data["message"])
        else:
            self.remember(room, data["message"])

    def replace(self, room: Room, message: dict[str, Any]) -> None:
        """Swap the cached copy of an edited or deleted message."""
        history = room.history
        if history is not None:
            for index in range(len(history) - 1, -1, -1):
                if history[index]["id"] == message["id"]:
                    history[index] = message
                    break
        if message["id"] in self.pending:
            self.pending[message["id"]] = (room, message)
        if message["id"] in self._changed:
            self._changed[message["id"]] = (room, message)

    def change(self, room: Room, message: dict[str, Any]) -> Callable[[object], None]:
        """Apply a change that is written behind (a reaction): until the write is stored,
        the message is found with it, in pages and look-ups, whether or not its room's
        window still holds it. Returns the write's callback."""
        message_id = message["id"]
        self._changed[message_id] = (room, message)
        self.replace(room, message)

        def stored(_error: object) -> None:
            if self._changed.get(message_id, (None, None))[1] is message:
                del self._changed[message_id]

        return stored

    async def find(self, message_id: str) -> tuple[Room, dict[str, Any]] | None:
        """A message and its room, as clients see it: from memory first, else storage."""
        pending = self._changed.get(message_id) or self.pending.get(message_id)
        if pending is not None:
            return pending
        row = await self._store.message_by_id(message_id)
        if row is None:
            return None
        room = self._directory.by_id.get(row.room_id)
        if room is None:
            return None
        await self.load(room)
        for cached in reversed(room.history):  # type: ignore[arg-type]
            if cached["id"] == message_id:
                return room, cached
        return room, (await self.from_rows([row]))[0]

    async def visible_message(
        self, message_id: str, user: User, request_type: str
    ) -> tuple[Room, dict[str, Any]]:
        """The live message ``message_id`` of a room ``user`` may see; NotFound otherwise
        (the same for a message that does not exist and one the user may not see)."""
        found = await self.find(message_id)
        if found is None or found[1].get("deleted") or not found[0].visible_to(user):
            raise NotFound("Message not found", request_type=request_type)
        return found

    async def from_rows(self, rows: list[MessageRow]) -> list[dict[str, Any]]:
        """Stored messages as events carry them (their reactions read in one go)."""
        if not rows:
            return []
        reactions = await self._store.reactions([row.id for row in rows])
        changed = self._changed
        return [
            changed[row.id][1]
            if row.id in changed
            else await self._from_row(row, reactions.get(row.id))
            for row in rows
        ]

    async def _from_row(
        self, row: MessageRow, reactions: list[tuple[str, str]] | None
    ) -> dict[str, Any]:
        author = await self._users.get(row.user_id)
        message = p.message_json(
            row.id,
            row.seq,
            row.room_id,
            row.user_id,
            author.username if author else DELETED_USER,
            author.avatar_url if author else None,
            "" if row.deleted_at else row.content,
            row.message_type,
            row.reply_to,
            row.client_id,
            row.created_at,
            row.edited_at is not None,
            row.reply_count,
            reactions_json(reactions) if reactions else (),
            orjson.loads(row.mentions) if row.mentions else (),
            bool(row.mentions_room),
        )
        if row.deleted_at:
            message["deleted"] = True
        if row.attachment_id and not row.deleted_at:
            file = await self._store.file(row.attachment_id)
            if file is not None:
                message["attachment"] = p.attachment_json(
                    file.id, file.name, file.size, file.content_type
                )
        return message

    def room_history(
        self, conn: Connection, user: User, cmd: p.GetRoomHistory
    ) -> Awaitable[None] | None:
        room = self._directory.visible(cmd.room_id, user, cmd.TYPE)
        page = (
            None
            if room.history is None
            else self.cached_page(room, cmd.before, cmd.after, cmd.limit)
        )
        if page is None:
            return self._room_history(conn, room, cmd)
        self._send_page(conn, room, page)
        return None

    async def _room_history(self, conn: Connection, room: Room, cmd: p.GetRoomHistory) -> None:
        await self.load(room)
        self._send_page(conn, room, await self.page(room, cmd.before, cmd.after, cmd.limit))

    def _send_page(self, conn: Connection, room: Room, page: Page) -> None:
        messages, has_more = page
        self._hub.send(
            conn,
            event("room_history", {"roomId": room.id, "messages": messages, "hasMore": has_more}),
        )

    def cached_page(
        self, room: Room, before: int | None, after: int | None, limit: int
    ) -> Page | None:
        """Up to ``limit`` messages from memory; None when the range reaches past it."""
        history = room.history
        assert history is not None
        if after is not None:
            if not self.holds_after(room, after):
                return None
            start = bisect_right(history, after, key=_seq)
            newer = list(islice(history, start, start + limit + 1))
            return newer[:limit], len(newer) > limit
        end = len(history) if before is None else bisect_left(history, before, key=_seq)
        older = list(islice(history, max(0, end - limit - 1), end))
        if len(older) <= limit and not self._complete(room):
            return None
        return older[-limit:], len(older) > limit

    async def page(self, room: Room, before: int | None, after: int | None, limit: int) -> Page:
        """Up to ``limit`` messages, oldest first, from memory when it holds the whole range."""
        page = self.cached_page(room, before, after, limit)
        if page is not None:
            return page
        history = room.history
        assert history is not None
        if after is not None:
            start = bisect_right(history, after, key=_seq)
            newer = list(islice(history, start, start + limit + 1))
            rows = await self._store.messages_page(room.id, after=after, limit=limit + 1)
            merged = {m["seq"]: m for m in await self.from_rows(rows)}
            merged.update((m["seq"], m) for m in newer)
            newer = [merged[seq] for seq in sorted(merged)]
            return newer[:limit], len(newer) > limit
        end = len(history) if before is None else bisect_left(history, before, key=_seq)
        older = list(islice(history, max(0, end - limit - 1), end))
        rows = await self._store.messages_page(
            room.id,
            before=older[0]["seq"] if older else before,
            limit=limit + 1 - len(older),
        )
        older = await self.from_rows(rows) + older
        return older[-limit:], len(older) > limit
