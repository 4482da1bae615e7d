"""TLS material of one listener: the server key and chain, the trust anchors, the CRLs.

Reads what a TBMQ user configured (PEM files or a JKS/PKCS12 keystore, plus pytbmq's
optional truststore and CRL file), checks it the way a careful operator would, and
returns it as `ServerMaterial`, or raises TlsConfigError with one message that names the
setting and says what is wrong. Called by pytbmq.tls.context when a listener starts or
reloads; the certificate tooling reuses the loaders.
"""

from __future__ import annotations

import datetime
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from pytbmq.errors import TlsConfigError

if TYPE_CHECKING:
    from pytbmq.config import Settings

log = logging.getLogger(__name__)

EXPIRY_WARNING_DAYS = 30
_SHA256 = hashes.SHA256()

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)
_KEY_LABELS = {
    b"PRIVATE KEY",
    b"ENCRYPTED PRIVATE KEY",
    b"RSA PRIVATE KEY",
    b"EC PRIVATE KEY",
    b"DSA PRIVATE KEY",
}


@dataclass(frozen=True)
class TlsListenerConfig:
    """The TLS settings of one listener ("ssl" for MQTTS, "wss" for WSS), by role."""

    name: str  # listener name, "ssl"
    prefix: str  # env prefix of its settings, "LISTENER_SSL"
    protocol: str
    cipher_suites: str
    credentials_type: str
    pem_cert: str
    pem_key: str
    pem_key_password: str
    key_store_type: str
    key_store: str
    key_store_password: str
    key_alias: str
    key_password: str
    truststore: str
    truststore_type: str
    truststore_password: str
    client_auth: str
    crl: str
    reload_interval: int
    handshake_timeout: int
    # SECURITY_MQTT_SSL_SKIP_VALIDITY_CHECK_FOR_CLIENT_CERT: client certificates outside
    # their validity dates pass the handshake (the X.509 provider skips dates too)
    skip_client_cert_validity: bool = False

    @classmethod
    def from_settings(cls, settings: Settings, name: str) -> TlsListenerConfig:
        def get(suffix: str) -> Any:
            return getattr(settings, f"listener_{name}_{suffix}")

        return cls(
            name=name,
            prefix=f"LISTENER_{name.upper()}",
            protocol=get("protocol"),
            cipher_suites=get("enabled_cipher_suites"),
            credentials_type=get("credentials_type"),
            pem_cert=get("pem_cert"),
            pem_key=get("pem_key"),
            pem_key_password=get("pem_key_password"),
            key_store_type=get("key_store_type"),
            key_store=get("key_store"),
            key_store_password=get("key_store_password"),
            key_alias=get("key_alias"),
            key_password=get("key_password"),
            truststore=get("truststore"),
            truststore_type=get("truststore_type"),
            truststore_password=get("truststore_password"),
            client_auth=get("client_auth"),
            crl=get("crl"),
            reload_interval=get("reload_interval_sec"),
            handshake_timeout=settings.tls_handshake_timeout_sec,
            skip_client_cert_validity=settings.security_mqtt_ssl_skip_validity_check_for_client_cert,
        )

    def var(self, suffix: str) -> str:
        """The environment variable name of one of this listener's settings."""
        return f"{self.prefix}_{suffix}"

    def uses_keystore(self) -> bool:
        """KEYSTORE credentials, including TBMQ's fallback from a missing PEM file."""
        if self.credentials_type == "KEYSTORE":
            return True
        return not Path(self.pem_cert).exists() and Path(self.key_store).is_file()

    def watched_files(self) -> list[Path]:
        """Every file the material is read from, for change detection."""
        paths: list[str] = []
        if self.uses_keystore():
            paths.append(self.key_store)
        else:
            paths.append(self.pem_cert)
            if Path(self.pem_key).exists():
                paths.append(self.pem_key)
        if self.truststore:
            paths.append(self.truststore)
        if self.crl:
            paths.append(self.crl)
        return [Path(p) for p in paths]


@dataclass(frozen=True)
class ServerMaterial:
    chain: tuple[x509.Certificate, ...]  # leaf first, as sent to clients
    key: PrivateKeyTypes
    trust: tuple[x509.Certificate, ...]  # anchors for client certificates
    crls: tuple[x509.CertificateRevocationList, ...]
    source: str  # where the server credentials came from, for logs
    warnings: tuple[str, ...] = field(default=())

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]


def subject_text(cert: x509.Certificate) -> str:
    """RFC 4514 subject, e.g. 'CN=device1,O=Acme'."""
    return cert.subject.rfc4514_string()


def pem_blocks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(label, block bytes) of every PEM block, in file order."""
    return [(m.group(1), m.group(0)) for m in _PEM_BLOCK.finditer(data)]


def read_file(path: str, var: str, what: str) -> bytes:
    if not path:
        raise TlsConfigError(f"{var} is empty: set it to the path of the {what}")
    p = Path(path)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise TlsConfigError(f"{var}: file not found: {p} ({what})") from None
    except IsADirectoryError:
        raise TlsConfigError(f"{var}: {p} is a directory, expected the {what}") from None
    except PermissionError:
        raise TlsConfigError(f"{var}: {p} is not readable by this user ({what})") from None
    except OSError as exc:
        raise TlsConfigError(f"{var}: cannot read {p}: {exc.strerror or exc}") from None


def load_pem_certificates(data: bytes, var: str, path: str) -> list[x509.Certificate]:
    certs: list[x509.Certificate] = []
    for label, block in pem_blocks(data):
        if label in (b"CERTIFICATE", b"TRUSTED CERTIFICATE", b"X509 CERTIFICATE"):
            if label != b"CERTIFICATE":
                block = re.sub(rb"(BEGIN|END) [A-Z0-9 ]+-----", rb"\1 CERTIFICATE-----", block)
            try:
                certs.append(x509.load_pem_x509_certificate(block))
            except ValueError as exc:
                raise TlsConfigError(f"{var}: a certificate in {path} is damaged: {exc}") from None
    return certs


def load_pem_private_key(block: bytes, password: str, var: str, path: str) -> PrivateKeyTypes:
    """Load one PEM key block: PKCS#8, encrypted PKCS#8, or traditional RSA/EC (encrypted)."""
    encrypted = b"ENCRYPTED" in block.split(b"\n", 2)[0] or b"Proc-Type: 4,ENCRYPTED" in block
    try:
        return serialization.load_pem_private_key(
            block, password.encode() if encrypted and password else None
        )
    except TypeError:
        raise TlsConfigError(
            f"{var} is empty but the private key in {path} is encrypted: set the key's password"
        ) from None
    except ValueError as exc:
        if encrypted:
            raise TlsConfigError(f"{var}: wrong password for {path}") from None
        raise TlsConfigError(f"the private key in {path} cannot be read: {exc}") from None
    except Exception as exc:  # unsupported key type or cipher
        raise TlsConfigError(f"the private key in {path} cannot be read: {exc}") from None


def public_key_matches(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    pub = key.public_key()
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    try:
        return cert.public_key().public_bytes(enc, fmt) == pub.public_bytes(enc, fmt)
    except (TypeError, ValueError):
        return False


def order_chain(
    certs: list[x509.Certificate], key: PrivateKeyTypes, cert_var: str, key_var: str, where: str
) -> tuple[x509.Certificate, ...]:
    """The certificate that matches the key first, then the others in file order."""
    for i, cert in enumerate(certs):
        if public_key_matches(cert, key):
            rest = [c for j, c in enumerate(certs) if j != i]
            return (cert, *rest)
    first = subject_text(certs[0]) if certs else "(none)"
    raise TlsConfigError(
        f"{key_var}: the private key does not match the server certificate {first} "
        f"in {cert_var} ({where})"
    )


def check_validity(
    cert: x509.Certificate, var: str, path: str, now: datetime.datetime
) -> str | None:
    """Raise for an expired or not-yet-valid certificate; return a warning near expiry."""
    not_after = cert.not_valid_after_utc
    not_before = cert.not_valid_before_utc
    subject = subject_text(cert)
    if now > not_after:
        raise TlsConfigError(
            f"{var}: the server certificate {subject} in {path} expired on "
            f"{not_after:%Y-%m-%d %H:%M} UTC"
        )
    if now < not_before:
        raise TlsConfigError(
            f"{var}: the server certificate {subject} in {path} is not valid before "
            f"{not_before:%Y-%m-%d %H:%M} UTC (check the clock)"
        )
    if not_after - now < datetime.timedelta(days=EXPIRY_WARNING_DAYS):
        days = (not_after - now).days
        return (
            f"{var}: the server certificate {subject} expires on {not_after:%Y-%m-%d %H:%M} UTC "
            f"(in {days} days): renew it soon"
        )
    return None


def _keystore_module() -> Any:
    from pytbmq.tls import keystore

    return keystore


def load_keystore_file(
    path: str,
    store_type: str,
    store_password: str,
    key_password: str | None,
    path_var: str,
    type_var: str,
    password_var: str,
) -> Any:
    """A Keystore (pytbmq.tls.keystore) with errors that name the settings."""
    ks = _keystore_module()
    data = read_file(path, path_var, f"{store_type} keystore")
    try:
        return ks.load_keystore(data, store_type, store_password, key_password)
    except ks.KeystoreError as exc:
        text = str(exc)
        if "password" in text:
            raise TlsConfigError(f"{password_var}: {text} ({path})") from None
        if "declared" in text:
            raise TlsConfigError(f"{type_var}={store_type}: {text} ({path})") from None
        raise TlsConfigError(f"{path_var}: {text} ({path})") from None


def _server_from_pem(
    cfg: TlsListenerConfig,
) -> tuple[tuple[x509.Certificate, ...], PrivateKeyTypes, list[x509.Certificate], str]:
    cert_var, key_var, pw_var = cfg.var("PEM_CERT"), cfg.var("PEM_KEY"), cfg.var("PEM_KEY_PASSWORD")
    data = read_file(cfg.pem_cert, cert_var, "server certificate (PEM)")
    certs = load_pem_certificates(data, cert_var, cfg.pem_cert)
    if not certs:
        raise TlsConfigError(f"{cert_var}: {cfg.pem_cert} holds no PEM certificate")
    key_blocks = [block for label, block in pem_blocks(data) if label in _KEY_LABELS]
    if key_blocks:
        key = load_pem_private_key(key_blocks[0], cfg.pem_key_password, pw_var, cfg.pem_cert)
        where = f"key in {cfg.pem_cert}"
    else:
        if not Path(cfg.pem_key).exists():
            raise TlsConfigError(
                f"{key_var}: file not found: {cfg.pem_key} (and {cert_var} {cfg.pem_cert} "
                "holds no private key)"
            )
        key_data = read_file(cfg.pem_key, key_var, "server private key (PEM)")
        blocks = [block for label, block in pem_blocks(key_data) if label in _KEY_LABELS]
        if not blocks:
            raise TlsConfigError(f"{key_var}: {cfg.pem_key} holds no PEM private key")
        key = load_pem_private_key(blocks[0], cfg.pem_key_password, pw_var, cfg.pem_key)
        where = f"key in {cfg.pem_key}"
    chain = order_chain(certs, key, cert_var, key_var, where)
    return chain, key, certs, cfg.pem_cert


def _server_from_keystore(
    cfg: TlsListenerConfig,
) -> tuple[tuple[x509.Certificate, ...], PrivateKeyTypes, list[x509.Certificate], str]:
    ks = _keystore_module()
    store = load_keystore_file(
        cfg.key_store,
        cfg.key_store_type,
        cfg.key_store_password,
        cfg.key_password or None,
        cfg.var("KEY_STORE"),
        cfg.var("KEY_STORE_TYPE"),
        cfg.var("KEY_STORE_PASSWORD"),
    )
    try:
        entry = ks.select_key(store, cfg.key_alias or None)
    except ks.KeystoreError as exc:
        var = cfg.var("KEY_ALIAS") if cfg.key_alias else cfg.var("KEY_PASSWORD")
        if cfg.key_alias and "password" in str(exc):
            var = cfg.var("KEY_PASSWORD")
        raise TlsConfigError(f"{var}: {exc} ({cfg.key_store})") from None
    chain = tuple(entry.chain)
    if not chain:
        raise TlsConfigError(f"{cfg.var('KEY_STORE')}: the key entry has no certificate")
    if not public_key_matches(chain[0], entry.private_key):
        raise TlsConfigError(
            f"{cfg.var('KEY_STORE')}: the key of entry {entry.alias!r} does not match "
            "its certificate"
        )
    trust = list(ks.all_certificates(store))
    return chain, entry.private_key, trust, f"{cfg.key_store} (alias {entry.alias})"


def _truststore(cfg: TlsListenerConfig) -> list[x509.Certificate]:
    var = cfg.var("TRUSTSTORE")
    if cfg.truststore_type == "PEM":
        data = read_file(cfg.truststore, var, "truststore (PEM bundle)")
        certs = load_pem_certificates(data, var, cfg.truststore)
        if not certs:
            raise TlsConfigError(f"{var}: {cfg.truststore} holds no PEM certificate")
        return certs
    store = load_keystore_file(
        cfg.truststore,
        cfg.truststore_type,
        cfg.truststore_password,
        None,
        var,
        cfg.var("TRUSTSTORE_TYPE"),
        cfg.var("TRUSTSTORE_PASSWORD"),
    )
    certs = list(_keystore_module().all_certificates(store))
    if not certs:
        raise TlsConfigError(f"{var}: {cfg.truststore} holds no certificate")
    return certs


def _crls(cfg: TlsListenerConfig) -> list[x509.CertificateRevocationList]:
    var = cfg.var("CRL")
    data = read_file(cfg.crl, var, "certificate revocation list (PEM)")
    crls: list[x509.CertificateRevocationList] = []
    for label, block in pem_blocks(data):
        if label == b"X509 CRL":
            try:
                crls.append(x509.load_pem_x509_crl(block))
            except ValueError as exc:
                raise TlsConfigError(f"{var}: a CRL in {cfg.crl} is damaged: {exc}") from None
    if not crls:
        raise TlsConfigError(f"{var}: {cfg.crl} holds no PEM CRL (-----BEGIN X509 CRL-----)")
    return crls


def _check_crl_issuers(
    crls: list[x509.CertificateRevocationList],
    trust: list[x509.Certificate],
    var: str,
    path: str,
    warnings: list[str],
) -> None:
    """A CRL from a trusted CA must verify; one from another CA (an intermediate the
    clients send) can only be checked during handshakes, so it gets a warning."""
    for crl in crls:
        issuer = crl.issuer.rfc4514_string()
        issuers = [c for c in trust if c.subject == crl.issuer]
        if not issuers:
            warnings.append(
                f"{var}: the CRL issued by {issuer} in {path} is not from a trust anchor; it "
                "applies only if clients send that CA in their chain"
            )
        elif not any(_crl_signed_by(crl, c.public_key()) for c in issuers):
            raise TlsConfigError(
                f"{var}: the signature of the CRL issued by {issuer} in {path} does not verify"
            )


def _crl_signed_by(crl: x509.CertificateRevocationList, key: object) -> bool:
    try:
        return crl.is_signature_valid(key)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def load_material(
    cfg: TlsListenerConfig,
    now: datetime.datetime | None = None,
    warn: Callable[[str], None] | None = None,
) -> ServerMaterial:
    """Load and check everything; raise TlsConfigError naming the setting at fault."""
    now = now or datetime.datetime.now(datetime.UTC)
    warnings: list[str] = []
    if cfg.uses_keystore():
        if cfg.credentials_type != "KEYSTORE":
            warnings.append(
                f"{cfg.var('PEM_CERT')}={cfg.pem_cert} does not exist but "
                f"{cfg.var('KEY_STORE')}={cfg.key_store} does: falling back to the keystore, "
                f"as TBMQ does (set {cfg.var('CREDENTIALS_TYPE')}=KEYSTORE to silence this)"
            )
        chain, key, file_certs, source = _server_from_keystore(cfg)
        cert_var, cert_path = cfg.var("KEY_STORE"), cfg.key_store
    else:
        chain, key, file_certs, source = _server_from_pem(cfg)
        cert_var, cert_path = cfg.var("PEM_CERT"), cfg.pem_cert
    warning = check_validity(chain[0], cert_var, cert_path, now)
    if warning:
        warnings.append(warning)
    trust = _truststore(cfg) if cfg.truststore else file_certs
    crls = _crls(cfg) if cfg.crl else []
    if crls:
        _check_crl_issuers(crls, trust, cfg.var("CRL"), cfg.crl, warnings)
    for text in warnings:
        (warn or log.warning)(text)
    return ServerMaterial(
        tuple(chain), key, tuple(_unique(trust)), tuple(crls), source, tuple(warnings)
    )


def _unique(certs: list[x509.Certificate]) -> list[x509.Certificate]:
    seen: set[bytes] = set()
    out: list[x509.Certificate] = []
    for cert in certs:
        fp = cert.fingerprint(_SHA256)
        if fp not in seen:
            seen.add(fp)
            out.append(cert)
    return out
