"""The web dashboard in a real browser.

A whole stack runs in-process on free ports (embedded MQTT broker, platform with its REST API
and dashboard, a simulated factory of 12 devices publishing over MQTT), and Debian's chromium,
driven headless by Playwright, signs in and checks that live data reaches every page. The
screenshots it leaves in ``tests/artifacts/`` are the ones to look at when changing the design.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect

from tests.browser import ARTIFACTS, CHROMIUM_ARGS, PAGE_TIMEOUT_MS, VIEWPORT, demo_platform
from tiangong.network.mqtt import ProtocolVersion
from tiangong.platform.alarms.rules import RuleScope, ThresholdRule
from tiangong.platform.model import DeviceState, Severity
from tiangong.platform.service import Platform
from tiangong.platform.tokens import ApiRole
from tiangong.sim.factory import SimulatedFactory, plan_factory

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TENANT = "huaxia"
# A device whose user-supplied name and attributes are markup: the dashboard must show them
# as text. It never connects, so it also shows how a device awaiting commissioning looks.
HOSTILE_NAME = '<img src=x onerror="window.__xss=1">Meter <b>X</b>'
HOSTILE_ATTRIBUTES = {"<i>note</i>": '<script>window.__xss=2</script>"quoted"'}


@dataclass(frozen=True)
class Stack:
    url: str
    admin_token: str
    viewer_token: str


async def _wait_for_live_data(platform: Platform) -> None:
    """Until devices are online, CNC alarms are open and the KPI history has samples."""
    async with asyncio.timeout(30):
        while True:
            online = [
                d for d in platform.registry.devices_in_memory() if d.state is DeviceState.ONLINE
            ]
            now = datetime.now(UTC)
            history = await platform.kpis.history(
                TENANT, "*", now - timedelta(hours=1), now + timedelta(minutes=1)
            )
            alarms = await platform.alarms.open_counts(TENANT)
            # A few seconds of KPI history, so that the overview's chart has a line to show.
            if len(online) >= 12 and len(history) >= 6 and alarms.get("critical"):
                return
            await asyncio.sleep(0.25)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """What `tiangong up` runs, on free ports, with KPI samples every second."""
    async with demo_platform(tmp_path, machines=12, kpi_interval=1.0) as (platform, secrets):
        plan = plan_factory(12)
        mqtt_port = platform.settings.mqtt_port
        # A rule that holds at once on every CNC machine, so the alarm pages have rows to act on.
        await platform.alarms.create_rule(
            TENANT,
            ThresholdRule(
                name="Spindle power above test limit",
                metric="power",
                op=">",
                value=0.5,
                severity=Severity.CRITICAL,
                scope=RuleScope(model_id="cnc"),
            ),
        )
        await platform.registry.register_device(
            tenant_id=TENANT,
            site_id="wuxi",
            device_id="meter-099",
            model_id="meter",
            name=HOSTILE_NAME,
            attributes=HOSTILE_ATTRIBUTES,
        )
        _, viewer_token = await platform.tokens.create(
            name="dashboard viewer", role=ApiRole.VIEWER, tenant_id=TENANT
        )
        factory = SimulatedFactory(
            plan=plan,
            secrets=secrets,
            host=platform.settings.mqtt_host,
            port=mqtt_port,
            version=ProtocolVersion.V311,
        )
        sim = asyncio.create_task(factory.run(), name="simulated-factory")
        try:
            await _wait_for_live_data(platform)
            yield Stack(
                url=f"http://127.0.0.1:{platform.http_port}/",
                admin_token=platform.admin_token,
                viewer_token=viewer_token,
            )
        finally:
            sim.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sim


def _chart_points(at_least: int) -> str:
    """A page condition: the (first) chart on the page has drawn at least this many points."""
    return f"Number(document.querySelector('[data-chart]')?.dataset.points) >= {at_least}"


async def _sign_in_screen(browser: Browser, stack: Stack) -> None:
    """Without a token: the sign-in screen, and a wrong token is refused."""
    context = await browser.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    await page.goto(stack.url)
    await expect(page.locator("form[data-signin]")).to_be_visible()
    await expect(page.locator("#token")).to_be_visible()
    await page.screenshot(path=ARTIFACTS / "dashboard-signin.png")
    await page.fill("#token", "tg_not-a-valid-token")
    await page.click("form[data-signin] button[type=submit]")
    await expect(page.locator(".form-error")).to_contain_text("not accepted")
    await context.close()


async def _overview(page: Page, stack: Stack) -> None:
    """The sign-in link lands here: the token leaves the URL, live KPIs and a chart appear."""
    await page.goto(f"{stack.url}#token={stack.admin_token}")
    await expect(page.locator("[data-networking-rate]")).to_have_text(re.compile(r"^\d{1,3}\.\d%$"))
    assert stack.admin_token not in page.url
    assert page.url.endswith("#/overview")
    stored = await page.evaluate("sessionStorage.getItem('tiangong.token')")
    assert stored == stack.admin_token
    await page.wait_for_function(
        "Number(document.querySelector('[data-online]')?.textContent) >= 1"
    )
    await page.wait_for_function(_chart_points(2))
    await expect(page.locator("[data-site]")).to_have_count(3)  # the total and 2 sites
    await expect(page.locator("[data-live]")).to_have_attribute("data-status", "ok")
    await page.screenshot(path=ARTIFACTS / "dashboard-overview.png", full_page=True)


async def _devices(page: Page) -> None:
    """Every device, online ones with live values, user markup shown as text."""
    await page.click("nav >> text=Devices")
    rows = page.locator("table[data-devices] tbody tr[data-device]")
    await expect(rows).to_have_count(13)
    hostile = page.locator("tr[data-device='meter-099']")
    await expect(hostile.locator("a.dev-name")).to_have_text(HOSTILE_NAME)
    await expect(hostile.locator("[data-state=provisioned]")).to_be_visible()
    assert await hostile.locator("img, b").count() == 0
    await expect(page.locator("tr[data-device] [data-state=online]").first).to_be_visible()
    await expect(page.locator("tr[data-device] [data-live-values] .chip").first).to_be_visible()
    await page.fill("[data-search]", "pump")
    await expect(rows).to_have_count(2)
    await page.fill("[data-search]", "")
    await expect(rows).to_have_count(13)
    await page.locator("[data-search]").blur()
    await page.screenshot(path=ARTIFACTS / "dashboard-devices.png", full_page=True)

    # The hostile device's own page: name and attributes as text, and no script ran.
    await page.click("tr[data-device='meter-099'] a.dev-name")
    await expect(page.locator("h1[data-device-name]")).to_contain_text(HOSTILE_NAME)
    attributes = page.locator(".attrs")
    for key, value in HOSTILE_ATTRIBUTES.items():
        await expect(attributes).to_contain_text(key)
        await expect(attributes).to_contain_text(value)
    assert await page.locator("main img, main script, main i, h1 b").count() == 0
    assert await page.evaluate("window.__xss") is None
    await page.go_back()


async def _device_detail(page: Page) -> None:
    """Live tiles whose values change, a chart with data and a tooltip, the history lists."""
    await page.click("tr[data-device='cnc-001'] a.dev-name")
    await expect(page.locator("h1[data-device-name]")).to_contain_text("CNC 001")
    await page.wait_for_function(
        "document.querySelectorAll('.tile [data-value][data-shown]').length >= 5"
    )
    before = await page.locator(".tile [data-value]").all_inner_texts()
    await page.wait_for_function(
        """before => [...document.querySelectorAll('.tile [data-value]')]
            .some((element, i) => element.innerText !== before[i])""",
        arg=before,
    )
    chart = page.locator("[data-chart]")
    await page.wait_for_function(_chart_points(1))
    await expect(chart.locator("canvas")).to_be_visible()

    # Another metric (chosen by its tile) over another range.
    await page.click(".tile[data-metric='power']")
    await page.click("[data-range='15m']")
    await expect(page.locator("[data-metric-select] option:checked")).to_have_text("Power")
    await page.wait_for_function(_chart_points(3))
    box = await chart.locator("canvas").bounding_box()
    assert box is not None
    await page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] / 2)
    await expect(chart.locator(".chart-tooltip")).to_be_visible()
    await expect(chart.locator(".chart-tooltip")).to_contain_text("kW")
    await expect(page.locator("[data-transitions] .timeline li").first).to_be_visible()
    await page.screenshot(path=ARTIFACTS / "dashboard-device-detail.png", full_page=True)


async def _alarms_and_site(page: Page, stack: Stack) -> None:
    """Open alarms listed and acknowledged by an administrator; a site's KPI history."""
    await page.click("nav >> text=Alarms")
    await expect(page.locator("table[data-alarm-table] tbody tr").first).to_be_visible()
    await page.locator("button[data-action=acknowledge]").first.click()
    await expect(page.locator(".toast").last).to_contain_text("Alarm acknowledged")
    await expect(page.locator("[data-alarm-table] .alarm-acknowledged").first).to_be_visible()
    await page.wait_for_timeout(300)  # let the toast finish sliding in
    await page.screenshot(path=ARTIFACTS / "dashboard-alarms.png", full_page=True)

    await page.goto(f"{stack.url}#/sites/suzhou")
    await page.wait_for_function(_chart_points(2))
    await expect(page.locator("table[data-devices] tbody tr").first).to_be_visible()
    # The site's network links: the networking rate per access type and one row per device.
    await expect(page.locator("[data-access]").first).to_contain_text("%")
    await expect(page.locator("table[data-link-rows] tbody tr").first).to_be_visible()
    await page.screenshot(path=ARTIFACTS / "dashboard-site.png", full_page=True)


async def _viewer_may_not_act(browser: Browser, stack: Stack) -> None:
    """A viewer sees the alarms, and the API's refusal to clear one is shown in a toast."""
    context = await browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    page = await context.new_page()
    await page.goto(f"{stack.url}#token={stack.viewer_token}&next=%23%2Falarms")
    await expect(page.locator("table[data-alarm-table] tbody tr").first).to_be_visible()
    await page.locator("button[data-action=clear]").first.click()
    toast = page.locator(".toast.error")
    await expect(toast).to_contain_text("You may not clear alarms")
    await expect(toast).to_contain_text("operator")
    await context.close()


async def test_dashboard_shows_live_data(chromium: Path, stack: Stack) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            await _sign_in_screen(browser, stack)

            context = await browser.new_context(viewport=VIEWPORT)
            context.set_default_timeout(PAGE_TIMEOUT_MS)
            page = await context.new_page()
            requested: list[str] = []
            errors: list[str] = []

            def on_console(message: ConsoleMessage) -> None:
                # Refused requests (the wrong-token check) are logged by chromium itself.
                if message.type == "error" and "Failed to load resource" not in message.text:
                    errors.append(f"console: {message.text}")

            page.on("request", lambda r: requested.append(r.url))
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("console", on_console)

            await _overview(page, stack)
            await _devices(page)
            await _device_detail(page)
            await _alarms_and_site(page, stack)
            assert not [url for url in requested if stack.admin_token in url], "token in a URL"
            assert not errors, errors
            await context.close()

            await _viewer_may_not_act(browser, stack)
        finally:
            await browser.close()
