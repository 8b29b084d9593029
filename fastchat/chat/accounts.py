"""An account's own data: removing the account (keeping its messages or not) and exporting it.

Both are rare and read or write everything of one user, so they are committed before they
are answered and touch the in-memory state only afterwards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastchat.clock import utc_now_iso
from fastchat.storage import ops

if TYPE_CHECKING:
    from fastchat.chat.rooms import RoomDirectory
    from fastchat.chat.users import User
    from fastchat.chat.writes import Writes
    from fastchat.storage.base import Store

DELETED_USER = "deleted user"
"""The author name shown on the kept messages of a removed account."""


class Accounts:
    """Account removal and export."""

    def __init__(self, directory: RoomDirectory, store: Store, writes: Writes):
        self._directory = directory
        self._store = store
        self._writes = writes

    async def remove(self, user: User, keep_messages: bool) -> None:
        """Remove ``user``'s account, its sessions and memberships; its room messages stay
        (shown as :data:`DELETED_USER`) or are deleted, and its sent direct messages go
        with them. Committed on return."""
        at = utc_now_iso()
        writes = [ops.revoke_user_sessions(user.id, at), ops.remove_user_memberships(user.id)]
        if not keep_messages:
            writes += [ops.delete_user_messages(user.id, at), ops.delete_user_dms(user.id)]
        writes.append(ops.delete_user(user.id))
        await self._writes.commit(*writes)
        for room in self._directory.by_id.values():
            room.member_ids.discard(user.id)
            for index, message in enumerate(room.history or ()):
                if message["userId"] != user.id:
                    continue
                if keep_messages:
                    room.history[index] = {**message, "username": DELETED_USER}  # type: ignore[index]
                else:
                    kept = {k: v for k, v in message.items() if k != "attachment"}
                    room.history[index] = {**kept, "content": "", "deleted": True}  # type: ignore[index]

    async def export(self, user: User) -> dict[str, Any]:
        """Everything stored of ``user``: profile, room messages and direct messages."""
        row = await self._store.user_by_id(user.id)
        messages = await self._store.messages_by_user(user.id)
        direct = await self._store.dms_of_user(user.id)
        return {
            "profile": {
                **user.private(),
                "createdAt": row.created_at if row else None,
                "lastSeen": row.last_seen if row else None,
            },
            "messages": [
                {
                    "id": m.id,
                    "roomId": m.room_id,
                    "seq": m.seq,
                    "content": m.content,
                    "messageType": m.message_type,
                    "replyTo": m.reply_to,
                    "createdAt": m.created_at,
                    "editedAt": m.edited_at,
                    "deletedAt": m.deleted_at,
                }
                for m in messages
            ],
            "directMessages": [
                {
                    "id": d.id,
                    "senderId": d.sender_id,
                    "recipientId": d.recipient_id,
                    "content": d.content,
                    "createdAt": d.created_at,
                }
                for d in direct
            ],
        }
