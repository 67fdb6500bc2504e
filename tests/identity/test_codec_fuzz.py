"""Hostile bytes: whatever arrives, the codec answers with a value or a CodecError, nothing else."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.identity.test_handle_codec import (
    WORKED_REQUEST,
    admins,
    messages,
    sites,
    value_lists,
    values,
)
from tiangong.identity.errors import CodecError
from tiangong.identity.handle import codec
from tiangong.identity.handle.messages import Message

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DECODERS: list[Callable[[bytes], object]] = [
    codec.decode_message,
    codec.decode_value,
    codec.decode_values,
    codec.decode_admin,
    codec.decode_value_list,
    codec.decode_site,
    codec.decode_credential,
    codec.decode_envelope,
    codec.request_digest,
    lambda data: codec.signed_part(data, envelope=codec.decode_envelope(WORKED_REQUEST)),
]


def only_codec_errors(decode: Callable[[bytes], object], data: bytes) -> None:
    error: CodecError | None = None
    try:
        decode(data)
    except CodecError as exc:
        error = exc
    if error is not None:
        assert str(error)
        assert isinstance(error.response_code, int)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    for decode in DECODERS:
        only_codec_errors(decode, data)


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_behind_a_valid_envelope_and_header(tail: bytes) -> None:
    data = bytearray(WORKED_REQUEST[:44] + tail)
    data[16:20] = struct.pack(">I", len(data) - 20)
    only_codec_errors(codec.decode_message, bytes(data))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_every_truncation_of_a_valid_message(message: Message) -> None:
    data = codec.encode_message(message)
    for cut in range(len(data)):
        with pytest.raises(CodecError):
            codec.decode_message(data[:cut])
        # The same cut with the envelope's length adjusted, so the damage is inside.
        if cut >= 20:
            fixed = bytearray(data[:cut])
            fixed[16:20] = struct.pack(">I", cut - 20)
            only_codec_errors(codec.decode_message, bytes(fixed))


@FUZZ
@given(messages(), st.data())
def test_bit_flips(message: Message, data: st.DataObject) -> None:
    encoded = bytearray(codec.encode_message(message))
    for _ in range(data.draw(st.integers(1, 4))):
        bit = data.draw(st.integers(0, len(encoded) * 8 - 1))
        encoded[bit // 8] ^= 1 << (bit % 8)
    only_codec_errors(codec.decode_message, bytes(encoded))


@FUZZ
@given(messages(), st.data())
def test_absurd_lengths(message: Message, data: st.DataObject) -> None:
    encoded = bytearray(codec.encode_message(message))
    offset = data.draw(st.integers(0, len(encoded) - 4))
    absurd = data.draw(
        st.sampled_from([0xFFFFFFFF, 0x80000000, 0x7FFFFFFF, 262_145, 1_048_577, 2049])
    )
    encoded[offset : offset + 4] = struct.pack(">I", absurd)
    only_codec_errors(codec.decode_message, bytes(encoded))


@FUZZ
@given(st.one_of(values.map(codec.encode_value), admins.map(codec.encode_admin),
                 value_lists.map(codec.encode_value_list), sites.map(codec.encode_site)),
       st.data())  # fmt: skip
def test_damaged_reserved_type_data(encoded: bytes, data: st.DataObject) -> None:
    damaged = bytearray(encoded)
    if damaged:
        at = data.draw(st.integers(0, len(damaged) - 1))
        damaged[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(damaged)))
    for decode in DECODERS[1:7]:
        only_codec_errors(decode, bytes(damaged))
        only_codec_errors(decode, bytes(damaged[:cut]))


@FUZZ
@given(st.lists(st.binary(max_size=600), max_size=12))
def test_udp_reassembler_takes_any_packets(packets: list[bytes]) -> None:
    reassembler = codec.UdpReassembler(max_partial=4)
    for n, packet in enumerate(packets):
        with contextlib.suppress(CodecError):
            reassembler.feed(packet, peer=n % 2, now=float(n))
    assert reassembler.pending <= 4


@FUZZ
@given(messages(), st.binary(max_size=64), st.lists(st.integers(1, 64), max_size=20))
def test_tcp_reader_takes_any_stream(message: Message, junk: bytes, sizes: list[int]) -> None:
    stream = codec.encode_message(message) + junk
    reader = codec.TcpMessageReader()
    position = 0
    for size in [*sizes, len(stream)]:
        with contextlib.suppress(CodecError):
            reader.feed(stream[position : position + size])
        position += size
