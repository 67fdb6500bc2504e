"""Sans-I/O MQTT client session: the protocol state between the codec and a transport.

Theory of operation
-------------------
A ``ClientSession`` lives as long as the MQTT *session* (which outlives TCP connections when the
broker keeps it). The transport calls ``connect`` for every new connection, feeds received bytes
to ``receive`` and writes whatever ``data_to_send`` returns. Methods never block and never touch
the network; they return events and queue bytes.

States and transitions (one table, ``_TRANSITIONS``)::

    DISCONNECTED --connect()--> CONNECTING --CONNACK ok--> CONNECTED
         ^                          |  CONNACK refused / connection_lost()
         +--------------------------+
    CONNECTED --connection_lost()--> DISCONNECTED
    CONNECTED --disconnect()-------> CLOSED          (terminal until connect())

Outbound QoS 1 publishes get a packet id and wait in ``_inflight`` until their PUBACK. The
broker's Receive Maximum bounds ``_inflight``; the rest wait in ``_pending`` in order. After a
reconnect every unacknowledged publish is sent again, in order, with DUP set: this is what
makes QoS 1 at-least-once across broker restarts.

Inbound QoS 1 and 2 messages are *not* acknowledged on arrival: the application calls
``ack`` once it has made the message durable. Each connection gets a new ``epoch``; an ack
carrying an old epoch is dropped, because the broker redelivers unacknowledged messages on the
next connection under packet ids that may be reused.
"""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Final

from tiangong.network.errors import (
    BadCredentialsError,
    ConnectRefusedError,
    NotAuthorizedError,
    ProtocolViolationError,
    ServerUnavailableError,
)
from tiangong.network.mqtt.codec import (
    Connack,
    Connect,
    Disconnect,
    OversizedPublish,
    PacketDecoder,
    Pingreq,
    Pingresp,
    Properties,
    ProtocolVersion,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    encode,
)

__all__ = [
    "ClientSession",
    "Connected",
    "MessageReceived",
    "PongReceived",
    "PublishAcked",
    "ServerDisconnected",
    "SessionEvent",
    "SessionState",
    "Subscribed",
    "Unsubscribed",
]


class SessionState(enum.Enum):
    """Where the session is in its connection lifecycle."""

    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


_TRANSITIONS: Final[dict[tuple[SessionState, str], SessionState]] = {
    (SessionState.DISCONNECTED, "connect"): SessionState.CONNECTING,
    (SessionState.CLOSED, "connect"): SessionState.CONNECTING,
    (SessionState.CONNECTING, "connack_ok"): SessionState.CONNECTED,
    (SessionState.CONNECTING, "connack_refused"): SessionState.DISCONNECTED,
    (SessionState.CONNECTING, "lost"): SessionState.DISCONNECTED,
    (SessionState.CONNECTED, "lost"): SessionState.DISCONNECTED,
    (SessionState.CONNECTED, "server_disconnect"): SessionState.DISCONNECTED,
    (SessionState.CONNECTED, "disconnect"): SessionState.CLOSED,
    (SessionState.DISCONNECTED, "lost"): SessionState.DISCONNECTED,
    (SessionState.CLOSED, "lost"): SessionState.CLOSED,
}

# CONNACK codes -> the error subclass a caller can catch (3.1.1 return codes and 5.0 reasons).
_REFUSALS: Final[dict[int, tuple[type[ConnectRefusedError], str]]] = {
    0x01: (ConnectRefusedError, "unacceptable protocol version"),
    0x02: (ConnectRefusedError, "client identifier rejected"),
    0x03: (ServerUnavailableError, "server unavailable"),
    0x04: (BadCredentialsError, "bad user name or password"),
    0x05: (NotAuthorizedError, "not authorized"),
    0x80: (ConnectRefusedError, "unspecified error"),
    0x81: (ConnectRefusedError, "malformed packet"),
    0x82: (ConnectRefusedError, "protocol error"),
    0x84: (ConnectRefusedError, "unsupported protocol version"),
    0x85: (ConnectRefusedError, "client identifier not valid"),
    0x86: (BadCredentialsError, "bad user name or password"),
    0x87: (NotAuthorizedError, "not authorized"),
    0x88: (ServerUnavailableError, "server unavailable"),
    0x89: (ServerUnavailableError, "server busy"),
    0x8A: (NotAuthorizedError, "banned"),
    0x8C: (BadCredentialsError, "bad authentication method"),
    0x95: (ConnectRefusedError, "packet too large"),
    0x97: (ServerUnavailableError, "quota exceeded"),
    0x9C: (ServerUnavailableError, "use another server"),
    0x9D: (ServerUnavailableError, "server moved"),
    0x9F: (ServerUnavailableError, "connection rate exceeded"),
}


@dataclass(frozen=True, slots=True)
class Connected:
    """CONNACK accepted."""

    session_present: bool
    properties: Properties = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """An application message arrived (or an oversized one was skipped)."""

    message: Publish | OversizedPublish
    epoch: int


@dataclass(frozen=True, slots=True)
class PublishAcked:
    """A QoS 1 publish of ours was acknowledged."""

    packet_id: int
    reason_code: int
    topic: str


@dataclass(frozen=True, slots=True)
class Subscribed:
    """SUBACK for one of our SUBSCRIBE packets."""

    packet_id: int
    reason_codes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    """UNSUBACK for one of our UNSUBSCRIBE packets."""

    packet_id: int


@dataclass(frozen=True, slots=True)
class PongReceived:
    """PINGRESP arrived."""


@dataclass(frozen=True, slots=True)
class ServerDisconnected:
    """The broker sent DISCONNECT (MQTT 5)."""

    reason_code: int
    properties: Properties = field(default_factory=dict)


SessionEvent = (
    Connected
    | MessageReceived
    | PublishAcked
    | Subscribed
    | Unsubscribed
    | PongReceived
    | ServerDisconnected
)


class ClientSession:
    """MQTT client session state, free of I/O.

    Args:
        version: protocol version to speak.
        max_packet_size: the largest packet we accept (advertised to MQTT 5 brokers).
        receive_maximum: how many unacknowledged QoS>0 messages the broker may send us at once
            (MQTT 5; this is the inbound backpressure window).
        advertise_max_packet_size: tell an MQTT 5 broker our limit. A broker then silently
            drops bigger messages for us; without it, it sends them and the decoder skips them
            (without buffering) and reports them, so they can be counted and dead-lettered.
    """

    def __init__(
        self,
        *,
        version: ProtocolVersion = ProtocolVersion.V5,
        max_packet_size: int = 16 * 1024 * 1024,
        receive_maximum: int = 1024,
        advertise_max_packet_size: bool = True,
    ) -> None:
        if not 1 <= receive_maximum <= 65535:
            raise ValueError("receive_maximum must be within 1..65535")
        self.version = version
        self.max_packet_size = max_packet_size
        self.receive_maximum = receive_maximum
        self.advertise_max_packet_size = advertise_max_packet_size
        self.state = SessionState.DISCONNECTED
        self.epoch = 0
        self.server_receive_maximum = 65535
        self.server_max_packet_size: int | None = None
        self._decoder = PacketDecoder(version=version, max_packet_size=max_packet_size)
        self._out = bytearray()
        self._next_id = 1
        self._inflight: OrderedDict[int, Publish] = OrderedDict()
        self._pending: deque[Publish] = deque()
        self._pending_ids: set[int] = set()
        self._control_ids: set[int] = set()  # SUBSCRIBE/UNSUBSCRIBE awaiting their ack
        self._unacked_in: dict[int, int] = {}  # packet id -> QoS of inbound messages not yet acked
        self._qos2_received: set[int] = set()  # PUBREC sent, PUBREL not yet seen

    # -- state --------------------------------------------------------------------------------

    def _fire(self, trigger: str) -> None:
        try:
            self.state = _TRANSITIONS[(self.state, trigger)]
        except KeyError as exc:
            raise ProtocolViolationError(
                f"{trigger!r} is not allowed while the session is {self.state.value}"
            ) from exc

    @property
    def inflight(self) -> int:
        """Outbound QoS 1 publishes sent and not yet acknowledged."""
        return len(self._inflight)

    @property
    def pending(self) -> int:
        """Outbound QoS 1 publishes waiting for an inflight slot (or for a connection)."""
        return len(self._pending)

    def data_to_send(self) -> bytes:
        """Return and clear the bytes the transport must write."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def _send(self, packet: Connect | Publish | Puback | Pubrec | Pubcomp | Pubrel) -> None:
        self._out += encode(packet, self.version)

    def _allocate_id(self) -> int:
        for _ in range(65535):
            pid = self._next_id
            self._next_id = pid % 65535 + 1
            if (
                pid not in self._inflight
                and pid not in self._pending_ids
                and pid not in self._control_ids
            ):
                return pid
        raise ProtocolViolationError("all 65535 packet identifiers are in use")

    # -- connection lifecycle --------------------------------------------------------------------

    def connect(self, packet: Connect) -> None:
        """Start a new connection: queue CONNECT and reset per-connection state."""
        if packet.version is not self.version:
            raise ValueError("CONNECT version differs from the session version")
        props = dict(packet.properties)
        if self.version is ProtocolVersion.V5:
            props.setdefault("receive_maximum", self.receive_maximum)
            if self.advertise_max_packet_size:
                props.setdefault("maximum_packet_size", self.max_packet_size)
        self._fire("connect")
        self.epoch += 1
        self._decoder = PacketDecoder(version=self.version, max_packet_size=self.max_packet_size)
        self._out.clear()
        self._unacked_in.clear()
        self._control_ids.clear()
        self._out += encode(
            Connect(
                client_id=packet.client_id,
                version=packet.version,
                keepalive=packet.keepalive,
                clean_start=packet.clean_start,
                username=packet.username,
                password=packet.password,
                will=packet.will,
                properties=props,
            ),
            self.version,
        )

    def connection_lost(self) -> None:
        """The transport closed. Unacknowledged publishes stay queued for the next connection."""
        self._fire("lost")
        self._out.clear()

    def disconnect(self, reason_code: int = 0) -> None:
        """Queue an orderly DISCONNECT."""
        self._fire("disconnect")
        self._out += encode(Disconnect(reason_code=reason_code), self.version)

    # -- inbound ---------------------------------------------------------------------------------

    def receive(self, data: bytes | bytearray | memoryview) -> list[SessionEvent]:
        """Feed received bytes; return the events they complete.

        Raises:
            MalformedPacketError: undecodable bytes (close the connection).
            ProtocolViolationError: a packet not allowed now (close the connection).
            ConnectRefusedError: the broker refused CONNECT (a subclass names the reason).
        """
        self._decoder.feed(data)
        events: list[SessionEvent] = []
        while (packet := self._decoder.next_packet()) is not None:
            event = self._handle(packet)
            if event is not None:
                events.append(event)
        return events

    def _handle(self, packet: object) -> SessionEvent | None:
        if self.state is SessionState.CONNECTING:
            if not isinstance(packet, Connack):
                raise ProtocolViolationError("expected CONNACK as the first packet")
            return self._on_connack(packet)
        if self.state is not SessionState.CONNECTED:
            raise ProtocolViolationError(f"packet received while {self.state.value}")
        match packet:
            case Publish() | OversizedPublish():
                return self._on_publish(packet)
            case Puback():
                return self._on_puback(packet)
            case Pubrel():
                self._qos2_received.discard(packet.packet_id)
                self._out += encode(Pubcomp(packet_id=packet.packet_id), self.version)
                return None
            case Suback():
                self._control_ids.discard(packet.packet_id)
                return Subscribed(packet_id=packet.packet_id, reason_codes=packet.reason_codes)
            case Unsuback():
                self._control_ids.discard(packet.packet_id)
                return Unsubscribed(packet_id=packet.packet_id)
            case Pingresp():
                return PongReceived()
            case Disconnect():
                self._fire("server_disconnect")
                return ServerDisconnected(
                    reason_code=packet.reason_code, properties=packet.properties
                )
            case Pubrec() | Pubcomp():
                raise ProtocolViolationError("QoS 2 publishing is not used by this client")
        raise ProtocolViolationError(f"a broker may not send {type(packet).__name__}")

    def _on_connack(self, packet: Connack) -> SessionEvent:
        if packet.reason_code != 0:
            self._fire("connack_refused")
            cls, text = _REFUSALS.get(packet.reason_code, (ConnectRefusedError, "refused"))
            reason = packet.properties.get("reason_string")
            raise cls(packet.reason_code, f"{text}: {reason}" if reason else text)
        self._fire("connack_ok")
        props = packet.properties
        self.server_receive_maximum = int(props.get("receive_maximum", 65535))  # type: ignore[call-overload]
        max_size = props.get("maximum_packet_size")
        self.server_max_packet_size = int(max_size) if max_size is not None else None  # type: ignore[call-overload]
        if not packet.session_present:
            # The broker forgot us: in-flight publishes are re-sent as part of the queue below.
            self._qos2_received.clear()
        resend = list(self._inflight.values())
        self._inflight.clear()
        for publish in reversed(resend):
            self._pending_ids.add(publish.packet_id)
            self._pending.appendleft(
                Publish(
                    topic=publish.topic,
                    payload=publish.payload,
                    qos=publish.qos,
                    retain=publish.retain,
                    dup=True,
                    packet_id=publish.packet_id,
                    properties=publish.properties,
                )
            )
        self._flush_pending()
        return Connected(session_present=packet.session_present, properties=props)

    def _on_publish(self, packet: Publish | OversizedPublish) -> SessionEvent | None:
        if packet.qos == 2 and packet.packet_id in self._qos2_received:
            return None  # duplicate of a QoS 2 message already delivered
        if packet.qos:
            self._unacked_in[packet.packet_id] = packet.qos
        return MessageReceived(message=packet, epoch=self.epoch)

    def _on_puback(self, packet: Puback) -> SessionEvent | None:
        publish = self._inflight.pop(packet.packet_id, None)
        if publish is None:
            return None  # ack for a publish of an earlier connection: already handled
        self._flush_pending()
        return PublishAcked(
            packet_id=packet.packet_id, reason_code=packet.reason_code, topic=publish.topic
        )

    def ack(self, packet_id: int, epoch: int, reason_code: int = 0) -> bool:
        """Acknowledge an inbound message once it is safe (stored).

        Returns:
            ``True`` if an acknowledgement was queued; ``False`` if the message belongs to an
            earlier connection (the broker will redeliver it) or was QoS 0.
        """
        if epoch != self.epoch or self.state is not SessionState.CONNECTED:
            return False
        qos = self._unacked_in.pop(packet_id, 0)
        if qos == 1:
            self._out += encode(Puback(packet_id=packet_id, reason_code=reason_code), self.version)
            return True
        if qos == 2:
            self._qos2_received.add(packet_id)
            self._out += encode(Pubrec(packet_id=packet_id, reason_code=reason_code), self.version)
            return True
        return False

    # -- outbound --------------------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> int:
        """Queue a publish. QoS 0 goes out only while connected; QoS 1 waits for a connection.

        Returns:
            The packet id (0 for QoS 0).
        """
        if qos not in (0, 1):
            raise ValueError("this client publishes with QoS 0 or 1")
        props = properties or {}
        if qos == 0:
            if self.state is not SessionState.CONNECTED:
                raise ProtocolViolationError("QoS 0 publish while not connected")
            self._out += encode(
                Publish(topic=topic, payload=payload, retain=retain, properties=props),
                self.version,
            )
            return 0
        pid = self._allocate_id()
        publish = Publish(
            topic=topic, payload=payload, qos=1, retain=retain, packet_id=pid, properties=props
        )
        self._pending.append(publish)
        self._pending_ids.add(pid)
        self._flush_pending()
        return pid

    def _flush_pending(self) -> None:
        if self.state is not SessionState.CONNECTED:
            return
        while self._pending and len(self._inflight) < self.server_receive_maximum:
            publish = self._pending.popleft()
            self._pending_ids.discard(publish.packet_id)
            self._inflight[publish.packet_id] = publish
            self._out += encode(publish, self.version)

    def subscribe(self, subscriptions: tuple[Subscription, ...]) -> int:
        """Queue a SUBSCRIBE; returns its packet id."""
        if self.state is not SessionState.CONNECTED:
            raise ProtocolViolationError("subscribe while not connected")
        pid = self._allocate_id()
        self._control_ids.add(pid)
        self._out += encode(Subscribe(packet_id=pid, subscriptions=subscriptions), self.version)
        return pid

    def unsubscribe(self, topic_filters: tuple[str, ...]) -> int:
        """Queue an UNSUBSCRIBE; returns its packet id."""
        if self.state is not SessionState.CONNECTED:
            raise ProtocolViolationError("unsubscribe while not connected")
        pid = self._allocate_id()
        self._control_ids.add(pid)
        self._out += encode(Unsubscribe(packet_id=pid, topic_filters=topic_filters), self.version)
        return pid

    def ping(self) -> None:
        """Queue a PINGREQ."""
        if self.state is SessionState.CONNECTED:
            self._out += encode(Pingreq(), self.version)
