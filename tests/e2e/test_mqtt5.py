"""MQTT 5 only features: topic aliases, message expiry, flow control, maximum packet size,
subscription identifiers, No Local and property pass-through."""

from __future__ import annotations

import time

import pytest
from paho.mqtt.packettypes import PacketTypes

from . import rawmqtt as rm
from .helpers import (
    V5,
    V311,
    both_versions,
    props,
    roundtrip_ok,
    session_props,
    uid,
    wait_until_elapsed,
)

#: Every scenario also runs over MQTT-over-WebSocket (ws) and WebSocket Secure (wss).
pytestmark = pytest.mark.transports


def pub_props(**values):
    return props(PacketTypes.PUBLISH, **values)


# --------------------------------------------------------------------------- topic aliases


@both_versions
def test_client_to_broker_topic_alias_is_resolved(broker, clients, version):
    base = f"alias/{uid()}"
    sub = clients.connected(broker, version)
    sub.subscribe(f"{base}/#", 1)
    pub = clients.connected(broker, V5)
    pub.publish(f"{base}/one", b"1", qos=1, properties=pub_props(TopicAlias=1))
    pub.publish("", b"2", qos=1, properties=pub_props(TopicAlias=1))
    pub.publish(f"{base}/two", b"3", qos=1, properties=pub_props(TopicAlias=1))  # remapped
    pub.publish("", b"4", qos=1, properties=pub_props(TopicAlias=1))
    pub.publish(f"{base}/three", b"5", qos=1, properties=pub_props(TopicAlias=10))
    pub.publish("", b"6", qos=1, properties=pub_props(TopicAlias=10))
    got = [(m.topic, m.payload) for m in sub.expect_messages(6)]
    assert got == [
        (f"{base}/one", b"1"),
        (f"{base}/one", b"2"),
        (f"{base}/two", b"3"),
        (f"{base}/two", b"4"),
        (f"{base}/three", b"5"),
        (f"{base}/three", b"6"),
    ]


@pytest.mark.parametrize("alias", [11, 0, 65535])
def test_topic_alias_out_of_range_disconnects_with_0x94(broker, clients, alias):
    raw = clients.raw(broker, V5)
    connack = raw.connect(f"alias-{uid()}")
    assert connack.prop(rm.TOPIC_ALIAS_MAXIMUM) == 10
    raw.publish(f"alias/{uid()}", b"x", qos=1, packet_id=1, properties=[(rm.TOPIC_ALIAS, alias)])
    packets = raw.read_until_closed()
    assert [(p.type, p.reason) for p in packets] == [(rm.DISCONNECT, 0x94)]
    roundtrip_ok(clients, broker)


def test_unknown_topic_alias_is_an_error(broker, clients):
    raw = clients.raw(broker, V5)
    raw.connect(f"alias-{uid()}")
    raw.publish("", b"x", qos=1, packet_id=1, properties=[(rm.TOPIC_ALIAS, 3)])
    packets = raw.read_until_closed()
    assert len(packets) == 1 and packets[0].type == rm.DISCONNECT, packets
    assert packets[0].reason in (0x82, 0x94), packets


def test_empty_topic_without_alias_is_protocol_error(broker, clients):
    raw = clients.raw(broker, V5)
    raw.connect(f"alias-{uid()}")
    raw.publish("", b"x", qos=1, packet_id=1)
    packets = raw.read_until_closed()
    assert len(packets) == 1 and packets[0].type == rm.DISCONNECT, packets
    assert packets[0].reason in (0x82, 0x90), packets


def test_broker_uses_topic_aliases_only_within_client_maximum(broker, clients):
    base = f"alias/{uid()}"
    raw = clients.raw(broker, V5)
    raw.connect(f"aliased-{uid()}", properties=[(rm.TOPIC_ALIAS_MAXIMUM, 5)])
    assert raw.subscribe([(f"{base}/#", 0)]) == [0]
    pub = clients.connected(broker, V5)
    expected = []
    for round_ in range(2):
        for i in range(8):  # more topics than aliases
            topic = f"{base}/t{i}"
            pub.publish(topic, f"{round_}-{i}".encode(), qos=1)
            expected.append((topic, f"{round_}-{i}".encode()))
    aliases: dict[int, bytes] = {}
    resolved = []
    for _ in expected:
        pkt = raw.expect(rm.PUBLISH)
        alias = pkt.prop(rm.TOPIC_ALIAS)
        topic = pkt.topic
        if alias is not None:
            assert 1 <= alias <= 5, f"alias {alias} above the client's maximum"
            if topic:
                aliases[alias] = topic
            else:
                assert alias in aliases, f"alias {alias} used before being set"
                topic = aliases[alias]
        else:
            assert topic, "empty topic without alias"
        resolved.append((topic.decode(), pkt.payload))
    assert resolved == expected


def test_broker_sends_no_alias_to_client_without_alias_maximum(broker, clients):
    base = f"alias/{uid()}"
    sub = clients.connected(broker, V5)
    sub.subscribe(f"{base}/#", 0)
    pub = clients.connected(broker, V5)
    for i in range(5):
        pub.publish(f"{base}/same", str(i).encode(), qos=1, properties=pub_props(TopicAlias=1))
    for msg in sub.expect_messages(5):
        assert msg.topic == f"{base}/same"
        assert getattr(msg.properties, "TopicAlias", None) is None


# --------------------------------------------------------------------------- message expiry


@both_versions
def test_queued_message_expires(broker, clients, version):
    client_id = f"expiry-{uid()}"
    topic = f"expiry/{uid()}"
    if version == V5:
        sub = clients.new(broker, V5, client_id=client_id)
        sub.connect(clean_start=False, properties=session_props(300))
    else:
        sub = clients.new(broker, V311, client_id=client_id, clean_session=False)
        sub.connect()
    sub.subscribe(topic, 1)
    sub.disconnect(wait_broker=True)

    pub = clients.connected(broker, V5)
    pub.publish(topic, b"short", qos=1, properties=pub_props(MessageExpiryInterval=1))
    pub.publish(topic, b"long", qos=1, properties=pub_props(MessageExpiryInterval=60))
    published = time.monotonic()
    wait_until_elapsed(published, 2.2)  # message expiry test: let the 1 s expiry pass

    back = clients.new(broker, version, client_id=client_id, clean_session=False)
    if version == V5:
        connack = back.connect(clean_start=False, properties=session_props(300))
    else:
        connack = back.connect()
    assert connack.session_present is True
    msg = back.expect_message()
    assert msg.payload == b"long", "the expired message was delivered"
    if version == V5:
        remaining = msg.properties.MessageExpiryInterval
        assert 0 < remaining <= 59, f"expiry not reduced by the time queued: {remaining}"
    pub.publish(topic, b"marker", qos=1)
    assert back.expect_message().payload == b"marker"


def test_retained_message_expires(broker, clients):
    topic = f"expiry/{uid()}"
    pub = clients.connected(broker, V5)
    pub.publish(topic, b"brief", qos=1, retain=True, properties=pub_props(MessageExpiryInterval=1))
    published = time.monotonic()
    wait_until_elapsed(published, 2.2)  # message expiry test: let the 1 s expiry pass
    sub = clients.connected(broker, V5)
    sub.subscribe(topic, 1)
    pub.publish(topic, b"marker", qos=1)
    assert sub.expect_message().payload == b"marker", "expired retained message delivered"


def test_retained_message_carries_remaining_expiry(broker, clients):
    topic = f"expiry/{uid()}"
    pub = clients.connected(broker, V5)
    pub.publish(topic, b"r", qos=1, retain=True, properties=pub_props(MessageExpiryInterval=60))
    sub = clients.connected(broker, V5)
    sub.subscribe(topic, 1)
    msg = sub.expect_message()
    assert msg.retain is True
    assert 0 < msg.properties.MessageExpiryInterval <= 60


def test_live_message_forwards_expiry(broker, clients):
    topic = f"expiry/{uid()}"
    sub = clients.connected(broker, V5)
    sub.subscribe(topic, 1)
    pub = clients.connected(broker, V5)
    pub.publish(topic, b"live", qos=1, properties=pub_props(MessageExpiryInterval=60))
    pub.publish(topic, b"forever", qos=1)
    first, second = sub.expect_messages(2)
    assert 0 < first.properties.MessageExpiryInterval <= 60
    assert getattr(second.properties, "MessageExpiryInterval", None) is None


# --------------------------------------------------------------------------- flow control


def _read_window(raw, marker: bytes, window: float = 1.5):
    """Read PUBLISHes until the marker topic arrives or ``window`` seconds pass. QoS 0
    is not subject to Receive Maximum, so the marker normally ends the window early."""
    packets = []
    deadline = time.monotonic() + window
    while (remaining := deadline - time.monotonic()) > 0:
        pkt = raw.poll(remaining)
        if pkt is False:
            break
        assert pkt is not None, f"broker closed the connection; got {packets!r}"
        packets.append(pkt)
        if pkt.type == rm.PUBLISH and pkt.topic == marker:
            break
    return packets


def test_broker_respects_client_receive_maximum_qos1(broker, clients):
    u = uid()
    topic, marker = f"rm/{u}/t", f"rm/{u}/marker"
    raw = clients.raw(broker, V5)
    raw.connect(f"rm-{u}", properties=[(rm.RECEIVE_MAXIMUM, 2)])
    assert raw.subscribe([(topic, 1), (marker, 0)]) == [1, 0]
    pub = clients.connected(broker, V5)
    for i in range(3):
        pub.publish(topic, f"m{i}".encode(), qos=1)
    pub.publish(marker, b"", qos=0)

    window = _read_window(raw, marker.encode())
    inflight = [p for p in window if p.type == rm.PUBLISH and p.qos == 1]
    assert [p.payload for p in inflight] == [b"m0", b"m1"], window

    raw.puback(inflight[0].packet_id)
    while True:
        pkt = raw.expect(rm.PUBLISH)
        if pkt.qos == 1:
            break
    assert pkt.payload == b"m2"
    raw.puback(inflight[1].packet_id)
    raw.puback(pkt.packet_id)


def test_broker_respects_client_receive_maximum_qos2(broker, clients):
    u = uid()
    topic, marker = f"rm/{u}/t", f"rm/{u}/marker"
    raw = clients.raw(broker, V5)
    raw.connect(f"rm2-{u}", properties=[(rm.RECEIVE_MAXIMUM, 1)])
    assert raw.subscribe([(topic, 2), (marker, 0)]) == [2, 0]
    pub = clients.connected(broker, V5)
    pub.publish(topic, b"first", qos=2)
    pub.publish(topic, b"second", qos=2)
    first = raw.expect(rm.PUBLISH)
    assert first.payload == b"first"
    raw.send(rm.pubrec(first.packet_id, V5))
    assert raw.expect(rm.PUBREL).packet_id == first.packet_id
    # until PUBCOMP the message still counts against Receive Maximum
    pub.publish(marker, b"", qos=0)
    window = _read_window(raw, marker.encode())
    assert [p for p in window if p.type == rm.PUBLISH and p.qos == 2] == [], window
    raw.send(rm.pubcomp(first.packet_id, V5))
    while True:
        pkt = raw.expect(rm.PUBLISH)
        if pkt.qos == 2:
            break
    assert pkt.payload == b"second"


def test_client_exceeding_broker_receive_maximum_is_disconnected(start_broker, clients):
    broker = start_broker(MQTT_MAX_IN_FLIGHT_MSGS=2)
    raw = clients.raw(broker, V5)
    connack = raw.connect(f"flood-{uid()}")
    assert connack.prop(rm.RECEIVE_MAXIMUM) == 2
    topic = f"rm/{uid()}"
    for packet_id in (1, 2, 3):
        raw.try_send(rm.publish(topic, b"x", qos=2, packet_id=packet_id, version=V5))
    packets = raw.read_until_closed()
    assert packets and packets[-1].type == rm.DISCONNECT, packets
    assert packets[-1].reason == 0x93, packets
    pubrecs = [p.packet_id for p in packets if p.type == rm.PUBREC]
    assert 3 not in pubrecs
    roundtrip_ok(clients, broker)


# --------------------------------------------------------------------------- maximum packet size


def test_broker_respects_client_maximum_packet_size(broker, clients):
    topic = f"mps/{uid()}"
    sub = clients.connected(
        broker, V5, properties=props(PacketTypes.CONNECT, MaximumPacketSize=100)
    )
    sub.subscribe(topic, 1)
    pub = clients.connected(broker, V5)
    pub.publish(topic, b"x" * 500, qos=1)
    pub.publish(topic, b"small", qos=1)
    msg = sub.expect_message()
    assert msg.payload == b"small", "a packet above the client's Maximum Packet Size was sent"
    assert sub.connected


# --------------------------------------------------------------------------- subscription ids


def _sub_ids(msg):
    return list(getattr(msg.properties, "SubscriptionIdentifier", None) or [])


def test_subscription_identifiers_on_overlapping_subscriptions(broker, clients):
    base = f"sid/{uid()}"
    sub = clients.connected(broker, V5)
    assert sub.subscribe(
        f"{base}/#", 1, properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=1)
    ) == [1]
    assert sub.subscribe(
        f"{base}/+", 1, properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=2)
    ) == [1]
    pub = clients.connected(broker, V5)
    pub.publish(f"{base}/x", b"both", qos=1)
    pub.publish(f"{base}/a/b", b"only hash", qos=1)
    pub.publish(f"{base}/m/marker", b"m", qos=1)
    got = sub.messages_until(f"{base}/m/marker")
    both = [m for m in got if m.payload == b"both"]
    # one copy carrying both ids, or one copy per subscription carrying its id
    ids = sorted(i for m in both for i in _sub_ids(m))
    assert ids == [1, 2], [(m.payload, _sub_ids(m)) for m in got]
    only = [m for m in got if m.payload == b"only hash"]
    assert len(only) == 1 and _sub_ids(only[0]) == [1]


def test_subscription_without_identifier_gets_none(broker, clients):
    topic = f"sid/{uid()}"
    sub = clients.connected(broker, V5)
    sub.subscribe(topic, 1)
    pub = clients.connected(broker, V5)
    pub.publish(topic, b"x", qos=1)
    assert _sub_ids(sub.expect_message()) == []


def test_retained_message_carries_subscription_identifier(broker, clients):
    topic = f"sid/{uid()}"
    pub = clients.connected(broker, V5)
    pub.publish(topic, b"kept", qos=1, retain=True)
    sub = clients.connected(broker, V5)
    sub.subscribe(
        topic, 1, properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=268435455)
    )
    msg = sub.expect_message()
    assert msg.retain is True
    assert _sub_ids(msg) == [268435455]


# --------------------------------------------------------------------------- no local


def test_no_local_suppresses_own_messages(broker, clients):
    u = uid()
    topic, marker = f"nolocal/{u}/t", f"nolocal/{u}/marker"
    me = clients.connected(broker, V5)
    me.subscribe(topic, 1, no_local=True)
    me.subscribe(marker, 1)
    me.publish(topic, b"own", qos=1)
    me.publish(marker, b"m", qos=1)
    assert me.messages_until(marker) == [], "own message echoed despite No Local"
    other = clients.connected(broker, V5)
    other.publish(topic, b"foreign", qos=1)
    assert me.expect_message().payload == b"foreign"


def test_without_no_local_own_messages_are_echoed(broker, clients):
    topic = f"nolocal/{uid()}"
    me = clients.connected(broker, V5)
    me.subscribe(topic, 1, no_local=False)
    me.publish(topic, b"echo", qos=1)
    assert me.expect_message().payload == b"echo"


def test_v311_clients_always_receive_own_messages(broker, clients):
    topic = f"nolocal/{uid()}"
    me = clients.connected(broker, V311)
    me.subscribe(topic, 1)
    me.publish(topic, b"echo", qos=1)
    assert me.expect_message().payload == b"echo"


# --------------------------------------------------------------------------- properties


def test_publish_properties_pass_through_unchanged(broker, clients):
    topic = f"props/{uid()}"
    sub = clients.connected(broker, V5)
    sub.subscribe(topic, 2)
    pub = clients.connected(broker, V5)
    user = [("z", "last?"), ("a", "1"), ("a", "2"), ("ключ", "значение"), ("empty", "")]
    pub.publish(
        topic,
        "héllo".encode(),
        qos=2,
        properties=pub_props(
            ResponseTopic="reply/to/me",
            CorrelationData=b"\x00\xffcorr",
            UserProperty=user,
            ContentType="text/plain; charset=utf-8",
            PayloadFormatIndicator=1,
        ),
    )
    msg = sub.expect_message()
    assert msg.payload == "héllo".encode()
    assert msg.properties.ResponseTopic == "reply/to/me"
    assert msg.properties.CorrelationData == b"\x00\xffcorr"
    assert msg.properties.UserProperty == user
    assert msg.properties.ContentType == "text/plain; charset=utf-8"
    assert msg.properties.PayloadFormatIndicator == 1


def test_v311_subscriber_gets_payload_of_v5_message_with_properties(broker, clients):
    topic = f"props/{uid()}"
    sub = clients.connected(broker, V311)
    sub.subscribe(topic, 1)
    pub = clients.connected(broker, V5)
    pub.publish(
        topic, b"plain", qos=1, properties=pub_props(UserProperty=[("k", "v")], ContentType="x")
    )
    msg = sub.expect_message()
    assert (msg.topic, msg.payload) == (topic, b"plain")


def test_request_response_round_trip(broker, clients):
    u = uid()
    requests, replies = f"svc/{u}/requests", f"svc/{u}/replies"
    service = clients.connected(broker, V5)
    service.subscribe(requests, 1)
    requester = clients.connected(broker, V5)
    requester.subscribe(replies, 1)
    requester.publish(
        requests,
        b"ping?",
        qos=1,
        properties=pub_props(ResponseTopic=replies, CorrelationData=b"req-42"),
    )
    request = service.expect_message()
    service.publish(
        request.properties.ResponseTopic,
        b"pong!",
        qos=1,
        properties=pub_props(CorrelationData=request.properties.CorrelationData),
    )
    reply = requester.expect_message()
    assert (reply.topic, reply.payload) == (replies, b"pong!")
    assert reply.properties.CorrelationData == b"req-42"
