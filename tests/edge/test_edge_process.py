"""``tiangong edge`` as a process: killed with SIGKILL and started again, it loses nothing.

The gateway runs as its own process reading a real Modbus device while the broker is down, so
every point waits in its buffer. It is killed with SIGKILL (no chance to flush or say goodbye);
the test reads what the buffer file held at that moment, starts the broker and the gateway again,
and checks that every one of those points reaches the platform's store.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.edge.conftest import ModbusPeer
from tests.edge.test_gateway import COUNT, TEMP, gateway_config, register_gateway
from tests.platform.conftest import running_platform
from tests.servers import MosquittoProcess
from tiangong.platform.tsdb.base import Aggregate, SeriesKey
from tiangong.sim.edge_plan import write_edge_toml

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

END_MS = 4_102_444_800_000


def tiangong() -> list[str]:
    script = Path(sys.executable).parent / "tiangong"
    return [str(script)] if script.exists() else [sys.executable, "-m", "tiangong"]


def buffered_points(path: Path) -> set[tuple[str, str, int]]:
    """(device, property, ts) of every point in a gateway's buffer file."""
    points: set[tuple[str, str, int]] = set()
    with sqlite3.connect(path) as db:
        try:
            rows = db.execute("SELECT channel, payload FROM frames").fetchall()
        except sqlite3.OperationalError:  # the gateway has not created its table yet
            return points
    for channel, payload in rows:
        if channel != "telemetry":
            continue
        for device, columns in orjson.loads(payload)["devices"].items():
            for prop, values in columns["values"].items():
                for ts, value in zip(columns["ts"], values, strict=True):
                    if value is not None:
                        points.add((device, prop, ts))
    return points


async def test_gateway_killed_and_restarted_loses_no_buffered_point(
    tmp_path: Path, modbus_peer: ModbusPeer
) -> None:
    await modbus_peer.set(TEMP, 21.5)
    await modbus_peer.set(COUNT, 5)
    broker = MosquittoProcess(workdir=tmp_path / "broker")
    await asyncio.to_thread(broker.start)
    async with running_platform(tmp_path, mqtt_port=broker.port) as env:
        # The platform's session lives on at the broker (persistence) while the broker is
        # down: what the gateway delivers later is queued for it even before it reconnects.
        await asyncio.to_thread(broker.stop)
        secret = await register_gateway(env)
        config = gateway_config(tmp_path, modbus_peer.port, broker.port)
        config = config.model_copy(
            update={"uplink": config.uplink.model_copy(update={"password_env": "GW_SECRET"})}
        )
        path = tmp_path / "edge.toml"
        write_edge_toml(config, path)
        buffer_file = config.gateway.data_dir / "gw-edge-buffer.sqlite"
        environment = {**os.environ, "GW_SECRET": secret}

        first = await asyncio.create_subprocess_exec(
            *tiangong(),
            "edge",
            "--config",
            str(path),
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:

            async def buffering() -> bool:
                if not buffer_file.exists():
                    return False
                return len(await asyncio.to_thread(buffered_points, buffer_file)) > 300

            await env.wait_for(buffering, timeout=30)
        finally:
            first.send_signal(signal.SIGKILL)
            await first.wait()
        assert first.returncode == -signal.SIGKILL
        waiting = await asyncio.to_thread(buffered_points, buffer_file)
        assert len(waiting) > 300

        await asyncio.to_thread(broker.start)
        log = (tmp_path / "second.log").open("wb")
        second = await asyncio.create_subprocess_exec(
            *tiangong(),
            "edge",
            "--config",
            str(path),
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            store = env.platform.store
            series = sorted({(device, prop) for device, prop, _ in waiting})
            ids = await store.series_ids([SeriesKey("acme", d, p) for d, p in series])

            async def stored() -> set[tuple[str, str, int]]:
                found: set[tuple[str, str, int]] = set()
                for (device, prop), sid in zip(series, ids, strict=True):
                    for ts, _ in await store.query(sid, 0, END_MS, None, Aggregate.LAST):
                        found.add((device, prop, ts))
                return found

            async def all_arrived() -> bool:
                return waiting <= await stored()

            await env.wait_for(all_arrived, timeout=60)
        finally:
            second.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(second.wait(), 20)
            except TimeoutError:
                # Never leave a gateway behind; the assertion below reports the hang.
                second.kill()
                await second.wait()
            finally:
                log.close()
                await asyncio.to_thread(broker.stop)
        assert second.returncode == 0, (tmp_path / "second.log").read_text()
