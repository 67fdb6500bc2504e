"""Health index of a wearing machine from its own healthy baseline, and RUL by trend.

Theory of operation
-------------------
For machines without a trained model (the simulator's CNC machines, pumps and compressors, and
any thing model mapped to a ``ConditionProfile``), wear shows as a slow rise of a few condition
indicators: vibration, temperature, power at a given duty. Each ``ConditionIndicator`` is one
metric, optionally divided by a load metric at the same instant (vibration *per unit of spindle
load*, per unit of flow) so that a heavier job is not mistaken for wear, and optionally taken only
in some machine states (a compressor's power only while loading).

1. **Baseline.** The median of the first ``baseline_samples`` usable values of each indicator,
   after the device is first seen or after it reports a repair: the machine's *own* healthy
   level (machines of one kind differ more from each other than a machine from its healthy self).
2. **Level.** The median of the last ``window`` usable values: robust to spikes and to the
   scatter of single readings.
3. **Degradation** of an indicator: ``d = (level - baseline) / (limit - baseline)``, clipped to
   0..1, where the end-of-life ``limit`` is ``baseline x (1 + rise)`` (relative) or
   ``baseline + rise`` (absolute, e.g. +20 K).
4. **Health index** ``= 1 - max(d)``: 1 as healthy as its baseline, 0 at an end-of-life limit.
   The indicator with the largest ``d`` is the *driver*, named with every estimate, so a person
   sees why a machine is unhealthy.
5. **RUL by trend.** Every ``trend_every_s`` the health index is kept (last ``trend_points``);
   a straight line fitted over them is extrapolated to 0. An estimate is given only when the
   line falls (slope below zero) and explains the points (R² at least ``trend_min_r2``), else
   the RUL is "none" with the reason. The unit is hours of calendar time at the recent pace.
   Wear accelerates towards the end (the P-F curve), so a straight line *overestimates* the time
   left early in the wear phase; the estimate tightens as the failure nears.

A baseline learnt on an already worn machine makes it look healthier than it is: the health
index measures wear *since the baseline*, which the API states with the baseline's time.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from tiangong.apps.health.errors import HealthConfigError

__all__ = [
    "ConditionEstimate",
    "ConditionIndicator",
    "ConditionProfile",
    "ConditionTracker",
    "TrendRul",
    "trend_rul",
]


@dataclass(frozen=True, slots=True)
class ConditionIndicator:
    """One condition indicator of a wearing machine.

    Attributes:
        metric: the property.
        rise: how far it rises by the end of life (a ratio of the baseline if ``relative``,
            else in the metric's unit).
        relative: whether ``rise`` is relative.
        per: a load metric to divide by (the same instant's value), or None.
        per_min: smallest load value used (below it the machine is barely loaded and the ratio
            is noise).
        states: the machine states in which the indicator is taken (None: the profile's
            operating states).
    """

    metric: str
    rise: float
    relative: bool = True
    per: str | None = None
    per_min: float = 1.0
    states: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if not self.rise > 0:
            raise HealthConfigError(f"{self.metric}: rise must be positive")

    @property
    def name(self) -> str:
        """The indicator's name: ``metric`` or ``metric/per``."""
        return f"{self.metric}/{self.per}" if self.per else self.metric


@dataclass(frozen=True, slots=True)
class ConditionProfile:
    """How a kind of wearing machine's health is judged.

    Attributes:
        indicators: the condition indicators.
        state_metric: the enum property holding the machine state (None: always operating).
        operating: the states in which the machine works (indicators are taken only then).
        baseline_samples: usable values of an indicator that make its baseline.
        window: usable values of the current level's median.
        trend_every_s: seconds between health values kept for the trend.
        trend_points: health values the trend is fitted over.
        trend_min_points: fewest values for a trend.
        trend_min_r2: least R² of the fitted line for an estimate.
    """

    indicators: tuple[ConditionIndicator, ...]
    state_metric: str | None = "state"
    operating: frozenset[str] = frozenset({"running"})
    baseline_samples: int = 200
    window: int = 120
    trend_every_s: float = 60.0
    trend_points: int = 120
    trend_min_points: int = 10
    trend_min_r2: float = 0.5

    def __post_init__(self) -> None:
        if not self.indicators:
            raise HealthConfigError("a condition profile needs at least one indicator")
        if self.baseline_samples < 5 or self.window < 5:
            raise HealthConfigError("baseline_samples and window must be at least 5")
        if self.trend_min_points < 3 or self.trend_points < self.trend_min_points:
            raise HealthConfigError("trend_points >= trend_min_points >= 3")

    @property
    def metrics(self) -> frozenset[str]:
        """Every metric the profile reads."""
        names = {i.metric for i in self.indicators} | {i.per for i in self.indicators if i.per}
        if self.state_metric:
            names.add(self.state_metric)
        return frozenset(names)


@dataclass(frozen=True, slots=True)
class TrendRul:
    """Remaining life by extrapolating the health trend.

    Attributes:
        hours: hours until the health index reaches 0 at the recent pace, or None.
        reason: why there is no estimate (None when there is one).
        slope_per_hour: the fitted change of the health index per hour.
        r2: how well the line fits.
        points: health values the fit used.
    """

    hours: float | None
    reason: str | None
    slope_per_hour: float | None = None
    r2: float | None = None
    points: int = 0


def trend_rul(
    times_s: np.ndarray, health: np.ndarray, *, min_points: int = 10, min_r2: float = 0.5
) -> TrendRul:
    """Fit ``health`` over ``times_s`` with a straight line and extrapolate it to 0."""
    n = int(times_s.size)
    if n < min_points:
        return TrendRul(None, f"{n} of {min_points} health values for a trend", points=n)
    t = (times_s - times_s[-1]) / 3600.0
    if float(np.ptp(t)) <= 0:
        return TrendRul(None, "no time span to fit a trend over", points=n)
    slope, intercept = (float(v) for v in np.polyfit(t, health, 1))
    fitted = slope * t + intercept
    total = float(np.sum((health - health.mean()) ** 2))
    r2 = 1.0 - float(np.sum((health - fitted) ** 2)) / total if total > 0 else 0.0
    if slope >= 0:
        return TrendRul(None, "health is not falling", slope, r2, n)
    if r2 < min_r2:
        return TrendRul(None, f"the trend explains too little (R² {r2:.2f})", slope, r2, n)
    now = max(intercept, 0.0)  # the fitted health index at the last point
    return TrendRul(now / -slope, None, slope, r2, n)


@dataclass(frozen=True, slots=True)
class ConditionEstimate:
    """One health estimate of a wearing machine.

    Attributes:
        health_index: 0 (at an end-of-life limit) to 1 (as healthy as the baseline), or None
            while a baseline is being learnt.
        driver: the indicator with the largest degradation.
        degradation: indicator name -> degradation 0..1 (learnt indicators only).
        levels: indicator name -> (baseline, current level).
        learning: indicators still learning their baseline, with usable values so far.
        rul: the trend extrapolation.
    """

    health_index: float | None
    driver: str | None
    degradation: dict[str, float]
    levels: dict[str, tuple[float, float]]
    learning: dict[str, int]
    rul: TrendRul


@dataclass(slots=True)
class _IndicatorState:
    baseline_values: list[float] = field(default_factory=list)
    baseline: float | None = None
    recent: deque[float] = field(default_factory=deque)


class ConditionTracker:
    """The condition of one wearing machine, sample by sample (pure; no clock, no I/O).

    Args:
        profile: how the kind is judged.
        state_labels: the state enum's labels in index order (the store keeps an enum as the
            label's index), or None when the profile has no state metric.

    Attributes:
        used: indicator values used.
        skipped: samples not used (machine not operating, load too small, not a number).
        baseline_since_ms: when the current baseline started to be learnt.
    """

    def __init__(self, profile: ConditionProfile, state_labels: list[str] | None = None) -> None:
        self.profile = profile
        self._operating_index = (
            {i for i, label in enumerate(state_labels) if label in profile.operating}
            if state_labels
            else None
        )
        self._indicator_index = {
            ind.name: {i for i, label in enumerate(state_labels or []) if label in ind.states}
            for ind in profile.indicators
            if ind.states is not None
        }
        self._state: float | None = None
        self._states: dict[str, _IndicatorState] = {}
        self._trend: deque[tuple[float, float]] = deque(maxlen=profile.trend_points)
        self._last_trend_s: float | None = None
        self._last_ts: int | None = None
        self.used = 0
        self.skipped = 0
        self.baseline_since_ms: int | None = None
        self.reset()

    def reset(self, at_ms: int | None = None) -> None:
        """Learn the baseline again (after a repair: the machine is as good as new)."""
        self._states = {
            ind.name: _IndicatorState(recent=deque(maxlen=self.profile.window))
            for ind in self.profile.indicators
        }
        self._trend.clear()
        self._last_trend_s = None
        self.baseline_since_ms = at_ms

    def update(self, ts_ms: int, values: Mapping[str, float]) -> bool:
        """Take the values of one instant (metric -> number); True if an indicator changed.

        Out-of-order instants (not after the last one) are skipped: the level is a median of
        recent values, and a late value would mix an older condition in.
        """
        if self._last_ts is not None and ts_ms <= self._last_ts:
            self.skipped += 1
            return False
        self._last_ts = ts_ms
        if self.baseline_since_ms is None:
            self.baseline_since_ms = ts_ms
        state_metric = self.profile.state_metric
        if state_metric and state_metric in values and math.isfinite(values[state_metric]):
            self._state = values[state_metric]
        changed = False
        for ind in self.profile.indicators:
            value = self._indicator_value(ind, values)
            if value is None:
                continue
            st = self._states[ind.name]
            if st.baseline is None:
                st.baseline_values.append(value)
                if len(st.baseline_values) >= self.profile.baseline_samples:
                    st.baseline = float(np.median(st.baseline_values))
                    st.baseline_values = []
            st.recent.append(value)
            self.used += 1
            changed = True
        return changed

    def _indicator_value(
        self, ind: ConditionIndicator, values: Mapping[str, float]
    ) -> float | None:
        raw = values.get(ind.metric)
        if raw is None:
            return None
        if not math.isfinite(raw) or not self._operating(ind):
            self.skipped += 1
            return None
        if ind.per is None:
            return raw
        load = values.get(ind.per)
        if load is None or not math.isfinite(load) or load < ind.per_min:
            self.skipped += 1
            return None
        return raw / load

    def _operating(self, ind: ConditionIndicator) -> bool:
        if self.profile.state_metric is None:
            return True
        if self._state is None:
            return False  # the state is unknown yet: do not guess
        allowed = self._indicator_index.get(ind.name, self._operating_index)
        return allowed is None or int(self._state) in allowed

    def estimate(self, now_ms: int) -> ConditionEstimate:
        """The health index now, its driver, and the trend RUL."""
        degradation: dict[str, float] = {}
        levels: dict[str, tuple[float, float]] = {}
        learning: dict[str, int] = {}
        for ind in self.profile.indicators:
            st = self._states[ind.name]
            if st.baseline is None or not st.recent:
                learning[ind.name] = len(st.baseline_values)
                continue
            level = float(np.median(np.fromiter(st.recent, dtype=np.float64)))
            base = st.baseline
            limit = base * (1.0 + ind.rise) if ind.relative else base + ind.rise
            span = limit - base
            d = (level - base) / span if span > 0 else 0.0
            degradation[ind.name] = min(max(d, 0.0), 1.0)
            levels[ind.name] = (base, level)
        if not degradation:
            rul = TrendRul(None, "learning the baseline")
            return ConditionEstimate(None, None, degradation, levels, learning, rul)
        driver = max(degradation, key=lambda k: degradation[k])
        health = 1.0 - degradation[driver]
        now_s = now_ms / 1000.0
        if self._last_trend_s is None or now_s - self._last_trend_s >= self.profile.trend_every_s:
            self._trend.append((now_s, health))
            self._last_trend_s = now_s
        times = np.fromiter((t for t, _ in self._trend), dtype=np.float64)
        values = np.fromiter((h for _, h in self._trend), dtype=np.float64)
        if health <= 0:
            rul = TrendRul(0.0, None, points=len(self._trend))
        else:
            rul = trend_rul(
                times,
                values,
                min_points=self.profile.trend_min_points,
                min_r2=self.profile.trend_min_r2,
            )
        return ConditionEstimate(health, driver, degradation, levels, learning, rul)
