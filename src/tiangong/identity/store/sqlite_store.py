"""Embedded handle store on SQLite (a node without a database server).

Strategy
--------
Schema: one row per value in ``handles``, primary key ``(handle_key, idx)``, ``WITHOUT ROWID``
so that a resolution is one descent of one B-tree and a handle's values sit together in its
leaves. Measured once against a plain rowid table with the same key (1,000,000 records of two
values, loaded in key order with ``executemany``): the rowid table, which needs its primary-key
index *and* the table, loaded 1.5x slower (65,000 against 96,000 records/s), was 25% bigger
(309 against 248 MB), and answered point lookups in 15.3 against 14.2 µs (p50). Handle values
are small (a URL, an HS_ADMIN of 23 bytes), the case ``WITHOUT ROWID`` is meant for; a big
value (a certificate) overflows into pages of its own.

Threading, measured on this project's 2-core machine at 1,000,000 records: a point lookup called
directly on the event loop took 13-14 µs (p50) and 43-65 µs (p99), 61,000 lookups/s on one
core; the same lookup sent to a worker thread with ``run_in_executor`` took 51 µs (p50) and
500-670 µs (p99), and 64 concurrent callers reached only 10,000-11,000 lookups/s: the thread
hop and its wake-ups cost several times the lookup. So **reads run directly on the event loop**
on a read-only connection of their own (``bench/id_store.py`` measures them). A read
therefore never yields to other tasks; two cases that would hold the loop longer are bounded:
``get_many`` yields every few dozen handles, and a read that finds the database busy (in WAL
mode, only during recovery after a crash) is retried on the writer thread, not waited for on
the loop. The read connection maps the file (``mmap_mib``), which saves a system call per page
not in SQLite's own cache (12.6 against 14.2 µs).

**Writes run on one writer thread** with a connection of their own, one at a time, each in one
``BEGIN IMMEDIATE`` transaction: they commit with an fsync (``synchronous=FULL``: a registration
that was acknowledged survives a power cut), which must never block the loop, and running them
in order on one thread is the single writer SQLite wants. WAL lets the loop's reads go on during
a write and see each write once it has committed. ``bulk_load`` runs on the same thread in one
transaction, so nothing else can write in the middle of it.

``store_state`` keeps the change counter and the handle count, updated in each write's
transaction; counting the distinct keys of a million handles would take a scan.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final, TypeVar

from tiangong.identity.errors import HandleExistsError, HandleStoreError
from tiangong.identity.handle.values import HandleRecord, HandleValue, handle_key
from tiangong.identity.store.base import (
    PERMISSION_BITS,
    HandleStore,
    RecordChange,
    Row,
    StoredHandle,
    WouldBlock,
    WriteKind,
    check_handle,
    check_values,
    encode_refs,
    na_handle,
    plan_write,
    prefix_bounds,
    prefix_of_na,
    public_answer,
    record_from_rows,
)

__all__ = ["SqliteHandleStore"]

_log = logging.getLogger(__name__)

T = TypeVar("T")

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS handles (
        handle_key TEXT NOT NULL, handle TEXT NOT NULL, idx INTEGER NOT NULL,
        type TEXT NOT NULL, data BLOB NOT NULL, ttl_type INTEGER NOT NULL,
        ttl INTEGER NOT NULL, timestamp INTEGER NOT NULL, refs TEXT NOT NULL,
        admin_read INTEGER NOT NULL, admin_write INTEGER NOT NULL,
        pub_read INTEGER NOT NULL, pub_write INTEGER NOT NULL,
        PRIMARY KEY (handle_key, idx)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS nas (
        na_key TEXT NOT NULL PRIMARY KEY, na TEXT NOT NULL) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS store_state (
        id INTEGER PRIMARY KEY CHECK (id = 0), changes INTEGER NOT NULL,
        handles INTEGER NOT NULL)""",
    "INSERT OR IGNORE INTO store_state (id, changes, handles) VALUES (0, 0, 0)",
    # The anonymous answer of each handle, encoded (``public_answer``), written by every write
    # in its own transaction: a cache miss reads one blob instead of a row per value.
    """CREATE TABLE IF NOT EXISTS answers (
        handle_key TEXT NOT NULL PRIMARY KEY, body BLOB NOT NULL) WITHOUT ROWID""",
)
#: ``PRAGMA user_version`` of a database whose ``answers`` are complete. A database from before
#: them is filled once when it is opened.
_ANSWERS_VERSION: Final = 1

_SELECT_RECORD: Final = (
    "SELECT handle, idx, type, data, ttl, ttl_type, timestamp,"
    " admin_read * 8 + admin_write * 4 + pub_read * 2 + pub_write, refs"
    " FROM handles WHERE handle_key = ? ORDER BY idx"
)
_INSERT_VALUE: Final = (
    "INSERT INTO handles (handle_key, handle, idx, type, data, ttl_type, ttl, timestamp, refs,"
    " admin_read, admin_write, pub_read, pub_write) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_BUMP: Final = "UPDATE store_state SET changes = changes + 1, handles = handles + ? WHERE id = 0"
_SELECT_ANSWER: Final = "SELECT body FROM answers WHERE handle_key = ?"
_PUT_ANSWER: Final = "INSERT OR REPLACE INTO answers (handle_key, body) VALUES (?, ?)"
_SELECT_ALL: Final = (
    "SELECT handle_key, handle, idx, type, data, ttl, ttl_type, timestamp,"
    " admin_read * 8 + admin_write * 4 + pub_read * 2 + pub_write, refs FROM handles"
)

#: Handles per step of ``get_many`` before it lets other tasks run (about 1 ms of lookups).
_GET_MANY_STEP: Final = 64
#: Records per ``executemany`` of a bulk load (and per progress report); each chunk is sorted
#: by key first. Measured at 1,000,000 hashed (random-order) names: sorting chunks of this size
#: and a cache that holds the whole B-tree (``bulk_cache_mib``) insert at 103,000 records/s,
#: against 66,000 unsorted with the same cache and 55,000 unsorted with a 64 MiB cache.
_BULK_CHUNK: Final = 50_000

_SQLITE_BUSY: Final = 5
_SQLITE_LOCKED: Final = 6

SqliteRow = tuple[object, ...]


def _value_rows(key: str, handle: str, values: Iterable[HandleValue]) -> list[SqliteRow]:
    return [
        (
            key,
            handle,
            v.index,
            v.type,
            v.data,
            int(v.ttl_type),
            v.ttl,
            v.timestamp,
            encode_refs(v.references),
            *PERMISSION_BITS[v.permissions],
        )
        for v in values
    ]


def _in_transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn`` in one write transaction: committed if it returns, rolled back if it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn)
        conn.execute("COMMIT")
    except BaseException:
        # SQLite may have rolled back already (a full disk, an I/O error).
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _stored(conn: sqlite3.Connection, key: str) -> StoredHandle | None:
    rows = conn.execute("SELECT handle, idx FROM handles WHERE handle_key = ?", (key,)).fetchall()
    if not rows:
        return None
    return StoredHandle(handle=rows[0][0], indexes=frozenset(r[1] for r in rows))


def _apply(conn: sqlite3.Connection, key: str, change: RecordChange) -> None:
    if change.delete_all:
        conn.execute("DELETE FROM handles WHERE handle_key = ?", (key,))
    elif change.delete:
        conn.executemany(
            "DELETE FROM handles WHERE handle_key = ? AND idx = ?",
            [(key, index) for index in change.delete],
        )
    if change.insert:
        conn.executemany(_INSERT_VALUE, _value_rows(key, change.handle, change.insert))
    _refresh_answer(conn, key)
    conn.execute(_BUMP, (change.handles_delta,))


def _refresh_answer(conn: sqlite3.Connection, key: str) -> None:
    """Re-encode the anonymous answer of ``key`` from its rows (inside the write)."""
    record = record_from_rows(_fetch_record(conn, key))
    body = None if record is None else public_answer(record.handle, record.values)
    if body is None:
        conn.execute("DELETE FROM answers WHERE handle_key = ?", (key,))
    else:
        conn.execute(_PUT_ANSWER, (key, body))


def _fill_answers(conn: sqlite3.Connection) -> int:
    """Encode every handle's answer (a database from before ``answers``); how many."""
    conn.execute("DELETE FROM answers")
    filled = 0
    batch: list[tuple[str, bytes]] = []
    rows = conn.execute(f"{_SELECT_ALL} ORDER BY handle_key, idx")
    for key, group in itertools.groupby(rows, key=lambda r: r[0]):
        record = record_from_rows([r[1:] for r in group])
        assert record is not None  # a group has rows
        body = public_answer(record.handle, record.values)
        if body is not None:
            batch.append((key, body))
        if len(batch) >= _BULK_CHUNK:
            filled += len(batch)
            conn.executemany(_PUT_ANSWER, batch)
            batch.clear()
    filled += len(batch)
    conn.executemany(_PUT_ANSWER, batch)
    return filled


class SqliteHandleStore(HandleStore):
    """The embedded store: one SQLite database file in WAL mode.

    Args:
        path: the database file (created with its directory if missing).
        cache_mib: page cache of each connection.
        mmap_mib: how much of the file the read connection maps into memory (0: none); reads
            of mapped pages skip a system call each.
        busy_timeout: how long a write waits for another process's write to finish.
        bulk_cache_mib: page cache of the writer during ``bulk_load`` (given back afterwards).
    """

    name = "sqlite"

    def __init__(
        self,
        *,
        path: Path | str,
        cache_mib: int = 64,
        mmap_mib: int = 1024,
        busy_timeout: float = 5.0,
        bulk_cache_mib: int = 512,
    ) -> None:
        if str(path) == ":memory:" or str(path).startswith("file:"):
            # The reader and the writer are two connections: they must open the same file.
            raise ValueError("SqliteHandleStore needs a file path")
        if cache_mib < 1 or mmap_mib < 0 or busy_timeout < 0:
            raise ValueError("cache_mib must be >= 1; mmap_mib and busy_timeout >= 0")
        self.path = Path(path)
        self.cache_mib = cache_mib
        self.mmap_mib = mmap_mib
        self.busy_timeout = busy_timeout
        self.bulk_cache_mib = bulk_cache_mib
        self._reader: sqlite3.Connection | None = None
        self._writer_conn: sqlite3.Connection | None = None
        self._writer: ThreadPoolExecutor | None = None

    # -- plumbing ----------------------------------------------------------------------------

    def _connect(self, *, timeout: float) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; writes say BEGIN IMMEDIATE themselves,
        # and each read statement is its own snapshot of committed data.
        conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        conn.execute(f"PRAGMA cache_size = -{self.cache_mib * 1024}")
        return conn

    def _open_writer(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect(timeout=self.busy_timeout)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            # A bulk load grows the WAL to the size of what it loaded; truncate it afterwards.
            conn.execute("PRAGMA journal_size_limit = 67108864")
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                conn.execute(statement)
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version < _ANSWERS_VERSION:
                filled = _fill_answers(conn)
                if filled:
                    _log.info(
                        "handle store %s: encoded the answers of %d handles", self.path, filled
                    )
                conn.execute(f"PRAGMA user_version = {_ANSWERS_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        self._writer_conn = conn

    def _close_writer(self) -> None:
        if self._writer_conn is not None:
            self._writer_conn.close()
            self._writer_conn = None

    def _run_on_writer(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._writer_conn
        if conn is None:
            raise HandleStoreError("the handle store is not open")
        try:
            return fn(conn)
        except sqlite3.Error as exc:
            raise HandleStoreError(f"SQLite failed on {self.path}: {exc}") from exc

    async def _on_writer(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._writer is None:
            raise HandleStoreError("the handle store is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self._run_on_writer, fn)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._reader
        if conn is None:
            raise HandleStoreError("the handle store is not open")
        try:
            return fn(conn)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF not in {_SQLITE_BUSY, _SQLITE_LOCKED}:
                raise HandleStoreError(f"SQLite failed on {self.path}: {exc}") from exc
        except sqlite3.Error as exc:
            raise HandleStoreError(f"SQLite failed on {self.path}: {exc}") from exc
        # Busy (WAL recovery after a crash): wait for it on the writer thread, not the loop.
        return await self._on_writer(fn)

    async def _write(
        self,
        kind: WriteKind,
        handle: str,
        values: Sequence[HandleValue] = (),
        indexes: Iterable[int] = (),
    ) -> RecordChange:
        check_handle(handle)
        key = handle_key(handle)
        wanted = tuple(indexes)

        def run(conn: sqlite3.Connection) -> RecordChange:
            change = plan_write(kind, handle, _stored(conn, key), values, wanted)
            if not change.empty:
                _apply(conn, key, change)
            return change

        return await self._on_writer(lambda conn: _in_transaction(conn, run))

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Open (and create) the database."""
        if self._writer is not None:
            raise HandleStoreError("the handle store is already open")
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="handle-store-writer")
        try:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._writer, self._open_writer)
            # The reader is made here, on the loop's thread: it is only ever used from there.
            reader = self._connect(timeout=0)
            reader.execute("PRAGMA query_only = 1")
            reader.execute(f"PRAGMA mmap_size = {self.mmap_mib * 1024 * 1024}")
        except sqlite3.Error as exc:
            await self.close()
            raise HandleStoreError(f"SQLite cannot open {self.path}: {exc}") from exc
        except BaseException:
            await self.close()
            raise
        self._reader = reader

    async def close(self) -> None:
        """Close both connections."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        writer, self._writer = self._writer, None
        if writer is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(writer, self._close_writer)
            writer.shutdown(wait=False)

    # -- reads -------------------------------------------------------------------------------

    async def get(self, handle: str) -> HandleRecord | None:
        """The record of ``handle``, values sorted by index."""
        key = handle_key(handle)
        return await self._read(lambda c: record_from_rows(_fetch_record(c, key)))

    def get_now(self, handle: str) -> HandleRecord | None:
        """``get`` without awaiting: the read runs on the caller's thread at once.

        Raises:
            WouldBlock: the database is busy (WAL recovery); use ``get`` instead.
        """
        key = handle_key(handle)
        return self._read_now(lambda conn: record_from_rows(_fetch_record(conn, key)))

    def public_answer_now(self, handle: str) -> bytes | None:
        """The encoded anonymous answer of ``handle`` (one row), read at once.

        Raises:
            WouldBlock: the database is busy (WAL recovery); use the full path instead.
        """
        key = handle_key(handle)
        row = self._read_now(lambda conn: conn.execute(_SELECT_ANSWER, (key,)).fetchone())
        return None if row is None else bytes(row[0])

    def _read_now(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run the read ``fn`` on the loop's own connection at once (busy: ``WouldBlock``)."""
        conn = self._reader
        if conn is None:
            raise HandleStoreError("the handle store is not open")
        try:
            return fn(conn)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF in {_SQLITE_BUSY, _SQLITE_LOCKED}:
                raise WouldBlock(str(exc)) from exc
            raise HandleStoreError(f"SQLite failed on {self.path}: {exc}") from exc
        except sqlite3.Error as exc:
            raise HandleStoreError(f"SQLite failed on {self.path}: {exc}") from exc

    async def get_many(self, handles: Sequence[str]) -> list[HandleRecord | None]:
        """The records of ``handles`` in order."""
        records: list[HandleRecord | None] = []
        for start in range(0, len(handles), _GET_MANY_STEP):
            if start:
                await asyncio.sleep(0)
            keys = [handle_key(h) for h in handles[start : start + _GET_MANY_STEP]]
            records.extend(await self._read(functools.partial(_fetch_records, keys=keys)))
        return records

    async def exists(self, handle: str) -> bool:
        """Whether ``handle`` has a record."""
        key = handle_key(handle)
        return await self._read(
            lambda c: (
                c.execute("SELECT 1 FROM handles WHERE handle_key = ? LIMIT 1", (key,)).fetchone()
                is not None
            )
        )

    async def list_handles(
        self, prefix: str, *, after: str | None = None, limit: int = 1000
    ) -> list[str]:
        """Handles under ``prefix/`` ordered by key, after ``after``."""
        if limit <= 0:
            return []
        low, high = prefix_bounds(prefix)
        start = handle_key(after) if after is not None else ""

        def run(conn: sqlite3.Connection) -> list[str]:
            # GROUP BY follows the primary key's order and stops at LIMIT: one range scan.
            rows = conn.execute(
                "SELECT handle FROM handles WHERE handle_key >= ? AND handle_key > ?"
                " AND handle_key < ? GROUP BY handle_key ORDER BY handle_key LIMIT ?",
                (low, start, high, limit),
            ).fetchall()
            return [str(r[0]) for r in rows]

        return await self._read(run)

    async def count(self) -> int:
        """How many handles are stored."""
        return await self._read(lambda c: _state(c)[1])

    async def change_counter(self) -> int:
        """Committed changes so far."""
        return await self._read(lambda c: _state(c)[0])

    # -- writes ------------------------------------------------------------------------------

    async def bulk_load(
        self,
        records: Iterable[HandleRecord],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Load new records in one transaction (iterated on the writer thread)."""
        loop = asyncio.get_running_loop()

        def load(conn: sqlite3.Connection) -> int:
            loaded = 0
            it = iter(records)
            while chunk := list(itertools.islice(it, _BULK_CHUNK)):
                rows: list[SqliteRow] = []
                answers: list[tuple[str, bytes]] = []
                for record in chunk:
                    handle = check_handle(record.handle)
                    check_values(record.values)
                    key = handle_key(handle)
                    rows.extend(_value_rows(key, handle, record.values))
                    body = public_answer(handle, record.values)
                    if body is not None:
                        answers.append((key, body))
                # Key order: consecutive inserts land on the same leaf pages (key, then idx:
                # a row's first elements).
                rows.sort()
                answers.sort()
                try:
                    conn.executemany(_INSERT_VALUE, rows)
                    # Plain INSERT: a handle that exists already has an answer and fails here
                    # too, as its rows would have.
                    conn.executemany(
                        "INSERT INTO answers (handle_key, body) VALUES (?, ?)", answers
                    )
                except sqlite3.IntegrityError as exc:
                    raise HandleExistsError(
                        f"bulk load: a handle among records {loaded + 1}-{loaded + len(chunk)}"
                        " exists or appears twice; nothing was loaded"
                    ) from exc
                loaded += len(chunk)
                if progress is not None:
                    # On the loop, as the caller expects; these run before the await ends.
                    loop.call_soon_threadsafe(progress, loaded)
            if loaded:
                conn.execute(
                    "UPDATE store_state SET changes = changes + 1, handles = handles + ?"
                    " WHERE id = 0",
                    (loaded,),
                )
            return loaded

        def run(conn: sqlite3.Connection) -> int:
            # A cache that holds the B-tree being filled: random keys touch every leaf page.
            conn.execute(f"PRAGMA cache_size = -{max(self.bulk_cache_mib, self.cache_mib) * 1024}")
            try:
                loaded = _in_transaction(conn, load)
            finally:
                conn.execute(f"PRAGMA cache_size = -{self.cache_mib * 1024}")
            # Move the load into the database file now rather than leave every read to look
            # through a WAL the size of the load.
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return loaded

        return await self._on_writer(run)

    # -- homing ------------------------------------------------------------------------------

    async def home_prefix(self, prefix: str) -> bool:
        """Home ``prefix`` here; False if it already was."""
        na = na_handle(prefix)

        def run(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "INSERT OR IGNORE INTO nas (na_key, na) VALUES (?, ?)", (handle_key(na), na)
            )
            if cur.rowcount <= 0:
                return False
            conn.execute(_BUMP, (0,))
            return True

        return await self._on_writer(lambda conn: _in_transaction(conn, run))

    async def unhome_prefix(self, prefix: str) -> bool:
        """Unhome ``prefix``; False if it was not homed."""
        key = handle_key(na_handle(prefix))

        def run(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("DELETE FROM nas WHERE na_key = ?", (key,))
            if cur.rowcount <= 0:
                return False
            conn.execute(_BUMP, (0,))
            return True

        return await self._on_writer(lambda conn: _in_transaction(conn, run))

    async def homed_prefixes(self) -> list[str]:
        """Prefixes homed here, ordered by key."""
        rows = await self._read(
            lambda c: c.execute("SELECT na FROM nas ORDER BY na_key").fetchall()
        )
        return [prefix_of_na(str(r[0])) for r in rows]

    async def is_homed(self, prefix: str) -> bool:
        """Whether ``prefix`` is homed here."""
        key = handle_key(na_handle(prefix))
        return await self._read(
            lambda c: c.execute("SELECT 1 FROM nas WHERE na_key = ?", (key,)).fetchone() is not None
        )


def _fetch_record(conn: sqlite3.Connection, key: str) -> list[Row]:
    rows: list[Row] = conn.execute(_SELECT_RECORD, (key,)).fetchall()
    return rows


def _fetch_records(conn: sqlite3.Connection, keys: Sequence[str]) -> list[HandleRecord | None]:
    return [record_from_rows(_fetch_record(conn, key)) for key in keys]


def _state(conn: sqlite3.Connection) -> tuple[int, int]:
    row = conn.execute("SELECT changes, handles FROM store_state WHERE id = 0").fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)
