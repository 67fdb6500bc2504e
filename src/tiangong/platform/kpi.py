"""Connectivity KPIs: the device networking rate (联网率) and data collection coverage.

Definitions (per site and per tenant, at a moment):

- **registered**: devices not decommissioned.
- **online**: registered devices in the ``online`` state.
- **networking rate** = online / registered.
- **reporting**: registered devices that sent at least one value within the coverage window.
- **coverage** = data points (a device's thing-model property) with a value within the window
  / data points the registered devices' thing models declare. A machine that is online but sends
  only half of its declared signals counts as half covered: this is the figure that shows
  whether the plant's data is actually being collected, not just whether links are up.

``KpiService.sample`` stores one row per site and per tenant (site ``*``) every minute, which
gives the figures over time.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from tiangong.platform.database import Database, kpi_samples, utc
from tiangong.platform.model import DeviceState
from tiangong.platform.registry import DeviceRegistry
from tiangong.platform.tsdb.base import TimeSeriesStore

__all__ = ["ALL_SITES", "ConnectivityKpi", "KpiService"]

#: The site key of a tenant-wide KPI row.
ALL_SITES = "*"


@dataclass(frozen=True, slots=True)
class ConnectivityKpi:
    """Connectivity figures of one site (or a whole tenant) at one moment."""

    tenant_id: str
    site_id: str
    ts: datetime
    registered: int
    online: int
    reporting: int
    expected_metrics: int
    reporting_metrics: int

    @property
    def networking_rate(self) -> float | None:
        """Online / registered devices, or ``None`` with no devices."""
        return self.online / self.registered if self.registered else None

    @property
    def coverage(self) -> float | None:
        """Reporting / declared data points, or ``None`` when none are declared."""
        return self.reporting_metrics / self.expected_metrics if self.expected_metrics else None


@dataclass(slots=True)
class _Tally:
    registered: int = 0
    online: int = 0
    reporting: int = 0
    expected: int = 0
    reporting_metrics: int = 0


class KpiService:
    """Computes, stores and reads connectivity KPIs.

    Args:
        db: the metadata database.
        registry: the device registry.
        store: the time-series store.
        window: how recent a value must be for its data point to count as reporting.
    """

    def __init__(
        self,
        db: Database,
        registry: DeviceRegistry,
        store: TimeSeriesStore,
        *,
        window: timedelta = timedelta(minutes=5),
    ) -> None:
        self.db = db
        self.registry = registry
        self.store = store
        self.window = window

    async def current(self, tenant_id: str | None = None) -> list[ConnectivityKpi]:
        """KPIs now, per site and per tenant (site ``*``), for one tenant or all."""
        now = datetime.now(UTC)
        since_ms = int((now - self.window).timestamp() * 1000)
        reporting: dict[str, set[str]] = defaultdict(set)
        for tenant, device_id, metric in await self.store.reporting_metrics(since_ms):
            if tenant_id is None or tenant == tenant_id:
                reporting[device_id].add(metric)
        tallies: dict[tuple[str, str], _Tally] = defaultdict(_Tally)
        for device in self.registry.devices_in_memory():
            if device.state is DeviceState.DECOMMISSIONED:
                continue
            if tenant_id is not None and device.tenant_id != tenant_id:
                continue
            entry = self.registry.lookup(device.id)
            declared = {p.id for p in entry.model.properties} if entry else set()
            seen = reporting.get(device.id, set()) & declared
            for key in ((device.tenant_id, device.site_id), (device.tenant_id, ALL_SITES)):
                tally = tallies[key]
                tally.registered += 1
                tally.online += device.state is DeviceState.ONLINE
                tally.reporting += bool(seen)
                tally.expected += len(declared)
                tally.reporting_metrics += len(seen)
        return [
            ConnectivityKpi(
                tenant_id=tenant,
                site_id=site,
                ts=now,
                registered=t.registered,
                online=t.online,
                reporting=t.reporting,
                expected_metrics=t.expected,
                reporting_metrics=t.reporting_metrics,
            )
            for (tenant, site), t in sorted(tallies.items())
        ]

    async def sample(self) -> int:
        """Store the current KPIs of every site and tenant; returns rows written."""
        rows = await self.current()
        if rows:
            async with self.db.engine.begin() as conn:
                await conn.execute(
                    sa.insert(kpi_samples),
                    [
                        {
                            "tenant_id": k.tenant_id,
                            "site_id": k.site_id,
                            "ts": k.ts,
                            "registered": k.registered,
                            "online": k.online,
                            "reporting": k.reporting,
                            "expected_metrics": k.expected_metrics,
                            "reporting_metrics": k.reporting_metrics,
                        }
                        for k in rows
                    ],
                )
        return len(rows)

    async def history(
        self, tenant_id: str, site_id: str, start: datetime, end: datetime
    ) -> list[ConnectivityKpi]:
        """Stored KPI samples of a site (or ``*``) between ``start`` and ``end``."""
        async with self.db.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(kpi_samples)
                    .where(
                        kpi_samples.c.tenant_id == tenant_id,
                        kpi_samples.c.site_id == site_id,
                        kpi_samples.c.ts >= start,
                        kpi_samples.c.ts < end,
                    )
                    .order_by(kpi_samples.c.ts)
                )
            ).all()
        return [
            ConnectivityKpi(
                tenant_id=r.tenant_id,
                site_id=r.site_id,
                ts=utc(r.ts) or start,
                registered=r.registered,
                online=r.online,
                reporting=r.reporting,
                expected_metrics=r.expected_metrics,
                reporting_metrics=r.reporting_metrics,
            )
            for r in rows
        ]

    async def prune(self, older_than: timedelta = timedelta(days=400)) -> None:
        """Delete KPI samples older than ``older_than``."""
        cutoff = datetime.now(UTC) - older_than
        async with self.db.engine.begin() as conn:
            await conn.execute(sa.delete(kpi_samples).where(kpi_samples.c.ts < cutoff))
