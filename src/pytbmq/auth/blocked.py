"""Blocked clients: TBMQ's ban list (by client id, username, IP address or regex).

Owns the `BlockedClient` model in TBMQ's JSON shape (`parse_blocked` / `to_document`),
its key (used to remove one entry) and `BlockedList`, the lookup the CONNECT path runs
before authentication (pytbmq.auth.service builds one from the security database,
pytbmq.storage.security stores the documents, `pytbmq blocked` edits them). Pure: no
I/O, no clock (callers pass the current time in milliseconds).

Matching follows TBMQ's BlockedClientServiceImpl: exact client id, then exact username,
then exact IP address (dictionary lookups), then the regex entries in order. A regex must
match the WHOLE target value (`re.fullmatch`, like Java's `Matcher.matches()`), so
`dev-.*` blocks `dev-1` but not `my-dev-1`. An entry is expired when its expiration
time is set (> 0) and now is past it; expired entries never match. IP addresses are kept
in canonical form (`ipaddress`; an IPv4-mapped IPv6 address `::ffff:a.b.c.d` becomes
`a.b.c.d`), and peer addresses are canonicalized the same way before the lookup, so an
entry for `10.0.0.1` also blocks a dual-stack listener's `::ffff:10.0.0.1`. A REGEX
`BY_IP_ADDRESS` is matched against the peer address as given.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pytbmq.auth.rules import compile_pattern


class BlockedType(enum.StrEnum):
    CLIENT_ID = "CLIENT_ID"
    USERNAME = "USERNAME"
    IP_ADDRESS = "IP_ADDRESS"
    REGEX = "REGEX"


class RegexMatchTarget(enum.StrEnum):
    BY_CLIENT_ID = "BY_CLIENT_ID"
    BY_USERNAME = "BY_USERNAME"
    BY_IP_ADDRESS = "BY_IP_ADDRESS"


# The JSON field holding the value of each type (TBMQ's subclasses of BlockedClient).
VALUE_FIELDS: dict[BlockedType, str] = {
    BlockedType.CLIENT_ID: "clientId",
    BlockedType.USERNAME: "username",
    BlockedType.IP_ADDRESS: "ipAddress",
    BlockedType.REGEX: "pattern",
}


def canonical_ip(text: str) -> str:
    """`text` as `ipaddress` prints it, an IPv4-mapped IPv6 address as its IPv4 address;
    raises ValueError if it is not an IP address."""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a valid IP address") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return compile_pattern(pattern)
    except ValueError as exc:  # compile_pattern chains the re.error
        raise ValueError(f"invalid regex {pattern!r}: {exc.__cause__ or exc}") from None


@dataclass(frozen=True)
class BlockedClient:
    """One blocked-client entry; validated on construction (ValueError naming the field).

    `value` is the client id, username, IP address (stored canonical) or regex pattern;
    `regex_match_target` is required for REGEX and must be None otherwise;
    `expiration_time` is in ms since the epoch, 0 = never expires.
    """

    type: BlockedType
    value: str
    regex_match_target: RegexMatchTarget | None = None
    expiration_time: int = 0
    description: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", BlockedType(self.type))
        if self.regex_match_target is not None:
            target = RegexMatchTarget(self.regex_match_target)
            object.__setattr__(self, "regex_match_target", target)
        field = VALUE_FIELDS[self.type]
        if not isinstance(self.value, str) or not self.value:
            raise ValueError(f"{field}: required non-empty string")
        if self.type is BlockedType.IP_ADDRESS:
            try:
                object.__setattr__(self, "value", canonical_ip(self.value))
            except ValueError as exc:
                raise ValueError(f"{field}: {exc}") from None
        if self.type is BlockedType.REGEX:
            if self.regex_match_target is None:
                raise ValueError(
                    "regexMatchTarget: required for REGEX "
                    "(BY_CLIENT_ID, BY_USERNAME or BY_IP_ADDRESS)"
                )
            try:
                _compile(self.value)
            except ValueError as exc:
                raise ValueError(f"{field}: {exc}") from None
        elif self.regex_match_target is not None:
            raise ValueError(f"regexMatchTarget: only allowed for REGEX, not {self.type}")
        t = self.expiration_time
        if not isinstance(t, int) or isinstance(t, bool) or t < 0:
            raise ValueError("expirationTime: must be a non-negative integer (ms since epoch)")
        if self.description is not None and not isinstance(self.description, str):
            raise ValueError("description: must be a string")

    @property
    def key(self) -> str:
        """`TYPE|value`, or `REGEX|target|pattern`: the key that identifies (removes) it."""
        if self.type is BlockedType.REGEX:
            return f"REGEX|{self.regex_match_target}|{self.value}"
        return f"{self.type}|{self.value}"

    def is_expired(self, now_ms: int) -> bool:
        return 0 < self.expiration_time < now_ms

    def to_document(self) -> dict[str, Any]:
        """TBMQ's JSON shape: type, expirationTime, description, the value field, target."""
        doc: dict[str, Any] = {
            "type": str(self.type),
            "expirationTime": self.expiration_time,
            "description": self.description,
            VALUE_FIELDS[self.type]: self.value,
        }
        if self.regex_match_target is not None:
            doc["regexMatchTarget"] = str(self.regex_match_target)
        return doc


def parse_blocked(data: Mapping[str, Any] | str) -> BlockedClient:
    """A BlockedClient from TBMQ's JSON shape (dict or JSON text).

    The value is read from the type's field (`clientId`, `username`, `ipAddress`,
    `pattern`); a generic `value` field is accepted too. Raises ValueError naming the field.
    """
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ValueError(f"blocked client: not valid JSON: {exc}") from None
    if not isinstance(data, Mapping):
        raise ValueError("blocked client: must be a JSON object")
    try:
        btype = BlockedType(str(data.get("type")))
    except ValueError:
        raise ValueError("type: must be CLIENT_ID, USERNAME, IP_ADDRESS or REGEX") from None
    field = VALUE_FIELDS[btype]
    value = data.get(field, data.get("value"))
    if not isinstance(value, str) or not value:
        raise ValueError(f"{field}: required non-empty string for type {btype}")
    target: RegexMatchTarget | None = None
    raw_target = data.get("regexMatchTarget")
    if btype is BlockedType.REGEX:
        if raw_target is None:
            raise ValueError(
                "regexMatchTarget: required for REGEX (BY_CLIENT_ID, BY_USERNAME or BY_IP_ADDRESS)"
            )
        try:
            target = RegexMatchTarget(str(raw_target))
        except ValueError:
            raise ValueError(
                "regexMatchTarget: must be BY_CLIENT_ID, BY_USERNAME or BY_IP_ADDRESS"
            ) from None
    expiration = data.get("expirationTime")
    if expiration is None:
        expiration = 0
    if not isinstance(expiration, int) or isinstance(expiration, bool) or expiration < 0:
        raise ValueError("expirationTime: must be a non-negative integer (ms since epoch)")
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        raise ValueError("description: must be a string")
    # TBMQ ignores regexMatchTarget on the exact types; so do we.
    return BlockedClient(btype, value, target, expiration, description)


class BlockedList:
    """An immutable lookup over blocked-client entries (a later entry with the same key
    replaces an earlier one). Empty lists are falsy, so callers can skip `match`."""

    def __init__(self, entries: Iterable[BlockedClient]) -> None:
        by_key: dict[str, BlockedClient] = {}
        for entry in entries:
            by_key[entry.key] = entry
        self._entries = tuple(by_key.values())
        self._client_id: dict[str, BlockedClient] = {}
        self._username: dict[str, BlockedClient] = {}
        self._ip: dict[str, BlockedClient] = {}
        regex: list[tuple[re.Pattern[str], BlockedClient]] = []
        for entry in self._entries:
            if entry.type is BlockedType.CLIENT_ID:
                self._client_id[entry.value] = entry
            elif entry.type is BlockedType.USERNAME:
                self._username[entry.value] = entry
            elif entry.type is BlockedType.IP_ADDRESS:
                self._ip[entry.value] = entry
            else:
                regex.append((compile_pattern(entry.value), entry))
        self._regex = tuple(regex)

    def __len__(self) -> int:
        return len(self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __iter__(self) -> Iterator[BlockedClient]:
        return iter(self._entries)

    def match(
        self, client_id: str, username: str | None, ip: str, now_ms: int
    ) -> BlockedClient | None:
        """The first unexpired entry blocking this client, or None."""
        if not self._entries:
            return None
        found = self._client_id.get(client_id)
        if found is not None and not found.is_expired(now_ms):
            return found
        if username is not None:
            found = self._username.get(username)
            if found is not None and not found.is_expired(now_ms):
                return found
        if self._ip:
            for candidate in _ip_forms(ip):
                found = self._ip.get(candidate)
                if found is not None and not found.is_expired(now_ms):
                    return found
        for pattern, entry in self._regex:
            target = entry.regex_match_target
            value: str | None
            if target is RegexMatchTarget.BY_CLIENT_ID:
                value = client_id
            elif target is RegexMatchTarget.BY_USERNAME:
                value = username
            else:
                value = ip
            if value is None or entry.is_expired(now_ms):
                continue
            if pattern.fullmatch(value) is not None:
                return entry
        return None


def _ip_forms(ip: str) -> tuple[str, ...]:
    """The peer address as given and, if different, in canonical form."""
    try:
        canonical = canonical_ip(ip)
    except ValueError:
        return (ip,)
    return (ip,) if canonical == ip else (ip, canonical)
