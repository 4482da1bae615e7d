"""What happened in a TLS handshake, in words: failure reasons and the client's chain.

`explain` turns the exception a failed server-side handshake raised into a short reason
a person can act on, plus a stable key for the per-reason counters. `PeerCertificates`
reads the client certificate chain of an established connection (leaf first, as the
client sent it, and the verified path), surviving TLS 1.2 session resumption, which
drops the chain from OpenSSL's view. Called by pytbmq.listeners and pytbmq.link.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any

from cryptography import x509

# OpenSSL X509_V_ERR_* codes a client certificate check can end with.
_VERIFY_REASONS: dict[int, tuple[str, str]] = {
    2: ("unknown_ca", "client certificate is signed by an unknown CA (issuer not trusted)"),
    18: ("unknown_ca", "client certificate is self-signed and not trusted (unknown CA)"),
    19: ("unknown_ca", "client certificate chain ends in an untrusted root (unknown CA)"),
    20: ("unknown_ca", "client certificate is signed by an unknown CA (issuer not trusted)"),
    21: ("unknown_ca", "client certificate is signed by an unknown CA (cannot verify the leaf)"),
    9: ("not_yet_valid", "client certificate is not valid yet (check the clocks)"),
    10: ("expired", "client certificate has expired"),
    13: ("bad_certificate", "client certificate has an invalid notBefore date"),
    14: ("bad_certificate", "client certificate has an invalid notAfter date"),
    3: ("no_crl", "no CRL is loaded for the client certificate's issuer (LISTENER_*_CRL)"),
    11: ("no_crl", "the CRL for the client certificate's issuer is not valid yet"),
    12: ("no_crl", "the CRL for the client certificate's issuer has expired"),
    7: ("bad_certificate", "client certificate signature does not verify"),
    23: ("revoked", "client certificate is revoked"),
    24: ("unknown_ca", "a CA certificate in the client chain is not a valid CA"),
    25: ("bad_certificate", "client certificate chain is longer than its CA allows (pathlen)"),
    26: (
        "bad_certificate",
        "client certificate is not meant for client authentication (key usage)",
    ),
}
_NOT_TLS = (
    "WRONG_VERSION_NUMBER",
    "HTTP_REQUEST",
    "HTTPS_PROXY_REQUEST",
    "UNKNOWN_PROTOCOL",
    "PACKET_LENGTH_TOO_LONG",
    "RECORD_LENGTH_MISMATCH",
    "BAD_RECORD_TYPE",
)
_REASONS: dict[str, tuple[str, str]] = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": (
        "no_client_certificate",
        "no client certificate presented, but client certificates are REQUIRED",
    ),
    "UNSUPPORTED_PROTOCOL": (
        "protocol_version",
        "protocol version too old: the client offers no TLS version the listener accepts",
    ),
    "TLSV1_ALERT_PROTOCOL_VERSION": (
        "protocol_version",
        "protocol version mismatch: the client rejected every TLS version offered",
    ),
    "VERSION_TOO_LOW": ("protocol_version", "protocol version too old for this listener"),
    "NO_PROTOCOLS_AVAILABLE": ("protocol_version", "no protocol version in common"),
    "NO_SHARED_CIPHER": (
        "no_shared_cipher",
        "no cipher suite in common with the client (see LISTENER_*_ENABLED_CIPHER_SUITES)",
    ),
    "TLSV1_ALERT_UNKNOWN_CA": (
        "client_rejected_server",
        "the client does not trust the server certificate (unknown CA on the client side)",
    ),
    "SSLV3_ALERT_BAD_CERTIFICATE": (
        "client_rejected_server",
        "the client rejected the server certificate (bad certificate or host name mismatch)",
    ),
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": (
        "client_rejected_server",
        "the client rejected the server certificate (certificate unknown)",
    ),
    "TLSV1_ALERT_DECRYPT_ERROR": ("client_rejected_server", "the client aborted: decrypt error"),
    "UNEXPECTED_EOF_WHILE_READING": (
        "closed",
        "the client closed the connection during the handshake",
    ),
}


def explain(exc: BaseException, handshake_timeout: float) -> tuple[str, str]:
    """(counter key, reason in words) for an exception from a server-side handshake."""
    # uvloop reports the handshake timeout as ConnectionAbortedError("... taking longer ...")
    timed_out = isinstance(exc, ConnectionAbortedError) and "longer than" in str(exc)
    if timed_out or isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "timeout", (
            f"handshake timed out after {handshake_timeout:g} s (TLS_HANDSHAKE_TIMEOUT_SEC)"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        known = _VERIFY_REASONS.get(code) if isinstance(code, int) else None
        if known is not None:
            return known
        message = getattr(exc, "verify_message", None) or exc.reason or str(exc)
        return "bad_certificate", f"client certificate rejected: {message}"
    if isinstance(exc, ssl.SSLError):
        reason = str(getattr(exc, "reason", None) or "")
        if reason in _NOT_TLS:
            return "not_tls", (
                "not TLS: the client sent plain data (MQTT over TCP, or HTTP?) to the TLS port"
            )
        known = _REASONS.get(reason)
        if known is not None:
            return known
        if isinstance(exc, ssl.SSLEOFError):
            return "closed", "the client closed the connection during the handshake"
        return "tls_error", f"TLS error {reason or exc}"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, EOFError)):
        return "closed", "the client closed the connection during the handshake"
    if isinstance(exc, OSError):
        return "network", f"network error during the handshake: {exc.strerror or exc}"
    return "internal", f"unexpected {type(exc).__name__}: {exc}"


# Failures caused by the client's certificate: recorded as unauthorized clients.
CLIENT_CERTIFICATE_FAILURES = frozenset(
    {
        "unknown_ca",
        "not_yet_valid",
        "expired",
        "bad_certificate",
        "no_crl",
        "revoked",
        "no_client_certificate",
    }
)


class HandshakeStats:
    """Counters of completed and failed handshakes, by reason, for the metrics to come."""

    def __init__(self) -> None:
        self.completed = 0
        self.failed: Counter[str] = Counter()


@dataclass(frozen=True)
class PeerCertificates:
    """A client's certificates: `presented` as sent (leaf first), `verified` path to the anchor."""

    presented: tuple[bytes, ...]
    verified: tuple[bytes, ...]

    def leaf(self) -> x509.Certificate | None:
        return x509.load_der_x509_certificate(self.presented[0]) if self.presented else None

    def leaf_subject(self) -> str:
        leaf = self.leaf()
        return leaf.subject.rfc4514_string() if leaf is not None else ""


NO_CERTIFICATES = PeerCertificates((), ())


def _ders(certs: Any) -> tuple[bytes, ...]:
    out: list[bytes] = []
    for cert in certs or ():
        if cert is None:
            continue
        if isinstance(cert, bytes):
            out.append(cert)
        else:
            out.append(cert.public_bytes(ssl._ssl.ENCODING_DER))  # type: ignore[attr-defined]
    return tuple(out)


class ChainCache:
    """Client chains by TLS session id, so a resumed TLS 1.2 session keeps its chain."""

    def __init__(self, size: int = 10000) -> None:
        self._size = size
        self._chains: OrderedDict[bytes, PeerCertificates] = OrderedDict()

    def peer_certificates(self, ssl_object: Any) -> PeerCertificates:
        if ssl_object is None or ssl_object.getpeercert(binary_form=True) is None:
            return NO_CERTIFICATES
        session = getattr(ssl_object, "session", None)
        session_id = getattr(session, "id", b"") if session is not None else b""
        if getattr(ssl_object, "session_reused", False):
            cached = self._chains.get(session_id) if session_id else None
            if cached is not None:
                return cached
            leaf = ssl_object.getpeercert(binary_form=True)
            return PeerCertificates((leaf,), ())
        if hasattr(ssl_object, "get_verified_chain"):  # Python 3.13+
            presented = _ders(ssl_object.get_unverified_chain())
            verified = _ders(ssl_object.get_verified_chain())
        else:
            inner = ssl_object._sslobj
            presented = _ders(inner.get_unverified_chain())
            verified = _ders(inner.get_verified_chain())
        certs = PeerCertificates(presented, verified)
        if session_id:
            self._chains[session_id] = certs
            if len(self._chains) > self._size:
                self._chains.popitem(last=False)
        return certs
