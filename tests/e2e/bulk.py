"""Bulk MQTT clients for end-to-end tests that move tens of thousands of messages.

paho is too slow to push 20,000 QoS 1/2 messages in a few seconds and hides the packet
ids a crash test needs, so these clients speak raw MQTT (encoders and decoder from
``rawmqtt``, independent of the broker's codec) over a blocking socket with one reader
thread:

* :class:`BulkPublisher` pipelines PUBLISH packets under a window of unacknowledged
  ones, records which were acknowledged (PUBACK, or PUBREC for QoS 2), answers PUBREC
  with PUBREL, and can resume a persistent session after a broker restart by resending
  what was unfinished (PUBLISH with DUP, or PUBREL) as MQTT requires [MQTT-4.4.0-1].
* :class:`BulkSubscriber` acknowledges every PUBLISH (the whole QoS 2 flow) and
  collects them.

Every wait has a timeout; nothing sleeps.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass

from . import rawmqtt as rm

SENT = 1  # PUBLISH sent, PUBACK/PUBREC awaited
RELEASED = 2  # QoS 2: PUBREL sent, PUBCOMP awaited


class _Conn:
    """A socket with a reader thread that hands each decoded packet to a callback."""

    def __init__(self, host: str, port: int, version: int, on_packet) -> None:
        self.version = version
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(None)
        self._send_lock = threading.Lock()
        self._on_packet = on_packet
        self.closed = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True, name="bulk-reader")

    def start(self) -> None:
        self._thread.start()

    def send(self, data: bytes) -> bool:
        try:
            with self._send_lock:
                self.sock.sendall(data)
        except OSError:
            self.closed.set()
            return False
        return True

    def _read(self) -> None:
        buf = bytearray()
        try:
            while True:
                try:
                    chunk = self.sock.recv(1 << 16)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                pos = 0
                end = len(buf)
                while end - pos >= 2:
                    length = 0
                    shift = 0
                    i = pos + 1
                    while i < end:
                        byte = buf[i]
                        length |= (byte & 0x7F) << shift
                        shift += 7
                        i += 1
                        if not byte & 0x80:
                            break
                    else:
                        break
                    if i + length > end:
                        break
                    self._on_packet(rm.decode(buf[pos], bytes(buf[i : i + length]), self.version))
                    pos = i + length
                del buf[:pos]
        finally:
            self.closed.set()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()
        self._thread.join(timeout=5)


def _connack_of(conn_packets: list[rm.Packet], cond: threading.Condition, timeout: float):
    deadline = time.monotonic() + timeout
    with cond:
        while not conn_packets:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("no CONNACK")
            cond.wait(remaining)
        return conn_packets[0]


def _connect_packet(client_id: str, version: int, clean: bool, expiry: int) -> bytes:
    properties = [(rm.SESSION_EXPIRY_INTERVAL, expiry)] if version == 5 and expiry else None
    return rm.connect(client_id, version=version, clean=clean, properties=properties)


class BulkPublisher:
    """Publishes ``payload(i)`` for i in 0..count-1 to one topic, pipelined."""

    def __init__(
        self,
        client_id: str,
        version: int,
        qos: int,
        *,
        clean: bool = True,
        expiry: int = 0,
        window: int = 500,
    ) -> None:
        self.client_id = client_id
        self.version = version
        self.qos = qos
        self.clean = clean
        self.expiry = expiry
        self.window = window
        self.cond = threading.Condition()
        self.inflight: dict[int, tuple[int, int]] = {}  # packet id -> (index, SENT/RELEASED)
        self.acked: set[int] = set()  # indexes acknowledged (PUBACK / PUBREC)
        self.completed: set[int] = set()  # PUBACK / PUBCOMP received
        self.started: set[int] = set()  # indexes whose PUBLISH was written at least once
        self._connacks: list[rm.Packet] = []
        self._conn: _Conn | None = None
        self._thread: threading.Thread | None = None

    # -- connection
    def connect(self, host: str, port: int, clean: bool | None = None) -> rm.Packet:
        self._connacks = []
        conn = _Conn(host, port, self.version, self._on_packet)
        self._conn = conn
        conn.start()
        clean = self.clean if clean is None else clean
        conn.send(_connect_packet(self.client_id, self.version, clean, self.expiry))
        connack = _connack_of(self._connacks, self.cond, 10)
        assert connack.reason == 0, connack
        return connack

    def _on_packet(self, pkt: rm.Packet) -> None:
        with self.cond:
            if pkt.type == rm.CONNACK:
                self._connacks.append(pkt)
            elif pkt.type == rm.PUBACK:
                entry = self.inflight.pop(pkt.packet_id, None)
                if entry is not None:
                    self.acked.add(entry[0])
                    self.completed.add(entry[0])
            elif pkt.type == rm.PUBREC:
                entry = self.inflight.get(pkt.packet_id)
                if entry is not None:
                    self.acked.add(entry[0])
                    self.inflight[pkt.packet_id] = (entry[0], RELEASED)
                    assert self._conn is not None
                    self._conn.send(rm.pubrel(pkt.packet_id, self.version))
            elif pkt.type == rm.PUBCOMP:
                entry = self.inflight.pop(pkt.packet_id, None)
                if entry is not None:
                    self.completed.add(entry[0])
            self.cond.notify_all()

    # -- publishing
    def publish_in_background(self, topic: str, count: int) -> None:
        self._thread = threading.Thread(
            target=self._publish_all, args=(topic, count), daemon=True, name="bulk-publisher"
        )
        self._thread.start()

    def _publish_all(self, topic: str, count: int) -> None:
        conn = self._conn
        assert conn is not None
        next_pid = 1
        batch: list[bytes] = []
        for index in range(count):
            with self.cond:
                full = len(self.inflight) >= self.window
            if full and batch:  # write what is batched before waiting for acks
                if not conn.send(b"".join(batch)):
                    return
                batch = []
            with self.cond:
                while len(self.inflight) >= self.window and not conn.closed.is_set():
                    self.cond.wait(1.0)
                if conn.closed.is_set():
                    return
                while next_pid in self.inflight:
                    next_pid = next_pid % 65535 + 1
                pid = next_pid
                next_pid = next_pid % 65535 + 1
                self.inflight[pid] = (index, SENT)
                self.started.add(index)
            batch.append(
                rm.publish(topic, payload(index), qos=self.qos, packet_id=pid, version=self.version)
            )
            if len(batch) >= 64:
                if not conn.send(b"".join(batch)):
                    return
                batch = []
        if batch:
            conn.send(b"".join(batch))

    def wait_acked(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.acked) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"only {len(self.acked)} of {count} acknowledged")
                self.cond.wait(remaining)

    def wait_gone(self, timeout: float = 10.0) -> None:
        """After the broker died: wait for the socket to close and the writer to stop."""
        assert self._conn is not None
        assert self._conn.closed.wait(timeout), "publisher connection still open"
        if self._thread is not None:
            self._thread.join(timeout)
            assert not self._thread.is_alive()
        self._conn.close()

    def resume(self, host: str, port: int, topic: str, timeout: float = 30.0) -> rm.Packet:
        """Reconnect the session and finish every unfinished exchange [MQTT-4.4.0-1]."""
        connack = self.connect(host, port, clean=False)
        assert self._conn is not None
        with self.cond:
            pending = sorted(self.inflight.items())
        out = []
        for pid, (index, stage) in pending:
            if stage == RELEASED:
                out.append(rm.pubrel(pid, self.version))
            else:
                out.append(
                    rm.publish(
                        topic,
                        payload(index),
                        qos=self.qos,
                        packet_id=pid,
                        dup=True,
                        version=self.version,
                    )
                )
        if out:
            self._conn.send(b"".join(out))
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.inflight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{len(self.inflight)} exchanges left unfinished")
                self.cond.wait(remaining)
        return connack

    def close(self) -> None:
        if self._conn is not None:
            if not self._conn.closed.is_set():
                self._conn.send(rm.disconnect(self.version))
            self._conn.close()
        if self._thread is not None:
            self._thread.join(timeout=5)


@dataclass
class Received:
    topic: str
    payload: bytes
    qos: int
    dup: bool
    packet_id: int | None


class BulkSubscriber:
    """A session that acknowledges everything and collects what it receives."""

    def __init__(self, client_id: str, version: int, expiry: int = 3600) -> None:
        self.client_id = client_id
        self.version = version
        self.expiry = expiry
        self.cond = threading.Condition()
        self.messages: list[Received] = []
        self.pubrels: list[int] = []
        self._packets: list[rm.Packet] = []
        self._connacks: list[rm.Packet] = []
        self._conn: _Conn | None = None
        self.ack = True

    def connect(self, host: str, port: int, clean: bool = False) -> rm.Packet:
        self._connacks = []
        self._conn = _Conn(host, port, self.version, self._on_packet)
        self._conn.start()
        self._conn.send(_connect_packet(self.client_id, self.version, clean, self.expiry))
        connack = _connack_of(self._connacks, self.cond, 10)
        assert connack.reason == 0, connack
        return connack

    def subscribe(self, topic: str, qos: int, timeout: float = 10.0) -> None:
        assert self._conn is not None
        self._conn.send(rm.subscribe(1, [(topic, qos)], version=self.version))
        self.wait_for(lambda: any(p.type == rm.SUBACK for p in self._packets), timeout)

    def _on_packet(self, pkt: rm.Packet) -> None:
        conn = self._conn
        assert conn is not None
        with self.cond:
            if pkt.type == rm.CONNACK:
                self._connacks.append(pkt)
            elif pkt.type == rm.PUBLISH:
                assert pkt.topic is not None and pkt.payload is not None
                self.messages.append(
                    Received(pkt.topic.decode(), pkt.payload, pkt.qos, pkt.dup, pkt.packet_id)
                )
                if self.ack and pkt.qos == 1:
                    conn.send(rm.puback(pkt.packet_id or 0, self.version))
                elif self.ack and pkt.qos == 2:
                    conn.send(rm.pubrec(pkt.packet_id or 0, self.version))
            elif pkt.type == rm.PUBREL:
                self.pubrels.append(pkt.packet_id or 0)
                if self.ack:
                    conn.send(rm.pubcomp(pkt.packet_id or 0, self.version))
            else:
                self._packets.append(pkt)
            self.cond.notify_all()

    def wait_for(self, predicate, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"{self.client_id}: condition not met within {timeout}s "
                        f"({len(self.messages)} messages)"
                    )
                self.cond.wait(remaining)

    def until_marker(self, marker_topic: str, timeout: float = 30.0) -> list[Received]:
        """Messages received before the first one on ``marker_topic``."""
        self.wait_for(lambda: any(m.topic == marker_topic for m in self.messages), timeout)
        with self.cond:
            index = next(i for i, m in enumerate(self.messages) if m.topic == marker_topic)
            return self.messages[:index]

    def abort(self) -> None:
        """Drop the connection without DISCONNECT."""
        if self._conn is not None:
            self._conn.close()

    def close(self) -> None:
        if self._conn is not None:
            if not self._conn.closed.is_set():
                self._conn.send(rm.disconnect(self.version))
            self._conn.close()


def payload(index: int) -> bytes:
    return struct.pack(">I", index) + b"-bulk-payload"


def index_of(data: bytes) -> int:
    return struct.unpack(">I", data[:4])[0]
