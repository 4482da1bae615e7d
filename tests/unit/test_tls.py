"""TLS material, contexts and handshake diagnostics, without sockets (memory BIOs)."""

from __future__ import annotations

import dataclasses
import datetime
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from pytbmq.errors import TlsConfigError
from pytbmq.tls.context import (
    TlsContextHolder,
    build_context,
    openssl_cipher_name,
    resolve_cipher_suites,
)
from pytbmq.tls.diagnose import ChainCache, explain
from pytbmq.tls.material import TlsListenerConfig, load_material

NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)


def make_key(kind: str = "ec") -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def make_cert(
    cn: str,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey] | None = None,
    ca: bool = False,
    not_before: datetime.datetime = NOW - DAY,
    not_after: datetime.datetime = NOW + 365 * DAY,
    serial: int | None = None,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer_name, signer = (issuer[0].subject, issuer[1]) if issuer else (name, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        )
    return builder.sign(signer, hashes.SHA256())


def pem(*items: x509.Certificate | x509.CertificateRevocationList) -> bytes:
    return b"".join(i.public_bytes(serialization.Encoding.PEM) for i in items)


def key_pem(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    password: str | None = None,
    traditional: bool = False,
) -> bytes:
    fmt = (
        serialization.PrivateFormat.TraditionalOpenSSL
        if traditional
        else serialization.PrivateFormat.PKCS8
    )
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode())
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, fmt, enc)


class Pki:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ca_key = make_key()
        self.ca = make_cert("Test CA", self.ca_key, ca=True)
        self.server_key = make_key()
        self.server = make_cert("localhost", self.server_key, (self.ca, self.ca_key))
        self.client_key = make_key()
        self.client = make_cert("device1", self.client_key, (self.ca, self.ca_key))
        self.other_ca_key = make_key()
        self.other_ca = make_cert("Other CA", self.other_ca_key, ca=True)
        self.foreign_key = make_key()
        self.foreign = make_cert("intruder", self.foreign_key, (self.other_ca, self.other_ca_key))

    def file(self, name: str, data: bytes) -> str:
        path = self.tmp / name
        path.write_bytes(data)
        return str(path)

    def config(self, **changes: object) -> TlsListenerConfig:
        base = TlsListenerConfig(
            name="ssl",
            prefix="LISTENER_SSL",
            protocol="TLSv1.2",
            cipher_suites="",
            credentials_type="PEM",
            pem_cert=self.file("serverChain.pem", pem(self.server, self.ca)),
            pem_key=self.file("server_key.pem", key_pem(self.server_key)),
            pem_key_password="server_key_password",
            key_store_type="JKS",
            key_store=str(self.tmp / "missing.jks"),
            key_store_password="",
            key_alias="",
            key_password="",
            truststore="",
            truststore_type="PEM",
            truststore_password="",
            client_auth="REQUESTED",
            crl="",
            reload_interval=0,
            handshake_timeout=10,
        )
        return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext
) -> tuple[ssl.SSLObject, BaseException | None]:
    """Run a handshake in memory; returns the server SSLObject and its error, if any."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    server_done = client_done = False
    for _ in range(30):
        if not client_done:
            try:
                client.do_handshake()
                client_done = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError:
                client_done = True
        s_in.write(c_out.read())
        if not server_done:
            try:
                server.do_handshake()
                server_done = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                return server, exc
        c_in.write(s_out.read())
        if server_done and client_done:
            break
    # TLS 1.3: the server learns of a bad client certificate on its first read.
    try:
        server.read(1)
    except ssl.SSLWantReadError:
        pass
    except ssl.SSLError as exc:
        return server, exc
    return server, None


def client_context(
    pki: Pki,
    cert: x509.Certificate | None = None,
    key: object = None,
    chain: tuple[x509.Certificate, ...] = (),
    version: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=pem(pki.ca).decode())
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if cert is not None:
        path = pki.file(f"client-{cert.serial_number}.pem", pem(cert, *chain) + key_pem(key))  # type: ignore[arg-type]
        ctx.load_cert_chain(path)
    return ctx


# ------------------------------------------------------------------ cipher names


@pytest.mark.parametrize(
    ("iana", "openssl"),
    [
        ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256"),
        ("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "ECDHE-RSA-AES256-GCM-SHA384"),
        ("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-RSA-CHACHA20-POLY1305"),
        ("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384", "ECDHE-ECDSA-AES256-SHA384"),
        ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "ECDHE-RSA-AES128-SHA"),
        ("TLS_RSA_WITH_AES_128_GCM_SHA256", "AES128-GCM-SHA256"),
        ("TLS_DHE_RSA_WITH_AES_256_GCM_SHA384", "DHE-RSA-AES256-GCM-SHA384"),
        ("TLS_NOPE_WITH_AES_128_GCM_SHA256", None),
    ],
)
def test_iana_cipher_names_map_to_openssl(iana: str, openssl: str | None) -> None:
    assert openssl_cipher_name(iana) == openssl


def test_cipher_suite_list_validation() -> None:
    var = "LISTENER_SSL_ENABLED_CIPHER_SUITES"
    assert resolve_cipher_suites("", var, False) == (None, [])
    ciphers, _ = resolve_cipher_suites(
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, ECDHE-RSA-AES128-GCM-SHA256", var, False
    )
    assert ciphers == "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"
    with pytest.raises(TlsConfigError, match=f"{var}: unknown or unsupported cipher suite 'BOGUS'"):
        resolve_cipher_suites("BOGUS", var, False)
    with pytest.raises(TlsConfigError, match=r"only TLS 1\.3 suites"):
        resolve_cipher_suites("TLS_AES_128_GCM_SHA256", var, False)
    assert resolve_cipher_suites("TLS_AES_128_GCM_SHA256", var, True)[0] is None


# ------------------------------------------------------------------ material


def test_pem_chain_with_separate_key_trusts_every_cert_of_the_file(pki: Pki) -> None:
    material = load_material(pki.config(), NOW)
    assert material.leaf == pki.server
    assert material.chain == (pki.server, pki.ca)
    assert set(material.trust) == {pki.server, pki.ca}  # TBMQ: the cert file is the trust set


def test_key_inside_the_cert_file_is_used_before_the_key_file(pki: Pki) -> None:
    combined = pki.file("combined.pem", pem(pki.server, pki.ca) + key_pem(pki.server_key, "s3cret"))
    cfg = pki.config(pem_cert=combined, pem_key="/nonexistent.pem", pem_key_password="s3cret")
    assert load_material(cfg, NOW).leaf == pki.server


@pytest.mark.parametrize("traditional", [False, True])
@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_encrypted_keys_pkcs8_and_traditional(pki: Pki, kind: str, traditional: bool) -> None:
    key = make_key(kind)
    cert = make_cert("localhost", key, (pki.ca, pki.ca_key))
    cfg = pki.config(
        pem_cert=pki.file("s.pem", pem(cert)),
        pem_key=pki.file("k.pem", key_pem(key, "pw", traditional)),
        pem_key_password="pw",
    )
    assert load_material(cfg, NOW).leaf == cert
    with pytest.raises(TlsConfigError, match="LISTENER_SSL_PEM_KEY_PASSWORD: wrong password"):
        load_material(dataclasses.replace(cfg, pem_key_password="nope"), NOW)
    with pytest.raises(TlsConfigError, match="LISTENER_SSL_PEM_KEY_PASSWORD is empty"):
        load_material(dataclasses.replace(cfg, pem_key_password=""), NOW)


def test_startup_errors_name_the_setting(pki: Pki) -> None:
    with pytest.raises(TlsConfigError, match="LISTENER_SSL_PEM_CERT: file not found"):
        load_material(pki.config(pem_cert=str(pki.tmp / "nope.pem")), NOW)
    with pytest.raises(TlsConfigError, match="LISTENER_SSL_PEM_KEY: file not found"):
        load_material(pki.config(pem_key=str(pki.tmp / "nope.pem")), NOW)
    other = pki.file("other_key.pem", key_pem(make_key()))
    with pytest.raises(
        TlsConfigError, match="LISTENER_SSL_PEM_KEY: the private key does not match"
    ):
        load_material(pki.config(pem_key=other), NOW)
    empty = pki.file("empty.pem", b"nothing here\n")
    with pytest.raises(TlsConfigError, match="holds no PEM certificate"):
        load_material(pki.config(pem_cert=empty), NOW)
    with pytest.raises(TlsConfigError, match="LISTENER_SSL_TRUSTSTORE: file not found"):
        load_material(pki.config(truststore=str(pki.tmp / "nope.pem")), NOW)
    with pytest.raises(TlsConfigError, match=r"LISTENER_SSL_CRL: .* holds no PEM CRL"):
        load_material(pki.config(crl=empty), NOW)


def test_expired_not_yet_valid_and_expiring_server_certificates(pki: Pki) -> None:
    def with_cert(cert: x509.Certificate) -> TlsListenerConfig:
        return pki.config(pem_cert=pki.file("s.pem", pem(cert)))

    expired = make_cert(
        "localhost",
        pki.server_key,
        (pki.ca, pki.ca_key),
        not_before=NOW - 10 * DAY,
        not_after=NOW - DAY,
    )
    with pytest.raises(TlsConfigError, match=r"LISTENER_SSL_PEM_CERT: .* expired on"):
        load_material(with_cert(expired), NOW)
    future = make_cert(
        "localhost",
        pki.server_key,
        (pki.ca, pki.ca_key),
        not_before=NOW + DAY,
        not_after=NOW + 10 * DAY,
    )
    with pytest.raises(TlsConfigError, match="not valid before"):
        load_material(with_cert(future), NOW)
    soon = make_cert("localhost", pki.server_key, (pki.ca, pki.ca_key), not_after=NOW + 5 * DAY)
    warnings: list[str] = []
    load_material(with_cert(soon), NOW, warn=warnings.append)
    assert len(warnings) == 1 and "expires on" in warnings[0]


def test_truststore_alone_decides_trust(pki: Pki) -> None:
    store = pki.file("trust.pem", pem(pki.other_ca))
    material = load_material(pki.config(truststore=store), NOW)
    assert material.trust == (pki.other_ca,)


def test_crl_signatures_are_checked_and_foreign_crls_warned_about(pki: Pki) -> None:
    def crl_by(name: x509.Name, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
        crl = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(name)
            .last_update(NOW - DAY)
            .next_update(NOW + DAY)
            .sign(key, hashes.SHA256())
        )
        return pem(crl)

    warnings: list[str] = []
    cfg = pki.config(crl=pki.file("crl.pem", crl_by(pki.other_ca.subject, pki.other_ca_key)))
    load_material(cfg, NOW, warn=warnings.append)
    assert any("not from a trust anchor" in w for w in warnings)
    forged = pki.config(crl=pki.file("forged.pem", crl_by(pki.ca.subject, pki.other_ca_key)))
    with pytest.raises(TlsConfigError, match="LISTENER_SSL_CRL: the signature of the CRL"):
        load_material(forged, NOW)


# ------------------------------------------------------------------ contexts and handshakes


def test_one_way_and_two_way_handshakes(pki: Pki) -> None:
    ctx = build_context(pki.config(), load_material(pki.config(), NOW))
    server, error = handshake(ctx, client_context(pki))
    assert error is None
    assert ChainCache().peer_certificates(server).presented == ()
    server, error = handshake(ctx, client_context(pki, pki.client, pki.client_key))
    assert error is None
    certs = ChainCache().peer_certificates(server)
    assert certs.leaf_subject() == "CN=device1"
    assert certs.verified[-1] == pki.ca.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_foreign_ca_rejected_and_explained(pki: Pki, version: ssl.TLSVersion) -> None:
    ctx = build_context(pki.config(), load_material(pki.config(), NOW))
    client = client_context(pki, pki.foreign, pki.foreign_key, version=version)
    _, error = handshake(ctx, client)
    assert error is not None
    key, words = explain(error, 10)
    assert key == "unknown_ca" and "unknown CA" in words


def test_required_without_certificate_is_explained(pki: Pki) -> None:
    cfg = pki.config(client_auth="REQUIRED")
    ctx = build_context(cfg, load_material(cfg, NOW))
    _, error = handshake(ctx, client_context(pki, version=ssl.TLSVersion.TLSv1_2))
    assert error is not None
    assert explain(error, 10)[0] == "no_client_certificate"


def test_none_mode_asks_for_no_certificate(pki: Pki) -> None:
    cfg = pki.config(client_auth="NONE")
    ctx = build_context(cfg, load_material(cfg, NOW))
    server, error = handshake(ctx, client_context(pki, pki.foreign, pki.foreign_key))
    assert error is None
    assert ChainCache().peer_certificates(server).presented == ()


def test_revoked_and_expired_clients(pki: Pki) -> None:
    revoked = make_cert("revoked", make_key(), (pki.ca, pki.ca_key))
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(pki.ca.subject)
        .last_update(NOW - DAY)
        .next_update(NOW + DAY)
        .add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(revoked.serial_number)
            .revocation_date(NOW - DAY)
            .build()
        )
        .sign(pki.ca_key, hashes.SHA256())
    )
    cfg = pki.config(crl=pki.file("crl.pem", pem(crl)))
    ctx = build_context(cfg, load_material(cfg, NOW))
    key = make_key()
    revoked = make_cert("revoked", key, (pki.ca, pki.ca_key), serial=revoked.serial_number)
    _, error = handshake(ctx, client_context(pki, revoked, key, version=ssl.TLSVersion.TLSv1_2))
    assert error is not None and explain(error, 10)[0] == "revoked"
    _, error = handshake(ctx, client_context(pki, pki.client, pki.client_key))
    assert error is None
    old_key = make_key()
    expired = make_cert(
        "old", old_key, (pki.ca, pki.ca_key), not_before=NOW - 9 * DAY, not_after=NOW - DAY
    )
    _, error = handshake(ctx, client_context(pki, expired, old_key, version=ssl.TLSVersion.TLSv1_2))
    assert error is not None and explain(error, 10)[0] == "expired"


def test_tls13_minimum_refuses_tls12_clients(pki: Pki) -> None:
    cfg = pki.config(protocol="TLSv1.3")
    ctx = build_context(cfg, load_material(cfg, NOW))
    _, error = handshake(ctx, client_context(pki, version=ssl.TLSVersion.TLSv1_2))
    assert error is not None
    assert explain(error, 10)[0] == "protocol_version"
    assert handshake(ctx, client_context(pki, version=ssl.TLSVersion.TLSv1_3))[1] is None


def test_cipher_list_that_cannot_serve_the_key_is_refused(pki: Pki) -> None:
    cfg = pki.config(cipher_suites="TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256")
    with pytest.raises(TlsConfigError, match=r"TLS 1\.2 suites listed can be used with an EC"):
        build_context(cfg, load_material(cfg, NOW))


def test_not_tls_and_timeout_are_explained() -> None:
    assert explain(ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), 10)
    err = ssl.SSLError()
    err.reason = "WRONG_VERSION_NUMBER"
    assert explain(err, 10)[0] == "not_tls"
    key, words = explain(TimeoutError(), 7)
    assert key == "timeout" and "timed out after 7 s" in words
    uvloop_style = ConnectionAbortedError("SSL handshake is taking longer than 7.0 seconds")
    assert explain(uvloop_style, 7)[0] == "timeout"
    assert explain(ConnectionResetError(), 7)[0] == "closed"


def test_reload_swaps_on_success_and_keeps_old_on_failure(pki: Pki) -> None:
    cfg = pki.config()
    holder = TlsContextHolder(cfg)
    first = holder.context
    assert not holder.changed()
    new_key = make_key()
    new_cert = make_cert("localhost", new_key, (pki.ca, pki.ca_key))
    Path(cfg.pem_cert).write_bytes(pem(new_cert, pki.ca))
    Path(cfg.pem_key).write_bytes(key_pem(new_key))
    assert holder.changed()
    assert holder.reload("test")
    assert holder.context is not first and holder.material.leaf == new_cert
    current = holder.context
    Path(cfg.pem_cert).write_bytes(b"garbage")
    assert not holder.reload("test")
    assert holder.context is current and holder.failed_reloads == 1
    assert not holder.changed()  # the broken file is not retried every interval
