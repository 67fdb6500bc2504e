"""Link figures of one link: round trips, their jitter, failed attempts and reconnections.

The same figures describe a device's link (each read is an attempt) and the gateway's uplink
(each frame publish and each connection attempt is one): median round-trip time, jitter as the
mean absolute difference between consecutive round trips (RFC 3550's idea without its
smoothing), and loss as the share of the last ``WINDOW`` attempts that failed.
"""

from __future__ import annotations

import itertools
import statistics
from collections import deque
from typing import Final

from tiangong.edge.coordinator import LinkQuality

__all__ = ["WINDOW", "LinkMeter"]

#: Attempts the figures are computed over.
WINDOW: Final = 100


class LinkMeter:
    """Records attempts over one link and says its ``LinkQuality``."""

    def __init__(self, window: int = WINDOW) -> None:
        self._rtts: deque[float] = deque(maxlen=window)
        self._outcomes: deque[bool] = deque(maxlen=window)
        self.failures = 0  # since the start, beyond the window

    def succeeded(self, rtt_ms: float) -> None:
        """An attempt that got its answer after ``rtt_ms``."""
        self._rtts.append(rtt_ms)
        self._outcomes.append(True)

    def failed(self) -> None:
        """An attempt that got no answer."""
        self._outcomes.append(False)
        self.failures += 1

    @property
    def rtt_ms(self) -> float | None:
        """Median round trip of recent successful attempts."""
        return statistics.median(self._rtts) if self._rtts else None

    def quality(self, reconnects: int) -> LinkQuality:
        """The figures now, with the reconnections the owner counted."""
        rtts = list(self._rtts)
        outcomes = list(self._outcomes)
        jitter = (
            statistics.fmean(abs(b - a) for a, b in itertools.pairwise(rtts))
            if len(rtts) > 1
            else None
        )
        return LinkQuality(
            rtt_ms=statistics.median(rtts) if rtts else None,
            jitter_ms=jitter,
            loss_pct=100.0 * outcomes.count(False) / len(outcomes) if outcomes else 0.0,
            reconnects=reconnects,
        )
