"""Per-connection chat state and dispatch: unauthenticated → authenticated → closed.

:class:`Sessions` is the :class:`~fastchat.ws.connection.MessageHandler` of every
connection. It parses each text message (:mod:`fastchat.protocol`), checks the state and
the rate limits, and calls the one :class:`~fastchat.chat.Chat` method for that event.
Errors become ``error`` events; repeated flooding and bans close the connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastchat import protocol as p
from fastchat.errors import (
    AuthRequired,
    Banned,
    ChatError,
    CloseCode,
    Conflict,
    RateLimited,
)
from fastchat.protocol import event, utc_now_iso
from fastchat.ratelimit import ConnectionCounter, TokenBucket

if TYPE_CHECKING:
    import asyncio

    from fastchat.chat import Chat, User
    from fastchat.config import LimitsConfig
    from fastchat.hub import Hub
    from fastchat.metrics import Metrics
    from fastchat.ws.connection import Connection

log = logging.getLogger("fastchat.session")


class Session:
    """What one connection knows about itself."""

    __slots__ = ("auth_timer", "bucket", "strikes", "typing_bucket", "user")

    def __init__(self, limits: LimitsConfig, now: float):
        self.user: User | None = None
        self.bucket = TokenBucket(limits.messages_per_second, limits.burst, now)
        self.typing_bucket: TokenBucket | None = None  # made on the first typing event
        self.strikes = 0
        self.auth_timer: asyncio.TimerHandle | None = None


class Sessions:
    """Dispatches every connection's messages to the chat."""

    def __init__(self, chat: Chat, hub: Hub, limits: LimitsConfig, metrics: Metrics):
        self._chat = chat
        self._hub = hub
        self._limits = limits
        self._metrics = metrics
        self._per_ip = ConnectionCounter()
        self._per_user = ConnectionCounter()
        self._handlers: dict[type, Callable[[Connection, User, Any], object]] = {
            p.JoinRoom: chat.join_room,
            p.LeaveRoom: chat.leave_room,
            p.SendMessage: chat.send_message,
            p.EditMessage: chat.edit_message,
            p.DeleteMessage: chat.delete_message,
            p.GetRoomHistory: chat.room_history,
            p.Typing: chat.typing,
            p.PrivateMessage: chat.private_message,
            p.GetPrivateHistory: chat.private_history,
            p.CreateRoom: chat.create_room,
            p.InviteToRoom: chat.invite_to_room,
            p.KickUser: chat.kick_user,
            p.MuteUser: chat.mute_user,
            p.BanUser: self._ban,
            p.UnbanUser: chat.unban_user,
            p.SetRole: chat.set_role,
            p.Ping: self._ping,
        }

    # --- MessageHandler -------------------------------------------------------------------

    def on_open(self, conn: Connection) -> None:
        session = Session(self._limits, time.monotonic())
        conn.session = session
        if not self._per_ip.acquire(conn.client, self._limits.max_connections_per_ip):
            conn.client = ""  # not counted: nothing to release
            conn.close(CloseCode.TRY_AGAIN_LATER, "too many connections from this address")
            return
        session.auth_timer = self._hub.loop.call_later(
            self._limits.auth_timeout_seconds, self._auth_timeout, conn
        )
        self._hub.send(
            conn,
            event(
                "connection_established",
                {"message": "Connected to chat server", "timestamp": utc_now_iso()},
            ),
        )

    def on_close(self, conn: Connection) -> None:
        session: Session = conn.session  # type: ignore[assignment]
        if conn.client:
            self._per_ip.release(conn.client)
        if session.auth_timer is not None:
            session.auth_timer.cancel()
            session.auth_timer = None
        user = session.user
        if user is not None:
            self._per_user.release(user.id)
            self._chat.disconnect(conn, user)

    def on_text(self, conn: Connection, text: str) -> None:
        if conn.closed:
            return
        session: Session = conn.session  # type: ignore[assignment]
        try:
            try:
                cmd = p.parse(text)
            except ChatError:
                self._spend(conn, session, None)  # bad input costs like any request
                raise
            if isinstance(cmd, p.Typing):
                if not self._may_type(session):
                    return  # typing is throttled silently: it is only a hint
            elif not isinstance(cmd, p.Ping):
                self._spend(conn, session, cmd.TYPE)
            user = session.user
            if user is None:
                self._authenticate(conn, session, cmd)
                return
            handler = self._handlers.get(type(cmd))
            if handler is None:  # authenticate again on an authenticated connection
                raise Conflict("Already authenticated", request_type=cmd.TYPE)
            handler(conn, user, cmd)
        except ChatError as err:
            self._metrics.errors_sent += 1
            self._hub.send(conn, p.error_event(err))
        except Exception:
            log.exception("error handling a message from %s (user %s)", conn.client, conn.user_id)
            self._metrics.errors_sent += 1
            self._hub.send(conn, p.error_event(ChatError("Internal error")))

    # --- steps ----------------------------------------------------------------------------

    def _authenticate(self, conn: Connection, session: Session, cmd: p.Command) -> None:
        if not isinstance(cmd, p.Authenticate):
            raise AuthRequired("Authentication required", request_type=cmd.TYPE)
        try:
            user = self._chat.identify(cmd)
        except Banned as err:
            self._hub.send(conn, p.error_event(err))
            conn.close(CloseCode.BANNED, "banned")
            return
        if not self._per_user.acquire(user.id, self._limits.max_connections_per_user):
            conn.close(CloseCode.POLICY_VIOLATION, "too many connections for this user")
            return
        self._chat.authenticate(conn, user)
        session.user = user
        if session.auth_timer is not None:
            session.auth_timer.cancel()
            session.auth_timer = None

    def _spend(self, conn: Connection, session: Session, request_type: str | None) -> None:
        """Take a token from the connection's bucket; past ``flood_strikes`` refusals, close."""
        now = time.monotonic()
        if session.bucket.take(now):
            session.strikes = 0
            return
        self._metrics.rate_limited += 1
        session.strikes += 1
        if session.strikes >= self._limits.flood_strikes:
            conn.close(CloseCode.POLICY_VIOLATION, "flooding")
        raise RateLimited(
            "Too many messages, slow down",
            retry_after=session.bucket.retry_after(now),
            request_type=request_type,
        )

    def _may_type(self, session: Session) -> bool:
        now = time.monotonic()
        if session.typing_bucket is None:
            rate = self._limits.typing_per_second
            session.typing_bucket = TokenBucket(rate, rate * 2, now)
        return session.typing_bucket.take(now)

    def _auth_timeout(self, conn: Connection) -> None:
        session: Session = conn.session  # type: ignore[assignment]
        session.auth_timer = None
        if session.user is None:
            conn.close(CloseCode.AUTH_TIMEOUT, "authentication timeout")

    def _ban(self, conn: Connection, user: User, cmd: p.BanUser) -> None:
        for target in self._chat.ban_user(conn, user, cmd):
            target.close(CloseCode.BANNED, "banned")

    def _ping(self, conn: Connection, user: User, cmd: p.Ping) -> None:
        self._hub.send(conn, event("pong", {"timestamp": utc_now_iso()}))
