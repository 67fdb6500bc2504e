# The route table keeps one line per route, however long, so that a route is one line to add.
# ruff: noqa: E501

"""Every API route, by every principal, on its own and another tenant: the authorization matrix.

The app's routes are enumerated from ``app.routes``; a route without a line in ``EXPECTED``
fails the test, so a route added later cannot escape it. Each line says which scope the route
needs (or that it is public, or open to any authenticated caller), what a tenant caller gets
when it aims at another tenant's object (404: ids of other tenants do not exist for you; 403:
you named another tenant explicitly; ``OWN``: the route only ever answers the caller's own
data), and how to build a request against a target tenant.

Principals: for each of two tenants a token of every tenant role, a tenant admin's *session*
(a signed-in user) and a viewer token narrowed to ``devices:read``; a platform admin; an
anonymous caller; an expired and a revoked token. The expected status follows from the line:
401 without valid credentials, 403 without the scope, then 2xx (own tenant or a platform admin)
or the line's cross-tenant answer. No response to a tenant's caller may contain an id of the
other tenant that the request did not itself contain (nor an earlier request of that tenant:
its audit trail rightly shows its own callers' requests).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from tests.platform.conftest import PUMP_MODEL, PlatformEnv, running_platform
from tiangong.apps.energy.tariff import CHINA_INDUSTRIAL_DEFAULT
from tiangong.platform.alarms.rules import AlarmSignal, SignalKind, ThresholdRule
from tiangong.platform.api.app import create_app
from tiangong.platform.model import Site, Tenant
from tiangong.platform.service import Platform
from tiangong.platform.tokens import ApiRole, ApiScope

S = ApiScope
PUBLIC: Final = "public"  # no credentials needed
ANY: Final = "any"  # any valid credentials
OWN: Final = None  # a tenant caller always gets its own data: no cross-tenant answer
OK: Final = frozenset({200, 201, 204})
GOOD_PASSWORD: Final = "matrix passphrase 2026"
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@dataclass
class World:
    """One tenant and its objects."""

    key: str
    id: str
    prefix: str
    site: str = ""
    model: str = ""
    device: str = ""
    rule: int = 0
    alarm: int = 0
    viewer_user: str = ""
    spare_user: str = ""
    login_user: str = ""
    event: str = ""
    serial: str = ""
    ids: set[str] = field(default_factory=set)
    #: Other tenants' ids this tenant's callers put in requests themselves (its audit trail
    #: rightly shows them: they are its own requests).
    named: set[str] = field(default_factory=set)


@dataclass
class Who:
    """A principal of the matrix."""

    key: str
    world: World | None
    header: dict[str, str]
    scopes: frozenset[ApiScope] = frozenset()
    kind: str = "token"
    valid: bool = True

    @property
    def platform(self) -> bool:
        return self.valid and self.world is None


@dataclass
class Call:
    """One request."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    body: Any = None
    headers: dict[str, str] | None = None  # replaces the principal's credentials

    def text(self) -> str:
        return f"{self.path} {self.params or ''} {json.dumps(self.body) if self.body else ''}"


Builder = Callable[["Matrix", World, Who], Awaitable[Call]]


@dataclass(frozen=True)
class Expect:
    """What one route needs and answers."""

    scope: ApiScope | tuple[ApiScope, ...] | str
    cross: int | None
    build: Builder
    ok: frozenset[int] | Mapping[str, frozenset[int]] = OK


class Matrix:
    """The platform, the two tenants' worlds and helpers that make fresh objects."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.worlds: dict[str, World] = {}
        self.serial = itertools.count(1)

    def fresh(self, world: World, kind: str) -> str:
        name = f"{world.prefix}-{kind}-{next(self.serial)}"
        world.ids.add(name)
        return name

    async def device(self, world: World) -> str:
        device_id = self.fresh(world, "dev")
        await self.platform.registry.register_device(
            tenant_id=world.id, site_id=world.site, device_id=device_id, model_id=world.model
        )
        return device_id

    async def rule(self, world: World) -> int:
        stored = await self.platform.alarms.create_rule(
            world.id,
            ThresholdRule(name=self.fresh(world, "rule"), metric="flow", op=">", value=1),
        )
        return stored.id

    async def alarm(self, world: World) -> int:
        rule = await self.rule(world)
        entry = self.platform.registry.lookup(world.device)
        assert entry is not None
        await self.platform.alarms.apply(
            [
                AlarmSignal(
                    SignalKind.RAISE, rule, entry.device, "flow", int(time.time() * 1000), 50.0
                )
            ]
        )
        items, _ = await self.platform.alarms.list_alarms(world.id, limit=1000)
        return max(a.id for a in items if a.rule_id == rule)

    async def token(self, world: World | None, role: ApiRole, **kw: Any) -> tuple[str, str]:
        record, secret = await self.platform.tokens.create(
            name=self.fresh(world, "tok") if world else "platform-extra",
            role=role,
            tenant_id=world.id if world else None,
            **kw,
        )
        if world is not None:
            world.ids.add(record.id)
        return record.id, secret

    async def user(self, world: World, role: ApiRole = ApiRole.VIEWER) -> tuple[str, str]:
        name = self.fresh(world, "user")
        user = await self.platform.users.create(
            username=name, password=GOOD_PASSWORD, role=role, tenant_id=world.id
        )
        world.ids.add(user.id)
        return user.id, name

    async def session(self, world: World, username: str) -> str:
        session, token = await self.platform.users.login(
            username, GOOD_PASSWORD, source="127.0.0.1"
        )
        world.ids.add(session.id)
        return token


# -- request builders ----------------------------------------------------------------------------


def get(path: str, *, tenant: bool = False, **params: Any) -> Builder:
    """A GET of ``path`` (``{t}`` = the tenant; ``tenant``: add ``?tenant=`` for everyone)."""

    async def build(m: Matrix, w: World, who: Who) -> Call:
        query = dict(params)
        if tenant:
            query["tenant"] = w.id
        return Call("GET", path.format(t=w.id), query)

    return build


def on(method: str, template: str, body: Any = None, *, admin_tenant: bool = False) -> Builder:
    """``method`` on a path of the target's standing objects (``{site}``, ``{device}``...).

    ``admin_tenant``: a platform admin names the tenant with ``?tenant=``.
    """

    async def build(m: Matrix, w: World, who: Who) -> Call:
        fields = {
            "t": w.id,
            "site": w.site,
            "model": w.model,
            "device": w.device,
            "rule": w.rule,
            "alarm": w.alarm,
            "viewer_user": w.viewer_user,
            "spare_user": w.spare_user,
            "event": w.event,
            "serial": w.serial,
        }
        params = {"tenant": w.id} if admin_tenant and who.platform else None
        if method == "GET" and "telemetry" in template:
            params = {**(params or {}), "metric": "flow"}
        return Call(method, template.format(**fields), params, body)

    return build


def fresh(method: str, template: str, make: str, body: Any = None) -> Builder:
    """``method`` on a new object of the target (``make``: device, rule, alarm, token, user)."""

    async def build(m: Matrix, w: World, who: Who) -> Call:
        match make:
            case "device":
                key: object = await m.device(w)
            case "rule":
                key = await m.rule(w)
            case "alarm":
                key = await m.alarm(w)
            case "token":
                key, _ = await m.token(w, ApiRole.VIEWER)
            case _:
                key, _ = await m.user(w)
        return Call(method, template.format(key=key), None, body)

    return build


def create(path: str, body: Callable[[Matrix, World], Any], **params: Any) -> Builder:
    """A POST creating something in the target tenant (``{t}`` in params = its id)."""

    async def build(m: Matrix, w: World, who: Who) -> Call:
        query = {k: v.format(t=w.id) for k, v in params.items()} or None
        return Call("POST", path, query, body(m, w))

    return build


async def login_call(m: Matrix, w: World, who: Who) -> Call:
    return Call(
        "POST", "/api/v1/auth/login", None, {"username": w.login_user, "password": GOOD_PASSWORD}
    )


async def logout_call(m: Matrix, w: World, who: Who) -> Call:
    # A session signs out with a session of its own, so the matrix keeps its credentials.
    if who.kind == "session" and who.world is not None:
        _, name = await m.user(who.world, ApiRole.VIEWER)
        token = await m.session(who.world, name)
        return Call("POST", "/api/v1/auth/logout", headers={"Authorization": f"Bearer {token}"})
    return Call("POST", "/api/v1/auth/logout")


async def work_order_transition(m: Matrix, w: World, who: Who) -> Call:
    """Acknowledge a fresh work order of the target (each call needs one still open)."""
    order = await m.platform.health.open_work_order(
        w.id, w.device, cause=m.fresh(w, "cause"), title="matrix", by="matrix"
    )
    path = f"/api/v1/apps/work-orders/{order.id}/transition"
    return Call("POST", path, None, {"action": "acknowledge"})


def model_doc(m: Matrix, w: World) -> dict[str, Any]:
    return dict(PUMP_MODEL.to_json(), id=m.fresh(w, "model"))


def rule_doc(m: Matrix, w: World) -> dict[str, Any]:
    rule = {
        "kind": "threshold",
        "name": m.fresh(w, "rule"),
        "metric": "flow",
        "op": ">",
        "value": 5,
    }
    return {"tenant_id": w.id, "rule": rule}


DATA = {"period": "month", "start": "2026-01-01", "indicator": "ENERGY_TCE"}
SECURITY_READ = (S.ACCESS_ADMIN, S.AUDIT_READ)

#: One line per route: (method, path) -> what it needs and how to call it.
# fmt: off
EXPECTED: dict[tuple[str, str], Expect] = {
    ("GET", "/openapi.json"): Expect(PUBLIC, OWN, get("/openapi.json")),
    ("GET", "/docs"): Expect(PUBLIC, OWN, get("/docs")),
    ("GET", "/docs/oauth2-redirect"): Expect(PUBLIC, OWN, get("/docs/oauth2-redirect")),
    ("GET", "/redoc"): Expect(PUBLIC, OWN, get("/redoc")),
    ("GET", "/healthz"): Expect(PUBLIC, OWN, get("/healthz")),
    ("GET", "/metrics"): Expect(S.PLATFORM_ADMIN, OWN, get("/metrics")),
    ("GET", "/api/v1/me"): Expect(ANY, OWN, get("/api/v1/me")),
    ("GET", "/api/v1/overview"): Expect(S.DEVICES_READ, 403, get("/api/v1/overview", tenant=True)),
    ("POST", "/api/v1/auth/login"): Expect(PUBLIC, OWN, login_call),
    ("POST", "/api/v1/auth/logout"): Expect(ANY, OWN, logout_call, ok={"token": frozenset({422}), "session": frozenset({204})}),
    ("GET", "/api/v1/auth/me"): Expect(ANY, OWN, get("/api/v1/auth/me")),
    ("GET", "/api/v1/tenants"): Expect(S.DEVICES_READ, OWN, get("/api/v1/tenants")),
    ("POST", "/api/v1/tenants"): Expect(S.PLATFORM_ADMIN, OWN, create("/api/v1/tenants", lambda m, w: {"id": f"new-{next(m.serial)}", "name": "New"})),
    ("GET", "/api/v1/tenants/{tenant_id}"): Expect(S.DEVICES_READ, 404, on("GET", "/api/v1/tenants/{t}")),
    ("PATCH", "/api/v1/tenants/{tenant_id}"): Expect(S.TENANTS_WRITE, 404, on("PATCH", "/api/v1/tenants/{t}", {"retention_days": 30})),
    ("GET", "/api/v1/sites"): Expect(S.DEVICES_READ, 403, get("/api/v1/sites", tenant=True)),
    ("POST", "/api/v1/sites"): Expect(S.DEVICES_WRITE, 403, create("/api/v1/sites", lambda m, w: {"tenant_id": w.id, "id": m.fresh(w, "site"), "name": "S"})),
    ("GET", "/api/v1/sites/{site_id}"): Expect(S.DEVICES_READ, 404, on("GET", "/api/v1/sites/{site}")),
    ("GET", "/api/v1/sites/{site_id}/kpis"): Expect(S.DEVICES_READ, 404, on("GET", "/api/v1/sites/{site}/kpis")),
    ("GET", "/api/v1/kpis"): Expect(S.DEVICES_READ, 403, get("/api/v1/kpis", tenant=True)),
    ("GET", "/api/v1/kpis/history"): Expect(S.DEVICES_READ, 403, get("/api/v1/kpis/history", tenant=True)),
    ("GET", "/api/v1/sites/{site_id}/links"): Expect(S.DEVICES_READ, 404, on("GET", "/api/v1/sites/{site}/links")),
    ("GET", "/api/v1/thing-models"): Expect(S.DEVICES_READ, 403, get("/api/v1/thing-models", tenant=True)),
    ("POST", "/api/v1/thing-models"): Expect(S.DEVICES_WRITE, 403, create("/api/v1/thing-models", model_doc, tenant_id="{t}")),
    ("GET", "/api/v1/thing-models/{model_id}"): Expect(S.DEVICES_READ, 404, on("GET", "/api/v1/thing-models/{model}", admin_tenant=True)),
    ("GET", "/api/v1/thing-models/{model_id}/versions"): Expect(S.DEVICES_READ, 404, on("GET", "/api/v1/thing-models/{model}/versions", admin_tenant=True)),
    ("GET", "/api/v1/devices"): Expect(S.DEVICES_READ, 403, get("/api/v1/devices", tenant=True)),
    ("POST", "/api/v1/devices"): Expect(S.DEVICES_WRITE, 403, create("/api/v1/devices", lambda m, w: {"tenant_id": w.id, "site_id": w.site, "id": m.fresh(w, "dev"), "model_id": w.model})),
    ("GET", "/api/v1/devices/{device_id}"): Expect(S.DEVICES_READ, 404, on("GET", "/api/v1/devices/{device}")),
    ("PATCH", "/api/v1/devices/{device_id}"): Expect(S.DEVICES_WRITE, 404, on("PATCH", "/api/v1/devices/{device}", {"name": "renamed"})),
    ("POST", "/api/v1/devices/{device_id}/decommission"): Expect(S.DEVICES_WRITE, 404, fresh("POST", "/api/v1/devices/{key}/decommission", "device")),
    ("POST", "/api/v1/devices/{device_id}/credentials"): Expect(S.DEVICES_WRITE, 404, on("POST", "/api/v1/devices/{device}/credentials")),
    ("GET", "/api/v1/devices/{device_id}/transitions"): Expect(S.DEVICES_READ, 404, on("GET", "/api/v1/devices/{device}/transitions")),
    ("GET", "/api/v1/devices/{device_id}/latest"): Expect(S.TELEMETRY_READ, 404, on("GET", "/api/v1/devices/{device}/latest")),
    ("GET", "/api/v1/devices/{device_id}/telemetry"): Expect(S.TELEMETRY_READ, 404, on("GET", "/api/v1/devices/{device}/telemetry")),
    ("GET", "/api/v1/devices/{device_id}/events"): Expect(S.DEVICES_READ, 404, on("GET", "/api/v1/devices/{device}/events")),
    # Past authorization the command service checks the thing model, which has no "reset": 422.
    ("POST", "/api/v1/devices/{device_id}/commands/{command}"): Expect(S.COMMANDS_WRITE, 404, on("POST", "/api/v1/devices/{device}/commands/reset", {"timeout_s": 1}), ok=frozenset({422})),
    ("GET", "/api/v1/alarms"): Expect(S.ALARMS_READ, 403, get("/api/v1/alarms", tenant=True)),
    ("GET", "/api/v1/alarms/{alarm_id}"): Expect(S.ALARMS_READ, 404, on("GET", "/api/v1/alarms/{alarm}")),
    ("POST", "/api/v1/alarms/{alarm_id}/acknowledge"): Expect(S.ALARMS_WRITE, 404, fresh("POST", "/api/v1/alarms/{key}/acknowledge", "alarm")),
    ("POST", "/api/v1/alarms/{alarm_id}/clear"): Expect(S.ALARMS_WRITE, 404, fresh("POST", "/api/v1/alarms/{key}/clear", "alarm")),
    ("GET", "/api/v1/rules"): Expect(S.ALARMS_READ, 403, get("/api/v1/rules", tenant=True)),
    ("POST", "/api/v1/rules"): Expect(S.RULES_WRITE, 403, create("/api/v1/rules", rule_doc)),
    ("GET", "/api/v1/rules/{rule_id}"): Expect(S.ALARMS_READ, 404, on("GET", "/api/v1/rules/{rule}")),
    ("PUT", "/api/v1/rules/{rule_id}"): Expect(S.RULES_WRITE, 404, on("PUT", "/api/v1/rules/{rule}", {"rule": {"kind": "threshold", "name": "r", "metric": "flow", "op": ">", "value": 2}})),
    ("DELETE", "/api/v1/rules/{rule_id}"): Expect(S.RULES_WRITE, 404, fresh("DELETE", "/api/v1/rules/{key}", "rule")),
    ("GET", "/api/v1/tokens"): Expect(S.ACCESS_ADMIN, 403, get("/api/v1/tokens", tenant=True)),
    ("POST", "/api/v1/tokens"): Expect(S.ACCESS_ADMIN, 403, create("/api/v1/tokens", lambda m, w: {"name": "t", "role": "viewer", "tenant_id": w.id})),
    ("DELETE", "/api/v1/tokens/{token_id}"): Expect(S.ACCESS_ADMIN, 404, fresh("DELETE", "/api/v1/tokens/{key}", "token")),
    ("GET", "/api/v1/users"): Expect(S.ACCESS_ADMIN, 403, get("/api/v1/users", tenant=True)),
    ("POST", "/api/v1/users"): Expect(S.ACCESS_ADMIN, 403, create("/api/v1/users", lambda m, w: {"username": m.fresh(w, "user"), "role": "viewer", "tenant_id": w.id, "password": GOOD_PASSWORD})),
    ("PATCH", "/api/v1/users/{user_id}"): Expect(S.ACCESS_ADMIN, 404, on("PATCH", "/api/v1/users/{viewer_user}", {"disabled": False})),
    ("DELETE", "/api/v1/users/{user_id}"): Expect(S.ACCESS_ADMIN, 404, fresh("DELETE", "/api/v1/users/{key}", "user")),
    ("POST", "/api/v1/users/{user_id}/password"): Expect(S.ACCESS_ADMIN, 404, on("POST", "/api/v1/users/{spare_user}/password", {})),
    ("GET", "/api/v1/dead-letters"): Expect(S.DEVICES_READ, 403, get("/api/v1/dead-letters", tenant=True)),
    ("GET", "/api/v1/events"): Expect(S.DEVICES_READ, 403, get("/api/v1/events", tenant=True)),
    ("GET", "/api/v1/audit"): Expect(S.AUDIT_READ, 403, get("/api/v1/audit", tenant=True)),
    ("GET", "/api/v1/audit/verify"): Expect(S.AUDIT_READ, OWN, get("/api/v1/audit/verify")),
    ("GET", "/api/v1/security/events"): Expect(SECURITY_READ, 403, get("/api/v1/security/events", tenant=True)),
    ("GET", "/api/v1/security/events/{event_id}"): Expect(SECURITY_READ, 404, on("GET", "/api/v1/security/events/{event}")),
    ("POST", "/api/v1/security/events/{event_id}/acknowledge"): Expect(S.ACCESS_ADMIN, 404, on("POST", "/api/v1/security/events/{event}/acknowledge")),
    ("GET", "/api/v1/security/posture"): Expect(SECURITY_READ, 403, get("/api/v1/security/posture", tenant=True)),
    ("GET", "/api/v1/security/maintenance"): Expect(SECURITY_READ, 403, get("/api/v1/security/maintenance", tenant=True)),
    ("POST", "/api/v1/security/maintenance"): Expect(S.ACCESS_ADMIN, 403, create("/api/v1/security/maintenance", lambda m, w: {"tenant_id": w.id, "hours": 1, "reason": "matrix"})),
    ("POST", "/api/v1/devices/{device_id}/enrolment-tokens"): Expect(S.DEVICES_WRITE, 404, on("POST", "/api/v1/devices/{device}/enrolment-tokens")),
    # A device's own routes: the enrolment token or the current certificate is the credential.
    ("POST", "/api/v1/enrol"): Expect(PUBLIC, OWN, create("/api/v1/enrol", lambda m, w: {"token": "tge_not-a-token", "csr": "x"}), ok=frozenset({403})),
    ("POST", "/api/v1/certificates/rotate"): Expect(PUBLIC, OWN, create("/api/v1/certificates/rotate", lambda m, w: {"certificate": "x", "csr": "x", "signature": "AAAA"}), ok=frozenset({403, 422})),
    ("POST", "/api/v1/certificates/{serial}/revoke"): Expect(S.DEVICES_WRITE, 404, on("POST", "/api/v1/certificates/{serial}/revoke")),
    ("GET", "/api/v1/certificates"): Expect(S.DEVICES_READ, 403, get("/api/v1/certificates", tenant=True)),
    # The tenant CA's certificate and CRL are public: brokers and devices fetch them.
    ("GET", "/api/v1/tenants/{tenant_id}/ca.pem"): Expect(PUBLIC, OWN, on("GET", "/api/v1/tenants/{t}/ca.pem")),
    ("GET", "/api/v1/tenants/{tenant_id}/crl.pem"): Expect(PUBLIC, OWN, on("GET", "/api/v1/tenants/{t}/crl.pem")),
    # The data center views: no data center runs beside this platform, so past the
    # authorization they answer 503 (the catalog needs no store).
    ("GET", "/api/v1/data/catalog"): Expect(S.DATA_READ, OWN, get("/api/v1/data/catalog")),
    ("GET", "/api/v1/data/periods"): Expect(S.DATA_READ, OWN, get("/api/v1/data/periods", **DATA), ok=frozenset({503})),
    ("GET", "/api/v1/data/totals"): Expect(S.DATA_READ, OWN, get("/api/v1/data/totals", **DATA), ok=frozenset({503})),
    ("GET", "/api/v1/data/series"): Expect(S.DATA_READ, OWN, get("/api/v1/data/series", **DATA), ok=frozenset({503})),
    ("GET", "/api/v1/data/drill"): Expect(S.DATA_READ, OWN, get("/api/v1/data/drill", **DATA), ok=frozenset({503})),
    ("GET", "/api/v1/data/grid"): Expect(S.DATA_READ, OWN, get("/api/v1/data/grid", **DATA), ok=frozenset({503})),
    ("GET", "/api/v1/data/energy"): Expect(S.DATA_READ, OWN, get("/api/v1/data/energy", **DATA), ok=frozenset({503})),
    # Equipment health (apps.health): the matrix's pump has no health profile; its fleet is empty.
    ("GET", "/api/v1/apps/health"): Expect(S.TELEMETRY_READ, 403, get("/api/v1/apps/health", tenant=True)),
    ("GET", "/api/v1/apps/health/anomalies"): Expect(S.TELEMETRY_READ, 403, get("/api/v1/apps/health/anomalies", tenant=True)),
    ("GET", "/api/v1/apps/health/{device_id}/history"): Expect(S.TELEMETRY_READ, 404, on("GET", "/api/v1/apps/health/{device}/history")),
    ("GET", "/api/v1/apps/work-orders"): Expect(S.ALARMS_READ, 403, get("/api/v1/apps/work-orders", tenant=True)),
    ("POST", "/api/v1/apps/work-orders"): Expect(S.ALARMS_WRITE, 403, create("/api/v1/apps/work-orders", lambda m, w: {"tenant_id": w.id, "device_id": w.device, "cause": m.fresh(w, "cause"), "title": "matrix"})),
    ("POST", "/api/v1/apps/work-orders/{order_id}/transition"): Expect(S.ALARMS_WRITE, 404, work_order_transition),
    ("GET", "/api/v1/apps/models"): Expect(S.DEVICES_READ, OWN, get("/api/v1/apps/models")),
    # OEE of a device (the matrix's pump has no production profile: an empty report, still its own).
    ("GET", "/api/v1/apps/oee"): Expect(S.TELEMETRY_READ, 404, on("GET", "/api/v1/apps/oee?device={device}&from=-1h")),
    ("GET", "/api/v1/apps/oee/downtime"): Expect(S.TELEMETRY_READ, 404, on("GET", "/api/v1/apps/oee/downtime?device={device}&from=-1h")),
    ("GET", "/api/v1/apps/energy"): Expect(S.TELEMETRY_READ, 404, on("GET", "/api/v1/apps/energy?device={device}&from=-1h")),
    ("GET", "/api/v1/apps/energy/anomalies"): Expect(S.TELEMETRY_READ, 404, on("GET", "/api/v1/apps/energy/anomalies?device={device}&from=-1h")),
    ("GET", "/api/v1/apps/energy/tariffs/{site_id}"): Expect(S.TELEMETRY_READ, 404, on("GET", "/api/v1/apps/energy/tariffs/{site}", admin_tenant=True)),
    ("PUT", "/api/v1/apps/energy/tariffs/{site_id}"): Expect(S.DEVICES_WRITE, 404, on("PUT", "/api/v1/apps/energy/tariffs/{site}", CHINA_INDUSTRIAL_DEFAULT.to_json(), admin_tenant=True)),
    ("DELETE", "/api/v1/apps/energy/tariffs/{site_id}"): Expect(S.DEVICES_WRITE, 404, on("DELETE", "/api/v1/apps/energy/tariffs/{site}", admin_tenant=True)),
}
# fmt: on


def api_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) the app serves, except the dashboard's static files."""
    found = []
    for route in iter_route_contexts(app.routes):
        methods = route.methods
        if not methods:
            continue  # the dashboard mount: static files, no API
        found.extend((method, str(route.path)) for method in sorted(methods - {"HEAD"}))
    return found


def expected(entry: Expect, who: Who, target: World) -> frozenset[int]:
    ok = entry.ok if isinstance(entry.ok, frozenset) else entry.ok[who.kind]
    if entry.scope == PUBLIC:
        return ok
    if not who.valid:
        return frozenset({401})
    if entry.scope != ANY:
        needed = entry.scope if isinstance(entry.scope, tuple) else (entry.scope,)
        if not any(ApiScope(s) in who.scopes for s in needed):
            return frozenset({403})
    if who.platform or who.world is target or entry.cross is None:
        return ok
    return frozenset({entry.cross})


# -- the world ---------------------------------------------------------------------------------


async def build_world(m: Matrix, key: str, tenant_id: str, prefix: str) -> World:
    platform = m.platform
    w = World(key=key, id=tenant_id, prefix=prefix)
    w.ids.add(tenant_id)
    await platform.registry.create_tenant(Tenant(id=tenant_id, name=f"{prefix} works"))
    w.site = m.fresh(w, "site")
    await platform.registry.create_site(Site(tenant_id=tenant_id, id=w.site, name="Plant"))
    w.model = m.fresh(w, "pump")
    await platform.registry.put_thing_model(
        tenant_id, PUMP_MODEL.model_copy(update={"id": w.model})
    )
    w.device = await m.device(w)
    w.rule = await m.rule(w)
    w.alarm = await m.alarm(w)
    w.viewer_user, _ = await m.user(w)
    w.spare_user, _ = await m.user(w)
    _, w.login_user = await m.user(w)
    return w


async def security_event(m: Matrix, w: World) -> str:
    """A security event of the tenant: a refused publish of its device."""
    from tiangong.network.broker import BrokerRefusal  # noqa: PLC0415

    monitor = m.platform.security
    monitor.on_broker_refusal(
        BrokerRefusal(
            kind="topic_publish",
            username=w.device,
            tenant_id=w.id,
            device_id=w.device,
            topic=f"tiangong/{w.id}/{w.site}/{w.device}/elsewhere",
            source="127.0.0.1:40000",
            detail="matrix",
        )
    )
    await monitor.drain()
    events, _ = await monitor.events(w.id)
    assert events, f"no security event recorded for {w.id}"
    w.ids.add(events[0].id)
    return str(events[0].id)


async def certificate(m: Matrix, w: World) -> str:
    """A device certificate of the tenant (its serial, hex), issued by the tenant's CA."""
    from tiangong.security.ca import generate_device_key_and_csr  # noqa: PLC0415

    ca = await asyncio.to_thread(m.platform.certificates.tenant_ca, w.id)
    token = await asyncio.to_thread(ca.create_enrolment_token, w.device)
    _, csr = generate_device_key_and_csr(w.device)
    issued = await asyncio.to_thread(ca.enrol, token, csr)
    serial = format(issued.serial, "x")
    w.ids.add(serial)
    return serial


async def principals(m: Matrix) -> list[Who]:
    platform = m.platform
    everyone = [
        Who(
            "platform",
            None,
            {"Authorization": f"Bearer {platform.admin_token}"},
            frozenset(ApiScope),
        )
    ]
    for w in m.worlds.values():
        for role in (ApiRole.TENANT_ADMIN, ApiRole.OPERATOR, ApiRole.VIEWER, ApiRole.AUDITOR):
            _, secret = await m.token(w, role)
            who = Who(f"{w.key}:{role.value}", w, {"Authorization": f"Bearer {secret}"})
            everyone.append(who)
        _, name = await m.user(w, ApiRole.TENANT_ADMIN)
        session = await m.session(w, name)
        everyone.append(
            Who(f"{w.key}:session", w, {"Authorization": f"Bearer {session}"}, kind="session")
        )
        _, narrow = await m.token(w, ApiRole.VIEWER, scopes=[ApiScope.DEVICES_READ])
        everyone.append(
            Who(f"{w.key}:viewer-devices-only", w, {"Authorization": f"Bearer {narrow}"})
        )
    for who in everyone[1:]:
        verified = await (
            platform.users.verify_session(who.header["Authorization"][7:])
            if who.kind == "session"
            else platform.tokens.verify(who.header["Authorization"][7:])
        )
        assert verified is not None
        who.scopes = verified.scopes
    a = m.worlds["A"]
    _, expired = await m.token(
        a, ApiRole.TENANT_ADMIN, expires_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    revoked_id, revoked = await m.token(a, ApiRole.TENANT_ADMIN)
    await platform.tokens.revoke(revoked_id, None)
    everyone += [
        Who("anonymous", a, {}, valid=False),
        Who("expired", a, {"Authorization": f"Bearer {expired}"}, valid=False),
        Who("revoked", a, {"Authorization": f"Bearer {revoked}"}, valid=False),
        Who("garbage", a, {"Authorization": "Bearer tgs_made-up-session"}, valid=False),
    ]
    return everyone


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[PlatformEnv]:
    # The API's own rate limits would answer 429 to a walk of thousands of requests.
    async with running_platform(
        tmp_path,
        embedded_broker=True,
        wait_connected=False,
        api_rate_limit=0,
        api_token_rate_limit=0,
    ) as running:
        running.platform.users.hasher = FAST
        yield running


async def test_every_route_every_role_both_tenants(env: PlatformEnv) -> None:
    platform = env.platform
    app = create_app(platform)
    routes = api_routes(app)
    missing = sorted(set(routes) - set(EXPECTED))
    assert not missing, f"routes without a line in EXPECTED (add one): {missing}"
    stale = sorted(set(EXPECTED) - set(routes))
    assert not stale, f"lines in EXPECTED for routes that no longer exist: {stale}"

    m = Matrix(platform)
    m.worlds["A"] = await build_world(m, "A", "alpha-works", "aw")
    m.worlds["B"] = await build_world(m, "B", "beta-mills", "bm")
    if hasattr(platform, "security"):
        for w in m.worlds.values():
            w.event = await security_event(m, w)
    if hasattr(platform, "certificates"):
        for w in m.worlds.values():
            w.serial = await certificate(m, w)
    everyone = await principals(m)

    failures: list[str] = []
    leaks: list[str] = []
    calls = 0
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://platform") as client:
        for method, path in routes:
            entry = EXPECTED[(method, path)]
            for who in everyone:
                targets = list(m.worlds.values()) if who.valid else [m.worlds["A"]]
                for target in targets:
                    call = await entry.build(m, target, who)
                    response = await client.request(
                        call.method,
                        call.path,
                        params=call.params,
                        json=call.body,
                        headers=call.headers if call.headers is not None else who.header,
                    )
                    calls += 1
                    want = expected(entry, who, target)
                    if response.status_code not in want:
                        failures.append(
                            f"{method} {path} as {who.key} on {target.key}: "
                            f"{response.status_code} (want {sorted(want)}) {response.text[:160]}"
                        )
                    if who.world is None or not who.valid or entry.scope == PUBLIC:
                        continue
                    other = next(w for w in m.worlds.values() if w is not who.world)
                    asked = call.text()
                    who.world.named.update(i for i in other.ids if i in asked)
                    # Only the audit trail may show what the tenant's own callers asked for.
                    audit = path.startswith("/api/v1/audit")
                    unknown = other.ids - who.world.named if audit else other.ids
                    seen = [i for i in unknown if i not in asked and i in response.text]
                    if seen:
                        leaks.append(f"{method} {path} as {who.key} on {target.key}: {seen}")
    assert not leaks, "other tenants' ids in responses:\n" + "\n".join(leaks)
    assert not failures, f"{len(failures)} of {calls} calls answered wrong:\n" + "\n".join(failures)
