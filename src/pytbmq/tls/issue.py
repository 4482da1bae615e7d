"""Keys and certificates for `pytbmq certs`: root and intermediate CAs, server and clients.

Makes what TBMQ's SSL guide makes with openssl (an EC P-256 CA, a server certificate
with SANs, client certificates), with the extensions OpenSSL, Java and browsers expect:
BasicConstraints, KeyUsage, ExtendedKeyUsage, SubjectKeyIdentifier and
AuthorityKeyIdentifier on every certificate. Pure functions over `cryptography` objects:
no files, no printing; pytbmq.tls.tooling reads and writes the files. Errors a user can
fix raise CertificateToolError with the option at fault in words.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pytbmq.errors import PytbmqError
from pytbmq.tls.material import public_key_matches

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

CURVES: dict[str, type[ec.EllipticCurve]] = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1}
_CURVE_ALIASES = {
    "P256": "P-256",
    "PRIME256V1": "P-256",
    "SECP256R1": "P-256",
    "P384": "P-384",
    "SECP384R1": "P-384",
}
RSA_SIZES = (2048, 3072, 4096)
CA_DAYS = 3650
LEAF_DAYS = 365
# Backdating absorbs small clock differences between the machine that issues and the
# machines that verify.
_BACKDATE = datetime.timedelta(minutes=5)


class CertificateToolError(PytbmqError):
    """A certificate or keystore command cannot do what was asked; the text says why."""


@dataclass(frozen=True)
class KeySpec:
    """The key to generate: ("ec", "P-256") or ("rsa", 2048)."""

    kind: str
    curve: str = "P-256"
    bits: int = 0

    def describe(self) -> str:
        return f"EC {self.curve}" if self.kind == "ec" else f"RSA {self.bits}"


def key_spec(ec_curve: str | None, rsa_bits: int | None) -> KeySpec:
    """The key asked for by --ec CURVE / --rsa BITS (EC P-256 when neither is given)."""
    if rsa_bits is not None:
        if rsa_bits not in RSA_SIZES:
            sizes = ", ".join(str(s) for s in RSA_SIZES)
            raise CertificateToolError(f"--rsa {rsa_bits}: use one of {sizes}")
        return KeySpec("rsa", bits=rsa_bits)
    if ec_curve is None:
        return KeySpec("ec")
    name = ec_curve.strip().upper()
    name = _CURVE_ALIASES.get(name, name)
    if name not in CURVES:
        raise CertificateToolError(f"--ec {ec_curve}: use P-256 or P-384")
    return KeySpec("ec", curve=name)


def generate_key(spec: KeySpec) -> PrivateKey:
    if spec.kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=spec.bits)
    return ec.generate_private_key(CURVES[spec.curve]())


def describe_key(key: object) -> str:
    """'EC P-256', 'RSA 2048', ... for a private or public key."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        names = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
        return f"EC {names.get(key.curve.name, key.curve.name)}"
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    return type(key).__name__.replace("PrivateKey", "").replace("PublicKey", "") or "unknown"


@dataclass(frozen=True)
class Authority:
    """A CA that signs: its certificate, its key, and its chain (itself first, up to the
    root), which is what goes after a leaf in serverChain.pem."""

    cert: x509.Certificate
    key: PrivateKey
    chain: tuple[x509.Certificate, ...]

    @property
    def path_length(self) -> int | None:
        """The CA's pathlen; None when unlimited."""
        return _basic_constraints(self.cert)[1]


def _basic_constraints(cert: x509.Certificate) -> tuple[bool, int | None]:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False, None
    return bc.ca, bc.path_length


def check_authority(authority: Authority, now: datetime.datetime, where: str) -> None:
    """Refuse a CA that cannot sign: not a CA, expired, or key of another certificate."""
    cert = authority.cert
    subject = cert.subject.rfc4514_string()
    is_ca, _ = _basic_constraints(cert)
    if not is_ca:
        raise CertificateToolError(
            f"{where}: {subject} is not a CA certificate (no BasicConstraints CA:TRUE)"
        )
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if not usage.key_cert_sign:
            raise CertificateToolError(
                f"{where}: the key usage of {subject} does not allow signing certificates"
            )
    except x509.ExtensionNotFound:
        pass
    if now > cert.not_valid_after_utc:
        raise CertificateToolError(
            f"{where}: the CA certificate {subject} expired on "
            f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
    if not public_key_matches(cert, authority.key):
        raise CertificateToolError(f"{where}: the CA key does not match the CA certificate")


def _name(cn: str, what: str) -> x509.Name:
    if not cn.strip():
        raise CertificateToolError(f"the {what} common name (--cn) must not be empty")
    try:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    except ValueError as exc:
        raise CertificateToolError(f"--cn {cn!r}: {exc}") from None


def _hash_for(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def _validity(
    days: int, now: datetime.datetime, issuer: x509.Certificate | None
) -> tuple[datetime.datetime, datetime.datetime]:
    if days < 1:
        raise CertificateToolError(f"--days {days}: must be at least 1")
    not_after = now + datetime.timedelta(days=days)
    if issuer is not None:
        # A certificate cannot usefully outlive the CA that signed it.
        not_after = min(not_after, issuer.not_valid_after_utc)
    return now - _BACKDATE, not_after


def _builder(
    subject: x509.Name,
    key: PrivateKey,
    issuer: Authority | None,
    days: int,
    now: datetime.datetime,
) -> x509.CertificateBuilder:
    not_before, not_after = _validity(days, now, issuer.cert if issuer else None)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    if issuer is None:
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    else:
        try:
            issuer_ski = issuer.cert.extensions.get_extension_for_class(
                x509.SubjectKeyIdentifier
            ).value
            aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski)
        except x509.ExtensionNotFound:
            aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(ski, critical=False)
        .add_extension(aki, critical=False)
    )


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf_usage(key: PrivateKey, server: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        # TLS 1.2 RSA key exchange encrypts the premaster secret to a server's RSA key.
        key_encipherment=server and isinstance(key, rsa.RSAPrivateKey),
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def root_ca(
    key: PrivateKey, cn: str, days: int, pathlen: int | None, now: datetime.datetime
) -> Authority:
    """A self-signed root CA; ``pathlen`` CAs may sit below it (None: unlimited)."""
    if pathlen is not None and pathlen < 0:
        raise CertificateToolError(f"--pathlen {pathlen}: must be 0 or more")
    cert = (
        _builder(_name(cn, "CA"), key, None, days, now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=pathlen), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .sign(key, _hash_for(key))
    )
    return Authority(cert, key, (cert,))


def intermediate_ca(
    issuer: Authority, key: PrivateKey, cn: str, days: int, now: datetime.datetime
) -> Authority:
    """An intermediate CA with pathlen 0 (it signs servers and clients, not other CAs)."""
    if issuer.path_length == 0:
        raise CertificateToolError(
            f"--ca: {issuer.cert.subject.rfc4514_string()} has pathlen 0, so it cannot sign "
            "another CA; sign the intermediate with the root CA"
        )
    cert = (
        _builder(_name(cn, "CA"), key, issuer, days, now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .sign(issuer.key, _hash_for(issuer.key))
    )
    return Authority(cert, key, (cert, *issuer.chain))


def split_hosts(
    hosts: Sequence[str], ips: Sequence[str]
) -> tuple[list[str], list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    """DNS names and IP addresses for the SAN; an address given as --host counts as --ip."""
    names: list[str] = []
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for host in hosts:
        text = host.strip()
        try:
            addresses.append(ipaddress.ip_address(text.strip("[]")))
            continue
        except ValueError:
            pass
        if not text or any(c in text for c in " /:@") or text.startswith(".") or ".." in text:
            raise CertificateToolError(f"--host {host!r} is not a host name")
        try:
            labels = [
                label if label == "*" else label.encode("idna").decode("ascii")
                for label in text.rstrip(".").split(".")
            ]
        except UnicodeError:
            raise CertificateToolError(f"--host {host!r} is not a valid host name") from None
        names.append(".".join(labels).lower())
    for ip in ips:
        try:
            addresses.append(ipaddress.ip_address(ip.strip().strip("[]")))
        except ValueError:
            raise CertificateToolError(f"--ip {ip!r} is not an IP address") from None
    return list(dict.fromkeys(names)), list(dict.fromkeys(addresses))


def server_certificate(
    issuer: Authority,
    key: PrivateKey,
    cn: str,
    dns_names: Sequence[str],
    ip_addresses: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address],
    days: int,
    now: datetime.datetime,
) -> x509.Certificate:
    """A TLS server certificate: SANs, digitalSignature (+keyEncipherment for RSA), serverAuth."""
    if not dns_names and not ip_addresses:
        raise CertificateToolError("give the server's names with --host NAME and/or --ip ADDRESS")
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(a) for a in ip_addresses]
    return (
        _builder(_name(cn, "server"), key, issuer, days, now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_usage(key, server=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(issuer.key, _hash_for(issuer.key))
    )


def client_certificate(
    issuer: Authority, key: PrivateKey, cn: str, days: int, now: datetime.datetime
) -> x509.Certificate:
    """A TLS client certificate: digitalSignature, clientAuth; the CN identifies the client."""
    return (
        _builder(_name(cn, "client"), key, issuer, days, now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_usage(key, server=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(issuer.key, _hash_for(issuer.key))
    )
