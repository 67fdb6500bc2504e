"""The report transport's contract, shared by JetStream and the embedded outbox.

A **destination** names a center as ``<level>.<center id>`` (``regional.east``,
``industry.C38``, ``national.cn``); a center consumes its own destination through a **durable**
consumer whose position survives restarts of the center and of the transport. Delivery is at
least once: a report that is not acked (the center crashed, ``nak``) comes again, and the
transport de-duplicates publishes by ``message_id`` within a window. Reports are idempotent
above that (the ledger keeps the highest revision), so the effect is exactly once.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

from tiangong.data.errors import TransportError
from tiangong.data.model import Level

__all__ = [
    "Delivery",
    "ReportTransport",
    "destination_for",
    "parse_destination",
]

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def destination_for(level: Level | str, center_id: str) -> str:
    """The destination of the center ``center_id`` of ``level`` (``regional.east``)."""
    return f"{Level(level).value}.{_checked_id(center_id)}"


def parse_destination(destination: str) -> tuple[Level, str]:
    """Split ``regional.east`` into ``(Level.REGIONAL, "east")``; ``TransportError`` if bad."""
    level_text, sep, center_id = destination.partition(".")
    try:
        level = Level(level_text)
    except ValueError:
        level = None
    if not sep or level is None or level is Level.ENTERPRISE or not _TOKEN.match(center_id):
        raise TransportError(
            f"bad destination {destination!r}: expected <regional|industry|national>.<center id>"
            " with a center id of letters, digits, '-' and '_'"
        )
    return level, center_id


def _checked_id(center_id: str) -> str:
    if not _TOKEN.match(center_id):
        raise TransportError(f"bad center id {center_id!r}: use 1-64 letters, digits, '-' and '_'")
    return center_id


class Delivery(Protocol):
    """One report handed to a consumer; settle it exactly once with ack, nak or term."""

    @property
    def data(self) -> bytes:
        """The report's bytes as published."""
        ...

    @property
    def message_id(self) -> str:
        """The publisher's id for this message (what de-duplication keys on)."""
        ...

    @property
    def attempt(self) -> int:
        """1 on first delivery, more on redeliveries."""
        ...

    async def ack(self) -> None:
        """Processed: never deliver again to this durable consumer."""
        ...

    async def nak(self, delay: float | None = None) -> None:
        """Not processed: deliver again (after ``delay`` seconds)."""
        ...

    async def term(self) -> None:
        """Poison: never deliver again (the caller has recorded why)."""
        ...


class ReportTransport(Protocol):
    """Durable publish and durable consumption of reports (an async context manager)."""

    async def __aenter__(self) -> Self:
        """Connect (or open) the transport."""
        ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the transport; unacked deliveries come again to the next consumer."""
        ...

    async def publish(self, destination: str, data: bytes, *, message_id: str) -> None:
        """Return once ``data`` is durably accepted for ``destination``.

        A second publish of the same ``message_id`` to the same destination within the
        de-duplication window is accepted and dropped. Raises ``TransportError`` if the
        transport cannot accept it in time.
        """
        ...

    def deliveries(self, destination: str, *, durable: str) -> AsyncIterator[Delivery]:
        """Deliveries for ``destination`` through the durable consumer ``durable``, forever."""
        ...

    async def backlog(self, destination: str, *, durable: str) -> int:
        """Messages for ``destination`` that ``durable`` has not settled yet (acked or termed)."""
        ...


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter, for reconnects and retried publishes."""

    initial: float = 0.1
    maximum: float = 5.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        import random  # noqa: PLC0415 - only needed on the failure path

        ceiling = min(self.maximum, self.initial * (2 ** min(attempt, 16)))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography
