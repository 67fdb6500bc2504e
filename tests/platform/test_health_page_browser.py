"""The dashboard's Equipment health page in a real browser.

A platform runs in-process on free ports (embedded MQTT broker, REST API, dashboard) with a
provisioned factory. Two machines report over MQTT: an engine test cell replaying the last
cycles of C-MAPSS FD001 engine 3 (the RUL model applies: its estimate, its model version and a
maintenance work order appear), and a CNC machine whose vibration per unit of load rises from
its own baseline, with one spike (a baseline health index and a sensor anomaly). Debian's
chromium, driven headless by Playwright, shows them to an operator, who takes the work order
through its lifecycle.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pytest
from playwright.async_api import ConsoleMessage, async_playwright, expect

from tests.browser import ARTIFACTS, CHROMIUM_ARGS, PAGE_TIMEOUT_MS, VIEWPORT, demo_platform
from tiangong.apps.health.profiles import HealthSettings
from tiangong.network.access import Channel, DeviceTopic
from tiangong.network.mqtt import MqttClient, ProtocolVersion
from tiangong.platform.service import Platform
from tiangong.platform.tokens import ApiRole
from tiangong.sim.turbofan import fd001_training

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TENANT = "huaxia"
SCREENSHOT = Path("/tmp/health-page.png")
ENGINE = "engine-cell-1"


@dataclass(frozen=True)
class Stack:
    url: str
    platform: Platform
    operator_token: str
    version: str


async def _publish(port: int, device: str, secret: str, site: str, payloads: list[bytes]) -> None:
    async with MqttClient(
        host="127.0.0.1",
        port=port,
        client_id=device,
        username=device,
        password=secret,
        version=ProtocolVersion.V311,
    ) as client:
        topic = DeviceTopic.build(TENANT, site, device, Channel.TELEMETRY)
        for payload in payloads:
            await client.publish(topic, payload, qos=1)


def _engine_messages(now: int) -> list[bytes]:
    """The last 60 cycles of FD001 engine 3: a backlog of 50, then one cycle per message."""
    recording = fd001_training()
    rows = np.flatnonzero(recording.units == 3)[-60:]
    stamps = [now - (len(rows) - i) * 1000 for i in range(len(rows))]

    def message(part: slice) -> bytes:
        values: dict[str, list[float]] = {
            "cycle": [int(recording.cycles[r]) for r in rows[part]],
            "engine": [3] * len(rows[part]),
        }
        for i in range(21):
            values[f"s{i + 1}"] = [float(recording.sensors[r, i]) for r in rows[part]]
        return orjson.dumps({"ts": stamps[part], "values": values})

    return [message(slice(0, 50)), *(message(slice(i, i + 1)) for i in range(50, 60))]


def _cnc_message(now: int) -> bytes:
    """700 s of a running CNC: 550 healthy samples, then vibration per load rising to 2.2 x."""
    rng = random.Random(4)
    n = 700
    stamps = [now - (n - i) * 1000 for i in range(n)]
    load = [rng.uniform(50, 80) for _ in range(n)]
    wear = [1.0 if i < 550 else 1.0 + 1.2 * (i - 550) / 150 for i in range(n)]
    vibration = [round(0.03 * load[i] * wear[i] + rng.gauss(0, 0.02), 3) for i in range(n)]
    vibration[450] = 9.5  # a spike
    return orjson.dumps(
        {
            "ts": stamps,
            "values": {
                "state": ["running"] * n,
                "spindle_load": [round(x, 2) for x in load],
                "vibration": vibration,
            },
        }
    )


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with demo_platform(tmp_path) as (platform, secrets):
        mqtt_port = platform.settings.mqtt_port
        health = platform.health
        health.settings = HealthSettings(latest_every_s=0, history_every_s=0)
        _, engine_secret = await platform.registry.register_device(
            tenant_id=TENANT, site_id="wuxi", device_id=ENGINE, model_id="turbofan"
        )
        _, operator = await platform.tokens.create(
            name="maintenance planner", role=ApiRole.OPERATOR, tenant_id=TENANT
        )
        now = int(time.time() * 1000)
        before = platform.pipeline.points_committed
        await _publish(mqtt_port, ENGINE, engine_secret, "wuxi", _engine_messages(now))
        await _publish(mqtt_port, "cnc-001", secrets["cnc-001"], "suzhou", [_cnc_message(now)])
        async with asyncio.timeout(30):
            while platform.pipeline.points_committed < before + 60 * 23 + 700 * 3:
                await asyncio.sleep(0.05)
        await health.drain()
        version = health.models.default_version()
        yield Stack(f"http://127.0.0.1:{platform.http_port}/", platform, operator, version)


async def test_health_page_shows_estimates_anomalies_and_work_orders(
    chromium: Path, stack: Stack
) -> None:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport=VIEWPORT)
        context.set_default_timeout(PAGE_TIMEOUT_MS)
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        def console(message: ConsoleMessage) -> None:
            if message.type == "error":
                errors.append(message.text)

        page.on("console", console)
        await page.goto(f"{stack.url}#token={stack.operator_token}&next=%23%2Fhealth")
        await expect(page.locator("nav a[data-nav=health]")).to_have_class(re.compile("active"))

        # The fleet: the engine by the RUL model (its version shown), the CNC by its baseline.
        engine = page.locator(f"tr[data-health-device='{ENGINE}']")
        await expect(engine).to_contain_text("RUL model")
        await expect(engine.locator("[data-model-version]")).to_have_text(stack.version)
        await expect(engine).to_contain_text("cycles")
        cnc = page.locator("tr[data-health-device='cnc-001']")
        await expect(cnc).to_contain_text("Own baseline + trend")
        await expect(cnc.locator("[data-model-version]")).to_have_text("baseline-v1")
        await expect(cnc).to_contain_text("vibration/spindle_load")
        # Least healthy first: the engine at the end of its life leads.
        first = page.locator("table[data-health-table] tbody tr").first
        await expect(first).to_have_attribute("data-health-device", ENGINE)

        # The anomaly: the CNC's vibration spike.
        spike = page.locator("table[data-anomaly-table] tr[data-anomaly]:has-text('Spike')")
        await expect(spike).to_have_count(1)
        await expect(spike).to_contain_text("cnc-001")
        await expect(spike).to_contain_text("vibration")

        # The work order opened by the health service, through its lifecycle.
        order = page.locator("table[data-order-table] tr[data-order]").filter(has_text=ENGINE)
        await expect(order).to_have_count(1)
        await expect(order).to_contain_text("remaining useful life")
        await expect(order.locator("[data-order-state]")).to_have_text("Open")
        await expect(order).to_contain_text(stack.version)
        await page.screenshot(path=SCREENSHOT, full_page=True)
        await order.locator("button[data-action=acknowledge]").click()
        await expect(page.locator(".toast").last).to_contain_text("acknowledged")
        await expect(order.locator("[data-order-state]")).to_have_text("Acknowledged")
        await expect(order).to_contain_text("maintenance planner")
        await order.locator("button[data-action=start]").click()
        await expect(order.locator("[data-order-state]")).to_have_text("In progress")
        await order.locator("button[data-action=complete]").click()
        # Done orders leave the active list; the All view keeps them.
        await expect(order).to_have_count(0)
        await page.click("[data-which] button[data-active='0']")
        await expect(order.locator("[data-order-state]")).to_have_text("Done")
        stored, _ = await stack.platform.health.work_orders(TENANT, device_id=ENGINE)
        assert [s.by for s in stored[0].steps] == [
            "health-service",
            "maintenance planner",
            "maintenance planner",
            "maintenance planner",
        ]
        await page.screenshot(path=ARTIFACTS / "dashboard-health.png", full_page=True)
        assert not errors, errors
        await context.close()
        await browser.close()
