"""The sans-I/O session, driven by hand-made broker packets (no sockets)."""

from __future__ import annotations

import pytest

from tiangong.network.errors import BadCredentialsError, ProtocolViolationError
from tiangong.network.mqtt.codec import (
    Connack,
    Connect,
    PacketDecoder,
    ProtocolVersion,
    Puback,
    Publish,
    encode,
)
from tiangong.network.mqtt.session import (
    ClientSession,
    Connected,
    MessageReceived,
    PublishAcked,
    SessionState,
)


def sent_packets(session: ClientSession) -> list[object]:
    decoder = PacketDecoder(version=session.version)
    decoder.feed(session.data_to_send())
    out = []
    while (p := decoder.next_packet()) is not None:
        out.append(p)
    return out


def connected_session(receive_max: int = 65535, present: bool = False) -> ClientSession:
    session = ClientSession()
    session.connect(Connect(client_id="c1"))
    sent_packets(session)
    events = session.receive(
        encode(
            Connack(
                session_present=present, reason_code=0, properties={"receive_maximum": receive_max}
            )
        )
    )
    assert isinstance(events[0], Connected)
    return session


def test_connect_advertises_flow_control() -> None:
    session = ClientSession(receive_maximum=77, max_packet_size=1000)
    session.connect(Connect(client_id="c1"))
    [connect] = sent_packets(session)
    assert isinstance(connect, Connect)
    assert connect.properties["receive_maximum"] == 77
    assert connect.properties["maximum_packet_size"] == 1000


def test_refused_connack_raises_named_error() -> None:
    session = ClientSession()
    session.connect(Connect(client_id="c1"))
    with pytest.raises(BadCredentialsError):
        session.receive(encode(Connack(session_present=False, reason_code=0x86)))
    assert session.state is SessionState.DISCONNECTED


def test_inflight_window_and_resend_after_reconnect() -> None:
    session = connected_session(receive_max=2)
    ids = [session.publish("t", str(i).encode(), qos=1) for i in range(4)]
    first = sent_packets(session)
    assert [p.packet_id for p in first] == ids[:2]  # window of two
    [event] = session.receive(encode(Puback(packet_id=ids[0])))
    assert event == PublishAcked(packet_id=ids[0], reason_code=0, topic="t")
    assert [p.packet_id for p in sent_packets(session)] == [ids[2]]
    # Connection drops with ids[1] and ids[2] in flight and ids[3] pending.
    session.connection_lost()
    session.connect(Connect(client_id="c1", clean_start=False))
    sent_packets(session)
    session.receive(
        encode(Connack(session_present=True, reason_code=0, properties={"receive_maximum": 10}))
    )
    resent = sent_packets(session)
    assert [(p.packet_id, p.dup) for p in resent] == [
        (ids[1], True),
        (ids[2], True),
        (ids[3], False),
    ]


def test_manual_ack_only_for_current_connection() -> None:
    session = connected_session()
    [event] = session.receive(encode(Publish(topic="x", payload=b"1", qos=1, packet_id=9)))
    assert isinstance(event, MessageReceived)
    old_epoch = event.epoch
    assert sent_packets(session) == []  # nothing acknowledged on arrival
    assert session.ack(9, old_epoch)
    assert sent_packets(session) == [Puback(packet_id=9)]
    assert not session.ack(9, old_epoch)  # twice is a no-op
    session.receive(encode(Publish(topic="x", payload=b"2", qos=1, packet_id=10)))
    session.connection_lost()
    session.connect(Connect(client_id="c1", clean_start=False))
    session.receive(encode(Connack(session_present=True, reason_code=0)))
    sent_packets(session)
    assert not session.ack(10, old_epoch)  # stale: the broker redelivers instead
    assert sent_packets(session) == []


def test_packets_before_connack_are_a_violation() -> None:
    session = ClientSession()
    session.connect(Connect(client_id="c1"))
    with pytest.raises(ProtocolViolationError):
        session.receive(encode(Publish(topic="x", payload=b"")))


def test_v311_session() -> None:
    session = ClientSession(version=ProtocolVersion.V311)
    session.connect(Connect(client_id="c", version=ProtocolVersion.V311))
    [connect] = sent_packets(session)
    assert connect.properties == {}
    session.receive(encode(Connack(session_present=False, reason_code=0), ProtocolVersion.V311))
    assert session.state is SessionState.CONNECTED
