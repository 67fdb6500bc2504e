"""The embedded MQTT broker of the local demo (amqtt), with Tiangong's access rules plugged in.

``tiangong up`` needs a broker that starts with the platform and no installation; amqtt is the
maintained asyncio broker for Python. Deployments point the platform at Mosquitto or EMQX
instead (same topics, same rules: see ``tiangong broker mosquitto-files``).

The broker knows nothing of devices: it asks a ``BrokerAuthority`` (the platform's device
registry behind a small interface) who a client is, and applies ``authorization``'s rules.
Anonymous clients are refused.

Two listeners
-------------
The plain listener takes a user name and a password. The optional TLS listener takes a client
certificate and nothing else: the TLS handshake proves the client holds the certificate's key
(``CERT_REQUIRED`` against the bundle of the tenants' CAs), then the authority reads who the
certificate names and checks it against its CA's register (unknown, revoked, expired, another
tenant's CA). The handshake runs here rather than inside asyncio's server, so a client that
fails it (no certificate, a CA we do not trust, an expired certificate) is seen, with its
address, and reported as a refusal instead of vanishing silently.

Every refusal (a connection, a publish, a subscription) is reported to the authority as one
``BrokerRefusal``. The broker remembers which certificate serial each TLS session came with,
so :meth:`EmbeddedBroker.disconnect_certificates` can end the sessions of a certificate the
moment it is revoked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import uuid
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final, Protocol, cast

from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action, BaseContext
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from tiangong.network.access.authorization import Principal, may_publish, may_subscribe
from tiangong.network.errors import NetworkError
from tiangong.resource import AsyncResource

__all__ = [
    "REFUSAL_KINDS",
    "BrokerAuthority",
    "BrokerRefusal",
    "BrokerTls",
    "CertificateLogin",
    "EmbeddedBroker",
]

_log = logging.getLogger(__name__)

#: The kinds of refusal a ``BrokerRefusal`` names.
REFUSAL_KINDS: Final = frozenset(
    {
        "credentials",
        "decommissioned",
        "certificate_revoked",
        "certificate_unknown",
        "certificate_expired",
        "certificate_foreign",
        "topic_publish",
        "topic_subscribe",
    }
)

_TLS_LISTENER: Final = "tls"


@dataclass(frozen=True, slots=True)
class BrokerRefusal:
    """A connection, publish or subscription the broker refused.

    Attributes:
        kind: One of :data:`REFUSAL_KINDS`.
        username: The user name the client gave, or the device a certificate names.
        tenant_id: The tenant, when known.
        device_id: The device, when known.
        topic: The topic of a refused publish or subscription.
        source: The client's address (``host:port``).
        detail: What exactly was wrong, for the log and the security officer.
        at: When (UTC).
    """

    kind: str
    username: str | None
    tenant_id: str | None
    device_id: str | None
    topic: str | None
    source: str
    detail: str
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        if self.kind not in REFUSAL_KINDS:
            raise ValueError(f"unknown refusal kind {self.kind!r}")


@dataclass(frozen=True, slots=True)
class CertificateLogin:
    """Who a client certificate proved to be.

    Attributes:
        principal: The device, for topic authorization.
        serial: The certificate's serial (revoking it ends the session).
        not_after: When the certificate expires (UTC).
    """

    principal: Principal
    serial: int
    not_after: datetime


@dataclass(frozen=True, slots=True)
class BrokerTls:
    """The TLS listener of the embedded broker.

    Attributes:
        port: TCP port.
        context: Server context: our certificate and key, the CAs clients must chain to, and
            ``verify_mode = CERT_REQUIRED`` (checked when the broker starts).
        handshake_timeout: Seconds a client has to complete the TLS handshake.
    """

    port: int
    context: ssl.SSLContext
    handshake_timeout: float = 10.0


class BrokerAuthority(Protocol):
    """Who may connect, and what to do when they come and go or are refused."""

    def authenticate(
        self, username: str | None, password: str | None, *, source: str
    ) -> Principal | BrokerRefusal:
        """The principal for these credentials, or why the connection is refused."""

    def authenticate_certificate(
        self, certificate_der: bytes, *, source: str
    ) -> CertificateLogin | BrokerRefusal:
        """Who a TLS client certificate (already chained to a trusted CA) identifies, or why not."""

    def connected(self, principal: Principal) -> None:
        """A client connected."""

    def disconnected(self, principal: Principal) -> None:
        """A client disconnected (cleanly or not)."""

    def refused(self, refusal: BrokerRefusal) -> None:
        """A connection, publish or subscription was refused."""


@dataclass(slots=True)
class _CertificateSession:
    tenant_id: str | None
    serial: int
    writer: StreamWriterAdapter


@dataclass
class _Access:
    """What the broker and its plugins share: the authority and who is connected."""

    authority: Any
    principals: dict[str, Principal] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    certificates: dict[str, _CertificateSession] = field(default_factory=dict)


# amqtt builds its plugins itself from a dotted path and a dataclass config; the config is the
# only way in, so the shared state travels through it.
@dataclass
class _PluginConfig:
    access: Any = None


class _AuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no type information
    """Presence events. Authentication itself happens in ``_Broker``, before amqtt's own."""

    Config = _PluginConfig

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self.access = cast(_Access, cast(_PluginConfig, self.context.config).access)

    async def authenticate(self, *, session: Session) -> bool | None:  # noqa: ARG002
        return False  # never asked: _Broker._authenticate answers from its own verdict

    async def on_broker_client_connected(
        self,
        *,
        client_id: str,
        client_session: Session,  # noqa: ARG002 - amqtt passes it by keyword
    ) -> None:
        principal = self.access.principals.get(client_id)
        if principal is not None:
            cast(BrokerAuthority, self.access.authority).connected(principal)

    async def on_broker_client_disconnected(
        self,
        *,
        client_id: str,
        client_session: Session,  # noqa: ARG002 - amqtt passes it by keyword
    ) -> None:
        principal = self.access.principals.pop(client_id, None)
        self.access.sources.pop(client_id, None)
        if principal is not None:
            cast(BrokerAuthority, self.access.authority).disconnected(principal)


class _TopicPlugin(BaseTopicPlugin):  # type: ignore[misc]  # amqtt ships no type information
    Config = _PluginConfig

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self.access = cast(_Access, cast(_PluginConfig, self.context.config).access)

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Any = None
    ) -> bool | None:
        client_id = session.client_id if session is not None else None
        principal = self.access.principals.get(client_id) if client_id else None
        if principal is None or topic is None:
            return False
        if action == Action.PUBLISH:
            allowed = may_publish(principal, topic)
        else:  # SUBSCRIBE, and RECEIVE of a message matching a subscription
            allowed = may_subscribe(principal, topic)
        if not allowed and action != Action.RECEIVE:
            verb = "publish" if action == Action.PUBLISH else "subscribe"
            cast(BrokerAuthority, self.access.authority).refused(
                BrokerRefusal(
                    kind=f"topic_{verb}",
                    username=principal.username,
                    tenant_id=principal.tenant,
                    device_id=principal.device,
                    topic=topic,
                    source=self.access.sources.get(client_id or "", "?"),
                    detail=f"{verb} outside the client's own topics",
                )
            )
        return allowed


class _Snapshots(dict[str, Any]):
    """A dict whose iteration walks a copy of its keys or items.

    amqtt 0.12 iterates its subscription table with ``await`` inside the loop (broadcasting a
    message, greeting a new client) while other clients subscribe and leave; the table changes
    size under the loop and the iteration fails (``dictionary changed size during iteration``),
    dropping that broadcast or that client's connection. A copy per iteration costs a few
    microseconds for the few filters a demo broker has.
    """

    def __iter__(self) -> Iterator[str]:
        return iter(list(super().keys()))

    def items(self) -> Any:
        return list(super().items())


def _source(writer: Any) -> str:
    peer = writer.get_peer_info()
    return "?" if peer is None else f"{peer[0]}:{peer[1]}"


def _handshake_refusal(exc: BaseException, source: str) -> BrokerRefusal:
    """Name a failed TLS handshake the way a security officer would."""
    reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or str(exc)
    text = str(reason)
    lowered = f"{text} {exc}".lower()
    if "expired" in lowered:
        kind = "certificate_expired"
    elif "peer did not return a certificate" in lowered or "no certificate" in lowered:
        kind, text = "certificate_unknown", "no client certificate presented"
    elif "unknown ca" in lowered or "issuer" in lowered or "self-signed" in lowered:
        kind = "certificate_foreign"
    elif isinstance(exc, TimeoutError):
        kind, text = "certificate_unknown", "TLS handshake not completed in time"
    elif isinstance(exc, ssl.SSLCertVerificationError):
        kind = "certificate_foreign"
    else:
        kind = "certificate_unknown"
    return BrokerRefusal(
        kind=kind,
        username=None,
        tenant_id=None,
        device_id=None,
        topic=None,
        source=source,
        detail=f"TLS handshake refused: {text}",
    )


class _Broker(Broker):  # type: ignore[misc]  # amqtt ships no type information
    """amqtt's broker, refusing a client that fails authentication before anything else.

    amqtt 0.12 authenticates a CONNECT but acts on the answer only after it has taken over the
    session of a connected client with the same client id (disconnecting it, so its will
    fires) and registered the refused session in its place. Anyone who knows a device's name
    could knock it offline with a wrong password, and the refused connection's socket is never
    closed. So authentication happens here, first: a refused client is answered at once, and
    amqtt goes on only with clients that passed, taking the verdict already given.
    """

    def __init__(self, *args: Any, access: _Access, tls: BrokerTls | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._subscriptions = _Snapshots()
        self._passed: set[int] = set()  # ids of sessions authenticated, until amqtt asks
        self._access = access
        self._tls = tls

    async def _authenticate(self, session: Session, listener: Any) -> bool:  # noqa: ARG002
        if id(session) in self._passed:
            self._passed.discard(id(session))
            return True
        return False

    def _verdict(
        self, session: Session, writer: Any, listener_name: str
    ) -> Principal | CertificateLogin | BrokerRefusal:
        authority = cast(BrokerAuthority, self._access.authority)
        source = _source(writer)
        if listener_name != _TLS_LISTENER:
            password = session.password
            if isinstance(password, bytes | bytearray):
                password = password.decode("utf-8", "replace")
            return authority.authenticate(session.username, password, source=source)
        # The certificate of this connection, never the one amqtt kept on a resumed session.
        ssl_object = writer.get_ssl_info()
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:  # CERT_REQUIRED makes this unreachable; kept as the last line of defence
            return BrokerRefusal(
                kind="certificate_unknown",
                username=session.username,
                tenant_id=None,
                device_id=None,
                topic=None,
                source=source,
                detail="no client certificate on the TLS listener",
            )
        return authority.authenticate_certificate(der, source=source)

    async def _handle_client_session(  # noqa: PLR0917 - amqtt's signature
        self,
        reader: Any,
        writer: Any,
        client_session: Session,
        handler: Any,
        server: Any,
        listener_name: str,
    ) -> None:
        verdict = self._verdict(client_session, writer, listener_name)
        if isinstance(verdict, BrokerRefusal):
            cast(BrokerAuthority, self._access.authority).refused(verdict)
            handler.attach(client_session, reader, writer)
            with contextlib.suppress(Exception):  # the client may already be gone
                await handler.mqtt_connack_authorize(False)
            await writer.close()
            return
        client_id = client_session.client_id
        certificate: _CertificateSession | None = None
        if isinstance(verdict, CertificateLogin):
            principal = verdict.principal
            certificate = _CertificateSession(principal.tenant, verdict.serial, writer)
            self._access.certificates[client_id] = certificate
        else:
            principal = verdict
            self._access.certificates.pop(client_id, None)
        self._access.principals[client_id] = principal
        self._access.sources[client_id] = _source(writer)
        self._passed.add(id(client_session))
        try:
            await super()._handle_client_session(
                reader, writer, client_session, handler, server, listener_name
            )
        finally:
            # A take-over by the same client id has replaced the entry: leave that one.
            if certificate is not None and self._access.certificates.get(client_id) is certificate:
                del self._access.certificates[client_id]

    async def _create_server_instance(
        self,
        listener_name: str,
        listener_type: Any,
        address: str | None,
        port: int,
        ssl_context: ssl.SSLContext | None,
    ) -> Any:
        if listener_name != _TLS_LISTENER or self._tls is None:
            return await super()._create_server_instance(
                listener_name, listener_type, address, port, ssl_context
            )
        return await asyncio.start_server(
            partial(self._tls_connected, listener_name=listener_name),
            address,
            port,
            reuse_address=True,
        )

    async def _tls_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
    ) -> None:
        assert self._tls is not None
        peer = writer.get_extra_info("peername")
        source = f"{peer[0]}:{peer[1]}" if peer else "?"
        try:
            async with asyncio.timeout(self._tls.handshake_timeout):
                await writer.start_tls(self._tls.context)
        except (OSError, TimeoutError, EOFError) as exc:
            cast(BrokerAuthority, self._access.authority).refused(_handshake_refusal(exc, source))
            writer.transport.abort()
            return
        await self._client_connected(
            listener_name, StreamReaderAdapter(reader), StreamWriterAdapter(writer)
        )


class EmbeddedBroker(AsyncResource):
    """An in-process MQTT broker bound to ``host:port`` (and ``host:tls.port`` with TLS).

    Args:
        host: address to listen on.
        port: TCP port of the password listener (MQTT 3.1.1).
        authority: authentication, presence and refusal callbacks.
        max_connections: connection cap per listener (0 = unlimited).
        tls: the client-certificate listener, if any.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 1884,
        authority: BrokerAuthority,
        max_connections: int = 0,
        tls: BrokerTls | None = None,
    ) -> None:
        if tls is not None and tls.context.verify_mode is not ssl.CERT_REQUIRED:
            raise ValueError("the TLS listener's context must require client certificates")
        self.host = host
        self.port = port
        self.tls = tls
        self.authority = authority
        self._access = _Access(authority=authority)
        plugin_config = {"access": self._access}
        listeners: dict[str, Any] = {
            "default": {
                "type": "tcp",
                "bind": f"{host}:{port}",
                "max_connections": max_connections,
            }
        }
        if tls is not None:
            listeners[_TLS_LISTENER] = {
                "type": "tcp",
                "bind": f"{host}:{tls.port}",
                "max_connections": max_connections,
            }
        self._config: dict[str, Any] = {
            "listeners": listeners,
            "plugins": {
                f"{__name__}._AuthPlugin": plugin_config,
                f"{__name__}._TopicPlugin": plugin_config,
            },
        }
        self._broker: Broker | None = None
        self._name = f"tiangong-{uuid.uuid4().hex[:6]}"

    @property
    def connected_clients(self) -> int:
        """Clients currently connected and authenticated."""
        return len(self._access.principals)

    def certificate_sessions(self) -> dict[str, tuple[str | None, int]]:
        """Connected TLS clients: client id -> (tenant, certificate serial)."""
        return {cid: (s.tenant_id, s.serial) for cid, s in self._access.certificates.items()}

    async def disconnect_certificates(self, tenant_id: str | None, serials: Collection[int]) -> int:
        """End every session that authenticated with one of ``serials`` of ``tenant_id``'s CA.

        The connection is closed as if the network dropped it: the will (if any) is published
        and the device's presence turns offline. A reconnect is refused by the certificate
        check, so revocation takes effect at once.

        Returns:
            The number of sessions ended.
        """
        wanted = set(serials)
        ended = 0
        for client_id, session in list(self._access.certificates.items()):
            if session.serial not in wanted or session.tenant_id != tenant_id:
                continue
            self._access.certificates.pop(client_id, None)
            _log.warning(
                "broker: ending session %r: its certificate %x was revoked",
                client_id,
                session.serial,
            )
            with contextlib.suppress(Exception):  # already gone is fine
                async with asyncio.timeout(5):
                    await session.writer.close()
            ended += 1
        return ended

    async def open(self) -> None:
        """Listen (plain, and TLS when configured).

        Raises:
            NetworkError: a port is taken; the message says which option picks another.
        """
        broker = _Broker(
            self._config, loop=asyncio.get_running_loop(), access=self._access, tls=self.tls
        )
        try:
            await broker.start()
        except Exception as exc:  # amqtt raises its own and OSError types from start()
            ports = f"{self.port}" + (f" or {self.tls.port}" if self.tls else "")
            raise NetworkError(
                f"the embedded MQTT broker cannot listen on {self.host}:{ports}: {exc}"
                " (is another broker using the port? pick one with --mqtt-port)"
            ) from exc
        self._broker = broker
        _log.info("embedded MQTT broker listening on %s:%d", self.host, self.port)
        if self.tls is not None:
            _log.info("embedded MQTT broker: TLS with client certificates on %d", self.tls.port)

    async def close(self) -> None:
        """Shut the broker down; its clients are disconnected."""
        if self._broker is not None:
            with contextlib.suppress(Exception):
                await self._broker.shutdown()
            self._broker = None
