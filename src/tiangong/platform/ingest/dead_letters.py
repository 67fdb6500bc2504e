"""Dead letters: input the platform refused, kept with the reason so operators can fix senders.

Every rejected message (or the rejected values of a partly accepted one) becomes a row with a
stable reason code, a human-readable detail, how many values it carried and the first 4 KiB of
the payload. Rows are written in the same commit as the group they came from, before the
message is acknowledged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from tiangong.platform.database import Database, dead_letters, utc

__all__ = ["DeadLetter", "DeadLetterStore"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One rejected message or group of values."""

    id: int
    received_at: datetime
    tenant_id: str | None
    device_id: str | None
    topic: str
    reason: str
    detail: str
    points: int
    payload: bytes


class DeadLetterStore:
    """Reads and writes the ``dead_letters`` table.

    Args:
        db: the metadata database.
        keep: most rows kept; older rows are pruned by ``prune`` so a flood of garbage cannot
            fill the disk (their counts stay in the metrics).
    """

    def __init__(self, db: Database, *, keep: int = 100_000) -> None:
        self.db = db
        self.keep = keep

    async def record(self, rows: list[dict[str, Any]]) -> None:
        """Insert dead-letter rows."""
        if rows:
            async with self.db.engine.begin() as conn:
                await conn.execute(sa.insert(dead_letters), rows)

    async def list(
        self,
        tenant_id: str | None,
        *,
        device_id: str | None = None,
        reason: str | None = None,
        limit: int = 100,
    ) -> list[DeadLetter]:
        """Most recent dead letters, newest first."""
        query = sa.select(dead_letters).order_by(dead_letters.c.id.desc()).limit(limit)
        if tenant_id is not None:
            query = query.where(dead_letters.c.tenant_id == tenant_id)
        if device_id is not None:
            query = query.where(dead_letters.c.device_id == device_id)
        if reason is not None:
            query = query.where(dead_letters.c.reason == reason)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            DeadLetter(
                id=int(r.id),
                received_at=utc(r.received_at) or r.received_at,
                tenant_id=r.tenant_id,
                device_id=r.device_id,
                topic=r.topic,
                reason=r.reason,
                detail=r.detail,
                points=int(r.points),
                payload=bytes(r.payload),
            )
            for r in rows
        ]

    async def counts(self, tenant_id: str | None) -> dict[str, int]:
        """Dead letters per reason."""
        query = sa.select(dead_letters.c.reason, sa.func.count()).group_by(dead_letters.c.reason)
        if tenant_id is not None:
            query = query.where(dead_letters.c.tenant_id == tenant_id)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {str(reason): int(n) for reason, n in rows}

    async def prune(self) -> int:
        """Delete all but the newest ``keep`` rows; returns rows deleted."""
        async with self.db.engine.begin() as conn:
            newest = (await conn.execute(sa.select(sa.func.max(dead_letters.c.id)))).scalar()
            if newest is None:
                return 0
            result = await conn.execute(
                sa.delete(dead_letters).where(dead_letters.c.id <= int(newest) - self.keep)
            )
        return int(result.rowcount or 0)
