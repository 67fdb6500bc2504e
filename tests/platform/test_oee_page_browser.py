"""The dashboard's OEE page in a real browser.

A platform runs in-process on free ports with the simulated factory provisioned (not running),
and four hours of two CNC machines' telemetry written through the store API: one with a
45-minute tool breakage, one that starts with a setup. Debian's chromium, driven headless by
Playwright, shows the site's OEE by shift and by day, the machines and the downtime Pareto,
with the figures the API computes from the same data.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from playwright.async_api import ConsoleMessage, async_playwright, expect

from tests.browser import CHROMIUM_ARGS, VIEWPORT, demo_platform
from tiangong.platform.service import Platform
from tiangong.platform.tokens import ApiRole
from tiangong.platform.tsdb.base import PointBatch, SeriesKey

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TENANT = "huaxia"
SCREENSHOT = Path("/tmp/oee-page.png")
MIN = 60_000
STEP = 30_000
RUNNING, SETUP, DOWN = 2, 1, 3  # the cnc state enum: idle, setup, running, down


@dataclass(frozen=True)
class Stack:
    url: str
    platform: Platform
    viewer_token: str


async def _write(
    platform: Platform, device: str, columns: dict[str, list[tuple[int, float]]]
) -> None:
    for metric, points in columns.items():
        [sid] = await platform.store.series_ids([SeriesKey(TENANT, device, metric)])
        await platform.store.write(
            PointBatch(
                series_id=np.full(len(points), sid, dtype=np.int32),
                ts=np.array([t for t, _ in points], dtype=np.int64),
                value=np.array([v for _, v in points], dtype=np.float64),
            )
        )


def _machine(start: int, spans: list[tuple[int, int]]) -> dict[str, list[tuple[int, float]]]:
    """States for consecutive (state, minutes) spans; a good part a minute while running."""
    state, good, bad = [], [], []
    t, made = start, 0
    for value, minutes in spans:
        for _ in range(minutes * MIN // STEP):
            state.append((t, float(value)))
            if value == RUNNING and (t - start) % MIN == 0:
                made += 1
            good.append((t, float(made)))
            bad.append((t, float(made // 50)))
            t += STEP
    return {"state": state, "parts_good": good, "parts_bad": bad}


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with demo_platform(tmp_path) as (platform, _):
        start = (int(time.time() * 1000) - 4 * 60 * MIN) // MIN * MIN
        await _write(
            platform, "cnc-001", _machine(start, [(RUNNING, 120), (DOWN, 45), (RUNNING, 60)])
        )
        await _write(platform, "cnc-002", _machine(start, [(SETUP, 20), (RUNNING, 200)]))
        await platform.registry.record_events(
            [
                {
                    "tenant_id": TENANT,
                    "site_id": "suzhou",
                    "device_id": "cnc-001",
                    "ts": datetime.fromtimestamp((start + 120 * MIN + 2000) / 1000, UTC),
                    "event": "fault",
                    "severity": "major",
                    "data": {"code": "TOOL_BREAKAGE", "expected_downtime_s": 2700},
                }
            ]
        )
        _, viewer = await platform.tokens.create(
            name="oee viewer", role=ApiRole.VIEWER, tenant_id=TENANT
        )
        yield Stack(f"http://127.0.0.1:{platform.http_port}/", platform, viewer)


def _percent(value: float | None) -> str:
    assert value is not None
    return f"{value * 100:.1f}%"


async def test_the_oee_page_shows_shifts_machines_and_the_pareto(
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
        await page.goto(f"{stack.url}#token={stack.viewer_token}&next=%23%2Foee%3Fsite%3Dsuzhou")
        await expect(page.locator("nav a[data-nav=oee]")).to_have_class(re.compile("active"))
        machines = page.locator("table[data-machine-rows] tbody tr[data-machine]")
        await expect(machines).to_have_count(2)  # the site's CNC machines (the others: no profile)

        # The page shows what the API computes from the same data.
        api = await page.evaluate(
            """async () => {
                const r = await fetch('/api/v1/apps/oee?site=suzhou&from=-24h', {
                  headers: {Authorization: 'Bearer ' + sessionStorage.getItem('tiangong.token')}});
                return r.json();
            }"""
        )
        first = next(m for m in api["machines"] if m["device_id"] == "cnc-001")
        assert first["total"]["oee"] is not None
        row = page.locator("tr[data-machine='cnc-001']")
        await expect(row).to_contain_text(_percent(first["total"]["oee"]))
        await expect(page.locator("[data-kpi=oee] .kpi-value")).to_have_text(
            _percent(api["total"]["oee"])
        )
        await expect(page.locator("table[data-period-rows] tbody tr").first).to_contain_text("/")

        # The downtime Pareto: the 20 hours of each machine before its data are unknown time,
        # the largest loss; then the tool breakage, then the setup.
        pareto = page.locator("table[data-pareto-rows] tbody tr[data-loss]")
        await expect(pareto.first).to_contain_text("No data")
        await expect(pareto.nth(1)).to_contain_text("TOOL_BREAKAGE")
        await expect(pareto.nth(1)).to_contain_text("45 min")
        await expect(page.locator("tr[data-loss='setup']")).to_contain_text("20 min")

        # By production day: the same machines, one row per day.
        await page.click("[data-groups] button[data-by=day]")
        await expect(page.locator("table[data-period-rows] tbody tr").first).to_contain_text(
            re.compile(r"^\d{4}-\d{2}-\d{2}")
        )
        assert "by=day" in page.url
        await page.click("[data-groups] button[data-by=shift]")
        await expect(page.locator("table[data-period-rows] tbody tr").first).to_contain_text("/")
        await page.screenshot(path=str(SCREENSHOT), full_page=True)
        await browser.close()
    assert not errors, errors
