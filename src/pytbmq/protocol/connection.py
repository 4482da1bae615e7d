"""Per-connection protocol rules that need no I/O: CONNECT negotiation and topic aliases.

The link (pytbmq.link) calls `negotiate` once with the CONNECT packet and keeps the
result for the connection's life; it calls `InboundAliases.resolve` on every PUBLISH
it receives and `OutboundAliases.lookup` on PUBLISHes it sends to an MQTT 5 client.
The MQTT 3.x / 5 differences of the handshake live here, next to the codec's.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from pytbmq.errors import ProtocolError, ProtocolViolation
from pytbmq.protocol.packets import (
    ConnAck,
    Connect,
    Properties,
    ReasonCode,
)

MAX_SESSION_EXPIRY = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Limits:
    """The broker's side of the handshake, from settings."""

    max_packet_size: int = 65536  # TCP_NETTY_MAX_PAYLOAD_SIZE
    receive_maximum: int = 1000  # MQTT_MAX_IN_FLIGHT_MSGS
    topic_alias_maximum: int = 10  # MQTT_TOPIC_ALIAS_MAX
    max_keep_alive: int = 600  # MQTT_KEEP_ALIVE_MAX_KEEP_ALIVE_SEC
    max_session_expiry: int = 604800  # MQTT_CLIENT_SESSION_EXPIRY_MAX_EXPIRY_INTERVAL
    max_client_id_length_3_1: int = 1024  # MQTT_3_1_MAX_CLIENT_ID_LENGTH
    receive_maximum_3x: int = 65535  # MQTT_FLOW_CONTROL_MQTT_3X_RECEIVE_MAX
    response_information: str = ""  # MQTT_RESPONSE_INFO


@dataclass(frozen=True, slots=True)
class Negotiated:
    """Everything the handshake decided. `connack` is ready to send."""

    connack: ConnAck
    accepted: bool
    client_id: str
    keep_alive: int
    session_expiry: int
    client_receive_maximum: int
    client_max_packet_size: int | None
    client_topic_alias_maximum: int
    request_problem_information: bool


def negotiate(connect: Connect, limits: Limits) -> Negotiated:
    """Apply the broker's limits to a CONNECT and build the CONNACK.

    Refusals come back with `accepted` False and a CONNACK carrying the reason; the
    caller sends it and closes [MQTT-3.2.2-7]. Session Present is filled in later.
    """
    v5 = connect.protocol_version == 5
    props = connect.properties
    client_id = connect.client_id
    assigned: str | None = None

    def refuse(reason: int) -> Negotiated:
        return Negotiated(ConnAck(False, reason), False, client_id, 0, 0, 0, None, 0, True)

    if client_id == "":
        if not connect.clean_start:
            # [MQTT-3.1.3-8] 3.1.1: zero-byte id needs clean session; 5: nothing to resume
            return refuse(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID)
        if connect.protocol_version == 3:
            return refuse(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID)  # 3.1 requires 1..23 chars
        client_id = assigned = "pytbmq-" + uuid.uuid4().hex  # [MQTT-3.1.3-6]
    elif connect.protocol_version == 3 and len(client_id) > limits.max_client_id_length_3_1:
        return refuse(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID)

    keep_alive = connect.keep_alive
    server_keep_alive: int | None = None
    if v5 and keep_alive > limits.max_keep_alive:
        keep_alive = server_keep_alive = limits.max_keep_alive  # [MQTT-3.2.2-21]

    if v5:
        requested = props.session_expiry_interval or 0
        expiry = min(requested, limits.max_session_expiry)
        client_receive_maximum = props.receive_maximum or 65535
        client_max_packet = props.maximum_packet_size
        client_alias_max = props.topic_alias_maximum or 0
        rpi = props.request_problem_information != 0
    else:
        requested = expiry = 0 if connect.clean_start else limits.max_session_expiry
        client_receive_maximum = limits.receive_maximum_3x
        client_max_packet = None
        client_alias_max = 0
        rpi = True

    ack_props = Properties()
    if v5:
        ack_props = Properties(
            session_expiry_interval=expiry if expiry != requested else None,
            receive_maximum=limits.receive_maximum if limits.receive_maximum < 65535 else None,
            maximum_packet_size=limits.max_packet_size
            if limits.max_packet_size < 268435460
            else None,
            topic_alias_maximum=limits.topic_alias_maximum or None,
            assigned_client_identifier=assigned,
            server_keep_alive=server_keep_alive,
            response_information=limits.response_information
            if props.request_response_information and limits.response_information
            else None,
        )
    return Negotiated(
        ConnAck(False, ReasonCode.SUCCESS, ack_props),
        True,
        client_id,
        keep_alive,
        expiry,
        client_receive_maximum,
        client_max_packet,
        client_alias_max,
        rpi,
    )


class InboundAliases:
    """Topic aliases a client set on its PUBLISHes [MQTT-3.3.2-7..12]."""

    __slots__ = ("_map", "maximum")

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self._map: dict[int, str] = {}

    def resolve(self, topic: str, alias: int | None) -> str:
        if alias is None:
            if not topic:
                raise ProtocolViolation("PUBLISH with an empty topic and no topic alias")
            return topic
        if alias == 0 or alias > self.maximum:  # [MQTT-3.3.2-8] [MQTT-3.3.2-9]
            raise ProtocolError(
                f"topic alias {alias} outside 1..{self.maximum}", ReasonCode.TOPIC_ALIAS_INVALID
            )
        if topic:
            self._map[alias] = topic
            return topic
        known = self._map.get(alias)
        if known is None:
            raise ProtocolViolation(f"topic alias {alias} was never set")
        return known


class OutboundAliases:
    """Aliases the broker assigns for long topics it sends to an MQTT 5 client.

    Only topics at least `min_length` long get one; once the client's maximum is used
    up, further topics go out in full (aliases are never reassigned, so a client can
    never apply a stale mapping).
    """

    __slots__ = ("_map", "maximum", "min_length")

    def __init__(self, maximum: int, min_length: int) -> None:
        self.maximum = maximum
        self.min_length = min_length
        self._map: dict[str, int] = {}

    def lookup(self, topic: str) -> tuple[int, bool] | None:
        """(alias, already_known) for this topic, or None to send the topic in full."""
        if len(topic) < self.min_length:
            return None
        alias = self._map.get(topic)
        if alias is not None:
            return alias, True
        if len(self._map) >= self.maximum:
            return None
        alias = len(self._map) + 1
        self._map[topic] = alias
        return alias, False
