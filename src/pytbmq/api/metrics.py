"""Prometheus metrics: a snapshot of the live broker, written in the text format 0.0.4.

Two halves. The exposition is pure: `Family` holds one metric family (name, type, help
and samples) and `render(families)` writes them in Prometheus' text format, escaping
label values (backslash, double quote, newline) and help texts (backslash, newline).
The collection reads the broker: `collect(ctx)` builds every family from the router's
counters and state, the links, the listeners, the TLS holders and handshake counters,
the admission refusals, the store's committer and the process (procfs / resource). It
runs on the broker's event loop at scrape time and never changes anything.

`listener_states` and `process_stats` are shared with the system endpoints
(pytbmq.api.system). Every metric name is listed in docs/admin-api.md.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import resource
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from pytbmq import __version__

if TYPE_CHECKING:
    from pytbmq.api.context import ApiContext
    from pytbmq.broker import Broker
    from pytbmq.tls.context import TlsContextHolder

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

MetricType = Literal["counter", "gauge", "summary", "histogram", "untyped"]

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

VERSION_NAMES = {3: "3.1", 4: "3.1.1", 5: "5"}
DAY = 86400.0


# --------------------------------------------------------------------------- exposition
@dataclass(frozen=True, slots=True)
class Sample:
    """One line of a family: `name{suffix}{labels} value` (suffix: "_sum", "_count"...)."""

    labels: tuple[tuple[str, str], ...]
    value: float
    suffix: str = ""


@dataclass(slots=True)
class Family:
    name: str
    type: MetricType
    help: str
    samples: list[Sample] = field(default_factory=list)

    def add(
        self, value: float, labels: Mapping[str, object] | None = None, suffix: str = ""
    ) -> Family:
        pairs = tuple((k, str(v)) for k, v in (labels or {}).items())
        self.samples.append(Sample(pairs, float(value), suffix))
        return self


def escape_label_value(value: str) -> str:
    """A label value as the text format wants it: \\ → \\\\, " → \\", newline → \\n."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """A HELP text: \\ → \\\\, newline → \\n (double quotes stay as they are)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """Go's ParseFloat syntax: integers without a fraction, NaN, +Inf, -Inf."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    inner = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in pairs)
    return "{" + inner + "}"


def render(families: Iterable[Family]) -> str:
    """The families in the Prometheus text format 0.0.4 (one HELP and TYPE per family).

    Raises ValueError for an invalid metric or label name, or a family named twice:
    those are programming errors that would make a scrape fail as a whole."""
    lines: list[str] = []
    seen: set[str] = set()
    for family in families:
        name = family.name
        if not _NAME.fullmatch(name) or name in seen:
            raise ValueError(f"invalid or repeated metric name {name!r}")
        seen.add(name)
        lines.append(f"# HELP {name} {escape_help(family.help)}")
        lines.append(f"# TYPE {name} {family.type}")
        for sample in family.samples:
            for key, _value in sample.labels:
                if not _LABEL.fullmatch(key) or key.startswith("__"):
                    raise ValueError(f"invalid label name {key!r} in {name}")
            lines.append(
                f"{name}{sample.suffix}{_labels(sample.labels)} {format_value(sample.value)}"
            )
    return "\n".join(lines) + "\n" if lines else ""


# --------------------------------------------------------------------------- process
@dataclass(frozen=True, slots=True)
class ProcessStats:
    cpu_seconds: float  # user + system
    rss_bytes: int
    max_rss_bytes: int
    threads: int
    open_fds: int | None
    start_time: float | None  # wall clock, from /proc (None elsewhere)


def _proc_text(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _start_time() -> float | None:
    stat, system = _proc_text("/proc/self/stat"), _proc_text("/proc/stat")
    if stat is None or system is None:
        return None
    try:
        # the fields after the command name (which may hold spaces) start at field 3
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        boot = next(
            int(line.split()[1]) for line in system.splitlines() if line.startswith("btime")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (IndexError, ValueError, StopIteration, OSError):
        return None


_START_TIME = _start_time()


def process_stats() -> ProcessStats:
    """CPU time, memory and file descriptors of this process (procfs where there is one)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    max_rss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    rss = max_rss
    statm = _proc_text("/proc/self/statm")
    if statm is not None:
        with contextlib.suppress(IndexError, ValueError, OSError):
            rss = int(statm.split()[1]) * os.sysconf("SC_PAGE_SIZE")
    threads = threading.active_count()
    status = _proc_text("/proc/self/status")
    if status is not None:
        for line in status.splitlines():
            if line.startswith("Threads:"):
                threads = int(line.split()[1])
                break
    try:
        fds: int | None = len(os.listdir("/proc/self/fd"))
    except OSError:
        fds = None
    return ProcessStats(usage.ru_utime + usage.ru_stime, rss, max_rss, threads, fds, _START_TIME)


# --------------------------------------------------------------------------- listeners
@dataclass(frozen=True, slots=True)
class ListenerState:
    name: str  # "tcp", "ssl", "ws", "wss", "http"
    address: str
    port: int
    up: bool  # accepting connections


def listener_states(broker: Broker) -> dict[str, ListenerState]:
    """Every enabled listener of the broker (MQTT ones and the API's own), by name."""
    from pytbmq.listeners import TlsListener

    states: dict[str, ListenerState] = {}
    settings = broker.settings
    for server in broker.servers:
        if isinstance(server, TlsListener):
            name = server.spec.name
            socks = [s for s in server.sockets if s.fileno() != -1]
            up = bool(socks) and server.accepting
            addresses = [s.getsockname() for s in socks]
        else:
            name = broker.listener_name(server)
            up = server.is_serving() and bool(server.sockets)
            addresses = [s.getsockname() for s in server.sockets] if up else []
        if addresses:
            host, port = str(addresses[0][0]), int(addresses[0][1])
        else:
            host = getattr(settings, f"listener_{name}_bind_address", "?")
            port = int(getattr(settings, f"listener_{name}_bind_port", 0))
        states[name] = ListenerState(name, host, port, up)
    api = broker.api
    if api is not None and api.sockets:
        sock = api.sockets[0]
        up = sock.fileno() != -1
        host, port = sock.getsockname()[:2] if up else (settings.http_bind_address, 0)
        states["http"] = ListenerState("http", str(host), int(port), up)
    return states


def tls_holders(broker: Broker) -> dict[str, TlsContextHolder]:
    """The TLS material of every TLS listener, the HTTPS server's as "http"."""
    holders = dict(broker.tls)
    if broker.api is not None and broker.api.tls is not None:
        holders["http"] = broker.api.tls
    return holders


def days_to_expiry(holder: TlsContextHolder, now: float) -> float:
    return (holder.material.leaf.not_valid_after_utc.timestamp() - now) / DAY


# --------------------------------------------------------------------------- collection
def collect(ctx: ApiContext) -> list[Family]:
    """Every metric family of the broker, read now."""
    broker = ctx.broker
    router = broker.router
    c = router.counters
    now = time.time()
    out: list[Family] = []

    def family(name: str, kind: MetricType, text: str) -> Family:
        f = Family(name, kind, text)
        out.append(f)
        return f

    family("pytbmq_info", "gauge", "pytbmq build: version and Python version (always 1)").add(
        1, {"version": __version__, "python": sys.version.split()[0]}
    )
    family("pytbmq_uptime_seconds", "gauge", "Seconds since the broker started").add(
        now - ctx.started_at
    )

    # listeners and connections
    states = listener_states(broker)
    up = family("pytbmq_listener_up", "gauge", "1 while the listener accepts connections")
    for listener in states.values():
        up.add(1 if listener.up else 0, {"listener": listener.name, "port": listener.port})
    conns: Counter[tuple[str, str]] = Counter()
    for link in list(broker.links):
        version = VERSION_NAMES.get(link.version, str(link.version))
        conns[(link.listener, version if link.session is not None else "connecting")] += 1
    f = family(
        "pytbmq_connections",
        "gauge",
        "Open client connections by listener and MQTT version (connecting: no CONNACK yet)",
    )
    for (name, version), n in sorted(conns.items()):
        f.add(n, {"listener": name, "mqtt_version": version})

    # sessions, subscriptions, queues
    sessions: Counter[tuple[str, str]] = Counter()
    subscriptions = shared = queued = queue_max = inflight_out = inflight_in = 0
    for session in list(router.sessions.values()):
        online = "connected" if session.link is not None else "disconnected"
        sessions[(online, session.client_type)] += 1
        for key in session.subscriptions:
            subscriptions += 1
            if key.startswith("$share/"):
                shared += 1
        depth = len(session.queue)
        queued += depth
        if depth > queue_max:
            queue_max = depth
        inflight_out += len(session.inflight_out)
        inflight_in += len(session.inflight_in)
    f = family("pytbmq_sessions", "gauge", "Sessions by state and client type")
    for online in ("connected", "disconnected"):
        for client_type in ("DEVICE", "APPLICATION"):
            sessions.setdefault((online, client_type), 0)
    for (online, client_type), n in sorted(sessions.items()):
        f.add(n, {"state": online, "client_type": client_type})
    family("pytbmq_subscriptions", "gauge", "Subscriptions of all sessions").add(
        subscriptions - shared, {"kind": "plain"}
    ).add(shared, {"kind": "shared"})
    family("pytbmq_retained_messages", "gauge", "Retained messages").add(len(router.retained))
    family(
        "pytbmq_queued_messages", "gauge", "QoS 1/2 messages waiting in session queues (sum)"
    ).add(queued)
    family("pytbmq_session_queue_max", "gauge", "Messages in the longest session queue").add(
        queue_max
    )
    family("pytbmq_inflight_messages", "gauge", "QoS 1/2 messages in flight").add(
        inflight_out, {"direction": "out"}
    ).add(inflight_in, {"direction": "in"})

    # traffic
    f = family("pytbmq_messages_received_total", "counter", "PUBLISH messages received, by QoS")
    g = family("pytbmq_messages_sent_total", "counter", "PUBLISH messages sent, by QoS")
    for qos in range(3):
        f.add(c.received[qos], {"qos": qos})
        g.add(c.sent[qos], {"qos": qos})
    family(
        "pytbmq_payload_bytes_received_total", "counter", "Payload bytes of messages received"
    ).add(c.received_bytes)
    family("pytbmq_payload_bytes_sent_total", "counter", "Payload bytes of messages sent").add(
        c.sent_bytes
    )
    family(
        "pytbmq_network_bytes_received_total",
        "counter",
        "MQTT bytes read from clients (inside TLS and WebSocket)",
    ).add(c.network_bytes_received)
    family("pytbmq_network_bytes_sent_total", "counter", "MQTT bytes written to clients").add(
        c.network_bytes_sent
    )
    family("pytbmq_messages_dropped_total", "counter", "Messages not delivered, by reason").add(
        c.messages_dropped_qos0, {"reason": "qos0_not_deliverable"}
    ).add(c.messages_dropped_queue_full, {"reason": "queue_full"}).add(
        c.messages_dropped_too_large, {"reason": "too_large"}
    ).add(c.messages_dropped_ttl, {"reason": "queue_ttl"}).add(
        c.messages_dropped_rate_limit, {"reason": "outgoing_rate_limit"}
    ).add(c.messages_expired, {"reason": "expired"})
    family(
        "pytbmq_messages_refused_total",
        "counter",
        "Incoming PUBLISH refused, by reason",
    ).add(c.messages_refused_rate_limit, {"reason": "incoming_rate_limit"})

    # admission
    f = family(
        "pytbmq_connections_refused_total",
        "counter",
        "Connections closed on accept by the listener limits, by listener and reason",
    )
    for name, admission in sorted(broker.admission.items()):
        for reason in ("max_connections", "rate"):
            f.add(admission.stats.refused.get(reason, 0), {"listener": name, "reason": reason})
        for reason, n in sorted(admission.stats.refused.items()):
            if reason not in ("max_connections", "rate"):
                f.add(n, {"listener": name, "reason": reason})

    # TLS
    done = family("pytbmq_tls_handshakes_total", "counter", "TLS handshakes completed")
    failed = family(
        "pytbmq_tls_handshake_failures_total", "counter", "TLS handshakes failed, by reason"
    )
    for name, stats in sorted(broker.handshakes.items()):
        done.add(stats.completed, {"listener": name})
        for reason, n in sorted(stats.failed.items()):
            failed.add(n, {"listener": name, "reason": reason})
    holders = tls_holders(broker)
    days = family(
        "pytbmq_tls_certificate_expiry_days",
        "gauge",
        "Days until the listener's server certificate expires (negative: expired)",
    )
    not_after = family(
        "pytbmq_tls_certificate_not_after_timestamp_seconds",
        "gauge",
        "When the listener's server certificate expires (Unix time)",
    )
    reloads = family(
        "pytbmq_tls_reloads_total", "counter", "Reloads of the TLS material, by result"
    )
    for name, holder in sorted(holders.items()):
        labels = {"listener": name}
        days.add(days_to_expiry(holder, now), labels)
        not_after.add(holder.material.leaf.not_valid_after_utc.timestamp(), labels)
        reloads.add(holder.reloads, {"listener": name, "result": "ok"})
        reloads.add(holder.failed_reloads, {"listener": name, "result": "failed"})

    # store
    store = broker.store
    healthy = bool(getattr(store, "healthy", True))
    family("pytbmq_store_up", "gauge", "1 while the store commits work").add(
        1 if healthy else 0, {"store": store.name}
    )
    committer = broker.committer
    if committer is not None:
        family("pytbmq_store_batches_committed_total", "counter", "Change batches committed").add(
            committer.batches_committed
        )
        family(
            "pytbmq_store_batches_pending", "gauge", "Change batches submitted, not committed yet"
        ).add(committer.submitted - committer.committed)
        family(
            "pytbmq_store_batch_latency_seconds",
            "summary",
            "Seconds from handing a batch to the store to its commit",
        ).add(committer.latency_sum, suffix="_sum").add(
            committer.batches_committed, suffix="_count"
        )
        family(
            "pytbmq_store_batch_latency_max_seconds", "gauge", "Slowest batch commit so far"
        ).add(committer.latency_max)
        family("pytbmq_store_batch_latency_last_seconds", "gauge", "Latest batch commit").add(
            committer.latency_last
        )

    # process
    proc = process_stats()
    family("process_cpu_seconds_total", "counter", "User and system CPU time, seconds").add(
        proc.cpu_seconds
    )
    family("process_resident_memory_bytes", "gauge", "Resident memory size, bytes").add(
        proc.rss_bytes
    )
    family("process_max_resident_memory_bytes", "gauge", "Peak resident memory, bytes").add(
        proc.max_rss_bytes
    )
    family("process_threads", "gauge", "Threads of the process").add(proc.threads)
    if proc.open_fds is not None:
        family("process_open_fds", "gauge", "Open file descriptors").add(proc.open_fds)
    if proc.start_time is not None:
        family("process_start_time_seconds", "gauge", "Start time of the process (Unix time)").add(
            proc.start_time
        )
    return out
