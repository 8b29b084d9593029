"""Write-behind throughput: how many chat messages per second the real writer sustains.

The real :class:`fastchat.storage.sqlite.WriteBehind` on a real database file on disk. The
``insert_message`` ops are built first, as ``chat/messages.py`` builds them (UUIDv7
message ids, ~100 bytes of content, 10 users spread over the 3 default rooms, a clientId
each); building them is chat work, not storage work, so it happens before the clock starts.
Then a coroutine on a uvloop event loop submits them with one ``on_done`` closure per
message, keeping ``--window`` in flight; the writer thread commits batches; the acks come
back on the loop. The clock runs from the ``--warmup``-th ack to the last of
``--messages`` more.

The database first gets ``--prefill`` messages of the same shape (1M by default), so the
indexes are as deep as on a server that has run for a while. The filled database is built
once per schema and kept as a template in ``~/.cache/fastchat-loadtest/``; every run
writes into a fresh copy.

``--client-ids v7`` sends time-ordered clientIds, as the browser client does; ``random``
sends UUIDv4s, as it did before (``crypto.randomUUID()``); ``both`` runs one after the
other. ``--loop-load`` keeps the event loop busy with pure-Python work meanwhile, as a
saturated fan-out does. ``python -m loadtest.store --help`` lists the options; on a shared
machine run it under ``flock /tmp/bench.lock``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import apsw
import orjson
import uvloop

from fastchat.clock import utc_now_iso
from fastchat.config import StorageConfig
from fastchat.ids import new_id
from fastchat.storage import base, sqlite
from fastchat.storage.ops import insert_message

CACHE = Path.home() / ".cache" / "fastchat-loadtest"
ROOMS = ("general", "random", "tech")
USERS = [str(uuid.UUID(int=random.Random(i).getrandbits(128), version=4)) for i in range(10)]
PREFILL_CHUNK = 100_000
PREFILL_DAYS = 30
_getrandbits = random.Random().getrandbits
_VARIANT = "89ab"


def random_client_id() -> str:
    """A random UUIDv4, as ``crypto.randomUUID()`` makes it (cheaper than ``uuid.uuid4()``)."""
    h = f"{_getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


CLIENT_IDS: dict[str, Callable[[], str]] = {"v7": new_id, "random": random_client_id}


@dataclass
class Result:
    """One measured run."""

    client_ids: str
    synchronous: str
    messages: int
    seconds: float
    messages_per_second: float
    batches: int
    cpu_us_per_message: float
    thread_cpu_us_per_message: dict[str, float]
    commit_ms_p50: float
    commit_ms_p99: float
    wal_mb: float
    loop_load: bool
    other_processes_cores: float


def _content(rng: random.Random, size: int) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz  ") for _ in range(size))


def _iso(at: float) -> str:
    """``at`` (Unix seconds) as chat/messages.py stamps ``created_at``."""
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(at))}.{int(at * 1000) % 1000:03d}Z"


def _messages(
    count: int,
    seqs: dict[str, int],
    client_ids: str,
    content_bytes: int,
    seed: int,
    sent_at: Callable[[int], str] | None = None,
) -> list[base.Op]:
    """``count`` insert_message ops as chat/messages.py makes them; advances ``seqs``.
    ``sent_at(i)`` stamps the ``i``-th (now, by default)."""
    rng = random.Random(seed)
    contents = [_content(rng, content_bytes) for _ in range(64)]
    make_client_id = CLIENT_IDS[client_ids]
    ops = []
    for i in range(count):
        room = rng.choice(ROOMS)
        seqs[room] += 1
        ops.append(
            insert_message(
                id=new_id(),
                room_id=room,
                seq=seqs[room],
                user_id=rng.choice(USERS),
                content=rng.choice(contents),
                client_id=make_client_id(),
                created_at=utc_now_iso() if sent_at is None else sent_at(i),
            )
        )
    return ops


def prefill_sent_at(now: float, first: int, prefill: int) -> Callable[[int], str]:
    """``created_at`` of the prefilled messages from the ``first``-th on: ``prefill`` of them
    spread over the :data:`PREFILL_DAYS` before ``now``, the last an hour before the clientId
    window of the run (``base.dedupe_hours``), so that none is in it."""
    since = now - PREFILL_DAYS * 86400
    gap = (PREFILL_DAYS * 86400 - (base.DEDUPE_WINDOW_HOURS + 2) * 3600) / max(prefill, 1)
    return lambda i: _iso(since + (first + i) * gap)


def _template(prefill: int, client_ids: str, content_bytes: int, cache: Path = CACHE) -> Path:
    """The pre-filled database for this schema and fill, built once in ``cache``.

    Its messages are dated as on a server that has run for a while
    (:func:`prefill_sent_at`).
    """
    cache.mkdir(parents=True, exist_ok=True)
    building = cache / "store-template.building"
    for stale in cache.glob(building.name + "*"):
        stale.unlink()
    reader = sqlite.SqliteStore(StorageConfig(path=building))
    reader.open()
    reader.close()
    conn = apsw.Connection(str(building))
    schema = repr((sqlite.MIGRATIONS, conn.pragma("page_size")))
    conn.close()
    key = hashlib.sha256(schema.encode()).hexdigest()[:12]
    path = cache / f"store-{key}-{client_ids}-{prefill}-{content_bytes}.db"
    if path.exists():
        for stale in cache.glob(building.name + "*"):
            stale.unlink()
        return path
    print(f"pre-filling {prefill:,} messages ({client_ids} clientIds) into {path} ...")
    started = time.perf_counter()
    conn = apsw.Connection(str(building))
    conn.pragma("synchronous", "off")
    conn.pragma("cache_size", -4_000_000)  # KiB: the whole fill stays in memory
    seqs = dict.fromkeys(ROOMS, 0)
    sql = sqlite.STATEMENTS["insert_message"]
    since = time.time()
    for first in range(0, prefill, PREFILL_CHUNK):
        count = min(PREFILL_CHUNK, prefill - first)
        ops = _messages(
            count, seqs, client_ids, content_bytes, first, prefill_sent_at(since, first, prefill)
        )
        with conn:
            conn.executemany(sql, [params for _, params in ops])
    conn.pragma("wal_checkpoint(TRUNCATE)")
    conn.close()
    building.rename(path)
    print(f"  {time.perf_counter() - started:.0f} s, {path.stat().st_size / 2**20:.0f} MiB")
    return path


def _seqs(path: Path) -> dict[str, int]:
    conn = apsw.Connection(str(path))
    try:
        return {
            room: conn.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM messages WHERE room_id = ?", (room,)
            ).fetchall()[0][0]
            for room in ROOMS
        }
    finally:
        conn.close()


def _busy_cores() -> float:
    """CPU seconds the whole machine has been busy (all cores, from /proc/stat)."""
    with open("/proc/stat") as stat:
        fields = [int(f) for f in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _thread_cpu() -> dict[str, float]:
    """CPU seconds used so far by each thread of this process, by thread name."""
    return {
        thread.name: time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        for thread in threading.enumerate()
        if thread.ident is not None
    }


class LoopLoad:
    """Stands in for the fan-out of a saturated server: the loop runs slices of pure-Python
    work back to back, yielding to the other callbacks between two slices."""

    SLICE = 2000  # loop iterations per slice (~0.1 ms here)

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            total = 0
            for i in range(self.SLICE):
                total += i * i
            await asyncio.sleep(0)


async def _produce(
    writer: sqlite.WriteBehind,
    ops: list[base.Op],
    warmup: int,
    window: int,
    low: int,
) -> tuple[float, float, dict[str, float], int, float]:
    """Submit ``ops`` keeping ``window`` in flight; (seconds, process CPU, CPU per thread,
    batches, other processes' CPU) measured from the ``warmup``-th ack to the last."""
    loop = asyncio.get_running_loop()
    acked = 0
    in_flight = 0
    failed: list[str] = []
    room_free = asyncio.Event()
    mark: tuple[float, float, dict[str, float], int, float] | None = None

    def on_done_for(message_id: str) -> base.OnDone:
        # One callable per message, called once its batch committed (the chat's PendingAck).
        def done(error: BaseException | None) -> None:
            nonlocal acked, in_flight, mark
            in_flight -= 1
            if error is not None:
                failed.append(f"{message_id}: {error!r}")
            acked += 1
            if acked == warmup:
                mark = (
                    loop.time(),
                    time.process_time(),
                    _thread_cpu(),
                    writer.batches_committed,
                    _busy_cores(),
                )
            if in_flight <= low:
                room_free.set()

        return done

    submit = writer.submit
    ops.reverse()
    while ops or in_flight:
        while ops and in_flight < window:
            op = ops.pop()
            if not submit(op, on_done_for(op[1][0])):
                raise RuntimeError("queue_max reached: lower --window")
            in_flight += 1
        room_free.clear()
        await room_free.wait()
        if failed:
            raise RuntimeError(f"a write failed: {failed[0]}")
    assert mark is not None
    cpu = time.process_time() - mark[1]
    return (
        loop.time() - mark[0],
        cpu,
        {name: used - mark[2].get(name, 0.0) for name, used in _thread_cpu().items()},
        writer.batches_committed - mark[3],
        _busy_cores() - mark[4] - cpu,
    )


async def _run_once(path: Path, args: argparse.Namespace) -> Result:
    config = StorageConfig(
        path=path,
        synchronous=args.synchronous,
        batch_max=args.batch_max,
        flush_interval_ms=args.flush_interval_ms,
        queue_max=max(args.window * 2, StorageConfig().queue_max),
    )
    ops = _messages(
        args.warmup + args.messages, _seqs(path), args.client_ids, args.content_bytes, seed=-1
    )
    gc.collect()
    gc.freeze()  # the pre-built messages are never garbage: keep the collector off them
    load = LoopLoad()
    reader = sqlite.SqliteStore(config)
    reader.open()
    writer = sqlite.WriteBehind(config, asyncio.get_running_loop())
    writer.start()
    if args.loop_load:
        load.start()
    try:
        low = max(args.window - args.batch_max, 0)
        seconds, cpu, threads, batches, others = await _produce(
            writer, ops, args.warmup, args.window, low
        )
        commits = sorted(writer.recent_commit_seconds)
        wal = path.with_name(path.name + "-wal")
        wal_mb = wal.stat().st_size / 2**20 if wal.exists() else 0.0
    finally:
        load.stop()
        assert await writer.close(30) == 0
        reader.close()
        gc.unfreeze()
    return Result(
        client_ids=args.client_ids,
        synchronous=args.synchronous,
        messages=args.messages,
        seconds=round(seconds, 2),
        messages_per_second=round(args.messages / seconds),
        batches=batches,
        cpu_us_per_message=round(cpu / args.messages * 1e6, 2),
        thread_cpu_us_per_message={
            name: round(cpu / args.messages * 1e6, 2) for name, cpu in threads.items()
        },
        commit_ms_p50=round(statistics.median(commits) * 1000, 2),
        commit_ms_p99=round(commits[int(len(commits) * 0.99)] * 1000, 2),
        wal_mb=round(wal_mb, 1),
        other_processes_cores=round(max(others, 0.0) / seconds, 2),
        loop_load=args.loop_load,
    )


def run(args: argparse.Namespace) -> Result:
    """Copy the template into a fresh folder and measure one run."""
    template = _template(args.prefill, args.client_ids, args.content_bytes, args.cache_dir)
    with tempfile.TemporaryDirectory(prefix="fastchat-store-", dir=args.dir) as folder:
        path = Path(folder) / "fastchat.db"
        shutil.copyfile(template, path)
        with path.open("rb+") as copy:
            os.fsync(copy.fileno())  # no write-back of the copy during the run
        return uvloop.run(_run_once(path, args))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.store", description=__doc__)
    parser.add_argument("--messages", type=int, default=1_000_000, help="messages measured")
    parser.add_argument(
        "--warmup", type=int, default=100_000, help="messages written before the clock starts"
    )
    parser.add_argument("--client-ids", choices=("v7", "random", "both"), default="both")
    parser.add_argument("--synchronous", choices=("full", "normal"), default="full")
    parser.add_argument("--prefill", type=int, default=1_000_000, help="messages stored first")
    parser.add_argument("--content-bytes", type=int, default=100)
    parser.add_argument("--batch-max", type=int, default=StorageConfig().batch_max)
    parser.add_argument("--flush-interval-ms", type=int, default=StorageConfig().flush_interval_ms)
    parser.add_argument(
        "--window", type=int, default=5000, help="messages in flight (submitted, not acked)"
    )
    parser.add_argument(
        "--loop-load",
        action="store_true",
        help="keep the event loop saturated with Python work meanwhile, as a busy fan-out does",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per clientId kind")
    parser.add_argument("--dir", default=None, help="folder for the run's database (a disk!)")
    parser.add_argument(
        "--cache-dir", type=Path, default=CACHE, help="folder of the pre-filled templates"
    )
    parser.add_argument("--json", type=Path, default=None, help="append results as JSON lines")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.warmup < 1:
        parser.error("--messages and --warmup must be at least 1")
    kinds = ("v7", "random") if args.client_ids == "both" else (args.client_ids,)
    print(
        f"write-behind, synchronous={args.synchronous}, batch_max={args.batch_max}, "
        f"prefill {args.prefill:,}, {args.content_bytes}-byte messages, "
        f"{len(USERS)} users, {len(ROOMS)} rooms, pid {os.getpid()}"
    )
    for _ in range(args.repeat):
        for kind in kinds:
            result = run(argparse.Namespace(**{**vars(args), "client_ids": kind}))
            print(
                f"{kind:>6} clientIds: {result.messages_per_second:>8,} messages/s "
                f"({result.messages:,} in {result.seconds} s, {result.batches} batches), "
                f"CPU {result.cpu_us_per_message} µs/message "
                f"({', '.join(f'{n} {c}' for n, c in result.thread_cpu_us_per_message.items())}), "
                f"commit p50 "
                f"{result.commit_ms_p50} / p99 {result.commit_ms_p99} ms, WAL {result.wal_mb} MB, "
                f"other processes {result.other_processes_cores} cores"
                + (", loop saturated" if result.loop_load else ""),
                flush=True,
            )
            if args.json is not None:
                with args.json.open("ab") as out:
                    out.write(orjson.dumps(asdict(result)) + b"\n")


if __name__ == "__main__":
    main(sys.argv[1:])
