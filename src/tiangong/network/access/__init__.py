"""The device access scheme: MQTT topics and JSON payloads devices use to reach the platform.

See ``docs/device-access.md`` for the operator-facing description.
"""

from tiangong.network.access.payload import (
    DeviceEvent,
    DeviceSamples,
    DeviceStatus,
    PayloadLimits,
    decode_events,
    decode_status,
    decode_telemetry,
)
from tiangong.network.access.topics import (
    NAME_PATTERN,
    Channel,
    DeviceTopic,
    is_valid_name,
    parse_topic,
)

__all__ = [
    "NAME_PATTERN",
    "Channel",
    "DeviceEvent",
    "DeviceSamples",
    "DeviceStatus",
    "DeviceTopic",
    "PayloadLimits",
    "decode_events",
    "decode_status",
    "decode_telemetry",
    "is_valid_name",
    "parse_topic",
]
