"""Settings of a platform instance, from arguments or ``TIANGONG_*`` environment variables.

Secure by default: an administrator token or broker password from the environment is refused
when it is short or a well-known default (``admin``, ``changeme``...) unless ``demo`` is set; the
local demo generates its own secrets and never needs one. See ``docs/operations.md``.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Final, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tiangong.platform.errors import ConfigurationError
from tiangong.security.credentials import TOKEN_PREFIX

__all__ = ["PlatformSettings"]

#: Passwords and tokens that ship as defaults with some broker or platform: never accepted.
WELL_KNOWN_SECRETS: Final = frozenset(
    {
        "admin",
        "administrator",
        "changeme",
        "default",
        "guest",
        "mosquitto",
        "password",
        "public",
        "root",
        "secret",
        "tiangong",
        "test",
        "123456",
    }
)


class PlatformSettings(BaseSettings):
    """Everything a platform instance needs to know to start.

    Attributes:
        data_dir: where embedded databases and the generated admin token live.
        demo: the local demo (``tiangong up``): generated secrets are printed for the user.
        http_host: address of the REST API and dashboard.
        http_port: port of the REST API and dashboard (0: any free port; None: no HTTP).
        mqtt_host: broker address.
        mqtt_port: broker port.
        mqtt_username: the platform's own broker user (external brokers).
        mqtt_password: its password.
        mqtt_version: 5 (Mosquitto, EMQX) or 4 (MQTT 3.1.1; the embedded broker).
        mqtt_client_id: client id of the ingest connection (its persistent session).
        mqtt_shared_group: subscribe as an MQTT 5 shared subscription group so several
            platform instances split the load.
        max_message_bytes: the largest device message accepted.
        store: ``duckdb`` (embedded) or ``postgres``.
        postgres_dsn: PostgreSQL connection string for ``store=postgres``.
        duckdb_memory_limit: DuckDB's buffer cap (e.g. ``256MB``); more memory does not make
            ingest faster, it only caches more (measured: same write speed at 256 MB and 1 GB).
        database_url: metadata database URL (default: SQLite in ``data_dir``).
        admin_token: a platform-admin token to accept (deployments with a secret manager).
        offline_after: seconds of silence after which an online device is marked offline.
        rollup_interval: seconds between rollup refreshes.
        kpi_interval: seconds between KPI samples.
        retention_interval: seconds between retention runs.
        sparkplug_enabled: run the Sparkplug B host application (its own MQTT connection,
            ``spBv1.0/#``). Sparkplug needs every message of an edge node at one host, so in a
            deployment of several instances exactly one runs it: turn it off on the others.
        sparkplug_host_id: the Sparkplug host id; its STATE topic is
            ``spBv1.0/STATE/<host id>``, which edge nodes name as their primary host.
        sparkplug_rebirth_interval: seconds between two rebirth requests to the same node.
        mqtt_tls_port: port of the embedded broker's TLS listener, where devices log in with
            the client certificate their tenant's CA issued (None: no TLS listener).
        mosquitto_files: keep an external Mosquitto's password file, ACL (and, with
            ``mosquitto_tls_port``, its TLS files and listener block) in this directory, equal
            to the registry and the tenants' CAs, and make it reload when they change.
        mosquitto_tls_port: the Mosquitto TLS listener's port for device certificates.
        mosquitto_pid_file: Mosquitto's pid file: reload it with SIGHUP.
        mosquitto_reload_command: or a command that reloads it (``systemctl reload mosquitto``).
        mosquitto_check: seconds between two looks for changes (a revocation through the API
            is acted on at once).
        trusted_proxies: addresses or networks of the reverse proxies in front of the API whose
            ``X-Forwarded-For`` names the client (for rate limits and the audit trail). None by
            default: the header is then ignored, whoever sends it.
        mqtt_tls_hostnames: extra DNS names or IP addresses the broker's server certificate
            is valid for (``localhost`` and ``127.0.0.1`` always are).
        mqtt_require_certificates: refuse device password logins on the embedded broker; turn
            it on once every device has enrolled for a certificate.
        mqtt_revocation_check: seconds between checks of connected certificates against
            revocations made by other processes (the API's revocations act at once).
        session_idle_minutes: a signed-in session ends after this long without a request.
        session_hours: a session ends this long after sign-in, whatever its use.
        token_default_days: lifetime of a new API token whose issuer names no expiry.
        token_max_days: the longest lifetime a new API token may be given.
        api_rate_limit: API requests per second per client address (0: no limit).
        api_burst: API requests a client address may send at once.
        api_token_rate_limit: API requests per second per token or session (0: no limit).
        api_token_burst: API requests a token or session may send at once.
        api_max_body_bytes: largest API request body (413 beyond).
        ingest_device_messages: MQTT messages per second per device (0: no limit); a
            gateway's budget is multiplied by 1 + its number of child devices.
        ingest_device_points: data points per second per device (0: no limit), scaled alike.
        ingest_device_burst: seconds of a device's rate it may send at once.
    """

    model_config = SettingsConfigDict(env_prefix="TIANGONG_", extra="ignore")

    data_dir: Path = Path(".tiangong")
    demo: bool = False
    http_host: str = "127.0.0.1"
    http_port: int | None = Field(default=8080, ge=0, le=65535)
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = Field(default=1884, ge=1, le=65535)
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
    mqtt_version: Literal[4, 5] = 5
    mqtt_client_id: str = "tiangong-platform"
    mqtt_shared_group: str | None = None
    max_message_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    store: Literal["duckdb", "postgres"] = "duckdb"
    postgres_dsn: str | None = None
    duckdb_memory_limit: str = Field(
        default="256MB", pattern=r"^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$"
    )
    database_url: str | None = None
    admin_token: SecretStr | None = None
    offline_after: float = Field(default=300.0, gt=0)
    rollup_interval: float = Field(default=10.0, gt=0)
    kpi_interval: float = Field(default=60.0, gt=0)
    retention_interval: float = Field(default=3600.0, gt=0)
    sparkplug_enabled: bool = True
    # Sparkplug ids may hold any UTF-8 but MQTT's level separator and wildcards.
    sparkplug_host_id: str = Field(default="tiangong", pattern=r"^[^/+#\x00]{1,128}$")
    sparkplug_rebirth_interval: float = Field(default=5.0, ge=0)
    # Device certificates on MQTT (docs/security.md, "MQTT over TLS with client certificates").
    mqtt_tls_port: int | None = Field(default=None, ge=1, le=65535)
    mqtt_tls_hostnames: list[str] = Field(default_factory=list)
    mqtt_require_certificates: bool = False
    mqtt_revocation_check: float = Field(default=2.0, gt=0)
    # An external Mosquitto kept in step (platform/mosquitto_keeper.py, docs/security.md).
    mosquitto_files: Path | None = None
    mosquitto_tls_port: int | None = Field(default=None, ge=1, le=65535)
    mosquitto_pid_file: Path | None = None
    mosquitto_reload_command: str | None = None
    mosquitto_check: float = Field(default=2.0, gt=0)
    # Sessions and tokens (docs/security.md, "Users, sessions, API tokens and roles").
    session_idle_minutes: float = Field(default=30.0, gt=0, le=24 * 60)
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    token_default_days: float = Field(default=90.0, gt=0)
    token_max_days: float = Field(default=366.0, gt=0)
    # Rate and size limits (docs/security.md, "Rate limits and input limits").
    api_rate_limit: float = Field(default=200.0, ge=0)
    api_burst: float = Field(default=1000.0, ge=1)
    api_token_rate_limit: float = Field(default=100.0, ge=0)
    api_token_burst: float = Field(default=500.0, ge=1)
    api_max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    trusted_proxies: list[str] = Field(default_factory=list)
    ingest_device_messages: float = Field(default=200.0, ge=0)
    ingest_device_points: float = Field(default=200_000.0, ge=0)
    ingest_device_burst: float = Field(default=10.0, gt=0)
    # Indicator reports to the data centers (docs/data-centers.md): off unless report_nats is
    # set. The enterprise is one tenant of this platform, identified as national statistics do.
    report_nats: list[str] = Field(default_factory=list)
    report_enterprise_id: str | None = None
    report_enterprise_name: str = ""
    report_tenant: str | None = None
    report_region: str | None = None
    report_industry: str | None = None
    report_destinations: list[str] = Field(default_factory=list)
    report_keys_dir: Path | None = None
    # Signature of the enterprise's reports: Ed25519, or SM2 with SM3 (national cryptography).
    report_algorithm: Literal["ed25519", "sm2"] = "ed25519"
    report_policy_file: Path | None = None
    report_interval: float = Field(default=300.0, gt=0)
    report_unit_price_cny: float = Field(default=850.0, ge=0)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                network = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                network = None
            if network is None or network.prefixlen == 0:
                raise ValueError(
                    f"trusted proxy {entry!r} is not an address or network (10.0.0.5, "
                    "10.0.0.0/24); name the proxies themselves, never every address"
                )
        return value

    @model_validator(mode="after")
    def _mosquitto(self) -> Self:
        if self.mosquitto_files is None:
            named = [
                f"TIANGONG_{name.upper()}"
                for name in ("mosquitto_tls_port", "mosquitto_pid_file", "mosquitto_reload_command")
                if getattr(self, name)
            ]
            if named:
                raise ValueError(f"{', '.join(named)} needs TIANGONG_MOSQUITTO_FILES")
        elif self.mosquitto_pid_file is not None and self.mosquitto_reload_command:
            raise ValueError(
                "set TIANGONG_MOSQUITTO_PID_FILE or TIANGONG_MOSQUITTO_RELOAD_COMMAND, not both"
            )
        return self

    @model_validator(mode="after")
    def _reports(self) -> Self:
        if not self.report_nats:
            return self
        missing = [
            f"TIANGONG_{name.upper()}"
            for name in (
                "report_enterprise_id",
                "report_tenant",
                "report_region",
                "report_industry",
                "report_destinations",
            )
            if not getattr(self, name)
        ]
        if missing:
            raise ValueError(
                "reporting to data centers (report_nats) also needs " + ", ".join(missing)
            )
        return self

    @model_validator(mode="after")
    def _secure(self) -> Self:
        if self.admin_token is not None and not self.admin_token.get_secret_value().startswith(
            TOKEN_PREFIX
        ):
            raise ValueError(f"admin_token must start with {TOKEN_PREFIX!r} like every API token")
        if self.store == "postgres" and not self.postgres_dsn:
            raise ValueError("store=postgres needs postgres_dsn (TIANGONG_POSTGRES_DSN)")
        if not self.demo:
            for label, secret in (
                ("admin_token", self.admin_token),
                ("mqtt_password", self.mqtt_password),
            ):
                if secret is None:
                    continue
                value = secret.get_secret_value()
                if value.lower() in WELL_KNOWN_SECRETS or len(value) < 16:
                    raise ValueError(
                        f"{label} is a default or too short (at least 16 characters, not a"
                        " well-known default); generate one, e.g. `python -c 'import secrets;"
                        " print(secrets.token_urlsafe(32))'`"
                    )
        return self

    def metadata_url(self) -> str:
        """The metadata database URL."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'registry.sqlite').resolve()}"

    @classmethod
    def load(cls, **overrides: object) -> PlatformSettings:
        """Build settings, turning validation errors into a ``ConfigurationError``.

        Raises:
            ConfigurationError: a setting is invalid; the message says which and why.
        """
        try:
            return cls(**overrides)  # type: ignore[arg-type]
        except ValueError as exc:
            raise ConfigurationError(f"invalid platform settings: {exc}") from exc
