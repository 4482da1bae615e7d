"""Authentication and authorization end to end: MQTT Basic credentials (by client id, by
user name, by both), the lookup strategy, publish / subscribe / will rules with the exact
reason codes, blocked clients, the unauthorized-clients log and the broker with
authentication disabled.

Credentials are managed with the CLI (``python -m pytbmq credentials|blocked|unauthorized``)
against the broker's data directory, as an operator would. The core scenarios run over
plain MQTT, WebSocket and WebSocket Secure (``transports``) and over MQTTS.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from . import rawmqtt as rm
from .conftest import WS_ENV
from .helpers import V5, V311, BrokerProcess, ClientPool, both_versions, uid
from .pki import (
    Pki,
    client_context,
    pki_fixture,  # noqa: F401  (the session fixture ``pki``)
    ssl_port,
    tls_env,
    tls_raw,
    wss_env,
)
from .scram_client import (
    BAD_AUTHENTICATION_METHOD,
    BANNED,
    NOT_AUTHORIZED,
    V3_SUBACK_FAILURE,
    SourcedRawClient,
    blocked_entries,
    connect_with_method,
    expect_refused,
    refusal_code,
    security_cli,
    try_connect,
    unauthorized_records,
    wait_for,
    wait_for_unauthorized,
    watch_broker,
)

MOSQUITTO_PUB = shutil.which("mosquitto_pub")

# credentials of the shared Basic broker
CID = "auth-device-7"  # client-id credential, no password, rules cid/.*
USER, PASSWORD = "auth-user", "s3cret-pw"  # user-name credential, rules sensors/.*
MIX_USER, MIX_CID, MIX_PASSWORD = "mix-user", "mix-client", "mix-pw"  # both, rules mixed/.*
RULES_USER, RULES_PASSWORD = "rules-user", "rules-pw"  # rules allowed/.*
WATCHER = "watcher"  # no password, may publish and subscribe anywhere
NOPUB_USER = "nopub-user"  # no publish list at all: every publish denied
BANNED_USER = "banned-user"  # blocked by user name (has valid credentials too)

BASIC_ON = {"SECURITY_MQTT_BASIC_ENABLED": "true"}


def _data(broker: BrokerProcess) -> Path:
    """The broker's PYTBMQ_DATA_DIR (helpers.BrokerProcess uses ``<workdir>/data``)."""
    return broker.workdir / "data"


def add_basic(data: Path, *args: str) -> None:
    security_cli(data, "credentials", "add-basic", *args)


def _started(base: Path, env: dict[str, Any]) -> BrokerProcess:
    return BrokerProcess(base, env).start()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def _basic_broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """MQTT Basic enabled, credentials added before the start; TCP, WS, WSS and MQTTS."""
    base = tmp_path_factory.mktemp("auth-basic")
    data = base / "data"
    add_basic(data, "--client-id", CID, "--pub", "cid/.*", "--sub", "cid/.*")
    add_basic(
        data, "--username", USER, "--password", PASSWORD, "--pub", "sensors/.*",
        "--sub", "sensors/.*", "--type", "DEVICE",
    )  # fmt: skip
    add_basic(
        data, "--name", "mixed", "--username", MIX_USER, "--client-id", MIX_CID,
        "--password", MIX_PASSWORD, "--pub", "mixed/.*", "--sub", "mixed/.*",
    )  # fmt: skip
    add_basic(
        data, "--username", RULES_USER, "--password", RULES_PASSWORD, "--pub", "allowed/.*",
        "--sub", "allowed/.*", "--type", "APPLICATION",
    )  # fmt: skip
    add_basic(data, "--username", WATCHER, "--pub", ".*", "--sub", ".*")
    add_basic(data, "--username", NOPUB_USER, "--sub", "allowed/.*")
    add_basic(data, "--username", BANNED_USER, "--pub", ".*", "--sub", ".*")
    security_cli(data, "blocked", "add", "--username", BANNED_USER, "--description", "e2e")
    broker = _started(base, {**BASIC_ON, **WS_ENV, **wss_env(pki), **tls_env(pki)})
    yield broker
    broker.stop()


@pytest.fixture
def basic_broker(_basic_broker: BrokerProcess) -> Iterator[BrokerProcess]:
    yield from watch_broker(_basic_broker)


@pytest.fixture(scope="module")
def _open_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """No provider enabled (TCP + WS); blocked clients added before the start."""
    base = tmp_path_factory.mktemp("auth-open")
    data = base / "data"
    security_cli(data, "blocked", "add", "--client-id", "blocked-cid")
    security_cli(data, "blocked", "add", "--username", "blocked-user")
    security_cli(data, "blocked", "add", "--ip", "127.0.0.2")
    security_cli(data, "blocked", "add", "--regex", "^evil-.*", "--target", "client_id")
    security_cli(data, "blocked", "add", "--regex", r"^127\.0\.0\.3$", "--target", "ip")
    _add_expired_block(data, "expired-block-cid")
    broker = _started(base, dict(WS_ENV))
    yield broker
    broker.stop()


@pytest.fixture
def open_broker(_open_broker: BrokerProcess) -> Iterator[BrokerProcess]:
    yield from watch_broker(_open_broker)


def _add_expired_block(data: Path, client_id: str) -> None:
    """A CLIENT_ID block that expired an hour ago: no longer applied, but still listed
    (the broker removes expired entries only BLOCKED_CLIENT_CLEANUP_TTL_MINUTES later)."""
    expired = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
    security_cli(data, "blocked", "add", "--client-id", client_id, "--expires", expired)


# --------------------------------------------------------------------------- small helpers


def _raw(pool: ClientPool, broker: BrokerProcess, version: int) -> rm.RawClient:
    return pool.raw(broker, version)


def _connected_raw(
    pool: ClientPool,
    broker: BrokerProcess,
    version: int,
    username: str | None,
    password: str | None = None,
    client_id: str | None = None,
) -> rm.RawClient:
    raw = _raw(pool, broker, version)
    connack = try_connect(raw, client_id or f"c-{uid()}", username, password)
    assert connack.reason == 0, f"CONNACK refused: {connack!r}"
    return raw


def _refused(
    pool: ClientPool,
    broker: BrokerProcess,
    version: int,
    client_id: str,
    username: str | None = None,
    password: str | None = None,
    v5_code: int = NOT_AUTHORIZED,
) -> None:
    raw = _raw(pool, broker, version)
    connack = try_connect(raw, client_id, username, password)
    expect_refused(raw, connack, refusal_code(version, v5_code))


def _accepted(
    pool: ClientPool,
    broker: BrokerProcess,
    version: int,
    client_id: str,
    username: str | None = None,
    password: str | None = None,
) -> None:
    raw = _raw(pool, broker, version)
    connack = try_connect(raw, client_id, username, password)
    assert connack.reason == 0, f"{client_id}/{username}: CONNACK refused {connack!r}"
    raw.disconnect()
    raw.close()


def _ping_ok(raw: rm.RawClient) -> None:
    raw.send(rm.pingreq())
    assert raw.expect(rm.PINGRESP).type == rm.PINGRESP


def _watcher(pool: ClientPool, broker: BrokerProcess, *topics: str) -> rm.RawClient:
    """A raw MQTT 5 client with no restrictions subscribed to ``topics`` (QoS 1)."""
    raw = _connected_raw(pool, broker, V5, WATCHER)
    assert raw.subscribe([(t, 1) for t in topics]) == [1] * len(topics)
    return raw


def _publishes_until_marker(raw: rm.RawClient, marker: str) -> list[str]:
    """Topics of the PUBLISH packets received before the one on ``marker``."""
    topics: list[str] = []
    while True:
        pkt = raw.expect(rm.PUBLISH)
        if pkt.qos:
            raw.puback(pkt.packet_id)  # type: ignore[arg-type]
        assert pkt.topic is not None
        if pkt.topic.decode() == marker:
            return topics
        topics.append(pkt.topic.decode())


# --------------------------------------------------------------------------- Basic: who


@pytest.mark.transports
@both_versions
def test_user_name_and_password(basic_broker, clients, version):
    _accepted(clients, basic_broker, version, f"any-{uid()}", USER, PASSWORD)
    _refused(clients, basic_broker, version, f"any-{uid()}", USER, "wrong-password")
    _refused(clients, basic_broker, version, f"any-{uid()}", USER)  # no password at all


@both_versions
def test_client_id_credential_without_password_accepts_any_password(basic_broker, clients, version):
    _accepted(clients, basic_broker, version, CID)
    _accepted(clients, basic_broker, version, CID, "whoever", "whatever")
    _refused(clients, basic_broker, version, f"{CID}-other")


@both_versions
def test_mixed_credential_needs_both_user_name_and_client_id(basic_broker, clients, version):
    _accepted(clients, basic_broker, version, MIX_CID, MIX_USER, MIX_PASSWORD)
    _refused(clients, basic_broker, version, MIX_CID, MIX_USER, "wrong")
    _refused(clients, basic_broker, version, f"other-{uid()}", MIX_USER, MIX_PASSWORD)
    _refused(clients, basic_broker, version, MIX_CID, "other-user", MIX_PASSWORD)


@both_versions
def test_no_matching_credentials(basic_broker, clients, version):
    _refused(clients, basic_broker, version, f"nobody-{uid()}")
    _refused(clients, basic_broker, version, f"nobody-{uid()}", "nobody", "pw")


def test_refusal_is_logged_with_the_reason(basic_broker, clients):
    client_id = f"logged-{uid()}"
    mark = basic_broker.log_mark()
    _refused(clients, basic_broker, V5, client_id, USER, "bad")
    line = basic_broker.wait_for_log(
        rf"client '{re.escape(client_id)}' from 127\.0\.0\.1:\d+ \(tcp, MQTT 5\) refused: "
        r"NOT_AUTHORIZED",
        since=mark,
    ).string
    assert "password" in line.lower(), f"no reason in the refusal line: {line}"


def test_paho_client_with_user_name_and_password(basic_broker, clients):
    topic = f"sensors/{uid()}"
    client = clients.new(basic_broker, V5)
    client.paho.username_pw_set(USER, PASSWORD)
    client.connect()
    assert client.subscribe(topic, 1) == [1]
    assert client.publish(topic, b"hello", qos=1) == 0
    assert client.expect_message().payload == b"hello"
    bad = clients.new(basic_broker, V5)
    bad.paho.username_pw_set(USER, "nope")
    assert bad.connect(check=False).reason_code == NOT_AUTHORIZED


@pytest.mark.skipif(not MOSQUITTO_PUB, reason="mosquitto_pub (mosquitto-clients) is needed")
@pytest.mark.parametrize("proto", ["mqttv311", "mqttv5"])
def test_mosquitto_pub_with_credentials(basic_broker, proto):
    common = [MOSQUITTO_PUB, "-h", basic_broker.host, "-p", str(basic_broker.port), "-V", proto]
    ok = subprocess.run(
        [*common, "-u", USER, "-P", PASSWORD, "-q", "1", "-t", f"sensors/{uid()}", "-m", "hi"],
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert ok.returncode == 0, ok.stderr + ok.stdout
    bad = subprocess.run(
        [*common, "-u", USER, "-P", "wrong", "-q", "1", "-t", f"sensors/{uid()}", "-m", "hi"],
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert bad.returncode != 0
    assert "not authori" in (bad.stderr + bad.stdout).lower(), bad.stderr + bad.stdout


def test_credentials_added_while_running_are_picked_up(basic_broker, clients):
    user, password = f"late-{uid()}", "late-pw"
    _refused(clients, basic_broker, V5, f"late-{uid()}", user, password)
    add_basic(_data(basic_broker), "--username", user, "--password", password, "--pub", "late/.*")

    def attempt() -> bool:
        raw = _raw(clients, basic_broker, V5)
        connack = try_connect(raw, f"late-{uid()}", user, password)
        raw.close()
        return connack.reason == 0

    wait_for(attempt, f"the broker to accept {user}", timeout=10)
    names = json.loads(security_cli(_data(basic_broker), "credentials", "list", "--json").stdout)
    assert any(user in json.dumps(entry) for entry in names), names


def test_credentials_removed_while_running_stop_working(basic_broker, clients):
    user, name = f"gone-{uid()}", f"gone-{uid()}"
    data = _data(basic_broker)
    add_basic(data, "--name", name, "--username", user, "--pub", "x/.*")
    shown = security_cli(data, "credentials", "show", name).stdout
    assert user in shown

    def accepted() -> bool:
        raw = _raw(clients, basic_broker, V5)
        connack = try_connect(raw, f"gone-{uid()}", user)
        raw.close()
        return connack.reason == 0

    wait_for(accepted, f"the broker to accept {user}", timeout=10)
    security_cli(data, "credentials", "remove", name)
    wait_for(lambda: not accepted(), f"the broker to refuse {user}", timeout=10)


def test_no_startup_warning_when_authentication_is_enabled(basic_broker):
    assert not any("authentication is disabled" in line for line in basic_broker.logs())


# --------------------------------------------------------------------------- Basic: what


@pytest.mark.transports
def test_denied_publish_v5(basic_broker, clients):
    """QoS 1 -> PUBACK 0x87, QoS 2 -> PUBREC 0x87, QoS 0 dropped; nothing is delivered and
    the connection stays open."""
    denied, marker = f"denied/{uid()}", f"allowed/{uid()}/marker"
    watcher = _watcher(clients, basic_broker, denied, marker)
    raw = _connected_raw(clients, basic_broker, V5, RULES_USER, RULES_PASSWORD)
    raw.publish(denied, b"q0", qos=0)
    raw.publish(denied, b"q1", qos=1, packet_id=11)
    puback = raw.expect(rm.PUBACK)
    assert (puback.packet_id, puback.reason) == (11, NOT_AUTHORIZED)
    raw.publish(denied, b"q2", qos=2, packet_id=12)
    pubrec = raw.expect(rm.PUBREC)
    assert (pubrec.packet_id, pubrec.reason) == (12, NOT_AUTHORIZED)
    _ping_ok(raw)  # still connected
    raw.publish(marker, b"marker", qos=1, packet_id=13)
    assert raw.expect(rm.PUBACK).reason == 0
    assert _publishes_until_marker(watcher, marker) == []


def test_publish_allowed_by_rules_is_delivered(basic_broker, clients):
    topic = f"allowed/{uid()}/data"
    watcher = _watcher(clients, basic_broker, topic)
    raw = _connected_raw(clients, basic_broker, V5, RULES_USER, RULES_PASSWORD)
    raw.publish(topic, b"ok", qos=1, packet_id=1)
    assert raw.expect(rm.PUBACK).reason == 0
    pkt = watcher.expect(rm.PUBLISH)
    assert (pkt.topic, pkt.payload) == (topic.encode(), b"ok")


@pytest.mark.transports
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_denied_publish_v311_closes_the_connection(basic_broker, clients, qos):
    denied, marker = f"denied/{uid()}", f"allowed/{uid()}/marker"
    watcher = _watcher(clients, basic_broker, denied, marker)
    raw = _connected_raw(clients, basic_broker, V311, RULES_USER, RULES_PASSWORD)
    raw.publish(denied, b"no", qos=qos, packet_id=5 if qos else None)
    assert raw.read_until_closed() == [], "expected the connection closed without an ack"
    other = _connected_raw(clients, basic_broker, V311, RULES_USER, RULES_PASSWORD)
    other.publish(marker, b"marker", qos=1, packet_id=1)
    assert other.expect(rm.PUBACK).packet_id == 1
    assert _publishes_until_marker(watcher, marker) == []


@both_versions
def test_no_publish_rules_deny_every_publish(basic_broker, clients, version):
    raw = _connected_raw(clients, basic_broker, version, NOPUB_USER)
    raw.publish(f"allowed/{uid()}", b"x", qos=1, packet_id=3)
    if version == V5:
        assert raw.expect(rm.PUBACK).reason == NOT_AUTHORIZED
    else:
        assert raw.read_until_closed() == []


@pytest.mark.transports
@both_versions
def test_denied_subscribe(basic_broker, clients, version):
    raw = _connected_raw(clients, basic_broker, version, RULES_USER, RULES_PASSWORD)
    failure = NOT_AUTHORIZED if version == V5 else V3_SUBACK_FAILURE
    codes = raw.subscribe(
        [(f"allowed/{uid()}", 1), (f"denied/{uid()}", 1), ("allowed/#", 2), ("#", 0)]
    )
    # rules full-match the filter string: "allowed/.*" matches "allowed/#" but not "#"
    assert codes == [1, failure, 2, failure]
    _ping_ok(raw)


@both_versions
def test_shared_subscription_checks_the_filter_after_the_group(basic_broker, clients, version):
    raw = _connected_raw(clients, basic_broker, version, RULES_USER, RULES_PASSWORD)
    failure = NOT_AUTHORIZED if version == V5 else V3_SUBACK_FAILURE
    codes = raw.subscribe(
        [
            (f"$share/grp/allowed/{uid()}", 1),  # filter allowed/... -> granted
            (f"$share/allowed/denied/{uid()}", 1),  # group "allowed", filter denied/...
        ]
    )
    assert codes == [1, failure]


@both_versions
def test_will_topic_must_be_publishable(basic_broker, clients, version):
    raw = _raw(clients, basic_broker, version)
    will = rm.Will(f"denied/{uid()}", b"bye", qos=1)
    connack = try_connect(raw, f"will-{uid()}", RULES_USER, RULES_PASSWORD, will)
    expect_refused(raw, connack, refusal_code(version))
    raw = _raw(clients, basic_broker, version)
    will = rm.Will(f"allowed/{uid()}", b"bye", qos=1)
    connack = try_connect(raw, f"will-{uid()}", RULES_USER, RULES_PASSWORD, will)
    assert connack.reason == 0


def test_basic_over_mqtts(basic_broker, pki):
    port = ssl_port(basic_broker)
    ctx = client_context(pki.ca_pem)
    raw = tls_raw(port, ctx, V5)
    try:
        client_id = f"tls-bad-{uid()}"
        expect_refused(raw, try_connect(raw, client_id, USER, "wrong"), NOT_AUTHORIZED)
    finally:
        raw.close()
    record = wait_for_unauthorized(_data(basic_broker), lambda r: r["clientId"] == client_id)
    assert record["tlsUsed"] is True
    raw = tls_raw(port, ctx, V5)
    try:
        assert try_connect(raw, f"tls-ok-{uid()}", USER, PASSWORD).reason == 0
        raw.publish(f"denied/{uid()}", b"x", qos=1, packet_id=2)
        assert raw.expect(rm.PUBACK).reason == NOT_AUTHORIZED
        raw.publish(f"sensors/{uid()}", b"x", qos=1, packet_id=3)
        assert raw.expect(rm.PUBACK).reason < 0x80
    finally:
        raw.close()


@pytest.mark.parametrize(
    ("method", "code"),
    [("SCRAM-SHA-256", NOT_AUTHORIZED), ("FOO", BAD_AUTHENTICATION_METHOD)],
    ids=["scram-disabled", "unknown-method"],
)
def test_authentication_method_on_a_basic_broker(basic_broker, clients, method, code):
    """An Authentication Method bypasses Basic: SCRAM is disabled here (Not authorized),
    an unknown method is a Bad authentication method, even with valid Basic credentials."""
    raw = _raw(clients, basic_broker, V5)
    raw.send(
        connect_with_method(
            f"m-{uid()}", method, b"n,,n=x,r=abc", username=USER, password=PASSWORD.encode()
        )
    )
    expect_refused(raw, raw.expect(rm.CONNACK), code)


# --------------------------------------------------------------------------- strategy


@pytest.fixture(scope="module")
def _username_strategy_broker(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[BrokerProcess]:
    """Basic with SECURITY_MQTT_BASIC_STRATEGY=USERNAME and the unauthorized-clients log
    disabled."""
    base = tmp_path_factory.mktemp("auth-strategy")
    data = base / "data"
    add_basic(data, "--client-id", "strat-cid", "--pub", ".*", "--sub", ".*")
    add_basic(data, "--username", "strat-user", "--password", "pw", "--pub", ".*")
    add_basic(
        data, "--username", "strat-mix", "--client-id", "strat-mixcid", "--pub", ".*"
    )  # fmt: skip
    env = {
        **BASIC_ON,
        "SECURITY_MQTT_BASIC_STRATEGY": "USERNAME",
        "SECURITY_UNAUTH_CLIENTS_ENABLED": "false",
    }
    broker = _started(base, env)
    yield broker
    broker.stop()


@pytest.fixture
def strategy_broker(_username_strategy_broker: BrokerProcess) -> Iterator[BrokerProcess]:
    yield from watch_broker(_username_strategy_broker)


@both_versions
def test_username_strategy_ignores_client_id_credentials(strategy_broker, clients, version):
    _accepted(clients, strategy_broker, version, f"whatever-{uid()}", "strat-user", "pw")
    _refused(clients, strategy_broker, version, "strat-cid")
    _refused(clients, strategy_broker, version, "strat-mixcid", "strat-mix")


def test_unauthorized_log_disabled_records_nothing(start_broker, clients):
    broker = start_broker(**BASIC_ON, SECURITY_UNAUTH_CLIENTS_ENABLED="false")
    client_id = f"unrecorded-{uid()}"
    _refused(clients, broker, V5, client_id, "nobody", "wrong")
    # Records are written by the broker's database thread; a graceful stop drains it,
    # so after the stop whatever the refusal wrote is on disk.
    assert broker.stop() == 0
    assert unauthorized_records(_data(broker)) == []


def test_unauthorized_log_enabled_records_before_stop(start_broker, clients):
    """The counterpart of the test above: the same steps do leave a record when enabled."""
    broker = start_broker(**BASIC_ON)
    client_id = f"recorded-{uid()}"
    _refused(clients, broker, V5, client_id, "nobody", "wrong")
    assert broker.stop() == 0
    assert [r["clientId"] for r in unauthorized_records(_data(broker))] == [client_id]


# --------------------------------------------------------------------------- unauthorized log


def test_unauthorized_client_recorded_then_removed_on_success(basic_broker, clients):
    data = _data(basic_broker)
    client_id = f"intruder-{uid()}"
    _refused(clients, basic_broker, V5, client_id, USER, "guess")
    record = wait_for_unauthorized(data, lambda r: r["clientId"] == client_id)
    assert record["username"] == USER
    assert record["passwordProvided"] is True
    assert record["tlsUsed"] is False
    assert "127.0.0.1" in str(record["ipAddress"])
    assert isinstance(record["ts"], int | float) and record["ts"] > 0
    assert record["reason"], record
    # a later successful CONNECT of that client id removes its record
    _accepted(clients, basic_broker, V311, client_id, USER, PASSWORD)
    wait_for(
        lambda: all(r["clientId"] != client_id for r in unauthorized_records(data)),
        "the record to be removed",
    )


def test_unauthorized_record_without_password(basic_broker, clients):
    data = _data(basic_broker)
    client_id = f"nopw-{uid()}"
    _refused(clients, basic_broker, V311, client_id, "nobody-at-all")
    record = wait_for_unauthorized(data, lambda r: r["clientId"] == client_id)
    assert record["passwordProvided"] is False
    assert record["username"] == "nobody-at-all"


def test_unauthorized_clear(basic_broker, clients):
    data = _data(basic_broker)
    first, second = f"clear-a-{uid()}", f"clear-b-{uid()}"
    _refused(clients, basic_broker, V5, first)
    _refused(clients, basic_broker, V5, second)
    wait_for_unauthorized(data, lambda r: r["clientId"] == second)
    wait_for_unauthorized(data, lambda r: r["clientId"] == first)
    security_cli(data, "unauthorized", "clear", first)
    ids = {r["clientId"] for r in unauthorized_records(data)}
    assert first not in ids and second in ids
    security_cli(data, "unauthorized", "clear")
    assert unauthorized_records(data) == []


def test_blocked_refusal_is_not_recorded(basic_broker, clients):
    data = _data(basic_broker)
    blocked_id, refused_id = f"banned-{uid()}", f"after-ban-{uid()}"
    _refused(clients, basic_broker, V5, blocked_id, BANNED_USER, v5_code=BANNED)
    _refused(clients, basic_broker, V5, refused_id, "unknown-user")
    wait_for_unauthorized(data, lambda r: r["clientId"] == refused_id)
    assert all(r["clientId"] != blocked_id for r in unauthorized_records(data))


# --------------------------------------------------------------------------- blocked


@both_versions
def test_blocked_before_authentication(basic_broker, clients, version):
    """A blocked user is Banned even with valid credentials (checked first)."""
    _refused(clients, basic_broker, version, f"b-{uid()}", BANNED_USER, v5_code=BANNED)


@both_versions
@pytest.mark.parametrize(
    ("client_id", "username"),
    [
        ("blocked-cid", None),
        (f"fine-{uid()}", "blocked-user"),
        (f"evil-{uid()}", None),
    ],
    ids=["client-id", "username", "regex-client-id"],
)
def test_blocked_without_authentication(open_broker, clients, version, client_id, username):
    _refused(clients, open_broker, version, client_id, username, v5_code=BANNED)
    _accepted(clients, open_broker, version, f"fine-{uid()}", "someone")


@both_versions
@pytest.mark.parametrize("source", ["127.0.0.2", "127.0.0.3"], ids=["ip", "regex-ip"])
def test_blocked_ip_address(open_broker, version, source):
    with SourcedRawClient(open_broker.host, open_broker.port, version, source) as raw:
        connack = try_connect(raw, f"from-{source}-{uid()}")
        expect_refused(raw, connack, refusal_code(version, BANNED))
    with SourcedRawClient(open_broker.host, open_broker.port, version, "127.0.0.4") as raw:
        assert try_connect(raw, f"from-4-{uid()}").reason == 0


def test_expired_block_does_not_apply(open_broker, clients):
    _accepted(clients, open_broker, V5, "expired-block-cid")
    entries = blocked_entries(_data(open_broker))
    assert any("expired-block-cid" in json.dumps(e) for e in entries), entries


def test_block_added_and_removed_while_running(open_broker, clients):
    data = _data(open_broker)
    client_id = f"live-{uid()}"
    _accepted(clients, open_broker, V5, client_id)
    security_cli(data, "blocked", "add", "--client-id", client_id, "--for", "3600")

    def code() -> int:
        raw = _raw(clients, open_broker, V5)
        connack = try_connect(raw, client_id)
        raw.close()
        return connack.reason  # type: ignore[return-value]

    wait_for(lambda: code() == BANNED, f"{client_id} to be banned")
    assert any(e.get("clientId") == client_id for e in blocked_entries(data))
    security_cli(data, "blocked", "remove", f"CLIENT_ID|{client_id}")
    wait_for(lambda: code() == 0, f"{client_id} to be accepted again")


# --------------------------------------------------------------------------- disabled


def test_authentication_disabled_warns_naming_every_listener(open_broker):
    lines = [line for line in open_broker.logs() if "authentication is disabled" in line]
    assert lines, "no startup warning that authentication is disabled"
    text = "\n".join(lines)
    assert "WARNING" in text
    assert f"tcp 127.0.0.1:{open_broker.port}" in text, text
    assert f"ws 127.0.0.1:{open_broker.ports['ws']}" in text, text


@both_versions
def test_authentication_disabled_allows_everything(open_broker, clients, version):
    topic = f"anything/{uid()}"
    sub = clients.connected(open_broker, version)
    assert sub.subscribe([("#", 1), (f"$share/g/{topic}", 1)]) == [1, 1]
    sub.unsubscribe("#")
    sub.subscribe(topic, 1)
    pub = clients.new(open_broker, version)
    pub.paho.username_pw_set("anyone", "anything")
    pub.will_set(f"wills/{uid()}", b"bye", qos=1)
    pub.connect()
    assert pub.publish(topic, b"free", qos=1) == 0
    assert sub.expect_message().payload == b"free"
