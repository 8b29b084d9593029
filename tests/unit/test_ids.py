"""Time-ordered ids."""

import time
import uuid

from fastchat.ids import new_id


def test_ids_are_version_7_uuids_ordered_by_time():
    first = new_id()
    time.sleep(0.002)  # a new millisecond: ordering is by the time prefix
    second = new_id()
    for value in (first, second):
        parsed = uuid.UUID(value)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == value
    assert first < second
    assert abs(int(first[:8] + first[9:13], 16) - time.time_ns() // 1_000_000) < 5_000


def test_ids_are_unique():
    ids = {new_id() for _ in range(100_000)}
    assert len(ids) == 100_000
