"""The data system's vocabulary: indicators, grades, measures, reports (no I/O).

An **indicator** (能耗, 产值, 联网率...) says how its values combine upwards: a sum adds, a
maximum takes the larger, a weighted mean and a ratio of sums keep numerator and denominator so
that a national networking rate is Σ online / Σ registered, never an average of rates, and a
distinct count keeps the members. A **measure** is one indicator's combinable state; a
**report** is the measures of one source (an enterprise, or a center's aggregate) for one
period and one scope (region, industry), with an id that stays the same across revisions: a
higher ``revision`` of the same ``report_id`` replaces the earlier one everywhere above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from tiangong.data.errors import ReportError


class Aggregation(StrEnum):
    """How values of an indicator combine across sources."""

    SUM = "sum"
    MAX = "max"
    WEIGHTED_MEAN = "weighted_mean"  # Σ value·weight / Σ weight (e.g. OEE weighted by planned time)
    RATIO_OF_SUMS = "ratio_of_sums"  # Σ numerator / Σ denominator (e.g. networking rate)
    DISTINCT_COUNT = "distinct_count"  # size of the union of members (e.g. enterprises reporting)


class DataGrade(StrEnum):
    """MIIT's grades (工业和信息化领域数据安全管理办法): general, important, core data."""

    GENERAL = "general"  # 一般数据
    IMPORTANT = "important"  # 重要数据
    CORE = "core"  # 核心数据

    @property
    def rank(self) -> int:
        """0 general, 1 important, 2 core: higher is more protected."""
        return _GRADE_RANK[self]


_GRADE_RANK = {DataGrade.GENERAL: 0, DataGrade.IMPORTANT: 1, DataGrade.CORE: 2}


class DataDomain(StrEnum):
    """MIIT's data domains of an industrial enterprise (and a platform's operations)."""

    RD = "rd"  # 研发数据域
    PRODUCTION = "production"  # 生产数据域
    OPERATIONS = "operations"  # 运维数据域
    MANAGEMENT = "management"  # 管理数据域
    EXTERNAL = "external"  # 外部数据域
    PLATFORM = "platform"  # 平台运营数据域


class Period(StrEnum):
    """Reporting periods."""

    HOUR = "hour"
    DAY = "day"
    MONTH = "month"


class Level(StrEnum):
    """Where a report comes from."""

    ENTERPRISE = "enterprise"
    REGIONAL = "regional"  # 区域分中心
    INDUSTRY = "industry"  # 行业分中心
    NATIONAL = "national"  # 国家中心


ANY = "*"  # a scope dimension a report does not split by (a regional center's industry)


@dataclass(frozen=True, slots=True)
class IndicatorSpec:
    """One indicator of the catalog."""

    code: str  # e.g. "ENERGY_KWH"
    name_zh: str
    name_en: str
    unit: str  # "kWh", "tce", "CNY", "1", "%"
    aggregation: Aggregation
    grade: DataGrade
    domain: DataDomain
    description: str = ""


@dataclass(frozen=True, slots=True)
class Measure:
    """The combinable state of one indicator's value.

    ``numerator`` is the value itself for SUM and MAX; with ``denominator`` it is the weighted
    sum for WEIGHTED_MEAN and the sums for RATIO_OF_SUMS; ``members`` are the distinct members for
    DISTINCT_COUNT.
    """

    numerator: float = 0.0
    denominator: float = 0.0
    members: frozenset[str] = field(default_factory=frozenset)

    def value(self, aggregation: Aggregation) -> float | None:
        """The indicator's value (None for a ratio or mean over nothing)."""
        if aggregation in (Aggregation.SUM, Aggregation.MAX):
            return self.numerator
        if aggregation is Aggregation.DISTINCT_COUNT:
            return float(len(self.members))
        if self.denominator == 0:
            return None
        return self.numerator / self.denominator

    def check(self, aggregation: Aggregation, code: str) -> None:
        """Raise ``ReportError`` unless the measure is well formed for ``aggregation``."""
        if not (math.isfinite(self.numerator) and math.isfinite(self.denominator)):
            raise ReportError(f"{code}: values must be finite numbers")
        if aggregation in (Aggregation.WEIGHTED_MEAN, Aggregation.RATIO_OF_SUMS):
            if self.denominator < 0:
                raise ReportError(f"{code}: a {aggregation} needs a denominator >= 0")
        elif self.denominator != 0:
            raise ReportError(f"{code}: a {aggregation} has no denominator")
        if aggregation is not Aggregation.DISTINCT_COUNT and self.members:
            raise ReportError(f"{code}: only a distinct count has members")


def combine(aggregation: Aggregation, measures: list[Measure]) -> Measure:
    """The measure of the union of the sources of ``measures``."""
    if not measures:
        return Measure()
    if aggregation is Aggregation.SUM:
        return Measure(numerator=math.fsum(m.numerator for m in measures))
    if aggregation is Aggregation.MAX:
        return Measure(numerator=max(m.numerator for m in measures))
    if aggregation is Aggregation.DISTINCT_COUNT:
        return Measure(members=frozenset().union(*(m.members for m in measures)))
    return Measure(
        numerator=math.fsum(m.numerator for m in measures),
        denominator=math.fsum(m.denominator for m in measures),
    )


@dataclass(frozen=True, slots=True)
class Scope:
    """What a report covers: whose figures, where, in which industry."""

    source: str  # enterprise id (统一社会信用代码) or center id
    level: Level
    region: str  # GB/T 2260 code ("320500" Suzhou) or ANY
    industry: str  # GB/T 4754 code ("C38") or ANY


@dataclass(frozen=True, slots=True)
class Report:
    """The measures of one scope for one period, signed by its source.

    ``report_id`` identifies the figures across revisions (source + period + scope); the
    ``revision`` orders corrections: the highest one wins everywhere above.
    """

    report_id: str
    revision: int
    scope: Scope
    period: Period
    period_start: str  # ISO 8601: "2026-12-01" (day, month) or "2026-12-01T08:00" (hour)
    catalog_version: str
    measures: dict[str, Measure]
    created_at: str  # ISO 8601 UTC
    # Per-source breakdown a center may pass up for indicators whose grade allows it (drill-down).
    breakdown: dict[str, dict[str, Measure]] = field(default_factory=dict)
    signer: str = ""  # key id of the signature
    signature: str = ""  # base64 of the signature over the canonical bytes

    @property
    def message_id(self) -> str:
        """The id the transport de-duplicates on: one per revision."""
        return f"{self.report_id}@{self.revision}"


def report_id_for(scope: Scope, period: Period, period_start: str) -> str:
    """The stable id of the figures of ``scope`` for one period."""
    return f"{scope.level}:{scope.source}:{scope.region}:{scope.industry}:{period}:{period_start}"
