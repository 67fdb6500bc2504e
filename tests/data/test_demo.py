"""The national view of ``tiangong up``: a real platform, the whole hierarchy over the outbox."""

from __future__ import annotations

import asyncio
import stat
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from tests.data.helpers import eventually
from tests.platform.conftest import running_platform
from tests.servers import MosquittoProcess
from tiangong.data.catalog import ENERGY_INDUSTRIES, standard_catalog
from tiangong.data.demo import (
    EnterpriseKind,
    NationalDemo,
    day_figures,
    generated_enterprises,
    national_demo,
)
from tiangong.data.enterprise import EnterpriseProfile
from tiangong.data.errors import ExportRefused
from tiangong.data.model import DataGrade, Level, Period
from tiangong.data.store import AnalyticsStore, Row

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

CATALOG = standard_catalog()
FACTORY = EnterpriseProfile(
    enterprise_id="91320500MA1TEST00X",
    name="Acme",
    tenant_id="acme",
    region="320500",
    industry="C34",
)
GENERATED = generated_enterprises()
ENERGY_IDS = {e.enterprise_id for e in GENERATED if e.industry in ENERGY_INDUSTRIES}
CODES = [
    "ENERGY_KWH",
    "ENERGY_TCE",
    "OUTPUT_VALUE",
    "ENERGY_INTENSITY",
    "NETWORKING_RATE",
    "PRODUCTION_VOLUME",
    "COAL_OUTPUT_T",
    "POWER_GENERATED_KWH",
    "ENTERPRISES_REPORTING",
]


def month_start(day: date, back: int) -> date:
    index = day.year * 12 + day.month - 1 - back
    return date(index // 12, index % 12 + 1, 1)


async def finished(store: AnalyticsStore, today: date) -> dict[str, list[Row]]:
    """The finished periods' figures by province and by industry (both lineages)."""
    windows = {
        Period.DAY: ((today - timedelta(days=3)).isoformat(), today.isoformat()),
        Period.MONTH: (month_start(today, 2).isoformat(), month_start(today, 0).isoformat()),
    }
    out: dict[str, list[Row]] = {}
    for period, (start, end) in windows.items():
        for level, by in ((Level.REGIONAL, "province"), (Level.INDUSTRY, "industry")):
            out[f"{period}/{by}"] = await store.totals(
                period, start, end, by=by, indicators=CODES, level=level
            )
            out[f"{period}/{level}"] = await store.totals(
                period, start, end, indicators=CODES, level=level
            )
    return out


def demo_of(data: Path, platform: object):
    return national_demo(
        data,
        platform,  # type: ignore[arg-type]
        factory=FACTORY,
        interval=1.0,
        history_days=3,
        history_months=2,
        forward_delay=0.05,
    )


async def settle(demo: NationalDemo) -> None:
    async with asyncio.timeout(30):
        await demo.wait_idle()
    for destination, stats in demo.stats().items():
        assert stats.rejected == 0, (destination, dict(stats.rejections))


async def test_national_view_agrees_drills_down_and_resumes(
    tmp_path: Path, shared_mosquitto: MosquittoProcess
) -> None:
    data = tmp_path / "up"
    async with running_platform(tmp_path, mqtt_port=shared_mosquitto.port) as env:
        opened = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        today = opened.date()
        tomorrow = (today + timedelta(days=1)).isoformat()
        async with demo_of(data, env.platform) as demo:
            assert env.platform.data_store is demo.store
            assert "synthetic" in demo.summary()
            assert demo.history_pending == len(GENERATED) * (3 + 2)
            await settle(demo)
            assert demo.history_pending == 0
            store = demo.store
            # Six provinces, three sections: Jiangsu's center takes the factory's Suzhou.
            assert demo.provinces == ["140000", "150000", "320000", "330000", "440000", "510000"]
            assert demo.centers["regional.js"].stats.accepted >= 3 * (3 + 2)

            # Totals by region and by industry agree (two independent lineages).
            figures = await finished(store, today)
            for period in (Period.DAY, Period.MONTH):
                by_region = {r.indicator: r.value for r in figures[f"{period}/regional"]}
                by_industry = {r.indicator: r.value for r in figures[f"{period}/industry"]}
                assert by_region == pytest.approx(by_industry)
                assert by_region["ENTERPRISES_REPORTING"] == len(GENERATED)
                assert by_region["COAL_OUTPUT_T"] > 0  # important aggregates go up
                provinces = {r.key for r in figures[f"{period}/province"]}
                assert provinces == set(demo.provinces)
            coal = await store.totals(
                Period.MONTH,
                month_start(today, 2).isoformat(),
                month_start(today, 0).isoformat(),
                by="province",
                indicators=["COAL_OUTPUT_T"],
            )
            assert {r.key for r in coal} == {"140000", "150000"}

            # Today: the factory's report (from telemetry) is in, and in the drill-down.
            now = await store.totals(
                Period.DAY, today.isoformat(), tomorrow, indicators=["ENTERPRISES_REPORTING"]
            )
            assert now[0].value == len(GENERATED) + 1
            drill = await store.drill_down(
                "ENERGY_KWH", Period.DAY, today.isoformat(), tomorrow, region="320000"
            )
            assert FACTORY.enterprise_id in {r.key for r in drill}
            suzhou = await store.drill_down(
                "NETWORKING_RATE", Period.DAY, today.isoformat(), tomorrow, region="320500"
            )
            assert {r.key for r in suzhou} == {FACTORY.enterprise_id, "91320500MA0DEMO003"}
            # Production volume is important data: no drill-down, and no breakdown went up.
            with pytest.raises(ExportRefused):
                await store.drill_down(
                    "PRODUCTION_VOLUME", Period.DAY, today.isoformat(), tomorrow, region="320000"
                )
            assert not await store.drill_down(
                "PRODUCTION_VOLUME",
                Period.DAY,
                today.isoformat(),
                tomorrow,
                region="320000",
                max_grade=DataGrade.IMPORTANT,
            )

            # The energy view: the energy industries and their enterprises.
            start, end = month_start(today, 2).isoformat(), month_start(today, 0).isoformat()
            industries = {r.key for r in await store.energy_view(Period.MONTH, start, end)}
            assert industries == {"B06", "C25", "D44", "D45"}
            sources = await store.energy_view(Period.MONTH, start, end, by="source")
            assert {r.key for r in sources} == ENERGY_IDS
            assert len(ENERGY_IDS) == 6
            assert all(r.intensity and r.intensity > 0 for r in sources)

            # Rounds go on: the open day is revised, not duplicated.
            await eventually(lambda: _rounds_at_least(demo, 2))
            await settle(demo)
            assert demo.failures == 0
            first_history = demo.history_sent
            assert first_history == len(GENERATED) * (3 + 2)
        assert env.platform.data_store is None

        keys = data / "datacenter" / "keys"
        private = keys / "cn" / "private.pem"
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
        assert stat.S_IMODE(keys.stat().st_mode) == 0o700
        pem = private.read_bytes()

        # A restart resumes: same keys, nothing finished is sent again, same figures.
        same_day = datetime.now(UTC).date() == today
        async with demo_of(data, env.platform) as demo:
            # (Unless the UTC day ended meanwhile: yesterday's history is then due again.)
            assert demo.history_pending == 0 or not same_day
            await settle(demo)
            assert private.read_bytes() == pem
            # (Unless an hour ended meanwhile: the factory's next hour is a new report.)
            if datetime.now(UTC).replace(minute=0, second=0, microsecond=0) == opened:
                assert demo.history_sent == 0
                assert demo.national.stats.accepted == 0  # only revisions of open periods
            if same_day:
                assert await finished(demo.store, today) == figures


def _rounds_at_least(demo: NationalDemo, n: int) -> None:
    assert demo.rounds >= n


def test_generated_figures_are_deterministic_and_consistent() -> None:
    assert generated_enterprises() == generated_enterprises()
    assert 12 <= len(GENERATED) <= 20
    assert len({e.enterprise_id for e in GENERATED}) == len(GENERATED)
    assert all("DEMO" in e.enterprise_id for e in GENERATED)
    day = date(2026, 2, 14)
    for e in GENERATED:
        figures = day_figures(e, day)
        assert figures == day_figures(e, day)
        assert set(figures) <= set(CATALOG.indicators)
        energy = figures["ENERGY_INTENSITY"]
        assert energy.numerator == pytest.approx(figures["ENERGY_TCE"].numerator)
        assert energy.denominator == pytest.approx(figures["OUTPUT_VALUE"].numerator / 10_000)
        online, registered = figures["DEVICES_ONLINE"], figures["DEVICES_REGISTERED"]
        assert 0 < online.numerator <= registered.numerator
        match e.kind:
            case EnterpriseKind.COAL_MINE:
                assert figures["COAL_OUTPUT_T"].numerator > 10_000
            case EnterpriseKind.COAL_POWER | EnterpriseKind.WIND_POWER:
                generated = figures["POWER_GENERATED_KWH"].numerator
                supplied = figures["POWER_SUPPLIED_KWH"].numerator
                assert supplied == pytest.approx(generated - figures["ENERGY_KWH"].numerator)
            case EnterpriseKind.MANUFACTURER:
                assert figures["PRODUCTION_VOLUME"].numerator > 0
            case _:
                pass
