"""The dashboard's Security page in a real browser.

A platform runs in-process on free ports (embedded MQTT broker, REST API, dashboard) with a
provisioned factory, and real attacks raise the security events: a user's password guessed
over the sign-in endpoint, a device's password guessed over MQTT, and a device publishing on
another device's topic. Debian's chromium, driven headless by Playwright, then shows them to a
tenant administrator, who acknowledges one and opens a maintenance window; an auditor reads
without acting, and a viewer is told who may see the page.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, ConsoleMessage, Locator, Page, async_playwright, expect

from tests.browser import ARTIFACTS, CHROMIUM_ARGS, PAGE_TIMEOUT_MS, VIEWPORT, demo_platform
from tiangong.network.access import Channel, DeviceTopic
from tiangong.network.errors import BadCredentialsError, NotAuthorizedError
from tiangong.network.mqtt import MqttClient, ProtocolVersion
from tiangong.platform.service import Platform
from tiangong.platform.tokens import ApiRole
from tiangong.security.monitor import EventKind, EventSeverity

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TENANT = "huaxia"
USER = "wang.wei"
PASSWORD = "lathe spindle morning 42"
SCREENSHOT = Path("/tmp/security-page.png")
ADMIN_NAME = "security lead"


@dataclass(frozen=True)
class Stack:
    url: str
    platform: Platform
    tenant_admin_token: str
    auditor_token: str
    viewer_token: str


async def _guess_a_password(base_url: str) -> None:
    """Five wrong passwords for one user over HTTP, then the right one (the guess succeeded)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        for attempt in range(5):
            response = await client.post(
                "/api/v1/auth/login", json={"username": USER, "password": f"guess number {attempt}"}
            )
            assert response.status_code == 401, response.text
        async with asyncio.timeout(20):
            while True:
                response = await client.post(
                    "/api/v1/auth/login", json={"username": USER, "password": PASSWORD}
                )
                if response.status_code != 429:
                    break
                await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
        assert response.status_code == 200, response.text


async def _misbehave_over_mqtt(port: int, secrets: dict[str, str]) -> None:
    """Six wrong passwords for cnc-002; cnc-001 publishing on cnc-002's topic."""
    for _ in range(6):
        with pytest.raises((BadCredentialsError, NotAuthorizedError)):
            async with MqttClient(
                host="127.0.0.1",
                port=port,
                client_id="cnc-002",
                username="cnc-002",
                password="not-the-password-1",
                version=ProtocolVersion.V311,
            ):
                pass
    async with MqttClient(
        host="127.0.0.1",
        port=port,
        client_id="cnc-001",
        username="cnc-001",
        password=secrets["cnc-001"],
        version=ProtocolVersion.V311,
    ) as device:
        topic = DeviceTopic.build(TENANT, "suzhou", "cnc-002", Channel.TELEMETRY)
        await device.publish(topic, b'{"values": {"power": 1}}', qos=1)


async def _until_events(platform: Platform, kinds: set[EventKind]) -> None:
    """Until the monitor has stored an event of each kind (the writer is asynchronous)."""
    async with asyncio.timeout(20):
        while True:
            items, _ = await platform.security.events(TENANT)
            seen = {e.kind for e in items}
            brute = [e for e in items if e.kind is EventKind.LOGIN_BRUTE_FORCE]
            if kinds <= seen and brute and brute[0].severity is EventSeverity.CRITICAL:
                return
            await asyncio.sleep(0.1)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """A platform with a provisioned factory (no simulator needed), a user and three tokens."""
    async with demo_platform(tmp_path) as (platform, secrets):
        mqtt_port = platform.settings.mqtt_port
        await platform.users.create(
            username=USER, password=PASSWORD, role=ApiRole.OPERATOR, tenant_id=TENANT
        )
        _, tenant_admin = await platform.tokens.create(
            name=ADMIN_NAME, role=ApiRole.TENANT_ADMIN, tenant_id=TENANT
        )
        _, auditor = await platform.tokens.create(
            name="auditor", role=ApiRole.AUDITOR, tenant_id=TENANT
        )
        _, viewer = await platform.tokens.create(
            name="viewer", role=ApiRole.VIEWER, tenant_id=TENANT
        )
        url = f"http://127.0.0.1:{platform.http_port}/"
        await _guess_a_password(url)
        await _misbehave_over_mqtt(mqtt_port, secrets)
        await _until_events(
            platform,
            {
                EventKind.LOGIN_BRUTE_FORCE,
                EventKind.DEVICE_CREDENTIAL_FAILURES,
                EventKind.TOPIC_VIOLATION,
            },
        )
        yield Stack(url, platform, tenant_admin, auditor, viewer)


def _row(page: Page, kind: str) -> Locator:
    return page.locator(f"tr[data-event]:has(.sec-code:text-is('{kind}'))")


async def _tenant_admin(page: Page, stack: Stack) -> None:
    """Tiles, kinds and the table show the events; acknowledge one; open a maintenance window."""
    await page.goto(f"{stack.url}#token={stack.tenant_admin_token}&next=%23%2Fsecurity")
    table = page.locator("table[data-security-table]")
    await expect(table.locator("tbody tr[data-event]")).to_have_count(3)
    await expect(page.locator("nav a[data-nav=security]")).to_have_class(re.compile("active"))

    # The posture: one critical (the guessed password), two medium (the device's misdeeds).
    await expect(page.locator("[data-open-count=critical]")).to_have_text(re.compile(r"^1\s*open$"))
    await expect(page.locator("[data-open-count=medium]")).to_have_text(re.compile(r"^2\s*open$"))
    await expect(page.locator("[data-open-count=high]")).to_have_text(re.compile(r"^0\s*open$"))
    await expect(page.locator("[data-kind-count=topic_violation]")).to_have_text("1")

    brute = _row(page, "login_brute_force")
    await expect(brute.locator("[data-severity=critical]")).to_be_visible()
    await expect(brute).to_contain_text(USER)
    await expect(brute).to_contain_text("password may have been guessed")
    await expect(_row(page, "topic_violation")).to_contain_text("cnc-001")
    guessing = _row(page, "device_credential_failures")
    await expect(guessing).to_contain_text("cnc-002")

    # The evidence opens under the row, and stays open across a refresh.
    await brute.locator("button[data-evidence]").click()
    evidence = page.locator("tr.sec-evidence-row:visible")
    await expect(evidence).to_contain_text("succeeded from")
    await expect(evidence).to_contain_text("127.0.0.1")

    # Acknowledge the password guessing: it leaves the open list and counts as acknowledged.
    await guessing.locator("button[data-acknowledge]").click()
    await expect(page.locator(".toast").last).to_contain_text("Security event acknowledged")
    await expect(table.locator("tbody tr[data-event]")).to_have_count(2)
    await expect(page.locator("[data-open-count=medium]")).to_have_text(re.compile(r"^1\s*open$"))
    await expect(page.locator("[data-acknowledged-count=medium]")).to_have_text("1")
    await page.click("[data-scope] button[data-open='0']")
    acknowledged = page.locator("tr[data-event][data-state=acknowledged]")
    await expect(acknowledged).to_have_count(1)
    await expect(acknowledged).to_contain_text("device_credential_failures")
    await expect(acknowledged).to_contain_text(f"by {ADMIN_NAME}")
    await expect(evidence).to_contain_text("succeeded from")  # still open after the redraws
    stored, _ = await stack.platform.security.events(TENANT, open_only=True)
    assert EventKind.DEVICE_CREDENTIAL_FAILURES not in {e.kind for e in stored}

    # A filter by severity from its tile.
    await page.click("[data-tile=critical]")
    await expect(table.locator("tbody tr[data-event]")).to_have_count(1)
    assert "severity=critical" in page.url
    await page.click("[data-tile=critical]")
    await expect(table.locator("tbody tr[data-event]")).to_have_count(3)

    # A maintenance window for one device; one in the past or too long is refused at once.
    await expect(page.locator("[data-no-windows]")).to_be_visible()
    form = page.locator("form[data-maintenance-form]")
    error = form.locator("[data-form-error]")
    await form.locator("input[name=device]").fill("cnc-001")
    await form.locator("input[name=reason]").fill("CHG-1234 controller firmware 2.4")
    default_until = await form.locator("input[name=until]").input_value()
    await form.locator("input[name=until]").fill("2020-01-01T10:00")
    await form.locator("button[type=submit]").click()
    await expect(error).to_contain_text("must end in the future")
    await form.locator("input[name=until]").fill("2099-01-01T10:00")
    await form.locator("button[type=submit]").click()
    await expect(error).to_contain_text("at most 14 days")
    await form.locator("input[name=until]").fill(default_until)
    await form.locator("button[type=submit]").click()
    await expect(page.locator(".toast").last).to_contain_text("Maintenance window opened")
    await expect(error).to_be_hidden()
    window = page.locator("[data-windows] li")
    await expect(window).to_have_count(1)
    await expect(window).to_contain_text("cnc-001")
    await expect(window).to_contain_text("CHG-1234")
    await expect(window).to_contain_text(f"by {ADMIN_NAME}")
    (opened,) = stack.platform.security.maintenance_windows(TENANT)
    assert opened.device_id == "cnc-001"
    assert opened.reason == "CHG-1234 controller firmware 2.4"
    await expect(form.locator("input[name=reason]")).to_have_value("")

    await page.wait_for_timeout(4500)  # let the toasts go before the picture
    await page.screenshot(path=SCREENSHOT, full_page=True)
    await page.screenshot(path=ARTIFACTS / "dashboard-security.png", full_page=True)


async def _auditor_reads_only(browser: Browser, stack: Stack) -> None:
    """An auditor sees the events but no Acknowledge button and no maintenance form."""
    context = await browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    page = await context.new_page()
    await page.goto(f"{stack.url}#token={stack.auditor_token}&next=%23%2Fsecurity")
    await expect(page.locator("table[data-security-table] tbody tr[data-event]")).to_have_count(2)
    await expect(page.locator("[data-read-only]")).to_be_visible()
    assert await page.locator("button[data-acknowledge], form[data-maintenance-form]").count() == 0
    await expect(page.locator("[data-windows] li")).to_have_count(1)
    # Nothing high is open: the empty state says so. On a laptop screen nothing overflows.
    await page.select_option("[data-severity]", "high")
    await expect(page.locator("[data-table] [data-empty]")).to_contain_text(
        "No security events match"
    )
    await page.set_viewport_size({"width": 1280, "height": 800})
    await page.select_option("[data-severity]", "")
    await expect(page.locator("table[data-security-table] tbody tr[data-event]")).to_have_count(2)
    overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow} px wider than the window"
    await page.screenshot(path=ARTIFACTS / "dashboard-security-auditor.png", full_page=True)
    await context.close()


async def _viewer_is_told(browser: Browser, stack: Stack) -> None:
    """A viewer gets a clear message instead of an error or an empty page."""
    context = await browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    page = await context.new_page()
    await page.goto(f"{stack.url}#token={stack.viewer_token}&next=%23%2Fsecurity")
    refused = page.locator("[data-security-refused]")
    await expect(refused).to_contain_text("needs a tenant administrator or an auditor")
    await expect(refused).to_contain_text("viewer role")
    assert await page.locator("table[data-security-table]").count() == 0
    await page.screenshot(path=ARTIFACTS / "dashboard-security-viewer.png")
    await context.close()


async def test_security_page(chromium: Path, stack: Stack) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport=VIEWPORT)
            context.set_default_timeout(PAGE_TIMEOUT_MS)
            page = await context.new_page()
            errors: list[str] = []

            def on_console(message: ConsoleMessage) -> None:
                if message.type == "error" and "Failed to load resource" not in message.text:
                    errors.append(f"console: {message.text}")

            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("console", on_console)
            await _tenant_admin(page, stack)
            assert not errors, errors
            await context.close()

            await _auditor_reads_only(browser, stack)
            await _viewer_is_told(browser, stack)
        finally:
            await browser.close()
