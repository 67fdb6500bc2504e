"""The OEE computation, sans-I/O: state and counter samples in, ISO 22400-2 figures out.

Theory of operation
-------------------
**Terms (ISO 22400-2).** Planned busy time *PBT* is the planned (shift) time less planned
downtime; actual production time *APT* is the part of it the machine was producing; planned run
time per unit *PRI* is the ideal cycle time; produced quantity *PQ* = good quantity *GQ* + scrap.
Then availability = APT / PBT, effectiveness = PRI x PQ / APT, quality = GQ / PQ and
OEE = availability x effectiveness x quality.

**States to time.** A state sample holds from its time until the next sample, but never for
more than ``max_gap_ms``: after that the state is *unknown* until the next sample. Unknown time
(a gap in the data, before the first sample) is planned busy time that is never counted as
producing, so availability is a lower bound while ``unknown_ms`` is above zero, and the figures
say so; when no state data covers any of a period, availability and OEE are unknown (``None``),
not zero. Each state label belongs to one :class:`StateClass`; the class decides where its time
goes (``PLANNED_DOWN`` is taken out of PBT, every other class is in it, only ``PRODUCING`` is
APT).

**Counters to quantities.** Part counters are cumulative. The increase between two consecutive
valid samples is counted at the time of the later one (so a period gets the parts whose count
arrived in it, split exactly at its boundaries); a fall is a counter reset (a new shift, a new
order, a replaced controller) and counts the new value as the parts made since the reset. Parts
counted across a gap in the state data are real parts and are counted, which can make
effectiveness exceed 1 when much time was unknown. A period in which no counter increase could
be measured (no two consecutive samples end in it) has an unknown quantity, never zero.

**Bad samples.** Non-finite values, enum indices outside the labels and negative counts are
dropped; samples are sorted by time (those that came out of order are counted); of several
samples with one timestamp the last is kept. Each of these is counted in :class:`DataQuality`
and none changes a figure beyond dropping the sample.

**Downtime reasons.** A run of ``DOWN`` state takes the code of the first fault event from
``fault_tolerance_ms`` before its start to its end ("unspecified" when there is none). The
downtime Pareto lists every availability loss by reason: fault codes of down time, ``setup``,
waiting states by their label (``idle``, ``starved``, ``blocked``), and ``no data``.
"""

from __future__ import annotations

import bisect
import enum
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from tiangong.apps.oee.calendar import CalendarPeriod

__all__ = [
    "NO_DATA",
    "UNSPECIFIED",
    "DataQuality",
    "Loss",
    "OeeFigures",
    "StateClass",
    "StateRun",
    "clean_samples",
    "compute",
    "counter_increments",
    "pareto",
    "state_runs",
]

#: The reason of unknown (no data) time in the Pareto.
NO_DATA: Final = "no data"
#: The reason of down time no fault event explains.
UNSPECIFIED: Final = "unspecified"


class StateClass(enum.StrEnum):
    """Where a machine state's time goes in ISO 22400-2."""

    PRODUCING = "producing"  # APT
    SETUP = "setup"  # PBT, not APT (ISO 22400 unit setup time)
    WAITING = "waiting"  # PBT, not APT: idle, starved, blocked
    DOWN = "down"  # PBT, not APT: unplanned downtime (ISO 22400 unit delay time), with reason
    PLANNED_DOWN = "planned_down"  # out of PBT (planned maintenance, no order planned)
    UNKNOWN = "unknown"  # no state data: PBT, never APT


@dataclass(slots=True)
class DataQuality:
    """What was wrong with the input, counted (none of it changes a figure)."""

    invalid: int = 0  # NaN, infinite, unknown enum index, negative count
    duplicates: int = 0  # samples sharing a timestamp with another (the last is kept)
    out_of_order: int = 0  # samples that arrived after a later one
    counter_resets: int = 0  # a cumulative counter fell
    gaps: int = 0  # runs of unknown state inside the period

    def add(self, other: DataQuality) -> None:
        """Add another count to this one."""
        self.invalid += other.invalid
        self.duplicates += other.duplicates
        self.out_of_order += other.out_of_order
        self.counter_resets += other.counter_resets
        self.gaps += other.gaps


@dataclass(frozen=True, slots=True)
class StateRun:
    """A span of one state: ``[start_ms, end_ms)``; ``label`` None when unknown."""

    start_ms: int
    end_ms: int
    label: str | None
    state_class: StateClass
    reason: str | None = None


@dataclass(slots=True)
class Loss:
    """Time lost to one reason."""

    category: StateClass
    reason: str
    lost_ms: int = 0
    occurrences: int = 0


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


@dataclass(slots=True)
class OeeFigures:
    """The ISO 22400-2 figures of one machine (or group) over one period.

    Times are milliseconds; ``ideal_ms`` is PRI x PQ; ``rated_apt_ms`` is the APT of the
    machines whose PRI is known (effectiveness is computed over those only).
    """

    planned_ms: int = 0
    pbt_ms: int = 0
    apt_ms: int = 0
    setup_ms: int = 0
    waiting_ms: int = 0
    down_ms: int = 0
    unknown_ms: int = 0
    planned_down_ms: int = 0
    produced: float | None = None
    good: float | None = None
    ideal_ms: float | None = None
    rated_apt_ms: int = 0
    machines: int = 1
    data_quality: DataQuality = field(default_factory=DataQuality)
    losses: dict[tuple[StateClass, str], Loss] = field(default_factory=dict)

    @property
    def scrap(self) -> float | None:
        """Scrap quantity (PQ - GQ)."""
        if self.produced is None or self.good is None:
            return None
        return self.produced - self.good

    @property
    def observed(self) -> bool:
        """Whether any of the planned busy time has state data (else nothing is known)."""
        return self.pbt_ms > self.unknown_ms

    @property
    def availability(self) -> float | None:
        """APT / PBT (``None`` when no state data covers any of it)."""
        return _ratio(self.apt_ms, self.pbt_ms) if self.observed else None

    @property
    def effectiveness(self) -> float | None:
        """PRI x PQ / APT (over machines with a known PRI)."""
        if self.ideal_ms is None:
            return None
        return _ratio(self.ideal_ms, self.rated_apt_ms)

    @property
    def quality(self) -> float | None:
        """GQ / PQ."""
        if self.produced is None or self.good is None:
            return None
        return _ratio(self.good, self.produced)

    @property
    def oee(self) -> float | None:
        """Availability x effectiveness x quality; 0 when nothing ran in planned busy time."""
        if not self.observed:
            return None
        if self.apt_ms == 0:
            return 0.0
        a, e, q = self.availability, self.effectiveness, self.quality
        if a is None or e is None or q is None:
            return None
        return a * e * q

    @classmethod
    def combine(cls, figures: Iterable[OeeFigures]) -> OeeFigures:
        """The figures of a group (a line, a site): ratios of sums, never averages of ratios."""
        out = cls(machines=0)
        for f in figures:
            out.machines += f.machines
            out.planned_ms += f.planned_ms
            out.pbt_ms += f.pbt_ms
            out.apt_ms += f.apt_ms
            out.setup_ms += f.setup_ms
            out.waiting_ms += f.waiting_ms
            out.down_ms += f.down_ms
            out.unknown_ms += f.unknown_ms
            out.planned_down_ms += f.planned_down_ms
            if f.produced is not None and f.good is not None:
                out.produced = (out.produced or 0.0) + f.produced
                out.good = (out.good or 0.0) + f.good
            if f.ideal_ms is not None:
                out.ideal_ms = (out.ideal_ms or 0.0) + f.ideal_ms
                out.rated_apt_ms += f.rated_apt_ms
            out.data_quality.add(f.data_quality)
            for key, loss in f.losses.items():
                mine = out.losses.setdefault(key, Loss(loss.category, loss.reason))
                mine.lost_ms += loss.lost_ms
                mine.occurrences += loss.occurrences
        return out


def clean_samples(
    samples: Sequence[tuple[int, float | None]],
    quality: DataQuality,
    *,
    valid: type[int] | None = None,
    limit: int | None = None,
) -> list[tuple[int, float]]:
    """Valid samples sorted by time, one per timestamp (the last given), bad ones counted.

    Args:
        samples: ``(ts_ms, value)`` in the order they came.
        quality: where to count what was wrong.
        valid: ``int`` to also refuse non-integral values.
        limit: values must be in ``[0, limit)`` (enum indices); without it, ``>= 0``.
    """
    kept: list[tuple[int, float]] = []
    latest = None
    for ts, value in samples:
        if latest is not None and ts < latest:
            quality.out_of_order += 1
        latest = ts if latest is None else max(latest, ts)
        if value is None or not math.isfinite(value) or value < 0:
            quality.invalid += 1
            continue
        if (valid is int or limit is not None) and value != int(value):
            quality.invalid += 1
            continue
        if limit is not None and value >= limit:
            quality.invalid += 1
            continue
        kept.append((ts, float(value)))
    kept.sort(key=lambda s: s[0])  # stable: ties keep the order they came in
    out: list[tuple[int, float]] = []
    for ts, value in kept:
        if out and out[-1][0] == ts:
            quality.duplicates += 1
            out[-1] = (ts, value)
        else:
            out.append((ts, value))
    return out


def state_runs(
    samples: Sequence[tuple[int, float]],
    labels: Sequence[str],
    classes: Mapping[str, StateClass],
    start_ms: int,
    end_ms: int,
    *,
    max_gap_ms: int,
) -> list[StateRun]:
    """Runs of one state covering ``[min(start, first sample), end)``, unknown where no data.

    ``samples`` are clean (:func:`clean_samples` with the labels' count as limit); those before
    ``start_ms`` give the state at the start.
    """
    spans: list[tuple[int, int, str | None]] = []
    cursor = min(start_ms, samples[0][0]) if samples else start_ms
    for i, (ts, value) in enumerate(samples):
        if ts >= end_ms:
            break
        if ts > cursor:
            spans.append((cursor, ts, None))
        until = ts + max_gap_ms
        if i + 1 < len(samples):
            until = min(until, samples[i + 1][0])
        until = min(until, end_ms)
        spans.append((ts, until, labels[int(value)]))
        cursor = until
    if cursor < end_ms:
        spans.append((cursor, end_ms, None))
    runs: list[StateRun] = []
    for start, end, label in spans:
        if end <= start:
            continue
        if runs and runs[-1].label == label and runs[-1].end_ms == start:
            last = runs[-1]
            runs[-1] = StateRun(last.start_ms, end, label, last.state_class)
            continue
        state_class = StateClass.UNKNOWN if label is None else classes[label]
        runs.append(StateRun(start, end, label, state_class))
    return runs


def _with_reasons(
    runs: list[StateRun], faults: Sequence[tuple[int, str]], tolerance_ms: int
) -> list[StateRun]:
    events = sorted(faults)
    times = [ts for ts, _ in events]
    out = []
    for run in runs:
        if run.state_class is not StateClass.DOWN:
            out.append(run)
            continue
        i = bisect.bisect_left(times, run.start_ms - tolerance_ms)
        reason = events[i][1] if i < len(events) and times[i] < run.end_ms else UNSPECIFIED
        out.append(StateRun(run.start_ms, run.end_ms, run.label, run.state_class, reason))
    return out


def counter_increments(
    samples: Sequence[tuple[int, float]], quality: DataQuality
) -> list[tuple[int, float]]:
    """``(ts, parts since the previous sample)`` of a clean cumulative counter; resets counted."""
    out: list[tuple[int, float]] = []
    for (_, before), (ts, value) in itertools.pairwise(samples):
        if value < before:
            quality.counter_resets += 1
            out.append((ts, value))
        else:
            out.append((ts, value - before))
    return out


def _loss_key(run: StateRun) -> tuple[StateClass, str] | None:
    match run.state_class:
        case StateClass.DOWN:
            return StateClass.DOWN, run.reason or UNSPECIFIED
        case StateClass.SETUP:
            return StateClass.SETUP, run.label or "setup"
        case StateClass.WAITING:
            return StateClass.WAITING, run.label or "waiting"
        case StateClass.UNKNOWN:
            return StateClass.UNKNOWN, NO_DATA
    return None


@dataclass(frozen=True, slots=True)
class _Increments:
    """A counter's increments, indexed once for sums over many periods.

    A site month by shift asks ~90 periods of each machine: rebuilding the index per period
    took 3.0 s of the 10.8 s such a report took (``bench/apps_figures.py``, docs/benchmarks.md).
    """

    times: list[int]
    #: ``cumulative[i]``: the sum of the first ``i`` increments (whole parts: exact in floats).
    cumulative: list[float]

    @classmethod
    def of(cls, increments: Sequence[tuple[int, float]]) -> _Increments:
        sums = itertools.accumulate((inc for _, inc in increments), initial=0.0)
        return cls([ts for ts, _ in increments], list(sums))

    def within(self, period: CalendarPeriod) -> float | None:
        """The sum over the period's planned time; None when no increment falls in it."""
        total: float | None = None
        for start, end in period.planned:
            lo = bisect.bisect_left(self.times, start)
            hi = bisect.bisect_left(self.times, end)
            if hi > lo:
                total = (total or 0.0) + (self.cumulative[hi] - self.cumulative[lo])
        return total


def compute(
    periods: Sequence[CalendarPeriod],
    *,
    state: Sequence[tuple[int, float | None]],
    labels: Sequence[str],
    classes: Mapping[str, StateClass],
    good: Sequence[tuple[int, float | None]] = (),
    bad: Sequence[tuple[int, float | None]] | None = None,
    faults: Sequence[tuple[int, str]] = (),
    ideal_cycle_s: float | None = None,
    max_gap_ms: int = 300_000,
    fault_tolerance_ms: int = 30_000,
) -> list[OeeFigures]:
    """One machine's figures for each period.

    Args:
        periods: from the calendar, sorted; samples before the first one give the start state.
        state: the state series ``(ts_ms, enum index)``, as stored.
        labels: the state enum's labels (index -> label).
        classes: label -> class; every label must have one.
        good: the cumulative good-parts counter.
        bad: the cumulative scrap counter; ``None`` when the machine has none (no scrap).
        faults: ``(ts_ms, code)`` of the machine's fault events.
        ideal_cycle_s: PRI in seconds; ``None`` when unknown (effectiveness then unknown).
        max_gap_ms: how long a state sample holds without a newer one.
        fault_tolerance_ms: how early a fault event may come before its down time.
    """
    missing = [label for label in labels if label not in classes]
    if missing:
        raise ValueError(f"states without a class: {missing}")
    if not periods:
        return []
    start_ms = min(p.start_ms for p in periods)
    end_ms = max(p.end_ms for p in periods)
    quality = DataQuality()
    clean_state = clean_samples(state, quality, limit=len(labels))
    runs = _with_reasons(
        state_runs(clean_state, labels, classes, start_ms, end_ms, max_gap_ms=max_gap_ms),
        faults,
        fault_tolerance_ms,
    )
    good_inc = _Increments.of(counter_increments(clean_samples(good, quality, valid=int), quality))
    bad_inc = (
        None
        if bad is None
        else _Increments.of(counter_increments(clean_samples(bad, quality, valid=int), quality))
    )
    run_starts = [r.start_ms for r in runs]
    out = []
    for period in periods:
        figures = OeeFigures(planned_ms=period.planned_ms)
        seen: set[int] = set()
        for lo, hi in period.planned:
            i = max(0, bisect.bisect_right(run_starts, lo) - 1)
            while i < len(runs) and runs[i].start_ms < hi:
                run = runs[i]
                overlap = min(hi, run.end_ms) - max(lo, run.start_ms)
                if overlap > 0:
                    _add_time(figures, run, overlap, first=i not in seen)
                    seen.add(i)
                i += 1
        figures.pbt_ms = figures.planned_ms - figures.planned_down_ms
        figures.data_quality.gaps = sum(
            1 for i in seen if runs[i].state_class is StateClass.UNKNOWN
        )
        made_good = good_inc.within(period)
        made_bad = 0.0 if bad_inc is None else bad_inc.within(period)
        if made_good is not None and made_bad is not None:
            figures.good = made_good
            figures.produced = made_good + made_bad
            if ideal_cycle_s is not None:
                figures.ideal_ms = ideal_cycle_s * 1000.0 * figures.produced
                figures.rated_apt_ms = figures.apt_ms
        out.append(figures)
    # Bad input is a property of the series, not of a period: the first period carries it.
    out[0].data_quality.invalid = quality.invalid
    out[0].data_quality.duplicates = quality.duplicates
    out[0].data_quality.out_of_order = quality.out_of_order
    out[0].data_quality.counter_resets = quality.counter_resets
    return out


def _add_time(figures: OeeFigures, run: StateRun, ms: int, *, first: bool) -> None:
    match run.state_class:
        case StateClass.PRODUCING:
            figures.apt_ms += ms
        case StateClass.SETUP:
            figures.setup_ms += ms
        case StateClass.WAITING:
            figures.waiting_ms += ms
        case StateClass.DOWN:
            figures.down_ms += ms
        case StateClass.PLANNED_DOWN:
            figures.planned_down_ms += ms
        case StateClass.UNKNOWN:
            figures.unknown_ms += ms
    key = _loss_key(run)
    if key is not None:
        loss = figures.losses.setdefault(key, Loss(key[0], key[1]))
        loss.lost_ms += ms
        loss.occurrences += 1 if first else 0


def pareto(losses: Mapping[tuple[StateClass, str], Loss]) -> list[Loss]:
    """Losses by lost time, largest first (ties by reason, for a stable order)."""
    return sorted(
        (loss for loss in losses.values() if loss.lost_ms > 0),
        key=lambda loss: (-loss.lost_ms, loss.reason),
    )
