"""The router: the one owner of sessions, subscriptions and retained messages.

Every method is synchronous, so each call is atomic on the event loop: links (the I/O
band) decode and check a packet, await any hook, then call the router. Time comes in as
`now` (wall-clock seconds). Timed work (session expiry, delayed wills) is kept in a heap;
the broker asks `next_deadline()` and calls `expire(now)` when it is due.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from pytbmq.errors import ProtocolViolation
from pytbmq.message import Message
from pytbmq.protocol.packets import ReasonCode, Subscribe, Will
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


@dataclass(frozen=True, slots=True)
class RouterConfig:
    queue_limit: int = 10000  # MQTT_PERSISTENT_SESSION_DEVICE_PERSISTED_MESSAGES_LIMIT
    max_session_expiry: int = 604800  # MQTT_CLIENT_SESSION_EXPIRY_MAX_EXPIRY_INTERVAL
    root_wildcard_allowed: bool = True  # MQTT_SUBSCRIPTION_ROOT_MULTI_LVL_WILDCARD
    topic_max_segments: int = 0  # MQTT_TOPIC_MAX_SEGMENTS_COUNT, 0 = unlimited


@dataclass(slots=True)
class Counters:
    messages_published: int = 0
    messages_dropped_qos0: int = 0
    messages_dropped_queue_full: int = 0
    messages_dropped_too_large: int = 0
    messages_expired: int = 0


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

    # ---------------------------------------------------------------- connect
    def connect(
        self,
        link: SessionLink,
        client_id: str,
        protocol_version: int,
        clean_start: bool,
        expiry_interval: int,
        will: Will | None,
        now: float,
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
        session.protocol_version = protocol_version
        session.expiry_interval = expiry_interval
        session.link = link
        session.disconnected_at = None
        session.will = will
        session.will_delay = 0
        if will is not None and will.properties.will_delay_interval:
            session.will_delay = will.properties.will_delay_interval
        return session, present

    def session_started(self, session: Session, now: float) -> None:
        """After CONNACK: resend what is in flight [MQTT-4.4.0-1], then drain the queue."""
        link = session.link
        if link is None:
            return
        for out in list(session.inflight_out.values()):
            pid = out.packet_id
            assert pid is not None
            if out.awaiting_pubcomp:
                link.send_pubrel(pid)
            elif not link.send_publish(
                out.message, out.qos, out.retain, out.sub_ids, pid, True, now
            ):
                del session.inflight_out[pid]
        self._pump(session, now)

    def connection_lost(self, session: Session, now: float, publish_will: bool) -> None:
        """The session's link is gone: normal DISCONNECT, error, timeout or takeover."""
        if session.link is None:
            return
        session.link = None
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
        elif session.expiry_interval != NEVER_EXPIRES:
            when = now + session.expiry_interval
            self._expiry_at[session.client_id] = when
            self._schedule(when, _EXPIRE, session.client_id)

    def _end_session(self, session: Session, now: float) -> None:
        cid = session.client_id
        if self.sessions.get(cid) is session:
            del self.sessions[cid]
        self._expiry_at.pop(cid, None)
        pending = self._pending_wills.pop(cid, None)
        if pending is not None:
            self._publish_will(cid, pending.will, now)  # the session ended before the delay
        for opts in session.subscriptions.values():
            self.subscriptions.remove(opts.topic_filter, cid, opts.group)
        session.subscriptions.clear()
        self._redistribute_shared(session, now)
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
            elif self._expiry_at.get(cid) == when:
                session = self.sessions.get(cid)
                if session is not None and session.link is None:
                    log.info("session %s expired", cid)
                    self._end_session(session, now)

    # ---------------------------------------------------------------- publish
    def publish(self, msg: Message, now: float) -> int:
        """Route a message to every matching subscription; returns how many matched."""
        self.counters.messages_published += 1
        if msg.retain:
            if msg.payload:
                self.retained.set(msg.topic, msg)  # [MQTT-3.3.1-5]
            else:
                self.retained.delete(msg.topic)  # [MQTT-3.3.1-10] [MQTT-3.3.1-11]
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
        out = Outgoing(msg, qos, retain, sub_ids, shared)
        if (
            link is not None
            and not session.queue
            and len(session.inflight_out) < link.receive_maximum  # [MQTT-4.9.0-2]
        ):
            self._send(session, link, out, now)
        else:
            queue = session.queue
            queue.append(out)
            if len(queue) > self.config.queue_limit:
                queue.popleft()
                self.counters.messages_dropped_queue_full += 1

    def _send(self, session: Session, link: SessionLink, out: Outgoing, now: float) -> None:
        pid = session.allocate_packet_id()
        out.packet_id = pid
        if link.send_publish(out.message, out.qos, out.retain, out.sub_ids, pid, False, now):
            session.inflight_out[pid] = out
        else:
            out.packet_id = None
            self.counters.messages_dropped_too_large += 1  # [MQTT-3.1.2-25]

    def _pump(self, session: Session, now: float) -> None:
        link = session.link
        if link is None:
            return
        queue = session.queue
        inflight = session.inflight_out
        limit = link.receive_maximum
        while queue and len(inflight) < limit:
            out = queue.popleft()
            if out.message.expired(now):  # [MQTT-3.3.2-5]
                self.counters.messages_expired += 1
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
    def puback(self, session: Session, packet_id: int, now: float) -> None:
        out = session.inflight_out.get(packet_id)
        if out is not None and out.qos == 1:
            del session.inflight_out[packet_id]
            self._pump(session, now)

    def pubrec(self, session: Session, packet_id: int, reason_code: int, now: float) -> bool:
        """Returns False when the packet id is unknown (the link answers PUBREL 0x92)."""
        out = session.inflight_out.get(packet_id)
        if out is None or out.qos != 2:
            return False
        if reason_code >= 0x80:  # [MQTT-4.3.3-?] an error PUBREC ends the exchange
            del session.inflight_out[packet_id]
            self._pump(session, now)
            return True
        out.awaiting_pubcomp = True
        link = session.link
        if link is not None:
            link.send_pubrel(packet_id)  # [MQTT-4.3.3-4]
        return True

    def pubcomp(self, session: Session, packet_id: int, now: float) -> None:
        out = session.inflight_out.get(packet_id)
        if out is not None and out.awaiting_pubcomp:
            del session.inflight_out[packet_id]
            self._pump(session, now)

    def qos2_received(self, session: Session, packet_id: int) -> bool:
        """Record an incoming QoS 2 packet id; False if it is a resend of one we hold
        (the message was already routed, only PUBREC is repeated) [MQTT-4.3.3-10]."""
        if packet_id in session.inflight_in:
            return False
        session.inflight_in.add(packet_id)
        return True

    def pubrel(self, session: Session, packet_id: int) -> bool:
        """Release an incoming QoS 2 packet id; False if it was unknown."""
        try:
            session.inflight_in.remove(packet_id)
        except KeyError:
            return False
        return True

    # ---------------------------------------------------------------- subscribe
    def subscribe(
        self, session: Session, packet: Subscribe, v5: bool
    ) -> tuple[list[int], list[RetainedDelivery]]:
        """Add or replace subscriptions; returns reason codes and retained messages to send."""
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
            if topic_filter == "#" and not cfg.root_wildcard_allowed:
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
            codes.append(ReasonCode.SUCCESS)
        return codes

    def expire_retained(self, now: float) -> int:
        """Drop retained messages whose Message Expiry Interval has passed."""
        gone = [topic for topic, msg in self.retained.items() if msg.expired(now)]
        for topic in gone:
            self.retained.delete(topic)
        return len(gone)


def _online(_cid: str, opts: SubOptions) -> bool:
    return opts.session.link is not None
