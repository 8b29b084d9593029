"""Fixtures for the end-to-end tests: real fastchat server processes on port 0."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProcess


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator:
    """Factory: ``make_server(**config_sections)`` starts a server; all are stopped at the end."""
    servers: list[ServerProcess] = []

    def make(**sections: dict[str, object]) -> ServerProcess:
        directory = tmp_path / f"server{len(servers)}"
        directory.mkdir()
        server = ServerProcess.configured(directory, **sections)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.kill()


@pytest.fixture
def server(make_server) -> ServerProcess:
    """A fresh server with the default test configuration."""
    return make_server()
