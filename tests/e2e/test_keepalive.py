"""Keep alive enforcement and the CONNECT timeout."""

from __future__ import annotations

import socket
import time

import pytest

from . import rawmqtt as rm
from .helpers import V5, both_versions, roundtrip_ok, uid, wait_until_elapsed

#: Every scenario also runs over MQTT-over-WebSocket (ws) and WebSocket Secure (wss).
pytestmark = pytest.mark.transports


def _assert_only_keepalive_disconnect(packets, version):
    if version == V5:
        assert all(p.type == rm.DISCONNECT and p.reason == 0x8D for p in packets), packets
    else:
        assert packets == []


@both_versions
def test_silent_client_disconnected_after_one_and_a_half_keepalive(broker, clients, version):
    raw = clients.raw(broker, version)
    started = time.monotonic()
    raw.connect(f"ka-{uid()}", keepalive=1)
    packets = raw.read_until_closed(timeout=6)
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed <= 5.0, f"closed after {elapsed:.2f}s"
    _assert_only_keepalive_disconnect(packets, version)
    roundtrip_ok(clients, broker, version)


@both_versions
def test_pinging_client_stays_connected(broker, clients, version):
    raw = clients.raw(broker, version)
    started = time.monotonic()
    raw.connect(f"ping-{uid()}", keepalive=1)
    for i in range(1, 7):
        wait_until_elapsed(started, 0.5 * i)  # keep alive test: one PINGREQ per 0.5 s
        raw.send(rm.pingreq())
        assert raw.expect(rm.PINGRESP).body == b""
    # 3 s > 1.5 x keep alive: still connected and working
    topic = f"ka/{uid()}"
    assert raw.subscribe([(topic, 1)]) == [1]


def test_v5_server_keep_alive_is_enforced(start_broker, clients):
    broker = start_broker(MQTT_KEEP_ALIVE_MAX_KEEP_ALIVE_SEC=1)
    raw = clients.raw(broker, V5)
    started = time.monotonic()
    connack = raw.connect(f"ska-{uid()}", keepalive=60)
    assert connack.prop(rm.SERVER_KEEP_ALIVE) == 1
    packets = raw.read_until_closed(timeout=6)
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed <= 5.0, f"closed after {elapsed:.2f}s"
    _assert_only_keepalive_disconnect(packets, V5)


def test_socket_without_connect_is_closed_after_connect_timeout(start_broker, clients):
    broker = start_broker(MQTT_CONNECT_TIMEOUT_SEC=1)
    started = time.monotonic()
    sock = socket.create_connection((broker.host, broker.port), timeout=6)
    try:
        data = sock.recv(16)  # blocks until the broker closes (or the 6 s timeout)
    except ConnectionResetError:
        data = b""
    except TimeoutError:
        pytest.fail("a socket that never sent CONNECT was still open after 6 s")
    finally:
        sock.close()
    elapsed = time.monotonic() - started
    assert data == b""
    assert 0.9 <= elapsed <= 5.0, f"closed after {elapsed:.2f}s"
    roundtrip_ok(clients, broker)


def test_partial_connect_is_closed_after_connect_timeout(start_broker, clients):
    broker = start_broker(MQTT_CONNECT_TIMEOUT_SEC=1)
    raw = clients.raw(broker, 4)
    started = time.monotonic()
    raw.send(rm.connect(f"partial-{uid()}")[:5])  # never completed
    assert raw.read_until_closed(timeout=6) == []
    assert time.monotonic() - started <= 5.0
