"""The security database: client credentials, blocked and unauthorized clients.

A small SQLite file, PYTBMQ_DATA_DIR/security.db, kept apart from the message store
(pytbmq.db) on purpose: it is written by `pytbmq credentials|blocked|unauthorized`
(pytbmq.auth.tooling) and later the REST API while the broker runs, and read by the
broker (pytbmq.security) from one worker thread, never on the message hot path. The
broker notices other processes' commits by polling `data_version()`.

Layout (schema version in PRAGMA user_version, upgraded by MIGRATIONS; PRAGMA
application_id marks the file as a pytbmq security database):

* `credentials`: one row per credential in TBMQ's shape; `value` is the
  `credentialsValue` JSON with the password HASH (never the clear password), `unique_key`
  the credentials id (`ssl_regex|<pattern>` for regex X.509); `seq` keeps the order of
  creation, which is the order regex X.509 credentials are tried in;
* `blocked_client`: TBMQ's blocked-client documents, keyed by `BlockedClient.key`;
* `unauthorized_client`: the latest refused attempt per (client id, IP address).

WAL mode, `busy_timeout` 5 s, synchronous=NORMAL. Every method is one transaction.
User errors raise ValueError, database problems StorageError naming the file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

from pytbmq.auth.blocked import BlockedClient, parse_blocked
from pytbmq.auth.credentials import (
    MqttClientCredentials,
    credentials_value_document,
    parse_credentials,
)
from pytbmq.auth.unauthorized import UnauthorizedClient
from pytbmq.errors import StorageError

log = logging.getLogger(__name__)

SECURITY_DB_FILE = "security.db"
SCHEMA_VERSION = 2
APPLICATION_ID = 0x70746273  # "ptbs": pytbmq security
BUSY_TIMEOUT_MS = 5000

_SCHEMA_V1 = (
    """CREATE TABLE credentials (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT UNIQUE NOT NULL,
        name TEXT UNIQUE NOT NULL,
        client_type TEXT,
        credentials_type TEXT,
        unique_key TEXT UNIQUE NOT NULL,
        value TEXT NOT NULL,
        created_time INTEGER
    )""",
    """CREATE TABLE blocked_client (
        key TEXT PRIMARY KEY,
        document TEXT NOT NULL,
        expiration_time INTEGER,
        seq INTEGER
    )""",
    """CREATE TABLE unauthorized_client (
        client_id TEXT NOT NULL,
        ip_address TEXT NOT NULL,
        ts INTEGER,
        username TEXT,
        password_provided INTEGER,
        tls_used INTEGER,
        reason TEXT,
        PRIMARY KEY (client_id, ip_address)
    )""",
    "CREATE INDEX unauthorized_client_by_ts ON unauthorized_client (ts)",
)


def _migrate_to_1(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA_V1:
        conn.execute(statement)


def _migrate_to_2(conn: sqlite3.Connection) -> None:
    """Admin users of the REST API and broker settings changed at run time."""
    conn.execute(
        """CREATE TABLE admin_user (
            id TEXT PRIMARY KEY,
            email TEXT UNIQUE NOT NULL,
            first_name TEXT,
            last_name TEXT,
            authority TEXT NOT NULL,
            password_hash TEXT NOT NULL,
            created_time INTEGER
        )"""
    )
    conn.execute("CREATE TABLE setting (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


# MIGRATIONS[n] turns a schema n-1 database into schema n (run inside one transaction).
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _migrate_to_1,
    2: _migrate_to_2,
}
_OUR_TABLES = frozenset({"credentials", "blocked_client", "unauthorized_client"})


class AdminUser(NamedTuple):
    """An admin of the REST API. `authority` is SYS_ADMIN (everything) or SYS_VIEWER
    (read-only, a pytbmq addition)."""

    id: str
    email: str
    first_name: str | None
    last_name: str | None
    authority: str
    password_hash: str
    created_time: int


class CredentialsRecord(NamedTuple):
    """A stored credential with its database id and creation time (ms since epoch)."""

    id: str
    created_time: int
    credentials: MqttClientCredentials


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class SecurityDb:
    """The security database file; one connection, used by one thread at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    # ---------------------------------------------------------------- open / close
    def open(self, create: bool = True) -> None:
        """Open (creating the file if `create`), check and migrate. Raises StorageError."""
        if self._conn is not None:
            return
        path = self.path
        if not create and not path.exists():
            raise StorageError(
                f"the data directory {path.parent} has no security database yet ({path})"
            )
        try:
            if create:
                conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            else:
                uri = path.resolve().as_uri() + "?mode=rw"
                conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the security database {path}: {exc}") from exc
        self._conn = conn
        try:
            self._check_and_migrate()
        except sqlite3.Error as exc:
            self.close()
            raise StorageError(f"cannot use the security database {path}: {exc}") from exc
        except BaseException:
            self.close()
            raise

    def _check_and_migrate(self) -> None:
        conn = self._connection()
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        version, app_id, tables = self._identity(conn)
        self._check_identity(version, app_id, tables)
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StorageError(f"the security database {self.path} cannot be switched to WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        if version >= SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while we waited for the write lock.
            version, app_id, tables = self._identity(conn)
            self._check_identity(version, app_id, tables)
            for target in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[target](conn)
                conn.execute(f"PRAGMA user_version={target}")
                if version:
                    log.info("security database %s migrated to version %d", self.path, target)
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _identity(conn: sqlite3.Connection) -> tuple[int, int, set[str]]:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        tables = {
            str(row[0])
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        }
        return version, app_id, tables

    def _check_identity(self, version: int, app_id: int, tables: set[str]) -> None:
        fresh = version == 0 and app_id == 0 and not tables
        if fresh:
            return
        if app_id != APPLICATION_ID:
            held = f" (it holds the tables {', '.join(sorted(tables))})" if tables else ""
            raise StorageError(
                f"{self.path} is not a pytbmq security database{held}; pytbmq will not "
                "write into it"
            )
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"the security database {self.path} has schema version {version}, written by "
                f"a newer pytbmq; this one understands versions up to {SCHEMA_VERSION}"
            )
        if version >= 1 and not tables >= _OUR_TABLES:
            missing = ", ".join(sorted(_OUR_TABLES - tables))
            raise StorageError(f"the security database {self.path} is damaged: missing {missing}")

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    def __enter__(self) -> SecurityDb:
        """Opens the database (creating it) unless already open."""
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---------------------------------------------------------------- plumbing
    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageError(f"the security database {self.path} is not open")
        return self._conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; sqlite errors become StorageError naming the file."""
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        try:
            yield conn
        except BaseException as failure:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(failure, sqlite3.Error):
                raise self._error(failure) from failure
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise self._error(exc) from exc

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """One statement, one (implicit) transaction."""
        conn = self._connection()
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def _error(self, exc: sqlite3.Error) -> StorageError:
        return StorageError(f"security database {self.path}: {exc}")

    def data_version(self) -> int:
        """Changes whenever ANOTHER connection commits to the file (not on our commits)."""
        return int(self._read("PRAGMA data_version")[0][0])

    # ---------------------------------------------------------------- credentials
    def add_credentials(self, cred: MqttClientCredentials, *, replace: bool = False) -> str:
        """Store `cred`; returns its id. A taken name or credentials id is a ValueError
        unless `replace`, which updates that row keeping its id, position and time."""
        key = cred.unique_key
        value = json.dumps(credentials_value_document(cred.value, include_secrets=True))
        with self._write() as conn:
            by_name = conn.execute(
                "SELECT seq, id, unique_key FROM credentials WHERE name = ?", (cred.name,)
            ).fetchone()
            by_key = conn.execute(
                "SELECT seq, id, name FROM credentials WHERE unique_key = ?", (key,)
            ).fetchone()
            if not replace:
                if by_name is not None:
                    raise ValueError(
                        f"credentials '{cred.name}' already exist (credentials id "
                        f"{by_name[2]}); use --replace"
                    )
                if by_key is not None:
                    raise ValueError(
                        f"credentials '{by_key[2]}' already exist (credentials id {key}); "
                        "use --replace"
                    )
            if by_name is not None and by_key is not None and by_name[0] != by_key[0]:
                raise ValueError(
                    f"cannot replace credentials '{cred.name}': their credentials id {key} "
                    f"belongs to credentials '{by_key[2]}'; remove one of them first"
                )
            target = by_name if by_name is not None else by_key
            row = (cred.name, str(cred.client_type), str(cred.credentials_type), key, value)
            if target is not None:
                conn.execute(
                    "UPDATE credentials SET name = ?, client_type = ?, credentials_type = ?, "
                    "unique_key = ?, value = ? WHERE seq = ?",
                    (*row, target[0]),
                )
                return str(target[1])
            new_id = str(uuid.uuid4())
            conn.execute(
                "INSERT INTO credentials (id, name, client_type, credentials_type, unique_key, "
                "value, created_time) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (new_id, *row, _now_ms()),
            )
            return new_id

    def _parse_row(
        self, name: str, client_type: Any, credentials_type: Any, value: str
    ) -> MqttClientCredentials | None:
        document = {
            "name": name,
            "clientType": client_type,
            "credentialsType": credentials_type,
            "credentialsValue": value,
        }
        try:
            return parse_credentials(document, password_is_hash=True)
        except ValueError as exc:
            log.error(
                "security database %s: stored credentials '%s' are unusable and ignored: %s",
                self.path,
                name,
                exc,
            )
            return None

    def get_credentials_record(self, name: str) -> CredentialsRecord | None:
        rows = self._read(
            "SELECT id, created_time, name, client_type, credentials_type, value "
            "FROM credentials WHERE name = ?",
            (name,),
        )
        if not rows:
            return None
        cid, created, *rest = rows[0]
        cred = self._parse_row(*rest)
        if cred is None:
            return None
        return CredentialsRecord(str(cid), int(created or 0), cred)

    def get_credentials(self, name: str) -> MqttClientCredentials | None:
        record = self.get_credentials_record(name)
        return None if record is None else record.credentials

    def list_credentials(self) -> list[MqttClientCredentials]:
        """Every usable stored credential, in creation order (TBMQ's "DB order")."""
        rows = self._read(
            "SELECT name, client_type, credentials_type, value FROM credentials ORDER BY seq"
        )
        found = (self._parse_row(*row) for row in rows)
        return [cred for cred in found if cred is not None]

    def remove_credentials(self, name: str) -> bool:
        with self._write() as conn:
            return conn.execute("DELETE FROM credentials WHERE name = ?", (name,)).rowcount > 0

    # ---------------------------------------------------------------- blocked clients
    def add_blocked(self, b: BlockedClient) -> None:
        """Insert or update (by key; an updated entry keeps its position)."""
        document = json.dumps(b.to_document())
        with self._write() as conn:
            conn.execute(
                "INSERT INTO blocked_client (key, document, expiration_time, seq) "
                "VALUES (?, ?, ?, (SELECT coalesce(max(seq), 0) + 1 FROM blocked_client)) "
                "ON CONFLICT (key) DO UPDATE SET document = excluded.document, "
                "expiration_time = excluded.expiration_time",
                (b.key, document, b.expiration_time),
            )

    def remove_blocked(self, key: str) -> bool:
        with self._write() as conn:
            return conn.execute("DELETE FROM blocked_client WHERE key = ?", (key,)).rowcount > 0

    def list_blocked(self) -> list[BlockedClient]:
        """Every usable entry in the order added (expired ones included)."""
        out: list[BlockedClient] = []
        for key, document in self._read("SELECT key, document FROM blocked_client ORDER BY seq"):
            try:
                out.append(parse_blocked(str(document)))
            except ValueError as exc:
                log.error(
                    "security database %s: stored blocked client '%s' is unusable and ignored: %s",
                    self.path,
                    key,
                    exc,
                )
        return out

    def purge_blocked(self, expired_before_ms: int) -> int:
        """Delete entries that expired before the given time; returns how many."""
        with self._write() as conn:
            return conn.execute(
                "DELETE FROM blocked_client WHERE expiration_time != 0 AND expiration_time < ?",
                (expired_before_ms,),
            ).rowcount

    # ---------------------------------------------------------------- unauthorized
    def record_unauthorized(self, u: UnauthorizedClient) -> None:
        """Insert or replace the record of this (client id, IP address)."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO unauthorized_client (client_id, ip_address, ts, username, "
                "password_provided, tls_used, reason) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (client_id, ip_address) DO UPDATE SET ts = excluded.ts, "
                "username = excluded.username, password_provided = excluded.password_provided, "
                "tls_used = excluded.tls_used, reason = excluded.reason",
                (
                    u.client_id,
                    u.ip_address,
                    u.ts,
                    u.username,
                    int(u.password_provided),
                    int(u.tls_used),
                    u.reason,
                ),
            )

    def forget_unauthorized(self, client_id: str, ip_address: str | None = None) -> int:
        """Delete the client's records (and, given an address, the records without a
        client id from that address); returns how many."""
        with self._write() as conn:
            if ip_address is None:
                cursor = conn.execute(
                    "DELETE FROM unauthorized_client WHERE client_id = ?", (client_id,)
                )
            else:
                cursor = conn.execute(
                    "DELETE FROM unauthorized_client WHERE client_id = ? "
                    "OR (client_id = '' AND ip_address = ?)",
                    (client_id, ip_address),
                )
            return cursor.rowcount

    def list_unauthorized(self) -> list[UnauthorizedClient]:
        """Every record, newest first."""
        rows = self._read(
            "SELECT client_id, ip_address, ts, username, password_provided, tls_used, reason "
            "FROM unauthorized_client ORDER BY ts DESC, client_id, ip_address"
        )
        return [
            UnauthorizedClient(
                client_id=str(r[0]),
                ip_address=str(r[1]),
                ts=int(r[2] or 0),
                username=None if r[3] is None else str(r[3]),
                password_provided=bool(r[4]),
                tls_used=bool(r[5]),
                reason=str(r[6] or ""),
            )
            for r in rows
        ]

    def clear_unauthorized(self, client_id: str | None = None) -> int:
        """Delete every record, or those of one client id; returns how many."""
        with self._write() as conn:
            if client_id is None:
                return conn.execute("DELETE FROM unauthorized_client").rowcount
            return conn.execute(
                "DELETE FROM unauthorized_client WHERE client_id = ?", (client_id,)
            ).rowcount

    def purge_unauthorized(self, older_than_ms: int) -> int:
        """Delete records older than the given time; returns how many."""
        with self._write() as conn:
            return conn.execute(
                "DELETE FROM unauthorized_client WHERE ts < ?", (older_than_ms,)
            ).rowcount

    # ---------------------------------------------------------------- credentials by id
    _RECORD_COLUMNS = "id, created_time, name, client_type, credentials_type, value"

    def list_credentials_records(
        self, where: str = "", params: tuple[Any, ...] = ()
    ) -> list[CredentialsRecord]:
        """Stored credentials with their ids, in creation order (`where` filters)."""
        rows = self._read(
            f"SELECT {self._RECORD_COLUMNS} FROM credentials {where} ORDER BY seq", params
        )
        out: list[CredentialsRecord] = []
        for rid, created, *rest in rows:
            cred = self._parse_row(*rest)
            if cred is not None:
                out.append(CredentialsRecord(str(rid), int(created or 0), cred))
        return out

    def get_credentials_record_by_id(self, record_id: str) -> CredentialsRecord | None:
        found = self.list_credentials_records("WHERE id = ?", (record_id,))
        return found[0] if found else None

    def update_credentials(self, record_id: str, cred: MqttClientCredentials) -> bool:
        """Overwrite record `record_id` keeping its id, position and creation time."""
        key = cred.unique_key
        value = json.dumps(credentials_value_document(cred.value, include_secrets=True))
        with self._write() as conn:
            clash = conn.execute(
                "SELECT name, unique_key FROM credentials "
                "WHERE id != ? AND (name = ? OR unique_key = ?)",
                (record_id, cred.name, key),
            ).fetchone()
            if clash is not None:
                if clash[0] == cred.name:
                    raise ValueError(f"name: credentials named '{cred.name}' already exist")
                raise ValueError(
                    f"credentialsValue: credentials '{clash[0]}' already have the credentials "
                    f"id {key}"
                )
            cursor = conn.execute(
                "UPDATE credentials SET name = ?, client_type = ?, credentials_type = ?, "
                "unique_key = ?, value = ? WHERE id = ?",
                (
                    cred.name,
                    str(cred.client_type),
                    str(cred.credentials_type),
                    key,
                    value,
                    record_id,
                ),
            )
            return cursor.rowcount > 0

    # ---------------------------------------------------------------- admin users
    def add_admin_user(
        self,
        email: str,
        password_hash: str,
        authority: str = "SYS_ADMIN",
        first_name: str | None = None,
        last_name: str | None = None,
    ) -> AdminUser:
        user = AdminUser(
            str(uuid.uuid4()), email, first_name, last_name, authority, password_hash, _now_ms()
        )
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM admin_user WHERE email = ?", (email,)).fetchone():
                raise ValueError(f"email: an admin user {email!r} already exists")
            conn.execute("INSERT INTO admin_user VALUES (?, ?, ?, ?, ?, ?, ?)", tuple(user))
        return user

    def list_admin_users(self) -> list[AdminUser]:
        rows = self._read("SELECT * FROM admin_user ORDER BY created_time, email")
        return [AdminUser(*row) for row in rows]

    def get_admin_user(
        self, *, user_id: str | None = None, email: str | None = None
    ) -> AdminUser | None:
        if user_id is not None:
            rows = self._read("SELECT * FROM admin_user WHERE id = ?", (user_id,))
        else:
            rows = self._read("SELECT * FROM admin_user WHERE email = ?", (email,))
        return AdminUser(*rows[0]) if rows else None

    def set_admin_password(self, user_id: str, password_hash: str) -> bool:
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE admin_user SET password_hash = ? WHERE id = ?", (password_hash, user_id)
            )
            return cur.rowcount > 0

    def remove_admin_user(self, user_id: str) -> bool:
        with self._write() as conn:
            return conn.execute("DELETE FROM admin_user WHERE id = ?", (user_id,)).rowcount > 0

    # ---------------------------------------------------------------- settings
    def get_setting(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM setting WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def put_setting(self, key: str, value: str) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO setting VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
