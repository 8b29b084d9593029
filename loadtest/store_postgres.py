"""PostgreSQL write-behind: saturated messages/s, and commit and ack latency at a fixed rate.

The real :class:`fastchat.storage.postgres.PostgresWriteBehind` against a throwaway
PostgreSQL cluster started for the run (``tests/support/postgres.py``, fsync on: durable
commits), its database first filled with ``--prefill`` messages. The ops are built as
``loadtest/store.py`` builds them (``--client-ids``: time-ordered or random, 10 users,
3 rooms; the prefill dated over the month before, as ``loadtest.store`` dates it).

* ``saturated``: ``--window`` messages in flight, as fast as the writer commits them
  (``loadtest.store``'s producer); the clock runs from the ``--warmup``-th ack.
* ``rate``: ``--rate`` messages per second for ``--seconds``; each message's ack latency is
  the time from ``submit`` to its ``on_done`` on the loop, each batch's commit latency the
  writer's own measure.

``python -m loadtest.store_postgres --help`` lists the options; on a shared machine run it
under ``flock /tmp/bench.lock``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

import psycopg
import uvloop

from fastchat.config import StorageConfig
from fastchat.storage import base, postgres
from loadtest.store import ROOMS, _messages, _produce, prefill_sent_at
from tests.support.postgres import PostgresCluster, bin_dir


def _percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(int(len(ordered) * 0.99), len(ordered) - 1)]
    return f"p50 {statistics.median(ordered) * 1000:.2f} / p99 {p99 * 1000:.2f} ms"


def _prefill(config: StorageConfig, count: int, client_ids: str) -> dict[str, int]:
    """``count`` messages COPYed in; returns each room's last seq."""
    store = postgres.PostgresStore(config)
    store.open()
    store.close()
    seqs = dict.fromkeys(ROOMS, 0)
    columns = "id, room_id, seq, user_id, content, message_type, reply_to, client_id,"
    columns += " attachment_id, created_at"
    now = time.time()
    with psycopg.connect(config.dsn, autocommit=True) as conn:
        for first in range(0, count, 100_000):
            sent_at = prefill_sent_at(now, first, count)
            ops = _messages(min(100_000, count - first), seqs, client_ids, 100, first, sent_at)
            with (
                conn.transaction(),
                conn.cursor() as cursor,
                cursor.copy(f"COPY messages ({columns}) FROM STDIN") as copy,
            ):
                for _, params in ops:
                    copy.write_row(params)
        conn.execute("VACUUM ANALYZE messages")
    return seqs


async def _saturated(config: StorageConfig, seqs: dict[str, int], args: argparse.Namespace):
    ops = _messages(args.warmup + args.messages, seqs, args.client_ids, 100, seed=-1)
    writer = postgres.PostgresWriteBehind(config, asyncio.get_running_loop())
    writer.start()
    low = max(args.window - config.batch_max, 0)
    seconds, cpu, _, batches, _ = await _produce(writer, ops, args.warmup, args.window, low)
    commits = list(writer.recent_commit_seconds)
    assert await writer.close(30) == 0
    print(
        f"saturated: {args.messages / seconds:,.0f} messages/s ({args.messages:,} in "
        f"{seconds:.2f} s, {batches} batches of batch_max {config.batch_max}), "
        f"fastchat CPU {cpu / args.messages * 1e6:.1f} µs/message, "
        f"commit {_percentiles(commits)}",
        flush=True,
    )


async def _at_rate(config: StorageConfig, seqs: dict[str, int], args: argparse.Namespace):
    total = int(args.rate * args.seconds)
    ops = _messages(total, seqs, args.client_ids, 100, seed=-2)
    loop = asyncio.get_running_loop()
    writer = postgres.PostgresWriteBehind(config, loop)
    writer.start()
    acks: list[float] = []
    done = asyncio.Event()

    def on_done_for(submitted: float) -> base.OnDone:
        def on_done(error: BaseException | None) -> None:
            assert error is None, error
            acks.append(time.perf_counter() - submitted)
            if len(acks) == total:
                done.set()

        return on_done

    started = loop.time()
    for index, op in enumerate(ops):
        due = started + index / args.rate
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        writer.submit(op, on_done_for(time.perf_counter()))
    await done.wait()
    commits = list(writer.recent_commit_seconds)
    assert await writer.close(30) == 0
    print(
        f"{args.rate:g} msg/s for {args.seconds:g} s: ack {_percentiles(acks)}, "
        f"commit {_percentiles(commits)} ({len(commits)} commits)",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.store_postgres", description=__doc__)
    parser.add_argument("--prefill", type=int, default=1_000_000, help="messages stored first")
    parser.add_argument("--client-ids", choices=("v7", "random"), default="v7")
    parser.add_argument("--messages", type=int, default=500_000, help="messages measured")
    parser.add_argument("--warmup", type=int, default=50_000)
    parser.add_argument("--window", type=int, default=10_000, help="messages in flight")
    parser.add_argument("--batch-max", type=int, default=StorageConfig().batch_max)
    parser.add_argument("--flush-interval-ms", type=int, default=StorageConfig().flush_interval_ms)
    parser.add_argument("--synchronous", choices=("full", "normal"), default="full")
    parser.add_argument("--rate", type=float, default=500.0, help="messages/s of the rate run")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the rate run")
    parser.add_argument(
        "--pg-setting", action="append", default=[], metavar="NAME=VALUE",
        help="a setting of the benchmark's PostgreSQL server (repeatable)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    settings = dict(setting.split("=", 1) for setting in args.pg_setting)
    binaries = bin_dir()
    if binaries is None:
        parser.error("PostgreSQL is not installed (apt-get install postgresql)")
    cluster = PostgresCluster(binaries, durable=True, settings=settings).start()
    try:
        config = StorageConfig(
            backend="postgres",
            dsn=cluster.new_database(),
            synchronous=args.synchronous,
            batch_max=args.batch_max,
            flush_interval_ms=args.flush_interval_ms,
            queue_max=max(args.window * 2, StorageConfig().queue_max),
        )
        print(f"prefilling {args.prefill:,} messages ({args.client_ids} clientIds) ...", flush=True)
        seqs = _prefill(config, args.prefill, args.client_ids)
        uvloop.run(_saturated(config, seqs, args))
        uvloop.run(_at_rate(config, seqs, args))
    finally:
        cluster.remove()


if __name__ == "__main__":
    main(sys.argv[1:])
