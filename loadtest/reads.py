"""History page and catch-up read latency on a big database, cache miss included.

The reads a server makes when the room's history window in memory does not reach: a
history page (``messages_page(before=seq)``) and a catch-up (``messages_page(after=seq)``,
what ``join_room`` with ``since`` reads), each followed by the page's reactions, as
``chat/history.py`` does. Each run evicts the database file from the OS page cache
(``posix_fadvise(DONTNEED)``) and opens a new connection (an empty SQLite page cache), so
the first reads go to the disk; ``seq`` is drawn at random over the whole history, so most
reads of a big database miss both caches.

``python -m loadtest.reads --db PATH`` (a database that ``loadtest.store --prefill``
built, or a server's); on a shared machine run it under ``flock /tmp/bench.lock``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from pathlib import Path

from fastchat.config import StorageConfig
from fastchat.protocol import DEFAULT_HISTORY_LIMIT
from fastchat.storage import sqlite


def evict(path: Path) -> None:
    """Drop the database file (and its WAL) from the OS page cache."""
    for file in (path, path.with_name(path.name + "-wal")):
        if file.exists():
            fd = os.open(file, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


async def _measure(store: sqlite.SqliteStore, kind: str, samples: int, limit: int) -> list[float]:
    rng = random.Random(kind)
    rooms = {room: seq for room, seq in store.open().max_room_seq.items() if seq > limit}
    if not rooms:
        raise SystemExit("the database has no room with more than one page of messages")
    names = sorted(rooms)
    took = []
    for _ in range(samples):
        room = rng.choice(names)
        seq = rng.randint(1, rooms[room])
        started = time.perf_counter()
        if kind == "page":
            rows = await store.messages_page(room, before=seq, limit=limit + 1)
        else:
            rows = await store.messages_page(room, after=seq, limit=limit + 1)
        await store.reactions([row.id for row in rows])
        took.append(time.perf_counter() - started)
    return took


def run(path: Path, kind: str, samples: int, limit: int) -> dict[str, float]:
    """One cold run of ``samples`` reads of ``kind`` (``page`` or ``catch_up``), in ms."""
    evict(path)
    store = sqlite.SqliteStore(StorageConfig(path=path))
    try:
        took = asyncio.run(_measure(store, kind, samples, limit))
    finally:
        store.close()
    took_ms = sorted(t * 1000 for t in took)
    return {
        "first": round(took[0] * 1000, 2),
        "p50": round(statistics.median(took_ms), 3),
        "p99": round(took_ms[int(len(took_ms) * 0.99)], 3),
        "max": round(took_ms[-1], 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.reads", description=__doc__)
    parser.add_argument(
        "--db", type=Path, required=True, help="the database (opened as the server opens it)"
    )
    parser.add_argument("--samples", type=int, default=2000, help="reads per kind and run")
    parser.add_argument("--limit", type=int, default=DEFAULT_HISTORY_LIMIT)
    parser.add_argument("--repeat", type=int, default=1, help="cold runs per kind")
    args = parser.parse_args(argv)
    if not args.db.exists():
        parser.error(f"{args.db}: no such database")
    size = args.db.stat().st_size / 2**30
    print(f"{args.db} ({size:.1f} GiB), {args.samples} reads per run, limit {args.limit}")
    for _ in range(args.repeat):
        for kind in ("page", "catch_up"):
            result = run(args.db, kind, args.samples, args.limit)
            print(
                f"{kind:>8}: first {result['first']} ms, p50 {result['p50']} ms, "
                f"p99 {result['p99']} ms, max {result['max']} ms",
                flush=True,
            )


if __name__ == "__main__":
    main(sys.argv[1:])
