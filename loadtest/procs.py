"""Servers under test: spawn them pinned to a CPU, and read their CPU time and RSS from /proc."""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.server import ROOT, TomlText, launch, write_config

CACHE = Path.home() / ".cache" / "fastchat-loadtest"
RELAYS = ("websockets", "bun")
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_FASTCHAT_URL = re.compile(r"fastchat listening on http://(\S+)")
_RELAY_URL = re.compile(r"relay listening on (ws://\S+)")

# Limits lifted so the generator measures fan-out, not the per-user flood protection.
LOAD_LIMITS = {
    "messages_per_second": 1_000_000.0,
    "burst": 1_000_000,
    "flood_strikes": 1_000_000,
    "auth_per_minute": 1_000_000,
    "max_connections_per_ip": 1_000_000,
    "max_connections_per_user": 1_000_000,
}


def cpu_seconds(pid: int, tid: int | None = None, *, system: bool = False) -> float:
    """User + system CPU time of ``pid`` (all threads, or only thread ``tid``), in seconds;
    with ``system``, only the time spent in the kernel (system calls: the sockets' writes).

    The main thread's id is the pid: ``cpu_seconds(pid, pid)`` is the event loop's share of
    a server that runs other threads (fastchat's storage writer and checkpointer).
    """
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    if system:
        return int(fields[12]) / _CLK_TCK
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def write_calls(pid: int) -> int:
    """Write system calls made by ``pid`` so far (``syscw`` in /proc/PID/io: socket writes)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("syscw:"):
            return int(line.split()[1])
    raise RuntimeError(f"no syscw for pid {pid}")


def rss_kib(pid: int, *, peak: bool = False) -> int:
    """Resident set size of ``pid`` in KiB: now (VmRSS), or its peak so far (VmHWM)."""
    field = "VmHWM:" if peak else "VmRSS:"
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def pin(cpus: set[int], pid: int = 0) -> set[int]:
    """Pin ``pid`` (0 = this process) to ``cpus`` where they exist; returns the set applied."""
    available = set(range(os.cpu_count() or 1))
    usable = cpus & available or available
    os.sched_setaffinity(pid, usable)
    return usable


def raise_nofile() -> int:
    """Raise this process's soft open-files limit to the hard limit; returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _prepare_child(cpu: int | None) -> None:
    """In the server child before exec: 10k+ connections need the open-files limit raised."""
    raise_nofile()
    if cpu is not None:
        pin({cpu})


@dataclass
class Spawned:
    """A server process we started; ``url`` is its WebSocket URL."""

    name: str
    process: subprocess.Popen[str]
    url: str = ""
    log: list[str] = field(default_factory=list)
    directory: tempfile.TemporaryDirectory[str] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.directory is not None:
            self.directory.cleanup()


def _start(name: str, argv: list[str], pattern: re.Pattern[str], cpu: int | None) -> Spawned:
    log: list[str] = []
    process, url, _reader = launch(
        name, argv, pattern, log, timeout=30, preexec_fn=lambda: _prepare_child(cpu)
    )
    return Spawned(name, process, url, log)


def spawn_fastchat(
    cpu: int | None,
    *,
    compression: str = "shared",
    overrides: list[str] = (),
    run_args: tuple[str, ...] = (),
) -> Spawned:
    """``python -m fastchat run`` on port 0 with a temporary data folder (persistence on).

    ``overrides`` are ``section.key=value`` strings (value in TOML syntax); ``run_args``
    go to ``fastchat run`` (``--workers N``).
    """
    directory = tempfile.TemporaryDirectory(prefix="fastchat-load-")
    sections: dict[str, dict[str, object]] = {
        "websocket": {"compression": compression},
        "limits": dict(LOAD_LIMITS),
    }
    for override in overrides:
        name, _, value = override.partition("=")
        section, _, key = name.partition(".")
        sections.setdefault(section, {})[key] = TomlText(value)
    config = write_config(Path(directory.name), **sections)
    argv = [sys.executable, "-m", "fastchat", "run", "-c", str(config), *run_args]
    spawned = _start("fastchat", argv, _FASTCHAT_URL, cpu)
    spawned.url = f"ws://{spawned.url}/ws"
    spawned.directory = directory
    return spawned


def find_bun(path: str | None = None) -> str:
    """The Bun executable: ``path``, else ``bun`` on PATH, else the one in CACHE."""
    cached = CACHE / "node_modules" / ".bin" / "bun"
    found = path or shutil.which("bun") or (str(cached) if cached.exists() else None)
    if found is None or not os.access(found, os.X_OK):
        raise SystemExit(
            f"--relay bun: no Bun executable at {found or 'PATH or ' + str(cached)}; "
            f"install it with: npm install --prefix {CACHE} bun  (or give --bun PATH)"
        )
    return found


def spawn_relay(
    kind: str, cpu: int | None, *, compression: bool = False, bun: str | None = None
) -> Spawned:
    """A baseline relay on port 0: ``websockets`` (:mod:`loadtest.ws_relay`, which always
    accepts permessage-deflate) or ``bun`` (``loadtest/bun_relay.ts`` run by ``bun``, with
    permessage-deflate only if ``compression``)."""
    if kind == "websockets":
        argv = [sys.executable, "-m", "loadtest.ws_relay", "--port", "0"]
    elif kind == "bun":
        argv = [find_bun(bun), str(ROOT / "loadtest" / "bun_relay.ts"), "--port", "0"]
        argv += ["--compression"] if compression else []
    else:
        raise ValueError(f"unknown relay {kind!r}")
    return _start(kind, argv, _RELAY_URL, cpu)
