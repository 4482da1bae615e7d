"""The SQLite store: round trips of every kind of state, schema versions and migration,
damaged files, the journal (crash before compaction), the writer thread's retries, and
JSON-lines export/import.

The state is produced by a real Router with its change log enabled (driven through
recording links), written with SqliteDb or SqliteStore, loaded back, restored into a new
Router and compared field by field with the original.
"""

from __future__ import annotations

import asyncio
import io
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from test_router import NOW, RecordingLink, msg  # tests/unit is on sys.path (rootdir mode)

from pytbmq.changes import MSG_PUT, OUT_PUT, SES_PUT, StoredState
from pytbmq.errors import StorageError
from pytbmq.message import Message
from pytbmq.protocol.packets import Properties, Subscribe, Subscription, Will
from pytbmq.router import Router
from pytbmq.session import Session
from pytbmq.storage import sqlite as sqlite_mod
from pytbmq.storage.sqlite import SCHEMA_VERSION, SqliteDb, SqliteStore
from pytbmq.storage.transfer import export_state, import_state

# --------------------------------------------------------------------------- helpers


def durable_router() -> Router:
    router = Router()
    router.enable_changes()
    return router


def connect(
    router: Router,
    cid: str,
    expiry: int = 3600,
    *,
    will: Will | None = None,
    version: int = 5,
    link: RecordingLink | None = None,
) -> tuple[Session, RecordingLink]:
    link = link or RecordingLink()
    session, _ = router.connect(link, cid, version, False, expiry, will, NOW)
    router.session_started(session, NOW)
    return session, link


def subscribe(router: Router, session: Session, *subs: Subscription, sub_id: int = 0) -> None:
    props = Properties(subscription_identifiers=(sub_id,)) if sub_id else Properties()
    _codes, retained = router.subscribe(session, Subscribe(1, subs, props), True)
    router.send_retained(session, retained, NOW)


def snapshot(router: Router) -> dict[str, Any]:
    """Everything durable about a router's state, as comparable plain values."""

    def message(m: Message) -> tuple[Any, ...]:
        return (m.topic, m.payload, m.qos, m.properties, m.expires_at, m.sender)

    sessions = {}
    for cid, s in router.sessions.items():
        if not s.stored:
            continue
        sessions[cid] = {
            "version": s.protocol_version,
            "expiry": s.expiry_interval,
            "type": s.client_type,
            "subs": {
                full: (
                    o.topic_filter,
                    o.group,
                    o.qos,
                    o.no_local,
                    o.retain_as_published,
                    o.retain_handling,
                    o.sub_id,
                )
                for full, o in s.subscriptions.items()
            },
            "inflight": [
                (
                    pid,
                    message(o.message),
                    o.qos,
                    o.retain,
                    o.sub_ids,
                    o.shared,
                    o.awaiting_pubcomp,
                    o.queued_at,
                )
                for pid, o in s.inflight_out.items()
            ],
            "queue": [
                (message(o.message), o.qos, o.retain, o.sub_ids, o.shared, o.queued_at)
                for o in s.queue
            ],
            "inflight_in": sorted(s.inflight_in),
        }
    retained = {topic: message(m) for topic, m in router.retained.items()}
    wills = {cid: (p.will, p.due) for cid, p in router._pending_wills.items()}
    return {"sessions": sessions, "retained": retained, "wills": wills}


ALIVE_WILL = Will("wills/y", b"crash", 0, False, Properties(will_delay_interval=20))


def busy_router() -> tuple[Router, dict[str, RecordingLink]]:
    """A router holding one of every kind of durable state."""
    r = durable_router()
    links: dict[str, RecordingLink] = {}
    # Offline MQTT 5 session: shared and plain subscriptions with options, queued messages.
    off, _ = connect(r, "offline", 7200)
    subscribe(r, off, Subscription("q/#", 2, no_local=True, retain_as_published=True), sub_id=7)
    subscribe(r, off, Subscription("$share/grp/jobs/+", 1, retain_handling=1))
    r.connection_lost(off, NOW, publish_will=True)
    # Online 3.1.1 session with a small receive maximum: in flight and queued.
    online, link = connect(r, "online", 600, version=4, link=RecordingLink(receive_maximum=3))
    links["online"] = link
    subscribe(r, online, Subscription("q/#", 2))
    props = Properties(
        message_expiry_interval=900,
        content_type="text/plain",
        response_topic="reply/here",
        correlation_data=b"\x00\x01",
        user_properties=(("k", "v"), ("k", "w")),
        payload_format_indicator=1,
    )
    for i in range(5):
        r.publish(
            Message.create(f"q/{i}", f"payload {i}".encode(), 2, False, props, "pub", NOW), NOW
        )
    r.publish(msg("jobs/1", b"job", qos=1), NOW)
    # PUBREC for the first in-flight message: PUBREL sent, PUBCOMP awaited.
    first = next(iter(online.inflight_out))
    assert r.pubrec(online, first, 0, NOW)
    # Incoming QoS 2 ids awaiting PUBREL.
    assert r.qos2_received(online, 11)
    assert r.qos2_received(online, 12)
    assert r.pubrel(online, 12)
    # Retained messages, one with an expiry, one deleted.
    r.publish(msg("ret/a", b"A", qos=1, retain=True), NOW)
    r.publish(
        msg("ret/b", b"B", qos=0, retain=True, props=Properties(message_expiry_interval=60)), NOW
    )
    r.publish(msg("ret/c", b"C", retain=True), NOW)
    r.publish(msg("ret/c", b"", retain=True), NOW)
    # A pending will with delay, and a connected session with a will.
    will = Will("wills/x", b"bye", 1, True, Properties(will_delay_interval=30, content_type="t"))
    dying, _ = connect(r, "dying", 300, will=will)
    r.connection_lost(dying, NOW, publish_will=True)
    alive, links["alive"] = connect(r, "alive", 300, will=ALIVE_WILL)
    subscribe(r, alive, Subscription("nothing/here", 0))
    # A session that ended: nothing of it may remain.
    gone, _ = connect(r, "gone", 300)
    subscribe(r, gone, Subscription("q/#", 1))
    r.publish(msg("q/late", b"late", qos=1), NOW)
    r.connect(RecordingLink(), "gone", 5, True, 0, None, NOW)  # clean start ends it
    # A non-persistent session logs nothing.
    clean, _ = connect(r, "clean", 0)
    subscribe(r, clean, Subscription("q/#", 1))
    return r, links


def write_all(db: SqliteDb, router: Router) -> None:
    db.append(router.take_changes())
    db.write()


def restored(state: StoredState) -> Router:
    r = durable_router()
    r.restore(state, NOW)
    return r


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("compacted", [True, False], ids=["compacted", "journal-replay"])
def test_round_trip_of_every_kind_of_state(tmp_path: Path, compacted: bool) -> None:
    router, _links = busy_router()
    expected = snapshot(router)
    assert set(expected["sessions"]) == {"offline", "online", "dying", "alive"}
    assert expected["wills"] and expected["retained"].keys() == {"ret/a", "ret/b"}

    db = SqliteDb(tmp_path / "pytbmq.db")
    db.open()
    write_all(db, router)
    db.close(compact=compacted)  # False: as after kill -9, only the journal holds it
    if not compacted:
        with sqlite3.connect(tmp_path / "pytbmq.db") as conn:
            assert conn.execute("SELECT count(*) FROM journal").fetchone()[0] == 1
            assert conn.execute("SELECT count(*) FROM session").fetchone()[0] == 0
        conn.close()

    db = SqliteDb(tmp_path / "pytbmq.db")
    db.open()
    state = db.load()
    db.close()
    # "alive" was connected: restore treats it as disconnected now and keeps its will.
    again = restored(state)
    got = snapshot(again)
    assert got["retained"] == expected["retained"]
    assert got["sessions"] == expected["sessions"]
    assert got["wills"]["dying"] == expected["wills"]["dying"]
    assert got["wills"]["alive"] == (ALIVE_WILL, NOW + 20)
    assert again.sessions["alive"].link is None
    # nothing else is in the tables (the ended session's rows are gone)
    with sqlite3.connect(tmp_path / "pytbmq.db") as conn:
        sids = {row[0] for row in conn.execute("SELECT sid FROM session")}
        for table in ("subscription", "outgoing", "inflight_in"):
            assert {r[0] for r in conn.execute(f"SELECT sid FROM {table}")} <= sids
        used = {r[0] for r in conn.execute("SELECT msg_id FROM outgoing")}
        assert {r[0] for r in conn.execute("SELECT id FROM message")} == used
    conn.close()


def test_restored_router_keeps_writing_where_it_left_off(tmp_path: Path) -> None:
    router, _ = busy_router()
    db = SqliteDb(tmp_path / "pytbmq.db")
    db.open()
    write_all(db, router)
    db.close()
    db = SqliteDb(tmp_path / "pytbmq.db")
    db.open()
    r2 = restored(db.load())
    # New ids never collide with stored ones; acknowledging removes rows.
    session, link = connect(r2, "offline", 7200)
    for sent in link.sent:
        assert sent.packet_id is not None
        if sent.qos == 1:
            r2.puback(session, sent.packet_id, NOW)
        else:
            r2.pubrec(session, sent.packet_id, 0, NOW)
            r2.pubcomp(session, sent.packet_id, NOW)
    r2.publish(msg("q/new", b"new", qos=1), NOW)
    write_all(db, r2)
    db.close()
    db = SqliteDb(tmp_path / "pytbmq.db")
    db.open()
    r3 = restored(db.load())
    db.close()
    assert snapshot(r3)["sessions"] == snapshot(r2)["sessions"]


def test_queued_and_acknowledged_in_one_interval_never_reach_the_tables(tmp_path: Path) -> None:
    r = durable_router()
    s, link = connect(r, "fast")
    subscribe(r, s, Subscription("t", 1))
    db = SqliteDb(tmp_path / "pytbmq.db")
    db.open()
    write_all(db, r)
    db.compact()
    for i in range(100):
        r.publish(msg("t", str(i).encode(), qos=1), NOW)
        assert link.sent[-1].packet_id is not None
        r.puback(s, link.sent[-1].packet_id, NOW)
    changes = r.take_changes()
    assert sum(1 for c in changes if c[0] == OUT_PUT) == 100
    db.append(changes)
    db.write()
    assert db._delta.msgs == {} and db._delta.outs == {}  # put and delete cancelled out
    db.close()


# --------------------------------------------------------------------------- schema


def test_new_database_gets_the_current_schema_version(tmp_path: Path) -> None:
    db = SqliteDb(tmp_path / "pytbmq.db")
    db.open()
    db.close()
    with sqlite3.connect(tmp_path / "pytbmq.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        meta = dict(conn.execute("SELECT key, value FROM meta"))
    conn.close()
    assert meta["created_by"].startswith("pytbmq ")


@pytest.mark.parametrize(("sync", "level"), [("NORMAL", 1), ("FULL", 2)])
def test_sync_setting_reaches_sqlite(tmp_path: Path, sync: str, level: int) -> None:
    db = SqliteDb(tmp_path / "pytbmq.db", sync)
    db.open()
    assert db._conn is not None
    assert db._conn.execute("PRAGMA synchronous").fetchone()[0] == level
    db.close()


@pytest.mark.parametrize("kind", ["zero-bytes", "empty-sqlite"])
def test_migration_from_a_version_0_empty_database(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "pytbmq.db"
    if kind == "zero-bytes":
        path.write_bytes(b"")
    else:
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA user_version = 0")
        conn.execute("VACUUM")  # writes the header: a valid, empty database
        conn.close()
        assert path.stat().st_size > 0
    db = SqliteDb(path)
    db.open()
    assert db.load() == StoredState()
    db.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_migrations_run_in_order_from_the_stored_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "pytbmq.db"
    db = SqliteDb(path)
    db.open()
    db.close()
    ran: list[int] = []

    def to_2(conn: sqlite3.Connection) -> None:
        ran.append(2)
        conn.execute("CREATE TABLE credentials (id TEXT PRIMARY KEY)")

    monkeypatch.setattr(sqlite_mod, "SCHEMA_VERSION", 2)
    monkeypatch.setitem(sqlite_mod.MIGRATIONS, 2, to_2)
    db = SqliteDb(path)
    db.open()
    db.close()
    db = SqliteDb(path)
    db.open()  # already at 2: nothing runs again
    db.close()
    assert ran == [2]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pytbmq.db"
    db = SqliteDb(path)
    db.open()
    db.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StorageError, match=r"schema version 99.*newer pytbmq") as info:
        SqliteDb(path).open()
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------- damaged files


def test_corrupt_file_names_the_file_and_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "pytbmq.db"
    garbage = b"definitely not SQLite " * 300
    path.write_bytes(garbage)
    with pytest.raises(StorageError) as info:
        SqliteDb(path).open()
    message = str(info.value)
    assert str(path) in message
    assert "cannot be used" in message and "will not start over it" in message
    assert path.read_bytes() == garbage


def test_damaged_page_is_found_by_the_integrity_check(tmp_path: Path) -> None:
    path = tmp_path / "pytbmq.db"
    db = SqliteDb(path)
    db.open()
    router, _ = busy_router()
    write_all(db, router)
    db.close()
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 3 * page
    data[2 * page + 8 : 3 * page] = b"\xff" * (page - 8)  # smash a b-tree page
    path.write_bytes(bytes(data))
    with pytest.raises(StorageError) as info:
        SqliteDb(path).open()
    assert str(path) in str(info.value)


def test_unreadable_journal_entry_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "pytbmq.db"
    db = SqliteDb(path)
    db.open()
    db.close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO journal (data) VALUES (?)", (b"\x80\x05garbage",))
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match=r"journal entry 1 is unreadable") as info:
        SqliteDb(path).open()
    assert str(path) in str(info.value)


def test_journal_refuses_pickled_objects(tmp_path: Path) -> None:
    import pickle

    path = tmp_path / "pytbmq.db"
    db = SqliteDb(path)
    db.open()
    db.close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO journal (data) VALUES (?)", (pickle.dumps([(1, Path("/x"))]),))
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match=r"unexpected object"):
        SqliteDb(path).open()


def test_foreign_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pytbmq.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.close()
    with pytest.raises(StorageError, match=r"not a pytbmq database.*invoices"):
        SqliteDb(path).open()


def test_missing_file_without_create(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no pytbmq database"):
        SqliteDb(tmp_path / "pytbmq.db").open(create=False)


def test_second_opener_is_locked_out(tmp_path: Path) -> None:
    first = SqliteDb(tmp_path / "pytbmq.db")
    first.open()
    try:
        with pytest.raises(StorageError, match="in use by another pytbmq process"):
            SqliteDb(tmp_path / "pytbmq.db").open()
    finally:
        first.close()
    again = SqliteDb(tmp_path / "pytbmq.db")
    again.open()
    again.close()


# --------------------------------------------------------------------------- writer thread


def test_store_commits_batches_and_reports_them(tmp_path: Path) -> None:
    async def scenario() -> list[int]:
        committed: list[int] = []
        store = SqliteStore(tmp_path / "pytbmq.db")
        assert await store.open(committed.append) == StoredState()
        router, _ = busy_router()
        changes = router.take_changes()
        half = len(changes) // 2
        store.submit(1, changes[:half])
        store.submit(2, changes[half:])
        await store.flush()
        await store.close()
        return committed

    committed = asyncio.run(scenario())
    assert committed and committed[-1] == 2
    db = SqliteDb(tmp_path / "pytbmq.db")
    db.open()
    assert len(db.load().sessions) == 4
    db.close()


def test_failed_commit_holds_the_callback_until_a_retry_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> tuple[list[int], list[int]]:
        committed: list[int] = []
        store = SqliteStore(tmp_path / "pytbmq.db")
        await store.open(committed.append)
        real_write = store.db.write
        failures = [sqlite3.OperationalError("disk I/O error")] * 2

        def flaky_write() -> None:
            if failures:
                raise failures.pop()
            real_write()

        monkeypatch.setattr(store.db, "write", flaky_write)
        r = durable_router()
        connect(r, "c")
        store.submit(1, r.take_changes())
        await store.flush()  # returns only once the batch is committed
        seen_after_flush = list(committed)
        await store.close()
        return committed, seen_after_flush

    committed, seen = asyncio.run(scenario())
    assert seen == [1] and committed == [1]
    errors = [r for r in caplog.records if "cannot commit" in r.getMessage()]
    assert len(errors) == 2
    assert any("commits work again" in r.getMessage() for r in caplog.records)


def test_records_hold_values_not_live_state() -> None:
    r = durable_router()
    s, _link = connect(r, "c")
    subscribe(r, s, Subscription("t", 1))
    r.publish(msg("t", b"x", qos=1), NOW)
    changes = r.take_changes()
    kinds = [c[0] for c in changes]
    assert kinds.count(SES_PUT) == 1 and kinds.count(MSG_PUT) == 1
    out = next(c for c in changes if c[0] == OUT_PUT)
    assert all(not isinstance(v, Session) for v in out)


# --------------------------------------------------------------------------- export/import


def test_export_import_round_trip(tmp_path: Path) -> None:
    router, _ = busy_router()
    db = SqliteDb(tmp_path / "a.db")
    db.open()
    write_all(db, router)
    state = db.load()
    db.close()
    text = io.StringIO()
    export_state(state, text)
    lines = text.getvalue().splitlines()
    assert lines[0].startswith('{"kind": "pytbmq-export"')
    loaded = import_state(io.StringIO(text.getvalue()), "export.jsonl")
    target = SqliteDb(tmp_path / "b.db")
    target.open()
    target.write_state(loaded)
    again = target.load()
    target.close()
    assert snapshot(restored(again)) == snapshot(restored(state))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "is empty"),
        ('{"kind": "session"}\n', "line 1: not a pytbmq export"),
        ('{"kind": "pytbmq-export", "format": 9}\n', "line 1: export format 9"),
        ('{"kind": "pytbmq-export", "format": 1}\n{"kind": "x"}\n', "line 2: unknown kind"),
        ('{"kind": "pytbmq-export", "format": 1}\nnot json\n', "line 2"),
        (
            '{"kind": "pytbmq-export", "format": 1}\n{"kind": "retained", "topic": "t", '
            '"payload": "!!", "qos": 0}\n',
            "line 2: invalid base64",
        ),
    ],
)
def test_import_reports_the_bad_line(text: str, problem: str) -> None:
    with pytest.raises(StorageError, match=problem):
        import_state(io.StringIO(text), "in.jsonl")
