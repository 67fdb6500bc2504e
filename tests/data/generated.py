"""A generated three-level dataset: enterprises, regional and industry centers, national."""

from __future__ import annotations

import random

from tiangong.data.aggregate import ENTERPRISES_REPORTING
from tiangong.data.catalog import Catalog, province_of, standard_catalog
from tiangong.data.model import Aggregation, Level, Measure, Period, Report, Scope, report_id_for

REGIONS = ["320500", "320200", "320100", "330100", "440300", "110000", "370200"]
INDUSTRIES = ["C38", "C36", "C39", "D44", "B06", "C25"]
CREATED = "2026-02-01T00:00:00+00:00"


def measure_for(rng: random.Random, aggregation: Aggregation) -> Measure:
    # Integers below 2**53 add exactly in floating point, so totals can be compared with ==.
    if aggregation in (Aggregation.SUM, Aggregation.MAX):
        return Measure(numerator=float(rng.randint(0, 10_000)))
    if aggregation in (Aggregation.RATIO_OF_SUMS, Aggregation.WEIGHTED_MEAN):
        den = float(rng.randint(1, 500))
        return Measure(numerator=float(rng.randint(0, int(den))), denominator=den)
    raise AssertionError(aggregation)


def enterprise_report(
    source: str,
    region: str,
    industry: str,
    measures: dict[str, Measure],
    *,
    period: Period = Period.MONTH,
    start: str = "2026-01-01",
    revision: int = 1,
    catalog: Catalog | None = None,
) -> Report:
    scope = Scope(source=source, level=Level.ENTERPRISE, region=region, industry=industry)
    return Report(
        report_id=report_id_for(scope, period, start),
        revision=revision,
        scope=scope,
        period=period,
        period_start=start,
        catalog_version=(catalog or standard_catalog()).version,
        measures=measures,
        created_at=CREATED,
    )


def enterprises(n: int, *, seed: int = 7, start: str = "2026-01-01") -> list[Report]:
    """``n`` enterprise reports with every indicator but the distinct count."""
    rng = random.Random(seed)
    catalog = standard_catalog()
    reports = []
    for i in range(n):
        measures = {
            code: measure_for(rng, spec.aggregation)
            for code, spec in catalog.indicators.items()
            if code != ENTERPRISES_REPORTING
        }
        reports.append(
            enterprise_report(
                f"91320500MA{i:08d}",
                rng.choice(REGIONS),
                rng.choice(INDUSTRIES),
                measures,
                start=start,
            )
        )
    return reports


def by_province(reports: list[Report]) -> dict[str, list[Report]]:
    out: dict[str, list[Report]] = {}
    for r in reports:
        out.setdefault(province_of(r.scope.region), []).append(r)
    return out


def by_industry(reports: list[Report]) -> dict[str, list[Report]]:
    out: dict[str, list[Report]] = {}
    for r in reports:
        out.setdefault(r.scope.industry, []).append(r)
    return out
