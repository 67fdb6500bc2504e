"""The thing model of an edge gateway: what it reports about itself.

A gateway is a device on the platform like any other; these are the figures an operator watches
to know whether the plant's data gets through: how much is waiting in the buffer and since when,
what was dropped, and how good the uplink is. Alarms raised by local rules arrive as
``edge_alarm`` events.
"""

from __future__ import annotations

from typing import Final

from tiangong.platform.model import DataType, EventSpec, PropertySpec, Severity, ThingModel

__all__ = ["GATEWAY_MODEL"]

F = DataType.FLOAT
I64 = DataType.INT

GATEWAY_MODEL: Final = ThingModel(
    id="edge-gateway",
    name="Edge gateway / 边缘网关",
    description="Tiangong edge gateway: southbound devices, store-and-forward, uplink.",
    properties=[
        PropertySpec(id="devices_configured", name="Devices configured", type=I64, min=0),
        PropertySpec(id="devices_online", name="Devices reachable", type=I64, min=0),
        PropertySpec(id="buffer_points", name="Points waiting", type=I64, unit="pcs", min=0),
        PropertySpec(id="buffer_bytes", name="Buffer size", type=I64, unit="B", min=0),
        PropertySpec(id="buffer_age_s", name="Oldest waiting point", type=F, unit="s", min=0),
        PropertySpec(
            id="dropped_points", name="Points dropped (buffer full)", type=I64, unit="pcs", min=0
        ),
        PropertySpec(id="points_in", name="Points read from devices", type=I64, unit="pcs", min=0),
        PropertySpec(id="uplink_rtt_ms", name="Uplink round trip", type=F, unit="ms", min=0),
        PropertySpec(id="uplink_reconnects", name="Uplink reconnects", type=I64, min=0),
    ],
    events=[
        EventSpec(id="edge_alarm", name="Alarm raised at the edge", severity=Severity.MAJOR),
        EventSpec(
            id="buffer_overflow", name="Buffer full, data dropped", severity=Severity.CRITICAL
        ),
    ],
)
