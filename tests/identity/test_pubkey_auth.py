"""Administrators who prove themselves with a key pair (HS_PUBKEY): RSA, and SM2 with SM3."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiangong.identity.auth import AdminIdentity
from tiangong.identity.client import HandleClient, ServerAddress
from tiangong.identity.handle.codec import decode_value_list, encode_admin, encode_value_list
from tiangong.identity.handle.messages import HandleRequest, ValuesRequest
from tiangong.identity.handle.protocol import OpCode, ResponseCode
from tiangong.identity.handle.values import (
    HS_PUBKEY,
    AdminPermission,
    AdminRecord,
    HandleValue,
    ValueList,
    ValueReference,
)
from tiangong.identity.keys import (
    encode_public_key,
    generate_rsa_key,
    generate_sm2_key,
    public_key_of,
)
from tiangong.identity.node.runner import NodeOptions, running_node
from tiangong.identity.node.service import Identity, NodeRole


@pytest.mark.parametrize("algorithm", ["rsa", "sm2"])
async def test_a_key_pair_identity_writes_over_the_wire(tmp_path: Path, algorithm: str) -> None:
    key = generate_rsa_key(2048) if algorithm == "rsa" else generate_sm2_key()
    other = generate_sm2_key()
    options = NodeOptions(
        NodeRole.ENTERPRISE, prefix="88.100.5", port=0, admin_secret=b"op", data_dir=tmp_path
    )
    async with running_node(options) as node:
        assert node.node is not None
        assert node.admin is not None
        user = ValueReference("0.NA/88.100.5", 301)
        await node.node.put_values(
            "0.NA/88.100.5",
            [HandleValue(301, HS_PUBKEY, encode_public_key(public_key_of(key)))],
            identity=Identity(node.admin),
        )
        tcp = ServerAddress("127.0.0.1", node.server.port, "tcp")
        body = ValuesRequest("88.100.5/KEYED", (HandleValue(1, "URL", b"https://plant/k"),))
        owner = HandleClient(identity=AdminIdentity(user, private_key=key))
        answer = await owner.send(tcp, owner.message(OpCode.CREATE_HANDLE, body))
        # 301 is not an admin yet: authenticated, but not allowed.
        assert answer.header.response is ResponseCode.INSUFFICIENT_PERMISSIONS
        # Make the prefix's admin group (200) an administrator that may create handles, and 301
        # a member of the group.
        group = await node.node.store.get("0.NA/88.100.5")
        assert group is not None
        stored = group.value(200)
        assert stored is not None
        members = decode_value_list(stored.data).members
        grant = AdminRecord(ValueReference("0.NA/88.100.5", 200), AdminPermission.ADD_HANDLE)
        await node.node.put_values(
            "0.NA/88.100.5",
            [
                HandleValue(200, "HS_VLIST", encode_value_list(ValueList((*members, user)))),
                HandleValue(101, "HS_ADMIN", encode_admin(grant)),
            ],
            identity=Identity(node.admin),
        )
        # Now a member of the prefix's admin group (200): allowed.
        answer = await owner.send(tcp, owner.message(OpCode.CREATE_HANDLE, body))
        assert answer.header.response is ResponseCode.SUCCESS
        # Someone with another key claiming to be 301 fails the challenge.
        impostor = HandleClient(identity=AdminIdentity(user, private_key=other))
        answer = await impostor.send(
            tcp, impostor.message(OpCode.DELETE_HANDLE, HandleRequest("88.100.5/KEYED"))
        )
        assert answer.header.response is ResponseCode.AUTHENTICATION_FAILED
