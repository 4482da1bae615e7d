"""The Prometheus exposition (pure) and the broker snapshot behind /actuator/prometheus."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pytbmq.api.context import ApiContext
from pytbmq.api.metrics import (
    Family,
    collect,
    escape_help,
    escape_label_value,
    format_value,
    process_stats,
    render,
)
from pytbmq.api.system import health
from pytbmq.api.tokens import TokenService
from pytbmq.broker import Broker
from pytbmq.config import load_settings
from pytbmq.message import Message
from pytbmq.protocol.packets import EMPTY_PROPERTIES, Subscribe, Subscription
from pytbmq.storage.committer import Committer

# One line of the text format 0.0.4: a HELP or TYPE comment, or a sample.
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_VALUE = r'"(?:[^"\\\n]|\\[\\"n])*"'
_LABELS = rf"\{{[a-zA-Z_][a-zA-Z0-9_]*={_VALUE}(?:,[a-zA-Z_][a-zA-Z0-9_]*={_VALUE})*\}}"
_NUMBER = r"(?:[+-]?(?:\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|NaN|[+-]Inf)"
LINE = re.compile(
    rf"# HELP {_NAME} [^\n]*|# TYPE {_NAME} (?:counter|gauge|summary|histogram|untyped)"
    rf"|{_NAME}(?:{_LABELS})? {_NUMBER}"
)


def assert_valid_exposition(text: str) -> None:
    assert text.endswith("\n")
    for line in text.splitlines():
        assert LINE.fullmatch(line), f"not in the text format: {line!r}"


def parse(text: str) -> dict[str, float]:
    """`name{labels}` (as written) -> value."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


# ------------------------------------------------------------------ exposition
def test_render_writes_help_type_and_samples() -> None:
    fam = Family("pytbmq_demo_total", "counter", "A demo counter")
    fam.add(3, {"listener": "tcp", "qos": 1}).add(0.25, {"listener": "ssl", "qos": 2})
    text = render([fam, Family("pytbmq_up", "gauge", "Up").add(1)])
    assert text == (
        "# HELP pytbmq_demo_total A demo counter\n"
        "# TYPE pytbmq_demo_total counter\n"
        'pytbmq_demo_total{listener="tcp",qos="1"} 3\n'
        'pytbmq_demo_total{listener="ssl",qos="2"} 0.25\n'
        "# HELP pytbmq_up Up\n"
        "# TYPE pytbmq_up gauge\n"
        "pytbmq_up 1\n"
    )
    assert_valid_exposition(text)


def test_label_values_are_escaped() -> None:
    nasty = 'a\\b "quoted"\nnext line'
    assert escape_label_value(nasty) == 'a\\\\b \\"quoted\\"\\nnext line'
    text = render([Family("m", "gauge", "h").add(1, {"reason": nasty})])
    assert 'm{reason="a\\\\b \\"quoted\\"\\nnext line"} 1\n' in text
    assert len(text.splitlines()) == 3  # the newline did not split the sample
    assert_valid_exposition(text)


def test_help_is_escaped_but_quotes_stay() -> None:
    assert escape_help('back\\slash "q"\nline') == 'back\\\\slash "q"\\nline'
    text = render([Family("m", "gauge", "two\nlines").add(0)])
    assert "# HELP m two\\nlines\n" in text
    assert_valid_exposition(text)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (42, "42"),
        (-7.0, "-7"),
        (0.5, "0.5"),
        (1e-9, "1e-09"),
        (2.0**60, "1.152921504606847e+18"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (math.nan, "NaN"),
    ],
)
def test_values(value: float, text: str) -> None:
    assert format_value(float(value)) == text
    assert_valid_exposition(render([Family("m", "gauge", "h").add(value)]))


def test_summary_suffixes() -> None:
    fam = Family("pytbmq_latency_seconds", "summary", "Latency")
    fam.add(1.5, suffix="_sum").add(3, suffix="_count")
    text = render([fam])
    assert "pytbmq_latency_seconds_sum 1.5\npytbmq_latency_seconds_count 3\n" in text
    assert_valid_exposition(text)


@pytest.mark.parametrize(
    "families",
    [
        [Family("bad-name", "gauge", "h")],
        [Family("9lives", "gauge", "h")],
        [Family("m", "gauge", "h").add(1, {"bad-label": "x"})],
        [Family("m", "gauge", "h").add(1, {"__reserved": "x"})],
        [Family("m", "gauge", "h"), Family("m", "gauge", "h")],
    ],
)
def test_invalid_names_are_refused(families: list[Family]) -> None:
    with pytest.raises(ValueError):
        render(families)


def test_empty_family_and_nothing() -> None:
    assert render([]) == ""
    text = render([Family("m", "gauge", "h")])
    assert text == "# HELP m h\n# TYPE m gauge\n"


def test_process_stats() -> None:
    stats = process_stats()
    assert stats.cpu_seconds > 0 and stats.rss_bytes > 1_000_000 and stats.threads >= 1
    if Path("/proc/self/fd").is_dir():
        assert stats.open_fds and stats.open_fds > 2
        assert stats.start_time is not None and stats.start_time > 1_600_000_000


# ------------------------------------------------------------------ snapshot
class Link:
    """Stands in for a connection (pytbmq.session.SessionLink)."""

    receive_maximum = 65535

    def __init__(self, listener: str = "tcp", version: int = 5) -> None:
        self.listener = listener
        self.version = version
        self.session: Any = None

    def send_publish(self, *args: Any) -> bool:
        return True

    def send_pubrel(self, packet_id: int) -> None:
        return None

    def can_take_qos0(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def close_by_server(self, reason_code: int) -> None:
        return None


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[ApiContext]:
    settings = load_settings(environ={"PYTBMQ_DATA_DIR": str(tmp_path), "PYTBMQ_STORAGE": "memory"})
    broker = Broker(settings)
    yield ApiContext(broker, TokenService(b"k" * 32, "test", 60, 60))


def test_collect_reflects_sessions_traffic_and_drops(ctx: ApiContext) -> None:
    router = ctx.broker.router
    link = Link()
    session, _ = router.connect(link, "c1", 5, True, 0, None, 1000.0)
    link.session = session
    ctx.broker.links.add(link)  # type: ignore[arg-type]
    router.subscribe(session, Subscribe(1, (Subscription("a/#", 1),)), True)
    router.subscribe(session, Subscribe(2, (Subscription("$share/g/b", 0),)), True)
    offline = Link()
    gone, _ = router.connect(offline, "c2", 4, True, 3600, None, 1000.0)
    router.connection_lost(gone, 1000.0, publish_will=False)
    payload = b"hello"
    router.publish(Message.create("a/1", payload, 1, True, EMPTY_PROPERTIES, "p", 1000.0), 1000.0)
    router.counters.messages_dropped_queue_full += 2
    text = render(collect(ctx))
    assert_valid_exposition(text)
    m = parse(text)
    assert m['pytbmq_connections{listener="tcp",mqtt_version="5"}'] == 1
    assert m['pytbmq_sessions{state="connected",client_type="DEVICE"}'] == 1
    assert m['pytbmq_sessions{state="disconnected",client_type="DEVICE"}'] == 1
    assert m['pytbmq_subscriptions{kind="plain"}'] == 1
    assert m['pytbmq_subscriptions{kind="shared"}'] == 1
    assert m["pytbmq_retained_messages"] == 1
    assert m['pytbmq_messages_received_total{qos="1"}'] == 1
    assert m['pytbmq_messages_received_total{qos="0"}'] == 0
    assert m["pytbmq_payload_bytes_received_total"] == len(payload)
    assert m['pytbmq_inflight_messages{direction="out"}'] == 1  # the QoS 1 delivery
    assert m['pytbmq_messages_dropped_total{reason="queue_full"}'] == 2
    assert m['pytbmq_store_up{store="memory"}'] == 1
    assert "pytbmq_store_batches_committed_total" not in m  # no committer with memory
    assert m["process_resident_memory_bytes"] > 0
    assert m["pytbmq_uptime_seconds"] >= 0


def test_committer_times_batches() -> None:
    class Store:
        committed_seq = 0

        def __init__(self) -> None:
            self.batches: list[int] = []

        def submit(self, seq: int, changes: list[Any]) -> None:
            self.batches.append(seq)

    loop = asyncio.new_event_loop()
    try:
        from pytbmq.router import Router

        router = Router()
        store = Store()
        committer = Committer(router, store, loop)  # type: ignore[arg-type]
        for seq in (1, 2, 3):
            router._log(("x", seq))  # type: ignore[arg-type]
            committer.drain()
        assert store.batches == [1, 2, 3]
        committer.committed_up_to(2)  # batches 1 and 2 committed together
        assert committer.batches_committed == 2
        assert 0 <= committer.latency_last <= committer.latency_max
        assert committer.latency_sum >= committer.latency_max
        committer.committed_up_to(3)
        assert committer.batches_committed == 3
    finally:
        loop.close()


def test_health_is_503_when_the_store_fails(ctx: ApiContext) -> None:
    async def run() -> tuple[int, bytes]:
        await ctx.security.start()
        try:
            ctx.broker.store = SimpleNamespace(  # type: ignore[assignment]
                name="sqlite",
                durable=True,
                location="/data/pytbmq.db",
                healthy=False,
                last_error="disk I/O error",
            )
            response = await health(ctx)
            return response.status_code, bytes(response.body)
        finally:
            await ctx.security.stop()

    status, body = asyncio.run(run())
    assert status == 503
    assert b'"status":"DOWN"' in body and b"disk I/O error" in body
    assert b'"security":{"status":"UP"' in body


def test_sqlite_store_reports_failing_commits(tmp_path: Path) -> None:
    """`healthy` / `last_error` (read by /actuator/health) follow the writer's commits."""
    import sqlite3
    import threading

    from pytbmq.changes import RET_DEL
    from pytbmq.storage.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "pytbmq.db")
    retrying, release = threading.Event(), threading.Event()
    seen: list[tuple[bool, str | None]] = []

    async def run() -> None:
        await store.open(lambda seq: None)
        assert store.healthy and store.last_error is None
        real_write = store.db.write
        calls = 0

        def write() -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise sqlite3.OperationalError("disk I/O error")
            seen.append((store.healthy, store.last_error))  # while the retry runs
            retrying.set()
            release.wait(10)
            real_write()

        store.db.write = write  # type: ignore[method-assign]
        store.submit(1, [(RET_DEL, "a/b")])
        await asyncio.get_running_loop().run_in_executor(None, retrying.wait, 10)
        release.set()
        await store.flush()
        assert store.healthy and store.last_error is None and store.committed_seq == 1
        await store.close()
        assert not store.healthy  # no writer thread any more

    asyncio.run(run())
    assert seen == [(False, "disk I/O error")]
