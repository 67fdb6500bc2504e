"""The time-series store interface, shared by the embedded (DuckDB) and PostgreSQL backends.

Data model
----------
A **series** is one metric of one device of one tenant, named by a ``SeriesKey`` and stored as a
small integer id. Numeric values (floats, ints, booleans as 0/1, enums as their label index) go
to ``points(series_id, ts, value)``; strings to ``text_points``. ``latest`` keeps the newest
value of every series. Timestamps are UTC with millisecond precision. Two values of one series
may share a timestamp; ``last`` then returns one of them, which one is not defined.

Rollups
-------
``rollup_1m`` and ``rollup_1h`` hold, per series and bucket, the count, sum, min, max and the
last value with its time: enough to answer avg/min/max/last/count/sum for any interval that is
a multiple of the rollup's. Every write marks its series dirty over the times it carries;
``refresh_rollups`` recomputes those series' closed minutes from the earliest dirty time on, so
late data (an edge gateway draining a buffer hours later) corrects the rollups instead of being
missed, while the open minute is left for the next refresh: each point is rolled up once.

Queries are exact even while rollups lag: a query reads rollup buckets before a split point and
raw points after it, and merges the two sets of partial aggregates per bucket. The split point
is the earliest not-yet-rolled timestamp of the series, and never later than ``RAW_TAIL_MS``
before now (so data written by another platform instance, whose dirty marks this one cannot
see, is still read raw until it is rolled).

Idempotency
-----------
MQTT QoS 1 is at-least-once: a message stored just before a crash is delivered again. Each
write stores the digests of the messages it carries in the same transaction as their points;
the ingest pipeline skips a message whose digest is known, which makes redelivery harmless.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol, Self

import numpy as np
import numpy.typing as npt

__all__ = [
    "HOUR_MS",
    "MINUTE_MS",
    "RAW_TAIL_MS",
    "Aggregate",
    "DirtyTracker",
    "Float64s",
    "Int32s",
    "Int64s",
    "LatestValue",
    "PointBatch",
    "SeriesKey",
    "SeriesSpans",
    "TimeSeriesStore",
    "align_range",
    "finish_aggregate",
    "last_per_series",
    "min_per_series",
    "pick_rollup",
    "refresh_cutoff",
    "series_spans",
]

MINUTE_MS: Final = 60_000
HOUR_MS: Final = 3_600_000
#: Data newer than this is always read raw (see the module docstring).
RAW_TAIL_MS: Final = 5 * MINUTE_MS
#: The most rows a raw (un-aggregated) query returns.
RAW_LIMIT: Final = 100_000


class Aggregate(enum.StrEnum):
    """Aggregations per interval."""

    AVG = "avg"
    MIN = "min"
    MAX = "max"
    LAST = "last"
    COUNT = "count"
    SUM = "sum"


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """The name of a series: tenant, device and metric."""

    tenant_id: str
    device_id: str
    metric: str


@dataclass(frozen=True, slots=True)
class LatestValue:
    """The newest value of a series."""

    series_id: int
    ts_ms: int
    value: float | str | None


Int32s = npt.NDArray[np.int32]
Int64s = npt.NDArray[np.int64]
Float64s = npt.NDArray[np.float64]


def _empty_i32() -> Int32s:
    return np.empty(0, dtype=np.int32)


def _empty_i64() -> Int64s:
    return np.empty(0, dtype=np.int64)


def _empty_f64() -> Float64s:
    return np.empty(0, dtype=np.float64)


@dataclass(slots=True)
class PointBatch:
    """Validated points ready to store, as columns (one write = one batch).

    Attributes:
        series_id: series of each numeric point.
        ts: time of each numeric point (ms since the epoch, UTC).
        value: each numeric value.
        text_series_id: series of each string point.
        text_ts: time of each string point.
        text_value: each string value.
        digests: digests of the messages these points came from (idempotency).
    """

    series_id: Int32s = field(default_factory=_empty_i32)
    ts: Int64s = field(default_factory=_empty_i64)
    value: Float64s = field(default_factory=_empty_f64)
    text_series_id: Int32s = field(default_factory=_empty_i32)
    text_ts: Int64s = field(default_factory=_empty_i64)
    text_value: list[str] = field(default_factory=list)
    digests: list[bytes] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.series_id) + len(self.text_series_id)

    @classmethod
    def concat(cls, batches: Sequence[PointBatch]) -> Self:
        """Join batches into one (for group commit)."""
        if len(batches) == 1:
            b = batches[0]
            return cls(
                b.series_id,
                b.ts,
                b.value,
                b.text_series_id,
                b.text_ts,
                b.text_value,
                b.digests,
            )
        text: list[str] = []
        digests: list[bytes] = []
        for b in batches:
            text.extend(b.text_value)
            digests.extend(b.digests)
        return cls(
            series_id=np.concatenate([b.series_id for b in batches]) if batches else _empty_i32(),
            ts=np.concatenate([b.ts for b in batches]) if batches else _empty_i64(),
            value=np.concatenate([b.value for b in batches]) if batches else _empty_f64(),
            text_series_id=(
                np.concatenate([b.text_series_id for b in batches]) if batches else _empty_i32()
            ),
            text_ts=np.concatenate([b.text_ts for b in batches]) if batches else _empty_i64(),
            text_value=text,
            digests=digests,
        )


@dataclass(frozen=True, slots=True)
class SeriesSpans:
    """Per series of a batch: its id, its earliest time, and the row of its newest point.

    Computed once per write with one sort and shared by the dirty marks (earliest times) and
    the latest-value upsert (newest rows); sorting twice cost a fifth of a write's time.
    """

    series: Int32s
    first_ts: Int64s
    last_row: npt.NDArray[np.intp]


def series_spans(series_id: Int32s, ts: Int64s) -> SeriesSpans:
    """Summarize a batch per series (ties in time: the later row is the newest)."""
    if not len(series_id):
        return SeriesSpans(_empty_i32(), _empty_i64(), np.empty(0, dtype=np.intp))
    low = int(ts.min())
    span = int(ts.max()) - low + 1
    if span * (int(series_id.max()) + 1) < 2**62:
        # One stable sort of a combined (series, time) key; stability keeps row order on ties.
        key = series_id.astype(np.int64) * span + (ts - low)
        order = np.argsort(key, kind="stable")
    else:  # pragma: no cover - a batch spanning centuries
        order = np.lexsort((ts, series_id))
    sorted_ids = series_id[order]
    boundary = sorted_ids[1:] != sorted_ids[:-1]
    starts = np.flatnonzero(np.r_[True, boundary])
    ends = np.flatnonzero(np.r_[boundary, True])
    return SeriesSpans(sorted_ids[starts], ts[order[starts]], order[ends])


def min_per_series(series_id: Int32s, ts: Int64s) -> dict[int, int]:
    """The earliest timestamp of each series in a batch."""
    spans = series_spans(series_id, ts)
    return dict(zip(spans.series.tolist(), spans.first_ts.tolist(), strict=True))


def last_per_series(series_id: Int32s, ts: Int64s) -> npt.NDArray[np.intp]:
    """Indices of the newest point of each series in a batch (ties: the later row wins)."""
    return series_spans(series_id, ts).last_row


class DirtyTracker:
    """Which series have points not yet in the rollups, and over which times.

    A refresh rolls only *closed* minutes (before ``cutoff``, the start of the current minute):
    queries read the open minute raw anyway, so rolling it would recompute it at every refresh.
    Each point is thus rolled up once (again only when late data reopens its minute).

    Writes and refreshes run one at a time on a store's writer; queries may run on any thread
    and see ``dirty`` and ``rolling`` together, so a refresh in progress never hides data.
    """

    def __init__(self) -> None:
        self.dirty: dict[int, tuple[int, int]] = {}  # series -> (earliest, latest) unrolled ts
        self.rolling: dict[int, int] = {}  # series -> earliest ts being rolled now
        self._taken: dict[int, tuple[int, int]] = {}

    def mark(self, spans: SeriesSpans, last_ts: Int64s) -> None:
        """Record a batch about to be written (``last_ts``: each series' newest time)."""
        dirty = self.dirty
        for sid, first, last in zip(
            spans.series.tolist(), spans.first_ts.tolist(), last_ts.tolist(), strict=True
        ):
            old = dirty.get(sid)
            dirty[sid] = (first, last) if old is None else (min(old[0], first), max(old[1], last))

    def begin_refresh(self, cutoff_ms: int) -> dict[int, int]:
        """Take the series with points before ``cutoff_ms``: series -> roll from this time."""
        rolling: dict[int, int] = {}
        keep: dict[int, tuple[int, int]] = {}
        for sid, (start, until) in self.dirty.items():
            if start >= cutoff_ms:
                keep[sid] = (start, until)
                continue
            rolling[sid] = start
            if until >= cutoff_ms:
                keep[sid] = (cutoff_ms, until)
        self._taken = self.dirty
        # Publish ``rolling`` before shrinking ``dirty``: a query in between sees both.
        self.rolling = rolling
        self.dirty = keep
        return rolling

    def end_refresh(self, *, failed: bool = False) -> None:
        """The rolled data is committed (or, if ``failed``, is dirty again)."""
        if failed:
            for sid, (start, until) in self._taken.items():
                old = self.dirty.get(sid)
                self.dirty[sid] = (
                    (start, until) if old is None else (min(old[0], start), max(old[1], until))
                )
        self._taken = {}
        self.rolling = {}

    def split_point(self, series_id: int, now_ms: int) -> int:
        """Read rollups before this time and raw points from it on."""
        split = now_ms - RAW_TAIL_MS
        dirty = self.dirty.get(series_id)
        if dirty is not None and dirty[0] < split:
            split = dirty[0]
        rolling = self.rolling.get(series_id)
        if rolling is not None and rolling < split:
            split = rolling
        return split


def refresh_cutoff(now_ms: int) -> int:
    """The start of the current minute: rollups cover the minutes before it."""
    return now_ms - now_ms % MINUTE_MS


def pick_rollup(interval_ms: int | None) -> int:
    """The coarsest rollup granularity (ms) that divides the interval; 0 for raw."""
    if not interval_ms:
        return 0
    if interval_ms % HOUR_MS == 0:
        return HOUR_MS
    if interval_ms % MINUTE_MS == 0:
        return MINUTE_MS
    return 0


def finish_aggregate(agg: Aggregate, partials: Sequence[object]) -> float | None:
    """One aggregate value from a bucket's merged partials ``(count, sum, min, max, last)``."""
    n, total, low, high, last = partials
    count = float(n) if isinstance(n, int | float) else 0.0
    match agg:
        case Aggregate.COUNT:
            return count
        case Aggregate.AVG:
            return float(total) / count if count and isinstance(total, int | float) else None
        case Aggregate.SUM:
            chosen: object = total
        case Aggregate.MIN:
            chosen = low
        case Aggregate.MAX:
            chosen = high
        case Aggregate.LAST:
            chosen = last
    return float(chosen) if isinstance(chosen, int | float) else None


def align_range(start_ms: int, end_ms: int, interval_ms: int) -> tuple[int, int]:
    """Floor the start and ceil the end to the interval, so buckets are whole."""
    start = start_ms - start_ms % interval_ms
    end = end_ms if end_ms % interval_ms == 0 else end_ms - end_ms % interval_ms + interval_ms
    return start, end


class TimeSeriesStore(Protocol):
    """What the platform needs from a time-series store.

    Every method is safe to call concurrently from the event loop; implementations run blocking
    work off the loop. ``write`` is durable when it returns.
    """

    name: str

    async def open(self) -> None:
        """Connect and create the schema if needed."""

    async def close(self) -> None:
        """Flush and disconnect."""

    async def series_ids(self, keys: Sequence[SeriesKey]) -> list[int]:
        """Ids of the series, creating those that do not exist yet."""

    async def device_series(self, tenant_id: str, device_id: str) -> dict[str, int]:
        """Metric name -> series id for one device (existing series only)."""

    async def write(self, batch: PointBatch) -> None:
        """Store points, latest values and message digests in one transaction.

        Raises:
            StoreUnavailableError: the store refused the write; nothing was stored.
        """

    async def known_digests(self, digests: Sequence[bytes]) -> set[bytes]:
        """Those of ``digests`` already stored."""

    async def recent_digests(self, since_ms: int) -> list[bytes]:
        """Digests of messages stored since ``since_ms`` (to warm the dedupe window)."""

    async def latest(self, series_ids: Sequence[int]) -> dict[int, LatestValue]:
        """Newest value per series."""

    async def query(
        self,
        series_id: int,
        start_ms: int,
        end_ms: int,
        interval_ms: int | None,
        agg: Aggregate,
        *,
        text: bool = False,
    ) -> list[tuple[int, float | str | None]]:
        """Points of one series in ``[start, end)``: raw, or one aggregate per interval."""

    async def refresh_rollups(self) -> int:
        """Recompute rollups of dirty series; returns how many series were rolled."""

    async def apply_retention(self, retention_days: Mapping[str, int], now_ms: int) -> int:
        """Delete raw points older than each tenant's retention; returns rows deleted.

        Callers pass *every* tenant: a backend may drop whole time partitions older than the
        longest retention given, which removes the points of any tenant left out.
        """

    async def reporting_metrics(self, since_ms: int) -> list[tuple[str, str, str]]:
        """(tenant, device, metric) of every series with a value since ``since_ms``."""

    async def point_count(self, tenant_id: str | None = None) -> int:
        """Numeric points stored (for one tenant, or all)."""
