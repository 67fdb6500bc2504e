"""The national data center and energy pages of the dashboard in a real browser.

A platform runs in-process (embedded broker, real tokens); its app from ``create_app`` gets the
data router mounted in front of the dashboard's static files, the way the integrator wires it,
and reads a national ``AnalyticsStore`` filled with a year of generated reports that went the
real way up: enterprises → regional and industry sub-centers (``aggregate_cells``, with
per-enterprise breakdowns of general data) → national. Debian's chromium, driven headless by
Playwright, checks the grid, the comparison, the series, the drill-down (and its refusal above
the grade) and the energy view, and leaves screenshots in ``tests/artifacts/``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.async_api import ConsoleMessage, Page, async_playwright, expect

from tests.browser import ARTIFACTS, CHROMIUM_ARGS, PAGE_TIMEOUT_MS, VIEWPORT
from tests.servers import free_port
from tiangong.data.aggregate import ENTERPRISES_REPORTING, aggregate_cells
from tiangong.data.catalog import standard_catalog
from tiangong.data.model import Aggregation, Level, Measure, Period, Report
from tiangong.data.store import AnalyticsStore
from tiangong.network.http_listener import HttpListener, bind_listener
from tiangong.platform.api.app import create_app
from tiangong.platform.model import Tenant
from tiangong.platform.service import Platform
from tiangong.platform.settings import PlatformSettings
from tiangong.platform.tokens import ApiRole

from .generated import CREATED, by_industry, by_province, enterprise_report, measure_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CAT = standard_catalog()
MONTHS = [f"{y}-{m:02d}-01" for y, m in [(2025, m) for m in range(1, 13)] + [(2026, 1)]]
# tce per 10 000 CNY of output, roughly as the industries compare.
INTENSITY = {"B06": 2.4, "B07": 1.6, "C25": 3.0, "D44": 4.1, "D45": 0.8, "D46": 0.5}
INDUSTRIES = [*INTENSITY, "C26", "C30", "C31", "C36", "C38", "C39"]
MUNICIPALITIES = ["110000", "120000", "310000", "500000"]


def national_reports() -> list[Report]:
    """A year of enterprise reports across every province, aggregated by both sub-center trees."""
    rng = random.Random(2026)
    regions = [c for c in CAT.regions if not c.endswith("0000")] + MUNICIPALITIES
    companies = []
    for i in range(260):
        region = rng.choice(regions)
        # More (and larger) enterprises on the coast, so the grid has something to show.
        if rng.random() < 0.35:
            region = rng.choice(["320500", "320200", "440300", "440600", "330100", "370200"])
        industry = rng.choice(INDUSTRIES)
        size = rng.choice([1, 2, 3, 5, 8, 13])
        companies.append((f"91{region}MA{i:06d}", region, industry, size))
    reports = []
    for month_index, month in enumerate(MONTHS):
        season = 1.0 + 0.25 * abs(6 - month_index % 12) / 6  # more energy in winter
        for source, region, industry, size in companies:
            measures = {}
            for code, spec in CAT.indicators.items():
                if code == ENTERPRISES_REPORTING:
                    continue
                if spec.aggregation is Aggregation.SUM:
                    measures[code] = Measure(numerator=float(rng.randint(100, 1000) * size))
                else:
                    measures[code] = measure_for(rng, spec.aggregation)
            output = float(rng.randint(800, 1200) * size * 10_000)
            tce = round(
                output / 10_000 * INTENSITY.get(industry, 0.08) * season * rng.uniform(0.8, 1.2)
            )
            measures["OUTPUT_VALUE"] = Measure(numerator=output)
            measures["ENERGY_TCE"] = Measure(numerator=float(tce))
            reports.append(enterprise_report(source, region, industry, measures, start=month))
    forwarded: list[Report] = []
    for level, groups in ((Level.REGIONAL, by_province), (Level.INDUSTRY, by_industry)):
        for key, children in groups(reports).items():
            for month in MONTHS:
                kids = [c for c in children if c.period_start == month]
                forwarded += aggregate_cells(
                    kids,
                    source=f"{level}-{key}",
                    level=level,
                    period=Period.MONTH,
                    period_start=month,
                    catalog=CAT,
                    revision=1,
                    created_at=CREATED,
                )
    return forwarded


@dataclass(frozen=True)
class Stack:
    url: str
    admin_token: str
    viewer_token: str


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    settings = PlatformSettings.load(
        data_dir=tmp_path, demo=True, http_port=None, mqtt_port=free_port(), mqtt_version=4
    )
    reports = await asyncio.to_thread(national_reports)
    async with (
        Platform(settings, embedded_broker=True) as platform,
        AnalyticsStore(path=tmp_path / "national.duckdb", catalog=CAT) as store,
    ):
        await store.put_many(reports)
        await platform.registry.create_tenant(Tenant(id="huaneng", name="华能示范电厂"))
        _, viewer = await platform.tokens.create(
            name="plant viewer", role=ApiRole.VIEWER, tenant_id="huaneng"
        )
        platform.data_store = store  # what a data center run beside the platform does
        app = create_app(platform)
        listener = HttpListener(app, bind_listener("127.0.0.1", 0))
        async with asyncio.TaskGroup() as tasks:
            listener.start(tasks, "national-test-http")
            try:
                yield Stack(
                    url=f"http://127.0.0.1:{listener.port}/",
                    admin_token=platform.admin_token,
                    viewer_token=viewer,
                )
            finally:
                await listener.stop()


async def screenshot(page: Page, name: str) -> None:
    """The whole page from the top (the header is sticky: scrolled, it would sit mid-page)."""
    await page.evaluate("window.scrollTo(0, 0)")
    await page.mouse.move(0, 0)
    await page.screenshot(path=ARTIFACTS / name, full_page=True)


async def at_least(page: Page, selector: str, count: int) -> None:
    """Until the page has at least ``count`` elements matching ``selector`` (they load apart)."""
    await page.wait_for_function(
        "([selector, count]) => document.querySelectorAll(selector).length >= count",
        arg=[selector, count],
    )


async def _national(page: Page, stack: Stack) -> None:
    await page.goto(f"{stack.url}#token={stack.admin_token}&next=%23%2Fnational")
    tiles = page.locator("[data-grid] [data-province]")
    await expect(tiles).to_have_count(34)
    assert await page.locator("[data-grid] button[data-province]").count() >= 28  # with data
    await expect(page.locator("[data-grid] [data-province='710000']")).to_contain_text("no data")
    await expect(page.locator("[data-national-total]")).to_contain_text("tce")
    rows = page.locator("table[data-compare-table] tbody tr")
    await at_least(page, "table[data-compare-table] tbody tr", 28)
    bars = page.locator("[data-bars] [data-bar]")
    await expect(bars).to_have_count(14)
    await expect(page.locator("[data-series] circle[data-point]")).to_have_count(10)
    await expect(page.locator("[data-drill-level]")).to_have_attribute(
        "data-drill-level", "province"
    )
    await screenshot(page, "national.png")

    # Province → prefectures → enterprises.
    await page.click("[data-grid] [data-province='320000']")
    await expect(page.locator("[data-drill-level]")).to_have_attribute(
        "data-drill-level", "prefecture"
    )
    await expect(page.locator("[data-drill-row='320500']")).to_contain_text("苏州市")
    await page.click("[data-drill-row='320500']")
    await expect(page.locator("[data-drill-level]")).to_have_attribute(
        "data-drill-level", "enterprise"
    )
    companies = page.locator("[data-drill-table] tbody tr[data-drill-row^='91320500MA']")
    assert await companies.count() >= 5
    await expect(page.locator("[data-drill-crumbs]")).to_contain_text("全国")
    await expect(page.locator("[data-drill-crumbs]")).to_contain_text("江苏省")
    assert "drill=320500" in page.url
    await screenshot(page, "national-drill.png")

    # Compared by industry, and sorted by name.
    await page.click("[data-by-key='industry']")
    await expect(page.locator("table[data-compare-table] tr[data-row='C38']")).to_be_visible()
    await expect(rows).to_have_count(len(INDUSTRIES))

    # An important indicator: aggregates shown, enterprises refused with the reason.
    await page.select_option("[data-indicator]", "PRODUCTION_VOLUME")
    await expect(page.locator("[data-grade]")).to_have_attribute("data-grade", "important")
    refused = page.locator("[data-drill-refused]")
    await expect(refused).to_contain_text("important data")
    await expect(refused).to_contain_text("苏州市")
    await expect(page.locator("[data-drill-level]")).to_have_attribute(
        "data-drill-level", "refused"
    )
    await page.click("[data-drill-path='']")  # back to the nation
    await expect(page.locator("[data-drill-hint]")).to_contain_text("important data")
    await page.click("[data-grid] [data-province='110000']")  # Beijing: straight to enterprises
    await expect(refused).to_contain_text("北京市")
    await screenshot(page, "national-refused.png")


async def _energy(page: Page) -> None:
    await page.click("nav a[data-nav=energy]")
    industries = page.locator("table[data-energy-table='industry'] tbody tr")
    await expect(industries).to_have_count(len(INTENSITY))
    # Highest intensity first; power and heat (D44) is the most intensive in this data.
    await expect(industries.first).to_have_attribute("data-energy-row", "D44")
    await expect(page.locator("[data-industry-bars] [data-bar]")).to_have_count(len(INTENSITY))
    await expect(page.locator("[data-source-bars] [data-bar]")).to_have_count(15)
    await at_least(page, "table[data-energy-table='source'] tbody tr", 21)
    await expect(page.locator("[data-energy-intensity]")).to_contain_text("tce/10⁴ CNY")
    # Sort the enterprises by consumption: the bars follow.
    await page.click("table[data-energy-table='source'] th[data-sort='energy_tce']")
    await expect(page.locator("[data-source-bars]")).to_have_attribute("data-metric", "energy_tce")
    values = await page.locator(
        "table[data-energy-table='source'] tbody tr td:nth-child(3)"
    ).all_inner_texts()
    numbers = [float(v.replace(",", "")) for v in values]
    assert numbers == sorted(numbers, reverse=True)
    await screenshot(page, "energy.png")


async def _viewer(page: Page, stack: Stack) -> None:
    """A tenant's token reads the aggregates; per-enterprise rows are refused with the reason."""
    await page.goto(f"{stack.url}#token={stack.viewer_token}&next=%23%2Fenergy")
    await expect(page.locator("table[data-energy-table='industry'] tbody tr")).to_have_count(
        len(INTENSITY)
    )
    await expect(page.locator("[data-source-refused]")).to_contain_text("platform administrators")


async def test_national_and_energy_pages(chromium: Path, stack: Stack) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport=VIEWPORT)
            context.set_default_timeout(PAGE_TIMEOUT_MS)
            page = await context.new_page()
            errors: list[str] = []

            def on_console(message: ConsoleMessage) -> None:
                # Refused requests (the 403s this test provokes) are logged by chromium itself.
                if message.type == "error" and "Failed to load resource" not in message.text:
                    errors.append(f"console: {message.text}")

            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("console", on_console)
            await _national(page, stack)
            await _energy(page)
            await context.close()

            context = await browser.new_context(viewport=VIEWPORT)
            context.set_default_timeout(PAGE_TIMEOUT_MS)
            viewer = await context.new_page()
            viewer.on("pageerror", lambda e: errors.append(f"viewer page error: {e}"))
            await _viewer(viewer, stack)
            await context.close()
            assert not errors, errors
        finally:
            await browser.close()
