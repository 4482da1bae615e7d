"""A throw-away PKI for the TLS end-to-end tests, generated at test time with ``cryptography``.

Layout (all EC P-256 unless noted)::

    root CA "pytbmq test root CA"
      +- intermediate CA (pathlen 0)
      |    +- client "client-int"
      +- server "pytbmq-server-1" (SAN localhost, 127.0.0.1)      + RSA twin "pytbmq-server-rsa"
      +- server "pytbmq-server-2" (for reload tests)
      +- server "pytbmq-server-expired" / "pytbmq-server-expiring" (10 days left)
      +- clients "client1", "client-rsa" (RSA), "client-expired", "client-revoked"
    unrelated CA "pytbmq unrelated CA"
      +- client "client2"

plus a CRL bundle (one CRL per CA; the root's revokes "client-revoked") and helpers that
write PEM / PKCS#12 / JKS files in the formats the broker has to read.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import ssl
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from . import rawmqtt as rm
from .helpers import V5, BrokerProcess, ClientPool, MqttClient, uid
from .rawmqtt import RawClient

KEYTOOL = shutil.which("keytool")
OPENSSL = shutil.which("openssl")

#: The broker's default LISTENER_SSL_PEM_KEY_PASSWORD (TBMQ's).
DEFAULT_KEY_PASSWORD = "server_key_password"
KEY_PASSWORD = "k3y-Passw0rd"
STORE_PASSWORD = "st0re-Passw0rd"

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pytbmq tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _key(kind: str) -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


@dataclass
class Identity:
    """A key and its certificate; ``chain`` are the intermediates to send along (no root)."""

    cn: str
    key: PrivateKey
    cert: x509.Certificate
    chain: list[x509.Certificate] = field(default_factory=list)

    @property
    def subject(self) -> str:
        """RFC 4514 form of the subject, e.g. ``CN=client1,O=pytbmq tests``."""
        return self.cert.subject.rfc4514_string()

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def cert_pem(self, with_chain: bool = False) -> bytes:
        certs = [self.cert, *self.chain] if with_chain else [self.cert]
        return certs_pem(certs)

    def key_pem(self, fmt: str = "pkcs8", password: str | None = None) -> bytes:
        return key_pem(self.key, fmt, password)


def certs_pem(certs: Iterable[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def key_pem(key: PrivateKey, fmt: str = "pkcs8", password: str | None = None) -> bytes:
    """``fmt`` is ``pkcs8`` (BEGIN [ENCRYPTED] PRIVATE KEY) or ``traditional`` (BEGIN EC/RSA
    PRIVATE KEY, with ``Proc-Type: 4,ENCRYPTED`` when a password is given)."""
    formats = {
        "pkcs8": serialization.PrivateFormat.PKCS8,
        "traditional": serialization.PrivateFormat.TraditionalOpenSSL,
    }
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode())
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, formats[fmt], encryption)


def write(path: Path, *parts: bytes) -> Path:
    """Write the concatenation of ``parts`` to ``path`` (creating parent directories)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b""
    for part in parts:
        if data and not data.endswith(b"\n"):
            data += b"\n"
        data += part
    path.write_bytes(data)
    return path


def replace_atomically(path: Path, *parts: bytes) -> Path:
    """Write to a sibling temporary file and rename it over ``path`` (what deploy tools do)."""
    tmp = path.with_name(path.name + ".new")
    write(tmp, *parts)
    tmp.replace(path)
    return path


class Pki:
    """Every certificate the TLS tests need, plus the standard files written to ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._serial = 1000
        self.root = self._ca("pytbmq test root CA")
        self.intermediate = self._ca("pytbmq test intermediate CA", issuer=self.root, pathlen=0)
        self.ca2 = self._ca("pytbmq unrelated CA")

        self.server = self._server("pytbmq-server-1")
        self.server_rsa = self._server("pytbmq-server-rsa", kind="rsa")
        self.server2 = self._server("pytbmq-server-2")
        self.server_expired = self._server(
            "pytbmq-server-expired",
            not_before=_NOW - dt.timedelta(days=30),
            not_after=_NOW - dt.timedelta(days=1),
        )
        self.server_expiring = self._server(
            "pytbmq-server-expiring", not_after=_NOW + dt.timedelta(days=10)
        )

        self.client1 = self._client("client1")
        self.client_rsa = self._client("client-rsa", kind="rsa")
        self.client_int = self._client("client-int", issuer=self.intermediate)
        self.client2 = self._client("client2", issuer=self.ca2)
        self.client_expired = self._client(
            "client-expired",
            not_before=_NOW - dt.timedelta(days=30),
            not_after=_NOW - dt.timedelta(days=1),
        )
        self.client_revoked = self._client("client-revoked")

        self.crl_root = self.crl(self.root, revoked=[self.client_revoked])
        self.crl_root_empty = self.crl(self.root)
        self.crl_intermediate = self.crl(self.intermediate)
        self.crl_ca2 = self.crl(self.ca2)

        # The standard files.
        self.ca_pem = write(self.dir / "ca.pem", self.root.cert_pem())
        self.ca2_pem = write(self.dir / "ca2.pem", self.ca2.cert_pem())
        self.server_pem = write(self.dir / "server.pem", self.server.cert_pem())
        self.server_key = write(self.dir / "server_key.pem", self.server.key_pem())
        # TBMQ guide: cat server.pem ca.pem > serverChain.pem
        self.server_chain_pem = write(
            self.dir / "serverChain.pem", self.server_pem.read_bytes(), self.ca_pem.read_bytes()
        )
        # the root CA's CRL (revokes client-revoked)
        self.crl_pem = write(self.dir / "crl.pem", self.crl_pem_bytes(self.crl_root))
        # one CRL per client-issuing CA of the root hierarchy (root + intermediate)
        self.crl_bundle_pem = write(
            self.dir / "crl_bundle.pem", self.crl_pem_bytes(self.crl_root, self.crl_intermediate)
        )
        self.client_files: dict[str, tuple[Path, Path]] = {}
        for ident in (
            self.client1,
            self.client_rsa,
            self.client_int,
            self.client2,
            self.client_expired,
            self.client_revoked,
        ):
            cert = write(self.dir / f"{ident.cn}.pem", ident.cert_pem(with_chain=True))
            key = write(self.dir / f"{ident.cn}_key.pem", ident.key_pem())
            self.client_files[ident.cn] = (cert, key)

    # ------------------------------------------------------------------ generation
    def _next_serial(self) -> int:
        self._serial += 1
        return self._serial

    def _sign(
        self,
        cn: str,
        key: PrivateKey,
        issuer: Identity | None,
        extensions: Sequence[tuple[x509.ExtensionType, bool]],
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> x509.Certificate:
        subject = _name(cn)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.cert.subject if issuer else subject)
            .public_key(key.public_key())
            .serial_number(self._next_serial())
            .not_valid_before(not_before or _NOW - dt.timedelta(hours=1))
            .not_valid_after(not_after or _NOW + dt.timedelta(days=365))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        )
        signer = issuer.key if issuer else key
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), False
        )
        for ext, critical in extensions:
            builder = builder.add_extension(ext, critical)
        return builder.sign(signer, hashes.SHA256())

    def _ca(self, cn: str, issuer: Identity | None = None, pathlen: int | None = None) -> Identity:
        key = _key("ec")
        cert = self._sign(
            cn,
            key,
            issuer,
            [
                (x509.BasicConstraints(ca=True, path_length=pathlen), True),
                (
                    x509.KeyUsage(
                        digital_signature=True,
                        content_commitment=False,
                        key_encipherment=False,
                        data_encipherment=False,
                        key_agreement=False,
                        key_cert_sign=True,
                        crl_sign=True,
                        encipher_only=False,
                        decipher_only=False,
                    ),
                    True,
                ),
            ],
        )
        return Identity(cn, key, cert)

    def _leaf(
        self,
        cn: str,
        kind: str,
        issuer: Identity,
        usage: x509.ObjectIdentifier,
        san: list[x509.GeneralName] | None,
        **validity: Any,
    ) -> Identity:
        key = _key(kind)
        extensions: list[tuple[x509.ExtensionType, bool]] = [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=kind == "rsa",
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                True,
            ),
            (x509.ExtendedKeyUsage([usage]), False),
        ]
        if san:
            extensions.append((x509.SubjectAlternativeName(san), False))
        cert = self._sign(cn, key, issuer, extensions, **validity)
        chain = [] if issuer is self.root else [issuer.cert, *issuer.chain]
        return Identity(cn, key, cert, chain)

    def _server(self, cn: str, kind: str = "ec", **validity: Any) -> Identity:
        san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        return self._leaf(cn, kind, self.root, ExtendedKeyUsageOID.SERVER_AUTH, san, **validity)

    def _client(
        self, cn: str, kind: str = "ec", issuer: Identity | None = None, **validity: Any
    ) -> Identity:
        return self._leaf(
            cn, kind, issuer or self.root, ExtendedKeyUsageOID.CLIENT_AUTH, None, **validity
        )

    def server_identity(self, cn: str, kind: str = "ec") -> Identity:
        """A fresh server certificate (new serial) signed by the root CA."""
        return self._server(cn, kind)

    def crl(self, ca: Identity, revoked: Iterable[Identity] = ()) -> x509.CertificateRevocationList:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca.cert.subject)
            .last_update(_NOW - dt.timedelta(hours=1))
            .next_update(_NOW + dt.timedelta(days=30))
            .add_extension(x509.CRLNumber(self._next_serial()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), False
            )
        )
        for ident in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(ident.cert.serial_number)
                .revocation_date(_NOW - dt.timedelta(minutes=30))
                .build()
            )
        return builder.sign(ca.key, hashes.SHA256())

    @staticmethod
    def crl_pem_bytes(*crls: x509.CertificateRevocationList) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in crls)

    # ------------------------------------------------------------------ files
    def client(self, cn: str) -> tuple[Path, Path]:
        """(cert file with chain, unencrypted key file) of a client identity."""
        return self.client_files[cn]

    def add_client(
        self, cn: str, issuer: Identity | None = None, *, file_stem: str | None = None
    ) -> tuple[Path, Path]:
        """A new client identity issued by ``issuer`` (default: the root CA), written like
        the standard ones (cert + chain, key) and registered for :meth:`client`. An
        existing ``cn`` is returned as it is."""
        if cn in self.client_files:
            return self.client_files[cn]
        ident = self._client(cn, issuer=issuer)
        stem = file_stem or "".join(c if c.isalnum() or c in "-_" else "_" for c in cn)
        cert = write(self.dir / f"{stem}.pem", ident.cert_pem(with_chain=True))
        key = write(self.dir / f"{stem}_key.pem", ident.key_pem())
        self.client_files[cn] = (cert, key)
        return cert, key

    def pkcs12(
        self,
        path: Path,
        ident: Identity,
        password: str = STORE_PASSWORD,
        alias: str = "server",
        cas: Sequence[x509.Certificate] | None = None,
    ) -> Path:
        """PKCS#12 with one key entry (``alias``) whose chain is the identity + root CA."""
        data = pkcs12.serialize_key_and_certificates(
            alias.encode(),
            ident.key,
            ident.cert,
            [*ident.chain, self.root.cert] if cas is None else list(cas),
            serialization.BestAvailableEncryption(password.encode()),
        )
        return write(path, data)

    def pkcs12_truststore(
        self, path: Path, certs: Sequence[x509.Certificate], password: str = STORE_PASSWORD
    ) -> Path:
        """A Java-style PKCS#12 truststore (trusted certificate entries only)."""
        data = pkcs12.serialize_java_truststore(
            [pkcs12.PKCS12Certificate(cert, f"ca{i}".encode()) for i, cert in enumerate(certs)],
            serialization.BestAvailableEncryption(password.encode()),
        )
        return write(path, data)


# ---------------------------------------------------------------------- external tools


def require_keytool() -> str:
    if not KEYTOOL:
        pytest.skip("keytool (a JDK) is not installed")
    return KEYTOOL


def require_openssl() -> str:
    if not OPENSSL:
        pytest.skip("openssl is not installed")
    return OPENSSL


def _run(command: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result


def keytool_pkcs12_to_jks(
    p12: Path, jks: Path, password: str = STORE_PASSWORD, key_password: str | None = None
) -> Path:
    """``keytool -importkeystore`` of a PKCS#12 file into a new JKS keystore."""
    keytool = require_keytool()
    jks.unlink(missing_ok=True)
    command = [
        keytool,
        "-importkeystore",
        "-noprompt",
        "-srckeystore",
        str(p12),
        "-srcstoretype",
        "PKCS12",
        "-srcstorepass",
        password,
        "-destkeystore",
        str(jks),
        "-deststoretype",
        "JKS",
        "-deststorepass",
        password,
    ]
    if key_password is not None:
        command += ["-destkeypass", key_password, "-srcalias", "server"]
    _run(command)
    return jks


def keytool_truststore(
    jks: Path,
    certs: dict[str, Path],
    password: str = STORE_PASSWORD,
    storetype: str = "JKS",
    fresh: bool = True,
) -> Path:
    """A JKS (or PKCS12) truststore holding ``certs`` (alias -> PEM file), via keytool;
    with ``fresh=False`` the trusted entries are added to an existing keystore."""
    keytool = require_keytool()
    if fresh:
        jks.unlink(missing_ok=True)
    for alias, pem in certs.items():
        _run(
            [
                keytool,
                "-importcert",
                "-noprompt",
                "-alias",
                alias,
                "-file",
                str(pem),
                "-keystore",
                str(jks),
                "-storetype",
                storetype,
                "-storepass",
                password,
            ]
        )
    return jks


def openssl_pkcs12(
    path: Path,
    cert: Path,
    key: Path,
    chain: Path,
    password: str = STORE_PASSWORD,
    alias: str = "server",
) -> Path:
    """``openssl pkcs12 -export`` (the usual way people build a PKCS#12 keystore)."""
    openssl = require_openssl()
    _run(
        [
            openssl,
            "pkcs12",
            "-export",
            "-in",
            str(cert),
            "-inkey",
            str(key),
            "-certfile",
            str(chain),
            "-name",
            alias,
            "-passout",
            f"pass:{password}",
            "-out",
            str(path),
        ]
    )
    return path


@pytest.fixture(scope="session", name="pki")
def pki_fixture(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The test PKI, generated once per session (import this fixture into a test module)."""
    return Pki(tmp_path_factory.mktemp("pki"))


# ---------------------------------------------------------------------- TLS clients


def tls_env(pki: Pki, **overrides: Any) -> dict[str, Any]:
    """Environment of a broker with the MQTTS listener on 127.0.0.1:0, serving the server
    certificate with the root CA appended (TBMQ's serverChain.pem) and a separate key."""
    env: dict[str, Any] = {
        "LISTENER_SSL_ENABLED": "true",
        "LISTENER_SSL_BIND_ADDRESS": "127.0.0.1",
        "LISTENER_SSL_BIND_PORT": "0",
        "LISTENER_SSL_CREDENTIALS_TYPE": "PEM",
        "LISTENER_SSL_PEM_CERT": str(pki.server_chain_pem),
        "LISTENER_SSL_PEM_KEY": str(pki.server_key),
    }
    env.update(overrides)
    return env


def wss_env(pki: Pki, **overrides: Any) -> dict[str, Any]:
    """Environment of a broker with the WSS listener on 127.0.0.1:0, configured like
    :func:`tls_env` (serverChain.pem and a separate key)."""
    env: dict[str, Any] = {
        "LISTENER_WSS_ENABLED": "true",
        "LISTENER_WSS_BIND_ADDRESS": "127.0.0.1",
        "LISTENER_WSS_BIND_PORT": "0",
        "LISTENER_WSS_CREDENTIALS_TYPE": "PEM",
        "LISTENER_WSS_PEM_CERT": str(pki.server_chain_pem),
        "LISTENER_WSS_PEM_KEY": str(pki.server_key),
    }
    env.update(overrides)
    return env


def ssl_port(broker: BrokerProcess) -> int:
    assert "ssl" in broker.ports, (
        f"the broker logged no 'listener ssl bound to' line: {broker.ports}\n{broker.tail()}"
    )
    return broker.ports["ssl"]


class ListenerView:
    """A broker seen through one of its listeners: ``host``/``port`` are that listener's,
    everything else (logs, signals) is the broker's. Lets :class:`MqttClient` use MQTTS."""

    def __init__(self, broker: BrokerProcess, listener: str = "ssl") -> None:
        self._broker = broker
        self.host = "127.0.0.1"
        self.port = ssl_port(broker) if listener == "ssl" else broker.ports[listener]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._broker, name)


def tls_client(
    pool: ClientPool,
    broker: BrokerProcess,
    ca: Path | None,
    cert: tuple[Path, Path] | None = None,
    version: int = V5,
    *,
    connect: bool = True,
    **kwargs: Any,
) -> MqttClient:
    """A paho client (via ``tls_set``) on the broker's MQTTS listener, connected by default."""
    client = pool.new(ListenerView(broker), version, **kwargs)  # type: ignore[arg-type]
    client.paho.tls_set(
        ca_certs=str(ca) if ca else None,
        certfile=str(cert[0]) if cert else None,
        keyfile=str(cert[1]) if cert else None,
        cert_reqs=ssl.CERT_REQUIRED,
        tls_version=ssl.PROTOCOL_TLS_CLIENT,
    )
    if connect:
        client.connect()
    return client


def client_context(
    ca: Path | None,
    cert: tuple[Path, Path] | None = None,
    *,
    minimum: ssl.TLSVersion | None = None,
    maximum: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
) -> ssl.SSLContext:
    """A verifying client context (hostname checked against the server's SAN)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca is not None:
        ctx.load_verify_locations(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    if minimum is not None:
        ctx.minimum_version = minimum
    if maximum is not None:
        ctx.maximum_version = maximum
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    return ctx


@dataclass
class Attempt:
    """What happened when a client tried TLS + MQTT CONNECT on the MQTTS listener."""

    accepted: bool  # the TLS handshake completed and a successful CONNACK arrived
    local_port: int  # the client's source port (appears in the broker's failure log line)
    handshake_done: bool = False
    error: str = ""
    peer_der: bytes | None = None
    version: str | None = None
    cipher: str | None = None


def mqtt_over_tls(
    port: int,
    ctx: ssl.SSLContext,
    client_id: str | None = None,
    *,
    server_hostname: str = "localhost",
    timeout: float = 5.0,
) -> Attempt:
    """TLS handshake, MQTT 3.1.1 CONNECT, wait for CONNACK, DISCONNECT, close.

    With TLS 1.3 a client certificate is checked after the client has finished its side of
    the handshake, so a rejection may surface only on the first read; both count as
    rejected. Never raises for TLS/socket errors."""
    raw = RawClient("127.0.0.1", port, 4, timeout=timeout)
    attempt = Attempt(False, raw.sock.getsockname()[1])
    try:
        raw.sock = ctx.wrap_socket(raw.sock, server_hostname=server_hostname)
        tls = raw.sock
        assert isinstance(tls, ssl.SSLSocket)
        attempt.handshake_done = True
        attempt.peer_der = tls.getpeercert(binary_form=True)
        attempt.version = tls.version()
        cipher = tls.cipher()
        attempt.cipher = cipher[0] if cipher else None
        raw.send(rm.connect(client_id or f"tls-{uid()}", version=4))
        pkt = raw.recv(timeout)
        if pkt is None:
            attempt.error = "connection closed before CONNACK"
        elif pkt.type != rm.CONNACK or pkt.reason != 0:
            attempt.error = f"unexpected answer {pkt!r}"
        else:
            attempt.accepted = True
            raw.try_send(rm.disconnect(4))
    except (OSError, ssl.SSLError) as exc:  # SSLError, reset, timeout
        attempt.error = f"{type(exc).__name__}: {exc}"
    finally:
        raw.close()
    return attempt


def tls_raw(port: int, ctx: ssl.SSLContext, version: int = 4) -> RawClient:
    """A :class:`RawClient` speaking hand-encoded MQTT over TLS to the MQTTS listener."""
    raw = RawClient("127.0.0.1", port, version)
    try:
        raw.sock = ctx.wrap_socket(raw.sock, server_hostname="localhost")
    except BaseException:
        raw.close()
        raise
    return raw


def handshake_failure(local_port: int, reason: str) -> str:
    """Regex of the broker's log line for a failed handshake from 127.0.0.1:``local_port``
    whose reason contains ``reason`` (case-insensitive)."""
    return rf"TLS handshake from 127\.0\.0\.1:{local_port} failed on ssl: (?i:.*{reason})"


def expect_rejected(
    broker: BrokerProcess,
    port: int,
    ctx: ssl.SSLContext,
    reason: str,
    since: int | None = None,
) -> Attempt:
    """Assert a TLS client is refused and the broker explains why in one log line."""
    mark = broker.log_mark() if since is None else since
    attempt = mqtt_over_tls(port, ctx)
    assert not attempt.accepted, f"the client was accepted; expected a '{reason}' failure"
    broker.wait_for_log(handshake_failure(attempt.local_port, reason), timeout=10, since=mark)
    return attempt


def expect_accepted(port: int, ctx: ssl.SSLContext, client_id: str | None = None) -> Attempt:
    attempt = mqtt_over_tls(port, ctx, client_id)
    assert attempt.accepted, f"TLS client refused: {attempt.error}"
    return attempt


def s_client(port: int, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``openssl s_client -connect 127.0.0.1:PORT ...`` with an empty stdin (connect,
    handshake, quit). Output is stdout + stderr in ``.stdout``."""
    openssl = require_openssl()
    return subprocess.run(
        [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
