"""Certificates and keystores made by `pytbmq certs` / `pytbmq keystore` serve a real broker.

Every command runs as a process (`python -m pytbmq ...`). The broker is started with the
settings the commands print, and clients holding a `certs client` certificate connect
with mutual TLS (paho, mosquitto_pub, openssl s_client); an unrelated CA's client and a
client without certificate are refused. `pytbmq tls check` runs against the same
settings and, with --connect, against the running listener.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .helpers import BrokerProcess, ClientPool, broker_env, uid
from .pki import (
    client_context,
    expect_accepted,
    expect_rejected,
    s_client,
    ssl_port,
    tls_client,
)

MOSQUITTO_PUB = shutil.which("mosquitto_pub")
KEY_PASSWORD = "srv-Key-pw"


def pytbmq(
    *args: str | Path, cwd: Path, env: dict[str, Any] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m pytbmq ARGS` with the broker's test environment plus ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "pytbmq", *[str(a) for a in args]],
        cwd=cwd,
        env=broker_env(cwd / "data", env),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def ok(*args: str | Path, cwd: Path, env: dict[str, Any] | None = None) -> str:
    result = pytbmq(*args, cwd=cwd, env=env)
    assert result.returncode == 0, (
        f"{args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


def exported(out: str) -> dict[str, str]:
    """The `export NAME=VALUE` lines a command printed (single quotes removed)."""
    env = {}
    for name, value in re.findall(r"^export (\w+)=(.*)$", out, re.MULTILINE):
        env[name] = value[1:-1] if value.startswith("'") and value.endswith("'") else value
    return env


@dataclass
class Made:
    dir: Path
    ca: Path  # root ca.pem
    server_env: dict[str, str]  # printed by `certs server`
    device: tuple[Path, Path]  # device1 chain, key
    intruder: tuple[Path, Path]  # a client of an unrelated CA
    p12_env: dict[str, str]  # printed by `keystore create` (PKCS12)
    jks_env: dict[str, str]  # JKS, key password != store password
    trust_env: dict[str, str]  # printed by `keystore import-cert` (new JKS truststore)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    d = tmp_path_factory.mktemp("made")
    ok("certs", "ca", "--out", d / "ca", cwd=d)
    server_out = ok(
        "certs",
        "server",
        "--ca",
        d / "ca",
        "--host",
        "localhost",
        "--ip",
        "127.0.0.1",
        "--out",
        d / "server",
        "--key-password",
        KEY_PASSWORD,
        cwd=d,
    )
    ok("certs", "client", "--ca", d / "ca", "--cn", "device1", "--out", d / "clients", cwd=d)
    ok("certs", "ca", "--out", d / "other", "--cn", "unrelated CA", cwd=d)
    ok("certs", "client", "--ca", d / "other", "--cn", "intruder", "--out", d / "clients", cwd=d)
    # the TBMQ keystore route: server.pem + key (+ CA) -> PKCS12; JKS with its own key password
    p12_out = ok(
        "keystore",
        "create",
        "--cert",
        d / "server" / "server.pem",
        "--key",
        d / "server" / "server_key.pem",
        "--pem-key-password",
        KEY_PASSWORD,
        "--ca",
        d / "ca",
        "--store-password",
        "changeit",
        "--out",
        d / "server.p12",
        cwd=d,
    )
    jks_out = ok(
        "keystore",
        "create",
        "--cert",
        d / "server" / "server.pem",
        "--key",
        d / "server" / "server_key.pem",
        "--pem-key-password",
        KEY_PASSWORD,
        "--type",
        "JKS",
        "--store-password",
        "storepw",
        "--key-password",
        "keypw",
        "--alias",
        "broker",
        "--out",
        d / "server.jks",
        cwd=d,
    )
    trust_out = ok(
        "keystore",
        "import-cert",
        "--keystore",
        d / "clients.jks",
        "--cert",
        d / "ca" / "ca.pem",
        "--alias",
        "root",
        "--store-password",
        "trustpw",
        cwd=d,
    )
    return Made(
        dir=d,
        ca=d / "ca" / "ca.pem",
        server_env=exported(server_out),
        device=(d / "clients" / "device1_chain.pem", d / "clients" / "device1_key.pem"),
        intruder=(d / "clients" / "intruder_chain.pem", d / "clients" / "intruder_key.pem"),
        p12_env=exported(p12_out),
        jks_env=exported(jks_out),
        trust_env=exported(trust_out),
    )


def _listener(**env: str) -> dict[str, str]:
    return {
        "LISTENER_SSL_BIND_ADDRESS": "127.0.0.1",
        "LISTENER_SSL_BIND_PORT": "0",
        "LISTENER_SSL_CLIENT_AUTH": "REQUIRED",
        **env,
    }


@pytest.fixture(scope="module")
def pem_broker(made: Made, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """A broker serving the printed PEM settings of `certs server`, client certs REQUIRED."""
    broker = BrokerProcess(tmp_path_factory.mktemp("pem-broker"), _listener(**made.server_env))
    broker.start()
    yield broker
    broker.stop()


def test_printed_settings_pass_tls_check(made: Made) -> None:
    out = ok("tls", "check", cwd=made.dir, env=_listener(**made.server_env))
    assert "listener ssl (LISTENER_SSL_*): OK" in out
    assert "LISTENER_SSL_CLIENT_AUTH=REQUIRED" in out
    bad = pytbmq(
        "tls",
        "check",
        cwd=made.dir,
        env=_listener(**{**made.server_env, "LISTENER_SSL_PEM_KEY_PASSWORD": "wrong"}),
    )
    assert bad.returncode == 1
    assert "LISTENER_SSL_PEM_KEY_PASSWORD: wrong password" in bad.stderr


def test_device_certificate_connects_with_mutual_tls(
    made: Made, pem_broker: BrokerProcess, clients: ClientPool
) -> None:
    topic = f"certs/{uid()}"
    sub = tls_client(clients, pem_broker, made.ca, made.device)
    assert sub.subscribe(topic, 1) == [1]
    pem_broker.wait_for_log(rf"{re.escape(sub.client_id)} connected .*certificate CN=device1")
    if MOSQUITTO_PUB:
        device_chain, device_key = made.device
        result = subprocess.run(
            [
                MOSQUITTO_PUB,
                "-h",
                "127.0.0.1",
                "-p",
                str(ssl_port(pem_broker)),
                "--cafile",
                str(made.ca),
                "--cert",
                str(device_chain),
                "--key",
                str(device_key),
                "-t",
                topic,
                "-m",
                "from mosquitto_pub",
                "-q",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert sub.expect_message().payload == b"from mosquitto_pub"
    pub = tls_client(clients, pem_broker, made.ca, made.device)
    pub.publish(topic, b"from paho", qos=1)
    assert sub.expect_message().payload == b"from paho"


def test_strangers_are_refused(made: Made, pem_broker: BrokerProcess) -> None:
    port = ssl_port(pem_broker)
    expect_rejected(pem_broker, port, client_context(made.ca, made.intruder), "unknown CA")
    expect_rejected(pem_broker, port, client_context(made.ca), "no client certificate")


def test_openssl_s_client_verifies_the_broker(made: Made, pem_broker: BrokerProcess) -> None:
    chain, key = made.device
    result = s_client(
        ssl_port(pem_broker), "-CAfile", str(made.ca), "-cert", str(chain), "-key", str(key)
    )
    assert "Verify return code: 0 (ok)" in result.stdout, result.stdout


def test_tls_check_connect_reports_in_words(made: Made, pem_broker: BrokerProcess) -> None:
    target = f"127.0.0.1:{ssl_port(pem_broker)}"
    chain, key = made.device
    good = ok(
        "tls",
        "check",
        "--connect",
        target,
        "--cafile",
        made.ca,
        "--cert",
        chain,
        "--key",
        key,
        cwd=made.dir,
    )
    assert f"connect {target}: OK" in good
    assert re.search(r"protocol\s+TLSv1\.3", good)
    assert "[0] CN=localhost" in good and "[1] CN=pytbmq root CA (self-signed root)" in good
    assert "verification   OK: the chain verifies against --cafile" in good
    assert "MQTT           CONNACK 0: connection accepted" in good
    # no client certificate on a REQUIRED listener
    no_cert = pytbmq("tls", "check", "--connect", target, "--cafile", made.ca, cwd=made.dir)
    assert no_cert.returncode == 1
    assert "requires a client certificate" in no_cert.stderr
    # a CA file that does not hold the broker's CA, and a name not in the certificate
    other_ca = made.dir / "other" / "ca.pem"
    untrusted = pytbmq(
        "tls",
        "check",
        "--connect",
        target,
        "--cafile",
        other_ca,
        "--cert",
        chain,
        "--key",
        key,
        cwd=made.dir,
    )
    assert untrusted.returncode == 1
    assert "verification   FAILED: the server's chain ends in a root CA that is not in" in (
        untrusted.stdout
    )
    wrong_name = pytbmq(
        "tls",
        "check",
        "--connect",
        target,
        "--cafile",
        made.ca,
        "--servername",
        "mqtt.example.com",
        "--cert",
        chain,
        "--key",
        key,
        cwd=made.dir,
    )
    assert wrong_name.returncode == 1
    assert "not valid for the name mqtt.example.com" in wrong_name.stderr
    assert "DNS:localhost, IP:127.0.0.1" in wrong_name.stderr


@pytest.mark.parametrize("kind", ["pkcs12", "jks-with-truststore"])
def test_keystores_serve_mutual_tls(
    made: Made, start_broker: Callable[..., BrokerProcess], kind: str
) -> None:
    env = dict(made.p12_env) if kind == "pkcs12" else {**made.jks_env, **made.trust_env}
    out = ok("tls", "check", cwd=made.dir, env=_listener(**env))
    assert "KEYSTORE" in out and "listener ssl (LISTENER_SSL_*): OK" in out
    broker = start_broker(**_listener(**env))
    port = ssl_port(broker)
    attempt = expect_accepted(port, client_context(made.ca, made.device))
    assert attempt.peer_der is not None
    expect_rejected(broker, port, client_context(made.ca, made.intruder), "unknown CA")
    if kind == "jks-with-truststore":
        assert "1 trust anchor(s)" in "\n".join(broker.logs())
