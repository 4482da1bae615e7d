"""The security database (pytbmq.storage.security.SecurityDb) and the credential documents
it stores (pytbmq.auth.credentials.credentials_to_document, credentials ids, unique keys).

Every database lives in tmp_path; change detection across connections uses two SecurityDb
objects on the same file.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytbmq.auth.blocked import BlockedClient, BlockedType, RegexMatchTarget
from pytbmq.auth.credentials import (
    BasicCredentials,
    MqttClientCredentials,
    PubSubPatterns,
    ScramCredentials,
    credentials_to_document,
    parse_credentials,
    scram_credentials_id,
    verify_password,
)
from pytbmq.auth.scram import derive
from pytbmq.auth.unauthorized import UnauthorizedClient
from pytbmq.errors import StorageError
from pytbmq.storage.security import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    SECURITY_DB_FILE,
    CredentialsRecord,
    SecurityDb,
)


def doc(ctype: str, value: dict[str, Any], name: str = "c", client_type: str = "DEVICE") -> Any:
    return {
        "name": name,
        "clientType": client_type,
        "credentialsType": ctype,
        "credentialsValue": json.dumps(value),
    }


def basic(name: str, **value: Any) -> MqttClientCredentials:
    return parse_credentials(doc("MQTT_BASIC", value, name))


def x509(name: str, cn: str, regex: bool = False) -> MqttClientCredentials:
    value = {"certCnPattern": cn, "certCnIsRegex": regex, "authRulesMapping": {".*": {}}}
    return parse_credentials(doc("X_509", value, name))


def scram(name: str, user: str, password: str = "pencil") -> MqttClientCredentials:
    value = {"userName": user, "algorithm": "SHA_256", "password": password}
    return parse_credentials(doc("SCRAM", value, name))


@pytest.fixture
def db(tmp_path: Path) -> Iterator[SecurityDb]:
    with SecurityDb(tmp_path / SECURITY_DB_FILE) as opened:
        yield opened


# --------------------------------------------------------------------------- documents


def test_scram_credentials_id_and_unique_keys() -> None:
    assert scram_credentials_id("u") == "scram|u"
    s = scram("s", "u")
    assert s.credentials_id == "scram|u"
    assert s.unique_key == "scram|u"
    assert basic("b", userName="u").unique_key == "username|u"
    assert x509("x", "dev-1").credentials_id == "ssl|dev-1"
    assert x509("x", "dev-1").unique_key == "ssl|dev-1"
    regex = x509("r", "dev-.*", regex=True)
    assert regex.credentials_id is None
    assert regex.unique_key == "ssl_regex|dev-.*"


ROUND_TRIP_CASES = [
    basic("plain", clientId="c1"),
    basic(
        "locked",
        userName="u",
        clientId="c",
        password="pw",
        authRules={"pubAuthRulePatterns": ["a/.*"], "subAuthRulePatterns": []},
    ),
    basic("empty-lists", userName="e", authRules={"pub": [], "sub": ["x"]}),
    parse_credentials(
        doc(
            "X_509",
            {
                "certCnPattern": "dev-.*",
                "certCnIsRegex": True,
                "authRulesMapping": {
                    "dev-(a|b)": {"pub": ["t/${cn}"], "sub": []},
                    ".*": {"pubAuthRulePatterns": None, "subAuthRulePatterns": ["s/.*"]},
                },
            },
            "regex-x509",
            "APPLICATION",
        )
    ),
    x509("exact-x509", "dev-1"),
    parse_credentials(doc("X_509", {"certCnPattern": "no-rules"}, "x509-no-mapping")),
    scram("scram", "su"),
    parse_credentials(
        doc(
            "SCRAM",
            {
                "userName": "s5",
                "algorithm": "SHA_512",
                "password": "p",
                "authRules": {"pub": ["a"], "sub": None},
            },
            "scram512",
        )
    ),
]


@pytest.mark.parametrize("cred", ROUND_TRIP_CASES, ids=lambda c: c.name)
def test_credentials_document_round_trip(cred: MqttClientCredentials) -> None:
    document = credentials_to_document(cred)
    assert set(document) == {"name", "clientType", "credentialsType", "credentialsValue"}
    assert isinstance(document["credentialsValue"], str)
    assert parse_credentials(document, password_is_hash=True) == cred
    assert parse_credentials(json.dumps(document), password_is_hash=True) == cred


def test_none_and_empty_rule_lists_survive() -> None:
    none = basic("n", userName="n")
    empty = basic("e", userName="e", authRules={"pub": [], "sub": []})
    for cred, expected in ((none, None), (empty, ())):
        back = parse_credentials(credentials_to_document(cred), password_is_hash=True)
        assert isinstance(back.value, BasicCredentials)
        assert back.value.auth_rules == PubSubPatterns(expected, expected)
    value = json.loads(credentials_to_document(none)["credentialsValue"])
    assert value["authRules"] == {"pubAuthRulePatterns": None, "subAuthRulePatterns": None}


def test_documents_without_secrets() -> None:
    locked = basic("l", userName="u", password="pw")
    value = json.loads(credentials_to_document(locked, include_secrets=False)["credentialsValue"])
    assert value["password"] == "***"
    open_ = basic("o", userName="o")
    value = json.loads(credentials_to_document(open_, include_secrets=False)["credentialsValue"])
    assert value["password"] is None
    s = scram("s", "u")
    value = json.loads(credentials_to_document(s, include_secrets=False)["credentialsValue"])
    assert value == {
        "userName": "u",
        "algorithm": "SHA_256",
        "iterations": 4096,
        "authRules": {"pubAuthRulePatterns": None, "subAuthRulePatterns": None},
    }
    with_secrets = json.loads(credentials_to_document(s)["credentialsValue"])
    assert {"salt", "storedKey", "serverKey"} <= set(with_secrets)
    assert "password" not in with_secrets


def test_basic_document_shape() -> None:
    cred = basic("b", clientId="c", userName="u", password="pw", authRules={"pub": ["a"]})
    value = json.loads(credentials_to_document(cred)["credentialsValue"])
    assert set(value) == {"clientId", "userName", "password", "authRules"}
    assert value["password"].startswith("scrypt$")
    assert verify_password(value["password"], "pw").ok


# --------------------------------------------------------------------------- open / schema


def test_open_creates_schema_and_wal(tmp_path: Path) -> None:
    path = tmp_path / SECURITY_DB_FILE
    with SecurityDb(path) as db:
        assert db.is_open
    assert not db.is_open
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"credentials", "blocked_client", "unauthorized_client"} <= tables
    conn.close()
    again = SecurityDb(path)
    again.open(create=False)
    again.close()


def test_open_without_create_on_missing_file(tmp_path: Path) -> None:
    path = tmp_path / SECURITY_DB_FILE
    with pytest.raises(StorageError, match="has no security database yet") as info:
        SecurityDb(path).open(create=False)
    assert str(path) in str(info.value)
    assert not path.exists()


def test_missing_directory_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "nope" / SECURITY_DB_FILE
    with pytest.raises(StorageError, match="cannot open the security database"):
        SecurityDb(path).open()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / SECURITY_DB_FILE
    with SecurityDb(path):
        pass
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="newer pytbmq") as info:
        SecurityDb(path).open()
    assert str(path) in str(info.value)


def test_foreign_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="not a pytbmq security database") as info:
        SecurityDb(path).open()
    assert "invoices" in str(info.value)
    assert str(path) in str(info.value)
    conn = sqlite3.connect(path)  # untouched
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    conn.close()


def test_message_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pytbmq.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE session (client_id TEXT)")
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="not a pytbmq security database"):
        SecurityDb(path).open()


def test_garbage_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / SECURITY_DB_FILE
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StorageError) as info:
        SecurityDb(path).open()
    assert str(path) in str(info.value)


def test_closed_database_is_a_storage_error(tmp_path: Path) -> None:
    db = SecurityDb(tmp_path / SECURITY_DB_FILE)
    with pytest.raises(StorageError, match="not open"):
        db.list_credentials()


# --------------------------------------------------------------------------- credentials


def test_add_get_list_remove(db: SecurityDb) -> None:
    b = basic("dev1", userName="dev1", password="pw", authRules={"pub": ["a/.*"]})
    cid = db.add_credentials(b)
    assert len(cid) == 36
    assert db.get_credentials("dev1") == b
    record = db.get_credentials_record("dev1")
    assert isinstance(record, CredentialsRecord)
    rid, created, cred = record
    assert (rid, cred) == (cid, b)
    assert created > 1_600_000_000_000
    assert db.get_credentials("nope") is None
    assert db.get_credentials_record("nope") is None
    assert db.list_credentials() == [b]
    assert db.remove_credentials("dev1") is True
    assert db.remove_credentials("dev1") is False
    assert db.list_credentials() == []


def test_list_in_creation_order(db: SecurityDb) -> None:
    creds = [
        x509("r2", "z.*", regex=True),
        basic("b", clientId="c"),
        x509("r1", "a.*", regex=True),
        scram("s", "u"),
    ]
    for c in creds:
        db.add_credentials(c)
    assert [c.name for c in db.list_credentials()] == ["r2", "b", "r1", "s"]


def test_duplicate_name_or_key_is_refused(db: SecurityDb) -> None:
    db.add_credentials(basic("dev1", userName="u"))
    with pytest.raises(ValueError) as info:
        db.add_credentials(basic("dev1", clientId="other"))
    assert str(info.value) == (
        "credentials 'dev1' already exist (credentials id username|u); use --replace"
    )
    with pytest.raises(ValueError) as info:
        db.add_credentials(basic("dev2", userName="u"))
    assert str(info.value) == (
        "credentials 'dev1' already exist (credentials id username|u); use --replace"
    )
    db.add_credentials(x509("rx", "d.*", regex=True))
    with pytest.raises(ValueError, match="ssl_regex"):
        db.add_credentials(x509("rx2", "d.*", regex=True))
    # same pattern as exact and as regex are different keys
    db.add_credentials(x509("exact", "d.*"))
    db.add_credentials(scram("s", "u"))  # scram|u, not username|u
    assert len(db.list_credentials()) == 4


def test_replace_keeps_id_position_and_time(db: SecurityDb) -> None:
    first = db.add_credentials(basic("a", userName="a"))
    db.add_credentials(basic("b", userName="b"))
    before = db.get_credentials_record("a")
    assert before is not None
    new = basic("a", clientId="a-client", password="pw")
    assert db.add_credentials(new, replace=True) == first
    after = db.get_credentials_record("a")
    assert after is not None
    assert after.id == first
    assert after.created_time == before.created_time
    assert after.credentials == new
    assert [c.name for c in db.list_credentials()] == ["a", "b"]


def test_replace_by_key_renames(db: SecurityDb) -> None:
    first = db.add_credentials(basic("old", userName="u"))
    assert db.add_credentials(basic("new", userName="u"), replace=True) == first
    assert [c.name for c in db.list_credentials()] == ["new"]


def test_replace_conflicting_rows_is_refused(db: SecurityDb) -> None:
    db.add_credentials(basic("a", userName="a"))
    db.add_credentials(basic("b", userName="b"))
    with pytest.raises(ValueError, match="belongs to credentials 'b'"):
        db.add_credentials(basic("a", userName="b"), replace=True)
    assert db.get_credentials("a") == basic("a", userName="a")


def test_stored_row_never_holds_the_clear_password(tmp_path: Path) -> None:
    path = tmp_path / SECURITY_DB_FILE
    with SecurityDb(path) as db:
        db.add_credentials(basic("b", userName="u", password="s3cret-Clear"))
        db.add_credentials(scram("s", "v", password="s3cret-Clear"))
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT * FROM credentials").fetchall()
    conn.close()
    assert len(rows) == 2
    assert "s3cret-Clear" not in repr(rows)
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert b"s3cret-Clear" not in raw


def test_unparsable_row_is_logged_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / SECURITY_DB_FILE
    with SecurityDb(path) as db:
        db.add_credentials(basic("good", userName="g"))
        db.add_credentials(basic("bad", userName="b"))
    conn = sqlite3.connect(path)
    conn.execute("UPDATE credentials SET value = '{\"password\": \"clear\"}' WHERE name = 'bad'")
    conn.commit()
    conn.close()
    with SecurityDb(path) as db, caplog.at_level(logging.ERROR, "pytbmq.storage.security"):
        assert [c.name for c in db.list_credentials()] == ["good"]
        assert db.get_credentials("bad") is None
    assert "'bad'" in caplog.text


def test_scram_round_trip_through_db(db: SecurityDb) -> None:
    s = scram("s", "u", password="pencil")
    db.add_credentials(s)
    back = db.get_credentials("s")
    assert back == s
    assert isinstance(back.value, ScramCredentials)
    v = back.value
    assert derive("pencil", v.salt, v.iterations, "sha256") == (v.stored_key, v.server_key)


# --------------------------------------------------------------------------- blocked


def test_blocked_add_list_remove_upsert(db: SecurityDb) -> None:
    a = BlockedClient(BlockedType.CLIENT_ID, "a")
    r = BlockedClient(BlockedType.REGEX, "x.*", RegexMatchTarget.BY_USERNAME, 5, "d")
    ip = BlockedClient(BlockedType.IP_ADDRESS, "10.0.0.1")
    for b in (a, r, ip):
        db.add_blocked(b)
    assert db.list_blocked() == [a, r, ip]
    a2 = BlockedClient(BlockedType.CLIENT_ID, "a", None, 99, "updated")
    db.add_blocked(a2)
    assert db.list_blocked() == [a2, r, ip]  # updated in place
    assert db.remove_blocked("REGEX|BY_USERNAME|x.*") is True
    assert db.remove_blocked("REGEX|BY_USERNAME|x.*") is False
    assert db.list_blocked() == [a2, ip]


def test_purge_blocked(db: SecurityDb) -> None:
    never = BlockedClient(BlockedType.CLIENT_ID, "never")
    old = BlockedClient(BlockedType.CLIENT_ID, "old", None, 100)
    edge = BlockedClient(BlockedType.CLIENT_ID, "edge", None, 200)
    later = BlockedClient(BlockedType.CLIENT_ID, "later", None, 300)
    for b in (never, old, edge, later):
        db.add_blocked(b)
    assert db.purge_blocked(200) == 1
    assert db.list_blocked() == [never, edge, later]
    assert db.purge_blocked(10**15) == 2
    assert db.list_blocked() == [never]


def test_unusable_blocked_row_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / SECURITY_DB_FILE
    with SecurityDb(path) as db:
        db.add_blocked(BlockedClient(BlockedType.USERNAME, "ok"))
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO blocked_client VALUES ('junk', '{\"type\": \"X\"}', 0, 9)")
    conn.commit()
    conn.close()
    with SecurityDb(path) as db, caplog.at_level(logging.ERROR):
        assert db.list_blocked() == [BlockedClient(BlockedType.USERNAME, "ok")]
    assert "'junk'" in caplog.text


# --------------------------------------------------------------------------- unauthorized


def unauth(client_id: str, ip: str, ts: int, reason: str = "bad") -> UnauthorizedClient:
    return UnauthorizedClient(client_id, ip, ts, "user", True, False, reason)


def test_unauthorized_upsert_and_order(db: SecurityDb) -> None:
    db.record_unauthorized(unauth("a", "1.1.1.1", 10))
    db.record_unauthorized(unauth("b", "1.1.1.1", 30))
    db.record_unauthorized(unauth("a", "2.2.2.2", 20))
    db.record_unauthorized(unauth("a", "1.1.1.1", 40, "again"))
    listed = db.list_unauthorized()
    assert [(u.client_id, u.ip_address, u.ts) for u in listed] == [
        ("a", "1.1.1.1", 40),
        ("b", "1.1.1.1", 30),
        ("a", "2.2.2.2", 20),
    ]
    assert listed[0] == unauth("a", "1.1.1.1", 40, "again")
    tls = UnauthorizedClient("", "3.3.3.3", 5, None, False, True, "handshake")
    db.record_unauthorized(tls)
    assert db.list_unauthorized()[-1] == tls


def test_forget_unauthorized(db: SecurityDb) -> None:
    db.record_unauthorized(unauth("a", "1.1.1.1", 1))
    db.record_unauthorized(unauth("a", "2.2.2.2", 2))
    db.record_unauthorized(unauth("", "1.1.1.1", 3))
    db.record_unauthorized(unauth("", "9.9.9.9", 4))
    db.record_unauthorized(unauth("b", "1.1.1.1", 5))
    assert db.forget_unauthorized("a") == 2
    assert db.forget_unauthorized("zz", "1.1.1.1") == 1
    assert sorted((u.client_id, u.ip_address) for u in db.list_unauthorized()) == [
        ("", "9.9.9.9"),
        ("b", "1.1.1.1"),
    ]


def test_clear_and_purge_unauthorized(db: SecurityDb) -> None:
    for i, cid in enumerate(("a", "b", "c", "a")):
        db.record_unauthorized(unauth(cid, f"10.0.0.{i}", 100 * (i + 1)))
    assert db.clear_unauthorized("a") == 2
    assert db.purge_unauthorized(250) == 1  # b at 200
    assert [u.client_id for u in db.list_unauthorized()] == ["c"]
    assert db.clear_unauthorized() == 1
    assert db.list_unauthorized() == []


# --------------------------------------------------------------------------- change detection


def test_data_version_changes_after_another_connection_commits(tmp_path: Path) -> None:
    path = tmp_path / SECURITY_DB_FILE
    with SecurityDb(path) as broker, SecurityDb(path) as cli:
        v0 = broker.data_version()
        assert broker.data_version() == v0
        broker.add_blocked(BlockedClient(BlockedType.CLIENT_ID, "own"))
        assert broker.data_version() == v0  # our own commits do not count
        cli.add_credentials(basic("dev1", userName="dev1"))
        v1 = broker.data_version()
        assert v1 != v0
        assert [c.name for c in broker.list_credentials()] == ["dev1"]
        cli.record_unauthorized(unauth("x", "1.1.1.1", 1))
        assert broker.data_version() != v1


def test_each_method_commits(tmp_path: Path) -> None:
    path = tmp_path / SECURITY_DB_FILE
    db = SecurityDb(path)
    db.open()
    db.add_credentials(basic("dev1", userName="dev1"))
    other = sqlite3.connect(path)  # sees the commit while db stays open
    assert other.execute("SELECT name FROM credentials").fetchall() == [("dev1",)]
    other.close()
    with pytest.raises(ValueError):
        db.add_credentials(basic("dev1", userName="dev1"))
    db.add_blocked(BlockedClient(BlockedType.CLIENT_ID, "after-error"))  # no dangling tx
    assert len(db.list_blocked()) == 1
    db.close()
