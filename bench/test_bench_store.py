"""The write-behind writer: one transaction per 1,000 messages, and the cost of queueing one.

A real SQLite database in a temporary folder (on the machine's disk, so ``synchronous =
full`` pays a real fsync per commit). A batch round is everything a burst of 1,000 chat
messages costs the storage: 1,000 ``submit`` calls on the loop thread, the writer thread's
single transaction (one ``INSERT ... FROM jsonb_each``), and the ``on_done`` hop back to the
loop. ``python -m loadtest.store`` measures the same path sustained, on a database that
already holds 1M messages.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.support import CONTENT, ROOM_ID, USER_ID, bench_config
from fastchat.clock import utc_now_iso
from fastchat.ids import new_id
from fastchat.storage import ops
from fastchat.storage.base import Op
from fastchat.storage.sqlite import SqliteStore, WriteBehind

BATCH = 1000


def _messages(first_seq: int) -> list[Op]:
    """Messages as the chat stores them, with time-ordered clientIds as the browser sends."""
    created_at = utc_now_iso()
    return [
        ops.insert_message(
            id=new_id(),
            room_id=ROOM_ID,
            seq=first_seq + i,
            user_id=USER_ID,
            content=CONTENT,
            client_id=new_id(),
            created_at=created_at,
        )
        for i in range(BATCH)
    ]


@pytest.fixture(params=["full", "normal"])
def writer(
    request: pytest.FixtureRequest, loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> Iterator[WriteBehind]:
    """A started WriteBehind that commits exactly when BATCH ops are queued."""
    # A linger far longer than a round, so every batch is exactly BATCH ops.
    config = bench_config(
        tmp_path, synchronous=request.param, batch_max=BATCH, flush_interval_ms=1000
    ).storage
    store = SqliteStore(config)
    store.open()
    writer = WriteBehind(config, loop)
    writer.start()
    yield writer
    assert loop.run_until_complete(writer.close(10.0)) == 0
    store.close()


@pytest.mark.benchmark(group="store-batch-1000")
def test_write_behind_batch(
    benchmark, writer: WriteBehind, loop: asyncio.AbstractEventLoop
) -> None:
    next_seq = 1

    def setup() -> tuple[tuple[list[Op]], dict]:
        nonlocal next_seq
        batch = _messages(next_seq)
        next_seq += BATCH
        return (batch,), {}

    async def commit(batch: list[Op]) -> None:
        done: asyncio.Future[None] = loop.create_future()
        last = len(batch) - 1

        def on_done(error: BaseException | None) -> None:
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

        for i, op in enumerate(batch):
            assert writer.submit(op, on_done if i == last else None)
        await done

    batches_before = writer.batches_committed
    benchmark.pedantic(
        lambda batch: loop.run_until_complete(commit(batch)),
        setup=setup,
        rounds=30,
        warmup_rounds=2,
    )
    batches = writer.batches_committed - batches_before
    assert batches >= 1
    assert writer.ops_committed == batches * BATCH  # one transaction per round
    assert writer.op_errors_total == 0


@pytest.mark.benchmark(group="store-submit")
def test_submit_1000(benchmark, loop: asyncio.AbstractEventLoop, tmp_path: Path) -> None:
    """1,000 ``submit`` calls into a writer whose thread is not running (nothing drains)."""
    config = bench_config(tmp_path).storage
    batch = _messages(1)

    def on_done(error: BaseException | None) -> None:
        raise AssertionError("never called: nothing is committed")

    def setup() -> tuple[tuple[WriteBehind], dict]:
        return (WriteBehind(config, loop),), {}

    def submit_all(writer: WriteBehind) -> WriteBehind:
        submit = writer.submit
        for op in batch:
            submit(op, on_done)
        return writer

    writer = benchmark.pedantic(submit_all, setup=setup, rounds=500, warmup_rounds=10)
    assert writer.queue_depth == BATCH
