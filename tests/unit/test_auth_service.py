"""The providers chain (pytbmq.auth.service): order, fall-through, no-provider rule, cache."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from pytbmq.auth import service
from pytbmq.auth.blocked import BlockedClient, BlockedType
from pytbmq.auth.credentials import AuthStrategy, MqttClientCredentials, parse_credentials
from pytbmq.auth.rules import can_publish, can_subscribe
from pytbmq.auth.service import (
    NEED_SLOW,
    AuthConfig,
    Authenticator,
    AuthRequest,
    SecurityState,
)
from pytbmq.config import load_settings


def basic(
    name: str,
    *,
    client_id: str | None = None,
    user: str | None = None,
    password: str | None = None,
    pub: list[str] | None = None,
    sub: list[str] | None = None,
    client_type: str = "DEVICE",
) -> MqttClientCredentials:
    value: dict[str, Any] = {"clientId": client_id, "userName": user, "password": password}
    value["authRules"] = {"pubAuthRulePatterns": pub, "subAuthRulePatterns": sub}
    return parse_credentials(
        {
            "name": name,
            "clientType": client_type,
            "credentialsType": "MQTT_BASIC",
            "credentialsValue": json.dumps(value),
        }
    )


def x509_cred(name: str, cn: str, regex: bool = False, pub: str = ".*") -> MqttClientCredentials:
    value = {
        "certCnPattern": cn,
        "certCnIsRegex": regex,
        "authRulesMapping": {".*": {"pubAuthRulePatterns": [pub], "subAuthRulePatterns": []}},
    }
    return parse_credentials(
        {
            "name": name,
            "clientType": "APPLICATION",
            "credentialsType": "X_509",
            "credentialsValue": json.dumps(value),
        }
    )


def cert_der(cn: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.DER)


def auth(config: AuthConfig, *creds: MqttClientCredentials, blocked: Any = ()) -> Authenticator:
    return Authenticator(config, SecurityState.build(creds, blocked))


def req(
    client_id: str = "c1",
    user: str | None = None,
    password: bytes | None = None,
    chain: tuple[bytes, ...] = (),
    tls: bool = False,
) -> AuthRequest:
    return AuthRequest(client_id, user, password, "10.0.0.1", tls=tls or bool(chain), chain=chain)


def test_no_provider_lets_everyone_in_unrestricted() -> None:
    result = auth(AuthConfig()).authenticate(req())
    assert result.ok and result.rules is None and result.client_type == "DEVICE"
    assert not AuthConfig().enabled


def test_scram_only_refuses_clients_without_a_method() -> None:
    result = auth(AuthConfig(scram=True)).authenticate(req())
    assert not result.ok
    assert "only SCRAM" in result.reason


def test_basic_by_username_client_id_and_mixed() -> None:
    a = auth(
        AuthConfig(basic=True),
        basic("u", user="alice", pub=["a/.*"]),
        basic("c", client_id="dev-1", pub=["c/.*"]),
        basic("m", client_id="dev-2", user="bob", pub=["m/.*"]),
    )
    r = a.authenticate(req("whatever", "alice"))
    assert r.ok and r.credentials_name == "u" and can_publish(r.rules, "a/x")
    r = a.authenticate(req("dev-1"))
    assert r.ok and r.credentials_name == "c"
    r = a.authenticate(req("dev-2", "bob"))
    assert r.ok and r.credentials_name == "m"
    r = a.authenticate(req("dev-3", "bob"))
    assert not r.ok and "no credentials" in r.reason


def test_strategy_username_ignores_client_id_credentials() -> None:
    a = auth(
        AuthConfig(basic=True, basic_strategy=AuthStrategy.USERNAME),
        basic("c", client_id="dev-1"),
    )
    assert not a.authenticate(req("dev-1")).ok


def test_password_needs_slow_path_then_is_cached() -> None:
    a = auth(AuthConfig(basic=True), basic("u", user="alice", password="secret", pub=[".*"]))
    assert a.authenticate(req("c", "alice", b"secret"), allow_slow=False) is NEED_SLOW
    assert a.authenticate(req("c", "alice", b"secret")).ok
    # verified recently: no hashing needed any more
    fast = a.authenticate(req("c", "alice", b"secret"), allow_slow=False)
    assert fast.ok
    # a different password is not covered by the cache
    assert a.authenticate(req("c", "alice", b"wrong"), allow_slow=False) is NEED_SLOW
    wrong = a.authenticate(req("c", "alice", b"wrong"))
    assert not wrong.ok and "does not match" in wrong.reason
    missing = a.authenticate(req("c", "alice", None))
    assert not missing.ok and "needs a password" in missing.reason


def test_cache_disabled_with_ttl_zero() -> None:
    a = auth(
        AuthConfig(basic=True, password_cache_ttl=0),
        basic("u", user="alice", password="secret"),
    )
    assert a.authenticate(req("c", "alice", b"secret")).ok
    assert a.authenticate(req("c", "alice", b"secret"), allow_slow=False) is NEED_SLOW


def test_credentials_without_password_accept_any() -> None:
    a = auth(AuthConfig(basic=True), basic("u", user="alice", sub=["s/#"]))
    r = a.authenticate(req("c", "alice", b"anything"), allow_slow=False)
    assert r.ok
    assert r.rules is not None and not can_publish(r.rules, "s/x")  # absent list denies


def test_x509_skipped_without_tls_and_reasons_joined() -> None:
    a = auth(AuthConfig(basic=True, x509=True), x509_cred("x", "dev"))
    r = a.authenticate(req("c", "nobody"))
    assert not r.ok
    assert " | " in r.reason and "not a TLS connection" in r.reason


def test_priority_decides_between_basic_and_x509() -> None:
    creds = (basic("b", user="alice", pub=["basic/.*"]), x509_cred("x", "dev", pub="x509/.*"))
    chain = (cert_der("dev"),)
    first_basic = auth(AuthConfig(basic=True, x509=True), *creds)
    r = first_basic.authenticate(req("c", "alice", chain=chain))
    assert r.credentials_name == "b" and can_publish(r.rules, "basic/1")
    first_x509 = auth(AuthConfig(basic=True, x509=True, priority=("X_509", "BASIC")), *creds)
    r = first_x509.authenticate(req("c", "alice", chain=chain))
    assert r.credentials_name == "x" and r.client_type == "APPLICATION"
    assert can_publish(r.rules, "x509/1") and not can_publish(r.rules, "basic/1")


def test_disabled_provider_is_not_tried() -> None:
    a = auth(AuthConfig(x509=True), basic("b", user="alice"))
    assert not a.authenticate(req("c", "alice")).ok


def test_single_strategy_splits_providers_by_listener() -> None:
    creds = (basic("b", user="alice"), x509_cred("x", "dev"))
    a = auth(AuthConfig(basic=True, x509=True, single=True), *creds)
    r = a.authenticate(req("c", "alice", chain=(cert_der("other"),)))
    assert not r.ok and "strategy SINGLE" in r.reason
    assert a.authenticate(req("c", "alice")).ok


def test_x509_regex_credentials() -> None:
    a = auth(AuthConfig(x509=True), x509_cred("r", r"^sensor-\d+$", regex=True))
    assert a.authenticate(req("c", chain=(cert_der("sensor-17"),))).ok
    assert not a.authenticate(req("c", chain=(cert_der("actuator-1"),))).ok


def test_subscribe_rules_apply_to_shared_filter_target() -> None:
    a = auth(AuthConfig(basic=True), basic("u", user="alice", sub=["s/.*"]))
    rules = a.authenticate(req("c", "alice")).rules
    assert can_subscribe(rules, "$share/g/s/#")
    assert not can_subscribe(rules, "$share/s/x/#")


def test_blocked_matching_and_expiry() -> None:
    blocked = [
        BlockedClient(BlockedType.CLIENT_ID, "bad", None, 0, None),
        BlockedClient(BlockedType.USERNAME, "eve", None, 1_000, None),  # expired in 1970
    ]
    a = auth(AuthConfig(), blocked=blocked)
    assert a.blocked("bad", None, "10.0.0.1", 1e9) is not None
    assert a.blocked("good", "eve", "10.0.0.1", 1e9) is None
    assert a.blocked("good", None, "10.0.0.1", 1e9) is None


def test_state_swap_takes_effect() -> None:
    a = auth(AuthConfig(basic=True))
    assert not a.authenticate(req("c", "alice")).ok
    a.state = SecurityState.build([basic("u", user="alice")], [])
    assert a.authenticate(req("c", "alice")).ok


def test_config_from_settings() -> None:
    s = load_settings(
        {
            "SECURITY_MQTT_BASIC_ENABLED": "true",
            "SECURITY_MQTT_SSL_ENABLED": "true",
            "SECURITY_MQTT_AUTH_PRIORITY": "X_509,BASIC",
            "SECURITY_MQTT_SSL_CN_MATCH": "full",
            "SECURITY_MQTT_AUTH_STRATEGY": "SINGLE",
            "CACHE_SPECS_BASIC_CREDENTIALS_PASSWORD_TTL": "0",
        }
    )
    cfg = AuthConfig.from_settings(s)
    assert cfg.basic and cfg.x509 and not cfg.scram
    assert cfg.priority == ("X_509", "BASIC")
    assert cfg.cn_full_match and cfg.single and cfg.password_cache_ttl == 0
    assert cfg.describe() == "X_509, BASIC"


def test_password_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "PASSWORD_CACHE_MAX", 2)
    a = auth(AuthConfig(basic=True), basic("u", user="alice", password="p"))
    for _ in range(5):
        a._remember(bytes(8))
        a._remember(b"x" * 8)
        a._remember(b"y" * 8)
    assert len(a._verified) <= 2
