"""What the chat needs from storage, whatever the backend: rows, the Store and Writer
protocols, the write operations' type, and the errors a backend raises.

A backend (:mod:`fastchat.storage.sqlite` today) implements :class:`Store` (reads and
start-up state) and :class:`Writer` (the write-behind queue). Nothing outside
``fastchat/storage/`` imports a database driver.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

Op = tuple[str, tuple[Any, ...]]
"""A write operation: its name (see :mod:`fastchat.storage.ops`) and its parameters."""

OnDone = Callable[[BaseException | None], None]
"""Called on the loop thread once an op's batch committed: None, or the op's error."""

FOREVER = 253402300799.0
"""A ban/mute deadline meaning "permanent" (9999-12-31T23:59:59Z as a Unix time)."""


DEDUPE_HOUR_SQL = "substr(created_at, 1, 13)"
"""A message's clientId hour: the first 13 characters of ``created_at``
(``2026-11-25T20``), the first column of the clientId indexes of both backends. A new
hour starts a new part of the index, so only the current hour's part takes random inserts."""


DEDUPE_WINDOW_HOURS = 24
"""How many hours back from the current one a resent clientId is looked for."""

DEDUPE_HOURS_IN = "IN (" + ", ".join("?" * (DEDUPE_WINDOW_HOURS + 1)) + ")"
"""SQLite's ``IN`` list for :func:`dedupe_hours`: one index probe per hour (a range on the
hour would scan the whole window's entries)."""


def dedupe_hours(now: float | None = None) -> tuple[str, ...]:
    """The current clientId hour and the :data:`DEDUPE_WINDOW_HOURS` before it, newest
    first: the window in which a resent clientId is found (docs/durability.md, "Resending
    after a reconnect")."""
    now = time.time() if now is None else now
    return tuple(
        time.strftime("%Y-%m-%dT%H", time.gmtime(now - 3600 * back))
        for back in range(DEDUPE_WINDOW_HOURS + 1)
    )


class StorageError(Exception):
    """The storage could not be opened or used (the message says why)."""


class Duplicate(StorageError):
    """A write broke a uniqueness rule (a username, email, id or clientId already taken)."""


@dataclass(frozen=True, slots=True)
class UserRow:
    id: str
    username: str
    email: str | None
    password_hash: str
    avatar_url: str | None
    role: str
    created_at: str | None
    last_seen: str | None
    banned_until: float | None
    ban_reason: str | None


@dataclass(frozen=True, slots=True)
class RoomRow:
    id: str
    name: str
    description: str | None
    is_private: bool
    created_by: str | None
    created_at: str | None
    member_count: int = 0


@dataclass(frozen=True, slots=True)
class MessageRow:
    id: str
    room_id: str
    seq: int
    user_id: str
    content: str
    message_type: str
    reply_to: str | None
    client_id: str | None
    attachment_id: str | None
    created_at: str
    edited_at: str | None
    deleted_at: str | None
    reply_count: int = 0
    mentions: str | None = None  # the mentioned user ids as a JSON array
    mentions_room: bool = False


@dataclass(frozen=True, slots=True)
class DirectMessageRow:
    id: str
    seq: int
    pair: str
    sender_id: str
    recipient_id: str
    content: str
    client_id: str | None
    created_at: str
    reply_to: str | None = None
    edited_at: str | None = None
    deleted_at: str | None = None
    message_type: str = "text"
    attachment_id: str | None = None


@dataclass(frozen=True, slots=True)
class ConversationRow:
    """One of a user's DM conversations: the peer, its newest message, the user's read
    marker, and how many messages from the peer came after it (counted up to a cap)."""

    peer_id: str
    last: DirectMessageRow
    last_read_seq: int
    unread: int


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A room or direct message matching a search, its snippet with the matches marked,
    and its rank (lower is a better match)."""

    message: MessageRow | DirectMessageRow
    snippet: str
    rank: float


@dataclass(frozen=True, slots=True)
class FileRow:
    id: str
    uploader_id: str
    name: str
    size: int
    content_type: str
    created_at: str
    room_id: str | None
    message_id: str | None
    dm_id: str | None = None  # the direct message sharing it (read from direct_messages)


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One audit entry; ``detail`` is the stored JSON text (or None)."""

    id: int
    at: str
    actor_id: str | None
    action: str
    target_user_id: str | None
    room_id: str | None
    reason: str | None
    detail: str | None


@dataclass(frozen=True, slots=True)
class LoginSessionRow:
    """One login session (a device): its current refresh token's hash; times are ISO-8601
    but ``expires_at`` (Unix seconds)."""

    id: str
    user_id: str
    token_hash: str
    created_at: str
    expires_at: float
    revoked_at: str | None


@dataclass(frozen=True, slots=True)
class StartupState:
    """What :meth:`Store.open` learned: was the last run's shutdown clean, and where the
    sequence counters stand (``max_room_seq`` has every room, 0 when it has no messages)."""

    clean: bool
    max_room_seq: dict[str, int]
    max_dm_seq: int


class Store(Protocol):
    """The reads the server makes (on the event-loop thread) and its start-up state.

    Start-up reads (``open``, ``all_rooms``, ``room_member_ids``, ``client_keys``,
    ``active_mutes``, ``last_user_change``, ``upload_usage``, ``users_without_keys``) are
    plain calls, made once before the server listens. The reads made while serving are
    coroutines, so that a network database can wait for its answer.
    """

    def open(self) -> StartupState: ...
    def mark_clean_shutdown(self) -> None: ...
    def close(self) -> None: ...
    async def user_by_id(self, user_id: str) -> UserRow | None: ...
    async def user_by_name(self, username: str) -> UserRow | None: ...
    async def user_by_login(self, name_or_email: str) -> UserRow | None: ...
    def all_rooms(self) -> list[RoomRow]: ...
    def room_member_ids(self, room_id: str) -> set[str]: ...
    async def messages_page(
        self, room_id: str, *, before: int | None = None, after: int | None = None, limit: int
    ) -> list[MessageRow]: ...
    async def message_by_id(self, message_id: str) -> MessageRow | None: ...
    def client_keys(self) -> Iterator[str]: ...
    async def message_by_client_id(self, user_id: str, client_id: str) -> MessageRow | None: ...
    async def dm_page(
        self, user_a: str, user_b: str, *, before: int | None = None, limit: int
    ) -> list[DirectMessageRow]: ...
    async def dm_by_id(self, dm_id: str) -> DirectMessageRow | None: ...
    async def dm_by_client_id(self, sender_id: str, client_id: str) -> DirectMessageRow | None: ...
    def active_mutes(self, now: float | None = None) -> list[tuple[str, str, float]]: ...
    async def audit_entries(
        self, *, limit: int, before_id: int | None = None
    ) -> list[AuditRow]: ...
    async def file(self, file_id: str) -> FileRow | None: ...
    def upload_usage(self) -> dict[str, int]: ...
    def recent_read_error(self) -> str | None: ...
    async def messages_by_user(self, user_id: str) -> list[MessageRow]: ...
    async def dms_of_user(self, user_id: str) -> list[DirectMessageRow]: ...
    async def user_like(self, name_key: str, email_key: str | None) -> UserRow | None: ...
    def users_without_keys(self) -> list[tuple[str, str, str | None]]: ...
    async def users_page(self, *, limit: int, after: str | None = None) -> list[UserRow]: ...
    async def admin_count(self) -> int: ...
    async def login_session(self, session_id: str) -> LoginSessionRow | None: ...
    async def refresh_token_session(self, token_hash: str) -> str | None: ...
    def last_user_change(self) -> int: ...
    async def user_changes_after(self, change_id: int) -> list[tuple[int, str]]: ...
    async def members_by_last_seen(self, room_id: str, *, limit: int) -> list[UserRow]: ...
    async def read_markers(self, user_id: str) -> dict[str, int]: ...
    async def conversation_markers(
        self, conversation: str, user_ids: list[str]
    ) -> dict[str, int]: ...
    async def room_unread(
        self, room_id: str, user_id: str, after_seq: int, cap: int
    ) -> tuple[int, int]: ...
    async def conversations(
        self, user_id: str, *, limit: int, unread_cap: int
    ) -> list[ConversationRow]: ...
    async def reactions(self, message_ids: list[str]) -> dict[str, list[tuple[str, str]]]: ...
    async def replies_page(
        self, message_id: str, *, before: int | None = None, limit: int
    ) -> list[MessageRow]: ...
    async def search_messages(
        self, words: list[str], room_ids: list[str], *, before_id: str | None, limit: int
    ) -> list[SearchHit]: ...
    async def search_direct(
        self, words: list[str], user_id: str, *, before_id: str | None, limit: int
    ) -> list[SearchHit]: ...


class Writer(Protocol):
    """The write-behind queue: ops are applied in order, in batches, off the loop."""

    @property
    def queue_depth(self) -> int: ...
    def submit(self, op: Op, on_done: OnDone | None = None) -> bool: ...
    async def execute(self, op: Op) -> None: ...
