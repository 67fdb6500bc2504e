"""``tiangong up``: the whole system in one process, on embedded defaults.

The real path, end to end: a simulated plant serving its machines over Modbus TCP and OPC UA
(``tiangong sim``) → one edge gateway per site (``tiangong edge``) polling and subscribing to
them, buffering on disk → the embedded MQTT broker (amqtt) → the platform (DuckDB and SQLite in
``--data-dir``) → REST API and dashboard. Nothing outside the process is needed. A restart with
the same data directory keeps all data, the admin token, the OPC UA certificates and every
device's and gateway's credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from tiangong.edge.config import EdgeConfig
from tiangong.edge.gateway import EdgeGateway
from tiangong.platform.service import Platform
from tiangong.platform.settings import PlatformSettings
from tiangong.sim.edge_plan import edge_config_for
from tiangong.sim.factory import RegistryProvisioner, plan_factory
from tiangong.sim.plant import SimulatedPlant

__all__ = ["LocalStack", "run_local_stack"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LocalStack:
    """What ``tiangong up`` runs.

    Attributes:
        data_dir: where everything is kept.
        http_host: dashboard and API address.
        http_port: dashboard and API port.
        mqtt_port: embedded broker port.
        modbus_port: the simulated plant's (first) Modbus TCP port.
        opcua_port: the simulated plant's OPC UA port.
        devices: simulated devices.
        duration: seconds to run, or ``None`` for until interrupted.
    """

    data_dir: Path
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    mqtt_port: int = 1884
    modbus_port: int = 5020
    opcua_port: int = 4840
    devices: int = 50
    duration: float | None = None


def _banner(
    console: Console,
    stack: LocalStack,
    platform: Platform,
    plant: SimulatedPlant,
    gateways: list[EdgeConfig],
) -> None:
    url = f"http://{stack.http_host}:{platform.http_port}/"
    token_file = stack.data_dir / "admin-token"
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("Dashboard", f"{url}  (sign-in link below)")
    table.add_row(
        "Admin token",
        f"{platform.admin_token}  ({'generated now, ' if platform.admin_token_generated else ''}"
        f"kept in {token_file}, mode 0600)",
    )
    table.add_row("API", f"{url}docs  (OpenAPI at {url}openapi.json)")
    table.add_row("MQTT broker", f"{platform.settings.mqtt_host}:{stack.mqtt_port} (MQTT 3.1.1)")
    connecting = sum(d.connects for d in plant.plan.devices)
    table.add_row(
        "Simulated plant",
        f"{stack.devices} machines in {len(plant.plan.sites)} sites, {connecting} commissioned"
        f" ({stack.devices - connecting} awaiting network commissioning); Modbus TCP on"
        f" {plant.host}:{', '.join(str(p) for p in plant.modbus_ports)},"
        f" OPC UA on {plant.opcua_endpoint} (Basic256Sha256 SignAndEncrypt)",
    )
    for gateway in gateways:
        table.add_row(
            "Edge gateway",
            f"{gateway.gateway.id}: {len(gateway.devices)} machines of site"
            f" {gateway.gateway.site}, buffer in {gateway.gateway.data_dir}",
        )
    table.add_row("Data", str(stack.data_dir.resolve()))
    table.add_row("Stop", "Ctrl-C (data is kept for the next start)")
    console.print(Panel(table, title="Tiangong is up", border_style="green"))
    # On its own line so that no panel ever truncates it and terminals make it clickable.
    console.print(f"Open {url}#token={platform.admin_token}", soft_wrap=True, highlight=False)


async def run_local_stack(stack: LocalStack, console: Console | None = None) -> None:
    """Run broker, platform and simulated factory until interrupted or ``duration`` is over."""
    console = console or Console()
    settings = PlatformSettings.load(
        data_dir=stack.data_dir,
        demo=True,
        http_host=stack.http_host,
        http_port=stack.http_port,
        mqtt_port=stack.mqtt_port,
        mqtt_version=4,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        async with (
            Platform(settings, embedded_broker=True) as platform,
            SimulatedPlant(
                plan=plan_factory(stack.devices),
                modbus_port=stack.modbus_port,
                opcua_port=stack.opcua_port,
                data_dir=stack.data_dir,
            ) as plant,
        ):
            gateways = [
                _gateway_config(plant, site.id, settings.mqtt_host, stack.mqtt_port)
                for site in plant.plan.sites
            ]
            provisioner = RegistryProvisioner(
                platform.registry, platform.alarms, stack.data_dir / "sim-credentials.json"
            )
            secrets = await provisioner.ensure(plant.plan, gateways)
            async with contextlib.AsyncExitStack() as edges:
                for config in gateways:
                    await edges.enter_async_context(
                        EdgeGateway(config, password=secrets[config.gateway.id])
                    )
                _banner(console, stack, platform, plant, gateways)
                try:
                    async with asyncio.timeout(stack.duration):
                        await stop.wait()
                except TimeoutError:
                    console.print(f"[dim]ran for {stack.duration:g}s as asked; stopping[/dim]")
                else:
                    console.print("[dim]stopping...[/dim]")
            console.print(
                f"stopped cleanly: {platform.pipeline.points_committed:,} points stored this run,"
                f" data kept in {stack.data_dir}"
            )
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(sig)


def _gateway_config(plant: SimulatedPlant, site: str, mqtt_host: str, mqtt_port: int) -> EdgeConfig:
    """The edge gateway of one site, reading that site's machines from the plant's servers."""
    config = edge_config_for(
        plant.plan,
        modbus_host=plant.host,
        modbus_port=plant.modbus_ports,
        opcua_endpoint=plant.opcua_endpoint,
        gateway_id=f"edge-{site}",
        uplink_host=mqtt_host,
        uplink_port=mqtt_port,
        data_dir=plant.data_dir,
        security="sign_and_encrypt",
        protocols=plant.protocols,
        site=site,
    )
    # The embedded broker (amqtt) speaks MQTT 3.1.1.
    uplink = config.uplink.model_copy(update={"mqtt_version": 4})
    return config.model_copy(update={"uplink": uplink})
