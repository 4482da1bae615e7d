"""Session state as plain data: what survives a client's reconnect.

A Session holds a client's subscriptions, its outgoing QoS 1/2 messages in flight and
queued, the QoS 2 packet ids it sent us and has not released yet, and its will. Only the
router mutates sessions (pytbmq.router); the link reads `session.link` to deliver.
No I/O, no clock: times are passed in.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pytbmq.protocol.packets import Properties, Will

if TYPE_CHECKING:
    from pytbmq.message import Message

NEVER_EXPIRES = 0xFFFFFFFF


class SessionLink(Protocol):
    """What the router needs from a connected client's link (pytbmq.link.Link)."""

    receive_maximum: int

    def send_publish(
        self,
        message: Message,
        qos: int,
        retain: bool,
        sub_ids: tuple[int, ...],
        packet_id: int | None,
        dup: bool,
        now: float,
    ) -> bool:
        """Send a PUBLISH; False when it cannot be sent (too large for the client)."""
        ...

    def send_pubrel(self, packet_id: int) -> None: ...

    def can_take_qos0(self) -> bool:
        """False while the link's outgoing buffer is over its high-water mark (a slow
        consumer): QoS 0 to it is dropped."""
        ...

    def writable(self) -> bool:
        """False while QoS 1/2 should wait in the session queue (the buffer is over its
        high-water mark, or this loop turn already handed over that much); the link
        calls `Router.link_writable` when it may take more."""
        ...

    def close_by_server(self, reason_code: int) -> None:
        """Send DISCONNECT (MQTT 5) with the reason and close the connection."""
        ...


class SubOptions:
    """One subscription of one session, as stored in the router's trie."""

    __slots__ = (
        "group",
        "no_local",
        "qos",
        "retain_as_published",
        "retain_handling",
        "session",
        "sub_id",
        "topic_filter",
    )

    def __init__(
        self,
        session: Session,
        topic_filter: str,
        group: str | None,
        qos: int,
        no_local: bool,
        retain_as_published: bool,
        retain_handling: int,
        sub_id: int | None,
    ) -> None:
        self.session = session
        self.topic_filter = topic_filter
        self.group = group
        self.qos = qos
        self.no_local = no_local
        self.retain_as_published = retain_as_published
        self.retain_handling = retain_handling
        self.sub_id = sub_id


class Outgoing:
    """A QoS 1/2 message for a session: queued (packet_id None) or in flight."""

    __slots__ = (
        "awaiting_pubcomp",
        "message",
        "packet_id",
        "qos",
        "queued_at",
        "retain",
        "row",
        "shared",
        "sub_ids",
    )

    def __init__(
        self,
        message: Message,
        qos: int,
        retain: bool,
        sub_ids: tuple[int, ...],
        shared: tuple[str, str] | None,
        queued_at: float,
    ) -> None:
        self.message = message
        self.qos = qos
        self.retain = retain
        self.sub_ids = sub_ids
        self.shared = shared  # (group, filter) when it came through a shared subscription
        self.packet_id: int | None = None
        self.awaiting_pubcomp = False  # PUBREC received, PUBREL sent
        self.queued_at = queued_at  # wall-clock time it was handed to the session (TTL)
        self.row = 0  # its row in the store; 0 while not stored (non-persistent session)


@dataclass(slots=True)
class PendingWill:
    will: Will
    due: float


class Session:
    """A client's session; `link` is None while the client is disconnected."""

    __slots__ = (
        "client_id",
        "client_type",
        "disconnected_at",
        "expiry_interval",
        "inflight_in",
        "inflight_out",
        "link",
        "next_packet_id",
        "protocol_version",
        "queue",
        "queue_drops",
        "resend",
        "sid",
        "stored",
        "subscriptions",
        "will",
        "will_delay",
    )

    def __init__(
        self, client_id: str, protocol_version: int, expiry_interval: int, sid: int = 0
    ) -> None:
        self.client_id = client_id
        self.sid = sid  # identifies this incarnation of the session in the store
        self.stored = False  # persisted: a durable store and a session expiry > 0
        self.queue_drops = 0  # messages dropped from a full queue since the last log line
        self.client_type = "DEVICE"
        self.protocol_version = protocol_version
        self.expiry_interval = expiry_interval
        self.subscriptions: dict[str, SubOptions] = {}  # full filter (with $share/g/) -> options
        self.inflight_out: dict[int, Outgoing] = {}  # packet id -> message, in send order
        self.queue: deque[Outgoing] = deque()
        # after a reconnect: packet ids of inflight_out still to be sent again (with DUP),
        # in their order, before anything from the queue
        self.resend: deque[int] = deque()
        self.inflight_in: set[int] = set()  # QoS 2 packet ids: PUBREC sent, PUBREL awaited
        self.link: SessionLink | None = None
        self.will: Will | None = None
        self.will_delay = 0
        self.disconnected_at: float | None = None
        self.next_packet_id = 1

    def allocate_packet_id(self) -> int:
        """The next free packet id in 1..65535 [MQTT-2.2.1-4]; callers bound in-flight count."""
        pid = self.next_packet_id
        inflight = self.inflight_out
        while pid in inflight:
            pid = pid + 1 if pid < 0xFFFF else 1
        self.next_packet_id = pid + 1 if pid < 0xFFFF else 1
        return pid


def message_properties_for_will(will: Will) -> Properties:
    """A will's properties as they travel with the published message (will delay removed)."""
    props = will.properties
    if props.will_delay_interval is None:
        return props
    from dataclasses import replace

    return replace(props, will_delay_interval=None)
