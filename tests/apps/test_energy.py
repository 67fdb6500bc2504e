"""The energy app: the pure core on hand-computed cases, and the service over real stores."""

from __future__ import annotations

import itertools
import json
import random
import zoneinfo
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from tests.platform.conftest import (
    registry_platform,
    store,  # noqa: F401 - the per-backend store fixture
)
from tiangong.apps.energy.anomalies import (
    AnomalyKind,
    IdleRule,
    above_baseline,
    idle_consumption,
    state_spans,
)
from tiangong.apps.energy.core import (
    Gap,
    Granularity,
    Source,
    bucket_edges,
    counter_profile,
    power_profile,
    summarize,
    total,
)
from tiangong.apps.energy.errors import EnergyError, EnergyQueryError, TariffError
from tiangong.apps.energy.service import EnergyService
from tiangong.apps.energy.tariff import (
    CHINA_INDUSTRIAL_DEFAULT,
    Tariff,
    TariffBand,
    TariffBook,
    TouPeriod,
)
from tiangong.data.catalog import kwh_to_tce
from tiangong.platform.database import Database
from tiangong.platform.errors import NotFoundError
from tiangong.platform.model import DataType, PropertySpec, Site, Tenant, ThingModel
from tiangong.platform.registry import DeviceRegistry
from tiangong.platform.tsdb.base import PointBatch, SeriesKey, TimeSeriesStore

M = 60_000
H = 3_600_000
UTC_ZONE = zoneinfo.ZoneInfo("UTC")
SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
DAY0 = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp() * 1000)  # a Monday, 00:00 UTC

#: valley 00-08, peak 08-12, flat 12-24 (UTC): round prices for hand computation.
SIMPLE = Tariff(
    name="simple",
    timezone="UTC",
    bands=(
        TariffBand(0, 480, TouPeriod.VALLEY),
        TariffBand(480, 720, TouPeriod.PEAK),
        TariffBand(720, 1440, TouPeriod.FLAT),
    ),
    prices={TouPeriod.VALLEY: 0.3, TouPeriod.PEAK: 1.0, TouPeriod.FLAT: 0.6},
)


def at(hh: int, mm: int = 0) -> int:
    return DAY0 + hh * H + mm * M


def band(figures, period: TouPeriod) -> float:
    return next(b.kwh for b in figures.bands if b.period is period)


# -- counters ------------------------------------------------------------------------------------


def test_a_reset_and_band_boundaries_by_hand() -> None:
    # 07:00 100, 07:30 110, 08:30 130, 09:00 5 (reset: +5 from zero), 09:30 15.
    ts = [at(7), at(7, 30), at(8, 30), at(9), at(9, 30)]
    profile = counter_profile(ts, [100, 110, 130, 5, 15], gap_ms=2 * H)
    assert profile.quality.resets == 1
    assert [(r.before, r.after) for r in profile.resets] == [(130.0, 5.0)]
    edges = bucket_edges(at(7), at(10), Granularity.HOUR, UTC_ZONE)
    buckets = summarize([profile], edges, SIMPLE)
    # 07:30-08:30 is 20 kWh, split 10/10 at the 08:00 band boundary.
    assert [b.kwh for b in buckets] == pytest.approx([20.0, 15.0, 10.0])
    whole = total(buckets, SIMPLE)
    assert whole is not None
    assert whole.kwh == pytest.approx(45.0)
    assert band(whole, TouPeriod.VALLEY) == pytest.approx(20.0)
    assert band(whole, TouPeriod.PEAK) == pytest.approx(25.0)
    assert band(whole, TouPeriod.FLAT) == 0.0
    assert whole.cost == pytest.approx(20 * 0.3 + 25 * 1.0)
    assert whole.tce == pytest.approx(kwh_to_tce(45.0))
    assert whole.estimated_kwh == 0.0


def test_a_gap_is_reported_and_its_increase_spread_as_estimated() -> None:
    # 10:00 0, 10:10 5, (no reading for an hour) 11:10 35, 11:20 40; asked until 12:00.
    ts = [at(10), at(10, 10), at(11, 10), at(11, 20)]
    profile = counter_profile(ts, [0, 5, 35, 40])
    assert profile.gaps == (Gap(at(10, 10), at(11, 10), 30.0),)
    assert profile.quality.gaps == 1
    assert profile.quality.gap_ms == H
    buckets = summarize([profile], bucket_edges(at(10), at(12), Granularity.HOUR, UTC_ZONE), SIMPLE)
    # 50 of the gap's 60 minutes fall in the 10:00 hour: 25 of its 30 kWh.
    assert [b.kwh for b in buckets] == pytest.approx([30.0, 10.0])
    assert [b.estimated_kwh for b in buckets] == pytest.approx([25.0, 5.0])
    # A counter's gap is covered (its consumption is known); after 11:20 nothing is.
    assert [b.coverage for b in buckets] == pytest.approx([1.0, 1 / 3])
    # The 40 minutes after the last reading are a gap of unknown consumption.
    assert profile.gaps_within(at(10), at(12)) == [
        Gap(at(10, 10), at(11, 10), 30.0),
        Gap(at(11, 20), at(12), None),
    ]
    assert not profile.complete(at(10), at(11))
    assert profile.complete(at(11, 10), at(11, 20))


def test_duplicates_out_of_order_and_invalid_readings_do_not_change_a_figure() -> None:
    ts = [at(0, 5 * k) for k in range(25)]
    values = [1000.0 + 2.5 * k for k in range(25)]
    clean = counter_profile(ts, values)
    rng = random.Random(7)
    dirty = list(zip(ts, values, strict=True))
    dirty += [(ts[3], values[3]), (ts[10], values[10]), (ts[10], values[10] - 0.5)]
    dirty += [(at(0, 7), float("nan")), (at(0, 8), float("inf")), (at(0, 9), -4.0)]
    rng.shuffle(dirty)
    messy = counter_profile([t for t, _ in dirty], [v for _, v in dirty])
    assert messy.quality.duplicates == 3
    assert messy.quality.invalid == 3
    assert messy.quality.out_of_order > 0
    assert messy.quality.used == 25
    edges = bucket_edges(at(0), at(2), Granularity.HOUR, UTC_ZONE)
    assert [b.kwh for b in summarize([messy], edges, SIMPLE)] == pytest.approx(
        [b.kwh for b in summarize([clean], edges, SIMPLE)]
    )
    assert messy.between(at(0), at(2)) == pytest.approx(60.0)


def test_a_single_low_reading_is_a_glitch_not_a_reset() -> None:
    profile = counter_profile(
        [at(0), at(0, 1), at(0, 2), at(0, 3), at(0, 4)], [100, 101, 3, 102, 103]
    )
    assert profile.quality.glitches == 1
    assert profile.quality.resets == 0
    assert profile.between(at(0), at(1)) == pytest.approx(3.0)


def test_a_rollover_past_the_modulus() -> None:
    profile = counter_profile([at(0), at(0, 1), at(0, 2)], [990, 998, 4], rollover=1000)
    assert profile.quality.rollovers == 1
    assert profile.quality.resets == 0
    assert profile.between(at(0), at(1)) == pytest.approx(14.0)
    # Without a known modulus the same readings are a reset from zero: 8 + 4.
    assert counter_profile([at(0), at(0, 1), at(0, 2)], [990, 998, 4]).between(
        at(0), at(1)
    ) == pytest.approx(12.0)


def test_nothing_is_invented_outside_the_readings() -> None:
    profile = counter_profile([at(1), at(2)], [10, 20])
    assert profile.between(at(0), at(1)) == 0.0
    assert profile.between(at(2), at(3)) == 0.0
    assert profile.between(at(0), at(3)) == pytest.approx(10.0)
    assert counter_profile([at(1)], [10]).between(at(0), at(3)) == 0.0
    assert counter_profile([], []).gaps_within(at(0), at(1)) == [Gap(at(0), at(1), None)]


# -- power -----------------------------------------------------------------------------------------


def test_power_is_integrated_and_a_gap_counts_nothing() -> None:
    ts = [at(0), at(0, 30), at(1), at(2), at(2, 30)]
    profile = power_profile(ts, [10, 10, 20, 20, -5], gap_ms=45 * M)
    assert profile.source is Source.POWER
    assert profile.quality.negative_power == 1
    # 5 + 7.5 kWh, nothing across 01:00-02:00 (gap), then (20 + 0) / 2 * 0.5 h.
    assert profile.between(at(0), at(3)) == pytest.approx(5 + 7.5 + 5)
    assert profile.gaps == (Gap(at(1), at(2), None),)
    [bucket] = summarize([profile], [at(0), at(4)], SIMPLE)
    assert bucket.coverage == pytest.approx(1.5 / 4)  # 00:00-01:00 and 02:00-02:30 of 4 h


# -- tariffs and buckets ---------------------------------------------------------------------------


def test_the_default_tariff_splits_exactly_at_local_band_boundaries() -> None:
    # 07:00-09:00 Shanghai time = 23:00-01:00 UTC; 48 kWh evenly.
    start = int(datetime(2026, 3, 2, 7, tzinfo=SHANGHAI).timestamp() * 1000)
    profile = counter_profile([start + k * 5 * M for k in range(25)], [2.0 * k for k in range(25)])
    edges = bucket_edges(start, start + 2 * H, Granularity.DAY, SHANGHAI)
    [day] = summarize([profile], edges, CHINA_INDUSTRIAL_DEFAULT)
    assert band(day, TouPeriod.VALLEY) == pytest.approx(24.0)
    assert band(day, TouPeriod.PEAK) == pytest.approx(24.0)
    assert day.cost == pytest.approx(24 * 0.30 + 24 * 1.10)


def test_periods_between_cover_the_range_once() -> None:
    start = int(datetime(2026, 3, 1, 22, 30, tzinfo=SHANGHAI).timestamp() * 1000)
    periods = CHINA_INDUSTRIAL_DEFAULT.periods_between(start, start + 26 * H)
    assert periods[0][0] == start
    assert periods[-1][1] == start + 26 * H
    assert all(a[1] == b[0] for a, b in itertools.pairwise(periods))
    assert [p for _, _, p in periods][:4] == [
        TouPeriod.FLAT,
        TouPeriod.VALLEY,
        TouPeriod.PEAK,
        TouPeriod.FLAT,
    ]
    eight = int(datetime(2026, 3, 2, 8, tzinfo=SHANGHAI).timestamp() * 1000)
    assert (periods[1][1], periods[2][0]) == (eight, eight)


def test_local_month_buckets_and_partial_ends() -> None:
    start = int(datetime(2026, 1, 31, 12, tzinfo=SHANGHAI).timestamp() * 1000)
    end = int(datetime(2026, 2, 2, tzinfo=SHANGHAI).timestamp() * 1000)
    february = int(datetime(2026, 2, 1, tzinfo=SHANGHAI).timestamp() * 1000)
    assert bucket_edges(start, end, Granularity.MONTH, SHANGHAI) == [start, february, end]
    assert len(bucket_edges(start, end, Granularity.DAY, SHANGHAI)) == 3
    assert len(bucket_edges(start, end, Granularity.HOUR, SHANGHAI)) == 37
    with pytest.raises(EnergyQueryError):
        bucket_edges(end, start, Granularity.DAY, SHANGHAI)


def test_days_add_up_to_the_month() -> None:
    rng = random.Random(3)
    ts = sorted(DAY0 + rng.randrange(0, 10 * 24 * H) for _ in range(3000))
    values = np.cumsum([rng.uniform(0, 3) for _ in ts])
    profile = counter_profile(ts, values)
    days = summarize(
        [profile], bucket_edges(DAY0, DAY0 + 10 * 24 * H, Granularity.DAY, SHANGHAI), SIMPLE
    )
    month = total(days, SIMPLE)
    assert month is not None
    assert month.kwh == pytest.approx(profile.between(DAY0, DAY0 + 10 * 24 * H))
    assert sum(b.kwh for b in month.bands) == pytest.approx(month.kwh)
    assert month.cost == pytest.approx(sum(d.cost for d in days))


def test_energy_per_good_unit_with_a_counter_reset() -> None:
    ts = [at(6, m) for m in range(0, 121)]
    good = [m if m < 60 else m - 59 for m in range(0, 121)]  # operator reset at 07:00
    output = counter_profile(ts, good)
    energy = counter_profile([at(6), at(8)], [0, 240])
    [bucket] = summarize([energy], [at(6), at(8)], SIMPLE, output=[output])
    assert bucket.good_units == pytest.approx(120.0)
    assert bucket.kwh_per_unit == pytest.approx(2.0)
    [none] = summarize([energy], [at(6), at(8)], SIMPLE, output=[])
    assert none.good_units is None
    assert none.kwh_per_unit is None


@pytest.mark.parametrize(
    "doc",
    [
        {"bands": [{"from": "00:00", "to": "12:00", "period": "peak"}], "prices": {"peak": 1}},
        {
            "bands": [
                {"from": "00:00", "to": "13:00", "period": "peak"},
                {"from": "12:00", "to": "24:00", "period": "flat"},
            ],
            "prices": {"peak": 1, "flat": 0.5},
        },
        {"bands": [{"from": "00:00", "to": "24:00", "period": "peak"}], "prices": {}},
        {"bands": [{"from": "00:00", "to": "24:00", "period": "peak"}], "prices": {"peak": -1}},
        {
            "timezone": "Mars/Olympus",
            "bands": [{"from": "00:00", "to": "24:00", "period": "peak"}],
            "prices": {"peak": 1},
        },
        {"bands": [{"from": "8am", "to": "24:00", "period": "peak"}], "prices": {"peak": 1}},
        {"bands": [{"from": "00:00", "to": "24:00", "period": "peak"}], "prices": {"peak": "inf"}},
        {
            "name": "x" * 201,
            "bands": [{"from": "00:00", "to": "24:00", "period": "peak"}],
            "prices": {"peak": 1},
        },
        {
            "currency": None,
            "bands": [{"from": "00:00", "to": "24:00", "period": "peak"}],
            "prices": {"peak": 1},
        },
    ],
)
def test_invalid_tariffs_are_refused(doc: dict[str, object]) -> None:
    with pytest.raises(TariffError):
        Tariff.from_json(doc)


def test_a_tariff_round_trips_and_a_book_picks_per_site() -> None:
    assert Tariff.from_json(CHINA_INDUSTRIAL_DEFAULT.to_json()) == CHINA_INDUSTRIAL_DEFAULT
    book = TariffBook.from_json(
        {"sites": [{"tenant": "t", "site": "s", "tariff": SIMPLE.to_json()}]}
    )
    assert book.for_site("t", "s") == SIMPLE
    assert book.for_site("t", "other") == CHINA_INDUSTRIAL_DEFAULT
    assert issubclass(TariffError, EnergyError)


def test_tariffs_load_from_the_data_directory(tmp_path: Path) -> None:
    path = tmp_path / "tariffs.json"
    assert TariffBook.load(path).default == CHINA_INDUSTRIAL_DEFAULT  # no file: the default
    path.write_text(json.dumps({"default": SIMPLE.to_json()}))
    assert TariffBook.load(path).for_site("t", "s") == SIMPLE
    path.write_text("{not json")
    with pytest.raises(TariffError, match="not JSON"):
        TariffBook.load(path)
    path.write_text(json.dumps({"sites": [{"tenant": "t"}]}))
    with pytest.raises(TariffError, match="lacks"):
        TariffBook.load(path)


async def test_a_site_tariff_is_set_through_the_api_and_kept(tmp_path: Path) -> None:
    async with registry_platform(tmp_path) as env:
        url = "/api/v1/apps/energy/tariffs/p1?tenant=acme"  # the platform admin names it
        kept = env.platform.settings.data_dir / "tariffs.json"
        assert (await env.api.get(url)).json() == CHINA_INDUSTRIAL_DEFAULT.to_json()

        answer = await env.api.put(url, json=SIMPLE.to_json())
        assert answer.status_code == 200, answer.text
        assert Tariff.from_json(answer.json()) == SIMPLE
        assert Tariff.from_json((await env.api.get(url)).json()) == SIMPLE
        assert TariffBook.load(kept).for_site("acme", "p1") == SIMPLE  # what a restart reads
        assert TariffBook.load(kept).for_site("acme", "p2") == CHINA_INDUSTRIAL_DEFAULT
        report = (
            await env.api.get("/api/v1/apps/energy", params={"site": "p1", "tenant": "acme"})
        ).json()
        assert report["tariff"] == SIMPLE.name  # consumption is priced by it

        # Overlapping bands: refused with the reason, nothing changed.
        overlapping = {
            "bands": [
                {"from": "00:00", "to": "13:00", "period": "peak"},
                {"from": "12:00", "to": "24:00", "period": "flat"},
            ],
            "prices": {"peak": 1, "flat": 0.5},
        }
        refused = await env.api.put(url, json=overlapping)
        assert refused.status_code == 422
        assert "overlap" in refused.text or "12:00" in refused.text, refused.text
        assert (await env.api.put(url, json=["not", "a", "tariff"])).status_code == 422
        nowhere = "/api/v1/apps/energy/tariffs/nowhere?tenant=acme"
        assert (await env.api.put(nowhere, json=SIMPLE.to_json())).status_code == 404
        assert Tariff.from_json((await env.api.get(url)).json()) == SIMPLE

        # The file cannot be written: 503, and the book in memory is left as it was.
        env.platform.energy.tariffs_path = tmp_path / "not-a-directory" / "tariffs.json"
        (tmp_path / "not-a-directory").write_text("")
        failed = await env.api.delete(url)
        assert failed.status_code == 503
        assert "cannot write" in failed.json()["detail"]
        assert Tariff.from_json((await env.api.get(url)).json()) == SIMPLE
        env.platform.energy.tariffs_path = kept

        assert (await env.api.delete(url)).status_code == 204
        assert (await env.api.get(url)).json() == CHINA_INDUSTRIAL_DEFAULT.to_json()
        assert TariffBook.load(kept).sites == {}
        changes = await env.platform.audit.entries(limit=100)
        # Every change and every refused attempt is in the audit trail, with who and the outcome.
        tariff_changes = [
            (e.action.split()[0], e.outcome)
            for e in changes
            if e.action.endswith("/tariffs/{site_id}") and e.target == "site_id=p1"
        ]
        assert sorted(tariff_changes) == [
            ("DELETE", "204"),
            ("DELETE", "503"),
            ("PUT", "200"),
            ("PUT", "422"),
            ("PUT", "422"),
        ]


# -- anomalies -------------------------------------------------------------------------------------


def test_an_hour_far_above_its_own_baseline() -> None:
    days = [DAY0 + d * 24 * H + 10 * H for d in range(7)]  # Mon..Sun at 10:00
    kwh = [10, 11, 9, 10, 30, 40, 10]
    found = above_baseline(days, kwh, [True] * 7, judge_from_ms=days[4], zone=UTC_ZONE)
    # Friday: median 10, MAD 0.5 -> limit max(12.97, 15, 10.5) = 15. Saturday has no weekend
    # history and Sunday's 10 is compared with Saturday only: neither is judged.
    assert [(a.start_ms, a.kwh, a.expected_kwh) for a in found] == [(days[4], 30, 10)]
    assert found[0].kind is AnomalyKind.ABOVE_BASELINE
    assert (
        above_baseline(
            days, [10, 11, 9, 10, 14, 40, 10], [True] * 7, judge_from_ms=days[4], zone=UTC_ZONE
        )
        == []
    )
    # Incomplete hours are neither judged nor references (two references are too few).
    assert (
        above_baseline(
            days,
            kwh,
            [True, False, False, True, True, True, True],
            judge_from_ms=days[4],
            zone=UTC_ZONE,
        )
        == []
    )


def test_consuming_while_idle() -> None:
    minutes = range(0, 121)
    power = power_profile([at(6, m) for m in minutes], [10.0 if m < 60 else 5.0 for m in minutes])
    spans = state_spans(
        [at(6, m) for m in range(0, 121, 5)],
        ["running" if m < 60 else "idle" for m in range(0, 121, 5)],
        until_ms=at(8),
    )
    assert [(s.state, s.start_ms, s.end_ms) for s in spans] == [
        ("running", at(6), at(7)),
        ("idle", at(7), at(8)),
    ]
    [found] = idle_consumption(power, spans)
    assert found.kind is AnomalyKind.IDLE_CONSUMPTION
    assert found.kwh == pytest.approx(5.0)
    # 25 % of the running mean for 1 h; 06:59-07:00 is a 10 -> 5 kW trapezoid.
    assert found.expected_kwh == pytest.approx(0.25 * (59 * 10 + 7.5) / 60)
    assert idle_consumption(power, spans, IdleRule(share_of_running=0.6)) == []
    # A state is not assumed beyond the gap threshold.
    assert state_spans([at(0)], ["idle"], until_ms=at(5))[0].end_ms == at(0, 15)


# -- the service over a real store -----------------------------------------------------------------

METER = ThingModel(
    id="meter",
    name="Meter",
    properties=[
        PropertySpec(id="active_power", type=DataType.FLOAT, unit="kW"),
        PropertySpec(id="energy", type=DataType.FLOAT, unit="kWh", min=0),
    ],
)
CNC = ThingModel(
    id="cnc",
    name="CNC",
    properties=[
        PropertySpec(id="state", type=DataType.ENUM, enum=["idle", "setup", "running", "down"]),
        PropertySpec(id="power", type=DataType.FLOAT, unit="kW"),
        PropertySpec(id="parts_good", type=DataType.INT, min=0),
    ],
)


@dataclass
class Plant:
    service: EnergyService
    start: int  # 06:00 Shanghai time, two days ago


@pytest.fixture
async def plant(store: TimeSeriesStore, tmp_path: Path) -> AsyncIterator[Plant]:  # noqa: F811
    db = Database(url=f"sqlite+aiosqlite:///{tmp_path / 'registry.sqlite'}")
    await db.open()
    registry = DeviceRegistry(db)
    for tenant in ("acme", "other"):
        await registry.create_tenant(Tenant(id=tenant, name=tenant))
        await registry.create_site(
            Site(tenant_id=tenant, id="s1", name="S1", timezone="Asia/Shanghai")
        )
        await registry.put_thing_model(tenant, METER)
        await registry.put_thing_model(tenant, CNC)
    await registry.register_device(
        tenant_id="acme", site_id="s1", device_id="meter-1", model_id="meter"
    )
    await registry.register_device(
        tenant_id="acme", site_id="s1", device_id="cnc-1", model_id="cnc", attributes={"line": "L1"}
    )
    await registry.register_device(
        tenant_id="other", site_id="s1", device_id="o-meter", model_id="meter"
    )
    today = datetime.now(SHANGHAI).date() - timedelta(days=2)
    start = int(datetime(today.year, today.month, today.day, 6, tzinfo=SHANGHAI).timestamp() * 1000)
    keys = [
        SeriesKey("acme", "meter-1", "energy"),
        SeriesKey("acme", "cnc-1", "power"),
        SeriesKey("acme", "cnc-1", "parts_good"),
        SeriesKey("acme", "cnc-1", "state"),
    ]
    energy, power, good, state = await store.series_ids(keys)
    rows: list[tuple[int, int, float]] = []
    # The meter: +10 kWh every 5 minutes 06:00-10:00 (120 kWh/h); no reading 07:35-08:25;
    # reset to zero at 08:55; one reading duplicated, one NaN.
    for k in range(49):
        if 19 <= k <= 29:
            continue
        rows.append((energy, start + k * 5 * M, 1000.0 + 10 * k if k < 36 else 10.0 * (k - 35)))
    rows.append((energy, start + 3 * 5 * M, 1030.0))
    rows.append((energy, start + 2 * M, float("nan")))
    # The CNC: 10 kW running 06:00-08:00, then idle at 6 kW until 09:00; a part a minute while
    # running, counter reset by the operator at 07:00.
    for m in range(181):
        ts = start + m * M
        rows.append((power, ts, 10.0 if m < 120 else 6.0))
        rows.append((good, ts, float(min(m, 120) if m < 60 else min(m, 120) - 59)))
        rows.append((state, ts, 2.0 if m < 120 else 0.0))  # enum index: running / idle
    random.Random(1).shuffle(rows)  # written out of order
    for chunk in range(0, len(rows), 97):
        part = rows[chunk : chunk + 97]
        await store.write(
            PointBatch(
                series_id=np.asarray([r[0] for r in part], dtype=np.int32),
                ts=np.asarray([r[1] for r in part], dtype=np.int64),
                value=np.asarray([r[2] for r in part], dtype=np.float64),
            )
        )
    try:
        yield Plant(EnergyService(registry, store), start)
    finally:
        await db.close()


async def test_site_consumption_from_its_meter_with_reset_gap_and_bands(plant: Plant) -> None:
    s = plant.start
    report = await plant.service.consumption(
        "acme", site_id="s1", start_ms=s, end_ms=s + 4 * H, by=Granularity.HOUR
    )
    assert report.resolution_ms == 0  # a short range is read raw
    assert [b.kwh for b in report.buckets] == pytest.approx([120.0] * 4)
    # The 07:35-08:25 gap holds 120 kWh spread over 07:30-08:30 (its bounding readings).
    assert [b.estimated_kwh for b in report.buckets] == pytest.approx([0, 60, 60, 0])
    totals = report.totals
    assert totals is not None
    assert totals.kwh == pytest.approx(480.0)
    assert band(totals, TouPeriod.VALLEY) == pytest.approx(240.0)  # 06:00-08:00 local
    assert band(totals, TouPeriod.PEAK) == pytest.approx(240.0)  # 08:00-10:00 local
    assert totals.cost == pytest.approx(240 * 0.30 + 240 * 1.10)
    assert totals.tce == pytest.approx(kwh_to_tce(480.0))
    # Good units come from the CNC's counter (with its reset): 120 parts.
    assert totals.good_units == pytest.approx(120.0)
    assert totals.kwh_per_unit == pytest.approx(4.0)
    rows = {d.device_id: d for d in report.devices}
    meter = rows["meter-1"]
    assert meter.source is Source.COUNTER
    assert meter.included
    assert len(meter.resets) == 1
    assert meter.quality.duplicates == 1
    assert meter.quality.invalid == 1
    assert [(g.start_ms, g.end_ms, g.kwh) for g in meter.gaps] == [(s + 90 * M, s + 150 * M, 120.0)]
    cnc = rows["cnc-1"]
    assert cnc.source is Source.POWER
    assert not cnc.included  # behind the site's meter: not counted twice
    assert cnc.kwh == pytest.approx(20.0 - 4 / 60 / 2 + 6.0)
    assert cnc.line == "L1"
    # The enterprise indicator reads the same robust figure.
    assert await plant.service.counter_kwh("acme", s, s + 4 * H) == pytest.approx(480.0)


async def test_a_line_without_a_meter_adds_up_its_machines(plant: Plant) -> None:
    s = plant.start
    report = await plant.service.consumption(
        "acme", site_id="s1", line="L1", start_ms=s, end_ms=s + 4 * H, by=Granularity.DAY
    )
    assert [d.device_id for d in report.devices] == ["cnc-1"]
    totals = report.totals
    assert totals is not None
    assert totals.kwh == pytest.approx(20.0 - 4 / 60 / 2 + 6.0)
    assert totals.good_units == pytest.approx(120.0)
    device = await plant.service.consumption(
        "acme", device_id="cnc-1", start_ms=s, end_ms=s + 4 * H
    )
    assert device.totals is not None
    assert device.totals.kwh == pytest.approx(totals.kwh)
    assert device.devices[0].gaps[-1].kwh is None  # no reading after 09:00: unknown, not zero


async def test_busy_series_are_read_per_minute_and_agree(plant: Plant) -> None:
    s = plant.start
    plant.service.raw_limit = 10  # as if the meter reported far more often
    report = await plant.service.consumption(
        "acme", site_id="s1", start_ms=s - 2 * 24 * H, end_ms=s + 4 * H, by=Granularity.DAY
    )
    assert report.resolution_ms == M
    assert report.totals is not None
    # Minute readings are placed at the minute's end: the last minute (2 kWh) falls after 10:00.
    assert report.totals.kwh == pytest.approx(480.0 - 2.0)
    assert report.totals.good_units == pytest.approx(120.0)
    whole = await plant.service.consumption(
        "acme", site_id="s1", start_ms=s - 2 * 24 * H, end_ms=s + 5 * H, by=Granularity.DAY
    )
    assert whole.totals is not None
    assert whole.totals.kwh == pytest.approx(480.0)


async def test_idle_consumption_is_found_and_tenants_are_confined(plant: Plant) -> None:
    s = plant.start
    report = await plant.service.anomalies("acme", site_id="s1", start_ms=s, end_ms=s + 4 * H)
    idle = [a for a in report.anomalies if a.anomaly.kind is AnomalyKind.IDLE_CONSUMPTION]
    assert [a.device_id for a in idle] == ["cnc-1"]
    assert idle[0].anomaly.start_ms == pytest.approx(s + 2 * H, abs=M)
    assert idle[0].anomaly.kwh == pytest.approx(6.0, abs=0.2)
    with pytest.raises(NotFoundError):
        await plant.service.consumption("other", device_id="meter-1", start_ms=s, end_ms=s + H)
    with pytest.raises(EnergyQueryError):
        await plant.service.consumption("acme", start_ms=s, end_ms=s + H)
    with pytest.raises(EnergyQueryError):
        await plant.service.consumption("acme", site_id="s1", start_ms=s, end_ms=s)
    other = await plant.service.consumption("other", site_id="s1", start_ms=s, end_ms=s + H)
    assert [d.device_id for d in other.devices] == ["o-meter"]
    assert other.totals is not None
    assert other.totals.kwh == 0.0


async def test_an_hour_far_above_the_devices_baseline(plant: Plant, store: TimeSeriesStore) -> None:  # noqa: F811
    s = plant.start
    registry = plant.service.registry
    await registry.create_site(Site(tenant_id="acme", id="s2", name="S2", timezone="Asia/Shanghai"))
    await registry.register_device(
        tenant_id="acme", site_id="s2", device_id="meter-b", model_id="meter"
    )
    [sid] = await store.series_ids([SeriesKey("acme", "meter-b", "energy")])
    # 100 kWh an hour for 15 days (a reading every 5 minutes), then 400 kWh in the first hour
    # judged: far above every like hour.
    ts, values, level = [], [], 0.0
    for k in range(-15 * 24 * 12, 2 * 12 + 1):
        ts.append(s + k * 5 * M)
        values.append(level)
        level += (400.0 if 0 <= k < 12 else 100.0) / 12
    await store.write(
        PointBatch(
            series_id=np.full(len(ts), sid, dtype=np.int32),
            ts=np.asarray(ts, dtype=np.int64),
            value=np.asarray(values, dtype=np.float64),
        )
    )
    report = await plant.service.anomalies("acme", site_id="s2", start_ms=s, end_ms=s + 2 * H)
    above = [a for a in report.anomalies if a.anomaly.kind is AnomalyKind.ABOVE_BASELINE]
    assert {a.device_id for a in above} == {"meter-b", None}  # the device, and the site
    first = next(a.anomaly for a in above if a.device_id == "meter-b")
    assert first.start_ms == s
    assert first.expected_kwh == pytest.approx(100.0)
    # Hour readings are the last of each hour, placed at its end: 5 minutes of the hour before.
    assert first.kwh == pytest.approx(400.0 * 11 / 12 + 100.0 / 12)
