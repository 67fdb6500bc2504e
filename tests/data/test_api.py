"""The data center's REST API on a generated three-level dataset.

The router is mounted on a bare FastAPI app whose ``state.platform`` carries a real
``TokenService`` on a SQLite file (the ``Caller`` dependency only asks it to verify tokens),
and is called through httpx's ASGI transport.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI

from tiangong.data.aggregate import aggregate_cells
from tiangong.data.api import NO_STORE, create_data_router
from tiangong.data.catalog import ENERGY_INDUSTRIES, province_of, standard_catalog
from tiangong.data.model import Level, Period, Report
from tiangong.data.store import AnalyticsStore
from tiangong.platform.database import Database
from tiangong.platform.model import Tenant
from tiangong.platform.registry import DeviceRegistry
from tiangong.platform.tokens import ApiRole, TokenService

from .generated import CREATED, by_industry, by_province, enterprises

CAT = standard_catalog()
MONTHS = ["2025-11-01", "2025-12-01", "2026-01-01"]
RANGE = {"period": "month", "start": MONTHS[0], "end": "2026-02-01"}


def dataset() -> list[Report]:
    return [r for i, m in enumerate(MONTHS) for r in enterprises(40, seed=i, start=m)]


def center_reports(reports: list[Report]) -> list[Report]:
    """What the regional and the industry sub-centers forward to the national center."""
    out: list[Report] = []
    for level, groups in ((Level.REGIONAL, by_province), (Level.INDUSTRY, by_industry)):
        for key, children in groups(reports).items():
            for month in MONTHS:
                kids = [c for c in children if c.period_start == month]
                if kids:
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


@dataclass
class Api:
    admin: httpx.AsyncClient
    viewer: httpx.AsyncClient
    anonymous: httpx.AsyncClient
    stores: dict[str, AnalyticsStore | None]

    def use(self, name: str | None) -> None:
        self.stores["current"] = None if name is None else self.stores[name]


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    reports = dataset()
    enterprise_store = AnalyticsStore(path=":memory:", catalog=CAT)
    national_store = AnalyticsStore(path=":memory:", catalog=CAT)
    db = Database(url=f"sqlite+aiosqlite:///{tmp_path / 'registry.sqlite'}")
    await db.open()
    try:
        async with enterprise_store, national_store:
            await enterprise_store.put_many(reports)
            await national_store.put_many(center_reports(reports))
            await DeviceRegistry(db).create_tenant(Tenant(id="acme", name="Acme"))
            tokens = TokenService(db)
            _, admin = await tokens.create(
                name="admin", role=ApiRole.PLATFORM_ADMIN, tenant_id=None
            )
            _, viewer = await tokens.create(name="viewer", role=ApiRole.VIEWER, tenant_id="acme")
            stores: dict[str, AnalyticsStore | None] = {
                "enterprise": enterprise_store,
                "national": national_store,
                "current": national_store,
            }
            app = FastAPI()
            app.state.platform = SimpleNamespace(tokens=tokens)
            app.include_router(create_data_router(lambda: stores["current"], CAT))
            transport = httpx.ASGITransport(app=app)
            base = "http://data.test"

            def client(token: str | None) -> httpx.AsyncClient:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                return httpx.AsyncClient(transport=transport, base_url=base, headers=headers)

            async with client(admin) as a, client(viewer) as v, client(None) as anon:
                yield Api(admin=a, viewer=v, anonymous=anon, stores=stores)
    finally:
        await db.close()


async def get(client: httpx.AsyncClient, path: str, status: int = 200, **params: object) -> dict:
    response = await client.get(f"/api/v1/data{path}", params=params)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    return response.json()


async def test_catalog(api: Api) -> None:
    body = await get(api.viewer, "/catalog")
    codes = {i["code"]: i for i in body["indicators"]}
    assert len(codes) == len(CAT.indicators)
    assert codes["ENERGY_TCE"]["name_zh"] == "综合能源消费量"
    assert codes["ENERGY_TCE"]["unit"] == "tce"
    assert codes["NETWORKING_RATE"]["aggregation"] == "ratio_of_sums"
    assert codes["PRODUCTION_VOLUME"]["grade"] == "important"
    provinces = [r for r in body["regions"] if r["level"] == "province"]
    assert len(provinces) >= 34
    suzhou = next(r for r in body["regions"] if r["code"] == "320500")
    assert suzhou == {"code": "320500", "name": "苏州市", "level": "prefecture", "parent": "320000"}
    assert body["energy_industries"] == list(ENERGY_INDUSTRIES)
    assert body["max_drill_grade"] == "general"


@pytest.mark.parametrize("store", ["enterprise", "national"])
async def test_totals_by_region_equal_totals_by_industry(api: Api, store: str) -> None:
    api.use(store)
    codes = ["ENERGY_KWH", "OUTPUT_VALUE", "NETWORKING_RATE", "OEE", "PEAK_POWER_KW"]
    params = {**RANGE, "indicator": ",".join(codes)}
    total = await get(api.admin, "/totals", **params)
    assert {r["key"] for r in total["rows"]} == {None}
    whole = {r["indicator"]: r for r in total["rows"]}
    for by in ("region", "province", "industry"):
        grouped = (await get(api.admin, "/totals", by=by, **params))["rows"]
        assert len({r["key"] for r in grouped}) > 1
        assert all(r["name"] for r in grouped), "every group has its name from the catalog"
        for code in codes:
            rows = [r for r in grouped if r["indicator"] == code]
            if code == "PEAK_POWER_KW":  # a maximum: the largest group is the whole
                assert max(r["numerator"] for r in rows) == whole[code]["numerator"]
                continue
            # Integers below 2**53: the sums are exact, so the groupings agree exactly.
            assert sum(r["numerator"] for r in rows) == whole[code]["numerator"]
            assert sum(r["denominator"] for r in rows) == whole[code]["denominator"]
    rate = whole["NETWORKING_RATE"]
    assert rate["value"] == pytest.approx(rate["numerator"] / rate["denominator"])


async def test_lineages_agree_at_the_national_center(api: Api) -> None:
    """The regional and industry sub-centers' reports give the same national totals."""
    params = {**RANGE, "indicator": "ENERGY_KWH,NETWORKING_RATE"}
    regional = await get(api.admin, "/totals", level="regional", **params)
    industry = await get(api.admin, "/totals", level="industry", **params)
    assert regional["rows"] == industry["rows"]
    api.use("enterprise")
    enterprise = await get(api.admin, "/totals", **params)
    assert [r["value"] for r in enterprise["rows"]] == [r["value"] for r in regional["rows"]]


async def test_ratios_are_ratios_of_sums(api: Api) -> None:
    reports = dataset()
    body = await get(api.viewer, "/totals", by="region", indicator="NETWORKING_RATE", **RANGE)
    got = {r["key"]: r["value"] for r in body["rows"]}
    differs_from_mean = False
    for region, value in got.items():
        measures = [r.measures["NETWORKING_RATE"] for r in reports if r.scope.region == region]
        num = sum(m.numerator for m in measures)
        den = sum(m.denominator for m in measures)
        assert value == pytest.approx(num / den)
        mean = sum(m.numerator / m.denominator for m in measures) / len(measures)
        differs_from_mean |= not math.isclose(mean, num / den)
    assert differs_from_mean, "the data must tell a ratio of sums from a mean of ratios"


async def test_series_fills_gaps(api: Api) -> None:
    body = await get(
        api.viewer,
        "/series",
        indicator="ENERGY_KWH",
        period="month",
        start="2025-09-01",
        end="2026-03-01",
        region="320000",
    )
    starts = [p["start"] for p in body["points"]]
    assert starts == ["2025-09-01", "2025-10-01", *MONTHS, "2026-02-01"]
    values = [p["value"] for p in body["points"]]
    assert values[0] is None
    assert values[-1] is None
    assert all(v is not None for v in values[2:5])
    jan = await get(
        api.viewer, "/totals", period="month", start="2026-01-01", region="320000"
    )  # end defaults to one period after start
    assert jan["end"] == "2026-02-01T00:00:00"
    jan_kwh = next(r for r in jan["rows"] if r["indicator"] == "ENERGY_KWH")
    assert values[4] == jan_kwh["value"]
    periods = await get(api.viewer, "/periods", indicator="ENERGY_KWH", period="month")
    assert periods["starts"] == MONTHS


async def test_drill_from_nation_to_enterprises(api: Api) -> None:
    params = {**RANGE, "indicator": "ENERGY_KWH"}
    nation = await get(api.admin, "/drill", **params)
    assert nation["level"] == "province"
    assert nation["enterprise_drill"] == {"allowed": True, "reason": None}
    provinces = {r["key"]: r for r in nation["rows"]}
    assert provinces["320000"]["name"] == "江苏省"

    jiangsu = await get(api.admin, "/drill", region="320000", **params)
    assert jiangsu["level"] == "prefecture"
    assert [p["name"] for p in jiangsu["path"]] == ["全国", "江苏省"]
    cities = {r["key"]: r for r in jiangsu["rows"]}
    assert set(cities) == {"320100", "320200", "320500"}
    assert sum(r["numerator"] for r in cities.values()) == provinces["320000"]["numerator"]

    suzhou = await get(api.admin, "/drill", region="320500", **params)
    assert suzhou["level"] == "enterprise"
    assert [p["name"] for p in suzhou["path"]] == ["全国", "江苏省", "苏州市"]
    companies = suzhou["rows"]
    assert companies
    assert all(r["key"].startswith("91320500MA") for r in companies)
    assert sum(r["numerator"] for r in companies) == cities["320500"]["numerator"]

    # A municipality that reports as itself goes straight to its enterprises.
    beijing = await get(api.admin, "/drill", region="110000", **params)
    assert beijing["level"] == "enterprise"
    assert beijing["rows"]


@pytest.mark.parametrize("store", ["enterprise", "national"])
async def test_drill_refused_above_the_grade(api: Api, store: str) -> None:
    api.use(store)
    params = {**RANGE, "indicator": "PRODUCTION_VOLUME"}  # important data
    nation = await get(api.admin, "/drill", **params)  # aggregates are still shown
    assert nation["rows"]
    assert nation["enterprise_drill"]["allowed"] is False
    assert "important" in nation["enterprise_drill"]["reason"]
    refused = await get(api.admin, "/drill", 403, region="320500", **params)
    assert "PRODUCTION_VOLUME" in refused["detail"]
    assert "important data" in refused["detail"]
    assert "up to general" in refused["detail"]
    core = await get(
        api.admin, "/drill", 403, region="320500", **RANGE, indicator="ENERGY_RESERVE_T"
    )
    assert "core data" in core["detail"]
    by_source = await get(api.admin, "/totals", 403, by="source", **params)
    assert "important data" in by_source["detail"]


async def test_tenant_tokens_read_aggregates_only(api: Api) -> None:
    params = {**RANGE, "indicator": "ENERGY_KWH"}
    nation = await get(api.viewer, "/drill", **params)
    assert nation["enterprise_drill"]["allowed"] is False
    assert "platform administrators" in nation["enterprise_drill"]["reason"]
    refused = await get(api.viewer, "/drill", 403, region="320500", **params)
    assert "platform administrators" in refused["detail"]
    await get(api.viewer, "/totals", 403, by="source", **params)
    await get(api.viewer, "/energy", 403, by="source", **RANGE)
    await get(api.viewer, "/energy", **RANGE)
    await get(api.anonymous, "/catalog", 401)
    await get(api.anonymous, "/totals", 401, **params)


async def test_grid_has_every_province(api: Api) -> None:
    body = await get(api.viewer, "/grid", indicator="ENERGY_KWH", **RANGE)
    cells = {c["region"]: c for c in body["cells"]}
    assert len(cells) >= 34
    assert cells["440000"]["name"] == "广东省"
    assert cells["650000"]["value"] is None  # no enterprise in Xinjiang
    provinces = await get(api.viewer, "/totals", by="province", indicator="ENERGY_KWH", **RANGE)
    with_data = {c: v["value"] for c, v in cells.items() if v["value"] is not None}
    assert with_data == {r["key"]: r["value"] for r in provinces["rows"]}
    assert with_data.keys() == {province_of(r) for r in {r.scope.region for r in dataset()}}
    assert body["min"] == min(with_data.values())
    assert body["max"] == max(with_data.values())


@pytest.mark.parametrize("store", ["enterprise", "national"])
async def test_energy_view(api: Api, store: str) -> None:
    api.use(store)
    body = await get(api.admin, "/energy", **RANGE)
    rows = body["rows"]
    assert {r["key"] for r in rows} <= set(ENERGY_INDUSTRIES)
    assert {r["key"] for r in rows} == {"D44", "B06", "C25"}  # the generated energy divisions
    for r in rows:
        assert r["name"] == CAT.industries[r["key"]]
        assert r["intensity"] == pytest.approx(r["energy_tce"] / (r["output_value"] / 10_000))
    intensities = [r["intensity"] for r in rows]
    assert intensities == sorted(intensities, reverse=True)
    total = body["total"]
    assert total["energy_tce"] == sum(r["energy_tce"] for r in rows)
    assert total["intensity"] == pytest.approx(
        total["energy_tce"] / (total["output_value"] / 10_000)
    )
    companies = await get(api.admin, "/energy", by="source", **RANGE)
    assert len(companies["rows"]) > len(rows)
    assert {r["industry"] for r in companies["rows"]} == {r["key"] for r in rows}
    assert sum(r["energy_tce"] for r in companies["rows"]) == total["energy_tce"]


@pytest.mark.parametrize(
    ("path", "params", "needle"),
    [
        ("/totals", {**RANGE, "indicator": "NOPE"}, "unknown indicator 'NOPE'"),
        ("/totals", {**RANGE, "by": "planet"}, "region"),
        ("/totals", {**RANGE, "period": "year"}, "month"),
        ("/totals", {**RANGE, "start": "last tuesday"}, "not an ISO date"),
        ("/totals", {**RANGE, "start": "2026-01-01T00:00+08:00"}, "without a time zone"),
        ("/totals", {**RANGE, "end": MONTHS[0]}, "must be after start"),
        ("/totals", {**RANGE, "region": "999999"}, "unknown GB/T 2260 region"),
        ("/series", {**RANGE, "indicator": "OEE", "industry": "Z99"}, "unknown GB/T 4754"),
        ("/drill", {**RANGE, "indicator": "OEE", "region": "12"}, "unknown GB/T 2260 region"),
        ("/grid", {"period": "month", "indicator": "OEE"}, "start"),
        (
            "/series",
            {"period": "hour", "start": "2020-01-01", "end": "2026-01-01", "indicator": "OEE"},
            "more than 1000 hour periods",
        ),
    ],
)
async def test_validation_errors_say_what_to_fix(
    api: Api, path: str, params: dict[str, str], needle: str
) -> None:
    body = await get(api.admin, path, 422, **params)
    assert needle in str(body["detail"])


async def test_no_store_is_503(api: Api) -> None:
    api.use(None)
    for path in ("/totals", "/grid", "/energy"):
        body = await get(api.admin, path, 503, indicator="OEE", **RANGE)
        assert body["detail"] == NO_STORE
    await get(api.admin, "/catalog")  # the catalog needs no store
    await get(api.anonymous, "/totals", 401, **RANGE)  # and who asks is checked first
