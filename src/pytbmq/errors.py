"""One error tree for the whole broker.

ProtocolError and its children carry the MQTT 5 reason code that describes them; the
link (pytbmq.link) is the single place that turns one into a CONNACK, a DISCONNECT or, for
MQTT 3.x, a plain close. Exception text is for logs only and is never sent to a peer.
"""

from __future__ import annotations


class PytbmqError(Exception):
    """Base of every error pytbmq raises on purpose."""


class ProtocolError(PytbmqError):
    """A peer broke the MQTT protocol; `reason_code` is the MQTT 5 reason to report."""

    reason_code: int = 0x82

    def __init__(self, message: str, reason_code: int | None = None) -> None:
        super().__init__(message)
        if reason_code is not None:
            self.reason_code = reason_code


class MalformedPacket(ProtocolError):
    """The bytes cannot be parsed as the packet they claim to be (0x81)."""

    reason_code = 0x81


class ProtocolViolation(ProtocolError):
    """Well-formed bytes that break a rule of the protocol (0x82)."""

    reason_code = 0x82


class PacketTooLarge(ProtocolError):
    """The packet exceeds the negotiated maximum packet size (0x95)."""

    reason_code = 0x95


class UnsupportedProtocolVersion(ProtocolError):
    """CONNECT named a protocol level the broker does not speak (0x84, 3.x return code 1)."""

    reason_code = 0x84

    def __init__(self, message: str, protocol_level: int) -> None:
        super().__init__(message)
        self.protocol_level = protocol_level


class ConfigError(PytbmqError):
    """A setting is missing or invalid; the message names the setting."""


class TlsConfigError(ConfigError):
    """TLS material or TLS settings are unusable; the message names the setting."""


class StorageError(PytbmqError):
    """The store could not read or write broker state."""
