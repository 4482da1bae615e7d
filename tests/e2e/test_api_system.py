"""System info, listener ports, TLS status, health and Prometheus metrics over real HTTP(S)
against the broker process (one MQTTS-enabled broker shared by the module, plus brokers
with their own settings where a test needs them)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from .api_client import API_ENV, ApiClient
from .helpers import V5, V311, BrokerProcess, ClientPool, run_broker_expecting_exit, uid
from .pki import (
    Pki,
    client_context,
    expect_accepted,
    expect_rejected,
    pki_fixture,  # noqa: F401  (the session fixture ``pki``)
    ssl_port,
    tls_env,
)

PROTECTED = [
    "/api/system/info",
    "/api/app/listener/port?listenerName=MQTT",
    "/api/tls/status",
    "/actuator/prometheus",
    "/metrics",
]
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{.*\})?) (\S+)$")


def metrics(text: str) -> dict[str, float]:
    """Samples of a Prometheus text exposition: `name{labels}` as written -> value."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        out[match.group(1)] = float(match.group(2))
    return out


def scrape(api: ApiClient, path: str = "/actuator/prometheus") -> dict[str, float]:
    status, text = api.get(path)
    assert status == 200, text
    return metrics(text)


@pytest.fixture(scope="module")
def tls_api_broker(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[BrokerProcess]:
    broker = BrokerProcess(tmp_path_factory.mktemp("api-system"), {**API_ENV, **tls_env(pki)})
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def api(tls_api_broker: BrokerProcess) -> ApiClient:
    return ApiClient(tls_api_broker)


@pytest.fixture
def clients() -> Iterator[ClientPool]:
    pool = ClientPool()
    yield pool
    pool.close_all()


# ------------------------------------------------------------------ access
@pytest.mark.parametrize("path", PROTECTED)
def test_protected_endpoints_need_a_token(tls_api_broker: BrokerProcess, path: str) -> None:
    status, body = ApiClient(tls_api_broker, username=None).get(path)
    assert status == 401, body
    assert body["errorCode"] == 10


def test_health_and_info_need_no_token(tls_api_broker: BrokerProcess) -> None:
    anon = ApiClient(tls_api_broker, username=None)
    status, body = anon.get("/actuator/health")
    assert status == 200 and body["status"] == "UP", body
    components = body["components"]
    listeners = components["listeners"]
    assert listeners["status"] == "UP"
    assert listeners["tcp"] == {"status": "UP", "address": "127.0.0.1", "port": tls_api_broker.port}
    assert listeners["ssl"]["status"] == "UP"
    assert listeners["ssl"]["port"] == ssl_port(tls_api_broker)
    assert listeners["http"]["port"] == tls_api_broker.ports["http"]
    assert components["store"]["status"] == "UP" and components["store"]["name"] == "sqlite"
    assert components["security"]["status"] == "UP"
    status, body = anon.get("/actuator/info")
    assert status == 200 and body["name"] == "pytbmq" and body["version"]


# ------------------------------------------------------------------ system info and ports
def test_system_info(api: ApiClient, tls_api_broker: BrokerProcess) -> None:
    status, info = api.get("/api/system/info")
    assert status == 200, info
    assert info["name"] == "pytbmq" and info["version"] and info["artifact"] == "pytbmq"
    assert info["python"]["version"].startswith("3.")
    assert info["pid"] == tls_api_broker.proc.pid  # type: ignore[union-attr]
    assert info["uptimeSeconds"] >= 0
    assert info["dataDir"] == str(tls_api_broker.workdir / "data")
    assert info["store"]["name"] == "sqlite" and info["store"]["durable"] is True
    assert info["process"]["rssBytes"] > 1_000_000 and info["process"]["cpuSeconds"] > 0
    assert info["host"]["cpuCount"] >= 1
    assert set(info["counts"]) >= {
        "connections",
        "sessions",
        "subscriptions",
        "retainedMessages",
    }


@pytest.mark.parametrize(
    ("name", "listener"),
    [("MQTT", "tcp"), ("mqtt", "tcp"), ("TCP", "tcp"), ("MQTTS", "ssl"), ("ssl", "ssl")],
)
def test_listener_port(
    api: ApiClient, tls_api_broker: BrokerProcess, name: str, listener: str
) -> None:
    status, port = api.get("/api/app/listener/port", params={"listenerName": name})
    assert status == 200
    assert port == tls_api_broker.ports[listener]


def test_listener_port_errors(api: ApiClient) -> None:
    status, body = api.get("/api/app/listener/port", params={"listenerName": "WS"})
    assert status == 404 and "LISTENER_WS_ENABLED" in body["message"], body
    status, body = api.get("/api/app/listener/port", params={"listenerName": "HTTP"})
    assert status == 400 and "listenerName" in body["message"], body
    status, body = api.get("/api/app/listener/port")
    assert status == 400 and "listenerName" in body["message"], body


# ------------------------------------------------------------------ TLS
def test_tls_status_shows_the_certificate_and_failed_handshakes(
    api: ApiClient, tls_api_broker: BrokerProcess, pki: Pki
) -> None:
    port = ssl_port(tls_api_broker)
    expect_accepted(port, client_context(pki.ca_pem))
    # a client that does not trust the server's CA aborts the handshake
    expect_rejected(tls_api_broker, port, client_context(pki.ca2_pem), "does not trust")
    status, body = api.get("/api/tls/status")
    assert status == 200, body
    assert set(body["listeners"]) == {"ssl"}
    ssl = body["listeners"]["ssl"]
    cert = ssl["certificate"]
    assert cert["subject"] == pki.server.subject
    assert cert["issuer"] == pki.root.subject
    assert cert["serialNumber"] == format(pki.server.cert.serial_number, "X")
    assert cert["notAfter"] > cert["notBefore"] and not cert["expired"]
    assert "localhost" in cert["subjectAltNames"]
    assert 300 < ssl["daysToExpiry"] < 10_000
    assert ssl["chain"] == [pki.server.subject, pki.root.subject]  # serverChain.pem
    assert str(pki.server_chain_pem) in ssl["source"]
    assert ssl["credentialsType"] == "PEM"
    assert ssl["clientAuth"] in ("NONE", "REQUESTED", "REQUIRED")
    assert ssl["trustAnchors"] == len(ssl["trustAnchorSubjects"])
    assert ssl["port"] == port
    assert ssl["reload"]["reloads"] == 0 and ssl["reload"]["lastReloadAt"] is None
    handshakes = ssl["handshakes"]
    assert handshakes["completed"] >= 1
    assert handshakes["failedByReason"].get("client_rejected_server", 0) >= 1
    m = scrape(api)
    assert m['pytbmq_tls_handshakes_total{listener="ssl"}'] >= 1
    key = 'pytbmq_tls_handshake_failures_total{listener="ssl",reason="client_rejected_server"}'
    assert m[key] >= 1
    assert 300 < m['pytbmq_tls_certificate_expiry_days{listener="ssl"}'] < 10_000


# ------------------------------------------------------------------ metrics
def test_metrics_reflect_connections_and_messages(
    api: ApiClient, tls_api_broker: BrokerProcess, clients: ClientPool
) -> None:
    before = scrape(api)
    topic = f"metrics/{uid()}"
    payload = b"x" * 100
    sub = clients.connected(tls_api_broker, V5)
    sub.subscribe(topic, qos=1)
    pub = clients.connected(tls_api_broker, V311)
    pub.publish(topic, payload, qos=1)
    assert sub.expect_message().payload == payload
    after = scrape(api, "/metrics")

    def delta(key: str) -> float:
        return after.get(key, 0) - before.get(key, 0)

    assert after['pytbmq_connections{listener="tcp",mqtt_version="5"}'] >= 1
    assert after['pytbmq_connections{listener="tcp",mqtt_version="3.1.1"}'] >= 1
    assert delta('pytbmq_sessions{state="connected",client_type="DEVICE"}') == 2
    assert delta('pytbmq_subscriptions{kind="plain"}') == 1
    assert delta('pytbmq_messages_received_total{qos="1"}') == 1
    assert delta('pytbmq_messages_sent_total{qos="1"}') == 1
    assert delta("pytbmq_payload_bytes_received_total") == len(payload)
    assert delta("pytbmq_payload_bytes_sent_total") == len(payload)
    assert delta("pytbmq_network_bytes_received_total") > len(payload)
    assert delta("pytbmq_network_bytes_sent_total") > len(payload)
    assert after[f'pytbmq_listener_up{{listener="tcp",port="{tls_api_broker.port}"}}'] == 1
    assert after["pytbmq_store_batches_committed_total"] >= 0
    assert after["process_cpu_seconds_total"] > 0
    _status, info = api.get("/api/system/info")
    assert info["counts"]["connections"] >= 2 and info["counts"]["subscriptions"] >= 1


def test_metrics_without_auth(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "b", {**API_ENV, "METRICS_AUTH_ENABLED": "false"})
    broker.start()
    try:
        anon = ApiClient(broker, username=None)
        for path in ("/metrics", "/actuator/prometheus"):
            status, text = anon.get(path)
            assert status == 200 and "pytbmq_info{" in text
        assert anon.get("/api/system/info")[0] == 401  # only the metrics are opened
    finally:
        broker.stop()


# ------------------------------------------------------------------ HTTPS
def test_api_over_https(tmp_path: Path, pki: Pki) -> None:
    env = {
        **API_ENV,
        "SSL_ENABLED": "true",
        "SSL_PEM_CERT": str(pki.server_chain_pem),
        "SSL_PEM_KEY": str(pki.server_key),
    }
    broker = BrokerProcess(tmp_path / "b", env)
    broker.start()
    try:
        broker.wait_for_log(r"listener http bound to .*HTTPS")
        api = ApiClient(broker, https=True, context=client_context(pki.ca_pem))
        status, body = api.get("/api/tls/status")
        assert status == 200, body
        http = body["listeners"]["http"]
        assert http["certificate"]["subject"] == pki.server.subject
        assert http["settingsPrefix"] == "SSL" and http["handshakes"] is None
        status, health = api.get("/actuator/health")
        assert status == 200 and health["components"]["listeners"]["http"]["status"] == "UP"
        m = scrape(api)
        assert m['pytbmq_tls_certificate_expiry_days{listener="http"}'] > 300
    finally:
        broker.stop()


def test_invalid_https_certificate_stops_startup(tmp_path: Path, pki: Pki) -> None:
    bad = tmp_path / "not-a-cert.pem"
    bad.write_text("this is not a certificate\n")
    env = {
        **API_ENV,
        "SSL_ENABLED": "true",
        "SSL_PEM_CERT": str(bad),
        "SSL_PEM_KEY": str(pki.server_key),
    }
    result = run_broker_expecting_exit(tmp_path / "b", env)
    assert result.returncode not in (None, 0), result.output
    assert "SSL_PEM_CERT" in result.output, result.output
    assert "pytbmq ready" not in result.output
