"""Per-source limits of an identifier node: UDP, TCP and REST, on real sockets.

Each client binds its own loopback address (127.0.0.x), as distinct machines would be. The
rate is set to refill almost nothing during a test (0.01/s) and the burst to 20, so outcomes are
counts, not timings.
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tiangong.identity.client import DEFAULT_RESOLUTION_FLAGS, HandleClient
from tiangong.identity.handle import codec
from tiangong.identity.handle.messages import ErrorResponse, ResolutionRequest
from tiangong.identity.handle.protocol import OpCode, ResponseCode
from tiangong.identity.handle.values import HandleValue
from tiangong.identity.node.runner import NodeOptions, RunningNode, running_node
from tiangong.identity.node.server import NodeServer
from tiangong.identity.node.service import NodeRole

PREFIX = "88.100.1"
HANDLE = f"{PREFIX}/PUMP-1"
BURST = 20


def enterprise_options(tmp_path: Path, **extra: Any) -> NodeOptions:
    """An enterprise node homed for ``PREFIX`` on free ports, with ``extra`` options."""
    return NodeOptions(
        NodeRole.ENTERPRISE,
        prefix=PREFIX,
        port=0,
        admin_secret=b"a-secret-for-the-test",
        data_dir=tmp_path / "node",
        **extra,
    )


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[RunningNode]:
    options = enterprise_options(
        tmp_path,
        http_port=0,
        rate_limit=0.01,
        burst=BURST,
        rate_exempt=frozenset({"127.0.0.9"}),
    )
    async with running_node(options) as running:
        assert running.node is not None
        await running.node.store.put_values(
            HANDLE, [HandleValue(index=1, type="URL", data=b"https://example.test/pump-1")]
        )
        yield running


def request() -> bytes:
    body = ResolutionRequest(HANDLE, (), ())
    return codec.encode_message(
        HandleClient().message(OpCode.RESOLUTION, body, flags=DEFAULT_RESOLUTION_FLAGS)
    )


async def udp_exchange(source: str, port: int, count: int, answers: int) -> Counter[ResponseCode]:
    """Send ``count`` resolutions from ``source``; collect the first ``answers`` replies."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    sock.setblocking(False)
    try:
        for _ in range(count):
            await loop.sock_sendto(sock, request(), ("127.0.0.1", port))
        codes: Counter[ResponseCode] = Counter()
        async with asyncio.timeout(10):
            while sum(codes.values()) < answers:
                data = await loop.sock_recv(sock, 65536)
                codes[codec.decode_message(data).header.response] += 1
        return codes
    finally:
        sock.close()


async def test_udp_source_over_its_rate_is_dropped_or_told_busy(node: RunningNode) -> None:
    port = node.server.port
    stats = node.server.stats
    # 40 requests: 20 within the burst; of the 20 refused, every 2nd is answered "busy".
    codes = await udp_exchange("127.0.0.2", port, 40, BURST + 10)
    assert codes == {ResponseCode.SUCCESS: BURST, ResponseCode.SERVER_TOO_BUSY: 10}
    assert stats.rate_limited == 20
    # Another address is served in full, and so is an exempt one beyond the burst.
    assert await udp_exchange("127.0.0.3", port, 5, 5) == {ResponseCode.SUCCESS: 5}
    assert await udp_exchange("127.0.0.9", port, 50, 50) == {ResponseCode.SUCCESS: 50}
    assert stats.rate_limited == 20


async def test_tcp_requests_over_the_rate_get_server_too_busy(node: RunningNode) -> None:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", node.server.port, local_addr=("127.0.0.4", 0)
    )
    try:
        writer.write(request() * 30)
        await writer.drain()
        stream = codec.TcpMessageReader()
        answers = []
        async with asyncio.timeout(10):
            while len(answers) < 30:
                chunk = await reader.read(65536)
                assert chunk, "the node hung up"
                answers += stream.feed(chunk)
    finally:
        writer.close()
    codes = Counter(answer.header.response for answer in answers)
    assert codes == {ResponseCode.SUCCESS: BURST, ResponseCode.SERVER_TOO_BUSY: 10}
    busy = answers[-1].body
    assert isinstance(busy, ErrorResponse)
    assert "rate limited" in busy.message
    assert node.server.stats.rate_limited == 10


async def test_rest_forwarded_for_does_not_make_a_new_source(node: RunningNode) -> None:
    """A client on 127.0.0.1 naming another address in each X-Forwarded-For is one source."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{node.server.http_port}") as client:
        codes = [
            (
                await client.get(
                    f"/api/handles/{HANDLE}", headers={"X-Forwarded-For": f"203.0.113.{n}"}
                )
            ).status_code
            for n in range(BURST + 5)
        ]
    assert codes == [200] * BURST + [429] * 5


async def test_rest_source_over_its_rate_gets_429(node: RunningNode) -> None:
    base = f"http://127.0.0.1:{node.server.http_port}"
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.7")
    async with httpx.AsyncClient(base_url=base, transport=transport) as client:
        codes = [(await client.get(f"/api/handles/{HANDLE}")).status_code for _ in range(25)]
        refused = await client.get(f"/api/handles/{HANDLE}")
    assert codes == [200] * BURST + [429] * 5
    assert refused.headers["Retry-After"] == "1"
    assert refused.json()["responseCode"] == int(ResponseCode.SERVER_TOO_BUSY)
    # The same address is limited over UDP too: one budget per source.
    codes_udp = await udp_exchange("127.0.0.7", node.server.port, 2, 1)
    assert codes_udp == {ResponseCode.SERVER_TOO_BUSY: 1}
    async with httpx.AsyncClient(
        base_url=base, transport=httpx.AsyncHTTPTransport(local_address="127.0.0.8")
    ) as other:
        assert (await other.get(f"/api/handles/{HANDLE}")).status_code == 200


async def test_tcp_connections_are_capped_per_source(tmp_path: Path, node: RunningNode) -> None:
    assert node.node is not None
    async with NodeServer(node.node, port=0, max_connections_per_source=2) as server:
        held = [
            await asyncio.open_connection("127.0.0.1", server.port, local_addr=("127.0.0.5", 0))
            for _ in range(2)
        ]
        async with asyncio.timeout(10):
            while server.sources.held("127.0.0.5") < 2:
                await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, local_addr=("127.0.0.5", 0)
        )
        async with asyncio.timeout(10):
            assert await reader.read() == b""  # closed at once
        writer.close()
        assert server.stats.connections_refused == 1
        # Another address still connects and is answered.
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, local_addr=("127.0.0.6", 0)
        )
        writer.write(request())
        async with asyncio.timeout(10):
            [answer] = codec.TcpMessageReader().feed(await reader.read(65536))
        assert answer.header.response is ResponseCode.SUCCESS
        writer.close()
        for _, w in held:
            w.close()
