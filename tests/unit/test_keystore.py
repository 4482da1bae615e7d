"""pytbmq.tls.keystore: JKS and PKCS12 read/write, key selection, interop with keytool/openssl.

Keys and certificates are generated at test time. The interop tests skip cleanly when
keytool or openssl is missing; keytool is started at most six times for the whole module
(one fixture, two rounds of parallel JVMs).
"""

from __future__ import annotations

import contextlib
import datetime
import shutil
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
)
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytbmq.tls import keystore
from pytbmq.tls.keystore import (
    KeyEntry,
    Keystore,
    KeystoreError,
    all_certificates,
    detect_type,
    dump_jks,
    dump_pkcs12,
    load_keystore,
    select_key,
)

DER = serialization.Encoding.DER
PEM = serialization.Encoding.PEM


# --------------------------------------------------------------------------- fixtures


def make_cert(
    cn: str,
    key: CertificateIssuerPrivateKeyTypes,
    issuer: tuple[CertificateIssuerPrivateKeyTypes, x509.Certificate] | None = None,
    ca: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    signer, issuer_name = (issuer[0], issuer[1].subject) if issuer else (key, subject)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.sign(
        signer, None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    )


@dataclass(frozen=True)
class Pki:
    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    inter_key: ec.EllipticCurvePrivateKey
    inter: x509.Certificate
    rsa_key: rsa.RSAPrivateKey
    rsa_leaf: x509.Certificate
    ec_key: ec.EllipticCurvePrivateKey
    ec_leaf: x509.Certificate
    other_ca: x509.Certificate

    @property
    def server(self) -> KeyEntry:
        return KeyEntry("server", self.rsa_key, (self.rsa_leaf, self.inter, self.root))

    @property
    def second(self) -> KeyEntry:
        return KeyEntry("second", self.ec_key, (self.ec_leaf, self.inter, self.root))


@pytest.fixture(scope="module")
def pki() -> Pki:
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = make_cert("Test Root CA", root_key, ca=True)
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = make_cert("Test Intermediate CA", inter_key, (root_key, root), ca=True)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_leaf = make_cert("server.example", rsa_key, (inter_key, inter))
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_leaf = make_cert("second.example", ec_key, (inter_key, inter))
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_ca = make_cert("Client CA", other_key, ca=True)
    return Pki(root_key, root, inter_key, inter, rsa_key, rsa_leaf, ec_key, ec_leaf, other_ca)


def key_der(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def same_key(a: PrivateKeyTypes, b: PrivateKeyTypes) -> bool:
    return key_der(a) == key_der(b)


def subjects(certs: tuple[x509.Certificate, ...] | list[x509.Certificate]) -> list[str]:
    return [c.subject.rfc4514_string() for c in certs]


def aliases(store: Keystore) -> tuple[list[str], list[str], list[str]]:
    return (
        [e.alias for e in store.keys],
        list(store.locked_aliases),
        [a for a, _ in store.trusted],
    )


# --------------------------------------------------------------------------- detection


def test_detect_type(pki: Pki) -> None:
    assert detect_type(dump_jks([pki.server], [], "storepw", None)) == "JKS"
    assert detect_type(dump_pkcs12(pki.server, [], "storepw")) == "PKCS12"
    foreign = pkcs12.serialize_key_and_certificates(
        b"x", pki.ec_key, pki.ec_leaf, None, serialization.BestAvailableEncryption(b"pw")
    )
    assert detect_type(foreign) == "PKCS12"
    assert detect_type(struct.pack(">III", 0xCECECECE, 2, 0)) == "JCEKS"
    assert detect_type(b"") is None
    assert detect_type(b"\xfe\xed") is None
    assert detect_type(pki.root.public_bytes(PEM)) is None
    assert detect_type(pki.root.public_bytes(DER)) is None  # a SEQUENCE, not a PFX
    assert detect_type(b"\x30\x03\x02\x01\x03") is None


def test_detect_type_recognises_a_truncated_pkcs12(pki: Pki) -> None:
    data = dump_pkcs12(pki.server, [], "storepw")
    assert detect_type(data[:40]) == "PKCS12"
    with pytest.raises(KeystoreError, match="damaged PKCS12 keystore"):
        load_keystore(data[:40], "PKCS12", "storepw", None)


# --------------------------------------------------------------------------- JKS


def test_jks_round_trip_key_password_is_store_password(pki: Pki) -> None:
    data = dump_jks([pki.server], [], "storepw", None)
    for key_password in (None, "", "storepw"):
        store = load_keystore(data, "JKS", "storepw", key_password)
        assert store.kind == "JKS"
        assert store.locked_aliases == () and store.trusted == ()
        (entry,) = store.keys
        assert entry.alias == "server"
        assert same_key(entry.private_key, pki.rsa_key)
        assert entry.chain == pki.server.chain


def test_jks_round_trip_separate_key_password(pki: Pki) -> None:
    data = dump_jks([pki.server, pki.second], [], "storepw", "keypw")
    store = load_keystore(data, "jks", "storepw", "keypw")
    assert aliases(store) == (["server", "second"], [], [])
    assert same_key(store.keys[1].private_key, pki.ec_key)
    assert store.keys[1].chain == pki.second.chain
    # no key password: the store password is tried, as keytool does without -keypass
    locked = load_keystore(data, "JKS", "storepw", None)
    assert aliases(locked) == ([], ["server", "second"], [])
    assert aliases(load_keystore(data, "JKS", "storepw", "nope")) == ([], ["server", "second"], [])


def test_jks_wrong_store_password(pki: Pki) -> None:
    data = dump_jks([pki.server], [], "storepw", None)
    with pytest.raises(KeystoreError, match=r"^wrong store password \(integrity check failed\)$"):
        load_keystore(data, "JKS", "storepwX", None)
    tampered = bytearray(data)
    tampered[40] ^= 1
    with pytest.raises(KeystoreError, match="integrity check failed"):
        load_keystore(bytes(tampered), "JKS", "storepw", None)


def test_jks_trusted_entries_and_all_certificates(pki: Pki) -> None:
    data = dump_jks(
        [pki.server, pki.second], [("RootCA", pki.root), ("client-ca", pki.other_ca)], "pw", None
    )
    store = load_keystore(data, "JKS", "pw", None)
    assert aliases(store) == (["server", "second"], [], ["rootca", "client-ca"])
    assert store.trusted[1][1] == pki.other_ca
    certs = all_certificates(store)
    assert subjects(certs) == subjects(
        [pki.rsa_leaf, pki.inter, pki.root, pki.ec_leaf, pki.other_ca]
    )


def test_jks_other_key_types_and_single_cert_chain() -> None:
    ed_key = ed25519.Ed25519PrivateKey.generate()
    ed_cert = make_cert("ed", ed_key)
    p384 = ec.generate_private_key(ec.SECP384R1())
    p384_cert = make_cert("p384", p384)
    entries = [KeyEntry("ed", ed_key, (ed_cert,)), KeyEntry("p384", p384, (p384_cert,))]
    store = load_keystore(dump_jks(entries, [], "pw", None), "JKS", "pw", None)
    assert [
        same_key(a.private_key, b.private_key) for a, b in zip(store.keys, entries, strict=True)
    ] == [True, True]


def test_jks_unicode_aliases_use_modified_utf8(pki: Pki) -> None:
    alias = "Ключ-\U0001f511-\x00"
    data = dump_jks([KeyEntry(alias, pki.ec_key, (pki.ec_leaf,))], [], "pässwörd\U0001f511", None)
    # supplementary characters are two 3-byte surrogates, NUL is C0 80 (Java writeUTF)
    assert b"\xed\xa0\xbd\xed\xb4\x91" in data and b"\xc0\x80" in data
    store = load_keystore(data, "JKS", "pässwörd\U0001f511", None)
    assert store.keys[0].alias == "ключ-\U0001f511-\x00"
    assert select_key(store, "КЛЮЧ-\U0001f511-\x00").alias == store.keys[0].alias


def test_dump_jks_rejects_bad_entries(pki: Pki) -> None:
    with pytest.raises(KeystoreError, match='duplicate alias "server"'):
        dump_jks([pki.server], [("SERVER", pki.root)], "pw", None)
    with pytest.raises(KeystoreError, match="has no certificate"):
        dump_jks([KeyEntry("k", pki.ec_key, ())], [], "pw", None)
    with pytest.raises(KeystoreError, match="must not be empty"):
        dump_jks([], [("", pki.root)], "pw", None)


def test_jceks_is_refused_with_advice() -> None:
    data = struct.pack(">III", 0xCECECECE, 2, 0) + bytes(20)
    for declared in ("JKS", "PKCS12", "jceks"):
        with pytest.raises(KeystoreError, match="JCEKS keystores are not supported; convert"):
            load_keystore(data, declared, "pw", None)


def test_truncated_jks_is_reported_as_damaged(pki: Pki) -> None:
    data = dump_jks([pki.server], [("ca", pki.root)], "pw", None)
    for cut in [4, 12, 20, 31, 40, 100, len(data) // 2, len(data) - 21, len(data) - 1]:
        with pytest.raises(KeystoreError, match=r"damaged JKS|integrity check"):
            load_keystore(data[:cut], "JKS", "pw", None)
    with pytest.raises(KeystoreError, match="damaged JKS keystore"):
        load_keystore(data[:-20] + b"\0" + data[-20:], "JKS", "pw", None)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=300))
def test_garbage_only_raises_keystore_error(junk: bytes) -> None:
    for prefix, kind in [
        (b"", "JKS"),
        (b"\xfe\xed\xfe\xed\x00\x00\x00\x02", "JKS"),
        (b"\x30\x82\x01\x00\x02\x01\x03", "PKCS12"),
        (b"", "PKCS12"),
    ]:
        with contextlib.suppress(KeystoreError):
            load_keystore(prefix + junk, kind, "pw", None)


@pytest.fixture(scope="module")
def reference_jks(pki: Pki) -> bytes:
    return dump_jks([pki.second], [("rootca", pki.root)], "pw", "keypw")


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_corrupted_jks_with_valid_digest_only_raises_keystore_error(
    reference_jks: bytes, data: st.DataObject
) -> None:
    body = bytearray(reference_jks[:-20])
    for _ in range(data.draw(st.integers(1, 3))):
        body[data.draw(st.integers(12, len(body) - 1))] ^= data.draw(st.integers(1, 255))
    body = body[: data.draw(st.integers(12, len(body)))]
    blob = bytes(body) + keystore._jks_digest(keystore._utf16("pw"), bytes(body))
    with contextlib.suppress(KeystoreError):
        load_keystore(blob, "JKS", "pw", "keypw")


@pytest.fixture(scope="module")
def reference_p12(pki: Pki) -> bytes:
    return dump_pkcs12(pki.server, [("rootca", pki.root)], "storepw")


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_corrupted_pkcs12_only_raises_keystore_error(
    reference_p12: bytes, data: st.DataObject
) -> None:
    blob = bytearray(reference_p12)
    for _ in range(data.draw(st.integers(1, 3))):
        blob[data.draw(st.integers(0, len(blob) - 1))] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(blob)))
    with contextlib.suppress(KeystoreError):
        load_keystore(bytes(blob[:cut]), "PKCS12", "storepw", None)


def test_not_a_keystore() -> None:
    with pytest.raises(KeystoreError, match=r"not a JKS or PKCS12 keystore \(the file is empty\)"):
        load_keystore(b"", "JKS", "pw", None)
    with pytest.raises(KeystoreError, match=r"\(the file is PEM text\)"):
        load_keystore(b"-----BEGIN CERTIFICATE-----\n", "PKCS12", "pw", None)
    with pytest.raises(KeystoreError, match=r"^not a JKS or PKCS12 keystore$"):
        load_keystore(b"hello world", "PKCS12", "pw", None)
    with pytest.raises(KeystoreError, match='unsupported keystore type "PEM"'):
        load_keystore(b"hello world", "PEM", "pw", None)


def test_type_mismatch(pki: Pki) -> None:
    jks = dump_jks([pki.server], [], "pw", None)
    p12 = dump_pkcs12(pki.server, [], "pw")
    with pytest.raises(KeystoreError, match=r"^declared PKCS12 but the file is JKS$"):
        load_keystore(jks, "PKCS12", "pw", None)
    with pytest.raises(KeystoreError, match=r"^declared JKS but the file is PKCS12$"):
        load_keystore(p12, " jks ", "pw", None)


# --------------------------------------------------------------------------- select_key


def test_select_key(pki: Pki) -> None:
    data = dump_jks([pki.server, pki.second], [("rootca", pki.root)], "pw", None)
    store = load_keystore(data, "JKS", "pw", None)
    assert select_key(store, None).alias == "server"
    assert select_key(store, "").alias == "server"
    assert select_key(store, "second").alias == "second"
    assert select_key(store, "SeCoNd").alias == "second"
    with pytest.raises(
        KeystoreError, match=r'^alias "x" not found \(aliases: server, second, rootca\)$'
    ):
        select_key(store, "x")
    with pytest.raises(
        KeystoreError, match=r'^alias "RootCA" is a trusted certificate, not a private key$'
    ):
        select_key(store, "RootCA")


def test_select_key_locked_entries(pki: Pki) -> None:
    data = dump_jks([pki.server, pki.second], [], "pw", "keypw")
    store = load_keystore(data, "JKS", "pw", "wrong")
    with pytest.raises(KeystoreError, match=r'^wrong key password for alias "Server"$'):
        select_key(store, "Server")
    with pytest.raises(
        KeystoreError,
        match=r"^no private key entry opens with the key password \(locked: server, second\)$",
    ):
        select_key(store, None)


def test_select_key_without_keys(pki: Pki) -> None:
    store = load_keystore(dump_jks([], [("ca", pki.root)], "pw", None), "JKS", "pw", None)
    assert store.keys == () and aliases(store) == ([], [], ["ca"])
    with pytest.raises(KeystoreError, match=r"^the keystore holds no private key$"):
        select_key(store, "")
    empty = Keystore("JKS", (), (), ())
    with pytest.raises(KeystoreError, match=r"not found \(the keystore is empty\)"):
        select_key(empty, "a")


# --------------------------------------------------------------------------- PKCS12


def test_pkcs12_round_trip_with_trusted_certs(pki: Pki) -> None:
    data = dump_pkcs12(pki.server, [("rootca", pki.root), ("Client CA", pki.other_ca)], "storepw")
    store = load_keystore(data, "PKCS12", "storepw", "tbmq-default-key-password")
    assert store.kind == "PKCS12"
    assert aliases(store) == (["server"], [], ["rootca", "Client CA"])
    (entry,) = store.keys
    assert same_key(entry.private_key, pki.rsa_key)
    assert entry.chain == pki.server.chain
    with pytest.raises(KeystoreError, match="is a trusted certificate"):
        select_key(store, "client ca")
    assert subjects(all_certificates(store)) == subjects(
        [pki.rsa_leaf, pki.inter, pki.root, pki.other_ca]
    )


def test_pkcs12_truststore_and_wrong_password(pki: Pki) -> None:
    data = dump_pkcs12(None, [("a", pki.root), ("b", pki.other_ca)], "storepw")
    store = load_keystore(data, "PKCS12", "storepw", None)
    assert aliases(store) == ([], [], ["a", "b"])
    with pytest.raises(KeystoreError, match=r"^wrong store password \(integrity check failed\)$"):
        load_keystore(data, "PKCS12", "nope", None)
    with pytest.raises(KeystoreError, match="non-empty store password"):
        dump_pkcs12(None, [("a", pki.root)], "")


def test_pkcs12_several_keys_and_separate_key_password(pki: Pki) -> None:
    # What the Java KeyStore API can write (keytool cannot): key password != store password.
    data = keystore._p12_build([pki.server, pki.second], [("ca", pki.other_ca)], "storepw", "keypw")
    store = load_keystore(data, "PKCS12", "storepw", "keypw")
    assert aliases(store) == (["server", "second"], [], ["ca"])
    assert same_key(select_key(store, "SECOND").private_key, pki.ec_key)
    assert select_key(store, "second").chain == pki.second.chain
    locked = load_keystore(data, "PKCS12", "storepw", None)
    assert aliases(locked) == ([], ["server", "second"], ["ca"])
    with pytest.raises(KeystoreError, match='wrong key password for alias "server"'):
        select_key(locked, "server")


def test_pkcs12_written_by_cryptography(pki: Pki) -> None:
    cas = [
        pkcs12.PKCS12Certificate(pki.root, None),
        pkcs12.PKCS12Certificate(pki.inter, None),
        pkcs12.PKCS12Certificate(pki.other_ca, b"clients"),
    ]
    for encryption in (
        serialization.BestAvailableEncryption(b"storepw"),
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(2048)
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(hashes.SHA1())
        .build(b"storepw"),
    ):
        data = pkcs12.serialize_key_and_certificates(
            None, pki.rsa_key, pki.rsa_leaf, cas, encryption
        )
        store = load_keystore(data, "PKCS12", "storepw", None)
        # no friendly name: Java's "unfriendly" alias "1"
        assert aliases(store) == (["1"], [], ["clients"])
        assert store.keys[0].chain == pki.server.chain
        with pytest.raises(KeystoreError, match="wrong store password"):
            load_keystore(data, "PKCS12", "wrong", None)
    truststore = pkcs12.serialize_java_truststore(
        [pkcs12.PKCS12Certificate(pki.root, b"root")], serialization.BestAvailableEncryption(b"pw")
    )
    assert aliases(load_keystore(truststore, "PKCS12", "pw", None)) == ([], [], ["root"])


def test_cryptography_fallback_loader(pki: Pki) -> None:
    cas = [
        pkcs12.PKCS12Certificate(pki.inter, None),
        pkcs12.PKCS12Certificate(pki.root, b"r"),
        pkcs12.PKCS12Certificate(pki.other_ca, b"o"),
    ]
    data = pkcs12.serialize_key_and_certificates(
        b"srv", pki.rsa_key, pki.rsa_leaf, cas, serialization.BestAvailableEncryption(b"pw")
    )
    store = keystore._load_pkcs12_cryptography(data, "pw")
    assert aliases(store) == (["srv"], [], ["o"])
    assert store.keys[0].chain == pki.server.chain
    with pytest.raises(KeystoreError, match=r"^wrong store password or damaged PKCS12 file$"):
        keystore._load_pkcs12_cryptography(data, "nope")


@pytest.mark.parametrize(
    ("password", "salt", "purpose", "rounds", "expected"),
    [
        ("smeg", "0A58CF64530D823F", 1, 1, "8AAAE6297B6CB04642AB5B077851284EB7128F1A2A7FBCA3"),
        ("smeg", "0A58CF64530D823F", 2, 1, "79993DFE048D3B76"),
        ("smeg", "3D83C0E4546AC140", 3, 1, "8D967D88F6CAA9D714800AB3D48051D63F73A312"),
        ("queeg", "05DEC959ACFF72F7", 1, 1000, "ED2034E36328830FF09DF1E1A07DD357185DAC0D4F9EB3D4"),
        ("queeg", "263216FCC2FAB31C", 3, 1000, "5EC4C7A80DF652294C3925B6489A7AB857C83476"),
    ],
)
def test_pkcs12_kdf_vectors(
    password: str, salt: str, purpose: int, rounds: int, expected: str
) -> None:
    # SHA-1 vectors of the PKCS#12 KDF as used by the BouncyCastle and OpenSSL test suites
    derived = keystore._p12_kdf(
        "sha1", keystore._bmp(password), bytes.fromhex(salt), purpose, rounds, len(expected) // 2
    )
    assert derived.hex().upper() == expected


# --------------------------------------------------------------------------- interop

KEYTOOL = shutil.which("keytool")
OPENSSL = shutil.which("openssl")
needs_keytool = pytest.mark.skipif(KEYTOOL is None, reason="keytool not installed")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl not installed")


@dataclass
class KeytoolRun:
    dir: Path
    list_jks: subprocess.CompletedProcess[str]
    list_p12: subprocess.CompletedProcess[str]
    convert: subprocess.CompletedProcess[str]
    genkey_jks: subprocess.CompletedProcess[str]
    genkey_p12: subprocess.CompletedProcess[str]
    import_cert: subprocess.CompletedProcess[str]


def _run_parallel(
    commands: dict[str, tuple[list[str], str | None]],
) -> dict[str, subprocess.CompletedProcess[str]]:
    procs = {
        name: (
            subprocess.Popen(
                args,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
            stdin,
        )
        for name, (args, stdin) in commands.items()
    }
    done = {}
    for name, (proc, stdin) in procs.items():
        out, err = proc.communicate(stdin, timeout=120)
        done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return done


@pytest.fixture(scope="module")
def keytool_run(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeytoolRun]:
    """Six keytool invocations in two parallel rounds, shared by the keytool tests."""
    if KEYTOOL is None:
        pytest.skip("keytool not installed")
    d = tmp_path_factory.mktemp("keytool")
    (d / "ours.jks").write_bytes(
        dump_jks([pki.server, pki.second], [("rootca", pki.root)], "storepw", "keypw")
    )
    (d / "ours.p12").write_bytes(
        dump_pkcs12(pki.server, [("rootca", pki.root), ("clientca", pki.other_ca)], "storepw")
    )
    (d / "root.pem").write_bytes(pki.root.public_bytes(PEM))
    # a JVM per call: C1 only and the serial GC start faster on small machines
    kt = [KEYTOOL, "-J-XX:TieredStopAtLevel=1", "-J-XX:+UseSerialGC"]
    first = _run_parallel(
        {
            "list_jks": (
                [*kt, "-list", "-v", "-keystore", str(d / "ours.jks"), "-storepass", "storepw"],
                None,
            ),
            "list_p12": (
                [
                    *kt,
                    "-list",
                    "-keystore",
                    str(d / "ours.p12"),
                    "-storetype",
                    "PKCS12",
                    "-storepass",
                    "storepw",
                ],
                None,
            ),
            # keytool asks for each key password on stdin (-srckeypass needs -srcalias)
            "convert": (
                [
                    *kt,
                    "-importkeystore",
                    "-srckeystore",
                    str(d / "ours.jks"),
                    "-srcstoretype",
                    "JKS",
                    "-srcstorepass",
                    "storepw",
                    "-destkeystore",
                    str(d / "conv.p12"),
                    "-deststoretype",
                    "PKCS12",
                    "-deststorepass",
                    "convpw",
                    "-noprompt",
                ],
                "keypw\nkeypw\n",
            ),
            "genkey_jks": (
                [
                    *kt,
                    "-genkeypair",
                    "-alias",
                    "ECServer",
                    "-keyalg",
                    "EC",
                    "-groupname",
                    "secp256r1",
                    "-dname",
                    "CN=kt-ec",
                    "-validity",
                    "2",
                    "-storetype",
                    "JKS",
                    "-keystore",
                    str(d / "kt.jks"),
                    "-storepass",
                    "ktstorepw",
                    "-keypass",
                    "ktkeypw",
                ],
                None,
            ),
            "genkey_p12": (
                [
                    *kt,
                    "-genkeypair",
                    "-alias",
                    "p12server",
                    "-keyalg",
                    "EC",
                    "-groupname",
                    "secp384r1",
                    "-dname",
                    "CN=kt-p12",
                    "-validity",
                    "2",
                    "-storetype",
                    "PKCS12",
                    "-keystore",
                    str(d / "kt.p12"),
                    "-storepass",
                    "ktstorepw",
                ],
                None,
            ),
        }
    )
    second = _run_parallel(
        {
            "import_cert": (
                [
                    *kt,
                    "-importcert",
                    "-noprompt",
                    "-alias",
                    "extca",
                    "-file",
                    str(d / "root.pem"),
                    "-keystore",
                    str(d / "kt.jks"),
                    "-storepass",
                    "ktstorepw",
                ],
                None,
            ),
        }
    )
    yield KeytoolRun(d, **first, **second)


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@needs_keytool
def test_keytool_lists_our_jks(keytool_run: KeytoolRun) -> None:
    out = _ok(keytool_run.list_jks)
    assert "Your keystore contains 3 entries" in out
    for line in (
        "Alias name: server",
        "Alias name: second",
        "Alias name: rootca",
        "Entry type: trustedCertEntry",
        "Certificate chain length: 3",
    ):
        assert line in out
    assert out.count("Entry type: PrivateKeyEntry") == 2


@needs_keytool
def test_keytool_converts_our_jks_and_we_read_the_result(pki: Pki, keytool_run: KeytoolRun) -> None:
    _ok(keytool_run.convert)
    assert "3 entries successfully imported" in keytool_run.convert.stderr
    store = load_keystore((keytool_run.dir / "conv.p12").read_bytes(), "PKCS12", "convpw", None)
    keys, locked, trusted = aliases(store)
    assert sorted(keys) == ["second", "server"] and locked == [] and trusted == ["rootca"]
    assert same_key(select_key(store, "server").private_key, pki.rsa_key)
    assert select_key(store, "server").chain == pki.server.chain
    assert select_key(store, "second").chain == pki.second.chain


@needs_keytool
def test_keytool_lists_trusted_entries_of_our_pkcs12(keytool_run: KeytoolRun) -> None:
    out = _ok(keytool_run.list_p12)
    assert "Your keystore contains 3 entries" in out
    assert "server, " in out and "PrivateKeyEntry" in out
    assert out.count("trustedCertEntry") == 2 and "rootca, " in out and "clientca, " in out


@needs_keytool
def test_we_read_keytool_jks_with_separate_key_password(keytool_run: KeytoolRun, pki: Pki) -> None:
    _ok(keytool_run.genkey_jks)
    _ok(keytool_run.import_cert)
    data = (keytool_run.dir / "kt.jks").read_bytes()
    assert detect_type(data) == "JKS"
    store = load_keystore(data, "JKS", "ktstorepw", "ktkeypw")
    assert aliases(store) == (["ecserver"], [], ["extca"])  # keytool lower-cases aliases
    entry = select_key(store, "ECServer")
    assert isinstance(entry.private_key, ec.EllipticCurvePrivateKey)
    assert entry.private_key.curve.name == "secp256r1"
    assert subjects(entry.chain) == ["CN=kt-ec"]
    assert store.trusted[0][1] == pki.root
    assert aliases(load_keystore(data, "JKS", "ktstorepw", None)) == ([], ["ecserver"], ["extca"])
    with pytest.raises(KeystoreError, match="wrong store password"):
        load_keystore(data, "JKS", "ktkeypw", "ktkeypw")


@needs_keytool
def test_we_read_keytool_pkcs12(keytool_run: KeytoolRun) -> None:
    _ok(keytool_run.genkey_p12)
    data = (keytool_run.dir / "kt.p12").read_bytes()
    assert detect_type(data) == "PKCS12"
    # TBMQ's default key password differs from the store password: the store one still opens it
    store = load_keystore(data, "PKCS12", "ktstorepw", "server_key_password")
    assert aliases(store) == (["p12server"], [], [])
    key = store.keys[0].private_key
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    assert subjects(store.keys[0].chain) == ["CN=kt-p12"]
    with pytest.raises(KeystoreError, match="wrong store password"):
        load_keystore(data, "PKCS12", "nope", None)


@pytest.fixture(scope="module")
def pem_files(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("openssl")
    (d / "leaf.key").write_bytes(
        pki.rsa_key.private_bytes(
            PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (d / "leaf.pem").write_bytes(pki.rsa_leaf.public_bytes(PEM))
    (d / "extra.pem").write_bytes(
        pki.inter.public_bytes(PEM) + pki.root.public_bytes(PEM) + pki.other_ca.public_bytes(PEM)
    )
    return d


@needs_openssl
@pytest.mark.parametrize(
    "options",
    [[], ["-legacy"], ["-keypbe", "PBE-SHA1-3DES", "-certpbe", "PBE-SHA1-3DES", "-macalg", "sha1"]],
    ids=["default", "legacy", "3des"],
)
def test_we_read_openssl_pkcs12(pki: Pki, pem_files: Path, options: list[str]) -> None:
    out = pem_files / f"o{len(options)}.p12"
    assert OPENSSL is not None
    proc = subprocess.run(
        [
            OPENSSL,
            "pkcs12",
            "-export",
            *options,
            "-inkey",
            str(pem_files / "leaf.key"),
            "-in",
            str(pem_files / "leaf.pem"),
            "-certfile",
            str(pem_files / "extra.pem"),
            "-name",
            "server",
            "-passout",
            "pass:p12pass",
            "-out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0 and options == ["-legacy"]:
        pytest.skip(f"this openssl cannot write -legacy: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr
    data = out.read_bytes()
    store = load_keystore(data, "PKCS12", "p12pass", None)
    assert aliases(store) == (["server"], [], [""])  # -certfile extras carry no name
    assert same_key(store.keys[0].private_key, pki.rsa_key)
    assert store.keys[0].chain == pki.server.chain
    assert store.trusted[0][1] == pki.other_ca
    with pytest.raises(KeystoreError, match="wrong store password"):
        load_keystore(data, "PKCS12", "bad", None)


@needs_openssl
def test_openssl_reads_our_pkcs12(pki: Pki, tmp_path: Path) -> None:
    path = tmp_path / "ours.p12"
    path.write_bytes(dump_pkcs12(pki.server, [("rootca", pki.other_ca)], "storepw"))
    assert OPENSSL is not None
    proc = subprocess.run(
        [OPENSSL, "pkcs12", "-in", str(path), "-passin", "pass:storepw", "-nodes", "-info"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "friendlyName: server" in proc.stdout and "friendlyName: rootca" in proc.stdout
    assert "-----BEGIN PRIVATE KEY-----" in proc.stdout
    assert "MAC: sha256" in proc.stderr + proc.stdout
