"""Per-listener admission control (pytbmq.admission) and the listeners' GatedProtocol:
connection counting, the per-address rate limiter, refusal statistics and log lines, and
the handshake slots, all with an injected clock (no real time passes)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from pytbmq.admission import (
    FULL,
    RATE,
    UNCOUNTED,
    Admission,
    AdmissionLimits,
    HandshakeSlots,
    RateLimiter,
    Ticket,
    peer_host,
    peer_text,
)
from pytbmq.listeners import GatedProtocol

PEER = ("192.0.2.1", 40000)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeTimer:
    def __init__(self, delay: float, callback: Callable[[], None]) -> None:
        self.delay = delay
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeScheduler:
    def __init__(self) -> None:
        self.timers: list[FakeTimer] = []

    def __call__(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(delay, callback)
        self.timers.append(timer)
        return timer

    def pending(self) -> list[FakeTimer]:
        return [t for t in self.timers if not t.cancelled]

    def fire(self) -> None:
        timers, self.timers = self.pending(), []
        for timer in timers:
            timer.callback()


def make(
    max_connections: int = 0, per_sec: int = 0, clock: FakeClock | None = None
) -> tuple[Admission, FakeClock, FakeScheduler]:
    clock = clock or FakeClock()
    scheduler = FakeScheduler()
    admission = Admission(
        "tcp",
        "LISTENER_TCP",
        AdmissionLimits(max_connections, per_sec),
        clock=clock,
        schedule=scheduler,
    )
    return admission, clock, scheduler


def refusal_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "pytbmq.admission"]


# --------------------------------------------------------------------------- helpers


def test_peer_host_and_text_for_ipv4_ipv6_and_others() -> None:
    assert peer_host(("192.0.2.1", 5)) == "192.0.2.1"
    assert peer_host(("2001:db8::1", 5, 0, 0)) == "2001:db8::1"
    assert peer_host(None) == "None"
    assert peer_text(("192.0.2.1", 5)) == "192.0.2.1:5"
    assert peer_text("unix") == "unix"


def test_limits_zero_means_unlimited() -> None:
    assert not AdmissionLimits().limited
    assert AdmissionLimits(max_connections=1).limited
    assert AdmissionLimits(new_connections_per_ip_per_sec=1).limited


# --------------------------------------------------------------------------- rate limiter


def test_rate_allows_a_burst_of_per_sec_then_refuses() -> None:
    clock = FakeClock()
    rate = RateLimiter(5, clock)
    assert [rate.allow("a") for _ in range(7)] == [True] * 5 + [False, False]


def test_rate_refills_one_token_every_interval() -> None:
    clock = FakeClock()
    rate = RateLimiter(4, clock)
    assert all(rate.allow("a") for _ in range(4))
    assert not rate.allow("a")
    clock.advance(0.2)  # less than 1/4 s: still nothing
    assert not rate.allow("a")
    clock.advance(0.05)  # 0.25 s: one token
    assert rate.allow("a")
    assert not rate.allow("a")
    clock.advance(1.0)  # a full bucket again, never more
    assert [rate.allow("a") for _ in range(5)] == [True] * 4 + [False]


def test_rate_sustained_one_per_interval_is_allowed() -> None:
    clock = FakeClock()
    rate = RateLimiter(10, clock)
    for _ in range(100):
        assert rate.allow("a")
        clock.advance(0.1)


def test_rate_addresses_are_independent() -> None:
    rate = RateLimiter(2, FakeClock())
    assert rate.allow("a") and rate.allow("a")
    assert not rate.allow("a")
    assert rate.allow("b") and rate.allow("b")
    assert not rate.allow("b")


def test_rate_refused_attempts_take_no_token() -> None:
    clock = FakeClock()
    rate = RateLimiter(2, clock)
    assert rate.allow("a") and rate.allow("a")
    for _ in range(50):
        assert not rate.allow("a")
    clock.advance(0.5)
    assert rate.allow("a")


def test_rate_forgets_idle_addresses() -> None:
    clock = FakeClock()
    rate = RateLimiter(3, clock)
    for i in range(1000):
        assert rate.allow(f"10.0.{i // 256}.{i % 256}")
    assert len(rate) == 1000
    clock.advance(1 / 3)  # every bucket is full again: one call forgets them all
    assert rate.allow("other")
    assert len(rate) == 1


def test_rate_table_is_capped() -> None:
    clock = FakeClock()
    rate = RateLimiter(1, clock, max_tracked=10)
    for i in range(100):
        assert rate.allow(f"a{i}")
        assert len(rate) <= 10
    assert not rate.allow("a99")  # the most recent are remembered
    assert rate.allow("a0")  # the oldest were forgotten


def test_rate_needs_a_positive_rate() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0)


# --------------------------------------------------------------------------- admission


def test_unlimited_admits_everything_without_counting() -> None:
    admission, _, _ = make()
    assert not admission.limited and not admission.counts
    for _ in range(1000):
        assert admission.admit(PEER) is UNCOUNTED
    assert admission.open == 0
    assert not admission.stats.refused


def test_max_connections_counts_open_connections() -> None:
    admission, _, _ = make(max_connections=3)
    tickets = [admission.admit(PEER) for _ in range(3)]
    assert all(isinstance(t, Ticket) for t in tickets)
    assert admission.open == 3
    assert admission.admit(PEER) is None
    assert admission.admit(("192.0.2.2", 1)) is None
    assert admission.stats.refused == {FULL: 2}
    first = tickets[0]
    assert first is not None
    first.release()
    assert admission.open == 2
    first.release()  # only the first release counts
    assert admission.open == 2
    assert admission.admit(PEER) is not None
    assert admission.open == 3


def test_rate_only_admits_uncounted() -> None:
    admission, clock, _ = make(per_sec=2)
    assert admission.limited and not admission.counts
    assert admission.admit(PEER) is UNCOUNTED
    assert admission.admit(("192.0.2.1", 40001)) is UNCOUNTED  # same address, new port
    assert admission.admit(("192.0.2.1", 40002)) is None
    assert admission.admit(("192.0.2.9", 40002)) is UNCOUNTED
    assert admission.stats.refused == {RATE: 1}
    clock.advance(0.5)
    assert admission.admit(PEER) is UNCOUNTED


def test_a_full_listener_takes_no_rate_token() -> None:
    admission, _, _ = make(max_connections=1, per_sec=2)
    ticket = admission.admit(PEER)
    assert ticket is not None
    assert admission.admit(PEER) is None  # full, not rate limited
    assert admission.stats.refused == {FULL: 1}
    ticket.release()
    assert admission.admit(PEER) is not None  # the second token was still there
    assert admission.admit(PEER) is None
    assert admission.stats.refused == {FULL: 2}


def test_describe() -> None:
    assert make()[0].describe() == "no connection limits"
    text = make(max_connections=7, per_sec=3)[0].describe()
    assert "at most 7 connection(s)" in text
    assert "at most 3 new connection(s) per second per source address" in text


# --------------------------------------------------------------------------- log lines


def test_first_refusal_is_logged_at_once_with_its_reason(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "pytbmq.admission")
    admission, _, scheduler = make(max_connections=1)
    assert admission.admit(PEER) is not None
    assert admission.admit(("192.0.2.7", 5555)) is None
    assert refusal_lines(caplog) == [
        "listener tcp refused a connection from 192.0.2.7:5555: 1 connection(s) open, "
        "the most LISTENER_TCP_MAX_CONNECTIONS=1 allows"
    ]
    assert not scheduler.pending()


def test_refusals_are_logged_at_most_once_per_second(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "pytbmq.admission")
    admission, clock, scheduler = make(max_connections=1, per_sec=1)
    assert admission.admit(PEER) is not None
    assert admission.admit(PEER) is None  # logged at once
    for i in range(10):
        clock.advance(0.01)
        assert admission.admit(("192.0.2.3", 1000 + i)) is None
    lines = refusal_lines(caplog)
    assert len(lines) == 1
    timers = scheduler.pending()
    assert len(timers) == 1  # one summary scheduled, however many refusals
    assert timers[0].delay == pytest.approx(0.99)
    clock.advance(0.9)
    scheduler.fire()
    lines = refusal_lines(caplog)
    assert len(lines) == 2
    assert lines[1] == (
        "listener tcp refused 10 more connection(s) within 1s: "
        "10 over LISTENER_TCP_MAX_CONNECTIONS=1; the latest from 192.0.2.3:1009"
    )
    assert admission.stats.refused == {FULL: 11}
    # within a second of the summary: summarised again, not logged at once
    clock.advance(0.5)
    assert admission.admit(PEER) is None
    assert len(refusal_lines(caplog)) == 2
    scheduler.fire()
    assert len(refusal_lines(caplog)) == 3
    # a second later: at once again
    clock.advance(1.0)
    assert admission.admit(PEER) is None
    assert len(refusal_lines(caplog)) == 4
    assert not scheduler.pending()


def test_summary_names_every_reason(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "pytbmq.admission")
    admission, _, scheduler = make(max_connections=2, per_sec=1)
    assert admission.admit(("192.0.2.1", 1)) is not None
    assert admission.admit(("192.0.2.1", 2)) is None  # rate: logged at once
    assert admission.admit(("192.0.2.1", 3)) is None  # rate
    assert admission.admit(("192.0.2.2", 1)) is not None
    assert admission.admit(("192.0.2.3", 1)) is None  # full
    scheduler.fire()
    first, summary = refusal_lines(caplog)
    assert "more than 1 new connection(s) per second from 192.0.2.1" in first
    assert "LISTENER_TCP_NEW_CONNECTIONS_PER_IP_PER_SEC=1" in first
    assert summary.startswith("listener tcp refused 2 more connection(s) within 1s: ")
    assert "1 over LISTENER_TCP_MAX_CONNECTIONS=2" in summary
    assert "1 over LISTENER_TCP_NEW_CONNECTIONS_PER_IP_PER_SEC=1" in summary
    assert admission.stats.refused == {FULL: 1, RATE: 2}


def test_close_logs_what_is_pending(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "pytbmq.admission")
    admission, _, scheduler = make(max_connections=1)
    assert admission.admit(PEER) is not None
    assert admission.admit(PEER) is None
    assert admission.admit(PEER) is None
    admission.close()
    assert not scheduler.pending()
    assert len(refusal_lines(caplog)) == 2
    admission.close()  # nothing more
    assert len(refusal_lines(caplog)) == 2


# --------------------------------------------------------------------------- GatedProtocol


class FakeTransport(asyncio.Transport):
    def __init__(self, peer: object = PEER) -> None:
        super().__init__()
        self.peer = peer
        self.aborted = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def abort(self) -> None:
        self.aborted = True


class Inner(asyncio.BufferedProtocol):
    def __init__(self) -> None:
        self.events: list[Any] = []
        self.buffer = bytearray(16)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.events.append(("made", transport))

    def get_buffer(self, sizehint: int) -> memoryview:
        self.events.append(("get_buffer", sizehint))
        return memoryview(self.buffer)

    def buffer_updated(self, nbytes: int) -> None:
        self.events.append(("data", bytes(self.buffer[:nbytes])))

    def eof_received(self) -> bool | None:
        self.events.append("eof")
        return True

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append(("lost", exc))


def test_gated_protocol_refuses_before_creating_the_real_protocol() -> None:
    admission, _, _ = make(max_connections=1)
    created: list[Inner] = []

    def factory() -> Inner:
        created.append(Inner())
        return created[-1]

    first, second = GatedProtocol(factory, admission), GatedProtocol(factory, admission)
    t1, t2 = FakeTransport(), FakeTransport()
    first.connection_made(t1)
    second.connection_made(t2)
    assert not t1.aborted and t2.aborted
    assert len(created) == 1
    assert admission.open == 1
    second.connection_lost(None)  # the refused one goes: nothing to give back
    assert admission.open == 1
    first.connection_lost(None)
    assert admission.open == 0
    assert created[0].events[-1] == ("lost", None)


def test_gated_protocol_passes_every_event_to_the_real_protocol() -> None:
    admission, _, _ = make(max_connections=5)
    inner = Inner()
    gated = GatedProtocol(lambda: inner, admission)
    transport = FakeTransport()
    gated.connection_made(transport)
    buf = gated.get_buffer(-1)
    assert isinstance(buf, memoryview)
    buf[:3] = b"abc"
    gated.buffer_updated(3)
    assert gated.eof_received() is True
    gated.pause_writing()
    gated.resume_writing()
    error = ConnectionResetError()
    gated.connection_lost(error)
    assert inner.events == [
        ("made", transport),
        ("get_buffer", -1),
        ("data", b"abc"),
        "eof",
        "pause",
        "resume",
        ("lost", error),
    ]
    assert admission.open == 0


def test_gated_protocol_with_a_ticket_admits_without_asking() -> None:
    admission, _, _ = make(max_connections=1)
    ticket = admission.admit(PEER)
    assert ticket is not None
    inner = Inner()
    gated = GatedProtocol(lambda: inner, ticket)
    transport = FakeTransport()
    gated.connection_made(transport)  # the listener is full, but this one was admitted
    assert not transport.aborted
    assert admission.open == 1
    gated.connection_lost(None)
    assert admission.open == 0


def test_gated_protocol_gives_the_ticket_back_even_if_the_protocol_fails() -> None:
    admission, _, _ = make(max_connections=1)

    class Failing(Inner):
        def connection_lost(self, exc: Exception | None) -> None:
            raise RuntimeError("boom")

    gated = GatedProtocol(Failing, admission)
    gated.connection_made(FakeTransport())
    with pytest.raises(RuntimeError):
        gated.connection_lost(None)
    assert admission.open == 0


# --------------------------------------------------------------------------- handshake slots


def test_handshake_slots_bound_concurrency_and_log_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "pytbmq.admission")
    clock = FakeClock()

    async def scenario() -> None:
        slots = HandshakeSlots("ssl", "LISTENER_SSL_MAX_HANDSHAKES_IN_PROGRESS", 2, clock=clock)
        await slots.acquire()
        await slots.acquire()
        assert slots.busy == 2
        third = asyncio.ensure_future(slots.acquire())
        fourth = asyncio.ensure_future(slots.acquire())
        await asyncio.sleep(0)
        assert not third.done() and not fourth.done()
        assert slots.waits == 2
        slots.release()
        await third
        assert not fourth.done()
        assert slots.busy == 2
        slots.release()
        await fourth
        slots.release()
        slots.release()
        assert slots.busy == 0

    asyncio.run(scenario())
    lines = refusal_lines(caplog)
    assert lines == [
        "listener ssl: all 2 TLS handshake slot(s) are busy "
        "(LISTENER_SSL_MAX_HANDSHAKES_IN_PROGRESS=2); new connections wait in the accept queue"
    ]


def test_handshake_slots_need_a_positive_limit() -> None:
    with pytest.raises(ValueError):
        HandshakeSlots("ssl", "X", 0)
