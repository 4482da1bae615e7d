"""The admin API's MQTT client credentials and authentication providers, over real HTTP
against the broker process, with MQTT clients checking that every change applies to the
very next CONNECT (no waiting: the API reloads the broker's security state itself)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from . import rawmqtt as rm
from .api_client import API_ENV, ApiClient
from .helpers import V5, BrokerProcess, ClientPool, uid
from .scram_client import (
    NOT_AUTHORIZED,
    ScramClient,
    expect_refused,
    scram_connect,
    try_connect,
    watch_broker,
)

CREDS = "/api/mqtt/client/credentials"
PROVIDERS = "/api/mqtt/auth/providers"
PROVIDER = "/api/mqtt/auth/provider"
PRIORITY = f"{PROVIDER}/priority"
MQTT_AUTHORIZATION = "/api/admin/settings/mqttAuthorization"
BASIC_ON = {"SECURITY_MQTT_BASIC_ENABLED": "true"}
VIEWER = ("viewer@credentials.test", "viewer-password")
NO_MATCHING_SUBSCRIBERS = 0x10


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def _api_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    broker = BrokerProcess(tmp_path_factory.mktemp("api-credentials"), {**API_ENV, **BASIC_ON})
    broker.start()
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
    email, password = VIEWER
    status, user = api.post(
        "/api/admin", {"email": email, "password": password, "authority": "SYS_VIEWER"}
    )
    assert status == 200, user
    yield ApiClient(_api_broker, email, password)
    assert api.delete(f"/api/admin/{user['id']}")[0] == 200


@pytest.fixture
def created(api: ApiClient) -> Iterator[list[str]]:
    """Ids of credentials a test created; removed at the end of the test."""
    ids: list[str] = []
    yield ids
    for cid in ids:
        api.delete(f"{CREDS}/{cid}")


@pytest.fixture
def restore_providers(api: ApiClient) -> Iterator[None]:
    """Put the providers and their order back as they were before the test."""
    status, page = api.get(PROVIDERS)
    assert status == 200
    status, order = api.get(PRIORITY)
    assert status == 200
    yield
    for provider in page["data"]:
        status, _ = api.post(PROVIDER, provider)
        assert status == 200
    assert api.post(PRIORITY, order) == (200, order)


# --------------------------------------------------------------------------- helpers


def basic_doc(
    name: str,
    *,
    user: str | None = None,
    client_id: str | None = None,
    password: str | None = None,
    client_type: str = "DEVICE",
    pub: list[str] | None = None,
) -> dict[str, Any]:
    value = {
        "clientId": client_id,
        "userName": user,
        "password": password,
        "authRules": {"pubAuthRulePatterns": pub or [".*"], "subAuthRulePatterns": [".*"]},
    }
    return {
        "name": name,
        "clientType": client_type,
        "credentialsType": "MQTT_BASIC",
        "credentialsValue": json.dumps(value),
    }


def create(api: ApiClient, created: list[str], document: dict[str, Any]) -> dict[str, Any]:
    status, doc = api.post(CREDS, document)
    assert status == 200, doc
    created.append(doc["id"])
    return doc


def connack(
    pool: ClientPool,
    broker: BrokerProcess,
    username: str | None,
    password: str | None = None,
    client_id: str | None = None,
) -> int:
    """The CONNACK reason code of one MQTT 5 CONNECT (the connection is then closed)."""
    raw = pool.raw(broker, V5)
    packet = try_connect(raw, client_id or f"api-{uid()}", username, password)
    if packet.reason == 0:
        raw.disconnect()
    else:
        expect_refused(raw, packet, packet.reason)
    raw.close()
    assert packet.reason is not None
    return packet.reason


def value_of(doc: dict[str, Any]) -> dict[str, Any]:
    value = json.loads(doc["credentialsValue"])
    assert isinstance(value, dict)
    return value


# --------------------------------------------------------------------------- access


def test_every_endpoint_needs_a_token(api_broker: BrokerProcess) -> None:
    anon = ApiClient(api_broker, username=None)
    some_id = "00000000-0000-0000-0000-000000000000"
    for method, path, params in [
        ("GET", CREDS, {"pageSize": 10, "page": 0}),
        ("GET", CREDS, {"name": "x"}),
        ("GET", f"/api/v2{CREDS[4:]}", {"pageSize": 10, "page": 0}),
        ("GET", f"{CREDS}/info", None),
        ("GET", f"{CREDS}/{some_id}", None),
        ("POST", CREDS, None),
        ("POST", f"{CREDS}/{some_id}", None),
        ("DELETE", f"{CREDS}/{some_id}", None),
        ("GET", PROVIDERS, None),
        ("GET", f"{PROVIDER}/type/MQTT_BASIC", None),
        ("POST", f"{PROVIDER}/MQTT_BASIC/disable", None),
        ("GET", PRIORITY, None),
        ("POST", PRIORITY, None),
        ("GET", MQTT_AUTHORIZATION, None),
    ]:
        body = {} if method == "POST" else None
        status, error = anon.raw(method, path, body, params=params)
        assert status == 401, (method, path, status, error)
        assert error["errorCode"] == 10


def test_a_viewer_reads_but_may_not_change(
    api: ApiClient, viewer: ApiClient, created: list[str]
) -> None:
    doc = create(api, created, basic_doc(f"ro-{uid()}", user=f"ro-{uid()}"))
    assert viewer.get(CREDS, params={"pageSize": 10, "page": 0})[0] == 200
    assert viewer.get(f"{CREDS}/{doc['id']}")[0] == 200
    assert viewer.get(f"{CREDS}/info")[0] == 200
    assert viewer.get(PROVIDERS)[0] == 200
    assert viewer.get(PRIORITY)[0] == 200
    for method, path, body in [
        ("POST", CREDS, basic_doc(f"ro-{uid()}", user=f"ro-{uid()}")),
        ("POST", CREDS, {**doc, "name": "renamed"}),
        ("POST", f"{CREDS}/{doc['id']}", {"currentPassword": "", "newPassword": "x"}),
        ("DELETE", f"{CREDS}/{doc['id']}", None),
        ("POST", f"{PROVIDER}/MQTT_BASIC/disable", None),
        ("POST", f"{PROVIDER}/X_509/enable", None),
        ("POST", PROVIDER, {"type": "MQTT_BASIC", "enabled": False}),
        ("POST", PRIORITY, ["X_509", "MQTT_BASIC"]),
        ("POST", MQTT_AUTHORIZATION, {"key": "mqttAuthorization", "jsonValue": {}}),
    ]:
        status, error = viewer.call(method, path, body)
        assert status == 403, (method, path, status, error)
        assert error["errorCode"] == 20
    assert api.get(f"{CREDS}/{doc['id']}")[1]["name"] == doc["name"]  # untouched


# --------------------------------------------------------------------------- credentials


def test_create_read_and_no_secret_leaves_the_broker(api: ApiClient, created: list[str]) -> None:
    name, user = f"dev-{uid()}", f"user-{uid()}"
    doc = create(api, created, basic_doc(name, user=user, password="s3cret", pub=["a/.*"]))
    assert set(doc) == {
        "id",
        "createdTime",
        "name",
        "clientType",
        "credentialsType",
        "credentialsId",
        "credentialsValue",
    }
    assert (doc["name"], doc["clientType"], doc["credentialsType"]) == (
        name,
        "DEVICE",
        "MQTT_BASIC",
    )
    assert doc["credentialsId"] == f"username|{user}"
    assert isinstance(doc["createdTime"], int) and doc["createdTime"] > 0
    value = value_of(doc)
    assert value["password"] == "***" and value["userName"] == user
    assert value["authRules"]["pubAuthRulePatterns"] == ["a/.*"]
    by_id = api.get(f"{CREDS}/{doc['id']}")
    by_name = api.get(CREDS, params={"name": name})
    assert by_id == by_name == (200, doc)
    status, page = api.get(CREDS, params={"pageSize": 1000, "page": 0, "textSearch": name})
    assert status == 200 and page["data"] == [doc]
    for response in (by_id[1], by_name[1], page):
        text = json.dumps(response)
        assert "s3cret" not in text and "scrypt$" not in text, text


def test_unknown_ids_and_names(api: ApiClient) -> None:
    missing = "2f1c6a8e-0d1b-4a51-9e5e-000000000000"
    status, error = api.get(f"{CREDS}/{missing}")
    assert status == 404 and error["errorCode"] == 32
    assert api.delete(f"{CREDS}/{missing}")[0] == 404
    assert api.get(CREDS, params={"name": f"nobody-{uid()}"})[0] == 404
    status, error = api.get(f"{CREDS}/not-a-uuid")
    assert status == 400 and "credentialsId" in error["message"]
    status, error = api.post(CREDS, {**basic_doc("x", user="x"), "id": missing})
    assert status == 404


@pytest.mark.parametrize(
    ("document", "field"),
    [
        (
            {"clientType": "DEVICE", "credentialsType": "MQTT_BASIC", "credentialsValue": "{}"},
            "name",
        ),
        ({**basic_doc("v", user="v"), "clientType": "ROBOT"}, "clientType"),
        ({**basic_doc("v", user="v"), "credentialsType": "JWT"}, "credentialsType"),
        ({**basic_doc("v", user="v"), "credentialsValue": "{not json"}, "credentialsValue"),
        (basic_doc("v"), "credentialsValue"),  # neither clientId nor userName
        (basic_doc("v", user="v", pub=["("]), "pubAuthRulePatterns"),
        (
            {
                "name": "v",
                "clientType": "DEVICE",
                "credentialsType": "X_509",
                "credentialsValue": json.dumps({"certCnIsRegex": True}),
            },
            "certCnPattern",
        ),
    ],
)
def test_validation_errors_are_400_naming_the_field(
    api: ApiClient, document: dict[str, Any], field: str
) -> None:
    status, error = api.post(CREDS, document)
    assert status == 400, error
    assert error["errorCode"] == 30 and field in error["message"], error


def test_duplicates_are_refused(api: ApiClient, created: list[str]) -> None:
    name, user = f"dup-{uid()}", f"dup-{uid()}"
    create(api, created, basic_doc(name, user=user))
    status, error = api.post(CREDS, basic_doc(name, user=f"other-{uid()}"))
    assert status == 400 and name in error["message"] and "--replace" not in error["message"]
    status, error = api.post(CREDS, basic_doc(f"other-{uid()}", user=user))
    assert status == 400 and f"username|{user}" in error["message"]


def test_a_created_credential_applies_at_once_and_a_removed_one_too(
    api: ApiClient, api_broker: BrokerProcess, clients: ClientPool, created: list[str]
) -> None:
    user, password = f"live-{uid()}", "live-pw"
    assert connack(clients, api_broker, user, password) == NOT_AUTHORIZED
    doc = create(api, created, basic_doc(f"live-{uid()}", user=user, password=password))
    assert connack(clients, api_broker, user, password) == 0
    assert connack(clients, api_broker, user, "wrong") == NOT_AUTHORIZED
    assert api.delete(f"{CREDS}/{doc['id']}") == (200, None)
    assert connack(clients, api_broker, user, password) == NOT_AUTHORIZED
    assert api.get(f"{CREDS}/{doc['id']}")[0] == 404


def test_update_by_id_keeps_the_password_and_applies_the_rules(
    api: ApiClient, api_broker: BrokerProcess, clients: ClientPool, created: list[str]
) -> None:
    user, password = f"upd-{uid()}", "upd-pw"
    doc = create(
        api, created, basic_doc(f"upd-{uid()}", user=user, password=password, pub=["a/.*"])
    )
    value = value_of(doc)  # password "***": kept
    value["authRules"]["pubAuthRulePatterns"] = ["b/.*"]
    renamed = f"renamed-{uid()}"
    update = {
        **doc,
        "name": renamed,
        "clientType": "APPLICATION",
        "credentialsValue": json.dumps(value),
    }
    status, saved = api.post(CREDS, update)
    assert status == 200, saved
    assert (saved["id"], saved["createdTime"]) == (doc["id"], doc["createdTime"])
    assert (saved["name"], saved["clientType"]) == (renamed, "APPLICATION")
    assert value_of(saved)["authRules"]["pubAuthRulePatterns"] == ["b/.*"]
    assert api.get(CREDS, params={"name": doc["name"]})[0] == 404
    # the new rules apply to the next connection; the password is still the old one
    raw = clients.raw(api_broker, V5)
    assert try_connect(raw, f"upd-{uid()}", user, password).reason == 0
    raw.publish("a/x", b"1", qos=1, packet_id=1)
    assert raw.expect(rm.PUBACK).reason == NOT_AUTHORIZED
    raw.publish("b/x", b"1", qos=1, packet_id=2)
    assert raw.expect(rm.PUBACK).reason == NO_MATCHING_SUBSCRIBERS  # allowed, nobody listens
    # a new password in an update replaces the old one; null removes it
    value["password"] = "new-pw"
    assert api.post(CREDS, {**saved, "credentialsValue": json.dumps(value)})[0] == 200
    assert connack(clients, api_broker, user, password) == NOT_AUTHORIZED
    assert connack(clients, api_broker, user, "new-pw") == 0
    value["password"] = None
    status, saved = api.post(CREDS, {**saved, "credentialsValue": json.dumps(value)})
    assert status == 200 and value_of(saved)["password"] is None
    assert connack(clients, api_broker, user, "anything") == 0
    # an update may not take another credential's name
    other = create(api, created, basic_doc(f"other-{uid()}", user=f"other-{uid()}"))
    status, error = api.post(CREDS, {**saved, "name": other["name"]})
    assert status == 400 and "name" in error["message"]


def test_change_password(
    api: ApiClient, api_broker: BrokerProcess, clients: ClientPool, created: list[str]
) -> None:
    user = f"pw-{uid()}"
    doc = create(api, created, basic_doc(f"pw-{uid()}", user=user, password="first-pw"))
    path = f"{CREDS}/{doc['id']}"
    status, error = api.post(path, {"currentPassword": "wrong", "newPassword": "second-pw"})
    assert status == 400 and "currentPassword" in error["message"]
    assert connack(clients, api_broker, user, "first-pw") == 0
    status, saved = api.post(path, {"currentPassword": "first-pw", "newPassword": "second-pw"})
    assert status == 200 and saved["id"] == doc["id"] and value_of(saved)["password"] == "***"
    assert connack(clients, api_broker, user, "first-pw") == NOT_AUTHORIZED
    assert connack(clients, api_broker, user, "second-pw") == 0
    x509 = create(
        api,
        created,
        {
            "name": f"cert-{uid()}",
            "clientType": "DEVICE",
            "credentialsType": "X_509",
            "credentialsValue": json.dumps(
                {"certCnPattern": f"cn-{uid()}", "authRulesMapping": {}}
            ),
        },
    )
    status, error = api.post(f"{CREDS}/{x509['id']}", {"currentPassword": "", "newPassword": "x"})
    assert status == 400 and "MQTT_BASIC" in error["message"]


def test_paging_text_search_and_sorting(api: ApiClient, created: list[str]) -> None:
    prefix = f"pg-{uid()}"
    for i in (3, 1, 4, 0, 2):
        create(api, created, basic_doc(f"{prefix}-{i}", user=f"{prefix}-u{i}"))
    base = {"pageSize": 2, "textSearch": prefix.upper(), "sortProperty": "name"}
    pages = [api.get(CREDS, params={**base, "page": p})[1] for p in range(3)]
    assert [[d["name"] for d in p["data"]] for p in pages] == [
        [f"{prefix}-0", f"{prefix}-1"],
        [f"{prefix}-2", f"{prefix}-3"],
        [f"{prefix}-4"],
    ]
    assert [(p["totalElements"], p["totalPages"], p["hasNext"]) for p in pages] == [
        (5, 3, True),
        (5, 3, True),
        (5, 3, False),
    ]
    status, page = api.get(CREDS, params={**base, "page": 0, "sortOrder": "DESC"})
    assert [d["name"] for d in page["data"]] == [f"{prefix}-4", f"{prefix}-3"]
    status, page = api.get(
        CREDS,
        params={"pageSize": 10, "page": 0, "textSearch": prefix, "sortProperty": "createdTime"},
    )
    assert [d["name"][-1] for d in page["data"]] == ["3", "1", "4", "0", "2"]
    for params, field in [
        ({"page": 0}, "pageSize"),
        ({"pageSize": 10}, "page"),
        ({"pageSize": 0, "page": 0}, "pageSize"),
        ({"pageSize": 10, "page": 0, "sortProperty": "password"}, "sortProperty"),
        ({"pageSize": 10, "page": 0, "sortOrder": "UP"}, "sortOrder"),
    ]:
        status, error = api.get(CREDS, params=params)
        assert status == 400 and field in error["message"], (params, error)


def test_v2_filters_and_info(api: ApiClient, created: list[str]) -> None:
    status, before = api.get(f"{CREDS}/info")
    assert status == 200
    prefix = f"v2-{uid()}"
    create(api, created, basic_doc(f"{prefix}-dev", user=f"{prefix}-dev"))
    create(
        api, created, basic_doc(f"{prefix}-app", user=f"{prefix}-app", client_type="APPLICATION")
    )
    create(
        api,
        created,
        {
            "name": f"{prefix}-cert",
            "clientType": "APPLICATION",
            "credentialsType": "X_509",
            "credentialsValue": json.dumps(
                {"certCnPattern": f"^{prefix}-.*$", "certCnIsRegex": True}
            ),
        },
    )
    v2 = f"/api/v2{CREDS[4:]}"

    def names(**params: Any) -> list[str]:
        status, page = api.get(
            v2, params={"pageSize": 50, "page": 0, "textSearch": prefix, **params}
        )
        assert status == 200, page
        return sorted(d["name"][len(prefix) + 1 :] for d in page["data"])

    assert names() == ["app", "cert", "dev"]
    assert names(clientTypeList="APPLICATION") == ["app", "cert"]
    assert names(credentialsTypeList="X_509") == ["cert"]
    assert names(clientTypeList="DEVICE,APPLICATION", credentialsTypeList="MQTT_BASIC") == [
        "app",
        "dev",
    ]
    status, error = api.get(v2, params={"pageSize": 5, "page": 0, "clientTypeList": "ROBOT"})
    assert status == 400 and "clientTypeList" in error["message"]
    status, after = api.get(f"{CREDS}/info")
    assert after == {
        "deviceCredentialsCount": before["deviceCredentialsCount"] + 1,
        "applicationCredentialsCount": before["applicationCredentialsCount"] + 2,
        "totalCount": before["totalCount"] + 3,
    }


def test_scram_credentials_and_provider(
    api: ApiClient,
    api_broker: BrokerProcess,
    clients: ClientPool,
    created: list[str],
    restore_providers: None,
) -> None:
    user = f"scram-{uid()}"
    value = {"userName": user, "password": "scram-pw", "algorithm": "SHA_256"}
    doc = create(
        api,
        created,
        {
            "name": user,
            "clientType": "DEVICE",
            "credentialsType": "SCRAM",
            "credentialsValue": json.dumps(value),
        },
    )
    shown = value_of(doc)
    assert "password" not in shown and "storedKey" not in shown and "salt" not in shown

    def scram(password: str) -> int:
        raw = clients.raw(api_broker, V5)
        reply = scram_connect(raw, f"scram-{uid()}", ScramClient(user, password))
        raw.close()
        assert reply.type == rm.CONNACK and reply.reason is not None
        return reply.reason

    assert scram("scram-pw") == NOT_AUTHORIZED  # SCRAM is disabled
    status, provider = api.post(f"{PROVIDER}/SCRAM/enable")
    assert status == 200 and provider["enabled"] is True
    assert scram("scram-pw") == 0
    # an update without a password keeps the salt and keys
    shown["authRules"] = {"pubAuthRulePatterns": ["s/.*"], "subAuthRulePatterns": []}
    status, saved = api.post(CREDS, {**doc, "credentialsValue": json.dumps(shown)})
    assert status == 200, saved
    assert scram("scram-pw") == 0
    status, error = api.post(
        CREDS, {**doc, "credentialsValue": json.dumps({**shown, "userName": "x"})}
    )
    assert status == 400 and "password" in error["message"]


# --------------------------------------------------------------------------- providers


def test_providers_list_and_lookup(api: ApiClient) -> None:
    status, page = api.get(PROVIDERS, params={"pageSize": 10, "page": 0, "sortProperty": "type"})
    assert status == 200 and page["totalElements"] == 3 and page["hasNext"] is False
    by_type = {p["type"]: p for p in page["data"]}
    assert sorted(by_type) == ["MQTT_BASIC", "SCRAM", "X_509"]
    basic = by_type["MQTT_BASIC"]
    assert basic["enabled"] is True and by_type["X_509"]["enabled"] is False
    assert basic["configuration"] == {
        "type": "MQTT_BASIC",
        "authStrategy": "CLIENT_ID_AND_USERNAME",
    }
    assert by_type["X_509"]["configuration"] == {
        "type": "X_509",
        "skipValidityCheckForClientCert": False,
    }
    assert re.fullmatch(r"[0-9a-f-]{36}", basic["id"])
    assert api.get(f"{PROVIDER}/{basic['id']}") == (200, basic)
    assert api.get(f"{PROVIDER}/type/MQTT_BASIC") == (200, basic)
    assert api.get(f"{PROVIDER}/basic/strategy") == (200, "CLIENT_ID_AND_USERNAME")
    assert api.get(PROVIDERS)[1]["totalElements"] == 3  # paging parameters are optional
    status, error = api.get(f"{PROVIDER}/type/JWT")
    assert status == 404 and "not implemented" in error["message"]
    status, error = api.get(f"{PROVIDER}/type/FOO")
    assert status == 400 and "authProviderType" in error["message"]
    assert api.get(f"{PROVIDER}/6b1c0c1e-0000-4000-8000-000000000000")[0] == 404


def test_disabling_basic_opens_the_broker_and_enabling_closes_it(
    api: ApiClient, api_broker: BrokerProcess, clients: ClientPool, restore_providers: None
) -> None:
    stranger = f"stranger-{uid()}"
    assert connack(clients, api_broker, stranger, "pw") == NOT_AUTHORIZED
    basic_id = api.get(f"{PROVIDER}/type/MQTT_BASIC")[1]["id"]
    status, provider = api.post(f"{PROVIDER}/{basic_id}/disable")
    assert status == 200 and provider["enabled"] is False
    assert connack(clients, api_broker, stranger, "pw") == 0
    assert api_broker.wait_for_log(r"WARNING pytbmq\.security: authentication is now disabled")
    status, provider = api.post(f"{PROVIDER}/{basic_id}/enable")
    assert status == 200 and provider["enabled"] is True
    assert connack(clients, api_broker, stranger, "pw") == NOT_AUTHORIZED


def test_saving_a_provider_configuration(
    api: ApiClient, api_broker: BrokerProcess, clients: ClientPool, created: list[str],
    restore_providers: None,
) -> None:  # fmt: skip
    cid, user = f"strat-{uid()}", f"strat-{uid()}"
    create(api, created, basic_doc(f"strat-{uid()}", client_id=cid))
    assert connack(clients, api_broker, user, client_id=cid) == 0
    body = {
        "type": "MQTT_BASIC",
        "configuration": {"type": "MQTT_BASIC", "authStrategy": "USERNAME"},
    }
    status, provider = api.post(PROVIDER, body)
    assert status == 200 and provider["configuration"]["authStrategy"] == "USERNAME"
    assert api.get(f"{PROVIDER}/basic/strategy") == (200, "USERNAME")
    assert connack(clients, api_broker, user, client_id=cid) == NOT_AUTHORIZED  # ids not used
    for bad, field in [
        ({"type": "MQTT_BASIC", "configuration": {"authStrategy": "EVERYTHING"}}, "authStrategy"),
        ({"type": "MQTT_BASIC", "enabled": "yes"}, "enabled"),
        ({"type": "X_509", "configuration": {"skipValidityCheckForClientCert": 1}}, "skipValidity"),
        ({"configuration": {}}, "type"),
    ]:
        status, error = api.post(PROVIDER, bad)
        assert status == 400 and field in error["message"], (bad, error)


def test_priority_and_the_mqtt_authorization_setting(
    api: ApiClient, restore_providers: None
) -> None:
    assert api.get(PRIORITY) == (200, ["MQTT_BASIC", "X_509"])
    assert api.post(PRIORITY, ["X_509", "MQTT_BASIC", "JWT", "HTTP"]) == (
        200,
        ["X_509", "MQTT_BASIC"],
    )
    assert api.get(MQTT_AUTHORIZATION) == (
        200,
        {
            "key": "mqttAuthorization",
            "jsonValue": {
                "priorities": ["X_509", "MQTT_BASIC"],
                "useListenerBasedProviderOnly": False,
            },
        },
    )
    status, setting = api.post(
        MQTT_AUTHORIZATION,
        {"key": "mqttAuthorization", "jsonValue": {"priorities": ["MQTT_BASIC"]}},
    )
    assert status == 200 and setting["jsonValue"]["priorities"] == ["MQTT_BASIC", "X_509"]
    assert api.post(PRIORITY, {"priorities": ["X_509"]}) == (200, ["X_509", "MQTT_BASIC"])
    for bad in (["MQTT_BASIC", "BASIC"], ["FOO"], "MQTT_BASIC", [1]):
        status, error = api.post(PRIORITY, bad)
        assert status == 400 and "priorities" in error["message"], (bad, error)
    status, error = api.post(MQTT_AUTHORIZATION, {"jsonValue": {"priorities": ["NOPE"]}})
    assert status == 400 and "jsonValue.priorities" in error["message"]
    status, error = api.post(MQTT_AUTHORIZATION, {"key": "general", "jsonValue": {}})
    assert status == 400 and "key" in error["message"]


def test_provider_changes_survive_a_restart(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "b", {**API_ENV, **BASIC_ON}).start()
    try:
        api = ApiClient(broker)
        assert api.post(f"{PROVIDER}/MQTT_BASIC/disable")[0] == 200
        assert api.post(PRIORITY, ["X_509", "MQTT_BASIC"])[0] == 200
    finally:
        broker.stop()
    mark = broker.log_mark()
    broker.start()
    try:
        broker.wait_for_log(
            r"INFO pytbmq\.security: the authentication provider settings stored in .* "
            r"override SECURITY_MQTT_\*",
            since=mark,
        )
        assert broker.wait_for_log(r"WARNING .*authentication is disabled", since=mark)
        api = ApiClient(broker)
        assert api.get(f"{PROVIDER}/type/MQTT_BASIC")[1]["enabled"] is False
        assert api.get(PRIORITY) == (200, ["X_509", "MQTT_BASIC"])
    finally:
        broker.stop()
