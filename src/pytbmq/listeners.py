"""Listeners: each turns accepted connections into byte streams for a Link.

TCP (1883) in this release; TLS, WebSocket and WebSocket Secure plug in here as
further listener kinds that hand the same Link a decrypted or unframed byte stream.
Called by the broker (pytbmq.broker) only.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

from pytbmq.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    name: str  # "tcp", later "ssl", "ws", "wss"
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
        addr = sock.getsockname()
        host, port = addr[0], addr[1]
        shown = f"[{host}]" if sock.family == socket.AF_INET6 else host
        log.info("listener %s bound to %s:%d", spec.name, shown, port)
    return server
