"""The admin API's client sessions and subscriptions, over real HTTP against the broker
process, with raw MQTT clients watching every change take effect at once."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from . import rawmqtt as rm
from .api_client import API_ENV, ApiClient
from .helpers import BrokerProcess, uid

V5 = 5
V311 = 4
EXPIRY = [(rm.SESSION_EXPIRY_INTERVAL, 300)]
Connect = Callable[..., rm.RawClient]


@pytest.fixture(scope="module")
def api_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    broker = BrokerProcess(tmp_path_factory.mktemp("api-sessions"), API_ENV).start()
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def api(api_broker: BrokerProcess) -> ApiClient:
    return ApiClient(api_broker)


@pytest.fixture(scope="module")
def viewer(api_broker: BrokerProcess, api: ApiClient) -> Iterator[ApiClient]:
    email = f"viewer-{uid()}@example.com"
    status, user = api.post(
        "/api/admin", {"email": email, "password": "viewer-password", "authority": "SYS_VIEWER"}
    )
    assert status == 200, user
    yield ApiClient(api_broker, email, "viewer-password")
    api.delete(f"/api/admin/{user['id']}")


@pytest.fixture
def connect(api_broker: BrokerProcess) -> Iterator[Connect]:
    """``connect(client_id, version, clean=..., properties=...)``: a connected raw client,
    closed when the test ends."""
    opened: list[rm.RawClient] = []

    def make(client_id: str, version: int = V5, **kwargs: Any) -> rm.RawClient:
        client = rm.RawClient(api_broker.host, api_broker.port, version)
        opened.append(client)
        client.connect(client_id, **kwargs)
        return client

    yield make
    for client in opened:
        client.close()


def publish_and_mark(pub: rm.RawClient, topic: str, marker: str) -> None:
    """Publish to `topic`, then to `marker`: a subscriber of both sees them in this order."""
    pub.publish(topic, b"payload")
    pub.publish(marker, b"marker")


def next_publish(client: rm.RawClient) -> rm.Packet:
    pkt = client.expect(rm.PUBLISH)
    if pkt.qos:
        client.puback(pkt.packet_id or 0)
    return pkt


def session_row(api: ApiClient, client_id: str) -> dict[str, Any]:
    status, page = api.get(
        "/api/client-session", params={"pageSize": 50, "page": 0, "textSearch": client_id}
    )
    assert status == 200, page
    rows = [r for r in page["data"] if r["clientId"] == client_id]
    assert len(rows) == 1, page
    return rows[0]


# ------------------------------------------------------------------ access
def test_token_required_and_viewer_cannot_change(
    api_broker: BrokerProcess, viewer: ApiClient
) -> None:
    anon = ApiClient(api_broker, username=None)
    for path, params in (
        ("/api/client-session", {"pageSize": 10, "page": 0}),
        ("/api/v2/client-session", {"pageSize": 10, "page": 0}),
        ("/api/client-session/info", None),
        ("/api/subscription", {"pageSize": 10, "page": 0}),
        ("/api/subscription/all", None),
    ):
        assert anon.get(path, params=params)[0] == 401, path
        assert viewer.get(path, params=params)[0] == 200, path
    assert anon.delete("/api/client-session/disconnect", params={"clientId": "x"})[0] == 401
    for status, body in (
        viewer.delete("/api/client-session/disconnect", params={"clientId": "x"}),
        viewer.delete("/api/client-session/remove", params={"clientId": "x"}),
        viewer.post("/api/subscription", {"clientId": "x", "subscriptions": []}),
    ):
        assert status == 403 and body["errorCode"] == 20, body


# ------------------------------------------------------------------ reading sessions
def test_session_pages_details_and_counts(api: ApiClient, connect: Connect) -> None:
    prefix = f"ses-{uid()}"
    persistent, clean = f"{prefix}-a", f"{prefix}-b"
    c5 = connect(persistent, V5, clean=False, keepalive=30, properties=EXPIRY)
    c5.subscribe([(f"{prefix}/x", rm.sub_options(qos=1, no_local=True))], properties=None)
    connect(clean, V311)
    status, info_before = api.get("/api/client-session/info")
    assert status == 200

    row = session_row(api, persistent)
    assert row["id"] == persistent and row["connectionState"] == "CONNECTED"
    assert row["clientType"] == "DEVICE" and row["protocolVersion"] == "MQTT_5"
    assert row["cleanStart"] is False and row["sessionExpiryInterval"] == 300
    assert row["clientIpAdr"] == "127.0.0.1" and row["subscriptionsCount"] == 1
    assert row["connectedAt"] > 0 and row["disconnectedAt"] == 0 and row["nodeId"]
    uuid.UUID(row["sessionId"])
    other = session_row(api, clean)
    assert other["protocolVersion"] == "MQTT_3_1_1" and other["cleanStart"] is True
    assert other["sessionExpiryInterval"] == 0 and other["sessionId"] != row["sessionId"]

    status, details = api.get("/api/client-session", params={"clientId": persistent})
    assert status == 200, details
    assert details["persistent"] is True and details["keepAliveSeconds"] == 30
    assert details["sessionId"] == row["sessionId"]
    assert details["subscriptions"] == [
        {
            "topicFilter": f"{prefix}/x",
            "qos": "AT_LEAST_ONCE",
            "options": {"noLocal": True, "retainAsPublish": False, "retainHandling": 0},
            "subscriptionId": None,
        }
    ]
    status, adv = api.get("/api/client-session/details", params={"clientId": persistent})
    assert status == 200 and adv["mqttVersion"] == "MQTT_5" and adv["listener"] == "tcp"

    # paging, sorting, text search
    params = {"pageSize": 1, "page": 0, "textSearch": prefix, "sortProperty": "clientId"}
    status, first = api.get("/api/client-session", params=params)
    assert status == 200 and first["totalElements"] == 2 and first["totalPages"] == 2
    assert first["hasNext"] is True and first["data"][0]["clientId"] == persistent
    status, desc = api.get("/api/client-session", params={**params, "sortOrder": "DESC"})
    assert desc["data"][0]["clientId"] == clean
    status, last = api.get("/api/client-session", params={**params, "page": 1})
    assert last["hasNext"] is False and last["data"][0]["clientId"] == clean

    # v2 filters
    v2 = {"pageSize": 10, "page": 0, "textSearch": prefix}
    status, page = api.get("/api/v2/client-session", params={**v2, "cleanStartList": "false"})
    assert status == 200 and [r["clientId"] for r in page["data"]] == [persistent]
    status, page = api.get(
        "/api/v2/client-session",
        params={**v2, "connectedStatusList": "DISCONNECTED", "clientTypeList": "DEVICE"},
    )
    assert status == 200 and page["totalElements"] == 0
    status, page = api.get("/api/v2/client-session", params={**v2, "subscriptions": 1})
    assert [r["clientId"] for r in page["data"]] == [persistent]

    assert info_before["connectedCount"] >= 2
    assert (
        info_before["totalCount"]
        == info_before["connectedCount"] + (info_before["disconnectedCount"])
    )
    assert info_before["clientTypes"]["DEVICE"]["connectedCount"] >= 2


def test_session_reading_errors(api: ApiClient) -> None:
    status, body = api.get("/api/client-session")
    assert status == 400 and "pageSize" in body["message"]
    status, body = api.get("/api/client-session", params={"pageSize": 5})
    assert status == 400 and "page" in body["message"]
    status, body = api.get(
        "/api/client-session", params={"pageSize": 5, "page": 0, "sortProperty": "nope"}
    )
    assert status == 400 and "sortProperty" in body["message"]
    status, body = api.get("/api/client-session", params={"pageSize": 0, "page": 0})
    assert status == 400 and "pageSize" in body["message"]
    status, body = api.get("/api/client-session", params={"clientId": "no-such-client"})
    assert status == 404 and "clientId" in body["message"]
    status, body = api.get(
        "/api/v2/client-session", params={"pageSize": 5, "page": 0, "connectedStatusList": "X"}
    )
    assert status == 400 and "connectedStatusList" in body["message"]
    status, body = api.get("/api/client-session/details", params={"clientId": "no-such"})
    assert status == 404


# ------------------------------------------------------------------ disconnect and remove
def test_disconnect_mqtt5_client_gets_0x98_and_session_stays(
    api: ApiClient, connect: Connect
) -> None:
    cid = f"dis-{uid()}"
    client = connect(cid, V5, clean=False, properties=EXPIRY)
    sid = session_row(api, cid)["sessionId"]
    status, body = api.delete(
        "/api/client-session/disconnect", params={"clientId": cid, "sessionId": str(uuid.uuid4())}
    )
    assert status == 400 and "sessionId" in body["message"]
    status, body = api.delete(
        "/api/client-session/disconnect", params={"clientId": cid, "sessionId": "not-a-uuid"}
    )
    assert status == 400 and "sessionId" in body["message"]

    status, body = api.delete(
        "/api/client-session/disconnect", params={"clientId": cid, "sessionId": sid}
    )
    assert status == 200, body
    packets = client.read_until_closed()
    assert [(p.type, p.reason) for p in packets] == [(rm.DISCONNECT, 0x98)]
    row = session_row(api, cid)  # the persistent session stays, offline
    assert row["connectionState"] == "DISCONNECTED" and row["disconnectedAt"] > 0
    status, body = api.delete("/api/client-session/disconnect", params={"clientId": cid})
    assert status == 400 and "not connected" in body["message"]
    status, _ = api.delete("/api/client-session/remove", params={"clientId": cid})
    assert status == 200


def test_disconnect_mqtt311_client_closes_and_clean_session_ends(
    api: ApiClient, connect: Connect
) -> None:
    cid = f"dis3-{uid()}"
    client = connect(cid, V311)
    status, _ = api.delete("/api/client-session/disconnect", params={"clientId": cid})
    assert status == 200
    assert client.read_until_closed() == []  # 3.1.1 has no server DISCONNECT
    status, _ = api.get("/api/client-session", params={"clientId": cid})
    assert status == 404  # a clean session ends with its connection


def test_remove_persistent_session(api: ApiClient, connect: Connect) -> None:
    cid = f"rem-{uid()}"
    topic = f"rem/{uid()}"
    client = connect(cid, V5, clean=False, properties=EXPIRY)
    client.subscribe([(topic, rm.sub_options(qos=1))])
    status, body = api.delete("/api/client-session/remove", params={"clientId": cid})
    assert status == 400 and "connected" in body["message"]
    client.disconnect()
    assert client.read_until_closed() == []
    pub = connect(f"pub-{uid()}", V5)
    pub.publish(topic, b"queued", qos=1, packet_id=1)
    pub.expect(rm.PUBACK)
    assert session_row(api, cid)["connectionState"] == "DISCONNECTED"

    sid = session_row(api, cid)["sessionId"]
    status, body = api.delete(
        "/api/client-session/remove", params={"clientId": cid, "sessionId": sid}
    )
    assert status == 200, body
    status, _ = api.get("/api/client-session", params={"clientId": cid})
    assert status == 404
    status, _ = api.delete("/api/client-session/remove", params={"clientId": cid})
    assert status == 404

    again = connect(cid, V5, clean=False, properties=EXPIRY)
    assert again.received[-1].session_present is False  # session present 0
    again.subscribe([(f"{topic}-marker", 0)])
    pub.publish(f"{topic}-marker", b"m")
    assert next_publish(again).topic == f"{topic}-marker".encode()  # the queued one is gone


# ------------------------------------------------------------------ subscriptions
def test_edit_subscriptions_applies_at_once(api: ApiClient, connect: Connect) -> None:
    cid = f"sub-{uid()}"
    base = f"edit/{uid()}"
    sub = connect(cid, V5, clean=False, properties=EXPIRY)
    sub.subscribe([(f"{base}/old", 0), (f"{base}/mark", 0)])
    pub = connect(f"pub-{uid()}", V5)
    pub.publish(f"{base}/kept/r", b"retained", retain=True)

    body = {
        "clientId": cid,
        "subscriptions": [
            {"topicFilter": f"{base}/mark", "qos": 0},
            {
                "topicFilter": f"{base}/new/+",
                "qos": "AT_LEAST_ONCE",
                "options": {"noLocal": False, "retainAsPublish": True, "retainHandling": 0},
                "subscriptionId": 7,
            },
            {"topicFilter": f"{base}/kept/#", "qos": 1},
        ],
    }
    status, result = api.post("/api/subscription", body)
    assert status == 200, result
    assert {s["topicFilter"] for s in result["subscriptions"]} == {
        f"{base}/mark",
        f"{base}/new/+",
        f"{base}/kept/#",
    }
    # a new filter brings the retained messages a SUBSCRIBE would
    retained = next_publish(sub)
    assert retained.topic == f"{base}/kept/r".encode() and retained.retain

    # the removed filter no longer delivers; the new one does, with its subscription id
    publish_and_mark(pub, f"{base}/old", f"{base}/mark")
    assert next_publish(sub).topic == f"{base}/mark".encode()
    pub.publish(f"{base}/new/1", b"hello", qos=1, packet_id=3)
    got = next_publish(sub)
    assert got.topic == f"{base}/new/1".encode() and got.qos == 1
    assert got.prop(rm.SUBSCRIPTION_IDENTIFIER) == 7

    status, listed = api.get("/api/subscription", params={"clientId": cid})
    assert status == 200
    by_filter = {s["topicFilter"]: s for s in listed}
    assert by_filter[f"{base}/new/+"] == {
        "topicFilter": f"{base}/new/+",
        "qos": "AT_LEAST_ONCE",
        "options": {"noLocal": False, "retainAsPublish": True, "retainHandling": 0},
        "subscriptionId": 7,
    }
    status, page = api.get(
        "/api/subscription",
        params={"pageSize": 2, "page": 0, "textSearch": base, "sortProperty": "topicFilter"},
    )
    assert status == 200 and page["totalElements"] == 3 and page["hasNext"] is True
    assert page["data"][0] == {"clientId": cid, "subscription": by_filter[f"{base}/kept/#"]}
    status, page = api.get(
        "/api/subscription/all",
        params={"pageSize": 10, "page": 0, "clientId": cid, "qosList": "1"},
    )
    assert status == 200 and page["totalElements"] == 2
    status, filters = api.get("/api/subscription/all")
    assert status == 200 and f"{base}/new/+" in filters and f"{base}/old" not in filters

    # clearing every subscription
    status, result = api.post("/api/subscription", {"clientId": cid, "subscriptions": []})
    assert status == 200 and result["subscriptions"] == []
    assert session_row(api, cid)["subscriptionsCount"] == 0


def test_edit_subscriptions_validation(api: ApiClient, connect: Connect) -> None:
    cid = f"val-{uid()}"
    connect(cid, V5)

    def post(subs: list[dict[str, Any]], client_id: str = cid) -> tuple[int, Any]:
        return api.post("/api/subscription", {"clientId": client_id, "subscriptions": subs})

    status, body = post([{"topicFilter": "ok"}, {"topicFilter": "a/#/b"}])
    assert status == 400 and "subscriptions.1.topicFilter" in body["message"]
    assert "a/#/b" in body["message"]
    status, body = post([{"topicFilter": "a", "qos": 3}])
    assert status == 400 and "subscriptions.0.qos" in body["message"]
    status, body = post([{"topicFilter": "$share//x"}])
    assert status == 400 and "subscriptions.0.topicFilter" in body["message"]
    status, body = post([{"topicFilter": "$share/g/x", "options": {"noLocal": True}}])
    assert status == 400 and "No Local" in body["message"]
    status, body = post([{"topicFilter": "a"}, {"topicFilter": "a"}])
    assert status == 400 and "twice" in body["message"]
    status, body = post([{"topicFilter": "a", "subscriptionId": 0}])
    assert status == 400 and "subscriptionId" in body["message"]
    status, body = post([], client_id="no-such-client")
    assert status == 404 and "clientId" in body["message"]
    status, body = api.post("/api/subscription", {"clientId": cid})
    assert status == 400 and "subscriptions" in body["message"]
    status, body = api.get("/api/subscription", params={"clientId": cid})
    assert status == 200 and body == []  # nothing was applied


def test_subscription_edits_and_removal_survive_restart(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "restart", API_ENV).start()
    opened: list[rm.RawClient] = []
    try:
        api = ApiClient(broker)
        base = f"rs/{uid()}"

        def client(cid: str, **kwargs: Any) -> rm.RawClient:
            c = rm.RawClient(broker.host, broker.port, V5)
            opened.append(c)
            c.connect(cid, **kwargs)
            return c

        first = client("keeper", clean=False, properties=EXPIRY)
        first.subscribe([(f"{base}/old", 1)])
        first.disconnect()
        first.read_until_closed()
        gone = client("gone", clean=False, properties=EXPIRY)
        gone.disconnect()
        gone.read_until_closed()
        status, body = api.post(
            "/api/subscription",
            {"clientId": "keeper", "subscriptions": [{"topicFilter": f"{base}/new", "qos": 1}]},
        )
        assert status == 200, body
        assert api.delete("/api/client-session/remove", params={"clientId": "gone"})[0] == 200

        broker.stop()
        broker.start()
        api = ApiClient(broker)
        status, subs = api.get("/api/subscription", params={"clientId": "keeper"})
        assert status == 200 and [s["topicFilter"] for s in subs] == [f"{base}/new"]
        assert api.get("/api/client-session", params={"clientId": "gone"})[0] == 404

        again = client("keeper", clean=False, properties=EXPIRY)
        assert again.received[-1].session_present is True
        pub = client("restart-pub")
        publish_and_mark(pub, f"{base}/old", f"{base}/new")
        assert next_publish(again).topic == f"{base}/new".encode()
    finally:
        for c in opened:
            c.close()
        broker.stop()
