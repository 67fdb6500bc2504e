"""Rate limits with bounded memory: keyed token buckets and a keyed concurrency limit.

Theory of operation
-------------------
A token bucket per key (a client address, a token digest, a device id) holds up to ``burst``
tokens and refills at ``rate`` tokens per second. A request costs tokens; it passes when the
bucket holds enough, otherwise the caller is told how many seconds until it would pass (the
``Retry-After``). Refill is computed lazily from the clock on each check, so there is no timer
and a check is O(1): one dict lookup, one ``move_to_end``, a little arithmetic.

A cost larger than the bucket (a message of many points) passes when the bucket is *full* and
drives it negative: the debt is repaid at ``rate`` before the key passes again, so the long-run
rate holds for large and small requests alike without refusing a large one for ever.

Memory is bounded by ``max_keys``. Keys are kept in least-recently-used order. A bucket that has
refilled completely carries no state (a new bucket starts full), so when a new key arrives and
the table is full, the least recently used bucket is evicted if it is full again: nothing is
forgotten. If even the least recently used key is still paying (every tracked key is active: a
flood of distinct keys, as from spoofed UDP sources), the new key is *not* given a bucket of its
own; it shares one overflow bucket with every other untracked key. A key flood therefore costs
the attacker its own overflow budget and never grows memory, while keys already tracked keep
their own buckets.

No I/O and no asyncio here: the clock is injected (``time.monotonic`` by default), so tests step
time by hand.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

__all__ = ["OVERFLOW", "ConcurrencyLimit", "RateDecision", "TokenBuckets"]

K = TypeVar("K", bound=Hashable)

#: The key reported for requests charged to the shared overflow bucket.
OVERFLOW: Final = "<overflow>"


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The outcome of one check.

    Attributes:
        allowed: whether the request may proceed.
        retry_after: seconds until the same request would pass (0 when allowed).
        shared: the key had no bucket of its own (the table was full of active keys) and was
            charged to the shared overflow bucket.
    """

    allowed: bool
    retry_after: float = 0.0
    shared: bool = False


_ALLOW: Final = RateDecision(True)
_ALLOW_SHARED: Final = RateDecision(True, shared=True)


class TokenBuckets(Generic[K]):
    """Token buckets per key, at most ``max_keys`` of them (see the module docstring).

    Args:
        rate: tokens added per second (the sustained rate a key may use).
        burst: the bucket size (how much a key may use at once after a quiet spell).
        max_keys: most keys with a bucket of their own.
        overflow_rate: refill of the shared bucket of untracked keys (default ``rate``).
        overflow_burst: its size (default ``burst``).
        clock: seconds from a monotonic clock.

    Raises:
        ValueError: a rate or burst that is not positive, or ``max_keys`` < 1.
    """

    __slots__ = (
        "_buckets",
        "_clock",
        "_overflow",
        "_refill_time",
        "burst",
        "max_keys",
        "overflow_burst",
        "overflow_rate",
        "rate",
        "shared_checks",
    )

    def __init__(
        self,
        *,
        rate: float,
        burst: float,
        max_keys: int = 65_536,
        overflow_rate: float | None = None,
        overflow_burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        overflow_rate = rate if overflow_rate is None else overflow_rate
        overflow_burst = burst if overflow_burst is None else overflow_burst
        if min(rate, burst, overflow_rate, overflow_burst) <= 0:
            raise ValueError("rates and bursts must be > 0")
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_keys = max_keys
        self.overflow_rate = float(overflow_rate)
        self.overflow_burst = float(overflow_burst)
        self._clock = clock
        self._refill_time = self.burst / self.rate
        # key -> [tokens, when they were counted]; a list so it is updated in place.
        self._buckets: OrderedDict[K, list[float]] = OrderedDict()
        self._overflow = [self.overflow_burst, clock()]
        #: Checks charged to the overflow bucket (a sign of a key flood).
        self.shared_checks = 0

    def __len__(self) -> int:
        """Keys with a bucket of their own."""
        return len(self._buckets)

    def check(self, key: K, cost: float = 1.0, *, scale: float = 1.0) -> RateDecision:
        """Take ``cost`` tokens from ``key``'s bucket if it can pay.

        Args:
            key: whose bucket.
            cost: tokens this request costs (1 per request, or its size).
            scale: multiplies this key's rate and burst (a gateway speaking for its children);
                give the same scale on every check of a key.
        """
        now = self._clock()
        buckets = self._buckets
        bucket = buckets.get(key)
        rate, burst = self.rate * scale, self.burst * scale
        if bucket is None:
            if len(buckets) >= self.max_keys and not self._evict_one(now):
                return self._check_overflow(now, cost)
            bucket = buckets[key] = [burst, now]
        else:
            buckets.move_to_end(key)
        tokens = bucket[0] + (now - bucket[1]) * rate
        tokens = min(tokens, burst)
        bucket[1] = now
        if tokens >= (min(burst, cost)):
            bucket[0] = tokens - cost
            return _ALLOW
        bucket[0] = tokens
        return RateDecision(False, (min(cost, burst) - tokens) / rate)

    def allow(self, key: K, cost: float = 1.0) -> bool:
        """Whether ``key`` may proceed (``check`` without the details)."""
        return self.check(key, cost).allowed

    def take(self, key: K) -> bool:
        """Whether one request of ``key`` may proceed: ``allow(key)``, faster.

        The hot path of a listener answering from a cache, where the check is a visible share
        of the work: a tracked key with a token to spare costs one lookup and a little
        arithmetic; everything else goes through ``check``.
        """
        bucket = self._buckets.get(key)
        if bucket is not None:
            now = self._clock()
            tokens = bucket[0] + (now - bucket[1]) * self.rate
            if tokens >= 1.0:
                bucket[0] = (min(self.burst, tokens)) - 1.0
                bucket[1] = now
                self._buckets.move_to_end(key)
                return True
        return self.check(key).allowed

    def _evict_one(self, now: float) -> bool:
        """Forget the least recently used key if its bucket is full again."""
        oldest_key, (tokens, stamp) = next(iter(self._buckets.items()))
        # Conservative for keys checked with a scale > 1 (their refill is faster), never lossy:
        # a bucket judged full here is full at scale 1 too.
        if tokens + (now - stamp) * self.rate >= self.burst:
            del self._buckets[oldest_key]
            return True
        return False

    def _check_overflow(self, now: float, cost: float) -> RateDecision:
        self.shared_checks += 1
        bucket = self._overflow
        burst = self.overflow_burst
        tokens = min(burst, bucket[0] + (now - bucket[1]) * self.overflow_rate)
        bucket[1] = now
        if tokens >= min(cost, burst):
            bucket[0] = tokens - cost
            return _ALLOW_SHARED
        bucket[0] = tokens
        return RateDecision(False, (min(cost, burst) - tokens) / self.overflow_rate, shared=True)

    def forget(self, key: K) -> None:
        """Drop ``key``'s bucket (it starts full on its next check)."""
        self._buckets.pop(key, None)


class ConcurrencyLimit(Generic[K]):
    """At most ``per_key`` concurrent holders per key and ``total`` in all.

    Used for connections per client address: ``acquire`` when a connection opens (refused when
    the key or the whole is at its limit), ``release`` when it closes. Memory holds only keys
    with a live holder.
    """

    __slots__ = ("_held", "active", "per_key", "total")

    def __init__(self, *, per_key: int, total: int) -> None:
        if per_key < 1 or total < 1:
            raise ValueError("per_key and total must be >= 1")
        self.per_key = per_key
        self.total = total
        self.active = 0
        self._held: dict[K, int] = {}

    def acquire(self, key: K) -> bool:
        """Take a slot for ``key``; False when ``key`` or the whole is at its limit."""
        held = self._held.get(key, 0)
        if held >= self.per_key or self.active >= self.total:
            return False
        self._held[key] = held + 1
        self.active += 1
        return True

    def release(self, key: K) -> None:
        """Give back a slot taken by ``acquire``."""
        held = self._held.get(key, 0)
        if held <= 0:
            return
        if held == 1:
            del self._held[key]
        else:
            self._held[key] = held - 1
        self.active -= 1

    def held(self, key: K) -> int:
        """Slots ``key`` holds now."""
        return self._held.get(key, 0)
