"""X.509 client-certificate authentication and authorization (TBMQ's matching rule).

Owns choosing the credentials for a presented certificate chain and deriving the topic
rules from the matched credentials' `authRulesMapping`. The TLS CONNECT path will call
`authenticate_chain` with the DER chain from the TLS session, the current time, the
regex X.509 credentials (in DB order) and an exact `ssl|<CN>` lookup. Pure: no I/O.

Matching, per certificate in order (leaf first): unless validity checks are skipped,
not_before <= now <= not_after (else SKIPPED); its first CN (none: SKIPPED); each regex
credential's `certCnPattern` is searched in the CN (TBMQ's `find()`; full match in strict
mode); then the exact lookup. First match wins; no match is SKIPPED. Authorization: every
`authRulesMapping` key is searched in the LEAF CN (full match in strict mode); the rules of
all matching keys are united, `${cn}` replaced by the escaped leaf CN; none matches: FAILED.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.x509.oid import NameOID

from pytbmq.auth.credentials import (
    ClientType,
    MqttClientCredentials,
    X509Credentials,
    ssl_credentials_id,
)
from pytbmq.auth.rules import AuthRules, cn_matches, substitute_cn


class AuthStatus(enum.StrEnum):
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"


@dataclass(frozen=True)
class X509AuthResult:
    status: AuthStatus
    reason: str
    credentials_name: str | None = None
    client_type: ClientType | None = None
    rules: AuthRules | None = None
    leaf_cn: str | None = None


ExactLookup = Callable[[str], MqttClientCredentials | None]


def common_name(cert: x509.Certificate) -> str | None:
    """The first CN RDN of the subject, or None."""
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attrs:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _match(
    cn: str,
    regex_credentials: Sequence[MqttClientCredentials],
    exact_lookup: ExactLookup,
    full_match: bool,
) -> MqttClientCredentials | None:
    for cred in regex_credentials:
        v = cred.value
        if not isinstance(v, X509Credentials) or not v.cert_cn_is_regex:
            continue
        if cn_matches(v.cert_cn_pattern, cn, full_match=full_match):
            return cred
    found = exact_lookup(ssl_credentials_id(cn))
    if found is not None and isinstance(found.value, X509Credentials):
        return found
    return None


def rules_for_leaf(
    credentials: X509Credentials, leaf_cn: str, *, full_match: bool = False
) -> AuthRules | None:
    """Union of the rules of every mapping key matching the leaf CN; None if none match."""
    result: AuthRules | None = None
    for key, patterns in credentials.auth_rules_mapping:
        if not cn_matches(key, leaf_cn, full_match=full_match):
            continue
        rules = AuthRules.from_patterns(
            [substitute_cn(p, leaf_cn) for p in patterns.pub or ()],
            [substitute_cn(p, leaf_cn) for p in patterns.sub or ()],
        )
        result = rules if result is None else result.union(rules)
    return result


def authenticate_chain(
    chain: Sequence[bytes],
    now: datetime,
    regex_credentials: Sequence[MqttClientCredentials],
    exact_lookup: ExactLookup,
    *,
    skip_validity: bool = False,
    full_match: bool = False,
) -> X509AuthResult:
    """Match a DER chain (leaf first) to X.509 credentials and derive its rules."""
    if not chain:
        return X509AuthResult(AuthStatus.SKIPPED, "no client certificate presented")
    leaf_cn: str | None = None
    for index, der in enumerate(chain):
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError as exc:
            return X509AuthResult(AuthStatus.SKIPPED, f"certificate {index}: unparsable: {exc}")
        if not skip_validity and not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
            return X509AuthResult(
                AuthStatus.SKIPPED, f"certificate {index}: outside its validity period"
            )
        cn = common_name(cert)
        if cn is None:
            return X509AuthResult(AuthStatus.SKIPPED, f"certificate {index}: no CN")
        if index == 0:
            leaf_cn = cn
        cred = _match(cn, regex_credentials, exact_lookup, full_match)
        if cred is None:
            continue
        assert isinstance(cred.value, X509Credentials) and leaf_cn is not None
        rules = rules_for_leaf(cred.value, leaf_cn, full_match=full_match)
        if rules is None:
            return X509AuthResult(
                AuthStatus.FAILED,
                f"no authRulesMapping key of {cred.name!r} matches leaf CN {leaf_cn!r}",
                cred.name,
                cred.client_type,
                None,
                leaf_cn,
            )
        return X509AuthResult(
            AuthStatus.SUCCESS,
            f"certificate {index} CN {cn!r} matched {cred.name!r}",
            cred.name,
            cred.client_type,
            rules,
            leaf_cn,
        )
    return X509AuthResult(
        AuthStatus.SKIPPED, "no X.509 credentials match the chain", leaf_cn=leaf_cn
    )
