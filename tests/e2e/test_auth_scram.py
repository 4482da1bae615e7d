"""SCRAM-SHA-256 / SCRAM-SHA-512 (MQTT 5 enhanced authentication) end to end.

The client side of RFC 5802 is :class:`tests.e2e.scram_client.ScramClient` (hashlib/hmac
only); every successful exchange also verifies the server signature the broker returns in
the CONNACK (or in the final AUTH of a re-authentication).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from . import rawmqtt as rm
from .conftest import WS_ENV
from .helpers import V5, V311, BrokerProcess, uid
from .pki import Pki, pki_fixture, wss_env  # noqa: F401  (the session fixture ``pki``)
from .scram_client import (
    BAD_AUTHENTICATION_METHOD,
    CONTINUE_AUTHENTICATION,
    NOT_AUTHORIZED,
    RE_AUTHENTICATE,
    SUCCESS,
    ScramClient,
    auth_packet,
    connect_with_method,
    expect_refused,
    scram_connect,
    security_cli,
    try_connect,
    wait_for_unauthorized,
    watch_broker,
)

USERS = {
    "SCRAM-SHA-256": ("scram-user-256", "pass-256", "SHA_256"),
    "SCRAM-SHA-512": ("scram-user-512", "pass-512", "SHA_512"),
}
MECHANISMS = pytest.mark.parametrize("mechanism", list(USERS))


@pytest.fixture(scope="module")
def _scram_broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """Only SCRAM enabled; TCP, WS and WSS listeners."""
    base = tmp_path_factory.mktemp("scram")
    for user, password, algorithm in USERS.values():
        security_cli(
            base / "data", "credentials", "add-scram", "--username", user,
            "--password", password, "--algorithm", algorithm,
            "--pub", "scram/.*", "--sub", "scram/.*",
        )  # fmt: skip
    broker = BrokerProcess(
        base, {"SECURITY_MQTT_SCRAM_ENABLED": "true", **WS_ENV, **wss_env(pki)}
    ).start()
    yield broker
    broker.stop()


@pytest.fixture
def scram_broker(_scram_broker: BrokerProcess) -> Iterator[BrokerProcess]:
    yield from watch_broker(_scram_broker)


def _data(broker: BrokerProcess) -> Path:
    return broker.workdir / "data"


def _client(mechanism: str, password: str | None = None) -> ScramClient:
    user, good, _ = USERS[mechanism]
    return ScramClient(user, good if password is None else password, mechanism)


def _authenticated(clients, broker: BrokerProcess, mechanism: str) -> rm.RawClient:
    raw = clients.raw(broker, V5)
    scram = _client(mechanism)
    connack = scram_connect(raw, f"scram-{uid()}", scram)
    _check_success(connack, rm.CONNACK, mechanism, scram)
    return raw


def _check_success(pkt: rm.Packet, ptype: int, mechanism: str, scram: ScramClient) -> None:
    assert (pkt.type, pkt.reason) == (ptype, SUCCESS), f"expected success, got {pkt!r}"
    assert pkt.prop(rm.AUTHENTICATION_METHOD) == mechanism, pkt
    server_final = pkt.prop(rm.AUTHENTICATION_DATA)
    assert isinstance(server_final, bytes), f"no server-final-message in {pkt!r}"
    scram.verify(server_final)


# --------------------------------------------------------------------------- CONNECT


@pytest.mark.transports
@MECHANISMS
def test_scram_success_verifies_the_server(scram_broker, clients, mechanism):
    raw = _authenticated(clients, scram_broker, mechanism)
    raw.publish(f"scram/{uid()}", b"hi", qos=1, packet_id=1)
    assert raw.expect(rm.PUBACK).reason < 0x80


@MECHANISMS
def test_scram_wrong_password(scram_broker, clients, mechanism):
    raw = clients.raw(scram_broker, V5)
    client_id = f"scram-bad-{uid()}"
    connack = scram_connect(raw, client_id, _client(mechanism, "not-the-password"))
    expect_refused(raw, connack, NOT_AUTHORIZED)
    record = wait_for_unauthorized(_data(scram_broker), lambda r: r["clientId"] == client_id)
    assert record["reason"], record


def test_scram_unknown_user(scram_broker, clients):
    raw = clients.raw(scram_broker, V5)
    connack = scram_connect(raw, f"scram-{uid()}", ScramClient("nobody", "pw", "SCRAM-SHA-256"))
    expect_refused(raw, connack, NOT_AUTHORIZED)


def test_scram_credentials_of_the_other_algorithm(scram_broker, clients):
    user, password, _ = USERS["SCRAM-SHA-256"]
    raw = clients.raw(scram_broker, V5)
    connack = scram_connect(raw, f"scram-{uid()}", ScramClient(user, password, "SCRAM-SHA-512"))
    expect_refused(raw, connack, NOT_AUTHORIZED)


def test_unknown_authentication_method(scram_broker, clients):
    raw = clients.raw(scram_broker, V5)
    raw.send(connect_with_method(f"foo-{uid()}", "FOO", b"whatever"))
    expect_refused(raw, raw.expect(rm.CONNACK), BAD_AUTHENTICATION_METHOD)


@pytest.mark.parametrize("version", [V311, V5], ids=["v311", "v5"])
def test_scram_only_refuses_clients_without_a_method(scram_broker, clients, version):
    """TBMQ lets everyone in when only SCRAM is enabled; pytbmq does not."""
    raw = clients.raw(scram_broker, version)
    connack = try_connect(raw, f"plain-{uid()}", "scram-user-256", "pass-256")
    expect_refused(raw, connack, NOT_AUTHORIZED if version == V5 else 5)


def test_scram_disabled_refuses_a_scram_connect(broker, clients):
    """On a broker with no provider enabled (everyone else is let in) a SCRAM CONNECT is
    Not authorized, as in TBMQ."""
    raw = clients.raw(broker, V5)
    scram = ScramClient("scram-user-256", "pass-256", "SCRAM-SHA-256")
    raw.send(connect_with_method(f"scram-{uid()}", scram.mechanism, scram.first()))
    expect_refused(raw, raw.expect(rm.CONNACK), NOT_AUTHORIZED)


# --------------------------------------------------------------------------- rules


def test_rules_of_the_scram_credential(scram_broker, clients):
    raw = _authenticated(clients, scram_broker, "SCRAM-SHA-512")
    raw.publish(f"other/{uid()}", b"x", qos=1, packet_id=1)
    assert raw.expect(rm.PUBACK).reason == NOT_AUTHORIZED
    raw.publish(f"other/{uid()}", b"x", qos=2, packet_id=2)
    assert raw.expect(rm.PUBREC).reason == NOT_AUTHORIZED
    topic = f"scram/{uid()}"
    assert raw.subscribe([(topic, 1), ("other/#", 1), ("scram/#", 0)]) == [1, NOT_AUTHORIZED, 0]
    raw.publish(topic, b"own", qos=0)
    pkt = raw.expect(rm.PUBLISH)
    assert (pkt.topic, pkt.payload) == (topic.encode(), b"own")


# --------------------------------------------------------------------------- re-authentication


def _reauth(raw: rm.RawClient, scram: ScramClient) -> rm.Packet:
    """AUTH 0x19 (client-first) -> AUTH 0x18 (server-first) -> AUTH 0x18 (client-final);
    returns the broker's answer to the last one."""
    raw.send(auth_packet(RE_AUTHENTICATE, scram.mechanism, scram.first()))
    first = raw.expect(rm.AUTH)
    assert first.reason == CONTINUE_AUTHENTICATION, first
    assert first.prop(rm.AUTHENTICATION_METHOD) == scram.mechanism, first
    server_first = first.prop(rm.AUTHENTICATION_DATA)
    assert isinstance(server_first, bytes), first
    raw.send(auth_packet(CONTINUE_AUTHENTICATION, scram.mechanism, scram.final(server_first)))
    answer = raw.recv()
    assert answer is not None, "the broker closed the connection without an answer"
    return answer


@MECHANISMS
def test_reauthentication_success(scram_broker, clients, mechanism):
    raw = _authenticated(clients, scram_broker, mechanism)
    scram = _client(mechanism)
    _check_success(_reauth(raw, scram), rm.AUTH, mechanism, scram)
    # still connected, same rules
    raw.publish(f"scram/{uid()}", b"after", qos=1, packet_id=7)
    assert raw.expect(rm.PUBACK).reason < 0x80
    raw.send(rm.pingreq())
    raw.expect(rm.PINGRESP)


def test_reauthentication_twice(scram_broker, clients):
    raw = _authenticated(clients, scram_broker, "SCRAM-SHA-256")
    for _ in range(2):
        scram = _client("SCRAM-SHA-256")
        _check_success(_reauth(raw, scram), rm.AUTH, "SCRAM-SHA-256", scram)


def test_reauthentication_failure_disconnects(scram_broker, clients):
    raw = _authenticated(clients, scram_broker, "SCRAM-SHA-256")
    answer = _reauth(raw, _client("SCRAM-SHA-256", "wrong-password"))
    assert (answer.type, answer.reason) == (rm.DISCONNECT, NOT_AUTHORIZED), answer
    assert raw.read_until_closed() == []
