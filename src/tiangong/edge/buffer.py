"""The store-and-forward buffer: every frame is on disk before it is sent.

A frame is appended in its own committed transaction (SQLite, WAL journal, ``synchronous=FULL``)
before the uplink may publish it, and deleted only after the broker acknowledged it. A gateway
killed at any moment therefore restarts with every frame it had not delivered, in order; a frame
delivered just before the kill may be sent again, which the platform recognises by its digest.

Bounded by size. When ``max_bytes`` is reached, the overflow policy decides: ``drop_oldest``
(default: the plant's newest state matters most) deletes the oldest frames, ``drop_newest`` refuses
new ones. Either way dropped frames and points are counted, logged, and reported upstream in the
gateway's telemetry, never silent.

Why SQLite and not a hand-written log: it gives atomic appends, crash recovery and ordered
scans for free, and at one row per frame (thousands of points each) it writes far faster than
the gateway needs.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from tiangong.edge.errors import BufferError as EdgeBufferError
from tiangong.edge.frames import Frame

__all__ = ["BufferStats", "ForwardBuffer", "StoredFrame"]

_log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StoredFrame:
    """A frame waiting in the buffer."""

    seq: int
    channel: str
    payload: bytes
    points: int
    first_ts_ms: int


@dataclass(frozen=True, slots=True)
class BufferStats:
    """What the buffer holds and what it lost.

    Attributes:
        frames: frames waiting.
        points: points waiting.
        bytes: payload bytes waiting.
        oldest_ts_ms: sample time of the oldest waiting point (``None`` when empty).
        dropped_frames: frames dropped by the overflow policy since start.
        dropped_points: points dropped by the overflow policy since start.
    """

    frames: int
    points: int
    bytes: int
    oldest_ts_ms: int | None
    dropped_frames: int
    dropped_points: int


class ForwardBuffer:
    """A durable, ordered, bounded queue of frames.

    Args:
        path: the SQLite file.
        max_bytes: the most payload bytes kept.
        overflow: ``drop_oldest`` or ``drop_newest``.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        overflow: Literal["drop_oldest", "drop_newest"] = "drop_oldest",
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.overflow = overflow
        self._conn: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-buffer")
        self._frames = 0
        self._points = 0
        self._bytes = 0
        self.dropped_frames = 0
        self.dropped_points = 0

    async def _run(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._thread, fn)
        except sqlite3.Error as exc:
            raise EdgeBufferError(f"forward buffer {self.path}: {exc}") from exc

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise EdgeBufferError("the forward buffer is not open")
        return self._conn

    async def open(self) -> None:
        """Open the file, creating it, and count what it holds from a previous run."""

        def _open() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS frames (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                " channel TEXT NOT NULL, created_ms INTEGER NOT NULL, first_ts_ms INTEGER NOT NULL,"
                " points INTEGER NOT NULL, size INTEGER NOT NULL, payload BLOB NOT NULL)"
            )
            row = conn.execute(
                "SELECT count(*), coalesce(sum(points), 0), coalesce(sum(size), 0) FROM frames"
            ).fetchone()
            self._frames, self._points, self._bytes = int(row[0]), int(row[1]), int(row[2])
            self._conn = conn

        await self._run(_open)
        if self._frames:
            _log.info(
                "forward buffer: %d frames (%d points) from the last run to send",
                self._frames,
                self._points,
            )

    async def close(self) -> None:
        """Close the file."""

        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await self._run(_close)
        self._thread.shutdown(wait=True)

    async def append(self, frame: Frame) -> int | None:
        """Store a frame durably; returns its sequence number (``None``: dropped, buffer full)."""
        size = len(frame.payload)

        def _append() -> int | None:
            db = self._db()
            # Events (alarms, the overflow report itself) are few and small: they are kept
            # even when drop_newest refuses data.
            full = self._bytes + size > self.max_bytes
            if self.overflow == "drop_newest" and full and frame.channel != "events":
                self.dropped_frames += 1
                self.dropped_points += frame.points
                return None
            cursor = db.execute(
                "INSERT INTO frames (channel, created_ms, first_ts_ms, points, size, payload)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    frame.channel,
                    int(time.time() * 1000),
                    frame.first_ts_ms,
                    frame.points,
                    size,
                    frame.payload,
                ),
            )
            self._frames += 1
            self._points += frame.points
            self._bytes += size
            if self.overflow == "drop_oldest":
                while self._bytes > self.max_bytes and self._frames > 1:
                    self._drop_oldest(db)
            return int(cursor.lastrowid or 0)

        seq = await self._run(_append)
        if seq is None:
            _log.warning("forward buffer full (%d bytes): newest frame dropped", self._bytes)
        return seq

    def _drop_oldest(self, db: sqlite3.Connection) -> None:
        # Telemetry goes first; events (alarms, overflow reports) only when nothing else is left.
        oldest = "SELECT seq, points, size FROM frames {} ORDER BY seq LIMIT 1"
        row = (
            db.execute(oldest.format("WHERE channel != 'events'")).fetchone()
            or db.execute(oldest.format("")).fetchone()
        )
        if row is None:
            return
        db.execute("DELETE FROM frames WHERE seq = ?", (row[0],))
        self._frames -= 1
        self._points -= int(row[1])
        self._bytes -= int(row[2])
        self.dropped_frames += 1
        self.dropped_points += int(row[1])
        _log.warning("forward buffer full: oldest frame (%d points) dropped", row[1])

    async def after(self, seq: int, limit: int) -> list[StoredFrame]:
        """Frames with a sequence number above ``seq``, oldest first."""

        def _read() -> list[StoredFrame]:
            rows = (
                self._db()
                .execute(
                    "SELECT seq, channel, payload, points, first_ts_ms FROM frames WHERE seq > ?"
                    " ORDER BY seq LIMIT ?",
                    (seq, limit),
                )
                .fetchall()
            )
            return [
                StoredFrame(int(r[0]), str(r[1]), bytes(r[2]), int(r[3]), int(r[4])) for r in rows
            ]

        return await self._run(_read)

    async def ack(self, seqs: Sequence[int]) -> None:
        """Delete delivered frames."""
        if not seqs:
            return

        def _ack() -> None:
            db = self._db()
            db.execute("BEGIN")
            for seq in seqs:
                row = db.execute("SELECT points, size FROM frames WHERE seq = ?", (seq,)).fetchone()
                if row is None:
                    continue  # already gone (dropped on overflow)
                db.execute("DELETE FROM frames WHERE seq = ?", (seq,))
                self._frames -= 1
                self._points -= int(row[0])
                self._bytes -= int(row[1])
            db.execute("COMMIT")

        await self._run(_ack)

    async def stats(self) -> BufferStats:
        """What the buffer holds now."""

        def _oldest() -> int | None:
            row = self._db().execute("SELECT min(first_ts_ms) FROM frames").fetchone()
            return None if row is None or row[0] is None else int(row[0])

        oldest = await self._run(_oldest) if self._frames else None
        return BufferStats(
            frames=self._frames,
            points=self._points,
            bytes=self._bytes,
            oldest_ts_ms=oldest,
            dropped_frames=self.dropped_frames,
            dropped_points=self.dropped_points,
        )

    @property
    def frames(self) -> int:
        """Frames waiting (without touching the disk)."""
        return self._frames

    @property
    def points(self) -> int:
        """Points waiting (without touching the disk)."""
        return self._points
