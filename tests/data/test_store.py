import dataclasses

import pytest

from tiangong.data.aggregate import ENTERPRISES_REPORTING, aggregate_cells
from tiangong.data.catalog import province_of, standard_catalog
from tiangong.data.errors import DataError, ExportRefused
from tiangong.data.model import DataGrade, Level, Measure, Period, combine
from tiangong.data.store import AnalyticsStore

from .generated import CREATED, by_industry, by_province, enterprises

CAT = standard_catalog()
MONTHS = ["2025-11-01", "2025-12-01", "2026-01-01"]


def dataset():
    return [r for i, m in enumerate(MONTHS) for r in enterprises(40, seed=i, start=m)]


def cells(reports, level):
    groups = by_province(reports) if level is Level.REGIONAL else by_industry(reports)
    out = []
    for key, children in groups.items():
        per_month = {}
        for c in children:
            per_month.setdefault(c.period_start, []).append(c)
        for month, kids in per_month.items():
            out += aggregate_cells(
                kids,
                source=f"{level}-{key}",
                level=level,
                period=Period.MONTH,
                period_start=month,
                catalog=CAT,
                revision=1,
                created_at=CREATED,
            )
    return out


def expected(reports, code, key=None):
    groups = {}
    for r in reports:
        k = None if key is None else key(r)
        groups.setdefault(k, []).append(r)
    spec = CAT.spec(code)
    out = {}
    for k, rs in groups.items():
        if code == ENTERPRISES_REPORTING:
            out[k] = float(len({r.scope.source for r in rs}))
        else:
            out[k] = combine(spec.aggregation, [r.measures[code] for r in rs]).value(
                spec.aggregation
            )
    return out


async def open_store(tmp_path, name="a.duckdb"):
    store = AnalyticsStore(path=tmp_path / name, catalog=CAT)
    await store.open()
    return store


CODES = ["ENERGY_KWH", "NETWORKING_RATE", "OEE", "PEAK_POWER_KW", "ENERGY_INTENSITY"]


async def test_enterprise_store_totals(tmp_path):
    reports = dataset()
    store = await open_store(tmp_path)
    try:
        assert await store.put_many(reports) == len(reports)
        rows = await store.totals(Period.MONTH, MONTHS[0], "2026-02-01", indicators=CODES)
        want = {c: expected(reports, c)[None] for c in CODES}
        assert {r.indicator: r.value for r in rows} == pytest.approx(want)
        by_region = await store.totals(
            Period.MONTH, MONTHS[0], "2026-02-01", by="region", indicators=["NETWORKING_RATE"]
        )
        assert {r.key: r.value for r in by_region} == pytest.approx(
            expected(reports, "NETWORKING_RATE", lambda r: r.scope.region)
        )
        by_source = await store.totals(
            Period.MONTH, MONTHS[0], "2026-02-01", by="source", indicators=["OEE"], region="320000"
        )
        want_src = expected(
            [r for r in reports if province_of(r.scope.region) == "320000"],
            "OEE",
            lambda r: r.scope.source,
        )
        assert {r.key: r.value for r in by_source} == pytest.approx(want_src)
        section = await store.totals(
            Period.MONTH, MONTHS[0], "2026-02-01", indicators=["ENERGY_KWH"], industry="C"
        )
        assert section[0].value == pytest.approx(
            expected([r for r in reports if r.scope.industry.startswith("C")], "ENERGY_KWH")[None]
        )
    finally:
        await store.close()


async def test_national_store_both_lineages_agree_with_enterprises(tmp_path):
    reports = dataset()
    store = await open_store(tmp_path)
    try:
        await store.put_many(cells(reports, Level.REGIONAL) + cells(reports, Level.INDUSTRY))
        codes = [*CODES, ENTERPRISES_REPORTING, "DATA_COVERAGE", "ALARMS"]
        args = (Period.MONTH, MONTHS[0], "2026-02-01")
        reg = await store.totals(*args, indicators=codes, level=Level.REGIONAL)
        ind = await store.totals(*args, indicators=codes, level=Level.INDUSTRY)
        want = {c: expected(reports, c)[None] for c in codes}
        assert {r.indicator: r.value for r in reg} == pytest.approx(want)
        assert {r.indicator: r.value for r in ind} == pytest.approx(want)
        # Σ of the by-region rows == Σ of the by-industry rows == national, for additive ones.
        by_region = await store.totals(
            *args, by="region", indicators=["ENERGY_KWH", "NETWORKING_RATE"]
        )
        by_ind = await store.totals(
            *args, by="industry", indicators=["ENERGY_KWH", "NETWORKING_RATE"]
        )
        for code in ("ENERGY_KWH",):
            assert sum(r.value for r in by_region if r.indicator == code) == pytest.approx(
                want[code]
            )
            assert sum(r.value for r in by_ind if r.indicator == code) == pytest.approx(want[code])
        num = sum(r.numerator for r in by_ind if r.indicator == "NETWORKING_RATE")
        den = sum(r.denominator for r in by_ind if r.indicator == "NETWORKING_RATE")
        assert num / den == pytest.approx(want["NETWORKING_RATE"])
        assert {
            r.key: r.value for r in by_region if r.indicator == "NETWORKING_RATE"
        } == pytest.approx(expected(reports, "NETWORKING_RATE", lambda r: r.scope.region))
        # Filters by both dimensions read the facts, not the rollups, and still agree.
        cell = await store.totals(*args, indicators=["ENERGY_KWH"], region="320500", industry="C38")
        sub = [r for r in reports if r.scope.region == "320500" and r.scope.industry == "C38"]
        assert cell[0].value == pytest.approx(expected(sub, "ENERGY_KWH")[None])

        series = await store.series("ENERGY_KWH", Period.MONTH, MONTHS[0], "2026-02-01")
        assert [s[0] for s in series] == MONTHS
        assert dict(series) == pytest.approx(
            expected(reports, "ENERGY_KWH", lambda r: r.period_start)
        )
        province = await store.series(
            "NETWORKING_RATE", Period.MONTH, MONTHS[0], "2026-02-01", region="320000"
        )
        js = [r for r in reports if province_of(r.scope.region) == "320000"]
        assert dict(province) == pytest.approx(
            expected(js, "NETWORKING_RATE", lambda r: r.period_start)
        )

        grid = await store.region_grid("ENERGY_KWH", *args)
        assert len(grid) >= 31
        values = {g.region: g.value for g in grid}
        assert values["320000"] == pytest.approx(expected(js, "ENERGY_KWH")[None])
        assert values["650000"] is None
        assert next(g.name for g in grid if g.region == "320000") == "江苏省"
    finally:
        await store.close()


async def test_drill_down_national_to_region_to_enterprise(tmp_path):
    reports = dataset()
    store = await open_store(tmp_path)
    try:
        await store.put_many(cells(reports, Level.REGIONAL))
        args = (Period.MONTH, MONTHS[0], "2026-02-01")
        regions = await store.drill_down("ENERGY_KWH", *args)
        assert {r.key for r in regions} == {r.scope.region for r in reports}
        suzhou = await store.drill_down("OEE", *args, region="320500")
        sub = [r for r in reports if r.scope.region == "320500"]
        assert {r.key: r.value for r in suzhou} == pytest.approx(
            expected(sub, "OEE", lambda r: r.scope.source)
        )
        with pytest.raises(ExportRefused):
            await store.drill_down("PRODUCTION_VOLUME", *args, region="320500")
        # Even when the caller may see important data, it was never passed up.
        assert (
            await store.drill_down(
                "PRODUCTION_VOLUME", *args, region="320500", max_grade=DataGrade.IMPORTANT
            )
            == []
        )
    finally:
        await store.close()


async def test_revisions_replace_and_survive_reopen(tmp_path):
    reports = enterprises(10, start="2026-01-01")
    store = await open_store(tmp_path, "r.duckdb")
    await store.put_many(reports)
    first = reports[0]
    old = first.measures["ENERGY_KWH"].numerator
    corrected = dataclasses.replace(
        first, revision=2, measures={**first.measures, "ENERGY_KWH": Measure(numerator=old + 500)}
    )
    args = (Period.MONTH, "2026-01-01", "2026-02-01")
    before = (await store.totals(*args, indicators=["ENERGY_KWH"]))[0].value
    assert await store.put(corrected) is True
    assert await store.put(first) is False  # the older revision is ignored
    assert await store.put(corrected) is False  # and so is a replay
    after = (await store.totals(*args, indicators=["ENERGY_KWH"]))[0]
    assert after.value == before + 500
    assert after.parts == 10
    await store.close()
    store = await open_store(tmp_path, "r.duckdb")
    try:
        again = (await store.totals(*args, indicators=["ENERGY_KWH"]))[0]
        assert again.value == before + 500
        assert await store.put(first) is False
    finally:
        await store.close()


async def test_energy_view(tmp_path):
    reports = dataset()
    store = await open_store(tmp_path)
    try:
        await store.put_many(reports)
        args = (Period.MONTH, MONTHS[0], "2026-02-01")
        rows = await store.energy_view(*args)
        energy = [
            r for r in reports if r.scope.industry in {"B06", "B07", "C25", "D44", "D45", "D46"}
        ]
        assert {r.key for r in rows} == {r.scope.industry for r in energy}
        for row in rows:
            sub = [r for r in energy if r.scope.industry == row.key]
            tce = sum(r.measures["ENERGY_TCE"].numerator for r in sub)
            out = sum(r.measures["OUTPUT_VALUE"].numerator for r in sub)
            assert row.energy_tce == tce
            assert row.output_value == out
            assert row.intensity == pytest.approx(tce / (out / 10_000))
        per_enterprise = await store.energy_view(*args, by="source")
        assert {r.key for r in per_enterprise} == {r.scope.source for r in energy}
        intensities = [r.intensity or 0 for r in per_enterprise]
        assert intensities == sorted(intensities, reverse=True)
    finally:
        await store.close()


async def test_errors(tmp_path):
    store = AnalyticsStore(path=tmp_path / "e.duckdb", catalog=CAT)
    with pytest.raises(DataError, match="not open"):
        await store.totals(Period.MONTH, "2026-01-01", "2026-02-01")
    await store.open()
    try:
        with pytest.raises(DataError):
            await store.totals(Period.MONTH, "January", "2026-02-01")
        assert await store.totals(Period.MONTH, "2026-01-01", "2026-02-01") == []
    finally:
        await store.close()
