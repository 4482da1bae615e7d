"""One client connection: bytes in → packets → router calls; router output → bytes out.

A Link is an asyncio BufferedProtocol. Every listener (TCP now; TLS and WebSocket later)
hands it a byte stream. Packets of one client are handled in order, synchronously, in
`buffer_updated`: no task per packet. Writes are collected and flushed once per
event-loop turn by the shared `Writer`. This is the one place that turns a ProtocolError
into a CONNACK, a DISCONNECT or (MQTT 3.x) a plain close.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

from pytbmq.auth.credentials import ScramAlgorithm, ScramCredentials, compiled_rules
from pytbmq.auth.rules import AuthRules, can_publish, can_subscribe
from pytbmq.auth.scram import ScramError, ScramServer
from pytbmq.auth.service import NEED_SLOW, SCRAM_METHODS, AuthRequest, AuthResult
from pytbmq.errors import ProtocolError, ProtocolViolation, UnsupportedProtocolVersion
from pytbmq.message import Message
from pytbmq.protocol.codec import decode, encode, encode_publish_parts
from pytbmq.protocol.connection import (
    InboundAliases,
    Limits,
    Negotiated,
    OutboundAliases,
    negotiate,
)
from pytbmq.protocol.packets import (
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    PingResp,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    ReasonCode,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)
from pytbmq.ratelimit import RateLimit
from pytbmq.router import Router
from pytbmq.session import Session
from pytbmq.tls.diagnose import NO_CERTIFICATES, PeerCertificates
from pytbmq.topics import validate_topic_name

if TYPE_CHECKING:
    from pytbmq.security import Security
    from pytbmq.storage.committer import Committer

log = logging.getLogger(__name__)

_READ_BUFFER = bytearray(65536)
_READ_VIEW = memoryview(_READ_BUFFER)
_PINGRESP = encode(PingResp(), 4)
CLOSE_GRACE_SEC = 2.0  # how long a closing connection may take to flush before abort
# What one PUBLISH handed to a link counts against the per-turn budget on top of its size
# (see writable): the loop's cost of a message is mostly per message, not per byte.
PUBLISH_TURN_COST = 4096
# Bytes a link reads before it yields the loop for a turn. libuv reads a readable socket
# up to 32 times per loop iteration: without this a flooding client could hand one turn
# 32 x 64 KiB (about 25,000 small PUBLISH packets, seconds of work) while every other
# client, and every flush, waited for the turn to end.
READ_TURN_BUDGET = len(_READ_BUFFER)
# How long bytes wait for the end of a busy loop turn before a later read writes them.
FLUSH_AFTER_SEC = 0.001
_V5 = 5
_RULE_CACHE_MAX = 1024  # topics (and filters) whose authorization a link remembers


@dataclass(frozen=True, slots=True)
class LinkSettings:
    limits: Limits
    connect_timeout: float = 10.0  # MQTT_CONNECT_TIMEOUT_SEC
    topic_alias_min_length: int = 50  # MQTT_TOPIC_MIN_LENGTH_FOR_ALIAS_REPLACEMENT
    write_high_water: int = 1280 * 1024  # NETTY_WRITE_BUFFER_HIGH_WATER_MARK
    write_low_water: int = 640 * 1024  # NETTY_WRITE_BUFFER_LOW_WATER_MARK
    # TLS listeners: reads the client's certificate chain from the transport's ssl_object
    peer_certificates: Callable[[Any], PeerCertificates] | None = None
    # Authentication and authorization; None only in tests that drive links directly
    security: Security | None = None
    # MQTT_INCOMING/OUTGOING_RATE_LIMITS_*: per-client capacity:seconds pairs, or None
    incoming_limit: tuple[tuple[int, int], ...] | None = None
    outgoing_limit: tuple[tuple[int, int], ...] | None = None
    total_limit: RateLimit | None = None  # MQTT_TOTAL_RATE_LIMITS_*: shared by all links


class Writer:
    """Collects each link's outgoing bytes and writes them once per event-loop turn.

    A turn can be long (a poll that found hundreds of readable connections): links read
    later in it call `flush_due`, so what waited `FLUSH_AFTER_SEC` is written then instead
    of at the turn's end, and no reply waits for a whole busy turn.

    `gate` (set by the broker when the store is durable) holds acknowledgements until the
    changes logged before them are committed (pytbmq.storage.committer).
    """

    __slots__ = ("_loop", "_scheduled", "dirty", "gate", "since")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.dirty: list[Link] = []  # links with bytes to write, in the order marked
        self.since = 0.0  # time.monotonic() of the first of them
        self._scheduled = False
        self.gate: Committer | None = None

    def mark(self, link: Link) -> None:
        dirty = self.dirty
        if not dirty:
            self.since = time.monotonic()
        dirty.append(link)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """The end of the turn: write every marked link's bytes."""
        self._scheduled = False
        self._write_marked()

    def flush_due(self, now: float) -> None:
        """During a turn: write them if the oldest has waited `FLUSH_AFTER_SEC` by `now`
        (the turn's own flush stays scheduled for what comes later)."""
        if now >= self.since + FLUSH_AFTER_SEC:
            self._write_marked()

    def _write_marked(self) -> None:
        dirty = self.dirty
        self.dirty = []
        for link in dirty:
            link.flush()


class Link(asyncio.BufferedProtocol):
    """A client connection. Satisfies pytbmq.session.SessionLink."""

    def __init__(
        self,
        router: Router,
        writer: Writer,
        settings: LinkSettings,
        registry: set[Link],
        listener: str,
    ) -> None:
        self.router = router
        self.writer = writer
        self.settings = settings
        self.registry = registry
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.address = "?"  # the client's IP address, for blocked clients and records
        self.peer_certificates = NO_CERTIFICATES  # verified client chain on TLS listeners
        self.session: Session | None = None
        self.client_id = ""
        self.version = 0  # protocol level, known once CONNECT is decoded
        self.receive_maximum = 65535
        self._max_in = settings.limits.max_packet_size
        self._max_out: int | None = None
        self._pending = bytearray()
        self._turn_rx = 0  # bytes read since reading last yielded (READ_TURN_BUDGET)
        self._out: list[bytes] = []
        # PUBLISH bytes handed over since the last flush, each message counted
        # PUBLISH_TURN_COST more than its size
        self._unflushed = 0
        self._held: list[tuple[int, bytes]] = []  # (batch to commit first, bytes)
        self._marked = False
        self._paused = False
        self._closing = False
        self._clean_close = False  # DISCONNECT received: no will (unless 0x04)
        self._publish_will = True
        self._disconnect_reason = "connection closed"
        self._in_aliases = InboundAliases(settings.limits.topic_alias_maximum)
        self._out_aliases: OutboundAliases | None = None
        self._keep_alive = 0.0
        self._last_rx = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._connected = False
        self._negotiated: Negotiated | None = None
        # authentication
        self.client_type = "DEVICE"
        self.credentials_name: str | None = None  # the credentials that authenticated it
        self.keep_alive = 0  # seconds, as negotiated
        self._rules: AuthRules | None = None  # None: no restriction
        self._pub_allowed: dict[str, bool] = {}
        self._authenticating = False  # CONNECT waits for a decision; packets wait too
        self._auth_method: str | None = None  # MQTT 5 enhanced authentication in use
        self._scram: ScramServer | None = None  # an exchange in progress
        self._pending_connect: tuple[Connect, Negotiated] | None = None
        # rate limits (None when disabled)
        mono = time.monotonic()
        self._in_limit = (
            RateLimit(settings.incoming_limit, mono) if settings.incoming_limit else None
        )
        self._out_limit = (
            RateLimit(settings.outgoing_limit, mono) if settings.outgoing_limit else None
        )
        self._limit_in = self._in_limit is not None or settings.total_limit is not None
        self._limit_out = False  # set at CONNECT: non-persistent sessions only (TBMQ)

    # ------------------------------------------------------------ transport events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop: not a subclass
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = f"{peer[0]}:{peer[1]}"
            self.address = str(peer[0])
        # No TCP_NODELAY here: uvloop and asyncio set it on every TCP transport already
        # (tests/unit/test_read_turn.py checks), and asking for the socket object costs
        # a wrapper per connection (about 10% of the broker's CPU in a connection storm).
        transport.set_write_buffer_limits(
            high=self.settings.write_high_water, low=self.settings.write_low_water
        )
        reader = self.settings.peer_certificates
        if reader is not None:
            self.peer_certificates = reader(transport.get_extra_info("ssl_object"))
        self.registry.add(self)
        loop = asyncio.get_running_loop()
        self._last_rx = loop.time()
        self._timer = loop.call_later(self.settings.connect_timeout, self._connect_timeout)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _READ_VIEW

    def buffer_updated(self, nbytes: int) -> None:
        if self._closing:
            return
        self.router.counters.network_bytes_received += nbytes
        self._last_rx = now = self._now_mono()
        pending = self._pending
        if (
            nbytes == 2
            and _READ_BUFFER[0] == 0xC0  # a whole PINGREQ and nothing else
            and _READ_BUFFER[1] == 0
            and not pending
            and not self._out
            and not self._held
            and self.session is not None
            and not self._authenticating
            and self.transport is not None
        ):
            # Keep-alive pings are most of what idle clients send, and they arrive in
            # bursts (clients connected together ping together): answered here, with
            # nothing else queued to keep in order, a burst costs a third less.
            self.router.counters.network_bytes_sent += 2
            self.transport.write(_PINGRESP)  # [MQTT-3.12.4-1]
        elif pending:
            pending += _READ_VIEW[:nbytes]
            used = self._process(pending)
            del pending[:used]
        else:
            view = _READ_VIEW[:nbytes]
            used = self._process(view)
            if used < nbytes and not self._closing:
                pending += view[used:]
        writer = self.writer
        gate = writer.gate
        if gate is not None:
            gate.after_read()  # release what the store committed meanwhile
        if writer.dirty:
            writer.flush_due(now)  # a busy turn: what waited a while goes now
        self._turn_rx += nbytes
        if self._turn_rx >= READ_TURN_BUDGET:
            self._yield_reading()

    def _yield_reading(self) -> None:
        """Stop reading until the next loop turn, so what this read produced is flushed
        and every other connection is served before this one reads again."""
        self._turn_rx = 0
        transport = self.transport
        if self._closing or self._authenticating or transport is None:
            return
        if transport.is_closing():
            return
        transport.pause_reading()
        asyncio.get_running_loop().call_soon(self._resume_reading)

    def _resume_reading(self) -> None:
        transport = self.transport
        if self._closing or self._authenticating or transport is None:
            return  # closed meanwhile, or paused for authentication (which resumes it)
        if not transport.is_closing():
            transport.resume_reading()

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        session = self.session
        if session is not None and not self._closing:
            self.router.link_writable(session, time.time())  # a slow consumer caught up

    def connection_lost(self, exc: Exception | None) -> None:
        self.registry.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._closing = True
        self._held.clear()  # never sent: the client sends those packets again
        self._detach()
        # uvloop's TLS protocol keeps this link's bound methods after the connection is
        # gone, so link -> transport -> TLS protocol -> link would be a reference cycle:
        # dropping the transport lets reference counting free the connection at once,
        # instead of a full garbage collection much later (memory and pauses).
        self.transport = None
        if self._connected:
            if exc is not None and self._disconnect_reason == "connection closed":
                self._disconnect_reason = f"connection lost: {exc}"
            log.info(
                "client %s disconnected from %s (%s): %s",
                self.client_id,
                self.peer,
                self.listener,
                self._disconnect_reason,
            )

    # ------------------------------------------------------------ incoming
    @staticmethod
    def _now_mono() -> float:
        return time.monotonic()

    def _process(self, buf: bytearray | memoryview) -> int:
        """Decode and handle every whole packet in buf; returns the bytes consumed."""
        offset = 0
        end = len(buf)
        try:
            while offset < end and not self._closing and not self._authenticating:
                result = decode(buf, self.version, self._max_in, offset)
                if result is None:
                    break
                packet, offset = result
                self._handle(packet)
        except ProtocolError as err:
            self._protocol_error(err)
            return end
        except Exception:
            # A bug must cost one connection, never the broker.
            log.exception("internal error handling client %s from %s", self.client_id, self.peer)
            self._protocol_error(ProtocolError("internal error", ReasonCode.UNSPECIFIED_ERROR))
            return end
        return offset

    def _handle(self, packet: Packet) -> None:
        session = self.session
        if session is None:
            if isinstance(packet, Connect) and self._pending_connect is None:
                self._on_connect(packet)
                return
            if isinstance(packet, Auth) and self._scram is not None:
                self._on_connect_auth(packet)
                return
            if isinstance(packet, Connect):
                raise ProtocolViolation("second CONNECT")  # [MQTT-3.1.0-2]
            raise ProtocolViolation("first packet is not CONNECT")  # [MQTT-3.1.0-1]
        now = time.time()
        router = self.router
        if isinstance(packet, Publish):
            self._on_publish(session, packet, now)
        elif isinstance(packet, PubAck):
            router.puback(session, packet.packet_id, now)
        elif isinstance(packet, PubRec):
            if not router.pubrec(session, packet.packet_id, packet.reason_code, now):
                self._write(
                    encode(
                        PubRel(packet.packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND),
                        self.version,
                    )
                )
        elif isinstance(packet, PubRel):
            found = router.pubrel(session, packet.packet_id)
            code = 0 if found else ReasonCode.PACKET_IDENTIFIER_NOT_FOUND
            self._ack(encode(PubComp(packet.packet_id, code), self.version))  # [MQTT-4.3.3-11]
        elif isinstance(packet, PubComp):
            router.pubcomp(session, packet.packet_id, now)
        elif isinstance(packet, PingReq):
            self._write(_PINGRESP)  # [MQTT-3.12.4-1]
        elif isinstance(packet, Subscribe):
            self._on_subscribe(session, packet, now)
        elif isinstance(packet, Unsubscribe):
            codes = router.unsubscribe(session, packet.topic_filters)
            self._ack(encode(UnsubAck(packet.packet_id, tuple(codes)), self.version))
        elif isinstance(packet, Disconnect):
            self._on_disconnect(session, packet)
        elif isinstance(packet, Connect):
            raise ProtocolViolation("second CONNECT")  # [MQTT-3.1.0-2]
        elif isinstance(packet, Auth):
            self._on_reauth(packet)
        else:
            raise ProtocolViolation(f"{type(packet).__name__} is not sent by clients")

    # ------------------------------------------------------------ CONNECT and authentication
    def _on_connect(self, connect: Connect) -> None:
        self.version = connect.protocol_version
        self.client_id = connect.client_id
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        limits = self.settings.limits
        neg = negotiate(connect, limits)
        will = connect.will
        if neg.accepted and will is not None and not validate_topic_name(will.topic):
            neg = replace(
                neg, accepted=False, connack=ConnAck(False, ReasonCode.TOPIC_NAME_INVALID)
            )
        if not neg.accepted:
            self._refuse(connect, neg.connack.reason_code)
            return
        security = self.settings.security
        if security is None:
            if self.version == _V5 and connect.properties.authentication_method is not None:
                self._refuse(connect, ReasonCode.BAD_AUTHENTICATION_METHOD)  # [MQTT-4.12.0-1]
                return
            self._accept(connect, neg, None)
            return
        blocked = security.authenticator.blocked(
            neg.client_id, connect.username, self.address, time.time()
        )
        if blocked is not None:
            self._refuse(connect, ReasonCode.BANNED, f"blocked client ({blocked.key})")
            return
        method = connect.properties.authentication_method if self.version == _V5 else None
        if method is not None:
            self._start_enhanced_auth(connect, neg, method)
            return
        request = AuthRequest(
            client_id=neg.client_id,
            username=connect.username,
            password=connect.password,
            address=self.address,
            tls=self.settings.peer_certificates is not None,
            chain=self.peer_certificates.presented,
        )
        result = security.authenticator.authenticate(request, allow_slow=False)
        if result is not NEED_SLOW:
            self._decided(connect, neg, result)
            return
        # A stored password must be hashed: off the event loop. Packets after CONNECT
        # wait (reading is paused) until the decision is made.
        self._authenticating = True
        if self.transport is not None:
            self.transport.pause_reading()
        future = security.authenticate_slow(request)
        future.add_done_callback(lambda f: self._slow_auth_done(f, connect, neg))

    def _slow_auth_done(
        self, future: asyncio.Future[AuthResult], connect: Connect, neg: Negotiated
    ) -> None:
        self._authenticating = False
        if self._closing or future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            log.error("authentication of %r failed: %r", neg.client_id, exc)
            result = AuthResult(False, f"internal error: {exc}")
        else:
            result = future.result()
        self._decided(connect, neg, result)
        if self._closing:
            return
        if self.transport is not None:
            self.transport.resume_reading()
        pending = self._pending
        if pending:
            used = self._process(pending)
            del pending[:used]

    def _decided(
        self,
        connect: Connect,
        neg: Negotiated,
        result: AuthResult,
        auth_props: tuple[str, bytes] | None = None,
    ) -> None:
        """Authentication said yes or no; a yes still needs an allowed will topic."""
        security = self.settings.security
        assert security is not None
        tls = self.settings.peer_certificates is not None
        will = connect.will
        if (
            result.ok
            and will is not None
            and result.rules is not None
            and not can_publish(result.rules, will.topic)
        ):
            result = AuthResult(
                False, f"{result.reason}: not authorized to publish the will to {will.topic!r}"
            )
        if not result.ok:
            security.record_unauthorized(
                neg.client_id,
                self.address,
                connect.username,
                connect.password is not None,
                tls,
                result.reason,
            )
            self._refuse(connect, ReasonCode.NOT_AUTHORIZED, result.reason)
            return
        security.forget_unauthorized(neg.client_id, self.address)
        self._rules = result.rules
        self.client_type = result.client_type
        self._accept(connect, neg, auth_props, result.credentials_name)

    def _refuse(self, connect: Connect, code: int, detail: str = "") -> None:
        self._write(encode(ConnAck(False, code), self.version))
        log.info(
            "client %r from %s (%s, MQTT %s) refused: %s%s",
            connect.client_id,
            self.peer,
            self.listener,
            _version_name(self.version),
            _reason_word(code),
            f" ({detail})" if detail else "",
        )
        self._close()

    def _start_enhanced_auth(self, connect: Connect, neg: Negotiated, method: str) -> None:
        """MQTT 5 enhanced authentication: SCRAM-SHA-256 / SCRAM-SHA-512."""
        security = self.settings.security
        assert security is not None
        tls = self.settings.peer_certificates is not None
        algorithm = SCRAM_METHODS.get(method)
        if algorithm is None or not security.config.scram:
            code = ReasonCode.BAD_AUTHENTICATION_METHOD
            why = f"unsupported authentication method {method!r}"
            if algorithm is not None:
                code = ReasonCode.NOT_AUTHORIZED
                why = f"{method} is disabled (SECURITY_MQTT_SCRAM_ENABLED)"
            security.record_unauthorized(
                neg.client_id, self.address, connect.username, False, tls, why
            )
            self._refuse(connect, code, why)
            return
        server = ScramServer(ScramAlgorithm(algorithm))
        try:
            first = server.start(connect.properties.authentication_data or b"", self._scram_lookup)
        except ScramError as err:
            why = f"{method}: {err.reason}"
            security.record_unauthorized(
                neg.client_id, self.address, connect.username, False, tls, why
            )
            self._refuse(connect, ReasonCode.NOT_AUTHORIZED, why)
            return
        self._auth_method = method
        self._scram = server
        self._pending_connect = (connect, neg)
        self._send_auth(ReasonCode.CONTINUE_AUTHENTICATION, first)
        # A client that stops half-way is dropped like one that never sends CONNECT.
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.settings.connect_timeout, self._connect_timeout)

    def _scram_lookup(self, user_name: str) -> ScramCredentials | None:
        security = self.settings.security
        assert security is not None
        cred = security.authenticator.scram_credentials(user_name)
        if cred is None or not isinstance(cred.value, ScramCredentials):
            return None
        return cred.value

    def _send_auth(self, code: int, data: bytes) -> None:
        props = Properties(authentication_method=self._auth_method, authentication_data=data)
        self._write(encode(Auth(code, props), _V5))

    def _scram_finish(self, packet: Auth) -> tuple[AuthResult, bytes]:
        """Verify the client-final-message of the exchange in progress."""
        server = self._scram
        assert server is not None
        self._scram = None
        if packet.reason_code != ReasonCode.CONTINUE_AUTHENTICATION:
            raise ProtocolViolation("AUTH during an exchange must be Continue authentication")
        if packet.properties.authentication_method != self._auth_method:
            raise ProtocolViolation("AUTH with a different authentication method")  # 4.12
        try:
            final = server.finish(packet.properties.authentication_data or b"")
        except ScramError as err:
            return AuthResult(False, f"{self._auth_method}: {err.reason}"), b""
        security = self.settings.security
        assert security is not None
        creds = server.credentials
        assert creds is not None
        cred = security.authenticator.scram_credentials(creds.user_name)
        if cred is None:  # removed during the exchange
            return AuthResult(False, f"{self._auth_method}: credentials removed"), b""
        return (
            AuthResult(
                True,
                f"SCRAM credentials {cred.name!r}",
                cred.client_type.value,
                compiled_rules(creds),
                cred.name,
            ),
            final,
        )

    def _on_connect_auth(self, packet: Auth) -> None:
        pending = self._pending_connect
        assert pending is not None
        connect, neg = pending
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        result, final = self._scram_finish(packet)
        method = self._auth_method
        assert method is not None
        self._decided(connect, neg, result, (method, final))
        self._pending_connect = None

    def _on_reauth(self, packet: Auth) -> None:
        """Re-authentication while connected [MQTT-4.12.1]."""
        method = self._auth_method
        if method is None:
            raise ProtocolViolation("AUTH without an authentication method")  # [MQTT-4.12.0-1]
        if packet.properties.authentication_method != method:
            raise ProtocolViolation("AUTH with a different authentication method")  # 4.12.1-1
        if packet.reason_code == ReasonCode.RE_AUTHENTICATE and self._scram is None:
            server = ScramServer(ScramAlgorithm(SCRAM_METHODS[method]))
            try:
                first = server.start(
                    packet.properties.authentication_data or b"", self._scram_lookup
                )
            except ScramError as err:
                self._reauth_failed(f"{method}: {err.reason}")
                return
            self._scram = server
            self._send_auth(ReasonCode.CONTINUE_AUTHENTICATION, first)
            return
        if self._scram is None:
            raise ProtocolViolation("AUTH Continue authentication with no exchange in progress")
        result, final = self._scram_finish(packet)
        if not result.ok:
            self._reauth_failed(result.reason)
            return
        self._rules = result.rules
        self._pub_allowed = {}
        self.client_type = result.client_type
        self._send_auth(ReasonCode.SUCCESS, final)
        log.info("client %s re-authenticated (%s)", self.client_id, result.reason)

    def _reauth_failed(self, why: str) -> None:
        security = self.settings.security
        if security is not None:
            security.record_unauthorized(
                self.client_id,
                self.address,
                None,
                False,
                self.settings.peer_certificates is not None,
                f"re-authentication: {why}",
            )
        self._disconnect_reason = f"re-authentication failed: {why}"
        self.close_by_server(ReasonCode.NOT_AUTHORIZED)

    def _accept(
        self,
        connect: Connect,
        neg: Negotiated,
        auth_props: tuple[str, bytes] | None,
        credentials: str | None = None,
    ) -> None:
        refusal = self.router.admission_refusal(neg.client_id, self.client_type, neg.session_expiry)
        if refusal is not None:
            self._refuse(connect, ReasonCode.QUOTA_EXCEEDED, refusal)
            return
        self._negotiated = neg
        self.keep_alive = neg.keep_alive
        self.credentials_name = credentials
        self._limit_out = neg.session_expiry == 0 and (
            self._out_limit is not None or self.settings.total_limit is not None
        )
        self.client_id = neg.client_id
        self.receive_maximum = neg.client_receive_maximum
        self._max_out = neg.client_max_packet_size
        if neg.client_topic_alias_maximum:
            self._out_aliases = OutboundAliases(
                neg.client_topic_alias_maximum, self.settings.topic_alias_min_length
            )
        will = connect.will
        now = time.time()
        session, present = self.router.connect(
            self,
            neg.client_id,
            self.version,
            connect.clean_start,
            neg.session_expiry,
            will,
            now,
            self.client_type,
        )
        self.session = session
        self._connected = True
        connack = replace(neg.connack, session_present=present)
        if auth_props is not None:
            connack = replace(
                connack,
                properties=replace(
                    connack.properties,
                    authentication_method=auth_props[0],
                    authentication_data=auth_props[1],
                ),
            )
        self._write(encode(connack, self.version))
        subject = self.peer_certificates.leaf_subject()
        log.info(
            "client %s connected from %s (%s, MQTT %s, clean start %s, keep alive %ss, "
            "session present %s%s%s)",
            neg.client_id,
            self.peer,
            self.listener,
            _version_name(self.version),
            connect.clean_start,
            neg.keep_alive,
            present,
            f", certificate {subject}" if subject else "",
            f", credentials {credentials!r} as {self.client_type}" if credentials else "",
        )
        if neg.keep_alive:
            self._keep_alive = neg.keep_alive * 1.5  # [MQTT-3.1.2-22]
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._keep_alive, self._check_keep_alive)
        self.router.session_started(session, now)

    def _take(self, own: RateLimit | None) -> bool:
        """A token from this client's bucket (incoming or outgoing) and the total's."""
        now = time.monotonic()
        if own is not None and not own.try_take(now):
            return False
        total = self.settings.total_limit
        return total is None or total.try_take(now)

    def _may_publish(self, topic: str) -> bool:
        cache = self._pub_allowed
        allowed = cache.get(topic)
        if allowed is None:
            if len(cache) >= _RULE_CACHE_MAX:
                cache.clear()
            allowed = cache[topic] = can_publish(self._rules, topic)
        return allowed

    def _may_subscribe(self, topic_filter: str) -> bool:
        return can_subscribe(self._rules, topic_filter)

    def _on_publish(self, session: Session, packet: Publish, now: float) -> None:
        v5 = self.version == _V5
        props = packet.properties
        topic = packet.topic
        if v5:
            if props.subscription_identifiers:
                raise ProtocolViolation("PUBLISH from a client with a Subscription Identifier")
            topic = self._in_aliases.resolve(topic, props.topic_alias)  # [MQTT-3.3.4-6] above
        elif not topic:
            raise ProtocolViolation("PUBLISH with an empty topic")
        if not validate_topic_name(topic):
            raise ProtocolError(f"invalid topic name {topic!r}", ReasonCode.TOPIC_NAME_INVALID)
        qos = packet.qos
        pid = packet.packet_id
        if qos == 2:
            assert pid is not None
            if pid not in session.inflight_in and (
                len(session.inflight_in) >= self.settings.limits.receive_maximum
            ):
                raise ProtocolError(
                    "more unacknowledged QoS 2 messages than Receive Maximum",
                    ReasonCode.RECEIVE_MAXIMUM_EXCEEDED,  # [MQTT-3.3.4-9]
                )
        reason = 0
        if v5 and props.payload_format_indicator == 1 and not _is_utf8(packet.payload):
            reason = ReasonCode.PAYLOAD_FORMAT_INVALID
        elif topic.startswith("$SYS"):
            reason = ReasonCode.NOT_AUTHORIZED  # $SYS is the broker's own namespace
        elif self._rules is not None and not self._may_publish(topic):
            if not v5:  # MQTT 3.x has no way to say no: TBMQ closes the connection
                self._disconnect_reason = f"not authorized to publish to {topic!r}"
                log.info("client %s: %s", self.client_id, self._disconnect_reason)
                self._close()
                return
            reason = ReasonCode.NOT_AUTHORIZED
        elif (
            self._limit_in
            and (qos < 2 or pid not in session.inflight_in)  # not a resend of one we hold
            and not self._take(self._in_limit)
        ):
            self.router.counters.messages_refused_rate_limit += 1
            if not v5:  # MQTT 3.x cannot refuse a PUBLISH: TBMQ closes the connection
                self._disconnect_reason = "incoming message rate limit exceeded"
                log.info("client %s: %s", self.client_id, self._disconnect_reason)
                self._close()
                return
            reason = ReasonCode.QUOTA_EXCEEDED
        elif qos < 2 or self.router.qos2_received(session, pid):  # type: ignore[arg-type]
            msg = Message.create(
                topic, packet.payload, qos, packet.retain, props, self.client_id, now
            )
            if self.router.publish(msg, now) == 0 and v5:
                reason = ReasonCode.NO_MATCHING_SUBSCRIBERS
        if qos == 1:
            assert pid is not None
            self._ack(encode(PubAck(pid, reason), self.version))
        elif qos == 2:
            assert pid is not None
            if reason >= 0x80:
                self.router.pubrel(session, pid)
            self._ack(encode(PubRec(pid, reason), self.version))

    def _on_subscribe(self, session: Session, packet: Subscribe, now: float) -> None:
        v5 = self.version == _V5
        authorize = None if self._rules is None else self._may_subscribe
        codes, retained = self.router.subscribe(session, packet, v5, authorize)
        self._ack(encode(SubAck(packet.packet_id, tuple(codes)), self.version))
        if retained:
            self.router.send_retained(session, retained, now)

    def _on_disconnect(self, session: Session, packet: Disconnect) -> None:
        neg = self._negotiated
        expiry = packet.properties.session_expiry_interval
        if expiry is not None:
            if neg is not None and neg.session_expiry == 0 and expiry != 0:
                raise ProtocolViolation("DISCONNECT sets a session expiry after CONNECT had 0")
            session.expiry_interval = min(expiry, self.settings.limits.max_session_expiry)
        self._clean_close = True
        self._publish_will = packet.reason_code == ReasonCode.DISCONNECT_WITH_WILL_MESSAGE
        self._disconnect_reason = (
            "client sent DISCONNECT"
            if packet.reason_code == 0
            else f"client sent DISCONNECT {_reason_name(packet.reason_code)}"
        )
        self._close()  # [MQTT-3.14.4-1]

    # ------------------------------------------------------------ errors and timers
    def _protocol_error(self, err: ProtocolError) -> None:
        code = err.reason_code
        if self._connected:
            if self.version == _V5:
                self._write(encode(Disconnect(code), _V5))  # [MQTT-4.13.1-1]
        elif isinstance(err, UnsupportedProtocolVersion):
            # [MQTT-3.1.2-2]: answer in 3.1.1 form (return code 1) and close.
            self._write(encode(ConnAck(False, ReasonCode.UNSUPPORTED_PROTOCOL_VERSION), 4))
        elif self.version == _V5:
            self._write(encode(ConnAck(False, code), _V5))
        self._disconnect_reason = f"protocol error {_reason_name(code)}: {err}"
        if not self._connected:
            log.info(
                "connection from %s (%s) rejected: %s",
                self.peer,
                self.listener,
                self._disconnect_reason,
            )
        self._close()

    def _connect_timeout(self) -> None:
        self._timer = None
        if self.session is None and not self._closing:
            log.info("connection from %s (%s) closed: no CONNECT in time", self.peer, self.listener)
            self._close()

    def _check_keep_alive(self) -> None:
        self._timer = None
        if self._closing:
            return
        idle = self._now_mono() - self._last_rx
        if idle >= self._keep_alive:
            self._disconnect_reason = "keep alive timeout"
            self.close_by_server(ReasonCode.KEEP_ALIVE_TIMEOUT)  # [MQTT-3.1.2-22]
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._keep_alive - idle, self._check_keep_alive)

    # ------------------------------------------------------------ outgoing (SessionLink)
    def send_publish(
        self,
        message: Message,
        qos: int,
        retain: bool,
        sub_ids: tuple[int, ...],
        packet_id: int | None,
        dup: bool,
        now: float,
    ) -> bool:
        if self._closing:
            return True  # the session keeps it; it is resent when the client returns
        if not qos and self._limit_out and not self._take(self._out_limit):
            self.router.counters.messages_dropped_rate_limit += 1
            return True  # QoS 0 over the outgoing limit is dropped (TBMQ)
        aliases = self._out_aliases
        alias = aliases.lookup(message.topic) if aliases is not None else None
        if dup or alias is not None:
            head, tail = self._encode_special(message, qos, retain, sub_ids, dup, alias, now)
        else:
            head, tail = message.encoded(self.version == _V5, qos, retain, sub_ids, now)
        size = len(head) + len(tail) + (2 if qos else 0)
        if self._max_out is not None and size > self._max_out:
            return False  # [MQTT-3.1.2-24]
        self._unflushed += (size + PUBLISH_TURN_COST) if qos else size
        counters = self.router.counters
        counters.sent[qos] += 1
        counters.sent_bytes += len(message.payload)
        if self._held:  # keep this connection's order behind a held acknowledgement
            pid_bytes = packet_id.to_bytes(2, "big") if qos and packet_id is not None else b""
            self._hold(head + pid_bytes + tail)
            return True
        out = self._out
        out.append(head)
        if qos:
            assert packet_id is not None
            out.append(packet_id.to_bytes(2, "big"))
        out.append(tail)
        if not self._marked:
            self._marked = True
            self.writer.mark(self)
        return True

    def _encode_special(
        self,
        message: Message,
        qos: int,
        retain: bool,
        sub_ids: tuple[int, ...],
        dup: bool,
        alias: tuple[int, bool] | None,
        now: float,
    ) -> tuple[bytes, bytes]:
        """A PUBLISH that cannot share the cached bytes: DUP set or a topic alias."""
        topic = message.topic
        props = message.properties
        if self.version == _V5:
            changes: dict[str, Any] = {}
            if sub_ids:
                changes["subscription_identifiers"] = sub_ids
            if message.expires_at is not None:
                changes["message_expiry_interval"] = max(1, math.ceil(message.expires_at - now))
            if alias is not None:
                changes["topic_alias"] = alias[0]
                if alias[1]:
                    topic = ""  # the client knows this alias [MQTT-3.3.2-12]
            if changes:
                props = replace(props, **changes)
        return encode_publish_parts(topic, message.payload, qos, retain, dup, props, self.version)

    def send_pubrel(self, packet_id: int) -> None:
        self._write(encode(PubRel(packet_id), self.version))

    def can_take_qos0(self) -> bool:
        return not self._paused and not self._closing

    def writable(self) -> bool:
        # _paused is only set once a flush overfills the socket's buffer; counting what
        # this loop turn handed over keeps a resumed session from moving its whole queue
        # into flight (and memory) in one turn, and bounds the turn's work for this link:
        # with PUBLISH_TURN_COST per message, about 290 small messages or 18 of 64 KB at
        # the default high-water mark (the next flush frees the budget and pumps the rest).
        # QoS 0 is not held back by this count: one busy turn can exceed it while the
        # socket takes everything.
        return (
            not self._paused
            and not self._closing
            and self._unflushed < self.settings.write_high_water
        )

    def close_by_server(self, reason_code: int) -> None:
        """Server-initiated close; the router has already detached the session."""
        if self._closing:
            return
        if reason_code == ReasonCode.SESSION_TAKEN_OVER:
            self._disconnect_reason = "session taken over"
            self.session = None
        elif reason_code == ReasonCode.SERVER_SHUTTING_DOWN:
            self._disconnect_reason = "server shutting down"
        if self.version == _V5 and self._connected:
            self._write(encode(Disconnect(reason_code), _V5))
        self._close()

    def _write(self, data: bytes) -> None:
        if self._held:
            self._hold(data)
            return
        self._out.append(data)
        if not self._marked:
            self._marked = True
            self.writer.mark(self)

    # ------------------------------------------------------------ acknowledgement gating
    def _ack(self, data: bytes) -> None:
        """Send an acknowledgement once every change logged before it is committed:
        PUBACK / PUBREC mean the message is stored for every persistent session it
        matched, PUBCOMP that the packet id is released, SUBACK that the subscription
        is stored. Without a durable store, or with nothing uncommitted, it goes at once."""
        gate = self.writer.gate
        if gate is None or (not self._held and gate.idle()):
            self._write(data)
        else:
            self._hold(data)

    def _hold(self, data: bytes) -> None:
        gate = self.writer.gate
        assert gate is not None
        held = self._held
        target = gate.target()
        if target <= gate.committed:  # everything logged so far is already durable
            if held:
                self.release(gate.committed)
            self._out.append(data)
            if not self._marked:
                self._marked = True
                self.writer.mark(self)
            return
        if not held or held[-1][0] != target:
            gate.wait(self, target)
        held.append((target, data))

    def release(self, committed: int) -> None:
        """Batches up to `committed` are durable: send what waited for them, in order."""
        held = self._held
        if not held or self._closing:
            held.clear()
            return
        count = 0
        for target, _data in held:
            if target > committed:
                break
            count += 1
        self._out.extend(data for _target, data in held[:count])
        del held[:count]
        if count:
            self.flush()  # now, not a loop turn later: this runs once per commit

    def flush(self) -> None:
        self._marked = False
        gated = self._unflushed >= self.settings.write_high_water
        self._unflushed = 0
        out = self._out
        if not out:
            return
        self._out = []
        transport = self.transport
        if transport is not None and not transport.is_closing():
            data = b"".join(out) if len(out) > 1 else out[0]
            self.router.counters.network_bytes_sent += len(data)
            transport.write(data)
            session = self.session
            if gated and not self._paused and session is not None:
                # the socket took it all: what waited for this flush may go now
                self.router.link_writable(session, time.time())

    def _close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()
        # The session goes offline now, not when the socket is finally gone: a will is
        # not held back by a slow close, and new messages queue for the next connection.
        self._detach()
        if self.transport is not None:
            self.transport.close()
            # close() waits for unsent data (and for TLS, the peer's close_notify); a dead
            # peer would hold the connection, and its will, for the OS's TCP timeout.
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(CLOSE_GRACE_SEC, self._abort)

    def _detach(self) -> None:
        """Hand the session back to the router: it goes offline (and the will is due)."""
        session = self.session
        if session is not None:
            self.session = None
            publish_will = not self._clean_close or self._publish_will
            self.router.connection_lost(session, time.time(), publish_will)

    def _abort(self) -> None:
        self._timer = None
        if self.transport is not None and self in self.registry:
            self.transport.abort()


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _version_name(version: int) -> str:
    return {3: "3.1", 4: "3.1.1", 5: "5"}.get(version, str(version))


def _reason_word(code: int) -> str:
    try:
        return ReasonCode(code).name
    except ValueError:
        return f"0x{code:02X}"


def _reason_name(code: int) -> str:
    try:
        return f"0x{code:02X} {ReasonCode(code).name}"
    except ValueError:
        return f"0x{code:02X}"


__all__ = ["Link", "LinkSettings", "Properties", "Writer"]
