"""Asyncio MQTT client over the sans-I/O ``ClientSession``.

Why our own client: the platform must acknowledge a QoS 1 message only after it is stored,
and must stop reading from the broker when its pipeline is full (so memory stays flat and the
broker, not our process, holds the backlog). aiomqtt acknowledges on arrival and drops messages
when its queue is full; paho-mqtt can ack manually but runs its own network loop and cannot
push back on the socket. This module keeps the transport thin: an ``asyncio.Protocol`` feeds
bytes to the session, writes what the session queues, and calls ``pause_reading`` when the
inbound queue reaches its bound.

Lifecycle: ``async with MqttClient(...) as client`` connects (raising if the first attempt
fails), then a supervisor task keeps the connection up with exponential backoff and jitter.
Subscriptions are replayed after a reconnect; unacknowledged QoS 1 publishes are re-sent by the
session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self, cast

from tiangong.network.errors import (
    ConnectionLostError,
    ConnectRefusedError,
    MqttError,
    MqttTimeoutError,
    PublishRejectedError,
    SubscribeRejectedError,
)
from tiangong.network.mqtt.codec import (
    Connect,
    OversizedPublish,
    Properties,
    ProtocolVersion,
    Subscription,
    Will,
)
from tiangong.network.mqtt.session import (
    ClientSession,
    Connected,
    MessageReceived,
    PublishAcked,
    ServerDisconnected,
    SessionEvent,
    SessionState,
    Subscribed,
    Unsubscribed,
)

__all__ = ["ClientStats", "InboundMessage", "MqttClient", "client_tls_context"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message delivered to the application.

    Attributes:
        topic: the topic it was published on.
        payload: the payload (empty when ``oversized``).
        qos: delivery QoS.
        retain: whether the broker delivered it as a retained message.
        dup: whether the broker marked it as a redelivery.
        packet_id: the packet id (0 for QoS 0).
        epoch: the connection it arrived on (acks from older connections are dropped).
        size: payload bytes, or the whole packet size when ``oversized``.
        oversized: the payload exceeded the client's limit and was skipped.
    """

    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    packet_id: int
    epoch: int
    size: int
    oversized: bool = False
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class ClientStats:
    """Counters a service exports as metrics."""

    connects: int = 0
    connection_failures: int = 0
    messages_in: int = 0
    bytes_in: int = 0
    messages_out: int = 0
    oversized_in: int = 0
    read_pauses: int = 0


class _Protocol(asyncio.Protocol):
    def __init__(self, client: MqttClient) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.can_write = asyncio.Event()
        self.can_write.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.client._on_data(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.can_write.set()
        if not self.lost.done():
            self.lost.set_result(None)
        self.client._on_lost(self, exc)

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()


OnConnect = Callable[["MqttClient", bool], Awaitable[None]]


def client_tls_context(
    *,
    cafile: str | os.PathLike[str],
    certfile: str | os.PathLike[str] | None = None,
    keyfile: str | os.PathLike[str] | None = None,
) -> ssl.SSLContext:
    """A TLS context for ``MqttClient(tls=...)``: trust ``cafile``, present a client certificate.

    The broker's certificate is checked against ``cafile`` and the host name the client
    connects to (``localhost``, ``127.0.0.1`` and the names the platform was configured with
    are in the platform broker's certificate). TLS 1.2 at least.

    Raises:
        ValueError: a certificate without its key, or the other way round.
        OSError: a file cannot be read (``ssl.SSLError`` when it is not PEM or the key does not
            match the certificate).
    """
    if (certfile is None) != (keyfile is None):
        raise ValueError("a client certificate needs its key, and a key its certificate")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=os.fspath(cafile))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if certfile is not None and keyfile is not None:
        context.load_cert_chain(os.fspath(certfile), os.fspath(keyfile))
    return context


class MqttClient:
    """An asyncio MQTT client with manual acknowledgement and read backpressure.

    All configuration is keyword-only and validated here.

    Args:
        host: broker host.
        port: broker port.
        client_id: MQTT client identifier (must be unique on the broker).
        username: user name, if the broker authenticates.
        password: password.
        version: MQTT 5 (default) or 3.1.1.
        keepalive: seconds between keep-alive probes.
        clean_start: start a fresh session on the first connection. Reconnects always resume.
        session_expiry: seconds the broker keeps our session after a disconnect (MQTT 5;
            3.1.1 keeps persistent sessions for ever when ``clean_start`` is false).
        will: last-will message.
        tls: TLS context, or ``None`` for plain TCP.
        max_packet_size: largest inbound packet; bigger publishes are reported ``oversized``.
        advertise_max_packet_size: tell an MQTT 5 broker ``max_packet_size`` (it then drops
            bigger messages for us instead of sending them; see ``ClientSession``).
        receive_maximum: unacknowledged inbound QoS>0 messages the broker may have in flight.
        inbound_queue: messages held for the application before the socket stops being read.
        inbound_bytes: payload bytes held before the socket stops being read (whichever bound
            is reached first).
        reconnect: keep reconnecting after the first successful connection.
        backoff_initial: first reconnect delay in seconds.
        backoff_max: largest reconnect delay in seconds.
        connect_timeout: seconds to wait for TCP connect plus CONNACK.
        on_connect: coroutine run after every successful (re)connect, before waiters resume.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: str,
        username: str | None = None,
        password: str | bytes | None = None,
        version: ProtocolVersion = ProtocolVersion.V5,
        keepalive: int = 30,
        clean_start: bool = True,
        session_expiry: int = 0,
        will: Will | None = None,
        tls: ssl.SSLContext | None = None,
        max_packet_size: int = 16 * 1024 * 1024,
        advertise_max_packet_size: bool = True,
        receive_maximum: int = 1024,
        inbound_queue: int = 1024,
        inbound_bytes: int = 64 * 1024 * 1024,
        reconnect: bool = True,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        connect_timeout: float = 10.0,
        on_connect: OnConnect | None = None,
    ) -> None:
        if not 0 < port < 65536:
            raise ValueError(f"port out of range: {port}")
        if not 0 <= keepalive <= 65535:
            raise ValueError("keepalive must be within 0..65535 seconds")
        if inbound_queue < 1 or inbound_bytes < 1:
            raise ValueError("inbound_queue and inbound_bytes must be at least 1")
        if backoff_initial <= 0 or backoff_max < backoff_initial:
            raise ValueError("backoff must satisfy 0 < initial <= max")
        self.host = host
        self.port = port
        self.client_id = client_id
        self._username = username
        self._password = password.encode() if isinstance(password, str) else password
        self.version = version
        self.keepalive = keepalive
        self._clean_start = clean_start
        self._session_expiry = session_expiry
        self._will = will
        self._tls = tls
        self._reconnect = reconnect
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._connect_timeout = connect_timeout
        self._on_connect = on_connect
        self._inbound_limit = inbound_queue
        self._inbound_bytes_limit = inbound_bytes
        self._inbound_bytes = 0
        self.session = ClientSession(
            version=version,
            max_packet_size=max_packet_size,
            receive_maximum=receive_maximum,
            advertise_max_packet_size=advertise_max_packet_size,
        )
        self.stats = ClientStats()
        self._protocol: _Protocol | None = None
        self._inbound: asyncio.Queue[InboundMessage] = asyncio.Queue()
        self._reading_paused = False
        self._connected = asyncio.Event()
        self._connack: asyncio.Future[Connected] | None = None
        self._pub_waiters: dict[int, asyncio.Future[int]] = {}
        self._sub_waiters: dict[int, asyncio.Future[tuple[int, ...]]] = {}
        self._subscriptions: dict[str, Subscription] = {}
        self._closing = False
        self._last_rx = 0.0
        self._exit = contextlib.AsyncExitStack()
        self._background: list[asyncio.Task[None]] = []
        self._fatal: BaseException | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self._connect_once(first=True)
        tasks = await self._exit.enter_async_context(asyncio.TaskGroup())
        self._background.append(
            tasks.create_task(self._supervise(), name=f"mqtt-supervisor:{self.client_id}")
        )
        if self.keepalive:
            self._background.append(
                tasks.create_task(self._keepalive(), name=f"mqtt-keepalive:{self.client_id}")
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing = True
        protocol = self._protocol
        if (
            protocol is not None
            and protocol.transport is not None
            and self.session.state is SessionState.CONNECTED
        ):
            self.session.disconnect()
            self._flush(protocol)
        for task in self._background:
            task.cancel()
        for pub_waiter in self._pub_waiters.values():
            if not pub_waiter.done():
                pub_waiter.set_exception(ConnectionLostError("client closed"))
        for sub_waiter in self._sub_waiters.values():
            if not sub_waiter.done():
                sub_waiter.set_exception(ConnectionLostError("client closed"))
        self._pub_waiters.clear()
        self._sub_waiters.clear()
        await self._exit.aclose()
        # Close the transport only now: a reconnect in progress may have replaced it.
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                async with asyncio.timeout(1.0):
                    await protocol.lost

    @property
    def connected(self) -> bool:
        """Whether a connection is up and CONNACK was accepted."""
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        """Wait until the client is connected (wrap in ``asyncio.timeout`` to bound it)."""
        await self._connected.wait()

    async def _supervise(self) -> None:
        delay = self._backoff_initial
        while True:
            protocol = self._protocol
            if protocol is not None:
                await protocol.lost
            self._connected.clear()
            if self._is_closing():
                return
            if not self._reconnect:
                self._fatal = ConnectionLostError(f"lost connection to {self.host}:{self.port}")
                for waiter in self._pub_waiters.values():
                    if not waiter.done():
                        waiter.set_exception(self._fatal)
                self._pub_waiters.clear()
                return
            while not self._closing:
                # Full jitter keeps a plant's worth of devices from reconnecting in lockstep.
                await asyncio.sleep(random.uniform(0, delay))  # noqa: S311
                try:
                    await self._connect_once(first=False)
                except (OSError, MqttError) as exc:
                    self.stats.connection_failures += 1
                    _log.warning(
                        "mqtt %s: reconnect to %s:%d failed: %s",
                        self.client_id,
                        self.host,
                        self.port,
                        exc,
                    )
                    delay = min(delay * 2, self._backoff_max)
                    continue
                delay = self._backoff_initial
                break

    def _is_closing(self) -> bool:
        return self._closing

    async def _connect_once(self, *, first: bool) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, protocol = await loop.create_connection(
                    lambda: _Protocol(self), self.host, self.port, ssl=self._tls
                )
                self._protocol = protocol
                props: Properties = {}
                if self.version is ProtocolVersion.V5 and self._session_expiry:
                    props["session_expiry_interval"] = self._session_expiry
                self._connack = loop.create_future()
                self.session.connect(
                    Connect(
                        client_id=self.client_id,
                        version=self.version,
                        keepalive=self.keepalive,
                        clean_start=self._clean_start and first,
                        username=self._username,
                        password=self._password,
                        will=self._will,
                        properties=props,
                    )
                )
                self._flush(protocol)
                connected = await asyncio.shield(self._connack)
        except TimeoutError as exc:
            self._forget_connack()
            self._abort()
            raise MqttTimeoutError(f"no CONNACK from {self.host}:{self.port} in time") from exc
        except BaseException:  # OSError, MqttError, and cancellation while closing
            self._forget_connack()
            self._abort()
            raise
        self._last_rx = time.monotonic()
        self.stats.connects += 1
        if self._reading_paused and self._protocol and self._protocol.transport:
            self._protocol.transport.pause_reading()
        if self._subscriptions and not connected.session_present:
            await self._send_subscribe(tuple(self._subscriptions.values()))
        if self._on_connect is not None:
            await self._on_connect(self, connected.session_present)
        self._connected.set()

    def _forget_connack(self) -> None:
        # Nobody waits for this attempt's CONNACK any more: settle the future now so a late
        # connection loss does not leave an exception that is never retrieved.
        if self._connack is not None:
            if self._connack.done():
                if not self._connack.cancelled():
                    self._connack.exception()
            else:
                self._connack.cancel()

    def abort(self) -> None:
        """Break the connection without DISCONNECT, as a failing link would.

        The broker then publishes the will. The client reconnects unless it is closing.
        """
        self._abort()

    def _abort(self) -> None:
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abort()
        if self.session.state in (SessionState.CONNECTING, SessionState.CONNECTED):
            self.session.connection_lost()

    # -- protocol callbacks ----------------------------------------------------------------------

    def _on_data(self, protocol: _Protocol, data: bytes) -> None:
        if protocol is not self._protocol:
            return
        self._last_rx = time.monotonic()
        try:
            events = self.session.receive(data)
        except ConnectRefusedError as exc:
            if self._connack is not None and not self._connack.done():
                self._connack.set_exception(exc)
            self._abort()
            return
        except MqttError as exc:
            _log.warning("mqtt %s: closing connection: %s", self.client_id, exc)
            if self._connack is not None and not self._connack.done():
                self._connack.set_exception(exc)
            self._abort()
            return
        for event in events:
            self._dispatch(event)
        self._flush(protocol)

    def _dispatch(self, event: SessionEvent) -> None:
        match event:
            case MessageReceived(message=msg, epoch=epoch):
                self.stats.messages_in += 1
                if isinstance(msg, OversizedPublish):
                    self.stats.oversized_in += 1
                    inbound = InboundMessage(
                        topic=msg.topic,
                        payload=b"",
                        qos=msg.qos,
                        retain=False,
                        dup=False,
                        packet_id=msg.packet_id,
                        epoch=epoch,
                        size=msg.size,
                        oversized=True,
                    )
                else:
                    self.stats.bytes_in += len(msg.payload)
                    inbound = InboundMessage(
                        topic=msg.topic,
                        payload=msg.payload,
                        qos=msg.qos,
                        retain=msg.retain,
                        dup=msg.dup,
                        packet_id=msg.packet_id,
                        epoch=epoch,
                        size=len(msg.payload),
                        properties=msg.properties,
                    )
                self._inbound.put_nowait(inbound)
                self._inbound_bytes += len(inbound.payload)
                full = (
                    self._inbound.qsize() >= self._inbound_limit
                    or self._inbound_bytes >= self._inbound_bytes_limit
                )
                if full and not self._reading_paused:
                    self._pause_reading()
            case PublishAcked(packet_id=pid, reason_code=code):
                waiter = self._pub_waiters.pop(pid, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(code)
            case Subscribed(packet_id=pid, reason_codes=codes):
                sub_waiter = self._sub_waiters.pop(pid, None)
                if sub_waiter is not None and not sub_waiter.done():
                    sub_waiter.set_result(codes)
            case Connected():
                if self._connack is not None and not self._connack.done():
                    self._connack.set_result(event)
            case ServerDisconnected(reason_code=code):
                _log.warning("mqtt %s: broker sent DISCONNECT %#04x", self.client_id, code)
                self._abort()
            case Unsubscribed():
                pass
            case _:
                pass

    def _on_lost(self, protocol: _Protocol, exc: Exception | None) -> None:
        if protocol is not self._protocol:
            return
        self._connected.clear()
        if self.session.state in (SessionState.CONNECTING, SessionState.CONNECTED):
            self.session.connection_lost()
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(
                ConnectionLostError(f"connection to {self.host}:{self.port} closed: {exc}")
            )
        for waiter in self._sub_waiters.values():
            if not waiter.done():
                waiter.set_exception(ConnectionLostError("connection lost before SUBACK"))
        self._sub_waiters.clear()
        if exc is not None and not self._closing:
            _log.info("mqtt %s: connection lost: %s", self.client_id, exc)

    def _flush(self, protocol: _Protocol) -> None:
        data = self.session.data_to_send()
        if data and protocol.transport is not None and not protocol.transport.is_closing():
            protocol.transport.write(data)

    def _pause_reading(self) -> None:
        self._reading_paused = True
        self.stats.read_pauses += 1
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.pause_reading()

    def _resume_reading(self) -> None:
        self._reading_paused = False
        if self._protocol is not None and self._protocol.transport is not None:
            with contextlib.suppress(RuntimeError):
                self._protocol.transport.resume_reading()

    async def _keepalive(self) -> None:
        interval = max(self.keepalive / 2, 0.5)
        while True:
            await asyncio.sleep(interval)
            protocol = self._protocol
            if protocol is None or self.session.state is not SessionState.CONNECTED:
                continue
            # While we hold reading back (backpressure) the broker's PINGRESP waits unread in
            # the socket, so silence then says nothing about the broker.
            silent = time.monotonic() - self._last_rx > self.keepalive * 1.5
            if silent and not self._reading_paused:
                _log.warning("mqtt %s: broker silent past keep-alive, reconnecting", self.client_id)
                self._abort()
                continue
            self.session.ping()
            self._flush(protocol)

    # -- application API -------------------------------------------------------------------------

    async def messages(self) -> AsyncIterator[InboundMessage]:
        """Yield inbound messages in arrival order; reading resumes as the queue drains."""
        while True:
            yield await self.next_message()

    async def next_message(self) -> InboundMessage:
        """Return the next inbound message, waiting for one."""
        message = await self._inbound.get()
        self._inbound_bytes -= len(message.payload)
        if (
            self._reading_paused
            and self._inbound.qsize() <= self._inbound_limit // 2
            and self._inbound_bytes <= self._inbound_bytes_limit // 2
        ):
            self._resume_reading()
        return message

    def pending_messages(self) -> int:
        """Messages received and not yet taken by the application."""
        return self._inbound.qsize()

    def ack(self, message: InboundMessage, reason_code: int = 0) -> bool:
        """Acknowledge a QoS>0 message once it is durable.

        Returns:
            ``False`` if the message came on an earlier connection (the broker redelivers it).
        """
        if not message.qos:
            return False
        sent = self.session.ack(message.packet_id, message.epoch, reason_code)
        if sent and self._protocol is not None:
            self._flush(self._protocol)
        return sent

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        """Publish a message; for QoS 1 wait until the broker acknowledges it.

        QoS 0 waits for a connection; QoS 1 is queued across reconnects until acknowledged.
        Wrap the call in ``asyncio.timeout`` to bound the wait.

        Raises:
            PublishRejectedError: the broker refused it (MQTT 5 reason code >= 0x80).
        """
        if qos == 0:
            if self.session.state is not SessionState.CONNECTED:
                await self._connected.wait()
            self.session.publish(topic, payload, retain=retain, properties=properties)
            self.stats.messages_out += 1
            protocol = self._protocol
            if protocol is not None:
                self._flush(protocol)
                await protocol.can_write.wait()
            return
        pid = self.session.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pub_waiters[pid] = waiter
        self.stats.messages_out += 1
        if self._protocol is not None:
            self._flush(self._protocol)
        try:
            code = await waiter
        except asyncio.CancelledError:
            self._pub_waiters.pop(pid, None)
            raise
        if code >= 0x80:
            raise PublishRejectedError(code, topic)

    async def subscribe(self, *subscriptions: Subscription) -> None:
        """Subscribe and remember the filters for reconnects.

        Raises:
            SubscribeRejectedError: the broker refused one of the filters.
            MqttTimeoutError: no SUBACK within the connect timeout.
        """
        for sub in subscriptions:
            self._subscriptions[sub.topic_filter] = sub
        if self.session.state is not SessionState.CONNECTED:
            await self._connected.wait()
        await self._send_subscribe(subscriptions)

    async def _send_subscribe(self, subscriptions: tuple[Subscription, ...]) -> None:
        protocol = self._protocol
        if protocol is None:
            raise ConnectionLostError("not connected")
        pid = self.session.subscribe(subscriptions)
        waiter: asyncio.Future[tuple[int, ...]] = asyncio.get_running_loop().create_future()
        self._sub_waiters[pid] = waiter
        self._flush(protocol)
        try:
            async with asyncio.timeout(self._connect_timeout):
                codes = await waiter
        except TimeoutError as exc:
            raise MqttTimeoutError("no SUBACK in time") from exc
        for sub, code in zip(subscriptions, codes, strict=False):
            if code >= 0x80:
                self._subscriptions.pop(sub.topic_filter, None)
                raise SubscribeRejectedError(sub.topic_filter, code)

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        protocol = self._protocol
        if protocol is not None:
            await protocol.can_write.wait()

    def raise_if_failed(self) -> None:
        """Raise the error that stopped a client created with ``reconnect=False``."""
        if self._fatal is not None:
            raise self._fatal
