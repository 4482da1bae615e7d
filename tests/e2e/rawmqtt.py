"""A tiny, independent MQTT 3.1 / 3.1.1 / 5.0 packet codec and blocking raw-socket client.

The end-to-end tests must not depend on the broker's own codec, so everything here is
written by hand from the MQTT specifications with ``struct``. It is deliberately permissive
on the encoding side (it can build malformed packets) and strict on the decoding side.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

# Control packet types
CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14
AUTH = 15

PACKET_NAMES = {
    CONNECT: "CONNECT",
    CONNACK: "CONNACK",
    PUBLISH: "PUBLISH",
    PUBACK: "PUBACK",
    PUBREC: "PUBREC",
    PUBREL: "PUBREL",
    PUBCOMP: "PUBCOMP",
    SUBSCRIBE: "SUBSCRIBE",
    SUBACK: "SUBACK",
    UNSUBSCRIBE: "UNSUBSCRIBE",
    UNSUBACK: "UNSUBACK",
    PINGREQ: "PINGREQ",
    PINGRESP: "PINGRESP",
    DISCONNECT: "DISCONNECT",
    AUTH: "AUTH",
}

# MQTT 5 property identifiers
PAYLOAD_FORMAT_INDICATOR = 0x01
MESSAGE_EXPIRY_INTERVAL = 0x02
CONTENT_TYPE = 0x03
RESPONSE_TOPIC = 0x08
CORRELATION_DATA = 0x09
SUBSCRIPTION_IDENTIFIER = 0x0B
SESSION_EXPIRY_INTERVAL = 0x11
ASSIGNED_CLIENT_IDENTIFIER = 0x12
SERVER_KEEP_ALIVE = 0x13
AUTHENTICATION_METHOD = 0x15
AUTHENTICATION_DATA = 0x16
REQUEST_PROBLEM_INFORMATION = 0x17
WILL_DELAY_INTERVAL = 0x18
REQUEST_RESPONSE_INFORMATION = 0x19
RESPONSE_INFORMATION = 0x1A
SERVER_REFERENCE = 0x1C
REASON_STRING = 0x1F
RECEIVE_MAXIMUM = 0x21
TOPIC_ALIAS_MAXIMUM = 0x22
TOPIC_ALIAS = 0x23
MAXIMUM_QOS = 0x24
RETAIN_AVAILABLE = 0x25
USER_PROPERTY = 0x26
MAXIMUM_PACKET_SIZE = 0x27
WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
SHARED_SUBSCRIPTION_AVAILABLE = 0x2A

_BYTE, _U16, _U32, _VARINT, _STR, _BIN, _PAIR = range(7)
PROPERTY_TYPES = {
    PAYLOAD_FORMAT_INDICATOR: _BYTE,
    MESSAGE_EXPIRY_INTERVAL: _U32,
    CONTENT_TYPE: _STR,
    RESPONSE_TOPIC: _STR,
    CORRELATION_DATA: _BIN,
    SUBSCRIPTION_IDENTIFIER: _VARINT,
    SESSION_EXPIRY_INTERVAL: _U32,
    ASSIGNED_CLIENT_IDENTIFIER: _STR,
    SERVER_KEEP_ALIVE: _U16,
    AUTHENTICATION_METHOD: _STR,
    AUTHENTICATION_DATA: _BIN,
    REQUEST_PROBLEM_INFORMATION: _BYTE,
    WILL_DELAY_INTERVAL: _U32,
    REQUEST_RESPONSE_INFORMATION: _BYTE,
    RESPONSE_INFORMATION: _STR,
    SERVER_REFERENCE: _STR,
    REASON_STRING: _STR,
    RECEIVE_MAXIMUM: _U16,
    TOPIC_ALIAS_MAXIMUM: _U16,
    TOPIC_ALIAS: _U16,
    MAXIMUM_QOS: _BYTE,
    RETAIN_AVAILABLE: _BYTE,
    USER_PROPERTY: _PAIR,
    MAXIMUM_PACKET_SIZE: _U32,
    WILDCARD_SUBSCRIPTION_AVAILABLE: _BYTE,
    SUBSCRIPTION_IDENTIFIER_AVAILABLE: _BYTE,
    SHARED_SUBSCRIPTION_AVAILABLE: _BYTE,
}

# Properties are given as a list of (identifier, value) pairs so that duplicates (for
# malformed-input tests) and ordered user properties can be expressed.
PropList = list[tuple[int, Any]]


class DecodeError(Exception):
    """The bytes received from the broker are not a well-formed MQTT packet."""


# --------------------------------------------------------------------------- encoding


def encode_varint(value: int) -> bytes:
    if value < 0 or value > 268_435_455:
        raise ValueError(f"variable byte integer out of range: {value}")
    out = bytearray()
    while True:
        byte = value % 128
        value //= 128
        if value:
            byte |= 0x80
        out.append(byte)
        if not value:
            return bytes(out)


def encode_str(value: str | bytes) -> bytes:
    raw = value.encode("utf-8") if isinstance(value, str) else value
    return struct.pack(">H", len(raw)) + raw


encode_bin = encode_str


def encode_properties(props: PropList | None) -> bytes:
    body = bytearray()
    for ident, value in props or []:
        body += encode_varint(ident)
        kind = PROPERTY_TYPES[ident]
        if kind == _BYTE:
            body += struct.pack(">B", value)
        elif kind == _U16:
            body += struct.pack(">H", value)
        elif kind == _U32:
            body += struct.pack(">I", value)
        elif kind == _VARINT:
            body += encode_varint(value)
        elif kind in (_STR, _BIN):
            body += encode_str(value)
        else:
            key, val = value
            body += encode_str(key) + encode_str(val)
    return encode_varint(len(body)) + bytes(body)


def packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + encode_varint(len(body)) + body


@dataclass
class Will:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: PropList | None = None


def connect(
    client_id: str | bytes,
    *,
    version: int = 4,
    clean: bool = True,
    keepalive: int = 60,
    will: Will | None = None,
    username: str | None = None,
    password: bytes | None = None,
    properties: PropList | None = None,
    protocol_name: str | None = None,
    reserved_flag: bool = False,
) -> bytes:
    """CONNECT. version 3 = MQTT 3.1 ("MQIsdp"), 4 = 3.1.1, 5 = 5.0 (others allowed raw)."""
    if protocol_name is None:
        protocol_name = "MQIsdp" if version == 3 else "MQTT"
    flags = 0
    if reserved_flag:
        flags |= 0x01
    if clean:
        flags |= 0x02
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    if password is not None:
        flags |= 0x40
    if username is not None:
        flags |= 0x80
    body = encode_str(protocol_name) + struct.pack(">BBH", version, flags, keepalive)
    if version == 5:
        body += encode_properties(properties)
    body += encode_str(client_id)
    if will is not None:
        if version == 5:
            body += encode_properties(will.properties)
        body += encode_str(will.topic) + encode_bin(will.payload)
    if username is not None:
        body += encode_str(username)
    if password is not None:
        body += encode_bin(password)
    return packet(0x10, body)


def publish(
    topic: str | bytes,
    payload: bytes = b"",
    *,
    qos: int = 0,
    retain: bool = False,
    dup: bool = False,
    packet_id: int | None = None,
    version: int = 4,
    properties: PropList | None = None,
) -> bytes:
    first = 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = encode_str(topic)
    if qos > 0:
        body += struct.pack(">H", packet_id if packet_id is not None else 1)
    if version == 5:
        body += encode_properties(properties)
    return packet(first, body + payload)


def _ack(first: int, packet_id: int, version: int, reason: int | None) -> bytes:
    body = struct.pack(">H", packet_id)
    if version == 5 and reason not in (None, 0):
        body += bytes([reason])
    return packet(first, body)


def puback(packet_id: int, version: int = 4, reason: int | None = None) -> bytes:
    return _ack(0x40, packet_id, version, reason)


def pubrec(packet_id: int, version: int = 4, reason: int | None = None) -> bytes:
    return _ack(0x50, packet_id, version, reason)


def pubrel(packet_id: int, version: int = 4, reason: int | None = None) -> bytes:
    return _ack(0x62, packet_id, version, reason)


def pubcomp(packet_id: int, version: int = 4, reason: int | None = None) -> bytes:
    return _ack(0x70, packet_id, version, reason)


def subscribe(
    packet_id: int,
    filters: list[tuple[str | bytes, int]],
    *,
    version: int = 4,
    properties: PropList | None = None,
    first_byte: int = 0x82,
) -> bytes:
    """SUBSCRIBE; each filter is (topic filter, options byte). For 3.x the byte is the QoS."""
    body = struct.pack(">H", packet_id)
    if version == 5:
        body += encode_properties(properties)
    for topic_filter, options in filters:
        body += encode_str(topic_filter) + bytes([options])
    return packet(first_byte, body)


def sub_options(
    qos: int = 0,
    no_local: bool = False,
    retain_as_published: bool = False,
    retain_handling: int = 0,
) -> int:
    return (
        qos
        | (0x04 if no_local else 0)
        | (0x08 if retain_as_published else 0)
        | (retain_handling << 4)
    )


def unsubscribe(packet_id: int, filters: list[str], *, version: int = 4) -> bytes:
    body = struct.pack(">H", packet_id)
    if version == 5:
        body += encode_properties(None)
    for topic_filter in filters:
        body += encode_str(topic_filter)
    return packet(0xA2, body)


def pingreq() -> bytes:
    return b"\xc0\x00"


def disconnect(version: int = 4, reason: int = 0, properties: PropList | None = None) -> bytes:
    if version == 5 and (reason or properties):
        return packet(0xE0, bytes([reason]) + encode_properties(properties))
    return b"\xe0\x00"


# --------------------------------------------------------------------------- decoding


@dataclass
class Packet:
    type: int
    flags: int
    body: bytes
    version: int = 4
    # decoded fields (filled depending on type)
    packet_id: int | None = None
    reason: int | None = None
    properties: PropList = field(default_factory=list)
    session_present: bool | None = None
    topic: bytes | None = None
    payload: bytes | None = None
    qos: int = 0
    dup: bool = False
    retain: bool = False
    codes: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return PACKET_NAMES.get(self.type, f"TYPE{self.type}")

    def prop(self, ident: int, default: Any = None) -> Any:
        for key, value in self.properties:
            if key == ident:
                return value
        return default

    def props(self, ident: int) -> list[Any]:
        return [value for key, value in self.properties if key == ident]

    def __repr__(self) -> str:
        parts = [self.name]
        if self.type == PUBLISH:
            parts.append(f"topic={self.topic!r} qos={self.qos} dup={self.dup} retain={self.retain}")
            parts.append(f"payload={self.payload!r:.60}")
        if self.packet_id is not None:
            parts.append(f"id={self.packet_id}")
        if self.reason is not None:
            parts.append(f"reason=0x{self.reason:02x}")
        if self.session_present is not None:
            parts.append(f"sp={int(self.session_present)}")
        if self.codes:
            parts.append(f"codes={[hex(c) for c in self.codes]}")
        if self.properties:
            parts.append(f"props={self.properties}")
        return f"<{' '.join(parts)}>"


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DecodeError("packet too short")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack(">H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def varint(self) -> int:
        value = 0
        for shift in range(4):
            byte = self.u8()
            value |= (byte & 0x7F) << (7 * shift)
            if not byte & 0x80:
                return value
        raise DecodeError("variable byte integer longer than 4 bytes")

    def binary(self) -> bytes:
        return self.take(self.u16())

    def string(self) -> str:
        try:
            return self.binary().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError("invalid UTF-8 from broker") from exc

    def properties(self) -> PropList:
        length = self.varint()
        sub = _Reader(self.take(length))
        out: PropList = []
        while sub.remaining():
            ident = sub.varint()
            kind = PROPERTY_TYPES.get(ident)
            if kind is None:
                raise DecodeError(f"unknown property 0x{ident:02x}")
            if kind == _BYTE:
                out.append((ident, sub.u8()))
            elif kind == _U16:
                out.append((ident, sub.u16()))
            elif kind == _U32:
                out.append((ident, sub.u32()))
            elif kind == _VARINT:
                out.append((ident, sub.varint()))
            elif kind == _STR:
                out.append((ident, sub.string()))
            elif kind == _BIN:
                out.append((ident, sub.binary()))
            else:
                out.append((ident, (sub.string(), sub.string())))
        return out


def decode(first: int, body: bytes, version: int) -> Packet:
    ptype, flags = first >> 4, first & 0x0F
    pkt = Packet(type=ptype, flags=flags, body=body, version=version)
    rd = _Reader(body)
    v5 = version == 5
    if ptype == CONNACK:
        ack_flags = rd.u8()
        pkt.session_present = bool(ack_flags & 0x01)
        pkt.reason = rd.u8()
        if v5 and rd.remaining():
            pkt.properties = rd.properties()
    elif ptype == PUBLISH:
        pkt.qos = (flags >> 1) & 0x03
        pkt.dup = bool(flags & 0x08)
        pkt.retain = bool(flags & 0x01)
        pkt.topic = rd.binary()
        if pkt.qos:
            pkt.packet_id = rd.u16()
        if v5:
            pkt.properties = rd.properties()
        pkt.payload = rd.take(rd.remaining())
    elif ptype in (PUBACK, PUBREC, PUBREL, PUBCOMP):
        pkt.packet_id = rd.u16()
        pkt.reason = 0
        if v5 and rd.remaining():
            pkt.reason = rd.u8()
            if rd.remaining():
                pkt.properties = rd.properties()
    elif ptype in (SUBACK, UNSUBACK):
        pkt.packet_id = rd.u16()
        if v5:
            pkt.properties = rd.properties()
        pkt.codes = list(rd.take(rd.remaining()))
    elif ptype in (DISCONNECT, AUTH):
        pkt.reason = 0
        if v5 and rd.remaining():
            pkt.reason = rd.u8()
            if rd.remaining():
                pkt.properties = rd.properties()
    return pkt


# --------------------------------------------------------------------------- client


class RawClient:
    """A blocking socket speaking hand-encoded MQTT. ``recv`` returns None on EOF."""

    def __init__(self, host: str, port: int, version: int = 4, timeout: float = 5.0) -> None:
        self.version = version
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = bytearray()
        self.closed = False
        self.received: list[Packet] = []

    # -- plumbing
    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def try_send(self, data: bytes) -> bool:
        """Send, tolerating a connection the broker already closed."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def _fill(self, deadline: float) -> bool:
        """Read more bytes; False on EOF/reset. Raises TimeoutError at the deadline."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no data from broker before the deadline")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            raise
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self._buf += chunk
        return True

    def _parse_one(self) -> tuple[int, bytes] | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        length = 0
        for i in range(1, 5):
            if i >= len(buf):
                return None
            byte = buf[i]
            length |= (byte & 0x7F) << (7 * (i - 1))
            if not byte & 0x80:
                header = i + 1
                break
        else:
            raise DecodeError("remaining length from broker longer than 4 bytes")
        if len(buf) < header + length:
            return None
        first = buf[0]
        body = bytes(buf[header : header + length])
        del buf[: header + length]
        return first, body

    def recv(self, timeout: float = 5.0) -> Packet | None:
        """Next packet, or None if the broker closed the connection. TimeoutError if silent."""
        deadline = time.monotonic() + timeout
        while True:
            parsed = self._parse_one()
            if parsed is not None:
                pkt = decode(parsed[0], parsed[1], self.version)
                self.received.append(pkt)
                return pkt
            if self.closed or not self._fill(deadline):
                if self._buf:
                    raise DecodeError(f"connection closed mid-packet: {bytes(self._buf)!r}")
                return None

    def expect(self, ptype: int, timeout: float = 5.0) -> Packet:
        pkt = self.recv(timeout)
        if pkt is None:
            raise AssertionError(f"broker closed the connection, expected {PACKET_NAMES[ptype]}")
        if pkt.type != ptype:
            raise AssertionError(f"expected {PACKET_NAMES[ptype]}, got {pkt!r}")
        return pkt

    def read_until_closed(self, timeout: float = 5.0) -> list[Packet]:
        """Collect every packet until EOF; AssertionError if still open after ``timeout``."""
        deadline = time.monotonic() + timeout
        packets: list[Packet] = []
        while True:
            remaining = deadline - time.monotonic()
            try:
                pkt = self.recv(max(remaining, 0.001))
            except TimeoutError:
                raise AssertionError(
                    f"connection still open after {timeout}s; got {packets!r}"
                ) from None
            if pkt is None:
                return packets
            packets.append(pkt)

    def poll(self, timeout: float) -> Packet | bool | None:
        """A packet, None on EOF, or False if nothing arrived within ``timeout``."""
        try:
            return self.recv(timeout)
        except TimeoutError:
            return False

    def shutdown_write(self) -> None:
        """Half-close: the broker sees EOF after everything sent so far."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    # -- conveniences
    def connect(
        self,
        client_id: str,
        *,
        clean: bool = True,
        keepalive: int = 60,
        will: Will | None = None,
        properties: PropList | None = None,
        expect_success: bool = True,
        timeout: float = 5.0,
    ) -> Packet:
        self.send(
            connect(
                client_id,
                version=self.version,
                clean=clean,
                keepalive=keepalive,
                will=will,
                properties=properties,
            )
        )
        connack = self.expect(CONNACK, timeout)
        if expect_success:
            assert connack.reason == 0, f"CONNACK refused: {connack!r}"
        return connack

    def subscribe(
        self,
        filters: list[tuple[str, int]],
        packet_id: int = 1,
        properties: PropList | None = None,
        timeout: float = 5.0,
    ) -> list[int]:
        self.send(subscribe(packet_id, filters, version=self.version, properties=properties))
        pkt = self.expect(SUBACK, timeout)
        assert pkt.packet_id == packet_id
        return pkt.codes

    def publish(self, topic: str, payload: bytes = b"", **kwargs: Any) -> None:
        kwargs.setdefault("version", self.version)
        self.send(publish(topic, payload, **kwargs))

    def puback(self, packet_id: int) -> None:
        self.send(puback(packet_id, self.version))

    def disconnect(self, reason: int = 0, properties: PropList | None = None) -> None:
        self.send(disconnect(self.version, reason, properties))

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
