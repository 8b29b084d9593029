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

An authenticated connection is authorized until its access token expires; ``authenticate``
again with a fresh token of the same account renews it. One watcher task, every
:data:`WATCH_SECONDS`, closes the connections whose token ran out (4001) and applies the
account change log (:meth:`Sessions.recheck`): removed accounts, bans, role changes and
revoked login sessions reach live connections whichever process made them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from fastchat import protocol as p
from fastchat.clock import utc_now_iso
from fastchat.errors import (
    AuthRequired,
    Banned,
    ChatError,
    CloseCode,
    Conflict,
    InvalidToken,
    RateLimited,
)
from fastchat.protocol import event
from fastchat.ratelimit import ConnectionCounter, TokenBucket
from fastchat.storage.base import FOREVER

if TYPE_CHECKING:
    from fastchat.auth import Claims
    from fastchat.chat import Chat, User
    from fastchat.config import LimitsConfig
    from fastchat.fanout.hub import Hub
    from fastchat.fanout.redis_broker import RedisBroker
    from fastchat.metrics import Metrics
    from fastchat.ws.connection import Connection

log = logging.getLogger("fastchat.session")

WATCH_SECONDS = 0.5
"""How often token expiry and the account change log are looked at."""


def _taken(yielded: asyncio.Future[Any] | None) -> asyncio.Future[Any] | None:
    """A future a request yielded, taken as a task takes one: marked no longer blocking, or
    the next request to await the same pending future (a connection attempt that concurrent
    reads share) would fail with "await wasn't used with future"."""
    if yielded is not None:
        yielded._asyncio_future_blocking = False
    return yielded


class Session:
    """What one connection knows about itself."""

    __slots__ = (
        "auth_timer",
        "backlog",
        "bucket",
        "expires_at",
        "login_session",
        "strikes",
        "typing_bucket",
        "user",
    )

    def __init__(self, limits: LimitsConfig, now: float):
        self.user: User | None = None
        self.expires_at = 0  # Unix second the access token expires at (once authenticated)
        self.login_session: str | None = None
        self.bucket = TokenBucket(limits.messages_per_second, limits.burst, now)
        self.typing_bucket: TokenBucket | None = None  # made on the first typing event
        self.strikes = 0
        self.auth_timer: asyncio.TimerHandle | None = None
        # Messages that arrived while a request waits on storage (None: nothing waits).
        self.backlog: deque[str] | None = None


class Sessions:
    """Dispatches every connection's messages to the chat."""

    def __init__(
        self,
        chat: Chat,
        hub: Hub,
        limits: LimitsConfig,
        metrics: Metrics,
        cluster: RedisBroker | None = None,
    ):
        self._chat = chat
        self._cluster = cluster  # counts each user's connections across the nodes
        self._hub = hub
        self._limits = limits
        self._metrics = metrics
        self._per_ip = ConnectionCounter()
        self._per_user = ConnectionCounter()
        self._handlers: dict[type, Callable[[Connection, User, Any], Any]] = {
            **chat.handlers,
            p.BanUser: self._ban,
            p.Ping: self._ping,
            p.Authenticate: self._renew,
        }
        self._waiting: set[asyncio.Task[None]] = set()  # requests suspended on storage
        # Unix second -> the authenticated connections whose token expires then.
        self._expiring: defaultdict[int, set[Connection]] = defaultdict(set)
        self._last_change = chat.users.last_change()
        self._watcher: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the watcher (token expiry, account changes)."""
        self._watcher = self._hub.loop.create_task(self._watch())

    def stop(self) -> None:
        """Stop the watcher."""
        if self._watcher is not None:
            self._watcher.cancel()

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
            self._unexpire(conn, session)
            self._release(user.id)
            self._chat.disconnect(conn, user)

    def on_text(self, conn: Connection, text: str) -> None:
        if conn.closed:
            return
        session: Session = conn.session  # type: ignore[assignment]
        backlog = session.backlog
        if backlog is not None:  # an earlier request waits on storage: keep the order
            if len(backlog) >= self._limits.burst:
                conn.close(CloseCode.POLICY_VIOLATION, "flooding")
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
            waits = self._handlers[type(cmd)](conn, user, cmd)
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
            waiting_on = _taken(request.send(None))
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
                waiting_on = _taken(request.send(None))
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
            user, claims = await self._chat.users.verify(cmd.token, cmd.TYPE)
        except Banned as err:
            self._hub.send(conn, p.error_event(err))
            conn.close(CloseCode.BANNED, "banned")
            return
        if conn.closed:  # it closed while the account was read
            return
        if not self._per_user.acquire(user.id, self._limits.max_connections_per_user):
            conn.close(CloseCode.POLICY_VIOLATION, "too many connections for this user")
            return
        if self._cluster is not None and not await self._admit_across_nodes(conn, user.id):
            return
        await self._chat.authenticate(conn, user)
        if conn.closed:
            self._release(user.id)
            return
        session.user = user
        self._authorize(conn, session, claims)
        if session.auth_timer is not None:
            session.auth_timer.cancel()
            session.auth_timer = None

    async def _admit_across_nodes(self, conn: Connection, user_id: str) -> bool:
        """Count the connection against the user's cap on every node; close it when the cap
        is reached, or when it closed meanwhile."""
        assert self._cluster is not None
        if not await self._cluster.admit(user_id, self._limits.max_connections_per_user):
            self._per_user.release(user_id)
            conn.close(CloseCode.POLICY_VIOLATION, "too many connections for this user")
            return False
        if conn.closed:
            self._release(user_id)
            return False
        return True

    def _release(self, user_id: str) -> None:
        self._per_user.release(user_id)
        if self._cluster is not None:
            self._cluster.release(user_id)

    async def _renew(self, conn: Connection, user: User, cmd: p.Authenticate) -> None:
        """``authenticate`` on an authenticated connection: a fresh token renews it."""
        session: Session = conn.session  # type: ignore[assignment]
        renewed, claims = await self._chat.users.verify(cmd.token, cmd.TYPE)
        if renewed.id != user.id:
            raise Conflict("Already authenticated as another user", request_type=cmd.TYPE)
        if conn.closed:
            return
        self._unexpire(conn, session)
        self._authorize(conn, session, claims)
        self._hub.send(conn, event("token_renewed", {"expiresAt": claims.expires_at}))

    def _authorize(self, conn: Connection, session: Session, claims: Claims) -> None:
        """Authorize ``conn`` until the token's expiry, for the token's login session."""
        session.expires_at = claims.expires_at
        session.login_session = claims.session_id
        self._expiring[claims.expires_at].add(conn)

    def _unexpire(self, conn: Connection, session: Session) -> None:
        due = self._expiring.get(session.expires_at)
        if due is not None:
            due.discard(conn)
            if not due:
                del self._expiring[session.expires_at]

    # --- the watcher ----------------------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            try:
                self._expire(time.time())
                await self._apply_changes()
            except Exception:  # the watcher must outlive one bad round; logged, then retried
                log.exception("account watcher failed")

    def _expire(self, now: float) -> None:
        """Close the connections whose access token has expired (4001)."""
        for second in [s for s in self._expiring if s <= now]:
            for conn in self._expiring.pop(second):
                self._hub.send(conn, p.error_event(InvalidToken("Token expired")))
                conn.close(CloseCode.AUTH_ENDED, "token expired")

    async def _apply_changes(self) -> None:
        users = self._chat.users
        changes = await users.changes_after(self._last_change)
        if not changes:
            return
        self._last_change = changes[-1][0]
        for user_id in dict.fromkeys(user_id for _, user_id in changes):
            await self.recheck(user_id)

    async def recheck(self, user_id: str) -> None:
        """Apply the stored account to its live connections: gone → closed (4001), banned →
        closed (4003), new role → ``role_changed``, revoked login session → closed (4001)."""
        users = self._chat.users
        before = users.cached(user_id)
        if before is None and not self._hub.user_conns(user_id):
            return  # not loaded here: the next request reads it anyway
        old_role = before.role if before is not None else None
        user = await users.reload(user_id)
        conns = [conn for conn in self._hub.user_conns(user_id) if not conn.closed]
        if user is None:
            for conn in conns:
                self._hub.send(conn, p.error_event(InvalidToken("User not found")))
                conn.close(CloseCode.AUTH_ENDED, "account removed")
            return
        if user.is_banned(time.time()):
            until = None if user.banned_until == FOREVER else user.banned_until
            self._hub.send_many(conns, event("banned", {"reason": None, "until": until}))
            for conn in conns:
                conn.close(CloseCode.BANNED, "banned")
            return
        if user.role != old_role:
            payload = event("role_changed", {"userId": user_id, "role": user.role})
            self._hub.send_many(conns, payload)
        for conn in conns:
            session_id = conn.session.login_session  # type: ignore[attr-defined]
            if session_id is not None and not await users.session_live(user_id, session_id):
                self._hub.send(conn, p.error_event(InvalidToken("This session has ended")))
                conn.close(CloseCode.AUTH_ENDED, "session ended")

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

    async def _ban(self, conn: Connection, user: User, cmd: p.BanUser) -> None:
        for target in await self._chat.ban_user(conn, user, cmd):
            target.close(CloseCode.BANNED, "banned")

    def on_control(self, data: bytes) -> None:
        """A change another process made (see ``Chat.apply_control``); close the banned."""
        for target in self._chat.apply_control(data):
            target.close(CloseCode.BANNED, "banned")

    def _ping(self, conn: Connection, user: User, cmd: p.Ping) -> None:
        self._hub.send(conn, event("pong", {"timestamp": utc_now_iso()}))
