"""The miss path from encoded answers: the same bytes as the full path, kept true by every write.

A plain public resolution that misses the response cache is answered from the store's
pre-encoded answer (``answers`` table) under a header packed in place. These tests hold it to
the full path: byte for byte the same response for any request it takes, ``None`` (the full
path) for any request it must not take, and an answer that follows every kind of write.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.identity.test_handle_codec import handles, values
from tests.identity.test_node_limits import enterprise_options
from tiangong.identity.handle import codec
from tiangong.identity.handle.messages import (
    Credential,
    Envelope,
    Header,
    Message,
    ResolutionRequest,
    ResolutionResponse,
)
from tiangong.identity.handle.protocol import (
    DEFAULT_RESOLUTION_FLAGS,
    OpCode,
    OpFlag,
    ResponseCode,
)
from tiangong.identity.handle.values import HS_ADMIN, HandleRecord, HandleValue, Permission
from tiangong.identity.node.dispatch import Dispatcher
from tiangong.identity.node.runner import RunningNode, running_node
from tiangong.identity.store import SqliteHandleStore
from tiangong.identity.store.base import public_answer

PREFIX = "88.100.1"
NOW = 1_790_000_000
PRIVATE = Permission.ADMIN_READ | Permission.ADMIN_WRITE
ADMIN_DATA = bytes.fromhex("07f30000000d302e4e412f38382e3130302e31000000c8")


def url(index: int, text: str = "https://example.com/a", **kw: object) -> HandleValue:
    return HandleValue(index=index, type="URL", data=text.encode(), timestamp=1_760_000_000, **kw)  # type: ignore[arg-type]


def request(
    handle: str,
    *,
    flags: OpFlag = DEFAULT_RESOLUTION_FLAGS,
    envelope: Envelope | None = None,
    recursion: int = 0,
    indexes: tuple[int, ...] = (),
    types: tuple[str, ...] = (),
    credential: Credential | None = None,
) -> bytes:
    message = Message(
        header=Header(op=OpCode.RESOLUTION, flags=flags, recursion=recursion, expiration=NOW),
        body=ResolutionRequest(handle, indexes, types),
        envelope=envelope or Envelope(session_id=7, request_id=42),
        credential=credential,
    )
    return codec.encode_message(message)


def full_path_answer(raw: bytes, record: HandleRecord) -> bytes:
    """What the dispatcher's reply to the decoded request encodes to (public values only)."""
    message = codec.decode_message(raw)
    public = tuple(v for v in record.values if v.public_read)
    reply = Dispatcher.reply(
        message, ResponseCode.SUCCESS, ResolutionResponse(record.handle, public)
    )
    return codec.encode_message(reply, now=NOW)


# -- the codec ----------------------------------------------------------------------------------

_ASKABLE = [OpFlag.NONE, OpFlag.PO, OpFlag.KC, OpFlag.REC | OpFlag.CA | OpFlag.PO, OpFlag.DNRF]
plain_envelopes = st.builds(
    Envelope,
    major=st.just(2),
    minor=st.integers(0, 255),
    suggested_major=st.integers(0, 3),
    suggested_minor=st.integers(0, 255),
    session_id=st.integers(0, 2**32 - 1),
    request_id=st.integers(0, 2**32 - 1),
)


@settings(max_examples=200, deadline=None)
@given(
    handle=handles,
    record_values=st.lists(values, min_size=1, max_size=5, unique_by=lambda v: v.index),
    flags=st.sampled_from(_ASKABLE),
    envelope=plain_envelopes,
    recursion=st.integers(0, 255),
)
def test_an_encoded_answer_is_the_full_paths_answer_byte_for_byte(
    handle: str,
    record_values: list[HandleValue],
    flags: OpFlag,
    envelope: Envelope,
    recursion: int,
) -> None:
    raw = request(handle, flags=flags, envelope=envelope, recursion=recursion)
    assert codec.plain_resolution_handle(raw) == handle
    record = HandleRecord(handle, tuple(sorted(record_values, key=lambda v: v.index)))
    body = public_answer(record.handle, record.values)
    if body is None:  # nothing public: the full path refuses, the fast path is never asked
        assert not any(v.public_read for v in record.values)
        return
    assert codec.encode_resolution_answer(raw, body, now=NOW) == full_path_answer(raw, record)


def test_requests_the_encoded_path_must_leave_to_the_full_path() -> None:
    handle = f"{PREFIX}/P-1"
    plain = request(handle)
    assert codec.plain_resolution_handle(plain) == handle
    refused = {
        "an index filter": request(handle, indexes=(1,)),
        "a type filter": request(handle, types=("URL",)),
        "a credential": request(
            handle,
            credential=Credential(
                signer="0.NA/88.100.1",
                signer_index=300,
                type="HS_SIGNED",
                digest_algorithm="SHA-256",
                signature=b"x",
            ),
        ),
        "a certified answer (CT)": request(handle, flags=OpFlag.CT),
        "a request digest (RD)": request(handle, flags=OpFlag.RD),
        "protocol 5": request(handle, envelope=Envelope(major=5, minor=0)),
        "a second packet": plain[:12] + struct.pack(">I", 1) + plain[16:],
        "a truncated flag": plain[:2] + bytes([plain[2] | 0x20]) + plain[3:],
        "a trailing byte": plain + b"\x00",
        "a short message length": plain[:16] + struct.pack(">I", len(plain) - 21) + plain[20:],
        "a long body length": plain[:40] + struct.pack(">I", len(handle) + 13) + plain[44:],
        "a long handle length": plain[:44] + struct.pack(">I", len(handle) + 1) + plain[48:],
        "another op": plain[:20] + struct.pack(">I", int(OpCode.GET_SITEINFO)) + plain[24:],
        "a response": plain[:24] + struct.pack(">I", 1) + plain[28:],
        "bad UTF-8": plain[:48] + b"\xff" + plain[49:],
        "nothing": b"",
        "an envelope alone": plain[:20],
    }
    for why, data in refused.items():
        assert codec.plain_resolution_handle(data) is None, why


# -- the store --------------------------------------------------------------------------------


async def answer_is_true(store: SqliteHandleStore, handle: str) -> None:
    """The stored answer is what the record's values encode to (or absent with the record)."""
    record = await store.get(handle)
    expected = None if record is None else public_answer(record.handle, record.values)
    assert store.public_answer_now(handle) == expected
    assert store.public_answer_now(handle.swapcase()) == expected  # keys are case-insensitive


async def test_every_kind_of_write_keeps_the_answer_true(tmp_path: Path) -> None:
    h = f"{PREFIX}/Pump-7"
    admin = HandleValue(index=100, type=HS_ADMIN, data=ADMIN_DATA, permissions=PRIVATE)
    async with SqliteHandleStore(path=tmp_path / "h.sqlite3") as store:
        assert store.public_answer_now(h) is None
        await store.create(h, [url(2), admin, url(1, "https://example.com/first")])
        await answer_is_true(store, h)
        body = store.public_answer_now(h)
        assert body is not None
        assert b"first" in body
        assert ADMIN_DATA not in body  # private values are kept out
        await store.add_values(h, [url(3, "https://example.com/third")])
        await answer_is_true(store, h)
        await store.modify_values(h, [url(1, "https://example.com/moved")])
        await answer_is_true(store, h)
        assert b"moved" in (store.public_answer_now(h) or b"")
        await store.put_values(h, [url(4, "https://example.com/4")])
        await answer_is_true(store, h)
        await store.remove_values(h, [2, 3])
        await answer_is_true(store, h)
        # Only private values left: no encoded answer (the full path says VALUES_NOT_FOUND).
        await store.modify_values(h, [url(1, permissions=PRIVATE), url(4, permissions=PRIVATE)])
        assert store.public_answer_now(h) is None
        await answer_is_true(store, h)
        await store.replace(h, [url(9, "https://example.com/nine")])
        await answer_is_true(store, h)
        await store.delete(h)
        assert store.public_answer_now(h) is None
        loaded = [
            HandleRecord(f"{PREFIX}/B-{i}", (url(2, f"https://b/{i}"), url(1), admin))
            for i in range(50)
        ]
        await store.bulk_load(loaded)
        for record in loaded:
            await answer_is_true(store, record.handle)


async def test_a_store_from_before_encoded_answers_gets_them_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    async with SqliteHandleStore(path=path) as store:
        await store.bulk_load(
            HandleRecord(f"{PREFIX}/OLD-{i}", (url(1, f"https://old/{i}"),)) for i in range(20)
        )
    # As an earlier release left it: no answers table, schema version 0.
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE answers")
    conn.execute("PRAGMA user_version = 0")
    conn.commit()
    conn.close()
    async with SqliteHandleStore(path=path) as store:
        for i in range(20):
            await answer_is_true(store, f"{PREFIX}/OLD-{i}")
            assert store.public_answer_now(f"{PREFIX}/OLD-{i}") is not None


# -- a running node -----------------------------------------------------------------------------


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[RunningNode]:
    async with running_node(enterprise_options(tmp_path)) as running:
        running.server.responses.max_entries = 0  # every resolution below is a miss
        yield running


async def ask(port: int, data: bytes, *, tcp: bool = False) -> Message:
    loop = asyncio.get_running_loop()
    if tcp:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(data)
            head = await reader.readexactly(20)
            (length,) = struct.unpack_from(">I", head, 16)
            return codec.decode_message(head + await reader.readexactly(length))
        finally:
            writer.close()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        await loop.sock_sendto(sock, data, ("127.0.0.1", port))
        async with asyncio.timeout(5):
            return codec.decode_message(await loop.sock_recv(sock, 65536))
    finally:
        sock.close()


async def test_a_node_answers_misses_from_encoded_answers_and_follows_writes(
    node: RunningNode,
) -> None:
    assert node.node is not None
    store, port = node.node.store, node.server.port
    h = f"{PREFIX}/VALVE-3"
    await store.create(h, [url(1, "https://example.com/v3"), url(2, permissions=PRIVATE)])
    before = node.node.stats.resolutions
    for tcp in (False, True):
        answer = await ask(port, request(h.lower()), tcp=tcp)
        assert answer.header.response is ResponseCode.SUCCESS
        assert isinstance(answer.body, ResolutionResponse)
        assert answer.body.handle == h  # the stored spelling
        assert [v.index for v in answer.body.values] == [1]  # the private value stays private
        assert answer.envelope.request_id == 42
    assert node.node.stats.resolutions == before + 2
    # A write is seen by the very next miss.
    await node.node.store.modify_values(h, [url(1, "https://example.com/v3-moved")])
    answer = await ask(port, request(h))
    assert isinstance(answer.body, ResolutionResponse)
    assert answer.body.values[0].data == b"https://example.com/v3-moved"
    # Requests the encoded path leaves alone still get the full path's answers.
    filtered = await ask(port, request(h, indexes=(2,)))
    assert filtered.header.response is ResponseCode.VALUES_NOT_FOUND  # index 2 is private
    missing = await ask(port, request(f"{PREFIX}/NOPE"))
    assert missing.header.response is ResponseCode.HANDLE_NOT_FOUND
    elsewhere = await ask(port, request("99.1/X"))
    assert elsewhere.header.response is ResponseCode.SERVER_NOT_RESPONSIBLE
    await store.modify_values(h, [url(1, permissions=PRIVATE)])
    hidden = await ask(port, request(h))
    assert hidden.header.response is ResponseCode.VALUES_NOT_FOUND
