"""Token buckets in TBMQ's `capacity:seconds,...` form (MQTT_*_RATE_LIMITS_*).

Owns the rate-limit arithmetic: a `RateLimit` holds one bucket per `capacity:seconds`
pair; a message passes when every bucket has a token, and then takes one from each.
Buckets start full and refill continuously (capacity / seconds tokens per second, as
bucket4j's greedy refill that TBMQ uses). The link keeps one per client for incoming
and outgoing messages; the broker shares one for its total. Pure: the caller passes
the (monotonic) time.
"""

from __future__ import annotations

from collections.abc import Sequence


class RateLimit:
    __slots__ = ("_capacity", "_last", "_rate", "_tokens", "dropped")

    def __init__(self, pairs: Sequence[tuple[int, int]], now: float) -> None:
        if not pairs:
            raise ValueError("a rate limit needs at least one capacity:seconds pair")
        self._capacity = [float(c) for c, _ in pairs]
        self._rate = [c / s for c, s in pairs]
        self._tokens = list(self._capacity)
        self._last = now
        self.dropped = 0  # messages refused so far

    def try_take(self, now: float) -> bool:
        """Take one token from every bucket, or none and return False."""
        elapsed = now - self._last
        tokens = self._tokens
        if elapsed > 0:
            self._last = now
            for i, cap in enumerate(self._capacity):
                t = tokens[i] + elapsed * self._rate[i]
                tokens[i] = cap if t > cap else t
        for t in tokens:
            if t < 1.0:
                self.dropped += 1
                return False
        for i in range(len(tokens)):
            tokens[i] -= 1.0
        return True


def describe(pairs: Sequence[tuple[int, int]]) -> str:
    return ", ".join(f"{c} per {s} s" for c, s in pairs)
