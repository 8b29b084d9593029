"""Fan-out across nodes: a real redis-server, a throwaway PostgreSQL and N ``fastchat run``
nodes (or one ``fastchat run --workers N``), measured by :mod:`loadtest.fanout` with the
members spread over the nodes.

    python -m loadtest.cluster --nodes 2 -- --clients 1000 --publishers 10 --seconds 10
    python -m loadtest.cluster --nodes 1 --broker local -- ...    # the single node, same store
    python -m loadtest.cluster --workers 2 -- ...                   # one port, two processes

Everything after ``--`` goes to ``loadtest.fanout`` (``--url``, ``--server-pid`` and
``--redis-pid`` are added). Node k is pinned to CPU k modulo the CPUs (``--no-pin``: not
pinned); Redis, PostgreSQL and the generator are not pinned by this script.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from loadtest import fanout, procs
from tests.support.postgres import PostgresCluster, bin_dir
from tests.support.redis import RedisServer

_SECRET = "a-load-test-cluster-jwt-secret-of-32-bytes"
_READY_SECONDS = 30.0


def worker_pids(parent: int) -> list[int]:
    """The processes ``fastchat run --workers N`` started."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [int(pid) for pid in children]


def start_nodes(args: argparse.Namespace, dsn: str, redis_url: str) -> list[procs.Spawned]:
    overrides = [
        'storage.backend="postgres"',
        f'storage.dsn="{dsn}"',
        f'auth.jwt_secret="{_SECRET}"',
        f'broker.kind="{args.broker}"',
        f'broker.url="{redis_url}"',
        *args.set,
    ]
    run_args = ("--workers", str(args.workers)) if args.workers > 1 else ()
    cpus = os.cpu_count() or 1
    nodes = []
    for number in range(args.nodes):
        cpu = None if args.no_pin or args.workers > 1 else number % cpus
        nodes.append(procs.spawn_fastchat(cpu, overrides=overrides, run_args=run_args))
    if args.workers > 1:  # each worker says it listens; the first one already did
        deadline = time.monotonic() + _READY_SECONDS
        while sum("fastchat listening on" in line for line in nodes[0].log) < args.workers:
            if time.monotonic() > deadline:
                raise SystemExit("the workers did not all start:\n" + "\n".join(nodes[0].log))
            time.sleep(0.05)
    return nodes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.cluster", description=__doc__)
    parser.add_argument(
        "--nodes", type=int, help="fastchat run processes (default 2; 1 with --workers)"
    )
    parser.add_argument("--workers", type=int, default=1, help="fastchat run --workers N")
    parser.add_argument("--broker", choices=["redis", "local"], default="redis")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the nodes to CPUs")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("fanout", nargs=argparse.REMAINDER, help="-- then loadtest.fanout options")
    args = parser.parse_args(argv)
    args.nodes = args.nodes or (1 if args.workers > 1 else 2)
    rest = args.fanout[1:] if args.fanout[:1] == ["--"] else args.fanout
    if args.broker == "local" and (args.nodes > 1 or args.workers > 1):
        parser.error("several nodes or workers need --broker redis")
    binaries = bin_dir()
    if binaries is None:
        raise SystemExit("PostgreSQL is not installed")
    with tempfile.TemporaryDirectory(prefix="fastchat-cluster-") as folder:
        redis = RedisServer(Path(folder)).start()
        postgres = PostgresCluster(binaries).start()
        nodes: list[procs.Spawned] = []
        try:
            nodes = start_nodes(args, postgres.new_database(), redis.url)
            pids = worker_pids(nodes[0].pid) if args.workers > 1 else [n.pid for n in nodes]
            extra = [f"--url={node.url}" for node in nodes]
            extra += [f"--server-pid={pid}" for pid in pids]
            if args.broker == "redis" and redis.process is not None:
                extra.append(f"--redis-pid={redis.process.pid}")
            return fanout.main([*extra, *rest])
        except BaseException:
            for number, node in enumerate(nodes):
                print(f"--- node {number} log ---", *node.log[-120:], sep="\n", file=sys.stderr)
            raise
        finally:
            for node in nodes:
                node.stop()
            redis.stop()
            postgres.remove()


if __name__ == "__main__":
    sys.exit(main())
