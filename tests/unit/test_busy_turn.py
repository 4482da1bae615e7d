"""Bytes for a client are written during a busy loop turn, not only at its end.

The broker collects each link's outgoing bytes and writes them once per event-loop turn
(pytbmq.link.Writer). A turn in which the poll found many readable connections can take
tens of milliseconds; a reply produced by the first read of such a turn would otherwise
wait for all the others. Reads later in the turn write what has waited FLUSH_AFTER_SEC.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
import uvloop
from inprocess import LoopTurns, broker_env

from pytbmq import link as link_module
from pytbmq.broker import Broker
from pytbmq.config import load_settings

CONNECT = bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 0, 0, 0])  # 3.1.1, no keep-alive
SUBSCRIBE_P = bytes([0x82, 6, 0, 1, 0, 1]) + b"p" + bytes([0])  # packet id 1, "p", QoS 0
PUBLISH_P = bytes([0x30, 5, 0, 1]) + b"p" + b"hi"  # QoS 0 to "p"
NOISE = bytes([0x30, 69, 0, 3]) + b"a/b" + bytes(64)  # QoS 0 to a topic nobody reads
FLOODERS = 8
FLOOD = (link_module.READ_TURN_BUDGET // len(NOISE)) * len(NOISE)  # one read budget each


def test_a_reply_is_written_before_a_busy_turn_ends(
    certs: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _ca, chain, key = certs
    settings = load_settings(broker_env(tmp_path / "data", ("TCP",), chain, key))
    loop_turns = LoopTurns()
    events: list[tuple[str, int, int]] = []  # (read | write, link id, turn)
    read, flush = link_module.Link.buffer_updated, link_module.Link.flush

    def reading(self: link_module.Link, nbytes: int) -> None:
        events.append(("read", id(self), loop_turns.n))
        read(self, nbytes)

    def writing(self: link_module.Link) -> None:
        if self._out:
            events.append(("write", id(self), loop_turns.n))
        flush(self)

    monkeypatch.setattr(link_module.Link, "buffer_updated", reading)
    monkeypatch.setattr(link_module.Link, "flush", writing)

    async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(CONNECT)
        assert (await reader.readexactly(4))[:2] == b"\x20\x02"
        return reader, writer

    async def scenario() -> int:
        broker = Broker(settings)
        await broker.start()

        clients: list[asyncio.StreamWriter] = []
        try:
            port = broker.servers[0].sockets[0].getsockname()[1]
            p_reader, p_writer = await connect(port)
            clients.append(p_writer)
            p_writer.write(SUBSCRIBE_P)
            assert await p_reader.readexactly(5) == bytes([0x90, 3, 0, 1, 0])
            (p_link,) = broker.links
            flooders = [await connect(port) for _ in range(FLOODERS)]
            clients.extend(w for _r, w in flooders)
            # Everything goes into the kernel before the loop may poll again: the probe's
            # PUBLISH first, so that it is the first read of the next turn, then one read
            # budget of noise on every other connection.
            events.clear()
            p_writer.write(PUBLISH_P)
            for _r, w in flooders:
                w.write(NOISE * (FLOOD // len(NOISE)))
            loop_turns.start()
            assert await asyncio.wait_for(p_reader.readexactly(len(PUBLISH_P)), 30) == PUBLISH_P
            # wait until the broker has read all the noise (a PINGREQ answered on each)
            for r, w in flooders:
                w.write(b"\xc0\x00")
                assert await asyncio.wait_for(r.readexactly(2), 30) == b"\xd0\x00"
        finally:
            loop_turns.stop()
            for w in clients:
                w.close()
                with contextlib.suppress(ConnectionError):
                    await w.wait_closed()
            broker.request_stop()
            await broker.stop()
        return id(p_link)

    p = uvloop.run(scenario())
    first_read = next(i for i, e in enumerate(events) if e[0] == "read" and e[1] == p)
    busy = events[first_read][2]
    noise_reads = [i for i, e in enumerate(events) if e[0] == "read" and e[1] != p and e[2] == busy]
    p_write = next(i for i, e in enumerate(events) if e[0] == "write" and e[1] == p)
    assert len(noise_reads) >= FLOODERS // 2, events  # the turn was busy
    assert noise_reads[0] > first_read, events  # and the probe was read first in it
    # The reply went out in that turn, between two of its reads, not after the last one.
    assert events[p_write][2] == busy, events
    assert p_write < noise_reads[-1], events
