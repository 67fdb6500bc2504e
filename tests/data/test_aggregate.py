import dataclasses

import pytest

from tiangong.data.aggregate import (
    ENTERPRISES_REPORTING,
    Ledger,
    Outcome,
    aggregate_cells,
    aggregate_report,
)
from tiangong.data.catalog import standard_catalog
from tiangong.data.errors import ReportError
from tiangong.data.model import ANY, DataGrade, Level, Measure, Period, Scope, combine
from tiangong.data.reports import validate_report

from .generated import CREATED, by_industry, by_province, enterprise_report, enterprises

CAT = standard_catalog()
START = "2026-01-01"


def agg(children, scope=None, **kw):
    scope = scope or Scope(source="rc", level=Level.REGIONAL, region="320000", industry=ANY)
    return aggregate_report(
        children,
        scope=scope,
        period=Period.MONTH,
        period_start=START,
        catalog=CAT,
        revision=1,
        created_at=CREATED,
        **kw,
    )


def two():
    a = enterprise_report(
        "A",
        "320500",
        "C38",
        {
            "DEVICES_REGISTERED": Measure(numerator=10),
            "DEVICES_ONLINE": Measure(numerator=9),
            "NETWORKING_RATE": Measure(numerator=9, denominator=10),  # 90 %
            "OEE": Measure(numerator=0.8 * 100, denominator=100),  # 0.8 over 100 h
            "PEAK_POWER_KW": Measure(numerator=500),
            "ENERGY_KWH": Measure(numerator=1000),
            "PROFIT_CNY": Measure(numerator=3),
        },
    )
    b = enterprise_report(
        "B",
        "320200",
        "C36",
        {
            "DEVICES_REGISTERED": Measure(numerator=1000),
            "DEVICES_ONLINE": Measure(numerator=100),
            "NETWORKING_RATE": Measure(numerator=100, denominator=1000),  # 10 %
            "OEE": Measure(numerator=0.4 * 300, denominator=300),  # 0.4 over 300 h
            "PEAK_POWER_KW": Measure(numerator=700),
            "ENERGY_KWH": Measure(numerator=24),
        },
    )
    return a, b


def test_hand_computed_rules():
    r = agg(two())
    value = {code: m.value(CAT.spec(code).aggregation) for code, m in r.measures.items()}
    # A ratio is Σ online / Σ registered = 109 / 1010, not the mean of 90 % and 10 %.
    assert value["NETWORKING_RATE"] == pytest.approx(109 / 1010)
    assert value["NETWORKING_RATE"] != pytest.approx(0.5)
    # Weighted mean: (0.8·100 + 0.4·300) / 400 = 0.5, not 0.6.
    assert value["OEE"] == pytest.approx(0.5)
    assert value["PEAK_POWER_KW"] == 700
    assert value["ENERGY_KWH"] == 1024
    assert value["DEVICES_ONLINE"] == 109
    assert value[ENTERPRISES_REPORTING] == 2
    assert r.measures[ENTERPRISES_REPORTING].members == {"A", "B"}
    assert r.report_id == "regional:rc:320000:*:month:2026-01-01"
    validate_report(r, CAT)


def test_breakdown_respects_grade():
    r = agg(two())
    assert set(r.breakdown) == {"A", "B"}
    assert "PROFIT_CNY" not in r.breakdown["A"]  # important: no drill-down by default
    assert r.breakdown["A"]["ENERGY_KWH"] == Measure(numerator=1000)
    assert ENTERPRISES_REPORTING not in r.breakdown["A"]
    wide = agg(two(), breakdown_max_grade=DataGrade.IMPORTANT)
    assert wide.breakdown["A"]["PROFIT_CNY"] == Measure(numerator=3)


def test_distinct_count_across_centers_unites_members():
    a, b = two()
    c = dataclasses.replace(
        a,
        report_id=a.report_id.replace("320500", "320200"),
        scope=dataclasses.replace(a.scope, region="320200"),
    )
    left = agg([a, b], scope=Scope("rc1", Level.REGIONAL, "320500", "C38"))
    right = agg([c], scope=Scope("rc2", Level.REGIONAL, "320200", "C38"))
    national = agg([left, right], scope=Scope("nat", Level.NATIONAL, ANY, ANY))
    # Enterprise A reported twice (two sites) but is one enterprise.
    assert national.measures[ENTERPRISES_REPORTING].members == {"A", "B"}
    assert set(national.breakdown) == {"A", "B"}
    assert national.breakdown["A"]["ENERGY_KWH"].numerator == 2000  # both sites, combined


def test_children_must_match_and_be_known():
    a, b = two()
    with pytest.raises(ReportError, match="twice"):
        agg([a, a])
    other = dataclasses.replace(b, period_start="2026-02-01")
    with pytest.raises(ReportError, match="not month 2026-01-01"):
        agg([a, other])
    with pytest.raises(ReportError, match="unknown"):
        agg([dataclasses.replace(a, measures={"NOPE": Measure()})])
    total = agg([a, b])
    with pytest.raises(ReportError, match="concrete"):
        aggregate_cells(
            [total],
            source="x",
            level=Level.NATIONAL,
            period=Period.MONTH,
            period_start=START,
            catalog=CAT,
            revision=1,
            created_at=CREATED,
        )


def test_empty_children():
    r = agg([])
    assert r.measures == {ENTERPRISES_REPORTING: Measure()}


def test_ledger_outcomes_reorder_and_persistence(tmp_path):
    a, _ = two()
    r1, r2, r3 = (dataclasses.replace(a, revision=n) for n in (1, 2, 3))
    path = tmp_path / "ledger.sqlite"
    with Ledger(path) as ledger:
        assert ledger.accept(r1) is Outcome.NEW
        assert ledger.accept(r3) is Outcome.REVISED  # 2 overtaken by 3 in transit
        assert ledger.accept(r2) is Outcome.STALE
        assert ledger.accept(r3) is Outcome.DUPLICATE
        # A re-send of the same revision with a new signature/time is still a duplicate ...
        assert (
            ledger.accept(
                dataclasses.replace(
                    r3, created_at="2026-03-01T00:00:00+00:00", signer="k", signature="c2ln"
                )
            )
            is Outcome.DUPLICATE
        )
        # ... but different figures under the same revision are refused.
        changed = dataclasses.replace(r3, measures={"ENERGY_KWH": Measure(numerator=1.0)})
        with pytest.raises(ReportError, match="higher revision"):
            ledger.accept(changed)
        assert ledger.next_revision("mine") == 1
        assert ledger.next_revision("mine") == 2
    with Ledger(path) as ledger:  # a restart keeps everything
        assert ledger.get(a.report_id) == r3
        assert ledger.children(Period.MONTH, START) == [r3]
        assert ledger.children(Period.MONTH, "2026-02-01") == []
        assert ledger.periods() == [(Period.MONTH, START)]
        assert ledger.accept(r2) is Outcome.STALE
        assert ledger.next_revision("mine") == 3
        assert ledger.get("nope") is None


def national_views(reports):
    """Two regional/industry trees over ``reports``, then national totals three ways."""
    regional_cells = []
    for prov, children in by_province(reports).items():
        regional_cells += aggregate_cells(
            children,
            source=f"rc-{prov}",
            level=Level.REGIONAL,
            period=Period.MONTH,
            period_start=START,
            catalog=CAT,
            revision=1,
            created_at=CREATED,
        )
    industry_cells = []
    for ind, children in by_industry(reports).items():
        industry_cells += aggregate_cells(
            children,
            source=f"ic-{ind}",
            level=Level.INDUSTRY,
            period=Period.MONTH,
            period_start=START,
            catalog=CAT,
            revision=1,
            created_at=CREATED,
        )
    for cell in regional_cells + industry_cells:
        validate_report(cell, CAT)
    nat = Scope("national", Level.NATIONAL, ANY, ANY)

    def regroup(cells, dim):
        groups = {}
        for c in cells:
            groups.setdefault(getattr(c.scope, dim), []).append(c)
        return [
            agg(
                children,
                scope=Scope(
                    "national",
                    Level.NATIONAL,
                    key if dim == "region" else ANY,
                    key if dim == "industry" else ANY,
                ),
            )
            for key, children in sorted(groups.items())
        ]

    by_region = regroup(regional_cells, "region")
    by_ind = regroup(industry_cells, "industry")
    return (
        agg(by_region, scope=nat),
        agg(by_ind, scope=nat),
        agg(reports, scope=nat),
        by_region,
        by_ind,
    )


def test_national_totals_by_region_equal_by_industry_equal_all_enterprises():
    reports = enterprises(80)
    from_regions, from_industries, direct, by_region, by_ind = national_views(reports)
    assert len(by_region) > 3
    assert len(by_ind) > 3
    for code, spec in CAT.indicators.items():
        want = direct.measures[code]
        # Values are integers, so every sum is exact: the three paths agree bit for bit.
        assert from_regions.measures[code] == want, code
        assert from_industries.measures[code] == want, code
        # And the regional rows themselves add up to the national figure.
        assert combine(spec.aggregation, [r.measures[code] for r in by_region]) == want
        assert combine(spec.aggregation, [r.measures[code] for r in by_ind]) == want
    for code in ("NETWORKING_RATE", "DATA_COVERAGE", "ENERGY_INTENSITY"):
        num = sum(r.measures[code].numerator for r in reports)
        den = sum(r.measures[code].denominator for r in reports)
        assert from_regions.measures[code].value(CAT.spec(code).aggregation) == num / den
    assert from_industries.measures[ENTERPRISES_REPORTING].members == {
        r.scope.source for r in reports
    }
    # Drill-down reaches each enterprise for general indicators only.
    assert set(from_regions.breakdown) == {r.scope.source for r in reports}
    graded = {c for c, s in CAT.indicators.items() if s.grade is not DataGrade.GENERAL}
    assert all(not graded & set(m) for m in from_regions.breakdown.values())


def test_a_revision_propagates_to_the_national_total():
    reports = enterprises(30)
    before = national_views(reports)[0]
    first = reports[0]
    corrected = dataclasses.replace(
        first,
        revision=2,
        measures={
            **first.measures,
            "ENERGY_KWH": Measure(numerator=first.measures["ENERGY_KWH"].numerator + 1000),
        },
    )
    ledger = Ledger(":memory:")
    for r in reports:
        ledger.accept(r)
    assert ledger.accept(corrected) is Outcome.REVISED
    after = national_views(ledger.children(Period.MONTH, START))[0]
    assert after.measures["ENERGY_KWH"].numerator == before.measures["ENERGY_KWH"].numerator + 1000
    ledger.close()
