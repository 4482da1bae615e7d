"""Shared helpers for the end-to-end suite: the broker process and a paho client wrapper.

Everything here talks to the broker only through its process interface (environment,
stderr log lines, signals) and the network, never through the package's Python API.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from .rawmqtt import RawClient
from .wsclient import WsRawClient

SRC_DIR = Path(__file__).resolve().parents[2] / "src"

READY_TIMEOUT = 20.0
LISTENER_RE = re.compile(r"listener (\w+) bound to (\S+):(\d+)")

V311 = 4
V5 = 5
PROTOCOLS = {3: mqtt.MQTTv31, 4: mqtt.MQTTv311, 5: mqtt.MQTTv5}

#: Parametrize a test over MQTT 3.1.1 and MQTT 5 (``version`` argument: 4 or 5).
both_versions = pytest.mark.parametrize("version", [V311, V5], ids=["v311", "v5"])

#: How clients reach the broker: plain MQTT, MQTT over WebSocket, over WebSocket Secure.
TRANSPORTS = ("tcp", "ws", "wss")
#: Path of the broker's MQTT-over-WebSocket endpoint (WS_PATH / WSS_PATH defaults).
WS_PATH = "/mqtt"


def uid() -> str:
    return uuid.uuid4().hex[:12]


def wait_until_elapsed(start: float, seconds: float) -> None:
    """Block until ``seconds`` have passed since ``start`` (a time.monotonic() value).

    This is NOT a synchronisation primitive. It is used only where the behaviour under test
    is itself a deadline (message expiry, keep alive, will delay): the test has to let that
    amount of time pass before observing the broker. Everything else synchronises on
    events, queues and log lines.
    """
    remaining = start + seconds - time.monotonic()
    if remaining > 0:
        threading.Event().wait(remaining)


# --------------------------------------------------------------------------- broker process


def broker_env(data_dir: Path, overrides: dict[str, Any] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "LISTENER_TCP_BIND_ADDRESS": "127.0.0.1",
            "LISTENER_TCP_BIND_PORT": "0",
            "LISTENER_WS_ENABLED": "false",
            "HTTP_BIND_ADDRESS": "127.0.0.1",
            "HTTP_BIND_PORT": "0",
            "PYTBMQ_DATA_DIR": str(data_dir),
            "PYTBMQ_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
    )
    pythonpath = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(SRC_DIR) + (os.pathsep + pythonpath if pythonpath else "")
    for key, value in (overrides or {}).items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        env[key] = str(value)
    return env


class BrokerProcess:
    """One ``python -m pytbmq`` child process whose stdout/stderr are drained continuously."""

    def __init__(self, workdir: Path, env: dict[str, Any] | None = None) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.env_overrides = dict(env or {})
        self.host = "127.0.0.1"
        self.port = 0
        #: Port of every listener by name ('tcp', 'ssl', ...); ``port`` is the tcp one.
        self.ports: dict[str, int] = {}
        self.proc: subprocess.Popen[str] | None = None
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._open_streams = 0
        self._threads: list[threading.Thread] = []

    # -- lifecycle
    def start(self, timeout: float = READY_TIMEOUT) -> BrokerProcess:
        env = broker_env(self.workdir / "data", self.env_overrides)
        mark = self.log_mark()  # a restart must not read the previous run's lines
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pytbmq"],
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            start_new_session=True,
        )
        for stream, name in ((self.proc.stderr, "stderr"), (self.proc.stdout, "stdout")):
            assert stream is not None
            self._open_streams += 1
            thread = threading.Thread(
                target=self._drain, args=(stream,), name=f"broker-{name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        try:
            self.wait_for_log(r"pytbmq ready", timeout=timeout, since=mark)
        except AssertionError:
            self.stop()
            raise
        for line in self.logs()[mark:]:
            match = LISTENER_RE.search(line)
            if match:
                self.ports[match.group(1).lower()] = int(match.group(3))
            if match and match.group(1).lower() == "tcp":
                self.host, self.port = match.group(2), int(match.group(3))
        if not self.port:
            self.stop()
            raise AssertionError("broker is ready but logged no 'listener tcp bound to' line")
        if self.host in ("0.0.0.0", "::", "[::]", "*"):
            self.host = "127.0.0.1"
        return self

    def _drain(self, stream: Any) -> None:
        try:
            for line in iter(stream.readline, ""):
                with self._cond:
                    self._lines.append(line.rstrip("\n"))
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._open_streams -= 1
                self._cond.notify_all()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        for thread in self._threads:
            thread.join(timeout=5)
        return code

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """SIGTERM (or ``sig``), wait, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            except ProcessLookupError:
                pass
        for thread in self._threads:
            thread.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return self.proc.returncode

    # -- logs
    def logs(self) -> list[str]:
        with self._cond:
            return list(self._lines)

    def log_mark(self) -> int:
        """Index of the next log line; pass it as ``since`` to wait for lines after now."""
        with self._cond:
            return len(self._lines)

    def wait_for_log(self, regex: str, timeout: float = 10.0, since: int = 0) -> re.Match[str]:
        """Wait until a log line at index >= ``since`` matches ``regex`` (re.search)."""
        pattern = re.compile(regex)
        deadline = time.monotonic() + timeout
        checked = since
        with self._cond:
            while True:
                while checked < len(self._lines):
                    match = pattern.search(self._lines[checked])
                    checked += 1
                    if match:
                        return match
                if self._open_streams == 0:
                    raise AssertionError(
                        f"broker output ended without a line matching {regex!r}\n" + self.tail()
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"no broker log line matching {regex!r} within {timeout}s\n" + self.tail()
                    )
                self._cond.wait(remaining)

    def tail(self, n: int = 60) -> str:
        lines = self._lines[-n:]
        body = "\n".join(lines)
        return f"---- broker log (last {len(lines)} lines) ----\n{body}"

    def __repr__(self) -> str:
        return f"<BrokerProcess {self.host}:{self.port} env={self.env_overrides}>"


@dataclass
class FailedStart:
    """Outcome of a start expected to fail (see :func:`run_broker_expecting_exit`)."""

    returncode: int | None  # None: it was still running at the deadline (then killed)
    stdout: str
    stderr: str
    elapsed: float

    @property
    def output(self) -> str:
        return self.stderr + self.stdout


def run_broker_expecting_exit(
    workdir: Path, env: dict[str, Any] | None = None, timeout: float = 20.0
) -> FailedStart:
    """Run ``python -m pytbmq`` that should refuse to start; wait for its exit and return the
    exit code and its output. A broker still running after ``timeout`` is killed and
    reported with ``returncode=None``."""
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytbmq"],
        cwd=workdir,
        env=broker_env(workdir / "data", env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        code = None
    return FailedStart(code, stdout, stderr, time.monotonic() - start)


# --------------------------------------------------------------------------- paho wrapper


def props(packet_type: int, **values: Any) -> Properties:
    """paho Properties, e.g. props(PacketTypes.CONNECT, SessionExpiryInterval=60)."""
    p = Properties(packet_type)
    for name, value in values.items():
        setattr(p, name, value)
    return p


def prop(properties: Properties | None, name: str, default: Any = None) -> Any:
    if properties is None:
        return default
    return getattr(properties, name, default)


def _code(reason: Any) -> int:
    if isinstance(reason, ReasonCode):
        return int(reason.value)
    return int(reason)


@dataclass
class Connack:
    reason_code: int
    session_present: bool
    properties: Properties | None

    def prop(self, name: str, default: Any = None) -> Any:
        return prop(self.properties, name, default)


@dataclass
class Disconnect:
    reason_code: int
    from_server: bool
    properties: Properties | None


class MqttClient:
    """paho Client (callback API v2) whose callbacks feed queues the tests can wait on."""

    def __init__(
        self,
        broker: BrokerProcess,
        version: int = V5,
        client_id: str | None = None,
        clean_session: bool | None = None,
        manual_ack: bool = False,
        transport: str = "tcp",
        ca: Path | None = None,
        cert: tuple[Path, Path] | None = None,
    ) -> None:
        """``transport`` is ``tcp`` (the broker's port), ``ws`` or ``wss`` (its WebSocket
        listeners, path /mqtt); ``ca`` is the CA file that verifies the WSS listener and
        ``cert`` the (certificate, key) files a wss client presents."""
        self.broker = broker
        self.version = version
        self.transport = transport
        self.client_id = uid() if client_id is None else client_id
        kwargs: dict[str, Any] = {}
        if version != V5:
            kwargs["clean_session"] = True if clean_session is None else clean_session
        if transport != "tcp":
            kwargs["transport"] = "websockets"
        self.paho = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=PROTOCOLS[version],
            reconnect_on_failure=False,
            manual_ack=manual_ack,
            **kwargs,
        )
        if transport != "tcp":
            self.paho.ws_set_options(path=WS_PATH)
        if transport == "wss":
            assert ca is not None, "a wss client needs the CA file of the test PKI"
            self.paho.tls_set(
                ca_certs=str(ca),
                certfile=str(cert[0]) if cert else None,
                keyfile=str(cert[1]) if cert else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.disconnects: queue.Queue[Disconnect] = queue.Queue()
        self._connacks: queue.Queue[Connack | None] = queue.Queue()
        self._cond = threading.Condition()
        self._subacks: dict[int, list[int]] = {}
        self._unsubacks: dict[int, list[int]] = {}
        self._pubacks: dict[int, int] = {}
        self._got_connack = False
        self.connected = False
        self.gone = threading.Event()
        self._loop_running = False
        self.paho.on_connect = self._on_connect
        self.paho.on_disconnect = self._on_disconnect
        self.paho.on_message = self._on_message
        self.paho.on_subscribe = self._on_subscribe
        self.paho.on_unsubscribe = self._on_unsubscribe
        self.paho.on_publish = self._on_publish

    # -- callbacks (network thread)
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any):
        code = _code(reason)
        self._got_connack = True
        self.connected = code == 0
        self._connacks.put(Connack(code, bool(flags.session_present), properties))

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any):
        self.connected = False
        self.disconnects.put(
            Disconnect(_code(reason), bool(flags.is_disconnect_packet_from_server), properties)
        )
        if not self._got_connack:
            self._connacks.put(None)
        self.gone.set()

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.put(message)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: Any, properties: Any):
        with self._cond:
            self._subacks[mid] = [_code(c) for c in codes]
            self._cond.notify_all()

    def _on_unsubscribe(self, client: Any, userdata: Any, mid: int, codes: Any, properties: Any):
        with self._cond:
            self._unsubacks[mid] = [_code(c) for c in (codes or [])]
            self._cond.notify_all()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any):
        with self._cond:
            self._pubacks[mid] = _code(reason)
            self._cond.notify_all()

    def _wait_result(self, store: dict[int, Any], mid: int, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while mid not in store:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{self.client_id}: no {what} for mid {mid} in {timeout}s")
                self._cond.wait(remaining)
            return store.pop(mid)

    # -- operations
    def will_set(
        self,
        topic: str,
        payload: bytes | str = b"",
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        self.paho.will_set(topic, payload, qos, retain, properties)

    def connect(
        self,
        *,
        keepalive: int = 60,
        clean_start: bool = True,
        properties: Properties | None = None,
        timeout: float = 5.0,
        check: bool = True,
    ) -> Connack:
        """Connect and wait for the CONNACK. ``check`` asserts it was accepted."""
        self.gone.clear()
        self._got_connack = False
        kwargs: dict[str, Any] = {}
        if self.version == V5:
            kwargs["clean_start"] = clean_start
            kwargs["properties"] = properties
        port = self.broker.port if self.transport == "tcp" else self.broker.ports[self.transport]
        self.paho.connect(self.broker.host, port, keepalive, **kwargs)
        self.paho.loop_start()
        self._loop_running = True
        try:
            connack = self._connacks.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id}: no CONNACK within {timeout}s") from None
        if connack is None:
            raise AssertionError(f"{self.client_id}: connection closed before CONNACK")
        if check:
            assert connack.reason_code == 0, f"{self.client_id}: CONNACK refused {connack}"
        return connack

    def subscribe(
        self,
        topic: str | list[tuple[str, int]],
        qos: int = 0,
        *,
        no_local: bool = False,
        retain_as_published: bool = False,
        retain_handling: int = 0,
        properties: Properties | None = None,
        timeout: float = 5.0,
    ) -> list[int]:
        """Subscribe and return the SUBACK codes (granted QoS or failure reason codes)."""
        entries = topic if isinstance(topic, list) else [(topic, qos)]
        if self.version == V5:
            v5_entries = [
                (
                    t,
                    SubscribeOptions(
                        qos=q,
                        noLocal=no_local,
                        retainAsPublished=retain_as_published,
                        retainHandling=retain_handling,
                    ),
                )
                for t, q in entries
            ]
            rc, mid = self.paho.subscribe(v5_entries, properties=properties)
        else:
            rc, mid = self.paho.subscribe(entries)
        assert rc == mqtt.MQTT_ERR_SUCCESS and mid is not None, f"subscribe failed: {rc}"
        return self._wait_result(self._subacks, mid, timeout, "SUBACK")

    def unsubscribe(self, topic: str, timeout: float = 5.0) -> list[int]:
        rc, mid = self.paho.unsubscribe(topic)
        assert rc == mqtt.MQTT_ERR_SUCCESS and mid is not None
        return self._wait_result(self._unsubacks, mid, timeout, "UNSUBACK")

    def publish(
        self,
        topic: str,
        payload: bytes | str = b"",
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
        timeout: float = 5.0,
    ) -> int:
        """Publish and wait until paho completed it (written for QoS 0, PUBACK/PUBCOMP
        otherwise). Returns the v5 reason code of the acknowledgement (0 for success)."""
        info = self.paho.publish(topic, payload, qos, retain, properties)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, f"publish failed locally: {info.rc}"
        info.wait_for_publish(timeout)
        assert info.is_published(), f"{self.client_id}: publish to {topic!r} not completed"
        return self._wait_result(self._pubacks, info.mid, timeout, "publish completion")

    def expect_message(self, timeout: float = 5.0) -> mqtt.MQTTMessage:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id}: no message within {timeout}s") from None

    def expect_messages(self, count: int, timeout: float = 5.0) -> list[mqtt.MQTTMessage]:
        deadline = time.monotonic() + timeout
        out = []
        for _ in range(count):
            try:
                out.append(self.messages.get(timeout=max(deadline - time.monotonic(), 0.001)))
            except queue.Empty:
                raise AssertionError(
                    f"{self.client_id}: got {len(out)} of {count} messages within {timeout}s: "
                    f"{[(m.topic, m.payload[:40]) for m in out]}"
                ) from None
        return out

    def messages_until(self, marker_topic: str, timeout: float = 5.0) -> list[mqtt.MQTTMessage]:
        """Messages received before the first one on ``marker_topic`` (which must arrive)."""
        deadline = time.monotonic() + timeout
        before = []
        while True:
            try:
                msg = self.messages.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                raise AssertionError(
                    f"{self.client_id}: marker {marker_topic!r} not received within {timeout}s; "
                    f"got {[(m.topic, m.payload[:40]) for m in before]}"
                ) from None
            if msg.topic == marker_topic:
                return before
            before.append(msg)

    def drain(self) -> list[mqtt.MQTTMessage]:
        out = []
        while True:
            try:
                out.append(self.messages.get_nowait())
            except queue.Empty:
                return out

    def expect_disconnect(self, timeout: float = 5.0) -> Disconnect:
        try:
            return self.disconnects.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id}: still connected after {timeout}s") from None

    def ack(self, message: mqtt.MQTTMessage) -> None:
        self.paho.ack(message.mid, message.qos)

    def disconnect(
        self,
        reason_code: int | None = None,
        properties: Properties | None = None,
        wait_broker: bool = False,
        timeout: float = 5.0,
    ) -> None:
        """Send DISCONNECT and wait until paho closed the socket. With ``wait_broker`` also
        wait for the broker's disconnect log line naming this client (contract: one log line
        per disconnect containing the client id), so the broker has processed it."""
        mark = self.broker.log_mark()
        reason = None
        if reason_code is not None:
            reason = ReasonCode(PacketTypes.DISCONNECT, identifier=reason_code)
        self.paho.disconnect(reason, properties)
        assert self.gone.wait(timeout), f"{self.client_id}: disconnect did not complete"
        self._stop_loop()
        if wait_broker:
            self.broker.wait_for_log(re.escape(self.client_id), timeout=timeout, since=mark)

    def abort(self, wait_broker: bool = False, timeout: float = 5.0) -> None:
        """Drop the TCP connection without sending DISCONNECT (an abnormal close)."""
        mark = self.broker.log_mark()
        sock = self.paho.socket()
        assert sock is not None, "not connected"
        sock = getattr(sock, "_socket", sock)  # paho's WebSocket wrapper holds the socket
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        assert self.gone.wait(timeout), f"{self.client_id}: abort did not complete"
        self._stop_loop()
        if wait_broker:
            self.broker.wait_for_log(re.escape(self.client_id), timeout=timeout, since=mark)

    def _stop_loop(self) -> None:
        if self._loop_running:
            self.paho.loop_stop()
            self._loop_running = False

    def close(self) -> None:
        """Teardown: disconnect if still connected and stop the network thread."""
        with contextlib.suppress(Exception):
            if self.connected and self.paho.is_connected():
                self.paho.disconnect()
                self.gone.wait(2)
        with contextlib.suppress(Exception):
            self._stop_loop()
        try:
            sock = self.paho.socket()
            if sock is not None:
                sock.close()
        except Exception:
            pass


class ClientPool:
    """Creates clients for a test and closes all of them at teardown.

    ``transport`` (tcp, ws or wss) is how its paho and raw clients reach the broker;
    ``ca`` verifies the WSS listener's certificate."""

    def __init__(self, transport: str = "tcp", ca: Path | None = None) -> None:
        self.transport = transport
        self.ca = ca
        self._clients: list[MqttClient] = []
        self._raws: list[RawClient] = []

    def new(self, broker: BrokerProcess, version: int = V5, **kwargs: Any) -> MqttClient:
        kwargs.setdefault("transport", self.transport)
        kwargs.setdefault("ca", self.ca)
        client = MqttClient(broker, version, **kwargs)
        self._clients.append(client)
        return client

    def connected(
        self,
        broker: BrokerProcess,
        version: int = V5,
        *,
        client_id: str | None = None,
        clean_session: bool | None = None,
        manual_ack: bool = False,
        transport: str | None = None,
        ca: Path | None = None,
        **connect_kwargs: Any,
    ) -> MqttClient:
        client = self.new(
            broker,
            version,
            client_id=client_id,
            clean_session=clean_session,
            manual_ack=manual_ack,
            transport=transport or self.transport,
            ca=ca or self.ca,
        )
        client.connect(**connect_kwargs)
        return client

    def raw(self, broker: BrokerProcess, version: int = 4) -> RawClient:
        raw: RawClient
        if self.transport == "tcp":
            raw = RawClient(broker.host, broker.port, version)
        else:
            ctx = None
            if self.transport == "wss":
                ctx = ssl.create_default_context(cafile=str(self.ca))
            port = broker.ports[self.transport]
            raw = WsRawClient(broker.host, port, version, ssl_context=ctx, path=WS_PATH)
        self._raws.append(raw)
        return raw

    def close_all(self) -> None:
        for client in reversed(self._clients):
            client.close()
        for raw in self._raws:
            raw.close()


def session_props(expiry: int, **extra: Any) -> Properties:
    return props(PacketTypes.CONNECT, SessionExpiryInterval=expiry, **extra)


def roundtrip_ok(pool: ClientPool, broker: BrokerProcess, version: int = V5) -> None:
    """Assert the broker still serves a fresh publisher/subscriber pair."""
    topic = f"health/{uid()}"
    sub = pool.connected(broker, version)
    assert sub.subscribe(topic, 1) == [1]
    pub = pool.connected(broker, version)
    pub.publish(topic, b"still alive", qos=1)
    msg = sub.expect_message()
    assert (msg.topic, msg.payload) == (topic, b"still alive")
    pub.disconnect()
    sub.disconnect()


def topics_payloads(messages: Iterable[mqtt.MQTTMessage]) -> list[tuple[str, bytes]]:
    return [(m.topic, m.payload) for m in messages]
