"""Acknowledgement gating: a link holds PUBACK / PUBREC / PUBCOMP / SUBACK until every
change logged before it is committed, keeps the connection's order behind a held packet,
and sends at once when nothing is pending.

A real Link, Router, Writer and Committer on an event loop; the transport records bytes
and the store is a stand-in whose commits the test completes by hand. The loop is only
turned (asyncio.sleep(0)), never waited on for time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pytbmq.changes import Change, StoredState
from pytbmq.link import Link, LinkSettings, Writer
from pytbmq.protocol.codec import decode, encode
from pytbmq.protocol.connection import Limits
from pytbmq.protocol.packets import (
    Connect,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
)
from pytbmq.router import Router
from pytbmq.storage.committer import Committer


class Transport:
    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        return None

    def packets(self, version: int = 4) -> list[Any]:
        out = []
        offset = 0
        while offset < len(self.data):
            result = decode(bytes(self.data), version, 1 << 20, offset)
            assert result is not None
            packet, offset = result
            out.append(packet)
        self.data.clear()
        return out


class ManualStore:
    name = "manual"
    durable = True
    location = "test"
    committed_seq = 0

    def __init__(self) -> None:
        self.batches: list[tuple[int, list[Change]]] = []
        self.on_committed: Callable[[int], None] | None = None

    async def open(self, on_committed: Callable[[int], None]) -> StoredState:
        self.on_committed = on_committed
        return StoredState()

    def submit(self, seq: int, changes: list[Change]) -> None:
        self.batches.append((seq, changes))

    def commit_all(self, notify: bool = True) -> None:
        """Everything submitted is durable; `notify=False` leaves the callback pending,
        as while the writer thread's notification waits for the loop."""
        self.committed_seq = self.batches[-1][0]
        if notify:
            assert self.on_committed is not None
            self.on_committed(self.committed_seq)

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None


async def turns(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


class Harness:
    def __init__(self, loop: asyncio.AbstractEventLoop, gated: bool = True) -> None:
        self.router = Router()
        self.writer = Writer(loop)
        self.store = ManualStore()
        if gated:
            committer = Committer(self.router, self.store, loop)
            self.writer.gate = committer
            self.store.on_committed = committer.committed_up_to

    def link(self, client_id: str, expiry: int = 0) -> tuple[Link, Transport]:
        link = Link(self.router, self.writer, LinkSettings(Limits()), set(), "test")
        transport = Transport()
        link.connection_made(transport)  # type: ignore[arg-type]
        props_version = 4
        connect = Connect(props_version, client_id, clean_start=expiry == 0)
        feed(link, encode(connect, props_version))
        return link, transport


def feed(link: Link, data: bytes) -> None:
    buf = link.get_buffer(len(data))
    buf[: len(data)] = data
    link.buffer_updated(len(data))


def publish(link: Link, topic: str, pid: int, qos: int = 1) -> None:
    feed(link, encode(Publish(topic, b"x", qos=qos, packet_id=pid), 4))


def test_puback_waits_for_the_commit_and_later_acks_keep_their_order() -> None:
    async def scenario() -> None:
        h = Harness(asyncio.get_running_loop())
        sub, _sub_t = h.link("subscriber", expiry=1)  # 3.1.1 clean session 0: persistent
        feed(sub, encode(Subscribe(1, (Subscription("stored/t", 1),)), 4))
        await turns()
        assert h.store.batches  # the session and its subscription
        h.store.commit_all()
        await turns()
        sub.connection_lost(None)  # offline: messages get queued and stored
        await turns()
        h.store.commit_all()

        pub, pub_t = h.link("publisher")
        await turns()
        pub_t.packets()  # CONNACK
        before = len(h.store.batches)
        publish(pub, "stored/t", 1)  # matches a persistent session: stored
        publish(pub, "nobody/here", 2)  # nothing stored, but must not overtake PUBACK 1
        await turns()
        assert pub_t.packets() == []
        assert len(h.store.batches) == before + 1  # handed over right after the read
        h.store.commit_all()
        await turns()
        assert pub_t.packets() == [PubAck(1), PubAck(2)]
        publish(pub, "nobody/here", 3)  # nothing pending at all: immediate
        await turns()
        assert pub_t.packets() == [PubAck(3)]

    asyncio.run(scenario())


def test_qos2_pubrec_and_pubcomp_wait_for_the_commit() -> None:
    async def scenario() -> None:
        h = Harness(asyncio.get_running_loop())
        pub, pub_t = h.link("persistent-publisher", expiry=1)
        await turns()
        h.store.commit_all()
        await turns()
        pub_t.packets()
        publish(pub, "any/topic", 7, qos=2)  # the incoming id is stored: IN_PUT
        await turns()
        assert pub_t.packets() == []
        h.store.commit_all()
        await turns()
        assert pub_t.packets() == [PubRec(7)]
        feed(pub, encode(PubRel(7), 4))  # IN_DEL: PUBCOMP waits too
        await turns()
        assert pub_t.packets() == []
        h.store.commit_all()
        await turns()
        assert pub_t.packets() == [PubComp(7)]

    asyncio.run(scenario())


def test_suback_of_a_persistent_session_waits_for_the_commit() -> None:
    async def scenario() -> None:
        h = Harness(asyncio.get_running_loop())
        link, t = h.link("s", expiry=1)
        await turns()
        h.store.commit_all()
        await turns()
        t.packets()
        feed(link, encode(Subscribe(3, (Subscription("a/b", 1),)), 4))
        await turns()
        assert t.packets() == []
        h.store.commit_all()
        await turns()
        assert t.packets() == [SubAck(3, (1,))]

    asyncio.run(scenario())


def test_held_packets_of_a_closed_connection_are_dropped() -> None:
    async def scenario() -> None:
        h = Harness(asyncio.get_running_loop())
        sub, _ = h.link("subscriber", expiry=1)
        feed(sub, encode(Subscribe(1, (Subscription("t", 1),)), 4))
        await turns()
        h.store.commit_all()
        sub.connection_lost(None)
        pub, pub_t = h.link("publisher")
        await turns()
        pub_t.packets()
        publish(pub, "t", 1)
        await turns()
        pub.connection_lost(None)
        h.store.commit_all()
        await turns()
        assert pub_t.packets() == []

    asyncio.run(scenario())


def test_without_a_gate_acks_go_out_at_once() -> None:
    async def scenario() -> None:
        h = Harness(asyncio.get_running_loop(), gated=False)
        pub, pub_t = h.link("publisher")
        await turns()
        pub_t.packets()
        publish(pub, "t", 1)
        await turns()
        assert pub_t.packets() == [PubAck(1)]
        assert h.store.batches == []

    asyncio.run(scenario())


def test_commits_are_picked_up_between_reads_without_waiting_for_the_callback() -> None:
    async def scenario() -> None:
        h = Harness(asyncio.get_running_loop())
        sub, _ = h.link("subscriber", expiry=1)
        feed(sub, encode(Subscribe(1, (Subscription("t", 1),)), 4))
        await turns()
        h.store.commit_all()
        sub.connection_lost(None)
        await turns()
        h.store.commit_all()
        pub, pub_t = h.link("publisher")
        await turns()
        pub_t.packets()
        publish(pub, "t", 1)
        await turns()  # handed to the store at the end of the turn
        assert pub_t.packets() == []
        h.store.commit_all(notify=False)  # durable, the loop not told yet
        feed(pub, encode(PingReq(), 4))  # any read on any link picks it up
        assert pub_t.packets() == [PubAck(1), PingResp()]  # written at once, in order

    asyncio.run(scenario())
