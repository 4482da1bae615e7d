"""Reloading TLS material without a restart: on file change (LISTENER_SSL_RELOAD_INTERVAL_SEC)
and on SIGHUP. New handshakes use the new material, live connections stay up, and a failed
reload keeps the old material."""

from __future__ import annotations

import signal
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .helpers import BrokerProcess, ClientPool, MqttClient, uid
from .pki import (
    STORE_PASSWORD,
    Identity,
    Pki,
    client_context,
    expect_accepted,
    expect_rejected,
    pki_fixture,  # noqa: F401  (the session fixture ``pki``)
    replace_atomically,
    ssl_port,
    tls_client,
    tls_env,
    write,
)

RELOAD_TIMEOUT = 15.0
RELOADED = r"TLS material reloaded"
FAILED = r"(?i)reload failed.*keeping|keeping.*reload failed"


@pytest.fixture
def ssl_broker(
    start_broker: Callable[..., BrokerProcess], pki: Pki
) -> Callable[..., BrokerProcess]:
    def start(**env: Any) -> BrokerProcess:
        return start_broker(**tls_env(pki, **env))

    return start


class Material:
    """A server cert file (cert + root CA, the serverChain.pem recipe) and key file that a
    test can replace while the broker runs."""

    def __init__(self, pki: Pki, directory: Path, ident: Identity) -> None:
        self.pki = pki
        self.cert = write(directory / "serverChain.pem", ident.cert_pem(), pki.ca_pem.read_bytes())
        self.key = write(directory / "server_key.pem", ident.key_pem())

    def env(self, **extra: Any) -> dict[str, Any]:
        files = {"LISTENER_SSL_PEM_CERT": str(self.cert), "LISTENER_SSL_PEM_KEY": str(self.key)}
        return files | extra

    def replace(self, ident: Identity) -> None:
        replace_atomically(self.key, ident.key_pem())
        replace_atomically(self.cert, ident.cert_pem(), self.pki.ca_pem.read_bytes())


def _peer(broker: BrokerProcess, pki: Pki) -> bytes | None:
    return expect_accepted(ssl_port(broker), client_context(pki.ca_pem)).peer_der


def _live_pair(
    pool: ClientPool, broker: BrokerProcess, pki: Pki
) -> tuple[MqttClient, MqttClient, str]:
    topic = f"reload/{uid()}"
    sub = tls_client(pool, broker, pki.ca_pem, pki.client("client1"))
    assert sub.subscribe(topic, 1) == [1]
    pub = tls_client(pool, broker, pki.ca_pem)
    pub.publish(topic, b"before", qos=1)
    assert sub.expect_message().payload == b"before"
    return sub, pub, topic


def _still_live(sub: MqttClient, pub: MqttClient, topic: str, label: str) -> None:
    assert sub.connected and pub.connected, "a live connection was dropped by the reload"
    pub.publish(topic, label.encode(), qos=1)
    assert sub.expect_message().payload == label.encode()
    assert sub.disconnects.empty() and pub.disconnects.empty()


def _reloaded(broker: BrokerProcess, since: int) -> str:
    line = broker.wait_for_log(RELOADED, timeout=RELOAD_TIMEOUT, since=since).string
    assert "ssl" in line, f"the reload line does not name the listener: {line}"
    return line


def test_changed_cert_and_key_files_are_picked_up(ssl_broker, clients, pki, tmp_path):
    material = Material(pki, tmp_path, pki.server)
    broker = ssl_broker(**material.env(LISTENER_SSL_RELOAD_INTERVAL_SEC=1))
    assert _peer(broker, pki) == pki.server.der
    sub, pub, topic = _live_pair(clients, broker, pki)

    mark = broker.log_mark()
    material.replace(pki.server2)
    _reloaded(broker, mark)
    assert pki.server2.cert.serial_number != pki.server.cert.serial_number
    assert _peer(broker, pki) == pki.server2.der

    _still_live(sub, pub, topic, "after reload")
    newcomer = tls_client(clients, broker, pki.ca_pem, pki.client("client1"))
    newcomer.publish(topic, b"from a new connection", qos=1)
    assert sub.expect_message().payload == b"from a new connection"


@pytest.mark.parametrize("breakage", ["garbage-cert", "mismatched-key", "empty-key"])
def test_failed_reload_keeps_the_old_material(ssl_broker, clients, pki, tmp_path, breakage):
    material = Material(pki, tmp_path, pki.server)
    broker = ssl_broker(**material.env(LISTENER_SSL_RELOAD_INTERVAL_SEC=1))
    sub, pub, topic = _live_pair(clients, broker, pki)

    mark = broker.log_mark()
    if breakage == "garbage-cert":
        replace_atomically(material.cert, b"-----BEGIN CERTIFICATE-----\ngarbage\n")
    elif breakage == "mismatched-key":
        replace_atomically(material.key, pki.server2.key_pem())
    else:
        replace_atomically(material.key, b"")
    broker.wait_for_log(FAILED, timeout=RELOAD_TIMEOUT, since=mark)
    assert _peer(broker, pki) == pki.server.der
    _still_live(sub, pub, topic, "after a failed reload")

    # a later valid change is applied
    mark = broker.log_mark()
    material.replace(pki.server2)
    _reloaded(broker, mark)
    assert _peer(broker, pki) == pki.server2.der
    _still_live(sub, pub, topic, "after recovery")


def test_sighup_reloads(ssl_broker, clients, pki, tmp_path):
    material = Material(pki, tmp_path, pki.server)
    broker = ssl_broker(**material.env(LISTENER_SSL_RELOAD_INTERVAL_SEC=0))
    sub, pub, topic = _live_pair(clients, broker, pki)

    material.replace(pki.server2)
    # file watching is off: nothing changes until the signal
    assert _peer(broker, pki) == pki.server.der
    mark = broker.log_mark()
    broker.send_signal(signal.SIGHUP)
    _reloaded(broker, mark)
    assert _peer(broker, pki) == pki.server2.der
    _still_live(sub, pub, topic, "after SIGHUP")
    assert broker.alive()

    # a SIGHUP with broken material keeps the current one
    mark = broker.log_mark()
    replace_atomically(material.key, b"not a key\n")
    broker.send_signal(signal.SIGHUP)
    broker.wait_for_log(FAILED, timeout=RELOAD_TIMEOUT, since=mark)
    assert _peer(broker, pki) == pki.server2.der
    _still_live(sub, pub, topic, "after a failed SIGHUP reload")


def test_truststore_change_admits_a_new_ca(ssl_broker, clients, pki, tmp_path):
    trust = write(tmp_path / "trust.pem", pki.ca_pem.read_bytes())
    material = Material(pki, tmp_path, pki.server)
    broker = ssl_broker(
        **material.env(LISTENER_SSL_TRUSTSTORE=str(trust), LISTENER_SSL_RELOAD_INTERVAL_SEC=1)
    )
    port = ssl_port(broker)
    ca2_client = client_context(pki.ca_pem, pki.client("client2"))
    expect_rejected(broker, port, ca2_client, "unknown CA")
    sub, pub, topic = _live_pair(clients, broker, pki)

    mark = broker.log_mark()
    replace_atomically(trust, pki.ca_pem.read_bytes(), pki.ca2_pem.read_bytes())
    _reloaded(broker, mark)
    expect_accepted(port, client_context(pki.ca_pem, pki.client("client2")))
    expect_accepted(port, client_context(pki.ca_pem, pki.client("client1")))
    _still_live(sub, pub, topic, "after truststore reload")

    # and removing the root CA from the truststore locks its clients out of new handshakes
    mark = broker.log_mark()
    replace_atomically(trust, pki.ca2_pem.read_bytes())
    _reloaded(broker, mark)
    expect_rejected(broker, port, client_context(pki.ca_pem, pki.client("client1")), "unknown CA")
    _still_live(sub, pub, topic, "after the root CA was removed")


def test_crl_change_revokes_new_handshakes_only(ssl_broker, clients, pki, tmp_path):
    crl = write(tmp_path / "crl.pem", pki.crl_pem_bytes(pki.crl_root_empty))
    material = Material(pki, tmp_path, pki.server)
    broker = ssl_broker(
        **material.env(LISTENER_SSL_CRL=str(crl), LISTENER_SSL_RELOAD_INTERVAL_SEC=1)
    )
    port = ssl_port(broker)
    revoked_ctx = client_context(pki.ca_pem, pki.client("client-revoked"))
    expect_accepted(port, revoked_ctx)
    topic = f"reload/crl/{uid()}"
    soon_revoked = tls_client(clients, broker, pki.ca_pem, pki.client("client-revoked"))
    soon_revoked.subscribe(topic, 1)

    mark = broker.log_mark()
    replace_atomically(crl, pki.crl_pem.read_bytes())
    _reloaded(broker, mark)
    expect_rejected(broker, port, revoked_ctx, "revoked")
    expect_accepted(port, client_context(pki.ca_pem, pki.client("client1")))
    # the connection made before the revocation is not cut
    pub = tls_client(clients, broker, pki.ca_pem)
    pub.publish(topic, b"still here", qos=1)
    assert soon_revoked.expect_message().payload == b"still here"


def test_sighup_reloads_a_keystore(ssl_broker, pki, tmp_path):
    store = pki.pkcs12(tmp_path / "server.p12", pki.server)
    broker = ssl_broker(
        LISTENER_SSL_CREDENTIALS_TYPE="KEYSTORE",
        LISTENER_SSL_KEY_STORE_TYPE="PKCS12",
        LISTENER_SSL_KEY_STORE=str(store),
        LISTENER_SSL_KEY_STORE_PASSWORD=STORE_PASSWORD,
        LISTENER_SSL_KEY_PASSWORD=STORE_PASSWORD,
        LISTENER_SSL_RELOAD_INTERVAL_SEC=0,
    )
    assert _peer(broker, pki) == pki.server.der
    pki.pkcs12(tmp_path / "server.p12.new", pki.server2).replace(store)
    mark = broker.log_mark()
    broker.send_signal(signal.SIGHUP)
    _reloaded(broker, mark)
    assert _peer(broker, pki) == pki.server2.der


def test_live_connections_survive_many_reloads(ssl_broker, clients, pki, tmp_path):
    material = Material(pki, tmp_path, pki.server)
    broker = ssl_broker(**material.env(LISTENER_SSL_RELOAD_INTERVAL_SEC=0))
    sub, pub, topic = _live_pair(clients, broker, pki)
    idents = [pki.server2, pki.server]
    for i in range(4):
        ident = idents[i % 2]
        material.replace(ident)
        mark = broker.log_mark()
        broker.send_signal(signal.SIGHUP)
        _reloaded(broker, mark)
        assert _peer(broker, pki) == ident.der
        _still_live(sub, pub, topic, f"round {i}")
    # an old-style TLS 1.2 client is also served by the latest material
    attempt = expect_accepted(
        ssl_port(broker), client_context(pki.ca_pem, maximum=ssl.TLSVersion.TLSv1_2)
    )
    assert attempt.peer_der == pki.server.der
