"""Edge computing, sans-I/O: report by exception, window aggregation, local alarm rules.

Per data point, as configured:

- **report by exception**: with a ``deadband``, a value is sent only when it moved more than the
  deadband from the last value sent (or changed, for non-numbers), and at least every
  ``heartbeat`` seconds, so the platform still sees the point is alive (its coverage KPI counts
  points with a value in the last minutes). Without a deadband every reading is sent.
- **window aggregation**: with ``window_s`` and ``aggregate``, readings are folded into windows
  aligned to the clock (``min``/``max``/``avg``/``last``) and one value per window is sent,
  stamped with the window's start, when the window closes.
- **local rules**: thresholds held for a duration raise alarms at the gateway itself, so a plant
  keeps its alarms while the uplink is down; the alarms are kept locally and forwarded upstream as
  events. They use the platform's own rule engine, so a rule means the same thing at both ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import numpy as np

from tiangong.edge.adapters.base import DeviceReadings
from tiangong.edge.config import EdgeConfig
from tiangong.platform.alarms.rules import AlarmSignal, RuleEngine, RuleScope, SignalKind
from tiangong.platform.alarms.rules import ThresholdRule as PlatformThreshold
from tiangong.platform.model import Device, Severity

__all__ = ["EdgeProcessor", "LocalAlarm", "OutgoingValue"]

#: Default longest silence of an unchanged point reported by exception.
HEARTBEAT_S: Final = 60.0


class OutgoingValue(NamedTuple):
    """A value to send upstream.

    A named tuple rather than a frozen dataclass: one is made per point sent, and a tuple is
    built several times faster.
    """

    device: str
    prop: str
    ts_ms: int
    value: Any


@dataclass(slots=True)
class LocalAlarm:
    """An alarm raised by a local rule."""

    rule: str
    device: str
    prop: str
    severity: Severity
    active: bool
    value: float
    since_ms: int
    cleared_ms: int | None = None


@dataclass(slots=True)
class _Window:
    start_ms: int
    count: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    last: Any = None


@dataclass(slots=True)
class _PointState:
    deadband: float | None
    window_ms: int | None
    aggregate: str | None
    last_sent: Any = None
    last_sent_ms: int = -(2**62)
    window: _Window | None = None
    pending: list[OutgoingValue] = field(default_factory=list)


class EdgeProcessor:
    """Applies the configured edge computing to readings.

    Args:
        config: the gateway configuration.
        heartbeat: longest silence, in seconds, of a point reported by exception.
    """

    def __init__(self, config: EdgeConfig, *, heartbeat: float = HEARTBEAT_S) -> None:
        self.heartbeat_ms = int(heartbeat * 1000)
        self._points: dict[tuple[str, str], _PointState] = {}
        # Device -> property -> state: a reading looks its device up once, not each point.
        self._states: dict[str, dict[str, _PointState]] = {}
        for device in config.devices:
            states = self._states[device.id] = {}
            for point in device.points:
                states[point.property] = self._points[(device.id, point.property)] = _PointState(
                    deadband=point.deadband,
                    window_ms=int(point.window_s * 1000) if point.window_s else None,
                    aggregate=point.aggregate,
                )
        # Devices whose every point is sent as read (no deadband, no window): their readings
        # skip the per-point edge computing, which is most of the cost at high rates.
        self._as_read = frozenset(
            device
            for device, states in self._states.items()
            if all(s.deadband is None and s.window_ms is None for s in states.values())
        )
        # Properties some local rule watches; a reading without one has nothing to evaluate.
        self._watched = frozenset(rule.property for rule in config.rules)
        self._devices = {
            d.id: Device(
                id=d.id,
                tenant_id=config.gateway.tenant,
                site_id=config.gateway.site,
                model_id=d.model or "edge",
                model_version=1,
            )
            for d in config.devices
        }
        self.engine = RuleEngine()
        self._rule_names: dict[int, str] = {}
        rules = []
        for number, rule in enumerate(config.rules, start=1):
            self._rule_names[number] = rule.name
            rules.append(
                (
                    number,
                    config.gateway.tenant,
                    PlatformThreshold(
                        name=rule.name,
                        metric=rule.property,
                        op=rule.op,
                        value=rule.value,
                        duration_s=rule.duration_s,
                        severity=rule.severity,
                        scope=RuleScope(device_ids=[rule.device]),
                    ),
                )
            )
        self._severity = {n: r.severity for n, r in enumerate(config.rules, start=1)}
        self.engine.set_rules(rules)
        self.alarms: dict[tuple[int, str], LocalAlarm] = {}

    def process(self, readings: DeviceReadings) -> tuple[list[OutgoingValue], list[LocalAlarm]]:
        """Values to send now for one reading, and local alarms that changed."""
        device = readings.device
        ts = readings.ts_ms
        states = self._states.get(device)
        if states is None:
            return [], []
        alarms = self._evaluate(readings) if self._watched else []
        if device in self._as_read:
            return [
                OutgoingValue(device, prop, ts, value)
                for prop, value in readings.values.items()
                if prop in states
            ], alarms
        out: list[OutgoingValue] = []
        for prop, value in readings.values.items():
            state = states.get(prop)
            if state is None:
                continue
            if state.window_ms is not None:
                self._fold(device, prop, state, ts=ts, value=value, out=out)
            elif self._should_send(state, ts, value):
                state.last_sent, state.last_sent_ms = value, ts
                out.append(OutgoingValue(device, prop, ts, value))
        return out, alarms

    def _should_send(self, state: _PointState, ts: int, value: Any) -> bool:
        if state.deadband is None:
            return True
        if ts - state.last_sent_ms >= self.heartbeat_ms:
            return True
        last = state.last_sent
        if _number(value) and _number(last):
            return bool(abs(float(value) - float(last)) > state.deadband)
        return bool(value != last)

    def _fold(
        self,
        device: str,
        prop: str,
        state: _PointState,
        *,
        ts: int,
        value: Any,
        out: list[OutgoingValue],
    ) -> None:
        assert state.window_ms is not None
        start = ts - ts % state.window_ms
        window = state.window
        if window is not None and start != window.start_ms:
            out.extend(self._close(device, prop, state))
            window = None
        if window is None:
            window = state.window = _Window(start_ms=start)
        window.count += 1
        window.last = value
        if _number(value):
            number = float(value)
            window.total += number
            window.low = min(window.low, number)
            window.high = max(window.high, number)

    def _close(self, device: str, prop: str, state: _PointState) -> list[OutgoingValue]:
        window = state.window
        state.window = None
        if window is None or not window.count:
            return []
        match state.aggregate:
            case "avg":
                value: Any = window.total / window.count
            case "min":
                value = window.low
            case "max":
                value = window.high
            case _:
                value = window.last
        return [OutgoingValue(device, prop, window.start_ms, value)]

    def flush_windows(self, now_ms: int) -> list[OutgoingValue]:
        """Close the windows that have ended by ``now_ms`` (call every second or so)."""
        out: list[OutgoingValue] = []
        for (device, prop), state in self._points.items():
            window = state.window
            if (
                window is not None
                and state.window_ms
                and now_ms >= window.start_ms + state.window_ms
            ):
                out.extend(self._close(device, prop, state))
        return out

    def _evaluate(self, readings: DeviceReadings) -> list[LocalAlarm]:
        device = self._devices.get(readings.device)
        if device is None:
            return []
        changed: list[LocalAlarm] = []
        watched = self._watched
        for prop, value in readings.values.items():
            if (
                prop not in watched
                or not _number(value)
                or not self.engine.rules_for(device.tenant_id, prop)
            ):
                continue
            signals = self.engine.evaluate(
                device,
                prop,
                np.asarray([readings.ts_ms], dtype=np.int64),
                np.asarray([float(value)], dtype=np.float64),
            )
            changed.extend(self._apply(signal) for signal in signals)
        return changed

    def _apply(self, signal: AlarmSignal) -> LocalAlarm:
        key = (signal.rule_id, signal.device.id)
        if signal.kind is SignalKind.RAISE:
            alarm = LocalAlarm(
                rule=self._rule_names[signal.rule_id],
                device=signal.device.id,
                prop=signal.metric,
                severity=self._severity[signal.rule_id],
                active=True,
                value=signal.value,
                since_ms=signal.ts_ms,
            )
            self.alarms[key] = alarm
            return alarm
        alarm = self.alarms[key]
        alarm.active = False
        alarm.value = signal.value
        alarm.cleared_ms = signal.ts_ms
        return alarm


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
