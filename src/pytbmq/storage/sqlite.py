"""The embedded store: SQLite under PYTBMQ_DATA_DIR, written by one dedicated thread.

Layout (schema version in PRAGMA user_version, upgraded by MIGRATIONS):

* normalized tables: `session` (one row per persistent session, keyed by client id and
  by `sid`, the id of that incarnation), `subscription`, `message` (each message stored
  once), `outgoing` (one small row per queued or in-flight message of a session, pointing
  at `message`), `inflight_in` (incoming QoS 2 ids awaiting PUBREL), `retained`, `meta`;
* `journal`: the group-commit log. Each commit appends ONE row holding every change
  record of the batches merged into it (pickled plain tuples) — one INSERT and one
  COMMIT per batch, whatever the number of messages. The writer thread also folds the
  records into an in-memory net delta (`_Delta`), where a message queued and acknowledged
  within the same interval cancels out. After a second without changes, or when the
  delta or the journal grows large, `compact` applies the delta to the tables and
  empties the journal, in one transaction (under steady load the delta stays as small as
  the messages in flight, so compaction is rare and cheap). At open, journal rows left by
  a crash are replayed the same way.

WAL mode; PYTBMQ_STORAGE_SYNC=NORMAL survives a crash of the process (commits reach the
OS), FULL also a power loss (fsync per commit). A file that is not a readable pytbmq
database stops startup with a StorageError naming it; the broker never starts empty over
existing data. A lock file keeps a second broker (or `pytbmq data`) off a data directory
in use.

`SqliteDb` is the synchronous core (used by the writer thread and by `pytbmq data`);
`SqliteStore` is the Store the broker uses (pytbmq.storage.Store).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import io
import logging
import os
import pickle
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pytbmq import __version__
from pytbmq.changes import (
    IN_DEL,
    IN_PUT,
    MSG_DEL,
    MSG_PUT,
    OUT_DEL,
    OUT_PUT,
    RET_DEL,
    RET_PUT,
    SES_DEL,
    SES_PUT,
    SUB_DEL,
    SUB_PUT,
    Change,
    StoredOutgoing,
    StoredSession,
    StoredState,
    StoredSubscription,
)
from pytbmq.errors import MalformedPacket, ProtocolViolation, StorageError
from pytbmq.message import Message
from pytbmq.protocol.codec import decode_properties, encode_properties
from pytbmq.protocol.packets import EMPTY_PROPERTIES, PacketType, Properties, Will

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

# Compaction: when no change has arrived for this long, or when the delta or the journal
# grows past these sizes.
COMPACT_IDLE_SECONDS = 1.0
COMPACT_MAX_ENTRIES = 50_000
COMPACT_MAX_JOURNAL_BYTES = 32 * 1024 * 1024

_SCHEMA_V1 = (
    """CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE session (
        client_id TEXT PRIMARY KEY,
        sid INTEGER NOT NULL UNIQUE,
        protocol_version INTEGER NOT NULL,
        expiry_interval INTEGER NOT NULL,
        client_type TEXT NOT NULL,
        disconnected_at REAL,
        will_topic TEXT,
        will_payload BLOB,
        will_qos INTEGER,
        will_retain INTEGER,
        will_properties BLOB,
        will_delay INTEGER NOT NULL,
        will_due REAL
    )""",
    """CREATE TABLE subscription (
        sid INTEGER NOT NULL,
        topic_filter TEXT NOT NULL,
        qos INTEGER NOT NULL,
        no_local INTEGER NOT NULL,
        retain_as_published INTEGER NOT NULL,
        retain_handling INTEGER NOT NULL,
        sub_id INTEGER,
        PRIMARY KEY (sid, topic_filter)
    ) WITHOUT ROWID""",
    """CREATE TABLE message (
        id INTEGER PRIMARY KEY,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL,
        retain INTEGER NOT NULL,
        properties BLOB,
        expires_at REAL,
        sender TEXT
    )""",
    """CREATE TABLE outgoing (
        id INTEGER PRIMARY KEY,
        sid INTEGER NOT NULL,
        msg_id INTEGER NOT NULL,
        qos INTEGER NOT NULL,
        retain INTEGER NOT NULL,
        sub_ids TEXT NOT NULL,
        share_group TEXT,
        share_filter TEXT,
        packet_id INTEGER,
        state INTEGER NOT NULL,
        queued_at REAL NOT NULL
    )""",
    "CREATE INDEX outgoing_by_sid ON outgoing (sid)",
    """CREATE TABLE inflight_in (
        sid INTEGER NOT NULL,
        packet_id INTEGER NOT NULL,
        PRIMARY KEY (sid, packet_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE retained (
        topic TEXT PRIMARY KEY,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL,
        properties BLOB,
        expires_at REAL,
        sender TEXT
    )""",
    """CREATE TABLE journal (
        seq INTEGER PRIMARY KEY,
        data BLOB NOT NULL
    )""",
)


def _migrate_to_1(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA_V1:
        conn.execute(statement)
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('created_by', ?), ('created_at', ?)",
        (f"pytbmq {__version__}", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
    )


# MIGRATIONS[n] turns a schema n-1 database into schema n (run inside one transaction).
# Credentials, blocked and unauthorized clients live in security.db (storage/security.py).
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _migrate_to_1}
_OUR_TABLES = frozenset(
    {"meta", "session", "subscription", "message", "outgoing", "inflight_in", "retained"}
    | {"journal"}
)


# --------------------------------------------------------------------------- records


def _props(props: Properties) -> bytes | None:
    return None if props is EMPTY_PROPERTIES else encode_properties(props)


def _to_wire(record: Change) -> Change:
    """A record with its objects turned into plain values (for pickling and SQL)."""
    kind = record[0]
    if kind == MSG_PUT:
        _, mid, msg = record
        return (
            MSG_PUT,
            mid,
            msg.topic,
            msg.payload,
            msg.qos,
            msg.retain,
            _props(msg.properties),
            msg.expires_at,
            msg.sender,
        )
    if kind == RET_PUT:
        msg = record[1]
        return (
            RET_PUT,
            msg.topic,
            msg.payload,
            msg.qos,
            _props(msg.properties),
            msg.expires_at,
            msg.sender,
        )
    if kind == SES_PUT and record[7] is not None:
        will: Will = record[7]
        wire_will = (will.topic, will.payload, will.qos, will.retain, _props(will.properties))
        return (*record[:7], wire_will, *record[8:])
    return record


_CONVERTED = frozenset({MSG_PUT, RET_PUT, SES_PUT})


def _pickle(records: list[Change]) -> bytes:
    """Records are flat tuples of plain values: no memo needed ("fast" mode is about
    three times quicker; repeated strings are simply written again)."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=5)
    pickler.fast = True
    pickler.dump(records)
    return buffer.getvalue()


class _Unpickler(pickle.Unpickler):
    """Journal rows hold plain tuples only: refuse anything that would import code."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in the journal")


def _unpickle(data: bytes) -> list[Change]:
    value = _Unpickler(io.BytesIO(data)).load()
    if not isinstance(value, list):
        raise pickle.UnpicklingError("a journal entry is not a list of records")
    return value


class _Delta:
    """The net effect of the records not yet folded into the tables."""

    __slots__ = ("dead", "ins", "max_msg", "max_row", "msgs", "outs", "rets", "ses", "subs")

    def __init__(self, max_msg: int, max_row: int) -> None:
        self.ses: dict[str, Change | None] = {}
        self.dead: set[int] = set()  # sids whose rows are all deleted
        self.subs: dict[tuple[int, str], Change | None] = {}
        self.msgs: dict[int, Change | None] = {}
        self.outs: dict[int, Change | None] = {}
        self.ins: dict[tuple[int, int], bool] = {}
        self.rets: dict[str, Change | None] = {}
        # Ids above these were never written to the tables: deleting one that is still
        # in the delta just forgets it.
        self.max_msg = max_msg
        self.max_row = max_row

    def size(self) -> int:
        return (
            len(self.ses)
            + len(self.subs)
            + len(self.msgs)
            + len(self.outs)
            + len(self.ins)
            + len(self.rets)
            + len(self.dead)
        )

    def apply(self, records: list[Change]) -> None:
        ses, subs, msgs, outs, ins, rets = (
            self.ses,
            self.subs,
            self.msgs,
            self.outs,
            self.ins,
            self.rets,
        )
        for rec in records:
            kind = rec[0]
            if kind == OUT_PUT:
                outs[rec[1]] = rec
            elif kind == OUT_DEL:
                row = rec[1]
                if row > self.max_row and row in outs:
                    del outs[row]
                else:
                    outs[row] = None
            elif kind == MSG_PUT:
                msgs[rec[1]] = rec
            elif kind == MSG_DEL:
                mid = rec[1]
                if mid > self.max_msg and mid in msgs:
                    del msgs[mid]
                else:
                    msgs[mid] = None
            elif kind == IN_PUT:
                ins[(rec[1], rec[2])] = True
            elif kind == IN_DEL:
                ins[(rec[1], rec[2])] = False
            elif kind == SES_PUT:
                ses[rec[1]] = rec
            elif kind == SES_DEL:
                ses[rec[1]] = None
                self.dead.add(rec[2])
            elif kind == SUB_PUT:
                subs[(rec[1], rec[2])] = rec
            elif kind == SUB_DEL:
                subs[(rec[1], rec[2])] = None
            elif kind == RET_PUT:
                rets[rec[1]] = rec
            elif kind == RET_DEL:
                rets[rec[1]] = None
            else:
                raise ValueError(f"unknown change record kind {kind!r}")


# --------------------------------------------------------------------------- the database


_T = TypeVar("_T")


class SqliteDb:
    """One SQLite database file; every method runs on the thread that calls `open`."""

    def __init__(self, path: Path, sync: str = "NORMAL") -> None:
        self.path = path
        self.sync = sync
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._delta = _Delta(0, 0)
        self._unwritten: list[bytes] = []  # journal entries whose commit failed
        self._journal_bytes = 0
        self._dirty = False  # records not yet folded into the tables
        self._last_change = 0.0  # monotonic time of the latest record

    # ---------------------------------------------------------------- open / close
    def open(self, create: bool = True) -> None:
        """Lock, open, check, migrate and replay the journal. Raises StorageError."""
        path = self.path
        self._lock()
        try:
            existed = path.exists() and path.stat().st_size > 0
            if not existed and not create:
                raise StorageError(f"no pytbmq database at {path}")
            try:
                conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            except sqlite3.Error as exc:
                raise StorageError(f"cannot open the database {path}: {exc}") from exc
            self._conn = conn
            try:
                self._check_and_migrate(existed)
                self._replay()
            except sqlite3.DatabaseError as exc:
                raise self._damaged(str(exc)) from exc
        except BaseException:
            self.close(compact=False)
            raise

    def _lock(self) -> None:
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(
                f"cannot create the lock file {lock_path}: {exc.strerror or exc}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                holder = f" (pid {int(os.pread(fd, 32, 0).decode().strip())})"
            os.close(fd)
            raise StorageError(
                f"the database {self.path} is in use by another pytbmq process{holder}; "
                "stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _damaged(self, problem: str) -> StorageError:
        return StorageError(
            f"the database {self.path} cannot be used: {problem}. pytbmq will not start "
            "over it and lose its contents: restore a backup (`pytbmq data import`) or "
            "move the file away to start with an empty store"
        )

    def _check_and_migrate(self, existed: bool) -> None:
        conn = self._conn
        assert conn is not None
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StorageError(f"the database {self.path} cannot be switched to WAL mode")
        conn.execute(f"PRAGMA synchronous={self.sync}")
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if existed:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
            if problems != ["ok"]:
                raise self._damaged("integrity check failed: " + "; ".join(problems))
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"the database {self.path} has schema version {version}, written by a newer "
                f"pytbmq; this one understands versions up to {SCHEMA_VERSION}"
            )
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        }
        if version == 0 and tables:
            raise StorageError(
                f"the database {self.path} is not a pytbmq database (it holds the tables "
                f"{', '.join(sorted(tables))}); pytbmq will not write into it"
            )
        if version >= 1 and not tables >= _OUR_TABLES:
            missing = ", ".join(sorted(_OUR_TABLES - tables))
            raise self._damaged(f"tables missing: {missing}")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            conn.execute("BEGIN IMMEDIATE")
            try:
                MIGRATIONS[target](conn)
                conn.execute(f"PRAGMA user_version={target}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            if version:
                log.info("database %s migrated to schema version %d", self.path, target)
        self._delta = _Delta(self._max_id("message"), self._max_id("outgoing"))

    def _max_id(self, table: str) -> int:
        assert self._conn is not None
        return int(self._conn.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0])

    def _replay(self) -> None:
        """Fold journal entries left by a crash into the tables."""
        conn = self._conn
        assert conn is not None
        entries = 0
        for seq, data in conn.execute("SELECT seq, data FROM journal ORDER BY seq"):
            try:
                records = _unpickle(data)
                self._delta.apply(records)
            except Exception as exc:
                raise self._damaged(f"journal entry {seq} is unreadable ({exc})") from exc
            entries += 1
        if entries:
            log.info("database %s: replaying %d journal entries", self.path, entries)
            self.compact()

    def close(self, compact: bool = True) -> None:
        conn = self._conn
        self._conn = None
        if conn is not None:
            try:
                if compact and self._dirty:
                    self._conn = conn
                    try:
                        self.compact()
                    finally:
                        self._conn = None
            finally:
                conn.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ---------------------------------------------------------------- writing
    def append(self, records: list[Change]) -> None:
        """Fold plain records into the delta and queue their journal entry."""
        if not records:
            return
        convert = _CONVERTED
        wire = [_to_wire(rec) if rec[0] in convert else rec for rec in records]
        self._delta.apply(wire)
        blob = _pickle(wire)
        self._unwritten.append(blob)
        self._journal_bytes += len(blob)
        self._dirty = True
        self._last_change = time.monotonic()

    def write(self) -> None:
        """Commit the queued journal entries (one transaction). Raises on I/O errors;
        the entries stay queued and the next call tries again."""
        unwritten = self._unwritten
        if not unwritten:
            return
        conn = self._conn
        assert conn is not None
        if len(unwritten) == 1:
            # One statement in autocommit mode is one transaction, and one SQLite step:
            # the writer thread gives up and retakes the GIL once per commit, not thrice.
            conn.execute("INSERT INTO journal (data) VALUES (?)", (unwritten[0],))
        else:
            conn.execute("BEGIN")
            try:
                conn.executemany("INSERT INTO journal (data) VALUES (?)", [(b,) for b in unwritten])
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        unwritten.clear()

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    def postpone_compaction(self) -> None:
        """After a failed compaction: try again after the idle delay, not at once."""
        self._last_change = time.monotonic()
        self._journal_bytes = min(self._journal_bytes, COMPACT_MAX_JOURNAL_BYTES // 2)

    def compaction_due(self) -> bool:
        if not self._dirty:
            return False
        if self._journal_bytes >= COMPACT_MAX_JOURNAL_BYTES:
            return True
        if self._delta.size() >= COMPACT_MAX_ENTRIES:
            return True
        return time.monotonic() - self._last_change >= COMPACT_IDLE_SECONDS

    def compaction_wait(self) -> float | None:
        """Seconds until an idle compaction is due; None when there is nothing to do."""
        if not self._dirty:
            return None
        return max(0.0, self._last_change + COMPACT_IDLE_SECONDS - time.monotonic())

    def compact(self) -> None:
        """Apply the delta to the tables and empty the journal, in one transaction."""
        conn = self._conn
        assert conn is not None
        d = self._delta
        conn.execute("BEGIN")
        try:
            dead = [(sid,) for sid in d.dead]
            if dead:
                conn.executemany("DELETE FROM subscription WHERE sid = ?", dead)
                conn.executemany("DELETE FROM outgoing WHERE sid = ?", dead)
                conn.executemany("DELETE FROM inflight_in WHERE sid = ?", dead)
            self._compact_sessions(conn, d)
            self._compact_rows(conn, d)
            conn.execute("DELETE FROM journal")
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        max_msg = max((k for k, v in d.msgs.items() if v is not None), default=0)
        max_row = max((k for k, v in d.outs.items() if v is not None), default=0)
        self._delta = _Delta(max(d.max_msg, max_msg), max(d.max_row, max_row))
        self._unwritten.clear()  # folded into the tables with everything else
        self._journal_bytes = 0
        self._dirty = False

    @staticmethod
    def _compact_sessions(conn: sqlite3.Connection, d: _Delta) -> None:
        gone = [(cid,) for cid, rec in d.ses.items() if rec is None]
        if gone:
            conn.executemany("DELETE FROM session WHERE client_id = ?", gone)
        rows = []
        for rec in d.ses.values():
            if rec is None:
                continue
            will = rec[7]
            wt, wp, wq, wr, wprops = will if will is not None else (None,) * 5
            rows.append(
                (
                    rec[1],
                    rec[2],
                    rec[3],
                    rec[4],
                    rec[5],
                    rec[6],
                    wt,
                    wp,
                    wq,
                    wr,
                    wprops,
                    rec[8],
                    rec[9],
                )
            )
        if rows:
            conn.executemany(
                "INSERT OR REPLACE INTO session (client_id, sid, protocol_version, "
                "expiry_interval, client_type, disconnected_at, will_topic, will_payload, "
                "will_qos, will_retain, will_properties, will_delay, will_due) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    @staticmethod
    def _compact_rows(conn: sqlite3.Connection, d: _Delta) -> None:
        dead = d.dead
        sub_del = [key for key, rec in d.subs.items() if rec is None]
        if sub_del:
            conn.executemany("DELETE FROM subscription WHERE sid = ? AND topic_filter = ?", sub_del)
        sub_put = [rec[1:] for rec in d.subs.values() if rec is not None and rec[1] not in dead]
        if sub_put:
            conn.executemany(
                "INSERT OR REPLACE INTO subscription (sid, topic_filter, qos, no_local, "
                "retain_as_published, retain_handling, sub_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                sub_put,
            )
        msg_del = [(mid,) for mid, rec in d.msgs.items() if rec is None]
        if msg_del:
            conn.executemany("DELETE FROM message WHERE id = ?", msg_del)
        msg_put = [rec[1:] for rec in d.msgs.values() if rec is not None]
        if msg_put:
            conn.executemany(
                "INSERT OR REPLACE INTO message (id, topic, payload, qos, retain, properties, "
                "expires_at, sender) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                msg_put,
            )
        out_del = [(row,) for row, rec in d.outs.items() if rec is None]
        if out_del:
            conn.executemany("DELETE FROM outgoing WHERE id = ?", out_del)
        out_put = []
        for rec in d.outs.values():
            if rec is None or rec[2] in dead:
                continue
            _, row, sid, mid, qos, retain, sub_ids, shared, pid, state, queued_at = rec
            group, filt = shared if shared is not None else (None, None)
            ids = ",".join(map(str, sub_ids))
            out_put.append((row, sid, mid, qos, retain, ids, group, filt, pid, state, queued_at))
        if out_put:
            conn.executemany(
                "INSERT OR REPLACE INTO outgoing (id, sid, msg_id, qos, retain, sub_ids, "
                "share_group, share_filter, packet_id, state, queued_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                out_put,
            )
        in_del = [key for key, present in d.ins.items() if not present]
        if in_del:
            conn.executemany("DELETE FROM inflight_in WHERE sid = ? AND packet_id = ?", in_del)
        in_put = [key for key, present in d.ins.items() if present and key[0] not in dead]
        if in_put:
            conn.executemany(
                "INSERT OR IGNORE INTO inflight_in (sid, packet_id) VALUES (?, ?)", in_put
            )
        ret_del = [(topic,) for topic, rec in d.rets.items() if rec is None]
        if ret_del:
            conn.executemany("DELETE FROM retained WHERE topic = ?", ret_del)
        ret_put = [rec[1:] for rec in d.rets.values() if rec is not None]
        if ret_put:
            conn.executemany(
                "INSERT OR REPLACE INTO retained (topic, payload, qos, properties, "
                "expires_at, sender) VALUES (?, ?, ?, ?, ?, ?)",
                ret_put,
            )

    # ---------------------------------------------------------------- reading
    def load(self) -> StoredState:
        """Everything in the tables (the journal is always folded in by `open`)."""
        conn = self._conn
        assert conn is not None
        if self._dirty:
            self.compact()
        try:
            return self._load(conn)
        except sqlite3.DatabaseError as exc:
            raise self._damaged(str(exc)) from exc

    def _load(self, conn: sqlite3.Connection) -> StoredState:
        messages: dict[int, Message] = {}
        for mid, topic, payload, qos, retain, props, expires_at, sender in conn.execute(
            "SELECT id, topic, payload, qos, retain, properties, expires_at, sender FROM message"
        ):
            msg = Message(
                topic,
                bytes(payload),
                qos,
                bool(retain),
                self._decode_props(props, f"message {mid}"),
                expires_at,
                sender,
            )
            msg.store_id = mid
            messages[mid] = msg
        sessions: dict[int, StoredSession] = {}
        for row in conn.execute(
            "SELECT client_id, sid, protocol_version, expiry_interval, client_type, "
            "disconnected_at, will_topic, will_payload, will_qos, will_retain, "
            "will_properties, will_delay, will_due FROM session"
        ):
            (cid, sid, version, expiry, ctype, disc, wt, wp, wq, wr, wprops, wdelay, due) = row
            will = None
            if wt is not None:
                props = self._decode_props(wprops, f"the will of {cid!r}", will=True)
                will = Will(wt, bytes(wp or b""), int(wq or 0), bool(wr), props)
            sessions[sid] = StoredSession(cid, sid, version, expiry, ctype, disc, will, wdelay, due)
        orphans = 0
        for sid, tf, qos, nl, rap, rh, sub_id in conn.execute(
            "SELECT sid, topic_filter, qos, no_local, retain_as_published, retain_handling, "
            "sub_id FROM subscription"
        ):
            owner = sessions.get(sid)
            if owner is None:
                orphans += 1
                continue
            owner.subscriptions.append(StoredSubscription(tf, qos, bool(nl), bool(rap), rh, sub_id))
        used: set[int] = set()
        for row in conn.execute(
            "SELECT id, sid, msg_id, qos, retain, sub_ids, share_group, share_filter, "
            "packet_id, state, queued_at FROM outgoing ORDER BY id"
        ):
            rid, sid, mid, qos, retain, ids, group, filt, pid, state, queued_at = row
            owner = sessions.get(sid)
            target = messages.get(mid)
            if owner is None or target is None:
                orphans += 1
                continue
            used.add(mid)
            sub_ids = tuple(int(x) for x in ids.split(",")) if ids else ()
            shared = (group, filt) if group is not None else None
            owner.outgoing.append(
                StoredOutgoing(
                    rid, target, qos, bool(retain), sub_ids, shared, pid, state, queued_at
                )
            )
        for sid, pid in conn.execute("SELECT sid, packet_id FROM inflight_in"):
            owner = sessions.get(sid)
            if owner is None:
                orphans += 1
                continue
            owner.inflight_in.append(pid)
        retained = []
        for topic, payload, qos, props, expires_at, sender in conn.execute(
            "SELECT topic, payload, qos, properties, expires_at, sender FROM retained"
        ):
            props_obj = self._decode_props(props, f"the retained message of {topic!r}")
            retained.append(
                Message(topic, bytes(payload), qos, True, props_obj, expires_at, sender)
            )
        unused = len(messages) - len(used)
        if orphans or unused:
            log.warning(
                "database %s: removing %d row(s) of ended sessions and %d unused message(s)",
                self.path,
                orphans,
                unused,
            )
            self._collect_garbage(conn)
        return StoredState(list(sessions.values()), retained)

    def _collect_garbage(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN")
        try:
            for table in ("subscription", "outgoing", "inflight_in"):
                conn.execute(f"DELETE FROM {table} WHERE sid NOT IN (SELECT sid FROM session)")
            conn.execute("DELETE FROM outgoing WHERE msg_id NOT IN (SELECT id FROM message)")
            conn.execute("DELETE FROM message WHERE id NOT IN (SELECT msg_id FROM outgoing)")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _decode_props(self, blob: bytes | None, what: str, will: bool = False) -> Properties:
        if blob is None:
            return EMPTY_PROPERTIES
        data = bytes(blob)
        try:
            ptype = PacketType.CONNECT if will else PacketType.PUBLISH
            props, end = decode_properties(data, 0, len(data), ptype, will=will)
        except (MalformedPacket, ProtocolViolation) as exc:
            raise self._damaged(f"the properties of {what} are unreadable ({exc})") from exc
        if end != len(data):
            raise self._damaged(f"the properties of {what} are unreadable")
        return props

    def is_empty(self) -> bool:
        conn = self._conn
        assert conn is not None
        return not any(
            conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()
            for table in ("session", "retained", "message")
        )

    def clear(self) -> None:
        """Delete every session, message and retained message (for `data import`)."""
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN")
        try:
            for table in ("session", "subscription", "message", "outgoing"):
                conn.execute(f"DELETE FROM {table}")
            for table in ("inflight_in", "retained", "journal"):
                conn.execute(f"DELETE FROM {table}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def write_state(self, state: StoredState) -> None:
        """Store `state` as it is (ids included), on top of what the tables hold."""
        records: list[Change] = []
        stored_msgs: set[int] = set()
        for s in state.sessions:
            will = s.will
            records.append(
                (
                    SES_PUT,
                    s.client_id,
                    s.sid,
                    s.protocol_version,
                    s.expiry_interval,
                    s.client_type,
                    s.disconnected_at,
                    will,
                    s.will_delay,
                    s.will_due,
                )
            )
            for sub in s.subscriptions:
                records.append(
                    (
                        SUB_PUT,
                        s.sid,
                        sub.topic_filter,
                        sub.qos,
                        sub.no_local,
                        sub.retain_as_published,
                        sub.retain_handling,
                        sub.sub_id,
                    )
                )
            for out in s.outgoing:
                mid = out.message.store_id
                if mid not in stored_msgs:
                    stored_msgs.add(mid)
                    records.append((MSG_PUT, mid, out.message))
                records.append(
                    (
                        OUT_PUT,
                        out.row,
                        s.sid,
                        mid,
                        out.qos,
                        out.retain,
                        out.sub_ids,
                        out.shared,
                        out.packet_id,
                        out.state,
                        out.queued_at,
                    )
                )
            for pid in s.inflight_in:
                records.append((IN_PUT, s.sid, pid))
        for msg in state.retained:
            records.append((RET_PUT, msg))
        self.append(records)
        self.compact()


# --------------------------------------------------------------------------- the Store


class _Call:
    __slots__ = ("fn", "future")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def run(self) -> None:
        try:
            result = self.fn()
        except BaseException as exc:
            self.future.set_exception(exc)
        else:
            self.future.set_result(result)


_STOP = object()


class SqliteStore:
    """The Store the broker uses: a SqliteDb driven by one dedicated writer thread."""

    name = "sqlite"
    durable = True

    def __init__(self, path: Path, sync: str = "NORMAL") -> None:
        self.path = path
        self.location = str(path)
        self.db = SqliteDb(path, sync)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_committed: Callable[[int], None] | None = None
        self._closing = threading.Event()
        self._failing_since = 0.0
        self.last_error: str | None = None  # why commits fail right now (None: they work)
        self.committed_seq = 0

    @property
    def healthy(self) -> bool:
        """The writer thread runs and its commits work (for /actuator/health)."""
        thread = self._thread
        return thread is not None and thread.is_alive() and self.last_error is None

    async def open(self, on_committed: Callable[[int], None]) -> StoredState:
        self._loop = asyncio.get_running_loop()
        self._on_committed = on_committed
        self._thread = threading.Thread(target=self._run, name="pytbmq-store", daemon=True)
        self._thread.start()

        def open_and_load() -> StoredState:
            self.db.open()
            return self.db.load()

        try:
            return await self._call(open_and_load)
        except BaseException:
            self._stop_thread()
            raise

    def submit(self, seq: int, changes: list[Change]) -> None:
        self._queue.put((seq, changes))

    async def flush(self) -> None:
        if self._thread is not None:
            await self._call(lambda: None)

    async def close(self) -> None:
        if self._thread is None:
            return
        self._closing.set()
        try:
            await self._call(self.db.close)
        finally:
            self._stop_thread()

    def _stop_thread(self) -> None:
        thread = self._thread
        if thread is not None:
            self._thread = None
            self._queue.put(_STOP)
            thread.join(timeout=10)

    async def _call(self, fn: Callable[[], _T]) -> _T:
        call = _Call(fn)
        self._queue.put(call)
        result: _T = await asyncio.wrap_future(call.future)
        return result

    # ---------------------------------------------------------------- writer thread
    def _run(self) -> None:
        db = self.db
        q = self._queue
        while True:
            wait = db.compaction_wait() if db.is_open else None
            try:
                item = q.get() if wait is None else q.get(timeout=max(wait, 0.001))
            except queue.Empty:
                self._compact()
                continue
            items = [item]
            while True:
                try:
                    items.append(q.get_nowait())
                except queue.Empty:
                    break
            records: list[Change] = []
            last = 0
            for it in items:
                if it is _STOP:
                    if records:
                        self._commit(records, last)
                    return
                if isinstance(it, _Call):
                    if records:
                        self._commit(records, last)
                        records = []
                    it.run()
                else:
                    last, changes = it
                    records.extend(changes)
            if records:
                self._commit(records, last)
            if db.is_open and db.compaction_due():
                self._compact()

    def _commit(self, records: list[Change], seq: int) -> None:
        """Make the batches up to `seq` durable, retrying until it works or the store
        closes; only then are their acknowledgements released."""
        db = self.db
        db.append(records)
        delay = 0.05
        while True:
            try:
                db.write()
                break
            except (sqlite3.Error, OSError) as exc:
                now = time.monotonic()
                if not self._failing_since:
                    self._failing_since = now
                self.last_error = str(exc) or type(exc).__name__
                log.error(
                    "store %s: cannot commit (%s); acknowledgements are held and the "
                    "write is retried in %.2fs",
                    self.path,
                    exc,
                    delay,
                )
                if self._closing.wait(delay):
                    log.error(
                        "store %s: closing with uncommitted changes; their "
                        "acknowledgements were never sent",
                        self.path,
                    )
                    return
                delay = min(delay * 2, 5.0)
        if self._failing_since:
            log.warning(
                "store %s: commits work again after %.1fs",
                self.path,
                time.monotonic() - self._failing_since,
            )
            self._failing_since = 0.0
            self.last_error = None
        self._notify(seq)

    def _compact(self) -> None:
        try:
            self.db.compact()
        except (sqlite3.Error, OSError) as exc:
            self.db.postpone_compaction()
            log.error("store %s: compaction failed (%s); will retry", self.path, exc)

    def _notify(self, seq: int) -> None:
        if seq > self.committed_seq:
            self.committed_seq = seq  # links poll this between reads (Committer.after_read)
        loop, callback = self._loop, self._on_committed
        if loop is None or callback is None or not seq:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(callback, seq)
