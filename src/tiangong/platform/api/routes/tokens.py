"""API tokens: issue, list, revoke."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response, status

from tiangong.platform.api.auth import Caller, PlatformDep, require, tenant_for_read
from tiangong.platform.api.schemas import TokenCreated, TokenIn
from tiangong.platform.tokens import ApiRole, ApiToken

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"])


@router.get("", response_model=list[ApiToken])
async def list_tokens(
    platform: PlatformDep, principal: Caller, tenant: str | None = None
) -> list[ApiToken]:
    """Token records (never the tokens) visible to a tenant admin."""
    require(principal, ApiRole.TENANT_ADMIN)
    return await platform.tokens.list(tenant_for_read(principal, tenant))


@router.post("", response_model=TokenCreated, status_code=status.HTTP_201_CREATED)
async def issue_token(body: TokenIn, platform: PlatformDep, principal: Caller) -> TokenCreated:
    """Issue a token; the secret is in the response only this once.

    A tenant admin issues tokens of its tenant up to its own role; only a platform admin
    issues platform_admin tokens.
    """
    require(principal, ApiRole.TENANT_ADMIN)
    if not principal.role.at_least(body.role):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "cannot issue a role above your own")
    tenant = None if body.role is ApiRole.PLATFORM_ADMIN else body.tenant_id or principal.scope
    if principal.scope is not None and tenant != principal.scope:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "tokens are confined to their tenant")
    if tenant is not None:
        await platform.registry.get_tenant(tenant)
    record, secret = await platform.tokens.create(
        name=body.name, role=body.role, tenant_id=tenant, expires_at=body.expires_at
    )
    return TokenCreated(token=record, secret=secret)


@router.delete("/{token_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def revoke_token(token_id: str, platform: PlatformDep, principal: Caller) -> Response:
    """Revoke a token (effective within seconds)."""
    require(principal, ApiRole.TENANT_ADMIN)
    await platform.tokens.revoke(token_id, principal.scope)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
