"""Handle store on PostgreSQL (a node that runs a database server, or several node processes).

Strategy
--------
Schema: the Handle.Net server's PostgreSQL tables, ``handles(handle bytea, idx int4, type bytea,
data bytea, ttl_type int2, ttl, timestamp, refs text, admin_read, admin_write, pub_read,
pub_write bool)`` and ``nas(na bytea)``, with the same column names and types, so that tools
written against that schema read ours. Differences: ``ttl`` and ``timestamp`` are ``int8``
(absolute TTLs and timestamps pass 2038), and each table has a key column,
``handle_key``/``na_key``, ``text COLLATE "C"``: the case-folded name (``values.handle_key``)
that lookups, the primary key ``(handle_key, idx)`` and paging go by. The "C" collation orders
keys by code point, as SQLite and Python do, whatever the database's locale.

Writes: one transaction each. A write first takes a transaction-scoped advisory lock on its
handle key; row locks alone could not stop two creates of one absent handle with different
indexes from both succeeding and merging into one record. The counter and handle count live in
``handle_store_state``, spread over 16 rows chosen by key so that writes to different handles
do not queue on one row lock until commit; readers sum the rows in one snapshot, which keeps the
sum monotonic and consistent with the data (a sequence would be neither: ``nextval`` is visible
before the write commits).

Bulk load: one ``COPY ... FROM STDIN (FORMAT BINARY)`` in one transaction, under a ``SHARE ROW
EXCLUSIVE`` table lock that holds other writers off (their records could otherwise merge with
loaded ones) while reads go on; ``ANALYZE`` follows, so that plans fit the new size at once.

Reads: ``get`` calls that arrive together share one ``handle_key = ANY(...)`` query, up to 128
handles, with at most one query in flight per pooled connection (``_read_batches``).

Errors: psycopg's are translated at this boundary into ``HandleStoreError`` (a unique-key
violation, which only a bulk load can meet, into ``HandleExistsError``).
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, Final

import psycopg
import psycopg.errors
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from tiangong.identity.errors import HandleExistsError, HandleStoreError
from tiangong.identity.handle.values import HandleRecord, HandleValue, handle_key
from tiangong.identity.store.base import (
    PERMISSION_BITS,
    HandleStore,
    RecordChange,
    Row,
    StoredHandle,
    WriteKind,
    check_handle,
    check_values,
    encode_refs,
    na_handle,
    plan_write,
    prefix_bounds,
    prefix_of_na,
    record_from_rows,
)

__all__ = ["PostgresHandleStore"]

_STRIPES: Final = 16
#: Most handles one batched read asks for (``PostgresHandleStore.get``).
_GET_BATCH: Final = 128
#: First key of the two-key advisory locks on handles (any constant: "hdl" in ASCII).
_LOCK_SPACE: Final = 0x68646C

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS handles (
        handle_key text COLLATE "C" NOT NULL, handle bytea NOT NULL, idx int4 NOT NULL,
        type bytea NOT NULL, data bytea NOT NULL, ttl_type int2 NOT NULL, ttl int8 NOT NULL,
        timestamp int8 NOT NULL, refs text NOT NULL, admin_read bool NOT NULL,
        admin_write bool NOT NULL, pub_read bool NOT NULL, pub_write bool NOT NULL,
        PRIMARY KEY (handle_key, idx))""",
    """CREATE TABLE IF NOT EXISTS nas (
        na_key text COLLATE "C" PRIMARY KEY, na bytea NOT NULL)""",
    # Updated by every write: free space on each page lets the updates be HOT.
    """CREATE TABLE IF NOT EXISTS handle_store_state (
        stripe int2 PRIMARY KEY, changes int8 NOT NULL, handles int8 NOT NULL)
        WITH (fillfactor = 50)""",
    # One row per stripe (_STRIPES of them).
    """INSERT INTO handle_store_state (stripe, changes, handles)
        SELECT s, 0, 0 FROM generate_series(0, 15) s ON CONFLICT DO NOTHING""",
)
#: Serializes schema creation between node processes starting together.
_SCHEMA_LOCK: Final = (_LOCK_SPACE, 0)

_SELECT_RECORD: Final = (
    "SELECT convert_from(handle, 'UTF8'), idx, convert_from(type, 'UTF8'), data, ttl, ttl_type,"
    " timestamp, admin_read::int * 8 + admin_write::int * 4 + pub_read::int * 2"
    " + pub_write::int, refs FROM handles WHERE handle_key = %s ORDER BY idx"
)
_SELECT_RECORDS: Final = (
    "SELECT handle_key, convert_from(handle, 'UTF8'), idx, convert_from(type, 'UTF8'), data,"
    " ttl, ttl_type, timestamp, admin_read::int * 8 + admin_write::int * 4 + pub_read::int * 2"
    " + pub_write::int, refs FROM handles WHERE handle_key = ANY(%s) ORDER BY handle_key, idx"
)
_INSERT_VALUE: Final = (
    "INSERT INTO handles (handle_key, handle, idx, type, data, ttl_type, ttl, timestamp, refs,"
    " admin_read, admin_write, pub_read, pub_write)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_COPY_VALUES: Final = (
    "COPY handles (handle_key, handle, idx, type, data, ttl_type, ttl, timestamp, refs,"
    " admin_read, admin_write, pub_read, pub_write) FROM STDIN (FORMAT BINARY)"
)
_COPY_TYPES: Final = (
    "text",
    "bytea",
    "int4",
    "bytea",
    "bytea",
    "int2",
    "int8",
    "int8",
    "text",
    "bool",
    "bool",
    "bool",
    "bool",
)
_BUMP: Final = (
    "UPDATE handle_store_state SET changes = changes + 1, handles = handles + %s WHERE stripe = %s"
)

PgRow = tuple[Any, ...]


def _stripe(key: str) -> int:
    return zlib.crc32(key.encode()) % _STRIPES


def _value_rows(key: str, handle: str, values: Iterable[HandleValue]) -> list[PgRow]:
    name = handle.encode()
    return [
        (
            key,
            name,
            v.index,
            v.type.encode(),
            v.data,
            int(v.ttl_type),
            v.ttl,
            v.timestamp,
            encode_refs(v.references),
            *PERMISSION_BITS[v.permissions],
        )
        for v in values
    ]


class PostgresHandleStore(HandleStore):
    """The PostgreSQL store.

    Args:
        dsn: libpq connection string or URL.
        min_connections: connections kept open.
        max_connections: the most connections open at once.
        timeout: seconds to wait for a connection (at ``open`` and for each operation).
    """

    name = "postgres"

    def __init__(
        self,
        *,
        dsn: str,
        min_connections: int = 2,
        max_connections: int = 8,
        timeout: float = 10.0,
    ) -> None:
        if not 1 <= min_connections <= max_connections:
            raise ValueError("need 1 <= min_connections <= max_connections")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.dsn = dsn
        self.min_connections = min_connections
        self.max_connections = max_connections
        self.timeout = timeout
        self._pool: AsyncConnectionPool[AsyncConnection[Any]] | None = None
        #: ``get`` calls waiting for a batch: (handle key, where the record goes).
        self._wanted: list[tuple[str, asyncio.Future[HandleRecord | None]]] = []
        self._readers: set[asyncio.Task[None]] = set()
        #: Queries the batched reads made (fewer than reads under load).
        self.read_queries = 0

    # -- plumbing ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _connection(self, action: str) -> AsyncIterator[AsyncConnection[Any]]:
        """A pooled connection (autocommit), with psycopg's errors translated."""
        pool = self._pool
        if pool is None:
            raise HandleStoreError("the handle store is not open")
        try:
            async with pool.connection() as conn:
                yield conn
        except psycopg.errors.UniqueViolation as exc:
            raise HandleExistsError(f"cannot {action}: a handle exists: {exc}") from exc
        except psycopg.Error as exc:
            raise HandleStoreError(f"PostgreSQL cannot {action}: {exc}") from exc

    async def _fetch(self, action: str, query: str, params: Sequence[object]) -> list[PgRow]:
        async with self._connection(action) as conn:
            # Binary results: bytea arrives as bytes without hex decoding.
            cur = conn.cursor(binary=True)
            await cur.execute(query, params)
            return await cur.fetchall()

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
        async with self._connection(f"{kind.value} {handle!r}") as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_SPACE, key))
            cur = await conn.execute(
                "SELECT convert_from(handle, 'UTF8'), idx FROM handles WHERE handle_key = %s",
                (key,),
            )
            rows = await cur.fetchall()
            stored = (
                StoredHandle(handle=rows[0][0], indexes=frozenset(r[1] for r in rows))
                if rows
                else None
            )
            change = plan_write(kind, handle, stored, values, wanted)
            if change.empty:
                return change
            if change.delete_all:
                await conn.execute("DELETE FROM handles WHERE handle_key = %s", (key,))
            elif change.delete:
                await conn.execute(
                    "DELETE FROM handles WHERE handle_key = %s AND idx = ANY(%s)",
                    (key, list(change.delete)),
                )
            if change.insert:
                async with conn.cursor() as insert:
                    await insert.executemany(
                        _INSERT_VALUE,
                        _value_rows(key, change.handle, change.insert),
                    )
            # Last, so that the stripe's row lock is held only until the commit.
            await conn.execute(_BUMP, (change.handles_delta, _stripe(key)))
            return change

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and create the schema if needed."""
        if self._pool is not None:
            raise HandleStoreError("the handle store is already open")
        pool: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
            self.dsn,
            min_size=self.min_connections,
            max_size=self.max_connections,
            timeout=self.timeout,
            kwargs={"autocommit": True},
            open=False,
        )
        try:
            await pool.open(wait=True, timeout=self.timeout)
            async with pool.connection() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", _SCHEMA_LOCK)
                for statement in _SCHEMA:
                    await conn.execute(statement)
        except (psycopg.Error, OSError) as exc:
            await pool.close()
            raise HandleStoreError(f"PostgreSQL cannot open the handle store: {exc}") from exc
        self._pool = pool

    async def close(self) -> None:
        """Close the pool; reads still waiting fail with ``HandleStoreError``."""
        for reader in list(self._readers):
            reader.cancel()
        wanted, self._wanted = self._wanted, []
        for _, future in wanted:
            if not future.done():
                future.set_exception(HandleStoreError("the handle store is closed"))
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    # -- reads -------------------------------------------------------------------------------

    async def get(self, handle: str) -> HandleRecord | None:
        """The record of ``handle``, values sorted by index.

        Reads that arrive together share one query (see ``_read_batches``): under load a node
        resolves dozens of handles per round trip instead of paying the pool and the protocol
        once per handle; alone, a read is one query as before.
        """
        future: asyncio.Future[HandleRecord | None] = asyncio.get_running_loop().create_future()
        self._wanted.append((handle_key(handle), future))
        if len(self._readers) < self.max_connections:
            self._readers.add(asyncio.create_task(self._read_batches(), name="handle-store-read"))
        return await future

    async def _read_batches(self) -> None:
        """Answer waiting ``get`` calls, up to ``_GET_BATCH`` handles per query, until none wait.

        At most ``max_connections`` of these run at once (one connection each); a read that
        finds them all busy waits for the next batch. Written here because psycopg has no
        batching of independent queries, and with a query per handle (pool hand-over, protocol
        round, result decoding) a node on PostgreSQL spent about 160 µs of CPU per uncached
        answer: 6,050 answers/s on a whole core (``bench/id_resolution.py --postgres``).
        """
        try:
            await asyncio.sleep(0)  # let the reads of this turn of the loop join the batch
            await self._read_while_wanted()
        finally:
            # Gone in the same step as the last look at ``_wanted`` (a done callback would come
            # a turn later): a read that arrives after it starts a reader of its own.
            self._readers.discard(asyncio.current_task())

    async def _read_while_wanted(self) -> None:
        while self._wanted:
            batch = self._wanted[:_GET_BATCH]
            del self._wanted[:_GET_BATCH]
            batch = [(key, future) for key, future in batch if not future.done()]
            if not batch:
                continue
            self.read_queries += 1
            try:
                keys = list({key for key, _ in batch})
                # One handle: the equality query, whose plan needs no statistics.
                if len(keys) == 1:
                    found = {keys[0]: await self._fetch("resolve a handle", _SELECT_RECORD, keys)}
                else:
                    found = {}
                    for row in await self._fetch("resolve handles", _SELECT_RECORDS, (keys,)):
                        found.setdefault(row[0], []).append(row[1:])
            except BaseException as exc:
                failure = (
                    exc
                    if isinstance(exc, Exception)
                    else HandleStoreError("the handle store closed during the read")
                )
                for _, future in batch:
                    if not future.done():
                        future.set_exception(failure)
                if not isinstance(exc, Exception):
                    raise
                continue
            for key, future in batch:
                if not future.done():
                    future.set_result(record_from_rows(found.get(key, [])))

    async def get_many(self, handles: Sequence[str]) -> list[HandleRecord | None]:
        """The records of ``handles`` in order (one query)."""
        if not handles:
            return []
        keys = [handle_key(h) for h in handles]
        rows = await self._fetch("resolve handles", _SELECT_RECORDS, (list(set(keys)),))
        grouped: dict[str, list[Row]] = {}
        for row in rows:
            grouped.setdefault(row[0], []).append(row[1:])
        return [record_from_rows(grouped.get(k, [])) for k in keys]

    async def exists(self, handle: str) -> bool:
        """Whether ``handle`` has a record."""
        rows = await self._fetch(
            "look a handle up",
            "SELECT 1 FROM handles WHERE handle_key = %s LIMIT 1",
            (handle_key(handle),),
        )
        return bool(rows)

    async def list_handles(
        self, prefix: str, *, after: str | None = None, limit: int = 1000
    ) -> list[str]:
        """Handles under ``prefix/`` ordered by key, after ``after``."""
        if limit <= 0:
            return []
        low, high = prefix_bounds(prefix)
        start = handle_key(after) if after is not None else ""
        rows = await self._fetch(
            "list handles",
            "SELECT DISTINCT ON (handle_key) convert_from(handle, 'UTF8') FROM handles"
            " WHERE handle_key >= %s AND handle_key > %s AND handle_key < %s"
            " ORDER BY handle_key LIMIT %s",
            (low, start, high, limit),
        )
        return [str(r[0]) for r in rows]

    async def _state(self) -> tuple[int, int]:
        rows = await self._fetch(
            "read the store state",
            "SELECT sum(changes)::int8, sum(handles)::int8 FROM handle_store_state",
            (),
        )
        changes, handles = rows[0]
        return int(changes or 0), int(handles or 0)

    async def count(self) -> int:
        """How many handles are stored."""
        return (await self._state())[1]

    async def change_counter(self) -> int:
        """Committed changes so far (all node processes sharing the database)."""
        return (await self._state())[0]

    # -- writes ------------------------------------------------------------------------------

    async def bulk_load(
        self,
        records: Iterable[HandleRecord],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Load new records with one COPY in one transaction, then refresh the statistics."""
        loaded = 0
        async with self._connection("bulk load handles") as conn, conn.transaction():
            await conn.execute("LOCK TABLE handles IN SHARE ROW EXCLUSIVE MODE")
            async with (
                conn.cursor() as cur,
                cur.copy(_COPY_VALUES) as copy,
            ):
                copy.set_types(list(_COPY_TYPES))
                for record in records:
                    handle = check_handle(record.handle)
                    check_values(record.values)
                    for row in _value_rows(handle_key(handle), handle, record.values):
                        await copy.write_row(row)
                    loaded += 1
                    if progress is not None and loaded % 10_000 == 0:
                        progress(loaded)
            if loaded:
                await conn.execute(
                    "UPDATE handle_store_state SET changes = changes + 1,"
                    " handles = handles + %s WHERE stripe = 0",
                    (loaded,),
                )
        if loaded:
            # Fresh statistics now, not when autovacuum gets to it: with the old ones the
            # planner takes a batched read's ``handle_key = ANY(...)`` for a large share of the
            # table and scans all of it instead of the primary key (seen with EXPLAIN ANALYZE).
            async with self._connection("analyze the loaded handles") as conn:
                await conn.execute("ANALYZE handles")
        if progress is not None and loaded % 10_000:
            progress(loaded)
        return loaded

    # -- homing ------------------------------------------------------------------------------

    async def home_prefix(self, prefix: str) -> bool:
        """Home ``prefix`` here; False if it already was."""
        na = na_handle(prefix)
        key = handle_key(na)
        async with self._connection("home a prefix") as conn, conn.transaction():
            cur = await conn.execute(
                "INSERT INTO nas (na_key, na) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (key, na.encode()),
            )
            if cur.rowcount <= 0:
                return False
            await conn.execute(_BUMP, (0, _stripe(key)))
            return True

    async def unhome_prefix(self, prefix: str) -> bool:
        """Unhome ``prefix``; False if it was not homed."""
        key = handle_key(na_handle(prefix))
        async with self._connection("unhome a prefix") as conn, conn.transaction():
            cur = await conn.execute("DELETE FROM nas WHERE na_key = %s", (key,))
            if cur.rowcount <= 0:
                return False
            await conn.execute(_BUMP, (0, _stripe(key)))
            return True

    async def homed_prefixes(self) -> list[str]:
        """Prefixes homed here, ordered by key."""
        rows = await self._fetch(
            "list homed prefixes", "SELECT convert_from(na, 'UTF8') FROM nas ORDER BY na_key", ()
        )
        return [prefix_of_na(str(r[0])) for r in rows]

    async def is_homed(self, prefix: str) -> bool:
        """Whether ``prefix`` is homed here."""
        rows = await self._fetch(
            "look a prefix up",
            "SELECT 1 FROM nas WHERE na_key = %s",
            (handle_key(na_handle(prefix)),),
        )
        return bool(rows)
