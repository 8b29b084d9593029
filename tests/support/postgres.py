"""A throwaway PostgreSQL cluster for tests and benchmarks: ``initdb`` into a temporary
folder (as the ``postgres`` user when run as root: initdb refuses root), ``pg_ctl -w start``
on a free loopback port, a fresh database per server, everything removed at the end."""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest


def bin_dir() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: Debian's newest /usr/lib/postgresql/<ver>/bin,
    else wherever PATH finds initdb; None when PostgreSQL is not installed."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresCluster:
    """One ``postgres`` server on 127.0.0.1 with trust authentication for ``postgres``.

    ``durable=False`` (the tests' default) turns fsync off: the tests kill fastchat, not
    PostgreSQL's machine, so what they check does not depend on PostgreSQL syncing; the
    benchmarks keep it on. ``settings`` are more ``-c name=value`` server settings.
    """

    def __init__(
        self, binaries: Path, *, durable: bool = False, settings: dict[str, str] | None = None
    ) -> None:
        self._bin = binaries
        self._durable = durable
        self._settings = settings or {}
        self.directory = Path(tempfile.mkdtemp(prefix="fastchat-pg-"))
        self.data = self.directory / "data"
        self.port = free_port()
        self._names = itertools.count()
        self._owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        if self._owner is not None:
            os.chown(self.directory, self._owner.pw_uid, self._owner.pw_gid)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")

    def _run(self, tool: str, *args: str) -> None:
        argv = [str(self._bin / tool), *args]
        if self._owner is not None:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            log = self.directory / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stderr}\n{tail}")

    def start(self) -> PostgresCluster:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory}"
        if not self._durable:
            options += " -c fsync=off -c full_page_writes=off"
        options += "".join(f" -c {name}={value}" for name, value in self._settings.items())
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l",
            str(self.directory / "server.log"), "-w", "start",
        )  # fmt: skip
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect everyone; ``immediate``: like a crash)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """Create an empty database; returns its DSN."""
        name = f"fastchat_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def remove(self) -> None:
        """Stop the server if it runs and delete its folder."""
        if (self.data / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)


def start_cluster() -> PostgresCluster:
    """A started cluster for a test; fails when CI=true and PostgreSQL can't run, else skips."""
    binaries = bin_dir()
    try:
        if binaries is None:
            raise RuntimeError("PostgreSQL is not installed (scripts/test installs it)")
        return PostgresCluster(binaries).start()
    except (RuntimeError, OSError, KeyError) as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL could not be started: {exc}")
        pytest.skip(f"PostgreSQL could not be started: {exc}")
