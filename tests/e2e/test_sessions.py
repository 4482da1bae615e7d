"""Persistent sessions, offline queues, redelivery of unacknowledged messages, takeover."""

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
    session_props,
    topics_payloads,
    uid,
    wait_until_elapsed,
)

#: Every scenario also runs over MQTT-over-WebSocket (ws) and WebSocket Secure (wss).
pytestmark = pytest.mark.transports


def connect_session(clients, broker, version, client_id, *, clean=False, expiry=300, **kwargs):
    """Connect with a session that outlives the connection (3.1.1: clean session 0,
    5: session expiry ``expiry``) unless ``clean``. Returns (client, connack)."""
    if version == V5:
        client = clients.new(broker, V5, client_id=client_id, **kwargs)
        connack = client.connect(clean_start=clean, properties=session_props(expiry))
    else:
        client = clients.new(broker, version, client_id=client_id, clean_session=clean, **kwargs)
        connack = client.connect()
    return client, connack


def raw_session(clients, broker, version, client_id, clean=False, expiry=300):
    raw = clients.raw(broker, version)
    properties = [(rm.SESSION_EXPIRY_INTERVAL, expiry)] if version == V5 else None
    connack = raw.connect(client_id, clean=clean, properties=properties)
    return raw, connack


@both_versions
def test_persistent_session_keeps_subscriptions_and_queues_messages(broker, clients, version):
    client_id = f"persist-{uid()}"
    topic = f"sess/{uid()}"
    sub, connack = connect_session(clients, broker, version, client_id)
    assert connack.session_present is False
    assert sub.subscribe(topic, 2) == [2]
    sub.disconnect(wait_broker=True)

    pub = clients.connected(broker, version)
    pub.publish(topic, b"q1", qos=1)
    pub.publish(topic, b"q2", qos=2)

    back, connack = connect_session(clients, broker, version, client_id)
    assert connack.session_present is True
    first, second = back.expect_messages(2)
    assert (first.payload, first.qos) == (b"q1", 1)
    assert (second.payload, second.qos) == (b"q2", 2)
    # the subscription is still active without subscribing again
    pub.publish(topic, b"live", qos=1)
    assert back.expect_message().payload == b"live"


def test_v311_clean_session_discards_previous_session(broker, clients):
    client_id = f"clean-{uid()}"
    u = uid()
    sub, _ = connect_session(clients, broker, V311, client_id)
    sub.subscribe(f"sess/{u}/old", 1)
    sub.disconnect(wait_broker=True)

    fresh, connack = connect_session(clients, broker, V311, client_id, clean=True)
    assert connack.session_present is False
    fresh.subscribe(f"sess/{u}/marker", 1)
    pub = clients.connected(broker, V311)
    pub.publish(f"sess/{u}/old", b"stale", qos=1)
    pub.publish(f"sess/{u}/marker", b"m", qos=1)
    assert fresh.messages_until(f"sess/{u}/marker") == [], "old subscription survived"
    fresh.disconnect(wait_broker=True)

    # a clean session ends with its connection
    _again, connack = connect_session(clients, broker, V311, client_id)
    assert connack.session_present is False


def test_v5_session_expiry_zero_ends_session_at_disconnect(broker, clients):
    client_id = f"exp0-{uid()}"
    u = uid()
    sub, connack = connect_session(clients, broker, V5, client_id, clean=True, expiry=0)
    sub.subscribe(f"sess/{u}/t", 1)
    sub.disconnect(wait_broker=True)
    pub = clients.connected(broker, V5)
    pub.publish(f"sess/{u}/t", b"lost", qos=1)

    back, connack = connect_session(clients, broker, V5, client_id, clean=False, expiry=300)
    assert connack.session_present is False
    back.subscribe(f"sess/{u}/marker", 1)
    pub.publish(f"sess/{u}/t", b"lost too", qos=1)
    pub.publish(f"sess/{u}/marker", b"m", qos=1)
    assert back.messages_until(f"sess/{u}/marker") == []


def test_v5_clean_start_discards_existing_session(broker, clients):
    client_id = f"cs-{uid()}"
    u = uid()
    sub, _ = connect_session(clients, broker, V5, client_id, expiry=300)
    sub.subscribe(f"sess/{u}/t", 1)
    sub.disconnect(wait_broker=True)

    fresh, connack = connect_session(clients, broker, V5, client_id, clean=True, expiry=300)
    assert connack.session_present is False
    fresh.subscribe(f"sess/{u}/marker", 1)
    pub = clients.connected(broker, V5)
    pub.publish(f"sess/{u}/t", b"stale", qos=1)
    pub.publish(f"sess/{u}/marker", b"m", qos=1)
    assert fresh.messages_until(f"sess/{u}/marker") == []


def test_v5_disconnect_can_set_session_expiry_to_zero(broker, clients):
    client_id = f"dis0-{uid()}"
    sub, _ = connect_session(clients, broker, V5, client_id, expiry=300)
    sub.subscribe(f"sess/{uid()}", 1)
    sub.disconnect(
        properties=props(PacketTypes.DISCONNECT, SessionExpiryInterval=0), wait_broker=True
    )
    _back, connack = connect_session(clients, broker, V5, client_id, expiry=300)
    assert connack.session_present is False


def test_v5_session_expires_after_interval(broker, clients):
    client_id = f"exp1-{uid()}"
    sub, _ = connect_session(clients, broker, V5, client_id, expiry=1)
    sub.subscribe(f"sess/{uid()}", 1)
    closed = time.monotonic()
    sub.disconnect(wait_broker=True)
    wait_until_elapsed(closed, 2.5)  # the session expiry interval (1 s) has passed
    _back, connack = connect_session(clients, broker, V5, client_id, expiry=300)
    assert connack.session_present is False


@both_versions
def test_offline_queue_keeps_newest_messages_up_to_limit(start_broker, clients, version):
    broker = start_broker(MQTT_PERSISTENT_SESSION_DEVICE_PERSISTED_MESSAGES_LIMIT=5)
    client_id = f"limit-{uid()}"
    topic = f"sess/{uid()}"
    sub, _ = connect_session(clients, broker, version, client_id)
    sub.subscribe(topic, 1)
    sub.disconnect(wait_broker=True)

    pub = clients.connected(broker, version)
    for i in range(8):
        pub.publish(topic, str(i).encode(), qos=1)

    back, connack = connect_session(clients, broker, version, client_id)
    assert connack.session_present is True
    got = [m.payload for m in back.expect_messages(5)]
    assert got == [b"3", b"4", b"5", b"6", b"7"]
    pub.publish(topic, b"marker", qos=1)
    assert back.expect_message().payload == b"marker", "more than the limit was queued"


@both_versions
def test_qos0_subscription_gets_offline_messages_at_qos0_or_not_at_all(broker, clients, version):
    """QoS 1 messages for a QoS 0 subscription of an offline session: the spec allows
    the server to store or drop them, but they must never arrive with QoS > 0."""
    client_id = f"q0off-{uid()}"
    u = uid()
    sub, _ = connect_session(clients, broker, version, client_id)
    sub.subscribe(f"sess/{u}/t", 0)
    sub.subscribe(f"sess/{u}/marker", 1)
    sub.disconnect(wait_broker=True)
    pub = clients.connected(broker, version)
    pub.publish(f"sess/{u}/t", b"x", qos=1)
    back, _ = connect_session(clients, broker, version, client_id)
    pub.publish(f"sess/{u}/marker", b"m", qos=1)
    for msg in back.messages_until(f"sess/{u}/marker"):
        assert (msg.payload, msg.qos) == (b"x", 0)


# --------------------------------------------------------------------------- redelivery


@both_versions
def test_unacked_qos1_redelivered_with_dup_on_resume(broker, clients, version):
    client_id = f"redeliver1-{uid()}"
    topic = f"redeliver/{uid()}"
    raw, _ = raw_session(clients, broker, version, client_id)
    assert raw.subscribe([(topic, 1)]) == [1]
    pub = clients.connected(broker, version)
    pub.publish(topic, b"unacked", qos=1)
    first = raw.expect(rm.PUBLISH)
    assert (first.payload, first.qos, first.dup) == (b"unacked", 1, False)
    raw.close()  # no PUBACK

    again, connack = raw_session(clients, broker, version, client_id)
    assert connack.session_present is True
    resent = again.expect(rm.PUBLISH)
    assert resent.topic == topic.encode()
    assert resent.payload == b"unacked"
    assert resent.qos == 1
    assert resent.dup is True
    assert resent.packet_id == first.packet_id
    again.puback(resent.packet_id)
    pub.publish(topic, b"next", qos=1)
    nxt = again.expect(rm.PUBLISH)
    assert (nxt.payload, nxt.dup) == (b"next", False)
    again.puback(nxt.packet_id)


@both_versions
def test_unreceived_qos2_redelivered_with_dup_on_resume(broker, clients, version):
    client_id = f"redeliver2-{uid()}"
    topic = f"redeliver/{uid()}"
    raw, _ = raw_session(clients, broker, version, client_id)
    assert raw.subscribe([(topic, 2)]) == [2]
    pub = clients.connected(broker, version)
    pub.publish(topic, b"exactly once", qos=2)
    first = raw.expect(rm.PUBLISH)
    assert (first.qos, first.dup) == (2, False)
    raw.close()  # no PUBREC

    again, connack = raw_session(clients, broker, version, client_id)
    assert connack.session_present is True
    resent = again.expect(rm.PUBLISH)
    assert (resent.payload, resent.qos, resent.dup) == (b"exactly once", 2, True)
    assert resent.packet_id == first.packet_id
    again.send(rm.pubrec(resent.packet_id, version))
    pubrel = again.expect(rm.PUBREL)
    assert pubrel.packet_id == resent.packet_id
    assert pubrel.flags == 0x02
    again.send(rm.pubcomp(resent.packet_id, version))
    pub.publish(topic, b"next", qos=2)
    nxt = again.expect(rm.PUBLISH)
    assert (nxt.payload, nxt.dup) == (b"next", False)


@both_versions
def test_pubrel_resent_after_pubrec_on_resume(broker, clients, version):
    client_id = f"pubrel-{uid()}"
    topic = f"redeliver/{uid()}"
    raw, _ = raw_session(clients, broker, version, client_id)
    assert raw.subscribe([(topic, 2)]) == [2]
    pub = clients.connected(broker, version)
    pub.publish(topic, b"half done", qos=2)
    first = raw.expect(rm.PUBLISH)
    raw.send(rm.pubrec(first.packet_id, version))
    assert raw.expect(rm.PUBREL).packet_id == first.packet_id
    raw.close()  # no PUBCOMP

    again, connack = raw_session(clients, broker, version, client_id)
    assert connack.session_present is True
    pkt = again.expect(rm.PUBREL)  # not the PUBLISH again
    assert pkt.packet_id == first.packet_id
    again.send(rm.pubcomp(pkt.packet_id, version))
    pub.publish(topic, b"next", qos=2)
    nxt = again.expect(rm.PUBLISH)
    assert (nxt.payload, nxt.dup) == (b"next", False)


@both_versions
def test_unacked_qos1_redelivered_to_paho_client(broker, clients, version):
    client_id = f"manual-{uid()}"
    topic = f"redeliver/{uid()}"
    sub, _ = connect_session(clients, broker, version, client_id, manual_ack=True)
    sub.subscribe(topic, 1)
    pub = clients.connected(broker, version)
    pub.publish(topic, b"hold", qos=1)
    held = sub.expect_message()
    assert held.dup is False
    sub.abort()

    back, connack = connect_session(clients, broker, version, client_id)
    assert connack.session_present is True
    msg = back.expect_message()
    assert (msg.payload, msg.qos, msg.dup) == (b"hold", 1, True)


# --------------------------------------------------------------------------- takeover


def test_v5_takeover_disconnects_old_connection_with_0x8e(broker, clients):
    client_id = f"take-{uid()}"
    first = clients.connected(broker, V5, client_id=client_id)
    second = clients.connected(broker, V5, client_id=client_id)
    gone = first.expect_disconnect()
    assert gone.from_server is True
    assert gone.reason_code == 0x8E
    topic = f"take/{uid()}"
    assert second.subscribe(topic, 1) == [1]
    second.publish(topic, b"still here", qos=1)
    assert second.expect_message().payload == b"still here"


def test_v5_takeover_raw_old_connection_gets_disconnect_then_close(broker, clients):
    client_id = f"takeraw-{uid()}"
    raw = clients.raw(broker, V5)
    raw.connect(client_id)
    clients.connected(broker, V5, client_id=client_id)
    packets = raw.read_until_closed()
    assert [(p.type, p.reason) for p in packets] == [(rm.DISCONNECT, 0x8E)]


def test_v311_takeover_closes_old_connection(broker, clients):
    client_id = f"take-{uid()}"
    first = clients.connected(broker, V311, client_id=client_id)
    clients.connected(broker, V311, client_id=client_id)
    gone = first.expect_disconnect()
    assert gone.from_server is False  # 3.1.1 has no server DISCONNECT: just a close


@both_versions
def test_takeover_continues_the_session(broker, clients, version):
    client_id = f"takesess-{uid()}"
    topic = f"take/{uid()}"
    first, _ = connect_session(clients, broker, version, client_id)
    first.subscribe(topic, 1)
    second, connack = connect_session(clients, broker, version, client_id)
    assert connack.session_present is True
    first.expect_disconnect()
    pub = clients.connected(broker, version)
    pub.publish(topic, b"to the new connection", qos=1)
    msg = second.expect_message()
    assert topics_payloads([msg]) == [(topic, b"to the new connection")]
    pub.publish(topic, b"marker", qos=1)
    assert second.expect_message().payload == b"marker"
    assert first.messages.empty()
