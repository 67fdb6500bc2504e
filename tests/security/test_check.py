"""``tiangong security check`` against a real running platform, well and badly configured."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import sqlalchemy as sa
from fastapi import FastAPI
from typer.testing import CliRunner, Result

from tests.platform.conftest import running_platform
from tests.servers import MosquittoProcess
from tiangong.cli import app as cli_app
from tiangong.security.check import Severity, check_deployment, probe_routes


async def test_a_well_configured_platform_passes(tmp_path: Path) -> None:
    async with running_platform(tmp_path, embedded_broker=True) as env:
        report = await check_deployment(
            url=f"http://127.0.0.1:{env.platform.http_port}",
            token=env.platform.admin_token,
            mqtt=("127.0.0.1", env.mqtt_port),
            data_dir=env.platform.settings.data_dir,
        )
    highs = [f for f in report.findings if f.severity is Severity.HIGH]
    assert not highs, highs
    assert not report.failed
    assert report.checked == ["api", "mqtt", "data-dir"]
    # Every route of the real app refused the unauthenticated probe.
    assert not {"api-route-unauthenticated", "api-route-error"} & report.ids()
    # The bootstrap admin token never expires: reported, not fatal.
    assert "tokens-without-expiry" in report.ids()
    assert "backup" in report.ids()


async def test_a_misconfigured_deployment_fails_with_fixes(
    tmp_path: Path, shared_mosquitto: MosquittoProcess
) -> None:
    """Three mistakes: a readable admin token, an anonymous broker, a tampered audit trail."""
    async with running_platform(tmp_path, embedded_broker=True) as env:
        await env.api.patch("/api/v1/tenants/acme", json={"retention_days": 30})
        (env.platform.settings.data_dir / "admin-token").chmod(0o644)
        async with env.platform.db.engine.begin() as conn:
            await conn.execute(sa.text("DROP TRIGGER audit_trail_no_update"))
            await conn.execute(sa.text("UPDATE audit_trail SET actor = 'someone' WHERE seq = 1"))
        report = await check_deployment(
            url=f"http://127.0.0.1:{env.platform.http_port}",
            token=env.platform.admin_token,
            mqtt=("127.0.0.1", shared_mosquitto.port),
            data_dir=env.platform.settings.data_dir,
        )
    assert report.failed
    assert {"secret-file-readable", "mqtt-anonymous", "audit-chain-broken"} <= report.ids()
    by_id = {f.id: f for f in report.findings}
    assert "admin-token" in by_id["secret-file-readable"].evidence
    assert "chmod 600" in by_id["secret-file-readable"].fix
    assert "entry 1" in by_id["audit-chain-broken"].evidence
    assert report.findings[0].severity is Severity.HIGH  # worst first


async def test_a_route_without_authentication_is_found() -> None:
    app = FastAPI()

    @app.get("/api/v1/open")
    async def open_route() -> dict[str, str]:
        return {"secret": "x"}

    @app.post("/api/v1/broken/{item}")
    async def broken(item: str) -> dict[str, str]:
        raise RuntimeError(item)

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        findings = await probe_routes(client, app.openapi())
    assert {(f.id, f.severity) for f in findings} == {
        ("api-route-unauthenticated", Severity.HIGH),
        ("api-route-error", Severity.MEDIUM),
    }


async def test_plain_http_beyond_loopback_and_an_unreachable_api() -> None:
    report = await check_deployment(url="http://192.0.2.1:9", token=None, probe_seconds=0.5)
    assert {"api-plain-http", "api-unreachable"} <= report.ids()
    assert report.failed


async def test_the_cli_verifies_a_stopped_platforms_trail(tmp_path: Path) -> None:
    async with running_platform(tmp_path, embedded_broker=True) as env:
        await env.api.patch("/api/v1/tenants/acme", json={"retention_days": 30})
        await env.api.patch("/api/v1/tenants/acme", json={"retention_days": 31})
        data_dir = env.platform.settings.data_dir
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        # The CLI runs its own event loop: off this test's loop.
        return runner.invoke(cli_app, list(args))

    intact = await asyncio.to_thread(
        invoke, "audit", "verify", "--data-dir", str(data_dir), "--json"
    )
    assert intact.exit_code == 0, intact.output
    assert json.loads(intact.stdout)["ok"] is True
    listed = await asyncio.to_thread(invoke, "audit", "list", "--data-dir", str(data_dir), "--json")
    assert listed.exit_code == 0
    assert any("PATCH /api/v1/tenants/{tenant_id}" in line for line in listed.stdout.splitlines())
    # Cut the tail: the checkpoint beside the database exposes it.
    engine = sa.create_engine(f"sqlite:///{data_dir / 'registry.sqlite'}")
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TRIGGER audit_trail_no_delete"))
        last = conn.execute(sa.text("SELECT max(seq) FROM audit_trail")).scalar_one()
        conn.execute(sa.text("DELETE FROM audit_trail WHERE seq = :s"), {"s": last})
    engine.dispose()
    broken = await asyncio.to_thread(invoke, "audit", "verify", "--data-dir", str(data_dir))
    assert broken.exit_code == 1
    assert "BROKEN" in broken.stdout
    assert "truncated" in broken.stdout
