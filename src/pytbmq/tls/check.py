"""`pytbmq tls check`: the broker's TLS startup checks as a report, and a client-side probe.

`check_listener` runs exactly what a TLS listener runs at startup (load_material, then
build_context with its in-memory self-test handshakes) and describes the result for a
person: files, server chain, key, trust anchors, client-certificate mode, CRLs,
versions, cipher suites and warnings, or the one error message naming the setting.
`probe` is the other side: it handshakes with a running broker like a client, reports
protocol, cipher, the chain the server sent and whether it verifies, in words, then sends
an MQTT CONNECT (a TLS 1.3 server reports a refused client certificate only after the
handshake). Both return a Report; pytbmq.tls.tooling prints it.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import socket
import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from pytbmq.errors import TlsConfigError
from pytbmq.tls.context import build_context
from pytbmq.tls.issue import describe_key
from pytbmq.tls.material import (
    ServerMaterial,
    TlsListenerConfig,
    load_material,
    pem_blocks,
    subject_text,
)

if TYPE_CHECKING:
    from pytbmq.config import Settings

TLS_LISTENERS = ("ssl", "wss")
_INDENT = "  "


@dataclass
class Report:
    """Lines to print, and whether everything checked is usable."""

    title: str
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def add(self, label: str, text: str) -> None:
        self.lines.append(f"{_INDENT}{label:<15}{text}")

    def sub(self, text: str, depth: int = 2) -> None:
        self.lines.append(_INDENT * depth + text)

    def render(self) -> str:
        status = "OK" if self.ok else "FAILED"
        out = [f"{self.title}: {status}", *self.lines]
        if self.error is not None:
            out.append(f"{_INDENT}error: {self.error}")
        if self.warnings:
            out.append(f"{_INDENT}warnings:")
            out += [f"{_INDENT * 2}WARNING: {w}" for w in self.warnings]
        elif self.ok:
            out.append(f"{_INDENT}{'warnings':<15}none")
        return "\n".join(out)


def enabled_tls_listeners(settings: Settings) -> list[str]:
    """Names of the TLS listeners this build knows and the settings enable."""
    return [n for n in TLS_LISTENERS if getattr(settings, f"listener_{n}_enabled", False) is True]


# --------------------------------------------------------------------------- certificates


def _when(moment: datetime.datetime, now: datetime.datetime) -> str:
    days = (moment - now).days
    if moment < now:
        return f"{moment:%Y-%m-%d %H:%M} UTC (EXPIRED {-days} days ago)"
    return f"{moment:%Y-%m-%d %H:%M} UTC (in {days} days)"


def _self_signed(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer and signed_by(cert, cert)


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _sans(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names = [f"DNS:{n}" for n in san.get_values_for_type(x509.DNSName)]
    names += [f"IP:{a}" for a in san.get_values_for_type(x509.IPAddress)]
    return names


def _eku(cert: x509.Certificate) -> list[str] | None:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    return [getattr(oid, "_name", None) or oid.dotted_string for oid in eku]


def describe_chain(report: Report, chain: list[x509.Certificate], now: datetime.datetime) -> None:
    """One block per certificate: subject, issuer, expiry, key; SANs and EKU of the leaf."""
    for i, cert in enumerate(chain):
        root = " (self-signed root)" if _self_signed(cert) else ""
        report.sub(f"[{i}] {subject_text(cert)}{root}")
        if not root:
            report.sub(f"issuer   {cert.issuer.rfc4514_string()}", 4)
        report.sub(f"expires  {_when(cert.not_valid_after_utc, now)}", 4)
        report.sub(f"key      {describe_key(cert.public_key())}", 4)
        if i == 0:
            sans = _sans(cert)
            report.sub(f"SANs     {', '.join(sans) if sans else '(none)'}", 4)
            eku = _eku(cert)
            if eku is not None:
                report.sub(f"EKU      {', '.join(eku)}", 4)


def chain_warnings(chain: list[x509.Certificate], var: str, now: datetime.datetime) -> list[str]:
    """What clients will trip over although the server starts."""
    out: list[str] = []
    leaf = chain[0]
    if not _sans(leaf):
        out.append(
            f"{var}: the server certificate {subject_text(leaf)} has no subjectAltName; clients "
            "that check host names (paho, mosquitto, Java, browsers) refuse it"
        )
    eku = _eku(leaf)
    if eku is not None and "serverAuth" not in eku:
        out.append(
            f"{var}: the server certificate's extended key usage ({', '.join(eku)}) lacks "
            "serverAuth; verifying clients refuse it"
        )
    for i in range(len(chain) - 1):
        if not signed_by(chain[i], chain[i + 1]):
            out.append(
                f"{var}: certificate [{i + 1}] {subject_text(chain[i + 1])} did not sign "
                f"[{i}] {subject_text(chain[i])}: the chain is out of order or has a "
                "certificate that does not belong"
            )
    for i, cert in enumerate(chain[1:], 1):
        if cert.not_valid_after_utc < now:
            out.append(f"{var}: the CA certificate [{i}] {subject_text(cert)} has expired")
    return out


# --------------------------------------------------------------------------- listener check


@contextlib.contextmanager
def _captured_warnings(into: list[str]) -> Iterator[None]:
    """Route the WARNINGs pytbmq.tls logs while checking into the report."""

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            into.append(record.getMessage())

    logger = logging.getLogger("pytbmq.tls")
    handler = _Collect(logging.WARNING)
    old_propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = old_propagate


def check_listener(settings: Settings, name: str, now: datetime.datetime | None = None) -> Report:
    """Load, build and self-test the TLS material of listener ``name`` as the broker does."""
    now = now or datetime.datetime.now(datetime.UTC)
    try:
        cfg = TlsListenerConfig.from_settings(settings, name)
    except AttributeError as exc:
        report = Report(f"listener {name}")
        report.error = f"this build has incomplete settings for listener {name}: {exc}"
        return report
    report = Report(f"listener {name} ({cfg.prefix}_*)")
    found: list[str] = []
    try:
        with _captured_warnings(found):
            material = load_material(cfg, now, warn=found.append)
            context = build_context(cfg, material)
    except TlsConfigError as exc:
        report.error = str(exc)
        _describe_files(report, cfg)
        report.warnings += found
        return report
    _describe_files(report, cfg)
    _describe_material(report, cfg, material, now)
    _describe_context(report, cfg, material, context)
    report.warnings += found
    cert_var = cfg.var("KEY_STORE") if cfg.uses_keystore() else cfg.var("PEM_CERT")
    report.warnings += chain_warnings(list(material.chain), cert_var, now)
    report.warnings += _trust_warnings(cfg, material, now)
    return report


def _describe_files(report: Report, cfg: TlsListenerConfig) -> None:
    if cfg.uses_keystore():
        fallback = (
            "" if cfg.credentials_type == "KEYSTORE" else " (fallback: the PEM file is missing)"
        )
        report.add("credentials", f"KEYSTORE{fallback}")
        report.sub(f"{cfg.var('KEY_STORE')}={_abs(cfg.key_store)} ({cfg.key_store_type})")
        alias = cfg.key_alias or "(empty: the first key entry that opens)"
        report.sub(f"{cfg.var('KEY_ALIAS')}={alias}")
    else:
        report.add("credentials", "PEM")
        report.sub(f"{cfg.var('PEM_CERT')}={_abs(cfg.pem_cert)}{_pem_summary(cfg.pem_cert)}")
        if Path(cfg.pem_key).exists() and not _has_key(cfg.pem_cert):
            report.sub(f"{cfg.var('PEM_KEY')}={_abs(cfg.pem_key)}{_pem_summary(cfg.pem_key)}")
    if cfg.truststore:
        report.sub(f"{cfg.var('TRUSTSTORE')}={_abs(cfg.truststore)} ({cfg.truststore_type})")
    if cfg.crl:
        report.sub(f"{cfg.var('CRL')}={_abs(cfg.crl)}")


def _abs(path: str) -> str:
    return str(Path(path).absolute()) if path else "(empty)"


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""


def _has_key(path: str) -> bool:
    return any(b"PRIVATE KEY" in label for label, _ in pem_blocks(_read(path)))


def _pem_summary(path: str) -> str:
    blocks = pem_blocks(_read(path))
    certs = sum(1 for label, _ in blocks if label.endswith(b"CERTIFICATE"))
    keys = [block for label, block in blocks if b"PRIVATE KEY" in label]
    parts = []
    if certs:
        parts.append(f"{certs} certificate{'s' if certs > 1 else ''}")
    if keys:
        head = keys[0].split(b"\n", 2)
        encrypted = b"ENCRYPTED" in head[0] or b"Proc-Type: 4,ENCRYPTED" in keys[0]
        parts.append("an encrypted private key" if encrypted else "a private key")
    return f" ({', '.join(parts)})" if parts else ""


def _describe_material(
    report: Report, cfg: TlsListenerConfig, material: ServerMaterial, now: datetime.datetime
) -> None:
    report.add("server chain", f"{len(material.chain)} certificate(s), sent to clients leaf first")
    describe_chain(report, list(material.chain), now)
    last = material.chain[-1]
    if not _self_signed(last):
        report.sub(
            f"the chain ends below {last.issuer.rfc4514_string()}: clients need that CA in "
            "their CA file"
        )
    report.add(
        "server key",
        f"{describe_key(material.key)} from {material.source} (matches the certificate)",
    )
    mode = cfg.client_auth
    meaning = {
        "NONE": "no client certificate is asked for",
        "REQUESTED": "asked for; a client without one connects, an untrusted one is refused",
        "REQUIRED": "a trusted client certificate is required",
    }[mode]
    report.add("client certs", f"{cfg.var('CLIENT_AUTH')}={mode}: {meaning}")
    source = (
        cfg.var("TRUSTSTORE")
        if cfg.truststore
        else (cfg.var("KEY_STORE") if cfg.uses_keystore() else cfg.var("PEM_CERT"))
    )
    report.add("trust anchors", f"{len(material.trust)}, from {source}")
    for cert in material.trust:
        report.sub(f"{subject_text(cert)} (expires {cert.not_valid_after_utc:%Y-%m-%d})")
    if not material.crls:
        report.add("CRLs", f"none ({cfg.var('CRL')} is empty)")
    else:
        report.add("CRLs", f"{len(material.crls)}, leaf certificates checked")
        for crl in material.crls:
            nxt = crl.next_update_utc
            until = f", next update {nxt:%Y-%m-%d %H:%M} UTC" if nxt else ""
            report.sub(f"issuer {crl.issuer.rfc4514_string()}: {len(list(crl))} revoked{until}")


def _describe_context(
    report: Report, cfg: TlsListenerConfig, material: ServerMaterial, ctx: ssl.SSLContext
) -> None:
    versions = "TLS 1.3 only" if cfg.protocol == "TLSv1.3" else "TLS 1.2 and TLS 1.3"
    report.add("protocol", f"{cfg.var('PROTOCOL')}={cfg.protocol or '(empty)'}: accepts {versions}")
    ciphers = ctx.get_ciphers()
    tls13 = [str(c["name"]) for c in ciphers if c["protocol"] == "TLSv1.3"]
    auth = {"EC": "auth-ecdsa", "RSA": "auth-rsa"}.get(describe_key(material.key).split()[0])
    tls12 = [
        str(c["name"])
        for c in ciphers
        if c["protocol"] != "TLSv1.3" and c["auth"] in (auth, "auth-any")
    ]
    origin = "listed" if cfg.cipher_suites.strip() else "OpenSSL defaults"
    report.add("cipher suites", f"{origin} ({cfg.var('ENABLED_CIPHER_SUITES')})")
    report.sub(f"TLS 1.3: {', '.join(tls13)}")
    if cfg.protocol != "TLSv1.3":
        report.sub(f"TLS 1.2 (usable with this key): {', '.join(tls12)}")
    report.add("self-test", f"{versions} handshakes in memory completed")
    report.add(
        "timeouts",
        f"handshake {cfg.handshake_timeout} s; files re-checked every "
        f"{cfg.reload_interval} s" + (" (0: only on SIGHUP)" if not cfg.reload_interval else ""),
    )


def _trust_warnings(
    cfg: TlsListenerConfig, material: ServerMaterial, now: datetime.datetime
) -> list[str]:
    out: list[str] = []
    if cfg.client_auth == "NONE":
        return out
    if not material.trust:
        out.append(
            f"{cfg.var('CLIENT_AUTH')}={cfg.client_auth} but there is no trust anchor: every "
            "client certificate will be refused"
        )
    elif not cfg.truststore and all(not _is_ca(c) for c in material.trust):
        where = cfg.var("KEY_STORE") if cfg.uses_keystore() else cfg.var("PEM_CERT")
        out.append(
            f"the only trust anchors are leaf certificates from {where}: client certificates "
            f"signed by a CA are refused; append the CA (TBMQ's serverChain.pem) or set "
            f"{cfg.var('TRUSTSTORE')}"
        )
    for cert in material.trust:
        if cert.not_valid_after_utc < now:
            out.append(f"the trust anchor {subject_text(cert)} has expired")
    for crl in material.crls:
        nxt = crl.next_update_utc
        if nxt is not None and nxt < now:
            out.append(
                f"{cfg.var('CRL')}: the CRL of {crl.issuer.rfc4514_string()} expired on "
                f"{nxt:%Y-%m-%d %H:%M} UTC: OpenSSL refuses every client certificate from "
                "that CA until it is renewed"
            )
    return out


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return _self_signed(cert)


# --------------------------------------------------------------------------- probe

_VERIFY_WORDS = {
    2: "the issuer of a certificate in the server's chain is not in {trust}",
    18: "the server sent a self-signed certificate that is not in {trust}",
    19: "the server's chain ends in a root CA that is not in {trust}",
    20: "the server certificate is signed by a CA that is not in {trust} (or the server "
    "did not send its intermediate CA)",
    21: "the server certificate cannot be verified: its issuer is not in {trust}",
    9: "a certificate in the server's chain is not valid yet (check the clocks)",
    10: "a certificate in the server's chain has expired",
    62: "the server certificate is not valid for the name {name} (its SANs: {sans})",
    64: "the server certificate is not valid for the address {name} (its SANs: {sans})",
    26: "the server certificate is not meant for TLS servers (extended key usage)",
}
_ALERT_WORDS = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the server requires a client certificate "
    "(LISTENER_*_CLIENT_AUTH=REQUIRED): pass --cert and --key",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the server refused the client certificate",
    "TLSV1_ALERT_UNKNOWN_CA": "the server does not trust the CA of the client certificate",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the server says the client certificate has expired",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "the server says the client certificate is revoked",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "the server aborted the handshake (no common protocol "
    "version or cipher suite, or a client certificate is required)",
    "TLSV1_ALERT_PROTOCOL_VERSION": "no TLS version in common with the server",
    "WRONG_VERSION_NUMBER": "the server did not answer with TLS (a plain MQTT port?)",
    "UNEXPECTED_EOF_WHILE_READING": "the server closed the connection during the handshake "
    "(not a TLS port, or it refused this client)",
}
_CONNACK_WORDS = {
    0: "connection accepted",
    1: "refused: unacceptable protocol version",
    2: "refused: client identifier rejected",
    3: "refused: server unavailable",
    4: "refused: bad user name or password",
    5: "refused: not authorized",
}


@dataclass(frozen=True)
class ProbeOptions:
    host: str
    port: int
    cafile: str | None = None
    cert: str | None = None
    key: str | None = None
    key_password: str | None = None
    servername: str | None = None
    timeout: float = 10.0


def _client_context(opts: ProbeOptions, verify: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = verify
    ctx.verify_mode = ssl.CERT_REQUIRED if verify else ssl.CERT_NONE
    if verify:
        try:
            if opts.cafile:
                ctx.load_verify_locations(cafile=opts.cafile)
            else:
                ctx.load_default_certs()
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(f"--cafile {opts.cafile}: cannot load it: {_why(exc)}") from None
    if opts.cert:
        try:
            ctx.load_cert_chain(opts.cert, opts.key or None, password=opts.key_password or None)
        except (OSError, ssl.SSLError) as exc:
            hint = " (wrong --key-password?)" if opts.key_password else ""
            raise TlsConfigError(
                f"--cert {opts.cert} / --key {opts.key or opts.cert}: cannot load them: "
                f"{_why(exc)}{hint}"
            ) from None
    return ctx


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    if isinstance(exc, OSError):
        return str(exc.strerror or exc)
    return str(exc)


def _ders(tls: ssl.SSLSocket, verified: bool) -> list[x509.Certificate]:
    """The chain the server sent (or the verified path), via OpenSSL's view."""
    inner: Any = tls if hasattr(tls, "get_unverified_chain") else tls._sslobj  # type: ignore[attr-defined]
    try:
        certs = inner.get_verified_chain() if verified else inner.get_unverified_chain()
    except (AttributeError, ssl.SSLError, ValueError):
        leaf = tls.getpeercert(binary_form=True)
        return [x509.load_der_x509_certificate(leaf)] if leaf else []
    out: list[x509.Certificate] = []
    for cert in certs or ():
        der = cert if isinstance(cert, bytes) else cert.public_bytes(ssl._ssl.ENCODING_DER)  # type: ignore[attr-defined]
        out.append(x509.load_der_x509_certificate(der))
    return out


def _handshake(opts: ProbeOptions, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection((opts.host, opts.port), timeout=opts.timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=opts.servername or opts.host)
    except BaseException:
        raw.close()
        raise


def _mqtt_connect_packet(client_id: str) -> bytes:
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x0a" + len(cid).to_bytes(2, "big") + cid
    return bytes((0x10, len(body))) + body


def _read_exact(tls: ssl.SSLSocket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = tls.recv(n - len(data))
        if not chunk:
            raise ConnectionResetError("the server closed the connection")
        data += chunk
    return data


def probe(opts: ProbeOptions, now: datetime.datetime | None = None) -> Report:
    """Handshake with a running TLS listener as a client and describe what happened."""
    now = now or datetime.datetime.now(datetime.UTC)
    report = Report(f"connect {opts.host}:{opts.port}")
    trust = f"--cafile {opts.cafile}" if opts.cafile else "the system trust store"
    name = opts.servername or opts.host
    verify_error: str | None = None
    try:
        strict = _client_context(opts, verify=True)
        loose = _client_context(opts, verify=False)
    except TlsConfigError as exc:
        report.error = str(exc)
        return report
    try:
        try:
            tls = _handshake(opts, strict)
        except ssl.SSLCertVerificationError as exc:
            code = exc.verify_code
            template = _VERIFY_WORDS.get(code, "{message}")
            verify_error = template.format(
                trust=trust, name=name, sans="{sans}", message=exc.verify_message
            )
            tls = _handshake(opts, loose)
    except ssl.SSLError as exc:
        reason = str(exc.reason or exc)
        report.error = f"TLS handshake failed: {_ALERT_WORDS.get(reason, reason)} ({reason})"
        return report
    except OSError as exc:
        report.error = f"cannot connect to {opts.host}:{opts.port}: {_why(exc)}"
        return report
    with tls:
        cipher = tls.cipher()
        report.add("protocol", str(tls.version()))
        if cipher:
            report.add("cipher", f"{cipher[0]} ({cipher[2]} bits)")
        chain = _ders(tls, verified=False)
        report.add("server chain", f"{len(chain)} certificate(s) as sent by the server")
        describe_chain(report, chain, now)
        if verify_error is None:
            path = _ders(tls, verified=True)
            anchor = subject_text(path[-1]) if path else "?"
            report.add(
                "verification",
                f"OK: the chain verifies against {trust} (anchor {anchor}) and the "
                f"certificate is valid for {name}",
            )
        else:
            sans = ", ".join(_sans(chain[0])) if chain else "none"
            verify_error = verify_error.replace("{sans}", sans)
            report.add("verification", f"FAILED: {verify_error}")
        report.warnings += chain_warnings(chain, "server", now) if chain else []
        _mqtt_exchange(report, tls, opts)
    if verify_error is not None and report.error is None:
        report.error = f"the server certificate does not verify: {verify_error}"
    return report


def _mqtt_exchange(report: Report, tls: ssl.SSLSocket, opts: ProbeOptions) -> None:
    """CONNECT/CONNACK/DISCONNECT; a TLS 1.3 client-certificate refusal shows up here."""
    client_id = f"pytbmq-tls-check-{uuid.uuid4().hex[:8]}"
    sent = f"sent {opts.cert}" if opts.cert else "none sent"
    try:
        tls.sendall(_mqtt_connect_packet(client_id))
        head = _read_exact(tls, 2)
        body = _read_exact(tls, head[1])
    except ssl.SSLError as exc:
        reason = str(exc.reason or exc)
        report.add("client cert", sent)
        report.error = f"the server refused the connection: {_ALERT_WORDS.get(reason, reason)}"
        return
    except (OSError, TimeoutError) as exc:
        report.add("client cert", sent)
        if isinstance(exc, ConnectionResetError):
            guess = (
                "it most likely refused the client certificate (untrusted, expired or revoked)"
                if opts.cert
                else "it most likely requires a client certificate (pass --cert and --key)"
            )
            report.error = (
                f"the server closed the connection right after the handshake: {guess}; the "
                "broker log says why"
            )
        else:
            report.error = f"no MQTT answer after the handshake: {_why(exc)}"
        return
    report.add("client cert", f"{sent}; the server completed the handshake")
    if head[0] >> 4 != 2 or len(body) < 2:
        report.add("MQTT", f"unexpected answer to CONNECT (first byte {head[0]:#04x})")
        return
    code = body[1]
    report.add("MQTT", f"CONNACK {code}: {_CONNACK_WORDS.get(code, 'unknown code')}")
    with contextlib.suppress(OSError):
        tls.sendall(b"\xe0\x00")
