"""Direct messages between two users: one global seq, acks after commit, history pages;
replies, attachments, edits, deletes (and, through
:class:`~fastchat.chat.reactions.Reactions`, reactions) with the rules of room messages,
between the two users only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastchat import protocol as p
from fastchat.chat.acks import PendingAck
from fastchat.chat.history import reactions_json
from fastchat.clock import utc_now_iso
from fastchat.errors import Forbidden, NotFound, ValidationError
from fastchat.ids import new_id
from fastchat.protocol import event
from fastchat.storage import ops

if TYPE_CHECKING:
    from fastchat.chat.acks import Acks
    from fastchat.chat.attachments import Attachments
    from fastchat.chat.users import User, Users
    from fastchat.chat.writes import Writes
    from fastchat.fanout.broker import Broker
    from fastchat.fanout.hub import Hub
    from fastchat.storage.base import DirectMessageRow, OnDone, Op, Store
    from fastchat.ws.peer import Peer as Connection


def _dm_json(
    dm_id: str,
    seq: int,
    sender_id: str,
    recipient_id: str,
    content: str,
    timestamp: str,
    reply_to: str | None,
    edited: bool = False,
    reactions: list[dict[str, Any]] | tuple[()] = (),
) -> dict[str, Any]:
    """A direct message as ``private_history`` carries it (``messageType`` and
    ``attachment`` for one sharing a file, and ``deleted``, are added apart)."""
    return {
        "id": dm_id,
        "seq": seq,
        "fromUserId": sender_id,
        "toUserId": recipient_id,
        "content": content,
        "timestamp": timestamp,
        "replyTo": reply_to,
        "edited": edited,
        "reactions": reactions,
    }


class Direct:
    """Sending direct messages and reading a conversation's history."""

    def __init__(
        self,
        hub: Hub,
        broker: Broker,
        store: Store,
        users: Users,
        writes: Writes,
        acks: Acks,
        attachments: Attachments,
    ):
        self._hub = hub
        self._broker = broker
        self._store = store
        self._users = users
        self._writes = writes
        self._acks = acks
        self._attachments = attachments
        # dm id -> the message, until it is committed (history merges these in)
        self._pending: dict[str, dict[str, Any]] = {}
        # dm id -> the message edited, deleted or reacted to, until that change is stored
        self._changed: dict[str, dict[str, Any]] = {}

    async def private_message(self, conn: Connection, user: User, cmd: p.PrivateMessage) -> None:
        target = await self._users.get(cmd.target_user_id)
        if target is None:
            raise NotFound("User not found", request_type=cmd.TYPE)
        if target.id == user.id:
            raise ValidationError(
                "You cannot message yourself", request_type=cmd.TYPE, field="targetUserId"
            )
        client_id = cmd.client_id
        key = None if client_id is None else f"{user.id}\0dm:{client_id}"
        if key is not None and await self._acks.resend(
            conn,
            key,
            target.id,
            lambda: self._store.dm_by_client_id(user.id, client_id),  # type: ignore[arg-type]
            lambda row: row.recipient_id,
            cmd.TYPE,
        ):
            return
        if cmd.reply_to is not None:
            parent = await self.find(cmd.reply_to)
            if parent is None or {parent["fromUserId"], parent["toUserId"]} != {user.id, target.id}:
                raise ValidationError(
                    "replyTo must name a message of the same conversation",
                    request_type=cmd.TYPE,
                    field="replyTo",
                )
        # Last of the awaits: nothing else can attach the file before it is remembered below.
        attachment = (
            None
            if cmd.file_id is None
            else await self._attachments.attachment(user, cmd.file_id, cmd.message_type, cmd.TYPE)
        )
        self._writes.check_capacity(cmd.TYPE, 1 if cmd.reply_to is None else 2)
        seq = self._broker.next_direct_seq()
        dm_id = new_id()
        timestamp = utc_now_iso()
        received = {
            "id": dm_id,
            "seq": seq,
            "from": user.public(),
            "content": cmd.content,
            "timestamp": timestamp,
            "clientId": client_id,
            "replyTo": cmd.reply_to,
        }
        sent = {
            "id": dm_id,
            "seq": seq,
            "targetUserId": target.id,
            "content": cmd.content,
            "timestamp": timestamp,
            "clientId": client_id,
            "replyTo": cmd.reply_to,
        }
        message = _dm_json(dm_id, seq, user.id, target.id, cmd.content, timestamp, cmd.reply_to)
        if attachment is not None:
            for shown in (received, sent, message):
                shown["messageType"] = cmd.message_type
                shown["attachment"] = attachment
        self._broker.send_user(target.id, event("private_message", received))
        self._broker.send_user(user.id, event("private_message_sent", sent))
        self._pending[dm_id] = message
        committed: OnDone = self._acks.in_flight(
            PendingAck(
                self._acks,
                conn,
                key,
                target.id,
                {"clientId": client_id, "messageId": dm_id, "seq": seq, "timestamp": timestamp},
                self._pending,
                cmd.TYPE,
            )
        )
        if attachment is not None:
            committed = self._attachments.attaching_direct(
                attachment["id"], user.id, target.id, committed
            )
        self._writes.submit(
            ops.insert_dm(
                id=dm_id,
                seq=seq,
                sender_id=user.id,
                recipient_id=target.id,
                content=cmd.content,
                client_id=client_id,
                created_at=timestamp,
                message_type=cmd.message_type,
                attachment_id=cmd.file_id,
            ),
            committed,
        )
        if cmd.reply_to is not None:
            self._writes.submit(ops.set_dm_reply(dm_id, cmd.reply_to))

    # --- finding, editing, deleting -------------------------------------------------------

    async def find(self, dm_id: str) -> dict[str, Any] | None:
        """A direct message as clients see it: changes not stored yet first, else storage."""
        found = self._changed.get(dm_id) or self._pending.get(dm_id)
        if found is not None:
            return found
        row = await self._store.dm_by_id(dm_id)
        return None if row is None else (await self.from_rows([row]))[0]

    async def visible(self, dm_id: str, user: User, request_type: str) -> dict[str, Any]:
        """A live direct message to or from ``user``; NotFound otherwise (the same for one
        that does not exist and one between others)."""
        found = await self.find(dm_id)
        if (
            found is None
            or found.get("deleted")
            or user.id not in (found["fromUserId"], found["toUserId"])
        ):
            raise NotFound("Message not found", request_type=request_type)
        return found

    def replace(self, message: dict[str, Any], op: Op, payload: bytes) -> None:
        """Apply a change before it is stored (a reaction): remember it until ``op`` is
        stored, tell both users."""
        dm_id = message["id"]
        self._changed[dm_id] = message

        def stored(_error: BaseException | None) -> None:
            if self._changed.get(dm_id) is message:
                del self._changed[dm_id]

        self._writes.submit(op, stored)
        self._apply(message, payload)

    def _apply(self, message: dict[str, Any], payload: bytes) -> None:
        """Show a changed message: its unsent copy (if still in flight) and both users."""
        if message["id"] in self._pending:
            self._pending[message["id"]] = message
        self._broker.send_user(message["fromUserId"], payload)
        self._broker.send_user(message["toUserId"], payload)

    async def edit_message(self, conn: Connection, user: User, cmd: p.EditMessage) -> None:
        """Edit one's own direct message: committed, then sent to both users and acked
        (``edit_ack``), as room edits are."""
        message = await self._own(cmd.message_id, user, cmd.TYPE, "edit")
        self._writes.check_capacity(cmd.TYPE)
        await self._writes.commit(ops.edit_dm(message["id"], cmd.content, utc_now_iso()))
        # Read again: a delete may have committed while this edit waited (then it did nothing).
        message = await self._own(cmd.message_id, user, cmd.TYPE, "edit")
        edited = {**message, "content": cmd.content, "edited": True}
        self._apply(edited, event("private_message_edited", {"message": edited}))
        self._acks.confirm(
            conn, "edit_ack", {"messageId": edited["id"], "userId": edited["toUserId"]}
        )

    async def delete_message(self, conn: Connection, user: User, cmd: p.DeleteMessage) -> None:
        """Delete one's own direct message: committed, then sent to both users and acked
        (``delete_ack``)."""
        message = await self._own(cmd.message_id, user, cmd.TYPE, "delete")
        self._writes.check_capacity(cmd.TYPE)
        await self._writes.commit(ops.delete_dm(message["id"], utc_now_iso()))
        kept = {k: v for k, v in message.items() if k != "attachment"}  # the file is withdrawn
        deleted = {**kept, "content": "", "deleted": True}
        self._apply(
            deleted,
            event(
                "private_message_deleted",
                {
                    "messageId": message["id"],
                    "fromUserId": message["fromUserId"],
                    "toUserId": message["toUserId"],
                },
            ),
        )
        self._acks.confirm(
            conn, "delete_ack", {"messageId": message["id"], "userId": message["toUserId"]}
        )

    async def _own(self, dm_id: str, user: User, request_type: str, verb: str) -> dict[str, Any]:
        """A live direct message ``user`` sent; NotFound or Forbidden otherwise."""
        message = await self.visible(dm_id, user, request_type)
        if message["fromUserId"] != user.id:
            raise Forbidden(f"You can only {verb} your own messages", request_type=request_type)
        return message

    async def peer(self, user_id: str, user: User, request_type: str) -> User:
        """The other user of a conversation of ``user``: NotFound, or themselves refused."""
        other = await self._users.get(user_id)
        if other is None:
            raise NotFound("User not found", request_type=request_type)
        if other.id == user.id:
            raise ValidationError(
                "A conversation is with someone else", request_type=request_type, field="userId"
            )
        return other

    async def from_rows(self, rows: list[DirectMessageRow]) -> list[dict[str, Any]]:
        """Stored direct messages as ``private_history`` carries them, changes not stored
        yet applied."""
        if not rows:
            return []
        reactions = await self._store.reactions([row.id for row in rows])
        messages = []
        for row in rows:
            changed = self._changed.get(row.id)
            if changed is not None:
                messages.append(changed)
                continue
            found = reactions.get(row.id)
            message = _dm_json(
                row.id,
                row.seq,
                row.sender_id,
                row.recipient_id,
                "" if row.deleted_at else row.content,
                row.created_at,
                row.reply_to,
                row.edited_at is not None,
                reactions_json(found) if found else (),
            )
            if row.attachment_id is not None:
                message["messageType"] = row.message_type
            if row.deleted_at:
                message["deleted"] = True
            elif row.attachment_id is not None:
                file = await self._store.file(row.attachment_id)
                if file is not None:
                    message["attachment"] = p.attachment_json(
                        file.id, file.name, file.size, file.content_type
                    )
            messages.append(message)
        return messages

    def pending_of(self, user_id: str) -> list[dict[str, Any]]:
        """The direct messages to or from ``user_id`` not stored yet, oldest first."""
        return [m for m in self._pending.values() if user_id in (m["fromUserId"], m["toUserId"])]

    async def last_seq(self, user_a: str, user_b: str) -> int:
        """The seq of the newest direct message between two users (0: none)."""
        pair = {user_a, user_b}
        for message in reversed(self._pending.values()):
            if {message["fromUserId"], message["toUserId"]} == pair:
                return message["seq"]
        rows = await self._store.dm_page(user_a, user_b, limit=1)
        return rows[-1].seq if rows else 0

    async def private_history(self, conn: Connection, user: User, cmd: p.GetPrivateHistory) -> None:
        other = await self._users.get(cmd.user_id)
        if other is None:
            raise NotFound("User not found", request_type=cmd.TYPE)
        rows = await self._store.dm_page(user.id, other.id, before=cmd.before, limit=cmd.limit + 1)
        merged = {m["seq"]: m for m in await self.from_rows(rows)}
        pair = {user.id, other.id}
        for record in self._pending.values():
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
