"""Sign-in and sign-out: sessions of users (``tiangong.security.users``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import JSONResponse

from tiangong.platform.api.auth import Caller, PlatformDep, client_address
from tiangong.platform.api.schemas import LoginIn, LoginOut, UserOut, WhoAmI
from tiangong.platform.service import Platform
from tiangong.security.users import (
    LoginBusyError,
    LoginRefusedError,
    LoginThrottledError,
    User,
    normalize_username,
)

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


def user_out(user: User) -> UserOut:
    """The API form of a user."""
    return UserOut(
        id=user.id,
        username=user.username,
        role=user.role,
        tenant_id=user.tenant_id,
        created_at=user.created_at,
        password_changed_at=user.password_changed_at,
        disabled=user.disabled,
        last_login_at=user.last_login_at,
    )


async def _audit(platform: Platform, **entry: Any) -> None:
    # The audit trail is another part of the platform; a platform without one records nothing.
    trail = getattr(platform, "audit", None)
    if trail is not None:
        await trail.record(**entry)


@router.post(
    "/login",
    response_model=LoginOut,
    summary="Sign in with a user name and password",
    responses={
        401: {"description": "wrong user name or password"},
        429: {"description": "too many failures: retry after Retry-After seconds"},
        503: {"description": "too many sign-ins at once: retry in a second"},
    },
)
async def login(body: LoginIn, request: Request, platform: PlatformDep) -> Any:
    """Check the user name and password and open a session.

    Send the returned ``token`` as ``Authorization: Bearer tgs_...``. The session ends after
    ``idle_timeout_s`` without requests, at ``expires_at``, or at sign-out. After repeated
    failures the answer is 429 with ``Retry-After`` and the password is not checked (see
    docs/security.md for the exact policy).
    """
    source = client_address(request)
    name = normalize_username(body.username)[:64]
    try:
        session, token = await platform.users.login(body.username, body.password, source=source)
    except LoginThrottledError as exc:
        # Not written to the audit trail one by one: the security monitor counts them (and
        # raises a brute-force event), and a flood of refusals must not become a flood of
        # audit writes. Attempts that were checked are recorded, and the throttle bounds them.
        return JSONResponse(
            {"detail": str(exc)},
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            headers={"Retry-After": str(exc.retry_after)},
        )
    except LoginBusyError as exc:
        return JSONResponse(
            {"detail": str(exc)},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "1"},
        )
    except LoginRefusedError as exc:
        # Under the user's tenant when the name is a user, so the tenant's auditor sees it.
        known = await platform.users.find(name)
        await _audit(
            platform,
            actor=name,
            action="auth.login_failed",
            target=name,
            tenant_id=None if known is None else known.tenant_id,
            source=source,
            outcome="refused",
        )
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc)) from exc
    user = await platform.users.get(session.user_id, None)
    await _audit(
        platform,
        actor=user.username,
        action="auth.login",
        target=session.id,
        tenant_id=user.tenant_id,
        source=source,
    )
    return LoginOut(
        token=token,
        session_id=session.id,
        expires_at=session.expires_at,
        idle_timeout_s=session.idle_timeout_s,
        user=user_out(user),
    )


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Sign out (end this session)",
)
async def logout(request: Request, platform: PlatformDep, principal: Caller) -> Response:
    """End the calling session; its token stops working at once.

    An API token is not a session: revoke it with ``DELETE /api/v1/tokens/{id}`` (422 here).
    """
    if principal.kind != "session":
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "this is an API token, not a session: revoke it with DELETE /api/v1/tokens/{id}",
        )
    await platform.users.logout(principal.token_id)
    await _audit(
        platform,
        actor=principal.name,
        action="auth.logout",
        target=principal.token_id,
        tenant_id=principal.tenant_id,
        source=client_address(request),
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me", response_model=WhoAmI, summary="Who is calling, with which scopes")
async def me(principal: Caller) -> WhoAmI:
    """The caller's kind (token or session), id, name, role, tenant and effective scopes."""
    return WhoAmI(
        kind=principal.kind,
        id=principal.token_id,
        name=principal.name,
        role=principal.role,
        tenant_id=principal.scope,
        scopes=sorted(principal.scopes),
        user_id=principal.user,
    )
