"""Exceptions of the network system.

Tree::

    NetworkError
    ├── MqttError
    │   ├── MalformedPacketError      bytes that are not valid MQTT
    │   ├── ProtocolViolationError    valid packets in an order the protocol forbids
    │   ├── ConnectRefusedError       CONNACK with a failure code (``reason_code``)
    │   │   ├── BadCredentialsError
    │   │   ├── NotAuthorizedError
    │   │   └── ServerUnavailableError
    │   ├── ConnectionLostError       the transport closed under us
    │   ├── PublishRejectedError      PUBACK with a failure code (MQTT 5)
    │   ├── SubscribeRejectedError    SUBACK refused a filter
    │   └── MqttTimeoutError
    ├── AccessError                   device access scheme
    │   ├── TopicError                a topic outside the scheme
    │   └── PayloadError              a payload outside the scheme (``reason`` is a stable code)
    └── SparkplugError                Sparkplug B (``reason`` is a stable code, ``detail`` prose)
        ├── SparkplugTopicError       a topic outside the ``spBv1.0`` namespace (``topic``)
        ├── SparkplugPayloadError     bytes that are not a Sparkplug payload
        ├── SparkplugMetricError      a metric unknown, or a value that does not fit its datatype
        │                             (``metric``, ``datatype``)
        └── SparkplugStateError       an operation the session state forbids (``state``)
"""

from __future__ import annotations


class NetworkError(Exception):
    """Root of all network-system errors."""


class MqttError(NetworkError):
    """Root of MQTT client and codec errors."""


class MalformedPacketError(MqttError):
    """The peer sent bytes that do not decode as MQTT."""


class ProtocolViolationError(MqttError):
    """The peer sent a valid packet that the protocol forbids at this point."""


class ConnectRefusedError(MqttError):
    """The broker refused the connection.

    Attributes:
        reason_code: the CONNACK return code (MQTT 3.1.1) or reason code (MQTT 5).
    """

    def __init__(self, reason_code: int, message: str) -> None:
        super().__init__(f"broker refused the connection: {message} (code {reason_code:#04x})")
        self.reason_code = reason_code


class BadCredentialsError(ConnectRefusedError):
    """Bad user name or password."""


class NotAuthorizedError(ConnectRefusedError):
    """The client is not authorized to connect."""


class ServerUnavailableError(ConnectRefusedError):
    """The broker is up but cannot serve the client (busy, shutting down, unavailable)."""


class ConnectionLostError(MqttError):
    """The connection to the broker closed or broke."""


class PublishRejectedError(MqttError):
    """The broker answered a QoS 1 publish with a failure reason code (MQTT 5).

    Attributes:
        reason_code: the PUBACK reason code.
        topic: the topic of the rejected publish.
    """

    def __init__(self, reason_code: int, topic: str) -> None:
        super().__init__(f"broker rejected publish to {topic!r} (reason code {reason_code:#04x})")
        self.reason_code = reason_code
        self.topic = topic


class SubscribeRejectedError(MqttError):
    """The broker refused a subscription.

    Attributes:
        topic_filter: the refused filter.
        reason_code: the SUBACK code.
    """

    def __init__(self, topic_filter: str, reason_code: int) -> None:
        super().__init__(f"broker refused subscription {topic_filter!r} (code {reason_code:#04x})")
        self.topic_filter = topic_filter
        self.reason_code = reason_code


class MqttTimeoutError(MqttError):
    """An MQTT operation did not complete in time."""


class AccessError(NetworkError):
    """Root of device-access-scheme errors."""


class TopicError(AccessError):
    """A topic that is not part of the device access scheme."""


class PayloadError(AccessError):
    """A payload that does not follow the device access scheme.

    Attributes:
        reason: a stable, machine-readable reason code (``malformed_json``, ``bad_shape``...).
        detail: a sentence for people.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class SparkplugError(NetworkError):
    """Root of Sparkplug B errors.

    Attributes:
        reason: a stable, machine-readable reason code (``bad_topic``, ``malformed``...).
        detail: a sentence for people.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class SparkplugTopicError(SparkplugError):
    """A topic that is not a valid Sparkplug B topic.

    Attributes:
        topic: the offending topic (or the id that could not become one).
    """

    def __init__(self, topic: str, reason: str, detail: str) -> None:
        super().__init__(reason, f"{detail} (topic {topic!r})")
        self.topic = topic


class SparkplugPayloadError(SparkplugError):
    """Bytes that do not decode as a Sparkplug B payload (protobuf, or the STATE JSON)."""


class SparkplugMetricError(SparkplugError):
    """A metric that is unknown, or a value that its datatype cannot carry.

    Attributes:
        metric: the metric's name (or ``alias N`` when only the alias is known).
        datatype: the Sparkplug datatype number involved, if any.
    """

    def __init__(self, metric: str, datatype: int | None, reason: str, detail: str) -> None:
        super().__init__(reason, f"metric {metric!r}: {detail}")
        self.metric = metric
        self.datatype = datatype


class SparkplugStateError(SparkplugError):
    """An operation that the Sparkplug session's current state does not allow.

    Attributes:
        state: the name of the state the session was in.
    """

    def __init__(self, state: str, detail: str) -> None:
        super().__init__("bad_state", f"{detail} (state {state})")
        self.state = state
