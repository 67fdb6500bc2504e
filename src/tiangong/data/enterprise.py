"""The enterprise side: indicators computed from the platform's own telemetry, as reports.

The platform knows what its machines did: power meters count kWh, machines and lines count good
parts, the registry knows which devices are online, the alarm service what was raised. Each
period (hour, day, month) ``IndicatorCollector`` turns that into one ``Report`` of the standard
catalog's indicators for the enterprise; the exporter signs it, passes it through the export
policy and sends it to the enterprise's regional and industry sub-centers. Raw telemetry never
leaves: only these figures do.

How each indicator is measured here:

- ENERGY_KWH: the increase of every cumulative ``energy`` counter (kWh, power meters) over the
  period, computed by the energy app (``apps.energy``: counter resets and rollovers, glitches,
  duplicates, out-of-order readings and gaps handled, an increase across the period's edges
  split exactly at them). ENERGY_TCE converts it at 0.1229 kgce/kWh (``catalog.kwh_to_tce``).
- PRODUCTION_VOLUME: the increase of every good-parts counter (``parts_good``, ``good_count``),
  read as robustly as the energy counters (a ``reset_counters`` command does not lose or invent
  parts).
  OUTPUT_VALUE = volume times the profile's unit price. ENERGY_INTENSITY = tce / (output / 10,000).
- PEAK_POWER_KW: the largest 15-minute mean of the meters' summed ``active_power`` (or
  ``power``): the demand interval of China's two-part electricity tariff.
- DEVICES_REGISTERED / ONLINE, NETWORKING_RATE, DATA_COVERAGE: the connectivity KPIs at the
  time of the report (summed over sites: the rate is a ratio of sums, never an average).
- ALARMS: alarms raised in the period. ENTERPRISES_REPORTING: this enterprise.
- SECURITY_*: from the security monitor's events (``tiangong.security.monitor``):
  SECURITY_EVENTS those first detected in the period (an event coalescing many occurrences
  counts once, in the period it started), SECURITY_EVENTS_SERIOUS those of them high or
  critical; SECURITY_EVENTS_OPEN events detected before the period's end and not acknowledged
  by then, SECURITY_DEVICES_AT_RISK the registered (not decommissioned) devices with such an
  open high or critical event, and
  SECURITY_DEVICE_RISK_RATE that count over the devices registered (a ratio of sums). A
  final report sent after its period recomputes "open at the end" from the acknowledgement
  times, so it says what was open then, not now.

- OEE: ISO 22400-2 OEE from the OEE app (``tiangong.apps.oee``), the weighted mean over the
  tenant's production machines of each one's OEE in the period, weighted by its planned busy
  time in hours (the measure is Σ OEE x PBT h over Σ PBT h, so centers combine it exactly). A
  machine whose OEE is unknown (no state data, no counts, no planned run time) is left out, not
  counted as zero; with none known the indicator is left out.

Indicators the platform cannot measure (OEE without production machines; security indicators
on a platform without a security monitor) are left out rather than reported as zero.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from tiangong.cancellation import raise_if_cancelling
from tiangong.data.catalog import Catalog, kwh_to_tce
from tiangong.data.model import Level, Measure, Period, Report, Scope, report_id_for
from tiangong.platform.model import DeviceState
from tiangong.platform.tsdb.base import Aggregate

if TYPE_CHECKING:
    from tiangong.data.center import EnterpriseExporter
    from tiangong.platform.service import Platform

log = logging.getLogger(__name__)

ENERGY_COUNTERS = ("energy",)
GOOD_COUNTERS = ("parts_good", "good_count")
POWER_METRICS = ("active_power", "power")  # kW; a meter's first one found
DEMAND_INTERVAL = timedelta(minutes=15)
_PAGE = 500


@dataclass(frozen=True, slots=True)
class EnterpriseProfile:
    """Who the enterprise is in the national statistics."""

    enterprise_id: str  # 统一社会信用代码 (unified social credit code) or another stable id
    name: str
    tenant_id: str  # its tenant on this platform
    region: str  # GB/T 2260 code of where it produces
    industry: str  # GB/T 4754 code of what it produces
    unit_price_cny: float = 850.0  # output value of one good unit


def period_bounds(period: Period, when: datetime) -> tuple[datetime, datetime, str]:
    """The period containing ``when`` (UTC): start, end and the ISO start a report carries."""
    when = when.astimezone(UTC)
    if period is Period.HOUR:
        start = when.replace(minute=0, second=0, microsecond=0)
        return start, start + timedelta(hours=1), start.strftime("%Y-%m-%dT%H:00")
    if period is Period.DAY:
        start = when.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1), start.strftime("%Y-%m-%d")
    start = when.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (start + timedelta(days=32)).replace(day=1)
    return start, following, start.strftime("%Y-%m-%d")


class IndicatorCollector:
    """Computes one enterprise's indicator report for a period from the platform."""

    def __init__(self, platform: Platform, profile: EnterpriseProfile, catalog: Catalog) -> None:
        self.platform = platform
        self.profile = profile
        self.catalog = catalog

    async def collect(self, period: Period, when: datetime | None = None) -> Report:
        """The (unsigned) report of the period containing ``when`` (default: now)."""
        start, end, iso = period_bounds(period, when or datetime.now(UTC))
        now = datetime.now(UTC)
        end_ms = int(min(end, now).timestamp() * 1000)
        start_ms = int(start.timestamp() * 1000)
        good = 0.0
        meters: list[int] = []
        for device_id in await self._device_ids():
            series = await self.platform.store.device_series(self.profile.tenant_id, device_id)
            for metric in ENERGY_COUNTERS:
                if metric in series:
                    power = next((series[m] for m in POWER_METRICS if m in series), None)
                    if power is not None:
                        meters.append(power)
            for metric in GOOD_COUNTERS:
                if metric in series:
                    good += await self.platform.energy.counter_increase(
                        device_id, series[metric], start_ms, end_ms
                    )
        kwh = await self.platform.energy.counter_kwh(self.profile.tenant_id, start_ms, end_ms)
        tce = kwh_to_tce(kwh)
        output = good * self.profile.unit_price_cny
        measures: dict[str, Measure] = {
            "ENERGY_KWH": Measure(numerator=kwh),
            "ENERGY_TCE": Measure(numerator=tce),
            "PRODUCTION_VOLUME": Measure(numerator=good),
            "OUTPUT_VALUE": Measure(numerator=output),
            "ENERGY_INTENSITY": Measure(numerator=tce, denominator=output / 10_000),
            "PEAK_POWER_KW": Measure(numerator=await self._peak(meters, start_ms, end_ms)),
            "ALARMS": Measure(
                numerator=float(
                    await self.platform.alarms.raised_between(self.profile.tenant_id, start, end)
                )
            ),
            "ENTERPRISES_REPORTING": Measure(members=frozenset({self.profile.enterprise_id})),
        }
        measures.update(await self._connectivity())
        measures.update(await self._security(start, min(end, now), measures))
        measures.update(await self._oee(start_ms, end_ms))
        # Only what the catalog knows (a catalog may drop an indicator in a new version).
        measures = {code: m for code, m in measures.items() if code in self.catalog.indicators}
        scope = Scope(
            source=self.profile.enterprise_id,
            level=Level.ENTERPRISE,
            region=self.profile.region,
            industry=self.profile.industry,
        )
        return Report(
            report_id=report_id_for(scope, period, iso),
            # Recomputed while the period is open and once after: the latest figures win.
            revision=time.time_ns() // 1000,
            scope=scope,
            period=period,
            period_start=iso,
            catalog_version=self.catalog.version,
            measures=measures,
            created_at=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        )

    async def _device_ids(self) -> list[str]:
        ids: list[str] = []
        offset = 0
        while True:
            page, total = await self.platform.registry.list_devices(
                self.profile.tenant_id, limit=_PAGE, offset=offset
            )
            ids.extend(d.id for d in page)
            offset += len(page)
            if not page or offset >= total:
                return ids

    async def _peak(self, meters: list[int], start_ms: int, end_ms: int) -> float:
        """The largest demand-interval mean of the meters' summed power."""
        if not meters or end_ms <= start_ms:
            return 0.0
        interval = int(DEMAND_INTERVAL.total_seconds() * 1000)
        totals: dict[int, float] = {}
        for series_id in meters:
            points = await self.platform.store.query(
                series_id, start_ms, end_ms, interval, Aggregate.AVG
            )
            for bucket, value in points:
                if isinstance(value, int | float):
                    totals[bucket] = totals.get(bucket, 0.0) + float(value)
        return max(totals.values(), default=0.0)

    async def _oee(self, start_ms: int, end_ms: int) -> dict[str, Measure]:
        """OEE weighted by planned busy time (module docstring); none without a known OEE."""
        weighted, hours = await self.platform.oee.indicator(
            self.profile.tenant_id, start_ms, end_ms
        )
        if hours <= 0:
            return {}
        return {"OEE": Measure(numerator=weighted, denominator=hours)}

    async def _security(
        self, start: datetime, end: datetime, measures: dict[str, Measure]
    ) -> dict[str, Measure]:
        """The security posture indicators (module docstring); none without a monitor."""
        monitor = getattr(self.platform, "security", None)
        if monitor is None:
            return {}
        figures = await monitor.period_figures(self.profile.tenant_id, start, end)
        # Registered devices only (a decommissioned one's events count in the event figures),
        # so that the rate's numerator is part of its denominator.
        at_risk = float(
            sum(
                1
                for device_id in figures.devices_at_risk
                if (entry := self.platform.registry.lookup(device_id)) is not None
                and entry.device.tenant_id == self.profile.tenant_id
                and entry.device.state is not DeviceState.DECOMMISSIONED
            )
        )
        registered = measures.get("DEVICES_REGISTERED", Measure()).numerator
        return {
            "SECURITY_EVENTS": Measure(numerator=float(figures.detected)),
            "SECURITY_EVENTS_SERIOUS": Measure(numerator=float(figures.serious)),
            "SECURITY_EVENTS_OPEN": Measure(numerator=float(figures.open_at_end)),
            "SECURITY_DEVICES_AT_RISK": Measure(numerator=at_risk),
            "SECURITY_DEVICE_RISK_RATE": Measure(numerator=at_risk, denominator=registered),
        }

    async def _connectivity(self) -> dict[str, Measure]:
        sites = [
            k for k in await self.platform.kpis.current(self.profile.tenant_id) if k.site_id != "*"
        ]
        registered = sum(k.registered for k in sites)
        online = sum(k.online for k in sites)
        expected = sum(k.expected_metrics for k in sites)
        reporting = sum(k.reporting_metrics for k in sites)
        return {
            "DEVICES_REGISTERED": Measure(numerator=float(registered)),
            "DEVICES_ONLINE": Measure(numerator=float(online)),
            "NETWORKING_RATE": Measure(numerator=float(online), denominator=float(registered)),
            "DATA_COVERAGE": Measure(numerator=float(reporting), denominator=float(expected)),
        }


class EnterpriseReporter:
    """Every ``interval``: this hour's, day's and month's reports so far, and the final ones.

    A period's report is recomputed each round under a higher revision (the latest figures
    replace the earlier ones above); when a period has ended since the last round (or while
    the platform was stopped) its final figures are sent once more. The open period of each
    kind is remembered in ``state_file`` so a restart finishes what it had started.
    """

    def __init__(
        self,
        collector: IndicatorCollector,
        exporter: EnterpriseExporter,
        *,
        state_file: Path,
        interval: float = 300.0,
        periods: tuple[Period, ...] = (Period.HOUR, Period.DAY, Period.MONTH),
    ) -> None:
        self.collector = collector
        self.exporter = exporter
        self.state_file = state_file
        self.interval = interval
        self.periods = periods
        self.sent = 0
        self.failures = 0
        self._open: dict[str, str] = self._load()

    def _load(self) -> dict[str, str]:
        try:
            data = orjson.loads(self.state_file.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _save(self) -> None:
        # Write-then-rename: a crash leaves the old state or the new, never half of one.
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        partial = self.state_file.with_suffix(".tmp")
        partial.write_bytes(orjson.dumps(self._open))
        partial.replace(self.state_file)

    async def one_round(self) -> None:
        """Send the reports of the periods now open, and the final ones of periods just ended."""
        for period in self.periods:
            now = datetime.now(UTC)
            _, _, start = period_bounds(period, now)
            previous = self._open.get(period.value)
            if previous is not None and previous != start:
                ended = datetime.fromisoformat(previous).replace(tzinfo=UTC)
                await self.exporter.export(await self.collector.collect(period, ended))
                self.sent += 1
            await self.exporter.export(await self.collector.collect(period, now))
            self.sent += 1
            self._open[period.value] = start
            await asyncio.to_thread(self._save)

    async def run(self) -> None:
        """Report every ``interval`` seconds until cancelled; a failed round is retried next."""
        while True:
            try:
                await self.one_round()
                # A JetStream publish (nats-py: asyncio.wait_for) may have swallowed a stop.
                raise_if_cancelling()
            except asyncio.CancelledError:
                raise
            except Exception:  # a round must never stop the platform; the next one retries
                self.failures += 1
                log.exception("indicator report round failed; retrying in %.0f s", self.interval)
            await asyncio.sleep(self.interval)
