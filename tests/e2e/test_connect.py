"""CONNECT / CONNACK behaviour (MQTT 3.1, 3.1.1 and 5.0)."""

from __future__ import annotations

import re

import pytest
from paho.mqtt.packettypes import PacketTypes

from . import rawmqtt as rm
from .helpers import V5, V311, both_versions, props, uid

#: Every scenario also runs over MQTT-over-WebSocket (ws) and WebSocket Secure (wss).
pytestmark = pytest.mark.transports


@both_versions
def test_new_session_has_session_present_false(broker, clients, version):
    client = clients.new(broker, version)
    connack = client.connect()
    assert connack.reason_code == 0
    assert connack.session_present is False


@both_versions
def test_client_id_appears_in_broker_log(broker, clients, version):
    client_id = f"log-{uid()}"
    mark = broker.log_mark()
    client = clients.connected(broker, version, client_id=client_id)
    broker.wait_for_log(re.escape(client_id), timeout=5, since=mark)
    mark = broker.log_mark()
    client.disconnect()
    broker.wait_for_log(re.escape(client_id), timeout=5, since=mark)


def test_v5_connack_advertises_default_limits(broker, clients):
    connack = clients.new(broker, V5).connect()
    assert connack.prop("ReceiveMaximum") == 1000
    assert connack.prop("MaximumPacketSize") == 65536
    assert connack.prop("TopicAliasMaximum") == 10


def test_v5_connack_advertises_configured_limits(start_broker, clients):
    broker = start_broker(
        MQTT_MAX_IN_FLIGHT_MSGS=7, TCP_NETTY_MAX_PAYLOAD_SIZE=3000, MQTT_TOPIC_ALIAS_MAX=3
    )
    connack = clients.new(broker, V5).connect()
    assert connack.prop("ReceiveMaximum") == 7
    assert connack.prop("MaximumPacketSize") == 3000
    assert connack.prop("TopicAliasMaximum") == 3


def test_v5_empty_client_id_gets_assigned_identifier(broker, clients):
    client = clients.new(broker, V5, client_id="")
    connack = client.connect(clean_start=True)
    assigned = connack.prop("AssignedClientIdentifier")
    assert assigned, "an Assigned Client Identifier must be returned for an empty client id"
    # the connection is usable
    topic = f"assigned/{uid()}"
    assert client.subscribe(topic, 1) == [1]
    client.publish(topic, b"x", qos=1)
    assert client.expect_message().payload == b"x"


def test_v5_assigned_identifiers_are_unique(broker, clients):
    first = clients.new(broker, V5, client_id="").connect()
    second = clients.new(broker, V5, client_id="").connect()
    a, b = first.prop("AssignedClientIdentifier"), second.prop("AssignedClientIdentifier")
    assert a and b and a != b


def test_v311_empty_client_id_with_clean_session_is_accepted(broker, clients):
    client = clients.new(broker, V311, client_id="")
    connack = client.connect()
    assert connack.reason_code == 0
    assert connack.session_present is False
    topic = f"anon/{uid()}"
    assert client.subscribe(topic, 1) == [1]
    client.publish(topic, b"anon", qos=1)
    assert client.expect_message().payload == b"anon"


def test_v311_empty_client_id_without_clean_session_is_rejected(broker, clients):
    raw = clients.raw(broker, 4)
    raw.send(rm.connect("", version=4, clean=False))
    connack = raw.expect(rm.CONNACK)
    assert connack.body == b"\x00\x02", f"expected identifier rejected, got {connack!r}"
    assert raw.read_until_closed() == []


def test_v5_empty_client_id_clean_start_false_with_expiry_is_rejected(broker, clients):
    raw = clients.raw(broker, 5)
    raw.send(rm.connect("", version=5, clean=False, properties=[(rm.SESSION_EXPIRY_INTERVAL, 300)]))
    connack = raw.expect(rm.CONNACK)
    assert connack.reason == 0x85, f"expected 0x85 Client Identifier not valid, got {connack!r}"
    assert connack.session_present is False
    assert raw.read_until_closed() == []


def test_mqtt31_smoke(broker, clients):
    topic = f"v31/{uid()}"
    sub = clients.new(broker, 3, client_id=f"s{uid()}")
    assert sub.connect().reason_code == 0
    assert sub.subscribe(topic, 1) == [1]
    pub = clients.new(broker, 3, client_id=f"p{uid()}")
    pub.connect()
    pub.publish(topic, b"hello 3.1", qos=1)
    msg = sub.expect_message()
    assert (msg.topic, msg.payload, msg.qos) == (topic, b"hello 3.1", 1)
    pub.disconnect()
    sub.disconnect()


def test_mqtt31_raw_connack_form(broker, clients):
    raw = clients.raw(broker, 3)
    raw.send(rm.connect(f"r{uid()}", version=3))
    connack = raw.expect(rm.CONNACK)
    assert connack.body == b"\x00\x00"
    raw.disconnect()
    assert raw.read_until_closed() == []


def test_mqtt31_client_id_length_limit(start_broker, clients):
    broker = start_broker(MQTT_3_1_MAX_CLIENT_ID_LENGTH=10)
    ok = clients.raw(broker, 3)
    ok.send(rm.connect("a" * 10, version=3))
    assert ok.expect(rm.CONNACK).body == b"\x00\x00"
    too_long = clients.raw(broker, 3)
    too_long.send(rm.connect("b" * 11, version=3))
    connack = too_long.expect(rm.CONNACK)
    assert connack.body == b"\x00\x02", f"expected identifier rejected, got {connack!r}"
    assert too_long.read_until_closed() == []


@both_versions
def test_unsupported_protocol_level_is_refused(broker, clients, version):
    raw = clients.raw(broker, 4)
    raw.send(rm.connect(f"lvl-{uid()}", version=7))
    packets = raw.read_until_closed()
    assert packets, "a CONNACK refusing the protocol level is expected before the close"
    connack = packets[0]
    assert connack.type == rm.CONNACK
    # 3.1.1 form (return code 1) or the 5.0 form (reason 0x84 + properties)
    assert connack.body == b"\x00\x01" or connack.body[:2] == b"\x00\x84", connack
    assert len(packets) == 1


def test_v5_connack_reports_session_expiry_no_greater_than_max(start_broker, clients):
    broker = start_broker(MQTT_CLIENT_SESSION_EXPIRY_MAX_EXPIRY_INTERVAL=100)
    client = clients.new(broker, V5)
    connack = client.connect(
        clean_start=True, properties=props(PacketTypes.CONNECT, SessionExpiryInterval=5000)
    )
    # The server may reduce the session expiry; if it does it must tell the client.
    assert connack.prop("SessionExpiryInterval") == 100


@pytest.mark.parametrize("keepalive", [1000, 601])
def test_v5_server_keep_alive_caps_requested_value(broker, clients, keepalive):
    connack = clients.new(broker, V5).connect(keepalive=keepalive)
    assert connack.prop("ServerKeepAlive") == 600


def test_v5_server_keep_alive_configurable(start_broker, clients):
    broker = start_broker(MQTT_KEEP_ALIVE_MAX_KEEP_ALIVE_SEC=30)
    connack = clients.new(broker, V5).connect(keepalive=45)
    assert connack.prop("ServerKeepAlive") == 30


def test_v5_keep_alive_below_cap_is_accepted_as_is(broker, clients):
    connack = clients.new(broker, V5).connect(keepalive=20)
    assert connack.prop("ServerKeepAlive") in (None, 20)


def test_v5_response_information(start_broker, clients):
    broker = start_broker(MQTT_RESPONSE_INFO="resp/base")
    asked = clients.new(broker, V5).connect(
        properties=props(PacketTypes.CONNECT, RequestResponseInformation=1)
    )
    info = asked.prop("ResponseInformation")
    assert info is not None and info.startswith("resp/base"), info
    not_asked = clients.new(broker, V5).connect()
    assert not_asked.prop("ResponseInformation") is None
