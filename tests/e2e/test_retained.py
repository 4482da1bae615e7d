"""Retained messages, MQTT 5 Retain Handling and Retain As Published."""

from __future__ import annotations

import pytest
from paho.mqtt.packettypes import PacketTypes

from .helpers import V5, V311, both_versions, props, uid

#: Every scenario also runs over MQTT-over-WebSocket (ws) and WebSocket Secure (wss).
pytestmark = pytest.mark.transports


@both_versions
@pytest.mark.parametrize(("pub_qos", "sub_qos"), [(0, 0), (1, 1), (2, 2), (2, 0), (1, 2)])
def test_retained_message_delivered_on_subscribe(broker, clients, version, pub_qos, sub_qos):
    topic = f"ret/{uid()}"
    pub = clients.connected(broker, version)
    pub.publish(topic, b"stored", qos=pub_qos, retain=True)
    if pub_qos == 0:
        # no ack for QoS 0: a QoS 1 publish on the same connection is processed after it
        pub.publish(f"{topic}/sync", b"", qos=1)
    sub = clients.connected(broker, version)
    assert sub.subscribe(topic, sub_qos) == [sub_qos]
    msg = sub.expect_message()
    assert (msg.topic, msg.payload) == (topic, b"stored")
    assert msg.retain is True
    assert msg.qos == min(pub_qos, sub_qos)


@both_versions
def test_newer_retained_message_replaces_older(broker, clients, version):
    topic = f"ret/{uid()}"
    pub = clients.connected(broker, version)
    pub.publish(topic, b"old", qos=1, retain=True)
    pub.publish(topic, b"new", qos=1, retain=True)
    sub = clients.connected(broker, version)
    sub.subscribe(topic, 1)
    msg = sub.expect_message()
    assert (msg.payload, msg.retain) == (b"new", True)
    pub.publish(topic, b"marker", qos=1)
    assert sub.expect_message().payload == b"marker"


@both_versions
def test_empty_retained_message_clears_retained(broker, clients, version):
    topic = f"ret/{uid()}"
    pub = clients.connected(broker, version)
    pub.publish(topic, b"to be cleared", qos=1, retain=True)

    existing = clients.connected(broker, version)
    existing.subscribe(topic, 1)
    assert existing.expect_message().payload == b"to be cleared"

    pub.publish(topic, b"", qos=1, retain=True)
    # an existing subscriber receives the zero-byte message as a normal message
    cleared = existing.expect_message()
    assert cleared.payload == b""

    fresh = clients.connected(broker, version)
    fresh.subscribe(topic, 1)
    pub.publish(topic, b"marker", qos=1)
    first = fresh.expect_message()
    assert (first.payload, first.retain) == (b"marker", False), "retained message not cleared"


@both_versions
def test_wildcard_subscription_receives_all_matching_retained(broker, clients, version):
    base = f"ret/{uid()}"
    pub = clients.connected(broker, version)
    for topic in (f"{base}/a", f"{base}/b/c", f"{base}/d", f"{base}x/no"):
        pub.publish(topic, topic.encode(), qos=1, retain=True)
    sub = clients.connected(broker, version)
    sub.subscribe(f"{base}/#", 1)
    got = sub.expect_messages(3)
    assert {m.topic for m in got} == {f"{base}/a", f"{base}/b/c", f"{base}/d"}
    assert all(m.retain for m in got)
    assert all(m.payload == m.topic.encode() for m in got)
    pub.publish(f"{base}/marker", b"m", qos=1)
    assert sub.expect_message().topic == f"{base}/marker"


def test_v311_live_delivery_clears_retain_flag(broker, clients):
    topic = f"ret/{uid()}"
    sub = clients.connected(broker, V311)
    sub.subscribe(topic, 1)
    pub = clients.connected(broker, V311)
    pub.publish(topic, b"live", qos=1, retain=True)
    msg = sub.expect_message()
    assert msg.payload == b"live"
    assert msg.retain is False


@pytest.mark.parametrize("rap", [False, True], ids=["rap0", "rap1"])
def test_v5_retain_as_published(broker, clients, rap):
    topic = f"ret/{uid()}"
    sub = clients.connected(broker, V5)
    sub.subscribe(topic, 1, retain_as_published=rap)
    pub = clients.connected(broker, V5)
    pub.publish(topic, b"retained live", qos=1, retain=True)
    pub.publish(topic, b"plain live", qos=1, retain=False)
    first, second = sub.expect_messages(2)
    assert first.payload == b"retained live"
    assert first.retain is rap
    assert second.payload == b"plain live"
    assert second.retain is False
    # messages sent because of a new subscription always carry retain = 1
    again = clients.connected(broker, V5)
    again.subscribe(topic, 1, retain_as_published=rap)
    msg = again.expect_message()
    assert (msg.payload, msg.retain) == (b"retained live", True)


def test_v5_retain_handling_0_sends_on_every_subscribe(broker, clients):
    topic = f"rh/{uid()}"
    pub = clients.connected(broker, V5)
    pub.publish(topic, b"r", qos=1, retain=True)
    sub = clients.connected(broker, V5)
    sub.subscribe(topic, 1, retain_handling=0)
    assert sub.expect_message().retain is True
    sub.subscribe(topic, 1, retain_handling=0)
    msg = sub.expect_message()
    assert (msg.payload, msg.retain) == (b"r", True)


def test_v5_retain_handling_1_sends_only_for_new_subscription(broker, clients):
    topic = f"rh/{uid()}"
    pub = clients.connected(broker, V5)
    pub.publish(topic, b"r", qos=1, retain=True)
    sub = clients.connected(broker, V5)
    sub.subscribe(topic, 1, retain_handling=1)
    msg = sub.expect_message()
    assert (msg.payload, msg.retain) == (b"r", True)
    sub.subscribe(topic, 1, retain_handling=1)  # already exists -> nothing
    pub.publish(topic, b"marker", qos=1)
    assert sub.expect_message().payload == b"marker"


def test_v5_retain_handling_2_never_sends(broker, clients):
    topic = f"rh/{uid()}"
    pub = clients.connected(broker, V5)
    pub.publish(topic, b"r", qos=1, retain=True)
    sub = clients.connected(broker, V5)
    sub.subscribe(topic, 1, retain_handling=2)
    pub.publish(topic, b"marker", qos=1)
    msg = sub.expect_message()
    assert msg.payload == b"marker"


def test_v5_retained_message_keeps_its_properties(broker, clients):
    topic = f"ret/{uid()}"
    pub = clients.connected(broker, V5)
    publish_props = props(
        PacketTypes.PUBLISH,
        ContentType="text/plain",
        PayloadFormatIndicator=1,
        ResponseTopic="reply/here",
        CorrelationData=b"\x01\x02",
        UserProperty=[("k", "v"), ("k", "w")],
    )
    pub.publish(topic, b"with props", qos=1, retain=True, properties=publish_props)
    sub = clients.connected(broker, V5)
    sub.subscribe(topic, 1)
    msg = sub.expect_message()
    assert msg.retain is True
    assert msg.properties.ContentType == "text/plain"
    assert msg.properties.PayloadFormatIndicator == 1
    assert msg.properties.ResponseTopic == "reply/here"
    assert msg.properties.CorrelationData == b"\x01\x02"
    assert msg.properties.UserProperty == [("k", "v"), ("k", "w")]
