"""Soak / chaos run of pytbmq: thousands of churning clients plus misbehaving ones, for
minutes, with the broker's memory, a probe's round trip and QoS 1 delivery watched.

Run it through ``bench/soak`` (which raises the open-file limit first):

    bench/soak                    # 2,000 clients for 10 minutes
    bench/soak --quick            # 200 clients for 60 s
    bench/soak --duration 300 --clients 1000

What it does (docs/benchmarks.md, "Soak / chaos run", has the results):

1. Makes a throw-away CA and server certificate with ``pytbmq certs`` and starts pytbmq
   from the working tree (the project's .venv) with ``PYTBMQ_DATA_DIR`` in a temporary
   directory, a TCP and a TLS listener on free 127.0.0.1 ports, log level WARNING, and
   every other setting at its default (SQLite store).
2. Starts three client processes (bench/soak_clients.py): ``churn`` (the churning and the
   misbehaving clients), ``probe`` (QoS 0 round trip every 100 ms) and ``wb`` (QoS 1
   publisher with sequence numbers and two persistent subscribers).
3. Samples the broker every 5 s: VmRSS and threads (/proc/PID/status), CPU time
   (/proc/PID/stat), open descriptors (/proc/PID/fd).
   The broker runs through bench/soak_broker.py (unless ``--no-instrument``), which
   records its event loop's lag and GC pauses (broker-loop.jsonl) and when it handled
   each probe PUBLISH and wrote it back (broker-probe.txt): the report splits every round
   trip into before the broker read it, inside the broker and after it wrote.
4. Stops everything, then writes report.md, rss.csv, probe.csv, rss.txt (a text plot),
   summary.json and the broker's log to bench/.build/soak/<timestamp>/ and prints the
   report.

Exit status 1 when a criterion fails (all printed with the report):
- a QoS 1 message acknowledged to the well-behaved publisher did not reach both
  persistent subscribers, or a persistent session was lost;
- the probe's p99 round trip was above 10 ms in some minute (the tables use 10 s buckets in runs
  shorter than 3 minutes); a probe that never came back counts as infinitely late;
- RSS grew without bound: the second half of the run added more than 10%, i.e. the
  median RSS of the last minute is above 1.1x the median of the minute before half time
  (4:00-5:00 in a 10-minute run), or any sample is above --rss-limit-mb (512 MiB by
  default). Growth is judged only in runs of 10 minutes or more: with 2,000 clients RSS
  climbs for the first minutes (sessions, session queues filling up to the broker's
  10,000-message limit) before it levels off, and a shorter run cannot tell that apart
  from a leak. The ratio to minute 2 is printed too;
- the broker died, or a client process failed.

This is not a test: pytest never collects it.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import json
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
RESULTS = BENCH / ".build" / "soak"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SAMPLE_EVERY = 5.0
PROBE_LIMIT_MS = 10.0
PROBE_MARKS = "broker-probe.txt"  # soak_broker.py: when each probe PUBLISH was read, written
RSS_GROWTH_LIMIT = 1.1
MIN_GROWTH_RUN = 600.0  # shorter runs cannot tell growth from warm-up
EN, TIMES = "\u2013", "\u00d7"  # en dash, multiplication sign (kept out of literals for ruff)


def say(text: str) -> None:
    print(f"soak: {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- machine


def raise_nofile() -> tuple[int, int]:
    """Soft open-file limit up to the hard one (inherited by the broker and clients)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def git_commit() -> str:
    try:
        sha = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (sha or "?") + (" + uncommitted changes in src/" if dirty else "")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def proc_status(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def runqueue_wait(pid: int) -> float:
    """Seconds the main thread of ``pid`` spent runnable but waiting for a CPU."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


def machine_ticks() -> tuple[int, int]:
    """(steal, total) clock ticks of the whole machine since boot (/proc/stat): steal is
    time the hypervisor ran something else while this VM's CPUs wanted to run."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return fields[7], sum(fields)


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


# --------------------------------------------------------------------------- broker


def make_certs(tmp: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, serverChain.pem, server_key.pem) from `pytbmq certs`."""
    for argv in (
        ["certs", "ca", "--out", str(tmp / "ca"), "--days", "90"],
        ["certs", "server", "--ca", str(tmp / "ca"), "--host", "localhost", "--ip",
         "127.0.0.1", "--out", str(tmp / "server"), "--days", "90"],
    ):  # fmt: skip
        subprocess.run([str(PYTHON), "-m", "pytbmq", *argv], check=True, capture_output=True)
    return (
        tmp / "ca" / "ca.pem",
        tmp / "server" / "serverChain.pem",
        tmp / "server" / "server_key.pem",
    )


def start_broker(
    tmp: Path,
    tcp: int,
    tls: int,
    log: Path,
    stats: Path | None,
    gc_thresholds: str = "",
    trace: bool = False,
    census: str | None = None,
    broker: str = "pytbmq",
) -> subprocess.Popen[bytes]:
    """pytbmq on 127.0.0.1:tcp and :tls; with ``stats``, through soak_broker.py. With
    ``broker="mosquitto"``, Debian's Mosquitto on the same ports instead (the control)."""
    _ca, chain, key = make_certs(tmp)
    if broker == "mosquitto":
        argv, env = mosquitto_command(tmp, tcp, tls, chain, key)
        return spawn(argv, env, tmp, log, (tcp, tls))
    env = {
        k: v
        for k, v in os.environ.items()
        if k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ") or k.startswith("SOAK_BROKER_")
    }
    env.update(
        PYTBMQ_DATA_DIR=str(tmp / "data"),
        PYTBMQ_LOG_LEVEL="WARNING",
        LISTENER_WS_ENABLED="false",
        LISTENER_TCP_BIND_ADDRESS="127.0.0.1",
        LISTENER_TCP_BIND_PORT=str(tcp),
        LISTENER_SSL_ENABLED="true",
        LISTENER_SSL_BIND_ADDRESS="127.0.0.1",
        LISTENER_SSL_BIND_PORT=str(tls),
        LISTENER_SSL_CREDENTIALS_TYPE="PEM",
        LISTENER_SSL_PEM_CERT=str(chain),
        LISTENER_SSL_PEM_KEY=str(key),
        # the admin API runs, as by default, but on a free port: no clash with a broker
        # (another soak's, say) that holds 8083
        HTTP_BIND_ADDRESS="127.0.0.1",
        HTTP_BIND_PORT=str(free_port()),
    )
    if gc_thresholds:
        env["PYTBMQ_GC_THRESHOLDS"] = gc_thresholds
    argv = [str(PYTHON), "-m", "pytbmq"]
    if stats is not None:
        env["SOAK_BROKER_STATS"] = str(stats)
        env["SOAK_BROKER_PROBE"] = str(stats.with_name(PROBE_MARKS))
        if trace:
            env["SOAK_BROKER_TRACEMALLOC"] = str(stats.with_name("tracemalloc.txt"))
        if census:
            env["SOAK_BROKER_CENSUS"] = str(stats.with_name("census.txt"))
            if census == "saveall":
                env["SOAK_BROKER_SAVEALL"] = "1"
        argv = [str(PYTHON), str(BENCH / "soak_broker.py")]
    return spawn(argv, env, tmp, log, (tcp, tls))


def mosquitto_version() -> str:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    try:
        out = subprocess.run([exe, "-h"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return "Mosquitto"
    return out.splitlines()[0].strip() if out else "Mosquitto"


def mosquitto_command(
    tmp: Path, tcp: int, tls: int, chain: Path, key: Path
) -> tuple[list[str], dict[str, str]]:
    """Mosquitto as the soak's control: the same two listeners and certificate, TCP_NODELAY
    (as pytbmq), no persistence file, and a session queue as long as pytbmq's default for a
    DEVICE (MQTT_PERSISTENT_SESSION_DEVICE_PERSISTED_MESSAGES_LIMIT, 10,000)."""
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(exe).exists():
        raise SystemExit("soak: --broker mosquitto needs Debian's mosquitto package")
    # started as root, Mosquitto reads its files after dropping to its own user
    for path in (tmp, chain.parent):
        path.chmod(0o755)
    for path in (chain, key):
        path.chmod(0o644)
    conf = tmp / "mosquitto.conf"
    conf.write_text(
        "allow_anonymous true\n"
        "set_tcp_nodelay true\n"
        "persistence false\n"
        "max_queued_messages 10000\n"
        "log_dest stdout\n"
        "log_type error\n"
        "log_type warning\n"
        f"listener {tcp} 127.0.0.1\n"
        f"listener {tls} 127.0.0.1\n"
        f"certfile {chain}\n"
        f"keyfile {key}\n"
    )
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ")}
    return [exe, "-c", str(conf)], env


def spawn(
    argv: list[str], env: dict[str, str], tmp: Path, log: Path, ports: tuple[int, ...]
) -> subprocess.Popen[bytes]:
    """Start the broker and wait until it listens on every port."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=tmp,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 30
    for port in ports:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"soak: the broker exited ({proc.returncode}); see {log}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    proc.kill()
                    raise SystemExit(
                        f"soak: the broker did not listen on {port}; see {log}"
                    ) from None
                time.sleep(0.05)
    return proc


def stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> float:
    """SIGTERM, then SIGKILL after ``timeout``; seconds it took."""
    t = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return time.monotonic() - t


# --------------------------------------------------------------------------- analysis


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * q))]


def bucket_label(b: int, size: float) -> str:
    start = b * size
    return f"{int(start // 60)}:{int(start % 60):02d}"


def probe_rows(samples: list[list[Any]], size: float) -> list[dict[str, Any]]:
    """Round-trip figures per bucket; a probe that never came back counts as infinite.
    Samples are [offset, round trip or None] and, from newer runs, how late the probe's
    own process woke to send (its p99 per bucket: what the machine alone adds)."""
    by: dict[int, list[float | None]] = collections.defaultdict(list)
    woke: dict[int, list[float]] = collections.defaultdict(list)
    for t, rtt, *late in samples:
        by[int(t // size)].append(rtt)
        if late:
            woke[int(t // size)].append(late[0])
    rows = []
    for b in sorted(by):
        got = [v for v in by[b] if v is not None]
        lost = len(by[b]) - len(got)
        rows.append(
            {
                "bucket": bucket_label(b, size),
                "n": len(by[b]),
                "p50": round(pct(got, 0.5), 2),
                "p99": round(pct(got + [float("inf")] * lost, 0.99), 2),
                "max": round(max(got), 2) if got else None,
                "lost": lost,
                "woke_p99": round(pct(woke[b], 0.99), 2) if woke[b] else None,
            }
        )
    return rows


def probe_split(
    samples: list[list[Any]], marks: dict[int, tuple[float, float]], size: float | None
) -> dict[str, dict[str, Any]]:
    """Per bucket, where the probes' round trips went, from samples carrying their sequence
    number and send time (newer runs) and the broker's notes (soak_broker.py): p99 of the
    time before the broker handled the PUBLISH (the probe's send, the broker's wake-up and
    whatever its event loop was doing), inside the broker (handled → written back) and
    after it wrote (the probe's own wake-up and read). For the probes above the limit,
    which of the three parts was the largest. ``size`` None: one bucket, "all"."""
    parts: dict[int, list[tuple[float, float, float]]] = collections.defaultdict(list)
    slow: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for x in samples:
        if len(x) < 5 or x[1] is None or x[3] not in marks:
            continue
        t, rtt, _late, seq, sent = x[:5]
        handled, written = marks[seq]
        split = (
            (handled - sent) * 1000,
            (written - handled) * 1000,
            rtt - (written - sent) * 1000,
        )
        b = 0 if size is None else int(t // size)
        parts[b].append(split)
        if rtt > PROBE_LIMIT_MS:
            slow[b][("before", "inside", "after")[split.index(max(split))]] += 1
    return {
        ("all" if size is None else bucket_label(b, size)): {
            "n": len(v),
            "before_p99": round(pct([p[0] for p in v], 0.99), 2),
            "inside_p99": round(pct([p[1] for p in v], 0.99), 2),
            "after_p99": round(pct([p[2] for p in v], 0.99), 2),
            "slow_by": dict(slow[b]),
        }
        for b, v in sorted(parts.items())
    }


def rss_window(samples: list[dict[str, Any]], lo: float, hi: float) -> float:
    values = [s["rss_kb"] / 1024 for s in samples if lo <= s["t"] < hi]
    return statistics.median(values) if values else float("nan")


def analyse(run: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Figures and the list of failed criteria."""
    failures: list[str] = []
    duration, size = run["duration"], run["bucket"]
    samples = [s for s in run["samples"] if s["t"] <= duration + 1]
    fig: dict[str, Any] = {}

    # ---- RSS: bounded = the second half of the run adds at most RSS_GROWTH_LIMIT
    if duration >= 180:
        base_lo, base_hi, base_name = 60.0, 120.0, "minute 2"
        last_lo, last_name = duration - 60.0, "the last minute"
        half = (duration // 2 // 60) * 60
        mid_lo, mid_hi = half - 60.0, half
        mid_name = (
            f"the minute before half time ({bucket_label(int(mid_lo // 60), 60)}-"
            f"{bucket_label(int(mid_hi // 60), 60)})"
        )
    else:
        sixth = duration / 6
        base_lo, base_hi, base_name = sixth, 2 * sixth, "the second sixth"
        last_lo, last_name = duration - sixth, "the last sixth"
        mid_lo, mid_hi, mid_name = 2 * sixth, 3 * sixth, "the third sixth"
    base = rss_window(samples, base_lo, base_hi)
    mid = rss_window(samples, mid_lo, mid_hi)
    last = rss_window(samples, last_lo, duration + 1)
    peak = max((s["rss_kb"] for s in samples), default=0) / 1024
    fig["rss"] = {
        "baseline_mb": round(base, 1),
        "baseline_window": base_name,
        "mid_mb": round(mid, 1),
        "mid_window": mid_name,
        "last_mb": round(last, 1),
        "last_window": last_name,
        "ratio": round(last / mid, 3) if mid else None,
        "ratio_to_baseline": round(last / base, 3) if base else None,
        "peak_mb": round(peak, 1),
        "start_mb": round(samples[0]["rss_kb"] / 1024, 1) if samples else None,
    }
    fig["rss"]["judged"] = duration >= MIN_GROWTH_RUN
    if fig["rss"]["judged"] and not (last <= RSS_GROWTH_LIMIT * mid):
        failures.append(
            f"RSS grew: median {last:.1f} MB in {last_name} > {RSS_GROWTH_LIMIT} x "
            f"{mid:.1f} MB in {mid_name}"
        )
    if peak > run["rss_limit_mb"]:
        failures.append(f"RSS peaked at {peak:.1f} MB > the {run['rss_limit_mb']} MB bound")

    # ---- per bucket: RSS, CPU, fds
    rows = []
    by_bucket: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
    for s in samples:
        by_bucket[min(int(s["t"] // size), int((duration - 0.001) // size))].append(s)
    prev = None
    for b in sorted(by_bucket):
        ss = by_bucket[b]
        rss = [s["rss_kb"] / 1024 for s in ss]
        first = prev or ss[0]
        span = ss[-1]["t"] - first["t"]
        cpu = (ss[-1]["cpu"] - first["cpu"]) / span * 100 if span > 0 else float("nan")
        lcpu = (ss[-1]["loader_cpu"] - first["loader_cpu"]) / span * 100 if span > 0 else 0
        ticks = ss[-1].get("ticks", 0) - first.get("ticks", 0)
        steal = (ss[-1].get("steal", 0) - first.get("steal", 0)) / ticks * 100 if ticks else 0
        rows.append(
            {
                "bucket": bucket_label(b, size),
                "rss_min": round(min(rss), 1),
                "rss_median": round(statistics.median(rss), 1),
                "rss_max": round(max(rss), 1),
                "cpu_pct": round(cpu, 0),
                "loader_cpu_pct": round(lcpu, 0),
                "steal_pct": round(steal, 1),
                "fds_max": max(s["fds"] for s in ss),
                "threads": max(s["threads"] for s in ss),
            }
        )
        prev = ss[-1]
    fig["buckets"] = rows
    if len(samples) >= 2:
        total_cpu = samples[-1]["cpu"] - samples[0]["cpu"]
        fig["broker_cpu_pct"] = round(total_cpu / (samples[-1]["t"] - samples[0]["t"]) * 100, 1)
        fig["broker_cpu_s"] = round(total_cpu, 1)

    # ---- probe: the table per bucket; the criterion per minute, whatever the bucket
    probe = run["clients"].get("probe")
    if probe is None:
        failures.append("the probe process left no result")
        fig["probe_buckets"], fig["probe_minutes"] = [], []
    else:
        samples_in = [x for x in probe["samples"] if 0 <= x[0] < duration]
        fig["probe_buckets"] = probe_rows(samples_in, size)
        fig["probe_minutes"] = probe_rows(samples_in, 60.0)
        marks = run.get("probe_marks") or {}
        fig["probe_split"] = probe_split(samples_in, marks, size)
        split_minutes = fig["probe_split"] if size == 60 else probe_split(samples_in, marks, 60)
        whole = probe_split(samples_in, marks, None).get("all")
        # the machine's steal in that minute, when the tables are per minute too
        steal_in = {r["bucket"]: r["steal_pct"] for r in rows} if size == 60 else {}
        for row in fig["probe_minutes"]:
            if not row["p99"] <= PROBE_LIMIT_MS:
                context = []  # the machine's share, then the split of the round trips
                if (steal := steal_in.get(row["bucket"])) is not None:
                    context.append(f"hypervisor steal {steal:.1f}%")
                if row["woke_p99"] is not None:
                    context.append(f"probe woke late p99 {row['woke_p99']:.1f} ms")
                if (sm := split_minutes.get(row["bucket"])) is not None:
                    context.append(
                        f"p99 before the broker read it {sm['before_p99']:.1f} ms, inside "
                        f"the broker {sm['inside_p99']:.1f} ms, after it wrote "
                        f"{sm['after_p99']:.1f} ms"
                    )
                failures.append(
                    f"probe p99 {row['p99']:.2f} ms > {PROBE_LIMIT_MS} ms in the minute from "
                    f"{row['bucket']}"
                    + (f" ({row['lost']} probes never came back)" if row["lost"] else "")
                    + (f" ({', '.join(context)})" if context else "")
                )
        allv = [x[1] for x in samples_in if x[1] is not None]
        fig["probe_total"] = {
            "n": len(samples_in),
            "p50": round(pct(allv, 0.5), 2),
            "p99": round(pct(allv, 0.99), 2),
            "max": round(max(allv), 2) if allv else None,
            "lost": len(samples_in) - len(allv),
            "reconnects": probe["reconnects"],
            "loop_lag": probe["probe_loop_lag_ms"],
            "errors": probe["errors"],
            "split": whole,
        }

    # ---- the broker's event loop (soak_broker.py): lag, GC pauses, waiting for a CPU
    loop_rows = []
    lines = run.get("loop") or []
    if lines:
        lb: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
        for ln in lines:
            t = ln["until"] - run["t0"]
            if 0 <= t <= duration + SAMPLE_EVERY:
                lb[min(int(t // size), int((duration - 0.001) // size))].append(ln)
        rq: dict[int, float] = {}
        prev_s = None
        for b in sorted(by_bucket):
            ss = by_bucket[b]
            first = prev_s or ss[0]
            span = ss[-1]["t"] - first["t"]
            rq[b] = (ss[-1]["rq_wait"] - first["rq_wait"]) / span * 1000 if span > 0 else 0.0
            prev_s = ss[-1]
        for b in sorted(lb):
            ls = lb[b]
            gc2 = sum(ln["gc"]["2"][0] for ln in ls)
            gcmax = max(max(ln["gc"][g][2] for g in ("0", "1", "2")) for ln in ls)
            gc2max = max(ln["gc"]["2"][2] for ln in ls)
            gctotal = sum(sum(ln["gc"][g][1] for g in ("0", "1", "2")) for ln in ls)
            loop_rows.append(
                {
                    "bucket": bucket_label(b, size),
                    "lag_p99": max((ln["lag_p99"] or 0) for ln in ls),
                    "lag_max": max((ln["lag_max"] or 0) for ln in ls),
                    "stalls": sum(1 for ln in ls for n in ln["notes"] if n[0] == "lag"),
                    "gc2": gc2,
                    "gc2_max": round(gc2max, 1),
                    "gc_max": round(gcmax, 1),
                    "gc_ms": round(gctotal, 0),
                    "rq_ms_per_s": round(rq.get(b, 0.0), 0),
                }
            )
        # Which slow probes overlap a broker stall (loop lag or GC pause of >= 10 ms)?
        stalls = [
            (n[1] - run["t0"] - n[2] / 1000, n[1] - run["t0"], n[0])
            for ln in lines
            for n in ln["notes"]
        ]
        slow = [(x[0], x[1]) for x in (probe or {}).get("samples", []) if x[1] and x[1] > 10]
        with_stall = with_gc = 0
        for t, rtt in slow:
            hit = [k for a, z, k in stalls if a <= t + rtt / 1000 + 0.005 and z >= t - 0.005]
            with_stall += bool(hit)
            with_gc += any(k.startswith("gc") for k in hit)
        fig["slow_probes"] = {"n": len(slow), "with_stall": with_stall, "with_gc": with_gc}
        pauses = sorted((n for ln in lines for n in ln["notes"]), key=lambda n: -n[2])
        fig["worst_stalls"] = [
            {"what": n[0], "t": round(n[1] - run["t0"], 1), "ms": n[2]} for n in pauses[:10]
        ]
    fig["loop_rows"] = loop_rows

    # ---- QoS 1
    wb = run["clients"].get("wb")
    if wb is None:
        failures.append("the QoS 1 checker left no result")
    else:
        for cid, s in wb["subscribers"].items():
            if s["missing"]:
                failures.append(
                    f"{s['missing']} acknowledged QoS 1 message(s) never reached {cid}: "
                    f"{s['missing_list'][:50]}"
                )
            if s["session_lost"]:
                failures.append(f"{cid}'s persistent session was lost {s['session_lost']} time(s)")
        if wb["acked"] == 0:
            failures.append("no QoS 1 message was acknowledged")
    for role in ("churn", "probe", "wb"):
        rc = run["returncodes"].get(role)
        if rc != 0:
            failures.append(f"client process {role} exited with {rc}")
    if run["broker_exit"] is not None and run["broker_died_early"]:
        failures.append(f"the broker died during the run (exit {run['broker_exit']})")
    return fig, failures


def summarise_log(path: Path) -> tuple[collections.Counter[str], list[tuple[str, int]]]:
    levels: collections.Counter[str] = collections.Counter()
    messages: collections.Counter[str] = collections.Counter()
    pattern = re.compile(r"^\S+ \S+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) (\S+): (.*)$")
    for line in path.read_text(errors="replace").splitlines():
        m = pattern.match(line)
        if not m:
            if line.strip():
                levels["other"] += 1
            continue
        levels[m.group(1)] += 1
        text = re.sub(r"\d+\.\d+\.\d+\.\d+:\d+", "ADDR", m.group(3))
        text = re.sub(r"soak-[\w-]+", "CLIENT", text)
        text = re.sub(r"\b\d+(\.\d+)?\b", "N", text)
        messages[f"{m.group(1)} {m.group(2)}: {text[:160]}"] += 1
    return levels, messages.most_common(15)


def misbehaving_table(churn: dict[str, Any]) -> list[str]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = collections.defaultdict(list)
    for r in churn["misbehaving"]:
        groups[(r["kind"], r["variant"])].append(r)
    lines = [
        "| client | variant | connections | closed by broker | s to close (median / max) "
        "| still open after 30 s |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for (kind, variant), rs in sorted(groups.items()):
        closed = [r["secs"] for r in rs if r["closed"]]
        times = f"{statistics.median(closed):.1f} / {max(closed):.1f}" if closed else EN
        lines.append(
            f"| {kind} | {variant} | {len(rs)} | {len(closed)} | {times} | "
            f"{len(rs) - len(closed)} |"
        )
    nr: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for r in churn["nonreaders"]:
        nr[r["variant"]].append(r)
    for variant, rs in sorted(nr.items()):
        ok = [r for r in rs if "error" not in r]
        closed = [r["closed_by_broker_after"] for r in ok if r["closed_by_broker_after"]]
        held = [r["held"] for r in ok]
        unread = [r["unread_bytes"] or 0 for r in ok]
        times = f"{statistics.median(closed):.1f} / {max(closed):.1f}" if closed else EN
        lines.append(
            f"| never reads | {variant} (held {min(held, default=0):.0f}{EN}"
            f"{max(held, default=0):.0f} s, up to {max(unread, default=0) // 1024} KB unread"
            f"{f', {len(rs) - len(ok)} failed' if len(rs) > len(ok) else ''}) | {len(rs)} | "
            f"{len(closed)} | {times} | {EN} |"
        )
    return lines


def ascii_plot(samples: list[dict[str, Any]], width: int = 60, height: int = 12) -> str:
    if not samples:
        return "(no samples)"
    step = max(1, -(-len(samples) // width))
    cols = [samples[i : i + step] for i in range(0, len(samples), step)]
    values = [max(s["rss_kb"] for s in c) / 1024 for c in cols]
    lo, hi = min(values) * 0.95, max(values) * 1.02
    span = (hi - lo) or 1.0
    grid = [[" "] * len(values) for _ in range(height)]
    for x, v in enumerate(values):
        y = int((v - lo) / span * (height - 1))
        for yy in range(y + 1):
            grid[height - 1 - yy][x] = "#" if yy == y else ":"
    lines = []
    for i, row in enumerate(grid):
        label = hi - (i / (height - 1)) * span
        lines.append(f"{label:7.1f} MB |" + "".join(row))
    end = samples[-1]["t"]
    lines.append(" " * 11 + "+" + "-" * len(values))
    lines.append(
        " " * 11 + f"0 s{' ' * max(1, len(values) - 10)}{end:.0f} s"
        f"   (each column: max of {step} sample(s), one every {SAMPLE_EVERY:.0f} s)"
    )
    return "\n".join(lines)


def report(run: dict[str, Any], fig: dict[str, Any], failures: list[str]) -> str:
    churn = run["clients"].get("churn") or {}
    wb = run["clients"].get("wb") or {}
    size = run["bucket"]
    unit = "minute" if size == 60 else f"{size:.0f} s"
    tot = (churn.get("stats") or {}).get("total", {})
    d = run["duration"]
    out = [
        f"### Run of {run['date']}",
        "",
        f"Command: `{run['command']}` — {run.get('broker_label') or 'pytbmq ' + run['commit']}, "
        f"{run['clients_n']} churning "
        f"clients, {d:.0f} s ({run['wall']:.0f} s with start and drain), "
        f"{run['misbehaving']} of each kind of misbehaving client, load generators at nice "
        f"{run.get('loader_nice', 0)} (probe and broker 0). Load average (1/5/15 min) "
        f"before: {run['load_before']}, after: {run['load_after']} (nproc {os.cpu_count()}). "
        f"Open-file limit {run['nofile']}. Results: `{run['out']}`.",
        "",
        "**Verdict: " + ("PASS**" if not failures else "FAIL**: " + "; ".join(failures)),
        "",
        "#### Criteria",
        "",
        "| criterion | measured | verdict |",
        "|---|---|---|",
    ]
    r = fig["rss"]
    out.append(
        f"| RSS bounded: median of {r['last_window']} ≤ {RSS_GROWTH_LIMIT} {TIMES} median of "
        f"{r['mid_window']}, peak ≤ {run['rss_limit_mb']:.0f} MB | {r['last_mb']} MB vs "
        f"{r['mid_mb']} MB ({r['ratio']}{TIMES}; {r['ratio_to_baseline']}{TIMES} "
        f"{r['baseline_window']}, {r['baseline_mb']} MB), peak {r['peak_mb']} MB | "
        + (
            ("**FAIL**" if any("RSS" in f for f in failures) else "PASS")
            if r["judged"]
            else f"growth not judged (run < {MIN_GROWTH_RUN:.0f} s); "
            + ("**FAIL**" if any("RSS" in f for f in failures) else "peak PASS")
        )
        + " |"
    )
    worst = max((p["p99"] for p in fig["probe_minutes"]), default=float("nan"))
    out.append(
        f"| probe round trip p99 ≤ {PROBE_LIMIT_MS:.0f} ms in every minute | worst minute's "
        f"p99 {worst} ms | {'PASS' if not any('probe' in f for f in failures) else '**FAIL**'} |"
    )
    missing = sum(s["missing"] for s in wb.get("subscribers", {}).values())
    qos_ok = wb and not missing and not any("session" in f for f in failures)
    out.append(
        f"| no acknowledged QoS 1 message lost (2 persistent subscribers) | "
        f"{wb.get('acked', 0):,} acked, {missing} missing | "
        f"{'PASS' if qos_ok else '**FAIL**'} |"
    )
    out += [
        "",
        f"#### Broker memory and CPU per {unit}",
        "",
        "Steal %: share of the machine's CPU time the hypervisor gave to other guests "
        "while this VM wanted to run (/proc/stat); a stall no program inside can avoid.",
        "",
        f"Broker CPU over the run: {fig.get('broker_cpu_s')} s, "
        f"{fig.get('broker_cpu_pct')}% of one core on average. RSS at start (first sample) "
        f"{r['start_mb']} MB, peak {r['peak_mb']} MB.",
        "",
        f"| {unit} | RSS MB min | median | max | broker CPU % | client processes CPU % "
        "| steal % | open fds (max) | threads |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for row in fig["buckets"]:
        out.append(
            f"| {row['bucket']} | {row['rss_min']} | {row['rss_median']} | {row['rss_max']} | "
            f"{row['cpu_pct']:.0f} | {row['loader_cpu_pct']:.0f} | "
            f"{row.get('steal_pct', 0):.1f} | {row['fds_max']} | "
            f"{row['threads']} |"
        )
    out += ["", "```", ascii_plot(run["samples"]), "```", ""]
    if fig["loop_rows"]:
        sp = fig.get("slow_probes") or {}
        out += [
            f"#### The broker's event loop per {unit} (bench/soak_broker.py)",
            "",
            "Loop lag: how late a 50 ms timer on the broker's loop fired (the worst, and how "
            "many times it was 10 ms or more late). GC: the garbage collector's "
            "pauses (generation 2 collections and their longest pause, longest pause of any "
            "generation, total GC time). CPU wait: time the broker's main thread was ready "
            "to run but waited for a CPU (/proc/PID/schedstat), in ms per second.",
            "",
            f"| {unit} | loop lag max ms | lags ≥ 10 ms | gen 2 GCs | longest gen 2 ms "
            "| longest GC ms | GC ms total | CPU wait ms/s |",
            "|---|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for row in fig["loop_rows"]:
            out.append(
                f"| {row['bucket']} | {row['lag_max']} | {row['stalls']} | "
                f"{row['gc2']} | {row['gc2_max']} | {row['gc_max']} | {row['gc_ms']:.0f} | "
                f"{row['rq_ms_per_s']:.0f} |"
            )
        out += [
            "",
            f"Probe round trips above 10 ms: {sp.get('n', 0)}; {sp.get('with_stall', 0)} of "
            f"them overlap a broker loop stall or GC pause of 10 ms or more, "
            f"{sp.get('with_gc', 0)} a GC pause. Longest stalls: "
            + ", ".join(
                f"{w['what']} {w['ms']} ms at {w['t']} s" for w in fig.get("worst_stalls", [])
            )
            + ".",
            "",
        ]
    out += [
        f"#### Probe round trip (QoS 0 to itself, every 100 ms) per {unit}",
        "",
        "Probe woke late: how late the probe's own process woke from its 100 ms timer "
        "to send (p99), the machine's scheduling delay for a process that is barely busy, "
        "no broker involved. The last three columns split the round trips (p99 of each "
        "part, CLOCK_MONOTONIC on both sides): before the broker handled the PUBLISH "
        "(the send, the broker's wake-up, what its event loop was busy with), inside the "
        "broker (handled → written back), after it wrote (the probe's own wake-up and read).",
        "",
        f"| {unit} | probes | p50 ms | p99 ms | max ms | never came back | probe woke late, "
        "p99 ms | before the broker read it, p99 ms | inside the broker, p99 ms | after "
        "it wrote, p99 ms |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    split = fig.get("probe_split") or {}
    for p in fig["probe_buckets"]:
        woke = p.get("woke_p99")
        sp = split.get(p["bucket"]) or {}
        out.append(
            f"| {p['bucket']} | {p['n']} | {p['p50']} | {p['p99']} | {p['max']} | {p['lost']} "
            f"| {EN if woke is None else woke} | {sp.get('before_p99', EN)} "
            f"| {sp.get('inside_p99', EN)} | {sp.get('after_p99', EN)} |"
        )
    pt = fig.get("probe_total") or {}
    if pt:
        out += [
            "",
            f"Whole run: {pt['n']:,} probes, p50 {pt['p50']} ms, p99 {pt['p99']} ms, max "
            f"{pt['max']} ms, {pt['lost']} never came back, {pt['reconnects']} reconnects. "
            f"The probe process's own timer lag (how late it woke to send): p50 "
            f"{pt['loop_lag']['p50']} ms, p99 {pt['loop_lag']['p99']} ms, max "
            f"{pt['loop_lag']['max']} ms.",
        ]
        if whole := pt.get("split"):
            by = whole["slow_by"]
            out.append(
                f"Of the {sum(by.values())} round trips above {PROBE_LIMIT_MS:.0f} ms (with "
                f"the broker's notes), the largest part was before the broker read the "
                f"PUBLISH in {by.get('before', 0)}, inside the broker in "
                f"{by.get('inside', 0)}, after it wrote in {by.get('after', 0)}; whole run "
                f"p99 of each part {whole['before_p99']} / {whole['inside_p99']} / "
                f"{whole['after_p99']} ms."
            )
    out += ["", "#### QoS 1, well-behaved publisher → persistent subscribers", ""]
    if wb:
        out.append(
            f"Publisher `soak-wb-pub` (MQTT 5) sent {wb['sent']:,} numbered QoS 1 messages "
            f"at {run['wb_rate']} msg/s, {wb['acked']:,} acknowledged (PUBACK codes "
            f"{wb['puback_codes']}; publisher errors {wb['publisher_errors'] or 'none'})."
        )
        out += [
            "",
            "| subscriber | acked received | missing | duplicates | reconnects (session "
            "resumed) | sessions lost | unexpected closes |",
            "|---|--:|--:|--:|--:|--:|---|",
        ]
        for cid, s in wb["subscribers"].items():
            out.append(
                f"| {cid} | {s['received']:,} | {s['missing']} | {s['duplicates']} | "
                f"{s['reconnects']} | {s['session_lost']} | {s['unexpected_closes'] or EN} |"
            )
            if s["missing"]:
                out.append(f"| | missing: {s['missing_list'][:50]} | | | | | |")
    if churn:
        secs = max(d, 1)
        conns = tot.get("connected_tcp", 0) + tot.get("connected_tls", 0)
        pubs = tot.get("published_q0", 0) + tot.get("published_q1", 0)
        recv = tot.get("received_q0", 0) + tot.get("received_q1", 0)
        errs = f" {churn['connect_errors']}" if churn["connect_errors"] else ""
        out += [
            "",
            "#### Churn",
            "",
            f"{conns:,} connections ({conns / secs:.0f}/s; {tot.get('connected_tls', 0):,} over "
            f"TLS; v3.1.1 clean/persistent {tot.get('connected_v4_clean', 0):,}/"
            f"{tot.get('connected_v4_persistent', 0):,}, v5 "
            f"{tot.get('connected_v5_clean', 0):,}/{tot.get('connected_v5_persistent', 0):,}; "
            f"{tot.get('session_resumed', 0):,} persistent sessions resumed), at most "
            f"{churn['max_online']:,} online at once. {tot.get('connect_failed', 0):,} "
            f"connection attempts failed{errs}. "
            f"Endings: {tot.get('end_disconnect', 0):,} DISCONNECT, {tot.get('end_rst', 0):,} "
            f"RST, {tot.get('end_fin', 0):,} FIN without DISCONNECT; "
            f"{tot.get('closed_by_broker', 0):,} closed by the broker "
            f"({churn['close_reasons'] or 'none'}). Published {pubs:,} "
            f"({pubs / secs:.0f}/s; QoS 1 {tot.get('published_q1', 0):,}, PUBACK timeouts "
            f"{tot.get('puback_timeout', 0)}, refused {tot.get('puback_refused', 0)}), "
            f"received {recv:,} ({recv / secs:.0f}/s). Flooder: {tot.get('flood_q0', 0):,} QoS 0 "
            "messages of 1 KB + "
            f"{tot.get('flood_q1', 0):,} QoS 1 messages of 256 bytes to the never-reading "
            "subscribers "
            f"({tot.get('flood_q1_failed', 0)} QoS 1 failed).",
            "",
            "#### Misbehaving clients",
            "",
            *misbehaving_table(churn),
        ]
        if churn.get("crashed_tasks"):
            out += ["", f"Client tasks that crashed: {churn['crashed_tasks']}"]
    levels, top = run["log_levels"], run["log_top"]
    out += [
        "",
        "#### Broker log (level WARNING)",
        "",
        f"Lines by level: {dict(levels) or 'none'}. Broker stopped in "
        f"{run['stop_secs']:.1f} s with exit status {run['broker_exit']}.",
    ]
    if top:
        out += ["", "| times | message (numbers → N, addresses → ADDR, soak clients → CLIENT) |"]
        out += ["|--:|---|"]
        for text, n in top:
            out.append(f"| {n:,} | {text.replace('|', '/')} |")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description="pytbmq soak / chaos run (bench/soak)")
    ap.add_argument("--duration", type=float, default=None, help="seconds (default 600)")
    ap.add_argument("--clients", type=int, default=None, help="churning clients (default 2000)")
    ap.add_argument("--quick", action="store_true", help="60 s and 200 clients")
    ap.add_argument("--misbehaving", type=int, default=4, help="clients of each bad kind (4)")
    ap.add_argument("--tls-share", type=float, default=0.05, help="share of churn over TLS")
    ap.add_argument("--wb-rate", type=float, default=20.0, help="QoS 1 checker msg/s (20)")
    ap.add_argument("--rss-limit-mb", type=float, default=512.0, help="absolute RSS bound")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--nonreader-receive-max",
        type=int,
        default=None,
        metavar="N",
        help="experiment: the MQTT 5 never-reading subscribers announce Receive Maximum N",
    )
    ap.add_argument(
        "--no-instrument",
        action="store_true",
        help="run the broker as plain `python -m pytbmq` (no loop-lag / GC measurements)",
    )
    ap.add_argument(
        "--broker",
        choices=("pytbmq", "mosquitto"),
        default="pytbmq",
        help="the broker under test; mosquitto (Debian's) is the control: the same clients, "
        "machine and criteria, to tell the broker's own stalls from the machine's",
    )
    ap.add_argument(
        "--gc-thresholds",
        default="",
        metavar="A,B,C",
        help="experiment: the broker with PYTBMQ_GC_THRESHOLDS=A,B,C instead of its default",
    )
    ap.add_argument(
        "--tracemalloc",
        action="store_true",
        help="diagnosis: run the broker under tracemalloc and write, every minute, where "
        "its memory grew to tracemalloc.txt (slows the broker: not for figures)",
    )
    ap.add_argument(
        "--census",
        choices=("objects", "saveall"),
        default=None,
        help="diagnosis: every minute write what the broker's garbage collector tracks, by "
        "type, to census.txt; 'saveall' also keeps and lists the cyclic garbage it finds "
        "(gc.DEBUG_SAVEALL; not for figures)",
    )
    ap.add_argument(
        "--loader-nice",
        type=int,
        default=10,
        metavar="N",
        help="niceness of the load generators (the churning and misbehaving clients and the "
        "QoS 1 checker; the probe and the broker keep 0), so that on a small machine they "
        "do not compete with what is measured on equal terms (10; 0 to turn off)",
    )
    ap.add_argument("--out", type=Path, default=None, help="results directory")
    ap.add_argument(
        "--report-only",
        type=Path,
        default=None,
        metavar="DIR",
        help="analyse a finished run's results directory again (no broker, no clients)",
    )
    args = ap.parse_args()
    if args.report_only is not None:
        return finish(args.report_only, load_run(args.report_only))
    duration = args.duration or (60.0 if args.quick else 600.0)
    clients = args.clients or (200 if args.quick else 2000)
    bucket = 60.0 if duration >= 180 else 10.0
    nofile = raise_nofile()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    started = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    out = args.out or RESULTS / stamp
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="pytbmq-soak-"))
    command = "bench/soak " + " ".join(sys.argv[1:])
    if args.broker == "mosquitto":
        args.no_instrument = True
    if (args.tracemalloc or args.census or args.gc_thresholds) and args.no_instrument:
        ap.error("--tracemalloc, --census and --gc-thresholds need the instrumented pytbmq")
    load_before = loadavg()
    commit = git_commit()
    say(f"{clients} clients for {duration:.0f} s; results in {out}; load {load_before}")

    tcp, tls = free_port(), free_port()
    broker_log = out / "broker.log"
    loop_stats = None if args.no_instrument else out / "broker-loop.jsonl"
    broker = start_broker(
        tmp,
        tcp,
        tls,
        broker_log,
        loop_stats,
        args.gc_thresholds,
        args.tracemalloc,
        args.census,
        args.broker,
    )
    say(f"broker pid {broker.pid} on tcp {tcp}, tls {tls}")
    t0 = time.time() + 2.0
    cfg = {
        "host": "127.0.0.1",
        "tcp_port": tcp,
        "tls_port": tls,
        "ca": str(tmp / "ca" / "ca.pem"),
        "t0": t0,
        "duration": duration,
        "clients": clients,
        "misbehaving": args.misbehaving,
        "tls_share": args.tls_share,
        "wb_rate": args.wb_rate,
        "nonreader_receive_max": args.nonreader_receive_max,
        "seed": args.seed,
        "bucket": bucket,
        "ramp": min(20.0, duration / 6),
        "out": str(out),
    }
    children = {
        role: subprocess.Popen(
            [
                *(["nice", "-n", str(args.loader_nice)] if role != "probe" else []),
                str(PYTHON),
                str(BENCH / "soak_clients.py"),
                role,
                json.dumps(cfg),
            ],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        for role in ("probe", "wb", "churn")
    }
    samples: list[dict[str, Any]] = []
    died_early = False
    hard_end = t0 + duration + 150
    next_sample = t0
    try:
        while True:
            now = time.time()
            if next_sample <= now:
                next_sample += SAMPLE_EVERY
                if broker.poll() is not None:
                    died_early = now < t0 + duration
                    say(f"the broker exited with {broker.returncode}")
                    break
                try:
                    st = proc_status(broker.pid)
                    loader = 0.0
                    for c in children.values():
                        with contextlib.suppress(OSError, ValueError, IndexError):
                            loader += cpu_seconds(c.pid)
                    samples.append(
                        {
                            "t": round(now - t0, 2),
                            "rss_kb": st["VmRSS"],
                            "hwm_kb": st["VmHWM"],
                            "threads": st["Threads"],
                            "cpu": cpu_seconds(broker.pid),
                            "fds": fd_count(broker.pid),
                            "rq_wait": runqueue_wait(broker.pid),
                            "loader_cpu": loader,
                            "steal": (ticks := machine_ticks())[0],
                            "ticks": ticks[1],
                        }
                    )
                except (OSError, KeyError, ValueError):
                    pass
                if len(samples) % 12 == 0 and samples:
                    s = samples[-1]
                    say(
                        f"t={s['t']:.0f}s rss {s['rss_kb'] / 1024:.1f} MB, fds {s['fds']}, "
                        f"broker cpu {s['cpu']:.0f} s, load {loadavg()}"
                    )
            if all(c.poll() is not None for c in children.values()) or now > hard_end:
                break
            time.sleep(min(1.0, max(0.05, next_sample - time.time())))
    except KeyboardInterrupt:
        say("interrupted")
    finally:
        for c in children.values():
            if c.poll() is None:
                c.kill()
                c.wait()
        stop_secs = stop(broker)
    load_after = loadavg()
    clients_results: dict[str, Any] = {}
    for role in children:
        path = out / f"{role}.json"
        if path.exists():
            clients_results[role] = json.loads(path.read_text())
    levels, top = summarise_log(broker_log)
    marks = read_probe_marks(out / PROBE_MARKS)
    loop_lines = []
    if loop_stats is not None and loop_stats.exists():
        for line in loop_stats.read_text().splitlines():
            with contextlib.suppress(ValueError):
                loop_lines.append(json.loads(line))
    run: dict[str, Any] = {
        "date": started,
        "command": command,
        "commit": commit,
        "broker_label": f"pytbmq {commit}" if args.broker == "pytbmq" else mosquitto_version(),
        "clients_n": clients,
        "duration": duration,
        "bucket": bucket,
        "misbehaving": args.misbehaving,
        "wb_rate": args.wb_rate,
        "loader_nice": args.loader_nice,
        "rss_limit_mb": args.rss_limit_mb,
        "nofile": f"{nofile[0]}/{nofile[1]}",
        "load_before": load_before,
        "load_after": load_after,
        "wall": time.time() - t0,
        "out": str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out),
        "samples": samples,
        "clients": clients_results,
        "loop": loop_lines,
        "probe_marks": marks,
        "t0": t0,
        "returncodes": {role: c.returncode for role, c in children.items()},
        "broker_exit": broker.returncode,
        "broker_died_early": died_early,
        "stop_secs": stop_secs,
        "log_levels": levels,
        "log_top": top,
        "python": sys.version.split()[0],
        "openssl": ssl.OPENSSL_VERSION,
    }
    shutil.rmtree(tmp, ignore_errors=True)
    return finish(out, run)


def finish(out: Path, run: dict[str, Any]) -> int:
    """Analyse, write the result files, print the report; the exit status."""
    samples = run["samples"]
    fig, failures = analyse(run)
    text = report(run, fig, failures)
    (out / "report.md").write_text(text)
    with (out / "rss.csv").open("w") as f:
        f.write(
            "t_s,rss_kb,hwm_kb,broker_cpu_s,broker_cpu_wait_s,fds,threads,client_cpu_s,"
            "steal_ticks,total_ticks\n"
        )
        for s in samples:
            f.write(
                f"{s['t']},{s['rss_kb']},{s['hwm_kb']},{s['cpu']:.2f},{s['rq_wait']:.3f},"
                f"{s['fds']},{s['threads']},{s['loader_cpu']:.2f},{s.get('steal', 0)},"
                f"{s.get('ticks', 0)}\n"
            )
    with (out / "probe.csv").open("w") as f:
        f.write("bucket,probes,p50_ms,p99_ms,max_ms,lost\n")
        for p in fig["probe_buckets"]:
            f.write(f"{p['bucket']},{p['n']},{p['p50']},{p['p99']},{p['max']},{p['lost']}\n")
    (out / "rss.txt").write_text(ascii_plot(samples) + "\n")
    summary = {
        k: v for k, v in run.items() if k not in ("clients", "samples", "loop", "probe_marks")
    }
    summary["figures"] = fig
    summary["failures"] = failures
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(text)
    say(("PASS" if not failures else "FAIL: " + "; ".join(failures)) + f" (results in {out})")
    return 1 if failures else 0


def load_run(out: Path) -> dict[str, Any]:
    """A finished run read back from its results directory (for --report-only)."""
    run: dict[str, Any] = json.loads((out / "summary.json").read_text())
    run.pop("figures", None)
    run.pop("failures", None)
    keys = ("t", "rss_kb", "hwm_kb", "cpu", "rq_wait", "fds", "threads", "loader_cpu")
    keys += ("steal", "ticks")
    run["samples"] = []
    for line in (out / "rss.csv").read_text().splitlines()[1:]:
        values = [float(v) for v in line.split(",")]
        sample: dict[str, Any] = dict(zip(keys, values, strict=False))
        for key in ("rss_kb", "hwm_kb", "fds", "threads"):
            sample[key] = int(sample[key])
        run["samples"].append(sample)
    run["clients"] = {}
    for role in ("probe", "wb", "churn"):
        path = out / f"{role}.json"
        if path.exists():
            run["clients"][role] = json.loads(path.read_text())
    run["loop"] = []
    loop = out / "broker-loop.jsonl"
    if loop.exists():
        for line in loop.read_text().splitlines():
            with contextlib.suppress(ValueError):
                run["loop"].append(json.loads(line))
    run["probe_marks"] = read_probe_marks(out / PROBE_MARKS)
    levels, top = summarise_log(out / "broker.log")
    run["log_levels"], run["log_top"] = levels, top
    return run


def read_probe_marks(path: Path) -> dict[int, tuple[float, float]]:
    """soak_broker.py's notes: probe sequence number → (handled, written), monotonic s."""
    marks: dict[int, tuple[float, float]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                seq, handled, written = line.split()
                marks[int(seq)] = (float(handled), float(written))
    return marks


if __name__ == "__main__":
    sys.exit(main())
