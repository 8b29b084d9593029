"""Per-connection chat state and dispatch: unauthenticated → authenticated → closed.

:class:`Sessions` is the :class:`~fastchat.ws.connection.MessageHandler` of every
connection. It parses each text message (:mod:`fastchat.protocol`), checks the state and
the rate limits, and calls the one :class:`~fastchat.chat.Chat` method for that event.
Errors become ``error`` events; repeated flooding and bans close the connection.

A handler that must read storage first returns a coroutine. :meth:`Sessions._run` runs it
at once, in place, like an eagerly started task: when every read answers without waiting
(the SQLite store, the caches), it completes right there, with no task and in order.
Only a coroutine that really suspends is handed to a task, and until it finishes the
connection's later messages wait in ``Session.backlog``, in arrival order, so that every
connection's requests are still handled one after the other and answered in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from fastchat import protocol as p
from fastchat.clock import utc_now_iso
from fastchat.errors import (
    CLOSE_AUTH_TIMEOUT,
    CLOSE_BANNED,
    CLOSE_POLICY_VIOLATION,
    CLOSE_TRY_AGAIN_LATER,
    AuthRequired,
    Banned,
    ChatError,
    Conflict,
    RateLimited,
)
from fastchat.protocol import event
from fastchat.ratelimit import ConnectionCounter, TokenBucket

if TYPE_CHECKING:
    from fastchat.chat import Chat, User
    from fastchat.config import LimitsConfig
    from fastchat.fanout.hub import Hub
    from fastchat.metrics import Metrics
    from fastchat.ws.connection import Connection

log = logging.getLogger("fastchat.session")


class Session:
    """What one connection knows about itself."""

    __slots__ = ("auth_timer", "backlog", "bucket", "strikes", "typing_bucket", "user")

    def __init__(self, limits: LimitsConfig, now: float):
        self.user: User | None = None
        self.bucket = TokenBucket(limits.messages_per_second, limits.burst, now)
        self.typing_bucket: TokenBucket | None = None  # made on the first typing event
        self.strikes = 0
        self.auth_timer: asyncio.TimerHandle | None = None
        # Messages that arrived while a request waits on storage (None: nothing waits).
        self.backlog: deque[str] | None = None


class Sessions:
    """Dispatches every connection's messages to the chat."""

    def __init__(self, chat: Chat, hub: Hub, limits: LimitsConfig, metrics: Metrics):
        self._chat = chat
        self._hub = hub
        self._limits = limits
        self._metrics = metrics
        self._per_ip = ConnectionCounter()
        self._per_user = ConnectionCounter()
        self._handlers: dict[type, Callable[[Connection, User, Any], Any]] = {
            **chat.handlers,
            p.BanUser: self._ban,
            p.Ping: self._ping,
        }
        self._waiting: set[asyncio.Task[None]] = set()  # requests suspended on storage

    # --- MessageHandler -------------------------------------------------------------------

    def on_open(self, conn: Connection) -> None:
        session = Session(self._limits, time.monotonic())
        conn.session = session
        if not self._per_ip.acquire(conn.client, self._limits.max_connections_per_ip):
            conn.client = ""  # not counted: nothing to release
            conn.close(CLOSE_TRY_AGAIN_LATER, "too many connections from this address")
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
        backlog = session.backlog
        if backlog is not None:  # an earlier request waits on storage: keep the order
            if len(backlog) >= self._limits.burst:
                conn.close(CLOSE_POLICY_VIOLATION, "flooding")
                return
            backlog.append(text)
            return
        self._handle(conn, session, text)

    def _handle(self, conn: Connection, session: Session, text: str) -> None:
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
                self._run(conn, session, self._authenticate(conn, session, cmd))
                return
            handler = self._handlers.get(type(cmd))
            if handler is None:  # authenticate again on an authenticated connection
                raise Conflict("Already authenticated", request_type=cmd.TYPE)
            waits = handler(conn, user, cmd)
            if waits is not None:
                self._run(conn, session, waits)
        except Exception as exc:  # every failure is answered; the unexpected ones logged
            self._fail(conn, exc)

    def _fail(self, conn: Connection, exc: Exception) -> None:
        """Answer a request that failed: its ChatError, or "Internal error" (logged)."""
        if not isinstance(exc, ChatError):
            log.error(
                "error handling a message from %s (user %s)",
                conn.client,
                conn.user_id,
                exc_info=exc,
            )
            exc = ChatError("Internal error")
        self._metrics.errors_sent += 1
        self._hub.send(conn, p.error_event(exc))

    # --- requests that read storage -------------------------------------------------------

    def _run(self, conn: Connection, session: Session, request: Coroutine[Any, Any, None]) -> None:
        """Run ``request`` now; should it wait on storage, finish it in a task."""
        try:
            waiting_on = request.send(None)
        except StopIteration:
            return  # done without waiting: the common case, and always with SQLite
        session.backlog = deque()
        task = self._hub.loop.create_task(self._finish(conn, session, request, waiting_on))
        self._waiting.add(task)
        task.add_done_callback(self._waiting.discard)

    async def _finish(
        self,
        conn: Connection,
        session: Session,
        request: Coroutine[Any, Any, None],
        waiting_on: asyncio.Future[Any] | None,
    ) -> None:
        """Carry a suspended request on (as its task would), then handle the backlog."""
        try:
            while True:
                if waiting_on is None:  # a bare yield: give the loop one turn
                    await asyncio.sleep(0)
                else:  # the request reads the outcome (result or error) itself
                    await asyncio.wait((waiting_on,))
                waiting_on = request.send(None)
        except StopIteration:
            pass  # the request completed
        except Exception as exc:  # answered like a request that failed at once
            self._fail(conn, exc)
        finally:
            request.close()
        backlog, session.backlog = session.backlog, None
        while backlog and not conn.closed:
            self._handle(conn, session, backlog.popleft())
            if session.backlog is not None:  # that one waits too: the rest waits behind it
                session.backlog.extend(backlog)
                return

    # --- steps ----------------------------------------------------------------------------

    async def _authenticate(self, conn: Connection, session: Session, cmd: p.Command) -> None:
        if not isinstance(cmd, p.Authenticate):
            raise AuthRequired("Authentication required", request_type=cmd.TYPE)
        try:
            user = await self._chat.identify(cmd.token, cmd.TYPE)
        except Banned as err:
            self._hub.send(conn, p.error_event(err))
            conn.close(CLOSE_BANNED, "banned")
            return
        if conn.closed:  # it closed while the account was read
            return
        if not self._per_user.acquire(user.id, self._limits.max_connections_per_user):
            conn.close(CLOSE_POLICY_VIOLATION, "too many connections for this user")
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
            conn.close(CLOSE_POLICY_VIOLATION, "flooding")
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
            conn.close(CLOSE_AUTH_TIMEOUT, "authentication timeout")

    async def _ban(self, conn: Connection, user: User, cmd: p.BanUser) -> None:
        for target in await self._chat.ban_user(conn, user, cmd):
            target.close(CLOSE_BANNED, "banned")

    def on_control(self, data: bytes) -> None:
        """A change another process made (see ``Chat.apply_control``); close the banned."""
        for target in self._chat.apply_control(data):
            target.close(CLOSE_BANNED, "banned")

    def _ping(self, conn: Connection, user: User, cmd: p.Ping) -> None:
        self._hub.send(conn, event("pong", {"timestamp": utc_now_iso()}))
