"""Supply-chain trace across real in-process nodes: cycles, missing, unreachable, limits.

``running_hierarchy`` (root 88 → secondary 88.100 → enterprises 88.100.1 and 88.100.2, each a
real node on a free loopback port) is shared with the platform's identifier tests.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from tests.servers import free_port
from tiangong.identity.auth import AdminIdentity
from tiangong.identity.client import HandleClient, ServerAddress
from tiangong.identity.handle.messages import ValuesRequest
from tiangong.identity.handle.protocol import OpCode, OpFlag, ResponseCode
from tiangong.identity.handle.values import HS_SITE, HandleValue, ValueReference, prefix_handle
from tiangong.identity.node.runner import NodeOptions, RunningNode, own_site, running_node
from tiangong.identity.node.service import NodeRole, site_value
from tiangong.identity.resolver import Resolver
from tiangong.identity.trace import (
    COMPONENT,
    TraceStatus,
    references,
    render_trace,
    trace,
)


@dataclass
class Node:
    running: RunningNode
    prefix: str
    secret: bytes

    @property
    def address(self) -> ServerAddress:
        return self.running.address

    @property
    def admin(self) -> AdminIdentity:
        return AdminIdentity(ValueReference(prefix_handle(self.prefix), 300), secret=self.secret)


@dataclass
class Hierarchy:
    root: Node
    secondary: Node
    enterprise: Node
    supplier: Node


def node_options(
    tmp_path: Path, role: NodeRole, prefix: str, parent: Node | None, port: int = 0
) -> NodeOptions:
    return NodeOptions(
        role=role,
        prefix=prefix,
        port=port or free_port(),
        admin_secret=secrets.token_urlsafe(16).encode(),
        data_dir=tmp_path / "identity" / prefix,
        parents=[parent.address] if parent else [],
        parent_admin=parent.admin.reference if parent else None,
        parent_secret=parent.secret if parent else None,
    )


@contextlib.asynccontextmanager
async def running_hierarchy(tmp_path: Path) -> AsyncIterator[Hierarchy]:
    """Root 88, secondary 88.100, enterprises 88.100.1 and 88.100.2, in this process."""
    async with contextlib.AsyncExitStack() as stack:
        nodes: list[Node] = []
        parent: Node | None = None
        for role, prefix in (
            (NodeRole.ROOT, "88"),
            (NodeRole.SECONDARY, "88.100"),
            (NodeRole.ENTERPRISE, "88.100.1"),
            (NodeRole.ENTERPRISE, "88.100.2"),
        ):
            options = node_options(tmp_path, role, prefix, parent)
            running = await stack.enter_async_context(running_node(options))
            assert options.admin_secret is not None
            nodes.append(Node(running, prefix, options.admin_secret))
            if role is not NodeRole.ENTERPRISE:
                parent = nodes[-1]
        yield Hierarchy(*nodes)


async def write(node: Node, handle: str, *values: HandleValue) -> None:
    client = HandleClient(identity=node.admin)
    request = client.message(OpCode.CREATE_HANDLE, ValuesRequest(handle, values), flags=OpFlag.OVRW)
    answer = await client.send(ServerAddress(node.address.host, node.address.port, "tcp"), request)
    assert answer.header.response is ResponseCode.SUCCESS, answer


def component(index: int, identifier: str) -> HandleValue:
    return HandleValue(
        index=index,
        type=COMPONENT,
        data=identifier.encode(),
        references=(ValueReference(identifier, 1),),
    )


def text(index: int, type_: str, data: str) -> HandleValue:
    return HandleValue(index=index, type=type_, data=data.encode())


async def test_trace_marks_cycles_repeats_missing_and_unreachable(tmp_path: Path) -> None:
    async with running_hierarchy(tmp_path) as h:
        # 88.100.9 is delegated, but its node is gone: a dead port in its HS_SITE.
        dead = own_site("127.0.0.1", free_port(), None)
        await write(h.secondary, prefix_handle("88.100.9"), site_value(dead, type_=HS_SITE))
        await write(
            h.enterprise,
            "88.100.1/BATCH-1",
            text(8, "TG.KIND", "batch"),
            component(20, "88.100.2/LOT-MOTOR-1"),
            component(21, "88.100.2/LOT-BEARING-1"),
            component(22, "88.100.1/MISSING"),
            component(23, "88.100.9/GONE"),
            component(24, "88.100.1/BATCH-1"),  # itself
        )
        await write(
            h.supplier,
            "88.100.2/LOT-MOTOR-1",
            text(7, "TG.NAME", "servo motor"),
            component(20, "88.100.2/LOT-BEARING-1"),
            component(21, "88.100.1/BATCH-1"),  # back to the product: a cycle
        )
        await write(h.supplier, "88.100.2/LOT-BEARING-1", text(7, "TG.NAME", "bearing 6204"))

        resolver = Resolver([h.root.address], client=HandleClient(timeout=1.0))
        tree = await trace(resolver, "88.100.1/BATCH-1")

        assert tree.status is TraceStatus.FOUND
        kids = {c.identifier: c for c in tree.children}
        assert list(kids) == [
            "88.100.2/LOT-MOTOR-1",
            "88.100.2/LOT-BEARING-1",
            "88.100.1/MISSING",
            "88.100.9/GONE",
            "88.100.1/BATCH-1",
        ]
        assert all(c.via == COMPONENT for c in tree.children)
        motor = kids["88.100.2/LOT-MOTOR-1"]
        assert motor.status is TraceStatus.FOUND
        assert [(c.identifier, c.status) for c in motor.children] == [
            ("88.100.2/LOT-BEARING-1", TraceStatus.REPEATED),
            ("88.100.1/BATCH-1", TraceStatus.CYCLE),
        ]
        assert kids["88.100.2/LOT-BEARING-1"].status is TraceStatus.FOUND
        missing = kids["88.100.1/MISSING"]
        assert missing.status is TraceStatus.NOT_FOUND
        assert missing.response_code == ResponseCode.HANDLE_NOT_FOUND
        gone = kids["88.100.9/GONE"]
        assert gone.status is TraceStatus.ERROR
        assert gone.response_code is not None
        assert gone.detail
        assert kids["88.100.1/BATCH-1"].status is TraceStatus.CYCLE

        console = Console(record=True, width=200)
        console.print(render_trace(tree))
        drawn = console.export_text()
        for mark in ("✗ not found (100 HANDLE_NOT_FOUND)", "⚠ error", "↺ cycle", "= repeated"):
            assert mark in drawn
        assert "name servo motor" in drawn
        data = tree.to_json()
        assert data["children"][2]["status"] == "not_found"
        assert data["children"][2]["responseCode"] == 100


async def test_a_missing_root_and_the_limits(tmp_path: Path) -> None:
    async with running_hierarchy(tmp_path) as h:
        resolver = Resolver([h.root.address], client=HandleClient(timeout=1.0))
        missing = await trace(resolver, "88.100.1/NOTHING")
        assert missing.status is TraceStatus.NOT_FOUND
        assert missing.children == []
        # A chain A0 -> A1 -> ... -> A5 across both enterprises.
        chain = [f"88.100.{1 + n % 2}/A{n}" for n in range(6)]
        for n, handle in enumerate(chain):
            node = h.enterprise if handle.startswith("88.100.1/") else h.supplier
            values = [component(20, chain[n + 1])] if n + 1 < len(chain) else []
            await write(node, handle, text(8, "TG.KIND", "lot"), *values)
        deep = await trace(resolver, chain[0], max_depth=2)
        depths = [n.identifier for n in deep.walk() if n.status is TraceStatus.FOUND]
        assert depths == chain[:3]
        assert deep.find(chain[3]) is not None
        assert deep.find(chain[3]).status is TraceStatus.TRUNCATED  # type: ignore[union-attr]
        few = await trace(resolver, chain[0], max_nodes=2)
        assert [n.status for n in few.walk()] == [
            TraceStatus.FOUND,
            TraceStatus.FOUND,
            TraceStatus.TRUNCATED,
        ]
        full = await trace(resolver, chain[0])
        assert [n.identifier for n in full.walk()] == chain


async def test_an_unreachable_root_is_an_error_not_a_crash() -> None:
    resolver = Resolver([ServerAddress("127.0.0.1", free_port())], client=HandleClient(timeout=0.3))
    tree = await trace(resolver, "88.100.1/BATCH-1")
    assert tree.status is TraceStatus.ERROR
    assert tree.detail


def test_references_skip_admin_machinery_and_duplicates() -> None:
    from tiangong.identity.handle.values import HandleRecord  # noqa: PLC0415

    record = HandleRecord(
        "88.100.1/B",
        (
            HandleValue(100, "HS_ADMIN", b"x", references=(ValueReference("0.NA/88.100.1", 300),)),
            component(20, "88.100.2/L1"),
            HandleValue(
                10,
                "TG.LINE",
                b"88.100.1/line-1",
                references=(ValueReference("88.100.1/line-1", 1),),
            ),
            HandleValue(21, COMPONENT, b"88.100.2/l1"),  # the same, other case
            HandleValue(30, "TG.NOTE", b"see", references=(ValueReference("0.NA/88", 1),)),
        ),
    )
    assert references(record) == [
        ("88.100.1/line-1", "TG.LINE"),
        ("88.100.2/L1", COMPONENT),
    ]
