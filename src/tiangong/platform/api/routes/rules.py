"""Alarm rules: threshold-for-duration and rate-of-change."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from tiangong.platform.alarms.service import StoredRule
from tiangong.platform.api.auth import (
    AlarmsRead,
    PlatformDep,
    RulesWrite,
    tenant_for_read,
    tenant_for_write,
)
from tiangong.platform.api.schemas import RuleIn

router = APIRouter(prefix="/api/v1/rules", tags=["rules"])


@router.get("", response_model=list[StoredRule])
async def list_rules(
    platform: PlatformDep, principal: AlarmsRead, tenant: str | None = None
) -> list[StoredRule]:
    """Rules visible to the caller."""
    return await platform.alarms.list_rules(tenant_for_read(principal, tenant))


@router.post("", response_model=StoredRule, status_code=status.HTTP_201_CREATED)
async def create_rule(body: RuleIn, platform: PlatformDep, principal: RulesWrite) -> StoredRule:
    """Create a rule (tenant admin)."""
    return await platform.alarms.create_rule(
        tenant_for_write(principal, body.tenant_id), body.rule, enabled=body.enabled
    )


@router.get("/{rule_id}", response_model=StoredRule)
async def get_rule(rule_id: int, platform: PlatformDep, principal: AlarmsRead) -> StoredRule:
    """One rule."""
    return await platform.alarms.get_rule(rule_id, principal.scope)


@router.put("/{rule_id}", response_model=StoredRule)
async def replace_rule(
    rule_id: int, body: RuleIn, platform: PlatformDep, principal: RulesWrite
) -> StoredRule:
    """Replace a rule's definition or enable/disable it (tenant admin)."""
    return await platform.alarms.update_rule(
        rule_id, principal.scope, body.rule, enabled=body.enabled
    )


@router.delete("/{rule_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def delete_rule(rule_id: int, platform: PlatformDep, principal: RulesWrite) -> Response:
    """Delete a rule; its open alarms are cleared (tenant admin)."""
    await platform.alarms.delete_rule(rule_id, principal.scope)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
