"""Per-listener connection limits end to end: LISTENER_<TYPE>_MAX_CONNECTIONS,
LISTENER_<TYPE>_NEW_CONNECTIONS_PER_IP_PER_SEC and LISTENER_<SSL|WSS>_MAX_HANDSHAKES_IN_PROGRESS.

A connection over a limit is closed by the broker before any MQTT exchange (no CONNACK,
no TLS handshake, no WebSocket upgrade) and the broker logs why; clients already connected
keep working, and once a connection goes a new one is admitted again.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from . import rawmqtt as rm
from .conftest import WS_ENV
from .helpers import BrokerProcess, ClientPool, uid, wait_until_elapsed
from .pki import Pki, client_context, mqtt_over_tls, ssl_port, tls_env, tls_raw, wss_env
from .rawmqtt import RawClient
from .wsclient import Upgrade, WsConnection, WsRawClient

DEADLINE = 10.0  # seconds any polled-for state may take to appear


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def sockets() -> Iterator[list[Any]]:
    """Raw / TLS / WebSocket clients of a test, closed at teardown."""
    opened: list[Any] = []
    yield opened
    for item in opened:
        with contextlib.suppress(OSError):
            item.close()


def refused_line(listener: str, local_port: int) -> str:
    """Regex of the broker's line for a refused connection from 127.0.0.1:``local_port``."""
    return rf"listener {listener} refused a connection from 127\.0\.0\.1:{local_port}: "


def self_roundtrip(client: RawClient, topic: str, payload: bytes, packet_id: int = 1) -> None:
    """``client`` (subscribed to ``topic`` at QoS 0) publishes and receives its own message."""
    client.publish(topic, payload)
    pkt = client.expect(rm.PUBLISH)
    assert (pkt.topic, pkt.payload) == (topic.encode(), payload)


def raw_connected(
    sockets: list[Any], port: int, topic: str | None = None, client_id: str | None = None
) -> RawClient:
    """A raw MQTT 3.1.1 client on 127.0.0.1:``port``, connected (and subscribed to ``topic``)."""
    client = RawClient("127.0.0.1", port)
    sockets.append(client)
    client.connect(client_id or f"lim-{uid()}")
    if topic is not None:
        assert client.subscribe([(topic, 0)]) == [0]
    return client


def closed_without_connack(client: RawClient) -> bool:
    """Send CONNECT; True if the broker closed the connection without answering."""
    client.try_send(rm.connect(f"lim-{uid()}"))
    try:
        return client.read_until_closed(timeout=5.0) == []
    except AssertionError:  # still open: it was admitted
        return False


def poll_until(attempt: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    """Call ``attempt`` until it returns something truthy; AssertionError at the deadline.
    For states the broker does not log (each attempt blocks on the network)."""
    deadline = time.monotonic() + timeout
    while True:
        result = attempt()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")


def disconnected(broker: BrokerProcess, client_id: str, since: int) -> None:
    """Wait for the broker's line saying ``client_id``'s connection is gone; its place in
    the listener's count is given back in the same step."""
    broker.wait_for_log(rf"client {re.escape(client_id)} disconnected from ", since=since)


def tcp_attempt(sockets: list[Any], port: int) -> RawClient | None:
    """One connection attempt on the TCP listener: the client if it got its CONNACK."""
    client = RawClient("127.0.0.1", port)
    sockets.append(client)
    client.try_send(rm.connect(f"lim-{uid()}"))
    try:
        pkt = client.recv(5.0)
    except OSError:
        pkt = None
    if pkt is None:
        client.close()
        return None
    assert pkt.type == rm.CONNACK and pkt.reason == 0, pkt
    return client


# --------------------------------------------------------------------------- TCP


def test_tcp_max_connections(start_broker: Callable[..., BrokerProcess], sockets: list[Any]):
    broker = start_broker(LISTENER_TCP_MAX_CONNECTIONS=3)
    broker.wait_for_log(r"listener tcp: at most 3 connection\(s\)")
    topic = f"limits/{uid()}"
    first = raw_connected(sockets, broker.port, topic)
    second = raw_connected(sockets, broker.port, topic)
    third_id = f"lim-{uid()}"
    third = raw_connected(sockets, broker.port, client_id=third_id)

    mark = broker.log_mark()
    fourth = RawClient("127.0.0.1", broker.port)
    sockets.append(fourth)
    assert closed_without_connack(fourth), "the 4th connection was answered"
    local_port = fourth.sock.getsockname()[1]
    line = broker.wait_for_log(refused_line("tcp", local_port), since=mark).string
    assert "3 connection(s) open, the most LISTENER_TCP_MAX_CONNECTIONS=3 allows" in line
    assert not any("connected from" in ln for ln in broker.logs()[mark:])

    # the connected clients are unaffected
    third.publish(topic, b"after the refusal")
    for sub in (first, second):
        pkt = sub.expect(rm.PUBLISH)
        assert (pkt.topic, pkt.payload) == (topic.encode(), b"after the refusal")

    # one goes: a new connection is admitted again
    mark = broker.log_mark()
    third.disconnect()
    assert third.read_until_closed() == []
    disconnected(broker, third_id, mark)
    newcomer = tcp_attempt(sockets, broker.port)
    assert newcomer is not None, "refused after a connection went"
    assert newcomer.subscribe([(topic, 0)]) == [0]
    first.publish(topic, b"full again")
    for sub in (first, second, newcomer):
        assert sub.expect(rm.PUBLISH).payload == b"full again"
    # and the listener is full again
    extra = RawClient("127.0.0.1", broker.port)
    sockets.append(extra)
    assert closed_without_connack(extra)


def test_tcp_connections_before_connect_count(
    start_broker: Callable[..., BrokerProcess], sockets: list[Any]
):
    """A connection that has not sent CONNECT yet holds its place; closing it frees it."""
    broker = start_broker(LISTENER_TCP_MAX_CONNECTIONS=2)
    topic = f"limits/{uid()}"
    client = raw_connected(sockets, broker.port, topic)
    silent = socket.create_connection(("127.0.0.1", broker.port))
    sockets.append(silent)
    refused = RawClient("127.0.0.1", broker.port)
    sockets.append(refused)
    assert closed_without_connack(refused)
    self_roundtrip(client, topic, b"still here")
    silent.close()
    poll_until(lambda: tcp_attempt(sockets, broker.port), "a connection after the silent one")


def test_tcp_new_connections_per_ip_per_sec(
    start_broker: Callable[..., BrokerProcess], sockets: list[Any]
):
    broker = start_broker(LISTENER_TCP_NEW_CONNECTIONS_PER_IP_PER_SEC=5)
    broker.wait_for_log(r"listener tcp: at most 5 new connection\(s\) per second per source")
    topic = f"limits/{uid()}"
    subscriber = raw_connected(sockets, broker.port, topic)
    publisher = raw_connected(sockets, broker.port)

    mark = broker.log_mark()
    storm = []
    for _ in range(15):  # a tight loop: far more than 5 in a second from 127.0.0.1
        client = RawClient("127.0.0.1", broker.port)
        sockets.append(client)
        storm.append(client)
        client.try_send(rm.connect(f"storm-{uid()}"))
    answered = []
    for client in storm:
        try:
            pkt = client.recv(5.0)
        except OSError:
            pkt = None
        answered.append(pkt is not None and pkt.type == rm.CONNACK and pkt.reason == 0)
    answered_at = time.monotonic()  # every admission of the storm happened before this
    refused = answered.count(False)
    assert refused >= 1, "no connection of the storm was refused"
    assert answered.count(True) >= 1, "every connection of the storm was refused"
    line = broker.wait_for_log(r"listener tcp refused a connection from 127\.0\.0\.1:", since=mark)
    assert (
        "more than 5 new connection(s) per second from 127.0.0.1 "
        "(LISTENER_TCP_NEW_CONNECTIONS_PER_IP_PER_SEC=5)" in line.string
    )

    # clients connected before the storm are unaffected
    publisher.publish(topic, b"through the storm")
    assert subscriber.expect(rm.PUBLISH).payload == b"through the storm"
    # and the address may connect again once its rate allows (a deadline is what is tested)
    wait_until_elapsed(answered_at, 1.0)
    assert tcp_attempt(sockets, broker.port) is not None, "still refused a second later"


# --------------------------------------------------------------------------- TLS


@pytest.fixture
def tls_ctx(pki: Pki) -> ssl.SSLContext:
    return client_context(pki.ca_pem)


def tls_connected(
    sockets: list[Any],
    port: int,
    ctx: ssl.SSLContext,
    topic: str | None = None,
    client_id: str | None = None,
) -> RawClient:
    client = tls_raw(port, ctx)
    sockets.append(client)
    client.connect(client_id or f"lim-tls-{uid()}")
    if topic is not None:
        assert client.subscribe([(topic, 0)]) == [0]
    return client


def tls_attempt(sockets: list[Any], port: int, ctx: ssl.SSLContext) -> RawClient | None:
    """One TLS + CONNECT attempt: the client if it got its CONNACK, else None."""
    try:
        client = tls_raw(port, ctx)
    except (OSError, ssl.SSLError):
        return None
    sockets.append(client)
    client.try_send(rm.connect(f"lim-tls-{uid()}"))
    try:
        pkt = client.recv(5.0)
    except (OSError, ssl.SSLError):
        pkt = None
    if pkt is None:
        client.close()
        return None
    assert pkt.type == rm.CONNACK and pkt.reason == 0, pkt
    return client


def test_ssl_max_connections_refuses_before_the_handshake(
    start_broker: Callable[..., BrokerProcess],
    pki: Pki,
    tls_ctx: ssl.SSLContext,
    sockets: list[Any],
):
    broker = start_broker(**tls_env(pki, LISTENER_SSL_MAX_CONNECTIONS=2))
    port = ssl_port(broker)
    topic = f"limits/tls/{uid()}"
    client_id = f"lim-tls-{uid()}"
    client = tls_connected(sockets, port, tls_ctx, topic, client_id)
    # a connection still in its TLS handshake counts
    stalled = socket.create_connection(("127.0.0.1", port))
    sockets.append(stalled)

    mark = broker.log_mark()
    attempt = mqtt_over_tls(port, tls_ctx)
    assert not attempt.accepted and not attempt.handshake_done, attempt
    line = broker.wait_for_log(refused_line("ssl", attempt.local_port), since=mark).string
    assert "2 connection(s) open, the most LISTENER_SSL_MAX_CONNECTIONS=2 allows" in line
    # refused before the handshake: no handshake failure is reported for it
    handshake = re.compile(rf"TLS handshake from 127\.0\.0\.1:{attempt.local_port}\b")
    assert not any(handshake.search(ln) for ln in broker.logs()[mark:])

    self_roundtrip(client, topic, b"unaffected")

    # the stalled handshake ends (the client goes): its place is free again
    stalled_port = stalled.getsockname()[1]
    stalled.close()
    broker.wait_for_log(rf"TLS handshake from 127\.0\.0\.1:{stalled_port} failed on ssl: ")
    newcomer = tls_attempt(sockets, port, tls_ctx)
    assert newcomer is not None, "refused after a handshake ended"
    # an MQTT connection that ends frees its place too
    mark = broker.log_mark()
    client.disconnect()
    assert client.read_until_closed() == []
    client.close()  # no TLS close_notify reply: the broker's side closes at once
    disconnected(broker, client_id, mark)
    assert tls_attempt(sockets, port, tls_ctx) is not None, "refused after a DISCONNECT"
    assert newcomer.subscribe([(topic, 0)]) == [0]
    self_roundtrip(newcomer, topic, b"still fine")


def test_ssl_handshakes_in_progress_are_bounded(
    start_broker: Callable[..., BrokerProcess],
    pki: Pki,
    tls_ctx: ssl.SSLContext,
    sockets: list[Any],
):
    """Connections that never send a ClientHello take every handshake slot until they time
    out; meanwhile connected clients are served, and a new client waits its turn."""
    broker = start_broker(
        **tls_env(pki, LISTENER_SSL_MAX_HANDSHAKES_IN_PROGRESS=2, TLS_HANDSHAKE_TIMEOUT_SEC=2)
    )
    port = ssl_port(broker)
    topic = f"limits/tls/{uid()}"
    client = tls_connected(sockets, port, tls_ctx, topic)

    mark = broker.log_mark()
    stalled = []
    for _ in range(2):
        sock = socket.create_connection(("127.0.0.1", port))
        sockets.append(sock)
        stalled.append(sock.getsockname()[1])
    broker.wait_for_log(
        r"listener ssl: all 2 TLS handshake slot\(s\) are busy "
        r"\(LISTENER_SSL_MAX_HANDSHAKES_IN_PROGRESS=2\)",
        since=mark,
    )
    # the connected client is served while every slot is taken
    self_roundtrip(client, topic, b"during the storm")

    # a new client waits in the accept queue until a stalled handshake times out
    newcomer_id = f"lim-tls-{uid()}"
    newcomer = RawClient("127.0.0.1", port, timeout=DEADLINE)
    sockets.append(newcomer)
    newcomer.sock = tls_ctx.wrap_socket(newcomer.sock, server_hostname="localhost")
    newcomer.connect(newcomer_id)
    broker.wait_for_log(rf"client {newcomer_id} connected from", since=mark)
    logs = broker.logs()[mark:]
    connected_at = next(i for i, ln in enumerate(logs) if f"client {newcomer_id} connected" in ln)
    timed_out = [
        i
        for i, ln in enumerate(logs)
        if re.search(
            r"TLS handshake from 127\.0\.0\.1:(\d+) failed on ssl: handshake timed out", ln
        )
        and int(re.findall(r"127\.0\.0\.1:(\d+)", ln)[0]) in stalled
    ]
    assert timed_out and min(timed_out) < connected_at, (
        "the new client connected before a handshake slot was free:\n" + "\n".join(logs)
    )
    assert newcomer.subscribe([(topic, 0)]) == [0]
    self_roundtrip(newcomer, topic, b"admitted")
    assert client.expect(rm.PUBLISH).payload == b"admitted"
    self_roundtrip(client, topic, b"still served")


# --------------------------------------------------------------------------- WebSocket


def ws_open(broker: BrokerProcess, tr: str, pki: Pki) -> WsConnection | None:
    """A WebSocket connection (TCP, plus TLS for wss), or None if the broker closed it."""
    ctx = ssl.create_default_context(cafile=str(pki.ca_pem)) if tr == "wss" else None
    try:
        return WsConnection("127.0.0.1", broker.ports[tr], ssl_context=ctx)
    except (OSError, ssl.SSLError):
        return None


def ws_refused(broker: BrokerProcess, tr: str, pki: Pki, sockets: list[Any]) -> bool:
    """True if a new WebSocket connection is closed before its upgrade is answered."""
    conn = ws_open(broker, tr, pki)
    if conn is None:
        return True
    sockets.append(conn)
    try:
        conn.upgrade(Upgrade())
    except (AssertionError, OSError, ssl.SSLError):
        return True
    return False


def ws_client(broker: BrokerProcess, tr: str, pki: Pki, sockets: list[Any]) -> WsRawClient:
    ctx = ssl.create_default_context(cafile=str(pki.ca_pem)) if tr == "wss" else None
    client = WsRawClient("127.0.0.1", broker.ports[tr], ssl_context=ctx)
    sockets.append(client)
    return client


@pytest.mark.parametrize("tr", ["ws", "wss"])
def test_websocket_max_connections(
    start_broker: Callable[..., BrokerProcess], pki: Pki, sockets: list[Any], tr: str
):
    prefix = f"LISTENER_{tr.upper()}"
    broker = start_broker(**WS_ENV, **wss_env(pki), **{f"{prefix}_MAX_CONNECTIONS": 2})
    topic = f"limits/{tr}/{uid()}"
    client = ws_client(broker, tr, pki, sockets)
    client.connect(f"lim-{tr}-{uid()}")
    assert client.subscribe([(topic, 0)]) == [0]
    pending = ws_open(broker, tr, pki)  # not upgraded yet: counts all the same
    assert pending is not None
    sockets.append(pending)

    mark = broker.log_mark()
    assert ws_refused(broker, tr, pki, sockets)
    line = broker.wait_for_log(rf"listener {tr} refused a connection from ", since=mark).string
    assert f"2 connection(s) open, the most {prefix}_MAX_CONNECTIONS=2 allows" in line
    self_roundtrip(client, topic, b"unaffected")

    # the other listeners have no limit
    other = raw_connected(sockets, broker.port)
    other.publish(topic, b"from tcp")
    assert client.expect(rm.PUBLISH).payload == b"from tcp"

    pending.close()
    poll_until(lambda: not ws_refused(broker, tr, pki, sockets), f"a {tr} connection")


def test_unlimited_listeners_log_no_limits(broker: BrokerProcess, clients: ClientPool):
    """With the defaults nothing is limited (and nothing is said about limits)."""
    assert not any(re.search(r"listener \w+: at most", ln) for ln in broker.logs())
    for _ in range(20):
        client = clients.raw(broker)
        client.connect(f"lim-{uid()}")
