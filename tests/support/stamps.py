"""``created_at`` stamps around the clientId window (``fastchat.storage.base.dedupe_hours``)."""

from __future__ import annotations

import time


def iso(at: float) -> str:
    """``at`` (Unix seconds) as the server stamps ``created_at``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(at))


def in_window(now: float) -> float:
    """A time of the previous hour that stays in the window for a minute at least (of the
    current hour when this one ends sooner than that)."""
    return now - 3600 if now % 3600 < 3540 else now


def out_of_window(now: float) -> float:
    """A time two hours back: outside the window from now on."""
    return now - 7200
