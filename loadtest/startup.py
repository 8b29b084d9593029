"""Start-up time of ``fastchat run`` on a big database.

Copies ``--db`` (a database that ``loadtest.store --prefill`` built, or a server's) into
``--dir``, then starts a real ``fastchat run`` on the copy ``--repeat`` times and reports
how long each took from ``exec`` to its "fastchat listening on" line, then stops it with
SIGTERM. Before each start the copy is evicted from the OS page cache
(``posix_fadvise(DONTNEED)``): a cold start, as after a reboot. The first start of a
database made by an older schema includes its migration. What start-up reads is listed in
docs/benchmarks.md ("A big database and any clientId").

``python -m loadtest.startup --db PATH --dir /a/disk/folder``; on a shared machine run it
under ``flock /tmp/bench.lock``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from loadtest.reads import evict
from tests.support.server import ROOT, ServerProcess, write_config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.startup", description=__doc__)
    parser.add_argument("--db", type=Path, required=True, help="the database to copy")
    parser.add_argument("--dir", default=None, help="folder for the copy (a disk!)")
    parser.add_argument("--repeat", type=int, default=3, help="starts, one after the other")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per start")
    parser.add_argument(
        "--code", type=Path, default=ROOT, help="the checkout whose fastchat runs (A/B runs)"
    )
    args = parser.parse_args(argv)
    if not args.db.exists():
        parser.error(f"{args.db}: no such database")
    with tempfile.TemporaryDirectory(prefix="fastchat-startup-", dir=args.dir) as folder:
        server = ServerProcess(write_config(Path(folder)), Path(folder) / "data", cwd=args.code)
        path = server.data_dir / "chat.db"
        path.parent.mkdir(parents=True)
        shutil.copyfile(args.db, path)
        size = path.stat().st_size / 2**30
        print(f"{args.db} ({size:.1f} GiB), copied to {path}; fastchat of {args.code}")
        for run in range(1, args.repeat + 1):
            evict(path)
            started = time.perf_counter()
            server.start(timeout=args.timeout)
            took = time.perf_counter() - started
            code = server.stop()
            print(f"start {run}: {took:.2f} s to listening (exit code {code})", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
