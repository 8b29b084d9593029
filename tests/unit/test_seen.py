"""The Bloom filter that spares a database read for new client ids."""

from hypothesis import given
from hypothesis import strategies as st

from fastchat.seen import SeenClientIds


def test_no_false_negatives_while_growing_and_few_false_positives():
    seen = SeenClientIds(capacity=1000)  # grows to several filters below
    keys = [f"user{i % 97}\0client-{i}" for i in range(50_000)]
    for key in keys:
        seen.add(key)
    assert all(key in seen for key in keys)
    strangers = [f"user{i % 97}\0other-{i}" for i in range(20_000)]
    false_positives = sum(key in seen for key in strangers)
    assert false_positives < 0.0025 * len(strangers)  # ~0.05 % expected


def test_built_from_stored_keys():
    seen = SeenClientIds(["a\0x", "b\0dm:y"])
    assert "a\0x" in seen and "b\0dm:y" in seen
    assert "a\0dm:x" not in seen or "b\0y" not in seen  # at most a rare false positive


@given(st.sets(st.text(min_size=1), max_size=300))
def test_every_added_key_is_found(keys):
    seen = SeenClientIds(capacity=16)
    for key in keys:
        seen.add(key)
    assert all(key in seen for key in keys)
