"""``tiangong sim``: the simulated plant on real industrial protocols.

``SimulatedPlant`` runs the machines of a ``FactoryPlan`` behind a Modbus TCP server (machine
tools, compressors, meters; one unit id each) and an OPC UA server (pumps, lines), and one
physics loop that steps every machine at its own interval and shows each reading on its
protocol. What an edge gateway needs to read this plant is ``SimulatedPlant.edge_config()``
(see ``edge_plan``).

Devices the plan marks as awaiting commissioning have no machine: their Modbus unit answers
exception 0B (gateway target failed to respond) and their OPC UA variables have status
``BadNoCommunication``, so a gateway sees the same partial plant the MQTT factory shows.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import logging
import signal
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from tiangong.edge.config import EdgeConfig
from tiangong.sim.certificates import GATEWAY_APPLICATION_URI, OpcUaPki
from tiangong.sim.edge_plan import OpcUaSecurity, edge_config_for, write_edge_toml
from tiangong.sim.factory import FactoryPlan, plan_factory
from tiangong.sim.layout import DEFAULT_PROTOCOLS, PlantLayout, Protocol, split_plan
from tiangong.sim.machines import DEFAULT_WEAR_SHARE, Machine, MachineReading, make_machine
from tiangong.sim.modbus_server import ModbusPlantServer, UnitImage
from tiangong.sim.opcua_server import OpcUaPlantServer
from tiangong.sim.register_maps import REGISTER_MAPS
from tiangong.sim.thing_models import THING_MODELS

__all__ = ["PlantEvent", "SimulatedPlant", "run_plant"]

_log = logging.getLogger(__name__)

#: Recent machine events kept for observers (bounded: old ones fall off).
_EVENTS_KEPT: Final = 1000


@dataclass(frozen=True, slots=True)
class PlantEvent:
    """An event a machine raised.

    Attributes:
        ts: when (epoch seconds).
        device: the device.
        name: the event (``fault``, ``repaired``, ``job_started``).
        data: its fields (a fault's ``code``...).
    """

    ts: float
    device: str
    name: str
    data: dict[str, Any]


class SimulatedPlant:
    """The simulated plant's servers and physics, as an async context manager.

    Args:
        plan: the factory (default: ``plan_factory(devices)``).
        devices: size of the default plan.
        host: address both servers listen on.
        modbus_port: the first Modbus server's port (0: any free port); a plant with more
            than 247 Modbus machines has more servers, on the following ports.
        opcua_port: the OPC UA server's port (0: any free port).
        data_dir: where the OPC UA certificates are kept (``<data_dir>/opcua``).
        time_scale: acceleration of the slow wear and its repairs (1: real time).
        wear_share: share of the rotating machines that slowly wear out.
        protocols: kind -> protocol.
        clock: the time source (epoch seconds).

    Attributes:
        plan: the factory.
        layout: which device is on which protocol, and at which unit id.
        machines: device id -> machine, for the devices that are commissioned.
        pki: the OPC UA certificate files.
        modbus_ports: the Modbus servers' ports, once started.
        opcua_port: the OPC UA server's port, once started.
        events: recent machine events, oldest first.
    """

    def __init__(
        self,
        *,
        plan: FactoryPlan | None = None,
        devices: int = 50,
        host: str = "127.0.0.1",
        modbus_port: int = 5020,
        opcua_port: int = 4840,
        data_dir: Path = Path(".tiangong"),
        time_scale: float = 1.0,
        wear_share: float = DEFAULT_WEAR_SHARE,
        protocols: Mapping[str, Protocol] = DEFAULT_PROTOCOLS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not time_scale > 0:
            raise ValueError("time_scale must be positive")
        if not 0 <= wear_share <= 1:
            raise ValueError("wear_share is a share, 0..1")
        self.plan = plan if plan is not None else plan_factory(devices)
        self.layout: PlantLayout = split_plan(self.plan, protocols)
        self.host = host
        self.data_dir = data_dir
        self.time_scale = time_scale
        self.clock = clock
        self.machines: dict[str, Machine] = {
            spec.id: make_machine(spec.kind, spec.id, wear_share=wear_share, time_scale=time_scale)
            for spec in self.plan.devices
            if spec.connects
        }
        self.pki = OpcUaPki.in_data_dir(data_dir)
        self.events: collections.deque[PlantEvent] = collections.deque(maxlen=_EVENTS_KEPT)
        self.protocols = protocols
        self._requested_modbus_port = modbus_port
        self._units: dict[str, UnitImage] = {}
        servers: list[dict[int, UnitImage]] = [{} for _ in range(self.layout.modbus_servers)]
        for slot in self.layout.modbus:
            machine = self.machines.get(slot.device.id)
            if machine is None:
                continue  # awaiting commissioning: nothing answers at this unit id
            image = UnitImage(
                machine, REGISTER_MAPS[slot.device.kind], THING_MODELS[slot.device.kind]
            )
            servers[slot.server][slot.unit] = image
            self._units[slot.device.id] = image
        self._modbus = [
            ModbusPlantServer(units=units, host=host, port=modbus_port + i if modbus_port else 0)
            for i, units in enumerate(servers)
        ]
        self._opcua = OpcUaPlantServer(
            sites=self.plan.sites,
            devices=self.layout.opcua,
            machines={
                s.id: self.machines[s.id] for s in self.layout.opcua if s.id in self.machines
            },
            host=host,
            port=opcua_port,
            pki=self.pki,
        )
        self._stack = contextlib.AsyncExitStack()
        self._stop = asyncio.Event()

    @property
    def modbus_ports(self) -> tuple[int, ...]:
        """The Modbus servers' ports (bound ports once started)."""
        return tuple(server.port for server in self._modbus)

    @property
    def modbus_port(self) -> int:
        """The first Modbus server's port."""
        return self._modbus[0].port if self._modbus else self._requested_modbus_port

    @property
    def opcua_port(self) -> int:
        """The OPC UA server's port (the bound port once started)."""
        return self._opcua.port

    @property
    def opcua_endpoint(self) -> str:
        """The OPC UA endpoint URL."""
        return self._opcua.endpoint

    @property
    def wearing(self) -> list[str]:
        """The devices whose machines slowly wear out."""
        return [name for name, m in self.machines.items() if m.degradation is not None]

    def edge_config(
        self,
        *,
        gateway_id: str = "edge-gw-01",
        uplink_host: str = "127.0.0.1",
        uplink_port: int = 1884,
        security: OpcUaSecurity = "sign_and_encrypt",
    ) -> EdgeConfig:
        """The edge gateway configuration that reads this plant (its bound ports)."""
        return edge_config_for(
            self.plan,
            modbus_host=self.host,
            modbus_port=self.modbus_ports or self._requested_modbus_port,
            opcua_endpoint=self.opcua_endpoint,
            gateway_id=gateway_id,
            uplink_host=uplink_host,
            uplink_port=uplink_port,
            data_dir=self.data_dir,
            security=security,
            protocols=self.protocols,
        )

    async def __aenter__(self) -> Self:
        self._stop.clear()
        try:
            for server in self._modbus:
                await self._stack.enter_async_context(server)
            await self._stack.enter_async_context(self._opcua)
            # Every machine's first reading is in place when the plant is up.
            now = self.clock()
            for name, machine in self.machines.items():
                await self._show(name, machine.step(now), now)
            tasks = await self._stack.enter_async_context(asyncio.TaskGroup())
            tasks.create_task(self._physics(), name="sim-physics")
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        await self._stack.__aexit__(exc_type, exc, tb)

    def _record(self, device: str, reading: MachineReading, now: float) -> None:
        for name, data in reading.events:
            self.events.append(PlantEvent(now, device, name, data))
            log = _log.debug if name == "job_started" else _log.info
            log("%s: %s %s", device, name, data)

    async def _show(self, device: str, reading: MachineReading, now: float) -> None:
        self._record(device, reading, now)
        image = self._units.get(device)
        if image is not None:
            image.update(reading.values)
        else:
            await self._opcua.publish(device, reading, now)

    async def _physics(self) -> None:
        """Step each machine at its interval, staggered so the work is spread out."""
        start = self.clock()
        due: list[tuple[float, str]] = []
        for name, machine in self.machines.items():
            phase = (zlib.crc32(name.encode()) % 1000) / 1000 * machine.interval
            due.append((start + phase, name))
        heapq.heapify(due)
        while due and not self._stop.is_set():
            at, name = due[0]
            now = self.clock()
            if at > now:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(at - now, 1.0)):
                        await self._stop.wait()
                continue
            machine = self.machines[name]
            await self._show(name, machine.step(now), now)
            heapq.heapreplace(due, (max(at + machine.interval, now), name))


async def run_plant(
    plant: SimulatedPlant,
    console: Console,
    *,
    duration: float | None = None,
    edge_config_path: Path | None = None,
) -> None:
    """Run ``plant`` until Ctrl-C (SIGINT or SIGTERM) or for ``duration`` seconds.

    Args:
        plant: the plant.
        console: where the banner goes.
        duration: seconds to run (``None``: until interrupted).
        edge_config_path: where to write the gateway configuration for the plant.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with plant:
            if edge_config_path is not None:
                await asyncio.to_thread(write_edge_toml, plant.edge_config(), edge_config_path)
            _banner(console, plant, edge_config_path)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(duration):
                    await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    console.print("simulated plant stopped cleanly")


def _banner(console: Console, plant: SimulatedPlant, edge_config_path: Path | None) -> None:
    layout = plant.layout
    modbus_up = sum(1 for s in layout.modbus if s.device.connects)
    opcua_up = sum(1 for s in layout.opcua if s.connects)
    kinds = sorted({s.device.kind for s in layout.modbus})
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    ports = ", ".join(str(p) for p in plant.modbus_ports)
    table.add_row(
        "Modbus TCP",
        f"{plant.host}:{ports}  {len(layout.modbus)} units ({', '.join(kinds)}), "
        f"{modbus_up} answering",
    )
    table.add_row(
        "OPC UA",
        f"{plant.opcua_endpoint}  {len(layout.opcua)} devices, {opcua_up} communicating",
    )
    table.add_row("Security", "None, and Basic256Sha256 SignAndEncrypt")
    table.add_row("Server certificate", str(plant.pki.server_certificate))
    table.add_row(
        "Gateway certificate",
        f"{plant.pki.gateway_certificate} + {plant.pki.gateway_key.name} "
        f"(application URI {GATEWAY_APPLICATION_URI})",
    )
    table.add_row("Trusted clients", f"{plant.pki.trusted}/ (copy a client's certificate here)")
    wearing = plant.wearing
    table.add_row(
        "Slow wear",
        f"{len(wearing)} machines wear out ({', '.join(wearing[:6])}"
        f"{', ...' if len(wearing) > 6 else ''}), time scale x{plant.time_scale:g}",
    )
    if edge_config_path is not None:
        table.add_row("Gateway configuration", str(edge_config_path))
    table.add_row("Stop", "Ctrl-C")
    console.print(Panel(table, title="Simulated plant is up", border_style="green"))
