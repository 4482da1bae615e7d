"""A hand-written, blocking WebSocket client for the end-to-end tests (RFC 6455).

Independent of the broker's code and of any WebSocket library: the upgrade request is
written by hand and frames are built and parsed with plain byte operations, so a test can
also send what a correct client never would (text frames, unmasked frames, oversize
frames, fragments, odd headers). `WsRawClient` is `rawmqtt.RawClient` over WebSocket, so
the raw-socket MQTT tests run on the WS and WSS listeners too.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import ssl
import time
from dataclasses import dataclass, field

from .rawmqtt import RawClient

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

CONTINUATION = 0x0
TEXT = 0x1
BINARY = 0x2
CLOSE = 0x8
PING = 0x9
PONG = 0xA


@dataclass
class HttpResponse:
    status: int
    reason: str
    headers: dict[str, str]  # lower-case names
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class Frame:
    opcode: int
    payload: bytes
    fin: bool = True
    masked: bool = False

    @property
    def close_code(self) -> int | None:
        if self.opcode != CLOSE or len(self.payload) < 2:
            return None
        return int.from_bytes(self.payload[:2], "big")


@dataclass
class Upgrade:
    """What to send in the upgrade request; every field can be made wrong on purpose."""

    path: str = "/mqtt"
    subprotocols: tuple[str, ...] | None = ("mqtt",)
    origin: str | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)
    method: str = "GET"
    version: str = "13"
    key: str | None = None  # default: a fresh random key
    websocket_headers: bool = True  # Upgrade/Connection headers


def encode_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    mask: bool = True,
    rsv: int = 0,
    length: int | None = None,
) -> bytes:
    """One client frame. ``length`` overrides the announced payload length."""
    announced = len(payload) if length is None else length
    head = bytearray([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if mask else 0
    if announced < 126:
        head.append(mask_bit | announced)
    elif announced < 65536:
        head.append(mask_bit | 126)
        head += announced.to_bytes(2, "big")
    else:
        head.append(mask_bit | 127)
        head += announced.to_bytes(8, "big")
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes(head) + key + masked


class WsConnection:
    """A TCP (or TLS) socket that performs a WebSocket upgrade and speaks frames."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str = "localhost",
        timeout: float = 5.0,
    ) -> None:
        raw = socket.create_connection((host, port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock: socket.socket = (
            ssl_context.wrap_socket(raw, server_hostname=server_hostname)
            if ssl_context is not None
            else raw
        )
        self.host = host
        self.port = port
        self.buf = bytearray()
        self.eof = False
        self.close_frame: Frame | None = None
        self.response: HttpResponse | None = None

    # -- handshake
    def request_bytes(self, spec: Upgrade) -> bytes:
        key = spec.key if spec.key is not None else base64.b64encode(os.urandom(16)).decode()
        self._key = key
        lines = [f"{spec.method} {spec.path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        if spec.websocket_headers:
            lines += ["Upgrade: websocket", "Connection: Upgrade"]
            lines += [f"Sec-WebSocket-Key: {key}", f"Sec-WebSocket-Version: {spec.version}"]
        if spec.subprotocols is not None:
            lines.append(f"Sec-WebSocket-Protocol: {', '.join(spec.subprotocols)}")
        if spec.origin is not None:
            lines.append(f"Origin: {spec.origin}")
        lines += [f"{name}: {value}" for name, value in spec.extra_headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def upgrade(self, spec: Upgrade | None = None, timeout: float = 5.0) -> HttpResponse:
        """Send the upgrade request and read the response head (and body on refusal)."""
        self.sock.sendall(self.request_bytes(spec or Upgrade()))
        return self.read_response(timeout)

    def read_response(self, timeout: float = 5.0) -> HttpResponse:
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            if not self._fill(deadline):
                raise AssertionError(f"connection closed before an HTTP response: {self.buf!r}")
        end = self.buf.index(b"\r\n\r\n")
        head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        del self.buf[: end + 4]
        _version, status, *reason = head[0].split(" ", 2)
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        response = HttpResponse(int(status), reason[0] if reason else "", headers)
        if response.status == 101:
            expected = base64.b64encode(hashlib.sha1(self._key.encode() + GUID).digest()).decode()
            assert response.header("sec-websocket-accept") == expected, response
        else:
            length = int(headers.get("content-length", "0"))
            while len(self.buf) < length and self._fill(deadline):
                pass
            response.body = bytes(self.buf[:length])
            del self.buf[:length]
        self.response = response
        return response

    # -- frames
    def send_frame(self, opcode: int, payload: bytes = b"", **kwargs: object) -> None:
        self.sock.sendall(encode_frame(opcode, payload, **kwargs))  # type: ignore[arg-type]

    def send_binary(self, payload: bytes) -> None:
        self.sock.sendall(encode_frame(BINARY, payload))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no data from the broker before the deadline")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            raise
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, ssl.SSLError):
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def _parse_frame(self) -> Frame | None:
        buf = self.buf
        if len(buf) < 2:
            return None
        b0, b1 = buf[0], buf[1]
        length = b1 & 0x7F
        pos = 2
        if length == 126:
            if len(buf) < 4:
                return None
            length = int.from_bytes(buf[2:4], "big")
            pos = 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length = int.from_bytes(buf[2:10], "big")
            pos = 10
        masked = bool(b1 & 0x80)
        key = b""
        if masked:
            if len(buf) < pos + 4:
                return None
            key = bytes(buf[pos : pos + 4])
            pos += 4
        if len(buf) < pos + length:
            return None
        payload = bytes(buf[pos : pos + length])
        del buf[: pos + length]
        if masked:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        return Frame(b0 & 0x0F, payload, bool(b0 & 0x80), masked)

    def recv_frame(self, timeout: float = 5.0) -> Frame | None:
        """Next frame, or None at EOF. TimeoutError if nothing comes."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self._parse_frame()
            if frame is not None:
                if frame.opcode == CLOSE:
                    self.close_frame = frame
                return frame
            if self.eof or not self._fill(deadline):
                return None

    def frames_until_closed(self, timeout: float = 5.0) -> list[Frame]:
        """Every frame until the broker closes the connection."""
        deadline = time.monotonic() + timeout
        frames = []
        while True:
            try:
                frame = self.recv_frame(max(deadline - time.monotonic(), 0.001))
            except TimeoutError:
                raise AssertionError(f"still open after {timeout}s; got {frames}") from None
            if frame is None:
                return frames
            frames.append(frame)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class WsRawClient(RawClient):
    """RawClient whose bytes travel in binary WebSocket frames (one frame per send)."""

    def __init__(
        self,
        host: str,
        port: int,
        version: int = 4,
        timeout: float = 5.0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        path: str = "/mqtt",
    ) -> None:
        ws = WsConnection(host, port, ssl_context=ssl_context, timeout=timeout)
        response = ws.upgrade(Upgrade(path=path))
        assert response.status == 101, f"WebSocket upgrade refused: {response}"
        self._attach(ws, version)

    def _attach(self, ws: WsConnection, version: int) -> None:
        self.version = version
        self.ws = ws
        self.sock = ws.sock
        self._buf = bytearray()
        self.closed = False
        self.received = []

    @classmethod
    def attach(cls, ws: WsConnection, version: int = 4) -> WsRawClient:
        """MQTT over an already upgraded connection (the test sends odd frames itself)."""
        client = cls.__new__(cls)
        client._attach(ws, version)
        return client

    def send(self, data: bytes) -> None:
        self.ws.send_binary(data)

    def shutdown_write(self) -> None:
        """Half-close; over TLS there is none: SSLSocket.shutdown() drops the TLS layer and
        later reads would return raw records, so the client just stops sending."""
        if not isinstance(self.sock, ssl.SSLSocket):
            super().shutdown_write()

    def try_send(self, data: bytes) -> bool:
        try:
            self.ws.send_binary(data)
        except OSError:
            return False
        return True

    def _fill(self, deadline: float) -> bool:
        while True:
            if self.ws.close_frame is not None:
                self.closed = True
                return False
            frame = self.ws.recv_frame(max(deadline - time.monotonic(), 0.0))
            if frame is None or frame.opcode == CLOSE:
                self.closed = True
                return False
            if frame.opcode in (BINARY, CONTINUATION):
                self._buf += frame.payload
                return True
            if frame.opcode == PING:
                self.ws.send_frame(PONG, frame.payload)
