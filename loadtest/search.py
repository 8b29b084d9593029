"""Search latency: ``SqliteStore.search_messages`` over a large database, p50 and p99.

The database gets ``--messages`` room messages (1M by default) of 6-20 words drawn from a
5,000-word vocabulary with a Zipf-like law (word ``k`` is ``1/k`` as frequent as the most
common), inserted through the real schema, so the FTS5 index is built by the real
triggers. It is built once per schema and size and kept in ``~/.cache/fastchat-loadtest/``.
Then each query kind runs ``--queries`` times (different words of the same kind) through
``chat.search``'s own expression builder, as a user who may see the 3 default rooms:

* ``common``: one of the 10 most frequent words (millions of matches: the newest page),
* ``mid``: ranks 100-1,000, ``rare``: ranks 4,000-5,000,
* ``two-words``: two mid words (both must match).

On a shared machine run it under ``flock /tmp/bench.lock``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import statistics
import time
from pathlib import Path

import apsw

from fastchat.chat.search import match_expression, query_words
from fastchat.clock import utc_now_iso
from fastchat.config import StorageConfig
from fastchat.ids import new_id
from fastchat.storage import sqlite
from fastchat.storage.ops import insert_message

CACHE = Path.home() / ".cache" / "fastchat-loadtest"
ROOMS = ["general", "random", "tech"]
VOCABULARY = 5000
CHUNK = 100_000


def _word(rank: int) -> str:
    """The word of this frequency rank (a made-up but pronounceable one)."""
    syllables = [
        "ka",
        "lo",
        "mi",
        "nu",
        "pe",
        "ra",
        "si",
        "to",
        "va",
        "ze",
        "bo",
        "du",
        "fi",
        "gu",
        "he",
        "ja",
    ]
    n, parts = rank + 17, []
    while n:
        n, r = divmod(n, len(syllables))
        parts.append(syllables[r])
    return "".join(parts)


def _database(messages: int) -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(repr(sqlite.MIGRATIONS).encode()).hexdigest()[:12]
    path = CACHE / f"search-{key}-{messages}.db"
    if path.exists():
        return path
    building = path.with_suffix(".building")
    for stale in CACHE.glob(building.name + "*"):
        stale.unlink()
    store = sqlite.SqliteStore(StorageConfig(path=building))
    store.open()
    store.close()
    print(f"building {messages:,} messages into {path} ...")
    started = time.perf_counter()
    rng = random.Random(15)
    words = [_word(k) for k in range(VOCABULARY)]
    weights = [1 / (k + 1) for k in range(VOCABULARY)]
    conn = apsw.Connection(str(building))
    conn.pragma("synchronous", "off")
    seqs = dict.fromkeys(ROOMS, 0)
    sql = sqlite.STATEMENTS["insert_message"]
    for first in range(0, messages, CHUNK):
        rows = []
        for _ in range(min(CHUNK, messages - first)):
            room = rng.choice(ROOMS)
            seqs[room] += 1
            content = " ".join(rng.choices(words, weights, k=rng.randint(6, 20)))
            op = insert_message(
                id=new_id(),
                room_id=room,
                seq=seqs[room],
                user_id="u",
                content=content,
                created_at=utc_now_iso(),
            )
            rows.append(op[1])
        with conn:
            conn.executemany(sql, rows)
    conn.pragma("wal_checkpoint(TRUNCATE)")
    conn.close()
    building.rename(path)
    print(f"  {time.perf_counter() - started:.0f} s, {path.stat().st_size / 2**20:.0f} MiB")
    return path


KINDS = {
    "common": lambda rng: [_word(rng.randrange(10))],
    "mid": lambda rng: [_word(rng.randrange(100, 1000))],
    "rare": lambda rng: [_word(rng.randrange(4000, 5000))],
    "two-words": lambda rng: [_word(rng.randrange(100, 1000)), _word(rng.randrange(100, 1000))],
}


async def _measure(store: sqlite.SqliteStore, queries: int, limit: int) -> None:
    rng = random.Random(1)
    for kind, pick in KINDS.items():
        times, found = [], 0
        for _ in range(queries):
            started = time.perf_counter()
            match = match_expression(query_words(" ".join(pick(rng))))
            hits = await store.search_messages(match, ROOMS, before_id=None, limit=limit)
            times.append((time.perf_counter() - started) * 1000)
            found += len(hits)
        times.sort()
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        print(
            f"{kind:>10}: p50 {statistics.median(times):6.2f} ms  p99 {p99:6.2f} ms"
            f"  ({found / queries:.1f} results per query)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--limit", type=int, default=20)
    args = parser.parse_args()
    store = sqlite.SqliteStore(StorageConfig(path=_database(args.messages)))
    store.open()
    try:
        asyncio.run(_measure(store, args.queries, args.limit))
    finally:
        store.close()


if __name__ == "__main__":
    main()
