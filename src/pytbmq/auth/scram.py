"""SCRAM-SHA-256 / SCRAM-SHA-512 server side (RFC 5802, RFC 7677), sans-I/O.

Owns key derivation (`derive`) and the server state machine for MQTT 5 enhanced
authentication (`ScramServer.start` / `ScramServer.finish`). The MQTT 5 CONNECT/AUTH
handling will drive one `ScramServer` per authentication exchange, passing the
Authentication Data bytes and a credentials lookup; nothing here performs I/O.
Channel binding (`p=`) and authzid are rejected; SASLprep is not applied, but user
names containing control characters are rejected.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import os
from collections.abc import Callable

from pytbmq.auth.credentials import ScramAlgorithm, ScramCredentials

NONCE_BYTES = 18
MAX_ITERATIONS = 1_000_000


class ScramError(Exception):
    """Authentication failed or the exchange was malformed; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _hmac(key: bytes, msg: bytes, hash_name: str) -> bytes:
    return hmac.new(key, msg, hash_name).digest()


def derive(password: str, salt: bytes, iterations: int, hash_name: str) -> tuple[bytes, bytes]:
    """(StoredKey, ServerKey) for a password; `hash_name` is "sha256" or "sha512"."""
    salted = hashlib.pbkdf2_hmac(hash_name, password.encode("utf-8"), salt, iterations)
    client_key = _hmac(salted, b"Client Key", hash_name)
    stored_key = hashlib.new(hash_name, client_key).digest()
    server_key = _hmac(salted, b"Server Key", hash_name)
    return stored_key, server_key


def _decode_name(raw: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "=":
            esc = raw[i : i + 3]
            if esc == "=2C":
                out.append(",")
            elif esc == "=3D":
                out.append("=")
            else:
                raise ScramError("invalid escape in username")
            i += 3
            continue
        out.append(ch)
        i += 1
    name = "".join(out)
    if not name:
        raise ScramError("empty username")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in name):
        raise ScramError("username contains control characters")
    return name


def _valid_nonce(nonce: str) -> bool:
    return bool(nonce) and all(0x21 <= ord(c) <= 0x7E and c != "," for c in nonce)


def _default_nonce() -> str:
    return base64.b64encode(os.urandom(NONCE_BYTES)).decode("ascii")


class _State(enum.Enum):
    INITIAL = 0
    SENT_FIRST = 1
    DONE = 2
    FAILED = 3


Lookup = Callable[[str], ScramCredentials | None]


class ScramServer:
    """One server-side SCRAM exchange for `algorithm`.

    `nonce_factory` supplies the server nonce part (tests inject a fixed one).
    """

    def __init__(
        self, algorithm: ScramAlgorithm, nonce_factory: Callable[[], str] | None = None
    ) -> None:
        self.algorithm = algorithm
        self._nonce_factory = nonce_factory or _default_nonce
        self._state = _State.INITIAL
        self._credentials: ScramCredentials | None = None
        self._gs2_header = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""

    @property
    def credentials(self) -> ScramCredentials | None:
        """The authenticated credentials once `finish` succeeded."""
        return self._credentials if self._state is _State.DONE else None

    def _fail(self, reason: str) -> ScramError:
        self._state = _State.FAILED
        return ScramError(reason)

    def start(self, client_first: bytes, lookup: Lookup) -> bytes:
        """Parse client-first-message, return server-first-message."""
        if self._state is not _State.INITIAL:
            raise self._fail("start called out of order")
        try:
            text = client_first.decode("utf-8")
        except UnicodeDecodeError:
            raise self._fail("client-first-message is not UTF-8") from None
        parts = text.split(",", 2)
        if len(parts) != 3:
            raise self._fail("malformed client-first-message")
        cbind, authzid, bare = parts
        if cbind.startswith("p="):
            raise self._fail("channel binding is not supported")
        if cbind not in ("n", "y"):
            raise self._fail("malformed GS2 header")
        if authzid:
            raise self._fail("authzid is not supported")
        attrs = bare.split(",")
        if len(attrs) < 2 or not attrs[0].startswith("n=") or not attrs[1].startswith("r="):
            raise self._fail("malformed client-first-message")
        if any(a.startswith("m=") for a in attrs[2:]):
            raise self._fail("mandatory extension not supported")
        try:
            user = _decode_name(attrs[0][2:])
        except ScramError as exc:
            raise self._fail(exc.reason) from None
        client_nonce = attrs[1][2:]
        if not _valid_nonce(client_nonce):
            raise self._fail("invalid client nonce")
        creds = lookup(user)
        if creds is None:
            raise self._fail("unknown user")
        if creds.algorithm is not self.algorithm:
            raise self._fail(f"credentials are for {creds.algorithm.mechanism}")
        if not 1 <= creds.iterations <= MAX_ITERATIONS:
            raise self._fail("stored iteration count out of range")
        server_nonce = self._nonce_factory()
        if not _valid_nonce(server_nonce):
            raise self._fail("invalid server nonce")
        self._credentials = creds
        self._gs2_header = f"{cbind},{authzid},"
        self._client_first_bare = bare
        self._nonce = client_nonce + server_nonce
        salt = base64.b64encode(creds.salt).decode("ascii")
        self._server_first = f"r={self._nonce},s={salt},i={creds.iterations}"
        self._state = _State.SENT_FIRST
        return self._server_first.encode("ascii")

    def finish(self, client_final: bytes) -> bytes:
        """Verify client-final-message, return server-final-message (`v=...`)."""
        if self._state is not _State.SENT_FIRST or self._credentials is None:
            raise self._fail("finish called out of order")
        creds = self._credentials
        try:
            text = client_final.decode("ascii")
        except UnicodeDecodeError:
            raise self._fail("client-final-message is not ASCII") from None
        head, sep, proof_b64 = text.rpartition(",p=")
        if not sep:
            raise self._fail("client-final-message has no proof")
        attrs = head.split(",")
        if len(attrs) < 2 or not attrs[0].startswith("c=") or not attrs[1].startswith("r="):
            raise self._fail("malformed client-final-message")
        try:
            cbind = base64.b64decode(attrs[0][2:], validate=True)
            proof = base64.b64decode(proof_b64, validate=True)
        except binascii.Error:
            raise self._fail("invalid base64 in client-final-message") from None
        if cbind != self._gs2_header.encode("utf-8"):
            raise self._fail("channel binding data mismatch")
        if not hmac.compare_digest(attrs[1][2:].encode("ascii"), self._nonce.encode("ascii")):
            raise self._fail("nonce mismatch")
        hash_name = creds.algorithm.hash_name
        auth_message = ",".join((self._client_first_bare, self._server_first, head)).encode("utf-8")
        client_signature = _hmac(creds.stored_key, auth_message, hash_name)
        if len(proof) != len(client_signature):
            raise self._fail("invalid proof length")
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
        if not hmac.compare_digest(hashlib.new(hash_name, client_key).digest(), creds.stored_key):
            raise self._fail("invalid proof (wrong password)")
        server_signature = _hmac(creds.server_key, auth_message, hash_name)
        self._state = _State.DONE
        return b"v=" + base64.b64encode(server_signature)
