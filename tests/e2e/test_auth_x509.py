"""X.509 client-certificate authentication end to end (TBMQ's "X.509 Certificate chain"
provider): exact and regex CN credentials, TBMQ's substring (FIND) versus strict (FULL) CN
matching, the chain walk over the certificates the client sends with rules taken from
``authRulesMapping`` keys matched on the leaf CN, ``${cn}`` in rules, expired client
certificates with and without the validity check, the provider order, and plain TCP
where the provider does not apply.

Certificates come from the test PKI (:mod:`tests.e2e.pki`): ``client1``, ``client-rsa``,
``client-expired``, ``client-revoked`` are issued by the root CA, ``client-int`` by the
intermediate CA "pytbmq test intermediate CA".
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from . import rawmqtt as rm
from .helpers import V5, V311, BrokerProcess, both_versions, uid
from .pki import (
    Pki,
    client_context,
    expect_rejected,
    pki_fixture,  # noqa: F401  (the session fixture ``pki``)
    ssl_port,
    tls_client,
    tls_env,
    tls_raw,
    write,
)
from .scram_client import (
    NOT_AUTHORIZED,
    add_credentials,
    expect_refused,
    refusal_code,
    security_cli,
    try_connect,
    wait_for_unauthorized,
    watch_broker,
)

MOSQUITTO_PUB = shutil.which("mosquitto_pub")

INTERMEDIATE_CN = "pytbmq test intermediate CA"
DOTTED_CN = "dev.1(a)"  # regex metacharacters in a CN
ORDER_USER = "order-user"  # a Basic credential (no password) with rules basic/.*

#: The chain credential: it names the intermediate CA's CN; its rules come from mapping
#: keys matched on the LEAF CN ("intermediate" matches only the intermediate's CN, so its
#: rules must not be granted to the leaf).
CHAIN_CREDENTIAL = {
    "name": "chain-by-intermediate",
    "clientType": "DEVICE",
    "credentialsType": "X_509",
    "credentialsValue": {
        "certCnPattern": INTERMEDIATE_CN,
        "certCnIsRegex": False,
        "authRulesMapping": {
            "^client-": {
                "pubAuthRulePatterns": ["devices/${cn}/.*"],
                "subAuthRulePatterns": ["devices/${cn}/.*"],
            },
            "intermediate": {
                "pubAuthRulePatterns": ["intermediate-only/.*"],
                "subAuthRulePatterns": ["intermediate-only/.*"],
            },
        },
    },
}


def _data(broker: BrokerProcess) -> Path:
    return broker.workdir / "data"


def add_x509(data: Path, *args: str) -> None:
    security_cli(data, "credentials", "add-x509", *args)


def _module_broker(
    tmp_path_factory: pytest.TempPathFactory, name: str, env: dict[str, Any], setup
) -> Iterator[BrokerProcess]:
    base = tmp_path_factory.mktemp(name)
    setup(base / "data")
    broker = BrokerProcess(base, env).start()
    yield broker
    broker.stop()


def _order_credentials(data: Path) -> None:
    security_cli(
        data, "credentials", "add-basic", "--username", ORDER_USER,
        "--pub", "basic/.*", "--sub", "basic/.*",
    )  # fmt: skip
    add_x509(data, "--cn", "client1", "--pub", "x509/.*", "--sub", "x509/.*")


# --------------------------------------------------------------------------- brokers


@pytest.fixture(scope="module")
def _find_broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """Basic and X.509 enabled, default order (BASIC,X_509), CN match FIND, validity
    checked."""

    def setup(data: Path) -> None:
        _order_credentials(data)
        add_x509(data, "--cn", "rsa", "--regex", "--pub", "regex/.*", "--sub", "regex/.*")
        add_credentials(data, CHAIN_CREDENTIAL)
        add_x509(data, "--cn", "client-expired", "--pub", "expired/.*")
        add_x509(data, "--cn", r"^dev\.", "--regex", "--pub", "devices/${cn}/.*")

    env = tls_env(
        pki, SECURITY_MQTT_BASIC_ENABLED="true", SECURITY_MQTT_SSL_ENABLED="true"
    )  # fmt: skip
    yield from _module_broker(tmp_path_factory, "x509-find", env, setup)


@pytest.fixture
def find_broker(_find_broker: BrokerProcess) -> Iterator[BrokerProcess]:
    yield from watch_broker(_find_broker)


@pytest.fixture(scope="module")
def _full_broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """Only X.509, SECURITY_MQTT_SSL_CN_MATCH=FULL, validity check skipped."""

    def setup(data: Path) -> None:
        add_x509(data, "--cn", "rsa", "--regex", "--pub", "regex/.*")
        add_x509(data, "--cn", r"client\d", "--regex", "--pub", "strict/.*")
        add_x509(data, "--cn", "client-expired", "--pub", "expired/.*")

    env = tls_env(
        pki,
        SECURITY_MQTT_SSL_ENABLED="true",
        SECURITY_MQTT_SSL_CN_MATCH="FULL",
        SECURITY_MQTT_SSL_SKIP_VALIDITY_CHECK_FOR_CLIENT_CERT="true",
    )
    yield from _module_broker(tmp_path_factory, "x509-full", env, setup)


@pytest.fixture
def full_broker(_full_broker: BrokerProcess) -> Iterator[BrokerProcess]:
    yield from watch_broker(_full_broker)


@pytest.fixture(scope="module")
def _x509_first_broker(
    pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerProcess]:
    """Basic and X.509 enabled with SECURITY_MQTT_AUTH_PRIORITY=X_509,BASIC."""
    env = tls_env(
        pki,
        SECURITY_MQTT_BASIC_ENABLED="true",
        SECURITY_MQTT_SSL_ENABLED="true",
        SECURITY_MQTT_AUTH_PRIORITY="X_509,BASIC",
    )
    yield from _module_broker(tmp_path_factory, "x509-first", env, _order_credentials)


@pytest.fixture
def x509_first_broker(_x509_first_broker: BrokerProcess) -> Iterator[BrokerProcess]:
    yield from watch_broker(_x509_first_broker)


# --------------------------------------------------------------------------- helpers


def _cert(pki: Pki, cn: str | None) -> tuple[Path, Path] | None:
    return pki.client(cn) if cn else None


def _tls(broker: BrokerProcess, pki: Pki, cn: str | None, version: int = V5) -> rm.RawClient:
    """A raw MQTT client over TLS presenting client certificate ``cn`` (None: none)."""
    return tls_raw(ssl_port(broker), client_context(pki.ca_pem, _cert(pki, cn)), version)


def _tls_with_files(
    broker: BrokerProcess, pki: Pki, files: tuple[Path, Path], version: int = V5
) -> rm.RawClient:
    return tls_raw(ssl_port(broker), client_context(pki.ca_pem, files), version)


def _connect_ok(raw: rm.RawClient, username: str | None = None) -> None:
    connack = try_connect(raw, f"x509-{uid()}", username)
    assert connack.reason == 0, f"CONNACK refused: {connack!r}"


def _pub(raw: rm.RawClient, topic: str, packet_id: int) -> int:
    """Publish QoS 1 (MQTT 5) and return the PUBACK reason code."""
    raw.publish(topic, b"x", qos=1, packet_id=packet_id)
    ack = raw.expect(rm.PUBACK)
    assert ack.packet_id == packet_id
    assert ack.reason is not None
    return ack.reason


def _allowed(code: int) -> bool:
    return code < 0x80  # 0x00 or 0x10 No matching subscribers


def _full_chain_files(pki: Pki, directory: Path) -> tuple[Path, Path]:
    """client-int's certificate file with leaf + intermediate + root, and its key."""
    cert = write(
        directory / "client-int-full-chain.pem",
        pki.client_int.cert_pem(with_chain=True),
        pki.root.cert_pem(),
    )
    assert cert.read_bytes().count(b"BEGIN CERTIFICATE") == 3
    return cert, pki.client("client-int")[1]


# --------------------------------------------------------------------------- exact / regex


@both_versions
def test_exact_cn(find_broker, pki, version):
    with _tls(find_broker, pki, "client1", version) as raw:
        _connect_ok(raw)
        failure = NOT_AUTHORIZED if version == V5 else 0x80
        assert raw.subscribe([(f"x509/{uid()}", 1), (f"other/{uid()}", 1)]) == [1, failure]
        if version == V5:
            assert _allowed(_pub(raw, f"x509/{uid()}", 1))
            assert _pub(raw, f"other/{uid()}", 2) == NOT_AUTHORIZED


def test_exact_cn_with_paho(find_broker, clients, pki):
    topic = f"x509/{uid()}"
    client = tls_client(clients, find_broker, pki.ca_pem, pki.client("client1"))
    assert client.subscribe(topic, 1) == [1]
    assert client.publish(topic, b"by certificate", qos=1) == 0
    assert client.expect_message().payload == b"by certificate"


def test_regex_cn_find_matches_a_substring(find_broker, pki):
    """TBMQ compiles the CN pattern and calls find(): "rsa" matches "client-rsa"."""
    with _tls(find_broker, pki, "client-rsa") as raw:
        _connect_ok(raw)
        assert _allowed(_pub(raw, f"regex/{uid()}", 1))
        assert _pub(raw, f"x509/{uid()}", 2) == NOT_AUTHORIZED


def test_regex_cn_full_mode_needs_the_whole_cn(full_broker, pki):
    with _tls(full_broker, pki, "client-rsa") as raw:  # "rsa" is only a substring
        expect_refused(raw, try_connect(raw, f"x509-{uid()}"), NOT_AUTHORIZED)
    with _tls(full_broker, pki, "client1") as raw:  # client\d matches all of "client1"
        _connect_ok(raw)
        assert _allowed(_pub(raw, f"strict/{uid()}", 1))
        assert _pub(raw, f"regex/{uid()}", 2) == NOT_AUTHORIZED


@both_versions
def test_certificate_without_matching_credentials_is_refused(full_broker, pki, version):
    with _tls(full_broker, pki, "client-revoked", version) as raw:  # valid, no credentials
        expect_refused(raw, try_connect(raw, f"x509-{uid()}"), refusal_code(version))


def test_tls_client_without_certificate_is_refused_by_x509_only(full_broker, pki):
    with _tls(full_broker, pki, None) as raw:
        expect_refused(raw, try_connect(raw, f"x509-{uid()}"), NOT_AUTHORIZED)


# --------------------------------------------------------------------------- chain and ${cn}


def test_chain_credential_names_the_intermediate(find_broker, pki, tmp_path):
    """client-int has no credentials of its own; the walk reaches the intermediate CA
    (exact CN credential). Rules come from the mapping keys matching the leaf CN
    "client-int": "^client-" applies, "intermediate" does not."""
    with _tls_with_files(find_broker, pki, _full_chain_files(pki, tmp_path)) as raw:
        _connect_ok(raw)
        assert _allowed(_pub(raw, f"devices/client-int/{uid()}", 1))
        assert _pub(raw, f"intermediate-only/{uid()}", 2) == NOT_AUTHORIZED
        codes = raw.subscribe(
            [("devices/client-int/#", 1), ("intermediate-only/x", 1), ("devices/+/x", 1)]
        )
        assert codes == [1, NOT_AUTHORIZED, NOT_AUTHORIZED]


def test_cn_placeholder_confines_a_client_to_its_own_topics(find_broker, pki, tmp_path):
    topic = f"devices/client-int/{uid()}"
    with _tls_with_files(find_broker, pki, _full_chain_files(pki, tmp_path)) as raw:
        _connect_ok(raw)
        assert _pub(raw, "devices/client1/telemetry", 1) == NOT_AUTHORIZED
        assert _pub(raw, "devices/client-intX/telemetry", 2) == NOT_AUTHORIZED
        assert _pub(raw, "devices/client/telemetry", 3) == NOT_AUTHORIZED
        assert raw.subscribe([(topic, 1)]) == [1]
        raw.publish(topic, b"mine", qos=0)  # QoS 0: no PUBACK to interleave
        pkt = raw.expect(rm.PUBLISH)
        assert (pkt.topic, pkt.payload) == (topic.encode(), b"mine")


def test_cn_placeholder_is_regex_escaped(find_broker, pki):
    """``${cn}`` becomes the quoted CN: for CN "dev.1(a)" the rule devices/${cn}/.* allows
    devices/dev.1(a)/... but not what the unquoted regex would match (devX1a, dev.1a)."""
    files = pki.add_client(DOTTED_CN)
    with _tls_with_files(find_broker, pki, files) as raw:
        _connect_ok(raw)
        assert _allowed(_pub(raw, f"devices/{DOTTED_CN}/t", 1))
        assert _pub(raw, "devices/devX1a/t", 2) == NOT_AUTHORIZED
        assert _pub(raw, "devices/dev.1a/t", 3) == NOT_AUTHORIZED


# --------------------------------------------------------------------------- validity


def test_expired_certificate_refused_at_handshake_and_recorded(find_broker, pki):
    port = ssl_port(find_broker)
    ctx = client_context(pki.ca_pem, pki.client("client-expired"))
    expect_rejected(find_broker, port, ctx, "expired")
    record = wait_for_unauthorized(
        _data(find_broker),
        lambda r: r["clientId"] == "" and r["tlsUsed"] is True,
    )
    assert "127.0.0.1" in str(record["ipAddress"]), record
    assert "TLS handshake" in record["reason"], record


def test_expired_certificate_accepted_with_skip_validity(full_broker, pki):
    with _tls(full_broker, pki, "client-expired") as raw:
        _connect_ok(raw)
        assert _allowed(_pub(raw, f"expired/{uid()}", 1))


# --------------------------------------------------------------------------- provider order


def test_default_order_basic_wins_for_a_tls_client_with_a_user_name(find_broker, pki):
    with _tls(find_broker, pki, "client1") as raw:
        _connect_ok(raw, ORDER_USER)
        assert _allowed(_pub(raw, f"basic/{uid()}", 1))
        assert _pub(raw, f"x509/{uid()}", 2) == NOT_AUTHORIZED


def test_x509_first_order_gives_the_certificate_rules(x509_first_broker, pki):
    with _tls(x509_first_broker, pki, "client1") as raw:
        _connect_ok(raw, ORDER_USER)
        assert _allowed(_pub(raw, f"x509/{uid()}", 1))
        assert _pub(raw, f"basic/{uid()}", 2) == NOT_AUTHORIZED
    # without a certificate the same user name falls through to Basic
    with _tls(x509_first_broker, pki, None) as raw:
        _connect_ok(raw, ORDER_USER)
        assert _allowed(_pub(raw, f"basic/{uid()}", 1))


# --------------------------------------------------------------------------- plain TCP


@both_versions
def test_x509_is_skipped_on_plain_tcp(find_broker, version):
    client_id = f"plain-{uid()}"
    with rm.RawClient(find_broker.host, find_broker.port, version) as raw:
        expect_refused(raw, try_connect(raw, client_id), refusal_code(version))
    record = wait_for_unauthorized(_data(find_broker), lambda r: r["clientId"] == client_id)
    assert record["tlsUsed"] is False
    # Basic still works there
    with rm.RawClient(find_broker.host, find_broker.port, version) as raw:
        assert try_connect(raw, f"plain-{uid()}", ORDER_USER).reason == 0


def test_refusal_on_tls_logged(find_broker, pki):
    client_id = f"tls-refused-{uid()}"
    mark = find_broker.log_mark()
    with _tls(find_broker, pki, None, V311) as raw:
        expect_refused(raw, try_connect(raw, client_id), refusal_code(V311))
    find_broker.wait_for_log(
        rf"client '{re.escape(client_id)}' from 127\.0\.0\.1:\d+ \(ssl, MQTT 3\.1\.1\) refused: "
        r"NOT_AUTHORIZED",
        since=mark,
    )


# --------------------------------------------------------------------------- mosquitto


@pytest.mark.skipif(not MOSQUITTO_PUB, reason="mosquitto_pub (mosquitto-clients) is needed")
def test_mosquitto_pub_with_a_client_certificate(find_broker, pki):
    cert, key = pki.client("client1")
    common = [
        MOSQUITTO_PUB, "-h", "localhost", "-p", str(ssl_port(find_broker)), "-V", "mqttv5",
        "--cafile", str(pki.ca_pem), "--cert", str(cert), "--key", str(key), "-q", "1",
    ]  # fmt: skip
    ok = subprocess.run(
        [*common, "-t", f"x509/{uid()}", "-m", "hi"], capture_output=True, text=True, timeout=15
    )
    assert ok.returncode == 0, ok.stderr + ok.stdout
    # a denied QoS 1 publish gets PUBACK 0x87, which mosquitto_pub reports
    denied = subprocess.run(
        [*common, "-t", f"other/{uid()}", "-m", "hi"], capture_output=True, text=True, timeout=15
    )
    assert "not authorized" in (denied.stderr + denied.stdout).lower(), denied
