"""The simulated plant against real clients: pymodbus reads and writes its Modbus units, asyncua
browses, reads, subscribes, writes and calls its OPC UA server, in the clear and over
Basic256Sha256 SignAndEncrypt, and the generated gateway configuration names what is there."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Client, Node, ua
from asyncua.ua.uaerrors import UaError
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.client.mixin import ModbusClientMixin

from tests.servers import free_port
from tiangong.edge.config import ModbusDevice, OpcUaDevice, load_config
from tiangong.platform.model import DataType
from tiangong.sim.certificates import GATEWAY_APPLICATION_URI, self_signed
from tiangong.sim.edge_plan import write_edge_toml
from tiangong.sim.factory import DeviceSpec, FactoryPlan, plan_factory
from tiangong.sim.layout import Protocol
from tiangong.sim.machines import WEAR_FAILURE
from tiangong.sim.plant import SimulatedPlant
from tiangong.sim.register_maps import REGISTER_MAPS, RegisterMap, decode, register_count
from tiangong.sim.thing_models import THING_MODELS

pytestmark = pytest.mark.asyncio(loop_scope="module")

SILENT = {"cnc-002", "line-002"}  # awaiting commissioning


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def plant(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SimulatedPlant]:
    plan = plan_factory(20)
    devices = tuple(dataclasses.replace(d, connects=d.id not in SILENT) for d in plan.devices)
    async with SimulatedPlant(
        plan=dataclasses.replace(plan, devices=devices),
        modbus_port=free_port(),
        opcua_port=free_port(),
        data_dir=tmp_path_factory.mktemp("sim"),
    ) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def modbus(plant: SimulatedPlant) -> AsyncIterator[AsyncModbusTcpClient]:
    client = AsyncModbusTcpClient("127.0.0.1", port=plant.modbus_port, timeout=2, retries=0)
    assert await client.connect()
    yield client
    client.close()


@pytest_asyncio.fixture(loop_scope="module")
async def opcua(plant: SimulatedPlant) -> AsyncIterator[Client]:
    async with Client(plant.opcua_endpoint, timeout=5) as client:
        yield client


def unit_of(plant: SimulatedPlant, device: str) -> int:
    return next(s.unit for s in plant.layout.modbus if s.device.id == device)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 6.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.1)


async def read_table(
    client: AsyncModbusTcpClient, unit: int, table: str, first: int, count: int
) -> list[int] | list[bool]:
    """One request for a whole table of a unit (the batching a gateway does)."""
    if table == "holding":
        reply = await client.read_holding_registers(first, count=count, device_id=unit)
    elif table == "input":
        reply = await client.read_input_registers(first, count=count, device_id=unit)
    elif table == "coil":
        reply = await client.read_coils(first, count=count, device_id=unit)
    else:
        reply = await client.read_discrete_inputs(first, count=count, device_id=unit)
    assert not reply.isError(), reply
    return reply.registers if table in ("holding", "input") else reply.bits[:count]


async def read_device(
    client: AsyncModbusTcpClient, unit: int, register_map: RegisterMap
) -> tuple[dict[str, Any], dict[str, list[int] | list[bool]]]:
    values: dict[str, Any] = {}
    raw: dict[str, list[int] | list[bool]] = {}
    for table in ("holding", "input", "coil", "discrete"):
        span = register_map.span(table)
        if span is None:
            continue
        first, count = span
        cells = raw[table] = await read_table(client, unit, table, first, count)
        for point in register_map.points:
            if point.table == table:
                at = point.address - first
                values[point.property] = decode(point, cells[at : at + register_count(point.type)])
    return values, raw


# -- Modbus ----------------------------------------------------------------------------------


async def test_modbus_every_kind_reads_in_range_one_request_per_table(
    plant: SimulatedPlant, modbus: AsyncModbusTcpClient
) -> None:
    kinds = {s.device.kind for s in plant.layout.modbus}
    assert kinds == {"cnc", "compressor", "meter"}
    for kind in sorted(kinds):
        device = next(
            s.device.id for s in plant.layout.modbus if s.device.kind == kind and s.device.connects
        )
        model = THING_MODELS[kind]
        values, raw = await read_device(modbus, unit_of(plant, device), REGISTER_MAPS[kind])
        assert set(values) == {p.id for p in model.properties}
        for name, value in values.items():
            spec = model.property(name)
            assert spec is not None
            if spec.type is DataType.ENUM:
                assert spec.enum is not None
                assert 0 <= value < len(spec.enum)
            elif spec.type is DataType.BOOL:
                assert isinstance(value, bool)
            else:
                assert spec.min is None or value >= spec.min - 1e-6, (device, name, value)
                assert spec.max is None or value <= spec.max + 1e-6, (device, name, value)
        if kind == "compressor":
            # An independent decoder agrees on the word-swapped float.
            power = ModbusClientMixin.convert_from_registers(
                raw["holding"][2:4], ModbusClientMixin.DATATYPE.FLOAT32, word_order="little"
            )
            assert power == pytest.approx(values["power"])
            assert values["pressure"] > 0
    # A whole kind's input registers answer one request.
    assert REGISTER_MAPS["cnc"].span("input") == (0, 14)


async def test_modbus_refuses_what_a_plc_refuses(
    plant: SimulatedPlant, modbus: AsyncModbusTcpClient
) -> None:
    cnc = unit_of(plant, "cnc-001")
    beyond = await modbus.read_input_registers(0, count=15, device_id=cnc)
    assert beyond.isError()
    assert beyond.exception_code == 2  # ILLEGAL DATA ADDRESS
    too_fast = await modbus.write_register(0, 2000, device_id=cnc)  # 200 % feed override
    assert too_fast.exception_code == 3  # ILLEGAL DATA VALUE
    compressor = unit_of(plant, "compressor-001")
    read_only = await modbus.write_register(0, 1, device_id=compressor)  # its state
    assert read_only.exception_code == 2
    silent = await modbus.read_input_registers(0, count=1, device_id=unit_of(plant, "cnc-002"))
    assert silent.exception_code == 0x0B  # GATEWAY TARGET DEVICE FAILED TO RESPOND


async def test_modbus_setpoints_change_the_physics(
    plant: SimulatedPlant, modbus: AsyncModbusTcpClient
) -> None:
    cnc = unit_of(plant, "cnc-001")
    assert not (await modbus.write_register(0, 500, device_id=cnc)).isError()  # 50.0 %
    assert plant.machines["cnc-001"].feed_override == 50.0
    assert (await read_table(modbus, cnc, "holding", 0, 1)) == [500]

    first, second = unit_of(plant, "compressor-001"), unit_of(plant, "compressor-002")
    state = REGISTER_MAPS["compressor"].point("state")
    labels = THING_MODELS["compressor"].property("state").enum
    # Unload at 6 bar: the receiver is above that, so the compressor unloads.
    assert not (await modbus.write_register(9, 600, device_id=first)).isError()
    # Remote enable off: the compressor stands idle.
    assert not (await modbus.write_coil(0, False, device_id=second)).isError()

    async def settled() -> bool:
        one, _ = await read_device(modbus, first, REGISTER_MAPS["compressor"])
        two, _ = await read_device(modbus, second, REGISTER_MAPS["compressor"])
        return (
            labels[one["state"]] == "unloading"
            and one["pressure_setpoint"] == pytest.approx(6.0)
            and labels[two["state"]] == "idle"
            and two["power"] == 0
            and two["enabled"] is False
        )

    await eventually(settled)
    assert state.table == "holding"


async def test_modbus_command_coil(plant: SimulatedPlant, modbus: AsyncModbusTcpClient) -> None:
    machine = plant.machines["cnc-003"]
    machine.parts_good, machine.parts_bad = 7, 2
    unit = unit_of(plant, "cnc-003")
    assert not (await modbus.write_coil(0, True, device_id=unit)).isError()  # reset_counters
    assert (machine.parts_good, machine.parts_bad) == (0, 0)

    async def cleared() -> bool:  # the next scan clears the command coil
        return (await read_table(modbus, unit, "coil", 0, 1)) == [False]

    await eventually(cleared)


# -- OPC UA ----------------------------------------------------------------------------------


async def test_opcua_address_space(plant: SimulatedPlant, opcua: Client) -> None:
    factory = await opcua.nodes.objects.get_child("2:Factory")
    sites = {(await n.read_browse_name()).Name: n for n in await factory.get_children()}
    assert set(sites) == {s.site for s in plant.layout.opcua}
    found = {
        (await d.read_browse_name()).Name
        for site in sites.values()
        for d in await site.get_children()
    }
    assert found == {s.id for s in plant.layout.opcua}

    flow = opcua.get_node("ns=2;s=pump-001.flow")
    assert 0 <= await flow.read_value() <= 500
    assert await flow.read_data_type_as_variant_type() == ua.VariantType.Double
    assert (await flow.read_type_definition()) == ua.NodeId(ua.ObjectIds.AnalogItemType)
    units = await opcua.get_node("ns=2;s=pump-001.flow.EngineeringUnits").read_value()
    assert units.DisplayName.Text == "m³/h"
    assert units.UnitId == int.from_bytes(b"MQH", "big")  # UNECE code as OPC 10000-8 says
    assert units.NamespaceUri == "http://www.opcfoundation.org/UA/units/un/cefact"
    eu_range = await opcua.get_node("ns=2;s=pump-001.flow.EURange").read_value()
    assert (eu_range.Low, eu_range.High) == (0.0, 500.0)
    by_path = await opcua.nodes.objects.get_child(["2:Factory", "2:suzhou", "2:pump-001", "2:flow"])
    assert by_path.nodeid == flow.nodeid

    state = opcua.get_node("ns=2;s=line-001.state")
    labels = await opcua.get_node("ns=2;s=line-001.state.EnumStrings").read_value()
    assert [t.Text for t in labels] == THING_MODELS["line"].property("state").enum
    assert await state.read_value() in range(len(labels))
    assert isinstance(await opcua.get_node("ns=2;s=line-001.good_count").read_value(), int)

    silent = await opcua.get_node("ns=2;s=line-002.line_speed").read_data_value(
        raise_on_bad_status=False
    )
    assert silent.StatusCode == ua.StatusCode(ua.StatusCodes.BadNoCommunication)


class Changes:
    def __init__(self) -> None:
        self.values: list[tuple[str, Any]] = []
        self.events: list[str] = []

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        self.values.append((node.nodeid.Identifier, val))

    def event_notification(self, event: Any) -> None:
        self.events.append(event.Message.Text)


async def test_opcua_subscription_and_methods(plant: SimulatedPlant, opcua: Client) -> None:
    changes = Changes()
    subscription = await opcua.create_subscription(100, changes)
    await subscription.subscribe_data_change(
        [opcua.get_node("ns=2;s=pump-002.state"), opcua.get_node("ns=2;s=pump-002.flow")]
    )

    async def flowing() -> bool:
        return sum(1 for n, _ in changes.values if n == "pump-002.flow") >= 2

    await eventually(flowing)  # the initial value, then a change from the physics
    pump = opcua.get_node("ns=2;s=pump-002")
    await pump.call_method("2:Stop")
    assert plant.machines["pump-002"].run_request is False

    async def stopped() -> bool:
        return ("pump-002.state", 2) in changes.values  # "stopped"

    await eventually(stopped)
    await pump.call_method(ua.NodeId("pump-002.start", 2))  # the method's predictable node id
    assert plant.machines["pump-002"].run_request is True
    await subscription.delete()


async def test_opcua_setpoint_is_a_writable_variable(plant: SimulatedPlant, opcua: Client) -> None:
    setpoint = opcua.get_node("ns=2;s=pump-003.speed_setpoint")
    await setpoint.write_value(ua.Variant(30.0, ua.VariantType.Double))
    machine = plant.machines["pump-003"]
    assert machine.speed_setpoint == 30.0
    flow = opcua.get_node("ns=2;s=pump-003.flow")

    async def throttled() -> bool:
        return bool(await flow.read_value() <= machine.rated_flow * 0.3 + 6)

    await eventually(throttled)
    with pytest.raises(ua.uaerrors.BadOutOfRange):
        await setpoint.write_value(ua.Variant(250.0, ua.VariantType.Double))
    assert machine.speed_setpoint == 30.0
    with pytest.raises(UaError):  # a measured value is read-only
        await flow.write_value(ua.Variant(1.0, ua.VariantType.Double))


async def test_opcua_sign_and_encrypt(plant: SimulatedPlant, tmp_path: Path) -> None:
    pki = plant.pki
    endpoints = await Client(plant.opcua_endpoint).connect_and_get_server_endpoints()
    modes = {(e.SecurityPolicyUri.rsplit("#")[-1], e.SecurityMode) for e in endpoints}
    assert modes == {
        ("None", ua.MessageSecurityMode.None_),
        ("Basic256Sha256", ua.MessageSecurityMode.SignAndEncrypt),
    }

    async def secure_read(certificate: Path, key: Path) -> float:
        client = Client(plant.opcua_endpoint, timeout=5)
        client.application_uri = GATEWAY_APPLICATION_URI
        await client.set_security_string(
            f"Basic256Sha256,SignAndEncrypt,{certificate},{key},{pki.server_certificate}"
        )
        async with client:
            return float(await client.get_node("ns=2;s=pump-001.flow").read_value())

    assert await secure_read(pki.gateway_certificate, pki.gateway_key) >= 0

    # A client whose certificate is not in the trusted directory is refused...
    cert, key = self_signed(
        common_name="stranger",
        application_uri=GATEWAY_APPLICATION_URI,
        hosts=["localhost"],
        server=False,
        client=True,
    )
    stranger, stranger_key = tmp_path / "stranger.der", tmp_path / "stranger-key.pem"
    stranger.write_bytes(cert)
    stranger_key.write_bytes(key)
    with pytest.raises(ua.uaerrors.BadCertificateUntrusted):
        await secure_read(stranger, stranger_key)
    # ...until an operator copies it there.
    shutil.copyfile(stranger, pki.trusted / stranger.name)
    assert await secure_read(stranger, stranger_key) >= 0


# -- The gateway configuration ------------------------------------------------------------------


async def test_edge_config_round_trips_and_names_what_is_served(
    plant: SimulatedPlant, opcua: Client, tmp_path: Path
) -> None:
    config = plant.edge_config(gateway_id="gw-test", uplink_port=1884)
    path = tmp_path / "edge.toml"
    write_edge_toml(config, path)
    assert load_config(path) == config
    assert {d.id for d in config.devices} == {s.id for s in plant.plan.devices}
    assert {d.network.access for d in config.devices} == {"5g", "wifi", "wired"}
    for device in config.devices:
        if isinstance(device, ModbusDevice):
            assert plant.layout.protocol(device.id) is Protocol.MODBUS
            assert (device.port, device.unit) == (plant.modbus_port, unit_of(plant, device.id))
            expected = REGISTER_MAPS[device.model or ""].points
            assert [p.model_copy(update={"unit": None}) for p in device.points] == list(expected)
        else:
            assert isinstance(device, OpcUaDevice)
            assert device.security_mode == "SignAndEncrypt"
            assert device.certificate == plant.pki.gateway_certificate
            for point in device.points:
                value = await opcua.get_node(point.node).read_data_value(raise_on_bad_status=False)
                status = value.StatusCode
                assert status is not None
                assert status.is_good() or device.id in SILENT, point.node
            for method in device.methods:
                name = await opcua.get_node(method.method).read_browse_name()
                assert name.Name.lower() == method.command.replace("_", "")
    five_g = next(d for d in config.devices if d.network.access == "5g")
    assert five_g.network.slice
    assert five_g.network.five_qi
    assert five_g.network.dnn


# -- Slow wear on the wire ----------------------------------------------------------------------


async def test_wear_failure_seen_on_both_protocols(tmp_path: Path) -> None:
    base = plan_factory(20)
    plan = FactoryPlan(
        base.tenant,
        base.tenant_name,
        base.sites,
        (
            DeviceSpec("compressor-003", "compressor", "suzhou", "Compressor 003"),
            DeviceSpec("pump-001", "pump", "suzhou", "Pump 001"),
        ),
    )
    # Hundreds of operating hours per second: both wearing machines fail at their next step.
    async with SimulatedPlant(
        plan=plan, modbus_port=0, opcua_port=0, data_dir=tmp_path, time_scale=2e6
    ) as plant:
        assert plant.wearing == ["compressor-003", "pump-001"]
        assert plant.modbus_port > 0
        assert plant.opcua_port > 0
        changes = Changes()
        async with Client(plant.opcua_endpoint) as client:
            subscription = await client.create_subscription(100, changes)
            await subscription.subscribe_events(client.get_node("ns=2;s=pump-001"))

            async def failed() -> bool:
                codes = {(e.device, e.data.get("code")) for e in plant.events}
                return {
                    ("compressor-003", WEAR_FAILURE),
                    ("pump-001", WEAR_FAILURE),
                } <= codes and any(WEAR_FAILURE in text for text in changes.events)

            await eventually(failed, timeout=8)
        names = [(e.device, e.name) for e in plant.events]
        assert ("compressor-003", "fault") in names
