"""Login sessions: one per device, each with a rotating refresh token.

Signing in opens a session and returns a short-lived access token (naming the session) and
a refresh token. ``POST /api/auth/refresh`` trades a refresh token for a new pair; the old
refresh token is then spent. A spent one presented again means it was copied: the whole
session (the "family" of tokens descending from that sign-in) is revoked. Refresh tokens
are stored only as SHA-256 hashes. Every write here is committed before it is answered.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastchat.auth import new_refresh_token, refresh_token_hash
from fastchat.clock import utc_now_iso
from fastchat.errors import InvalidToken
from fastchat.ids import new_id
from fastchat.storage import ops

if TYPE_CHECKING:
    from fastchat.auth import TokenService
    from fastchat.chat.users import User
    from fastchat.storage.base import Store, Writer

MAX_REFRESH_TOKEN_CHARS = 256


@dataclass(frozen=True, slots=True)
class Grant:
    """What a sign-in or a refresh hands out."""

    session_id: str
    user_id: str
    token: str
    refresh_token: str

    def json(self) -> dict[str, str]:
        return {"token": self.token, "refreshToken": self.refresh_token}


class LoginSessions:
    """Opens, rotates and revokes login sessions."""

    def __init__(self, store: Store, writer: Writer, tokens: TokenService, refresh_ttl: int):
        self._store = store
        self._writer = writer
        self._tokens = tokens
        self._refresh_ttl = refresh_ttl
        # Hashes being rotated right now: the same token presented twice at once is a reuse.
        self._rotating: set[str] = set()

    async def open(self, user: User) -> Grant:
        """A new session for ``user``: an access token and its first refresh token."""
        session_id = new_id()
        refresh = new_refresh_token()
        hashed = refresh_token_hash(refresh)
        self._writer.submit(ops.add_refresh_token(hashed, session_id))
        await self._writer.execute(
            ops.insert_login_session(
                id=session_id,
                user_id=user.id,
                token_hash=hashed,
                created_at=utc_now_iso(),
                expires_at=time.time() + self._refresh_ttl,
            )
        )
        return Grant(session_id, user.id, self._access(user, session_id), refresh)

    async def refresh(self, refresh_token: object, user_of: UserLookup) -> Grant:
        """Trade a refresh token for a new pair; a spent one revokes its whole session."""
        if (
            not isinstance(refresh_token, str)
            or not refresh_token
            or len(refresh_token) > MAX_REFRESH_TOKEN_CHARS
        ):
            raise InvalidToken("Malformed refresh token", field="refreshToken")
        hashed = refresh_token_hash(refresh_token)
        session_id = await self._store.refresh_token_session(hashed)
        if session_id is None:
            raise InvalidToken("Unknown refresh token", field="refreshToken")
        row = await self._store.login_session(session_id)
        if row is None or row.revoked_at is not None:
            raise InvalidToken("This session has ended", field="refreshToken")
        if row.token_hash != hashed or hashed in self._rotating:
            await self.revoke(session_id)
            raise InvalidToken(
                "Refresh token already used: the session is revoked", field="refreshToken"
            )
        if row.expires_at <= time.time():
            raise InvalidToken("Refresh token expired", field="refreshToken")
        user = await user_of(row.user_id)  # raises when the account is gone or banned
        refresh = new_refresh_token()
        new_hash = refresh_token_hash(refresh)
        self._rotating.add(hashed)
        try:
            self._writer.submit(ops.add_refresh_token(new_hash, session_id))
            await self._writer.execute(
                ops.rotate_refresh_token(session_id, new_hash, time.time() + self._refresh_ttl)
            )
        finally:
            self._rotating.discard(hashed)
        return Grant(session_id, user.id, self._access(user, session_id), refresh)

    async def revoke(self, session_id: str) -> None:
        """End one session (committed on return)."""
        await self._writer.execute(ops.revoke_login_session(session_id, utc_now_iso()))

    async def revoke_all(self, user_id: str, keep: str | None = None) -> None:
        """End every session of ``user_id`` but ``keep`` (committed on return)."""
        await self._writer.execute(ops.revoke_user_sessions(user_id, utc_now_iso(), keep))

    def _access(self, user: User, session_id: str) -> str:
        return self._tokens.issue(user.id, user.username, user.role, session_id)


if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    UserLookup = Callable[[str], Awaitable[User]]
