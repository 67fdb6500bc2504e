"""Reports through a local outbox: the JetStream semantics in one SQLite file, no server.

``tiangong up`` runs its enterprise, sub-centers and national center in one process; they talk
through this outbox with the same contract as over JetStream, so the centers' code is the same:

* ``publish`` commits the message (``synchronous=FULL``) before it returns; a second publish of
  the same ``message_id`` to the same destination is dropped (for ever, not only in a window).
* A durable consumer's settled messages (acked or termed) are recorded in the same file, so a
  restarted process resumes where it stopped; a delivery that was handed out and not settled
  (the process died, or ``ack_wait`` passed) is delivered again with a higher ``attempt``.
* Consumers in other processes on the same file see new messages within ``poll_interval``;
  one durable consumer should be read by one process at a time, as with the embedded stack.

SQLite calls run on a worker thread (``asyncio.to_thread``) behind one lock.

Encryption at rest (``seal_key``): the outbox file holds every enterprise's figures until the
centers have read them, often on a shared disk and in backups. With a 16-byte SM4 key, each
message is sealed with SM4-GCM (``tiangong.security.gm.seal``) before it is written and opened
when it is delivered; the destination and message id are the associated data, so a sealed
message copied to another row or destination does not open either. A message that does not
open (altered, cut, written without the key, or sealed when this process has no key) is never
delivered: it is logged, counted in ``tampered`` and settled as poison (``term``) for that
consumer. Turn sealing on for an outbox that is empty or drained: messages written before are
not sealed and are refused like any other unsealed message.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tiangong.data.errors import TransportError
from tiangong.data.transport.base import parse_destination
from tiangong.resource import AsyncResource
from tiangong.security.gm import SM4_KEY_BYTES, SealError, is_sealed, open_sealed, seal

__all__ = ["OutboxTransport"]

T = TypeVar("T")

_log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    destination TEXT NOT NULL,
    message_id TEXT NOT NULL,
    data BLOB NOT NULL,
    published_at REAL NOT NULL,
    UNIQUE (destination, message_id)
);
CREATE TABLE IF NOT EXISTS settled (
    durable TEXT NOT NULL,
    seq INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    settled_at REAL NOT NULL,
    PRIMARY KEY (durable, seq)
) WITHOUT ROWID;
"""


@dataclass(slots=True)
class _Consumer:
    """In-memory state of one durable consumer: what is out, what waits for a nak delay."""

    durable: str
    destination: str
    inflight: dict[int, float] = field(default_factory=dict)  # seq → redeliver after
    not_before: dict[int, float] = field(default_factory=dict)  # seq → nak'ed until
    attempts: dict[int, int] = field(default_factory=dict)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(slots=True)
class _OutboxDelivery:
    """A message of the outbox as a ``Delivery``."""

    transport: OutboxTransport
    consumer: _Consumer
    seq: int
    data: bytes
    message_id: str
    attempt: int
    settled: bool = False

    async def ack(self) -> None:
        """Record the message as processed for this durable consumer."""
        await self._settle("ack")

    async def nak(self, delay: float | None = None) -> None:
        """Deliver again, after ``delay`` seconds."""
        if self.settled:
            return
        self.settled = True
        self.consumer.inflight.pop(self.seq, None)
        self.consumer.not_before[self.seq] = time.monotonic() + (delay or 0.0)
        self.consumer.wakeup.set()

    async def term(self) -> None:
        """Record the message as poison: never deliver it again."""
        await self._settle("term")

    async def _settle(self, outcome: str) -> None:
        if self.settled:
            return
        self.settled = True
        await self.transport._settle(self.consumer, self.seq, outcome)


class OutboxTransport(AsyncResource):
    """The report transport in a local SQLite file (the embedded path of ``tiangong up``).

    Args:
        path: The SQLite file, or a directory to hold ``outbox.sqlite3``.
        ack_wait: Seconds before an unsettled delivery is delivered again.
        max_ack_pending: Deliveries a consumer may hold unsettled (backpressure).
        batch: Messages read per query.
        poll_interval: Seconds between looks for messages written by other processes.
        seal_key: A 16-byte SM4 key: seal every message at rest (module docstring).
    """

    def __init__(
        self,
        *,
        path: Path | str,
        ack_wait: float = 30.0,
        max_ack_pending: int = 1024,
        batch: int = 256,
        poll_interval: float = 0.25,
        seal_key: bytes | None = None,
    ) -> None:
        if ack_wait <= 0 or poll_interval <= 0 or max_ack_pending < 1 or batch < 1:
            raise TransportError("ack_wait, poll_interval, max_ack_pending, batch must be > 0")
        if seal_key is not None and len(seal_key) != SM4_KEY_BYTES:
            raise TransportError(f"the outbox seal key is {SM4_KEY_BYTES} bytes (SM4)")
        self._seal_key = seal_key
        #: Messages refused because they did not open (see the module docstring).
        self.tampered = 0
        path = Path(path)
        self.path = path / "outbox.sqlite3" if path.is_dir() or not path.suffix else path
        self.ack_wait = ack_wait
        self.max_ack_pending = max_ack_pending
        self.batch = batch
        self.poll_interval = poll_interval
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._consumers: dict[str, _Consumer] = {}

    async def open(self) -> None:
        """Open (or create) the outbox database.

        Raises:
            TransportError: the file cannot be opened.
        """

        def open_db() -> sqlite3.Connection:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=10000")
            db.executescript(_SCHEMA)
            return db

        try:
            self._db = await asyncio.to_thread(open_db)
        except sqlite3.Error as exc:
            raise TransportError(f"cannot open the outbox {self.path}: {exc}") from exc

    async def close(self) -> None:
        """Close the database; what was not acknowledged is delivered again after a restart."""
        db, self._db = self._db, None
        if db is not None:
            await asyncio.to_thread(self._locked, db.close)

    def _locked(self, fn: Callable[[], T]) -> T:
        with self._lock:
            return fn()

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        db = self._db
        if db is None:
            raise TransportError("the outbox is not open")
        try:
            return await asyncio.to_thread(self._locked, lambda: fn(db))
        except sqlite3.Error as exc:
            raise TransportError(f"outbox {self.path}: {exc}") from exc

    # -- the ReportTransport contract --------------------------------------------------------

    async def publish(self, destination: str, data: bytes, *, message_id: str) -> None:
        """Commit ``data`` for ``destination`` unless ``message_id`` is already there."""
        parse_destination(destination)
        if self._seal_key is not None:
            data = seal(self._seal_key, data, associated_data=_bound_to(destination, message_id))

        def insert(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR IGNORE INTO messages (destination, message_id, data, published_at)"
                " VALUES (?, ?, ?, ?)",
                (destination, message_id, data, time.time()),
            )

        await self._run(insert)
        for consumer in self._consumers.values():
            if consumer.destination == destination:
                consumer.wakeup.set()

    async def deliveries(self, destination: str, *, durable: str) -> AsyncIterator[_OutboxDelivery]:
        """Unsettled messages of ``destination`` for ``durable``, in order, then new ones."""
        parse_destination(destination)
        consumer = self._consumers.get(durable)
        if consumer is None or consumer.destination != destination:
            consumer = self._consumers[durable] = _Consumer(durable, destination)
        while True:
            consumer.wakeup.clear()
            now = time.monotonic()
            for seq, until in list(consumer.inflight.items()):
                if until <= now:  # handed out, never settled within ack_wait
                    del consumer.inflight[seq]
            room = self.max_ack_pending - len(consumer.inflight)
            rows = await self._unsettled(consumer, limit=self.batch + len(consumer.inflight))
            handed = 0
            for seq, message_id, data in rows:
                if room <= 0:
                    break
                if seq in consumer.inflight or consumer.not_before.get(seq, 0.0) > now:
                    continue
                consumer.not_before.pop(seq, None)
                plain = self._open(destination, message_id, data)
                if plain is None:
                    await self._settle(consumer, seq, "term")
                    continue
                consumer.inflight[seq] = time.monotonic() + self.ack_wait
                attempt = consumer.attempts[seq] = consumer.attempts.get(seq, 0) + 1
                room -= 1
                handed += 1
                yield _OutboxDelivery(self, consumer, seq, plain, message_id, attempt)
            if handed == 0:
                try:
                    async with asyncio.timeout(self.poll_interval):
                        await consumer.wakeup.wait()
                except TimeoutError:
                    pass

    def _open(self, destination: str, message_id: str, data: bytes) -> bytes | None:
        """The message as published, or None when it does not open (counted, logged)."""
        if self._seal_key is None:
            if not is_sealed(data):
                return data
            problem = "it is sealed and this outbox has no seal key"
        else:
            try:
                return open_sealed(
                    self._seal_key, data, associated_data=_bound_to(destination, message_id)
                )
            except SealError as exc:
                problem = str(exc)
        self.tampered += 1
        _log.error(
            "outbox %s: message %s for %s refused and never delivered: %s",
            self.path,
            message_id,
            destination,
            problem,
        )
        return None

    async def _unsettled(self, consumer: _Consumer, *, limit: int) -> list[tuple[int, str, bytes]]:
        def query(db: sqlite3.Connection) -> list[tuple[int, str, bytes]]:
            return db.execute(
                "SELECT seq, message_id, data FROM messages AS m WHERE destination = ?"
                " AND NOT EXISTS (SELECT 1 FROM settled AS s WHERE s.durable = ?"
                " AND s.seq = m.seq) ORDER BY seq LIMIT ?",
                (consumer.destination, consumer.durable, limit),
            ).fetchall()

        return await self._run(query)

    async def _settle(self, consumer: _Consumer, seq: int, outcome: str) -> None:
        def record(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR REPLACE INTO settled (durable, seq, outcome, settled_at)"
                " VALUES (?, ?, ?, ?)",
                (consumer.durable, seq, outcome, time.time()),
            )

        await self._run(record)
        consumer.inflight.pop(seq, None)
        consumer.attempts.pop(seq, None)
        consumer.not_before.pop(seq, None)
        consumer.wakeup.set()

    async def backlog(self, destination: str, *, durable: str) -> int:
        """Messages of ``destination`` that ``durable`` has not settled."""
        parse_destination(destination)

        def count(db: sqlite3.Connection) -> int:
            row = db.execute(
                "SELECT count(*) FROM messages AS m WHERE destination = ? AND NOT EXISTS"
                " (SELECT 1 FROM settled AS s WHERE s.durable = ? AND s.seq = m.seq)",
                (destination, durable),
            ).fetchone()
            return int(row[0])

        return await self._run(count)


def _bound_to(destination: str, message_id: str) -> bytes:
    """The associated data of a sealed message: where it goes and what it is."""
    return f"tiangong-outbox\x00{destination}\x00{message_id}".encode()
