"""Blocked clients (pytbmq.auth.blocked) and unauthorized-client records
(pytbmq.auth.unauthorized): parsing and validation, keys, documents, matching and expiry."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pytbmq.auth.blocked import (
    BlockedClient,
    BlockedList,
    BlockedType,
    RegexMatchTarget,
    canonical_ip,
    parse_blocked,
)
from pytbmq.auth.unauthorized import UnauthorizedClient

NOW = 1_700_000_000_000


def regex(pattern: str, target: RegexMatchTarget, expiration: int = 0) -> BlockedClient:
    return BlockedClient(BlockedType.REGEX, pattern, target, expiration)


# --------------------------------------------------------------------------- model


def test_keys_and_documents() -> None:
    c = BlockedClient(BlockedType.CLIENT_ID, "dev1", None, 5, "noisy")
    assert c.key == "CLIENT_ID|dev1"
    assert c.to_document() == {
        "type": "CLIENT_ID",
        "expirationTime": 5,
        "description": "noisy",
        "clientId": "dev1",
    }
    u = BlockedClient(BlockedType.USERNAME, "bob")
    assert u.key == "USERNAME|bob"
    assert u.to_document()["username"] == "bob"
    ip = BlockedClient(BlockedType.IP_ADDRESS, "10.0.0.1")
    assert ip.key == "IP_ADDRESS|10.0.0.1"
    assert ip.to_document()["ipAddress"] == "10.0.0.1"
    r = regex("dev-.*", RegexMatchTarget.BY_CLIENT_ID)
    assert r.key == "REGEX|BY_CLIENT_ID|dev-.*"
    assert r.to_document() == {
        "type": "REGEX",
        "expirationTime": 0,
        "description": None,
        "pattern": "dev-.*",
        "regexMatchTarget": "BY_CLIENT_ID",
    }
    assert "regexMatchTarget" not in c.to_document()


@pytest.mark.parametrize(
    "entry",
    [
        BlockedClient(BlockedType.CLIENT_ID, "dev1", None, 5, "noisy"),
        BlockedClient(BlockedType.USERNAME, "bob"),
        BlockedClient(BlockedType.IP_ADDRESS, "2001:db8::1", None, NOW),
        BlockedClient(BlockedType.REGEX, "b.*", RegexMatchTarget.BY_USERNAME, 0, "d"),
    ],
    ids=lambda e: str(e.type),
)
def test_document_round_trip(entry: BlockedClient) -> None:
    assert parse_blocked(entry.to_document()) == entry
    assert parse_blocked(json.dumps(entry.to_document())) == entry


def test_ip_addresses_are_canonical() -> None:
    assert BlockedClient(BlockedType.IP_ADDRESS, "2001:DB8:0::1").value == "2001:db8::1"
    assert BlockedClient(BlockedType.IP_ADDRESS, "::ffff:10.0.0.1").value == "10.0.0.1"
    assert canonical_ip("::1") == "::1"
    with pytest.raises(ValueError, match="not a valid IP address"):
        canonical_ip("10.0.0")


def test_string_types_are_coerced() -> None:
    b = BlockedClient("REGEX", "x", "BY_USERNAME")  # type: ignore[arg-type]
    assert b.type is BlockedType.REGEX
    assert b.regex_match_target is RegexMatchTarget.BY_USERNAME


def test_is_expired() -> None:
    forever = BlockedClient(BlockedType.CLIENT_ID, "a")
    assert not forever.is_expired(NOW * 10)
    timed = BlockedClient(BlockedType.CLIENT_ID, "a", None, NOW)
    assert not timed.is_expired(NOW - 1)
    assert not timed.is_expired(NOW)
    assert timed.is_expired(NOW + 1)


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ("not json", "not valid JSON"),
        ([], "must be a JSON object"),
        ({"type": "HOST", "clientId": "a"}, "type"),
        ({"clientId": "a"}, "type"),
        ({"type": "CLIENT_ID"}, "clientId"),
        ({"type": "CLIENT_ID", "clientId": ""}, "clientId"),
        ({"type": "USERNAME", "username": 5}, "username"),
        ({"type": "IP_ADDRESS", "ipAddress": "10.0.0.300"}, "ipAddress"),
        ({"type": "IP_ADDRESS", "ipAddress": "host.example"}, "ipAddress"),
        ({"type": "REGEX", "pattern": "a.*"}, "regexMatchTarget"),
        ({"type": "REGEX", "pattern": "a.*", "regexMatchTarget": "BY_HOST"}, "regexMatchTarget"),
        ({"type": "REGEX", "pattern": "(", "regexMatchTarget": "BY_USERNAME"}, "pattern"),
        ({"type": "REGEX", "regexMatchTarget": "BY_USERNAME"}, "pattern"),
        ({"type": "CLIENT_ID", "clientId": "a", "expirationTime": -1}, "expirationTime"),
        ({"type": "CLIENT_ID", "clientId": "a", "expirationTime": "soon"}, "expirationTime"),
        ({"type": "CLIENT_ID", "clientId": "a", "expirationTime": True}, "expirationTime"),
        ({"type": "CLIENT_ID", "clientId": "a", "expirationTime": 1.5}, "expirationTime"),
        ({"type": "CLIENT_ID", "clientId": "a", "description": 3}, "description"),
    ],
)
def test_parse_errors_name_the_field(doc: Any, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        parse_blocked(doc)


def test_parse_defaults_and_value_alias() -> None:
    b = parse_blocked({"type": "USERNAME", "value": "bob", "expirationTime": None})
    assert b == BlockedClient(BlockedType.USERNAME, "bob")
    # TBMQ ignores a target on the exact types
    c = parse_blocked({"type": "CLIENT_ID", "clientId": "a", "regexMatchTarget": "BY_USERNAME"})
    assert c.regex_match_target is None


def test_constructor_validates() -> None:
    with pytest.raises(ValueError, match="regexMatchTarget"):
        BlockedClient(BlockedType.REGEX, "a")
    with pytest.raises(ValueError, match="only allowed for REGEX"):
        BlockedClient(BlockedType.USERNAME, "a", RegexMatchTarget.BY_USERNAME)
    with pytest.raises(ValueError, match=r"pattern: invalid regex '\['"):
        BlockedClient(BlockedType.REGEX, "[", RegexMatchTarget.BY_USERNAME)
    with pytest.raises(ValueError, match="expirationTime"):
        BlockedClient(BlockedType.USERNAME, "a", None, -5)
    with pytest.raises(ValueError, match="username"):
        BlockedClient(BlockedType.USERNAME, "")


# --------------------------------------------------------------------------- matching


def test_empty_list_is_falsy_and_matches_nothing() -> None:
    empty = BlockedList(())
    assert not empty
    assert len(empty) == 0
    assert empty.match("c", "u", "10.0.0.1", NOW) is None


def test_exact_matches() -> None:
    by_id = BlockedClient(BlockedType.CLIENT_ID, "dev1")
    by_user = BlockedClient(BlockedType.USERNAME, "bob")
    by_ip = BlockedClient(BlockedType.IP_ADDRESS, "10.0.0.9")
    blocked = BlockedList([by_id, by_user, by_ip])
    assert blocked
    assert len(blocked) == 3
    assert list(blocked) == [by_id, by_user, by_ip]
    assert blocked.match("dev1", None, "1.1.1.1", NOW) is by_id
    assert blocked.match("other", "bob", "1.1.1.1", NOW) is by_user
    assert blocked.match("other", None, "10.0.0.9", NOW) is by_ip
    assert blocked.match("other", "alice", "10.0.0.8", NOW) is None
    # client id is checked first, then username, then IP address
    assert blocked.match("dev1", "bob", "10.0.0.9", NOW) is by_id
    assert blocked.match("x", "bob", "10.0.0.9", NOW) is by_user
    # exact means exact
    assert blocked.match("dev10", "bobby", "10.0.0.90", NOW) is None


def test_ip_match_uses_canonical_forms() -> None:
    v4 = BlockedClient(BlockedType.IP_ADDRESS, "10.0.0.9")
    v6 = BlockedClient(BlockedType.IP_ADDRESS, "2001:db8::1")
    blocked = BlockedList([v4, v6])
    assert blocked.match("c", None, "::ffff:10.0.0.9", NOW) is v4
    assert blocked.match("c", None, "2001:0db8:0:0::1", NOW) is v6
    assert blocked.match("c", None, "not-an-address", NOW) is None


def test_regex_targets_and_full_match() -> None:
    by_id = regex("dev-[0-9]+", RegexMatchTarget.BY_CLIENT_ID)
    by_user = regex("guest.*", RegexMatchTarget.BY_USERNAME)
    by_ip = regex(r"192\.168\..*", RegexMatchTarget.BY_IP_ADDRESS)
    blocked = BlockedList([by_id, by_user, by_ip])
    assert blocked.match("dev-12", None, "1.1.1.1", NOW) is by_id
    assert blocked.match("my-dev-12", None, "1.1.1.1", NOW) is None  # fullmatch, not search
    assert blocked.match("dev-12x", None, "1.1.1.1", NOW) is None
    assert blocked.match("c", "guest7", "1.1.1.1", NOW) is by_user
    assert blocked.match("c", None, "1.1.1.1", NOW) is None  # no username: BY_USERNAME skipped
    assert blocked.match("c", "u", "192.168.1.4", NOW) is by_ip
    # the target decides which value is matched
    assert blocked.match("guest7", "dev-1x", "1.1.1.1", NOW) is None


def test_regex_in_order_after_exact_matches() -> None:
    first = regex("a.*", RegexMatchTarget.BY_CLIENT_ID)
    second = regex("ab.*", RegexMatchTarget.BY_CLIENT_ID)
    exact = BlockedClient(BlockedType.IP_ADDRESS, "10.0.0.1")
    blocked = BlockedList([first, second, exact])
    assert blocked.match("abc", None, "1.1.1.1", NOW) is first
    assert blocked.match("abc", None, "10.0.0.1", NOW) is exact
    assert BlockedList([second, first]).match("abc", None, "1.1.1.1", NOW) is second


def test_expired_entries_never_match() -> None:
    old_id = BlockedClient(BlockedType.CLIENT_ID, "dev1", None, NOW - 1)
    old_regex = regex("dev.*", RegexMatchTarget.BY_CLIENT_ID, NOW - 1)
    live_regex = regex("d.*", RegexMatchTarget.BY_CLIENT_ID, NOW + 1000)
    blocked = BlockedList([old_id, old_regex])
    assert blocked.match("dev1", None, "1.1.1.1", NOW) is None
    assert blocked.match("dev1", None, "1.1.1.1", NOW - 2) is old_id
    assert BlockedList([old_id, old_regex, live_regex]).match("dev1", None, "ip", NOW) is (
        live_regex
    )


def test_later_entry_with_same_key_wins() -> None:
    a = BlockedClient(BlockedType.CLIENT_ID, "x", None, 0, "first")
    b = BlockedClient(BlockedType.CLIENT_ID, "x", None, 0, "second")
    blocked = BlockedList([a, b])
    assert len(blocked) == 1
    assert blocked.match("x", None, "ip", NOW) is b


# --------------------------------------------------------------------------- unauthorized


def test_unauthorized_document_round_trip() -> None:
    u = UnauthorizedClient("c1", "10.0.0.1", NOW, "bob", True, False, "bad password")
    doc = u.to_document()
    assert doc == {
        "clientId": "c1",
        "ipAddress": "10.0.0.1",
        "ts": NOW,
        "username": "bob",
        "passwordProvided": True,
        "tlsUsed": False,
        "reason": "bad password",
    }
    assert UnauthorizedClient.from_document(doc) == u
    assert UnauthorizedClient.from_document(json.dumps(doc)) == u
    tls = UnauthorizedClient("", "::1", 0, None, False, True, "handshake failed")
    assert UnauthorizedClient.from_document(tls.to_document()) == tls


def test_unauthorized_defaults_and_errors() -> None:
    minimal = UnauthorizedClient.from_document({"ipAddress": "1.2.3.4", "ts": 1})
    assert minimal == UnauthorizedClient("", "1.2.3.4", 1, None, False, False, "")
    for doc, field in [
        ({"ts": 1}, "ipAddress"),
        ({"ipAddress": "a"}, "ts"),
        ({"ipAddress": "a", "ts": -1}, "ts"),
        ({"ipAddress": "a", "ts": 1, "clientId": 3}, "clientId"),
        ({"ipAddress": "a", "ts": 1, "username": 3}, "username"),
        ({"ipAddress": "a", "ts": 1, "tlsUsed": "yes"}, "tlsUsed"),
        ({"ipAddress": "a", "ts": 1, "passwordProvided": 1}, "passwordProvided"),
        ({"ipAddress": "a", "ts": 1, "reason": []}, "reason"),
    ]:
        with pytest.raises(ValueError, match=field):
            UnauthorizedClient.from_document(doc)
    with pytest.raises(ValueError, match="JSON"):
        UnauthorizedClient.from_document("{")
    with pytest.raises(ValueError, match="object"):
        UnauthorizedClient.from_document("[]")
