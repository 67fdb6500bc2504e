"""Site links: declared network profiles joined with measured link quality."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from tests.platform.conftest import PlatformEnv, running_platform
from tiangong.network.profile import NetworkProfile
from tiangong.platform.database import Database, sqlite_url
from tiangong.platform.lifecycle import LifecycleTrigger
from tiangong.platform.tsdb.base import PointBatch, SeriesKey


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[PlatformEnv]:
    async with running_platform(tmp_path, embedded_broker=True) as running:
        yield running


async def write_link(env: PlatformEnv, device: str, rtt: float, loss: float) -> None:
    store = env.platform.store
    keys = [SeriesKey("acme", device, m) for m in ("link.rtt_ms", "link.loss_pct")]
    ids = await store.series_ids(keys)
    now = int(time.time() * 1000)
    await store.write(
        PointBatch(
            series_id=np.asarray(ids, dtype=np.int32),
            ts=np.asarray([now, now], dtype=np.int64),
            value=np.asarray([rtt, loss]),
        )
    )


async def test_links_join_profile_and_measured_quality(env: PlatformEnv) -> None:
    created = await env.api.post(
        "/api/v1/devices",
        json={
            "tenant_id": "acme",
            "site_id": "p1",
            "id": "agv-1",
            "model_id": "pump",
            "network": {"access": "5g", "slice": "1-000001", "five_qi": 82},
        },
    )
    assert created.status_code == 201, created.text
    assert created.json()["device"]["network"]["slice"] == "1-000001"
    patched = await env.api.patch("/api/v1/devices/pump-2", json={"network": {"access": "wifi"}})
    assert patched.status_code == 200, patched.text
    registry = env.platform.registry
    for device in ("agv-1", "pump-1", "pump-2"):
        await registry.apply_lifecycle(device, LifecycleTrigger.CONNECT, reason="test")
    await write_link(env, "agv-1", rtt=95.0, loss=0.0)  # slow for a 5G URLLC slice
    await write_link(env, "pump-2", rtt=20.0, loss=0.0)
    await write_link(env, "c-2", rtt=0.0, loss=100.0)  # its gateway cannot reach it

    response = await env.api.get("/api/v1/sites/p1/links", params={"tenant": "acme"})
    assert response.status_code == 200, response.text
    body = response.json()
    devices = {d["device_id"]: d for d in body["devices"]}
    assert "old-1" not in devices  # decommissioned
    assert devices["agv-1"]["network"]["access"] == "5g"
    assert devices["agv-1"]["rtt_ms"] == 95.0
    assert devices["agv-1"]["degraded"] == ["round trip 95 ms > 50 ms"]
    assert devices["pump-2"]["degraded"] == []
    assert devices["pump-1"]["rtt_ms"] is None
    assert devices["c-1"]["degraded"] == []  # provisioned, never measured: nothing to judge
    assert devices["c-2"]["degraded"] == ["loss 100.0 % > 1 %"]  # never connected, measured
    five_g = body["by_access"]["5g"]
    assert five_g == {"registered": 1, "online": 1, "degraded": 1, "networking_rate": 1.0}
    assert body["by_access"]["wifi"]["online"] == 1
    wired = body["by_access"]["wired"]
    assert wired["registered"] == 4  # pump-1, gw-1, c-1, c-2
    assert wired["degraded"] == 1  # c-2
    assert wired["networking_rate"] == 0.25

    await registry.apply_lifecycle("agv-1", LifecycleTrigger.DISCONNECT, reason="test")
    body = (await env.api.get("/api/v1/sites/p1/links", params={"tenant": "acme"})).json()
    assert {d["device_id"]: d for d in body["devices"]}["agv-1"]["degraded"] == ["offline"]


async def test_links_refuse_bad_profile_and_other_tenants(env: PlatformEnv) -> None:
    bad = await env.api.post(
        "/api/v1/devices",
        json={
            "tenant_id": "acme",
            "site_id": "p1",
            "id": "x-1",
            "model_id": "pump",
            "network": {"access": "wired", "slice": "1-000001"},
        },
    )
    assert bad.status_code == 422
    assert "5G access only" in bad.text
    missing = await env.api.get("/api/v1/sites/nowhere/links", params={"tenant": "acme"})
    assert missing.status_code == 404


async def test_database_from_before_network_profiles_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "meta.sqlite"
    database = Database(url=sqlite_url(path))
    await database.open()
    async with database.engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO tenants (id, name, retention_days, created_at)"
                " VALUES ('t', 'T', 30, '2026-01-01')"
            )
        )
        await conn.execute(sa.text("ALTER TABLE devices DROP COLUMN network"))
    await database.close()

    reopened = Database(url=sqlite_url(path))
    await reopened.open()
    async with reopened.engine.connect() as conn:
        columns = {
            c["name"]
            for c in await conn.run_sync(lambda sync: sa.inspect(sync).get_columns("devices"))
        }
        tenants = (await conn.execute(sa.text("SELECT id FROM tenants"))).scalars().all()
    await reopened.close()
    assert "network" in columns
    assert tenants == ["t"]
    assert NetworkProfile.model_validate({}) == NetworkProfile()


async def test_device_moves_behind_another_gateway(env: PlatformEnv) -> None:
    moved = await env.api.patch("/api/v1/devices/pump-2", json={"gateway_id": "gw-1"})
    assert moved.status_code == 200, moved.text
    assert moved.json()["gateway_id"] == "gw-1"
    entry = env.platform.registry.lookup("pump-2")
    assert entry is not None
    assert entry.device.gateway_id == "gw-1"
    itself = await env.api.patch("/api/v1/devices/gw-1", json={"gateway_id": "gw-1"})
    assert itself.status_code == 409
    elsewhere = await env.api.patch("/api/v1/devices/pump-2", json={"gateway_id": "o-pump"})
    assert elsewhere.status_code == 404  # another tenant's device is no gateway of ours
