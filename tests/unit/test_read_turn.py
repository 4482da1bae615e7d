"""A flooding connection reads at most READ_TURN_BUDGET bytes per event-loop turn.

libuv reads a readable socket up to 32 times per loop iteration. A client that keeps its
socket full (a QoS 0 publisher at full speed) could otherwise hand the broker 32 x 64 KiB,
some 25,000 packets, in one turn: seconds of work during which no other client was served
and no flush wrote anything (bench/run saw fan-in rounds delivering nothing). The test runs
a real broker in-process, fills a client's socket with megabytes of PUBLISH packets before
the loop may read them, and counts the bytes each link reads per loop turn. On the way it
checks that the connection has TCP_NODELAY, which the broker leaves to the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
from inprocess import LoopTurns, broker_env

from pytbmq import link as link_module
from pytbmq.broker import Broker
from pytbmq.config import load_settings

CONNECT = bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 0, 0, 0])  # 3.1.1, no keep-alive
PUBLISH = bytes([0x30, 69, 0, 3]) + b"a/b" + bytes(64)  # QoS 0, 64-byte payload, 71 bytes
PINGREQ = b"\xc0\x00"
FLOOD = 4 * 1024 * 1024


@pytest.mark.parametrize("transport", ["tcp", "ssl"])
def test_a_flooding_client_yields_the_loop_every_read_budget(
    transport: str,
    certs: tuple[Path, Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ca, chain, key = certs
    env = broker_env(tmp_path / "data", ("TCP", "SSL"), chain, key)
    settings = load_settings(env)
    loop_turns = LoopTurns()
    per_turn: collections.Counter[tuple[int, int]] = collections.Counter()  # (link, turn)
    original = link_module.Link.buffer_updated

    def counting(self: link_module.Link, nbytes: int) -> None:
        per_turn[id(self), loop_turns.n] += nbytes
        original(self, nbytes)

    monkeypatch.setattr(link_module.Link, "buffer_updated", counting)

    async def scenario() -> int:
        broker = Broker(settings)
        await broker.start()
        try:
            port = broker.servers[0 if transport == "tcp" else 1].sockets[0].getsockname()[1]
            tls = None
            if transport == "ssl":
                tls = ssl.create_default_context(cafile=str(ca))
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, FLOOD)
            sock.connect(("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(
                sock=sock, ssl=tls, server_hostname="localhost" if tls else None
            )
            writer.write(CONNECT)
            assert (await reader.readexactly(4))[:2] == b"\x20\x02"
            # The broker does not set TCP_NODELAY itself: the event loop must have.
            (link,) = broker.links
            assert link.transport is not None
            raw = link.transport.get_extra_info("socket")
            assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
            # The whole flood is written while the loop cannot read it: the transport's
            # buffer and the kernel's hold it, so the broker finds its socket full.
            writer.write(PUBLISH * (FLOOD // len(PUBLISH)) + PINGREQ)
            loop_turns.start()
            assert await asyncio.wait_for(reader.readexactly(2), 60) == b"\xd0\x00"
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()
        finally:
            loop_turns.stop()
            broker.request_stop()
            await broker.stop()
        return len({t for (_link, t) in per_turn})

    import uvloop

    turns = uvloop.run(scenario())
    worst = max(per_turn.values())
    total = sum(per_turn.values())
    # the whole flood arrived (and was answered: the PINGRESP came back)
    assert total >= FLOOD // len(PUBLISH) * len(PUBLISH)
    budget = link_module.READ_TURN_BUDGET
    # A read that crosses the budget finishes; a TLS record may add up to 16 KiB.
    assert worst <= budget + 65536, (worst, turns)
    assert turns >= FLOOD // (budget + 65536)


def test_reading_stays_paused_while_a_password_is_verified() -> None:
    """A yield must not resume a transport that authentication paused."""

    class Transport:
        def __init__(self) -> None:
            self.paused = False

        def is_closing(self) -> bool:
            return False

        def pause_reading(self) -> None:
            self.paused = True

        def resume_reading(self) -> None:
            self.paused = False

    async def scenario() -> bool:
        link: Any = object.__new__(link_module.Link)
        t = Transport()
        link.transport = t
        link._closing = False
        link._authenticating = False
        link._turn_rx = 0
        link._yield_reading()
        assert t.paused
        link._authenticating = True  # authentication began before the next turn
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return t.paused

    assert asyncio.run(scenario())
