"""The admin API's sign-in, tokens and roles, over real HTTP against the broker process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .api_client import ADMIN_PASSWORD, API_ENV, ApiClient
from .helpers import BrokerProcess


@pytest.fixture(scope="module")
def api_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    broker = BrokerProcess(tmp_path_factory.mktemp("api-auth"), API_ENV).start()
    yield broker
    broker.stop()


def test_login_user_and_refresh(api_broker: BrokerProcess) -> None:
    api = ApiClient(api_broker)
    status, user = api.get("/api/auth/user")
    assert status == 200 and user["email"] == "admin" and user["authority"] == "SYS_ADMIN"
    status, pair = api.raw("POST", "/api/auth/token", {"refreshToken": api.refresh_token})
    assert status == 200 and pair["token"] and pair["refreshToken"]
    # a refresh token is not an access token
    status, body = api.raw(
        "GET", "/api/auth/user", headers={"X-Authorization": f"Bearer {api.refresh_token}"}
    )
    assert status == 401 and body["errorCode"] == 10


def test_no_token_or_bad_token_is_401(api_broker: BrokerProcess) -> None:
    anon = ApiClient(api_broker, username=None)
    status, body = anon.get("/api/auth/user")
    assert status == 401 and "bearer" in body["message"].lower()
    status, _ = anon.raw("GET", "/api/auth/user", headers={"Authorization": "Bearer nonsense"})
    assert status == 401
    status, body = anon.raw("POST", "/api/auth/login", {"username": "admin", "password": "x"})
    assert status == 401 and body["status"] == 401


def test_validation_error_is_400_naming_the_field(api_broker: BrokerProcess) -> None:
    api = ApiClient(api_broker)
    status, body = api.get("/api/admin", params={"page": 0})
    assert status == 400 and "pageSize" in body["message"]
    status, body = api.raw("POST", "/api/auth/login", {"username": "admin"})
    assert status == 400 and "password" in body["message"]


def test_viewer_role_reads_but_gets_403_on_changes(api_broker: BrokerProcess) -> None:
    api = ApiClient(api_broker)
    status, viewer = api.post(
        "/api/admin",
        {"email": "viewer@example.com", "password": "viewer-password", "authority": "SYS_VIEWER"},
    )
    assert status == 200, viewer
    ro = ApiClient(api_broker, "viewer@example.com", "viewer-password")
    status, page = ro.get("/api/admin", params={"pageSize": 10, "page": 0})
    assert status == 200 and page["totalElements"] >= 2
    status, body = ro.post("/api/admin", {"email": "x@example.com", "password": "another-password"})
    assert status == 403 and body["errorCode"] == 20
    assert api.delete(f"/api/admin/{viewer['id']}")[0] == 200
    assert ro.get("/api/auth/user")[0] == 401  # the user is gone


def test_change_password(api_broker: BrokerProcess) -> None:
    api = ApiClient(api_broker)
    api.post("/api/admin", {"email": "pw@example.com", "password": "first-password"})
    user = ApiClient(api_broker, "pw@example.com", "first-password")
    status, body = user.post(
        "/api/auth/changePassword", {"currentPassword": "wrong", "newPassword": "second-password"}
    )
    assert status == 400 and "currentPassword" in body["message"]
    status, _ = user.post(
        "/api/auth/changePassword",
        {"currentPassword": "first-password", "newPassword": "second-password"},
    )
    assert status == 200
    ApiClient(api_broker, "pw@example.com", "second-password")
    ApiClient(api_broker, "admin", ADMIN_PASSWORD)  # the first admin is untouched


def test_paging_shape(api_broker: BrokerProcess) -> None:
    api = ApiClient(api_broker)
    for i in range(3):
        api.post("/api/admin", {"email": f"page{i}@example.com", "password": "page-password"})
    status, page = api.get(
        "/api/admin",
        params={"pageSize": 2, "page": 0, "textSearch": "page", "sortProperty": "email"},
    )
    assert status == 200
    assert [u["email"] for u in page["data"]] == ["page0@example.com", "page1@example.com"]
    assert page["totalElements"] == 3 and page["totalPages"] == 2 and page["hasNext"] is True
    status, body = api.get("/api/admin", params={"pageSize": 2, "page": 0, "sortProperty": "x"})
    assert status == 400 and "sortProperty" in body["message"]


def test_openapi_and_swagger_ui_are_served(api_broker: BrokerProcess) -> None:
    anon = ApiClient(api_broker, username=None)
    status, doc = anon.raw("GET", "/v3/api-docs")
    assert status == 200 and "/api/auth/login" in doc["paths"]
    status, html = anon.raw("GET", "/swagger-ui/")
    assert status == 200 and "/swagger-ui/static/swagger-ui-bundle.js" in html
    status, js = anon.raw("GET", "/swagger-ui/static/swagger-ui-bundle.js")
    assert status == 200 and len(js) > 100_000


def test_generated_first_admin_password_is_logged_once(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "b").start()
    try:
        match = broker.wait_for_log(r"first admin user 'admin' with the generated password (\S+)")
        ApiClient(broker, "admin", match.group(1))
    finally:
        broker.stop()
    mark = broker.log_mark()
    broker.start()  # the same data dir: the admin exists, nothing is generated or logged
    try:
        broker.wait_for_log(r"listener http bound to", since=mark)
        assert not [line for line in broker.logs()[mark:] if "generated password" in line]
        ApiClient(broker, "admin", match.group(1))
    finally:
        broker.stop()
