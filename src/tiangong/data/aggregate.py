"""Combining reports from below, and the ledger of what was received.

Theory of operation
-------------------
A center receives reports from below (enterprises, or sub-centers under it) and keeps, in a
``Ledger``, the latest revision of each ``report_id``. ``Ledger.accept`` classifies what arrived:

=========  ====================================================  ===============================
outcome    when                                                  what the center does
=========  ====================================================  ===============================
NEW        first revision seen of this report_id                 store, re-aggregate the period
REVISED    a higher revision than the one held                   replace, re-aggregate
DUPLICATE  the revision held again (a redelivery)                nothing (ack)
STALE      a lower revision (arrived after its correction)       nothing (ack)
=========  ====================================================  ===============================

Arrival order therefore does not matter: revisions 1, 3, 2 leave revision 3 held. The same
revision with *different* figures is a ``ReportError`` (a source must bump the revision to
correct), so a conflicting redelivery is rejected and audited instead of silently ignored.

Splits by region and by industry ("cells")
------------------------------------------
A regional center covers one region but all industries; an industry center one industry but all
regions. If each forwarded only its own total, the national center could total by region (from
the regional centers) or by industry (from the industry centers) but never answer "industry C38
in Suzhou". So a center forwards **one report per (region, industry) cell** that it holds
children for (``aggregate_cells``): scope ``(center id, center level, region, industry)`` with
concrete codes, report id from ``report_id_for``. A cell is the finest split of public
figures, so everything above is a group-by over cells:

* national total by region = Σ over the regional centers' cells grouped by region;
* national total by industry = Σ over the industry centers' cells grouped by industry;
* both equal the combination of all enterprise reports, for every indicator, because each
  cell is ``combine`` over disjoint enterprise sets and every rule is associative (sums,
  maxima, numerator/denominator pairs, member unions). A ratio stays Σnum/Σden at every level
  because measures carry numerator and denominator, never the ratio.

The regional and industry trees are two independent paths to the same national figures; the
national center keeps both (``AnalyticsStore`` filters by the level of the forwarding center),
which makes the invariant a cross-check run by the tests.

Drill-down: each aggregate carries a ``breakdown`` keyed by enterprise id with that enterprise's
measures, for indicators whose grade is at most ``breakdown_max_grade`` (default general only).
A center under a center passes its children's breakdowns up unchanged (filtered again), so the
national center drills down to the enterprise only where the grade allows it.

The ledger is an SQLite file in WAL mode with ``synchronous=FULL``: an accepted report survives a
crash, and a restarted center re-aggregates from ``Ledger.periods()``/``children()``. Calls are
short local transactions; async callers may run them with ``asyncio.to_thread`` (the connection
is shared under a lock).
"""

from __future__ import annotations

import sqlite3
import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Final, NoReturn

from tiangong.data.catalog import Catalog
from tiangong.data.errors import CatalogError, ReportError
from tiangong.data.model import (
    ANY,
    DataGrade,
    Level,
    Measure,
    Period,
    Report,
    Scope,
    combine,
    report_id_for,
)
from tiangong.data.reports import decode_report, encode_report

__all__ = [
    "ENTERPRISES_REPORTING",
    "Ledger",
    "Outcome",
    "aggregate_cells",
    "aggregate_report",
]

#: The distinct-count indicator a center fills from its children's sources.
ENTERPRISES_REPORTING: Final = "ENTERPRISES_REPORTING"


class Outcome(StrEnum):
    """What ``Ledger.accept`` did with a report (see the module's table)."""

    NEW = "new"
    REVISED = "revised"
    DUPLICATE = "duplicate"
    STALE = "stale"


_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS received (
        report_id TEXT PRIMARY KEY, revision INTEGER NOT NULL, period TEXT NOT NULL,
        period_start TEXT NOT NULL, source TEXT NOT NULL, body BLOB NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS received_period ON received (period, period_start)",
    """CREATE TABLE IF NOT EXISTS issued (
        report_id TEXT PRIMARY KEY, revision INTEGER NOT NULL)""",
)


def _figures(report: Report) -> tuple[object, ...]:
    # What a revision stands for; created_at and the signature may differ on a re-send.
    return (
        report.scope,
        report.period,
        report.period_start,
        report.catalog_version,
        report.measures,
        report.breakdown,
    )


class Ledger:
    """The latest revision of each report received from below (an SQLite file).

    Args:
        path: database file, created if missing (``":memory:"`` for a throwaway ledger).
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path) if path != ":memory:" else Path(":memory:")
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        for statement in _SCHEMA:
            self._db.execute(statement)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def accept(self, report: Report) -> Outcome:
        """Record ``report`` if it is new or a higher revision than the one held.

        Raises:
            ReportError: the revision held has different figures (a conflicting re-send).
        """
        body = encode_report(report)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT revision, body FROM received WHERE report_id = ?",
                    (report.report_id,),
                ).fetchone()
                if row is None:
                    outcome = Outcome.NEW
                elif report.revision > row[0]:
                    outcome = Outcome.REVISED
                elif report.revision < row[0]:
                    outcome = Outcome.STALE
                elif _figures(decode_report(row[1])) == _figures(report):
                    outcome = Outcome.DUPLICATE
                else:
                    _conflict(report)
                if outcome in (Outcome.NEW, Outcome.REVISED):
                    self._db.execute(
                        "INSERT OR REPLACE INTO received VALUES (?, ?, ?, ?, ?, ?)",
                        (
                            report.report_id,
                            report.revision,
                            report.period.value,
                            report.period_start,
                            report.scope.source,
                            body,
                        ),
                    )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return outcome

    def get(self, report_id: str) -> Report | None:
        """The revision held of ``report_id``, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT body FROM received WHERE report_id = ?", (report_id,)
            ).fetchone()
        return None if row is None else decode_report(row[0])

    def children(self, period: Period, period_start: str) -> list[Report]:
        """The latest revision of every report held for one period, in report-id order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM received WHERE period = ? AND period_start = ?"
                " ORDER BY report_id",
                (period.value, period_start),
            ).fetchall()
        return [decode_report(body) for (body,) in rows]

    def periods(self) -> list[tuple[Period, str]]:
        """Every (period, period_start) with reports held, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT period, period_start FROM received ORDER BY period_start, period"
            ).fetchall()
        return [(Period(p), start) for p, start in rows]

    def next_revision(self, report_id: str) -> int:
        """A revision for this center's own ``report_id``, higher than any issued before.

        Persisted, so a restarted center's corrections still replace what it sent earlier.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT revision FROM issued WHERE report_id = ?", (report_id,)
                ).fetchone()
                revision = 1 if row is None else row[0] + 1
                self._db.execute(
                    "INSERT OR REPLACE INTO issued VALUES (?, ?)", (report_id, revision)
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return revision

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


def _conflict(report: Report) -> NoReturn:
    raise ReportError(
        f"{report.message_id} is held with different figures; a correction needs a higher revision"
    )


def _check_children(
    children: Sequence[Report], period: Period, period_start: str, catalog: Catalog
) -> None:
    seen: set[str] = set()
    for child in children:
        codes = set(child.measures).union(*child.breakdown.values())
        unknown = codes - catalog.indicators.keys()
        if unknown:
            raise ReportError(f"{child.message_id}: unknown indicators {sorted(unknown)}")
        if child.period is not period or child.period_start != period_start:
            raise ReportError(
                f"{child.message_id} is for {child.period} {child.period_start},"
                f" not {period} {period_start}"
            )
        if child.report_id in seen:
            raise ReportError(f"{child.report_id} appears twice among the children")
        seen.add(child.report_id)


def _merge_into(
    target: dict[str, dict[str, list[Measure]]], key: str, measures: dict[str, Measure]
) -> None:
    slot = target.setdefault(key, {})
    for code, measure in measures.items():
        slot.setdefault(code, []).append(measure)


def aggregate_report(
    children: Sequence[Report],
    *,
    scope: Scope,
    period: Period,
    period_start: str,
    catalog: Catalog,
    revision: int,
    created_at: str,
    breakdown_max_grade: DataGrade = DataGrade.GENERAL,
) -> Report:
    """One unsigned report combining ``children`` by each indicator's rule.

    Every indicator present in a child is combined with ``model.combine`` (sums add, maxima
    take the larger, means and ratios add numerators and denominators, distinct counts unite
    members). ``ENTERPRISES_REPORTING`` is the union of the enterprise sources below: an
    enterprise child counts itself, a center child contributes its own members. The
    ``breakdown`` holds each enterprise's measures (key: enterprise id) for indicators whose
    grade is at most ``breakdown_max_grade``; breakdowns of center children are passed on.

    Raises:
        ReportError: a child for another period, the same report twice, an unknown indicator.
    """
    _check_children(children, period, period_start, catalog)
    by_code: dict[str, list[Measure]] = defaultdict(list)
    enterprises: set[str] = set()
    breakdown: dict[str, dict[str, list[Measure]]] = {}
    allowed = breakdown_max_grade.rank

    def visible(measures: dict[str, Measure]) -> dict[str, Measure]:
        return {
            code: m
            for code, m in measures.items()
            if code != ENTERPRISES_REPORTING and catalog.spec(code).grade.rank <= allowed
        }

    for child in children:
        for code, measure in child.measures.items():
            if code != ENTERPRISES_REPORTING:
                by_code[code].append(measure)
        if child.scope.level is Level.ENTERPRISE:
            enterprises.add(child.scope.source)
            _merge_into(breakdown, child.scope.source, visible(child.measures))
        else:
            held = child.measures.get(ENTERPRISES_REPORTING)
            if held is not None:
                enterprises.update(held.members)
            for key, measures in child.breakdown.items():
                _merge_into(breakdown, key, visible(measures))
    try:
        measures = {
            code: combine(catalog.spec(code).aggregation, parts)
            for code, parts in sorted(by_code.items())
        }
    except CatalogError as exc:
        raise ReportError(str(exc)) from exc
    if ENTERPRISES_REPORTING in catalog.indicators:
        measures[ENTERPRISES_REPORTING] = Measure(members=frozenset(enterprises))
    combined_breakdown = {
        key: {
            code: combine(catalog.spec(code).aggregation, parts)
            for code, parts in sorted(slot.items())
        }
        for key, slot in sorted(breakdown.items())
        if slot
    }
    return Report(
        report_id=report_id_for(scope, period, period_start),
        revision=revision,
        scope=scope,
        period=period,
        period_start=period_start,
        catalog_version=catalog.version,
        measures=measures,
        created_at=created_at,
        breakdown=combined_breakdown,
    )


def cells_of(children: Iterable[Report]) -> dict[tuple[str, str], list[Report]]:
    """``children`` grouped by their (region, industry) cell."""
    cells: dict[tuple[str, str], list[Report]] = defaultdict(list)
    for child in children:
        cells[child.scope.region, child.scope.industry].append(child)
    return dict(sorted(cells.items()))


def aggregate_cells(
    children: Sequence[Report],
    *,
    source: str,
    level: Level,
    period: Period,
    period_start: str,
    catalog: Catalog,
    revision: int,
    created_at: str,
    breakdown_max_grade: DataGrade = DataGrade.GENERAL,
) -> list[Report]:
    """One unsigned report per (region, industry) cell of ``children`` (what a center forwards).

    Each cell report has scope ``(source, level, region, industry)`` and combines the children
    of that cell with ``aggregate_report``. ``revision`` is used for every cell; a center that
    re-aggregates only some cells may instead call ``aggregate_report`` per cell with
    ``Ledger.next_revision``.

    Raises:
        ReportError: a child without a concrete region or industry (a center's total), or as
            ``aggregate_report``.
    """
    result = []
    for (region, industry), members in cells_of(children).items():
        if ANY in (region, industry):
            raise ReportError(
                f"{members[0].report_id} has no concrete (region, industry) to split by"
            )
        result.append(
            aggregate_report(
                members,
                scope=Scope(source=source, level=level, region=region, industry=industry),
                period=period,
                period_start=period_start,
                catalog=catalog,
                revision=revision,
                created_at=created_at,
                breakdown_max_grade=breakdown_max_grade,
            )
        )
    return result
