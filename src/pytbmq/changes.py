"""The change log between the router and the stores, and the state a store loads back.

The router (pytbmq.router) appends one record to `Router.changes` at each mutation of
durable state: persistent sessions (session expiry > 0) with their subscriptions, queued
and in-flight messages and incoming QoS 2 packet ids, retained messages and pending wills.
Sessions that end with their connection produce no records at all. A record is a plain
tuple whose first item is one of the kinds below; it holds values or immutable objects
(Message, Will), never live mutable state, so a store can read it on its own thread after
the router has moved on. The broker's Committer (pytbmq.storage.committer) hands the
records, in order, once per event-loop turn, to the store (pytbmq.storage).

`StoredState` is what a store gives back at start; `Router.restore` rebuilds sessions,
the subscription trie, queues, in-flight maps, retained messages and timers from it.
Every store back-end (SQLite today, Redis or PostgreSQL later) speaks exactly this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from pytbmq.message import Message
    from pytbmq.protocol.packets import Will

# Record kinds. Layout of each record (after the kind):
SES_PUT = 1  # client_id, sid, protocol_version, expiry_interval, client_type,
#              disconnected_at | None, will | None, will_delay, will_due | None
SES_DEL = 2  # client_id, sid: the session and every row of that sid are gone
SUB_PUT = 3  # sid, full topic filter, qos, no_local, retain_as_published, retain_handling,
#              subscription id | None
SUB_DEL = 4  # sid, full topic filter
MSG_PUT = 5  # message id, Message
MSG_DEL = 6  # message id (no queue or in-flight row refers to it any more)
OUT_PUT = 7  # row, sid, message id, qos, retain, sub_ids, shared (group, filter) | None,
#              packet_id | None, state (QUEUED / PUBLISH_SENT / PUBREL_SENT), queued_at
OUT_DEL = 8  # row
IN_PUT = 9  # sid, packet id: incoming QoS 2 PUBLISH answered with PUBREC, PUBREL awaited
IN_DEL = 10  # sid, packet id
RET_PUT = 11  # Message (its topic is the key)
RET_DEL = 12  # topic

KIND_NAMES = {
    SES_PUT: "SES_PUT",
    SES_DEL: "SES_DEL",
    SUB_PUT: "SUB_PUT",
    SUB_DEL: "SUB_DEL",
    MSG_PUT: "MSG_PUT",
    MSG_DEL: "MSG_DEL",
    OUT_PUT: "OUT_PUT",
    OUT_DEL: "OUT_DEL",
    IN_PUT: "IN_PUT",
    IN_DEL: "IN_DEL",
    RET_PUT: "RET_PUT",
    RET_DEL: "RET_DEL",
}

# States of an outgoing QoS 1/2 message.
QUEUED = 0  # not sent yet (no packet id)
PUBLISH_SENT = 1  # PUBLISH sent, PUBACK / PUBREC awaited
PUBREL_SENT = 2  # QoS 2: PUBREC received, PUBREL sent, PUBCOMP awaited

Change: TypeAlias = tuple[Any, ...]


@dataclass(slots=True)
class StoredSubscription:
    topic_filter: str  # the full filter, with "$share/group/" when shared
    qos: int
    no_local: bool
    retain_as_published: bool
    retain_handling: int
    sub_id: int | None


@dataclass(slots=True)
class StoredOutgoing:
    row: int
    message: Message
    qos: int
    retain: bool
    sub_ids: tuple[int, ...]
    shared: tuple[str, str] | None
    packet_id: int | None
    state: int
    queued_at: float


@dataclass(slots=True)
class StoredSession:
    client_id: str
    sid: int
    protocol_version: int
    expiry_interval: int
    client_type: str
    disconnected_at: float | None  # None: connected when the broker stopped (or crashed)
    will: Will | None  # a connected session's will, or the pending will when will_due is set
    will_delay: int
    will_due: float | None
    subscriptions: list[StoredSubscription] = field(default_factory=list)
    outgoing: list[StoredOutgoing] = field(default_factory=list)  # by row: send/queue order
    inflight_in: list[int] = field(default_factory=list)


@dataclass(slots=True)
class StoredState:
    sessions: list[StoredSession] = field(default_factory=list)
    retained: list[Message] = field(default_factory=list)

    def counts(self) -> tuple[int, int, int]:
        """(sessions, queued or in-flight messages, retained messages)."""
        return (
            len(self.sessions),
            sum(len(s.outgoing) for s in self.sessions),
            len(self.retained),
        )
