"""Hostile or broken input: oversize packets and malformed bytes written to a raw socket.

For every case the offending connection must be closed (MQTT 5: preceded by a DISCONNECT
with the reason code the specification prescribes where it is unambiguous) and the
broker must go on serving other clients.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from . import rawmqtt as rm
from .helpers import V5, both_versions, roundtrip_ok, uid

#: Every scenario also runs over MQTT-over-WebSocket (ws) and WebSocket Secure (wss).
pytestmark = pytest.mark.transports

MALFORMED = {0x81}
PROTOCOL_ERROR = {0x82}


# --------------------------------------------------------------------------- oversize


@both_versions
def test_oversize_packet_closes_only_that_client(start_broker, clients, version, transport):
    broker = start_broker(TCP_NETTY_MAX_PAYLOAD_SIZE=1024)
    topic = f"big/{uid()}"
    bystander = clients.connected(broker, version)
    bystander.subscribe(topic, 1)

    raw = clients.raw(broker, version)
    connack = raw.connect(f"big-{uid()}")
    if version == V5:
        assert connack.prop(rm.MAXIMUM_PACKET_SIZE) == 1024
    raw.try_send(rm.publish(topic, b"x" * 4000, qos=1, packet_id=1, version=version))
    packets = raw.read_until_closed()
    if transport != "tcp":  # the WebSocket frame is refused first, as in TBMQ
        assert packets == []
        assert raw.ws.close_frame is not None and raw.ws.close_frame.close_code == 1009
    elif version == V5:
        assert [(p.type, p.reason) for p in packets] == [(rm.DISCONNECT, 0x95)]
    else:
        assert packets == []

    pub = clients.connected(broker, version)
    pub.publish(topic, b"fits", qos=1)
    assert bystander.expect_message().payload == b"fits", "the oversize message was routed"
    assert bystander.connected


def test_packet_just_under_the_limit_is_accepted(start_broker, clients):
    broker = start_broker(TCP_NETTY_MAX_PAYLOAD_SIZE=1024)
    topic = f"big/{uid()}"
    sub = clients.connected(broker, V5, properties=None)
    sub.subscribe(topic, 1)
    raw = clients.raw(broker, 4)
    raw.connect(f"edge-{uid()}")
    payload = b"y" * 900
    raw.publish(topic, payload, qos=1, packet_id=1)
    assert raw.expect(rm.PUBACK).packet_id == 1
    assert sub.expect_message().payload == payload


# --------------------------------------------------------------------------- malformed bytes


@dataclass
class Case:
    name: str
    data: Callable[[int], bytes]
    connect_first: bool = True
    v5_reasons: set[int] | None = None  # DISCONNECT reason expected from an MQTT 5 broker
    versions: tuple[int, ...] = (4, 5)


def _props_raw(body: bytes) -> bytes:
    return rm.encode_varint(len(body)) + body


def _publish_with_raw_props(prop_bytes: bytes) -> bytes:
    body = rm.encode_str("bad/props") + _props_raw(prop_bytes) + b"payload"
    return rm.packet(0x30, body)


CASES = [
    # ---- before CONNECT
    Case("reserved-packet-type-0", lambda v: b"\x00\x00", connect_first=False, versions=(4,)),
    Case("garbage", lambda v: b"\xff\xff\xff\xff\xff\xff", connect_first=False, versions=(4,)),
    Case(
        "http-request",
        lambda v: b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        connect_first=False,
        versions=(4,),
    ),
    Case("publish-before-connect", lambda v: rm.publish("a/b", b"x"), connect_first=False),
    Case(
        "subscribe-before-connect",
        lambda v: rm.subscribe(1, [("a/b", 0)], version=v),
        connect_first=False,
    ),
    Case("pingreq-before-connect", lambda v: rm.pingreq(), connect_first=False, versions=(4,)),
    Case(
        "connect-reserved-flag",
        lambda v: rm.connect(f"r{uid()}", version=v, reserved_flag=True),
        connect_first=False,
    ),
    Case(
        "connect-bad-protocol-name",
        lambda v: rm.connect(f"n{uid()}", version=v, protocol_name="MQTX"),
        connect_first=False,
    ),
    Case(
        "connect-will-qos-3",
        lambda v: rm.connect(f"w{uid()}", version=v, will=rm.Will("w/t", b"x", qos=3)),
        connect_first=False,
    ),
    Case(
        "connect-password-without-username",
        lambda v: rm.connect(f"p{uid()}", version=v, password=b"secret"),
        connect_first=False,
        versions=(4,),
    ),
    Case(
        "connect-truncated-body",
        lambda v: b"\x10\x04\x00\x04MQ",  # protocol name claims 4 bytes, has 2
        connect_first=False,
        versions=(4,),
    ),
    # ---- after a successful CONNECT
    Case(
        "second-connect",
        lambda v: rm.connect(f"again{uid()}", version=v),
        v5_reasons=PROTOCOL_ERROR,
    ),
    Case(
        "subscribe-reserved-flags",
        lambda v: rm.subscribe(1, [("a/b", 0)], version=v, first_byte=0x80),
        v5_reasons=MALFORMED,
    ),
    Case("pubrel-reserved-flags", lambda v: b"\x60\x02\x00\x01", v5_reasons=MALFORMED),
    Case("pingreq-reserved-flags", lambda v: b"\xc1\x00", v5_reasons=MALFORMED),
    Case(
        "remaining-length-5-bytes",
        lambda v: b"\x30\xff\xff\xff\xff\x7f",
        v5_reasons=MALFORMED,
    ),
    Case(
        "publish-qos-3",
        lambda v: bytes([0x36]) + rm.publish("a/b", b"x", qos=1, packet_id=1, version=v)[1:],
        v5_reasons=MALFORMED,
    ),
    Case(
        "invalid-utf8-topic",
        lambda v: rm.publish(b"a/\xff\xfe", b"x", version=v),
        v5_reasons={0x81, 0x90},
    ),
    Case(
        "nul-character-in-topic",
        lambda v: rm.publish(b"a/\x00b", b"x", version=v),
        v5_reasons={0x81, 0x90},
    ),
    Case(
        "wildcard-plus-in-topic",
        lambda v: rm.publish("a/+/b", b"x", version=v),
        v5_reasons={0x81, 0x82, 0x90},
    ),
    Case(
        "wildcard-hash-in-topic",
        lambda v: rm.publish("a/#", b"x", qos=1, packet_id=1, version=v),
        v5_reasons={0x81, 0x82, 0x90},
    ),
    Case(
        "subscribe-without-filters",
        lambda v: rm.subscribe(1, [], version=v),
        v5_reasons=PROTOCOL_ERROR,
    ),
    Case(
        "unsubscribe-without-filters",
        lambda v: rm.unsubscribe(1, [], version=v),
        v5_reasons=PROTOCOL_ERROR,
    ),
    Case(
        "subscribe-reserved-option-bits",
        lambda v: rm.subscribe(1, [("a/b", 0xC1)], version=v),
        v5_reasons=MALFORMED,
    ),
    Case(
        "subscribe-qos-3",
        lambda v: rm.subscribe(1, [("a/b", 0x03)], version=v),
        v5_reasons={0x81, 0x82},
    ),
    Case(
        "subscribe-packet-id-0",
        lambda v: rm.subscribe(0, [("a/b", 0)], version=v),
        v5_reasons={0x81, 0x82},
    ),
    Case(
        "publish-qos1-packet-id-0",
        lambda v: rm.publish("a/b", b"x", qos=1, packet_id=0, version=v),
        v5_reasons={0x81, 0x82},
    ),
    Case(
        "subscribe-string-overruns-packet",
        lambda v: b"\x82\x05\x00\x01\x00\x09a" if v != 5 else b"\x82\x06\x00\x01\x00\x00\x09a",
        v5_reasons=MALFORMED,
    ),
    Case("reserved-packet-type-0-after-connect", lambda v: b"\x00\x00", v5_reasons={0x81, 0x82}),
    Case("connack-from-client", lambda v: b"\x20\x02\x00\x00", v5_reasons={0x81, 0x82}),
    # ---- MQTT 5 only
    Case(
        "duplicate-property",
        lambda v: _publish_with_raw_props(b"\x01\x01\x01\x00"),
        v5_reasons=PROTOCOL_ERROR,
        versions=(5,),
    ),
    Case(
        "duplicate-message-expiry",
        lambda v: _publish_with_raw_props(
            b"\x02" + struct.pack(">I", 5) + b"\x02" + struct.pack(">I", 6)
        ),
        v5_reasons=PROTOCOL_ERROR,
        versions=(5,),
    ),
    Case(
        "property-length-overruns-packet",
        lambda v: rm.packet(0x30, rm.encode_str("a/b") + b"\x20\x01\x01"),
        v5_reasons=MALFORMED,
        versions=(5,),
    ),
    Case(
        "property-not-allowed-in-publish",
        lambda v: _publish_with_raw_props(b"\x11" + struct.pack(">I", 10)),
        v5_reasons={0x81, 0x82},
        versions=(5,),
    ),
    Case(
        "unknown-property-identifier",
        lambda v: _publish_with_raw_props(b"\x7f\x01"),
        v5_reasons={0x81, 0x82},
        versions=(5,),
    ),
    Case(
        "subscription-identifier-zero",
        lambda v: rm.subscribe(
            1, [("a/b", 0)], version=v, properties=[(rm.SUBSCRIPTION_IDENTIFIER, 0)]
        ),
        v5_reasons={0x81, 0x82},
        versions=(5,),
    ),
    Case(
        "retain-handling-3",
        lambda v: rm.subscribe(1, [("a/b", 0x30)], version=v),
        v5_reasons={0x81, 0x82},
        versions=(5,),
    ),
    Case(
        "no-local-on-shared-subscription",
        lambda v: rm.subscribe(1, [("$share/g/a/b", 0x04)], version=v),
        v5_reasons=PROTOCOL_ERROR,
        versions=(5,),
    ),
    Case(
        "auth-without-authentication-method",
        lambda v: b"\xf0\x00",
        v5_reasons=PROTOCOL_ERROR,
        versions=(5,),
    ),
    Case(
        "payload-format-invalid-value",
        lambda v: _publish_with_raw_props(b"\x01\x02"),
        v5_reasons={0x81, 0x82},
        versions=(5,),
    ),
]

PARAMS = [
    pytest.param(case, version, id=f"{case.name}-{'v5' if version == 5 else 'v311'}")
    for case in CASES
    for version in case.versions
]


def _assert_connect_refusal(packets, version):
    """Before a session exists the broker may answer with a refusing CONNACK, then close."""
    assert len(packets) <= 1, packets
    if packets:
        connack = packets[0]
        assert connack.type == rm.CONNACK, f"unexpected answer to bad input: {packets!r}"
        assert connack.reason != 0, f"bad CONNECT was accepted: {connack!r}"


@pytest.mark.parametrize(("case", "version"), PARAMS)
def test_malformed_input_closes_connection(broker, clients, case, version):
    raw = clients.raw(broker, version)
    if case.connect_first:
        raw.connect(f"bad-{uid()}")
    raw.try_send(case.data(version))
    packets = raw.read_until_closed(timeout=5)

    if not case.connect_first:
        _assert_connect_refusal(packets, version)
    elif version == V5:
        assert len(packets) == 1 and packets[0].type == rm.DISCONNECT, (
            f"expected DISCONNECT before close, got {packets!r}"
        )
        expected = case.v5_reasons or set(range(0x80, 0x100))
        assert packets[0].reason in expected, (
            f"DISCONNECT reason 0x{packets[0].reason:02x} not in {sorted(hex(r) for r in expected)}"
        )
    else:
        assert packets == [], f"3.1.1 has no server DISCONNECT: {packets!r}"

    roundtrip_ok(clients, broker, version)


@pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
def test_half_written_packet_then_close_does_not_hurt(broker, clients, version):
    raw = clients.raw(broker, version)
    raw.connect(f"half-{uid()}")
    raw.send(rm.publish("half/t", b"x" * 100, version=version)[:20])
    raw.close()
    roundtrip_ok(clients, broker, version)
