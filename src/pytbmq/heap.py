"""The broker's Python heap: keeping garbage-collection pauses short.

Python's cyclic collector stops the process while it runs, for about 1 µs per object it
visits on a busy broker (bench/soak profiles each collection), so a pause follows the
size of what a collection visits. Two things made those pauses long under bench/soak's
2,000 clients:

- a full collection visits every object that survived two young ones: the sessions,
  their queued messages, the subscriptions and the open connections (90 to 180 ms, once
  every 7 to 10 minutes);
- a young collection is due when allocations minus deallocations pass a threshold. On a
  broker in steady state the deaths of older objects (closed connections, delivered
  messages) offset the births, so young collections grow rare and each one visits every
  object born since the last that is still alive: 12 to 35 ms.

The broker frees its objects by reference counting (its connections hold no reference
cycles: tests/unit/test_gc_cycles.py checks every transport and every way of leaving), so
the collector finds nothing of the broker's. Hence:

- `settle_heap`, once the broker listens: what startup built is collected once and
  frozen (`gc.freeze()`), and the thresholds (`PYTBMQ_GC_THRESHOLDS`) make young
  collections frequent and full ones rare;
- `HeapFreezer`, every `PYTBMQ_GC_FREEZE_SEC`: everything alive is frozen, so any
  collection visits only what was born since (at most that long's worth). Freezing is a
  list splice, not a scan. Frozen objects are still freed by reference counting; what is
  given up is finding a reference cycle among objects older than the last freeze;
- hence, every `PYTBMQ_GC_FULL_COLLECT_SEC`, one collection of everything (thawed,
  collected, frozen again): a cycle that something did leave is freed within that time
  and logged with its size, at the cost of one long pause in that period.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def settle_heap(thresholds: str) -> None:
    """Once listening: collect what startup left, freeze it, set the thresholds.

    The modules, settings and API schemas (about 80,000 objects) live as long as the
    process, so no full collection needs to visit them again.
    """
    gc.collect()
    gc.freeze()
    a, b, c = (int(part) for part in thresholds.split(","))
    gc.set_threshold(a, b, c)


class HeapFreezer:
    """Freezes the heap every `freeze_sec` seconds on the event loop; every `full_sec`
    seconds (0: never) collects all of it once instead."""

    def __init__(
        self,
        freeze_sec: float,
        full_sec: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if freeze_sec <= 0:
            raise ValueError("freeze_sec must be positive")
        self.freeze_sec = freeze_sec
        self.full_sec = full_sec
        self._clock = clock
        self._next_full = clock() + full_sec
        self._handle: asyncio.TimerHandle | None = None
        self.freezes = 0
        self.full_collections = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._handle = loop.call_later(self.freeze_sec, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        if self.full_sec > 0 and self._clock() >= self._next_full:
            self.collect_all()
        else:
            gc.freeze()
            self.freezes += 1
        self._handle = self._loop.call_later(self.freeze_sec, self._tick)

    def collect_all(self) -> int:
        """Thaw, collect everything once, freeze again; returns the unreachable objects
        found (cyclic garbage that freezing had kept)."""
        started = time.perf_counter()
        gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        self.full_collections += 1
        self._next_full = self._clock() + self.full_sec
        ms = (time.perf_counter() - started) * 1000
        log.info(
            "heap: full collection (PYTBMQ_GC_FULL_COLLECT_SEC) took %.0f ms, "
            "%d objects tracked, %d unreachable found",
            ms,
            gc.get_freeze_count(),
            found,
        )
        return found
