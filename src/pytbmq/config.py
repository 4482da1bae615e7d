"""Broker settings, read the way ThingsBoard TBMQ reads them.

Every setting has TBMQ's environment variable name and default, and lives at TBMQ's path in a
YAML file shaped like TBMQ's ``thingsboard-mqtt-broker.yml`` (``pytbmq --config FILE``). A
value is taken from, in order:

1. the environment variable, when it is set (even to an empty string);
2. the YAML file at the setting's path; a value there may hold Spring-style placeholders,
   ``${ENV_NAME:default}`` or ``${ENV_NAME}``, resolved against the environment and falling
   back to the placeholder's default;
3. the built-in default.

Keys of the YAML file that no setting reads are ignored without a word: TBMQ's own file has
hundreds of them. Every invalid value is reported, all at once, in one ConfigError with one
line per problem that names the variable (and the YAML path when the value came from the
file), shows the value (``'***'`` for any setting whose name contains PASSWORD) and says what
is expected.

To add a setting, add one `Setting` entry to `SETTINGS`, the matching typed field to
`Settings` (same order) and its row to docs/configuration.md; unit tests check all three
agree (and print the row the docs need).
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pytbmq.errors import ConfigError

__all__ = [
    "SETTINGS",
    "Bool",
    "Choice",
    "Float",
    "Host",
    "Int",
    "Kind",
    "PathKind",
    "ProviderOrder",
    "RateLimits",
    "Setting",
    "Settings",
    "Str",
    "TlsProtocol",
    "describe_settings",
    "load_settings",
    "redact",
]


# --------------------------------------------------------------------------- kinds of value


class Kind(ABC):
    """Turns the string form of a setting into its typed value."""

    @abstractmethod
    def parse(self, raw: str) -> Any:
        """Return the typed value of `raw`; raise ValueError when it is not acceptable."""

    @abstractmethod
    def expected(self) -> str:
        """What an acceptable value looks like; completes the phrase "expected ..."."""


_DECIMAL_INT = re.compile(r"[+-]?[0-9]+")
_DECIMAL_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# A host name label (RFC 1123, plus '_' which container runtimes use in service names).
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


@dataclass(frozen=True)
class Bool(Kind):
    """``true`` or ``false``, in any letter case, and nothing else (as Spring binds them)."""

    def parse(self, raw: str) -> bool:
        text = raw.strip().lower()
        if text == "true":
            return True
        if text == "false":
            return False
        raise ValueError(raw)

    def expected(self) -> str:
        return "true or false"


@dataclass(frozen=True)
class Int(Kind):
    """A decimal integer within [minimum, maximum]."""

    minimum: int
    maximum: int

    def parse(self, raw: str) -> int:
        text = raw.strip()
        if not _DECIMAL_INT.fullmatch(text):
            raise ValueError(raw)
        value = int(text)
        if not self.minimum <= value <= self.maximum:
            raise ValueError(raw)
        return value

    def expected(self) -> str:
        return f"an integer from {self.minimum} to {self.maximum}"


@dataclass(frozen=True)
class Float(Kind):
    """A finite decimal number within [minimum, maximum]."""

    minimum: float
    maximum: float

    def parse(self, raw: str) -> float:
        text = raw.strip()
        if not _DECIMAL_FLOAT.fullmatch(text):
            raise ValueError(raw)
        value = float(text)
        if not math.isfinite(value) or not self.minimum <= value <= self.maximum:
            raise ValueError(raw)
        return value

    def expected(self) -> str:
        return f"a number from {self.minimum:g} to {self.maximum:g}"


@dataclass(frozen=True)
class Str(Kind):
    """Any string, kept exactly as given; optionally non-empty and bounded in UTF-8 bytes."""

    allow_empty: bool = True
    max_utf8_bytes: int | None = None

    def parse(self, raw: str) -> str:
        if not self.allow_empty and not raw.strip():
            raise ValueError(raw)
        if "\x00" in raw:
            raise ValueError(raw)
        try:
            size = len(raw.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValueError(raw) from None
        if self.max_utf8_bytes is not None and size > self.max_utf8_bytes:
            raise ValueError(raw)
        return raw

    def expected(self) -> str:
        text = "a string" if self.allow_empty else "a non-empty string"
        if self.max_utf8_bytes is not None:
            text += f" of at most {self.max_utf8_bytes} UTF-8 bytes"
        return text + " without NUL characters"


@dataclass(frozen=True)
class Choice(Kind):
    """One of a fixed set of words; letter case is ignored and the canonical spelling kept."""

    choices: tuple[str, ...]

    def parse(self, raw: str) -> str:
        text = raw.strip().casefold()
        for choice in self.choices:
            if text == choice.casefold():
                return choice
        raise ValueError(raw)

    def expected(self) -> str:
        if len(self.choices) == 1:
            return f"{self.choices[0]} (the only supported value)"
        return "one of " + ", ".join(self.choices) + " (case-insensitive)"


@dataclass(frozen=True)
class Host(Kind):
    """An IPv4 or IPv6 address, or a host name."""

    def parse(self, raw: str) -> str:
        text = raw.strip()
        try:
            ipaddress.ip_address(text)
        except ValueError:
            pass
        else:
            return text
        name = text.removesuffix(".")
        if not name or len(name) > 253:
            raise ValueError(raw)
        labels = name.split(".")
        if not all(_HOST_LABEL.fullmatch(label) for label in labels):
            raise ValueError(raw)
        if all(label.isdigit() for label in labels):
            raise ValueError(raw)  # digits and dots only: a malformed IPv4 address
        return text

    def expected(self) -> str:
        return "an IPv4 address, an IPv6 address or a host name"


@dataclass(frozen=True)
class PathKind(Kind):
    """A non-empty filesystem path (not checked for existence)."""

    def parse(self, raw: str) -> Path:
        if not raw.strip() or "\x00" in raw:
            raise ValueError(raw)
        return Path(raw)

    def expected(self) -> str:
        return "a non-empty path"


@dataclass(frozen=True)
class TlsProtocol(Kind):
    """The lowest TLS version a listener accepts: TLSv1.2 (also 1.3), TLSv1.3, or TLS (= 1.2+).

    TBMQ passes this name to Java's SSLContext; TLSv1 and TLSv1.1 are refused here because
    they are broken and disabled in every current TLS library.
    """

    def parse(self, raw: str) -> str:
        text = raw.strip()
        canonical = {"tlsv1.2": "TLSv1.2", "tlsv1.3": "TLSv1.3", "tls": "TLS", "": "TLS"}
        value = canonical.get(text.casefold())
        if value is None:
            raise ValueError(raw)
        return value

    def expected(self) -> str:
        return (
            "TLSv1.2 (accepts TLS 1.2 and 1.3) or TLSv1.3 (only 1.3); "
            "SSLv3, TLSv1 and TLSv1.1 are insecure and not supported"
        )


# An HTTP token (RFC 9110 section 5.6.2), which is what a WebSocket subprotocol name is.
_HTTP_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^/?#\s,]+")


def _comma_items(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


@dataclass(frozen=True)
class GcThresholds(Kind):
    """Three positive integers ``gen0,gen1,gen2`` for gc.set_threshold, kept as ``a,b,c``."""

    def parse(self, raw: str) -> str:
        items = _comma_items(raw)
        if len(items) != 3 or not all(item.isdigit() and 1 <= int(item) <= 10**9 for item in items):
            raise ValueError(raw)
        return ",".join(str(int(item)) for item in items)

    def expected(self) -> str:
        return "three integers >= 1 separated by commas, e.g. 300,1,500"


@dataclass(frozen=True)
class TokenList(Kind):
    """A comma-separated list of HTTP tokens (WebSocket subprotocol names), kept as
    ``a,b`` without spaces; at least one unless `allow_empty`."""

    allow_empty: bool = False

    def parse(self, raw: str) -> str:
        items = _comma_items(raw)
        if not items and not self.allow_empty:
            raise ValueError(raw)
        if not all(_HTTP_TOKEN.fullmatch(item) for item in items):
            raise ValueError(raw)
        return ",".join(items)

    def expected(self) -> str:
        return "a comma-separated list of subprotocol names such as mqtt,mqttv3.1"


@dataclass(frozen=True)
class UrlPath(Kind):
    """An absolute URL path such as ``/mqtt``: starts with '/', no query, no spaces."""

    def parse(self, raw: str) -> str:
        text = raw.strip()
        if not text.startswith("/") or any(c in text for c in "?# \t") or not text.isprintable():
            raise ValueError(raw)
        return text

    def expected(self) -> str:
        return "a URL path starting with '/', such as /mqtt"


@dataclass(frozen=True)
class OriginList(Kind):
    """Comma-separated web origins (``https://app.example.com``, ``http://host:8080``),
    kept lower-case without a trailing '/'; empty allows any origin."""

    def parse(self, raw: str) -> str:
        items = [item.lower().removesuffix("/") for item in _comma_items(raw)]
        if not all(_ORIGIN.fullmatch(item) for item in items):
            raise ValueError(raw)
        return ",".join(items)

    def expected(self) -> str:
        return (
            "empty (any origin) or comma-separated origins such as "
            "https://dashboard.example.com,http://localhost:8080"
        )


@dataclass(frozen=True)
class CidrList(Kind):
    """Comma-separated IP addresses or networks (``10.0.0.0/8``, ``::1``), kept normalised."""

    def parse(self, raw: str) -> str:
        try:
            nets = [ipaddress.ip_network(item, strict=False) for item in _comma_items(raw)]
        except ValueError:
            raise ValueError(raw) from None
        return ",".join(str(net) for net in nets)

    def expected(self) -> str:
        return "empty or comma-separated IP addresses or CIDR networks such as 10.0.0.0/8,::1"


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class ProviderOrder(Kind):
    """Authentication providers in the order they are tried: names from `choices`, each once."""

    choices: tuple[str, ...]
    aliases: tuple[tuple[str, str], ...] = ()

    def parse(self, raw: str) -> tuple[str, ...]:
        names: list[str] = []
        canon = {c.casefold(): c for c in self.choices}
        canon.update({a.casefold(): c for a, c in self.aliases})
        for part in raw.split(","):
            word = part.strip().casefold()
            if not word:
                continue
            if word not in canon or canon[word] in names:
                raise ValueError(raw)
            names.append(canon[word])
        if not names:
            raise ValueError(raw)
        return tuple(names)

    def expected(self) -> str:
        return "a comma-separated order of " + ", ".join(self.choices) + ", each at most once"


@dataclass(frozen=True)
class RateLimits(Kind):
    """TBMQ's token-bucket syntax: `capacity:seconds` pairs separated by commas."""

    def parse(self, raw: str) -> tuple[tuple[int, int], ...]:
        pairs: list[tuple[int, int]] = []
        for part in raw.split(","):
            capacity, sep, seconds = part.strip().partition(":")
            if (
                not sep
                or not _DECIMAL_INT.fullmatch(capacity)
                or not _DECIMAL_INT.fullmatch(seconds)
            ):
                raise ValueError(raw)
            pair = (int(capacity), int(seconds))
            if pair[0] < 1 or pair[1] < 1:
                raise ValueError(raw)
            pairs.append(pair)
        return tuple(pairs)

    def expected(self) -> str:
        return "capacity:seconds pairs separated by commas, e.g. 10:1,300:60 (both >= 1)"


@dataclass(frozen=True)
class Setting:
    """One setting: where it is read from, how it is parsed, and what it means."""

    env: str  # environment variable, e.g. "LISTENER_TCP_BIND_PORT"
    yaml_path: str  # dotted path in TBMQ's YAML, e.g. "listener.tcp.bind_port"
    kind: Kind  # parser and validator
    default: str  # the default, in the string form the environment variable would have
    help: str  # one line, for docs and `pytbmq config`
    pytbmq_only: bool = False  # True when TBMQ has no such setting

    @property
    def field(self) -> str:
        """Name of the matching `Settings` attribute."""
        return self.env.lower()


def _connection_limit_settings(label: str) -> tuple[Setting, Setting]:
    """LISTENER_<TYPE>_MAX_CONNECTIONS and _NEW_CONNECTIONS_PER_IP_PER_SEC."""
    name = f"LISTENER_{label.upper()}"
    return (
        Setting(
            f"{name}_MAX_CONNECTIONS",
            f"listener.{label}.max_connections",
            Int(0, 2**31 - 1),
            "0",
            f"Most open connections on the {label.upper()} listener; more are closed at "
            "once; 0 disables",
            pytbmq_only=True,
        ),
        Setting(
            f"{name}_NEW_CONNECTIONS_PER_IP_PER_SEC",
            f"listener.{label}.new_connections_per_ip_per_sec",
            Int(0, 2**31 - 1),
            "0",
            f"New connections per second one source address may open on the "
            f"{label.upper()} listener; more are closed at once; 0 disables",
            pytbmq_only=True,
        ),
    )


def _handshake_limit_setting(label: str) -> Setting:
    return Setting(
        f"LISTENER_{label.upper()}_MAX_HANDSHAKES_IN_PROGRESS",
        f"listener.{label}.max_handshakes_in_progress",
        Int(1, 100_000),
        "64",
        f"TLS handshakes the {label.upper()} listener runs at once; further connections wait "
        "in the kernel's accept queue, so a handshake storm cannot starve connected clients",
        pytbmq_only=True,
    )


_PORT = Int(0, 65535)
_UINT16 = Int(0, 65535)

# The YAML paths of TBMQ's settings were checked against TBMQ's
# application/src/main/resources/thingsboard-mqtt-broker.yml and its generated parameter
# reference, except where a comment says otherwise.
SETTINGS: tuple[Setting, ...] = (
    Setting(
        "LISTENER_TCP_ENABLED",
        "listener.tcp.enabled",
        Bool(),
        "true",
        "Enable the plain MQTT (TCP) listener",
    ),
    Setting(
        "LISTENER_TCP_BIND_ADDRESS",
        "listener.tcp.bind_address",
        Host(),
        "0.0.0.0",
        "Address the MQTT TCP listener binds to",
    ),
    Setting(
        "LISTENER_TCP_BIND_PORT",
        "listener.tcp.bind_port",
        _PORT,
        "1883",
        "Port the MQTT TCP listener binds to; 0 picks any free port",
    ),
    Setting(
        "TCP_NETTY_MAX_PAYLOAD_SIZE",
        "listener.tcp.netty.max_payload_size",
        Int(16, 268_435_460),
        "65536",
        "Largest MQTT packet in bytes the broker accepts; advertised as Maximum Packet Size",
    ),
    Setting(
        "LISTENER_SSL_ENABLED",
        "listener.ssl.enabled",
        Bool(),
        "false",
        "Enable the MQTT over TLS (MQTTS) listener",
    ),
    Setting(
        "LISTENER_SSL_BIND_ADDRESS",
        "listener.ssl.bind_address",
        Host(),
        "0.0.0.0",
        "Address the MQTTS listener binds to",
    ),
    Setting(
        "LISTENER_SSL_BIND_PORT",
        "listener.ssl.bind_port",
        _PORT,
        "8883",
        "Port the MQTTS listener binds to; 0 picks any free port",
    ),
    Setting(
        "SSL_NETTY_MAX_PAYLOAD_SIZE",
        "listener.ssl.netty.max_payload_size",
        Int(16, 268_435_460),
        "65536",
        "Largest MQTT packet in bytes accepted on the MQTTS listener",
    ),
    Setting(
        "LISTENER_SSL_PROTOCOL",
        "listener.ssl.config.protocol",
        TlsProtocol(),
        "TLSv1.2",
        "Lowest TLS version accepted: TLSv1.2 (1.2 and 1.3) or TLSv1.3",
    ),
    Setting(
        "LISTENER_SSL_ENABLED_CIPHER_SUITES",
        "listener.ssl.config.enabled_cipher_suites",
        Str(),
        "",
        "Comma-separated TLS 1.2 cipher suites (IANA/Java or OpenSSL names); empty = defaults",
    ),
    Setting(
        "LISTENER_SSL_CREDENTIALS_TYPE",
        "listener.ssl.config.credentials.type",
        Choice(("PEM", "KEYSTORE")),
        "PEM",
        "Where the server certificate and key come from: PEM files or a Java keystore",
    ),
    Setting(
        "LISTENER_SSL_PEM_CERT",
        "listener.ssl.config.credentials.pem.cert_file",
        Str(),
        "mqttserver.pem",
        "Server certificate or chain (PEM); may also hold the private key",
    ),
    Setting(
        "LISTENER_SSL_PEM_KEY",
        "listener.ssl.config.credentials.pem.key_file",
        Str(),
        "mqttserver_key.pem",
        "Server private key (PEM); read only when the certificate file holds no key",
    ),
    Setting(
        "LISTENER_SSL_PEM_KEY_PASSWORD",
        "listener.ssl.config.credentials.pem.key_password",
        Str(),
        "server_key_password",
        "Password of an encrypted PEM private key (PKCS#8 or traditional RSA/EC)",
    ),
    Setting(
        "LISTENER_SSL_KEY_STORE_TYPE",
        "listener.ssl.config.credentials.keystore.type",
        Choice(("JKS", "PKCS12")),
        "JKS",
        "Keystore format: JKS or PKCS12 (read without a JDK)",
    ),
    Setting(
        "LISTENER_SSL_KEY_STORE",
        "listener.ssl.config.credentials.keystore.store_file",
        Str(),
        "mqttserver.jks",
        "Keystore holding the server key and certificate chain",
    ),
    Setting(
        "LISTENER_SSL_KEY_STORE_PASSWORD",
        "listener.ssl.config.credentials.keystore.store_password",
        Str(),
        "server_ks_password",
        "Password of the keystore",
    ),
    Setting(
        "LISTENER_SSL_KEY_ALIAS",
        "listener.ssl.config.credentials.keystore.key_alias",
        Str(),
        "",
        "Alias of the server key in the keystore; empty = the first key entry that opens",
    ),
    Setting(
        "LISTENER_SSL_KEY_PASSWORD",
        "listener.ssl.config.credentials.keystore.key_password",
        Str(),
        "server_key_password",
        "Password of the server key inside the keystore",
    ),
    Setting(
        "LISTENER_SSL_TRUSTSTORE",
        "listener.ssl.config.truststore.store_file",
        Str(),
        "",
        "Trust anchors for client certificates (PEM bundle, JKS or PKCS12); when set, it "
        "alone decides which client certificates are trusted",
        pytbmq_only=True,
    ),
    Setting(
        "LISTENER_SSL_TRUSTSTORE_TYPE",
        "listener.ssl.config.truststore.type",
        Choice(("PEM", "JKS", "PKCS12")),
        "PEM",
        "Format of LISTENER_SSL_TRUSTSTORE",
        pytbmq_only=True,
    ),
    Setting(
        "LISTENER_SSL_TRUSTSTORE_PASSWORD",
        "listener.ssl.config.truststore.store_password",
        Str(),
        "",
        "Password of a JKS or PKCS12 truststore",
        pytbmq_only=True,
    ),
    Setting(
        "LISTENER_SSL_CLIENT_AUTH",
        "listener.ssl.config.client_auth",
        Choice(("NONE", "REQUESTED", "REQUIRED")),
        "REQUESTED",
        "Client certificates: NONE (not asked), REQUESTED (optional) or REQUIRED",
        pytbmq_only=True,
    ),
    Setting(
        "LISTENER_SSL_CRL",
        "listener.ssl.config.crl_file",
        Str(),
        "",
        "PEM certificate revocation list(s); a revoked client certificate fails the handshake",
        pytbmq_only=True,
    ),
    Setting(
        "LISTENER_SSL_RELOAD_INTERVAL_SEC",
        "listener.ssl.config.reload_interval_sec",
        Int(0, 86_400),
        "60",
        "Seconds between checks for changed TLS files (also reloaded on SIGHUP); 0 = off",
        pytbmq_only=True,
    ),
    Setting(
        "TLS_HANDSHAKE_TIMEOUT_SEC",
        "listener.tls_handshake_timeout_sec",
        Int(1, 600),
        "10",
        "Seconds a client may take to complete the TLS handshake",
        pytbmq_only=True,
    ),
    Setting(
        "LISTENER_WS_ENABLED",
        "listener.ws.enabled",
        Bool(),
        "true",
        "Enable the MQTT over WebSocket listener",
    ),
    Setting(
        "LISTENER_WS_BIND_ADDRESS",
        "listener.ws.bind_address",
        Host(),
        "0.0.0.0",
        "Address the MQTT over WebSocket listener binds to",
    ),
    Setting(
        "LISTENER_WS_BIND_PORT",
        "listener.ws.bind_port",
        _PORT,
        "8084",
        "Port the MQTT over WebSocket listener binds to; 0 picks any free port",
    ),
    Setting(
        "WS_NETTY_SUB_PROTOCOLS",
        "listener.ws.netty.sub_protocols",
        TokenList(),
        "mqttv3.1,mqtt",
        "WebSocket subprotocols the WS listener accepts; a client offering none is refused",
    ),
    Setting(
        "WS_NETTY_MAX_PAYLOAD_SIZE",
        "listener.ws.netty.max_payload_size",
        Int(16, 268_435_460),
        "65536",
        "Largest WebSocket frame payload and MQTT packet in bytes accepted on the WS listener",
    ),
    Setting(
        "WS_PATH",
        "listener.ws.path",
        UrlPath(),
        "/mqtt",
        "URL path of the MQTT endpoint on the WS listener (other paths get 404)",
        pytbmq_only=True,
    ),
    Setting(
        "LISTENER_WSS_ENABLED",
        "listener.wss.enabled",
        Bool(),
        "false",
        "Enable the MQTT over WebSocket Secure (WSS) listener",
    ),
    Setting(
        "LISTENER_WSS_BIND_ADDRESS",
        "listener.wss.bind_address",
        Host(),
        "0.0.0.0",
        "Address the WSS listener binds to",
    ),
    Setting(
        "LISTENER_WSS_BIND_PORT",
        "listener.wss.bind_port",
        _PORT,
        "8085",
        "Port the WSS listener binds to; 0 picks any free port",
    ),
    Setting(
        "WSS_NETTY_SUB_PROTOCOLS",
        "listener.wss.netty.sub_protocols",
        TokenList(),
        "mqttv3.1,mqtt",
        "WebSocket subprotocols the WSS listener accepts; a client offering none is refused",
    ),
    Setting(
        "WSS_NETTY_MAX_PAYLOAD_SIZE",
        "listener.wss.netty.max_payload_size",
        Int(16, 268_435_460),
        "65536",
        "Largest WebSocket frame payload and MQTT packet in bytes accepted on the WSS listener",
    ),
    Setting(
        "WSS_PATH",
        "listener.wss.path",
        UrlPath(),
        "/mqtt",
        "URL path of the MQTT endpoint on the WSS listener (other paths get 404)",
        pytbmq_only=True,
    ),
    Setting(
        "LISTENER_WSS_PROTOCOL",
        "listener.wss.config.protocol",
        TlsProtocol(),
        "TLSv1.2",
        "WSS: lowest TLS version accepted: TLSv1.2 (1.2 and 1.3) or TLSv1.3",
    ),
    Setting(
        "LISTENER_WSS_ENABLED_CIPHER_SUITES",
        "listener.wss.config.enabled_cipher_suites",
        Str(),
        "",
        "WSS: comma-separated TLS 1.2 cipher suites (IANA/Java or OpenSSL names); empty = defaults",
    ),
    Setting(
        "LISTENER_WSS_CREDENTIALS_TYPE",
        "listener.wss.config.credentials.type",
        Choice(("PEM", "KEYSTORE")),
        "PEM",
        "WSS: where the server certificate and key come from: PEM files or a Java keystore",
    ),
    Setting(
        "LISTENER_WSS_PEM_CERT",
        "listener.wss.config.credentials.pem.cert_file",
        Str(),
        "ws_mqtt_server.pem",
        "WSS: server certificate or chain (PEM); may also hold the private key",
    ),
    Setting(
        "LISTENER_WSS_PEM_KEY",
        "listener.wss.config.credentials.pem.key_file",
        Str(),
        "ws_mqtt_server_key.pem",
        "WSS: server private key (PEM); read only when the certificate file holds no key",
    ),
    Setting(
        "LISTENER_WSS_PEM_KEY_PASSWORD",
        "listener.wss.config.credentials.pem.key_password",
        Str(),
        "ws_server_key_password",
        "WSS: password of an encrypted PEM private key",
    ),
    Setting(
        "LISTENER_WSS_KEY_STORE_TYPE",
        "listener.wss.config.credentials.keystore.type",
        Choice(("JKS", "PKCS12")),
        "JKS",
        "WSS: keystore format: JKS or PKCS12",
    ),
    Setting(
        "LISTENER_WSS_KEY_STORE",
        "listener.wss.config.credentials.keystore.store_file",
        Str(),
        "ws_mqtt_server.jks",
        "WSS: keystore holding the server key and certificate chain",
    ),
    Setting(
        "LISTENER_WSS_KEY_STORE_PASSWORD",
        "listener.wss.config.credentials.keystore.store_password",
        Str(),
        "ws_server_ks_password",
        "WSS: password of the keystore",
    ),
    Setting(
        "LISTENER_WSS_KEY_ALIAS",
        "listener.wss.config.credentials.keystore.key_alias",
        Str(),
        "",
        "WSS: alias of the server key in the keystore; empty = the first key entry that opens",
    ),
    Setting(
        "LISTENER_WSS_KEY_PASSWORD",
        "listener.wss.config.credentials.keystore.key_password",
        Str(),
        "ws_server_key_password",
        "WSS: password of the server key inside the keystore",
    ),
    Setting(
        "LISTENER_WSS_TRUSTSTORE",
        "listener.wss.config.truststore.store_file",
        Str(),
        "",
        "WSS: trust anchors for client certificates (PEM bundle, JKS or PKCS12); when set, "
        "it alone decides which client certificates are trusted",
        pytbmq_only=True,
    ),
    Setting(
        "LISTENER_WSS_TRUSTSTORE_TYPE",
        "listener.wss.config.truststore.type",
        Choice(("PEM", "JKS", "PKCS12")),
        "PEM",
        "Format of LISTENER_WSS_TRUSTSTORE",
        pytbmq_only=True,
    ),
    Setting(
        "LISTENER_WSS_TRUSTSTORE_PASSWORD",
        "listener.wss.config.truststore.store_password",
        Str(),
        "",
        "WSS: password of a JKS or PKCS12 truststore",
        pytbmq_only=True,
    ),
    Setting(
        "LISTENER_WSS_CLIENT_AUTH",
        "listener.wss.config.client_auth",
        Choice(("NONE", "REQUESTED", "REQUIRED")),
        "REQUESTED",
        "WSS: client certificates: NONE (not asked), REQUESTED (optional) or REQUIRED",
        pytbmq_only=True,
    ),
    Setting(
        "LISTENER_WSS_CRL",
        "listener.wss.config.crl_file",
        Str(),
        "",
        "WSS: PEM certificate revocation list(s); a revoked client certificate fails the handshake",
        pytbmq_only=True,
    ),
    Setting(
        "LISTENER_WSS_RELOAD_INTERVAL_SEC",
        "listener.wss.config.reload_interval_sec",
        Int(0, 86_400),
        "60",
        "WSS: seconds between checks for changed TLS files (also reloaded on SIGHUP); 0 = off",
        pytbmq_only=True,
    ),
    Setting(
        "WS_ALLOWED_ORIGINS",
        "listener.websocket.allowed_origins",
        OriginList(),
        "",
        "WS and WSS: browser origins allowed to connect (others get 403); empty = any",
        pytbmq_only=True,
    ),
    Setting(
        "WS_TRUSTED_PROXIES",
        "listener.websocket.trusted_proxies",
        CidrList(),
        "",
        "WS and WSS: proxies whose X-Forwarded-For / X-Real-IP headers give the client address",
        pytbmq_only=True,
    ),
    Setting(
        "MQTT_CONNECT_TIMEOUT_SEC",
        # TBMQ has no such setting; the path sits next to TBMQ's mqtt.connect.threads.
        "mqtt.connect.timeout-sec",
        Int(1, 3600),
        "10",
        "Seconds a new connection may stay open without sending CONNECT",
        pytbmq_only=True,
    ),
    Setting(
        "MQTT_MAX_IN_FLIGHT_MSGS",
        "mqtt.max-in-flight-msgs",
        Int(1, 65535),
        "1000",
        "Most unacknowledged QoS 1/2 PUBLISH packets per client; advertised as Receive Maximum",
    ),
    Setting(
        "MQTT_FLOW_CONTROL_MQTT_3X_RECEIVE_MAX",
        "mqtt.flow-control.mqtt3x-receive-max",
        Int(1, 65535),
        "65535",
        "Most unacknowledged QoS 1/2 PUBLISH packets the broker sends an MQTT 3.x client",
    ),
    Setting(
        "MQTT_KEEP_ALIVE_MAX_KEEP_ALIVE_SEC",
        "mqtt.keep-alive.max-keep-alive",
        _UINT16,
        "600",
        "Largest keep alive in seconds granted to MQTT 5 clients; returned as Server Keep Alive",
    ),
    Setting(
        "MQTT_TOPIC_MAX_SEGMENTS_COUNT",
        "mqtt.topic.max-segments-count",
        _UINT16,
        "0",
        "Most levels a topic may have; 0 means unlimited",
    ),
    Setting(
        "MQTT_TOPIC_ALIAS_MAX",
        "mqtt.topic.alias-max",
        _UINT16,
        "10",
        "Most topic aliases per connection; 0 disables topic aliases",
    ),
    Setting(
        "MQTT_TOPIC_MIN_LENGTH_FOR_ALIAS_REPLACEMENT",
        "mqtt.topic.min-length-for-alias-replacement",
        _UINT16,
        "50",
        "The broker only assigns its own topic aliases to topics at least this long",
    ),
    Setting(
        "MQTT_SHARED_SUBSCRIPTIONS_PROCESSING_TYPE",
        "mqtt.shared-subscriptions.processing-type",
        Choice(("ROUND_ROBIN",)),
        "ROUND_ROBIN",
        "How messages are split between the members of a shared subscription",
    ),
    Setting(
        "MQTT_SUBSCRIPTION_ROOT_MULTI_LVL_WILDCARD",
        # Added to TBMQ in 2026 (thingsboard/tbmq pull request 285); the YAML path could not
        # be checked against TBMQ's file, so it is derived from the variable name in TBMQ's
        # style.
        "mqtt.subscription.root-multi-lvl-wildcard",
        Bool(),
        "true",
        "Allow clients to subscribe to the topic filter '#' alone",
    ),
    Setting(
        "MQTT_RETAIN_MSG_EXPIRY_PROCESSING_PERIOD_MS",
        "mqtt.retain-msg.expiry-processing-period-ms",
        Int(100, 86_400_000),
        "60000",
        "Milliseconds between sweeps that remove expired retained messages",
    ),
    Setting(
        "MQTT_CLIENT_SESSION_EXPIRY_MAX_EXPIRY_INTERVAL",
        "mqtt.client-session-expiry.max-expiry-interval",
        Int(0, 4_294_967_295),
        "604800",
        "Largest session expiry interval in seconds granted to a client",
    ),
    Setting(
        "MQTT_3_1_MAX_CLIENT_ID_LENGTH",
        "mqtt.version-3-1.max-client-id-length",
        Int(1, 65535),
        "1024",
        "Longest client identifier accepted from MQTT 3.1 clients",
    ),
    Setting(
        "MQTT_PERSISTENT_SESSION_DEVICE_PERSISTED_MESSAGES_LIMIT",
        "mqtt.persistent-session.device.persisted-messages.limit",
        Int(1, 10_000_000),
        "10000",
        "Most messages queued for one persistent session",
    ),
    Setting(
        "MQTT_RESPONSE_INFO",
        "mqtt.response-info",
        Str(max_utf8_bytes=65535),
        "",
        "Response Information sent to MQTT 5 clients that request it; empty sends none",
    ),
    Setting(
        "PYTBMQ_DATA_DIR",
        "pytbmq.data_dir",
        PathKind(),
        "./data",
        "Directory for everything the broker writes to disk",
        pytbmq_only=True,
    ),
    Setting(
        "PYTBMQ_LOG_LEVEL",
        "pytbmq.log_level",
        Choice(("DEBUG", "INFO", "WARNING", "ERROR")),
        "INFO",
        "Lowest level of the log records written",
        pytbmq_only=True,
    ),
    Setting(
        "PYTBMQ_GC_THRESHOLDS",
        "pytbmq.gc_thresholds",
        GcThresholds(),
        "300,1,500",
        "Python's garbage-collector thresholds (gen0,gen1,gen2) once the broker listens; "
        "short young collections and rare full ones keep pauses small (docs/limits.md)",
        pytbmq_only=True,
    ),
    Setting(
        "PYTBMQ_GC_FREEZE_SEC",
        "pytbmq.gc_freeze_sec",
        Int(0, 3600),
        "1",
        "Seconds between freezes of the heap (gc.freeze), so that full collections only "
        "visit what is younger; 0 turns freezing off (docs/limits.md)",
        pytbmq_only=True,
    ),
    Setting(
        "PYTBMQ_GC_FULL_COLLECT_SEC",
        "pytbmq.gc_full_collect_sec",
        Int(0, 2**31 - 1),
        "3600",
        "Seconds between collections of the whole heap while freezing, which free any "
        "reference cycle among frozen objects; 0: never (docs/limits.md)",
        pytbmq_only=True,
    ),
    Setting(
        "SHUTDOWN_TIMEOUT_SEC",
        "pytbmq.shutdown_timeout_sec",
        Int(1, 600),
        "10",
        "Seconds allowed for a graceful shutdown",
        pytbmq_only=True,
    ),
    Setting(
        "MQTT_PERSISTENT_SESSION_DEVICE_PERSISTED_MESSAGES_TTL",
        "mqtt.persistent-session.device.persisted-messages.ttl",
        Int(1, 4_294_967_295),
        "604800",
        "Seconds a message may wait in the queue of an offline DEVICE persistent session",
    ),
    Setting(
        "MQTT_PERSISTENT_SESSION_APP_PERSISTED_MESSAGES_LIMIT",
        # TBMQ keeps APPLICATION sessions' messages in Kafka topics and has no such limit;
        # the path mirrors its device.persisted-messages.limit.
        "mqtt.persistent-session.app.persisted-messages.limit",
        Int(1, 10_000_000),
        "100000",
        "Most messages queued for one APPLICATION persistent session",
        pytbmq_only=True,
    ),
    Setting(
        "PYTBMQ_STORAGE",
        "pytbmq.storage.type",
        Choice(("sqlite", "memory")),
        "sqlite",
        "Where sessions, queued messages and retained messages are kept: sqlite (durable, "
        "in PYTBMQ_DATA_DIR) or memory (lost at exit)",
        pytbmq_only=True,
    ),
    Setting(
        "PYTBMQ_STORAGE_SYNC",
        "pytbmq.storage.sync",
        Choice(("NORMAL", "FULL")),
        "NORMAL",
        "SQLite synchronous mode: NORMAL survives a crash of the broker, FULL also a power "
        "loss (slower)",
        pytbmq_only=True,
    ),
    Setting(
        "SECURITY_MQTT_BASIC_ENABLED",
        # TBMQ 2.1's path; TBMQ 2.2+ keeps providers in its database and reads this only to
        # seed them on upgrade (tbmq-reference §3.2).
        "security.mqtt.basic.enabled",
        Bool(),
        "false",
        "Enable the MQTT Basic provider: client id / username / password credentials",
    ),
    Setting(
        "SECURITY_MQTT_BASIC_STRATEGY",
        "security.mqtt.basic.auth_strategy",
        Choice(("CLIENT_ID_AND_USERNAME", "CLIENT_ID", "USERNAME")),
        "CLIENT_ID_AND_USERNAME",
        "Which credentials ids MQTT Basic looks up: username, client id and both "
        "(CLIENT_ID_AND_USERNAME), or only one of them",
        pytbmq_only=True,
    ),
    Setting(
        "SECURITY_MQTT_SSL_ENABLED",
        "security.mqtt.ssl.enabled",
        Bool(),
        "false",
        "Enable the X.509 certificate chain provider (TLS listeners only)",
    ),
    Setting(
        "SECURITY_MQTT_SSL_SKIP_VALIDITY_CHECK_FOR_CLIENT_CERT",
        "security.mqtt.ssl.skip_validity_check_for_client_cert",
        Bool(),
        "false",
        "Accept client certificates outside their validity dates, at the TLS handshake "
        "and in the X.509 provider",
    ),
    Setting(
        "SECURITY_MQTT_SSL_CN_MATCH",
        "security.mqtt.ssl.cn_match",
        Choice(("FIND", "FULL")),
        "FIND",
        "How X.509 CN patterns match: FIND (TBMQ: anywhere in the CN) or FULL (the whole CN)",
        pytbmq_only=True,
    ),
    Setting(
        "SECURITY_MQTT_SCRAM_ENABLED",
        "security.mqtt.scram.enabled",
        Bool(),
        "false",
        "Enable SCRAM-SHA-256/512 enhanced authentication for MQTT 5 clients",
        pytbmq_only=True,
    ),
    Setting(
        "SECURITY_MQTT_AUTH_PRIORITY",
        "security.mqtt.auth_priority",
        ProviderOrder(("BASIC", "X_509"), (("MQTT_BASIC", "BASIC"), ("SSL", "X_509"))),
        "BASIC,X_509",
        "Order in which the enabled providers are tried; the first that finds the client decides",
        pytbmq_only=True,
    ),
    Setting(
        "SECURITY_MQTT_AUTH_STRATEGY",
        "security.mqtt.auth_strategy",
        Choice(("BOTH", "SINGLE")),
        "BOTH",
        "BOTH: every enabled provider on every listener; SINGLE: only X.509 on TLS "
        "listeners and only MQTT Basic on the others (TBMQ 2.1)",
    ),
    Setting(
        "CACHE_SPECS_BASIC_CREDENTIALS_PASSWORD_TTL",
        "cache.specs.basicCredentialsPassword.timeToLiveInMinutes",
        Int(0, 1440),
        "1",
        "Minutes a verified MQTT Basic password is remembered (in memory, as a keyed "
        "hash) so reconnects skip the slow hash; 0 disables",
    ),
    Setting(
        "SECURITY_UNAUTH_CLIENTS_ENABLED",
        "security.mqtt.unauthorized_clients.enabled",
        Bool(),
        "true",
        "Record refused CONNECTs and failed client-certificate handshakes "
        "(`pytbmq unauthorized list`)",
    ),
    Setting(
        "SQL_TTL_UNAUTHORIZED_CLIENT_TTL",
        "sql.ttl.unauthorized_client.ttl",
        Int(0, 2**31 - 1),
        "259200",
        "Seconds an unauthorized-client record is kept; 0 keeps them until cleared",
    ),
    Setting(
        "BLOCKED_CLIENT_CLEANUP_PERIOD_MINUTES",
        "mqtt.blocked-client.cleanup.period",
        Int(1, 10080),
        "5",
        "Minutes between removals of expired blocked-client entries",
    ),
    Setting(
        "BLOCKED_CLIENT_CLEANUP_TTL_MINUTES",
        "mqtt.blocked-client.cleanup.ttl",
        Int(0, 2**31 - 1),
        "10080",
        "Minutes an expired blocked-client entry is kept before it is removed",
    ),
    Setting(
        "MQTT_TOTAL_RATE_LIMITS_ENABLED",
        "mqtt.rate-limits.total.enabled",
        Bool(),
        "false",
        "Limit the messages the whole broker takes in and sends out (token buckets)",
    ),
    Setting(
        "MQTT_TOTAL_RATE_LIMITS_CONFIG",
        "mqtt.rate-limits.total.config",
        RateLimits(),
        "1000:1,50000:60",
        "Broker-wide limits as capacity:seconds pairs, e.g. 1000:1,50000:60",
    ),
    Setting(
        "MQTT_INCOMING_RATE_LIMITS_ENABLED",
        "mqtt.rate-limits.incoming-publish.enabled",
        Bool(),
        "false",
        "Limit the PUBLISH packets each client may send",
    ),
    Setting(
        "MQTT_INCOMING_RATE_LIMITS_CLIENT_CONFIG",
        "mqtt.rate-limits.incoming-publish.client-config",
        RateLimits(),
        "10:1,300:60",
        "Per-client incoming limits as capacity:seconds pairs",
    ),
    Setting(
        "MQTT_OUTGOING_RATE_LIMITS_ENABLED",
        "mqtt.rate-limits.outgoing-publish.enabled",
        Bool(),
        "false",
        "Limit the QoS 0 messages each non-persistent client is sent; the excess is dropped",
    ),
    Setting(
        "MQTT_OUTGOING_RATE_LIMITS_CLIENT_CONFIG",
        "mqtt.rate-limits.outgoing-publish.client-config",
        RateLimits(),
        "10:1,300:60",
        "Per-client outgoing limits as capacity:seconds pairs",
    ),
    Setting(
        "MQTT_SESSIONS_LIMIT",
        "mqtt.sessions-limit",
        Int(0, 2**31 - 1),
        "0",
        "Most sessions (connected and stored) the broker keeps; a new client beyond it is "
        "refused with Quota exceeded; 0 disables",
    ),
    Setting(
        "MQTT_APPLICATION_CLIENTS_LIMIT",
        "mqtt.application-clients-limit",
        Int(0, 2**31 - 1),
        "0",
        "Most APPLICATION persistent sessions; 0 disables",
    ),
    Setting(
        "NETTY_WRITE_BUFFER_HIGH_WATER_MARK",
        "netty.write-buffer.high-water-mark",
        Int(1024, 2**30),
        "1310720",
        "Bytes waiting to be sent to a client above which it is a slow consumer: QoS 0 to "
        "it is dropped, QoS 1/2 waits in its session queue",
    ),
    Setting(
        "NETTY_WRITE_BUFFER_LOW_WATER_MARK",
        "netty.write-buffer.low-water-mark",
        Int(0, 2**30),
        "655360",
        "Bytes waiting below which a slow consumer is sent to again",
    ),
    *(
        setting
        for label in ("tcp", "ssl", "ws", "wss")
        for setting in _connection_limit_settings(label)
    ),
    *(_handshake_limit_setting(label) for label in ("ssl", "wss")),
    Setting(
        "HTTP_ENABLED",
        "server.enabled",
        Bool(),
        "true",
        "Serve the admin REST API, metrics and health on HTTP_BIND_ADDRESS:HTTP_BIND_PORT",
        pytbmq_only=True,
    ),
    Setting(
        "HTTP_BIND_ADDRESS",
        "server.address",
        Host(),
        "0.0.0.0",
        "Address the admin REST API binds to",
    ),
    Setting(
        "HTTP_BIND_PORT",
        "server.port",
        _PORT,
        "8083",
        "Port of the admin REST API; 0 picks any free port",
    ),
    Setting(
        "SSL_ENABLED",
        "server.ssl.enabled",
        Bool(),
        "false",
        "Serve the admin REST API over HTTPS",
    ),
    Setting(
        "SSL_CREDENTIALS_TYPE",
        "server.ssl.credentials.type",
        Choice(("PEM", "KEYSTORE")),
        "PEM",
        "Where the HTTPS certificate and key come from: PEM files or a Java keystore",
    ),
    Setting(
        "SSL_PEM_CERT",
        "server.ssl.credentials.pem.cert_file",
        Str(),
        "server.pem",
        "HTTPS certificate chain (PEM); may also hold the key",
    ),
    Setting(
        "SSL_PEM_KEY",
        "server.ssl.credentials.pem.key_file",
        Str(),
        "server_key.pem",
        "HTTPS private key (PEM), when not inside SSL_PEM_CERT",
    ),
    Setting(
        "SSL_PEM_KEY_PASSWORD",
        "server.ssl.credentials.pem.key_password",
        Str(),
        "server_key_password",
        "Password of an encrypted HTTPS private key",
    ),
    Setting(
        "SSL_KEY_STORE_TYPE",
        "server.ssl.credentials.keystore.type",
        Choice(("JKS", "PKCS12")),
        "PKCS12",
        "HTTPS keystore format",
    ),
    Setting(
        "SSL_KEY_STORE",
        "server.ssl.credentials.keystore.store_file",
        Str(),
        "classpath:keystore/keystore.p12",
        "HTTPS keystore file",
    ),
    Setting(
        "SSL_KEY_STORE_PASSWORD",
        "server.ssl.credentials.keystore.store_password",
        Str(),
        "thingsboard_mqtt_broker",
        "HTTPS keystore password",
    ),
    Setting(
        "SSL_KEY_ALIAS",
        "server.ssl.credentials.keystore.key_alias",
        Str(),
        "tomcat",
        "Alias of the HTTPS key in the keystore",
    ),
    Setting(
        "SSL_KEY_PASSWORD",
        "server.ssl.credentials.keystore.key_password",
        Str(),
        "thingsboard_mqtt_broker",
        "Password of the HTTPS key in the keystore",
    ),
    Setting(
        "SECURITY_ADMIN_USERNAME",
        "security.admin.username",
        Str(),
        "admin",
        "User name of the first admin, created on first start",
        pytbmq_only=True,
    ),
    Setting(
        "SECURITY_ADMIN_PASSWORD",
        "security.admin.password",
        Str(),
        "",
        "Password of the first admin; empty: a random one is generated and printed once",
        pytbmq_only=True,
    ),
    Setting(
        "JWT_TOKEN_EXPIRATION_TIME",
        "security.jwt.tokenExpirationTime",
        Int(60, 2**31 - 1),
        "9000",
        "Seconds an admin access token (JWT) is valid",
    ),
    Setting(
        "JWT_REFRESH_TOKEN_EXPIRATION_TIME",
        "security.jwt.refreshTokenExpTime",
        Int(60, 2**31 - 1),
        "604800",
        "Seconds an admin refresh token is valid",
    ),
    Setting(
        "JWT_TOKEN_ISSUER",
        "security.jwt.tokenIssuer",
        Str(),
        "thingsboard.io",
        "Issuer (iss) of the admin tokens",
    ),
    Setting(
        "JWT_TOKEN_SIGNING_KEY",
        "security.jwt.tokenSigningKey",
        Str(),
        "",
        "HMAC key signing admin tokens; empty: a random key kept in PYTBMQ_DATA_DIR",
    ),
    Setting(
        "METRICS_AUTH_ENABLED",
        "management.metrics.auth.enabled",
        Bool(),
        "true",
        "Require an admin token for /actuator/prometheus and /metrics",
        pytbmq_only=True,
    ),
    Setting(
        "SWAGGER_ENABLED",
        "springdoc.api-docs.enabled",
        Bool(),
        "true",
        "Serve the OpenAPI document and the interactive API docs (/swagger-ui/)",
    ),
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Settings:
    """The broker's settings, one typed attribute per entry of `SETTINGS`, in the same order.

    `load_settings(environ={})` gives the defaults; `dataclasses.replace` gives variations.
    """

    listener_tcp_enabled: bool
    listener_tcp_bind_address: str
    listener_tcp_bind_port: int
    tcp_netty_max_payload_size: int
    listener_ssl_enabled: bool
    listener_ssl_bind_address: str
    listener_ssl_bind_port: int
    ssl_netty_max_payload_size: int
    listener_ssl_protocol: str
    listener_ssl_enabled_cipher_suites: str
    listener_ssl_credentials_type: str
    listener_ssl_pem_cert: str
    listener_ssl_pem_key: str
    listener_ssl_pem_key_password: str
    listener_ssl_key_store_type: str
    listener_ssl_key_store: str
    listener_ssl_key_store_password: str
    listener_ssl_key_alias: str
    listener_ssl_key_password: str
    listener_ssl_truststore: str
    listener_ssl_truststore_type: str
    listener_ssl_truststore_password: str
    listener_ssl_client_auth: str
    listener_ssl_crl: str
    listener_ssl_reload_interval_sec: int
    tls_handshake_timeout_sec: int
    listener_ws_enabled: bool
    listener_ws_bind_address: str
    listener_ws_bind_port: int
    ws_netty_sub_protocols: str
    ws_netty_max_payload_size: int
    ws_path: str
    listener_wss_enabled: bool
    listener_wss_bind_address: str
    listener_wss_bind_port: int
    wss_netty_sub_protocols: str
    wss_netty_max_payload_size: int
    wss_path: str
    listener_wss_protocol: str
    listener_wss_enabled_cipher_suites: str
    listener_wss_credentials_type: str
    listener_wss_pem_cert: str
    listener_wss_pem_key: str
    listener_wss_pem_key_password: str
    listener_wss_key_store_type: str
    listener_wss_key_store: str
    listener_wss_key_store_password: str
    listener_wss_key_alias: str
    listener_wss_key_password: str
    listener_wss_truststore: str
    listener_wss_truststore_type: str
    listener_wss_truststore_password: str
    listener_wss_client_auth: str
    listener_wss_crl: str
    listener_wss_reload_interval_sec: int
    ws_allowed_origins: str
    ws_trusted_proxies: str
    mqtt_connect_timeout_sec: int
    mqtt_max_in_flight_msgs: int
    mqtt_flow_control_mqtt_3x_receive_max: int
    mqtt_keep_alive_max_keep_alive_sec: int
    mqtt_topic_max_segments_count: int
    mqtt_topic_alias_max: int
    mqtt_topic_min_length_for_alias_replacement: int
    mqtt_shared_subscriptions_processing_type: str
    mqtt_subscription_root_multi_lvl_wildcard: bool
    mqtt_retain_msg_expiry_processing_period_ms: int
    mqtt_client_session_expiry_max_expiry_interval: int
    mqtt_3_1_max_client_id_length: int
    mqtt_persistent_session_device_persisted_messages_limit: int
    mqtt_response_info: str
    pytbmq_data_dir: Path
    pytbmq_log_level: str
    pytbmq_gc_thresholds: str
    pytbmq_gc_freeze_sec: int
    pytbmq_gc_full_collect_sec: int
    shutdown_timeout_sec: int
    mqtt_persistent_session_device_persisted_messages_ttl: int
    mqtt_persistent_session_app_persisted_messages_limit: int
    pytbmq_storage: str
    pytbmq_storage_sync: str
    security_mqtt_basic_enabled: bool
    security_mqtt_basic_strategy: str
    security_mqtt_ssl_enabled: bool
    security_mqtt_ssl_skip_validity_check_for_client_cert: bool
    security_mqtt_ssl_cn_match: str
    security_mqtt_scram_enabled: bool
    security_mqtt_auth_priority: tuple[str, ...]
    security_mqtt_auth_strategy: str
    cache_specs_basic_credentials_password_ttl: int
    security_unauth_clients_enabled: bool
    sql_ttl_unauthorized_client_ttl: int
    blocked_client_cleanup_period_minutes: int
    blocked_client_cleanup_ttl_minutes: int
    mqtt_total_rate_limits_enabled: bool
    mqtt_total_rate_limits_config: tuple[tuple[int, int], ...]
    mqtt_incoming_rate_limits_enabled: bool
    mqtt_incoming_rate_limits_client_config: tuple[tuple[int, int], ...]
    mqtt_outgoing_rate_limits_enabled: bool
    mqtt_outgoing_rate_limits_client_config: tuple[tuple[int, int], ...]
    mqtt_sessions_limit: int
    mqtt_application_clients_limit: int
    netty_write_buffer_high_water_mark: int
    netty_write_buffer_low_water_mark: int
    listener_tcp_max_connections: int
    listener_tcp_new_connections_per_ip_per_sec: int
    listener_ssl_max_connections: int
    listener_ssl_new_connections_per_ip_per_sec: int
    listener_ws_max_connections: int
    listener_ws_new_connections_per_ip_per_sec: int
    listener_wss_max_connections: int
    listener_wss_new_connections_per_ip_per_sec: int
    listener_ssl_max_handshakes_in_progress: int
    listener_wss_max_handshakes_in_progress: int
    http_enabled: bool
    http_bind_address: str
    http_bind_port: int
    ssl_enabled: bool
    ssl_credentials_type: str
    ssl_pem_cert: str
    ssl_pem_key: str
    ssl_pem_key_password: str
    ssl_key_store_type: str
    ssl_key_store: str
    ssl_key_store_password: str
    ssl_key_alias: str
    ssl_key_password: str
    security_admin_username: str
    security_admin_password: str
    jwt_token_expiration_time: int
    jwt_refresh_token_expiration_time: int
    jwt_token_issuer: str
    jwt_token_signing_key: str
    metrics_auth_enabled: bool
    swagger_enabled: bool


# --------------------------------------------------------------------------- loading


def load_settings(
    environ: Mapping[str, str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
) -> Settings:
    """Read every setting from `environ` (default: os.environ), `config_file` and defaults.

    Raises ConfigError naming the file when it is missing, unreadable, not YAML or not a
    mapping, and one ConfigError listing every invalid value, one per line, otherwise.
    """
    env = os.environ if environ is None else environ
    document: Mapping[Any, Any] | None = None
    source = ""
    if config_file is not None:
        source = os.fspath(config_file)
        document = _read_yaml(source)
    return Settings(**_collect(SETTINGS, env, document, source))


def describe_settings() -> list[tuple[str, str, str]]:
    """(environment variable, default, help) of every setting, in table order."""
    return [(s.env, s.default, s.help) for s in SETTINGS]


def redact(env_name: str, value: str) -> str:
    """`value` quoted for a message, or '***' when `env_name` names a secret (…PASSWORD…)."""
    if "PASSWORD" in env_name.upper():
        return "'***'"
    return repr(value)


class _PlaceholderError(ValueError):
    """A ${...} placeholder in the YAML file cannot be resolved."""


_MISSING: Any = object()


def _collect(
    table: Sequence[Setting],
    environ: Mapping[str, str],
    document: Mapping[Any, Any] | None,
    source: str,
) -> dict[str, Any]:
    """Typed value of every setting in `table`, keyed by field name; ConfigError lists all
    the invalid ones."""
    values: dict[str, Any] = {}
    errors: list[str] = []
    for setting in table:
        origin = ""
        if setting.env in environ:
            raw = environ[setting.env]
        else:
            node = _MISSING
            if document is not None:
                node = _lookup(document, setting.yaml_path.split("."))
            if node is _MISSING:
                raw = setting.default
                origin = " (built-in default)"
            else:
                origin = f" (from {setting.yaml_path} in {source})"
                text = _scalar_text(node)
                if text is None:
                    what = "a mapping" if isinstance(node, Mapping) else "a list"
                    errors.append(
                        f"{setting.env}{origin} is invalid: expected "
                        f"{setting.kind.expected()}, found {what}"
                    )
                    continue
                try:
                    raw = _resolve_placeholders(text, environ)
                except _PlaceholderError as exc:
                    errors.append(
                        f"{setting.env}={redact(setting.env, text)}{origin} is invalid: {exc}"
                    )
                    continue
        try:
            values[setting.field] = setting.kind.parse(raw)
        except ValueError:
            errors.append(
                f"{setting.env}={redact(setting.env, raw)}{origin} is invalid: "
                f"expected {setting.kind.expected()}"
            )
    if errors:
        raise ConfigError("\n".join(errors))
    return values


def _read_yaml(source: str) -> Mapping[Any, Any]:
    """The top-level mapping of the YAML file `source`; an empty file is an empty mapping."""
    try:
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ConfigError(f"config file {source!r} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {source!r} is not UTF-8 text: {exc.reason}") from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"config file {source!r} cannot be read: {reason}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"config file {source!r} is not valid YAML: {_yaml_problem(exc)}"
        ) from None
    if document is None:  # empty, or nothing but comments
        return {}
    if not isinstance(document, Mapping):
        raise ConfigError(
            f"config file {source!r} must hold a mapping at the top level, "
            f"not {type(document).__name__}"
        )
    return document


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line describing a YAML syntax error."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "syntax error"
        if mark is not None:
            return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
        return problem
    return " ".join(str(exc).split())


def _lookup(node: Any, parts: Sequence[str]) -> Any:
    """The value at `parts` below `node`, or _MISSING.

    Like Spring, a key may itself contain dots ("spring.jpa.open-in-view: x" at the top
    level), so every split of the remaining path is tried, longest key first.
    """
    if not parts:
        return node
    if not isinstance(node, Mapping):
        return _MISSING
    for end in range(len(parts), 0, -1):
        key = ".".join(parts[:end])
        if key in node:
            found = _lookup(node[key], parts[end:])
            if found is not _MISSING:
                return found
    return _MISSING


def _scalar_text(node: Any) -> str | None:
    """The string form of a YAML scalar as Spring would see it; None for mappings/lists."""
    if isinstance(node, Mapping | list | tuple | set):
        return None
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


def _resolve_placeholders(text: str, environ: Mapping[str, str]) -> str:
    """`text` with each ``${NAME:default}`` / ``${NAME}`` replaced from `environ`.

    The default runs from the first ':' to the matching '}' and may hold placeholders itself.
    """
    out: list[str] = []
    pos = 0
    while True:
        start = text.find("${", pos)
        if start < 0:
            out.append(text[pos:])
            return "".join(out)
        out.append(text[pos:start])
        end = _placeholder_end(text, start)
        if end < 0:
            raise _PlaceholderError("a placeholder '${' has no closing '}'")
        name, colon, default = text[start + 2 : end].partition(":")
        if not name:
            raise _PlaceholderError("a placeholder has no variable name")
        if name in environ:
            out.append(environ[name])
        elif colon:
            out.append(_resolve_placeholders(default, environ))
        else:
            raise _PlaceholderError(
                f"the placeholder ${{{name}}} has no default and {name} is not set"
            )
        pos = end + 1


def _placeholder_end(text: str, start: int) -> int:
    """Index of the '}' closing the placeholder opened at `start`, or -1."""
    depth = 0
    index = start + 2
    while index < len(text):
        char = text[index]
        if char == "{":  # "${" or a plain "{": either nests, as in Spring
            depth += 1
        elif char == "}":
            if depth == 0:
                return index
            depth -= 1
        index += 1
    return -1
