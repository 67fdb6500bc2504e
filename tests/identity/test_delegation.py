"""Delegating a prefix to a child node with a credential that can do nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiangong.identity.auth import AdminIdentity
from tiangong.identity.client import HandleClient, ServerAddress
from tiangong.identity.handle.codec import encode_admin
from tiangong.identity.handle.messages import ValuesRequest
from tiangong.identity.handle.protocol import OpCode, ResponseCode
from tiangong.identity.handle.values import (
    SECRET_PERMISSIONS,
    AdminPermission,
    AdminRecord,
    HandleValue,
    ValueReference,
)
from tiangong.identity.node.runner import NodeOptions, NodeSetupError, running_node
from tiangong.identity.node.service import Identity, NodeRole


async def test_a_child_registers_with_a_narrow_credential_that_cannot_write_records(
    tmp_path: Path,
) -> None:
    parent_options = NodeOptions(
        NodeRole.SECONDARY, prefix="88.100", port=0, admin_secret=b"p", data_dir=tmp_path / "p"
    )
    async with running_node(parent_options) as parent:
        assert parent.node is not None
        assert parent.admin is not None
        # The parent's operator gives the enterprise an identity of its own: 301 may only
        # delegate prefixes (ADD_PREFIX), nothing else.
        narrow = ValueReference("0.NA/88.100", 301)
        await parent.node.put_values(
            "0.NA/88.100",
            [
                HandleValue(301, "HS_SECKEY", b"child-secret", permissions=SECRET_PERMISSIONS),
                HandleValue(
                    101,
                    "HS_ADMIN",
                    encode_admin(AdminRecord(narrow, AdminPermission.ADD_PREFIX)),
                ),
            ],
            identity=Identity(parent.admin),
        )
        child_options = NodeOptions(
            NodeRole.ENTERPRISE,
            prefix="88.100.1",
            port=0,
            admin_secret=b"c",
            data_dir=tmp_path / "c",
            parents=[parent.address],
            parent_admin=narrow,
            parent_secret=b"child-secret",
        )
        async with running_node(child_options):
            answer = await HandleClient().resolve(parent.address, "0.NA/88.100.1")
            assert answer.header.response is ResponseCode.SUCCESS
        # A restart re-registers over the existing delegation.
        async with running_node(child_options):
            pass
        # The narrow identity cannot create ordinary records on the parent.
        client = HandleClient(identity=AdminIdentity(narrow, secret=b"child-secret"))
        request = client.message(
            OpCode.CREATE_HANDLE,
            ValuesRequest("88.100/SNEAKY", (HandleValue(1, "URL", b"http://x"),)),
        )
        tcp = ServerAddress(parent.address.host, parent.address.port, "tcp")
        refused = await client.send(tcp, request)
        assert refused.header.response is ResponseCode.INSUFFICIENT_PERMISSIONS
        # A wrong secret stops the child at start with the parent's reason.
        wrong = NodeOptions(**{**child_options.__dict__, "parent_secret": b"nope"})
        with pytest.raises(NodeSetupError, match="AUTHENTICATION_FAILED"):
            async with running_node(wrong):
                pass
