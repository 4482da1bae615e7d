"""`pytbmq certs`, `pytbmq keystore` and `pytbmq tls check`: TBMQ's openssl and keytool
recipes as one command each, without a JDK.

`add_parsers` registers the three commands on the `pytbmq` argument parser and `run`
executes one; pytbmq.cli calls both. This module owns the files: it reads CAs, keys and
keystores, refuses to overwrite without --force, writes atomically (private keys and
keystores mode 0600) and prints what was made and the exact settings to use. The work is
done by pytbmq.tls.issue (certificates), pytbmq.tls.keystore (JKS/PKCS12) and
pytbmq.tls.check (reports); they are imported when a command runs, so the broker's own
startup does not load them for nothing.

Passwords may be given as in openssl: `secret`, `pass:secret`, `env:VAR` or `file:PATH`
(first line), so they need not appear in the process list.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytbmq.errors import PytbmqError

if TYPE_CHECKING:
    from cryptography import x509

    from pytbmq.tls.issue import Authority, PrivateKey

COMMANDS = ("certs", "keystore", "tls")

_PASSWORD_HELP = "literal, or pass:TEXT, env:VAR, file:PATH as in openssl"
_CA_FILES = "ca.pem, ca_key.pem and for an intermediate ca_chain.pem"


class ToolError(PytbmqError):
    """A tooling command cannot proceed; the message says why and names the option."""


# --------------------------------------------------------------------------- parsers


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `certs`, `keystore` and `tls` on the `pytbmq` subcommand set."""
    _certs_parsers(sub)
    _keystore_parsers(sub)
    _tls_parsers(sub)


def _key_options(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--ec", metavar="CURVE", help="EC key on CURVE: P-256 (the default) or P-384"
    )
    group.add_argument("--rsa", metavar="BITS", type=int, help="RSA key of BITS: 2048, 3072, 4096")


def _common(p: argparse.ArgumentParser, days: int, what: str) -> None:
    p.add_argument("--days", type=int, default=days, help=f"validity (default: {days})")
    _key_options(p)
    p.add_argument("--force", action="store_true", help=f"overwrite existing {what} files")


def _ca_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ca",
        metavar="DIR",
        required=True,
        help=f"the signing CA: a directory from `certs ca` or `certs intermediate` ({_CA_FILES})",
    )
    p.add_argument(
        "--ca-key-password",
        metavar="PASSWORD",
        help=f"for an encrypted ca_key.pem; {_PASSWORD_HELP}",
    )


def _certs_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    certs = sub.add_parser(
        "certs",
        help="make a CA, server and client certificates (no openssl needed)",
        description="Make the certificates of TBMQ's SSL guide. Keys: EC P-256 by default. "
        "Private key files are written with mode 0600; existing files are kept unless --force.",
    )
    actions = certs.add_subparsers(dest="certs_command", metavar="ACTION", required=True)

    ca = actions.add_parser(
        "ca", help="a root CA: DIR/ca.pem and DIR/ca_key.pem", description="Make a root CA."
    )
    ca.add_argument("--out", metavar="DIR", required=True, help="directory to write to")
    ca.add_argument("--cn", default="pytbmq root CA", help="common name (default: %(default)s)")
    ca.add_argument(
        "--pathlen",
        type=int,
        default=1,
        help="how many intermediate CAs may sit below it (default: 1; -1: unlimited)",
    )
    _common(ca, 3650, "CA")

    inter = actions.add_parser(
        "intermediate",
        help="an intermediate CA (pathlen 0): DIR2/ca.pem, ca_key.pem, ca_chain.pem",
        description="Make an intermediate CA signed by --ca; use its directory as --ca of "
        "`certs server` and `certs client`. ca_chain.pem holds the intermediate then the root.",
    )
    _ca_option(inter)
    inter.add_argument("--out", metavar="DIR2", required=True, help="directory to write to")
    inter.add_argument(
        "--cn", default="pytbmq intermediate CA", help="common name (default: %(default)s)"
    )
    _common(inter, 3650, "CA")

    server = actions.add_parser(
        "server",
        help="a server certificate: DIR2/server.pem, server_key.pem, serverChain.pem",
        description="Make a server certificate (SANs from --host/--ip, EKU serverAuth) and "
        "print the LISTENER_SSL_* settings that serve it. serverChain.pem is the "
        "certificate followed by its CA chain, for LISTENER_SSL_PEM_CERT.",
    )
    _ca_option(server)
    server.add_argument(
        "--host",
        metavar="NAME",
        action="append",
        default=[],
        help="DNS name clients connect to (repeat for more; an IP address is accepted)",
    )
    server.add_argument(
        "--ip", metavar="ADDRESS", action="append", default=[], help="IP address SAN (repeatable)"
    )
    server.add_argument("--cn", help="common name (default: the first --host or --ip)")
    server.add_argument("--out", metavar="DIR2", required=True, help="directory to write to")
    server.add_argument(
        "--key-password",
        metavar="PASSWORD",
        help=f"encrypt server_key.pem (LISTENER_SSL_PEM_KEY_PASSWORD); {_PASSWORD_HELP}",
    )
    _common(server, 365, "server")

    client = actions.add_parser(
        "client",
        help="a client certificate: DIR2/NAME.pem, NAME_key.pem, NAME_chain.pem, "
        "NAME_credentials.json",
        description="Make a client certificate (EKU clientAuth) and the matching X_509 "
        "credential in TBMQ's JSON (for `pytbmq credentials add --json`).",
    )
    _ca_option(client)
    client.add_argument("--cn", required=True, help="the client's common name")
    client.add_argument(
        "--name",
        help="file name prefix and credential name (default: the CN, which must then be a "
        "plain file name)",
    )
    client.add_argument("--out", metavar="DIR2", required=True, help="directory to write to")
    client.add_argument(
        "--client-type",
        choices=("DEVICE", "APPLICATION"),
        default="DEVICE",
        help="clientType of the credential (default: %(default)s)",
    )
    client.add_argument(
        "--key-password", metavar="PASSWORD", help=f"encrypt NAME_key.pem; {_PASSWORD_HELP}"
    )
    _common(client, 365, "client")


def _keystore_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ks = sub.add_parser(
        "keystore",
        help="make, extend and list JKS/PKCS12 keystores (no JDK needed)",
        description="JKS and PKCS12 keystores as keytool makes them, without a JDK.",
    )
    actions = ks.add_subparsers(dest="keystore_command", metavar="ACTION", required=True)

    create = actions.add_parser(
        "create",
        help="a keystore holding a key and its certificate chain",
        description="Put a PEM certificate (chain) and its key into a new keystore, as "
        "`openssl pkcs12 -export` + `keytool -importkeystore` do, and print the "
        "LISTENER_SSL_* settings that serve it.",
    )
    create.add_argument(
        "--cert", metavar="FILE", required=True, help="PEM certificate or chain (may hold the key)"
    )
    create.add_argument("--key", metavar="FILE", help="PEM private key (if not in --cert)")
    create.add_argument(
        "--pem-key-password",
        metavar="PASSWORD",
        help=f"password of an encrypted --key; {_PASSWORD_HELP}",
    )
    create.add_argument(
        "--ca",
        metavar="FILE|DIR",
        action="append",
        default=[],
        help="CA certificates to complete the chain (a PEM file, or a `certs` CA directory); "
        "ones that are not in the chain become trusted entries",
    )
    create.add_argument(
        "--type",
        type=str.upper,
        choices=("PKCS12", "JKS"),
        help="keystore type (default: JKS for a .jks file name, else PKCS12)",
    )
    create.add_argument("--store-password", metavar="PASSWORD", required=True, help=_PASSWORD_HELP)
    create.add_argument(
        "--key-password",
        metavar="PASSWORD",
        help="JKS only: password of the key entry (default: the store password); PKCS12 "
        "keys always use the store password, as with keytool",
    )
    create.add_argument(
        "--alias", default="server", help="alias of the key entry (default: server)"
    )
    create.add_argument("--out", metavar="FILE", required=True, help="keystore file to write")
    create.add_argument("--force", action="store_true", help="overwrite an existing file")

    imp = actions.add_parser(
        "import-cert",
        help="add trusted certificates (keytool -importcert); creates the store if missing",
        description="Add the certificate(s) of a PEM file as trusted entries, as "
        "`keytool -importcert` does; the second and later get ALIAS-2, ALIAS-3... Existing "
        "entries are kept byte for byte, so no key password is needed, even for a JKS key "
        "entry whose password differs from the store password.",
    )
    imp.add_argument("--keystore", metavar="FILE", required=True, help="JKS or PKCS12 file")
    imp.add_argument("--cert", metavar="FILE", required=True, help="PEM certificate(s)")
    imp.add_argument("--alias", required=True, help="alias of the new entry")
    imp.add_argument("--store-password", metavar="PASSWORD", required=True, help=_PASSWORD_HELP)
    imp.add_argument(
        "--type",
        type=str.upper,
        choices=("PKCS12", "JKS"),
        help="type of a new store (default: JKS for a .jks name, else PKCS12); an existing "
        "store must be of this type",
    )

    ls = actions.add_parser(
        "list",
        help="aliases, entry types, subjects and expiry (keytool -list)",
        description="List a keystore's entries.",
    )
    ls.add_argument("keystore", metavar="FILE", help="JKS or PKCS12 file")
    ls.add_argument("--store-password", metavar="PASSWORD", required=True, help=_PASSWORD_HELP)
    ls.add_argument(
        "--key-password",
        metavar="PASSWORD",
        help=f"to open key entries protected by another password; {_PASSWORD_HELP}",
    )
    ls.add_argument("--type", type=str.upper, choices=("PKCS12", "JKS"), help="default: detected")


def _tls_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tls = sub.add_parser("tls", help="check TLS settings and listeners")
    actions = tls.add_subparsers(dest="tls_command", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="run the broker's TLS startup checks, or probe a running listener",
        description="Without --connect: read the settings as `pytbmq run` does (environment "
        "and --config) and, for every enabled TLS listener, load the files, build the TLS "
        "context and run the test handshakes the broker runs at startup; print what was "
        "found. Exit 0 when everything works, 1 with the error (naming the setting) "
        "otherwise. With --connect HOST:PORT: handshake with a running broker as a client "
        "and report protocol, cipher, server chain and verification.",
    )
    check.add_argument(
        "--config", metavar="FILE", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    check.add_argument("--connect", metavar="HOST:PORT", help="probe a running TLS listener")
    check.add_argument("--cafile", metavar="FILE", help="CA to verify the server with")
    check.add_argument("--cert", metavar="FILE", help="client certificate (or chain) to present")
    check.add_argument("--key", metavar="FILE", help="its private key (default: in --cert)")
    check.add_argument(
        "--key-password", metavar="PASSWORD", help=f"for an encrypted --key; {_PASSWORD_HELP}"
    )
    check.add_argument(
        "--servername", metavar="NAME", help="SNI and name to verify (default: HOST)"
    )
    check.add_argument(
        "--timeout", type=float, default=10.0, help="seconds for connect and each read"
    )


# --------------------------------------------------------------------------- dispatch


def run(args: argparse.Namespace) -> int:
    """Run the tooling command in ``args``; 0 on success, 1 with a message on stderr."""
    handlers: dict[tuple[str, str], Callable[[argparse.Namespace], int]] = {
        ("certs", "ca"): _certs_ca,
        ("certs", "intermediate"): _certs_intermediate,
        ("certs", "server"): _certs_server,
        ("certs", "client"): _certs_client,
        ("keystore", "create"): _keystore_create,
        ("keystore", "import-cert"): _keystore_import,
        ("keystore", "list"): _keystore_list,
        ("tls", "check"): _tls_check,
    }
    action = str(getattr(args, f"{args.command}_command"))
    try:
        return handlers[(args.command, action)](args)
    except PytbmqError as exc:  # ToolError, ConfigError (TlsConfigError), KeystoreError...
        print(f"pytbmq {args.command} {action}: {exc}", file=sys.stderr)
        return 1


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Secret:
    """A password and how to show it in printed shell lines."""

    value: str
    shown: str


def secret(text: str | None, option: str) -> Secret | None:
    if text is None:
        return None
    if text.startswith("env:"):
        var = text[4:]
        value = os.environ.get(var)
        if value is None:
            raise ToolError(f"{option} env:{var}: the environment variable {var} is not set")
        return Secret(value, f'"${{{var}}}"')
    if text.startswith("file:"):
        path = text[5:]
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ToolError(f"{option} file:{path}: cannot read it: {exc.strerror}") from None
        return Secret(lines[0] if lines else "", f'"$(head -n1 {shlex.quote(path)})"')
    if text.startswith("pass:"):
        text = text[5:]
    return Secret(text, shlex.quote(text))


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class OutFile:
    path: Path
    data: bytes
    private: bool = False


def write_files(files: Sequence[OutFile], force: bool) -> None:
    """Write all or nothing: refuse before writing anything if a file exists (no --force)."""
    for f in files:
        if f.path.is_dir():
            raise ToolError(f"{f.path} is a directory")
    existing = [str(f.path) for f in files if f.path.exists()]
    if existing and not force:
        raise ToolError(
            f"refusing to overwrite {', '.join(existing)}: pass --force to replace "
            f"{'them' if len(existing) > 1 else 'it'}"
        )
    for f in files:
        f.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(f.path, f.data, 0o600 if f.private else None)


def write_atomically(path: Path, data: bytes, mode: int | None) -> None:
    """Write ``data`` to a new temporary file next to ``path`` and rename it over ``path``.

    ``mode`` None: 0644 minus the umask (public files); otherwise exactly ``mode``
    (private keys and keystores: 0600). The temporary file is created exclusively, 0600."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        if mode is None:
            umask = os.umask(0o022)
            os.umask(umask)
            mode = 0o644 & ~umask
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _pem(*certs: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _key_pem(key: PrivateKey, password: Secret | None) -> bytes:
    from cryptography.hazmat.primitives import serialization

    encryption: serialization.KeySerializationEncryption = serialization.NoEncryption()
    if password is not None:
        if not password.value:
            raise ToolError("--key-password must not be empty (omit it for an unencrypted key)")
        encryption = serialization.BestAvailableEncryption(password.value.encode())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def _expires(cert: x509.Certificate) -> str:
    return f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"


def _issued_line(kind: str, cert: x509.Certificate, key_desc: str) -> str:
    issuer = (
        "self-signed"
        if cert.issuer == cert.subject
        else f"signed by {cert.issuer.rfc4514_string()}"
    )
    return f"{kind} {_subject(cert)} ({key_desc}), {issuer}, valid until {_expires(cert)}"


def _clamp_note(cert: x509.Certificate, days: int, now: datetime.datetime) -> None:
    wanted = now + datetime.timedelta(days=days)
    if cert.not_valid_after_utc < wanted - datetime.timedelta(minutes=1):
        print(f"note: valid until {_expires(cert)} only, when its CA expires (asked: {days} days)")


def _abs(path: Path) -> str:
    return str(path.absolute())


def _load_key(data: bytes, path: str, password: Secret | None, option: str) -> Any:
    from pytbmq.tls.material import load_pem_private_key, pem_blocks

    blocks = [b for label, b in pem_blocks(data) if label.endswith(b"PRIVATE KEY")]
    if not blocks:
        return None
    return load_pem_private_key(blocks[0], password.value if password else "", option, path)


def load_authority(ca_dir: str, password: Secret | None, now: datetime.datetime) -> Authority:
    """The CA in a directory written by `certs ca` / `certs intermediate`."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from pytbmq.tls.issue import Authority, check_authority
    from pytbmq.tls.material import load_pem_certificates, read_file

    directory = Path(ca_dir)
    if directory.is_file():
        raise ToolError(
            f"--ca {ca_dir} is a file: give the directory made by `pytbmq certs ca` or "
            f"`pytbmq certs intermediate` ({_CA_FILES})"
        )
    cert_path = directory / "ca.pem"
    key_path = directory / "ca_key.pem"
    certs = load_pem_certificates(
        read_file(str(cert_path), "--ca", "CA certificate"), "--ca", str(cert_path)
    )
    if not certs:
        raise ToolError(f"--ca: {cert_path} holds no PEM certificate")
    key = _load_key(
        read_file(str(key_path), "--ca", "CA private key"),
        str(key_path),
        password,
        "--ca-key-password",
    )
    if key is None:
        raise ToolError(f"--ca: {key_path} holds no PEM private key")
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ToolError(f"--ca: {key_path} holds a key type `pytbmq certs` cannot sign with")
    cert = certs[0]
    chain: tuple[x509.Certificate, ...] = (cert,)
    chain_path = directory / "ca_chain.pem"
    if chain_path.exists():
        chain_certs = load_pem_certificates(
            read_file(str(chain_path), "--ca", "CA chain"), "--ca", str(chain_path)
        )
        fp = cert.fingerprint(hashes.SHA256())
        rest = [c for c in chain_certs if c.fingerprint(hashes.SHA256()) != fp]
        chain = (cert, *rest)
    authority = Authority(cert, key, chain)
    check_authority(authority, now, f"--ca {ca_dir}")
    return authority


def _root_file(ca_dir: str) -> Path:
    """The file clients should use as --cafile for certificates signed under ``ca_dir``."""
    chain = Path(ca_dir) / "ca_chain.pem"
    return chain if chain.exists() else Path(ca_dir) / "ca.pem"


def _print_files(rows: list[tuple[Path, str]]) -> None:
    width = max(len(_abs(path)) for path, _ in rows)
    for path, what in rows:
        print(f"  {_abs(path):<{width}}  {what}")


def _issuer(cert: x509.Certificate) -> str:
    if cert.issuer == cert.subject:
        return "self-signed"
    return f"issuer {cert.issuer.rfc4514_string()}"


def _print_env(lines: list[tuple[str, str]]) -> None:
    for name, value in lines:
        print(f"export {name}={value}")


# --------------------------------------------------------------------------- certs


def _new_key(args: argparse.Namespace) -> tuple[PrivateKey, str]:
    from pytbmq.tls.issue import generate_key, key_spec

    spec = key_spec(args.ec, args.rsa)
    return generate_key(spec), spec.describe()


def _certs_ca(args: argparse.Namespace) -> int:
    from pytbmq.tls.issue import root_ca

    now = _now()
    out = Path(args.out)
    key, desc = _new_key(args)
    pathlen = None if args.pathlen == -1 else args.pathlen
    authority = root_ca(key, args.cn, args.days, pathlen, now)
    write_files(
        [
            OutFile(out / "ca.pem", _pem(authority.cert)),
            OutFile(out / "ca_key.pem", _key_pem(key, None), True),
        ],
        args.force,
    )
    print(_issued_line("root CA", authority.cert, desc))
    _print_files(
        [
            (out / "ca.pem", "certificate: clients' --cafile, truststores"),
            (out / "ca_key.pem", "private key (mode 0600): keep it secret"),
        ]
    )
    print(f"next: pytbmq certs server --ca {shlex.quote(args.out)} --host HOST --out DIR")
    return 0


def _certs_intermediate(args: argparse.Namespace) -> int:
    from pytbmq.tls.issue import intermediate_ca

    now = _now()
    issuer = load_authority(args.ca, secret(args.ca_key_password, "--ca-key-password"), now)
    out = Path(args.out)
    key, desc = _new_key(args)
    authority = intermediate_ca(issuer, key, args.cn, args.days, now)
    write_files(
        [
            OutFile(out / "ca.pem", _pem(authority.cert)),
            OutFile(out / "ca_key.pem", _key_pem(key, None), True),
            OutFile(out / "ca_chain.pem", _pem(*authority.chain)),
        ],
        args.force,
    )
    print(_issued_line("intermediate CA", authority.cert, desc))
    _clamp_note(authority.cert, args.days, now)
    _print_files(
        [
            (out / "ca.pem", "certificate"),
            (out / "ca_key.pem", "private key (mode 0600)"),
            (out / "ca_chain.pem", "intermediate + root: clients' --cafile"),
        ]
    )
    print(f"next: pytbmq certs server --ca {shlex.quote(args.out)} --host HOST --out DIR")
    return 0


def _certs_server(args: argparse.Namespace) -> int:
    from pytbmq.tls.issue import server_certificate, split_hosts

    now = _now()
    password = secret(args.key_password, "--key-password")
    names, addresses = split_hosts(args.host, args.ip)
    if not names and not addresses:
        raise ToolError("give the server's names with --host NAME and/or --ip ADDRESS")
    issuer = load_authority(args.ca, secret(args.ca_key_password, "--ca-key-password"), now)
    cn = args.cn or (names[0] if names else str(addresses[0]))
    out = Path(args.out)
    key, desc = _new_key(args)
    cert = server_certificate(issuer, key, cn, names, addresses, args.days, now)
    write_files(
        [
            OutFile(out / "server.pem", _pem(cert)),
            OutFile(out / "server_key.pem", _key_pem(key, password), True),
            OutFile(out / "serverChain.pem", _pem(cert, *issuer.chain)),
        ],
        args.force,
    )
    sans = [f"DNS:{n}" for n in names] + [f"IP:{a}" for a in addresses]
    print(_issued_line("server certificate", cert, desc))
    _clamp_note(cert, args.days, now)
    print(f"  SANs: {', '.join(sans)}")
    encrypted = " (encrypted)" if password else ""
    _print_files(
        [
            (out / "server.pem", "certificate"),
            (out / "server_key.pem", f"private key{encrypted} (mode 0600)"),
            (out / "serverChain.pem", "certificate + CA chain"),
        ]
    )
    print("broker settings:")
    env = [
        ("LISTENER_SSL_ENABLED", "true"),
        ("LISTENER_SSL_CREDENTIALS_TYPE", "PEM"),
        ("LISTENER_SSL_PEM_CERT", shlex.quote(_abs(out / "serverChain.pem"))),
        ("LISTENER_SSL_PEM_KEY", shlex.quote(_abs(out / "server_key.pem"))),
    ]
    if password:
        env.append(("LISTENER_SSL_PEM_KEY_PASSWORD", password.shown))
    _print_env(env)
    host = names[0] if names else str(addresses[0])
    print(
        f"clients: mosquitto_sub -h {host} -p 8883 --cafile "
        f"{shlex.quote(_abs(_root_file(args.ca)))} -t '#'"
    )
    return 0


_SAFE_NAME = re.compile(r"[A-Za-z0-9_@+=.,-][A-Za-z0-9 _@+=.,-]*")


def credentials_json(name: str, cn: str, client_type: str) -> str:
    """TBMQ's X_509 client credential for the client certificate ``cn`` (all topics)."""
    value = {
        "certCnPattern": cn,
        "certCnIsRegex": False,
        "authRulesMapping": {
            f"^{re.escape(cn)}$": {"pubAuthRulePatterns": [".*"], "subAuthRulePatterns": [".*"]}
        },
    }
    document = {
        "name": name,
        "clientType": client_type,
        "credentialsType": "X_509",
        "credentialsValue": json.dumps(value),
    }
    return json.dumps(document, indent=2) + "\n"


def _certs_client(args: argparse.Namespace) -> int:
    from pytbmq.tls.issue import client_certificate

    now = _now()
    name = args.name or args.cn
    if not _SAFE_NAME.fullmatch(name) or name in (".", ".."):
        option = "--name" if args.name else "--cn"
        raise ToolError(
            f"{option} {name!r} cannot be used as a file name: give --name with letters, "
            "digits and . _ - @ + = , only"
        )
    password = secret(args.key_password, "--key-password")
    issuer = load_authority(args.ca, secret(args.ca_key_password, "--ca-key-password"), now)
    out = Path(args.out)
    key, desc = _new_key(args)
    cert = client_certificate(issuer, key, args.cn, args.days, now)
    files = {
        "cert": out / f"{name}.pem",
        "key": out / f"{name}_key.pem",
        "chain": out / f"{name}_chain.pem",
        "json": out / f"{name}_credentials.json",
    }
    write_files(
        [
            OutFile(files["cert"], _pem(cert)),
            OutFile(files["key"], _key_pem(key, password), True),
            OutFile(files["chain"], _pem(cert, *issuer.chain)),
            OutFile(files["json"], credentials_json(name, args.cn, args.client_type).encode()),
        ],
        args.force,
    )
    print(_issued_line("client certificate", cert, desc))
    _clamp_note(cert, args.days, now)
    encrypted = " (encrypted)" if password else ""
    _print_files(
        [
            (files["cert"], "certificate"),
            (files["key"], f"private key{encrypted} (mode 0600)"),
            (files["chain"], "certificate + CA chain: what the client presents"),
            (files["json"], "X_509 credential (pytbmq credentials add --json FILE)"),
        ]
    )
    print(
        f"connect: mosquitto_pub -h HOST -p 8883 --cafile "
        f"{shlex.quote(_abs(_root_file(args.ca)))} --cert {shlex.quote(_abs(files['chain']))} "
        f"--key {shlex.quote(_abs(files['key']))} -t test -m hello"
    )
    return 0


# --------------------------------------------------------------------------- keystore


def _store_type(declared: str | None, path: Path, data: bytes | None) -> tuple[str, str]:
    """(type, where it came from) for a keystore path."""
    from pytbmq.tls.keystore import detect_type

    if declared:
        return declared, "--type"
    if data is not None:
        found = detect_type(data)
        if found in ("JKS", "PKCS12"):
            return found, "detected"
    if path.suffix.lower() in (".jks", ".ks", ".keystore"):
        return "JKS", "from the file name"
    return "PKCS12", "from the file name" if path.suffix.lower() in (".p12", ".pfx") else "default"


def _ca_files(values: Sequence[str]) -> list[tuple[str, bytes]]:
    from pytbmq.tls.material import read_file

    out: list[tuple[str, bytes]] = []
    for value in values:
        path = Path(value)
        if path.is_dir():
            path = _root_file(value)
        out.append((str(path), read_file(str(path), "--ca", "CA certificate(s)")))
    return out


def _chain_and_extras(
    leaf: x509.Certificate, pool: list[x509.Certificate]
) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
    """The issuer path of ``leaf`` through ``pool``, and the certificates not on it."""
    from cryptography.hazmat.primitives import hashes

    from pytbmq.tls.check import signed_by

    chain = [leaf]
    rest = list(pool)
    current = leaf
    while current.subject != current.issuer:
        issuer = next(
            (c for c in rest if c.subject == current.issuer and signed_by(current, c)), None
        )
        if issuer is None:
            break
        chain.append(issuer)
        rest.remove(issuer)
        current = issuer
    seen = {c.fingerprint(hashes.SHA256()) for c in chain}
    extras: list[x509.Certificate] = []
    for cert in rest:
        fp = cert.fingerprint(hashes.SHA256())
        if fp not in seen:
            seen.add(fp)
            extras.append(cert)
    return chain, extras


def _keystore_create(args: argparse.Namespace) -> int:
    from pytbmq.tls.keystore import KeyEntry, dump_jks, dump_pkcs12, load_keystore, select_key
    from pytbmq.tls.material import (
        check_validity,
        load_pem_certificates,
        order_chain,
        read_file,
    )

    out = Path(args.out)
    store_type, origin = _store_type(args.type, out, None)
    store_pw = secret(args.store_password, "--store-password")
    key_pw = secret(args.key_password, "--key-password")
    pem_pw = secret(args.pem_key_password, "--pem-key-password")
    assert store_pw is not None
    if not store_pw.value:
        raise ToolError("--store-password must not be empty")
    if store_type == "PKCS12" and key_pw is not None and key_pw.value != store_pw.value:
        raise ToolError(
            "--key-password: a PKCS12 key is protected by the store password (keytool and "
            "openssl require it); omit --key-password, and set LISTENER_SSL_KEY_PASSWORD to "
            "the store password"
        )
    cert_data = read_file(args.cert, "--cert", "certificate (PEM)")
    certs = load_pem_certificates(cert_data, "--cert", args.cert)
    if not certs:
        raise ToolError(f"--cert: {args.cert} holds no PEM certificate")
    key = _load_key(cert_data, args.cert, pem_pw, "--pem-key-password")
    key_file = args.cert
    if key is None:
        if not args.key:
            raise ToolError(
                f"--key: {args.cert} holds no private key: give the key file with --key"
            )
        key = _load_key(
            read_file(args.key, "--key", "private key (PEM)"),
            args.key,
            pem_pw,
            "--pem-key-password",
        )
        key_file = args.key
        if key is None:
            raise ToolError(f"--key: {args.key} holds no PEM private key")
    ordered = order_chain(certs, key, "--cert", "--key", f"key in {key_file}")
    pool = list(ordered[1:])
    for path, data in _ca_files(args.ca):
        found = load_pem_certificates(data, "--ca", path)
        if not found:
            raise ToolError(f"--ca: {path} holds no PEM certificate")
        pool += found
    chain, extras = _chain_and_extras(ordered[0], pool)
    warning = check_validity(chain[0], "--cert", args.cert, _now())
    trusted = [(f"ca-{i}" if i > 1 else "ca", c) for i, c in enumerate(extras, 1)]
    entry = KeyEntry(args.alias, key, tuple(chain))
    if store_type == "JKS":
        data = dump_jks([entry], trusted, store_pw.value, key_pw.value if key_pw else None)
    else:
        data = dump_pkcs12(entry, trusted, store_pw.value)
    # Read it back as the broker will, before anything is written.
    effective_key_pw = key_pw if key_pw is not None and store_type == "JKS" else store_pw
    select_key(load_keystore(data, store_type, store_pw.value, effective_key_pw.value), args.alias)
    write_files([OutFile(out, data, True)], args.force)
    alias = args.alias.lower() if store_type == "JKS" else args.alias
    print(f"{store_type} keystore ({origin}) {_abs(out)} (mode 0600):")
    print(f"  {alias}: PrivateKeyEntry, chain of {len(chain)}")
    for i, cert in enumerate(chain):
        print(f"    [{i}] {_subject(cert)}, expires {_expires(cert)}")
    for name, cert in trusted:
        print(f"  {name}: trustedCertEntry {_subject(cert)} (not in the key's chain)")
    if warning:
        print(f"warning: {warning}")
    if len(store_pw.value) < 6:
        print(
            "note: keytool refuses to create stores with passwords under 6 characters "
            "(it reads them)"
        )
    print("broker settings:")
    _print_env(
        [
            ("LISTENER_SSL_ENABLED", "true"),
            ("LISTENER_SSL_CREDENTIALS_TYPE", "KEYSTORE"),
            ("LISTENER_SSL_KEY_STORE_TYPE", store_type),
            ("LISTENER_SSL_KEY_STORE", shlex.quote(_abs(out))),
            ("LISTENER_SSL_KEY_STORE_PASSWORD", store_pw.shown),
            ("LISTENER_SSL_KEY_ALIAS", shlex.quote(alias)),
            ("LISTENER_SSL_KEY_PASSWORD", effective_key_pw.shown),
        ]
    )
    return 0


def _keystore_import(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives import hashes

    from pytbmq.tls.keystore import (
        KeystoreError,
        add_trusted_certificate,
        all_certificates,
        dump_jks,
        dump_pkcs12,
        load_keystore,
    )
    from pytbmq.tls.material import load_pem_certificates, read_file

    path = Path(args.keystore)
    store_pw = secret(args.store_password, "--store-password")
    assert store_pw is not None
    certs = load_pem_certificates(
        read_file(args.cert, "--cert", "certificate (PEM)"), "--cert", args.cert
    )
    if not certs:
        raise ToolError(f"--cert: {args.cert} holds no PEM certificate")
    aliases = [args.alias] + [f"{args.alias}-{i}" for i in range(2, len(certs) + 1)]
    existing = path.read_bytes() if path.exists() else None
    store_type, origin = _store_type(args.type, path, existing)
    if existing is None:
        if not store_pw.value:
            raise ToolError("--store-password must not be empty")
        trusted = list(zip(aliases, certs, strict=True))
        if store_type == "JKS":
            data = dump_jks([], trusted, store_pw.value, None)
        else:
            data = dump_pkcs12(None, trusted, store_pw.value)
        write_files([OutFile(path, data)], force=False)
        print(f"created {store_type} truststore ({origin}) {_abs(path)}:")
    else:
        data = existing
        try:
            store = load_keystore(data, store_type, store_pw.value, None)
        except KeystoreError as exc:
            raise ToolError(f"--keystore {path}: {exc}") from None
        known = {c.fingerprint(hashes.SHA256()) for c in all_certificates(store)}
        for alias, cert in zip(aliases, certs, strict=True):
            if cert.fingerprint(hashes.SHA256()) in known:
                print(
                    f"note: {_subject(cert)} is already in the keystore; adding it as {alias} too"
                )
            try:
                data = add_trusted_certificate(data, store_type, store_pw.value, alias, cert)
            except KeystoreError as exc:
                raise ToolError(f"--keystore {path}: {exc}") from None
        mode = path.stat().st_mode & 0o777
        write_atomically(path, data, mode)
        print(f"updated {store_type} keystore {_abs(path)} (existing entries kept as they were):")
    for alias, cert in zip(aliases, certs, strict=True):
        shown = alias.lower() if store_type == "JKS" else alias
        print(f"  {shown}: trustedCertEntry {_subject(cert)}, expires {_expires(cert)}")
    print("as the broker's truststore for client certificates:")
    _print_env(
        [
            ("LISTENER_SSL_TRUSTSTORE", shlex.quote(_abs(path))),
            ("LISTENER_SSL_TRUSTSTORE_TYPE", store_type),
            ("LISTENER_SSL_TRUSTSTORE_PASSWORD", store_pw.shown),
        ]
    )
    return 0


def _keystore_list(args: argparse.Namespace) -> int:
    from pytbmq.tls.issue import describe_key
    from pytbmq.tls.keystore import KeystoreError, load_keystore
    from pytbmq.tls.material import read_file

    path = Path(args.keystore)
    store_pw = secret(args.store_password, "--store-password")
    key_pw = secret(args.key_password, "--key-password")
    assert store_pw is not None
    data = read_file(args.keystore, "FILE", "keystore")
    store_type, _ = _store_type(args.type, path, data)
    try:
        store = load_keystore(data, store_type, store_pw.value, key_pw.value if key_pw else None)
    except KeystoreError as exc:
        raise ToolError(f"{path}: {exc}") from None
    count = len(store.keys) + len(store.locked_aliases) + len(store.trusted)
    print(f"{_abs(path)}: {store.kind} keystore, {count} entr{'y' if count == 1 else 'ies'}")
    now = _now()
    for entry in store.keys:
        print(
            f"{entry.alias}: PrivateKeyEntry, {describe_key(entry.private_key)}, "
            f"chain of {len(entry.chain)}"
        )
        for i, cert in enumerate(entry.chain):
            print(f"  [{i}] {_subject(cert)}")
            print(f"      {_issuer(cert)}, expires {_when(cert, now)}")
    for alias in store.locked_aliases:
        print(
            f"{alias}: PrivateKeyEntry, locked: its key password differs from "
            f"{'--key-password' if key_pw else 'the store password'} (give it with --key-password)"
        )
    for alias, cert in store.trusted:
        shown = alias or "(no alias)"
        print(f"{shown}: trustedCertEntry")
        print(f"  {_subject(cert)}")
        print(f"      {_issuer(cert)}, expires {_when(cert, now)}")
    return 0


def _when(cert: x509.Certificate, now: datetime.datetime) -> str:
    days = (cert.not_valid_after_utc - now).days
    state = f"in {days} days" if cert.not_valid_after_utc > now else "EXPIRED"
    return f"{_expires(cert)} ({state})"


# --------------------------------------------------------------------------- tls check


def _tls_check(args: argparse.Namespace) -> int:
    if args.connect:
        return _tls_probe(args)
    from pytbmq.config import load_settings
    from pytbmq.tls.check import check_listener, enabled_tls_listeners

    settings = load_settings(config_file=getattr(args, "config", None))
    names = enabled_tls_listeners(settings)
    if not names:
        raise ToolError(
            "no TLS listener is enabled: set LISTENER_SSL_ENABLED=true (and its LISTENER_SSL_* "
            "settings) in the environment or the --config file"
        )
    failed = 0
    for name in names:
        report = check_listener(settings, name)
        print(report.render())
        if not report.ok:
            failed += 1
            print(f"pytbmq tls check: {report.error}", file=sys.stderr)
    total = len(names)
    if failed:
        print(f"tls check: {failed} of {total} TLS listener(s) would not start")
        return 1
    print(f"tls check: {total} TLS listener(s) OK")
    return 0


def _tls_probe(args: argparse.Namespace) -> int:
    from pytbmq.tls.check import ProbeOptions, probe

    host, sep, port_text = str(args.connect).rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ToolError(f"--connect {args.connect!r}: expected HOST:PORT, e.g. localhost:8883")
    if args.key and not args.cert:
        raise ToolError("--key needs --cert")
    password = secret(args.key_password, "--key-password")
    report = probe(
        ProbeOptions(
            host=host,
            port=int(port_text),
            cafile=args.cafile,
            cert=args.cert,
            key=args.key,
            key_password=password.value if password else None,
            servername=args.servername,
            timeout=args.timeout,
        )
    )
    print(report.render())
    if not report.ok:
        print(f"pytbmq tls check: {report.error}", file=sys.stderr)
        return 1
    return 0
