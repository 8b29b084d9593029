"""fastchat.storage.sqlite: schema, reads, and the write-behind writer against real SQLite."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import apsw
import orjson
import pytest

from fastchat.config import StorageConfig
from fastchat.errors import Overloaded, StorageUnavailable
from fastchat.names import skeleton
from fastchat.storage import base, ops, sqlite
from tests.support.server import ROOT
from tests.support.stamps import in_window, iso, out_of_window
from tests.support.waiting import wait_until

T0 = "2026-01-01T00:00:00.000Z"
NOW = iso(time.time())
"""Within the clientId window (base.dedupe_hours) for the next hour at least; T0 is not."""


@pytest.fixture
def config(tmp_path: Path) -> StorageConfig:
    return StorageConfig(path=tmp_path / "data" / "chat.db", batch_max=100, flush_interval_ms=1)


@pytest.fixture
def db(config: StorageConfig) -> Iterator[sqlite.SqliteStore]:
    s = sqlite.SqliteStore(config)
    s.open()
    yield s
    s.close()


@pytest.fixture
async def writer(
    db: sqlite.SqliteStore, config: StorageConfig
) -> AsyncIterator[sqlite.WriteBehind]:
    w = sqlite.WriteBehind(config, asyncio.get_running_loop())
    w.start()
    yield w
    assert await w.close(5) == 0


async def start_writer(
    db: sqlite.SqliteStore, config: StorageConfig, **changes: int
) -> sqlite.WriteBehind:
    """A writer with some settings changed (``db`` only makes sure the schema exists)."""
    w = sqlite.WriteBehind(replace(config, **changes), asyncio.get_running_loop())
    w.start()
    return w


def msg(
    seq: int, *, room: str = "general", user: str = "u1", created_at: str = T0, **kw: str | None
) -> base.Op:
    return ops.insert_message(
        id=f"{room}-{seq}", room_id=room, seq=seq, user_id=user, content=f"m{seq}",
        created_at=created_at, **kw,
    )  # fmt: skip


def dm(
    seq: int, *, sender: str = "u0", recipient: str = "u1", created_at: str = T0, **kw: str | None
) -> base.Op:
    return ops.insert_dm(
        id=f"d{seq}", seq=seq, sender_id=sender, recipient_id=recipient, content=f"d{seq}",
        created_at=created_at, **kw,
    )  # fmt: skip


class Results:
    """Collects on_done outcomes in call order; ``wait(n)`` awaits the n-th one."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, BaseException | None, int]] = []
        self._target = 0
        self._reached = asyncio.Event()

    def cb(self, name: str) -> base.OnDone:
        def done(error: BaseException | None) -> None:
            self.calls.append((name, error, threading.get_ident()))
            if len(self.calls) >= self._target:
                self._reached.set()

        return done

    async def wait(self, count: int, timeout: float = 5.0) -> None:
        self._target = count
        if len(self.calls) < count:
            self._reached.clear()
            await asyncio.wait_for(self._reached.wait(), timeout)


def count_rows(config: StorageConfig, table: str) -> int:
    conn = apsw.Connection(str(config.path))
    try:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchall()[0][0]
    finally:
        conn.close()


# --------------------------------------------------------------------------- schema, start-up


def test_open_creates_folder_and_migrations_are_idempotent(config: StorageConfig) -> None:
    assert not config.path.parent.exists()
    first = sqlite.SqliteStore(config)
    state = first.open()
    first.close()
    second = sqlite.SqliteStore(config)
    second.open()
    assert [r.id for r in second.all_rooms()] == ["general", "random", "tech"]
    second.close()

    conn = apsw.Connection(str(config.path))
    assert conn.pragma("user_version") == len(sqlite.MIGRATIONS)
    assert conn.pragma("journal_mode") == "wal"
    conn.close()
    assert state.max_room_seq == {"general": 0, "random": 0, "tech": 0}
    assert state.max_dm_seq == 0


def test_newer_schema_is_refused(config: StorageConfig) -> None:
    sqlite.SqliteStore(config).open()
    conn = apsw.Connection(str(config.path))
    conn.pragma("user_version", len(sqlite.MIGRATIONS) + 1)
    conn.close()
    with pytest.raises(base.StorageError, match="newer"):
        sqlite.SqliteStore(config).open()


def test_version_1_database_is_upgraded_and_keeps_its_messages_and_client_ids(
    config: StorageConfig,
) -> None:
    # A database as the first schema (the code before migration 2) left it.
    config.path.parent.mkdir(parents=True)
    old = apsw.Connection(str(config.path))
    old.pragma("journal_mode", "wal")
    with old:
        old.execute(sqlite.MIGRATIONS[0])
        old.pragma("user_version", 1)
        old.executemany(
            sqlite.STATEMENTS["insert_message"],
            [
                msg(seq, user=f"u{seq % 2}", client_id=f"c{seq}", created_at=NOW)[1]
                for seq in range(1, 6)
            ],
        )
        old.execute(sqlite.STATEMENTS["insert_dm"], dm(1, client_id="c1", created_at=NOW)[1])
    old.close()

    s = sqlite.SqliteStore(config)
    state = s.open()
    assert state.max_room_seq["general"] == 5 and state.max_dm_seq == 1
    assert [m.seq for m in asyncio.run(s.messages_page("general", limit=10))] == [1, 2, 3, 4, 5]
    assert asyncio.run(s.message_by_client_id("u1", "c3")) == asyncio.run(
        s.message_by_id("general-3")
    )
    assert asyncio.run(s.message_by_client_id("u0", "c3")) is None
    assert asyncio.run(s.dm_by_client_id("u0", "c1")) is not None
    assert sorted(s.client_keys()) == sorted(
        [f"u{seq % 2}\0c{seq}" for seq in range(1, 6)] + ["u0\0dm:c1"]
    )
    s.close()

    conn = apsw.Connection(str(config.path))
    assert conn.pragma("user_version") == len(sqlite.MIGRATIONS)
    plans = [
        row[3]
        for sql in (
            f"SELECT id FROM messages WHERE {base.DEDUPE_HOUR_SQL} IN ('a', 'b')"
            " AND user_id = 'u1' AND client_id = 'c3'",
            f"SELECT id FROM direct_messages WHERE {base.DEDUPE_HOUR_SQL} IN ('a', 'b')"
            " AND sender_id = 'u0' AND client_id = 'c1'",
        )
        for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")
    ]
    assert any("messages_client_hour" in plan for plan in plans), plans
    assert any("direct_messages_client_hour" in plan for plan in plans), plans
    # clientIds stay unique per user (and per sender for DMs) within their hour
    with pytest.raises(apsw.ConstraintError):
        conn.execute(
            sqlite.STATEMENTS["insert_message"],
            msg(6, user="u1", client_id="c3", created_at=NOW)[1],
        )
    conn.execute(
        sqlite.STATEMENTS["insert_message"], msg(6, user="u0", client_id="c3", created_at=NOW)[1]
    )
    with pytest.raises(apsw.ConstraintError):
        conn.execute(
            sqlite.STATEMENTS["insert_dm"],
            dm(2, recipient="u2", client_id="c1", created_at=NOW)[1],
        )
    conn.close()


def window_rows() -> list[base.Op]:
    """A message and a DM from T0, just before the clientId window, an hour ago and now (the
    last two in the window): what a database upgraded to the window holds."""
    now = time.time()
    stamps = [T0, iso(out_of_window(now)), iso(in_window(now)), NOW]
    return [
        op
        for seq, stamp in enumerate(stamps, start=1)
        for op in (
            msg(seq, client_id=f"c{seq}", created_at=stamp),
            dm(seq, client_id=f"k{seq}", created_at=stamp),
        )
    ]


def check_window_upgrade(store: base.Store, rows: list[base.Op]) -> None:
    """``store`` (opened on a migration-4 database holding :func:`window_rows`) kept every
    message and finds by clientId those of the window only."""
    page = asyncio.run(store.messages_page("general", limit=10))
    assert [(m.seq, m.client_id, m.created_at) for m in page] == [
        (params[2], params[7], params[9]) for name, params in rows if name == "insert_message"
    ]
    found = [asyncio.run(store.message_by_client_id("u1", f"c{seq}")) for seq in (1, 2, 3, 4)]
    assert [row.seq if row else None for row in found] == [None, None, 3, 4]
    found_dms = [asyncio.run(store.dm_by_client_id("u0", f"k{seq}")) for seq in (1, 2, 3, 4)]
    assert [row.seq if row else None for row in found_dms] == [None, None, 3, 4]
    assert sorted(store.client_keys()) == ["u0\0dm:k3", "u0\0dm:k4", "u1\0c3", "u1\0c4"]


def test_current_schema_is_upgraded_to_the_client_id_window_with_every_message(
    config: StorageConfig,
) -> None:
    # A database of the schema before the clientId window (migration 4), as servers have it.
    config.path.parent.mkdir(parents=True)
    old = apsw.Connection(str(config.path))
    old.pragma("journal_mode", "wal")
    rows = window_rows()
    with old:
        for number, script in enumerate(sqlite.MIGRATIONS[:4], start=1):
            old.execute(script)
            old.pragma("user_version", number)
        for name, params in rows:
            old.execute(sqlite.STATEMENTS[name], params)
    old.close()

    s = sqlite.SqliteStore(config)
    state = s.open()
    assert state.max_room_seq["general"] == 4 and state.max_dm_seq == 4
    check_window_upgrade(s, rows)
    s.close()
    conn = apsw.Connection(str(config.path))
    assert conn.pragma("user_version") == len(sqlite.MIGRATIONS)
    conn.close()


def test_full_text_indexes_are_rebuilt_without_token_counts_and_keep_indexing(
    config: StorageConfig,
) -> None:
    # A database of schema version 4: messages indexed by the first full-text tables.
    config.path.parent.mkdir(parents=True)
    old = apsw.Connection(str(config.path))
    with old:
        for script in sqlite.MIGRATIONS[:4]:
            old.execute(script)
        old.pragma("user_version", 4)
        old.execute(sqlite.STATEMENTS["insert_message"], msg(1)[1])
        old.execute(sqlite.STATEMENTS["insert_dm"], dm(1)[1])
    old.close()

    s = sqlite.SqliteStore(config)
    s.open()
    conn = apsw.Connection(str(config.path))
    with conn:
        again = ops.insert_message(
            id="general-2", room_id="general", seq=2, user_id="u1", content="m1 again",
            created_at=T0,
        )  # fmt: skip
        conn.execute(sqlite.STATEMENTS["insert_message"], again[1])
    ((schema,),) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'messages_fts'")
    assert "columnsize=0" in schema
    conn.execute("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")
    conn.execute("INSERT INTO direct_messages_fts (direct_messages_fts) VALUES ('integrity-check')")
    conn.close()
    hits = asyncio.run(s.search_messages(["m1"], ["general"], before_id=None, limit=5))
    assert [(h.message.id, h.snippet) for h in hits] == [
        ("general-2", f"{sqlite.SNIPPET_OPEN}m1{sqlite.SNIPPET_CLOSE} again"),
        ("general-1", f"{sqlite.SNIPPET_OPEN}m1{sqlite.SNIPPET_CLOSE}"),
    ]
    assert all(h.rank < 0 for h in hits)
    (direct,) = asyncio.run(s.search_direct(["d1"], "u1", before_id=None, limit=5))
    assert direct.message.id == "d1"
    s.close()


def test_default_rooms(db: sqlite.SqliteStore) -> None:
    rooms = db.all_rooms()
    assert [(r.id, r.name, r.description) for r in rooms] == [
        ("general", "General", "General discussion"),
        ("random", "Random", "Random topics"),
        ("tech", "Tech Talk", "Technology discussions"),
    ]
    assert all(not r.is_private and r.member_count == 0 for r in rooms)
    assert rooms[0].created_at is not None and rooms[0].created_at.endswith("Z")


def test_clean_shutdown_marker(config: StorageConfig) -> None:
    def reopen(mark: bool) -> bool:
        s = sqlite.SqliteStore(config)
        clean = s.open().clean
        if mark:
            s.mark_clean_shutdown()
        s.close()
        return clean

    assert reopen(mark=False) is True  # a new database has lost nothing
    assert reopen(mark=True) is False  # the previous run did not mark
    assert reopen(mark=False) is True  # ...this one did
    assert reopen(mark=False) is False  # the marker is consumed by open()


async def test_startup_state_has_max_sequences(
    db: sqlite.SqliteStore, writer: sqlite.WriteBehind, config: StorageConfig
) -> None:
    for seq in (1, 2, 7):
        await writer.execute(msg(seq))
    await writer.execute(msg(3, room="tech"))
    for seq in (4, 9):
        await writer.execute(
            ops.insert_dm(
                id=f"d{seq}", seq=seq, sender_id="a", recipient_id="b", content="x",
                created_at=T0,
            )
        )  # fmt: skip
    reopened = sqlite.SqliteStore(config)
    state = reopened.open()
    reopened.close()
    assert state.max_room_seq == {"general": 7, "random": 0, "tech": 3}
    assert state.max_dm_seq == 9


# --------------------------------------------------------------------------- reads


async def test_users_and_case_insensitive_login(
    db: sqlite.SqliteStore, writer: sqlite.WriteBehind
) -> None:
    await writer.execute(
        ops.insert_user(
            id="u1", username="Alice", email="Alice@Example.com", password_hash="h",
            created_at=T0,
        )
    )  # fmt: skip
    user = await db.user_by_id("u1")
    assert user == base.UserRow(
        "u1", "Alice", "Alice@Example.com", "h", None, "user", T0, T0, None, None
    )
    assert await db.user_by_login("alice") == user
    assert await db.user_by_login("ALICE@example.COM") == user
    assert await db.user_by_name("aLiCe") == user
    assert await db.user_by_name("alice@example.com") is None
    assert await db.user_by_login("bob") is None
    assert await db.user_by_id("nope") is None

    for op in (
        ops.insert_user(id="u2", username="ALICE", email="x@y", password_hash="h", created_at=T0),
        ops.insert_user(id="u3", username="carol", email="alice@EXAMPLE.com", password_hash="h",
                          created_at=T0),
    ):  # fmt: skip
        with pytest.raises(base.Duplicate):
            await writer.execute(op)

    await writer.execute(ops.set_user_role("u1", "admin"))
    await writer.execute(ops.set_user_ban("u1", base.FOREVER, "spam"))
    await writer.execute(ops.touch_last_seen("u1", "2026-02-02T00:00:00.000Z"))
    user = await db.user_by_id("u1")
    assert user is not None
    assert (user.role, user.banned_until, user.ban_reason) == ("admin", base.FOREVER, "spam")
    assert user.last_seen == "2026-02-02T00:00:00.000Z"
    with pytest.raises(apsw.ConstraintError):
        await writer.execute(ops.set_user_role("u1", "overlord"))
    await writer.execute(ops.set_user_ban("u1", None, None))
    user = await db.user_by_id("u1")
    assert user is not None and user.banned_until is None and user.role == "admin"


async def test_rooms_membership_and_visibility(
    db: sqlite.SqliteStore, writer: sqlite.WriteBehind
) -> None:
    await writer.execute(
        ops.insert_room(
            id="secret", name="Attic", description=None, is_private=True, created_by="u1",
            created_at=T0,
        )
    )  # fmt: skip
    for room, user, role in [
        ("secret", "u1", "owner"),
        ("secret", "u2", "member"),
        ("general", "u1", "member"),
        ("general", "u3", "member"),
    ]:
        await writer.execute(ops.add_member(room, user, role, T0))
    await writer.execute(ops.add_member("secret", "u1", "member", T0))  # already in: ignored

    rooms = {r.id: r for r in db.all_rooms()}
    assert {i: r.member_count for i, r in rooms.items()} == {
        "secret": 2,
        "general": 2,
        "random": 0,
        "tech": 0,
    }
    assert rooms["secret"] == base.RoomRow("secret", "Attic", None, True, "u1", T0, 2)
    assert db.room_member_ids("secret") == {"u1", "u2"}
    role = "SELECT role FROM room_members WHERE room_id = ? AND user_id = ?"
    assert db._one(role, ("secret", "u1")) == ("owner",)  # the duplicate add changed nothing
    assert db._one(role, ("secret", "u3")) is None

    await writer.execute(ops.remove_member("secret", "u2"))
    assert db.room_member_ids("secret") == {"u1"}
    with pytest.raises(apsw.ConstraintError):
        await writer.execute(ops.add_member("tech", "u1", "king", T0))


async def test_messages_page_edges(db: sqlite.SqliteStore, writer: sqlite.WriteBehind) -> None:
    for seq in range(1, 11):
        writer.submit(msg(seq))
    await writer.execute(msg(1, room="tech"))

    async def seqs(**kw: int | None) -> list[int]:
        return [m.seq for m in await db.messages_page("general", **kw)]  # type: ignore[arg-type]

    assert await seqs(limit=3) == [8, 9, 10]
    assert await seqs(limit=50) == list(range(1, 11))
    assert await seqs(before=5, limit=3) == [2, 3, 4]
    assert await seqs(before=3, limit=10) == [1, 2]
    assert await seqs(before=1, limit=10) == []
    assert await seqs(before=99, limit=2) == [9, 10]
    assert await seqs(after=5, limit=3) == [6, 7, 8]
    assert await seqs(after=8, limit=10) == [9, 10]
    assert await seqs(after=10, limit=10) == []
    assert await seqs(after=0, limit=2) == [1, 2]
    assert await seqs(limit=0) == []
    assert [m.id for m in await db.messages_page("tech", limit=10)] == ["tech-1"]
    assert await db.messages_page("random", limit=10) == []
    with pytest.raises(ValueError):
        await db.messages_page("general", before=5, after=1, limit=3)


async def test_message_lookup_edit_delete_and_client_id(
    db: sqlite.SqliteStore, writer: sqlite.WriteBehind
) -> None:
    await writer.execute(msg(1, client_id="c1", reply_to="x", attachment_id="f1", created_at=NOW))
    await writer.execute(msg(2))
    await writer.execute(msg(3))  # several messages without client_id are fine
    first = await db.message_by_id("general-1")
    assert first == base.MessageRow(
        "general-1", "general", 1, "u1", "m1", "text", "x", "c1", "f1", NOW, None, None
    )
    assert await db.message_by_client_id("u1", "c1") == first
    assert await db.message_by_client_id("u2", "c1") is None

    with pytest.raises(base.Duplicate):  # same user, same client id, same hour
        await writer.execute(msg(4, client_id="c1", created_at=NOW))
    await writer.execute(msg(4, user="u2", client_id="c1", created_at=NOW))  # another user may
    await writer.execute(msg(5, client_id="c1"))  # another hour: outside the window
    with pytest.raises(base.Duplicate):  # seq taken in the room
        await writer.execute(
            ops.insert_message(
                id="other", room_id="general", seq=2, user_id="u1", content="x", created_at=T0
            )
        )

    await writer.execute(ops.edit_message("general-2", "edited", "2026-01-02T00:00:00.000Z"))
    await writer.execute(ops.delete_message("general-3", "2026-01-03T00:00:00.000Z"))
    edited, deleted = await db.message_by_id("general-2"), await db.message_by_id("general-3")
    assert edited is not None and (edited.content, edited.edited_at) == (
        "edited",
        "2026-01-02T00:00:00.000Z",
    )
    assert deleted is not None and (deleted.content, deleted.deleted_at) == (
        "",
        "2026-01-03T00:00:00.000Z",
    )
    assert await db.message_by_id("nope") is None


async def test_direct_messages(db: sqlite.SqliteStore, writer: sqlite.WriteBehind) -> None:
    assert ops.dm_pair("b", "a") == ops.dm_pair("a", "b") == "a:b"
    for seq in range(1, 8):
        sender, recipient = ("a", "b") if seq % 2 else ("b", "a")
        await writer.execute(
            ops.insert_dm(
                id=f"d{seq}", seq=seq, sender_id=sender, recipient_id=recipient,
                content=f"hi {seq}", client_id=f"c{seq}", created_at=NOW,
            )
        )  # fmt: skip
    await writer.execute(
        ops.insert_dm(id="d8", seq=8, sender_id="a", recipient_id="c", content="x", created_at=T0)
    )
    assert [m.seq for m in await db.dm_page("a", "b", limit=3)] == [5, 6, 7]
    assert [m.seq for m in await db.dm_page("b", "a", before=5, limit=3)] == [2, 3, 4]
    assert [m.seq for m in await db.dm_page("a", "b", before=2, limit=3)] == [1]
    assert await db.dm_page("a", "b", limit=0) == []
    assert [m.id for m in await db.dm_page("c", "a", limit=10)] == ["d8"]
    row = await db.dm_by_client_id("b", "c2")
    assert row == base.DirectMessageRow("d2", 2, "a:b", "b", "a", "hi 2", "c2", NOW)
    assert await db.dm_by_client_id("a", "c2") is None
    with pytest.raises(base.Duplicate):  # same sender, same client id, same hour
        await writer.execute(ops.insert_dm(
            id="d9", seq=9, sender_id="b", recipient_id="c", content="x", client_id="c2",
            created_at=NOW))  # fmt: skip
    with pytest.raises(base.Duplicate):  # seq is global
        await writer.execute(
            ops.insert_dm(
                id="d10", seq=8, sender_id="c", recipient_id="d", content="x", created_at=T0
            )
        )


async def test_mutes(db: sqlite.SqliteStore, writer: sqlite.WriteBehind) -> None:
    now = time.time()
    await writer.execute(ops.set_mute("general", "u1", now + 60))
    await writer.execute(ops.set_mute("general", "u2", now - 1))  # already over
    await writer.execute(ops.set_mute("tech", "u1", now + 5))
    await writer.execute(ops.set_mute("tech", "u1", base.FOREVER))  # replaces
    assert sorted(db.active_mutes()) == [
        ("general", "u1", now + 60),
        ("tech", "u1", base.FOREVER),
    ]
    assert db.active_mutes(now=now + 120) == [("tech", "u1", base.FOREVER)]
    await writer.execute(ops.clear_mute("tech", "u1"))
    assert db.active_mutes(now=now + 120) == []


async def test_audit_entries_newest_first_with_paging(
    db: sqlite.SqliteStore, writer: sqlite.WriteBehind
) -> None:
    for i in range(5):
        writer.submit(
            ops.insert_audit(
                at=T0, actor_id="admin", action=f"act{i}", target_user_id="u1",
                room_id="general", reason="why", detail={"i": i},
            )
        )  # fmt: skip
    await writer.execute(ops.insert_audit(at=T0, actor_id=None, action="system"))
    entries = await db.audit_entries(limit=3)
    assert [e.action for e in entries] == ["system", "act4", "act3"]
    assert entries[0] == base.AuditRow(6, T0, None, "system", None, None, None, None)
    assert orjson.loads(entries[1].detail or "") == {"i": 4}
    older = await db.audit_entries(limit=10, before_id=entries[-1].id)
    assert [e.action for e in older] == ["act2", "act1", "act0"]
    assert await db.audit_entries(limit=10, before_id=1) == []
    assert await db.audit_entries(limit=0) == []


async def test_files(db: sqlite.SqliteStore, writer: sqlite.WriteBehind) -> None:
    await writer.execute(
        ops.insert_file(
            id="f1", uploader_id="u1", name="cat.png", size=123, content_type="image/png",
            created_at=T0,
        )
    )  # fmt: skip
    assert await db.file("f1") == base.FileRow(
        "f1", "u1", "cat.png", 123, "image/png", T0, None, None
    )
    await writer.execute(ops.attach_file("f1", "general", "general-1"))
    row = await db.file("f1")
    assert row is not None and (row.room_id, row.message_id) == ("general", "general-1")
    assert await db.file("nope") is None


async def test_direct_message_files(db: sqlite.SqliteStore, writer: sqlite.WriteBehind) -> None:
    await check_direct_message_files(db, writer)


async def check_direct_message_files(db: base.Store, writer: base.Writer) -> None:
    """A direct message records its file in its own row; the file's row names it; one file
    goes with one message (on any backend)."""
    for file_id in ("f1", "f2"):
        await writer.execute(
            ops.insert_file(
                id=file_id, uploader_id="u0", name="cat.png", size=3, content_type="image/png",
                created_at=T0,
            )
        )  # fmt: skip
    assert dm(1)[0] == "insert_dm"  # a plain message keeps the plain op
    await writer.execute(dm(1))
    await writer.execute(dm(2, message_type="image", attachment_id="f1"))
    plain, shared = await db.dm_page("u0", "u1", limit=10)
    assert (plain.message_type, plain.attachment_id) == ("text", None)
    assert (shared.message_type, shared.attachment_id) == ("image", "f1")
    assert await db.dm_by_id("d2") == shared
    file = await db.file("f1")
    assert file is not None and (file.dm_id, file.room_id, file.message_id) == ("d2", None, None)
    assert (await db.file("f2")).dm_id is None  # type: ignore[union-attr]
    with pytest.raises(base.Duplicate):
        await writer.execute(dm(3, message_type="file", attachment_id="f1"))
    await writer.execute(dm(3, message_type="file", attachment_id="f2"))
    (conversation,) = await db.conversations("u1", limit=5, unread_cap=10)
    assert conversation.last.attachment_id == "f2"
    (hit,) = await db.search_direct(["d2"], "u1", before_id=None, limit=5)
    assert hit.message.attachment_id == "f1"  # type: ignore[union-attr]


def test_history_page_uses_index_on_100k_messages(config: StorageConfig) -> None:
    s = sqlite.SqliteStore(config)
    s.open()
    conn = apsw.Connection(str(config.path))
    with conn:
        conn.executemany(
            sqlite.STATEMENTS["insert_message"],
            (msg(seq, room=("general", "tech")[seq % 2])[1] for seq in range(1, 100_001)),
        )
        conn.executemany(
            sqlite.STATEMENTS["insert_dm"],
            (ops.insert_dm(id=f"d{seq}", seq=seq, sender_id=f"u{seq % 50}", recipient_id="x",
                             content="x", created_at=T0)[1] for seq in range(1, 20_001)),
        )  # fmt: skip
    plans = {
        name: [
            row[3]
            for row in conn.execute(
                f"EXPLAIN QUERY PLAN {sql}", ("general", 500, 50)[: sql.count("?")]
            )
        ]
        for name, sql in sqlite.PAGE_SQL.items()
    }
    conn.close()
    for name, details in plans.items():
        index = "direct_messages_pair_seq" if name.startswith("dm") else "messages_room_seq"
        assert any(f"USING INDEX {index}" in d for d in details), (name, details)
        assert not any(d.startswith("SCAN") or "TEMP B-TREE" in d for d in details), details

    assert [m.seq for m in asyncio.run(s.messages_page("general", limit=3))] == [
        99_996,
        99_998,
        100_000,
    ]
    assert [m.seq for m in asyncio.run(s.messages_page("tech", before=7, limit=2))] == [3, 5]
    assert [m.seq for m in asyncio.run(s.messages_page("general", after=99_990, limit=50))] == [
        99_992, 99_994, 99_996, 99_998, 100_000,
    ]  # fmt: skip

    async def pages() -> None:
        for before in range(1000, 100_000, 1000):
            assert len(await s.messages_page("general", before=before, limit=50)) == 50

    started = time.perf_counter()
    asyncio.run(pages())
    # 99 indexed pages of 50 rows take a few ms; a table scan per page would take far longer.
    assert time.perf_counter() - started < 1.0
    s.close()


# --------------------------------------------------------------------------- the writer


async def test_batching_and_callbacks_in_order_on_loop_thread(
    db: sqlite.SqliteStore, config: StorageConfig
) -> None:
    # A long flush interval: batches start only because batch_max ops are waiting.
    writer = await start_writer(db, config, batch_max=100, flush_interval_ms=60_000)
    results = Results()
    for seq in range(1, 1001):
        assert writer.submit(msg(seq), results.cb(str(seq)))
    await results.wait(1000)
    assert [name for name, _, _ in results.calls] == [str(seq) for seq in range(1, 1001)]
    assert all(error is None for _, error, _ in results.calls)
    assert {thread for _, _, thread in results.calls} == {threading.get_ident()}
    assert writer.batches_committed == 10
    assert writer.ops_committed == 1000
    assert len(writer.recent_commit_seconds) == 10
    assert writer.commit_seconds_total == pytest.approx(sum(writer.recent_commit_seconds))
    assert writer.queue_depth == 0
    assert await writer.close(5) == 0
    assert count_rows(config, "messages") == 1000


async def test_flush_interval_bounds_the_wait(
    db: sqlite.SqliteStore, config: StorageConfig
) -> None:
    writer = await start_writer(db, config, batch_max=1000, flush_interval_ms=40)
    results = Results()
    started = time.monotonic()
    for seq in (1, 2, 3):
        writer.submit(msg(seq), results.cb(str(seq)))
    await results.wait(3)
    waited = time.monotonic() - started
    assert 0.03 <= waited < 2.0
    assert writer.batches_committed == 1  # the three ops shared one transaction
    assert await writer.close(5) == 0


async def test_zero_interval_commits_at_once(db: sqlite.SqliteStore, config: StorageConfig) -> None:
    writer = await start_writer(db, config, flush_interval_ms=0)
    started = time.monotonic()
    await writer.execute(msg(1))
    assert time.monotonic() - started < 1.0
    assert await db.message_by_id("general-1") is not None
    assert await writer.close(5) == 0


async def test_constraint_failure_is_isolated(
    db: sqlite.SqliteStore, config: StorageConfig
) -> None:
    writer = await start_writer(db, config, batch_max=5, flush_interval_ms=60_000)
    results = Results()
    ops = [
        msg(1, client_id="c1"),
        msg(2, client_id="c1"),  # duplicate client id
        msg(3),
        ("no_such_statement", ()),  # a malformed op fails alone too
        msg(4),
    ]
    for i, op in enumerate(ops):
        writer.submit(op, results.cb(str(i)))
    await results.wait(5)
    errors = [error for _, error, _ in results.calls]
    assert [name for name, _, _ in results.calls] == ["0", "1", "2", "3", "4"]
    assert errors[0] is None and errors[2] is None and errors[4] is None
    assert isinstance(errors[1], base.Duplicate)
    assert isinstance(errors[3], KeyError)
    assert writer.batches_committed == 1
    assert writer.ops_committed == 3
    assert writer.op_errors_total == 2
    assert writer.healthy
    assert [m.seq for m in await db.messages_page("general", limit=10)] == [1, 3, 4]
    assert await writer.close(5) == 0


async def test_batch_of_inserts_is_one_statement_and_a_failure_is_isolated(
    db: sqlite.SqliteStore, config: StorageConfig
) -> None:
    # Only insert_message ops: the batch is written by one INSERT ... FROM jsonb_each.
    writer = await start_writer(db, config, batch_max=4, flush_interval_ms=60_000)
    results = Results()
    for i, op in enumerate(
        [msg(1, client_id="c1"), msg(2, client_id="c2"), msg(3, client_id="c1"), msg(4)]
    ):
        writer.submit(op, results.cb(str(i)))
    await results.wait(4)
    errors = [error for _, error, _ in results.calls]
    assert errors[0] is None and errors[1] is None and errors[3] is None
    assert isinstance(errors[2], base.Duplicate)
    assert (writer.batches_committed, writer.ops_committed, writer.op_errors_total) == (1, 3, 1)
    assert [m.seq for m in await db.messages_page("general", limit=10)] == [1, 2, 4]
    assert await writer.close(5) == 0


async def test_batched_rows_keep_every_value(db: sqlite.SqliteStore, config: StorageConfig) -> None:
    writer = await start_writer(db, config, batch_max=3, flush_interval_ms=60_000)
    tricky = 'quote " backslash \\ nul \x00 emoji \U0001f600 accents éü \u2028 end'
    messages = [
        ops.insert_message(
            id="m1", room_id="general", seq=1, user_id="u1", content=tricky, created_at=T0,
            message_type="file", reply_to="m0", client_id="12", attachment_id="f1",
        ),
        ops.insert_message(id="m2", room_id="general", seq=2, user_id="u1", content="",
                             created_at=T0),
        ops.insert_message(id="m3", room_id="general", seq=2**40, user_id="u1",
                             content="123", created_at=T0, client_id="0"),
    ]  # fmt: skip
    dms = [
        ops.insert_dm(id=f"d{seq}", seq=seq, sender_id="u1", recipient_id="u2",
                        content=tricky, client_id=f"c{seq}", created_at=T0)
        for seq in (1, 2, 3)
    ]  # fmt: skip
    results = Results()
    for op in [*messages, *dms]:
        writer.submit(op, results.cb(op[1][0]))
    await results.wait(6)
    assert all(error is None for _, error, _ in results.calls)
    assert writer.batches_committed == 2
    stored = [await db.message_by_id(f"m{i}") for i in (1, 2, 3)]
    assert stored == [base.MessageRow(*op[1], None, None) for op in messages]
    assert await db.dm_page("u1", "u2", limit=5) == [base.DirectMessageRow(*op[1]) for op in dms]
    conn = apsw.Connection(str(config.path))
    types = conn.execute("SELECT typeof(seq), typeof(content) FROM messages ORDER BY id").fetchall()
    conn.close()
    assert types == [("integer", "text")] * 3
    assert await writer.close(5) == 0


def wal_pages(config: StorageConfig) -> int:
    return (config.path.parent / f"{config.path.name}-wal").stat().st_size // 4096


def record_checkpoints(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the threads that run checkpoints from now on."""
    threads: list[str] = []
    checkpoint = sqlite._Checkpointer._checkpoint

    def recorded(self: sqlite._Checkpointer, conn: apsw.Connection) -> None:
        threads.append(threading.current_thread().name)
        checkpoint(self, conn)

    monkeypatch.setattr(sqlite._Checkpointer, "_checkpoint", recorded)
    return threads


def big_message(seq: int) -> base.Op:
    return ops.insert_message(id=f"m{seq}", room_id="general", seq=seq, user_id="u1",
                                content="x" * 1000, created_at=T0)  # fmt: skip


async def test_checkpoints_run_off_the_writer_thread(
    db: sqlite.SqliteStore, config: StorageConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite, "CHECKPOINT_PAGES", 20)
    monkeypatch.setattr(sqlite, "CHECKPOINT_INTERVAL", 0.001)
    threads = record_checkpoints(monkeypatch)
    writer = await start_writer(db, config, batch_max=50, flush_interval_ms=60_000)
    results = Results()
    for seq in range(1, 1001):
        writer.submit(big_message(seq), results.cb(str(seq)))
        if seq % 50 == 0:
            await results.wait(seq)
            await asyncio.sleep(0.03)  # a pause after each batch lets the copy catch up
    # ~375 pages of WAL were written; the checkpointer copied them between batches, so
    # the WAL started over instead of growing (the writer never checkpointed).
    assert 0 < wal_pages(config) < 100
    assert threads and set(threads) == {"fastchat-checkpointer"}
    assert await writer.close(5) == 0
    assert len(await db.messages_page("general", limit=5000)) == 1000


def shrink_wal_limits(monkeypatch: pytest.MonkeyPatch, interval: float) -> None:
    """Checkpoint from 20 WAL pages and start the WAL over past 100 (instead of 1,000 / 8,000)."""
    monkeypatch.setattr(sqlite, "CHECKPOINT_PAGES", 20)
    monkeypatch.setattr(sqlite, "WAL_RESTART_PAGES", 100)
    monkeypatch.setattr(sqlite, "CHECKPOINT_INTERVAL", interval)


async def write_back_to_back(writer: sqlite.WriteBehind, count: int, timeout: float) -> None:
    """Queue ``count`` big messages at once (the writer commits back to back); await all."""
    results = Results()
    for seq in range(1, count + 1):
        writer.submit(big_message(seq), results.cb(str(seq)))
    await results.wait(count, timeout=timeout)


async def test_wal_starts_over_under_sustained_load(
    db: sqlite.SqliteStore, config: StorageConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    shrink_wal_limits(monkeypatch, interval=0.01)
    threads = record_checkpoints(monkeypatch)
    writer = await start_writer(db, config, batch_max=50, flush_interval_ms=60_000)
    count = 4000
    await write_back_to_back(writer, count, timeout=5)
    # ~1,500 pages of WAL: a checkpoint running next to the writer always ends a few frames
    # behind, so the writer copied the rest itself past the limit and the WAL started over.
    assert 0 < wal_pages(config) < 600
    assert {"fastchat-checkpointer", "fastchat-writer"} <= set(threads)
    assert writer.healthy
    assert await writer.close(5) == 0
    assert len(await db.messages_page("general", limit=count)) == count


async def test_wal_stays_bounded_when_the_checkpointer_lags(
    db: sqlite.SqliteStore, config: StorageConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    shrink_wal_limits(monkeypatch, interval=0)
    checkpoint = sqlite._Checkpointer._checkpoint

    def slow(self: sqlite._Checkpointer, conn: apsw.Connection) -> None:
        if threading.current_thread().name == "fastchat-checkpointer":
            time.sleep(0.02)  # a slow disk: the thread holds its lock nearly all the time
        checkpoint(self, conn)

    monkeypatch.setattr(sqlite._Checkpointer, "_checkpoint", slow)
    writer = await start_writer(db, config, batch_max=50, flush_interval_ms=60_000)
    await write_back_to_back(writer, 4000, timeout=30)
    assert 0 < wal_pages(config) < 600  # the writer waited for the thread, then finished
    assert await writer.close(5) == 0


async def test_disk_full_is_retried_until_space_returns(
    db: sqlite.SqliteStore, config: StorageConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastchat.store")
    writer = await start_writer(db, config, batch_max=3, flush_interval_ms=60_000)
    writer.set_max_page_count(1)  # clamped to the current size: the file may not grow
    results = Results()
    big = "x" * 50_000
    for seq in (1, 2, 3):
        writer.submit(
            ops.insert_message(id=f"m{seq}", room_id="general", seq=seq, user_id="u1",
                                 content=big, created_at=T0),
            results.cb(str(seq)),
        )  # fmt: skip
    await wait_until(lambda: writer.failures_total >= 3)  # retried with backoff
    assert not writer.healthy
    assert writer.last_error is not None and writer.last_error.startswith("disk full")
    assert results.calls == []  # nothing acknowledged while failing
    assert await db.messages_page("general", limit=10) == []
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 1  # logged once per episode, not per retry
    assert "disk full" in failures[0].getMessage()

    writer.set_max_page_count(1_000_000)
    await results.wait(3)
    assert [(name, error) for name, error, _ in results.calls] == [
        ("1", None), ("2", None), ("3", None),
    ]  # fmt: skip
    assert writer.healthy and writer.last_error is None
    assert writer.batches_committed == 1
    assert any("recovered" in r.getMessage() for r in caplog.records)
    assert len(await db.messages_page("general", limit=10)) == 3
    assert await writer.close(5) == 0


async def test_queue_max_refuses_new_ops(db: sqlite.SqliteStore, config: StorageConfig) -> None:
    writer = await start_writer(db, config, queue_max=3, flush_interval_ms=60_000)
    assert all(writer.submit(msg(seq)) for seq in (1, 2, 3))
    assert writer.queue_depth == 3
    assert writer.submit(msg(4)) is False
    with pytest.raises(Overloaded):
        await writer.execute(msg(5))
    assert writer.queue_depth == 3
    assert await writer.close(5) == 0
    assert [m.seq for m in await db.messages_page("general", limit=10)] == [1, 2, 3]


async def test_close_drains_everything_queued(
    db: sqlite.SqliteStore, config: StorageConfig
) -> None:
    writer = await start_writer(db, config, batch_max=1000, flush_interval_ms=60_000)
    results = Results()
    for seq in range(1, 2501):
        writer.submit(msg(seq), results.cb(str(seq)))
    assert await writer.close(10) == 0
    assert len(results.calls) == 2500  # every ack delivered before close() returned
    assert writer.submit(msg(9999)) is False  # closed: nothing more is accepted
    reopened = sqlite.SqliteStore(config)
    reopened.open()
    assert len(await reopened.messages_page("general", limit=5000)) == 2500
    reopened.close()


async def test_close_gives_up_on_a_failing_disk(
    db: sqlite.SqliteStore, config: StorageConfig
) -> None:
    writer = await start_writer(db, config)
    writer.set_max_page_count(1)
    results = Results()
    writer.submit(
        ops.insert_message(id="m1", room_id="general", seq=1, user_id="u1", content="x" * 50_000,
                             created_at=T0),
        results.cb("m1"),
    )  # fmt: skip
    writer.submit(msg(2), results.cb("m2"))
    await wait_until(lambda: not writer.healthy)
    assert await writer.close(0.2) == 2
    assert [name for name, _, _ in results.calls] == ["m1", "m2"]
    assert all(isinstance(error, StorageUnavailable) for _, error, _ in results.calls)
    assert await db.messages_page("general", limit=10) == []


def test_acked_writes_survive_sigkill(config: StorageConfig) -> None:
    config.path.parent.mkdir(parents=True)
    child_script = ROOT / "tests" / "support" / "store_crash_child.py"
    child = subprocess.Popen(
        [sys.executable, str(child_script), str(config.path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdout is not None
    acked: list[str] = []
    try:
        while len(acked) < 500:
            line = child.stdout.readline()
            assert line, "the child exited before acknowledging enough writes"
            acked.append(line.strip())
    finally:
        child.send_signal(signal.SIGKILL)
        acked += [line.strip() for line in child.stdout.read().splitlines()]
        child.wait()
    assert child.returncode == -signal.SIGKILL

    s = sqlite.SqliteStore(config)
    state = s.open()
    assert state.clean is False
    missing = [
        message_id for message_id in acked if asyncio.run(s.message_by_id(message_id)) is None
    ]
    assert missing == []
    assert state.max_room_seq["general"] >= len(acked)
    s.close()


# --------------------------------------------------------------------------- accounts


async def test_account_changes_are_logged_by_triggers_and_sessions_rotate(
    db: sqlite.SqliteStore, writer: sqlite.WriteBehind
) -> None:
    await check_account_changes_and_sessions(db, writer)


async def check_account_changes_and_sessions(db: base.Store, writer: base.Writer) -> None:
    """The account change log and login sessions, on any backend (user "u1" is made here)."""
    start = db.last_user_change()
    await writer.execute(
        ops.insert_user(id="u1", username="alice", email=None, password_hash="h", created_at=T0)
    )
    await writer.execute(ops.touch_last_seen("u1", T0))  # not a change anyone must act on
    assert await db.user_changes_after(start) == []
    await writer.execute(ops.set_user_role("u1", "moderator"))
    await writer.execute(ops.set_user_ban("u1", 1.0, None))
    changes = await db.user_changes_after(start)
    assert [user for _, user in changes] == ["u1", "u1"]

    writer.submit(ops.add_refresh_token("hash-1", "s1"))
    await writer.execute(
        ops.insert_login_session(
            id="s1", user_id="u1", token_hash="hash-1", created_at=T0, expires_at=2.0
        )
    )
    writer.submit(ops.add_refresh_token("hash-2", "s1"))
    await writer.execute(ops.rotate_refresh_token("s1", "hash-2", 3.0))
    session = await db.login_session("s1")
    assert session is not None and (session.token_hash, session.expires_at) == ("hash-2", 3.0)
    assert await db.refresh_token_session("hash-1") == "s1"  # a spent one is still known
    assert await db.refresh_token_session("nope") is None
    await writer.execute(ops.revoke_user_sessions("u1", T0, keep="s1"))
    assert (await db.login_session("s1")).revoked_at is None  # type: ignore[union-attr]
    await writer.execute(ops.revoke_user_sessions("u1", T0))
    assert (await db.login_session("s1")).revoked_at == T0  # type: ignore[union-attr]
    await writer.execute(ops.rotate_refresh_token("s1", "hash-3", 4.0))  # revoked: no effect
    assert (await db.login_session("s1")).token_hash == "hash-2"  # type: ignore[union-attr]

    assert await db.admin_count() == 0
    await writer.execute(ops.delete_user("u1"))
    assert [user for _, user in await db.user_changes_after(changes[-1][0])] == ["u1", "u1"]
    assert await db.user_by_id("u1") is None


async def test_accounts_made_before_skeletons_get_them_and_are_found_by_them(
    db: sqlite.SqliteStore, writer: sqlite.WriteBehind, config: StorageConfig
) -> None:
    conn = apsw.Connection(str(config.path))
    conn.execute(  # as a server from before the skeletons would have
        "INSERT INTO users (id, username, email, password_hash)"
        " VALUES ('u9', 'alice', 'a@b.c', 'h')"
    )
    conn.close()
    assert db.users_without_keys() == [("u9", "alice", "a@b.c")]
    assert await db.user_like("allce", None) is None
    await writer.execute(ops.set_user_keys("u9", "alice", "a@b.c"))
    assert db.users_without_keys() == []
    found = await db.user_like(skeleton("aIice"), skeleton("x@y.z"))
    assert found is not None and found.id == "u9"
    assert (await db.user_like(skeleton("bob"), skeleton("A@B.C"))).id == "u9"  # type: ignore[union-attr]


async def test_conversation_markers_and_reply_counts(
    db: sqlite.SqliteStore, writer: sqlite.WriteBehind
) -> None:
    writer.submit(ops.set_read_marker("u2", "general", 5))
    writer.submit(ops.set_read_marker("u2", "u1:u2", 1))
    await writer.execute(ops.set_read_marker("u3", "general", 2))
    assert await db.conversation_markers("general", ["u2", "u3", "u4"]) == {"u2": 5, "u3": 2}
    assert await db.conversation_markers("u1:u2", ["u1"]) == {}

    writer.submit(msg(1))
    for seq in (2, 3, 4):
        writer.submit(msg(seq, reply_to="general-1"))
        writer.submit(ops.count_reply("general-1", 1))
    writer.submit(ops.delete_message("general-3", T0))
    await writer.execute(ops.count_reply("general-1", -1))
    assert (await db.message_by_id("general-1")).reply_count == 2  # type: ignore[union-attr]
    assert [m.seq for m in await db.replies_page("general-1", limit=5)] == [2, 4]  # live only
    for _ in range(3):
        writer.submit(ops.count_reply("general-1", -1))
    await writer.execute(ops.count_reply("general-1", 1))
    assert (await db.message_by_id("general-1")).reply_count == 1  # never below 0
