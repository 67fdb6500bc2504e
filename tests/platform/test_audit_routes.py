"""The platform's audit trail over the API: what is recorded, who may read it, fail closed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.platform.conftest import PlatformEnv, running_platform


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[PlatformEnv]:
    async with running_platform(tmp_path, embedded_broker=True) as running:
        yield running


async def client(env: PlatformEnv, role: str, tenant: str | None) -> httpx.AsyncClient:
    response = await env.api.post(
        "/api/v1/tokens", json={"name": f"{role}@{tenant}", "role": role, "tenant_id": tenant}
    )
    assert response.status_code == 201, response.text
    return httpx.AsyncClient(
        base_url=str(env.api.base_url),
        headers={"Authorization": f"Bearer {response.json()['secret']}"},
    )


async def entries(env: PlatformEnv, **params: object) -> list[dict[str, object]]:
    response = await env.api.get("/api/v1/audit", params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    found: list[dict[str, object]] = response.json()
    return found


async def test_changes_are_recorded_with_who_what_where(env: PlatformEnv) -> None:
    admin = await client(env, "tenant_admin", "acme")
    viewer = await client(env, "viewer", "acme")
    async with admin, viewer:
        body = {"site_id": "p1", "id": "new-1", "model_id": "pump", "name": "secret-name"}
        assert (await admin.post("/api/v1/devices", json=body)).status_code == 201
        assert (await viewer.post("/api/v1/devices", json=body)).status_code == 403
        assert (await admin.patch("/api/v1/devices/new-1", json={"name": "x"})).status_code == 200
        assert (
            await env.api.patch("/api/v1/tenants/other", json={"retention_days": 30})
        ).is_success
        anonymous = await env.api.post("/api/v1/tenants", json={}, headers={"Authorization": ""})
        assert anonymous.status_code == 401
    trail = await entries(env, action="POST /api/v1/devices")
    created = next(e for e in trail if e["outcome"] == "201")
    assert created["actor"].startswith("tenant_admin@acme (tok_")  # type: ignore[union-attr]
    assert created["tenant_id"] == "acme"
    assert created["source"] == "127.0.0.1"
    assert created["target"] == "id=new-1"
    assert created["detail"]["fields"] == ["id", "model_id", "name", "site_id"]  # type: ignore[index]
    assert "secret-name" not in str(created)  # field names, never values
    refused = next(e for e in trail if e["outcome"] == "403")
    assert refused["actor"].startswith("viewer@acme")  # type: ignore[union-attr]
    [patched] = await entries(env, action="PATCH /api/v1/devices/{device_id}")
    assert (patched["target"], patched["outcome"]) == ("device_id=new-1", "200")
    [tenant] = await entries(env, action="PATCH /api/v1/tenants/{tenant_id}")
    assert tenant["tenant_id"] == "other"
    assert tenant["detail"]["role"] == "platform_admin"  # type: ignore[index]
    [unknown] = await entries(env, action="POST /api/v1/tenants")
    assert (unknown["actor"], unknown["outcome"]) == ("anonymous", "401")
    tokens = await entries(env, action="POST /api/v1/tokens")
    assert len(tokens) == 2  # the two tokens this test issued
    verified = (await env.api.get("/api/v1/audit/verify")).json()
    assert verified["ok"] is True
    assert verified["entries"] >= 7


async def test_reads_are_coalesced_per_token_and_minute(env: PlatformEnv) -> None:
    viewer = await client(env, "viewer", "acme")
    async with viewer:
        for _ in range(5):
            assert (await viewer.get("/api/v1/devices")).status_code == 200
        me = (await viewer.get("/api/v1/me")).json()
    await env.platform.audit.flush_token_use(everything=True)
    [use] = await entries(env, action="token.use", actor="viewer@acme")
    assert use["target"] == me["token_id"]
    assert use["tenant_id"] == "acme"
    assert use["detail"]["count"] == 6  # type: ignore[index]
    assert use["detail"]["sources"] == ["127.0.0.1"]  # type: ignore[index]


async def test_data_reads_are_recorded_one_by_one(env: PlatformEnv) -> None:
    viewer = await client(env, "viewer", "acme")
    async with viewer:
        params = {"indicator": "E01", "period": "month"}
        await viewer.get("/api/v1/data/periods", params=params)
        await viewer.get("/api/v1/data/catalog")
    reads = await entries(env, action="data.read")
    assert [r["action"] for r in reads] == ["data.read /api/v1/data/periods"]
    assert "indicator=E01" in reads[0]["detail"]["query"]  # type: ignore[index]


async def test_reading_the_trail_is_confined(env: PlatformEnv) -> None:
    """The auditor reads its own tenant's entries; nobody else but the platform admin reads."""
    acme_admin = await client(env, "tenant_admin", "acme")
    other_admin = await client(env, "tenant_admin", "other")
    auditor = await client(env, "auditor", "acme")
    viewer = await client(env, "viewer", "acme")
    operator = await client(env, "operator", "acme")
    async with acme_admin, other_admin, auditor, viewer, operator:
        await acme_admin.post(
            "/api/v1/devices", json={"site_id": "p1", "id": "a-1", "model_id": "pump"}
        )
        await other_admin.post(
            "/api/v1/devices", json={"site_id": "p1", "id": "o-1", "model_id": "pump"}
        )
        listed = await auditor.get("/api/v1/audit", params={"limit": 1000})
        assert listed.status_code == 200
        mine = listed.json()
        assert mine
        assert {e["tenant_id"] for e in mine} == {"acme"}
        assert "o-1" not in str(mine)
        assert (await auditor.get("/api/v1/audit", params={"tenant": "other"})).status_code == 403
        assert (await auditor.get("/api/v1/audit/verify")).json()["ok"] is True
        for caller in (acme_admin, viewer, operator):
            assert (await caller.get("/api/v1/audit")).status_code == 403
            assert (await caller.get("/api/v1/audit/verify")).status_code == 403
        everything = (await env.api.get("/api/v1/audit", params={"limit": 1000})).json()
        assert {"acme", "other"} <= {e["tenant_id"] for e in everything}
        page = (await env.api.get("/api/v1/audit", params={"limit": 2})).json()
        older = (
            await env.api.get("/api/v1/audit", params={"limit": 2, "before_seq": page[-1]["seq"]})
        ).json()
        assert [e["seq"] for e in older] == [page[-1]["seq"] - 1, page[-1]["seq"] - 2]
    async with httpx.AsyncClient(base_url=str(env.api.base_url)) as anonymous:
        assert (await anonymous.get("/api/v1/audit")).status_code == 401
        assert (await anonymous.get("/api/v1/audit/verify")).status_code == 401


async def test_tampering_shows_in_verify(env: PlatformEnv) -> None:
    await env.api.patch("/api/v1/tenants/acme", json={"retention_days": 40})
    await env.api.patch("/api/v1/tenants/acme", json={"retention_days": 50})
    first = (await entries(env))[-1]["seq"]
    trail = env.platform.audit
    async with env.platform.db.engine.begin() as conn:
        await conn.execute(sa.text("DROP TRIGGER audit_trail_no_update"))
        await conn.execute(
            sa.text("UPDATE audit_trail SET outcome = '500' WHERE seq = :seq"), {"seq": first}
        )
    result = (await env.api.get("/api/v1/audit/verify")).json()
    assert result["ok"] is False
    assert (result["first_broken"], result["problem"]) == (first, "edited")
    assert trail.checkpoint is not None


async def test_changes_fail_closed_when_the_trail_is_unwritable(env: PlatformEnv) -> None:
    """A real fault: the trail's table is gone. The change is reported, then changes stop."""
    engine = env.platform.db.engine
    async with engine.begin() as conn:
        await conn.execute(sa.text("DROP TABLE audit_trail"))
    env.platform.audit.timeout = 1.0
    applied = await env.api.patch("/api/v1/tenants/acme", json={"retention_days": 41})
    assert applied.status_code == 503
    assert "applied but the audit trail could not record it" in applied.json()["detail"]
    refused = await env.api.patch("/api/v1/tenants/acme", json={"retention_days": 42})
    assert refused.status_code == 503
    tenant = (await env.api.get("/api/v1/tenants/acme")).json()
    assert tenant["retention_days"] == 41  # the refused change never ran
    # Data reads are held back too: nothing leaves unrecorded.
    held = await env.api.get("/api/v1/data/periods", params={"indicator": "E01", "period": "month"})
    assert held.status_code == 503
    await env.platform.audit.open()  # the trail is back (an operator restored the table)
    resumed = await env.api.patch("/api/v1/tenants/acme", json={"retention_days": 43})
    assert resumed.status_code == 200
    trail = await entries(env)
    assert [e["action"] for e in reversed(trail)][:2] == [
        "audit.resumed",
        "PATCH /api/v1/tenants/{tenant_id}",
    ]
    # Lost: the change applied while the trail was down, and the held-back data read.
    assert trail[-1]["detail"]["unrecorded"] == 2  # type: ignore[index]


async def test_platform_identifier_writes_are_recorded(tmp_path: Path) -> None:
    """The publisher's writes to the enterprise node land in the platform's trail."""
    import asyncio  # noqa: PLC0415

    from tests.identity.test_trace import running_hierarchy  # noqa: PLC0415
    from tiangong.platform.identifiers import IdentifierPublisher  # noqa: PLC0415

    async with (
        running_hierarchy(tmp_path) as h,
        running_platform(tmp_path, wait_connected=False) as env,
        IdentifierPublisher(
            node=h.enterprise.address,
            identity=h.enterprise.admin,
            prefix="88.100.1",
            registry=env.platform.registry,
            tenant_id="acme",
            audit=env.platform.audit,
        ) as publisher,
    ):
        async with asyncio.timeout(10):
            await publisher.drained()
        written = await env.platform.audit.entries(action="identifier.write")
        assert len(written) == publisher.stats.published == 6
        assert {e.tenant_id for e in written} == {"acme"}
        assert {e.outcome for e in written} == {"ok"}
        assert "88.100.1/pump-1" in {e.target for e in written}
        assert written[0].actor == str(h.enterprise.admin.reference)
