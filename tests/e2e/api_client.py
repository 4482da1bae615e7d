"""A small HTTP client for the admin REST API of a running broker (stdlib only).

``ApiClient(broker)`` signs in as the first admin (the broker must be started with
``SECURITY_ADMIN_PASSWORD=ADMIN_PASSWORD``, see ``API_ENV``) and sends JSON requests with
the token in ``X-Authorization``; every call returns ``(status, body)`` with the body
parsed as JSON when it is JSON. ``raw`` sends without a token.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .helpers import BrokerProcess

ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "admin-password-for-tests"
API_ENV = {"SECURITY_ADMIN_PASSWORD": ADMIN_PASSWORD}


class ApiClient:
    def __init__(
        self,
        broker: BrokerProcess,
        username: str | None = ADMIN_USERNAME,
        password: str = ADMIN_PASSWORD,
        *,
        https: bool = False,
        context: ssl.SSLContext | None = None,
    ) -> None:
        scheme = "https" if https else "http"
        self.base = f"{scheme}://{broker.host}:{broker.ports['http']}"
        self.context = context
        self.token: str | None = None
        self.refresh_token: str | None = None
        if username is not None:
            self.login(username, password)

    def login(self, username: str, password: str) -> None:
        status, body = self.raw(
            "POST", "/api/auth/login", {"username": username, "password": password}
        )
        assert status == 200, f"login as {username!r} failed: {status} {body}"
        self.token = body["token"]
        self.refresh_token = body["refreshToken"]

    def raw(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        url = self.base + path
        if params:
            url += "?" + urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=15, context=self.context) as response:
                return response.status, _parse(response.read(), response.headers)
        except urllib.error.HTTPError as error:
            return error.code, _parse(error.read(), error.headers)

    def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        headers = dict(kwargs.pop("headers", None) or {})
        if self.token:
            headers.setdefault("X-Authorization", f"Bearer {self.token}")
        return self.raw(method, path, body, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        return self.call("POST", path, body, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return self.call("DELETE", path, **kwargs)


def _parse(data: bytes, headers: Any) -> Any:
    if "json" in (headers.get("Content-Type") or ""):
        return json.loads(data) if data else None
    return data.decode("utf-8", "replace")
