"""The machines without I/O: inputs change the physics, slow wear ends in a failure, readings
stay within their thing models."""

from __future__ import annotations

import statistics

import pytest

from tiangong.platform.model import DataType
from tiangong.sim.errors import MachineInputError
from tiangong.sim.factory import plan_factory
from tiangong.sim.machines import WEAR_FAILURE, Machine, make_machine, wears
from tiangong.sim.thing_models import THING_MODELS

T0 = 1_700_000_000.0  # a fixed start: the physics depends on the time of day

# The signals the MQTT factory published before machines took inputs; they must stay.
SIGNALS = {
    "cnc": {
        "state",
        "spindle_speed",
        "spindle_load",
        "feed_rate",
        "power",
        "spindle_temp",
        "vibration",
        "parts_good",
        "parts_bad",
    },
    "pump": {"state", "flow", "pressure", "power", "motor_temp", "vibration"},
    "compressor": {"state", "pressure", "power", "discharge_temp", "run_hours"},
    "meter": {"active_power", "energy", "voltage", "current", "power_factor"},
    "line": {"state", "line_speed", "good_count", "reject_count"},
}


def run(machine: Machine, seconds: int, start: float = T0) -> list[dict[str, object]]:
    return [machine.step(start + i).values for i in range(seconds)]


def test_readings_keep_their_signals_and_fit_their_thing_models() -> None:
    for spec in plan_factory(30).devices:
        machine = make_machine(spec.kind, spec.id, time_scale=50.0)
        model = THING_MODELS[spec.kind]
        for values in run(machine, 600)[::7]:
            assert SIGNALS[spec.kind] <= set(values)
            assert set(values) == {p.id for p in model.properties}
            for name, value in values.items():
                prop = model.property(name)
                assert prop is not None
                if prop.type is DataType.ENUM:
                    assert prop.enum is not None
                    assert value in prop.enum
                elif prop.type is DataType.BOOL:
                    assert isinstance(value, bool)
                else:
                    assert isinstance(value, int | float)
                    assert prop.min is None or value >= prop.min, (spec.id, name, value)
                    assert prop.max is None or value <= prop.max, (spec.id, name, value)


def test_feed_override_scales_the_feed() -> None:
    machine = make_machine("cnc", "cnc-001")
    values = run(machine, 200)  # past the first setup
    running = [v for v in values if v["state"] == "running"]
    assert running
    ratio = running[-1]["feed_rate"] / running[-1]["spindle_speed"]
    assert ratio == pytest.approx(0.12, rel=0.01)
    machine.write("feed_override", 50)
    later = run(machine, 5, T0 + 200)[-1]
    assert later["feed_override"] == 50
    assert later["feed_rate"] / later["spindle_speed"] == pytest.approx(0.06, rel=0.01)
    machine.write("feed_override", 400)  # the control clamps it
    assert machine.step(T0 + 206).values["feed_override"] == 150


def test_pump_speed_setpoint_and_commands() -> None:
    pump = make_machine("pump", "pump-002")
    free = run(pump, 30)[-1]
    pump.write("speed_setpoint", 30)
    limited = run(pump, 30, T0 + 30)[-1]
    assert limited["flow"] < free["flow"]
    assert limited["speed_setpoint"] == 30
    pump.command("stop")
    stopped = pump.step(T0 + 61).values
    assert stopped["state"] == "stopped"
    assert stopped["flow"] == 0
    assert stopped["power"] == 0
    pump.command("start")
    assert pump.step(T0 + 62).values["state"] == "running"


def test_compressor_unload_pressure_and_remote_enable() -> None:
    compressor = make_machine("compressor", "compressor-001")
    compressor.write("pressure_setpoint", 9.0)
    highs = [v["pressure"] for v in run(compressor, 3600)]
    assert max(highs) > 8.5
    compressor.write("enabled", False)
    idle = run(compressor, 10, T0 + 3600)[-1]
    assert idle["state"] == "idle"
    assert idle["power"] == 0
    assert idle["enabled"] is False


def test_commands_reset_counters_and_unknown_inputs_are_refused() -> None:
    line = make_machine("line", "line-001")
    assert run(line, 120)[-1]["good_count"]
    line.command("reset_counters")
    assert line.step(T0 + 120).values["good_count"] <= 2
    with pytest.raises(MachineInputError):
        line.command("start")
    with pytest.raises(MachineInputError):
        line.write("line_speed", 10)
    with pytest.raises(MachineInputError):
        make_machine("meter", "meter-001").write("energy", 0)


def test_a_share_of_the_rotating_machines_wears_chosen_by_name() -> None:
    names = [s.id for s in plan_factory(500).devices if s.kind in ("cnc", "pump", "compressor")]
    wearing = [n for n in names if make_machine(n.split("-")[0], n).degradation is not None]
    assert 0.12 < len(wearing) / len(names) < 0.28
    assert wearing == [n for n in names if wears(n)]
    assert all(make_machine("meter", s.id).degradation is None for s in plan_factory(50).devices)
    assert make_machine("pump", "pump-001", wear_share=0.0).degradation is None
    assert make_machine("pump", "pump-002", wear_share=1.0).degradation is not None


def _until_wear_failure(name: str, time_scale: float) -> tuple[int, list[float], list[str]]:
    pump = make_machine("pump", name, time_scale=time_scale)
    vibration: list[float] = []
    events: list[str] = []
    for i in range(20_000):
        reading = pump.step(T0 + i)
        events += [f"{n}:{d.get('code', '')}" for n, d in reading.events]
        if ("fault", WEAR_FAILURE) in [(n, d.get("code")) for n, d in reading.events]:
            return i, vibration, events
        if reading.values["state"] == "running":
            vibration.append(float(reading.values["vibration"]))
    raise AssertionError("no wear failure")


def test_wear_raises_vibration_then_fails_deterministically() -> None:
    assert wears("pump-001")
    failed_at, vibration, events = _until_wear_failure("pump-001", time_scale=600)
    tenth = len(vibration) // 10
    early, late = statistics.mean(vibration[:tenth]), statistics.mean(vibration[-tenth:])
    assert late > 2 * early
    assert events[-1] == f"fault:{WEAR_FAILURE}"
    # The same name tells the same story.
    assert _until_wear_failure("pump-001", time_scale=600) == (failed_at, vibration, events)
    # A quicker clock for wear: the same life in fewer (real) seconds.
    assert _until_wear_failure("pump-001", time_scale=6000)[0] < failed_at / 5


def test_a_wear_failure_is_repaired_and_the_wear_reset() -> None:
    pump = make_machine("pump", "pump-001", time_scale=3600)
    assert pump.degradation is not None
    names: list[str] = []
    states: list[object] = []
    for i in range(2_000):
        reading = pump.step(T0 + i)
        names += [n for n, _ in reading.events]
        states.append(reading.values["state"])
        if "repaired" in names:
            break
    assert names[-2:] == ["fault", "repaired"]
    assert "down" in states
    assert states[-1] == "running"
    assert pump.degradation.hours < 0.01
    assert pump.degradation.failures == 1
    assert pump.degradation_level < 0.001
