"""Waiting: for a server event that matches, and for a condition that no event announces
(a file appears, a statistic moves)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


def is_event(message: dict[str, Any], event_type: str, match: dict[str, Any]) -> bool:
    """Whether ``message`` is an ``event_type`` event whose data has every ``match`` item."""
    data = message["data"]
    return message["type"] == event_type and all(data.get(k) == v for k, v in match.items())


async def wait_until(
    predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.005
) -> None:
    """Poll ``predicate`` every ``interval`` seconds until it holds; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"condition not met within {timeout}s"
        await asyncio.sleep(interval)


def wait_until_sync(
    predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.02
) -> None:
    """:func:`wait_until` for a synchronous test (it blocks the thread between polls)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"condition not met within {timeout}s"
        time.sleep(interval)
