"""Composition root: settings → store → router → listeners; graceful shutdown.

`run(settings)` is what `pytbmq run` calls. It installs uvloop when available, starts
every enabled listener, drives the router's timers, and on SIGINT/SIGTERM stops
accepting, sends MQTT 5 clients DISCONNECT 0x8B, waits (bounded by
SHUTDOWN_TIMEOUT_SEC) for connections to close and flushes the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable

from pytbmq.config import Settings
from pytbmq.errors import ConfigError
from pytbmq.link import Link, LinkSettings, Writer
from pytbmq.listeners import ListenerSpec, start_listener
from pytbmq.protocol.connection import Limits
from pytbmq.protocol.packets import ReasonCode
from pytbmq.router import Router, RouterConfig
from pytbmq.storage import MemoryStore, Store

log = logging.getLogger(__name__)

TICK_SECONDS = 0.25


def router_config(settings: Settings) -> RouterConfig:
    return RouterConfig(
        queue_limit=settings.mqtt_persistent_session_device_persisted_messages_limit,
        max_session_expiry=settings.mqtt_client_session_expiry_max_expiry_interval,
        root_wildcard_allowed=settings.mqtt_subscription_root_multi_lvl_wildcard,
        topic_max_segments=settings.mqtt_topic_max_segments_count,
    )


def link_settings(settings: Settings, max_packet_size: int) -> LinkSettings:
    return LinkSettings(
        limits=Limits(
            max_packet_size=max_packet_size,
            receive_maximum=settings.mqtt_max_in_flight_msgs,
            topic_alias_maximum=settings.mqtt_topic_alias_max,
            max_keep_alive=settings.mqtt_keep_alive_max_keep_alive_sec,
            max_session_expiry=settings.mqtt_client_session_expiry_max_expiry_interval,
            max_client_id_length_3_1=settings.mqtt_3_1_max_client_id_length,
            receive_maximum_3x=settings.mqtt_flow_control_mqtt_3x_receive_max,
            response_information=settings.mqtt_response_info,
        ),
        connect_timeout=float(settings.mqtt_connect_timeout_sec),
        topic_alias_min_length=settings.mqtt_topic_min_length_for_alias_replacement,
    )


class Broker:
    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.store: Store = store or MemoryStore()
        self.router = Router(router_config(settings))
        self.links: set[Link] = set()
        self.servers: list[asyncio.Server] = []
        self._writer: Writer | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        s = self.settings
        try:
            s.pytbmq_data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reason = exc.strerror or exc
            raise ConfigError(
                f"PYTBMQ_DATA_DIR={str(s.pytbmq_data_dir)!r} cannot be created: {reason}"
            ) from exc
        await self.store.open()
        loop = asyncio.get_running_loop()
        self._writer = writer = Writer(loop)
        specs: list[tuple[ListenerSpec, LinkSettings]] = []
        if s.listener_tcp_enabled:
            specs.append(
                (
                    ListenerSpec(
                        "tcp", s.listener_tcp_bind_address, s.listener_tcp_bind_port, "LISTENER_TCP"
                    ),
                    link_settings(s, s.tcp_netty_max_payload_size),
                )
            )
        if not specs:
            raise ConfigError("no listener is enabled: set LISTENER_TCP_ENABLED=true")
        for spec, lsettings in specs:
            server = await start_listener(spec, self._factory(writer, lsettings, spec.name))
            self.servers.append(server)
        self._ticker = loop.create_task(self._tick())
        log.info(
            "pytbmq ready: %d listener(s), store %s, data dir %s",
            len(self.servers),
            self.store.name,
            s.pytbmq_data_dir,
        )

    def _factory(self, writer: Writer, lsettings: LinkSettings, name: str) -> Callable[[], Link]:
        router, links = self.router, self.links

        def make() -> Link:
            return Link(router, writer, lsettings, links, name)

        return make

    async def _tick(self) -> None:
        """Fire the router's timed work: delayed wills, session and retained expiry."""
        period = self.settings.mqtt_retain_msg_expiry_processing_period_ms / 1000.0
        next_retained = time.time() + period
        while True:
            await asyncio.sleep(TICK_SECONDS)
            now = time.time()
            deadline = self.router.next_deadline()
            if deadline is not None and deadline <= now:
                self.router.expire(now)
            if now >= next_retained:
                self.router.expire_retained(now)
                next_retained = now + period

    def request_stop(self) -> None:
        self._stopping.set()

    async def wait_stopped(self) -> None:
        await self._stopping.wait()

    async def stop(self) -> None:
        log.info("pytbmq stopping: %d connection(s) open", len(self.links))
        for server in self.servers:
            server.close()
        for link in list(self.links):
            link.close_by_server(ReasonCode.SERVER_SHUTTING_DOWN)
        if self._writer is not None:
            self._writer.flush()
        deadline = time.monotonic() + self.settings.shutdown_timeout_sec
        while self.links and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for link in list(self.links):
            if link.transport is not None:
                link.transport.abort()
        if self._ticker is not None:
            self._ticker.cancel()
        for server in self.servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        await self.store.flush()
        await self.store.close()
        log.info("pytbmq stopped")


async def serve(settings: Settings) -> None:
    broker = Broker(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, broker.request_stop)
    try:
        await broker.start()
        await broker.wait_stopped()
    finally:
        await broker.stop()


def run(settings: Settings) -> int:
    """Run the broker in the foreground until SIGINT/SIGTERM. Returns the exit code."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a pinned dependency on Linux
        asyncio.run(serve(settings))
    else:
        uvloop.run(serve(settings))
    return 0
