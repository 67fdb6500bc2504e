"""Fixtures for the edge tests: a real Modbus TCP server (pymodbus) and a client that drives it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.datastore import (
    ModbusDeviceContext,
    ModbusSequentialDataBlock,
    ModbusServerContext,
)
from pymodbus.server import ModbusTcpServer

from tests.servers import free_port
from tiangong.network.modbus import RegisterPoint, encode_value

# pymodbus logs a deprecation notice for the classic datastore on every start.
logging.getLogger("pymodbus").setLevel(logging.ERROR)


@dataclass
class ModbusPeer:
    """A Modbus server on 127.0.0.1 and a second client that changes its registers, the way a
    PLC program would (the gateway under test only reads and writes through the protocol)."""

    port: int
    driver: AsyncModbusTcpClient

    async def _connected(self) -> None:
        # The driver plays a PLC program: when its connection drops (the server closes idle or
        # broken connections), it connects again rather than failing the test.
        if not self.driver.connected:
            async with asyncio.timeout(5):
                while not await self.driver.connect():
                    await asyncio.sleep(0.05)

    async def set(self, point: RegisterPoint, value: float | bool, unit: int = 1) -> None:
        await self._connected()
        encoded = encode_value(point, value)
        if point.table == "coil":
            await self.driver.write_coil(point.address, bool(encoded[0]), device_id=unit)
        else:
            await self.driver.write_registers(
                point.address, [int(r) for r in encoded], device_id=unit
            )

    async def get(self, address: int, count: int, unit: int = 1) -> list[int]:
        await self._connected()
        reply = await self.driver.read_holding_registers(address, count=count, device_id=unit)
        return list(reply.registers)


@pytest.fixture
async def modbus_peer() -> AsyncIterator[ModbusPeer]:
    # Classic datastore blocks are 1-based: block address 1 is register 0 on the wire.
    device = ModbusDeviceContext(
        hr=ModbusSequentialDataBlock(1, [0] * 200),
        ir=ModbusSequentialDataBlock(1, [0] * 200),
        co=ModbusSequentialDataBlock(1, [False] * 64),
        di=ModbusSequentialDataBlock(1, [False] * 64),
    )
    context = ModbusServerContext(devices={1: device}, single=False)
    port = free_port()
    server = ModbusTcpServer(context, address=("127.0.0.1", port))
    task = asyncio.create_task(server.serve_forever())
    driver = AsyncModbusTcpClient("127.0.0.1", port=port, retries=0, reconnect_delay=0)
    async with asyncio.timeout(5):
        while not await driver.connect():
            await asyncio.sleep(0.05)
    yield ModbusPeer(port, driver)
    driver.close()
    await server.shutdown()
    task.cancel()


def _register_context() -> ModbusServerContext:
    device = ModbusDeviceContext(
        hr=ModbusSequentialDataBlock(1, [0] * 200),
        ir=ModbusSequentialDataBlock(1, [0] * 200),
        co=ModbusSequentialDataBlock(1, [False] * 64),
        di=ModbusSequentialDataBlock(1, [False] * 64),
    )
    return ModbusServerContext(devices={1: device}, single=False)


@dataclass
class StoppableModbusPeer(ModbusPeer):
    """A ``ModbusPeer`` whose server can be switched off (a device losing power) and on again on
    the same port, with its registers kept."""

    context: ModbusServerContext | None = None
    server: ModbusTcpServer | None = None
    task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        assert self.context is not None
        self.server = ModbusTcpServer(self.context, address=("127.0.0.1", self.port))
        self.task = asyncio.create_task(self.server.serve_forever())
        self.driver.close()
        async with asyncio.timeout(5):
            while not await self.driver.connect():
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()
            self.server = None
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None


@pytest.fixture
async def stoppable_modbus_peer() -> AsyncIterator[StoppableModbusPeer]:
    port = free_port()
    driver = AsyncModbusTcpClient("127.0.0.1", port=port, retries=0, reconnect_delay=0)
    peer = StoppableModbusPeer(port, driver, context=_register_context())
    await peer.start()
    yield peer
    driver.close()
    await peer.stop()
