"""pytbmq.heap: the startup heap and, every PYTBMQ_GC_FREEZE_SEC, everything alive is
frozen; every PYTBMQ_GC_FULL_COLLECT_SEC the whole heap is collected once."""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pytbmq.heap import HeapFreezer, settle_heap


@pytest.fixture(autouse=True)
def _thawed() -> Iterator[None]:
    before = gc.get_threshold()
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> tuple[weakref.ref[Node], weakref.ref[Node]]:
    """Two objects pointing at each other, nothing else pointing at them."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a), weakref.ref(b)


def tracked(obj: object) -> bool:
    """Whether a collection would visit `obj` (frozen objects are in no generation)."""
    return any(o is obj for o in gc.get_objects())


class Handle:
    def cancel(self) -> None:
        pass


class FakeLoop:
    """What HeapFreezer needs of a loop: call_later, with the calls kept to run by hand."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, Callable[[], None]]] = []

    def call_later(self, delay: float, callback: Callable[[], None]) -> Any:
        self.calls.append((delay, callback))
        return Handle()

    def run_next(self) -> None:
        _delay, callback = self.calls.pop(0)
        callback()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_settle_heap_sets_the_thresholds_and_freezes_the_startup_heap() -> None:
    kept = [object() for _ in range(3)], {"startup": [1, 2]}  # tracked, alive
    assert gc.get_freeze_count() == 0
    settle_heap("900,3,77")
    assert gc.get_threshold() == (900, 3, 77)
    assert gc.get_freeze_count() >= 2  # what lived at startup is no longer scanned
    assert not tracked(kept[1])


def test_each_tick_freezes_what_is_alive_and_schedules_the_next() -> None:
    loop, clock = FakeLoop(), Clock()
    freezer = HeapFreezer(10, 3600, clock=clock)
    freezer.start(loop)  # type: ignore[arg-type]
    assert [delay for delay, _ in loop.calls] == [10]
    young = {"born": ["after startup"]}
    assert tracked(young)
    loop.run_next()
    assert not tracked(young)  # a full collection no longer visits it
    assert (freezer.freezes, freezer.full_collections) == (1, 0)
    assert [delay for delay, _ in loop.calls] == [10]
    del young  # a frozen object without a cycle is still freed by reference counting


def test_a_cycle_among_frozen_objects_waits_for_the_full_collection() -> None:
    loop, clock = FakeLoop(), Clock()
    freezer = HeapFreezer(10, 3600, clock=clock)
    freezer.start(loop)  # type: ignore[arg-type]
    a, b = cycle()
    loop.run_next()  # frozen while alive (their cycle is all that keeps them)
    gc.collect()
    assert a() is not None and b() is not None  # the price of freezing
    clock.now += 3599
    loop.run_next()
    assert freezer.full_collections == 0 and a() is not None
    clock.now += 1
    loop.run_next()  # an hour since the start: thaw, collect everything, freeze again
    assert freezer.full_collections == 1
    assert a() is None and b() is None
    assert gc.get_freeze_count() > 0
    clock.now += 3599
    loop.run_next()
    assert freezer.full_collections == 1  # the next one an hour after that one
    assert freezer.freezes == 3


def test_collect_all_reports_the_cyclic_garbage_it_freed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    freezer = HeapFreezer(10, 0)
    refs = [cycle() for _ in range(5)]
    gc.freeze()
    with caplog.at_level(logging.INFO, logger="pytbmq.heap"):
        found = freezer.collect_all()
    assert found >= 10
    assert all(a() is None and b() is None for a, b in refs)
    [record] = caplog.records
    assert "PYTBMQ_GC_FULL_COLLECT_SEC" in record.getMessage()
    assert f"{found} unreachable found" in record.getMessage()


def test_without_a_full_collection_period_ticks_only_freeze() -> None:
    loop, clock = FakeLoop(), Clock()
    freezer = HeapFreezer(10, 0, clock=clock)
    freezer.start(loop)  # type: ignore[arg-type]
    for _ in range(3):
        clock.now += 10**6
        loop.run_next()
    assert (freezer.freezes, freezer.full_collections) == (3, 0)


def test_stop_cancels_the_next_tick() -> None:
    async def scenario() -> bool:
        freezer = HeapFreezer(0.001, 0)
        freezer.start(asyncio.get_running_loop())
        handle = freezer._handle
        freezer.stop()
        assert handle is not None
        return handle.cancelled()

    assert asyncio.run(scenario())


def test_freeze_period_must_be_positive() -> None:
    with pytest.raises(ValueError, match="freeze_sec"):
        HeapFreezer(0, 3600)
