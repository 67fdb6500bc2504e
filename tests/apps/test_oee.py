"""OEE (ISO 22400-2): the core against hand-computed cases, the calendar, and the service over
real stores (embedded DuckDB and PostgreSQL) with telemetry written through the store API."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time
from pathlib import Path

import numpy as np
import orjson
import pytest

from tests.platform.conftest import running_platform
from tests.servers import MosquittoProcess
from tiangong.apps.oee.calendar import Grouping, Shift, ShiftCalendar
from tiangong.apps.oee.config import PROFILES, OeeConfig
from tiangong.apps.oee.core import (
    NO_DATA,
    UNSPECIFIED,
    OeeFigures,
    StateClass,
    compute,
    pareto,
)
from tiangong.apps.oee.errors import OeeConfigError, ShiftCalendarError
from tiangong.apps.oee.service import OeeService
from tiangong.data.catalog import standard_catalog
from tiangong.data.enterprise import EnterpriseProfile, IndicatorCollector, period_bounds
from tiangong.data.model import Period
from tiangong.network.access import Channel, DeviceTopic
from tiangong.platform.database import Database, sqlite_url
from tiangong.platform.errors import NotFoundError
from tiangong.platform.model import Site, Tenant
from tiangong.platform.registry import DeviceRegistry
from tiangong.platform.tsdb.base import RAW_LIMIT, PointBatch, SeriesKey, TimeSeriesStore
from tiangong.platform.tsdb.duckdb_store import DuckDBStore
from tiangong.sim.thing_models import THING_MODELS

MIN = 60_000
HOUR = 60 * MIN
CNC = ["idle", "setup", "running", "down"]
IDLE, SETUP, RUNNING, DOWN = range(4)
CLASSES = dict(PROFILES["cnc"].classes)
UTC_SHIFTS = ShiftCalendar()  # A 06-14, B 14-22, C 22-06, in UTC


def at(hh: int, mm: int = 0, *, day: int = 2) -> int:
    """Epoch ms of 2026-11-<day> hh:mm UTC."""
    return int(datetime(2026, 11, day, hh, mm, tzinfo=UTC).timestamp() * 1000)


def hold(state: int, start: int, end: int, step: int = MIN) -> list[tuple[int, float | None]]:
    """A state reported every ``step`` from ``start`` until before ``end``."""
    return [(t, float(state)) for t in range(start, end, step)]


def shift_a() -> list:
    return UTC_SHIFTS.periods(at(6), at(14), Grouping.SHIFT)


# -- the core: hand-computed cases ---------------------------------------------------------------


def test_one_shift_by_hand() -> None:
    # 06:00 setup 30 min, running 3 h 30, down 45 min (tool breakage), running 3 h 15 to 14:00.
    state = (
        hold(SETUP, at(6), at(6, 30))
        + hold(RUNNING, at(6, 30), at(10))
        + hold(DOWN, at(10), at(10, 45))
        + hold(RUNNING, at(10, 45), at(14))
    )
    good = [(at(5, 59), 1000.0), (at(9), 1200.0), (at(13, 59), 1351.0)]
    bad = [(at(5, 59), 20.0), (at(13, 59), 29.0)]
    [f] = compute(
        shift_a(),
        state=state,
        labels=CNC,
        classes=CLASSES,
        good=good,
        bad=bad,
        faults=[(at(10) + 5000, "TOOL_BREAKAGE")],
        ideal_cycle_s=60.0,
    )
    assert (f.pbt_ms, f.apt_ms, f.setup_ms, f.down_ms, f.unknown_ms) == (
        480 * MIN,
        405 * MIN,
        30 * MIN,
        45 * MIN,
        0,
    )
    assert (f.produced, f.good, f.scrap) == (360.0, 351.0, 9.0)
    # A = 405/480; E = 60 s x 360 / 405 min = 360/405; Q = 351/360; OEE = 360/480 x 0.975.
    assert f.availability == pytest.approx(0.84375)
    assert f.effectiveness == pytest.approx(360 / 405)
    assert f.quality == pytest.approx(0.975)
    assert f.oee == pytest.approx(0.73125)
    losses = pareto(f.losses)
    assert [(x.category, x.reason, x.lost_ms, x.occurrences) for x in losses] == [
        (StateClass.DOWN, "TOOL_BREAKAGE", 45 * MIN, 1),
        (StateClass.SETUP, "setup", 30 * MIN, 1),
    ]


def test_periods_split_exactly_at_the_shift_boundary() -> None:
    # Running 13:00-15:00 across A/B at 14:00; counts every 30 min, one exactly at 14:00.
    periods = UTC_SHIFTS.periods(at(13), at(15), Grouping.SHIFT)
    assert [(p.key, p.start_ms, p.end_ms) for p in periods] == [
        ("2026-11-02/A", at(13), at(14)),
        ("2026-11-02/B", at(14), at(15)),
    ]
    a, b = compute(
        periods,
        state=hold(RUNNING, at(12, 58), at(15), step=7 * 1000),
        labels=CNC,
        classes=CLASSES,
        good=[(at(13), 0.0), (at(13, 30), 30.0), (at(14), 60.0), (at(14, 30), 90.0)],
        bad=[(at(13), 0.0), (at(13, 30), 0.0), (at(14), 1.0), (at(14, 30), 1.0)],
        ideal_cycle_s=60.0,
    )
    assert (a.apt_ms, b.apt_ms) == (HOUR, HOUR)
    # The count that arrived at 14:00 belongs to B: A made 30, B 60.
    assert (a.good, b.good, a.scrap, b.scrap) == (30.0, 60.0, 0.0, 1.0)
    assert a.effectiveness == pytest.approx(0.5)
    assert b.effectiveness == pytest.approx(61 / 60)  # one part more than the ideal rate
    whole = OeeFigures.combine([a, b])
    assert (whole.apt_ms, whole.good) == (2 * HOUR, 90.0)
    # A scrap counter with no sample in a period leaves its quantities unknown, not zero.
    a, _ = compute(
        periods,
        state=hold(RUNNING, at(13), at(15)),
        labels=CNC,
        classes=CLASSES,
        good=[(at(13), 0.0), (at(13, 30), 30.0), (at(14, 30), 90.0)],
        bad=[(at(13), 0.0), (at(14, 30), 0.0)],
    )
    assert (a.good, a.produced, a.quality) == (None, None, None)


def test_a_gap_in_state_data_is_unknown_never_running() -> None:
    state = hold(RUNNING, at(6), at(8)) + hold(RUNNING, at(9), at(10))
    periods = UTC_SHIFTS.periods(at(6), at(10), Grouping.SHIFT)
    [f] = compute(periods, state=state, labels=CNC, classes=CLASSES, max_gap_ms=5 * MIN)
    # The 07:59 sample holds until 08:04; 08:04-09:00 is unknown.
    assert f.unknown_ms == 56 * MIN
    assert f.apt_ms == 240 * MIN - 56 * MIN
    assert f.pbt_ms == 240 * MIN
    assert f.availability == pytest.approx(184 / 240)
    assert f.data_quality.gaps == 1
    assert [(x.reason, x.lost_ms) for x in pareto(f.losses)] == [(NO_DATA, 56 * MIN)]
    # No counters at all: quantities unknown, never zero, so OEE is unknown too.
    assert f.produced is None
    assert f.oee is None


def test_no_data_at_all_is_unknown_and_standing_still_is_zero() -> None:
    [f] = compute(shift_a(), state=[], labels=CNC, classes=CLASSES)
    assert f.unknown_ms == f.pbt_ms == 480 * MIN
    assert f.apt_ms == 0
    assert (f.availability, f.oee) == (None, None)  # nothing known, not zero
    [f] = compute(shift_a(), state=hold(IDLE, at(6), at(14)), labels=CNC, classes=CLASSES)
    assert (f.availability, f.oee) == (0.0, 0.0)  # seen standing still all shift


def test_bad_counter_samples_are_counted_and_do_not_corrupt_the_count() -> None:
    good: list[tuple[int, float | None]] = [
        (at(6), 0.0),
        (at(6, 10), 10.0),
        (at(6, 15), math.nan),  # dropped
        (at(6, 20), 5.0),  # reset: 5 made since
        (at(6, 30), 8.0),
        (at(6, 30), 8.0),  # duplicate
        (at(6, 40), 12.0),  # arrives before 06:35
        (at(6, 35), 10.0),
        (at(6, 45), -3.0),  # a count is never negative: dropped
        (at(6, 50), math.inf),  # dropped
    ]
    state = [*hold(RUNNING, at(6), at(7)), (at(6, 30), 99.0), (at(6, 31), 2.5)]  # bad indices
    periods = UTC_SHIFTS.periods(at(6), at(7), Grouping.SHIFT)
    [f] = compute(
        periods,
        state=state,
        labels=CNC,
        classes=CLASSES,
        good=good,
        bad=[(at(6), 0.0), (at(6, 50), 0.0)],
        ideal_cycle_s=60.0,
    )
    # 0 -> 10 (+10), reset to 5 (+5), 8 (+3), 10 (+2), 12 (+2)
    assert f.good == 22.0
    q = f.data_quality
    assert (q.counter_resets, q.duplicates, q.out_of_order) == (1, 1, 3)  # 2 late state samples
    assert q.invalid == 5  # nan, -3, inf, two bad state indices
    assert f.apt_ms == HOUR  # the bad state samples changed nothing


def test_down_time_reasons_and_the_pareto() -> None:
    state = (
        hold(RUNNING, at(6), at(7))
        + hold(DOWN, at(7), at(7, 20))
        + hold(RUNNING, at(7, 20), at(8))
        + hold(DOWN, at(8), at(8, 10))
        + hold(IDLE, at(8, 10), at(8, 15))
        + hold(DOWN, at(8, 15), at(9, 15))
        + hold(RUNNING, at(9, 15), at(14))
    )
    faults = [
        (
            at(
                6,
                59,
            )
            + 40_000,
            "COOLANT_LOW",
        ),  # 20 s before the machine reports down
        (at(8, 15), "COOLANT_LOW"),
    ]  # the 08:00 stop has no fault event
    [f] = compute(shift_a(), state=state, labels=CNC, classes=CLASSES, faults=faults)
    assert [(x.reason, x.lost_ms, x.occurrences) for x in pareto(f.losses)] == [
        ("COOLANT_LOW", 80 * MIN, 2),
        (UNSPECIFIED, 10 * MIN, 1),
        ("idle", 5 * MIN, 1),
    ]
    assert f.down_ms == 90 * MIN
    assert f.waiting_ms == 5 * MIN


def test_a_stop_across_shifts_counts_in_both() -> None:
    state = (
        hold(RUNNING, at(12), at(13)) + hold(DOWN, at(13), at(15)) + hold(RUNNING, at(15), at(16))
    )
    periods = UTC_SHIFTS.periods(at(12), at(16), Grouping.SHIFT)
    a, b = compute(periods, state=state, labels=CNC, classes=CLASSES, faults=[(at(13), "JAM")])
    assert (a.down_ms, b.down_ms) == (HOUR, HOUR)
    assert a.losses[(StateClass.DOWN, "JAM")].occurrences == 1
    assert b.losses[(StateClass.DOWN, "JAM")].occurrences == 1


def test_planned_downtime_is_outside_planned_busy_time() -> None:
    classes = dict(CLASSES, idle=StateClass.PLANNED_DOWN)  # "idle" meaning: no order planned
    state = hold(RUNNING, at(6), at(10)) + hold(IDLE, at(10), at(14))
    [f] = compute(shift_a(), state=state, labels=CNC, classes=classes)
    assert (f.planned_ms, f.planned_down_ms, f.pbt_ms) == (480 * MIN, 240 * MIN, 240 * MIN)
    assert f.availability == 1.0


def test_a_group_is_a_ratio_of_sums() -> None:
    periods = shift_a()
    fast = compute(
        periods,
        state=hold(RUNNING, at(6), at(14)),
        labels=CNC,
        classes=CLASSES,
        good=[(at(6), 0.0), (at(13, 59), 480.0)],
        bad=[(at(6), 0.0), (at(13, 59), 0.0)],
        ideal_cycle_s=60.0,
    )[0]
    half = compute(
        periods,
        state=hold(RUNNING, at(6), at(10)) + hold(DOWN, at(10), at(14)),
        labels=CNC,
        classes=CLASSES,
        good=[(at(6), 0.0), (at(13, 59), 100.0)],
        bad=[(at(6), 0.0), (at(13, 59), 20.0)],
        ideal_cycle_s=60.0,
    )[0]
    assert fast.oee == pytest.approx(1.0)
    assert half.oee == pytest.approx(0.5 * 0.5 * (100 / 120))
    group = OeeFigures.combine([fast, half])
    assert group.machines == 2
    assert group.availability == pytest.approx(720 / 960)
    assert group.effectiveness == pytest.approx(600 / 720)
    assert group.quality == pytest.approx(580 / 600)
    assert group.oee == pytest.approx(720 / 960 * 600 / 720 * 580 / 600)


def test_unknown_planned_run_time_leaves_effectiveness_unknown() -> None:
    [f] = compute(
        shift_a(),
        state=hold(RUNNING, at(6), at(14)),
        labels=CNC,
        classes=CLASSES,
        good=[(at(6), 0.0), (at(13, 59), 10.0)],
        bad=None,
    )
    assert f.scrap == 0.0  # a machine without a scrap counter
    assert f.quality == 1.0
    assert f.effectiveness is None
    assert f.oee is None


# -- the calendar --------------------------------------------------------------------------------


def test_a_day_is_the_union_of_its_shifts_in_the_site_zone() -> None:
    shanghai = ShiftCalendar.with_zone("Asia/Shanghai")
    # 2026-11-02 06:00 in Shanghai is 2026-11-01 22:00 UTC.
    [day] = shanghai.periods(at(22, day=1), at(22, day=2), Grouping.DAY)
    assert (day.key, day.start_ms, day.end_ms, day.planned_ms) == (
        "2026-11-02",
        at(22, day=1),
        at(22, day=2),
        24 * HOUR,
    )
    shifts = shanghai.periods(at(22, day=1), at(22, day=2), Grouping.SHIFT)
    assert [p.key for p in shifts] == ["2026-11-02/A", "2026-11-02/B", "2026-11-02/C"]
    # The C shift starting at 22:00 local on the 2nd ends 06:00 on the 3rd: still the 2nd's.
    assert shifts[2].start_ms == at(14, day=2)


def test_daylight_saving_makes_the_night_shift_longer() -> None:
    berlin = ShiftCalendar.with_zone("Europe/Berlin")
    # Clocks go back from 03:00 to 02:00 on Sunday 2026-10-25: the night shift of the 24th is 9 h.
    start = int(datetime(2026, 10, 24, 12, tzinfo=UTC).timestamp() * 1000)
    periods = berlin.periods(start, start + 24 * HOUR, Grouping.SHIFT)
    night = next(p for p in periods if p.key == "2026-10-24/C")
    assert night.end_ms - night.start_ms == 9 * HOUR
    assert periods[0].day == date(2026, 10, 24)


def test_shifts_that_do_not_fit_are_refused() -> None:
    with pytest.raises(ShiftCalendarError):
        ShiftCalendar(shifts=(Shift("A", time(6), 8), Shift("B", time(13), 8)))
    with pytest.raises(ShiftCalendarError):
        ShiftCalendar(timezone="Mars/Olympus")
    with pytest.raises(ShiftCalendarError):
        ShiftCalendar(shifts=())
    # Two 10-hour shifts leave a 4-hour unplanned gap: that time counts nowhere.
    two = ShiftCalendar(shifts=(Shift("day", time(7), 10), Shift("night", time(19), 8)))
    [day] = two.periods(at(7), at(7, day=3), Grouping.DAY)
    assert day.planned_ms == 18 * HOUR


def test_config_file(tmp_path: Path) -> None:
    path = tmp_path / "oee.toml"
    assert OeeConfig.load(path) == OeeConfig()
    path.write_text(
        'max_gap_s = 120\n[ideal_cycle_s]\ncnc = 45\n"cnc-7" = 90\n'
        '[[sites."acme/p1".shifts]]\nname = "day"\nstart = "08:00"\nhours = 12\n'
    )
    config = OeeConfig.load(path)
    assert config.max_gap_s == 120
    assert config.cycle_of("cnc-7", "cnc", {}) == 90
    assert config.cycle_of("cnc-8", "cnc", {}) == 45
    assert config.cycle_of("cnc-8", "cnc", {"ideal_cycle_s": "30"}) == 30
    assert config.cycle_of("line-1", "line", {}) == 1.0
    assert config.shifts_of("acme", "p1") == (Shift("day", time(8), 12.0),)
    path.write_text("[ideal_cycle_s]\ncnc = -1\n")
    with pytest.raises(OeeConfigError):
        OeeConfig.load(path)


# -- the service over a real store ---------------------------------------------------------------


@pytest.fixture(params=["duckdb", "postgres"])
async def telemetry_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[TimeSeriesStore]:
    """The embedded DuckDB store and the real PostgreSQL one."""
    backend: TimeSeriesStore
    if request.param == "duckdb":
        backend = DuckDBStore(path=tmp_path / "telemetry.duckdb")
    else:
        from tiangong.platform.tsdb.postgres_store import PostgresStore  # noqa: PLC0415

        backend = PostgresStore(dsn=request.getfixturevalue("pg_database"))
    await backend.open()
    yield backend
    await backend.close()


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[DeviceRegistry]:
    db = Database(url=sqlite_url(tmp_path / "meta.sqlite3"))
    await db.open()
    registry = DeviceRegistry(db)
    await registry.refresh()
    await registry.create_tenant(Tenant(id="acme", name="Acme"))
    await registry.create_tenant(Tenant(id="other", name="Other"))
    await registry.create_site(
        Site(tenant_id="acme", id="sz", name="Suzhou", timezone="Asia/Shanghai")
    )
    await registry.create_site(Site(tenant_id="other", id="sz", name="Other"))
    for tenant in ("acme", "other"):
        for kind in ("cnc", "line", "pump"):
            await registry.put_thing_model(tenant, THING_MODELS[kind])
    for device, kind in (("cnc-1", "cnc"), ("line-1", "line"), ("pump-1", "pump")):
        await registry.register_device(
            tenant_id="acme", site_id="sz", device_id=device, model_id=kind
        )
    await registry.register_device(
        tenant_id="other", site_id="sz", device_id="cnc-9", model_id="cnc"
    )
    yield registry
    await db.close()


async def write(
    store: TimeSeriesStore, device: str, metric: str, points: list[tuple[int, float]]
) -> None:
    [sid] = await store.series_ids([SeriesKey("acme", device, metric)])
    await store.write(
        PointBatch(
            series_id=np.full(len(points), sid, dtype=np.int32),
            ts=np.array([t for t, _ in points], dtype=np.int64),
            value=np.array([v for _, v in points], dtype=np.float64),
        )
    )


def local(hh: int, mm: int = 0, *, day: int = 2) -> int:
    """Epoch ms of 2026-11-<day> hh:mm in Shanghai (UTC+8)."""
    return at(hh, mm, day=day) - 8 * HOUR


async def test_the_service_reads_a_real_store(
    telemetry_store: TimeSeriesStore, registry: DeviceRegistry
) -> None:
    store = telemetry_store
    # The CNC's shift A in Suzhou (06:00-14:00 +08:00): the hand-computed case above, written
    # in two out-of-order batches with a duplicate and a counter reset, state every 10 s.
    ten_s = 10_000
    state = (
        hold(SETUP, local(6), local(6, 30), ten_s)
        + hold(RUNNING, local(6, 30), local(10), ten_s)
        + hold(DOWN, local(10), local(10, 45), ten_s)
        + hold(RUNNING, local(10, 45), local(14), ten_s)
    )
    await write(store, "cnc-1", "state", state[len(state) // 2 :])  # late half first
    await write(store, "cnc-1", "state", state[: len(state) // 2 + 1])  # one duplicate
    await write(
        store,
        "cnc-1",
        "parts_good",
        [(local(5, 59), 1000.0), (local(9), 1200.0), (local(9, 1), 0.0), (local(13, 59), 151.0)],
    )
    await write(store, "cnc-1", "parts_bad", [(local(5, 59), 20.0), (local(13, 59), 29.0)])
    await write(store, "pump-1", "state", [(local(7), 0.0)])  # no profile: left out
    await registry.record_events(
        [
            {
                "tenant_id": "acme",
                "site_id": "sz",
                "device_id": "cnc-1",
                "ts": datetime.fromtimestamp((local(10) + 3000) / 1000, UTC),
                "event": "fault",
                "severity": "major",
                "data": {"code": "TOOL_BREAKAGE", "expected_downtime_s": 2700},
            }
        ]
    )
    service = OeeService(
        registry=registry, store=store, db=registry.db, config=OeeConfig(ideal_cycle_s={"cnc": 60})
    )
    report = await service.report(
        "acme", start_ms=local(6), end_ms=local(14), by=Grouping.SHIFT, device_id="cnc-1"
    )
    [machine] = report.machines
    [f] = machine.periods
    assert report.timezone == "Asia/Shanghai"
    assert [p.key for p in report.periods] == ["2026-11-02/A"]
    assert (f.apt_ms, f.setup_ms, f.down_ms, f.unknown_ms) == (405 * MIN, 30 * MIN, 45 * MIN, 0)
    # 1000 -> 1200 (+200), reset to 0 (+0), 151 (+151): 351 good, 9 scrap, as by hand.
    assert (f.good, f.scrap) == (351.0, 9.0)
    assert f.oee == pytest.approx(0.73125)
    assert f.data_quality.counter_resets == 1
    assert pareto(f.losses)[0].reason == "TOOL_BREAKAGE"

    site = await service.report(
        "acme", start_ms=local(6), end_ms=local(6, day=3), by=Grouping.DAY, site_id="sz"
    )
    assert sorted(m.device.id for m in site.machines) == ["cnc-1", "line-1"]
    [day] = site.group
    line = next(m for m in site.machines if m.device.id == "line-1")
    assert line.total.unknown_ms == 24 * HOUR  # no data from the line: all unknown
    assert day.pbt_ms == 2 * 24 * HOUR
    # The last sample (13:59:50, running) holds for max_gap (5 min): until 14:04:50.
    assert day.apt_ms == 405 * MIN + 290_000

    # The indicator: machine-days (UTC days) weighted by planned busy time. The 2 hours of
    # 1 November (UTC) saw no count arrive, so that machine-day's OEE is unknown and left out;
    # the line is unknown all along. What is left: the CNC's 22 hours of 2 November.
    weighted, hours = await service.indicator("acme", local(6), local(6, day=3))
    utc_day = await service.report(
        "acme", start_ms=at(0), end_ms=local(6, day=3), by=Grouping.DAY, site_id="sz"
    )
    cnc_day = next(m for m in utc_day.machines if m.device.id == "cnc-1").total
    assert cnc_day.oee is not None
    assert hours == pytest.approx(22.0)
    assert weighted == pytest.approx(cnc_day.oee * 22.0)
    assert await service.indicator("acme", local(6), local(6, day=3)) == (weighted, hours)

    with pytest.raises(NotFoundError):
        await service.report("acme", start_ms=local(6), end_ms=local(14), device_id="cnc-9")


# -- through the platform: MQTT ingest, the API, the enterprise indicator -----------------------


@pytest.mark.mosquitto
async def test_the_api_and_the_indicator_over_ingested_telemetry(
    tmp_path: Path, shared_mosquitto: MosquittoProcess
) -> None:
    async with running_platform(tmp_path, mqtt_port=shared_mosquitto.port) as env:
        registry = env.platform.registry
        await registry.put_thing_model("acme", THING_MODELS["cnc"])
        _, env.secrets["cnc-1"] = await registry.register_device(
            tenant_id="acme",
            site_id="p1",
            device_id="cnc-1",
            model_id="cnc",
            attributes={"ideal_cycle_s": "30"},
        )
        # 20 minutes ending a minute ago: running, 10 minutes down on a jam, running again.
        now = int(datetime.now(UTC).timestamp() * 1000)
        start = (now - 21 * MIN) // MIN * MIN
        stamps = list(range(start, start + 20 * MIN, 10_000))
        labels = ["running" if not 5 * MIN <= t - start < 15 * MIN else "down" for t in stamps]
        good = [
            sum(1 for s in stamps[: i + 1] if (s - start) % MIN == 0) for i in range(len(stamps))
        ]
        payload = {
            "ts": stamps,
            "values": {"state": labels, "parts_good": good, "parts_bad": [0] * len(stamps)},
        }
        topic = DeviceTopic.build("acme", "p1", "cnc-1", Channel.TELEMETRY)
        events = DeviceTopic.build("acme", "p1", "cnc-1", Channel.EVENTS)
        async with env.client("cnc-1") as device:
            await device.publish(topic, orjson.dumps(payload), qos=1)
            fault = {"event": "fault", "ts": start + 5 * MIN, "data": {"code": "JAM"}}
            await device.publish(events, orjson.dumps(fault), qos=1)

        async def stored() -> bool:
            events_seen = await registry.list_events("acme", device_id="cnc-1")
            return await env.stored() >= 3 * len(stamps) and bool(events_seen)

        await env.wait_for(stored)
        answer = await env.api.get(
            "/api/v1/apps/oee", params={"device": "cnc-1", "from": str(start), "by": "day"}
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        [machine] = body["machines"]
        assert machine["ideal_cycle_s"] == 30
        total = machine["total"]
        assert total["down_s"] == 600
        assert total["good"] == 19  # 20 parts counted; the first one has no count before it
        assert body["timezone"] == "UTC"

        pareto = await env.api.get(
            "/api/v1/apps/oee/downtime", params={"site": "p1", "tenant": "acme", "from": str(start)}
        )
        assert pareto.status_code == 200, pareto.text
        losses = pareto.json()["losses"]
        assert losses[0]["reason"] == "JAM"
        assert losses[0]["lost_s"] == 600

        for params in (
            {"device": "cnc-1", "site": "p1"},  # one or the other
            {},
            {"device": "cnc-1", "by": "week"},
            {"device": "cnc-1", "from": "now", "to": "-1h"},
        ):
            refused = await env.api.get("/api/v1/apps/oee", params=params)
            assert refused.status_code == 422, (params, refused.text)
        missing = await env.api.get("/api/v1/apps/oee", params={"device": "no-such-device"})
        assert missing.status_code == 404

        # The enterprise indicator: measured now, weighted by planned busy time.
        profile = EnterpriseProfile(
            enterprise_id="91320500MA1TEST00X",
            name="Acme",
            tenant_id="acme",
            region="320500",
            industry="C34",
        )
        day_start = int(period_bounds(Period.DAY, datetime.now(UTC))[0].timestamp() * 1000)

        async def indicator_now() -> tuple[float, float]:
            return await env.platform.oee.indicator(
                "acme", day_start, int(datetime.now(UTC).timestamp() * 1000)
            )

        # The day so far grows while the report is made: its planned time lies between the
        # figures computed just before and just after.
        _, hours_before = await indicator_now()
        report = await IndicatorCollector(env.platform, profile, standard_catalog()).collect(
            Period.DAY
        )
        weighted, hours = await indicator_now()
        oee = report.measures["OEE"]
        assert hours_before * (1 - 1e-9) <= oee.denominator <= hours * (1 + 1e-9)
        assert oee.numerator / oee.denominator == pytest.approx(weighted / hours, rel=1e-2)
        assert 0 < oee.numerator / oee.denominator < 1


async def test_raw_points_are_read_past_the_store_row_limit(
    telemetry_store: TimeSeriesStore, registry: DeviceRegistry
) -> None:
    # More points than one raw query returns, with two sharing the timestamp at a page edge.
    n = RAW_LIMIT + 1500
    stamps = [at(6) + i * 100 for i in range(n)]
    stamps[RAW_LIMIT] = stamps[RAW_LIMIT - 1]
    await write(telemetry_store, "cnc-1", "state", [(t, float(RUNNING)) for t in stamps])
    [sid] = await telemetry_store.series_ids([SeriesKey("acme", "cnc-1", "state")])
    service = OeeService(registry=registry, store=telemetry_store, db=registry.db)
    points = await service._raw(sid, at(6), at(9))
    assert len(points) == n
    assert [t for t, _ in points] == sorted(stamps)
