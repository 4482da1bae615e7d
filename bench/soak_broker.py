"""pytbmq, as ``python -m pytbmq``, plus two measurements of its event loop for the soak.

bench/soak starts the broker through this file (unless ``--no-instrument``) so that a slow
probe round trip can be told apart: did the event loop stall, and was it the garbage
collector? Nothing in the broker changes: the module installs

- a ``gc.callbacks`` hook timing every collection (generation, duration), and
- a task on the broker's event loop that sleeps 50 ms at a time and notes how late it
  wakes up (the loop's lag: how long callbacks held the loop, or the process waited for
  a CPU),

and every 5 s appends one JSON line per interval to ``$SOAK_BROKER_STATS``: wall time,
loop lag (max, p99, samples) and GC pauses per generation (count, total ms, max ms), plus
every pause or lag of 10 ms or more with its time.

For diagnosis, ``bench/soak --tracemalloc`` sets ``$SOAK_BROKER_TRACEMALLOC``: the broker
then runs under tracemalloc and, every minute, appends to that file the 25 source lines
whose allocations grew most since the first minute (slow; not for figures).

For experiments only (``bench/soak --broker-gc SPEC`` sets ``$SOAK_BROKER_GC``): the
broker can run with other garbage-collector settings, to see what a change in pytbmq
would buy. SPEC is ``threshold:A,B,C`` (gc.set_threshold), ``freeze`` (gc.freeze() once
the broker has run 10 s) or both, comma-free parts joined with ``+``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import threading
import time
from collections.abc import Coroutine
from typing import Any

STATS = os.environ.get("SOAK_BROKER_STATS", "")
GC_SPEC = os.environ.get("SOAK_BROKER_GC", "")
TRACE = os.environ.get("SOAK_BROKER_TRACEMALLOC", "")  # diagnosis: where memory grows
TICK = 0.05
REPORT_EVERY = 5.0
NOTE_MS = 10.0


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lags: list[float] = []
        self.gc: dict[int, list[float]] = {0: [0, 0.0, 0.0], 1: [0, 0.0, 0.0], 2: [0, 0.0, 0.0]}
        self.notes: list[tuple[str, float, float]] = []
        self._gc_start = 0.0
        self.since = time.time()

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
            return
        ms = (time.perf_counter() - self._gc_start) * 1000
        gen = int(info.get("generation", 0))
        with self.lock:
            g = self.gc[gen]
            g[0] += 1
            g[1] += ms
            g[2] = max(g[2], ms)
            if ms >= NOTE_MS:
                self.notes.append((f"gc{gen}", round(time.time(), 3), round(ms, 1)))

    def on_lag(self, ms: float) -> None:
        with self.lock:
            self.lags.append(ms)
            if ms >= NOTE_MS:
                self.notes.append(("lag", round(time.time(), 3), round(ms, 1)))

    def flush(self) -> None:
        with self.lock:
            lags, self.lags = sorted(self.lags), []
            gcs = {str(k): [v[0], round(v[1], 1), round(v[2], 1)] for k, v in self.gc.items()}
            self.gc = {k: [0, 0.0, 0.0] for k in self.gc}
            notes, self.notes = self.notes, []
        until = round(time.time(), 3)
        line = {
            "since": round(self.since, 3),
            "until": until,
            "lag_n": len(lags),
            "lag_max": round(lags[-1], 2) if lags else None,
            "lag_p99": round(lags[min(len(lags) - 1, int(len(lags) * 0.99))], 2) if lags else None,
            "gc": gcs,
            "notes": notes,
        }
        self.since = until
        with open(STATS, "a") as f:
            f.write(json.dumps(line) + "\n")


REC = Recorder()


async def _lag_task() -> None:
    loop = asyncio.get_running_loop()
    freeze_at = loop.time() + 10 if "freeze" in GC_SPEC.split("+") else None
    while True:
        t = loop.time()
        await asyncio.sleep(TICK)
        REC.on_lag(max(0.0, (loop.time() - t - TICK) * 1000))
        if freeze_at is not None and loop.time() >= freeze_at:
            gc.freeze()
            freeze_at = None


def _flusher() -> None:
    n = 0
    first: Any = None
    while True:
        time.sleep(REPORT_EVERY)
        n += 1
        try:
            REC.flush()
            if TRACE and n % 12 == 0:  # every minute: growth since the first minute
                first = _trace(first)
        except OSError:
            return


def _trace(first: Any) -> Any:
    """Append the 25 source lines whose allocations grew most since ``first``."""
    import tracemalloc

    snap = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    if first is None:
        return snap
    top = snap.compare_to(first, "lineno")[:25]
    with open(TRACE, "a") as f:
        f.write(f"--- {time.strftime('%H:%M:%S')} traced {sum(s.size for s in snap.traces)}\n")
        for stat in top:
            f.write(f"{stat}\n")
    return first


def _instrument() -> None:
    gc.callbacks.append(REC.on_gc)
    if TRACE:
        import tracemalloc

        tracemalloc.start(1)
    for part in GC_SPEC.split("+"):
        if part.startswith("threshold:"):
            a, b, c = (int(x) for x in part.split(":", 1)[1].split(","))
            gc.set_threshold(a, b, c)
    threading.Thread(target=_flusher, name="soak-stats", daemon=True).start()

    def wrap(run: Any) -> Any:
        def patched(main: Coroutine[Any, Any, Any], **kwargs: Any) -> Any:
            async def with_lag() -> Any:
                task = asyncio.get_running_loop().create_task(_lag_task())
                try:
                    return await main
                finally:
                    task.cancel()

            return run(with_lag(), **kwargs)

        return patched

    asyncio.run = wrap(asyncio.run)
    try:
        import uvloop
    except ImportError:
        return
    uvloop.run = wrap(uvloop.run)


def main() -> int:
    if STATS:
        _instrument()
    from pytbmq.cli import main as pytbmq_main

    try:
        return pytbmq_main(sys.argv[1:])
    finally:
        if STATS:
            REC.flush()


if __name__ == "__main__":
    sys.exit(main())
