"""Tests of pytbmq.config: sources and precedence, placeholders, validation, docs."""

from __future__ import annotations

import dataclasses
import re
import sys
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
try:
    import pytbmq  # noqa: F401
except ModuleNotFoundError:  # running from a checkout without an installed package
    sys.path.insert(0, str(ROOT / "src"))

import pytest  # noqa: E402
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pytbmq.config import (  # noqa: E402
    SETTINGS,
    Bool,
    Choice,
    Float,
    Host,
    Int,
    PathKind,
    Setting,
    Settings,
    Str,
    _collect,
    describe_settings,
    load_settings,
    redact,
)
from pytbmq.errors import ConfigError  # noqa: E402

DOCS = ROOT / "docs" / "configuration.md"

TBMQ_DEFAULTS = {
    "listener_tcp_enabled": True,
    "listener_tcp_bind_address": "0.0.0.0",
    "listener_tcp_bind_port": 1883,
    "tcp_netty_max_payload_size": 65536,
    "listener_ssl_enabled": False,
    "listener_ssl_bind_address": "0.0.0.0",
    "listener_ssl_bind_port": 8883,
    "ssl_netty_max_payload_size": 65536,
    "listener_ssl_protocol": "TLSv1.2",
    "listener_ssl_enabled_cipher_suites": "",
    "listener_ssl_credentials_type": "PEM",
    "listener_ssl_pem_cert": "mqttserver.pem",
    "listener_ssl_pem_key": "mqttserver_key.pem",
    "listener_ssl_pem_key_password": "server_key_password",
    "listener_ssl_key_store_type": "JKS",
    "listener_ssl_key_store": "mqttserver.jks",
    "listener_ssl_key_store_password": "server_ks_password",
    "listener_ssl_key_alias": "",
    "listener_ssl_key_password": "server_key_password",
    "listener_ssl_truststore": "",
    "listener_ssl_truststore_type": "PEM",
    "listener_ssl_truststore_password": "",
    "listener_ssl_client_auth": "REQUESTED",
    "listener_ssl_crl": "",
    "listener_ssl_reload_interval_sec": 60,
    "tls_handshake_timeout_sec": 10,
    "listener_ws_enabled": True,
    "listener_ws_bind_address": "0.0.0.0",
    "listener_ws_bind_port": 8084,
    "ws_netty_sub_protocols": "mqttv3.1,mqtt",
    "ws_netty_max_payload_size": 65536,
    "ws_path": "/mqtt",
    "listener_wss_enabled": False,
    "listener_wss_bind_address": "0.0.0.0",
    "listener_wss_bind_port": 8085,
    "wss_netty_sub_protocols": "mqttv3.1,mqtt",
    "wss_netty_max_payload_size": 65536,
    "wss_path": "/mqtt",
    "listener_wss_protocol": "TLSv1.2",
    "listener_wss_enabled_cipher_suites": "",
    "listener_wss_credentials_type": "PEM",
    "listener_wss_pem_cert": "ws_mqtt_server.pem",
    "listener_wss_pem_key": "ws_mqtt_server_key.pem",
    "listener_wss_pem_key_password": "ws_server_key_password",
    "listener_wss_key_store_type": "JKS",
    "listener_wss_key_store": "ws_mqtt_server.jks",
    "listener_wss_key_store_password": "ws_server_ks_password",
    "listener_wss_key_alias": "",
    "listener_wss_key_password": "ws_server_key_password",
    "listener_wss_truststore": "",
    "listener_wss_truststore_type": "PEM",
    "listener_wss_truststore_password": "",
    "listener_wss_client_auth": "REQUESTED",
    "listener_wss_crl": "",
    "listener_wss_reload_interval_sec": 60,
    "ws_allowed_origins": "",
    "ws_trusted_proxies": "",
    "mqtt_connect_timeout_sec": 10,
    "mqtt_max_in_flight_msgs": 1000,
    "mqtt_flow_control_mqtt_3x_receive_max": 65535,
    "mqtt_keep_alive_max_keep_alive_sec": 600,
    "mqtt_topic_max_segments_count": 0,
    "mqtt_topic_alias_max": 10,
    "mqtt_topic_min_length_for_alias_replacement": 50,
    "mqtt_shared_subscriptions_processing_type": "ROUND_ROBIN",
    "mqtt_subscription_root_multi_lvl_wildcard": True,
    "mqtt_retain_msg_expiry_processing_period_ms": 60000,
    "mqtt_client_session_expiry_max_expiry_interval": 604800,
    "mqtt_3_1_max_client_id_length": 1024,
    "mqtt_persistent_session_device_persisted_messages_limit": 10000,
    "mqtt_response_info": "",
    "pytbmq_data_dir": Path("./data"),
    "pytbmq_log_level": "INFO",
    "pytbmq_gc_thresholds": "300,1,500",
    "pytbmq_gc_freeze_sec": 1,
    "pytbmq_gc_full_collect_sec": 3600,
    "shutdown_timeout_sec": 10,
    "mqtt_persistent_session_device_persisted_messages_ttl": 604800,
    "mqtt_persistent_session_app_persisted_messages_limit": 100000,
    "pytbmq_storage": "sqlite",
    "pytbmq_storage_sync": "NORMAL",
    "security_mqtt_basic_enabled": False,
    "security_mqtt_basic_strategy": "CLIENT_ID_AND_USERNAME",
    "security_mqtt_ssl_enabled": False,
    "security_mqtt_ssl_skip_validity_check_for_client_cert": False,
    "security_mqtt_ssl_cn_match": "FIND",
    "security_mqtt_scram_enabled": False,
    "security_mqtt_auth_priority": ("BASIC", "X_509"),
    "security_mqtt_auth_strategy": "BOTH",
    "cache_specs_basic_credentials_password_ttl": 1,
    "security_unauth_clients_enabled": True,
    "sql_ttl_unauthorized_client_ttl": 259200,
    "blocked_client_cleanup_period_minutes": 5,
    "blocked_client_cleanup_ttl_minutes": 10080,
    "mqtt_total_rate_limits_enabled": False,
    "mqtt_total_rate_limits_config": ((1000, 1), (50000, 60)),
    "mqtt_incoming_rate_limits_enabled": False,
    "mqtt_incoming_rate_limits_client_config": ((10, 1), (300, 60)),
    "mqtt_outgoing_rate_limits_enabled": False,
    "mqtt_outgoing_rate_limits_client_config": ((10, 1), (300, 60)),
    "mqtt_sessions_limit": 0,
    "mqtt_application_clients_limit": 0,
    "netty_write_buffer_high_water_mark": 1310720,
    "netty_write_buffer_low_water_mark": 655360,
    "listener_tcp_max_connections": 0,
    "listener_tcp_new_connections_per_ip_per_sec": 0,
    "listener_ssl_max_connections": 0,
    "listener_ssl_new_connections_per_ip_per_sec": 0,
    "listener_ws_max_connections": 0,
    "listener_ws_new_connections_per_ip_per_sec": 0,
    "listener_wss_max_connections": 0,
    "listener_wss_new_connections_per_ip_per_sec": 0,
    "listener_ssl_max_handshakes_in_progress": 64,
    "listener_wss_max_handshakes_in_progress": 64,
    "http_enabled": True,
    "http_bind_address": "0.0.0.0",
    "http_bind_port": 8083,
    "ssl_enabled": False,
    "ssl_credentials_type": "PEM",
    "ssl_pem_cert": "server.pem",
    "ssl_pem_key": "server_key.pem",
    "ssl_pem_key_password": "server_key_password",
    "ssl_key_store_type": "PKCS12",
    "ssl_key_store": "classpath:keystore/keystore.p12",
    "ssl_key_store_password": "thingsboard_mqtt_broker",
    "ssl_key_alias": "tomcat",
    "ssl_key_password": "thingsboard_mqtt_broker",
    "security_admin_username": "admin",
    "security_admin_password": "",
    "jwt_token_expiration_time": 9000,
    "jwt_refresh_token_expiration_time": 604800,
    "jwt_token_issuer": "thingsboard.io",
    "jwt_token_signing_key": "",
    "metrics_auth_enabled": True,
    "swagger_enabled": True,
}


def write(tmp_path: Path, text: str, name: str = "broker.yml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(environ: dict[str, str], config_file: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(environ, config_file)
    return str(info.value).splitlines()


# --------------------------------------------------------------------------- defaults, env


def test_defaults_with_empty_environment_are_tbmqs() -> None:
    assert dataclasses.asdict(load_settings({})) == TBMQ_DEFAULTS


def test_environ_none_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTENER_TCP_BIND_PORT", "1999")
    assert load_settings().listener_tcp_bind_port == 1999


def test_environment_overrides_every_kind() -> None:
    settings = load_settings(
        {
            "LISTENER_TCP_ENABLED": "FALSE",
            "LISTENER_TCP_BIND_ADDRESS": "::1",
            "LISTENER_TCP_BIND_PORT": "0",
            "TCP_NETTY_MAX_PAYLOAD_SIZE": "268435460",
            "MQTT_CLIENT_SESSION_EXPIRY_MAX_EXPIRY_INTERVAL": "4294967295",
            "MQTT_RESPONSE_INFO": "responses/",
            "PYTBMQ_DATA_DIR": "/var/lib/pytbmq",
            "PYTBMQ_LOG_LEVEL": "debug",
            "MQTT_SHARED_SUBSCRIPTIONS_PROCESSING_TYPE": "round_robin",
            "UNRELATED": "x",
        }
    )
    assert settings.listener_tcp_enabled is False
    assert settings.listener_tcp_bind_address == "::1"
    assert settings.listener_tcp_bind_port == 0
    assert settings.tcp_netty_max_payload_size == 268435460
    assert settings.mqtt_client_session_expiry_max_expiry_interval == 4294967295
    assert settings.mqtt_response_info == "responses/"
    assert settings.pytbmq_data_dir == Path("/var/lib/pytbmq")
    assert settings.pytbmq_log_level == "DEBUG"
    assert settings.mqtt_shared_subscriptions_processing_type == "ROUND_ROBIN"


def test_settings_are_frozen() -> None:
    settings = load_settings({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.listener_tcp_bind_port = 1  # type: ignore[misc]


def test_empty_environment_variable_is_set_and_wins(tmp_path: Path) -> None:
    path = write(tmp_path, "mqtt:\n  response-info: from-file\n")
    assert load_settings({"MQTT_RESPONSE_INFO": ""}, path).mqtt_response_info == ""
    assert config_error({"LISTENER_TCP_BIND_PORT": ""}) == [
        "LISTENER_TCP_BIND_PORT='' is invalid: expected an integer from 0 to 65535"
    ]


# --------------------------------------------------------------------------- YAML


def test_yaml_literal_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
listener:
  tcp:
    enabled: false
    bind_address: broker.example.com
    bind_port: 1884
    netty:
      max_payload_size: "1024"
mqtt:
  keep-alive:
    max-keep-alive: 30
  version-3-1:
    max-client-id-length: 23
  response-info:
  persistent-session:
    device:
      persisted-messages:
        limit: 5
pytbmq:
  data_dir: /srv/data
  log_level: warning
  shutdown_timeout_sec: 3
""",
    )
    settings = load_settings({}, path)
    assert settings.listener_tcp_enabled is False
    assert settings.listener_tcp_bind_address == "broker.example.com"
    assert settings.listener_tcp_bind_port == 1884
    assert settings.tcp_netty_max_payload_size == 1024
    assert settings.mqtt_keep_alive_max_keep_alive_sec == 30
    assert settings.mqtt_3_1_max_client_id_length == 23
    assert settings.mqtt_response_info == ""  # a key with no value is an empty string
    assert settings.mqtt_persistent_session_device_persisted_messages_limit == 5
    assert settings.pytbmq_data_dir == Path("/srv/data")
    assert settings.pytbmq_log_level == "WARNING"
    assert settings.shutdown_timeout_sec == 3
    assert settings.mqtt_topic_alias_max == 10  # not in the file: built-in default


def test_yaml_placeholders_resolve_from_environment_and_default(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
listener:
  tcp:
    bind_port: "${MY_PORT:1999}"
    bind_address: "${MY_ADDRESS:127.0.0.1}"
mqtt:
  topic:
    alias-max: "${ALIASES}"
  response-info: "resp/${ZONE:eu}/${NODE:${HOST_NAME:n1}}"
  max-in-flight-msgs: "${LISTED:}5"
""",
    )
    settings = load_settings({"MY_PORT": "2000", "ALIASES": "7", "HOST_NAME": "h9"}, path)
    assert settings.listener_tcp_bind_port == 2000  # from the environment
    assert settings.listener_tcp_bind_address == "127.0.0.1"  # from the placeholder default
    assert settings.mqtt_topic_alias_max == 7  # ${NAME} without default
    assert settings.mqtt_response_info == "resp/eu/h9"  # embedded and nested
    assert settings.mqtt_max_in_flight_msgs == 5  # empty default


def test_yaml_placeholder_default_may_contain_colons(tmp_path: Path) -> None:
    path = write(tmp_path, 'mqtt:\n  response-info: "${RI:tcp://host:1883}"\n')
    assert load_settings({}, path).mqtt_response_info == "tcp://host:1883"


def test_tbmq_style_placeholder_of_own_variable(tmp_path: Path) -> None:
    path = write(tmp_path, 'listener:\n  tcp:\n    bind_port: "${LISTENER_TCP_BIND_PORT:1885}"\n')
    assert load_settings({}, path).listener_tcp_bind_port == 1885
    assert load_settings({"LISTENER_TCP_BIND_PORT": "1886"}, path).listener_tcp_bind_port == 1886


def test_environment_beats_yaml(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "listener:\n  tcp:\n    bind_port: 1884\n    enabled: '${OTHER:false}'\n",
    )
    settings = load_settings(
        {"LISTENER_TCP_BIND_PORT": "1890", "LISTENER_TCP_ENABLED": "true", "OTHER": "false"},
        path,
    )
    assert settings.listener_tcp_bind_port == 1890
    assert settings.listener_tcp_enabled is True


def test_environment_wins_even_over_a_broken_yaml_value(tmp_path: Path) -> None:
    path = write(tmp_path, "listener:\n  tcp:\n    bind_port: '${UNSET}'\n")
    assert load_settings({"LISTENER_TCP_BIND_PORT": "1"}, path).listener_tcp_bind_port == 1


def test_unknown_yaml_keys_are_ignored(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
server:
  port: "${HTTP_BIND_PORT:8083}"
queue:
  kafka:
    bootstrap.servers: "${TB_KAFKA_SERVERS:localhost:9092}"
listener:
  tcp:
    unknown: [1, 2]
  ssl:
    enabled: "${LISTENER_SSL_ENABLED:false}"
mqtt:
  connect:
    threads: 4
""",
    )
    assert dataclasses.asdict(load_settings({}, path)) == TBMQ_DEFAULTS


def test_dotted_keys_like_spring(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "mqtt.topic.alias-max: 3\n"
        "mqtt:\n  topic.max-segments-count: 4\n  topic:\n    alias-max: 9\n",
    )
    settings = load_settings({}, path)
    assert settings.mqtt_topic_alias_max == 3  # the longest key wins
    assert settings.mqtt_topic_max_segments_count == 4


def test_non_mapping_along_the_path_means_not_set(tmp_path: Path) -> None:
    path = write(tmp_path, "listener: 5\nmqtt:\n  topic: [1]\n")
    assert dataclasses.asdict(load_settings({}, path)) == TBMQ_DEFAULTS


@pytest.mark.parametrize("text", ["", "# nothing but a comment\n", "---\n"])
def test_empty_yaml_file_sets_nothing(tmp_path: Path, text: str) -> None:
    assert dataclasses.asdict(load_settings({}, write(tmp_path, text))) == TBMQ_DEFAULTS


def test_config_file_accepts_str_and_pathlike(tmp_path: Path) -> None:
    path = write(tmp_path, "mqtt:\n  topic:\n    alias-max: 2\n")
    assert load_settings({}, str(path)).mqtt_topic_alias_max == 2
    assert load_settings({}, path).mqtt_topic_alias_max == 2


def test_the_docs_example_loads_as_described(tmp_path: Path) -> None:
    text = DOCS.read_text(encoding="utf-8")
    example = re.search(r"## Example\s+```yaml\n(.*?)```", text, re.DOTALL)
    assert example is not None
    path = write(tmp_path, example.group(1))
    settings = load_settings({"LISTENER_TCP_BIND_PORT": "1884"}, path)
    assert settings.listener_tcp_bind_port == 1884
    assert settings.mqtt_keep_alive_max_keep_alive_sec == 300
    assert settings.mqtt_max_in_flight_msgs == 500
    assert settings.mqtt_response_info == "responses/"
    assert settings.pytbmq_data_dir == Path("/var/lib/pytbmq")
    assert settings.pytbmq_log_level == "DEBUG"


# --------------------------------------------------------------------------- bad files


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yml"
    with pytest.raises(ConfigError, match=re.escape(f"'{missing}' does not exist")):
        load_settings({}, missing)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read") as info:
        load_settings({}, tmp_path)
    assert str(tmp_path) in str(info.value)


def test_unparsable_file(tmp_path: Path) -> None:
    path = write(tmp_path, "listener:\n  tcp: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_settings({}, path)
    message = str(info.value)
    assert str(path) in message
    assert "not valid YAML" in message
    assert "line " in message
    assert "\n" not in message


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yml"
    path.write_bytes(b"mqtt:\n  response-info: caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8") as info:
        load_settings({}, path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("text", "found"), [("- a\n- b\n", "list"), ("just text\n", "str"), ("42\n", "int")]
)
def test_non_mapping_file(tmp_path: Path, text: str, found: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings({}, path)
    assert str(info.value) == (
        f"config file {str(path)!r} must hold a mapping at the top level, not {found}"
    )


# --------------------------------------------------------------------------- invalid values

INVALID_ENV = [
    ("LISTENER_TCP_ENABLED", "yes", "expected true or false"),
    ("LISTENER_TCP_ENABLED", "1", "expected true or false"),
    ("LISTENER_TCP_BIND_ADDRESS", "", "expected an IPv4 address, an IPv6 address or a host name"),
    ("LISTENER_TCP_BIND_ADDRESS", "256.1.1.1", "an IPv4 address, an IPv6 address or a host"),
    ("LISTENER_TCP_BIND_ADDRESS", "bad host", "an IPv4 address, an IPv6 address or a host"),
    ("LISTENER_TCP_BIND_PORT", "70000", "expected an integer from 0 to 65535"),
    ("LISTENER_TCP_BIND_PORT", "-1", "expected an integer from 0 to 65535"),
    ("LISTENER_TCP_BIND_PORT", "0x50", "expected an integer from 0 to 65535"),
    ("LISTENER_TCP_BIND_PORT", "18.5", "expected an integer from 0 to 65535"),
    ("LISTENER_TCP_BIND_PORT", "1_883", "expected an integer from 0 to 65535"),
    ("TCP_NETTY_MAX_PAYLOAD_SIZE", "15", "expected an integer from 16 to 268435460"),
    ("TCP_NETTY_MAX_PAYLOAD_SIZE", "268435461", "expected an integer from 16 to 268435460"),
    ("MQTT_MAX_IN_FLIGHT_MSGS", "0", "expected an integer from 1 to 65535"),
    ("MQTT_CONNECT_TIMEOUT_SEC", "3601", "expected an integer from 1 to 3600"),
    ("MQTT_CLIENT_SESSION_EXPIRY_MAX_EXPIRY_INTERVAL", "4294967296", "to 4294967295"),
    ("MQTT_PERSISTENT_SESSION_DEVICE_PERSISTED_MESSAGES_LIMIT", "10000001", "to 10000000"),
    ("MQTT_RETAIN_MSG_EXPIRY_PROCESSING_PERIOD_MS", "99", "from 100 to 86400000"),
    ("MQTT_SHARED_SUBSCRIPTIONS_PROCESSING_TYPE", "RANDOM", "ROUND_ROBIN (the only supported"),
    ("PYTBMQ_LOG_LEVEL", "verbose", "one of DEBUG, INFO, WARNING, ERROR (case-insensitive)"),
    ("PYTBMQ_DATA_DIR", "  ", "expected a non-empty path"),
    ("SHUTDOWN_TIMEOUT_SEC", "0", "expected an integer from 1 to 600"),
    ("PYTBMQ_GC_THRESHOLDS", "700,2", "three integers >= 1 separated by commas"),
    ("PYTBMQ_GC_THRESHOLDS", "700,0,100", "three integers >= 1 separated by commas"),
    ("MQTT_RESPONSE_INFO", "x" * 65536, "at most 65535 UTF-8 bytes"),
]


@pytest.mark.parametrize(("env", "value", "expected"), INVALID_ENV)
def test_invalid_environment_value(env: str, value: str, expected: str) -> None:
    (line,) = config_error({env: value})
    assert line.startswith(f"{env}={value!r} is invalid: expected ")
    assert expected in line


def test_error_message_format_is_exact() -> None:
    assert config_error({"LISTENER_TCP_BIND_PORT": "70000"}) == [
        "LISTENER_TCP_BIND_PORT='70000' is invalid: expected an integer from 0 to 65535"
    ]


def test_invalid_yaml_value_names_variable_path_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "pytbmq:\n  log_level: verbose\n")
    assert config_error({}, path) == [
        f"PYTBMQ_LOG_LEVEL='verbose' (from pytbmq.log_level in {path}) is invalid: "
        "expected one of DEBUG, INFO, WARNING, ERROR (case-insensitive)"
    ]


def test_invalid_value_from_placeholder(tmp_path: Path) -> None:
    path = write(tmp_path, "listener:\n  tcp:\n    bind_port: '${MY_PORT:1883}'\n")
    assert config_error({"MY_PORT": "http"}, path) == [
        f"LISTENER_TCP_BIND_PORT='http' (from listener.tcp.bind_port in {path}) is invalid: "
        "expected an integer from 0 to 65535"
    ]


def test_unset_placeholder_without_default(tmp_path: Path) -> None:
    path = write(tmp_path, "listener:\n  tcp:\n    bind_port: '${MY_PORT}'\n")
    assert config_error({}, path) == [
        f"LISTENER_TCP_BIND_PORT='${{MY_PORT}}' (from listener.tcp.bind_port in {path}) is "
        "invalid: the placeholder ${MY_PORT} has no default and MY_PORT is not set"
    ]


@pytest.mark.parametrize("value", ["${MY_PORT:1883", "${:1883}"])
def test_malformed_placeholder(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f"listener:\n  tcp:\n    bind_port: '{value}'\n")
    (line,) = config_error({}, path)
    assert line.startswith("LISTENER_TCP_BIND_PORT=")
    assert "listener.tcp.bind_port" in line
    assert "placeholder" in line


@pytest.mark.parametrize(("node", "found"), [("{a: 1}", "a mapping"), ("[1, 2]", "a list")])
def test_yaml_collection_instead_of_value(tmp_path: Path, node: str, found: str) -> None:
    path = write(tmp_path, f"listener:\n  tcp:\n    bind_port: {node}\n")
    assert config_error({}, path) == [
        f"LISTENER_TCP_BIND_PORT (from listener.tcp.bind_port in {path}) is invalid: "
        f"expected an integer from 0 to 65535, found {found}"
    ]


def test_all_errors_reported_together_one_per_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "listener:\n  tcp:\n    enabled: maybe\nmqtt:\n  topic:\n    alias-max: -5\n",
    )
    lines = config_error(
        {
            "LISTENER_TCP_BIND_PORT": "70000",
            "PYTBMQ_LOG_LEVEL": "loud",
            "MQTT_TOPIC_ALIAS_MAX": "1",
        },
        path,
    )
    assert len(lines) == 3
    assert lines[0].startswith("LISTENER_TCP_ENABLED='maybe' (from listener.tcp.enabled in ")
    assert lines[1].startswith("LISTENER_TCP_BIND_PORT='70000' is invalid")
    assert lines[2].startswith("PYTBMQ_LOG_LEVEL='loud' is invalid")


# --------------------------------------------------------------------------- secrets

SECRET = Setting("TEST_DB_PASSWORD", "test.db.password", Str(allow_empty=False), "x", "test")
PLAIN = Setting("TEST_DB_USER", "test.db.user", Str(allow_empty=False), "x", "test")


def test_redact() -> None:
    assert redact("LISTENER_SSL_KEY_PASSWORD", "hunter2") == "'***'"
    assert redact("some_password_here", "hunter2") == "'***'"
    assert redact("LISTENER_TCP_BIND_PORT", "70000") == "'70000'"


def test_passwords_are_masked_in_errors() -> None:
    with pytest.raises(ConfigError) as info:
        _collect((SECRET, PLAIN), {"TEST_DB_PASSWORD": " ", "TEST_DB_USER": " "}, None, "")
    assert str(info.value).splitlines() == [
        "TEST_DB_PASSWORD='***' is invalid: expected a non-empty string without NUL characters",
        "TEST_DB_USER=' ' is invalid: expected a non-empty string without NUL characters",
    ]


def test_passwords_are_masked_in_yaml_errors() -> None:
    document = {"test": {"db": {"password": "${SECRET_PART}hunter2"}}}
    with pytest.raises(ConfigError) as info:
        _collect((SECRET,), {}, document, "f.yml")
    message = str(info.value)
    assert "hunter2" not in message
    assert message.startswith("TEST_DB_PASSWORD='***' (from test.db.password in f.yml)")


def test_collect_with_a_custom_table_reads_yaml_and_defaults() -> None:
    values = _collect((SECRET, PLAIN), {}, {"test": {"db": {"user": "bob"}}}, "f.yml")
    assert values == {"test_db_password": "x", "test_db_user": "bob"}


# --------------------------------------------------------------------------- kinds


@pytest.mark.parametrize(("raw", "value"), [("true", True), ("TRUE", True), (" False ", False)])
def test_bool_accepts(raw: str, value: bool) -> None:
    assert Bool().parse(raw) is value


@pytest.mark.parametrize("raw", ["", "yes", "on", "1", "0", "t", "truee"])
def test_bool_refuses(raw: str) -> None:
    with pytest.raises(ValueError):
        Bool().parse(raw)


@given(st.integers(min_value=-(2**40), max_value=2**40))
def test_int_round_trips_and_enforces_range(number: int) -> None:
    kind = Int(-1000, 1000)
    if -1000 <= number <= 1000:
        assert kind.parse(str(number)) == number
    else:
        with pytest.raises(ValueError):
            kind.parse(str(number))


@pytest.mark.parametrize("raw", ["", "+", "1e3", "0x10", "1_0", "١٢", "12 3", "2" * 5000])
def test_int_refuses_non_decimal(raw: str) -> None:
    with pytest.raises(ValueError):
        Int(0, 10**6000).parse(raw)


def test_int_accepts_sign_and_surrounding_spaces() -> None:
    assert Int(-5, 5).parse(" +3 ") == 3
    assert Int(-5, 5).parse("-5") == -5


def test_float_kind() -> None:
    kind = Float(0.5, 10.0)
    assert kind.parse("2.5") == 2.5
    assert kind.parse("1e1") == 10.0
    assert kind.parse(".5") == 0.5
    for raw in ["nan", "inf", "0.4", "10.1", "abc", ""]:
        with pytest.raises(ValueError):
            kind.parse(raw)
    assert kind.expected() == "a number from 0.5 to 10"


def test_choice_kind() -> None:
    kind = Choice(("DEBUG", "INFO"))
    assert kind.parse("info") == "INFO"
    assert kind.parse(" Debug ") == "DEBUG"
    with pytest.raises(ValueError):
        kind.parse("TRACE")


@pytest.mark.parametrize(
    "raw",
    [
        "0.0.0.0",
        "127.0.0.1",
        "::",
        "::1",
        "fe80::1%eth0",
        "localhost",
        "broker.example.com.",
        "my_broker",
        "a-b.c-d",
        "x" * 63,
    ],
)
def test_host_accepts(raw: str) -> None:
    assert Host().parse(raw) == raw


@pytest.mark.parametrize(
    "raw",
    [
        "",
        " ",
        "256.0.0.1",
        "1.2.3",
        "123",
        "-bad.com",
        "bad-.com",
        "a..b",
        "a b",
        "x" * 64,
        ".".join(["abcdefgh"] * 30),
        "[::1]",
        "host:1883",
    ],
)
def test_host_refuses(raw: str) -> None:
    with pytest.raises(ValueError):
        Host().parse(raw)


def test_str_kind() -> None:
    assert Str().parse("") == ""
    assert Str().parse("  keep spaces ") == "  keep spaces "
    assert Str(max_utf8_bytes=4).parse("éé") == "éé"
    for raw in ["ééé", "a\x00", "\ud800"]:
        with pytest.raises(ValueError):
            Str(max_utf8_bytes=4).parse(raw)


def test_path_kind() -> None:
    assert PathKind().parse("./data") == Path("data")
    with pytest.raises(ValueError):
        PathKind().parse("")


# --------------------------------------------------------------------------- table, docs


def test_table_and_dataclass_agree() -> None:
    names = [f.name for f in dataclasses.fields(Settings)]
    assert names == [s.field for s in SETTINGS]
    assert len(set(names)) == len(names)
    assert len({s.yaml_path for s in SETTINGS}) == len(SETTINGS)
    hints = typing.get_type_hints(Settings)
    for setting in SETTINGS:
        assert setting.env == setting.env.upper()
        # lower case, except TBMQ's own camelCase cache keys
        assert re.fullmatch(r"[a-z0-9]+(?:[._-][a-zA-Z0-9]+)*", setting.yaml_path), setting
        value = setting.kind.parse(setting.default)  # every default is valid
        hint = hints[setting.field]
        assert isinstance(value, typing.get_origin(hint) or hint), setting.env
        assert setting.help and "\n" not in setting.help


def test_describe_settings() -> None:
    described = describe_settings()
    assert [env for env, _, _ in described] == [s.env for s in SETTINGS]
    port = next(s for s in SETTINGS if s.env == "LISTENER_TCP_BIND_PORT")
    assert ("LISTENER_TCP_BIND_PORT", "1883", port.help) in described
    response_info = next(s for s in SETTINGS if s.env == "MQTT_RESPONSE_INFO")
    assert ("MQTT_RESPONSE_INFO", "", response_info.help) in described


def render_settings_table() -> str:
    lines = [
        "| Variable | YAML path | Default | Accepted values | Origin | Meaning |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for s in SETTINGS:
        default = f"`{s.default}`" if s.default else "(empty)"
        origin = "pytbmq" if s.pytbmq_only else "TBMQ"
        cells = [f"`{s.env}`", f"`{s.yaml_path}`", default, s.kind.expected(), origin, s.help]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def test_docs_table_matches_the_settings() -> None:
    text = DOCS.read_text(encoding="utf-8")
    block = re.search(
        r"<!-- settings-table:start -->\n(.*?)\n<!-- settings-table:end -->", text, re.DOTALL
    )
    assert block is not None, "docs/configuration.md lost its settings-table markers"
    expected = render_settings_table()
    assert block.group(1) == expected, (
        "docs/configuration.md is out of date; replace its settings table with:\n" + expected
    )
    for setting in SETTINGS:
        assert setting.env in text
        assert setting.yaml_path in text
