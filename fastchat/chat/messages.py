"""Room messages: sending (with attachments and replies), editing, deleting.

Sending is the hot path and stays synchronous: a message without a reply or attachment
whose clientId is proven new (:meth:`Acks.known`) and whose ``@names`` the user cache
knows is stamped, broadcast and queued for the writer without a task or an await. Only a
message that needs a storage read (a clientId the filter may have seen, a reply target, an
attachment, a name not looked up yet) takes the awaitable path, which runs the same checks
in the same order and ends in the same :meth:`_accept`.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from fastchat import protocol as p
from fastchat.chat.acks import PendingAck
from fastchat.chat.mentions import Mentions, resolve_from_memory
from fastchat.chat.mentions import resolve as resolve_mentions
from fastchat.chat.moderation import can_moderate
from fastchat.clock import utc_now_iso
from fastchat.errors import ChatError, Forbidden, NotFound, ValidationError
from fastchat.fanout.broker import AlreadyPublished
from fastchat.ids import new_id
from fastchat.protocol import event
from fastchat.storage import ops

if TYPE_CHECKING:
    from fastchat.chat.acks import Acks
    from fastchat.chat.attachments import Attachments
    from fastchat.chat.history import History
    from fastchat.chat.moderation import Moderation
    from fastchat.chat.rooms import Room, RoomDirectory
    from fastchat.chat.threads import Threads
    from fastchat.chat.typing import Typing
    from fastchat.chat.users import User, Users
    from fastchat.chat.writes import Writes
    from fastchat.fanout.broker import Broker
    from fastchat.metrics import Metrics
    from fastchat.storage.base import Store
    from fastchat.ws.peer import Peer as Connection


class Messages:
    """Sending, editing and deleting room messages."""

    def __init__(
        self,
        directory: RoomDirectory,
        broker: Broker,
        store: Store,
        users: Users,
        writes: Writes,
        history: History,
        acks: Acks,
        typing: Typing,
        moderation: Moderation,
        threads: Threads,
        attachments: Attachments,
        metrics: Metrics,
    ):
        self._directory = directory
        self._broker = broker
        self._store = store
        self._users = users
        self._writes = writes
        self._history = history
        self._acks = acks
        self._typing = typing
        self._moderation = moderation
        self._threads = threads
        self._attachments = attachments
        self._metrics = metrics
        self._deleting: set[str] = set()  # ids of messages whose deletion is committing

    # --- sending --------------------------------------------------------------------------

    def send_message(
        self, conn: Connection, user: User, cmd: p.SendMessage
    ) -> Awaitable[None] | None:
        room = self._directory.entered(cmd.room_id, conn, cmd.TYPE)
        client_id = cmd.client_id
        key = None if client_id is None else f"{user.id}\0{client_id}"
        if (
            cmd.reply_to is not None
            or cmd.file_id is not None
            or (key is not None and self._acks.known(key))
        ):
            return self._send_checked(conn, user, room, cmd, key)
        mentions = None
        if "@" in cmd.content:
            mentions = resolve_from_memory(cmd.content, room, self._users)
            if mentions is None:  # a name only storage knows
                return self._send_checked(conn, user, room, cmd, key)
            if not mentions[0] and not mentions[1]:
                mentions = None
        self._check_may_send(room, user, cmd, 1 + (mentions is not None))
        self._accept(conn, user, room, cmd, key, None, mentions)
        return None

    async def _send_checked(
        self, conn: Connection, user: User, room: Room, cmd: p.SendMessage, key: str | None
    ) -> None:
        """``send_message`` when it has to read storage first."""
        # A resend is answered before the mute check: it is already stored (or in flight).
        if key is not None and await self._acks.resend(
            conn,
            key,
            room.id,
            lambda: self._store.message_by_client_id(user.id, cmd.client_id),  # type: ignore[arg-type]
            lambda row: row.room_id,
            cmd.TYPE,
        ):
            return
        self._check_may_send(room, user, cmd, 1 + (cmd.file_id is not None))
        original = None
        if cmd.reply_to is not None:
            original = await self._history.find(cmd.reply_to)
            if original is None or original[0] is not room:
                raise ValidationError(
                    "replyTo must name a message of the same room",
                    request_type=cmd.TYPE,
                    field="replyTo",
                )
        attachment = (
            None
            if cmd.file_id is None
            else await self._attachments.attachment(user, cmd.file_id, cmd.message_type, cmd.TYPE)
        )
        mentions = (
            await resolve_mentions(cmd.content, room, self._users) if "@" in cmd.content else None
        )
        if original is not None and (cmd.file_id is not None or mentions is not None):
            # Again: the parent may have been edited or reacted to while this one waited.
            original = await self._history.find(original[1]["id"])
        if mentions is not None and not mentions[0] and not mentions[1]:
            mentions = None
        # After waiting: the message, its attachment, its mentions, its parent's reply count.
        self._writes.check_capacity(
            cmd.TYPE,
            1 + (cmd.file_id is not None) + (mentions is not None) + (original is not None),
        )
        self._accept(conn, user, room, cmd, key, attachment, mentions)
        if original is not None:
            self._threads.count_reply(room, original[1])

    def _check_may_send(self, room: Room, user: User, cmd: p.SendMessage, writes: int) -> None:
        self._moderation.check_not_muted(room, user, cmd.TYPE)
        self._writes.check_capacity(cmd.TYPE, writes)

    def _accept(
        self,
        conn: Connection,
        user: User,
        room: Room,
        cmd: p.SendMessage,
        key: str | None,
        attachment: dict[str, Any] | None,
        mentions: Mentions | None,
    ) -> None:
        """Stamp and publish a message that passed every check (the broker gives its seq)."""
        mentioned, mentions_room = ((), False) if mentions is None else mentions
        message = p.message_json(
            new_id(),
            0,
            room.id,
            user.id,
            user.username,
            user.avatar_url,
            cmd.content,
            cmd.message_type,
            cmd.reply_to,
            cmd.client_id,
            utc_now_iso(),
            False,
            mentions=mentioned,
            mentions_room=mentions_room,
        )
        if attachment is not None:
            message["attachment"] = attachment
        if user.id in room.typing:
            self._typing.stop(room, user)
        self._broker.publish_message(room.channel, message, self._published, conn, room, cmd, key)

    def _published(
        self,
        error: ChatError | AlreadyPublished | None,
        message: dict[str, Any],
        conn: Connection,
        room: Room,
        cmd: p.SendMessage,
        key: str | None,
    ) -> None:
        """Remember and queue a message the broker sequenced and delivered (or refused).

        A clientId another process published before (``AlreadyPublished``, with its first
        id and seq) is queued for storage again, as its origin may have died before storing
        it: the store refusing a duplicate then means it is stored, and it is acked."""
        resent = error is not None
        if resent and type(error) is not AlreadyPublished:
            error.request_type = cmd.TYPE  # type: ignore[union-attr]
            self._acks.refuse(conn, error)  # type: ignore[arg-type]
            return
        if not resent:
            self._history.remember(room, message)
            self._metrics.messages_accepted += 1
        message_id = message["id"]
        seq = message["seq"]
        timestamp = message["timestamp"]
        client_id = cmd.client_id

        pending = self._history.pending
        pending[message_id] = (room, message)
        committed = self._acks.in_flight(
            PendingAck(
                self._acks,
                conn,
                key,
                room.id,
                {
                    "clientId": client_id,
                    "messageId": message_id,
                    "seq": seq,
                    "timestamp": timestamp,
                },
                pending,
                cmd.TYPE,
                resent=resent,
            )
        )
        self._writes.submit(
            ops.insert_message(
                id=message_id,
                room_id=room.id,
                seq=seq,
                user_id=message["userId"],
                content=cmd.content,
                message_type=cmd.message_type,
                reply_to=cmd.reply_to,
                client_id=client_id,
                attachment_id=cmd.file_id,
                created_at=timestamp,
            ),
            committed,
        )
        mentions = message.get("mentions", ())
        mentions_room = message.get("mentionsRoom", False)
        if mentions or mentions_room:
            self._writes.submit(ops.set_mentions(message_id, list(mentions), mentions_room))
            if not resent:
                mentioned = event("mention", {"message": message})
                for user_id in mentions:
                    if user_id != message["userId"]:
                        self._broker.send_user(user_id, mentioned)
        attachment = message.get("attachment")
        if attachment is not None:
            self._attachments.attach_to_room(self._writes, attachment["id"], room.id, message_id)

    # --- editing and deleting -------------------------------------------------------------

    async def edit_message(self, conn: Connection, user: User, cmd: p.EditMessage) -> None:
        """Edit one's own message: committed, then broadcast and acked (``edit_ack``)."""
        room, message = await self._history.visible_message(cmd.message_id, user, cmd.TYPE)
        if message["userId"] != user.id:
            raise Forbidden("You can only edit your own messages", request_type=cmd.TYPE)
        self._moderation.check_not_muted(room, user, cmd.TYPE)
        mentions, mentions_room = (
            await resolve_mentions(cmd.content, room, self._users)
            if "@" in cmd.content
            else ([], False)
        )
        writes = [ops.edit_message(message["id"], cmd.content, utc_now_iso())]
        before = message.get("mentions", ())
        if mentions != list(before) or mentions_room != message.get("mentionsRoom", False):
            writes.append(ops.set_mentions(message["id"], mentions, mentions_room))
        self._writes.check_capacity(cmd.TYPE, len(writes))
        await self._writes.commit(*writes)
        # Read again: a delete may have committed while this edit waited (then it did nothing).
        room, message = await self._history.visible_message(cmd.message_id, user, cmd.TYPE)
        edited = p.with_mentions(message, mentions, mentions_room)
        edited["content"], edited["edited"] = cmd.content, True
        self._history.replace(room, edited)
        self._broker.publish(room.channel, event("message_edited", {"message": edited}))
        self._acks.confirm(conn, "edit_ack", {"messageId": message["id"], "roomId": room.id})
        newly = [m for m in mentions if m not in before and m != user.id]
        if newly:
            mentioned = event("mention", {"message": edited})
            for user_id in newly:
                self._broker.send_user(user_id, mentioned)

    async def delete_message(self, conn: Connection, user: User, cmd: p.DeleteMessage) -> None:
        """Delete a message (one's own, or as its moderator): committed, then broadcast and
        acked (``delete_ack``)."""
        room, message = await self._history.visible_message(cmd.message_id, user, cmd.TYPE)
        message_id = message["id"]
        if message_id in self._deleting:  # a reply must be uncounted once
            raise NotFound("Message not found", request_type=cmd.TYPE)
        author_id = message["userId"]
        if author_id != user.id and not can_moderate(room, user, await self._users.get(author_id)):
            raise Forbidden("You can only delete your own messages", request_type=cmd.TYPE)
        parent_id = message["replyTo"]
        self._writes.check_capacity(cmd.TYPE, 2 + (parent_id is not None))
        writes = [ops.delete_message(message_id, utc_now_iso())]
        if parent_id is not None:
            writes.append(ops.count_reply(parent_id, -1))
        if author_id != user.id:
            writes.append(
                self._moderation.audit_op(
                    user, "delete_message", author_id, room.id, None, {"messageId": message_id}
                )
            )
        self._deleting.add(message_id)
        try:
            await self._writes.commit(*writes)
        finally:
            self._deleting.discard(message_id)
        deleted = {k: v for k, v in message.items() if k != "attachment"}
        self._history.replace(room, {**deleted, "content": "", "deleted": True})
        self._broker.publish(
            room.channel, event("message_deleted", {"messageId": message_id, "roomId": room.id})
        )
        self._acks.confirm(conn, "delete_ack", {"messageId": message_id, "roomId": room.id})
        if parent_id is not None:
            await self._threads.uncount_reply(room, parent_id)
