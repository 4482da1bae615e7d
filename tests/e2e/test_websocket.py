"""MQTT over WebSocket (WS) and WebSocket Secure (WSS) end to end.

paho-mqtt's websockets transport (MQTT 3.1.1 and 5, one-way and two-way TLS) and a
hand-written WebSocket client (:mod:`tests.e2e.wsclient`) for everything a library would
not send: refused subprotocols, text frames, fragments, several packets in one frame,
oversize and unmasked frames, ping/close, HTTP errors, origins and proxy headers. The
MQTT scenarios of the core suite also run over WS and WSS (``pytest.mark.transports``).
"""

from __future__ import annotations

import re
import signal
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from . import rawmqtt as rm
from .conftest import WS_ENV
from .helpers import (
    V5,
    V311,
    BrokerProcess,
    ClientPool,
    both_versions,
    run_broker_expecting_exit,
    uid,
)
from .pki import Pki, replace_atomically, wss_env
from .wsclient import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    Upgrade,
    WsConnection,
    WsRawClient,
    encode_frame,
)

ws_and_wss = pytest.mark.parametrize("tr", ["ws", "wss"])
DEFAULT_UPGRADE = Upgrade()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def _shared(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    holder: dict[str, Any] = {"base": tmp_path_factory.mktemp("ws-shared"), "n": 0}
    yield holder
    if "broker" in holder:
        holder["broker"].stop()


@pytest.fixture
def wsb(_shared: dict[str, Any], pki: Pki) -> Iterator[BrokerProcess]:
    """A broker with the TCP, WS and WSS listeners at their default settings (and a 2 s
    CONNECT/upgrade timeout), shared by the tests of this module."""
    current: BrokerProcess | None = _shared.get("broker")
    if current is None or not current.alive():
        if current is not None:
            current.stop()
        _shared["n"] += 1
        env = {**WS_ENV, **wss_env(pki), "MQTT_CONNECT_TIMEOUT_SEC": 2}
        current = BrokerProcess(_shared["base"] / f"b{_shared['n']}", env).start()
        _shared["broker"] = current
    mark = current.log_mark()
    yield current
    print(f"broker log during the test ({current!r}):")  # shown only when the test fails
    print("\n".join(current.logs()[mark:][-200:]))
    if not current.alive():
        pytest.fail(f"the WebSocket broker died during the test\n{current.tail()}")


@pytest.fixture
def ws_broker(start_broker: Callable[..., BrokerProcess], pki: Pki) -> Callable[..., BrokerProcess]:
    """``ws_broker(**env)``: a broker of its own with the WS and WSS listeners."""

    def start(**env: Any) -> BrokerProcess:
        return start_broker(**{**WS_ENV, **wss_env(pki), **env})

    return start


def open_ws(broker: BrokerProcess, tr: str, pki: Pki, **kwargs: Any) -> WsConnection:
    ctx = ssl.create_default_context(cafile=str(pki.ca_pem)) if tr == "wss" else None
    return WsConnection("127.0.0.1", broker.ports[tr], ssl_context=ctx, **kwargs)


@pytest.fixture
def conns() -> Iterator[list[WsConnection]]:
    opened: list[WsConnection] = []
    yield opened
    for conn in opened:
        conn.close()


@pytest.fixture
def connect_ws(conns: list[WsConnection], pki: Pki) -> Callable[..., WsConnection]:
    """``connect_ws(broker, tr, upgrade=Upgrade(...))``: an upgraded (or refused)
    connection, closed at teardown; ``upgrade=None`` only opens the socket."""

    def make(broker: BrokerProcess, tr: str = "ws", upgrade: Upgrade | None = DEFAULT_UPGRADE):
        conn = open_ws(broker, tr, pki)
        conns.append(conn)
        if upgrade is not None:
            conn.upgrade(upgrade)
        return conn

    return make


def upgraded(
    connect_ws: Callable[..., WsConnection], broker: BrokerProcess, tr: str
) -> WsConnection:
    conn = connect_ws(broker, tr)
    assert conn.response is not None and conn.response.status == 101, conn.response
    return conn


def connect_line(broker: BrokerProcess, client_id: str, since: int = 0) -> str:
    return broker.wait_for_log(rf"client {re.escape(client_id)} connected from ", 10, since).string


# --------------------------------------------------------------------------- paho clients


@both_versions
def test_paho_over_ws_and_wss_exchanges_messages_with_tcp(wsb, clients: ClientPool, pki, version):
    """Subscribers on TCP, WS and WSS each get what publishers on every transport send."""
    topic = f"ws/{uid()}"
    subs = {
        tr: clients.connected(wsb, version, transport=tr, ca=pki.ca_pem)
        for tr in ("tcp", "ws", "wss")
    }
    for sub in subs.values():
        assert sub.subscribe(topic, 1) == [1]
    for tr in ("tcp", "ws", "wss"):
        pub = clients.connected(wsb, version, transport=tr, ca=pki.ca_pem)
        pub.publish(topic, f"from {tr}".encode(), qos=1)
    for tr, sub in subs.items():
        got = sorted(m.payload for m in sub.expect_messages(3))
        assert got == [b"from tcp", b"from ws", b"from wss"], tr
    line = connect_line(wsb, subs["wss"].client_id)
    assert "(wss, MQTT " in line


@ws_and_wss
def test_large_messages_cross_frames_both_ways(wsb, clients: ClientPool, pki, tr):
    """A 60 KB message arrives in many TCP reads; the broker's frame carries it whole."""
    topic = f"ws/big/{uid()}"
    sub = clients.connected(wsb, V5, transport=tr, ca=pki.ca_pem)
    sub.subscribe(topic, 1)
    pub = clients.connected(wsb, V311, transport=tr, ca=pki.ca_pem)
    payload = bytes(range(256)) * 235  # 60160 bytes
    pub.publish(topic, payload, qos=1)
    assert sub.expect_message().payload == payload


def test_mqtt5_client_gets_disconnect_on_shutdown_over_ws(ws_broker, clients: ClientPool, pki):
    broker = ws_broker()
    client = clients.connected(broker, V5, transport="ws")
    broker.stop()
    assert client.expect_disconnect().reason_code == 0x8B


# --------------------------------------------------------------------------- the upgrade


@ws_and_wss
@pytest.mark.parametrize(
    ("offered", "chosen"),
    [(("mqtt",), "mqtt"), (("mqttv3.1",), "mqttv3.1"), (("foo", "mqtt", "mqttv3.1"), "mqtt")],
)
def test_subprotocol_negotiated(wsb, connect_ws, tr, offered, chosen):
    conn = connect_ws(wsb, tr, Upgrade(subprotocols=offered))
    assert conn.response.status == 101
    assert conn.response.header("sec-websocket-protocol") == chosen


@ws_and_wss
@pytest.mark.parametrize("offered", [("foo", "mqttv5"), None], ids=["unknown", "none"])
def test_client_offering_no_supported_subprotocol_is_refused(wsb, connect_ws, tr, offered):
    mark = wsb.log_mark()
    conn = connect_ws(wsb, tr, Upgrade(subprotocols=offered))
    assert conn.response.status == 400
    assert b"no supported WebSocket subprotocol" in conn.response.body
    assert conn.frames_until_closed() == []
    shown = ", ".join(offered) if offered else "none"
    wsb.wait_for_log(
        rf"WebSocket upgrade from 127\.0\.0\.1:\d+ \({tr}\) refused with HTTP 400: no supported "
        rf"WebSocket subprotocol offered \(offered: {shown}; supported: mqttv3\.1, mqtt\)",
        since=mark,
    )


def test_configured_subprotocols_apply(ws_broker, connect_ws):
    broker = ws_broker(WS_NETTY_SUB_PROTOCOLS="mqtt")
    assert connect_ws(broker, "ws", Upgrade(subprotocols=("mqttv3.1",))).response.status == 400
    assert connect_ws(broker, "ws", Upgrade(subprotocols=("mqtt",))).response.status == 101
    assert connect_ws(broker, "wss", Upgrade(subprotocols=("mqttv3.1",))).response.status == 101


@pytest.mark.parametrize(
    ("upgrade", "status", "reason"),
    [
        (Upgrade(path="/"), 404, "path '/' is not the MQTT endpoint /mqtt"),
        (Upgrade(path="/mqtt/x"), 404, "is not the MQTT endpoint"),
        (Upgrade(websocket_headers=False), 426, "not a WebSocket upgrade request"),
        (Upgrade(method="POST"), 405, "method POST is not GET"),
        (Upgrade(version="8"), 426, "unsupported WebSocket version '8'"),
        (Upgrade(key="c2hvcnQ="), 400, "missing or invalid Sec-WebSocket-Key"),
    ],
    ids=["root-path", "sub-path", "plain-get", "post", "version-8", "bad-key"],
)
def test_non_websocket_requests_get_http_errors(wsb, connect_ws, upgrade, status, reason):
    mark = wsb.log_mark()
    conn = connect_ws(wsb, "ws", upgrade)
    assert conn.response.status == status
    assert reason.encode() in conn.response.body
    if status == 426 and upgrade.websocket_headers:
        assert conn.response.header("sec-websocket-version") == "13"
    assert conn.frames_until_closed() == []  # and the connection is closed
    wsb.wait_for_log(rf"\(ws\) refused with HTTP {status}: .*{re.escape(reason)}", since=mark)


def test_query_string_is_ignored_in_the_path(wsb, connect_ws):
    assert connect_ws(wsb, "ws", Upgrade(path="/mqtt?token=abc")).response.status == 101


@ws_and_wss
def test_plain_mqtt_on_a_websocket_port_is_refused_at_once(wsb, connect_ws, tr):
    mark = wsb.log_mark()
    conn = connect_ws(wsb, tr, upgrade=None)
    conn.send_raw(rm.connect(f"plain-{uid()}"))
    response = conn.read_response()
    assert response.status == 400
    wsb.wait_for_log(rf"\({tr}\) refused with HTTP 400: not an HTTP request", since=mark)


def test_upgrade_request_times_out(wsb, connect_ws):
    mark = wsb.log_mark()
    conn = connect_ws(wsb, "ws", upgrade=None)
    conn.send_raw(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n")  # ...and never the blank line
    assert conn.frames_until_closed(timeout=8) == []
    wsb.wait_for_log(r"\(ws\) closed: no upgrade request within 2s", since=mark)


def test_custom_path(ws_broker, connect_ws, clients: ClientPool, pki):
    broker = ws_broker(WS_PATH="/ws/mqtt", WSS_PATH="/secure")
    assert connect_ws(broker, "ws", Upgrade(path="/mqtt")).response.status == 404
    assert connect_ws(broker, "ws", Upgrade(path="/ws/mqtt")).response.status == 101
    assert connect_ws(broker, "wss", Upgrade(path="/secure")).response.status == 101
    client = clients.new(broker, V5, transport="ws")
    client.paho.ws_set_options(path="/ws/mqtt")
    client.connect()


# --------------------------------------------------------------------------- frames


@ws_and_wss
@both_versions
def test_packet_split_across_frames_and_reads_and_packets_sharing_a_frame(
    wsb, connect_ws, tr, version
):
    conn = upgraded(connect_ws, wsb, tr)
    raw = WsRawClient.attach(conn, version)
    connect = rm.connect(f"frag-{uid()}", version=version)
    # CONNECT in three fragments; the first frame's header arrives byte by byte
    first = encode_frame(BINARY, connect[:3], fin=False)
    for i in range(len(first)):
        conn.send_raw(first[i : i + 1])
    conn.send_frame(CONTINUATION, connect[3:7], fin=False)
    conn.send_frame(CONTINUATION, connect[7:], fin=True)
    assert raw.expect(rm.CONNACK).reason == 0
    # SUBSCRIBE + PUBLISH QoS 1 + PINGREQ in one frame
    topic = f"frag/{uid()}"
    conn.send_binary(
        rm.subscribe(1, [(topic, 1)], version=version)
        + rm.publish(topic, b"coalesced", qos=1, packet_id=2, version=version)
        + rm.pingreq()
    )
    got = [raw.recv() for _ in range(4)]
    kinds = sorted(p.type for p in got if p is not None)
    assert kinds == sorted([rm.SUBACK, rm.PUBACK, rm.PUBLISH, rm.PINGRESP]), got
    publish = next(p for p in got if p is not None and p.type == rm.PUBLISH)
    assert publish.payload == b"coalesced"


def test_control_frames_between_fragments_and_ping_pong(wsb, connect_ws):
    conn = upgraded(connect_ws, wsb, "ws")
    raw = WsRawClient.attach(conn, 4)
    connect = rm.connect(f"ping-{uid()}")
    conn.send_frame(BINARY, connect[:5], fin=False)
    conn.send_frame(PING, b"are you there")
    pong = conn.recv_frame()
    assert pong is not None and (pong.opcode, pong.payload) == (PONG, b"are you there")
    assert not pong.masked  # server frames are never masked
    conn.send_frame(PONG, b"unsolicited")  # ignored
    conn.send_frame(CONTINUATION, connect[5:], fin=True)
    assert raw.expect(rm.CONNACK).reason == 0


@ws_and_wss
def test_text_frame_closes_with_1003(wsb, connect_ws, tr):
    conn = upgraded(connect_ws, wsb, tr)
    raw = WsRawClient.attach(conn, 4)
    client_id = f"text-{uid()}"
    raw.connect(client_id)
    mark = wsb.log_mark()
    conn.send_frame(TEXT, b"hello")
    frames = conn.frames_until_closed()
    assert [(f.opcode, f.close_code) for f in frames] == [(CLOSE, 1003)]
    wsb.wait_for_log(
        rf"WebSocket connection from 127\.0\.0\.1:\d+ \({tr}\) closed with code 1003: text frame",
        since=mark,
    )
    wsb.wait_for_log(rf"client {client_id} disconnected", since=mark)


@ws_and_wss
def test_frame_over_the_payload_limit_closes_with_1009(wsb, connect_ws, tr):
    conn = upgraded(connect_ws, wsb, tr)
    mark = wsb.log_mark()
    # only the header: the broker refuses on the announced length
    conn.send_raw(bytes([0x82, 0x80 | 127]) + (65537).to_bytes(8, "big") + b"mask")
    frames = conn.frames_until_closed()
    assert [(f.opcode, f.close_code) for f in frames] == [(CLOSE, 1009)]
    wsb.wait_for_log(
        rf"\({tr}\) closed with code 1009: frame of 65537 bytes exceeds the limit of 65536",
        since=mark,
    )


def test_frame_at_the_payload_limit_is_accepted(wsb, connect_ws, clients: ClientPool):
    topic = f"limit/{uid()}"
    sub = clients.connected(wsb, V5)
    sub.subscribe(topic, 0)
    conn = upgraded(connect_ws, wsb, "ws")
    raw = WsRawClient.attach(conn, 4)
    raw.connect(f"limit-{uid()}")
    header = rm.publish(topic, b"")
    payload = b"z" * (65536 - len(header) - 2)  # one more byte of remaining length
    packet = rm.publish(topic, payload)
    assert len(packet) == 65536
    conn.send_binary(packet)
    assert sub.expect_message().payload == payload


def test_unmasked_client_frame_closes_with_1002(wsb, connect_ws):
    conn = upgraded(connect_ws, wsb, "ws")
    mark = wsb.log_mark()
    conn.send_frame(BINARY, rm.connect(f"unmasked-{uid()}"), mask=False)
    frames = conn.frames_until_closed()
    assert [(f.opcode, f.close_code) for f in frames] == [(CLOSE, 1002)]
    wsb.wait_for_log(r"closed with code 1002: client frame not masked", since=mark)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (dict(opcode=CONTINUATION, payload=b"x"), "continuation frame without a message"),
        (dict(opcode=BINARY, payload=b"x", rsv=4), "reserved bits set"),
        (dict(opcode=0x3, payload=b"x"), "reserved opcode 0x3"),
        (dict(opcode=PING, payload=b"x", fin=False), "fragmented or oversized control frame"),
    ],
    ids=["lone-continuation", "rsv1", "opcode-3", "fragmented-ping"],
)
def test_protocol_violations_close_with_1002(wsb, connect_ws, frame, reason):
    conn = upgraded(connect_ws, wsb, "ws")
    mark = wsb.log_mark()
    conn.send_frame(**frame)
    frames = conn.frames_until_closed()
    assert [(f.opcode, f.close_code) for f in frames] == [(CLOSE, 1002)]
    wsb.wait_for_log(rf"closed with code 1002: {re.escape(reason)}", since=mark)


@both_versions
def test_close_frame_is_echoed_and_the_will_published(
    wsb, connect_ws, clients: ClientPool, version
):
    """A WebSocket close without MQTT DISCONNECT is an abnormal close for MQTT."""
    will_topic = f"will/{uid()}"
    observer = clients.connected(wsb, version)
    observer.subscribe(will_topic, 1)
    conn = upgraded(connect_ws, wsb, "ws")
    raw = WsRawClient.attach(conn, version)
    client_id = f"close-{uid()}"
    mark = wsb.log_mark()
    conn.send_binary(
        rm.connect(client_id, version=version, will=rm.Will(will_topic, b"gone", qos=1))
    )
    raw.expect(rm.CONNACK)
    conn.send_frame(CLOSE, (1001).to_bytes(2, "big") + b"going away")
    frames = conn.frames_until_closed()
    assert [(f.opcode, f.close_code) for f in frames] == [(CLOSE, 1001)]
    assert observer.expect_message().payload == b"gone"
    wsb.wait_for_log(rf"client {client_id} disconnected from 127\.0\.0\.1:\d+ \(ws\)", since=mark)


def test_mqtt_disconnect_gets_a_close_frame(wsb, connect_ws):
    conn = upgraded(connect_ws, wsb, "ws")
    raw = WsRawClient.attach(conn, 4)
    raw.connect(f"bye-{uid()}")
    raw.disconnect()
    frames = conn.frames_until_closed()
    assert [(f.opcode, f.close_code) for f in frames] == [(CLOSE, 1000)]


# --------------------------------------------------------------------------- origins


@ws_and_wss
def test_allowed_origins(ws_broker, connect_ws, tr):
    broker = ws_broker(WS_ALLOWED_ORIGINS="https://dash.example.com, http://localhost:8080/")
    mark = broker.log_mark()
    refused = connect_ws(broker, tr, Upgrade(origin="https://evil.example.com"))
    assert refused.response.status == 403
    assert refused.frames_until_closed() == []
    broker.wait_for_log(
        rf"\({tr}\) refused with HTTP 403: origin 'https://evil.example.com' is not in "
        r"WS_ALLOWED_ORIGINS",
        since=mark,
    )
    for origin in ("https://dash.example.com", "HTTP://LOCALHOST:8080", None):
        assert connect_ws(broker, tr, Upgrade(origin=origin)).response.status == 101, origin


def test_any_origin_by_default(wsb, connect_ws):
    assert connect_ws(wsb, "ws", Upgrade(origin="https://anything.example")).response.status == 101


# --------------------------------------------------------------------------- proxies


def _connect_via(connect_ws, broker: BrokerProcess, tr: str, headers: dict[str, str]) -> str:
    """Upgrade with ``headers``, CONNECT, and return the broker's connect log line."""
    mark = broker.log_mark()
    conn = connect_ws(broker, tr, Upgrade(extra_headers=headers))
    assert conn.response.status == 101
    raw = WsRawClient.attach(conn, 4)
    client_id = f"proxied-{uid()}"
    raw.connect(client_id)
    return connect_line(broker, client_id, mark)


@ws_and_wss
def test_trusted_proxy_gives_the_client_address(ws_broker, connect_ws, tr):
    broker = ws_broker(WS_TRUSTED_PROXIES="127.0.0.1, 10.0.0.0/8")
    # the rightmost address that is not a trusted proxy; the left one could be forged
    line = _connect_via(
        connect_ws, broker, tr, {"X-Forwarded-For": "198.51.100.9, 203.0.113.7, 10.1.2.3"}
    )
    assert f"connected from 203.0.113.7 ({tr}, " in line
    # repeated headers form one list
    line = _connect_via(connect_ws, broker, tr, {"X-Forwarded-For": "203.0.113.8:4711"})
    assert f"connected from 203.0.113.8 ({tr}, " in line
    line = _connect_via(connect_ws, broker, tr, {"X-Real-IP": "2001:db8::1"})
    assert f"connected from 2001:db8::1 ({tr}, " in line


def test_proxy_chain_of_trusted_proxies(ws_broker, connect_ws):
    broker = ws_broker(WS_TRUSTED_PROXIES="127.0.0.0/8,203.0.113.0/24")
    line = _connect_via(connect_ws, broker, "ws", {"X-Forwarded-For": "198.51.100.9, 203.0.113.7"})
    assert "connected from 198.51.100.9 (ws, " in line


@pytest.mark.parametrize("trusted", ["", "10.0.0.0/8"], ids=["none", "other-network"])
def test_proxy_headers_from_untrusted_peers_are_ignored(ws_broker, connect_ws, trusted):
    broker = ws_broker(WS_TRUSTED_PROXIES=trusted)
    headers = {"X-Forwarded-For": "203.0.113.7", "X-Real-IP": "203.0.113.8"}
    line = _connect_via(connect_ws, broker, "ws", headers)
    assert re.search(r"connected from 127\.0\.0\.1:\d+ \(ws, ", line), line
    assert "203.0.113" not in line


# --------------------------------------------------------------------------- WSS TLS


def _wss_client(
    clients: ClientPool, broker: BrokerProcess, pki: Pki, cert: str | None, version: int
):
    identity = pki.client(cert) if cert is not None else None
    return clients.new(broker, version, transport="wss", ca=pki.ca_pem, cert=identity)


@both_versions
def test_two_way_tls_over_wss(ws_broker, clients: ClientPool, pki, version):
    broker = ws_broker(LISTENER_WSS_CLIENT_AUTH="REQUIRED", LISTENER_WSS_TRUSTSTORE=str(pki.ca_pem))
    broker.wait_for_log(
        r"listener wss: certificate CN=pytbmq-server-1.*client certificates REQUIRED"
    )
    client = _wss_client(clients, broker, pki, "client1", version)
    mark = broker.log_mark()
    client.connect()
    line = connect_line(broker, client.client_id, mark)
    assert "(wss, " in line and "certificate CN=client1" in line
    topic = f"mtls/{uid()}"
    client.subscribe(topic, 1)
    client.publish(topic, b"mutual", qos=1)
    assert client.expect_message().payload == b"mutual"


@pytest.mark.parametrize(
    ("cert", "reason"),
    [
        (None, "no client certificate presented, but client certificates are REQUIRED"),
        ("client2", "client certificate chain ends in an untrusted root (unknown CA)"),
    ],
    ids=["no-cert", "untrusted"],
)
def test_wss_client_certificate_refusals_are_explained(
    ws_broker, clients: ClientPool, pki, cert, reason
):
    broker = ws_broker(LISTENER_WSS_CLIENT_AUTH="REQUIRED")
    client = _wss_client(clients, broker, pki, cert, V311)
    mark = broker.log_mark()
    with pytest.raises(Exception):  # noqa: B017 - TLS, WebSocket or MQTT level, by TLS version
        client.connect(timeout=5)
    broker.wait_for_log(
        rf"TLS handshake from 127\.0\.0\.1:\d+ failed on wss: {re.escape(reason)}", since=mark
    )


def test_wss_material_is_checked_at_startup(tmp_path: Path, pki):
    env = {**WS_ENV, **wss_env(pki, LISTENER_WSS_PEM_CERT=str(tmp_path / "missing.pem"))}
    result = run_broker_expecting_exit(tmp_path / "b", env)
    assert result.returncode == 2, result.output
    assert "LISTENER_WSS_PEM_CERT: file not found" in result.output
    assert "listener tcp bound" not in result.output


def test_wss_certificate_reloads_on_sighup(ws_broker, pki, tmp_path: Path, connect_ws):
    cert = replace_atomically(tmp_path / "wss.pem", pki.server.cert_pem(), pki.root.cert_pem())
    key = replace_atomically(tmp_path / "wss_key.pem", pki.server.key_pem())
    broker = ws_broker(
        LISTENER_WSS_PEM_CERT=str(cert),
        LISTENER_WSS_PEM_KEY=str(key),
        LISTENER_WSS_RELOAD_INTERVAL_SEC=0,
    )
    before = connect_ws(broker, "wss")
    assert before.response.status == 101
    assert _server_cn(before) == "pytbmq-server-1"
    fresh = pki.server_identity("pytbmq-server-wss")
    replace_atomically(cert, fresh.cert_pem(), pki.root.cert_pem())
    replace_atomically(key, fresh.key_pem())
    mark = broker.log_mark()
    broker.send_signal(signal.SIGHUP)
    broker.wait_for_log(
        r"wss: TLS material reloaded \(SIGHUP\): certificate CN=pytbmq-server-wss", since=mark
    )
    after = connect_ws(broker, "wss")
    assert after.response.status == 101
    assert _server_cn(after) == "pytbmq-server-wss"


def _server_cn(conn: WsConnection) -> str:
    from cryptography import x509

    assert isinstance(conn.sock, ssl.SSLSocket)
    der = conn.sock.getpeercert(binary_form=True)
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    return str(cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)
