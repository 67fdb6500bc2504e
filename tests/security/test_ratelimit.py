"""Keyed token buckets and the concurrency limit: exact arithmetic on a hand-stepped clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tiangong.security.ratelimit import ConcurrencyLimit, TokenBuckets


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_rate() -> None:
    clock = Clock()
    buckets: TokenBuckets[str] = TokenBuckets(rate=2.0, burst=5.0, clock=clock)
    assert [buckets.allow("a") for _ in range(6)] == [True] * 5 + [False]
    refused = buckets.check("a")
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(0.5)
    clock.now += 0.5
    assert buckets.allow("a")
    assert not buckets.allow("a")
    clock.now += 100  # refills to the burst, not beyond
    assert sum(buckets.allow("a") for _ in range(10)) == 5


def test_keys_are_independent() -> None:
    clock = Clock()
    buckets: TokenBuckets[str] = TokenBuckets(rate=1.0, burst=3.0, clock=clock)
    for _ in range(100):
        buckets.check("hammer")
    assert not buckets.allow("hammer")
    assert all(buckets.allow("polite") for _ in range(3))


def test_large_cost_passes_on_a_full_bucket_and_leaves_debt() -> None:
    clock = Clock()
    buckets: TokenBuckets[str] = TokenBuckets(rate=100.0, burst=100.0, clock=clock)
    assert buckets.allow("big", cost=1000)  # a full bucket lets one oversized request through
    refused = buckets.check("big", cost=1)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(9.01)  # 900 of debt + 1 token, at 100/s
    clock.now += 10
    assert buckets.allow("big", cost=100)


def test_scale_multiplies_rate_and_burst() -> None:
    clock = Clock()
    buckets: TokenBuckets[str] = TokenBuckets(rate=1.0, burst=2.0, clock=clock)
    assert sum(buckets.check("gw", scale=5).allowed for _ in range(20)) == 10
    clock.now += 1
    assert sum(buckets.check("gw", scale=5).allowed for _ in range(20)) == 5


def test_idle_keys_are_evicted_without_losing_state() -> None:
    clock = Clock()
    buckets: TokenBuckets[int] = TokenBuckets(rate=1.0, burst=2.0, max_keys=3, clock=clock)
    for key in range(3):
        buckets.allow(key)
    clock.now += 10  # every bucket is full again
    for key in range(3, 100):
        assert buckets.allow(key)
        assert len(buckets) <= 3
        clock.now += 1  # each key is full again by the time it is the least recently used
    assert buckets.shared_checks == 0


def test_key_flood_shares_one_bucket_and_tracked_keys_keep_theirs() -> None:
    clock = Clock()
    buckets: TokenBuckets[str] = TokenBuckets(
        rate=1.0, burst=5.0, max_keys=4, overflow_rate=1.0, overflow_burst=10.0, clock=clock
    )
    for key in ("a", "b", "c", "d"):
        assert buckets.allow(key)  # four active keys: none is full again
    flood = [buckets.check(f"spoofed-{i}") for i in range(1000)]
    assert len(buckets) == 4  # memory did not grow
    assert sum(d.allowed for d in flood) == 10  # the overflow bucket's burst, no more
    assert all(d.shared for d in flood)
    assert buckets.shared_checks == 1000
    assert all(buckets.allow("a") for _ in range(4))  # a tracked key still has its own


def test_invalid_configuration() -> None:
    with pytest.raises(ValueError, match="> 0"):
        TokenBuckets[str](rate=0, burst=1)
    with pytest.raises(ValueError, match="max_keys"):
        TokenBuckets[str](rate=1, burst=1, max_keys=0)


@given(
    st.lists(st.tuples(st.integers(0, 50), st.floats(0, 2), st.floats(0.1, 20)), max_size=300),
)
def test_memory_and_long_run_rate_are_bounded(steps: list[tuple[int, float, float]]) -> None:
    clock = Clock()
    rate, burst = 3.0, 4.0
    buckets: TokenBuckets[int] = TokenBuckets(rate=rate, burst=burst, max_keys=8, clock=clock)
    start = clock.now
    passed: dict[int, float] = {}
    for key, dt, cost in steps:
        clock.now += dt
        decision = buckets.check(key, cost)
        assert len(buckets) <= 8
        if decision.allowed and not decision.shared:
            passed[key] = passed.get(key, 0.0) + cost
        else:
            assert decision.retry_after >= 0
    elapsed = clock.now - start
    for key, spent in passed.items():
        # Never more than the burst, one oversized request's excess, and the refill.
        assert spent <= burst + elapsed * rate + 20 + 1e-6, key


def test_concurrency_limit() -> None:
    limit: ConcurrencyLimit[str] = ConcurrencyLimit(per_key=2, total=3)
    assert limit.acquire("a")
    assert limit.acquire("a")
    assert not limit.acquire("a")
    assert limit.acquire("b")
    assert not limit.acquire("c")  # the total is reached
    limit.release("a")
    assert limit.held("a") == 1
    assert limit.acquire("c")
    limit.release("zz")  # never held: no effect
    assert limit.active == 3


@given(st.lists(st.tuples(st.integers(0, 5), st.floats(0, 1)), max_size=200))
def test_take_is_allow_of_one(steps: list[tuple[int, float]]) -> None:
    clock_a, clock_b = Clock(), Clock()
    a: TokenBuckets[int] = TokenBuckets(rate=2.0, burst=3.0, max_keys=3, clock=clock_a)
    b: TokenBuckets[int] = TokenBuckets(rate=2.0, burst=3.0, max_keys=3, clock=clock_b)
    for key, dt in steps:
        clock_a.now += dt
        clock_b.now += dt
        assert a.take(key) == b.allow(key)
