"""The router: the one owner of sessions, subscriptions and retained messages.

Every method is synchronous, so each call is atomic on the event loop: links (the I/O
band) decode and check a packet, await any hook, then call the router. Time comes in as
`now` (wall-clock seconds). Timed work (session expiry, delayed wills) is kept in a heap;
the broker asks `next_deadline()` and calls `expire(now)` when it is due.

With a durable store the broker calls `enable_changes()`: from then on every mutation of
persistent state appends a record (pytbmq.changes) to `self.changes`, which the broker's
Committer drains once per event-loop turn. Sessions that end with their connection
(session expiry 0) never log anything. At start `restore()` rebuilds what the store loaded.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

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
from pytbmq.errors import ProtocolViolation
from pytbmq.message import Message
from pytbmq.protocol.packets import (
    EMPTY_PROPERTIES,
    Properties,
    ReasonCode,
    Subscribe,
    Subscription,
    Will,
)
from pytbmq.session import (
    NEVER_EXPIRES,
    Outgoing,
    PendingWill,
    Session,
    SessionLink,
    SubOptions,
    message_properties_for_will,
)
from pytbmq.topics import (
    RetainedStore,
    SubscriptionTrie,
    parse_shared,
    validate_topic_filter,
)

log = logging.getLogger(__name__)


APPLICATION = "APPLICATION"


@dataclass(frozen=True, slots=True)
class RouterConfig:
    queue_limit: int = 10000  # MQTT_PERSISTENT_SESSION_DEVICE_PERSISTED_MESSAGES_LIMIT
    queue_limit_app: int = 100000  # MQTT_PERSISTENT_SESSION_APP_PERSISTED_MESSAGES_LIMIT
    queue_ttl: float = 604800  # MQTT_PERSISTENT_SESSION_DEVICE_PERSISTED_MESSAGES_TTL (DEVICE)
    max_session_expiry: int = 604800  # MQTT_CLIENT_SESSION_EXPIRY_MAX_EXPIRY_INTERVAL
    root_wildcard_allowed: bool = True  # MQTT_SUBSCRIPTION_ROOT_MULTI_LVL_WILDCARD
    topic_max_segments: int = 0  # MQTT_TOPIC_MAX_SEGMENTS_COUNT, 0 = unlimited
    sessions_limit: int = 0  # MQTT_SESSIONS_LIMIT, 0 = unlimited
    application_clients_limit: int = 0  # MQTT_APPLICATION_CLIENTS_LIMIT, 0 = unlimited


@dataclass(slots=True)
class Counters:
    messages_published: int = 0
    messages_dropped_qos0: int = 0
    messages_dropped_queue_full: int = 0
    messages_dropped_too_large: int = 0
    messages_dropped_ttl: int = 0
    messages_dropped_rate_limit: int = 0  # outgoing QoS 0 over MQTT_OUTGOING/TOTAL limits
    messages_refused_rate_limit: int = 0  # incoming PUBLISH over MQTT_INCOMING/TOTAL limits
    messages_expired: int = 0
    # Traffic, for the metrics (pytbmq.api.metrics): one `+=` per message each.
    received: list[int] = field(default_factory=lambda: [0, 0, 0])  # PUBLISH in, by QoS
    received_bytes: int = 0  # payload bytes of the messages published
    sent: list[int] = field(default_factory=lambda: [0, 0, 0])  # PUBLISH out, by QoS
    sent_bytes: int = 0  # payload bytes of the PUBLISH packets sent
    network_bytes_received: int = 0  # MQTT bytes read from clients (after TLS/WebSocket)
    network_bytes_sent: int = 0  # MQTT bytes written to clients


RetainedDelivery = tuple[Message, int, tuple[int, ...]]

_EXPIRE = 0
_WILL = 1


class Router:
    def __init__(self, config: RouterConfig | None = None) -> None:
        self.config = config or RouterConfig()
        self.sessions: dict[str, Session] = {}
        self.subscriptions: SubscriptionTrie[SubOptions] = SubscriptionTrie()
        self.retained: RetainedStore[Message] = RetainedStore()
        self.counters = Counters()
        self._expiry_at: dict[str, float] = {}
        self._pending_wills: dict[str, PendingWill] = {}
        self._timers: list[tuple[float, int, str]] = []
        # The change log (None: no durable store, nothing is logged).
        self.changes: list[Change] | None = None
        self._on_change: Callable[[], None] | None = None
        self._last_sid = 0  # ids handed out to stored sessions, rows and messages
        self._last_row = 0
        self._last_msg = 0
        # For the admin API: each session's latest connection, when retained messages
        # were set (since the broker started; not stored).
        self.connections: dict[str, ConnectionInfo] = {}
        self.retained_at: dict[str, float] = {}
        self._last_connection = 0

    # ---------------------------------------------------------------- change log
    def enable_changes(self, on_change: Callable[[], None] | None = None) -> None:
        """Start logging changes; `on_change` is called when the log becomes non-empty."""
        self.changes = []
        self._on_change = on_change

    def take_changes(self) -> list[Change]:
        """The records logged since the last call, in order (the log is emptied)."""
        changes = self.changes
        if not changes:
            return []
        self.changes = []
        return changes

    def _log(self, record: Change) -> None:
        changes = self.changes
        assert changes is not None
        if not changes and self._on_change is not None:
            self._on_change()
        changes.append(record)

    def _log_session(self, session: Session) -> None:
        if session.link is not None:
            will, due = session.will, None
        else:
            pending = self._pending_wills.get(session.client_id)
            will, due = (pending.will, pending.due) if pending is not None else (None, None)
        self._log(
            (
                SES_PUT,
                session.client_id,
                session.sid,
                session.protocol_version,
                session.expiry_interval,
                session.client_type,
                session.disconnected_at,
                will,
                session.will_delay,
                due,
            )
        )

    def _store_session(self, session: Session) -> None:
        """The session became persistent: write it whole, under a fresh sid."""
        self._last_sid += 1
        session.sid = self._last_sid
        session.stored = True
        self._log_session(session)
        sid = session.sid
        for full, opts in session.subscriptions.items():
            self._log((SUB_PUT, sid, full, *_sub_fields(opts)))
        for out in session.inflight_out.values():
            self._log_out(session, out)
        for out in session.queue:
            self._log_out(session, out)
        for pid in session.inflight_in:
            self._log((IN_PUT, sid, pid))

    def _unstore_session(self, session: Session) -> None:
        """The session is gone from the store (ended, or no longer persistent)."""
        session.stored = False
        self._log((SES_DEL, session.client_id, session.sid))  # wipes every row of the sid
        for out in session.inflight_out.values():
            if out.row:
                self._release(out, False)
        for out in session.queue:
            if out.row:
                self._release(out, False)

    def _log_out(self, session: Session, out: Outgoing) -> None:
        """Write (or rewrite) the stored row of a queued or in-flight message.
        On the path of every message to a persistent session: appends inline."""
        changes = self.changes
        assert changes is not None
        if not changes and self._on_change is not None:
            self._on_change()
        msg = out.message
        if not out.row:
            self._last_row = out.row = self._last_row + 1
            if not msg.store_id:
                self._last_msg = msg.store_id = self._last_msg + 1
                changes.append((MSG_PUT, msg.store_id, msg))
            msg.refs += 1
        pid = out.packet_id
        changes.append(
            (
                OUT_PUT,
                out.row,
                session.sid,
                msg.store_id,
                out.qos,
                out.retain,
                out.sub_ids,
                out.shared,
                pid,
                QUEUED if pid is None else PUBREL_SENT if out.awaiting_pubcomp else PUBLISH_SENT,
                out.queued_at,
            )
        )

    def _release(self, out: Outgoing, log_delete: bool = True) -> None:
        """The stored row of `out` is gone; so is its message once nothing refers to it."""
        changes = self.changes
        assert changes is not None
        if not changes and self._on_change is not None:
            self._on_change()
        if log_delete:
            changes.append((OUT_DEL, out.row))
        out.row = 0
        msg = out.message
        msg.refs -= 1
        if msg.refs <= 0:
            msg.refs = 0
            changes.append((MSG_DEL, msg.store_id))
            msg.store_id = 0

    # ---------------------------------------------------------------- connect
    def admission_refusal(self, client_id: str, client_type: str, expiry: int) -> str | None:
        """Why a CONNECT would exceed MQTT_SESSIONS_LIMIT or MQTT_APPLICATION_CLIENTS_LIMIT
        (None: it may proceed). A client that already has a session is never refused."""
        cfg = self.config
        existing = self.sessions.get(client_id)
        if cfg.sessions_limit and existing is None and len(self.sessions) >= cfg.sessions_limit:
            return f"MQTT_SESSIONS_LIMIT ({cfg.sessions_limit} sessions) reached"
        if (
            cfg.application_clients_limit
            and client_type == APPLICATION
            and expiry > 0
            and not (
                existing is not None
                and existing.client_type == APPLICATION
                and existing.expiry_interval > 0
            )
        ):
            count = sum(
                1
                for s in self.sessions.values()
                if s.client_type == APPLICATION and s.expiry_interval > 0
            )
            if count >= cfg.application_clients_limit:
                return (
                    f"MQTT_APPLICATION_CLIENTS_LIMIT ({cfg.application_clients_limit} "
                    "persistent APPLICATION clients) reached"
                )
        return None

    def connect(
        self,
        link: SessionLink,
        client_id: str,
        protocol_version: int,
        clean_start: bool,
        expiry_interval: int,
        will: Will | None,
        now: float,
        client_type: str = "DEVICE",
    ) -> tuple[Session, bool]:
        """Attach a link to its session (new or resumed). Returns (session, present).

        An existing connection with the same client id is closed first with 0x8E
        [MQTT-3.1.4-3]; the caller sends CONNACK and then calls `session_started`.
        """
        session = self.sessions.get(client_id)
        if session is not None and session.link is not None:
            old = session.link
            self.connection_lost(session, now, publish_will=True)
            old.close_by_server(ReasonCode.SESSION_TAKEN_OVER)
            session = self.sessions.get(client_id)  # gone if its expiry interval was 0
        present = False
        if session is not None:
            if clean_start:
                self._end_session(session, now)  # [MQTT-3.1.2-4] discard
                session = None
            else:
                present = True  # [MQTT-3.2.2-3]
                pending = self._pending_wills.pop(client_id, None)
                if pending is not None:
                    log.debug("will of %s cancelled by reconnect", client_id)  # [MQTT-3.1.3-9]
                self._expiry_at.pop(client_id, None)
        if session is None:
            session = Session(client_id, protocol_version, expiry_interval)
            self.sessions[client_id] = session
        elif session.queue_drops:
            log.warning(
                "session %s: %d queued message(s) were dropped while it was offline "
                "(queue limit reached)",
                client_id,
                session.queue_drops,
            )
            session.queue_drops = 0
        session.protocol_version = protocol_version
        session.expiry_interval = expiry_interval
        session.client_type = client_type
        session.link = link
        session.disconnected_at = None
        session.will = will
        session.will_delay = 0
        if will is not None and will.properties.will_delay_interval:
            session.will_delay = will.properties.will_delay_interval
        if self.changes is not None:
            if expiry_interval > 0:
                if session.stored:
                    self._log_session(session)
                else:
                    self._store_session(session)
            elif session.stored:
                self._unstore_session(session)  # resumed with expiry 0: ends with the link
        self._note_connection(session, link, clean_start, now)
        return session, present

    def session_started(self, session: Session, now: float) -> None:
        """After CONNACK: resend what is in flight [MQTT-4.4.0-1], then drain the queue."""
        if session.link is None:
            return
        # Resent as the link takes them (like the queue), not all in this loop turn: a
        # session that never read can hold thousands in flight.
        if session.inflight_out:
            session.resend = deque(session.inflight_out)
        self._pump(session, now)

    def _resend(self, session: Session, link: SessionLink, now: float) -> None:
        resend = session.resend
        inflight = session.inflight_out
        while resend and link.writable():
            pid = resend.popleft()
            out = inflight.get(pid)
            if out is None:
                continue  # acknowledged meanwhile
            if out.awaiting_pubcomp:
                link.send_pubrel(pid)
            elif not link.send_publish(
                out.message, out.qos, out.retain, out.sub_ids, pid, True, now
            ):
                del inflight[pid]
                if out.row:
                    self._release(out)

    def connection_lost(self, session: Session, now: float, publish_will: bool) -> None:
        """The session's link is gone: normal DISCONNECT, error, timeout or takeover."""
        if session.link is None:
            return
        session.link = None
        session.resend.clear()  # built again from inflight_out when the client returns
        session.disconnected_at = now
        will = session.will
        session.will = None
        if will is not None and publish_will:
            delay = min(session.will_delay, session.expiry_interval)
            if delay > 0:
                self._pending_wills[session.client_id] = PendingWill(will, now + delay)
                self._schedule(now + delay, _WILL, session.client_id)
            else:
                self._publish_will(session.client_id, will, now)
        self._redistribute_shared(session, now)
        if session.expiry_interval == 0:
            self._end_session(session, now)  # [MQTT-3.1.2-6] [MQTT-4.1.0-2]
            return
        if session.expiry_interval != NEVER_EXPIRES:
            when = now + session.expiry_interval
            self._expiry_at[session.client_id] = when
            self._schedule(when, _EXPIRE, session.client_id)
        if session.stored:
            self._log_session(session)  # disconnect time, expiry, pending will

    def _end_session(self, session: Session, now: float) -> None:
        cid = session.client_id
        if self.sessions.get(cid) is session:
            del self.sessions[cid]
        self._expiry_at.pop(cid, None)
        self.connections.pop(cid, None)
        pending = self._pending_wills.pop(cid, None)
        if pending is not None:
            self._publish_will(cid, pending.will, now)  # the session ended before the delay
        for opts in session.subscriptions.values():
            self.subscriptions.remove(opts.topic_filter, cid, opts.group)
        session.subscriptions.clear()
        self._redistribute_shared(session, now)
        if session.stored:
            self._unstore_session(session)
        session.inflight_out.clear()
        session.queue.clear()
        session.inflight_in.clear()

    def _publish_will(self, client_id: str, will: Will, now: float) -> None:
        props = message_properties_for_will(will)
        msg = Message.create(will.topic, will.payload, will.qos, will.retain, props, client_id, now)
        self.publish(msg, now)

    # ---------------------------------------------------------------- timers
    def _schedule(self, when: float, kind: int, client_id: str) -> None:
        heapq.heappush(self._timers, (when, kind, client_id))

    def next_deadline(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def expire(self, now: float) -> None:
        """Fire delayed wills and end expired sessions that are due at `now`."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            when, kind, cid = heapq.heappop(timers)
            if kind == _WILL:
                pending = self._pending_wills.get(cid)
                if pending is not None and pending.due == when:
                    del self._pending_wills[cid]
                    self._publish_will(cid, pending.will, now)
                    owner = self.sessions.get(cid)
                    if owner is not None and owner.stored:
                        self._log_session(owner)
            elif self._expiry_at.get(cid) == when:
                session = self.sessions.get(cid)
                if session is not None and session.link is None:
                    log.info("session %s expired", cid)
                    self._end_session(session, now)

    # ---------------------------------------------------------------- publish
    def publish(self, msg: Message, now: float) -> int:
        """Route a message to every matching subscription; returns how many matched."""
        counters = self.counters
        counters.messages_published += 1
        counters.received[msg.qos] += 1
        counters.received_bytes += len(msg.payload)
        if msg.retain:
            if msg.payload:
                self.retained.set(msg.topic, msg)  # [MQTT-3.3.1-5]
                self.retained_at[msg.topic] = now
                if self.changes is not None:
                    self._log((RET_PUT, msg))
            elif self.retained.delete(msg.topic) and self.changes is not None:
                self._log((RET_DEL, msg.topic))  # [MQTT-3.3.1-10] [MQTT-3.3.1-11]
        subs, groups = self.subscriptions.match(msg.topic)
        matched = 0
        if len(subs) == 1:
            sender = msg.sender
            for cid, opts in subs[0].items():
                if opts.no_local and cid == sender:  # [MQTT-3.8.3-3]
                    continue
                matched += 1
                qos = opts.qos if opts.qos < msg.qos else msg.qos  # [MQTT-3.8.4-8]
                retain = msg.retain and opts.retain_as_published
                sub_ids = (opts.sub_id,) if opts.sub_id is not None else ()
                self._deliver(opts.session, msg, qos, retain, sub_ids, None, now)
        elif subs:
            matched += self._deliver_overlapping(subs, msg, now)
        for group in groups:
            member = group.next_member(_online)
            if member is None:
                member = group.next_member()
            if member is None:
                continue
            opts = member[1]
            matched += 1
            qos = opts.qos if opts.qos < msg.qos else msg.qos
            sub_ids = (opts.sub_id,) if opts.sub_id is not None else ()
            self._deliver(
                opts.session, msg, qos, False, sub_ids, (group.name, group.topic_filter), now
            )
        return matched

    def _deliver_overlapping(
        self, subs: list[dict[str, SubOptions]], msg: Message, now: float
    ) -> int:
        """A client with several matching subscriptions gets one copy [MQTT-3.3.4-2]:
        the highest QoS, every subscription identifier [MQTT-3.3.4-3]."""
        merged: dict[str, tuple[Session, int, bool, list[int]]] = {}
        sender = msg.sender
        for d in subs:
            for cid, opts in d.items():
                if opts.no_local and cid == sender:
                    continue
                qos = opts.qos if opts.qos < msg.qos else msg.qos
                retain = msg.retain and opts.retain_as_published
                prev = merged.get(cid)
                if prev is None:
                    ids = [opts.sub_id] if opts.sub_id is not None else []
                    merged[cid] = (opts.session, qos, retain, ids)
                else:
                    if opts.sub_id is not None:
                        prev[3].append(opts.sub_id)
                    merged[cid] = (prev[0], max(prev[1], qos), prev[2] or retain, prev[3])
        for session, qos, retain, ids in merged.values():
            self._deliver(session, msg, qos, retain, tuple(sorted(ids)), None, now)
        return len(merged)

    def _deliver(
        self,
        session: Session,
        msg: Message,
        qos: int,
        retain: bool,
        sub_ids: tuple[int, ...],
        shared: tuple[str, str] | None,
        now: float,
    ) -> None:
        link = session.link
        if qos == 0:
            if link is not None and link.can_take_qos0():
                link.send_publish(msg, 0, retain, sub_ids, None, False, now)
            else:
                self.counters.messages_dropped_qos0 += 1
            return
        out = Outgoing(msg, qos, retain, sub_ids, shared, now)
        limit = self._message_limit(session)  # queued and in flight together
        inflight = len(session.inflight_out)
        if (
            link is not None
            and not session.queue
            and not session.resend
            and inflight < link.receive_maximum  # [MQTT-4.9.0-2]
            and inflight < limit
            and link.writable()  # a slow consumer's QoS 1/2 waits in the queue
        ):
            self._send(session, link, out, now)
        else:
            queue = session.queue
            queue.append(out)
            if session.stored:
                self._log_out(session, out)
            if len(queue) + inflight > limit:
                dropped = queue.popleft()  # the oldest goes
                self.counters.messages_dropped_queue_full += 1
                if dropped.row:
                    self._release(dropped)
                if not session.queue_drops:
                    log.warning(
                        "session %s: queue full (%d messages), dropping the oldest "
                        "(logged once until the client reconnects)",
                        session.client_id,
                        limit,
                    )
                session.queue_drops += 1

    def _message_limit(self, session: Session) -> int:
        """Most QoS 1/2 messages a session holds, queued and in flight together."""
        cfg = self.config
        return cfg.queue_limit_app if session.client_type == APPLICATION else cfg.queue_limit

    def _send(self, session: Session, link: SessionLink, out: Outgoing, now: float) -> None:
        pid = session.allocate_packet_id()
        out.packet_id = pid
        if link.send_publish(out.message, out.qos, out.retain, out.sub_ids, pid, False, now):
            session.inflight_out[pid] = out
            if session.stored:
                self._log_out(session, out)
        else:
            out.packet_id = None
            self.counters.messages_dropped_too_large += 1  # [MQTT-3.1.2-25]
            if out.row:
                self._release(out)

    def _pump(self, session: Session, now: float) -> None:
        link = session.link
        if link is None:
            return
        if session.resend:
            self._resend(session, link, now)
            if session.resend:
                return  # the rest when the link drains; nothing new overtakes them
        queue = session.queue
        inflight = session.inflight_out
        # in flight at most the client's Receive Maximum and the session's message limit
        # (a client that never acknowledges would otherwise hold up to 65,535)
        limit = min(link.receive_maximum, self._message_limit(session))
        ttl = self.config.queue_ttl if session.client_type != APPLICATION else 0
        while queue and len(inflight) < limit and link.writable():
            out = queue.popleft()
            if out.message.expired(now):  # [MQTT-3.3.2-5]
                self.counters.messages_expired += 1
                if out.row:
                    self._release(out)
                continue
            if ttl and now - out.queued_at >= ttl:  # the persisted-messages TTL
                self.counters.messages_dropped_ttl += 1
                if out.row:
                    self._release(out)
                continue
            self._send(session, link, out, now)

    def _redistribute_shared(self, session: Session, now: float) -> None:
        """Hand the QoS 1/2 messages of a shared subscription held by a member that left
        to another online member of the same group [MQTT-4.8.2-4] [MQTT-4.8.2-5]. With no
        other member online they stay with this session, to be resent when it returns."""
        for pid, out in list(session.inflight_out.items()):
            if out.shared is None or out.awaiting_pubcomp:
                continue
            target = self._other_member(out.shared, session.client_id)
            if target is not None:
                del session.inflight_out[pid]
                if out.row:
                    self._release(out)
                qos = min(out.qos, target.qos)
                self._deliver(target.session, out.message, qos, False, out.sub_ids, out.shared, now)
        if not any(out.shared is not None for out in session.queue):
            return
        keep: list[Outgoing] = []
        for out in session.queue:
            target = (
                None if out.shared is None else self._other_member(out.shared, session.client_id)
            )
            if target is None:
                keep.append(out)
            else:
                if out.row:
                    self._release(out)
                qos = min(out.qos, target.qos)
                self._deliver(target.session, out.message, qos, False, out.sub_ids, out.shared, now)
        session.queue.clear()
        session.queue.extend(keep)

    def _other_member(self, shared: tuple[str, str], client_id: str) -> SubOptions | None:
        group_name, topic_filter = shared
        for _cid, opts in self._group_members(group_name, topic_filter):
            if opts.session.client_id != client_id and opts.session.link is not None:
                return opts
        return None

    def _group_members(self, group: str, topic_filter: str) -> Iterable[tuple[str, SubOptions]]:
        key = f"$share/{group}/{topic_filter}"
        for session in self.sessions.values():
            opts = session.subscriptions.get(key)
            if opts is not None:
                yield session.client_id, opts

    # ---------------------------------------------------------------- acks
    def link_writable(self, session: Session, now: float) -> None:
        """A slow consumer's link drained below its low-water mark: send what queued."""
        if session.link is not None:
            self._pump(session, now)

    def puback(self, session: Session, packet_id: int, now: float) -> None:
        out = session.inflight_out.get(packet_id)
        if out is not None and out.qos == 1:
            del session.inflight_out[packet_id]
            if out.row:
                self._release(out)
            self._pump(session, now)

    def pubrec(self, session: Session, packet_id: int, reason_code: int, now: float) -> bool:
        """Returns False when the packet id is unknown (the link answers PUBREL 0x92)."""
        out = session.inflight_out.get(packet_id)
        if out is None or out.qos != 2:
            return False
        if reason_code >= 0x80:  # [MQTT-4.3.3-?] an error PUBREC ends the exchange
            del session.inflight_out[packet_id]
            if out.row:
                self._release(out)
            self._pump(session, now)
            return True
        out.awaiting_pubcomp = True
        if out.row:
            self._log_out(session, out)  # now PUBREL_SENT: after a restart PUBREL is resent
        link = session.link
        if link is not None:
            link.send_pubrel(packet_id)  # [MQTT-4.3.3-4]
        return True

    def pubcomp(self, session: Session, packet_id: int, now: float) -> None:
        out = session.inflight_out.get(packet_id)
        if out is not None and out.awaiting_pubcomp:
            del session.inflight_out[packet_id]
            if out.row:
                self._release(out)
            self._pump(session, now)

    def qos2_received(self, session: Session, packet_id: int) -> bool:
        """Record an incoming QoS 2 packet id; False if it is a resend of one we hold
        (the message was already routed, only PUBREC is repeated) [MQTT-4.3.3-10]."""
        if packet_id in session.inflight_in:
            return False
        session.inflight_in.add(packet_id)
        if session.stored:
            self._log((IN_PUT, session.sid, packet_id))
        return True

    def pubrel(self, session: Session, packet_id: int) -> bool:
        """Release an incoming QoS 2 packet id; False if it was unknown."""
        try:
            session.inflight_in.remove(packet_id)
        except KeyError:
            return False
        if session.stored:
            self._log((IN_DEL, session.sid, packet_id))
        return True

    # ---------------------------------------------------------------- subscribe
    def subscribe(
        self,
        session: Session,
        packet: Subscribe,
        v5: bool,
        authorize: Callable[[str], bool] | None = None,
    ) -> tuple[list[int], list[RetainedDelivery]]:
        """Add or replace subscriptions; returns reason codes and retained messages to send.

        `authorize(filter)` (the client's subscribe rules) refuses a filter with 0x87."""
        codes: list[int] = []
        retained: list[RetainedDelivery] = []
        sub_id = (
            packet.properties.subscription_identifiers[0]
            if packet.properties.subscription_identifiers
            else None
        )
        cfg = self.config
        for sub in packet.subscriptions:
            full = sub.topic_filter
            try:
                group, topic_filter = parse_shared(full)
            except ValueError:
                codes.append(ReasonCode.TOPIC_FILTER_INVALID if v5 else 0x80)
                continue
            if not validate_topic_filter(topic_filter) or (
                cfg.topic_max_segments and topic_filter.count("/") >= cfg.topic_max_segments
            ):
                codes.append(ReasonCode.TOPIC_FILTER_INVALID if v5 else 0x80)
                continue
            if group is not None and sub.no_local:
                raise ProtocolViolation("No Local on a shared subscription")  # [MQTT-3.8.3-4]
            if (topic_filter == "#" and not cfg.root_wildcard_allowed) or (
                authorize is not None and not authorize(full)
            ):
                codes.append(ReasonCode.NOT_AUTHORIZED if v5 else 0x80)
                continue
            opts = SubOptions(
                session,
                topic_filter,
                group,
                sub.qos,
                sub.no_local,
                sub.retain_as_published,
                sub.retain_handling,
                sub_id,
            )
            existed = full in session.subscriptions
            session.subscriptions[full] = opts  # [MQTT-3.8.4-3] replaces
            self.subscriptions.add(topic_filter, session.client_id, opts, group)
            if session.stored:
                self._log((SUB_PUT, session.sid, full, *_sub_fields(opts)))
            codes.append(sub.qos)
            if group is not None:
                continue  # no retained messages for shared subscriptions [MQTT-3.8.4-4]
            if sub.retain_handling == 2 or (sub.retain_handling == 1 and existed):
                continue
            ids = (sub_id,) if sub_id is not None else ()
            for _topic, msg in self.retained.match(topic_filter):
                if sub.no_local and msg.sender == session.client_id:
                    continue
                retained.append((msg, min(sub.qos, msg.qos), ids))
        return codes, retained

    def send_retained(
        self, session: Session, deliveries: list[RetainedDelivery], now: float
    ) -> None:
        """Deliver retained messages after the SUBACK, retain flag set [MQTT-3.3.1-8]."""
        for msg, qos, ids in deliveries:
            if msg.expired(now):
                if self.retained.get(msg.topic) is msg:
                    self.retained.delete(msg.topic)
                    if self.changes is not None:
                        self._log((RET_DEL, msg.topic))
                continue
            self._deliver(session, msg, qos, True, ids, None, now)

    def unsubscribe(self, session: Session, filters: tuple[str, ...]) -> list[int]:
        codes: list[int] = []
        for full in filters:
            opts = session.subscriptions.pop(full, None)
            if opts is None:
                codes.append(ReasonCode.NO_SUBSCRIPTION_EXISTED)
                continue
            self.subscriptions.remove(opts.topic_filter, session.client_id, opts.group)
            if session.stored:
                self._log((SUB_DEL, session.sid, full))
            codes.append(ReasonCode.SUCCESS)
        return codes

    def expire_retained(self, now: float) -> int:
        """Drop retained messages whose Message Expiry Interval has passed."""
        gone = [topic for topic, msg in self.retained.items() if msg.expired(now)]
        for topic in gone:
            self.retained.delete(topic)
            if self.changes is not None:
                self._log((RET_DEL, topic))
        return len(gone)

    # ---------------------------------------------------------------- restore
    def restore(self, state: StoredState, now: float) -> None:
        """Rebuild what a store loaded, before any client connects.

        Sessions come back disconnected; their in-flight messages are resent with DUP
        when the client returns ([MQTT-4.4.0-1], in `session_started`). Expiry continues
        from the stored wall-clock times: a session that expired while the broker was
        down is ended, a pending will that fell due is published. A session that was
        connected when the broker stopped counts as disconnected now, and its will (if
        any) is handled as for a connection closed without DISCONNECT [MQTT-3.1.2-8].
        """
        for msg in state.retained:
            if msg.expired(now):
                if self.changes is not None:
                    self._log((RET_DEL, msg.topic))
            else:
                self.retained.set(msg.topic, msg)
        cfg = self.config
        for stored in state.sessions:
            cid = stored.client_id
            session = Session(cid, stored.protocol_version, stored.expiry_interval, stored.sid)
            session.client_type = stored.client_type
            session.stored = self.changes is not None
            session.disconnected_at = stored.disconnected_at
            session.will_delay = stored.will_delay
            self.sessions[cid] = session
            self._last_sid = max(self._last_sid, stored.sid)
            for sub in stored.subscriptions:
                group, topic_filter = parse_shared(sub.topic_filter)
                opts = SubOptions(
                    session,
                    topic_filter,
                    group,
                    sub.qos,
                    sub.no_local,
                    sub.retain_as_published,
                    sub.retain_handling,
                    sub.sub_id,
                )
                session.subscriptions[sub.topic_filter] = opts
                self.subscriptions.add(topic_filter, cid, opts, group)
            for so in stored.outgoing:
                msg = so.message
                out = Outgoing(msg, so.qos, so.retain, so.sub_ids, so.shared, so.queued_at)
                self._last_row = max(self._last_row, so.row)
                self._last_msg = max(self._last_msg, msg.store_id)
                if session.stored:
                    out.row = so.row
                    msg.refs += 1
                pid = so.packet_id
                if so.state != QUEUED and pid is not None and pid not in session.inflight_out:
                    out.packet_id = pid
                    out.awaiting_pubcomp = so.state == PUBREL_SENT
                    session.inflight_out[pid] = out
                else:
                    session.queue.append(out)
            limit = cfg.queue_limit_app if session.client_type == APPLICATION else cfg.queue_limit
            while len(session.queue) > limit:
                dropped = session.queue.popleft()
                self.counters.messages_dropped_queue_full += 1
                if dropped.row:
                    self._release(dropped)
            session.inflight_in.update(stored.inflight_in)
        # Time moved on while the broker was down: wills first, then expiry.
        for stored in state.sessions:
            cid = stored.client_id
            session = self.sessions[cid]
            will = stored.will
            if stored.disconnected_at is None:
                session.disconnected_at = now  # connected when the broker stopped
                if will is not None:
                    delay = min(stored.will_delay, session.expiry_interval)
                    self._restore_will(cid, will, now + delay, now)
            elif will is not None and stored.will_due is not None:
                self._restore_will(cid, will, stored.will_due, now)
        for stored in state.sessions:
            session = self.sessions[stored.client_id]
            if session.expiry_interval != NEVER_EXPIRES:
                when = (session.disconnected_at or now) + session.expiry_interval
                if when <= now:
                    log.info("session %s expired while the broker was down", session.client_id)
                    self._end_session(session, now)
                    continue
                self._expiry_at[session.client_id] = when
                self._schedule(when, _EXPIRE, session.client_id)
            if session.stored and (stored.disconnected_at is None or stored.will is not None):
                self._log_session(session)  # disconnect time; the will is pending or gone

    def _restore_will(self, client_id: str, will: Will, due: float, now: float) -> None:
        if due <= now:
            self._publish_will(client_id, will, now)
        else:
            self._pending_wills[client_id] = PendingWill(will, due)
            self._schedule(due, _WILL, client_id)

    # ---------------------------------------------------------------- admin (REST API)
    def _note_connection(
        self, session: Session, link: SessionLink, clean_start: bool, now: float
    ) -> None:
        """Remember what the admin API shows about the connection that just attached."""
        self._last_connection += 1
        self.connections[session.client_id] = ConnectionInfo(
            self._last_connection,
            now,
            clean_start,
            getattr(link, "address", None),
            getattr(link, "keep_alive", 0),
        )

    def connection_info(self, session: Session) -> ConnectionInfo:
        """The latest connection of a live session; a session restored from the store that
        has not connected since the broker started gets a fresh number and no details."""
        info = self.connections.get(session.client_id)
        if info is None:
            self._last_connection += 1
            info = ConnectionInfo(self._last_connection, None, False, None, 0)
            self.connections[session.client_id] = info
        return info

    def disconnect_client(self, client_id: str, reason_code: int) -> bool:
        """Close a client's connection now (MQTT 5: DISCONNECT with `reason_code`); the
        session goes offline as for any server-side close (will published, a persistent
        session stays). False when the client is not connected."""
        session = self.sessions.get(client_id)
        link = session.link if session is not None else None
        if link is None:
            return False
        link.close_by_server(reason_code)
        return True

    def remove_session(self, client_id: str, now: float) -> bool:
        """End a disconnected session now: its subscriptions, queue and stored rows go.
        False when there is no such session or its client is connected."""
        session = self.sessions.get(client_id)
        if session is None or session.link is not None:
            return False
        self._end_session(session, now)
        return True

    def filter_problem(self, full: str, no_local: bool = False) -> str | None:
        """Why a topic filter (shared form allowed) cannot be subscribed, or None: the
        checks `subscribe` applies, in words for the admin API."""
        try:
            group, topic_filter = parse_shared(full)
        except ValueError as exc:
            return str(exc)
        if not validate_topic_filter(topic_filter):
            return f"invalid topic filter {full!r}"
        cfg = self.config
        if cfg.topic_max_segments and topic_filter.count("/") >= cfg.topic_max_segments:
            return (
                f"topic filter {full!r} has more than {cfg.topic_max_segments} levels "
                "(MQTT_TOPIC_MAX_SEGMENTS_COUNT)"
            )
        if topic_filter == "#" and not cfg.root_wildcard_allowed:
            return "'#' is not allowed (MQTT_SUBSCRIPTION_ROOT_MULTI_LVL_WILDCARD)"
        if group is not None and no_local:
            return f"No Local is not allowed on a shared subscription ({full!r})"
        return None

    def set_subscriptions(
        self,
        session: Session,
        wanted: Sequence[tuple[Subscription, int | None]],
        now: float,
    ) -> None:
        """Replace a session's subscriptions with `wanted` ((subscription, subscription
        id) pairs whose filters passed `filter_problem`), logged like SUBSCRIBE and
        UNSUBSCRIBE. A filter new to the session gets the retained messages a SUBSCRIBE
        would bring (per its Retain Handling); unchanged filters are left alone."""
        new = {sub.topic_filter: (sub, sub_id) for sub, sub_id in wanted}
        gone = tuple(full for full in session.subscriptions if full not in new)
        if gone:
            self.unsubscribe(session, gone)
        deliveries: list[RetainedDelivery] = []
        for full, (sub, sub_id) in new.items():
            old = session.subscriptions.get(full)
            fields = (sub.qos, sub.no_local, sub.retain_as_published, sub.retain_handling, sub_id)
            if old is not None and _sub_fields(old) == fields:
                continue
            props = (
                EMPTY_PROPERTIES
                if sub_id is None
                else Properties(subscription_identifiers=(sub_id,))
            )
            _codes, retained = self.subscribe(session, Subscribe(0, (sub,), props), True)
            if old is None:
                deliveries.extend(retained)
        if deliveries:
            self.send_retained(session, deliveries, now)

    def delete_retained(self, topic: str) -> bool:
        """Forget the retained message of `topic` (stored too); False if there was none."""
        if not self.retained.delete(topic):
            return False
        self.retained_at.pop(topic, None)
        if self.changes is not None:
            self._log((RET_DEL, topic))
        return True


def _sub_fields(opts: SubOptions) -> tuple[int, bool, bool, int, int | None]:
    return (opts.qos, opts.no_local, opts.retain_as_published, opts.retain_handling, opts.sub_id)


def _online(_cid: str, opts: SubOptions) -> bool:
    return opts.session.link is not None


class ConnectionInfo:
    """What the admin API shows about a session's latest connection: its number (the
    API's session id), when it connected, its clean start flag, address and keep alive."""

    __slots__ = ("address", "clean_start", "connected_at", "keep_alive", "number")

    def __init__(
        self,
        number: int,
        connected_at: float | None,
        clean_start: bool,
        address: str | None,
        keep_alive: int,
    ) -> None:
        self.number = number
        self.connected_at = connected_at  # wall-clock seconds; None: not since the start
        self.clean_start = clean_start
        self.address = address
        self.keep_alive = keep_alive
