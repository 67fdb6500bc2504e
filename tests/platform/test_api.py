"""The REST API: the stable contract, tenant isolation, roles, errors."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.platform.conftest import PUMP_MODEL, PlatformEnv, running_platform
from tiangong.platform.alarms.rules import AlarmSignal, SignalKind, ThresholdRule
from tiangong.platform.tsdb.base import PointBatch, SeriesKey


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[PlatformEnv]:
    async with running_platform(tmp_path, embedded_broker=True) as running:
        yield running


async def token(env: PlatformEnv, role: str, tenant: str | None) -> httpx.AsyncClient:
    response = await env.api.post(
        "/api/v1/tokens", json={"name": f"{role}@{tenant}", "role": role, "tenant_id": tenant}
    )
    assert response.status_code == 201, response.text
    return httpx.AsyncClient(
        base_url=str(env.api.base_url),
        headers={"Authorization": f"Bearer {response.json()['secret']}"},
    )


async def seed_data(env: PlatformEnv) -> None:
    store = env.platform.store
    now = int(time.time() * 1000)
    [flow] = await store.series_ids([SeriesKey("acme", "pump-1", "flow")])
    [other] = await store.series_ids([SeriesKey("other", "o-pump", "flow")])
    ts = np.arange(now - 600_000, now, 10_000, dtype=np.int64)
    await store.write(
        PointBatch(
            series_id=np.full(len(ts), flow, dtype=np.int32),
            ts=ts,
            value=np.linspace(0, 100, len(ts)),
        )
    )
    await store.write(
        PointBatch(
            series_id=np.asarray([other], dtype=np.int32),
            ts=np.asarray([now], dtype=np.int64),
            value=np.asarray([9.0]),
        )
    )


async def test_health_and_authentication(env: PlatformEnv) -> None:
    async with httpx.AsyncClient(base_url=str(env.api.base_url)) as anonymous:
        health = await anonymous.get("/healthz")
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        missing = await anonymous.get("/api/v1/devices")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = await anonymous.get("/api/v1/devices", headers={"Authorization": "Bearer tg_x"})
        assert wrong.status_code == 401
        basic = await anonymous.get("/api/v1/devices", headers={"Authorization": "Basic eDp5"})
        assert basic.status_code == 401
        assert (await anonymous.get("/metrics")).status_code == 401
        spec = (await anonymous.get("/openapi.json")).json()
        for path in (
            "/api/v1/devices",
            "/api/v1/devices/{device_id}",
            "/api/v1/devices/{device_id}/latest",
            "/api/v1/devices/{device_id}/telemetry",
            "/api/v1/alarms",
            "/api/v1/sites/{site_id}/kpis",
        ):
            assert path in spec["paths"]


async def test_contract_routes(env: PlatformEnv) -> None:
    await seed_data(env)
    page = (await env.api.get("/api/v1/devices", params={"limit": 2})).json()
    assert set(page) == {"items", "total"}
    assert page["total"] == 7
    assert len(page["items"]) == 2
    second = (await env.api.get("/api/v1/devices", params={"limit": 2, "offset": 2})).json()
    assert {d["id"] for d in second["items"]}.isdisjoint({d["id"] for d in page["items"]})
    by_site = (await env.api.get("/api/v1/devices", params={"site": "p1", "tenant": "acme"})).json()
    assert by_site["total"] == 6
    device = (await env.api.get("/api/v1/devices/pump-1")).json()
    assert (device["tenant_id"], device["site_id"], device["model_id"]) == ("acme", "p1", "pump")
    latest = (await env.api.get("/api/v1/devices/pump-1/latest")).json()
    assert latest["values"][0]["metric"] == "flow"
    assert latest["values"][0]["unit"] == "m3/h"
    raw = (
        await env.api.get(
            "/api/v1/devices/pump-1/telemetry", params={"metric": "flow", "start": "-1h"}
        )
    ).json()
    assert len(raw["points"]) == 60
    agg = (
        await env.api.get(
            "/api/v1/devices/pump-1/telemetry",
            params={
                "metric": "flow",
                "start": "-1h",
                "end": "now",
                "interval": "5m",
                "agg": "count",
            },
        )
    ).json()
    assert sum(v for _, v in agg["points"]) == 60
    assert agg["interval_ms"] == 300_000
    alarms = (await env.api.get("/api/v1/alarms")).json()
    assert alarms == {"items": [], "total": 0}
    kpis = (await env.api.get("/api/v1/sites/p1/kpis", params={"tenant": "acme"})).json()
    assert kpis["current"]["registered"] == 5  # old-1 is decommissioned and not counted
    assert kpis["current"]["networking_rate"] == 0.0


async def test_errors_say_what_is_wrong(env: PlatformEnv) -> None:
    missing = await env.api.get("/api/v1/devices/nope")
    assert missing.status_code == 404
    assert "nope" in missing.json()["detail"]
    duplicate = await env.api.post(
        "/api/v1/devices",
        json={"tenant_id": "acme", "site_id": "p1", "id": "pump-1", "model_id": "pump"},
    )
    assert duplicate.status_code == 409
    bad_name = await env.api.post(
        "/api/v1/devices",
        json={"tenant_id": "acme", "site_id": "p1", "id": "bad name", "model_id": "pump"},
    )
    assert bad_name.status_code == 422
    no_tenant = await env.api.post(
        "/api/v1/devices", json={"site_id": "p1", "id": "x1", "model_id": "pump"}
    )
    assert no_tenant.status_code == 422
    assert "which tenant" in no_tenant.json()["detail"]
    for params in (
        {"metric": "flow", "interval": "5 parsecs"},
        {"metric": "flow", "start": "yesterday-ish"},
        {"metric": "flow", "start": "-1h", "end": "-2h"},
        {"metric": "flow", "interval": "10ms"},
    ):
        response = await env.api.get("/api/v1/devices/pump-1/telemetry", params=params)
        assert response.status_code == 422, params
    unknown_metric = await env.api.get(
        "/api/v1/devices/pump-1/telemetry", params={"metric": "pressure"}
    )
    assert unknown_metric.status_code == 404
    decommission = await env.api.post("/api/v1/devices/old-1/decommission")
    assert decommission.status_code == 409


async def test_tenants_never_see_each_other(env: PlatformEnv) -> None:
    await seed_data(env)
    await env.platform.alarms.create_rule(
        "acme", ThresholdRule(name="acme rule", metric="flow", op=">", value=1)
    )
    other = await token(env, "tenant_admin", "other")
    acme = await token(env, "viewer", "acme")
    async with other, acme:
        listed = (await other.get("/api/v1/devices")).json()
        assert [d["id"] for d in listed["items"]] == ["o-pump"]
        assert listed["total"] == 1
        for path in (
            "/api/v1/devices/pump-1",
            "/api/v1/devices/pump-1/latest",
            "/api/v1/devices/pump-1/telemetry?metric=flow",
            "/api/v1/devices/pump-1/events",
            "/api/v1/devices/pump-1/transitions",
            "/api/v1/tenants/acme",
            "/api/v1/rules/1",
        ):
            assert (await other.get(path)).status_code == 404, path
        assert (await other.patch("/api/v1/devices/pump-1", json={"name": "x"})).status_code == 404
        assert (await other.post("/api/v1/devices/pump-1/decommission")).status_code == 404
        assert (await other.post("/api/v1/devices/pump-1/credentials")).status_code == 404
        assert (await other.get("/api/v1/devices", params={"tenant": "acme"})).status_code == 403
        assert (await other.get("/api/v1/rules")).json() == []
        assert [s["tenant_id"] for s in (await other.get("/api/v1/sites")).json()] == ["other"]
        assert (await other.get("/api/v1/sites/p2/kpis")).status_code == 404
        own = (await other.get("/api/v1/sites/p1/kpis")).json()
        assert own["tenant_id"] == "other"
        assert {t["id"] for t in (await other.get("/api/v1/tenants")).json()} == {"other"}
        assert [m["id"] for m in (await other.get("/api/v1/thing-models")).json()] == [
            "gateway",
            "pump",
        ]
        created = await other.post(
            "/api/v1/devices",
            json={"tenant_id": "acme", "site_id": "p1", "id": "sneaky", "model_id": "pump"},
        )
        assert created.status_code == 403
        overview = (await other.get("/api/v1/overview")).json()
        assert overview["tenants"] == [{"id": "other", "name": "Other Co"}]
        assert sum(overview["devices"].values()) == 1
        assert (await acme.get("/api/v1/devices/o-pump")).status_code == 404
        assert (await acme.get("/api/v1/devices")).json()["total"] == 6


async def test_roles(env: PlatformEnv) -> None:
    await env.platform.alarms.create_rule(
        "acme", ThresholdRule(name="r", metric="flow", op=">", value=1)
    )
    await seed_data(env)
    # Feed the rule through the service (as ingest would) to have an alarm to act on.
    device = env.platform.registry.lookup("pump-1")
    assert device is not None
    await env.platform.alarms.apply(
        [AlarmSignal(SignalKind.RAISE, 1, device.device, "flow", int(time.time() * 1000), 50.0)]
    )
    viewer = await token(env, "viewer", "acme")
    operator = await token(env, "operator", "acme")
    admin = await token(env, "tenant_admin", "acme")
    async with viewer, operator, admin:
        me = (await viewer.get("/api/v1/me")).json()
        assert me == {
            "token_id": me["token_id"],
            "name": "viewer@acme",
            "role": "viewer",
            "tenant_id": "acme",
        }
        assert (await env.api.get("/api/v1/me")).json()["tenant_id"] is None
        device_body = {"site_id": "p1", "id": "new-1", "model_id": "pump"}
        assert (await viewer.post("/api/v1/devices", json=device_body)).status_code == 403
        assert (await viewer.post("/api/v1/alarms/1/acknowledge")).status_code == 403
        assert (await operator.post("/api/v1/devices", json=device_body)).status_code == 403
        acked = await operator.post("/api/v1/alarms/1/acknowledge")
        assert acked.status_code == 200
        assert acked.json()["state"] == "acknowledged"
        assert acked.json()["acknowledged_by"] == "operator@acme"
        created = await admin.post("/api/v1/devices", json=device_body)
        assert created.status_code == 201
        assert created.json()["mqtt"]["username"] == "new-1"
        assert len(created.json()["mqtt"]["password"]) >= 43
        tenant = {"id": "t3", "name": "T3"}
        assert (await admin.post("/api/v1/tenants", json=tenant)).status_code == 403
        assert (await env.api.post("/api/v1/tenants", json=tenant)).status_code == 201
        escalate = await admin.post("/api/v1/tokens", json={"name": "x", "role": "platform_admin"})
        assert escalate.status_code == 403
        assert (await viewer.get("/metrics")).status_code == 403
        assert (await viewer.get("/api/v1/tokens")).status_code == 403
        cleared = await operator.post("/api/v1/alarms/1/clear")
        assert cleared.json()["state"] == "cleared"
        assert (await operator.post("/api/v1/alarms/1/clear")).status_code == 409


async def test_thing_model_versions_import_export(env: PlatformEnv) -> None:
    document = PUMP_MODEL.to_json()
    same = await env.api.post("/api/v1/thing-models", params={"tenant_id": "acme"}, json=document)
    assert same.json()["version"] == 1  # identical re-import: no new version
    changed = dict(document, description="now with a note")
    second = await env.api.post("/api/v1/thing-models", params={"tenant_id": "acme"}, json=changed)
    assert second.json()["version"] == 2
    versions = await env.api.get("/api/v1/thing-models/pump/versions", params={"tenant": "acme"})
    assert versions.json() == [1, 2]
    exported = (
        await env.api.get("/api/v1/thing-models/pump", params={"tenant": "acme", "version": 1})
    ).json()
    assert exported == dict(document, version=1)
    bad = await env.api.post(
        "/api/v1/thing-models",
        params={"tenant_id": "acme"},
        json={"id": "x", "properties": [{"id": "s", "type": "enum"}]},
    )
    assert bad.status_code == 422
    # A device pinned to version 1 stays on it until moved.
    pinned = await env.api.patch("/api/v1/devices/pump-1", json={"model_version": 2})
    assert pinned.json()["model_version"] == 2


async def test_token_revocation_is_immediate(env: PlatformEnv) -> None:
    response = await env.api.post(
        "/api/v1/tokens", json={"name": "temp", "role": "viewer", "tenant_id": "acme"}
    )
    secret, token_id = response.json()["secret"], response.json()["token"]["id"]
    headers = {"Authorization": f"Bearer {secret}"}
    assert (await env.api.get("/api/v1/devices", headers=headers)).status_code == 200
    assert (await env.api.delete(f"/api/v1/tokens/{token_id}")).status_code == 204
    assert (await env.api.get("/api/v1/devices", headers=headers)).status_code == 401
    expired = await env.api.post(
        "/api/v1/tokens",
        json={
            "name": "old",
            "role": "viewer",
            "tenant_id": "acme",
            "expires_at": "2020-01-01T00:00:00Z",
        },
    )
    old = {"Authorization": f"Bearer {expired.json()['secret']}"}
    assert (await env.api.get("/api/v1/devices", headers=old)).status_code == 401


async def test_token_scopes_lifetime_and_auditor(env: PlatformEnv) -> None:
    issued = await env.api.post(
        "/api/v1/tokens",
        json={
            "name": "dev-only",
            "role": "viewer",
            "tenant_id": "acme",
            "scopes": ["devices:read"],
        },
    )
    assert issued.status_code == 201, issued.text
    record = issued.json()["token"]
    assert record["scopes"] == ["devices:read"]
    lifetime = datetime.fromisoformat(record["expires_at"]) - datetime.now(UTC)
    assert timedelta(days=89) < lifetime <= timedelta(days=90)  # the default lifetime
    narrow = {"Authorization": f"Bearer {issued.json()['secret']}"}
    assert (await env.api.get("/api/v1/devices", headers=narrow)).status_code == 200
    refused = await env.api.get("/api/v1/devices/pump-1/latest", headers=narrow)
    assert refused.status_code == 403
    assert "telemetry:read" in refused.json()["detail"]
    me = (await env.api.get("/api/v1/auth/me", headers=narrow)).json()
    assert (me["kind"], me["scopes"], me["tenant_id"]) == ("token", ["devices:read"], "acme")

    # Scopes the role does not hold, and lifetimes beyond the maximum, are refused.
    beyond = await env.api.post(
        "/api/v1/tokens",
        json={"name": "x", "role": "viewer", "tenant_id": "acme", "scopes": ["devices:write"]},
    )
    assert beyond.status_code == 422
    assert "does not hold devices:write" in beyond.json()["detail"]
    forever = (datetime.now(UTC) + timedelta(days=400)).isoformat()
    too_long = await env.api.post(
        "/api/v1/tokens",
        json={"name": "x", "role": "viewer", "tenant_id": "acme", "expires_at": forever},
    )
    assert too_long.status_code == 422

    # Nobody grants what they do not hold: a narrowed admin token issues only narrower tokens,
    # and a tenant admin issues no auditor tokens (only a platform admin does).
    admin = await env.api.post(
        "/api/v1/tokens",
        json={
            "name": "narrow admin",
            "role": "tenant_admin",
            "tenant_id": "acme",
            "scopes": ["access:admin", "devices:read"],
        },
    )
    admin_headers = {"Authorization": f"Bearer {admin.json()['secret']}"}
    wide = await env.api.post(
        "/api/v1/tokens", headers=admin_headers, json={"name": "v", "role": "viewer"}
    )
    assert wide.status_code == 403
    narrower = await env.api.post(
        "/api/v1/tokens",
        headers=admin_headers,
        json={"name": "v", "role": "viewer", "scopes": ["devices:read"]},
    )
    assert narrower.status_code == 201
    assert narrower.json()["token"]["tenant_id"] == "acme"
    tenant_admin = await token(env, "tenant_admin", "acme")
    async with tenant_admin:
        auditor_by_admin = await tenant_admin.post(
            "/api/v1/tokens", json={"name": "a", "role": "auditor"}
        )
        assert auditor_by_admin.status_code == 403
        auditor = await env.api.post(
            "/api/v1/tokens", json={"name": "auditor", "role": "auditor", "tenant_id": "acme"}
        )
        assert auditor.status_code == 201
        # ...nor revokes one: it would blind the auditor.
        revoke = await tenant_admin.delete(f"/api/v1/tokens/{auditor.json()['token']['id']}")
        assert revoke.status_code == 403
    auditor_headers = {"Authorization": f"Bearer {auditor.json()['secret']}"}
    for path in ("/api/v1/devices", "/api/v1/alarms", "/api/v1/overview", "/api/v1/tokens"):
        assert (await env.api.get(path, headers=auditor_headers)).status_code == 403, path
    me = (await env.api.get("/api/v1/auth/me", headers=auditor_headers)).json()
    assert me["scopes"] == ["audit:read"]
