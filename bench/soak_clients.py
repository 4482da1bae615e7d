"""The soak's client processes (bench/soak starts each as ``python soak_clients.py ROLE CONFIG``).

Roles, each in its own process with its own event loop (uvloop), so a busy loader cannot
delay the probe or the QoS 1 checker:

``churn``
    CLIENTS churning clients plus the misbehaving ones: each churn slot connects (MQTT
    3.1.1 or 5, clean or persistent, TCP or now and then TLS, sometimes with a will),
    subscribes, publishes a few QoS 0/1 messages, and leaves (DISCONNECT, RST or FIN) to
    come back after a pause. Misbehaving workers send garbage, stall mid-packet, stall TLS
    handshakes and subscribe without ever reading, while a flooder publishes to them.
``probe``
    One client publishing QoS 0 to itself every 100 ms and timing the round trip.
``wb``
    Well-behaved QoS 1: a publisher numbering its messages and two persistent
    subscribers (MQTT 5 with session expiry, MQTT 3.1.1 with clean session off) that
    disconnect and come back now and then; at the end every acknowledged number must
    have reached both.

Each writes a JSON result to CONFIG["out"]/ROLE.json. All traffic goes to 127.0.0.1, and
everything stops at CONFIG["t0"] + CONFIG["duration"] (plus a short drain).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import itertools
import json
import os
import random
import socket
import ssl
import struct
import sys
import termios
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent))

from soak_mqtt import (
    NET_ERRORS,
    Client,
    MqttError,
    connect_packet,
    mqtt_str,
    packet,
    publish_packet,
    read_packet,
    subscribe_packet,
)

Config = dict[str, Any]
ERRORS = (MqttError, *NET_ERRORS)

# Topic space of the churn: soak/g/<0..49>/<0..19> (1,000 topics).
GROUPS, LEAVES = 50, 20
FLOOD_TOPICS = 4
TCP_CLOSE_WAIT = 8  # tcp_info.tcpi_state: the peer (the broker) has closed its side


def log(role: str, text: str) -> None:
    print(f"soak[{role}] {time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


class Stats:
    """Counters, in total and per time bucket since t0."""

    def __init__(self, t0: float, bucket: float) -> None:
        self.t0, self.bucket = t0, bucket
        self.total: collections.Counter[str] = collections.Counter()
        self.buckets: dict[int, collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )

    def inc(self, name: str, n: int = 1) -> None:
        self.total[name] += n
        self.buckets[int((time.time() - self.t0) // self.bucket)][name] += n

    def as_json(self) -> dict[str, Any]:
        return {
            "total": dict(self.total),
            "buckets": {str(k): dict(v) for k, v in sorted(self.buckets.items())},
        }


def client_ssl(ca: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


async def sleep_until(deadline: float) -> None:
    delay = deadline - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def wait_closed(client: Client, seconds: float) -> bool:
    """True when the connection closed within ``seconds``."""
    if seconds <= 0:
        return client.closed.is_set()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await client.closed.wait()
    return client.closed.is_set()


# =========================================================================== churn


class Churn:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.host: str = cfg["host"]
        self.port: int = cfg["tcp_port"]
        self.tls_port: int = cfg["tls_port"]
        self.deadline: float = cfg["t0"] + cfg["duration"]
        self.rng = random.Random(cfg["seed"])
        self.stats = Stats(cfg["t0"], cfg["bucket"])
        self.ssl = client_ssl(cfg["ca"])
        self.close_reasons: collections.Counter[str] = collections.Counter()
        self.connect_errors: collections.Counter[str] = collections.Counter()
        self.misbehaving: list[dict[str, Any]] = []
        self.nonreaders: list[dict[str, Any]] = []
        self.online = 0
        self.max_online = 0
        self._bg: set[asyncio.Task[Any]] = set()
        self._ids = itertools.count()

    def on_message(self, topic: str, payload: bytes, qos: int, dup: bool) -> None:
        self.stats.inc(f"received_q{qos}")

    def topic(self) -> str:
        return f"soak/g/{self.rng.randrange(GROUPS)}/{self.rng.randrange(LEAVES)}"

    def error_name(self, exc: BaseException) -> str:
        if isinstance(exc, MqttError):
            return str(exc).split(" (")[0][:60]
        return type(exc).__name__

    # ------------------------------------------------------------------ one slot
    async def slot(self, i: int) -> None:
        rng = self.rng
        await asyncio.sleep(rng.uniform(0, self.cfg["ramp"]))
        cid = f"soak-c{i}"
        fixed = [
            (f"soak/g/{i % GROUPS}/{(i * 7) % LEAVES}", 1),
            (f"soak/g/{(i * 3) % GROUPS}/+", 0),
        ]
        while time.time() < self.deadline - 1:
            version = rng.choice((4, 5))
            persistent = rng.random() < 0.3
            use_tls = rng.random() < self.cfg["tls_share"]
            will = (f"soak/will/{i}", b"gone", rng.choice((0, 1))) if rng.random() < 0.1 else None
            c = Client(version, self.on_message)
            try:
                await c.connect(
                    self.host,
                    self.tls_port if use_tls else self.port,
                    cid,
                    clean=not persistent,
                    keepalive=60,
                    session_expiry=(300 if persistent else 0) if version == 5 else None,
                    will=will,
                    ssl_ctx=self.ssl if use_tls else None,
                )
            except ERRORS as exc:
                self.stats.inc("connect_failed")
                self.connect_errors[("tls " if use_tls else "tcp ") + self.error_name(exc)] += 1
                await asyncio.sleep(rng.uniform(1, 3))
                continue
            self.stats.inc("connected_tls" if use_tls else "connected_tcp")
            self.stats.inc(f"connected_v{version}_{'persistent' if persistent else 'clean'}")
            if persistent and c.session_present:
                self.stats.inc("session_resumed")
            self.online += 1
            self.max_online = max(self.max_online, self.online)
            try:
                await self.session(c, persistent, fixed)
            finally:
                self.online -= 1
            await asyncio.sleep(rng.uniform(0.5, 5))

    async def session(self, c: Client, persistent: bool, fixed: list[tuple[str, int]]) -> None:
        rng = self.rng
        try:
            if persistent:
                filters = fixed
            else:
                filters = [(self.topic(), rng.choice((0, 1))) for _ in range(rng.randint(1, 3))]
                if rng.random() < 0.1:
                    filters.append((f"soak/g/{rng.randrange(GROUPS)}/+", 0))
            code = await c.subscribe(filters)
            self.stats.inc("subscribed" if code < 0x80 else "subscribe_refused")
            start = time.time()
            hold = min(rng.uniform(3, 30), self.deadline - start)
            for at in sorted(rng.uniform(0, hold) for _ in range(rng.randint(1, 5))):
                await sleep_until(start + at)
                if c.closed.is_set():
                    break
                qos = rng.choice((0, 1))
                payload = b"x" * rng.randint(16, 256)
                try:
                    code = await c.publish(self.topic(), payload, qos)
                except TimeoutError:
                    self.stats.inc("puback_timeout")
                    continue
                self.stats.inc(f"published_q{qos}")
                if qos and code >= 0x80:
                    self.stats.inc("puback_refused")
            if await wait_closed(c, start + hold - time.time()):
                self.stats.inc("closed_by_broker")
                self.close_reasons[c.close_reason] += 1
                return
        except ERRORS as exc:
            if not c.closed.is_set():
                self.stats.inc("session_error")
                self.close_reasons[f"error {self.error_name(exc)}"] += 1
                await c.abort()
                return
            self.stats.inc("closed_by_broker")
            self.close_reasons[c.close_reason] += 1
            return
        end = rng.random()
        if end < 0.6:
            reason = 0x04 if c.version == 5 and rng.random() < 0.2 else 0
            await c.disconnect(reason)
            self.stats.inc("end_disconnect")
        elif end < 0.8:
            await c.abort(rst=True)
            self.stats.inc("end_rst")
        else:
            await c.abort(rst=False)
            self.stats.inc("end_fin")

    # ------------------------------------------------------------------ flooder
    async def flooder(self) -> None:
        """For the non-readers, to soak/flood/<n>: 100 QoS 0 messages/s of 1 KB (they fill
        socket buffers) and 120 QoS 1 messages/s of 256 bytes (they fill session queues:
        the broker's default queue limit, 10,000 messages, is reached in about 85 s)."""
        c = Client(5)
        payload = b"F" * 1024
        small = b"Q" * 256
        while time.time() < self.deadline - 1:
            try:
                await c.connect(self.host, self.port, "soak-flooder", keepalive=30, ping=True)
                tick, t = 0, time.time()
                while time.time() < self.deadline - 1 and not c.closed.is_set():
                    t += 0.01
                    await sleep_until(t)
                    topic = f"soak/flood/{tick % FLOOD_TOPICS}"
                    await c.publish(topic, payload, 0)
                    self.stats.inc("flood_q0")
                    for _ in range(2 if tick % 5 == 0 else 1):
                        task = asyncio.create_task(self._flood_q1(c, topic, small))
                        self._bg.add(task)
                        task.add_done_callback(self._bg.discard)
                    tick += 1
                    if tick % 50 == 0:
                        await c.drain()
            except ERRORS as exc:
                self.stats.inc("flooder_error")
                self.close_reasons[f"flooder {self.error_name(exc)}"] += 1
            await c.abort()
            c = Client(5)
            await asyncio.sleep(1)

    async def _flood_q1(self, c: Client, topic: str, payload: bytes) -> None:
        try:
            await c.publish(topic, payload, 1)
            self.stats.inc("flood_q1")
        except ERRORS:
            self.stats.inc("flood_q1_failed")

    # ------------------------------------------------------------------ misbehaving
    def record(self, kind: str, variant: str, t: float, closed: bool, **extra: Any) -> None:
        self.misbehaving.append(
            {
                "kind": kind,
                "variant": variant,
                "closed": closed,
                "secs": round(time.time() - t, 3),
                **extra,
            }
        )

    async def raw(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with asyncio.timeout(10):
            return await asyncio.open_connection(self.host, port)

    async def until_closed(self, reader: asyncio.StreamReader, limit: float) -> bool:
        """Read (and discard) until the broker closes the connection, at most ``limit`` s."""
        try:
            async with asyncio.timeout(limit):
                while await reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except (OSError, ssl.SSLError):
            pass
        return True

    async def worker(self, kind: str, k: int, run: Callable[[int], Awaitable[None]]) -> None:
        n = 0
        await asyncio.sleep(self.rng.uniform(0, 5))
        while time.time() < self.deadline - 2:
            try:
                await run(n)
            except ERRORS as exc:
                self.record(kind, "error", time.time(), False, error=self.error_name(exc))
            n += 1
            await asyncio.sleep(self.rng.uniform(0.5, 2))

    def garbage_variants(self) -> list[tuple[str, Callable[[], bytes], bool]]:
        """(name, bytes to send, to the TLS port?)."""

        def good() -> bytes:
            return connect_packet(f"soak-garbage-{next(self._ids)}", 4, keepalive=30)

        return [
            ("random bytes", lambda: os.urandom(self.rng.randint(1, 4096)), False),
            ("reserved type 0", lambda: b"\x00" * 64, False),
            (
                "bad protocol name",
                lambda: packet(0x10, mqtt_str("MQTX") + b"\x04\x02\x00\x1e"),
                False,
            ),
            (
                "protocol level 9",
                lambda: packet(0x10, mqtt_str("MQTT") + b"\x09\x02\x00\x1e"),
                False,
            ),
            ("malformed length", lambda: b"\x10\xff\xff\xff\xff\x7f", False),
            ("256 MB length claim", lambda: b"\x30\xff\xff\xff\x7f" + b"A" * 100, False),
            ("CONNECT twice", lambda: good() + good(), False),
            (
                "bad UTF-8 topic",
                lambda: good() + packet(0x30, mqtt_str(b"\xff\xfe\xc0") + b"payload"),
                False,
            ),
            ("SUBSCRIBE QoS 3", lambda: good() + subscribe_packet(1, [("a/b", 3)], 4), False),
            ("HTTP request", lambda: b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", False),
            ("plain MQTT to TLS port", good, True),
            ("random bytes to TLS port", lambda: os.urandom(self.rng.randint(1, 2048)), True),
        ]

    async def garbage(self, n: int) -> None:
        variants = self.garbage_variants()
        name, data, tls = variants[(n + self.rng.randrange(len(variants))) % len(variants)]
        reader, writer = await self.raw(self.tls_port if tls else self.port)
        t = time.time()
        try:
            writer.write(data())
            closed = await self.until_closed(reader, 30)
        finally:
            writer.transport.abort()
        self.record("garbage", name, t, closed)

    async def stall(self, n: int) -> None:
        """Half a packet, then nothing. The broker should give up on its own timers."""
        variants = ["half CONNECT", "half PUBLISH, keepalive 5", "1 byte of PUBLISH, keepalive 5"]
        if n % 4 == 3:
            variants = ["half PUBLISH, keepalive 0"]
        name = variants[n % len(variants)]
        reader, writer = await self.raw(self.port)
        t = time.time()
        try:
            if name == "half CONNECT":
                data = connect_packet(f"soak-stall-{next(self._ids)}", 4, keepalive=5)
                writer.write(data[: len(data) // 2])
            else:
                ka = 0 if "keepalive 0" in name else 5
                writer.write(connect_packet(f"soak-stall-{next(self._ids)}", 5, keepalive=ka))
                async with asyncio.timeout(10):
                    await read_packet(reader)  # CONNACK
                t = time.time()
                pub = publish_packet("soak/stall", b"S" * 1000, 1, 7, 5)
                writer.write(pub[:1] if name.startswith("1 byte") else pub[: len(pub) // 2])
            closed = await self.until_closed(reader, 30)
        finally:
            writer.transport.abort()
        self.record("stall", name, t, closed)

    def client_hello(self) -> bytes:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
        with contextlib.suppress(ssl.SSLWantReadError):
            obj.do_handshake()
        return outgoing.read()

    async def tls_stall(self, n: int) -> None:
        name = ["silent", "half ClientHello", "ClientHello, then silence"][n % 3]
        reader, writer = await self.raw(self.tls_port)
        t = time.time()
        try:
            hello = self.client_hello()
            if name == "half ClientHello":
                writer.write(hello[: len(hello) // 2])
            elif name.startswith("ClientHello"):
                writer.write(hello)
            closed = await self.until_closed(reader, 30)
        finally:
            writer.transport.abort()
        self.record("tls-stall", name, t, closed)

    async def nonreader(self, k: int) -> None:
        """Subscribe to the flood and never read the socket again. Two variants hold on
        for the whole run; the other two let go after 60-120 s and come back."""
        variant = ["QoS 0 v5", "QoS 0 v3.1.1", "QoS 1 v5 clean", "QoS 1 v5 persistent"][k % 4]
        qos = 1 if "QoS 1" in variant else 0
        version = 4 if "v3.1.1" in variant else 5
        persistent = "persistent" in variant
        await asyncio.sleep(self.rng.uniform(0, 5))
        while time.time() < self.deadline - 5:
            c = Client(version)
            t = time.time()
            try:
                await c.connect(
                    self.host,
                    self.port,
                    f"soak-nonreader{k}",
                    clean=not persistent,
                    keepalive=30,
                    session_expiry=600 if persistent else None,
                    receive_max=self.cfg.get("nonreader_receive_max") if version == 5 else None,
                    rcvbuf=4096,
                    ping=True,
                    read=False,
                )
                assert c.reader is not None and c.writer is not None
                c.send(subscribe_packet(1, [("soak/flood/#", qos)], version))
                async with asyncio.timeout(10):
                    while (await read_packet(c.reader))[0] >> 4 != 9:  # until SUBACK
                        pass
                cast(asyncio.Transport, c.writer.transport).pause_reading()
            except ERRORS as exc:
                self.nonreaders.append({"variant": variant, "error": self.error_name(exc)})
                await c.abort()
                await asyncio.sleep(2)
                continue
            hold = self.deadline - time.time() - 2
            if variant in ("QoS 0 v3.1.1", "QoS 1 v5 persistent"):
                hold = min(self.rng.uniform(60, 120), hold)
            closed_after = None
            end = time.time() + hold
            while time.time() < end:
                await asyncio.sleep(1)
                if tcp_state(c.writer) == TCP_CLOSE_WAIT or c.closed.is_set():
                    closed_after = round(time.time() - t, 1)
                    break
            queued = unread_bytes(c.writer)
            self.nonreaders.append(
                {
                    "variant": variant,
                    "held": round(time.time() - t, 1),
                    "closed_by_broker_after": closed_after,
                    "unread_bytes": queued,
                }
            )
            await c.abort()
            await asyncio.sleep(self.rng.uniform(1, 3))

    # ------------------------------------------------------------------ run
    async def run(self) -> dict[str, Any]:
        n_bad = self.cfg["misbehaving"]
        tasks = [asyncio.create_task(self.slot(i)) for i in range(self.cfg["clients"])]
        tasks.append(asyncio.create_task(self.flooder()))
        for k in range(n_bad):
            tasks.append(asyncio.create_task(self.worker("garbage", k, self.garbage)))
            tasks.append(asyncio.create_task(self.worker("stall", k, self.stall)))
            tasks.append(asyncio.create_task(self.worker("tls-stall", k, self.tls_stall)))
            tasks.append(asyncio.create_task(self.nonreader(k)))
        reporter = asyncio.create_task(self.report())
        done, pending = await asyncio.wait(tasks, timeout=self.deadline - time.time() + 45)
        for task in pending:
            task.cancel()
        reporter.cancel()
        crashed = [repr(t.exception()) for t in done if not t.cancelled() and t.exception()]
        return {
            "stats": self.stats.as_json(),
            "close_reasons": dict(self.close_reasons),
            "connect_errors": dict(self.connect_errors),
            "misbehaving": self.misbehaving,
            "nonreaders": self.nonreaders,
            "max_online": self.max_online,
            "tasks_still_running_at_end": len(pending),
            "crashed_tasks": crashed[:20],
        }

    async def report(self) -> None:
        while True:
            await asyncio.sleep(30)
            t = self.stats.total
            log(
                "churn",
                f"online {self.online}, connected {t['connected_tcp'] + t['connected_tls']}, "
                f"failed {t['connect_failed']}, published {t['published_q0'] + t['published_q1']},"
                f" received {t['received_q0'] + t['received_q1']}, closed by broker "
                f"{t['closed_by_broker']}, misbehaving runs {len(self.misbehaving)}",
            )


def tcp_state(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    try:
        return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0])
    except (OSError, AttributeError, TypeError, IndexError):
        return None


def unread_bytes(writer: asyncio.StreamWriter) -> int | None:
    """Bytes the broker sent that sit unread in our socket's receive queue (FIONREAD)."""
    sock = writer.get_extra_info("socket")
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
        return int(struct.unpack("i", raw)[0])
    except (OSError, AttributeError, ValueError):
        return None


# =========================================================================== probe


async def probe(cfg: Config) -> dict[str, Any]:
    """QoS 0 to itself every 100 ms: (send offset since t0, round trip in ms or None, how
    late the process woke to send it in ms, sequence number, send time on CLOCK_MONOTONIC).
    The last two let the report match each probe with the instrumented broker's notes of
    when it read the PUBLISH and wrote it back (the clock is the machine's, shared by every
    process)."""
    deadline = cfg["t0"] + cfg["duration"]
    topic = "soak/probe/rtt"
    sent: dict[int, float] = {}
    rtts: dict[int, float] = {}
    lag: list[float] = []
    reconnects = 0
    errors: collections.Counter[str] = collections.Counter()

    def on_message(t: str, payload: bytes, qos: int, dup: bool) -> None:
        now = time.monotonic()
        (seq,) = struct.unpack_from("!Q", payload)
        if seq in sent and seq not in rtts:
            rtts[seq] = (now - sent[seq]) * 1000

    async def connect() -> Client:
        c = Client(5, on_message)
        await c.connect(cfg["host"], cfg["tcp_port"], "soak-probe", keepalive=30, ping=True)
        await c.subscribe([(topic, 0)])
        return c

    c = await connect()
    await sleep_until(cfg["t0"])
    seq, start_wall, start = 0, time.time(), time.monotonic()
    offsets: dict[int, float] = {}
    woke: dict[int, float] = {}  # how late this process woke to send it (ms)
    while time.time() < deadline:
        due = start + seq * 0.1
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        lag.append(late := max(0.0, (time.monotonic() - due) * 1000))
        woke[seq] = late
        if c.closed.is_set():
            errors[f"closed: {c.close_reason}"] += 1
            reconnects += 1
            try:
                c = await connect()
            except ERRORS as exc:
                errors[f"reconnect: {type(exc).__name__}"] += 1
                seq += 1
                continue
        sent[seq] = time.monotonic()
        offsets[seq] = start_wall - cfg["t0"] + seq * 0.1
        try:
            await c.publish(topic, struct.pack("!Q", seq) + b"p" * 24, 0)
        except ERRORS as exc:
            errors[f"publish: {type(exc).__name__}"] += 1
        seq += 1
    await asyncio.sleep(2)
    await c.disconnect()
    samples = [
        [
            round(offsets[s], 3),
            round(rtts[s], 3) if s in rtts else None,
            round(woke[s], 3),
            s,
            round(sent[s], 6),
        ]
        for s in sent
    ]
    lag.sort()
    return {
        "samples": samples,
        "reconnects": reconnects,
        "errors": dict(errors),
        "probe_loop_lag_ms": {
            "p50": round(lag[len(lag) // 2], 3) if lag else None,
            "p99": round(lag[int(len(lag) * 0.99)], 3) if lag else None,
            "max": round(lag[-1], 3) if lag else None,
        },
    }


# =========================================================================== wb (QoS 1)


class Subscriber:
    """A persistent QoS 1 subscriber that disconnects and comes back now and then."""

    def __init__(self, cfg: Config, version: int, rng: random.Random) -> None:
        self.cfg, self.version, self.rng = cfg, version, rng
        self.cid = f"soak-wb-sub-v{version}"
        self.received: set[int] = set()
        self.duplicates = 0
        self.reconnects = 0
        self.session_lost = 0
        self.unexpected_closes: collections.Counter[str] = collections.Counter()
        self.client: Client | None = None

    def on_message(self, topic: str, payload: bytes, qos: int, dup: bool) -> None:
        seq = int(payload.split(b" ", 1)[0])
        if seq in self.received:
            self.duplicates += 1
        self.received.add(seq)

    async def connect(self, first: bool = False) -> None:
        c = Client(self.version, self.on_message)
        await c.connect(
            self.cfg["host"],
            self.cfg["tcp_port"],
            self.cid,
            clean=False,
            keepalive=20,
            session_expiry=3600 if self.version == 5 else None,
            ping=True,
        )
        if first:
            code = await c.subscribe([("soak/wb/seq", 1)])
            if code >= 0x80:
                raise MqttError(f"SUBACK {code:#04x}")
        elif not c.session_present:
            self.session_lost += 1
            await c.subscribe([("soak/wb/seq", 1)])
        self.client = c

    async def run(self, deadline: float) -> None:
        for attempt in range(10):
            try:
                await self.connect(first=True)
                break
            except ERRORS as exc:
                self.unexpected_closes[f"first connect failed: {type(exc).__name__}"] += 1
                await asyncio.sleep(1 + attempt)
        else:
            return
        while time.time() < deadline:
            next_break = time.time() + self.rng.uniform(45, 90)
            assert self.client is not None
            if await wait_closed(self.client, min(next_break, deadline) - time.time()):
                self.unexpected_closes[self.client.close_reason] += 1
            elif time.time() >= deadline:
                break
            elif self.rng.random() < 0.5:
                await self.client.disconnect()
            else:
                await self.client.abort(rst=True)
            await asyncio.sleep(self.rng.uniform(1, 5))
            for attempt in range(10):
                try:
                    await self.connect()
                    self.reconnects += 1
                    break
                except ERRORS as exc:
                    self.unexpected_closes[f"reconnect failed: {type(exc).__name__}"] += 1
                    await asyncio.sleep(1 + attempt)

    async def ensure_connected(self) -> None:
        if self.client is None or self.client.closed.is_set():
            with contextlib.suppress(*ERRORS):
                await self.connect()


async def wb(cfg: Config) -> dict[str, Any]:
    deadline = cfg["t0"] + cfg["duration"]
    rng = random.Random(cfg["seed"] + 1)
    subs = [Subscriber(cfg, 5, rng), Subscriber(cfg, 4, rng)]
    sub_tasks = [asyncio.create_task(s.run(deadline)) for s in subs]
    await asyncio.sleep(1)  # both subscriptions in place before the first number

    acked: set[int] = set()
    codes: collections.Counter[str] = collections.Counter()
    pub_errors: collections.Counter[str] = collections.Counter()
    window = asyncio.Semaphore(10)
    unacked: set[int] = set()
    pub = Client(5)
    await pub.connect(cfg["host"], cfg["tcp_port"], "soak-wb-pub", keepalive=20, ping=True)
    inflight: set[asyncio.Task[None]] = set()

    async def send(c: Client, seq: int) -> None:
        try:
            code = await c.publish("soak/wb/seq", b"%d " % seq + b"w" * 64, 1, timeout=30)
            codes[f"{code:#04x}"] += 1
            if code < 0x80:
                acked.add(seq)
                unacked.discard(seq)
        except ERRORS as exc:
            pub_errors[type(exc).__name__] += 1
        finally:
            window.release()

    seq = 0
    t = time.time()
    while time.time() < deadline:
        t += 1 / cfg["wb_rate"]
        await sleep_until(t)
        if pub.closed.is_set():
            pub_errors[f"publisher closed: {pub.close_reason}"] += 1
            pub = Client(5)
            try:
                await pub.connect(
                    cfg["host"], cfg["tcp_port"], "soak-wb-pub", keepalive=20, ping=True
                )
            except ERRORS:
                await asyncio.sleep(1)
                continue
            for old in sorted(unacked):  # numbers whose PUBACK never came: send them again
                await window.acquire()
                task = asyncio.create_task(send(pub, old))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
        await window.acquire()
        unacked.add(seq)
        task = asyncio.create_task(send(pub, seq))
        inflight.add(task)
        task.add_done_callback(inflight.discard)
        seq += 1
    if inflight:
        await asyncio.wait(inflight, timeout=30)
    await pub.disconnect()
    await asyncio.wait(sub_tasks, timeout=60)
    # Drain: both subscribers online until they hold every acknowledged number (≤ 30 s).
    drain_end = time.time() + 30
    while time.time() < drain_end:
        for s in subs:
            await s.ensure_connected()
        if all(acked <= s.received for s in subs):
            break
        await asyncio.sleep(0.5)
    result: dict[str, Any] = {
        "sent": seq,
        "acked": len(acked),
        "puback_codes": dict(codes),
        "publisher_errors": dict(pub_errors),
        "subscribers": {},
    }
    for s in subs:
        missing = sorted(acked - s.received)
        result["subscribers"][s.cid] = {
            "received": len(s.received & acked),
            "received_total": len(s.received),
            "missing": len(missing),
            "missing_list": missing[:200],
            "duplicates": s.duplicates,
            "reconnects": s.reconnects,
            "session_lost": s.session_lost,
            "unexpected_closes": dict(s.unexpected_closes),
        }
        if s.client is not None:
            await s.client.disconnect()
    return result


# =========================================================================== main


async def amain(role: str, cfg: Config) -> dict[str, Any]:
    if role == "churn":
        return await Churn(cfg).run()
    if role == "probe":
        return await probe(cfg)
    if role == "wb":
        return await wb(cfg)
    raise SystemExit(f"unknown role {role}")


def main() -> None:
    role, cfg = sys.argv[1], json.loads(sys.argv[2])
    try:
        import uvloop

        runner: Callable[[Coroutine[Any, Any, dict[str, Any]]], dict[str, Any]] = uvloop.run
    except ImportError:
        runner = asyncio.run
    t = time.time()
    result = runner(amain(role, cfg))
    result["role"] = role
    result["wall_secs"] = round(time.time() - t, 1)
    out = Path(cfg["out"]) / f"{role}.json"
    out.write_text(json.dumps(result))
    log(role, f"done in {result['wall_secs']} s")


if __name__ == "__main__":
    main()
