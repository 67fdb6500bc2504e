"""The platform publishes its devices and batches as identifiers on the enterprise node.

A real in-process hierarchy (root 88 → secondary 88.100 → enterprise 88.100.1 and supplier
88.100.2) and a real platform; identifiers are checked through a resolver starting at the root.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.identity.test_trace import Node, node_options, running_hierarchy
from tests.platform.conftest import running_platform
from tiangong.identity.client import HandleClient
from tiangong.identity.errors import ResolutionError
from tiangong.identity.handle.protocol import ResponseCode
from tiangong.identity.handle.values import HandleRecord, ValueReference
from tiangong.identity.node.runner import running_node
from tiangong.identity.node.service import NodeRole
from tiangong.identity.resolver import Resolver
from tiangong.identity.trace import COMPONENT, TraceStatus, trace
from tiangong.platform.identifiers import IdentifierPublisher
from tiangong.platform.lifecycle import LifecycleTrigger


def typed(record: HandleRecord) -> dict[str, str]:
    return {v.type: v.data.decode() for v in record.values if not v.type.startswith("HS_")}


async def drained(publisher: IdentifierPublisher, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        await publisher.drained()


def fresh_resolver(node: Node) -> Resolver:
    return Resolver([node.address], client=HandleClient(timeout=1.0))


async def test_devices_get_identifiers_that_follow_the_registry(tmp_path: Path) -> None:
    async with (
        running_hierarchy(tmp_path) as h,
        running_platform(tmp_path, wait_connected=False) as env,
        IdentifierPublisher(
            node=h.enterprise.address,
            identity=h.enterprise.admin,
            prefix="88.100.1",
            registry=env.platform.registry,
            tenant_id="acme",
            platform_url=f"http://127.0.0.1:{env.platform.http_port}/",
            maker="Acme",
        ) as publisher,
    ):
        await drained(publisher)
        assert publisher.stats.published == 6  # acme's devices; "other" has its own prefix
        resolver = fresh_resolver(h.root)
        record = await resolver.resolve("88.100.1/pump-1")
        base = f"http://127.0.0.1:{env.platform.http_port}"
        assert typed(record) == {
            "URL": f"{base}/#/devices/pump-1",
            "TG.RECORD": f"{base}/api/v1/devices/pump-1",
            "TG.MODEL": "pump@v1",
            "TG.MAKER": "Acme",
            "TG.SITE": "acme/p1",
            "TG.STATE": "provisioned",
            "TG.NAME": "pump-1",
            "TG.KIND": "device",
        }
        assert [v.index for v in record.values if v.type.startswith("TG.")] == [2, 3, 4, 5, 6, 7, 8]
        assert typed(await resolver.resolve("88.100.1/old-1"))["TG.STATE"] == "decommissioned"
        with pytest.raises(ResolutionError) as other:
            await resolver.resolve("88.100.1/o-pump")
        assert other.value.response_code == ResponseCode.HANDLE_NOT_FOUND

        # The platform's own record is where TG.RECORD says.
        answer = await env.api.get(typed(record)["TG.RECORD"])
        assert answer.status_code == 200

        # Registration and changes after start are published too; unchanged ones are not.
        registry = env.platform.registry
        await registry.register_device(
            tenant_id="acme",
            site_id="p2",
            device_id="pump-9",
            model_id="pump",
            attributes={"maker": "Shanghai Pumps"},
        )
        await registry.apply_lifecycle("pump-1", LifecycleTrigger.CONNECT, reason="test")
        await registry.rotate_secret("pump-2", "acme")  # nothing in the record changes
        await drained(publisher)
        assert publisher.stats.published == 8
        assert publisher.stats.unchanged >= 1
        resolver = fresh_resolver(h.root)
        new = typed(await resolver.resolve("88.100.1/pump-9"))
        assert new["TG.SITE"] == "acme/p2"
        assert new["TG.MAKER"] == "Shanghai Pumps"
        assert typed(await resolver.resolve("88.100.1/pump-1"))["TG.STATE"] == "online"
        assert publisher.stats.failures == 0


async def test_a_batch_traces_to_the_suppliers_components(tmp_path: Path) -> None:
    async with (
        running_hierarchy(tmp_path) as h,
        running_platform(tmp_path, wait_connected=False) as env,
        IdentifierPublisher(
            node=h.enterprise.address,
            identity=h.enterprise.admin,
            prefix="88.100.1",
            registry=env.platform.registry,
            tenant_id="acme",
            maker="Acme",
        ) as factory,
        IdentifierPublisher(
            node=h.supplier.address,
            identity=h.supplier.admin,
            prefix="88.100.2",
            tenant_id="jinggong",
            maker="Jinggong Motors",
        ) as supplier,
    ):
        made = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
        bearing = await supplier.publish_batch(
            "LOT-BEARING-1", site="changzhou", produced_at=made, components=[], product="6204"
        )
        motor = await supplier.publish_batch(
            "LOT-MOTOR-1", site="changzhou", produced_at=made, components=[bearing]
        )
        batch = await factory.publish_batch(
            "BATCH-P1-0001",
            site="p1",
            produced_at=made,
            components=[motor, bearing, "88.100.2/LOT-NOT-MADE"],
            line="pump-1",
            product="Gearbox",
        )
        assert batch == "88.100.1/BATCH-P1-0001"
        await drained(factory)
        await drained(supplier)

        resolver = fresh_resolver(h.root)
        record = await resolver.resolve(batch)
        values = typed(record)
        assert values["TG.KIND"] == "batch"
        assert values["TG.SITE"] == "acme/p1"
        assert values["TG.PRODUCED"] == "2025-03-01T08:00:00+00:00"
        components = record.of_type(COMPONENT)
        assert [v.data.decode() for v in components] == [motor, bearing, "88.100.2/LOT-NOT-MADE"]
        assert components[0].references == (ValueReference(motor, 1),)

        tree = await trace(resolver, batch)
        found = {n.identifier: n.status for n in tree.walk()}
        assert found == {
            batch: TraceStatus.FOUND,
            "88.100.1/pump-1": TraceStatus.FOUND,  # the line, via TG.LINE
            motor: TraceStatus.FOUND,
            bearing: TraceStatus.FOUND,  # resolved under the batch, marked repeated under the motor
            "88.100.2/LOT-NOT-MADE": TraceStatus.NOT_FOUND,
        }
        motor_node = tree.find(motor)
        assert motor_node is not None
        assert [c.identifier for c in motor_node.children] == [bearing]


async def test_the_publisher_retries_while_the_node_is_down_and_catches_up(
    tmp_path: Path,
) -> None:
    options = node_options(tmp_path, NodeRole.ENTERPRISE, "88.100.1", None)
    assert options.admin_secret is not None
    async with running_platform(tmp_path, wait_connected=False) as env:
        async with contextlib.AsyncExitStack() as node_stack:
            running = await node_stack.enter_async_context(running_node(options))
            enterprise = Node(running, "88.100.1", options.admin_secret)
            publisher = IdentifierPublisher(
                node=enterprise.address,
                identity=enterprise.admin,
                prefix="88.100.1",
                registry=env.platform.registry,
                tenant_id="acme",
                timeout=0.5,
                retry_initial=0.05,
                retry_max=0.2,
                drain_timeout=0,
            )
        # The node is down now.
        async with publisher:
            await env.platform.registry.register_device(
                tenant_id="acme", site_id="p1", device_id="late-1", model_id="pump"
            )
            async with asyncio.timeout(5):
                while publisher.stats.failures < 3:
                    await asyncio.sleep(0.02)
            assert publisher.stats.published == 0
            assert publisher.stats.pending == 7
            # Ingest is not held up meanwhile: registry calls return at once.
            async with asyncio.timeout(1):
                await env.platform.registry.register_device(
                    tenant_id="acme", site_id="p1", device_id="late-2", model_id="pump"
                )
            async with running_node(options) as back:
                await drained(publisher)
                assert publisher.stats.published == 8
                client = HandleClient()
                for device in ("pump-1", "late-1", "late-2"):
                    answer = await client.resolve(back.address, f"88.100.1/{device}")
                    assert answer.header.response is ResponseCode.SUCCESS


async def test_a_full_queue_drops_device_updates_then_resyncs(tmp_path: Path) -> None:
    async with (
        running_hierarchy(tmp_path) as h,
        running_platform(tmp_path, wait_connected=False) as env,
        IdentifierPublisher(
            node=h.enterprise.address,
            identity=h.enterprise.admin,
            prefix="88.100.1",
            registry=env.platform.registry,
            tenant_id="acme",
            queue_size=2,
            writers=1,
        ) as publisher,
    ):
        assert publisher.stats.overflowed >= 1
        await drained(publisher)
        assert publisher.stats.resyncs >= 1
        assert publisher.stats.published == 6
        resolver = fresh_resolver(h.root)
        for device in ("pump-1", "pump-2", "gw-1", "c-1", "c-2", "old-1"):
            await resolver.resolve(f"88.100.1/{device}")
