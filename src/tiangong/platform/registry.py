"""The device registry: tenants, sites, thing models, devices, credentials and lifecycle.

The registry is the one writer of these records. It also keeps the **device directory**, an
in-memory map from device name to the device and its pinned thing model, which the ingest hot
path and the broker's authentication consult without touching the database. Every change made
through the registry updates the directory at once; ``refresh`` reloads it, so several platform
instances sharing one PostgreSQL converge within the refresh period.

``last_seen_at`` is kept in memory and written in batches (``flush_last_seen``): a busy plant
would otherwise turn every telemetry message into a database update.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from tiangong.network.profile import NetworkProfile
from tiangong.platform.database import (
    Database,
    device_events,
    device_transitions,
    devices,
    sites,
    tenants,
    thing_models,
    utc,
)
from tiangong.platform.errors import ConflictError, LifecycleError, NotFoundError
from tiangong.platform.lifecycle import LifecycleTrigger, transition
from tiangong.platform.model import Device, DeviceState, Severity, Site, Tenant, ThingModel
from tiangong.security.credentials import (
    generate_secret,
    hash_device_secret,
    verify_device_secret,
)

__all__ = ["DeviceRegistry", "DirectoryEntry", "StoredEvent"]

_log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    """A device and its pinned thing model, as the hot path sees them."""

    device: Device
    model: ThingModel
    secret_hash: str | None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A device event as stored."""

    id: int
    tenant_id: str
    site_id: str
    device_id: str
    ts: datetime
    event: str
    severity: Severity
    data: dict[str, Any]


DeviceListener = Callable[[Device], None]


def _device_from_row(row: sa.Row[Any]) -> Device:
    m = row._mapping
    return Device(
        id=m["id"],
        tenant_id=m["tenant_id"],
        site_id=m["site_id"],
        name=m["name"],
        model_id=m["model_id"],
        model_version=m["model_version"],
        gateway_id=m["gateway_id"],
        state=DeviceState(m["state"]),
        attributes=dict(m["attributes"] or {}),
        network=NetworkProfile.model_validate(m["network"] or {}),
        created_at=utc(m["created_at"]),
        state_changed_at=utc(m["state_changed_at"]),
        last_seen_at=utc(m["last_seen_at"]),
    )


class DeviceRegistry:
    """Tenants, sites, thing models and devices, with the in-memory device directory.

    Args:
        db: the metadata database (open).
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._directory: dict[str, DirectoryEntry] = {}
        self._models: dict[tuple[str, str, int], ThingModel] = {}
        self._last_seen: dict[str, datetime] = {}
        self._listeners: list[DeviceListener] = []
        #: Bumped by every change of a device's record or state and by every reload (not by
        #: last-seen times): whoever derives something from all devices knows when to again.
        self.generation = 0

    # -- directory -------------------------------------------------------------------------------

    def lookup(self, device_id: str) -> DirectoryEntry | None:
        """The device and its thing model, from memory (the ingest hot path)."""
        return self._directory.get(device_id)

    def add_listener(self, listener: DeviceListener) -> None:
        """Call ``listener`` with every device whose record or state changes."""
        self._listeners.append(listener)

    def _publish(self, device: Device, secret_hash: str | None) -> None:
        model = self._models.get((device.tenant_id, device.model_id, device.model_version))
        if model is None:  # pragma: no cover - registration checks the model exists
            _log.error("device %s pins a missing thing model", device.id)
            return
        self._directory[device.id] = DirectoryEntry(device, model, secret_hash)
        self.generation += 1
        for listener in self._listeners:
            listener(device)

    async def refresh(self) -> None:
        """Reload thing models and devices from the database."""
        async with self.db.engine.connect() as conn:
            models = (await conn.execute(sa.select(thing_models))).all()
            rows = (await conn.execute(sa.select(devices))).all()
        self._models = {
            (r.tenant_id, r.id, r.version): ThingModel.model_validate(r.document) for r in models
        }
        directory: dict[str, DirectoryEntry] = {}
        for row in rows:
            device = _device_from_row(row)
            model = self._models.get((device.tenant_id, device.model_id, device.model_version))
            if model is not None:
                directory[device.id] = DirectoryEntry(device, model, row.secret_hash)
        self._directory = directory
        self.generation += 1

    def devices_in_memory(self) -> Iterable[Device]:
        """Every registered device, from the directory."""
        return (entry.device for entry in self._directory.values())

    def verify_secret(self, device_id: str, secret: str) -> bool:
        """Check a device's MQTT password (its secret); decommissioned devices always fail."""
        entry = self._directory.get(device_id)
        if entry is None or entry.secret_hash is None:
            return False
        if entry.device.state is DeviceState.DECOMMISSIONED:
            return False
        return verify_device_secret(secret, entry.secret_hash)

    def credentials(self) -> list[tuple[str, str]]:
        """(device, secret hash) of every device that may connect (for broker password files)."""
        return [
            (d, e.secret_hash)
            for d, e in sorted(self._directory.items())
            if e.secret_hash is not None and e.device.state is not DeviceState.DECOMMISSIONED
        ]

    # -- tenants and sites -----------------------------------------------------------------------

    async def create_tenant(self, tenant: Tenant) -> Tenant:
        """Create a tenant.

        Raises:
            ConflictError: the name is taken.
        """
        created = tenant.model_copy(update={"created_at": _now()})
        try:
            async with self.db.engine.begin() as conn:
                await conn.execute(sa.insert(tenants).values(**created.model_dump()))
        except IntegrityError as exc:
            raise ConflictError(f"tenant {tenant.id!r} already exists") from exc
        return created

    async def get_tenant(self, tenant_id: str) -> Tenant:
        """A tenant by name.

        Raises:
            NotFoundError: no such tenant.
        """
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(sa.select(tenants).where(tenants.c.id == tenant_id))).first()
        if row is None:
            raise NotFoundError("tenant", tenant_id)
        return Tenant.model_validate({**row._mapping, "created_at": utc(row.created_at)})

    async def list_tenants(self) -> list[Tenant]:
        """All tenants."""
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(sa.select(tenants).order_by(tenants.c.id))).all()
        return [
            Tenant.model_validate({**r._mapping, "created_at": utc(r.created_at)}) for r in rows
        ]

    async def update_tenant(
        self, tenant_id: str, *, name: str | None = None, retention_days: int | None = None
    ) -> Tenant:
        """Change a tenant's display name or retention."""
        current = await self.get_tenant(tenant_id)
        updated = Tenant.model_validate(
            {
                **current.model_dump(),
                **({"name": name} if name is not None else {}),
                **({"retention_days": retention_days} if retention_days is not None else {}),
            }
        )
        async with self.db.engine.begin() as conn:
            await conn.execute(
                sa.update(tenants)
                .where(tenants.c.id == tenant_id)
                .values(name=updated.name, retention_days=updated.retention_days)
            )
        return updated

    async def create_site(self, site: Site) -> Site:
        """Create a site of an existing tenant.

        Raises:
            NotFoundError: the tenant does not exist.
            ConflictError: the site name is taken within the tenant.
        """
        await self.get_tenant(site.tenant_id)
        created = site.model_copy(update={"created_at": _now()})
        try:
            async with self.db.engine.begin() as conn:
                await conn.execute(sa.insert(sites).values(**created.model_dump()))
        except IntegrityError as exc:
            raise ConflictError(f"site {site.id!r} already exists in {site.tenant_id!r}") from exc
        return created

    async def get_site(self, tenant_id: str, site_id: str) -> Site:
        """A site.

        Raises:
            NotFoundError: no such site in the tenant.
        """
        async with self.db.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(sites).where(sites.c.tenant_id == tenant_id, sites.c.id == site_id)
                )
            ).first()
        if row is None:
            raise NotFoundError("site", site_id)
        return Site.model_validate({**row._mapping, "created_at": utc(row.created_at)})

    async def list_sites(self, tenant_id: str | None) -> list[Site]:
        """Sites of one tenant, or of all tenants when ``tenant_id`` is ``None``."""
        query = sa.select(sites).order_by(sites.c.tenant_id, sites.c.id)
        if tenant_id is not None:
            query = query.where(sites.c.tenant_id == tenant_id)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [Site.model_validate({**r._mapping, "created_at": utc(r.created_at)}) for r in rows]

    # -- thing models ----------------------------------------------------------------------------

    async def put_thing_model(self, tenant_id: str, model: ThingModel) -> ThingModel:
        """Store a thing model as the next version of its id (the version field is assigned).

        Re-importing a document identical to the latest version returns that version instead
        of creating a new one, so imports are idempotent.

        Raises:
            NotFoundError: the tenant does not exist.
        """
        await self.get_tenant(tenant_id)
        async with self.db.engine.begin() as conn:
            latest = (
                await conn.execute(
                    sa.select(thing_models.c.version, thing_models.c.document)
                    .where(thing_models.c.tenant_id == tenant_id, thing_models.c.id == model.id)
                    .order_by(thing_models.c.version.desc())
                    .limit(1)
                )
            ).first()
            if latest is not None:
                previous = ThingModel.model_validate(latest.document)
                if previous.model_copy(update={"version": 1}) == model.model_copy(
                    update={"version": 1}
                ):
                    return previous
            version = 1 if latest is None else int(latest.version) + 1
            stored = model.model_copy(update={"version": version})
            await conn.execute(
                sa.insert(thing_models).values(
                    tenant_id=tenant_id,
                    id=model.id,
                    version=version,
                    name=model.name,
                    document=stored.to_json(),
                    created_at=_now(),
                )
            )
        self._models[(tenant_id, model.id, version)] = stored
        return stored

    async def get_thing_model(
        self, tenant_id: str, model_id: str, version: int | None = None
    ) -> ThingModel:
        """A thing model version (the latest when ``version`` is ``None``).

        Raises:
            NotFoundError: no such model or version.
        """
        query = sa.select(thing_models.c.document).where(
            thing_models.c.tenant_id == tenant_id, thing_models.c.id == model_id
        )
        if version is None:
            query = query.order_by(thing_models.c.version.desc()).limit(1)
        else:
            query = query.where(thing_models.c.version == version)
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            suffix = "" if version is None else f" version {version}"
            raise NotFoundError("thing model", f"{model_id}{suffix}")
        return ThingModel.model_validate(row.document)

    async def list_thing_models(self, tenant_id: str) -> list[ThingModel]:
        """The latest version of every thing model of a tenant."""
        async with self.db.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(thing_models.c.id, thing_models.c.version, thing_models.c.document)
                    .where(thing_models.c.tenant_id == tenant_id)
                    .order_by(thing_models.c.id, thing_models.c.version)
                )
            ).all()
        latest: dict[str, ThingModel] = {}
        for row in rows:
            latest[row.id] = ThingModel.model_validate(row.document)
        return list(latest.values())

    async def thing_model_versions(self, tenant_id: str, model_id: str) -> list[int]:
        """All versions of a thing model, oldest first."""
        async with self.db.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(thing_models.c.version)
                    .where(thing_models.c.tenant_id == tenant_id, thing_models.c.id == model_id)
                    .order_by(thing_models.c.version)
                )
            ).all()
        return [int(r.version) for r in rows]

    # -- devices ---------------------------------------------------------------------------------

    async def register_device(
        self,
        *,
        tenant_id: str,
        site_id: str,
        device_id: str,
        model_id: str,
        name: str = "",
        model_version: int | None = None,
        gateway_id: str | None = None,
        attributes: dict[str, str] | None = None,
        network: NetworkProfile | None = None,
    ) -> tuple[Device, str]:
        """Register a device and generate its secret (returned once, stored hashed).

        Raises:
            NotFoundError: the site, thing model or gateway does not exist in the tenant.
            ConflictError: the device name is taken (device names are unique platform-wide,
                because they are MQTT user names).
        """
        await self.get_site(tenant_id, site_id)
        model = await self.get_thing_model(tenant_id, model_id, model_version)
        if gateway_id is not None:
            gateway = self._directory.get(gateway_id)
            if gateway is None or gateway.device.tenant_id != tenant_id:
                raise NotFoundError("gateway", gateway_id)
        self._models[(tenant_id, model.id, model.version)] = model
        secret = generate_secret()
        secret_hash = hash_device_secret(secret)
        now = _now()
        device = Device(
            id=device_id,
            tenant_id=tenant_id,
            site_id=site_id,
            name=name or device_id,
            model_id=model.id,
            model_version=model.version,
            gateway_id=gateway_id,
            state=DeviceState.PROVISIONED,
            attributes=attributes or {},
            network=network or NetworkProfile(),
            created_at=now,
            state_changed_at=now,
        )
        try:
            async with self.db.engine.begin() as conn:
                await conn.execute(
                    sa.insert(devices).values(
                        **device.model_dump(exclude={"last_seen_at", "network"}),
                        network=device.network.model_dump(mode="json"),
                        secret_hash=secret_hash,
                    )
                )
        except IntegrityError as exc:
            raise ConflictError(f"device name {device_id!r} is already registered") from exc
        self._publish(device, secret_hash)
        return device, secret

    async def get_device(self, device_id: str, tenant_id: str | None = None) -> Device:
        """A device, seen from a tenant (``None`` = platform administrator).

        Raises:
            NotFoundError: no such device visible to the tenant.
        """
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(sa.select(devices).where(devices.c.id == device_id))).first()
        if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
            raise NotFoundError("device", device_id)
        device = _device_from_row(row)
        seen = self._last_seen.get(device_id)
        if seen is not None and (device.last_seen_at is None or seen > device.last_seen_at):
            device = device.model_copy(update={"last_seen_at": seen})
        return device

    async def list_devices(
        self,
        tenant_id: str | None,
        *,
        site_id: str | None = None,
        state: DeviceState | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[Device], int]:
        """A page of devices and the total matching the filters."""
        where = []
        if tenant_id is not None:
            where.append(devices.c.tenant_id == tenant_id)
        if site_id is not None:
            where.append(devices.c.site_id == site_id)
        if state is not None:
            where.append(devices.c.state == state.value)
        async with self.db.engine.connect() as conn:
            total = (
                await conn.execute(sa.select(sa.func.count()).select_from(devices).where(*where))
            ).scalar_one()
            rows = (
                await conn.execute(
                    sa.select(devices)
                    .where(*where)
                    .order_by(devices.c.tenant_id, devices.c.site_id, devices.c.id)
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
        items = []
        for row in rows:
            device = _device_from_row(row)
            seen = self._last_seen.get(device.id)
            if seen is not None and (device.last_seen_at is None or seen > device.last_seen_at):
                device = device.model_copy(update={"last_seen_at": seen})
            items.append(device)
        return items, int(total)

    async def update_device(
        self,
        device_id: str,
        tenant_id: str | None,
        *,
        name: str | None = None,
        site_id: str | None = None,
        model_version: int | None = None,
        attributes: dict[str, str] | None = None,
        network: NetworkProfile | None = None,
        gateway_id: str | None = None,
    ) -> Device:
        """Change a device's name, site, model version, attributes, network profile or gateway.

        ``gateway_id`` moves the device behind another gateway of its tenant (say, a machine
        re-wired to a new edge gateway): from then on that gateway may report for it.

        Raises:
            NotFoundError: no such device, site, model version or gateway.
            ConflictError: the gateway is the device itself.
            LifecycleError: the device is decommissioned.
        """
        device = await self.get_device(device_id, tenant_id)
        if device.state is DeviceState.DECOMMISSIONED:
            raise LifecycleError(device_id, device.state.value, "be changed")
        changes: dict[str, Any] = {}
        if name is not None:
            changes["name"] = name
        if site_id is not None:
            await self.get_site(device.tenant_id, site_id)
            changes["site_id"] = site_id
        if model_version is not None:
            model = await self.get_thing_model(device.tenant_id, device.model_id, model_version)
            self._models[(device.tenant_id, model.id, model.version)] = model
            changes["model_version"] = model_version
        if attributes is not None:
            changes["attributes"] = attributes
        if network is not None:
            changes["network"] = network
        if gateway_id is not None and gateway_id != device.gateway_id:
            if gateway_id == device_id:
                raise ConflictError(f"device {device_id!r} cannot be its own gateway")
            gateway = self._directory.get(gateway_id)
            if gateway is None or gateway.device.tenant_id != device.tenant_id:
                raise NotFoundError("gateway", gateway_id)
            changes["gateway_id"] = gateway_id
        if not changes:
            return device
        stored = {
            k: (v.model_dump(mode="json") if isinstance(v, NetworkProfile) else v)
            for k, v in changes.items()
        }
        async with self.db.engine.begin() as conn:
            await conn.execute(sa.update(devices).where(devices.c.id == device_id).values(**stored))
        updated = device.model_copy(update=changes)
        entry = self._directory.get(device_id)
        self._publish(updated, entry.secret_hash if entry else None)
        return updated

    async def rotate_secret(self, device_id: str, tenant_id: str | None) -> str:
        """Issue a new secret; the old one stops working at once.

        Raises:
            LifecycleError: the device is decommissioned.
        """
        device = await self.get_device(device_id, tenant_id)
        if device.state is DeviceState.DECOMMISSIONED:
            raise LifecycleError(device_id, device.state.value, "get new credentials")
        secret = generate_secret()
        secret_hash = hash_device_secret(secret)
        async with self.db.engine.begin() as conn:
            await conn.execute(
                sa.update(devices).where(devices.c.id == device_id).values(secret_hash=secret_hash)
            )
        self._publish(device, secret_hash)
        return secret

    async def apply_lifecycle(
        self,
        device_id: str,
        trigger: LifecycleTrigger,
        *,
        reason: str,
        tenant_id: str | None = None,
        at: datetime | None = None,
    ) -> Device:
        """Apply a lifecycle trigger; records the transition when the state changes.

        Raises:
            NotFoundError: no such device (visible to ``tenant_id``).
            LifecycleError: the trigger is not allowed (e.g. the device is decommissioned).
        """
        device = await self.get_device(device_id, tenant_id)
        new_state = transition(device_id, device.state, trigger)
        if new_state is device.state:
            return device
        when = at or _now()
        values: dict[str, Any] = {"state": new_state.value, "state_changed_at": when}
        if new_state is DeviceState.DECOMMISSIONED:
            values["secret_hash"] = None  # credentials die with the device
        async with self.db.engine.begin() as conn:
            await conn.execute(sa.update(devices).where(devices.c.id == device_id).values(**values))
            await conn.execute(
                sa.insert(device_transitions).values(
                    tenant_id=device.tenant_id,
                    device_id=device_id,
                    ts=when,
                    from_state=device.state.value,
                    to_state=new_state.value,
                    reason=reason[:200],
                )
            )
        updated = device.model_copy(update={"state": new_state, "state_changed_at": when})
        entry = self._directory.get(device_id)
        secret_hash = (
            None
            if new_state is DeviceState.DECOMMISSIONED
            else (entry.secret_hash if entry else None)
        )
        self._publish(updated, secret_hash)
        return updated

    async def transitions(self, device_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """The device's most recent lifecycle transitions, newest first."""
        async with self.db.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(device_transitions)
                    .where(device_transitions.c.device_id == device_id)
                    .order_by(device_transitions.c.ts.desc(), device_transitions.c.id.desc())
                    .limit(limit)
                )
            ).all()
        return [
            {
                "ts": utc(r.ts),
                "from": r.from_state,
                "to": r.to_state,
                "reason": r.reason,
            }
            for r in rows
        ]

    def touch(self, device_id: str, when: datetime) -> None:
        """Note that a device was heard from (kept in memory until ``flush_last_seen``)."""
        self._last_seen[device_id] = when

    def last_seen(self, device_id: str) -> datetime | None:
        """When the device was last heard from, as far as this instance knows."""
        seen = self._last_seen.get(device_id)
        if seen is not None:
            return seen
        entry = self._directory.get(device_id)
        return entry.device.last_seen_at if entry else None

    async def flush_last_seen(self) -> int:
        """Write buffered ``last_seen_at`` times; returns how many devices were updated."""
        if not self._last_seen:
            return 0
        pending = self._last_seen
        self._last_seen = {}
        async with self.db.engine.begin() as conn:
            await conn.execute(
                sa.update(devices)
                .where(devices.c.id == sa.bindparam("b_id"))
                .values(last_seen_at=sa.bindparam("b_seen")),
                [{"b_id": d, "b_seen": t} for d, t in pending.items()],
            )
        for device_id, seen in pending.items():
            entry = self._directory.get(device_id)
            if entry is not None:
                self._directory[device_id] = DirectoryEntry(
                    entry.device.model_copy(update={"last_seen_at": seen}),
                    entry.model,
                    entry.secret_hash,
                )
        return len(pending)

    # -- events ----------------------------------------------------------------------------------

    async def record_events(self, events: list[dict[str, Any]]) -> None:
        """Store device events (dicts with the columns of ``device_events``)."""
        if events:
            async with self.db.engine.begin() as conn:
                await conn.execute(sa.insert(device_events), events)

    async def list_events(
        self, tenant_id: str | None, *, device_id: str | None = None, limit: int = 100
    ) -> list[StoredEvent]:
        """Most recent events, newest first."""
        query = sa.select(device_events).order_by(device_events.c.ts.desc()).limit(limit)
        if tenant_id is not None:
            query = query.where(device_events.c.tenant_id == tenant_id)
        if device_id is not None:
            query = query.where(device_events.c.device_id == device_id)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            StoredEvent(
                id=int(r.id),
                tenant_id=r.tenant_id,
                site_id=r.site_id,
                device_id=r.device_id,
                ts=utc(r.ts) or _now(),
                event=r.event,
                severity=Severity(r.severity),
                data=dict(r.data),
            )
            for r in rows
        ]
