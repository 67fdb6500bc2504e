"""Forwarding order: which buffered frame an uplink sends next, whatever its wire protocol.

Theory of operation
-------------------
Every frame is in the buffer before an uplink sees it (``ForwardBuffer.append`` returned its
sequence number). Two sources feed the sender:

- **live** frames, handed over as they are written (a bounded deque; when it overflows because
  the link is slower than the plant, the oldest live frames simply stay in the buffer), and
- the **backlog**: buffered frames from before (an outage, a restart), read oldest first.

While both have frames the sender alternates, so after an outage the backlog drains in order at
full speed and live data still goes out at once: a plant manager sees the present immediately and
the past fills in behind it. A frame is handed out at most once per connection: it is *in flight*
until the uplink says it is settled (acknowledged, or failed and left in the buffer), then *done*.
A backlog read may return a frame that is in flight while the read runs and settled by the time
the read returns (its deletion still queued behind the read): the done set is what keeps such a
frame from going out twice. A new connection restarts the backlog at the beginning of the
buffer: whatever was not acknowledged is sent again.

Both uplinks (the platform's JSON scheme in ``uplink``, Sparkplug B in ``sparkplug_uplink``) use
this order and offer the gateway the same small interface, ``GatewayUplink``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Final, Protocol

from tiangong.edge.buffer import ForwardBuffer, StoredFrame
from tiangong.edge.coordinator import LinkQuality

__all__ = ["LIVE_FRAMES", "ForwardQueue", "GatewayUplink"]

#: Live frames held in memory for immediate sending.
LIVE_FRAMES: Final = 256
#: Frames read from the buffer at a time while draining the backlog.
BACKLOG_BATCH: Final = 32


class ForwardQueue:
    """Hands out buffered frames in forwarding order: live and backlog, alternating.

    Args:
        buffer: the forward buffer the backlog is read from.
        live_frames: live frames held in memory at most.
    """

    def __init__(self, buffer: ForwardBuffer, *, live_frames: int = LIVE_FRAMES) -> None:
        self.buffer = buffer
        self._live_frames = live_frames
        self._live: deque[StoredFrame] = deque()
        self._live_seqs: set[int] = set()
        self._inflight: set[int] = set()
        # Settled on this connection. Kept while a backlog read could still return them: pruned
        # up to the cursor whenever the read backlog is used up (later reads start beyond it).
        self._done: set[int] = set()
        self._backlog: deque[StoredFrame] = deque()
        self._cursor = 0  # the backlog has been read up to this sequence number
        self._backlog_done = False  # the last read found nothing beyond the cursor
        self._prefer_live = True
        self._wake = asyncio.Event()

    def offer(self, frame: StoredFrame) -> None:
        """A frame was just buffered: hand it out soon."""
        if len(self._live) >= self._live_frames:
            dropped = self._live.popleft()
            self._live_seqs.discard(dropped.seq)
            # It stays in the buffer; make sure the backlog scan still finds it.
            self._cursor = min(self._cursor, dropped.seq - 1)
            self._backlog.clear()
            self._backlog_done = False
        self._live.append(frame)
        self._live_seqs.add(frame.seq)
        self._wake.set()

    def restart(self, *, requeue_live: bool = False) -> None:
        """A new connection: everything unacknowledged in the buffer is backlog again.

        Args:
            requeue_live: also hand the waiting live frames back to the backlog, so that
                everything buffered before this connection goes out strictly oldest first.
        """
        self._cursor = 0
        self._backlog.clear()
        self._backlog_done = False
        self._inflight.clear()
        self._done.clear()
        self._prefer_live = True
        if requeue_live:
            self._live.clear()
            self._live_seqs.clear()

    def settled(self, seq: int) -> None:
        """The frame's publish finished (acknowledged, or failed and left in the buffer).

        Either way it is not handed out again before the next ``restart``.
        """
        self._inflight.discard(seq)
        self._done.add(seq)

    @property
    def drained(self) -> bool:
        """Whether nothing waits: no live frame, and the backlog read to the buffer's end."""
        return not self._live and not self._backlog and self._backlog_done

    async def next_frame(self) -> StoredFrame:
        """The next frame to send (now in flight); waits until there is one."""
        while True:
            live = self._pop_live() if self._prefer_live else None
            frame = live if live is not None else await self._pop_backlog()
            if frame is None:
                frame = self._pop_live()
            if frame is not None:
                self._prefer_live = not self._prefer_live
                self._inflight.add(frame.seq)
                return frame
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._wake.wait()

    def _pop_live(self) -> StoredFrame | None:
        while self._live:
            frame = self._live.popleft()
            self._live_seqs.discard(frame.seq)
            if frame.seq not in self._inflight and frame.seq not in self._done:
                return frame
        return None

    def _sendable(self, seq: int) -> bool:
        return seq not in self._inflight and seq not in self._live_seqs and seq not in self._done

    async def _pop_backlog(self) -> StoredFrame | None:
        while True:
            while self._backlog:
                frame = self._backlog.popleft()
                if self._sendable(frame.seq):
                    return frame
            if self._done:
                cursor = self._cursor
                self._done = {seq for seq in self._done if seq > cursor}
            batch = await self.buffer.after(self._cursor, BACKLOG_BATCH)
            if not batch:
                self._backlog_done = True
                return None
            self._backlog_done = False
            self._cursor = batch[-1].seq
            self._backlog.extend(batch)


class GatewayUplink(Protocol):
    """What the gateway needs of an uplink, whichever protocol it speaks upstream."""

    sent_frames: int
    sent_points: int

    def offer(self, frame: StoredFrame) -> None:
        """A frame was just buffered: send it soon."""

    def status_changed(self) -> None:
        """A device's availability changed."""

    async def run(self) -> None:
        """Connect (retrying) and keep sending until cancelled."""

    @property
    def password(self) -> str | None:
        """The gateway's password (also the bearer token of its status endpoint)."""

    @property
    def rtt_ms(self) -> float | None:
        """Median publish-to-acknowledgement time of recent frames."""

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up."""

    @property
    def reconnects(self) -> int:
        """Reconnections since the uplink started."""

    def link_quality(self) -> LinkQuality:
        """The uplink's link figures (round trips, jitter, loss, reconnects)."""
