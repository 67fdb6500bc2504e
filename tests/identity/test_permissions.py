"""Every write needs its HS_ADMIN permission bit: refused with 401 without it, done with it.

The matrix runs over the binary protocol (challenge-response with a secret key) against a real
node on loopback: for each operation, an identity holding every permission except the one the
operation needs is refused with INSUFFICIENT_PERMISSIONS and nothing changes; the same identity
given only that bit succeeds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tiangong.identity.auth import AdminIdentity
from tiangong.identity.client import HandleClient, ServerAddress
from tiangong.identity.handle.codec import encode_admin
from tiangong.identity.handle.messages import (
    Body,
    HandleRequest,
    RemoveValuesRequest,
    ResolutionResponse,
    ValuesRequest,
)
from tiangong.identity.handle.protocol import OpCode, OpFlag, ResponseCode
from tiangong.identity.handle.values import (
    ALL_ADMIN_PERMISSIONS,
    HS_ADMIN,
    SECRET_PERMISSIONS,
    AdminPermission,
    AdminRecord,
    HandleValue,
    Permission,
    ValueReference,
)
from tiangong.identity.node.runner import NodeOptions, RunningNode, running_node
from tiangong.identity.node.service import Identity, NodeRole

PREFIX = "88.100.9"
USER = ValueReference(f"0.NA/{PREFIX}", 310)
USER_SECRET = b"user-secret"


@dataclass
class Case:
    name: str
    needed: AdminPermission
    op: OpCode
    target: str  # whose HS_ADMIN decides: "prefix" or "record"

    def body(self) -> Body:
        record = f"{PREFIX}/REC"
        if self.op is OpCode.CREATE_HANDLE:
            return ValuesRequest(f"{PREFIX}/NEW", (HandleValue(1, "URL", b"http://new"),))
        if self.op is OpCode.ADD_VALUE:
            return ValuesRequest(record, (HandleValue(7, "EMAIL", b"ops@plant"),))
        if self.op is OpCode.MODIFY_VALUE:
            return ValuesRequest(record, (HandleValue(1, "URL", b"http://changed"),))
        if self.op is OpCode.REMOVE_VALUE:
            return RemoveValuesRequest(record, (2,))
        if self.op is OpCode.DELETE_HANDLE:
            return HandleRequest(record)
        if self.op is OpCode.LIST_HANDLES:
            return HandleRequest(f"0.NA/{PREFIX}")
        raise AssertionError(self.op)


CASES = [
    Case("create", AdminPermission.ADD_HANDLE, OpCode.CREATE_HANDLE, "prefix"),
    Case("add value", AdminPermission.ADD_VALUE, OpCode.ADD_VALUE, "record"),
    Case("modify value", AdminPermission.MODIFY_VALUE, OpCode.MODIFY_VALUE, "record"),
    Case("remove value", AdminPermission.REMOVE_VALUE, OpCode.REMOVE_VALUE, "record"),
    Case("delete handle", AdminPermission.DELETE_HANDLE, OpCode.DELETE_HANDLE, "record"),
    Case("list handles", AdminPermission.LIST_HANDLES, OpCode.LIST_HANDLES, "prefix"),
]


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[RunningNode]:
    options = NodeOptions(
        NodeRole.ENTERPRISE, prefix=PREFIX, port=0, admin_secret=b"op", data_dir=tmp_path
    )
    async with running_node(options) as running:
        assert running.node is not None
        assert running.admin is not None
        # The user's key lives on the prefix handle, readable by admins only.
        await running.node.put_values(
            f"0.NA/{PREFIX}",
            [HandleValue(310, "HS_SECKEY", USER_SECRET, permissions=SECRET_PERMISSIONS)],
            identity=Identity(running.admin),
        )
        yield running


async def _grant(node: RunningNode, handle: str, permissions: AdminPermission) -> None:
    """Name USER in ``handle``'s HS_ADMIN at index 110 with exactly ``permissions``."""
    assert node.node is not None
    assert node.admin is not None
    grant = HandleValue(110, HS_ADMIN, encode_admin(AdminRecord(USER, permissions)))
    await node.node.put_values(handle, [grant], identity=Identity(node.admin))


async def _seed(node: RunningNode) -> None:
    assert node.node is not None
    assert node.admin is not None
    await node.node.create(
        f"{PREFIX}/REC",
        [
            HandleValue(1, "URL", b"http://rec"),
            HandleValue(2, "EMAIL", b"old@plant"),
            HandleValue(
                100, HS_ADMIN, encode_admin(AdminRecord(node.admin, ALL_ADMIN_PERMISSIONS))
            ),
        ],
        identity=Identity(node.admin),
        overwrite=True,
    )


async def _send(node: RunningNode, case: Case) -> ResponseCode:
    client = HandleClient(identity=AdminIdentity(USER, secret=USER_SECRET))
    tcp = ServerAddress("127.0.0.1", node.server.port, "tcp")
    answer = await client.send(tcp, client.message(case.op, case.body()))
    return answer.header.response


async def _record(node: RunningNode) -> tuple[HandleValue, ...] | None:
    answer = await HandleClient().resolve(node.address, f"{PREFIX}/REC")
    body = answer.body
    return body.values if isinstance(body, ResolutionResponse) else None


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_each_write_needs_its_own_bit(node: RunningNode, case: Case) -> None:
    await _seed(node)
    target = f"0.NA/{PREFIX}" if case.target == "prefix" else f"{PREFIX}/REC"
    # Everything but the bit this operation needs.
    await _grant(node, target, ALL_ADMIN_PERMISSIONS & ~case.needed)
    before = await _record(node)
    assert await _send(node, case) is ResponseCode.INSUFFICIENT_PERMISSIONS
    assert await _record(node) == before  # nothing changed
    # Only that bit: allowed.
    await _seed(node)
    await _grant(node, target, case.needed)
    assert await _send(node, case) is ResponseCode.SUCCESS


async def test_admin_values_need_admin_bits_not_value_bits(node: RunningNode) -> None:
    await _seed(node)
    await _grant(node, f"{PREFIX}/REC", AdminPermission.ADD_VALUE | AdminPermission.MODIFY_VALUE)
    client = HandleClient(identity=AdminIdentity(USER, secret=USER_SECRET))
    tcp = ServerAddress("127.0.0.1", node.server.port, "tcp")
    takeover = HandleValue(120, HS_ADMIN, encode_admin(AdminRecord(USER, ALL_ADMIN_PERMISSIONS)))
    answer = await client.send(
        tcp,
        client.message(OpCode.ADD_VALUE, ValuesRequest(f"{PREFIX}/REC", (takeover,))),
    )
    assert answer.header.response is ResponseCode.INSUFFICIENT_PERMISSIONS


async def test_private_values_are_read_only_with_read_value(node: RunningNode) -> None:
    await _seed(node)
    assert node.node is not None
    assert node.admin is not None
    private = HandleValue(
        9, "TG.COST", b"1200 CNY", permissions=Permission.ADMIN_READ | Permission.ADMIN_WRITE
    )
    await node.node.put_values(f"{PREFIX}/REC", [private], identity=Identity(node.admin))
    values = await _record(node)
    assert values is not None
    assert 9 not in {v.index for v in values}  # anonymous: public values only
    await _grant(node, f"{PREFIX}/REC", AdminPermission.READ_VALUE)
    record = await node.node.resolve(f"{PREFIX}/REC", public_only=False, identity=Identity(USER))
    assert 9 in {v.index for v in record.values}  # type: ignore[union-attr]
    # Overwrite without permission is refused, too (OVRW create on an existing handle).
    await _grant(node, f"{PREFIX}/REC", AdminPermission.READ_VALUE)
    client = HandleClient(identity=AdminIdentity(USER, secret=USER_SECRET))
    tcp = ServerAddress("127.0.0.1", node.server.port, "tcp")
    answer = await client.send(
        tcp,
        client.message(
            OpCode.CREATE_HANDLE,
            ValuesRequest(f"{PREFIX}/REC", (HandleValue(1, "URL", b"http://x"),)),
            flags=OpFlag.OVRW,
        ),
    )
    assert answer.header.response is ResponseCode.INSUFFICIENT_PERMISSIONS
