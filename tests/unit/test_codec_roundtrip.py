"""Property-based tests for pytbmq.protocol.codec.

Strategies generate valid packets of every type for each protocol level (MQTT 5 ones with
random properties allowed for that packet type, per section 2.2.2.2), and check that
decode(encode(p)) == p, that encoding is canonical, that any prefix is incomplete, that
streams split anywhere decode the same, and that arbitrary bytes only ever raise
ProtocolError.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytbmq.errors import ProtocolError
from pytbmq.protocol.codec import decode, encode, encode_publish_parts
from pytbmq.protocol.packets import (
    EMPTY_PROPERTIES,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    PingReq,
    PingResp,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
)

BIG = 1 << 28
VERSIONS = [3, 4, 5]

# UTF-8 strings the spec allows: no U+0000 [MQTT-1.5.4-2], no surrogates [MQTT-1.5.4-1].
# Control characters and non-characters are allowed (SHOULD NOT, not MUST NOT).
text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
    max_size=12,
)
binary = st.binary(max_size=24)
u8 = st.integers(0, 255)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
packet_id = st.integers(1, 0xFFFF)
boolean_byte = st.integers(0, 1)
user_properties = st.lists(st.tuples(text, text), max_size=3).map(tuple)

P = PacketType
WILL = "WILL"
ACKS = (P.PUBACK, P.PUBREC, P.PUBREL, P.PUBCOMP)

# field -> (strategy, places allowed). MQTT 5 section 2.2.2.2 table 2-4.
PROPERTY_STRATEGIES: dict[str, tuple[st.SearchStrategy[Any], set[Any]]] = {
    "payload_format_indicator": (boolean_byte, {P.PUBLISH, WILL}),
    "message_expiry_interval": (u32, {P.PUBLISH, WILL}),
    "content_type": (text, {P.PUBLISH, WILL}),
    "response_topic": (text, {P.PUBLISH, WILL}),
    "correlation_data": (binary, {P.PUBLISH, WILL}),
    "session_expiry_interval": (u32, {P.CONNECT, P.CONNACK, P.DISCONNECT}),
    "assigned_client_identifier": (text, {P.CONNACK}),
    "server_keep_alive": (u16, {P.CONNACK}),
    "authentication_method": (text, {P.CONNECT, P.CONNACK, P.AUTH}),
    "authentication_data": (binary, {P.CONNECT, P.CONNACK, P.AUTH}),
    "request_problem_information": (boolean_byte, {P.CONNECT}),
    "will_delay_interval": (u32, {WILL}),
    "request_response_information": (boolean_byte, {P.CONNECT}),
    "response_information": (text, {P.CONNACK}),
    "server_reference": (text, {P.CONNACK, P.DISCONNECT}),
    "reason_string": (
        text,
        {P.CONNACK, *ACKS, P.SUBACK, P.UNSUBACK, P.DISCONNECT, P.AUTH},
    ),
    "receive_maximum": (st.integers(1, 0xFFFF), {P.CONNECT, P.CONNACK}),
    "topic_alias_maximum": (u16, {P.CONNECT, P.CONNACK}),
    "topic_alias": (u16, {P.PUBLISH}),
    "maximum_qos": (boolean_byte, {P.CONNACK}),
    "retain_available": (boolean_byte, {P.CONNACK}),
    "user_properties": (user_properties, set(P) - {P.PINGREQ, P.PINGRESP} | {WILL}),
    "maximum_packet_size": (st.integers(1, 0xFFFF_FFFF), {P.CONNECT, P.CONNACK}),
    "wildcard_subscription_available": (boolean_byte, {P.CONNACK}),
    "subscription_identifier_available": (boolean_byte, {P.CONNACK}),
    "shared_subscription_available": (boolean_byte, {P.CONNACK}),
    # Subscription Identifier: 1..268,435,455; several only in PUBLISH
    "subscription_identifiers": (st.just(()), {P.PUBLISH, P.SUBSCRIBE}),
}
SUBSCRIPTION_ID = st.integers(1, 268_435_455)


def properties(place: Any, version: int) -> st.SearchStrategy[Properties]:
    if version != 5:
        return st.just(EMPTY_PROPERTIES)
    optional = {
        name: strat for name, (strat, places) in PROPERTY_STRATEGIES.items() if place in places
    }
    if place == P.PUBLISH:
        optional["subscription_identifiers"] = st.lists(SUBSCRIPTION_ID, max_size=3).map(tuple)
    elif place == P.SUBSCRIBE:
        optional["subscription_identifiers"] = st.lists(SUBSCRIPTION_ID, max_size=1).map(tuple)
    else:
        optional.pop("subscription_identifiers", None)
    return st.fixed_dictionaries({}, optional=optional).map(lambda d: Properties(**d))


def reason(version: int) -> st.SearchStrategy[int]:
    # MQTT 5 acks carry any byte (the connection layer judges it); 3.x has none
    return u8 if version == 5 else st.just(0)


@st.composite
def connects(draw: st.DrawFn, version: int) -> Connect:
    will = None
    if draw(st.booleans()):
        will = Will(
            draw(text),
            draw(binary),
            draw(st.integers(0, 2)),
            draw(st.booleans()),
            draw(properties(WILL, version)),
        )
    username = draw(st.none() | text)
    password = draw(st.none() | binary)
    if version != 5 and username is None:
        password = None  # [MQTT-3.1.2-22]
    return Connect(
        version,
        draw(text),
        draw(st.booleans()),
        draw(u16),
        will,
        username,
        password,
        draw(properties(P.CONNECT, version)),
        "MQIsdp" if version == 3 else "MQTT",
    )


@st.composite
def connacks(draw: st.DrawFn, version: int) -> ConnAck:
    if version == 5:
        return ConnAck(draw(st.booleans()), draw(u8), draw(properties(P.CONNACK, 5)))
    # the 3.x return codes, as the MQTT 5 reason codes they decode to
    code = draw(st.sampled_from([0x00, 0x84, 0x85, 0x88, 0x86, 0x87]))
    return ConnAck(draw(st.booleans()) if version == 4 else False, code)


@st.composite
def publishes(draw: st.DrawFn, version: int) -> Publish:
    qos = draw(st.integers(0, 2))
    return Publish(
        draw(text),
        draw(st.binary(max_size=300)),
        qos,
        draw(st.booleans()),
        draw(st.booleans()) if qos else False,
        draw(packet_id) if qos else None,
        draw(properties(P.PUBLISH, version)),
    )


def acks(cls: Any, place: PacketType, version: int) -> st.SearchStrategy[Packet]:
    return st.builds(cls, packet_id, reason(version), properties(place, version))


@st.composite
def subscriptions(draw: st.DrawFn, version: int) -> Subscription:
    if version == 5:
        return Subscription(
            draw(text),
            draw(st.integers(0, 2)),
            draw(st.booleans()),
            draw(st.booleans()),
            draw(st.integers(0, 2)),
        )
    return Subscription(draw(text), draw(st.integers(0, 2)))


def subscribes(version: int) -> st.SearchStrategy[Subscribe]:
    return st.builds(
        Subscribe,
        packet_id,
        st.lists(subscriptions(version), min_size=1, max_size=4).map(tuple),
        properties(P.SUBSCRIBE, version),
    )


def subacks(version: int) -> st.SearchStrategy[SubAck]:
    codes = u8 if version == 5 else st.sampled_from([0, 1, 2, 0x80])
    return st.builds(
        SubAck,
        packet_id,
        st.lists(codes, min_size=1, max_size=5).map(tuple),
        properties(P.SUBACK, version),
    )


def unsubscribes(version: int) -> st.SearchStrategy[Unsubscribe]:
    return st.builds(
        Unsubscribe,
        packet_id,
        st.lists(text, min_size=1, max_size=4).map(tuple),
        properties(P.UNSUBSCRIBE, version),
    )


def unsubacks(version: int) -> st.SearchStrategy[UnsubAck]:
    if version != 5:
        return st.builds(UnsubAck, packet_id)
    return st.builds(
        UnsubAck,
        packet_id,
        st.lists(u8, min_size=1, max_size=5).map(tuple),
        properties(P.UNSUBACK, 5),
    )


def packet_strategies(version: int) -> list[st.SearchStrategy[Packet]]:
    """One strategy per packet type that exists in `version`."""
    choices: list[st.SearchStrategy[Packet]] = [
        connects(version),
        connacks(version),
        publishes(version),
        acks(PubAck, P.PUBACK, version),
        acks(PubRec, P.PUBREC, version),
        acks(PubRel, P.PUBREL, version),
        acks(PubComp, P.PUBCOMP, version),
        subscribes(version),
        subacks(version),
        unsubscribes(version),
        unsubacks(version),
        st.just(PingReq()),
        st.just(PingResp()),
        st.builds(Disconnect, reason(version), properties(P.DISCONNECT, version)),
    ]
    if version == 5:
        choices.append(st.builds(Auth, u8, properties(P.AUTH, 5)))
    return choices


def packets(version: int) -> st.SearchStrategy[Packet]:
    return st.one_of(packet_strategies(version))


def decode_all(raw: bytes, version: int) -> Packet:
    res = decode(raw, version, BIG)
    assert res is not None
    pkt, end = res
    assert end == len(raw)
    return pkt


# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_roundtrip(version: int, data: st.DataObject) -> None:
    pkt = data.draw(packets(version))
    raw = encode(pkt, version)
    assert decode_all(raw, version) == pkt
    # canonical: re-encoding the decoded packet gives the same bytes
    assert encode(decode_all(raw, version), version) == raw


@pytest.mark.parametrize("version", VERSIONS)
@settings(max_examples=60)
@given(data=st.data())
def test_every_packet_type_roundtrips(version: int, data: st.DataObject) -> None:
    # one_of may favour some types; here every type is drawn in every example
    for strategy in packet_strategies(version):
        pkt = data.draw(strategy)
        assert decode_all(encode(pkt, version), version) == pkt


@pytest.mark.parametrize("version", VERSIONS)
@settings(max_examples=100)
@given(data=st.data())
def test_prefix_is_incomplete(version: int, data: st.DataObject) -> None:
    raw = encode(data.draw(packets(version)), version)
    cut = data.draw(st.integers(0, len(raw) - 1))
    assert decode(raw[:cut], version, BIG) is None
    assert decode(memoryview(raw)[:cut], version, BIG) is None


@pytest.mark.parametrize("version", VERSIONS)
@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_stream_split_anywhere(version: int, data: st.DataObject) -> None:
    pkts = data.draw(st.lists(packets(version), min_size=1, max_size=6))
    stream = b"".join(encode(p, version) for p in pkts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    buf = bytearray()
    got: list[Packet] = []
    offset = 0
    prev = 0
    for cut in [*cuts, len(stream)]:
        buf += stream[prev:cut]
        prev = cut
        while (res := decode(buf, version, BIG, offset)) is not None:
            pkt, offset = res
            got.append(pkt)
    assert got == pkts
    assert offset == len(stream)


@pytest.mark.parametrize("version", VERSIONS)
@settings(max_examples=200)
@given(data=st.data())
def test_publish_parts_match_encode(version: int, data: st.DataObject) -> None:
    pub = data.draw(publishes(version))
    head, tail = encode_publish_parts(
        pub.topic, pub.payload, pub.qos, pub.retain, pub.dup, pub.properties, version
    )
    if pub.qos:
        assert pub.packet_id is not None
        assert head + pub.packet_id.to_bytes(2, "big") + tail == encode(pub, version)
    else:
        assert head + tail == encode(pub, version)


@pytest.mark.parametrize("version", VERSIONS)
@settings(max_examples=500)
@given(raw=st.binary(max_size=64))
def test_arbitrary_bytes_never_crash(version: int, raw: bytes) -> None:
    try:
        res = decode(raw, version, 1024)
    except ProtocolError:
        return
    if res is not None:
        assert 0 < res[1] <= len(raw)


@pytest.mark.parametrize("version", VERSIONS)
@settings(max_examples=150)
@given(data=st.data())
def test_mutated_packets_never_crash(version: int, data: st.DataObject) -> None:
    raw = bytearray(encode(data.draw(packets(version)), version))
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(u8)
    try:
        res = decode(raw, version, BIG)
    except ProtocolError:
        return
    if res is not None:
        pkt, end = res
        assert 0 < end <= len(raw)
        # whatever decoded is a well-formed packet: it re-encodes and decodes to itself
        assert decode_all(encode(pkt, version), version) == pkt
