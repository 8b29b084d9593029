"""Read markers: what each user has read, unread counts, and the conversation list.

A marker is the highest seq a user has read in a room or a DM conversation; it only moves
forward. Markers of connected users are kept in memory (read once when they log in).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from fastchat import protocol as p
from fastchat.errors import NotMember, ValidationError
from fastchat.protocol import event
from fastchat.storage import ops

if TYPE_CHECKING:
    from fastchat.chat.direct import Direct
    from fastchat.chat.history import History
    from fastchat.chat.rooms import Room, RoomDirectory
    from fastchat.chat.users import User, Users
    from fastchat.chat.writes import Writes
    from fastchat.fanout.broker import Broker
    from fastchat.fanout.hub import Hub
    from fastchat.storage.base import Store
    from fastchat.ws.peer import Peer as Connection

UNREAD_CAP = 1000
"""Unread messages are counted up to this many per conversation."""
CONVERSATIONS_MAX = 200
"""The most DM conversations listed on ``authenticated``."""


class Reads:
    """``mark_read``, and the unread state ``authenticated`` carries."""

    def __init__(
        self,
        directory: RoomDirectory,
        hub: Hub,
        broker: Broker,
        store: Store,
        users: Users,
        writes: Writes,
        history: History,
        direct: Direct,
        receipts_max_members: int,
    ):
        self._directory = directory
        self._hub = hub
        self._broker = broker
        self._store = store
        self._users = users
        self._writes = writes
        self._history = history
        self._direct = direct
        self._receipts_max_members = receipts_max_members
        self._markers: dict[str, dict[str, int]] = {}  # user id -> conversation -> seq
        # user id -> their newest marker write, until it is stored: reads of their markers
        # from storage wait for it (the writer keeps order: that one done, all are)
        self._storing: dict[str, asyncio.Future[None]] = {}

    # --- the conversation list ------------------------------------------------------------

    async def load(self, user: User) -> None:
        """Read the user's markers when their first connection logs in (after that, memory
        is ahead of storage)."""
        if user.id not in self._markers:
            await self._stored(user.id)
            markers = await self._store.read_markers(user.id)
            self._markers.setdefault(user.id, markers)

    def forget(self, user: User) -> None:
        """The user's last connection closed."""
        self._markers.pop(user.id, None)

    async def _stored(self, user_id: str) -> None:
        """Once the user's marker writes are stored."""
        storing = self._storing.get(user_id)
        if storing is not None:
            await storing

    async def rooms(self, user: User) -> list[dict[str, Any]]:
        """The rooms ``user`` may see, by name, each with its unread state."""
        markers = self._markers.get(user.id, {})
        rooms = self._directory.visible_rooms(user)
        for summary in rooms:
            room = self._directory.by_id[summary["id"]]
            marker = markers.get(room.id, 0)
            unread, mentions = (
                await self._unread(room, user, marker) if user.id in room.member_ids else (0, 0)
            )
            summary["unread"] = unread
            summary["mentions"] = mentions
            summary["lastReadSeq"] = marker
            summary["lastMessage"] = await self._last_message(room)
        return rooms

    async def _unread(self, room: Room, user: User, marker: int) -> tuple[int, int]:
        history = room.history
        if history is None or not self._history.holds_after(room, marker):
            # Not in memory (then nothing is waiting to be stored either), or past the window.
            return await self._store.room_unread(room.id, user.id, marker, UNREAD_CAP)
        unread = mentions = 0
        for message in reversed(history):
            if message["seq"] <= marker or unread >= UNREAD_CAP:
                break
            if message["userId"] != user.id and not message.get("deleted"):
                unread += 1
                if message.get("mentionsRoom") or user.id in message.get("mentions", ()):
                    mentions += 1
        return unread, mentions

    async def _last_message(self, room: Room) -> dict[str, Any] | None:
        if room.history is not None:
            return room.history[-1] if room.history else None
        rows = await self._store.messages_page(room.id, limit=1)
        return (await self._history.from_rows(rows))[0] if rows else None

    async def conversations(self, user: User) -> list[dict[str, Any]]:
        """The user's DM conversations, newest first, with their unread state."""
        await self._stored(user.id)  # the store counts from its markers
        rows = await self._store.conversations(
            user.id, limit=CONVERSATIONS_MAX, unread_cap=UNREAD_CAP
        )
        markers = self._markers.get(user.id, {})
        lasts = await self._direct.from_rows([row.last for row in rows])
        found: dict[str, tuple[dict[str, Any], int, int]] = {
            row.peer_id: (last, row.last_read_seq, row.unread)
            for row, last in zip(rows, lasts, strict=True)
        }
        for message in self._direct.pending_of(user.id):  # sent, not stored yet
            peer_id = message["toUserId" if message["fromUserId"] == user.id else "fromUserId"]
            last, marker, unread = found.get(
                peer_id, (None, markers.get(ops.dm_pair(user.id, peer_id), 0), 0)
            )
            if last is not None and last["seq"] >= message["seq"]:
                continue
            if message["toUserId"] == user.id and message["seq"] > marker:
                unread += 1
            found[peer_id] = (message, marker, unread)
        conversations = []
        for peer_id, (last, marker, unread) in found.items():
            peer = await self._users.get(peer_id)
            if peer is None:
                continue
            online = bool(self._hub.user_conns(peer_id)) or self._broker.online_elsewhere(peer_id)
            conversations.append(
                {
                    "user": {**peer.public(), "online": online},
                    "unread": unread,
                    "lastReadSeq": marker,
                    "lastMessage": last,
                }
            )
        conversations.sort(key=lambda c: c["lastMessage"]["seq"], reverse=True)
        return conversations[:CONVERSATIONS_MAX]

    # --- receipts on opening a conversation -----------------------------------------------

    async def room_receipts(self, conn: Connection, user: User, room: Room) -> None:
        """Tell a connection that joined ``room`` how far each other member has read it, as
        the ``read_receipt`` they sent last (in rooms small enough for receipts)."""
        if len(room.member_ids) > self._receipts_max_members:
            return
        others = [member_id for member_id in room.member_ids if member_id != user.id]
        markers = await self._store.conversation_markers(room.id, others) if others else {}
        for member_id in others:
            live = self._markers.get(member_id, {}).get(room.id, 0)  # ahead of storage
            if live > markers.get(member_id, 0):
                markers[member_id] = live
        for member_id, seq in markers.items():
            self._hub.send(
                conn, event("read_receipt", {"roomId": room.id, "userId": member_id, "seq": seq})
            )

    async def peer_receipt(self, conn: Connection, user: User, peer_id: str) -> None:
        """Tell a connection how far the peer of a DM conversation has read it, as the
        ``read_receipt`` they sent last (nothing when they have read none of it)."""
        pair = ops.dm_pair(user.id, peer_id)
        live = self._markers.get(peer_id)  # the peer is online here: ahead of storage
        if live is not None:
            seq = live.get(pair, 0)
        else:
            seq = (await self._store.conversation_markers(pair, [peer_id])).get(peer_id, 0)
        if seq:
            self._hub.send(conn, event("read_receipt", {"userId": peer_id, "seq": seq}))

    # --- mark_read ------------------------------------------------------------------------

    async def mark_read(self, conn: Connection, user: User, cmd: p.MarkRead) -> None:
        if cmd.room_id is not None:
            room = self._directory.visible(cmd.room_id, user, cmd.TYPE)
            if user.id not in room.member_ids:
                raise NotMember("You are not a member of this room", request_type=cmd.TYPE)
            await self._history.load(room)
            end = room.history[-1]["seq"] if room.history else 0
            conversation = room.id
        else:
            peer = await self._direct.peer(cmd.user_id, user, cmd.TYPE)  # type: ignore[arg-type]
            end = await self._direct.last_seq(user.id, peer.id)
            conversation = ops.dm_pair(user.id, peer.id)
        if cmd.seq > end:
            raise ValidationError(
                f"seq is beyond the end of the conversation ({end})",
                request_type=cmd.TYPE,
                field="seq",
            )
        markers = self._markers.setdefault(user.id, {})
        if cmd.seq <= markers.get(conversation, 0):
            return  # markers only move forward
        self._writes.check_capacity(cmd.TYPE)
        markers[conversation] = cmd.seq
        storing = self._hub.loop.create_future()

        def stored(_error: BaseException | None) -> None:
            storing.set_result(None)
            if self._storing.get(user.id) is storing:
                del self._storing[user.id]

        self._writes.submit(ops.set_read_marker(user.id, conversation, cmd.seq), stored)
        self._storing[user.id] = storing
        if cmd.room_id is not None:
            self._broker.send_user(
                user.id, event("read_marker", {"roomId": room.id, "seq": cmd.seq})
            )
            if len(room.member_ids) <= self._receipts_max_members:
                self._broker.publish(
                    room.channel,
                    event("read_receipt", {"roomId": room.id, "userId": user.id, "seq": cmd.seq}),
                    exclude=self._hub.user_conns(user.id),
                )
        else:
            self._broker.send_user(
                user.id, event("read_marker", {"userId": peer.id, "seq": cmd.seq})
            )
            self._broker.send_user(
                peer.id, event("read_receipt", {"userId": user.id, "seq": cmd.seq})
            )
