"""Server processes for tests, benchmarks and load tools: ``fastchat run`` on port 0 with a
temporary data folder, the config file it reads, and the process start that waits for its URL."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import tomllib
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_URL = re.compile(r"fastchat listening on (https?://\S+)")


def launch(
    name: str,
    argv: list[str],
    url_pattern: re.Pattern[str],
    log: list[str],
    *,
    timeout: float = 20.0,
    preexec_fn: Callable[[], None] | None = None,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[str], str, threading.Thread]:
    """Start ``argv`` in ``cwd`` (the repository root) and wait until its stderr shows
    ``url_pattern``; ``env`` is added to the environment.

    Every stderr line is appended to ``log`` for as long as the process runs (by the returned
    thread). Returns the process, the pattern's first group and that thread; a process that
    exits or stays silent for ``timeout`` seconds is killed and reported with its log.
    """
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    environment.pop("FASTCHAT_JWT_SECRET", None)
    environment.update(env or {})
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        env=environment,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        preexec_fn=preexec_fn,
    )
    started = threading.Event()
    urls: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            log.append(line.rstrip("\n"))
            match = url_pattern.search(line)
            if match and not urls:
                urls.append(match.group(1))
                started.set()
        started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not started.wait(timeout) or not urls:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        raise RuntimeError(f"{name} did not start:\n" + "\n".join(log[-50:]))
    return process, urls[0], reader


def run_fastchat(
    *args: str, stdin: str = "", cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """``python -m fastchat ARGS`` run to its end in ``cwd`` (the repository root), output
    captured."""
    return subprocess.run(
        [sys.executable, "-m", "fastchat", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


@dataclass
class ServerProcess:
    """A running ``fastchat run``; ``log`` collects its stderr lines.

    ``config_path=None`` runs without ``-c``; ``cwd`` and ``env`` (added to the environment)
    let a test run it as an installed command would be, outside the repository.
    """

    config_path: Path | None
    data_dir: Path
    cwd: Path = ROOT
    env: dict[str, str] = field(default_factory=dict)
    run_args: tuple[str, ...] = ()  # after `fastchat run` (e.g. --workers 2)
    process: subprocess.Popen[str] | None = None
    base_url: str = ""
    log: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None

    @classmethod
    def configured(cls, directory: Path, **sections: dict[str, object]) -> ServerProcess:
        """A server (not yet started) on :func:`write_config`'s file in ``directory``."""
        return cls(write_config(directory, **sections), directory / "data")

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http", "ws", 1) + "/ws"  # https -> wss

    @property
    def host(self) -> str:
        return self.base_url.split("//")[1].rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    def start(self, timeout: float = 20.0) -> ServerProcess:
        config = ["-c", str(self.config_path)] if self.config_path is not None else []
        argv = [sys.executable, "-m", "fastchat", "run", *config, *self.run_args]
        self.process, self.base_url, self._reader = launch(
            "server", argv, _URL, self.log, timeout=timeout, cwd=self.cwd, env=self.env
        )
        return self

    def cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """The fastchat command ``ARGS`` run against this server's config and data."""
        return run_fastchat("-c", str(self.config_path), *args, stdin=stdin)

    def execute_sql(self, sql: str, params: tuple[object, ...] = ()) -> None:
        """Run one statement on this server's database, behind its back (as a shell would),
        on whichever backend its config names; ``sql`` takes ``?`` placeholders."""
        assert self.config_path is not None
        storage = tomllib.loads(self.config_path.read_text()).get("storage", {})
        if storage.get("backend") == "postgres":
            import psycopg  # only the PostgreSQL runs need the driver

            with psycopg.connect(storage["dsn"], autocommit=True) as conn:
                conn.execute(sql.replace("?", "%s"), params)
        else:
            with closing(sqlite3.connect(storage["path"])) as db, db:
                db.execute(sql, params)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send ``sig`` and wait; returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout)
        if self._reader is not None:
            self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def write_config(directory: Path, **sections: dict[str, object]) -> Path:
    """``directory``/config.toml: port 0, fast bcrypt, data under ``directory``/data;
    ``sections`` add to or override its tables."""
    base: dict[str, dict[str, object]] = {
        "server": {"host": "127.0.0.1", "port": 0},
        "storage": {
            "path": str(directory / "data" / "chat.db"),
            "uploads_dir": str(directory / "data" / "uploads"),
        },
        "auth": {"bcrypt_rounds": 4},
        "log": {"level": "info"},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    lines = []
    for name, values in base.items():
        lines.append(f"[{name}]")
        for key, value in values.items():
            lines.append(f"{key} = {toml_value(value)}")
    path = directory / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class TomlText(str):
    """A value already written in TOML syntax (a command line's ``section.key=value``)."""


def toml_value(value: object) -> str:
    """``value`` in TOML syntax."""
    if isinstance(value, TomlText):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)
