"""Moderation: who may act on whom, kicks, mutes, bans, roles, and the audit log."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson

from fastchat import protocol as p
from fastchat.clock import utc_now_iso
from fastchat.errors import Conflict, Forbidden, Muted, NotFound, ValidationError
from fastchat.protocol import event
from fastchat.roles import ROLE_RANK
from fastchat.storage import ops
from fastchat.storage.base import FOREVER

if TYPE_CHECKING:
    from fastchat.chat.rooms import Room, RoomDirectory, Rooms
    from fastchat.chat.users import User, Users
    from fastchat.chat.writes import Writes
    from fastchat.fanout.broker import Broker
    from fastchat.fanout.hub import Hub
    from fastchat.storage.base import Op, Store
    from fastchat.ws.peer import Peer as Connection

_MODERATOR = ROLE_RANK["moderator"]


def can_manage(room: Room, user: User) -> bool:
    """Moderators, admins and the room's owner manage a room (invite to it)."""
    return ROLE_RANK[user.role] >= _MODERATOR or room.created_by == user.id


def can_moderate(room: Room | None, actor: User, target: User | None) -> bool:
    """Moderators and admins (and a room's owner, in that room) act on lower ranks."""
    target_rank = ROLE_RANK[target.role] if target else 0
    actor_rank = ROLE_RANK[actor.role]
    if actor_rank >= _MODERATOR:
        return actor_rank > target_rank or actor.role == "admin"
    return room is not None and room.created_by == actor.id and target_rank == 0


class Moderation:
    """Moderators' actions, the mutes in force, and the audit entries they leave."""

    def __init__(
        self,
        directory: RoomDirectory,
        rooms: Rooms,
        hub: Hub,
        broker: Broker,
        users: Users,
        writes: Writes,
        store: Store,
    ):
        self._directory = directory
        self._rooms = rooms
        self._hub = hub
        self._broker = broker
        self._users = users
        self._writes = writes
        self._store = store
        now = time.time()
        self._mutes: dict[tuple[str, str], float] = {
            (room_id, user_id): until
            for room_id, user_id, until in store.active_mutes()
            if until > now
        }

    def check_not_muted(self, room: Room, user: User, request_type: str) -> None:
        """Raise Muted while ``user`` is muted in ``room``; forget a mute that ran out."""
        until = self._mutes.get((room.id, user.id))
        if until is not None:
            if until > time.time():
                raise Muted("You are muted in this room", request_type=request_type)
            del self._mutes[(room.id, user.id)]
            self._writes.offer(ops.clear_mute(room.id, user.id))

    async def _target(
        self, actor: User, target_id: str, room: Room | None, request_type: str
    ) -> User:
        target = await self._users.get(target_id)
        if target is None:
            raise NotFound("User not found", request_type=request_type)
        if target.id == actor.id:
            raise ValidationError(
                "You cannot act on yourself", request_type=request_type, field="userId"
            )
        if not can_moderate(room, actor, target):
            raise Forbidden("You are not allowed to do that", request_type=request_type)
        return target

    def audit_op(
        self,
        actor: User,
        action: str,
        target_id: str | None,
        room_id: str | None,
        reason: str | None,
        detail: dict[str, Any] | None = None,
    ) -> Op:
        """The audit log entry of a moderator's action, to commit with the action."""
        return ops.insert_audit(
            at=utc_now_iso(),
            actor_id=actor.id,
            action=action,
            target_user_id=target_id,
            room_id=room_id,
            reason=reason,
            detail=detail,
        )

    async def kick_user(self, conn: Connection, user: User, cmd: p.KickUser) -> None:
        room = self._directory.visible(cmd.room_id, user, cmd.TYPE)
        target = await self._target(user, cmd.user_id, room, cmd.TYPE)
        self._writes.check_capacity(cmd.TYPE, 2)
        writes = [self.audit_op(user, "kick", target.id, room.id, cmd.reason)]
        if room.is_private and target.id in room.member_ids:
            writes.append(ops.remove_member(room.id, target.id))
        await self._writes.commit(*writes)
        payload = event("kicked", {"roomId": room.id, "reason": cmd.reason, "by": user.public()})
        kicked_conns = self._kick_here(room, target.id, payload)
        self._share("kick", target.id, roomId=room.id, payload=payload.decode())
        if kicked_conns:
            self._rooms.announce_left(room, target)
        self._hub.send(
            conn,
            event("moderation_done", {"action": "kick", "userId": target.id, "roomId": room.id}),
        )

    async def mute_user(self, conn: Connection, user: User, cmd: p.MuteUser) -> None:
        room = self._directory.visible(cmd.room_id, user, cmd.TYPE)
        target = await self._target(user, cmd.user_id, room, cmd.TYPE)
        self._writes.check_capacity(cmd.TYPE, 2)
        until = time.time() + cmd.duration_seconds
        await self._writes.commit(
            self.audit_op(
                user, "mute", target.id, room.id, None, {"durationSeconds": cmd.duration_seconds}
            ),
            ops.set_mute(room.id, target.id, until),
        )
        self._mutes[(room.id, target.id)] = until
        self._share("mute", target.id, roomId=room.id, until=until)
        self._broker.send_user(target.id, event("muted", {"roomId": room.id, "until": until}))
        self._hub.send(
            conn,
            event("moderation_done", {"action": "mute", "userId": target.id, "roomId": room.id}),
        )

    async def ban_user(self, conn: Connection, user: User, cmd: p.BanUser) -> list[Connection]:
        """Ban an account; returns its live connections, for the session layer to close (4003)."""
        conns = await self.ban(user, cmd)
        self._hub.send(conn, event("moderation_done", {"action": "ban", "userId": cmd.user_id}))
        return conns

    async def ban(self, user: User, cmd: p.BanUser) -> list[Connection]:
        """Ban an account (committed on return); tells its live connections, returns them."""
        if user.role != "admin":
            raise Forbidden("Only admins can ban", request_type=cmd.TYPE)
        target = await self._target(user, cmd.user_id, None, cmd.TYPE)
        await self._check_keeps_an_admin(target, "ban", cmd.TYPE)
        self._writes.check_capacity(cmd.TYPE, 2)
        until = time.time() + cmd.duration_seconds if cmd.duration_seconds else FOREVER
        await self._writes.commit(
            self.audit_op(
                user, "ban", target.id, None, cmd.reason, {"durationSeconds": cmd.duration_seconds}
            ),
            ops.set_user_ban(target.id, until, cmd.reason),
        )
        target.banned_until = until
        payload = event(
            "banned", {"reason": cmd.reason, "until": None if until == FOREVER else until}
        )
        self._share("ban", target.id, until=until, payload=payload.decode())
        return self._ban_here(target, payload)

    def _kick_here(self, room: Room, user_id: str, payload: bytes) -> list[Connection]:
        kicked_conns = [c for c in room.channel.conns if c.user_id == user_id]
        for target_conn in kicked_conns:
            self._hub.send(target_conn, payload)
            self._hub.leave(room.channel, target_conn)
        if room.is_private:
            room.member_ids.discard(user_id)
        return kicked_conns

    def _ban_here(self, target: User, payload: bytes) -> list[Connection]:
        conns = list(self._hub.user_conns(target.id))
        self._hub.send_many(conns, payload)
        return conns

    def _share(self, action: str, user_id: str, **detail: Any) -> None:
        """Tell the other processes (when there are any) what changed in memory here."""
        self._broker.send_control(orjson.dumps({"action": action, "userId": user_id, **detail}))

    def apply_control(self, control: dict[str, Any]) -> list[Connection]:
        """Apply what another process's moderator did (see :meth:`_share`) to this process's
        memory and connections; returns the connections of a banned user, to close."""
        action, user_id = control["action"], control["userId"]
        room = self._directory.by_id.get(control.get("roomId", ""))
        user = self._users.cached(user_id)
        if action == "kick" and room is not None:
            self._kick_here(room, user_id, control["payload"].encode())
        elif action == "mute" and room is not None:
            self._mutes[(room.id, user_id)] = control["until"]
        elif action == "role" and user is not None:
            user.role = control["role"]
        elif action == "unban" and user is not None:
            user.banned_until = None
        elif action == "ban" and user is not None:
            user.banned_until = control["until"]
            return self._ban_here(user, control["payload"].encode())
        return []

    async def _admin_target(
        self, actor: User, target_id: str, refusal: str, request_type: str
    ) -> User:
        """The target of an admin-only action (with room for its writes)."""
        if actor.role != "admin":
            raise Forbidden(refusal, request_type=request_type)
        target = await self._users.get(target_id)
        if target is None:
            raise NotFound("User not found", request_type=request_type)
        self._writes.check_capacity(request_type, 2)
        return target

    async def _check_keeps_an_admin(self, target: User, action: str, request_type: str) -> None:
        """Refuse an action that would leave the site without an admin."""
        if target.role == "admin" and await self._store.admin_count() <= 1:
            raise Conflict(f"Cannot {action} the last admin", request_type=request_type)

    async def unban_user(self, conn: Connection, user: User, cmd: p.UnbanUser) -> None:
        await self.unban(user, cmd)
        self._hub.send(conn, event("moderation_done", {"action": "unban", "userId": cmd.user_id}))

    async def unban(self, user: User, cmd: p.UnbanUser) -> None:
        """Lift a ban (committed on return)."""
        target = await self._admin_target(user, cmd.user_id, "Only admins can unban", cmd.TYPE)
        await self._writes.commit(
            self.audit_op(user, "unban", target.id, None, None),
            ops.set_user_ban(target.id, None, None),
        )
        target.banned_until = None
        self._share("unban", target.id)

    async def set_role(self, conn: Connection, user: User, cmd: p.SetRole) -> None:
        self._hub.send(conn, await self.change_role(user, cmd))

    async def change_role(self, user: User, cmd: p.SetRole) -> bytes:
        """Change a user's role (committed on return) and tell its connections; returns the
        ``role_changed`` event."""
        target = await self._admin_target(
            user, cmd.user_id, "Only admins can change roles", cmd.TYPE
        )
        if target.id == user.id:
            raise ValidationError(
                "You cannot change your own role", request_type=cmd.TYPE, field="userId"
            )
        if cmd.role != "admin":
            await self._check_keeps_an_admin(target, "demote", cmd.TYPE)
        await self._writes.commit(
            self.audit_op(user, "set_role", target.id, None, None, {"role": cmd.role}),
            ops.set_user_role(target.id, cmd.role),
        )
        target.role = cmd.role
        self._share("role", target.id, role=cmd.role)
        payload = event("role_changed", {"userId": target.id, "role": cmd.role})
        self._broker.send_user(target.id, payload)
        return payload
