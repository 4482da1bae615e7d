"""MQTT over WebSocket: an adapter that gives an unchanged Link a plain byte stream.

`WsAdapter` is the asyncio protocol a WS or WSS listener creates per connection. It reads
the HTTP upgrade request (bounded by MQTT_CONNECT_TIMEOUT_SEC), answers 101 or an HTTP
error with a log line saying why, then creates the Link and hands it `WsTransport`, a
transport whose write() sends the bytes as one binary frame and whose close() sends a
close frame first. Incoming frames are unmasked by pytbmq.protocol.websocket.FrameReader
and their payload copied into the Link's buffer, one `buffer_updated` per read however
many frames it held. Ping, pong and close frames are answered here; the Link never sees
them. Over TLS (WSS) the same adapter runs under pytbmq.listeners.TlsListener, and
`get_extra_info` passes through, so the Link finds the client's certificate chain.

Created by pytbmq.broker for the "ws" and "wss" listeners.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

from pytbmq.link import Link
from pytbmq.protocol.websocket import (
    CLOSE_NORMAL,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    FrameReader,
    HandshakeError,
    IpNetwork,
    WsPolicy,
    client_address,
    close_frame,
    frame_header,
    http_error,
    negotiate,
    parse_request,
)

log = logging.getLogger(__name__)

_READ_BUFFER = bytearray(65536)
_READ_VIEW = memoryview(_READ_BUFFER)
_COPY_LIMIT = 16384  # larger payloads are written as (header, payload) without a copy
_NOT_SENT = frozenset({1004, 1005, 1006, 1015})  # close codes no endpoint may send
# Seconds a closed connection may take to go: flushing the close frame, and on WSS the
# TLS close_notify exchange, which waits for a peer that may be dead (a keep-alive
# timeout) and would otherwise hold the connection, and its will, for 30 s.
CLOSE_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class WsSettings:
    """One WebSocket listener's settings."""

    listener: str  # "ws" or "wss", for log lines
    policy: WsPolicy
    max_payload: int  # WS_NETTY_MAX_PAYLOAD_SIZE / WSS_NETTY_MAX_PAYLOAD_SIZE
    upgrade_timeout: float = 10.0  # MQTT_CONNECT_TIMEOUT_SEC
    trusted_proxies: tuple[IpNetwork, ...] = ()


def parse_networks(text: str) -> tuple[IpNetwork, ...]:
    """WS_TRUSTED_PROXIES (already validated by pytbmq.config) as networks."""
    return tuple(
        ipaddress.ip_network(item.strip(), strict=False) for item in text.split(",") if item.strip()
    )


class WsTransport(asyncio.Transport):
    """What the Link sees as its transport: bytes in write() leave as one binary frame."""

    __slots__ = ("_adapter", "_closed", "_raw")

    def __init__(self, raw: asyncio.Transport, adapter: WsAdapter) -> None:
        super().__init__()
        self._raw = raw
        self._adapter = adapter
        self._closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            return
        n = len(data)
        if n <= _COPY_LIMIT:
            self._raw.write(frame_header(n) + data)
        else:
            self._raw.writelines((frame_header(n), data))

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.write(b"".join(list_of_data))

    def close(self) -> None:
        """Close frame (1000), then close the TCP/TLS connection after what is queued."""
        if self._closed:
            return
        self._closed = True
        raw = self._raw
        if not raw.is_closing():
            raw.write(close_frame(CLOSE_NORMAL))
            raw.close()
            self._adapter.close_deadline()

    def abort(self) -> None:
        self._closed = True
        self._raw.abort()

    def is_closing(self) -> bool:
        return self._closed or self._raw.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._raw.get_extra_info(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._raw.set_write_buffer_limits(high=high, low=low)

    def get_write_buffer_size(self) -> int:
        return self._raw.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._raw.get_write_buffer_limits()

    def can_write_eof(self) -> bool:
        return False

    def is_reading(self) -> bool:
        return self._raw.is_reading()

    def pause_reading(self) -> None:
        self._raw.pause_reading()

    def resume_reading(self) -> None:
        self._raw.resume_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        raise NotImplementedError("the WebSocket adapter owns the connection")

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._adapter


class WsAdapter(asyncio.BufferedProtocol):
    """One WebSocket connection: the upgrade, then frames ↔ the Link's byte stream."""

    def __init__(self, settings: WsSettings, make_link: Callable[[], Link]) -> None:
        self.settings = settings
        self._make_link = make_link
        self.link: Link | None = None
        self._raw: asyncio.Transport | None = None
        self._ws: WsTransport | None = None
        self._request = bytearray()
        self._reader = FrameReader(settings.max_payload)
        self._timer: asyncio.TimerHandle | None = None
        self._lost = False
        self._paused = False  # the socket's write buffer is above its high-water mark
        self.peer = "?"
        self._peer_ip = ""

    # ------------------------------------------------------------ transport events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._raw = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = f"{peer[0]}:{peer[1]}"
            self._peer_ip = str(peer[0])
        self._timer = asyncio.get_running_loop().call_later(
            self.settings.upgrade_timeout, self._upgrade_timeout
        )

    def get_buffer(self, sizehint: int) -> memoryview:
        return _READ_VIEW

    def buffer_updated(self, nbytes: int) -> None:
        if self.link is not None:
            self._frames(_READ_VIEW[:nbytes])
        elif self._raw is not None and not self._raw.is_closing():
            self._request += _READ_VIEW[:nbytes]
            self._upgrade()

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def pause_writing(self) -> None:
        self._paused = True
        if self.link is not None:
            self.link.pause_writing()

    def resume_writing(self) -> None:
        self._paused = False
        if self.link is not None:
            self.link.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._ws is not None:
            self._ws._closed = True
        link = self.link
        if link is not None:
            link.connection_lost(exc)
        # adapter <-> WebSocket transport <-> link are reference cycles: break them so the
        # connection is freed by reference counting now, not by a full collection later
        self.link = None
        self._ws = None
        self._raw = None

    def close_deadline(self) -> None:
        """The connection is closing: abort it if it has not gone in CLOSE_TIMEOUT."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self._close_timeout)

    def _close_timeout(self) -> None:
        self._timer = None
        if not self._lost and self._raw is not None:
            self._raw.abort()

    # ------------------------------------------------------------ the upgrade
    def _upgrade(self) -> None:
        raw = self._raw
        assert raw is not None
        settings = self.settings
        try:
            request = parse_request(self._request)
            if request is None:
                return
            upgrade = negotiate(request, settings.policy)
        except HandshakeError as err:
            self._refuse(err)
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        rest = bytes(self._request[request.size :])
        self._request = bytearray()
        raw.write(upgrade.response)
        forwarded = client_address(self._peer_ip, request, settings.trusted_proxies)
        if forwarded is not None:
            log.debug(
                "WebSocket connection from %s (%s) via trusted proxy %s",
                forwarded,
                settings.listener,
                self.peer,
            )
        self._ws = ws = WsTransport(raw, self)
        self.link = link = self._make_link()
        link.connection_made(ws)
        if forwarded is not None:
            link.peer = link.address = forwarded
        if rest:
            self._frames(memoryview(rest))

    def _refuse(self, err: HandshakeError) -> None:
        raw = self._raw
        assert raw is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        log.info(
            "WebSocket upgrade from %s (%s) refused with HTTP %d: %s",
            self.peer,
            self.settings.listener,
            err.status,
            err.reason,
        )
        raw.write(http_error(err))
        raw.close()
        self.close_deadline()

    def _upgrade_timeout(self) -> None:
        self._timer = None
        raw = self._raw
        if self.link is None and raw is not None and not raw.is_closing():
            log.info(
                "WebSocket connection from %s (%s) closed: no upgrade request within %gs",
                self.peer,
                self.settings.listener,
                self.settings.upgrade_timeout,
            )
            raw.close()
            self.close_deadline()

    # ------------------------------------------------------------ frames
    def _frames(self, data: memoryview) -> None:
        reader = self._reader
        chunks = reader.feed(data)
        if chunks:
            self._feed_link(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if reader.controls:
            self._controls()
        if reader.error is not None and self._raw is not None and not self._raw.is_closing():
            code, reason = reader.error
            log.info(
                "WebSocket connection from %s (%s) closed with code %d: %s",
                self.link.peer if self.link is not None else self.peer,
                self.settings.listener,
                code,
                reason,
            )
            self._close_with(code, reason)

    def _feed_link(self, data: bytes) -> None:
        link = self.link
        ws = self._ws
        assert link is not None and ws is not None
        total = len(data)
        if total <= 65536:
            if ws.is_closing():
                return
            buf = link.get_buffer(total)
            if len(buf) >= total:
                buf[:total] = data
                link.buffer_updated(total)
                return
        view = memoryview(data)
        pos = 0
        while pos < total and not ws.is_closing():
            buf = link.get_buffer(total - pos)
            n = min(len(buf), total - pos)
            buf[:n] = view[pos : pos + n]
            link.buffer_updated(n)
            pos += n

    def _controls(self) -> None:
        reader = self._reader
        controls = reader.controls
        reader.controls = []
        raw = self._raw
        assert raw is not None
        for opcode, payload in controls:
            if raw.is_closing():
                return
            if opcode == OP_PING:
                if not self._paused:  # a client that pings but does not read gets no more
                    raw.write(frame_header(len(payload), OP_PONG) + payload)
            elif opcode == OP_CLOSE:
                code = int.from_bytes(payload[:2], "big") if payload else None
                log.debug(
                    "WebSocket close frame from %s (%s), code %s",
                    self.peer,
                    self.settings.listener,
                    code,
                )
                # Echo a valid status code (RFC 6455 section 5.5.1), then close.
                valid = code is not None and 1000 <= code < 5000 and code not in _NOT_SENT
                self._close_with(code if valid and code is not None else CLOSE_NORMAL, "")
            # OP_PONG: nothing to do

    def _close_with(self, code: int, reason: str) -> None:
        raw = self._raw
        assert raw is not None
        if self._ws is not None:
            self._ws._closed = True
        if not raw.is_closing():
            raw.write(close_frame(code, reason))
            raw.close()
            self.close_deadline()


__all__ = ["WsAdapter", "WsSettings", "WsTransport", "parse_networks"]
