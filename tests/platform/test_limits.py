"""API request limits on a running platform: one client hammering, others unaffected; sizes.

The clients bind distinct loopback addresses (127.0.0.2, 127.0.0.3...) so the server sees
distinct peers, as it would see distinct machines. Rates are set to refill almost nothing during
a test (0.01/s), so the outcomes are counts, not timings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.platform.conftest import PlatformEnv, running_platform

ADDRESS_BURST = 30
CREDENTIAL_BURST = 12


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[PlatformEnv]:
    async with running_platform(
        tmp_path,
        embedded_broker=True,
        api_rate_limit=0.01,
        api_burst=ADDRESS_BURST,
        api_token_rate_limit=0.01,
        api_token_burst=CREDENTIAL_BURST,
        api_max_body_bytes=4096,
    ) as running:
        yield running


def client_from(env: PlatformEnv, address: str, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        base_url=str(env.api.base_url),
        headers=headers,
        transport=httpx.AsyncHTTPTransport(local_address=address),
    )


async def new_token(env: PlatformEnv, tenant: str) -> str:
    response = await env.api.post(
        "/api/v1/tokens", json={"name": f"op@{tenant}", "role": "operator", "tenant_id": tenant}
    )
    assert response.status_code == 201, response.text
    secret: str = response.json()["secret"]
    return secret


def refused(env: PlatformEnv, reason: str) -> float:
    value = env.platform.metrics.registry.get_sample_value(
        "tiangong_api_refused_total", {"reason": reason}
    )
    return value or 0.0


async def test_a_hammering_address_gets_429_while_others_are_served(env: PlatformEnv) -> None:
    acme = await new_token(env, "acme")
    other = await new_token(env, "other")
    async with client_from(env, "127.0.0.2") as anonymous:
        codes = [(await anonymous.get("/healthz")).status_code for _ in range(ADDRESS_BURST + 20)]
        assert codes.count(200) == ADDRESS_BURST
        assert codes.count(429) == 20
        last = await anonymous.get("/healthz")
        assert last.status_code == 429
        assert int(last.headers["Retry-After"]) >= 1
        body = last.json()
        assert body["reason"] == "rate_limited"
        assert body["limit"] == "address"
        assert "slow down" in body["detail"]
        # A valid token does not lift the address limit.
        async with client_from(env, "127.0.0.2", acme) as same_machine:
            assert (await same_machine.get("/api/v1/devices")).status_code == 429
    # Meanwhile other clients are served normally.
    async with client_from(env, "127.0.0.3", other) as neighbour:
        for _ in range(5):
            response = await neighbour.get("/api/v1/devices")
            assert response.status_code == 200, response.text
    assert (await env.api.get("/api/v1/tenants")).status_code == 200
    assert refused(env, "rate_address") == 22


async def test_a_hammering_credential_is_limited_from_any_address(env: PlatformEnv) -> None:
    hammer = await new_token(env, "acme")
    polite = await new_token(env, "acme")
    async with client_from(env, "127.0.0.4", hammer) as first:
        codes = [(await first.get("/api/v1/devices")).status_code for _ in range(20)]
    assert codes.count(200) == CREDENTIAL_BURST
    async with client_from(env, "127.0.0.5", hammer) as elsewhere:
        response = await elsewhere.get("/api/v1/devices")
        assert response.status_code == 429
        assert response.json()["limit"] == "credential"
    async with client_from(env, "127.0.0.5", polite) as colleague:
        assert (await colleague.get("/api/v1/devices")).status_code == 200
    assert refused(env, "rate_credential") == 20 - CREDENTIAL_BURST + 1


async def test_sizes_are_limited_with_a_clear_reason(env: PlatformEnv) -> None:
    async with client_from(env, "127.0.0.6") as client:
        big = await client.post("/api/v1/tenants", content=b"x" * 5000)
        assert big.status_code == 413
        assert big.json()["reason"] == "body_too_large"
        assert "4096 bytes" in big.json()["detail"]

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b"y" * 1000

        chunked = await client.post("/api/v1/tenants", content=chunks())
        assert chunked.status_code == 413

        long_url = await client.get("/api/v1/devices?q=" + "a" * 9000)
        assert long_url.status_code == 414
        assert long_url.json()["reason"] == "url_too_long"

        many = await client.get("/healthz", headers={f"x-h{i}": "1" for i in range(120)})
        assert many.status_code == 431
        assert many.json()["reason"] == "headers_too_large"

        # A small chunked body is passed on whole: the route sees it and answers (401 here).
        async def small() -> AsyncIterator[bytes]:
            yield b'{"id": "t", '
            yield b'"name": "T"}'

        ok = await client.post("/api/v1/tenants", content=small())
        assert ok.status_code == 401
    assert refused(env, "body_too_large") == 2
    assert refused(env, "url_too_long") == 1
    assert refused(env, "headers_too_large") == 1
