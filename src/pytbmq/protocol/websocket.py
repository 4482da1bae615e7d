"""WebSocket (RFC 6455) for MQTT, sans-I/O: the HTTP upgrade and a binary-frame codec.

`parse_request` reads the client's HTTP upgrade request and `negotiate` checks it against a
listener's `WsPolicy` (path, subprotocols, allowed origins) and returns the 101 response,
or raises `HandshakeError` carrying the HTTP status and the reason in words.
`client_address` picks the real client address out of X-Forwarded-For / X-Real-IP when
the connection comes from a trusted proxy. `FrameReader` turns the client's masked frames
into the MQTT byte stream they carry (fragmented messages, several MQTT packets per frame
and packets split across frames are all just bytes here) and collects control frames;
`frame_header` and `close_frame` build what the server sends. MQTT over WebSocket uses
binary frames only ([MQTT-6.0.0-1]); no extension is negotiated.

Only pure functions of their inputs: pytbmq.wsadapter does the I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
from dataclasses import dataclass, field

__all__ = [
    "CLOSE_MESSAGE_TOO_BIG",
    "CLOSE_NORMAL",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_UNSUPPORTED_DATA",
    "MAX_REQUEST_BYTES",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_PING",
    "OP_PONG",
    "FrameReader",
    "HandshakeError",
    "HttpRequest",
    "IpNetwork",
    "Upgrade",
    "WsPolicy",
    "accept_key",
    "client_address",
    "close_frame",
    "frame_header",
    "http_error",
    "keystream",
    "negotiate",
    "parse_request",
    "unmask",
    "xor",
]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_REQUEST_BYTES = 8192  # the whole upgrade request, request line and headers

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_MESSAGE_TOO_BIG = 1009

_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
}

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


# --------------------------------------------------------------------------- handshake


class HandshakeError(Exception):
    """The upgrade request is refused: answer with `status` and close.

    `reason` is for the log line and the response body; `headers` are extra response
    headers (e.g. ``Sec-WebSocket-Version: 13`` with 426).
    """

    def __init__(self, status: int, reason: str, headers: tuple[str, ...] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    target: str
    version: str
    headers: dict[str, list[str]]  # lower-case names, values in arrival order
    size: int  # bytes of the request including the blank line; what follows is frames

    def header(self, name: str) -> str | None:
        """All values of one header joined with ', ' (RFC 9110 list semantics), or None."""
        values = self.headers.get(name)
        return None if values is None else ", ".join(values)

    def tokens(self, name: str) -> list[str]:
        """The comma-separated items of a list-valued header, stripped."""
        value = self.header(name)
        if value is None:
            return []
        return [item.strip() for item in value.split(",") if item.strip()]

    @property
    def path(self) -> str:
        target = self.target
        if "://" in target:  # absolute form: http://host/path
            slash = target.find("/", target.find("://") + 3)
            target = target[slash:] if slash >= 0 else "/"
        return target.split("?", 1)[0].split("#", 1)[0]


@dataclass(frozen=True, slots=True)
class WsPolicy:
    """What one WebSocket listener accepts."""

    path: str = "/mqtt"
    subprotocols: tuple[str, ...] = ("mqttv3.1", "mqtt")
    allowed_origins: frozenset[str] = field(default_factory=frozenset)  # empty: any


@dataclass(frozen=True, slots=True)
class Upgrade:
    """An accepted upgrade: the 101 response to send and what was negotiated."""

    response: bytes
    subprotocol: str
    origin: str | None


def parse_request(data: bytes | bytearray) -> HttpRequest | None:
    """The request at the start of `data`, or None while its header is incomplete.

    Raises HandshakeError (400) for anything that is not an HTTP/1.x request and (431)
    when the header grows past MAX_REQUEST_BYTES.
    """
    if data and not (0x41 <= data[0] <= 0x5A):  # every HTTP method starts with A-Z
        raise HandshakeError(400, "not an HTTP request (is this a plain MQTT client?)")
    end = data.find(b"\r\n\r\n", 0, MAX_REQUEST_BYTES + 4)
    if end < 0:
        if len(data) > MAX_REQUEST_BYTES:
            raise HandshakeError(431, f"request header larger than {MAX_REQUEST_BYTES} bytes")
        first = data.find(b"\r\n")
        if first >= 0:
            _request_line(bytes(data[:first]))  # fail early on a malformed request line
        return None
    lines = bytes(data[:end]).split(b"\r\n")
    method, target, version = _request_line(lines[0])
    headers: dict[str, list[str]] = {}
    for raw in lines[1:]:
        name, colon, value = raw.partition(b":")
        if not colon or not name or name != name.strip() or raw[:1] in (b" ", b"\t"):
            raise HandshakeError(400, "malformed HTTP header line")
        try:
            text = value.strip().decode("utf-8")
        except UnicodeDecodeError:
            text = value.strip().decode("latin-1")
        headers.setdefault(name.decode("latin-1").lower(), []).append(text)
    return HttpRequest(method, target, version, headers, end + 4)


def _request_line(line: bytes) -> tuple[str, str, str]:
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        raise HandshakeError(400, "not an HTTP request line")
    try:
        method, target, version = (p.decode("ascii") for p in parts)
    except UnicodeDecodeError:
        raise HandshakeError(400, "not an HTTP request line") from None
    return method, target, version


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 section 4.2.2)."""
    digest = hashlib.sha1(
        key.encode("ascii") + _GUID
    ).digest()  # protocol-mandated, not for security
    return base64.b64encode(digest).decode("ascii")


def negotiate(request: HttpRequest, policy: WsPolicy) -> Upgrade:
    """Check an upgrade request against `policy`; the 101 response or HandshakeError."""
    if request.method != "GET":
        raise HandshakeError(405, f"method {request.method} is not GET", ("Allow: GET",))
    if request.version != "HTTP/1.1":
        raise HandshakeError(400, f"{request.version} cannot upgrade to WebSocket")
    if request.path != policy.path:
        raise HandshakeError(404, f"path {request.path!r} is not the MQTT endpoint {policy.path}")
    upgrade = [t.lower() for t in request.tokens("upgrade")]
    connection = [t.lower() for t in request.tokens("connection")]
    if "websocket" not in upgrade or "upgrade" not in connection:
        raise HandshakeError(
            426,
            "not a WebSocket upgrade request (no 'Upgrade: websocket' / 'Connection: Upgrade')",
            ("Upgrade: websocket", "Connection: Upgrade"),
        )
    version = request.header("sec-websocket-version")
    if version != "13":
        raise HandshakeError(
            426, f"unsupported WebSocket version {version!r}", ("Sec-WebSocket-Version: 13",)
        )
    key = (request.header("sec-websocket-key") or "").strip()
    try:
        raw_key = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw_key = b""
    if len(raw_key) != 16:
        raise HandshakeError(400, "missing or invalid Sec-WebSocket-Key")
    origin = request.header("origin")
    if (
        policy.allowed_origins
        and origin is not None
        and origin.strip().lower().removesuffix("/") not in policy.allowed_origins
    ):
        raise HandshakeError(403, f"origin {origin!r} is not in WS_ALLOWED_ORIGINS")
    offered = request.tokens("sec-websocket-protocol")
    chosen = next((p for p in offered if p in policy.subprotocols), None)
    if chosen is None:
        shown = ", ".join(offered) if offered else "none"
        raise HandshakeError(
            400,
            f"no supported WebSocket subprotocol offered (offered: {shown}; "
            f"supported: {', '.join(policy.subprotocols)})",
        )
    response = (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(key)}\r\n"
        f"Sec-WebSocket-Protocol: {chosen}\r\n"
        "\r\n"
    ).encode("ascii")
    return Upgrade(response, chosen, origin)


def http_error(error: HandshakeError) -> bytes:
    """The complete HTTP response refusing an upgrade (the connection is closed after)."""
    body = f"{error.status} {_REASONS.get(error.status, 'Error')}: {error.reason}\n".encode()
    lines = [
        f"HTTP/1.1 {error.status} {_REASONS.get(error.status, 'Error')}",
        *error.headers,
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
        "",
        "",
    ]
    return "\r\n".join(lines).encode("utf-8") + body


def _parse_ip(text: str) -> IpAddress | None:
    """An address from a forwarding header entry: bare, "[v6]", "[v6]:port" or "v4:port"."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address: IpAddress, proxies: tuple[IpNetwork, ...]) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in net for net in proxies)


def client_address(
    peer_ip: str, request: HttpRequest, proxies: tuple[IpNetwork, ...]
) -> str | None:
    """The client's address when `peer_ip` is a trusted proxy that says who the client is.

    X-Forwarded-For is read right to left, skipping trusted proxies: the first address
    not in `proxies` is the client (entries left of it could be forged by the client).
    When every entry is a trusted proxy, the leftmost is taken. Without X-Forwarded-For,
    X-Real-IP is used. None when the peer is not trusted or no usable address is given.
    """
    peer = _parse_ip(peer_ip)
    if peer is None or not proxies or not _trusted(peer, proxies):
        return None
    forwarded = request.tokens("x-forwarded-for")
    if forwarded:
        chosen: IpAddress | None = None
        for entry in reversed(forwarded):
            address = _parse_ip(entry)
            if address is None:
                break  # garbage: do not look further left
            chosen = address
            if not _trusted(address, proxies):
                break
        return None if chosen is None else str(chosen)
    real = request.header("x-real-ip")
    if real is not None:
        address = _parse_ip(real)
        return None if address is None else str(address)
    return None


# --------------------------------------------------------------------------- frames


def keystream(mask: bytes, offset: int, n: int) -> bytes:
    """`n` bytes of the repeated 4-byte `mask`, starting `offset` bytes into its cycle."""
    offset &= 3
    if offset:
        mask = mask[offset:] + mask[:offset]
    return (mask * ((n + 3) >> 2))[:n]


def xor(data: bytes | bytearray | memoryview, key: bytes) -> bytes:
    """`data` XOR `key` (same length), as one big-integer operation."""
    n = len(data)
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def unmask(data: bytes | bytearray | memoryview, mask: bytes, offset: int = 0) -> bytes:
    """`data` XOR the 4-byte `mask`, starting `offset` bytes into the mask's cycle."""
    return xor(data, keystream(mask, offset, len(data)))


def frame_header(length: int, opcode: int = OP_BINARY) -> bytes:
    """Header of an unmasked, final server frame carrying `length` payload bytes."""
    first = 0x80 | opcode
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return bytes((first, 126)) + length.to_bytes(2, "big")
    return bytes((first, 127)) + length.to_bytes(8, "big")


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame with a status code and a reason (cut to fit the 125-byte limit)."""
    payload = code.to_bytes(2, "big") + reason.encode("utf-8")[:123]
    return frame_header(len(payload), OP_CLOSE) + payload


class FrameReader:
    """Decodes a client's frames, as they arrive, into the bytes they carry.

    `feed` returns the unmasked payload of the binary and continuation frames in a read,
    in order, as at most one bytes object (a frame cut by the end of a read is forwarded
    as far as it arrived, never buffered whole). Control frames are appended to
    `controls` as (opcode, payload). After a close frame nothing more is read. A violation
    sets `error` to (close code, reason) and stops reading; data decoded before it is
    still returned.

    Speed: the payloads of a read and their key streams are each joined and unmasked in
    one big-integer XOR, so the per-frame work is parsing the header and two appends; a
    whole, final, binary frame with a 7-bit length takes a shorter path still.
    """

    __slots__ = (
        "_control",
        "_head",
        "_in_message",
        "_mask",
        "_offset",
        "_remaining",
        "closed",
        "controls",
        "error",
        "max_payload",
    )

    def __init__(self, max_payload: int) -> None:
        self.max_payload = max_payload
        self.controls: list[tuple[int, bytes]] = []
        self.error: tuple[int, str] | None = None
        self.closed = False  # a close frame was received
        self._head = b""  # start of a frame header split across reads
        self._remaining = 0  # payload bytes of the current frame still to come
        self._mask = b""
        self._offset = 0  # position in the mask cycle
        self._control: tuple[int, bytearray] | None = None  # control frame being read
        self._in_message = False  # a fragmented data message awaits continuation frames

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        if self.error is not None or self.closed:
            return []
        # One copy of the read: slicing bytes is cheaper than slicing a memoryview.
        data = self._head + bytes(data) if self._head else bytes(data)
        self._head = b""
        chunks: list[bytes] = []  # masked payload pieces
        keys: list[bytes] = []  # their key streams
        add_chunk = chunks.append
        add_key = keys.append
        pos = 0
        end = len(data)
        max_payload = self.max_payload
        while pos < end:
            remaining = self._remaining
            if remaining:  # inside a frame's payload
                n = remaining if remaining <= end - pos else end - pos
                piece = data[pos : pos + n]
                key = keystream(self._mask, self._offset, n)
                pos += n
                self._remaining = remaining - n
                self._offset = (self._offset + n) & 3
                control = self._control
                if control is None:
                    chunks.append(piece)
                    keys.append(key)
                else:
                    control[1].extend(xor(piece, key))
                    if not self._remaining:
                        self._control = None
                        if not self._finish_control(control[0], bytes(control[1])):
                            break
                continue
            if data[pos] == 0x82 and not self._in_message:
                # consecutive whole, final, masked binary frames with a 7-bit length
                while pos + 1 < end:
                    length = data[pos + 1] - 0x80
                    start = pos + 6
                    if length < 0 or length > 125 or start + length > end or length > max_payload:
                        break
                    if length:
                        add_chunk(data[start : start + length])
                        add_key((data[pos + 2 : start] * 32)[:length])
                    pos = start + length
                    if pos >= end or data[pos] != 0x82:
                        break
                if pos >= end:
                    break
            used = self._header(data, pos, end)
            if used <= 0:
                if used == 0:  # incomplete header: keep it for the next read
                    self._head = bytes(data[pos:end])
                break
            pos += used
            if self.closed:
                break
        if not chunks:
            return []
        if len(chunks) == 1:
            return [xor(chunks[0], keys[0])]
        return [xor(b"".join(chunks), b"".join(keys))]

    def _header(self, data: bytes | bytearray | memoryview, pos: int, end: int) -> int:
        """Parse the frame header at `pos`: its size, 0 when incomplete, -1 on error."""
        avail = end - pos
        if avail < 2:
            return 0
        b0 = data[pos]
        b1 = data[pos + 1]
        length = b1 & 0x7F
        size = 6
        if length == 126:
            size = 8
        elif length == 127:
            size = 14
        if avail < size:
            return 0
        if not b1 & 0x80:
            return self._fail(CLOSE_PROTOCOL_ERROR, "client frame not masked")
        if size == 8:
            length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        elif size == 14:
            length = int.from_bytes(data[pos + 2 : pos + 10], "big")
            if length >> 63:
                return self._fail(CLOSE_PROTOCOL_ERROR, "invalid frame length")
        if b0 & 0x70:
            return self._fail(CLOSE_PROTOCOL_ERROR, "reserved bits set (no extension negotiated)")
        self._mask = bytes(data[pos + size - 4 : pos + size])
        self._offset = 0
        opcode = b0 & 0x0F
        fin = b0 & 0x80
        if opcode >= 8:
            if opcode > OP_PONG:
                return self._fail(CLOSE_PROTOCOL_ERROR, f"reserved opcode {opcode:#x}")
            if not fin or length > 125:
                return self._fail(CLOSE_PROTOCOL_ERROR, "fragmented or oversized control frame")
            if length:
                self._control = (opcode, bytearray())
                self._remaining = length
            elif not self._finish_control(opcode, b""):
                return -1
            return size
        if opcode == OP_CONTINUATION:
            if not self._in_message:
                return self._fail(CLOSE_PROTOCOL_ERROR, "continuation frame without a message")
        elif opcode == OP_BINARY:
            if self._in_message:
                return self._fail(CLOSE_PROTOCOL_ERROR, "new message before the last one ended")
        elif opcode == OP_TEXT:
            return self._fail(CLOSE_UNSUPPORTED_DATA, "text frame (MQTT needs binary frames)")
        else:
            return self._fail(CLOSE_PROTOCOL_ERROR, f"reserved opcode {opcode:#x}")
        if length > self.max_payload:
            return self._fail(
                CLOSE_MESSAGE_TOO_BIG,
                f"frame of {length} bytes exceeds the limit of {self.max_payload}",
            )
        self._in_message = not fin
        self._remaining = length
        return size

    def _fail(self, code: int, reason: str) -> int:
        self.error = (code, reason)
        return -1

    def _finish_control(self, opcode: int, payload: bytes) -> bool:
        """Record a complete control frame; False when reading must stop."""
        if opcode == OP_CLOSE:
            if len(payload) == 1:
                self._fail(CLOSE_PROTOCOL_ERROR, "close frame with a 1-byte payload")
                return False
            self.closed = True
            self.controls.append((opcode, payload))
            return False
        self.controls.append((opcode, payload))
        return True
