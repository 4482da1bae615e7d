"""Per-listener admission control: how many connections a listener holds, how fast one
source address may open new ones, and how many TLS handshakes run at once.

`Admission` decides, for every connection a listener accepts, whether it may stay
(LISTENER_<TYPE>_MAX_CONNECTIONS, LISTENER_<TYPE>_NEW_CONNECTIONS_PER_IP_PER_SEC). On a
listener with a connection limit, an admitted connection holds a `Ticket` that it gives
back, once, when it ends; open connections count from the accept, so TLS handshakes,
WebSocket upgrades and clients that have not sent CONNECT yet all count. A refused
connection is closed by pytbmq.listeners before a byte of it is read, and before any TLS
work; refusals are counted by reason (`RefusalStats`) and logged at most once per second
per listener: the first at once, the rest as one summary line. `HandshakeSlots` bounds the
TLS handshakes in progress (LISTENER_<SSL|WSS>_MAX_HANDSHAKES_IN_PROGRESS); the accept
loop takes a slot before it accepts, so waiting connections cost nothing but a place in
the kernel's accept queue. None of this touches connections already admitted.

The counting and rate logic is pure, with an injected clock and timer. Used by
pytbmq.listeners; built by pytbmq.broker from the settings.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

LOG_PERIOD = 1.0  # seconds: at most one refusal line (and one slots line) per listener
MAX_TRACKED_ADDRESSES = 100_000  # source addresses the rate limiter remembers at most

FULL = "max_connections"  # refusal reasons: keys of RefusalStats.refused
RATE = "rate"


class Cancellable(Protocol):
    def cancel(self) -> None: ...


Clock = Callable[[], float]
Schedule = Callable[[float, Callable[[], None]], Cancellable]


def _call_later(delay: float, callback: Callable[[], None]) -> Cancellable:
    return asyncio.get_running_loop().call_later(delay, callback)


def peer_host(peer: object) -> str:
    """The address part of a peername (IPv4 or IPv6 tuple); the whole thing otherwise."""
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer)


def peer_text(peer: object) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """One listener's limits; 0 means unlimited."""

    max_connections: int = 0  # LISTENER_<TYPE>_MAX_CONNECTIONS
    new_connections_per_ip_per_sec: int = 0  # LISTENER_<TYPE>_NEW_CONNECTIONS_PER_IP_PER_SEC

    @property
    def limited(self) -> bool:
        return self.max_connections > 0 or self.new_connections_per_ip_per_sec > 0


class RateLimiter:
    """At most `per_sec` new connections per second per source address, in bursts of at
    most `per_sec`: a token bucket of `per_sec` tokens refilled at `per_sec` per second,
    kept as one number per address (its "theoretical arrival time", GCRA).

    Memory stays bounded: an address whose bucket is full again (idle for at most a
    second) is forgotten, oldest first, on every call; beyond `max_tracked` addresses the
    least recently admitted one is forgotten early (it starts again with a full bucket).
    Refused attempts take no token.
    """

    def __init__(
        self, per_sec: int, clock: Clock = time.monotonic, max_tracked: int = MAX_TRACKED_ADDRESSES
    ) -> None:
        if per_sec <= 0:
            raise ValueError("per_sec must be positive")
        self.per_sec = per_sec
        self._interval = 1.0 / per_sec
        self._tolerance = (per_sec - 1) * self._interval + 1e-9  # a burst of per_sec
        self._clock = clock
        self._max_tracked = max_tracked
        # address -> when its bucket is full again; least recently admitted first
        self._due: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._due)

    def allow(self, address: str) -> bool:
        """True (and one token taken) if `address` may open a connection now."""
        now = self._clock()
        due = self._due
        while due:  # forget addresses whose bucket is full again
            first, full_at = next(iter(due.items()))
            if full_at > now:
                break
            del due[first]
        full_at = max(due.get(address, now), now)
        if full_at - now > self._tolerance:
            return False
        due[address] = full_at + self._interval
        due.move_to_end(address)
        if len(due) > self._max_tracked:
            due.popitem(last=False)
        return True


class RefusalStats:
    """Refused connections of one listener by reason (FULL, RATE), for the metrics to come."""

    def __init__(self) -> None:
        self.refused: Counter[str] = Counter()


class Ticket:
    """An admitted connection's place in its listener's count; `release` gives it back
    (only the first call counts)."""

    __slots__ = ("_admission",)

    def __init__(self, admission: Admission | None) -> None:
        self._admission = admission

    def release(self) -> None:
        admission = self._admission
        if admission is not None:
            self._admission = None
            admission.open -= 1


UNCOUNTED = Ticket(None)  # the ticket of every connection of a listener without a limit


class Admission:
    """Admits or refuses the new connections of one listener (see the module docstring)."""

    def __init__(
        self,
        listener: str,
        setting_prefix: str,
        limits: AdmissionLimits,
        *,
        clock: Clock = time.monotonic,
        schedule: Schedule = _call_later,
        log_period: float = LOG_PERIOD,
    ) -> None:
        self.listener = listener  # "tcp", "ssl", "ws" or "wss"
        self.setting_prefix = setting_prefix  # "LISTENER_TCP", ...
        self.limits = limits
        self.open = 0  # connections holding a ticket (only when max_connections is set)
        self.stats = RefusalStats()
        per_sec = limits.new_connections_per_ip_per_sec
        self.rate = RateLimiter(per_sec, clock) if per_sec > 0 else None
        self._clock = clock
        self._schedule = schedule
        self._period = log_period
        self._logged_at = -math.inf
        self._unlogged: Counter[str] = Counter()  # refusals since the last line
        self._latest = ""  # peer of the latest unlogged refusal
        self._timer: Cancellable | None = None

    @property
    def limited(self) -> bool:
        """Whether connections must pass through admission at all."""
        return self.limits.limited

    @property
    def counts(self) -> bool:
        """Whether admitted connections hold a ticket to give back."""
        return self.limits.max_connections > 0

    def describe(self) -> str:
        """The limits in words, for the startup log line."""
        limits = self.limits
        parts = []
        if limits.max_connections:
            parts.append(f"at most {limits.max_connections} connection(s)")
        if limits.new_connections_per_ip_per_sec:
            parts.append(
                f"at most {limits.new_connections_per_ip_per_sec} new connection(s) "
                "per second per source address"
            )
        return ", ".join(parts) or "no connection limits"

    def admit(self, peer: object) -> Ticket | None:
        """A ticket for a new connection from `peer` (a peername), or None: close it."""
        limits = self.limits
        if limits.max_connections and self.open >= limits.max_connections:
            self._refused(FULL, peer)
            return None
        rate = self.rate
        if rate is not None and not rate.allow(peer_host(peer)):
            self._refused(RATE, peer)
            return None
        if not limits.max_connections:
            return UNCOUNTED
        self.open += 1
        return Ticket(self)

    def close(self) -> None:
        """The listener stops: log what is still unlogged now."""
        if self._timer is not None:
            self._timer.cancel()
        self._flush()

    # ------------------------------------------------------------ log lines
    def _why(self, reason: str, peer: object) -> str:
        limits, prefix = self.limits, self.setting_prefix
        if reason == FULL:
            return (
                f"{self.open} connection(s) open, the most {prefix}_MAX_CONNECTIONS="
                f"{limits.max_connections} allows"
            )
        per_sec = limits.new_connections_per_ip_per_sec
        return (
            f"more than {per_sec} new connection(s) per second from {peer_host(peer)} "
            f"({prefix}_NEW_CONNECTIONS_PER_IP_PER_SEC={per_sec})"
        )

    def _refused(self, reason: str, peer: object) -> None:
        self.stats.refused[reason] += 1
        now = self._clock()
        if self._timer is None and now - self._logged_at >= self._period:
            self._logged_at = now
            log.warning(
                "listener %s refused a connection from %s: %s",
                self.listener,
                peer_text(peer),
                self._why(reason, peer),
            )
            return
        self._unlogged[reason] += 1
        self._latest = peer_text(peer)
        if self._timer is None:
            delay = max(self._logged_at + self._period - now, 0.0)
            self._timer = self._schedule(delay, self._flush)

    def _flush(self) -> None:
        self._timer = None
        counts = self._unlogged
        if not counts:
            return
        self._unlogged = Counter()
        self._logged_at = self._clock()
        prefix, limits = self.setting_prefix, self.limits
        names = {
            FULL: f"{prefix}_MAX_CONNECTIONS={limits.max_connections}",
            RATE: f"{prefix}_NEW_CONNECTIONS_PER_IP_PER_SEC="
            f"{limits.new_connections_per_ip_per_sec}",
        }
        log.warning(
            "listener %s refused %d more connection(s) within %gs: %s; the latest from %s",
            self.listener,
            sum(counts.values()),
            self._period,
            ", ".join(f"{n} over {names[reason]}" for reason, n in sorted(counts.items())),
            self._latest,
        )


class HandshakeSlots:
    """At most `limit` TLS handshakes in progress on one listener.

    The accept loop calls `acquire` before it accepts a connection and the handshake gives
    the slot back with `release` however it ends (success, failure, timeout). While every
    slot is taken, new connections wait in the kernel's accept queue; a line says so, at
    most once per second.
    """

    def __init__(
        self,
        listener: str,
        setting: str,
        limit: int,
        *,
        clock: Clock = time.monotonic,
        log_period: float = LOG_PERIOD,
    ) -> None:
        if limit <= 0:
            raise ValueError("limit must be positive")
        self.listener = listener
        self.setting = setting  # "LISTENER_SSL_MAX_HANDSHAKES_IN_PROGRESS"
        self.limit = limit
        self.busy = 0  # handshakes in progress (and connections being checked)
        self.waits = 0  # times the accept loop found every slot taken, for the metrics
        self._free = asyncio.Semaphore(limit)
        self._clock = clock
        self._period = log_period
        self._logged_at = -math.inf

    async def acquire(self) -> None:
        if self._free.locked():
            self.waits += 1
            now = self._clock()
            if now - self._logged_at >= self._period:
                self._logged_at = now
                log.warning(
                    "listener %s: all %d TLS handshake slot(s) are busy (%s=%d); "
                    "new connections wait in the accept queue",
                    self.listener,
                    self.limit,
                    self.setting,
                    self.limit,
                )
        await self._free.acquire()
        self.busy += 1

    def release(self) -> None:
        self.busy -= 1
        self._free.release()


__all__ = [
    "FULL",
    "RATE",
    "UNCOUNTED",
    "Admission",
    "AdmissionLimits",
    "HandshakeSlots",
    "RateLimiter",
    "RefusalStats",
    "Ticket",
    "peer_host",
    "peer_text",
]
