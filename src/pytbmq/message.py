"""An application message as the router carries it, with its wire encodings cached.

A PUBLISH that fans out to many subscribers is encoded once per variant (protocol
family, QoS, retain flag, subscription ids, remaining expiry) and the bytes are shared;
only the two packet-id bytes differ between subscribers. Created by the link (from a
PUBLISH or a will) and by the router; read by links. No I/O.
"""

from __future__ import annotations

import math
from dataclasses import replace

from pytbmq.protocol.codec import encode_publish_parts
from pytbmq.protocol.packets import EMPTY_PROPERTIES, Properties


class Message:
    __slots__ = (
        "_cache",
        "expires_at",
        "payload",
        "properties",
        "qos",
        "refs",
        "retain",
        "sender",
        "store_id",
        "topic",
    )

    def __init__(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        properties: Properties,
        expires_at: float | None,
        sender: str | None,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        # Properties as forwarded: no topic alias, no subscription ids (both per link).
        self.properties = properties
        self.expires_at = expires_at  # wall-clock deadline from Message Expiry Interval
        self.sender = sender  # client id of the publisher, for No Local
        # Set by the router while stored queue / in-flight rows refer to the message.
        self.store_id = 0  # its id in the store's message table; 0 while not stored
        self.refs = 0  # stored rows referring to it
        self._cache: dict[tuple[bool, int, bool, tuple[int, ...], int], tuple[bytes, bytes]] = {}

    @classmethod
    def create(
        cls,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        properties: Properties,
        sender: str | None,
        now: float,
    ) -> Message:
        """Build from a received PUBLISH/will: strips per-hop properties, fixes expiry."""
        expires_at = None
        if properties is not EMPTY_PROPERTIES:
            if properties.topic_alias is not None or properties.subscription_identifiers:
                properties = replace(properties, topic_alias=None, subscription_identifiers=())
            if properties.message_expiry_interval is not None:
                expires_at = now + properties.message_expiry_interval
        return cls(topic, payload, qos, retain, properties, expires_at, sender)

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def encoded(
        self, v5: bool, qos: int, retain: bool, sub_ids: tuple[int, ...], now: float
    ) -> tuple[bytes, bytes]:
        """(head, tail) of the PUBLISH: full packet is head [+ packet id] + tail."""
        remaining = -1
        if self.expires_at is not None and v5:
            # [MQTT-3.3.2-6] forward the remaining lifetime, never 0 for a live message.
            remaining = max(1, math.ceil(self.expires_at - now))
        if not v5:
            sub_ids = ()
        key = (v5, qos, retain, sub_ids, remaining)
        parts = self._cache.get(key)
        if parts is None:
            props = self.properties
            if v5 and (sub_ids or remaining >= 0):
                props = replace(
                    props,
                    subscription_identifiers=sub_ids,
                    message_expiry_interval=remaining if remaining >= 0 else None,
                )
            parts = encode_publish_parts(
                self.topic, self.payload, qos, retain, False, props, 5 if v5 else 4
            )
            if len(self._cache) < 16:
                self._cache[key] = parts
        return parts
