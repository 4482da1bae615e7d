"""A connection must be freed by reference counting, whatever its transport and ending.

The broker raises Python's full-collection threshold (PYTBMQ_GC_THRESHOLDS) and freezes
its heap every second (PYTBMQ_GC_FREEZE_SEC, pytbmq/heap.py) because collections that
visit a large heap are long pauses. That is only safe if connections leave no reference
cycles behind: every cycle would wait for a rare full collection, or for the hourly
collection of the whole heap once frozen, holding its TLS buffers and session objects
meanwhile (bench/soak saw +30 MB a minute). This test runs
a real broker in-process with all four listeners, lets clients connect and leave in every
way, and asks the collector (gc.DEBUG_SAVEALL) what it had to find.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ssl
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from inprocess import LISTENERS, broker_env

from pytbmq.broker import Broker
from pytbmq.config import load_settings

CONNECT = bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 30, 0, 0])  # 3.1.1, clean
# MQTT 5, clean start 0, session expiry 60 s, client id "gc-per": a persistent session,
# taken over by each next client
CONNECT_V5 = bytes([0x10, 24, 0, 4]) + b"MQTT" + bytes([5, 0, 0, 30, 5, 0x11, 0, 0, 0, 60])
CONNECT_V5 += bytes([0, 6]) + b"gc-per"
SUBSCRIBE = {  # a/# at QoS 1
    CONNECT: bytes([0x82, 8, 0, 1, 0, 3]) + b"a/#" + bytes([1]),
    CONNECT_V5: bytes([0x82, 9, 0, 1, 0, 0, 3]) + b"a/#" + bytes([1]),
}
PUBLISH_Q1 = {  # to a/b, packet id 7, payload "x"
    CONNECT: bytes([0x32, 8, 0, 3]) + b"a/b" + bytes([0, 7]) + b"x",
    CONNECT_V5: bytes([0x32, 9, 0, 3]) + b"a/b" + bytes([0, 7, 0]) + b"x",
}
DISCONNECT = b"\xe0\x00"
WS_UPGRADE = (
    b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Protocol: mqtt\r\n\r\n"
)


def ws_frame(data: bytes) -> bytes:
    """A masked binary frame (mask 0: the payload goes as is)."""
    assert len(data) < 126
    return bytes([0x82, 0x80 | len(data), 0, 0, 0, 0]) + data


@pytest.fixture
def saveall() -> Iterator[None]:
    gc.collect()
    gc.garbage.clear()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


async def _client(
    port: int, tls: ssl.SSLContext | None, ws: bool, script: str, connect: bytes
) -> None:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=tls, server_hostname="localhost" if tls else None
    )

    def send(data: bytes) -> None:
        writer.write(ws_frame(data) if ws else data)

    if ws:
        writer.write(WS_UPGRADE)
        await reader.readuntil(b"\r\n\r\n")
    send(connect)
    await reader.readexactly(6 if ws else 4)  # CONNACK (and its frame header)
    if script == "subscribe":
        send(SUBSCRIBE[connect])
        send(PUBLISH_Q1[connect])
        await reader.read(64)
    if script == "garbage":
        send(b"\x00\x00")  # packet type 0: a protocol error, the broker closes
        await reader.read(64)
    elif script == "disconnect":
        send(DISCONNECT)
    await writer.drain()
    if script == "abort":
        writer.transport.abort()
    else:
        writer.close()
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        await writer.wait_closed()


def test_connections_leave_no_reference_cycles(
    certs: tuple[Path, Path, Path], tmp_path: Path, saveall: None
) -> None:
    ca, chain, key = certs
    env = broker_env(tmp_path / "data", LISTENERS, chain, key)
    settings = load_settings(env)
    tls = ssl.create_default_context(cafile=str(ca))

    async def scenario() -> Counter[str]:
        broker = Broker(settings)
        await broker.start()
        try:
            ports = {
                name: server.sockets[0].getsockname()[1]
                for name, server in zip(("tcp", "ws", "ssl", "wss"), broker.servers, strict=True)
            }
            gc.collect()
            gc.garbage.clear()  # what startup left is not the question
            for script in ("disconnect", "close", "abort", "garbage", "subscribe"):
                for connect in (CONNECT, CONNECT_V5):
                    for name, port in ports.items():
                        secure = tls if name in ("ssl", "wss") else None
                        await _client(port, secure, name.startswith("ws"), script, connect)
            for _ in range(100_000):  # until the broker has seen every close (yield, no timer)
                if not broker.links:
                    break
                await asyncio.sleep(0)
            assert not broker.links
        finally:
            broker.request_stop()
            await broker.stop()
        gc.collect()
        ours = Counter(
            type(o).__qualname__
            for o in gc.garbage
            if type(o).__module__.startswith(("pytbmq", "uvloop", "ssl", "_ssl"))
        )
        return ours

    import uvloop

    found = uvloop.run(scenario())
    assert not found, f"connections left reference cycles: {dict(found)}"
