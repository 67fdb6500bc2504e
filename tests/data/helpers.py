"""Building blocks of the hierarchy tests: key rings, enterprise reports, expected totals."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

from tiangong.data.aggregate import aggregate_report
from tiangong.data.catalog import Catalog, standard_catalog
from tiangong.data.model import ANY, Level, Measure, Period, Report, Scope, report_id_for
from tiangong.data.reports import KeyRing

CATALOG: Catalog = standard_catalog()
DAY = "2026-12-01"

#: enterprise id → (region, industry): two provinces, two manufacturing divisions.
ENTERPRISES: dict[str, tuple[str, str]] = {
    "E320500A": ("320500", "C38"),
    "E320100B": ("320100", "C26"),
    "E330100C": ("330100", "C38"),
    "E330200D": ("330200", "C26"),
}


@dataclass(frozen=True)
class Topology:
    """Two regional centers (Jiangsu, Zhejiang), one industry center (C), the national one."""

    root: Path

    regions: ClassVar[dict[str, str]] = {"js": "320000", "zj": "330000"}
    industries: ClassVar[dict[str, str]] = {"mfg": "C"}
    national: ClassVar[str] = "cn"

    def keys(self, key_id: str) -> KeyRing:
        return KeyRing.load_or_generate(self.root / "keys" / key_id, key_id)[0]

    def setup_trust(self) -> None:
        """Each center trusts the keys of the sources below it."""
        national = self.keys(self.national)
        for center, code in self.regions.items():
            ring = self.keys(center)
            for ent, (region, _) in ENTERPRISES.items():
                if region[:2] == code[:2]:
                    ring.trust(ent, self.keys(ent).public_pem)
            national.trust(center, ring.public_pem)
        for center in self.industries:
            ring = self.keys(center)
            for ent in ENTERPRISES:
                ring.trust(ent, self.keys(ent).public_pem)
            national.trust(center, ring.public_pem)

    def region_center_of(self, enterprise: str) -> str:
        region = ENTERPRISES[enterprise][0]
        return next(c for c, code in self.regions.items() if code[:2] == region[:2])


def enterprise_report(
    enterprise: str,
    *,
    revision: int = 1,
    energy: float = 1000.0,
    online: float = 8,
    registered: float = 10,
    oee: float = 0.6,
    hours: float = 20,
    peak: float = 300.0,
    volume: float = 500.0,
    day: str = DAY,
) -> Report:
    region, industry = ENTERPRISES[enterprise]
    scope = Scope(source=enterprise, level=Level.ENTERPRISE, region=region, industry=industry)
    return Report(
        report_id=report_id_for(scope, Period.DAY, day),
        revision=revision,
        scope=scope,
        period=Period.DAY,
        period_start=day,
        catalog_version=CATALOG.version,
        measures={
            "ENERGY_KWH": Measure(numerator=energy),
            "NETWORKING_RATE": Measure(numerator=online, denominator=registered),
            "OEE": Measure(numerator=oee * hours, denominator=hours),
            "PEAK_POWER_KW": Measure(numerator=peak),
            "PRODUCTION_VOLUME": Measure(numerator=volume),  # important data
        },
        created_at=datetime.now(UTC).isoformat(),
    )


def expected(reports: list[Report]) -> Report:
    """What the national figures must be: the enterprise reports combined directly."""
    general = [
        replace(r, measures={k: m for k, m in r.measures.items() if k != "PRODUCTION_VOLUME"})
        for r in reports
    ]
    return aggregate_report(
        general,
        scope=Scope("check", Level.NATIONAL, ANY, ANY),
        period=Period.DAY,
        period_start=DAY,
        catalog=CATALOG,
        revision=1,
        created_at=datetime.now(UTC).isoformat(),
    )


def branch_total(children: list[Report], level: Level, day: str = DAY) -> Report:
    """The national total computed from the cells one branch (regional or industry) sent."""
    return aggregate_report(
        [c for c in children if c.scope.level is level],
        scope=Scope("check", Level.NATIONAL, ANY, ANY),
        period=Period.DAY,
        period_start=day,
        catalog=CATALOG,
        revision=1,
        created_at=datetime.now(UTC).isoformat(),
    )


def values(report: Report) -> dict[str, float | None]:
    return {
        code: m.value(CATALOG.spec(code).aggregation) for code, m in sorted(report.measures.items())
    }


async def eventually(check: object, *, timeout: float = 20.0, poll: float = 0.1) -> None:
    """Wait until ``check()`` (sync or async) neither raises AssertionError nor returns False."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            result = check()  # type: ignore[operator]
            if asyncio.iscoroutine(result):
                result = await result
            assert result is not False, f"{check!r} still false after {timeout:g} s"
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(poll)
        else:
            return
