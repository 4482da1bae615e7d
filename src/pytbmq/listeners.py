"""Listeners: each turns accepted connections into byte streams for a Link.

TCP (1883) uses asyncio's server. TLS (8883) runs its own accept loop so that every
handshake gets the *current* SSLContext (certificates reload without a restart), a
handshake timeout, and an explained log line when it fails: asyncio's own TLS server
swallows handshake errors. The WebSocket listeners are these two with
pytbmq.wsadapter.WsAdapter as the protocol: WS (8084) on asyncio's server, WSS (8085) on
the TLS accept loop. Called by the broker (pytbmq.broker) only.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

from pytbmq.errors import ConfigError
from pytbmq.tls.context import TlsContextHolder
from pytbmq.tls.diagnose import HandshakeStats, explain

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    name: str  # "tcp", "ssl", "ws" or "wss"
    host: str
    port: int
    setting_prefix: str  # e.g. "LISTENER_TCP", to name settings in errors


async def start_listener(
    spec: ListenerSpec, protocol_factory: Callable[[], asyncio.BaseProtocol]
) -> asyncio.Server:
    """Bind and start serving; logs `listener NAME bound to HOST:PORT` per socket."""
    loop = asyncio.get_running_loop()
    try:
        server = await loop.create_server(
            protocol_factory,
            host=spec.host,
            port=spec.port,
            reuse_address=True,
            backlog=1024,
        )
    except OSError as exc:
        raise ConfigError(
            f"{spec.setting_prefix}_BIND_ADDRESS={spec.host!r} / "
            f"{spec.setting_prefix}_BIND_PORT={spec.port}: cannot listen: {exc.strerror or exc}"
        ) from exc
    for sock in server.sockets:
        _log_bound(spec.name, sock)
    return server


def _log_bound(name: str, sock: socket.socket) -> None:
    addr = sock.getsockname()
    host, port = addr[0], addr[1]
    shown = f"[{host}]" if sock.family == socket.AF_INET6 else host
    log.info("listener %s bound to %s:%d", name, shown, port)


def _peer_text(addr: object) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return f"{addr[0]}:{addr[1]}"
    return str(addr)


class TlsListener:
    """A TLS listener with its own accept loop; each handshake uses holder.context."""

    def __init__(
        self,
        spec: ListenerSpec,
        holder: TlsContextHolder,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        stats: HandshakeStats,
        on_failure: Callable[[str, str, str], None] | None = None,
    ) -> None:
        """`on_failure(client ip, reason key, reason in words)` hears of failed handshakes."""
        self.on_failure = on_failure
        self.spec = spec
        self.holder = holder
        self.factory = protocol_factory
        self.stats = stats
        self.sockets: list[socket.socket] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepting: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        spec = self.spec
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(
                spec.host, spec.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            for family, type_, proto, _name, addr in infos[:1]:
                sock = socket.socket(family, type_, proto)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(addr)
                sock.listen(1024)
                sock.setblocking(False)
                self.sockets.append(sock)
        except OSError as exc:
            self.close()
            raise ConfigError(
                f"{spec.setting_prefix}_BIND_ADDRESS={spec.host!r} / "
                f"{spec.setting_prefix}_BIND_PORT={spec.port}: cannot listen: "
                f"{exc.strerror or exc}"
            ) from exc
        for sock in self.sockets:
            _log_bound(spec.name, sock)
            self._accepting.append(loop.create_task(self._accept(sock)))

    async def _accept(self, lsock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, addr = await loop.sock_accept(lsock)
            except OSError as exc:  # EMFILE and friends: back off instead of spinning
                log.error("listener %s cannot accept: %s", self.spec.name, exc.strerror or exc)
                await asyncio.sleep(0.5)
                continue
            conn.setblocking(False)
            task = loop.create_task(self._handshake(conn, addr))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handshake(self, conn: socket.socket, addr: object) -> None:
        loop = asyncio.get_running_loop()
        timeout = float(self.holder.cfg.handshake_timeout)
        try:
            await loop.connect_accepted_socket(
                self.factory, conn, ssl=self.holder.context, ssl_handshake_timeout=timeout
            )
        except asyncio.CancelledError:
            conn.close()
            raise
        except Exception as exc:
            key, words = explain(exc, timeout)
            self.stats.failed[key] += 1
            log.warning(
                "TLS handshake from %s failed on %s: %s", _peer_text(addr), self.spec.name, words
            )
            conn.close()
            if self.on_failure is not None:
                host = addr[0] if isinstance(addr, tuple) and addr else str(addr)
                self.on_failure(str(host), key, words)
        else:
            self.stats.completed += 1

    def close(self) -> None:
        for task in self._accepting:
            task.cancel()
        for task in list(self._tasks):
            task.cancel()
        for sock in self.sockets:
            sock.close()

    async def wait_closed(self) -> None:
        pending = [*self._accepting, *self._tasks]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
