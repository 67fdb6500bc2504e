"""Shared fixtures: real servers (Mosquitto, PostgreSQL) found or started, and chromium."""

from __future__ import annotations

import asyncio
import contextlib
import io
import sys
import threading
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import psycopg
import pytest

from tests.browser import require_chromium
from tests.servers import MosquittoProcess, postgres_dsn, unavailable

#: Seconds into a test after which the stacks of its pending asyncio tasks are printed, before
#: faulthandler's thread dump (180 s) and pytest-timeout's failure (240 s): a test waiting for
#: ever on an idle event loop shows only ``select`` in a thread dump, its tasks show where.
TASK_DUMP_AFTER = 170.0


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    timer = threading.Timer(TASK_DUMP_AFTER, _dump_pending_tasks, args=(item.nodeid,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _dump_pending_tasks(nodeid: str) -> None:
    out = io.StringIO()
    out.write(f"\n+++ asyncio tasks of {nodeid} pending after {TASK_DUMP_AFTER:.0f} s +++\n")
    # From another thread there is no public view of a loop's tasks: read asyncio's registry
    # (a WeakSet; retried if the loop changes it while it is copied).
    tasks: list[asyncio.Task[object]] = []
    for _ in range(5):
        with contextlib.suppress(RuntimeError):
            tasks = list(getattr(asyncio.tasks, "_all_tasks", ()))
            break
    for task in tasks:
        if not task.done():
            out.write(f"--- {task.get_name()}: {task.get_coro()!r}\n")
            task.print_stack(limit=20, file=out)
    stream = sys.__stderr__ or sys.stderr
    stream.write(out.getvalue())
    stream.flush()


@pytest.fixture
def chromium() -> Path:
    """Debian's chromium (checked before a browser test's stack starts: a miss costs nothing)."""
    return require_chromium()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoProcess]:
    """A Mosquitto broker of this test's own (so the test may stop and restart it)."""
    broker = MosquittoProcess(workdir=tmp_path / "mosquitto")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def _shared_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoProcess]:
    broker = MosquittoProcess(workdir=tmp_path_factory.mktemp("mosquitto-shared"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
async def shared_mosquitto(_shared_broker: MosquittoProcess) -> MosquittoProcess:
    """One Mosquitto broker for the tests that only publish and subscribe.

    Each test gets it without retained messages: a gateway's retained status from one test
    would otherwise reach the next test's platform as a message from an unknown device.
    """
    await clear_retained(_shared_broker.port)
    return _shared_broker


async def clear_retained(port: int, settle: float = 0.3) -> int:
    """Delete every retained message on the broker at ``port``; returns how many there were."""
    from tiangong.network.mqtt import MqttClient, Subscription  # noqa: PLC0415

    topics: set[str] = set()
    # Bounded: a broker that stops answering fails the test here, with this line in the report.
    async with (
        asyncio.timeout(20),
        MqttClient(
            host="127.0.0.1", port=port, client_id=f"clear-{uuid.uuid4().hex[:8]}"
        ) as client,
    ):
        await client.subscribe(Subscription("#", qos=0))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(settle):
                while True:
                    message = await client.next_message()
                    if message.retain:
                        topics.add(message.topic)
        for topic in topics:
            await client.publish(topic, b"", qos=1, retain=True)
    return len(topics)


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database on 127.0.0.1:5432 for one test; dropped afterwards."""
    name = f"tiangong_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(postgres_dsn(), autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL on 127.0.0.1:5432 unreachable: {exc}")
    yield postgres_dsn(name)
    with psycopg.connect(postgres_dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
