"""The router's change log and `restore`: what is logged (and what is not), and how
stored state comes back after downtime (session expiry, delayed wills, sessions that were
connected when the broker stopped), queue limits per client type and the queue TTL."""

from __future__ import annotations

import logging

import pytest
from test_router import NOW, RecordingLink, msg  # tests/unit is on sys.path (rootdir mode)

from pytbmq.changes import (
    IN_DEL,
    IN_PUT,
    MSG_DEL,
    MSG_PUT,
    OUT_DEL,
    OUT_PUT,
    PUBLISH_SENT,
    QUEUED,
    RET_DEL,
    RET_PUT,
    SES_DEL,
    SES_PUT,
    SUB_PUT,
    StoredSession,
    StoredState,
)
from pytbmq.protocol.packets import Properties, Subscribe, Subscription, Will
from pytbmq.router import Router, RouterConfig
from pytbmq.session import Session


def durable(config: RouterConfig | None = None) -> Router:
    r = Router(config)
    r.enable_changes()
    return r


def connect(
    r: Router, cid: str, expiry: int, *, will: Will | None = None, clean: bool = False
) -> tuple[Session, RecordingLink]:
    link = RecordingLink()
    session, _ = r.connect(link, cid, 5, clean, expiry, will, NOW)
    r.session_started(session, NOW)
    return session, link


def subscribe(r: Router, session: Session, topic_filter: str, qos: int = 1) -> None:
    r.subscribe(session, Subscribe(1, (Subscription(topic_filter, qos),)), True)


def kinds(r: Router) -> list[int]:
    return [c[0] for c in r.take_changes()]


# --------------------------------------------------------------------------- the log


def test_sessions_that_end_with_their_connection_log_nothing() -> None:
    r = durable()
    s, link = connect(r, "clean", 0)
    subscribe(r, s, "t")
    r.publish(msg("t", qos=1), NOW)
    r.puback(s, link.sent[0].packet_id or 0, NOW)
    assert r.qos2_received(s, 5) and r.pubrel(s, 5)
    r.connection_lost(s, NOW, publish_will=True)
    assert r.changes == []


def test_without_a_durable_store_nothing_is_logged() -> None:
    r = Router()
    s, _ = connect(r, "p", 3600)
    subscribe(r, s, "t")
    r.publish(msg("t", qos=1, retain=True), NOW)
    assert r.changes is None


def test_fan_out_stores_the_message_once() -> None:
    r = durable()
    sessions = [connect(r, f"s{i}", 3600)[0] for i in range(5)]
    for s in sessions:
        subscribe(r, s, "fan")
        r.connection_lost(s, NOW, publish_will=False)
    r.take_changes()
    r.publish(msg("fan", b"x", qos=1), NOW)
    changes = r.take_changes()
    assert [c[0] for c in changes] == [MSG_PUT] + [OUT_PUT] * 5
    assert {c[3] for c in changes[1:]} == {changes[0][1]}  # every row points at it
    assert all(c[9] == QUEUED for c in changes[1:])


def test_acknowledgement_removes_the_row_and_then_the_message() -> None:
    r = durable()
    a, la = connect(r, "a", 3600)
    b, lb = connect(r, "b", 3600)
    subscribe(r, a, "t")
    subscribe(r, b, "t")
    r.take_changes()
    r.publish(msg("t", qos=1), NOW)
    changes = r.take_changes()
    assert [c[0] for c in changes] == [MSG_PUT, OUT_PUT, OUT_PUT]
    assert changes[1][9] == PUBLISH_SENT
    r.puback(a, la.sent[0].packet_id or 0, NOW)
    assert kinds(r) == [OUT_DEL]
    r.puback(b, lb.sent[0].packet_id or 0, NOW)
    assert kinds(r) == [OUT_DEL, MSG_DEL]


def test_incoming_qos2_ids_and_retained_messages_are_logged() -> None:
    r = durable()
    s, _ = connect(r, "p", 3600)
    r.take_changes()
    assert r.qos2_received(s, 9)
    assert r.pubrel(s, 9)
    r.publish(msg("r", b"x", retain=True), NOW)
    r.publish(msg("r", b"", retain=True), NOW)
    r.publish(msg("r", b"", retain=True), NOW)  # nothing to delete: nothing logged
    assert kinds(r) == [IN_PUT, IN_DEL, RET_PUT, RET_DEL]


def test_resuming_with_expiry_zero_removes_the_session_from_the_store() -> None:
    r = durable()
    s, _link = connect(r, "c", 3600)
    assert s.stored and s.sid
    subscribe(r, s, "t")
    r.publish(msg("t", qos=1), NOW)
    logged = kinds(r)
    assert logged == [SES_PUT, SUB_PUT, MSG_PUT, OUT_PUT]
    s2, _ = connect(r, "c", 0)  # takeover, resumed, but now ends with its connection
    assert s2 is s
    assert kinds(r) == [SES_PUT, SES_DEL, MSG_DEL]
    assert not s.stored and all(o.row == 0 for o in s.inflight_out.values())
    r.connection_lost(s, NOW, publish_will=False)
    assert r.changes == [] and "c" not in r.sessions


def test_queue_limit_by_client_type_releases_dropped_rows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    r = durable(RouterConfig(queue_limit=2, queue_limit_app=3))
    dev, _ = connect(r, "dev", 3600)
    app, _ = connect(r, "app", 3600)
    app.client_type = "APPLICATION"
    for s in (dev, app):
        subscribe(r, s, "t")
        r.connection_lost(s, NOW, publish_will=False)
    r.take_changes()
    with caplog.at_level(logging.WARNING, logger="pytbmq.router"):
        for i in range(5):
            r.publish(msg("t", str(i).encode(), qos=1), NOW)
    assert [o.message.payload for o in dev.queue] == [b"3", b"4"]
    assert [o.message.payload for o in app.queue] == [b"2", b"3", b"4"]
    assert r.counters.messages_dropped_queue_full == 5
    drops = [rec for rec in caplog.records if "queue full" in rec.getMessage()]
    assert len(drops) == 2  # once per session
    logged = r.take_changes()
    # messages 0 and 1 were dropped by both sessions: their rows and messages are gone
    assert sum(1 for c in logged if c[0] == MSG_DEL) == 2
    assert sum(1 for c in logged if c[0] == OUT_DEL) == 5


def test_device_queue_ttl_drops_old_messages_at_delivery() -> None:
    r = durable(RouterConfig(queue_ttl=100))
    s, _ = connect(r, "dev", 3600)
    subscribe(r, s, "t")
    r.connection_lost(s, NOW, publish_will=False)
    r.publish(msg("t", b"old", qos=1), NOW)
    r.publish(msg("t", b"new", qos=1), NOW + 50)
    link = RecordingLink()
    r.connect(link, "dev", 5, False, 3600, None, NOW + 120)
    r.session_started(s, NOW + 120)
    assert [x.payload for x in link.sent] == [b"new"]
    assert r.counters.messages_dropped_ttl == 1


# --------------------------------------------------------------------------- restore


def stored_session(cid: str, sid: int, **kw: object) -> StoredSession:
    values: dict[str, object] = {
        "protocol_version": 5,
        "expiry_interval": 100,
        "client_type": "DEVICE",
        "disconnected_at": NOW - 10,
        "will": None,
        "will_delay": 0,
        "will_due": None,
    }
    values.update(kw)
    return StoredSession(cid, sid, **values)  # type: ignore[arg-type]


def test_restore_continues_session_expiry_from_stored_times() -> None:
    r = durable()
    state = StoredState(
        [
            stored_session("expired", 1, expiry_interval=5),  # expired 5 s ago
            stored_session("alive", 2, expiry_interval=100),  # 90 s left
            stored_session("forever", 3, expiry_interval=0xFFFFFFFF),
        ]
    )
    r.restore(state, NOW)
    assert set(r.sessions) == {"alive", "forever"}
    assert (SES_DEL, "expired", 1) in r.take_changes()
    assert r.next_deadline() == NOW + 90
    r.expire(NOW + 90)
    assert set(r.sessions) == {"forever"}


def test_restore_publishes_due_wills_and_schedules_the_others() -> None:
    r = durable()
    watcher = stored_session("watch", 1, expiry_interval=1000)
    watcher.subscriptions = []
    late = Will("w/late", b"late", 1)
    soon = Will("w/soon", b"soon", 1)
    state = StoredState(
        [
            watcher,
            stored_session("a", 2, will=late, will_delay=20, will_due=NOW - 1),
            stored_session("b", 3, will=soon, will_delay=20, will_due=NOW + 5),
        ]
    )
    r.restore(state, NOW)
    w, link = connect(r, "watch", 1000)
    subscribe(r, w, "w/#")
    # "a" fell due while the broker was down: published during restore (before the
    # watcher came back, so only counted); "b" is still pending.
    assert r.counters.messages_published == 1
    assert "b" in r._pending_wills and "a" not in r._pending_wills
    r.expire(NOW + 5)
    assert [x.payload for x in link.sent] == [b"soon"]


def test_restore_treats_sessions_connected_at_the_crash_as_just_disconnected() -> None:
    r = durable()
    delayed = Will("w/d", b"d", 0, False, Properties(will_delay_interval=30))
    state = StoredState(
        [
            stored_session("now", 1, disconnected_at=None, will=Will("w/n", b"n", 0)),
            stored_session("later", 2, disconnected_at=None, will=delayed, will_delay=30),
        ]
    )
    r.restore(state, NOW)
    assert r.counters.messages_published == 1  # "now" had no delay
    assert r._pending_wills["later"].due == NOW + 30
    assert r.sessions["later"].disconnected_at == NOW
    assert r._expiry_at["now"] == NOW + 100
    logged = [c for c in r.take_changes() if c[0] == SES_PUT]
    assert {c[1] for c in logged} == {"now", "later"}  # disconnect time written back


def test_broker_maps_the_queue_settings() -> None:
    from pytbmq.broker import router_config
    from pytbmq.config import load_settings

    cfg = router_config(
        load_settings(
            {
                "MQTT_PERSISTENT_SESSION_DEVICE_PERSISTED_MESSAGES_LIMIT": "5",
                "MQTT_PERSISTENT_SESSION_APP_PERSISTED_MESSAGES_LIMIT": "7",
                "MQTT_PERSISTENT_SESSION_DEVICE_PERSISTED_MESSAGES_TTL": "9",
            }
        )
    )
    assert (cfg.queue_limit, cfg.queue_limit_app, cfg.queue_ttl) == (5, 7, 9)
