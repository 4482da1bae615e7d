"""Durability of the embedded SQLite store: a restart, or a crash, loses nothing that was
acknowledged.

Each test starts the real broker process on a data directory of its own, stops it with
SIGKILL (a crash: no shutdown code runs) or SIGTERM (a clean stop) and starts it again
on the same directory. The promise under test: once the broker has sent PUBACK (or
PUBREC) for a message, every persistent session that matched it gets it after the
restart; QoS 2 stays exactly once across the restart for a publisher that resumes its
session; in-flight messages come back with DUP and their packet ids [MQTT-4.4.0-1].
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from paho.mqtt.packettypes import PacketTypes

from . import rawmqtt as rm
from .bulk import BulkPublisher, BulkSubscriber, index_of
from .helpers import V5, V311, both_versions, broker_env, props, uid, wait_until_elapsed

BULK = 20_000
BIG_QUEUES = {
    "MQTT_PERSISTENT_SESSION_DEVICE_PERSISTED_MESSAGES_LIMIT": 100_000,
}


@pytest.fixture
def durable(start_broker, tmp_path):
    """``durable(**env)`` starts a broker on this test's one data directory."""
    data_dir = tmp_path / "durable-data"

    def start(**env):
        return start_broker(PYTBMQ_DATA_DIR=data_dir, **env)

    start.data_dir = data_dir
    return start


def committed(clients, broker, version: int = V5) -> None:
    """Return once everything the broker did so far is on disk: a PUBACK is only sent
    after every change logged before it is committed."""
    pub = clients.connected(broker, version)
    pub.publish(f"barrier/{uid()}", b"", qos=1)
    pub.disconnect()


def crash(broker) -> None:
    """SIGKILL: no shutdown code runs, nothing is flushed."""
    broker.send_signal(signal.SIGKILL)
    assert broker.wait_exit(10) == -signal.SIGKILL


def clean_stop(broker) -> None:
    broker.send_signal(signal.SIGTERM)
    assert broker.wait_exit(20) == 0
    assert any("pytbmq stopped" in line for line in broker.logs())


def offline_subscribers(broker, topic: str, qos: int) -> list[BulkSubscriber]:
    """One MQTT 3.1.1 and one MQTT 5 persistent session subscribed to ``topic``, offline."""
    subs = []
    for version in (V311, V5):
        sub = BulkSubscriber(f"durable-sub{version}-{uid()}", version)
        sub.connect(broker.host, broker.port)
        sub.subscribe(topic, qos)
        sub.close()
        subs.append(sub)
    return subs


def drain(broker, subs: list[BulkSubscriber], topic: str) -> list[list]:
    """Reconnect each subscriber; return what it received before a marker published now."""
    marker = f"{topic}/marker"
    for sub in subs:
        connack = sub.connect(broker.host, broker.port)
        assert connack.session_present is True, f"{sub.client_id} lost its session"
        sub.subscribe(marker, 1)
    pub = BulkPublisher(f"marker-{uid()}", V311, 1)
    pub.connect(broker.host, broker.port)
    pub.publish_in_background(marker, 1)
    pub.wait_acked(1)
    pub.close()
    return [sub.until_marker(marker, timeout=60) for sub in subs]


# --------------------------------------------------------------------------- crash: QoS 1


def test_kill_9_loses_no_acknowledged_qos1_message(durable, clients):
    broker = durable(**BIG_QUEUES)
    topic = f"durable/{uid()}"
    subs = offline_subscribers(broker, topic, 1)

    pub = BulkPublisher(f"pub-{uid()}", V311, 1)
    pub.connect(broker.host, broker.port)
    pub.publish_in_background(topic, BULK)
    pub.wait_acked(BULK // 2)
    crash(broker)
    pub.wait_gone()
    acked = set(pub.acked)
    assert BULK // 2 <= len(acked) < BULK, "the crash did not happen mid-stream"

    broker = durable(**BIG_QUEUES)
    for sub, got in zip(subs, drain(broker, subs, topic), strict=True):
        indexes = [index_of(m.payload) for m in got]
        missing = acked - set(indexes)
        assert not missing, (
            f"{sub.client_id} (MQTT {sub.version}) lost {len(missing)} acknowledged "
            f"messages of {len(acked)}, e.g. {sorted(missing)[:10]}"
        )
        assert all(m.qos == 1 for m in got)
        assert indexes == sorted(indexes), "queued messages out of order"
        sub.close()


# --------------------------------------------------------------------------- crash: QoS 2


def test_kill_9_keeps_qos2_exactly_once_for_a_resumed_publisher(durable, clients):
    broker = durable(**BIG_QUEUES)
    topic = f"durable/{uid()}"
    subs = offline_subscribers(broker, topic, 2)

    pub = BulkPublisher(f"pub2-{uid()}", V5, 2, clean=True, expiry=3600)
    pub.connect(broker.host, broker.port)
    pub.publish_in_background(topic, BULK)
    pub.wait_acked(BULK // 2)
    crash(broker)
    pub.wait_gone()
    acked = set(pub.acked)
    assert len(acked) < BULK, "the crash did not happen mid-stream"

    broker = durable(**BIG_QUEUES)
    connack = pub.resume(broker.host, broker.port, topic)  # resend PUBLISH (DUP) / PUBREL
    assert connack.session_present is True
    pub.close()
    started = pub.started
    assert acked <= started
    for sub, got in zip(subs, drain(broker, subs, topic), strict=True):
        indexes = [index_of(m.payload) for m in got]
        assert len(indexes) == len(set(indexes)), (
            f"{sub.client_id}: {len(indexes) - len(set(indexes))} duplicates at QoS 2"
        )
        assert set(indexes) == started, (
            f"{sub.client_id}: missing {sorted(started - set(indexes))[:10]}, "
            f"unexpected {sorted(set(indexes) - started)[:10]}"
        )
        assert all(m.qos == 2 for m in got)
        sub.close()


# --------------------------------------------------------------------------- in flight


@both_versions
def test_in_flight_messages_come_back_with_dup_after_a_crash(durable, clients, version):
    broker = durable()
    topic = f"durable/{uid()}"
    sub = BulkSubscriber(f"inflight-{uid()}", version)
    sub.ack = False  # nothing is acknowledged: every message stays in flight
    sub.connect(broker.host, broker.port)
    sub.subscribe(topic + "/#", 2)

    pub = clients.connected(broker, version)
    pub.publish(topic + "/q1", b"one", qos=1)
    pub.publish(topic + "/q2", b"two", qos=2)
    pub.publish(topic + "/q2b", b"three", qos=2)
    sub.wait_for(lambda: len(sub.messages) == 3)
    first = {m.topic: m for m in sub.messages}
    # PUBREC the last one: the broker answers PUBREL and waits for PUBCOMP.
    assert sub._conn is not None
    sub._conn.send(rm.pubrec(first[topic + "/q2b"].packet_id, version))
    sub.wait_for(lambda: len(sub.pubrels) == 1)
    committed(clients, broker, version)  # the PUBREC above is on disk
    crash(broker)
    sub.abort()

    broker = durable()
    sub.messages.clear()
    sub.pubrels.clear()
    connack = sub.connect(broker.host, broker.port)  # still acknowledging nothing
    assert connack.session_present is True
    sub.wait_for(lambda: len(sub.messages) >= 2 and sub.pubrels)
    again = {m.topic: m for m in sub.messages}
    for name in ("/q1", "/q2"):
        old, new = first[topic + name], again[topic + name]
        assert (new.payload, new.qos, new.dup) == (old.payload, old.qos, True)
        assert new.packet_id == old.packet_id
    assert topic + "/q2b" not in again, "a PUBREC'd message was sent again"
    assert sub.pubrels == [first[topic + "/q2b"].packet_id]
    sub.close()


# --------------------------------------------------------------------------- retained


@pytest.mark.parametrize("stop", [crash, clean_stop], ids=["kill-9", "sigterm"])
def test_retained_messages_survive(durable, clients, stop):
    broker = durable()
    u = uid()
    pub = clients.connected(broker, V5)
    pub.publish(f"ret/{u}/a", b"alpha", qos=1, retain=True)
    pub.publish(f"ret/{u}/b", b"beta", qos=1, retain=True)
    pub.publish(f"ret/{u}/b", b"beta2", qos=1, retain=True)
    pub.publish(f"ret/{u}/c", b"gone", qos=1, retain=True)
    pub.publish(f"ret/{u}/c", b"", qos=1, retain=True)  # deletes it
    expiring = props(PacketTypes.PUBLISH, MessageExpiryInterval=3600)
    pub.publish(f"ret/{u}/d", b"delta", qos=1, retain=True, properties=expiring)
    stop(broker)

    broker = durable()
    sub = clients.connected(broker, V5)
    sub.subscribe(f"ret/{u}/#", 1)
    got = sorted(sub.expect_messages(3), key=lambda m: m.topic)
    assert [(m.topic, m.payload, m.retain) for m in got] == [
        (f"ret/{u}/a", b"alpha", True),
        (f"ret/{u}/b", b"beta2", True),
        (f"ret/{u}/d", b"delta", True),
    ]
    remaining = got[2].properties.MessageExpiryInterval
    assert 0 < remaining <= 3600
    marker = clients.connected(broker, V5)
    marker.publish(f"ret/{u}/zz", b"m", qos=1)
    assert sub.messages_until(f"ret/{u}/zz") == []


# --------------------------------------------------------------------------- clean restart


@both_versions
def test_clean_restart_keeps_sessions_subscriptions_and_queues(durable, clients, version):
    broker = durable()
    u = uid()
    client_id = f"restart-{u}"
    sub = BulkSubscriber(client_id, version)
    sub.connect(broker.host, broker.port)
    sub.subscribe(f"restart/{u}/+", 1)
    sub.close()
    pub = clients.connected(broker, version)
    for i in range(5):
        pub.publish(f"restart/{u}/x", f"m{i}".encode(), qos=1)
    online = BulkSubscriber(f"online-{u}", version)
    online.connect(broker.host, broker.port)
    online.subscribe(f"restart/{u}/+", 1)
    clean_stop(broker)
    online.abort()

    broker = durable()
    connack = sub.connect(broker.host, broker.port)
    assert connack.session_present is True
    pub = clients.connected(broker, version)
    pub.publish(f"restart/{u}/after", b"live", qos=1)  # the subscription survived too
    sub.wait_for(lambda: len(sub.messages) == 6)
    assert [m.payload for m in sub.messages] == [b"m0", b"m1", b"m2", b"m3", b"m4", b"live"]
    connack = online.connect(broker.host, broker.port)
    assert connack.session_present is True, "a session connected at shutdown was lost"
    sub.close()
    online.close()


# --------------------------------------------------------------------------- expiry, wills


def test_session_expiry_continues_across_a_restart(durable, clients):
    broker = durable()
    short = BulkSubscriber(f"short-{uid()}", V5, expiry=2)
    long = BulkSubscriber(f"long-{uid()}", V5, expiry=3600)
    for sub in (short, long):
        sub.connect(broker.host, broker.port)
        sub.subscribe(f"exp/{uid()}", 1)
    closed = time.monotonic()
    for sub in (short, long):
        sub.close()
    clean_stop(broker)
    wait_until_elapsed(closed, 3.0)  # the short session's expiry passes while down

    broker = durable()
    assert short.connect(broker.host, broker.port).session_present is False
    assert long.connect(broker.host, broker.port).session_present is True
    short.close()
    long.close()


@pytest.mark.parametrize("stop", [crash, clean_stop], ids=["kill-9", "sigterm"])
def test_pending_will_delay_fires_after_a_restart(durable, clients, stop):
    broker = durable()
    u = uid()
    watcher = BulkSubscriber(f"watch-{u}", V5)
    watcher.connect(broker.host, broker.port)
    watcher.subscribe(f"will/{u}", 1)
    watcher.close()

    raw = clients.raw(broker, 5)
    will = rm.Will(f"will/{u}", b"gone", qos=1, properties=[(rm.WILL_DELAY_INTERVAL, 3)])
    raw.connect(f"dying-{u}", clean=True, will=will, properties=[(rm.SESSION_EXPIRY_INTERVAL, 60)])
    since = broker.log_mark()
    dropped = time.monotonic()
    raw.close()  # no DISCONNECT: the will is pending for 3 s
    broker.wait_for_log(f"dying-{u} disconnected", since=since)
    committed(clients, broker)
    mark = time.monotonic()
    stop(broker)

    broker = durable()
    watcher.connect(broker.host, broker.port)
    watcher.wait_for(lambda: watcher.messages, timeout=15)
    fired = time.monotonic()
    assert watcher.messages[0].payload == b"gone"
    assert fired - dropped >= 3.0 - 0.5, "the will delay was not honoured"
    assert fired - mark < 12
    watcher.close()


def test_will_of_a_client_connected_at_a_crash_is_published_after_restart(durable, clients):
    broker = durable()
    u = uid()
    watcher = BulkSubscriber(f"watch-{u}", V5)
    watcher.connect(broker.host, broker.port)
    watcher.subscribe(f"will/{u}", 1)
    watcher.close()
    raw = clients.raw(broker, 5)
    raw.connect(
        f"alive-{u}",
        clean=True,
        will=rm.Will(f"will/{u}", b"crashed", qos=1),
        properties=[(rm.SESSION_EXPIRY_INTERVAL, 60)],
    )
    raw.send(rm.subscribe(1, [(f"other/{u}", 1)], version=5))
    raw.expect(rm.SUBACK)  # held until committed: the session with its will is stored
    crash(broker)
    raw.close()

    broker = durable()
    watcher.connect(broker.host, broker.port)
    watcher.wait_for(lambda: watcher.messages)
    assert watcher.messages[0].payload == b"crashed"
    watcher.close()


def test_device_queue_ttl_drops_messages_waiting_too_long(start_broker, clients):
    broker = start_broker(MQTT_PERSISTENT_SESSION_DEVICE_PERSISTED_MESSAGES_TTL=1)
    topic = f"ttl/{uid()}"
    sub = BulkSubscriber(f"ttl-{uid()}", V5)
    sub.connect(broker.host, broker.port)
    sub.subscribe(topic + "/#", 1)
    sub.close()
    pub = clients.connected(broker, V5)
    pub.publish(topic + "/old", b"old", qos=1)
    queued = time.monotonic()
    wait_until_elapsed(queued, 1.5)  # the TTL (1 s) passes while the session is offline
    pub.publish(topic + "/new", b"new", qos=1)
    sub.connect(broker.host, broker.port)
    sub.wait_for(lambda: sub.messages)
    pub.publish(topic + "/marker", b"m", qos=1)
    assert [m.payload for m in sub.until_marker(topic + "/marker")] == [b"new"]
    sub.close()


def test_memory_storage_keeps_nothing(start_broker, tmp_path):
    data_dir = tmp_path / "mem-data"
    broker = start_broker(PYTBMQ_STORAGE="memory", PYTBMQ_DATA_DIR=data_dir)
    sub = BulkSubscriber(f"mem-{uid()}", V5)
    sub.connect(broker.host, broker.port)
    sub.subscribe(f"mem/{uid()}", 1)
    sub.close()
    clean_stop(broker)
    broker = start_broker(PYTBMQ_STORAGE="memory", PYTBMQ_DATA_DIR=data_dir)
    assert sub.connect(broker.host, broker.port).session_present is False
    sub.close()
    assert not (data_dir / "pytbmq.db").exists()


# --------------------------------------------------------------------------- bad database


def run_broker_expecting_failure(tmp_path, data_dir) -> str:
    env = broker_env(data_dir)
    result = subprocess.run(
        [sys.executable, "-m", "pytbmq"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1, result.stderr
    assert "pytbmq ready" not in result.stderr
    return result.stderr


def test_corrupt_database_stops_startup_naming_the_file(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    db = data_dir / "pytbmq.db"
    db.write_bytes(b"this is not an SQLite database, but somebody's data" * 100)
    stderr = run_broker_expecting_failure(tmp_path, data_dir)
    assert str(db) in stderr
    assert "cannot be used" in stderr
    assert db.read_bytes().startswith(b"this is not an SQLite database")


def test_foreign_database_is_not_taken_over(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    db = data_dir / "pytbmq.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.close()
    stderr = run_broker_expecting_failure(tmp_path, data_dir)
    assert str(db) in stderr and "not a pytbmq database" in stderr


def test_second_broker_on_the_same_data_dir_is_refused(durable, tmp_path):
    durable()
    stderr = run_broker_expecting_failure(tmp_path, durable.data_dir)
    assert "in use by another pytbmq process" in stderr


# --------------------------------------------------------------------------- export/import


def run_cli(tmp_path, data_dir, *args: str, stdin: str | None = None):
    return subprocess.run(
        [sys.executable, "-m", "pytbmq", *args],
        cwd=tmp_path,
        env=broker_env(data_dir),
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
    )


def test_export_and_import_move_a_broker(durable, clients, start_broker, tmp_path):
    broker = durable()
    u = uid()
    sub = BulkSubscriber(f"moving-{u}", V5)
    sub.connect(broker.host, broker.port)
    sub.subscribe(f"move/{u}/#", 1)
    sub.close()
    pub = clients.connected(broker, V5)
    pub.publish(f"move/{u}/q", b"queued", qos=1)
    pub.publish(f"move/{u}/r", b"retained", qos=1, retain=True)
    clean_stop(broker)

    exported = run_cli(tmp_path, durable.data_dir, "data", "export")
    assert exported.returncode == 0, exported.stderr
    lines = exported.stdout.splitlines()
    assert lines[0].startswith('{"kind": "pytbmq-export"')
    target = tmp_path / "moved"
    imported = run_cli(tmp_path, target, "data", "import", "-", stdin=exported.stdout)
    assert imported.returncode == 0, imported.stderr
    again = run_cli(tmp_path, target, "data", "import", "-", stdin=exported.stdout)
    assert again.returncode == 1 and "not empty" in again.stderr

    moved = start_broker(PYTBMQ_DATA_DIR=target)
    connack = sub.connect(moved.host, moved.port)
    assert connack.session_present is True
    sub.wait_for(lambda: len(sub.messages) == 2)
    assert [m.payload for m in sub.messages] == [b"queued", b"retained"]
    watcher = clients.connected(moved, V5)
    watcher.subscribe(f"move/{u}/r", 1)
    assert watcher.expect_message().payload == b"retained"
    sub.close()
