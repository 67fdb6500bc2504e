"""Enterprise indicators computed from the platform's own telemetry (a real platform and broker)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from tests.platform.conftest import running_platform
from tests.servers import MosquittoProcess
from tiangong.data.catalog import kwh_to_tce, standard_catalog
from tiangong.data.enterprise import EnterpriseProfile, IndicatorCollector, period_bounds
from tiangong.data.model import Level, Period
from tiangong.network.access import Channel, DeviceTopic
from tiangong.platform.model import DataType, PropertySpec, ThingModel

pytestmark = pytest.mark.mosquitto

METER = ThingModel(
    id="meter",
    name="Power meter",
    properties=[
        PropertySpec(id="energy", type=DataType.FLOAT, unit="kWh", min=0),
        PropertySpec(id="power", type=DataType.FLOAT, unit="kW", min=0),
    ],
)
CELL = ThingModel(
    id="cell",
    name="Machining cell",
    properties=[PropertySpec(id="parts_good", type=DataType.INT, unit="pcs", min=0)],
)
PROFILE = EnterpriseProfile(
    enterprise_id="91320500MA1TEST00X",
    name="Acme",
    tenant_id="acme",
    region="320500",
    industry="C34",
    unit_price_cny=1000.0,
)


async def test_a_period_of_telemetry_becomes_one_report(
    tmp_path: Path, shared_mosquitto: MosquittoProcess
) -> None:
    async with running_platform(tmp_path, mqtt_port=shared_mosquitto.port) as env:
        registry = env.platform.registry
        await registry.put_thing_model("acme", METER)
        await registry.put_thing_model("acme", CELL)
        _, meter_secret = await registry.register_device(
            tenant_id="acme", site_id="p1", device_id="meter-1", model_id="meter"
        )
        _, cell_secret = await registry.register_device(
            tenant_id="acme", site_id="p1", device_id="cell-1", model_id="cell"
        )
        env.secrets.update({"meter-1": meter_secret, "cell-1": cell_secret})
        # The hour before this one: closed, so a clock that crosses an hour or a quarter hour
        # while the test runs changes nothing. The readings lie in its first quarter hour.
        this_hour, _, _ = period_bounds(Period.HOUR, datetime.now(UTC))
        hour = this_hour - timedelta(hours=1)
        base = int(hour.timestamp() * 1000) + 60_000
        stamps = [base, base + 1000, base + 2000, base + 3000]
        async with env.client("meter-1") as meter:
            payload = {
                "ts": stamps[:3],
                "values": {"energy": [100.0, 150.0, 175.0], "power": [40.0, 60.0, 50.0]},
            }
            await meter.publish(
                DeviceTopic.build("acme", "p1", "meter-1", Channel.TELEMETRY),
                orjson.dumps(payload),
                qos=1,
            )
        async with env.client("cell-1") as cell:
            # The counter is reset (reset_counters) between the second and third reading: 20
            # parts before, 2 + 4 after; max - min would say 28.
            payload = {"ts": stamps, "values": {"parts_good": [10, 30, 2, 6]}}
            await cell.publish(
                DeviceTopic.build("acme", "p1", "cell-1", Channel.TELEMETRY),
                orjson.dumps(payload),
                qos=1,
            )

        async def stored() -> bool:
            return await env.stored() >= 10

        await env.wait_for(stored)
        collector = IndicatorCollector(env.platform, PROFILE, standard_catalog())
        report = await collector.collect(Period.HOUR, hour)
        m = report.measures
        assert m["ENERGY_KWH"].numerator == pytest.approx(75.0)
        assert m["ENERGY_TCE"].numerator == pytest.approx(kwh_to_tce(75.0))
        assert m["PRODUCTION_VOLUME"].numerator == 26
        assert m["OUTPUT_VALUE"].numerator == 26_000
        intensity = m["ENERGY_INTENSITY"]
        assert intensity.numerator / intensity.denominator == pytest.approx(kwh_to_tce(75.0) / 2.6)
        assert m["PEAK_POWER_KW"].numerator == pytest.approx(50.0)  # one 15-minute mean
        assert m["DEVICES_REGISTERED"].numerator >= 2
        assert m["NETWORKING_RATE"].denominator == m["DEVICES_REGISTERED"].numerator
        assert m["ENTERPRISES_REPORTING"].members == frozenset({PROFILE.enterprise_id})
        # The cell's thing model has no production profile (apps.oee): no OEE is measured for
        # it, and an unmeasured indicator is left out, not reported as zero.
        assert "OEE" not in m
        assert report.scope.level is Level.ENTERPRISE
        assert report.scope.region == "320500"
        # Recomputing gives a later revision of the same report.
        again = await collector.collect(Period.HOUR, hour)
        assert again.report_id == report.report_id
        assert again.revision > report.revision


def test_period_bounds() -> None:
    when = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    assert period_bounds(Period.HOUR, when)[2] == "2026-12-31T23:00"
    assert period_bounds(Period.DAY, when)[2] == "2026-12-31"
    _, end, iso = period_bounds(Period.MONTH, when)
    assert iso == "2026-12-01"
    assert end == datetime(2027, 1, 1, tzinfo=UTC)
