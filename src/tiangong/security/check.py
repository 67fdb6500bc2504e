"""``tiangong security check``: a running deployment against a protection baseline.

The checklist follows the spirit of the industrial internet security protection guides (工业互联网
安全防护指南): encrypted transport, no default credentials, authentication and authorization on
every interface, least privilege, retention and backup set, an intact audit trail, and
certificates not about to lapse. Each item probes the deployment from outside, as an attacker
or an auditor would, with the credentials the operator gives:

=========================  ==========================================================  ========
id                         what is probed                                              severity
=========================  ==========================================================  ========
api-plain-http             the API URL is ``http://`` on a non-loopback address        high
api-unreachable            ``/healthz`` does not answer                                high
api-default-credentials    a well-known user/password signs in                         high
api-route-unauthenticated  a route in the OpenAPI answers 2xx without a token           high
api-route-error            a route answers 5xx to an unauthenticated request           medium
tokens-without-expiry      active tokens that never expire                             medium
platform-admins            more than ``max_platform_admins`` active platform admins    medium
tokens-unused              tokens never used for 30 days, or not for 90                low
retention                  a tenant keeps raw data forever (> 10 years) or not at all  low
backup                     Tiangong cannot see backups: a reminder                     info
audit-chain-broken         ``/api/v1/audit/verify`` says an entry was edited/removed   high
audit-unverified           the token may not read the chain's state                    info
mqtt-plain                 MQTT without TLS on a non-loopback address                  high
mqtt-anonymous             the broker accepts a connect without credentials           high
mqtt-default-credentials   the broker accepts a well-known user/password               high
secret-file-readable       a key or token file in the data dir is group/other-readable high
ca-expiring                device certificates expiring within 30 days                 medium
ca-certificate-expiring    a tenant CA's own certificate expires within 30 days        high
ca-unreadable              a tenant CA directory cannot be opened                      info
=========================  ==========================================================  ========

Probing has side effects an operator should expect: the sign-in attempts count as failed logins
(and may show in security monitoring), and each unauthenticated probe of a changing route is
recorded in the audit trail as an anonymous 401. Nothing is changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import stat
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import httpx

__all__ = [
    "DEFAULT_CREDENTIALS",
    "CheckReport",
    "Finding",
    "Severity",
    "check_api",
    "check_data_dir",
    "check_deployment",
    "check_mqtt",
    "probe_routes",
]

#: Seconds an idle connection of the probes is kept for reuse (below common server timeouts).
_KEEPALIVE_SECONDS: Final = 1.0

#: User names and passwords that ship as defaults with brokers, platforms and devices.
DEFAULT_CREDENTIALS: Final = (
    ("admin", "admin"),
    ("admin", "public"),
    ("admin", "password"),
    ("admin", "changeme"),
    ("root", "root"),
    ("guest", "guest"),
    ("tiangong", "tiangong"),
)
#: Routes meant to answer without a bearer token (their own credential, or none).
PUBLIC_ROUTES: Final = frozenset(
    {"/healthz", "/api/v1/auth/login", "/api/v1/enrol", "/api/v1/certificates/rotate"}
)
_SECRET_NAMES: Final = (
    re.compile(r"admin-token$"),
    re.compile(r".*key.*\.pem$"),
    re.compile(r".*\.key$"),
    re.compile(r".*secret.*"),
    re.compile(r"passwd$"),
    re.compile(r"private.*"),
)


class Severity(StrEnum):
    """How bad a finding is; any ``high`` makes the check fail."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"


@dataclass(frozen=True, slots=True)
class Finding:
    """One deviation from the baseline.

    Attributes:
        id: the checklist item (see the module's table).
        severity: how bad it is.
        title: what is wrong, in one line.
        evidence: what was seen.
        fix: how to fix it.
    """

    id: str
    severity: Severity
    title: str
    evidence: str
    fix: str


@dataclass
class CheckReport:
    """The findings of a check, and what was checked."""

    findings: list[Finding] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """True when a high finding exists (the CLI exits non-zero)."""
        return any(f.severity is Severity.HIGH for f in self.findings)

    def add(self, *findings: Finding) -> None:
        """Add findings."""
        self.findings.extend(findings)

    def ids(self) -> set[str]:
        """The ids of the findings (for tests and scripts)."""
        return {f.id for f in self.findings}

    def to_dict(self) -> dict[str, object]:
        """As plain JSON data."""
        return {
            "failed": self.failed,
            "checked": self.checked,
            "findings": [
                {
                    "id": f.id,
                    "severity": f.severity.value,
                    "title": f.title,
                    "evidence": f.evidence,
                    "fix": f.fix,
                }
                for f in self.findings
            ],
        }


def _loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# -- the API ---------------------------------------------------------------------------------------


async def probe_routes(anonymous: httpx.AsyncClient, openapi: Mapping[str, Any]) -> list[Finding]:
    """Call every operation in ``openapi`` without a token; each must refuse (401).

    Path parameters are filled with a placeholder and changing operations get an empty JSON
    body, so no probe can change anything even where a route forgot its check.
    """
    findings: list[Finding] = []
    for path, operations in sorted(dict(openapi.get("paths", {})).items()):
        if path in PUBLIC_ROUTES or not isinstance(operations, Mapping):
            continue
        concrete = re.sub(r"\{[^}]+\}", "probe-0", path)
        for method in operations:
            if method.upper() not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
                continue
            try:
                response = await anonymous.request(
                    method.upper(), concrete, json={} if method.upper() != "GET" else None
                )
            except httpx.HTTPError as exc:
                findings.append(
                    Finding(
                        "api-route-error",
                        Severity.MEDIUM,
                        f"{method.upper()} {path} did not answer",
                        f"{type(exc).__name__}: {exc}",
                        "Check the server log for this route.",
                    )
                )
                continue
            if response.is_success:
                findings.append(
                    Finding(
                        "api-route-unauthenticated",
                        Severity.HIGH,
                        f"{method.upper()} {path} answers without authentication",
                        f"{response.status_code} to a request without a token",
                        "Give the route the Caller dependency (or a scope dependency) so it"
                        " answers 401 without a valid token.",
                    )
                )
            elif response.status_code >= 500:
                findings.append(
                    Finding(
                        "api-route-error",
                        Severity.MEDIUM,
                        f"{method.upper()} {path} fails on an unauthenticated request",
                        f"{response.status_code}: {response.text[:200]}",
                        "Bad input must get a 4xx answer: check the route's validation.",
                    )
                )
    return findings


async def _default_logins(
    anonymous: httpx.AsyncClient, openapi: Mapping[str, Any]
) -> list[Finding]:
    if "/api/v1/auth/login" not in dict(openapi.get("paths", {})):
        return []
    accepted = []
    for username, password in DEFAULT_CREDENTIALS[:5]:  # few: the login throttle counts them
        response = await anonymous.post(
            "/api/v1/auth/login", json={"username": username, "password": password}
        )
        if response.is_success:
            accepted.append(f"{username}/{password}")
    if not accepted:
        return []
    return [
        Finding(
            "api-default-credentials",
            Severity.HIGH,
            "the API accepts a well-known user name and password",
            "signed in as " + ", ".join(accepted),
            "Change these users' passwords now (tiangong users passwd) or disable them.",
        )
    ]


def _token_findings(
    tokens: Iterable[Mapping[str, Any]], *, max_platform_admins: int, now: datetime
) -> list[Finding]:
    active = [t for t in tokens if not t.get("revoked_at")]
    findings: list[Finding] = []
    endless = [t for t in active if not t.get("expires_at")]
    if endless:
        findings.append(
            Finding(
                "tokens-without-expiry",
                Severity.MEDIUM,
                f"{len(endless)} active token(s) never expire",
                ", ".join(f"{t['id']} ({t.get('name', '')}, {t.get('role')})" for t in endless),
                "Issue tokens with expires_at and revoke the endless ones; the bootstrap"
                " admin token is meant to be replaced by named, expiring tokens or users.",
            )
        )
    admins = [t for t in active if t.get("role") == "platform_admin"]
    if len(admins) > max_platform_admins:
        findings.append(
            Finding(
                "platform-admins",
                Severity.MEDIUM,
                f"{len(admins)} active platform-admin tokens (more than {max_platform_admins})",
                ", ".join(str(t["id"]) for t in admins),
                "Least privilege: give people tenant roles, keep few platform admins, revoke"
                " the rest (DELETE /api/v1/tokens/{id}).",
            )
        )
    stale = []
    for t in active:
        created = _when(t.get("created_at")) or now
        used = _when(t.get("last_used_at"))
        if (used is None and now - created > timedelta(days=30)) or (
            used is not None and now - used > timedelta(days=90)
        ):
            stale.append(str(t["id"]))
    if stale:
        findings.append(
            Finding(
                "tokens-unused",
                Severity.LOW,
                f"{len(stale)} token(s) unused for a long time",
                ", ".join(stale),
                "Revoke tokens nobody uses: each is a credential that can leak.",
            )
        )
    return findings


def _when(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    with contextlib.suppress(ValueError):
        moment = datetime.fromisoformat(value)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return None


async def check_api(
    url: str,
    token: str | None,
    *,
    probe_seconds: float = 5.0,
    max_platform_admins: int = 2,
    transport: httpx.AsyncBaseTransport | None = None,
) -> CheckReport:
    """The API's items of the checklist (see the module's table).

    Args:
        url: the platform's base URL.
        token: an API token (a platform admin's sees everything; others see less).
        probe_seconds: seconds per request.
        max_platform_admins: platform-admin tokens tolerated.
        transport: an httpx transport (tests may serve the app in process).
    """
    report = CheckReport(checked=["api"])
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "http" and not _loopback(host):
        report.add(
            Finding(
                "api-plain-http",
                Severity.HIGH,
                "the API is served over plain HTTP beyond this machine",
                f"{url}: tokens and passwords cross the network unencrypted",
                "Put the API behind a TLS-terminating reverse proxy (nginx, Caddy) and keep"
                " the platform's own listener on 127.0.0.1.",
            )
        )
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # A connection idle while the other client probes every route must not be reused after
    # the server has closed it (uvicorn closes idle connections after 5 s, httpx would keep
    # them 5 s too and then read "server disconnected"): give them up well before.
    limits = httpx.Limits(keepalive_expiry=_KEEPALIVE_SECONDS)
    async with (
        httpx.AsyncClient(
            base_url=url, timeout=probe_seconds, transport=transport, limits=limits
        ) as anonymous,
        httpx.AsyncClient(
            base_url=url, timeout=probe_seconds, headers=headers, transport=transport, limits=limits
        ) as api,
    ):
        try:
            health = await anonymous.get("/healthz")
            health.raise_for_status()
            schema = await api.get("/openapi.json")
            openapi: Mapping[str, Any] = schema.json() if schema.is_success else {}
        except (httpx.HTTPError, ValueError) as exc:
            report.add(
                Finding(
                    "api-unreachable",
                    Severity.HIGH,
                    "the API does not answer",
                    f"{url}/healthz: {type(exc).__name__}: {exc}",
                    "Check that the platform runs and that --url is right.",
                )
            )
            return report
        report.add(*await probe_routes(anonymous, openapi))
        report.add(*await _default_logins(anonymous, openapi))
        if not token:
            return report
        tokens = await api.get("/api/v1/tokens")
        if tokens.is_success:
            report.add(
                *_token_findings(
                    tokens.json(), max_platform_admins=max_platform_admins, now=datetime.now(UTC)
                )
            )
        tenants = await api.get("/api/v1/tenants")
        if tenants.is_success:
            report.add(*_retention_findings(tenants.json()))
        report.add(
            Finding(
                "backup",
                Severity.INFO,
                "backups are outside what Tiangong can see",
                "no backup setting exists in the platform",
                "Back up the data directory (or pg_dump the metadata database) and the CA"
                " directories daily, keep a copy off the machine, and test a restore"
                " (docs/operations.md).",
            )
        )
        verify = await api.get("/api/v1/audit/verify")
        if verify.is_success:
            state = verify.json()
            if not state.get("ok", False):
                report.add(
                    Finding(
                        "audit-chain-broken",
                        Severity.HIGH,
                        "the audit trail was tampered with",
                        f"entry {state.get('first_broken')}: {state.get('reason')}",
                        "Treat it as an incident: keep a copy of the database and the"
                        " checkpoint, find who had write access, restore from a backup"
                        " (tiangong audit verify --json names the entry).",
                    )
                )
        else:
            report.add(
                Finding(
                    "audit-unverified",
                    Severity.INFO,
                    "the audit chain was not checked",
                    f"/api/v1/audit/verify answered {verify.status_code}",
                    "Run the check with a platform-admin or auditor token.",
                )
            )
    return report


def _retention_findings(tenants: Iterable[Mapping[str, Any]]) -> list[Finding]:
    odd = [
        f"{t.get('id')}: {t.get('retention_days')} days"
        for t in tenants
        if not isinstance(t.get("retention_days"), int) or not 0 < t["retention_days"] <= 3650
    ]
    if not odd:
        return []
    return [
        Finding(
            "retention",
            Severity.LOW,
            "raw-data retention is unset or longer than ten years",
            "; ".join(odd),
            "Set retention_days per tenant (PATCH /api/v1/tenants/{id}) to what the data's"
            " grade and your records policy require.",
        )
    ]


# -- MQTT ------------------------------------------------------------------------------------------


async def _mqtt_accepts(
    host: str, port: int, username: str | None, password: str | None, probe_seconds: float
) -> bool | None:
    """True: connected; False: refused; None: nothing MQTT answered."""
    from tiangong.network.errors import ConnectRefusedError, NetworkError  # noqa: PLC0415
    from tiangong.network.mqtt import MqttClient  # noqa: PLC0415

    client = MqttClient(
        host=host,
        port=port,
        client_id=f"tiangong-check-{uuid.uuid4().hex[:8]}",
        username=username,
        password=password,
        reconnect=False,
        connect_timeout=probe_seconds,
    )
    try:
        async with asyncio.timeout(probe_seconds + 1), client:
            return True
    except ConnectRefusedError:
        return False
    except (NetworkError, OSError, TimeoutError):
        return None


async def check_mqtt(host: str, port: int, *, probe_seconds: float = 5.0) -> CheckReport:
    """The broker's items: plain listener, anonymous connect, default credentials."""
    report = CheckReport(checked=["mqtt"])
    anonymous = await _mqtt_accepts(host, port, None, None, probe_seconds)
    if anonymous is None:
        return report  # not plain MQTT here (TLS, or nothing): nothing more to probe
    if not _loopback(host):
        report.add(
            Finding(
                "mqtt-plain",
                Severity.HIGH,
                "MQTT without TLS is reachable beyond this machine",
                f"{host}:{port} speaks plain MQTT: device secrets cross the network in clear",
                "Serve devices on the TLS listener with client certificates and bind the"
                " plain listener to 127.0.0.1 (docs/security.md, MQTT over TLS).",
            )
        )
    if anonymous:
        report.add(
            Finding(
                "mqtt-anonymous",
                Severity.HIGH,
                "the broker accepts clients without credentials",
                f"{host}:{port} accepted a CONNECT with no user name",
                "Mosquitto: allow_anonymous false and a password_file/ACL from"
                " `tiangong broker mosquitto-files`; the embedded broker never allows it.",
            )
        )
        return report  # every credential would be accepted too: nothing more to learn
    accepted = [
        f"{user}/{password}"
        for user, password in DEFAULT_CREDENTIALS
        if await _mqtt_accepts(host, port, user, password, probe_seconds)
    ]
    if accepted:
        report.add(
            Finding(
                "mqtt-default-credentials",
                Severity.HIGH,
                "the broker accepts a well-known user name and password",
                f"{host}:{port} accepted " + ", ".join(accepted),
                "Remove these users from the broker's password file; devices get generated"
                " secrets or certificates.",
            )
        )
    return report


# -- the data directory ---------------------------------------------------------------------------


def _secret_files(data_dir: Path) -> Iterable[Path]:
    for path in data_dir.rglob("*"):
        if path.is_file() and any(p.match(path.name) for p in _SECRET_NAMES):
            yield path


def check_data_dir(data_dir: Path, *, within: timedelta = timedelta(days=30)) -> CheckReport:
    """File permissions of secrets, and the tenant CAs under ``data_dir/ca``."""
    report = CheckReport(checked=["data-dir"])
    exposed = [
        f"{path} ({stat.filemode(path.stat().st_mode)})"
        for path in _secret_files(data_dir)
        if path.stat().st_mode & 0o077
    ]
    if exposed:
        report.add(
            Finding(
                "secret-file-readable",
                Severity.HIGH,
                "secret files are readable by other users",
                "; ".join(exposed),
                "chmod 600 each file (and 700 its directory); the platform writes them 0600:"
                " something copied or restored them with a wider mode.",
            )
        )
    ca_root = data_dir / "ca"
    if not ca_root.is_dir():
        return report
    from tiangong.security.ca import TenantCA  # noqa: PLC0415 - cryptography loads slowly

    now = datetime.now(UTC)
    for directory in sorted(p for p in ca_root.iterdir() if (p / "ca.pem").exists()):
        try:
            ca = TenantCA.open(directory)
        except Exception as exc:  # noqa: BLE001 - an unreadable CA is a finding, not a crash
            report.add(
                Finding(
                    "ca-unreadable",
                    Severity.INFO,
                    f"the CA in {directory} was not opened",
                    f"{type(exc).__name__}: {exc}",
                    "A passphrase-protected CA cannot be checked offline: run the check where"
                    " the passphrase is available, or check `expiring` by hand.",
                )
            )
            continue
        with ca:
            ca_expires = ca.certificate.not_valid_after_utc
            if ca_expires <= now + within:
                report.add(
                    Finding(
                        "ca-certificate-expiring",
                        Severity.HIGH,
                        f"the CA certificate of tenant {ca.tenant_id} expires soon",
                        f"{directory}/ca.pem expires {ca_expires.isoformat()}",
                        "Create a new tenant CA, distribute its ca.pem to the brokers and"
                        " re-enrol the devices before the old one lapses.",
                    )
                )
            expiring = ca.expiring(within)
            if expiring:
                report.add(
                    Finding(
                        "ca-expiring",
                        Severity.MEDIUM,
                        f"{len(expiring)} device certificate(s) of tenant {ca.tenant_id}"
                        f" expire within {within.days} days",
                        ", ".join(
                            f"{r.device_id} ({r.not_after.date().isoformat()})"
                            for r in expiring[:20]
                        ),
                        "Make sure these devices rotate (they may from 30 days before expiry);"
                        " a device that cannot needs a new enrolment token.",
                    )
                )
    return report


# -- everything ------------------------------------------------------------------------------------


async def check_deployment(
    *,
    url: str | None,
    token: str | None,
    mqtt: tuple[str, int] | None = None,
    data_dir: Path | None = None,
    probe_seconds: float = 5.0,
    max_platform_admins: int = 2,
) -> CheckReport:
    """Run every applicable part of the checklist and gather the findings."""
    report = CheckReport()
    if url:
        api = await check_api(
            url, token, probe_seconds=probe_seconds, max_platform_admins=max_platform_admins
        )
        report.add(*api.findings)
        report.checked += api.checked
    if mqtt is not None:
        broker = await check_mqtt(*mqtt, probe_seconds=probe_seconds)
        report.add(*broker.findings)
        report.checked += broker.checked
    if data_dir is not None:
        files = await asyncio.to_thread(check_data_dir, data_dir)
        report.add(*files.findings)
        report.checked += files.checked
    order = list(Severity)
    report.findings.sort(key=lambda f: (order.index(f.severity), f.id))
    return report
