"""The rule engine: threshold-for-duration, hysteresis, rate of change, late data."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from tiangong.platform.alarms.rules import (
    RateOfChangeRule,
    RuleEngine,
    RuleScope,
    SignalKind,
    ThresholdRule,
)
from tiangong.platform.model import Device, Severity

PUMP = Device(id="p1", tenant_id="t", site_id="s", model_id="pump", model_version=1)
CNC = Device(id="c1", tenant_id="t", site_id="s", model_id="cnc", model_version=1)


def feed(engine: RuleEngine, device: Device, metric: str, pairs: list[tuple[int, float]]):
    ts = np.asarray([t for t, _ in pairs], dtype=np.int64)
    values = np.asarray([v for _, v in pairs], dtype=np.float64)
    return [(s.kind, s.ts_ms, s.value) for s in engine.evaluate(device, metric, ts, values)]


def engine_with(*rules) -> RuleEngine:
    engine = RuleEngine()
    engine.set_rules((i + 1, "t", rule) for i, rule in enumerate(rules))
    return engine


def test_threshold_must_hold_for_the_duration() -> None:
    engine = engine_with(ThresholdRule(name="hot", metric="temp", op=">", value=80, duration_s=10))
    # Above the limit for 5 s, then back: nothing.
    assert feed(engine, PUMP, "temp", [(0, 85), (5_000, 85), (6_000, 70)]) == []
    # Above for 10 s (in sample time, across two batches): raise once, at the 10 s mark.
    assert feed(engine, PUMP, "temp", [(20_000, 90), (25_000, 91)]) == []
    assert feed(engine, PUMP, "temp", [(30_000, 92), (35_000, 93)]) == [
        (SignalKind.RAISE, 30_000, 92.0)
    ]
    assert feed(engine, PUMP, "temp", [(40_000, 95)]) == []  # still active: no repeat
    assert feed(engine, PUMP, "temp", [(45_000, 60)]) == [(SignalKind.CLEAR, 45_000, 60.0)]


def test_hysteresis_band_keeps_the_alarm() -> None:
    engine = engine_with(ThresholdRule(name="hot", metric="temp", op=">", value=80, clear_value=75))
    assert feed(engine, PUMP, "temp", [(0, 81)]) == [(SignalKind.RAISE, 0, 81.0)]
    assert feed(engine, PUMP, "temp", [(1_000, 78), (2_000, 76)]) == []  # in the band
    assert feed(engine, PUMP, "temp", [(3_000, 74)]) == [(SignalKind.CLEAR, 3_000, 74.0)]
    assert feed(engine, PUMP, "temp", [(4_000, 79)]) == []  # band from below: not raised


def test_hysteresis_must_be_on_the_good_side() -> None:
    with pytest.raises(ValidationError):
        ThresholdRule(name="x", metric="m", op=">", value=80, clear_value=85)
    with pytest.raises(ValidationError):
        ThresholdRule(name="x", metric="m", op="<", value=5, clear_value=4)


def test_low_threshold() -> None:
    engine = engine_with(ThresholdRule(name="low", metric="p", op="<=", value=6))
    assert feed(engine, PUMP, "p", [(0, 7), (1, 6), (2, 5), (3, 7)]) == [
        (SignalKind.RAISE, 1, 6.0),
        (SignalKind.CLEAR, 3, 7.0),
    ]


def test_rate_of_change_uses_a_window() -> None:
    engine = engine_with(RateOfChangeRule(name="fast", metric="t", max_rate=0.5, window_s=10))
    # Noise of +-1 every second would be 2 units/s sample to sample, but is flat over 10 s.
    noisy = [(i * 1000, 50 + (1 if i % 2 else -1)) for i in range(30)]
    assert feed(engine, PUMP, "t", noisy) == []
    # A real ramp of 1 unit/s trips it once 10 s of history show the slope.
    ramp = [(30_000 + i * 1000, 50 + i) for i in range(15)]
    signals = feed(engine, PUMP, "t", ramp)
    assert signals
    assert signals[0][0] is SignalKind.RAISE
    flat = [(45_000 + i * 1000, 64.0) for i in range(15)]
    assert [s[0] for s in feed(engine, PUMP, "t", flat)] == [SignalKind.CLEAR]


def test_scope_and_tenant() -> None:
    engine = engine_with(
        ThresholdRule(
            name="cnc hot", metric="temp", op=">", value=1, scope=RuleScope(model_id="cnc")
        )
    )
    assert feed(engine, PUMP, "temp", [(0, 5)]) == []
    assert feed(engine, CNC, "temp", [(0, 5)]) == [(SignalKind.RAISE, 0, 5.0)]
    other_tenant = Device(id="x", tenant_id="u", site_id="s", model_id="cnc", model_version=1)
    assert feed(engine, other_tenant, "temp", [(0, 5)]) == []


def test_late_and_unordered_samples() -> None:
    engine = engine_with(ThresholdRule(name="hot", metric="temp", op=">", value=80))
    # Out of order inside a batch is sorted; older than what was seen is ignored.
    assert feed(engine, PUMP, "temp", [(2_000, 90), (1_000, 70)]) == [
        (SignalKind.RAISE, 2_000, 90.0)
    ]
    assert feed(engine, PUMP, "temp", [(1_500, 10)]) == []  # late: does not clear


def test_open_alarm_after_restart_clears_on_first_good_sample() -> None:
    rule = ThresholdRule(name="hot", metric="temp", op=">", value=80)
    engine = engine_with(rule)
    engine.mark_active(1, PUMP.id)
    assert feed(engine, PUMP, "temp", [(0, 20)]) == [(SignalKind.CLEAR, 0, 20.0)]


def test_rule_descriptions() -> None:
    rule = ThresholdRule(
        name="n", metric="temp", op=">", value=80, duration_s=30, severity=Severity.CRITICAL
    )
    assert rule.describe() == "temp > 80 for 30s"
    assert "faster than 2/s" in RateOfChangeRule(name="n", metric="t", max_rate=2).describe()
