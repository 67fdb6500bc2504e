"""The resolver against in-process nodes: referral loops, caching, negative answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tiangong.identity.client import HandleClient, ServerAddress
from tiangong.identity.errors import ResolutionError
from tiangong.identity.handle.protocol import ResponseCode
from tiangong.identity.handle.values import HandleValue
from tiangong.identity.node.runner import NodeOptions, RunningNode, running_node
from tiangong.identity.node.service import NodeRole, site_value
from tiangong.identity.resolver import Resolver


@pytest.fixture
async def two_nodes(tmp_path: Path) -> AsyncIterator[tuple[RunningNode, RunningNode]]:
    a_options = NodeOptions(
        NodeRole.ROOT, prefix="77", port=0, admin_secret=b"a-secret", data_dir=tmp_path / "a"
    )
    b_options = NodeOptions(
        NodeRole.ROOT, prefix="66", port=0, admin_secret=b"b-secret", data_dir=tmp_path / "b"
    )
    async with running_node(a_options) as a, running_node(b_options) as b:
        yield a, b


async def _delegate(holder: RunningNode, prefix: str, to: RunningNode) -> None:
    """Write a delegation straight into the holder's store (as a misconfigured operator might)."""
    assert holder.node is not None
    assert to.node is not None
    assert to.node.site is not None
    await holder.node.store.put_values(f"0.NA/{prefix}", [site_value(to.node.site)])


async def test_a_referral_loop_ends_with_an_error_not_a_hang(
    two_nodes: tuple[RunningNode, RunningNode],
) -> None:
    a, b = two_nodes
    # A says 77.1 lives on B; B says 77.1 lives on A.
    await _delegate(a, "77.1", b)
    await _delegate(b, "77.1", a)
    resolver = _resolver(a)
    with pytest.raises(ResolutionError) as loop:
        await resolver.resolve("77.1/LOOPING")
    assert loop.value.response_code == ResponseCode.RECURSION_COUNT_TOO_HIGH
    assert resolver.stats.upstream_queries < 10


async def test_not_found_is_remembered_briefly_and_found_records_follow_ttl(
    two_nodes: tuple[RunningNode, RunningNode],
) -> None:
    a, _ = two_nodes
    assert a.node is not None
    resolver = _resolver(a)
    with pytest.raises(ResolutionError) as missing:
        await resolver.resolve("77/LATER")
    assert missing.value.response_code == ResponseCode.HANDLE_NOT_FOUND
    queries = resolver.stats.upstream_queries
    with pytest.raises(ResolutionError):
        await resolver.resolve("77/LATER")
    assert resolver.stats.upstream_queries == queries  # negative answer cached
    await a.node.store.put_values(
        "77/SHORT", [HandleValue(index=1, type="URL", data=b"http://x", ttl=0)]
    )
    first = await resolver.resolve("77/SHORT")
    second = await resolver.resolve("77/SHORT")
    assert first == second
    assert resolver.stats.upstream_queries == queries + 2  # ttl 0: never served from cache


async def test_the_udp_answer_cache_never_serves_a_stale_record(
    two_nodes: tuple[RunningNode, RunningNode],
) -> None:
    a, _ = two_nodes
    assert a.node is not None
    client = HandleClient()
    await a.node.store.put_values("77/HOT", [HandleValue(index=1, type="URL", data=b"v1")])
    a.node.listeners[0]()  # a direct store write: tell the node, as its own writes do
    for _ in range(3):
        answer = await client.resolve(a.address, "77/HOT")
    assert a.server.responses.hits >= 2
    admin = a.node
    from tiangong.identity.node.service import Identity  # noqa: PLC0415

    await admin.put_values(
        "77/HOT",
        [HandleValue(index=1, type="URL", data=b"v2")],
        identity=Identity(a.admin),
    )
    answer = await client.resolve(a.address, "77/HOT")
    assert answer.header.response is ResponseCode.SUCCESS
    assert [v.data for v in answer.body.values] == [b"v2"]  # type: ignore[union-attr]


def _resolver(root: RunningNode) -> Resolver:
    return Resolver([ServerAddress("127.0.0.1", root.server.port)])


async def test_a_prefix_delegated_to_a_service_is_found_through_a_service_referral(
    two_nodes: tuple[RunningNode, RunningNode],
) -> None:
    a, b = two_nodes
    assert a.node is not None
    assert b.node is not None
    assert b.node.site is not None
    # A delegates 77.5 to a service (77/SERVICE-B), whose HS_SITE says: node B. B holds 77.5.
    await a.node.store.put_values("77/SERVICE-B", [site_value(b.node.site)])
    await a.node.store.put_values(
        "0.NA/77.5", [HandleValue(index=1, type="HS_SERV", data=b"77/SERVICE-B")]
    )
    await b.node.store.home_prefix("77.5")
    await b.node.refresh_homed()
    await b.node.store.put_values("77.5/PUMP-9", [HandleValue(1, "URL", b"https://plant/p9")])
    direct = await HandleClient().resolve(a.address, "77.5/PUMP-9")
    assert direct.header.response is ResponseCode.SERVICE_REFERRAL
    resolver = _resolver(a)
    record = await resolver.resolve("77.5/PUMP-9")
    assert [v.data for v in record.values if v.type == "URL"] == [b"https://plant/p9"]
