"""What the fuzz targets do with one input, without atheris.

The atheris scripts (tests/fuzz/fuzz_*.py) are thin wrappers around `run_decoder`,
`run_link` and `run_websocket`; tests/unit/test_fuzz_corpus.py replays the committed
corpus through the same functions, so the normal suite needs no atheris. Each function
returns when pytbmq behaved and raises when it did not: an exception that is not part of
the ProtocolError family escaped, an "internal error" (or any ERROR) log record was
emitted, an exception was raised in an event-loop callback, or an invariant checked here
broke (AssertionError). The same input always does the same thing: no randomness, no
clock-dependent branches beyond what pytbmq itself reads.

Input layouts (the first bytes steer the harness, the rest is the wire):

decoder
    byte 0: protocol level (3, 4, 5), maximum packet size and buffer type
    (bytes / bytearray / memoryview, as the link passes all three); the rest is decoded
    packet after packet from offset 0 until it is incomplete or a ProtocolError.
link
    bytes 0-1: broker limits (packet size, receive maximum, topic aliases, session
    expiry cap, queue limit, ...) and, with byte 1 & 0x80, a durable store: acks are
    gated on commits and the router's change log is applied to a model store that must
    mirror the router's persistent state; then operations, each one header byte `h`:
    slot = h & 1 (two client connections), op = (h >> 1) & 7:
    0-3 the next byte `n` then n bytes (n = 0: all the rest) go to that slot's link in
    one buffer_updated (a link is opened on first use and after one is lost);
    4 the connection drops (connection_lost); 5 one event-loop turn (the Writer flushes),
    with h & 0x10 the store first commits everything submitted;
    6 pause_writing (h & 0x10) or resume_writing; 7 with h & 0x10: the link's pending
    timer fires now with its clock far ahead (keep-alive / CONNECT timeout), without:
    router.expire(now + next byte * 256 s) (session expiry, delayed wills).
websocket
    byte 0: mode (& 3) and options; 0: the HTTP upgrade (parse_request, negotiate,
    client_address, http_error); 1: FrameReader fed the rest whole and in pieces, which
    must agree; 2: a WsAdapter with a real Link and Router fed a valid upgrade request
    followed by the rest, in pieces; 3: the same without the built-in request.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from pytbmq.changes import (
    IN_DEL,
    IN_PUT,
    MSG_DEL,
    MSG_PUT,
    OUT_DEL,
    OUT_PUT,
    PUBLISH_SENT,
    PUBREL_SENT,
    QUEUED,
    RET_DEL,
    RET_PUT,
    SES_DEL,
    SES_PUT,
    SUB_DEL,
    SUB_PUT,
    Change,
    StoredState,
)
from pytbmq.errors import PacketTooLarge, ProtocolError
from pytbmq.link import Link, LinkSettings, Writer
from pytbmq.protocol.codec import decode, encode
from pytbmq.protocol.connection import Limits
from pytbmq.protocol.packets import (
    Auth,
    ConnAck,
    Disconnect,
    Packet,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    UnsubAck,
)
from pytbmq.protocol.websocket import (
    FrameReader,
    HandshakeError,
    WsPolicy,
    client_address,
    http_error,
    negotiate,
    parse_request,
)
from pytbmq.router import Router, RouterConfig
from pytbmq.session import NEVER_EXPIRES
from pytbmq.storage.committer import Committer
from pytbmq.wsadapter import WsAdapter, WsSettings, parse_networks

__all__ = ["close_loop", "run_decoder", "run_link", "run_websocket"]

BIG = 268_435_460  # larger than any packet
FAR_FUTURE = float(1 << 34)  # seconds: past every session expiry and will delay


class Reader:
    """Consumes an input from the front; reads past the end give zeros / empty bytes."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        b = self.data[self.pos]
        self.pos += 1
        return b

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += len(chunk)
        return chunk

    def rest(self) -> bytes:
        return self.take(len(self.data))


def pieces(data: bytes, seed: int) -> Iterator[bytes]:
    """`data` cut into pieces of 1..64 bytes chosen by `seed` (0: in one piece)."""
    if not seed:
        if data:
            yield data
        return
    x = seed
    pos = 0
    while pos < len(data):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        n = 1 + ((x >> 16) & 63)
        yield data[pos : pos + n]
        pos += n


# ======================================================================== decoder

DECODER_MAX_SIZES = (2, 5, 127, 130, 1024, 65536, BIG)


def run_decoder(data: bytes) -> None:
    """Decode `data[1:]` packet after packet; only ProtocolError may escape `decode`, and
    every decoded packet must re-encode to bytes that decode to an equal packet."""
    if not data:
        return
    sel = data[0]
    version = (3, 4, 5)[sel % 3]
    max_size = DECODER_MAX_SIZES[(sel // 3) % len(DECODER_MAX_SIZES)]
    kind = (sel // 21) % 3
    raw = data[1:]
    buf: bytes | bytearray | memoryview
    if kind == 0:
        buf = raw
    elif kind == 1:
        buf = bytearray(raw)
    else:
        buf = memoryview(bytearray(raw))
    offset = 0
    while True:
        try:
            result = decode(buf, version, max_size, offset)
        except ProtocolError:
            return
        if result is None:
            return
        packet, end = result
        assert offset < end <= len(raw), f"decode returned end {end} for offset {offset}"
        check_packet(raw[offset:end], packet, version)
        offset = end


def check_packet(wire: bytes, packet: Packet, version: int) -> None:
    """Properties of one packet `decode` accepted from `wire` (exactly its bytes)."""
    size = len(wire)
    # The buffer type, the offset and a tight max_size make no difference.
    again = decode(wire, version, size)
    assert again is not None and again[1] == size and again[0] == packet, (
        f"{packet!r} decodes differently from a bytes copy: {again!r}"
    )
    # Any strict prefix is incomplete, and a limit one byte short is PacketTooLarge.
    assert decode(wire[:-1], version, BIG) is None, "a strict prefix was not incomplete"
    try:
        decode(wire, version, size - 1)
    except PacketTooLarge:
        pass
    else:
        raise AssertionError(f"max_size {size - 1} did not stop a {size}-byte packet")
    # Round trip: what the decoder accepted, the encoder writes back, canonically. The
    # wire form itself need not come back (property order, the short forms of the acks
    # and DISCONNECT / AUTH, 3.1 CONNACK flags), the packet value must.
    encoded = encode(packet, version)
    back = decode(encoded, version, BIG)
    assert back is not None and back[1] == len(encoded), f"re-encoded {packet!r} is incomplete"
    assert back[0] == packet, f"round trip changed the packet: {packet!r} -> {back[0]!r}"
    assert encode(back[0], version) == encoded, f"encoding of {packet!r} is not canonical"


# ======================================================================== shared: loop, logs

_LOOP: asyncio.AbstractEventLoop | None = None
_LOOP_PROBLEMS: list[str] = []


def _on_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    _LOOP_PROBLEMS.append(
        f"exception in an event-loop callback: {context.get('message')}: "
        f"{context.get('exception')!r}"
    )


def _loop() -> asyncio.AbstractEventLoop:
    global _LOOP
    if _LOOP is None or _LOOP.is_closed():
        _LOOP = asyncio.new_event_loop()
        _LOOP.set_exception_handler(_on_loop_exception)
    return _LOOP


def close_loop() -> None:
    """Close the harness's event loop (the next run makes a new one)."""
    global _LOOP
    if _LOOP is not None and not _LOOP.is_closed():
        _LOOP.close()
    _LOOP = None


class _Alarm(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _watched() -> Iterator[None]:
    """Fail on ERROR records of the pytbmq loggers (the link's "internal error ..." is
    one) and on exceptions in event-loop callbacks; INFO lines are not even formatted."""
    logger = logging.getLogger("pytbmq")
    alarm = _Alarm()
    level = logger.level
    logger.setLevel(logging.WARNING)
    logger.addHandler(alarm)
    del _LOOP_PROBLEMS[:]
    try:
        yield
    finally:
        logger.removeHandler(alarm)
        logger.setLevel(level)
    if alarm.records:
        formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
        raise AssertionError(
            "pytbmq logged an error:\n" + "\n".join(formatter.format(r) for r in alarm.records)
        )
    if _LOOP_PROBLEMS:
        raise AssertionError("\n".join(_LOOP_PROBLEMS))


def _run(coro: Coroutine[Any, Any, None]) -> None:
    loop = _loop()
    with _watched():
        loop.run_until_complete(coro)


# ======================================================================== link

SERVER_PACKETS = (
    ConnAck,
    Publish,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    SubAck,
    UnsubAck,
    PingResp,
    Disconnect,
    Auth,
)


class FakeTransport:
    """Records what the broker writes; `closed` once it closes or aborts."""

    def __init__(self, port: int) -> None:
        self.data = bytearray()
        self.closed = False
        self.late_writes = 0
        self._peer = ("127.0.0.1", port)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closed:
            self.late_writes += 1
        self.data += data

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._peer if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        return None

    def get_write_buffer_size(self) -> int:
        return 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (0, 0)

    def is_reading(self) -> bool:
        return True

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None


def _pick(options: tuple[Any, ...], value: int) -> Any:
    return options[value % len(options)]


class World:
    """One broker (a Router and a Writer) and the links of one fuzz input."""

    def __init__(self, loop: asyncio.AbstractEventLoop, a: int, b: int) -> None:
        self.router = Router(
            RouterConfig(
                queue_limit=_pick((1, 3, 100, 10000), b),
                queue_limit_app=_pick((1, 3, 100, 10000), b),
                max_session_expiry=_pick((60, NEVER_EXPIRES), a >> 6),
                root_wildcard_allowed=not b & 4,
                topic_max_segments=3 if b & 8 else 0,
            )
        )
        limits = Limits(
            max_packet_size=_pick((96, 512, 4096, 65536), a),
            receive_maximum=_pick((1, 2, 10, 1000), a >> 2),
            topic_alias_maximum=_pick((0, 1, 4, 10), a >> 4),
            max_keep_alive=_pick((600, 5), b >> 6),
            max_session_expiry=_pick((60, NEVER_EXPIRES), a >> 6),
            max_client_id_length_3_1=_pick((1024, 4), b >> 6),
            receive_maximum_3x=_pick((65535, 2), b >> 6),
            response_information="resp/" if a & 0x80 else "",
        )
        self.settings = LinkSettings(limits, topic_alias_min_length=_pick((1, 4, 16, 50), b >> 4))
        self.writer = Writer(loop)
        self.store: ModelStore | None = None
        self.committer: Committer | None = None
        if b & 0x80:
            self.store = ModelStore()
            self.committer = Committer(self.router, self.store, loop)  # type: ignore[arg-type]
            self.store.on_committed = self.committer.committed_up_to
            self.writer.gate = self.committer
        self.registry: set[Link] = set()
        self.opened = 0
        # (link, transport) per client slot, None until used
        self.slots: list[tuple[Link, FakeTransport] | None] = [None, None]
        self.all_links: list[tuple[Link, FakeTransport]] = []

    def make_link(self) -> Link:
        return Link(self.router, self.writer, self.settings, self.registry, "fuzz")

    def open(self, slot: int) -> tuple[Link, FakeTransport]:
        entry = self.slots[slot]
        if entry is None:
            self.opened += 1
            link = self.make_link()
            transport = FakeTransport(40000 + self.opened)
            link.connection_made(transport)  # type: ignore[arg-type]
            entry = self.slots[slot] = (link, transport)
            self.all_links.append(entry)
        return entry

    def drop(self, slot: int, exc: Exception | None = None) -> None:
        entry = self.slots[slot]
        if entry is not None:
            self.slots[slot] = None
            link, transport = entry
            transport.closed = True
            link.connection_lost(exc)
            check_output(link, transport.data)

    def reap(self) -> None:
        """A link that closed its transport gets connection_lost, as asyncio would."""
        for slot, entry in enumerate(self.slots):
            if entry is not None and entry[1].closed:
                self.drop(slot)

    def commit(self) -> None:
        if self.store is not None:
            self.store.commit()

    def check(self) -> None:
        live = [e[0] for e in self.slots if e is not None]
        check_router(self.router, live, self.registry)
        for _link, transport in self.all_links:
            assert not transport.late_writes, "the broker wrote to a closed transport"
        if self.committer is not None and self.store is not None:
            self.committer.drain()  # as at the end of this loop turn
            self.store.check(self.router)


class ModelStore:
    """A store that keeps the change log applied to plain dicts, the way the SQLite store
    does (sessions by client id, SES_DEL wiping every row of its sid), and commits when
    told. `check` compares it with the router: what a restart would load must be exactly
    the router's persistent state."""

    name = "fuzz-model"
    durable = True
    location = "memory"

    def __init__(self) -> None:
        self.committed_seq = 0
        self.submitted = 0
        self.on_committed: Callable[[int], None] | None = None
        self.sessions: dict[str, Change] = {}
        self.subs: dict[tuple[int, str], tuple[Any, ...]] = {}
        self.msgs: dict[int, Any] = {}
        self.outs: dict[int, Change] = {}
        self.ins: set[tuple[int, int]] = set()
        self.rets: dict[str, Any] = {}

    async def open(self, on_committed: Callable[[int], None]) -> StoredState:
        self.on_committed = on_committed
        return StoredState()

    def submit(self, seq: int, changes: list[Change]) -> None:
        assert seq == self.submitted + 1, f"batch {seq} after {self.submitted}"
        self.submitted = seq
        for rec in changes:
            self._apply(rec)

    def _apply(self, rec: Change) -> None:
        kind = rec[0]
        if kind == SES_PUT:
            self.sessions[rec[1]] = rec
        elif kind == SES_DEL:
            self.sessions.pop(rec[1], None)
            sid = rec[2]
            self.subs = {k: v for k, v in self.subs.items() if k[0] != sid}
            self.outs = {k: v for k, v in self.outs.items() if v[2] != sid}
            self.ins = {k for k in self.ins if k[0] != sid}
        elif kind == SUB_PUT:
            self.subs[(rec[1], rec[2])] = tuple(rec[3:])
        elif kind == SUB_DEL:
            self.subs.pop((rec[1], rec[2]), None)
        elif kind == MSG_PUT:
            assert rec[1] not in self.msgs, f"message id {rec[1]} stored twice"
            self.msgs[rec[1]] = rec[2]
        elif kind == MSG_DEL:
            self.msgs.pop(rec[1], None)
        elif kind == OUT_PUT:
            assert rec[3] in self.msgs, f"row {rec[1]} refers to message {rec[3]}, not stored"
            self.outs[rec[1]] = rec
        elif kind == OUT_DEL:
            self.outs.pop(rec[1], None)
        elif kind == IN_PUT:
            self.ins.add((rec[1], rec[2]))
        elif kind == IN_DEL:
            self.ins.discard((rec[1], rec[2]))
        elif kind == RET_PUT:
            self.rets[rec[1].topic] = rec[1]
        elif kind == RET_DEL:
            self.rets.pop(rec[1], None)
        else:
            raise AssertionError(f"unknown change record {rec!r}")

    def commit(self) -> None:
        if self.submitted > self.committed_seq:
            self.committed_seq = self.submitted
            if self.on_committed is not None:
                self.on_committed(self.submitted)

    async def flush(self) -> None:
        self.commit()

    async def close(self) -> None:
        return None

    def check(self, router: Router) -> None:
        stored = {cid: s for cid, s in router.sessions.items() if s.stored}
        assert self.sessions.keys() == stored.keys(), (
            f"stored sessions {sorted(self.sessions)!r} != persistent {sorted(stored)!r}"
        )
        subs: dict[tuple[int, str], tuple[Any, ...]] = {}
        outs: dict[int, tuple[Any, ...]] = {}
        ins: set[tuple[int, int]] = set()
        for cid, session in router.sessions.items():
            everything = [*session.inflight_out.values(), *session.queue]
            if cid not in stored:
                assert all(not out.row for out in everything), f"{cid!r}: row, not stored"
                continue
            rec = self.sessions[cid]
            sid = session.sid
            if session.link is not None:
                will, due = session.will, None
            else:
                pending = router._pending_wills.get(cid)
                will, due = (pending.will, pending.due) if pending else (None, None)
            want = (
                cid,
                sid,
                session.protocol_version,
                session.expiry_interval,
                session.client_type,
                session.disconnected_at,
                will,
                session.will_delay,
                due,
            )
            assert tuple(rec[1:]) == want, f"stored session {rec[1:]!r} != {want!r}"
            for full, opts in session.subscriptions.items():
                subs[(sid, full)] = (
                    opts.qos,
                    opts.no_local,
                    opts.retain_as_published,
                    opts.retain_handling,
                    opts.sub_id,
                )
            for out in everything:
                assert out.row, f"{cid!r}: a queued or in-flight message has no stored row"
                pid = out.packet_id
                state = (
                    QUEUED if pid is None else PUBREL_SENT if out.awaiting_pubcomp else PUBLISH_SENT
                )
                outs[out.row] = (
                    sid,
                    out.message.store_id,
                    out.qos,
                    out.retain,
                    out.sub_ids,
                    out.shared,
                    pid,
                    state,
                    out.queued_at,
                )
            ins.update((sid, pid) for pid in session.inflight_in)
        assert self.subs == subs, f"stored subscriptions {self.subs!r} != {subs!r}"
        have = {row: tuple(rec[2:]) for row, rec in self.outs.items()}
        assert have == outs, f"stored rows {have!r} != {outs!r}"
        assert self.ins == ins, f"stored QoS 2 ids {self.ins!r} != {ins!r}"
        used = {rec[3] for rec in self.outs.values()}
        assert used == self.msgs.keys(), f"stored messages {sorted(self.msgs)!r}, used {used!r}"
        retained = dict(router.retained.items())
        assert self.rets.keys() == retained.keys(), f"retained {sorted(self.rets)!r}"
        assert all(self.rets[t] is m for t, m in retained.items()), "stale retained message"


def fire_timer(link: Link) -> None:
    """The link's pending timer fires now, its clock far ahead of the last read."""
    handle = link._timer
    if handle is None or handle.cancelled():
        return
    callback, args = handle._callback, handle._args  # type: ignore[attr-defined]
    handle.cancel()  # (clears both)
    link._last_rx = -1e12
    callback(*args)


async def _link_scenario(data: bytes) -> None:
    r = Reader(data)
    world = World(asyncio.get_running_loop(), r.byte(), r.byte())
    router = world.router
    while r.remaining():
        h = r.byte()
        slot = h & 1
        op = (h >> 1) & 7
        if op <= 3:
            n = r.byte()
            chunk = r.take(n) if n else r.rest()
            link, transport = world.open(slot)
            if not transport.closed:
                view = link.get_buffer(len(chunk))
                view[: len(chunk)] = chunk
                link.buffer_updated(len(chunk))
        elif op == 4:
            world.drop(slot, None if h & 0x10 else ConnectionResetError("fuzz"))
        elif op == 5:
            if h & 0x10:
                world.commit()
            await asyncio.sleep(0)
        elif op == 6:
            entry = world.slots[slot]
            if entry is not None:
                if h & 0x10:
                    entry[0].pause_writing()
                else:
                    entry[0].resume_writing()
        elif h & 0x10:
            entry = world.slots[slot]
            if entry is not None:
                fire_timer(entry[0])
        else:
            router.expire(time.time() + r.byte() * 256)
        world.reap()
        world.check()
    world.commit()
    await asyncio.sleep(0)
    world.reap()
    world.check()
    world.commit()
    for link, _transport in (e for e in world.slots if e is not None):
        assert not link._held, f"{link.client_id!r} still holds writes after a commit"
    for slot in range(len(world.slots)):
        world.drop(slot)
    await asyncio.sleep(0)
    world.check()
    check_offline(router, time.time())
    world.check()


def run_link(data: bytes) -> None:
    """Two clients' byte streams (and drops, timers, loop turns) through real Links and
    one Router; see the module docstring for the layout."""
    if len(data) < 2:
        return
    _run(_link_scenario(data))


def check_output(link: Link, data: bytes | bytearray) -> None:
    """Everything a link wrote must be whole, well-formed server packets: at most one
    CONNACK and first, nothing after a DISCONNECT or a refusing CONNACK, and no PUBLISH
    larger than the client's Maximum Packet Size."""
    version = link.version or 4
    data = bytes(data)
    offset = 0
    index = 0
    last: Packet | None = None
    while offset < len(data):
        try:
            result = decode(data, version, BIG, offset)
        except ProtocolError as err:
            raise AssertionError(
                f"the broker sent bytes its own codec rejects ({err}) at {offset}: "
                f"{data[offset : offset + 48]!r}"
            ) from err
        assert result is not None, f"the broker's output ends in a partial packet: {data!r}"
        packet, end = result
        assert isinstance(packet, SERVER_PACKETS), f"the broker sent {packet!r}"
        assert last is None or not (
            isinstance(last, Disconnect) or (isinstance(last, ConnAck) and last.reason_code)
        ), f"{packet!r} sent after {last!r}"
        assert not isinstance(packet, ConnAck) or index == 0, f"CONNACK not first: {packet!r}"
        max_out = link._max_out
        if isinstance(packet, Publish) and max_out is not None:
            assert end - offset <= max_out, f"PUBLISH of {end - offset} > {max_out} bytes"
        last = packet
        offset = end
        index += 1


def _trie_entries(router: Router) -> dict[tuple[str | None, str, str], Any]:
    """(group, filter, client id) -> options, read from the trie's nodes."""
    found: dict[tuple[str | None, str, str], Any] = {}
    stack: list[tuple[Any, tuple[str, ...]]] = [(router.subscriptions._root, ())]
    while stack:
        node, path = stack.pop()
        assert not path or not node.is_empty(), f"empty trie node left at {path!r}"
        topic_filter = "/".join(path)
        if node.subs is not None:
            assert node.subs, f"empty subscriber dict at {topic_filter!r}"
            for cid, opts in node.subs.items():
                found[(None, topic_filter, cid)] = opts
        if node.shared is not None:
            assert node.shared, f"empty shared dict at {topic_filter!r}"
            for name, group in node.shared.items():
                assert group.members, f"empty shared group {name!r} at {topic_filter!r}"
                assert group.name == name and group.topic_filter == topic_filter
                for cid, opts in group.members.items():
                    found[(name, topic_filter, cid)] = opts
        for level, child in node.children.items():
            stack.append((child, (*path, level)))
        if node.plus is not None:
            stack.append((node.plus, (*path, "+")))
        if node.hash is not None:
            stack.append((node.hash, (*path, "#")))
    return found


def check_router(router: Router, live: list[Link], registry: set[Link]) -> None:
    """The router's sessions, the trie and the links agree."""
    expected: dict[tuple[str | None, str, str], Any] = {}
    for cid, session in router.sessions.items():
        assert session.client_id == cid
        link = session.link
        if link is not None:
            assert isinstance(link, Link), f"session {cid!r} linked to {link!r}"
            assert link.session is session, f"session {cid!r}: its link has another session"
            assert not link._closing, f"session {cid!r} attached to a closing link"
            assert link in registry, f"session {cid!r} attached to a lost link"
        for full, opts in session.subscriptions.items():
            assert opts.session is session, f"{full!r} of {cid!r} points to another session"
            key = (opts.group, opts.topic_filter, cid)
            assert key not in expected, f"two subscriptions of {cid!r} share {key!r}"
            expected[key] = opts
        for pid, out in session.inflight_out.items():
            assert out.packet_id == pid and 0 < pid <= 0xFFFF, f"in-flight {pid} of {cid!r}"
        for out in session.queue:
            assert out.packet_id is None, f"queued message of {cid!r} has a packet id"
        assert all(0 < pid <= 0xFFFF for pid in session.inflight_in)
    found = _trie_entries(router)
    assert found.keys() == expected.keys(), (
        f"trie and sessions disagree: only in trie {sorted(found.keys() - expected.keys())!r}"
        f", only in sessions {sorted(expected.keys() - found.keys())!r}"
    )
    for key, opts in expected.items():
        assert found[key] is opts, f"trie holds stale options for {key!r}"
    assert len(router.subscriptions) == len(expected), "trie count is off"
    assert set(router._pending_wills) <= set(router.sessions), "pending will without session"
    for cid in router._expiry_at:
        session = router.sessions.get(cid)
        assert session is not None and session.link is None, f"expiry timer for {cid!r}"
    for link in live:
        session = link.session
        if session is not None:
            assert router.sessions.get(session.client_id) is session, (
                f"link {link.client_id!r} holds a session the router forgot"
            )
            assert session.link is link, f"link {link.client_id!r}: session has another link"


def check_offline(router: Router, now: float) -> None:
    """Every connection is gone: no session is linked, none with expiry 0 is left, and
    once every deadline has passed only sessions that never expire remain."""
    for cid, session in router.sessions.items():
        assert session.link is None, f"session {cid!r} still linked after every drop"
        assert session.expiry_interval > 0, f"session {cid!r} with expiry 0 outlived its link"
    router.expire(now + FAR_FUTURE)
    for cid, session in router.sessions.items():
        assert session.expiry_interval == NEVER_EXPIRES, f"session {cid!r} did not expire"
    assert not router._pending_wills, "a delayed will was never published"
    assert not router._expiry_at
    check_router(router, [], set())


# ======================================================================== websocket

WS_POLICIES = (
    WsPolicy(),
    WsPolicy(path="/", subprotocols=("mqtt",), allowed_origins=frozenset({"https://a.example"})),
)
WS_PROXIES = parse_networks("127.0.0.0/8,::1/128,10.0.0.0/8")
WS_PEERS = ("127.0.0.1", "10.1.2.3", "::1", "192.0.2.1")
WS_MAX_PAYLOADS = (0, 1, 125, 126, 200, 65535, 65536, 1 << 20)
UPGRADE_REQUEST = (
    b"GET /mqtt HTTP/1.1\r\n"
    b"Host: broker\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Protocol: mqtt\r\n"
    b"X-Forwarded-For: 203.0.113.9, 10.0.0.1\r\n"
    b"\r\n"
)


def run_websocket(data: bytes) -> None:
    """The WebSocket upgrade parser, the frame reader, or the whole adapter + link."""
    if not data:
        return
    sel = data[0]
    mode = sel & 3
    if mode == 0:
        _ws_handshake(sel, data[1:])
    elif mode == 1:
        r = Reader(data)
        r.byte()
        _ws_frames(sel, r.byte(), r.rest())
    else:
        _run(_ws_adapter(sel, data[1:], mode == 2))


def _ws_handshake(sel: int, data: bytes) -> None:
    try:
        request = parse_request(bytearray(data) if sel & 0x80 else data)
    except HandshakeError as err:
        _check_refusal(err)
        return
    if request is None:
        return
    assert 0 < request.size <= len(data), f"request size {request.size} of {len(data)} bytes"
    request.path  # noqa: B018  (a property that parses the target)
    proxies = WS_PROXIES if sel & 0x20 else ()
    address = client_address(_pick(WS_PEERS, sel >> 3), request, proxies)
    if address is not None:
        ipaddress.ip_address(address)
    policy = _pick(WS_POLICIES, sel >> 2)
    try:
        upgrade = negotiate(request, policy)
    except HandshakeError as err:
        _check_refusal(err)
        return
    assert upgrade.response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert upgrade.response.endswith(b"\r\n\r\n") and upgrade.subprotocol in policy.subprotocols


def _check_refusal(err: HandshakeError) -> None:
    assert 400 <= err.status < 500, f"handshake refused with status {err.status}"
    response = http_error(err)
    head, sep, _body = response.partition(b"\r\n\r\n")
    assert sep and head.startswith(f"HTTP/1.1 {err.status} ".encode()), response[:80]


def _ws_frames(sel: int, seed: int, data: bytes) -> None:
    """The same bytes read whole and in pieces give the same payload, control frames,
    error and closed flag."""
    max_payload = _pick(WS_MAX_PAYLOADS, sel >> 2)
    whole = FrameReader(max_payload)
    out_whole = b"".join(whole.feed(data))
    split = FrameReader(max_payload)
    out_split = bytearray()
    for piece in pieces(data, seed | 1):
        view: bytes | bytearray | memoryview = piece
        if sel & 0x40:
            view = memoryview(bytearray(piece))
        for chunk in split.feed(view):
            out_split += chunk
    assert out_whole == out_split, "payload differs when the frames arrive in pieces"
    assert whole.controls == split.controls, (whole.controls, split.controls)
    assert whole.error == split.error, (whole.error, split.error)
    assert whole.closed == split.closed
    for opcode, payload in whole.controls:
        assert opcode in (0x8, 0x9, 0xA) and len(payload) <= 125, (opcode, payload)
    assert len(out_whole) <= len(data)


async def _ws_adapter(sel: int, data: bytes, with_request: bool) -> None:
    r = Reader(data)
    world = World(asyncio.get_running_loop(), r.byte(), r.byte())
    seed = r.byte()
    stream = (UPGRADE_REQUEST if with_request else b"") + r.rest()
    links: list[Link] = []

    def make() -> Link:
        link = world.make_link()
        links.append(link)
        return link

    settings = WsSettings(
        "ws",
        _pick(WS_POLICIES, sel >> 2),
        max_payload=_pick(WS_MAX_PAYLOADS, sel >> 3),
        trusted_proxies=WS_PROXIES if sel & 0x40 else (),
    )
    adapter = WsAdapter(settings, make)
    raw = FakeTransport(40000)
    adapter.connection_made(raw)  # type: ignore[arg-type]
    for piece in pieces(stream, seed):
        if raw.closed:
            break
        view = adapter.get_buffer(len(piece))
        view[: len(piece)] = piece
        adapter.buffer_updated(len(piece))
        check_router(world.router, [link for link in links if link.session], world.registry)
    await asyncio.sleep(0)
    adapter.connection_lost(None)
    await asyncio.sleep(0)
    assert not raw.late_writes, "the adapter wrote to a closed transport"
    if links:
        check_output(links[0], _server_frames(bytes(raw.data)))
    check_offline(world.router, time.time())


def _server_frames(data: bytes) -> bytes:
    """The MQTT bytes in the server's side: the 101 response, then unmasked frames."""
    head = data.find(b"\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 101 ") and head > 0, data[:80]
    pos = head + 4
    out = bytearray()
    while pos < len(data):
        assert len(data) - pos >= 2, "truncated server frame header"
        b0, b1 = data[pos], data[pos + 1]
        assert b0 in (0x82, 0x88, 0x89, 0x8A) and not b1 & 0x80, f"server frame {b0:#x} {b1:#x}"
        length = b1
        pos += 2
        if length == 126:
            length = int.from_bytes(data[pos : pos + 2], "big")
            pos += 2
        elif length == 127:
            length = int.from_bytes(data[pos : pos + 8], "big")
            pos += 8
        assert pos + length <= len(data), "truncated server frame"
        if b0 == 0x82:
            out += data[pos : pos + length]
        else:
            assert length <= 125
        pos += length
        if b0 == 0x88:
            assert pos == len(data), "bytes after the server's close frame"
    return bytes(out)
