"""Eclipse Tahu's Sparkplug B edge node against the platform: code we did not write, ingested.

``tests/platform/test_sparkplug_host.py`` drives the host with our own edge node core, so a
misreading of the specification shared by both sides would pass there. Here the edge node is
the reference implementation's JavaScript client (Eclipse Tahu ``sparkplug-client``, pinned in
``tests/interop/package-lock.json`` and installed by ``make test``), run by
``tests/interop/tahu_node.mjs`` from a JSON scenario, against a real Mosquitto and a running
platform. The node reports what it sees (commands, rebirth requests) as JSON lines; the platform
is checked through its REST API and registry, as an operator would see it.

What Tahu does differently from our own node, and so what these tests exercise: it names
metrics and uses aliases only where its application gives them, encodes UInt32 in
``long_value`` and signed integers as 32- or 64-bit two's complement, keeps ``bdSeq`` at 0 on
every connection, sends its Will with QoS 0, does not wait for the host's STATE, connects with
MQTT 3.1.1 and a clean session, and may compress payloads (a Tahu convention the platform does
not support yet: see ``test_tahu_compressed_data_is_stored``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.platform.conftest import PlatformEnv, running_platform
from tests.platform.probes import (
    dead_letters,
    eventually,
    latest,
    now_ms,
    registered_from_birth,
    series,
    state_of,
    wait_latest,
)
from tests.servers import MosquittoProcess, unavailable
from tiangong.platform.model import DeviceState

pytestmark = pytest.mark.mosquitto

INTEROP_DIR = Path(__file__).resolve().parents[1] / "interop"
NODE_SCRIPT = INTEROP_DIR / "tahu_node.mjs"
#: The scenario's own limit: the node gives up (exit 3) rather than hang a test.
NODE_TIMEOUT_MS = 30_000
REBIRTH = "Node Control/Rebirth"


def node_binary() -> str:
    """The ``node`` executable, once Tahu's client is installed (else skip, or fail in CI)."""
    node = shutil.which("node")
    if node is None:
        unavailable("Node.js (`node`) is not on PATH; the Tahu interop tests need Node.js 20")
    if not (INTEROP_DIR / "node_modules" / "sparkplug-client").is_dir():
        unavailable(
            "Eclipse Tahu's sparkplug-client is not installed in tests/interop/node_modules:"
            " run `make test` (or `npm ci --prefix tests/interop`)"
        )
    assert node is not None  # unavailable() skipped or failed the test
    return node


@pytest.fixture(autouse=True)
def _tahu_installed() -> None:
    """Skip (or fail, under CI) before a platform starts when the Tahu node cannot run."""
    node_binary()


def metric(name: str, kind: str, value: Any, timestamp: int | None = None) -> dict[str, Any]:
    """A metric as Tahu's client takes it (``kind`` is its datatype name, e.g. ``Float``)."""
    spec: dict[str, Any] = {"name": name, "type": kind, "value": value}
    if timestamp is not None:
        spec["timestamp"] = timestamp
    return spec


# -- the Tahu edge node in a process of its own ----------------------------------------------------


@dataclass
class TahuNode:
    """A running ``tahu_node.mjs``: its process and the events it printed so far."""

    proc: asyncio.subprocess.Process
    events: list[dict[str, Any]] = field(default_factory=list)
    stderr: bytearray = field(default_factory=bytearray)
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    def of(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event]

    def published(self) -> list[tuple[str, str | None, int]]:
        """(message type, device, seq) of everything the node published, in order."""
        return [(e["type"], e["device"], e["seq"]) for e in self.of("published")]

    async def published_count(self, count: int) -> list[tuple[str, str | None, int]]:
        """What the node published, once it reported ``count`` messages (its output lags)."""
        await eventually(lambda: len(self.of("published")) >= count)
        return self.published()

    async def exited(self) -> int:
        """Wait for the scenario to end by itself and its output to be read; its exit code."""
        async with asyncio.timeout(NODE_TIMEOUT_MS / 1000 + 5):
            code = await self.proc.wait()
            await asyncio.gather(*self.readers)
        return code

    def report(self) -> str:
        lines = "\n".join(json.dumps(e) for e in self.events)
        return f"exit {self.proc.returncode}\nstdout:\n{lines}\nstderr:\n{self.stderr.decode()}"

    async def kill(self) -> None:
        """SIGKILL: the TCP connection ends without DISCONNECT, so the broker sends the Will."""
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        await asyncio.gather(*self.readers)


async def _read_events(stream: asyncio.StreamReader, node: TahuNode) -> None:
    async for line in stream:
        try:
            node.events.append(json.loads(line))
        except json.JSONDecodeError:
            node.events.append({"event": "unparsed", "line": line.decode(errors="replace")})


async def _read_all(stream: asyncio.StreamReader, sink: bytearray) -> None:
    async for chunk in stream:
        sink.extend(chunk)


def scenario(env: PlatformEnv, **steps: Any) -> dict[str, Any]:
    """A scenario for ``gw-1`` (group ``p1``) on the platform's broker, plus ``steps``."""
    return {
        "broker": {
            "url": f"tcp://127.0.0.1:{env.mqtt_port}",
            "username": "gw-1",
            "password": env.secrets["gw-1"],
            "clientId": f"tahu-gw-1-{uuid.uuid4().hex[:8]}",
        },
        "groupId": "p1",
        "edgeNode": "gw-1",
        "timeoutMs": NODE_TIMEOUT_MS,
        **steps,
    }


@contextlib.asynccontextmanager
async def tahu_node(plan: dict[str, Any]) -> AsyncIterator[TahuNode]:
    """Run the Tahu edge node with scenario ``plan``; killed on the way out if still running."""
    node_path = node_binary()
    proc = await asyncio.create_subprocess_exec(
        node_path,
        str(NODE_SCRIPT),
        json.dumps(plan),
        cwd=INTEROP_DIR,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    node = TahuNode(proc)
    node.readers = [
        asyncio.create_task(_read_events(proc.stdout, node), name="tahu-stdout"),
        asyncio.create_task(_read_all(proc.stderr, node.stderr), name="tahu-stderr"),
    ]
    try:
        yield node
    except BaseException as exc:
        await node.kill()
        exc.add_note(f"Tahu edge node: {node.report()}")
        raise
    await node.kill()
    assert not node.of("error"), node.report()


# -- the platform side ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def sparkplug_platform(tmp_path: Path, port: int) -> AsyncIterator[PlatformEnv]:
    """A platform whose Sparkplug host is online on the broker at ``port``."""
    async with running_platform(tmp_path, mqtt_port=port, sparkplug_enabled=True) as env:
        host = env.platform.sparkplug
        assert host is not None
        async with asyncio.timeout(10):
            # Tahu's client publishes its births at once, without waiting for the host's STATE.
            await host.wait_online()
        yield env


async def wait_states(env: PlatformEnv, state: DeviceState, *devices: str) -> None:
    await eventually(lambda: all(state_of(env, d) is state for d in devices))


def counter(env: PlatformEnv, name: str, **labels: str) -> float:
    value = env.platform.metrics.registry.get_sample_value(f"{name}_total", labels)
    return value or 0.0


# -- what the Tahu node publishes ----------------------------------------------------------------


def pump_birth(t0: int) -> list[dict[str, Any]]:
    """``c-1``, registered with the ``pump`` model: metrics named as its properties."""
    return [
        metric("flow", "Double", 12.5, t0),
        metric("temp", "Float", 40.25, t0),
        metric("note", "String", "from tahu", t0),
    ]


def sensor_birth(t0: int) -> list[dict[str, Any]]:
    """``tahu-sensor-1``, unknown to the platform: registered from this birth."""
    return [
        metric("temperature", "Float", 21.5, t0),
        metric("count", "Int32", 7, t0),
        metric("running", "Boolean", True, t0),
        metric("label", "String", "line A", t0),
    ]


# -- tests ---------------------------------------------------------------------------------------


async def test_tahu_births_register_devices_and_its_data_is_stored(
    tmp_path: Path, shared_mosquitto: MosquittoProcess
) -> None:
    t0 = now_ms() - 60_000
    plan = {
        "devices": {"c-1": pump_birth(t0), "tahu-sensor-1": sensor_birth(t0)},
        "data": [
            {
                "device": "tahu-sensor-1",
                "timestamp": t0 + 1000,
                "metrics": [metric("temperature", "Float", 22.75), metric("count", "Int32", -8)],
            },
            {"device": "c-1", "timestamp": t0 + 1000, "metrics": [metric("flow", "Double", 13.5)]},
            {
                "device": "tahu-sensor-1",
                "timestamp": t0 + 2000,
                "metrics": [
                    metric("count", "Int32", 9),
                    metric("running", "Boolean", False),
                    metric("label", "String", "line B"),
                ],
            },
        ],
        "afterDone": "hold",
    }
    async with (
        sparkplug_platform(tmp_path, shared_mosquitto.port) as env,
        tahu_node(scenario(env, **plan)) as node,
    ):
        await wait_latest(env, "tahu-sensor-1", count=9, label="line B")
        await wait_latest(env, "c-1", flow=13.5)

        # Tahu's seq runs across NBIRTH, DBIRTH and DDATA, from 0.
        assert await node.published_count(6) == [
            ("NBIRTH", None, 0),
            ("DBIRTH", "c-1", 1),
            ("DBIRTH", "tahu-sensor-1", 2),
            ("DDATA", "tahu-sensor-1", 3),
            ("DDATA", "c-1", 4),
            ("DDATA", "tahu-sensor-1", 5),
        ]
        # The unknown device id became a device of the node, its thing model from the birth.
        model = await registered_from_birth(env, "tahu-sensor-1")
        types = {p["id"]: p["type"] for p in model["properties"]}
        assert types == {
            "temperature": "float",
            "count": "int",
            "running": "bool",
            "label": "string",
        }

        # Every value at the time Tahu gave it: the birth's metric timestamps, then the data's
        # payload timestamp (its metrics carry none). A negative Int32 survives Tahu's encoding.
        assert await series(env, "tahu-sensor-1", "count") == [
            (t0, 7),
            (t0 + 1000, -8),
            (t0 + 2000, 9),
        ]
        assert await series(env, "tahu-sensor-1", "temperature") == [
            (t0, 21.5),
            (t0 + 1000, 22.75),
        ]
        assert await series(env, "tahu-sensor-1", "running") == [(t0, True), (t0 + 2000, False)]
        assert await latest(env, "tahu-sensor-1") == {
            "temperature": 22.75,
            "count": 9,
            "running": False,
            "label": "line B",
        }
        # The registered child keeps the model a person gave it, and gets its values.
        assert (await env.api.get("/api/v1/devices/c-1")).json()["model_id"] == "pump"
        assert await series(env, "c-1", "flow") == [(t0, 12.5), (t0 + 1000, 13.5)]
        assert await latest(env, "c-1") == {"flow": 13.5, "temp": 40.25, "note": "from tahu"}

        for online in ("gw-1", "c-1", "tahu-sensor-1"):
            assert state_of(env, online) is DeviceState.ONLINE
        assert state_of(env, "c-2") is DeviceState.PROVISIONED  # not in Tahu's births
        # Everything was understood in step: nothing refused, no rebirth asked for.
        assert await dead_letters(env) == []
        assert node.of("ncmd") == []


async def test_tahu_scalar_datatypes_keep_their_values(
    tmp_path: Path, shared_mosquitto: MosquittoProcess
) -> None:
    """Each scalar datatype as Tahu's payload library encodes it, at the edges of its range."""
    t0 = now_ms() - 60_000
    uuid_text = "5f1c1f9e-6d2a-4b7b-9d3e-0a5b6c7d8e9f"
    values = [
        ("i8", "Int8", -128, "int"),
        ("i16", "Int16", -32768, "int"),
        ("i32", "Int32", -2147483648, "int"),
        ("i64", "Int64", -9007199254740991, "int"),  # JSON's safe integer range
        ("u8", "UInt8", 255, "int"),
        ("u16", "UInt16", 65535, "int"),
        ("u32", "UInt32", 4294967295, "int"),
        ("u64", "UInt64", 9007199254740991, "int"),
        ("f32", "Float", -1.5, "float"),
        ("f64", "Double", 0.1, "float"),
        ("flag", "Boolean", False, "bool"),
        ("name", "String", "泵 1", "string"),
        ("text", "Text", "long\ntext", "string"),
        ("id", "UUID", uuid_text, "string"),
        ("when", "DateTime", t0 - 1, "int"),
    ]
    plan = {
        "devices": {"tahu-types-1": [metric(n, k, v, t0) for n, k, v, _ in values]},
        # Then the other end of each integer range, as data.
        "data": [
            {
                "device": "tahu-types-1",
                "timestamp": t0 + 1,
                "metrics": [
                    metric("i8", "Int8", 127),
                    metric("i32", "Int32", 2147483647),
                    metric("i64", "Int64", -1),
                    metric("u32", "UInt32", 0),
                    metric("flag", "Boolean", True),
                ],
            }
        ],
        "afterDone": "hold",
    }
    async with (
        sparkplug_platform(tmp_path, shared_mosquitto.port) as env,
        tahu_node(scenario(env, **plan)) as node,
    ):
        await wait_latest(env, "tahu-types-1", i64=-1, flag=True)
        model = (
            await env.api.get("/api/v1/thing-models/spb-tahu-types-1", params={"tenant": "acme"})
        ).json()
        assert {p["id"]: p["type"] for p in model["properties"]} == {
            n: kind for n, _, _, kind in values
        }
        expected = {n: v for n, _, v, _ in values}
        expected.update(i8=127, i32=2147483647, i64=-1, u32=0, flag=True)
        assert await latest(env, "tahu-types-1") == expected
        assert await series(env, "tahu-types-1", "i8") == [(t0, -128), (t0 + 1, 127)]
        assert await series(env, "tahu-types-1", "u32") == [(t0, 4294967295), (t0 + 1, 0)]
        assert await dead_letters(env) == []
        assert node.of("ncmd") == []


async def test_tahu_deaths_mark_devices_offline(
    tmp_path: Path, shared_mosquitto: MosquittoProcess
) -> None:
    t0 = now_ms() - 60_000
    plan = {
        "devices": {"c-1": pump_birth(t0), "tahu-sensor-1": sensor_birth(t0)},
        "deviceDeaths": ["tahu-sensor-1"],
        "afterDone": "hold",
    }
    async with sparkplug_platform(tmp_path, shared_mosquitto.port) as env:
        async with tahu_node(scenario(env, **plan)) as node:
            # DDEATH: that device only.
            await wait_states(env, DeviceState.OFFLINE, "tahu-sensor-1")
            await wait_states(env, DeviceState.ONLINE, "gw-1", "c-1")
            assert (await node.published_count(4))[-1] == ("DDEATH", "tahu-sensor-1", 3)
            # The process dies: its connection ends without DISCONNECT, the broker publishes
            # Tahu's Will (NDEATH, bdSeq 0 like its NBIRTH), and the node and its devices go.
            await node.kill()
            await wait_states(env, DeviceState.OFFLINE, "gw-1", "c-1")
        assert state_of(env, "tahu-sensor-1") is DeviceState.OFFLINE
        assert state_of(env, "c-2") is DeviceState.PROVISIONED
        transitions = (await env.api.get("/api/v1/devices/c-1/transitions")).json()
        assert "NDEATH" in str(transitions[0])
        # The Will was the current session's: accepted, no stale NDEATH, no rebirth request.
        assert await dead_letters(env) == []
        assert node.of("ncmd") == []


async def test_a_platform_write_reaches_the_tahu_node_as_dcmd(
    tmp_path: Path, shared_mosquitto: MosquittoProcess
) -> None:
    t0 = now_ms() - 60_000
    valve = [
        metric("setpoint", "Float", 2.5, t0),
        metric("mode", "Int32", 1, t0),
        metric("enabled", "Boolean", False, t0),
    ]
    plan = {
        "devices": {"tahu-valve-1": valve},
        # A device that applied a command reports the new values as data.
        "applyCommands": True,
        "until": {"dcmd": 3},
        "afterDone": "disconnect",
    }
    async with (
        sparkplug_platform(tmp_path, shared_mosquitto.port) as env,
        tahu_node(scenario(env, **plan)) as node,
    ):
        await wait_latest(env, "tahu-valve-1", setpoint=2.5, mode=1)
        write = "/api/v1/devices/tahu-valve-1/commands/write"
        answer = await env.api.post(write, json={"params": {"setpoint": 4.5}})
        assert answer.status_code == 200, answer.text
        result = answer.json()["result"]
        assert result["sent"] is True
        assert result["confirmed"] is False
        assert result["topic"] == "spBv1.0/p1/DCMD/gw-1/tahu-valve-1"
        assert result["metrics"] == {"setpoint": "FLOAT"}
        await eventually(lambda: node.of("dcmd"))
        await wait_latest(env, "tahu-valve-1", setpoint=4.5)

        # One property per write; an Int32 and a Boolean next.
        for params in ({"mode": -3}, {"enabled": True}):
            answer = await env.api.post(write, json={"params": params})
            assert answer.status_code == 200, answer.text
        # The third DCMD ends the scenario: Tahu publishes its NDEATH and disconnects.
        assert await node.exited() == 0, node.report()

        # Tahu decoded what the platform sent: names (its birth gave no aliases), datatypes
        # and values.
        commands = node.of("dcmd")
        assert {e["device"] for e in commands} == {"tahu-valve-1"}
        assert [e["metrics"] for e in commands] == [
            [{"name": "setpoint", "alias": None, "type": "Float", "value": 4.5}],
            [{"name": "mode", "alias": None, "type": "Int32", "value": -3}],
            [{"name": "enabled", "alias": None, "type": "Boolean", "value": True}],
        ]
        assert node.published()[-3:] == [
            ("DDATA", "tahu-valve-1", 2),
            ("DDATA", "tahu-valve-1", 3),
            ("DDATA", "tahu-valve-1", 4),
        ]
        # The values it reported back are stored; its NDEATH took it offline afterwards.
        await wait_latest(env, "tahu-valve-1", setpoint=4.5, mode=-3, enabled=True)
        await wait_states(env, DeviceState.OFFLINE, "gw-1", "tahu-valve-1")
        assert [v for _, v in await series(env, "tahu-valve-1", "mode")] == [1, -3]
        assert counter(env, "tiangong_sparkplug_commands") == 3
        assert await dead_letters(env) == []


async def test_a_tahu_node_restarted_without_births_is_asked_to_rebirth(
    tmp_path: Path, shared_mosquitto: MosquittoProcess
) -> None:
    t0 = now_ms() - 60_000
    first = {
        "devices": {"tahu-sensor-1": sensor_birth(t0)},
        "data": [
            {
                "device": "tahu-sensor-1",
                "timestamp": t0 + 1000,
                "metrics": [metric("count", "Int32", 8)],
            }
        ],
    }
    async with sparkplug_platform(tmp_path, shared_mosquitto.port) as env:
        async with tahu_node(scenario(env, **first)) as node:
            # Done at once: Tahu publishes its NDEATH and disconnects.
            assert await node.exited() == 0, node.report()
        await wait_states(env, DeviceState.OFFLINE, "gw-1", "tahu-sensor-1")
        assert await series(env, "tahu-sensor-1", "count") == [(t0, 7), (t0 + 1000, 8)]

        # Restarted, the node skips its births and sends data: the host cannot use it and
        # asks for a rebirth; Tahu answers with births carrying its current values.
        again = {
            "devices": {"tahu-sensor-1": sensor_birth(t0)},
            "births": False,
            "data": [
                {
                    "device": "tahu-sensor-1",
                    "timestamp": t0 + 2000,
                    "metrics": [metric("count", "Int32", 9)],
                }
            ],
            "dataAfterRebirth": [
                {
                    "device": "tahu-sensor-1",
                    "timestamp": t0 + 3000,
                    "metrics": [metric("count", "Int32", 10)],
                }
            ],
            "until": {"rebirths": 1},
            "afterDone": "hold",
        }
        async with tahu_node(scenario(env, **again)) as node:
            await wait_latest(env, "tahu-sensor-1", count=10)
            await wait_states(env, DeviceState.ONLINE, "gw-1", "tahu-sensor-1")
            assert await node.published_count(4) == [
                ("DDATA", "tahu-sensor-1", 0),
                ("NBIRTH", None, 0),
                ("DBIRTH", "tahu-sensor-1", 1),
                ("DDATA", "tahu-sensor-1", 2),
            ]
            assert [e["metrics"] for e in node.of("ncmd")] == [
                [{"name": REBIRTH, "alias": None, "type": "Boolean", "value": True}]
            ]
        # The refused value came back with the DBIRTH, at the time it was sampled.
        assert await series(env, "tahu-sensor-1", "count") == [
            (t0, 7),
            (t0 + 1000, 8),
            (t0 + 2000, 9),
            (t0 + 3000, 10),
        ]
        [refused] = await dead_letters(env)
        assert (refused.reason, refused.tenant_id, refused.device_id, refused.points) == (
            "sparkplug_data_before_birth",
            "acme",
            "tahu-sensor-1",
            1,
        )
        assert counter(env, "tiangong_sparkplug_rebirth_requests", reason="data_before_birth") == 1


async def test_tahu_aliases_carry_data_and_commands(
    tmp_path: Path, shared_mosquitto: MosquittoProcess
) -> None:
    t0 = now_ms() - 60_000
    tank = [
        {**metric("level", "Float", 1.5, t0), "alias": 1},
        {**metric("mode", "Int32", 1, t0), "alias": 2},
    ]
    plan = {
        "devices": {"tahu-tank-1": tank},
        # After a birth that gave aliases, data may name metrics by alias alone.
        "data": [
            {
                "device": "tahu-tank-1",
                "timestamp": t0 + 1000,
                "metrics": [
                    {"alias": 1, "type": "Float", "value": 2.25},
                    {"alias": 2, "type": "Int32", "value": 2},
                ],
            }
        ],
        "applyCommands": True,
        "until": {"dcmd": 1},
        "afterDone": "disconnect",
    }
    async with (
        sparkplug_platform(tmp_path, shared_mosquitto.port) as env,
        tahu_node(scenario(env, **plan)) as node,
    ):
        await wait_latest(env, "tahu-tank-1", level=2.25, mode=2)
        assert await series(env, "tahu-tank-1", "level") == [(t0, 1.5), (t0 + 1000, 2.25)]
        answer = await env.api.post(
            "/api/v1/devices/tahu-tank-1/commands/write", json={"params": {"mode": 5}}
        )
        assert answer.status_code == 200, answer.text
        assert await node.exited() == 0, node.report()
        # The command names the metric by its alias only, and Tahu's client takes it so.
        [dcmd] = node.of("dcmd")
        assert dcmd["metrics"] == [{"name": None, "alias": 2, "type": "Int32", "value": 5}]
        # The node reported the new value by alias as well.
        await wait_latest(env, "tahu-tank-1", mode=5)
        assert await dead_letters(env) == []


async def test_tahu_compressed_data_is_stored(
    tmp_path: Path, shared_mosquitto: MosquittoProcess
) -> None:
    """Tahu's clients (JavaScript, Java, Python) can deflate or gzip a payload into the body of
    an outer payload with ``uuid`` ``SPBV1.0_COMPRESSED`` and a String metric ``algorithm``.

    The outer payload has no ``seq`` (Tahu numbers the inner one): read as it is, it would be
    a seq gap costing a rebirth and the values sampled meanwhile. The codec inflates it (zlib
    for DEFLATE, gzip for GZIP) and the inner payload is handled as if sent as is.
    """
    t0 = now_ms() - 60_000

    def count(value: int, at: int, compress: str | None) -> dict[str, Any]:
        message = {
            "device": "tahu-sensor-1",
            "timestamp": at,
            "metrics": [metric("count", "Int32", value)],
        }
        return message | ({"compress": compress} if compress else {})

    plan = {
        "devices": {"tahu-sensor-1": sensor_birth(t0)},
        "data": [
            count(8, t0 + 1000, "DEFLATE"),
            count(9, t0 + 2000, "GZIP"),
            count(10, t0 + 3000, None),
        ],
        "afterDone": "hold",
    }
    async with (
        sparkplug_platform(tmp_path, shared_mosquitto.port) as env,
        tahu_node(scenario(env, **plan)) as node,
    ):
        await wait_latest(env, "tahu-sensor-1", count=10)
        assert await dead_letters(env) == []
        assert await series(env, "tahu-sensor-1", "count") == [
            (t0, 7),
            (t0 + 1000, 8),
            (t0 + 2000, 9),
            (t0 + 3000, 10),
        ]
        assert node.of("ncmd") == []
