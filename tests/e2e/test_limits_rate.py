"""Rate limits, session quotas and slow consumers against the real broker process.

TBMQ's MQTT_INCOMING/OUTGOING/TOTAL_RATE_LIMITS_* (token buckets), MQTT_SESSIONS_LIMIT,
MQTT_APPLICATION_CLIENTS_LIMIT, and the NETTY_WRITE_BUFFER_*_WATER_MARK slow-consumer
rule. Limits are given per 60 s (or more) so that no token refills during a test: the
outcome does not depend on timing.
"""

from __future__ import annotations

import socket
import time
import uuid

import pytest

from . import rawmqtt as rm
from .helpers import BrokerProcess, ClientPool
from .scram_client import security_cli

QUOTA_EXCEEDED = 0x97
SESSION_EXPIRY = 0x11


def uid() -> str:
    return uuid.uuid4().hex[:8]


def raw(clients: ClientPool, broker: BrokerProcess, version: int, client_id: str) -> rm.RawClient:
    client = clients.raw(broker, version)
    client.connect(client_id)
    return client


def publish_q1(client: rm.RawClient, topic: str, packet_id: int) -> rm.Packet | None:
    """PUBLISH QoS 1 and return the PUBACK, or None if the broker closed the connection."""
    client.publish(topic, b"m", qos=1, packet_id=packet_id)
    return client.recv()


def test_incoming_limit_mqtt5_quota_exceeded_others_unaffected(start_broker, clients):
    broker = start_broker(
        MQTT_INCOMING_RATE_LIMITS_ENABLED="true", MQTT_INCOMING_RATE_LIMITS_CLIENT_CONFIG="3:600"
    )
    noisy = raw(clients, broker, 5, f"noisy-{uid()}")
    codes = []
    for pid in range(1, 6):
        ack = publish_q1(noisy, "t/noisy", pid)
        assert ack is not None and ack.type == rm.PUBACK and ack.packet_id == pid
        codes.append(ack.reason)
    assert [c == QUOTA_EXCEEDED for c in codes] == [False, False, False, True, True]
    # another client has its own bucket; the noisy one stays connected
    quiet = raw(clients, broker, 5, f"quiet-{uid()}")
    ack = publish_q1(quiet, "t/quiet", 1)
    assert ack is not None and ack.reason != QUOTA_EXCEEDED
    noisy.send(rm.pingreq())
    assert noisy.expect(rm.PINGRESP).type == rm.PINGRESP


def test_incoming_limit_mqtt311_disconnects(start_broker, clients):
    broker = start_broker(
        MQTT_INCOMING_RATE_LIMITS_ENABLED="true", MQTT_INCOMING_RATE_LIMITS_CLIENT_CONFIG="2:600"
    )
    mark = broker.log_mark()
    client_id = f"v3-{uid()}"
    noisy = raw(clients, broker, 4, client_id)
    assert publish_q1(noisy, "t/a", 1) is not None
    assert publish_q1(noisy, "t/a", 2) is not None
    noisy.publish("t/a", b"m", qos=1, packet_id=3)
    assert noisy.read_until_closed() == []
    broker.wait_for_log(rf"{client_id}: incoming message rate limit exceeded", since=mark)
    other = raw(clients, broker, 4, f"other-{uid()}")
    assert publish_q1(other, "t/a", 1) is not None


def test_qos0_over_incoming_limit_is_dropped_not_delivered(start_broker, clients):
    broker = start_broker(
        MQTT_INCOMING_RATE_LIMITS_ENABLED="true", MQTT_INCOMING_RATE_LIMITS_CLIENT_CONFIG="2:600"
    )
    sub = raw(clients, broker, 5, f"sub-{uid()}")
    assert sub.subscribe([("q0/#", 0)]) == [0]
    pub = raw(clients, broker, 5, f"pub-{uid()}")
    for i in range(4):
        pub.publish("q0/x", str(i).encode())
    pub.send(rm.pingreq())  # barrier: every PUBLISH before it has been handled
    pub.expect(rm.PINGRESP)
    got = []
    while (pkt := sub.poll(0.5)) not in (False, None):
        assert isinstance(pkt, rm.Packet)
        got.append(pkt.payload)
    assert got == [b"0", b"1"]


def test_total_limit_is_shared_by_all_clients(start_broker, clients):
    broker = start_broker(
        MQTT_TOTAL_RATE_LIMITS_ENABLED="true", MQTT_TOTAL_RATE_LIMITS_CONFIG="4:600"
    )
    a = raw(clients, broker, 5, f"a-{uid()}")
    b = raw(clients, broker, 5, f"b-{uid()}")
    codes = []
    for pid in range(1, 4):
        for client in (a, b):
            ack = publish_q1(client, "nobody/listens", pid)
            assert ack is not None
            codes.append(ack.reason)
    assert sum(c == QUOTA_EXCEEDED for c in codes) == 2  # 6 messages, 4 tokens in all


def test_outgoing_limit_applies_to_non_persistent_qos0_only(start_broker, clients):
    broker = start_broker(
        MQTT_OUTGOING_RATE_LIMITS_ENABLED="true", MQTT_OUTGOING_RATE_LIMITS_CLIENT_CONFIG="2:600"
    )
    clean = raw(clients, broker, 5, f"clean-{uid()}")
    assert clean.subscribe([("out/#", 0)]) == [0]
    persistent = clients.raw(broker, 5)
    persistent.connect(f"pers-{uid()}", properties=[(SESSION_EXPIRY, 600)])
    assert persistent.subscribe([("out/#", 0)]) == [0]
    pub = raw(clients, broker, 5, f"pub-{uid()}")
    for i in range(5):
        pub.publish("out/x", str(i).encode())
    pub.send(rm.pingreq())
    pub.expect(rm.PINGRESP)

    def drain(client: rm.RawClient) -> list[bytes | None]:
        out = []
        while (pkt := client.poll(0.5)) not in (False, None):
            assert isinstance(pkt, rm.Packet)
            out.append(pkt.payload)
        return out

    assert drain(clean) == [b"0", b"1"]
    assert drain(persistent) == [b"0", b"1", b"2", b"3", b"4"]


@pytest.mark.parametrize(("version", "code"), [(5, QUOTA_EXCEEDED), (4, 3)])
def test_sessions_limit_refuses_new_clients(start_broker, clients, version, code):
    broker = start_broker(MQTT_SESSIONS_LIMIT="2")
    first = raw(clients, broker, 5, f"one-{uid()}")
    raw(clients, broker, 5, f"two-{uid()}")
    third = clients.raw(broker, version)
    connack = third.connect(f"three-{uid()}", expect_success=False)
    assert connack.reason == code  # MQTT 3.1.1: 3 = server unavailable
    assert third.read_until_closed() == []
    first.send(rm.pingreq())
    assert first.expect(rm.PINGRESP).type == rm.PINGRESP


def test_application_clients_limit(start_broker, clients):
    broker = start_broker(MQTT_APPLICATION_CLIENTS_LIMIT="1", SECURITY_MQTT_BASIC_ENABLED="true")
    data = broker.workdir / "data"
    for name in ("app1", "app2"):
        security_cli(
            data, "credentials", "add-basic", "--client-id", name, "--type", "APPLICATION",
            "--pub", ".*", "--sub", ".*",
        )  # fmt: skip
    security_cli(data, "credentials", "add-basic", "--client-id", "dev1", "--pub", ".*")

    def connects(client_id: str, expiry: int) -> int:
        client = clients.raw(broker, 5)
        props = [(SESSION_EXPIRY, expiry)] if expiry else None
        connack = client.connect(client_id, properties=props, expect_success=False)
        assert connack.reason is not None
        return connack.reason

    # the CLI wrote security.db while the broker runs: wait until it sees the credentials
    deadline = time.monotonic() + 10
    while connects("dev1", 600) != 0:  # the last one the CLI added
        assert time.monotonic() < deadline, "broker never picked up the credentials"
    assert connects("app1", 600) == 0
    assert connects("app2", 600) == QUOTA_EXCEEDED
    assert connects("app2", 0) == 0  # a non-persistent APPLICATION client is not counted


def test_slow_consumer_is_bounded_and_does_not_slow_others(start_broker, clients):
    """A subscriber that never reads: QoS 1 for it waits in its bounded session queue
    (oldest dropped, logged), while the publisher and a reading subscriber go on."""
    broker = start_broker(
        NETTY_WRITE_BUFFER_HIGH_WATER_MARK="65536",
        NETTY_WRITE_BUFFER_LOW_WATER_MARK="32768",
        MQTT_PERSISTENT_SESSION_DEVICE_PERSISTED_MESSAGES_LIMIT="300",
    )
    mark = broker.log_mark()
    slow_id = f"slow-{uid()}"
    slow = clients.raw(broker, 5)
    # a tiny receive buffer, so the kernel cannot absorb megabytes on the slow side
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(slow_id)
    assert slow.subscribe([("flood/#", 1)]) == [1]
    fast = raw(clients, broker, 5, f"fast-{uid()}")
    assert fast.subscribe([("flood/#", 1)]) == [1]
    pub = raw(clients, broker, 5, f"pub-{uid()}")
    payload = b"x" * 4096
    for i in range(1, 4001):  # 16 MB in lockstep: the reading subscriber is never behind
        pid = i % 65535 or 1
        pub.publish("flood/x", payload, qos=1, packet_id=pid)
        assert pub.expect(rm.PUBACK).packet_id == pid
        msg = fast.expect(rm.PUBLISH)
        assert msg.payload == payload and msg.packet_id is not None
        fast.puback(msg.packet_id)
    broker.wait_for_log(rf"session {slow_id}: queue full \(300 messages\)", since=mark)
    assert not any("fast-" in line and "queue full" in line for line in broker.logs()[mark:])
