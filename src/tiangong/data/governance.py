"""Data classification and grading (数据分类分级), export policy and the audit log.

Grades follow MIIT's 《工业和信息化领域数据安全管理办法(试行)》: general, important and core data,
per data domain (R&D, production, operations, management, external, platform operations). The
catalog grades every indicator; ``Dataset`` grades everything else an enterprise holds.

Export policy: what may leave a node is decided per source (the enterprise or center whose
figures they are) and per destination (the center above, a partner). A rule gives the highest
grade allowed plus optional per-indicator ``allow`` (lifts one indicator above the grade, but
never a core indicator unless the rule's grade is core) and ``deny`` (always wins). With no
matching rule only general data leaves. An indicator the catalog does not know is treated as
core: unknown data fails closed. ``decide`` never drops silently: it returns what may go *and*
a ``Refusal`` per indicator kept back, which the caller logs (``AuditKind.EXPORT_REFUSED``) and
reports upwards.

Audit log: an SQLite table where each entry's hash covers its fields and the previous entry's
hash (SHA-256 chain from a zero genesis), computed by ``security.audit.chain_hash`` exactly as
the platform's audit trail is (fields ``[seq, at, kind, actor, subject, origin, destination,
detail]``). Triggers refuse UPDATE and DELETE, which stops
mistakes; someone with the file can drop them, which the chain then exposes: ``verify`` names
the first entry whose hash, link or sequence number does not match. Removing entries from the
*end* leaves a valid shorter chain, so ``head()`` is meant to be anchored elsewhere (sent
upwards with the reports, printed in a daily report) and checked with ``verify(expect_head=)``.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import orjson
import tomli_w

from tiangong.data.catalog import Catalog, standard_catalog
from tiangong.data.errors import DataError, ExportRefused
from tiangong.data.model import DataDomain, DataGrade, Measure, Report
from tiangong.security.audit import GENESIS, chain_hash

__all__ = [
    "RAW_TELEMETRY",
    "AuditEntry",
    "AuditEvent",
    "AuditKind",
    "AuditLog",
    "AuditVerification",
    "Dataset",
    "ExportDecision",
    "ExportPolicy",
    "ExportRule",
    "Refusal",
    "SharingPolicy",
]


# -- export policy --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Refusal:
    """One indicator kept back: its code, its grade and the rule that stopped it."""

    indicator: str
    grade: DataGrade
    rule: str


@dataclass(frozen=True, slots=True)
class ExportDecision:
    """The outcome of ``ExportPolicy.decide``.

    Attributes:
        allowed: the report reduced to what may leave (None if nothing may). When anything was
            removed its ``signer``/``signature`` are cleared: the caller signs what it sends.
        refused: one ``Refusal`` per indicator kept back.
    """

    allowed: Report | None
    refused: tuple[Refusal, ...]

    def error(self) -> ExportRefused | None:
        """An ``ExportRefused`` describing the refusals (to raise or report), or None."""
        if not self.refused:
            return None
        codes = ", ".join(f"{r.indicator} ({r.grade})" for r in self.refused)
        return ExportRefused(
            f"export refused for {codes}", rule="; ".join(sorted({r.rule for r in self.refused}))
        )


@dataclass(frozen=True, slots=True)
class ExportRule:
    """The export rule for one source (or ``*``) towards one destination (or ``*``).

    Attributes:
        source: enterprise or center id whose figures the rule governs, ``*`` for any.
        destination: where they go (a center id), ``*`` for anywhere.
        max_grade: the highest grade that may leave.
        allow: indicators allowed even above ``max_grade`` (not core ones unless it is core).
        deny: indicators never allowed.
    """

    source: str = "*"
    destination: str = "*"
    max_grade: DataGrade = DataGrade.GENERAL
    allow: frozenset[str] = frozenset()
    deny: frozenset[str] = frozenset()

    def matches(self, source: str, destination: str) -> bool:
        """True if the rule applies to ``source`` sending to ``destination``."""
        return self.source in ("*", source) and self.destination in ("*", destination)

    @property
    def specificity(self) -> int:
        """A rule naming the source beats one naming only the destination beats a default."""
        return 2 * (self.source != "*") + (self.destination != "*")

    def describe(self) -> str:
        """Human text for audit records."""
        return f"rule(source={self.source}, destination={self.destination}, max={self.max_grade})"


@dataclass(frozen=True)
class ExportPolicy:
    """Per-source, per-destination export rules; the default lets only general data out.

    Attributes:
        rules: the rules; the most specific match decides (ties: the first listed).
        default_max_grade: the grade allowed when no rule matches.
    """

    rules: tuple[ExportRule, ...] = ()
    default_max_grade: DataGrade = DataGrade.GENERAL

    def rule_for(self, source: str, destination: str) -> ExportRule:
        """The rule that decides exports of ``source`` to ``destination``."""
        best: ExportRule | None = None
        for rule in self.rules:
            if rule.matches(source, destination) and (
                best is None or rule.specificity > best.specificity
            ):
                best = rule
        return best or ExportRule(max_grade=self.default_max_grade)

    def decide(
        self, report: Report, destination: str, *, catalog: Catalog | None = None
    ) -> ExportDecision:
        """Split ``report`` into what may go to ``destination`` and what is refused.

        Args:
            report: the report to export (its ``scope.source`` selects the rule).
            destination: the receiving center's id.
            catalog: grades of the indicators (default: the standard catalog).
        """
        catalog = catalog or standard_catalog()
        rule = self.rule_for(report.scope.source, destination)
        refused: dict[str, Refusal] = {}

        def permitted(code: str) -> bool:
            if code in refused:
                return False
            spec = catalog.indicators.get(code)
            grade = DataGrade.CORE if spec is None else spec.grade
            reason = ""
            if spec is None:
                reason = "not in the catalog: treated as core data"
            elif code in rule.deny:
                reason = f"{rule.describe()} denies {code}"
            elif code in rule.allow and (
                grade is not DataGrade.CORE or rule.max_grade is DataGrade.CORE
            ):
                return True
            elif grade.rank > rule.max_grade.rank:
                reason = f"{rule.describe()}: {grade} data may not leave"
            if reason:
                refused[code] = Refusal(code, grade, reason)
                return False
            return True

        def keep(measures: Mapping[str, Measure]) -> dict[str, Measure]:
            return {code: m for code, m in measures.items() if permitted(code)}

        measures = keep(report.measures)
        breakdown = {key: kept for key, ms in report.breakdown.items() if (kept := keep(ms))}
        if not refused:
            return ExportDecision(allowed=report, refused=())
        allowed = None
        if measures or breakdown:
            allowed = dataclasses.replace(
                report, measures=measures, breakdown=breakdown, signer="", signature=""
            )
        return ExportDecision(allowed=allowed, refused=tuple(refused.values()))

    # -- files -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The policy as plain data (the file format)."""
        return {
            "default_max_grade": self.default_max_grade.value,
            "rule": [
                {
                    "source": r.source,
                    "destination": r.destination,
                    "max_grade": r.max_grade.value,
                    "allow": sorted(r.allow),
                    "deny": sorted(r.deny),
                }
                for r in self.rules
            ],
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> ExportPolicy:
        """Parse ``to_dict`` output; ``DataError`` if malformed."""
        try:
            rules = tuple(
                ExportRule(
                    source=str(item.get("source", "*")),
                    destination=str(item.get("destination", "*")),
                    max_grade=DataGrade(item.get("max_grade", "general")),
                    allow=frozenset(map(str, item.get("allow", ()))),
                    deny=frozenset(map(str, item.get("deny", ()))),
                )
                for item in doc.get("rule", ())
            )
            return cls(
                rules=rules, default_max_grade=DataGrade(doc.get("default_max_grade", "general"))
            )
        except (AttributeError, TypeError, ValueError) as exc:
            raise DataError(f"malformed export policy: {exc}") from exc

    @classmethod
    def load(cls, path: Path | str) -> ExportPolicy:
        """Read a policy from a ``.toml`` or ``.json`` file (``[[rule]]`` tables)."""
        file = Path(path)
        try:
            data = file.read_bytes()
            doc = tomllib.loads(data.decode()) if file.suffix == ".toml" else orjson.loads(data)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, orjson.JSONDecodeError) as e:
            raise DataError(f"cannot read export policy {file}: {e}") from e
        if not isinstance(doc, dict):
            raise DataError(f"export policy {file} is not a table")
        return cls.from_dict(doc)

    def save(self, path: Path | str) -> None:
        """Write the policy as ``.toml`` or ``.json`` (by the file's suffix)."""
        file = Path(path)
        if file.suffix == ".toml":
            file.write_text(tomli_w.dumps(self.to_dict()), encoding="utf-8")
        else:
            file.write_bytes(orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2))


# -- datasets -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Dataset:
    """A dataset an enterprise holds (raw telemetry, a derived table) with its grade.

    Attributes:
        name: unique name (``"raw_telemetry"``).
        grade: its MIIT grade.
        domain: its data domain.
        raw: raw data (telemetry as collected) leaves only by an explicit grant.
    """

    name: str
    grade: DataGrade
    domain: DataDomain
    raw: bool = False


#: Raw device telemetry: production-domain control and process data, graded important since
#: process parameters reveal the enterprise's process know-how.
RAW_TELEMETRY: Final = Dataset("raw_telemetry", DataGrade.IMPORTANT, DataDomain.PRODUCTION, True)


@dataclass(frozen=True)
class SharingPolicy:
    """Which datasets may be shared with which destinations.

    Attributes:
        shared: dataset name → destinations it is explicitly shared with.
        max_grade: derived (non-raw) datasets up to this grade may be shared without a grant.
    """

    shared: Mapping[str, frozenset[str]] = field(default_factory=dict)
    max_grade: DataGrade = DataGrade.GENERAL

    def may_share(self, dataset: Dataset, destination: str) -> bool:
        """True if ``dataset`` may go to ``destination``.

        An explicit grant always decides (it is the data owner's recorded decision); without
        one, raw data never leaves, and derived data leaves up to ``max_grade``.
        """
        if destination in self.shared.get(dataset.name, frozenset()):
            return True
        if dataset.raw:
            return False
        return dataset.grade.rank <= self.max_grade.rank


# -- audit log ------------------------------------------------------------------------------------


class AuditKind(StrEnum):
    """What happened at a boundary."""

    EXPORT = "export"
    EXPORT_REFUSED = "export_refused"
    REPORT_RECEIVED = "report_received"
    REPORT_REJECTED = "report_rejected"
    REPORT_FORWARDED = "report_forwarded"


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """Who did what to which report, when, from where, to where.

    Attributes:
        kind: what happened.
        actor: the node that acted (this center or enterprise).
        subject: what it acted on (a report's ``message_id``, a dataset).
        origin: where it came from (the sending node).
        destination: where it went.
        detail: the reason (rejection, refusal rule) or a summary.
        at: ISO 8601 UTC time; stamped on append when empty.
    """

    kind: AuditKind
    actor: str
    subject: str
    origin: str = ""
    destination: str = ""
    detail: str = ""
    at: str = ""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """An event as written, with its sequence number and chain hashes."""

    seq: int
    event: AuditEvent
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class AuditVerification:
    """The result of ``AuditLog.verify``.

    Attributes:
        entries: entries checked.
        first_broken: sequence number of the first bad entry (None: the chain is intact).
        reason: what is wrong with it.
    """

    entries: int
    first_broken: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        """True when no entry was edited, inserted or removed."""
        return self.first_broken is None


_AUDIT_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS audit (
        seq INTEGER PRIMARY KEY, at TEXT NOT NULL, kind TEXT NOT NULL, actor TEXT NOT NULL,
        subject TEXT NOT NULL, origin TEXT NOT NULL, destination TEXT NOT NULL,
        detail TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS audit_at ON audit (at)",
    """CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
)

_COLUMNS: Final = "seq, at, kind, actor, subject, origin, destination, detail, prev_hash, hash"


def _entry_hash(seq: int, event: AuditEvent, prev_hash: str) -> str:
    # The platform's chain recipe (security.audit): one mechanism for every trail.
    fields = [
        seq,
        event.at,
        event.kind.value,
        event.actor,
        event.subject,
        event.origin,
        event.destination,
        event.detail,
    ]
    return chain_hash(prev_hash, fields)


def _row_entry(row: tuple[Any, ...]) -> AuditEntry:
    seq, at, kind, actor, subject, origin, destination, detail, prev_hash, digest = row
    event = AuditEvent(
        kind=AuditKind(kind),
        actor=actor,
        subject=subject,
        origin=origin,
        destination=destination,
        detail=detail,
        at=at,
    )
    return AuditEntry(seq=seq, event=event, prev_hash=prev_hash, hash=digest)


class AuditLog:
    """Append-only, hash-chained audit log in an SQLite file (see the module docstring).

    Every append is committed durably (WAL, ``synchronous=FULL``) before it returns. The
    connection is shared under a lock, so async callers may use ``asyncio.to_thread``.

    Args:
        path: database file, created if missing.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        for statement in _AUDIT_SCHEMA:
            self._db.execute(statement)

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(self, event: AuditEvent) -> AuditEntry:
        """Write ``event`` (stamped with the current UTC time if ``at`` is empty)."""
        if not event.at:
            event = dataclasses.replace(event, at=datetime.now(UTC).isoformat())
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                seq, prev = (1, GENESIS) if row is None else (row[0] + 1, row[1])
                entry = AuditEntry(seq, event, prev, _entry_hash(seq, event, prev))
                self._db.execute(
                    f"INSERT INTO audit ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608 - constant columns
                    (
                        seq,
                        event.at,
                        event.kind.value,
                        event.actor,
                        event.subject,
                        event.origin,
                        event.destination,
                        event.detail,
                        prev,
                        entry.hash,
                    ),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return entry

    def head(self) -> tuple[int, str]:
        """(sequence number, hash) of the last entry, ``(0, GENESIS)`` when empty: anchor it."""
        with self._lock:
            row = self._db.execute(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        return (0, GENESIS) if row is None else (row[0], row[1])

    def verify(self, *, expect_head: tuple[int, str] | None = None) -> AuditVerification:
        """Recompute the chain and report the first entry that does not match.

        Args:
            expect_head: a ``head()`` anchored earlier; the log must still contain it, which
                detects entries removed from the end.
        """
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM audit ORDER BY seq").fetchall()  # noqa: S608 - constant columns
        prev, expected_seq, count = GENESIS, 1, 0
        hashes: dict[int, str] = {}
        for row in rows:
            entry = _row_entry(row)
            count += 1
            if entry.seq != expected_seq:
                return AuditVerification(
                    count, expected_seq, f"entry {expected_seq} is missing (next is {entry.seq})"
                )
            if entry.prev_hash != prev:
                return AuditVerification(count, entry.seq, "link to the previous entry broken")
            if _entry_hash(entry.seq, entry.event, entry.prev_hash) != entry.hash:
                return AuditVerification(count, entry.seq, "entry content does not match its hash")
            hashes[entry.seq] = entry.hash
            prev, expected_seq = entry.hash, expected_seq + 1
        if expect_head is not None and expect_head[0] > 0:
            seq, digest = expect_head
            if hashes.get(seq) != digest:
                return AuditVerification(
                    count, seq, f"anchored entry {seq} is missing or differs (truncated log?)"
                )
        return AuditVerification(count)

    def entries(
        self, *, since: str | None = None, kind: AuditKind | None = None
    ) -> list[AuditEntry]:
        """Entries in order, optionally from ``since`` (ISO time, inclusive) and of one kind."""
        query = f"SELECT {_COLUMNS} FROM audit WHERE 1 = 1"  # noqa: S608 - constant columns
        args: list[str] = []
        if since is not None:
            query += " AND at >= ?"
            args.append(since)
        if kind is not None:
            query += " AND kind = ?"
            args.append(kind.value)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY seq", args).fetchall()
        return [_row_entry(row) for row in rows]

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
