"""Credentials model: TBMQ JSON parsing, credential ids, lookup order, password hashing."""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

import pytest

from pytbmq.auth.credentials import (
    AuthStrategy,
    BasicCredentials,
    ClientType,
    CredentialsType,
    ScramAlgorithm,
    ScramCredentials,
    X509Credentials,
    basic_credentials_id,
    compiled_rules,
    hash_password,
    lookup_ids,
    match_basic,
    parse_credentials,
    verify_password,
)
from pytbmq.auth.scram import derive


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def doc(ctype: str, value: dict[str, Any], client_type: str = "DEVICE") -> dict[str, Any]:
    return {
        "name": "c1",
        "clientType": client_type,
        "credentialsType": ctype,
        "credentialsValue": json.dumps(value),
    }


def test_basic_parse_hashes_password_and_accepts_aliases() -> None:
    creds = parse_credentials(
        doc(
            "MQTT_BASIC",
            {
                "clientId": "cid",
                "userName": "u",
                "password": "secret",
                "authRules": {"pub": ["a/.*"], "subAuthRulePatterns": ["b"]},
            },
            "APPLICATION",
        )
    )
    assert creds.client_type is ClientType.APPLICATION
    assert creds.credentials_type is CredentialsType.MQTT_BASIC
    v = creds.value
    assert isinstance(v, BasicCredentials)
    assert v.password_hash is not None and v.password_hash.startswith("scrypt$16384$8$1$")
    assert "secret" not in v.password_hash
    assert v.auth_rules.pub == ("a/.*",)
    assert v.auth_rules.sub == ("b",)
    assert creds.credentials_id == "mixed|u|cid"
    assert verify_password(v.password_hash, b"secret").ok
    assert not verify_password(v.password_hash, b"wrong").ok


def test_parse_accepts_json_text_and_object_value() -> None:
    d = doc("MQTT_BASIC", {"userName": "u"})
    assert parse_credentials(json.dumps(d)).credentials_id == "username|u"
    d["credentialsValue"] = {"clientId": "c"}
    assert parse_credentials(d).credentials_id == "client_id|c"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.pop("name"), "name"),
        (lambda d: d.update(clientType="X"), "clientType"),
        (lambda d: d.update(credentialsType="X"), "credentialsType"),
        (lambda d: d.update(credentialsValue="{"), "credentialsValue"),
        (lambda d: d.update(credentialsValue="{}"), "clientId or userName"),
        (
            lambda d: d.update(credentialsValue=json.dumps({"userName": "u", "authRules": 3})),
            "authRules",
        ),
        (
            lambda d: d.update(
                credentialsValue=json.dumps({"userName": "u", "authRules": {"pub": ["("]}})
            ),
            "pubAuthRulePatterns",
        ),
        (lambda d: d.update(credentialsValue=json.dumps({"userName": 5})), "userName"),
    ],
)
def test_errors_name_the_field(mutate: Any, field: str) -> None:
    d = doc("MQTT_BASIC", {"userName": "u"})
    mutate(d)
    with pytest.raises(ValueError, match=field):
        parse_credentials(d)


def test_stored_hash_loading() -> None:
    h = hash_password("pw")
    creds = parse_credentials(
        doc("MQTT_BASIC", {"userName": "u", "password": h}), password_is_hash=True
    )
    assert isinstance(creds.value, BasicCredentials)
    assert creds.value.password_hash == h
    with pytest.raises(ValueError, match="password"):
        parse_credentials(
            doc("MQTT_BASIC", {"userName": "u", "password": "clear"}), password_is_hash=True
        )


def test_credentials_ids_and_lookup_order() -> None:
    assert basic_credentials_id(None, "u") == "username|u"
    assert basic_credentials_id("c", None) == "client_id|c"
    assert basic_credentials_id("c", "u") == "mixed|u|c"
    with pytest.raises(ValueError):
        basic_credentials_id(None, None)
    assert lookup_ids("c", "u") == ("username|u", "client_id|c", "mixed|u|c")
    assert lookup_ids("c", None) == ("client_id|c",)
    assert lookup_ids(None, "u") == ("username|u",)
    assert lookup_ids("c", "u", AuthStrategy.CLIENT_ID) == ("client_id|c",)
    assert lookup_ids("c", "u", AuthStrategy.USERNAME) == ("username|u",)
    assert lookup_ids(None, "u", AuthStrategy.CLIENT_ID) == ()


def test_password_verification_edge_cases(monkeypatch: pytest.MonkeyPatch) -> None:
    assert verify_password(None, None).ok
    assert verify_password(None, b"anything").ok
    h = hash_password("pw", salt=b"\0" * 16)
    assert h == hash_password("pw", salt=b"\0" * 16)
    assert not verify_password(h, None).ok
    assert not verify_password(h, b"\xff").ok
    assert verify_password(h, "pw").ok
    assert not verify_password("scrypt$x", "pw").ok
    assert not verify_password("scrypt$3$8$1$AAAA$AAAA", "pw").ok  # n not power of 2
    assert not verify_password("plain", "plain").ok
    monkeypatch.setitem(sys.modules, "bcrypt", None)  # makes the import fail
    check = verify_password("$2a$10$" + "a" * 53, "pw")
    assert not check.ok and "bcrypt" in check.reason


def test_bcrypt_used_when_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeBcrypt:
        @staticmethod
        def checkpw(pw: bytes, hashed: bytes) -> bool:
            return pw == b"good" and hashed.startswith(b"$2b$")

    monkeypatch.setitem(sys.modules, "bcrypt", FakeBcrypt)
    assert verify_password("$2b$10$xyz", b"good").ok
    assert not verify_password("$2b$10$xyz", b"bad").ok


def test_x509_parse() -> None:
    creds = parse_credentials(
        doc(
            "X_509",
            {
                "certCnPattern": "dev-.*",
                "certCnIsRegex": True,
                "authRulesMapping": {"dev-(a|b)": {"pub": ["t/${cn}"], "sub": []}},
            },
        )
    )
    v = creds.value
    assert isinstance(v, X509Credentials)
    assert v.cert_cn_is_regex
    assert v.auth_rules_mapping[0][0] == "dev-(a|b)"
    assert v.auth_rules_mapping[0][1].pub == ("t/${cn}",)
    assert creds.credentials_id is None
    exact = parse_credentials(doc("X_509", {"certCnPattern": "dev-1"}))
    assert exact.credentials_id == "ssl|dev-1"
    with pytest.raises(ValueError, match="certCnPattern"):
        parse_credentials(doc("X_509", {"certCnIsRegex": False}))
    with pytest.raises(ValueError, match="certCnIsRegex"):
        parse_credentials(doc("X_509", {"certCnPattern": "a", "certCnIsRegex": "yes"}))
    with pytest.raises(ValueError, match="authRulesMapping"):
        parse_credentials(doc("X_509", {"certCnPattern": "a", "authRulesMapping": {"(": {}}}))


def test_scram_parse_password_and_keys() -> None:
    creds = parse_credentials(
        doc("SCRAM", {"userName": "u", "algorithm": "SHA_512", "password": "pencil"})
    )
    v = creds.value
    assert isinstance(v, ScramCredentials)
    assert v.algorithm is ScramAlgorithm.SHA_512
    assert (v.stored_key, v.server_key) == derive("pencil", v.salt, v.iterations, "sha512")
    salt = b"saltsalt"
    stored, server = derive("p", salt, 10, "sha256")
    keyed = parse_credentials(
        doc(
            "SCRAM",
            {
                "userName": "u",
                "algorithm": "SHA_256",
                "salt": b64(salt),
                "iterations": 10,
                "storedKey": b64(stored),
                "serverKey": b64(server),
            },
        )
    )
    assert isinstance(keyed.value, ScramCredentials)
    assert keyed.value.stored_key == stored
    with pytest.raises(ValueError, match="algorithm"):
        parse_credentials(doc("SCRAM", {"userName": "u", "algorithm": "MD5", "password": "x"}))
    with pytest.raises(ValueError, match="iterations"):
        parse_credentials(
            doc("SCRAM", {"userName": "u", "algorithm": "SHA_256", "salt": b64(salt)})
        )
    with pytest.raises(ValueError, match="storedKey"):
        parse_credentials(
            doc(
                "SCRAM",
                {
                    "userName": "u",
                    "algorithm": "SHA_512",
                    "salt": b64(salt),
                    "iterations": 10,
                    "storedKey": b64(stored),
                    "serverKey": b64(server),
                },
            )
        )


def test_match_basic_and_compiled_rules() -> None:
    open_cred = parse_credentials(doc("MQTT_BASIC", {"clientId": "c"}))
    locked = parse_credentials(
        doc("MQTT_BASIC", {"userName": "u", "password": "pw", "authRules": {"pub": ["a"]}})
    )
    x = parse_credentials(doc("X_509", {"certCnPattern": "c"}))
    assert match_basic([x, locked, open_cred], b"pw") is locked
    assert match_basic([x, locked, open_cred], b"no") is open_cred
    assert match_basic([x, locked], None) is None
    assert isinstance(locked.value, BasicCredentials)
    rules = compiled_rules(locked.value)
    assert [p.pattern for p in rules.pub] == ["a"]
    assert rules.sub == ()
