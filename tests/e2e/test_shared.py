"""Shared subscriptions ($share/<group>/<filter>)."""

from __future__ import annotations

import queue
from collections import Counter

import pytest

from .helpers import both_versions, uid

#: Every scenario also runs over MQTT-over-WebSocket (ws) and WebSocket Secure (wss).
pytestmark = pytest.mark.transports


def _collect_into(shared: queue.Queue, members) -> None:
    """Route every member's messages into one queue as (member index, message)."""
    for index, member in enumerate(members):
        member.paho.on_message = lambda _c, _u, msg, i=index: shared.put((i, msg))


def _take(shared: queue.Queue, count: int, timeout: float = 5.0):
    out = []
    for _ in range(count):
        try:
            out.append(shared.get(timeout=timeout))
        except queue.Empty:
            raise AssertionError(f"only {len(out)} of {count} shared messages arrived") from None
    return out


@both_versions
def test_shared_subscription_distributes_round_robin(broker, clients, version):
    u = uid()
    topic = f"shared/{u}/t"
    members = [clients.connected(broker, version) for _ in range(3)]
    for member in members:
        assert member.subscribe(f"$share/g{u}/{topic}", 1) == [1]
    plain = clients.connected(broker, version)
    assert plain.subscribe(topic, 1) == [1]
    shared: queue.Queue = queue.Queue()
    _collect_into(shared, members)

    pub = clients.connected(broker, version)
    for i in range(30):
        pub.publish(topic, str(i).encode(), qos=1)

    # the non-shared subscriber gets everything, in order
    assert [int(m.payload) for m in plain.expect_messages(30)] == list(range(30))

    got = _take(shared, 30)
    # three more messages so that a late duplicate would show up before they are all in
    for i in range(3):
        pub.publish(topic, f"end{i}".encode(), qos=1)
    tail = _take(shared, 3)
    while True:
        ends = {m.payload for _, m in tail if m.payload.startswith(b"end")}
        if len(ends) == 3:
            break
        tail += _take(shared, 1)
    everything = got + [(i, m) for i, m in tail if not m.payload.startswith(b"end")]
    payloads = sorted(int(m.payload) for _, m in everything)
    assert payloads == list(range(30)), "messages lost or duplicated"
    per_member = Counter(i for i, _ in got)
    assert sorted(per_member.values()) == [10, 10, 10], per_member


@both_versions
def test_each_share_group_gets_every_message_once(broker, clients, version):
    u = uid()
    topic = f"shared/{u}/x"
    group_a = [clients.connected(broker, version) for _ in range(2)]
    group_b = [clients.connected(broker, version)]
    for member in group_a:
        assert member.subscribe(f"$share/a{u}/shared/{u}/+", 1) == [1]
    assert group_b[0].subscribe(f"$share/b{u}/{topic}", 1) == [1]
    queue_a: queue.Queue = queue.Queue()
    _collect_into(queue_a, group_a)

    pub = clients.connected(broker, version)
    for i in range(6):
        pub.publish(topic, str(i).encode(), qos=1)
    pub.publish(topic, b"end", qos=1)

    b_payloads = [m.payload for m in group_b[0].expect_messages(7)]
    assert b_payloads == [str(i).encode() for i in range(6)] + [b"end"]
    a_payloads = sorted(m.payload for _, m in _take(queue_a, 7))
    assert a_payloads == sorted([str(i).encode() for i in range(6)] + [b"end"])


@both_versions
def test_unacknowledged_shared_message_goes_to_another_member(broker, clients, version):
    u = uid()
    topic = f"shared/{u}/inflight"
    share = f"$share/g{u}/{topic}"
    slow = clients.connected(broker, version, manual_ack=True)
    assert slow.subscribe(share, 1) == [1]
    healthy = clients.connected(broker, version)
    assert healthy.subscribe(share, 1) == [1]

    pub = clients.connected(broker, version)
    for i in range(4):
        pub.publish(topic, f"m{i}".encode(), qos=1)
    held = slow.expect_message()  # never acknowledged
    assert held.qos == 1
    slow.abort()  # session of the slow member ends (clean session / expiry 0)

    expected = {f"m{i}".encode() for i in range(4)}
    seen: set[bytes] = set()
    while seen != expected:
        msg = healthy.expect_message(timeout=5)
        seen.add(msg.payload)
        assert msg.payload in expected
    assert held.payload in seen


@both_versions
def test_shared_member_unsubscribe_leaves_the_rest(broker, clients, version):
    u = uid()
    topic = f"shared/{u}/u"
    share = f"$share/g{u}/{topic}"
    leaving = clients.connected(broker, version)
    staying = clients.connected(broker, version)
    leaving.subscribe(share, 1)
    staying.subscribe(share, 1)
    leaving.unsubscribe(share)
    pub = clients.connected(broker, version)
    for i in range(4):
        pub.publish(topic, str(i).encode(), qos=1)
    assert [m.payload for m in staying.expect_messages(4)] == [b"0", b"1", b"2", b"3"]
