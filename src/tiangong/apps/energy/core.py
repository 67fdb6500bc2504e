"""Consumption from meter readings: the pure core of the energy app (no I/O).

Theory of operation
-------------------
Readings of one series become a **consumption profile**: the cumulative consumption (kWh) as a
piecewise-linear function of time, known at each reading (a *knot*) and linear between two.
Consumption over any interval ``[a, b)`` is then ``E(b) - E(a)``, so buckets (hours, days,
months) and tariff bands are split *exactly* at their boundaries, the parts always add up to
the whole, and several devices add by adding their profiles' figures over the same cuts.
Before the first and after the last reading E is flat: nothing is invented outside the data.

Readings are cleaned first, and everything dropped is counted (:class:`ReadingQuality`):

- out of order: sorted by time (counted when a reading arrives older than one before it);
- duplicates: readings sharing a timestamp keep one (the largest) and count the others;
- invalid: NaN, infinite, and (for a counter) negative readings are dropped.

**Cumulative counters** (a meter's ``energy`` in kWh, a machine's good-part counter):

- increase between two readings = the difference;
- a *glitch*, one reading lower than the one before while the next is back at or above that
  one, is dropped and counted (a bad read, not a reset: counting it as a reset would add the
  whole reading);
- a lasting decrease is a **reset**: the counter started again from zero, so the increase is
  the new reading (a lower bound if the meter was replaced by one that starts elsewhere);
  when the counter's modulus is known (``rollover``) and the old reading was within 10 % of
  it, it is a **rollover** and the increase is ``modulus - old + new``. Both are counted, with
  their times;
- a **gap** (two readings further apart than ``gap_ms``): the counter proves how much was
  consumed across it, so totals stay exact, but not when. That increase is spread evenly over
  the gap and reported as *estimated* wherever it lands, alongside the gap's start, end and kWh;
  it is never interpolated into invented readings.

**Power** (kW, for devices without a counter): the energy between two readings is the
trapezoid of their powers. Across a gap nothing is known and nothing is counted: the gap is
reported with an unknown (``None``) energy. Negative power (export, a sign error) is counted
and taken as zero, since consumption is what is asked.
"""

from __future__ import annotations

import enum
import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import numpy as np
import numpy.typing as npt

from tiangong.apps.energy.errors import EnergyQueryError
from tiangong.apps.energy.tariff import Tariff, TouPeriod
from tiangong.data.catalog import kwh_to_tce
from tiangong.platform.tsdb.base import Float64s, Int64s

__all__ = [
    "GAP_MS",
    "HOUR_MS",
    "BandFigures",
    "BucketFigures",
    "ConsumptionProfile",
    "CounterReset",
    "Gap",
    "Granularity",
    "ReadingQuality",
    "Source",
    "bucket_edges",
    "counter_profile",
    "power_profile",
    "summarize",
    "total",
]

#: Readings further apart than this leave a gap (the demand interval of China's tariffs).
GAP_MS: Final = 15 * 60_000
HOUR_MS: Final = 3_600_000
#: A decrease from within this share of a known modulus is a rollover, not a reset.
ROLLOVER_SHARE: Final = 0.1


class Source(enum.StrEnum):
    """Where a device's consumption comes from."""

    COUNTER = "counter"  # a cumulative kWh counter
    POWER = "power"  # power readings integrated over time


class Granularity(enum.StrEnum):
    """Bucket size of a consumption query (in the site's local time)."""

    HOUR = "hour"
    DAY = "day"
    MONTH = "month"


@dataclass(frozen=True, slots=True)
class ReadingQuality:
    """What happened to the readings of one series (everything dropped is counted).

    Attributes:
        readings: readings given.
        used: readings the profile is made of.
        duplicates: readings dropped because another had the same timestamp.
        out_of_order: readings that arrived older than one before them (sorted, kept).
        invalid: NaN, infinite or negative-counter readings (dropped).
        glitches: single low counter readings between higher ones (dropped).
        negative_power: negative power readings (taken as zero).
        resets: counter resets (restarts from zero).
        rollovers: counter rollovers past a known modulus.
        gaps: intervals between readings longer than the gap threshold.
        gap_ms: their total length.
    """

    readings: int = 0
    used: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    invalid: int = 0
    glitches: int = 0
    negative_power: int = 0
    resets: int = 0
    rollovers: int = 0
    gaps: int = 0
    gap_ms: int = 0


@dataclass(frozen=True, slots=True)
class Gap:
    """A span without readings.

    Attributes:
        start_ms: the last reading before it (or the start of the asked range).
        end_ms: the first reading after it (or the end of the asked range).
        kwh: consumed across it (a counter's increase, spread evenly and reported as
            estimated), or ``None`` when unknown (power readings; no reading at all).
    """

    start_ms: int
    end_ms: int
    kwh: float | None


@dataclass(frozen=True, slots=True)
class CounterReset:
    """A counter that went back: reset to zero, or rolled over its modulus.

    Attributes:
        at_ms: the first reading after it.
        before: the reading before it.
        after: the reading after it.
        rollover: True for a rollover past the modulus.
    """

    at_ms: int
    before: float
    after: float
    rollover: bool


@dataclass(frozen=True, slots=True)
class ConsumptionProfile:
    """Cumulative consumption of one series as a piecewise-linear function of time.

    Attributes:
        source: counter or integrated power.
        knots: reading times (ms), increasing.
        cumulative: consumption from the first knot to each knot.
        estimated: the part of ``cumulative`` that was spread across gaps.
        gaps: gaps between readings.
        resets: counter resets and rollovers.
        quality: what happened to the readings.
        gap_ms: the gap threshold used.
    """

    source: Source
    knots: Int64s
    cumulative: Float64s
    estimated: Float64s
    gaps: tuple[Gap, ...]
    resets: tuple[CounterReset, ...]
    quality: ReadingQuality
    gap_ms: int = GAP_MS

    def over(self, cuts: Sequence[int] | Int64s) -> tuple[Float64s, Float64s]:
        """Consumption and its estimated part in each interval between consecutive cuts."""
        edges = np.asarray(cuts, dtype=np.float64)
        if len(self.knots) < 2 or len(edges) < 2:
            zeros = np.zeros(max(len(edges) - 1, 0), dtype=np.float64)
            return zeros, zeros.copy()
        knots = self.knots.astype(np.float64)
        kwh = np.diff(np.interp(edges, knots, self.cumulative))
        estimated = np.diff(np.interp(edges, knots, self.estimated))
        return kwh, estimated

    def between(self, start_ms: int, end_ms: int) -> float:
        """Consumption in ``[start, end)``."""
        return float(self.over([start_ms, end_ms])[0][0])

    def complete(self, start_ms: int, end_ms: int) -> bool:
        """Whether ``[start, end)`` is covered by readings without a gap."""
        if len(self.knots) < 2 or self.knots[0] > start_ms or self.knots[-1] < end_ms:
            return False
        return not any(g.start_ms < end_ms and g.end_ms > start_ms for g in self.gaps)

    def gaps_within(self, start_ms: int, end_ms: int) -> list[Gap]:
        """Gaps overlapping ``[start, end)``, with spans of no reading at either end of it."""
        out: list[Gap] = []
        if len(self.knots) == 0:
            return [Gap(start_ms, end_ms, None)]
        first, last = int(self.knots[0]), int(self.knots[-1])
        if first - start_ms > self.gap_ms:
            out.append(Gap(start_ms, min(first, end_ms), None))
        out.extend(g for g in self.gaps if g.start_ms < end_ms and g.end_ms > start_ms)
        if end_ms - last > self.gap_ms:
            out.append(Gap(max(last, start_ms), end_ms, None))
        return out


def _clean(
    ts: Sequence[int] | Int64s, values: Sequence[float] | Float64s, *, counter: bool
) -> tuple[Int64s, Float64s, ReadingQuality]:
    """Sorted, de-duplicated, valid readings, and the counts of what was done."""
    times = np.asarray(ts, dtype=np.int64)
    vals = np.asarray(values, dtype=np.float64)
    if len(times) != len(vals):
        raise EnergyQueryError(f"{len(times)} timestamps for {len(vals)} readings")
    n = len(times)
    out_of_order = (
        int(np.count_nonzero(times[1:] < np.maximum.accumulate(times)[:-1])) if n > 1 else 0
    )
    valid = np.isfinite(vals)
    if counter:
        valid &= vals >= 0.0
    invalid = int(n - np.count_nonzero(valid))
    times, vals = times[valid], vals[valid]
    # Sort by time, then value, so the last of each timestamp is its largest reading.
    order = np.lexsort((vals, times))
    times, vals = times[order], vals[order]
    if len(times) > 1:
        last_of_ts = np.r_[times[1:] != times[:-1], True]
        duplicates = int(len(times) - np.count_nonzero(last_of_ts))
        times, vals = times[last_of_ts], vals[last_of_ts]
    else:
        duplicates = 0
    quality = ReadingQuality(
        readings=n,
        used=len(times),
        duplicates=duplicates,
        out_of_order=out_of_order,
        invalid=invalid,
    )
    return times, vals, quality


def _drop_glitches(vals: Float64s) -> tuple[npt.NDArray[np.bool_], int]:
    """Mask of readings to keep: single dips between higher readings are bad reads."""
    keep = np.ones(len(vals), dtype=bool)
    dips = np.flatnonzero(vals[1:] < vals[:-1]) + 1
    glitches = 0
    for i in dips.tolist():
        j = i - 1
        while j >= 0 and not keep[j]:
            j -= 1
        if j < 0 or vals[i] >= vals[j]:
            continue
        if i + 1 < len(vals) and vals[i + 1] >= vals[j]:
            keep[i] = False
            glitches += 1
    return keep, glitches


def counter_profile(
    ts: Sequence[int] | Int64s,
    values: Sequence[float] | Float64s,
    *,
    gap_ms: int = GAP_MS,
    rollover: float | None = None,
) -> ConsumptionProfile:
    """The profile of a cumulative counter's readings (module docstring: resets, gaps...).

    Args:
        ts: reading times (ms), in any order.
        values: the counter's readings.
        gap_ms: readings further apart leave a gap.
        rollover: the counter's modulus (it counts ``0 <= reading < rollover``), if known.
    """
    times, vals, quality = _clean(ts, values, counter=True)
    keep, glitches = _drop_glitches(vals)
    times, vals = times[keep], vals[keep]
    if len(times) < 2:
        return ConsumptionProfile(
            Source.COUNTER,
            times,
            np.zeros(len(times)),
            np.zeros(len(times)),
            (),
            (),
            _replace(quality, used=len(times), glitches=glitches),
            gap_ms,
        )
    step = np.diff(vals)
    dt = np.diff(times)
    increase = step.copy()
    resets: list[CounterReset] = []
    for i in np.flatnonzero(step < 0).tolist():
        before, after = float(vals[i]), float(vals[i + 1])
        rolled = rollover is not None and before >= (1.0 - ROLLOVER_SHARE) * rollover
        increase[i] = (rollover - before + after) if rollover is not None and rolled else after
        resets.append(CounterReset(int(times[i + 1]), before, after, rolled))
    in_gap = dt > gap_ms
    gaps = tuple(
        Gap(int(times[i]), int(times[i + 1]), float(increase[i]))
        for i in np.flatnonzero(in_gap).tolist()
    )
    rollovers = sum(1 for r in resets if r.rollover)
    quality = _replace(
        quality,
        used=len(times),
        glitches=glitches,
        resets=len(resets) - rollovers,
        rollovers=rollovers,
        gaps=len(gaps),
        gap_ms=int(dt[in_gap].sum()),
    )
    return ConsumptionProfile(
        Source.COUNTER,
        times,
        np.r_[0.0, np.cumsum(increase)],
        np.r_[0.0, np.cumsum(np.where(in_gap, increase, 0.0))],
        gaps,
        tuple(resets),
        quality,
        gap_ms,
    )


def power_profile(
    ts: Sequence[int] | Int64s, kw: Sequence[float] | Float64s, *, gap_ms: int = GAP_MS
) -> ConsumptionProfile:
    """The profile of power readings (kW), integrated by trapezoids; gaps count nothing."""
    times, vals, quality = _clean(ts, kw, counter=False)
    negative = int(np.count_nonzero(vals < 0.0))
    vals = np.maximum(vals, 0.0)
    if len(times) < 2:
        return ConsumptionProfile(
            Source.POWER,
            times,
            np.zeros(len(times)),
            np.zeros(len(times)),
            (),
            (),
            _replace(quality, negative_power=negative),
            gap_ms,
        )
    dt = np.diff(times)
    in_gap = dt > gap_ms
    energy = np.where(in_gap, 0.0, (vals[1:] + vals[:-1]) / 2.0 * dt / HOUR_MS)
    gaps = tuple(
        Gap(int(times[i]), int(times[i + 1]), None) for i in np.flatnonzero(in_gap).tolist()
    )
    quality = _replace(
        quality, negative_power=negative, gaps=len(gaps), gap_ms=int(dt[in_gap].sum())
    )
    return ConsumptionProfile(
        Source.POWER,
        times,
        np.r_[0.0, np.cumsum(energy)],
        np.zeros(len(times)),
        gaps,
        (),
        quality,
        gap_ms,
    )


def _replace(quality: ReadingQuality, **changes: int) -> ReadingQuality:
    fields = {name: getattr(quality, name) for name in ReadingQuality.__slots__}
    fields.update(changes)
    return ReadingQuality(**fields)


def bucket_edges(start_ms: int, end_ms: int, by: Granularity, zone: zoneinfo.ZoneInfo) -> list[int]:
    """``[start, end)`` cut at local hour, day or month starts.

    The first and last edges are ``start`` and ``end`` themselves: a partial first or last
    bucket stays partial.

    Raises:
        EnergyQueryError: an empty range.
    """
    if end_ms <= start_ms:
        raise EnergyQueryError("the range is empty: 'to' must be after 'from'")
    local = datetime.fromtimestamp(start_ms / 1000, UTC).astimezone(zone)
    if by is Granularity.HOUR:
        floor = local.replace(minute=0, second=0, microsecond=0)
    elif by is Granularity.DAY:
        floor = local.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        floor = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    edges = [start_ms]
    at = floor
    while True:
        if by is Granularity.HOUR:
            # Absolute hours: a daylight-saving change gives a 23- or 25-bucket day.
            at = (at.astimezone(UTC) + timedelta(hours=1)).astimezone(zone)
        elif by is Granularity.DAY:
            day = at.date() + timedelta(days=1)
            at = datetime(day.year, day.month, day.day, tzinfo=zone)
        else:
            year, month = (at.year + 1, 1) if at.month == 12 else (at.year, at.month + 1)
            at = datetime(year, month, 1, tzinfo=zone)
        edge = int(at.timestamp() * 1000)
        if edge >= end_ms:
            break
        if edge > start_ms:
            edges.append(edge)
    edges.append(end_ms)
    return edges


@dataclass(frozen=True, slots=True)
class BandFigures:
    """Consumption and cost in one time-of-use period.

    Attributes:
        period: peak, flat, valley or critical.
        kwh: consumed in it.
        estimated_kwh: the part of ``kwh`` spread across gaps.
        price: CNY per kWh.
        cost: ``kwh * price`` (CNY).
    """

    period: TouPeriod
    kwh: float
    estimated_kwh: float
    price: float
    cost: float


@dataclass(frozen=True, slots=True)
class BucketFigures:
    """Energy figures of one bucket (or of a whole range, see :func:`total`).

    Attributes:
        start_ms: bucket start.
        end_ms: bucket end.
        kwh: consumed.
        estimated_kwh: the part of ``kwh`` spread evenly across gaps (its time is not known).
        tce: ``kwh`` in tonnes of standard coal equivalent (0.1229 kgce/kWh, GB/T 2589).
        cost: CNY at the tariff.
        bands: per time-of-use period (periods of the tariff only, in tariff order).
        good_units: good units produced (``None`` when no output counter is in scope).
        kwh_per_unit: ``kwh / good_units`` (``None`` without units).
        coverage: the share of the bucket's time covered by readings, averaged over the
            profiles added up (1: read throughout; 0: no reading at all, so ``kwh`` is not a
            measured zero). A counter's gap counts as covered (its consumption is known).
    """

    start_ms: int
    end_ms: int
    kwh: float
    estimated_kwh: float
    tce: float
    cost: float
    bands: tuple[BandFigures, ...]
    good_units: float | None
    kwh_per_unit: float | None
    coverage: float = 0.0


def _figures(
    start_ms: int,
    end_ms: int,
    band_kwh: dict[TouPeriod, tuple[float, float]],
    tariff: Tariff,
    *,
    good: float | None,
    coverage: float,
) -> BucketFigures:
    bands = tuple(
        BandFigures(p, kwh, est, tariff.price(p), kwh * tariff.price(p))
        for p, (kwh, est) in band_kwh.items()
    )
    kwh = sum(b.kwh for b in bands)
    return BucketFigures(
        start_ms=start_ms,
        end_ms=end_ms,
        kwh=kwh,
        estimated_kwh=sum(b.estimated_kwh for b in bands),
        tce=kwh_to_tce(kwh),
        cost=sum(b.cost for b in bands),
        bands=bands,
        good_units=good,
        kwh_per_unit=kwh / good if good else None,
        coverage=coverage,
    )


def _coverage(profile: ConsumptionProfile, starts: Int64s, ends: Int64s) -> Float64s:
    """Per bucket, the share of its time the profile's readings cover."""
    if len(profile.knots) < 2:
        return np.zeros(len(starts))
    first, last = int(profile.knots[0]), int(profile.knots[-1])
    covered = np.clip(np.minimum(ends, last) - np.maximum(starts, first), 0, None)
    for gap in profile.gaps:
        if gap.kwh is None:  # nothing known across it
            covered -= np.clip(
                np.minimum(ends, gap.end_ms) - np.maximum(starts, gap.start_ms), 0, None
            )
    share: Float64s = covered.astype(np.float64) / (ends - starts)
    return share


def _tariff_periods(tariff: Tariff) -> list[TouPeriod]:
    used = {b.period for b in tariff.bands}
    return [p for p in TouPeriod if p in used]


def summarize(
    consumption: Iterable[ConsumptionProfile],
    edges: Sequence[int],
    tariff: Tariff,
    output: Iterable[ConsumptionProfile] | None = None,
) -> list[BucketFigures]:
    """Figures per bucket of the summed profiles, split exactly at tariff band boundaries.

    Args:
        consumption: the kWh profiles to add up.
        edges: bucket edges (see :func:`bucket_edges`).
        tariff: prices the bands.
        output: good-unit counter profiles, for energy per unit (``None``: not asked).
    """
    if len(edges) < 2:
        return []
    periods = tariff.periods_between(edges[0], edges[-1])
    cuts = np.unique(np.asarray([*edges, *(p[0] for p in periods)], dtype=np.int64))
    kwh = np.zeros(len(cuts) - 1)
    est = np.zeros(len(cuts) - 1)
    starts = np.asarray(edges[:-1], dtype=np.int64)
    ends = np.asarray(edges[1:], dtype=np.int64)
    coverage = np.zeros(len(starts))
    profiles = 0
    for profile in consumption:
        part, part_est = profile.over(cuts)
        kwh += part
        est += part_est
        coverage += _coverage(profile, starts, ends)
        profiles += 1
    if profiles:
        coverage /= profiles
    band_starts = np.asarray([p[0] for p in periods], dtype=np.int64)
    band_of = np.searchsorted(band_starts, cuts[:-1], side="right") - 1
    bucket_of = np.searchsorted(np.asarray(edges, dtype=np.int64), cuts[:-1], side="right") - 1
    good: Float64s | None = None
    if output is not None:
        good = np.zeros(len(edges) - 1)
        counted = False
        for profile in output:
            good += profile.over(edges)[0]
            counted = True
        if not counted:
            good = None
    order = _tariff_periods(tariff)
    sums: list[dict[TouPeriod, tuple[float, float]]] = [
        dict.fromkeys(order, (0.0, 0.0)) for _ in range(len(edges) - 1)
    ]
    for k in range(len(cuts) - 1):
        period = periods[int(band_of[k])][2]
        bucket = sums[int(bucket_of[k])]
        old_kwh, old_est = bucket[period]
        bucket[period] = (old_kwh + float(kwh[k]), old_est + float(est[k]))
    return [
        _figures(
            edges[i],
            edges[i + 1],
            sums[i],
            tariff,
            good=None if good is None else float(good[i]),
            coverage=float(coverage[i]),
        )
        for i in range(len(edges) - 1)
    ]


def total(buckets: Sequence[BucketFigures], tariff: Tariff) -> BucketFigures | None:
    """The figures of consecutive buckets together (``None`` for no bucket)."""
    if not buckets:
        return None
    bands: dict[TouPeriod, tuple[float, float]] = dict.fromkeys(_tariff_periods(tariff), (0.0, 0.0))
    for bucket in buckets:
        for band in bucket.bands:
            kwh, est = bands.get(band.period, (0.0, 0.0))
            bands[band.period] = (kwh + band.kwh, est + band.estimated_kwh)
    units = [b.good_units for b in buckets if b.good_units is not None]
    good = sum(units) if units else None
    span = buckets[-1].end_ms - buckets[0].start_ms
    coverage = sum(b.coverage * (b.end_ms - b.start_ms) for b in buckets) / span
    return _figures(
        buckets[0].start_ms, buckets[-1].end_ms, bands, tariff, good=good, coverage=coverage
    )
