"""A platform configured to report sends its indicators to a sub-center over a real nats-server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.data.conftest import NatsServerProcess
from tests.data.helpers import eventually
from tests.platform.conftest import running_platform
from tests.servers import MosquittoProcess
from tiangong.data.catalog import standard_catalog
from tiangong.data.center import CenterConfig, DataCenter
from tiangong.data.enterprise import period_bounds
from tiangong.data.model import Level, Period
from tiangong.data.reports import KeyRing
from tiangong.data.transport import JetStreamTransport

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

ENTERPRISE = "91320500MA1REPORT0"


async def test_the_platform_reports_its_indicators_to_its_sub_center(
    tmp_path: Path, shared_mosquitto: MosquittoProcess, nats_server: NatsServerProcess
) -> None:
    async with running_platform(
        tmp_path,
        mqtt_port=shared_mosquitto.port,
        report_nats=[nats_server.url],
        report_enterprise_id=ENTERPRISE,
        report_enterprise_name="Acme Suzhou",
        report_tenant="acme",
        report_region="320500",
        report_industry="C34",
        report_destinations=["regional.js"],
        report_interval=1.0,
    ) as env:
        reporter = env.platform.reporter
        assert reporter is not None
        # The sub-center's operator trusts the key the platform generated on first start.
        platform_keys = KeyRing.load(tmp_path / "data" / "report-keys")
        center_keys = KeyRing.generate(tmp_path / "center-keys", "js")
        center_keys.trust(ENTERPRISE, platform_keys.public_pem)
        config = CenterConfig(
            level=Level.REGIONAL,
            center_id="js",
            data_dir=tmp_path / "center",
            keys=center_keys,
            catalog=standard_catalog(),
            region="320000",
        )
        async with (
            JetStreamTransport(servers=nats_server.url, connect_timeout=10) as transport,
            DataCenter(config, transport=transport) as center,
        ):

            async def three_periods() -> bool:
                held = set()
                for period in (Period.HOUR, Period.DAY, Period.MONTH):
                    _, _, start = period_bounds(period, datetime.now(UTC))
                    if await asyncio.to_thread(center.ledger.children, period, start):
                        held.add(period)
                return held == {Period.HOUR, Period.DAY, Period.MONTH}

            await eventually(three_periods, timeout=30)
            assert center.stats.rejected == 0
            assert reporter.failures == 0
            # Recomputed each round: later revisions replace the earlier figures.
            await eventually(lambda: center.stats.revised > 0, timeout=30)
