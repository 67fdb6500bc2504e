"""The OEE service: reads machine states, part counters and fault events for the platform.

``OeeService.report`` answers one device or one site over a time range, split by shift or by
production day in the site's calendar (:mod:`.calendar`), with the group's figures as ratios of
sums (:meth:`OeeFigures.combine`). Everything is computed on request from the time-series store
(raw points, read in pages under the store's row limit) and the device events; nothing is
cached, so late data (an edge gateway draining its buffer) corrects the next answer.

Only devices whose thing model has a production profile (:data:`.config.PROFILES`) take part;
the others are left out of a site and answer an empty report on their own.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Final

import sqlalchemy as sa

from tiangong.apps.oee.calendar import CalendarPeriod, Grouping, ShiftCalendar
from tiangong.apps.oee.config import PROFILES, OeeConfig
from tiangong.apps.oee.core import OeeFigures, StateClass, compute
from tiangong.platform.database import Database, device_events, utc
from tiangong.platform.model import Device
from tiangong.platform.registry import DeviceRegistry
from tiangong.platform.tsdb.base import HOUR_MS, RAW_LIMIT, Aggregate, TimeSeriesStore

__all__ = ["DeviceOee", "OeeReport", "OeeService"]

_DAY_MS: Final = 86_400_000
_PAGE: Final = 500
#: How far before a range a counter's last value is looked for (in the minute rollups).
COUNTER_LOOKBACK_MS: Final = _DAY_MS
#: A day's indicator part is kept once the day ended this long ago (late data after it is not
#: re-read for indicators; the API always recomputes).
SETTLED_MS: Final = 3_600_000
_SETTLED_KEPT: Final = 512
#: The longest range one request may cover (the figures are computed from raw points).
MAX_RANGE_MS: Final = 93 * _DAY_MS


@dataclass(frozen=True, slots=True)
class DeviceOee:
    """One machine's figures: per period and over the whole range.

    Attributes:
        device: the device.
        ideal_cycle_s: the planned run time per unit used (``None``: unknown).
        periods: the figures of each period.
        total: over the whole range.
    """

    device: Device
    ideal_cycle_s: float | None
    periods: list[OeeFigures]
    total: OeeFigures


@dataclass(frozen=True, slots=True)
class OeeReport:
    """Figures of one device or one site over ``[start_ms, end_ms)``.

    Attributes:
        tenant_id: whose.
        site_id: the site whose calendar splits the range.
        timezone: that site's zone.
        by: shift or day.
        start_ms: start of the range.
        end_ms: end of the range (never later than when it was computed).
        periods: the calendar periods.
        machines: each machine's figures.
        group: the machines together, per period.
        total: the machines together over the whole range.
    """

    tenant_id: str
    site_id: str
    timezone: str
    by: Grouping
    start_ms: int
    end_ms: int
    periods: list[CalendarPeriod]
    machines: list[DeviceOee] = field(default_factory=list)
    group: list[OeeFigures] = field(default_factory=list)
    total: OeeFigures = field(default_factory=lambda: OeeFigures(machines=0))


def _whole(figures: Sequence[OeeFigures]) -> OeeFigures:
    total = OeeFigures.combine(figures)
    total.machines = 1
    return total


class OeeService:
    """OEE from the platform's store, registry and device events.

    Args:
        registry: the device registry (devices, sites, thing models).
        store: the time-series store.
        db: the metadata database (device events).
        config: shifts, planned run times and gap tolerance.
    """

    def __init__(
        self,
        *,
        registry: DeviceRegistry,
        store: TimeSeriesStore,
        db: Database,
        config: OeeConfig | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.db = db
        self.config = config or OeeConfig()
        self._settled: dict[tuple[str, int, int], tuple[float, float]] = {}

    async def calendar(self, tenant_id: str, site_id: str) -> ShiftCalendar:
        """The shift calendar of a site, in its time zone."""
        site = await self.registry.get_site(tenant_id, site_id)
        return ShiftCalendar.with_zone(site.timezone, self.config.shifts_of(tenant_id, site_id))

    async def report(
        self,
        tenant_id: str,
        *,
        start_ms: int,
        end_ms: int,
        by: Grouping = Grouping.SHIFT,
        device_id: str | None = None,
        site_id: str | None = None,
        now_ms: int | None = None,
    ) -> OeeReport:
        """The figures of one device (``device_id``) or of a site's machines (``site_id``).

        Raises:
            NotFoundError: the device or site is not the tenant's.
            ValueError: neither or both of device and site; a range that is empty or too long.
        """
        if (device_id is None) == (site_id is None):
            raise ValueError("ask for one device or one site")
        now = int(datetime.now(UTC).timestamp() * 1000) if now_ms is None else now_ms
        end_ms = min(end_ms, now)
        if end_ms <= start_ms:
            raise ValueError("the range is empty (or starts in the future)")
        if end_ms - start_ms > MAX_RANGE_MS:
            raise ValueError(f"a range may cover at most {MAX_RANGE_MS // _DAY_MS} days")
        if device_id is not None:
            device = await self.registry.get_device(device_id, tenant_id)
            devices = [device] if device.model_id in PROFILES else []
            site_id = device.site_id
        else:
            assert site_id is not None
            await self.registry.get_site(tenant_id, site_id)  # NotFoundError
            devices = [
                d for d in await self._site_devices(tenant_id, site_id) if d.model_id in PROFILES
            ]
        calendar = await self.calendar(tenant_id, site_id)
        periods = calendar.periods(start_ms, end_ms, by)
        machines = [await self.device_figures(device, periods) for device in devices]
        return OeeReport(
            tenant_id=tenant_id,
            site_id=site_id,
            timezone=calendar.timezone,
            by=by,
            start_ms=start_ms,
            end_ms=end_ms,
            periods=periods,
            machines=machines,
            group=[OeeFigures.combine(m.periods[i] for m in machines) for i in range(len(periods))],
            total=OeeFigures.combine(m.total for m in machines),
        )

    async def device_figures(self, device: Device, periods: list[CalendarPeriod]) -> DeviceOee:
        """One machine's figures for the periods (its model must have a profile)."""
        profile = PROFILES[device.model_id]
        entry = self.registry.lookup(device.id)
        model = (
            entry.model
            if entry is not None
            else await self.registry.get_thing_model(
                device.tenant_id, device.model_id, device.model_version
            )
        )
        state_spec = model.property(profile.state_metric)
        labels = list(state_spec.enum or []) if state_spec is not None else []
        cycle = self.config.cycle_of(device.id, device.model_id, device.attributes)
        if not periods or not labels:
            # No state enum to read (a tenant's own model of that name): nothing is known.
            empty = [
                OeeFigures(planned_ms=p.planned_ms, pbt_ms=p.planned_ms, unknown_ms=p.planned_ms)
                for p in periods
            ]
            return DeviceOee(device, cycle, empty, _whole(empty))
        start_ms = min(p.start_ms for p in periods)
        end_ms = max(p.end_ms for p in periods)
        max_gap_ms = int(self.config.max_gap_s * 1000)
        series = await self.store.device_series(device.tenant_id, device.id)
        state = await self._raw(series.get(profile.state_metric), start_ms - max_gap_ms, end_ms)
        good = await self._counter(series.get(profile.good_metric), start_ms, end_ms)
        bad = (
            None
            if profile.bad_metric is None
            else await self._counter(series.get(profile.bad_metric), start_ms, end_ms)
        )
        tolerance_ms = int(self.config.fault_tolerance_s * 1000)
        faults = await self._faults(device.id, start_ms - max_gap_ms - tolerance_ms, end_ms)
        # A label the profile does not know (a newer thing model version) is unknown time.
        classes = {label: profile.classes.get(label, StateClass.UNKNOWN) for label in labels}
        figures = await asyncio.to_thread(
            partial(
                compute,
                periods,
                state=state,
                labels=labels,
                classes=classes,
                good=good,
                bad=bad,
                faults=faults,
                ideal_cycle_s=cycle,
                max_gap_ms=max_gap_ms,
                fault_tolerance_ms=tolerance_ms,
            )
        )
        return DeviceOee(device, cycle, figures, _whole(figures))

    async def _site_devices(self, tenant_id: str, site_id: str) -> list[Device]:
        out: list[Device] = []
        offset = 0
        while True:
            page, total = await self.registry.list_devices(
                tenant_id, site_id=site_id, limit=_PAGE, offset=offset
            )
            out.extend(page)
            offset += len(page)
            if not page or offset >= total:
                return out

    async def _raw(
        self, series_id: int | None, start_ms: int, end_ms: int
    ) -> list[tuple[int, float]]:
        """Every numeric point of a series in ``[start, end)``, page by page."""
        if series_id is None:
            return []
        out: list[tuple[int, float]] = []
        cursor = start_ms
        while cursor < end_ms:
            rows = await self.store.query(series_id, cursor, end_ms, None, Aggregate.LAST)
            points = [
                (ts, float(v)) if isinstance(v, int | float) else (ts, math.nan) for ts, v in rows
            ]
            if len(rows) < RAW_LIMIT:
                out.extend(points)
                break
            last = points[-1][0]
            if last == points[0][0]:  # a whole page on one timestamp: keep it, move on
                out.extend(points)
                cursor = last + 1
                continue
            out.extend(p for p in points if p[0] < last)  # the last timestamp is read again
            cursor = last
        return out

    async def _counter(
        self, series_id: int | None, start_ms: int, end_ms: int
    ) -> list[tuple[int, float]]:
        """A counter's points in the range, after its last value in the day before it."""
        if series_id is None:
            return []
        # Whole hours before the cut (24 rows, not 1,440 minutes: the monthly indicator asks
        # for this once per machine and day), raw points from it: no point is read twice. The
        # raw points before ``start_ms`` give increments outside every period, not counted.
        cut = start_ms - start_ms % HOUR_MS
        before = await self.store.query(
            series_id, cut - COUNTER_LOOKBACK_MS, cut, HOUR_MS, Aggregate.LAST
        )
        baseline = [(ts, float(v)) for ts, v in before if isinstance(v, int | float)][-1:]
        return baseline + await self._raw(series_id, cut, end_ms)

    async def _faults(self, device_id: str, start_ms: int, end_ms: int) -> list[tuple[int, str]]:
        query = (
            sa.select(device_events.c.ts, device_events.c.data)
            .where(
                device_events.c.device_id == device_id,
                device_events.c.event == "fault",
                device_events.c.ts >= datetime.fromtimestamp(start_ms / 1000, UTC),
                device_events.c.ts < datetime.fromtimestamp(end_ms / 1000, UTC),
            )
            .order_by(device_events.c.ts)
        )
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        out = []
        for row in rows:
            when = utc(row.ts)
            data = row.data if isinstance(row.data, dict) else {}
            code = data.get("code")
            if when is not None:
                out.append((int(when.timestamp() * 1000), str(code) if code else "fault"))
        return out

    async def indicator(self, tenant_id: str, start_ms: int, end_ms: int) -> tuple[float, float]:
        """The enterprise OEE indicator's measure: ``(Σ OEE x PBT hours, Σ PBT hours)``.

        The weighted mean of the catalog, over each production machine of each of the tenant's
        sites and each UTC day of the range: a machine-day's OEE weighted by its planned busy
        time. A machine-day whose OEE is unknown (no state data, no counts, no planned run
        time) is left out, not counted as zero. Days that ended more than ``SETTLED_MS`` ago
        are computed once and kept (a month's report is recomputed every few minutes).
        """
        now = int(datetime.now(UTC).timestamp() * 1000)
        end_ms = min(end_ms, now)
        weighted = 0.0
        hours = 0.0
        day = start_ms - start_ms % _DAY_MS
        while day < end_ms:
            lo, hi = max(start_ms, day), min(end_ms, day + _DAY_MS)
            key = (tenant_id, lo, hi)
            part = self._settled.get(key)
            if part is None:
                part = await self._indicator_part(tenant_id, lo, hi)
                if hi <= now - SETTLED_MS:
                    self._settled[key] = part
                    while len(self._settled) > _SETTLED_KEPT:
                        del self._settled[next(iter(self._settled))]
            weighted += part[0]
            hours += part[1]
            day += _DAY_MS
        return weighted, hours

    async def _indicator_part(
        self, tenant_id: str, start_ms: int, end_ms: int
    ) -> tuple[float, float]:
        weighted = 0.0
        hours = 0.0
        if end_ms <= start_ms:
            return weighted, hours
        for site in await self.registry.list_sites(tenant_id):
            report = await self.report(
                tenant_id, start_ms=start_ms, end_ms=end_ms, by=Grouping.DAY, site_id=site.id
            )
            for machine in report.machines:
                oee = machine.total.oee
                if oee is not None and machine.total.pbt_ms > 0:
                    pbt_h = machine.total.pbt_ms / 3_600_000
                    weighted += oee * pbt_h
                    hours += pbt_h
        return weighted, hours
