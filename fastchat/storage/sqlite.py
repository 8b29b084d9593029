"""The SQLite backend (apsw): schema and migrations, reads, and the write-behind writer.

The only module that imports apsw; it implements :mod:`fastchat.storage.base`.

Two connections per process, both in WAL mode so readers never block the writer:

* :class:`SqliteStore` owns the *reader* connection, used on the event-loop thread for short
  indexed reads (and for the rare writes made while no writer runs: migrations and the
  clean-shutdown marker).
* :class:`WriteBehind` owns the *writer* connection and the checkpointer; its daemon
  thread (:mod:`fastchat.storage.writebehind`, shared with PostgreSQL) commits
  queued operations in batches, one transaction per batch. The loop hands it plain
  ``(statement_name, params)`` tuples and learns the outcome through ``on_done``
  callbacks, called on the loop thread once the batch has committed.

Timestamps are ISO-8601 UTC strings made by the caller; ban and mute deadlines are Unix
times in seconds (:data:`~fastchat.storage.base.FOREVER` for "permanent").
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import fields
from itertools import groupby
from typing import Any

import apsw
import orjson

from fastchat.config import StorageConfig
from fastchat.errors import StorageUnavailable
from fastchat.storage.base import (
    DEDUPE_HOUR_SQL,
    DEDUPE_HOURS_IN,
    AuditRow,
    ConversationRow,
    DirectMessageRow,
    Duplicate,
    FileRow,
    LoginSessionRow,
    MessageRow,
    RoomRow,
    SearchHit,
    StartupState,
    StorageError,
    UserRow,
    dedupe_hours,
)
from fastchat.storage.ops import dm_pair
from fastchat.storage.writebehind import BatchWriter, Entry, entry_name

log = logging.getLogger("fastchat.store")

BUSY_TIMEOUT_MS = 5000
CHECKPOINT_PAGES = 1000
"""WAL length (pages) from which the checkpointer thread copies the WAL into the database
(SQLite's own automatic checkpoint starts at the same length, inside a commit)."""
CHECKPOINT_INTERVAL = 0.05
"""Seconds between two checkpoints of the checkpointer thread, at most."""
WAL_RESTART_PAGES = 8000
"""WAL size (pages) past which the writer finishes the copy itself, so the WAL starts over."""
_CLEAN_KEY = "clean_shutdown"
MAX_SEQ = 2**63 - 1
SNIPPET_OPEN = "<mark>"
SNIPPET_CLOSE = "</mark>"
"""What a search snippet wraps each match in (the rest of the snippet is plain text)."""

MIGRATIONS: list[str] = [
    """
    CREATE TABLE users (
        id TEXT PRIMARY KEY,
        username TEXT NOT NULL UNIQUE COLLATE NOCASE,
        email TEXT UNIQUE COLLATE NOCASE,
        password_hash TEXT NOT NULL,
        avatar_url TEXT,
        role TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'moderator', 'admin')),
        created_at TEXT,
        last_seen TEXT,
        banned_until REAL,
        ban_reason TEXT
    );
    CREATE TABLE rooms (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        description TEXT,
        is_private INTEGER NOT NULL DEFAULT 0,
        created_by TEXT,
        created_at TEXT
    );
    CREATE TABLE room_members (
        room_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        role TEXT NOT NULL DEFAULT 'member' CHECK (role IN ('member', 'owner')),
        joined_at TEXT,
        PRIMARY KEY (room_id, user_id)
    ) WITHOUT ROWID;
    CREATE INDEX room_members_user ON room_members (user_id);
    CREATE TABLE messages (
        id TEXT PRIMARY KEY,
        room_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        user_id TEXT NOT NULL,
        content TEXT NOT NULL,
        message_type TEXT NOT NULL DEFAULT 'text',
        reply_to TEXT,
        client_id TEXT,
        attachment_id TEXT,
        created_at TEXT NOT NULL,
        edited_at TEXT,
        deleted_at TEXT
    );
    CREATE UNIQUE INDEX messages_room_seq ON messages (room_id, seq);
    CREATE UNIQUE INDEX messages_user_client ON messages (user_id, client_id)
        WHERE client_id IS NOT NULL;
    CREATE TABLE direct_messages (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        pair TEXT NOT NULL,
        sender_id TEXT NOT NULL,
        recipient_id TEXT NOT NULL,
        content TEXT NOT NULL,
        client_id TEXT,
        created_at TEXT NOT NULL
    );
    CREATE UNIQUE INDEX direct_messages_seq ON direct_messages (seq);
    CREATE INDEX direct_messages_pair_seq ON direct_messages (pair, seq);
    CREATE UNIQUE INDEX direct_messages_sender_client ON direct_messages (sender_id, client_id)
        WHERE client_id IS NOT NULL;
    CREATE TABLE mutes (
        room_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        until REAL NOT NULL,
        PRIMARY KEY (room_id, user_id)
    ) WITHOUT ROWID;
    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        actor_id TEXT,
        action TEXT NOT NULL,
        target_user_id TEXT,
        room_id TEXT,
        reason TEXT,
        detail TEXT
    );
    CREATE TABLE files (
        id TEXT PRIMARY KEY,
        uploader_id TEXT NOT NULL,
        name TEXT NOT NULL,
        size INTEGER NOT NULL,
        content_type TEXT NOT NULL,
        created_at TEXT NOT NULL,
        room_id TEXT,
        message_id TEXT
    );
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
    INSERT INTO rooms (id, name, description, is_private, created_at) VALUES
        ('general', 'General', 'General discussion', 0, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        ('random', 'Random', 'Random topics', 0, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        ('tech', 'Tech Talk', 'Technology discussions', 0, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
    """,
    # clientId first: time-ordered clientIds (what the browser client sends) then append at
    # the end of the index, whoever sends them, instead of at one point per user.
    """
    DROP INDEX messages_user_client;
    CREATE UNIQUE INDEX messages_client_user ON messages (client_id, user_id)
        WHERE client_id IS NOT NULL;
    DROP INDEX direct_messages_sender_client;
    CREATE UNIQUE INDEX direct_messages_client_sender ON direct_messages (client_id, sender_id)
        WHERE client_id IS NOT NULL;
    """,
    # Login sessions (one per device, its current refresh token's hash; every hash ever
    # issued stays in refresh_tokens, so a rotated one coming back is recognised), a log of
    # account changes, filled by triggers whoever writes (the CLI, a shell), that running
    # servers poll, and the confusable skeletons of usernames and emails (names.skeleton;
    # filled at start for accounts made before).
    """
    CREATE TABLE login_sessions (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        token_hash TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at REAL NOT NULL,
        revoked_at TEXT
    );
    CREATE INDEX login_sessions_user ON login_sessions (user_id);
    CREATE TABLE refresh_tokens (
        token_hash TEXT PRIMARY KEY,
        session_id TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE user_changes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id TEXT NOT NULL,
        at REAL NOT NULL DEFAULT (strftime('%s', 'now'))
    );
    CREATE TRIGGER users_changed AFTER UPDATE OF username, password_hash, role, banned_until
        ON users BEGIN INSERT INTO user_changes (user_id) VALUES (NEW.id); END;
    CREATE TRIGGER users_removed AFTER DELETE ON users
        BEGIN INSERT INTO user_changes (user_id) VALUES (OLD.id); END;
    CREATE TRIGGER login_sessions_revoked AFTER UPDATE OF revoked_at ON login_sessions
        BEGIN INSERT INTO user_changes (user_id) VALUES (NEW.user_id); END;
    ALTER TABLE users ADD COLUMN name_key TEXT;
    ALTER TABLE users ADD COLUMN email_key TEXT;
    CREATE INDEX users_name_key ON users (name_key);
    CREATE INDEX users_email_key ON users (email_key);
    """,
    # Issue 15: read markers, reactions, reply counts, mentions, full-text search.
    # A marker's conversation is a room id, or a DM pair ("a:b", see ops.dm_pair).
    """
    CREATE TABLE read_markers (
        user_id TEXT NOT NULL,
        conversation TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (user_id, conversation)
    ) WITHOUT ROWID;
    CREATE TABLE reactions (
        message_id TEXT NOT NULL,
        emoji TEXT NOT NULL,
        user_id TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (message_id, emoji, user_id)
    ) WITHOUT ROWID;
    ALTER TABLE messages ADD COLUMN reply_count INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN mentions TEXT;
    ALTER TABLE messages ADD COLUMN mentions_room INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX messages_reply_to ON messages (reply_to, seq) WHERE reply_to IS NOT NULL;
    ALTER TABLE direct_messages ADD COLUMN reply_to TEXT;
    ALTER TABLE direct_messages ADD COLUMN edited_at TEXT;
    ALTER TABLE direct_messages ADD COLUMN deleted_at TEXT;
    CREATE INDEX direct_messages_sender_pair ON direct_messages (sender_id, pair, seq);
    CREATE INDEX direct_messages_recipient_pair ON direct_messages (recipient_id, pair, seq);
    CREATE VIRTUAL TABLE messages_fts USING fts5(
        content, content='messages', content_rowid='rowid', tokenize='unicode61 remove_diacritics 2'
    );
    INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');
    CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts (rowid, content) VALUES (new.rowid, new.content);
    END;
    CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, content)
            VALUES ('delete', old.rowid, old.content);
    END;
    CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, content)
            VALUES ('delete', old.rowid, old.content);
        INSERT INTO messages_fts (rowid, content) VALUES (new.rowid, new.content);
    END;
    CREATE VIRTUAL TABLE direct_messages_fts USING fts5(
        content, content='direct_messages', content_rowid='rowid',
        tokenize='unicode61 remove_diacritics 2'
    );
    INSERT INTO direct_messages_fts (direct_messages_fts) VALUES ('rebuild');
    CREATE TRIGGER direct_messages_fts_insert AFTER INSERT ON direct_messages BEGIN
        INSERT INTO direct_messages_fts (rowid, content) VALUES (new.rowid, new.content);
    END;
    CREATE TRIGGER direct_messages_fts_delete AFTER DELETE ON direct_messages BEGIN
        INSERT INTO direct_messages_fts (direct_messages_fts, rowid, content)
            VALUES ('delete', old.rowid, old.content);
    END;
    CREATE TRIGGER direct_messages_fts_update AFTER UPDATE OF content ON direct_messages BEGIN
        INSERT INTO direct_messages_fts (direct_messages_fts, rowid, content)
            VALUES ('delete', old.rowid, old.content);
        INSERT INTO direct_messages_fts (rowid, content) VALUES (new.rowid, new.content);
    END;
    """,
    # Direct messages share files as room messages do: the message records its file (one
    # file, one message), and a file's direct message is found through that index.
    """
    ALTER TABLE direct_messages ADD COLUMN message_type TEXT NOT NULL DEFAULT 'text';
    ALTER TABLE direct_messages ADD COLUMN attachment_id TEXT;
    CREATE UNIQUE INDEX direct_messages_attachment ON direct_messages (attachment_id)
        WHERE attachment_id IS NOT NULL;
    """,
    # Issue 18: clientIds are unique per user within an hour of created_at (base.DEDUPE_HOUR_SQL),
    # so random clientIds take random inserts only in the current hour's part of the index.
    """
    DROP INDEX messages_client_user;
    CREATE UNIQUE INDEX messages_client_hour
        ON messages (substr(created_at, 1, 13), client_id, user_id) WHERE client_id IS NOT NULL;
    DROP INDEX direct_messages_client_sender;
    CREATE UNIQUE INDEX direct_messages_client_hour
        ON direct_messages (substr(created_at, 1, 13), client_id, sender_id)
        WHERE client_id IS NOT NULL;
    """,
    # The full-text indexes without their per-row token counts (columnsize=0): one write
    # less per stored message on the writer thread; bm25 counts a result's tokens instead.
    """
    DROP TABLE messages_fts;
    CREATE VIRTUAL TABLE messages_fts USING fts5(
        content, content='messages', content_rowid='rowid', columnsize=0,
        tokenize='unicode61 remove_diacritics 2'
    );
    INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');
    DROP TABLE direct_messages_fts;
    CREATE VIRTUAL TABLE direct_messages_fts USING fts5(
        content, content='direct_messages', content_rowid='rowid', columnsize=0,
        tokenize='unicode61 remove_diacritics 2'
    );
    INSERT INTO direct_messages_fts (direct_messages_fts) VALUES ('rebuild');
    """,
]
"""Schema scripts; script ``i`` brings the database to ``PRAGMA user_version = i + 1``."""


# Row fields that are not columns of the row's table (each query adds its own).
_COMPUTED = ("member_count", "dm_id")


def _columns(row_type: type, alias: str = "") -> str:
    return ", ".join(alias + f.name for f in fields(row_type) if f.name not in _COMPUTED)


_USER_SELECT = f"SELECT {_columns(UserRow)} FROM users"
_ROOM_SELECT = (
    f"SELECT {_columns(RoomRow, 'r.')},"
    " (SELECT COUNT(*) FROM room_members m WHERE m.room_id = r.id) FROM rooms r"
)
_MESSAGE_SELECT = f"SELECT {_columns(MessageRow)} FROM messages"
_DM_SELECT = f"SELECT {_columns(DirectMessageRow)} FROM direct_messages"
_FILE_SELECT = (
    f"SELECT {_columns(FileRow, 'f.')},"
    " (SELECT d.id FROM direct_messages d WHERE d.attachment_id = f.id)"
    " FROM files f WHERE f.id = ?"
)

# The clientIds of the window (read once at start for the filter of acks.Acks).
_WINDOW_KEYS_SQL = {
    table: f"SELECT {sender}, client_id FROM {table}"
    f" WHERE {DEDUPE_HOUR_SQL} {DEDUPE_HOURS_IN} AND client_id IS NOT NULL"
    for table, sender in (("messages", "user_id"), ("direct_messages", "sender_id"))
}

# The history queries, kept apart so tests can check their plans use the (room_id, seq)
# and (pair, seq) indexes: O(log n + page) whatever the history length.
PAGE_SQL: dict[str, str] = {
    "latest": f"{_MESSAGE_SELECT} WHERE room_id = ? ORDER BY seq DESC LIMIT ?",
    "before": f"{_MESSAGE_SELECT} WHERE room_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
    "after": f"{_MESSAGE_SELECT} WHERE room_id = ? AND seq > ? ORDER BY seq LIMIT ?",
    "dm_latest": f"{_DM_SELECT} WHERE pair = ? ORDER BY seq DESC LIMIT ?",
    "dm_before": f"{_DM_SELECT} WHERE pair = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
}


def match_expression(words: list[str]) -> str:
    """The FTS5 expression of messages holding every word: each one quoted (a ``"`` in a
    word doubled), so no FTS5 syntax is ever read from it."""
    return " ".join('"' + word.replace('"', '""') + '"' for word in words)


def _room_row(row: tuple[Any, ...]) -> RoomRow:
    return RoomRow(row[0], row[1], row[2], bool(row[3]), row[4], row[5], row[6])


def _connect(config: StorageConfig, synchronous: str) -> apsw.Connection:
    conn = apsw.Connection(str(config.path))
    conn.set_busy_timeout(BUSY_TIMEOUT_MS)
    mode = conn.pragma("journal_mode", "wal")
    if mode != "wal":
        log.warning("%s: journal_mode is %r, not WAL", config.path, mode)
    conn.pragma("synchronous", synchronous)
    return conn


# --------------------------------------------------------------------------- reads

READ_ERROR_SECONDS = 60.0
"""How long a failed read (a corrupt page, an I/O error) keeps ``/healthz`` degraded."""


def _read(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """A serving read: a storage failure is noted for /healthz, logged, and answered as
    StorageUnavailable (503 / ``storage_unavailable``) instead of an internal error."""

    @functools.wraps(method)
    async def read(self: SqliteStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(self, *args, **kwargs)
        except apsw.Error as exc:
            self.note_read_failure(method.__name__, exc)
            raise StorageUnavailable("Storage read failed") from exc

    return read


class SqliteStore:
    """The reader connection: schema set-up, start-up state and the server's reads.

    Used on the event-loop thread only; every query is a short indexed lookup. The reads
    the server makes after start-up are coroutines (the :class:`~fastchat.storage.base.Store`
    protocol, which a network database needs); here they answer without suspending.
    """

    _db: apsw.Connection

    def __init__(self, config: StorageConfig) -> None:
        self._config = config
        self._read_error: str | None = None
        self._read_failed_at = -READ_ERROR_SECONDS

    def note_read_failure(self, read: str, exc: apsw.Error) -> None:
        """Remember (and log) a failed read."""
        self._read_error = _describe(exc)
        self._read_failed_at = time.monotonic()
        log.error("storage read %s failed (%s): %s", read, self._config.path, self._read_error)

    def recent_read_error(self) -> str | None:
        """The last read failure, if one happened in the last :data:`READ_ERROR_SECONDS`."""
        if time.monotonic() - self._read_failed_at < READ_ERROR_SECONDS:
            return self._read_error
        return None

    def open(self) -> StartupState:
        """Create the folder and database, migrate, and consume the clean-shutdown marker."""
        try:
            return self._open()
        except apsw.Error as exc:
            raise StorageError(f"{self._config.path}: {_describe(exc)}") from exc

    def _open(self) -> StartupState:
        self._config.path.parent.mkdir(parents=True, exist_ok=True)
        # This connection's only writes (migrations, the marker) must be durable whatever
        # the configured level, so it always syncs fully.
        self._db = _connect(self._config, "full")
        fresh = self._migrate()
        row = self._one("SELECT value FROM meta WHERE key = ?", (_CLEAN_KEY,))
        # A database created just now cannot have lost anything: report it as clean.
        clean = fresh or (row is not None and row[0] == "1")
        self._db.execute("DELETE FROM meta WHERE key = ?", (_CLEAN_KEY,))
        rooms = self._db.execute(
            "SELECT r.id, (SELECT MAX(seq) FROM messages WHERE room_id = r.id) FROM rooms r"
        ).fetchall()
        max_dm = self._db.execute("SELECT MAX(seq) FROM direct_messages").fetchall()[0][0]
        return StartupState(
            clean=clean,
            max_room_seq={room_id: seq or 0 for room_id, seq in rooms},
            max_dm_seq=max_dm or 0,
        )

    def _migrate(self) -> bool:
        """Apply pending migrations; True when the database was created by this call."""
        version = self._db.pragma("user_version")
        if version > len(MIGRATIONS):
            raise StorageError(
                f"{self._config.path}: schema version {version} is newer than this "
                f"fastchat supports ({len(MIGRATIONS)}): upgrade fastchat"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self._db:
                self._db.execute(script)
                self._db.pragma("user_version", number)
            log.info("%s: applied schema migration %d", self._config.path, number)
        return version == 0

    def mark_clean_shutdown(self) -> None:
        """Durably record a clean shutdown; call once the writer has drained and closed."""
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, '1')", (_CLEAN_KEY,))

    def close(self) -> None:
        """Close the reader connection."""
        self._db.close()

    def _one(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        rows = self._db.execute(sql, params).fetchall()
        return rows[0] if rows else None

    @_read
    async def user_by_id(self, user_id: str) -> UserRow | None:
        """The user with this id."""
        row = self._one(f"{_USER_SELECT} WHERE id = ?", (user_id,))
        return UserRow(*row) if row else None

    @_read
    async def user_by_name(self, username: str) -> UserRow | None:
        """The user with this username, compared case-insensitively."""
        row = self._one(f"{_USER_SELECT} WHERE username = ?", (username,))
        return UserRow(*row) if row else None

    @_read
    async def user_by_login(self, name_or_email: str) -> UserRow | None:
        """The user whose username (first) or email matches, case-insensitively."""
        user = await self.user_by_name(name_or_email)
        if user is not None:
            return user
        row = self._one(f"{_USER_SELECT} WHERE email = ?", (name_or_email,))
        return UserRow(*row) if row else None

    def all_rooms(self) -> list[RoomRow]:
        """Every room, ordered by name."""
        rows = self._db.execute(f"{_ROOM_SELECT} ORDER BY r.name COLLATE NOCASE, r.id")
        return [_room_row(row) for row in rows.fetchall()]

    def room_member_ids(self, room_id: str) -> set[str]:
        """Ids of the members of ``room_id``."""
        rows = self._db.execute("SELECT user_id FROM room_members WHERE room_id = ?", (room_id,))
        return {row[0] for row in rows.fetchall()}

    @_read
    async def messages_page(
        self, room_id: str, *, before: int | None = None, after: int | None = None, limit: int
    ) -> list[MessageRow]:
        """Up to ``limit`` messages of a room, oldest first.

        With ``before``: the newest ones with ``seq < before``; with ``after``: the oldest
        ones with ``seq > after``; with neither: the newest ones.
        """
        if before is not None and after is not None:
            raise ValueError("messages_page takes before or after, not both")
        if limit <= 0:
            return []
        if after is not None:
            rows = self._db.execute(PAGE_SQL["after"], (room_id, after, limit)).fetchall()
            return [MessageRow(*row) for row in rows]
        if before is not None:
            rows = self._db.execute(PAGE_SQL["before"], (room_id, before, limit)).fetchall()
        else:
            rows = self._db.execute(PAGE_SQL["latest"], (room_id, limit)).fetchall()
        return [MessageRow(*row) for row in reversed(rows)]

    @_read
    async def message_by_id(self, message_id: str) -> MessageRow | None:
        """The message with this id."""
        row = self._one(f"{_MESSAGE_SELECT} WHERE id = ?", (message_id,))
        return MessageRow(*row) if row else None

    def client_keys(self) -> Iterator[str]:
        """``user \0 clientId`` of every message and (``user \0 dm:clientId``) DM stored in
        the clientId window (:func:`~fastchat.storage.base.dedupe_hours`)."""
        hours = dedupe_hours()
        for user_id, client_id in self._db.execute(_WINDOW_KEYS_SQL["messages"], hours):
            yield f"{user_id}\0{client_id}"
        for sender_id, client_id in self._db.execute(_WINDOW_KEYS_SQL["direct_messages"], hours):
            yield f"{sender_id}\0dm:{client_id}"

    @_read
    async def message_by_client_id(self, user_id: str, client_id: str) -> MessageRow | None:
        """The message ``user_id`` sent with this client id in the clientId window (for
        idempotent retries)."""
        row = self._one(
            f"{_MESSAGE_SELECT} WHERE {DEDUPE_HOUR_SQL} {DEDUPE_HOURS_IN} AND client_id = ?"
            " AND user_id = ?",
            (*dedupe_hours(), client_id, user_id),
        )
        return MessageRow(*row) if row else None

    @_read
    async def dm_page(
        self, user_a: str, user_b: str, *, before: int | None = None, limit: int
    ) -> list[DirectMessageRow]:
        """Up to ``limit`` direct messages between two users, the newest with
        ``seq < before`` (or the newest at all), oldest first."""
        if limit <= 0:
            return []
        pair = dm_pair(user_a, user_b)
        if before is None:
            rows = self._db.execute(PAGE_SQL["dm_latest"], (pair, limit)).fetchall()
        else:
            rows = self._db.execute(PAGE_SQL["dm_before"], (pair, before, limit)).fetchall()
        return [DirectMessageRow(*row) for row in reversed(rows)]

    @_read
    async def dm_by_id(self, dm_id: str) -> DirectMessageRow | None:
        """The direct message with this id."""
        row = self._one(f"{_DM_SELECT} WHERE id = ?", (dm_id,))
        return DirectMessageRow(*row) if row else None

    @_read
    async def dm_by_client_id(self, sender_id: str, client_id: str) -> DirectMessageRow | None:
        """The direct message ``sender_id`` sent with this client id in the clientId window."""
        row = self._one(
            f"{_DM_SELECT} WHERE {DEDUPE_HOUR_SQL} {DEDUPE_HOURS_IN} AND client_id = ?"
            " AND sender_id = ?",
            (*dedupe_hours(), client_id, sender_id),
        )
        return DirectMessageRow(*row) if row else None

    def active_mutes(self, now: float | None = None) -> list[tuple[str, str, float]]:
        """``(room_id, user_id, until)`` of every mute still running at ``now``."""
        now = time.time() if now is None else now
        rows = self._db.execute("SELECT room_id, user_id, until FROM mutes WHERE until > ?", (now,))
        return [(row[0], row[1], row[2]) for row in rows.fetchall()]

    @_read
    async def audit_entries(self, *, limit: int, before_id: int | None = None) -> list[AuditRow]:
        """Up to ``limit`` audit entries with ``id < before_id`` (if given), newest first."""
        if limit <= 0:
            return []
        sql = f"SELECT {_columns(AuditRow)} FROM audit_log"
        if before_id is None:
            rows = self._db.execute(f"{sql} ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._db.execute(
                f"{sql} WHERE id < ? ORDER BY id DESC LIMIT ?", (before_id, limit)
            )
        return [AuditRow(*row) for row in rows.fetchall()]

    @_read
    async def file(self, file_id: str) -> FileRow | None:
        """The uploaded file's record."""
        row = self._one(_FILE_SELECT, (file_id,))
        return FileRow(*row) if row else None

    def upload_usage(self) -> dict[str, int]:
        """Bytes of uploaded files per uploader."""
        rows = self._db.execute("SELECT uploader_id, SUM(size) FROM files GROUP BY uploader_id")
        return {row[0]: row[1] for row in rows.fetchall()}

    @_read
    async def messages_by_user(self, user_id: str) -> list[MessageRow]:
        """Every room message of a user, oldest first (a full scan: for exports only)."""
        rows = self._db.execute(
            f"{_MESSAGE_SELECT} WHERE user_id = ? ORDER BY created_at, id", (user_id,)
        )
        return [MessageRow(*row) for row in rows.fetchall()]

    @_read
    async def dms_of_user(self, user_id: str) -> list[DirectMessageRow]:
        """Every direct message a user sent or received, oldest first (for exports only)."""
        rows = self._db.execute(
            f"{_DM_SELECT} WHERE sender_id = ? OR recipient_id = ? ORDER BY seq",
            (user_id, user_id),
        )
        return [DirectMessageRow(*row) for row in rows.fetchall()]

    @_read
    async def user_like(self, name_key: str, email_key: str | None) -> UserRow | None:
        """A user whose username or email has this confusable skeleton."""
        row = self._one(
            f"{_USER_SELECT} WHERE name_key = ? OR email_key = ? LIMIT 1", (name_key, email_key)
        )
        return UserRow(*row) if row else None

    def users_without_keys(self) -> list[tuple[str, str, str | None]]:
        """``(id, username, email)`` of the accounts made before skeletons were stored."""
        rows = self._db.execute("SELECT id, username, email FROM users WHERE name_key IS NULL")
        return [(row[0], row[1], row[2]) for row in rows.fetchall()]

    @_read
    async def users_page(self, *, limit: int, after: str | None = None) -> list[UserRow]:
        """Up to ``limit`` users by username, those after ``after`` (a username) if given."""
        rows = self._db.execute(
            f"{_USER_SELECT} WHERE username > ? ORDER BY username LIMIT ?", (after or "", limit)
        )
        return [UserRow(*row) for row in rows.fetchall()]

    @_read
    async def admin_count(self) -> int:
        """How many accounts are admins (and not banned)."""
        row = self._one(
            "SELECT COUNT(*) FROM users WHERE role = 'admin'"
            " AND (banned_until IS NULL OR banned_until <= ?)",
            (time.time(),),
        )
        return row[0] if row else 0

    @_read
    async def login_session(self, session_id: str) -> LoginSessionRow | None:
        """The login session with this id."""
        row = self._one(
            f"SELECT {_columns(LoginSessionRow)} FROM login_sessions WHERE id = ?", (session_id,)
        )
        return LoginSessionRow(*row) if row else None

    @_read
    async def refresh_token_session(self, token_hash: str) -> str | None:
        """The id of the session a refresh token (by hash) was issued to, current or not."""
        row = self._one("SELECT session_id FROM refresh_tokens WHERE token_hash = ?", (token_hash,))
        return row[0] if row else None

    def last_user_change(self) -> int:
        """The id of the newest entry of the account change log (0: none)."""
        row = self._one("SELECT MAX(id) FROM user_changes", ())
        return (row[0] or 0) if row else 0

    @_read
    async def user_changes_after(self, change_id: int) -> list[tuple[int, str]]:
        """``(change id, user id)`` of the account changes after ``change_id``, oldest first."""
        rows = self._db.execute(
            "SELECT id, user_id FROM user_changes WHERE id > ? ORDER BY id LIMIT 1000",
            (change_id,),
        )
        return [(row[0], row[1]) for row in rows.fetchall()]
    @_read
    async def members_by_last_seen(self, room_id: str, *, limit: int) -> list[UserRow]:
        """Up to ``limit`` members of a room, the most recently seen first."""
        rows = self._db.execute(
            f"SELECT {_columns(UserRow, 'u.')} FROM room_members m JOIN users u ON u.id = m.user_id"
            " WHERE m.room_id = ? ORDER BY u.last_seen DESC LIMIT ?",
            (room_id, limit),
        )
        return [UserRow(*row) for row in rows.fetchall()]

    @_read
    async def read_markers(self, user_id: str) -> dict[str, int]:
        """The user's read markers: conversation (room id or DM pair) -> seq."""
        rows = self._db.execute(
            "SELECT conversation, seq FROM read_markers WHERE user_id = ?", (user_id,)
        )
        return dict(rows.fetchall())

    @_read
    async def conversation_markers(self, conversation: str, user_ids: list[str]) -> dict[str, int]:
        """The markers of ``user_ids`` in one conversation: user id -> seq (those with one)."""
        rows = self._db.execute(
            "SELECT user_id, seq FROM read_markers WHERE conversation = ?"
            " AND user_id IN (SELECT value FROM json_each(?))",
            (conversation, orjson.dumps(user_ids).decode()),
        )
        return dict(rows.fetchall())

    @_read
    async def room_unread(
        self, room_id: str, user_id: str, after_seq: int, cap: int
    ) -> tuple[int, int]:
        """Live messages of others after ``after_seq`` (up to ``cap``), and how many of those
        mention ``user_id`` or the whole room."""
        row = self._one(
            "SELECT COUNT(*), COALESCE(SUM(mentions_room OR EXISTS ("
            "SELECT 1 FROM json_each(mentions) WHERE value = ?2)), 0) FROM ("
            "SELECT mentions, mentions_room FROM messages WHERE room_id = ?1 AND seq > ?3"
            " AND user_id != ?2 AND deleted_at IS NULL ORDER BY seq LIMIT ?4)",
            (room_id, user_id, after_seq, cap),
        )
        assert row is not None
        return row[0], row[1]

    @_read
    async def conversations(
        self, user_id: str, *, limit: int, unread_cap: int
    ) -> list[ConversationRow]:
        """The user's ``limit`` most recent DM conversations, newest first."""
        pairs = self._db.execute(
            "SELECT pair, MAX(last) FROM ("
            "SELECT pair, MAX(seq) AS last FROM direct_messages WHERE sender_id = ?1 GROUP BY pair"
            " UNION ALL SELECT pair, MAX(seq) FROM direct_messages WHERE recipient_id = ?1"
            " GROUP BY pair) GROUP BY pair ORDER BY 2 DESC LIMIT ?2",
            (user_id, limit),
        ).fetchall()
        markers = await self.read_markers(user_id)
        conversations = []
        for pair, last_seq in pairs:
            last = self._one(f"{_DM_SELECT} WHERE seq = ?", (last_seq,))
            assert last is not None
            marker = markers.get(pair, 0)
            unread = self._one(
                "SELECT COUNT(*) FROM (SELECT 1 FROM direct_messages WHERE pair = ?"
                " AND recipient_id = ? AND seq > ? AND deleted_at IS NULL LIMIT ?)",
                (pair, user_id, marker, unread_cap),
            )
            assert unread is not None
            a, b = pair.split(":")
            conversations.append(
                ConversationRow(
                    b if a == user_id else a, DirectMessageRow(*last), marker, unread[0]
                )
            )
        return conversations

    @_read
    async def reactions(self, message_ids: list[str]) -> dict[str, list[tuple[str, str]]]:
        """``(emoji, user_id)`` of each message's reactions, oldest first."""
        rows = self._db.execute(
            "SELECT message_id, emoji, user_id FROM reactions"
            " WHERE message_id IN (SELECT value FROM json_each(?)) ORDER BY created_at",
            (orjson.dumps(message_ids).decode(),),
        )
        found: dict[str, list[tuple[str, str]]] = {}
        for message_id, emoji, user_id in rows:
            found.setdefault(message_id, []).append((emoji, user_id))
        return found

    @_read
    async def replies_page(
        self, message_id: str, *, before: int | None = None, limit: int
    ) -> list[MessageRow]:
        """Up to ``limit`` live replies to a message, the newest with ``seq < before`` (or
        the newest at all), oldest first."""
        rows = self._db.execute(
            f"{_MESSAGE_SELECT} WHERE reply_to = ? AND seq < ? AND deleted_at IS NULL"
            " ORDER BY seq DESC LIMIT ?",
            (message_id, MAX_SEQ if before is None else before, limit),
        ).fetchall()
        return [MessageRow(*row) for row in reversed(rows)]

    @_read
    async def search_messages(
        self, words: list[str], room_ids: list[str], *, before_id: str | None, limit: int
    ) -> list[SearchHit]:
        """The ``limit`` newest live messages of ``room_ids`` that contain every one of
        ``words`` (with an id below ``before_id``), newest first, with their rank.

        Newest first rather than best overall: FTS5 walks its index by rowid and stops at
        ``limit``, where ranking every match of a common word would read all of them.
        """
        rows = self._search(
            "messages",
            _columns(MessageRow, "t."),
            "t.room_id IN (SELECT value FROM json_each(?))",
            orjson.dumps(room_ids).decode(),
            words,
            before_id,
            limit,
        )
        return [SearchHit(MessageRow(*row[:-2]), row[-2], row[-1]) for row in rows]

    @_read
    async def search_direct(
        self, words: list[str], user_id: str, *, before_id: str | None, limit: int
    ) -> list[SearchHit]:
        """:meth:`search_messages` over the live direct messages to or from ``user_id``."""
        rows = self._search(
            "direct_messages",
            _columns(DirectMessageRow, "t."),
            "? IN (t.sender_id, t.recipient_id)",
            user_id,
            words,
            before_id,
            limit,
        )
        return [SearchHit(DirectMessageRow(*row[:-2]), row[-2], row[-1]) for row in rows]

    def _search(
        self,
        table: str,
        columns: str,
        visible: str,
        visible_param: str,
        words: list[str],
        before_id: str | None,
        limit: int,
    ) -> list[tuple[Any, ...]]:
        fts = f"{table}_fts"
        bound = MAX_SEQ
        if before_id is not None:
            found = self._one(
                f"SELECT rowid FROM {table} WHERE id >= ? ORDER BY id LIMIT 1", (before_id,)
            )
            bound = MAX_SEQ if found is None else found[0]
        return self._db.execute(
            f"SELECT {columns}, snippet({fts}, 0, '{SNIPPET_OPEN}', '{SNIPPET_CLOSE}', '…', 16),"
            f" {fts}.rank FROM {fts} JOIN {table} t ON t.rowid = {fts}.rowid"
            f" WHERE {fts} MATCH ? AND {fts}.rowid < ? AND t.id < ? AND {visible}"
            f" AND t.deleted_at IS NULL ORDER BY {fts}.rowid DESC LIMIT ?",
            (
                match_expression(words),
                bound,
                "\uffff" if before_id is None else before_id,
                visible_param,
                limit,
            ),
        ).fetchall()


# --------------------------------------------------------------------------- write operations

STATEMENTS: dict[str, str] = {
    "insert_user": "INSERT INTO users (id, username, email, password_hash, avatar_url, role,"
    " created_at, last_seen, name_key, email_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "set_user_keys": "UPDATE users SET name_key = ?, email_key = ? WHERE id = ?",
    "set_user_role": "UPDATE users SET role = ? WHERE id = ?",
    "set_user_ban": "UPDATE users SET banned_until = ?, ban_reason = ? WHERE id = ?",
    "touch_last_seen": "UPDATE users SET last_seen = ? WHERE id = ?",
    "insert_room": "INSERT INTO rooms (id, name, description, is_private, created_by,"
    " created_at) VALUES (?, ?, ?, ?, ?, ?)",
    # ON CONFLICT DO NOTHING rather than OR IGNORE, which would also hide a bad role.
    "add_member": "INSERT INTO room_members (room_id, user_id, role, joined_at)"
    " VALUES (?, ?, ?, ?) ON CONFLICT (room_id, user_id) DO NOTHING",
    "remove_member": "DELETE FROM room_members WHERE room_id = ? AND user_id = ?",
    "insert_message": "INSERT INTO messages (id, room_id, seq, user_id, content, message_type,"
    " reply_to, client_id, attachment_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "edit_message": "UPDATE messages SET content = ?, edited_at = ?"
    " WHERE id = ? AND deleted_at IS NULL",
    "delete_message": "UPDATE messages SET content = '', deleted_at = ? WHERE id = ?",
    "insert_dm": "INSERT INTO direct_messages (id, seq, pair, sender_id, recipient_id, content,"
    " client_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "insert_dm_file": "INSERT INTO direct_messages (id, seq, pair, sender_id, recipient_id,"
    " content, client_id, created_at, message_type, attachment_id)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "set_mute": "INSERT INTO mutes (room_id, user_id, until) VALUES (?, ?, ?)"
    " ON CONFLICT (room_id, user_id) DO UPDATE SET until = excluded.until",
    "clear_mute": "DELETE FROM mutes WHERE room_id = ? AND user_id = ?",
    "insert_audit": "INSERT INTO audit_log (at, actor_id, action, target_user_id, room_id,"
    " reason, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
    "insert_file": "INSERT INTO files (id, uploader_id, name, size, content_type, created_at,"
    " room_id, message_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "attach_file": "UPDATE files SET room_id = ?, message_id = ? WHERE id = ?",
    "set_password": "UPDATE users SET password_hash = ? WHERE id = ?",
    "insert_login_session": "INSERT INTO login_sessions (id, user_id, token_hash, created_at,"
    " expires_at) VALUES (?, ?, ?, ?, ?)",
    "add_refresh_token": "INSERT INTO refresh_tokens (token_hash, session_id) VALUES (?, ?)",
    "rotate_refresh_token": "UPDATE login_sessions SET token_hash = ?, expires_at = ?"
    " WHERE id = ? AND revoked_at IS NULL",
    "revoke_login_session": "UPDATE login_sessions SET revoked_at = ?"
    " WHERE id = ? AND revoked_at IS NULL",
    "revoke_user_sessions": "UPDATE login_sessions SET revoked_at = ?"
    " WHERE user_id = ? AND id IS NOT ? AND revoked_at IS NULL",
    "prune_user_changes": "DELETE FROM user_changes WHERE at < ?",
    "remove_user_memberships": "DELETE FROM room_members WHERE user_id = ?",
    "delete_user_messages": "UPDATE messages SET content = '', deleted_at = ?"
    " WHERE user_id = ? AND deleted_at IS NULL",
    "delete_user_dms": "DELETE FROM direct_messages WHERE sender_id = ?",
    "delete_user": "DELETE FROM users WHERE id = ?",
    "set_read_marker": "INSERT INTO read_markers (user_id, conversation, seq) VALUES (?, ?, ?)"
    " ON CONFLICT (user_id, conversation) DO UPDATE SET seq = max(seq, excluded.seq)",
    "add_reaction": "INSERT INTO reactions (message_id, emoji, user_id, created_at)"
    " VALUES (?, ?, ?, ?) ON CONFLICT (message_id, emoji, user_id) DO NOTHING",
    "remove_reaction": "DELETE FROM reactions WHERE message_id = ? AND emoji = ? AND user_id = ?",
    "count_reply": "UPDATE messages SET reply_count = MAX(reply_count + ?, 0) WHERE id = ?",
    "set_mentions": "UPDATE messages SET mentions = ?, mentions_room = ? WHERE id = ?",
    "set_dm_reply": "UPDATE direct_messages SET reply_to = ? WHERE id = ?",
    "edit_dm": "UPDATE direct_messages SET content = ?, edited_at = ? WHERE id = ?",
    "delete_dm": "UPDATE direct_messages SET content = '', deleted_at = ? WHERE id = ?",
}


def _rows_sql(name: str) -> str:
    """The INSERT of ``name`` for many rows at once, bound as one JSON array of rows."""
    insert = STATEMENTS[name]
    columns = insert[insert.index("(") + 1 : insert.index(")")]
    values = ", ".join(f"jsonb_extract(value, '$[{i}]')" for i in range(columns.count(",") + 1))
    return f"{insert[: insert.index(' VALUES')]} SELECT {values} FROM jsonb_each(jsonb(?))"


# The writer's hot inserts: a run of them is one statement, so one SQLite call (executemany
# makes one per row, and the writer thread gives the GIL up and waits for it around each).
_ROWS_SQL = {name: _rows_sql(name) for name in ("insert_message", "insert_dm")}


# --------------------------------------------------------------------------- the writer

# Errors that belong to one operation (a broken constraint, or a malformed op: a bug in the
# caller that must not stall everyone else's writes). Every other apsw.Error is a storage
# failure, retried until the disk is writable again.
_OP_ERRORS = (
    apsw.ConstraintError,
    apsw.BindingsError,
    apsw.MismatchError,
    apsw.TooBigError,
    apsw.RangeError,
    apsw.SQLError,
    KeyError,
    TypeError,
    ValueError,
    OverflowError,
)


def _write_group(conn: apsw.Connection, name: str, params: list[tuple[Any, ...]]) -> None:
    """Run one statement for consecutive ops of the same kind."""
    rows_sql = _ROWS_SQL.get(name)
    if rows_sql is None:
        conn.executemany(STATEMENTS[name], params)
    else:
        conn.execute(rows_sql, (orjson.dumps(params).decode(),))


def _describe(exc: apsw.Error) -> str:
    kind = {
        apsw.FullError: "disk full",
        apsw.IOError: "I/O error",
        apsw.BusyError: "database busy",
        apsw.LockedError: "database locked",
        apsw.ReadOnlyError: "read-only",
        apsw.CantOpenError: "cannot open",
        apsw.CorruptError: "database corrupt",
    }.get(type(exc), type(exc).__name__)
    return f"{kind}: {exc}"


_UNIQUE = (apsw.SQLITE_CONSTRAINT_UNIQUE, apsw.SQLITE_CONSTRAINT_PRIMARYKEY)


def _op_error(exc: Exception) -> Exception:
    """An op's failure as callers see it: a broken uniqueness rule becomes Duplicate."""
    if isinstance(exc, apsw.ConstraintError) and exc.extendedresult in _UNIQUE:
        return Duplicate(str(exc))
    return exc


def _rollback(conn: apsw.Connection) -> None:
    if not conn.in_transaction:  # SQLite rolls back by itself after some I/O errors
        return
    try:
        conn.execute("ROLLBACK")
    except apsw.Error as exc:
        # The next attempt's BEGIN fails while the transaction lingers and lands here again.
        log.warning("storage writer: rollback failed: %s", _describe(exc))


class _Checkpointer:
    """Copies the WAL into the database on its own thread and connection.

    SQLite's automatic checkpoint runs inside a COMMIT once the WAL holds 1,000 pages, so
    the writer would stall for as long as it takes to write those pages into the database
    file and sync it. Instead the writer wakes this thread once the WAL is that long, and it
    runs a PASSIVE checkpoint next to the writer (at most every :data:`CHECKPOINT_INTERVAL`).

    SQLite starts the WAL over only once every frame has been copied, and under sustained
    load a passive checkpoint always ends a few frames behind the writer. So once the WAL
    holds :data:`WAL_RESTART_PAGES`, the writer copies what is left itself
    (:meth:`finish`), between two batches.
    """

    def __init__(self, config: StorageConfig) -> None:
        self._conn = _connect(config, config.synchronous)
        self._lock = threading.Lock()  # one checkpoint at a time, of either connection
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="fastchat-checkpointer", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Start a checkpoint soon (unless one is already due)."""
        if not self._wake.is_set():
            self._wake.set()

    def finish(self, writer: apsw.Connection, wait: bool) -> None:
        """Copy what is left of the WAL on the writer's connection. If the thread is copying
        right now, wait for it, or (``wait`` false) leave it to the writer's next batch."""
        if not self._lock.acquire(blocking=wait):
            return
        try:
            self._checkpoint(writer)
        finally:
            self._lock.release()

    def close(self) -> None:
        """Stop the thread and close its connection."""
        self._stop.set()
        self._wake.set()
        self._thread.join()
        self._conn.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                self._checkpoint(self._conn)
            self._stop.wait(CHECKPOINT_INTERVAL)

    def _checkpoint(self, conn: apsw.Connection) -> None:
        # A failed checkpoint loses nothing (the frames stay in the WAL): log once, retry later.
        try:
            conn.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_PASSIVE)
        except apsw.Error as exc:
            if not self._failing:
                self._failing = True
                log.warning("storage checkpoint failed, retrying later: %s", _describe(exc))
            return
        self._failing = False


class WriteBehind(BatchWriter):
    """The SQLite writer: its own connection, and the checkpointer that keeps the WAL short
    (the queue, batches and retries are :class:`~fastchat.storage.writebehind.BatchWriter`'s).
    """

    _failures = apsw.Error

    def __init__(self, config: StorageConfig, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(config, loop)
        self._max_page_count: int | None = None
        self._conn: apsw.Connection | None = None
        self._checkpointer: _Checkpointer | None = None
        self._wal_pages = 0  # the WAL's length after the last commit

    def start(self) -> None:
        """Open the writer connection and start the writer thread (after ``SqliteStore.open``)."""
        self._conn = _connect(self._config, self._config.synchronous)
        # Replaces SQLite's automatic checkpoint: _Checkpointer does it, off this thread.
        self._conn.set_wal_hook(self._wal_committed)
        self._checkpointer = _Checkpointer(self._config)
        super().start()

    def set_max_page_count(self, pages: int) -> None:
        """Test hook: cap the database size (SQLite then fails writes with SQLITE_FULL).

        Applied by the writer thread before its next write attempt; a cap below the
        current size means "no growth at all".
        """
        self._max_page_count = pages

    def _close_connections(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
        if self._conn is not None:
            self._conn.close()

    def _failure_context(self) -> str:
        return f" ({self._config.path})"

    # -- writer thread

    def _wal_committed(self, _conn: apsw.Connection, _db: str, pages: int) -> int:
        """SQLite's WAL hook, called in each COMMIT with the WAL's length in pages."""
        self._wal_pages = pages
        return apsw.SQLITE_OK

    def _after_batch(self) -> None:
        """Wake the checkpointer once the WAL is long, and finish its copy if too long."""
        checkpointer = self._checkpointer
        assert checkpointer is not None and self._conn is not None
        pages = self._wal_pages
        if pages >= WAL_RESTART_PAGES:
            # Past twice the limit the thread is not keeping up: wait for it, so the WAL
            # stays bounded (the writer then pays for the copy, as SQLite's own would).
            checkpointer.finish(self._conn, wait=pages >= 2 * WAL_RESTART_PAGES)
        if pages >= CHECKPOINT_PAGES:
            checkpointer.wake()

    def _attempt(self, batch: list[Entry]) -> dict[int, BaseException] | None:
        conn = self._conn
        assert conn is not None
        if self._max_page_count is not None:
            conn.pragma("max_page_count", self._max_page_count)
            self._max_page_count = None
        return self._write(conn, batch)

    def _failed(self, exc: BaseException) -> str:
        assert self._conn is not None and isinstance(exc, apsw.Error)
        _rollback(self._conn)
        return _describe(exc)

    def _write(self, conn: apsw.Connection, batch: list[Entry]) -> dict[int, BaseException] | None:
        groups = [
            (name, [entry[0][1] for entry in entries])
            for name, entries in groupby(batch, key=entry_name)
        ]
        try:
            if len(groups) == 1 and groups[0][0] in _ROWS_SQL:
                # One statement is its own transaction: the whole batch is one SQLite call.
                _write_group(conn, *groups[0])
                return None
            conn.execute("BEGIN IMMEDIATE")
            for name, params in groups:
                _write_group(conn, name, params)
        except _OP_ERRORS:
            _rollback(conn)
            return self._write_isolated(conn, batch)
        conn.execute("COMMIT")
        return None

    def _write_isolated(
        self, conn: apsw.Connection, batch: list[Entry]
    ) -> dict[int, BaseException]:
        """Re-run a batch op by op, each in a savepoint, so only the failing ops fail."""
        errors: dict[int, BaseException] = {}
        conn.execute("BEGIN IMMEDIATE")
        for index, (op, _) in enumerate(batch):
            conn.execute("SAVEPOINT op")
            try:
                conn.execute(STATEMENTS[op[0]], op[1])
            except _OP_ERRORS as exc:
                conn.execute("ROLLBACK TO op")
                errors[index] = _op_error(exc)
            conn.execute("RELEASE op")
        conn.execute("COMMIT")
        self.op_errors_total += len(errors)
        return errors
