"""The indicator catalog and the dimension codes (GB/T 2260 regions, GB/T 4754 industries).

A catalog is versioned ``"<major>.<minor>"``: a minor version only adds indicators or codes, so a
report written against ``2026.1`` is valid under ``2026.3``; a new major version may change an
indicator's meaning or rule, and reports of another major version are refused.

The standard catalog is data, not code paths: the indicator table below and the two CSV files
in ``tiangong/data/codes`` (read with ``importlib.resources`` so they install with the wheel).

Grading (MIIT 《工业和信息化领域数据安全管理办法(试行)》: general / important / core). Most
indicators are **general**: they are the figures of statistical reporting (energy, output value,
device counts, rates) that enterprises already report to statistics bureaus. **Important**:
an enterprise's production volume and its output of coal and gas (production capacity of key
industries, which the guideline lists as an example of important data), its profit (commercially
sensitive, and aggregates of it move markets) and its security events (they reveal
exploitable weaknesses). **Core**: the energy reserve stock (national strategic reserves of
coal, oil and gas are economic-lifeline data whose leak threatens national security, the
guideline's definition of core data); it never leaves an enterprise or a center unless a
policy explicitly grants core data to that destination.

Energy units: ``ENERGY_TCE`` (tonnes of standard coal equivalent, 吨标准煤) converts
electricity at its *equivalent value* (当量值) of 0.1229 kgce/kWh, GB/T 2589-2020 Appendix A,
which is ``KGCE_PER_KWH``; other fuels use the same standard's coefficients at the enterprise.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any, Final

import orjson

from tiangong.data.errors import CatalogError
from tiangong.data.model import ANY, Aggregation, DataDomain, DataGrade, IndicatorSpec

__all__ = [
    "ENERGY_INDUSTRIES",
    "KGCE_PER_KWH",
    "STANDARD_VERSION",
    "Catalog",
    "kwh_to_tce",
    "province_of",
    "section_of",
    "standard_catalog",
]

#: GB/T 2589-2020: electricity's equivalent-value coefficient, kgce per kWh.
KGCE_PER_KWH: Final = 0.1229

#: Version of ``standard_catalog()``.
STANDARD_VERSION: Final = "2026.2"  # 2026.2 added the security posture indicators

#: GB/T 4754 divisions of the energy industry: coal mining, oil and gas extraction, fuel
#: processing (refining, coking), power and heat, gas, water supply.
ENERGY_INDUSTRIES: Final = ("B06", "B07", "C25", "D44", "D45", "D46")


def kwh_to_tce(kwh: float) -> float:
    """Tonnes of standard coal equivalent of ``kwh`` of electricity (equivalent value)."""
    return kwh * KGCE_PER_KWH / 1000.0


def province_of(region: str) -> str:
    """The province-level GB/T 2260 code of a region code (``"320500"`` → ``"320000"``)."""
    if region == ANY or len(region) != 6:
        return region
    return region[:2] + "0000"


def section_of(industry: str) -> str:
    """The GB/T 4754 section letter of an industry code (``"C38"`` → ``"C"``)."""
    if industry == ANY:
        return industry
    return industry[:1]


@dataclass(frozen=True)
class Catalog:
    """A versioned catalog of indicators and of the region and industry codes.

    Attributes:
        version: ``"<major>.<minor>"``.
        indicators: code → spec.
        regions: GB/T 2260 code → name.
        industries: GB/T 4754 code (section letter or letter + division) → name.
    """

    version: str
    indicators: Mapping[str, IndicatorSpec]
    regions: Mapping[str, str]
    industries: Mapping[str, str]

    @property
    def major(self) -> str:
        """The major part of the version: reports must share it."""
        return self.version.split(".", 1)[0]

    def spec(self, code: str) -> IndicatorSpec:
        """The spec of indicator ``code``; ``CatalogError`` if the catalog lacks it."""
        try:
            return self.indicators[code]
        except KeyError:
            raise CatalogError(f"unknown indicator {code!r} (catalog {self.version})") from None

    def check_region(self, code: str) -> str:
        """The name of region ``code`` (``ANY`` is "all regions"); ``CatalogError`` if unknown."""
        if code == ANY:
            return "全国"
        try:
            return self.regions[code]
        except KeyError:
            raise CatalogError(f"unknown GB/T 2260 region code {code!r}") from None

    def check_industry(self, code: str) -> str:
        """The name of industry ``code`` (``ANY`` is "all industries"); ``CatalogError`` if not."""
        if code == ANY:
            return "全部行业"
        try:
            return self.industries[code]
        except KeyError:
            raise CatalogError(f"unknown GB/T 4754 industry code {code!r}") from None

    def to_json(self) -> bytes:
        """The catalog as JSON (keys sorted), for export to another center."""
        doc = {
            "version": self.version,
            "indicators": [
                {
                    "code": s.code,
                    "name_zh": s.name_zh,
                    "name_en": s.name_en,
                    "unit": s.unit,
                    "aggregation": s.aggregation.value,
                    "grade": s.grade.value,
                    "domain": s.domain.value,
                    "description": s.description,
                }
                for s in sorted(self.indicators.values(), key=lambda s: s.code)
            ],
            "regions": dict(self.regions),
            "industries": dict(self.industries),
        }
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)

    @classmethod
    def from_json(cls, data: bytes | str) -> Catalog:
        """Parse ``to_json`` output; ``CatalogError`` on anything malformed."""
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise CatalogError(f"catalog is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise CatalogError("a catalog is a JSON object")
        version = doc.get("version")
        if not isinstance(version, str) or not version:
            raise CatalogError("catalog version must be a non-empty string")
        try:
            specs = [_spec_from(item) for item in doc["indicators"]]
            regions = _code_map(doc["regions"], "regions")
            industries = _code_map(doc["industries"], "industries")
        except (KeyError, TypeError, ValueError) as exc:
            raise CatalogError(f"malformed catalog: {exc!r}") from exc
        return _make(version, specs, regions, industries)


def _spec_from(item: Any) -> IndicatorSpec:
    if not isinstance(item, dict):
        raise CatalogError("an indicator is a JSON object")
    for key in ("code", "name_zh", "name_en", "unit"):
        if not isinstance(item.get(key), str):
            raise CatalogError(f"indicator field {key!r} must be a string")
    return IndicatorSpec(
        code=item["code"],
        name_zh=item["name_zh"],
        name_en=item["name_en"],
        unit=item["unit"],
        aggregation=Aggregation(item["aggregation"]),
        grade=DataGrade(item["grade"]),
        domain=DataDomain(item["domain"]),
        description=str(item.get("description", "")),
    )


def _code_map(value: Any, what: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise CatalogError(f"catalog {what} must map codes to names")
    return dict(value)


def _make(
    version: str, specs: list[IndicatorSpec], regions: dict[str, str], industries: dict[str, str]
) -> Catalog:
    indicators: dict[str, IndicatorSpec] = {}
    for spec in specs:
        if spec.code in indicators:
            raise CatalogError(f"indicator {spec.code!r} defined twice")
        indicators[spec.code] = spec
    return Catalog(
        version=version,
        indicators=MappingProxyType(indicators),
        regions=MappingProxyType(regions),
        industries=MappingProxyType(industries),
    )


_S, _MX, _WM, _R, _DC = (
    Aggregation.SUM,
    Aggregation.MAX,
    Aggregation.WEIGHTED_MEAN,
    Aggregation.RATIO_OF_SUMS,
    Aggregation.DISTINCT_COUNT,
)
_G, _I, _C = DataGrade.GENERAL, DataGrade.IMPORTANT, DataGrade.CORE
_PROD, _OPS, _MGMT, _PLAT = (
    DataDomain.PRODUCTION,
    DataDomain.OPERATIONS,
    DataDomain.MANAGEMENT,
    DataDomain.PLATFORM,
)

# code, 中文名, English name, unit, rule, grade, domain, how it is measured
_STANDARD: Final = [
    (
        "ENERGY_KWH",
        "综合能耗(电力)",
        "Energy consumption (electricity)",
        "kWh",
        _S,
        _G,
        _MGMT,
        "Electricity consumed in the period.",
    ),
    (
        "ENERGY_TCE",
        "综合能源消费量",
        "Comprehensive energy consumption",
        "tce",
        _S,
        _G,
        _MGMT,
        "All energy in tonnes of standard coal; electricity at 0.1229 kgce/kWh (GB/T 2589).",
    ),
    (
        "OUTPUT_VALUE",
        "工业总产值",
        "Gross industrial output value",
        "CNY",
        _S,
        _G,
        _MGMT,
        "At current prices.",
    ),
    (
        "PRODUCTION_VOLUME",
        "产品产量",
        "Production volume",
        "units",
        _S,
        _I,
        _PROD,
        "Good units produced; important: reveals an enterprise's capacity.",
    ),
    (
        "DEVICES_REGISTERED",
        "登记设备数",
        "Devices registered",
        "1",
        _S,
        _G,
        _PLAT,
        "Production devices registered on the platform at period end.",
    ),
    (
        "DEVICES_ONLINE",
        "在线设备数",
        "Devices online",
        "1",
        _S,
        _G,
        _PLAT,
        "Registered devices that reported in the period.",
    ),
    (
        "NETWORKING_RATE",
        "设备联网率",
        "Device networking rate",
        "1",
        _R,
        _G,
        _PLAT,
        "Σ devices online / Σ devices registered.",
    ),
    (
        "DATA_COVERAGE",
        "数据采集覆盖率",
        "Data collection coverage",
        "1",
        _R,
        _G,
        _PLAT,
        "Σ data points collected / Σ data points planned.",
    ),
    (
        "OEE",
        "设备综合效率",
        "Overall equipment effectiveness",
        "1",
        _WM,
        _G,
        _PROD,
        "ISO 22400-2 OEE, weighted by planned busy time (hours).",
    ),
    (
        "ALARMS",
        "设备报警数",
        "Equipment alarms",
        "1",
        _S,
        _G,
        _PROD,
        "Alarms raised in the period.",
    ),
    (
        "SECURITY_EVENTS",
        "安全事件数",
        "Security events",
        "1",
        _S,
        _I,
        _PLAT,
        "Security events first detected in the period (repeats of one event count once);"
        " important: reveals exploitable weaknesses.",
    ),
    (
        "SECURITY_EVENTS_SERIOUS",
        "高危安全事件数",
        "High and critical security events",
        "1",
        _S,
        _I,
        _PLAT,
        "Of SECURITY_EVENTS, those of high or critical severity.",
    ),
    (
        "SECURITY_EVENTS_OPEN",
        "未处置安全事件数",
        "Open security events",
        "1",
        _S,
        _I,
        _PLAT,
        "Security events detected before the period's end and not acknowledged by then.",
    ),
    (
        "SECURITY_DEVICES_AT_RISK",
        "存在高危未处置事件的设备数",
        "Devices at risk",
        "1",
        _S,
        _I,
        _PLAT,
        "Devices with an open high or critical security event at the period's end.",
    ),
    (
        "SECURITY_DEVICE_RISK_RATE",
        "设备安全风险率",
        "Share of devices at risk",
        "1",
        _R,
        _I,
        _PLAT,
        "Σ devices at risk / Σ devices registered.",
    ),
    (
        "ENERGY_INTENSITY",
        "单位产值能耗",
        "Energy intensity",
        "tce/10^4 CNY",
        _R,
        _G,
        _MGMT,
        "Σ ENERGY_TCE / Σ (OUTPUT_VALUE / 10 000).",
    ),
    (
        "ENTERPRISES_REPORTING",
        "上报企业数",
        "Enterprises reporting",
        "1",
        _DC,
        _G,
        _PLAT,
        "Distinct enterprise sources with a report in the period.",
    ),
    (
        "PEAK_POWER_KW",
        "最大需量",
        "Peak power demand",
        "kW",
        _MX,
        _G,
        _PROD,
        "Largest 15-minute mean demand.",
    ),
    (
        "COAL_CONSUMPTION_T",
        "煤炭消费量",
        "Coal consumption",
        "t",
        _S,
        _G,
        _MGMT,
        "Raw coal consumed (physical tonnes).",
    ),
    (
        "GAS_CONSUMPTION_M3",
        "天然气消费量",
        "Natural gas consumption",
        "m3",
        _S,
        _G,
        _MGMT,
        "At standard conditions.",
    ),
    ("OIL_CONSUMPTION_T", "油品消费量", "Oil consumption", "t", _S, _G, _MGMT, ""),
    ("HEAT_CONSUMPTION_GJ", "热力消费量", "Heat consumption", "GJ", _S, _G, _MGMT, ""),
    ("WATER_CONSUMPTION_M3", "用水量", "Water consumption", "m3", _S, _G, _MGMT, ""),
    ("POWER_GENERATED_KWH", "发电量", "Power generated", "kWh", _S, _G, _PROD, ""),
    ("POWER_SUPPLIED_KWH", "上网电量", "Power supplied to the grid", "kWh", _S, _G, _PROD, ""),
    (
        "COAL_OUTPUT_T",
        "原煤产量",
        "Raw coal output",
        "t",
        _S,
        _I,
        _PROD,
        "Important: production capacity of a key industry.",
    ),
    (
        "GAS_OUTPUT_M3",
        "天然气产量",
        "Natural gas output",
        "m3",
        _S,
        _I,
        _PROD,
        "Important: production capacity of a key industry.",
    ),
    ("REVENUE_CNY", "营业收入", "Operating revenue", "CNY", _S, _G, _MGMT, ""),
    (
        "PROFIT_CNY",
        "利润总额",
        "Total profit",
        "CNY",
        _S,
        _I,
        _MGMT,
        "Important: commercially sensitive per enterprise.",
    ),
    ("CARBON_EMISSIONS_T", "二氧化碳排放量", "CO2 emissions", "tCO2", _S, _G, _MGMT, ""),
    (
        "RENEWABLE_SHARE",
        "可再生能源发电占比",
        "Renewable share of generation",
        "1",
        _R,
        _G,
        _PROD,
        "Σ renewable kWh generated / Σ kWh generated.",
    ),
    (
        "SUPPLY_COAL_RATE",
        "供电标准煤耗",
        "Coal consumption per kWh supplied",
        "gce/kWh",
        _R,
        _G,
        _PROD,
        "Σ gce consumed for generation / Σ kWh supplied.",
    ),
    (
        "CAPACITY_UTILIZATION",
        "产能利用率",
        "Capacity utilization",
        "1",
        _R,
        _G,
        _PROD,
        "Σ actual output / Σ rated capacity.",
    ),
    (
        "ENERGY_RESERVE_T",
        "能源储备库存",
        "Energy reserve stock",
        "tce",
        _S,
        _C,
        _OPS,
        "Core: strategic reserves of coal, oil and gas, an economic lifeline.",
    ),
    ("EMPLOYEES", "从业人员数", "Employees", "1", _S, _G, _MGMT, "At period end."),
]


def _read_codes(name: str) -> dict[str, str]:
    text = resources.files("tiangong.data.codes").joinpath(name).read_text(encoding="utf-8")
    return {row["code"]: row["name"] for row in csv.DictReader(io.StringIO(text))}


@cache
def standard_catalog() -> Catalog:
    """The standard catalog (``STANDARD_VERSION``): 35 indicators and the shipped codes."""
    specs = [
        IndicatorSpec(
            code=code,
            name_zh=zh,
            name_en=en,
            unit=unit,
            aggregation=rule,
            grade=grade,
            domain=domain,
            description=desc,
        )
        for code, zh, en, unit, rule, grade, domain, desc in _STANDARD
    ]
    return _make(STANDARD_VERSION, specs, _read_codes("gbt2260.csv"), _read_codes("gbt4754.csv"))
