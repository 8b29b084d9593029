"""Accounts as the chat knows them: the in-memory cache, and who is behind a token."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastchat.errors import Banned, InvalidToken

if TYPE_CHECKING:
    from fastchat.auth import Claims, TokenService
    from fastchat.storage.base import Store, UserRow


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

    def update(self, row: UserRow) -> None:
        """Take the stored account's current values (in place: connections share this)."""
        self.username = row.username
        self.email = row.email
        self.avatar_url = row.avatar_url
        self.role = row.role
        self.banned_until = row.banned_until

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


NO_SUCH_NAME_SECONDS = 30.0
"""How long a username that names no account is answered from memory (mentions)."""
_NO_SUCH_NAME_MAX = 10_000  # names remembered as missing, at most (then forgotten at once)


class Users:
    """The user cache: an account is read from storage once, then kept (and kept current)."""

    def __init__(self, store: Store, tokens: TokenService):
        self._store = store
        self._tokens = tokens
        self._cache: dict[str, User] = {}
        self._by_name: dict[str, User] = {}  # lower-cased username -> user, once looked up
        # Lower-cased names no account had, until when (monotonic) that answer is kept: an
        # "@word" that names nobody must not cost a storage read per message.
        self._no_such_name: dict[str, float] = {}

    def cached(self, user_id: str) -> User | None:
        """The user if it is in memory (every authenticated user is)."""
        return self._cache.get(user_id)

    async def get(self, user_id: str) -> User | None:
        """The user, read from storage on a cache miss."""
        user = self._cache.get(user_id)
        if user is None:
            row = await self._store.user_by_id(user_id)
            if row is None:
                return None
            user = self._cache.setdefault(user_id, User.from_row(row))
        return user

    async def by_name(self, username: str) -> User | None:
        """The user with this username (case-insensitive); one found is kept by name too,
        until the account is removed or renamed, and a name nobody has is remembered as such
        for :data:`NO_SUCH_NAME_SECONDS` (so a new account is found by name within that)."""
        known, user = self.by_name_in_memory(username)
        if known:
            return user
        key = username.lower()
        row = await self._store.user_by_name(username)
        if row is None:
            self._by_name.pop(key, None)
            if len(self._no_such_name) >= _NO_SUCH_NAME_MAX:
                self._no_such_name.clear()
            self._no_such_name[key] = time.monotonic() + NO_SUCH_NAME_SECONDS
            return None
        self._no_such_name.pop(key, None)
        user = self._by_name[key] = self._cache.setdefault(row.id, User.from_row(row))
        return user

    def by_name_in_memory(self, username: str) -> tuple[bool, User | None]:
        """What :meth:`by_name` answers without a storage read: ``(True, user)``, ``(True,
        None)`` for a name remembered as nobody's, or ``(False, None)`` when only storage knows."""
        key = username.lower()
        user = self._by_name.get(key)
        if user is not None and user.username.lower() == key:
            return True, user
        if self._no_such_name.get(key, 0.0) > time.monotonic():
            return True, None
        return False, None

    def last_change(self) -> int:
        """Where the account change log stands (read once, at start)."""
        return self._store.last_user_change()

    async def changes_after(self, change_id: int) -> list[tuple[int, str]]:
        """``(change id, user id)`` of the account changes logged after ``change_id``."""
        return await self._store.user_changes_after(change_id)

    async def reload(self, user_id: str) -> User | None:
        """Read the account again and update the cached user in place; None once the row
        is gone (it is then dropped from the cache)."""
        row = await self._store.user_by_id(user_id)
        if row is None:
            gone = self._cache.pop(user_id, None)
            if gone is not None:
                self._by_name.pop(gone.username.lower(), None)
            return None
        user = self._cache.get(user_id)
        if user is None:
            return self._cache.setdefault(user_id, User.from_row(row))
        user.update(row)
        return user

    async def session_live(self, user_id: str, session_id: str) -> bool:
        """Whether the login session exists, is ``user_id``'s and has not been revoked."""
        row = await self._store.login_session(session_id)
        return row is not None and row.user_id == user_id and row.revoked_at is None

    async def verify(self, token: str, request_type: str | None = None) -> tuple[User, Claims]:
        """The account behind a token and the token's claims; raises InvalidToken or Banned.

        The account and the token's login session are read from storage every time, so a
        change made anywhere (another process, the CLI) applies to the next request.
        """
        claims = self._tokens.verify(token)
        user = await self.reload(claims.user_id)
        if user is None:
            raise InvalidToken("User not found", request_type=request_type)
        if claims.session_id is not None and not await self.session_live(
            user.id, claims.session_id
        ):
            raise InvalidToken("This session has ended", request_type=request_type)
        if user.is_banned(time.time()):
            raise Banned("This account is banned", request_type=request_type)
        return user, claims

    async def identify(self, token: str, request_type: str | None = None) -> User:
        """The account behind a token; raises InvalidToken or Banned."""
        return (await self.verify(token, request_type))[0]
