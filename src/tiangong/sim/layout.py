"""Which simulated machine speaks which protocol, and where a client finds it.

A real plant is a patchwork: machine tools, compressors and meters behind Modbus TCP (often a
serial-to-Ethernet gateway with one unit id per machine), newer pumps and line controllers with
an OPC UA server. ``split_plan`` puts each device of a ``FactoryPlan`` on one of the two,
by kind (``DEFAULT_PROTOCOLS``), and gives each Modbus device its unit id.

Modbus unit ids run 1..247 (0 is broadcast, 248-255 are reserved), so one Modbus server
serves at most 247 machines; a bigger plant gets more Modbus servers on consecutive ports, like
a plant with one serial gateway per line. OPC UA node ids are stable and predictable (the
gateway configuration names them): ``ns=2;s=<device>`` for a machine's object,
``ns=2;s=<device>.<property>`` for its variables and ``ns=2;s=<device>.<command>`` for its
methods.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from tiangong.sim.factory import DeviceSpec, FactoryPlan

__all__ = [
    "DEFAULT_PROTOCOLS",
    "MAX_UNITS_PER_SERVER",
    "NAMESPACE_INDEX",
    "NAMESPACE_URI",
    "ModbusSlot",
    "PlantLayout",
    "Protocol",
    "device_node_id",
    "method_node_id",
    "object_node_id",
    "split_plan",
    "variable_node_id",
]


class Protocol(enum.StrEnum):
    """The industrial protocols of the simulated plant."""

    MODBUS = "modbus"
    OPCUA = "opcua"


#: Kind -> protocol: machine tools, compressors, meters and engine test cells on Modbus, pumps
#: and lines on OPC UA.
DEFAULT_PROTOCOLS: Final[Mapping[str, Protocol]] = {
    "cnc": Protocol.MODBUS,
    "turbofan": Protocol.MODBUS,
    "compressor": Protocol.MODBUS,
    "meter": Protocol.MODBUS,
    "pump": Protocol.OPCUA,
    "line": Protocol.OPCUA,
}

#: Unit ids one Modbus server gives out (1..247).
MAX_UNITS_PER_SERVER: Final = 247

#: The simulated plant's OPC UA namespace; registered first, so its index is 2.
NAMESPACE_URI: Final = "urn:tiangong:sim:factory"
NAMESPACE_INDEX: Final = 2


def device_node_id(device: str) -> str:
    """The node id of a machine's object."""
    return f"ns={NAMESPACE_INDEX};s={device}"


def variable_node_id(device: str, prop: str) -> str:
    """The node id of a machine's property variable."""
    return f"ns={NAMESPACE_INDEX};s={device}.{prop}"


def object_node_id(device: str) -> str:
    """The node id of a machine's object (the source of its events)."""
    return f"ns={NAMESPACE_INDEX};s={device}"


def method_node_id(device: str, command: str) -> str:
    """The node id of a machine's command method."""
    return f"ns={NAMESPACE_INDEX};s={device}.{command}"


@dataclass(frozen=True, slots=True)
class ModbusSlot:
    """Where a Modbus device answers.

    Attributes:
        device: the device.
        server: index of its Modbus server (port = first port + index when ports are
            consecutive).
        unit: its unit id on that server.
    """

    device: DeviceSpec
    server: int
    unit: int


@dataclass(frozen=True, slots=True)
class PlantLayout:
    """The plan split by protocol.

    Attributes:
        plan: the factory.
        modbus: the Modbus devices and their unit ids, in plan order.
        opcua: the OPC UA devices, in plan order.
    """

    plan: FactoryPlan
    modbus: tuple[ModbusSlot, ...]
    opcua: tuple[DeviceSpec, ...]

    @property
    def modbus_servers(self) -> int:
        """How many Modbus servers the plant needs (0 without Modbus devices)."""
        return max((slot.server for slot in self.modbus), default=-1) + 1

    def protocol(self, device: str) -> Protocol:
        """The protocol of a device.

        Raises:
            KeyError: no such device.
        """
        if any(slot.device.id == device for slot in self.modbus):
            return Protocol.MODBUS
        if any(spec.id == device for spec in self.opcua):
            return Protocol.OPCUA
        raise KeyError(device)


def split_plan(
    plan: FactoryPlan, protocols: Mapping[str, Protocol] = DEFAULT_PROTOCOLS
) -> PlantLayout:
    """Put each device of ``plan`` on the protocol of its kind.

    Raises:
        ValueError: a kind of the plan has no protocol.
    """
    modbus: list[ModbusSlot] = []
    opcua: list[DeviceSpec] = []
    for spec in plan.devices:
        protocol = protocols.get(spec.kind)
        if protocol is None:
            raise ValueError(f"no protocol for kind {spec.kind!r} (device {spec.id})")
        if protocol is Protocol.MODBUS:
            server, index = divmod(len(modbus), MAX_UNITS_PER_SERVER)
            modbus.append(ModbusSlot(spec, server, index + 1))
        else:
            opcua.append(spec)
    return PlantLayout(plan, tuple(modbus), tuple(opcua))
