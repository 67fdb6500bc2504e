"""The gateway's adapters against the simulated plant's real servers.

The OPC UA adapter subscribes, writes a setpoint and calls methods over Basic256Sha256
SignAndEncrypt with the plant's certificates, and in the clear; the Modbus adapter reads a machine
tool in one request per table with integers kept integers; machines awaiting commissioning are
reported unavailable with the reason; an untrusted certificate is refused with a clear reason.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from tests.servers import free_port
from tiangong.edge.adapters.base import DeviceReadings
from tiangong.edge.adapters.opcua import (
    OpcUaAdapter,
    application_uri,
    open_session,
    parse_event_message,
)
from tiangong.edge.browse import browse_variables, points_toml
from tiangong.edge.config import EdgeConfig, ModbusDevice, OpcUaDevice
from tiangong.edge.errors import CommandError, DeviceError
from tiangong.edge.gateway import make_adapter
from tiangong.network.access.payload import DeviceSamples
from tiangong.platform.ingest.validation import ModelValidator, Rejection
from tiangong.sim.certificates import GATEWAY_APPLICATION_URI, self_signed
from tiangong.sim.factory import plan_factory
from tiangong.sim.plant import SimulatedPlant
from tiangong.sim.thing_models import THING_MODELS

pytestmark = pytest.mark.asyncio(loop_scope="module")

SILENT = {"cnc-002", "pump-002"}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def plant(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SimulatedPlant]:
    plan = plan_factory(20)
    devices = tuple(dataclasses.replace(d, connects=d.id not in SILENT) for d in plan.devices)
    async with SimulatedPlant(
        plan=dataclasses.replace(plan, devices=devices),
        modbus_port=free_port(),
        opcua_port=free_port(),
        data_dir=tmp_path_factory.mktemp("plant"),
    ) as running:
        yield running


def device(config: EdgeConfig, device_id: str) -> ModbusDevice | OpcUaDevice:
    [found] = [d for d in config.devices if d.id == device_id]
    assert isinstance(found, ModbusDevice | OpcUaDevice)
    return found


class Collector:
    def __init__(self) -> None:
        self.readings: list[DeviceReadings] = []

    def __call__(self, readings: DeviceReadings) -> None:
        self.readings.append(readings)

    def latest(self) -> dict[str, object]:
        merged: dict[str, object] = {}
        for readings in self.readings:
            merged.update(readings.values)
        return merged


def refused(model_id: str, device_id: str, values: dict[str, object]) -> list[Rejection]:
    """What the platform would refuse of these values under the device's thing model."""
    now = int(time.time() * 1000)
    samples = DeviceSamples(
        device=device_id,
        ts=np.asarray([now], dtype=np.int64),
        values={k: [v] for k, v in values.items()},
    )
    return ModelValidator(THING_MODELS[model_id]).validate(samples, now).rejections


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if result if isinstance(result, bool) else await result:
                return
            await asyncio.sleep(0.05)


async def test_opcua_sign_and_encrypt_subscribes_writes_and_calls(plant: SimulatedPlant) -> None:
    config = device(plant.edge_config(security="sign_and_encrypt"), "pump-001")
    assert isinstance(config, OpcUaDevice)
    assert config.security_mode == "SignAndEncrypt"
    assert config.certificate is not None
    assert application_uri(config.certificate) == GATEWAY_APPLICATION_URI
    adapter = make_adapter(config)
    sink = Collector()
    await adapter.connect(sink)
    try:
        pump = THING_MODELS["pump"]
        expected = {p.property for p in config.points}
        await eventually(lambda: expected <= set(sink.latest()))
        snapshot = await adapter.read()
        assert set(snapshot.values) == expected
        assert refused("pump", "pump-001", snapshot.values) == []

        await adapter.write("speed_setpoint", 42.5)
        await eventually(lambda: sink.latest().get("speed_setpoint") == 42.5)
        with pytest.raises(CommandError, match="read-only"):
            await adapter.write("flow", 1.0)
        with pytest.raises(DeviceError, match="speed_setpoint"):
            await adapter.write("speed_setpoint", 10_000.0)  # the server refuses out of range

        state = pump.property("state")
        assert state is not None
        assert state.enum is not None
        stopped = state.enum.index("stopped")
        assert await adapter.call("stop", {}) is not None
        await eventually(lambda: sink.latest().get("state") == stopped)
        await adapter.call("start", {})
        await eventually(lambda: sink.latest().get("state") != stopped)
        with pytest.raises(CommandError, match="calibrate"):
            await adapter.call("calibrate", {})
    finally:
        await adapter.close()


async def test_opcua_in_the_clear(plant: SimulatedPlant) -> None:
    config = device(plant.edge_config(security="none"), "line-001")
    adapter = make_adapter(config)
    sink = Collector()
    await adapter.connect(sink)
    try:
        await eventually(lambda: "line_speed" in sink.latest())
    finally:
        await adapter.close()


async def test_opcua_events_of_a_machine_become_its_events(plant: SimulatedPlant) -> None:
    config = device(plant.edge_config(security="none"), "pump-003")
    assert isinstance(config, OpcUaDevice)
    assert [e.source for e in config.events] == ["ns=2;s=pump-003"]
    adapter = make_adapter(config)
    sink = Collector()
    await adapter.connect(sink)
    machine = plant.machines["pump-003"]
    try:
        machine.fault_rate_per_h = 1e12  # the next step faults
        await eventually(lambda: any(r.events for r in sink.readings))
    finally:
        machine.fault_rate_per_h = 0.0
        await adapter.close()
    [(name, data)] = next(r.events for r in sink.readings if r.events)
    assert name == "fault"
    assert data["code"] in {"DRY_RUN", "MOTOR_OVERTEMP", "SEAL_LEAK"}
    assert data["message"].startswith("fault: code=")
    assert data["severity"] > 0


async def test_event_messages_name_the_event() -> None:
    assert parse_event_message("fault: code=SEAL_LEAK, expected_downtime_s=120") == (
        "fault",
        {"code": "SEAL_LEAK", "expected_downtime_s": "120"},
    )
    assert parse_event_message("repaired") == ("repaired", {})
    assert parse_event_message("Temperature high on drive 3!") == (None, {})


async def test_browsing_finds_the_machines_variables_as_configuration(
    plant: SimulatedPlant,
) -> None:
    client = await open_session(plant.opcua_endpoint, name="browse-test", timeout_s=5.0)
    try:
        variables = await browse_variables(client)
    finally:
        await client.disconnect()
    by_node = {v.node_id: v for v in variables}
    flow = by_node["ns=2;s=pump-001.flow"]
    assert flow.path[-2:] == ("pump-001", "flow")
    assert (flow.data_type, flow.unit, flow.writable) == ("Double", "m³/h", False)
    assert isinstance(flow.value, float)
    assert by_node["ns=2;s=pump-001.speed_setpoint"].writable
    assert all(not v.node_id.startswith("i=") for v in variables)  # no ns=0 diagnostics
    # The printed entries are valid configuration for an OPC UA device.
    pumps = [v for v in variables if "pump-001" in v.path]
    document = tomllib.loads(
        f'[[devices]]\nid = "pump-001"\nprotocol = "opcua"\nendpoint = "{plant.opcua_endpoint}"\n'
        + points_toml(pumps)
    )
    config = OpcUaDevice.model_validate(document["devices"][0])
    assert {p.property for p in config.points} >= {"flow", "speed_setpoint"}


async def test_opcua_untrusted_certificate_is_refused_with_the_reason(
    plant: SimulatedPlant, tmp_path: Path
) -> None:
    cert, key = self_signed(
        common_name="stranger",
        application_uri=GATEWAY_APPLICATION_URI,
        hosts=["localhost"],
        server=False,
        client=True,
    )
    (tmp_path / "stranger.der").write_bytes(cert)
    (tmp_path / "stranger-key.pem").write_bytes(key)
    config = device(plant.edge_config(security="sign_and_encrypt"), "pump-001")
    stranger = config.model_copy(
        update={
            "certificate": tmp_path / "stranger.der",
            "private_key": tmp_path / "stranger-key.pem",
        }
    )
    adapter = OpcUaAdapter(stranger)  # type: ignore[arg-type]
    with pytest.raises(DeviceError, match="Untrusted"):
        await adapter.connect(Collector())
    await adapter.close()


async def test_modbus_machine_tool_reads_typed_values(plant: SimulatedPlant) -> None:
    config = device(plant.edge_config(), "cnc-001")
    assert isinstance(config, ModbusDevice)
    adapter = make_adapter(config)
    await adapter.connect(Collector())
    try:
        readings = await adapter.read()
        assert set(readings.values) == {p.property for p in config.points}
        assert refused("cnc", "cnc-001", readings.values) == []
        assert type(readings.values["state"]) is int
        assert type(readings.values["parts_good"]) is int
        await adapter.write("feed_override", 80.0)
        assert (await adapter.read()).values["feed_override"] == pytest.approx(80.0)
    finally:
        await adapter.close()


async def test_modbus_command_coils_carry_out_thing_model_commands(plant: SimulatedPlant) -> None:
    config = device(plant.edge_config(), "cnc-001")
    assert isinstance(config, ModbusDevice)
    assert [c.command for c in config.commands] == ["reset_counters"]
    machine = plant.machines["cnc-001"]
    adapter = make_adapter(config)
    await adapter.connect(Collector())
    try:
        machine.parts_good = 1234  # type: ignore[attr-defined]
        assert await adapter.call("reset_counters", {}) == {"executed": "reset_counters"}
        await eventually(lambda: getattr(machine, "parts_good", None) == 0)
        with pytest.raises(CommandError, match="reset_counters, write") as raised:
            await adapter.call("self_destruct", {})
        assert raised.value.reason == "unknown_command"
    finally:
        await adapter.close()


@pytest.mark.parametrize("silent", sorted(SILENT))
async def test_machine_awaiting_commissioning_is_unavailable(
    plant: SimulatedPlant, silent: str
) -> None:
    adapter = make_adapter(device(plant.edge_config(security="none"), silent))

    async def connect_and_read() -> None:
        await adapter.connect(Collector())
        await adapter.read()

    with pytest.raises(DeviceError) as raised:
        await connect_and_read()
    await adapter.close()
    assert silent in str(raised.value)
