"""Write the seed inputs of the fuzz targets into tests/fuzz/corpus/<target>/seed-*.

Valid sessions built with pytbmq's own encoder, in the layouts tests/fuzz/harness.py
reads, so that the fuzzer starts past CONNECT: MQTT 3.1, 3.1.1 and 5 clients that
subscribe, publish at every QoS, acknowledge, use topic aliases and shared subscriptions,
take over each other's sessions, and reconnect to persistent sessions; WebSocket upgrade
requests and frame sequences. scripts/fuzz runs this when a target's corpus is empty;
running it again only rewrites the seed-* files.

Usage: python tests/fuzz/make_seeds.py [CORPUS_ROOT]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pytbmq.protocol.codec import encode
from pytbmq.protocol.packets import (
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PingReq,
    Properties,
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

ROOT = Path(__file__).resolve().parent / "corpus"


def wire(version: int, *packets: Packet) -> bytes:
    return b"".join(encode(p, version) for p in packets)


# ----------------------------------------------------------------------------- decoder


def decoder_seeds() -> dict[str, bytes]:
    props5 = Properties(
        payload_format_indicator=1,
        message_expiry_interval=30,
        content_type="text/plain",
        response_topic="r/1",
        correlation_data=b"\x01\x02",
        topic_alias=3,
        user_properties=(("k", "v"), ("k", "w")),
    )
    samples: dict[int, list[Packet]] = {
        4: [
            Connect(4, "c1", True, 30, Will("w/t", b"bye", 1, True), "user", b"pw"),
            ConnAck(True, 0),
            Publish("a/b", b"hello", 0),
            Publish("a/b", b"x" * 200, 1, True, True, 7),
            PubAck(7),
            PubRec(8),
            PubRel(8),
            PubComp(8),
            Subscribe(9, (Subscription("a/#", 1), Subscription("+/b", 2))),
            SubAck(9, (1, 0x80)),
            Unsubscribe(10, ("a/#", "+/b")),
            UnsubAck(10),
            PingReq(),
            Disconnect(),
        ],
        3: [Connect(3, "c31", False, 10, protocol_name="MQIsdp"), ConnAck(False, 0x85)],
        5: [
            Connect(
                5,
                "c5",
                False,
                60,
                Will("w/5", b"x", 2, False, Properties(will_delay_interval=5)),
                "u",
                b"p",
                Properties(
                    session_expiry_interval=300,
                    receive_maximum=5,
                    maximum_packet_size=2048,
                    topic_alias_maximum=4,
                    request_problem_information=0,
                    request_response_information=1,
                    authentication_method="SCRAM-SHA-256",
                    authentication_data=b"n,,n=u,r=abc",
                ),
            ),
            ConnAck(
                True,
                0,
                Properties(
                    assigned_client_identifier="x",
                    server_keep_alive=20,
                    maximum_qos=1,
                    retain_available=0,
                    wildcard_subscription_available=1,
                    subscription_identifier_available=1,
                    shared_subscription_available=1,
                    reason_string="ok",
                    server_reference="s",
                    response_information="resp",
                ),
            ),
            Publish("a/b", b"payload", 2, False, False, 11, props5),
            Publish("", b"", 1, False, False, 12, Properties(topic_alias=3)),
            Publish(
                "s/1", b"", 0, False, False, None, Properties(subscription_identifiers=(1, 300))
            ),
            PubAck(11, 0x10, Properties(reason_string="none")),
            PubRec(11, 0x80),
            PubRel(11, 0x92, Properties(user_properties=(("a", "b"),))),
            PubComp(11),
            Subscribe(
                13,
                (Subscription("a/#", 2, True, True, 2), Subscription("$share/g/x/+", 1)),
                Properties(subscription_identifiers=(77,)),
            ),
            SubAck(13, (2, 0x8F)),
            Unsubscribe(14, ("a/#",), Properties(user_properties=(("u", "v"),))),
            UnsubAck(14, (0, 0x11)),
            Disconnect(0x04, Properties(session_expiry_interval=0, reason_string="bye")),
            Auth(0x18, Properties(authentication_method="SCRAM-SHA-256", authentication_data=b"c")),
            Auth(),
        ],
    }
    seeds: dict[str, bytes] = {}
    for version, packets in samples.items():
        sel = (3, 4, 5).index(version) + 3 * 6  # the largest max_size, bytes buffer
        seeds[f"v{version}-all"] = bytes((sel,)) + wire(version, *packets)
        for i, packet in enumerate(packets):
            seeds[f"v{version}-{i:02d}-{type(packet).__name__}"] = bytes((sel,)) + wire(
                version, packet
            )
    seeds["v5-memoryview"] = bytes((2 + 3 * 6 + 42,)) + wire(5, *samples[5][2:5])
    return seeds


# ----------------------------------------------------------------------------- link

# The two configuration bytes of a link input (see harness.World).
DEFAULT_CONFIG = bytes((0b0111_1111, 0b0010_0011))  # 64 KiB, big limits, aliases for >= 16
TIGHT_CONFIG = bytes((0b1101_0000, 0b0101_0001))  # 96 B, receive max 1, queue 3, aliases >= 4


def data(slot: int, payload: bytes) -> bytes:
    """One data operation per packet-sized piece (n <= 255)."""
    out = bytearray()
    for i in range(0, len(payload), 255):
        piece = payload[i : i + 255]
        out += bytes((slot, len(piece))) + piece
    return bytes(out)


def rest(slot: int, payload: bytes) -> bytes:
    return bytes((slot, 0)) + payload


def drop(slot: int, clean: bool = True) -> bytes:
    return bytes(((4 << 1) | slot | (0x10 if clean else 0),))


TURN = bytes((5 << 1,))
COMMIT = bytes(((5 << 1) | 0x10,))  # the durable store commits, then a loop turn


def timer(slot: int) -> bytes:
    return bytes(((7 << 1) | slot | 0x10,))


def expire(steps: int) -> bytes:
    return bytes((7 << 1, steps))


def link_seeds() -> dict[str, bytes]:
    v4 = 4
    sub4 = Subscribe(1, (Subscription("a/#", 2), Subscription("$share/g/a/+", 1)))
    session4 = wire(
        v4,
        Connect(v4, "c1", True, 30, Will("w/c1", b"gone", 1, False)),
        sub4,
        Publish("a/b", b"retained", 1, True, False, 2),
        Publish("a/c", b"q0", 0),
        Publish("a/d", b"q2", 2, False, False, 3),
        PubRel(3),
        PubAck(1),
        PubRec(2),
        PubComp(2),
        PingReq(),
        Unsubscribe(4, ("a/#",)),
        Disconnect(),
    )
    seeds = {
        "v311-one-stream": DEFAULT_CONFIG + rest(0, session4),
        "v311-packet-per-read": DEFAULT_CONFIG
        + b"".join(data(0, encode(p, v4)) for p in _packets(v4, session4)),
        "v31-mqisdp": DEFAULT_CONFIG
        + rest(0, wire(3, Connect(3, "c31", True, 0, protocol_name="MQIsdp"), sub4, PingReq())),
    }
    props = Properties(
        session_expiry_interval=120,
        receive_maximum=2,
        topic_alias_maximum=3,
        maximum_packet_size=300,
        request_response_information=1,
    )
    will5 = Will("w/5", b"late", 1, True, Properties(will_delay_interval=30))
    connect5 = Connect(5, "c5", False, 20, will5, None, None, props)
    sub5 = Subscribe(
        1,
        (
            Subscription("t/#", 2, False, True, 0),
            Subscription("$share/grp/t/+", 1),
            Subscription("t/long/topic/name/for/aliases/#", 1, True, False, 1),
        ),
        Properties(subscription_identifiers=(5,)),
    )
    pubs5 = [
        Publish(
            "t/long/topic/name/for/aliases/x",
            b"alias",
            1,
            False,
            False,
            2,
            Properties(topic_alias=1),
        ),
        Publish("", b"again", 0, False, False, None, Properties(topic_alias=1)),
        Publish("t/x", b"\xff", 1, True, False, 3, Properties(payload_format_indicator=1)),
        Publish("t/y", b"exp", 2, True, False, 4, Properties(message_expiry_interval=5)),
        PubRel(4),
    ]
    seeds["v5-one-stream"] = DEFAULT_CONFIG + rest(
        0,
        wire(
            5,
            connect5,
            sub5,
            *pubs5,
            PubAck(1),
            PubRec(2),
            PubComp(2),
            Unsubscribe(5, ("t/#", "nope")),
            Disconnect(0x04, Properties(session_expiry_interval=60)),
        ),
    )
    # Two clients: a subscriber (slot 0) and a publisher (slot 1); the subscriber
    # acknowledges, drops, comes back to its persistent session; the publisher's id is
    # then taken over.
    sub_connect = Connect(5, "sub", False, 10, None, None, None, props)
    pub_connect = Connect(4, "pub", True, 5, Will("t/will", b"w", 2, True))
    two = bytearray(TIGHT_CONFIG)
    two += data(0, wire(5, sub_connect, sub5))
    two += data(1, wire(4, pub_connect))
    for i in range(1, 5):
        two += data(
            1, wire(4, Publish(f"t/{i}", bytes(i), i % 3, i == 2, False, i if i % 3 else None))
        )
    two += TURN
    two += data(0, wire(5, PubAck(1), PubRec(2), PubComp(2), PubAck(3)))
    two += drop(0, clean=False)
    two += data(1, wire(4, Publish("t/5", b"while away", 1, False, False, 9)))
    two += data(0, wire(5, Connect(5, "sub", False, 10, None, None, None, props)))
    two += TURN
    two += data(1, wire(4, Connect(4, "pub", False, 5)))  # second CONNECT: protocol error
    two += data(1, wire(4, Connect(4, "sub", True, 5)))  # takes over "sub"
    two += timer(1)
    two += expire(255)
    seeds["two-clients"] = bytes(two)
    # Keep-alive timeout with a delayed will, then expiry.
    ka = bytearray(DEFAULT_CONFIG)
    ka += data(0, wire(5, connect5))
    ka += data(1, wire(4, Connect(4, "watch", True, 0), Subscribe(1, (Subscription("w/#", 1),))))
    ka += timer(0)
    ka += expire(1)
    ka += TURN
    seeds["keepalive-will"] = bytes(ka)
    # Flow control: a paused subscriber, QoS 1 queued behind receive maximum.
    flow = bytearray(TIGHT_CONFIG)
    flow += data(0, wire(4, Connect(4, "slow", False, 0), Subscribe(1, (Subscription("q", 1),))))
    flow += bytes(((6 << 1) | 0x10,))  # pause slot 0
    flow += data(1, wire(4, Connect(4, "fast", True, 0)))
    for i in range(1, 6):
        flow += data(1, wire(4, Publish("q", bytes((i,)), 1, False, False, i)))
    flow += bytes((6 << 1,))  # resume slot 0
    flow += data(0, wire(4, PubAck(1), PubAck(2)))
    seeds["flow-control"] = bytes(flow)
    # A durable store (config byte 1 & 0x80): acks wait for commits, the change log must
    # mirror the router. Persistent sessions go offline, get messages queued, come back.
    durable = bytearray((DEFAULT_CONFIG[0], DEFAULT_CONFIG[1] | 0x80))
    durable += data(
        0, wire(4, Connect(4, "keep", False, 0), Subscribe(1, (Subscription("d/#", 2),)))
    )
    durable += COMMIT
    durable += data(1, wire(5, Connect(5, "p5", False, 0, None, None, None, props), sub5))
    durable += data(1, wire(5, Publish("d/1", b"one", 2, True, False, 1), PubRel(1)))
    durable += drop(0)
    durable += data(1, wire(5, Publish("d/2", b"two", 1, False, False, 2)))
    durable += data(1, wire(5, Publish("d/3", b"three", 2, False, False, 3)))
    durable += COMMIT
    durable += data(0, wire(4, Connect(4, "keep", False, 0)))
    durable += data(0, wire(4, PubRec(1), PubAck(2), PubComp(1)))
    durable += TURN + COMMIT
    durable += data(
        1, wire(5, Unsubscribe(9, ("t/#",)), Disconnect(0, Properties(session_expiry_interval=0)))
    )
    durable += data(0, wire(4, Connect(4, "keep", True, 0)))
    durable += COMMIT + expire(255)
    seeds["durable"] = bytes(durable)
    for name in ("two-clients", "keepalive-will", "flow-control", "v5-one-stream"):
        blob = seeds[name]
        seeds[f"{name}-durable"] = bytes((blob[0], blob[1] | 0x80)) + blob[2:]
    # Refusals: bad protocol level, a packet before CONNECT, an empty 3.1 client id.
    seeds["refusals"] = (
        DEFAULT_CONFIG
        + data(0, b"\x10\x0a\x00\x04MQTT\x06\x02\x00\x0a\x00\x00")
        + data(1, wire(4, PingReq()))
        + data(0, wire(3, Connect(3, "", True, 0, protocol_name="MQIsdp")))
        + data(1, wire(5, Connect(5, "", False, 0)))
    )
    return seeds


def _packets(version: int, stream: bytes) -> list[Packet]:
    from pytbmq.protocol.codec import decode

    out: list[Packet] = []
    offset = 0
    while offset < len(stream):
        result = decode(stream, version, 1 << 20, offset)
        assert result is not None
        packet, offset = result
        out.append(packet)
    return out


# ----------------------------------------------------------------------------- websocket


def client_frame(
    payload: bytes, opcode: int = 0x2, fin: bool = True, mask: bytes = b"\x11\x22\x33\x44"
) -> bytes:
    n = len(payload)
    head = bytes((opcode | (0x80 if fin else 0),))
    if n < 126:
        head += bytes((0x80 | n,))
    elif n < 65536:
        head += bytes((0x80 | 126,)) + n.to_bytes(2, "big")
    else:
        head += bytes((0x80 | 127,)) + n.to_bytes(8, "big")
    masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
    return head + mask + masked


def websocket_seeds() -> dict[str, bytes]:
    from fuzz.harness import UPGRADE_REQUEST

    seeds: dict[str, bytes] = {
        "handshake-ok": b"\x00" + UPGRADE_REQUEST,
        "handshake-proxy": b"\x20"
        + UPGRADE_REQUEST.replace(
            b"\r\n\r\n", b"\r\nX-Real-IP: [::1]:8080\r\nOrigin: https://a.example/\r\n\r\n"
        ),
        "handshake-absolute": b"\x04"
        + UPGRADE_REQUEST.replace(b"GET /mqtt ", b"GET http://h:80/?q=1#f "),
        "handshake-bad": b"\x00POST /x HTTP/1.0\r\nUpgrade: h2c\r\n bad\r\n\r\n",
    }
    mqtt = wire(4, Connect(4, "ws1", True, 30), Subscribe(1, (Subscription("a/#", 1),)))
    mqtt += wire(4, Publish("a/b", b"over ws", 1, True, False, 2), PingReq())
    frames = (
        client_frame(mqtt[:7], fin=False)
        + client_frame(b"", 0x9)
        + client_frame(mqtt[7:20], 0x0, fin=False)
        + client_frame(mqtt[20:], 0x0)
        + client_frame(b"ping", 0x9)
        + client_frame(wire(4, PubAck(1)))
        + client_frame(b"x" * 300)
        + client_frame((1000).to_bytes(2, "big") + b"bye", 0x8)
    )
    seeds["frames"] = b"\x15\x07" + frames
    seeds["frames-too-big"] = b"\x11\x00" + client_frame(b"y" * 2000) + frames
    seeds["frames-errors"] = b"\x01\x03" + client_frame(b"t", 0x1) + client_frame(b"", 0x3)
    seeds["adapter"] = b"\x6a" + DEFAULT_CONFIG + b"\x05" + frames
    seeds["adapter-whole"] = b"\x6a" + DEFAULT_CONFIG + b"\x00" + frames
    seeds["adapter-raw-request"] = b"\x6b" + DEFAULT_CONFIG + b"\x00" + UPGRADE_REQUEST + frames
    return seeds


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    for target, seeds in (
        ("decoder", decoder_seeds()),
        ("link", link_seeds()),
        ("websocket", websocket_seeds()),
    ):
        directory = root / target
        directory.mkdir(parents=True, exist_ok=True)
        for name, blob in seeds.items():
            assert len(blob) <= 4096, (target, name, len(blob))
            (directory / f"seed-{name}").write_bytes(blob)
        print(f"{directory}: {len(seeds)} seeds", file=sys.stderr)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
