"""Property-based check of topic filter matching against an independent reference matcher."""

from __future__ import annotations

import queue

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .helpers import V5, V311, uid

LEVELS = ["a", "b", ""]
topic_names = st.lists(st.sampled_from(LEVELS), min_size=1, max_size=4).map("/".join)
filter_levels = st.lists(st.sampled_from([*LEVELS, "+"]), min_size=1, max_size=4)
topic_filters = st.tuples(filter_levels, st.booleans()).map(
    lambda t: "/".join(t[0] + (["#"] if t[1] else []))
)


def reference_match(topic_filter: str, topic: str) -> bool:
    """MQTT topic matching as specified (no $-topics are generated here)."""
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    for i, level in enumerate(f_levels):
        if level == "#":
            return True
        if i >= len(t_levels):
            return False
        if level not in ("+", t_levels[i]):
            return False
    return len(f_levels) == len(t_levels)


def _concrete(topic_filter: str) -> str:
    """A topic that certainly matches ``topic_filter``."""
    levels = [("a" if level == "+" else level) for level in topic_filter.split("/")]
    if levels[-1] == "#":
        levels = levels[:-1] or ["a"]
    return "/".join(levels)


def test_reference_matcher_sanity():
    assert reference_match("a/#", "a")
    assert reference_match("a/+", "a/")
    assert reference_match("+/+", "/")
    assert not reference_match("a/+", "a")
    assert not reference_match("a", "a/b")
    assert reference_match("#", "a/b/c")


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    topic_filter=topic_filters,
    topics=st.lists(topic_names, min_size=1, max_size=6),
    v5=st.booleans(),
)
def test_broker_matching_agrees_with_reference(broker, clients, topic_filter, topics, v5):
    version = V5 if v5 else V311
    prefix = f"hyp/{uid()}"
    sub = clients.connected(broker, version)
    pub = clients.connected(broker, version)
    try:
        assert sub.subscribe(f"{prefix}/{topic_filter}", 1) == [1]
        for index, topic in enumerate(topics):
            pub.publish(f"{prefix}/{topic}", str(index).encode(), qos=1)
        pub.publish(f"{prefix}/{_concrete(topic_filter)}", b"marker", qos=1)

        received = []
        while True:
            try:
                msg = sub.messages.get(timeout=5)
            except queue.Empty:
                raise AssertionError(f"marker not received; got {received}") from None
            if msg.payload == b"marker":
                break
            received.append((msg.topic, int(msg.payload)))
        expected = [
            (f"{prefix}/{topic}", index)
            for index, topic in enumerate(topics)
            if reference_match(topic_filter, topic)
        ]
        assert received == expected, f"filter {topic_filter!r}"
    finally:
        sub.close()
        pub.close()
