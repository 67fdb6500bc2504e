"""The simulated plant's Modbus TCP server: one unit id per machine, registers from the physics.

Strategy: each machine has a ``UnitImage``, the sans-I/O core. It holds the unit's four tables
(holding and input registers, coils, discrete inputs) exactly as the kind's register map says,
is refreshed from each physics reading, and turns a client's write into the machine's input
(a setpoint, a remote enable, a command coil), refusing what a PLC would refuse with the
protocol's exception codes:

- an address outside the map: 02 ILLEGAL DATA ADDRESS (also a write to a read-only register
  or one that covers only part of a multi-register value);
- a value outside the thing model's range: 03 ILLEGAL DATA VALUE;
- a unit id without a machine (a device awaiting commissioning): 0B GATEWAY TARGET DEVICE
  FAILED TO RESPOND, as a serial-to-Ethernet gateway answers for a silent slave.

pymodbus (3.16) supplies the transport and framing; its server asks its datastore for values,
and ``ModbusPlantServer`` hands it the unit images as that datastore.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Mapping, Sequence
from typing import Any, cast

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simcore import SimCore

from tiangong.edge.config import ModbusPoint
from tiangong.platform.model import ThingModel
from tiangong.resource import AsyncResource
from tiangong.sim.errors import MachineInputError, PortUnavailableError
from tiangong.sim.machines import Machine
from tiangong.sim.register_maps import RegisterMap, Table, decode, encode, register_count
from tiangong.sim.thing_models import from_wire, to_wire

__all__ = ["ModbusPlantServer", "UnitImage"]

_log = logging.getLogger(__name__)

#: Function code -> the table it addresses.
_TABLE_OF_FUNCTION: dict[int, Table] = {
    1: "coil",
    5: "coil",
    15: "coil",
    2: "discrete",
    3: "holding",
    6: "holding",
    16: "holding",
    22: "holding",
    23: "holding",
    4: "input",
}


class UnitImage:
    """The registers of one machine's Modbus unit (sans-I/O).

    Args:
        machine: the machine behind the unit (writes and commands go to it).
        register_map: its kind's register map.
        model: its kind's thing model (enum labels, writable ranges).
    """

    def __init__(self, machine: Machine, register_map: RegisterMap, model: ThingModel) -> None:
        self.machine = machine
        self.register_map = register_map
        self.model = model
        self.cells: dict[Table, dict[int, int | bool]] = {
            "holding": {},
            "input": {},
            "coil": {},
            "discrete": {},
        }
        # Registers a PLC holds from power-up: zero until the first scan.
        for point in register_map.points:
            for address, raw in enumerate(encode(point, 0), start=point.address):
                self.cells[point.table][address] = raw
        self.commands = {c.address: c.command for c in register_map.commands}
        for address in self.commands:
            self.cells["coil"][address] = False
        self._owner: dict[tuple[Table, int], ModbusPoint] = {
            (p.table, a): p
            for p in register_map.points
            for a in range(p.address, p.address + register_count(p.type))
        }

    def update(self, values: Mapping[str, Any]) -> None:
        """Take a physics reading (a PLC scan): registers now hold its values.

        Command coils are cleared: the scan has executed them.
        """
        for point in self.register_map.points:
            if point.property not in values:
                continue
            spec = self.model.property(point.property)
            assert spec is not None  # the maps are checked against the models by the tests
            raw = encode(point, cast("float | bool", to_wire(spec, values[point.property])))
            table = self.cells[point.table]
            for address, cell in enumerate(raw, start=point.address):
                table[address] = cell
        for address in self.commands:
            self.cells["coil"][address] = False

    def read(self, table: Table, address: int, count: int) -> list[int] | list[bool] | ExcCodes:
        """``count`` registers or bits from ``address``, or the exception a PLC answers."""
        cells = self.cells[table]
        if count < 1 or any(a not in cells for a in range(address, address + count)):
            return ExcCodes.ILLEGAL_ADDRESS
        if table in ("coil", "discrete"):
            return [bool(cells[a]) for a in range(address, address + count)]
        return [int(cells[a]) for a in range(address, address + count)]

    def write(
        self, table: Table, address: int, values: Sequence[int] | Sequence[bool]
    ) -> ExcCodes | None:
        """Apply a client's write; ``None`` when done, else the exception a PLC answers."""
        if table == "coil":
            return self._write_coils(address, [bool(v) for v in values])
        if table != "holding":
            return ExcCodes.ILLEGAL_FUNCTION
        written = dict(enumerate((int(v) for v in values), start=address))
        points: list[ModbusPoint] = []
        for cell in written:
            point = self._owner.get(("holding", cell))
            if point is None or not point.writable:
                return ExcCodes.ILLEGAL_ADDRESS
            if point not in points:
                points.append(point)
        decoded: list[tuple[ModbusPoint, float | bool]] = []
        for point in points:
            cells = range(point.address, point.address + register_count(point.type))
            if any(c not in written for c in cells):
                return ExcCodes.ILLEGAL_ADDRESS  # half of a 32-bit value would be garbage
            spec = self.model.property(point.property)
            assert spec is not None
            try:
                value = from_wire(spec, decode(point, [written[c] for c in cells]))
            except ValueError:
                return ExcCodes.ILLEGAL_VALUE
            decoded.append((point, value))
        for point, value in decoded:
            if (refused := self._apply(point.property, value)) is not None:
                return refused
        self.cells["holding"].update(written)
        return None

    def _write_coils(self, address: int, bits: list[bool]) -> ExcCodes | None:
        targets: list[tuple[int, str, bool]] = []
        for cell, bit in enumerate(bits, start=address):
            if cell in self.commands:
                targets.append((cell, self.commands[cell], bit))
                continue
            point = self._owner.get(("coil", cell))
            if point is None or not point.writable:
                return ExcCodes.ILLEGAL_ADDRESS
            targets.append((cell, point.property, bit))
        for cell, name, bit in targets:
            if cell in self.commands:
                if bit:
                    try:
                        self.machine.command(name)
                    except MachineInputError:
                        return ExcCodes.ILLEGAL_ADDRESS
            elif (refused := self._apply(name, bit)) is not None:
                return refused
            self.cells["coil"][cell] = bit
        return None

    def _apply(self, prop: str, value: float | bool) -> ExcCodes | None:
        try:
            self.machine.write(prop, value)
        except MachineInputError:
            return ExcCodes.ILLEGAL_ADDRESS
        _log.info("modbus: %s.%s set to %s", self.machine.name, prop, value)
        return None


class _PlantDatastore(SimCore):
    """The unit images as pymodbus's server datastore.

    pymodbus builds its own register store from declarations; the plant's registers live in
    the unit images instead, so this datastore answers from them and deliberately does not
    run ``SimCore.__init__``.
    """

    def __init__(self, units: Mapping[int, UnitImage]) -> None:
        self.units = units

    def _unit(self, device_id: int) -> UnitImage:
        unit = self.units.get(device_id)
        if unit is None:
            raise NoSuchIdException(f"unit {device_id} has no machine")
        return unit

    def device_ids(self) -> list[int]:
        """The unit ids served."""
        return list(self.units)

    async def async_getValues(  # noqa: N802 - pymodbus's name
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        """Read for a request."""
        table = _TABLE_OF_FUNCTION.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        return self._unit(device_id).read(table, address, count)

    async def async_setValues(  # noqa: N802 - pymodbus's name
        self, device_id: int, func_code: int, address: int, values: list[int] | list[bool]
    ) -> ExcCodes | None:
        """Write for a request."""
        table = _TABLE_OF_FUNCTION.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        return self._unit(device_id).write(table, address, values)


def _bind_problem(host: str, port: int) -> str:
    """Why ``host:port`` cannot be bound (pymodbus only says that listening failed)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        return exc.strerror or str(exc)
    return "the listener could not be opened"


class ModbusPlantServer(AsyncResource):
    """A Modbus TCP server for a set of machines, one unit id each.

    Args:
        units: unit id -> the machine's register image.
        host: address to listen on.
        port: port to listen on (0: any free port; see ``port`` once started).

    Attributes:
        port: the port listened on, once started.
    """

    def __init__(self, *, units: Mapping[int, UnitImage], host: str, port: int) -> None:
        if any(not 1 <= unit <= 247 for unit in units):
            raise ValueError("Modbus unit ids are 1..247")
        self.units = units
        self.host = host
        self.port = port
        self._server: ModbusTcpServer | None = None

    async def open(self) -> None:
        """Listen (the port is known once this returns)."""
        # pymodbus wants a declared device to build; the unit images replace its store.
        placeholder = SimDevice(0, simdata=SimData(0, datatype=DataType.INVALID))
        server = ModbusTcpServer(placeholder, address=(self.host, self.port))
        server.context = _PlantDatastore(self.units)
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:
            reason = await asyncio.to_thread(_bind_problem, self.host, self.port)
            raise PortUnavailableError("modbus", self.host, self.port, reason) from exc
        self._server = server
        listener = cast("asyncio.Server", server.transport)
        self.port = int(listener.sockets[0].getsockname()[1])
        _log.info("modbus: %d units on %s:%d", len(self.units), self.host, self.port)

    async def close(self) -> None:
        """Stop listening; clients are disconnected."""
        if self._server is not None:
            # Closes the listener and every client connection (``shutdown`` does the same and
            # also ends a foreground ``serve_forever``, which is not used here).
            self._server.close()
            self._server = None
