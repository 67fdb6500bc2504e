"""The dashboard's plant energy page in a real browser.

A platform runs in-process on free ports with the simulated factory provisioned (not running),
and six hours of a feeder meter's and a CNC machine's telemetry written through the store API:
the meter's counter has a 30-minute gap and a reset; the machine runs for four hours, then
stands idle drawing most of its working power. Debian's chromium, driven headless by
Playwright, shows the site's kWh, tce, cost by time-of-use band and kWh per good unit as the
API computes them, the devices with their data quality, and the idle consumption.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.async_api import ConsoleMessage, async_playwright, expect

from tests.browser import CHROMIUM_ARGS, VIEWPORT, demo_platform
from tiangong.platform.service import Platform
from tiangong.platform.tokens import ApiRole
from tiangong.platform.tsdb.base import PointBatch, SeriesKey

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TENANT = "huaxia"
SCREENSHOT = Path("/tmp/plant-energy-page.png")
MIN = 60_000
RUNNING, IDLE = 2.0, 0.0  # the cnc state enum: idle, setup, running, down


@dataclass(frozen=True)
class Stack:
    url: str
    platform: Platform
    viewer_token: str


async def _write(
    platform: Platform, device: str, metric: str, points: list[tuple[int, float]]
) -> None:
    [sid] = await platform.store.series_ids([SeriesKey(TENANT, device, metric)])
    await platform.store.write(
        PointBatch(
            series_id=np.full(len(points), sid, dtype=np.int32),
            ts=np.array([t for t, _ in points], dtype=np.int64),
            value=np.array([v for _, v in points], dtype=np.float64),
        )
    )


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with demo_platform(tmp_path) as (platform, _):
        start = (int(time.time() * 1000) - 6 * 60 * MIN) // MIN * MIN
        # The meter: 2 kWh a minute; no reading 02:00-02:30 into the data; reset at 04:00.
        energy = []
        for m in range(6 * 60):
            if 120 < m < 150:
                continue
            energy.append((start + m * MIN, 50_000.0 + 2 * m if m < 240 else 2.0 * (m - 239)))
        await _write(platform, "meter-001", "energy", energy)
        # The CNC: 4 h running at 10 kW (a good part a minute), then 1 h idle at 8 kW.
        minutes = range(5 * 60)
        await _write(
            platform,
            "cnc-001",
            "power",
            [(start + m * MIN, 10.0 if m < 240 else 8.0) for m in minutes],
        )
        await _write(
            platform,
            "cnc-001",
            "state",
            [(start + m * MIN, RUNNING if m < 240 else IDLE) for m in minutes],
        )
        await _write(
            platform,
            "cnc-001",
            "parts_good",
            [(start + m * MIN, float(min(m, 240))) for m in minutes],
        )
        _, viewer = await platform.tokens.create(
            name="energy viewer", role=ApiRole.VIEWER, tenant_id=TENANT
        )
        yield Stack(f"http://127.0.0.1:{platform.http_port}/", platform, viewer)


def _number(value: float) -> str:
    """The dashboard's formatNumber (format.js) for the values shown here."""
    if float(value).is_integer() or abs(value) >= 1000:
        return f"{round(value):,}"
    if abs(value) >= 10:
        return f"{value:,.1f}"
    return f"{value:.2f}"


async def test_the_plant_energy_page_shows_bands_devices_and_idle_consumption(
    chromium: Path, stack: Stack
) -> None:
    errors: list[str] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport=VIEWPORT)

        def console(message: ConsoleMessage) -> None:
            if message.type == "error":
                errors.append(message.text)

        page.on("console", console)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        target = "%23%2Fplant-energy%3Fsite%3Dsuzhou%26range%3D24h"
        await page.goto(f"{stack.url}#token={stack.viewer_token}&next={target}")
        await expect(page.locator("nav a[data-nav=plant-energy]")).to_have_class(
            re.compile("active")
        )
        await expect(
            page.locator("table[data-device-rows] tr[data-device='meter-001']")
        ).to_be_visible()

        # The page shows what the API computes from the same data.
        report: dict[str, Any] = await page.evaluate(
            """async () => {
                const r = await fetch('/api/v1/apps/energy?site=suzhou&from=-24h&by=hour', {
                  headers: {Authorization: 'Bearer ' + sessionStorage.getItem('tiangong.token')}});
                return r.json();
            }"""
        )
        totals = report["totals"]
        # 359 one-minute steps of 2 kWh, the reset's first reading (2 kWh) included.
        assert totals["kwh"] == pytest.approx(2 * 359, abs=0.01)
        assert totals["estimated_kwh"] == pytest.approx(2 * 30)  # the 30-minute gap
        assert totals["good_units"] == pytest.approx(240)
        await expect(page.locator("[data-kpi=kwh] .kpi-value")).to_contain_text(
            _number(totals["kwh"])
        )
        await expect(page.locator("[data-kpi=kwh] .kpi-foot")).to_contain_text(
            "estimated across gaps"
        )
        await expect(page.locator("[data-kpi=cost] .kpi-value")).to_contain_text(
            f"{totals['cost']:,.2f}"
        )
        await expect(page.locator("[data-kpi=per-unit] .kpi-value")).to_contain_text(
            _number(totals["kwh_per_unit"])
        )
        for band in totals["bands"]:
            row = page.locator(f"tr[data-band='{band['period']}']")
            await expect(row).to_contain_text(f"{band['cost']:,.2f}")
        assert sum(b["kwh"] for b in totals["bands"]) == pytest.approx(totals["kwh"])

        meter = page.locator("tr[data-device='meter-001']")
        await expect(meter).to_contain_text("kWh counter")
        await expect(meter).to_contain_text("1 counter reset")
        await expect(meter).to_contain_text("1 gap (30 min, consumption estimated)")
        # Before the data began (the range starts 24 h ago, the data about 6 h ago).
        await expect(meter).to_contain_text(re.compile(r"no readings for 1[78] h"))
        cnc = page.locator("tr[data-device='cnc-001']")
        await expect(cnc).to_contain_text("power, integrated")
        await expect(cnc).to_contain_text("240")

        idle = page.locator("table[data-anomaly-rows] tr[data-anomaly=idle_consumption]")
        await expect(idle).to_have_count(1)
        await expect(idle).to_contain_text("cnc-001")

        # By day: one row per local day of the site.
        await page.click("[data-groups] button[data-by=day]")
        await expect(page.locator("table[data-bucket-rows] tbody tr td").first).to_have_text(
            re.compile(r"^\d{4}-\d{2}-\d{2}$")
        )
        assert "by=day" in page.url
        await page.click("[data-groups] button[data-by=hour]")
        await expect(page.locator("table[data-bucket-rows] tbody tr td").first).to_have_text(
            re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:00$")
        )
        # Hours before the data began are unknown, not a measured zero.
        await expect(page.locator("table[data-bucket-rows] tbody tr").last).to_contain_text("—")
        await expect(page.locator("[data-kpi=kwh] .kpi-foot")).to_contain_text("1 meter ·")
        await page.screenshot(path=str(SCREENSHOT), full_page=True)
        await browser.close()
    assert not errors, errors
