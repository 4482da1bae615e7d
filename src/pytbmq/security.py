"""The broker's live security state: credentials, blocked and unauthorized clients.

Owns the Authenticator the links ask on every CONNECT, keeps its snapshot in step with
the security database (PYTBMQ_DATA_DIR/security.db, written by `pytbmq credentials`,
`pytbmq blocked` and later the REST API, also while the broker runs: the database's
`data_version` is polled twice a second and a change reloads the snapshot), records
refused clients in the unauthorized-clients log, removes expired records, and runs the
slow password checks on worker threads. Created and started by pytbmq.broker.

All database work runs on one dedicated thread (SQLite connections are not shared
between threads here); password hashing runs on a small separate pool so a slow disk
never delays a CONNECT and a burst of CONNECTs never delays the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from pytbmq.auth.credentials import AuthStrategy
from pytbmq.auth.service import (
    BASIC,
    X_509,
    AuthConfig,
    Authenticator,
    AuthRequest,
    AuthResult,
    SecurityState,
)
from pytbmq.auth.unauthorized import UnauthorizedClient
from pytbmq.errors import StorageError
from pytbmq.storage.security import SECURITY_DB_FILE, SecurityDb

if TYPE_CHECKING:
    from pytbmq.config import Settings

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
HASH_THREADS = 2
PROVIDERS_SETTING = "auth_providers"  # provider settings changed through the REST API
_T = TypeVar("_T")


class Security:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config = AuthConfig.from_settings(settings)
        self.authenticator = Authenticator(self.config)
        self.record_unauthorized_enabled = settings.security_unauth_clients_enabled
        self.path: Path = settings.pytbmq_data_dir / SECURITY_DB_FILE
        self._db = SecurityDb(self.path)
        self._db_thread = ThreadPoolExecutor(1, thread_name_prefix="pytbmq-security-db")
        self._hash_threads = ThreadPoolExecutor(HASH_THREADS, thread_name_prefix="pytbmq-auth")
        self._known_unauthorized: set[tuple[str, str]] = set()  # (client id, address)
        self._version = -1
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._on_db(lambda: self._db.open(create=True))
        await self._load_providers()
        await self._reload()
        self._task = self._loop.create_task(self._watch())

    async def _load_providers(self) -> None:
        """Provider settings stored by the REST API override SECURITY_MQTT_*."""
        text = await self._on_db(lambda: self._db.get_setting(PROVIDERS_SETTING))
        if text is None:
            return
        try:
            config = providers_from_json(self.config, text)
        except ValueError as exc:
            log.error("security database %s: stored provider settings ignored: %s", self.path, exc)
            return
        self.config = self.authenticator.config = config
        log.info(
            "the authentication provider settings stored in %s (changed through the REST "
            "API) override SECURITY_MQTT_*: %s",
            self.path,
            providers_to_json(config),
        )

    async def set_providers(self, config: AuthConfig) -> None:
        """Use `config` from the next CONNECT on and keep it in the security database,
        where it overrides the SECURITY_MQTT_* settings at the next start."""
        text = providers_to_json(config)
        await self._on_db(lambda: self._db.put_setting(PROVIDERS_SETTING, text))
        self.config = self.authenticator.config = config
        log.info("authentication providers changed, in order: %s", config.describe())
        if not config.enabled:
            log.warning(
                "authentication is now disabled: every client may connect, publish and "
                "subscribe without credentials"
            )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self._on_db(self._db.close)
        self._db_thread.shutdown(wait=True)
        self._hash_threads.shutdown(wait=False, cancel_futures=True)

    async def _on_db(self, fn: Callable[[], _T]) -> _T:
        loop = self._loop or asyncio.get_running_loop()
        return await loop.run_in_executor(self._db_thread, fn)

    async def run_db(self, fn: Callable[[SecurityDb], _T]) -> _T:
        """Run `fn(db)` on the database thread (the REST API's reads and writes). A
        change is applied to the live broker at once, without waiting for the poll."""
        result = await self._on_db(lambda: fn(self._db))
        await self._reload()
        return result

    async def read_db(self, fn: Callable[[SecurityDb], _T]) -> _T:
        """Run a read-only `fn(db)` on the database thread."""
        return await self._on_db(lambda: fn(self._db))

    async def run_hash(self, fn: Callable[[], _T]) -> _T:
        """CPU-heavy password work (scrypt) on the hashing threads."""
        loop = self._loop or asyncio.get_running_loop()
        return await loop.run_in_executor(self._hash_threads, fn)

    # ------------------------------------------------------------------ snapshot
    async def _reload(self) -> None:
        def read() -> tuple[int, SecurityState, set[tuple[str, str]]]:
            version = self._db.data_version()
            state = SecurityState.build(self._db.list_credentials(), self._db.list_blocked())
            known = {(u.client_id, u.ip_address) for u in self._db.list_unauthorized()}
            return version, state, known

        version, state, known = await self._on_db(read)
        first = self._version < 0
        self._version = version
        self.authenticator.state = state
        self._known_unauthorized = known
        log.log(
            logging.INFO if first else logging.DEBUG,
            "security: %d credential(s), %d blocked client(s) loaded from %s",
            state.count,
            len(state.blocked),
            self.path,
        )

    async def _watch(self) -> None:
        """Pick up changes other processes commit; clean up expired records."""
        s = self.settings
        cleanup_every = 60.0 * s.blocked_client_cleanup_period_minutes
        next_cleanup = time.monotonic()
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                version = await self._on_db(self._db.data_version)
                if version != self._version:
                    await self._reload()
                if time.monotonic() >= next_cleanup:
                    next_cleanup = time.monotonic() + cleanup_every
                    await self._on_db(self._cleanup)
            except StorageError as exc:
                log.error("security database %s: %s", self.path, exc)
            except Exception:
                log.exception("security database %s: unexpected error", self.path)

    def _cleanup(self) -> None:
        s = self.settings
        now_ms = int(time.time() * 1000)
        if s.sql_ttl_unauthorized_client_ttl > 0:
            self._db.purge_unauthorized(now_ms - 1000 * s.sql_ttl_unauthorized_client_ttl)
        self._db.purge_blocked(now_ms - 60_000 * s.blocked_client_cleanup_ttl_minutes)

    # ------------------------------------------------------------------ for links
    def authenticate_slow(self, request: AuthRequest) -> asyncio.Future[AuthResult]:
        """Run the providers with password hashing allowed, on a worker thread."""
        loop = self._loop or asyncio.get_running_loop()
        return loop.run_in_executor(self._hash_threads, self.authenticator.authenticate, request)

    def record_unauthorized(
        self,
        client_id: str,
        address: str,
        username: str | None,
        password_provided: bool,
        tls_used: bool,
        reason: str,
    ) -> None:
        if not self.record_unauthorized_enabled or self._loop is None:
            return
        record = UnauthorizedClient(
            client_id=client_id,
            ip_address=address,
            ts=int(time.time() * 1000),
            username=username,
            password_provided=password_provided,
            tls_used=tls_used,
            reason=reason,
        )
        self._known_unauthorized.add((client_id, address))
        self._submit(lambda: self._db.record_unauthorized(record))

    def forget_unauthorized(self, client_id: str, address: str) -> None:
        """A client connected: its unauthorized records go (a DB write only if any exist)."""
        known = self._known_unauthorized
        if not known or self._loop is None:
            return
        if ("", address) not in known and not any(c == client_id for c, _ in known):
            return
        self._known_unauthorized = {
            (c, a) for c, a in known if c != client_id and not (c == "" and a == address)
        }
        self._submit(lambda: self._db.forget_unauthorized(client_id, address))

    def _submit(self, fn: Callable[[], object]) -> None:
        def run() -> None:
            try:
                fn()
            except Exception as exc:
                log.error("security database %s: %s", self.path, exc)

        with contextlib.suppress(RuntimeError):  # shut down
            self._db_thread.submit(run)


def providers_to_json(config: AuthConfig) -> str:
    """The provider settings the REST API may change, as stored in the security database."""
    return json.dumps(
        {
            "basic": config.basic,
            "x509": config.x509,
            "scram": config.scram,
            "priority": list(config.priority),
            "single": config.single,
            "basicStrategy": str(config.basic_strategy),
            "skipValidity": config.skip_validity,
        }
    )


def providers_from_json(base: AuthConfig, text: str) -> AuthConfig:
    """`base` with the settings of `providers_to_json`'s text; ValueError if malformed."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    changes: dict[str, object] = {}
    for key, field in (
        ("basic", "basic"),
        ("x509", "x509"),
        ("scram", "scram"),
        ("single", "single"),
        ("skipValidity", "skip_validity"),
    ):
        if key in data:
            if not isinstance(data[key], bool):
                raise ValueError(f"{key}: must be a boolean")
            changes[field] = data[key]
    if "priority" in data:
        priority = data["priority"]
        if not isinstance(priority, list) or sorted(map(str, priority)) != sorted((BASIC, X_509)):
            raise ValueError(f"priority: must list {BASIC} and {X_509} once each")
        changes["priority"] = tuple(priority)
    if "basicStrategy" in data:
        try:
            changes["basic_strategy"] = AuthStrategy(str(data["basicStrategy"]))
        except ValueError:
            raise ValueError("basicStrategy: unknown strategy") from None
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def warn_if_open(config: AuthConfig, listeners: list[tuple[str, str]]) -> None:
    """The startup warning TBMQ does not give: no provider means no authentication."""
    if config.enabled:
        log.info("authentication providers, in order: %s", config.describe())
        return
    where = ", ".join(f"{name} {address}" for name, address in listeners)
    log.warning(
        "authentication is disabled: every client may connect, publish and subscribe "
        "without credentials on %s. Enable a provider (SECURITY_MQTT_BASIC_ENABLED, "
        "SECURITY_MQTT_SSL_ENABLED or SECURITY_MQTT_SCRAM_ENABLED) and add credentials "
        "with `pytbmq credentials` to restrict access",
        where,
    )
