"""fastchat.storage.postgres: schema, reads, and the write-behind writer against a real
PostgreSQL server (the session's throwaway cluster, a new database per test)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastchat.config import StorageConfig
from fastchat.errors import Overloaded, StorageUnavailable
from fastchat.names import skeleton
from fastchat.storage import base, ops, postgres, sqlite
from loadtest import store_postgres as bench
from tests.support.postgres import PostgresCluster
from tests.support.waiting import wait_until
from tests.unit.test_store import (
    NOW,
    T0,
    Results,
    check_account_changes_and_sessions,
    check_direct_message_files,
    check_window_upgrade,
    dm,
    msg,
    window_rows,
)


@pytest.fixture
def config(postgres_cluster: PostgresCluster) -> StorageConfig:
    return StorageConfig(
        backend="postgres", dsn=postgres_cluster.new_database(), batch_max=100,
        flush_interval_ms=1,
    )  # fmt: skip


@pytest.fixture
def db(config: StorageConfig) -> Iterator[postgres.PostgresStore]:
    s = postgres.PostgresStore(config)
    s.open()
    yield s
    s.close()


async def start_writer(
    db: postgres.PostgresStore, config: StorageConfig, **changes: int
) -> postgres.PostgresWriteBehind:
    """A writer with some settings changed (``db`` only makes sure the schema exists)."""
    w = postgres.PostgresWriteBehind(replace(config, **changes), asyncio.get_running_loop())
    w.start()
    return w


@pytest.fixture
async def writer(
    db: postgres.PostgresStore, config: StorageConfig
) -> AsyncIterator[postgres.PostgresWriteBehind]:
    w = await start_writer(db, config)
    yield w
    assert await w.close(5) == 0


def sql(config: StorageConfig, query: str, params: tuple[object, ...] = ()) -> list[tuple]:
    with psycopg.connect(config.dsn, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


# --------------------------------------------------------------------------- schema, start-up


def test_migrations_are_idempotent_and_numbered_like_sqlite(config: StorageConfig) -> None:
    first = postgres.PostgresStore(config)
    state = first.open()
    first.close()
    second = postgres.PostgresStore(config)
    second.open()
    assert [r.id for r in second.all_rooms()] == ["general", "random", "tech"]
    second.close()
    assert sql(config, "SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(len(postgres.MIGRATIONS)),)
    ]
    assert len(postgres.MIGRATIONS) == len(sqlite.MIGRATIONS)  # the same version numbers
    assert state.max_room_seq == {"general": 0, "random": 0, "tech": 0}
    assert state.max_dm_seq == 0 and state.clean


def test_current_schema_is_upgraded_to_the_client_id_window_with_every_message(
    config: StorageConfig,
) -> None:
    # A database of the schema before the clientId window (migration 4), as servers have it.
    with psycopg.connect(config.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        for script in postgres.MIGRATIONS[:4]:
            conn.execute(script)  # type: ignore[arg-type]
        conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '4')")
    rows = window_rows()
    for name, params in rows:
        sql(config, postgres.STATEMENTS[name], params)

    s = postgres.PostgresStore(config)
    state = s.open()
    assert state.max_room_seq["general"] == 4 and state.max_dm_seq == 4
    check_window_upgrade(s, rows)
    s.close()
    assert sql(config, "SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(len(postgres.MIGRATIONS)),)
    ]


def test_newer_schema_is_refused(config: StorageConfig) -> None:
    postgres.PostgresStore(config).open()
    sql(config, "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(base.StorageError, match="newer"):
        postgres.PostgresStore(config).open()


def test_unreachable_server_is_a_storage_error(config: StorageConfig) -> None:
    unreachable = replace(config, dsn="postgresql://postgres@127.0.0.1:1/nowhere")
    with pytest.raises(base.StorageError, match="postgres"):
        postgres.PostgresStore(unreachable).open()


def test_clean_shutdown_marker(config: StorageConfig) -> None:
    def reopen(mark: bool) -> bool:
        s = postgres.PostgresStore(config)
        clean = s.open().clean
        if mark:
            s.mark_clean_shutdown()
        s.close()
        return clean

    assert reopen(mark=False) is True  # a new database has lost nothing
    assert reopen(mark=True) is False  # the previous run did not mark
    assert reopen(mark=False) is True  # ...this one did
    assert reopen(mark=False) is False  # the marker is consumed by open()


async def test_startup_state_client_keys_and_mutes(
    db: postgres.PostgresStore, writer: postgres.PostgresWriteBehind, config: StorageConfig
) -> None:
    for seq in (1, 2, 7):
        await writer.execute(msg(seq, client_id=f"c{seq}", created_at=NOW))
    await writer.execute(msg(8, client_id="c8"))  # T0: outside the clientId window
    await writer.execute(msg(3, room="tech"))
    for seq in (4, 9):
        await writer.execute(dm(seq, client_id=f"k{seq}", created_at=NOW))
    await writer.execute(dm(10, client_id="k10"))
    await writer.execute(ops.set_mute("general", "u1", 4e9))
    await writer.execute(ops.set_mute("general", "u2", 1.0))  # long over
    reopened = postgres.PostgresStore(config)
    state = reopened.open()
    assert state.max_room_seq == {"general": 8, "random": 0, "tech": 3}
    assert state.max_dm_seq == 10
    assert sorted(reopened.client_keys()) == [
        "u0\0dm:k4", "u0\0dm:k9", "u1\0c1", "u1\0c2", "u1\0c7",
    ]  # fmt: skip
    assert reopened.active_mutes() == [("general", "u1", 4e9)]
    reopened.close()


# --------------------------------------------------------------------------- reads


async def test_users_and_case_insensitive_login(
    db: postgres.PostgresStore, writer: postgres.PostgresWriteBehind
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
    for op in (
        ops.insert_user(id="u2", username="ALICE", email="x@y", password_hash="h", created_at=T0),
        ops.insert_user(id="u3", username="carol", email="alice@EXAMPLE.com", password_hash="h",
                          created_at=T0),
    ):  # fmt: skip
        with pytest.raises(base.Duplicate):
            await writer.execute(op)
    await writer.execute(ops.set_user_role("u1", "admin"))
    await writer.execute(ops.set_user_ban("u1", base.FOREVER, "spam"))
    user = await db.user_by_id("u1")
    assert user is not None
    assert (user.role, user.banned_until, user.ban_reason) == ("admin", base.FOREVER, "spam")
    with pytest.raises(psycopg.errors.CheckViolation):
        await writer.execute(ops.set_user_role("u1", "overlord"))


async def test_rooms_and_membership(
    db: postgres.PostgresStore, writer: postgres.PostgresWriteBehind
) -> None:
    await writer.execute(
        ops.insert_room(
            id="secret", name="Attic", description=None, is_private=True, created_by="u1",
            created_at=T0,
        )
    )  # fmt: skip
    for room, user, role in [("secret", "u1", "owner"), ("secret", "u2", "member")]:
        await writer.execute(ops.add_member(room, user, role, T0))
    await writer.execute(ops.add_member("secret", "u1", "member", T0))  # already in: ignored
    rooms = {r.id: r for r in db.all_rooms()}
    assert [r.id for r in db.all_rooms()] == ["secret", "general", "random", "tech"]  # by name
    assert rooms["secret"] == base.RoomRow("secret", "Attic", None, True, "u1", T0, 2)
    assert db.room_member_ids("secret") == {"u1", "u2"}
    await writer.execute(ops.remove_member("secret", "u2"))
    assert db.room_member_ids("secret") == {"u1"}


async def test_messages_pages_lookups_and_dms(
    db: postgres.PostgresStore, writer: postgres.PostgresWriteBehind
) -> None:
    for seq in range(1, 11):
        writer.submit(msg(seq, client_id=f"c{seq}", created_at=NOW))
    await writer.execute(msg(1, room="tech"))

    async def seqs(**kw: int | None) -> list[int]:
        return [m.seq for m in await db.messages_page("general", **kw)]  # type: ignore[arg-type]

    assert await seqs(limit=3) == [8, 9, 10]
    assert await seqs(before=5, limit=3) == [2, 3, 4]
    assert await seqs(after=5, limit=3) == [6, 7, 8]
    assert await seqs(after=10, limit=10) == []
    assert await seqs(limit=0) == []
    with pytest.raises(ValueError):
        await db.messages_page("general", before=5, after=1, limit=3)
    await writer.execute(ops.edit_message("general-2", "new", T0))
    await writer.execute(ops.delete_message("general-3", T0))
    edited, deleted = await db.message_by_id("general-2"), await db.message_by_id("general-3")
    assert edited is not None and (edited.content, edited.edited_at) == ("new", T0)
    assert deleted is not None and (deleted.content, deleted.deleted_at) == ("", T0)
    assert await db.message_by_client_id("u1", "c4") == await db.message_by_id("general-4")
    assert await db.message_by_client_id("u2", "c4") is None
    with pytest.raises(base.Duplicate):  # same user, same client id, same hour
        await writer.execute(msg(11, client_id="c4", created_at=NOW))
    await writer.execute(msg(11, client_id="c4"))  # another hour: outside the window

    for seq in (1, 2, 3):
        await writer.execute(dm(seq, client_id=f"d{seq}", created_at=NOW))
    await writer.execute(dm(4, sender="u1", recipient="u9"))
    assert [m.seq for m in await db.dm_page("u1", "u0", limit=10)] == [1, 2, 3]
    assert [m.seq for m in await db.dm_page("u0", "u1", before=3, limit=1)] == [2]
    found = await db.dm_by_client_id("u0", "d2")
    assert found is not None and found.pair == "u0:u1" and found.seq == 2


async def test_audit_and_files(
    db: postgres.PostgresStore, writer: postgres.PostgresWriteBehind
) -> None:
    for action in ("kick", "ban", "mute"):
        await writer.execute(
            ops.insert_audit(at=T0, actor_id="a", action=action, detail={"n": action})
        )
    entries = await db.audit_entries(limit=2)
    assert [e.action for e in entries] == ["mute", "ban"]
    older = await db.audit_entries(limit=5, before_id=entries[-1].id)
    assert [(e.action, e.detail) for e in older] == [("kick", '{"n":"kick"}')]
    await writer.execute(
        ops.insert_file(id="f1", uploader_id="u1", name="a.png", size=3, content_type="image/png",
                          created_at=T0)
    )  # fmt: skip
    await writer.execute(ops.attach_file("f1", "general", "m1"))
    assert await db.file("f1") == base.FileRow(
        "f1", "u1", "a.png", 3, "image/png", T0, "general", "m1"
    )
    assert await db.file("nope") is None


async def test_direct_message_files(
    db: postgres.PostgresStore, writer: postgres.PostgresWriteBehind
) -> None:
    await check_direct_message_files(db, writer)


# --------------------------------------------------------------------------- the writer


async def test_batches_in_order_on_the_loop_thread(
    db: postgres.PostgresStore, config: StorageConfig
) -> None:
    writer = await start_writer(db, config, batch_max=100, flush_interval_ms=60_000)
    results = Results()
    for seq in range(1, 1001):
        assert writer.submit(msg(seq), results.cb(str(seq)))
    await results.wait(1000)
    assert [name for name, _, _ in results.calls] == [str(seq) for seq in range(1, 1001)]
    assert all(error is None for _, error, _ in results.calls)
    assert (writer.batches_committed, writer.ops_committed, writer.queue_depth) == (10, 1000, 0)
    assert await writer.close(5) == 0
    assert sql(config, "SELECT COUNT(*) FROM messages") == [(1000,)]


async def test_batched_rows_keep_every_value(
    db: postgres.PostgresStore, config: StorageConfig
) -> None:
    writer = await start_writer(db, config, batch_max=3, flush_interval_ms=60_000)
    tricky = 'quote " backslash \\ {braces,} NULL emoji \U0001f600 accents éü \u2028 end'
    batch = [
        ops.insert_message(
            id="m1", room_id="general", seq=1, user_id="u1", content=tricky, created_at=T0,
            message_type="file", reply_to="m0", client_id="12", attachment_id="f1",
        ),
        ops.insert_message(id="m2", room_id="general", seq=2, user_id="u1", content="",
                             created_at=T0),
        ops.insert_message(id="m3", room_id="general", seq=2**40, user_id="u1",
                             content="NULL", created_at=T0, client_id="0"),
    ]  # fmt: skip
    results = Results()
    for op in batch:
        writer.submit(op, results.cb(op[1][0]))
    await results.wait(3)
    assert all(error is None for _, error, _ in results.calls)
    assert writer.batches_committed == 1
    stored = await db.messages_page("general", limit=10)
    assert [m.id for m in stored] == ["m1", "m2", "m3"]
    assert stored[0] == base.MessageRow(
        "m1", "general", 1, "u1", tricky, "file", "m0", "12", "f1", T0, None, None
    )
    assert (stored[1].content, stored[1].client_id, stored[2].seq) == ("", None, 2**40)
    assert stored[2].content == "NULL"
    assert await writer.close(5) == 0


async def test_constraint_failures_are_isolated(
    db: postgres.PostgresStore, config: StorageConfig
) -> None:
    writer = await start_writer(db, config, batch_max=6, flush_interval_ms=60_000)
    results = Results()
    batch = [
        msg(1, client_id="c1"),
        msg(2, client_id="c1"),  # duplicate client id
        msg(3),
        ("no_such_statement", ()),  # a malformed op fails alone too
        ops.insert_message(  # the (room, seq) fence
            id="other", room_id="general", seq=3, user_id="u2", content="x", created_at=T0
        ),
        msg(4),
    ]
    for i, op in enumerate(batch):
        writer.submit(op, results.cb(str(i)))
    await results.wait(6)
    errors = [error for _, error, _ in results.calls]
    assert [errors[i] for i in (0, 2, 5)] == [None, None, None]
    assert isinstance(errors[1], base.Duplicate) and isinstance(errors[4], base.Duplicate)
    assert isinstance(errors[3], KeyError)
    assert (writer.batches_committed, writer.ops_committed, writer.op_errors_total) == (1, 3, 3)
    assert writer.healthy
    assert [m.seq for m in await db.messages_page("general", limit=10)] == [1, 3, 4]
    assert await writer.close(5) == 0


async def test_a_replayed_batch_is_stored_once(
    db: postgres.PostgresStore, writer: postgres.PostgresWriteBehind
) -> None:
    # A COMMIT whose answer was lost is replayed: the same ids must not fail or double.
    first = [msg(1, client_id="c1"), msg(2, client_id="c2")]
    for op in first:
        await writer.execute(op)
    results = Results()
    for i, op in enumerate([*first, msg(3)]):
        writer.submit(op, results.cb(str(i)))
    await results.wait(3)
    assert [error for _, error, _ in results.calls] == [None, None, None]
    assert [m.seq for m in await db.messages_page("general", limit=10)] == [1, 2, 3]


async def test_queue_max_refuses_new_ops(db: postgres.PostgresStore, config: StorageConfig) -> None:
    writer = await start_writer(db, config, queue_max=3, flush_interval_ms=60_000)
    assert all(writer.submit(msg(seq)) for seq in (1, 2, 3))
    assert writer.submit(msg(4)) is False
    with pytest.raises(Overloaded):
        await writer.execute(msg(5))
    assert await writer.close(5) == 0
    assert [m.seq for m in await db.messages_page("general", limit=10)] == [1, 2, 3]


async def test_server_down_is_retried_until_it_returns(
    own_postgres: PostgresCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastchat.store")
    config = StorageConfig(backend="postgres", dsn=own_postgres.new_database(), batch_max=3)
    db = postgres.PostgresStore(config)
    db.open()
    writer = await start_writer(db, config)
    await writer.execute(msg(1))
    await db.messages_page("general", limit=1)  # the read connection is made
    await asyncio.to_thread(own_postgres.stop)

    results = Results()
    for seq in (2, 3, 4):
        writer.submit(msg(seq), results.cb(str(seq)))
    await wait_until(lambda: writer.failures_total >= 2)  # retried with backoff
    assert not writer.healthy and writer.last_error is not None
    assert results.calls == []  # nothing acknowledged while failing
    with pytest.raises(StorageUnavailable):
        await db.messages_page("general", limit=10)
    assert db.recent_read_error() is not None  # /healthz reports it
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 1  # logged once per episode, not per retry

    await asyncio.to_thread(own_postgres.start)
    await results.wait(3, timeout=10)
    assert [(name, error) for name, error, _ in results.calls] == [
        ("2", None), ("3", None), ("4", None),
    ]  # fmt: skip
    assert writer.healthy and writer.last_error is None
    assert [m.seq for m in await db.messages_page("general", limit=10)] == [1, 2, 3, 4]
    assert await writer.close(5) == 0

    # close() gives up on a server that stays down, and says what it did not write
    writer = await start_writer(db, config)
    await asyncio.to_thread(own_postgres.stop)
    writer.submit(msg(5), results.cb("5"))
    await wait_until(lambda: not writer.healthy)
    assert await writer.close(0.2) == 1
    assert isinstance(results.calls[-1][1], StorageUnavailable)
    db.close()


def test_the_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    bench.main(["--prefill", "300", "--messages", "500", "--warmup", "100", "--batch-max", "50",
                "--window", "200", "--rate", "200", "--seconds", "0.5",
                "--client-ids", "random"])  # fmt: skip
    out = capsys.readouterr().out
    assert "(random clientIds)" in out
    assert "saturated: " in out and "messages/s" in out
    assert "200 msg/s for 0.5 s: ack p50" in out


# --------------------------------------------------------------------------- accounts (issue 17)


async def test_account_changes_are_logged_by_triggers_and_sessions_rotate(
    db: postgres.PostgresStore, writer: postgres.PostgresWriteBehind
) -> None:
    start = db.last_user_change()
    await check_account_changes_and_sessions(db, writer)
    changes = await db.user_changes_after(start)
    assert len(changes) == 4 and db.last_user_change() == changes[-1][0]
    await writer.execute(
        ops.insert_user(id="u2", username="bob", email=None, password_hash="h", created_at=T0)
    )
    await writer.execute(ops.set_password("u2", "h2"))
    assert [user for _, user in await db.user_changes_after(changes[-1][0])] == ["u2"]
    await writer.execute(ops.prune_user_changes(4e9))
    assert await db.user_changes_after(0) == []


async def test_skeletons_users_page_admins_and_upload_usage(
    db: postgres.PostgresStore, writer: postgres.PostgresWriteBehind, config: StorageConfig
) -> None:
    sql(config, "INSERT INTO users (id, username, email, password_hash)"
                " VALUES ('u9', 'alice', 'a@b.c', 'h')")  # fmt: skip
    assert db.users_without_keys() == [("u9", "alice", "a@b.c")]
    assert await db.user_like("allce", None) is None
    await writer.execute(ops.set_user_keys("u9", "alice", "a@b.c"))
    assert db.users_without_keys() == []
    assert (await db.user_like(skeleton("aIice"), skeleton("x@y.z"))).id == "u9"  # type: ignore[union-attr]
    assert (await db.user_like(skeleton("bob"), skeleton("A@B.C"))).id == "u9"  # type: ignore[union-attr]

    for user_id, name in [("u1", "Bob"), ("u2", "carol"), ("u3", "_dave")]:
        await writer.execute(
            ops.insert_user(id=user_id, username=name, email=None, password_hash="h",
                            created_at=T0, role="admin")
        )  # fmt: skip
    assert [u.username for u in await db.users_page(limit=10)] == ["_dave", "alice", "Bob", "carol"]
    assert [u.username for u in await db.users_page(limit=1, after="ALICE")] == ["Bob"]
    await writer.execute(ops.set_user_ban("u1", base.FOREVER, None))
    assert await db.admin_count() == 2

    for file_id, uploader, size in [("f1", "u1", 10), ("f2", "u1", 5), ("f3", "u2", 7)]:
        await writer.execute(
            ops.insert_file(id=file_id, uploader_id=uploader, name="x", size=size,
                            content_type="text/plain", created_at=T0)
        )  # fmt: skip
    assert db.upload_usage() == {"u1": 15, "u2": 7}


async def test_user_removal_ops_and_exports(
    db: postgres.PostgresStore, writer: postgres.PostgresWriteBehind
) -> None:
    await writer.execute(ops.add_member("general", "u1", "member", T0))
    for seq in (1, 2):
        writer.submit(msg(seq))
    writer.submit(dm(1, sender="u1", recipient="u2"))
    await writer.execute(dm(2, sender="u2", recipient="u1"))
    assert [m.id for m in await db.messages_by_user("u1")] == ["general-1", "general-2"]
    assert [d.id for d in await db.dms_of_user("u1")] == ["d1", "d2"]
    await writer.execute(ops.edit_message("general-1", "edited", T0))
    await writer.execute(ops.delete_user_messages("u1", T0))
    await writer.execute(ops.edit_message("general-1", "too late", T0))  # deleted: no effect
    await writer.execute(ops.delete_user_dms("u1"))
    await writer.execute(ops.remove_user_memberships("u1"))
    assert {(m.content, m.deleted_at) for m in await db.messages_by_user("u1")} == {("", T0)}
    assert [d.id for d in await db.dms_of_user("u1")] == ["d2"]
    assert db.room_member_ids("general") == set()


# --------------------------------------------------------------------------- issue 15


async def test_read_markers_unread_and_mentions(
    db: postgres.PostgresStore, writer: postgres.PostgresWriteBehind
) -> None:
    await writer.execute(ops.set_read_marker("u2", "general", 5))
    await writer.execute(ops.set_read_marker("u2", "general", 3))  # never moved back
    await writer.execute(ops.set_read_marker("u2", "u1:u2", 1))
    assert await db.read_markers("u2") == {"general": 5, "u1:u2": 1}
    await writer.execute(ops.set_read_marker("u3", "general", 2))
    assert await db.conversation_markers("general", ["u2", "u3", "u4"]) == {"u2": 5, "u3": 2}
    assert await db.conversation_markers("u1:u2", ["u1"]) == {}
    for seq in range(1, 9):
        writer.submit(msg(seq, user="u2" if seq == 7 else "u1"))
    writer.submit(ops.set_mentions("general-6", ["u2", "u3"], False))
    writer.submit(ops.set_mentions("general-8", [], True))
    await writer.execute(ops.delete_message("general-4", T0))
    assert await db.room_unread("general", "u2", 0, 100) == (6, 2)  # not 4 (deleted), not 7 (own)
    assert await db.room_unread("general", "u2", 5, 100) == (2, 2)
    assert await db.room_unread("general", "u3", 5, 100) == (3, 2)
    assert await db.room_unread("general", "u2", 0, 2) == (2, 0)  # capped
    row = await db.message_by_id("general-6")
    assert row is not None and (row.mentions, row.mentions_room) == ('["u2","u3"]', 0)


async def test_conversations_reactions_replies_and_dm_parity(
    db: postgres.PostgresStore, writer: postgres.PostgresWriteBehind
) -> None:
    for seq, sender, recipient in [(1, "u1", "u2"), (2, "u2", "u1"), (3, "u3", "u1"),
                                   (4, "u2", "u1"), (5, "u2", "u1")]:  # fmt: skip
        writer.submit(dm(seq, sender=sender, recipient=recipient))
    await writer.execute(ops.set_read_marker("u1", "u1:u2", 2))
    await writer.execute(ops.delete_dm("d4", T0))
    conversations = await db.conversations("u1", limit=10, unread_cap=100)
    assert [(c.peer_id, c.last.id, c.last_read_seq, c.unread) for c in conversations] == [
        ("u2", "d5", 2, 1),  # d4 is deleted
        ("u3", "d3", 0, 1),
    ]
    assert [c.peer_id for c in await db.conversations("u2", limit=1, unread_cap=100)] == ["u1"]
    await writer.execute(ops.set_dm_reply("d5", "d1"))
    await writer.execute(ops.edit_dm("d5", "changed", T0))
    assert await db.dm_by_id("d5") == base.DirectMessageRow(
        "d5", 5, "u1:u2", "u2", "u1", "changed", None, T0, "d1", T0, None
    )
    assert (await db.dm_by_id("d4")).deleted_at == T0  # type: ignore[union-attr]
    assert await db.dm_by_id("nope") is None

    await writer.execute(msg(1))
    for seq in (2, 3, 4):
        writer.submit(msg(seq, reply_to="general-1"))
        writer.submit(ops.count_reply("general-1", 1))
    writer.submit(ops.add_reaction("general-1", "👍", "u2", T0))
    writer.submit(ops.add_reaction("general-1", "👍", "u2", T0))  # already there
    writer.submit(ops.add_reaction("general-1", "🎉", "u3", "2026-01-01T00:00:01.000Z"))
    writer.submit(ops.add_reaction("general-2", "👍", "u3", T0))
    await writer.execute(ops.remove_reaction("general-2", "👍", "u3"))
    assert await db.reactions(["general-1", "general-2", "x"]) == {
        "general-1": [("👍", "u2"), ("🎉", "u3")]
    }
    assert (await db.message_by_id("general-1")).reply_count == 3  # type: ignore[union-attr]
    page = await db.replies_page("general-1", limit=2)
    assert [m.seq for m in page] == [3, 4]
    assert [m.seq for m in await db.replies_page("general-1", before=3, limit=2)] == [2]
    writer.submit(ops.delete_message("general-3", T0))
    for _ in range(4):  # never below 0
        writer.submit(ops.count_reply("general-1", -1))
    await writer.execute(ops.count_reply("general-1", 1))
    assert (await db.message_by_id("general-1")).reply_count == 1  # type: ignore[union-attr]
    assert [m.seq for m in await db.replies_page("general-1", limit=5)] == [2, 4]  # live only


async def test_search_ranks_marks_pages_and_follows_edits(
    db: postgres.PostgresStore, writer: postgres.PostgresWriteBehind
) -> None:
    contents = ["The Zebra crossing", "zebra zebra zebra", "a zebra-crossing sign", "no match"]
    for seq, content in enumerate(contents, start=1):
        writer.submit(ops.insert_message(id=f"m{seq}", room_id="general", seq=seq,
                                         user_id="u1", content=content, created_at=T0))  # fmt: skip
    writer.submit(ops.insert_message(id="m5", room_id="tech", seq=1, user_id="u1",
                                     content="zebra elsewhere", created_at=T0))  # fmt: skip
    await writer.execute(dm(1, sender="u1", recipient="u2"))
    await writer.execute(ops.edit_dm("d1", "a Zébra in a DM", T0))

    hits = await db.search_messages(["zebra"], ["general"], before_id=None, limit=10)
    assert [h.message.id for h in hits] == ["m3", "m2", "m1"]  # newest first
    assert {h.message.id: h.snippet for h in hits}["m1"] == "The <mark>Zebra</mark> crossing"
    ranks = {h.message.id: h.rank for h in hits}
    assert ranks["m2"] < ranks["m1"]  # lower is better: three matches beat one
    both = await db.search_messages(["zebra", "crossing"], ["general"], before_id=None, limit=9)
    assert [h.message.id for h in both] == ["m3", "m1"]
    page = await db.search_messages(["zebra"], ["general", "tech"], before_id="m3", limit=1)
    assert [h.message.id for h in page] == ["m2"]
    direct = await db.search_direct(["zebra"], "u2", before_id=None, limit=10)
    assert [(h.message.id, h.snippet) for h in direct] == [("d1", "a <mark>Zébra</mark> in a DM")]
    accented = await db.search_direct(["zébra", "dm"], "u1", before_id=None, limit=10)
    assert [h.snippet for h in accented] == ["a <mark>Zébra</mark> in a <mark>DM</mark>"]
    long = "Très, très long: " * 12 + "le zèbre à la fin."
    await writer.execute(ops.insert_message(id="m6", room_id="random", seq=1, user_id="u1",
                                            content=long, created_at=T0))  # fmt: skip
    (hit,) = await db.search_messages(["zebre"], ["random"], before_id=None, limit=10)
    assert "<mark>zèbre</mark> à la fin" in hit.snippet and len(hit.snippet) < len(long)
    assert hit.snippet.replace("<mark>", "").replace("</mark>", "") in long
    assert await db.search_direct(["zebra"], "u3", before_id=None, limit=10) == []

    await writer.execute(ops.edit_message("m1", "a giraffe now", T0))
    await writer.execute(ops.delete_message("m2", T0))
    hits = await db.search_messages(["zebra"], ["general"], before_id=None, limit=10)
    assert [h.message.id for h in hits] == ["m3"]
    hits = await db.search_messages(["giraffe"], ["general"], before_id=None, limit=10)
    assert [h.message.id for h in hits] == ["m1"]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(words=st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=4))
async def test_search_words_are_never_read_as_query_syntax(
    db: postgres.PostgresStore, words: list[str]
) -> None:
    for search in (
        db.search_messages(words, ["general"], before_id=None, limit=5),
        db.search_direct(words, "u1", before_id="m", limit=5),
    ):
        assert await search == []  # nothing stored: no match, and never an error
