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


def test_the_random_part_comes_from_the_os_and_differs_after_fork():
    import os

    # two ids of the same millisecond share the prefix and nothing else
    first, second = new_id(), new_id()
    assert first[15:] != second[15:]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first id must not repeat the parent's next one
        os.write(write, new_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    assert child[15:] != new_id()[15:]
