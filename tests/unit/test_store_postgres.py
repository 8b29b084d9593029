"""fastchat.storage.postgres: schema, reads, and the write-behind writer against a real
PostgreSQL server (the session's throwaway cluster, a new database per test)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import psycopg
import pytest

from fastchat.config import StorageConfig
from fastchat.errors import Overloaded, StorageUnavailable
from fastchat.storage import base, ops, postgres
from loadtest import store_postgres as bench
from tests.support.postgres import PostgresCluster
from tests.support.waiting import wait_until
from tests.unit.test_store import T0, Results, dm, msg


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
    assert len(postgres.MIGRATIONS) == 2  # the same numbers as SQLite's migrations
    assert state.max_room_seq == {"general": 0, "random": 0, "tech": 0}
    assert state.max_dm_seq == 0 and state.clean


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
        await writer.execute(msg(seq, client_id=f"c{seq}"))
    await writer.execute(msg(3, room="tech"))
    for seq in (4, 9):
        await writer.execute(dm(seq, client_id=f"k{seq}"))
    await writer.execute(ops.set_mute("general", "u1", 4e9))
    await writer.execute(ops.set_mute("general", "u2", 1.0))  # long over
    reopened = postgres.PostgresStore(config)
    state = reopened.open()
    assert state.max_room_seq == {"general": 7, "random": 0, "tech": 3}
    assert state.max_dm_seq == 9
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
        writer.submit(msg(seq, client_id=f"c{seq}"))
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

    for seq in (1, 2, 3):
        await writer.execute(dm(seq, client_id=f"d{seq}"))
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
                "--window", "200", "--rate", "200", "--seconds", "0.5"])  # fmt: skip
    out = capsys.readouterr().out
    assert "saturated: " in out and "messages/s" in out
    assert "200 msg/s for 0.5 s: ack p50" in out
