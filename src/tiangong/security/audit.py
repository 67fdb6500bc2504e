"""The audit trail: who did what, to what, when, from where, in an append-only hash chain.

One mechanism serves every trail in Tiangong: the platform's (API changes, logins, token use,
data reads, identifier writes), each identifier node's (every write it allows or refuses) and,
through the same two functions, the data centers' ``data.governance.AuditLog``.

The chain (what an auditor re-computes by hand)::

    fields   = [seq, at, actor, action, target, tenant_id, source, outcome, detail]
    body     = canonical_json(fields)
    hash     = hex(SHA-256(prev_hash as 64 ASCII hex digits ‖ body))
    prev_hash of entry 1 = "0" * 64 (GENESIS); of entry n = hash of entry n - 1

``canonical_json`` is JSON in UTF-8 with no whitespace (``","`` and ``":"`` separators),
object keys sorted, non-ASCII characters written as themselves (never escaped), ``null``
for a missing tenant. ``seq`` is an integer; ``at`` is the UTC time as stored, ISO 8601 with
microseconds and ``+00:00`` (``2025-03-01T08:00:00.123456+00:00``); ``detail`` is a JSON
object whose values are strings, integers, booleans, null, lists and objects (anything else is
recorded as its string form, so the encoding never depends on a float printer).

Serialising appends: every append reads the head and inserts the next entries in one
transaction. ``seq`` is the primary key, so two writers that read the same head cannot both
commit: the chain cannot fork. On PostgreSQL, where several platform processes share the
trail, the transaction first takes ``pg_advisory_xact_lock`` so writers queue instead of
conflicting; on SQLite the loser of a race gets a key conflict (or "database is locked") and
retries. Within a process, appends are group-committed: callers that arrive while a write is
in flight are written together in the next transaction.

Append-only: triggers refuse UPDATE, DELETE (and TRUNCATE on PostgreSQL). They stop mistakes,
not an administrator of the database, who can drop them; the chain is what exposes that.
Removing entries from the *end* leaves a shorter valid chain, which only an anchor kept
elsewhere can expose: with ``checkpoint`` set, the trail writes the head (seq, hash) to that
file after every append, and ``verify`` fails when the chain no longer contains it.

Token use is coalesced: ``note_token_use`` counts reads per token, and one ``token.use`` entry
per token and minute (with the count, the first and last time and the addresses) is written by
``flush_token_use``, so the trail shows every token used and when without a row per read.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tiangong.files import atomic_write
from tiangong.resource import AsyncResource
from tiangong.security.errors import SecurityError

__all__ = [
    "GENESIS",
    "AuditCheckpoint",
    "AuditEntry",
    "AuditError",
    "AuditTrail",
    "AuditUnavailableError",
    "AuditVerification",
    "Checkpoint",
    "Tamper",
    "canonical_json",
    "chain_hash",
]

_log = logging.getLogger(__name__)

#: ``prev_hash`` of the first entry.
GENESIS: Final = "0" * 64

#: Column limits; longer input is cut (before hashing, so what is stored is what is hashed).
_LIMITS: Final = {
    "actor": 200,
    "action": 200,
    "target": 500,
    "tenant_id": 64,
    "source": 100,
    "outcome": 40,
}
_MAX_DETAIL: Final = 8000
_BATCH: Final = 500
_PAGE: Final = 2000
_ATTEMPTS: Final = 12
_TOKEN_BUCKETS: Final = 10_000
_LOCK_KEY: Final = int.from_bytes(hashlib.sha256(b"tiangong.audit_trail").digest()[:8], "big") - (
    1 << 63
)


class AuditError(SecurityError):
    """Root of the audit trail's errors."""


class AuditUnavailableError(AuditError):
    """The trail could not record an entry (database down, locked for too long, disk full)."""


# -- the chain ------------------------------------------------------------------------------------


def canonical_json(value: object) -> bytes:
    """The canonical encoding hashed by the chain (see the module docstring)."""
    return json.dumps(
        value, ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False
    ).encode("utf-8")


def chain_hash(prev_hash: str, fields: Sequence[object]) -> str:
    """``hex(SHA-256(prev_hash ‖ canonical_json(fields)))``: an entry's hash."""
    return hashlib.sha256(prev_hash.encode("ascii") + canonical_json(list(fields))).hexdigest()


def _timestamp(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def _plain(value: object, depth: int = 0) -> object:
    """``value`` reduced to what the canonical encoding records exactly."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if depth < 8 and isinstance(value, Mapping):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if depth < 8 and isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [_plain(v, depth + 1) for v in items]
    return str(value)


def _detail(detail: Mapping[str, object] | None) -> dict[str, object]:
    plain = _plain(dict(detail or {}))
    assert isinstance(plain, dict)
    text = canonical_json(plain).decode("utf-8")
    if len(text) > _MAX_DETAIL:
        return {"truncated": text[:_MAX_DETAIL]}
    return plain


# -- records ---------------------------------------------------------------------------------------


class Tamper(StrEnum):
    """What ``verify`` found wrong."""

    EDITED = "edited"  # an entry's content does not match its hash
    MISSING = "missing"  # a sequence number is missing: entries removed
    REORDERED = "reordered"  # an entry does not link to its predecessor: moved or replaced
    TRUNCATED = "truncated"  # the checkpoint names an entry the trail no longer has


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One entry of the trail.

    Attributes:
        seq: position in the chain, from 1.
        at: when it was recorded (UTC).
        actor: who: a user or token name with its id (``ops-bot (tok_1a2b)``), an identifier
            administrator (``300:0.NA/88.100``), ``anonymous``.
        action: what: ``POST /api/v1/devices``, ``token.use``, ``handle.create``...
        target: what it acted on (path parameters, a handle).
        tenant_id: the tenant it concerns (``None``: the platform).
        source: where from: the client's address.
        outcome: ``ok``, an HTTP status, ``refused:<reason>``.
        detail: anything else, as plain JSON.
        prev_hash: the previous entry's hash.
        hash: this entry's hash (see the module docstring).
    """

    seq: int
    at: datetime
    actor: str
    action: str
    target: str
    tenant_id: str | None
    source: str
    outcome: str
    detail: Mapping[str, object]
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, object]:
        """The entry as plain JSON data."""
        return {
            "seq": self.seq,
            "at": _timestamp(self.at),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "tenant_id": self.tenant_id,
            "source": self.source,
            "outcome": self.outcome,
            "detail": dict(self.detail),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """An anchored head: the trail must still contain entry ``seq`` with ``hash``."""

    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class AuditVerification:
    """The state of a trail's chain.

    Attributes:
        entries: entries checked.
        head_seq: the last entry's seq (0 when empty).
        head_hash: its hash (``GENESIS`` when empty).
        first_broken: seq of the first bad entry (None: intact).
        problem: what is wrong with it.
        reason: the same in words, with what to do.
        checkpoint: the anchored head it was checked against, if any.
    """

    entries: int
    head_seq: int
    head_hash: str
    first_broken: int | None = None
    problem: Tamper | None = None
    reason: str = ""
    checkpoint: Checkpoint | None = None

    @property
    def ok(self) -> bool:
        """True when no entry was edited, removed, reordered or cut off."""
        return self.first_broken is None

    def to_dict(self) -> dict[str, object]:
        """As plain JSON data."""
        return {
            "ok": self.ok,
            "entries": self.entries,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "first_broken": self.first_broken,
            "problem": None if self.problem is None else self.problem.value,
            "reason": self.reason,
            "checkpoint": None
            if self.checkpoint is None
            else {"seq": self.checkpoint.seq, "hash": self.checkpoint.hash},
        }


class AuditCheckpoint:
    """The head of a trail anchored in a file outside its database.

    The file holds ``{"seq": n, "hash": "..."}``, replaced atomically and only ever moved
    forward. It detects entries removed from the end only as long as whoever removes them
    cannot also rewrite this file: keep it on another disk or copy it elsewhere (see
    docs/security.md).

    Args:
        path: the file (created on the first append).
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._seq = -1

    def read(self) -> Checkpoint | None:
        """The anchored head, or None when there is none yet.

        Raises:
            AuditError: the file exists but is not a checkpoint.
        """
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            checkpoint = Checkpoint(int(doc["seq"]), str(doc["hash"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise AuditError(f"unreadable audit checkpoint {self.path}: {exc}") from exc
        self._seq = max(self._seq, checkpoint.seq)
        return checkpoint

    def advance(self, seq: int, digest: str) -> None:
        """Anchor ``(seq, digest)`` unless a later head is already anchored."""
        if self._seq < 0:
            with contextlib.suppress(AuditError):
                self.read()
        if seq <= self._seq:
            return
        # Several node workers may anchor the same trail: each write has its own scratch file.
        line = json.dumps({"seq": seq, "hash": digest}) + "\n"
        atomic_write(self.path, line.encode("utf-8"), mode=0o600)
        self._seq = seq


# -- the trail -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Draft:
    at: str
    actor: str
    action: str
    target: str
    tenant_id: str | None
    source: str
    outcome: str
    detail: dict[str, object]
    done: asyncio.Future[AuditEntry]

    def fields(self, seq: int) -> list[object]:
        return [
            seq,
            self.at,
            self.actor,
            self.action,
            self.target,
            self.tenant_id,
            self.source,
            self.outcome,
            self.detail,
        ]


@dataclass(slots=True)
class _TokenUse:
    minute: datetime
    actor: str
    tenant_id: str | None
    role: str
    first: datetime
    last: datetime
    count: int = 0
    sources: set[str] = field(default_factory=set)


def _cut(name: str, value: str) -> str:
    return value[: _LIMITS[name]]


def _table(name: str) -> tuple[sa.MetaData, sa.Table]:
    metadata = sa.MetaData()
    table = sa.Table(
        name,
        metadata,
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("actor", sa.String(_LIMITS["actor"]), nullable=False),
        sa.Column("action", sa.String(_LIMITS["action"]), nullable=False),
        sa.Column("target", sa.String(_LIMITS["target"]), nullable=False),
        sa.Column("tenant_id", sa.String(_LIMITS["tenant_id"]), nullable=True),
        sa.Column("source", sa.String(_LIMITS["source"]), nullable=False),
        sa.Column("outcome", sa.String(_LIMITS["outcome"]), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Index(f"ix_{name}_tenant_seq", "tenant_id", "seq"),
    )
    # The table is created with seq as an explicit key: never an auto-increment, the chain
    # decides the next number.
    table.c.seq.autoincrement = False
    return metadata, table


def _sqlite_guards(name: str) -> list[str]:
    return [
        f"CREATE TRIGGER IF NOT EXISTS {name}_no_update BEFORE UPDATE ON {name} "
        "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END",
        f"CREATE TRIGGER IF NOT EXISTS {name}_no_delete BEFORE DELETE ON {name} "
        "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END",
    ]


def _postgres_guards(name: str) -> list[str]:
    function = f"{name}_append_only"
    return [
        f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION 'the audit trail is append-only'; END $$",
        f"CREATE OR REPLACE TRIGGER {name}_no_change BEFORE UPDATE OR DELETE ON {name} "
        f"FOR EACH ROW EXECUTE FUNCTION {function}()",
        f"CREATE OR REPLACE TRIGGER {name}_no_truncate BEFORE TRUNCATE ON {name} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()",
    ]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class AuditTrail(AsyncResource):
    """An append-only, hash-chained audit trail in a SQL database (SQLite or PostgreSQL).

    Args:
        engine: the database (the platform's metadata database, or a node's own SQLite file).
        checkpoint: a file to anchor the head in after every append (detects truncation).
        table: the table's name.
        timeout: seconds ``record`` keeps retrying a busy or failing database before it gives
            up with ``AuditUnavailableError``.
        clock: the time of entries and of token-use minutes (UTC; tests pass their own).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        checkpoint: Path | str | None = None,
        table: str = "audit_trail",
        timeout: float = 10.0,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if not table.isidentifier():
            raise ValueError(f"{table!r} is not a table name")
        self.engine = engine
        self.checkpoint = AuditCheckpoint(checkpoint) if checkpoint is not None else None
        self.timeout = timeout
        self.clock = clock
        self._metadata, self.table = _table(table)
        self._postgres = engine.dialect.name == "postgresql"
        self._pending: list[_Draft] = []
        self._lock = asyncio.Lock()
        self._writes: set[asyncio.Task[None]] = set()
        self._token_use: dict[str, _TokenUse] = {}
        self._token_ready: list[tuple[str, _TokenUse]] = []
        self._open = False
        self.recorded = 0
        self.failures = 0

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the table and its append-only guards if missing."""
        name = self.table.name
        async with self.engine.begin() as conn:
            if self._postgres:
                # Two processes starting together must not race on CREATE TABLE.
                await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK_KEY)))
            await conn.run_sync(self._metadata.create_all)
            guards = _postgres_guards(name) if self._postgres else _sqlite_guards(name)
            for statement in guards:
                await conn.execute(sa.text(statement))
        self._open = True

    async def close(self) -> None:
        """Write what token use was counted and wait for writes in flight."""
        if self._open:
            try:
                await self.flush_token_use(everything=True)
            except AuditError:
                _log.exception("audit: token use of the last minutes could not be recorded")
            if self._writes:
                await asyncio.gather(*self._writes, return_exceptions=True)
        self._open = False

    # -- recording -------------------------------------------------------------------------------

    async def record(
        self,
        *,
        actor: str,
        action: str,
        target: str = "",
        tenant_id: str | None = None,
        source: str = "",
        outcome: str = "ok",
        detail: Mapping[str, object] | None = None,
    ) -> AuditEntry:
        """Append an entry; returns it once it is committed.

        Raises:
            AuditUnavailableError: the database did not take it within ``timeout``.
        """
        draft = _Draft(
            at=_timestamp(self.clock()),
            actor=_cut("actor", actor),
            action=_cut("action", action),
            target=_cut("target", target),
            tenant_id=None if tenant_id is None else _cut("tenant_id", tenant_id),
            source=_cut("source", source),
            outcome=_cut("outcome", outcome),
            detail=_detail(detail),
            done=asyncio.get_running_loop().create_future(),
        )
        self._pending.append(draft)
        async with self._lock:
            while not draft.done.done():
                batch = self._pending[:_BATCH]
                del self._pending[:_BATCH]
                # The write resolves the batch's futures itself: if this caller is cancelled,
                # the entries of the others are still written.
                write = asyncio.create_task(self._write(batch), name="audit-append")
                self._writes.add(write)
                write.add_done_callback(self._writes.discard)
                await asyncio.shield(write)
        return await draft.done

    async def _write(self, batch: list[_Draft]) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                entries = await self._append_with_retries(batch)
        except BaseException as exc:
            # Whatever went wrong, every caller of the batch gets an answer (never a hang).
            self.failures += len(batch)
            error = AuditUnavailableError(f"the audit trail did not take the entry: {exc!r}")
            for draft in batch:
                if not draft.done.done():
                    draft.done.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            _log.error("audit: %d entries not recorded: %r", len(batch), exc)
            return
        self.recorded += len(entries)
        for draft, entry in zip(batch, entries, strict=True):
            if not draft.done.done():
                draft.done.set_result(entry)
        if self.checkpoint is not None and entries:
            last = entries[-1]
            try:
                await asyncio.to_thread(self.checkpoint.advance, last.seq, last.hash)
            except OSError:
                _log.exception("audit: checkpoint %s not written", self.checkpoint.path)

    async def _append_with_retries(self, batch: list[_Draft]) -> list[AuditEntry]:
        delay = 0.01
        for attempt in range(_ATTEMPTS):
            try:
                async with self.engine.begin() as conn:
                    return await self._append(conn, batch)
            except (IntegrityError, OperationalError):
                # Another writer took the same sequence number (or holds the SQLite lock):
                # read the new head and try again.
                if attempt == _ATTEMPTS - 1:
                    raise
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # noqa: S311 - jitter
                delay = min(delay * 2, 0.5)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _append(self, conn: AsyncConnection, batch: list[_Draft]) -> list[AuditEntry]:
        t = self.table
        if self._postgres:
            await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK_KEY)))
        head = (
            await conn.execute(sa.select(t.c.seq, t.c.hash).order_by(t.c.seq.desc()).limit(1))
        ).first()
        seq, prev = (0, GENESIS) if head is None else (int(head[0]), str(head[1]))
        rows: list[dict[str, Any]] = []
        entries: list[AuditEntry] = []
        for draft in batch:
            seq += 1
            digest = chain_hash(prev, draft.fields(seq))
            rows.append(
                {
                    "seq": seq,
                    "at": draft.at,
                    "actor": draft.actor,
                    "action": draft.action,
                    "target": draft.target,
                    "tenant_id": draft.tenant_id,
                    "source": draft.source,
                    "outcome": draft.outcome,
                    "detail": canonical_json(draft.detail).decode("utf-8"),
                    "prev_hash": prev,
                    "hash": digest,
                }
            )
            entries.append(
                AuditEntry(
                    seq=seq,
                    at=datetime.fromisoformat(draft.at),
                    actor=draft.actor,
                    action=draft.action,
                    target=draft.target,
                    tenant_id=draft.tenant_id,
                    source=draft.source,
                    outcome=draft.outcome,
                    detail=draft.detail,
                    prev_hash=prev,
                    hash=digest,
                )
            )
            prev = digest
        await conn.execute(sa.insert(t), rows)
        return entries

    # -- token use -------------------------------------------------------------------------------

    def note_token_use(
        self,
        *,
        token_id: str,
        actor: str,
        tenant_id: str | None,
        role: str = "",
        source: str = "",
    ) -> None:
        """Count one use of a token (never blocks; ``flush_token_use`` writes the counts).

        One ``token.use`` entry is written per token and minute in which it was used.
        """
        now = self.clock()
        minute = now.replace(second=0, microsecond=0)
        use = self._token_use.get(token_id)
        if use is not None and use.minute != minute:
            self._token_ready.append((token_id, self._token_use.pop(token_id)))
            use = None
        if use is None:
            if len(self._token_use) >= _TOKEN_BUCKETS:
                # Bounded memory: hand every bucket to the writer early rather than grow.
                self._token_ready.extend(self._token_use.items())
                self._token_use.clear()
            use = _TokenUse(minute, actor, tenant_id, role, first=now, last=now)
            self._token_use[token_id] = use
        use.count += 1
        use.last = now
        if len(use.sources) < 8 and source:
            use.sources.add(source)
        if len(self._token_ready) > 2 * _TOKEN_BUCKETS:
            dropped = len(self._token_ready) - 2 * _TOKEN_BUCKETS
            del self._token_ready[:dropped]
            _log.error("audit: %d token-use counts dropped (the trail is not writable)", dropped)

    async def flush_token_use(self, *, everything: bool = False) -> int:
        """Write the token use of past minutes (with ``everything``, the current one too).

        Returns:
            Entries written.

        Raises:
            AuditUnavailableError: the trail did not take them (they are kept for next time).
        """
        minute = self.clock().replace(second=0, microsecond=0)
        for token_id, use in list(self._token_use.items()):
            if everything or use.minute < minute:
                self._token_ready.append((token_id, self._token_use.pop(token_id)))
        ready, self._token_ready = self._token_ready, []
        written = 0
        try:
            for n, (token_id, use) in enumerate(ready):
                await self.record(
                    actor=use.actor,
                    action="token.use",
                    target=token_id,
                    tenant_id=use.tenant_id,
                    source=min(use.sources) if use.sources else "",
                    outcome="ok",
                    detail={
                        "minute": _timestamp(use.minute),
                        "count": use.count,
                        "first": _timestamp(use.first),
                        "last": _timestamp(use.last),
                        "sources": sorted(use.sources),
                        "role": use.role,
                    },
                )
                written = n + 1
        except AuditError:
            self._token_ready[:0] = ready[written:]
            raise
        return written

    # -- reading ---------------------------------------------------------------------------------

    def _entry(self, row: sa.Row[Any]) -> AuditEntry:
        m = row._mapping
        try:
            detail = json.loads(m["detail"])
        except ValueError:
            detail = {"unreadable": m["detail"]}
        return AuditEntry(
            seq=int(m["seq"]),
            at=datetime.fromisoformat(m["at"]),
            actor=m["actor"],
            action=m["action"],
            target=m["target"],
            tenant_id=m["tenant_id"],
            source=m["source"],
            outcome=m["outcome"],
            detail=detail if isinstance(detail, dict) else {"value": detail},
            prev_hash=m["prev_hash"],
            hash=m["hash"],
        )

    async def entries(
        self,
        *,
        tenant_id: str | None = None,
        limit: int = 100,
        before_seq: int | None = None,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
    ) -> list[AuditEntry]:
        """Entries, newest first.

        Args:
            tenant_id: only this tenant's entries (``None``: every entry).
            limit: at most this many (1..1000).
            before_seq: only entries before this one (paging backwards).
            actor: only entries whose actor contains this text.
            action: only entries whose action starts with this text.
            since: only entries recorded at or after this time.
        """
        t = self.table
        query = sa.select(t).order_by(t.c.seq.desc()).limit(max(1, min(limit, 1000)))
        if tenant_id is not None:
            query = query.where(t.c.tenant_id == tenant_id)
        if before_seq is not None:
            query = query.where(t.c.seq < before_seq)
        if actor:
            query = query.where(t.c.actor.contains(actor, autoescape=True))
        if action:
            query = query.where(t.c.action.startswith(action, autoescape=True))
        if since is not None:
            query = query.where(t.c.at >= _timestamp(since))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [self._entry(r) for r in rows]

    async def head(self) -> Checkpoint:
        """The last entry's (seq, hash); ``(0, GENESIS)`` when the trail is empty."""
        t = self.table
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(sa.select(t.c.seq, t.c.hash).order_by(t.c.seq.desc()).limit(1))
            ).first()
        return Checkpoint(0, GENESIS) if row is None else Checkpoint(int(row[0]), str(row[1]))

    async def verify(self, *, expect: Checkpoint | None = None) -> AuditVerification:
        """Recompute the chain and report the first entry that does not match.

        Checks, in order, per entry: its sequence number follows the previous one (else
        ``missing``); its content matches its hash (``edited``); it links to the previous
        entry's hash (``reordered``: moved, or the previous entry replaced with a recomputed
        hash); and, at the end, that the checkpoint's entry is still there with the same
        hash (``truncated``, or ``edited`` when the entry is there but differs).

        Args:
            expect: a head anchored elsewhere to check (default: the checkpoint file's).

        Raises:
            AuditError: the checkpoint file is unreadable.
        """
        anchor = expect
        if anchor is None and self.checkpoint is not None:
            anchor = await asyncio.to_thread(self.checkpoint.read)
        t = self.table
        prev, expected, count = GENESIS, 1, 0
        anchored_hash: str | None = None

        def broken(seq: int, problem: Tamper, reason: str) -> AuditVerification:
            return AuditVerification(count, expected - 1, prev, seq, problem, reason, anchor)

        async with self.engine.connect() as conn:
            while True:
                page = (
                    await conn.execute(
                        sa.select(t).where(t.c.seq >= expected).order_by(t.c.seq).limit(_PAGE)
                    )
                ).all()
                if not page:
                    break
                for row in page:
                    m = row._mapping
                    seq = int(m["seq"])
                    count += 1
                    if seq != expected:
                        gap = f"{expected}" if seq == expected + 1 else f"{expected}..{seq - 1}"
                        return broken(
                            expected,
                            Tamper.MISSING,
                            f"entries {gap} are missing (the next one is {seq}): removed",
                        )
                    try:
                        detail = json.loads(m["detail"])
                    except ValueError:
                        detail = m["detail"]
                    fields = [
                        seq, m["at"], m["actor"], m["action"], m["target"], m["tenant_id"],
                        m["source"], m["outcome"], detail,
                    ]  # fmt: skip
                    if chain_hash(m["prev_hash"], fields) != m["hash"]:
                        return broken(
                            seq, Tamper.EDITED, f"entry {seq} does not match its hash: edited"
                        )
                    if m["prev_hash"] != prev:
                        return broken(
                            seq,
                            Tamper.REORDERED,
                            f"entry {seq} does not link to entry {seq - 1}: entries were"
                            f" reordered, or entry {seq - 1} was replaced with a recomputed hash",
                        )
                    if anchor is not None and seq == anchor.seq:
                        anchored_hash = m["hash"]
                    prev, expected = m["hash"], expected + 1
        result = AuditVerification(count, expected - 1, prev, checkpoint=anchor)
        if anchor is None or anchor.seq == 0:
            return result
        if anchor.seq >= expected:
            return AuditVerification(
                count,
                expected - 1,
                prev,
                expected,
                Tamper.TRUNCATED,
                f"the checkpoint names entry {anchor.seq} but the trail ends at {expected - 1}:"
                f" entries {expected}..{anchor.seq} were removed from the end",
                anchor,
            )
        if anchored_hash != anchor.hash:
            return AuditVerification(
                count,
                expected - 1,
                prev,
                anchor.seq,
                Tamper.EDITED,
                f"entry {anchor.seq} differs from the checkpoint: the trail was rewritten"
                " from there (hashes recomputed)",
                anchor,
            )
        return result
