"""Fixtures for the end-to-end tests: real fastchat server processes on port 0.

A test using ``make_server`` (or ``server``) runs once per storage backend: SQLite, and
PostgreSQL on a fresh database of the session's cluster; one marked ``sqlite_only`` (a test
about SQLite itself, or a transport module's) runs on SQLite only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProcess

BACKENDS = ["sqlite", "postgres"]


def _factory(tmp_path: Path, storage: Callable[[], dict[str, object]]) -> Iterator:
    servers: list[ServerProcess] = []

    def make(**sections: dict[str, object]) -> ServerProcess:
        directory = tmp_path / f"server{len(servers)}"
        directory.mkdir()
        sections["storage"] = {**storage(), **sections.get("storage", {})}
        server = ServerProcess.configured(directory, **sections)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.kill()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only: runs on the SQLite backend only (about SQLite, or transport)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each test that starts servers once per backend, unless it is ``sqlite_only``."""
    if "backend" in metafunc.fixturenames:
        sqlite_only = metafunc.definition.get_closest_marker("sqlite_only") is not None
        metafunc.parametrize("backend", ["sqlite"] if sqlite_only else BACKENDS)


@pytest.fixture
def make_server(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> Iterator:
    """Factory: ``make_server(**config_sections)`` starts a server on ``backend``; all are
    stopped at the end. On PostgreSQL each server gets a new database."""
    if backend == "postgres":
        cluster = request.getfixturevalue("postgres_cluster")
        yield from _factory(
            tmp_path, lambda: {"backend": "postgres", "dsn": cluster.new_database()}
        )
    else:
        yield from _factory(tmp_path, dict)


@pytest.fixture
def server(make_server) -> ServerProcess:
    """A fresh server with the default test configuration."""
    return make_server()
