"""The simulated factory: provisioning, then every device as its own MQTT client.

Each simulated device connects with user name = device name and its issued secret, sets its
last will to ``offline`` on its status topic, announces ``online``, and publishes a reading
every few seconds (QoS 1) plus events when something happens. To look like a real plant, a few
devices are provisioned but never connected (awaiting commissioning), and connected devices now
and then lose their link for a few minutes: the networking rate is below 100 %, as it is in
every real factory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import orjson

from tiangong.edge.config import EdgeConfig
from tiangong.edge.thing_model import GATEWAY_MODEL
from tiangong.network.access import Channel, DeviceTopic
from tiangong.network.errors import MqttError
from tiangong.network.mqtt import MqttClient, ProtocolVersion, Will
from tiangong.network.profile import NetworkProfile
from tiangong.platform.alarms.service import AlarmService
from tiangong.platform.errors import ConflictError
from tiangong.platform.model import Site, Tenant
from tiangong.platform.registry import DeviceRegistry
from tiangong.security.credentials import write_secret_file
from tiangong.sim.machines import Machine, make_machine
from tiangong.sim.thing_models import DEMO_RULES, THING_MODELS

__all__ = ["DeviceSpec", "FactoryPlan", "RegistryProvisioner", "SimulatedFactory", "plan_factory"]

_log = logging.getLogger(__name__)

#: Share of each kind in a generated factory (rounded; every kind appears at least once).
_MIX: Final = (("cnc", 0.40), ("line", 0.20), ("pump", 0.15), ("meter", 0.15), ("compressor", 0.10))


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One simulated device."""

    id: str
    kind: str
    site: str
    name: str
    connects: bool = True


@dataclass(frozen=True, slots=True)
class FactoryPlan:
    """What the simulated enterprise consists of."""

    tenant: str
    tenant_name: str
    sites: tuple[Site, ...]
    devices: tuple[DeviceSpec, ...] = field(default_factory=tuple)


def plan_factory(devices: int, *, tenant: str = "huaxia", turbofans: int = 0) -> FactoryPlan:
    """A two-site machining enterprise with ``devices`` devices.

    About 4 % of the devices (at least one from 25 devices up) are registered but never
    connect, like machines still awaiting network commissioning. ``turbofans`` engine test
    cells (``engine-cell-01``...; C-MAPSS replays, see ``turbofan.py``) are added at the Wuxi
    plant, beyond ``devices``.
    """
    sites = (
        Site(
            tenant_id=tenant,
            id="suzhou",
            name="Suzhou machining plant / 苏州机加工厂",
            location="Suzhou, Jiangsu",
            timezone="Asia/Shanghai",
        ),
        Site(
            tenant_id=tenant,
            id="wuxi",
            name="Wuxi assembly plant / 无锡装配厂",
            location="Wuxi, Jiangsu",
            timezone="Asia/Shanghai",
        ),
    )
    counts = {kind: max(1, round(devices * share)) for kind, share in _MIX}
    while sum(counts.values()) > max(devices, len(_MIX)):
        largest = max(counts, key=lambda k: counts[k])
        counts[largest] -= 1
    while sum(counts.values()) < devices:
        counts["cnc"] += 1
    labels = {
        "cnc": "CNC",
        "line": "Line",
        "pump": "Pump",
        "meter": "Meter",
        "compressor": "Compressor",
    }
    specs = []
    for kind, n in counts.items():
        for i in range(1, n + 1):
            site = sites[0].id if kind in ("cnc", "compressor") or i % 3 else sites[1].id
            if kind == "line":
                site = sites[1].id if i % 4 else sites[0].id
            device_id = f"{kind}-{i:03d}"
            silent = devices >= 25 and zlib.crc32(device_id.encode()) % 25 == 0
            specs.append(
                DeviceSpec(device_id, kind, site, f"{labels[kind]} {i:03d}", connects=not silent)
            )
    specs.extend(
        DeviceSpec(f"engine-cell-{i:02d}", "turbofan", sites[1].id, f"Engine test cell {i:02d}")
        for i in range(1, turbofans + 1)
    )
    return FactoryPlan(tenant, "Huaxia Precision Manufacturing / 华夏精密制造", sites, tuple(specs))


class RegistryProvisioner:
    """Registers the plan in an in-process platform and keeps the device secrets.

    Secrets are issued once and kept in ``credentials_file`` (mode 0600) so a restarted demo
    reconnects the same devices; a device whose secret was lost gets a new one.

    Args:
        registry: the platform's device registry.
        alarms: the platform's alarm service (the demo rules are added once).
        credentials_file: where the simulated devices' secrets are kept.
    """

    def __init__(
        self, registry: DeviceRegistry, alarms: AlarmService, credentials_file: Path
    ) -> None:
        self.registry = registry
        self.alarms = alarms
        self.credentials_file = credentials_file

    async def ensure(
        self, plan: FactoryPlan, gateways: Sequence[EdgeConfig] = ()
    ) -> dict[str, str]:
        """Create what is missing; return device name -> secret.

        With ``gateways``, each gateway is registered too (thing model ``edge-gateway``) and
        every device it reads is registered behind it with the network profile it declares;
        devices registered earlier (a demo from before the gateways) are moved behind theirs.
        """
        with contextlib.suppress(ConflictError):
            await self.registry.create_tenant(
                Tenant(id=plan.tenant, name=plan.tenant_name, retention_days=90)
            )
        for site in plan.sites:
            with contextlib.suppress(ConflictError):
                await self.registry.create_site(site)
        for model in THING_MODELS.values():
            await self.registry.put_thing_model(plan.tenant, model)
        if not await self.alarms.list_rules(plan.tenant):
            for rule in DEMO_RULES:
                await self.alarms.create_rule(plan.tenant, rule)
        known = await asyncio.to_thread(self._load)
        secrets: dict[str, str] = {}
        if gateways:
            await self.registry.put_thing_model(plan.tenant, GATEWAY_MODEL)
        behind: dict[str, tuple[str, NetworkProfile]] = {}
        for gateway in gateways:
            section = gateway.gateway
            await self._ensure_one(
                known,
                secrets,
                tenant=plan.tenant,
                site=section.site,
                device_id=section.id,
                name=f"Edge gateway {section.site}",
                model="edge-gateway",
                attributes={"simulated": "true", "kind": "edge-gateway"},
            )
            for device in gateway.devices:
                behind[device.id] = (section.id, device.network)
        for spec in plan.devices:
            gateway_id, network = behind.get(spec.id, (None, NetworkProfile()))
            await self._ensure_one(
                known,
                secrets,
                tenant=plan.tenant,
                site=spec.site,
                device_id=spec.id,
                name=spec.name,
                model=spec.kind,
                attributes={"simulated": "true", "kind": spec.kind},
                gateway_id=gateway_id,
                network=network,
            )
        await asyncio.to_thread(self._save, secrets)
        return secrets

    async def _ensure_one(
        self,
        known: dict[str, str],
        secrets: dict[str, str],
        *,
        tenant: str,
        site: str,
        device_id: str,
        name: str,
        model: str,
        attributes: dict[str, str],
        gateway_id: str | None = None,
        network: NetworkProfile | None = None,
    ) -> None:
        entry = self.registry.lookup(device_id)
        if entry is None:
            _, secrets[device_id] = await self.registry.register_device(
                tenant_id=tenant,
                site_id=site,
                device_id=device_id,
                name=name,
                model_id=model,
                attributes=attributes,
                gateway_id=gateway_id,
                network=network,
            )
            return
        if gateway_id is not None and (
            entry.device.gateway_id != gateway_id or entry.device.network != network
        ):
            await self.registry.update_device(
                device_id, tenant, gateway_id=gateway_id, network=network
            )
        if device_id in known and self.registry.verify_secret(device_id, known[device_id]):
            secrets[device_id] = known[device_id]
        else:
            secrets[device_id] = await self.registry.rotate_secret(device_id, tenant)

    def _load(self) -> dict[str, str]:
        if not self.credentials_file.exists():
            return {}
        data = json.loads(self.credentials_file.read_text())
        return {str(k): str(v) for k, v in data.items()}

    def _save(self, secrets: dict[str, str]) -> None:
        write_secret_file(self.credentials_file, json.dumps(secrets, indent=1, sort_keys=True))


class SimulatedFactory:
    """Runs the plan's devices against a broker.

    Args:
        plan: the factory.
        secrets: device name -> MQTT password.
        host: broker host.
        port: broker port.
        version: MQTT version the broker speaks.
        dropout_per_h: mean link losses per connected device per hour.
    """

    def __init__(
        self,
        *,
        plan: FactoryPlan,
        secrets: dict[str, str],
        host: str,
        port: int,
        version: ProtocolVersion = ProtocolVersion.V311,
        dropout_per_h: float = 0.5,
    ) -> None:
        self.plan = plan
        self.secrets = secrets
        self.host = host
        self.port = port
        self.version = version
        self.dropout_per_h = dropout_per_h
        self.published = 0
        self.connected: set[str] = set()

    async def run(self) -> None:
        """Run every connecting device until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            for spec in self.plan.devices:
                if spec.connects:
                    tasks.create_task(self._device(spec), name=f"sim-{spec.id}")

    async def _device(self, spec: DeviceSpec) -> None:
        machine = make_machine(spec.kind, spec.id)
        rng = random.Random(zlib.crc32(spec.id.encode()) ^ 0x5EED)  # noqa: S311 - simulation
        tenant = self.plan.tenant
        telemetry = DeviceTopic.build(tenant, spec.site, spec.id, Channel.TELEMETRY)
        events = DeviceTopic.build(tenant, spec.site, spec.id, Channel.EVENTS)
        status = DeviceTopic.build(tenant, spec.site, spec.id, Channel.STATUS)

        async def announce(client: MqttClient, _present: bool) -> None:
            await client.publish(status, b"online", qos=1, retain=True)

        await asyncio.sleep(rng.uniform(0, 3))  # devices do not all boot in the same instant
        backoff = 1.0
        while True:
            try:
                async with MqttClient(
                    host=self.host,
                    port=self.port,
                    client_id=spec.id,
                    username=spec.id,
                    password=self.secrets[spec.id],
                    version=self.version,
                    keepalive=20,
                    will=Will(topic=status, payload=b"offline", qos=1, retain=True),
                    on_connect=announce,
                ) as client:
                    self.connected.add(spec.id)
                    backoff = 1.0
                    outage = await self._report(client, machine, rng, telemetry, events)
                self.connected.discard(spec.id)
                await asyncio.sleep(outage)
                continue
            except (MqttError, OSError) as exc:
                _log.debug("sim %s: %s", spec.id, exc)
            self.connected.discard(spec.id)
            await asyncio.sleep(backoff * rng.uniform(0.5, 1.5))
            backoff = min(backoff * 2, 30.0)

    async def _report(
        self,
        client: MqttClient,
        machine: Machine,
        rng: random.Random,
        telemetry: str,
        events: str,
    ) -> float:
        """Publish readings until the simulated link drops; returns how long it stays down."""
        while True:
            now = time.time()
            reading = machine.step(now)
            now_ms = int(now * 1000)
            await client.publish(
                telemetry, orjson.dumps({"ts": now_ms, "values": reading.values}), qos=1
            )
            self.published += len(reading.values)
            for name, data in reading.events:
                await client.publish(
                    events, orjson.dumps({"ts": now_ms, "event": name, "data": data}), qos=1
                )
            if rng.random() < self.dropout_per_h * machine.interval / 3600:
                # The link drops without a goodbye: the broker publishes the last will.
                client.abort()
                return rng.uniform(60, 300)
            await asyncio.sleep(machine.interval * rng.uniform(0.9, 1.1))
