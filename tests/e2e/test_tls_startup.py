"""Startup of the MQTTS listener: bad TLS material or settings stop the whole process with
a message naming the setting; warnings for soon-expiring certificates; TBMQ's PEM ->
keystore fallback."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .helpers import run_broker_expecting_exit
from .pki import (
    KEY_PASSWORD,
    STORE_PASSWORD,
    Pki,
    client_context,
    expect_accepted,
    pki_fixture,  # noqa: F401  (the session fixture ``pki``)
    ssl_port,
    tls_env,
    write,
)

#: A broker refusing its configuration must exit within this many seconds.
EXIT_TIMEOUT = 15.0


@dataclass
class Bad:
    id: str
    variable: str
    keyword: str  # regex, searched case-insensitively in stderr
    env: Callable[[Pki, Path], dict[str, Any]] = field(default=lambda pki, tmp: {})


def _encrypted_key(pki: Pki, tmp: Path) -> str:
    return str(write(tmp / "enc_key.pem", pki.server.key_pem("pkcs8", KEY_PASSWORD)))


def _p12(pki: Pki, tmp: Path) -> dict[str, Any]:
    store = pki.pkcs12(tmp / "server.p12", pki.server)
    return {
        "LISTENER_SSL_CREDENTIALS_TYPE": "KEYSTORE",
        "LISTENER_SSL_KEY_STORE_TYPE": "PKCS12",
        "LISTENER_SSL_KEY_STORE": str(store),
        "LISTENER_SSL_KEY_STORE_PASSWORD": STORE_PASSWORD,
        "LISTENER_SSL_KEY_PASSWORD": STORE_PASSWORD,
        "LISTENER_SSL_KEY_ALIAS": "",
    }


CASES = [
    Bad(
        "missing-cert-file",
        "LISTENER_SSL_PEM_CERT",
        r"not found|no such file",
        lambda pki, tmp: {"LISTENER_SSL_PEM_CERT": str(tmp / "absent" / "server.pem")},
    ),
    Bad(
        "missing-key-file",
        "LISTENER_SSL_PEM_KEY",
        r"not found|no such file",
        lambda pki, tmp: {"LISTENER_SSL_PEM_KEY": str(tmp / "absent_key.pem")},
    ),
    Bad(
        "cert-file-is-garbage",
        "LISTENER_SSL_PEM_CERT",
        r"certificate|PEM",
        lambda pki, tmp: {
            "LISTENER_SSL_PEM_CERT": str(write(tmp / "junk.pem", b"this is not a certificate\n"))
        },
    ),
    Bad(
        "wrong-key-password",
        "LISTENER_SSL_PEM_KEY_PASSWORD",
        r"password",
        lambda pki, tmp: {
            "LISTENER_SSL_PEM_KEY": _encrypted_key(pki, tmp),
            "LISTENER_SSL_PEM_KEY_PASSWORD": "not-the-password",
        },
    ),
    Bad(
        "default-password-does-not-open-key",
        "LISTENER_SSL_PEM_KEY_PASSWORD",
        r"password",
        lambda pki, tmp: {"LISTENER_SSL_PEM_KEY": _encrypted_key(pki, tmp)},
    ),
    Bad(
        "encrypted-key-empty-password",
        "LISTENER_SSL_PEM_KEY_PASSWORD",
        r"empty|password",
        lambda pki, tmp: {
            "LISTENER_SSL_PEM_KEY": _encrypted_key(pki, tmp),
            "LISTENER_SSL_PEM_KEY_PASSWORD": "",
        },
    ),
    Bad(
        "key-does-not-match-cert",
        "LISTENER_SSL_PEM_KEY",
        r"match",
        lambda pki, tmp: {
            "LISTENER_SSL_PEM_KEY": str(write(tmp / "other_key.pem", pki.server2.key_pem()))
        },
    ),
    Bad(
        "expired-server-cert",
        "LISTENER_SSL_PEM_CERT",
        r"expired",
        lambda pki, tmp: {
            "LISTENER_SSL_PEM_CERT": str(
                write(tmp / "expired.pem", pki.server_expired.cert_pem(), pki.ca_pem.read_bytes())
            ),
            "LISTENER_SSL_PEM_KEY": str(
                write(tmp / "expired_key.pem", pki.server_expired.key_pem())
            ),
        },
    ),
    Bad(
        "keystore-wrong-store-password",
        "LISTENER_SSL_KEY_STORE_PASSWORD",
        r"password",
        lambda pki, tmp: {**_p12(pki, tmp), "LISTENER_SSL_KEY_STORE_PASSWORD": "wrong-one"},
    ),
    Bad(
        "keystore-missing",
        "LISTENER_SSL_KEY_STORE",
        r"not found|no such file",
        lambda pki, tmp: {**_p12(pki, tmp), "LISTENER_SSL_KEY_STORE": str(tmp / "absent.p12")},
    ),
    Bad(
        "keystore-alias-not-found",
        "LISTENER_SSL_KEY_ALIAS",
        r"no-such-alias",
        lambda pki, tmp: {**_p12(pki, tmp), "LISTENER_SSL_KEY_ALIAS": "no-such-alias"},
    ),
    *(
        Bad(
            f"protocol-{proto}",
            "LISTENER_SSL_PROTOCOL",
            re.escape(proto),
            lambda pki, tmp, proto=proto: {"LISTENER_SSL_PROTOCOL": proto},
        )
        for proto in ("TLSv1.1", "TLSv1", "SSLv3", "TLSv9")
    ),
    Bad(
        "unknown-cipher-suite",
        "LISTENER_SSL_ENABLED_CIPHER_SUITES",
        r"TLS_NOPE_WITH_NOTHING",
        lambda pki, tmp: {"LISTENER_SSL_ENABLED_CIPHER_SUITES": "TLS_NOPE_WITH_NOTHING"},
    ),
    Bad(
        "unknown-cipher-suite-in-a-list",
        "LISTENER_SSL_ENABLED_CIPHER_SUITES",
        r"NOT-A-CIPHER",
        lambda pki, tmp: {
            "LISTENER_SSL_ENABLED_CIPHER_SUITES": (
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,NOT-A-CIPHER"
            )
        },
    ),
    Bad(
        "crl-is-garbage",
        "LISTENER_SSL_CRL",
        r"CRL",
        lambda pki, tmp: {"LISTENER_SSL_CRL": str(write(tmp / "crl.pem", b"no CRL here\n"))},
    ),
    Bad(
        "crl-missing",
        "LISTENER_SSL_CRL",
        r"not found|no such file",
        lambda pki, tmp: {"LISTENER_SSL_CRL": str(tmp / "absent_crl.pem")},
    ),
    Bad(
        "truststore-missing",
        "LISTENER_SSL_TRUSTSTORE",
        r"not found|no such file",
        lambda pki, tmp: {"LISTENER_SSL_TRUSTSTORE": str(tmp / "absent_trust.pem")},
    ),
    Bad(
        "truststore-wrong-password",
        "LISTENER_SSL_TRUSTSTORE",
        r"password",
        lambda pki, tmp: {
            "LISTENER_SSL_TRUSTSTORE": str(pki.pkcs12_truststore(tmp / "t.p12", [pki.ca2.cert])),
            "LISTENER_SSL_TRUSTSTORE_TYPE": "PKCS12",
            "LISTENER_SSL_TRUSTSTORE_PASSWORD": "wrong-one",
        },
    ),
    Bad(
        "client-auth-unknown",
        "LISTENER_SSL_CLIENT_AUTH",
        r"SOMETIMES|REQUIRED",
        lambda pki, tmp: {"LISTENER_SSL_CLIENT_AUTH": "SOMETIMES"},
    ),
    Bad(
        "credentials-type-unknown",
        "LISTENER_SSL_CREDENTIALS_TYPE",
        r"CARRIER_PIGEON|KEYSTORE",
        lambda pki, tmp: {"LISTENER_SSL_CREDENTIALS_TYPE": "CARRIER_PIGEON"},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_tls_configuration_stops_the_broker(pki, tmp_path, case):
    env = tls_env(pki, **case.env(pki, tmp_path))
    result = run_broker_expecting_exit(tmp_path / "broker", env, timeout=EXIT_TIMEOUT)
    assert result.returncode is not None, (
        f"the broker was still running after {EXIT_TIMEOUT}s:\n{result.output[-3000:]}"
    )
    assert result.returncode != 0, result.output[-3000:]
    assert result.elapsed < 10, f"it took {result.elapsed:.1f}s to give up"
    assert "pytbmq ready" not in result.output, "the broker started without its TLS listener"
    assert case.variable in result.stderr, f"{case.variable} not named:\n{result.stderr[-3000:]}"
    assert re.search(case.keyword, result.stderr, re.IGNORECASE), (
        f"no /{case.keyword}/ in stderr:\n{result.stderr[-3000:]}"
    )
    assert "Traceback" not in result.stderr, f"a traceback instead of a message:\n{result.stderr}"


def test_server_certificate_expiring_soon_starts_with_a_warning(start_broker, pki, tmp_path):
    ident = pki.server_expiring
    cert = write(tmp_path / "soon.pem", ident.cert_pem(), pki.ca_pem.read_bytes())
    key = write(tmp_path / "soon_key.pem", ident.key_pem())
    broker = start_broker(
        **tls_env(pki, LISTENER_SSL_PEM_CERT=str(cert), LISTENER_SSL_PEM_KEY=str(key))
    )
    line = broker.wait_for_log(r"WARNING.*(?i:expires)").string
    assert "pytbmq-server-expiring" in line or "LISTENER_SSL_PEM_CERT" in line, line
    attempt = expect_accepted(ssl_port(broker), client_context(pki.ca_pem))
    assert attempt.peer_der == ident.der


def test_valid_certificate_logs_no_expiry_warning(start_broker, pki):
    broker = start_broker(**tls_env(pki))
    ssl_port(broker)
    warnings = [line for line in broker.logs() if re.search(r"WARNING.*(?i:expires)", line)]
    assert not warnings, broker.tail()


def test_missing_pem_cert_falls_back_to_an_existing_keystore(start_broker, pki, tmp_path):
    """TBMQ: credentials type PEM, PEM cert file absent, keystore file present -> keystore."""
    env = {
        **_p12(pki, tmp_path),
        "LISTENER_SSL_CREDENTIALS_TYPE": "PEM",
        "LISTENER_SSL_PEM_CERT": str(tmp_path / "absent.pem"),
        "LISTENER_SSL_PEM_KEY": str(tmp_path / "absent_key.pem"),
    }
    broker = start_broker(**tls_env(pki, **env))
    line = broker.wait_for_log(r"(?i)falling back").string
    assert "LISTENER_SSL_PEM_CERT" in line and "LISTENER_SSL_KEY_STORE" in line, line
    attempt = expect_accepted(ssl_port(broker), client_context(pki.ca_pem))
    assert attempt.peer_der == pki.server.der


def test_ssl_listener_is_off_by_default(start_broker):
    broker = start_broker()
    assert "ssl" not in broker.ports, broker.tail()
    assert not [line for line in broker.logs() if "listener ssl" in line]


def test_disabled_ssl_listener_ignores_its_material(start_broker, pki, tmp_path):
    broker = start_broker(
        **tls_env(
            pki,
            LISTENER_SSL_ENABLED="false",
            LISTENER_SSL_PEM_CERT=str(tmp_path / "absent.pem"),
            LISTENER_SSL_PEM_KEY=str(tmp_path / "absent_key.pem"),
        )
    )
    assert "ssl" not in broker.ports, broker.tail()
