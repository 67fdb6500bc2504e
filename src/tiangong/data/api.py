"""The data center's REST API: indicator history by region, industry and time, read-only.

``create_data_router(store_provider, catalog)`` returns an ``APIRouter`` under
``/api/v1/data`` that reads an ``AnalyticsStore`` (the one a ``DataCenter`` owns):

=============  ===========================================================================
route          what it answers
=============  ===========================================================================
``/catalog``   indicators (zh and en names, unit, grade, rule), regions, industries
``/periods``   the period starts that hold data for one indicator (for range pickers)
``/totals``    values over ``[start, end)``, grouped by region, province, industry or source
``/series``    one indicator per period start, gaps as ``null``
``/drill``     national → provinces → prefectures → enterprises (grade permitting)
``/grid``      one cell per province, for a map-like grid
``/energy``    energy industries' (or enterprises') consumption, output and intensity
=============  ===========================================================================

Time: ``start`` is the first period start included and ``end`` the first one excluded, both
ISO dates or date-times without a zone (the store's period starts are local figures);
``end`` defaults to one period after ``start``.

Who may read (the choice): every authenticated caller reads the aggregates (totals by region,
province or industry, series, the grid, the energy view by industry): they are the figures of
statistical reporting. Figures of *single enterprises* (``/drill`` down to enterprises,
``/totals?by=source``, ``/energy?by=source``) need the ``platform_admin`` role, because a
tenant's token is confined to its own enterprise and these rows are other enterprises'; and
the indicator's grade must be at most ``max_drill_grade`` (MIIT: important and core data is
not shown per enterprise), whoever asks. Both refusals are a 403 whose ``detail`` says why.

Errors: a code the catalog does not know, a malformed time or an empty range is a 422 saying
what to fix; no store (a platform that runs no data center) is a 503; a store failure is a 503
with the store's message.
"""

# No ``from __future__ import annotations`` here: the route functions are defined inside
# ``create_data_router`` and annotated with aliases local to it (the store dependency closes over
# the provider), which FastAPI can only resolve from annotations evaluated at definition time.

import calendar
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Annotated, Final, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import BaseModel

from tiangong.data.catalog import ENERGY_INDUSTRIES, Catalog, province_of
from tiangong.data.errors import CatalogError, DataError, ExportRefused
from tiangong.data.model import Aggregation, DataGrade, Level, Period
from tiangong.data.store import AnalyticsStore, GroupBy, Row
from tiangong.platform.api.auth import Caller
from tiangong.platform.tokens import ApiPrincipal, ApiRole

__all__ = [
    "CatalogOut",
    "DrillOut",
    "EnergyOut",
    "GridOut",
    "PeriodsOut",
    "SeriesOut",
    "TotalsOut",
    "create_data_router",
]

PREFIX: Final = "/api/v1/data"
NO_STORE: Final = "no data center store on this platform"
#: The most period starts one ``/series`` call returns (10 years of months, 41 days of hours).
MAX_SERIES_POINTS: Final = 1000


# -- response bodies -----------------------------------------------------------------------------


class IndicatorOut(BaseModel):
    """One indicator of the catalog."""

    code: str
    name_zh: str
    name_en: str
    unit: str
    aggregation: Aggregation
    grade: DataGrade
    description: str


class CodeOut(BaseModel):
    """A region or industry code with its name and level (province/prefecture, section/division)."""

    code: str
    name: str
    level: str
    parent: str | None


class CatalogOut(BaseModel):
    """The catalog the center reads with, and what drill-down allows."""

    version: str
    indicators: list[IndicatorOut]
    regions: list[CodeOut]
    industries: list[CodeOut]
    energy_industries: list[str]
    periods: list[Period]
    max_drill_grade: DataGrade


class PeriodsOut(BaseModel):
    """The period starts holding data for an indicator, oldest first."""

    indicator: str
    period: Period
    starts: list[str]


class TotalRow(BaseModel):
    """One indicator's value for one group (see ``tiangong.data.store.Row``)."""

    key: str | None
    name: str | None
    indicator: str
    value: float | None
    numerator: float
    denominator: float
    parts: int


class TotalsOut(BaseModel):
    """Values over a range, grouped."""

    period: Period
    start: str
    end: str
    by: GroupBy | None
    indicators: list[IndicatorOut]
    rows: list[TotalRow]


class SeriesPoint(BaseModel):
    """One period start and the value (``None``: no data, or a ratio over nothing)."""

    start: str
    value: float | None


class SeriesOut(BaseModel):
    """One indicator over time."""

    indicator: IndicatorOut
    period: Period
    start: str
    end: str
    region: str | None
    industry: str | None
    points: list[SeriesPoint]


class PlaceOut(BaseModel):
    """A step of a drill-down path."""

    code: str | None
    name: str


class EnterpriseDrill(BaseModel):
    """Whether this caller may see this indicator per enterprise, and if not why."""

    allowed: bool
    reason: str | None


class DrillOut(BaseModel):
    """One step of a drill-down: the children of ``region`` (the nation when ``None``)."""

    indicator: IndicatorOut
    period: Period
    start: str
    end: str
    region: str | None
    path: list[PlaceOut]
    level: Literal["province", "prefecture", "enterprise"]
    enterprise_drill: EnterpriseDrill
    rows: list[TotalRow]


class GridCellOut(BaseModel):
    """A province of the grid."""

    region: str
    name: str
    value: float | None


class GridOut(BaseModel):
    """Every province with the indicator's value (``None``: no data)."""

    indicator: IndicatorOut
    period: Period
    start: str
    end: str
    min: float | None
    max: float | None
    cells: list[GridCellOut]


class EnergyRowOut(BaseModel):
    """An energy industry's or enterprise's consumption, output value and intensity."""

    key: str
    name: str | None
    industry: str
    industry_name: str | None
    energy_tce: float
    output_value: float
    intensity: float | None


class EnergyOut(BaseModel):
    """The energy industry view: rows sorted by intensity (highest first) and their total."""

    period: Period
    start: str
    end: str
    by: Literal["industry", "source"]
    intensity_unit: str
    total: EnergyRowOut
    rows: list[EnergyRowOut]


# -- helpers -------------------------------------------------------------------------------------


def _unprocessable(message: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, message)


@contextmanager
def _translated() -> Iterator[None]:
    """The data system's errors as HTTP answers (the API boundary)."""
    try:
        yield
    except ExportRefused as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"{exc} ({exc.rule})") from exc
    except CatalogError as exc:
        raise _unprocessable(f"{exc}; GET {PREFIX}/catalog lists the codes") from exc
    except DataError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc


def _time(value: str, name: str) -> datetime:
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise _unprocessable(
            f"{name}={value!r} is not an ISO date or date-time (e.g. 2026-01-01)"
        ) from None
    if ts.tzinfo is not None:
        raise _unprocessable(f"{name}={value!r}: give a period start without a time zone")
    return ts


def _step(period: Period, ts: datetime) -> datetime:
    """The next period start after ``ts`` (a period start)."""
    if period is Period.HOUR:
        return ts + timedelta(hours=1)
    if period is Period.DAY:
        return ts + timedelta(days=1)
    year, month = (ts.year + 1, 1) if ts.month == 12 else (ts.year, ts.month + 1)
    return ts.replace(year=year, month=month, day=min(ts.day, calendar.monthrange(year, month)[1]))


def _align(period: Period, ts: datetime) -> datetime:
    """The first period start at or after ``ts``."""
    if period is Period.HOUR:
        floor = ts.replace(minute=0, second=0, microsecond=0)
    elif period is Period.DAY:
        floor = ts.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        floor = ts.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return floor if floor == ts else _step(period, floor)


def _period_text(period: Period, ts: datetime) -> str:
    # The store's spelling of a period start, so that series keys and filled gaps match.
    return ts.strftime("%Y-%m-%dT%H:00" if period is Period.HOUR else "%Y-%m-%d")


def _range(period: Period, start: str, end: str | None) -> tuple[str, str]:
    """``(start, end)`` checked, with ``end`` defaulting to one period after ``start``."""
    first = _time(start, "start")
    if end is None:
        return start, _step(period, _align(period, first)).isoformat()
    if _time(end, "end") <= first:
        raise _unprocessable(f"end={end!r} must be after start={start!r} (end is excluded)")
    return start, end


def _indicator(catalog: Catalog, code: str) -> IndicatorOut:
    spec = catalog.indicators.get(code)
    if spec is None:
        raise _unprocessable(
            f"unknown indicator {code!r}; GET {PREFIX}/catalog lists the indicator codes"
        )
    return IndicatorOut(
        code=spec.code,
        name_zh=spec.name_zh,
        name_en=spec.name_en,
        unit=spec.unit,
        aggregation=spec.aggregation,
        grade=spec.grade,
        description=spec.description,
    )


def _region(catalog: Catalog, code: str | None) -> str | None:
    if code is not None and code not in catalog.regions:
        raise _unprocessable(f"unknown GB/T 2260 region code {code!r} (six digits, e.g. 320500)")
    return code


def _industry(catalog: Catalog, code: str | None) -> str | None:
    if code is not None and code not in catalog.industries:
        raise _unprocessable(
            f"unknown GB/T 4754 industry code {code!r} (a section letter or a division, e.g. C38)"
        )
    return code


def _name(catalog: Catalog, by: str | None, key: str | None) -> str | None:
    if key is None:
        return "全国"
    if by in ("region", "province"):
        return catalog.regions.get(key)
    if by == "industry":
        return catalog.industries.get(key)
    return None


def _rows(catalog: Catalog, by: str | None, rows: Sequence[Row]) -> list[TotalRow]:
    return [
        TotalRow(
            key=r.key,
            name=_name(catalog, by, r.key),
            indicator=r.indicator,
            value=r.value,
            numerator=r.numerator,
            denominator=r.denominator,
            parts=r.parts,
        )
        for r in rows
    ]


def _enterprise_refusal(
    principal: ApiPrincipal, specs: Sequence[IndicatorOut], max_grade: DataGrade
) -> str | None:
    """Why this caller may not see these indicators per enterprise (``None``: it may)."""
    for spec in specs:
        if spec.grade.rank > max_grade.rank:
            return (
                f"{spec.code} ({spec.name_en}, {spec.name_zh}) is {spec.grade} data: this "
                f"center shows it per enterprise only up to {max_grade} data"
            )
    if principal.role is not ApiRole.PLATFORM_ADMIN:
        return (
            "figures of single enterprises are for platform administrators: a tenant token "
            "reads the aggregates only"
        )
    return None


def _refuse_enterprise(
    principal: ApiPrincipal, specs: Sequence[IndicatorOut], max_grade: DataGrade
) -> None:
    reason = _enterprise_refusal(principal, specs, max_grade)
    if reason is not None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, reason)


def _codes_out(codes: dict[str, str], *, regions: bool) -> list[CodeOut]:
    out = []
    for code, name in codes.items():
        if regions:
            top = code.endswith("0000")
            level, parent = ("province", None) if top else ("prefecture", province_of(code))
        else:
            top = len(code) == 1
            level, parent = ("section", None) if top else ("division", code[:1])
        out.append(CodeOut(code=code, name=name, level=level, parent=parent))
    return out


def _energy_row(
    catalog: Catalog, by: str, key: str, industry: str, *, tce: float, output: float
) -> EnergyRowOut:
    return EnergyRowOut(
        key=key,
        name="全部能源行业"
        if by == "total"
        else catalog.industries.get(key)
        if by == "industry"
        else None,
        industry=industry,
        industry_name=catalog.industries.get(industry),
        energy_tce=tce,
        output_value=output,
        intensity=tce / (output / 10_000.0) if output else None,
    )


# -- the router ----------------------------------------------------------------------------------


def create_data_router(
    store_provider: Callable[[], AnalyticsStore | None],
    catalog: Catalog,
    *,
    max_drill_grade: DataGrade = DataGrade.GENERAL,
) -> APIRouter:
    """The data center's read API under ``/api/v1/data`` (see the module docstring).

    Every route needs a bearer token (the platform's ``Caller`` dependency, which reads
    ``app.state.platform.tokens``), so the router is mounted on the platform's app.

    Args:
        store_provider: the store to read, asked on every request (``None``: answer 503), so
            that a data center started after the app, or restarted, is picked up.
        catalog: names and rules of the indicators and codes, and what is validated against.
        max_drill_grade: the highest grade shown per enterprise.
    """
    router = APIRouter(prefix=PREFIX, tags=["data"])

    def store_dep(principal: Caller) -> AnalyticsStore:
        # Depends on the caller so that an anonymous request is a 401 before it is a 503.
        del principal
        store = store_provider()
        if store is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, NO_STORE)
        return store

    Store = Annotated[AnalyticsStore, Depends(store_dep)]  # noqa: N806 - a type alias
    PeriodQ = Annotated[Period, Query(description="month, day or hour reports")]  # noqa: N806
    StartQ = Annotated[str, Query(description="first period start included (ISO)")]  # noqa: N806
    EndQ = Annotated[  # noqa: N806
        str | None, Query(description="first period start excluded; default start + 1 period")
    ]

    @router.get("/catalog", response_model=CatalogOut, summary="Indicators and codes")
    async def get_catalog(principal: Caller) -> CatalogOut:
        """The indicators (names, units, grades, rules), regions and industries."""
        del principal
        return CatalogOut(
            version=catalog.version,
            indicators=[_indicator(catalog, code) for code in catalog.indicators],
            regions=_codes_out(dict(catalog.regions), regions=True),
            industries=_codes_out(dict(catalog.industries), regions=False),
            energy_industries=list(ENERGY_INDUSTRIES),
            periods=list(Period),
            max_drill_grade=max_drill_grade,
        )

    @router.get("/periods", response_model=PeriodsOut, summary="Period starts with data")
    async def get_periods(*, store: Store, indicator: str, period: PeriodQ) -> PeriodsOut:
        """The period starts that hold data for ``indicator``, oldest first."""
        spec = _indicator(catalog, indicator)
        with _translated():
            points = await store.series(spec.code, period, "1900-01-01", "2200-01-01")
        return PeriodsOut(indicator=spec.code, period=period, starts=[s for s, _ in points])

    @router.get("/totals", response_model=TotalsOut, summary="Totals, grouped")
    async def get_totals(
        *,
        principal: Caller,
        store: Store,
        period: PeriodQ,
        start: StartQ,
        end: EndQ = None,
        by: Annotated[GroupBy | None, Query(description="group by; none for one total")] = None,
        indicator: Annotated[
            list[str] | None,
            Query(description="indicator codes (repeat, or comma-separated); default all"),
        ] = None,
        region: Annotated[str | None, Query(description="only this region or province")] = None,
        industry: Annotated[str | None, Query(description="only this industry or section")] = None,
        level: Annotated[Level | None, Query(description="read this level's reports")] = None,
    ) -> TotalsOut:
        """Indicator values over ``[start, end)``; ratios are ratios of the sums."""
        start, end = _range(period, start, end)
        codes = [c for item in indicator or [] for c in item.split(",") if c] or list(
            catalog.indicators
        )
        specs = [_indicator(catalog, code) for code in codes]
        if by == "source":
            _refuse_enterprise(principal, specs, max_drill_grade)
        with _translated():
            rows = await store.totals(
                period,
                start,
                end,
                by=by,
                indicators=codes,
                region=_region(catalog, region),
                industry=_industry(catalog, industry),
                level=level,
            )
        return TotalsOut(
            period=period,
            start=start,
            end=end,
            by=by,
            indicators=specs,
            rows=_rows(catalog, by, rows),
        )

    @router.get("/series", response_model=SeriesOut, summary="One indicator over time")
    async def get_series(
        *,
        store: Store,
        indicator: str,
        period: PeriodQ,
        start: StartQ,
        end: EndQ = None,
        region: Annotated[str | None, Query(description="only this region or province")] = None,
        industry: Annotated[str | None, Query(description="only this industry or section")] = None,
    ) -> SeriesOut:
        """One value per period start in ``[start, end)``, oldest first, ``null`` in gaps."""
        spec = _indicator(catalog, indicator)
        start, end = _range(period, start, end)
        starts: list[str] = []
        ts, stop = _align(period, _time(start, "start")), _time(end, "end")
        while ts < stop:
            if len(starts) == MAX_SERIES_POINTS:
                raise _unprocessable(
                    f"that range has more than {MAX_SERIES_POINTS} {period} periods: "
                    "shorten it or use a longer period"
                )
            starts.append(_period_text(period, ts))
            ts = _step(period, ts)
        with _translated():
            values = dict(
                await store.series(
                    spec.code,
                    period,
                    start,
                    end,
                    region=_region(catalog, region),
                    industry=_industry(catalog, industry),
                )
            )
        return SeriesOut(
            indicator=spec,
            period=period,
            start=start,
            end=end,
            region=region,
            industry=industry,
            points=[SeriesPoint(start=s, value=values.get(s)) for s in starts],
        )

    @router.get("/drill", response_model=DrillOut, summary="Drill down by region")
    async def get_drill(
        *,
        principal: Caller,
        store: Store,
        indicator: str,
        period: PeriodQ,
        start: StartQ,
        end: EndQ = None,
        region: Annotated[
            str | None,
            Query(description="none: provinces; a province: its prefectures; else enterprises"),
        ] = None,
    ) -> DrillOut:
        """The children of the nation, a province or a prefecture.

        A province whose only region with data is itself (Beijing, Shanghai...) goes straight
        to its enterprises. Enterprises are shown only where the grade and the caller's role
        allow it; otherwise 403 with the reason (also given ahead in ``enterprise_drill``).
        """
        spec = _indicator(catalog, indicator)
        start, end = _range(period, start, end)
        code = _region(catalog, region)
        refusal = _enterprise_refusal(principal, [spec], max_drill_grade)
        path = [PlaceOut(code=None, name="全国")]
        level: Literal["province", "prefecture", "enterprise"]
        with _translated():
            if code is None:
                level, by = "province", "province"
                rows = await store.totals(period, start, end, by="province", indicators=[spec.code])
            else:
                province = province_of(code)
                path.append(PlaceOut(code=province, name=catalog.regions.get(province, province)))
                if code != province:
                    path.append(PlaceOut(code=code, name=catalog.regions[code]))
                rows = []
                if code == province:
                    rows = await store.totals(
                        period, start, end, by="region", indicators=[spec.code], region=code
                    )
                if rows and any(r.key != code for r in rows):
                    level, by = "prefecture", "region"
                else:
                    level, by = "enterprise", "source"
                    if refusal is not None:
                        raise HTTPException(status.HTTP_403_FORBIDDEN, refusal)
                    rows = await store.drill_down(
                        spec.code, period, start, end, region=code, max_grade=max_drill_grade
                    )
        return DrillOut(
            indicator=spec,
            period=period,
            start=start,
            end=end,
            region=code,
            path=path,
            level=level,
            enterprise_drill=EnterpriseDrill(allowed=refusal is None, reason=refusal),
            rows=_rows(catalog, by, rows),
        )

    @router.get("/grid", response_model=GridOut, summary="Province grid")
    async def get_grid(
        *, store: Store, indicator: str, period: PeriodQ, start: StartQ, end: EndQ = None
    ) -> GridOut:
        """Every province of the catalog with the indicator's value over the range."""
        spec = _indicator(catalog, indicator)
        start, end = _range(period, start, end)
        with _translated():
            cells = await store.region_grid(spec.code, period, start, end)
        values = [c.value for c in cells if c.value is not None]
        return GridOut(
            indicator=spec,
            period=period,
            start=start,
            end=end,
            min=min(values) if values else None,
            max=max(values) if values else None,
            cells=[GridCellOut(region=c.region, name=c.name, value=c.value) for c in cells],
        )

    @router.get("/energy", response_model=EnergyOut, summary="Energy industry view")
    async def get_energy(
        *,
        principal: Caller,
        store: Store,
        period: PeriodQ,
        start: StartQ,
        end: EndQ = None,
        by: Annotated[
            Literal["industry", "source"], Query(description="per energy industry or enterprise")
        ] = "industry",
    ) -> EnergyOut:
        """Consumption (tce), output value (CNY) and intensity (tce per 10 000 CNY)."""
        start, end = _range(period, start, end)
        if by == "source":
            specs = [_indicator(catalog, c) for c in ("ENERGY_TCE", "OUTPUT_VALUE")]
            _refuse_enterprise(principal, specs, max_drill_grade)
        with _translated():
            rows = await store.energy_view(period, start, end, by=by)
        tce = sum(r.energy_tce for r in rows)
        output = sum(r.output_value for r in rows)
        return EnergyOut(
            period=period,
            start=start,
            end=end,
            by=by,
            intensity_unit="tce/10^4 CNY",
            total=_energy_row(catalog, "total", "*", "*", tce=tce, output=output),
            rows=[
                _energy_row(catalog, by, r.key, r.industry, tce=r.energy_tce, output=r.output_value)
                for r in rows
            ],
        )

    return router
