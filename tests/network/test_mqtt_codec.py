"""The MQTT codec: in-memory round trips, incremental feeding, hostile bytes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiangong.network.errors import MalformedPacketError, MqttError
from tiangong.network.mqtt.codec import (
    Connack,
    Connect,
    Disconnect,
    OversizedPublish,
    PacketDecoder,
    Pingreq,
    Pingresp,
    ProtocolVersion,
    Puback,
    Publish,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
    encode,
)

topics = st.text(
    alphabet=st.characters(blacklist_characters="\x00+#", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=64,
)
versions = st.sampled_from(list(ProtocolVersion))
safe_text = st.text(
    alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=8
)


def decode_all(data: bytes, version: ProtocolVersion, **kw: int) -> list[object]:
    decoder = PacketDecoder(version=version, **kw)
    decoder.feed(data)
    out = []
    while (packet := decoder.next_packet()) is not None:
        out.append(packet)
    assert decoder.buffered == 0
    return out


@given(
    topic=topics,
    payload=st.binary(max_size=2048),
    qos=st.integers(0, 2),
    retain=st.booleans(),
    dup=st.booleans(),
    pid=st.integers(1, 65535),
    version=versions,
    user=st.lists(st.tuples(safe_text, safe_text), max_size=3),
)
def test_publish_round_trip(
    topic: str,
    payload: bytes,
    qos: int,
    retain: bool,
    dup: bool,
    pid: int,
    version: ProtocolVersion,
    user: list[tuple[str, str]],
) -> None:
    props: dict[str, object] = {}
    if version is ProtocolVersion.V5 and user:
        props = {"user_property": user, "content_type": "application/json"}
    packet = Publish(
        topic=topic,
        payload=payload,
        qos=qos,
        retain=retain,
        dup=dup,
        packet_id=pid if qos else 0,
        properties=props,
    )
    assert decode_all(encode(packet, version), version) == [packet]


@given(
    client_id=st.text(max_size=23).filter(lambda s: "\x00" not in s),
    username=st.none() | st.text(max_size=20).filter(lambda s: "\x00" not in s),
    password=st.none() | st.binary(max_size=40),
    keepalive=st.integers(0, 65535),
    clean=st.booleans(),
    version=versions,
    with_will=st.booleans(),
)
def test_connect_round_trip(
    client_id: str,
    username: str | None,
    password: bytes | None,
    keepalive: int,
    clean: bool,
    version: ProtocolVersion,
    with_will: bool,
) -> None:
    will = Will(topic="a/b", payload=b"offline", qos=1, retain=True) if with_will else None
    props: dict[str, object] = (
        {"session_expiry_interval": 3600, "receive_maximum": 100}
        if version is ProtocolVersion.V5
        else {}
    )
    packet = Connect(
        client_id=client_id,
        version=version,
        keepalive=keepalive,
        clean_start=clean,
        username=username,
        password=password,
        will=will,
        properties=props,
    )
    assert decode_all(encode(packet), ProtocolVersion.V311) == [packet]


@pytest.mark.parametrize("version", list(ProtocolVersion))
def test_control_packets_round_trip(version: ProtocolVersion) -> None:
    v5 = version is ProtocolVersion.V5
    packets = [
        Connack(
            session_present=True, reason_code=0, properties={"receive_maximum": 20} if v5 else {}
        ),
        Puback(packet_id=7),
        Puback(packet_id=8, reason_code=0x87 if v5 else 0),
        Subscribe(packet_id=3, subscriptions=(Subscription("a/+/c", qos=1), Subscription("#"))),
        Suback(packet_id=3, reason_codes=(1, 0x80)),
        Unsubscribe(packet_id=4, topic_filters=("a/+/c",)),
        Unsuback(packet_id=4, reason_codes=(0,) if v5 else ()),
        Pingreq(),
        Pingresp(),
        Disconnect(reason_code=0x8B if v5 else 0),
    ]
    data = b"".join(encode(p, version) for p in packets)
    assert decode_all(data, version) == packets


@settings(max_examples=50)
@given(chunks=st.lists(st.integers(1, 50), min_size=1, max_size=40))
def test_incremental_feed_any_split(chunks: list[int]) -> None:
    packets = [
        Publish(topic=f"t/{i}", payload=bytes(range(i % 256)) * 3, qos=1, packet_id=i + 1)
        for i in range(20)
    ]
    data = b"".join(encode(p) for p in packets)
    decoder = PacketDecoder()
    out: list[object] = []
    pos = 0
    sizes = iter(chunks * (len(data) // sum(chunks) + 1))
    while pos < len(data):
        step = next(sizes)
        decoder.feed(data[pos : pos + step])
        pos += step
        while (packet := decoder.next_packet()) is not None:
            out.append(packet)
    assert out == packets


def test_oversized_publish_is_reported_and_skipped_without_buffering() -> None:
    big = Publish(topic="tg/v1/t/s/d/telemetry", payload=b"x" * 100_000, qos=1, packet_id=42)
    small = Publish(topic="after", payload=b"ok", qos=0)
    data = encode(big) + encode(small)
    decoder = PacketDecoder(max_packet_size=10_000)
    seen: list[object] = []
    for i in range(0, len(data), 4096):
        decoder.feed(data[i : i + 4096])
        assert decoder.buffered <= 8192  # the 100 kB payload is never held
        while (packet := decoder.next_packet()) is not None:
            seen.append(packet)
    assert seen == [
        OversizedPublish(topic=big.topic, qos=1, packet_id=42, size=len(encode(big))),
        small,
    ]


def test_encoder_refuses_nul_in_strings() -> None:
    with pytest.raises(ValueError, match="U\\+0000"):
        encode(Publish(topic="a\x00b", payload=b""))


@pytest.mark.parametrize(
    "data",
    [
        b"\x30\xff\xff\xff\xff\x01",  # remaining length longer than four bytes
        b"\x36\x05\x00\x01a\x00\x01",  # QoS 3
        b"\x32\x05\x00\x01a\x00\x00",  # QoS 1 with packet id 0
        b"\x30\x04\x00\x05ab",  # topic length runs past the packet
        b"\x30\x04\x00\x02\xff\xfe",  # topic is not UTF-8
        b"\x20\x02\x02\x00",  # CONNACK reserved flag set
        b"\x41\x02\x00\x01",  # PUBACK with bad flags
        b"\x90\x02\x00\x01",  # SUBACK without reason codes
    ],
)
def test_malformed_bytes_raise(data: bytes) -> None:
    decoder = PacketDecoder(version=ProtocolVersion.V311)
    decoder.feed(data)
    with pytest.raises(MalformedPacketError):
        decoder.next_packet()


@given(st.binary(max_size=300))
def test_fuzz_never_raises_anything_but_mqtt_errors(data: bytes) -> None:
    for version in ProtocolVersion:
        decoder = PacketDecoder(version=version, max_packet_size=1024)
        decoder.feed(data)
        try:
            while decoder.next_packet() is not None:
                pass
        except MqttError:
            pass
