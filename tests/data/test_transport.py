"""Both report transports against the same contract: a real nats-server, and the SQLite outbox."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.data.conftest import NatsServerProcess
from tests.servers import free_port
from tiangong.data.errors import TransportError
from tiangong.data.transport import (
    Delivery,
    JetStreamTransport,
    OutboxTransport,
    ReportTransport,
    destination_for,
    parse_destination,
    subject_for,
)

TransportFactory = Callable[..., ReportTransport]


@pytest.fixture(params=["jetstream", "outbox"])
def make_transport(request: pytest.FixtureRequest, tmp_path: Path) -> TransportFactory:
    """A factory of transports on one shared medium (one server, or one outbox file)."""
    if request.param == "jetstream":
        server: NatsServerProcess = request.getfixturevalue("shared_nats_server")

        def jetstream(**options: float) -> ReportTransport:
            return JetStreamTransport(servers=server.url, connect_timeout=10, **options)

        return jetstream

    def outbox(**options: float) -> ReportTransport:
        return OutboxTransport(path=tmp_path / "outbox", poll_interval=0.05, **options)

    return outbox


def fresh_destination() -> str:
    return destination_for("regional", f"t{uuid.uuid4().hex[:10]}")


async def take(
    transport: ReportTransport, destination: str, n: int, *, durable: str = "c", timeout: float = 10
) -> list[Delivery]:
    """The next ``n`` deliveries (unsettled: the caller settles them)."""
    out: list[Delivery] = []
    async with asyncio.timeout(timeout):
        stream = transport.deliveries(destination, durable=durable)
        try:
            async for delivery in stream:
                out.append(delivery)
                if len(out) == n:
                    break
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
    return out


async def nothing_more(
    transport: ReportTransport, destination: str, *, durable: str = "c", wait: float = 1.0
) -> None:
    try:
        extra = await take(transport, destination, 1, durable=durable, timeout=wait)
    except TimeoutError:
        return
    pytest.fail(f"unexpected delivery {extra[0].message_id}")


async def drained(transport: ReportTransport, destination: str, *, durable: str = "c") -> None:
    """Wait until every message is settled (a JetStream ack reaches the server a bit later)."""
    async with asyncio.timeout(5):
        while await transport.backlog(destination, durable=durable):
            await asyncio.sleep(0.05)


def test_destinations() -> None:
    assert destination_for("industry", "C38") == "industry.C38"
    assert subject_for("national.cn") == "tg.reports.national.cn"
    assert parse_destination("regional.east-1")[1] == "east-1"
    for bad in ("regional", "enterprise.x", "nowhere.x", "regional.a.b", "regional.a b"):
        with pytest.raises(TransportError):
            parse_destination(bad)


async def test_publish_ack_and_dedup(make_transport: TransportFactory) -> None:
    dest = fresh_destination()
    async with make_transport() as transport:
        for i in range(3):
            await transport.publish(dest, f"r{i}".encode(), message_id=f"r{i}@1")
        await transport.publish(dest, b"r1 again", message_id="r1@1")  # a retried publish
        assert await transport.backlog(dest, durable="c") == 3
        got = await take(transport, dest, 3)
        assert [d.data for d in got] == [b"r0", b"r1", b"r2"]
        assert [d.message_id for d in got] == ["r0@1", "r1@1", "r2@1"]
        assert all(d.attempt == 1 for d in got)
        for d in got:
            await d.ack()
        await nothing_more(transport, dest)
        await drained(transport, dest)


async def test_nak_redelivers_and_term_never(make_transport: TransportFactory) -> None:
    dest = fresh_destination()
    async with make_transport() as transport:
        await transport.publish(dest, b"again", message_id="a@1")
        await transport.publish(dest, b"poison", message_id="p@1")
        first = await take(transport, dest, 2)
        await first[0].nak(0.2)
        await first[1].term()
        (again,) = await take(transport, dest, 1)
        assert (again.data, again.attempt) == (b"again", 2)
        await again.ack()
        await nothing_more(transport, dest)


async def test_unacked_after_crash_comes_again(make_transport: TransportFactory) -> None:
    dest = fresh_destination()
    async with make_transport(ack_wait=1.0) as transport:
        await transport.publish(dest, b"x", message_id="x@1")
        await take(transport, dest, 1)  # handed out, then the consumer "crashes"
    async with make_transport(ack_wait=1.0) as transport:
        (again,) = await take(transport, dest, 1)
        assert again.data == b"x"
        await again.ack()


async def test_durable_consumer_resumes(make_transport: TransportFactory) -> None:
    dest = fresh_destination()
    # Deliveries handed out but not acked when the consumer stops come again after ack_wait.
    async with make_transport(ack_wait=1.0) as transport:
        for i in range(5):
            await transport.publish(dest, f"{i}".encode(), message_id=f"m{i}")
        for d in await take(transport, dest, 2):
            await d.ack()
        # Another center's consumer of its own has its own position.
        assert await transport.backlog(dest, durable="other") == 5
    async with make_transport(ack_wait=1.0) as transport:
        await transport.publish(dest, b"5", message_id="m5")
        await transport.publish(dest, b"0 again", message_id="m0")
        rest = await take(transport, dest, 4)
        # Redeliveries may come before or after the new message.
        assert sorted(d.data for d in rest) == [b"2", b"3", b"4", b"5"]
        for d in rest:
            await d.ack()
        await drained(transport, dest)


async def test_max_ack_pending_bounds_what_is_out(make_transport: TransportFactory) -> None:
    dest = fresh_destination()
    async with make_transport(max_ack_pending=3) as transport:
        for i in range(6):
            await transport.publish(dest, b"%d" % i, message_id=f"m{i}")
        stream = transport.deliveries(dest, durable="c")
        out = [await asyncio.wait_for(anext(stream), 10) for _ in range(3)]
        fourth = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.7)
        assert not fourth.done(), "a 4th delivery while 3 are unacked"
        for d in out:
            await d.ack()
        later = [await asyncio.wait_for(fourth, 10)]
        later += [await asyncio.wait_for(anext(stream), 10) for _ in range(2)]
        assert [d.data for d in later] == [b"3", b"4", b"5"]
        for d in later:
            await d.ack()
        await stream.aclose()  # type: ignore[attr-defined]
        await drained(transport, dest)


async def test_jetstream_survives_server_crash(nats_server: NatsServerProcess) -> None:
    """Acked publishes survive a SIGKILL; a publish while the server is down waits for it."""
    dest = fresh_destination()
    async with JetStreamTransport(servers=nats_server.url, publish_timeout=20) as transport:
        await transport.publish(dest, b"before", message_id="b")
        nats_server.kill()
        publishing = asyncio.create_task(transport.publish(dest, b"during", message_id="d"))
        await asyncio.sleep(0.5)
        assert not publishing.done()
        await asyncio.to_thread(nats_server.start)
        await publishing
        got = await take(transport, dest, 2, timeout=15)
        assert sorted(d.data for d in got) == [b"before", b"during"]
        for d in got:
            await d.ack()
        await drained(transport, dest)


async def test_jetstream_unreachable_is_a_transport_error(tmp_path: Path) -> None:
    with pytest.raises(TransportError):
        async with JetStreamTransport(servers=f"nats://127.0.0.1:{free_port()}", connect_timeout=1):
            pass
