"""The admin API's retained messages and REST publishing, over real HTTP against the
broker process, with raw MQTT clients receiving (or not) what the API changed."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from . import rawmqtt as rm
from .api_client import API_ENV, ApiClient
from .helpers import BrokerProcess, uid

V5 = 5
V311 = 4
Connect = Callable[..., rm.RawClient]


@pytest.fixture(scope="module")
def api_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    broker = BrokerProcess(tmp_path_factory.mktemp("api-messages"), API_ENV).start()
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def api(api_broker: BrokerProcess) -> ApiClient:
    return ApiClient(api_broker)


@pytest.fixture
def connect(api_broker: BrokerProcess) -> Iterator[Connect]:
    opened: list[rm.RawClient] = []

    def make(client_id: str | None = None, version: int = V5, **kwargs: Any) -> rm.RawClient:
        client = rm.RawClient(api_broker.host, api_broker.port, version)
        opened.append(client)
        client.connect(client_id or f"c-{uid()}", **kwargs)
        return client

    yield make
    for client in opened:
        client.close()


def next_publish(client: rm.RawClient) -> rm.Packet:
    pkt = client.expect(rm.PUBLISH)
    if pkt.qos:
        client.puback(pkt.packet_id or 0)
    return pkt


def received_before_marker(sub: rm.RawClient, pub: rm.RawClient, marker: str) -> list[bytes]:
    """Topics `sub` receives before a live message `pub` sends to `marker` now: everything
    the broker sent it earlier (retained messages after a SUBSCRIBE) comes first."""
    pub.publish(marker, b"marker")
    topics: list[bytes] = []
    while (pkt := next_publish(sub)).topic != marker.encode():
        topics.append(pkt.topic or b"")
    return topics


def retain(pub: rm.RawClient, topic: str, payload: bytes, **kwargs: Any) -> None:
    """A retained QoS 1 publish; returns once the broker acknowledged (and stored) it."""
    pub.publish(topic, payload, qos=1, retain=True, packet_id=1, **kwargs)
    pub.expect(rm.PUBACK)


# ------------------------------------------------------------------ access
def test_token_required_and_viewer_cannot_change(api_broker: BrokerProcess, api: ApiClient) -> None:
    anon = ApiClient(api_broker, username=None)
    page = {"pageSize": 10, "page": 0}
    assert anon.get("/api/retained-msg", params=page)[0] == 401
    assert anon.get("/api/retained-msg/v2", params=page)[0] == 401
    assert anon.post("/api/mqtt/publish", {"topic": "a", "payload": "x"})[0] == 401
    email = f"viewer-{uid()}@example.com"
    status, user = api.post(
        "/api/admin", {"email": email, "password": "viewer-password", "authority": "SYS_VIEWER"}
    )
    assert status == 200, user
    try:
        viewer = ApiClient(api_broker, email, "viewer-password")
        assert viewer.get("/api/retained-msg", params=page)[0] == 200
        assert viewer.get("/api/retained-msg/v2", params=page)[0] == 200
        status, body = viewer.delete("/api/retained-msg", params={"topicName": "a"})
        assert status == 403 and body["errorCode"] == 20
        status, body = viewer.post("/api/mqtt/publish", {"topic": "a", "payload": "x"})
        assert status == 403 and body["errorCode"] == 20
    finally:
        api.delete(f"/api/admin/{user['id']}")


# ------------------------------------------------------------------ retained messages
def test_retained_messages_one_page_and_filters(api: ApiClient, connect: Connect) -> None:
    base = f"ret/{uid()}"
    pub = connect()
    retain(
        pub,
        f"{base}/a",
        b"temperature 21",
        properties=[(rm.CONTENT_TYPE, "text/plain"), (rm.USER_PROPERTY, ("unit", "C"))],
    )
    pub.publish(f"{base}/b", b"\xff\xfe", qos=2, retain=True, packet_id=2)
    pub.expect(rm.PUBREC)
    pub.send(rm.pubrel(2, V5))
    pub.expect(rm.PUBCOMP)
    retain(pub, f"{base}/c", b"third")

    status, one = api.get("/api/retained-msg", params={"topicName": f"{base}/a"})
    assert status == 200, one
    assert one["topic"] == f"{base}/a" and one["payload"] == "temperature 21"
    assert one["qos"] == 1 and one["createdTime"] > 0
    assert one["userProperties"] == {"props": [{"k": "unit", "v": "C"}]}
    assert one["properties"]["contentType"] == "text/plain"
    status, binary = api.get("/api/retained-msg", params={"topicName": f"{base}/b"})
    assert base64.b64decode(binary["payloadBase64"]) == b"\xff\xfe" and binary["qos"] == 2

    params = {"pageSize": 2, "page": 0, "textSearch": base, "sortProperty": "topic"}
    status, page = api.get("/api/retained-msg", params=params)
    assert status == 200 and page["totalElements"] == 3 and page["hasNext"] is True
    assert [m["topic"] for m in page["data"]] == [f"{base}/a", f"{base}/b"]
    status, page = api.get("/api/retained-msg", params={**params, "sortOrder": "DESC"})
    assert page["data"][0]["topic"] == f"{base}/c"

    v2 = {"pageSize": 10, "page": 0, "topicName": base}
    status, page = api.get("/api/retained-msg/v2", params={**v2, "qosList": "1"})
    assert status == 200 and [m["topic"] for m in page["data"]] == [f"{base}/a", f"{base}/c"]
    status, page = api.get("/api/retained-msg/v2", params={**v2, "payload": "THIRD"})
    assert [m["topic"] for m in page["data"]] == [f"{base}/c"]

    status, body = api.get("/api/retained-msg", params={"topicName": f"{base}/none"})
    assert status == 404 and "topicName" in body["message"]
    status, body = api.get("/api/retained-msg")
    assert status == 400 and "pageSize" in body["message"]
    status, body = api.get("/api/retained-msg/v2", params={**v2, "qosList": "5"})
    assert status == 400 and "qosList" in body["message"]


def test_deleted_retained_message_is_not_sent_to_new_subscribers(
    api: ApiClient, connect: Connect
) -> None:
    base = f"del/{uid()}"
    pub = connect()
    retain(pub, f"{base}/gone", b"old")
    retain(pub, f"{base}/kept", b"marker")
    status, _ = api.delete("/api/retained-msg", params={"topicName": f"{base}/gone"})
    assert status == 200
    status, body = api.delete("/api/retained-msg", params={"topicName": f"{base}/gone"})
    assert status == 404 and "topicName" in body["message"]
    assert api.get("/api/retained-msg", params={"topicName": f"{base}/gone"})[0] == 404

    sub = connect()
    sub.subscribe([(f"{base}/#", 1)])
    assert received_before_marker(sub, pub, f"{base}/marker") == [f"{base}/kept".encode()]


# ------------------------------------------------------------------ publish
def test_rest_publish_reaches_subscribers_with_properties(api: ApiClient, connect: Connect) -> None:
    base = f"pub/{uid()}"
    sub5 = connect(None, V5)
    sub5.subscribe([(f"{base}/#", 2)], properties=[(rm.SUBSCRIPTION_IDENTIFIER, 9)])
    sub3 = connect(None, V311)
    sub3.subscribe([(f"{base}/+", 1)])

    status, result = api.post(
        "/api/mqtt/publish",
        {
            "topic": f"{base}/cmd",
            "payload": '{"cmd": "reboot"}',
            "qos": 1,
            "properties": {
                "payloadFormatIndicator": 1,
                "messageExpiryInterval": 600,
                "contentType": "application/json",
                "responseTopic": f"{base}/reply",
                "correlationData": base64.b64encode(b"req-42").decode(),
                "userProperties": {"source": "backend", "n": "1"},
            },
        },
    )
    assert status == 200, result
    assert result == {"delivered": 2, "reasonCode": 0, "message": "Success"}
    got = next_publish(sub5)
    assert got.topic == f"{base}/cmd".encode() and got.payload == b'{"cmd": "reboot"}'
    assert got.qos == 1 and not got.retain
    assert got.prop(rm.PAYLOAD_FORMAT_INDICATOR) == 1
    assert 590 <= got.prop(rm.MESSAGE_EXPIRY_INTERVAL) <= 600
    assert got.prop(rm.CONTENT_TYPE) == "application/json"
    assert got.prop(rm.RESPONSE_TOPIC) == f"{base}/reply"
    assert got.prop(rm.CORRELATION_DATA) == b"req-42"
    assert got.prop(rm.SUBSCRIPTION_IDENTIFIER) == 9
    assert sorted(got.props(rm.USER_PROPERTY)) == [("n", "1"), ("source", "backend")]
    old = next_publish(sub3)
    assert old.payload == b'{"cmd": "reboot"}' and old.qos == 1

    # base64 payload, QoS 2 capped at the subscription's QoS 1 for the 3.1.1 client
    status, result = api.post(
        "/api/mqtt/publish",
        {
            "topic": f"{base}/bin",
            "payload": base64.b64encode(b"\x00\x01\xff").decode(),
            "payloadEncoding": "base64",
            "qos": 2,
        },
    )
    assert status == 200 and result["delivered"] == 2
    assert next_publish(sub3).payload == b"\x00\x01\xff"
    got = sub5.expect(rm.PUBLISH)
    assert got.payload == b"\x00\x01\xff" and got.qos == 2

    status, result = api.post("/api/mqtt/publish", {"topic": f"nobody/{uid()}", "payload": "x"})
    assert status == 202 and result["delivered"] == 0 and result["reasonCode"] == 16


def test_rest_publish_retained_is_stored_and_cleared(api: ApiClient, connect: Connect) -> None:
    topic = f"rp/{uid()}/state"
    status, _ = api.post(
        "/api/mqtt/publish", {"topic": topic, "payload": "on", "qos": 1, "retain": True}
    )
    assert status == 202  # no subscriber, but retained
    status, msg = api.get("/api/retained-msg", params={"topicName": topic})
    assert status == 200 and msg["payload"] == "on" and msg["qos"] == 1
    sub = connect()
    sub.subscribe([(topic, 1)])
    got = next_publish(sub)
    assert got.payload == b"on" and got.retain

    status, result = api.post(
        "/api/mqtt/publish", {"topic": topic, "payload": "", "qos": 0, "retain": True}
    )
    assert status == 200 and result["delivered"] == 1
    assert next_publish(sub).payload == b""
    assert api.get("/api/retained-msg", params={"topicName": topic})[0] == 404


def test_rest_publish_validation(api: ApiClient) -> None:
    def post(**body: Any) -> tuple[int, str]:
        status, result = api.post("/api/mqtt/publish", {"topic": "ok/t", "payload": "x", **body})
        return status, result.get("message", "") if isinstance(result, dict) else ""

    for body, field in (
        ({"topic": "a/+/b"}, "topic"),
        ({"topic": "a/#"}, "topic"),
        ({"topic": ""}, "topic"),
        ({"topic": "$SYS/x"}, "topic"),
        ({"qos": 3}, "qos"),
        ({"qos": -1}, "qos"),
        ({"payloadEncoding": "HEX"}, "payloadEncoding"),
        ({"payload": "***", "payloadEncoding": "BASE64"}, "payload"),
        ({"properties": {"responseTopic": "r/#"}}, "properties.responseTopic"),
        ({"properties": {"correlationData": "%%"}}, "properties.correlationData"),
        ({"properties": {"messageExpiryInterval": -5}}, "properties.messageExpiryInterval"),
        ({"properties": {"payloadFormatIndicator": 2}}, "properties.payloadFormatIndicator"),
        (
            {
                "payload": base64.b64encode(b"\xff").decode(),
                "payloadEncoding": "BASE64",
                "properties": {"payloadFormatIndicator": 1},
            },
            "properties.payloadFormatIndicator",
        ),
    ):
        status, message = post(**body)
        assert status == 400 and message.startswith(field), (body, message)
    status, body = api.post("/api/mqtt/publish", {"topic": "a"})
    assert status == 400 and "payload" in body["message"]


# ------------------------------------------------------------------ persistence
def test_retained_deletion_survives_restart(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "restart", API_ENV).start()
    opened: list[rm.RawClient] = []
    try:
        base = f"rr/{uid()}"

        def client() -> rm.RawClient:
            c = rm.RawClient(broker.host, broker.port, V5)
            opened.append(c)
            c.connect(f"c-{uid()}")
            return c

        pub = client()
        retain(pub, f"{base}/gone", b"old")
        retain(pub, f"{base}/kept", b"kept")
        api = ApiClient(broker)
        assert api.delete("/api/retained-msg", params={"topicName": f"{base}/gone"})[0] == 200
        status, _ = api.post(
            "/api/mqtt/publish", {"topic": f"{base}/rest", "payload": "r", "retain": True}
        )
        assert status == 202

        broker.stop()
        broker.start()
        api = ApiClient(broker)
        assert api.get("/api/retained-msg", params={"topicName": f"{base}/gone"})[0] == 404
        status, page = api.get(
            "/api/retained-msg", params={"pageSize": 10, "page": 0, "textSearch": base}
        )
        assert status == 200
        assert [m["topic"] for m in page["data"]] == [f"{base}/kept", f"{base}/rest"]
        sub = client()
        sub.subscribe([(f"{base}/#", 0)])
        topics = received_before_marker(sub, client(), f"{base}/marker")
        assert sorted(topics) == [f"{base}/kept".encode(), f"{base}/rest".encode()]
    finally:
        for c in opened:
            c.close()
        broker.stop()
