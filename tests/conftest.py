"""Shared fixtures: a real fastchat server process on port 0 with a temporary data folder."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_URL = re.compile(r"fastchat listening on (https?://\S+)")


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
    process: subprocess.Popen[str] | None = None
    base_url: str = ""
    log: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None

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
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        env.pop("FASTCHAT_JWT_SECRET", None)
        config = ["-c", str(self.config_path)] if self.config_path is not None else []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fastchat", "run", *config],
            cwd=self.cwd,
            env=env,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        started = threading.Event()

        def read() -> None:
            assert self.process is not None and self.process.stderr is not None
            for line in self.process.stderr:
                self.log.append(line.rstrip("\n"))
                match = _URL.search(line)
                if match:
                    self.base_url = match.group(1)
                    started.set()
            started.set()

        self.base_url = ""
        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if not started.wait(timeout) or not self.base_url:
            self.kill()
            raise RuntimeError("server did not start:\n" + "\n".join(self.log))
        return self

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


def fastchat_command(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run ``fastchat ARGS`` to completion; its output is captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "fastchat", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def write_config(directory: Path, **sections: dict[str, object]) -> Path:
    """A config.toml for tests: port 0, fast bcrypt, data under ``directory``."""
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
            lines.append(f"{key} = {_toml(value)}")
    path = directory / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator:
    """Factory: ``make_server(**config_sections)`` starts a server; all are stopped at the end."""
    servers: list[ServerProcess] = []

    def make(**sections: dict[str, object]) -> ServerProcess:
        directory = tmp_path / f"server{len(servers)}"
        directory.mkdir()
        server = ServerProcess(write_config(directory, **sections), directory / "data")
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.kill()


@pytest.fixture
def server(make_server) -> ServerProcess:
    """A fresh server with the default test configuration."""
    return make_server()


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server shared by a module's tests (browser tests, read-mostly tests)."""
    directory = tmp_path_factory.mktemp("module-server")
    server = ServerProcess(write_config(directory), directory / "data").start()
    yield server
    server.kill()
