"""Listeners: each turns accepted connections into byte streams for a Link.

TCP (1883) uses asyncio's server. TLS (8883) runs its own accept loop so that every
handshake gets the *current* SSLContext (certificates reload without a restart), a
handshake timeout, and an explained log line when it fails: asyncio's own TLS server
swallows handshake errors. The WebSocket listeners are these two with
pytbmq.wsadapter.WsAdapter as the protocol: WS (8084) on asyncio's server, WSS (8085) on
the TLS accept loop. Called by the broker (pytbmq.broker) only.

Connection limits (pytbmq.admission): on asyncio's server a listener with limits gets a
`GatedProtocol` per connection, which admits or refuses the connection in
connection_made, before anything is read, and creates the real protocol only when
admitted. The TLS accept loop takes a handshake slot before it accepts and admits or
refuses the accepted socket before the handshake starts, so a refused connection costs
no public-key work.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from pytbmq.admission import UNCOUNTED, Admission, HandshakeSlots, Ticket, peer_text
from pytbmq.errors import ConfigError
from pytbmq.tls.context import TlsContextHolder
from pytbmq.tls.diagnose import HandshakeStats, explain

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    name: str  # "tcp", "ssl", "ws" or "wss"
    host: str
    port: int
    setting_prefix: str  # e.g. "LISTENER_TCP", to name settings in errors


class _Refused(asyncio.BufferedProtocol):
    """Stands in for the real protocol of a refused connection: nothing reaches it."""

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(bytearray(1))

    def buffer_updated(self, nbytes: int) -> None:
        return None


_REFUSED = _Refused()


class GatedProtocol(asyncio.BufferedProtocol):
    """The protocol of one connection on a listener with connection limits.

    `gate` is the listener's Admission, asked in connection_made (a refused connection is
    aborted before anything is read and its real protocol is never created), or the Ticket
    of a connection the TLS accept loop already admitted. Once admitted, every event goes
    to the real protocol; connection_lost gives the ticket back.
    """

    __slots__ = ("_factory", "_gate", "_inner", "_ticket")

    def __init__(
        self, factory: Callable[[], asyncio.BufferedProtocol], gate: Admission | Ticket
    ) -> None:
        self._factory = factory
        self._gate = gate
        self._inner: asyncio.BufferedProtocol = _REFUSED
        self._ticket = UNCOUNTED

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        gate = self._gate
        if isinstance(gate, Ticket):
            self._ticket = gate
        else:
            ticket = gate.admit(transport.get_extra_info("peername"))
            if ticket is None:
                cast(asyncio.Transport, transport).abort()  # uvloop's: not a subclass
                return
            self._ticket = ticket
        self._inner = inner = self._factory()
        inner.connection_made(transport)

    def get_buffer(self, sizehint: int) -> ReadableBuffer:
        return self._inner.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self._inner.buffer_updated(nbytes)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self._inner.connection_lost(exc)
        finally:
            self._ticket.release()


async def start_listener(
    spec: ListenerSpec,
    protocol_factory: Callable[[], asyncio.BufferedProtocol],
    admission: Admission | None = None,
) -> asyncio.Server:
    """Bind and start serving; logs `listener NAME bound to HOST:PORT` per socket.

    With `admission` (and limits in it), connections pass through a GatedProtocol."""
    loop = asyncio.get_running_loop()
    factory: Callable[[], asyncio.BaseProtocol] = protocol_factory
    if admission is not None and admission.limited:
        gate = admission

        def factory() -> asyncio.BaseProtocol:
            return GatedProtocol(protocol_factory, gate)

    try:
        server = await loop.create_server(
            factory,
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


class TlsListener:
    """A TLS listener with its own accept loop; each handshake uses holder.context.

    At most `max_handshakes` handshakes run at once (a slot is taken before the accept);
    `admission` admits or refuses each accepted socket before its handshake starts.
    """

    def __init__(
        self,
        spec: ListenerSpec,
        holder: TlsContextHolder,
        protocol_factory: Callable[[], asyncio.BufferedProtocol],
        stats: HandshakeStats,
        on_failure: Callable[[str, str, str], None] | None = None,
        *,
        admission: Admission | None = None,
        max_handshakes: int = 64,
    ) -> None:
        """`on_failure(client ip, reason key, reason in words)` hears of failed handshakes."""
        self.on_failure = on_failure
        self.spec = spec
        self.holder = holder
        self.factory = protocol_factory
        self.stats = stats
        self.admission = admission if admission is not None and admission.limited else None
        self.slots = HandshakeSlots(
            spec.name, f"{spec.setting_prefix}_MAX_HANDSHAKES_IN_PROGRESS", max_handshakes
        )
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
        slots, admission = self.slots, self.admission
        while True:
            # A slot first: while every slot is busy, new connections wait in the kernel's
            # accept queue and cost nothing; connected clients keep being served.
            await slots.acquire()
            try:
                conn, addr = await loop.sock_accept(lsock)
            except OSError as exc:  # EMFILE and friends: back off instead of spinning
                slots.release()
                log.error("listener %s cannot accept: %s", self.spec.name, exc.strerror or exc)
                await asyncio.sleep(0.5)
                continue
            except BaseException:
                slots.release()
                raise
            ticket = UNCOUNTED if admission is None else admission.admit(addr)
            if ticket is None:  # refused before the handshake: no public-key work
                conn.close()
                slots.release()
                continue
            conn.setblocking(False)
            task = loop.create_task(self._handshake(conn, addr, ticket))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handshake(self, conn: socket.socket, addr: object, ticket: Ticket) -> None:
        """Run one handshake in the slot the accept loop took; give the slot back after."""
        loop = asyncio.get_running_loop()
        timeout = float(self.holder.cfg.handshake_timeout)
        factory: Callable[[], asyncio.BaseProtocol] = self.factory
        if ticket is not UNCOUNTED:
            inner = self.factory

            def factory() -> asyncio.BaseProtocol:
                return GatedProtocol(inner, ticket)

        try:
            await loop.connect_accepted_socket(
                factory, conn, ssl=self.holder.context, ssl_handshake_timeout=timeout
            )
        except asyncio.CancelledError:
            ticket.release()
            conn.close()
            raise
        except Exception as exc:
            ticket.release()
            key, words = explain(exc, timeout)
            self.stats.failed[key] += 1
            log.warning(
                "TLS handshake from %s failed on %s: %s", peer_text(addr), self.spec.name, words
            )
            conn.close()
            if self.on_failure is not None:
                host = addr[0] if isinstance(addr, tuple) and addr else str(addr)
                self.on_failure(str(host), key, words)
        else:
            self.stats.completed += 1
        finally:
            self.slots.release()

    @property
    def accepting(self) -> bool:
        """Whether the accept loops are still running (for health checks)."""
        return bool(self._accepting) and not any(t.done() for t in self._accepting)

    def close(self) -> None:
        for task in self._accepting:
            task.cancel()
        for task in list(self._tasks):
            task.cancel()
        for sock in self.sockets:
            sock.close()
        if self.admission is not None:
            self.admission.close()

    async def wait_closed(self) -> None:
        pending = [*self._accepting, *self._tasks]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
