"""Unit tests for pytbmq.topics: validation, the subscription trie, shared groups, retained."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytbmq.topics import (
    RetainedStore,
    SharedGroup,
    SubscriptionTrie,
    parse_shared,
    topic_levels,
    validate_topic_filter,
    validate_topic_name,
)

T = TypeVar("T")

# --------------------------------------------------------------------------- reference


def ref_match(topic_filter: str, topic: str) -> bool:
    """Level-by-level matcher straight from spec section 4.7."""
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    if topic.startswith("$") and f_levels[0] in ("+", "#"):
        return False  # [MQTT-4.7.2-1]
    for i, f_level in enumerate(f_levels):
        if f_level == "#":
            return True
        if i >= len(t_levels):
            return False
        if f_level != "+" and f_level != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)


def matched_values(trie: SubscriptionTrie[T], topic: str) -> list[T]:
    normal, _ = trie.match(topic)
    return [v for d in normal for v in d.values()]


def matched_groups(trie: SubscriptionTrie[T], topic: str) -> list[tuple[str, str]]:
    _, shared = trie.match(topic)
    return [(g.name, g.topic_filter) for g in shared]


# --------------------------------------------------------------------------- validation

VALID_NAMES = [
    "sport/tennis/player1",
    "sport/tennis/player1/ranking",
    "sport",
    "/",
    "/finance",
    "sport/",
    "a//b",
    "$SYS/broker/clients",
    "$share/g/a",  # only a name: '$share' is not special in PUBLISH
    "ünïcødé/topic",
    "x" * 65535,
    "é" * 32767,  # 65534 bytes
]
INVALID_NAMES = [
    "",  # [MQTT-4.7.3-1]
    "#",  # [MQTT-4.7.1-1]
    "+",
    "sport/#",
    "sport/+/player1",
    "sport+",
    "sport/tennis#",
    "a\x00b",  # [MQTT-4.7.3-2]
    "x" * 65536,  # [MQTT-4.7.3-3]
    "é" * 32768,  # 65536 bytes
    "bad\ud800surrogate",
]


@pytest.mark.parametrize("name", VALID_NAMES)
def test_valid_topic_names(name: str) -> None:
    assert validate_topic_name(name)


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_topic_names(name: str) -> None:
    assert not validate_topic_name(name)


VALID_FILTERS = [
    "#",
    "sport/#",
    "sport/tennis/player1/#",
    "sport/tennis/#",
    "+",
    "+/tennis/#",
    "sport/+",
    "sport/+/player1",
    "+/+",
    "/+",
    "/finance",
    "$SYS/#",
    "$SYS/monitor/+",
    "a//b",
    "/",
    "sport/tennis/player1",
    "$share/g/a/b",
    "$share/g/#",
    "$share/group-1/+/x",
    "$share/g//",
    "$sharex/a",  # not a shared form: an ordinary filter
]
INVALID_FILTERS = [
    "",
    "sport/tennis#",  # [MQTT-4.7.1-2]
    "sport/tennis/#/ranking",
    "#/a",
    "##",
    "sport+",  # [MQTT-4.7.1-3]
    "+sport",
    "sport/+tennis",
    "++",
    "a/b+/c",
    "a\x00b",
    "x" * 65536,
    "$share//a",  # [MQTT-4.8.2-1]
    "$share/g",
    "$share/g/",
    "$share/g+/a",  # [MQTT-4.8.2-2]
    "$share/g#/a",
    "$share/g/a#",
    "$share/g/#/a",
    "$share/",
]


@pytest.mark.parametrize("topic_filter", VALID_FILTERS)
def test_valid_topic_filters(topic_filter: str) -> None:
    assert validate_topic_filter(topic_filter)


@pytest.mark.parametrize("topic_filter", INVALID_FILTERS)
def test_invalid_topic_filters(topic_filter: str) -> None:
    assert not validate_topic_filter(topic_filter)


@pytest.mark.parametrize(
    ("topic_filter", "expected"),
    [
        ("$share/g/a/b", ("g", "a/b")),
        ("$share/g/#", ("g", "#")),
        ("$share/g//", ("g", "/")),
        ("$share/consumer1/sport/tennis/+", ("consumer1", "sport/tennis/+")),
        ("a/b", (None, "a/b")),
        ("$SYS/#", (None, "$SYS/#")),
        ("$sharex/a", (None, "$sharex/a")),
        ("$share", (None, "$share")),
    ],
)
def test_parse_shared(topic_filter: str, expected: tuple[str | None, str]) -> None:
    assert parse_shared(topic_filter) == expected


@pytest.mark.parametrize(
    "topic_filter",
    ["$share//a", "$share/g", "$share/g/", "$share/g+/a", "$share/g#/a", "$share/g/a+", "$share/"],
)
def test_parse_shared_rejects(topic_filter: str) -> None:
    with pytest.raises(ValueError):
        parse_shared(topic_filter)


def test_topic_levels() -> None:
    assert topic_levels("a/b/c") == ["a", "b", "c"]
    assert topic_levels("/finance") == ["", "finance"]
    assert topic_levels("a//") == ["a", "", ""]
    assert topic_levels("a") == ["a"]


# --------------------------------------------------------------------------- matching

SPEC_MATCHES = [
    # 4.7.1.2 multi-level wildcard
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
    ("sport/#", "sport", True),
    ("#", "sport/tennis", True),
    ("#", "/", True),
    # 4.7.1.3 single-level wildcard
    ("sport/tennis/+", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/player2", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),
    ("+/+", "/finance", True),
    ("/+", "/finance", True),
    ("+", "/finance", False),
    # 4.7.2 topics beginning with $
    ("#", "$SYS/x", False),
    ("+/x", "$SYS/x", False),
    ("+/monitor/Clients", "$SYS/monitor/Clients", False),
    ("$SYS/#", "$SYS/x", True),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
    ("$SYS/#", "$SYS", True),
    # empty levels
    ("a/+/b", "a//b", True),
    ("a//b", "a//b", True),
    ("a/b", "a//b", False),
    ("a/+", "a", False),
    ("a/#", "a", True),
    ("a/#", "a/", True),
    ("+", "", True),
    ("a/+/+", "a//", True),
    # '$' only special in the first level
    ("a/+", "a/$x", True),
    ("a/#", "a/$x/y", True),
]


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), SPEC_MATCHES)
def test_spec_matches(topic_filter: str, topic: str, expected: bool) -> None:
    assert ref_match(topic_filter, topic) is expected
    trie: SubscriptionTrie[str] = SubscriptionTrie()
    trie.add(topic_filter, "c1", "v")
    assert (matched_values(trie, topic) == ["v"]) is expected
    trie.add(topic_filter, "c2", "w", group="g")
    assert (matched_groups(trie, topic) == [("g", topic_filter)]) is expected
    store: RetainedStore[int] = RetainedStore()
    if validate_topic_name(topic):
        store.set(topic, 1)
        assert (store.match(topic_filter) == [(topic, 1)]) is expected


def test_match_several_nodes() -> None:
    trie: SubscriptionTrie[str] = SubscriptionTrie()
    for f in ["#", "a/#", "a/b/#", "a/+/c", "+/b/c", "a/b/c", "a/b/c/#", "+/+/+", "a/b", "$SYS/#"]:
        trie.add(f, "x", f)
    assert sorted(matched_values(trie, "a/b/c")) == sorted(
        ["#", "a/#", "a/b/#", "a/+/c", "+/b/c", "a/b/c", "a/b/c/#", "+/+/+"]
    )
    assert sorted(matched_values(trie, "a/b")) == sorted(["#", "a/#", "a/b/#", "a/b"])
    assert matched_values(trie, "$SYS/a") == ["$SYS/#"]
    assert matched_values(trie, "zzz") == ["#"]


def test_match_returns_only_non_empty() -> None:
    trie: SubscriptionTrie[int] = SubscriptionTrie()
    trie.add("a/b", "c1", 1)
    trie.add("a/b", "c2", 2, group="g")
    trie.add("a/b/c", "c3", 3)  # makes a/b an inner node too
    normal, shared = trie.match("a/b")
    assert normal == [{"c1": 1}]
    assert [g.name for g in shared] == ["g"]
    trie.remove("a/b", "c1")
    normal, shared = trie.match("a/b")
    assert normal == []
    assert len(shared) == 1
    trie.remove("a/b", "c2", group="g")
    assert trie.match("a/b") == ([], [])
    assert trie.match("a/b/c") == ([{"c3": 3}], [])


def test_add_replace_remove_and_prune() -> None:
    trie: SubscriptionTrie[int] = SubscriptionTrie()
    filters = ["a/b/c", "a/+/c", "a/#", "#", "+", "/x", "a//b", "$SYS/#"]
    for f in filters:
        assert trie.add(f, "c1", 1) is False
        assert trie.add(f, "c2", 2) is False
        assert trie.add(f, "c1", 10) is True  # replaced
        assert trie.add(f, "c3", 3, group="g") is False
        assert trie.add(f, "c3", 30, group="g") is True
        assert trie.add(f, "c3", 3, group="h") is False  # a different group is another key
    assert len(trie) == len(filters) * 4
    # a/b/c, a/+/c, a/# and # match; c1's value was replaced by 10
    assert sorted(matched_values(trie, "a/b/c")) == [2, 2, 2, 2, 10, 10, 10, 10]
    assert sorted(matched_groups(trie, "a/b/c")) == sorted(
        (g, f) for g in "gh" for f in ["a/b/c", "a/+/c", "a/#", "#"]
    )
    assert trie.remove("a/b/c", "nobody") is False
    assert trie.remove("a/b/zz", "c1") is False
    assert trie.remove("a/b/c", "c3") is False  # that one is shared, not normal
    assert trie.remove("a/b/c", "c3", group="zz") is False
    for f in filters:
        assert trie.remove(f, "c1") is True
        assert trie.remove(f, "c1") is False
        assert trie.remove(f, "c2") is True
        assert trie.remove(f, "c3", group="g") is True
        assert trie.remove(f, "c3", group="h") is True
        assert trie.remove(f, "c3", group="h") is False
    assert len(trie) == 0
    root = trie._root
    assert root.children == {}
    assert root.plus is None and root.hash is None
    assert root.subs is None and root.shared is None
    assert trie.match("a/b/c") == ([], [])


def test_prune_keeps_shared_prefix() -> None:
    trie: SubscriptionTrie[int] = SubscriptionTrie()
    trie.add("a/b/c", "c1", 1)
    trie.add("a/b", "c1", 1)
    trie.remove("a/b/c", "c1")
    assert list(trie._root.children["a"].children) == ["b"]
    assert trie._root.children["a"].children["b"].children == {}
    assert matched_values(trie, "a/b") == [1]


@pytest.mark.parametrize("bad", ["", "a/#/b", "sport+", "a\x00"])
def test_add_rejects_invalid_filter(bad: str) -> None:
    trie: SubscriptionTrie[int] = SubscriptionTrie()
    with pytest.raises(ValueError):
        trie.add(bad, "c", 1)
    assert len(trie) == 0


@pytest.mark.parametrize("bad_group", ["", "g+", "g#", "g/h"])
def test_add_rejects_invalid_group(bad_group: str) -> None:
    trie: SubscriptionTrie[int] = SubscriptionTrie()
    with pytest.raises(ValueError):
        trie.add("a", "c", 1, group=bad_group)


# --------------------------------------------------------------------------- shared groups


def only_group(trie: SubscriptionTrie[int], topic: str) -> SharedGroup[int]:
    _, shared = trie.match(topic)
    assert len(shared) == 1
    return shared[0]


def rotate(
    group: SharedGroup[int], times: int, eligible: Callable[[str, int], bool] | None = None
) -> list[str]:
    out = []
    for _ in range(times):
        picked = group.next_member(eligible)
        out.append("-" if picked is None else picked[0])
    return out


def test_shared_round_robin() -> None:
    trie: SubscriptionTrie[int] = SubscriptionTrie()
    for i, cid in enumerate(["a", "b", "c"]):
        trie.add("t/+", cid, i, group="g")
    group = only_group(trie, "t/1")
    assert group.name == "g" and group.topic_filter == "t/+"
    assert group.members == {"a": 0, "b": 1, "c": 2}
    assert len(group) == 3
    assert group.next_member() == ("a", 0)
    assert rotate(group, 6) == ["b", "c", "a", "b", "c", "a"]


def test_shared_skips_ineligible() -> None:
    trie: SubscriptionTrie[int] = SubscriptionTrie()
    for i, cid in enumerate(["a", "b", "c"]):
        trie.add("t", cid, i, group="g")
    group = only_group(trie, "t")
    seen: list[str] = []

    def not_b(cid: str, value: int) -> bool:
        seen.append(cid)
        return cid != "b"

    assert rotate(group, 4, not_b) == ["a", "c", "a", "c"]
    assert rotate(group, 1) == ["a"]  # after 'c' comes 'a' again
    assert rotate(group, 1) == ["b"]
    assert rotate(group, 2, lambda cid, v: v == 0) == ["a", "a"]
    assert group.next_member(lambda cid, v: False) is None
    assert rotate(group, 1) == ["b"]  # a failed search does not move the cursor


def test_shared_membership_changes_mid_rotation() -> None:
    trie: SubscriptionTrie[int] = SubscriptionTrie()
    for i, cid in enumerate(["a", "b", "c"]):
        trie.add("t", cid, i, group="g")
    group = only_group(trie, "t")
    assert rotate(group, 2) == ["a", "b"]
    # removing the member returned last: the rotation resumes with its successor
    trie.remove("t", "b", group="g")
    assert rotate(group, 1) == ["c"]
    # a new member joins at the end of the rotation
    trie.add("t", "d", 3, group="g")
    assert rotate(group, 3) == ["d", "a", "c"]
    # replacing a member's value keeps its place and the cursor
    trie.add("t", "a", 100, group="g")
    assert group.next_member() == ("d", 3)
    assert group.next_member() == ("a", 100)
    # removing a member other than the last one returned
    trie.remove("t", "d", group="g")
    assert rotate(group, 3) == ["c", "a", "c"]
    # several changes before the next call, including the last-returned one
    trie.add("t", "e", 4, group="g")  # order: a c e, last returned c
    trie.remove("t", "c", group="g")  # last returned removed -> resume after a
    trie.remove("t", "a", group="g")  # and its predecessor too
    assert rotate(group, 2) == ["e", "e"]
    trie.remove("t", "e", group="g")
    assert trie.match("t") == ([], [])
    assert group.next_member() is None  # a detached, empty group


def test_shared_remove_first_member_when_last_returned() -> None:
    trie: SubscriptionTrie[int] = SubscriptionTrie()
    for i, cid in enumerate(["a", "b", "c"]):
        trie.add("t", cid, i, group="g")
    group = only_group(trie, "t")
    assert rotate(group, 1) == ["a"]
    trie.remove("t", "a", group="g")
    assert rotate(group, 3) == ["b", "c", "b"]
    assert rotate(group, 1) == ["c"]
    trie.remove("t", "c", group="g")  # last element, last returned
    assert rotate(group, 2) == ["b", "b"]


def test_shared_groups_are_per_filter_and_name() -> None:
    trie: SubscriptionTrie[int] = SubscriptionTrie()
    trie.add("a/+", "c1", 1, group="g")
    trie.add("a/#", "c1", 1, group="g")
    trie.add("a/+", "c2", 2, group="h")
    trie.add("a/+", "c3", 3)
    assert sorted(matched_groups(trie, "a/x")) == [("g", "a/#"), ("g", "a/+"), ("h", "a/+")]
    assert len(trie) == 4


# --------------------------------------------------------------------------- hypothesis

TOPIC_LEVEL = st.sampled_from(["", "a", "b", "$x", "c"])
FILTER_LEVEL = st.sampled_from(["", "a", "b", "$x", "+"])
TOPICS = st.lists(TOPIC_LEVEL, min_size=1, max_size=4).map("/".join).filter(bool)


@st.composite
def filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(FILTER_LEVEL, min_size=0, max_size=4))
    if not levels or draw(st.booleans()):
        levels.append("#")
    return "/".join(levels) or "+"


SUBSCRIPTIONS = st.lists(
    st.tuples(filters(), st.sampled_from(["c1", "c2", "c3"]), st.sampled_from([None, "g", "h"])),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(subs=SUBSCRIPTIONS, topics=st.lists(TOPICS, min_size=1, max_size=10))
def test_match_agrees_with_reference(
    subs: list[tuple[str, str, str | None]], topics: list[str]
) -> None:
    trie: SubscriptionTrie[tuple[str, str]] = SubscriptionTrie()
    keys = set()
    for f, cid, group in subs:
        assert validate_topic_filter(f)
        replaced = trie.add(f, cid, (f, cid), group=group)
        assert replaced == ((f, cid, group) in keys)
        keys.add((f, cid, group))
    assert len(trie) == len(keys)
    for topic in topics:
        normal, shared = trie.match(topic)
        got = [v for d in normal for v in d.values()]
        assert all(normal)
        assert len(got) == len(set(got))
        want = {(f, cid) for f, cid, group in keys if group is None and ref_match(f, topic)}
        assert set(got) == want
        got_groups = [(g.name, g.topic_filter) for g in shared]
        assert len(got_groups) == len(set(got_groups))
        want_groups = {(g, f) for f, _, g in keys if g is not None and ref_match(f, topic)}
        assert set(got_groups) == want_groups
        for g in shared:
            assert g.members
            assert set(g.members) == {c for f, c, gg in keys if (gg, f) == (g.name, g.topic_filter)}
    # remove everything in random-ish order: the trie prunes back to an empty root
    for f, cid, group in sorted(keys, key=lambda k: (k[1], k[0], k[2] or "")):
        assert trie.remove(f, cid, group=group)
        assert not trie.remove(f, cid, group=group)
    assert len(trie) == 0
    assert trie._root.is_empty()


@settings(max_examples=300, deadline=None)
@given(
    topics=st.lists(TOPICS, max_size=25),
    deleted=st.lists(TOPICS, max_size=10),
    query=st.one_of(filters(), TOPICS),
)
def test_retained_agrees_with_reference(topics: list[str], deleted: list[str], query: str) -> None:
    store: RetainedStore[int] = RetainedStore()
    model: dict[str, int] = {}
    for i, topic in enumerate(topics):
        store.set(topic, i)
        model[topic] = i
    for topic in deleted:
        assert store.delete(topic) == (topic in model)
        model.pop(topic, None)
    assert len(store) == len(model)
    assert dict(store.items()) == model
    for topic, message in model.items():
        assert store.get(topic) == message
    got = store.match(query)
    assert len(got) == len(set(got))
    assert sorted(got) == sorted((t, m) for t, m in model.items() if ref_match(query, t))
    for topic in list(model):
        assert store.delete(topic)
    assert len(store) == 0
    assert store._root.children == {}


# --------------------------------------------------------------------------- retained


def test_retained_set_replace_delete_prune() -> None:
    store: RetainedStore[str] = RetainedStore()
    store.set("a/b/c", "1")
    store.set("a/b", "2")
    store.set("a/b/c", "3")  # replace
    assert len(store) == 2
    assert store.get("a/b/c") == "3"
    assert store.get("a") is None
    assert store.match("a/b/c") == [("a/b/c", "3")]
    assert store.match("a") == []
    assert store.delete("a/b") is True
    assert store.delete("a/b") is False
    assert store.delete("nope") is False
    assert store.get("a/b") is None
    assert store.match("a/b") == []
    assert store.match("a/+/c") == [("a/b/c", "3")]  # inner node kept
    assert store.delete("a/b/c") is True
    assert store._root.children == {}
    assert len(store) == 0
    assert list(store.items()) == []


def test_retained_delete_keeps_ancestor_with_message() -> None:
    store: RetainedStore[int] = RetainedStore()
    store.set("a", 1)
    store.set("a/b/c", 2)
    store.delete("a/b/c")
    assert list(store._root.children) == ["a"]
    assert store._root.children["a"].children == {}
    assert store.match("#") == [("a", 1)]


def test_retained_wildcards_and_dollar_rule() -> None:
    store: RetainedStore[int] = RetainedStore()
    topics = ["sport", "sport/tennis", "sport/tennis/p1", "/finance", "$SYS/x", "$SYS/y/z", "a//b"]
    for i, t in enumerate(topics):
        store.set(t, i)

    def match(f: str) -> list[str]:
        return sorted(t for t, _ in store.match(f))

    assert match("#") == sorted(["sport", "sport/tennis", "sport/tennis/p1", "/finance", "a//b"])
    assert match("sport/#") == ["sport", "sport/tennis", "sport/tennis/p1"]
    assert match("sport/+") == ["sport/tennis"]
    assert match("+") == ["sport"]
    assert match("+/+") == ["/finance", "sport/tennis"]
    assert match("+/x") == []
    assert match("$SYS/#") == ["$SYS/x", "$SYS/y/z"]
    assert match("$SYS/+") == ["$SYS/x"]
    assert match("a/+/b") == ["a//b"]
    assert match("/+") == ["/finance"]


def test_retained_set_rejects_invalid_topic() -> None:
    store: RetainedStore[int] = RetainedStore()
    for bad in ["", "a/+", "#"]:
        with pytest.raises(ValueError):
            store.set(bad, 1)
    assert len(store) == 0
