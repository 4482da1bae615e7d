"""The MQTTS (TLS) listener end to end: credentials formats, one-way and two-way TLS, trust,
revocation, protocol versions and cipher suites, explained handshake failures, and
interoperability with paho-mqtt, ``openssl s_client`` and mosquitto_pub / mosquitto_sub.

Certificates are generated at test time (see :mod:`tests.e2e.pki`).
"""

from __future__ import annotations

import queue
import re
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from . import rawmqtt as rm
from .helpers import V5, V311, BrokerProcess, ClientPool, both_versions, uid
from .pki import (
    DEFAULT_KEY_PASSWORD,
    KEY_PASSWORD,
    STORE_PASSWORD,
    Pki,
    client_context,
    expect_accepted,
    expect_rejected,
    handshake_failure,
    keytool_pkcs12_to_jks,
    keytool_truststore,
    mqtt_over_tls,
    openssl_pkcs12,
    pki_fixture,  # noqa: F401  (the session fixture ``pki``)
    require_keytool,
    s_client,
    ssl_port,
    tls_client,
    tls_env,
    tls_raw,
    write,
)

MOSQUITTO_SUB = shutil.which("mosquitto_sub")
MOSQUITTO_PUB = shutil.which("mosquitto_pub")
STDBUF = shutil.which("stdbuf")

needs_mosquitto = pytest.mark.skipif(
    not (MOSQUITTO_SUB and MOSQUITTO_PUB and STDBUF),
    reason="mosquitto_sub/mosquitto_pub (mosquitto-clients) and stdbuf are needed",
)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def _shared_tls_broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A broker with the default TLS settings of the tests: serverChain.pem (server + root CA)
    and a separate key, client auth left at its default (REQUESTED), a 1 s handshake
    timeout."""
    holder: dict[str, BrokerProcess] = {}
    base = tmp_path_factory.mktemp("tls-shared")

    def get() -> BrokerProcess:
        current = holder.get("broker")
        if current is None or not current.alive():
            if current is not None:
                current.stop()
            current = BrokerProcess(
                base / f"broker{len(holder)}", tls_env(pki, TLS_HANDSHAKE_TIMEOUT_SEC=1)
            ).start()
            holder["broker"] = current
        return current

    yield get
    if "broker" in holder:
        holder["broker"].stop()


@pytest.fixture
def tls_broker(_shared_tls_broker: Callable[[], BrokerProcess]) -> Iterator[BrokerProcess]:
    broker = _shared_tls_broker()
    mark = broker.log_mark()
    yield broker
    # pytest shows captured output only for failing tests
    print(f"broker log during the test ({broker!r}):")
    print("\n".join(broker.logs()[mark:][-200:]))
    if not broker.alive():
        pytest.fail(f"the TLS broker died during the test\n{broker.tail()}")


@pytest.fixture
def ssl_broker(
    start_broker: Callable[..., BrokerProcess], pki: Pki
) -> Callable[..., BrokerProcess]:
    """``ssl_broker(**env)``: a broker with the TLS listener (tls_env defaults + ``env``)."""

    def start(**env: Any) -> BrokerProcess:
        return start_broker(**tls_env(pki, **env))

    return start


def _connect_line(broker: BrokerProcess, client_id: str, since: int = 0) -> str:
    """The broker's connect log line of ``client_id`` (a prefix is enough)."""
    match = broker.wait_for_log(rf"{re.escape(client_id)}\S*.*\bconnected\b", 10, since)
    return match.string


def _ctx(pki: Pki, client: str | None = None, **kwargs: Any) -> ssl.SSLContext:
    return client_context(pki.ca_pem, pki.client(client) if client else None, **kwargs)


def _pubsub_ok(pool: ClientPool, broker: BrokerProcess, pki: Pki) -> None:
    """A fresh TLS subscriber/publisher pair can exchange a QoS 1 message."""
    topic = f"tls/health/{uid()}"
    sub = tls_client(pool, broker, pki.ca_pem)
    assert sub.subscribe(topic, 1) == [1]
    pub = tls_client(pool, broker, pki.ca_pem)
    pub.publish(topic, b"ok", qos=1)
    assert sub.expect_message().payload == b"ok"
    pub.disconnect()
    sub.disconnect()


# --------------------------------------------------------------------------- MQTT over TLS


@both_versions
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_pubsub_over_one_way_tls(tls_broker, clients, pki, version, qos):
    topic = f"tls/pubsub/{uid()}"
    sub = tls_client(clients, tls_broker, pki.ca_pem, version=version)
    assert sub.subscribe(topic, qos) == [qos]
    pub = tls_client(clients, tls_broker, pki.ca_pem, version=version)
    payloads = [f"m{i}-{'x' * i * 300}".encode() for i in range(5)]
    for payload in payloads:
        pub.publish(topic, payload, qos=qos)
    received = sub.expect_messages(len(payloads))
    assert [m.payload for m in received] == payloads
    assert {m.qos for m in received} == {qos}
    line = _connect_line(tls_broker, pub.client_id)
    assert re.search(r"\bssl\b", line), f"the connect line does not name the ssl listener: {line}"


def test_tls_and_tcp_clients_share_the_broker(tls_broker, clients, pki):
    topic = f"tls/mixed/{uid()}"
    tcp_sub = clients.connected(tls_broker, V311)
    tcp_sub.subscribe(topic, 1)
    tls_sub = tls_client(clients, tls_broker, pki.ca_pem, version=V311)
    tls_sub.subscribe(topic, 1)
    tls_client(clients, tls_broker, pki.ca_pem).publish(topic, b"from tls", qos=1)
    clients.connected(tls_broker, V5).publish(topic, b"from tcp", qos=1)
    for sub in (tcp_sub, tls_sub):
        assert sorted(m.payload for m in sub.expect_messages(2)) == [b"from tcp", b"from tls"]


def test_retained_message_and_session_over_tls(tls_broker, clients, pki):
    topic = f"tls/retained/{uid()}"
    pub = tls_client(clients, tls_broker, pki.ca_pem)
    pub.publish(topic, b"kept", qos=1, retain=True)
    sub = tls_client(clients, tls_broker, pki.ca_pem, version=V311)
    sub.subscribe(topic, 1)
    msg = sub.expect_message()
    assert (msg.payload, msg.retain) == (b"kept", True)
    pub.publish(topic, b"", qos=1, retain=True)


# --------------------------------------------------------------------------- server side


def test_server_presents_its_certificate_valid_for_localhost_and_ip(tls_broker, pki):
    port = ssl_port(tls_broker)
    for hostname in ("localhost", "127.0.0.1"):
        attempt = mqtt_over_tls(port, _ctx(pki), server_hostname=hostname)
        assert attempt.accepted, f"{hostname}: {attempt.error}"
        assert attempt.peer_der == pki.server.der


def test_default_protocol_accepts_tls12_and_tls13(tls_broker, pki):
    port = ssl_port(tls_broker)
    tls12 = expect_accepted(port, _ctx(pki, maximum=ssl.TLSVersion.TLSv1_2))
    assert tls12.version == "TLSv1.2"
    tls13 = expect_accepted(port, _ctx(pki, minimum=ssl.TLSVersion.TLSv1_3))
    assert tls13.version == "TLSv1.3"


# --------------------------------------------------------------------------- two-way TLS


@pytest.mark.parametrize("client", ["client1", "client-rsa"])
def test_server_chain_recipe_trusts_clients_of_the_appended_ca(tls_broker, clients, pki, client):
    """TBMQ guide: ``cat server.pem ca.pem > serverChain.pem``; a client signed by ca.pem is
    accepted and its subject is logged on the connect line."""
    assert pki.server_chain_pem.read_bytes() == (
        pki.server_pem.read_bytes() + pki.ca_pem.read_bytes()
    )
    ident = pki.client1 if client == "client1" else pki.client_rsa
    mark = tls_broker.log_mark()
    c = tls_client(clients, tls_broker, pki.ca_pem, pki.client(client))
    line = _connect_line(tls_broker, c.client_id, mark)
    assert ident.subject in line, f"subject {ident.subject!r} not on the connect line: {line}"
    assert re.search(r"\bssl\b", line), line
    topic = f"tls/mutual/{uid()}"
    c.subscribe(topic, 1)
    c.publish(topic, b"me", qos=1)
    assert c.expect_message().payload == b"me"


def test_intermediate_issued_client_sending_its_chain_is_accepted(tls_broker, clients, pki):
    cert, _ = pki.client("client-int")
    assert cert.read_bytes().count(b"BEGIN CERTIFICATE") == 2, "leaf + intermediate expected"
    mark = tls_broker.log_mark()
    c = tls_client(clients, tls_broker, pki.ca_pem, pki.client("client-int"))
    assert pki.client_int.subject in _connect_line(tls_broker, c.client_id, mark)


def test_client_without_certificate_is_accepted_when_requested(tls_broker, clients, pki):
    mark = tls_broker.log_mark()
    c = tls_client(clients, tls_broker, pki.ca_pem)
    line = _connect_line(tls_broker, c.client_id, mark)
    assert "CN=" not in line, f"no certificate was presented: {line}"


def test_client_of_a_foreign_ca_is_rejected(tls_broker, pki):
    expect_rejected(tls_broker, ssl_port(tls_broker), _ctx(pki, "client2"), "unknown CA")


def test_expired_client_certificate_is_rejected(tls_broker, pki):
    expect_rejected(tls_broker, ssl_port(tls_broker), _ctx(pki, "client-expired"), "expired")


def test_foreign_ca_rejected_on_tls12_too(tls_broker, pki):
    ctx = _ctx(pki, "client2", maximum=ssl.TLSVersion.TLSv1_2)
    attempt = expect_rejected(tls_broker, ssl_port(tls_broker), ctx, "unknown CA")
    assert not attempt.handshake_done, "with TLS 1.2 the handshake itself must fail"


def test_required_client_auth(ssl_broker, pki):
    broker = ssl_broker(LISTENER_SSL_CLIENT_AUTH="REQUIRED")
    port = ssl_port(broker)
    expect_rejected(broker, port, _ctx(pki), "no client certificate")
    expect_rejected(
        broker, port, _ctx(pki, maximum=ssl.TLSVersion.TLSv1_2), "no client certificate"
    )
    expect_rejected(broker, port, _ctx(pki, "client2"), "unknown CA")
    mark = broker.log_mark()
    accepted = expect_accepted(port, _ctx(pki, "client1"), client_id="required-ok")
    assert accepted.peer_der == pki.server.der
    assert pki.client1.subject in _connect_line(broker, "required-ok", mark)


def test_client_auth_none_does_not_ask_for_a_certificate(ssl_broker, pki):
    broker = ssl_broker(LISTENER_SSL_CLIENT_AUTH="NONE")
    mark = broker.log_mark()
    # a certificate from an untrusted CA is not even requested, so nothing fails
    expect_accepted(ssl_port(broker), _ctx(pki, "client2"), client_id="none-ok")
    line = _connect_line(broker, "none-ok", mark)
    assert "CN=client2" not in line, line


def test_cert_file_without_the_ca_does_not_trust_its_clients(ssl_broker, pki):
    """Only the certificates in the PEM cert file are anchors: server.pem alone does not make
    clients of the root CA trusted (hence the serverChain.pem recipe)."""
    broker = ssl_broker(LISTENER_SSL_PEM_CERT=str(pki.server_pem))
    port = ssl_port(broker)
    expect_accepted(port, _ctx(pki))
    expect_rejected(broker, port, _ctx(pki, "client1"), "unknown CA")


# --------------------------------------------------------------------------- truststore


def test_separate_pem_truststore_alone_decides(ssl_broker, pki):
    broker = ssl_broker(LISTENER_SSL_TRUSTSTORE=str(pki.ca2_pem))
    port = ssl_port(broker)
    mark = broker.log_mark()
    expect_accepted(port, _ctx(pki, "client2"), client_id="trusted-ca2")
    assert pki.client2.subject in _connect_line(broker, "trusted-ca2", mark)
    # the root CA is in the cert file (serverChain.pem) but not in the truststore
    expect_rejected(broker, port, _ctx(pki, "client1"), "unknown CA")
    # the server side is unchanged
    assert expect_accepted(port, _ctx(pki)).peer_der == pki.server.der


def test_pkcs12_truststore(ssl_broker, pki, tmp_path):
    store = pki.pkcs12_truststore(tmp_path / "trust.p12", [pki.ca2.cert])
    broker = ssl_broker(
        LISTENER_SSL_TRUSTSTORE=str(store),
        LISTENER_SSL_TRUSTSTORE_TYPE="PKCS12",
        LISTENER_SSL_TRUSTSTORE_PASSWORD=STORE_PASSWORD,
    )
    port = ssl_port(broker)
    expect_accepted(port, _ctx(pki, "client2"))
    expect_rejected(broker, port, _ctx(pki, "client1"), "unknown CA")


def test_jks_truststore_from_keytool(ssl_broker, pki, tmp_path):
    store = keytool_truststore(tmp_path / "trust.jks", {"ca2": pki.ca2_pem})
    broker = ssl_broker(
        LISTENER_SSL_TRUSTSTORE=str(store),
        LISTENER_SSL_TRUSTSTORE_TYPE="JKS",
        LISTENER_SSL_TRUSTSTORE_PASSWORD=STORE_PASSWORD,
    )
    port = ssl_port(broker)
    expect_accepted(port, _ctx(pki, "client2"))
    expect_rejected(broker, port, _ctx(pki, "client1"), "unknown CA")


# --------------------------------------------------------------------------- revocation


def test_revoked_client_is_rejected(ssl_broker, pki):
    broker = ssl_broker(LISTENER_SSL_CRL=str(pki.crl_pem))
    port = ssl_port(broker)
    expect_rejected(broker, port, _ctx(pki, "client-revoked"), "revoked")
    expect_rejected(
        broker, port, _ctx(pki, "client-revoked", maximum=ssl.TLSVersion.TLSv1_2), "revoked"
    )
    expect_accepted(port, _ctx(pki, "client1"))
    expect_accepted(port, _ctx(pki))


def test_crl_bundle_with_an_intermediate_ca_crl(ssl_broker, pki):
    """A CRL bundle with one CRL per client-issuing CA, including the intermediate CA whose
    certificate arrives in the client's chain (it is not itself a trust anchor)."""
    broker = ssl_broker(LISTENER_SSL_CRL=str(pki.crl_bundle_pem))
    port = ssl_port(broker)
    expect_accepted(port, _ctx(pki, "client-int"))
    expect_accepted(port, _ctx(pki, "client1"))
    expect_rejected(broker, port, _ctx(pki, "client-revoked"), "revoked")


# --------------------------------------------------------------------------- protocol, ciphers


def test_tls13_only_refuses_a_tls12_client(ssl_broker, pki):
    broker = ssl_broker(LISTENER_SSL_PROTOCOL="TLSv1.3")
    port = ssl_port(broker)
    attempt = expect_rejected(
        broker, port, _ctx(pki, maximum=ssl.TLSVersion.TLSv1_2), "protocol version"
    )
    assert not attempt.handshake_done
    assert expect_accepted(port, _ctx(pki, "client1")).version == "TLSv1.3"


def test_tls13_only_with_openssl_s_client(ssl_broker, pki):
    broker = ssl_broker(LISTENER_SSL_PROTOCOL="TLSv1.3")
    port = ssl_port(broker)
    mark = broker.log_mark()
    refused = s_client(port, "-CAfile", str(pki.ca_pem), "-tls1_2")
    assert refused.returncode != 0, refused.stdout
    assert "Cipher is (NONE)" in refused.stdout, refused.stdout
    broker.wait_for_log(
        r"TLS handshake from 127\.0\.0\.1:\d+ failed on ssl: (?i:.*protocol version)",
        since=mark,
    )
    ok = s_client(port, "-CAfile", str(pki.ca_pem), "-tls1_3", "-verify_return_error")
    assert ok.returncode == 0, ok.stdout
    assert "Verify return code: 0 (ok)" in ok.stdout
    assert "TLSv1.3" in ok.stdout


@pytest.mark.parametrize(
    ("configured", "negotiated"),
    [
        ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256"),
        ("ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384"),
        (
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, "
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            "ECDHE-ECDSA-CHACHA20-POLY1305",
        ),
    ],
    ids=["iana-name", "openssl-name", "list"],
)
def test_enabled_cipher_suites(ssl_broker, pki, configured, negotiated):
    broker = ssl_broker(LISTENER_SSL_ENABLED_CIPHER_SUITES=configured)
    port = ssl_port(broker)
    tls12 = ssl.TLSVersion.TLSv1_2
    attempt = expect_accepted(port, _ctx(pki, maximum=tls12, ciphers=negotiated))
    assert attempt.cipher == negotiated
    # a TLS 1.2 client offering only a suite that is not enabled cannot connect
    other = "ECDHE-ECDSA-AES128-SHA256"
    refused = mqtt_over_tls(port, _ctx(pki, maximum=tls12, ciphers=other))
    assert not refused.accepted and not refused.handshake_done, refused


# --------------------------------------------------------------------------- credentials


@pytest.mark.parametrize(
    ("kind", "fmt", "password"),
    [
        ("ec", "pkcs8", None),
        ("ec", "traditional", None),
        ("ec", "pkcs8", KEY_PASSWORD),
        ("ec", "traditional", KEY_PASSWORD),
        ("rsa", "traditional", KEY_PASSWORD),
        ("rsa", "pkcs8", KEY_PASSWORD),
        ("ec", "pkcs8", "default"),
    ],
    ids=[
        "ec-pkcs8",
        "ec-traditional",
        "ec-pkcs8-encrypted",
        "ec-traditional-encrypted",
        "rsa-traditional-encrypted",
        "rsa-pkcs8-encrypted",
        "default-password",
    ],
)
def test_pem_with_separate_key(ssl_broker, pki, tmp_path, kind, fmt, password):
    ident = pki.server_rsa if kind == "rsa" else pki.server
    env: dict[str, Any] = {}
    if password == "default":
        key = write(tmp_path / "key.pem", ident.key_pem(fmt, DEFAULT_KEY_PASSWORD))
    else:
        key = write(tmp_path / "key.pem", ident.key_pem(fmt, password))
        if password:
            env["LISTENER_SSL_PEM_KEY_PASSWORD"] = password
    text = key.read_text()
    if fmt == "traditional":
        assert f"BEGIN {kind.upper()} PRIVATE KEY" in text
        assert ("Proc-Type: 4,ENCRYPTED" in text) == bool(password)
    else:
        assert ("BEGIN ENCRYPTED PRIVATE KEY" in text) == bool(password)
    cert = write(tmp_path / "chain.pem", ident.cert_pem(), pki.ca_pem.read_bytes())
    broker = ssl_broker(LISTENER_SSL_PEM_CERT=str(cert), LISTENER_SSL_PEM_KEY=str(key), **env)
    port = ssl_port(broker)
    assert expect_accepted(port, _ctx(pki)).peer_der == ident.der
    expect_accepted(port, _ctx(pki, "client1"))


@pytest.mark.parametrize(
    ("kind", "fmt", "key_first"),
    [("ec", "pkcs8", False), ("ec", "traditional", False), ("rsa", "traditional", True)],
    ids=["ec-pkcs8-encrypted", "ec-traditional-encrypted", "rsa-traditional-encrypted-first"],
)
def test_pem_with_encrypted_key_inside_the_cert_file(
    ssl_broker, pki, tmp_path, kind, fmt, key_first
):
    ident = pki.server_rsa if kind == "rsa" else pki.server
    key = ident.key_pem(fmt, KEY_PASSWORD)
    certs = ident.cert_pem() + pki.ca_pem.read_bytes()
    bundle = write(tmp_path / "bundle.pem", *((key, certs) if key_first else (certs, key)))
    # LISTENER_SSL_PEM_KEY must be ignored when the cert file holds the key: point it at a
    # key that does not match
    decoy = write(tmp_path / "decoy_key.pem", pki.server2.key_pem())
    broker = ssl_broker(
        LISTENER_SSL_PEM_CERT=str(bundle),
        LISTENER_SSL_PEM_KEY=str(decoy),
        LISTENER_SSL_PEM_KEY_PASSWORD=KEY_PASSWORD,
    )
    port = ssl_port(broker)
    assert expect_accepted(port, _ctx(pki)).peer_der == ident.der
    expect_accepted(port, _ctx(pki, "client1"))


def _keystore_env(store: Path, store_type: str, **extra: Any) -> dict[str, Any]:
    env = {
        "LISTENER_SSL_CREDENTIALS_TYPE": "KEYSTORE",
        "LISTENER_SSL_KEY_STORE_TYPE": store_type,
        "LISTENER_SSL_KEY_STORE": str(store),
        "LISTENER_SSL_KEY_STORE_PASSWORD": STORE_PASSWORD,
        "LISTENER_SSL_KEY_PASSWORD": STORE_PASSWORD,
        "LISTENER_SSL_KEY_ALIAS": "",
    }
    env.update(extra)
    return env


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_pkcs12_keystore(ssl_broker, pki, tmp_path, kind):
    ident = pki.server_rsa if kind == "rsa" else pki.server
    store = pki.pkcs12(tmp_path / "server.p12", ident)
    broker = ssl_broker(**_keystore_env(store, "PKCS12"))
    port = ssl_port(broker)
    assert expect_accepted(port, _ctx(pki)).peer_der == ident.der
    # the root CA of the key entry's chain is a trust anchor for clients
    expect_accepted(port, _ctx(pki, "client1"))
    expect_rejected(broker, port, _ctx(pki, "client2"), "unknown CA")


def test_pkcs12_keystore_from_openssl_cli(ssl_broker, pki, tmp_path):
    store = openssl_pkcs12(tmp_path / "server.p12", pki.server_pem, pki.server_key, pki.ca_pem)
    broker = ssl_broker(**_keystore_env(store, "PKCS12", LISTENER_SSL_KEY_ALIAS="server"))
    port = ssl_port(broker)
    assert expect_accepted(port, _ctx(pki)).peer_der == pki.server.der
    expect_accepted(port, _ctx(pki, "client1"))


@pytest.fixture(scope="module")
def jks_keystore(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JKS made by keytool from a PKCS#12: key entry 'server' (key password differs from
    the store password) + trusted certificate entry 'ca2'."""
    base = tmp_path_factory.mktemp("jks")
    p12 = pki.pkcs12(base / "server.p12", pki.server)
    jks = keytool_pkcs12_to_jks(p12, base / "server.jks", key_password=KEY_PASSWORD)
    return keytool_truststore(jks, {"ca2": pki.ca2_pem}, fresh=False)


def test_jks_keystore_from_keytool(ssl_broker, pki, jks_keystore):
    broker = ssl_broker(
        **_keystore_env(
            jks_keystore,
            "JKS",
            LISTENER_SSL_KEY_ALIAS="server",
            LISTENER_SSL_KEY_PASSWORD=KEY_PASSWORD,
        )
    )
    port = ssl_port(broker)
    assert expect_accepted(port, _ctx(pki)).peer_der == pki.server.der
    # anchors: the root CA of the key entry's chain and the trusted entry 'ca2'
    expect_accepted(port, _ctx(pki, "client1"))
    expect_accepted(port, _ctx(pki, "client2"))


def test_jks_written_by_pytbmq_is_read_by_keytool_and_served(ssl_broker, pki, tmp_path):
    """Interop of pytbmq's own JKS writer (``pytbmq keystore`` tooling) with Java's keytool."""
    keystore = pytest.importorskip("pytbmq.tls.keystore")
    keytool = require_keytool()
    entry = keystore.KeyEntry("server", pki.server.key, (pki.server.cert, pki.root.cert))
    data = keystore.dump_jks([entry], [("ca2", pki.ca2.cert)], STORE_PASSWORD, KEY_PASSWORD)
    jks = write(tmp_path / "pytbmq.jks", data)
    listing = subprocess.run(
        [keytool, "-list", "-keystore", str(jks), "-storepass", STORE_PASSWORD],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert re.search(r"(?m)^server,.*PrivateKeyEntry", listing.stdout), listing.stdout
    assert re.search(r"(?m)^ca2,.*trustedCertEntry", listing.stdout), listing.stdout
    broker = ssl_broker(**_keystore_env(jks, "JKS", LISTENER_SSL_KEY_PASSWORD=KEY_PASSWORD))
    port = ssl_port(broker)
    assert expect_accepted(port, _ctx(pki)).peer_der == pki.server.der
    expect_accepted(port, _ctx(pki, "client1"))
    expect_accepted(port, _ctx(pki, "client2"))


# --------------------------------------------------------------------------- failures


def test_plain_mqtt_on_the_tls_port_is_explained(tls_broker, pki):
    mark = tls_broker.log_mark()
    with socket.create_connection(("127.0.0.1", ssl_port(tls_broker)), timeout=5) as sock:
        local_port = sock.getsockname()[1]
        sock.sendall(rm.connect(f"plain-{uid()}", version=4))
        received = b""
        while True:
            try:
                chunk = sock.recv(4096)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            received += chunk
    assert not received.startswith(b"\x20"), f"a CONNACK came back over plain TCP: {received!r}"
    tls_broker.wait_for_log(handshake_failure(local_port, "not TLS"), since=mark)


def test_silent_client_times_out(tls_broker):
    """TLS_HANDSHAKE_TIMEOUT_SEC=1 on the shared broker: a client that never says hello is
    disconnected and the reason is logged."""
    mark = tls_broker.log_mark()
    with socket.create_connection(("127.0.0.1", ssl_port(tls_broker)), timeout=8) as sock:
        local_port = sock.getsockname()[1]
        try:
            data = sock.recv(4096)
        except ConnectionResetError:
            data = b""
        except TimeoutError:
            pytest.fail("the broker kept a silent connection open for 8 s")
        assert data == b""
    # the failure is logged when the broker gives up, i.e. by the time we saw the close
    tls_broker.wait_for_log(handshake_failure(local_port, "timed out"), timeout=3, since=mark)


def test_failed_handshakes_do_not_disturb_connected_clients(tls_broker, clients, pki):
    topic = f"tls/bystander/{uid()}"
    sub = tls_client(clients, tls_broker, pki.ca_pem, pki.client("client1"))
    sub.subscribe(topic, 1)
    pub = tls_client(clients, tls_broker, pki.ca_pem, version=V311)
    tcp_sub = clients.connected(tls_broker, V5)
    tcp_sub.subscribe(topic, 1)
    port = ssl_port(tls_broker)

    expect_rejected(tls_broker, port, _ctx(pki, "client2"), "unknown CA")
    expect_rejected(tls_broker, port, _ctx(pki, "client-expired"), "expired")
    # a client that does not trust the server aborts the handshake itself
    untrusting = client_context(pki.ca2_pem)
    assert not mqtt_over_tls(port, untrusting).accepted
    # random bytes, then a connection dropped in the middle of the handshake
    for junk in (b"\x16\x03\x01\x02\x00" + b"\x00" * 40, b"GET / HTTP/1.1\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(junk)

    for i in range(3):
        pub.publish(topic, f"after-{i}".encode(), qos=1)
    expected = [f"after-{i}".encode() for i in range(3)]
    assert [m.payload for m in sub.expect_messages(3)] == expected
    assert [m.payload for m in tcp_sub.expect_messages(3)] == expected
    assert sub.connected and pub.connected and tcp_sub.connected
    _pubsub_ok(clients, tls_broker, pki)


def test_ssl_max_payload_size(ssl_broker, clients, pki):
    broker = ssl_broker(SSL_NETTY_MAX_PAYLOAD_SIZE=1024)
    topic = f"tls/big/{uid()}"
    sub = tls_client(clients, broker, pki.ca_pem)
    sub.subscribe(topic, 1)
    with tls_raw(ssl_port(broker), _ctx(pki), V5) as raw:
        connack = raw.connect(f"big-{uid()}")
        assert connack.prop(rm.MAXIMUM_PACKET_SIZE) == 1024
        raw.try_send(rm.publish(topic, b"x" * 4000, qos=1, packet_id=1, version=V5))
        packets = raw.read_until_closed(timeout=10)
        assert [(p.type, p.reason) for p in packets] == [(rm.DISCONNECT, 0x95)]
    small = tls_client(clients, broker, pki.ca_pem)
    small.publish(topic, b"fits", qos=1)
    assert sub.expect_message().payload == b"fits", "the oversize message was routed"
    # the TCP listener keeps its own limit
    assert clients.new(broker, V5).connect().prop("MaximumPacketSize") == 65536


# --------------------------------------------------------------------------- openssl s_client


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_openssl_s_client_verifies_the_server(tls_broker, pki, version):
    result = s_client(
        ssl_port(tls_broker),
        "-CAfile",
        str(pki.ca_pem),
        "-verify_return_error",
        "-verify_hostname",
        "localhost",
        version,
    )
    assert result.returncode == 0, result.stdout
    assert "Verify return code: 0 (ok)" in result.stdout
    assert ("TLSv1.3" if version == "-tls1_3" else "TLSv1.2") in result.stdout


def test_openssl_s_client_mutual_tls(ssl_broker, pki):
    broker = ssl_broker(LISTENER_SSL_CLIENT_AUTH="REQUIRED")
    port = ssl_port(broker)
    cert, key = pki.client("client1")
    ok = s_client(port, "-CAfile", str(pki.ca_pem), "-cert", str(cert), "-key", str(key))
    assert ok.returncode == 0, ok.stdout
    assert "Verify return code: 0 (ok)" in ok.stdout
    cert2, key2 = pki.client("client2")
    mark = broker.log_mark()
    refused = s_client(
        port, "-CAfile", str(pki.ca_pem), "-cert", str(cert2), "-key", str(key2), "-tls1_2"
    )
    assert refused.returncode != 0, refused.stdout
    broker.wait_for_log(
        r"TLS handshake from 127\.0\.0\.1:\d+ failed on ssl: (?i:.*unknown CA)", since=mark
    )


# --------------------------------------------------------------------------- mosquitto clients


def _mosquitto(tool: str | None, port: int, pki: Pki, client: str | None, *args: str) -> list[str]:
    """A mosquitto_pub/_sub command line over TLS (server verified, no --insecure)."""
    assert tool
    command = [tool, "-h", "127.0.0.1", "-p", str(port), "--cafile", str(pki.ca_pem)]
    if client:
        cert, key = pki.client(client)
        command += ["--cert", str(cert), "--key", str(key)]
    return [*command, *args]


@needs_mosquitto
def test_mosquitto_pub_one_way_tls(tls_broker, clients, pki):
    topic = f"tls/mosquitto/{uid()}"
    sub = tls_client(clients, tls_broker, pki.ca_pem)
    sub.subscribe(topic, 1)
    result = subprocess.run(
        _mosquitto(
            MOSQUITTO_PUB,
            ssl_port(tls_broker),
            pki,
            None,
            *("-V", "mqttv311", "-q", "1", "-t", topic, "-m", "hello over tls"),
        ),
        capture_output=True,
        text=True,
        timeout=20,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert sub.expect_message().payload == b"hello over tls"


@needs_mosquitto
@pytest.mark.parametrize("proto", ["mqttv311", "mqttv5"])
def test_mosquitto_mutual_tls_round_trip(ssl_broker, pki, proto):
    broker = ssl_broker(LISTENER_SSL_CLIENT_AUTH="REQUIRED")
    port = ssl_port(broker)
    topic = f"tls/mosquitto/{uid()}"
    assert STDBUF
    mark = broker.log_mark()
    sub = subprocess.Popen(
        [
            STDBUF,
            "-oL",
            *_mosquitto(
                MOSQUITTO_SUB,
                port,
                pki,
                "client1",
                *("-V", proto, "-i", f"msub-{uid()}", "-t", topic, "-q", "1"),
                *("-v", "-C", "1", "-W", "15", "-d"),
            ),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def drain() -> None:
        assert sub.stdout is not None
        for line in iter(sub.stdout.readline, ""):
            lines.put(line.rstrip("\n"))
        lines.put(None)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    seen: list[str] = []

    def wait_line(predicate: Callable[[str], bool]) -> str:
        while True:
            try:
                line = lines.get(timeout=15)
            except queue.Empty:
                raise AssertionError(f"mosquitto_sub said nothing matching: {seen}") from None
            if line is None:
                raise AssertionError(f"mosquitto_sub ended: {seen}")
            seen.append(line)
            if predicate(line):
                return line

    try:
        wait_line(lambda line: "SUBACK" in line)
        pub = subprocess.run(
            _mosquitto(
                MOSQUITTO_PUB,
                port,
                pki,
                "client1",
                *("-V", proto, "-q", "1", "-t", topic, "-m", "mutual"),
            ),
            capture_output=True,
            text=True,
            timeout=20,
            stdin=subprocess.DEVNULL,
        )
        assert pub.returncode == 0, pub.stderr + pub.stdout
        assert wait_line(lambda line: line.startswith(topic)) == f"{topic} mutual"
        assert sub.wait(15) == 0
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait(5)
        reader.join(5)
    assert pki.client1.subject in _connect_line(broker, "msub-", mark)

    # without a client certificate mosquitto_pub is refused
    mark = broker.log_mark()
    refused = subprocess.run(
        _mosquitto(MOSQUITTO_PUB, port, pki, None, "-V", proto, "-q", "1", "-t", topic, "-m", "x"),
        capture_output=True,
        text=True,
        timeout=20,
        stdin=subprocess.DEVNULL,
    )
    assert refused.returncode != 0, refused.stdout + refused.stderr
    broker.wait_for_log(
        r"TLS handshake from 127\.0\.0\.1:\d+ failed on ssl: (?i:.*no client certificate)",
        since=mark,
    )
