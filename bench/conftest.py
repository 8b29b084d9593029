"""Shared fixtures for the microbenchmarks.

Every benchmark runs once as a plain test by default (``--benchmark-disable`` in
pyproject.toml); ``--benchmark-enable --benchmark-only`` measures for real.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import orjson
import pytest
import uvloop

from bench.support import CONTENT, ROOM_ID


@pytest.fixture
def send_message_bytes() -> bytes:
    """A typical client frame payload: a ``send_message`` with a client id."""
    return orjson.dumps(
        {
            "type": "send_message",
            "roomId": ROOM_ID,
            "content": CONTENT,
            "clientId": str(uuid.uuid4()),
        }
    )


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A uvloop loop set as current (not running): run coroutines with run_until_complete."""
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    loop.run_until_complete(asyncio.sleep(0))  # callbacks the hub scheduled but we flushed
    loop.close()
    asyncio.set_event_loop(None)
