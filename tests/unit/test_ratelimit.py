"""Token buckets in TBMQ's capacity:seconds form (pytbmq.ratelimit)."""

from __future__ import annotations

import pytest

from pytbmq.ratelimit import RateLimit, describe


def test_starts_full_then_refuses() -> None:
    limit = RateLimit([(3, 1)], now=0.0)
    assert [limit.try_take(0.0) for _ in range(4)] == [True, True, True, False]
    assert limit.dropped == 1


def test_refills_continuously() -> None:
    limit = RateLimit([(10, 1)], now=0.0)
    for _ in range(10):
        assert limit.try_take(0.0)
    assert not limit.try_take(0.05)  # half a token
    assert limit.try_take(0.1)  # one token after 0.1 s
    assert not limit.try_take(0.1)


def test_never_more_than_capacity() -> None:
    limit = RateLimit([(2, 1)], now=0.0)
    assert sum(limit.try_take(1000.0) for _ in range(5)) == 2


def test_every_bucket_must_allow_and_all_are_charged() -> None:
    limit = RateLimit([(10, 1), (3, 60)], now=0.0)  # the long bucket is the tighter one
    assert sum(limit.try_take(t * 0.5) for t in range(10)) == 3
    # the short bucket was charged for the three that passed only
    limit2 = RateLimit([(2, 1), (100, 60)], now=0.0)
    assert [limit2.try_take(0.0) for _ in range(3)] == [True, True, False]


def test_needs_a_pair() -> None:
    with pytest.raises(ValueError, match="capacity:seconds"):
        RateLimit([], now=0.0)


def test_describe() -> None:
    assert describe([(10, 1), (300, 60)]) == "10 per 1 s, 300 per 60 s"
