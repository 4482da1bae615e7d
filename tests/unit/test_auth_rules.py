"""Topic authorization rules: fullmatch semantics, shared subscriptions, deny/allow."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytbmq.auth.rules import (
    AuthRules,
    can_publish,
    can_subscribe,
    cn_matches,
    compile_pattern,
    strict_cn,
    subscription_target,
    substitute_cn,
)

topics = st.text(alphabet="abc/+#$", min_size=1, max_size=20)


def test_publish_rules_full_match() -> None:
    rules = AuthRules.from_patterns(["sensors/.*", "cmd"], None)
    assert can_publish(rules, "sensors/1/temp")
    assert can_publish(rules, "cmd")
    assert not can_publish(rules, "xsensors/1")
    assert not can_publish(rules, "cmd/extra")


def test_subscribe_rules_apply_to_share_filter() -> None:
    rules = AuthRules.from_patterns(None, ["data/#"])
    assert can_subscribe(rules, "data/#")
    assert can_subscribe(rules, "$share/g1/data/#")
    assert not can_subscribe(rules, "$share/data/#")
    assert subscription_target("$share/g/a/b") == "a/b"
    assert subscription_target("$share/g") == "$share/g"


@given(topics)
def test_empty_denies_and_none_allows(topic: str) -> None:
    empty = AuthRules.from_patterns([], None)
    assert not can_publish(empty, topic)
    assert not can_subscribe(empty, topic)
    assert can_publish(None, topic)
    assert can_subscribe(None, topic)


@given(topics)
def test_match_all_pattern_allows_everything(topic: str) -> None:
    rules = AuthRules.from_patterns([".*"], [".*"])
    assert can_publish(rules, topic)
    assert can_subscribe(rules, topic)


def test_compile_is_cached_and_invalid_is_value_error() -> None:
    assert compile_pattern("a.*") is compile_pattern("a.*")
    with pytest.raises(ValueError, match="invalid auth rule pattern"):
        compile_pattern("(")


def test_union_dedups() -> None:
    a = AuthRules.from_patterns(["x"], ["y"])
    b = AuthRules.from_patterns(["x", "z"], [])
    u = a.union(b)
    assert [p.pattern for p in u.pub] == ["x", "z"]
    assert [p.pattern for p in u.sub] == ["y"]


def test_cn_helpers() -> None:
    assert cn_matches("dev", "my-device")
    assert not cn_matches("dev", "my-device", full_match=True)
    assert strict_cn("my-.*", "my-device")
    assert not strict_cn("dev", "device")
    assert substitute_cn("t/${cn}/x", "a.b") == "t/" + re.escape("a.b") + "/x"
