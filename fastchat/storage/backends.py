"""The storage backend the config names: its store and its write-behind writer.

The backend's module is imported only when chosen, so a SQLite server never loads the
PostgreSQL driver (which comes with the ``cluster`` extra).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from fastchat.config import StorageConfig
from fastchat.storage.base import StorageError, Store

if TYPE_CHECKING:
    from types import ModuleType

    from fastchat.storage.postgres import PostgresWriteBehind
    from fastchat.storage.sqlite import WriteBehind

    AnyWriter = WriteBehind | PostgresWriteBehind


def make_store(config: StorageConfig) -> Store:
    """The store of ``config.backend`` (not yet opened)."""
    if config.backend == "postgres":
        return _postgres().PostgresStore(config)
    from fastchat.storage.sqlite import SqliteStore

    return SqliteStore(config)


def make_writer(config: StorageConfig, loop: asyncio.AbstractEventLoop) -> AnyWriter:
    """The write-behind writer of ``config.backend`` (not yet started)."""
    if config.backend == "postgres":
        return _postgres().PostgresWriteBehind(config, loop)
    from fastchat.storage.sqlite import WriteBehind

    return WriteBehind(config, loop)


def _postgres() -> ModuleType:
    try:
        from fastchat.storage import postgres
    except ImportError as exc:
        raise StorageError(
            f"storage.backend = 'postgres' needs psycopg: pip install 'fastchat[cluster]' ({exc})"
        ) from exc
    return postgres
