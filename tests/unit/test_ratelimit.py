from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastchat.ratelimit import ConnectionCounter, EventThrottle, KeyedLimiter, TokenBucket

# --- TokenBucket ----------------------------------------------------------------------


def test_bucket_allows_the_burst_then_refuses() -> None:
    bucket = TokenBucket(rate=2.0, burst=5, now=100.0)
    assert [bucket.take(100.0) for _ in range(6)] == [True] * 5 + [False]


def test_bucket_refills_at_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=5, now=0.0)
    for _ in range(5):
        bucket.take(0.0)
    assert not bucket.take(0.4)  # 0.8 tokens
    assert bucket.take(0.5)  # 1.0 token
    assert not bucket.take(0.5)
    assert bucket.take(1.5) and bucket.take(1.5)  # 2 more
    assert not bucket.take(1.5)


def test_bucket_refill_is_capped_at_burst() -> None:
    bucket = TokenBucket(rate=10.0, burst=3, now=0.0)
    assert [bucket.take(1_000.0) for _ in range(4)] == [True, True, True, False]


def test_bucket_cost() -> None:
    bucket = TokenBucket(rate=1.0, burst=4, now=0.0)
    assert bucket.take(0.0, cost=3)
    assert not bucket.take(0.0, cost=2)  # a refused take spends nothing
    assert bucket.take(0.0, cost=1)
    assert not bucket.take(0.0)


def test_bucket_retry_after() -> None:
    bucket = TokenBucket(rate=4.0, burst=2, now=10.0)
    assert bucket.retry_after(10.0) == 0.0
    bucket.take(10.0)
    bucket.take(10.0)
    assert bucket.retry_after(10.0) == pytest.approx(0.25)
    assert bucket.retry_after(10.1) == pytest.approx(0.15)
    assert bucket.retry_after(10.25) == 0.0
    assert bucket.retry_after(10.0) == pytest.approx(0.25)  # asking spends nothing


@given(
    st.lists(st.floats(min_value=0, max_value=2, allow_nan=False), min_size=1, max_size=50),
    st.floats(min_value=0.1, max_value=100),
)
def test_bucket_retry_after_is_exact(gaps: list[float], rate: float) -> None:
    bucket = TokenBucket(rate=rate, burst=3, now=0.0)
    now = 0.0
    for gap in gaps:
        now += gap
        if not bucket.take(now):
            retry = bucket.retry_after(now)
            assert retry > 0
            if retry * rate > 1e-6:  # else 1% of it is within the float slack
                assert not bucket.take(now + retry * 0.99)
            assert bucket.take(now + retry)
            now += retry


def test_bucket_clock_stepping_back_refills_nothing() -> None:
    bucket = TokenBucket(rate=1.0, burst=1, now=50.0)
    assert bucket.take(50.0)
    assert not bucket.take(49.0)
    assert not bucket.take(50.5)
    assert bucket.take(51.0)


def test_bucket_is_slotted() -> None:
    bucket = TokenBucket(rate=1.0, burst=1, now=0.0)
    assert not hasattr(bucket, "__dict__")


@given(st.lists(st.floats(min_value=0, max_value=5, allow_nan=False), min_size=1, max_size=200))
def test_bucket_never_exceeds_rate_times_time_plus_burst(gaps: list[float]) -> None:
    rate, burst = 3.0, 5
    bucket = TokenBucket(rate=rate, burst=burst, now=0.0)
    now = 0.0
    taken = 0
    for gap in gaps:
        now += gap
        taken += bucket.take(now)
    assert taken <= burst + rate * now + 1e-9


# --- KeyedLimiter ---------------------------------------------------------------------


def test_keyed_limit_per_window() -> None:
    limiter = KeyedLimiter(limit=3, window_seconds=60)
    assert [limiter.hit("1.2.3.4", 0.0) for _ in range(3)] == [None] * 3
    retry = limiter.hit("1.2.3.4", 1.0)
    assert retry is not None and retry > 0
    assert limiter.hit("5.6.7.8", 1.0) is None  # other keys are unaffected


def test_keyed_retry_after_full_current_window() -> None:
    limiter = KeyedLimiter(limit=3, window_seconds=60)
    for _ in range(3):
        limiter.hit("k", 0.0)
    # Weighted count 3 * (1 - f) must fall to 2: f = 1/3 into the next window.
    retry = limiter.hit("k", 30.0)
    assert retry == pytest.approx(60 + 20 - 30)
    assert limiter.hit("k", 30.0 + retry - 0.5) is not None
    assert limiter.hit("k", 30.0 + retry) is None


def test_keyed_retry_after_with_a_fading_previous_window() -> None:
    limiter = KeyedLimiter(limit=4, window_seconds=10)
    for _ in range(4):
        assert limiter.hit("k", 9.0) is None
    # At t=12 the previous window weighs 4 * 0.8 = 3.2, and 3.2 + 1 > 4: refused.
    retry = limiter.hit("k", 12.0)
    # Free when 4 * (1 - f) + 0 + 1 <= 4, f = 0.25: t = 12.5.
    assert retry == pytest.approx(0.5)
    assert limiter.hit("k", 12.5) is None
    # Now current=1: free when 4 * (1 - f) + 1 + 1 <= 4, f = 0.5: t = 15.
    assert limiter.hit("k", 13.0) == pytest.approx(2.0)
    assert limiter.hit("k", 15.0) is None


def test_keyed_refused_hits_are_not_counted() -> None:
    limiter = KeyedLimiter(limit=2, window_seconds=10)
    limiter.hit("k", 0.0)
    limiter.hit("k", 0.0)
    for _ in range(100):
        assert limiter.hit("k", 1.0) is not None
    assert limiter.hit("k", 20.0) is None  # two windows later everything is forgotten


@given(st.lists(st.floats(min_value=0, max_value=30, allow_nan=False), min_size=1, max_size=300))
def test_keyed_never_allows_much_more_than_limit_per_window(gaps: list[float]) -> None:
    limit, window = 5, 60.0
    limiter = KeyedLimiter(limit=limit, window_seconds=window)
    now = 0.0
    allowed: list[float] = []
    for gap in gaps:
        now += gap
        if limiter.hit("k", now) is None:
            allowed.append(now)
    # The sliding-window counter is an approximation, but never lets through 2x the limit.
    for i, t in enumerate(allowed):
        in_window = sum(1 for u in allowed[i:] if u < t + window)
        assert in_window < 2 * limit


@given(st.lists(st.floats(min_value=0, max_value=30, allow_nan=False), min_size=1, max_size=100))
def test_keyed_retry_after_is_honest(gaps: list[float]) -> None:
    limiter = KeyedLimiter(limit=3, window_seconds=60.0)
    now = 0.0
    for gap in gaps:
        now += gap
        retry = limiter.hit("k", now)
        if retry is not None:
            assert retry > 0
            assert limiter.hit("k", now + retry) is None
            now += retry


def test_keyed_stale_keys_are_pruned() -> None:
    limiter = KeyedLimiter(limit=5, window_seconds=10)
    for i in range(1_000):
        limiter.hit(f"10.0.{i // 256}.{i % 256}", 0.0)
    assert len(limiter) == 1_000
    limiter.hit("later", 19.0)
    assert len(limiter) == 1_001  # still within two windows: counts may matter
    limiter.hit("later", 20.0)
    assert len(limiter) == 1


def test_keyed_recently_seen_keys_survive_pruning() -> None:
    limiter = KeyedLimiter(limit=2, window_seconds=10)
    limiter.hit("old", 0.0)
    limiter.hit("busy", 0.0)
    assert limiter.hit("busy", 15.0) is None
    assert limiter.hit("busy", 16.0) is not None  # refused, but seen
    limiter.hit("other", 25.0)
    assert len(limiter) == 2  # "old" pruned, "busy" kept...
    # ...with its count: 1 * 0.5 from the previous window, so only one more fits.
    assert limiter.hit("busy", 25.0) is None
    assert limiter.hit("busy", 25.0) is not None


def test_keyed_number_of_keys_is_capped() -> None:
    limiter = KeyedLimiter(limit=1, window_seconds=60, max_keys=100)
    for i in range(1_000):
        limiter.hit(f"k{i}", float(i) / 1_000)
    assert len(limiter) == 100
    assert limiter.hit("k999", 1.0) is not None  # newest kept, still limited
    assert limiter.hit("k0", 1.0) is None  # oldest was dropped, so forgotten


def test_keyed_rejects_nonsense_limits() -> None:
    with pytest.raises(ValueError):
        KeyedLimiter(limit=0, window_seconds=60)
    with pytest.raises(ValueError):
        KeyedLimiter(limit=1, window_seconds=0)


# --- ConnectionCounter ----------------------------------------------------------------


def test_counter_limits_per_key() -> None:
    counter = ConnectionCounter()
    assert counter.acquire("ip", 2)
    assert counter.acquire("ip", 2)
    assert not counter.acquire("ip", 2)
    assert counter.acquire("other", 2)
    assert counter.count("ip") == 2


def test_counter_release_frees_a_slot_and_removes_empty_keys() -> None:
    counter = ConnectionCounter()
    counter.acquire("ip", 1)
    counter.acquire("user", 5)
    counter.release("ip")
    assert counter.count("ip") == 0
    assert len(counter) == 1
    assert counter.acquire("ip", 1)


def test_counter_double_release_is_an_error() -> None:
    counter = ConnectionCounter()
    counter.acquire("ip", 1)
    counter.release("ip")
    with pytest.raises(KeyError):
        counter.release("ip")
    assert counter.count("ip") == 0


# --- EventThrottle --------------------------------------------------------------------


def test_throttle_reports_once_per_window_and_counts_the_rest() -> None:
    throttle = EventThrottle(10.0)
    assert throttle.hit("cap", 100.0)
    assert not throttle.hit("cap", 101.0)
    assert not throttle.hit("cap", 109.9)
    assert throttle.hit("slow", 105.0)  # each kind has its own window
    assert throttle.take_held("cap") == 2
    assert throttle.take_held("cap") == 0
    assert throttle.hit("cap", 110.0)  # a new window
    assert throttle.take_held("slow") == 0


@given(st.lists(st.floats(0, 30), max_size=50))
def test_throttle_reports_at_most_one_per_window(gaps: list[float]) -> None:
    throttle = EventThrottle(10.0)
    now, reported = 0.0, []
    for gap in gaps:
        now += gap
        if throttle.hit("x", now):
            reported.append(now)
    assert all(b >= a + 10.0 for a, b in pairwise(reported))  # as hit() adds it: no rounding
    assert len(reported) + throttle.take_held("x") == len(gaps)
