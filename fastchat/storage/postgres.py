"""The PostgreSQL backend (psycopg 3): schema and migrations, reads, and the write-behind writer.

The only module that imports the PostgreSQL driver; it implements
:mod:`fastchat.storage.base` with the semantics of :mod:`fastchat.storage.sqlite`: the same
tables, the same migration numbers, ``UNIQUE (room_id, seq)`` and the clientId unique
indexes as the fence against a message stored twice.

Three kinds of connection per process:

* :class:`PostgresStore` opens a blocking one for the start-up reads (made once, before
  the server listens) and an asyncio one, made on first use, for the reads made while
  serving; a broken one is dropped and made again on the next read.
* :class:`PostgresWriteBehind` owns the writer's connection; the daemon thread that
  commits queued operations in batches, one transaction per batch, with the retry,
  backoff, ``healthy`` and ``overloaded`` semantics, is the SQLite writer's
  (:mod:`fastchat.storage.writebehind`): a failed batch is retried (reconnecting) until it
  commits, and nothing is acked before.

A run of room or direct messages is one binary COPY. Their ids are made by the server, so
an id already stored means a replay of a batch whose COMMIT reached the server but whose
answer was lost with the connection: the COPY then fails, and the op-by-op replay inserts
with ``ON CONFLICT (id) DO NOTHING``, storing nothing twice and failing nothing.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import fields
from itertools import groupby
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from fastchat.config import StorageConfig
from fastchat.errors import StorageUnavailable
from fastchat.storage.base import (
    DEDUPE_HOUR_SQL,
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

CONNECT_TIMEOUT_SECONDS = 5
_CLEAN_KEY = "clean_shutdown"
_VERSION_KEY = "schema_version"
_MIGRATION_LOCK = 0x66617374  # pg_advisory_xact_lock key: nodes starting together migrate once
_CHANGE_LOG_LOCK = 0x66617375  # taken by the triggers that append to user_changes
MAX_SEQ = 2**63 - 1
READ_ERROR_SECONDS = 60.0
"""How long a failed read keeps ``/healthz`` degraded (unless a read succeeds sooner)."""
SNIPPET_OPEN = "<mark>"
SNIPPET_CLOSE = "</mark>"
_SNIPPET = f'StartSel="{SNIPPET_OPEN}", StopSel="{SNIPPET_CLOSE}", MaxWords=16, MinWords=8'
"""ts_headline's options: matches wrapped as SQLite's snippets wrap them, up to 16 words."""
_MARKS = re.compile(f"({SNIPPET_OPEN}|{SNIPPET_CLOSE})")


def _fold_table() -> tuple[str, str]:
    """The Latin letters with diacritics and their plain letters, one for one: what FTS5's
    ``remove_diacritics`` ignores, for ``translate()`` (no extension needed)."""
    accented, plain = [], []
    for code in range(0xC0, 0x250):
        letter = chr(code)
        parts = unicodedata.normalize("NFD", letter)
        if len(parts) > 1 and parts[0].isascii() and all(map(unicodedata.combining, parts[1:])):
            accented.append(letter)
            plain.append(parts[0])
    return "".join(accented), "".join(plain)


_ACCENTED, _PLAIN = _fold_table()
_FOLD = str.maketrans(_ACCENTED, _PLAIN)
_FOLDED = f"translate(content, '{_ACCENTED}', '{_PLAIN}')"
"""A message's words as searched: diacritics removed (the same length as ``content``)."""

_NOW = """to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"""

MIGRATIONS: list[str] = [
    f"""
    CREATE TABLE users (
        id TEXT PRIMARY KEY,
        username TEXT NOT NULL,
        email TEXT,
        password_hash TEXT NOT NULL,
        avatar_url TEXT,
        role TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'moderator', 'admin')),
        created_at TEXT,
        last_seen TEXT,
        banned_until DOUBLE PRECISION,
        ban_reason TEXT
    );
    CREATE UNIQUE INDEX users_username ON users (lower(username));
    CREATE UNIQUE INDEX users_email ON users (lower(email));
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
    );
    CREATE INDEX room_members_user ON room_members (user_id);
    CREATE TABLE messages (
        id TEXT PRIMARY KEY,
        room_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
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
        seq BIGINT NOT NULL,
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
        until DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (room_id, user_id)
    );
    CREATE TABLE audit_log (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
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
        size BIGINT NOT NULL,
        content_type TEXT NOT NULL,
        created_at TEXT NOT NULL,
        room_id TEXT,
        message_id TEXT
    );
    INSERT INTO rooms (id, name, description, is_private, created_at) VALUES
        ('general', 'General', 'General discussion', 0, {_NOW}),
        ('random', 'Random', 'Random topics', 0, {_NOW}),
        ('tech', 'Tech Talk', 'Technology discussions', 0, {_NOW});
    """,
    # clientId first, as in SQLite's migration 2: time-ordered clientIds append at the end
    # of the index.
    """
    DROP INDEX messages_user_client;
    CREATE UNIQUE INDEX messages_client_user ON messages (client_id, user_id)
        WHERE client_id IS NOT NULL;
    DROP INDEX direct_messages_sender_client;
    CREATE UNIQUE INDEX direct_messages_client_sender ON direct_messages (client_id, sender_id)
        WHERE client_id IS NOT NULL;
    """,
    # As SQLite's migration 3: login sessions and the refresh tokens ever issued to them,
    # the account change log (filled by triggers whoever writes; every node polls it), and
    # the confusable skeletons of usernames and emails. The triggers take a lock held until
    # commit, so change ids are committed in order and a poller reading "after id N" skips
    # none (concurrent transactions could otherwise commit N+1 before N).
    f"""
    CREATE TABLE login_sessions (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        token_hash TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        revoked_at TEXT
    );
    CREATE INDEX login_sessions_user ON login_sessions (user_id);
    CREATE TABLE refresh_tokens (
        token_hash TEXT PRIMARY KEY,
        session_id TEXT NOT NULL
    );
    CREATE TABLE user_changes (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        user_id TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL DEFAULT extract(epoch FROM now())
    );
    CREATE FUNCTION note_user_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_advisory_xact_lock({_CHANGE_LOG_LOCK});
        IF TG_OP = 'DELETE' THEN
            INSERT INTO user_changes (user_id) VALUES (OLD.id);
        ELSE
            INSERT INTO user_changes (user_id) VALUES (NEW.id);
        END IF;
        RETURN NULL;
    END $$;
    CREATE FUNCTION note_session_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_advisory_xact_lock({_CHANGE_LOG_LOCK});
        INSERT INTO user_changes (user_id) VALUES (NEW.user_id);
        RETURN NULL;
    END $$;
    CREATE TRIGGER users_changed AFTER UPDATE OF username, password_hash, role, banned_until
        ON users FOR EACH ROW EXECUTE FUNCTION note_user_change();
    CREATE TRIGGER users_removed AFTER DELETE ON users
        FOR EACH ROW EXECUTE FUNCTION note_user_change();
    CREATE TRIGGER login_sessions_revoked AFTER UPDATE OF revoked_at ON login_sessions
        FOR EACH ROW EXECUTE FUNCTION note_session_change();
    ALTER TABLE users ADD COLUMN name_key TEXT;
    ALTER TABLE users ADD COLUMN email_key TEXT;
    CREATE INDEX users_name_key ON users (name_key);
    CREATE INDEX users_email_key ON users (email_key);
    """,
    # As SQLite's migration 4 (issue 15): read markers, reactions, reply counts, mentions,
    # and full-text search: a generated tsvector per message ('simple': words as written,
    # lower-cased, no stemming, diacritics removed, as FTS5's unicode61) under a GIN index.
    f"""
    CREATE TABLE read_markers (
        user_id TEXT NOT NULL,
        conversation TEXT NOT NULL,
        seq BIGINT NOT NULL,
        PRIMARY KEY (user_id, conversation)
    );
    CREATE TABLE reactions (
        message_id TEXT NOT NULL,
        emoji TEXT NOT NULL,
        user_id TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (message_id, emoji, user_id)
    );
    ALTER TABLE messages ADD COLUMN reply_count INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN mentions TEXT;
    ALTER TABLE messages ADD COLUMN mentions_room INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX messages_reply_to ON messages (reply_to, seq) WHERE reply_to IS NOT NULL;
    ALTER TABLE direct_messages ADD COLUMN reply_to TEXT;
    ALTER TABLE direct_messages ADD COLUMN edited_at TEXT;
    ALTER TABLE direct_messages ADD COLUMN deleted_at TEXT;
    CREATE INDEX direct_messages_sender_pair ON direct_messages (sender_id, pair, seq);
    CREATE INDEX direct_messages_recipient_pair ON direct_messages (recipient_id, pair, seq);
    ALTER TABLE messages ADD COLUMN search tsvector
        GENERATED ALWAYS AS (to_tsvector('simple', {_FOLDED})) STORED;
    CREATE INDEX messages_search ON messages USING GIN (search);
    ALTER TABLE direct_messages ADD COLUMN search tsvector
        GENERATED ALWAYS AS (to_tsvector('simple', {_FOLDED})) STORED;
    CREATE INDEX direct_messages_search ON direct_messages USING GIN (search);
    """,
    # Direct messages share files as room messages do: the message records its file (one
    # file, one message), and a file's direct message is found through that index.
    """
    ALTER TABLE direct_messages ADD COLUMN message_type TEXT NOT NULL DEFAULT 'text';
    ALTER TABLE direct_messages ADD COLUMN attachment_id TEXT;
    CREATE UNIQUE INDEX direct_messages_attachment ON direct_messages (attachment_id)
        WHERE attachment_id IS NOT NULL;
    """,
    # As SQLite's: clientIds unique per user within an hour of created_at (base.DEDUPE_HOUR_SQL).
    """
    DROP INDEX messages_client_user;
    CREATE UNIQUE INDEX messages_client_hour
        ON messages (substr(created_at, 1, 13), client_id, user_id) WHERE client_id IS NOT NULL;
    DROP INDEX direct_messages_client_sender;
    CREATE UNIQUE INDEX direct_messages_client_hour
        ON direct_messages (substr(created_at, 1, 13), client_id, sender_id)
        WHERE client_id IS NOT NULL;
    """,
    # As SQLite's migration 7, which changes only its FTS5 tables: nothing to do here.
    "SELECT 1",
]
"""Schema scripts; script ``i`` brings the database to schema version ``i + 1`` (the same
numbers as :data:`fastchat.storage.sqlite.MIGRATIONS`, kept in the ``meta`` table)."""


_Params = tuple[Any, ...] | dict[str, Any]


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
    " FROM files f WHERE f.id = %s"
)

# The clientIds of the window (read once at start for the filter of acks.Acks).
_WINDOW_KEYS_SQL = {
    table: f"SELECT {sender}, client_id FROM {table}"
    f" WHERE {DEDUPE_HOUR_SQL} = ANY(%s) AND client_id IS NOT NULL"
    for table, sender in (("messages", "user_id"), ("direct_messages", "sender_id"))
}

PAGE_SQL: dict[str, str] = {
    "latest": f"{_MESSAGE_SELECT} WHERE room_id = %s ORDER BY seq DESC LIMIT %s",
    "before": f"{_MESSAGE_SELECT} WHERE room_id = %s AND seq < %s ORDER BY seq DESC LIMIT %s",
    "after": f"{_MESSAGE_SELECT} WHERE room_id = %s AND seq > %s ORDER BY seq LIMIT %s",
    "dm_latest": f"{_DM_SELECT} WHERE pair = %s ORDER BY seq DESC LIMIT %s",
    "dm_before": f"{_DM_SELECT} WHERE pair = %s AND seq < %s ORDER BY seq DESC LIMIT %s",
}


def _unfold(snippet: str, content: str) -> str:
    """``snippet`` (a part of ``content`` with its diacritics removed, matches marked) with
    the letters of ``content``; unchanged when it cannot be found there."""
    folded = content.translate(_FOLD)
    if folded == content:
        return snippet
    pos = folded.find(_MARKS.sub("", snippet))
    if pos < 0:
        return snippet
    out = []
    for part in _MARKS.split(snippet):
        if part in (SNIPPET_OPEN, SNIPPET_CLOSE):
            out.append(part)
        else:
            out.append(content[pos : pos + len(part)])
            pos += len(part)
    return "".join(out)


def _room_row(row: tuple[Any, ...]) -> RoomRow:
    return RoomRow(row[0], row[1], row[2], bool(row[3]), row[4], row[5], row[6])


def _session_options(config: StorageConfig) -> str:
    # "normal" trades the last commits on a PostgreSQL crash (not on a fastchat crash) for
    # speed, as synchronous=NORMAL does on SQLite.
    commit = "on" if config.synchronous == "full" else "off"
    return f"-c synchronous_commit={commit}"


def _connect(config: StorageConfig) -> psycopg.Connection[Any]:
    return psycopg.connect(
        config.dsn,
        autocommit=True,
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        options=_session_options(config),
    )


def _describe(exc: BaseException) -> str:
    state = getattr(exc, "sqlstate", None)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{type(exc).__name__}{f' ({state})' if state else ''}: {text}"


# --------------------------------------------------------------------------- reads


class PostgresStore:
    """Schema set-up, start-up state and the server's reads.

    The start-up reads (``open``, ``all_rooms``, ``room_member_ids``, ``client_keys``,
    ``active_mutes``) block on their own connection; the reads made while serving are
    coroutines on an asyncio connection of the event loop they are awaited on.
    """

    def __init__(self, config: StorageConfig) -> None:
        self._config = config
        self._db: psycopg.Connection[Any] | None = None
        self._reader: asyncio.Task[psycopg.AsyncConnection[Any]] | None = None
        self._reader_loop: asyncio.AbstractEventLoop | None = None  # the CLI runs several
        self._read_error: str | None = None
        self._read_failed_at = -READ_ERROR_SECONDS

    def open(self) -> StartupState:
        """Connect, migrate, and consume the clean-shutdown marker."""
        try:
            self._db = _connect(self._config)
            return self._open(self._db)
        except psycopg.Error as exc:
            raise StorageError(f"postgres: {_describe(exc)}") from exc

    def _open(self, db: psycopg.Connection[Any]) -> StartupState:
        fresh = self._migrate(db)
        with db.transaction():
            row = db.execute(
                "DELETE FROM meta WHERE key = %s RETURNING value", (_CLEAN_KEY,)
            ).fetchone()
        # A database created just now cannot have lost anything: report it as clean.
        clean = fresh or (row is not None and row[0] == "1")
        rooms = db.execute(
            "SELECT r.id, (SELECT MAX(seq) FROM messages WHERE room_id = r.id) FROM rooms r"
        ).fetchall()
        max_dm = db.execute("SELECT MAX(seq) FROM direct_messages").fetchone()
        return StartupState(
            clean=clean,
            max_room_seq={room_id: seq or 0 for room_id, seq in rooms},
            max_dm_seq=(max_dm[0] if max_dm else None) or 0,
        )

    def _migrate(self, db: psycopg.Connection[Any]) -> bool:
        """Apply pending migrations; True when the schema was created by this call."""
        with db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            row = db.execute("SELECT value FROM meta WHERE key = %s", (_VERSION_KEY,)).fetchone()
            version = int(row[0]) if row else 0
            if version > len(MIGRATIONS):
                raise StorageError(
                    f"postgres: schema version {version} is newer than this fastchat "
                    f"supports ({len(MIGRATIONS)})"
                )
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                db.execute(script)
                db.execute(
                    "INSERT INTO meta (key, value) VALUES (%s, %s)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (_VERSION_KEY, str(number)),
                )
                log.info("postgres: applied schema migration %d", number)
        return version == 0

    def mark_clean_shutdown(self) -> None:
        """Durably record a clean shutdown; call once the writer has drained and closed."""
        with _connect(self._config) as db:
            db.execute(
                "INSERT INTO meta (key, value) VALUES (%s, '1')"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (_CLEAN_KEY,),
            )

    def close(self) -> None:
        """Close the start-up connection (the asyncio one closes with its loop)."""
        if self._db is not None:
            self._db.close()

    # -- start-up reads (blocking)

    def _startup_db(self) -> psycopg.Connection[Any]:
        assert self._db is not None, "PostgresStore.open() first"
        return self._db

    def all_rooms(self) -> list[RoomRow]:
        """Every room, ordered by name."""
        rows = self._startup_db().execute(f"{_ROOM_SELECT} ORDER BY lower(r.name), r.id")
        return [_room_row(row) for row in rows.fetchall()]

    def room_member_ids(self, room_id: str) -> set[str]:
        """Ids of the members of ``room_id``."""
        rows = self._startup_db().execute(
            "SELECT user_id FROM room_members WHERE room_id = %s", (room_id,)
        )
        return {row[0] for row in rows.fetchall()}

    def client_keys(self) -> Iterator[str]:
        """``user \0 clientId`` of every message and (``user \0 dm:clientId``) DM stored in
        the clientId window (:func:`~fastchat.storage.base.dedupe_hours`)."""
        db = self._startup_db()
        hours = list(dedupe_hours())
        with db.transaction(), db.cursor(name="client_keys") as cursor:
            cursor.itersize = 10_000
            cursor.execute(_WINDOW_KEYS_SQL["messages"], (hours,))
            for user_id, client_id in cursor:
                yield f"{user_id}\0{client_id}"
        with db.transaction(), db.cursor(name="dm_client_keys") as cursor:
            cursor.itersize = 10_000
            cursor.execute(_WINDOW_KEYS_SQL["direct_messages"], (hours,))
            for sender_id, client_id in cursor:
                yield f"{sender_id}\0dm:{client_id}"

    def active_mutes(self, now: float | None = None) -> list[tuple[str, str, float]]:
        """``(room_id, user_id, until)`` of every mute still running at ``now``."""
        now = time.time() if now is None else now
        rows = self._startup_db().execute(
            "SELECT room_id, user_id, until FROM mutes WHERE until > %s", (now,)
        )
        return [(row[0], row[1], row[2]) for row in rows.fetchall()]

    # -- reads while serving (awaitable)

    def recent_read_error(self) -> str | None:
        """The last read failure, if one happened in the last :data:`READ_ERROR_SECONDS`
        and no read succeeded since."""
        if time.monotonic() - self._read_failed_at < READ_ERROR_SECONDS:
            return self._read_error
        return None

    async def _rows(self, sql: str, params: _Params) -> list[tuple[Any, ...]]:
        """Run one read; a failed connection is dropped (the next read makes a new one).

        Concurrent first reads share one connection attempt; a value PostgreSQL cannot hold
        (a NUL character, a number past BIGINT) matches no stored row.
        """
        loop = asyncio.get_running_loop()
        if self._reader is None or self._reader_loop is not loop:
            self._reader_loop = loop
            self._reader = loop.create_task(
                psycopg.AsyncConnection.connect(
                    self._config.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
                )
            )
        reader = self._reader
        try:
            conn = await reader
            cursor = await conn.execute(sql, params)
            rows = await cursor.fetchall()
        except psycopg.DataError:
            return []
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            if self._reader is reader:
                self._reader = None
                if reader.exception() is None:
                    await reader.result().close()
            self._read_error = _describe(exc)
            self._read_failed_at = time.monotonic()
            log.warning("postgres read failed: %s", self._read_error)
            raise StorageUnavailable("storage unavailable, try again") from exc
        self._read_error = None  # the server answers again (the account watcher reads often)
        return rows

    async def _one(self, sql: str, params: _Params) -> tuple[Any, ...] | None:
        rows = await self._rows(sql, params)
        return rows[0] if rows else None

    async def user_by_id(self, user_id: str) -> UserRow | None:
        """The user with this id."""
        row = await self._one(f"{_USER_SELECT} WHERE id = %s", (user_id,))
        return UserRow(*row) if row else None

    async def user_by_name(self, username: str) -> UserRow | None:
        """The user with this username, compared case-insensitively."""
        row = await self._one(f"{_USER_SELECT} WHERE lower(username) = lower(%s)", (username,))
        return UserRow(*row) if row else None

    async def user_by_login(self, name_or_email: str) -> UserRow | None:
        """The user whose username (first) or email matches, case-insensitively."""
        user = await self.user_by_name(name_or_email)
        if user is not None:
            return user
        row = await self._one(f"{_USER_SELECT} WHERE lower(email) = lower(%s)", (name_or_email,))
        return UserRow(*row) if row else None

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
            rows = await self._rows(PAGE_SQL["after"], (room_id, after, limit))
            return [MessageRow(*row) for row in rows]
        if before is not None:
            rows = await self._rows(PAGE_SQL["before"], (room_id, before, limit))
        else:
            rows = await self._rows(PAGE_SQL["latest"], (room_id, limit))
        return [MessageRow(*row) for row in reversed(rows)]

    async def message_by_id(self, message_id: str) -> MessageRow | None:
        """The message with this id."""
        row = await self._one(f"{_MESSAGE_SELECT} WHERE id = %s", (message_id,))
        return MessageRow(*row) if row else None

    async def message_by_client_id(self, user_id: str, client_id: str) -> MessageRow | None:
        """The message ``user_id`` sent with this client id in the clientId window (for
        idempotent retries)."""
        row = await self._one(
            f"{_MESSAGE_SELECT} WHERE {DEDUPE_HOUR_SQL} = ANY(%s) AND client_id = %s"
            " AND user_id = %s",
            (list(dedupe_hours()), client_id, user_id),
        )
        return MessageRow(*row) if row else None

    async def dm_page(
        self, user_a: str, user_b: str, *, before: int | None = None, limit: int
    ) -> list[DirectMessageRow]:
        """Up to ``limit`` direct messages between two users, the newest with
        ``seq < before`` (or the newest at all), oldest first."""
        if limit <= 0:
            return []
        pair = dm_pair(user_a, user_b)
        if before is None:
            rows = await self._rows(PAGE_SQL["dm_latest"], (pair, limit))
        else:
            rows = await self._rows(PAGE_SQL["dm_before"], (pair, before, limit))
        return [DirectMessageRow(*row) for row in reversed(rows)]

    async def dm_by_client_id(self, sender_id: str, client_id: str) -> DirectMessageRow | None:
        """The direct message ``sender_id`` sent with this client id in the clientId window."""
        row = await self._one(
            f"{_DM_SELECT} WHERE {DEDUPE_HOUR_SQL} = ANY(%s) AND client_id = %s AND sender_id = %s",
            (list(dedupe_hours()), client_id, sender_id),
        )
        return DirectMessageRow(*row) if row else None

    async def audit_entries(self, *, limit: int, before_id: int | None = None) -> list[AuditRow]:
        """Up to ``limit`` audit entries with ``id < before_id`` (if given), newest first."""
        if limit <= 0:
            return []
        sql = f"SELECT {_columns(AuditRow)} FROM audit_log"
        if before_id is None:
            rows = await self._rows(f"{sql} ORDER BY id DESC LIMIT %s", (limit,))
        else:
            rows = await self._rows(
                f"{sql} WHERE id < %s ORDER BY id DESC LIMIT %s", (before_id, limit)
            )
        return [AuditRow(*row) for row in rows]

    async def file(self, file_id: str) -> FileRow | None:
        """The uploaded file's record."""
        row = await self._one(_FILE_SELECT, (file_id,))
        return FileRow(*row) if row else None

    async def dm_by_id(self, dm_id: str) -> DirectMessageRow | None:
        """The direct message with this id."""
        row = await self._one(f"{_DM_SELECT} WHERE id = %s", (dm_id,))
        return DirectMessageRow(*row) if row else None

    def upload_usage(self) -> dict[str, int]:
        """Bytes of uploaded files per uploader."""
        rows = self._startup_db().execute(
            "SELECT uploader_id, SUM(size)::bigint FROM files GROUP BY uploader_id"
        )
        return {row[0]: row[1] for row in rows.fetchall()}

    def users_without_keys(self) -> list[tuple[str, str, str | None]]:
        """``(id, username, email)`` of the accounts made before skeletons were stored."""
        rows = self._startup_db().execute(
            "SELECT id, username, email FROM users WHERE name_key IS NULL"
        )
        return [(row[0], row[1], row[2]) for row in rows.fetchall()]

    def last_user_change(self) -> int:
        """The id of the newest entry of the account change log (0: none)."""
        row = self._startup_db().execute("SELECT MAX(id) FROM user_changes").fetchone()
        return (row[0] or 0) if row else 0

    async def messages_by_user(self, user_id: str) -> list[MessageRow]:
        """Every room message of a user, oldest first (a full scan: for exports only)."""
        rows = await self._rows(
            f"{_MESSAGE_SELECT} WHERE user_id = %s ORDER BY created_at, id", (user_id,)
        )
        return [MessageRow(*row) for row in rows]

    async def dms_of_user(self, user_id: str) -> list[DirectMessageRow]:
        """Every direct message a user sent or received, oldest first (for exports only)."""
        rows = await self._rows(
            f"{_DM_SELECT} WHERE sender_id = %s OR recipient_id = %s ORDER BY seq",
            (user_id, user_id),
        )
        return [DirectMessageRow(*row) for row in rows]

    async def user_like(self, name_key: str, email_key: str | None) -> UserRow | None:
        """A user whose username or email has this confusable skeleton."""
        row = await self._one(
            f"{_USER_SELECT} WHERE name_key = %s OR email_key = %s LIMIT 1",
            (name_key, email_key),
        )
        return UserRow(*row) if row else None

    async def users_page(self, *, limit: int, after: str | None = None) -> list[UserRow]:
        """Up to ``limit`` users by username (case-insensitively, as SQLite's NOCASE), those
        after ``after`` (a username) if given."""
        rows = await self._rows(
            f'{_USER_SELECT} WHERE lower(username) COLLATE "C" > lower(%s)'
            ' ORDER BY lower(username) COLLATE "C" LIMIT %s',
            (after or "", limit),
        )
        return [UserRow(*row) for row in rows]

    async def admin_count(self) -> int:
        """How many accounts are admins (and not banned)."""
        row = await self._one(
            "SELECT COUNT(*) FROM users WHERE role = 'admin'"
            " AND (banned_until IS NULL OR banned_until <= %s)",
            (time.time(),),
        )
        return row[0] if row else 0

    async def login_session(self, session_id: str) -> LoginSessionRow | None:
        """The login session with this id."""
        row = await self._one(
            f"SELECT {_columns(LoginSessionRow)} FROM login_sessions WHERE id = %s",
            (session_id,),
        )
        return LoginSessionRow(*row) if row else None

    async def refresh_token_session(self, token_hash: str) -> str | None:
        """The id of the session a refresh token (by hash) was issued to, current or not."""
        row = await self._one(
            "SELECT session_id FROM refresh_tokens WHERE token_hash = %s", (token_hash,)
        )
        return row[0] if row else None

    async def user_changes_after(self, change_id: int) -> list[tuple[int, str]]:
        """``(change id, user id)`` of the account changes after ``change_id``, oldest first."""
        rows = await self._rows(
            "SELECT id, user_id FROM user_changes WHERE id > %s ORDER BY id LIMIT 1000",
            (change_id,),
        )
        return [(row[0], row[1]) for row in rows]

    async def members_by_last_seen(self, room_id: str, *, limit: int) -> list[UserRow]:
        """Up to ``limit`` members of a room, the most recently seen first."""
        rows = await self._rows(
            f"SELECT {_columns(UserRow, 'u.')} FROM room_members m JOIN users u ON u.id = m.user_id"
            " WHERE m.room_id = %s ORDER BY u.last_seen DESC NULLS LAST LIMIT %s",
            (room_id, limit),
        )
        return [UserRow(*row) for row in rows]

    async def read_markers(self, user_id: str) -> dict[str, int]:
        """The user's read markers: conversation (room id or DM pair) -> seq."""
        rows = await self._rows(
            "SELECT conversation, seq FROM read_markers WHERE user_id = %s", (user_id,)
        )
        return {row[0]: row[1] for row in rows}

    async def conversation_markers(self, conversation: str, user_ids: list[str]) -> dict[str, int]:
        """The markers of ``user_ids`` in one conversation: user id -> seq (those with one)."""
        rows = await self._rows(
            "SELECT user_id, seq FROM read_markers WHERE conversation = %s"
            " AND user_id = ANY(%s::text[])",
            (conversation, user_ids),
        )
        return {row[0]: row[1] for row in rows}

    async def room_unread(
        self, room_id: str, user_id: str, after_seq: int, cap: int
    ) -> tuple[int, int]:
        """Live messages of others after ``after_seq`` (up to ``cap``), and how many of those
        mention ``user_id`` or the whole room."""
        row = await self._one(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE mentions_room <> 0"
            " OR mentions::jsonb ? %(user)s) FROM ("
            "SELECT mentions, mentions_room FROM messages WHERE room_id = %(room)s"
            " AND seq > %(after)s AND user_id <> %(user)s AND deleted_at IS NULL"
            " ORDER BY seq LIMIT %(cap)s) AS unread",
            {"room": room_id, "user": user_id, "after": after_seq, "cap": cap},
        )
        assert row is not None
        return row[0], row[1]

    async def conversations(
        self, user_id: str, *, limit: int, unread_cap: int
    ) -> list[ConversationRow]:
        """The user's ``limit`` most recent DM conversations, newest first."""
        rows = await self._rows(
            "WITH pairs AS (SELECT pair, MAX(last) AS last FROM ("
            "SELECT pair, MAX(seq) AS last FROM direct_messages WHERE sender_id = %(user)s"
            " GROUP BY pair UNION ALL SELECT pair, MAX(seq) FROM direct_messages"
            " WHERE recipient_id = %(user)s GROUP BY pair) AS ends"
            " GROUP BY pair ORDER BY 2 DESC LIMIT %(limit)s)"
            f" SELECT {_columns(DirectMessageRow, 'd.')}, COALESCE(r.seq, 0),"
            " (SELECT COUNT(*) FROM (SELECT 1 FROM direct_messages u WHERE u.pair = p.pair"
            " AND u.recipient_id = %(user)s AND u.seq > COALESCE(r.seq, 0)"
            " AND u.deleted_at IS NULL LIMIT %(cap)s) AS unread)"
            " FROM pairs p JOIN direct_messages d ON d.seq = p.last"
            " LEFT JOIN read_markers r ON r.user_id = %(user)s AND r.conversation = p.pair"
            " ORDER BY p.last DESC",
            {"user": user_id, "limit": limit, "cap": unread_cap},
        )
        conversations = []
        for row in rows:
            last = DirectMessageRow(*row[:-2])
            peer = last.recipient_id if last.sender_id == user_id else last.sender_id
            conversations.append(ConversationRow(peer, last, row[-2], row[-1]))
        return conversations

    async def reactions(self, message_ids: list[str]) -> dict[str, list[tuple[str, str]]]:
        """``(emoji, user_id)`` of each message's reactions, oldest first."""
        rows = await self._rows(
            "SELECT message_id, emoji, user_id FROM reactions"
            " WHERE message_id = ANY(%s::text[]) ORDER BY created_at",
            (message_ids,),
        )
        found: dict[str, list[tuple[str, str]]] = {}
        for message_id, emoji, user_id in rows:
            found.setdefault(message_id, []).append((emoji, user_id))
        return found

    async def replies_page(
        self, message_id: str, *, before: int | None = None, limit: int
    ) -> list[MessageRow]:
        """Up to ``limit`` live replies to a message, the newest with ``seq < before`` (or
        the newest at all), oldest first."""
        rows = await self._rows(
            f"{_MESSAGE_SELECT} WHERE reply_to = %s AND seq < %s AND deleted_at IS NULL"
            " ORDER BY seq DESC LIMIT %s",
            (message_id, MAX_SEQ if before is None else before, limit),
        )
        return [MessageRow(*row) for row in reversed(rows)]

    async def search_messages(
        self, words: list[str], room_ids: list[str], *, before_id: str | None, limit: int
    ) -> list[SearchHit]:
        """The ``limit`` newest live messages of ``room_ids`` that contain every one of
        ``words`` (with an id below ``before_id``), newest first, with their rank."""
        rows = await self._search(
            "messages", MessageRow, "t.room_id = ANY(%(visible)s::text[])",
            room_ids, words, before_id, limit,
        )  # fmt: skip
        return [SearchHit(MessageRow(*row[:-2]), row[-2], row[-1]) for row in rows]

    async def search_direct(
        self, words: list[str], user_id: str, *, before_id: str | None, limit: int
    ) -> list[SearchHit]:
        """:meth:`search_messages` over the live direct messages to or from ``user_id``."""
        rows = await self._search(
            "direct_messages", DirectMessageRow,
            "%(visible)s IN (t.sender_id, t.recipient_id)", user_id, words, before_id, limit,
        )  # fmt: skip
        return [SearchHit(DirectMessageRow(*row[:-2]), row[-2], row[-1]) for row in rows]

    async def _search(
        self,
        table: str,
        row_type: type,
        visible: str,
        visible_param: str | list[str],
        words: list[str],
        before_id: str | None,
        limit: int,
    ) -> list[tuple[Any, ...]]:
        # plainto_tsquery reads no operators: the words (already letters and digits only)
        # become one AND of plain lexemes. The rank is negated: lower is better, as FTS5's.
        before = "" if before_id is None else " AND t.id < %(before)s"
        rows = await self._rows(
            f"SELECT {_columns(row_type, 't.')}, ts_headline('simple', {_FOLDED}, q, %(snippet)s),"
            f" -ts_rank(t.search, q) FROM {table} t, plainto_tsquery('simple', %(words)s) q"
            f" WHERE t.search @@ q AND {visible} AND t.deleted_at IS NULL{before}"
            " ORDER BY t.id DESC LIMIT %(limit)s",
            {
                "snippet": _SNIPPET,
                "words": " ".join(words).translate(_FOLD),
                "visible": visible_param,
                "before": before_id,
                "limit": limit,
            },
        )
        # The snippet was cut from the folded text: put the marks on the content as written.
        content = [f.name for f in fields(row_type)].index("content")
        return [(*row[:-2], _unfold(row[-2], row[content]), row[-1]) for row in rows]


# --------------------------------------------------------------------------- write operations

STATEMENTS: dict[str, str] = {
    "insert_user": "INSERT INTO users (id, username, email, password_hash, avatar_url, role,"
    " created_at, last_seen, name_key, email_key)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
    "set_user_keys": "UPDATE users SET name_key = %s, email_key = %s WHERE id = %s",
    "set_user_role": "UPDATE users SET role = %s WHERE id = %s",
    "set_user_ban": "UPDATE users SET banned_until = %s, ban_reason = %s WHERE id = %s",
    "touch_last_seen": "UPDATE users SET last_seen = %s WHERE id = %s",
    "insert_room": "INSERT INTO rooms (id, name, description, is_private, created_by,"
    " created_at) VALUES (%s, %s, %s, %s, %s, %s)",
    "add_member": "INSERT INTO room_members (room_id, user_id, role, joined_at)"
    " VALUES (%s, %s, %s, %s) ON CONFLICT (room_id, user_id) DO NOTHING",
    "remove_member": "DELETE FROM room_members WHERE room_id = %s AND user_id = %s",
    "insert_message": "INSERT INTO messages (id, room_id, seq, user_id, content, message_type,"
    " reply_to, client_id, attachment_id, created_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
    "edit_message": "UPDATE messages SET content = %s, edited_at = %s"
    " WHERE id = %s AND deleted_at IS NULL",
    "delete_message": "UPDATE messages SET content = '', deleted_at = %s WHERE id = %s",
    "insert_dm": "INSERT INTO direct_messages (id, seq, pair, sender_id, recipient_id, content,"
    " client_id, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (id) DO NOTHING",
    "insert_dm_file": "INSERT INTO direct_messages (id, seq, pair, sender_id, recipient_id,"
    " content, client_id, created_at, message_type, attachment_id)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
    "set_mute": "INSERT INTO mutes (room_id, user_id, until) VALUES (%s, %s, %s)"
    " ON CONFLICT (room_id, user_id) DO UPDATE SET until = excluded.until",
    "clear_mute": "DELETE FROM mutes WHERE room_id = %s AND user_id = %s",
    "insert_audit": "INSERT INTO audit_log (at, actor_id, action, target_user_id, room_id,"
    " reason, detail) VALUES (%s, %s, %s, %s, %s, %s, %s)",
    "insert_file": "INSERT INTO files (id, uploader_id, name, size, content_type, created_at,"
    " room_id, message_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
    "attach_file": "UPDATE files SET room_id = %s, message_id = %s WHERE id = %s",
    "set_password": "UPDATE users SET password_hash = %s WHERE id = %s",
    "insert_login_session": "INSERT INTO login_sessions (id, user_id, token_hash, created_at,"
    " expires_at) VALUES (%s, %s, %s, %s, %s)",
    "add_refresh_token": "INSERT INTO refresh_tokens (token_hash, session_id) VALUES (%s, %s)",
    "rotate_refresh_token": "UPDATE login_sessions SET token_hash = %s, expires_at = %s"
    " WHERE id = %s AND revoked_at IS NULL",
    "revoke_login_session": "UPDATE login_sessions SET revoked_at = %s"
    " WHERE id = %s AND revoked_at IS NULL",
    "revoke_user_sessions": "UPDATE login_sessions SET revoked_at = %s"
    " WHERE user_id = %s AND id IS DISTINCT FROM %s::text AND revoked_at IS NULL",
    "prune_user_changes": "DELETE FROM user_changes WHERE at < %s",
    "remove_user_memberships": "DELETE FROM room_members WHERE user_id = %s",
    "delete_user_messages": "UPDATE messages SET content = '', deleted_at = %s"
    " WHERE user_id = %s AND deleted_at IS NULL",
    "delete_user_dms": "DELETE FROM direct_messages WHERE sender_id = %s",
    "delete_user": "DELETE FROM users WHERE id = %s",
    "set_read_marker": "INSERT INTO read_markers (user_id, conversation, seq)"
    " VALUES (%s, %s, %s) ON CONFLICT (user_id, conversation)"
    " DO UPDATE SET seq = GREATEST(read_markers.seq, excluded.seq)",
    "add_reaction": "INSERT INTO reactions (message_id, emoji, user_id, created_at)"
    " VALUES (%s, %s, %s, %s) ON CONFLICT (message_id, emoji, user_id) DO NOTHING",
    "remove_reaction": "DELETE FROM reactions"
    " WHERE message_id = %s AND emoji = %s AND user_id = %s",
    "count_reply": "UPDATE messages SET reply_count = GREATEST(reply_count + %s, 0) WHERE id = %s",
    "set_mentions": "UPDATE messages SET mentions = %s, mentions_room = %s WHERE id = %s",
    "set_dm_reply": "UPDATE direct_messages SET reply_to = %s WHERE id = %s",
    "edit_dm": "UPDATE direct_messages SET content = %s, edited_at = %s WHERE id = %s",
    "delete_dm": "UPDATE direct_messages SET content = '', deleted_at = %s WHERE id = %s",
}


def _copy_sql(name: str) -> str:
    """The COPY that loads many rows of ``name``'s INSERT at once (binary: nothing to escape)."""
    insert = STATEMENTS[name]
    table_and_columns = insert[len("INSERT INTO ") : insert.index(")") + 1]
    return f"COPY {table_and_columns} FROM STDIN (FORMAT BINARY)"


# The writer's hot inserts: a run of them is one COPY, the fastest way into PostgreSQL
# (measured in docs/benchmarks.md). COPY has no ON CONFLICT: a replayed id fails the run, which
# is then written op by op with the INSERT above, whose ON CONFLICT (id) absorbs it.
_COPY = {
    "insert_message": (
        _copy_sql("insert_message"),
        ["text", "text", "int8", "text", "text", "text", "text", "text", "text", "text"],
    ),
    "insert_dm": (
        _copy_sql("insert_dm"),
        ["text", "int8", "text", "text", "text", "text", "text", "text"],
    ),
}


# --------------------------------------------------------------------------- the writer

# Errors that belong to one operation (a broken constraint, a bad value, or a malformed op:
# a bug in the caller that must not stall everyone else's writes). Every other error is a
# storage failure (connection lost, server shutting down, disk full), retried until it passes.
_OP_ERRORS = (
    psycopg.IntegrityError,
    psycopg.DataError,
    psycopg.ProgrammingError,
    KeyError,
    TypeError,
    ValueError,
    OverflowError,
)


def _write_group(conn: psycopg.Connection[Any], name: str, params: list[tuple[Any, ...]]) -> None:
    """Run one statement for consecutive ops of the same kind."""
    copy = _COPY.get(name)
    with conn.cursor() as cursor:
        if copy is None or len(params) == 1:
            cursor.executemany(STATEMENTS[name], params)
            return
        with cursor.copy(copy[0]) as rows:
            rows.set_types(copy[1])
            for row in params:
                rows.write_row(row)


def _op_error(exc: Exception) -> Exception:
    """An op's failure as callers see it: a broken uniqueness rule becomes Duplicate."""
    if isinstance(exc, pg_errors.UniqueViolation):
        return Duplicate(_describe(exc))
    return exc


class PostgresWriteBehind(BatchWriter):
    """The PostgreSQL writer: its own connection, made on the writer thread and made again
    after a failure (the queue, batches and retries are
    :class:`~fastchat.storage.writebehind.BatchWriter`'s)."""

    _failures = psycopg.Error

    def __init__(self, config: StorageConfig, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(config, loop)
        self._conn: psycopg.Connection[Any] | None = None

    def _close_connections(self) -> None:
        if self._conn is not None:
            self._conn.close()

    # -- writer thread

    def _attempt(self, batch: list[Entry]) -> dict[int, BaseException] | None:
        if self._conn is None or self._conn.closed:
            self._conn = _connect(self._config)
        return self._write(self._conn, batch)

    def _failed(self, exc: BaseException) -> str:
        """Forget the connection: the next attempt starts on a new one."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        return _describe(exc)

    def _write(
        self, conn: psycopg.Connection[Any], batch: list[Entry]
    ) -> dict[int, BaseException] | None:
        groups = [
            (name, [entry[0][1] for entry in entries])
            for name, entries in groupby(batch, key=entry_name)
        ]
        try:
            with conn.transaction():
                for name, params in groups:
                    _write_group(conn, name, params)
        except _OP_ERRORS:
            # The transaction is rolled back; a lost connection shows on the replay.
            return self._write_isolated(conn, batch)
        return None

    def _write_isolated(
        self, conn: psycopg.Connection[Any], batch: list[Entry]
    ) -> dict[int, BaseException]:
        """Re-run a batch op by op, each in a savepoint, so only the failing ops fail."""
        errors: dict[int, BaseException] = {}
        with conn.transaction(), conn.cursor() as cursor:
            for index, (op, _) in enumerate(batch):
                try:
                    with conn.transaction():
                        cursor.execute(STATEMENTS[op[0]], op[1])
                except _OP_ERRORS as exc:
                    errors[index] = _op_error(exc)
        self.op_errors_total += len(errors)
        return errors
