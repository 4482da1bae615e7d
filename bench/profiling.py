"""Profile pytbmq with py-spy under the benchmark's load (`bench/run --profile`).

For each chosen scenario: start pytbmq exactly as the suite does, start mqtt-load, attach
`py-spy record --nonblocking` for the measurement window, then print the functions
with the most samples: "self" (the function was on top of the stack), "total" (anywhere
on the stack) and the hottest lines, as percentages of all non-idle samples. Time spent
in C (uvloop's loop, socket calls, bytes operations) is charged to the Python frame that
called it: `Runner.run` self time is the event loop itself. The collapsed
stacks (and, with --svg, flame graphs) are kept in bench/.build/profiles/.

py-spy comes from bench/.build/tools-venv (bench/tools-requirements.txt), never from the
project's virtual environment.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import suite

PYSPY = suite.TOOLS_VENV / "bin" / "py-spy"
OUT = suite.BUILD / "profiles"


Counts = collections.Counter[str]


def parse_collapsed(path: Path) -> tuple[int, Counts, Counts, Counts]:
    """(samples, self per function, total per function, self per line) from py-spy's raw
    format, where each frame reads `name (file:line)` with the line being executed."""
    self_c: Counts = collections.Counter()
    incl_c: Counts = collections.Counter()
    line_c: Counts = collections.Counter()
    n = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        n += count
        fn, ln = split_frame(frames[-1])
        self_c[fn] += count
        line_c[f"{ln} in {fn.split(' (')[0]}"] += count
        for f in {split_frame(f)[0] for f in frames}:
            incl_c[f] += count
    return n, self_c, incl_c, line_c


def split_frame(frame: str) -> tuple[str, str]:
    """`handle (/x/src/pytbmq/link.py:123)` -> (`handle (pytbmq/link.py)`, `pytbmq/link.py:123`)."""
    name, _, loc = frame.partition(" (")
    loc = loc.rstrip(")")
    for marker in ("/src/", "/site-packages/", "/lib/python3.11/"):
        if marker in loc:
            loc = loc.split(marker, 1)[1]
            break
    file = loc.rsplit(":", 1)[0] if ":" in loc else loc
    return (f"{name} ({file})" if file else name), loc


def profile(sc: suite.Scenario, seconds: float, rate: int, svg: bool, tmp: Path) -> str:
    OUT.mkdir(parents=True, exist_ok=True)
    raw = OUT / f"{sc.key}.txt"
    lines: list[str] = []
    formats = [("raw", raw)] + ([("flamegraph", OUT / f"{sc.key}.svg")] if svg else [])
    for fmt, path in formats:
        with suite.broker_running(suite.BROKERS["pytbmq"], tmp, sc.key, sc.transport) as run:
            warmup = 1.0
            load_argv = [
                str(suite.LOADER), *run.target(sc.transport), *sc.args,
                "-d", f"{seconds + 1:g}", "-w", f"{warmup:g}", "--drain", f"{sc.drain:g}",
                "--quiet", "--broker-pid", str(run.pid),
            ]  # fmt: skip
            loader = subprocess.Popen(
                load_argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            spy_argv = [
                str(PYSPY), "record", "--pid", str(run.pid), "--nonblocking",
                "--rate", str(rate), "--duration", f"{seconds:g}", "--format", fmt,
                "-o", str(path),
            ]  # fmt: skip
            try:
                time.sleep(warmup + 0.5)
                spy = subprocess.run(spy_argv, capture_output=True, text=True)
                out, _ = loader.communicate(timeout=seconds + 120)
            finally:
                if loader.poll() is None:
                    loader.kill()
                    loader.wait()
            if spy.returncode != 0:
                raise RuntimeError(f"py-spy failed: {spy.stderr.strip()[-500:]}")
            if fmt == "raw":
                data = suite.loader_json(out)
                cpu = suite.cpu_us_per_msg(data)
                lines.append(
                    f"## {sc.title}: {data['recv_rate']:,.0f} msg/s delivered, broker CPU "
                    f"{data.get('broker_cpu_pct')}%"
                    + (f", {cpu:.1f} µs/msg" if cpu is not None else "")
                    + " (under py-spy)"
                )
    n, self_c, incl_c, line_c = parse_collapsed(raw)
    lines.append(f"{n:,} non-idle samples at {rate} Hz; stacks in {raw}")
    lines.append("")
    lines.append("| self % | function |")
    lines.append("|--:|---|")
    for fn, c in self_c.most_common(15):
        lines.append(f"| {100 * c / n:.1f} | `{fn}` |")
    lines.append("")
    lines.append("| total % | function (frames on every sample left out) |")
    lines.append("|--:|---|")
    for fn, c in [(f, c) for f, c in incl_c.most_common() if c < 0.995 * n][:20]:
        lines.append(f"| {100 * c / n:.1f} | `{fn}` |")
    lines.append("")
    lines.append("| self % | line |")
    lines.append("|--:|---|")
    for ln, c in line_c.most_common(20):
        lines.append(f"| {100 * c / n:.1f} | `{ln}` |")
    lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/run --profile", description=__doc__)
    p.add_argument("--only", default="fan-in,fan-out-10,pairs-q1", help="scenario keys")
    p.add_argument("--seconds", type=float, default=10.0, help="profiled seconds per scenario")
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--pytbmq-ref", metavar="REF", help="profile pytbmq as committed at REF")
    p.add_argument("--svg", action="store_true", help="also record a flame graph per scenario")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.pytbmq_ref:
        suite.use_pytbmq_ref(args.pytbmq_ref)
    suite.load_pytbmq_settings()
    by_key = {s.key: s for s in suite.scenarios(["tcp", "tls"])}
    report: list[str] = []
    with tempfile.TemporaryDirectory(prefix="pytbmq-profile-") as tmp:
        for key in args.only.split(","):
            sc = by_key[key.strip()]
            print(f"profiling pytbmq under {sc.title} ...", file=sys.stderr, flush=True)
            report.append(profile(sc, args.seconds, args.rate, args.svg, Path(tmp)))
    text = "\n".join(report)
    print(text)
    (OUT / "report.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
