"""Recording API use in the platform's audit trail (an ASGI middleware).

What is recorded (``platform.audit``, see ``security.audit``):

- every **change**: POST, PUT, PATCH and DELETE under ``/api/``, one entry each, with the
  caller (``request.state.principal``, set by the ``caller`` dependency), the action
  (``METHOD /route/{template}``), the target (the path parameters, and the ``id`` a create
  returned), the tenant, the client's address, the outcome (the HTTP status) and, in
  ``detail``, the names (never the values: they may be passwords) of the body's fields;
- every **data read** of the data API (``/api/v1/data/...`` except the catalog): data leaving
  the platform is an export, one entry each with the query;
- every other **read with a token** coalesced: one ``token.use`` entry per token and minute,
  with the count.

Sign-in and sign-out (``/api/v1/auth/login``, ``/logout``) are recorded by the user service
itself, with the user name, so they are skipped here.

Failure policy, fail closed: the response of a change or a data read is held back until its
entry is committed. If the trail cannot take it, a data read is refused (503, nothing leaves);
a change already applied is answered 503 saying so (its entry is written to the log at ERROR
level instead), and from then on every change is refused with 503 *before* it runs, until
the trail takes entries again (checked on the next change, which first records
``audit.resumed`` with the number of entries lost). Reads without data go on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tiangong.platform.api.auth import principal_of
from tiangong.security.audit import AuditError

if TYPE_CHECKING:
    from tiangong.platform.service import Platform
    from tiangong.security.audit import AuditTrail

__all__ = ["AuditTrailMiddleware"]

_log = logging.getLogger(__name__)

_CHANGES: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_SKIPPED: Final = frozenset({"/api/v1/auth/login", "/api/v1/auth/logout"})
_DATA: Final = "/api/v1/data/"
_DATA_UNRECORDED: Final = frozenset({"/api/v1/data/catalog"})
_BODY_KEPT: Final = 64 * 1024
_TENANT_KEYS: Final = ("tenant_id", "tenant")


def _principal_fields(principal: object) -> tuple[str, str | None, dict[str, object]]:
    """(actor, tenant, detail) of an ``ApiPrincipal``-like caller."""
    name = str(getattr(principal, "name", "") or "")
    token_id = str(getattr(principal, "token_id", "") or "")
    role = getattr(principal, "role", "")
    role_text = str(getattr(role, "value", role))
    tenant = getattr(principal, "tenant_id", None)
    if role_text == "platform_admin":
        tenant = None
    actor = f"{name} ({token_id})" if token_id else name or "unknown"
    detail: dict[str, object] = {"role": role_text, "token_id": token_id}
    kind = getattr(principal, "kind", None)
    if kind is not None:
        detail["kind"] = str(getattr(kind, "value", kind))
    return actor, None if tenant is None else str(tenant), detail


def _json_object(body: bytes) -> Mapping[str, Any] | None:
    if not body:
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _created_id(doc: Mapping[str, Any] | None) -> str | None:
    """The ``id`` a create answered with: top-level, or of the one object it wraps."""
    if doc is None:
        return None
    if isinstance(doc.get("id"), str | int):
        return str(doc["id"])
    wrapped = [v for v in doc.values() if isinstance(v, dict) and isinstance(v.get("id"), str)]
    return str(wrapped[0]["id"]) if len(wrapped) == 1 else None


def _query_value(query: str, keys: tuple[str, ...]) -> str | None:
    from urllib.parse import parse_qsl  # noqa: PLC0415 - only for changes and data reads

    for key, value in parse_qsl(query):
        if key in keys and value:
            return value
    return None


class AuditTrailMiddleware:
    """Records API changes, data reads and token use (see the module docstring).

    Reads ``app.state.platform.audit`` on every request; without one it only passes through.

    Args:
        app: the application it wraps.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.unrecorded = 0
        self._degraded = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request (see the module docstring)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        platform: Platform | None = getattr(scope["app"].state, "platform", None)
        audit: AuditTrail | None = getattr(platform, "audit", None)
        path: str = scope["path"]
        method: str = scope["method"]
        if audit is None or path in _SKIPPED:
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})
        change = method in _CHANGES and path.startswith("/api/")
        data_read = method == "GET" and path.startswith(_DATA) and path not in _DATA_UNRECORDED
        if not (change or data_read):
            await self.app(scope, receive, send)
            await self._note_read(scope, audit, platform)
            return
        if change and self._degraded and not await self._resume(scope, audit):
            await _refuse(send, "the audit trail is not writable: changes are refused until it is")
            return
        await self._recorded(scope, receive, send, audit, platform, change=change)

    async def _note_read(self, scope: Scope, audit: AuditTrail, platform: Platform | None) -> None:
        principal = await _principal(scope, platform)
        if principal is None:
            return
        actor, tenant, detail = _principal_fields(principal)
        audit.note_token_use(
            token_id=str(detail["token_id"]) or actor,
            actor=actor,
            tenant_id=tenant,
            role=str(detail["role"]),
            source=_source(scope),
        )

    async def _recorded(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        audit: AuditTrail,
        platform: Platform | None,
        *,
        change: bool,
    ) -> None:
        body = bytearray()

        async def receive_kept() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(body) < _BODY_KEPT:
                body.extend(message.get("body", b"")[: _BODY_KEPT - len(body)])
            return message

        held: list[Message] = []

        async def hold(message: Message) -> None:
            held.append(message)

        await self.app(scope, receive_kept, hold)
        status = next((m["status"] for m in held if m["type"] == "http.response.start"), 500)
        response = b"".join(m.get("body", b"") for m in held if m["type"] == "http.response.body")
        entry = await _entry(scope, platform, bytes(body), response, status, change=change)
        try:
            await audit.record(**entry)
        except AuditError as exc:
            self._degraded = self._degraded or change
            self.unrecorded += 1
            _log.error("audit: entry not recorded (%s): %s", exc, json.dumps(entry, default=str))
            if change and status < 400:
                await _refuse(
                    send,
                    "the change was applied but the audit trail could not record it; further"
                    " changes are refused until it can",
                )
                return
            if not change:
                await _refuse(send, "the audit trail is not writable: data reads are refused")
                return
        for message in held:
            await send(message)

    async def _resume(self, scope: Scope, audit: AuditTrail) -> bool:
        try:
            await audit.record(
                actor="platform",
                action="audit.resumed",
                source=_source(scope),
                outcome="ok",
                detail={"unrecorded": self.unrecorded},
            )
        except AuditError:
            return False
        self._degraded = False
        self.unrecorded = 0
        return True


async def _refuse(send: Send, detail: str) -> None:
    payload = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _source(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


async def _principal(scope: Scope, platform: Platform | None) -> object | None:
    """The caller the auth dependency found, or the owner of the bearer token presented.

    The dependency stores it in ``request.state.principal``; a route that failed before its
    dependencies ran (a 404, a 405) has none, and then the token itself is looked up (the
    token service caches verifications, so this costs no database read in the common case).
    """
    state: MutableMapping[str, Any] = scope.get("state", {})
    principal = state.get("principal")
    if principal is not None or platform is None:
        return principal
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token:
                return await principal_of(platform, token.strip())
    return None


async def _entry(
    scope: Scope,
    platform: Platform | None,
    body: bytes,
    response: bytes,
    status: int,
    *,
    change: bool,
) -> dict[str, Any]:
    method: str = scope["method"]
    path: str = scope["path"]
    route = scope.get("route")
    template = str(getattr(route, "path", "") or path)
    params: Mapping[str, Any] = scope.get("path_params") or {}
    query = scope.get("query_string", b"").decode("latin-1")
    principal = await _principal(scope, platform)
    detail: dict[str, object] = {"path": path}
    if principal is None:
        actor, tenant = "anonymous", None
    else:
        actor, tenant, who = _principal_fields(principal)
        detail |= who
    doc = _json_object(body)
    if tenant is None:
        tenant = next((str(params[k]) for k in _TENANT_KEYS if params.get(k)), None)
    if tenant is None:
        tenant = _query_value(query, _TENANT_KEYS)
    if tenant is None and doc is not None:
        tenant = next((str(doc[k]) for k in _TENANT_KEYS if isinstance(doc.get(k), str)), None)
        if tenant is None and template == "/api/v1/tenants" and isinstance(doc.get("id"), str):
            tenant = str(doc["id"])
    target = ",".join(f"{k}={v}" for k, v in sorted(params.items()))
    if change and 200 <= status < 300:
        made = _created_id(_json_object(response))
        if made is not None and f"={made}" not in target:
            target = f"{target},id={made}" if target else f"id={made}"
    if doc is not None:
        detail["fields"] = sorted(str(k) for k in doc)
    if query:
        detail["query"] = query[:1000]
    return {
        "actor": actor,
        "action": f"{method} {template}" if change else f"data.read {template}",
        "target": target,
        "tenant_id": tenant,
        "source": _source(scope),
        "outcome": str(status),
        "detail": detail,
    }
