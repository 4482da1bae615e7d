"""The broker as a process: command line, configuration errors, signals."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest

from . import rawmqtt as rm
from .helpers import V5, V311, broker_env, uid


def test_help_lists_commands(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pytbmq", "--help"],
        cwd=tmp_path,
        env=broker_env(tmp_path / "data"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"\brun\b", result.stdout + result.stderr), result.stdout


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LISTENER_TCP_BIND_PORT", "70000"),
        ("LISTENER_TCP_BIND_PORT", "not-a-port"),
        ("TCP_NETTY_MAX_PAYLOAD_SIZE", "lots"),
        ("MQTT_KEEP_ALIVE_MAX_KEEP_ALIVE_SEC", "abc"),
        ("PYTBMQ_GC_FREEZE_SEC", "-1"),
        ("PYTBMQ_GC_FULL_COLLECT_SEC", "hourly"),
    ],
)
def test_invalid_configuration_fails_fast_naming_the_variable(tmp_path, variable, value):
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytbmq"],
        cwd=tmp_path,
        env=broker_env(tmp_path / "data", {variable: value}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, stderr = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
        pytest.fail(f"broker started despite {variable}={value}:\n{stderr[-2000:]}")
    assert proc.returncode != 0
    assert variable in stderr, stderr[-2000:]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_shuts_down_gracefully(start_broker, clients, sig):
    broker = start_broker()
    v5 = clients.connected(broker, V5)
    v311 = clients.connected(broker, V311)
    raw = clients.raw(broker, V5)
    raw.connect(f"raw-{uid()}")

    broker.send_signal(sig)

    gone = v5.expect_disconnect(timeout=10)
    assert gone.from_server is True
    assert gone.reason_code == 0x8B
    v311.expect_disconnect(timeout=10)
    packets = raw.read_until_closed(timeout=10)
    assert [(p.type, p.reason) for p in packets] == [(rm.DISCONNECT, 0x8B)]
    assert broker.wait_exit(timeout=10) == 0


def test_idle_broker_exits_zero_on_sigterm(start_broker):
    broker = start_broker()
    broker.send_signal(signal.SIGTERM)
    assert broker.wait_exit(timeout=10) == 0


def test_ready_line_follows_listener_line(start_broker):
    broker = start_broker()
    logs = broker.logs()
    listener = next(i for i, line in enumerate(logs) if "listener tcp bound to" in line)
    ready = next(i for i, line in enumerate(logs) if "pytbmq ready" in line)
    assert listener < ready
    assert f":{broker.port}" in logs[listener]


def test_two_brokers_get_distinct_ports(start_broker):
    first = start_broker()
    second = start_broker()
    assert first.port != second.port


def test_heap_is_collected_whole_on_its_period_while_serving(start_broker, clients):
    """PYTBMQ_GC_FREEZE_SEC / PYTBMQ_GC_FULL_COLLECT_SEC reach the running broker: it
    freezes its heap every second and, here every second too, thaws, collects and
    freezes it again, logging each time, while clients are served as before."""
    broker = start_broker(PYTBMQ_GC_FREEZE_SEC="1", PYTBMQ_GC_FULL_COLLECT_SEC="1")
    sub = clients.connected(broker, V5)
    topic = f"heap/{uid()}"
    assert sub.subscribe(topic, qos=1) == [1]
    pub = clients.connected(broker, V311)
    for round_ in range(2):
        mark = broker.log_mark()
        line = broker.wait_for_log(
            r"heap: full collection \(PYTBMQ_GC_FULL_COLLECT_SEC\) took \d+ ms, "
            r"(\d+) objects tracked, \d+ unreachable found",
            since=mark,
        )
        assert int(line.group(1)) > 10_000  # the broker's heap, frozen again
        pub.publish(topic, f"after collection {round_}", qos=1)
        assert sub.expect_message().payload == f"after collection {round_}".encode()
    assert broker.alive()
