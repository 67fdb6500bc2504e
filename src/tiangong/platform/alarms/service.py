"""Rules and alarms, stored: rule CRUD, alarm de-duplication and lifecycle, evaluation on ingest.

The ``AlarmService`` listens to the ingest pipeline: after a group of samples is stored, it runs
the ``RuleEngine`` over them and turns its raise/clear signals into alarm records. Open alarms
are cached by (rule, device), so a repeated raise updates the open alarm (count, value, time)
instead of opening a second one. On start the engine learns which alarms are open, so a
condition that ended while the platform was down still clears its alarm on the first good
sample.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import TypeAdapter

from tiangong.platform.alarms.lifecycle import AlarmState, AlarmTrigger, alarm_transition
from tiangong.platform.alarms.rules import (
    AlarmSignal,
    RateOfChangeRule,
    Rule,
    RuleEngine,
    SignalKind,
    ThresholdRule,
)
from tiangong.platform.database import Database, alarms, rules, utc
from tiangong.platform.errors import NotFoundError
from tiangong.platform.ingest.pipeline import AcceptedSamples
from tiangong.platform.metrics import PlatformMetrics
from tiangong.platform.model import Severity

__all__ = ["Alarm", "AlarmService", "StoredRule"]

_log = logging.getLogger(__name__)
_RULE = TypeAdapter[ThresholdRule | RateOfChangeRule](Rule)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class StoredRule:
    """A rule with its id and state."""

    id: int
    tenant_id: str
    enabled: bool
    rule: ThresholdRule | RateOfChangeRule
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Alarm:
    """An alarm record."""

    id: int
    tenant_id: str
    site_id: str
    device_id: str
    rule_id: int
    rule_name: str
    metric: str
    severity: Severity
    state: AlarmState
    message: str
    value: float | None
    count: int
    raised_at: datetime
    updated_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    cleared_at: datetime | None


def _alarm(row: sa.Row[Any]) -> Alarm:
    m = row._mapping
    return Alarm(
        id=int(m["id"]),
        tenant_id=m["tenant_id"],
        site_id=m["site_id"],
        device_id=m["device_id"],
        rule_id=int(m["rule_id"]),
        rule_name=m["rule_name"],
        metric=m["metric"],
        severity=Severity(m["severity"]),
        state=AlarmState(m["state"]),
        message=m["message"],
        value=m["value"],
        count=int(m["count"]),
        raised_at=utc(m["raised_at"]) or _now(),
        updated_at=utc(m["updated_at"]) or _now(),
        acknowledged_at=utc(m["acknowledged_at"]),
        acknowledged_by=m["acknowledged_by"],
        cleared_at=utc(m["cleared_at"]),
    )


def _stored_rule(row: sa.Row[Any]) -> StoredRule:
    return StoredRule(
        id=int(row.id),
        tenant_id=row.tenant_id,
        enabled=bool(row.enabled),
        rule=_RULE.validate_python(row.document),
        created_at=utc(row.created_at) or _now(),
        updated_at=utc(row.updated_at) or _now(),
    )


class AlarmService:
    """Rules and alarms of all tenants.

    Args:
        db: the metadata database.
        metrics: the platform's metrics.
    """

    def __init__(self, db: Database, metrics: PlatformMetrics) -> None:
        self.db = db
        self.metrics = metrics
        self.engine = RuleEngine()
        self._open: dict[tuple[int, str], tuple[int, AlarmState]] = {}

    async def load(self) -> None:
        """Load enabled rules and open alarms."""
        await self._reload_rules()
        async with self.db.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(
                        alarms.c.id, alarms.c.rule_id, alarms.c.device_id, alarms.c.state
                    ).where(alarms.c.state != AlarmState.CLEARED.value)
                )
            ).all()
        self._open = {(int(r.rule_id), r.device_id): (int(r.id), AlarmState(r.state)) for r in rows}
        for rule_id, device_id in self._open:
            self.engine.mark_active(rule_id, device_id)
        await self._refresh_gauges()

    async def _reload_rules(self) -> None:
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(sa.select(rules).where(rules.c.enabled))).all()
        self.engine.set_rules(
            (int(r.id), r.tenant_id, _RULE.validate_python(r.document)) for r in rows
        )

    # -- rules -----------------------------------------------------------------------------------

    async def create_rule(
        self, tenant_id: str, rule: ThresholdRule | RateOfChangeRule, *, enabled: bool = True
    ) -> StoredRule:
        """Add a rule for a tenant."""
        now = _now()
        async with self.db.engine.begin() as conn:
            result = await conn.execute(
                sa.insert(rules)
                .values(
                    tenant_id=tenant_id,
                    name=rule.name,
                    document=rule.model_dump(mode="json"),
                    enabled=enabled,
                    created_at=now,
                    updated_at=now,
                )
                .returning(rules.c.id)
            )
            rule_id = int(result.scalar_one())
        await self._reload_rules()
        return StoredRule(rule_id, tenant_id, enabled, rule, now, now)

    async def get_rule(self, rule_id: int, tenant_id: str | None) -> StoredRule:
        """A rule, seen from a tenant (``None`` = platform administrator).

        Raises:
            NotFoundError: no such rule visible to the tenant.
        """
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(sa.select(rules).where(rules.c.id == rule_id))).first()
        if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
            raise NotFoundError("rule", str(rule_id))
        return _stored_rule(row)

    async def list_rules(self, tenant_id: str | None) -> list[StoredRule]:
        """Rules of a tenant (or all)."""
        query = sa.select(rules).order_by(rules.c.id)
        if tenant_id is not None:
            query = query.where(rules.c.tenant_id == tenant_id)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_stored_rule(r) for r in rows]

    async def update_rule(
        self,
        rule_id: int,
        tenant_id: str | None,
        rule: ThresholdRule | RateOfChangeRule,
        *,
        enabled: bool,
    ) -> StoredRule:
        """Replace a rule's definition or switch it on or off."""
        current = await self.get_rule(rule_id, tenant_id)
        now = _now()
        async with self.db.engine.begin() as conn:
            await conn.execute(
                sa.update(rules)
                .where(rules.c.id == rule_id)
                .values(
                    name=rule.name,
                    document=rule.model_dump(mode="json"),
                    enabled=enabled,
                    updated_at=now,
                )
            )
        if not enabled:
            await self._clear_rule_alarms(rule_id, "rule disabled")
        await self._reload_rules()
        return StoredRule(rule_id, current.tenant_id, enabled, rule, current.created_at, now)

    async def delete_rule(self, rule_id: int, tenant_id: str | None) -> None:
        """Delete a rule; its open alarms are cleared."""
        await self.get_rule(rule_id, tenant_id)
        await self._clear_rule_alarms(rule_id, "rule deleted")
        async with self.db.engine.begin() as conn:
            await conn.execute(sa.delete(rules).where(rules.c.id == rule_id))
        await self._reload_rules()

    async def _clear_rule_alarms(self, rule_id: int, by: str) -> None:
        for (rid, _device), (alarm_id, _) in list(self._open.items()):
            if rid == rule_id:
                await self.clear(alarm_id, None, by=by)

    # -- evaluation ------------------------------------------------------------------------------

    async def on_commit(self, accepted: Sequence[AcceptedSamples]) -> None:
        """Evaluate the rules over freshly stored samples (an ingest commit listener)."""
        signals: list[AlarmSignal] = []
        for item in accepted:
            tenant = item.device.tenant_id
            for metric, (ts, values) in item.samples.numeric.items():
                if self.engine.rules_for(tenant, metric):
                    signals.extend(self.engine.evaluate(item.device, metric, ts, values))
        if signals:
            await self.apply(signals)

    async def apply(self, signals: Sequence[AlarmSignal]) -> None:
        """Turn raise/clear signals into alarm records."""
        for signal in signals:
            key = (signal.rule_id, signal.device.id)
            if signal.kind is SignalKind.RAISE:
                await self._raise(key, signal)
            elif key in self._open:
                alarm_id, _ = self._open[key]
                await self.clear(
                    alarm_id,
                    None,
                    by="condition cleared",
                    at=datetime.fromtimestamp(signal.ts_ms / 1000, UTC),
                )
        await self._refresh_gauges()

    async def _raise(self, key: tuple[int, str], signal: AlarmSignal) -> None:
        when = datetime.fromtimestamp(signal.ts_ms / 1000, UTC)
        existing = self._open.get(key)
        async with self.db.engine.begin() as conn:
            if existing is not None:
                alarm_id, state = existing
                alarm_transition(alarm_id, state, AlarmTrigger.RAISE)
                await conn.execute(
                    sa.update(alarms)
                    .where(alarms.c.id == alarm_id)
                    .values(count=alarms.c.count + 1, value=signal.value, updated_at=when)
                )
                return
            rule = self.engine.rule(signal.rule_id)
            if rule is None:
                return
            device = signal.device
            result = await conn.execute(
                sa.insert(alarms)
                .values(
                    tenant_id=device.tenant_id,
                    site_id=device.site_id,
                    device_id=device.id,
                    rule_id=signal.rule_id,
                    rule_name=rule.name,
                    metric=signal.metric,
                    severity=rule.severity.value,
                    state=AlarmState.ACTIVE.value,
                    message=f"{device.name}: {rule.describe()} (value {signal.value:g})"[:500],
                    value=signal.value,
                    count=1,
                    raised_at=when,
                    updated_at=when,
                )
                .returning(alarms.c.id)
            )
            self._open[key] = (int(result.scalar_one()), AlarmState.ACTIVE)
        self.metrics.alarms_raised.labels(rule.severity.value).inc()

    # -- alarms ----------------------------------------------------------------------------------

    async def get_alarm(self, alarm_id: int, tenant_id: str | None) -> Alarm:
        """An alarm, seen from a tenant.

        Raises:
            NotFoundError: no such alarm visible to the tenant.
        """
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(sa.select(alarms).where(alarms.c.id == alarm_id))).first()
        if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
            raise NotFoundError("alarm", str(alarm_id))
        return _alarm(row)

    async def list_alarms(
        self,
        tenant_id: str | None,
        *,
        state: AlarmState | None = None,
        open_only: bool = False,
        severity: Severity | None = None,
        site_id: str | None = None,
        device_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[Alarm], int]:
        """A page of alarms (most severe, then newest first) and the total matching."""
        where = []
        if tenant_id is not None:
            where.append(alarms.c.tenant_id == tenant_id)
        if state is not None:
            where.append(alarms.c.state == state.value)
        if open_only:
            where.append(alarms.c.state != AlarmState.CLEARED.value)
        if severity is not None:
            where.append(alarms.c.severity == severity.value)
        if site_id is not None:
            where.append(alarms.c.site_id == site_id)
        if device_id is not None:
            where.append(alarms.c.device_id == device_id)
        rank = sa.case(
            {s.value: s.rank for s in Severity}, value=alarms.c.severity, else_=len(Severity)
        )
        async with self.db.engine.connect() as conn:
            total = (
                await conn.execute(sa.select(sa.func.count()).select_from(alarms).where(*where))
            ).scalar_one()
            rows = (
                await conn.execute(
                    sa.select(alarms)
                    .where(*where)
                    .order_by(
                        (alarms.c.state == AlarmState.CLEARED.value),
                        rank,
                        alarms.c.updated_at.desc(),
                    )
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
        return [_alarm(r) for r in rows], int(total)

    async def acknowledge(self, alarm_id: int, tenant_id: str | None, *, by: str) -> Alarm:
        """Acknowledge an open alarm.

        Raises:
            NotFoundError: no such alarm.
            ConflictError: it is already cleared.
        """
        alarm = await self.get_alarm(alarm_id, tenant_id)
        new_state = alarm_transition(alarm_id, alarm.state, AlarmTrigger.ACKNOWLEDGE)
        now = _now()
        async with self.db.engine.begin() as conn:
            await conn.execute(
                sa.update(alarms)
                .where(alarms.c.id == alarm_id)
                .values(
                    state=new_state.value,
                    acknowledged_at=now,
                    acknowledged_by=by[:200],
                    updated_at=now,
                )
            )
        self._open[(alarm.rule_id, alarm.device_id)] = (alarm_id, new_state)
        await self._refresh_gauges()
        return await self.get_alarm(alarm_id, tenant_id)

    async def clear(
        self, alarm_id: int, tenant_id: str | None, *, by: str, at: datetime | None = None
    ) -> Alarm:
        """Clear an open alarm (by hand, or because its condition ended).

        Raises:
            NotFoundError: no such alarm.
            ConflictError: it is already cleared.
        """
        alarm = await self.get_alarm(alarm_id, tenant_id)
        alarm_transition(alarm_id, alarm.state, AlarmTrigger.CLEAR)
        when = at or _now()
        async with self.db.engine.begin() as conn:
            await conn.execute(
                sa.update(alarms)
                .where(alarms.c.id == alarm_id)
                .values(state=AlarmState.CLEARED.value, cleared_at=when, updated_at=when)
            )
        self._open.pop((alarm.rule_id, alarm.device_id), None)
        if by != "condition cleared":
            _log.info("alarm %d cleared by %s", alarm_id, by)
        await self._refresh_gauges()
        return await self.get_alarm(alarm_id, tenant_id)

    async def open_counts(self, tenant_id: str | None) -> dict[str, int]:
        """Open alarms per severity."""
        query = (
            sa.select(alarms.c.severity, sa.func.count())
            .where(alarms.c.state != AlarmState.CLEARED.value)
            .group_by(alarms.c.severity)
        )
        if tenant_id is not None:
            query = query.where(alarms.c.tenant_id == tenant_id)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {str(s): int(n) for s, n in rows}

    async def raised_between(self, tenant_id: str, start: datetime, end: datetime) -> int:
        """How many alarms of ``tenant_id`` were raised in ``[start, end)`` (for indicators)."""
        query = sa.select(sa.func.count()).where(
            alarms.c.tenant_id == tenant_id,
            alarms.c.raised_at >= start,
            alarms.c.raised_at < end,
        )
        async with self.db.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def _refresh_gauges(self) -> None:
        counts = await self.open_counts(None)
        for severity in Severity:
            self.metrics.alarms_active.labels(severity.value).set(counts.get(severity.value, 0))
