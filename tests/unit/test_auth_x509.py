"""X.509 matching: regex then exact credentials per chain cert, validity, leaf-CN rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pytbmq.auth.credentials import ClientType, MqttClientCredentials, parse_credentials
from pytbmq.auth.rules import can_publish, can_subscribe
from pytbmq.auth.x509 import AuthStatus, authenticate_chain

NOW = datetime(2026, 6, 1, tzinfo=UTC)
KEY = ec.generate_private_key(ec.SECP256R1())


def cert(cn: str | None, *, days_from: int = -1, days_to: int = 30, org: str = "o") -> bytes:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)]
    if cn is not None:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    name = x509.Name(attrs)
    c = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + timedelta(days=days_from))
        .not_valid_after(NOW + timedelta(days=days_to))
        .sign(KEY, hashes.SHA256())
    )
    return c.public_bytes(serialization.Encoding.DER)


def x509_creds(
    name: str, pattern: str, regex: bool, mapping: dict[str, Any]
) -> MqttClientCredentials:
    return parse_credentials(
        {
            "name": name,
            "clientType": "APPLICATION",
            "credentialsType": "X_509",
            "credentialsValue": json.dumps(
                {"certCnPattern": pattern, "certCnIsRegex": regex, "authRulesMapping": mapping}
            ),
        }
    )


def no_exact(_: str) -> MqttClientCredentials | None:
    return None


def test_regex_match_on_leaf_with_cn_substitution() -> None:
    cred = x509_creds(
        "r1",
        "dev",
        True,
        {"dev-.*": {"pub": ["t/${cn}/up"], "sub": ["t/${cn}/down"]}, "zzz": {"pub": [".*"]}},
    )
    result = authenticate_chain([cert("dev-1.x")], NOW, [cred], no_exact)
    assert result.status is AuthStatus.SUCCESS
    assert result.credentials_name == "r1"
    assert result.client_type is ClientType.APPLICATION
    assert result.leaf_cn == "dev-1.x"
    assert can_publish(result.rules, "t/dev-1.x/up")
    assert not can_publish(result.rules, "t/dev-1yx/up")  # CN is escaped
    assert not can_publish(result.rules, "other")
    assert can_subscribe(result.rules, "$share/g/t/dev-1.x/down")


def test_union_of_matching_keys() -> None:
    cred = x509_creds("r", ".*", True, {"a": {"pub": ["p1"]}, "b": {"pub": ["p2"], "sub": ["s"]}})
    result = authenticate_chain([cert("ab")], NOW, [cred], no_exact)
    assert result.status is AuthStatus.SUCCESS
    assert can_publish(result.rules, "p1") and can_publish(result.rules, "p2")
    assert can_subscribe(result.rules, "s")


def test_full_match_mode() -> None:
    cred = x509_creds("r", "dev", True, {".*": {"pub": [".*"]}})
    assert authenticate_chain([cert("my-dev")], NOW, [cred], no_exact).status is AuthStatus.SUCCESS
    strict = authenticate_chain([cert("my-dev")], NOW, [cred], no_exact, full_match=True)
    assert strict.status is AuthStatus.SKIPPED
    mapped = x509_creds("r", "my-dev", True, {"dev": {"pub": [".*"]}})
    res = authenticate_chain([cert("my-dev")], NOW, [mapped], no_exact, full_match=True)
    assert res.status is AuthStatus.FAILED


def test_exact_lookup_on_intermediate_uses_leaf_for_rules() -> None:
    exact = x509_creds("ca", "My CA", False, {"leaf-.*": {"sub": ["${cn}/#"]}})
    seen: list[str] = []

    def lookup(cid: str) -> MqttClientCredentials | None:
        seen.append(cid)
        return exact if cid == "ssl|My CA" else None

    result = authenticate_chain([cert("leaf-7"), cert("My CA")], NOW, [], lookup)
    assert seen == ["ssl|leaf-7", "ssl|My CA"]
    assert result.status is AuthStatus.SUCCESS
    assert result.credentials_name == "ca"
    assert can_subscribe(result.rules, "leaf-7/#")
    assert not can_publish(result.rules, "x")


def test_first_match_wins_regex_before_exact() -> None:
    r1 = x509_creds("first", "dev", True, {".*": {"pub": ["a"]}})
    r2 = x509_creds("second", "dev", True, {".*": {"pub": ["b"]}})
    exact = x509_creds("exact", "dev", False, {".*": {"pub": ["c"]}})
    result = authenticate_chain([cert("dev")], NOW, [r1, r2], lambda _: exact)
    assert result.credentials_name == "first"


def test_no_mapping_key_matches_is_failed() -> None:
    cred = x509_creds("r", ".*", True, {"^nomatch$": {"pub": [".*"]}})
    result = authenticate_chain([cert("dev")], NOW, [cred], no_exact)
    assert result.status is AuthStatus.FAILED
    assert result.rules is None
    assert result.credentials_name == "r"


def test_skipped_cases() -> None:
    cred = x509_creds("r", ".*", True, {".*": {"pub": [".*"]}})
    assert authenticate_chain([], NOW, [cred], no_exact).status is AuthStatus.SKIPPED
    expired = cert("dev", days_from=-10, days_to=-1)
    res = authenticate_chain([expired], NOW, [cred], no_exact)
    assert res.status is AuthStatus.SKIPPED and "validity" in res.reason
    future = cert("dev", days_from=1, days_to=10)
    assert authenticate_chain([future], NOW, [cred], no_exact).status is AuthStatus.SKIPPED
    ok = authenticate_chain([expired], NOW, [cred], no_exact, skip_validity=True)
    assert ok.status is AuthStatus.SUCCESS
    no_cn = authenticate_chain([cert(None)], NOW, [cred], no_exact)
    assert no_cn.status is AuthStatus.SKIPPED and "CN" in no_cn.reason
    junk = authenticate_chain([b"junk"], NOW, [cred], no_exact)
    assert junk.status is AuthStatus.SKIPPED
    other = x509_creds("r", "^x$", True, {".*": {"pub": [".*"]}})
    nomatch = authenticate_chain([cert("dev")], NOW, [other], no_exact)
    assert nomatch.status is AuthStatus.SKIPPED and nomatch.leaf_cn == "dev"


def test_validity_failure_on_later_cert_skips_whole_result() -> None:
    cred = x509_creds("r", "^ca$", True, {".*": {"pub": [".*"]}})
    chain = [cert("leaf"), cert("ca", days_from=-10, days_to=-1)]
    assert authenticate_chain(chain, NOW, [cred], no_exact).status is AuthStatus.SKIPPED
