"""The platform, assembled: one async context manager that owns every part and its tasks.

``async with Platform(settings) as platform`` opens the metadata database, the time-series
store, the registry, rules and tokens; optionally starts the embedded broker; then runs, as
named tasks of one TaskGroup: the ingest connection and pipeline, the Sparkplug B host (its own
connection, feeding the same pipeline; see ``platform.sparkplug``), the HTTP server (API and
dashboard), presence from the embedded broker, and the maintenance loops (rollups, retention,
KPI samples, last-seen flushes, offline detection, registry refresh, gauges).

Shutdown runs in dependency order: the HTTP server stops taking requests, the Sparkplug host
publishes its STATE death and hands its last messages to the pipeline, ingest stops reading
and commits and acknowledges what it already took, maintenance writes its last state, then the
broker, the store and the database close. Nothing acknowledged is lost; anything not yet
acknowledged stays with the broker for next time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Self

from sqlalchemy.exc import SQLAlchemyError

if TYPE_CHECKING:
    from tiangong.data.enterprise import EnterpriseReporter
    from tiangong.data.store import AnalyticsStore

from tiangong.apps.energy.service import EnergyService
from tiangong.apps.energy.tariff import TariffBook
from tiangong.apps.health.service import HealthService
from tiangong.apps.oee.config import OeeConfig
from tiangong.apps.oee.service import OeeService
from tiangong.network.access import Channel, DeviceTopic
from tiangong.network.broker import BrokerTls, EmbeddedBroker
from tiangong.network.errors import MqttError, NetworkError
from tiangong.network.http_listener import HttpListener, bind_listener
from tiangong.network.mqtt import MqttClient, ProtocolVersion, Subscription, Will
from tiangong.network.mqtt.client import ClientStats
from tiangong.platform.alarms.service import AlarmService
from tiangong.platform.broker_access import SERVICE_USER, RegistryBrokerAuthority
from tiangong.platform.certificates import PlatformCertificates
from tiangong.platform.commands import CommandService
from tiangong.platform.database import Database
from tiangong.platform.errors import (
    ConfigurationError,
    LifecycleError,
    NotFoundError,
    PlatformError,
)
from tiangong.platform.ingest.dead_letters import DeadLetterStore
from tiangong.platform.ingest.pipeline import IngestPipeline, IngestSettings
from tiangong.platform.kpi import KpiService
from tiangong.platform.lifecycle import LifecycleTrigger
from tiangong.platform.metrics import PlatformMetrics
from tiangong.platform.model import DeviceState
from tiangong.platform.mosquitto_keeper import MosquittoKeeper
from tiangong.platform.registry import DeviceRegistry
from tiangong.platform.settings import PlatformSettings
from tiangong.platform.sparkplug.host_service import SparkplugHostService
from tiangong.platform.tokens import TokenService
from tiangong.platform.tsdb.base import TimeSeriesStore
from tiangong.platform.tsdb.duckdb_store import DuckDBStore
from tiangong.security.audit import AuditTrail
from tiangong.security.credentials import hash_device_secret
from tiangong.security.monitor import SecurityMonitor
from tiangong.security.users import UserService

__all__ = ["Platform"]

_log = logging.getLogger(__name__)


class Platform:
    """A running platform instance.

    Args:
        settings: validated settings.
        embedded_broker: also run the embedded MQTT broker on ``mqtt_host:mqtt_port``.
        ingest: tuning of the ingest pipeline.
    """

    def __init__(
        self,
        settings: PlatformSettings,
        *,
        embedded_broker: bool = False,
        ingest: IngestSettings | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = PlatformMetrics()
        self.db = Database(url=settings.metadata_url())
        self.registry = DeviceRegistry(self.db)
        self.store = self._make_store(settings)
        self.dead_letters = DeadLetterStore(self.db)
        self.alarms = AlarmService(self.db, self.metrics)
        self.kpis = KpiService(self.db, self.registry, self.store)
        self.tokens = TokenService(
            self.db,
            default_lifetime=timedelta(days=settings.token_default_days),
            max_lifetime=timedelta(days=max(settings.token_max_days, settings.token_default_days)),
        )
        self.users = UserService(
            self.db,
            idle_timeout=timedelta(minutes=settings.session_idle_minutes),
            session_lifetime=timedelta(hours=settings.session_hours),
        )
        self.audit: AuditTrail  # set in _start, once the database is open (security.audit)
        self.sparkplug: SparkplugHostService | None = None
        if settings.sparkplug_enabled:
            self.sparkplug = SparkplugHostService(
                registry=self.registry,
                metrics_registry=self.metrics.registry,
                host_id=settings.sparkplug_host_id,
                rebirth_interval_ms=int(settings.sparkplug_rebirth_interval * 1000),
            )
        self.commands = CommandService(self.registry, sparkplug=self.sparkplug)
        self.pipeline = IngestPipeline(
            registry=self.registry,
            store=self.store,
            dead_letters=self.dead_letters,
            metrics=self.metrics,
            settings=ingest
            or IngestSettings(
                device_messages=settings.ingest_device_messages,
                device_points=settings.ingest_device_points,
                device_burst=settings.ingest_device_burst,
            ),
            command_answers=self.commands.answer,
            sparkplug=self.sparkplug,
        )
        self.pipeline.add_listener(self.alarms.on_commit)
        self.certificates = PlatformCertificates(
            settings.data_dir, server_hostnames=settings.mqtt_tls_hostnames
        )
        self.mosquitto = self._mosquitto_keeper()
        self.authority = RegistryBrokerAuthority(
            self.registry,
            self.metrics,
            certificates=self.certificates,
            require_certificates=settings.mqtt_require_certificates,
        )
        # Security monitoring (security.monitor): fed by ingest commits and dead letters, the
        # broker's refusals and (from the user service) logins.
        self.security = SecurityMonitor(
            engine=lambda: self.db.engine, registry=self.metrics.registry, directory=self.registry
        )
        self.pipeline.add_listener(self.security.on_commit)
        # Equipment health (apps.health): health index, RUL, anomalies, work orders; fed by
        # ingest through a bounded queue of its own (a full queue drops, ingest never waits).
        self.health = HealthService(
            db=self.db, registry=self.registry, store=self.store, data_dir=settings.data_dir
        )
        self.pipeline.add_listener(self.health.on_commit)
        self.pipeline.add_rejection_listener(self.security.on_ingest_rejection)
        self.authority.add_refusal_listener(self.security.on_broker_refusal)
        self.users.add_login_listener(self.security.on_login)
        self._embedded_broker = embedded_broker
        self.broker: EmbeddedBroker | None = None
        self.admin_token = ""
        self.admin_token_generated = False
        # OEE (apps.oee): configured from <data_dir>/oee.toml when the platform starts.
        self.oee = OeeService(registry=self.registry, store=self.store, db=self.db)
        # Energy (apps.energy): tariffs from <data_dir>/tariffs.json when the platform starts,
        # changes through the API kept there.
        self.energy = EnergyService(
            self.registry, self.store, tariffs_path=settings.data_dir / "tariffs.json"
        )
        # A data center's analytics store served by the data API (set by whoever runs one).
        self.data_store: AnalyticsStore | None = None
        self.reporter: EnterpriseReporter | None = None  # with report_nats set
        self.http_port: int | None = None
        self.mqtt: MqttClient | None = None
        self.started_at = datetime.now(UTC)
        self._stack = AsyncExitStack()
        self._ingest_task: asyncio.Task[None] | None = None
        self._sparkplug_task: asyncio.Task[None] | None = None
        self._other_tasks: list[asyncio.Task[None]] = []
        self._http: HttpListener | None = None
        self._client_stats_seen = ClientStats()
        self._rate_samples: deque[tuple[float, int]] = deque(maxlen=4)

    def ingest_rate(self) -> float:
        """Points stored per second over the last few seconds."""
        samples = list(self._rate_samples)
        if len(samples) < 2:
            return 0.0
        (t0, p0), (t1, p1) = samples[0], samples[-1]
        return (p1 - p0) / (t1 - t0) if t1 > t0 else 0.0

    @staticmethod
    def _make_store(settings: PlatformSettings) -> TimeSeriesStore:
        if settings.store == "postgres":
            from tiangong.platform.tsdb.postgres_store import PostgresStore  # noqa: PLC0415

            assert settings.postgres_dsn is not None
            return PostgresStore(dsn=settings.postgres_dsn)
        return DuckDBStore(
            path=settings.data_dir / "telemetry.duckdb", memory_limit=settings.duckdb_memory_limit
        )

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException as exc:
            # Stop whatever started (background loops never end by themselves), then re-raise.
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def _start(self) -> None:
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        # Take the HTTP port first: a port in use should fail before anything else starts.
        http_socket = self._bind_http() if settings.http_port is not None else None
        if http_socket is not None:
            self._stack.callback(http_socket.close)
        await self.db.open()
        self._stack.push_async_callback(self.db.close)
        self.audit = AuditTrail(
            self.db.engine, checkpoint=settings.data_dir / "audit-checkpoint.json"
        )
        await self.audit.open()
        self._stack.push_async_callback(self.audit.close)  # writes the last token-use counts
        await self.registry.refresh()
        await self._stack.enter_async_context(self.security)
        await self.store.open()
        self._stack.push_async_callback(self.store.close)
        await self.alarms.load()
        await self._stack.enter_async_context(self.health)
        self.oee.config = await asyncio.to_thread(OeeConfig.load, settings.data_dir / "oee.toml")
        self.energy.tariffs = await asyncio.to_thread(
            TariffBook.load, settings.data_dir / "tariffs.json"
        )
        restored = await self.pipeline.warm_up()
        _log.info("platform: %d recent message digests restored", restored)
        configured = settings.admin_token.get_secret_value() if settings.admin_token else None
        self.admin_token, self.admin_token_generated = await self.tokens.bootstrap_admin(
            settings.data_dir / "admin-token", configured
        )
        self._stack.callback(self.certificates.close)
        if self.mosquitto is not None:
            await self.mosquitto.sync(force=True)  # a directory that is not ours fails the start
        if self._embedded_broker:
            tls = None
            if settings.mqtt_tls_port is not None:
                context = await asyncio.to_thread(self.certificates.server_context)
                tls = BrokerTls(port=settings.mqtt_tls_port, context=context)
            self.broker = await self._stack.enter_async_context(
                EmbeddedBroker(
                    host=settings.mqtt_host,
                    port=settings.mqtt_port,
                    authority=self.authority,
                    tls=tls,
                )
            )
        tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
        self._ingest_task = tasks.create_task(self._ingest(), name="platform-ingest")
        if self.sparkplug is not None:
            self._sparkplug_task = tasks.create_task(
                self.sparkplug.run(connect=self._sparkplug_client, feed=self.pipeline.feed),
                name="platform-sparkplug",
            )
        loops: list[tuple[str, float, Callable[[], Awaitable[object]]]] = [
            ("rollups", settings.rollup_interval, self.store.refresh_rollups),
            ("audit-token-use", 30.0, self.audit.flush_token_use),
            ("retention", settings.retention_interval, self._retention),
            ("kpi-sample", settings.kpi_interval, self.kpis.sample),
            ("last-seen", 15.0, self.registry.flush_last_seen),
            ("offline-detection", min(30.0, settings.offline_after / 2), self._detect_offline),
            ("gauges", 2.0, self._gauges),
            ("dead-letter-prune", 3600.0, self.dead_letters.prune),
            ("session-prune", 3600.0, self.users.prune_sessions),
        ]
        if not self.db.is_sqlite:
            loops.append(("registry-refresh", 30.0, self.registry.refresh))
        if self.mosquitto is not None:
            loops.append(("mosquitto-files", settings.mosquitto_check, self.mosquitto.sync))
        for name, interval, action in loops:
            self._other_tasks.append(
                tasks.create_task(self._every(name, interval, action), name=f"platform-{name}")
            )
        if self._embedded_broker:
            self._other_tasks.append(tasks.create_task(self._presence(), name="platform-presence"))
        if self.broker is not None and self.broker.tls is not None:
            broker = self.broker
            self._other_tasks.append(
                tasks.create_task(
                    self._every(
                        "certificate-sweep",
                        settings.mqtt_revocation_check,
                        lambda: self.certificates.sweep(broker),
                    ),
                    name="platform-certificate-sweep",
                )
            )
        if settings.report_nats:
            reporter = await self._start_reporting()
            self._other_tasks.append(tasks.create_task(reporter.run(), name="platform-reports"))
        if http_socket is not None:
            self._start_http(tasks, http_socket)

    async def _start_reporting(self) -> EnterpriseReporter:
        """The enterprise's indicator reports to its data centers over NATS JetStream."""
        # Imported here: a platform that does not report never loads the data system.
        from tiangong.data.catalog import standard_catalog  # noqa: PLC0415
        from tiangong.data.center import EnterpriseExporter  # noqa: PLC0415
        from tiangong.data.enterprise import (  # noqa: PLC0415
            EnterpriseProfile,
            EnterpriseReporter,
            IndicatorCollector,
        )
        from tiangong.data.errors import DataError  # noqa: PLC0415
        from tiangong.data.governance import AuditLog, ExportPolicy  # noqa: PLC0415
        from tiangong.data.reports import KeyRing  # noqa: PLC0415
        from tiangong.data.transport.jetstream import JetStreamTransport  # noqa: PLC0415

        settings = self.settings
        assert settings.report_enterprise_id is not None  # the settings check these
        assert settings.report_tenant is not None
        assert settings.report_region is not None
        assert settings.report_industry is not None
        keys_dir = settings.report_keys_dir or settings.data_dir / "report-keys"
        catalog = standard_catalog()
        try:
            keys, generated = KeyRing.load_or_generate(
                keys_dir, settings.report_enterprise_id, settings.report_algorithm
            )
            if generated:
                _log.info(
                    "reports: new signing key in %s; give %s to the sub-centers to trust",
                    keys_dir,
                    keys_dir / "public.pem",
                )
            policy = (
                ExportPolicy.load(settings.report_policy_file)
                if settings.report_policy_file
                else ExportPolicy()
            )
            catalog.check_region(settings.report_region)  # CatalogError names a bad code
            catalog.check_industry(settings.report_industry)
            profile = EnterpriseProfile(
                enterprise_id=settings.report_enterprise_id,
                name=settings.report_enterprise_name or settings.report_enterprise_id,
                tenant_id=settings.report_tenant,
                region=settings.report_region,
                industry=settings.report_industry,
                unit_price_cny=settings.report_unit_price_cny,
            )
            transport = await self._stack.enter_async_context(
                JetStreamTransport(servers=settings.report_nats)
            )
            audit = AuditLog(settings.data_dir / "report-audit.sqlite3")
            self._stack.callback(audit.close)
            exporter = EnterpriseExporter(
                transport=transport,
                keys=keys,
                catalog=catalog,
                audit=audit,
                destinations=settings.report_destinations,
                policy=policy,
            )
        except DataError as exc:
            raise PlatformError(f"indicator reports: {exc}") from exc
        self.reporter = EnterpriseReporter(
            IndicatorCollector(self, profile, catalog),
            exporter,
            state_file=settings.data_dir / "report-periods.json",
            interval=settings.report_interval,
        )
        return self.reporter

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._http is not None:
            await self._http.stop()
        # The Sparkplug host first: its last messages go to the pipeline, which commits them.
        if self._sparkplug_task is not None:
            self._sparkplug_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sparkplug_task
        if self._ingest_task is not None:
            self._ingest_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ingest_task
        for task in self._other_tasks:
            task.cancel()
        with contextlib.suppress(PlatformError, SQLAlchemyError, OSError):
            await self.registry.flush_last_seen()
        with contextlib.suppress(PlatformError):
            await self.store.refresh_rollups()
        await self._stack.__aexit__(exc_type, exc, tb)

    def _bind_http(self) -> socket.socket:
        try:
            sock = bind_listener(self.settings.http_host, self.settings.http_port or 0)
        except NetworkError as exc:
            raise ConfigurationError(f"HTTP: {exc} (--port)") from exc
        self.http_port = int(sock.getsockname()[1])
        return sock

    def _start_http(self, tasks: asyncio.TaskGroup, sock: socket.socket) -> None:
        from tiangong.platform.api.app import create_app  # noqa: PLC0415 - the API imports us

        self._http = HttpListener(
            create_app(self), sock, trusted_proxies=self.settings.trusted_proxies
        )
        self._other_tasks.append(self._http.start(tasks, "platform-http"))

    def _mosquitto_keeper(self) -> MosquittoKeeper | None:
        settings = self.settings
        if settings.mosquitto_files is None:
            return None
        user = settings.mqtt_username or "tiangong-platform"
        credentials = []
        if settings.mqtt_username and settings.mqtt_password is not None:
            # Hashed once: a new salt at every look would rewrite the file every time.
            digest = hash_device_secret(settings.mqtt_password.get_secret_value())
            credentials.append((user, digest))
        return MosquittoKeeper(
            settings.mosquitto_files,
            self.registry,
            self.certificates,
            service_users=[user],
            service_credentials=credentials,
            tls_port=settings.mosquitto_tls_port,
            pid_file=settings.mosquitto_pid_file,
            reload_command=settings.mosquitto_reload_command,
            observe=lambda event: self.metrics.mosquitto_files.labels(event).inc(),
        )

    async def broker_files_changed(self) -> None:
        """A certificate was issued or revoked: an external Mosquitto hears of it now.

        Without ``mosquitto_files`` nothing to do. A failure is logged; the periodic look
        (``mosquitto_check``) tries again.
        """
        if self.mosquitto is None:
            return
        try:
            await self.mosquitto.sync()
        except ConfigurationError as exc:
            _log.error("platform: %s; trying again in %gs", exc, self.settings.mosquitto_check)

    # -- ingest ----------------------------------------------------------------------------------

    def _client(
        self, *, client_id: str | None = None, will: Will | None = None, reconnect: bool = True
    ) -> MqttClient:
        settings = self.settings
        if self._embedded_broker:
            username: str | None = SERVICE_USER
            password: str | None = self.authority.service_secret
            version = ProtocolVersion.V311
        else:
            username = settings.mqtt_username
            password = settings.mqtt_password.get_secret_value() if settings.mqtt_password else None
            version = ProtocolVersion(settings.mqtt_version)
        return MqttClient(
            host=settings.mqtt_host,
            port=settings.mqtt_port,
            client_id=client_id or settings.mqtt_client_id,
            username=username,
            password=password,
            version=version,
            clean_start=False,
            session_expiry=7 * 24 * 3600,
            max_packet_size=settings.max_message_bytes,
            # Let the broker send oversized messages: we skip them unbuffered and dead-letter
            # them, where an advertised limit would make the broker drop them uncounted.
            advertise_max_packet_size=False,
            receive_maximum=4096,
            inbound_queue=self.pipeline.settings.inbound_messages,
            inbound_bytes=self.pipeline.settings.inbound_bytes,
            will=will,
            reconnect=reconnect,
        )

    def _sparkplug_client(self, will: Will) -> MqttClient:
        """The Sparkplug host's connection: its own session, its STATE death as the Will.

        It does not reconnect by itself: the host service does, so that each connection
        registers a Will with that connection's STATE timestamp.
        """
        return self._client(
            client_id=f"{self.settings.mqtt_client_id}-sparkplug", will=will, reconnect=False
        )

    def _subscriptions(self) -> tuple[Subscription, ...]:
        group = self.settings.mqtt_shared_group
        subs = []
        for channel in (Channel.TELEMETRY, Channel.EVENTS, Channel.STATUS):
            topic = DeviceTopic.filter(channel)
            subs.append(Subscription(f"$share/{group}/{topic}" if group else topic, qos=1))
        # Command answers are never shared: each goes to every instance, and the one that sent
        # the request recognises it.
        subs.append(Subscription(DeviceTopic.filter(Channel.COMMAND_RESULT), qos=1))
        return tuple(subs)

    async def _ingest(self) -> None:
        delay = 0.5
        while True:
            try:
                async with self._client() as client:
                    self.mqtt = client
                    self.commands.client = client
                    self._client_stats_seen = ClientStats()
                    delay = 0.5
                    await client.subscribe(*self._subscriptions())
                    _log.info(
                        "platform: ingesting from %s:%d",
                        self.settings.mqtt_host,
                        self.settings.mqtt_port,
                    )
                    await self.pipeline.run(client)
            except (OSError, MqttError) as exc:
                _log.warning(
                    "platform: broker %s:%d unavailable (%s); retrying in %.1fs",
                    self.settings.mqtt_host,
                    self.settings.mqtt_port,
                    exc,
                    delay,
                )
            except Exception:  # noqa: BLE001 - ingest restarts; the API and the rest stay up
                _log.exception("platform: ingest stopped on an error; restarting in %.1fs", delay)
            finally:
                self.mqtt = None
                self.commands.client = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    # -- background work -------------------------------------------------------------------------

    async def _every(
        self, name: str, interval: float, action: Callable[[], Awaitable[object]]
    ) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await action()
            except Exception:  # noqa: BLE001 - one failed pass must not stop the loop
                _log.exception("platform: %s failed; next attempt in %.0fs", name, interval)

    async def _retention(self) -> int:
        tenants = await self.registry.list_tenants()
        deleted = await self.store.apply_retention(
            {t.id: t.retention_days for t in tenants}, int(time.time() * 1000)
        )
        await self.kpis.prune()
        return deleted

    async def _detect_offline(self) -> None:
        """Mark silent devices offline, except those whose presence something else vouches for.

        A device behind an online gateway may report by exception and stay silent for hours:
        the gateway's status says whether it can reach it. A Sparkplug device's presence is its
        births and deaths (the NDEATH is the broker's will, so a lost node is always seen).
        """
        horizon = datetime.now(UTC) - timedelta(seconds=self.settings.offline_after)
        for device in list(self.registry.devices_in_memory()):
            if device.state is not DeviceState.ONLINE:
                continue
            if self.sparkplug is not None and self.sparkplug.handles(device.id):
                continue
            gateway = self.registry.lookup(device.gateway_id) if device.gateway_id else None
            if gateway is not None and gateway.device.state is DeviceState.ONLINE:
                continue
            seen = self.registry.last_seen(device.id) or device.state_changed_at
            if seen is not None and seen < horizon:
                with contextlib.suppress(LifecycleError, NotFoundError):
                    await self.registry.apply_lifecycle(
                        device.id,
                        LifecycleTrigger.DISCONNECT,
                        reason=f"silent for more than {self.settings.offline_after:g}s",
                    )

    async def _presence(self) -> None:
        while True:
            device_id, trigger, reason = await self.authority.presence.get()
            if trigger is LifecycleTrigger.CONNECT:
                self.registry.touch(device_id, datetime.now(UTC))
            try:
                await self.registry.apply_lifecycle(device_id, trigger, reason=reason)
            except (LifecycleError, NotFoundError) as exc:
                _log.info("platform: presence of %s ignored: %s", device_id, exc)
            except Exception:  # noqa: BLE001 - a database hiccup must not stop presence
                _log.exception("platform: presence update of %s failed", device_id)

    async def _gauges(self) -> None:
        self._rate_samples.append((time.monotonic(), self.pipeline.points_committed))
        counts = dict.fromkeys(DeviceState, 0)
        for device in self.registry.devices_in_memory():
            counts[device.state] += 1
        for state, n in counts.items():
            self.metrics.devices.labels(state.value).set(n)
        client = self.mqtt
        if client is not None:
            stats, seen = client.stats, self._client_stats_seen
            self.metrics.mqtt_connects.inc(max(stats.connects - seen.connects, 0))
            self.metrics.mqtt_read_pauses.inc(max(stats.read_pauses - seen.read_pauses, 0))
            self._client_stats_seen = ClientStats(
                connects=stats.connects, read_pauses=stats.read_pauses
            )
