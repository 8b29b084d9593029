"""Direct messages between two users: one global seq, acks after commit, history pages."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastchat import protocol as p
from fastchat.chat.acks import PendingAck
from fastchat.clock import utc_now_iso
from fastchat.errors import NotFound, ValidationError
from fastchat.ids import new_id
from fastchat.protocol import event
from fastchat.storage import ops

if TYPE_CHECKING:
    from fastchat.chat.acks import Acks
    from fastchat.chat.users import User, Users
    from fastchat.chat.writes import Writes
    from fastchat.fanout.broker import Broker
    from fastchat.fanout.hub import Hub
    from fastchat.storage.base import Store
    from fastchat.ws.peer import Peer as Connection


def _dm_json(
    dm_id: str, seq: int, sender_id: str, recipient_id: str, content: str, timestamp: str
) -> dict[str, Any]:
    """A direct message as ``private_history`` carries it."""
    return {
        "id": dm_id,
        "seq": seq,
        "fromUserId": sender_id,
        "toUserId": recipient_id,
        "content": content,
        "timestamp": timestamp,
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
    ):
        self._hub = hub
        self._broker = broker
        self._store = store
        self._users = users
        self._writes = writes
        self._acks = acks
        # dm id -> the message, until it is committed (history merges these in)
        self._pending: dict[str, dict[str, Any]] = {}

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
        self._writes.check_capacity(cmd.TYPE)
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
        self._pending[dm_id] = _dm_json(dm_id, seq, user.id, target.id, cmd.content, timestamp)
        committed = self._acks.in_flight(
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
        self._writes.submit(
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

    async def private_history(self, conn: Connection, user: User, cmd: p.GetPrivateHistory) -> None:
        other = await self._users.get(cmd.user_id)
        if other is None:
            raise NotFound("User not found", request_type=cmd.TYPE)
        rows = await self._store.dm_page(user.id, other.id, before=cmd.before, limit=cmd.limit + 1)
        merged = {
            row.seq: _dm_json(
                row.id, row.seq, row.sender_id, row.recipient_id, row.content, row.created_at
            )
            for row in rows
        }
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
