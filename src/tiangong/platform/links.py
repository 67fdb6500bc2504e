"""Links: how each device of a site is connected, and how well.

Joins the device's declared network profile (5G slice and 5QI, Wi-Fi, wired, fieldbus) with the
link figures its edge gateway measures (``link.rtt_ms``, ``link.jitter_ms``, ``link.loss_pct``,
``link.reconnects``), and says which links are degraded and why. Per access type, the networking
rate (online / registered) shows whether, say, the 5G devices are the ones dropping out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from tiangong.network.profile import NetworkProfile
from tiangong.platform.model import DeviceState
from tiangong.platform.registry import DeviceRegistry
from tiangong.platform.tsdb.base import TimeSeriesStore

__all__ = ["AccessSummary", "DeviceLink", "SiteLinks", "site_links"]

_LINK_METRICS = ("link.rtt_ms", "link.jitter_ms", "link.loss_pct", "link.reconnects")


@dataclass(frozen=True, slots=True)
class DeviceLink:
    """One device's connection and its measured quality."""

    device_id: str
    name: str
    state: DeviceState
    network: NetworkProfile
    rtt_ms: float | None
    jitter_ms: float | None
    loss_pct: float | None
    reconnects: float | None
    measured_at: datetime | None
    degraded: list[str]


@dataclass(slots=True)
class AccessSummary:
    """Devices of one access type."""

    registered: int = 0
    online: int = 0
    degraded: int = 0

    @property
    def networking_rate(self) -> float | None:
        """Online / registered."""
        return self.online / self.registered if self.registered else None


@dataclass(slots=True)
class SiteLinks:
    """A site's links."""

    tenant_id: str
    site_id: str
    devices: list[DeviceLink] = field(default_factory=list)
    by_access: dict[str, AccessSummary] = field(default_factory=dict)


async def site_links(
    registry: DeviceRegistry, store: TimeSeriesStore, tenant_id: str, site_id: str
) -> SiteLinks:
    """The links of every registered (not decommissioned) device of a site."""
    out = SiteLinks(tenant_id, site_id)
    for device in sorted(registry.devices_in_memory(), key=lambda d: d.id):
        if device.tenant_id != tenant_id or device.site_id != site_id:
            continue
        if device.state is DeviceState.DECOMMISSIONED:
            continue
        series = await store.device_series(tenant_id, device.id)
        ids = {m: series[m] for m in _LINK_METRICS if m in series}
        latest = await store.latest(list(ids.values())) if ids else {}
        figures: dict[str, float | None] = {}
        measured = None
        for metric, sid in ids.items():
            value = latest.get(sid)
            if value is not None and isinstance(value.value, int | float):
                figures[metric] = float(value.value)
                stamp = datetime.fromtimestamp(value.ts_ms / 1000, UTC)
                measured = stamp if measured is None or stamp > measured else measured
        rtt, loss = figures.get("link.rtt_ms"), figures.get("link.loss_pct")
        # A device never heard from may still be measured: a gateway that cannot reach a
        # machine awaiting commissioning reports its link at 100 % loss.
        measured_states = (DeviceState.ONLINE, DeviceState.PROVISIONED)
        degraded = device.network.degraded(rtt, loss) if device.state in measured_states else []
        if device.state is DeviceState.OFFLINE:
            degraded = ["offline"]
        out.devices.append(
            DeviceLink(
                device_id=device.id,
                name=device.name,
                state=device.state,
                network=device.network,
                rtt_ms=rtt,
                jitter_ms=figures.get("link.jitter_ms"),
                loss_pct=loss,
                reconnects=figures.get("link.reconnects"),
                measured_at=measured,
                degraded=degraded,
            )
        )
        summary = out.by_access.setdefault(device.network.access, AccessSummary())
        summary.registered += 1
        summary.online += device.state is DeviceState.ONLINE
        summary.degraded += bool(degraded)
    return out
