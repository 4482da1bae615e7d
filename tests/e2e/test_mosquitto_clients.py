"""Interoperability with Debian's mosquitto_pub / mosquitto_sub command line clients."""

from __future__ import annotations

import queue
import shutil
import subprocess
import threading

import pytest

from .helpers import uid

MOSQUITTO_SUB = shutil.which("mosquitto_sub")
MOSQUITTO_PUB = shutil.which("mosquitto_pub")
# mosquitto_sub block-buffers stdout into a pipe; stdbuf makes its debug lines (SUBACK) and
# messages visible line by line.
STDBUF = shutil.which("stdbuf")

pytestmark = [
    pytest.mark.skipif(
        not (MOSQUITTO_SUB and MOSQUITTO_PUB),
        reason="mosquitto_sub/mosquitto_pub not installed (apt-get install mosquitto-clients)",
    ),
    pytest.mark.skipif(not STDBUF, reason="stdbuf (coreutils) is needed to read mosquitto_sub"),
]

PROTOCOLS = pytest.mark.parametrize("proto", ["mqttv311", "mqttv5"])


class LineReader:
    """Drains a process's stdout into a queue of lines."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._run, args=(proc,), daemon=True)
        self._thread.start()

    def _run(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, ""):
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, predicate, timeout: float = 10.0) -> str:
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no matching output within {timeout}s: {self.seen}") from None
            if line is None:
                raise AssertionError(f"process output ended: {self.seen}")
            self.seen.append(line)
            if predicate(line):
                return line


def _common(broker, proto: str) -> list[str]:
    return ["-h", broker.host, "-p", str(broker.port), "-V", proto]


def _publish(broker, proto: str, topic: str, message: str, *extra: str) -> None:
    result = subprocess.run(
        [MOSQUITTO_PUB, *_common(broker, proto), "-q", "1", "-t", topic, "-m", message, *extra],
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert result.returncode == 0, result.stderr + result.stdout


def _start_sub(broker, proto: str, *args: str) -> subprocess.Popen[str]:
    command = [STDBUF, "-oL", MOSQUITTO_SUB, *_common(broker, proto)]
    return subprocess.Popen(
        [*command, "-v", "-C", "1", "-W", "10", "-d", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if proc.stdout is not None:
        proc.stdout.close()


@PROTOCOLS
def test_mosquitto_sub_receives_live_message(start_broker, proto):
    broker = start_broker()
    sub = _start_sub(broker, proto, "-t", "#", "-i", f"msub-{uid()}")
    try:
        out = LineReader(sub)
        # with -d mosquitto_sub reports the SUBACK: the subscription is in place
        out.wait_for(lambda line: "SUBACK" in line)
        _publish(broker, proto, "a/b", "hello")
        out.wait_for(lambda line: line == "a/b hello")
        assert sub.wait(10) == 0
    finally:
        _stop(sub)


@PROTOCOLS
def test_mosquitto_sub_receives_retained_message(start_broker, proto):
    broker = start_broker()
    topic = f"mq/{uid()}/r"
    _publish(broker, proto, topic, "kept", "-r")
    sub = _start_sub(broker, proto, "-t", topic)
    try:
        out = LineReader(sub)
        out.wait_for(lambda line: line == f"{topic} kept")
        assert sub.wait(10) == 0
    finally:
        _stop(sub)


def test_mosquitto_v5_to_v311_interop(start_broker):
    broker = start_broker()
    topic = f"mq/{uid()}/x"
    sub = _start_sub(broker, "mqttv311", "-t", "mq/+/x", "-q", "1")
    try:
        out = LineReader(sub)
        out.wait_for(lambda line: "SUBACK" in line)
        _publish(broker, "mqttv5", topic, "cross")
        out.wait_for(lambda line: line == f"{topic} cross")
        assert sub.wait(10) == 0
    finally:
        _stop(sub)
