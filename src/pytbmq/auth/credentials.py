"""Client-credentials model in TBMQ's JSON shape, credential ids and password hashing.

Owns parsing and validating `{"name", "clientType", "credentialsType",
"credentialsValue"}` documents (MQTT_BASIC, X_509, SCRAM) and writing them back
(`credentials_to_document`, with or without secrets), the credential ids TBMQ stores and
looks up (`username|u`, `client_id|id`, `mixed|u|id`, `ssl|CN`, `scram|u`), and password
hashing and verification. The credentials store, the REST/CLI tooling and CONNECT authentication
will call this module; it performs no I/O.

Passwords are never kept in clear: a clear password is hashed with scrypt into
`scrypt$n$r$p$salt_b64$hash_b64`. TBMQ's BCrypt hashes (`$2a$`/`$2b$`/`$2y$`) are verified
only when the optional `bcrypt` module is importable.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import importlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pytbmq.auth.rules import AuthRules, compile_pattern

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_SALT_LEN = 16
SCRYPT_DKLEN = 32
SCRAM_DEFAULT_ITERATIONS = 4096
BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")


class ClientType(enum.StrEnum):
    DEVICE = "DEVICE"
    APPLICATION = "APPLICATION"


class CredentialsType(enum.StrEnum):
    MQTT_BASIC = "MQTT_BASIC"
    X_509 = "X_509"
    SCRAM = "SCRAM"


class AuthStrategy(enum.StrEnum):
    CLIENT_ID_AND_USERNAME = "CLIENT_ID_AND_USERNAME"
    CLIENT_ID = "CLIENT_ID"
    USERNAME = "USERNAME"


class ScramAlgorithm(enum.StrEnum):
    SHA_256 = "SHA_256"
    SHA_512 = "SHA_512"

    @property
    def hash_name(self) -> str:
        return "sha256" if self is ScramAlgorithm.SHA_256 else "sha512"

    @property
    def mechanism(self) -> str:
        return "SCRAM-SHA-256" if self is ScramAlgorithm.SHA_256 else "SCRAM-SHA-512"


@dataclass(frozen=True)
class PubSubPatterns:
    """Uncompiled rule patterns; None or empty denies that direction."""

    pub: tuple[str, ...] | None = None
    sub: tuple[str, ...] | None = None


@dataclass(frozen=True)
class BasicCredentials:
    client_id: str | None
    user_name: str | None
    password_hash: str | None
    auth_rules: PubSubPatterns


@dataclass(frozen=True)
class X509Credentials:
    cert_cn_pattern: str
    cert_cn_is_regex: bool
    auth_rules_mapping: tuple[tuple[str, PubSubPatterns], ...]


@dataclass(frozen=True)
class ScramCredentials:
    user_name: str
    algorithm: ScramAlgorithm
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes
    auth_rules: PubSubPatterns


CredentialsValue = BasicCredentials | X509Credentials | ScramCredentials


@dataclass(frozen=True)
class MqttClientCredentials:
    name: str
    client_type: ClientType
    credentials_type: CredentialsType
    value: CredentialsValue

    @property
    def credentials_id(self) -> str | None:
        """The id TBMQ stores for exact lookup (`username|u`, `client_id|id`, `mixed|u|id`,
        `ssl|CN`, `scram|u`); None for regex X.509 credentials (matched by pattern)."""
        v = self.value
        if isinstance(v, BasicCredentials):
            return basic_credentials_id(v.client_id, v.user_name)
        if isinstance(v, ScramCredentials):
            return scram_credentials_id(v.user_name)
        if not v.cert_cn_is_regex:
            return ssl_credentials_id(v.cert_cn_pattern)
        return None

    @property
    def unique_key(self) -> str:
        """What must be unique among stored credentials: the credentials id, or
        `ssl_regex|<pattern>` for regex X.509 credentials."""
        cid = self.credentials_id
        if cid is not None:
            return cid
        assert isinstance(self.value, X509Credentials)
        return f"ssl_regex|{self.value.cert_cn_pattern}"


# --- credential ids -----------------------------------------------------------------


def username_credentials_id(user_name: str) -> str:
    return f"username|{user_name}"


def client_id_credentials_id(client_id: str) -> str:
    return f"client_id|{client_id}"


def mixed_credentials_id(user_name: str, client_id: str) -> str:
    return f"mixed|{user_name}|{client_id}"


def ssl_credentials_id(common_name: str) -> str:
    return f"ssl|{common_name}"


def scram_credentials_id(user_name: str) -> str:
    return f"scram|{user_name}"


def basic_credentials_id(client_id: str | None, user_name: str | None) -> str:
    """Id at save time: username only, client id only, or both (`mixed`)."""
    if user_name and client_id:
        return mixed_credentials_id(user_name, client_id)
    if user_name:
        return username_credentials_id(user_name)
    if client_id:
        return client_id_credentials_id(client_id)
    raise ValueError("credentialsValue: at least one of clientId or userName is required")


def lookup_ids(
    client_id: str | None,
    user_name: str | None,
    strategy: AuthStrategy = AuthStrategy.CLIENT_ID_AND_USERNAME,
) -> tuple[str, ...]:
    """Credential ids to look up for a CONNECT, in TBMQ's order."""
    if strategy is AuthStrategy.CLIENT_ID:
        return (client_id_credentials_id(client_id),) if client_id else ()
    if strategy is AuthStrategy.USERNAME:
        return (username_credentials_id(user_name),) if user_name else ()
    ids: list[str] = []
    if user_name:
        ids.append(username_credentials_id(user_name))
    if client_id:
        ids.append(client_id_credentials_id(client_id))
    if user_name and client_id:
        ids.append(mixed_credentials_id(user_name, client_id))
    return tuple(ids)


# --- passwords ----------------------------------------------------------------------


def _b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64d(text: str, field: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError(f"{field}: not valid base64") from exc


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """scrypt hash as `scrypt$n$r$p$salt_b64$hash_b64`."""
    salt = os.urandom(SCRYPT_SALT_LEN) if salt is None else salt
    digest = hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=SCRYPT_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        dklen=SCRYPT_DKLEN,
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64e(salt)}${_b64e(digest)}"


def is_password_hash(text: str) -> bool:
    return text.startswith("scrypt$") or text.startswith(BCRYPT_PREFIXES)


@dataclass(frozen=True)
class PasswordCheck:
    ok: bool
    reason: str


def verify_password(stored: str | None, supplied: bytes | str | None) -> PasswordCheck:
    """Check a supplied password against a stored hash (a None hash accepts anything)."""
    if stored is None:
        return PasswordCheck(True, "no password stored: any password accepted")
    if supplied is None:
        return PasswordCheck(False, "password required")
    if isinstance(supplied, bytes):
        try:
            supplied = supplied.decode("utf-8")
        except UnicodeDecodeError:
            return PasswordCheck(False, "password is not valid UTF-8")
    if stored.startswith("scrypt$"):
        return _verify_scrypt(stored, supplied)
    if stored.startswith(BCRYPT_PREFIXES):
        return _verify_bcrypt(stored, supplied)
    return PasswordCheck(False, "unknown password hash format")


def _verify_scrypt(stored: str, supplied: str) -> PasswordCheck:
    parts = stored.split("$")
    if len(parts) != 6:
        return PasswordCheck(False, "malformed scrypt hash")
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = _b64d(parts[4], "salt")
        expected = _b64d(parts[5], "hash")
    except ValueError:
        return PasswordCheck(False, "malformed scrypt hash")
    if not (2 <= n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
        return PasswordCheck(False, "scrypt parameters out of range")
    if not expected:
        return PasswordCheck(False, "malformed scrypt hash")
    try:
        actual = hashlib.scrypt(
            supplied.encode("utf-8"),
            salt=salt,
            n=n,
            r=r,
            p=p,
            maxmem=256 * 1024 * 1024,
            dklen=len(expected),
        )
    except ValueError as exc:
        return PasswordCheck(False, f"scrypt failed: {exc}")
    if hmac.compare_digest(actual, expected):
        return PasswordCheck(True, "password matches")
    return PasswordCheck(False, "password does not match")


def _verify_bcrypt(stored: str, supplied: str) -> PasswordCheck:
    try:
        bcrypt: Any = importlib.import_module("bcrypt")
    except ImportError:
        return PasswordCheck(False, "BCrypt hash stored but the 'bcrypt' module is not installed")
    try:
        ok = bool(bcrypt.checkpw(supplied.encode("utf-8"), stored.encode("ascii")))
    except (ValueError, UnicodeEncodeError) as exc:
        return PasswordCheck(False, f"malformed BCrypt hash: {exc}")
    return PasswordCheck(ok, "password matches" if ok else "password does not match")


def match_basic(
    candidates: Iterable[MqttClientCredentials], password: bytes | str | None
) -> MqttClientCredentials | None:
    """First MQTT_BASIC candidate (in the order given) whose password check passes."""
    for cred in candidates:
        if (
            isinstance(cred.value, BasicCredentials)
            and verify_password(cred.value.password_hash, password).ok
        ):
            return cred
    return None


def compiled_rules(value: BasicCredentials | ScramCredentials) -> AuthRules:
    """Compiled topic rules of a MQTT_BASIC or SCRAM credential."""
    return AuthRules.from_patterns(value.auth_rules.pub, value.auth_rules.sub)


# --- parsing ------------------------------------------------------------------------


def _opt_str(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{where}.{key}: must be a string")
    return value


def _req_str(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = _opt_str(obj, key, where)
    if not value:
        raise ValueError(f"{where}.{key}: required non-empty string")
    return value


def _patterns(value: Any, field: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ValueError(f"{field}: must be a list of strings")
    for p in value:
        try:
            compile_pattern(p)
        except ValueError as exc:
            raise ValueError(f"{field}: {exc}") from exc
    return tuple(value)


def parse_auth_rules(value: Any, field: str = "authRules") -> PubSubPatterns:
    """`{pubAuthRulePatterns, subAuthRulePatterns}` (aliases `pub` / `sub`)."""
    if value is None:
        return PubSubPatterns()
    if not isinstance(value, Mapping):
        raise ValueError(f"{field}: must be an object")
    pub = value.get("pubAuthRulePatterns", value.get("pub"))
    sub = value.get("subAuthRulePatterns", value.get("sub"))
    return PubSubPatterns(
        pub=_patterns(pub, f"{field}.pubAuthRulePatterns"),
        sub=_patterns(sub, f"{field}.subAuthRulePatterns"),
    )


def _parse_basic(v: Mapping[str, Any], password_is_hash: bool) -> BasicCredentials:
    where = "credentialsValue"
    client_id = _opt_str(v, "clientId", where) or None
    user_name = _opt_str(v, "userName", where) or None
    if client_id is None and user_name is None:
        raise ValueError(f"{where}: at least one of clientId or userName is required")
    password = _opt_str(v, "password", where)
    if password is not None:
        if password_is_hash:
            if not is_password_hash(password):
                raise ValueError(f"{where}.password: stored value is not a known hash format")
        else:
            password = hash_password(password)
    return BasicCredentials(
        client_id=client_id,
        user_name=user_name,
        password_hash=password,
        auth_rules=parse_auth_rules(v.get("authRules"), f"{where}.authRules"),
    )


def _parse_x509(v: Mapping[str, Any]) -> X509Credentials:
    where = "credentialsValue"
    pattern = _req_str(v, "certCnPattern", where)
    is_regex = v.get("certCnIsRegex", False)
    if not isinstance(is_regex, bool):
        raise ValueError(f"{where}.certCnIsRegex: must be a boolean")
    if is_regex:
        try:
            compile_pattern(pattern)
        except ValueError as exc:
            raise ValueError(f"{where}.certCnPattern: {exc}") from exc
    mapping = v.get("authRulesMapping")
    if mapping is None:
        mapping = {}
    if not isinstance(mapping, Mapping):
        raise ValueError(f"{where}.authRulesMapping: must be an object")
    entries: list[tuple[str, PubSubPatterns]] = []
    for key, rules in mapping.items():
        field = f"{where}.authRulesMapping[{key!r}]"
        try:
            compile_pattern(key)
        except ValueError as exc:
            raise ValueError(f"{field}: {exc}") from exc
        # `${cn}` placeholders are substituted later; validate a substituted form too.
        parse_auth_rules(_with_sample_cn(rules), field)
        entries.append((key, parse_auth_rules(rules, field)))
    return X509Credentials(pattern, is_regex, tuple(entries))


def _has_cn(rules: Any) -> bool:
    return "${cn}" in json.dumps(rules)


def _with_sample_cn(rules: Any) -> Any:
    if not _has_cn(rules):
        return rules
    return json.loads(json.dumps(rules).replace("${cn}", "cn"))


def _parse_scram(v: Mapping[str, Any]) -> ScramCredentials:
    where = "credentialsValue"
    user_name = _req_str(v, "userName", where)
    algo_text = _req_str(v, "algorithm", where)
    try:
        algorithm = ScramAlgorithm(algo_text)
    except ValueError as exc:
        raise ValueError(f"{where}.algorithm: must be SHA_256 or SHA_512") from exc
    rules = parse_auth_rules(v.get("authRules"), f"{where}.authRules")
    password = _opt_str(v, "password", where)
    if password is not None:
        from pytbmq.auth.scram import derive

        salt = os.urandom(SCRYPT_SALT_LEN)
        stored, server = derive(password, salt, SCRAM_DEFAULT_ITERATIONS, algorithm.hash_name)
        return ScramCredentials(
            user_name, algorithm, salt, SCRAM_DEFAULT_ITERATIONS, stored, server, rules
        )
    salt = _b64d(_req_str(v, "salt", where), f"{where}.salt")
    iterations = v.get("iterations")
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 1:
        raise ValueError(f"{where}.iterations: required positive integer")
    stored = _b64d(_req_str(v, "storedKey", where), f"{where}.storedKey")
    server = _b64d(_req_str(v, "serverKey", where), f"{where}.serverKey")
    size = hashlib.new(algorithm.hash_name).digest_size
    if len(stored) != size or len(server) != size:
        raise ValueError(f"{where}.storedKey/serverKey: must be {size} bytes for {algorithm}")
    return ScramCredentials(user_name, algorithm, salt, iterations, stored, server, rules)


def parse_credentials(
    data: Mapping[str, Any] | str, *, password_is_hash: bool = False
) -> MqttClientCredentials:
    """Parse a TBMQ credentials document (dict or JSON text).

    `credentialsValue` is a JSON string (an object is accepted too). A MQTT_BASIC password
    is hashed unless `password_is_hash` (loading stored credentials), in which case it
    must already be a scrypt or BCrypt hash.
    """
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ValueError(f"credentials: not valid JSON: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ValueError("credentials: must be a JSON object")
    name = _req_str(data, "name", "credentials")
    try:
        client_type = ClientType(str(data.get("clientType")))
    except ValueError as exc:
        raise ValueError("clientType: must be DEVICE or APPLICATION") from exc
    try:
        ctype = CredentialsType(str(data.get("credentialsType")))
    except ValueError as exc:
        raise ValueError("credentialsType: must be MQTT_BASIC, X_509 or SCRAM") from exc
    raw = data.get("credentialsValue")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"credentialsValue: not valid JSON: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise ValueError("credentialsValue: must be a JSON object (as a string)")
    value: CredentialsValue
    if ctype is CredentialsType.MQTT_BASIC:
        value = _parse_basic(raw, password_is_hash)
    elif ctype is CredentialsType.X_509:
        value = _parse_x509(raw)
    else:
        value = _parse_scram(raw)
    return MqttClientCredentials(name, client_type, ctype, value)


# --- serialization ------------------------------------------------------------------

SECRET_MASK = "***"


def _rules_document(rules: PubSubPatterns) -> dict[str, list[str] | None]:
    return {
        "pubAuthRulePatterns": None if rules.pub is None else list(rules.pub),
        "subAuthRulePatterns": None if rules.sub is None else list(rules.sub),
    }


def credentials_value_document(
    value: CredentialsValue, *, include_secrets: bool = True
) -> dict[str, Any]:
    """The `credentialsValue` object (before it is encoded as a JSON string)."""
    if isinstance(value, BasicCredentials):
        password = value.password_hash
        if password is not None and not include_secrets:
            password = SECRET_MASK
        return {
            "clientId": value.client_id,
            "userName": value.user_name,
            "password": password,
            "authRules": _rules_document(value.auth_rules),
        }
    if isinstance(value, X509Credentials):
        return {
            "certCnPattern": value.cert_cn_pattern,
            "certCnIsRegex": value.cert_cn_is_regex,
            "authRulesMapping": {key: _rules_document(r) for key, r in value.auth_rules_mapping},
        }
    doc: dict[str, Any] = {"userName": value.user_name, "algorithm": str(value.algorithm)}
    if include_secrets:
        doc["salt"] = _b64e(value.salt)
    doc["iterations"] = value.iterations
    if include_secrets:
        doc["storedKey"] = _b64e(value.stored_key)
        doc["serverKey"] = _b64e(value.server_key)
    doc["authRules"] = _rules_document(value.auth_rules)
    return doc


def credentials_to_document(
    cred: MqttClientCredentials, *, include_secrets: bool = True
) -> dict[str, Any]:
    """TBMQ's `{"name", "clientType", "credentialsType", "credentialsValue"}` document.

    `credentialsValue` is a JSON string. With secrets it holds the stored password hash
    (MQTT_BASIC) or salt/storedKey/serverKey (SCRAM), so
    `parse_credentials(doc, password_is_hash=True) == cred`. Without secrets a set
    password shows as `***` and the SCRAM keys and salt are left out.
    """
    value = credentials_value_document(cred.value, include_secrets=include_secrets)
    return {
        "name": cred.name,
        "clientType": str(cred.client_type),
        "credentialsType": str(cred.credentials_type),
        "credentialsValue": json.dumps(value),
    }
