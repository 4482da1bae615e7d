"""Who may connect, and as what: the providers chain TBMQ runs on every CONNECT.

Owns the authentication decision for one CONNECT (`Authenticator.authenticate`): the
blocked-client check, the MQTT Basic and X.509 providers tried in the configured order
(SECURITY_MQTT_AUTH_PRIORITY), the no-provider rule, the SCRAM credentials lookup and the
cache of recently verified passwords. It holds an immutable snapshot of the stored
credentials and blocked clients (`SecurityState`) that the broker swaps when the security
database changes. The link (pytbmq.link) calls it; the broker (pytbmq.security) feeds it.

Pure apart from CPU time: verifying a stored scrypt password costs tens of milliseconds,
so `authenticate(..., allow_slow=False)` answers NEED_SLOW instead of hashing, and the
link repeats the call with `allow_slow=True` on a worker thread. Everything here is safe
to call from a worker thread: the snapshot is immutable and the password cache is a dict
updated with single operations.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from pytbmq.auth.blocked import BlockedClient, BlockedList
from pytbmq.auth.credentials import (
    AuthStrategy,
    BasicCredentials,
    ClientType,
    MqttClientCredentials,
    ScramCredentials,
    X509Credentials,
    compiled_rules,
    lookup_ids,
    verify_password,
)
from pytbmq.auth.rules import AuthRules
from pytbmq.auth.x509 import AuthStatus, authenticate_chain

if TYPE_CHECKING:
    from pytbmq.config import Settings

BASIC = "BASIC"
X_509 = "X_509"
SCRAM_METHODS: Final = {"SCRAM-SHA-256": "SHA_256", "SCRAM-SHA-512": "SHA_512"}
PASSWORD_CACHE_MAX = 100_000


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """The provider settings (SECURITY_MQTT_*)."""

    basic: bool = False
    x509: bool = False
    scram: bool = False
    priority: tuple[str, ...] = (BASIC, X_509)
    single: bool = False  # SECURITY_MQTT_AUTH_STRATEGY=SINGLE
    basic_strategy: AuthStrategy = AuthStrategy.CLIENT_ID_AND_USERNAME
    skip_validity: bool = False
    cn_full_match: bool = False
    password_cache_ttl: float = 60.0

    @classmethod
    def from_settings(cls, s: Settings) -> AuthConfig:
        return cls(
            basic=s.security_mqtt_basic_enabled,
            x509=s.security_mqtt_ssl_enabled,
            scram=s.security_mqtt_scram_enabled,
            priority=s.security_mqtt_auth_priority,
            single=s.security_mqtt_auth_strategy == "SINGLE",
            basic_strategy=AuthStrategy(s.security_mqtt_basic_strategy),
            skip_validity=s.security_mqtt_ssl_skip_validity_check_for_client_cert,
            cn_full_match=s.security_mqtt_ssl_cn_match == "FULL",
            password_cache_ttl=60.0 * s.cache_specs_basic_credentials_password_ttl,
        )

    @property
    def enabled(self) -> bool:
        """Whether any provider is on; when none is, every client gets in unrestricted."""
        return self.basic or self.x509 or self.scram

    def describe(self) -> str:
        on = [p for p in self.priority if (self.basic if p == BASIC else self.x509)]
        if self.scram:
            on.append("SCRAM (MQTT 5 enhanced authentication)")
        return ", ".join(on) if on else "none"


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """What a CONNECT offers for authentication."""

    client_id: str
    username: str | None
    password: bytes | None
    address: str  # the client's IP address
    tls: bool = False
    chain: tuple[bytes, ...] = ()  # DER, leaf first, as the client sent them


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The decision. `rules` None means no restriction (authentication disabled)."""

    ok: bool
    reason: str
    client_type: str = ClientType.DEVICE.value
    rules: AuthRules | None = None
    credentials_name: str | None = None


NEED_SLOW: Final = AuthResult(False, "a stored password must be verified")


@dataclass(frozen=True)
class SecurityState:
    """An immutable snapshot of the stored credentials and blocked clients."""

    by_id: dict[str, MqttClientCredentials] = field(default_factory=dict)
    x509_regex: tuple[MqttClientCredentials, ...] = ()
    scram_by_user: dict[str, MqttClientCredentials] = field(default_factory=dict)
    blocked: BlockedList = field(default_factory=lambda: BlockedList(()))
    count: int = 0

    @classmethod
    def build(
        cls, credentials: Iterable[MqttClientCredentials], blocked: Iterable[BlockedClient]
    ) -> SecurityState:
        by_id: dict[str, MqttClientCredentials] = {}
        regex: list[MqttClientCredentials] = []
        scram: dict[str, MqttClientCredentials] = {}
        count = 0
        for cred in credentials:  # in database order: TBMQ tries regexes in that order
            count += 1
            v = cred.value
            if isinstance(v, X509Credentials) and v.cert_cn_is_regex:
                regex.append(cred)
            elif isinstance(v, ScramCredentials):
                scram[v.user_name] = cred
            else:
                cid = cred.credentials_id
                if cid is not None:
                    by_id[cid] = cred
        return cls(by_id, tuple(regex), scram, BlockedList(blocked), count)


class Authenticator:
    def __init__(self, config: AuthConfig, state: SecurityState | None = None) -> None:
        self.config = config
        self.state = state or SecurityState()
        self._cache_key = os.urandom(32)
        self._verified: dict[bytes, float] = {}  # keyed hash -> monotonic expiry

    # ------------------------------------------------------------------ blocked
    def blocked(
        self, client_id: str, username: str | None, address: str, now: float
    ) -> BlockedClient | None:
        blocked = self.state.blocked
        if not blocked:
            return None
        return blocked.match(client_id, username, address, int(now * 1000))

    # ------------------------------------------------------------------ providers
    def authenticate(self, request: AuthRequest, *, allow_slow: bool = True) -> AuthResult:
        """Run the enabled providers in order; the first that finds the client decides."""
        cfg = self.config
        if not (cfg.basic or cfg.x509):
            if cfg.scram:
                return AuthResult(
                    False,
                    "only SCRAM is enabled and the CONNECT carries no authentication method",
                )
            return AuthResult(True, "authentication disabled")
        reasons: list[str] = []
        for provider in cfg.priority:
            if provider == BASIC:
                if not cfg.basic:
                    continue
                if cfg.single and request.tls:
                    reasons.append("MQTT Basic: not used on TLS listeners (strategy SINGLE)")
                    continue
                result = self._basic(request, allow_slow)
            else:
                if not cfg.x509:
                    continue
                if not request.tls:
                    reasons.append("X.509: not a TLS connection")
                    continue
                result = self._x509(request)
            if result is NEED_SLOW or result.ok:
                return result
            reasons.append(result.reason)
        return AuthResult(False, " | ".join(reasons) or "no provider applies")

    def _basic(self, request: AuthRequest, allow_slow: bool) -> AuthResult:
        state = self.state
        ids = lookup_ids(request.client_id or None, request.username, self.config.basic_strategy)
        candidates = [state.by_id[i] for i in ids if i in state.by_id]
        if not candidates:
            return AuthResult(
                False,
                f"MQTT Basic: no credentials for client id {request.client_id!r}"
                f" / username {request.username!r}",
            )
        wrong: list[str] = []
        for cred in candidates:
            value = cred.value
            assert isinstance(value, BasicCredentials)
            stored = value.password_hash
            if stored is not None:
                if request.password is None:
                    wrong.append(f"{cred.name!r} needs a password")
                    continue
                key = self._password_key(cred, stored, request.password)
                if not self._recently_verified(key):
                    if not allow_slow:
                        return NEED_SLOW
                    check = verify_password(stored, request.password)
                    if not check.ok:
                        wrong.append(f"{cred.name!r}: {check.reason}")
                        continue
                    self._remember(key)
            return AuthResult(
                True,
                f"MQTT Basic credentials {cred.name!r}",
                cred.client_type.value,
                compiled_rules(value),
                cred.name,
            )
        return AuthResult(False, "MQTT Basic: " + "; ".join(wrong))

    def _x509(self, request: AuthRequest) -> AuthResult:
        if not request.chain:
            return AuthResult(False, "X.509: the client sent no certificate")
        state = self.state
        cfg = self.config
        outcome = authenticate_chain(
            request.chain,
            datetime.now(UTC),
            state.x509_regex,
            state.by_id.get,
            skip_validity=cfg.skip_validity,
            full_match=cfg.cn_full_match,
        )
        if outcome.status is AuthStatus.SUCCESS:
            return AuthResult(
                True,
                f"X.509 {outcome.reason}",
                (outcome.client_type or ClientType.DEVICE).value,
                outcome.rules,
                outcome.credentials_name,
            )
        return AuthResult(False, f"X.509: {outcome.reason}")

    # ------------------------------------------------------------------ SCRAM
    def scram_credentials(self, user_name: str) -> MqttClientCredentials | None:
        return self.state.scram_by_user.get(user_name)

    # ------------------------------------------------------------------ password cache
    def _password_key(self, cred: MqttClientCredentials, stored: str, password: bytes) -> bytes:
        mac = hmac.new(self._cache_key, digestmod=hashlib.sha256)
        for part in (cred.name.encode(), stored.encode(), password):
            mac.update(len(part).to_bytes(4, "big"))
            mac.update(part)
        return mac.digest()

    def _recently_verified(self, key: bytes) -> bool:
        expiry = self._verified.get(key)
        return expiry is not None and expiry > time.monotonic()

    def _remember(self, key: bytes) -> None:
        ttl = self.config.password_cache_ttl
        if ttl <= 0:
            return
        if len(self._verified) >= PASSWORD_CACHE_MAX:
            self._verified = {}
        self._verified[key] = time.monotonic() + ttl
