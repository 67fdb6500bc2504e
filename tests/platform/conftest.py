"""Fixtures for platform tests: a time-series store per backend."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import free_port
from tiangong.platform.ingest.pipeline import IngestSettings
from tiangong.platform.model import DataType, EventSpec, PropertySpec, Site, Tenant, ThingModel
from tiangong.platform.service import Platform
from tiangong.platform.settings import PlatformSettings
from tiangong.platform.tsdb.base import TimeSeriesStore
from tiangong.platform.tsdb.duckdb_store import DuckDBStore

BACKENDS = ["duckdb", "postgres"]


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TimeSeriesStore]:
    """Each store test runs once per backend: embedded DuckDB and the real PostgreSQL."""
    backend: TimeSeriesStore
    if request.param == "duckdb":
        backend = DuckDBStore(path=tmp_path / "telemetry.duckdb")
    else:
        from tiangong.platform.tsdb.postgres_store import PostgresStore  # noqa: PLC0415

        dsn = request.getfixturevalue("pg_database")
        backend = PostgresStore(dsn=dsn)
    await backend.open()
    yield backend
    await backend.close()


# -- a running platform against a real broker ----------------------------------------------------


PUMP_MODEL = ThingModel(
    id="pump",
    name="Pump",
    properties=[
        PropertySpec(id="flow", type=DataType.FLOAT, unit="m3/h", min=0, max=500),
        PropertySpec(id="temp", type=DataType.FLOAT, unit="degC", min=-40, max=200),
        PropertySpec(id="state", type=DataType.ENUM, enum=["idle", "running", "down"]),
        PropertySpec(id="note", type=DataType.STRING),
    ],
    events=[EventSpec(id="fault")],
)
GATEWAY_MODEL = ThingModel(id="gateway", name="Edge gateway", properties=[])


@dataclass
class PlatformEnv:
    """A started platform, an admin API client and the secrets of the provisioned devices."""

    platform: Platform
    api: httpx.AsyncClient
    mqtt_port: int
    secrets: dict[str, str] = field(default_factory=dict)

    def client(self, device: str, **kw: Any):
        from tiangong.network.mqtt import MqttClient  # noqa: PLC0415

        return MqttClient(
            host="127.0.0.1",
            port=self.mqtt_port,
            client_id=device,
            username=device,
            password=self.secrets.get(device),
            **kw,
        )

    async def wait_for(
        self, check: Callable[[], Awaitable[bool]], timeout: float = 15.0, what: str = ""
    ) -> None:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.05)

    async def stored(self) -> int:
        return await self.platform.store.point_count()


async def provision(platform: Platform) -> dict[str, str]:
    """Tenant acme, sites p1/p2, pumps pump-1/pump-2, gateway gw-1 with c-1/c-2, retired old-1."""
    registry = platform.registry
    await registry.create_tenant(Tenant(id="acme", name="Acme"))
    await registry.create_tenant(Tenant(id="other", name="Other Co"))
    for site in ("p1", "p2"):
        await registry.create_site(Site(tenant_id="acme", id=site, name=site))
    await registry.create_site(Site(tenant_id="other", id="p1", name="Other p1"))
    for tenant in ("acme", "other"):
        await registry.put_thing_model(tenant, PUMP_MODEL)
        await registry.put_thing_model(tenant, GATEWAY_MODEL)
    secrets = {}
    for device, model, gateway in [
        ("pump-1", "pump", None),
        ("pump-2", "pump", None),
        ("gw-1", "gateway", None),
        ("c-1", "pump", "gw-1"),
        ("c-2", "pump", "gw-1"),
        ("old-1", "pump", None),
    ]:
        _, secrets[device] = await registry.register_device(
            tenant_id="acme", site_id="p1", device_id=device, model_id=model, gateway_id=gateway
        )
    _, secrets["o-pump"] = await registry.register_device(
        tenant_id="other", site_id="p1", device_id="o-pump", model_id="pump"
    )
    from tiangong.platform.lifecycle import LifecycleTrigger  # noqa: PLC0415

    await registry.apply_lifecycle("old-1", LifecycleTrigger.DECOMMISSION, reason="test")
    return secrets


@contextlib.asynccontextmanager
async def running_platform(
    tmp_path: Path,
    *,
    mqtt_port: int | None = None,
    embedded_broker: bool = False,
    ingest: IngestSettings | None = None,
    wait_connected: bool = True,
    **settings: Any,
):
    port = mqtt_port or free_port()
    # A session of its own: on the shared broker, a fixed client id would hand this platform
    # the messages queued for an earlier test's platform.
    settings.setdefault("mqtt_client_id", f"tiangong-test-{uuid.uuid4().hex[:8]}")
    config = PlatformSettings.load(
        data_dir=tmp_path / "data",
        http_port=0,
        mqtt_port=port,
        mqtt_version=4 if embedded_broker else 5,
        rollup_interval=1.0,
        **settings,
    )
    async with Platform(config, embedded_broker=embedded_broker, ingest=ingest) as platform:
        headers = {"Authorization": f"Bearer {platform.admin_token}"}
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{platform.http_port}", headers=headers
        ) as api:
            env = PlatformEnv(platform=platform, api=api, mqtt_port=port)
            env.secrets = await provision(platform)
            if not wait_connected:
                yield env
                return
            async with asyncio.timeout(10):
                while platform.mqtt is None or not platform.mqtt.connected:
                    await asyncio.sleep(0.05)
            yield env


def registry_platform(tmp_path: Path, **settings: Any) -> Any:
    """A platform for tests of what sits beside its ingest (its registry, CAs, API, files for
    an external broker): its own embedded broker, no Sparkplug host, no wait for ingest."""
    return running_platform(
        tmp_path, embedded_broker=True, sparkplug_enabled=False, wait_connected=False, **settings
    )
