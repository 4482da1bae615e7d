"""Router tests without sockets: a recording link stands in for a connection."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pytbmq.errors import ProtocolViolation
from pytbmq.message import Message
from pytbmq.protocol.packets import (
    EMPTY_PROPERTIES,
    Properties,
    ReasonCode,
    Subscribe,
    Subscription,
    Will,
)
from pytbmq.router import Router, RouterConfig
from pytbmq.session import Session


@dataclass
class Sent:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    sub_ids: tuple[int, ...]
    packet_id: int | None
    dup: bool


@dataclass
class RecordingLink:
    receive_maximum: int = 65535
    max_size: int | None = None
    sent: list[Sent] = field(default_factory=list)
    pubrels: list[int] = field(default_factory=list)
    closed_with: int | None = None
    congested: bool = False

    def send_publish(
        self,
        message: Message,
        qos: int,
        retain: bool,
        sub_ids: tuple[int, ...],
        packet_id: int | None,
        dup: bool,
        now: float,
    ) -> bool:
        if self.max_size is not None and len(message.payload) > self.max_size:
            return False
        self.sent.append(Sent(message.topic, message.payload, qos, retain, sub_ids, packet_id, dup))
        return True

    def send_pubrel(self, packet_id: int) -> None:
        self.pubrels.append(packet_id)

    def can_take_qos0(self) -> bool:
        return not self.congested

    def writable(self) -> bool:
        return not self.congested

    def close_by_server(self, reason_code: int) -> None:
        self.closed_with = reason_code


NOW = 1_000_000.0


def msg(
    topic: str,
    payload: bytes = b"x",
    qos: int = 0,
    retain: bool = False,
    sender: str | None = "pub",
    props: Properties = EMPTY_PROPERTIES,
) -> Message:
    return Message.create(topic, payload, qos, retain, props, sender, NOW)


def connect(
    router: Router,
    cid: str,
    *,
    clean: bool = True,
    expiry: int = 0,
    will: Will | None = None,
    link: RecordingLink | None = None,
    version: int = 5,
) -> tuple[Session, RecordingLink, bool]:
    link = link or RecordingLink()
    session, present = router.connect(link, cid, version, clean, expiry, will, NOW)
    router.session_started(session, NOW)
    return session, link, present


def sub(
    router: Router,
    session: Session,
    *subs: Subscription,
    sub_id: int | None = None,
    v5: bool = True,
) -> list[int]:
    props = Properties(subscription_identifiers=(sub_id,)) if sub_id else EMPTY_PROPERTIES
    codes, retained = router.subscribe(session, Subscribe(1, subs, props), v5)
    router.send_retained(session, retained, NOW)
    return codes


def test_routes_to_matching_subscribers_with_qos_downgrade() -> None:
    r = Router()
    s1, l1, _ = connect(r, "a")
    s2, l2, _ = connect(r, "b")
    assert sub(r, s1, Subscription("t/+", 1)) == [1]
    assert sub(r, s2, Subscription("t/x", 0)) == [0]
    assert r.publish(msg("t/x", qos=2), NOW) == 2
    assert [(x.qos, x.packet_id is not None) for x in l1.sent] == [(1, True)]  # [MQTT-3.8.4-8]
    assert [(x.qos, x.packet_id) for x in l2.sent] == [(0, None)]
    assert r.publish(msg("other"), NOW) == 0


def test_overlapping_subscriptions_give_one_copy_with_every_id() -> None:
    r = Router()
    s, link, _ = connect(r, "a")
    sub(r, s, Subscription("a/#", 0), sub_id=1)
    sub(r, s, Subscription("a/+", 2), sub_id=2)
    r.publish(msg("a/b", qos=2), NOW)
    assert len(link.sent) == 1
    assert link.sent[0].qos == 2
    assert link.sent[0].sub_ids == (1, 2)


def test_no_local_and_retain_as_published() -> None:
    r = Router()
    s, link, _ = connect(r, "me")
    sub(r, s, Subscription("n/l", 0, no_local=True))
    sub(r, s, Subscription("r/p", 0, retain_as_published=True))
    sub(r, s, Subscription("r/q", 0))
    r.publish(msg("n/l", sender="me"), NOW)
    r.publish(msg("r/p", retain=True, sender="other"), NOW)
    r.publish(msg("r/q", retain=True, sender="other"), NOW)
    assert [(x.topic, x.retain) for x in link.sent] == [("r/p", True), ("r/q", False)]


def test_retained_messages_and_retain_handling() -> None:
    r = Router()
    r.publish(msg("k/1", b"one", qos=1, retain=True), NOW)
    r.publish(msg("k/2", b"two", qos=0, retain=True), NOW)
    s, link, _ = connect(r, "a")
    sub(r, s, Subscription("k/#", 1))
    assert sorted((x.topic, x.qos, x.retain) for x in link.sent) == [
        ("k/1", 1, True),
        ("k/2", 0, True),
    ]
    link.sent.clear()
    sub(r, s, Subscription("k/#", 1, retain_handling=1))  # existing subscription: nothing
    assert link.sent == []
    sub(r, s, Subscription("k/+", 1, retain_handling=2))  # never
    assert link.sent == []
    r.publish(msg("k/1", b"", retain=True), NOW)  # empty payload clears [MQTT-3.3.1-10]
    assert r.retained.get("k/1") is None
    link.sent.clear()
    sub(r, s, Subscription("k/#", 0))
    assert [x.topic for x in link.sent] == ["k/2"]


def test_expired_retained_message_is_not_delivered() -> None:
    r = Router()
    r.publish(msg("e", retain=True, props=Properties(message_expiry_interval=5)), NOW)
    s, link, _ = connect(r, "a")
    _codes, retained = r.subscribe(s, Subscribe(1, (Subscription("e"),)), True)
    r.send_retained(s, retained, NOW + 6)
    assert link.sent == []
    assert r.retained.get("e") is None


def test_shared_subscription_round_robin_and_redistribution() -> None:
    r = Router()
    members = [connect(r, f"m{i}") for i in range(3)]
    for s, _, _ in members:
        sub(r, s, Subscription("$share/g/job", 1))
    plain, plain_link, _ = connect(r, "plain")
    sub(r, plain, Subscription("job", 1))
    for i in range(6):
        r.publish(msg("job", str(i).encode(), qos=1), NOW)
    counts = [len(link.sent) for _, link, _ in members]
    assert counts == [2, 2, 2]
    assert len(plain_link.sent) == 6
    # m0 leaves without acking: its two messages go to the other members.
    s0, _l0, _ = members[0]
    r.connection_lost(s0, NOW, publish_will=True)
    assert sum(len(link.sent) for _, link, _ in members[1:]) == 6
    delivered = sorted(x.payload for _, link, _ in members[1:] for x in link.sent)
    assert delivered == [str(i).encode() for i in range(6)]  # [MQTT-4.8.2-5]


def test_no_local_on_shared_subscription_is_a_protocol_error() -> None:
    r = Router()
    s, _, _ = connect(r, "a")
    with pytest.raises(ProtocolViolation):
        sub(r, s, Subscription("$share/g/t", 0, no_local=True))


def test_invalid_filters_and_root_wildcard_setting() -> None:
    r = Router(RouterConfig(root_wildcard_allowed=False))
    s, _, _ = connect(r, "a")
    assert sub(r, s, Subscription("a/#/b"), Subscription("#"), Subscription("$share//x")) == [
        0x8F,
        0x87,
        0x8F,
    ]
    assert sub(r, s, Subscription("a+"), Subscription("#"), v5=False) == [0x80, 0x80]


def test_persistent_session_queues_and_resends_with_dup() -> None:
    r = Router()
    s, _link, present = connect(r, "p", clean=False, expiry=100)
    assert present is False
    sub(r, s, Subscription("q", 2))
    r.publish(msg("q", b"1", qos=1), NOW)  # in flight, never acked
    r.connection_lost(s, NOW, publish_will=True)
    r.publish(msg("q", b"2", qos=2), NOW)  # queued while away
    r.publish(msg("q", b"3", qos=0), NOW)  # QoS 0 is not queued
    s2, link2, present = connect(r, "p", clean=False, expiry=100)
    assert present is True and s2 is s
    assert [(x.payload, x.dup) for x in link2.sent] == [
        (b"1", True),
        (b"2", False),
    ]  # [MQTT-4.4.0-1]


def test_pubrel_resent_for_qos2_awaiting_pubcomp() -> None:
    r = Router()
    s, link, _ = connect(r, "p", clean=False, expiry=100)
    sub(r, s, Subscription("q", 2))
    r.publish(msg("q", qos=2), NOW)
    pid = link.sent[0].packet_id
    assert pid is not None
    assert r.pubrec(s, pid, 0, NOW)
    assert link.pubrels == [pid]
    r.connection_lost(s, NOW, publish_will=True)
    _, link2, _ = connect(r, "p", clean=False, expiry=100)
    assert link2.sent == [] and link2.pubrels == [pid]
    r.pubcomp(s, pid, NOW)
    assert s.inflight_out == {}
    assert not r.pubrec(s, 999, 0, NOW)


def test_clean_start_discards_the_old_session() -> None:
    r = Router()
    s, _, _ = connect(r, "p", clean=False, expiry=100)
    sub(r, s, Subscription("q", 1))
    r.connection_lost(s, NOW, publish_will=True)
    s2, _link2, present = connect(r, "p", clean=True)
    assert present is False and s2 is not s
    assert r.publish(msg("q", qos=1), NOW) == 0


def test_queue_limit_drops_oldest() -> None:
    r = Router(RouterConfig(queue_limit=3))
    s, _, _ = connect(r, "p", clean=False, expiry=100)
    sub(r, s, Subscription("q", 1))
    r.connection_lost(s, NOW, publish_will=True)
    for i in range(5):
        r.publish(msg("q", str(i).encode(), qos=1), NOW)
    _, link, _ = connect(r, "p", clean=False, expiry=100)
    assert [x.payload for x in link.sent] == [b"2", b"3", b"4"]
    assert r.counters.messages_dropped_queue_full == 2


def test_receive_maximum_limits_inflight_and_acks_pump_the_queue() -> None:
    r = Router()
    s, link, _ = connect(r, "p", link=RecordingLink(receive_maximum=2))
    sub(r, s, Subscription("q", 1))
    for i in range(4):
        r.publish(msg("q", str(i).encode(), qos=1), NOW)
    assert [x.payload for x in link.sent] == [b"0", b"1"]  # [MQTT-4.9.0-2]
    first = link.sent[0].packet_id
    assert first is not None
    r.puback(s, first, NOW)
    assert [x.payload for x in link.sent] == [b"0", b"1", b"2"]


def test_message_too_large_for_client_is_dropped() -> None:
    r = Router()
    s, link, _ = connect(r, "p", link=RecordingLink(max_size=3))
    sub(r, s, Subscription("q", 1))
    r.publish(msg("q", b"too long", qos=1), NOW)
    r.publish(msg("q", b"ok", qos=1), NOW)
    assert [x.payload for x in link.sent] == [b"ok"]
    assert len(s.inflight_out) == 1


def test_qos0_dropped_while_link_is_congested() -> None:
    r = Router()
    s, link, _ = connect(r, "p")
    sub(r, s, Subscription("q", 1))
    link.congested = True
    r.publish(msg("q", qos=0), NOW)
    r.publish(msg("q", qos=1), NOW)
    assert link.sent == []  # QoS 1 to a slow consumer waits in its session queue
    assert len(s.queue) == 1
    assert r.counters.messages_dropped_qos0 == 1
    link.congested = False
    r.link_writable(s, NOW)
    assert [x.qos for x in link.sent] == [1]
    assert not s.queue


def test_slow_consumer_queue_is_bounded_oldest_dropped() -> None:
    r = Router(RouterConfig(queue_limit=3))
    s, link, _ = connect(r, "p")
    sub(r, s, Subscription("q", 1))
    link.congested = True
    for i in range(5):
        r.publish(msg("q", qos=1, payload=str(i).encode()), NOW)
    assert [o.message.payload for o in s.queue] == [b"2", b"3", b"4"]
    assert r.counters.messages_dropped_queue_full == 2


def test_sessions_limit_refuses_new_clients_only() -> None:
    r = Router(RouterConfig(sessions_limit=2))
    connect(r, "a")
    connect(r, "b")
    assert r.admission_refusal("c", "DEVICE", 0) is not None
    assert r.admission_refusal("a", "DEVICE", 0) is None  # an existing session is fine


def test_application_clients_limit_counts_persistent_app_sessions() -> None:
    r = Router(RouterConfig(application_clients_limit=1))
    s, _, _ = connect(r, "app1")
    s.client_type = "APPLICATION"
    s.expiry_interval = 3600
    assert r.admission_refusal("app2", "APPLICATION", 3600) is not None
    assert r.admission_refusal("app2", "APPLICATION", 0) is None  # not persistent
    assert r.admission_refusal("dev", "DEVICE", 3600) is None
    assert r.admission_refusal("app1", "APPLICATION", 3600) is None  # its own session


def test_will_on_abnormal_close_not_on_normal_disconnect() -> None:
    r = Router()
    watcher, wl, _ = connect(r, "w")
    sub(r, watcher, Subscription("will/#", 0))
    s, _, _ = connect(r, "a", will=Will("will/a", b"gone"))
    r.connection_lost(s, NOW, publish_will=False)
    assert wl.sent == []
    s, _, _ = connect(r, "a", will=Will("will/a", b"gone"))
    r.connection_lost(s, NOW, publish_will=True)
    assert [x.payload for x in wl.sent] == [b"gone"]


def test_takeover_closes_old_link_and_publishes_its_will() -> None:
    r = Router()
    watcher, wl, _ = connect(r, "w")
    sub(r, watcher, Subscription("will/#", 0))
    _, old, _ = connect(r, "a", will=Will("will/a", b"taken"), clean=False, expiry=60)
    _s2, _new, present = connect(r, "a", clean=False, expiry=60)
    assert old.closed_with == 0x8E  # [MQTT-3.1.4-3]
    assert present is True
    assert [x.payload for x in wl.sent] == [b"taken"]


def test_delayed_will_fires_when_due_and_is_cancelled_by_reconnect() -> None:
    r = Router()
    watcher, wl, _ = connect(r, "w")
    sub(r, watcher, Subscription("will/#", 0))
    delayed = Will("will/a", b"late", properties=Properties(will_delay_interval=5))
    s, _, _ = connect(r, "a", will=delayed, clean=False, expiry=60)
    r.connection_lost(s, NOW, publish_will=True)
    r.expire(NOW + 4)
    assert wl.sent == []
    assert r.next_deadline() == NOW + 5
    r.expire(NOW + 5)
    assert [x.payload for x in wl.sent] == [b"late"]
    # Reconnecting within the delay cancels it [MQTT-3.1.3-9].
    wl.sent.clear()
    s, _, _ = connect(r, "a", will=delayed, clean=False, expiry=60)
    r.connection_lost(s, NOW, publish_will=True)
    connect(r, "a", clean=False, expiry=60)
    r.expire(NOW + 10)
    assert wl.sent == []


def test_session_end_sends_a_delayed_will_early() -> None:
    r = Router()
    watcher, wl, _ = connect(r, "w")
    sub(r, watcher, Subscription("will/#", 0))
    delayed = Will("will/a", b"bye", properties=Properties(will_delay_interval=50))
    s, _, _ = connect(r, "a", will=delayed, clean=False, expiry=10)
    r.connection_lost(s, NOW, publish_will=True)
    r.expire(NOW + 10)
    assert [x.payload for x in wl.sent] == [b"bye"]
    assert "a" not in r.sessions


def test_session_expiry() -> None:
    r = Router()
    s, _, _ = connect(r, "a", clean=False, expiry=30)
    r.connection_lost(s, NOW, publish_will=True)
    r.expire(NOW + 29)
    assert "a" in r.sessions
    r.expire(NOW + 30)
    assert "a" not in r.sessions
    s, _, _ = connect(r, "b", expiry=0)
    r.connection_lost(s, NOW, publish_will=True)
    assert "b" not in r.sessions


def test_unsubscribe_reason_codes() -> None:
    r = Router()
    s, _link, _ = connect(r, "a")
    sub(r, s, Subscription("x/y", 0))
    assert r.unsubscribe(s, ("x/y", "nope")) == [0x00, 0x11]
    assert r.publish(msg("x/y"), NOW) == 0


def test_incoming_qos2_ids() -> None:
    r = Router()
    s, _, _ = connect(r, "a")
    assert r.qos2_received(s, 7)
    assert not r.qos2_received(s, 7)  # duplicate: do not route again [MQTT-4.3.3-10]
    assert r.pubrel(s, 7)
    assert not r.pubrel(s, 7)


def test_expiry_forwarded_as_remaining_time() -> None:
    m = msg("t", props=Properties(message_expiry_interval=60))
    head, tail = m.encoded(True, 0, False, (), NOW + 10.5)
    assert bytes([0x02, 0, 0, 0, 50]) in head + tail  # [MQTT-3.3.2-6]
    assert m.expired(NOW + 60) and not m.expired(NOW + 59)


def test_takeover_of_an_expiry_0_session_starts_a_fresh_one() -> None:
    """Found by the link fuzzer: the ended session must not be resumed (session present
    0), and the new one must be the router's, so that a third connection takes it over."""
    r = Router()
    a, _, _ = connect(r, "c", expiry=0)
    sub(r, a, Subscription("old/#", 0))
    b, link_b, present = connect(r, "c", clean=False, expiry=0)
    assert not present
    assert r.sessions["c"] is b and b is not a
    assert not b.subscriptions
    _c, _, _ = connect(r, "c", clean=False, expiry=0)
    assert link_b.closed_with == ReasonCode.SESSION_TAKEN_OVER


def test_messages_in_flight_count_towards_the_session_limit() -> None:
    # a client that takes everything but never acknowledges: without the bound its
    # in-flight window would grow to its Receive Maximum (65,535 by default)
    r = Router(RouterConfig(queue_limit=3))
    s, link, _ = connect(r, "p")
    sub(r, s, Subscription("q", 1))
    for i in range(6):
        r.publish(msg("q", qos=1, payload=str(i).encode()), NOW)
    assert [x.payload for x in link.sent] == [b"0", b"1", b"2"]
    assert len(s.inflight_out) == 3 and not s.queue
    assert r.counters.messages_dropped_queue_full == 3
    first = link.sent[0].packet_id
    assert first is not None
    r.puback(s, first, NOW)
    r.publish(msg("q", qos=1, payload=b"6"), NOW)
    assert [x.payload for x in link.sent][-1] == b"6"
    assert len(s.inflight_out) + len(s.queue) == 3


def test_resend_after_reconnect_waits_for_a_writable_link_and_keeps_order() -> None:
    r = Router()
    s, _first, _ = connect(r, "p", clean=False, expiry=100)
    sub(r, s, Subscription("q", 1))
    for i in range(3):
        r.publish(msg("q", qos=1, payload=str(i).encode()), NOW)  # in flight, never acked
    r.connection_lost(s, NOW, publish_will=True)
    slow = RecordingLink(congested=True)
    s2, link2, present = connect(r, "p", clean=False, expiry=100, link=slow)
    assert present and s2 is s and link2 is slow
    assert slow.sent == [] and list(s.resend) == list(s.inflight_out)
    r.publish(msg("q", qos=1, payload=b"new"), NOW)  # must not overtake the resends
    assert slow.sent == [] and [o.message.payload for o in s.queue] == [b"new"]
    slow.congested = False
    r.link_writable(s, NOW)
    assert [(x.payload, x.dup) for x in slow.sent] == [
        (b"0", True),
        (b"1", True),
        (b"2", True),
        (b"new", False),
    ]  # [MQTT-4.4.0-1], in the original order
    assert not s.resend
