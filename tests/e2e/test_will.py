"""Will messages: when they are published, when not, and the MQTT 5 Will Delay Interval."""

from __future__ import annotations

import time

import pytest
from paho.mqtt.packettypes import PacketTypes

from . import rawmqtt as rm
from .helpers import V5, V311, both_versions, props, session_props, uid, wait_until_elapsed

#: Every scenario also runs over MQTT-over-WebSocket (ws) and WebSocket Secure (wss).
pytestmark = pytest.mark.transports


def _observer(clients, broker, version, topic, qos=2):
    observer = clients.connected(broker, version)
    assert observer.subscribe(topic, qos) == [qos]
    return observer


@both_versions
@pytest.mark.parametrize("will_qos", [0, 1, 2])
def test_will_published_on_abnormal_close(broker, clients, version, will_qos):
    will_topic = f"will/{uid()}"
    observer = _observer(clients, broker, version, will_topic)
    victim = clients.new(broker, version)
    victim.will_set(will_topic, b"gone away", qos=will_qos)
    victim.connect()
    victim.abort()
    msg = observer.expect_message(timeout=5)
    assert (msg.topic, msg.payload) == (will_topic, b"gone away")
    assert msg.qos == will_qos
    assert msg.retain is False


@both_versions
def test_retained_will_is_stored(broker, clients, version):
    will_topic = f"will/{uid()}"
    observer = _observer(clients, broker, version, will_topic)
    victim = clients.new(broker, version)
    victim.will_set(will_topic, b"retained will", qos=1, retain=True)
    victim.connect()
    victim.abort()
    assert observer.expect_message().payload == b"retained will"
    late = clients.connected(broker, version)
    late.subscribe(will_topic, 1)
    msg = late.expect_message()
    assert (msg.payload, msg.retain) == (b"retained will", True)


@both_versions
def test_will_published_on_keepalive_timeout(broker, clients, version):
    will_topic = f"will/{uid()}"
    observer = _observer(clients, broker, version, will_topic)
    raw = clients.raw(broker, version)
    started = time.monotonic()
    raw.connect(f"silent-{uid()}", keepalive=1, will=rm.Will(will_topic, b"timed out", qos=1))
    # the raw client now stays silent: no PINGREQ
    msg = observer.expect_message(timeout=6)
    assert msg.payload == b"timed out"
    assert time.monotonic() - started >= 1.0


@both_versions
def test_will_published_on_takeover(broker, clients, version):
    will_topic = f"will/{uid()}"
    client_id = f"takeover-{uid()}"
    observer = _observer(clients, broker, version, will_topic)
    first = clients.new(broker, version, client_id=client_id)
    first.will_set(will_topic, b"taken over", qos=1)
    first.connect()
    second = clients.new(broker, version, client_id=client_id)
    second.connect()
    first.expect_disconnect()
    msg = observer.expect_message()
    assert msg.payload == b"taken over"


@both_versions
def test_will_not_published_on_normal_disconnect(broker, clients, version):
    u = uid()
    will_topic = f"will/{u}"
    marker = f"will/{u}/marker"
    observer = _observer(clients, broker, version, f"will/{u}/#")
    raw = clients.raw(broker, version)
    raw.connect(f"polite-{u}", will=rm.Will(will_topic, b"must not appear", qos=1))
    raw.disconnect()
    raw.shutdown_write()
    assert raw.read_until_closed() == []
    pub = clients.connected(broker, version)
    pub.publish(marker, b"m", qos=1)
    assert observer.messages_until(marker) == []


def test_v5_disconnect_with_will_reason_publishes_will(broker, clients):
    will_topic = f"will/{uid()}"
    observer = _observer(clients, broker, V5, will_topic)
    victim = clients.new(broker, V5)
    victim.will_set(will_topic, b"asked for it", qos=1)
    victim.connect()
    victim.disconnect(reason_code=0x04)
    msg = observer.expect_message()
    assert msg.payload == b"asked for it"


def test_v5_will_properties_are_forwarded(broker, clients):
    will_topic = f"will/{uid()}"
    observer = _observer(clients, broker, V5, will_topic)
    victim = clients.new(broker, V5)
    victim.will_set(
        will_topic,
        b"{}",
        qos=1,
        properties=props(
            PacketTypes.WILLMESSAGE,
            ContentType="application/json",
            PayloadFormatIndicator=1,
            ResponseTopic="who/cares",
            CorrelationData=b"cd",
            UserProperty=[("a", "1"), ("b", "2")],
        ),
    )
    victim.connect()
    victim.abort()
    msg = observer.expect_message()
    assert msg.properties.ContentType == "application/json"
    assert msg.properties.PayloadFormatIndicator == 1
    assert msg.properties.ResponseTopic == "who/cares"
    assert msg.properties.CorrelationData == b"cd"
    assert msg.properties.UserProperty == [("a", "1"), ("b", "2")]


def test_v5_will_delay_interval_delays_the_will(broker, clients):
    u = uid()
    will_topic = f"will/{u}"
    marker = f"will/{u}/marker"
    observer = _observer(clients, broker, V5, f"will/{u}/#")
    victim = clients.new(broker, V5)
    victim.will_set(
        will_topic,
        b"delayed",
        qos=1,
        properties=props(PacketTypes.WILLMESSAGE, WillDelayInterval=2),
    )
    victim.connect(properties=session_props(30))
    closed_at = time.monotonic()
    victim.abort(wait_broker=True)
    pub = clients.connected(broker, V5)
    pub.publish(marker, b"m", qos=1)
    assert observer.messages_until(marker) == [], "will published before its delay"
    msg = observer.expect_message(timeout=2 + 3)
    assert msg.payload == b"delayed"
    assert time.monotonic() - closed_at >= 1.5


def test_v5_will_cancelled_by_reconnect_within_delay(broker, clients):
    u = uid()
    client_id = f"back-{u}"
    will_topic = f"will/{u}"
    marker = f"will/{u}/marker"
    observer = _observer(clients, broker, V5, f"will/{u}/#")
    victim = clients.new(broker, V5, client_id=client_id)
    victim.will_set(
        will_topic,
        b"cancelled",
        qos=1,
        properties=props(PacketTypes.WILLMESSAGE, WillDelayInterval=2),
    )
    victim.connect(properties=session_props(30))
    closed_at = time.monotonic()
    victim.abort(wait_broker=True)
    back = clients.new(broker, V5, client_id=client_id)
    connack = back.connect(clean_start=False, properties=session_props(30))
    assert connack.session_present is True
    wait_until_elapsed(closed_at, 2 + 1.5)  # the will delay has passed by now
    pub = clients.connected(broker, V5)
    pub.publish(marker, b"m", qos=1)
    assert observer.messages_until(marker) == [], "will published despite the reconnect"
    back.disconnect(properties=props(PacketTypes.DISCONNECT, SessionExpiryInterval=0))


def test_v5_will_published_when_session_expires_before_delay(broker, clients):
    will_topic = f"will/{uid()}"
    observer = _observer(clients, broker, V5, will_topic)
    victim = clients.new(broker, V5)
    victim.will_set(
        will_topic,
        b"session over",
        qos=1,
        properties=props(PacketTypes.WILLMESSAGE, WillDelayInterval=60),
    )
    victim.connect(properties=session_props(1))
    closed_at = time.monotonic()
    victim.abort()
    msg = observer.expect_message(timeout=1 + 4)
    assert msg.payload == b"session over"
    assert time.monotonic() - closed_at < 5


def test_v311_will_to_v5_subscriber(broker, clients):
    will_topic = f"will/{uid()}"
    observer = _observer(clients, broker, V5, will_topic)
    victim = clients.new(broker, V311)
    victim.will_set(will_topic, b"cross version", qos=1)
    victim.connect()
    victim.abort()
    assert observer.expect_message().payload == b"cross version"
