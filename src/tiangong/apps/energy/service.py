"""The energy service: consumption, cost and anomalies from the platform's store and registry.

What is read, per device of the scope (a device; a site; a line of a site):

- ``energy``, a cumulative kWh counter (power meters);
- else ``active_power`` or ``power`` (kW), integrated (the documented fallback for machines
  without a counter);
- ``parts_good`` or ``good_count``: good units (cumulative counters, reset by operators);
- ``state``: the machine state (enum label index -> label via its thing model), for idle
  consumption.

**Resolution.** A series is read raw, every reading at its own time, when the range holds fewer
readings than the store's raw query limit (counted on the rollups first). A busier series is
read per minute (per hour for ranges over :data:`MINUTE_RESOLUTION_DAYS` days): a counter's last
reading of each bucket placed at the bucket's end, a power's mean at the bucket's middle. Its
readings' times are then known to the minute (hour), so band boundaries on whole minutes
(hours) stay exact, a reset costs at most one bucket's consumption, and the range's last bucket
may fall after the range's end. The report says the coarsest resolution used.

The store is read from ``gap_ms`` before the range to ``gap_ms`` after it, so a reading
interval straddling a range edge is split exactly at the edge.

**Anomalies** read the baseline history (28 days) per hour, never raw: the baseline compares
hours. Idle consumption is judged on the asked range at the resolution above.

**What adds up.** A site's (or line's) consumption is the sum of its *counter* devices: feeder
and machine meters are where a plant measures energy, and machines measured only by their power
usually sit behind one of those meters, so adding them too would count their energy twice. A
scope without any counter device adds up its power-integrated devices instead. Every device is
listed with its source and whether it was included. A line is the devices whose ``line``
attribute names it, plus the device named like the line itself (a line counter).
"""

from __future__ import annotations

import asyncio
import math
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from tiangong.apps.energy.anomalies import (
    BaselineRule,
    EnergyAnomaly,
    IdleRule,
    above_baseline,
    idle_consumption,
    state_spans,
)
from tiangong.apps.energy.core import (
    GAP_MS,
    HOUR_MS,
    BucketFigures,
    ConsumptionProfile,
    CounterReset,
    Gap,
    Granularity,
    ReadingQuality,
    Source,
    bucket_edges,
    counter_profile,
    power_profile,
    summarize,
    total,
)
from tiangong.apps.energy.errors import EnergyQueryError, TariffError
from tiangong.apps.energy.tariff import Tariff, TariffBook
from tiangong.platform.model import Device
from tiangong.platform.registry import DeviceRegistry
from tiangong.platform.tsdb.base import MINUTE_MS, RAW_LIMIT, Aggregate, Float64s, TimeSeriesStore

__all__ = [
    "ENERGY_COUNTERS",
    "GOOD_COUNTERS",
    "POWER_METRICS",
    "AnomalyReport",
    "DeviceAnomaly",
    "DeviceEnergy",
    "EnergyReport",
    "EnergyService",
]

ENERGY_COUNTERS: Final = ("energy",)
POWER_METRICS: Final = ("active_power", "power")
GOOD_COUNTERS: Final = ("parts_good", "good_count")
STATE_METRIC: Final = "state"
#: Series with too many readings to read raw are read per minute up to this many days of
#: range, per hour beyond.
MINUTE_RESOLUTION_DAYS: Final = 35
#: The longest range of one query.
MAX_RANGE_DAYS: Final = 400
_DAY_MS: Final = 24 * HOUR_MS
_PAGE: Final = 500

Bools = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class DeviceEnergy:
    """One device's figures over the whole range.

    Attributes:
        device_id: the device.
        name: its display name.
        site_id: its site.
        line: its line, if any.
        source: counter, power or ``None`` (it measures no energy).
        included: whether its kWh are in the scope's totals (service docstring).
        kwh: consumed in the range.
        estimated_kwh: the part of ``kwh`` spread across gaps.
        good_units: good units produced (``None``: no output counter).
        quality: what happened to its energy readings (those read: the range and the gap
            threshold either side of it).
        resets: counter resets and rollovers in the range.
        gaps: gaps in the range, with spans without readings at its ends.
    """

    device_id: str
    name: str
    site_id: str
    line: str | None
    source: Source | None
    included: bool
    kwh: float
    estimated_kwh: float
    good_units: float | None
    quality: ReadingQuality
    resets: tuple[CounterReset, ...]
    gaps: tuple[Gap, ...]


@dataclass(frozen=True, slots=True)
class EnergyReport:
    """Energy figures of a scope over a range.

    Attributes:
        tenant_id: the tenant.
        site_id: the site (a device's site for a device query).
        device_id: the device asked for, if any.
        line: the line asked for, if any.
        start_ms: range start.
        end_ms: range end.
        by: bucket size.
        timezone: the zone of the buckets (the site's).
        tariff: the tariff's name.
        currency: of the costs.
        resolution_ms: the coarsest reading resolution used (0: raw readings; a minute, or
            an hour for ranges over 35 days, for series with too many readings to read raw).
        totals: the figures of the whole range (``None`` for an empty range).
        buckets: the figures per bucket.
        devices: per device.
    """

    tenant_id: str
    site_id: str
    device_id: str | None
    line: str | None
    start_ms: int
    end_ms: int
    by: Granularity
    timezone: str
    tariff: str
    currency: str
    resolution_ms: int
    totals: BucketFigures | None
    buckets: list[BucketFigures]
    devices: list[DeviceEnergy]


@dataclass(frozen=True, slots=True)
class DeviceAnomaly:
    """An anomaly of a device (``device_id`` ``None``: of the whole scope)."""

    device_id: str | None
    anomaly: EnergyAnomaly


@dataclass(frozen=True, slots=True)
class AnomalyReport:
    """Abnormal consumption in a scope over a range, oldest first."""

    tenant_id: str
    site_id: str
    start_ms: int
    end_ms: int
    anomalies: list[DeviceAnomaly] = field(default_factory=list)


@dataclass(slots=True)
class _DeviceData:
    device: Device
    energy: ConsumptionProfile | None = None
    output: ConsumptionProfile | None = None
    states: tuple[list[int], list[str]] | None = None
    resolution: int = 0


class EnergyService:
    """Energy figures over the platform's store (module docstring).

    Args:
        registry: devices, sites and thing models.
        store: the time-series store.
        tariffs: the tariff of each site.
        tariffs_path: where changes of the tariffs are kept (None: in memory only).
        gap_ms: readings further apart leave a gap.
        rollovers: a counter's modulus by device id, for meters that roll over.
        baseline: the above-baseline rule.
        idle: the idle-consumption rule.
    """

    def __init__(
        self,
        registry: DeviceRegistry,
        store: TimeSeriesStore,
        *,
        tariffs: TariffBook | None = None,
        tariffs_path: Path | None = None,
        gap_ms: int = GAP_MS,
        rollovers: Mapping[str, float] | None = None,
        baseline: BaselineRule | None = None,
        idle: IdleRule | None = None,
    ) -> None:
        self.registry = registry
        self.store = store
        self.tariffs = tariffs or TariffBook()
        self.tariffs_path = tariffs_path
        self._tariff_lock = asyncio.Lock()
        self.gap_ms = gap_ms
        self.rollovers = dict(rollovers or {})
        self.baseline = baseline or BaselineRule()
        self.idle = idle or IdleRule()
        #: Ranges of fewer readings than this are read raw (the store's raw query limit).
        self.raw_limit = RAW_LIMIT

    async def set_tariff(self, tenant_id: str, site_id: str, tariff: Tariff | None) -> None:
        """Give a site its own tariff (None: the default again), kept in ``tariffs_path``.

        The book in memory changes only once the file holds the change.

        Raises:
            NotFoundError: the tenant has no such site.
            TariffError: the file cannot be written (the message names it).
        """
        await self.registry.get_site(tenant_id, site_id)
        async with self._tariff_lock:
            book = TariffBook(self.tariffs.default, dict(self.tariffs.sites))
            if tariff is None:
                book.remove(tenant_id, site_id)
            else:
                book.set(tenant_id, site_id, tariff)
            if self.tariffs_path is not None:
                try:
                    await asyncio.to_thread(book.save, self.tariffs_path)
                except OSError as exc:
                    name = tariff.name if tariff is not None else "book"
                    message = f"cannot write {self.tariffs_path}: {exc}"
                    raise TariffError(message, tariff=name) from exc
            self.tariffs = book

    async def consumption(
        self,
        tenant_id: str | None,
        *,
        site_id: str | None = None,
        device_id: str | None = None,
        line: str | None = None,
        start_ms: int,
        end_ms: int,
        by: Granularity = Granularity.DAY,
    ) -> EnergyReport:
        """Consumption, cost by band and energy per unit of a device, a site or a line.

        Args:
            tenant_id: the caller's tenant (``None``: a platform administrator, who must then
                name a device, or a tenant for a site).
            site_id: a site.
            device_id: a device (instead of a site).
            line: a line of the site.
            start_ms: range start.
            end_ms: range end.
            by: bucket size.

        Raises:
            NotFoundError: no such device or site visible to the tenant.
            EnergyQueryError: neither a device nor a site, an empty or too long range.
        """
        _check_range(start_ms, end_ms)
        tenant, site, devices = await self._scope(tenant_id, site_id, device_id, line)
        resolution = _resolution(start_ms, end_ms)
        data = [
            await self._read(tenant, d, start_ms, end_ms, resolution, states=False) for d in devices
        ]
        counters = [d for d in data if d.energy is not None and d.energy.source is Source.COUNTER]
        included = counters or [d for d in data if d.energy is not None]
        zone = zoneinfo.ZoneInfo(site.timezone)
        tariff = self.tariffs.for_site(tenant, site.id)
        edges = bucket_edges(start_ms, end_ms, by, zone)
        outputs = [d.output for d in data if d.output is not None]
        buckets = summarize(
            [d.energy for d in included if d.energy is not None],
            edges,
            tariff,
            outputs or None,
        )
        rows = [_device_row(d, d in included, start_ms, end_ms) for d in data]
        return EnergyReport(
            tenant_id=tenant,
            site_id=site.id,
            device_id=device_id,
            line=line,
            start_ms=start_ms,
            end_ms=end_ms,
            by=by,
            timezone=site.timezone,
            tariff=tariff.name,
            currency=tariff.currency,
            resolution_ms=max((d.resolution for d in data), default=0),
            totals=total(buckets, tariff),
            buckets=buckets,
            devices=rows,
        )

    async def anomalies(
        self,
        tenant_id: str | None,
        *,
        site_id: str | None = None,
        device_id: str | None = None,
        line: str | None = None,
        start_ms: int,
        end_ms: int,
    ) -> AnomalyReport:
        """Hours far above their baseline (per device and for the scope) and idle consumption.

        The baseline history (``BaselineRule.history_days`` before ``start``) is read too.

        Raises:
            NotFoundError: no such device or site visible to the tenant.
            EnergyQueryError: neither a device nor a site, an empty or too long range.
        """
        _check_range(start_ms, end_ms)
        tenant, site, devices = await self._scope(tenant_id, site_id, device_id, line)
        history_start = start_ms - self.baseline.history_days * _DAY_MS
        _check_range(history_start, end_ms)
        zone = zoneinfo.ZoneInfo(site.timezone)
        edges = bucket_edges(history_start, end_ms, Granularity.HOUR, zone)
        hour_starts = edges[:-1]
        whole_hours = [
            i for i in range(len(hour_starts)) if edges[i + 1] - edges[i] == HOUR_MS
        ]  # partial first/last hours are not comparable
        found: list[DeviceAnomaly] = []
        scope_kwh = np.zeros(len(hour_starts))
        scope_complete = np.ones(len(hour_starts), dtype=bool)
        any_counter = False
        per_device: list[tuple[ConsumptionProfile, Float64s, Bools]] = []
        for device in devices:
            # The baseline compares hours: the history is read per hour, never raw.
            history = await self._read(
                tenant, device, history_start, end_ms, HOUR_MS, states=False, raw=False
            )
            profile = history.energy
            if profile is not None:
                kwh, _ = profile.over(edges)
                complete = np.asarray(
                    [profile.complete(edges[i], edges[i + 1]) for i in range(len(hour_starts))]
                )
                per_device.append((profile, kwh, complete))
                any_counter |= profile.source is Source.COUNTER
                found.extend(
                    DeviceAnomaly(device.id, a)
                    for a in self._baseline(
                        hour_starts, kwh, complete, whole_hours, judge_from_ms=start_ms, zone=zone
                    )
                )
            recent = await self._read(
                tenant, device, start_ms, end_ms, _resolution(start_ms, end_ms), states=True
            )
            if recent.energy is not None and recent.states is not None and recent.energy.knots.size:
                ts, labels = recent.states
                until = min(end_ms, int(recent.energy.knots[-1]))
                spans = state_spans(ts, labels, until_ms=until, gap_ms=self.gap_ms)
                found.extend(
                    DeviceAnomaly(device.id, a)
                    for a in idle_consumption(recent.energy, spans, self.idle)
                )
        for profile, kwh, complete in per_device:
            if (profile.source is Source.COUNTER) == any_counter:
                scope_kwh += kwh
                scope_complete &= complete
        if device_id is None and per_device:
            found.extend(
                DeviceAnomaly(None, a)
                for a in self._baseline(
                    hour_starts,
                    scope_kwh,
                    scope_complete,
                    whole_hours,
                    judge_from_ms=start_ms,
                    zone=zone,
                )
            )
        found.sort(key=lambda f: (f.anomaly.start_ms, f.device_id or ""))
        return AnomalyReport(tenant, site.id, start_ms, end_ms, found)

    def _baseline(
        self,
        hour_starts: Sequence[int],
        kwh: Float64s,
        complete: Bools,
        whole_hours: list[int],
        *,
        judge_from_ms: int,
        zone: zoneinfo.ZoneInfo,
    ) -> list[EnergyAnomaly]:
        return above_baseline(
            [hour_starts[i] for i in whole_hours],
            [float(kwh[i]) for i in whole_hours],
            [bool(complete[i]) for i in whole_hours],
            judge_from_ms=judge_from_ms,
            zone=zone,
            rule=self.baseline,
        )

    async def counter_kwh(self, tenant_id: str, start_ms: int, end_ms: int) -> float:
        """Increase of every ``energy`` counter of a tenant in ``[start, end)``, robustly.

        Resets, rollovers, glitches, duplicates and gaps are handled as in :mod:`.core`; this
        is the enterprise's ENERGY_KWH indicator.
        """
        if end_ms <= start_ms:
            return 0.0
        resolution = _resolution(start_ms, end_ms)
        kwh = 0.0
        for device in await self._tenant_devices(tenant_id, None):
            series = await self.store.device_series(tenant_id, device.id)
            sid = next((series[m] for m in ENERGY_COUNTERS if m in series), None)
            if sid is None:
                continue
            profile, _ = await self._counter(device.id, sid, start_ms, end_ms, resolution)
            kwh += profile.between(start_ms, end_ms)
        return kwh

    async def counter_increase(
        self, device_id: str, series_id: int, start_ms: int, end_ms: int
    ) -> float:
        """How much any cumulative counter (energy, good parts...) rose in ``[start, end)``.

        The same robust reading as ``counter_kwh``: a counter reset, a glitch or a duplicate
        never turns into a negative or inflated increase.
        """
        if end_ms <= start_ms:
            return 0.0
        profile, _ = await self._counter(
            device_id, series_id, start_ms, end_ms, _resolution(start_ms, end_ms)
        )
        return profile.between(start_ms, end_ms)

    async def _scope(
        self, tenant_id: str | None, site_id: str | None, device_id: str | None, line: str | None
    ) -> tuple[str, _Site, list[Device]]:
        if device_id is not None:
            device = await self.registry.get_device(device_id, tenant_id)
            site = await self.registry.get_site(device.tenant_id, device.site_id)
            return device.tenant_id, _Site(site.id, site.timezone), [device]
        if site_id is None:
            raise EnergyQueryError("name a site (site=) or a device (device=)")
        if tenant_id is None:
            raise EnergyQueryError("a platform administrator names the tenant (tenant=)")
        site = await self.registry.get_site(tenant_id, site_id)
        devices = await self._tenant_devices(tenant_id, site_id)
        if line is not None:
            devices = [d for d in devices if d.attributes.get("line") == line or d.id == line]
        return tenant_id, _Site(site.id, site.timezone), devices

    async def _tenant_devices(self, tenant_id: str, site_id: str | None) -> list[Device]:
        out: list[Device] = []
        offset = 0
        while True:
            page, count = await self.registry.list_devices(
                tenant_id, site_id=site_id, limit=_PAGE, offset=offset
            )
            out.extend(page)
            offset += len(page)
            if not page or offset >= count:
                return out

    async def _read(
        self,
        tenant_id: str,
        device: Device,
        start_ms: int,
        end_ms: int,
        fallback: int,
        *,
        states: bool,
        raw: bool = True,
    ) -> _DeviceData:
        series = await self.store.device_series(tenant_id, device.id)
        data = _DeviceData(device)
        counter = next((series[m] for m in ENERGY_COUNTERS if m in series), None)
        power = next((series[m] for m in POWER_METRICS if m in series), None)
        if counter is not None:
            data.energy, used = await self._counter(
                device.id, counter, start_ms, end_ms, fallback, raw=raw
            )
            data.resolution = used
        elif power is not None:
            ts, kw, used = await self._points(
                power, start_ms, end_ms, fallback, Aggregate.AVG, place=0.5, raw=raw
            )
            data.energy = power_profile(ts, kw, gap_ms=self._gap(used))
            data.resolution = used
        good = next((series[m] for m in GOOD_COUNTERS if m in series), None)
        if good is not None:
            ts, units, used = await self._points(
                good, start_ms, end_ms, fallback, Aggregate.LAST, place=1.0, raw=raw
            )
            data.output = counter_profile(ts, units, gap_ms=self._gap(used))
        if states and STATE_METRIC in series:
            data.states = await self._states(
                tenant_id, device, series[STATE_METRIC], start_ms, end_ms
            )
        return data

    async def _counter(
        self,
        device_id: str,
        series_id: int,
        start_ms: int,
        end_ms: int,
        fallback: int,
        *,
        raw: bool = True,
    ) -> tuple[ConsumptionProfile, int]:
        ts, values, used = await self._points(
            series_id, start_ms, end_ms, fallback, Aggregate.LAST, place=1.0, raw=raw
        )
        profile = counter_profile(
            ts, values, gap_ms=self._gap(used), rollover=self.rollovers.get(device_id)
        )
        return profile, used

    async def _points(
        self,
        series_id: int,
        start_ms: int,
        end_ms: int,
        fallback: int,
        agg: Aggregate,
        *,
        place: float,
        raw: bool = True,
    ) -> tuple[list[int], list[float], int]:
        """Readings around a range, and the resolution they were read at (0: raw).

        Raw readings when there are fewer than ``raw_limit`` of them (counted on the rollups);
        else one per ``fallback`` bucket, placed at ``place`` of the bucket: the last reading
        of a bucket at its end, the mean power at its middle (module docstring). Never raw
        without ``raw``.
        """
        margin = self._gap(fallback)
        lo, hi = start_ms - margin, end_ms + margin
        span = -(-(hi - lo) // HOUR_MS) * HOUR_MS  # whole hours: counted on the hour rollups
        counts = await self.store.query(series_id, lo, hi, span, Aggregate.COUNT) if raw else []
        if raw and sum(float(v) for _, v in counts if isinstance(v, int | float)) < self.raw_limit:
            return (*_numbers(await self.store.query(series_id, lo, hi, None, agg), 0), 0)
        rows = await self.store.query(series_id, lo, hi, fallback, agg)
        return (*_numbers(rows, int(fallback * place)), fallback)

    async def _states(
        self, tenant_id: str, device: Device, series_id: int, start_ms: int, end_ms: int
    ) -> tuple[list[int], list[str]] | None:
        model = await self.registry.get_thing_model(
            tenant_id, device.model_id, device.model_version
        )
        spec = next((p for p in model.properties if p.id == STATE_METRIC), None)
        if spec is None or not spec.enum:
            return None
        labels = list(spec.enum)
        rows = await self.store.query(series_id, start_ms, end_ms, MINUTE_MS, Aggregate.LAST)
        ts: list[int] = []
        names: list[str] = []
        for t, v in rows:
            if isinstance(v, int | float) and math.isfinite(v) and 0 <= int(v) < len(labels):
                ts.append(t)
                names.append(labels[int(v)])
        return ts, names

    def _gap(self, resolution: int) -> int:
        # At hour resolution consecutive readings are an hour apart: only a missing hour or
        # more is a gap.
        return max(self.gap_ms, 2 * resolution - 1) if resolution > MINUTE_MS else self.gap_ms


@dataclass(frozen=True, slots=True)
class _Site:
    id: str
    timezone: str


def _check_range(start_ms: int, end_ms: int) -> None:
    if end_ms <= start_ms:
        raise EnergyQueryError("the range is empty: 'to' must be after 'from'")
    if end_ms - start_ms > MAX_RANGE_DAYS * _DAY_MS:
        raise EnergyQueryError(f"at most {MAX_RANGE_DAYS} days per query; narrow the range")


def _resolution(start_ms: int, end_ms: int) -> int:
    """The bucket size to read at when there are too many raw readings."""
    return MINUTE_MS if end_ms - start_ms <= MINUTE_RESOLUTION_DAYS * _DAY_MS else HOUR_MS


def _numbers(
    rows: Sequence[tuple[int, float | str | None]], shift: int
) -> tuple[list[int], list[float]]:
    pairs = [(t + shift, float(v)) for t, v in rows if isinstance(v, int | float)]
    return [t for t, _ in pairs], [v for _, v in pairs]


def _device_row(data: _DeviceData, included: bool, start_ms: int, end_ms: int) -> DeviceEnergy:
    device = data.device
    profile = data.energy
    if profile is None:
        kwh = estimated = 0.0
        quality = ReadingQuality()
        resets: tuple[CounterReset, ...] = ()
        gaps: tuple[Gap, ...] = ()
    else:
        kwh_arr, est_arr = profile.over([start_ms, end_ms])
        kwh, estimated = float(kwh_arr[0]), float(est_arr[0])
        quality = profile.quality
        resets = tuple(r for r in profile.resets if start_ms < r.at_ms <= end_ms)
        gaps = tuple(profile.gaps_within(start_ms, end_ms))
    return DeviceEnergy(
        device_id=device.id,
        name=device.name,
        site_id=device.site_id,
        line=device.attributes.get("line"),
        source=None if profile is None else profile.source,
        included=included and profile is not None,
        kwh=kwh,
        estimated_kwh=estimated,
        good_units=None if data.output is None else data.output.between(start_ms, end_ms),
        quality=quality,
        resets=resets,
        gaps=gaps,
    )
