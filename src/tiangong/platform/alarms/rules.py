"""Alarm rules and their evaluation (sans-I/O, vectorized over each batch of samples).

Two kinds of rule, both on any numeric metric:

- **threshold**: the value compares against a limit (``>``, ``>=``, ``<``, ``<=``) for at least
  ``duration_s`` seconds. An optional ``clear_value`` adds hysteresis: the alarm clears only once
  the value is back on the good side of it (e.g. raise above 80 °C, clear below 75 °C).
- **rate_of_change**: the value changes faster than ``max_rate`` units per second, measured
  against the sample ``window_s`` seconds earlier (a window, not consecutive samples, so that
  noise on a fast-sampled signal does not trip it), for at least ``duration_s`` seconds.

Both reduce to one condition per sample, and one state machine per (rule, device): the
condition must hold for the duration (in *sample* time, so a buffer drained late evaluates as
it happened) before the rule fires; it clears the first time the condition stops holding.
Samples older than the last one evaluated for a (rule, device) are ignored, so late data never
flaps an alarm.
"""

from __future__ import annotations

import enum
import itertools
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Final, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tiangong.platform.model import Device, Name, Severity

__all__ = [
    "AlarmSignal",
    "RateOfChangeRule",
    "Rule",
    "RuleEngine",
    "RuleScope",
    "SignalKind",
    "ThresholdRule",
]

Float64s = npt.NDArray[np.float64]
Int64s = npt.NDArray[np.int64]

_OPS: Final[dict[str, Callable[[Float64s, float], npt.NDArray[np.bool_]]]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


class RuleScope(BaseModel):
    """Which devices a rule watches (all conditions must hold; empty means any)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    site_id: Name | None = None
    model_id: Name | None = None
    device_ids: list[Name] = Field(default_factory=list)

    def matches(self, device: Device) -> bool:
        """Whether the rule applies to ``device``."""
        return (
            (self.site_id is None or self.site_id == device.site_id)
            and (self.model_id is None or self.model_id == device.model_id)
            and (not self.device_ids or device.id in self.device_ids)
        )


class _RuleBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    metric: Name
    severity: Severity = Severity.MAJOR
    duration_s: float = Field(default=0.0, ge=0, le=86_400 * 7)
    scope: RuleScope = Field(default_factory=RuleScope)
    message: str = Field(default="", max_length=300)


class ThresholdRule(_RuleBase):
    """Value beyond a limit for a duration."""

    kind: Literal["threshold"] = "threshold"
    op: Literal[">", ">=", "<", "<="]
    value: float
    clear_value: float | None = None

    @model_validator(mode="after")
    def _hysteresis_on_the_good_side(self) -> ThresholdRule:
        if self.clear_value is not None:
            upward = self.op in (">", ">=")
            if (upward and self.clear_value > self.value) or (
                not upward and self.clear_value < self.value
            ):
                raise ValueError(
                    "clear_value must be on the good side of value (below it for > rules, "
                    "above it for < rules)"
                )
        return self

    def describe(self) -> str:
        """A one-line description for alarm messages."""
        held = f" for {self.duration_s:g}s" if self.duration_s else ""
        return self.message or f"{self.metric} {self.op} {self.value:g}{held}"


class RateOfChangeRule(_RuleBase):
    """Value changing faster than a rate for a duration."""

    kind: Literal["rate_of_change"] = "rate_of_change"
    max_rate: float = Field(gt=0, description="units per second, either direction")
    window_s: float = Field(default=60.0, gt=0, le=86_400)

    def describe(self) -> str:
        """A one-line description for alarm messages."""
        return self.message or (
            f"{self.metric} changes faster than {self.max_rate:g}/s over {self.window_s:g}s"
        )


Rule = Annotated[ThresholdRule | RateOfChangeRule, Field(discriminator="kind")]


class SignalKind(enum.Enum):
    """What a rule evaluation says about an alarm."""

    RAISE = "raise"
    CLEAR = "clear"


@dataclass(frozen=True, slots=True)
class AlarmSignal:
    """A rule started or stopped holding for a device."""

    kind: SignalKind
    rule_id: int
    device: Device
    metric: str
    ts_ms: int
    value: float


@dataclass(slots=True)
class _State:
    since_ms: int | None = None  # the condition has held since
    active: bool = False
    last_ts: int = -(2**62)
    last_bad: bool = False
    tail_ts: Int64s = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    tail_v: Float64s = field(default_factory=lambda: np.empty(0, dtype=np.float64))


class RuleEngine:
    """Evaluates rules on incoming samples and emits raise/clear signals."""

    def __init__(self) -> None:
        self._rules: dict[int, tuple[str, ThresholdRule | RateOfChangeRule]] = {}
        self._by_metric: dict[tuple[str, str], list[int]] = {}
        self._states: dict[tuple[int, str], _State] = {}

    def set_rules(self, rules: Iterable[tuple[int, str, ThresholdRule | RateOfChangeRule]]) -> None:
        """Replace the rule set: ``(rule id, tenant, rule)``; state of kept rules survives."""
        self._rules = {rid: (tenant, rule) for rid, tenant, rule in rules}
        index: dict[tuple[str, str], list[int]] = {}
        for rid, (tenant, rule) in self._rules.items():
            index.setdefault((tenant, rule.metric), []).append(rid)
        self._by_metric = index
        self._states = {k: v for k, v in self._states.items() if k[0] in self._rules}

    def mark_active(self, rule_id: int, device_id: str) -> None:
        """Tell the engine an alarm is open (after a restart), so a good sample clears it."""
        self._states.setdefault((rule_id, device_id), _State()).active = True

    def rule(self, rule_id: int) -> ThresholdRule | RateOfChangeRule | None:
        """An enabled rule by id."""
        found = self._rules.get(rule_id)
        return None if found is None else found[1]

    def rules_for(self, tenant_id: str, metric: str) -> list[int]:
        """Ids of the rules watching a metric of a tenant."""
        return self._by_metric.get((tenant_id, metric), [])

    def evaluate(
        self, device: Device, metric: str, ts: Int64s, values: Float64s
    ) -> list[AlarmSignal]:
        """Feed one metric's new samples of one device; return the signals they cause."""
        signals: list[AlarmSignal] = []
        rule_ids = self._by_metric.get((device.tenant_id, metric))
        if not rule_ids or not len(ts):
            return signals
        order = np.argsort(ts, kind="stable")
        ts, values = ts[order], values[order]
        for rid in rule_ids:
            _, rule = self._rules[rid]
            if not rule.scope.matches(device):
                continue
            state = self._states.setdefault((rid, device.id), _State())
            fresh = ts > state.last_ts
            if not fresh.any():
                continue
            t, v = ts[fresh], values[fresh]
            if isinstance(rule, ThresholdRule):
                bad = self._threshold(rule, v, state)
            else:
                bad, t, v = self._rate(rule, t, v, state)
            if len(t):
                self._advance(rid, rule, device, state, t=t, v=v, bad=bad, signals=signals)
        return signals

    @staticmethod
    def _threshold(rule: ThresholdRule, v: Float64s, state: _State) -> npt.NDArray[np.bool_]:
        compare = _OPS[rule.op]
        bad = compare(v, rule.value)
        if rule.clear_value is None:
            return bad
        good = ~compare(v, rule.clear_value)
        # In the hysteresis band the condition keeps its previous value.
        decided = bad | good
        if decided.all():
            return bad
        idx = np.where(decided, np.arange(len(v)), -1)
        np.maximum.accumulate(idx, out=idx)
        carried = np.where(idx >= 0, bad[np.maximum(idx, 0)], state.last_bad)
        return np.asarray(carried, dtype=np.bool_)

    @staticmethod
    def _rate(
        rule: RateOfChangeRule, t: Int64s, v: Float64s, state: _State
    ) -> tuple[npt.NDArray[np.bool_], Int64s, Float64s]:
        window_ms = int(rule.window_s * 1000)
        all_t = np.concatenate([state.tail_ts, t])
        all_v = np.concatenate([state.tail_v, v])
        start = len(state.tail_ts)
        # For each new sample, the latest sample at least a window earlier.
        ref = np.searchsorted(all_t, all_t[start:] - window_ms, side="right") - 1
        usable = ref >= 0
        bad = np.zeros(len(t), dtype=np.bool_)
        if usable.any():
            r = ref[usable]
            dt = (all_t[start:][usable] - all_t[r]) / 1000.0
            rate = np.abs(all_v[start:][usable] - all_v[r]) / np.maximum(dt, 1e-9)
            bad[usable] = rate > rule.max_rate
        keep_from = np.searchsorted(all_t, all_t[-1] - 2 * window_ms, side="left")
        state.tail_ts, state.tail_v = all_t[keep_from:], all_v[keep_from:]
        return bad, t, v

    @staticmethod
    def _advance(
        rule_id: int,
        rule: ThresholdRule | RateOfChangeRule,
        device: Device,
        state: _State,
        *,
        t: Int64s,
        v: Float64s,
        bad: npt.NDArray[np.bool_],
        signals: list[AlarmSignal],
    ) -> None:
        duration_ms = int(rule.duration_s * 1000)
        n = len(t)
        edges = np.flatnonzero(bad[1:] != bad[:-1]) + 1
        bounds = [0, *edges.tolist(), n]
        for a, b in itertools.pairwise(bounds):
            if bad[a]:
                if state.since_ms is None:
                    state.since_ms = int(t[a])
                if not state.active:
                    j = a + int(np.searchsorted(t[a:b], state.since_ms + duration_ms, side="left"))
                    if j < b:
                        state.active = True
                        signals.append(
                            AlarmSignal(
                                SignalKind.RAISE,
                                rule_id,
                                device,
                                rule.metric,
                                int(t[j]),
                                float(v[j]),
                            )
                        )
            else:
                state.since_ms = None
                if state.active:
                    state.active = False
                    signals.append(
                        AlarmSignal(
                            SignalKind.CLEAR, rule_id, device, rule.metric, int(t[a]), float(v[a])
                        )
                    )
        state.last_ts = int(t[-1])
        state.last_bad = bool(bad[-1])
