"""The chat itself: one method per client event, pure logic over the hub and the store.

Nothing here touches a socket: replies go through :class:`~fastchat.fanout.hub.Hub` (which queues
bytes) and writes through a :class:`~fastchat.storage.base.Writer` (which queues operations).
Every state change is applied in memory first (so the fast path never waits on disk) and
acknowledged to the sender only once its batch has committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from fastchat import protocol as p
from fastchat.clock import utc_now_iso
from fastchat.errors import (
    Banned,
    ChatError,
    Conflict,
    Forbidden,
    InvalidToken,
    Muted,
    NotFound,
    NotMember,
    Overloaded,
    StorageUnavailable,
    ValidationError,
)
from fastchat.ids import new_id
from fastchat.protocol import event
from fastchat.roles import ROLE_RANK
from fastchat.seen import SeenClientIds
from fastchat.storage import ops
from fastchat.storage.base import FOREVER

if TYPE_CHECKING:
    from fastchat.auth import TokenService
    from fastchat.config import StorageConfig
    from fastchat.fanout.broker import Broker
    from fastchat.fanout.hub import Hub
    from fastchat.fanout.hub import Room as Channel
    from fastchat.metrics import Metrics
    from fastchat.storage.base import FileRow, Op, StartupState, Store, UserRow, Writer
    from fastchat.ws.connection import Connection

log = logging.getLogger("fastchat.chat")

_seq = itemgetter("seq")

TYPING_EXPIRES_SECONDS = 6.0
CATCH_UP_LIMIT = 200


@dataclass(slots=True)
class User:
    """What the chat needs to know about an account, cached in memory."""

    id: str
    username: str
    email: str
    avatar_url: str | None
    role: str
    banned_until: float | None

    @classmethod
    def from_row(cls, row: UserRow) -> User:
        return cls(row.id, row.username, row.email, row.avatar_url, row.role, row.banned_until)

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "username": self.username, "avatar_url": self.avatar_url}

    def private(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "email": self.email,
            "avatar_url": self.avatar_url,
            "role": self.role,
        }

    def is_banned(self, now: float) -> bool:
        return self.banned_until is not None and self.banned_until > now


@dataclass(slots=True, eq=False)
class _PendingAck:
    """A message on its way to the disk: the writer's ``on_done``, which acks it once stored.

    ``pending`` holds the message under ``ack["messageId"]`` until then; ``key`` is its
    ``"user id\\0clientId"``, if it has a clientId.

    One slotted object per message (rather than a closure and its cells) keeps the objects
    that live until the commit, and so the garbage collector's work, small.
    """

    chat: Chat
    conn: Connection
    key: str | None
    destination: str
    ack: dict[str, Any]
    pending: dict[str, Any]
    request_type: str
    resenders: list[Connection] | None = None

    def add_waiter(self, conn: Connection) -> None:
        """Ack ``conn`` too: it resent the clientId while the message was in flight."""
        if self.resenders is None:
            self.resenders = [conn]
        else:
            self.resenders.append(conn)

    def __call__(self, error: BaseException | None) -> None:
        self.chat._acked(self, error)


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
        self.history: deque[dict[str, Any]] | None = None  # loaded on first use
        self.typing: dict[str, asyncio.TimerHandle] = {}

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "is_private": self.is_private,
            "member_count": len(self.member_ids),
        }


def _visible(room: Room, user: User) -> bool:
    """Private rooms are invisible to non-members."""
    return not room.is_private or user.id in room.member_ids


class Chat:
    """Rooms, messages, presence, direct messages and moderation."""

    def __init__(
        self,
        config: StorageConfig,
        hub: Hub,
        broker: Broker,
        store: Store,
        writer: Writer,
        tokens: TokenService,
        metrics: Metrics,
        startup: StartupState,
    ):
        self._hub = hub
        self._broker = broker
        self._store = store
        self._writer = writer
        self._tokens = tokens
        self._metrics = metrics
        self._history_cache = config.history_cache
        self._queue_max = config.queue_max
        self._rooms: dict[str, Room] = {}
        self._users: dict[str, User] = {}
        # "user id\0client id" -> the message in flight under that clientId
        self._pending_client_ids: dict[str, _PendingAck] = {}
        self._pending_messages: dict[str, tuple[Room, dict[str, Any]]] = {}
        self._pending_dms: dict[str, dict[str, Any]] = {}
        self._mutes: dict[tuple[str, str], float] = {}
        self._seen = SeenClientIds(store.client_keys())
        # file id -> (room id, message id) of the message sharing it, until that is stored
        self._attaching: dict[str, tuple[str, str]] = {}
        # After an unclean stop, messages may have been handed a seq and broadcast without
        # being stored; at most queue_max + batch_max of them. Skip past that many.
        gap = 0 if startup.clean else config.queue_max + config.batch_max
        broker.open_direct(startup.max_dm_seq + gap)
        for row in store.all_rooms():
            self._rooms[row.id] = Room(
                row.id,
                row.name,
                row.description,
                bool(row.is_private),
                row.created_by,
                store.room_member_ids(row.id),
                broker.open_room(row.id, startup.max_room_seq.get(row.id, 0) + gap),
            )
        now = time.time()
        for room_id, user_id, until in store.active_mutes():
            if until > now:
                self._mutes[(room_id, user_id)] = until

    # --- helpers --------------------------------------------------------------------------

    def user(self, user_id: str) -> User | None:
        user = self._users.get(user_id)
        if user is None:
            row = self._store.user_by_id(user_id)
            if row is None:
                return None
            user = self._users[user_id] = User.from_row(row)
        return user

    def check_file_access(self, user: User, file: FileRow) -> None:
        """Raise unless ``user`` may download ``file``.

        Until it is shared only its uploader may; then whoever may see the room of the
        message sharing it, until that message is deleted (which withdraws the file).
        """
        share = self._file_share(file)
        if share is None:
            if file.uploader_id != user.id:
                raise NotFound("File not found")
            return
        room = self._rooms.get(share[0])
        if room is None or not _visible(room, user):
            raise Forbidden("You cannot see the room this file was posted in")
        found = self._find_message(share[1])
        if found is None or found[1].get("deleted"):
            raise NotFound("File not found")

    def _file_share(self, file: FileRow) -> tuple[str, str] | None:
        """``(room id, message id)`` of the message sharing ``file``; None while unshared."""
        if file.room_id is not None and file.message_id is not None:
            return file.room_id, file.message_id
        return self._attaching.get(file.id)

    def _room(self, room_id: str, user: User, request_type: str) -> Room:
        """The room, if ``user`` may see it."""
        room = self._rooms.get(room_id)
        if room is None or not _visible(room, user):
            raise NotFound("Room not found", request_type=request_type)
        return room

    def _in_room(self, room_id: str, conn: Connection, request_type: str) -> Room:
        room = self._rooms.get(room_id)
        if room is None:
            raise NotFound("Room not found", request_type=request_type)
        if conn not in room.channel.conns:
            raise NotMember("You are not a member of this room", request_type=request_type)
        return room

    def _check_capacity(self, request_type: str, ops_needed: int = 1) -> None:
        # Checked before anything is broadcast, so a later _submit cannot fail half-way.
        if self._writer.queue_depth + ops_needed > self._queue_max:
            raise Overloaded("Server is overloaded, try again shortly", request_type=request_type)

    def _submit(
        self, op: Op, on_done: Callable[[BaseException | None], None] | None = None
    ) -> None:
        if not self._writer.submit(op, on_done):
            raise Overloaded("Server is overloaded, try again shortly")

    def _send_error(self, conn: Connection, err: ChatError) -> None:
        self._metrics.errors_sent += 1
        self._hub.send(conn, p.error_event(err))

    def visible_rooms(self, user: User) -> list[dict[str, Any]]:
        rooms = [room.summary() for room in self._rooms.values() if _visible(room, user)]
        rooms.sort(key=lambda r: (r["name"].lower(), r["id"]))
        return rooms

    # --- connection lifecycle -------------------------------------------------------------

    def identify(self, token: str, request_type: str | None = None) -> User:
        """The account behind a token; raises InvalidToken or Banned."""
        claims = self._tokens.verify(token)
        user = self.user(claims.user_id)
        if user is None:
            raise InvalidToken("User not found", request_type=request_type)
        if user.is_banned(time.time()):
            raise Banned("This account is banned", request_type=request_type)
        return user

    def authenticate(self, conn: Connection, user: User) -> None:
        """Bind ``conn`` to ``user``: ``authenticated`` reply, presence, last seen."""
        first = self._hub.bind_user(conn, user.id)
        self._hub.send(
            conn,
            event("authenticated", {"user": user.private(), "rooms": self.visible_rooms(user)}),
        )
        if first:
            self._presence(user, "online")
        self._writer.submit(ops.touch_last_seen(user.id, utc_now_iso()))

    def disconnect(self, conn: Connection, user: User) -> None:
        for channel in list(conn.rooms):
            self._leave(self._rooms[channel.id], conn, user)
        if self._hub.unbind_user(conn, user.id):
            self._presence(user, "offline")
            self._writer.submit(ops.touch_last_seen(user.id, utc_now_iso()))

    def _presence(self, user: User, status: str) -> None:
        """Tell the users who share a room with ``user`` (not the whole server)."""
        targets: set[Connection] = set()
        for room in self._rooms.values():
            if user.id in room.member_ids and room.channel.conns:
                targets.update(room.channel.conns)
        targets.difference_update(self._hub.user_conns(user.id))
        if targets:
            payload = event(
                "user_status",
                {
                    "userId": user.id,
                    "username": user.username,
                    "status": status,
                    "timestamp": utc_now_iso(),
                },
            )
            self._hub.send_many(targets, payload, droppable=True)

    # --- rooms ----------------------------------------------------------------------------

    def join_room(self, conn: Connection, user: User, cmd: p.JoinRoom) -> None:
        room = self._room(cmd.room_id, user, cmd.TYPE)
        if user.id not in room.member_ids:
            self._check_capacity(cmd.TYPE)
            room.member_ids.add(user.id)
            self._submit(ops.add_member(room.id, user.id, "member", utc_now_iso()))
        already_present = user.id in room.channel.online_user_ids()
        self._hub.enter(room.channel, conn)
        members = [
            {**member.public(), "role": member.role, "status": "online"}
            for member in (self.user(uid) for uid in room.channel.online_user_ids())
            if member is not None
        ]
        self._hub.send(
            conn,
            event("room_joined", {"roomId": room.id, "roomName": room.name, "members": members}),
        )
        if cmd.since is not None:
            messages, has_more = self._page(room, None, cmd.since, CATCH_UP_LIMIT)
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
        room = self._in_room(cmd.room_id, conn, cmd.TYPE)
        self._leave(room, conn, user)
        self._hub.send(conn, event("room_left", {"roomId": room.id}))

    def _leave(self, room: Room, conn: Connection, user: User) -> None:
        self._hub.leave(room.channel, conn)
        if user.id not in room.channel.online_user_ids():  # else another tab is still there
            self._announce_left(room, user)

    def _announce_left(self, room: Room, user: User) -> None:
        self._stop_typing(room, user)
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
        self._check_capacity(cmd.TYPE)
        now = utc_now_iso()
        room_id = new_id()
        room = Room(
            room_id,
            cmd.name,
            cmd.description or None,
            cmd.is_private,
            user.id,
            {user.id},
            self._broker.open_room(room_id, 0),
        )
        room.history = deque(maxlen=self._history_cache)
        self._rooms[room.id] = room
        self._submit(
            ops.insert_room(
                id=room.id,
                name=room.name,
                description=room.description,
                is_private=room.is_private,
                created_by=user.id,
                created_at=now,
            )
        )
        self._submit(ops.add_member(room.id, user.id, "owner", now))
        payload = event("room_created", {"room": room.summary()})
        if room.is_private:
            self._broker.send_user(user.id, payload)
        else:
            self._broker.send_everyone(payload)

    def invite_to_room(self, conn: Connection, user: User, cmd: p.InviteToRoom) -> None:
        room = self._room(cmd.room_id, user, cmd.TYPE)
        if not self._can_manage(room, user):
            raise Forbidden(
                "Only the room owner, moderators and admins can invite", request_type=cmd.TYPE
            )
        target = self.user(cmd.user_id)
        if target is None:
            raise NotFound("User not found", request_type=cmd.TYPE)
        if target.id not in room.member_ids:
            self._check_capacity(cmd.TYPE)
            room.member_ids.add(target.id)
            self._submit(ops.add_member(room.id, target.id, "member", utc_now_iso()))
        self._broker.send_user(target.id, event("room_invited", {"room": room.summary()}))
        self._hub.send(conn, event("member_added", {"roomId": room.id, "userId": target.id}))

    def _can_manage(self, room: Room, user: User) -> bool:
        return ROLE_RANK[user.role] >= ROLE_RANK["moderator"] or room.created_by == user.id

    # --- messages -------------------------------------------------------------------------

    def send_message(self, conn: Connection, user: User, cmd: p.SendMessage) -> None:
        room = self._in_room(cmd.room_id, conn, cmd.TYPE)
        client_id = cmd.client_id
        key = None if client_id is None else f"{user.id}\0{client_id}"
        # A resend is answered before the mute check: it is already stored (or in flight).
        if key is not None and self._resend(
            conn,
            key,
            room.id,
            lambda: self._store.message_by_client_id(user.id, client_id),
            lambda row: row.room_id,
            cmd.TYPE,
        ):
            return
        until = self._mutes.get((room.id, user.id))
        if until is not None:
            if until > time.time():
                raise Muted("You are muted in this room", request_type=cmd.TYPE)
            del self._mutes[(room.id, user.id)]
            self._writer.submit(ops.clear_mute(room.id, user.id))
        self._check_capacity(cmd.TYPE, 1 if cmd.file_id is None else 2)
        if cmd.reply_to is not None:
            original = self._find_message(cmd.reply_to)
            if original is None or original[0] is not room:
                raise ValidationError(
                    "replyTo must name a message of the same room",
                    request_type=cmd.TYPE,
                    field="replyTo",
                )
        attachment = self._attachment(user, room, cmd) if cmd.file_id is not None else None

        seq = self._broker.next_seq(room.id)
        message_id = new_id()
        timestamp = utc_now_iso()
        message = p.message_json(
            message_id,
            seq,
            room.id,
            user.id,
            user.username,
            user.avatar_url,
            cmd.content,
            cmd.message_type,
            cmd.reply_to,
            client_id,
            timestamp,
            False,
        )
        if attachment is not None:
            message["attachment"] = attachment
        if user.id in room.typing:
            self._stop_typing(room, user)
        self._broker.publish(room.channel, event("new_message", {"message": message}))
        self._remember(room, message)
        self._metrics.messages_accepted += 1

        self._pending_messages[message_id] = (room, message)
        committed = self._in_flight(
            _PendingAck(
                self,
                conn,
                key,
                room.id,
                {
                    "clientId": client_id,
                    "messageId": message_id,
                    "seq": seq,
                    "timestamp": timestamp,
                },
                self._pending_messages,
                cmd.TYPE,
            )
        )
        self._submit(
            ops.insert_message(
                id=message_id,
                room_id=room.id,
                seq=seq,
                user_id=user.id,
                content=cmd.content,
                message_type=cmd.message_type,
                reply_to=cmd.reply_to,
                client_id=client_id,
                attachment_id=cmd.file_id,
                created_at=timestamp,
            ),
            committed,
        )
        if attachment is not None:
            file_id = attachment["id"]
            self._attaching[file_id] = (room.id, message_id)
            self._submit(
                ops.attach_file(file_id, room.id, message_id),
                lambda _error: self._attaching.pop(file_id, None),
            )

    def _resend(
        self,
        conn: Connection,
        key: str,
        destination: str,
        stored: Callable[[], Any | None],
        destination_of: Callable[[Any], str],
        request_type: str,
    ) -> bool:
        """A clientId seen before: re-ack (now, or on commit) instead of storing it twice.

        ``key`` is ``"user id\\0clientId"`` (the clientId prefixed by kind); ``destination``
        is the room or the DM's target: a clientId reused for somewhere else is refused.
        ``stored`` looks the stored row up, ``destination_of`` reads its destination.
        """
        pending = self._pending_client_ids.get(key)
        if pending is None and key not in self._seen:
            return False  # certainly never stored: no database read
        if pending is not None:
            if pending.destination != destination:
                raise Conflict(
                    "clientId already used for another message", request_type=request_type
                )
            pending.add_waiter(conn)  # still in flight: this connection is acked on commit too
            return True
        row = stored()
        if row is None:
            return False
        if destination_of(row) != destination:
            raise Conflict("clientId already used for another message", request_type=request_type)
        ack = {
            "clientId": row.client_id,
            "messageId": row.id,
            "seq": row.seq,
            "timestamp": row.created_at,
        }
        self._hub.send(conn, event("message_ack", ack))
        return True

    def _in_flight(self, done: _PendingAck) -> _PendingAck:
        """Register a message handed to the writer; ``done`` acks it once committed."""
        if done.key is not None:
            self._pending_client_ids[done.key] = done
            self._seen.add(done.key)
        return done

    def _acked(self, done: _PendingAck, error: BaseException | None) -> None:
        done.pending.pop(done.ack["messageId"], None)
        if done.key is not None:
            self._pending_client_ids.pop(done.key, None)
        waiters = (done.conn,) if done.resenders is None else (done.conn, *done.resenders)
        if error is not None:
            log.error("message %s was not stored: %s", done.ack["messageId"], error)
            failure = StorageUnavailable(
                "Message could not be stored", request_type=done.request_type
            )
            for waiter in waiters:
                self._send_error(waiter, failure)
            return
        self._metrics.messages_acked += 1
        payload = event("message_ack", done.ack)
        for waiter in waiters:
            if not waiter.closed:
                self._hub.send(waiter, payload)

    def _attachment(self, user: User, room: Room, cmd: p.SendMessage) -> dict[str, Any]:
        row = self._store.file(cmd.file_id)  # type: ignore[arg-type]
        if row is None or row.uploader_id != user.id:
            raise NotFound("File not found", request_type=cmd.TYPE)
        if row.message_id is not None or row.id in self._attaching:
            raise Conflict("This file is already attached to a message", request_type=cmd.TYPE)
        if cmd.message_type == "image" and not row.content_type.startswith("image/"):
            raise ValidationError(
                "This file is not an image: send it as messageType file",
                request_type=cmd.TYPE,
                field="messageType",
            )
        return p.attachment_json(row.id, row.name, row.size, row.content_type)

    def _remember(self, room: Room, message: dict[str, Any]) -> None:
        history = self._history(room)
        history.append(message)

    def _history(self, room: Room) -> deque[dict[str, Any]]:
        if room.history is None:
            rows = self._store.messages_page(room.id, limit=self._history_cache)
            room.history = deque(
                (self._message_from_row(r) for r in rows), maxlen=self._history_cache
            )
        return room.history

    def _message_from_row(self, row: Any) -> dict[str, Any]:
        author = self.user(row.user_id)
        message = p.message_json(
            row.id,
            row.seq,
            row.room_id,
            row.user_id,
            author.username if author else "unknown",
            author.avatar_url if author else None,
            "" if row.deleted_at else row.content,
            row.message_type,
            row.reply_to,
            row.client_id,
            row.created_at,
            row.edited_at is not None,
        )
        if row.deleted_at:
            message["deleted"] = True
        if row.attachment_id and not row.deleted_at:
            file = self._store.file(row.attachment_id)
            if file is not None:
                message["attachment"] = p.attachment_json(
                    file.id, file.name, file.size, file.content_type
                )
        return message

    def _find_message(self, message_id: str) -> tuple[Room, dict[str, Any]] | None:
        pending = self._pending_messages.get(message_id)
        if pending is not None:
            return pending
        row = self._store.message_by_id(message_id)
        if row is None:
            return None
        room = self._rooms.get(row.room_id)
        if room is None:
            return None
        for cached in reversed(self._history(room)):
            if cached["id"] == message_id:
                return room, cached
        return room, self._message_from_row(row)

    def _replace(self, room: Room, message: dict[str, Any]) -> None:
        history = self._history(room)
        for index in range(len(history) - 1, -1, -1):
            if history[index]["id"] == message["id"]:
                history[index] = message
                break
        if message["id"] in self._pending_messages:
            self._pending_messages[message["id"]] = (room, message)

    def edit_message(self, conn: Connection, user: User, cmd: p.EditMessage) -> None:
        found = self._find_message(cmd.message_id)
        if found is None or found[1].get("deleted"):
            raise NotFound("Message not found", request_type=cmd.TYPE)
        room, message = found
        self._room(room.id, user, cmd.TYPE)
        if message["userId"] != user.id:
            raise Forbidden("You can only edit your own messages", request_type=cmd.TYPE)
        self._check_capacity(cmd.TYPE)
        edited = {**message, "content": cmd.content, "edited": True}
        self._replace(room, edited)
        self._submit(ops.edit_message(message["id"], cmd.content, utc_now_iso()))
        self._broker.publish(room.channel, event("message_edited", {"message": edited}))

    def delete_message(self, conn: Connection, user: User, cmd: p.DeleteMessage) -> None:
        found = self._find_message(cmd.message_id)
        if found is None or found[1].get("deleted"):
            raise NotFound("Message not found", request_type=cmd.TYPE)
        room, message = found
        self._room(room.id, user, cmd.TYPE)
        if message["userId"] != user.id and not self._can_moderate(room, user, message["userId"]):
            raise Forbidden("You can only delete your own messages", request_type=cmd.TYPE)
        self._check_capacity(cmd.TYPE)
        deleted = {k: v for k, v in message.items() if k != "attachment"}
        self._replace(room, {**deleted, "content": "", "deleted": True})
        self._submit(ops.delete_message(message["id"], utc_now_iso()))
        self._broker.publish(
            room.channel, event("message_deleted", {"messageId": message["id"], "roomId": room.id})
        )
        if message["userId"] != user.id:
            self._audit(
                user,
                "delete_message",
                message["userId"],
                room.id,
                None,
                {"messageId": message["id"]},
            )

    def room_history(self, conn: Connection, user: User, cmd: p.GetRoomHistory) -> None:
        room = self._room(cmd.room_id, user, cmd.TYPE)
        messages, has_more = self._page(room, cmd.before, cmd.after, cmd.limit)
        self._hub.send(
            conn,
            event("room_history", {"roomId": room.id, "messages": messages, "hasMore": has_more}),
        )

    def _page(
        self, room: Room, before: int | None, after: int | None, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """Up to ``limit`` messages, oldest first, from memory when it holds the whole range.

        Memory holds the newest messages of the room (among them every one not yet on disk),
        so read-your-writes holds; older pages are read from SQLite and merged.
        """
        history = self._history(room)
        # A cache that never filled up holds every message the room has.
        complete = len(history) < self._history_cache
        if after is not None:
            start = bisect_right(history, after, key=_seq)
            newer = list(islice(history, start, start + limit + 1))
            if not complete and not (history and history[0]["seq"] <= after + 1):
                rows = self._store.messages_page(room.id, after=after, limit=limit + 1)
                merged = {m["seq"]: m for m in map(self._message_from_row, rows)}
                merged.update((m["seq"], m) for m in newer)
                newer = [merged[seq] for seq in sorted(merged)]
            return newer[:limit], len(newer) > limit
        end = len(history) if before is None else bisect_left(history, before, key=_seq)
        older = list(islice(history, max(0, end - limit - 1), end))
        if len(older) <= limit and not complete:
            rows = self._store.messages_page(
                room.id,
                before=older[0]["seq"] if older else before,
                limit=limit + 1 - len(older),
            )
            older = [self._message_from_row(r) for r in rows] + older
        return older[-limit:], len(older) > limit

    # --- typing ---------------------------------------------------------------------------

    def typing(self, conn: Connection, user: User, cmd: p.Typing) -> None:
        room = self._in_room(cmd.room_id, conn, cmd.TYPE)
        if cmd.typing:
            timer = room.typing.pop(user.id, None)
            if timer is not None:
                timer.cancel()
            room.typing[user.id] = self._hub.loop.call_later(
                TYPING_EXPIRES_SECONDS, self._stop_typing, room, user
            )
            self._publish_typing(room, user, True)
        else:
            self._stop_typing(room, user)

    def _stop_typing(self, room: Room, user: User) -> None:
        timer = room.typing.pop(user.id, None)
        if timer is None:
            return
        timer.cancel()
        self._publish_typing(room, user, False)

    def _publish_typing(self, room: Room, user: User, typing: bool) -> None:
        payload = event(
            "user_typing",
            {"userId": user.id, "username": user.username, "roomId": room.id, "typing": typing},
        )
        self._broker.publish(
            room.channel, payload, droppable=True, exclude=self._hub.user_conns(user.id)
        )

    # --- direct messages ------------------------------------------------------------------

    def private_message(self, conn: Connection, user: User, cmd: p.PrivateMessage) -> None:
        target = self.user(cmd.target_user_id)
        if target is None:
            raise NotFound("User not found", request_type=cmd.TYPE)
        if target.id == user.id:
            raise ValidationError(
                "You cannot message yourself", request_type=cmd.TYPE, field="targetUserId"
            )
        client_id = cmd.client_id
        key = None if client_id is None else f"{user.id}\0dm:{client_id}"
        if key is not None and self._resend(
            conn,
            key,
            target.id,
            lambda: self._store.dm_by_client_id(user.id, client_id),
            lambda row: row.recipient_id,
            cmd.TYPE,
        ):
            return
        self._check_capacity(cmd.TYPE)
        seq = self._broker.next_direct_seq()
        dm_id = new_id()
        timestamp = utc_now_iso()
        self._broker.send_user(
            target.id,
            event(
                "private_message",
                {
                    "id": dm_id,
                    "seq": seq,
                    "from": user.public(),
                    "content": cmd.content,
                    "timestamp": timestamp,
                    "clientId": client_id,
                },
            ),
        )
        self._broker.send_user(
            user.id,
            event(
                "private_message_sent",
                {
                    "id": dm_id,
                    "seq": seq,
                    "targetUserId": target.id,
                    "content": cmd.content,
                    "timestamp": timestamp,
                    "clientId": client_id,
                },
            ),
        )
        record = {
            "id": dm_id,
            "seq": seq,
            "fromUserId": user.id,
            "toUserId": target.id,
            "content": cmd.content,
            "timestamp": timestamp,
        }
        self._pending_dms[dm_id] = record
        committed = self._in_flight(
            _PendingAck(
                self,
                conn,
                key,
                target.id,
                {"clientId": client_id, "messageId": dm_id, "seq": seq, "timestamp": timestamp},
                self._pending_dms,
                cmd.TYPE,
            )
        )

        self._submit(
            ops.insert_dm(
                id=dm_id,
                seq=seq,
                sender_id=user.id,
                recipient_id=target.id,
                content=cmd.content,
                client_id=client_id,
                created_at=timestamp,
            ),
            committed,
        )

    def private_history(self, conn: Connection, user: User, cmd: p.GetPrivateHistory) -> None:
        other = self.user(cmd.user_id)
        if other is None:
            raise NotFound("User not found", request_type=cmd.TYPE)
        rows = self._store.dm_page(user.id, other.id, before=cmd.before, limit=cmd.limit + 1)
        merged = {
            row.seq: {
                "id": row.id,
                "seq": row.seq,
                "fromUserId": row.sender_id,
                "toUserId": row.recipient_id,
                "content": row.content,
                "timestamp": row.created_at,
            }
            for row in rows
        }
        pair = {user.id, other.id}
        for record in self._pending_dms.values():
            if {record["fromUserId"], record["toUserId"]} == pair and (
                cmd.before is None or record["seq"] < cmd.before
            ):
                merged[record["seq"]] = record
        messages = [merged[s] for s in sorted(merged)]
        self._hub.send(
            conn,
            event(
                "private_history",
                {
                    "userId": other.id,
                    "messages": messages[-cmd.limit :],
                    "hasMore": len(messages) > cmd.limit,
                },
            ),
        )

    # --- moderation -----------------------------------------------------------------------

    def _can_moderate(self, room: Room | None, actor: User, target_id: str) -> bool:
        """Moderators and admins (and a room's owner, in that room) act on lower ranks."""
        target = self.user(target_id)
        target_rank = ROLE_RANK[target.role] if target else 0
        actor_rank = ROLE_RANK[actor.role]
        if actor_rank >= ROLE_RANK["moderator"]:
            return actor_rank > target_rank or actor.role == "admin"
        return room is not None and room.created_by == actor.id and target_rank == 0

    def _moderation_target(
        self, actor: User, target_id: str, room: Room | None, request_type: str
    ) -> User:
        target = self.user(target_id)
        if target is None:
            raise NotFound("User not found", request_type=request_type)
        if target.id == actor.id:
            raise ValidationError(
                "You cannot act on yourself", request_type=request_type, field="userId"
            )
        if not self._can_moderate(room, actor, target.id):
            raise Forbidden("You are not allowed to do that", request_type=request_type)
        return target

    def _audit(
        self,
        actor: User,
        action: str,
        target_id: str | None,
        room_id: str | None,
        reason: str | None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        self._submit(
            ops.insert_audit(
                at=utc_now_iso(),
                actor_id=actor.id,
                action=action,
                target_user_id=target_id,
                room_id=room_id,
                reason=reason,
                detail=detail,
            )
        )

    def kick_user(self, conn: Connection, user: User, cmd: p.KickUser) -> None:
        room = self._room(cmd.room_id, user, cmd.TYPE)
        target = self._moderation_target(user, cmd.user_id, room, cmd.TYPE)
        self._check_capacity(cmd.TYPE)
        kicked_conns = [c for c in room.channel.conns if c.user_id == target.id]
        payload = event("kicked", {"roomId": room.id, "reason": cmd.reason, "by": user.public()})
        for target_conn in kicked_conns:
            self._hub.send(target_conn, payload)
            self._hub.leave(room.channel, target_conn)
        if room.is_private and target.id in room.member_ids:
            room.member_ids.discard(target.id)
            self._submit(ops.remove_member(room.id, target.id))
        if kicked_conns:
            self._announce_left(room, target)
        self._audit(user, "kick", target.id, room.id, cmd.reason)
        self._hub.send(
            conn,
            event("moderation_done", {"action": "kick", "userId": target.id, "roomId": room.id}),
        )

    def mute_user(self, conn: Connection, user: User, cmd: p.MuteUser) -> None:
        room = self._room(cmd.room_id, user, cmd.TYPE)
        target = self._moderation_target(user, cmd.user_id, room, cmd.TYPE)
        self._check_capacity(cmd.TYPE)
        until = time.time() + cmd.duration_seconds
        self._mutes[(room.id, target.id)] = until
        self._submit(ops.set_mute(room.id, target.id, until))
        self._broker.send_user(target.id, event("muted", {"roomId": room.id, "until": until}))
        self._audit(
            user, "mute", target.id, room.id, None, {"durationSeconds": cmd.duration_seconds}
        )
        self._hub.send(
            conn,
            event("moderation_done", {"action": "mute", "userId": target.id, "roomId": room.id}),
        )

    def ban_user(self, conn: Connection, user: User, cmd: p.BanUser) -> list[Connection]:
        """Ban an account; returns its live connections, for the session layer to close (4003)."""
        if user.role != "admin":
            raise Forbidden("Only admins can ban", request_type=cmd.TYPE)
        target = self._moderation_target(user, cmd.user_id, None, cmd.TYPE)
        self._check_capacity(cmd.TYPE)
        until = time.time() + cmd.duration_seconds if cmd.duration_seconds else FOREVER
        target.banned_until = until
        self._submit(ops.set_user_ban(target.id, until, cmd.reason))
        self._audit(
            user, "ban", target.id, None, cmd.reason, {"durationSeconds": cmd.duration_seconds}
        )
        self._hub.send(conn, event("moderation_done", {"action": "ban", "userId": target.id}))
        payload = event(
            "banned", {"reason": cmd.reason, "until": None if until == FOREVER else until}
        )
        conns = list(self._hub.user_conns(target.id))
        self._hub.send_many(conns, payload)
        return conns

    def unban_user(self, conn: Connection, user: User, cmd: p.UnbanUser) -> None:
        if user.role != "admin":
            raise Forbidden("Only admins can unban", request_type=cmd.TYPE)
        target = self.user(cmd.user_id)
        if target is None:
            raise NotFound("User not found", request_type=cmd.TYPE)
        self._check_capacity(cmd.TYPE)
        target.banned_until = None
        self._submit(ops.set_user_ban(target.id, None, None))
        self._audit(user, "unban", target.id, None, None)
        self._hub.send(conn, event("moderation_done", {"action": "unban", "userId": target.id}))

    def set_role(self, conn: Connection, user: User, cmd: p.SetRole) -> None:
        if user.role != "admin":
            raise Forbidden("Only admins can change roles", request_type=cmd.TYPE)
        target = self.user(cmd.user_id)
        if target is None:
            raise NotFound("User not found", request_type=cmd.TYPE)
        self._check_capacity(cmd.TYPE)
        target.role = cmd.role
        self._submit(ops.set_user_role(target.id, cmd.role))
        self._audit(user, "set_role", target.id, None, None, {"role": cmd.role})
        payload = event("role_changed", {"userId": target.id, "role": cmd.role})
        self._broker.send_user(target.id, payload)
        self._hub.send(conn, payload)
