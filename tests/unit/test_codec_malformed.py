"""Malformed and protocol-violating input for pytbmq.protocol.codec.decode.

One row per rule: the bytes, the connection's protocol level, the error class and the
MQTT 5 reason code the error must carry (0x81 Malformed Packet, 0x82 Protocol Error,
0x84 Unsupported Protocol Version, 0x95 Packet Too Large). The property tables of MQTT 5
section 2.2.2.2 are restated here independently of the codec and checked exhaustively.
"""

from __future__ import annotations

import pytest

from pytbmq.errors import (
    MalformedPacket,
    ProtocolError,
    ProtocolViolation,
    UnsupportedProtocolVersion,
)
from pytbmq.protocol.codec import decode, encode_varint
from pytbmq.protocol.packets import PacketType, PropertyId

BIG = 1 << 28
MAL = (MalformedPacket, 0x81)
PV = (ProtocolViolation, 0x82)


def h(text: str) -> bytes:
    """Hex with free spacing; `'...'` quotes ASCII text."""
    out = bytearray()
    for i, chunk in enumerate(text.split("'")):
        out += chunk.encode("ascii") if i % 2 else bytes.fromhex(chunk)
    return bytes(out)


def packet(b0: int, body: bytes) -> bytes:
    return bytes((b0,)) + encode_varint(len(body)) + body


def prop_block(raw: bytes) -> bytes:
    return encode_varint(len(raw)) + raw


# Builders for MQTT 5 packets carrying a raw property block, so that each property rule can
# be tried in every packet type.
def v5_with_props(ptype: int, raw_props: bytes) -> bytes:
    pb = prop_block(raw_props)
    if ptype == PacketType.CONNECT:
        return packet(0x10, h("00 04 'MQTT' 05 02 00 3c") + pb + h("00 01 'c'"))
    if ptype == PacketType.CONNACK:
        return packet(0x20, h("00 00") + pb)
    if ptype == PacketType.PUBLISH:
        return packet(0x32, h("00 01 't' 00 01") + pb + b"payload")
    if ptype in (PacketType.PUBACK, PacketType.PUBREC, PacketType.PUBCOMP):
        return packet(ptype << 4, h("00 01 00") + pb)
    if ptype == PacketType.PUBREL:
        return packet(0x62, h("00 01 00") + pb)
    if ptype == PacketType.SUBSCRIBE:
        return packet(0x82, h("00 01") + pb + h("00 01 't' 01"))
    if ptype == PacketType.SUBACK:
        return packet(0x90, h("00 01") + pb + h("01"))
    if ptype == PacketType.UNSUBSCRIBE:
        return packet(0xA2, h("00 01") + pb + h("00 01 't'"))
    if ptype == PacketType.UNSUBACK:
        return packet(0xB0, h("00 01") + pb + h("00"))
    if ptype == PacketType.DISCONNECT:
        return packet(0xE0, h("00") + pb)
    if ptype == PacketType.AUTH:
        return packet(0xF0, h("18") + pb)
    raise AssertionError(ptype)


def v5_will_with_props(raw_props: bytes) -> bytes:
    # flags 0x06: will, clean start
    body = h("00 04 'MQTT' 05 06 00 3c 00 00 01 'c'") + prop_block(raw_props)
    return packet(0x10, body + h("00 01 'w' 00 01 'x'"))


WILL = "WILL"  # pseudo packet type: the Will Properties of CONNECT

# A valid encoding of each property (value 1 where a number is wanted).
PROPERTY_SAMPLES: dict[PropertyId, bytes] = {
    PropertyId.PAYLOAD_FORMAT_INDICATOR: h("01 01"),
    PropertyId.MESSAGE_EXPIRY_INTERVAL: h("02 00 00 00 01"),
    PropertyId.CONTENT_TYPE: h("03 00 01 'x'"),
    PropertyId.RESPONSE_TOPIC: h("08 00 01 'x'"),
    PropertyId.CORRELATION_DATA: h("09 00 01 00"),
    PropertyId.SUBSCRIPTION_IDENTIFIER: h("0b 01"),
    PropertyId.SESSION_EXPIRY_INTERVAL: h("11 00 00 00 01"),
    PropertyId.ASSIGNED_CLIENT_IDENTIFIER: h("12 00 01 'x'"),
    PropertyId.SERVER_KEEP_ALIVE: h("13 00 01"),
    PropertyId.AUTHENTICATION_METHOD: h("15 00 01 'x'"),
    PropertyId.AUTHENTICATION_DATA: h("16 00 01 00"),
    PropertyId.REQUEST_PROBLEM_INFORMATION: h("17 01"),
    PropertyId.WILL_DELAY_INTERVAL: h("18 00 00 00 01"),
    PropertyId.REQUEST_RESPONSE_INFORMATION: h("19 01"),
    PropertyId.RESPONSE_INFORMATION: h("1a 00 01 'x'"),
    PropertyId.SERVER_REFERENCE: h("1c 00 01 'x'"),
    PropertyId.REASON_STRING: h("1f 00 01 'x'"),
    PropertyId.RECEIVE_MAXIMUM: h("21 00 01"),
    PropertyId.TOPIC_ALIAS_MAXIMUM: h("22 00 01"),
    PropertyId.TOPIC_ALIAS: h("23 00 01"),
    PropertyId.MAXIMUM_QOS: h("24 01"),
    PropertyId.RETAIN_AVAILABLE: h("25 01"),
    PropertyId.USER_PROPERTY: h("26 00 01 'k' 00 01 'v'"),
    PropertyId.MAXIMUM_PACKET_SIZE: h("27 00 00 00 01"),
    PropertyId.WILDCARD_SUBSCRIPTION_AVAILABLE: h("28 01"),
    PropertyId.SUBSCRIPTION_IDENTIFIER_AVAILABLE: h("29 01"),
    PropertyId.SHARED_SUBSCRIPTION_AVAILABLE: h("2a 01"),
}

P = PacketType
ACKS = {P.PUBACK, P.PUBREC, P.PUBREL, P.PUBCOMP}
# MQTT 5 section 2.2.2.2, table 2-4 "Properties", restated.
ALLOWED: dict[PropertyId, set[PacketType | str]] = {
    PropertyId.PAYLOAD_FORMAT_INDICATOR: {P.PUBLISH, WILL},
    PropertyId.MESSAGE_EXPIRY_INTERVAL: {P.PUBLISH, WILL},
    PropertyId.CONTENT_TYPE: {P.PUBLISH, WILL},
    PropertyId.RESPONSE_TOPIC: {P.PUBLISH, WILL},
    PropertyId.CORRELATION_DATA: {P.PUBLISH, WILL},
    PropertyId.SUBSCRIPTION_IDENTIFIER: {P.PUBLISH, P.SUBSCRIBE},
    PropertyId.SESSION_EXPIRY_INTERVAL: {P.CONNECT, P.CONNACK, P.DISCONNECT},
    PropertyId.ASSIGNED_CLIENT_IDENTIFIER: {P.CONNACK},
    PropertyId.SERVER_KEEP_ALIVE: {P.CONNACK},
    PropertyId.AUTHENTICATION_METHOD: {P.CONNECT, P.CONNACK, P.AUTH},
    PropertyId.AUTHENTICATION_DATA: {P.CONNECT, P.CONNACK, P.AUTH},
    PropertyId.REQUEST_PROBLEM_INFORMATION: {P.CONNECT},
    PropertyId.WILL_DELAY_INTERVAL: {WILL},
    PropertyId.REQUEST_RESPONSE_INFORMATION: {P.CONNECT},
    PropertyId.RESPONSE_INFORMATION: {P.CONNACK},
    PropertyId.SERVER_REFERENCE: {P.CONNACK, P.DISCONNECT},
    PropertyId.REASON_STRING: {P.CONNACK, *ACKS, P.SUBACK, P.UNSUBACK, P.DISCONNECT, P.AUTH},
    PropertyId.RECEIVE_MAXIMUM: {P.CONNECT, P.CONNACK},
    PropertyId.TOPIC_ALIAS_MAXIMUM: {P.CONNECT, P.CONNACK},
    PropertyId.TOPIC_ALIAS: {P.PUBLISH},
    PropertyId.MAXIMUM_QOS: {P.CONNACK},
    PropertyId.RETAIN_AVAILABLE: {P.CONNACK},
    PropertyId.USER_PROPERTY: set(P) - {P.PINGREQ, P.PINGRESP} | {WILL},
    PropertyId.MAXIMUM_PACKET_SIZE: {P.CONNECT, P.CONNACK},
    PropertyId.WILDCARD_SUBSCRIPTION_AVAILABLE: {P.CONNACK},
    PropertyId.SUBSCRIPTION_IDENTIFIER_AVAILABLE: {P.CONNACK},
    PropertyId.SHARED_SUBSCRIPTION_AVAILABLE: {P.CONNACK},
}
PLACES: list[PacketType | str] = [*(t for t in P if t not in (P.PINGREQ, P.PINGRESP)), WILL]


def build(place: PacketType | str, raw_props: bytes) -> bytes:
    if place == WILL:
        return v5_will_with_props(raw_props)
    assert isinstance(place, PacketType)
    return v5_with_props(place, raw_props)


def check(raw: bytes, version: int, err: tuple[type[ProtocolError], int]) -> ProtocolError:
    cls, code = err
    with pytest.raises(cls) as exc_info:
        decode(raw, version, BIG)
    assert type(exc_info.value) is cls
    assert exc_info.value.reason_code == code
    return exc_info.value


# ---------------------------------------------------------------------------------------
# Property placement, exhaustively: every property in every packet type
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("place", PLACES, ids=lambda p: p if isinstance(p, str) else p.name)
@pytest.mark.parametrize("prop", list(PropertyId), ids=lambda p: p.name)
def test_property_allowed_only_where_table_2_4_says(
    prop: PropertyId, place: PacketType | str
) -> None:
    raw = build(place, PROPERTY_SAMPLES[prop])
    if place in ALLOWED[prop]:
        res = decode(raw, 5, BIG)
        assert res is not None
        assert res[1] == len(raw)
    else:
        check(raw, 5, MAL)


def test_builders_make_valid_packets() -> None:
    for place in PLACES:
        res = decode(build(place, b""), 5, BIG)
        assert res is not None


@pytest.mark.parametrize(
    "ident", [0x00, 0x04, 0x05, 0x0A, 0x10, 0x14, 0x1B, 0x2B, 0x7F, 0x80, 0xFF]
)
def test_unknown_property_identifier(ident: int) -> None:
    check(v5_with_props(P.PUBLISH, bytes((ident, 0))), 5, MAL)


# ---------------------------------------------------------------------------------------
# Property values and repetition
# ---------------------------------------------------------------------------------------

# "It is a Protocol Error to include X more than once": every property but User Property and
# Subscription Identifier (which may repeat in PUBLISH).
SINGLE_PROPERTIES = [
    (prop, sorted(ALLOWED[prop], key=str)[0])
    for prop in PropertyId
    if prop not in (PropertyId.USER_PROPERTY, PropertyId.SUBSCRIPTION_IDENTIFIER)
]


@pytest.mark.parametrize(("prop", "place"), SINGLE_PROPERTIES, ids=lambda x: str(x))
def test_property_more_than_once_is_protocol_error(
    prop: PropertyId, place: PacketType | str
) -> None:
    raw = build(place, PROPERTY_SAMPLES[prop] * 2)
    err = check(raw, 5, PV)
    assert "more than once" in str(err)


def test_user_property_may_repeat() -> None:
    raw = v5_with_props(P.CONNACK, PROPERTY_SAMPLES[PropertyId.USER_PROPERTY] * 3)
    assert decode(raw, 5, BIG) is not None


def test_subscription_identifier_may_repeat_in_publish() -> None:
    assert decode(v5_with_props(P.PUBLISH, h("0b 01 0b 02")), 5, BIG) is not None


def test_subscription_identifier_more_than_once_in_subscribe() -> None:
    # 3.8.2.1.2: "It is a Protocol Error to include the Subscription Identifier more than once"
    check(v5_with_props(P.SUBSCRIBE, h("0b 01 0b 02")), 5, PV)


@pytest.mark.parametrize("place", [P.PUBLISH, P.SUBSCRIBE], ids=lambda p: p.name)
def test_subscription_identifier_zero(place: PacketType) -> None:
    # 3.8.2.1.2: "It is a Protocol Error if the Subscription Identifier has a value of 0"
    check(v5_with_props(place, h("0b 00")), 5, PV)


BOOLEAN_PROPERTIES = [
    (0x01, P.PUBLISH),  # payload format indicator
    (0x01, WILL),
    (0x17, P.CONNECT),  # request problem information
    (0x19, P.CONNECT),  # request response information
    (0x24, P.CONNACK),  # maximum QoS
    (0x25, P.CONNACK),  # retain available
    (0x28, P.CONNACK),  # wildcard subscription available
    (0x29, P.CONNACK),  # subscription identifiers available
    (0x2A, P.CONNACK),  # shared subscription available
]


@pytest.mark.parametrize(("ident", "place"), BOOLEAN_PROPERTIES, ids=str)
@pytest.mark.parametrize("value", [2, 0x80, 0xFF])
def test_boolean_property_other_than_0_or_1(
    ident: int, place: PacketType | str, value: int
) -> None:
    check(build(place, bytes((ident, value))), 5, PV)
    for ok in (0, 1):
        assert decode(build(place, bytes((ident, ok))), 5, BIG) is not None


@pytest.mark.parametrize("place", [P.CONNECT, P.CONNACK], ids=lambda p: p.name)
def test_receive_maximum_zero(place: PacketType) -> None:
    check(v5_with_props(place, h("21 00 00")), 5, PV)  # 3.1.2.11.3 / 3.2.2.3.3


@pytest.mark.parametrize("place", [P.CONNECT, P.CONNACK], ids=lambda p: p.name)
def test_maximum_packet_size_zero(place: PacketType) -> None:
    check(v5_with_props(place, h("27 00 00 00 00")), 5, PV)  # 3.1.2.11.4 / 3.2.2.3.6


@pytest.mark.parametrize("value", ["00 00", "ff ff"])
def test_topic_alias_maximum_any_u16(value: str) -> None:
    assert decode(v5_with_props(P.CONNECT, h("22 " + value)), 5, BIG) is not None


@pytest.mark.parametrize(
    "raw_props",
    [
        h("02 00 00 01"),  # four byte integer cut short
        h("23 00"),  # two byte integer cut short
        h("01"),  # byte missing
        h("03 00 05 'ab'"),  # string longer than the block
        h("03 00"),  # string length cut short
        h("09 00 03 01"),  # binary longer than the block
        h("26 00 01 'k' 00 05 'v'"),  # user property value too long
        h("26 00 01 'k'"),  # user property value missing
        h("0b 80"),  # variable byte integer cut short
        h("0b 80 80 80 80 01"),  # variable byte integer of 5 bytes
        h("0b 81 00"),  # variable byte integer not minimally encoded [MQTT-1.5.5-1]
        h("03 00 02 c3 28"),  # invalid UTF-8
        h("03 00 01 00"),  # U+0000 [MQTT-1.5.4-2]
        h("26 00 01 'k' 00 03 ed a0 80"),  # surrogate in a user property [MQTT-1.5.4-1]
    ],
    ids=lambda b: b.hex(),
)
def test_property_value_malformed(raw_props: bytes) -> None:
    check(v5_with_props(P.PUBLISH, raw_props), 5, MAL)


def test_property_length_past_end_of_packet() -> None:
    check(h("30 06 00 01 'a' 05 01 01"), 5, MAL)
    check(h("40 05 00 01 00 03 1f"), 5, MAL)


def test_property_length_varint_truncated() -> None:
    check(h("30 04 00 01 'a' 80"), 5, MAL)


def test_publish_v5_without_property_length() -> None:
    check(h("30 05 00 03 'a/b'"), 5, MAL)
    check(h("32 07 00 03 'a/b' 00 01"), 5, MAL)


# ---------------------------------------------------------------------------------------
# Fixed header [MQTT-2.1.3-1], remaining length [MQTT-1.5.5]
# ---------------------------------------------------------------------------------------

BAD_FIRST_BYTES = [
    # (first byte, version, why)
    (0x00, 4, "reserved type 0"),
    (0x00, 5, "reserved type 0"),
    (0x0F, 5, "reserved type 0"),
    (0xF0, 3, "AUTH on 3.1"),
    (0xF0, 4, "AUTH on 3.1.1"),
    (0x36, 4, "PUBLISH QoS 3 [MQTT-3.3.1-4]"),
    (0x37, 5, "PUBLISH QoS 3 retain [MQTT-3.3.1-4]"),
    (0x3E, 5, "PUBLISH QoS 3 dup [MQTT-3.3.1-4]"),
    (0x38, 4, "PUBLISH DUP with QoS 0 [MQTT-3.3.1-2]"),
    (0x39, 5, "PUBLISH DUP with QoS 0 retain [MQTT-3.3.1-2]"),
    (0x60, 4, "PUBREL flags 0000"),
    (0x63, 5, "PUBREL flags 0011"),
    (0x80, 4, "SUBSCRIBE flags 0000"),
    (0x8A, 3, "SUBSCRIBE flags 1010"),
    (0xA0, 5, "UNSUBSCRIBE flags 0000"),
    (0xA3, 4, "UNSUBSCRIBE flags 0011"),
]
for _t in (1, 2, 4, 5, 7, 9, 11, 12, 13, 14, 15):
    BAD_FIRST_BYTES += [((_t << 4) | 0x02, 5, f"type {_t} flags 0010"), ((_t << 4) | 1, 5, "")]


@pytest.mark.parametrize(("b0", "version", "why"), BAD_FIRST_BYTES, ids=str)
def test_bad_first_byte(b0: int, version: int, why: str) -> None:
    # detected from the first byte alone, and also with a complete packet behind it
    check(bytes((b0,)), version, MAL)
    check(bytes((b0, 2, 0, 1)), version, MAL)


def test_remaining_length_of_five_bytes() -> None:
    # detected as soon as the 4th length byte shows a continuation bit
    check(h("30 ff ff ff ff"), 4, MAL)
    check(h("30 80 80 80 80 01"), 5, MAL)
    check(h("c0 ff ff ff 80"), 4, MAL)


def test_remaining_length_not_minimal() -> None:
    check(h("c0 80 00"), 4, MAL)  # [MQTT-1.5.5-1]
    check(h("30 85 80 00 00 01 'a' 00 00"), 4, MAL)


# ---------------------------------------------------------------------------------------
# Fixed-size packets with leftover bytes
# ---------------------------------------------------------------------------------------

LEFTOVER = [
    (h("c0 01 00"), 4, "PINGREQ remaining length 1"),
    (h("c0 01 00"), 5, "PINGREQ remaining length 1"),
    (h("d0 01 00"), 4, "PINGRESP remaining length 1"),
    (h("e0 01 00"), 4, "DISCONNECT 3.1.1 remaining length 1"),
    (h("e0 01 00"), 3, "DISCONNECT 3.1 remaining length 1"),
    (h("40 03 00 01 00"), 4, "PUBACK 3.1.1 remaining length 3"),
    (h("50 03 00 01 00"), 3, "PUBREC 3.1 remaining length 3"),
    (h("62 04 00 01 00 00"), 4, "PUBREL 3.1.1 remaining length 4"),
    (h("70 03 00 01 00"), 4, "PUBCOMP 3.1.1 remaining length 3"),
    (h("b0 03 00 01 00"), 4, "UNSUBACK 3.1.1 remaining length 3"),
    (h("20 03 00 00 00"), 4, "CONNACK 3.1.1 remaining length 3"),
    (h("20 03 00 00 00"), 3, "CONNACK 3.1 remaining length 3"),
    (h("40 05 00 01 00 00 ee"), 5, "PUBACK 5 byte after properties"),
    (h("e0 03 00 00 ee"), 5, "DISCONNECT 5 byte after properties"),
    (h("f0 03 00 00 ee"), 5, "AUTH byte after properties"),
    (h("20 04 00 00 00 ee"), 5, "CONNACK 5 byte after properties"),
    (h("10 10 00 04 'MQTT' 04 02 00 3c 00 03 'abc' ee"), 4, "CONNECT trailing byte"),
]


@pytest.mark.parametrize(("raw", "version", "why"), LEFTOVER, ids=str)
def test_bytes_after_last_field(raw: bytes, version: int, why: str) -> None:
    check(raw, version, MAL)


SHORT = [
    (h("40 01 00"), 5, "PUBACK remaining length 1"),
    (h("40 00"), 4, "PUBACK remaining length 0"),
    (h("20 01 00"), 4, "CONNACK remaining length 1"),
    (h("20 02 00 00"), 5, "CONNACK 5 without property length"),
    (h("b0 02 00 01"), 5, "UNSUBACK 5 without property length"),
    (h("b0 03 00 01 00"), 5, "UNSUBACK 5 without reason codes"),
    (h("90 02 00 01"), 4, "SUBACK without return codes"),
    (h("90 03 00 01 00"), 5, "SUBACK 5 without reason codes"),
    (h("30 01 00"), 4, "PUBLISH topic length cut"),
    (h("30 00"), 4, "PUBLISH empty body"),
    (h("82 01 00"), 4, "SUBSCRIBE packet id cut"),
    (h("10 01 00"), 4, "CONNECT protocol name cut"),
]


@pytest.mark.parametrize(("raw", "version", "why"), SHORT, ids=str)
def test_fields_missing(raw: bytes, version: int, why: str) -> None:
    check(raw, version, MAL)


# ---------------------------------------------------------------------------------------
# Packet identifiers [MQTT-2.2.1-3] (3.1.1: [MQTT-2.3.1-1])
# ---------------------------------------------------------------------------------------

ZERO_PACKET_ID = [
    (h("32 07 00 03 'a/b' 00 00"), 4, "PUBLISH QoS 1"),
    (h("34 08 00 03 'a/b' 00 00 00"), 5, "PUBLISH QoS 2"),
    (h("40 02 00 00"), 4, "PUBACK"),
    (h("50 02 00 00"), 5, "PUBREC"),
    (h("62 03 00 00 00"), 5, "PUBREL"),
    (h("70 02 00 00"), 3, "PUBCOMP"),
    (h("82 06 00 00 00 01 'a' 00"), 4, "SUBSCRIBE"),
    (h("90 03 00 00 00"), 4, "SUBACK"),
    (h("a2 05 00 00 00 01 'a'"), 4, "UNSUBSCRIBE"),
    (h("b0 02 00 00"), 4, "UNSUBACK"),
    (h("b0 04 00 00 00 00"), 5, "UNSUBACK 5"),
]


@pytest.mark.parametrize(("raw", "version", "why"), ZERO_PACKET_ID, ids=str)
def test_packet_identifier_zero(raw: bytes, version: int, why: str) -> None:
    check(raw, version, MAL)


def test_publish_qos1_without_packet_identifier() -> None:
    check(h("32 05 00 03 'a/b'"), 4, MAL)
    check(h("32 06 00 03 'a/b' 01"), 4, MAL)


# ---------------------------------------------------------------------------------------
# UTF-8 strings [MQTT-1.5.4-1] [MQTT-1.5.4-2]
# ---------------------------------------------------------------------------------------

BAD_UTF8 = [
    ("c3 28", "invalid continuation"),
    ("c0 af", "overlong '/'"),
    ("e0 80 af", "overlong 3-byte"),
    ("ed a0 80", "UTF-16 surrogate U+D800"),
    ("ed bf bf", "UTF-16 surrogate U+DFFF"),
    ("f4 90 80 80", "beyond U+10FFFF"),
    ("ff", "invalid byte"),
    ("e2 82", "truncated sequence"),
    ("61 00 62", "U+0000"),
]


@pytest.mark.parametrize(("utf8", "why"), BAD_UTF8, ids=str)
@pytest.mark.parametrize("version", [3, 4, 5])
def test_publish_topic_bad_utf8(utf8: str, why: str, version: int) -> None:
    topic = bytes.fromhex(utf8)
    body = len(topic).to_bytes(2, "big") + topic + (b"\x00" if version == 5 else b"")
    check(packet(0x30, body), version, MAL)


@pytest.mark.parametrize(("utf8", "why"), BAD_UTF8, ids=str)
def test_other_strings_bad_utf8(utf8: str, why: str) -> None:
    s = bytes.fromhex(utf8)
    field = len(s).to_bytes(2, "big") + s
    # client identifier, user name, will topic, topic filters
    check(packet(0x10, h("00 04 'MQTT' 04 02 00 3c") + field), 4, MAL)
    check(packet(0x10, h("00 04 'MQTT' 04 82 00 3c 00 01 'c'") + field), 4, MAL)
    check(packet(0x10, h("00 04 'MQTT' 04 06 00 3c 00 01 'c'") + field + h("00 00")), 4, MAL)
    check(packet(0x82, h("00 01") + field + h("00")), 4, MAL)
    check(packet(0xA2, h("00 01 00") + field), 5, MAL)
    check(packet(0x10, h("00 04 'MQTT' 05 02 00 3c 00") + field), 5, MAL)


def test_string_length_past_end_of_packet() -> None:
    check(h("30 03 00 05 'a'"), 4, MAL)
    check(h("a2 05 00 01 00 09 'a'"), 4, MAL)
    check(h("10 0f 00 04 'MQTT' 04 02 00 3c 00 09 'abc'"), 4, MAL)


# ---------------------------------------------------------------------------------------
# CONNECT (section 3.1)
# ---------------------------------------------------------------------------------------


def connect(name: bytes, level: int, flags: int, rest: bytes = h("00 01 'c'")) -> bytes:
    body = len(name).to_bytes(2, "big") + name + bytes((level, flags)) + h("00 3c")
    if level == 5:
        body += b"\x00"
    return packet(0x10, body + rest)


@pytest.mark.parametrize(
    ("name", "level"),
    [(b"MQTT", 6), (b"MQTT", 3), (b"MQTT", 0), (b"MQTT", 0xFF), (b"MQIsdp", 4), (b"MQIsdp", 5)],
)
@pytest.mark.parametrize("conn_version", [3, 4, 5])
def test_connect_unsupported_level(name: bytes, level: int, conn_version: int) -> None:
    # [MQTT-3.1.2-2]: the server answers CONNACK 0x84 (3.x: return code 1)
    raw = connect(name, level, 0x02)
    err = check(raw, conn_version, (UnsupportedProtocolVersion, 0x84))
    assert isinstance(err, UnsupportedProtocolVersion)
    assert err.protocol_level == level


def test_connect_unsupported_level_reported_before_the_rest_is_parsed() -> None:
    # level 6 with a body the codec cannot parse: the version is still reported
    raw = packet(0x10, h("00 04 'MQTT' 06 ff"))
    check(raw, 5, (UnsupportedProtocolVersion, 0x84))


@pytest.mark.parametrize("name", [b"MQTX", b"mqtt", b"MQIsdP", b"", b"MQTTMQTT", b"\xff\xfe"])
def test_connect_unknown_protocol_name(name: bytes) -> None:
    # [MQTT-3.1.2-1]: not MQTT -> the server MAY disconnect; we do, as Malformed Packet
    check(connect(name, 4, 0x02), 4, MAL)


@pytest.mark.parametrize("level", [3, 4, 5])
def test_connect_reserved_flag(level: int) -> None:
    name = b"MQIsdp" if level == 3 else b"MQTT"
    check(connect(name, level, 0x03), 4, MAL)  # [MQTT-3.1.2-3]


@pytest.mark.parametrize("level", [3, 4, 5])
@pytest.mark.parametrize(
    ("flags", "why"),
    [
        (0x0A, "Will QoS 1 without Will Flag [MQTT-3.1.2-11] (3.1.1: -13)"),
        (0x12, "Will QoS 2 without Will Flag [MQTT-3.1.2-11] (3.1.1: -13)"),
        (0x22, "Will Retain without Will Flag [MQTT-3.1.2-13] (3.1.1: -15)"),
        (0x1E, "Will QoS 3 [MQTT-3.1.2-14] (5.0: -12)"),
        (0x1A, "Will QoS 3 without Will Flag"),
    ],
)
def test_connect_will_flags(level: int, flags: int, why: str) -> None:
    name = b"MQIsdp" if level == 3 else b"MQTT"
    rest = h("00 01 'c'")
    if flags & 0x04:
        rest += (b"\x00" if level == 5 else b"") + h("00 01 'w' 00 01 'x'")
    check(connect(name, level, flags, rest), 4, MAL)


@pytest.mark.parametrize("level", [3, 4])
def test_connect_password_without_username_on_3x(level: int) -> None:
    name = b"MQIsdp" if level == 3 else b"MQTT"
    check(connect(name, level, 0x42, h("00 01 'c' 00 01 'p'")), level, MAL)  # [MQTT-3.1.2-22]


def test_connect_password_without_username_on_5_is_allowed() -> None:
    assert decode(connect(b"MQTT", 5, 0x42, h("00 01 'c' 00 01 'p'")), 5, BIG) is not None


@pytest.mark.parametrize(
    ("flags", "rest", "why"),
    [
        (0x02, b"", "client identifier missing"),
        (0x06, h("00 01 'c' 00 01 'w'"), "will payload missing"),
        (0x06, h("00 01 'c'"), "will topic missing"),
        (0x82, h("00 01 'c'"), "user name missing"),
        (0xC2, h("00 01 'c' 00 01 'u'"), "password missing"),
        (0xC2, h("00 01 'c' 00 01 'u' 00 05 'p'"), "password too long"),
        (0x02, h("00 01 'c' 00"), "byte after client identifier"),
    ],
    ids=str,
)
def test_connect_fields_missing(flags: int, rest: bytes, why: str) -> None:
    check(connect(b"MQTT", 4, flags, rest), 4, MAL)


def test_connect_v5_will_properties_missing() -> None:
    check(connect(b"MQTT", 5, 0x06, h("00 01 'c'")), 5, MAL)


def test_connect_header_cut_short() -> None:
    check(packet(0x10, h("00 04 'MQTT'")), 4, MAL)  # level missing
    check(packet(0x10, h("00 04 'MQTT' 04 02 00")), 4, MAL)  # keep alive cut
    check(packet(0x10, h("00 04 'MQTT' 05 02 00 3c")), 5, MAL)  # property length missing


# ---------------------------------------------------------------------------------------
# CONNACK
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [4, 5])
def test_connack_reserved_ack_flags(version: int) -> None:
    raw = h("20 02 02 00") if version == 4 else h("20 03 80 00 00")
    check(raw, version, MAL)  # [MQTT-3.2.2-1]


@pytest.mark.parametrize("version", [3, 4])
@pytest.mark.parametrize("rc", [6, 0x80, 0xFF])
def test_connack_reserved_return_code(version: int, rc: int) -> None:
    check(bytes((0x20, 2, 0, rc)), version, MAL)  # 3.1.1 table 3.1: 6-255 reserved


def test_connack_v5_any_reason_code_decodes() -> None:
    res = decode(h("20 03 00 ee 00"), 5, BIG)
    assert res is not None


# ---------------------------------------------------------------------------------------
# SUBSCRIBE / SUBACK / UNSUBSCRIBE / UNSUBACK
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [3, 4, 5])
def test_subscribe_without_topic_filter(version: int) -> None:
    raw = h("82 03 00 01 00") if version == 5 else h("82 02 00 01")
    check(raw, version, PV)  # [MQTT-3.8.3-3]


@pytest.mark.parametrize("version", [3, 4])
@pytest.mark.parametrize("option", [0x04, 0x08, 0x40, 0x80, 0xFD])
def test_subscribe_3x_reserved_qos_bits(version: int, option: int) -> None:
    check(packet(0x82, h("00 01 00 01 'a'") + bytes((option,))), version, MAL)  # [MQTT-3-8.3-4]


@pytest.mark.parametrize("version", [3, 4, 5])
def test_subscribe_qos_3(version: int) -> None:
    props = b"\x00" if version == 5 else b""
    check(packet(0x82, h("00 01") + props + h("00 01 'a' 03")), version, MAL)


@pytest.mark.parametrize("option", [0x40, 0x80, 0xC0, 0x41])
def test_subscribe_v5_reserved_option_bits(option: int) -> None:
    check(packet(0x82, h("00 01 00 00 01 'a'") + bytes((option,))), 5, MAL)  # [MQTT-3.8.3-5]


def test_subscribe_v5_retain_handling_3() -> None:
    check(packet(0x82, h("00 01 00 00 01 'a' 30")), 5, PV)  # 3.8.3.1


def test_subscribe_missing_options_byte() -> None:
    check(packet(0x82, h("00 01 00 01 'a'")), 4, MAL)
    check(packet(0x82, h("00 01 00 01 'a' 01 00 01 'b'")), 4, MAL)


def test_subscribe_wildcards_are_not_checked_here() -> None:
    # topic filter syntax is pytbmq.topics' job
    assert decode(packet(0x82, h("00 01 00 03 'a#b' 00")), 4, BIG) is not None


@pytest.mark.parametrize("version", [3, 4, 5])
def test_unsubscribe_without_topic_filter(version: int) -> None:
    raw = h("a2 03 00 01 00") if version == 5 else h("a2 02 00 01")
    check(raw, version, PV)  # [MQTT-3.10.3-2]


@pytest.mark.parametrize("code", [0x03, 0x10, 0x7F, 0x81])
def test_suback_3x_reserved_return_code(code: int) -> None:
    check(bytes((0x90, 3, 0, 1, code)), 4, MAL)  # 3.1.1 [MQTT-3.9.3-2]


def test_suback_v5_any_reason_code_decodes() -> None:
    assert decode(h("90 04 00 01 00 ee"), 5, BIG) is not None


# ---------------------------------------------------------------------------------------
# Every error is a ProtocolError carrying the reason code
# ---------------------------------------------------------------------------------------


def test_error_classes_carry_reason_codes() -> None:
    assert issubclass(MalformedPacket, ProtocolError)
    assert MalformedPacket("x").reason_code == 0x81
    assert ProtocolViolation("x").reason_code == 0x82
