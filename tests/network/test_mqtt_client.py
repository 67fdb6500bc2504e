"""The asyncio MQTT client against a real Mosquitto on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess

import pytest

from tests.servers import MosquittoProcess
from tiangong.network.errors import BadCredentialsError, NotAuthorizedError
from tiangong.network.mqtt import MqttClient, ProtocolVersion, Subscription, Will

pytestmark = pytest.mark.mosquitto


async def test_publish_subscribe_manual_ack(shared_mosquitto: MosquittoProcess) -> None:
    port = shared_mosquitto.port
    async with (
        MqttClient(host="127.0.0.1", port=port, client_id="sub-a") as sub,
        MqttClient(host="127.0.0.1", port=port, client_id="pub-a") as pub,
    ):
        await sub.subscribe(Subscription("test/a/#", qos=1))
        for i in range(50):
            await pub.publish(f"test/a/{i}", f"m{i}".encode(), qos=1)
        got = []
        async with asyncio.timeout(5):
            for _ in range(50):
                msg = await sub.next_message()
                got.append(msg.payload)
                assert sub.ack(msg)
        assert got == [f"m{i}".encode() for i in range(50)]


@pytest.mark.parametrize("version", list(ProtocolVersion))
async def test_both_protocol_versions(
    shared_mosquitto: MosquittoProcess, version: ProtocolVersion
) -> None:
    port = shared_mosquitto.port
    async with MqttClient(
        host="127.0.0.1", port=port, client_id=f"v-{version}", version=version
    ) as c:
        await c.subscribe(Subscription(f"test/v/{version}", qos=1))
        await c.publish(f"test/v/{version}", b"hello", qos=1)
        async with asyncio.timeout(5):
            msg = await c.next_message()
        assert msg.payload == b"hello"
        c.ack(msg)


async def test_unacked_messages_are_redelivered_after_reconnect(
    mosquitto: MosquittoProcess,
) -> None:
    port = mosquitto.port
    # Mosquitto 2.0 writes a v5 session to its persistence file only when the client connected
    # with Clean Start = 0 (even with a session expiry); the platform always connects that way.
    async with MqttClient(
        host="127.0.0.1", port=port, client_id="durable", clean_start=False, session_expiry=3600
    ) as sub:
        await sub.subscribe(Subscription("test/r", qos=1))
        async with MqttClient(host="127.0.0.1", port=port, client_id="pub-r") as pub:
            for i in range(10):
                await pub.publish("test/r", str(i).encode(), qos=1)
        async with asyncio.timeout(5):
            first = [await sub.next_message() for _ in range(10)]
        for msg in first[:5]:
            sub.ack(msg)
        # Broker restart: messages 5..9 were never acknowledged and must come back.
        await asyncio.to_thread(mosquitto.restart)
        # QoS 1 is at least once: an acknowledgement still in flight when the broker went down
        # may be lost, so some of 0..4 may come again too; every one of 5..9 must.
        unacked = {str(i).encode() for i in range(5, 10)}
        async with asyncio.timeout(15):
            again = []
            while not unacked <= {m.payload for m in again}:
                msg = await sub.next_message()
                if msg.epoch == first[0].epoch:
                    continue  # leftovers from the old connection are stale
                again.append(msg)
                sub.ack(msg)
        assert {m.payload for m in again} <= {str(i).encode() for i in range(10)}
        assert all(m.dup for m in again)


async def test_publisher_survives_broker_restart(mosquitto: MosquittoProcess) -> None:
    port = mosquitto.port
    async with (
        MqttClient(
            host="127.0.0.1", port=port, client_id="sub-x", clean_start=False, session_expiry=3600
        ) as sub,
        MqttClient(host="127.0.0.1", port=port, client_id="pub-x", session_expiry=3600) as pub,
    ):
        await sub.subscribe(Subscription("test/x", qos=1))

        async def publish_all() -> None:
            for i in range(200):
                await pub.publish("test/x", str(i).encode(), qos=1)
                await asyncio.sleep(0.005)

        task = asyncio.create_task(publish_all())
        await asyncio.sleep(0.3)
        await asyncio.to_thread(mosquitto.restart, 0.5)
        received: set[bytes] = set()
        async with asyncio.timeout(30):
            while len(received) < 200:
                msg = await sub.next_message()
                received.add(msg.payload)
                sub.ack(msg)
        await task
        assert received == {str(i).encode() for i in range(200)}
        assert pub.stats.connects >= 2


async def test_last_will_is_published_when_a_client_vanishes(
    shared_mosquitto: MosquittoProcess,
) -> None:
    port = shared_mosquitto.port
    async with MqttClient(host="127.0.0.1", port=port, client_id="watch") as watcher:
        await watcher.subscribe(Subscription("test/will/+", qos=1))
        dying = MqttClient(
            host="127.0.0.1",
            port=port,
            client_id="dying",
            will=Will(topic="test/will/dying", payload=b"offline", qos=1, retain=False),
        )
        await dying.__aenter__()
        dying._abort()  # the TCP connection breaks without DISCONNECT
        async with asyncio.timeout(5):
            msg = await watcher.next_message()
        assert (msg.topic, msg.payload) == ("test/will/dying", b"offline")
        with contextlib.suppress(Exception):
            await dying.__aexit__(None, None, None)


@pytest.mark.parametrize(
    ("messages", "payload_bytes"),
    [(10, 64 * 1024 * 1024), (100_000, 10_000)],
    ids=["bounded-by-count", "bounded-by-bytes"],
)
async def test_read_backpressure_pauses_the_socket(
    shared_mosquitto: MosquittoProcess, messages: int, payload_bytes: int
) -> None:
    port = shared_mosquitto.port
    async with (
        MqttClient(
            host="127.0.0.1",
            port=port,
            client_id=f"slow-{messages}",
            inbound_queue=messages,
            inbound_bytes=payload_bytes,
        ) as slow,
        MqttClient(host="127.0.0.1", port=port, client_id="fast") as fast,
    ):
        await slow.subscribe(Subscription(f"test/bp/{messages}", qos=0))
        payload = b"x" * 1000
        for _ in range(2000):
            await fast.publish(f"test/bp/{messages}", payload)
        await asyncio.sleep(0.5)
        # The app took nothing: the client stopped reading instead of buffering 2000 messages.
        assert slow.pending_messages() < 500
        assert slow.stats.read_pauses >= 1
        count = 0
        async with asyncio.timeout(10):
            while count < 2000:
                await slow.next_message()
                count += 1
        assert count == 2000


async def test_bad_credentials_raise_on_first_connect(tmp_path) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("")
    await asyncio.to_thread(
        subprocess.run, ["mosquitto_passwd", "-b", str(passwd), "u", "right"], check=True
    )
    broker = MosquittoProcess(
        workdir=tmp_path / "m",
        extra_config=f"allow_anonymous false\npassword_file {passwd}\n",
    )
    broker.start()
    try:
        # Mosquitto answers a wrong password with "not authorized" (0x87), other brokers with
        # "bad user name or password" (0x86); both are refusals a caller can tell apart.
        with pytest.raises((BadCredentialsError, NotAuthorizedError)):
            async with MqttClient(
                host="127.0.0.1", port=broker.port, client_id="x", username="u", password="wrong"
            ):
                pass
        async with MqttClient(
            host="127.0.0.1", port=broker.port, client_id="x", username="u", password="right"
        ) as client:
            assert client.connected
    finally:
        broker.stop()
