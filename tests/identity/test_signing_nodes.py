"""Nodes started with a trust directory sign every record they write, and resolvers verify it.

Root (88, holding the trust root 88/0.0) → secondary (88.100) → enterprise (88.100.1), each
with its signing key and the certificate its parent issued, as ``tiangong idnode --trust-dir``
runs them. Records are written by ordinary clients; the node signs them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tiangong.identity.auth import AdminIdentity
from tiangong.identity.client import HandleClient, ServerAddress
from tiangong.identity.handle.messages import ValuesRequest
from tiangong.identity.handle.protocol import OpCode, ResponseCode
from tiangong.identity.handle.values import HandleValue, ValueReference
from tiangong.identity.node.runner import NodeOptions, RunningNode, running_node
from tiangong.identity.node.service import Identity, NodeRole
from tiangong.identity.resolver import Resolver
from tiangong.identity.signing import (
    TrustMaterial,
    create_node_key,
    create_trust_root,
    install_certificate,
    verify_resolved,
)

ROOT = ValueReference("88/0.0", 300)


@dataclass
class Signed:
    root: RunningNode
    enterprise: RunningNode
    root_key: bytes


def _certify(issuer: TrustMaterial, prefix: str, directory: Path, *, derived: bool) -> Path:
    files = create_node_key(prefix, directory)
    node = TrustMaterial.load(files.directory)
    certificate = issuer.issue(prefix, node.public_key_data, derived_prefixes=derived)
    install_certificate(files.directory, certificate.data.decode())
    return files.directory


@pytest.fixture
async def signed(tmp_path: Path) -> AsyncIterator[Signed]:
    root_files = create_trust_root(ROOT.handle, tmp_path / "trust-root")
    root_material = TrustMaterial.load(root_files.directory)
    secondary_dir = _certify(root_material, "88.100", tmp_path / "trust-88.100", derived=True)
    enterprise_dir = _certify(
        TrustMaterial.load(secondary_dir), "88.100.1", tmp_path / "trust-88.100.1", derived=False
    )
    async with contextlib.AsyncExitStack() as stack:
        root = await stack.enter_async_context(
            running_node(
                NodeOptions(
                    NodeRole.ROOT,
                    prefix="88",
                    port=0,
                    admin_secret=b"r",
                    data_dir=tmp_path / "r",
                    trust_dir=root_files.directory,
                )
            )
        )
        secondary = await stack.enter_async_context(
            running_node(
                NodeOptions(
                    NodeRole.SECONDARY,
                    prefix="88.100",
                    port=0,
                    admin_secret=b"s",
                    data_dir=tmp_path / "s",
                    trust_dir=secondary_dir,
                    parents=[root.address],
                    parent_admin=ValueReference("0.NA/88", 300),
                    parent_secret=b"r",
                )
            )
        )
        enterprise = await stack.enter_async_context(
            running_node(
                NodeOptions(
                    NodeRole.ENTERPRISE,
                    prefix="88.100.1",
                    port=0,
                    admin_secret=b"e",
                    data_dir=tmp_path / "e",
                    trust_dir=enterprise_dir,
                    parents=[secondary.address],
                    parent_admin=ValueReference("0.NA/88.100", 300),
                    parent_secret=b"s",
                )
            )
        )
        yield Signed(root, enterprise, root_material.public_key_data)


async def _write(node: RunningNode, handle: str, *values: HandleValue) -> None:
    client = HandleClient(identity=AdminIdentity(ValueReference("0.NA/88.100.1", 300), secret=b"e"))
    tcp = ServerAddress("127.0.0.1", node.server.port, "tcp")
    answer = await client.send(
        tcp, client.message(OpCode.CREATE_HANDLE, ValuesRequest(handle, values))
    )
    assert answer.header.response is ResponseCode.SUCCESS


async def test_records_written_to_a_signing_node_verify_and_tampering_shows(
    signed: Signed,
) -> None:
    handle = "88.100.1/PUMP-00042"
    await _write(
        signed.enterprise,
        handle,
        HandleValue(1, "URL", b"https://plant.example/pumps/42"),
        HandleValue(2, "TG.MODEL", b"pump@v3"),
    )
    resolver = Resolver([signed.root.address])
    record = await resolver.resolve(handle)
    assert any(v.type == "HS_SIGNATURE" for v in record.values)  # signed by the node
    result = await verify_resolved(
        resolver, record, trust_root=ROOT, trust_root_key_data=signed.root_key
    )
    assert result.signed
    assert result.valid, result.reason
    assert {1, 2} <= set(result.covered)
    # Someone with access to the database changes the URL behind the node's back.
    assert signed.enterprise.node is not None
    await signed.enterprise.node.store.put_values(
        handle, [HandleValue(1, "URL", b"https://evil.example/")]
    )
    resolver.clear()
    tampered = await resolver.resolve(handle)
    result = await verify_resolved(
        resolver, tampered, trust_root=ROOT, trust_root_key_data=signed.root_key
    )
    assert not result.valid
    assert result.failed == (1,)
    # A change through the node is signed again.
    await signed.enterprise.node.put_values(
        handle,
        [HandleValue(1, "URL", b"https://plant.example/pumps/42b")],
        identity=Identity(ValueReference("0.NA/88.100.1", 300)),
    )
    resolver.clear()
    fixed = await resolver.resolve(handle)
    result = await verify_resolved(
        resolver, fixed, trust_root=ROOT, trust_root_key_data=signed.root_key
    )
    assert result.valid, result.reason
