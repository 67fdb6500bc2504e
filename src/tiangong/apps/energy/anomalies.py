"""Abnormal consumption: far above the own baseline, or consuming while idle (pure, no I/O).

**Above baseline.** Each local hour is compared with the same *hour type* (the same hour of the
day, on a working day or on a weekend) over the ``history_days`` before it, for the same device
(or site). Only complete hours count, on either side: an hour with a gap or without readings at
its ends is neither judged nor used as a reference. With at least ``min_references`` reference
hours, an hour is abnormal when its consumption exceeds all of

- ``median + robust_z * 1.4826 * MAD`` (a robust z-score: a few odd reference hours do not
  move it),
- ``median * min_ratio`` (a machine with a very steady load has a tiny MAD; being 1 % above it
  is not abnormal),
- ``median + min_excess_kwh`` (nor is 0.2 kWh above a near-zero median).

**Idle consumption.** A machine's state series (``state``: idle, stopped...) is cut into spans:
a state holds from its reading to the next, for at most the gap threshold (after that the state
is unknown and nothing is judged). A run of idle states lasting at least ``min_minutes`` whose
mean power exceeds ``max(floor_kw, share_of_running * mean running power)`` is abnormal: the
machine draws a large share of its working power while doing nothing (a spindle or a hydraulic
unit left on, compressed-air leaks). Without running time in the range, the floor alone applies.
"""

from __future__ import annotations

import enum
import statistics
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tiangong.apps.energy.core import GAP_MS, HOUR_MS, ConsumptionProfile

__all__ = [
    "AnomalyKind",
    "BaselineRule",
    "EnergyAnomaly",
    "IdleRule",
    "StateSpan",
    "above_baseline",
    "idle_consumption",
    "state_spans",
]

MAD_TO_SIGMA = 1.4826


class AnomalyKind(enum.StrEnum):
    """Kinds of abnormal consumption."""

    ABOVE_BASELINE = "above_baseline"
    IDLE_CONSUMPTION = "idle_consumption"


@dataclass(frozen=True, slots=True)
class BaselineRule:
    """When an hour is far above its baseline (module docstring)."""

    history_days: int = 28
    min_references: int = 3
    robust_z: float = 4.0
    min_ratio: float = 1.5
    min_excess_kwh: float = 0.5


@dataclass(frozen=True, slots=True)
class IdleRule:
    """When a machine consumes too much while idle (module docstring)."""

    idle_states: frozenset[str] = field(default_factory=lambda: frozenset({"idle", "stopped"}))
    running_states: frozenset[str] = field(default_factory=lambda: frozenset({"running"}))
    min_minutes: float = 10.0
    floor_kw: float = 0.5
    share_of_running: float = 0.25


@dataclass(frozen=True, slots=True)
class EnergyAnomaly:
    """One abnormal consumption.

    Attributes:
        kind: above baseline or idle consumption.
        start_ms: start of the hour or idle run.
        end_ms: its end.
        kwh: consumed in it.
        expected_kwh: the baseline median (above baseline) or the allowance (idle).
        detail: a sentence saying why.
    """

    kind: AnomalyKind
    start_ms: int
    end_ms: int
    kwh: float
    expected_kwh: float
    detail: str


def _hour_type(start_ms: int, zone: zoneinfo.ZoneInfo) -> tuple[bool, int]:
    local = datetime.fromtimestamp(start_ms / 1000, UTC).astimezone(zone)
    return local.weekday() >= 5, local.hour


def above_baseline(
    hour_starts: Sequence[int],
    kwh: Sequence[float],
    complete: Sequence[bool],
    *,
    judge_from_ms: int,
    zone: zoneinfo.ZoneInfo,
    rule: BaselineRule | None = None,
) -> list[EnergyAnomaly]:
    """Hours from ``judge_from_ms`` on that are far above their baseline.

    Args:
        hour_starts: consecutive local hour starts, history included (oldest first).
        kwh: consumption of each hour.
        complete: whether each hour is completely covered by readings.
        judge_from_ms: hours before this are history only.
        zone: the site's time zone (hour types are local).
        rule: the thresholds.
    """
    rule = rule or BaselineRule()
    history_ms = rule.history_days * 24 * HOUR_MS
    seen: dict[tuple[bool, int], list[tuple[int, float]]] = {}
    out: list[EnergyAnomaly] = []
    for start, value, whole in zip(hour_starts, kwh, complete, strict=True):
        if not whole:
            continue
        kind = _hour_type(start, zone)
        refs = [v for t, v in seen.get(kind, []) if t >= start - history_ms]
        if start >= judge_from_ms and len(refs) >= rule.min_references:
            median = statistics.median(refs)
            mad = statistics.median(abs(v - median) for v in refs)
            limit = max(
                median + rule.robust_z * MAD_TO_SIGMA * mad,
                median * rule.min_ratio,
                median + rule.min_excess_kwh,
            )
            if value > limit:
                out.append(
                    EnergyAnomaly(
                        AnomalyKind.ABOVE_BASELINE,
                        start,
                        start + HOUR_MS,
                        value,
                        median,
                        f"{value:.1f} kWh against a median of {median:.1f} kWh over "
                        f"{len(refs)} like hours (limit {limit:.1f} kWh)",
                    )
                )
        seen.setdefault(kind, []).append((start, value))
    return out


@dataclass(frozen=True, slots=True)
class StateSpan:
    """A machine in one state over ``[start, end)``."""

    start_ms: int
    end_ms: int
    state: str


def state_spans(
    ts: Sequence[int], states: Sequence[str], *, until_ms: int, gap_ms: int = GAP_MS
) -> list[StateSpan]:
    """Spans of each state: from its reading to the next one, for at most ``gap_ms``.

    Readings are sorted by time; of readings sharing a time the last given is kept.
    """
    by_time = dict(sorted(zip(ts, states, strict=True), key=lambda pair: pair[0]))
    times = list(by_time)
    spans: list[StateSpan] = []
    for i, at in enumerate(times):
        nxt = times[i + 1] if i + 1 < len(times) else until_ms
        end = min(nxt, at + gap_ms, until_ms)
        if end <= at:
            continue
        state = by_time[at]
        if spans and spans[-1].state == state and spans[-1].end_ms == at:
            spans[-1] = StateSpan(spans[-1].start_ms, end, state)
        else:
            spans.append(StateSpan(at, end, state))
    return spans


def idle_consumption(
    profile: ConsumptionProfile, spans: Sequence[StateSpan], rule: IdleRule | None = None
) -> list[EnergyAnomaly]:
    """Idle runs in which the machine drew too much power (module docstring)."""
    rule = rule or IdleRule()
    running_kwh = 0.0
    running_h = 0.0
    for span in spans:
        if span.state in rule.running_states and profile.complete(span.start_ms, span.end_ms):
            running_kwh += profile.between(span.start_ms, span.end_ms)
            running_h += (span.end_ms - span.start_ms) / HOUR_MS
    running_kw = running_kwh / running_h if running_h > 0 else 0.0
    allowed_kw = max(rule.floor_kw, rule.share_of_running * running_kw)
    runs: list[tuple[int, int]] = []
    for span in spans:
        if span.state not in rule.idle_states:
            continue
        if runs and runs[-1][1] == span.start_ms:
            runs[-1] = (runs[-1][0], span.end_ms)
        else:
            runs.append((span.start_ms, span.end_ms))
    out: list[EnergyAnomaly] = []
    for start, end in runs:
        hours = (end - start) / HOUR_MS
        if hours * 60 < rule.min_minutes or not profile.complete(start, end):
            continue
        kwh = profile.between(start, end)
        if kwh / hours > allowed_kw:
            out.append(
                EnergyAnomaly(
                    AnomalyKind.IDLE_CONSUMPTION,
                    start,
                    end,
                    kwh,
                    allowed_kw * hours,
                    f"{kwh / hours:.2f} kW mean while idle for {hours * 60:.0f} min "
                    f"(allowed {allowed_kw:.2f} kW; running mean {running_kw:.2f} kW)",
                )
            )
    return out
