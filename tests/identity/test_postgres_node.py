"""A node whose records live in PostgreSQL (``--store postgresql://...``), over the wire."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiangong.identity.auth import AdminIdentity
from tiangong.identity.client import HandleClient, ServerAddress
from tiangong.identity.handle.messages import ResolutionResponse, ValuesRequest
from tiangong.identity.handle.protocol import OpCode, ResponseCode
from tiangong.identity.handle.values import HandleValue, ValueReference
from tiangong.identity.node.runner import NodeOptions, running_node
from tiangong.identity.node.service import NodeRole

pytestmark = pytest.mark.postgres


async def test_a_node_on_postgres_serves_writes_and_resolutions(
    tmp_path: Path, pg_database: str
) -> None:
    options = NodeOptions(
        NodeRole.ENTERPRISE,
        prefix="88.100.7",
        port=0,
        admin_secret=b"pg-secret",
        data_dir=tmp_path,
        store_url=pg_database,
    )
    async with running_node(options) as node:
        client = HandleClient(
            identity=AdminIdentity(ValueReference("0.NA/88.100.7", 300), secret=b"pg-secret")
        )
        tcp = ServerAddress("127.0.0.1", node.server.port, "tcp")
        request = client.message(
            OpCode.CREATE_HANDLE,
            ValuesRequest("88.100.7/VALVE-1", (HandleValue(1, "URL", b"https://plant/v1"),)),
        )
        assert (await client.send(tcp, request)).header.response is ResponseCode.SUCCESS
        answer = await HandleClient().resolve(node.address, "88.100.7/valve-1")
        assert answer.header.response is ResponseCode.SUCCESS
        assert isinstance(answer.body, ResolutionResponse)
        assert [v.data for v in answer.body.values if v.type == "URL"] == [b"https://plant/v1"]
    # The records outlive the node: a new one on the same database answers at once.
    async with running_node(options) as node:
        answer = await HandleClient().resolve(node.address, "88.100.7/VALVE-1")
        assert answer.header.response is ResponseCode.SUCCESS
