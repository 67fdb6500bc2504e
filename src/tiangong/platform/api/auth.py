"""Authentication (API tokens and sessions), scope checks and tenant confinement for API routes.

Every route declares what it needs in its signature, with one of the annotated principals below
(``principal: DevicesRead``): the dependency authenticates the caller (401 without a valid
token or session) and refuses it unless it holds the scope (403), before the route looks
anything up. A route that any authenticated caller may use takes ``Caller``.

Tenant confinement is the route's part: objects are looked up within ``principal.scope`` (the
caller's tenant, ``None`` for a platform administrator), so another tenant's object answers
404 exactly like one that does not exist; naming another tenant explicitly (``?tenant=``, a
body's ``tenant_id``) answers 403 whether that tenant exists or not.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Final

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tiangong.platform.service import Platform
from tiangong.platform.tokens import ROLE_SCOPES, ApiPrincipal, ApiRole, ApiScope
from tiangong.security.users import SESSION_PREFIX

__all__ = [
    "DEPENDENCY_SCOPES",
    "AccessAdmin",
    "AlarmsRead",
    "AlarmsWrite",
    "AuditRead",
    "Caller",
    "CommandsWrite",
    "DataRead",
    "DevicesRead",
    "DevicesWrite",
    "PlatformAdmin",
    "PlatformDep",
    "RulesWrite",
    "TelemetryRead",
    "TenantsWrite",
    "authorized",
    "caller",
    "client_address",
    "get_platform",
    "principal_of",
    "require",
    "require_scope",
    "tenant_for_read",
    "tenant_for_write",
]

_bearer = HTTPBearer(
    auto_error=False,
    description="An API token (tg_...) or a session token from /api/v1/auth/login (tgs_...)",
)


def get_platform(request: Request) -> Platform:
    """The platform this app serves."""
    platform: Platform = request.app.state.platform
    return platform


PlatformDep = Annotated[Platform, Depends(get_platform)]


def client_address(request: Request) -> str:
    """The address the request came from (the peer of the connection)."""
    return request.client.host if request.client is not None else "unknown"


async def principal_of(platform: Platform, presented: str) -> ApiPrincipal | None:
    """Whose bearer token this is: an API token's or a session's principal, or ``None``."""
    if presented.startswith(SESSION_PREFIX):
        return await platform.users.verify_session(presented)
    return await platform.tokens.verify(presented)


async def caller(
    request: Request,
    platform: PlatformDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiPrincipal:
    """The authenticated caller, also kept as ``request.state.principal``.

    Raises:
        HTTPException: 401 without a valid, unexpired, unrevoked token or session.
    """
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token: send 'Authorization: Bearer tg_...' (or a session token)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    principal = await principal_of(platform, credentials.credentials)
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "invalid, expired or revoked token or session",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    request.state.principal = principal
    return principal


Caller = Annotated[ApiPrincipal, Depends(caller)]


def require_scope(principal: ApiPrincipal, scope: ApiScope | str) -> None:
    """Refuse the request unless the caller holds ``scope`` (an :class:`ApiScope` or its name).

    Raises:
        HTTPException: 403 saying which scope is missing.
    """
    scope = ApiScope(scope)
    if not principal.can(scope):
        roles = [role.value for role, held in ROLE_SCOPES.items() if scope in held]
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"this needs the {scope.value} scope, which this {principal.role.value}"
            f" {principal.kind} does not hold (roles that have it: {', '.join(roles)});"
            " ask an administrator for such a token or account",
        )


#: The scope each dependency made by :func:`authorized` checks (for tests and documentation).
DEPENDENCY_SCOPES: Final[dict[Callable[..., object], ApiScope]] = {}


def authorized(scope: ApiScope) -> Callable[[ApiPrincipal], Awaitable[ApiPrincipal]]:
    """A dependency: the authenticated caller, refused (403) unless it holds ``scope``."""

    async def dependency(principal: Caller) -> ApiPrincipal:
        require_scope(principal, scope)
        return principal

    dependency.__name__ = f"authorized_{scope.name.lower()}"
    DEPENDENCY_SCOPES[dependency] = scope
    return dependency


DevicesRead = Annotated[ApiPrincipal, Depends(authorized(ApiScope.DEVICES_READ))]
DevicesWrite = Annotated[ApiPrincipal, Depends(authorized(ApiScope.DEVICES_WRITE))]
TelemetryRead = Annotated[ApiPrincipal, Depends(authorized(ApiScope.TELEMETRY_READ))]
AlarmsRead = Annotated[ApiPrincipal, Depends(authorized(ApiScope.ALARMS_READ))]
AlarmsWrite = Annotated[ApiPrincipal, Depends(authorized(ApiScope.ALARMS_WRITE))]
RulesWrite = Annotated[ApiPrincipal, Depends(authorized(ApiScope.RULES_WRITE))]
CommandsWrite = Annotated[ApiPrincipal, Depends(authorized(ApiScope.COMMANDS_WRITE))]
DataRead = Annotated[ApiPrincipal, Depends(authorized(ApiScope.DATA_READ))]
TenantsWrite = Annotated[ApiPrincipal, Depends(authorized(ApiScope.TENANTS_WRITE))]
AccessAdmin = Annotated[ApiPrincipal, Depends(authorized(ApiScope.ACCESS_ADMIN))]
AuditRead = Annotated[ApiPrincipal, Depends(authorized(ApiScope.AUDIT_READ))]
PlatformAdmin = Annotated[ApiPrincipal, Depends(authorized(ApiScope.PLATFORM_ADMIN))]


def require(principal: ApiPrincipal, role: ApiRole) -> None:
    """Refuse the request unless the caller has at least ``role`` (prefer scopes).

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
        raise HTTPException(status.HTTP_403_FORBIDDEN, "callers are confined to their tenant")
    return principal.scope


def tenant_for_read(principal: ApiPrincipal, requested: str | None) -> str | None:
    """The tenant filter of a read: the caller's own, or any (or one) for a platform admin.

    Raises:
        HTTPException: 403 when a tenant caller asks for another tenant.
    """
    if principal.scope is None:
        return requested
    if requested is not None and requested != principal.scope:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "callers are confined to their tenant")
    return principal.scope
