"""pytbmq, as ``python -m pytbmq``, plus measurements of its event loop for the soak.

bench/soak starts the broker through this file (unless ``--no-instrument``) so that a slow
probe round trip can be told apart: did the event loop stall, was it the garbage
collector, and which part of the round trip took the time? Nothing in the broker changes:
the module installs

- a ``gc.callbacks`` hook timing every collection (generation, duration), and
- a task on the broker's event loop that sleeps 50 ms at a time and notes how late it
  wakes up (the loop's lag: how long callbacks held the loop, or the process waited for
  a CPU),

and every 5 s appends one JSON line per interval to ``$SOAK_BROKER_STATS``: wall time,
loop lag (max, p99, samples) and GC pauses per generation (count, total ms, max ms), plus
every pause or lag of 10 ms or more with its time.

With ``$SOAK_BROKER_PROBE`` (set by bench/soak) it also appends to that file one line per
probe PUBLISH: its sequence number, when the broker handled it and when the write
carrying it back to the probe went out (CLOCK_MONOTONIC, shared with the probe's
process), so that the report can split each round trip into before the broker read it,
inside the broker and after it wrote it. Only the probe's connection is watched:
``Link._on_publish`` gains one string comparison per PUBLISH, and ``flush`` is wrapped on
the probe's Link instance alone.

For diagnosis, ``bench/soak --tracemalloc`` sets ``$SOAK_BROKER_TRACEMALLOC``: the broker
then runs under tracemalloc and, every minute, appends to that file the 25 source lines
whose allocations grew most since the first minute (slow; not for figures).

For diagnosis of the heap, ``$SOAK_BROKER_CENSUS`` names a file: on SIGUSR1 (and every
minute during a soak) the broker appends, from its event loop, the number of objects the
garbage collector tracks per generation and the 30 most common types among them. With
``$SOAK_BROKER_SAVEALL=1`` the collector keeps what it finds unreachable
(``gc.DEBUG_SAVEALL``) and the census also lists the types of that cyclic garbage, then
frees it: what the connection path leaves for the collector instead of refcounting.
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
TRACE = os.environ.get("SOAK_BROKER_TRACEMALLOC", "")  # diagnosis: where memory grows
CENSUS = os.environ.get("SOAK_BROKER_CENSUS", "")  # diagnosis: what the GC tracks
SAVEALL = os.environ.get("SOAK_BROKER_SAVEALL", "") == "1"
STALLS = os.environ.get("SOAK_BROKER_STALLS", "")  # diagnosis: what the loop does when late
GCPROFILE = os.environ.get("SOAK_BROKER_GCPROFILE", "")  # diagnosis: what each collection scans
PROBE = os.environ.get("SOAK_BROKER_PROBE", "")  # the probe's PUBLISH: when read, when written
PROBE_CLIENT = "soak-probe"  # bench/soak_clients.py probe()
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
        self._scan = ""
        self.in_gc = -1  # generation being collected, or -1
        self.since = time.time()

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.in_gc = int(info.get("generation", 0))
            if GCPROFILE and int(info.get("generation", 0)) >= 1:
                self._scan = _scan_profile(int(info["generation"]))
            self._gc_start = time.perf_counter()
            return
        ms = (time.perf_counter() - self._gc_start) * 1000
        gen = int(info.get("generation", 0))
        self.in_gc = -1
        if GCPROFILE and gen >= 1:
            with open(GCPROFILE, "a") as f:
                f.write(f"gen{gen} {ms:.1f} ms collected {info.get('collected')} {self._scan}\n")
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


def _scan_profile(gen: int) -> str:
    """What a collection of ``gen`` is about to scan: objects, references, heaviest types."""
    from collections import Counter

    objs = [o for g in range(gen + 1) for o in gc.get_objects(g)]
    refs: Counter[str] = Counter()
    count: Counter[str] = Counter()
    for o in objs:
        name = type(o).__qualname__
        refs[name] += len(gc.get_referents(o))
        count[name] += 1
    top = ", ".join(f"{k} {count[k]}/{v}" for k, v in refs.most_common(6))
    return f"objects {len(objs)} refs {sum(refs.values())} top(objects/refs) {top}"


def _stack(frame: Any, depth: int = 6) -> str:
    parts = []
    while frame is not None and len(parts) < depth:
        code = frame.f_code
        parts.append(f"{os.path.basename(code.co_filename)}:{frame.f_lineno} {code.co_name}")
        frame = frame.f_back
    return " < ".join(parts)


def _watchdog(loop: asyncio.AbstractEventLoop, main_ident: int) -> None:
    """Ask the loop for a callback every 5 ms; while it is 8 ms or more late, sample what
    every thread runs; log each stall of 10 ms or more with its most frequent stacks."""
    from collections import Counter

    while True:
        time.sleep(0.005)
        done = threading.Event()
        t0 = time.perf_counter()
        try:
            loop.call_soon_threadsafe(done.set)
        except RuntimeError:
            return  # the loop is closed
        main: Counter[str] = Counter()
        others: Counter[str] = Counter()
        gcs: Counter[int] = Counter()
        while not done.wait(0.002):
            if time.perf_counter() - t0 < 0.008:
                continue
            if REC.in_gc >= 0:
                gcs[REC.in_gc] += 1
            for ident, frame in sys._current_frames().items():
                if ident == main_ident:
                    main[_stack(frame)] += 1
                elif ident != threading.get_ident():
                    st = _stack(frame, 3)
                    if "wait" not in st and "sleep" not in st and "select" not in st:
                        others[st] += 1
        ms = (time.perf_counter() - t0) * 1000
        if ms >= NOTE_MS:
            with open(STALLS, "a") as f:
                f.write(f"{time.time():.3f} stall {ms:.1f} ms gc {dict(gcs)}\n")
                for st, n in main.most_common(3):
                    f.write(f"   main x{n}: {st}\n")
                for st, n in others.most_common(2):
                    f.write(f"   other x{n}: {st}\n")


def _census() -> None:
    """Append what the garbage collector tracks (and, with SAVEALL, what it found)."""
    from collections import Counter

    t0 = time.perf_counter()
    gens = [len(gc.get_objects(g)) for g in range(3)]
    types = Counter(type(o).__qualname__ for o in gc.get_objects())
    garbage = Counter(type(o).__qualname__ for o in gc.garbage)
    n_garbage = len(gc.garbage)
    sessions = [o for o in gc.get_objects() if type(o).__qualname__ == "Session"]
    offline = [o for o in sessions if getattr(o, "link", None) is None]
    queued = sum(len(getattr(o, "queue", ())) for o in sessions)
    queued_off = sum(len(getattr(o, "queue", ())) for o in offline)
    longest = sorted((len(getattr(o, "queue", ())) for o in sessions), reverse=True)[:8]
    gc.garbage.clear()
    ms = (time.perf_counter() - t0) * 1000
    with open(CENSUS, "a") as f:
        f.write(
            f"--- {time.strftime('%H:%M:%S')} tracked per generation {gens} "
            f"(total {sum(gens)}), frozen {gc.get_freeze_count()}, census {ms:.0f} ms\n"
        )
        f.write(
            f"  sessions {len(sessions)} ({len(offline)} offline); queued messages {queued} "
            f"({queued_off} for offline sessions); longest queues {longest}\n"
        )
        for name, n in types.most_common(30):
            f.write(f"  {n:9d} {name}\n")
        if SAVEALL:
            f.write(f"  cyclic garbage since the last census: {n_garbage} objects\n")
            for name, n in garbage.most_common(30):
                f.write(f"  {n:9d} {name}\n")


async def _lag_task() -> None:
    loop = asyncio.get_running_loop()
    census_at = loop.time() + 60 if CENSUS else None
    if STALLS:
        args = (loop, threading.get_ident())
        threading.Thread(target=_watchdog, args=args, name="soak-watchdog", daemon=True).start()
    if CENSUS:
        import signal

        loop.add_signal_handler(signal.SIGUSR1, _census)
    while True:
        t = loop.time()
        await asyncio.sleep(TICK)
        REC.on_lag(max(0.0, (loop.time() - t - TICK) * 1000))
        if census_at is not None and loop.time() >= census_at:
            _census()
            census_at = loop.time() + 60


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


def _watch_probe() -> None:
    """Append ``seq handled written`` (monotonic seconds) for each probe PUBLISH to PROBE."""
    from pytbmq.link import Link

    out = open(PROBE, "a", buffering=1)  # noqa: SIM115 (open for the process's life)
    on_publish = Link._on_publish

    def watch(link: Any) -> list[tuple[int, float]]:
        handled: list[tuple[int, float]] = []
        flush = link.flush

        def flush_noted() -> None:
            had_output = bool(link._out)
            flush()
            if had_output and handled:
                written = time.monotonic()
                for seq, at in handled:
                    out.write(f"{seq} {at:.6f} {written:.6f}\n")
                handled.clear()

        link.flush = flush_noted
        link._soak_probe = handled
        return handled

    def noted(link: Any, session: Any, packet: Any, now: float) -> None:
        if link.client_id == PROBE_CLIENT and len(packet.payload) >= 8:
            handled = link.__dict__.get("_soak_probe")
            if handled is None:
                handled = watch(link)
            handled.append((int.from_bytes(packet.payload[:8], "big"), time.monotonic()))
        on_publish(link, session, packet, now)

    Link._on_publish = noted  # type: ignore[method-assign]


def _instrument() -> None:
    if PROBE:
        _watch_probe()
    gc.callbacks.append(REC.on_gc)
    if SAVEALL:
        gc.set_debug(gc.DEBUG_SAVEALL)
    if TRACE:
        import tracemalloc

        tracemalloc.start(1)
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
