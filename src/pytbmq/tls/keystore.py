"""Java keystores (JKS and PKCS12) read and written without a JDK.

This module owns the two keystore file formats TBMQ users bring through
``LISTENER_SSL_KEY_STORE`` / ``LISTENER_SSL_KEY_STORE_TYPE`` / ``LISTENER_SSL_KEY_ALIAS`` /
``LISTENER_SSL_KEY_PASSWORD`` and through truststores: format detection, the JKS format
(Sun "KeyProtector" key encryption and the "Mighty Aphrodite" integrity hash), the PKCS#12
format (MAC, PBES2 and PKCS#12 PBE decryption, Java's "trusted certificate" bag attribute),
the choice of the server key by alias, the set of certificates TBMQ trusts from a store, and
writing both formats for ``pytbmq keystore create/import-cert/list``. It knows nothing about
settings or files: every function takes and returns ``bytes``; callers (the TLS credential
loader in ``pytbmq.tls`` and the CLI) read the files and prefix error messages with the name
of the setting concerned. It does no other I/O and is synchronous.

Choices:

* JKS aliases are compared case-insensitively (Java lower-cases them); ``dump_jks`` writes
  them lower-cased, as keytool does.
* PKCS#12 files are walked here (not through ``cryptography.pkcs12.load_pkcs12``) because
  that function keeps only one private key and drops Java's trusted-certificate attribute.
  Files using algorithms the walker does not implement (RC2 from ``openssl -legacy``,
  PBMAC1, BER indefinite lengths) fall back to ``load_pkcs12``, which yields one key.
* A PKCS#12 key entry's chain is its certificate plus the issuer path found among the
  other certificates of the file; ``trusted`` holds the certificates carrying Java's
  trusted attribute (keytool ``-importcert``) plus every certificate that is neither in a
  key's chain nor so marked (``openssl -certfile`` extras), as TBMQ trusts them anyway.
* PKCS#12 keys are tried with the key password, then with the store password (keytool and
  openssl always encrypt them with the store password; TBMQ's default key password differs
  from its default store password).
* "The first key" is the first in file order (Java enumerates a JKS in hash-table order).
* The chain of a key entry that does not open is not kept, so ``all_certificates`` (TBMQ's
  trust set) leaves it out, whereas Java can read it without the key password.
* A declared type that does not match the file is an error, although Java 9+ (with
  ``keystore.type.compat``) quietly reads a PKCS12 file declared JKS and vice versa.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import pkcs12

from pytbmq.errors import PytbmqError

__all__ = [
    "KeyEntry",
    "Keystore",
    "KeystoreError",
    "add_trusted_certificate",
    "all_certificates",
    "detect_type",
    "dump_jks",
    "dump_pkcs12",
    "load_keystore",
    "select_key",
]


class KeystoreError(PytbmqError, ValueError):
    """A keystore cannot be used; the message says what is wrong in words."""


@dataclass(frozen=True)
class KeyEntry:
    """A private key entry: the key and its certificate chain, leaf first."""

    alias: str
    private_key: PrivateKeyTypes
    chain: tuple[x509.Certificate, ...]


@dataclass(frozen=True)
class Keystore:
    """The usable content of a keystore.

    ``keys`` holds the key entries that opened with the key password, in file order;
    ``locked_aliases`` the key entries that did not; ``trusted`` the certificate entries.
    """

    kind: str
    keys: tuple[KeyEntry, ...]
    locked_aliases: tuple[str, ...]
    trusted: tuple[tuple[str, x509.Certificate], ...]


_JKS_MAGIC = 0xFEEDFEED
_JCEKS_MAGIC = 0xCECECECE
_JKS_WHITENER = b"Mighty Aphrodite"
# OID 1.2.840.113549.1.7.x (tag, length 9, first 8 body bytes); x = 1 data, 2 signedData
_PKCS7_OID_PREFIX = b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07"
_JCEKS_MESSAGE = (
    "JCEKS keystores are not supported; convert with: keytool -importkeystore "
    "-srckeystore FILE -srcstoretype JCEKS -destkeystore FILE.p12 -deststoretype PKCS12"
)
# The highest PBE/MAC iteration count Java accepts (PKCS12KeyStore.MAX_ITERATION_COUNT).
_MAX_ITERATIONS = 5_000_000
_WRITE_ITERATIONS = 10_000


# --------------------------------------------------------------------------- public API


def detect_type(data: bytes) -> str | None:
    """Return "JKS", "JCEKS" or "PKCS12" from the first bytes of ``data``, else None.

    PKCS12 is recognised by the PFX header: SEQUENCE { INTEGER 3, SEQUENCE { OID pkcs7-* } }
    (the declared lengths are not checked, so a truncated file is still recognised and its
    loading reports the damage).
    """
    if len(data) >= 4:
        magic = struct.unpack(">I", data[:4])[0]
        if magic == _JKS_MAGIC:
            return "JKS"
        if magic == _JCEKS_MAGIC:
            return "JCEKS"
    if len(data) < 2 or data[0] != 0x30:
        return None
    first = data[1]
    if first == 0x80:
        pos = 2  # BER indefinite length
    elif first < 0x80:
        pos = 2
    elif 0x81 <= first <= 0x84:
        pos = 2 + (first & 0x7F)
    else:
        return None
    # version INTEGER 3, then the authSafe ContentInfo: SEQUENCE { OID pkcs7-data/signedData
    if data[pos : pos + 3] != b"\x02\x01\x03":
        return None
    pos += 3
    if pos + 1 >= len(data) or data[pos] != 0x30:
        return None
    first = data[pos + 1]
    pos += 2 if first <= 0x80 else 2 + (first & 0x7F)
    if data[pos : pos + 10] == _PKCS7_OID_PREFIX and data[pos + 10 : pos + 11] in (
        b"\x01",
        b"\x02",
    ):
        return "PKCS12"
    return None


def load_keystore(
    data: bytes, store_type: str, store_password: str, key_password: str | None
) -> Keystore:
    """Parse a JKS or PKCS12 keystore.

    The store password is checked first (integrity hash / MAC). Each key entry is then
    decrypted with ``key_password``; None or "" means the store password (as keytool does
    when -keypass is omitted). Entries that do not open go to ``locked_aliases``.
    """
    declared = store_type.strip().upper()
    if declared == "JCEKS":
        raise KeystoreError(_JCEKS_MESSAGE)
    if declared not in ("JKS", "PKCS12"):
        raise KeystoreError(f'unsupported keystore type "{store_type}" (expected JKS or PKCS12)')
    actual = detect_type(data)
    if actual == "JCEKS":
        raise KeystoreError(_JCEKS_MESSAGE)
    if actual is None:
        if not data:
            raise KeystoreError("not a JKS or PKCS12 keystore (the file is empty)")
        if data.lstrip()[:11] == b"-----BEGIN ":
            raise KeystoreError("not a JKS or PKCS12 keystore (the file is PEM text)")
        raise KeystoreError("not a JKS or PKCS12 keystore")
    if actual != declared:
        raise KeystoreError(f"declared {declared} but the file is {actual}")
    if declared == "JKS":
        return _load_jks(data, store_password, key_password or store_password)
    return _load_pkcs12(data, store_password, key_password)


def select_key(store: Keystore, alias: str | None) -> KeyEntry:
    """Return the key entry named ``alias`` (case-insensitive), or the first one if empty."""
    if not alias:
        if store.keys:
            return store.keys[0]
        if store.locked_aliases:
            raise KeystoreError(
                "no private key entry opens with the key password "
                f"(locked: {', '.join(store.locked_aliases)})"
            )
        raise KeystoreError("the keystore holds no private key")
    wanted = alias.lower()
    for entry in store.keys:
        if entry.alias.lower() == wanted:
            return entry
    if any(name.lower() == wanted for name in store.locked_aliases):
        raise KeystoreError(f'wrong key password for alias "{alias}"')
    if any(name.lower() == wanted for name, _ in store.trusted):
        raise KeystoreError(f'alias "{alias}" is a trusted certificate, not a private key')
    names = [e.alias for e in store.keys] + list(store.locked_aliases)
    names += [name for name, _ in store.trusted if name]
    if not names:
        raise KeystoreError(f'alias "{alias}" not found (the keystore is empty)')
    raise KeystoreError(f'alias "{alias}" not found (aliases: {", ".join(names)})')


def all_certificates(store: Keystore) -> list[x509.Certificate]:
    """Every certificate of every unlocked key chain, then every trusted one, de-duplicated."""
    seen: set[bytes] = set()
    out: list[x509.Certificate] = []
    certs = [c for e in store.keys for c in e.chain] + [c for _, c in store.trusted]
    for cert in certs:
        der = cert.public_bytes(serialization.Encoding.DER)
        if der not in seen:
            seen.add(der)
            out.append(cert)
    return out


def dump_jks(
    entries: Sequence[KeyEntry],
    trusted: Sequence[tuple[str, x509.Certificate]],
    store_password: str,
    key_password: str | None,
) -> bytes:
    """Write a JKS (version 2) keystore, key entries first; aliases are lower-cased.

    Keys are protected with ``key_password`` (None or "" = the store password).
    """
    key_pw = _utf16(key_password or store_password)
    stamp = int(time.time() * 1000)
    out = bytearray(struct.pack(">III", _JKS_MAGIC, 2, len(entries) + len(trusted)))
    seen: set[str] = set()

    def alias_bytes(alias: str) -> bytes:
        name = alias.lower()
        if not name:
            raise KeystoreError("a JKS alias must not be empty")
        if name in seen:
            raise KeystoreError(f'duplicate alias "{name}"')
        seen.add(name)
        encoded = _mutf8_encode(name)
        if len(encoded) > 0xFFFF:
            raise KeystoreError(f'alias "{name[:40]}..." is too long')
        return struct.pack(">H", len(encoded)) + encoded

    cert_type = struct.pack(">H", 5) + b"X.509"
    for entry in entries:
        if not entry.chain:
            raise KeystoreError(f'key entry "{entry.alias}" has no certificate')
        plain = entry.private_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        epki = _jks_protect(plain, key_pw)
        out += struct.pack(">I", 1) + alias_bytes(entry.alias) + struct.pack(">Q", stamp)
        out += struct.pack(">I", len(epki)) + epki + struct.pack(">I", len(entry.chain))
        for cert in entry.chain:
            der = cert.public_bytes(serialization.Encoding.DER)
            out += cert_type + struct.pack(">I", len(der)) + der
    for alias, cert in trusted:
        der = cert.public_bytes(serialization.Encoding.DER)
        out += struct.pack(">I", 2) + alias_bytes(alias) + struct.pack(">Q", stamp)
        out += cert_type + struct.pack(">I", len(der)) + der
    out += _jks_digest(_utf16(store_password), bytes(out))
    return bytes(out)


def dump_pkcs12(
    entry: KeyEntry | None,
    trusted: Sequence[tuple[str, x509.Certificate]],
    store_password: str,
) -> bytes:
    """Write a PKCS12 keystore the way Java 17 does, readable by keytool and openssl.

    Certificates are encrypted with PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC), the key is a
    shrouded key bag under the store password with the same scheme, the MAC is
    HMAC-SHA256. Trusted certificates carry a friendly name and Java's trusted attribute so
    that keytool lists them as trustedCertEntry (``cryptography``'s
    ``serialize_key_and_certificates`` omits that attribute, so keytool would not list them).
    """
    if not store_password:
        raise KeystoreError("a PKCS12 keystore needs a non-empty store password")
    return _p12_build([entry] if entry is not None else [], trusted, store_password)


# --------------------------------------------------------------------------- JKS


class _Truncated(Exception):
    pass


class _Reader:
    """Big-endian reader over the body of a JKS file (trailer excluded)."""

    def __init__(self, data: bytes, end: int) -> None:
        self.data = data
        self.pos = 0
        self.end = end

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise _Truncated
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u16(self) -> int:
        value: int = struct.unpack(">H", self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = struct.unpack(">I", self.take(4))[0]
        return value

    def utf(self) -> str:
        return _mutf8_decode(self.take(self.u16()))


class _RawJksEntry(NamedTuple):
    alias: str
    protected_key: bytes | None
    certs: list[bytes]


def _load_jks(data: bytes, store_password: str, key_password: str) -> Keystore:
    if len(data) < 12 + 20:
        raise KeystoreError("damaged JKS keystore (truncated)")
    reader = _Reader(data, len(data) - 20)
    entries: list[_RawJksEntry] = []
    try:
        _magic, version, count = struct.unpack(">III", reader.take(12))
        if version not in (1, 2):
            raise KeystoreError(f"unsupported JKS version {version}")

        def cert() -> bytes:
            if version == 2:
                kind = reader.utf()
                if kind != "X.509":
                    raise KeystoreError(f'unsupported certificate type "{kind}" in JKS keystore')
            return reader.take(reader.u32())

        for _ in range(count):
            tag = reader.u32()
            alias = reader.utf()
            reader.take(8)  # creation date, ms
            if tag == 1:
                protected = reader.take(reader.u32())
                certs = [cert() for _ in range(reader.u32())]
                entries.append(_RawJksEntry(alias, protected, certs))
            elif tag == 2:
                entries.append(_RawJksEntry(alias, None, [cert()]))
            else:
                raise KeystoreError(
                    f'damaged JKS keystore (unknown entry type {tag} for "{alias}")'
                )
    except (_Truncated, UnicodeDecodeError):
        raise KeystoreError("damaged JKS keystore (truncated or corrupt)") from None
    if reader.pos != reader.end:
        raise KeystoreError("damaged JKS keystore (unexpected data after the last entry)")
    expected = _jks_digest(_utf16(store_password), data[:-20])
    if not hmac.compare_digest(expected, data[-20:]):
        raise KeystoreError("wrong store password (integrity check failed)")

    keys: list[KeyEntry] = []
    locked: list[str] = []
    trusted: list[tuple[str, x509.Certificate]] = []
    key_pw = _utf16(key_password)
    for raw in entries:
        chain = tuple(_load_cert(der, raw.alias) for der in raw.certs)
        if raw.protected_key is None:
            trusted.append((raw.alias, chain[0]))
            continue
        plain = _jks_recover(raw.protected_key, key_pw, raw.alias)
        if plain is None:
            locked.append(raw.alias)
            continue
        try:
            key = serialization.load_der_private_key(plain, None)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise KeystoreError(f'alias "{raw.alias}": unreadable private key ({exc})') from None
        keys.append(KeyEntry(raw.alias, key, chain))
    return Keystore("JKS", tuple(keys), tuple(locked), tuple(trusted))


def _jks_digest(password: bytes, body: bytes) -> bytes:
    return hashlib.sha1(password + _JKS_WHITENER + body).digest()


def _keystream(password: bytes, salt: bytes, length: int) -> bytes:
    blocks: list[bytes] = []
    digest = salt
    for _ in range((length + 19) // 20):
        digest = hashlib.sha1(password + digest).digest()
        blocks.append(digest)
    return b"".join(blocks)[:length]


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


_KEY_PROTECTOR_OID = "1.3.6.1.4.1.42.2.17.1.1"


def _jks_recover(protected: bytes, password: bytes, alias: str) -> bytes | None:
    """Decrypt a Sun KeyProtector EncryptedPrivateKeyInfo; None if the password is wrong."""
    try:
        epki = _der_items(_der_one(protected, 0x30))
        alg = _der_items(_expect(epki[0], 0x30))
        oid = _oid_str(_expect(alg[0], 0x06))
        blob = _expect(epki[1], 0x04)
    except (_DerError, _Unsupported, IndexError):
        raise KeystoreError(f'alias "{alias}": damaged protected key') from None
    if oid != _KEY_PROTECTOR_OID:
        raise KeystoreError(f'alias "{alias}": unsupported key protection algorithm {oid}')
    if len(blob) < 40:
        raise KeystoreError(f'alias "{alias}": damaged protected key')
    salt, encrypted, check = blob[:20], blob[20:-20], blob[-20:]
    plain = _xor(encrypted, _keystream(password, salt, len(encrypted)))
    if not hmac.compare_digest(hashlib.sha1(password + plain).digest(), check):
        return None
    return plain


def _jks_protect(plain: bytes, password: bytes) -> bytes:
    salt = os.urandom(20)
    blob = salt + _xor(plain, _keystream(password, salt, len(plain)))
    blob += hashlib.sha1(password + plain).digest()
    alg = _seq(_oid(_KEY_PROTECTOR_OID), b"\x05\x00")
    return _seq(alg, _tlv(0x04, blob))


def _mutf8_decode(raw: bytes) -> str:
    """Decode Java's modified UTF-8 (DataInput.readUTF)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    units = bytearray()
    i = 0
    while i < len(raw):
        c = raw[i]
        if c < 0x80:
            unit, i = c, i + 1
        elif c & 0xE0 == 0xC0 and i + 1 < len(raw):
            unit, i = ((c & 0x1F) << 6) | (raw[i + 1] & 0x3F), i + 2
        elif c & 0xF0 == 0xE0 and i + 2 < len(raw):
            unit = ((c & 0x0F) << 12) | ((raw[i + 1] & 0x3F) << 6) | (raw[i + 2] & 0x3F)
            i += 3
        else:
            raise UnicodeDecodeError("modified-utf-8", raw, i, i + 1, "invalid byte")
        units += unit.to_bytes(2, "big")
    return units.decode("utf-16-be", "surrogatepass")


def _mutf8_encode(text: str) -> bytes:
    """Encode as Java's modified UTF-8 (DataOutput.writeUTF), without the length prefix."""
    units = text.encode("utf-16-be", "surrogatepass")
    out = bytearray()
    for i in range(0, len(units), 2):
        u = (units[i] << 8) | units[i + 1]
        if 0 < u < 0x80:
            out.append(u)
        elif u < 0x800:
            out += bytes((0xC0 | (u >> 6), 0x80 | (u & 0x3F)))
        else:
            out += bytes((0xE0 | (u >> 12), 0x80 | ((u >> 6) & 0x3F), 0x80 | (u & 0x3F)))
    return bytes(out)


def _utf16(password: str) -> bytes:
    return password.encode("utf-16-be", "surrogatepass")


def _load_cert(der: bytes, alias: str) -> x509.Certificate:
    try:
        cert = x509.load_der_x509_certificate(der)
        # fields are parsed lazily: parse now those this module and its callers rely on
        cert.subject, cert.issuer  # noqa: B018
    except (ValueError, TypeError, x509.InvalidVersion):
        where = f'alias "{alias}": ' if alias else ""
        raise KeystoreError(f"{where}invalid X.509 certificate") from None
    return cert


# --------------------------------------------------------------------------- PKCS12

_OID_DATA = "1.2.840.113549.1.7.1"
_OID_ENCRYPTED_DATA = "1.2.840.113549.1.7.6"
_OID_KEY_BAG = "1.2.840.113549.1.12.10.1.1"
_OID_SHROUDED_KEY_BAG = "1.2.840.113549.1.12.10.1.2"
_OID_CERT_BAG = "1.2.840.113549.1.12.10.1.3"
_OID_SAFE_CONTENTS_BAG = "1.2.840.113549.1.12.10.1.6"
_OID_X509_CERT = "1.2.840.113549.1.9.22.1"
_OID_FRIENDLY_NAME = "1.2.840.113549.1.9.20"
_OID_LOCAL_KEY_ID = "1.2.840.113549.1.9.21"
_OID_JAVA_TRUSTED = "2.16.840.1.113894.746875.1.1"
_OID_ANY_EKU = "2.5.29.37.0"
_OID_PBES2 = "1.2.840.113549.1.5.13"
_OID_PBKDF2 = "1.2.840.113549.1.5.12"
_OID_HMAC_SHA256 = "1.2.840.113549.2.9"
_OID_AES256_CBC = "2.16.840.1.101.3.4.1.42"
_OID_SHA256 = "2.16.840.1.101.3.4.2.1"
_OID_DES_EDE3_CBC = "1.2.840.113549.3.7"
_PRFS = {
    "1.2.840.113549.2.7": "sha1",
    "1.2.840.113549.2.8": "sha224",
    "1.2.840.113549.2.9": "sha256",
    "1.2.840.113549.2.10": "sha384",
    "1.2.840.113549.2.11": "sha512",
}
_AES_KEY_SIZES = {
    "2.16.840.1.101.3.4.1.2": 16,
    "2.16.840.1.101.3.4.1.22": 24,
    "2.16.840.1.101.3.4.1.42": 32,
}
_PKCS12_3DES = {"1.2.840.113549.1.12.1.3": 24, "1.2.840.113549.1.12.1.4": 16}
_DIGESTS = {
    "1.3.14.3.2.26": "sha1",
    "2.16.840.1.101.3.4.2.4": "sha224",
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
}


class _Unsupported(Exception):
    """The PKCS12 walker does not implement something; use cryptography's loader."""


class _Bag(NamedTuple):
    oid: str
    value: bytes  # full DER of the bag value
    friendly_name: str | None
    local_key_id: bytes | None
    java_trusted: bool


def _load_pkcs12(data: bytes, store_password: str, key_password: str | None) -> Keystore:
    try:
        return _walk_pkcs12(data, store_password, key_password)
    except _Unsupported:
        return _load_pkcs12_cryptography(data, store_password)
    except (_DerError, IndexError):
        raise KeystoreError("damaged PKCS12 keystore (truncated or corrupt)") from None


def _walk_pkcs12(data: bytes, store_password: str, key_password: str | None) -> Keystore:
    bags = _p12_bags(data, store_password)
    passwords = [key_password, store_password] if key_password else [store_password]
    certs: list[tuple[_Bag, x509.Certificate]] = []
    for bag in bags:
        if bag.oid == _OID_CERT_BAG:
            try:
                items = _der_items(_der_one(bag.value, 0x30))
                if _oid_str(_expect(items[0], 0x06)) != _OID_X509_CERT:
                    continue
                der = _expect(_der_items(_expect(items[1], 0xA0))[0], 0x04)
            except (_DerError, IndexError):
                raise KeystoreError("damaged PKCS12 keystore (certificate bag)") from None
            certs.append((bag, _load_cert(der, bag.friendly_name or "")))
    pool = [cert for _, cert in certs]

    counter = 0

    def unfriendly() -> str:
        nonlocal counter
        counter += 1
        return str(counter)

    keys: list[KeyEntry] = []
    locked: list[str] = []
    in_chains: set[bytes] = set()
    for bag in bags:
        if bag.oid not in (_OID_KEY_BAG, _OID_SHROUDED_KEY_BAG):
            continue
        leaf = next(
            (c for b, c in certs if bag.local_key_id and b.local_key_id == bag.local_key_id),
            None,
        )
        key = _p12_open_key(bag, passwords)
        if leaf is None and key is not None:
            spki = _key_spki(key)
            leaf = next((c for c in pool if _cert_spki(c) == spki), None)
        leaf_name = next((b.friendly_name for b, c in certs if c is leaf), None)
        alias = bag.friendly_name or leaf_name or unfriendly()
        chain = _issuer_path(leaf, pool) if leaf is not None else ()
        in_chains.update(c.public_bytes(serialization.Encoding.DER) for c in chain)
        if key is None:
            locked.append(alias)
        else:
            keys.append(KeyEntry(alias, key, chain))
    trusted: list[tuple[str, x509.Certificate]] = []
    for bag, cert in certs:
        if bag.java_trusted:
            trusted.append((bag.friendly_name or unfriendly(), cert))
        elif cert.public_bytes(serialization.Encoding.DER) not in in_chains:
            trusted.append((bag.friendly_name or "", cert))
    return Keystore("PKCS12", tuple(keys), tuple(locked), tuple(trusted))


def _p12_open_key(bag: _Bag, passwords: Sequence[str]) -> PrivateKeyTypes | None:
    if bag.oid == _OID_KEY_BAG:
        try:
            return serialization.load_der_private_key(bag.value, None)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise KeystoreError(f"unreadable private key in PKCS12 keystore ({exc})") from None
    for password in passwords:
        try:
            return serialization.load_der_private_key(bag.value, password.encode("utf-8"))
        except UnsupportedAlgorithm:
            raise _Unsupported from None
        except (ValueError, TypeError):
            continue
    return None


def _key_spki(key: PrivateKeyTypes) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _cert_spki(cert: x509.Certificate) -> bytes:
    try:
        return cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except (ValueError, UnsupportedAlgorithm):
        return b""


def _issuer_path(
    leaf: x509.Certificate, pool: Sequence[x509.Certificate]
) -> tuple[x509.Certificate, ...]:
    chain = [leaf]
    used = {leaf.public_bytes(serialization.Encoding.DER)}
    current = leaf
    while current.subject != current.issuer and len(chain) < 16:
        issuer = None
        for candidate in pool:
            der = candidate.public_bytes(serialization.Encoding.DER)
            if der in used or candidate.subject != current.issuer:
                continue
            try:
                current.verify_directly_issued_by(candidate)
            except (InvalidSignature, ValueError, TypeError):
                continue
            except UnsupportedAlgorithm:
                pass
            issuer = candidate
            used.add(der)
            break
        if issuer is None:
            break
        chain.append(issuer)
        current = issuer
    return tuple(chain)


def _load_pkcs12_cryptography(data: bytes, store_password: str) -> Keystore:
    """Fallback for algorithms the walker lacks; keeps a single key entry."""
    attempts: list[bytes | None] = [store_password.encode("utf-8")]
    if not store_password:
        attempts.append(None)
    loaded = None
    message = ""
    for password in attempts:
        try:
            loaded = pkcs12.load_pkcs12(data, password)
            break
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            message = str(exc)
    if loaded is None:
        if "password" in message.lower():
            raise KeystoreError("wrong store password or damaged PKCS12 file")
        raise KeystoreError(f"cannot read PKCS12 keystore ({message})")
    try:
        return _from_cryptography(loaded)
    except (ValueError, TypeError, x509.InvalidVersion):
        raise KeystoreError("damaged PKCS12 keystore (invalid certificate)") from None


def _from_cryptography(loaded: pkcs12.PKCS12KeyAndCertificates) -> Keystore:
    extras = list(loaded.additional_certs)
    pool = [c.certificate for c in extras]
    keys: tuple[KeyEntry, ...] = ()
    in_chain: set[bytes] = set()
    if loaded.key is not None:
        leaf_bag = loaded.cert
        if leaf_bag is None:
            spki = _key_spki(loaded.key)
            leaf_bag = next((c for c in extras if _cert_spki(c.certificate) == spki), None)
        name = leaf_bag.friendly_name if leaf_bag is not None else None
        alias = name.decode("utf-8", "replace") if name else "1"
        chain = _issuer_path(leaf_bag.certificate, pool) if leaf_bag is not None else ()
        in_chain = {c.public_bytes(serialization.Encoding.DER) for c in chain}
        keys = (KeyEntry(alias, loaded.key, chain),)
    trusted = tuple(
        ((c.friendly_name or b"").decode("utf-8", "replace"), c.certificate)
        for c in extras
        if c.certificate.public_bytes(serialization.Encoding.DER) not in in_chain
    )
    return Keystore("PKCS12", keys, (), trusted)


def _p12_bags(data: bytes, password: str) -> list[_Bag]:
    """Verify the MAC and return every safe bag of the file, decrypting EncryptedData."""
    pfx = _der_items(_der_one(data, 0x30))
    if _der_int(_expect(pfx[0], 0x02)) != 3:
        raise KeystoreError("unsupported PKCS12 version")
    auth_type, auth_content = _content_info(pfx[1])
    if auth_type != _OID_DATA:
        raise _Unsupported  # public-key integrity mode
    auth_safe = _octets(auth_content)
    if len(pfx) > 2:
        _p12_verify_mac(pfx[2], auth_safe, password)
    bags: list[_Bag] = []
    for info in _der_items(_der_one(auth_safe, 0x30)):
        kind, content = _content_info(info)
        if kind == _OID_DATA:
            _safe_contents(_octets(content), bags, 0)
        elif kind == _OID_ENCRYPTED_DATA:
            encrypted = _der_items(_expect(content, 0x30))
            eci = _der_items(_expect(encrypted[1], 0x30))
            if len(eci) < 3:
                continue
            if eci[2].tag == 0x80:
                ciphertext = eci[2].value
            elif eci[2].tag == 0xA0:
                ciphertext = b"".join(_expect(t, 0x04) for t in _der_items(eci[2].value))
            else:
                raise _DerError("encrypted content")
            try:
                plain = _pbe_decrypt(eci[1], ciphertext, password)
            except _BadPassword:
                raise KeystoreError(
                    "wrong store password (the certificates do not decrypt)"
                ) from None
            _safe_contents(plain, bags, 0)
        else:
            raise _Unsupported  # envelopedData
    return bags


def _content_info(tlv: _Tlv) -> tuple[str, _Tlv]:
    items = _der_items(_expect(tlv, 0x30))
    kind = _oid_str(_expect(items[0], 0x06))
    explicit = _der_items(_expect(items[1], 0xA0))
    return kind, explicit[0]


def _p12_verify_mac(mac_tlv: _Tlv, auth_safe: bytes, password: str) -> None:
    mac_data = _der_items(_expect(mac_tlv, 0x30))
    digest_info = _der_items(_expect(mac_data[0], 0x30))
    alg = _der_items(_expect(digest_info[0], 0x30))
    hash_name = _DIGESTS.get(_oid_str(_expect(alg[0], 0x06)))
    if hash_name is None:
        raise _Unsupported  # e.g. PBMAC1
    expected = _expect(digest_info[1], 0x04)
    salt = _expect(mac_data[1], 0x04)
    iterations = _der_int(_expect(mac_data[2], 0x02)) if len(mac_data) > 2 else 1
    _check_iterations(iterations)
    size = hashlib.new(hash_name).digest_size
    candidates = [_bmp(password)] + ([b""] if not password else [])
    for pw in candidates:
        key = _p12_kdf(hash_name, pw, salt, 3, iterations, size)
        if hmac.compare_digest(hmac.new(key, auth_safe, hash_name).digest(), expected):
            return
    raise KeystoreError("wrong store password (integrity check failed)")


def _safe_contents(data: bytes, bags: list[_Bag], depth: int) -> None:
    if depth > 4:
        raise _DerError("nesting")
    for bag_tlv in _der_items(_der_one(data, 0x30)):
        items = _der_items(_expect(bag_tlv, 0x30))
        oid = _oid_str(_expect(items[0], 0x06))
        value = _der_items(_expect(items[1], 0xA0))[0]
        if oid == _OID_SAFE_CONTENTS_BAG:
            _safe_contents(value.raw, bags, depth + 1)
            continue
        friendly: str | None = None
        local_id: bytes | None = None
        java_trusted = False
        if len(items) > 2:
            for attr_tlv in _der_items(_expect(items[2], 0x31)):
                attr = _der_items(_expect(attr_tlv, 0x30))
                attr_oid = _oid_str(_expect(attr[0], 0x06))
                values = _der_items(_expect(attr[1], 0x31))
                if attr_oid == _OID_FRIENDLY_NAME and values:
                    friendly = _expect(values[0], 0x1E).decode("utf-16-be", "replace")
                elif attr_oid == _OID_LOCAL_KEY_ID and values:
                    local_id = _expect(values[0], 0x04)
                elif attr_oid == _OID_JAVA_TRUSTED:
                    java_trusted = True
        bags.append(_Bag(oid, value.raw, friendly, local_id, java_trusted))


class _BadPassword(Exception):
    pass


def _pbe_decrypt(alg_tlv: _Tlv, ciphertext: bytes, password: str) -> bytes:
    alg = _der_items(_expect(alg_tlv, 0x30))
    oid = _oid_str(_expect(alg[0], 0x06))
    if oid == _OID_PBES2:
        params = _der_items(_expect(alg[1], 0x30))
        kdf = _der_items(_expect(params[0], 0x30))
        if _oid_str(_expect(kdf[0], 0x06)) != _OID_PBKDF2:
            raise _Unsupported
        kdf_params = _der_items(_expect(kdf[1], 0x30))
        salt = _expect(kdf_params[0], 0x04)
        iterations = _der_int(_expect(kdf_params[1], 0x02))
        prf = "sha1"
        for extra in kdf_params[2:]:
            if extra.tag == 0x30:
                prf_oid = _oid_str(_expect(_der_items(extra.value)[0], 0x06))
                if prf_oid not in _PRFS:
                    raise _Unsupported
                prf = _PRFS[prf_oid]
        scheme = _der_items(_expect(params[1], 0x30))
        enc_oid = _oid_str(_expect(scheme[0], 0x06))
        iv = _expect(scheme[1], 0x04)
        _check_iterations(iterations)
        if enc_oid in _AES_KEY_SIZES:
            key = hashlib.pbkdf2_hmac(
                prf, password.encode("utf-8"), salt, iterations, _AES_KEY_SIZES[enc_oid]
            )
            return _cbc_decrypt(algorithms.AES(key), iv, ciphertext)
        if enc_oid == _OID_DES_EDE3_CBC:
            key = hashlib.pbkdf2_hmac(prf, password.encode("utf-8"), salt, iterations, 24)
            return _cbc_decrypt(TripleDES(key), iv, ciphertext)
        raise _Unsupported
    if oid in _PKCS12_3DES:
        params = _der_items(_expect(alg[1], 0x30))
        salt = _expect(params[0], 0x04)
        iterations = _der_int(_expect(params[1], 0x02))
        _check_iterations(iterations)
        pw = _bmp(password)
        key = _p12_kdf("sha1", pw, salt, 1, iterations, _PKCS12_3DES[oid])
        iv = _p12_kdf("sha1", pw, salt, 2, iterations, 8)
        return _cbc_decrypt(TripleDES(key), iv, ciphertext)
    raise _Unsupported  # RC2, RC4, PBES1 with DES...


def _cbc_decrypt(algorithm: algorithms.AES | TripleDES, iv: bytes, ciphertext: bytes) -> bytes:
    block = algorithm.block_size // 8
    if not ciphertext or len(ciphertext) % block or len(iv) != block:
        raise _DerError("bad ciphertext length")
    decryptor = Cipher(algorithm, modes.CBC(iv)).decryptor()
    plain = decryptor.update(ciphertext) + decryptor.finalize()
    pad = plain[-1]
    if not 1 <= pad <= block or plain[-pad:] != bytes([pad]) * pad:
        raise _BadPassword
    return plain[:-pad]


def _check_iterations(iterations: int) -> None:
    if not 1 <= iterations <= _MAX_ITERATIONS:
        raise KeystoreError(f"PKCS12 iteration count {iterations} out of range")


def _bmp(password: str) -> bytes:
    """PKCS#12 password encoding: BMPString (UTF-16BE) with a two-byte NUL terminator."""
    return _utf16(password) + b"\x00\x00"


def _p12_kdf(
    hash_name: str, password: bytes, salt: bytes, purpose: int, rounds: int, n: int
) -> bytes:
    """RFC 7292 appendix B.2 key derivation (purpose 1 key, 2 IV, 3 MAC key)."""
    new: Callable[[bytes], hashlib._Hash] = getattr(hashlib, hash_name)
    u = new(b"").digest_size
    v = new(b"").block_size

    def stretch(x: bytes) -> bytes:
        if not x:
            return b""
        size = v * ((len(x) + v - 1) // v)
        return (x * (size // len(x) + 1))[:size]

    block_i = bytearray(stretch(salt) + stretch(password))
    diversifier = bytes([purpose]) * v
    out = bytearray()
    while True:
        a = new(diversifier + bytes(block_i)).digest()
        for _ in range(rounds - 1):
            a = new(a).digest()
        out += a
        if len(out) >= n:
            return bytes(out[:n])
        b = int.from_bytes((a * (v // u + 1))[:v], "big") + 1
        for j in range(0, len(block_i), v):
            value = (int.from_bytes(block_i[j : j + v], "big") + b) % (1 << (8 * v))
            block_i[j : j + v] = value.to_bytes(v, "big")


def _p12_build(
    entries: Sequence[KeyEntry],
    trusted: Sequence[tuple[str, x509.Certificate]],
    password: str,
    key_password: str | None = None,
) -> bytes:
    """Build a PKCS12 file; ``key_password`` (default: the store password) exists for tests
    and for stores like those the Java KeyStore API can write."""
    cert_bags: list[bytes] = []
    key_bags: list[bytes] = []
    seen: set[bytes] = set()
    for entry in entries:
        if not entry.chain:
            raise KeystoreError(f'key entry "{entry.alias}" has no certificate')
        leaf = entry.chain[0].public_bytes(serialization.Encoding.DER)
        attrs = [
            _attribute(_OID_FRIENDLY_NAME, _tlv(0x1E, _utf16(entry.alias))),
            _attribute(_OID_LOCAL_KEY_ID, _tlv(0x04, hashlib.sha1(leaf).digest())),
        ]
        plain = entry.private_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        alg, encrypted = _pbes2_encrypt(plain, key_password or password)
        key_bags.append(_safe_bag(_OID_SHROUDED_KEY_BAG, _seq(alg, _tlv(0x04, encrypted)), attrs))
        cert_bags.append(_cert_bag(leaf, attrs))
        seen.add(leaf)
        for cert in entry.chain[1:]:
            der = cert.public_bytes(serialization.Encoding.DER)
            if der not in seen:
                seen.add(der)
                cert_bags.append(_cert_bag(der, []))
    for alias, cert in trusted:
        attrs = [
            _attribute(_OID_FRIENDLY_NAME, _tlv(0x1E, _utf16(alias))),
            _attribute(_OID_JAVA_TRUSTED, _oid(_OID_ANY_EKU)),
        ]
        cert_bags.append(_cert_bag(cert.public_bytes(serialization.Encoding.DER), attrs))

    infos: list[bytes] = []
    if cert_bags:
        alg, encrypted = _pbes2_encrypt(_seq(*cert_bags), password)
        content = _seq(_tlv(0x02, b"\x00"), _seq(_oid(_OID_DATA), alg, _tlv(0x80, encrypted)))
        infos.append(_seq(_oid(_OID_ENCRYPTED_DATA), _tlv(0xA0, content)))
    if key_bags:
        infos.append(_seq(_oid(_OID_DATA), _tlv(0xA0, _tlv(0x04, _seq(*key_bags)))))
    auth_safe = _seq(*infos)
    salt = os.urandom(20)
    mac_key = _p12_kdf("sha256", _bmp(password), salt, 3, _WRITE_ITERATIONS, 32)
    mac = hmac.new(mac_key, auth_safe, "sha256").digest()
    mac_data = _seq(
        _seq(_seq(_oid(_OID_SHA256), b"\x05\x00"), _tlv(0x04, mac)),
        _tlv(0x04, salt),
        _der_int_encode(_WRITE_ITERATIONS),
    )
    auth = _seq(_oid(_OID_DATA), _tlv(0xA0, _tlv(0x04, auth_safe)))
    return _seq(_der_int_encode(3), auth, mac_data)


def _attribute(oid: str, value: bytes) -> bytes:
    return _seq(_oid(oid), _set(value))


def _safe_bag(oid: str, value: bytes, attributes: list[bytes]) -> bytes:
    attrs = _set(*attributes) if attributes else b""
    return _seq(_oid(oid), _tlv(0xA0, value), attrs)


def _cert_bag(der: bytes, attributes: list[bytes]) -> bytes:
    value = _seq(_oid(_OID_X509_CERT), _tlv(0xA0, _tlv(0x04, der)))
    return _safe_bag(_OID_CERT_BAG, value, attributes)


def _pbes2_encrypt(plain: bytes, password: str) -> tuple[bytes, bytes]:
    """PBES2 with PBKDF2-HMAC-SHA256 and AES-256-CBC; returns (AlgorithmIdentifier, data)."""
    salt = os.urandom(16)
    iv = os.urandom(16)
    key = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, _WRITE_ITERATIONS, 32)
    pad = 16 - len(plain) % 16
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    encrypted = encryptor.update(plain + bytes([pad]) * pad) + encryptor.finalize()
    kdf = _seq(
        _oid(_OID_PBKDF2),
        _seq(
            _tlv(0x04, salt),
            _der_int_encode(_WRITE_ITERATIONS),
            _seq(_oid(_OID_HMAC_SHA256), b"\x05\x00"),
        ),
    )
    scheme = _seq(_oid(_OID_AES256_CBC), _tlv(0x04, iv))
    return _seq(_oid(_OID_PBES2), _seq(kdf, scheme)), encrypted


# --------------------------------------------------------------------------- DER


class _DerError(Exception):
    pass


class _Tlv(NamedTuple):
    tag: int
    value: bytes
    raw: bytes


def _der_items(content: bytes) -> list[_Tlv]:
    """Split DER content into its elements."""
    items: list[_Tlv] = []
    pos = 0
    end = len(content)
    while pos < end:
        if pos + 2 > end:
            raise _DerError("truncated")
        tag = content[pos]
        if tag & 0x1F == 0x1F:
            raise _DerError("high tag number")
        first = content[pos + 1]
        start = pos + 2
        if first < 0x80:
            length = first
        elif first == 0x80:
            raise _Unsupported  # BER indefinite length
        else:
            n = first & 0x7F
            if n > 4 or start + n > end:
                raise _DerError("bad length")
            length = int.from_bytes(content[start : start + n], "big")
            start += n
        if start + length > end:
            raise _DerError("truncated")
        items.append(_Tlv(tag, content[start : start + length], content[pos : start + length]))
        pos = start + length
    return items


def _der_one(data: bytes, tag: int) -> bytes:
    """Content of the single element that makes up ``data``."""
    items = _der_items(data)
    if len(items) != 1:
        raise _DerError("trailing data")
    return _expect(items[0], tag)


def _expect(item: _Tlv, tag: int) -> bytes:
    if item.tag != tag:
        raise _DerError(f"expected tag {tag:#x}, got {item.tag:#x}")
    return item.value


def _octets(item: _Tlv) -> bytes:
    """An OCTET STRING; the BER constructed form (0x24) is left to cryptography's loader."""
    if item.tag == 0x24:
        raise _Unsupported
    return _expect(item, 0x04)


def _der_int(value: bytes) -> int:
    if not value:
        raise _DerError("empty integer")
    return int.from_bytes(value, "big", signed=True)


def _oid_str(value: bytes) -> str:
    arcs: list[int] = []
    n = 0
    for byte in value:
        n = (n << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(n)
            n = 0
    if not arcs or value[-1] & 0x80:
        raise _DerError("bad OID")
    first = arcs[0]
    head = [first // 40, first % 40] if first < 80 else [2, first - 80]
    return ".".join(str(a) for a in head + arcs[1:])


def _oid_body(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return bytes(out)


def _oid(dotted: str) -> bytes:
    return _tlv(0x06, _oid_body(dotted))


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    length = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + content


def _seq(*parts: bytes) -> bytes:
    return _tlv(0x30, b"".join(parts))


def _set(*parts: bytes) -> bytes:
    return _tlv(0x31, b"".join(sorted(parts)))


def _der_int_encode(value: int) -> bytes:
    return _tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))


# --------------------------------------------------------------------------- appending


def add_trusted_certificate(
    data: bytes, store_type: str, store_password: str, alias: str, cert: x509.Certificate
) -> bytes:
    """``data`` plus one trusted certificate entry (``keytool -importcert``).

    Every existing entry is kept byte for byte, so key entries whose key password differs
    from the store password survive without that password. The store password is checked
    first; an alias already in use (case-insensitive, as in Java) is refused. JKS aliases
    are lower-cased as keytool does. A PKCS12 file gets a new encrypted certificate bag
    and a new HMAC-SHA256 MAC; files the walker cannot parse (BER, PBMAC1) raise
    KeystoreError, as does an empty PKCS12 store password.
    """
    store = load_keystore(data, store_type, store_password, None)
    taken = [e.alias for e in store.keys] + list(store.locked_aliases)
    taken += [name for name, _ in store.trusted if name]
    if not alias:
        raise KeystoreError("the alias must not be empty")
    if any(name.lower() == alias.lower() for name in taken):
        raise KeystoreError(f'alias "{alias}" already exists in the keystore')
    der = cert.public_bytes(serialization.Encoding.DER)
    if store.kind == "JKS":
        _magic, version, count = struct.unpack(">III", data[:12])
        name = _mutf8_encode(alias.lower())
        if len(name) > 0xFFFF:
            raise KeystoreError(f'alias "{alias[:40]}..." is too long')
        entry = struct.pack(">I", 2) + struct.pack(">H", len(name)) + name
        entry += struct.pack(">Q", int(time.time() * 1000))
        if version == 2:
            entry += struct.pack(">H", 5) + b"X.509"
        entry += struct.pack(">I", len(der)) + der
        body = data[:8] + struct.pack(">I", count + 1) + data[12:-20] + entry
        return body + _jks_digest(_utf16(store_password), body)
    if not store_password:
        raise KeystoreError("a PKCS12 keystore needs a non-empty store password")
    try:
        pfx = _der_items(_der_one(data, 0x30))
        auth_type, auth_content = _content_info(pfx[1])
        if auth_type != _OID_DATA:
            raise _Unsupported
        infos = _der_one(_octets(auth_content), 0x30)
    except (_Unsupported, _DerError, IndexError):
        raise KeystoreError(
            "this PKCS12 file cannot be extended in place (BER encoding or unusual algorithms)"
        ) from None
    attrs = [
        _attribute(_OID_FRIENDLY_NAME, _tlv(0x1E, _utf16(alias))),
        _attribute(_OID_JAVA_TRUSTED, _oid(_OID_ANY_EKU)),
    ]
    alg, encrypted = _pbes2_encrypt(_seq(_cert_bag(der, attrs)), store_password)
    content = _seq(_tlv(0x02, b"\x00"), _seq(_oid(_OID_DATA), alg, _tlv(0x80, encrypted)))
    auth_safe = _seq(infos, _seq(_oid(_OID_ENCRYPTED_DATA), _tlv(0xA0, content)))
    salt = os.urandom(20)
    mac_key = _p12_kdf("sha256", _bmp(store_password), salt, 3, _WRITE_ITERATIONS, 32)
    mac_data = _seq(
        _seq(
            _seq(_oid(_OID_SHA256), b"\x05\x00"),
            _tlv(0x04, hmac.new(mac_key, auth_safe, "sha256").digest()),
        ),
        _tlv(0x04, salt),
        _der_int_encode(_WRITE_ITERATIONS),
    )
    auth = _seq(_oid(_OID_DATA), _tlv(0xA0, _tlv(0x04, auth_safe)))
    return _seq(_der_int_encode(3), auth, mac_data)
