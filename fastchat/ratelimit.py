"""Rate limits and connection caps. Pure: the caller passes the time (monotonic seconds)."""

from __future__ import annotations

from collections import OrderedDict

# Returned instead of 0.0 so a refusal is never falsy.
_MIN_RETRY_SECONDS = 0.001
# Float slack, so that trying again exactly when told to succeeds.
_EPSILON = 1e-9


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; one per connection, on the hot path."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens if there are enough; False (and nothing spent) otherwise."""
        elapsed = now - self.stamp
        if elapsed > 0:  # a clock that steps back refills nothing
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.stamp = now
        if self.tokens + _EPSILON >= cost:
            self.tokens = max(0.0, self.tokens - cost)
            return True
        return False

    def retry_after(self, now: float) -> float:
        """Seconds until one token is available (0.0 if one is now)."""
        elapsed = max(0.0, now - self.stamp)
        tokens = min(self.burst, self.tokens + elapsed * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate


class _Window:
    __slots__ = ("current", "last_hit", "previous", "start")

    def __init__(self, start: float, now: float) -> None:
        self.start = start
        self.current = 0
        self.previous = 0
        self.last_hit = now


class KeyedLimiter:
    """At most about ``limit`` hits per ``window_seconds`` per key (e.g. a client address).

    A sliding-window counter: the previous fixed window's count, weighted by how much of
    it still overlaps the sliding window, plus the current window's count. Memory is
    bounded: idle keys are dropped as time passes, and at most ``max_keys`` are kept
    (the least recently seen go first).
    """

    def __init__(self, limit: int, window_seconds: float, max_keys: int = 100_000) -> None:
        if limit < 1 or window_seconds <= 0 or max_keys < 1:
            raise ValueError("limit, window_seconds and max_keys must be positive")
        self.limit = limit
        self.window = window_seconds
        self.max_keys = max_keys
        self._keys: OrderedDict[str, _Window] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def hit(self, key: str, now: float) -> float | None:
        """Count a hit: None if allowed, else the seconds to wait (the hit is not counted)."""
        self._prune(now)
        start = now - now % self.window
        w = self._keys.get(key)
        if w is None:
            if len(self._keys) >= self.max_keys:
                self._keys.popitem(last=False)
            w = self._keys[key] = _Window(start, now)
        else:
            self._keys.move_to_end(key)
            w.last_hit = max(w.last_hit, now)
            if start > w.start:
                w.previous = w.current if start - w.start == self.window else 0
                w.current = 0
                w.start = start
        overlap = 1.0 - (now - w.start) / self.window
        if w.previous * overlap + w.current + 1 <= self.limit + _EPSILON:
            w.current += 1
            return None
        return max(self._free_at(w) - now, _MIN_RETRY_SECONDS)

    def _free_at(self, w: _Window) -> float:
        """When the weighted count will have fallen to ``limit - 1`` (with no more hits)."""
        room = self.limit - 1 - w.current
        if room >= 0 and w.previous > 0:
            return w.start + self.window * (1.0 - room / w.previous)
        # The current window alone is full: wait for it to become the fading previous one.
        return w.start + self.window * (2.0 - (self.limit - 1) / w.current)

    def _prune(self, now: float) -> None:
        # Front = least recently seen. After two windows without a hit both counts are zero.
        keys = self._keys
        horizon = now - 2 * self.window
        while keys:
            oldest = next(iter(keys.values()))
            if oldest.last_hit > horizon:
                break
            keys.popitem(last=False)


class ConnectionCounter:
    """Open connections per key (client address or user id)."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._counts)

    def count(self, key: str) -> int:
        """Open connections for ``key``."""
        return self._counts.get(key, 0)

    def acquire(self, key: str, limit: int) -> bool:
        """Count one more connection unless ``key`` already has ``limit``."""
        n = self._counts.get(key, 0)
        if n >= limit:
            return False
        self._counts[key] = n + 1
        return True

    def release(self, key: str) -> None:
        """Count one connection less; KeyError if ``key`` has none (a double release)."""
        n = self._counts[key] - 1
        if n:
            self._counts[key] = n
        else:
            del self._counts[key]


class EventThrottle:
    """At most one report per kind of event per ``window_seconds``; the rest are counted.

    For log lines about floods: report the first event of a window, then how many followed.
    """

    def __init__(self, window_seconds: float) -> None:
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        self.window = window_seconds
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def hit(self, kind: str, now: float) -> bool:
        """True if this event is to be reported now; otherwise it is counted as held back."""
        if now >= self._next.get(kind, now):
            self._next[kind] = now + self.window
            return True
        self._held[kind] = self._held.get(kind, 0) + 1
        return False

    def take_held(self, kind: str) -> int:
        """How many events of ``kind`` were held back since the last call; resets the count."""
        return self._held.pop(kind, 0)
