"""Equipment health: detectors on constructed series, condition and trend, the work order
lifecycle, the turbofan test cell, and the service end to end through the platform pipeline.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from tests.platform.conftest import PlatformEnv, running_platform
from tests.platform.probes import eventually
from tests.servers import MosquittoProcess
from tiangong.apps.health.anomaly import AnomalyKind, AnomalySettings, SeriesAnomalyDetector
from tiangong.apps.health.condition import (
    ConditionIndicator,
    ConditionProfile,
    ConditionTracker,
    trend_rul,
)
from tiangong.apps.health.errors import HealthConfigError, WorkOrderConflictError
from tiangong.apps.health.profiles import HealthSettings
from tiangong.apps.health.workorders import (
    TRANSITIONS,
    WorkOrderAction,
    WorkOrderState,
    next_state,
)
from tiangong.apps.phm.cmapss import bundled_cmapss_file, read_cmapss
from tiangong.apps.phm.registry import ModelRegistry
from tiangong.network.access import Channel, DeviceTopic
from tiangong.platform.tokens import ApiRole
from tiangong.sim.factory import plan_factory
from tiangong.sim.layout import split_plan
from tiangong.sim.machines import KINDS, WEAR_FAILURE, make_machine
from tiangong.sim.modbus_server import UnitImage
from tiangong.sim.register_maps import REGISTER_MAPS, decode, register_count
from tiangong.sim.thing_models import THING_MODELS
from tiangong.sim.turbofan import TurbofanTestCell, fd001_training

A, S = WorkOrderAction, WorkOrderState


def noisy(n: int, level: float = 10.0, sigma: float = 0.5, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [level + rng.gauss(0, sigma) for _ in range(n)]


def feed(detector: SeriesAnomalyDetector, values: list[float], start: int = 0) -> list:
    found = []
    for i, value in enumerate(values):
        found += detector.update(start + i * 1000, value)
    return found


# -- anomaly detectors -----------------------------------------------------------------------------


def test_a_spike_is_found_once_and_counted() -> None:
    detector = SeriesAnomalyDetector()
    values = noisy(500)
    values[400] = 30.0  # 40 sigma
    values[450:460] = [30.0] * 10  # a step for 10 samples is not a spike
    found = feed(detector, values)
    assert [(f.kind, f.ts_ms) for f in found] == [(AnomalyKind.SPIKE, 400_000)]
    assert found[0].score > 6
    assert detector.spikes == 1


def test_a_stuck_sensor_is_found_once_and_rearms() -> None:
    detector = SeriesAnomalyDetector(AnomalySettings(stuck_samples=20))
    values = noisy(400) + [10.3] * 40 + noisy(50, seed=2) + [9.9] * 25
    found = feed(detector, values)
    assert [f.kind for f in found] == [AnomalyKind.STUCK, AnomalyKind.STUCK]
    assert found[0].ts_ms == (400 + 19) * 1000  # the 20th identical value
    assert found[0].detail["run"] == 20


def test_a_slow_drift_is_found_and_the_reference_learnt_again() -> None:
    detector = SeriesAnomalyDetector()
    rng = random.Random(3)
    steady = [10 + rng.gauss(0, 0.5) for _ in range(300)]
    drifting = [10 + 0.01 * i + rng.gauss(0, 0.5) for i in range(900)]  # +9 over 900 samples
    found = feed(detector, steady + drifting)
    drifts = [f for f in found if f.kind is AnomalyKind.DRIFT]
    spikes = [f for f in found if f.kind is AnomalyKind.SPIKE]
    assert drifts, "an 18-sigma shift over 900 samples must be found"
    assert not spikes
    assert drifts[0].detail["direction"] == "up"
    assert drifts[0].ts_ms > 300_000  # not in the steady part
    # One event per shift: the reference is learnt again after each, so a slow ramp gives a few
    # events, not hundreds.
    assert len(drifts) <= 6


def test_no_anomaly_on_plain_noise() -> None:
    detector = SeriesAnomalyDetector()
    assert feed(detector, noisy(3000, seed=7)) == []


def test_bad_input_is_counted_and_changes_nothing() -> None:
    clean = SeriesAnomalyDetector()
    dirty = SeriesAnomalyDetector()
    values = noisy(400)
    values[350] = 30.0
    feed(clean, values)
    found = []
    for i, value in enumerate(values):
        found += dirty.update(i * 1000, value)
        found += dirty.update(i * 1000, value + 100)  # duplicate time: ignored
        found += dirty.update(i * 1000 - 500, -50.0)  # late: ignored
        found += dirty.update(i * 1000 + 1, math.nan)  # not a number: ignored
    assert dirty.out_of_order == 2 * 400
    assert dirty.invalid == 400
    assert dirty.samples == clean.samples == 400
    assert [f.ts_ms for f in found] == [350_000]


def test_series_that_do_not_vary_or_only_count_are_judged_accordingly() -> None:
    setpoint = SeriesAnomalyDetector()
    assert feed(setpoint, [75.0] * 400 + [90.0] * 400) == []  # a setpoint change is no anomaly
    assert not setpoint.judged
    counter = SeriesAnomalyDetector(AnomalySettings(stuck_samples=10))
    energy = [1000 + 0.5 * i + random.Random(i).random() * 0.1 for i in range(400)]
    found = feed(counter, energy + [energy[-1]] * 12)
    assert [f.kind for f in found] == [AnomalyKind.STUCK]  # a counter that stops counting
    assert found[0].detail["counter"] is True


def test_detector_settings_are_checked() -> None:
    with pytest.raises(HealthConfigError):
        AnomalySettings(window=2)
    with pytest.raises(HealthConfigError):
        AnomalySettings(min_change_rate=2)


# -- condition and trend ---------------------------------------------------------------------------

PROFILE = ConditionProfile(
    indicators=(ConditionIndicator("vibration", rise=3.0, per="load", per_min=5.0),),
    baseline_samples=50,
    window=20,
    trend_every_s=60.0,
    trend_min_points=5,
)
LABELS = ["idle", "running", "down"]


def test_health_index_falls_with_wear_per_unit_load() -> None:
    tracker = ConditionTracker(PROFILE, LABELS)
    rng = random.Random(5)
    t = 0
    for _ in range(50):  # healthy: vibration 2 per 70 % load
        load = rng.uniform(40, 90)
        tracker.update(t, {"state": 1, "load": load, "vibration": 2.0 * load / 70})
        t += 60_000
    first = tracker.estimate(t)
    assert first.health_index == pytest.approx(1.0, abs=0.02)
    assert first.driver == "vibration/load"
    # Heavier jobs alone are not wear: the indicator is per unit of load.
    for _ in range(20):
        tracker.update(t, {"state": 1, "load": 95.0, "vibration": 2.0 * 95 / 70})
        t += 60_000
    assert tracker.estimate(t).health_index == pytest.approx(1.0, abs=0.02)
    # Wear: vibration per load rises to 2.5 x baseline over 40 hours (limit 4 x).
    for i in range(40 * 60):
        worn = 1.0 + 1.5 * i / (40 * 60)
        tracker.update(t, {"state": 1, "load": 70.0, "vibration": 2.0 * worn})
        estimate = tracker.estimate(t)
        t += 60_000
    assert estimate.health_index == pytest.approx(0.5, abs=0.03)
    assert estimate.levels["vibration/load"][0] == pytest.approx(2.0 / 70, rel=0.01)
    # The trend: -0.5 over 40 h, so about 40 h to 0 at this pace.
    assert estimate.rul.hours == pytest.approx(40, rel=0.1)
    assert estimate.rul.r2 is not None
    assert estimate.rul.r2 > 0.9


def test_samples_outside_operation_are_skipped_and_a_repair_relearns() -> None:
    tracker = ConditionTracker(PROFILE, LABELS)
    for i in range(50):
        tracker.update(i * 1000, {"state": 1, "load": 70.0, "vibration": 2.0})
    for i in range(50, 100):  # stopped: vibration reads near zero, which is not health
        tracker.update(i * 1000, {"state": 2, "load": 0.0, "vibration": 0.1})
    tracker.update(98_500, {"state": 1, "load": 70.0, "vibration": 9.0})  # late: skipped
    assert tracker.estimate(100_000).health_index == pytest.approx(1.0)
    assert tracker.skipped >= 51
    tracker.reset(100_000)
    assert tracker.estimate(100_000).health_index is None  # learning again
    assert tracker.estimate(100_000).rul.reason == "learning the baseline"


def test_trend_says_when_there_is_no_estimate() -> None:
    t = np.arange(20, dtype=np.float64) * 3600
    assert trend_rul(t[:3], np.ones(3)).reason == "3 of 10 health values for a trend"
    assert trend_rul(t, np.linspace(0.8, 0.9, 20)).reason == "health is not falling"
    rng = np.random.default_rng(1)
    noisy_flat = 0.8 - 0.0001 * t / 3600 + rng.normal(0, 0.05, 20)
    assert "explains too little" in (trend_rul(t, noisy_flat).reason or "")
    falling = trend_rul(t, np.linspace(0.9, 0.71, 20))
    assert falling.hours == pytest.approx(0.71 / 0.01, rel=0.01)


# -- work order lifecycle --------------------------------------------------------------------------


def test_work_order_lifecycle_table() -> None:
    state = S.OPEN
    for action in (A.ACKNOWLEDGE, A.SCHEDULE, A.START, A.COMPLETE):
        state = next_state(state, action)
    assert state is S.DONE
    for final in (S.DONE, S.CANCELLED):
        for action in A:
            with pytest.raises(WorkOrderConflictError):
                next_state(final, action)
    assert next_state(S.IN_PROGRESS, A.CANCEL) is S.CANCELLED
    with pytest.raises(WorkOrderConflictError):
        next_state(S.OPEN, A.COMPLETE)
    assert all(target is not S.OPEN for target in TRANSITIONS.values())


# -- the turbofan test cell ------------------------------------------------------------------------


def test_turbofan_cell_replays_cmapss_rows_then_fails_and_changes_engine() -> None:
    assert KINDS["turbofan"] is TurbofanTestCell
    model = THING_MODELS["turbofan"]
    cell = make_machine("turbofan", "engine-cell-1")
    assert isinstance(cell, TurbofanTestCell)
    recording = read_cmapss(bundled_cmapss_file("train_FD001.txt"))
    engine = cell.engine
    rows = recording.units == engine
    first = int(np.flatnonzero(rows)[0])
    start = cell.row
    now = 1_000_000.0
    reading = cell.step(now)
    assert set(reading.values) == {p.id for p in model.properties}
    row = start
    assert reading.values["cycle"] == recording.cycles[row]
    assert [reading.values[f"s{i}"] for i in range(1, 22)] == recording.sensors[row].tolist()
    assert [reading.values[f"setting{i}"] for i in range(1, 4)] == recording.settings[row].tolist()
    last = first + int(rows.sum()) - 1
    events = []
    while row < last:
        now += cell.interval
        reading = cell.step(now)
        row += 1
        assert reading.values["cycle"] == recording.cycles[row]
        events += reading.events
    assert events == [
        (
            "fault",
            {"code": WEAR_FAILURE, "expected_downtime_s": events[0][1]["expected_downtime_s"]},
        )
    ]
    assert cell.step(now + 1).values == {"state": "down", "engine": engine}
    after = cell.step(now + 10_000)
    assert ("repaired", {"failures": 1}) in after.events
    assert after.values["cycle"] == 1
    assert after.values["engine"] != engine
    assert fd001_training() is fd001_training()  # read once per process


def test_turbofan_cells_join_the_demo_plan_on_modbus() -> None:
    plan = plan_factory(6, turbofans=2)
    cells = [d for d in plan.devices if d.kind == "turbofan"]
    assert [d.id for d in cells] == ["engine-cell-01", "engine-cell-02"]
    assert [d.id for d in plan.devices if d.kind != "turbofan"] == [
        d.id for d in plan_factory(6).devices
    ]
    layout = split_plan(plan)
    slot = next(s for s in layout.modbus if s.device.id == "engine-cell-01")
    cell = make_machine("turbofan", slot.device.id)
    image = UnitImage(cell, REGISTER_MAPS["turbofan"], THING_MODELS["turbofan"])
    reading = cell.step(1_000_000.0)
    image.update(reading.values)
    for point in REGISTER_MAPS["turbofan"].points:
        count = register_count(point.type)
        raw = [image.cells[point.table][a] for a in range(point.address, point.address + count)]
        value = decode(point, raw)
        if point.property == "state":
            assert value == 0  # "running"
        else:  # float32 keeps C-MAPSS's 4 to 6 significant digits
            assert value == pytest.approx(reading.values[point.property], rel=1e-6)


# -- the service, end to end -----------------------------------------------------------------------

pytestmark_e2e = [pytest.mark.mosquitto, pytest.mark.slow]


def telemetry(device: str, site: str = "p1") -> str:
    return DeviceTopic.build("acme", site, device, Channel.TELEMETRY)


def events_topic(device: str, site: str = "p1") -> str:
    return DeviceTopic.build("acme", site, device, Channel.EVENTS)


async def _register(env: PlatformEnv, device: str, model: str) -> None:
    registry = env.platform.registry
    await registry.put_thing_model("acme", THING_MODELS[model])
    _, env.secrets[device] = await registry.register_device(
        tenant_id="acme", site_id="p1", device_id=device, model_id=model
    )


@pytest.fixture(params=["embedded", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> dict[str, str]:
    """Platform settings: SQLite and DuckDB (embedded), or PostgreSQL for both (deployed)."""
    if request.param == "embedded":
        return {}
    dsn = str(request.getfixturevalue("pg_database"))
    return {
        "database_url": dsn.replace("postgresql://", "postgresql+psycopg://", 1),
        "store": "postgres",
        "postgres_dsn": dsn,
    }


@pytest.mark.mosquitto
@pytest.mark.slow
async def test_turbofan_telemetry_gets_rul_with_model_version_and_one_work_order(
    tmp_path: Path, shared_mosquitto: MosquittoProcess, backend: dict[str, str]
) -> None:
    recording = fd001_training()
    engine_rows = np.flatnonzero(recording.units == 3)
    async with running_platform(tmp_path, mqtt_port=shared_mosquitto.port, **backend) as env:
        platform = env.platform
        health = platform.health
        health.settings = HealthSettings(latest_every_s=0, history_every_s=0)
        await _register(env, "engine-7", "turbofan")
        shipped = ModelRegistry(tmp_path / "models").default_version()
        now = int(time.time() * 1000)
        rows = engine_rows[-80:]  # the last 80 cycles of FD001 engine 3, as a test cell reports
        stamps = [now - (len(rows) - i) * 1000 for i in range(len(rows))]
        values: dict[str, list[float]] = {
            "cycle": [int(recording.cycles[r]) for r in rows],
            "engine": [3] * len(rows),
        }
        for i in range(21):
            values[f"s{i + 1}"] = [float(recording.sensors[r, i]) for r in rows]
        for i in range(3):
            values[f"setting{i + 1}"] = [float(recording.settings[r, i]) for r in rows]

        def message(part: slice, at: list[int] | None = None) -> bytes:
            values_of = {k: v[part] for k, v in values.items()}
            return orjson.dumps({"ts": at or stamps[part], "values": values_of})

        async with env.client("engine-7") as cell:
            # A backlog of 60 cycles in one message (sent twice: a redelivery), then one cycle
            # per message as a test cell reports, then bad input: the last cycle again under a
            # new time, and a message older than everything. None may corrupt the estimate.
            for part in (slice(0, 60), slice(0, 60), *(slice(i, i + 1) for i in range(60, 80))):
                await cell.publish(telemetry("engine-7"), message(part), qos=1)
            await cell.publish(telemetry("engine-7"), message(slice(79, 80), [now + 500]), qos=1)
            await cell.publish(
                telemetry("engine-7"), message(slice(0, 1), [stamps[0] - 5000]), qos=1
            )

        async def committed() -> bool:
            # 82 cycles of 26 values each (the redelivered backlog is not stored again)
            return platform.pipeline.points_committed >= 82 * 26

        await eventually(committed, timeout=20)
        await health.drain()
        fleet = (await env.api.get("/api/v1/apps/health")).json()
        mine = [d for d in fleet if d["device_id"] == "engine-7"]
        assert len(mine) == 1, fleet
        estimate = mine[0]
        assert estimate["method"] == "rul-model"
        assert estimate["model_version"] == shipped
        assert estimate["rul_unit"] == "cycles"
        # The last cycle of a run-to-failure engine: little life left (the model's RMSE at the
        # end of life is a few cycles; this is a pipeline check, not an accuracy test).
        assert estimate["rul"] < 25
        assert estimate["health_index"] == pytest.approx(estimate["rul"] / 125, abs=0.01)
        assert estimate["detail"]["last_cycle"] == int(recording.cycles[rows[-1]])
        assert health.counters.out_of_order == 1  # the stale message
        # The last cycle again; and, when the stale message was committed with the others, the
        # history read back from the store holds its copy of the first cycle too.
        assert health.counters.duplicate_cycles in (1, 2)
        history = (await env.api.get("/api/v1/apps/health/engine-7/history")).json()
        assert history
        assert all(p["model_version"] == shipped for p in history)
        ruls = [p["rul"] for p in history]
        assert ruls[-1] < ruls[0]  # the engine wears towards the end
        orders = (
            await env.api.get("/api/v1/apps/work-orders", params={"device": "engine-7"})
        ).json()
        causes = sorted(o["cause"] for o in orders["items"])
        assert causes == ["rul_low"], orders  # one order, not one per low estimate
        order = next(o for o in orders["items"] if o["cause"] == "rul_low")
        assert order["model_version"] == shipped
        assert order["opened_by"] == "health-service"
        assert order["state"] == "open"
        # A manual order for the same cause is a duplicate.
        dup = await env.api.post(
            "/api/v1/apps/work-orders",
            json={"tenant_id": "acme", "device_id": "engine-7", "cause": "rul_low", "title": "x"},
        )
        assert dup.status_code == 409
        # The lifecycle, with who and when.
        for action in ("acknowledge", "schedule", "start"):
            response = await env.api.post(
                f"/api/v1/apps/work-orders/{order['id']}/transition", json={"action": action}
            )
            assert response.status_code == 200, response.text
        bad = await env.api.post(
            f"/api/v1/apps/work-orders/{order['id']}/transition", json={"action": "acknowledge"}
        )
        assert bad.status_code == 409
        # The device reports a repair: a suggestion on the order, which stays in progress.
        async with env.client("engine-7") as cell:
            await cell.publish(
                events_topic("engine-7"),
                orjson.dumps({"ts": now, "event": "repaired", "data": {"failures": 1}}),
                qos=1,
            )
        seen: list[int] = []

        async def repaired_seen() -> bool:
            # Look now rather than wait for the poll (which may also find it first).
            seen.append(await health.check_events())
            current = (
                await env.api.get("/api/v1/apps/work-orders?device=engine-7&state=in_progress")
            ).json()
            return current["items"][0]["repair_reported_at"] is not None

        await eventually(repaired_seen, timeout=20)
        assert sum(seen) <= 1  # one event, acted on once
        done = await env.api.post(
            f"/api/v1/apps/work-orders/{order['id']}/transition",
            json={"action": "complete", "note": "bearing replaced"},
        )
        assert done.status_code == 200
        steps = done.json()["steps"]
        assert [s["state"] for s in steps] == [
            "open",
            "acknowledged",
            "scheduled",
            "in_progress",
            "done",
        ]
        assert steps[0]["by"] == "health-service"
        assert steps[-1]["note"] == "bearing replaced"
        assert all(s["by"] for s in steps[1:])
        # Closed: the cause may open a new order again (a person may now open one by hand).
        again = await env.api.post(
            "/api/v1/apps/work-orders",
            json={"tenant_id": "acme", "device_id": "engine-7", "cause": "rul_low", "title": "x"},
        )
        assert again.status_code == 201
        models = (await env.api.get("/api/v1/apps/models")).json()
        assert shipped in [m["version"] for m in models]


@pytest.mark.mosquitto
async def test_sensor_anomalies_from_real_telemetry_are_stored_per_tenant(
    tmp_path: Path, shared_mosquitto: MosquittoProcess
) -> None:
    async with running_platform(tmp_path, mqtt_port=shared_mosquitto.port) as env:
        platform = env.platform
        now = int(time.time() * 1000)
        n = 600
        stamps = [now - (n - i) * 1000 for i in range(n)]
        flow = noisy(n, level=50.0, sigma=1.0, seed=11)
        flow[450] = 95.0  # a spike
        flow[480:530] = [flow[479]] * 50  # a stuck reading
        async with env.client("pump-2") as pump:
            payload = {"ts": stamps, "values": {"flow": flow}}
            await pump.publish(telemetry("pump-2"), orjson.dumps(payload), qos=1)
        await eventually(lambda: platform.pipeline.points_committed >= n, timeout=20)
        await platform.health.drain()
        page = (
            await env.api.get("/api/v1/apps/health/anomalies", params={"device": "pump-2"})
        ).json()
        kinds = sorted({(a["kind"], a["metric"]) for a in page["items"]})
        assert kinds == [("spike", "flow"), ("stuck", "flow")], page
        spike = next(a for a in page["items"] if a["kind"] == "spike")
        assert spike["value"] == 95.0
        # Another tenant sees none of them.
        _, secret = await platform.tokens.create(
            name="other-viewer", role=ApiRole.VIEWER, tenant_id="other"
        )
        theirs = await env.api.get(
            "/api/v1/apps/health/anomalies", headers={"Authorization": f"Bearer {secret}"}
        )
        assert theirs.status_code == 200
        assert theirs.json()["total"] == 0
        history = await env.api.get(
            "/api/v1/apps/health/pump-2/history", headers={"Authorization": f"Bearer {secret}"}
        )
        assert history.status_code == 404
