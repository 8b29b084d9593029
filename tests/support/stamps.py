"""``created_at`` stamps around the clientId window (``fastchat.storage.base.dedupe_hours``)."""

from __future__ import annotations

import time

from fastchat.storage.base import DEDUPE_WINDOW_HOURS


def iso(at: float) -> str:
    """``at`` (Unix seconds) as the server stamps ``created_at``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(at))


def in_window(now: float) -> float:
    """A time an hour back: in the window for many hours more."""
    return now - 3600


def out_of_window(now: float) -> float:
    """A time just past the window's oldest hour: outside the window from now on."""
    return now - (DEDUPE_WINDOW_HOURS + 1) * 3600
