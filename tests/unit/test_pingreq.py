"""PINGREQ: answered at once when it arrives alone, through the normal path otherwise.

Link.buffer_updated answers a read that is exactly one PINGREQ without decoding it or
waiting for the end-of-turn flush (idle clients ping in bursts). Everything else about a
PINGREQ must stay as the specification has it: only after CONNECT, only with a remaining
length of 0, and never ahead of an acknowledgement that is being held for the store.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the fuzz harness

from fuzz.harness import FakeTransport
from pytbmq.link import _READ_BUFFER, Link, LinkSettings, Writer
from pytbmq.protocol.connection import Limits
from pytbmq.router import Router, RouterConfig

CONNECT = bytes([0x10, 14, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 30, 0, 2]) + b"pc"
PINGREQ = b"\xc0\x00"
PINGRESP = b"\xd0\x00"


def feed(link: Link, data: bytes) -> None:
    link.get_buffer(-1)
    _READ_BUFFER[: len(data)] = data
    link.buffer_updated(len(data))


async def a_link(connect: bool = True) -> tuple[Link, FakeTransport, Writer]:
    writer = Writer(asyncio.get_running_loop())
    link = Link(Router(RouterConfig()), writer, LinkSettings(Limits()), set(), "tcp")
    transport = FakeTransport(1883)
    link.connection_made(transport)  # type: ignore[arg-type]
    if connect:
        feed(link, CONNECT)
        writer.flush()
        assert bytes(transport.data) == b"\x20\x02\x00\x00"
        transport.data.clear()
    return link, transport, writer


def test_a_lone_pingreq_is_answered_without_waiting_for_the_flush() -> None:
    async def scenario() -> None:
        link, transport, _writer = await a_link()
        before = link.router.counters.network_bytes_sent
        feed(link, PINGREQ)
        assert bytes(transport.data) == PINGRESP  # written during the read itself
        assert link.router.counters.network_bytes_sent == before + 2
        assert not transport.closed

    asyncio.run(scenario())


def test_pingreqs_read_together_each_get_an_answer() -> None:
    async def scenario() -> None:
        link, transport, writer = await a_link()
        feed(link, PINGREQ * 3)
        writer.flush()
        assert bytes(transport.data) == PINGRESP * 3

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("connect", "reads"),
    [
        (False, [PINGREQ]),  # before CONNECT [MQTT-3.1.0-1]
        (True, [b"\xc0\x01", b"\x00"]),  # two bytes, but one more is announced: malformed
    ],
    ids=["before-connect", "remaining-length"],
)
def test_a_pingreq_that_breaks_the_protocol_closes_the_connection(
    connect: bool, reads: list[bytes]
) -> None:
    async def scenario() -> None:
        link, transport, writer = await a_link(connect=connect)
        for data in reads:
            feed(link, data)
        writer.flush()
        assert transport.closed
        assert PINGRESP not in bytes(transport.data)

    asyncio.run(scenario())


def test_pingresp_waits_behind_a_held_acknowledgement() -> None:
    async def scenario() -> None:
        class Gate:  # a store that has committed batch 0 and is writing batch 1
            committed = 0

            def target(self) -> int:
                return 1

            def after_read(self) -> None:
                return None

        link, transport, writer = await a_link()
        writer.gate = Gate()  # type: ignore[assignment]
        link._held.append((1, b"\x40\x02\x00\x07"))  # a PUBACK waiting for batch 1
        feed(link, PINGREQ)
        writer.flush()
        assert bytes(transport.data) == b""  # nothing overtakes the held PUBACK
        assert link._held[-1][1] == PINGRESP

    asyncio.run(scenario())
