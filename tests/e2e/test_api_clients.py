"""The admin API's unauthorized and blocked clients, over real HTTP against the broker
process, with MQTT clients checking that a block applies to the very next CONNECT and that
refused CONNECTs show up in the unauthorized list."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .api_client import API_ENV, ApiClient
from .helpers import V5, BrokerProcess, ClientPool, uid
from .scram_client import (
    BANNED,
    NOT_AUTHORIZED,
    SourcedRawClient,
    expect_refused,
    try_connect,
    wait_for,
    watch_broker,
)

UNAUTHORIZED = "/api/unauthorized/client"
BLOCKED = "/api/blockedClient"
CREDS = "/api/mqtt/client/credentials"
CLEANUP_TTL_MINUTES = 20_000  # BLOCKED_CLIENT_CLEANUP_TTL_MINUTES of the test broker
DAY_MS = 86_400_000
ENV = {
    **API_ENV,
    "SECURITY_MQTT_BASIC_ENABLED": "true",
    "BLOCKED_CLIENT_CLEANUP_TTL_MINUTES": str(CLEANUP_TTL_MINUTES),
    "BLOCKED_CLIENT_CLEANUP_PERIOD_MINUTES": "10080",  # no purge while the tests run
}
ALLOWED_PREFIX = "ok-"  # client ids the test broker's credential accepts (any password)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def _api_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    broker = BrokerProcess(tmp_path_factory.mktemp("api-clients"), ENV).start()
    yield broker
    broker.stop()


@pytest.fixture
def api_broker(_api_broker: BrokerProcess) -> Iterator[BrokerProcess]:
    yield from watch_broker(_api_broker)


@pytest.fixture(scope="module")
def api(_api_broker: BrokerProcess) -> ApiClient:
    return ApiClient(_api_broker)


@pytest.fixture(scope="module")
def viewer(_api_broker: BrokerProcess, api: ApiClient) -> Iterator[ApiClient]:
    email, password = "viewer@clients.test", "viewer-password"
    status, user = api.post(
        "/api/admin", {"email": email, "password": password, "authority": "SYS_VIEWER"}
    )
    assert status == 200, user
    yield ApiClient(_api_broker, email, password)
    assert api.delete(f"/api/admin/{user['id']}")[0] == 200


@pytest.fixture
def blocked(api: ApiClient) -> Iterator[list[dict[str, Any]]]:
    """Blocked-client documents a test added; unblocked at the end of the test."""
    added: list[dict[str, Any]] = []
    yield added
    for doc in added:
        api.delete(BLOCKED, params=_delete_params(doc))


@pytest.fixture
def credential(api: ApiClient) -> Iterator[str]:
    """A user name whose MQTT Basic credential accepts any client id, no password."""
    user = f"{ALLOWED_PREFIX}{uid()}"
    value = {"userName": user, "authRules": {"pubAuthRulePatterns": [".*"]}}
    document = {
        "name": user,
        "clientType": "DEVICE",
        "credentialsType": "MQTT_BASIC",
        "credentialsValue": json.dumps(value),
    }
    status, doc = api.post(CREDS, document)
    assert status == 200, doc
    yield user
    api.delete(f"{CREDS}/{doc['id']}")


# --------------------------------------------------------------------------- helpers

VALUE_FIELDS = {
    "CLIENT_ID": "clientId",
    "USERNAME": "username",
    "IP_ADDRESS": "ipAddress",
    "REGEX": "pattern",
}


def _delete_params(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": doc["type"],
        "value": doc[VALUE_FIELDS[doc["type"]]],
        "regexMatchTarget": doc.get("regexMatchTarget"),
    }


def block(api: ApiClient, added: list[dict[str, Any]], document: dict[str, Any]) -> dict[str, Any]:
    status, doc = api.post(BLOCKED, document)
    assert status == 200, doc
    added.append(doc)
    return doc


def connack(
    pool: ClientPool,
    broker: BrokerProcess,
    client_id: str,
    username: str | None,
    password: str | None = None,
) -> int:
    """The CONNACK reason code of one MQTT 5 CONNECT (the connection is then closed)."""
    raw = pool.raw(broker, V5)
    packet = try_connect(raw, client_id, username, password)
    if packet.reason == 0:
        raw.disconnect()
    else:
        expect_refused(raw, packet, packet.reason)
    raw.close()
    assert packet.reason is not None
    return packet.reason


def unauthorized_record(api: ApiClient, client_id: str) -> dict[str, Any]:
    """The unauthorized-client record of ``client_id`` (the broker writes it in the
    background just after the refusal: polled with a deadline)."""

    def attempt() -> dict[str, Any] | None:
        status, doc = api.get(UNAUTHORIZED, params={"clientId": client_id})
        return doc if status == 200 else None

    return wait_for(attempt, f"the unauthorized-client record of {client_id}", timeout=10)


# --------------------------------------------------------------------------- access


def test_every_endpoint_needs_a_token(api_broker: BrokerProcess) -> None:
    anon = ApiClient(api_broker, username=None)
    page = {"pageSize": 10, "page": 0}
    for method, path, params in [
        ("GET", UNAUTHORIZED, page),
        ("GET", f"{UNAUTHORIZED}/v2", page),
        ("GET", UNAUTHORIZED, {"clientId": "x"}),
        ("DELETE", UNAUTHORIZED, {"clientId": "x"}),
        ("DELETE", UNAUTHORIZED, None),
        ("GET", BLOCKED, page),
        ("GET", f"{BLOCKED}/v2", page),
        ("GET", f"{BLOCKED}/ttl", None),
        ("POST", BLOCKED, None),
        ("DELETE", BLOCKED, {"type": "CLIENT_ID", "value": "x"}),
    ]:
        body = {} if method == "POST" else None
        status, error = anon.raw(method, path, body, params=params)
        assert status == 401, (method, path, status, error)
        assert error["errorCode"] == 10


def test_a_viewer_reads_but_may_not_change(
    api: ApiClient, viewer: ApiClient, blocked: list[dict[str, Any]]
) -> None:
    doc = block(api, blocked, {"type": "CLIENT_ID", "clientId": f"ro-{uid()}"})
    page = {"pageSize": 10, "page": 0}
    for path in (UNAUTHORIZED, f"{UNAUTHORIZED}/v2", BLOCKED, f"{BLOCKED}/v2"):
        assert viewer.get(path, params=page)[0] == 200, path
    assert viewer.get(f"{BLOCKED}/ttl")[0] == 200
    for method, path, body, params in [
        ("POST", BLOCKED, {"type": "CLIENT_ID", "clientId": f"ro-{uid()}"}, None),
        ("DELETE", BLOCKED, None, _delete_params(doc)),
        ("DELETE", UNAUTHORIZED, None, {"clientId": "x"}),
        ("DELETE", UNAUTHORIZED, None, None),
    ]:
        status, error = viewer.call(method, path, body, params=params)
        assert status == 403, (method, path, status, error)
        assert error["errorCode"] == 20
    status, page_data = api.get(
        BLOCKED, params={"pageSize": 10, "page": 0, "textSearch": doc["clientId"]}
    )
    assert page_data["totalElements"] == 1  # still blocked


# --------------------------------------------------------------------------- blocked clients


def test_blocking_applies_to_the_next_connect(
    api: ApiClient,
    api_broker: BrokerProcess,
    clients: ClientPool,
    credential: str,
    blocked: list[dict[str, Any]],
) -> None:
    client_id = f"{ALLOWED_PREFIX}{uid()}"
    assert connack(clients, api_broker, client_id, credential) == 0
    doc = block(api, blocked, {"type": "CLIENT_ID", "clientId": client_id, "description": "e2e"})
    assert doc == {
        "type": "CLIENT_ID",
        "clientId": client_id,
        "expirationTime": 0,
        "description": "e2e",
    }
    assert connack(clients, api_broker, client_id, credential) == BANNED
    assert connack(clients, api_broker, f"{client_id}-other", credential) == 0
    assert api.delete(BLOCKED, params={"type": "CLIENT_ID", "value": client_id}) == (200, None)
    assert connack(clients, api_broker, client_id, credential) == 0
    # a block by user name, and an expired block that no longer applies
    block(api, blocked, {"type": "USERNAME", "username": credential})
    assert connack(clients, api_broker, f"{ALLOWED_PREFIX}{uid()}", credential) == BANNED
    api.delete(BLOCKED, params={"type": "USERNAME", "value": credential})
    expired = _now_ms() - 60_000
    block(api, blocked, {"type": "CLIENT_ID", "clientId": client_id, "expirationTime": expired})
    assert connack(clients, api_broker, client_id, credential) == 0


def test_blocking_by_regex_and_ip_address(
    api: ApiClient,
    api_broker: BrokerProcess,
    clients: ClientPool,
    credential: str,
    blocked: list[dict[str, Any]],
) -> None:
    tag = uid()
    regex = {
        "type": "REGEX",
        "pattern": f"{ALLOWED_PREFIX}{tag}-.*",
        "regexMatchTarget": "BY_CLIENT_ID",
    }
    block(api, blocked, regex)
    assert connack(clients, api_broker, f"{ALLOWED_PREFIX}{tag}-1", credential) == BANNED
    assert connack(clients, api_broker, f"x{ALLOWED_PREFIX}{tag}-1", credential) == 0  # whole id
    # REGEX entries are removed with their target; without it the request is a 400
    status, error = api.delete(BLOCKED, params={"type": "REGEX", "value": regex["pattern"]})
    assert status == 400 and "regexMatchTarget" in error["message"]
    status, _ = api.delete(
        BLOCKED,
        params={"type": "REGEX", "value": regex["pattern"], "regexMatchTarget": "BY_USERNAME"},
    )
    assert status == 404
    assert api.delete(BLOCKED, params=_delete_params(regex))[0] == 200
    assert connack(clients, api_broker, f"{ALLOWED_PREFIX}{tag}-1", credential) == 0
    # an IP address is stored canonical: an IPv4-mapped IPv6 address blocks the IPv4 one
    doc = block(api, blocked, {"type": "IP_ADDRESS", "ipAddress": "::ffff:127.0.0.2"})
    assert doc["ipAddress"] == "127.0.0.2"
    with SourcedRawClient(api_broker.host, api_broker.port, V5, source="127.0.0.2") as raw:
        reply = try_connect(raw, f"{ALLOWED_PREFIX}{uid()}", credential)
        expect_refused(raw, reply, BANNED)
    assert connack(clients, api_broker, f"{ALLOWED_PREFIX}{uid()}", credential) == 0  # 127.0.0.1
    assert api.delete(BLOCKED, params={"type": "IP_ADDRESS", "value": "::ffff:127.0.0.2"})[0] == 200


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"clientId": "x"}, "type"),
        ({"type": "BY_NAME", "clientId": "x"}, "type"),
        ({"type": "CLIENT_ID"}, "clientId"),
        ({"type": "USERNAME", "username": ""}, "username"),
        ({"type": "IP_ADDRESS", "ipAddress": "300.1.1.1"}, "ipAddress"),
        ({"type": "REGEX", "pattern": "a.*"}, "regexMatchTarget"),
        ({"type": "REGEX", "pattern": "(", "regexMatchTarget": "BY_CLIENT_ID"}, "pattern"),
        ({"type": "REGEX", "pattern": "a", "regexMatchTarget": "BY_NAME"}, "regexMatchTarget"),
        ({"type": "CLIENT_ID", "clientId": "x", "expirationTime": -1}, "expirationTime"),
        ({"type": "CLIENT_ID", "clientId": "x", "description": 5}, "description"),
    ],
)
def test_block_validation_errors_are_400_naming_the_field(
    api: ApiClient, document: dict[str, Any], field: str
) -> None:
    status, error = api.post(BLOCKED, document)
    assert status == 400 and field in error["message"] and error["errorCode"] == 30, error


def test_unblock_errors(api: ApiClient) -> None:
    assert api.delete(BLOCKED, params={"type": "CLIENT_ID", "value": f"nobody-{uid()}"})[0] == 404
    status, error = api.delete(BLOCKED, params={"type": "CLIENT_ID"})
    assert status == 400 and "value" in error["message"]
    status, error = api.delete(BLOCKED, params={"type": "NAME", "value": "x"})
    assert status == 400 and "type" in error["message"]
    status, error = api.delete(BLOCKED, params={"type": "IP_ADDRESS", "value": "nope"})
    assert status == 400 and "ipAddress" in error["message"]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_blocked_pages_statuses_and_v2_filters(
    api: ApiClient, blocked: list[dict[str, Any]]
) -> None:
    tag = uid()
    now = _now_ms()
    block(
        api, blocked, {"type": "CLIENT_ID", "clientId": f"{tag}-a", "expirationTime": now + DAY_MS}
    )
    block(
        api, blocked, {"type": "USERNAME", "username": f"{tag}-b", "expirationTime": now - 60_000}
    )
    old = now - 8 * DAY_MS  # expired for more than half the cleanup TTL (20000 min ~ 13.9 d)
    block(api, blocked, {"type": "CLIENT_ID", "clientId": f"{tag}-c", "expirationTime": old})
    block(
        api,
        blocked,
        {
            "type": "REGEX",
            "pattern": f"{tag}-d.*",
            "regexMatchTarget": "BY_USERNAME",
            "description": "r",
        },
    )
    base = {"pageSize": 3, "textSearch": tag, "sortProperty": "value"}
    status, first = api.get(BLOCKED, params={**base, "page": 0})
    assert status == 200
    assert [(d["value"], d["status"]) for d in first["data"]] == [
        (f"{tag}-a", "ACTIVE"),
        (f"{tag}-b", "EXPIRED"),
        (f"{tag}-c", "DELETING_SOON"),
    ]
    assert (first["totalElements"], first["totalPages"], first["hasNext"]) == (4, 2, True)
    status, second = api.get(BLOCKED, params={**base, "page": 1})
    assert second["data"] == [
        {
            "type": "REGEX",
            "expirationTime": 0,
            "status": "ACTIVE",
            "description": "r",
            "value": f"{tag}-d.*",
            "regexMatchTarget": "BY_USERNAME",
        }
    ]
    assert second["hasNext"] is False
    status, desc = api.get(BLOCKED, params={**base, "page": 0, "sortOrder": "DESC"})
    assert [d["value"] for d in desc["data"]] == [f"{tag}-d.*", f"{tag}-c", f"{tag}-b"]
    status, error = api.get(BLOCKED, params={**base, "page": 0, "sortProperty": "key"})
    assert status == 400 and "sortProperty" in error["message"]
    status, error = api.get(BLOCKED, params={"page": 0})
    assert status == 400 and "pageSize" in error["message"]

    def v2(**params: Any) -> list[str]:
        status, page = api.get(
            f"{BLOCKED}/v2", params={"pageSize": 10, "page": 0, "textSearch": tag, **params}
        )
        assert status == 200, page
        return sorted(d["value"][len(tag) + 1 :] for d in page["data"])

    assert v2() == ["a", "b", "c", "d.*"]
    assert v2(type="CLIENT_ID") == ["a", "c"]
    assert v2(type="USERNAME,REGEX") == ["b", "d.*"]
    assert v2(regexMatchTarget="BY_USERNAME") == ["d.*"]
    assert v2(value=f"{tag}-B") == ["b"]
    assert v2(startTime=now - DAY_MS, endTime=now + 2 * DAY_MS) == ["a", "b"]
    status, error = api.get(f"{BLOCKED}/v2", params={"pageSize": 10, "page": 0, "type": "X"})
    assert status == 400 and "type" in error["message"]


def test_ttl_is_the_cleanup_setting(api: ApiClient) -> None:
    assert api.get(f"{BLOCKED}/ttl") == (200, CLEANUP_TTL_MINUTES)


# --------------------------------------------------------------------------- unauthorized


def test_refused_connects_are_listed_and_can_be_removed(
    api: ApiClient, api_broker: BrokerProcess, clients: ClientPool
) -> None:
    tag = uid()
    first, second = f"unauth-{tag}-1", f"unauth-{tag}-2"
    assert connack(clients, api_broker, first, f"nobody-{tag}", "pw") == NOT_AUTHORIZED
    assert connack(clients, api_broker, second, None) == NOT_AUTHORIZED
    record = unauthorized_record(api, first)
    assert record["clientId"] == first and record["ipAddress"] == "127.0.0.1"
    assert record["username"] == f"nobody-{tag}"
    assert record["passwordProvided"] is True and record["tlsUsed"] is False
    assert "MQTT Basic" in record["reason"] and isinstance(record["ts"], int)
    assert set(record) == {
        "clientId",
        "ipAddress",
        "ts",
        "username",
        "passwordProvided",
        "tlsUsed",
        "reason",
    }
    unauthorized_record(api, second)
    assert api.get(f"{UNAUTHORIZED}/{first}") == (200, record)  # TBMQ's older path

    # pages, sorting, text search
    status, page = api.get(
        UNAUTHORIZED,
        params={"pageSize": 1, "page": 0, "textSearch": tag, "sortProperty": "clientId"},
    )
    assert status == 200 and [d["clientId"] for d in page["data"]] == [first]
    assert (page["totalElements"], page["totalPages"], page["hasNext"]) == (2, 2, True)
    status, page = api.get(
        UNAUTHORIZED,
        params={
            "pageSize": 1,
            "page": 0,
            "textSearch": tag,
            "sortProperty": "clientId",
            "sortOrder": "DESC",
        },
    )
    assert [d["clientId"] for d in page["data"]] == [second]
    status, error = api.get(UNAUTHORIZED, params={"page": 0})
    assert status == 400 and "pageSize" in error["message"]

    # v2 filters
    def v2(**params: Any) -> list[str]:
        status, page = api.get(
            f"{UNAUTHORIZED}/v2", params={"pageSize": 10, "page": 0, "clientId": tag, **params}
        )
        assert status == 200, page
        return sorted(d["clientId"] for d in page["data"])

    assert v2() == [first, second]
    assert v2(passwordProvidedList="true") == [first]
    assert v2(passwordProvidedList="true,false", tlsUsedList="false") == [first, second]
    assert v2(tlsUsedList="true") == []
    assert v2(username=f"NOBODY-{tag}") == [first]
    assert v2(reason="basic", ipAddress="127.0.0.1") == [first, second]
    assert v2(startTime=record["ts"] + 60_000) == []
    status, error = api.get(
        f"{UNAUTHORIZED}/v2", params={"pageSize": 1, "page": 0, "tlsUsedList": "maybe"}
    )
    assert status == 400 and "tlsUsedList" in error["message"]

    # removal: one client, then everything
    assert api.delete(UNAUTHORIZED, params={"clientId": first}) == (200, None)
    assert api.get(UNAUTHORIZED, params={"clientId": first})[0] == 404
    assert api.delete(UNAUTHORIZED, params={"clientId": first})[0] == 404
    assert api.get(f"{UNAUTHORIZED}/{second}")[0] == 200
    assert api.delete(UNAUTHORIZED) == (200, None)
    status, page = api.get(UNAUTHORIZED, params={"pageSize": 10, "page": 0})
    assert status == 200 and page["totalElements"] == 0 and page["data"] == []


def test_blocked_connects_are_not_recorded_and_success_clears_a_record(
    api: ApiClient,
    api_broker: BrokerProcess,
    clients: ClientPool,
    credential: str,
    blocked: list[dict[str, Any]],
) -> None:
    client_id = f"{ALLOWED_PREFIX}{uid()}"
    assert connack(clients, api_broker, client_id, f"nobody-{uid()}") == NOT_AUTHORIZED
    unauthorized_record(api, client_id)
    assert connack(clients, api_broker, client_id, credential) == 0
    wait_for(
        lambda: api.get(UNAUTHORIZED, params={"clientId": client_id})[0] == 404,
        "the record to go after a successful CONNECT",
    )
    banned = f"{ALLOWED_PREFIX}{uid()}"
    block(api, blocked, {"type": "CLIENT_ID", "clientId": banned})
    assert connack(clients, api_broker, banned, credential) == BANNED
    marker = f"marker-{uid()}"  # refused after the banned one: once it is listed, so would be
    assert connack(clients, api_broker, marker, None) == NOT_AUTHORIZED
    unauthorized_record(api, marker)
    assert api.get(UNAUTHORIZED, params={"clientId": banned})[0] == 404
    api.delete(UNAUTHORIZED, params={"clientId": marker})
