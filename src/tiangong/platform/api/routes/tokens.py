"""API tokens: issue (with scopes and an expiry), list, revoke."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response, status

from tiangong.platform.api.auth import AccessAdmin, PlatformDep, tenant_for_read
from tiangong.platform.api.schemas import TokenCreated, TokenIn
from tiangong.platform.tokens import ApiRole, ApiToken

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"])


@router.get("", response_model=list[ApiToken])
async def list_tokens(
    platform: PlatformDep, principal: AccessAdmin, tenant: str | None = None
) -> list[ApiToken]:
    """Token records (never the tokens) of the caller's tenant (a platform admin: all, or one)."""
    return await platform.tokens.list(tenant_for_read(principal, tenant))


@router.post("", response_model=TokenCreated, status_code=status.HTTP_201_CREATED)
async def issue_token(body: TokenIn, platform: PlatformDep, principal: AccessAdmin) -> TokenCreated:
    """Issue a token; the secret is in the response only this once.

    The token's rights are its role's scopes, narrowed to ``scopes`` when given. Nobody issues
    rights they do not hold: a tenant admin issues tokens of its tenant up to its own scopes
    (so no ``auditor`` and no ``platform_admin`` tokens). Without ``expires_at`` a token lives
    90 days; at most 366.
    """
    if not principal.can_grant(body.role, body.scopes):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"cannot issue a {body.role.value} token with rights you do not hold",
        )
    tenant = None if body.role is ApiRole.PLATFORM_ADMIN else body.tenant_id or principal.scope
    if principal.scope is not None and tenant != principal.scope:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "callers are confined to their tenant")
    if tenant is not None:
        await platform.registry.get_tenant(tenant)
    record, secret = await platform.tokens.create(
        name=body.name,
        role=body.role,
        tenant_id=tenant,
        expires_at=platform.tokens.expiry_for(body.expires_at),
        scopes=body.scopes,
    )
    return TokenCreated(token=record, secret=secret)


@router.delete("/{token_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def revoke_token(token_id: str, platform: PlatformDep, principal: AccessAdmin) -> Response:
    """Revoke a token (at once on this instance, within seconds on the others).

    A tenant admin revokes tokens of its tenant whose rights it holds itself (not an auditor's).
    """
    record = await platform.tokens.get(token_id, principal.scope)
    if not principal.can_grant(record.role, record.scopes):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"cannot revoke a {record.role.value} token")
    await platform.tokens.revoke(token_id, principal.scope)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
