"""Fixtures shared by every test folder: the throwaway PostgreSQL cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.postgres import PostgresCluster, start_cluster


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One PostgreSQL server for the whole session; each user makes its own database."""
    cluster = start_cluster()
    yield cluster
    cluster.remove()


@pytest.fixture
def own_postgres() -> Iterator[PostgresCluster]:
    """A PostgreSQL server of the test's own, which it may stop and start."""
    cluster = start_cluster()
    yield cluster
    cluster.remove()
