"""Accounts as the chat knows them: the in-memory cache, and who is behind a token."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastchat.errors import Banned, InvalidToken

if TYPE_CHECKING:
    from fastchat.auth import TokenService
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


class Users:
    """The user cache: an account is read from storage once, then kept (and kept current)."""

    def __init__(self, store: Store, tokens: TokenService):
        self._store = store
        self._tokens = tokens
        self._cache: dict[str, User] = {}

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
        """The user with this username (case-insensitive), read from storage."""
        row = await self._store.user_by_name(username)
        if row is None:
            return None
        return self._cache.setdefault(row.id, User.from_row(row))

    async def identify(self, token: str, request_type: str | None = None) -> User:
        """The account behind a token; raises InvalidToken or Banned."""
        claims = self._tokens.verify(token)
        user = await self.get(claims.user_id)
        if user is None:
            raise InvalidToken("User not found", request_type=request_type)
        if user.is_banned(time.time()):
            raise Banned("This account is banned", request_type=request_type)
        return user
