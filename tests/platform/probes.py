"""Probes of a running platform shared by the Sparkplug tests: wait, read the API, count."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tests.platform.conftest import PlatformEnv
from tiangong.platform.ingest.dead_letters import DeadLetter
from tiangong.platform.model import DeviceState


def now_ms() -> int:
    return int(time.time() * 1000)


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll ``check`` (a plain or an async predicate) until it holds."""
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if await result if inspect.isawaitable(result) else result:
                return
            await asyncio.sleep(0.03)


async def latest(env: PlatformEnv, device: str) -> dict[str, Any]:
    response = await env.api.get(f"/api/v1/devices/{device}/latest")
    if response.status_code == 404:
        return {}
    assert response.status_code == 200, response.text
    return {v["metric"]: v["value"] for v in response.json()["values"]}


async def wait_latest(env: PlatformEnv, device: str, **expected: Any) -> None:
    async def arrived() -> bool:
        values = await latest(env, device)
        return all(values.get(k) == v for k, v in expected.items())

    await eventually(arrived)


async def series(env: PlatformEnv, device: str, metric: str) -> list[tuple[int, Any]]:
    response = await env.api.get(
        f"/api/v1/devices/{device}/telemetry",
        params={"metric": metric, "start": "-1h", "end": str(now_ms() + 60_000)},
    )
    assert response.status_code == 200, response.text
    return [(t, v) for t, v in response.json()["points"]]


def state_of(env: PlatformEnv, device: str) -> DeviceState | None:
    entry = env.platform.registry.lookup(device)
    return entry.device.state if entry is not None else None


async def dead_letters(env: PlatformEnv, reason: str | None = None) -> list[DeadLetter]:
    return await env.platform.dead_letters.list(None, reason=reason, limit=1000)


async def registered_from_birth(
    env: PlatformEnv, device: str, *, node: str = "gw-1", site: str = "p1", tenant: str = "acme"
) -> dict[str, Any]:
    """Check that a Sparkplug DBIRTH registered ``device`` under ``node``, online, with the
    thing model ``spb-<device>``; returns that thing model as the API gives it."""
    response = await env.api.get(f"/api/v1/devices/{device}")
    assert response.status_code == 200, response.text
    registered = response.json()
    assert registered["gateway_id"] == node
    assert registered["site_id"] == site
    assert registered["tenant_id"] == tenant
    assert registered["model_id"] == f"spb-{device}"
    assert registered["state"] == "online"
    assert registered["attributes"] == {"sparkplug": f"{site}/{node}/{device}"}
    model = await env.api.get(f"/api/v1/thing-models/spb-{device}", params={"tenant": tenant})
    assert model.status_code == 200, model.text
    return dict(model.json())
