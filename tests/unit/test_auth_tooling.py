"""`pytbmq credentials`, `pytbmq blocked` and `pytbmq unauthorized` end to end through
pytbmq.cli.main, with PYTBMQ_DATA_DIR in tmp_path; results are checked through the output
and through SecurityDb on the same data directory."""

from __future__ import annotations

import datetime
import io
import json
import os
import shlex
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytbmq.auth.blocked import BlockedClient, BlockedType, RegexMatchTarget
from pytbmq.auth.credentials import (
    BasicCredentials,
    ClientType,
    PubSubPatterns,
    ScramAlgorithm,
    ScramCredentials,
    X509Credentials,
    verify_password,
)
from pytbmq.auth.scram import derive
from pytbmq.auth.unauthorized import UnauthorizedClient
from pytbmq.cli import main
from pytbmq.storage.security import SECURITY_DB_FILE, SecurityDb


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith(("LISTENER_", "SSL_", "TLS_", "PYTBMQ_", "MQTT_", "SECURITY_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "data"
    monkeypatch.setenv("PYTBMQ_DATA_DIR", str(path))
    return path


def cli(capsys: pytest.CaptureFixture[str], command: str, *extra: str) -> Result:
    """Run `pytbmq COMMAND` in process (COMMAND split like a shell, EXTRA passed whole)."""
    capsys.readouterr()
    code = main([*shlex.split(command), *extra])
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def ok(capsys: pytest.CaptureFixture[str], command: str, *extra: str) -> Result:
    result = cli(capsys, command, *extra)
    assert result.code == 0, f"{command}: exit {result.code}\n{result.out}\n{result.err}"
    return result


def fails(capsys: pytest.CaptureFixture[str], command: str, code: int = 2) -> str:
    result = cli(capsys, command)
    assert result.code == code, f"{command}: exit {result.code}\n{result.out}\n{result.err}"
    assert result.err.startswith("pytbmq: ")
    assert "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1
    return result.err.strip()


def stored(data_dir: Path) -> SecurityDb:
    db = SecurityDb(data_dir / SECURITY_DB_FILE)
    db.open(create=False)
    return db


def stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(text))


def doc(name: str, ctype: str, value: dict[str, Any], client_type: str = "DEVICE") -> Any:
    return {
        "name": name,
        "clientType": client_type,
        "credentialsType": ctype,
        "credentialsValue": json.dumps(value),
    }


# --------------------------------------------------------------------------- fresh data dir


def test_list_commands_on_a_fresh_data_dir(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in ("credentials list", "blocked list", "unauthorized list"):
        assert ok(capsys, command).out == ""
        assert json.loads(ok(capsys, command + " --json").out) == []
    assert ok(capsys, "unauthorized clear").out.startswith("cleared 0 ")
    assert "no credentials named 'x'" in fails(capsys, "credentials show x")
    assert "no credentials named 'x'" in fails(capsys, "credentials remove x")
    assert "no blocked client" in fails(capsys, "blocked remove CLIENT_ID|x")
    assert not data_dir.exists()  # reading creates nothing


def test_add_creates_a_missing_data_dir(
    data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    nested = data_dir / "a" / "b"
    monkeypatch.setenv("PYTBMQ_DATA_DIR", str(nested))
    ok(capsys, "credentials add-basic --username u --pub .*")
    assert (nested / SECURITY_DB_FILE).exists()


def test_config_option_on_the_subcommands(
    data_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    other = tmp_path / "from-yaml"
    config = tmp_path / "c.yml"
    config.write_text(f'pytbmq:\n  data_dir: "{other}"\n', encoding="utf-8")
    os.environ.pop("PYTBMQ_DATA_DIR")  # monkeypatch restores it
    ok(capsys, "credentials --config", str(config), "add-basic", "--username", "u", "--pub", "a")
    ok(capsys, "blocked --config", str(config), "add", "--username", "bad")
    assert "username|u" in ok(capsys, "--config", str(config), "credentials", "list").out
    assert "USERNAME|bad" in ok(capsys, "blocked --config", str(config), "list").out
    assert ok(capsys, "unauthorized --config", str(config), "list").out == ""
    assert (other / SECURITY_DB_FILE).exists()


# --------------------------------------------------------------------------- add-basic


def test_add_basic_and_list(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = ok(
        capsys,
        "credentials add-basic --username dev1 --password secret "
        "--pub 'sensors/.*' --pub 'status/.*' --sub 'cmd/#' --type application",
    )
    assert r.out == "added credentials 'dev1' (MQTT_BASIC, id username|dev1)\n"
    assert r.err == ""
    with stored(data_dir) as db:
        cred = db.get_credentials("dev1")
    assert cred is not None
    assert cred.client_type is ClientType.APPLICATION
    v = cred.value
    assert isinstance(v, BasicCredentials)
    assert (v.client_id, v.user_name) == (None, "dev1")
    assert verify_password(v.password_hash, "secret").ok
    assert v.auth_rules == PubSubPatterns(("sensors/.*", "status/.*"), ("cmd/#",))

    ok(capsys, "credentials add-basic --client-id c7 --pub x")
    ok(capsys, "credentials add-basic --name both --client-id c8 --username u8 --sub y")
    listing = ok(capsys, "credentials list").out.splitlines()
    assert listing[0].split() == ["NAME", "TYPE", "CLIENT", "TYPE", "CREDENTIALS", "ID", "RULES"]
    assert [line.split()[0] for line in listing[1:]] == ["dev1", "c7", "both"]
    assert "username|dev1" in listing[1]
    assert "APPLICATION" in listing[1]
    assert "pub: sensors/.*, status/.*; sub: cmd/#" in listing[1]
    assert "client_id|c7" in listing[2]
    assert "mixed|u8|c8" in listing[3]


def test_add_basic_duplicate_and_replace(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ok(capsys, "credentials add-basic --username dev1 --pub a")
    err = fails(capsys, "credentials add-basic --username dev1 --pub b")
    assert err == (
        "pytbmq: credentials 'dev1' already exist (credentials id username|dev1); use --replace"
    )
    r = ok(capsys, "credentials add-basic --username dev1 --pub b --replace")
    assert r.out.startswith("replaced credentials 'dev1'")
    with stored(data_dir) as db:
        creds = db.list_credentials()
    assert len(creds) == 1
    assert isinstance(creds[0].value, BasicCredentials)
    assert creds[0].value.auth_rules.pub == ("b",)


def test_add_basic_warns_when_no_rules(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = ok(capsys, "credentials add-basic --username open")
    assert "warning" in r.err
    assert "neither publishing nor subscribing" in r.err
    assert ok(capsys, "credentials add-basic --username pubonly --pub a").err == ""
    assert ok(capsys, "credentials add-basic --username subonly --sub a").err == ""


def test_add_basic_password_from_stdin(
    data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stdin(monkeypatch, "from stdin\nignored\n")
    ok(capsys, "credentials add-basic --username u --password-stdin --pub a")
    with stored(data_dir) as db:
        cred = db.get_credentials("u")
    assert cred is not None and isinstance(cred.value, BasicCredentials)
    assert verify_password(cred.value.password_hash, "from stdin").ok
    stdin(monkeypatch, "")
    assert "--password-stdin" in fails(
        capsys, "credentials add-basic --username v --password-stdin"
    )
    stdin(monkeypatch, "\n")
    assert "--password-stdin" in fails(
        capsys, "credentials add-basic --username v --password-stdin"
    )


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("credentials add-basic --pub a", "--username or --client-id"),
        ("credentials add-basic --username u --password ''", "--password: must not be empty"),
        ("credentials add-basic --username u --pub '('", "--pub: invalid auth rule pattern"),
        ("credentials add-basic --username u --sub 'a[' ", "--sub: invalid auth rule pattern"),
        ("credentials add-x509 --cn 'dev-(' --regex", "--cn: invalid auth rule pattern"),
        ("credentials add-x509 --cn d --key '*'", "--key: invalid auth rule pattern"),
        ("credentials add-x509 --cn ''", "--cn: must not be empty"),
        ("credentials add-scram --username '' --password p", "--username: must not be empty"),
    ],
)
def test_bad_credentials_options(
    data_dir: Path, capsys: pytest.CaptureFixture[str], command: str, expected: str
) -> None:
    assert expected in fails(capsys, command)
    assert not (data_dir / SECURITY_DB_FILE).exists()


def test_argparse_errors_exit_2(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for command in (
        "credentials add-scram --username u",  # a password is required
        "credentials add-basic --username u --password a --password-stdin",
        "credentials add-basic --username u --type ROBOT",
        "credentials add-scram --username u --password p --algorithm MD5",
        "blocked add",
        "blocked add --client-id a --username b",
        "blocked add --client-id a --expires 2030-01-01 --for 5",
        "blocked add --regex a --target host",
        "unauthorized",
    ):
        with pytest.raises(SystemExit) as info:
            main(shlex.split(command))
        assert info.value.code == 2, command
    capsys.readouterr()


def test_clear_password_is_never_stored(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok(capsys, "credentials add-basic --username u --password Clear-Text-42 --pub a")
    ok(capsys, "credentials add-scram --username s --password Clear-Text-42 --pub a")
    conn = sqlite3.connect(data_dir / SECURITY_DB_FILE)
    rows = conn.execute("SELECT * FROM credentials").fetchall()
    conn.close()
    assert len(rows) == 2
    assert "Clear-Text-42" not in repr(rows)
    for path in data_dir.iterdir():
        assert b"Clear-Text-42" not in path.read_bytes()
    for command in ("credentials list", "credentials list --json", "credentials show u"):
        assert "scrypt$" not in ok(capsys, command).out


# --------------------------------------------------------------------------- add-x509, add-scram


def test_add_x509(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = ok(capsys, "credentials add-x509 --cn dev-1 --pub 'a/.*'")
    assert r.out == "added credentials 'dev-1' (X_509, id ssl|dev-1)\n"
    r = ok(
        capsys,
        "credentials add-x509 --name fleet --cn 'dev-.*' --regex --key '^dev-' "
        "--pub 't/${cn}/.*' --sub 'cmd/#' --type APPLICATION",
    )
    assert r.out == "added credentials 'fleet' (X_509, id ssl_regex|dev-.*)\n"
    with stored(data_dir) as db:
        exact, fleet = db.list_credentials()
    assert isinstance(exact.value, X509Credentials)
    assert exact.value == X509Credentials(
        "dev-1", False, ((".*", PubSubPatterns(("a/.*",), None)),)
    )
    assert fleet.client_type is ClientType.APPLICATION
    assert fleet.value == X509Credentials(
        "dev-.*", True, (("^dev-", PubSubPatterns(("t/${cn}/.*",), ("cmd/#",))),)
    )
    assert "neither publishing" in ok(capsys, "credentials add-x509 --cn nothing").err


def test_add_scram(
    data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    r = ok(capsys, "credentials add-scram --username alice --password pencil --sub 'x/.*'")
    assert r.out == "added credentials 'alice' (SCRAM, id scram|alice)\n"
    stdin(monkeypatch, "p512\n")
    ok(
        capsys,
        "credentials add-scram --name bob512 --username bob --password-stdin "
        "--algorithm SHA_512 --pub a",
    )
    with stored(data_dir) as db:
        alice = db.get_credentials("alice")
        bob = db.get_credentials("bob512")
    assert alice is not None and isinstance(alice.value, ScramCredentials)
    v = alice.value
    assert v.algorithm is ScramAlgorithm.SHA_256
    assert derive("pencil", v.salt, v.iterations, "sha256") == (v.stored_key, v.server_key)
    assert bob is not None and isinstance(bob.value, ScramCredentials)
    assert bob.value.algorithm is ScramAlgorithm.SHA_512
    w = bob.value
    assert derive("p512", w.salt, w.iterations, "sha512") == (w.stored_key, w.server_key)
    assert "scram|alice" in fails(capsys, "credentials add-scram --username alice --password x")


# --------------------------------------------------------------------------- add --json


def test_add_json_file_list(
    data_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    docs = [
        doc("b1", "MQTT_BASIC", {"userName": "u1", "password": "pw", "authRules": {"pub": ["a"]}}),
        doc("x1", "X_509", {"certCnPattern": "cn1", "authRulesMapping": {".*": {"sub": ["s"]}}}),
        doc("s1", "SCRAM", {"userName": "su", "algorithm": "SHA_256", "password": "p"}),
    ]
    path = tmp_path / "creds.json"
    path.write_text(json.dumps(docs), encoding="utf-8")
    r = ok(capsys, "credentials add --json", str(path))
    assert r.out.splitlines() == [
        "added credentials 'b1' (MQTT_BASIC, id username|u1)",
        "added credentials 'x1' (X_509, id ssl|cn1)",
        "added credentials 's1' (SCRAM, id scram|su)",
    ]
    assert "'s1' allow neither" in r.err  # the SCRAM one has no rules
    with stored(data_dir) as db:
        b1 = db.get_credentials("b1")
    assert b1 is not None and isinstance(b1.value, BasicCredentials)
    assert verify_password(b1.value.password_hash, "pw").ok
    # the whole list is refused before anything is added
    docs2 = [doc("new", "MQTT_BASIC", {"userName": "new", "authRules": {"pub": ["a"]}}), docs[0]]
    path.write_text(json.dumps(docs2), encoding="utf-8")
    assert "credentials 'b1' already exist" in fails(capsys, f"credentials add --json {path}")
    with stored(data_dir) as db:
        assert db.get_credentials("new") is None
    r = ok(capsys, "credentials add --replace --json", str(path))
    assert r.out.splitlines()[1].startswith("replaced credentials 'b1'")


def test_add_json_from_stdin_single_document(
    data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stdin(monkeypatch, json.dumps(doc("one", "MQTT_BASIC", {"clientId": "c", "password": "p"})))
    assert ok(capsys, "credentials add --json -").out.startswith("added credentials 'one'")


def test_add_json_errors(
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "c.json"
    assert "cannot read it" in fails(capsys, f"credentials add --json {path}")
    path.write_text("{not json", encoding="utf-8")
    assert "not valid JSON" in fails(capsys, f"credentials add --json {path}")
    path.write_text("[]", encoding="utf-8")
    assert "the list is empty" in fails(capsys, f"credentials add --json {path}")
    good = doc("g", "MQTT_BASIC", {"userName": "g"})
    bad = doc("b", "MQTT_BASIC", {"userName": "b"}, client_type="ROBOT")
    path.write_text(json.dumps([good, bad]), encoding="utf-8")
    err = fails(capsys, f"credentials add --json {path}")
    assert "document 2: clientType: must be DEVICE or APPLICATION" in err
    path.write_text(json.dumps([good, good]), encoding="utf-8")
    assert "appears twice" in fails(capsys, f"credentials add --json {path}")
    path.write_text(json.dumps([good, doc("g2", "MQTT_BASIC", {"userName": "g"})]), "utf-8")
    assert "same credentials id username|g" in fails(capsys, f"credentials add --json {path}")
    stdin(monkeypatch, "[1]")
    assert "document 1: credentials: must be a JSON object" in fails(
        capsys, "credentials add --json -"
    )
    assert not (data_dir / SECURITY_DB_FILE).exists()


# --------------------------------------------------------------------------- list/show/remove


def test_list_json_has_no_secrets(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok(capsys, "credentials add-basic --username u --password pw --pub a")
    ok(capsys, "credentials add-basic --client-id open --pub a")
    ok(capsys, "credentials add-scram --username s --password pw --pub a")
    documents = json.loads(ok(capsys, "credentials list --json").out)
    assert [d["name"] for d in documents] == ["u", "open", "s"]
    values = [json.loads(d["credentialsValue"]) for d in documents]
    assert values[0]["password"] == "***"
    assert values[1]["password"] is None
    assert "storedKey" not in values[2] and "salt" not in values[2]


def test_show(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok(capsys, "credentials add-basic --username u --client-id c --password pw --pub 'a/.*'")
    out = ok(capsys, "credentials show u").out
    lines = dict(line.split(":", 1) for line in out.splitlines())
    assert lines["name"].strip() == "u"
    assert lines["credentials id"].strip() == "mixed|u|c"
    assert lines["password"].strip() == "***"
    assert lines["publish rules"].strip() == "a/.*"
    assert lines["subscribe rules"].strip() == "(none)"
    assert len(lines["id"].strip()) == 36
    shown = json.loads(ok(capsys, "credentials show u --json").out)
    with stored(data_dir) as db:
        record = db.get_credentials_record("u")
    assert record is not None
    assert shown["id"] == record.id
    assert shown["createdTime"] == record.created_time
    assert shown["credentialsType"] == "MQTT_BASIC"
    assert json.loads(shown["credentialsValue"])["password"] == "***"
    ok(capsys, "credentials add-x509 --cn 'd.*' --regex --name rx --sub s")
    assert "CN is a regex:" in ok(capsys, "credentials show rx").out
    ok(capsys, "credentials add-scram --username sc --password pw --sub s")
    out = ok(capsys, "credentials show sc").out
    assert "SCRAM-SHA-256" in out
    assert "storedKey" not in out


def test_remove(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok(capsys, "credentials add-basic --username u --pub a")
    assert ok(capsys, "credentials remove u").out == "removed credentials 'u'\n"
    assert "no credentials named 'u'" in fails(capsys, "credentials remove u")
    assert ok(capsys, "credentials list").out == ""


# --------------------------------------------------------------------------- blocked


def test_blocked_add_list_remove(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = ok(capsys, "blocked add --client-id dev1 --description 'noisy device'")
    assert r.out == "blocked CLIENT_ID|dev1 (expires: never)\n"
    ok(capsys, "blocked add --username bob")
    r = ok(capsys, "blocked add --ip 10.0.0.7")
    assert "IP_ADDRESS|10.0.0.7" in r.out
    r = ok(capsys, "blocked add --regex 'guest-.*' --target username")
    assert "REGEX|BY_USERNAME|guest-.*" in r.out
    ok(capsys, "blocked add --regex '10\\.1\\..*' --target ip")
    ok(capsys, "blocked add --regex 'tmp-.*' --target client_id")
    with stored(data_dir) as db:
        entries = db.list_blocked()
    assert entries == [
        BlockedClient(BlockedType.CLIENT_ID, "dev1", None, 0, "noisy device"),
        BlockedClient(BlockedType.USERNAME, "bob"),
        BlockedClient(BlockedType.IP_ADDRESS, "10.0.0.7"),
        BlockedClient(BlockedType.REGEX, "guest-.*", RegexMatchTarget.BY_USERNAME),
        BlockedClient(BlockedType.REGEX, "10\\.1\\..*", RegexMatchTarget.BY_IP_ADDRESS),
        BlockedClient(BlockedType.REGEX, "tmp-.*", RegexMatchTarget.BY_CLIENT_ID),
    ]
    listing = ok(capsys, "blocked list").out.splitlines()
    assert listing[0].split() == ["KEY", "EXPIRES", "DESCRIPTION"]
    assert listing[1].split() == ["CLIENT_ID|dev1", "never", "noisy", "device"]
    documents = json.loads(ok(capsys, "blocked list --json").out)
    assert documents[0] == {
        "type": "CLIENT_ID",
        "expirationTime": 0,
        "description": "noisy device",
        "clientId": "dev1",
    }
    assert documents[3]["regexMatchTarget"] == "BY_USERNAME"
    r = ok(capsys, "blocked remove", "REGEX|BY_USERNAME|guest-.*")
    assert r.out == "removed blocked client REGEX|BY_USERNAME|guest-.*\n"
    assert "no blocked client" in fails(capsys, "blocked remove 'REGEX|BY_USERNAME|guest-.*'")
    assert len(json.loads(ok(capsys, "blocked list --json").out)) == 5


def test_blocked_expiry_options(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = ok(capsys, "blocked add --client-id a --expires 2099-01-02T03:04:05+00:00")
    assert r.out == "blocked CLIENT_ID|a (expires: 2099-01-02T03:04:05Z)\n"
    before = time.time_ns() // 1_000_000
    ok(capsys, "blocked add --client-id b --for 3600")
    after = time.time_ns() // 1_000_000
    r = ok(capsys, "blocked add --client-id c --expires 2000-01-01T00:00:00Z")
    assert "in the past" in r.err
    assert "(expired)" in r.out
    with stored(data_dir) as db:
        a, b, c = db.list_blocked()
    expected = datetime.datetime(2099, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    assert a.expiration_time == int(expected.timestamp()) * 1000
    assert before + 3_600_000 <= b.expiration_time <= after + 3_600_000
    assert c.expiration_time == 946_684_800_000  # 2000-01-01T00:00:00Z
    assert "(expired)" in ok(capsys, "blocked list").out
    ok(capsys, "blocked add --client-id local --expires 2099-06-01T12:00")  # local time
    with stored(data_dir) as db:
        local = db.list_blocked()[-1]
    naive = datetime.datetime(2099, 6, 1, 12, 0)
    assert local.expiration_time == int(naive.astimezone().timestamp()) * 1000
    # re-adding an entry updates it
    ok(capsys, "blocked add --client-id a")
    with stored(data_dir) as db:
        assert db.list_blocked()[0].expiration_time == 0


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("blocked add --regex 'a.*'", "--regex: needs --target"),
        ("blocked add --username u --target username", "--target: only used with --regex"),
        ("blocked add --regex '(' --target username", "--regex: invalid regex '('"),
        ("blocked add --ip 10.0.0.256", "--ip: '10.0.0.256' is not a valid IP address"),
        ("blocked add --client-id ''", "--client-id: required non-empty string"),
        ("blocked add --client-id a --expires tomorrow", "--expires: 'tomorrow' is not an ISO"),
        ("blocked add --client-id a --for -5", "--for: must be a positive number"),
        ("blocked add --client-id a --for soon", "--for: 'soon' is not a whole number"),
        ("blocked add --json x.json --description d", "--description: not allowed with --json"),
        ("blocked add --json x.json --for 5", "--for: not allowed with --json"),
        ("blocked add --json missing.json", "--json missing.json: cannot read it"),
    ],
)
def test_bad_blocked_options(
    data_dir: Path, capsys: pytest.CaptureFixture[str], command: str, expected: str
) -> None:
    assert expected in fails(capsys, command)
    assert not (data_dir / SECURITY_DB_FILE).exists()


def test_blocked_add_json(
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    docs = [
        {"type": "USERNAME", "username": "bob", "expirationTime": 0, "description": None},
        {"type": "REGEX", "pattern": "x.*", "regexMatchTarget": "BY_CLIENT_ID"},
    ]
    path = tmp_path / "b.json"
    path.write_text(json.dumps(docs), encoding="utf-8")
    r = ok(capsys, "blocked add --json", str(path))
    assert r.out.splitlines() == [
        "blocked USERNAME|bob (expires: never)",
        "blocked REGEX|BY_CLIENT_ID|x.* (expires: never)",
    ]
    stdin(monkeypatch, json.dumps({"type": "IP_ADDRESS", "ipAddress": "::1"}))
    ok(capsys, "blocked add --json -")
    with stored(data_dir) as db:
        assert [b.key for b in db.list_blocked()] == [
            "USERNAME|bob",
            "REGEX|BY_CLIENT_ID|x.*",
            "IP_ADDRESS|::1",
        ]
    path.write_text(json.dumps([docs[0], {"type": "REGEX", "pattern": "y"}]), encoding="utf-8")
    err = fails(capsys, f"blocked add --json {path}")
    assert "document 2: regexMatchTarget: required for REGEX" in err


# --------------------------------------------------------------------------- unauthorized


def test_unauthorized_list_and_clear(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir.mkdir()
    records = [
        UnauthorizedClient("dev1", "10.0.0.1", 1_700_000_000_000, "bob", True, False, "bad pw"),
        UnauthorizedClient("", "10.0.0.2", 1_700_000_100_000, None, False, True, "TLS failed"),
        UnauthorizedClient("dev1", "10.0.0.3", 1_600_000_000_000, None, False, False, "no"),
        UnauthorizedClient("dev2", "10.0.0.4", 1_650_000_000_000, None, False, False, "no"),
    ]
    with SecurityDb(data_dir / SECURITY_DB_FILE) as db:
        for record in records:
            db.record_unauthorized(record)
    listing = ok(capsys, "unauthorized list").out.splitlines()
    assert listing[0].split()[:3] == ["TIME", "CLIENT", "ID"]
    assert listing[1].split()[:6] == ["2023-11-14T22:15:00Z", "-", "10.0.0.2", "-", "no", "yes"]
    assert listing[2].split() == [
        "2023-11-14T22:13:20Z",
        "dev1",
        "10.0.0.1",
        "bob",
        "yes",
        "no",
        "bad",
        "pw",
    ]
    documents = json.loads(ok(capsys, "unauthorized list --json").out)
    assert documents == [r.to_document() for r in (records[1], records[0], records[3], records[2])]
    r = ok(capsys, "unauthorized clear dev1")
    assert r.out == "cleared 2 unauthorized client record(s) of client 'dev1'\n"
    assert ok(capsys, "unauthorized clear").out == "cleared 2 unauthorized client record(s)\n"
    assert ok(capsys, "unauthorized list").out == ""


# --------------------------------------------------------------------------- storage errors


def test_unusable_database_exits_1(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir.mkdir()
    conn = sqlite3.connect(data_dir / SECURITY_DB_FILE)
    conn.execute("CREATE TABLE stuff (x)")
    conn.commit()
    conn.close()
    for command in ("credentials list", "blocked add --username u", "unauthorized clear"):
        err = fails(capsys, command, code=1)
        assert "not a pytbmq security database" in err
        assert str(data_dir / SECURITY_DB_FILE) in err


def test_data_dir_that_is_a_file_exits_1(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir.write_text("not a directory", encoding="utf-8")
    err = fails(capsys, "credentials add-basic --username u --pub a", code=1)
    assert "cannot create the data directory" in err
