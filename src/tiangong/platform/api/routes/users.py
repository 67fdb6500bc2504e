"""Users: create, list, change, disable, delete, and passwords.

A tenant admin manages the users of its tenant whose rights it holds itself (viewers,
operators, tenant admins); a platform admin manages every user, including auditors and other
platform admins. Another tenant's user answers 404. Nobody disables, deletes or changes the
role of their own account (409), so a platform cannot lose its last administrator by accident.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response, status

from tiangong.platform.api.auth import (
    AccessAdmin,
    Caller,
    PlatformDep,
    require_scope,
    tenant_for_read,
)
from tiangong.platform.api.routes.session import user_out
from tiangong.platform.api.schemas import (
    PasswordChanged,
    PasswordIn,
    UserCreated,
    UserIn,
    UserOut,
    UserPatch,
)
from tiangong.platform.tokens import ApiPrincipal, ApiRole, ApiScope
from tiangong.security.users import LoginRefusedError, User, generate_password

router = APIRouter(prefix="/api/v1/users", tags=["users"])


def _may_manage(principal: ApiPrincipal, user: User, new_role: ApiRole | None = None) -> None:
    for role in (user.role, new_role):
        if role is not None and not principal.can_grant(role):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"cannot manage a {role.value} with your rights"
            )


@router.get("", response_model=list[UserOut])
async def list_users(
    platform: PlatformDep, principal: AccessAdmin, tenant: str | None = None
) -> list[UserOut]:
    """Users of the caller's tenant (a platform admin: all, or ``?tenant=``)."""
    return [user_out(u) for u in await platform.users.list(tenant_for_read(principal, tenant))]


@router.post("", response_model=UserCreated, status_code=status.HTTP_201_CREATED)
async def create_user(body: UserIn, platform: PlatformDep, principal: AccessAdmin) -> UserCreated:
    """Create a user; without ``password`` one is generated and returned once.

    User names are unique platform-wide (409 when taken). Passwords: at least 12 characters,
    not containing the user name.
    """
    if not principal.can_grant(body.role):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"cannot create a {body.role.value} with your rights"
        )
    tenant = None if body.role is ApiRole.PLATFORM_ADMIN else body.tenant_id or principal.scope
    if principal.scope is not None and tenant != principal.scope:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "callers are confined to their tenant")
    if tenant is not None:
        await platform.registry.get_tenant(tenant)
    password = body.password or generate_password()
    user = await platform.users.create(
        username=body.username, password=password, role=body.role, tenant_id=tenant
    )
    return UserCreated(user=user_out(user), password=None if body.password else password)


@router.patch("/{user_id}", response_model=UserOut)
async def update_user(
    user_id: str, body: UserPatch, platform: PlatformDep, principal: AccessAdmin
) -> UserOut:
    """Change a user's role, or disable (``"disabled": true``) or enable it.

    Disabling or a new role ends the user's sessions at once.
    """
    user = await platform.users.get(user_id, principal.scope)
    _may_manage(principal, user, body.role)
    if user.id == principal.user and (body.role is not None or body.disabled):
        raise HTTPException(
            status.HTTP_409_CONFLICT, "you cannot disable yourself or change your own role"
        )
    updated = await platform.users.update(
        user_id, principal.scope, role=body.role, disabled=body.disabled
    )
    return user_out(updated)


@router.delete("/{user_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def delete_user(user_id: str, platform: PlatformDep, principal: AccessAdmin) -> Response:
    """Delete a user and end its sessions (its audit trail entries stay)."""
    user = await platform.users.get(user_id, principal.scope)
    _may_manage(principal, user)
    if user.id == principal.user:
        raise HTTPException(status.HTTP_409_CONFLICT, "you cannot delete yourself")
    await platform.users.delete(user_id, principal.scope)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{user_id}/password", response_model=PasswordChanged)
async def set_password(
    user_id: str, body: PasswordIn, platform: PlatformDep, principal: Caller
) -> PasswordChanged:
    """Change your own password (with ``current_password``) or reset another user's (admin).

    Either way every session of the user ends. An admin reset without ``password`` generates
    one and returns it once. Without ``access:admin`` you may change only your own (403).
    """
    if user_id == principal.user:
        if body.password is None or body.current_password is None:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                "to change your own password give password and current_password",
            )
        try:
            user = await platform.users.set_password(
                user_id, None, body.password, current=body.current_password
            )
        except LoginRefusedError as exc:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, "current_password is not your password"
            ) from exc
        return PasswordChanged(user=user_out(user), password=None)
    require_scope(principal, ApiScope.ACCESS_ADMIN)
    target = await platform.users.get(user_id, principal.scope)
    _may_manage(principal, target)
    password = body.password or generate_password()
    user = await platform.users.set_password(user_id, principal.scope, password)
    return PasswordChanged(user=user_out(user), password=None if body.password else password)
