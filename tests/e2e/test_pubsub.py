"""Publish / subscribe: QoS combinations, payload integrity, fan-out, wildcards."""

from __future__ import annotations

import pytest

from . import rawmqtt as rm
from .helpers import V5, V311, both_versions, roundtrip_ok, topics_payloads, uid

#: Every scenario also runs over MQTT-over-WebSocket (ws) and WebSocket Secure (wss).
pytestmark = pytest.mark.transports


@both_versions
@pytest.mark.parametrize("sub_qos", [0, 1, 2], ids=lambda q: f"sub{q}")
@pytest.mark.parametrize("pub_qos", [0, 1, 2], ids=lambda q: f"pub{q}")
def test_delivered_qos_is_minimum_of_publish_and_subscription(
    broker, clients, version, pub_qos, sub_qos
):
    topic = f"qos/{uid()}"
    sub = clients.connected(broker, version)
    assert sub.subscribe(topic, sub_qos) == [sub_qos]
    pub = clients.connected(broker, version)
    payload = f"pub{pub_qos}-sub{sub_qos}".encode()
    assert pub.publish(topic, payload, qos=pub_qos) == 0
    msg = sub.expect_message()
    assert msg.topic == topic
    assert msg.payload == payload
    assert msg.qos == min(pub_qos, sub_qos)
    assert not msg.retain
    assert not msg.dup
    # exactly one copy: the next message on the topic is the marker
    pub.publish(topic, b"marker", qos=pub_qos)
    assert sub.expect_message().payload == b"marker"


PAYLOADS = {
    "binary": bytes(range(256)) * 4,
    "empty": b"",
    "60KB": bytes((i * 7 + 3) % 256 for i in range(60 * 1024)),
    "utf8": "žluťoučký kůň 🐎".encode(),
    "nul-bytes": b"\x00" * 100,
}


@both_versions
@pytest.mark.parametrize("name", list(PAYLOADS))
def test_payload_bytes_are_preserved(broker, clients, version, name):
    payload = PAYLOADS[name]
    topic = f"payload/{uid()}"
    sub = clients.connected(broker, version)
    sub.subscribe(topic, 1)
    pub = clients.connected(broker, version)
    pub.publish(topic, payload, qos=1)
    msg = sub.expect_message()
    assert len(msg.payload) == len(payload)
    assert msg.payload == payload


@both_versions
def test_fan_out_to_every_subscriber(broker, clients, version):
    topic = f"fan/{uid()}"
    subs = [clients.connected(broker, version) for _ in range(3)]
    for sub in subs:
        assert sub.subscribe(topic, 1) == [1]
    pub = clients.connected(broker, version)
    for i in range(5):
        pub.publish(topic, f"m{i}".encode(), qos=1)
    for sub in subs:
        got = [m.payload for m in sub.expect_messages(5)]
        assert got == [f"m{i}".encode() for i in range(5)]


@both_versions
def test_messages_from_one_publisher_keep_their_order(broker, clients, version):
    topic = f"order/{uid()}"
    sub = clients.connected(broker, version)
    sub.subscribe(topic, 2)
    pub = clients.connected(broker, version)
    for i in range(50):
        pub.paho.publish(topic, str(i).encode(), qos=1)
    got = [int(m.payload) for m in sub.expect_messages(50)]
    assert got == list(range(50))


@both_versions
def test_resubscribe_replaces_subscription(broker, clients, version):
    topic = f"resub/{uid()}"
    sub = clients.connected(broker, version)
    assert sub.subscribe(topic, 0) == [0]
    assert sub.subscribe(topic, 2) == [2]
    pub = clients.connected(broker, version)
    pub.publish(topic, b"one", qos=2)
    msg = sub.expect_message()
    assert (msg.payload, msg.qos) == (b"one", 2)
    pub.publish(topic, b"marker", qos=2)
    assert sub.expect_message().payload == b"marker", "message was delivered twice"


@both_versions
def test_overlapping_subscriptions_respect_maximum_qos(broker, clients, version):
    base = f"overlap/{uid()}"
    sub = clients.connected(broker, version)
    assert sub.subscribe(f"{base}/#", 0) == [0]
    assert sub.subscribe(f"{base}/x", 2) == [2]
    # The marker is QoS 2 and outside base/#: paho hands a QoS 2 message to the application
    # only at PUBREL, so a QoS 0 marker could overtake the QoS 2 copy of the message.
    assert sub.subscribe(f"{base}-marker", 2) == [2]
    pub = clients.connected(broker, version)
    pub.publish(f"{base}/x", b"hello", qos=2)
    pub.publish(f"{base}-marker", b"m", qos=2)
    got = sub.messages_until(f"{base}-marker")
    assert got, "the message matching two subscriptions was not delivered"
    assert {(m.topic, m.payload) for m in got} == {(f"{base}/x", b"hello")}
    assert max(m.qos for m in got) == 2


@both_versions
def test_unsubscribe_stops_delivery(broker, clients, version):
    base = f"unsub/{uid()}"
    sub = clients.connected(broker, version)
    sub.subscribe(f"{base}/a", 1)
    sub.subscribe(f"{base}/marker", 1)
    codes = sub.unsubscribe(f"{base}/a")
    if version == V5:
        assert codes == [0]
    pub = clients.connected(broker, version)
    pub.publish(f"{base}/a", b"gone", qos=1)
    pub.publish(f"{base}/marker", b"m", qos=1)
    assert sub.messages_until(f"{base}/marker") == []


def test_v5_unsubscribe_unknown_filter_reports_no_subscription(broker, clients):
    sub = clients.connected(broker, V5)
    assert sub.unsubscribe(f"never/{uid()}") == [0x11]


@both_versions
def test_single_level_wildcard(broker, clients, version):
    base = f"plus/{uid()}"
    sub = clients.connected(broker, version)
    assert sub.subscribe(f"{base}/+/c", 1) == [1]
    pub = clients.connected(broker, version)
    for topic in (
        f"{base}/x/c",
        f"{base}/x/y/c",
        f"{base}/c",
        f"{base}/x/c/d",
        f"{base}//c",
        f"{base}/x/cc",
        f"{base}/y/c",
        f"{base}/end/c",
    ):
        pub.publish(topic, topic.encode(), qos=1)
    got = [m.topic for m in sub.messages_until(f"{base}/end/c")]
    assert got == [f"{base}/x/c", f"{base}//c", f"{base}/y/c"]


@both_versions
def test_multi_level_wildcard(broker, clients, version):
    base = f"hash/{uid()}"
    sub = clients.connected(broker, version)
    assert sub.subscribe(f"{base}/a/#", 1) == [1]
    pub = clients.connected(broker, version)
    for topic in (
        f"{base}/a",
        f"{base}/ab",
        f"{base}/a/b",
        f"{base}/b/a",
        f"{base}/a/b/c/d",
        f"{base}/a/",
        f"{base}/a/zz/end",
    ):
        pub.publish(topic, b"x", qos=1)
    got = [m.topic for m in sub.messages_until(f"{base}/a/zz/end")]
    assert got == [f"{base}/a", f"{base}/a/b", f"{base}/a/b/c/d", f"{base}/a/"]


@both_versions
def test_plus_and_hash_combined(broker, clients, version):
    base = f"combo/{uid()}"
    sub = clients.connected(broker, version)
    assert sub.subscribe(f"{base}/+/sensors/#", 1) == [1]
    pub = clients.connected(broker, version)
    for topic in (
        f"{base}/h1/sensors",
        f"{base}/h1/sensors/t",
        f"{base}/h2/other/t",
        f"{base}/h2/sensors/t/x",
        f"{base}/end/sensors/end",
    ):
        pub.publish(topic, b"x", qos=1)
    got = [m.topic for m in sub.messages_until(f"{base}/end/sensors/end")]
    assert got == [f"{base}/h1/sensors", f"{base}/h1/sensors/t", f"{base}/h2/sensors/t/x"]


@both_versions
def test_dollar_topics_not_matched_by_leading_wildcards(start_broker, clients, version):
    broker = start_broker()
    u = uid()
    hash_sub = clients.connected(broker, version)
    assert hash_sub.subscribe("#", 1) == [1]
    plus_sub = clients.connected(broker, version)
    assert plus_sub.subscribe(f"+/{u}/x", 1) == [1]
    explicit = clients.connected(broker, version)
    assert explicit.subscribe(f"$test/{u}/#", 1)[0] in (0, 1, 2, 0x80, 0x87, 0x8F)

    # The broker may refuse client publishes to $-topics (PUBACK error or disconnect);
    # only the '#' / '+' subscribers not receiving it is asserted.
    raw = clients.raw(broker, version)
    raw.connect(f"dollar-{u}")
    raw.publish(f"$test/{u}/x", b"dollar", qos=1, packet_id=1)
    answer = raw.recv()
    accepted = answer is not None and answer.type == rm.PUBACK and answer.reason == 0
    if answer is None:
        raw = clients.raw(broker, version)
        raw.connect(f"dollar2-{u}")
    raw.publish(f"m/{u}/x", b"marker", qos=1, packet_id=2)
    assert raw.expect(rm.PUBACK).packet_id == 2

    for sub in (hash_sub, plus_sub):
        before = sub.messages_until(f"m/{u}/x")
        assert [m.topic for m in before if m.topic.startswith("$")] == []
    if accepted and version == V5:
        assert explicit.expect_message().topic == f"$test/{u}/x"


@both_versions
def test_root_multi_level_wildcard_can_be_disabled(start_broker, clients, version):
    broker = start_broker(MQTT_SUBSCRIPTION_ROOT_MULTI_LVL_WILDCARD=False)
    sub = clients.connected(broker, version)
    expected = 0x87 if version == V5 else 0x80
    assert sub.subscribe("#", 1) == [expected]
    base = f"root/{uid()}"
    assert sub.subscribe(f"{base}/#", 1) == [1]
    pub = clients.connected(broker, version)
    pub.publish(f"{base}/a", b"ok", qos=1)
    assert topics_payloads([sub.expect_message()]) == [(f"{base}/a", b"ok")]


def test_root_multi_level_wildcard_allowed_by_default(start_broker, clients):
    broker = start_broker()
    sub = clients.connected(broker, V311)
    assert sub.subscribe("#", 1) == [1]


INVALID_FILTERS = ["a/#/b", "a/b#", "#/a", "a+", "a/+b/c", "+a", ""]


@both_versions
@pytest.mark.parametrize("bad_filter", INVALID_FILTERS)
def test_invalid_topic_filter_is_refused(broker, clients, version, bad_filter):
    raw = clients.raw(broker, version)
    raw.connect(f"badf-{uid()}")
    raw.send(
        rm.subscribe(7, [(bad_filter, 1), (f"good/{uid()}", 1)], version=version)
        if bad_filter
        else rm.subscribe(7, [("", 1)], version=version)
    )
    answer = raw.recv()
    if answer is not None and answer.type == rm.SUBACK:
        # refused in the SUBACK: failure code for the bad filter
        assert answer.codes[0] >= 0x80, f"{bad_filter!r} was granted: {answer!r}"
    else:
        # or the connection is closed (v5: possibly after a DISCONNECT)
        if answer is not None:
            assert answer.type == rm.DISCONNECT and answer.reason >= 0x80, answer
            assert raw.read_until_closed() == []
    roundtrip_ok(clients, broker, version)
