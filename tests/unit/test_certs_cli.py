"""`pytbmq certs`, `pytbmq keystore` and `pytbmq tls check` run through pytbmq.cli.main.

Every command writes into tmp_path. Outputs are checked with `cryptography`, with the
broker's own loaders (load_material, load_keystore) and, when installed, with openssl
(`verify`, `x509 -text`, `pkey`, `pkcs12`) and keytool (`-list`, `-importkeystore`,
`-importcert`); those interop tests skip cleanly when the tool is missing.

Command lines are written as strings split like a shell would (shlex) plus Path objects,
which are passed whole: `cli(capsys, "certs ca --out", tmp_path, "--cn 'My CA'")`.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID

from pytbmq.cli import main
from pytbmq.config import load_settings
from pytbmq.tls.keystore import load_keystore, select_key
from pytbmq.tls.material import TlsListenerConfig, load_material

OPENSSL = shutil.which("openssl")
KEYTOOL = shutil.which("keytool")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
needs_keytool = pytest.mark.skipif(KEYTOOL is None, reason="keytool (a JDK) is not installed")

KEY_PASSWORD = "s3rver-key"

Part = str | Path


# --------------------------------------------------------------------------- helpers


@dataclass
class Result:
    code: int
    out: str
    err: str


def argv(*parts: Part) -> list[str]:
    out: list[str] = []
    for part in parts:
        out += [str(part)] if isinstance(part, Path) else shlex.split(part)
    return out


def cli(capsys: pytest.CaptureFixture[str], *parts: Part) -> Result:
    """Run `pytbmq ARGS` in process; the exit code and what it printed."""
    capsys.readouterr()
    code = main(argv(*parts))
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def ok(capsys: pytest.CaptureFixture[str], *parts: Part) -> Result:
    result = cli(capsys, *parts)
    assert result.code == 0, f"{argv(*parts)}: exit {result.code}\n{result.out}\n{result.err}"
    return result


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def certs(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def ext(c: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension[x509.ExtensionType]:
    return c.extensions.get_extension_for_class(kind)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def key_bytes(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def exported(out: str) -> dict[str, str]:
    """The `export NAME=VALUE` lines a command printed, single quotes removed."""
    env: dict[str, str] = {}
    for match in re.finditer(r"^export (\w+)=(.*)$", out, re.MULTILINE):
        value = match.group(2)
        if value.startswith("'") and value.endswith("'"):
            value = value[1:-1]
        env[match.group(1)] = value
    return env


def tool(*parts: Part) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv(*parts), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )


@dataclass
class Made:
    """A PKI made by the commands under test."""

    root: Path  # root CA directory
    inter: Path  # intermediate CA directory
    server: Path  # signed by the root, EC, encrypted key
    server_out: str  # what `certs server` printed
    server_int: Path  # signed by the intermediate, RSA 2048
    clients: Path  # device1 (root), device2 (intermediate)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Made]:
    base = tmp_path_factory.mktemp("certs")

    def call(*parts: Part) -> str:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = main(argv(*parts))
        assert code == 0, f"{argv(*parts)}: exit {code}\n{buf.getvalue()}"
        return buf.getvalue()

    m = Made(
        base / "root", base / "inter", base / "server", "", base / "server_int", base / "clients"
    )
    call("certs ca --out", m.root)
    call("certs intermediate --ca", m.root, "--out", m.inter)
    m.server_out = call(
        "certs server --ca",
        m.root,
        "--host localhost --ip 127.0.0.1 --host broker.example.com --out",
        m.server,
        f"--key-password {KEY_PASSWORD}",
    )
    call("certs server --ca", m.inter, "--host localhost --rsa 2048 --out", m.server_int)
    call("certs client --ca", m.root, "--cn device1 --out", m.clients)
    call("certs client --ca", m.inter, "--cn device2 --out", m.clients)
    yield m


# --------------------------------------------------------------------------- certs ca


def test_root_ca_is_an_ec_p256_ca_with_pathlen_usage_and_key_ids(made: Made) -> None:
    ca = cert(made.root / "ca.pem")
    assert ca.subject == ca.issuer
    ca.verify_directly_issued_by(ca)
    bc = ext(ca, x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 1
    ku = ext(ca, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert not ku.value.digital_signature
    ski = ext(ca, x509.SubjectKeyIdentifier).value
    assert ext(ca, x509.AuthorityKeyIdentifier).value.key_identifier == ski.digest
    key = ca.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert datetime.timedelta(days=3650) <= lifetime <= datetime.timedelta(days=3650, hours=1)
    assert mode(made.root / "ca_key.pem") == 0o600
    key_pem = (made.root / "ca_key.pem").read_bytes()
    assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # unencrypted PKCS#8


def test_ca_key_options_rsa_and_p384(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok(capsys, "certs ca --rsa 3072 --days 10 --out", tmp_path / "rsa")
    rsa_ca = cert(tmp_path / "rsa" / "ca.pem")
    public = rsa_ca.public_key()
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 3072
    assert rsa_ca.not_valid_after_utc - rsa_ca.not_valid_before_utc < datetime.timedelta(days=11)
    out = ok(capsys, "certs ca --ec P-384 --cn 'Big CA' --out", tmp_path / "p384").out
    assert "CN=Big CA (EC P-384)" in out
    assert isinstance(cert(tmp_path / "p384" / "ca.pem").signature_hash_algorithm, hashes.SHA384)
    bad = cli(capsys, "certs ca --rsa 1024 --out", tmp_path / "x")
    assert bad.code == 1 and "--rsa 1024: use one of 2048, 3072, 4096" in bad.err
    bad = cli(capsys, "certs ca --ec P-521 --out", tmp_path / "x")
    assert bad.code == 1 and "--ec P-521: use P-256 or P-384" in bad.err
    assert not (tmp_path / "x").exists()


def test_refuses_to_overwrite_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ok(capsys, "certs ca --out", tmp_path)
    before = (tmp_path / "ca.pem").read_bytes(), (tmp_path / "ca_key.pem").read_bytes()
    again = cli(capsys, "certs ca --out", tmp_path)
    assert again.code == 1
    assert "refusing to overwrite" in again.err and "--force" in again.err
    assert ((tmp_path / "ca.pem").read_bytes(), (tmp_path / "ca_key.pem").read_bytes()) == before
    ok(capsys, "certs ca --force --out", tmp_path)
    assert (tmp_path / "ca.pem").read_bytes() != before[0]
    assert mode(tmp_path / "ca_key.pem") == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


# --------------------------------------------------------------------------- intermediate


def test_intermediate_has_pathlen_0_and_a_chain_file(made: Made) -> None:
    root = cert(made.root / "ca.pem")
    inter = cert(made.inter / "ca.pem")
    inter.verify_directly_issued_by(root)
    bc = ext(inter, x509.BasicConstraints).value
    assert bc.ca and bc.path_length == 0
    aki = ext(inter, x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ext(root, x509.SubjectKeyIdentifier).value.digest
    assert certs(made.inter / "ca_chain.pem") == [inter, root]
    assert mode(made.inter / "ca_key.pem") == 0o600


def test_an_intermediate_cannot_sign_another_ca(
    made: Made, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = cli(capsys, "certs intermediate --ca", made.inter, "--out", tmp_path)
    assert result.code == 1 and "pathlen 0" in result.err
    assert not list(tmp_path.iterdir())


def test_ca_directory_errors_name_the_option(
    made: Made, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    missing = cli(capsys, "certs server --host a --ca", tmp_path / "nope", "--out", out)
    assert missing.code == 1 and "--ca: file not found" in missing.err
    as_file = cli(capsys, "certs server --host a --ca", made.root / "ca.pem", "--out", out)
    assert as_file.code == 1 and "is a file: give the directory" in as_file.err
    leaf_dir = tmp_path / "leaf"  # a server certificate is no CA
    leaf_dir.mkdir()
    shutil.copy(made.server / "server.pem", leaf_dir / "ca.pem")
    shutil.copy(made.root / "ca_key.pem", leaf_dir / "ca_key.pem")
    not_ca = cli(capsys, "certs client --cn x --ca", leaf_dir, "--out", out)
    assert not_ca.code == 1 and "is not a CA certificate" in not_ca.err
    assert not out.exists()


# --------------------------------------------------------------------------- server


def test_server_certificate_sans_usage_and_chain(made: Made) -> None:
    server = cert(made.server / "server.pem")
    root = cert(made.root / "ca.pem")
    server.verify_directly_issued_by(root)
    assert server.subject.rfc4514_string() == "CN=localhost"
    san = ext(server, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "broker.example.com"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert list(ext(server, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    ku = ext(server, x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_encipherment
    assert not ext(server, x509.BasicConstraints).value.ca
    assert ext(server, x509.SubjectKeyIdentifier) and ext(server, x509.AuthorityKeyIdentifier)
    lifetime = server.not_valid_after_utc - server.not_valid_before_utc
    assert datetime.timedelta(days=365) <= lifetime <= datetime.timedelta(days=365, hours=1)
    assert certs(made.server / "serverChain.pem") == [server, root]
    # RSA under the intermediate: keyEncipherment too; chain = leaf + intermediate + root
    rsa_server = cert(made.server_int / "server.pem")
    assert ext(rsa_server, x509.KeyUsage).value.key_encipherment
    chain = certs(made.server_int / "serverChain.pem")
    assert chain == [rsa_server, *certs(made.inter / "ca_chain.pem")]


def test_server_key_is_encrypted_with_the_password(made: Made) -> None:
    data = (made.server / "server_key.pem").read_bytes()
    assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert mode(made.server / "server_key.pem") == 0o600
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(data, None)
    key = serialization.load_pem_private_key(data, KEY_PASSWORD.encode())
    assert isinstance(key, ec.EllipticCurvePrivateKey)


def test_server_prints_settings_the_broker_loads(made: Made) -> None:
    env = exported(made.server_out)
    assert env == {
        "LISTENER_SSL_ENABLED": "true",
        "LISTENER_SSL_CREDENTIALS_TYPE": "PEM",
        "LISTENER_SSL_PEM_CERT": str((made.server / "serverChain.pem").absolute()),
        "LISTENER_SSL_PEM_KEY": str((made.server / "server_key.pem").absolute()),
        "LISTENER_SSL_PEM_KEY_PASSWORD": KEY_PASSWORD,
    }
    material = load_material(TlsListenerConfig.from_settings(load_settings(environ=env), "ssl"))
    assert material.leaf == cert(made.server / "server.pem")
    assert cert(made.root / "ca.pem") in material.trust  # so its client certs are trusted


def test_server_options_and_errors(
    made: Made, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    none = cli(capsys, "certs server --ca", made.root, "--out", tmp_path / "a")
    assert none.code == 1 and "--host NAME and/or --ip ADDRESS" in none.err
    bad = cli(capsys, "certs server --host 'bad name' --ca", made.root, "--out", tmp_path / "a")
    assert bad.code == 1 and "--host 'bad name' is not a host name" in bad.err
    bad_ip = cli(capsys, "certs server --ip 300.1.1.1 --ca", made.root, "--out", tmp_path / "a")
    assert bad_ip.code == 1 and "--ip '300.1.1.1' is not an IP address" in bad_ip.err
    # an address given as --host becomes an IP SAN; names are lower-cased; env: password
    monkeypatch.setenv("TEST_KEY_PW", "from-env")
    out = ok(
        capsys,
        "certs server --host 10.0.0.1 --host '*.Example.COM' --cn mqtt --days 30",
        "--key-password env:TEST_KEY_PW --ca",
        made.root,
        "--out",
        tmp_path / "b",
    ).out
    server = cert(tmp_path / "b" / "server.pem")
    san = ext(server, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["*.example.com"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.1"]
    assert server.subject.rfc4514_string() == "CN=mqtt"
    assert exported(out)["LISTENER_SSL_PEM_KEY_PASSWORD"] == '"${TEST_KEY_PW}"'
    key_pem = (tmp_path / "b" / "server_key.pem").read_bytes()
    serialization.load_pem_private_key(key_pem, b"from-env")
    unset = cli(
        capsys,
        "certs server --host a --key-password env:PYTBMQ_SURELY_UNSET --ca",
        made.root,
        "--out",
        tmp_path / "c",
    )
    assert unset.code == 1 and "PYTBMQ_SURELY_UNSET is not set" in unset.err


def test_leaf_validity_is_capped_at_the_ca_expiry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ok(capsys, "certs ca --days 5 --out", tmp_path / "ca")
    out = ok(capsys, "certs client --cn c --ca", tmp_path / "ca", "--out", tmp_path / "c").out
    assert "note: valid until" in out
    leaf = cert(tmp_path / "c" / "c.pem")
    assert leaf.not_valid_after_utc == cert(tmp_path / "ca" / "ca.pem").not_valid_after_utc


# --------------------------------------------------------------------------- client


def test_client_certificate_and_files(made: Made) -> None:
    root = cert(made.root / "ca.pem")
    client = cert(made.clients / "device1.pem")
    client.verify_directly_issued_by(root)
    assert client.subject.rfc4514_string() == "CN=device1"
    assert list(ext(client, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert ext(client, x509.KeyUsage).value.digital_signature
    assert ext(client, x509.AuthorityKeyIdentifier)
    assert mode(made.clients / "device1_key.pem") == 0o600
    assert certs(made.clients / "device1_chain.pem") == [client, root]
    device2 = cert(made.clients / "device2.pem")
    chain = certs(made.clients / "device2_chain.pem")
    assert chain == [device2, *certs(made.inter / "ca_chain.pem")]


def test_client_credentials_json_is_tbmq_shaped(made: Made) -> None:
    doc = json.loads((made.clients / "device1_credentials.json").read_text())
    assert set(doc) == {"name", "clientType", "credentialsType", "credentialsValue"}
    assert doc["name"] == "device1"
    assert doc["clientType"] == "DEVICE"
    assert doc["credentialsType"] == "X_509"
    assert isinstance(doc["credentialsValue"], str)  # a JSON string, as TBMQ stores it
    value = json.loads(doc["credentialsValue"])
    assert value["certCnPattern"] == "device1"
    assert value["certCnIsRegex"] is False
    [(pattern, rules)] = value["authRulesMapping"].items()
    assert re.fullmatch(pattern, "device1") and not re.fullmatch(pattern, "device10")
    assert rules == {"pubAuthRulePatterns": [".*"], "subAuthRulePatterns": [".*"]}


def test_client_name_option_and_cn_that_is_no_file_name(
    made: Made, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = cli(capsys, "certs client --cn a/b --ca", made.root, "--out", tmp_path)
    assert bad.code == 1 and "--cn 'a/b' cannot be used as a file name" in bad.err
    ok(
        capsys,
        "certs client --cn 'sensor (1.2)' --name sensor-1 --client-type APPLICATION --ca",
        made.root,
        "--out",
        tmp_path,
    )
    assert cert(tmp_path / "sensor-1.pem").subject.rfc4514_string() == "CN=sensor (1.2)"
    doc = json.loads((tmp_path / "sensor-1_credentials.json").read_text())
    assert doc["name"] == "sensor-1" and doc["clientType"] == "APPLICATION"
    [pattern] = json.loads(doc["credentialsValue"])["authRulesMapping"]
    assert re.fullmatch(pattern, "sensor (1.2)") and not re.fullmatch(pattern, "sensor 1x2")


# --------------------------------------------------------------------------- keystore


def _p12(made: Made, path: Path, capsys: pytest.CaptureFixture[str]) -> Result:
    """`keystore create` of the RSA server (intermediate CA) into PKCS12, password changeit."""
    return ok(
        capsys,
        "keystore create --cert",
        made.server_int / "server.pem",
        "--key",
        made.server_int / "server_key.pem",
        "--ca",
        made.inter,
        "--store-password changeit --out",
        path,
    )


def _jks(made: Made, path: Path, capsys: pytest.CaptureFixture[str]) -> Result:
    """The same server in a JKS whose key password (keypw1) differs from the store's."""
    return ok(
        capsys,
        "keystore create --cert",
        made.server_int / "serverChain.pem",
        "--key",
        made.server_int / "server_key.pem",
        "--type JKS --store-password storepw --key-password keypw1 --out",
        path,
    )


def test_keystore_create_pkcs12_prints_working_settings(
    made: Made, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "server.p12"
    env = exported(_p12(made, out, capsys).out)
    assert mode(out) == 0o600
    assert env["LISTENER_SSL_CREDENTIALS_TYPE"] == "KEYSTORE"
    assert env["LISTENER_SSL_KEY_STORE_TYPE"] == "PKCS12"
    assert env["LISTENER_SSL_KEY_STORE"] == str(out)
    assert env["LISTENER_SSL_KEY_PASSWORD"] == "changeit"
    entry = select_key(load_keystore(out.read_bytes(), "PKCS12", "changeit", None), "server")
    assert list(entry.chain) == certs(made.server_int / "serverChain.pem")  # --ca completed it
    material = load_material(TlsListenerConfig.from_settings(load_settings(environ=env), "ssl"))
    assert material.leaf == cert(made.server_int / "server.pem")
    # PKCS12 keys use the store password: a different key password is refused
    refused = cli(
        capsys,
        "keystore create --cert",
        made.server_int / "serverChain.pem",
        "--key",
        made.server_int / "server_key.pem",
        "--store-password changeit --key-password other --out",
        tmp_path / "x.p12",
    )
    assert refused.code == 1 and "protected by the store password" in refused.err
    assert not (tmp_path / "x.p12").exists()


def test_keystore_create_jks_from_an_encrypted_pem_key(
    made: Made, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command: list[Part] = [
        "keystore create --type jks --store-password storepw --key-password keypw1",
        "--alias Broker --cert",
        made.server / "serverChain.pem",
        "--key",
        made.server / "server_key.pem",
        "--out",
        tmp_path / "server.jks",
    ]
    no_password = cli(capsys, *command)
    assert no_password.code == 1 and "--pem-key-password is empty" in no_password.err
    wrong = cli(capsys, *command, "--pem-key-password nope")
    assert wrong.code == 1 and "--pem-key-password: wrong password" in wrong.err
    env = exported(ok(capsys, *command, f"--pem-key-password {KEY_PASSWORD}").out)
    assert env["LISTENER_SSL_KEY_STORE_TYPE"] == "JKS"
    assert env["LISTENER_SSL_KEY_ALIAS"] == "broker"  # JKS aliases are lower-cased
    assert env["LISTENER_SSL_KEY_PASSWORD"] == "keypw1"
    store = load_keystore((tmp_path / "server.jks").read_bytes(), "JKS", "storepw", "keypw1")
    assert [e.alias for e in store.keys] == ["broker"]
    load_material(TlsListenerConfig.from_settings(load_settings(environ=env), "ssl"))


def test_keystore_create_key_mismatch_names_the_option(
    made: Made, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = cli(
        capsys,
        "keystore create --store-password changeit --cert",
        made.server_int / "server.pem",
        "--key",
        made.clients / "device1_key.pem",
        "--out",
        tmp_path / "x.p12",
    )
    assert result.code == 1 and "--key: the private key does not match" in result.err


def test_import_cert_keeps_a_jks_key_without_its_password(
    made: Made, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "server.jks"
    _jks(made, path, capsys)
    before = select_key(load_keystore(path.read_bytes(), "JKS", "storepw", "keypw1"), None)
    out = ok(
        capsys,
        "keystore import-cert --alias Clients --store-password storepw --keystore",
        path,
        "--cert",
        made.inter / "ca_chain.pem",
    ).out
    assert "clients: trustedCertEntry CN=pytbmq intermediate CA" in out
    assert "clients-2: trustedCertEntry CN=pytbmq root CA" in out
    assert mode(path) == 0o600  # the mode of the existing file is kept
    store = load_keystore(path.read_bytes(), "JKS", "storepw", "keypw1")
    [after] = store.keys
    assert (after.alias, after.chain) == (before.alias, before.chain)
    assert key_bytes(after.private_key) == key_bytes(before.private_key)
    assert [name for name, _ in store.trusted] == ["clients", "clients-2"]
    # the same alias again, a wrong store password, a wrong type: refused, file untouched
    data = path.read_bytes()
    root_pem = made.root / "ca.pem"
    again = cli(
        capsys,
        "keystore import-cert --alias CLIENTS --store-password storepw --keystore",
        path,
        "--cert",
        root_pem,
    )
    assert again.code == 1 and 'alias "CLIENTS" already exists' in again.err
    wrong = cli(
        capsys,
        "keystore import-cert --alias r --store-password x --keystore",
        path,
        "--cert",
        root_pem,
    )
    assert wrong.code == 1 and "wrong store password" in wrong.err
    declared = cli(
        capsys,
        "keystore import-cert --alias r --store-password storepw --type PKCS12 --keystore",
        path,
        "--cert",
        root_pem,
    )
    assert declared.code == 1 and "declared PKCS12 but the file is JKS" in declared.err
    assert path.read_bytes() == data


def test_import_cert_into_pkcs12_and_new_truststores(
    made: Made, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p12 = tmp_path / "server.p12"
    _p12(made, p12, capsys)
    ok(
        capsys,
        "keystore import-cert --alias root --store-password changeit --keystore",
        p12,
        "--cert",
        made.root / "ca.pem",
    )
    store = load_keystore(p12.read_bytes(), "PKCS12", "changeit", None)
    assert [e.alias for e in store.keys] == ["server"]
    assert ("root", cert(made.root / "ca.pem")) in store.trusted
    for name, kind in (("trust.jks", "JKS"), ("trust.p12", "PKCS12"), ("trust.store", "PKCS12")):
        out = ok(
            capsys,
            "keystore import-cert --alias root --store-password trustpw --keystore",
            tmp_path / name,
            "--cert",
            made.root / "ca.pem",
        ).out
        assert f"created {kind} truststore" in out
        assert exported(out)["LISTENER_SSL_TRUSTSTORE_TYPE"] == kind
        assert mode(tmp_path / name) & 0o077 == 0o044 & ~_umask()  # no key: not private
        trust = load_keystore((tmp_path / name).read_bytes(), kind, "trustpw", None)
        assert [c for _, c in trust.trusted] == [cert(made.root / "ca.pem")]


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def test_keystore_list(made: Made, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "server.jks"
    _jks(made, path, capsys)
    ok(
        capsys,
        "keystore import-cert --alias root --store-password storepw --keystore",
        path,
        "--cert",
        made.root / "ca.pem",
    )
    locked = ok(capsys, "keystore list --store-password storepw", path).out
    assert "JKS keystore, 2 entries" in locked
    assert "server: PrivateKeyEntry, locked" in locked and "--key-password" in locked
    assert "root: trustedCertEntry\n  CN=pytbmq root CA\n      self-signed, expires" in locked
    full = ok(capsys, "keystore list --store-password storepw --key-password keypw1", path).out
    assert "server: PrivateKeyEntry, RSA 2048, chain of 3" in full
    assert "[0] CN=localhost\n      issuer CN=pytbmq intermediate CA, expires" in full
    assert re.search(r"expires \d{4}-\d\d-\d\d \d\d:\d\d UTC \(in 36[45] days\)", full)
    wrong = cli(capsys, "keystore list --store-password x", path)
    assert wrong.code == 1 and "wrong store password" in wrong.err
    pem = cli(capsys, "keystore list --store-password x", made.root / "ca.pem")
    assert pem.code == 1 and "the file is PEM text" in pem.err


def test_password_from_a_file(
    made: Made, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "pw.txt"
    secret.write_text("from-file\nignored\n")
    out = ok(
        capsys,
        "keystore create --cert",
        made.server_int / "serverChain.pem",
        "--key",
        made.server_int / "server_key.pem",
        f"--store-password file:{secret} --out",
        tmp_path / "s.p12",
    ).out
    load_keystore((tmp_path / "s.p12").read_bytes(), "PKCS12", "from-file", None)
    assert exported(out)["LISTENER_SSL_KEY_STORE_PASSWORD"] == f'"$(head -n1 {secret})"'


# --------------------------------------------------------------------------- tls check


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No broker settings inherited from the environment; cwd is tmp_path."""
    for name in list(os.environ):
        if name.startswith(("LISTENER_", "SSL_", "TLS_", "PYTBMQ_", "MQTT_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_tls_check_passes_on_good_settings(
    made: Made, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in exported(made.server_out).items():
        clean_env.setenv(name, value)
    out = ok(capsys, "tls check").out
    assert "listener ssl (LISTENER_SSL_*): OK" in out
    assert "serverChain.pem (2 certificates)" in out
    assert "server_key.pem (an encrypted private key)" in out
    assert "[0] CN=localhost" in out and "[1] CN=pytbmq root CA (self-signed root)" in out
    assert "SANs     DNS:localhost, DNS:broker.example.com, IP:127.0.0.1" in out
    assert "EKU      serverAuth" in out
    assert "server key     EC P-256" in out
    assert "LISTENER_SSL_CLIENT_AUTH=REQUESTED" in out
    assert "trust anchors  2, from LISTENER_SSL_PEM_CERT" in out
    assert "CRLs           none" in out
    assert "accepts TLS 1.2 and TLS 1.3" in out
    assert "TLS 1.2 (usable with this key): ECDHE-ECDSA-" in out
    assert "handshakes in memory completed" in out
    assert "warnings       none" in out
    assert out.rstrip().endswith("tls check: 1 TLS listener(s) OK")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LISTENER_SSL_PEM_KEY_PASSWORD": "x"}, "LISTENER_SSL_PEM_KEY_PASSWORD: wrong password"),
        ({"LISTENER_SSL_PEM_CERT": "missing.pem"}, "LISTENER_SSL_PEM_CERT: file not found"),
        (
            {"LISTENER_SSL_ENABLED_CIPHER_SUITES": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"},
            "LISTENER_SSL_ENABLED_CIPHER_SUITES: none of the TLS 1.2 suites",
        ),
        ({"LISTENER_SSL_PROTOCOL": "TLSv1.1"}, "LISTENER_SSL_PROTOCOL"),
        ({"LISTENER_SSL_ENABLED": "false"}, "no TLS listener is enabled: set LISTENER_SSL_ENABLED"),
    ],
    ids=["key-password", "cert-path", "suites", "protocol", "disabled"],
)
def test_tls_check_fails_naming_the_variable(
    made: Made,
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    message: str,
) -> None:
    for name, value in {**exported(made.server_out), **env}.items():
        clean_env.setenv(name, value)
    result = cli(capsys, "tls check")
    assert result.code == 1
    assert message in result.err


def test_tls_check_keystore_from_a_config_file_and_warnings(
    made: Made, tmp_path: Path, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _jks(made, tmp_path / "server.jks", capsys)
    config = tmp_path / "tbmq.yml"
    config.write_text(
        "listener:\n  ssl:\n    enabled: true\n    config:\n      credentials:\n"
        "        type: KEYSTORE\n        keystore:\n          store_file: server.jks\n"
    )
    # TBMQ's default store password does not open it: the error names the variable
    result = cli(capsys, "--config", config, "tls check")
    assert result.code == 1
    assert "LISTENER_SSL_KEY_STORE_PASSWORD: wrong store password" in result.err
    clean_env.setenv("LISTENER_SSL_KEY_STORE_PASSWORD", "storepw")
    clean_env.setenv("LISTENER_SSL_KEY_PASSWORD", "keypw1")
    clean_env.setenv("LISTENER_SSL_CLIENT_AUTH", "REQUIRED")
    out = ok(capsys, "tls check --config", config).out
    assert "KEYSTORE" in out and "server.jks (JKS)" in out
    assert "RSA 2048 from server.jks (alias server)" in out
    assert "LISTENER_SSL_CLIENT_AUTH=REQUIRED" in out
    # only the leaf as trust anchor: a warning says why CA-signed clients would be refused
    clean_env.setenv("LISTENER_SSL_ENABLED", "true")
    clean_env.setenv("LISTENER_SSL_CREDENTIALS_TYPE", "PEM")
    clean_env.setenv("LISTENER_SSL_PEM_CERT", str(made.server_int / "server.pem"))
    clean_env.setenv("LISTENER_SSL_PEM_KEY", str(made.server_int / "server_key.pem"))
    out = ok(capsys, "tls check").out
    assert "WARNING: the only trust anchors are leaf certificates" in out
    assert "the chain ends below CN=pytbmq intermediate CA" in out


def test_tls_check_connect_argument_errors(capsys: pytest.CaptureFixture[str]) -> None:
    bad = cli(capsys, "tls check --connect localhost")
    assert bad.code == 1 and "expected HOST:PORT" in bad.err
    key_only = cli(capsys, "tls check --connect localhost:1 --key k.pem")
    assert key_only.code == 1 and "--key needs --cert" in key_only.err


# --------------------------------------------------------------------------- openssl


@needs_openssl
def test_openssl_verifies_the_chains(made: Made) -> None:
    assert OPENSSL
    root, chain = made.root / "ca.pem", made.inter / "ca_chain.pem"
    result = tool(
        OPENSSL, "verify -CAfile", root, made.server / "server.pem", made.clients / "device1.pem"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    result = tool(
        OPENSSL,
        "verify -CAfile",
        root,
        "-untrusted",
        chain,
        made.server_int / "server.pem",
        made.clients / "device2.pem",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": OK") == 2
    # purposes: EKU serverAuth / clientAuth as intended
    server, client = made.server / "server.pem", made.clients / "device1.pem"
    assert tool(OPENSSL, "verify -purpose sslserver -CAfile", root, server).returncode == 0
    assert tool(OPENSSL, "verify -purpose sslclient -CAfile", root, client).returncode == 0
    assert tool(OPENSSL, "verify -purpose sslclient -CAfile", root, server).returncode != 0


@needs_openssl
def test_openssl_reads_extensions_and_keys(made: Made) -> None:
    assert OPENSSL
    text = tool(OPENSSL, "x509 -noout -text -in", made.server / "server.pem").stdout
    assert "DNS:localhost, DNS:broker.example.com, IP Address:127.0.0.1" in text
    assert "TLS Web Server Authentication" in text
    assert "X509v3 Subject Key Identifier" in text and "X509v3 Authority Key Identifier" in text
    text = tool(OPENSSL, "x509 -noout -text -in", made.inter / "ca.pem").stdout
    assert "CA:TRUE, pathlen:0" in text and "Certificate Sign, CRL Sign" in text
    text = tool(OPENSSL, "x509 -noout -text -in", made.clients / "device1.pem").stdout
    assert "TLS Web Client Authentication" in text
    key = made.server / "server_key.pem"
    good = tool(OPENSSL, "pkey -noout -in", key, f"-passin pass:{KEY_PASSWORD}")
    assert good.returncode == 0, good.stderr
    assert tool(OPENSSL, "pkey -noout -in", key, "-passin pass:wrong").returncode != 0
    plain = tool(OPENSSL, "pkey -noout -passin pass: -in", made.clients / "device1_key.pem")
    assert plain.returncode == 0, plain.stderr


@needs_openssl
def test_openssl_reads_our_pkcs12_after_import_cert(
    made: Made, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert OPENSSL
    p12 = tmp_path / "s.p12"
    _p12(made, p12, capsys)
    ok(
        capsys,
        "keystore import-cert --alias root --store-password changeit --keystore",
        p12,
        "--cert",
        made.root / "ca.pem",
    )
    result = tool(OPENSSL, "pkcs12 -passin pass:changeit -nodes -in", p12)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("BEGIN CERTIFICATE") == 4  # leaf, intermediate, root, root
    assert "BEGIN PRIVATE KEY" in result.stdout
    assert "friendlyName: root" in result.stdout


# --------------------------------------------------------------------------- keytool


@needs_keytool
def test_keytool_lists_and_opens_our_keystores(
    made: Made, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert KEYTOOL
    jks, p12 = tmp_path / "server.jks", tmp_path / "server.p12"
    _jks(made, jks, capsys)
    _p12(made, p12, capsys)
    stores = ((jks, "storepw", "JKS"), (p12, "changeit", "PKCS12"))
    for path, password, _ in stores:
        ok(
            capsys,
            f"keystore import-cert --alias inter --store-password {password} --keystore",
            path,
            "--cert",
            made.inter / "ca.pem",
        )
    for path, password, kind in stores:
        listing = tool(KEYTOOL, "-list -keystore", path, f"-storepass {password}")
        assert listing.returncode == 0, listing.stdout + listing.stderr
        assert f"Keystore type: {kind}" in listing.stdout
        assert "Your keystore contains 2 entries" in listing.stdout, listing.stdout
        assert re.search(r"^server, .*PrivateKeyEntry", listing.stdout, re.MULTILINE)
        assert re.search(r"^inter, .*trustedCertEntry", listing.stdout, re.MULTILINE)
    # keytool decrypts the JKS key (own key password) that import-cert carried over
    converted = tmp_path / "converted.p12"
    result = tool(
        KEYTOOL,
        "-importkeystore -noprompt -srcstoretype JKS -srcstorepass storepw -srcalias server",
        "-srckeypass keypw1 -deststoretype PKCS12 -deststorepass convpw -destkeypass convpw",
        "-srckeystore",
        jks,
        "-destkeystore",
        converted,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    entry = select_key(load_keystore(converted.read_bytes(), "PKCS12", "convpw", None), "server")
    assert entry.chain[0] == cert(made.server_int / "server.pem")


@needs_keytool
def test_we_list_a_truststore_keytool_extended(
    made: Made, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert KEYTOOL
    p12 = tmp_path / "trust.p12"
    ok(
        capsys,
        "keystore import-cert --alias root --store-password trustpw --keystore",
        p12,
        "--cert",
        made.root / "ca.pem",
    )
    result = tool(
        KEYTOOL,
        "-importcert -noprompt -storepass trustpw -alias inter -keystore",
        p12,
        "-file",
        made.inter / "ca.pem",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = ok(capsys, "keystore list --store-password trustpw", p12).out
    assert "root: trustedCertEntry" in out and "inter: trustedCertEntry" in out
