"""Test-side helpers of the authentication end-to-end tests.

* :class:`ScramClient` - the client side of SCRAM-SHA-256 / SCRAM-SHA-512 (RFC 5802,
  RFC 7677) written from the RFC with ``hashlib`` / ``hmac`` only, independent of the
  broker's code; it also checks the server signature.
* MQTT 5 enhanced authentication packets (CONNECT with Authentication Method / Data, AUTH)
  built with :mod:`tests.e2e.rawmqtt`'s encoder.
* :func:`security_cli` - ``python -m pytbmq credentials|blocked|unauthorized ...`` against a
  data directory, and :func:`wait_for` / :func:`unauthorized_records` to observe what the
  broker writes asynchronously.
* :class:`SourcedRawClient` - a raw client connecting from a chosen loopback address
  (127.0.0.2, ...), so IP blocks can be tested without locking out every other client.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from . import rawmqtt as rm
from .helpers import BrokerProcess, broker_env
from .rawmqtt import RawClient

T = TypeVar("T")

# MQTT 5 reason codes used by the authentication tests
SUCCESS = 0x00
CONTINUE_AUTHENTICATION = 0x18
RE_AUTHENTICATE = 0x19
NOT_AUTHORIZED = 0x87
BANNED = 0x8A
BAD_AUTHENTICATION_METHOD = 0x8C
#: MQTT 3.1.1 CONNACK return code "not authorized"
V3_NOT_AUTHORIZED = 5
#: MQTT 3.1.1 SUBACK failure
V3_SUBACK_FAILURE = 0x80

MECHANISMS = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}


# --------------------------------------------------------------------------- SCRAM client


class ScramFailure(AssertionError):
    """The server's SCRAM messages are malformed or its signature is wrong."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _saslname(user: str) -> str:
    return user.replace("=", "=3D").replace(",", "=2C")


def _hmac(key: bytes, msg: bytes, hash_name: str) -> bytes:
    return hmac.new(key, msg, hash_name).digest()


@dataclass
class ScramClient:
    """One client-side SCRAM exchange: ``first()`` -> ``final(server_first)`` ->
    ``verify(server_final)``."""

    user: str
    password: str
    mechanism: str = "SCRAM-SHA-256"
    nonce: str = ""

    def __post_init__(self) -> None:
        if self.mechanism not in MECHANISMS:
            raise ValueError(f"unknown mechanism {self.mechanism}")
        self.hash_name = MECHANISMS[self.mechanism]
        if not self.nonce:
            self.nonce = _b64(os.urandom(18))
        self._bare = f"n={_saslname(self.user)},r={self.nonce}"
        self._expected_server_signature: bytes | None = None

    def first(self) -> bytes:
        """client-first-message (GS2 header ``n,,``: no channel binding, no authzid)."""
        return f"n,,{self._bare}".encode()

    def final(self, server_first: bytes) -> bytes:
        """client-final-message for ``server_first`` (``r=...,s=...,i=...``)."""
        text = server_first.decode("utf-8")
        attrs = dict(part.split("=", 1) for part in text.split(","))
        nonce, salt_b64, iterations = attrs.get("r"), attrs.get("s"), attrs.get("i")
        if not (nonce and salt_b64 and iterations):
            raise ScramFailure(f"malformed server-first-message {text!r}")
        if not nonce.startswith(self.nonce) or len(nonce) <= len(self.nonce):
            raise ScramFailure(f"server nonce {nonce!r} does not extend ours {self.nonce!r}")
        salt = base64.b64decode(salt_b64, validate=True)
        h = self.hash_name
        salted = hashlib.pbkdf2_hmac(h, self.password.encode("utf-8"), salt, int(iterations))
        client_key = _hmac(salted, b"Client Key", h)
        stored_key = hashlib.new(h, client_key).digest()
        without_proof = f"c={_b64(b'n,,')},r={nonce}"
        auth_message = f"{self._bare},{text},{without_proof}".encode()
        signature = _hmac(stored_key, auth_message, h)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = _hmac(salted, b"Server Key", h)
        self._expected_server_signature = _hmac(server_key, auth_message, h)
        return f"{without_proof},p={_b64(proof)}".encode()

    def verify(self, server_final: bytes) -> None:
        """Raise ScramFailure unless ``server_final`` is ``v=<our expected signature>``."""
        assert self._expected_server_signature is not None, "final() was not called"
        expected = b"v=" + base64.b64encode(self._expected_server_signature)
        if server_final != expected:
            raise ScramFailure(f"server-final-message {server_final!r}, expected {expected!r}")


# --------------------------------------------------------------------------- AUTH packets


def auth_props(method: str, data: bytes | None = None) -> rm.PropList:
    props: rm.PropList = [(rm.AUTHENTICATION_METHOD, method)]
    if data is not None:
        props.append((rm.AUTHENTICATION_DATA, data))
    return props


def auth_packet(reason: int, method: str, data: bytes | None = None) -> bytes:
    """AUTH (type 15) with a reason code, Authentication Method and optional Data."""
    return rm.packet(0xF0, bytes([reason]) + rm.encode_properties(auth_props(method, data)))


def connect_with_method(
    client_id: str, method: str, data: bytes | None = None, **kwargs: Any
) -> bytes:
    """MQTT 5 CONNECT carrying an Authentication Method (and Data)."""
    return rm.connect(client_id, version=5, properties=auth_props(method, data), **kwargs)


def scram_connect(
    raw: RawClient, client_id: str, scram: ScramClient, timeout: float = 5.0
) -> rm.Packet:
    """Run the whole CONNECT / AUTH / AUTH / CONNACK exchange; returns the final packet
    (the CONNACK, or whatever ended the exchange). The server's messages are checked."""
    raw.send(connect_with_method(client_id, scram.mechanism, scram.first()))
    pkt = raw.recv(timeout)
    assert pkt is not None, "broker closed the connection instead of answering CONNECT"
    if pkt.type != rm.AUTH:
        return pkt
    assert pkt.reason == CONTINUE_AUTHENTICATION, pkt
    assert pkt.prop(rm.AUTHENTICATION_METHOD) == scram.mechanism, pkt
    server_first = pkt.prop(rm.AUTHENTICATION_DATA)
    assert isinstance(server_first, bytes), pkt
    raw.send(auth_packet(CONTINUE_AUTHENTICATION, scram.mechanism, scram.final(server_first)))
    final = raw.recv(timeout)
    assert final is not None, "broker closed the connection instead of answering AUTH"
    return final


# --------------------------------------------------------------------------- CONNECT helpers


def connect_packet(
    client_id: str,
    version: int,
    username: str | None = None,
    password: str | None = None,
    will: rm.Will | None = None,
) -> bytes:
    return rm.connect(
        client_id,
        version=version,
        username=username,
        password=None if password is None else password.encode(),
        will=will,
    )


def try_connect(
    raw: RawClient,
    client_id: str,
    username: str | None = None,
    password: str | None = None,
    will: rm.Will | None = None,
) -> rm.Packet:
    """Send CONNECT and return the CONNACK (AssertionError if the broker just closes)."""
    raw.send(connect_packet(client_id, raw.version, username, password, will))
    return raw.expect(rm.CONNACK)


def refusal_code(version: int, v5_code: int = NOT_AUTHORIZED) -> int:
    """The CONNACK code of a refusal: ``v5_code`` for MQTT 5, return code 5 for 3.x."""
    return v5_code if version == 5 else V3_NOT_AUTHORIZED


def expect_refused(raw: RawClient, connack: rm.Packet, code: int) -> None:
    """``connack`` carries ``code`` and the broker then closes the connection."""
    assert connack.type == rm.CONNACK and connack.reason == code, (
        f"expected CONNACK 0x{code:02x}, got {connack!r}"
    )
    assert raw.read_until_closed() == [], "packets after a refusing CONNACK"


def wait_for(
    attempt: Callable[[], T | None], what: str, timeout: float = 10.0, interval: float = 0.1
) -> T:
    """Call ``attempt`` until it returns something other than None (or falsy False) before
    the deadline; used where the broker picks a change up asynchronously."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = attempt()
        if last is not None and last is not False:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        threading.Event().wait(interval)  # polling a state the broker updates


class SourcedRawClient(RawClient):
    """A RawClient whose TCP connection comes from ``source`` (e.g. 127.0.0.2)."""

    def __init__(
        self, host: str, port: int, version: int = 4, source: str = "127.0.0.2", timeout=5.0
    ) -> None:
        self.version = version
        self.sock = socket.create_connection(
            (host, port), timeout=timeout, source_address=(source, 0)
        )
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = bytearray()
        self.closed = False
        self.received = []


# --------------------------------------------------------------------------- the CLI


def cli_env(data_dir: Path) -> dict[str, str]:
    return broker_env(data_dir)


def security_cli(
    data_dir: Path, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """``python -m pytbmq ARGS`` with PYTBMQ_DATA_DIR=data_dir; asserts exit 0 by default."""
    result = subprocess.run(
        [sys.executable, "-m", "pytbmq", *args],
        env=cli_env(data_dir),
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check:
        assert result.returncode == 0, (
            f"pytbmq {' '.join(args)} exited {result.returncode}\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}"
        )
    return result


def add_credentials(data_dir: Path, document: dict[str, Any]) -> None:
    """``credentials add --json -`` with a TBMQ credentials document
    (``credentialsValue`` given as an object is serialised to the JSON string TBMQ uses)."""
    doc = dict(document)
    if not isinstance(doc.get("credentialsValue"), str):
        doc["credentialsValue"] = json.dumps(doc["credentialsValue"])
    security_cli(data_dir, "credentials", "add", "--json", "-", stdin=json.dumps(doc))


def unauthorized_records(data_dir: Path) -> list[dict[str, Any]]:
    result = security_cli(data_dir, "unauthorized", "list", "--json")
    data = json.loads(result.stdout or "[]")
    assert isinstance(data, list), data
    return data


def wait_for_unauthorized(
    data_dir: Path, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
) -> dict[str, Any]:
    """The first unauthorized-client record matching ``predicate`` (polled: the broker
    writes them asynchronously)."""
    seen: list[Any] = []

    def attempt() -> dict[str, Any] | None:
        records = unauthorized_records(data_dir)
        seen[:] = records
        return next((r for r in records if predicate(r)), None)

    try:
        return wait_for(attempt, "an unauthorized-client record", timeout, interval=0.2)
    except AssertionError:
        raise AssertionError(f"no matching unauthorized-client record; records: {seen}") from None


def blocked_entries(data_dir: Path) -> list[dict[str, Any]]:
    result = security_cli(data_dir, "blocked", "list", "--json")
    data = json.loads(result.stdout or "[]")
    assert isinstance(data, list), data
    return data


def watch_broker(broker: BrokerProcess) -> Iterator[BrokerProcess]:
    """Body of a per-test fixture around a module-scoped broker: prints the broker's log
    of the test (pytest shows it only when the test fails) and fails if it died."""
    mark = broker.log_mark()
    yield broker
    print(f"broker log during the test ({broker!r}):")
    print("\n".join(broker.logs()[mark:][-200:]))
    if not broker.alive():
        pytest.fail(f"the broker died during the test\n{broker.tail()}")
