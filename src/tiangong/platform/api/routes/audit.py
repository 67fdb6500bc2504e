"""The audit trail: its entries (tenant-confined) and the state of its chain.

Who may read: holders of the ``audit:read`` scope, i.e. a platform administrator (every entry)
and an auditor (its tenant's entries). A tenant administrator does not: the one who acts is
not the one who audits (separation of duties, see ``platform.tokens``). Entries of the
platform itself (no tenant) are seen only by a platform administrator. The chain's state
(``/verify``) says whether any entry was edited or removed, and how many there are.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel

from tiangong.platform.api.auth import AuditRead, PlatformDep, tenant_for_read
from tiangong.security.audit import AuditError, AuditTrail

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


class AuditEntryOut(BaseModel):
    """One entry of the trail (see docs/security.md for the hash recipe)."""

    seq: int
    at: datetime
    actor: str
    action: str
    target: str
    tenant_id: str | None
    source: str
    outcome: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str


class CheckpointOut(BaseModel):
    """An anchored head."""

    seq: int
    hash: str


class AuditVerificationOut(BaseModel):
    """The state of the chain."""

    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    first_broken: int | None
    problem: str | None
    reason: str
    checkpoint: CheckpointOut | None


def _trail(platform: Any) -> AuditTrail:
    trail: AuditTrail | None = getattr(platform, "audit", None)
    if trail is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "this platform keeps no audit trail"
        )
    return trail


@router.get("", response_model=list[AuditEntryOut], summary="Audit trail entries, newest first")
async def list_entries(
    platform: PlatformDep,
    principal: AuditRead,
    tenant: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_seq: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    action: Annotated[str | None, Query(max_length=200)] = None,
    since: datetime | None = None,
) -> list[AuditEntryOut]:
    """Entries newest first; page backwards with ``before_seq`` (the last ``seq`` you got)."""
    scope = tenant_for_read(principal, tenant)
    if since is not None and since.tzinfo is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "since needs a time zone")
    entries = await _trail(platform).entries(
        tenant_id=scope,
        limit=limit,
        before_seq=before_seq,
        actor=actor,
        action=action,
        since=since,
    )
    return [AuditEntryOut.model_validate(e.to_dict()) for e in entries]


@router.get("/verify", response_model=AuditVerificationOut, summary="Whether the chain is intact")
async def verify(platform: PlatformDep, principal: AuditRead) -> AuditVerificationOut:
    """Recompute the whole chain; ``ok`` false names the first broken entry and why."""
    del principal  # the chain's state is the same for every reader
    try:
        result = await _trail(platform).verify()
    except AuditError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    return AuditVerificationOut.model_validate(result.to_dict())
