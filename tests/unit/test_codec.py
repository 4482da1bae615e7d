"""Golden tests for pytbmq.protocol.codec: hand-written bytes next to the packet they mean.

Every row is checked both ways (decode(bytes) == packet and encode(packet) == bytes) for the
protocol level it names. Byte strings are written out by hand from the specs (MQTT 3.1,
3.1.1 and 5.0), never produced by the codec under test. Also here: incremental feeding,
streams of packets, the maximum packet size, encode_publish_parts and small helpers.
Malformed input lives in test_codec_malformed.py, property-based tests in
test_codec_roundtrip.py.
"""

from __future__ import annotations

from dataclasses import fields

import pytest

from pytbmq.errors import PacketTooLarge, ProtocolViolation
from pytbmq.protocol import codec
from pytbmq.protocol.codec import (
    decode,
    decode_properties,
    encode,
    encode_properties,
    encode_publish_parts,
    encode_varint,
    packet_size,
)
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
    PropertyId,
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

BIG = 1 << 28  # max_size that never limits


def h(text: str) -> bytes:
    """Hex with free spacing; `'...'` quotes ASCII text, e.g. h("00 04 'MQTT'")."""
    out = bytearray()
    for i, chunk in enumerate(text.split("'")):
        if i % 2:
            out += chunk.encode("ascii")
        else:
            out += bytes.fromhex(chunk)
    return bytes(out)


def test_hex_helper() -> None:
    assert h("00 04 'MQTT' 05") == b"\x00\x04MQTT\x05"


# ---------------------------------------------------------------------------------------
# Golden tables. (id, wire bytes, packet)
# ---------------------------------------------------------------------------------------

GOLDEN_V31: list[tuple[str, bytes, Packet]] = [
    # MQTT 3.1: protocol name "MQIsdp", level 3
    (
        "connect-3.1",
        h("10 11 00 06 'MQIsdp' 03 02 00 3c 00 03 'abc'"),
        Connect(3, "abc", protocol_name="MQIsdp"),
    ),
    (
        "connect-3.1-will-user-pass",
        h("10 1d 00 06 'MQIsdp' 03 ce 00 0a 00 02 'c1' 00 01 'w' 00 01 'x' 00 01 'u' 00 02 01 02"),
        Connect(
            3,
            "c1",
            clean_start=True,
            keep_alive=10,
            will=Will("w", b"x", 1, False),
            username="u",
            password=b"\x01\x02",
            protocol_name="MQIsdp",
        ),
    ),
    # 3.1 CONNACK: the first byte is reserved (no session present flag)
    ("connack-3.1", h("20 02 00 00"), ConnAck(False, 0)),
    ("connack-3.1-rc2", h("20 02 00 02"), ConnAck(False, 0x85)),
    ("publish-qos0", h("30 0a 00 03 'a/b' 'hello'"), Publish("a/b", b"hello")),
    (
        "publish-qos1",
        h("32 09 00 03 'a/b' 00 07 'hi'"),
        Publish("a/b", b"hi", qos=1, packet_id=7),
    ),
    ("puback", h("40 02 00 07"), PubAck(7)),
    ("pubrec", h("50 02 00 07"), PubRec(7)),
    ("pubrel", h("62 02 00 07"), PubRel(7)),
    ("pubcomp", h("70 02 00 07"), PubComp(7)),
    (
        "subscribe",
        h("82 08 00 01 00 03 'a/b' 02"),
        Subscribe(1, (Subscription("a/b", 2),)),
    ),
    ("suback", h("90 03 00 01 02"), SubAck(1, (2,))),
    ("unsubscribe", h("a2 07 00 02 00 03 'a/b'"), Unsubscribe(2, ("a/b",))),
    ("unsuback", h("b0 02 00 02"), UnsubAck(2)),
    ("pingreq", h("c0 00"), PingReq()),
    ("pingresp", h("d0 00"), PingResp()),
    ("disconnect", h("e0 00"), Disconnect()),
]

GOLDEN_V311: list[tuple[str, bytes, Packet]] = [
    # 3.1.2.1 protocol name "MQTT", 3.1.2.2 level 4
    (
        "connect-minimal",
        h("10 0f 00 04 'MQTT' 04 02 00 3c 00 03 'abc'"),
        Connect(4, "abc"),
    ),
    (
        # flags 0xEC: user name, password, will retain, will QoS 1, will; clean session 0
        "connect-will-user-pass",
        h(
            "10 1f 00 04 'MQTT' 04 ec 00 0a"
            " 00 02 'c1' 00 03 'w/t' 00 03 'bye' 00 01 'u' 00 02 01 02"
        ),
        Connect(
            4,
            "c1",
            clean_start=False,
            keep_alive=10,
            will=Will("w/t", b"bye", 1, True),
            username="u",
            password=b"\x01\x02",
        ),
    ),
    (
        # [MQTT-3.1.3-6] a zero-length client identifier is a valid string
        "connect-empty-client-id-keepalive-0",
        h("10 0c 00 04 'MQTT' 04 02 00 00 00 00"),
        Connect(4, "", keep_alive=0),
    ),
    ("connack-session-present", h("20 02 01 00"), ConnAck(True, 0)),
    ("connack-rc1", h("20 02 00 01"), ConnAck(False, 0x84)),
    ("connack-rc2", h("20 02 00 02"), ConnAck(False, 0x85)),
    ("connack-rc3", h("20 02 00 03"), ConnAck(False, 0x88)),
    ("connack-rc4", h("20 02 00 04"), ConnAck(False, 0x86)),
    ("connack-rc5", h("20 02 00 05"), ConnAck(False, 0x87)),
    ("publish-qos0", h("30 0a 00 03 'a/b' 'hello'"), Publish("a/b", b"hello")),
    ("publish-qos0-retain-empty", h("31 05 00 03 'a/b'"), Publish("a/b", b"", retain=True)),
    (
        # 0x3B = PUBLISH | DUP | QoS 1 | RETAIN
        "publish-qos1-dup-retain",
        h("3b 09 00 03 'a/b' 00 07 'hi'"),
        Publish("a/b", b"hi", qos=1, retain=True, dup=True, packet_id=7),
    ),
    (
        "publish-qos2",
        h("34 09 00 03 'a/b' ff ff 'hi'"),
        Publish("a/b", b"hi", qos=2, packet_id=65535),
    ),
    (
        "publish-utf8-topic",
        h("30 07 00 05 'a/' c3 a9 'b'"),
        Publish("a/\u00e9b", b""),
    ),
    ("puback", h("40 02 00 07"), PubAck(7)),
    ("pubrec", h("50 02 00 07"), PubRec(7)),
    ("pubrel", h("62 02 00 07"), PubRel(7)),  # [MQTT-3.6.1-1] flags 0010
    ("pubcomp", h("70 02 00 07"), PubComp(7)),
    (
        "subscribe",  # [MQTT-3.8.1-1] flags 0010
        h("82 0e 00 0a 00 03 'a/b' 01 00 03 'c/#' 02"),
        Subscribe(10, (Subscription("a/b", 1), Subscription("c/#", 2))),
    ),
    ("suback", h("90 05 00 0a 01 02 80"), SubAck(10, (1, 2, 0x80))),
    (
        "unsubscribe",  # [MQTT-3.10.1-1] flags 0010
        h("a2 0a 00 0b 00 03 'a/b' 00 01 'x'"),
        Unsubscribe(11, ("a/b", "x")),
    ),
    ("unsuback", h("b0 02 00 0b"), UnsubAck(11)),
    ("pingreq", h("c0 00"), PingReq()),
    ("pingresp", h("d0 00"), PingResp()),
    ("disconnect", h("e0 00"), Disconnect()),
]

# CONNECT with every CONNECT property (ids 0x11 0x15 0x16 0x17 0x19 0x21 0x22 0x26 0x27) and
# every Will property (0x01 0x02 0x03 0x08 0x09 0x18 0x26); flags 0xD6 = user name,
# password, will QoS 2, will, clean start.
CONNECT_V5_FULL = h(
    "10 61 00 04 'MQTT' 05 d6 00 1e"
    " 28"
    " 11 00 00 0e 10"
    " 15 00 05 'PLAIN'"
    " 16 00 02 01 02"
    " 17 00"
    " 19 01"
    " 21 00 14"
    " 22 00 0a"
    " 26 00 01 'k' 00 01 'v'"
    " 27 00 10 00 00"
    " 00 00"
    " 1f"
    " 01 01"
    " 02 00 00 00 1e"
    " 03 00 01 't'"
    " 08 00 01 'r'"
    " 09 00 01 aa"
    " 18 00 00 00 05"
    " 26 00 01 'a' 00 01 'b'"
    " 00 01 'w' 00 01 'x' 00 01 'u' 00 01 'p'"
)
CONNECT_V5_FULL_PACKET = Connect(
    5,
    "",
    clean_start=True,
    keep_alive=30,
    will=Will(
        "w",
        b"x",
        qos=2,
        retain=False,
        properties=Properties(
            payload_format_indicator=1,
            message_expiry_interval=30,
            content_type="t",
            response_topic="r",
            correlation_data=b"\xaa",
            will_delay_interval=5,
            user_properties=(("a", "b"),),
        ),
    ),
    username="u",
    password=b"p",
    properties=Properties(
        session_expiry_interval=3600,
        authentication_method="PLAIN",
        authentication_data=b"\x01\x02",
        request_problem_information=0,
        request_response_information=1,
        receive_maximum=20,
        topic_alias_maximum=10,
        user_properties=(("k", "v"),),
        maximum_packet_size=1_048_576,
    ),
)

# CONNACK with every CONNACK property.
CONNACK_V5_FULL = h(
    "20 44 01 00 41"
    " 11 00 00 00 3c"
    " 12 00 03 'id1'"
    " 13 00 1e"
    " 15 00 01 'M'"
    " 16 00 01 00"
    " 1a 00 02 'ri'"
    " 1c 00 02 'sr'"
    " 1f 00 02 'ok'"
    " 21 ff ff"
    " 22 00 05"
    " 24 01"
    " 25 00"
    " 26 00 01 'k' 00 01 'v'"
    " 27 00 00 ff ff"
    " 28 01"
    " 29 00"
    " 2a 01"
)
CONNACK_V5_FULL_PACKET = ConnAck(
    True,
    0,
    Properties(
        session_expiry_interval=60,
        assigned_client_identifier="id1",
        server_keep_alive=30,
        authentication_method="M",
        authentication_data=b"\x00",
        response_information="ri",
        server_reference="sr",
        reason_string="ok",
        receive_maximum=65535,
        topic_alias_maximum=5,
        maximum_qos=1,
        retain_available=0,
        user_properties=(("k", "v"),),
        maximum_packet_size=65535,
        wildcard_subscription_available=1,
        subscription_identifier_available=0,
        shared_subscription_available=1,
    ),
)

# PUBLISH with every PUBLISH property; two Subscription Identifiers (the largest is
# 268,435,455 = ff ff ff 7f) and two user properties kept in wire order.
PUBLISH_V5_FULL = h(
    "32 3a 00 03 'a/b' 00 01"
    " 31"
    " 01 01"
    " 02 00 00 01 00"
    " 03 00 04 'text'"
    " 08 00 03 'r/1'"
    " 09 00 02 de ad"
    " 0b 01"
    " 0b ff ff ff 7f"
    " 23 00 07"
    " 26 00 01 'b' 00 01 '2'"
    " 26 00 01 'a' 00 01 '1'"
    " 'p'"
)
PUBLISH_V5_FULL_PACKET = Publish(
    "a/b",
    b"p",
    qos=1,
    packet_id=1,
    properties=Properties(
        payload_format_indicator=1,
        message_expiry_interval=256,
        content_type="text",
        response_topic="r/1",
        correlation_data=b"\xde\xad",
        subscription_identifiers=(1, 268_435_455),
        topic_alias=7,
        user_properties=(("b", "2"), ("a", "1")),
    ),
)

GOLDEN_V5: list[tuple[str, bytes, Packet]] = [
    (
        "connect-minimal",  # property length 0 after keep alive
        h("10 10 00 04 'MQTT' 05 02 00 3c 00 00 03 'abc'"),
        Connect(5, "abc"),
    ),
    (
        # on MQTT 5 a password without a user name is allowed (3.1.2.9); flags 0x40
        "connect-password-only",
        h("10 12 00 04 'MQTT' 05 40 00 3c 00 00 01 'c' 00 02 'pw'"),
        Connect(5, "c", clean_start=False, password=b"pw"),
    ),
    ("connect-all-properties", CONNECT_V5_FULL, CONNECT_V5_FULL_PACKET),
    ("connack-minimal", h("20 03 00 00 00"), ConnAck(False, 0)),
    ("connack-bad-user-pass", h("20 03 00 86 00"), ConnAck(False, 0x86)),
    ("connack-all-properties", CONNACK_V5_FULL, CONNACK_V5_FULL_PACKET),
    ("publish-qos0", h("30 0b 00 03 'a/b' 00 'hello'"), Publish("a/b", b"hello")),
    (
        "publish-qos2-retain",
        h("35 07 00 01 'a' 12 34 00 'x'"),
        Publish("a", b"x", qos=2, retain=True, packet_id=0x1234),
    ),
    ("publish-all-properties", PUBLISH_V5_FULL, PUBLISH_V5_FULL_PACKET),
    (
        # 3.3.2.1: a zero-length topic is allowed with a Topic Alias
        "publish-empty-topic-alias",
        h("30 08 00 00 03 23 00 01 'hi'"),
        Publish("", b"hi", properties=Properties(topic_alias=1)),
    ),
    (
        # topic alias 0 is decoded; the connection layer rejects it
        "publish-topic-alias-0",
        h("30 09 00 01 'a' 03 23 00 00 'hi'"),
        Publish("a", b"hi", properties=Properties(topic_alias=0)),
    ),
    # 3.4.2.1 short form: reason 0 and no properties -> remaining length 2
    ("puback-short", h("40 02 00 01"), PubAck(1)),
    # remaining length 3: reason code without property length
    ("puback-reason-only", h("40 03 00 01 10"), PubAck(1, 0x10)),
    (
        "puback-reason-string",
        h("40 09 00 01 80 05 1f 00 02 'no'"),
        PubAck(1, 0x80, Properties(reason_string="no")),
    ),
    ("pubrec-short", h("50 02 00 02"), PubRec(2)),
    ("pubrec-reason-only", h("50 03 00 02 10"), PubRec(2, 0x10)),
    ("pubrel-short", h("62 02 00 03"), PubRel(3)),
    ("pubrel-reason-only", h("62 03 00 03 92"), PubRel(3, 0x92)),
    (
        "pubcomp-user-property",
        h("70 0b 00 04 00 07 26 00 01 'k' 00 01 'v'"),
        PubComp(4, 0, Properties(user_properties=(("k", "v"),))),
    ),
    (
        # options 0x2D: QoS 1, No Local, Retain As Published, Retain Handling 2
        "subscribe-options-and-properties",
        h("82 18 00 0a 09 0b 05 26 00 01 'k' 00 01 'v' 00 03 'a/b' 2d 00 03 'c/#' 00"),
        Subscribe(
            10,
            (Subscription("a/b", 1, True, True, 2), Subscription("c/#")),
            Properties(subscription_identifiers=(5,), user_properties=(("k", "v"),)),
        ),
    ),
    (
        "subscribe-no-properties",
        h("82 07 00 01 00 00 01 '#' 01"),
        Subscribe(1, (Subscription("#", 1),)),
    ),
    (
        "suback-reason-string",
        h("90 0a 00 0a 05 1f 00 02 'ok' 01 97"),
        SubAck(10, (1, 0x97), Properties(reason_string="ok")),
    ),
    ("suback-minimal", h("90 04 00 0a 00 02"), SubAck(10, (2,))),
    (
        "unsubscribe-user-property",
        h("a2 0f 00 0b 07 26 00 01 'k' 00 01 'v' 00 03 'a/b'"),
        Unsubscribe(11, ("a/b",), Properties(user_properties=(("k", "v"),))),
    ),
    ("unsuback", h("b0 05 00 0b 00 00 11"), UnsubAck(11, (0, 0x11))),
    (
        "unsuback-reason-string",
        h("b0 08 00 0b 04 1f 00 01 'r' 87"),
        UnsubAck(11, (0x87,), Properties(reason_string="r")),
    ),
    ("pingreq", h("c0 00"), PingReq()),
    ("pingresp", h("d0 00"), PingResp()),
    # 3.14.2.1 short form: reason 0 and no properties -> remaining length 0
    ("disconnect-short", h("e0 00"), Disconnect()),
    # 3.14.2.2.1: remaining length 1, property length absent
    ("disconnect-reason-only", h("e0 01 04"), Disconnect(0x04)),
    (
        "disconnect-all-properties",
        h("e0 0f 9c 0d 11 00 00 00 00 1c 00 01 's' 1f 00 01 'r'"),
        Disconnect(
            0x9C,
            Properties(session_expiry_interval=0, server_reference="s", reason_string="r"),
        ),
    ),
    # 3.15.2.1 short form
    ("auth-short", h("f0 00"), Auth()),
    (
        "auth-all-properties",
        h("f0 16 18 14 15 00 01 'M' 16 00 02 01 02 1f 00 01 'r' 26 00 01 'k' 00 01 'v'"),
        Auth(
            0x18,
            Properties(
                authentication_method="M",
                authentication_data=b"\x01\x02",
                reason_string="r",
                user_properties=(("k", "v"),),
            ),
        ),
    ),
]

GOLDEN = (
    [pytest.param(3, raw, pkt, id=f"3.1-{name}") for name, raw, pkt in GOLDEN_V31]
    + [pytest.param(4, raw, pkt, id=f"3.1.1-{name}") for name, raw, pkt in GOLDEN_V311]
    + [pytest.param(5, raw, pkt, id=f"5.0-{name}") for name, raw, pkt in GOLDEN_V5]
)


@pytest.mark.parametrize(("version", "raw", "packet"), GOLDEN)
def test_golden_decode(version: int, raw: bytes, packet: Packet) -> None:
    assert decode(raw, version, BIG) == (packet, len(raw))


@pytest.mark.parametrize(("version", "raw", "packet"), GOLDEN)
def test_golden_encode(version: int, raw: bytes, packet: Packet) -> None:
    assert encode(packet, version) == raw
    assert packet_size(packet, version) == len(raw)


@pytest.mark.parametrize(("version", "raw", "packet"), GOLDEN)
def test_golden_decode_from_bytearray_and_memoryview(
    version: int, raw: bytes, packet: Packet
) -> None:
    prefix = b"\xff\xee"
    ba = bytearray(prefix + raw + b"\xc0")
    assert decode(ba, version, BIG, len(prefix)) == (packet, len(prefix) + len(raw))
    assert decode(memoryview(ba), version, BIG, len(prefix)) == (packet, len(prefix) + len(raw))


def test_golden_tables_cover_every_packet_type() -> None:
    for table in (GOLDEN_V31, GOLDEN_V311):
        assert {type(p) for _, _, p in table} == set(codec._ENCODERS) - {Auth}
    assert {type(p) for _, _, p in GOLDEN_V5} == set(codec._ENCODERS)


def test_golden_v5_covers_every_property() -> None:
    seen: set[str] = set()

    def collect(props: Properties) -> None:
        for f in fields(Properties):
            if getattr(props, f.name) not in (None, ()):
                seen.add(f.name)

    for _, _, p in GOLDEN_V5:
        props = getattr(p, "properties", EMPTY_PROPERTIES)
        collect(props)
        will = getattr(p, "will", None)
        if will is not None:
            collect(will.properties)
    assert seen == {f.name for f in fields(Properties)}
    assert len(seen) == len(PropertyId)


# ---------------------------------------------------------------------------------------
# Decode-only and encode-only forms
# ---------------------------------------------------------------------------------------

DECODE_ONLY: list[tuple[str, int, bytes, Packet]] = [
    # Long forms the encoder never produces but a peer may send (5.0 3.4.2.1, 3.14.2.1).
    ("puback-explicit-success-and-empty-properties", 5, h("40 04 00 01 00 00"), PubAck(1)),
    ("puback-reason-and-empty-properties", 5, h("40 04 00 01 10 00"), PubAck(1, 0x10)),
    ("pubrel-explicit-success", 5, h("62 03 00 01 00"), PubRel(1)),
    ("disconnect-explicit-success", 5, h("e0 01 00"), Disconnect()),
    ("disconnect-reason-and-empty-properties", 5, h("e0 02 8e 00"), Disconnect(0x8E)),
    ("auth-explicit-success", 5, h("f0 02 00 00"), Auth()),
    ("auth-reason-only", 5, h("f0 01 19"), Auth(0x19)),
    # Properties in any order; user properties keep wire order, duplicates allowed.
    (
        "publish-properties-any-order",
        5,
        h("30 15 00 01 'a' 11 26 00 01 'k' 00 01 '1' 23 00 02 26 00 01 'k' 00 01 '1'"),
        Publish("a", b"", properties=Properties(topic_alias=2, user_properties=(("k", "1"),) * 2)),
    ),
    # [MQTT-1.5.4-1]: U+0001..U+001F, U+007F..U+009F and non-characters are not rejected
    ("publish-control-characters", 4, h("30 05 00 03 01 1f 7f"), Publish("\x01\x1f\x7f", b"")),
    ("publish-noncharacter", 4, h("30 05 00 03 ef bf bf"), Publish("\uffff", b"")),
    ("publish-c1-control", 5, h("30 05 00 02 c2 80 00"), Publish("\x80", b"")),
    # 4-byte UTF-8 (outside the BMP) is fine
    ("publish-astral", 4, h("30 06 00 04 f0 9f 98 80"), Publish("\U0001f600", b"")),
    # MQTT 3.1: the CONNACK first byte is reserved; it is ignored
    ("connack-3.1-reserved-byte-ignored", 3, h("20 02 01 00"), ConnAck(False, 0)),
]


@pytest.mark.parametrize(
    ("version", "raw", "packet"),
    [pytest.param(v, raw, p, id=name) for name, v, raw, p in DECODE_ONLY],
)
def test_decode_only_forms(version: int, raw: bytes, packet: Packet) -> None:
    assert decode(raw, version, BIG) == (packet, len(raw))


def test_puback_reason_code_zero_with_empty_properties_object_uses_short_form() -> None:
    # equal to EMPTY_PROPERTIES but not the same object
    assert encode(PubAck(1, 0, Properties()), 5) == h("40 02 00 01")
    assert encode(Disconnect(0, Properties()), 5) == h("e0 00")
    assert encode(Auth(0, Properties()), 5) == h("f0 00")


def test_auth_with_reason_and_no_properties_keeps_property_length() -> None:
    assert encode(Auth(0x18), 5) == h("f0 02 18 00")


def test_v5_only_fields_are_dropped_on_3x() -> None:
    props = Properties(reason_string="r", user_properties=(("k", "v"),))
    assert encode(PubAck(7, 0x10, props), 4) == h("40 02 00 07")
    assert encode(PubRel(7, 0x92), 3) == h("62 02 00 07")
    assert encode(Disconnect(0x8B, props), 4) == h("e0 00")
    assert encode(UnsubAck(11, (0, 0x11), props), 4) == h("b0 02 00 0b")
    assert encode(Publish("a/b", b"hi", properties=props), 4) == h("30 07 00 03 'a/b' 'hi'")
    assert encode(Subscribe(1, (Subscription("a", 1, True, True, 2),), props), 4) == h(
        "82 06 00 01 00 01 'a' 01"
    )


def test_session_present_is_not_sent_on_3_1() -> None:
    # MQTT 3.1 has no session present flag; 3.1.1 has it (3.2.2.2)
    assert encode(ConnAck(True, 0), 3) == h("20 02 00 00")
    assert encode(ConnAck(True, 0), 4) == h("20 02 01 00")


def test_connect_encodes_its_own_version_not_the_connection_version() -> None:
    pkt = Connect(5, "abc")
    assert encode(pkt, 4) == encode(pkt, 5) == h("10 10 00 04 'MQTT' 05 02 00 3c 00 00 03 'abc'")
    raw = h("10 0f 00 04 'MQTT' 04 02 00 3c 00 03 'abc'")
    assert decode(raw, 5, BIG) == (Connect(4, "abc"), len(raw))
    assert decode(raw, 3, BIG) == (Connect(4, "abc"), len(raw))


def test_auth_cannot_be_encoded_for_3x() -> None:
    for version in (3, 4):
        with pytest.raises(ValueError):
            encode(Auth(), version)


# ---------------------------------------------------------------------------------------
# 3.x reason code mapping
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "return_code"),
    [
        (0x00, 0),  # accepted
        (0x84, 1),  # unacceptable protocol version
        (0x85, 2),  # identifier rejected
        (0x88, 3),  # server unavailable
        (0x89, 3),  # server busy -> server unavailable
        (0x80, 3),  # unspecified error -> server unavailable
        (0x83, 3),  # implementation specific error -> server unavailable
        (0x97, 3),  # quota exceeded -> server unavailable
        (0x9C, 3),  # use another server -> server unavailable
        (0x9D, 3),  # server moved -> server unavailable
        (0x9F, 3),  # connection rate exceeded -> server unavailable
        (0x86, 4),  # bad user name or password
        (0x87, 5),  # not authorized
        (0x8A, 5),  # banned -> not authorized
        (0x8C, 5),  # bad authentication method -> not authorized
        (0x82, 5),  # anything else -> not authorized
    ],
)
@pytest.mark.parametrize("version", [3, 4])
def test_connack_reason_maps_to_3x_return_code(version: int, reason: int, return_code: int) -> None:
    # 3.1.1 section 3.2.2.3, table 3.1
    assert encode(ConnAck(False, reason), version) == bytes((0x20, 2, 0, return_code))


@pytest.mark.parametrize("version", [3, 4])
def test_suback_reason_codes_map_to_3x(version: int) -> None:
    # 3.1.1 section 3.9.3: 0x00, 0x01, 0x02 or 0x80 (failure)
    pkt = SubAck(1, (0, 1, 2, 0x80, 0x87, 0x97, 0xA2))
    assert encode(pkt, version) == h("90 09 00 01 00 01 02 80 80 80 80")


def test_suback_reason_without_3x_form_is_rejected() -> None:
    with pytest.raises(ValueError):
        encode(SubAck(1, (0x11,)), 4)
    assert encode(SubAck(1, (0x11,)), 5) == h("90 04 00 01 00 11")


# ---------------------------------------------------------------------------------------
# Variable Byte Integer (5.0 section 1.5.5, 3.1.1 section 2.2.3)
# ---------------------------------------------------------------------------------------

VARINTS = [
    (0, "00"),
    (127, "7f"),
    (128, "80 01"),
    (16_383, "ff 7f"),
    (16_384, "80 80 01"),
    (2_097_151, "ff ff 7f"),
    (2_097_152, "80 80 80 01"),
    (268_435_455, "ff ff ff 7f"),
]


@pytest.mark.parametrize(("value", "wire"), VARINTS)
def test_encode_varint(value: int, wire: str) -> None:
    assert encode_varint(value) == h(wire)


@pytest.mark.parametrize(("value", "wire"), VARINTS)
def test_remaining_length_decoding(value: int, wire: str) -> None:
    # Only the fixed header of a PUBLISH is present: the decoder waits for the body, and
    # the size check sees exactly 1 + len(varint) + value bytes.
    header = bytes((0x30,)) + h(wire)
    if value:
        assert decode(header, 4, len(header) + value) is None
    with pytest.raises(PacketTooLarge):
        decode(header, 4, len(header) + value - 1)


@pytest.mark.parametrize("value", [-1, 268_435_456])
def test_encode_varint_out_of_range(value: int) -> None:
    with pytest.raises(ValueError):
        encode_varint(value)


def test_long_publish_uses_multi_byte_remaining_length() -> None:
    # remaining length 202 = 0xCA 0x01
    raw = h("30 ca 01 00 03 'a/b'") + b"x" * 197
    pkt = Publish("a/b", b"x" * 197)
    assert decode(raw, 4, BIG) == (pkt, len(raw))
    assert encode(pkt, 4) == raw


def test_publish_remaining_length_limit() -> None:
    # the header of the largest PUBLISH still encodes; one byte more cannot
    head = codec._publish_head("t", 268_435_455 - 3, 0, False, False, b"")
    assert head == h("30 ff ff ff 7f 00 01 't'")
    with pytest.raises(ValueError):
        codec._publish_head("t", 268_435_455 - 2, 0, False, False, b"")


# ---------------------------------------------------------------------------------------
# Incremental feeding and streams
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("version", "raw", "packet"), GOLDEN)
def test_prefixes_are_incomplete_until_the_last_byte(
    version: int, raw: bytes, packet: Packet
) -> None:
    for cut in range(len(raw)):
        assert decode(raw[:cut], version, BIG) is None, cut
        assert decode(bytearray(raw[:cut]), version, BIG) is None, cut
    assert decode(raw, version, BIG) == (packet, len(raw))


@pytest.mark.parametrize("version", [3, 4, 5])
def test_byte_at_a_time_stream(version: int) -> None:
    table = {3: GOLDEN_V31, 4: GOLDEN_V311, 5: GOLDEN_V5}[version]
    stream = b"".join(raw for _, raw, _ in table)
    expected = [pkt for _, _, pkt in table]
    buf = bytearray()
    got: list[Packet] = []
    offset = 0
    for byte in stream:
        buf.append(byte)
        while (res := decode(buf, version, BIG, offset)) is not None:
            pkt, offset = res
            got.append(pkt)
        if offset > 64:  # a caller trims its buffer from time to time
            del buf[:offset]
            offset = 0
    assert got == expected
    assert offset == len(buf)


@pytest.mark.parametrize("version", [3, 4, 5])
def test_concatenated_packets_decode_sequentially(version: int) -> None:
    table = {3: GOLDEN_V31, 4: GOLDEN_V311, 5: GOLDEN_V5}[version]
    stream = b"".join(raw for _, raw, _ in table)
    offset = 0
    for _, raw, pkt in table:
        res = decode(stream, version, BIG, offset)
        assert res == (pkt, offset + len(raw))
        offset = res[1]
    assert offset == len(stream)
    assert decode(stream, version, BIG, offset) is None


@pytest.mark.parametrize("size", [0, 5000, 100_000])
def test_large_payload_from_bytearray_is_a_copy_and_buffer_stays_resizable(size: int) -> None:
    pkt = Publish("a/b", bytes(range(256)) * (size // 256), qos=1, packet_id=9)
    raw = encode(pkt, 5)
    buf = bytearray(raw)
    assert decode(buf, 5, BIG) == (pkt, len(raw))
    del buf[: len(raw)]  # fails with BufferError if a view on buf were still exported
    assert decode(memoryview(raw), 5, BIG) == (pkt, len(raw))


def test_decoded_payload_is_a_copy() -> None:
    buf = bytearray(h("30 0a 00 03 'a/b' 'hello'"))
    res = decode(buf, 4, BIG)
    assert res is not None
    pkt = res[0]
    buf[:] = b"\x00" * len(buf)
    assert isinstance(pkt, Publish)
    assert type(pkt.payload) is bytes
    assert pkt.payload == b"hello"


# ---------------------------------------------------------------------------------------
# Maximum packet size (5.0 3.1.2.11.4 / 3.2.2.3.6): checked from the header alone
# ---------------------------------------------------------------------------------------


def test_packet_too_large_raised_from_fixed_header_alone() -> None:
    header = h("30 ff ff ff 7f")  # PUBLISH announcing 268,435,455 bytes, no body yet
    with pytest.raises(PacketTooLarge) as exc_info:
        decode(header, 5, 1_048_576)
    assert exc_info.value.reason_code == 0x95


@pytest.mark.parametrize("version", [3, 4, 5])
def test_packet_too_large_counts_the_whole_packet(version: int) -> None:
    raw = h("30 0a 00 03 'a/b' 'hello'") if version != 5 else h("30 0b 00 03 'a/b' 00 'hello'")
    assert decode(raw, version, len(raw)) is not None  # exactly at the limit
    with pytest.raises(PacketTooLarge):
        decode(raw, version, len(raw) - 1)
    with pytest.raises(PacketTooLarge):
        decode(raw[:2], version, len(raw) - 1)  # header only


def test_packet_too_large_at_an_offset() -> None:
    stream = h("c0 00 30 7f")
    assert decode(stream, 4, 10) == (PingReq(), 2)
    with pytest.raises(PacketTooLarge):
        decode(stream, 4, 128, 2)  # 2 + 127 = 129 bytes
    assert decode(stream, 4, 129, 2) is None


def test_empty_and_short_buffers_are_incomplete() -> None:
    assert decode(b"", 5, BIG) is None
    assert decode(b"\x30", 5, BIG) is None
    assert decode(b"\x30\x80", 5, BIG) is None
    assert decode(b"\x30\x80\x80\x80", 5, BIG) is None  # 3 varint bytes, all continued
    assert decode(b"\xc0\x00", 5, BIG, 2) is None


# ---------------------------------------------------------------------------------------
# encode_publish_parts
# ---------------------------------------------------------------------------------------

PARTS_PROPS = Properties(message_expiry_interval=10, user_properties=(("k", "v"),))


@pytest.mark.parametrize("version", [3, 4, 5])
@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("retain", [False, True])
@pytest.mark.parametrize("props", [EMPTY_PROPERTIES, PARTS_PROPS], ids=["noprops", "props"])
@pytest.mark.parametrize("payload_len", [0, 64, 200, 20_000])
def test_encode_publish_parts_agrees_with_encode(
    version: int, qos: int, retain: bool, props: Properties, payload_len: int
) -> None:
    payload = bytes(range(256)) * (payload_len // 256) + bytes(payload_len % 256)
    dup = qos > 0
    head, tail = encode_publish_parts("s/\u00e9/t", payload, qos, retain, dup, props, version)
    pid = 0xABCD if qos else None
    full = encode(Publish("s/\u00e9/t", payload, qos, retain, dup, pid, props), version)
    if qos:
        assert head + (0xABCD).to_bytes(2, "big") + tail == full
    else:
        assert head + tail == full
    if version == 5:
        assert tail == encode_properties(props) + payload
    else:
        assert tail == payload
    assert head.endswith(b"\x00\x06s/\xc3\xa9/t")


def test_encode_publish_parts_golden() -> None:
    head, tail = encode_publish_parts("a/b", b"hi", 1, True, False, EMPTY_PROPERTIES, 5)
    assert head == h("33 0a 00 03 'a/b'")
    assert tail == h("00 'hi'")
    head, tail = encode_publish_parts("a/b", b"hi", 0, False, False, EMPTY_PROPERTIES, 4)
    assert (head, tail) == (h("30 07 00 03 'a/b'"), b"hi")


def test_encode_publish_rejects_inconsistent_fields() -> None:
    with pytest.raises(ValueError):
        encode(Publish("a", b"", qos=1), 4)  # QoS 1 without packet id
    with pytest.raises(ValueError):
        encode(Publish("a", b"", qos=0, packet_id=3), 4)
    with pytest.raises(ValueError):
        encode(Publish("a", b"", qos=0, dup=True), 4)  # [MQTT-3.3.1-2]
    with pytest.raises(ValueError):
        encode(Publish("a", b"", qos=3, packet_id=1), 4)
    with pytest.raises(ValueError):
        encode(Publish("a" * 65_536, b""), 4)


def test_encode_out_of_range_integers_raise_value_error() -> None:
    with pytest.raises(ValueError):
        encode(PubAck(70_000), 4)
    with pytest.raises(ValueError):
        encode(Connect(4, "c", keep_alive=70_000), 4)
    with pytest.raises(ValueError):
        encode(ConnAck(False, 0, Properties(receive_maximum=70_000)), 5)
    with pytest.raises(ValueError):
        encode_properties(Properties(message_expiry_interval=1 << 32))
    with pytest.raises(ValueError):
        encode_properties(Properties(maximum_qos=256))
    with pytest.raises(ValueError):
        encode_properties(Properties(correlation_data=b"x" * 65_536))
    with pytest.raises(ValueError):
        encode_properties(Properties(content_type="x" * 65_536))
    with pytest.raises(ValueError):
        encode(Connect(4, "\u00e9" * 32_768), 4)  # 65,536 bytes of UTF-8
    with pytest.raises(UnicodeEncodeError):
        encode(Unsubscribe(1, ("\ud800",)), 4)  # a lone surrogate is not encodable


# ---------------------------------------------------------------------------------------
# Properties helpers
# ---------------------------------------------------------------------------------------


def test_encode_properties_empty() -> None:
    assert encode_properties(EMPTY_PROPERTIES) == b"\x00"
    assert encode_properties(Properties()) == b"\x00"


def test_decode_properties_direct() -> None:
    raw = h("ff 05 23 00 07 01 01 ee")
    props, end = decode_properties(raw, 1, len(raw) - 1, PacketType.PUBLISH)
    assert props == Properties(topic_alias=7, payload_format_indicator=1)
    assert end == 7
    props, end = decode_properties(h("00"), 0, 1, PacketType.CONNECT)
    assert props is EMPTY_PROPERTIES
    assert end == 1


def test_properties_longer_than_127_bytes() -> None:
    props = Properties(user_properties=(("k" * 100, "v" * 100),))
    block = encode_properties(props)
    assert block[:2] == encode_varint(205) == h("cd 01")
    assert block[2:5] == h("26 00 64")
    pkt = PubAck(1, 0x10, props)
    raw = encode(pkt, 5)
    assert decode(raw, 5, BIG) == (pkt, len(raw))


# ---------------------------------------------------------------------------------------
# The decoder's fast constructors produce ordinary packet values
# ---------------------------------------------------------------------------------------


def test_fast_constructed_packets_equal_regular_ones() -> None:
    for raw, expected in [
        (h("3b 09 00 03 'a/b' 00 07 'hi'"), Publish("a/b", b"hi", 1, True, True, 7)),
        (h("40 02 00 07"), PubAck(7)),
        (h("50 03 00 07 10"), PubRec(7, 0x10)),
    ]:
        res = decode(raw, 5 if raw[0] == 0x50 else 4, BIG)
        assert res is not None
        pkt = res[0]
        assert type(pkt) is type(expected)
        assert pkt == expected
        assert hash(pkt) == hash(expected)
        assert repr(pkt) == repr(expected)
    res = decode(PUBLISH_V5_FULL, 5, BIG)
    assert res is not None
    assert isinstance(res[0], Publish)
    assert repr(res[0].properties) == repr(PUBLISH_V5_FULL_PACKET.properties)
    assert hash(res[0]) == hash(PUBLISH_V5_FULL_PACKET)


def test_publish_properties_memo_is_transparent() -> None:
    raw = h("30 09 00 01 'a' 03 23 00 05 'hi'")
    first = decode(raw, 5, BIG)
    second = decode(bytearray(raw), 5, BIG)
    assert first == second == (Publish("a", b"hi", properties=Properties(topic_alias=5)), len(raw))
    # the memo is bounded: many distinct blocks still decode correctly
    for alias in range(1, codec._PUBLISH_PROPS_CACHE_SIZE + 10):
        raw_alias = h("30 09 00 01 'a' 03 23") + alias.to_bytes(2, "big") + b"hi"
        res = decode(raw_alias, 5, BIG)
        assert res is not None
        assert isinstance(res[0], Publish)
        assert res[0].properties.topic_alias == alias
    assert len(codec._PUBLISH_PROPS_CACHE) <= codec._PUBLISH_PROPS_CACHE_SIZE
    assert decode(raw, 5, BIG) == first
    # a block that failed validation is not remembered as valid
    bad = h("30 0c 00 01 'a' 06 23 00 05 23 00 05 'hi'")
    for _ in range(2):
        with pytest.raises(ProtocolViolation, match="more than once"):
            decode(bad, 5, BIG)
