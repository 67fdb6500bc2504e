"""The national view of ``tiangong up``: the whole data hierarchy in one process, no server.

**The figures of the generated enterprises are synthetic.** They come from a seeded random
model with plausible orders of magnitude; they are not statistics of any real enterprise,
region or industry, and nothing here should be quoted as such. The enterprises' names say
"Demo" / "示例" and their ids contain ``DEMO``. Only the simulated factory's figures are
computed (by ``IndicatorCollector``) from telemetry, and that telemetry is simulated too.

What runs (``national_demo``):

* an ``OutboxTransport`` in ``DATA_DIR/datacenter/outbox.sqlite3``, the embedded path with the
  same contract as JetStream;
* one **regional** sub-center per province that has an enterprise (the factory's Suzhou,
  320500, is a city of Jiangsu: the ``js`` center covers ``320000`` and so its cities), one
  **industry** sub-center per GB/T 4754 section (``mfg`` for C, which holds the factory's C34
  and refining C25; ``mining`` for B, coal B06; ``utilities`` for D, power D44 and gas D45),
  and the **national** center ``cn``;
* the factory's enterprise: every ``interval`` seconds (the first round at start) its HOUR,
  DAY and MONTH reports are collected from the platform and exported to its two sub-centers;
  when a period has ended since the last round it is collected once more, final;
* 14 generated enterprises in six provinces, six of them energy enterprises (coal mining B06,
  coal-fired and wind power D44, city gas D45, refining C25). At start they export their last
  ``history_days`` days and ``history_months`` months (so the national view has history),
  then every round the current day and month so far.

Keys: one Ed25519 key per center and enterprise under ``DATA_DIR/datacenter/keys/<id>/``
(private key mode 0600, generated on first start, reused after). Each regional center trusts
the enterprises of its province, each industry center those of its section, the national
center the sub-centers; signers must be their report's source.

Grades (the demo's export policy): enterprises give general and important data (production
volume, coal output) to their sub-centers; sub-centers pass general and important *aggregates*
up, but per-enterprise breakdowns of general data only, so the national center drills down to
the enterprise for energy, output value or networking rate, never for production volume or
coal output. Core data never leaves a node.

Model of the synthetic figures: each enterprise has a rated daily capacity and per-unit
coefficients drawn once from ``seed``; each day's load factor is the kind's base load times a
weekday factor (manufacturers slow down on weekends), a month factor (the Spring Festival in
February, winter heating for gas, summer and winter peaks for coal power, spring winds) and
seeded noise. Everything follows from the day's output: electricity per unit, fuels, energy
in tce at the GB/T 2589-2020 coefficients (electricity 0.1229 kgce/kWh, natural gas 1.2143
kgce/m3, raw coal 0.7143 kgce/kg, diesel 1.4571 kgce/kg), output value at a unit price,
approximate CO2 factors (grid 0.5703 t/MWh, coal 2.66 t/tce, gas 2.162 kg/m3, diesel 3.10 t/t).
A month is its days combined by each indicator's rule (period-end figures, devices and
employees, take the last day), so DAY and MONTH always agree; the current day is the full
day's model scaled by the fraction elapsed.

Revisions: a finished period's report has a fixed revision (its end in microseconds), so a
restart re-creates identical reports that the outbox and the ledgers absorb; reports of an
open period take the time as revision (always lower than the finished one's). Finished reports
already exported are remembered in ``DATA_DIR/datacenter/enterprises/state.sqlite3`` and not
sent again after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Final

from tiangong.data.catalog import Catalog, kwh_to_tce, province_of, section_of, standard_catalog
from tiangong.data.center import CenterConfig, CenterStats, DataCenter, EnterpriseExporter
from tiangong.data.enterprise import (
    EnterpriseProfile,
    EnterpriseReporter,
    IndicatorCollector,
)
from tiangong.data.errors import DataError
from tiangong.data.governance import AuditLog, ExportPolicy
from tiangong.data.model import (
    ANY,
    Aggregation,
    DataGrade,
    Level,
    Measure,
    Period,
    Report,
    Scope,
    combine,
    report_id_for,
)
from tiangong.data.reports import KeyRing
from tiangong.data.store import AnalyticsStore
from tiangong.data.transport import OutboxTransport, destination_for

if TYPE_CHECKING:
    from tiangong.platform.service import Platform

__all__ = [
    "DEFAULT_SEED",
    "EnterpriseKind",
    "GeneratedEnterprise",
    "NationalDemo",
    "day_figures",
    "generated_enterprises",
    "national_demo",
]

log = logging.getLogger(__name__)

#: Seed of the generated enterprises and their figures.
DEFAULT_SEED: Final = 2026
#: The national center's id.
NATIONAL_ID: Final = "cn"

#: Center ids of the provinces and sections used here (others get ``r<code>``, ``i<letter>``).
_REGIONAL_IDS: Final = {
    "320000": "js",
    "330000": "zj",
    "440000": "gd",
    "140000": "sx",
    "150000": "nm",
    "510000": "sc",
}
_INDUSTRY_IDS: Final = {"C": "mfg", "B": "mining", "D": "utilities"}

# GB/T 2589-2020 Appendix A (equivalent values) and approximate CO2 emission factors.
_TCE_PER_M3_GAS: Final = 1.2143e-3
_TCE_PER_T_COAL: Final = 0.7143
_TCE_PER_T_DIESEL: Final = 1.4571
_CO2_T_PER_KWH_GRID: Final = 0.5703e-3
_CO2_T_PER_TCE_COAL: Final = 2.66
_CO2_T_PER_M3_GAS: Final = 2.162e-3
_CO2_T_PER_T_DIESEL: Final = 3.10

#: Figures that describe the end of a period (a month's is its last day's), not a flow.
_PERIOD_END: Final = frozenset(
    {"DEVICES_REGISTERED", "DEVICES_ONLINE", "NETWORKING_RATE", "EMPLOYEES"}
)
#: Devices registered grow by one every two weeks after this day (digitalisation goes on).
_GROWTH_ANCHOR: Final = date(2025, 1, 1)

# -- the generated enterprises --------------------------------------------------------------------


class EnterpriseKind(StrEnum):
    """What a generated enterprise does, which decides its indicators."""

    MANUFACTURER = "manufacturer"  # units of product; OEE, production volume
    COAL_MINE = "coal_mine"  # tonnes of raw coal
    COAL_POWER = "coal_power"  # kWh generated from coal
    WIND_POWER = "wind_power"  # kWh generated from wind
    CITY_GAS = "city_gas"  # m3 of natural gas distributed
    REFINERY = "refinery"  # tonnes of crude oil processed


@dataclass(frozen=True, slots=True)
class GeneratedEnterprise:
    """An enterprise of the demo with synthetic figures.

    Attributes:
        enterprise_id: its (made-up) unified social credit code, containing ``DEMO``.
        name: English / Chinese, both saying it is a demo.
        region: GB/T 2260 city code.
        industry: GB/T 4754 division.
        kind: what it does (see ``EnterpriseKind``).
        capacity: rated output per day (units, t, kWh or m3 by kind).
        price_cny: output value of one unit of output.
        kwh_per_unit: electricity consumed per unit of output (own use for power plants).
        fuel_per_unit: the kind's fuel per unit: gas m3 (chemicals, city gas), diesel t
            (coal mine), refinery fuel t (refinery), gce per kWh supplied (coal power).
        devices: production devices registered at the growth anchor.
        employees: people employed.
    """

    enterprise_id: str
    name: str
    region: str
    industry: str
    kind: EnterpriseKind
    capacity: float
    price_cny: float
    kwh_per_unit: float
    fuel_per_unit: float
    devices: int
    employees: int

    def profile(self, tenant_id: str = "") -> EnterpriseProfile:
        """The enterprise as the exporter and the center see it."""
        return EnterpriseProfile(
            enterprise_id=self.enterprise_id,
            name=self.name,
            tenant_id=tenant_id,
            region=self.region,
            industry=self.industry,
            unit_price_cny=self.price_cny,
        )


@dataclass(frozen=True, slots=True)
class _Template:
    region: str
    industry: str
    kind: EnterpriseKind
    name: str
    capacity: tuple[float, float]
    price: tuple[float, float]
    kwh: tuple[float, float]
    fuel: tuple[float, float]
    devices: tuple[int, int]
    employees: tuple[int, int]


_M, _COAL, _THERMAL, _WIND, _GAS, _REFINERY = (
    EnterpriseKind.MANUFACTURER,
    EnterpriseKind.COAL_MINE,
    EnterpriseKind.COAL_POWER,
    EnterpriseKind.WIND_POWER,
    EnterpriseKind.CITY_GAS,
    EnterpriseKind.REFINERY,
)
_MW_DAY: Final = 24_000.0  # kWh per MW per day

# Ranges the seeded generator draws from (all synthetic, orders of magnitude only).
_TEMPLATES: Final = (
    _Template("320200", "C38", _M, "Wuxi Demo Electric Motors / 无锡示例电机",
              (2_000, 4_000), (1_500, 3_000), (25, 40), (0, 0), (150, 300), (1_200, 2_500)),
    _Template("320100", "C26", _M, "Nanjing Demo Chemicals / 南京示例化工",
              (800, 1_500), (6_000, 9_000), (250, 400), (80, 150), (200, 400), (800, 1_500)),
    _Template("320500", "C34", _M, "Suzhou Demo Pumps / 苏州示例泵业",
              (300, 600), (6_000, 12_000), (120, 200), (0, 0), (60, 120), (400, 900)),
    _Template("330100", "C39", _M, "Hangzhou Demo Electronics / 杭州示例电子",
              (20_000, 50_000), (150, 400), (1.5, 3.0), (0, 0), (300, 600), (2_000, 5_000)),
    _Template("330200", "C25", _REFINERY, "Ningbo Demo Refining / 宁波示例炼化",
              (30_000, 50_000), (5_000, 5_800), (70, 90), (0.03, 0.045), (1_500, 3_000),
              (3_000, 6_000)),
    _Template("440300", "C39", _M, "Shenzhen Demo Smart Devices / 深圳示例智能设备",
              (30_000, 60_000), (200, 500), (1.5, 2.5), (0, 0), (400, 800), (3_000, 6_000)),
    _Template("440100", "C36", _M, "Guangzhou Demo Automotive / 广州示例汽车",
              (600, 1_200), (120_000, 180_000), (700, 1_000), (0, 0), (400, 800),
              (4_000, 8_000)),
    _Template("140200", "B06", _COAL, "Datong Demo Coal / 大同示例煤业",
              (30_000, 45_000), (550, 750), (18, 28), (0.0003, 0.0005), (250, 500),
              (3_000, 6_000)),
    _Template("140100", "D44", _THERMAL, "Taiyuan Demo Thermal Power / 太原示例热电",
              (1_200 * _MW_DAY, 2_000 * _MW_DAY), (0.33, 0.40), (0.05, 0.06), (290, 310),
              (400, 700), (600, 1_000)),
    _Template("150600", "B06", _COAL, "Ordos Demo Mining / 鄂尔多斯示例矿业",
              (40_000, 60_000), (500, 700), (15, 24), (0.0003, 0.0005), (300, 600),
              (2_500, 5_000)),
    _Template("150200", "D44", _WIND, "Baotou Demo Wind Power / 包头示例风电",
              (300 * _MW_DAY, 600 * _MW_DAY), (0.28, 0.32), (0.015, 0.025), (0, 0), (150, 300),
              (60, 120)),
    _Template("510100", "C39", _M, "Chengdu Demo Semiconductor / 成都示例半导体",
              (5_000, 12_000), (800, 1_500), (8, 14), (0, 0), (200, 400), (1_500, 3_000)),
    _Template("510100", "D45", _GAS, "Chengdu Demo Gas / 成都示例燃气",
              (6e6, 10e6), (2.8, 3.5), (0.02, 0.04), (0.002, 0.004), (800, 1_500),
              (2_000, 4_000)),
    _Template("320200", "C34", _M, "Wuxi Demo Compressors / 无锡示例压缩机",
              (200, 400), (15_000, 30_000), (300, 500), (0, 0), (80, 160), (500, 1_000)),
)  # fmt: skip


def _rng(*parts: object) -> random.Random:
    # Seeded from text (hashed with SHA-512 by ``random``): the same on every run and machine.
    return random.Random(":".join(str(p) for p in parts))  # noqa: S311 - synthetic figures


def generated_enterprises(seed: int = DEFAULT_SEED) -> tuple[GeneratedEnterprise, ...]:
    """The demo's 14 generated enterprises (deterministic for a seed)."""
    enterprises = []
    for n, t in enumerate(_TEMPLATES, start=1):
        rng = _rng("enterprise", seed, n)
        enterprises.append(
            GeneratedEnterprise(
                enterprise_id=f"91{t.region}MA0DEMO{n:03d}",
                name=t.name,
                region=t.region,
                industry=t.industry,
                kind=t.kind,
                capacity=round(rng.uniform(*t.capacity), -1),
                price_cny=round(rng.uniform(*t.price), 3),
                kwh_per_unit=round(rng.uniform(*t.kwh), 4),
                fuel_per_unit=round(rng.uniform(*t.fuel), 5),
                devices=rng.randint(*t.devices),
                employees=rng.randint(*t.employees),
            )
        )
    return tuple(enterprises)


def _month_factor(kind: EnterpriseKind, month: int) -> float:
    match kind:
        case EnterpriseKind.MANUFACTURER | EnterpriseKind.REFINERY:
            return {1: 0.95, 2: 0.75, 12: 1.05}.get(month, 1.0)  # Spring Festival in February
        case EnterpriseKind.COAL_MINE:
            return 0.9 if month == 2 else 1.0
        case EnterpriseKind.COAL_POWER:
            return {1: 1.12, 7: 1.12, 8: 1.12, 12: 1.12, 4: 0.9, 5: 0.9, 10: 0.9}.get(month, 1.0)
        case EnterpriseKind.WIND_POWER:
            return {3: 1.25, 4: 1.25, 5: 1.25, 6: 0.8, 7: 0.8, 8: 0.8}.get(month, 1.0)
        case EnterpriseKind.CITY_GAS:
            return {12: 1.45, 1: 1.45, 2: 1.45, 11: 1.2, 3: 1.2, 6: 0.8, 7: 0.8, 8: 0.8}.get(
                month, 1.0
            )


_BASE_LOAD: Final = {
    EnterpriseKind.MANUFACTURER: 0.80,
    EnterpriseKind.COAL_MINE: 0.85,
    EnterpriseKind.COAL_POWER: 0.58,
    EnterpriseKind.WIND_POWER: 0.27,
    EnterpriseKind.CITY_GAS: 0.62,
    EnterpriseKind.REFINERY: 0.88,
}


def _load(e: GeneratedEnterprise, day: date, rng: random.Random) -> float:
    """The day's output as a share of capacity."""
    base = _BASE_LOAD[e.kind] * _month_factor(e.kind, day.month)
    if e.kind is EnterpriseKind.MANUFACTURER:
        base *= (1.0, 1.0, 1.0, 1.0, 1.0, 0.85, 0.65)[day.weekday()]
    if e.kind is EnterpriseKind.WIND_POWER:
        return min(0.9, max(0.02, base * rng.uniform(0.3, 1.7)))  # the wind varies most
    return min(1.0, max(0.05, base * rng.gauss(1.0, 0.05)))


def day_figures(
    e: GeneratedEnterprise, day: date, *, seed: int = DEFAULT_SEED
) -> dict[str, Measure]:
    """One whole day's synthetic figures of ``e`` (the same for the same seed and day)."""
    rng = _rng("day", seed, e.enterprise_id, day.isoformat())
    u = _load(e, day, rng)
    quantity = e.capacity * u
    days = (day - _GROWTH_ANCHOR).days
    registered = e.devices + min(max(days, 0) // 14, e.devices // 4)
    online = round(registered * rng.uniform(0.9, 0.99))
    planned_points = registered * 1440.0  # one point per device and minute
    kwh = quantity * e.kwh_per_unit * rng.gauss(1.0, 0.02)
    m: dict[str, Measure] = {}
    tce = kwh_to_tce(kwh)
    co2 = kwh * _CO2_T_PER_KWH_GRID
    output = quantity * e.price_cny
    water = 0.0
    match e.kind:
        case EnterpriseKind.MANUFACTURER:
            gas = quantity * e.fuel_per_unit
            if gas:
                m["GAS_CONSUMPTION_M3"] = Measure(numerator=gas)
                tce += gas * _TCE_PER_M3_GAS
                co2 += gas * _CO2_T_PER_M3_GAS
            m["PRODUCTION_VOLUME"] = Measure(numerator=float(round(quantity)))
            hours = registered * 16.0  # two shifts
            oee = min(0.92, max(0.3, 0.62 + 0.3 * (u - 0.8) + rng.gauss(0.0, 0.03)))
            m["OEE"] = Measure(numerator=oee * hours, denominator=hours)
            water = output * 0.001
        case EnterpriseKind.COAL_MINE:
            diesel = quantity * e.fuel_per_unit
            m["COAL_OUTPUT_T"] = Measure(numerator=quantity)
            m["OIL_CONSUMPTION_T"] = Measure(numerator=diesel)
            tce += diesel * _TCE_PER_T_DIESEL
            co2 += diesel * _CO2_T_PER_T_DIESEL
            water = quantity * 0.1
        case EnterpriseKind.COAL_POWER | EnterpriseKind.WIND_POWER:
            generated = quantity
            kwh = generated * e.kwh_per_unit  # the plant's own use of what it generates
            supplied = generated - kwh
            output = supplied * e.price_cny
            m["POWER_GENERATED_KWH"] = Measure(numerator=generated)
            m["POWER_SUPPLIED_KWH"] = Measure(numerator=supplied)
            if e.kind is EnterpriseKind.COAL_POWER:
                gce = supplied * e.fuel_per_unit * rng.gauss(1.0, 0.01)
                tce = gce / 1e6  # the coal burnt; own use comes out of the generation
                m["COAL_CONSUMPTION_T"] = Measure(numerator=tce / _TCE_PER_T_COAL)
                m["SUPPLY_COAL_RATE"] = Measure(numerator=gce, denominator=supplied)
                m["RENEWABLE_SHARE"] = Measure(numerator=0.0, denominator=generated)
                co2 = tce * _CO2_T_PER_TCE_COAL
                water = generated * 0.0015
            else:
                tce = kwh_to_tce(kwh)
                m["RENEWABLE_SHARE"] = Measure(numerator=generated, denominator=generated)
                co2 = 0.0
        case EnterpriseKind.CITY_GAS:
            own_gas = quantity * e.fuel_per_unit
            m["GAS_CONSUMPTION_M3"] = Measure(numerator=own_gas)
            tce += own_gas * _TCE_PER_M3_GAS
            co2 += own_gas * _CO2_T_PER_M3_GAS
        case EnterpriseKind.REFINERY:
            fuel = quantity * e.fuel_per_unit
            gas = quantity * 10.0
            m["OIL_CONSUMPTION_T"] = Measure(numerator=fuel)
            m["GAS_CONSUMPTION_M3"] = Measure(numerator=gas)
            tce += fuel * _TCE_PER_T_DIESEL + gas * _TCE_PER_M3_GAS
            co2 += fuel * _CO2_T_PER_T_DIESEL + gas * _CO2_T_PER_M3_GAS
            water = quantity * 0.5
    m.update(
        {
            "ENERGY_KWH": Measure(numerator=kwh),
            "ENERGY_TCE": Measure(numerator=tce),
            "OUTPUT_VALUE": Measure(numerator=output),
            "REVENUE_CNY": Measure(numerator=output * rng.uniform(0.92, 1.0)),
            "ENERGY_INTENSITY": Measure(numerator=tce, denominator=output / 10_000),
            "CAPACITY_UTILIZATION": Measure(numerator=quantity, denominator=e.capacity),
            "PEAK_POWER_KW": Measure(numerator=kwh / 24 * rng.uniform(1.15, 1.6)),
            "DEVICES_REGISTERED": Measure(numerator=float(registered)),
            "DEVICES_ONLINE": Measure(numerator=float(online)),
            "NETWORKING_RATE": Measure(numerator=float(online), denominator=float(registered)),
            "DATA_COVERAGE": Measure(
                numerator=planned_points * rng.uniform(0.95, 0.998), denominator=planned_points
            ),
            "ALARMS": Measure(numerator=float(round(registered * rng.uniform(0.01, 0.05)))),
            "CARBON_EMISSIONS_T": Measure(numerator=co2),
            "EMPLOYEES": Measure(numerator=float(e.employees)),
            "ENTERPRISES_REPORTING": Measure(members=frozenset({e.enterprise_id})),
        }
    )
    if water:
        m["WATER_CONSUMPTION_M3"] = Measure(numerator=water)
    return m


def _combine_days(days: Sequence[dict[str, Measure]], catalog: Catalog) -> dict[str, Measure]:
    """A period's figures from its days: by each indicator's rule, period-end ones the last."""
    codes = sorted({code for figures in days for code in figures})
    combined: dict[str, Measure] = {}
    for code in codes:
        parts = [figures[code] for figures in days if code in figures]
        if code in _PERIOD_END:
            combined[code] = parts[-1]
        else:
            combined[code] = combine(catalog.spec(code).aggregation, parts)
    return combined


def _so_far(figures: dict[str, Measure], share: float, catalog: Catalog) -> dict[str, Measure]:
    """A whole day's figures scaled to the ``share`` of it that has passed."""
    scaled: dict[str, Measure] = {}
    for code, m in figures.items():
        rule = catalog.spec(code).aggregation
        if code in _PERIOD_END or rule in (Aggregation.MAX, Aggregation.DISTINCT_COUNT):
            scaled[code] = m
        else:
            scaled[code] = Measure(numerator=m.numerator * share, denominator=m.denominator * share)
    return scaled


def _month_start(day: date, months_back: int = 0) -> date:
    index = day.year * 12 + day.month - 1 - months_back
    return date(index // 12, index % 12 + 1, 1)


def _micros(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


@dataclass(frozen=True, slots=True)
class _Planned:
    """A report to export: finished ones are remembered so a restart does not resend them."""

    report: Report
    finished: bool


class _FigureModel:
    """Reports of the generated enterprises, finished and open, from ``day_figures``."""

    def __init__(self, catalog: Catalog, seed: int) -> None:
        self.catalog = catalog
        self.seed = seed

    def _report(
        self,
        e: GeneratedEnterprise,
        period: Period,
        start: date,
        measures: dict[str, Measure],
        *,
        revision: int,
        created: datetime,
    ) -> Report:
        scope = Scope(e.enterprise_id, Level.ENTERPRISE, e.region, e.industry)
        iso = start.isoformat()
        known = {code: m for code, m in measures.items() if code in self.catalog.indicators}
        return Report(
            report_id=report_id_for(scope, period, iso),
            revision=revision,
            scope=scope,
            period=period,
            period_start=iso,
            catalog_version=self.catalog.version,
            measures=known,
            created_at=created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        )

    def finished(self, e: GeneratedEnterprise, period: _FinishedPeriod) -> Report:
        """The final report of a finished day or month (its revision: the period's end)."""
        if period.period is Period.DAY:
            figures = day_figures(e, period.start, seed=self.seed)
        else:
            days = [
                day_figures(e, period.start + timedelta(days=n), seed=self.seed)
                for n in range((period.end.date() - period.start).days)
            ]
            figures = _combine_days(days, self.catalog)
        return self._report(
            e, period.period, period.start, figures, revision=period.revision, created=period.end
        )

    def open_reports(self, e: GeneratedEnterprise, now: datetime) -> list[Report]:
        """The current day and month so far."""
        today = now.date()
        midnight = datetime(today.year, today.month, today.day, tzinfo=UTC)
        share = (now - midnight) / timedelta(days=1)
        partial = _so_far(day_figures(e, today, seed=self.seed), share, self.catalog)
        month = _month_start(today)
        earlier = [
            day_figures(e, month + timedelta(days=n), seed=self.seed)
            for n in range((today - month).days)
        ]
        revision = time.time_ns() // 1000
        return [
            self._report(e, Period.DAY, today, partial, revision=revision, created=now),
            self._report(
                e,
                Period.MONTH,
                month,
                _combine_days([*earlier, partial], self.catalog),
                revision=revision,
                created=now,
            ),
        ]


@dataclass(frozen=True, slots=True)
class _FinishedPeriod:
    period: Period
    start: date
    end: datetime

    @property
    def revision(self) -> int:
        """Fixed, and above any revision taken while the period was open (the time then)."""
        return _micros(self.end)

    def report_id(self, e: GeneratedEnterprise) -> str:
        scope = Scope(e.enterprise_id, Level.ENTERPRISE, e.region, e.industry)
        return report_id_for(scope, self.period, self.start.isoformat())


def _finished_periods(today: date, *, days: int, months: int) -> list[_FinishedPeriod]:
    """The finished months, then days, of the history window, oldest first."""
    periods = []
    for n in range(months, 0, -1):
        start, following = _month_start(today, n), _month_start(today, n - 1)
        end = datetime(following.year, following.month, 1, tzinfo=UTC)
        periods.append(_FinishedPeriod(Period.MONTH, start, end))
    for n in range(days, 0, -1):
        start = today - timedelta(days=n)
        end = datetime(start.year, start.month, start.day, tzinfo=UTC) + timedelta(days=1)
        periods.append(_FinishedPeriod(Period.DAY, start, end))
    return periods


# -- state kept across restarts -------------------------------------------------------------------


class _ExportState:
    """Finished reports already exported (SQLite)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS sent (report_id TEXT PRIMARY KEY, revision INTEGER)"
        )

    def sent(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT report_id, revision FROM sent").fetchall())

    def record_sent(self, report: Report) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO sent VALUES (?, ?)", (report.report_id, report.revision)
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _key_ring(directory: Path, key_id: str) -> KeyRing:
    """The key ring of ``key_id``: kept from an earlier run, or generated now. Blocking."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    return KeyRing.load_or_generate(directory / key_id, key_id)[0]


def _trust(ring: KeyRing, other: KeyRing) -> None:
    if other.key_id not in ring.trusted:
        ring.trust(other.key_id, other.public_pem)


# -- the running demo -----------------------------------------------------------------------------


@dataclass
class NationalDemo:
    """The running hierarchy of ``national_demo``.

    Attributes:
        directory: ``DATA_DIR/datacenter``.
        factory: the simulated factory's enterprise (figures from telemetry).
        enterprises: the generated enterprises (synthetic figures).
        national: the national center.
        centers: every center by destination (``regional.js``, ``national.cn``...).
        transport: the outbox all of them share.
        interval: seconds between rounds.
        history_days: finished days exported at start.
        history_months: finished months exported at start.
        rounds: rounds completed in this run.
        history_pending: finished reports of the history window not exported yet.
        history_sent: finished reports exported in this run (none after a restart that
            found them sent).
        updates_sent: reports of open periods exported in this run.
        failures: rounds that failed (logged) in this run.
    """

    directory: Path
    factory: EnterpriseProfile
    enterprises: tuple[GeneratedEnterprise, ...]
    national: DataCenter
    centers: dict[str, DataCenter]
    transport: OutboxTransport
    interval: float
    history_days: int
    history_months: int
    rounds: int = 0
    history_pending: int = 0
    history_sent: int = 0
    updates_sent: int = 0
    failures: int = 0
    _first_round: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def store(self) -> AnalyticsStore:
        """The national center's analytics store (what the national view reads)."""
        return self.national.store

    @property
    def provinces(self) -> list[str]:
        """Province codes with a regional center."""
        return sorted(c.config.region for c in self.centers.values() if c.config.region != ANY)

    def stats(self) -> dict[str, CenterStats]:
        """Each center's counters since this start, by destination."""
        return {destination: c.stats for destination, c in self.centers.items()}

    def summary(self) -> str:
        """One line for the banner: what runs and how far it got."""
        regional = sum(1 for c in self.centers.values() if c.config.level is Level.REGIONAL)
        industry = sum(1 for c in self.centers.values() if c.config.level is Level.INDUSTRY)
        energy = sum(1 for e in self.enterprises if e.kind is not EnterpriseKind.MANUFACTURER)
        if self.history_pending:
            progress = (
                f"sending {self.history_pending:,} reports of history ({self.history_days} days,"
                f" {self.history_months} months)"
            )
        elif not self._first_round.is_set():
            progress = "history already sent, first round under way"
        else:
            progress = (
                f"round {self.rounds}, national center holds"
                f" {self.national.stats.accepted + self.national.stats.revised:,} cell updates"
                " this run"
            )
        return (
            f"{len(self.enterprises) + 1} enterprises in {len(self.provinces)} provinces: the"
            f" simulated factory ({self.factory.industry}, {self.factory.region}) and"
            f" {len(self.enterprises)} generated ones ({energy} energy) with synthetic figures;"
            f" {regional} regional + {industry} industry sub-centers → national center, over"
            f" the local outbox; every {self.interval:g}s; {progress}"
        )

    async def wait_idle(self, *, poll: float = 0.05) -> None:
        """Wait until a first round is exported and every center has handled it.

        Bound it with ``asyncio.timeout``; reports exported by a later round may still be on
        their way afterwards.
        """
        await self._first_round.wait()
        settled = 0
        while settled < 2:  # twice: a forward seen late by the national center
            idle = [await c.idle() for c in self.centers.values()]
            settled = settled + 1 if all(idle) else 0
            await asyncio.sleep(poll)


def _center_ids(members: Sequence[EnterpriseProfile]) -> tuple[dict[str, str], dict[str, str]]:
    """Regional center id by province code, industry center id by section letter."""
    provinces = sorted({province_of(m.region) for m in members})
    sections = sorted({section_of(m.industry) for m in members})
    return (
        {p: _REGIONAL_IDS.get(p, f"r{p}") for p in provinces},
        {s: _INDUSTRY_IDS.get(s, f"i{s}") for s in sections},
    )


@contextlib.asynccontextmanager
async def national_demo(
    data_dir: Path,
    platform: Platform,
    *,
    factory: EnterpriseProfile,
    interval: float = 30.0,
    enterprises: Sequence[GeneratedEnterprise] | None = None,
    seed: int = DEFAULT_SEED,
    history_days: int = 30,
    history_months: int = 12,
    forward_delay: float = 0.5,
    catalog: Catalog | None = None,
) -> AsyncIterator[NationalDemo]:
    """Run the hierarchy, the factory's exporter and the generated enterprises.

    Args:
        data_dir: the stack's data directory; everything goes under ``data_dir/datacenter``.
        platform: the running platform whose telemetry the factory's figures come from.
        factory: the simulated factory as an enterprise (its tenant on ``platform``).
        interval: seconds between rounds (the first is at start).
        enterprises: the generated enterprises (default: ``generated_enterprises(seed)``).
        seed: seed of the synthetic figures.
        history_days: finished days of history the generated enterprises export.
        history_months: finished months of history they export.
        forward_delay: the sub-centers' debounce before re-aggregating.
        catalog: the indicator catalog (default: the standard one).

    Yields:
        The running demo; everything stops when the block ends.

    Raises:
        DataError: a bad interval or window, a duplicate enterprise id, or a region or
            industry code the catalog does not know (``CatalogError``).
    """
    if interval <= 0 or history_days < 0 or history_months < 0:
        raise DataError("interval must be > 0, history_days and history_months >= 0")
    catalog = catalog or standard_catalog()
    generated = tuple(generated_enterprises(seed) if enterprises is None else enterprises)
    profiles = [factory, *(e.profile() for e in generated)]
    ids = {p.enterprise_id for p in profiles}
    if len(ids) != len(profiles):
        raise DataError("enterprise ids must be unique (the factory's included)")
    for p in profiles:
        catalog.check_region(p.region)
        catalog.check_industry(p.industry)
    directory = data_dir / "datacenter"
    key_dir = directory / "keys"
    regional_ids, industry_ids = _center_ids(profiles)

    def prepare_keys() -> dict[str, KeyRing]:
        rings = {key_id: _key_ring(key_dir, key_id) for key_id in sorted(ids)}
        for center_id in [NATIONAL_ID, *regional_ids.values(), *industry_ids.values()]:
            rings[center_id] = _key_ring(key_dir, center_id)
        for p in profiles:
            ring = rings[p.enterprise_id]
            _trust(rings[regional_ids[province_of(p.region)]], ring)
            _trust(rings[industry_ids[section_of(p.industry)]], ring)
        for center_id in [*regional_ids.values(), *industry_ids.values()]:
            _trust(rings[NATIONAL_ID], rings[center_id])
        return rings

    rings = await asyncio.to_thread(prepare_keys)
    national_destination = destination_for(Level.NATIONAL, NATIONAL_ID)
    # Sub-centers pass important aggregates up, but per-enterprise breakdowns of general data
    # only (``breakdown_max_grade``); core data stays where it is.
    upward = ExportPolicy(default_max_grade=DataGrade.IMPORTANT)

    def config(
        level: Level, center_id: str, region: str = ANY, industry: str = ANY
    ) -> CenterConfig:
        return CenterConfig(
            level=level,
            center_id=center_id,
            data_dir=directory / "centers" / center_id,
            keys=rings[center_id],
            catalog=catalog,
            region=region,
            industry=industry,
            parents=() if level is Level.NATIONAL else (national_destination,),
            export_policy=upward,
            breakdown_max_grade=DataGrade.GENERAL,
            forward_delay=forward_delay,
            bind_signer_to_source=True,
        )

    async with contextlib.AsyncExitStack() as stack:
        transport = await stack.enter_async_context(OutboxTransport(path=directory))
        configs = [
            config(Level.NATIONAL, NATIONAL_ID),
            *(config(Level.REGIONAL, cid, region=code) for code, cid in regional_ids.items()),
            *(config(Level.INDUSTRY, cid, industry=code) for code, cid in industry_ids.items()),
        ]
        centers: dict[str, DataCenter] = {}
        for c in configs:
            centers[c.destination] = await stack.enter_async_context(
                DataCenter(c, transport=transport)
            )
        state = await asyncio.to_thread(_ExportState, directory / "enterprises" / "state.sqlite3")
        stack.callback(state.close)
        # Enterprises give important data to their sub-centers (see the module docstring).
        sideways = ExportPolicy(default_max_grade=DataGrade.IMPORTANT)
        exporters: dict[str, EnterpriseExporter] = {}
        for p in profiles:
            path = directory / "enterprises" / p.enterprise_id / "audit.sqlite3"
            await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
            audit = await asyncio.to_thread(AuditLog, path)
            stack.callback(audit.close)
            exporters[p.enterprise_id] = EnterpriseExporter(
                transport=transport,
                keys=rings[p.enterprise_id],
                catalog=catalog,
                audit=audit,
                destinations=(
                    destination_for(Level.REGIONAL, regional_ids[province_of(p.region)]),
                    destination_for(Level.INDUSTRY, industry_ids[section_of(p.industry)]),
                ),
                policy=sideways,
            )
        demo = NationalDemo(
            directory=directory,
            factory=factory,
            enterprises=generated,
            national=centers[national_destination],
            centers=centers,
            transport=transport,
            interval=interval,
            history_days=history_days,
            history_months=history_months,
        )
        sent = await asyncio.to_thread(state.sent)
        window = _finished_periods(
            datetime.now(UTC).date(), days=history_days, months=history_months
        )
        demo.history_pending = sum(
            1 for e in generated for p in window if sent.get(p.report_id(e), -1) < p.revision
        )
        rounds = _Rounds(
            demo=demo,
            state=state,
            exporters=exporters,
            reporter=EnterpriseReporter(
                IndicatorCollector(platform, factory, catalog),
                exporters[factory.enterprise_id],
                state_file=directory / "enterprises" / "factory-periods.json",
                interval=interval,
            ),
            model=_FigureModel(catalog, seed),
            sent=sent,
        )
        # A plain task, not a TaskGroup: a group around the ``yield`` would turn the caller's
        # own exceptions into exception groups. It is cancelled before the centers stop.
        task = asyncio.create_task(rounds.run(), name="national-demo-rounds")
        # The platform's data API reads the national center's store while the demo runs.
        platform.data_store = demo.store
        try:
            yield demo
        finally:
            platform.data_store = None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@dataclass
class _Rounds:
    """Every ``interval``: the factory's reports, the generated ones' history and updates."""

    demo: NationalDemo
    state: _ExportState
    exporters: dict[str, EnterpriseExporter]
    reporter: EnterpriseReporter
    model: _FigureModel
    sent: dict[str, int]

    async def run(self) -> None:
        demo = self.demo
        while True:
            try:
                await self.one_round()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The demo must never take ``tiangong up`` down; the next round tries again.
                demo.failures += 1
                log.exception("national demo: round %d failed", demo.rounds + 1)
            else:
                demo.rounds += 1
            demo._first_round.set()
            await asyncio.sleep(demo.interval)

    async def one_round(self) -> None:
        await self.factory_round()
        now = datetime.now(UTC)
        demo = self.demo
        finished = _finished_periods(now.date(), days=demo.history_days, months=demo.history_months)
        for e in demo.enterprises:
            exporter = self.exporters[e.enterprise_id]
            for period in finished:
                if self.sent.get(period.report_id(e), -1) >= period.revision:
                    continue
                report = self.model.finished(e, period)
                await exporter.export(report)
                await asyncio.to_thread(self.state.record_sent, report)
                self.sent[report.report_id] = report.revision
                demo.history_sent += 1
                demo.history_pending = max(0, demo.history_pending - 1)
            for report in self.model.open_reports(e, now):
                await exporter.export(report)
                demo.updates_sent += 1

    async def factory_round(self) -> None:
        """The factory's HOUR, DAY and MONTH so far, and the final figures of ended ones."""
        before = self.reporter.sent
        await self.reporter.one_round()
        self.demo.updates_sent += self.reporter.sent - before
