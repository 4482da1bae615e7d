"""The broker's live security state (pytbmq.security): reload, records, cleanup."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

from pytbmq.auth.blocked import BlockedClient, BlockedType
from pytbmq.auth.credentials import MqttClientCredentials, parse_credentials
from pytbmq.auth.unauthorized import UnauthorizedClient
from pytbmq.config import Settings, load_settings
from pytbmq.security import Security
from pytbmq.storage.security import SECURITY_DB_FILE, SecurityDb


def settings(tmp_path: Path, **env: str) -> Settings:
    return load_settings({"PYTBMQ_DATA_DIR": str(tmp_path), **env})


def basic(name: str) -> MqttClientCredentials:
    return parse_credentials(
        {
            "name": name,
            "clientType": "DEVICE",
            "credentialsType": "MQTT_BASIC",
            "credentialsValue": json.dumps({"userName": name}),
        }
    )


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


def test_picks_up_changes_committed_by_another_process(tmp_path: Path) -> None:
    async def run() -> None:
        security = Security(settings(tmp_path, SECURITY_MQTT_BASIC_ENABLED="true"))
        await security.start()
        try:
            assert security.authenticator.state.count == 0
            with SecurityDb(tmp_path / SECURITY_DB_FILE) as other:
                other.add_credentials(basic("alice"))
                other.add_blocked(BlockedClient(BlockedType.CLIENT_ID, "bad"))
            await until(lambda: security.authenticator.state.count == 1)
            await until(lambda: len(security.authenticator.state.blocked) == 1)
        finally:
            await security.stop()

    asyncio.run(run())


def test_records_and_forgets_unauthorized_clients(tmp_path: Path) -> None:
    async def run() -> None:
        security = Security(settings(tmp_path))
        await security.start()
        security.record_unauthorized("dev1", "10.0.0.1", "u", True, False, "wrong password")
        security.record_unauthorized("", "10.0.0.2", None, False, True, "TLS handshake: x")
        security.forget_unauthorized("dev2", "10.0.0.9")  # nothing known: no write
        security.forget_unauthorized("dev3", "10.0.0.2")  # clears the address record
        await security.stop()  # drains the database thread

    asyncio.run(run())
    with SecurityDb(tmp_path / SECURITY_DB_FILE) as db:
        records = db.list_unauthorized()
    assert [(r.client_id, r.ip_address, r.reason) for r in records] == [
        ("dev1", "10.0.0.1", "wrong password")
    ]


def test_recording_can_be_disabled(tmp_path: Path) -> None:
    async def run() -> None:
        security = Security(settings(tmp_path, SECURITY_UNAUTH_CLIENTS_ENABLED="false"))
        await security.start()
        security.record_unauthorized("dev1", "10.0.0.1", "u", True, False, "wrong password")
        await security.stop()

    asyncio.run(run())
    with SecurityDb(tmp_path / SECURITY_DB_FILE) as db:
        assert db.list_unauthorized() == []


def test_cleanup_removes_old_records_and_long_expired_blocks(tmp_path: Path) -> None:
    now_ms = int(time.time() * 1000)
    with SecurityDb(tmp_path / SECURITY_DB_FILE) as db:
        db.record_unauthorized(
            UnauthorizedClient("old", "10.0.0.1", now_ms - 4 * 86_400_000, None, False, False, "x")
        )
        db.record_unauthorized(
            UnauthorizedClient("new", "10.0.0.1", now_ms, None, False, False, "x")
        )
        db.add_blocked(
            BlockedClient(BlockedType.CLIENT_ID, "gone", expiration_time=now_ms - 8 * 86_400_000)
        )
        db.add_blocked(
            BlockedClient(BlockedType.CLIENT_ID, "recent", expiration_time=now_ms - 1000)
        )
        db.add_blocked(BlockedClient(BlockedType.CLIENT_ID, "forever"))

    async def run() -> None:
        security = Security(settings(tmp_path))
        await security.start()
        await security._on_db(security._cleanup)
        await security.stop()

    asyncio.run(run())
    with SecurityDb(tmp_path / SECURITY_DB_FILE) as db:
        assert [r.client_id for r in db.list_unauthorized()] == ["new"]
        assert sorted(b.value for b in db.list_blocked()) == ["forever", "recent"]
