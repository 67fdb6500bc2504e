"""The embedded MQTT broker of the local demo (amqtt), with Tiangong's access rules plugged in.

``tiangong up`` needs a broker that starts with the platform and no installation; amqtt is the
maintained asyncio broker for Python. Deployments point the platform at Mosquitto or EMQX
instead (same topics, same rules: see ``tiangong broker mosquitto-files``).

The broker knows nothing of devices: it asks a ``BrokerAuthority`` (the platform's device
registry behind a small interface) who a client is, and applies ``authorization``'s rules.
Anonymous clients are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self, cast

from amqtt.broker import Broker
from amqtt.contexts import Action, BaseContext
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from tiangong.network.access.authorization import Principal, may_publish, may_subscribe
from tiangong.network.errors import NetworkError

__all__ = ["BrokerAuthority", "EmbeddedBroker"]

_log = logging.getLogger(__name__)


class BrokerAuthority(Protocol):
    """Who may connect, and what to do when they come and go."""

    def authenticate(self, username: str | None, password: str | None) -> Principal | None:
        """The principal for these credentials, or ``None`` to refuse the connection."""

    def connected(self, principal: Principal) -> None:
        """A client connected."""

    def disconnected(self, principal: Principal) -> None:
        """A client disconnected (cleanly or not)."""

    def denied(self, principal: Principal | None, action: str, topic: str) -> None:
        """A connection, publish or subscription was refused."""


# amqtt builds its plugins itself from a dotted path and a dataclass config; the config is the
# only way in, so the authority object travels through it, and the plugins share one registry
# of connected principals through that same object.
@dataclass
class _PluginConfig:
    authority: Any = None
    principals: Any = None


class _AuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no type information
    Config = _PluginConfig

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        config = cast(_PluginConfig, self.context.config)
        self.authority = cast(BrokerAuthority, config.authority)
        self.principals = cast(dict[str, Principal], config.principals)

    async def authenticate(self, *, session: Session) -> bool | None:
        password = session.password
        if isinstance(password, bytes | bytearray):
            password = password.decode("utf-8", "replace")
        principal = self.authority.authenticate(session.username, password)
        if principal is None:
            self.authority.denied(None, "connect", session.username or "<anonymous>")
            return False
        self.principals[session.client_id] = principal
        return True

    async def on_broker_client_connected(
        self,
        *,
        client_id: str,
        client_session: Session,  # noqa: ARG002 - amqtt passes it by keyword
    ) -> None:
        principal = self.principals.get(client_id)
        if principal is not None:
            self.authority.connected(principal)

    async def on_broker_client_disconnected(
        self,
        *,
        client_id: str,
        client_session: Session,  # noqa: ARG002 - amqtt passes it by keyword
    ) -> None:
        principal = self.principals.pop(client_id, None)
        if principal is not None:
            self.authority.disconnected(principal)


class _TopicPlugin(BaseTopicPlugin):  # type: ignore[misc]  # amqtt ships no type information
    Config = _PluginConfig

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        config = cast(_PluginConfig, self.context.config)
        self.authority = cast(BrokerAuthority, config.authority)
        self.principals = cast(dict[str, Principal], config.principals)

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: Any = None
    ) -> bool | None:
        principal = self.principals.get(session.client_id) if session is not None else None
        if principal is None or topic is None:
            return False
        if action == Action.PUBLISH:
            allowed = may_publish(principal, topic)
        else:  # SUBSCRIBE, and RECEIVE of a message matching a subscription
            allowed = may_subscribe(principal, topic)
        if not allowed and action != Action.RECEIVE:
            self.authority.denied(principal, str(action), topic)
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


class _Broker(Broker):  # type: ignore[misc]  # amqtt ships no type information
    """amqtt's broker, refusing a client that fails authentication before anything else.

    amqtt 0.12 authenticates a CONNECT but acts on the answer only after it has taken over the
    session of a connected client with the same client id (disconnecting it, so its will
    fires) and registered the refused session in its place. Anyone who knows a device's name
    could knock it offline with a wrong password, and the refused connection's socket is never
    closed. So authentication happens here, first: a refused client is answered at once, and
    amqtt goes on only with clients that passed, taking the verdict already given.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._subscriptions = _Snapshots()
        self._passed: set[int] = set()  # ids of sessions authenticated, until amqtt asks

    async def _authenticate(self, session: Session, listener: Any) -> bool:
        if id(session) in self._passed:
            self._passed.discard(id(session))
            return True
        return bool(await super()._authenticate(session, listener))

    async def _handle_client_session(  # noqa: PLR0917 - amqtt's signature
        self,
        reader: Any,
        writer: Any,
        client_session: Session,
        handler: Any,
        server: Any,
        listener_name: str,
    ) -> None:
        if not await self._authenticate(client_session, self.listeners_config[listener_name]):
            handler.attach(client_session, reader, writer)
            with contextlib.suppress(Exception):  # the client may already be gone
                await handler.mqtt_connack_authorize(False)
            await writer.close()
            return
        self._passed.add(id(client_session))
        await super()._handle_client_session(
            reader, writer, client_session, handler, server, listener_name
        )


class EmbeddedBroker:
    """An in-process MQTT broker bound to ``host:port``.

    Args:
        host: address to listen on.
        port: TCP port (MQTT 3.1.1).
        authority: authentication and presence callbacks.
        max_connections: connection cap (0 = unlimited).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 1884,
        authority: BrokerAuthority,
        max_connections: int = 0,
    ) -> None:
        self.host = host
        self.port = port
        self.authority = authority
        self._principals: dict[str, Principal] = {}
        plugin_config = {"authority": authority, "principals": self._principals}
        self._config: dict[str, Any] = {
            "listeners": {
                "default": {
                    "type": "tcp",
                    "bind": f"{host}:{port}",
                    "max_connections": max_connections,
                }
            },
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
        return len(self._principals)

    async def __aenter__(self) -> Self:
        broker = _Broker(self._config, loop=asyncio.get_running_loop())
        try:
            await broker.start()
        except Exception as exc:  # amqtt raises its own and OSError types from start()
            raise NetworkError(
                f"the embedded MQTT broker cannot listen on {self.host}:{self.port}: {exc}"
                " (is another broker using the port? pick one with --mqtt-port)"
            ) from exc
        self._broker = broker
        _log.info("embedded MQTT broker listening on %s:%d", self.host, self.port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._broker is not None:
            with contextlib.suppress(Exception):
                await self._broker.shutdown()
            self._broker = None
