"""``fastchat run --workers N``: N server processes on one port (SO_REUSEPORT).

The parent binds the port first (so that ``port = 0`` means one port for all of them) and
keeps that socket bound but not listening, starts the workers with ``--worker-port``, and
forwards SIGINT/SIGTERM to them. The kernel spreads new connections over the workers'
listening sockets. A worker that exits on its own stops the others: a supervisor (systemd)
restarts the whole group, and clients reconnect to the workers that serve them.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from fastchat.config import Config

log = logging.getLogger("fastchat")


def reserve_port(config: Config) -> socket.socket:
    """A socket bound with SO_REUSEPORT to the configured address (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in config.server.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((config.server.host, config.server.port))
    return sock


def run_workers(config: Config, config_path: Path | None, workers: int) -> int:
    """Run ``workers`` server processes until a signal; the highest exit code of theirs."""
    with reserve_port(config) as reserved:
        port = reserved.getsockname()[1]
        argv = [sys.executable, "-m", "fastchat"]
        if config_path is not None:
            argv += ["-c", str(config_path)]
        argv += ["run", "--worker-port", str(port)]
        children = [subprocess.Popen(argv) for _ in range(workers)]
        log.info("started %d workers on port %d", workers, port)

        stopping = False

        def stop(signum: int, _frame: object) -> None:
            nonlocal stopping
            if not stopping:  # once: a second signal would cut a worker's clean shutdown
                stopping = True
                for child in children:
                    if child.returncode is None:
                        child.send_signal(signum)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        codes = [_wait_first(children)]
        stop(signal.SIGTERM, None)  # one ended (a signal, or on its own): stop the rest
        codes += [child.wait() for child in children]
    return max(abs(code) for code in codes)


def _wait_first(children: list[subprocess.Popen[bytes]]) -> int:
    """Wait until one of ``children`` exits; its exit code."""
    pid, status = os.wait()
    for child in children:
        if child.pid == pid:
            child.returncode = os.waitstatus_to_exitcode(status)
            if child.returncode:
                log.error("worker %d exited with %d", pid, child.returncode)
            return child.returncode
    return 0
