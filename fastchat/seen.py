"""A Bloom filter of the client ids that may already be stored.

Idempotent resends need to know whether a ``(user, clientId)`` was stored before. Asking
SQLite for every message cost a quarter of the event loop in small rooms (an indexed read
whose page cache every commit invalidates, plus GIL hand-offs with the writer thread).
Almost every client id is new, and a Bloom filter proves that without a read: a miss means
"never stored"; a hit (a stored id, or a ~1 % false positive) falls back to the database.
There are no false negatives, so no resend is ever missed.
"""

from __future__ import annotations

from collections.abc import Iterable

# 10 bits per key and 4 probes: ~1.2 % false positives when full. Every further filter of
# the scalable set gets 4 more bits per key (~0.5 %, ~0.2 %, ...), so the sum stays ~2 %.
_BITS_PER_KEY = 10
_EXTRA_BITS_PER_STAGE = 4
_PROBES = 4
_MASK_32 = 0xFFFFFFFF


class _Filter:
    __slots__ = ("bits", "capacity", "count", "size")

    def __init__(self, capacity: int, bits_per_key: int):
        self.capacity = capacity
        self.count = 0
        self.size = capacity * bits_per_key
        self.bits = bytearray((self.size + 7) // 8)


class SeenClientIds:
    """Scalable Bloom filter: when one fills up, a twice larger one takes the new keys."""

    __slots__ = ("_filters",)

    def __init__(self, keys: Iterable[str] = (), capacity: int = 1 << 16):
        self._filters = [_Filter(capacity, _BITS_PER_KEY)]
        for key in keys:
            self.add(key)

    def add(self, key: str) -> None:
        current = self._filters[-1]
        if current.count >= current.capacity:
            stage = len(self._filters)
            current = _Filter(current.capacity * 2, _BITS_PER_KEY + stage * _EXTRA_BITS_PER_STAGE)
            self._filters.append(current)
        current.count += 1
        bits, size = current.bits, current.size
        h = hash(key)  # per-process salt is fine: the filter is rebuilt at every start
        h1, h2 = h & _MASK_32, ((h >> 32) & _MASK_32) | 1
        for i in range(_PROBES):
            index = (h1 + i * h2) % size
            bits[index >> 3] |= 1 << (index & 7)

    def __contains__(self, key: str) -> bool:
        h = hash(key)
        h1, h2 = h & _MASK_32, ((h >> 32) & _MASK_32) | 1
        for current in self._filters:
            bits, size = current.bits, current.size
            for i in range(_PROBES):
                index = (h1 + i * h2) % size
                if not bits[index >> 3] & (1 << (index & 7)):
                    break
            else:
                return True
        return False
