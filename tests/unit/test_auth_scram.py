"""SCRAM server: RFC 7677 example exchange, SHA-512 round trip, failures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytbmq.auth.credentials import PubSubPatterns, ScramAlgorithm, ScramCredentials
from pytbmq.auth.scram import ScramError, ScramServer, derive

RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"


def creds(
    algorithm: ScramAlgorithm, password: str, salt: bytes, iterations: int, user: str = "user"
) -> ScramCredentials:
    stored, server = derive(password, salt, iterations, algorithm.hash_name)
    return ScramCredentials(user, algorithm, salt, iterations, stored, server, PubSubPatterns())


class Client:
    """A minimal RFC 5802 client, independent of the server code."""

    def __init__(self, hash_name: str, user: str, password: str) -> None:
        self.hash_name = hash_name
        self.password = password
        self.nonce = base64.b64encode(os.urandom(12)).decode()
        name = user.replace("=", "=3D").replace(",", "=2C")
        self.bare = f"n={name},r={self.nonce}"
        self.server_signature = b""

    def first(self) -> bytes:
        return ("n,," + self.bare).encode()

    def final(self, server_first: bytes, *, nonce: str | None = None) -> bytes:
        attrs = dict(a.split("=", 1) for a in server_first.decode().split(","))
        assert attrs["r"].startswith(self.nonce)
        salt = base64.b64decode(attrs["s"])
        salted = hashlib.pbkdf2_hmac(self.hash_name, self.password.encode(), salt, int(attrs["i"]))
        client_key = hmac.new(salted, b"Client Key", self.hash_name).digest()
        stored = hashlib.new(self.hash_name, client_key).digest()
        without_proof = f"c=biws,r={nonce or attrs['r']}"
        auth = f"{self.bare},{server_first.decode()},{without_proof}".encode()
        sig = hmac.new(stored, auth, self.hash_name).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, sig, strict=True))
        server_key = hmac.new(salted, b"Server Key", self.hash_name).digest()
        self.server_signature = hmac.new(server_key, auth, self.hash_name).digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()


def test_rfc7677_example() -> None:
    c = creds(ScramAlgorithm.SHA_256, "pencil", RFC_SALT, 4096)
    server = ScramServer(ScramAlgorithm.SHA_256, nonce_factory=lambda: RFC_SERVER_NONCE)
    first = server.start(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", {"user": c}.get)
    assert first == (
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    assert server.credentials is None
    final = server.finish(
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    assert final == b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    assert server.credentials is c


def test_sha512_round_trip_with_escaped_name() -> None:
    user = "a,b=c"
    c = creds(ScramAlgorithm.SHA_512, "s3cret", os.urandom(16), 1000, user=user)
    client = Client("sha512", user, "s3cret")
    server = ScramServer(ScramAlgorithm.SHA_512)
    server_first = server.start(client.first(), {user: c}.get)
    final = server.finish(client.final(server_first))
    assert final == b"v=" + base64.b64encode(client.server_signature)
    assert server.credentials is c


@settings(max_examples=10, deadline=None)
@given(password=st.text(min_size=1, max_size=20), other=st.text(min_size=1, max_size=20))
def test_wrong_password_is_rejected(password: str, other: str) -> None:
    c = creds(ScramAlgorithm.SHA_512, password, b"salt", 2)
    client = Client("sha512", "user", other)
    server = ScramServer(ScramAlgorithm.SHA_512)
    server_first = server.start(client.first(), {"user": c}.get)
    if password == other:
        server.finish(client.final(server_first))
        return
    with pytest.raises(ScramError, match="wrong password"):
        server.finish(client.final(server_first))
    assert server.credentials is None


def test_tampered_nonce_is_rejected() -> None:
    c = creds(ScramAlgorithm.SHA_256, "pw", b"salt", 10)
    client = Client("sha256", "user", "pw")
    server = ScramServer(ScramAlgorithm.SHA_256)
    server_first = server.start(client.first(), {"user": c}.get)
    real = dict(a.split("=", 1) for a in server_first.decode().split(","))["r"]
    with pytest.raises(ScramError, match="nonce mismatch"):
        server.finish(client.final(server_first, nonce=real + "x"))
    with pytest.raises(ScramError, match="out of order"):
        server.finish(b"c=biws,r=x,p=AAAA")


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"p=tls-unique,,n=user,r=abc", "channel binding"),
        (b"n,a=admin,n=user,r=abc", "authzid"),
        (b"n,,n=us\x01er,r=abc", "control characters"),
        (b"n,,n=us=2Xer,r=abc", "escape"),
        (b"n,,n=user", "malformed"),
        (b"n,,r=abc,n=user", "malformed"),
        (b"n,,n=user,r=abc,m=ext", "extension"),
        (b"n,,n=nobody,r=abc", "unknown user"),
        (b"x,,n=user,r=abc", "GS2"),
        (b"\xff", "UTF-8"),
    ],
)
def test_bad_client_first(message: bytes, reason: str) -> None:
    c = creds(ScramAlgorithm.SHA_256, "pw", b"salt", 2)
    server = ScramServer(ScramAlgorithm.SHA_256)
    with pytest.raises(ScramError, match=reason) as info:
        server.start(message, {"user": c}.get)
    assert reason.lower() in info.value.reason.lower()


def test_algorithm_mismatch_and_bad_final() -> None:
    c = creds(ScramAlgorithm.SHA_256, "pw", b"salt", 2)
    with pytest.raises(ScramError, match="SCRAM-SHA-256"):
        ScramServer(ScramAlgorithm.SHA_512).start(b"n,,n=user,r=abc", {"user": c}.get)
    for final, reason in [
        (b"c=biws,r=abcdef", "no proof"),
        (b"c=eSws,r=abcdef,p=AAAA", "channel binding"),
        (b"c=biws,r=abcdef,p=!!", "base64"),
        (b"c=biws,r=abcdef,p=AAAA", "proof length"),
    ]:
        server = ScramServer(ScramAlgorithm.SHA_256, nonce_factory=lambda: "def")
        server.start(b"n,,n=user,r=abc", {"user": c}.get)
        with pytest.raises(ScramError, match=reason):
            server.finish(final)
