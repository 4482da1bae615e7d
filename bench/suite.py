"""pytbmq benchmark suite: pytbmq, Mosquitto (default and TCP_NODELAY) and amqtt side by side.

Run it through `bench/run`, which builds the load generator (mqtt-load), makes amqtt's
virtual environment and raises the open-file limit first; `bench/run --help` lists the
options. See docs/benchmarks.md for what each scenario and column means.

Every scenario runs against every broker in turn (A B C D A B C D …) for several rounds,
so drift on the machine hits all brokers alike. Each run gets a freshly started broker on
a free loopback port, which is stopped afterwards: no backlog, retained message or session
of one run can leak into the next, and memory figures start from a clean process.

This is not a test: pytest never collects it (pyproject's testpaths = ["tests"]).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
BUILD = BENCH / ".build"
LOADER = BUILD / "mqtt-load" / "mqtt-load"
AMQTT_VENV = BUILD / "amqtt-venv"
TOOLS_VENV = BUILD / "tools-venv"
RESULTS = BUILD / "results"

# mqtt-load URL scheme per transport. A TLS row is a Scenario with transport="tls" plus a
# broker whose `start` opens a TLS listener: nothing else in the suite changes.
SCHEMES = {"tcp": "mqtt", "tls": "mqtts", "ws": "ws", "wss": "wss"}

Kind = Literal["throughput", "latency", "storm", "idle"]
EN, TIMES = "\u2013", "\u00d7"  # en dash, multiplication sign (kept out of literals for ruff)

# --------------------------------------------------------------------------- brokers


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago (the broker binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """A minimal environment, so no stray LISTENER_* / MQTT_* variable changes a default."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ")}
    env.update(extra)
    return env


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str]


@dataclass(frozen=True)
class Broker:
    key: str
    label: str
    supports: Callable[[str], bool]  # transport -> can this broker serve it
    launch: Callable[[Path, dict[str, int]], Launch]  # ports: transport -> port
    listed_only: bool = False  # runs only in scenarios that name it in `brokers`


@dataclass(frozen=True)
class Pki:
    """A throw-away CA and a server certificate for 127.0.0.1 / localhost (EC P-256)."""

    ca: Path
    cert: Path
    key: Path


_PKI: list[Pki] = []


def pki() -> Pki:
    """The run's certificates, made with the openssl command on first use."""
    if _PKI:
        return _PKI[0]
    d = Path(tempfile.mkdtemp(prefix="pytbmq-bench-pki-"))
    ca, ca_key, cert, key = d / "ca.pem", d / "ca.key", d / "server.pem", d / "server.key"
    ext = d / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for argv in (
        ["openssl", "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca),
         "-days", "2", "-subj", "/CN=pytbmq bench CA"],
        ["openssl", "req", *ec, "-keyout", str(key), "-out", str(d / "server.csr"),
         "-subj", "/CN=localhost"],
        ["openssl", "x509", "-req", "-in", str(d / "server.csr"), "-CA", str(ca),
         "-CAkey", str(ca_key), "-CAcreateserial", "-days", "2", "-extfile", str(ext),
         "-out", str(cert)],
    ):  # fmt: skip
        subprocess.run(argv, check=True, capture_output=True)
    # Mosquitto started as root reads them after dropping to its own user.
    d.chmod(0o755)
    for f in (ca, cert, key):
        f.chmod(0o644)
    _PKI.append(Pki(ca, cert, key))
    return _PKI[0]


def pytbmq_python() -> Path:
    return ROOT / ".venv" / "bin" / "python"


@dataclass
class PytbmqTarget:
    """Which pytbmq sources run: the working tree (the venv's editable install) or a commit."""

    src: Path | None = None  # a `src` directory put first on PYTHONPATH
    label: str = "working tree"
    known: set[str] = field(default_factory=set)  # setting names it understands

    def env(self) -> dict[str, str]:
        return {"PYTHONPATH": str(self.src)} if self.src else {}


PYTBMQ = PytbmqTarget()


def use_pytbmq_ref(ref: str) -> None:
    """Run pytbmq from `git archive REF src` (read-only for git) instead of the working tree."""
    sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    dest = BUILD / f"pytbmq-{sha[:12]}"
    if not (dest / "src" / "pytbmq" / "__init__.py").is_file():
        shutil.rmtree(dest, ignore_errors=True)
        part = Path(tempfile.mkdtemp(prefix="pytbmq-src-", dir=BUILD))
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", sha, "src"],
            capture_output=True,
            check=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(part, filter="data")
        part.rename(dest)
    PYTBMQ.src = dest / "src"
    PYTBMQ.label = f"commit {sha[:7]} ({ref})"


def load_pytbmq_settings() -> None:
    """Learn the setting names this pytbmq knows (from `pytbmq settings`)."""
    out = subprocess.run(
        [str(pytbmq_python()), "-m", "pytbmq", "settings"],
        capture_output=True,
        text=True,
        check=True,
        env=clean_env(PYTBMQ.env()),
    ).stdout
    PYTBMQ.known = {ln.split("=", 1)[0] for ln in out.splitlines() if re.match(r"^[A-Z0-9_]+=", ln)}


def pytbmq_supports(transport: str) -> bool:
    return transport == "tcp" or (transport == "tls" and "LISTENER_SSL_ENABLED" in PYTBMQ.known)


def launch_pytbmq(workdir: Path, ports: dict[str, int]) -> Launch:
    env = {
        "PYTBMQ_DATA_DIR": str(workdir / "data"),
        "PYTBMQ_LOG_LEVEL": "WARNING",
        "LISTENER_WS_ENABLED": "false",
        "HTTP_ENABLED": "false",  # the admin API is not what is measured
        **PYTBMQ.env(),
    }
    if "tcp" in ports:
        env["LISTENER_TCP_BIND_ADDRESS"] = "127.0.0.1"
        env["LISTENER_TCP_BIND_PORT"] = str(ports["tcp"])
    else:
        env["LISTENER_TCP_ENABLED"] = "false"
    if "tls" in ports:
        c = pki()
        env.update(
            LISTENER_SSL_ENABLED="true",
            LISTENER_SSL_BIND_ADDRESS="127.0.0.1",
            LISTENER_SSL_BIND_PORT=str(ports["tls"]),
            LISTENER_SSL_CREDENTIALS_TYPE="PEM",
            LISTENER_SSL_PEM_CERT=str(c.cert),
            LISTENER_SSL_PEM_KEY=str(c.key),
        )
    if "PYTBMQ_STORAGE" in PYTBMQ.known:
        env["PYTBMQ_STORAGE"] = "sqlite"  # the default, named explicitly
    return Launch([str(pytbmq_python()), "-m", "pytbmq"], clean_env(env))


def mosquitto_launcher(
    nodelay: bool, persist: bool = False
) -> Callable[[Path, dict[str, int]], Launch]:
    def launch(workdir: Path, ports: dict[str, int]) -> Launch:
        conf = workdir / "mosquitto.conf"
        lines = ["allow_anonymous true"]
        if nodelay:
            lines.append("set_tcp_nodelay true")
        if persist:
            # Mosquitto keeps sessions in memory and writes mosquitto.db on autosave
            # (default every 1800 s) and at shutdown; it does not write per message.
            lines += ["persistence true", f"persistence_location {workdir}/"]
        if "tcp" in ports:
            lines.append(f"listener {ports['tcp']} 127.0.0.1")
        if "tls" in ports:
            c = pki()
            lines += [
                f"listener {ports['tls']} 127.0.0.1",
                f"certfile {c.cert}",
                f"keyfile {c.key}",
            ]
        conf.write_text("\n".join(lines) + "\n")
        return Launch([shutil.which("mosquitto") or "mosquitto", "-c", str(conf)], clean_env({}))

    return launch


def launch_amqtt(workdir: Path, ports: dict[str, int]) -> Launch:
    conf = workdir / "amqtt.yaml"
    text = "listeners:\n"
    for transport, port in ports.items():
        name = "default" if transport == next(iter(ports)) else transport
        text += f"  {name}:\n    type: tcp\n    bind: 127.0.0.1:{port}\n"
        if transport == "tls":
            c = pki()
            text += f"    ssl: true\n    certfile: {c.cert}\n    keyfile: {c.key}\n"
    text += (
        "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n"
    )
    conf.write_text(text)
    return Launch([str(AMQTT_VENV / "bin" / "amqtt"), "-c", str(conf)], clean_env({}))


def tcp_tls(transport: str) -> bool:
    return transport in ("tcp", "tls")


BROKERS: dict[str, Broker] = {
    b.key: b
    for b in (
        Broker("pytbmq", "pytbmq", pytbmq_supports, launch_pytbmq),
        Broker("mosquitto", "Mosquitto", tcp_tls, mosquitto_launcher(nodelay=False)),
        Broker("mosquitto-nodelay", "Mosquitto nodelay", tcp_tls, mosquitto_launcher(True)),
        Broker("amqtt", "amqtt", tcp_tls, launch_amqtt),
        # Only for the persistent-session scenario: nodelay plus `persistence true`.
        Broker(
            "mosquitto-persist",
            "Mosquitto nodelay persist",
            tcp_tls,
            mosquitto_launcher(True, persist=True),
            listed_only=True,
        ),
    )
}
REFERENCE = "mosquitto-nodelay"


@dataclass
class Running:
    broker: Broker
    proc: subprocess.Popen[bytes]
    urls: dict[str, str]
    workdir: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def target(self, transport: str) -> list[str]:
        """mqtt-load's arguments that reach this broker over `transport`."""
        args = ["-u", self.urls[transport]]
        if transport in ("tls", "wss"):
            args += ["--cafile", str(pki().ca)]
        return args


def wait_listening(proc: subprocess.Popen[bytes], port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited with status {proc.returncode} during startup")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"broker did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def stop_broker(run: Running) -> None:
    proc = run.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def broker_running(broker: Broker, tmp: Path, tag: str, transport: str) -> Iterator[Running]:
    """`broker` started with one listener, for `transport`, on a free loopback port."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{broker.key}-{tag}-", dir=tmp))
    ports = {transport: free_port()}
    launch = broker.launch(workdir, ports)
    log = (workdir / "broker.log").open("wb")
    proc = subprocess.Popen(
        launch.argv,
        env=launch.env,
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches the suite, which stops the broker itself
    )
    run = Running(
        broker, proc, {t: f"{SCHEMES[t]}://127.0.0.1:{p}" for t, p in ports.items()}, workdir
    )
    try:
        for port in ports.values():
            wait_listening(proc, port, 30.0)
        yield run
    finally:
        stop_broker(run)
        log.close()
        if proc.returncode not in (0, -signal.SIGTERM):
            tail = (workdir / "broker.log").read_text(errors="replace")[-2000:]
            print(
                f"    note: {broker.key} exited with {proc.returncode}; log tail:\n{tail}",
                file=sys.stderr,
            )


# --------------------------------------------------------------------------- /proc


def vmrss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` (from /proc/PID/stat, clock-tick resolution)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# --------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    kind: Kind
    qos: int
    args: tuple[str, ...]
    transport: str = "tcp"
    quick: bool = False  # part of --quick
    drain: float = 1.0  # longest wait for in-flight messages after the window (s)
    brokers: tuple[str, ...] | None = None  # None: every broker

    def runs_on(self, broker: Broker) -> bool:
        listed = not broker.listed_only if self.brokers is None else broker.key in self.brokers
        return broker.supports(self.transport) and listed


PAIRS = ("--pub", "10", "--sub", "10", "-t", "bench/%r/%i")
# Connection-storm size per transport where it differs from TCP's 1000 clients.
STORM_CLIENTS = {"tls": 200, "wss": 200}


def scenarios(transports: Sequence[str]) -> list[Scenario]:
    base: list[Scenario] = [
        Scenario(
            "fan-in",
            "fan-in 10→1 QoS 0",
            "throughput",
            0,
            ("--pub", "10", "--sub", "1", "-t", "bench/%r/%i", "-T", "bench/%r/#", "-q", "0"),
            quick=True,
        ),
        Scenario(
            "fan-out-10",
            "fan-out 1→10 QoS 0",
            "throughput",
            0,
            ("--pub", "1", "--sub", "10", "-t", "bench/%r/x", "-q", "0"),
            quick=True,
        ),
        Scenario(
            "fan-out-100",
            "fan-out 1→100 QoS 0",
            "throughput",
            0,
            ("--pub", "1", "--sub", "100", "-t", "bench/%r/x", "-q", "0"),
        ),
        Scenario(
            "pairs-q1", "10 pairs QoS 1", "throughput", 1, (*PAIRS, "-q", "1"),
            quick=True, drain=5.0,
        ),
        # Issue 7: persistent sessions (clean session off; pytbmq on its SQLite store,
        # Mosquitto with `persistence true`), to set beside `pairs-q1` of the same run.
        Scenario(
            "pairs-q1-persistent", "10 pairs QoS 1, persistent sessions", "throughput", 1,
            (*PAIRS, "-q", "1", "--no-clean", "--session-expiry", "300"), drain=5.0,
            brokers=("pytbmq", "mosquitto-persist"),
        ),
        Scenario("pairs-q2", "10 pairs QoS 2", "throughput", 2, (*PAIRS, "-q", "2"), drain=5.0),
        Scenario(
            "pairs-q1-4k", "10 pairs QoS 1, 4 KB", "throughput", 1,
            (*PAIRS, "-q", "1", "-s", "4096"), drain=5.0,
        ),
        # 65,000 bytes: the whole PUBLISH must fit pytbmq's default maximum packet size
        # (TCP_NETTY_MAX_PAYLOAD_SIZE=65536, as TBMQ); a 65,536-byte payload is refused.
        Scenario(
            "pairs-q1-64k", "10 pairs QoS 1, 64 KB", "throughput", 1,
            (*PAIRS, "-q", "1", "-s", "65000"), drain=5.0,
        ),
        Scenario(
            "lat-q0", "latency 1→1 QoS 0 @1000/s", "latency", 0,
            ("--pub", "1", "--sub", "1", "-t", "bench/%r/x", "-q", "0", "-r", "1000"),
        ),
        Scenario(
            "lat-q1", "latency 1→1 QoS 1 @1000/s", "latency", 1,
            ("--pub", "1", "--sub", "1", "-t", "bench/%r/x", "-q", "1", "-r", "1000"),
            quick=True, drain=5.0,
        ),
        Scenario(
            "lat-fan-out", "latency 1→10 QoS 0 @1000/s", "latency", 0,
            ("--pub", "1", "--sub", "10", "-t", "bench/%r/x", "-q", "0", "-r", "1000"),
        ),
        Scenario(
            "storm", "storm 1000 clients (≤100 in progress)", "storm", 0,
            ("--pub", "0", "--sub", "0", "--connections", "1000", "--conn-parallel", "100"),
            quick=True,
        ),
        # Nagle is irrelevant to idle sockets, so Mosquitto runs once, with nodelay (which
        # also keeps the probe's latency free of Nagle delays).
        Scenario(
            "idle", "10,000 idle connections", "idle", 1, (),
            brokers=("pytbmq", "mosquitto-nodelay", "amqtt"),
        ),
    ]  # fmt: skip
    out: list[Scenario] = []
    for transport in transports:
        for sc in base:
            if transport == "tcp":
                out.append(sc)
                continue
            title, args = sc.title, sc.args
            n = STORM_CLIENTS.get(transport)
            if sc.kind == "storm" and n:
                # Issue 3: the storm is 1000 TCP clients but 200 TLS clients (handshakes).
                i = args.index("--connections") + 1
                args = (*args[:i], str(n), *args[i + 1 :])
                title = title.replace("1000 clients", f"{n} clients")
            out.append(
                Scenario(
                    f"{sc.key}-{transport}",
                    title,
                    sc.kind,
                    sc.qos,
                    args,
                    transport,
                    sc.quick,
                    sc.drain,
                    sc.brokers,
                )
            )
    return out


@dataclass(frozen=True)
class Options:
    rounds: int
    duration: float  # throughput window
    warmup: float
    latency_duration: float
    latency_warmup: float
    idle_hold: float
    idle_connections: int
    idle_rounds: int
    tmp: Path


# --------------------------------------------------------------------------- running


@dataclass
class RunResult:
    scenario: str
    broker: str
    round: int
    ok: bool
    error: str | None = None
    data: dict[str, Any] = field(default_factory=dict)  # mqtt-load's JSON
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def loader_json(stdout: str) -> dict[str, Any]:
    lines = [ln for ln in stdout.strip().splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError("mqtt-load printed no JSON summary")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def run_loader(argv: list[str], timeout: float) -> tuple[int, dict[str, Any] | None, str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    try:
        data: dict[str, Any] | None = loader_json(proc.stdout)
    except (RuntimeError, json.JSONDecodeError):
        data = None
    return proc.returncode, data, proc.stderr.strip()


def num(data: dict[str, Any], key: str) -> float | None:
    v = data.get(key)
    return float(v) if isinstance(v, int | float) else None


def cpu_us_per_msg(data: dict[str, Any]) -> float | None:
    pct, dur, n = (
        num(data, "broker_cpu_pct"),
        num(data, "duration_s"),
        num(data, "delivered_in_window"),
    )
    if pct is None or dur is None or not n:
        return None
    return pct / 100.0 * dur * 1e6 / n


def run_messages(sc: Scenario, run: Running, opts: Options, res: RunResult) -> None:
    duration = opts.duration if sc.kind == "throughput" else opts.latency_duration
    warmup = opts.warmup if sc.kind == "throughput" else opts.latency_warmup
    argv = [
        str(LOADER), *run.target(sc.transport), *sc.args,
        "-d", f"{duration:g}", "-w", f"{warmup:g}", "--drain", f"{sc.drain:g}",
        "--quiet", "--broker-pid", str(run.pid),
    ]  # fmt: skip
    rc, data, err = run_loader(argv, timeout=duration + warmup + sc.drain + 90)
    if data is None or (rc != 0 and not data.get("sent")):
        raise RuntimeError(f"mqtt-load exit {rc}: {err[-500:]}")  # aborted: no figures
    res.data = data
    if rc != 0:
        res.error = f"mqtt-load exit {rc}: {err[-300:]}"
    m = res.metrics
    m["lost"] = float(data.get("lost") or 0)
    m["dup"] = float(data.get("dup") or 0)
    if sc.kind == "throughput":
        m["rate"] = float(data["recv_rate"])
    else:
        for key in ("lat_p50_us", "lat_p99_us"):
            v = num(data, key)
            if v is not None:
                m[key.replace("_us", "_ms")] = v / 1000.0
        m["rate"] = float(data["recv_rate"])
    cpu = cpu_us_per_msg(data)
    if cpu is not None:
        m["cpu_us"] = cpu
    loader_cpu = num(data, "loadgen_cpu_pct")
    if loader_cpu is not None:
        m["loader_cpu_pct"] = loader_cpu


def run_storm(sc: Scenario, run: Running, opts: Options, res: RunResult) -> None:
    argv = [
        str(LOADER), *run.target(sc.transport), *sc.args,
        "-w", "0", "-d", "0", "--drain", "0", "--quiet",
    ]  # fmt: skip
    cpu0 = cpu_seconds(run.pid)
    rc, data, err = run_loader(argv, timeout=120)
    cpu1 = cpu_seconds(run.pid)
    if data is None:
        raise RuntimeError(f"mqtt-load exit {rc}: {err[-500:]}")
    res.data = data
    if rc != 0:
        res.error = f"mqtt-load exit {rc}: {err[-300:]}"
    ok = num(data, "connect_ok") or 0.0
    res.metrics.update(
        conn_rate=float(data["connect_rate"]),
        conn_p99_ms=float(data.get("conn_lat_p99_ms") or 0.0),
        connect_fail=float(data.get("connect_fail") or 0),
    )
    if ok:
        res.metrics["cpu_us"] = (cpu1 - cpu0) * 1e6 / ok  # includes the disconnects


def run_idle(sc: Scenario, run: Running, opts: Options, res: RunResult) -> None:
    children: list[subprocess.Popen[str]] = []
    try:
        _idle_body(sc, run, opts, res, children)
    finally:
        for proc in children:  # never leave a loader behind (error, Ctrl-C)
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _idle_body(
    sc: Scenario,
    run: Running,
    opts: Options,
    res: RunResult,
    children: list[subprocess.Popen[str]],
) -> None:
    """Hold N idle connections for the hold time; measure RSS, CPU at rest and a probe.

    First half of the hold: nothing but keepalive pings (every 22.5 s, keepalive 30 s);
    CPU at rest is measured there. Second half: a probe pair sends 100 QoS 1 msg/s and
    reports publish-to-delivery latency. RSS is sampled every 0.5 s throughout; memory per
    connection is (highest RSS while held - RSS before any client) / connections held.
    """
    pid, hold = run.pid, opts.idle_hold
    time.sleep(0.5)
    rss0 = vmrss_kb(pid)
    argv = [
        str(LOADER), *run.target(sc.transport), "--pub", "0", "--sub", "0",
        "--connections", str(opts.idle_connections), "--conn-parallel", "100", "-k", "30",
        "-w", "0", "-d", f"{hold:g}", "--interval", "0", "--broker-pid", str(pid),
    ]  # fmt: skip
    idle = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children.append(idle)
    ready = threading.Event()
    err_lines: list[str] = []

    def read_stderr() -> None:
        assert idle.stderr is not None
        for line in idle.stderr:
            err_lines.append(line)
            if "connections ready" in line:
                ready.set()
        ready.set()  # loader ended: stop waiting either way

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    rss_max = rss0

    def sample() -> None:
        nonlocal rss_max
        with contextlib.suppress(OSError, RuntimeError):
            rss_max = max(rss_max, vmrss_kb(pid))

    t0 = time.monotonic()
    while not ready.wait(0.5):
        sample()
        if time.monotonic() - t0 > 300:
            idle.kill()
            raise RuntimeError("idle connections not established within 300 s")
    if idle.poll() is not None:
        raise RuntimeError(f"idle mqtt-load ended early: {''.join(err_lines)[-500:]}")
    t_ready = time.monotonic()
    res.metrics["connect_s"] = t_ready - t0
    # phase 1: at rest
    time.sleep(1.0)
    c0, ta = cpu_seconds(pid), time.monotonic()
    while time.monotonic() < t_ready + hold / 2:
        sample()
        time.sleep(0.5)
    c1, tb = cpu_seconds(pid), time.monotonic()
    res.metrics["cpu_rest_pct"] = (c1 - c0) / (tb - ta) * 100.0
    # phase 2: probe
    probe_d = max(2.0, hold / 2 - 5.0)
    probe_argv = [
        str(LOADER), *run.target(sc.transport), "--pub", "1", "--sub", "1",
        "-t", "bench/%r/probe", "-q", "1", "-r", "100", "-w", "1", "-d", f"{probe_d:g}",
        "--drain", "5", "--quiet", "--client-prefix", "probe-",
    ]  # fmt: skip
    probe = subprocess.Popen(probe_argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children.append(probe)
    while probe.poll() is None:
        sample()
        time.sleep(0.5)
    p_out, p_err = probe.communicate()
    while idle.poll() is None and time.monotonic() < t_ready + hold + 60:
        sample()
        time.sleep(0.5)
    i_out, _ = idle.communicate(timeout=120)
    reader.join(timeout=5)
    data = loader_json(i_out)
    res.data = data
    held = float(data.get("connect_ok") or 0)
    res.metrics.update(
        rss_before_mb=rss0 / 1024,
        rss_max_mb=rss_max / 1024,
        held=held,
        connect_fail=float(data.get("connect_fail") or 0),
        conn_lost=float(data.get("conn_lost") or 0),
    )
    if held:
        res.metrics["rss_kb_per_conn"] = (rss_max - rss0) / held
    try:
        pdata = loader_json(p_out)
    except RuntimeError:
        res.error = f"probe failed: {p_err.strip()[-300:]}"
        return
    res.data["probe"] = pdata
    if probe.returncode != 0 or not pdata.get("sent"):
        res.error = f"probe mqtt-load exit {probe.returncode}: {p_err.strip()[-300:]}"
    for key in ("lat_p50_us", "lat_p99_us"):
        v = num(pdata, key)
        if v is not None:
            res.metrics["probe_" + key.replace("_us", "_ms")] = v / 1000.0
    res.metrics["lost"] = float(pdata.get("lost") or 0)
    res.metrics["dup"] = float(pdata.get("dup") or 0)
    if idle.returncode not in (0, None):
        res.error = (res.error or "") + f" idle mqtt-load exit {idle.returncode}"


RUNNERS: dict[Kind, Callable[[Scenario, Running, Options, RunResult], None]] = {
    "throughput": run_messages,
    "latency": run_messages,
    "storm": run_storm,
    "idle": run_idle,
}


def busy_seconds() -> float:
    """CPU time all cores spent busy since boot (/proc/stat), in seconds."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = f[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def own_seconds() -> float:
    """CPU time of this suite plus every child it reaped (brokers, mqtt-load)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def foreign_load(seconds: float = 2.0) -> float:
    """CPU used by other processes over `seconds`, in % of one core."""
    busy0, own0 = busy_seconds(), own_seconds()
    time.sleep(seconds)
    return max(0.0, (busy_seconds() - busy0) - (own_seconds() - own0)) / seconds * 100.0


def wait_quiet(limit: float, threshold: float = 25.0) -> None:
    """Report the machine's background load; wait up to `limit` s for it to drop."""
    deadline = time.monotonic() + limit
    while True:
        load = foreign_load()
        if load <= threshold:
            print(f"bench: background load {load:.0f}% of one core", file=sys.stderr)
            return
        if time.monotonic() >= deadline:
            print(
                f"bench: WARNING: other processes use {load:.0f}% of one core; results will be "
                "noisy (see the 'other CPU %' column; --wait-quiet S waits for a quiet machine)",
                file=sys.stderr,
            )
            return
        print(f"bench: waiting for a quiet machine (others use {load:.0f}%)", file=sys.stderr)
        time.sleep(3.0)


def one_run(sc: Scenario, broker: Broker, rnd: int, opts: Options) -> RunResult:
    res = RunResult(sc.key, broker.key, rnd, ok=False)
    t0, busy0, own0 = time.monotonic(), busy_seconds(), own_seconds()
    try:
        with broker_running(broker, opts.tmp, sc.key, sc.transport) as run:
            RUNNERS[sc.kind](sc, run, opts, res)
        res.ok = True
    except (RuntimeError, OSError, subprocess.SubprocessError, KeyError, ValueError) as exc:
        res.error = f"{type(exc).__name__}: {exc}"
    res.seconds = time.monotonic() - t0
    # CPU that other processes on the machine used meanwhile, in % of one core: a busy
    # neighbour (a test suite, a build) shows up here instead of silently skewing a row.
    other = (busy_seconds() - busy0) - (own_seconds() - own0)
    res.metrics["other_cpu_pct"] = max(0.0, other / res.seconds * 100.0) if res.seconds else 0.0
    return res


# --------------------------------------------------------------------------- reporting


def fmt_rate(v: float) -> str:
    return f"{v:,.0f}"


def fmt_ms(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}" if v >= 1 else f"{v:.3f}"


def fmt_num(v: float, digits: int = 1) -> str:
    return f"{v:,.{digits}f}"


@dataclass
class Agg:
    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def span(self, fmt: Callable[[float], str]) -> str:
        if len(self.values) < 2:
            return ""
        return f"{fmt(min(self.values))}{EN}{fmt(max(self.values))}"


def agg(results: list[RunResult], metric: str) -> Agg | None:
    vals = [r.metrics[metric] for r in results if r.ok and metric in r.metrics]
    return Agg(vals) if vals else None


def med(results: list[RunResult], metric: str) -> float | None:
    a = agg(results, metric)
    return a.median if a else None


def total(results: list[RunResult], metric: str) -> int:
    return int(sum(r.metrics.get(metric, 0.0) for r in results if r.ok))


def lost_cell(sc: Scenario, results: list[RunResult]) -> str:
    lost = total(results, "lost")
    if sc.qos >= 1 and lost:
        return f"**{lost:,} LOST**"
    return f"{lost:,}"


def ratio_cell(v: float | None, ref: float | None) -> str:
    if v is None or not ref:
        return EN
    return f"{v / ref:.2f}{TIMES}"


def err_note(results: list[RunResult]) -> str:
    bad = [r for r in results if not r.ok or r.error]
    return f" ⚠{len(bad)}" if bad else ""


class Report:
    def __init__(self, scs: list[Scenario], brokers: list[Broker], results: list[RunResult]):
        self.scs, self.brokers, self.results = scs, brokers, results

    def of(self, sc: Scenario, broker: str) -> list[RunResult]:
        return [r for r in self.results if r.scenario == sc.key and r.broker == broker]

    def rows(self, kind: Kind) -> Iterator[tuple[Scenario, Broker, list[RunResult]]]:
        for sc in self.scs:
            if sc.kind != kind:
                continue
            for b in self.brokers:
                rs = self.of(sc, b.key)
                if rs:
                    yield sc, b, rs

    def throughput(self) -> list[str]:
        out = [
            f"| scenario | transport | broker | delivered msg/s (median) | min{EN}max | "
            "broker CPU µs/msg | loader CPU % | other CPU % | lost | dup | ÷ nodelay |",
            "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for sc, b, rs in self.rows("throughput"):
            a = agg(rs, "rate")
            ref = med(self.of(sc, REFERENCE), "rate")
            cpu, lcpu = med(rs, "cpu_us"), med(rs, "loader_cpu_pct")
            other = med(rs, "other_cpu_pct")
            out.append(
                f"| {sc.title} | {sc.transport} | {b.label}{err_note(rs)} | "
                f"{fmt_rate(a.median) if a else 'error'} | {a.span(fmt_rate) if a else ''} | "
                f"{fmt_num(cpu) if cpu is not None else EN} | "
                f"{fmt_num(lcpu, 0) if lcpu is not None else EN} | "
                f"{fmt_num(other, 0) if other is not None else EN} | "
                f"{lost_cell(sc, rs)} | {total(rs, 'dup'):,} | "
                f"{ratio_cell(a.median if a else None, ref)} |"
            )
        return out

    def latency(self) -> list[str]:
        out = [
            f"| scenario | transport | broker | p50 ms | p99 ms (median) | p99 min{EN}max | "
            "broker CPU µs/msg | other CPU % | lost | dup | p99 ÷ nodelay |",
            "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for sc, b, rs in self.rows("latency"):
            p50, p99 = med(rs, "lat_p50_ms"), agg(rs, "lat_p99_ms")
            ref = med(self.of(sc, REFERENCE), "lat_p99_ms")
            cpu, other = med(rs, "cpu_us"), med(rs, "other_cpu_pct")
            out.append(
                f"| {sc.title} | {sc.transport} | {b.label}{err_note(rs)} | "
                f"{fmt_ms(p50) if p50 is not None else 'error'} | "
                f"{fmt_ms(p99.median) if p99 else 'error'} | {p99.span(fmt_ms) if p99 else ''} | "
                f"{fmt_num(cpu) if cpu is not None else EN} | "
                f"{fmt_num(other, 0) if other is not None else EN} | "
                f"{lost_cell(sc, rs)} | {total(rs, 'dup'):,} | "
                f"{ratio_cell(p99.median if p99 else None, ref)} |"
            )
        return out

    def storm(self) -> list[str]:
        out = [
            f"| scenario | transport | broker | connections/s (median) | min{EN}max | "
            "connect p99 ms | broker CPU µs/conn | other CPU % | failed | ÷ nodelay |",
            "|---|---|---|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for sc, b, rs in self.rows("storm"):
            a = agg(rs, "conn_rate")
            ref = med(self.of(sc, REFERENCE), "conn_rate")
            p99, cpu = med(rs, "conn_p99_ms"), med(rs, "cpu_us")
            other = med(rs, "other_cpu_pct")
            out.append(
                f"| {sc.title} | {sc.transport} | {b.label}{err_note(rs)} | "
                f"{fmt_rate(a.median) if a else 'error'} | {a.span(fmt_rate) if a else ''} | "
                f"{fmt_ms(p99) if p99 is not None else EN} | "
                f"{fmt_num(cpu, 0) if cpu is not None else EN} | "
                f"{fmt_num(other, 0) if other is not None else EN} | "
                f"{total(rs, 'connect_fail'):,} | {ratio_cell(a.median if a else None, ref)} |"
            )
        return out

    def idle(self) -> list[str]:
        out = [
            "| scenario | transport | broker | held | connect s | RSS before MB | RSS held MB | "
            "KB / connection | CPU at rest % | probe p50 ms | probe p99 ms | probe lost | "
            "other CPU % |",
            "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for sc, b, rs in self.rows("idle"):

            def cell(metric: str, fmt: Callable[[float], str], rs: list[RunResult] = rs) -> str:
                v = med(rs, metric)
                return fmt(v) if v is not None else EN

            out.append(
                f"| {sc.title} | {sc.transport} | {b.label}{err_note(rs)} | "
                f"{cell('held', fmt_rate)} | {cell('connect_s', fmt_num)} | "
                f"{cell('rss_before_mb', fmt_num)} | {cell('rss_max_mb', fmt_num)} | "
                f"{cell('rss_kb_per_conn', fmt_num)} | {cell('cpu_rest_pct', fmt_num)} | "
                f"{cell('probe_lat_p50_ms', fmt_ms)} | {cell('probe_lat_p99_ms', fmt_ms)} | "
                f"{lost_cell(sc, rs)} | {cell('other_cpu_pct', lambda v: fmt_num(v, 0))} |"
            )
        return out

    def targets(self) -> list[str]:
        out = [
            "| target | measured | verdict |",
            "|---|---|---|",
        ]

        def find(key: str) -> Scenario | None:
            return next((s for s in self.scs if s.key == key), None)

        def vs(v: float | None, ref: float | None) -> str:
            if not v or not ref:
                return EN
            return f"{v / ref:.2f}{TIMES} ({fmt_rate(v)} vs {fmt_rate(ref)} msg/s)"

        def verdict(ok: bool | None) -> str:
            return "not run" if ok is None else ("**PASS**" if ok else "**FAIL**")

        for key, what in (
            ("fan-in", f"fan-in 10→1 QoS 0 throughput ≥ 0.5{TIMES} Mosquitto nodelay"),
            ("fan-out-10", f"fan-out 1→10 QoS 0 throughput ≥ 0.5{TIMES} Mosquitto nodelay"),
            ("pairs-q1", f"10 pairs QoS 1 throughput ≥ 0.5{TIMES} Mosquitto nodelay"),
        ):
            sc = find(key)
            v = med(self.of(sc, "pytbmq"), "rate") if sc else None
            ref = med(self.of(sc, REFERENCE), "rate") if sc else None
            ok = None if v is None or not ref else v / ref >= 0.5
            shown = EN
            if v and ref:
                shown = f"{v / ref:.2f}{TIMES} ({fmt_rate(v)} vs {fmt_rate(ref)} msg/s)"
            out.append(f"| {what} | {shown} | {verdict(ok)} |")
        for key in ("lat-q0", "lat-q1", "lat-fan-out"):
            sc = find(key)
            if sc is None:
                out.append(f"| {key} p99 ≤ 3{TIMES} Mosquitto nodelay | {EN} | not run |")
                continue
            v = med(self.of(sc, "pytbmq"), "lat_p99_ms")
            ref = med(self.of(sc, REFERENCE), "lat_p99_ms")
            ok = None if v is None or not ref else v <= 3 * ref
            shown = f"{v / ref:.2f}{TIMES} ({fmt_ms(v)} vs {fmt_ms(ref)} ms)" if v and ref else EN
            what = f"{sc.title}: p99 ≤ 3{TIMES} Mosquitto nodelay"
            out.append(f"| {what} | {shown} | {verdict(ok)} |")
        # Issue 8: TLS QoS 1 pairs against pytbmq's own plain-TCP figure of the same run.
        tcp_sc, tls_sc = find("pairs-q1"), find("pairs-q1-tls")
        if tls_sc is not None:
            v = med(self.of(tls_sc, "pytbmq"), "rate")
            ref = med(self.of(tcp_sc, "pytbmq"), "rate") if tcp_sc else None
            ok = None if v is None or not ref else v / ref >= 0.6
            shown = vs(v, ref)
            out.append(
                f"| TLS 10 pairs QoS 1 ≥ 0.6{TIMES} pytbmq's own plain TCP figure | "
                f"{shown} | {verdict(ok)} |"
            )
        # Issue 7: persistent sessions against pytbmq's own non-persistent pairs-q1.
        p_sc = find("pairs-q1-persistent")
        if p_sc is not None:
            v = med(self.of(p_sc, "pytbmq"), "rate")
            ref = med(self.of(tcp_sc, "pytbmq"), "rate") if tcp_sc else None
            mq = med(self.of(p_sc, "mosquitto-persist"), "rate")
            ok = None if v is None or not ref else v / ref >= 0.5
            shown = vs(v, ref)
            if v and mq:
                shown += f"; {v / mq:.2f}{TIMES} Mosquitto nodelay persist ({fmt_rate(mq)} msg/s)"
            out.append(
                f"| 10 pairs QoS 1, persistent sessions ≥ 0.5{TIMES} pytbmq non-persistent (aim) | "
                f"{shown} | {verdict(ok)} |"
            )
        sc = find("idle")
        rs = self.of(sc, "pytbmq") if sc else []
        kb, p99 = med(rs, "rss_kb_per_conn"), med(rs, "probe_lat_p99_ms")
        held = med(rs, "held")
        out.append(
            f"| {f'{held:,.0f}' if held else '10,000'} idle connections: < 20 KB RSS each | "
            f"{f'{kb:.1f} KB' if kb is not None else EN} | "
            f"{verdict(None if kb is None else kb < 20)} |"
        )
        out.append(
            "| idle connections held: probe round trip (p99) < 5 ms | "
            f"{f'{fmt_ms(p99)} ms' if p99 is not None else EN} | "
            f"{verdict(None if p99 is None else p99 < 5)} |"
        )
        q12 = [s for s in self.scs if s.qos >= 1]
        runs = [r for s in q12 for r in self.of(s, "pytbmq")]
        lost = sum(int(r.metrics.get("lost", 0)) for r in runs if r.ok)
        failed = sum(1 for r in runs if not r.ok)
        ok = None if not runs else (lost == 0 and failed == 0)
        shown = f"{lost:,} lost in {len(runs)} QoS 1/2 runs" + (
            f", {failed} failed" if failed else ""
        )
        out.append(f"| never a lost QoS 1/2 message | {shown} | {verdict(ok)} |")
        return out

    def problems(self) -> list[str]:
        out: list[str] = []
        for r in self.results:
            sc = next(s for s in self.scs if s.key == r.scenario)
            if not r.ok or r.error:
                out.append(f"- {r.broker} · {sc.title} · round {r.round}: {r.error}")
            elif sc.qos >= 1 and r.metrics.get("lost"):
                out.append(
                    f"- **LOST** {r.broker} · {sc.title} · round {r.round}: "
                    f"{int(r.metrics['lost']):,} QoS {sc.qos} messages"
                )
        return out

    def markdown(self) -> str:
        parts: list[str] = []
        for title, kind, fn in (
            ("Throughput", "throughput", self.throughput),
            ("Latency at a fixed rate", "latency", self.latency),
            ("Connection storm", "storm", self.storm),
            ("Idle connections", "idle", self.idle),
        ):
            if any(sc.kind == kind for sc in self.scs):
                parts += [f"### {title}", "", *fn(), ""]
        parts += [
            "### Targets (pytbmq against Mosquitto nodelay, same run)",
            "",
            *self.targets(),
            "",
        ]
        probs = self.problems()
        if probs:
            parts += ["### Problems", "", *probs, ""]
        return "\n".join(parts)


def first_line(argv: list[str], env: dict[str, str] | None = None) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, env=env)
    except (OSError, subprocess.SubprocessError):
        return "?"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "?"


def machine_facts() -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    py = str(pytbmq_python())
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    if PYTBMQ.src is None:
        commit = first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        source = f"working tree at {commit}" + (" + uncommitted changes in src/" if dirty else "")
    else:
        source = PYTBMQ.label
    ssl_py = "import ssl; print(ssl.OPENSSL_VERSION)"
    penv = clean_env(PYTBMQ.env())
    return {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": f"{mem_kb / 1024 / 1024:.0f} GiB",
        "kernel": platform.release(),
        "python (pytbmq)": first_line([py, "-c", "import sys; print(sys.version.split()[0])"])
        + f" ({first_line([py, '-c', ssl_py])})",
        "uvloop": first_line([py, "-c", "import uvloop; print(uvloop.__version__)"]),
        "pytbmq": first_line([py, "-c", "import pytbmq; print(pytbmq.__version__)"], penv)
        + f" ({source})",
        "pytbmq store": "sqlite"
        if "PYTBMQ_STORAGE" in PYTBMQ.known
        else "memory (no PYTBMQ_STORAGE yet)",
        "OpenSSL (system)": first_line(["openssl", "version"]),
        "Mosquitto": first_line(["mosquitto", "-h"]),
        "amqtt": first_line(
            [str(AMQTT_VENV / "bin" / "python"), "-c", "import amqtt; print(amqtt.__version__)"]
        )
        + " (Python "
        + first_line(
            [str(AMQTT_VENV / "bin" / "python"), "-c", "import sys; print(sys.version.split()[0])"]
        )
        + ")",
        "mqtt-load": first_line([str(LOADER), "--help"]).split(" - ")[0],
    }


def summary_line(sc: Scenario, r: RunResult) -> str:
    m = r.metrics
    bits: list[str] = []
    if sc.kind == "throughput" and "rate" in m:
        bits.append(f"{fmt_rate(m['rate'])} msg/s")
    if sc.kind == "latency" and "lat_p99_ms" in m:
        bits.append(f"p50 {fmt_ms(m['lat_p50_ms'])} ms p99 {fmt_ms(m['lat_p99_ms'])} ms")
    if sc.kind == "storm" and "conn_rate" in m:
        bits.append(f"{fmt_rate(m['conn_rate'])} conn/s, p99 {fmt_ms(m['conn_p99_ms'])} ms")
    if sc.kind == "idle" and "rss_kb_per_conn" in m:
        bits.append(
            f"{m['held']:,.0f} held, {m['rss_kb_per_conn']:.1f} KB/conn, "
            f"rest {m.get('cpu_rest_pct', 0):.1f}% CPU, probe p99 "
            f"{fmt_ms(m.get('probe_lat_p99_ms', float('nan')))} ms"
        )
    if "cpu_us" in m:
        bits.append(f"{m['cpu_us']:.1f} µs CPU/{'conn' if sc.kind == 'storm' else 'msg'}")
    if "lost" in m:
        bits.append(f"lost {int(m['lost']):,} dup {int(m['dup']):,}")
    if "other_cpu_pct" in m:
        bits.append(f"other {m['other_cpu_pct']:.0f}%")
    if r.error:
        bits.append(f"ERROR {r.error}")
    return ", ".join(bits)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/run",
        description="pytbmq vs Mosquitto (default, nodelay) vs amqtt with mqtt-load, side by side.",
    )
    p.add_argument(
        "--quick", action="store_true", help="a few scenarios, 2 rounds, short windows (< 3 min)"
    )
    p.add_argument("--rounds", type=int, help="rounds per scenario (default 3; 2 with --quick)")
    p.add_argument("--duration", type=float, help="throughput window in s (default 3; 2 quick)")
    p.add_argument("--latency-duration", type=float, help="latency window in s (default 3)")
    p.add_argument("--warmup", type=float, help="throughput warmup in s (default 1; 0.5 quick)")
    p.add_argument("--latency-warmup", type=float, default=0.5, help="latency warmup in s")
    p.add_argument(
        "--idle-hold", type=float, default=60.0, help="seconds the idle connections are held"
    )
    p.add_argument("--idle-connections", type=int, default=10_000)
    p.add_argument(
        "--idle-rounds", type=int, default=1, help="rounds of the idle scenario (default 1)"
    )
    p.add_argument("--only", help="comma-separated scenario keys (see --list)")
    p.add_argument("--skip", help="comma-separated scenario keys to leave out")
    p.add_argument("--brokers", help=f"comma-separated subset of: {', '.join(BROKERS)}")
    p.add_argument(
        "--transports",
        default="tcp",
        help="comma-separated: tcp, tls (each scenario runs once per transport)",
    )
    p.add_argument(
        "--pytbmq-ref",
        metavar="REF",
        help="benchmark pytbmq as committed at REF (e.g. HEAD) instead of the working tree",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="wait up to S seconds for other processes to use < 25%% of a core before starting",
    )
    p.add_argument(
        "--report",
        type=Path,
        metavar="JSON",
        help="re-render the Markdown of a saved run (bench/.build/results/*.json) and exit",
    )
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("--out", type=Path, help="also write the Markdown report here")
    return p.parse_args(argv)


def render(
    facts: dict[str, str],
    cmd: str,
    opts: dict[str, str],
    scs: list[Scenario],
    brokers: list[Broker],
    results: list[RunResult],
    elapsed: float,
) -> str:
    header = [
        f"## Results {facts['date']}",
        "",
        f"Command: `{cmd.strip()}` — {len(results)} runs in {elapsed / 60:.1f} min; "
        f"{opts['rounds']} rounds (idle: {opts['idle_rounds']}); windows: throughput "
        f"{opts['duration']} s after {opts['warmup']} s warmup, latency "
        f"{opts['latency_duration']} s after {opts['latency_warmup']} s; idle connections "
        f"held {opts['idle_hold']} s.",
        "",
        "| machine | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in facts.items() if k != "date"],
        "",
    ]
    others = [r.metrics["other_cpu_pct"] for r in results if "other_cpu_pct" in r.metrics]
    if others:
        header.append(
            f"Other processes on the machine used a median {statistics.median(others):.0f}% "
            f"(max {max(others):.0f}%) of one core during the runs (the *other CPU %* column)."
        )
        header.append("")
    return "\n".join(header) + "\n" + Report(scs, brokers, results).markdown()


def rerender(path: Path, out: Path | None) -> int:
    saved = json.loads(path.read_text())
    runs = [RunResult(**r) for r in saved["runs"]]
    by_key = {s.key: s for s in scenarios(list(SCHEMES))}
    scs = [by_key[k] for k in dict.fromkeys(r.scenario for r in runs)]
    brokers = [BROKERS[k] for k in BROKERS if any(r.broker == k for r in runs)]
    elapsed = float(saved.get("elapsed_s", sum(r.seconds for r in runs)))
    md = render(saved["facts"], saved["command"], saved["options"], scs, brokers, runs, elapsed)
    print(md)
    if out:
        out.write_text(md + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    for t in transports:
        if t not in SCHEMES:
            print(f"unknown transport {t!r}", file=sys.stderr)
            return 2
    all_scs = scenarios(transports)
    if args.report:
        return rerender(args.report, args.out)
    if args.list:
        for sc in all_scs:
            print(f"{sc.key:16} {sc.kind:10} {'quick ' if sc.quick else '      '}{sc.title}")
        return 0
    quick = bool(args.quick)
    scs = [s for s in all_scs if s.quick] if quick else all_scs
    if args.only:
        asked = {k.strip() for k in args.only.split(",")}
        # A TCP key (e.g. `storm`) also selects its rows on every other --transports.
        keys = asked | {f"{k}-{t}" for k in asked for t in transports}
        known = {s.key for s in all_scs}
        unknown = {k for k in asked if not ({k} | {f"{k}-{t}" for t in transports}) & known}
        if unknown:
            print(
                f"unknown scenario(s): {', '.join(sorted(unknown))} (see --list)", file=sys.stderr
            )
            return 2
        scs = [s for s in all_scs if s.key in keys]
    if args.skip:
        skip = {k.strip() for k in args.skip.split(",")}
        scs = [s for s in scs if s.key not in skip]
    brokers = list(BROKERS.values())
    if args.brokers:
        names = [n.strip() for n in args.brokers.split(",")]
        bad = [n for n in names if n not in BROKERS]
        if bad:
            print(f"unknown broker(s): {', '.join(bad)}", file=sys.stderr)
            return 2
        brokers = [BROKERS[n] for n in names]
    if not LOADER.exists():
        print(f"{LOADER} is missing: run bench/run, which builds it", file=sys.stderr)
        return 2
    if args.pytbmq_ref:
        use_pytbmq_ref(args.pytbmq_ref)
    load_pytbmq_settings()

    rounds = args.rounds or (2 if quick else 3)
    BUILD.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="pytbmq-bench-"))
    opts = Options(
        rounds=rounds,
        duration=args.duration or (2.0 if quick else 3.0),
        warmup=args.warmup if args.warmup is not None else (0.5 if quick else 1.0),
        latency_duration=args.latency_duration or 3.0,
        latency_warmup=args.latency_warmup,
        idle_hold=args.idle_hold,
        idle_connections=args.idle_connections,
        idle_rounds=args.idle_rounds,
        tmp=tmp,
    )
    facts = machine_facts()
    wait_quiet(args.wait_quiet)
    plan = [
        (sc, rnd, b)
        for sc in scs
        for rnd in range(1, (opts.idle_rounds if sc.kind == "idle" else opts.rounds) + 1)
        for b in brokers
        if sc.runs_on(b)
    ]
    print(
        f"bench: {len(plan)} runs, {len(scs)} scenarios {TIMES} {len(brokers)} brokers, "
        f"{rounds} rounds (idle: {opts.idle_rounds}); broker work dirs under {tmp}",
        file=sys.stderr,
    )
    started = time.monotonic()
    results: list[RunResult] = []
    loud: list[str] = []
    try:
        for i, (sc, rnd, b) in enumerate(plan, 1):
            r = one_run(sc, b, rnd, opts)
            results.append(r)
            print(
                f"[{i:3}/{len(plan)}] {sc.title} · {b.label} · round {rnd}: "
                f"{summary_line(sc, r)} ({r.seconds:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
            if sc.qos >= 1 and r.metrics.get("lost"):
                msg = (
                    f"!!!!! LOST {int(r.metrics['lost']):,} QoS {sc.qos} MESSAGES: "
                    f"{b.label}, {sc.title}, round {rnd} !!!!!"
                )
                loud.append(msg)
                print(msg, file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("bench: interrupted; reporting what ran", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for c in _PKI:
            shutil.rmtree(c.ca.parent, ignore_errors=True)
    elapsed = time.monotonic() - started

    cmd = "bench/run " + " ".join(sys.argv[1:] if argv is None else argv)
    opt_strs = {k: f"{v:g}" if isinstance(v, float) else str(v) for k, v in vars(opts).items()}
    md = render(facts, cmd, opt_strs, scs, brokers, results, elapsed)
    print(md)
    if loud:
        print("\n".join(loud), file=sys.stderr)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"{stamp}.md").write_text(md + "\n")
    (RESULTS / f"{stamp}.json").write_text(
        json.dumps(
            {
                "facts": facts,
                "command": cmd,
                "options": opt_strs,
                "elapsed_s": elapsed,
                "runs": [vars(r) for r in results],
            },
            indent=1,
        )
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(md + "\n")
    print(f"bench: report in {RESULTS / f'{stamp}.md'} (raw runs in .json)", file=sys.stderr)
    lost_pytbmq = any(
        r.broker == "pytbmq" and r.metrics.get("lost")
        for r in results
        if next(s for s in scs if s.key == r.scenario).qos >= 1
    )
    return 1 if lost_pytbmq else 0


if __name__ == "__main__":
    sys.exit(main())
