"""Bearer-token authentication and role checks for API routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tiangong.platform.service import Platform
from tiangong.platform.tokens import ApiPrincipal, ApiRole

__all__ = ["Caller", "PlatformDep", "caller", "get_platform", "require", "tenant_for_write"]

_bearer = HTTPBearer(auto_error=False, description="A Tiangong API token (tg_...)")


def get_platform(request: Request) -> Platform:
    """The platform this app serves."""
    platform: Platform = request.app.state.platform
    return platform


PlatformDep = Annotated[Platform, Depends(get_platform)]


async def caller(
    platform: PlatformDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiPrincipal:
    """The authenticated caller.

    Raises:
        HTTPException: 401 without a valid, unexpired, unrevoked token.
    """
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token: send 'Authorization: Bearer tg_...'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    principal = await platform.tokens.verify(credentials.credentials)
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid, expired or revoked token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return principal


Caller = Annotated[ApiPrincipal, Depends(caller)]


def require(principal: ApiPrincipal, role: ApiRole) -> None:
    """Refuse the request unless the caller has at least ``role``.

    Raises:
        HTTPException: 403.
    """
    if not principal.role.at_least(role):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"this needs the {role.value} role or higher"
        )


def tenant_for_write(principal: ApiPrincipal, requested: str | None) -> str:
    """The tenant a write applies to: the caller's own, or (for a platform admin) the named one.

    Raises:
        HTTPException: 422 when a platform admin names no tenant; 403 when a tenant caller
            names another tenant.
    """
    if principal.scope is None:
        if requested is None:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                "a platform administrator must say which tenant: pass tenant_id",
            )
        return requested
    if requested is not None and requested != principal.scope:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "tokens are confined to their tenant")
    return principal.scope


def tenant_for_read(principal: ApiPrincipal, requested: str | None) -> str | None:
    """The tenant filter of a read: the caller's own, or any (or one) for a platform admin.

    Raises:
        HTTPException: 403 when a tenant caller asks for another tenant.
    """
    if principal.scope is None:
        return requested
    if requested is not None and requested != principal.scope:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "tokens are confined to their tenant")
    return principal.scope
