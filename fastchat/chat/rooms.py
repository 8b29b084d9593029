"""Rooms: what a room is, who may see and join it, and joining, leaving, creating, inviting."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

import orjson

from fastchat import protocol as p
from fastchat.chat.moderation import can_manage
from fastchat.clock import utc_now_iso
from fastchat.errors import Conflict, Forbidden, NotFound, NotMember
from fastchat.ids import new_id
from fastchat.names import skeleton
from fastchat.protocol import event
from fastchat.storage import ops

if TYPE_CHECKING:
    from fastchat.chat.history import History
    from fastchat.chat.peers import DmPeers
    from fastchat.chat.typing import Typing
    from fastchat.chat.users import User, Users
    from fastchat.chat.writes import Writes
    from fastchat.fanout.broker import Broker
    from fastchat.fanout.hub import Hub
    from fastchat.fanout.hub import Room as Channel
    from fastchat.storage.base import Store
    from fastchat.ws.peer import Peer as Connection

CATCH_UP_LIMIT = 200
OFFLINE_MEMBERS_LISTED = 100
"""Members not in the room now that ``room_joined`` lists (the most recently seen)."""


class Room:
    """A room as the chat knows it: what it is, who may join, its recent history, typists.

    Who is in it *now* is the hub's: ``channel`` is its fan-out state.
    """

    __slots__ = (
        "channel",
        "created_by",
        "description",
        "history",
        "id",
        "is_private",
        "member_ids",
        "name",
        "typing",
    )

    def __init__(
        self,
        room_id: str,
        name: str,
        description: str | None,
        is_private: bool,
        created_by: str | None,
        member_ids: set[str],
        channel: Channel,
    ):
        self.id = room_id
        self.name = name
        self.description = description
        self.is_private = is_private
        self.created_by = created_by
        self.member_ids = member_ids  # persisted membership (who may join a private room)
        self.channel = channel
        # The newest messages, loaded when the room is first joined (History.load).
        self.history: deque[dict[str, Any]] | None = None
        self.typing: dict[str, asyncio.TimerHandle] = {}

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "is_private": self.is_private,
            "member_count": len(self.member_ids),
        }

    def visible_to(self, user: User) -> bool:
        """Private rooms are invisible to non-members."""
        return not self.is_private or user.id in self.member_ids


class RoomDirectory:
    """Every room by id, and the two look-ups that carry the access rules."""

    def __init__(self) -> None:
        self.by_id: dict[str, Room] = {}

    def visible(self, room_id: str, user: User, request_type: str | None = None) -> Room:
        """The room, if ``user`` may see it; NotFound otherwise."""
        room = self.by_id.get(room_id)
        if room is None or not room.visible_to(user):
            raise NotFound("Room not found", request_type=request_type)
        return room

    def entered(self, room_id: str, conn: Connection, request_type: str) -> Room:
        """The room, if ``conn`` is in it now; NotFound or NotMember otherwise (NotFound for
        a private room the user is not a member of: it must look like no room at all)."""
        room = self.by_id.get(room_id)
        if room is None:
            raise NotFound("Room not found", request_type=request_type)
        if conn not in room.channel.conns:
            if room.is_private and conn.user_id not in room.member_ids:
                raise NotFound("Room not found", request_type=request_type)
            raise NotMember("You are not a member of this room", request_type=request_type)
        return room

    def visible_rooms(self, user: User) -> list[dict[str, Any]]:
        """Summaries of the rooms ``user`` may see, by name."""
        rooms = [room.summary() for room in self.by_id.values() if room.visible_to(user)]
        rooms.sort(key=lambda r: (r["name"].lower(), r["id"]))
        return rooms


class Rooms:
    """Joining, leaving, creating and inviting; presence announcements."""

    def __init__(
        self,
        directory: RoomDirectory,
        hub: Hub,
        broker: Broker,
        users: Users,
        writes: Writes,
        history: History,
        typing: Typing,
        history_cache: int,
        store: Store,
        peers: DmPeers,
    ):
        self._directory = directory
        self._hub = hub
        self._broker = broker
        self._store = store
        self._users = users
        self._writes = writes
        self._history = history
        self._typing = typing
        self._history_cache = history_cache
        self._peers = peers

    async def join_room(self, conn: Connection, user: User, cmd: p.JoinRoom) -> None:
        room = self._directory.visible(cmd.room_id, user, cmd.TYPE)
        # Before entering: once it is in, the connection may send, which needs the history.
        await self._history.load(room)
        await self._broker.follow(room.channel)
        if user.id not in room.member_ids:
            self._writes.check_capacity(cmd.TYPE)
            room.member_ids.add(user.id)
            self._writes.submit(ops.add_member(room.id, user.id, "member", utc_now_iso()))
        offline = await self._store.members_by_last_seen(room.id, limit=OFFLINE_MEMBERS_LISTED)
        elsewhere = await self._members_elsewhere(room)
        already_present = user.id in room.channel.online_user_ids()
        self._hub.enter(room.channel, conn)
        online = room.channel.online_user_ids()
        members = [
            {**member.public(), "role": member.role, "status": "online"}
            for member in map(self._users.cached, online)
            if member is not None
        ]
        if elsewhere:
            members.extend(
                {**member.public(), "role": member.role, "status": "online"}
                for member in elsewhere
                if member.id not in online
            )
            online = online | {member.id for member in elsewhere}
        members.extend(
            {
                "id": row.id,
                "username": row.username,
                "avatar_url": row.avatar_url,
                "role": row.role,
                "status": "online" if self._hub.user_conns(row.id) else "offline",
                "last_seen": row.last_seen,
            }
            for row in offline
            if row.id not in online
        )
        self._hub.send(
            conn,
            event("room_joined", {"roomId": room.id, "roomName": room.name, "members": members}),
        )
        if cmd.since is not None:
            # Should this page wait on storage, what is published meanwhile reaches the
            # connection live and may be in the page too: duplicates (same seq), no gap.
            messages, has_more = await self._history.page(room, None, cmd.since, CATCH_UP_LIMIT)
            self._hub.send(
                conn,
                event(
                    "room_history", {"roomId": room.id, "messages": messages, "hasMore": has_more}
                ),
            )
        if not already_present:
            self._broker.publish(
                room.channel,
                event(
                    "user_joined",
                    {"user": user.public(), "roomId": room.id, "timestamp": utc_now_iso()},
                ),
                exclude=self._hub.user_conns(user.id),
            )

    def leave_room(self, conn: Connection, user: User, cmd: p.LeaveRoom) -> None:
        room = self._directory.entered(cmd.room_id, conn, cmd.TYPE)
        self.leave(room, conn, user)
        self._hub.send(conn, event("room_left", {"roomId": room.id}))

    def leave(self, room: Room, conn: Connection, user: User) -> None:
        """Take ``conn`` out of ``room``; announce it if that was the user's last connection."""
        self._hub.leave(room.channel, conn)
        if user.id not in room.channel.online_user_ids():  # else another tab is still there
            self.announce_left(room, user)

    def leave_all(self, conn: Connection, user: User) -> None:
        """Take a closing connection out of every room it is in."""
        for channel in list(conn.rooms):
            self.leave(self._directory.by_id[channel.id], conn, user)

    def announce_left(self, room: Room, user: User) -> None:
        self._typing.stop(room, user)
        self._broker.publish(
            room.channel,
            event(
                "user_left",
                {
                    "user": {"id": user.id, "username": user.username},
                    "roomId": room.id,
                    "timestamp": utc_now_iso(),
                },
            ),
        )

    def create_room(self, conn: Connection, user: User, cmd: p.CreateRoom) -> None:
        key = skeleton(cmd.name)
        if any(
            skeleton(other.name) == key
            for other in self._directory.by_id.values()
            if other.visible_to(user)
        ):
            raise Conflict(
                "A room with this name, or one that looks like it, exists", request_type=cmd.TYPE
            )
        self._writes.check_capacity(cmd.TYPE)
        now = utc_now_iso()
        room = self._add_room(new_id(), cmd.name, cmd.description or None, cmd.is_private, user.id)
        self._broker.send_control(
            orjson.dumps(
                {
                    "action": "room",
                    "roomId": room.id,
                    "name": room.name,
                    "description": room.description,
                    "isPrivate": room.is_private,
                    "userId": user.id,
                }
            )
        )
        self._writes.submit(
            ops.insert_room(
                id=room.id,
                name=room.name,
                description=room.description,
                is_private=room.is_private,
                created_by=user.id,
                created_at=now,
            )
        )
        self._writes.submit(ops.add_member(room.id, user.id, "owner", now))
        payload = event("room_created", {"room": room.summary()})
        if room.is_private:
            self._broker.send_user(user.id, payload)
        else:
            self._broker.send_everyone(payload)

    def _add_room(
        self, room_id: str, name: str, description: str | None, is_private: bool, owner_id: str
    ) -> Room:
        room = Room(
            room_id,
            name,
            description,
            is_private,
            owner_id,
            {owner_id},
            self._broker.open_room(room_id, 0),
        )
        room.history = deque(maxlen=self._history_cache)
        self._directory.by_id[room.id] = room
        return room

    def apply_control(self, control: dict[str, Any]) -> None:
        """A room another process created, or a member it added (see ``send_control``)."""
        room_id = control["roomId"]
        if control["action"] == "room" and room_id not in self._directory.by_id:
            self._add_room(
                room_id,
                control["name"],
                control["description"],
                control["isPrivate"],
                control["userId"],
            )
        elif control["action"] == "member" and room_id in self._directory.by_id:
            self._directory.by_id[room_id].member_ids.add(control["userId"])

    async def invite_to_room(self, conn: Connection, user: User, cmd: p.InviteToRoom) -> None:
        room = self._directory.visible(cmd.room_id, user, cmd.TYPE)
        if not can_manage(room, user):
            raise Forbidden(
                "Only the room owner, moderators and admins can invite", request_type=cmd.TYPE
            )
        target = await self._users.get(cmd.user_id)
        if target is None:
            raise NotFound("User not found", request_type=cmd.TYPE)
        if target.id not in room.member_ids:
            self._writes.check_capacity(cmd.TYPE)
            room.member_ids.add(target.id)
            self._writes.submit(ops.add_member(room.id, target.id, "member", utc_now_iso()))
            self._broker.send_control(
                orjson.dumps({"action": "member", "roomId": room.id, "userId": target.id})
            )
        self._broker.send_user(target.id, event("room_invited", {"room": room.summary()}))
        self._hub.send(conn, event("member_added", {"roomId": room.id, "userId": target.id}))

    async def _members_elsewhere(self, room: Room) -> list[User]:
        """The room's members online on other nodes (none with one process)."""
        elsewhere = self._broker.users_elsewhere()
        if not elsewhere:
            return []
        members = room.member_ids
        few, many = (elsewhere, members) if len(elsewhere) < len(members) else (members, elsewhere)
        found = []
        for user_id in [user_id for user_id in few if user_id in many]:
            member = await self._users.get(user_id)
            if member is not None:
                found.append(member)
        return found

    def announce_presence(self, user: User, status: str, at: str | None = None) -> None:
        """Tell the users who share a room with ``user`` and those online here with a direct
        conversation with ``user``, not the whole server; ``at``: when it happened, if not
        now."""
        targets: set[Connection] = set()
        for room in self._directory.by_id.values():
            if user.id in room.member_ids and room.channel.conns:
                targets.update(room.channel.conns)
        for peer_id in self._peers.watchers(user.id):
            targets.update(self._hub.user_conns(peer_id))
        targets.difference_update(self._hub.user_conns(user.id))
        if targets:
            payload = event(
                "user_status",
                {
                    "userId": user.id,
                    "username": user.username,
                    "status": status,
                    "timestamp": at or utc_now_iso(),
                },
            )
            self._hub.send_many(targets, payload, droppable=True)
