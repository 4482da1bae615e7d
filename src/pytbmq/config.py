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
    "Setting",
    "Settings",
    "Str",
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


# --------------------------------------------------------------------------- the table


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
        "SHUTDOWN_TIMEOUT_SEC",
        "pytbmq.shutdown_timeout_sec",
        Int(1, 600),
        "10",
        "Seconds allowed for a graceful shutdown",
        pytbmq_only=True,
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
    shutdown_timeout_sec: int


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
