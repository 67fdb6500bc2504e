"""The identifier hierarchy end to end: four real node processes on loopback.

A national root (prefix 88), a secondary node (88.100) that registers at the root, and two
enterprise nodes (88.100.1, 88.100.2) that register at the secondary, each a ``tiangong idnode``
process with its own store. A resolver in the test walks root → secondary → enterprise by
prefix referrals. Writes go straight to an enterprise node over TCP with challenge-response.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import free_port
from tiangong.identity.auth import AdminIdentity
from tiangong.identity.client import HandleClient, ServerAddress
from tiangong.identity.errors import ResolutionError
from tiangong.identity.handle.messages import ResolutionResponse, ValuesRequest
from tiangong.identity.handle.protocol import OpCode, ResponseCode
from tiangong.identity.handle.values import HandleValue, ValueReference
from tiangong.identity.resolver import Resolver


@dataclass
class NodeProcess:
    prefix: str
    port: int
    secret: bytes
    proc: subprocess.Popen[bytes]

    @property
    def address(self) -> ServerAddress:
        return ServerAddress("127.0.0.1", self.port)

    @property
    def admin(self) -> AdminIdentity:
        return AdminIdentity(ValueReference(f"0.NA/{self.prefix}", 300), secret=self.secret)


def _start(
    tmp_path: Path,
    role: str,
    prefix: str,
    parent: NodeProcess | None = None,
) -> NodeProcess:
    port = free_port()
    secret = secrets.token_urlsafe(16).encode()
    env = dict(os.environ, TIANGONG_ID_ADMIN_SECRET=secret.decode())
    args = [
        sys.executable, "-m", "tiangong", "idnode", "--role", role, "--prefix", prefix,
        "--port", str(port), "--data-dir", str(tmp_path / prefix),
    ]  # fmt: skip
    if parent is not None:
        args += [
            "--parent",
            f"127.0.0.1:{parent.port}",
            "--parent-admin",
            f"300:0.NA/{parent.prefix}",
        ]
        env["TIANGONG_ID_PARENT_SECRET"] = parent.secret.decode()
    with (tmp_path / f"{prefix}.log").open("wb") as log:
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    return NodeProcess(prefix, port, secret, proc)


async def _ready(node: NodeProcess, tmp_path: Path, parent: NodeProcess | None = None) -> None:
    """Wait until the node answers for its prefix handle, and its parent knows it too."""
    client = HandleClient(timeout=0.5)
    async with asyncio.timeout(30):
        for where in [node] if parent is None else [node, parent]:
            while True:
                if node.proc.poll() is not None:
                    log = (tmp_path / f"{node.prefix}.log").read_text(errors="replace")
                    raise AssertionError(f"node {node.prefix} exited:\n{log}")
                try:
                    answer = await client.resolve(where.address, f"0.NA/{node.prefix}")
                    if answer.header.response is ResponseCode.SUCCESS:
                        break
                except (TimeoutError, OSError):
                    pass
                await asyncio.sleep(0.1)


@dataclass
class Hierarchy:
    root: NodeProcess
    secondary: NodeProcess
    enterprise: NodeProcess
    other: NodeProcess


@pytest.fixture(scope="module")
def tmp_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hierarchy")


@pytest.fixture(scope="module")
def processes(tmp_module: Path) -> Iterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    yield started
    for node in started:
        if node.proc.poll() is None:
            node.proc.send_signal(signal.SIGTERM)
    for node in started:
        try:
            node.proc.wait(10)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait(5)


@pytest.fixture
async def hierarchy(tmp_module: Path, processes: list[NodeProcess]) -> Hierarchy:
    if not processes:
        root = _start(tmp_module, "root", "88")
        processes.append(root)
        await _ready(root, tmp_module)
        secondary = _start(tmp_module, "secondary", "88.100", parent=root)
        processes.append(secondary)
        await _ready(secondary, tmp_module, parent=root)
        enterprise = _start(tmp_module, "enterprise", "88.100.1", parent=secondary)
        other = _start(tmp_module, "enterprise", "88.100.2", parent=secondary)
        processes.extend([enterprise, other])
        await asyncio.gather(
            _ready(enterprise, tmp_module, parent=secondary),
            _ready(other, tmp_module, parent=secondary),
        )
    return Hierarchy(*processes)


async def _create(node: NodeProcess, handle: str, *values: HandleValue) -> ResponseCode:
    client = HandleClient(identity=node.admin)
    request = client.message(OpCode.CREATE_HANDLE, ValuesRequest(handle, values))
    answer = await client.send(ServerAddress("127.0.0.1", node.port, "tcp"), request)
    return answer.header.response


def _url(text: str, index: int = 1) -> HandleValue:
    return HandleValue(index=index, type="URL", data=text.encode())


async def test_a_resolver_walks_root_secondary_enterprise(hierarchy: Hierarchy) -> None:
    code = await _create(hierarchy.enterprise, "88.100.1/PUMP-00042", _url("http://plant/pump-42"))
    assert code is ResponseCode.SUCCESS
    resolver = Resolver([hierarchy.root.address])
    record = await resolver.resolve("88.100.1/PUMP-00042")
    assert [(v.type, v.data) for v in record.values if v.type == "URL"] == [
        ("URL", b"http://plant/pump-42")
    ]
    # Root refers to the secondary, the secondary holds the enterprise's site.
    assert resolver.stats.referrals_followed >= 1
    queries = resolver.stats.upstream_queries
    again = await resolver.resolve("88.100.1/PUMP-00042")
    assert again == record
    assert resolver.stats.upstream_queries == queries  # answered from the cache
    # A second handle under the same prefix costs one query: the site is cached.
    await _create(hierarchy.enterprise, "88.100.1/PUMP-00043", _url("http://plant/pump-43"))
    await resolver.resolve("88.100.1/PUMP-00043")
    assert resolver.stats.upstream_queries == queries + 1


async def test_the_other_enterprise_answers_for_its_own_prefix_only(hierarchy: Hierarchy) -> None:
    await _create(hierarchy.other, "88.100.2/VALVE-7", _url("http://other/valve-7"))
    resolver = Resolver([hierarchy.root.address])
    record = await resolver.resolve("88.100.2/VALVE-7")
    assert record.handle == "88.100.2/VALVE-7"
    with pytest.raises(ResolutionError) as missing:
        await resolver.resolve("88.100.2/NOPE")
    assert missing.value.response_code == ResponseCode.HANDLE_NOT_FOUND
    # Asked directly, an enterprise node is not responsible for another's prefix.
    answer = await HandleClient().resolve(hierarchy.enterprise.address, "88.100.2/VALVE-7")
    assert answer.header.response is ResponseCode.SERVER_NOT_RESPONSIBLE
    # Nobody has delegated 88.999: the root says so.
    with pytest.raises(ResolutionError) as unknown:
        await resolver.resolve("88.999.1/X")
    assert unknown.value.response_code in (
        ResponseCode.HANDLE_NOT_FOUND,
        ResponseCode.SERVER_NOT_RESPONSIBLE,
    )


async def test_the_root_refers_and_the_secondary_answers_prefix_handles(
    hierarchy: Hierarchy,
) -> None:
    client = HandleClient()
    at_root = await client.resolve(hierarchy.root.address, "0.NA/88.100.1")
    assert at_root.header.response is ResponseCode.PREFIX_REFERRAL
    at_secondary = await client.resolve(hierarchy.secondary.address, "0.NA/88.100.1")
    assert at_secondary.header.response is ResponseCode.SUCCESS
    assert isinstance(at_secondary.body, ResolutionResponse)
    assert any(v.type == "HS_SITE" for v in at_secondary.body.values)


async def test_writes_need_the_right_admin(hierarchy: Hierarchy) -> None:
    target = ServerAddress("127.0.0.1", hierarchy.enterprise.port, "tcp")
    body = ValuesRequest("88.100.1/INTRUDER", (_url("http://evil"),))
    # Nobody: the node challenges and an anonymous client cannot answer.
    anonymous = HandleClient()
    answer = await anonymous.send(target, anonymous.message(OpCode.CREATE_HANDLE, body))
    assert answer.header.response is ResponseCode.AUTHENTICATION_NEEDED
    # The right identity with the wrong secret.
    wrong = HandleClient(
        identity=AdminIdentity(ValueReference("0.NA/88.100.1", 300), secret=b"guess")
    )
    answer = await wrong.send(target, wrong.message(OpCode.CREATE_HANDLE, body))
    assert answer.header.response is ResponseCode.AUTHENTICATION_FAILED
    # Another enterprise's admin is nobody here.
    neighbour = HandleClient(identity=hierarchy.other.admin)
    answer = await neighbour.send(target, neighbour.message(OpCode.CREATE_HANDLE, body))
    assert answer.header.response is ResponseCode.AUTHENTICATION_FAILED
    # Nothing was created.
    probe = await HandleClient().resolve(hierarchy.enterprise.address, "88.100.1/INTRUDER")
    assert probe.header.response is ResponseCode.HANDLE_NOT_FOUND


async def test_garbage_is_answered_or_dropped_and_the_node_keeps_serving(
    hierarchy: Hierarchy,
) -> None:
    port = hierarchy.enterprise.port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(b"\x00" * 3, ("127.0.0.1", port))
        udp.sendto(b"\x02\x0a" + b"\xff" * 60, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\x02\x0a\x00\x00" + b"\x00" * 12 + b"\x7f\xff\xff\xff")  # absurd length
    await writer.drain()
    async with asyncio.timeout(5):
        await reader.read()  # the node answers with an error and hangs up
    writer.close()
    answer = await HandleClient().resolve(hierarchy.enterprise.address, "0.NA/88.100.1")
    assert answer.header.response is ResponseCode.SUCCESS


async def test_a_dead_mirror_is_routed_around(hierarchy: Hierarchy) -> None:
    dead = ServerAddress("127.0.0.1", free_port())
    resolver = Resolver([dead, hierarchy.root.address], client=HandleClient(timeout=0.5))
    await _create(hierarchy.enterprise, "88.100.1/MIRRORED", _url("http://plant/m"))
    record = await resolver.resolve("88.100.1/MIRRORED")
    assert record.handle == "88.100.1/MIRRORED"
    assert resolver.stats.failovers >= 1
