"""Sparkplug B (Eclipse Sparkplug 3.0, ISO/IEC 20237) as a sans-I/O core.

- ``codec``: topics, metrics and payloads (protobuf and STATE JSON) as typed values
- ``edge_node``: the edge node session an edge gateway drives (births, data, commands)
- ``host``: the host application session the platform drives (tracking, seq checks, rebirths)
- ``sparkplug_b.proto``: the payload schema; ``_generated_sparkplug_b_pb2`` is compiled from it
  by ``tools/generate_sparkplug.py`` and must not be edited by hand

Neither session touches the network: an MQTT transport feeds them received messages and
publishes the ``OutboundMessage`` values they return.
"""

from tiangong.network.sparkplug.codec import (
    BDSEQ_METRIC,
    EVENT_METRIC_PREFIX,
    NAMESPACE,
    REBIRTH_METRIC,
    DataSet,
    DataType,
    EdgeNodeDescriptor,
    ExtensionValue,
    HostState,
    MessageType,
    MetaData,
    Metric,
    MetricValue,
    OutboundMessage,
    PayloadData,
    PropertySet,
    PropertyValue,
    SparkplugTopic,
    StateTopic,
    Template,
    TemplateParameter,
    decode_payload,
    decode_state,
    encode_payload,
    encode_state,
    parse_topic,
)
from tiangong.network.sparkplug.edge_node import (
    CommandRejected,
    EdgeNode,
    EdgeNodeOutput,
    EdgeNodeState,
    WriteRequest,
)
from tiangong.network.sparkplug.host import (
    Data,
    DeviceBorn,
    DeviceDied,
    HostApplication,
    HostEvent,
    HostOutput,
    MetricSample,
    NodeBorn,
    NodeDied,
    NodeStale,
    NodeStatus,
    ProtocolError,
    RebirthRequested,
)

__all__ = [
    "BDSEQ_METRIC",
    "EVENT_METRIC_PREFIX",
    "NAMESPACE",
    "REBIRTH_METRIC",
    "CommandRejected",
    "Data",
    "DataSet",
    "DataType",
    "DeviceBorn",
    "DeviceDied",
    "EdgeNode",
    "EdgeNodeDescriptor",
    "EdgeNodeOutput",
    "EdgeNodeState",
    "ExtensionValue",
    "HostApplication",
    "HostEvent",
    "HostOutput",
    "HostState",
    "MessageType",
    "MetaData",
    "Metric",
    "MetricSample",
    "MetricValue",
    "NodeBorn",
    "NodeDied",
    "NodeStale",
    "NodeStatus",
    "OutboundMessage",
    "PayloadData",
    "PropertySet",
    "PropertyValue",
    "ProtocolError",
    "RebirthRequested",
    "SparkplugTopic",
    "StateTopic",
    "Template",
    "TemplateParameter",
    "WriteRequest",
    "decode_payload",
    "decode_state",
    "encode_payload",
    "encode_state",
    "parse_topic",
]
