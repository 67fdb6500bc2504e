"""What the dashboard's browser tests share: Debian's chromium and a provisioned demo platform."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from playwright.async_api import expect

from tests.servers import free_port, unavailable
from tiangong.platform.service import Platform
from tiangong.platform.settings import PlatformSettings
from tiangong.sim.factory import RegistryProvisioner, plan_factory

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Screenshots of every page a browser test saw, to look at (not committed).
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
VIEWPORT = {"width": 1440, "height": 900}
#: How long a page may take, for actions and assertions alike: the platform, its simulator and
#: chromium share two cores. (A context's default timeout does not reach ``expect``, whose own
#: default is 5 s.)
PAGE_TIMEOUT_MS = 20_000
expect.set_options(timeout=PAGE_TIMEOUT_MS)


def require_chromium() -> Path:
    """Debian's chromium, or the test fails (CI) or is skipped (elsewhere) saying how to get it."""
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is missing (apt-get install chromium, or `make browser`)")
    return CHROMIUM


@contextlib.asynccontextmanager
async def demo_platform(
    tmp_path: Path, *, machines: int = 6, **settings: Any
) -> AsyncIterator[tuple[Platform, dict[str, str]]]:
    """A demo platform on free ports (embedded broker, MQTT 3.1.1) with a provisioned factory.

    Yields the platform and the simulated devices' MQTT secrets by device id; ``settings``
    override the platform settings (e.g. ``kpi_interval``).
    """
    options: dict[str, Any] = {
        "data_dir": tmp_path,
        "demo": True,
        "http_port": 0,
        "mqtt_port": free_port(),
        "mqtt_version": 4,
    }
    async with Platform(PlatformSettings.load(**(options | settings)), embedded_broker=True) as p:
        provisioner = RegistryProvisioner(p.registry, p.alarms, tmp_path / "sim-credentials.json")
        secrets = await provisioner.ensure(plan_factory(machines))
        yield p, secrets
