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
from dataclasses import replace

from pytbmq.admission import Admission, AdmissionLimits
from pytbmq.api.server import ApiServer
from pytbmq.config import Settings
from pytbmq.errors import ConfigError
from pytbmq.heap import HeapFreezer, settle_heap
from pytbmq.link import Link, LinkSettings, Writer
from pytbmq.listeners import ListenerSpec, TlsListener, start_listener
from pytbmq.protocol.connection import Limits
from pytbmq.protocol.packets import ReasonCode
from pytbmq.protocol.websocket import WsPolicy
from pytbmq.ratelimit import RateLimit
from pytbmq.router import Router, RouterConfig
from pytbmq.security import Security, warn_if_open
from pytbmq.storage import Store, make_store
from pytbmq.storage.committer import Committer
from pytbmq.tls.context import TlsContextHolder
from pytbmq.tls.diagnose import CLIENT_CERTIFICATE_FAILURES, ChainCache, HandshakeStats
from pytbmq.tls.material import TlsListenerConfig
from pytbmq.wsadapter import WsAdapter, WsSettings, parse_networks

log = logging.getLogger(__name__)

TICK_SECONDS = 0.25


def router_config(settings: Settings) -> RouterConfig:
    return RouterConfig(
        queue_limit=settings.mqtt_persistent_session_device_persisted_messages_limit,
        queue_limit_app=settings.mqtt_persistent_session_app_persisted_messages_limit,
        queue_ttl=settings.mqtt_persistent_session_device_persisted_messages_ttl,
        max_session_expiry=settings.mqtt_client_session_expiry_max_expiry_interval,
        root_wildcard_allowed=settings.mqtt_subscription_root_multi_lvl_wildcard,
        topic_max_segments=settings.mqtt_topic_max_segments_count,
        sessions_limit=settings.mqtt_sessions_limit,
        application_clients_limit=settings.mqtt_application_clients_limit,
    )


def link_settings(
    settings: Settings,
    max_packet_size: int,
    security: Security | None = None,
    total_limit: RateLimit | None = None,
) -> LinkSettings:
    s = settings
    return LinkSettings(
        security=security,
        incoming_limit=s.mqtt_incoming_rate_limits_client_config
        if s.mqtt_incoming_rate_limits_enabled
        else None,
        outgoing_limit=s.mqtt_outgoing_rate_limits_client_config
        if s.mqtt_outgoing_rate_limits_enabled
        else None,
        total_limit=total_limit,
        write_high_water=s.netty_write_buffer_high_water_mark,
        write_low_water=min(
            s.netty_write_buffer_low_water_mark, s.netty_write_buffer_high_water_mark
        ),
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


def ws_settings(settings: Settings, name: str) -> WsSettings:
    """The WebSocket settings of listener `name` ("ws" or "wss")."""
    return WsSettings(
        listener=name,
        policy=WsPolicy(
            path=getattr(settings, f"{name}_path"),
            subprotocols=tuple(getattr(settings, f"{name}_netty_sub_protocols").split(",")),
            allowed_origins=frozenset(filter(None, settings.ws_allowed_origins.split(","))),
        ),
        max_payload=getattr(settings, f"{name}_netty_max_payload_size"),
        upgrade_timeout=float(settings.mqtt_connect_timeout_sec),
        trusted_proxies=parse_networks(settings.ws_trusted_proxies),
    )


class Broker:
    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.store: Store = store or make_store(settings)
        self.committer: Committer | None = None  # with a durable store
        self.router = Router(router_config(settings))
        self.links: set[Link] = set()
        self.servers: list[asyncio.Server | TlsListener] = []
        self.tls: dict[str, TlsContextHolder] = {}
        self.handshakes: dict[str, HandshakeStats] = {}
        self.admission: dict[str, Admission] = {}  # listener name -> its connection limits
        self._tls_watchers: list[asyncio.Task[None]] = []
        self.security = Security(settings)
        self.api = ApiServer(self) if settings.http_enabled else None
        self._names: dict[int, str] = {}  # id(asyncio server) -> listener name
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
        loop = asyncio.get_running_loop()
        self._writer = writer = Writer(loop)
        await self._open_store(loop, writer)
        await self.security.start()
        security = self.security
        total = (
            RateLimit(s.mqtt_total_rate_limits_config, time.monotonic())
            if s.mqtt_total_rate_limits_enabled
            else None
        )
        Factory = Callable[[], asyncio.BufferedProtocol]
        specs: list[tuple[ListenerSpec, Factory]] = []
        if s.listener_tcp_enabled:
            spec = ListenerSpec(
                "tcp", s.listener_tcp_bind_address, s.listener_tcp_bind_port, "LISTENER_TCP"
            )
            lsettings = link_settings(s, s.tcp_netty_max_payload_size, security, total)
            specs.append((spec, self._factory(writer, lsettings, spec.name)))
        if s.listener_ws_enabled:
            spec = ListenerSpec(
                "ws", s.listener_ws_bind_address, s.listener_ws_bind_port, "LISTENER_WS"
            )
            lsettings = link_settings(s, s.ws_netty_max_payload_size, security, total)
            specs.append((spec, self._ws_factory(writer, lsettings, ws_settings(s, "ws"))))
        tls_specs: list[tuple[ListenerSpec, Factory, TlsContextHolder]] = []
        for name, enabled in (("ssl", s.listener_ssl_enabled), ("wss", s.listener_wss_enabled)):
            if not enabled:
                continue
            # All TLS material is checked before any listener opens: a broken TLS
            # configuration stops startup, never falls back to plain TCP.
            holder = TlsContextHolder(TlsListenerConfig.from_settings(s, name))
            max_size = (
                s.ssl_netty_max_payload_size if name == "ssl" else s.wss_netty_max_payload_size
            )
            lsettings = link_settings(s, max_size, security, total)
            lsettings = replace(lsettings, peer_certificates=ChainCache().peer_certificates)
            spec = ListenerSpec(
                name,
                getattr(s, f"listener_{name}_bind_address"),
                getattr(s, f"listener_{name}_bind_port"),
                f"LISTENER_{name.upper()}",
            )
            factory: Factory = (
                self._factory(writer, lsettings, name)
                if name == "ssl"
                else self._ws_factory(writer, lsettings, ws_settings(s, name))
            )
            tls_specs.append((spec, factory, holder))
            self.tls[name] = holder
            log.info("listener %s: %s", name, holder.describe())
        if not specs and not tls_specs:
            raise ConfigError(
                "no listener is enabled: set LISTENER_TCP_ENABLED, LISTENER_SSL_ENABLED, "
                "LISTENER_WS_ENABLED or LISTENER_WSS_ENABLED to true"
            )
        if self.api is not None:
            self.api.check()  # HTTPS material is checked before any listener opens
        for spec, factory in specs:
            server = await start_listener(spec, factory, self._admission(spec))
            self.servers.append(server)
            self._names[id(server)] = spec.name
        for spec, factory, holder in tls_specs:
            stats = self.handshakes.setdefault(spec.name, HandshakeStats())
            listener = TlsListener(
                spec,
                holder,
                factory,
                stats,
                self._tls_failed,
                admission=self._admission(spec),
                max_handshakes=getattr(s, f"listener_{spec.name}_max_handshakes_in_progress"),
            )
            await listener.start()
            self.servers.append(listener)
            if holder.cfg.reload_interval > 0:
                self._tls_watchers.append(loop.create_task(self._watch_tls(holder)))
        self._ticker = loop.create_task(self._tick())
        if self.api is not None:
            await self.api.start()
        warn_if_open(security.config, self._addresses())
        log.info(
            "pytbmq ready: %d listener(s), store %s, data dir %s",
            len(self.servers),
            self.store.name,
            s.pytbmq_data_dir,
        )

    def _admission(self, spec: ListenerSpec) -> Admission:
        """Listener `spec.name`'s connection limits (LISTENER_<TYPE>_MAX_CONNECTIONS and
        LISTENER_<TYPE>_NEW_CONNECTIONS_PER_IP_PER_SEC); logged when there are any."""
        s, name = self.settings, spec.name
        limits = AdmissionLimits(
            max_connections=getattr(s, f"listener_{name}_max_connections"),
            new_connections_per_ip_per_sec=getattr(
                s, f"listener_{name}_new_connections_per_ip_per_sec"
            ),
        )
        admission = self.admission[name] = Admission(name, spec.setting_prefix, limits)
        if admission.limited:
            log.info("listener %s: %s", name, admission.describe())
        return admission

    def listener_name(self, server: asyncio.Server | TlsListener) -> str:
        """The name ("tcp", "ws", ...) of one of `self.servers`."""
        if isinstance(server, TlsListener):
            return server.spec.name
        return self._names.get(id(server), "?")

    def _addresses(self) -> list[tuple[str, str]]:
        """(listener name, host:port) of every open listener."""
        out: list[tuple[str, str]] = []
        for server in self.servers:
            if isinstance(server, TlsListener):
                name, socks = server.spec.name, server.sockets
            else:
                name, socks = self._names.get(id(server), "?"), list(server.sockets)
            for sock in socks:
                host, port = sock.getsockname()[:2]
                out.append((name, f"{host}:{port}"))
        return out

    def _tls_failed(self, address: str, key: str, words: str) -> None:
        """A handshake failed because of the client's certificate: an unauthorized client."""
        if key in CLIENT_CERTIFICATE_FAILURES:
            self.security.record_unauthorized(
                "", address, None, False, True, f"TLS handshake: {words}"
            )

    async def _open_store(self, loop: asyncio.AbstractEventLoop, writer: Writer) -> None:
        """Open the store and restore what it holds; with a durable store, log the
        router's changes and gate acknowledgements on their commit."""
        store = self.store
        on_committed: Callable[[int], None] = _ignore
        if store.durable:
            self.committer = committer = Committer(self.router, store, loop)
            writer.gate = committer
            on_committed = committer.committed_up_to
        state = await store.open(on_committed)
        self.router.restore(state, time.time())
        if store.durable:
            sessions, messages, retained = state.counts()
            log.info(
                "store %s: loaded %d persistent session(s), %d queued or in-flight "
                "message(s) and %d retained message(s) from %s",
                store.name,
                sessions,
                messages,
                retained,
                store.location,
            )

    async def _flush_store(self) -> None:
        """Commit what the router logged; acknowledgements waiting for it are released."""
        committer = self.committer
        if committer is None:
            return
        try:
            await asyncio.wait_for(committer.flush(), self.settings.shutdown_timeout_sec)
        except TimeoutError:
            log.error(
                "store %s: changes not committed within %ss",
                self.store.location,
                self.settings.shutdown_timeout_sec,
            )
        if self._writer is not None:
            self._writer.flush()

    def _ws_factory(
        self, writer: Writer, lsettings: LinkSettings, ws: WsSettings
    ) -> Callable[[], WsAdapter]:
        make_link = self._factory(writer, lsettings, ws.listener)

        def make() -> WsAdapter:
            return WsAdapter(ws, make_link)

        return make

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

    async def _watch_tls(self, holder: TlsContextHolder) -> None:
        """Reload a listener's TLS material when one of its files changes."""
        while True:
            await asyncio.sleep(holder.cfg.reload_interval)
            if holder.changed():
                holder.reload("files changed")

    def reload_tls(self) -> None:
        """SIGHUP: re-read every TLS listener's files; new handshakes use what loads."""
        for holder in self.tls.values():
            holder.reload("SIGHUP")

    def request_stop(self) -> None:
        self._stopping.set()

    async def wait_stopped(self) -> None:
        await self._stopping.wait()

    async def stop(self) -> None:
        log.info("pytbmq stopping: %d connection(s) open", len(self.links))
        if self.api is not None:
            await self.api.stop()
        for server in self.servers:
            server.close()
        await self._flush_store()  # acknowledgements still held go out before DISCONNECT
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
        for task in self._tls_watchers:
            task.cancel()
        for server in self.servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        await self._flush_store()  # disconnect times and pending wills of the last links
        await self.security.stop()
        try:
            await self.store.close()
        except Exception as exc:
            log.error("store %s: closing failed: %s", self.store.location, exc)
        log.info("pytbmq stopped")


def _ignore(_seq: int) -> None:
    return None


async def serve(settings: Settings) -> None:
    broker = Broker(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, broker.request_stop)
    loop.add_signal_handler(signal.SIGHUP, broker.reload_tls)
    freezer: HeapFreezer | None = None
    try:
        await broker.start()
        settle_heap(settings.pytbmq_gc_thresholds)
        if settings.pytbmq_gc_freeze_sec:
            freezer = HeapFreezer(
                settings.pytbmq_gc_freeze_sec, settings.pytbmq_gc_full_collect_sec
            )
            freezer.start(loop)
        await broker.wait_stopped()
    finally:
        if freezer is not None:
            freezer.stop()
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
