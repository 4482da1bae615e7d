"""The HTTP(S) listener of the admin API: uvicorn on the broker's own event loop.

`ApiServer.start()` binds HTTP_BIND_ADDRESS:HTTP_BIND_PORT itself (so port 0 works and
the log says `listener http bound to HOST:PORT` like the MQTT listeners), creates the
first admin if there is none, prepares the token key, and serves the FastAPI app with
uvicorn in a task of the running loop; uvicorn's signal handling is left to the broker.
With SSL_ENABLED the server certificate is loaded and checked by pytbmq.tls (PEM or
keystore, exactly as the MQTTS listener, with the SSL_* variables named in errors).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import socket
from collections.abc import Generator
from typing import TYPE_CHECKING

import uvicorn

from pytbmq.api.app import create_app
from pytbmq.api.auth import create_first_admin
from pytbmq.api.context import ApiContext
from pytbmq.api.tokens import TokenService
from pytbmq.errors import ConfigError
from pytbmq.tls.context import TlsContextHolder
from pytbmq.tls.material import TlsListenerConfig

if TYPE_CHECKING:
    from pytbmq.broker import Broker
    from pytbmq.config import Settings

log = logging.getLogger(__name__)

SIGNING_KEY_SETTING = "jwt_signing_key"
STOP_TIMEOUT = 5.0


def https_config(s: Settings) -> TlsListenerConfig:
    """The HTTPS server's TLS settings, named SSL_* in messages (TBMQ's names)."""
    return TlsListenerConfig(
        name="http",
        prefix="SSL",
        protocol="TLSv1.2",
        cipher_suites="",
        credentials_type=s.ssl_credentials_type,
        pem_cert=s.ssl_pem_cert,
        pem_key=s.ssl_pem_key,
        pem_key_password=s.ssl_pem_key_password,
        key_store_type=s.ssl_key_store_type,
        key_store=s.ssl_key_store,
        key_store_password=s.ssl_key_store_password,
        key_alias=s.ssl_key_alias,
        key_password=s.ssl_key_password,
        truststore="",
        truststore_type="PEM",
        truststore_password="",
        client_auth="NONE",
        crl="",
        reload_interval=0,
        handshake_timeout=s.tls_handshake_timeout_sec,
    )


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the broker owns SIGINT/SIGTERM/SIGHUP


class ApiServer:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.settings = broker.settings
        self.tls: TlsContextHolder | None = None
        self.sockets: list[socket.socket] = []
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.ctx: ApiContext | None = None

    def check(self) -> None:
        """Load the HTTPS material before anything opens; ConfigError names the setting."""
        if self.settings.ssl_enabled:
            self.tls = TlsContextHolder(https_config(self.settings))

    async def start(self) -> None:
        s = self.settings
        security = self.broker.security
        key = await self._signing_key()
        tokens = TokenService(
            key,
            s.jwt_token_issuer,
            s.jwt_token_expiration_time,
            s.jwt_refresh_token_expiration_time,
        )
        await create_first_admin(security, s.security_admin_username, s.security_admin_password)
        self.ctx = ApiContext(self.broker, tokens)
        app = create_app(self.ctx)
        sock = self._bind()
        holder = self.tls
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_level="warning",
            access_log=False,
            server_header=False,
            proxy_headers=False,
            ssl_context_factory=(lambda _cfg, _default: holder.context) if holder else None,
        )
        self._server = server = _Server(config)
        self._task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        host, port = sock.getsockname()[:2]
        log.info(
            "listener http bound to %s:%d (admin REST API%s)",
            host,
            port,
            ", HTTPS" if holder else "",
        )

    def _bind(self) -> socket.socket:
        s = self.settings
        family = socket.AF_INET6 if ":" in s.http_bind_address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((s.http_bind_address, s.http_bind_port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"HTTP_BIND_ADDRESS={s.http_bind_address!r} / HTTP_BIND_PORT="
                f"{s.http_bind_port}: cannot listen: {exc.strerror or exc}"
            ) from exc
        self.sockets.append(sock)
        return sock

    async def _signing_key(self) -> bytes:
        configured = self.settings.jwt_token_signing_key
        if configured:
            if len(configured.encode()) < 32:
                raise ConfigError("JWT_TOKEN_SIGNING_KEY must be at least 32 bytes long")
            return configured.encode()
        security = self.broker.security
        stored = await security.read_db(lambda db: db.get_setting(SIGNING_KEY_SETTING))
        if stored is None:
            stored = base64.b64encode(os.urandom(48)).decode()
            value = stored
            await security.run_db(lambda db: db.put_setting(SIGNING_KEY_SETTING, value))
        return base64.b64decode(stored)

    async def stop(self) -> None:
        server, task = self._server, self._task
        if server is None or task is None:
            return
        server.should_exit = True
        try:
            await asyncio.wait_for(task, STOP_TIMEOUT)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
        for sock in self.sockets:
            sock.close()
