"""Security posture reported up the hierarchy (多层级全覆盖): a factory's security event reaches
its sub-centers and the national total, through signed reports over a real nats-server.

The factory is a running platform on a real Mosquitto: a decommissioned device publishes, the
real ingest pipeline dead-letters it and the security monitor opens a high event; an expired
certificate adds a low one. The platform's ``IndicatorCollector`` turns them into the security
indicators of its day report; the enterprise exporter signs it and sends it to its regional and
industry sub-centers, which forward to the national center. Another enterprise in another
province reports its own. The national store and the data API then show the sum.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from tests.conftest import MosquittoProcess
from tests.data.conftest import NatsServerProcess
from tests.data.helpers import CATALOG, enterprise_report
from tests.data.test_center import Hierarchy
from tests.platform.conftest import running_platform
from tiangong.data.enterprise import EnterpriseProfile, IndicatorCollector, period_bounds
from tiangong.data.governance import ExportPolicy
from tiangong.data.model import DataGrade, Level, Measure, Period
from tiangong.network.access import Channel, DeviceTopic
from tiangong.network.broker import BrokerRefusal
from tiangong.security.monitor import EventKind

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

SECURITY = (
    "SECURITY_EVENTS",
    "SECURITY_EVENTS_SERIOUS",
    "SECURITY_EVENTS_OPEN",
    "SECURITY_DEVICES_AT_RISK",
    "SECURITY_DEVICE_RISK_RATE",
)
#: Important data may go up: the posture indicators are graded important (catalog docstring).
IMPORTANT_UP = ExportPolicy(default_max_grade=DataGrade.IMPORTANT)


@pytest.fixture
async def hierarchy(tmp_path: Path, nats_server: NatsServerProcess) -> AsyncIterator[Hierarchy]:
    async with contextlib.AsyncExitStack() as stack:
        (tmp_path / "hierarchy" / "enterprises").mkdir(parents=True)
        yield Hierarchy(tmp_path / "hierarchy", nats_server, stack)


def test_security_indicators_in_the_catalog() -> None:
    for code in SECURITY:
        spec = CATALOG.spec(code)
        assert spec.grade is DataGrade.IMPORTANT
        assert spec.name_zh
    assert CATALOG.spec("SECURITY_DEVICE_RISK_RATE").aggregation == "ratio_of_sums"
    assert CATALOG.version == "2026.2"


async def test_a_factory_security_event_reaches_the_national_total(
    tmp_path: Path, shared_mosquitto: MosquittoProcess, hierarchy: Hierarchy
) -> None:
    h = hierarchy
    national = await h.center("cn", policy=IMPORTANT_UP)
    for center in ("js", "zj", "mfg"):
        await h.center(center, policy=IMPORTANT_UP)
    async with running_platform(tmp_path, mqtt_port=shared_mosquitto.port) as env:
        platform = env.platform
        monitor = platform.security
        # A decommissioned device's data through the real pipeline: a high event on old-1.
        async with env.client("old-1") as device:
            body = {"ts": int(time.time() * 1000), "values": {"flow": 1.0}}
            await device.publish(
                DeviceTopic.build("acme", "p1", "old-1", Channel.TELEMETRY),
                orjson.dumps(body),
                qos=1,
            )
        # pump-1 tried an expired certificate: a low event.
        monitor.on_broker_refusal(
            BrokerRefusal(
                kind="certificate_expired",
                username="pump-1",
                tenant_id="acme",
                device_id="pump-1",
                topic=None,
                source="127.0.0.1:40000",
                detail="expired on 2026-01-01",
            )
        )
        # And a high one on a registered device, which puts it at risk.
        monitor.on_broker_refusal(
            BrokerRefusal(
                kind="certificate_revoked",
                username="pump-2",
                tenant_id="acme",
                device_id="pump-2",
                topic=None,
                source="127.0.0.1:40001",
                detail="serial 0x1f revoked (key compromise)",
            )
        )
        async with asyncio.timeout(20):
            while not (await monitor.events("acme", kind=EventKind.DECOMMISSIONED_TRAFFIC))[0]:
                await asyncio.sleep(0.05)
        await monitor.drain()

        profile = EnterpriseProfile(
            enterprise_id="E320500A",
            name="Acme Suzhou",
            tenant_id="acme",
            region="320500",
            industry="C38",
        )
        report = await IndicatorCollector(platform, profile, CATALOG).collect(Period.DAY)
        measures = report.measures
        assert measures["SECURITY_EVENTS"] == Measure(numerator=3.0)
        assert measures["SECURITY_EVENTS_SERIOUS"] == Measure(numerator=2.0)
        assert measures["SECURITY_EVENTS_OPEN"] == Measure(numerator=3.0)
        # old-1 is decommissioned: its event counts, but it is not a registered device at risk.
        assert measures["SECURITY_DEVICES_AT_RISK"] == Measure(numerator=1.0)
        registered = measures["DEVICES_REGISTERED"].numerator
        assert measures["SECURITY_DEVICE_RISK_RATE"] == Measure(1.0, registered)

        # Acknowledging the revoked-certificate event takes pump-2 out of the open figures.
        revoked, _ = await monitor.events("acme", kind=EventKind.CERTIFICATE_REVOKED)
        await monitor.acknowledge(revoked[0].id, "acme", by="officer")
        later = await IndicatorCollector(platform, profile, CATALOG).collect(Period.DAY)
        assert later.measures["SECURITY_EVENTS"] == Measure(numerator=3.0)
        assert later.measures["SECURITY_EVENTS_OPEN"] == Measure(numerator=2.0)
        assert later.measures["SECURITY_DEVICES_AT_RISK"] == Measure(numerator=0.0)

        # Up the hierarchy, next to another enterprise in Zhejiang that reports 4 events.
        _, following, day = period_bounds(Period.DAY, datetime.now(UTC))
        next_day = following.strftime("%Y-%m-%d")
        other = enterprise_report("E330100C", day=day)
        other.measures.update(
            {
                "SECURITY_EVENTS": Measure(numerator=4.0),
                "SECURITY_EVENTS_SERIOUS": Measure(numerator=1.0),
                "SECURITY_EVENTS_OPEN": Measure(numerator=4.0),
                "SECURITY_DEVICES_AT_RISK": Measure(numerator=1.0),
                "SECURITY_DEVICE_RISK_RATE": Measure(1.0, 10.0),
            }
        )
        await (await h.exporter("E320500A", policy=IMPORTANT_UP)).export(later)
        await (await h.exporter("E330100C", policy=IMPORTANT_UP)).export(other)
        await h.idle()

        async def national_events() -> float:
            rows = await national.store.totals(
                Period.DAY,
                day,
                next_day,
                by=None,
                indicators=["SECURITY_EVENTS"],
                level=Level.REGIONAL,
            )
            return sum(r.value or 0 for r in rows)

        async with asyncio.timeout(30):
            while await national_events() != 7.0:
                await h.idle()
                await asyncio.sleep(0.1)

        # The data API of the national center: totals by province and the drill-down.
        platform.data_store = national.store
        totals = await env.api.get(
            "/api/v1/data/totals",
            params={
                "period": "day",
                "start": day,
                "by": "province",
                "indicator": ",".join(SECURITY),
                "level": "regional",
            },
        )
        assert totals.status_code == 200, totals.text
        by_province = {
            (row["key"], row["indicator"]): row["value"] for row in totals.json()["rows"]
        }
        assert by_province[("320000", "SECURITY_EVENTS")] == 3.0
        assert by_province[("330000", "SECURITY_EVENTS")] == 4.0
        assert by_province[("320000", "SECURITY_EVENTS_OPEN")] == 2.0
        assert by_province[("330000", "SECURITY_DEVICES_AT_RISK")] == 1.0
        assert by_province[("330000", "SECURITY_DEVICE_RISK_RATE")] == pytest.approx(0.1)
        nation = await env.api.get(
            "/api/v1/data/totals",
            params={"period": "day", "start": day, "indicator": "SECURITY_EVENTS_SERIOUS"},
        )
        assert [row["value"] for row in nation.json()["rows"]] == [3.0]
        drill = await env.api.get(
            "/api/v1/data/drill",
            params={"period": "day", "start": day, "indicator": "SECURITY_EVENTS"},
        )
        assert drill.status_code == 200, drill.text
        assert {row["key"]: row["value"] for row in drill.json()["rows"]} == {
            "320000": 3.0,
            "330000": 4.0,
        }
