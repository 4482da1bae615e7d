"""Unit tests of the WebSocket layer: pytbmq.protocol.websocket (upgrade, frames, proxy
addresses), the config kinds of the WS settings, and pytbmq.wsadapter with a fake link."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
try:
    import pytbmq  # noqa: F401
except ModuleNotFoundError:  # running from a checkout without an installed package
    sys.path.insert(0, str(ROOT / "src"))

import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pytbmq.config import CidrList, OriginList, TokenList, UrlPath  # noqa: E402
from pytbmq.protocol.websocket import (  # noqa: E402
    FrameReader,
    HandshakeError,
    WsPolicy,
    accept_key,
    client_address,
    close_frame,
    frame_header,
    http_error,
    negotiate,
    parse_request,
    unmask,
)
from pytbmq.wsadapter import WsAdapter, WsSettings, parse_networks  # noqa: E402

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 section 1.3


def request(*headers: str, line: str = "GET /mqtt HTTP/1.1") -> bytes:
    return ("\r\n".join([line, *headers]) + "\r\n\r\n").encode()


GOOD = (
    "Host: broker",
    "Upgrade: websocket",
    "Connection: keep-alive, Upgrade",
    f"Sec-WebSocket-Key: {KEY}",
    "Sec-WebSocket-Version: 13",
    "Sec-WebSocket-Protocol: mqtt",
)


def client_frame(
    opcode: int, payload: bytes, *, fin: bool = True, mask: bytes | None = None
) -> bytes:
    key = os.urandom(4) if mask is None else mask
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


# --------------------------------------------------------------------------- handshake


def test_accept_key_matches_rfc_example() -> None:
    assert accept_key(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_parse_request_waits_for_the_blank_line() -> None:
    data = request(*GOOD)
    for cut in range(1, len(data)):
        assert parse_request(data[:cut]) is None
    parsed = parse_request(data + b"\x82\x80abcd")
    assert parsed is not None
    assert parsed.size == len(data)
    assert parsed.header("sec-websocket-key") == KEY
    assert parsed.tokens("connection") == ["keep-alive", "Upgrade"]


def test_parse_request_joins_repeated_headers() -> None:
    parsed = parse_request(request("X-Forwarded-For: 1.1.1.1", "x-forwarded-for: 2.2.2.2, 3.3.3.3"))
    assert parsed is not None
    assert parsed.tokens("x-forwarded-for") == ["1.1.1.1", "2.2.2.2", "3.3.3.3"]


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"\x10\x0c\x00\x04MQTT", 400),  # an MQTT CONNECT
        (b"GET /mqtt\r\n", 400),  # HTTP/0.9 style line
        (b"GET /mqtt HTTP/1.1\r\n folded: x\r\n\r\n", 400),
        (b"GET /mqtt HTTP/1.1\r\nno colon\r\n\r\n", 400),
        (b"GET /mqtt HTTP/1.1\r\nX: " + b"a" * 9000, 431),
    ],
    ids=["mqtt", "short-line", "folded", "no-colon", "too-large"],
)
def test_parse_request_refuses(data: bytes, status: int) -> None:
    with pytest.raises(HandshakeError) as info:
        parse_request(data)
    assert info.value.status == status


def _negotiate(*headers: str, policy: WsPolicy | None = None, line: str = "GET /mqtt HTTP/1.1"):
    parsed = parse_request(request(*headers, line=line))
    assert parsed is not None
    return negotiate(parsed, policy or WsPolicy())


def test_negotiate_accepts_and_answers_101() -> None:
    upgrade = _negotiate(*GOOD)
    assert upgrade.subprotocol == "mqtt"
    text = upgrade.response.decode()
    assert text.startswith("HTTP/1.1 101 Switching Protocols\r\n")
    assert "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in text
    assert "Sec-WebSocket-Protocol: mqtt\r\n" in text
    assert text.endswith("\r\n\r\n")


def test_absolute_form_target_and_query() -> None:
    assert _negotiate(*GOOD, line="GET http://broker:8084/mqtt?x=1 HTTP/1.1").subprotocol == "mqtt"


def _replace(name: str, value: str | None) -> list[str]:
    out = [h for h in GOOD if not h.lower().startswith(name.lower() + ":")]
    if value is not None:
        out.append(f"{name}: {value}")
    return out


@pytest.mark.parametrize(
    ("headers", "line", "status", "words"),
    [
        (GOOD, "POST /mqtt HTTP/1.1", 405, "not GET"),
        (GOOD, "GET /mqtt HTTP/1.0", 400, "cannot upgrade"),
        (GOOD, "GET /other HTTP/1.1", 404, "not the MQTT endpoint"),
        (_replace("Upgrade", None), None, 426, "not a WebSocket upgrade"),
        (_replace("Connection", "keep-alive"), None, 426, "not a WebSocket upgrade"),
        (_replace("Sec-WebSocket-Version", "8"), None, 426, "unsupported WebSocket version"),
        (_replace("Sec-WebSocket-Key", "not base64!"), None, 400, "Sec-WebSocket-Key"),
        (_replace("Sec-WebSocket-Key", "c2hvcnQ="), None, 400, "Sec-WebSocket-Key"),
        (_replace("Sec-WebSocket-Protocol", "mqttv5"), None, 400, "offered: mqttv5"),
        (_replace("Sec-WebSocket-Protocol", None), None, 400, "offered: none"),
    ],
)
def test_negotiate_refuses(headers: Any, line: str | None, status: int, words: str) -> None:
    with pytest.raises(HandshakeError) as info:
        _negotiate(*headers, line=line or "GET /mqtt HTTP/1.1")
    assert info.value.status == status
    assert words in info.value.reason
    response = http_error(info.value).decode()
    assert response.startswith(f"HTTP/1.1 {status} ")
    head, body = response.split("\r\n\r\n", 1)
    assert f"Content-Length: {len(body.encode())}" in head
    assert "Connection: close" in head


def test_subprotocol_is_the_clients_first_supported_choice() -> None:
    policy = WsPolicy(subprotocols=("mqttv3.1", "mqtt"))
    headers = _replace("Sec-WebSocket-Protocol", "foo, mqtt, mqttv3.1")
    assert _negotiate(*headers, policy=policy).subprotocol == "mqtt"
    headers = [*_replace("Sec-WebSocket-Protocol", "foo"), "Sec-WebSocket-Protocol: mqttv3.1"]
    assert _negotiate(*headers, policy=policy).subprotocol == "mqttv3.1"


def test_origins() -> None:
    policy = WsPolicy(allowed_origins=frozenset({"https://app.example.com"}))
    assert _negotiate(*GOOD, "Origin: https://APP.example.com/", policy=policy)
    assert _negotiate(*GOOD, policy=policy)  # not a browser: no Origin header
    with pytest.raises(HandshakeError) as info:
        _negotiate(*GOOD, "Origin: https://evil.example.com", policy=policy)
    assert info.value.status == 403
    assert _negotiate(*GOOD, "Origin: https://evil.example.com")  # empty list: any


# --------------------------------------------------------------------------- proxies


def _xff(*headers: str) -> Any:
    parsed = parse_request(request(*headers))
    assert parsed is not None
    return parsed


TRUSTED = parse_networks("127.0.0.1,10.0.0.0/8,::1")


@pytest.mark.parametrize(
    ("peer", "headers", "expected"),
    [
        ("127.0.0.1", ["X-Forwarded-For: 203.0.113.7"], "203.0.113.7"),
        ("127.0.0.1", ["X-Forwarded-For: 198.51.100.1, 203.0.113.7, 10.0.0.5"], "203.0.113.7"),
        ("127.0.0.1", ["X-Forwarded-For: 10.0.0.9, 10.0.0.5"], "10.0.0.9"),  # all trusted
        ("127.0.0.1", ["X-Forwarded-For: 203.0.113.7:5555"], "203.0.113.7"),
        ("127.0.0.1", ['X-Forwarded-For: "[2001:db8::7]:443"'], "2001:db8::7"),
        ("127.0.0.1", ["X-Forwarded-For: 2001:db8::7"], "2001:db8::7"),
        ("127.0.0.1", ["X-Forwarded-For: unknown"], None),
        ("127.0.0.1", ["X-Forwarded-For: 203.0.113.7, garbage"], None),
        ("127.0.0.1", ["X-Real-IP: 203.0.113.8"], "203.0.113.8"),
        ("127.0.0.1", ["X-Forwarded-For: 203.0.113.7", "X-Real-IP: 203.0.113.8"], "203.0.113.7"),
        ("::1", ["X-Real-IP: 203.0.113.8"], "203.0.113.8"),
        ("::ffff:127.0.0.1", ["X-Real-IP: 203.0.113.8"], "203.0.113.8"),
        ("192.0.2.1", ["X-Forwarded-For: 203.0.113.7", "X-Real-IP: 203.0.113.8"], None),
        ("127.0.0.1", [], None),
    ],
)
def test_client_address(peer: str, headers: list[str], expected: str | None) -> None:
    assert client_address(peer, _xff(*headers), TRUSTED) == expected


def test_no_trusted_proxies_means_headers_are_ignored() -> None:
    assert client_address("127.0.0.1", _xff("X-Real-IP: 203.0.113.8"), ()) is None


# --------------------------------------------------------------------------- frames


@given(st.binary(max_size=300), st.binary(min_size=4, max_size=4), st.integers(0, 7))
def test_unmask_is_xor_with_the_rotated_mask(data: bytes, mask: bytes, offset: int) -> None:
    expected = bytes(b ^ mask[(i + offset) % 4] for i, b in enumerate(data))
    assert unmask(data, mask, offset) == expected
    assert unmask(memoryview(data), mask, offset) == expected


@pytest.mark.parametrize(("n", "size"), [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)])
def test_frame_header_lengths(n: int, size: int) -> None:
    head = frame_header(n)
    assert len(head) == size and head[0] == 0x82 and not head[1] & 0x80


def test_close_frame_fits_a_control_frame() -> None:
    frame = close_frame(1009, "x" * 500)
    assert frame[0] == 0x88 and frame[1] == 125
    assert frame[2:4] == (1009).to_bytes(2, "big")


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.binary(max_size=200), min_size=1, max_size=8),
    st.data(),
)
def test_frames_reassemble_whatever_the_fragmentation_and_reads(
    messages: list[bytes], data: st.DataObject
) -> None:
    wire = b""
    pings: list[bytes] = []
    for message in messages:
        cuts = sorted(data.draw(st.lists(st.integers(0, len(message)), max_size=3)))
        pieces = [message[a:b] for a, b in zip([0, *cuts], [*cuts, len(message)], strict=True)]
        for i, piece in enumerate(pieces):
            opcode = 0x2 if i == 0 else 0x0
            wire += client_frame(opcode, piece, fin=i == len(pieces) - 1)
            if data.draw(st.booleans()):
                ping = data.draw(st.binary(max_size=10))
                pings.append(ping)
                wire += client_frame(0x9, ping)
    reader = FrameReader(1000)
    got = b""
    reads = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=20)))
    for a, b in zip([0, *reads], [*reads, len(wire)], strict=True):
        got += b"".join(reader.feed(memoryview(wire)[a:b]))
    assert reader.error is None
    assert got == b"".join(messages)
    assert reader.controls == [(0x9, p) for p in pings]


def _fed(*frames: bytes, limit: int = 100) -> FrameReader:
    reader = FrameReader(limit)
    reader.feed(b"".join(frames))
    return reader


@pytest.mark.parametrize(
    ("wire", "code", "words"),
    [
        (b"\x82\x05hello", 1002, "not masked"),
        (client_frame(0x1, b"text"), 1003, "text frame"),
        (client_frame(0x2, b"x" * 101), 1009, "101 bytes exceeds the limit of 100"),
        (client_frame(0x0, b"x"), 1002, "continuation frame without a message"),
        (client_frame(0x2, b"a", fin=False) + client_frame(0x2, b"b"), 1002, "new message"),
        (client_frame(0x3, b""), 1002, "reserved opcode 0x3"),
        (client_frame(0xB, b""), 1002, "reserved opcode 0xb"),
        (bytes([0xC2]) + client_frame(0x2, b"x")[1:], 1002, "reserved bits"),
        (client_frame(0x9, b"p", fin=False), 1002, "control frame"),
        (client_frame(0x9, b"p" * 126), 1002, "control frame"),
        (client_frame(0x8, b"\x03"), 1002, "1-byte payload"),
        (b"\x82\xff" + b"\x80" + b"\0" * 7 + b"mask", 1002, "invalid frame length"),
    ],
)
def test_frame_violations(wire: bytes, code: int, words: str) -> None:
    reader = _fed(wire)
    assert reader.error is not None
    assert reader.error[0] == code and words in reader.error[1]
    assert reader.feed(client_frame(0x2, b"after")) == []


def test_data_before_a_violation_is_still_returned() -> None:
    reader = FrameReader(100)
    out = reader.feed(client_frame(0x2, b"good") + client_frame(0x1, b"bad"))
    assert out == [b"good"] and reader.error is not None and reader.error[0] == 1003


def test_nothing_is_read_after_a_close_frame() -> None:
    reader = FrameReader(100)
    out = reader.feed(client_frame(0x8, (1000).to_bytes(2, "big")) + client_frame(0x2, b"late"))
    assert out == [] and reader.closed and reader.controls == [(0x8, b"\x03\xe8")]
    assert reader.feed(client_frame(0x2, b"later")) == []


def test_empty_frames_and_long_lengths() -> None:
    reader = FrameReader(70000)
    out = reader.feed(
        client_frame(0x2, b"") + client_frame(0x2, b"y" * 300) + client_frame(0x2, b"z" * 66000)
    )
    assert b"".join(out) == b"y" * 300 + b"z" * 66000
    assert reader.controls == [] and reader.error is None


# --------------------------------------------------------------------------- config kinds


def test_token_list() -> None:
    assert TokenList().parse(" mqtt , mqttv3.1 ") == "mqtt,mqttv3.1"
    for bad in ("", " , ", "mq tt", "mqtt;x", "a,b/c"):
        with pytest.raises(ValueError):
            TokenList().parse(bad)


def test_url_path() -> None:
    assert UrlPath().parse("/mqtt") == "/mqtt"
    assert UrlPath().parse("/") == "/"
    for bad in ("", "mqtt", "/mqtt?x", "/a b", "/a#b"):
        with pytest.raises(ValueError):
            UrlPath().parse(bad)


def test_origin_list() -> None:
    assert OriginList().parse("") == ""
    assert OriginList().parse("HTTPS://App.Example.com/, http://localhost:8080") == (
        "https://app.example.com,http://localhost:8080"
    )
    for bad in ("app.example.com", "https://", "https://a.example.com/path"):
        with pytest.raises(ValueError):
            OriginList().parse(bad)


def test_cidr_list() -> None:
    assert CidrList().parse("") == ""
    assert CidrList().parse("10.1.2.3/8, ::1, 192.168.0.1") == "10.0.0.0/8,::1/128,192.168.0.1/32"
    for bad in ("10.0.0.0/33", "localhost", "1.2.3"):
        with pytest.raises(ValueError):
            CidrList().parse(bad)
    assert parse_networks("10.0.0.0/8,::1/128") == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1"),
    )


# --------------------------------------------------------------------------- the adapter


class FakeTransport(asyncio.Transport):
    def __init__(self, peer: tuple[str, int] = ("127.0.0.1", 40000)) -> None:
        super().__init__({"peername": peer, "ssl_object": "ssl-object"})
        self.written = bytearray()
        self.closed = False
        self.aborted = False
        self.limits: tuple[int | None, int | None] | None = None
        self.closed_event = asyncio.Event()

    def write(self, data: Any) -> None:
        self.written += data

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.written += data

    def close(self) -> None:
        self.closed = True
        self.closed_event.set()

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.limits = (high, low)


class FakeLink:
    """Duck-typed stand-in for pytbmq.link.Link: records what the adapter hands it."""

    def __init__(self) -> None:
        self.buffer = bytearray(16)  # small, to force several buffer_updated calls
        self.received = bytearray()
        self.transport: Any = None
        self.peer = "?"
        self.lost: list[Exception | None] = []
        self.paused = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=100, low=50)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}"

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.buffer)

    def buffer_updated(self, nbytes: int) -> None:
        self.received += self.buffer[:nbytes]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)

    def pause_writing(self) -> None:
        self.paused += 1

    def resume_writing(self) -> None:
        self.paused -= 1


def _adapter(**kwargs: Any) -> tuple[WsAdapter, FakeTransport, list[FakeLink]]:
    links: list[FakeLink] = []

    def make() -> Any:
        links.append(FakeLink())
        return links[-1]

    settings = WsSettings("ws", WsPolicy(), max_payload=1000, **kwargs)
    adapter = WsAdapter(settings, make)
    transport = FakeTransport()
    adapter.connection_made(transport)
    return adapter, transport, links


def _feed(adapter: WsAdapter, data: bytes) -> None:
    view = adapter.get_buffer(len(data))
    view[: len(data)] = data
    adapter.buffer_updated(len(data))


def test_adapter_upgrade_pipelined_frames_and_writes() -> None:
    asyncio.run(_upgrade_pipelined_frames_and_writes())


async def _upgrade_pipelined_frames_and_writes() -> None:
    adapter, transport, links = _adapter(trusted_proxies=parse_networks("127.0.0.1"))
    payload = bytes(range(50))
    _feed(adapter, request(*GOOD, "X-Forwarded-For: 203.0.113.7") + client_frame(0x2, payload))
    assert bytes(transport.written).startswith(b"HTTP/1.1 101 ")
    (link,) = links
    assert link.received == payload  # 50 bytes through a 16-byte link buffer
    assert link.peer == "203.0.113.7"
    assert transport.limits == (100, 50)
    ws = link.transport
    assert ws.get_extra_info("ssl_object") == "ssl-object"
    transport.written.clear()
    ws.write(b"\x20\x02\x00\x00")
    ws.write(b"x" * 20000)
    assert (
        bytes(transport.written)
        == frame_header(4) + b"\x20\x02\x00\x00" + frame_header(20000) + b"x" * 20000
    )
    adapter.pause_writing()
    assert link.paused == 1
    adapter.resume_writing()
    assert link.paused == 0
    transport.written.clear()
    ws.close()
    assert bytes(transport.written) == close_frame(1000) and transport.closed
    assert ws.is_closing()
    ws.write(b"ignored")
    assert bytes(transport.written) == close_frame(1000)
    adapter.connection_lost(None)
    assert link.lost == [None]


def test_adapter_answers_ping_and_echoes_close() -> None:
    asyncio.run(_answers_ping_and_echoes_close())


async def _answers_ping_and_echoes_close() -> None:
    adapter, transport, _links = _adapter()
    _feed(adapter, request(*GOOD))
    transport.written.clear()
    _feed(adapter, client_frame(0x9, b"hi") + client_frame(0x8, (4000).to_bytes(2, "big")))
    assert bytes(transport.written) == frame_header(2, 0xA) + b"hi" + close_frame(4000)
    assert transport.closed


def test_adapter_refuses_and_times_out() -> None:
    asyncio.run(_refuses_and_times_out())


async def _refuses_and_times_out() -> None:
    adapter, transport, links = _adapter()
    _feed(adapter, request("Host: x", line="GET /nope HTTP/1.1"))
    assert bytes(transport.written).startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert transport.closed and links == []
    adapter2, transport2, _ = _adapter(upgrade_timeout=0.01)
    _feed(adapter2, b"GET /mqtt HTTP/1.1\r\n")
    await asyncio.wait_for(transport2.closed_event.wait(), 5)  # the upgrade timer fired
    assert transport2.written == b""
