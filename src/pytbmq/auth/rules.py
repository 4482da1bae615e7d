"""Topic authorization rules: TBMQ's pub/sub regex patterns.

Owns compiling rule patterns (once, cached per pattern), deciding whether a client may
publish to a topic or subscribe to a topic filter, `${cn}` substitution for X.509 rule
patterns and CN matching helpers. The broker's PUBLISH/SUBSCRIBE handling will call
`can_publish` / `can_subscribe` with the rules produced by authentication.

Semantics (TBMQ): patterns are full-matched (`re.fullmatch`) against the topic (publish)
or topic filter (subscribe; for `$share/<group>/<filter>` against `<filter>`). An empty or
absent list denies everything in that direction. No rules at all (authentication disabled,
`rules is None`) allows everything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

CN_PLACEHOLDER = "${cn}"
SHARE_PREFIX = "$share/"


@lru_cache(maxsize=4096)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a rule pattern once; raises ValueError naming the pattern if invalid."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid auth rule pattern {pattern!r}: {exc}") from exc


@dataclass(frozen=True)
class AuthRules:
    """Compiled publish and subscribe rules; an empty tuple denies that direction."""

    pub: tuple[re.Pattern[str], ...] = ()
    sub: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def from_patterns(cls, pub: Iterable[str] | None, sub: Iterable[str] | None) -> AuthRules:
        return cls(
            pub=tuple(compile_pattern(p) for p in pub or ()),
            sub=tuple(compile_pattern(p) for p in sub or ()),
        )

    def union(self, other: AuthRules) -> AuthRules:
        return AuthRules(pub=_dedup(self.pub + other.pub), sub=_dedup(self.sub + other.sub))


def _dedup(patterns: tuple[re.Pattern[str], ...]) -> tuple[re.Pattern[str], ...]:
    seen: dict[str, re.Pattern[str]] = {}
    for p in patterns:
        seen.setdefault(p.pattern, p)
    return tuple(seen.values())


def subscription_target(topic_filter: str) -> str:
    """The filter rules apply to: `f` for `$share/<group>/f`, else the filter itself."""
    if topic_filter.startswith(SHARE_PREFIX):
        parts = topic_filter.split("/", 2)
        if len(parts) == 3:
            return parts[2]
    return topic_filter


def can_publish(rules: AuthRules | None, topic: str) -> bool:
    if rules is None:
        return True
    return any(p.fullmatch(topic) is not None for p in rules.pub)


def can_subscribe(rules: AuthRules | None, topic_filter: str) -> bool:
    if rules is None:
        return True
    target = subscription_target(topic_filter)
    return any(p.fullmatch(target) is not None for p in rules.sub)


def substitute_cn(pattern: str, cn: str) -> str:
    """Replace every `${cn}` in a rule pattern by the regex-escaped certificate CN."""
    return pattern.replace(CN_PLACEHOLDER, re.escape(cn))


def cn_matches(pattern: str, cn: str, *, full_match: bool = False) -> bool:
    """TBMQ matches CN regexes with find() (substring); strict mode uses a full match."""
    compiled = compile_pattern(pattern)
    if full_match:
        return compiled.fullmatch(cn) is not None
    return compiled.search(cn) is not None


def strict_cn(pattern: str, cn: str) -> bool:
    """Strict CN matching (SECURITY_MQTT_SSL_CN_MATCH=FULL): the whole CN must match."""
    return cn_matches(pattern, cn, full_match=True)
