"""Sensor anomaly detection: spikes, stuck sensors and drift, one streaming detector per series.

Theory of operation
-------------------
A ``SeriesAnomalyDetector`` sees one numeric series (one metric of one device) sample by sample,
oldest first, and keeps only bounded state. It is pure: no clock, no I/O; the health service
feeds it the samples the ingest pipeline stored.

1. **Bad input is counted, never used**: a NaN or infinite value (``invalid``), a timestamp not
   after the last one used (``out_of_order``: duplicates and late samples) leave every statistic
   as it was.
2. **Reference.** The first ``reference`` samples (after a start, a reset or a drift) are the
   series' reference: their median ``m0``, robust spread ``s0 = 1.4826 · MAD`` and their
   *change rate* (share of consecutive samples that differ). A series whose change rate is below
   ``min_change_rate`` does not "normally vary" (a setpoint, a status): it is not judged at all.
   A series that never decreased during the reference is a **counter** (energy, parts, running
   hours): only the stuck check applies to it (a counter that stops counting).
3. **Spike**: ``|x - median| > spike_k · 1.4826 · MAD`` over the last ``window`` samples (a
   robust z-score, so the spike itself barely moves the median; the median and MAD are refreshed
   every 8 samples, which is what keeps a detector at a few microseconds per sample). At most
   one spike event per ``spike_cooldown`` samples; every spike is counted. A value equal to the
   previous one is no new information and is left out of the spike window and the drift test.
4. **Stuck**: ``stuck_samples`` consecutive identical values in a series that normally varies.
   One event when the run reaches the length; the detector re-arms when the value moves.
5. **Drift**: a two-sided CUSUM (Page's test) of the reference-standardised values
   ``z = (x - m0) / s0``, clipped to ±``spike_k`` so a spike cannot fake a drift:
   ``g⁺ = max(0, g⁺ + z - k)``, ``g⁻ = max(0, g⁻ - z - k)``, an event when either exceeds
   ``drift_h``. With the defaults (``k = 1``, ``h = 50``) a lasting shift of 2 robust sigmas is
   flagged after about 50 samples, one of 1.5 sigma after about 100. After an event the
   reference is learnt again, so one lasting shift gives one event.

Limits: a drift is any lasting shift of the level, so besides a sensor losing its calibration it
flags real changes of the process (a new job, another load), which only context can tell apart:
on the simulator's machines, about five to ten drift events per machine and hour, most of them
process changes. A spike must be isolated (the next sample back near the level), so a step is not
a spike. Samples are treated as independent. A strongly autocorrelated signal (a temperature with
a long thermal time constant) wanders more than its sample-to-sample noise suggests, so CUSUM
flags some of its slow excursions as drift; raise ``drift_h`` for such metrics.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tiangong.apps.health.errors import HealthConfigError

__all__ = ["AnomalyFinding", "AnomalyKind", "AnomalySettings", "SeriesAnomalyDetector"]

_MAD_TO_SIGMA = 1.4826
#: Samples between refreshes of the spike window's median and MAD.
_STATS_EVERY = 8


class AnomalyKind(enum.StrEnum):
    """What is wrong with a sensor's series."""

    SPIKE = "spike"
    STUCK = "stuck"
    DRIFT = "drift"


@dataclass(frozen=True, slots=True)
class AnomalySettings:
    """Thresholds of the detectors (see the module docstring for what each means).

    Attributes:
        window: samples of the rolling median and MAD of the spike test.
        spike_k: robust z-score above which a sample is a spike.
        spike_cooldown: samples after a spike event during which further spikes are only counted.
        reference: samples of the reference (drift baseline, change rate, counter check).
        min_change_rate: share of changing consecutive samples for a series to be judged.
        stuck_samples: identical consecutive values that make a sensor stuck.
        drift_k: CUSUM allowance, in robust sigmas of the reference.
        drift_h: CUSUM decision threshold, in robust sigmas.
    """

    window: int = 60
    spike_k: float = 6.0
    spike_cooldown: int = 30
    reference: int = 300
    min_change_rate: float = 0.5
    stuck_samples: int = 30
    drift_k: float = 1.0
    drift_h: float = 50.0

    def __post_init__(self) -> None:
        if self.window < 5 or self.reference < 10 or self.stuck_samples < 3:
            raise HealthConfigError("window >= 5, reference >= 10 and stuck_samples >= 3")
        if not (self.spike_k > 0 and self.drift_h > 0 and self.drift_k >= 0):
            raise HealthConfigError("spike_k and drift_h must be positive, drift_k >= 0")
        if not 0 <= self.min_change_rate <= 1:
            raise HealthConfigError("min_change_rate is a share, 0..1")


@dataclass(frozen=True, slots=True)
class AnomalyFinding:
    """One anomaly of a series.

    Attributes:
        kind: spike, stuck or drift.
        ts_ms: the sample that revealed it.
        value: that sample's value.
        score: the robust z-score (spike), the run length (stuck) or the CUSUM statistic (drift).
        detail: the statistics behind it (median, spread, direction...), for the record.
    """

    kind: AnomalyKind
    ts_ms: int
    value: float
    score: float
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Reference:
    values: list[float] = field(default_factory=list)
    median: float = 0.0
    sigma: float = 0.0
    change_rate: float = 0.0
    counter: bool = False
    ready: bool = False


class SeriesAnomalyDetector:
    """Streaming spike, stuck and drift detection for one numeric series.

    Args:
        settings: thresholds.

    Attributes:
        samples: samples used.
        invalid: NaN or infinite values ignored.
        out_of_order: samples ignored because their time was not after the last one used.
        spikes: spikes seen (events are rate-limited, this count is not).
        events: findings returned so far.
    """

    def __init__(self, settings: AnomalySettings | None = None) -> None:
        self.settings = settings or AnomalySettings()
        self._window: deque[float] = deque(maxlen=self.settings.window)
        self._reference = _Reference()
        self._last_ts: int | None = None
        self._last_value: float | None = None
        self._run = 0
        self._stuck = False
        self._cooldown = 0
        self._g_hi = 0.0
        self._g_lo = 0.0
        self._stats: tuple[float, float] | None = None
        self._since_stats = 0
        self._candidate: AnomalyFinding | None = None
        self.samples = 0
        self.invalid = 0
        self.out_of_order = 0
        self.spikes = 0
        self.events = 0

    @property
    def judged(self) -> bool:
        """Whether the reference is learnt and the series varies enough to be judged."""
        ref = self._reference
        return ref.ready and ref.change_rate >= self.settings.min_change_rate

    @property
    def stuck(self) -> bool:
        """Whether the series is stuck right now."""
        return self._stuck

    def reset(self) -> None:
        """Forget the reference and the windows (after a repair or a sensor replacement)."""
        self._window.clear()
        self._reference = _Reference()
        self._run = 0
        self._stuck = False
        self._cooldown = 0
        self._g_hi = self._g_lo = 0.0
        self._stats = None
        self._candidate = None
        self._last_value = None

    def update(self, ts_ms: int, value: float) -> list[AnomalyFinding]:
        """Take one sample; the anomalies it reveals (usually none)."""
        if not math.isfinite(value):
            self.invalid += 1
            return []
        if self._last_ts is not None and ts_ms <= self._last_ts:
            self.out_of_order += 1
            return []
        self._last_ts = ts_ms
        self.samples += 1
        found: list[AnomalyFinding] = []
        previous = self._last_value
        self._last_value = value
        ref = self._reference
        if not ref.ready:
            self._learn(value)
            self._append(value)
            return found
        if ref.change_rate < self.settings.min_change_rate:
            return found  # a series that does not normally vary is not judged
        self._check_stuck(ts_ms, value, previous, found)
        # A repeated value is no new information: it neither narrows the spike window (which
        # would make the next ordinary value look like a spike) nor feeds the drift test.
        if self._run > 1:
            self._candidate = None  # the value stayed where the candidate went: a step
        elif not ref.counter:
            self._check_spike(ts_ms, value, found)
            self._check_drift(ts_ms, value, found)
            self._append(value)
        self.events += len(found)
        return found

    # -- the checks ------------------------------------------------------------------------------

    def _append(self, value: float) -> None:
        self._window.append(value)
        self._since_stats += 1

    def _learn(self, value: float) -> None:
        ref = self._reference
        ref.values.append(value)
        if len(ref.values) < self.settings.reference:
            return
        values = np.asarray(ref.values, dtype=np.float64)
        steps = np.diff(values)
        ref.median = float(np.median(values))
        ref.sigma = _MAD_TO_SIGMA * float(np.median(np.abs(values - ref.median)))
        ref.change_rate = float(np.mean(steps != 0)) if steps.size else 0.0
        ref.counter = bool(np.all(steps >= 0)) and bool(np.any(steps > 0))
        ref.values = []
        ref.ready = True
        self._g_hi = self._g_lo = 0.0

    def _check_stuck(
        self, ts_ms: int, value: float, previous: float | None, found: list[AnomalyFinding]
    ) -> None:
        if previous is not None and value == previous:
            self._run += 1
        else:
            self._run = 1
            self._stuck = False
        if not self._stuck and self._run >= self.settings.stuck_samples:
            self._stuck = True
            found.append(
                AnomalyFinding(
                    AnomalyKind.STUCK,
                    ts_ms,
                    value,
                    float(self._run),
                    {
                        "run": self._run,
                        "usual_change_rate": round(self._reference.change_rate, 3),
                        "counter": self._reference.counter,
                    },
                )
            )

    def _check_spike(self, ts_ms: int, value: float, found: list[AnomalyFinding]) -> None:
        if self._cooldown > 0:
            self._cooldown -= 1
        if len(self._window) < self.settings.window // 2:
            return
        if self._stats is None or self._since_stats >= _STATS_EVERY:
            # The robust statistics of a 60-sample window move slowly: refreshing them every few
            # samples costs a tenth of the time and changes no verdict that matters.
            window = np.fromiter(self._window, dtype=np.float64, count=len(self._window))
            center = float(np.median(window))
            self._stats = (center, _MAD_TO_SIGMA * float(np.median(np.abs(window - center))))
            self._since_stats = 0
        median, spread = self._stats
        if spread <= 0:
            return  # a window of identical values has no scale to judge a jump against
        score = abs(value - median) / spread
        candidate, self._candidate = self._candidate, None
        if candidate is not None:
            # Back near the level the candidate left (judged with the candidate's own median
            # and spread): the candidate was an isolated spike.
            before = candidate.detail
            if abs(value - before["median"]) > self.settings.spike_k * before["sigma"]:
                candidate = None
        if score > self.settings.spike_k:
            # Judged on the next sample: a spike is isolated; a value that stays away is a step
            # (a new job, a setpoint, load/unload), which is not a sensor anomaly.
            self._candidate = AnomalyFinding(
                AnomalyKind.SPIKE,
                ts_ms,
                value,
                round(score, 2),
                {"median": median, "sigma": round(spread, 6), "threshold": self.settings.spike_k},
            )
            return
        if candidate is None:
            return
        self.spikes += 1
        if self._cooldown > 0:
            return
        self._cooldown = self.settings.spike_cooldown
        found.append(candidate)

    def _check_drift(self, ts_ms: int, value: float, found: list[AnomalyFinding]) -> None:
        ref = self._reference
        if ref.sigma <= 0:
            return
        s = self.settings
        z = max(-s.spike_k, min(s.spike_k, (value - ref.median) / ref.sigma))
        self._g_hi = max(0.0, self._g_hi + z - s.drift_k)
        self._g_lo = max(0.0, self._g_lo - z - s.drift_k)
        if self._g_hi <= s.drift_h and self._g_lo <= s.drift_h:
            return
        upward = self._g_hi > s.drift_h
        recent = float(np.median(np.fromiter(self._window, dtype=np.float64)))
        found.append(
            AnomalyFinding(
                AnomalyKind.DRIFT,
                ts_ms,
                value,
                round(max(self._g_hi, self._g_lo), 2),
                {
                    "direction": "up" if upward else "down",
                    "reference_median": ref.median,
                    "reference_sigma": round(ref.sigma, 6),
                    "recent_median": recent,
                    "threshold": s.drift_h,
                },
            )
        )
        # Learn the new level as the reference: one lasting shift is one event.
        self._reference = _Reference()
