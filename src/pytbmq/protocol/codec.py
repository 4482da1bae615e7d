"""Sans-I/O wire codec for MQTT 3.1, 3.1.1 and 5.0: bytes <-> pytbmq.protocol.packets values.

Owns the byte layout of all fifteen control packets in both directions and the static rules
a single packet can be checked against on its own (fixed-header flags, field lengths, UTF-8,
property placement, duplicates and value ranges), raising the pytbmq.errors ProtocolError
tree. Rules that need connection or session state (topic aliases, receive maximum, topic
filter syntax, packet direction) belong to the callers. Callers: the connection layer
(decode inbound bytes, encode outbound packets), the fan-out path (encode_publish_parts),
and tests/clients. Pure functions: no I/O, no clock; the only module state is a bounded
memo of decoded PUBLISH property blocks, which callers cannot observe.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Callable
from dataclasses import fields
from typing import Any, Final, TypeAlias

from pytbmq.errors import (
    MalformedPacket,
    PacketTooLarge,
    ProtocolViolation,
    UnsupportedProtocolVersion,
)
from pytbmq.protocol.packets import (
    EMPTY_PROPERTIES,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    PingReq,
    PingResp,
    Properties,
    PropertyId,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
)

__all__ = [
    "MAX_REMAINING_LENGTH",
    "decode",
    "decode_properties",
    "encode",
    "encode_properties",
    "encode_publish_parts",
    "encode_varint",
    "packet_size",
]

Buffer: TypeAlias = bytes | bytearray | memoryview

MAX_REMAINING_LENGTH: Final = 268_435_455  # largest 4-byte Variable Byte Integer [MQTT-1.5.5]

_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
_pack_u16: Final = _U16.pack
_pack_u32: Final = _U32.pack
_unpack_u32: Final = _U32.unpack_from

# Plain ints: IntEnum arithmetic and comparisons are several times slower than int ones.
_CONNECT: Final = int(PacketType.CONNECT)
_CONNACK: Final = int(PacketType.CONNACK)
_PUBLISH: Final = int(PacketType.PUBLISH)
_PUBACK: Final = int(PacketType.PUBACK)
_PUBREC: Final = int(PacketType.PUBREC)
_PUBREL: Final = int(PacketType.PUBREL)
_PUBCOMP: Final = int(PacketType.PUBCOMP)
_SUBSCRIBE: Final = int(PacketType.SUBSCRIBE)
_SUBACK: Final = int(PacketType.SUBACK)
_UNSUBSCRIBE: Final = int(PacketType.UNSUBSCRIBE)
_UNSUBACK: Final = int(PacketType.UNSUBACK)
_DISCONNECT: Final = int(PacketType.DISCONNECT)
_AUTH: Final = int(PacketType.AUTH)

_EMPTY: Final = EMPTY_PROPERTIES
_NO_PROPS_BLOCK: Final = b"\x00"


# --------------------------------------------------------------------------------------
# Fast constructors.
#
# A frozen dataclass __init__ goes through object.__setattr__ once per field, which costs
# about twice as much as writing the slots directly. The packet classes have no
# __post_init__ and no validation in __init__, so for the hot-path values (PUBLISH, the
# PUBACK family and Properties) the decoder writes the slots through their member
# descriptors. The result is indistinguishable from calling the constructor (checked at
# import and in the tests).
# --------------------------------------------------------------------------------------


def _slot_setters(cls: type[Any]) -> tuple[Callable[[Any, Any], None], ...]:
    names = tuple(f.name for f in fields(cls))
    if getattr(cls, "__slots__", None) != names or hasattr(cls, "__post_init__"):
        raise RuntimeError(f"{cls.__name__} is not a plain slotted dataclass")  # pragma: no cover
    return tuple(getattr(cls, name).__set__ for name in names)


_new: Final = object.__new__
(
    _set_pub_topic,
    _set_pub_payload,
    _set_pub_qos,
    _set_pub_retain,
    _set_pub_dup,
    _set_pub_pid,
    _set_pub_props,
) = _slot_setters(Publish)
_AckT: TypeAlias = PubAck | PubRec | PubRel | PubComp
_AckMaker: TypeAlias = tuple[
    type[_AckT], Callable[[Any, Any], None], Callable[[Any, Any], None], Callable[[Any, Any], None]
]


def _ack_maker(cls: type[_AckT]) -> _AckMaker:
    set_pid, set_rc, set_props = _slot_setters(cls)
    return cls, set_pid, set_rc, set_props


# Indexed by packet type: 4 PUBACK, 5 PUBREC, 6 PUBREL, 7 PUBCOMP (0-3 are never used).
_ACK_MAKERS: Final[tuple[_AckMaker, ...]] = (
    *((_ack_maker(PubAck),) * 4),
    _ack_maker(PubAck),
    _ack_maker(PubRec),
    _ack_maker(PubRel),
    _ack_maker(PubComp),
)


def _make_ack(ptype: int, packet_id: int, reason_code: int, props: Properties) -> _AckT:
    cls, set_pid, set_rc, set_props = _ACK_MAKERS[ptype]
    obj: _AckT = _new(cls)
    set_pid(obj, packet_id)
    set_rc(obj, reason_code)
    set_props(obj, props)
    return obj


_PROPERTY_SETTERS: Final = _slot_setters(Properties)


def _make_properties(values: list[Any]) -> Properties:
    obj: Properties = _new(Properties)
    for set_value, value in zip(_PROPERTY_SETTERS, values, strict=True):
        set_value(obj, value)
    return obj


# --------------------------------------------------------------------------------------
# Variable Byte Integer [MQTT-1.5.5] (3.1.1: section 2.2.3 "Remaining Length")
# --------------------------------------------------------------------------------------

_SMALL_VARINT: Final = tuple(bytes((i,)) for i in range(128))


def encode_varint(n: int) -> bytes:
    """Encode `n` (0..268,435,455) as an MQTT Variable Byte Integer, using the fewest bytes."""
    if n < 128:
        if n < 0:
            raise ValueError(f"varint must not be negative: {n}")
        return _SMALL_VARINT[n]
    if n < 16_384:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    if n < 2_097_152:
        return bytes(((n & 0x7F) | 0x80, ((n >> 7) & 0x7F) | 0x80, n >> 14))
    if n <= MAX_REMAINING_LENGTH:
        return bytes(
            ((n & 0x7F) | 0x80, ((n >> 7) & 0x7F) | 0x80, ((n >> 14) & 0x7F) | 0x80, n >> 21)
        )
    raise ValueError(f"varint too large: {n}")


def _read_varint(d: Buffer, p: int, end: int) -> tuple[int, int]:
    """Read a Variable Byte Integer inside a packet body; truncation is MalformedPacket."""
    if p >= end:
        raise MalformedPacket("variable byte integer runs past the end of the packet")
    b = d[p]
    if b < 0x80:
        return b, p + 1
    value = b & 0x7F
    shift = 7
    q = p + 1
    while True:
        if q >= end:
            raise MalformedPacket("variable byte integer runs past the end of the packet")
        b = d[q]
        q += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            if b == 0:
                # [MQTT-1.5.5-1] the encoded value MUST use the minimum number of bytes
                raise MalformedPacket("variable byte integer is not minimally encoded")
            return value, q
        if q - p == 4:
            raise MalformedPacket("variable byte integer longer than 4 bytes")
        shift += 7


# --------------------------------------------------------------------------------------
# Primitive readers: UTF-8 strings [MQTT-1.5.4], binary data [MQTT-1.5.6], integers.
# Every length is checked against `end`, the end of the packet (or of the property block).
# --------------------------------------------------------------------------------------


def _read_str(d: Buffer, p: int, end: int) -> tuple[str, int]:
    if p + 2 > end:
        raise MalformedPacket("string length runs past the end of the packet")
    q = p + 2 + ((d[p] << 8) | d[p + 1])
    if q > end:
        raise MalformedPacket("string runs past the end of the packet")
    raw = d[p + 2 : q]
    if type(raw) is memoryview:
        raw = raw.tobytes()
    try:
        s = raw.decode()  # strict UTF-8: no surrogates, no overlongs [MQTT-1.5.4-1]
    except UnicodeDecodeError:
        raise MalformedPacket("string is not well-formed UTF-8") from None
    if "\x00" in s:
        raise MalformedPacket("string contains U+0000")  # [MQTT-1.5.4-2]
    return s, q


def _read_bin(d: Buffer, p: int, end: int) -> tuple[bytes, int]:
    if p + 2 > end:
        raise MalformedPacket("binary data length runs past the end of the packet")
    q = p + 2 + ((d[p] << 8) | d[p + 1])
    if q > end:
        raise MalformedPacket("binary data runs past the end of the packet")
    return bytes(d[p + 2 : q]), q


def _read_packet_id(d: Buffer, p: int, end: int) -> int:
    if p + 2 > end:
        raise MalformedPacket("packet identifier missing")
    pid = (d[p] << 8) | d[p + 1]
    if not pid:
        raise MalformedPacket("packet identifier must be non-zero")  # [MQTT-2.2.1-3]
    return pid


# --------------------------------------------------------------------------------------
# Properties (MQTT 5 section 2.2.2).
# --------------------------------------------------------------------------------------

# value kinds
_K_BYTE: Final = 0
_K_U16: Final = 1
_K_U32: Final = 2
_K_VARINT: Final = 3
_K_STR: Final = 4
_K_BIN: Final = 5
_K_PAIR: Final = 6

_WILL: Final = 16  # pseudo packet type for the Will Properties of CONNECT (bit 16 of a mask)


def _mask(*types: int) -> int:
    m = 0
    for t in types:
        m |= 1 << t
    return m


_ACKS: Final = (_PUBACK, _PUBREC, _PUBREL, _PUBCOMP)

# Property identifier -> (value kind, packets it may appear in). MQTT 5 section 2.2.2.2,
# table 2-4; the Will Properties of CONNECT are the `_WILL` pseudo type (section 3.1.3.2).
_PROPERTY_TABLE: Final[dict[PropertyId, tuple[int, int]]] = {
    PropertyId.PAYLOAD_FORMAT_INDICATOR: (_K_BYTE, _mask(_PUBLISH, _WILL)),
    PropertyId.MESSAGE_EXPIRY_INTERVAL: (_K_U32, _mask(_PUBLISH, _WILL)),
    PropertyId.CONTENT_TYPE: (_K_STR, _mask(_PUBLISH, _WILL)),
    PropertyId.RESPONSE_TOPIC: (_K_STR, _mask(_PUBLISH, _WILL)),
    PropertyId.CORRELATION_DATA: (_K_BIN, _mask(_PUBLISH, _WILL)),
    PropertyId.SUBSCRIPTION_IDENTIFIER: (_K_VARINT, _mask(_PUBLISH, _SUBSCRIBE)),
    PropertyId.SESSION_EXPIRY_INTERVAL: (_K_U32, _mask(_CONNECT, _CONNACK, _DISCONNECT)),
    PropertyId.ASSIGNED_CLIENT_IDENTIFIER: (_K_STR, _mask(_CONNACK)),
    PropertyId.SERVER_KEEP_ALIVE: (_K_U16, _mask(_CONNACK)),
    PropertyId.AUTHENTICATION_METHOD: (_K_STR, _mask(_CONNECT, _CONNACK, _AUTH)),
    PropertyId.AUTHENTICATION_DATA: (_K_BIN, _mask(_CONNECT, _CONNACK, _AUTH)),
    PropertyId.REQUEST_PROBLEM_INFORMATION: (_K_BYTE, _mask(_CONNECT)),
    PropertyId.WILL_DELAY_INTERVAL: (_K_U32, _mask(_WILL)),
    PropertyId.REQUEST_RESPONSE_INFORMATION: (_K_BYTE, _mask(_CONNECT)),
    PropertyId.RESPONSE_INFORMATION: (_K_STR, _mask(_CONNACK)),
    PropertyId.SERVER_REFERENCE: (_K_STR, _mask(_CONNACK, _DISCONNECT)),
    PropertyId.REASON_STRING: (
        _K_STR,
        _mask(_CONNACK, *_ACKS, _SUBACK, _UNSUBACK, _DISCONNECT, _AUTH),
    ),
    PropertyId.RECEIVE_MAXIMUM: (_K_U16, _mask(_CONNECT, _CONNACK)),
    PropertyId.TOPIC_ALIAS_MAXIMUM: (_K_U16, _mask(_CONNECT, _CONNACK)),
    PropertyId.TOPIC_ALIAS: (_K_U16, _mask(_PUBLISH)),
    PropertyId.MAXIMUM_QOS: (_K_BYTE, _mask(_CONNACK)),
    PropertyId.RETAIN_AVAILABLE: (_K_BYTE, _mask(_CONNACK)),
    PropertyId.USER_PROPERTY: (
        _K_PAIR,
        _mask(
            _CONNECT,
            _CONNACK,
            _PUBLISH,
            _WILL,
            *_ACKS,
            _SUBSCRIBE,
            _SUBACK,
            _UNSUBSCRIBE,
            _UNSUBACK,
            _DISCONNECT,
            _AUTH,
        ),
    ),
    PropertyId.MAXIMUM_PACKET_SIZE: (_K_U32, _mask(_CONNECT, _CONNACK)),
    PropertyId.WILDCARD_SUBSCRIPTION_AVAILABLE: (_K_BYTE, _mask(_CONNACK)),
    PropertyId.SUBSCRIPTION_IDENTIFIER_AVAILABLE: (_K_BYTE, _mask(_CONNACK)),
    PropertyId.SHARED_SUBSCRIPTION_AVAILABLE: (_K_BYTE, _mask(_CONNACK)),
}

# Byte properties whose only legal values are 0 and 1; anything else is a Protocol Error
# (sections 3.1.2.11.7, 3.1.2.11.6, 3.2.2.3.4, 3.2.2.3.5, 3.2.2.3.11-13, 3.3.2.3.2).
_BOOLEAN_PROPERTIES: Final = frozenset(
    {
        PropertyId.PAYLOAD_FORMAT_INDICATOR,
        PropertyId.REQUEST_PROBLEM_INFORMATION,
        PropertyId.REQUEST_RESPONSE_INFORMATION,
        PropertyId.MAXIMUM_QOS,
        PropertyId.RETAIN_AVAILABLE,
        PropertyId.WILDCARD_SUBSCRIPTION_AVAILABLE,
        PropertyId.SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        PropertyId.SHARED_SUBSCRIPTION_AVAILABLE,
    }
)
# Properties for which the value 0 is a Protocol Error (3.1.2.11.3, 3.1.2.11.4, 3.8.2.1.2).
_NONZERO_PROPERTIES: Final = frozenset(
    {
        PropertyId.RECEIVE_MAXIMUM,
        PropertyId.MAXIMUM_PACKET_SIZE,
        PropertyId.SUBSCRIPTION_IDENTIFIER,
    }
)


def _field_name(pid: PropertyId) -> str:
    if pid is PropertyId.SUBSCRIPTION_IDENTIFIER:
        return "subscription_identifiers"
    if pid is PropertyId.USER_PROPERTY:
        return "user_properties"
    return pid.name.lower()


_PROP_FIELDS: Final = tuple(f.name for f in fields(Properties))
_PROP_INDEX: Final = {name: i for i, name in enumerate(_PROP_FIELDS)}
if set(_PROP_FIELDS) != {_field_name(p) for p in PropertyId} or set(_PROPERTY_TABLE) != set(
    PropertyId
):  # pragma: no cover
    raise RuntimeError("codec property table out of sync with packets.Properties")

_USER_INDEX: Final = _PROP_INDEX["user_properties"]
_SUBID_INDEX: Final = _PROP_INDEX["subscription_identifiers"]
# Default positional arguments of Properties(...): None, or () for the repeatable ones.
_PROP_DEFAULTS: Final = [getattr(EMPTY_PROPERTIES, name) for name in _PROP_FIELDS]

# Decoding: indexed by identifier byte -> (field index, kind, allowed mask, flags, name) or None.
# flags: 1 = boolean (0/1 only), 2 = zero is a protocol error.
_PropSpec: TypeAlias = tuple[int, int, int, int, str]
_DECODE_SPECS: Final[tuple[_PropSpec | None, ...]] = tuple(
    (
        _PROP_INDEX[_field_name(PropertyId(i))],
        _PROPERTY_TABLE[PropertyId(i)][0],
        _PROPERTY_TABLE[PropertyId(i)][1],
        (1 if PropertyId(i) in _BOOLEAN_PROPERTIES else 0)
        | (2 if PropertyId(i) in _NONZERO_PROPERTIES else 0),
        PropertyId(i).name,
    )
    if i in PropertyId._value2member_map_
    else None
    for i in range(256)
)

# Encoding: (field name, identifier byte, kind), in identifier order.
# Encoding: (identifier byte, kind) in identifier order, and one C-level getter returning
# the matching field values as a tuple.
_ENCODE_ORDER: Final = sorted(PropertyId)
_ENCODE_SPECS: Final = tuple((bytes((p,)), _PROPERTY_TABLE[p][0]) for p in _ENCODE_ORDER)
_get_encode_values: Final = operator.attrgetter(*(_field_name(p) for p in _ENCODE_ORDER))


def decode_properties(
    buf: Buffer, offset: int, end: int, packet_type: int, *, will: bool = False
) -> tuple[Properties, int]:
    """Decode the property block (its Property Length first) at `buf[offset]`.

    `end` bounds the enclosing packet; `packet_type` is a PacketType. `will=True` applies the
    Will Properties rules of CONNECT instead. Returns the properties and the offset just past
    the block. Raises MalformedPacket or ProtocolViolation.
    """
    if offset < end and buf[offset] == 0:
        return _EMPTY, offset + 1
    plen, p = _read_varint(buf, offset, end)
    pend = p + plen
    if pend > end:
        raise MalformedPacket("property length runs past the end of the packet")
    mask = (1 << _WILL) if will else (1 << packet_type)
    vals = _PROP_DEFAULTS.copy()
    user: list[tuple[str, str]] | None = None
    subids: list[int] | None = None
    v: Any
    while p < pend:
        ident = buf[p]
        spec = _DECODE_SPECS[ident]
        if spec is None:
            # identifiers are Variable Byte Integers, but none defined is >= 0x80
            raise MalformedPacket(f"unknown property identifier 0x{ident:02X}")
        idx, kind, allowed, flags, name = spec
        if not allowed & mask:
            where = "Will Properties" if will else PacketType(packet_type).name
            raise MalformedPacket(f"property {name} is not allowed in {where}")
        p += 1
        if kind == _K_BYTE:
            if p >= pend:
                raise MalformedPacket(f"property {name} runs past the property block")
            v = buf[p]
            p += 1
            if flags & 1 and v > 1:
                raise ProtocolViolation(f"property {name} must be 0 or 1, got {v}")
        elif kind == _K_U16:
            if p + 2 > pend:
                raise MalformedPacket(f"property {name} runs past the property block")
            v = (buf[p] << 8) | buf[p + 1]
            p += 2
        elif kind == _K_U32:
            if p + 4 > pend:
                raise MalformedPacket(f"property {name} runs past the property block")
            v = _unpack_u32(buf, p)[0]
            p += 4
        elif kind == _K_STR:
            v, p = _read_str(buf, p, pend)
        elif kind == _K_BIN:
            v, p = _read_bin(buf, p, pend)
        elif kind == _K_PAIR:
            k, p = _read_str(buf, p, pend)
            v, p = _read_str(buf, p, pend)
            if user is None:
                user = [(k, v)]
            else:
                user.append((k, v))
            continue
        else:  # _K_VARINT: only Subscription Identifier
            v, p = _read_varint(buf, p, pend)
            if v == 0:
                raise ProtocolViolation("Subscription Identifier must not be 0")  # 3.8.2.1.2
            if subids is None:
                subids = [v]
            elif packet_type == _SUBSCRIBE and not will:
                raise ProtocolViolation("Subscription Identifier more than once in SUBSCRIBE")
            else:
                subids.append(v)
            continue
        if flags & 2 and v == 0:
            raise ProtocolViolation(f"property {name} must not be 0")
        if vals[idx] is not None:
            raise ProtocolViolation(f"property {name} included more than once")
        vals[idx] = v
    if user is not None:
        vals[_USER_INDEX] = tuple(user)
    if subids is not None:
        vals[_SUBID_INDEX] = tuple(subids)
    return _make_properties(vals), p


# PUBLISH property blocks repeat (same topic alias, expiry or content type per publisher)
# and building a 27-field Properties costs microseconds, so small blocks that decoded
# cleanly are memoised by their bytes. Properties are immutable, so sharing is invisible.
_PUBLISH_PROPS_CACHE: Final[dict[bytes, Properties]] = {}
_PUBLISH_PROPS_CACHE_SIZE: Final = 1024
_PUBLISH_PROPS_CACHE_MAX_BLOCK: Final = 64


def _decode_publish_properties(buf: Buffer, offset: int, end: int) -> tuple[Properties, int]:
    plen = buf[offset]
    if plen < 0x80:
        q = offset + 1 + plen
        if plen <= _PUBLISH_PROPS_CACHE_MAX_BLOCK and q <= end:
            key = bytes(buf[offset + 1 : q])
            cached = _PUBLISH_PROPS_CACHE.get(key)
            if cached is not None:
                return cached, q
            props, p = decode_properties(buf, offset, end, _PUBLISH)
            if len(_PUBLISH_PROPS_CACHE) >= _PUBLISH_PROPS_CACHE_SIZE:
                _PUBLISH_PROPS_CACHE.clear()
            _PUBLISH_PROPS_CACHE[key] = props
            return props, p
    return decode_properties(buf, offset, end, _PUBLISH)


def _enc_str(s: str) -> bytes:
    b = s.encode("utf-8")
    n = len(b)
    if n > 0xFFFF:
        raise ValueError("UTF-8 string longer than 65535 bytes")
    return _pack_u16(n) + b


def _enc_bin(b: bytes) -> bytes:
    n = len(b)
    if n > 0xFFFF:
        raise ValueError("binary data longer than 65535 bytes")
    return _pack_u16(n) + bytes(b)


def encode_properties(props: Properties) -> bytes:
    """Encode an MQTT 5 property block, its Property Length varint included."""
    if props is _EMPTY:
        return _NO_PROPS_BLOCK
    try:
        return _encode_properties(props)
    except struct.error as exc:  # an integer property out of range
        raise ValueError(str(exc)) from exc


def _encode_properties(props: Properties) -> bytes:
    parts: list[bytes] = []
    append = parts.append
    for (ident, kind), v in zip(_ENCODE_SPECS, _get_encode_values(props), strict=True):
        if v is None or v == ():
            continue
        if kind == _K_BYTE:
            append(ident + bytes((v,)))
        elif kind == _K_U16:
            append(ident + _pack_u16(v))
        elif kind == _K_U32:
            append(ident + _pack_u32(v))
        elif kind == _K_STR:
            append(ident + _enc_str(v))
        elif kind == _K_BIN:
            append(ident + _enc_bin(v))
        elif kind == _K_PAIR:
            for k, val in v:
                append(ident + _enc_str(k) + _enc_str(val))
        else:
            for sid in v:
                append(ident + encode_varint(sid))
    if not parts:
        return _NO_PROPS_BLOCK
    body = b"".join(parts)
    return encode_varint(len(body)) + body


def _props_block(props: Properties, version: int) -> bytes:
    if version != 5:
        return b""
    if props is _EMPTY:
        return _NO_PROPS_BLOCK
    return encode_properties(props)


# --------------------------------------------------------------------------------------
# Fixed header validation [MQTT-2.1.3-1] (3.1.1: [MQTT-2.2.2-1], [MQTT-2.2.2-2]).
# --------------------------------------------------------------------------------------


def _first_byte_ok(b0: int, version: int) -> bool:
    ptype = b0 >> 4
    flags = b0 & 0x0F
    if ptype == 0:
        return False
    if ptype == _AUTH and version != 5:
        return False
    if ptype == _PUBLISH:
        qos = (flags >> 1) & 3
        return qos != 3 and not (flags & 8 and qos == 0)
    if ptype in (_PUBREL, _SUBSCRIBE, _UNSUBSCRIBE):
        return flags == 0b0010
    return flags == 0


_B0_OK_V3: Final = bytes(_first_byte_ok(i, 4) for i in range(256))
_B0_OK_V5: Final = bytes(_first_byte_ok(i, 5) for i in range(256))


def _bad_first_byte(b0: int, version: int) -> MalformedPacket:
    ptype = b0 >> 4
    if ptype == 0:
        return MalformedPacket("reserved packet type 0")
    if ptype == _AUTH:
        return MalformedPacket(f"AUTH packet on MQTT protocol level {version}")
    if ptype == _PUBLISH:
        if (b0 >> 1) & 3 == 3:
            return MalformedPacket("PUBLISH with QoS 3")  # [MQTT-3.3.1-4]
        return MalformedPacket("PUBLISH with DUP set and QoS 0")  # [MQTT-3.3.1-2]
    return MalformedPacket(
        f"invalid fixed header flags 0x{b0 & 0xF:X} for {PacketType(ptype).name}"
    )  # [MQTT-2.1.3-1]


# --------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------

# 3.x CONNACK return code <-> MQTT 5 reason code (3.1.1 section 3.2.2.3)
_RETURN_CODE_TO_REASON: Final = (0x00, 0x84, 0x85, 0x88, 0x86, 0x87)
_SERVER_SIDE_FAILURES: Final = frozenset({0x80, 0x83, 0x88, 0x89, 0x8B, 0x97, 0x9C, 0x9D, 0x9F})
_V3_SUBACK_CODES: Final = frozenset({0x00, 0x01, 0x02, 0x80})


def _connack_return_code(reason: int) -> int:
    if reason == 0x00:
        return 0
    if reason == 0x84:
        return 1  # unacceptable protocol version
    if reason == 0x85:
        return 2  # identifier rejected
    if reason in _SERVER_SIDE_FAILURES:
        return 3  # server unavailable
    if reason == 0x86:
        return 4  # bad user name or password
    return 5  # not authorized (0x87, 0x8A banned, 0x8C bad auth method, anything else)


def _check_end(p: int, end: int, what: str) -> None:
    if p != end:
        raise MalformedPacket(f"{end - p} unexpected bytes after the last field of {what}")


def _dec_connect(d: Buffer, p: int, end: int, b0: int, version: int) -> Connect:
    if p + 2 > end:
        raise MalformedPacket("CONNECT too short for the protocol name")
    q = p + 2 + ((d[p] << 8) | d[p + 1])
    if q + 1 > end:
        raise MalformedPacket("CONNECT too short for the protocol name and level")
    raw_name = bytes(d[p + 2 : q])
    level = d[q]
    # [MQTT-3.1.2-1] protocol name; [MQTT-3.1.2-2] protocol level
    if raw_name == b"MQTT":
        name = "MQTT"
        supported = level in (4, 5)
    elif raw_name == b"MQIsdp":
        name = "MQIsdp"
        supported = level == 3
    else:
        raise MalformedPacket(f"unknown protocol name {raw_name!r}")
    if not supported:
        raise UnsupportedProtocolVersion(f"unsupported protocol {name} level {level}", level)
    p = q + 1
    if p + 3 > end:
        raise MalformedPacket("CONNECT too short for flags and keep alive")
    flags = d[p]
    keep_alive = (d[p + 1] << 8) | d[p + 2]
    p += 3
    if flags & 0x01:
        raise MalformedPacket("CONNECT reserved flag is set")  # [MQTT-3.1.2-3]
    will_flag = flags & 0x04
    will_qos = (flags >> 3) & 3
    will_retain = bool(flags & 0x20)
    if not will_flag and (will_qos or will_retain):
        # [MQTT-3.1.2-11] [MQTT-3.1.2-13] (3.1.1: [MQTT-3.1.2-13] [MQTT-3.1.2-15])
        raise MalformedPacket("Will QoS or Will Retain set without the Will Flag")
    if will_qos == 3:
        raise MalformedPacket("Will QoS 3")  # [MQTT-3.1.2-14] (5.0: [MQTT-3.1.2-12])
    has_password = flags & 0x40
    has_username = flags & 0x80
    if has_password and not has_username and level != 5:
        raise MalformedPacket("password flag set without user name flag")  # [MQTT-3.1.2-22]
    props = _EMPTY
    if level == 5:
        props, p = decode_properties(d, p, end, _CONNECT)
    client_id, p = _read_str(d, p, end)  # [MQTT-3.1.3-4] (may be empty)
    will = None
    if will_flag:
        will_props = _EMPTY
        if level == 5:
            will_props, p = decode_properties(d, p, end, _CONNECT, will=True)
        will_topic, p = _read_str(d, p, end)
        will_payload, p = _read_bin(d, p, end)
        will = Will(will_topic, will_payload, will_qos, will_retain, will_props)
    username = password = None
    if has_username:
        username, p = _read_str(d, p, end)
    if has_password:
        password, p = _read_bin(d, p, end)
    _check_end(p, end, "CONNECT")
    return Connect(
        level, client_id, bool(flags & 0x02), keep_alive, will, username, password, props, name
    )


def _dec_connack(d: Buffer, p: int, end: int, b0: int, version: int) -> ConnAck:
    if version == 5:
        if end - p < 3:
            raise MalformedPacket("CONNACK too short")
    elif end - p != 2:
        raise MalformedPacket("CONNACK remaining length must be 2")
    ack_flags = d[p]
    code = d[p + 1]
    if version == 3:
        # MQTT 3.1: the first byte is reserved and unused; there is no session present flag.
        session_present = False
    else:
        if ack_flags & 0xFE:
            raise MalformedPacket("CONNACK reserved acknowledge flags set")  # [MQTT-3.2.2-1]
        session_present = bool(ack_flags)
    if version != 5:
        if code >= len(_RETURN_CODE_TO_REASON):
            raise MalformedPacket(f"reserved CONNACK return code {code}")
        return ConnAck(session_present, _RETURN_CODE_TO_REASON[code])
    props, p = decode_properties(d, p + 2, end, _CONNACK)
    _check_end(p, end, "CONNACK")
    return ConnAck(session_present, code, props)


def _dec_ack(d: Buffer, p: int, end: int, b0: int, version: int) -> _AckT:
    ptype = b0 >> 4
    pid = _read_packet_id(d, p, end)
    n = end - p
    if n == 2:
        return _make_ack(ptype, pid, 0, _EMPTY)
    if version != 5:
        raise MalformedPacket(f"{PacketType(ptype).name} remaining length must be 2")
    code = d[p + 2]
    if n == 3:  # 3.4.2.1: no Property Length when the remaining length is less than 4
        return _make_ack(ptype, pid, code, _EMPTY)
    props, q = decode_properties(d, p + 3, end, ptype)
    _check_end(q, end, PacketType(ptype).name)
    return _make_ack(ptype, pid, code, props)


def _dec_subscribe(d: Buffer, p: int, end: int, b0: int, version: int) -> Subscribe:
    pid = _read_packet_id(d, p, end)
    p += 2
    props = _EMPTY
    if version == 5:
        props, p = decode_properties(d, p, end, _SUBSCRIBE)
    subs: list[Subscription] = []
    while p < end:
        topic_filter, p = _read_str(d, p, end)
        if p >= end:
            raise MalformedPacket("SUBSCRIBE topic filter without options byte")
        o = d[p]
        p += 1
        if version == 5:
            if o & 0xC0:
                raise MalformedPacket("SUBSCRIBE reserved option bits set")  # [MQTT-3.8.3-5]
            qos = o & 3
            if qos == 3:
                raise MalformedPacket("SUBSCRIBE requested QoS 3")
            retain_handling = (o >> 4) & 3
            if retain_handling == 3:
                raise ProtocolViolation("SUBSCRIBE Retain Handling 3")  # 3.8.3.1
            subs.append(Subscription(topic_filter, qos, bool(o & 4), bool(o & 8), retain_handling))
        else:
            if o & 0xFC:
                raise MalformedPacket("SUBSCRIBE reserved QoS bits set")  # [MQTT-3-8.3-4]
            if o == 3:
                raise MalformedPacket("SUBSCRIBE requested QoS 3")
            subs.append(Subscription(topic_filter, o))
    if not subs:
        raise ProtocolViolation("SUBSCRIBE without a topic filter")  # [MQTT-3.8.3-3]
    return Subscribe(pid, tuple(subs), props)


def _dec_suback(d: Buffer, p: int, end: int, b0: int, version: int) -> SubAck:
    pid = _read_packet_id(d, p, end)
    p += 2
    props = _EMPTY
    if version == 5:
        props, p = decode_properties(d, p, end, _SUBACK)
    codes = tuple(d[p:end])
    if not codes:
        raise MalformedPacket("SUBACK without a reason code")
    if version != 5 and not _V3_SUBACK_CODES.issuperset(codes):
        raise MalformedPacket("SUBACK with a reserved return code")  # [MQTT-3.9.3-2] (3.1.1)
    return SubAck(pid, codes, props)


def _dec_unsubscribe(d: Buffer, p: int, end: int, b0: int, version: int) -> Unsubscribe:
    pid = _read_packet_id(d, p, end)
    p += 2
    props = _EMPTY
    if version == 5:
        props, p = decode_properties(d, p, end, _UNSUBSCRIBE)
    filters: list[str] = []
    while p < end:
        topic_filter, p = _read_str(d, p, end)
        filters.append(topic_filter)
    if not filters:
        raise ProtocolViolation("UNSUBSCRIBE without a topic filter")  # [MQTT-3.10.3-2]
    return Unsubscribe(pid, tuple(filters), props)


def _dec_unsuback(d: Buffer, p: int, end: int, b0: int, version: int) -> UnsubAck:
    pid = _read_packet_id(d, p, end)
    if version != 5:
        _check_end(p + 2, end, "UNSUBACK")
        return UnsubAck(pid)
    props, p = decode_properties(d, p + 2, end, _UNSUBACK)
    codes = tuple(d[p:end])
    if not codes:
        raise MalformedPacket("UNSUBACK without a reason code")  # 3.11.3: one per filter
    return UnsubAck(pid, codes, props)


_PING_REQ: Final = PingReq()
_PING_RESP: Final = PingResp()


def _dec_pingreq(d: Buffer, p: int, end: int, b0: int, version: int) -> PingReq:
    _check_end(p, end, "PINGREQ")
    return _PING_REQ


def _dec_pingresp(d: Buffer, p: int, end: int, b0: int, version: int) -> PingResp:
    _check_end(p, end, "PINGRESP")
    return _PING_RESP


_DISCONNECT_DEFAULT: Final = Disconnect()
_AUTH_DEFAULT: Final = Auth()


def _dec_disconnect(d: Buffer, p: int, end: int, b0: int, version: int) -> Disconnect:
    if p == end:
        return _DISCONNECT_DEFAULT
    if version != 5:
        raise MalformedPacket("DISCONNECT remaining length must be 0")
    code = d[p]
    if end - p == 1:  # 3.14.2.2.1: Property Length absent when remaining length < 2
        return Disconnect(code)
    props, p = decode_properties(d, p + 1, end, _DISCONNECT)
    _check_end(p, end, "DISCONNECT")
    return Disconnect(code, props)


def _dec_auth(d: Buffer, p: int, end: int, b0: int, version: int) -> Auth:
    if p == end:
        return _AUTH_DEFAULT  # 3.15.2.1: reason 0 and no properties may be omitted
    code = d[p]
    if end - p == 1:
        return Auth(code)
    props, p = decode_properties(d, p + 1, end, _AUTH)
    _check_end(p, end, "AUTH")
    return Auth(code, props)


_Decoder: TypeAlias = Callable[[Buffer, int, int, int, int], Packet]
_DECODERS: Final[tuple[_Decoder | None, ...]] = (
    None,  # type 0 is rejected with the first byte
    _dec_connect,
    _dec_connack,
    None,  # PUBLISH is decoded inline in decode()
    _dec_ack,
    _dec_ack,
    _dec_ack,
    _dec_ack,
    _dec_subscribe,
    _dec_suback,
    _dec_unsubscribe,
    _dec_unsuback,
    _dec_pingreq,
    _dec_pingresp,
    _dec_disconnect,
    _dec_auth,
)


def decode(buf: Buffer, version: int, max_size: int, offset: int = 0) -> tuple[Packet, int] | None:
    """Decode the packet starting at `buf[offset]`.

    Returns `(packet, end_offset)`, or None while `buf` does not yet hold the whole packet.
    `version` is the connection's protocol level (3, 4 or 5); CONNECT carries its own.
    `max_size` bounds fixed header + remaining length + body; it is enforced as soon as the
    remaining length is known. Raises MalformedPacket, ProtocolViolation, PacketTooLarge or
    UnsupportedProtocolVersion. PUBLISH payloads are copied out, so `buf` may be reused.
    """
    n = len(buf)
    if offset >= n:
        return None
    b0 = buf[offset]
    if not (_B0_OK_V5 if version == 5 else _B0_OK_V3)[b0]:
        raise _bad_first_byte(b0, version)
    # Remaining Length: 1 to 4 byte Variable Byte Integer [MQTT-2.1.4] (3.1.1: 2.2.3)
    i = offset + 1
    if i >= n:
        return None
    b = buf[i]
    if b < 0x80:
        rl = b
        pos = i + 1
    else:
        rl = b & 0x7F
        shift = 7
        while True:
            if i - offset == 4:
                raise MalformedPacket("remaining length longer than 4 bytes")
            i += 1
            if i >= n:
                return None
            b = buf[i]
            rl |= (b & 0x7F) << shift
            if b < 0x80:
                if b == 0:
                    raise MalformedPacket("remaining length not minimally encoded")  # 1.5.5-1
                break
            shift += 7
        pos = i + 1
    end = pos + rl
    if end - offset > max_size:
        raise PacketTooLarge(f"packet of {end - offset} bytes exceeds the maximum {max_size}")
    if end > n:
        return None

    ptype = b0 >> 4
    if ptype == 3:
        # ---- PUBLISH, inlined: the hot path ----------------------------------------
        qos = (b0 >> 1) & 3
        if pos + 2 > end:
            raise MalformedPacket("PUBLISH too short for the topic length")
        p = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
        if p > end:
            raise MalformedPacket("PUBLISH topic runs past the end of the packet")
        raw = buf[pos + 2 : p]
        if type(raw) is memoryview:
            raw = raw.tobytes()
        try:
            topic = raw.decode()  # strict UTF-8: no surrogates, no overlongs [MQTT-1.5.4-1]
        except UnicodeDecodeError:
            raise MalformedPacket("PUBLISH topic is not well-formed UTF-8") from None
        if "\x00" in topic:
            raise MalformedPacket("PUBLISH topic contains U+0000")  # [MQTT-1.5.4-2]
        pid: int | None
        if qos:
            if p + 2 > end:
                raise MalformedPacket("PUBLISH packet identifier missing")
            pid = (buf[p] << 8) | buf[p + 1]
            if not pid:
                raise MalformedPacket("PUBLISH packet identifier 0")  # [MQTT-2.2.1-3]
            p += 2
        else:
            pid = None
        props = _EMPTY
        if version == 5:
            if p >= end:
                raise MalformedPacket("PUBLISH property length missing")
            if buf[p]:
                props, p = _decode_publish_properties(buf, p, end)
            else:
                p += 1
        pkt: Publish = _new(Publish)
        _set_pub_topic(pkt, topic)
        if type(buf) is bytes:
            payload = buf[p:end]
        elif end - p > 2048 and type(buf) is bytearray:
            payload = bytes(memoryview(buf)[p:end])  # one copy instead of two
        else:
            payload = bytes(buf[p:end])
        _set_pub_payload(pkt, payload)
        _set_pub_qos(pkt, qos)
        _set_pub_retain(pkt, bool(b0 & 1))
        _set_pub_dup(pkt, bool(b0 & 8))
        _set_pub_pid(pkt, pid)
        _set_pub_props(pkt, props)
        return pkt, end

    if 4 <= ptype <= 7 and rl == 2:
        # ---- PUBACK / PUBREC / PUBREL / PUBCOMP, short form ---------------------------
        pid = (buf[pos] << 8) | buf[pos + 1]
        if not pid:
            raise MalformedPacket("packet identifier must be non-zero")  # [MQTT-2.2.1-3]
        cls, set_pid, set_rc, set_props = _ACK_MAKERS[ptype]
        ack: _AckT = _new(cls)
        set_pid(ack, pid)
        set_rc(ack, 0)
        set_props(ack, _EMPTY)
        return ack, end

    if ptype == 12 and rl == 0:
        return _PING_REQ, end

    decoder = _DECODERS[ptype]
    assert decoder is not None  # type 0 was rejected with the first byte, 3 handled above
    return decoder(buf, pos, end, b0, version), end


# --------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------


def _fixed(b0: int, body: bytes) -> bytes:
    n = len(body)
    if n < 128:
        return bytes((b0, n)) + body
    return bytes((b0,)) + encode_varint(n) + body


def _publish_head(
    topic: str, payload_len: int, qos: int, retain: bool, dup: bool, props_block: bytes
) -> bytes:
    if qos not in (0, 1, 2):
        raise ValueError(f"invalid QoS {qos}")
    if dup and not qos:
        raise ValueError("DUP must be 0 for QoS 0")  # [MQTT-3.3.1-2]
    tb = topic.encode("utf-8")
    tl = len(tb)
    if tl > 0xFFFF:
        raise ValueError("topic longer than 65535 bytes")
    rl = 2 + tl + len(props_block) + payload_len
    if qos:
        rl += 2
    b0 = 0x30 | (qos << 1)
    if dup:
        b0 |= 0x08
    if retain:
        b0 |= 0x01
    if rl < 128:
        return bytes((b0, rl, tl >> 8, tl & 0xFF)) + tb
    return b"".join((bytes((b0,)), encode_varint(rl), _pack_u16(tl), tb))


def encode_publish_parts(
    topic: str,
    payload: bytes,
    qos: int,
    retain: bool,
    dup: bool,
    properties: Properties,
    version: int,
) -> tuple[bytes, bytes]:
    """Split a PUBLISH around its packet identifier, for fan-out.

    The packet is `head + tail` for QoS 0 and `head + packet_id.to_bytes(2, "big") + tail`
    for QoS 1 and 2; the remaining length in `head` counts those two bytes.
    """
    if version == 5:
        pb = _NO_PROPS_BLOCK if properties is _EMPTY else encode_properties(properties)
        return _publish_head(topic, len(payload), qos, retain, dup, pb), pb + payload
    return _publish_head(topic, len(payload), qos, retain, dup, b""), payload


def _enc_publish(pkt: Publish, version: int) -> bytes:
    props = pkt.properties
    pb = (_NO_PROPS_BLOCK if props is _EMPTY else encode_properties(props)) if version == 5 else b""
    payload = pkt.payload
    head = _publish_head(pkt.topic, len(payload), pkt.qos, pkt.retain, pkt.dup, pb)
    pid = pkt.packet_id
    if pkt.qos:
        if not pid:
            raise ValueError("PUBLISH with QoS > 0 needs a non-zero packet_id")
        return b"".join((head, _pack_u16(pid), pb, payload))
    if pid is not None:
        raise ValueError("PUBLISH with QoS 0 must not have a packet_id")
    return b"".join((head, pb, payload))


def _enc_connect(pkt: Connect, version: int) -> bytes:
    level = pkt.protocol_version  # CONNECT carries its own version; `version` is ignored
    will = pkt.will
    flags = 0x02 if pkt.clean_start else 0
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    if pkt.password is not None:
        flags |= 0x40
    if pkt.username is not None:
        flags |= 0x80
    parts = [
        _enc_str(pkt.protocol_name),
        bytes((level, flags)),
        _pack_u16(pkt.keep_alive),
        _props_block(pkt.properties, level),
        _enc_str(pkt.client_id),
    ]
    if will is not None:
        parts.append(_props_block(will.properties, level))
        parts.append(_enc_str(will.topic))
        parts.append(_enc_bin(will.payload))
    if pkt.username is not None:
        parts.append(_enc_str(pkt.username))
    if pkt.password is not None:
        parts.append(_enc_bin(pkt.password))
    return _fixed(0x10, b"".join(parts))


def _enc_connack(pkt: ConnAck, version: int) -> bytes:
    if version == 5:
        body = bytes((1 if pkt.session_present else 0, pkt.reason_code))
        return _fixed(0x20, body + _props_block(pkt.properties, 5))
    # MQTT 3.1 has no session present flag (the byte is reserved)
    sp = 1 if pkt.session_present and version != 3 else 0
    return bytes((0x20, 2, sp, _connack_return_code(pkt.reason_code)))


def _enc_ack(b0: int, pkt: _AckT, version: int) -> bytes:
    pid = pkt.packet_id
    if version != 5 or (pkt.reason_code == 0 and pkt.properties is _EMPTY):
        return bytes((b0, 2, pid >> 8, pid & 0xFF))
    pb = encode_properties(pkt.properties)
    if pb == _NO_PROPS_BLOCK:
        if pkt.reason_code == 0:
            return bytes((b0, 2, pid >> 8, pid & 0xFF))
        return bytes((b0, 3, pid >> 8, pid & 0xFF, pkt.reason_code))
    return _fixed(b0, _pack_u16(pid) + bytes((pkt.reason_code,)) + pb)


def _enc_puback(pkt: PubAck, version: int) -> bytes:
    return _enc_ack(0x40, pkt, version)


def _enc_pubrec(pkt: PubRec, version: int) -> bytes:
    return _enc_ack(0x50, pkt, version)


def _enc_pubrel(pkt: PubRel, version: int) -> bytes:
    return _enc_ack(0x62, pkt, version)


def _enc_pubcomp(pkt: PubComp, version: int) -> bytes:
    return _enc_ack(0x70, pkt, version)


def _enc_subscribe(pkt: Subscribe, version: int) -> bytes:
    parts = [_pack_u16(pkt.packet_id), _props_block(pkt.properties, version)]
    for s in pkt.subscriptions:
        parts.append(_enc_str(s.topic_filter))
        if version == 5:
            o = s.qos | (s.retain_handling << 4)
            if s.no_local:
                o |= 0x04
            if s.retain_as_published:
                o |= 0x08
        else:
            o = s.qos
        parts.append(bytes((o,)))
    return _fixed(0x82, b"".join(parts))


def _v3_suback_code(code: int) -> int:
    if code >= 0x80:
        return 0x80
    if code > 2:
        raise ValueError(f"SUBACK reason code 0x{code:02X} has no MQTT 3.x form")
    return code


def _enc_suback(pkt: SubAck, version: int) -> bytes:
    if version == 5:
        codes = bytes(pkt.reason_codes)
    else:
        codes = bytes([_v3_suback_code(c) for c in pkt.reason_codes])
    return _fixed(0x90, _pack_u16(pkt.packet_id) + _props_block(pkt.properties, version) + codes)


def _enc_unsubscribe(pkt: Unsubscribe, version: int) -> bytes:
    parts = [_pack_u16(pkt.packet_id), _props_block(pkt.properties, version)]
    parts.extend(_enc_str(f) for f in pkt.topic_filters)
    return _fixed(0xA2, b"".join(parts))


def _enc_unsuback(pkt: UnsubAck, version: int) -> bytes:
    if version != 5:
        return bytes((0xB0, 2)) + _pack_u16(pkt.packet_id)
    return _fixed(
        0xB0,
        _pack_u16(pkt.packet_id) + _props_block(pkt.properties, 5) + bytes(pkt.reason_codes),
    )


def _enc_pingreq(pkt: PingReq, version: int) -> bytes:
    return b"\xc0\x00"


def _enc_pingresp(pkt: PingResp, version: int) -> bytes:
    return b"\xd0\x00"


def _enc_disconnect(pkt: Disconnect, version: int) -> bytes:
    if version != 5:
        return b"\xe0\x00"
    pb = _props_block(pkt.properties, 5)
    if pb == _NO_PROPS_BLOCK:
        if pkt.reason_code == 0:
            return b"\xe0\x00"  # 3.14.2.1 short form
        return bytes((0xE0, 1, pkt.reason_code))
    return _fixed(0xE0, bytes((pkt.reason_code,)) + pb)


def _enc_auth(pkt: Auth, version: int) -> bytes:
    if version != 5:
        raise ValueError("AUTH exists only in MQTT 5")
    pb = _props_block(pkt.properties, 5)
    if pkt.reason_code == 0 and pb == _NO_PROPS_BLOCK:
        return b"\xf0\x00"  # 3.15.2.1 short form
    return _fixed(0xF0, bytes((pkt.reason_code,)) + pb)


_ENCODERS: Final[dict[type[Any], Callable[[Any, int], bytes]]] = {
    Publish: _enc_publish,
    PubAck: _enc_puback,
    PubRec: _enc_pubrec,
    PubRel: _enc_pubrel,
    PubComp: _enc_pubcomp,
    Connect: _enc_connect,
    ConnAck: _enc_connack,
    Subscribe: _enc_subscribe,
    SubAck: _enc_suback,
    Unsubscribe: _enc_unsubscribe,
    UnsubAck: _enc_unsuback,
    PingReq: _enc_pingreq,
    PingResp: _enc_pingresp,
    Disconnect: _enc_disconnect,
    Auth: _enc_auth,
}


def encode(packet: Packet, version: int) -> bytes:
    """Encode `packet` for a connection at protocol level `version` (3, 4 or 5).

    On 3.x properties are dropped and reason codes mapped to 3.x return codes; CONNECT uses
    its own `protocol_version`. Raises ValueError for values that cannot be encoded.
    """
    try:
        return _ENCODERS[type(packet)](packet, version)
    except struct.error as exc:  # an integer field out of range
        raise ValueError(str(exc)) from exc


def packet_size(packet: Packet, version: int) -> int:
    """Total encoded size of `packet` in bytes (fixed header included)."""
    return len(encode(packet, version))
