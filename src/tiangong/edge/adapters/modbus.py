"""Modbus TCP adapter (pymodbus client; register maps from ``network.modbus``).

Each poll runs the read plan computed once from the configured points: contiguous registers of
one table come back in one request. pymodbus's own reconnect loop is switched off: the
coordinator decides when to reconnect, so every adapter behaves the same.

Decoding is compiled once per request too (``CompiledRead``): the points in the protocol's own
byte and word order, which are nearly all of them, are unpacked from a reply with one ``struct``
call instead of one ``decode_value`` call each, which was the gateway's largest cost per point
at 100,000 points per second. The result is the one ``decode_value`` gives, which stays the
definition (and decodes every other point).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from typing import Any, Final

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from tiangong.edge.adapters.base import DeviceReadings, ReadingSink
from tiangong.edge.config import ModbusDevice
from tiangong.edge.errors import (
    CommandError,
    DeviceRefusedError,
    DeviceUnreachableError,
)
from tiangong.network.modbus import (
    ReadRequest,
    RegisterPoint,
    decode_value,
    encode_value,
    plan_reads,
)

__all__ = ["CompiledRead", "ModbusAdapter", "exception_text"]


#: Modbus exception codes (Modbus Application Protocol v1.1b3, section 7), as an operator reads
#: them in a log.
_EXCEPTIONS: Final = {
    1: "illegal function (the device does not support this request)",
    2: "illegal data address (no such register: check the address in the configuration)",
    3: "illegal data value (the device refused the value or the register count)",
    4: "device failure",
    5: "acknowledge (the device is busy with a long operation)",
    6: "device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}
_GATEWAY_EXCEPTIONS: Final = frozenset({10, 11})


def exception_text(code: int | None) -> str:
    """What a Modbus exception code means."""
    if code is None:
        return "error reply"
    return f"exception {code:02X}h, {_EXCEPTIONS.get(code, 'unknown exception')}"


#: ``struct`` codes of the register types (the protocol's order: big-endian words and bytes).
_CODES: Final = {
    "int16": ("h", 1),
    "uint16": ("H", 1),
    "int32": ("i", 2),
    "uint32": ("I", 2),
    "int64": ("q", 4),
    "uint64": ("Q", 4),
    "float32": ("f", 2),
    "float64": ("d", 4),
}


class CompiledRead:
    """A read request with its decoding planned: one ``struct`` call for most points.

    Points of the register tables in big-endian word and byte order that do not overlap an
    earlier one are decoded together: the reply's registers are packed into bytes once and
    unpacked with a format that skips the gaps. Their engineering values follow
    ``decode_value`` exactly (integers stay integers when scale is 1 and the offset whole;
    otherwise ``float(raw) * scale + offset``). Any other point is decoded by ``decode_value``,
    and a reply with a register outside 0..65535 goes to ``ReadRequest.values``, which says
    which point it spoils.

    Args:
        request: the planned request.
    """

    def __init__(self, request: ReadRequest) -> None:
        self.request = request
        self.table = request.table
        self.address = request.address
        self.count = request.count
        bits = request.table in ("coil", "discrete")
        # Bits: (key, offset into the reply).
        self._bits = (
            tuple((p.key, p.address - request.address) for p in request.points) if bits else ()
        )
        fmt = [">"]
        keys: list[str] = []
        scaled: list[tuple[int, str, float, float]] = []  # (index, key, scale, offset)
        shifted: list[tuple[int, str, int]] = []  # (index, key, whole offset)
        others: list[RegisterPoint] = []
        end = request.address  # registers up to here are covered by the format
        for point in () if bits else request.points:
            code, count = _CODES[point.value_type]
            if point.word_order != "big" or point.byte_order != "big" or point.address < end:
                others.append(point)
                continue
            if point.address > end:
                fmt.append(f"{2 * (point.address - end)}x")
            fmt.append(code)
            end = point.address + count
            index = len(keys)
            keys.append(point.key)
            if code in "fd" or point.scale != 1 or not float(point.offset).is_integer():
                scaled.append((index, point.key, float(point.scale), float(point.offset)))
            elif point.offset:
                shifted.append((index, point.key, int(point.offset)))
        if not bits and end < request.address + request.count:
            fmt.append(f"{2 * (request.address + request.count - end)}x")
        self._keys = tuple(keys)
        self._scaled = tuple(scaled)
        self._shifted = tuple(shifted)
        self._others = tuple(others)
        self._unpack = struct.Struct("".join(fmt)).unpack
        self._pack = struct.Struct(f">{request.count}H").pack
        # The reply's order of points, kept when some points are decoded one by one.
        self._order = tuple(p.key for p in request.points) if others else None

    def values(self, raw: Sequence[int] | Sequence[bool]) -> dict[str, int | float | bool]:
        """Decode every point of the request from the registers (or bits) read.

        Raises:
            ValueError: the reply is shorter than the request, or a register is not 16 bits.
        """
        if len(raw) < self.count:
            raise ValueError(f"short reply: {len(raw)} of {self.count} values")
        if self._bits:
            return {key: bool(raw[offset]) for key, offset in self._bits}
        try:
            data = self._pack(*raw[: self.count])
        except struct.error:
            return self.request.values(raw)  # names the register that is out of range
        unpacked = self._unpack(data)
        out: dict[str, int | float | bool] = dict(zip(self._keys, unpacked, strict=True))
        for index, key, scale, offset in self._scaled:
            out[key] = float(unpacked[index]) * scale + offset
        for index, key, whole in self._shifted:
            out[key] = int(unpacked[index]) + whole
        if self._order is None:
            return out
        for point in self._others:
            start = point.address - self.address
            out[point.key] = decode_value(point, raw[start : start + point.count])
        return {key: out[key] for key in self._order}


class ModbusAdapter:
    """A Modbus TCP device.

    Args:
        config: the device's configuration.
    """

    polled = True

    def __init__(self, config: ModbusDevice) -> None:
        self.config = config
        self.device_id = config.id
        self.poll_interval = config.poll_ms / 1000
        self.points = {
            p.property: RegisterPoint(
                key=p.property,
                table=p.table,
                address=p.address,
                value_type=p.type,
                word_order=p.word_order,
                byte_order=p.byte_order,
                scale=p.scale,
                offset=p.offset,
            )
            for p in config.points
        }
        self.writable = {p.property for p in config.points if p.writable}
        self.command_coils = {c.command: c.coil for c in config.commands}
        self.plan = plan_reads(list(self.points.values()))
        self._reads = [CompiledRead(request) for request in self.plan]
        self._client: AsyncModbusTcpClient | None = None

    async def connect(self, sink: ReadingSink) -> None:
        """Open the TCP connection."""
        del sink  # polled: the coordinator calls read()
        await self.close()
        client = AsyncModbusTcpClient(
            self.config.host,
            port=self.config.port,
            timeout=self.config.timeout_ms / 1000,
            retries=0,
            reconnect_delay=0,
            name=f"modbus-{self.device_id}",
        )
        try:
            connected = await client.connect()
        except (OSError, ModbusException) as exc:
            client.close()
            raise DeviceUnreachableError(self.device_id, f"cannot connect: {exc}") from exc
        if not connected:
            client.close()
            raise DeviceUnreachableError(
                self.device_id, f"cannot connect to {self.config.host}:{self.config.port}"
            )
        self._client = client

    def _require(self) -> AsyncModbusTcpClient:
        if self._client is None or not self._client.connected:
            raise DeviceUnreachableError(self.device_id, "not connected")
        return self._client

    async def read(self) -> DeviceReadings:
        """Read every point with the planned requests."""
        client = self._require()
        unit = self.config.unit
        values: dict[str, Any] = {}
        ts_ms = int(time.time() * 1000)
        for request in self._reads:
            try:
                if request.table == "holding":
                    reply = await client.read_holding_registers(
                        request.address, count=request.count, device_id=unit
                    )
                elif request.table == "input":
                    reply = await client.read_input_registers(
                        request.address, count=request.count, device_id=unit
                    )
                elif request.table == "coil":
                    reply = await client.read_coils(
                        request.address, count=request.count, device_id=unit
                    )
                else:
                    reply = await client.read_discrete_inputs(
                        request.address, count=request.count, device_id=unit
                    )
            except ModbusException as exc:
                raise DeviceUnreachableError(self.device_id, f"read failed: {exc}") from exc
            if reply.isError():
                code = getattr(reply, "exception_code", None)
                where = f"{request.table} {request.address}+{request.count}"
                if code in _GATEWAY_EXCEPTIONS:
                    # A Modbus gateway (or PLC) answering for a machine it cannot reach.
                    raise DeviceUnreachableError(self.device_id, f"{where}: {exception_text(code)}")
                raise DeviceRefusedError(self.device_id, f"{where}: {exception_text(code)}")
            raw = reply.registers if request.table in ("holding", "input") else reply.bits
            try:
                values.update(request.values(raw))
            except ValueError as exc:
                raise DeviceRefusedError(self.device_id, str(exc)) from exc
        return DeviceReadings(self.device_id, ts_ms, values, int(time.time() * 1000))

    async def write(self, prop: str, value: Any) -> None:
        """Write a holding register (or registers) or a coil."""
        point = self.points.get(prop)
        if point is None:
            raise CommandError(prop, "unknown_point", f"{self.device_id} has no point {prop!r}")
        if prop not in self.writable:
            raise CommandError(prop, "not_writable", f"{self.device_id}.{prop} is read-only")
        try:
            encoded = encode_value(point, value)
        except (ValueError, TypeError) as exc:
            raise CommandError(prop, "bad_value", str(exc)) from exc
        client = self._require()
        try:
            if point.table == "coil":
                reply = await client.write_coil(
                    point.address, bool(encoded[0]), device_id=self.config.unit
                )
            else:
                reply = await client.write_registers(
                    point.address, [int(r) for r in encoded], device_id=self.config.unit
                )
        except ModbusException as exc:
            raise DeviceUnreachableError(self.device_id, f"write failed: {exc}") from exc
        if reply.isError():
            text = exception_text(getattr(reply, "exception_code", None))
            raise DeviceRefusedError(self.device_id, f"write of {prop} refused: {text}")

    async def call(self, command: str, params: dict[str, Any]) -> dict[str, Any]:
        """A configured command coil (written ON), or ``write`` (``{"property": value}``)."""
        coil = self.command_coils.get(command)
        if coil is not None:
            await self._write_command_coil(command, coil)
            return {"executed": command}
        if command != "write" or len(params) != 1:
            known = ", ".join(sorted([*self.command_coils, "write"]))
            raise CommandError(
                command,
                "unknown_command",
                f"{self.device_id} takes {known} ('write' with one property)",
            )
        [(prop, value)] = params.items()
        await self.write(prop, value)
        return {"written": prop}

    async def _write_command_coil(self, command: str, coil: int) -> None:
        client = self._require()
        try:
            reply = await client.write_coil(coil, True, device_id=self.config.unit)
        except ModbusException as exc:
            raise DeviceUnreachableError(
                self.device_id, f"command {command} failed: {exc}"
            ) from exc
        if reply.isError():
            text = exception_text(getattr(reply, "exception_code", None))
            raise DeviceRefusedError(self.device_id, f"command {command} refused: {text}")

    async def close(self) -> None:
        """Close the connection."""
        if self._client is not None:
            self._client.close()
            self._client = None
