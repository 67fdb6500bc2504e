"""The time-series store contract, run against every backend."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tiangong.platform.tsdb.base import (
    HOUR_MS,
    MINUTE_MS,
    Aggregate,
    DirtyTracker,
    PointBatch,
    SeriesKey,
    TimeSeriesStore,
    last_per_series,
    min_per_series,
    series_spans,
)

NOW = int(time.time() * 1000)
T0 = NOW - NOW % HOUR_MS - 6 * HOUR_MS  # an hour boundary, six hours ago


def numeric(series: list[int], ts: list[int], values: list[float], digests=()) -> PointBatch:
    return PointBatch(
        series_id=np.asarray(series, dtype=np.int32),
        ts=np.asarray(ts, dtype=np.int64),
        value=np.asarray(values, dtype=np.float64),
        digests=list(digests),
    )


def test_batch_helpers() -> None:
    sid = np.asarray([3, 1, 3, 1, 2], dtype=np.int32)
    ts = np.asarray([50, 20, 10, 30, 5], dtype=np.int64)
    assert min_per_series(sid, ts) == {1: 20, 2: 5, 3: 10}
    assert sorted(last_per_series(sid, ts).tolist()) == [0, 3, 4]


async def test_series_ids_are_stable_and_created_once(store: TimeSeriesStore) -> None:
    keys = [
        SeriesKey("t1", "d1", "temp"),
        SeriesKey("t1", "d1", "power"),
        SeriesKey("t2", "d1", "temp"),
    ]
    first = await store.series_ids(keys)
    assert len(set(first)) == 3
    assert await store.series_ids(list(reversed(keys))) == list(reversed(first))
    assert await store.device_series("t1", "d1") == {"temp": first[0], "power": first[1]}


async def test_write_latest_and_raw_query(store: TimeSeriesStore) -> None:
    [a, b] = await store.series_ids([SeriesKey("t", "d", "a"), SeriesKey("t", "d", "b")])
    await store.write(numeric([a, a, b], [T0 + 2000, T0 + 1000, T0 + 500], [2.0, 1.0, 7.5]))
    latest = await store.latest([a, b])
    assert (latest[a].ts_ms, latest[a].value) == (T0 + 2000, 2.0)
    assert latest[b].value == 7.5
    # An older point does not replace the latest value.
    await store.write(numeric([a], [T0 + 10], [99.0]))
    assert (await store.latest([a]))[a].value == 2.0
    rows = await store.query(a, T0, T0 + HOUR_MS, None, Aggregate.AVG)
    assert rows == [(T0 + 10, 99.0), (T0 + 1000, 1.0), (T0 + 2000, 2.0)]


async def test_text_points(store: TimeSeriesStore) -> None:
    [s] = await store.series_ids([SeriesKey("t", "d", "mode")])
    await store.write(
        PointBatch(
            text_series_id=np.asarray([s, s], dtype=np.int32),
            text_ts=np.asarray([T0, T0 + 1000], dtype=np.int64),
            text_value=["auto", "manual"],
        )
    )
    assert (await store.latest([s]))[s].value == "manual"
    rows = await store.query(s, T0, T0 + 5000, None, Aggregate.LAST, text=True)
    assert rows == [(T0, "auto"), (T0 + 1000, "manual")]


def expected(
    ts: np.ndarray, values: np.ndarray, interval: int, agg: Aggregate
) -> list[tuple[int, float]]:
    buckets = (ts // interval) * interval
    out = []
    for b in np.unique(buckets):
        sel = buckets == b
        v = values[sel]
        match agg:
            case Aggregate.AVG:
                x = float(v.mean())
            case Aggregate.MIN:
                x = float(v.min())
            case Aggregate.MAX:
                x = float(v.max())
            case Aggregate.COUNT:
                x = float(len(v))
            case Aggregate.SUM:
                x = float(v.sum())
            case Aggregate.LAST:
                x = float(v[np.argmax(ts[sel])])
        out.append((int(b), x))
    return out


@pytest.mark.parametrize("interval", [10_000, MINUTE_MS, 15 * MINUTE_MS, HOUR_MS])
@pytest.mark.parametrize("agg", list(Aggregate))
async def test_aggregates_match_numpy_before_and_after_rollup(
    store: TimeSeriesStore, interval: int, agg: Aggregate
) -> None:
    [s] = await store.series_ids([SeriesKey("t", "d", f"m-{interval}-{agg}")])
    rng = np.random.default_rng(7)
    ts = T0 + np.sort(rng.choice(3 * HOUR_MS, size=2000, replace=False)).astype(np.int64)
    values = rng.normal(50, 10, size=2000).round(3)
    await store.write(numeric([s] * len(ts), ts.tolist(), values.tolist()))
    want = expected(ts, values, interval, agg)
    before = await store.query(s, T0, T0 + 3 * HOUR_MS, interval, agg)
    await store.refresh_rollups()
    after = await store.query(s, T0, T0 + 3 * HOUR_MS, interval, agg)
    for got in (before, after):
        assert [b for b, _ in got] == [b for b, _ in want]
        assert np.allclose([v for _, v in got], [v for _, v in want])


async def test_late_data_corrects_rollups(store: TimeSeriesStore) -> None:
    [s] = await store.series_ids([SeriesKey("t", "late", "x")])
    await store.write(numeric([s] * 3, [T0, T0 + MINUTE_MS, T0 + 2 * MINUTE_MS], [1.0, 2.0, 3.0]))
    await store.refresh_rollups()
    # A gateway drains its buffer: a point inside the first, already rolled minute.
    await store.write(numeric([s], [T0 + 30_000], [11.0]))
    got = await store.query(s, T0, T0 + HOUR_MS, MINUTE_MS, Aggregate.SUM)
    assert got == [(T0, 12.0), (T0 + MINUTE_MS, 2.0), (T0 + 2 * MINUTE_MS, 3.0)]
    await store.refresh_rollups()
    assert await store.query(s, T0, T0 + HOUR_MS, HOUR_MS, Aggregate.COUNT) == [(T0, 4.0)]


async def test_digests_make_redelivery_detectable(store: TimeSeriesStore) -> None:
    [s] = await store.series_ids([SeriesKey("t", "d", "dg")])
    await store.write(numeric([s], [T0], [1.0], digests=[b"a" * 16, b"b" * 16]))
    assert await store.known_digests([b"a" * 16, b"c" * 16]) == {b"a" * 16}
    assert set(await store.recent_digests(NOW - HOUR_MS)) >= {b"a" * 16, b"b" * 16}


async def test_retention_per_tenant(store: TimeSeriesStore) -> None:
    [old, keep] = await store.series_ids(
        [SeriesKey("short", "d", "x"), SeriesKey("long", "d", "x")]
    )
    day = 24 * HOUR_MS
    stamps = [NOW - 10 * day, NOW - 5 * day, NOW - day]
    await store.write(numeric([old] * 3 + [keep] * 3, stamps * 2, [1.0] * 6))
    deleted = await store.apply_retention({"short": 3, "long": 30}, NOW)
    assert deleted == 2
    assert await store.point_count("short") == 1
    assert await store.point_count("long") == 3


async def test_reporting_metrics(store: TimeSeriesStore) -> None:
    [a, b] = await store.series_ids([SeriesKey("t", "d1", "x"), SeriesKey("t", "d2", "y")])
    await store.write(numeric([a, b], [NOW - 1000, NOW - 10 * MINUTE_MS], [1.0, 2.0]))
    assert await store.reporting_metrics(NOW - MINUTE_MS) == [("t", "d1", "x")]


def test_dirty_tracker_rolls_closed_minutes_only() -> None:
    tracker = DirtyTracker()
    cutoff = 10 * MINUTE_MS
    sid = np.asarray([1, 1, 2, 3], dtype=np.int32)
    ts = np.asarray(
        [cutoff - 5_000, cutoff + 5_000, cutoff - 90_000, cutoff + 1_000], dtype=np.int64
    )
    spans = series_spans(sid, ts)
    tracker.mark(spans, ts[spans.last_row])
    rolling = tracker.begin_refresh(cutoff)
    assert rolling == {1: cutoff - 5_000, 2: cutoff - 90_000}
    # Series 1 keeps its open minute dirty; series 3 has only the open minute.
    assert tracker.dirty == {1: (cutoff, cutoff + 5_000), 3: (cutoff + 1_000, cutoff + 1_000)}
    assert tracker.split_point(2, cutoff + 10 * MINUTE_MS) == cutoff - 90_000  # while rolling
    tracker.end_refresh(failed=True)
    assert tracker.dirty[2] == (cutoff - 90_000, cutoff - 90_000)  # given back for a retry
    assert tracker.dirty[1] == (cutoff - 5_000, cutoff + 5_000)
    tracker.begin_refresh(cutoff)
    tracker.end_refresh()
    assert tracker.rolling == {}
    assert 2 not in tracker.dirty


async def test_queries_stay_exact_across_the_open_minute(store: TimeSeriesStore) -> None:
    [s] = await store.series_ids([SeriesKey("t", "open", "x")])
    now = int(time.time() * 1000)
    ts = np.arange(now - 3 * MINUTE_MS, now, 1000, dtype=np.int64)
    await store.write(numeric([s] * len(ts), ts.tolist(), [1.0] * len(ts)))
    await store.refresh_rollups()  # rolls the closed minutes, leaves the current one raw
    later = np.arange(now, now + 2000, 1000, dtype=np.int64)
    await store.write(numeric([s] * len(later), later.tolist(), [1.0] * len(later)))
    await store.refresh_rollups()
    counts = await store.query(s, now - HOUR_MS, now + MINUTE_MS, MINUTE_MS, Aggregate.COUNT)
    assert sum(v for _, v in counts) == len(ts) + len(later)
    hourly = await store.query(s, now - 2 * HOUR_MS, now + HOUR_MS, HOUR_MS, Aggregate.SUM)
    assert sum(v for _, v in hourly) == len(ts) + len(later)
