"""SSL contexts for TLS listeners: built from checked material, self-tested, reloadable.

`TlsContextHolder` is what a TLS listener asks for the context of each new handshake:
it builds the first context at startup (any problem → TlsConfigError naming the
setting, so the listener never opens), and on reload builds and self-tests a complete
new context before swapping it in, so a bad file never replaces working material.
Live connections keep the context they were accepted with. Called by the broker and
pytbmq.listeners.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import ssl
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pytbmq.errors import TlsConfigError
from pytbmq.tls.material import (
    ServerMaterial,
    TlsListenerConfig,
    load_material,
    subject_text,
)

log = logging.getLogger(__name__)

TLS13_SUITES = frozenset(
    {
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_AES_128_CCM_SHA256",
        "TLS_AES_128_CCM_8_SHA256",
    }
)
_TLS13_DEFAULTS = frozenset(
    {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
)
_KX = {
    "ECDHE_ECDSA": "ECDHE-ECDSA",
    "ECDHE_RSA": "ECDHE-RSA",
    "DHE_RSA": "DHE-RSA",
    "DHE_DSS": "DHE-DSS",
    "RSA": "",
    "PSK": "PSK",
    "ECDHE_PSK": "ECDHE-PSK",
    "DHE_PSK": "DHE-PSK",
    "RSA_PSK": "RSA-PSK",
}
_ENC = [
    (re.compile(r"(AES|ARIA|CAMELLIA)_(128|256)_GCM_(SHA256|SHA384)"), r"\1\2-GCM-\3"),
    (re.compile(r"(AES|CAMELLIA)_(128|256)_CBC_(SHA256|SHA384)"), r"\1\2-\3"),
    (re.compile(r"(AES|CAMELLIA)_(128|256)_CBC_SHA"), r"\1\2-SHA"),
    (re.compile(r"AES_(128|256)_CCM_8"), r"AES\1-CCM8"),
    (re.compile(r"AES_(128|256)_CCM"), r"AES\1-CCM"),
    (re.compile(r"CHACHA20_POLY1305_SHA256"), "CHACHA20-POLY1305"),
]


def openssl_cipher_name(name: str) -> str | None:
    """OpenSSL's name for an IANA/Java suite name (TLS_ECDHE_RSA_WITH_...), else None."""
    m = re.fullmatch(r"TLS_(.+?)_WITH_(.+)", name)
    if m is None:
        return None
    kx = _KX.get(m.group(1))
    if kx is None:
        return None
    for pattern, repl in _ENC:
        if pattern.fullmatch(m.group(2)):
            enc = pattern.sub(repl, m.group(2))
            return f"{kx}-{enc}" if kx else enc
    return None


def _available_ciphers() -> dict[str, dict[str, object]]:
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    probe.set_ciphers("ALL:@SECLEVEL=0")
    return {str(c["name"]): dict(c) for c in probe.get_ciphers()}


def resolve_cipher_suites(text: str, var: str, min_tls13: bool) -> tuple[str | None, list[str]]:
    """OpenSSL cipher string for the TLS 1.2 suites listed (None = defaults), and warnings."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        return None, []
    available = _available_ciphers()
    tls12: list[str] = []
    tls13: list[str] = []
    for name in names:
        if name in TLS13_SUITES:
            tls13.append(name)
            continue
        openssl = openssl_cipher_name(name) if name.startswith("TLS_") else name
        if openssl is None or openssl not in available:
            raise TlsConfigError(
                f"{var}: unknown or unsupported cipher suite {name!r} "
                "(use IANA names such as TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 or "
                "OpenSSL names such as ECDHE-ECDSA-AES128-GCM-SHA256)"
            )
        tls12.append(openssl)
    warnings: list[str] = []
    if tls13 and set(tls13) != {
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256",
    }:
        warnings.append(
            f"{var}: TLS 1.3 suites cannot be narrowed here; TLS 1.3 connections use "
            "OpenSSL's standard TLS 1.3 suites"
        )
    if not tls12:
        if not min_tls13:
            raise TlsConfigError(
                f"{var} lists only TLS 1.3 suites, so no TLS 1.2 client could connect: add "
                "TLS 1.2 suites or set the protocol to TLSv1.3"
            )
        return None, warnings
    if min_tls13:
        warnings.append(f"{var}: TLS 1.2 suites are listed but only TLS 1.3 is enabled")
    return ":".join(tls12), warnings


def _key_auth(material: ServerMaterial) -> str:
    if isinstance(material.key, ec.EllipticCurvePrivateKey):
        return "auth-ecdsa"
    if isinstance(material.key, rsa.RSAPrivateKey):
        return "auth-rsa"
    return "auth-any"


def _pem(certs: Iterable[x509.Certificate]) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def _with_memory_file(data: bytes, use: Callable[[str], object]) -> None:
    """Give OpenSSL `data` as a file that exists only in memory (Linux memfd)."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("pytbmq-tls", 0)
        try:
            os.write(fd, data)
            use(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    fd, name = tempfile.mkstemp(prefix="pytbmq-tls-")
    try:
        os.write(fd, data)
        os.close(fd)
        use(name)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)


def _load_cert_chain(ctx: ssl.SSLContext, material: ServerMaterial) -> None:
    """Hand the chain and key to OpenSSL without ever writing the key to disk in clear."""
    key_pem = material.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    if hasattr(os, "memfd_create"):
        _with_memory_file(_pem(material.chain).encode() + key_pem, ctx.load_cert_chain)
        return
    # Portable fallback: a 0600 temporary file holding the key re-encrypted with a
    # one-time password, removed as soon as OpenSSL has read it.
    password = os.urandom(24).hex()
    enc = material.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password.encode()),
    )
    _with_memory_file(
        _pem(material.chain).encode() + enc,
        lambda path: ctx.load_cert_chain(path, password=password),
    )


# TLS 1.2 suites of Mozilla's "intermediate" server profile (v5.7), the default when
# LISTENER_*_ENABLED_CIPHER_SUITES is empty. TLS 1.3 suites are OpenSSL's (all allowed).
MOZILLA_INTERMEDIATE_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-CHACHA20-POLY1305",
    )
)
# Key-exchange groups of the same profile. OpenSSL also offers X448 and P-521 by default.
KEY_EXCHANGE_GROUPS = b"X25519:P-256:P-384"
_SSL_CTRL_SET_GROUPS_LIST = 92


def restrict_groups(ctx: ssl.SSLContext) -> str:
    """Limit the key-exchange groups to X25519, P-256 and P-384; returns what was set.

    Python's ssl module has no call for a group list, so OpenSSL's
    SSL_CTX_set1_groups_list is called through ctypes on the context's SSL_CTX (the first
    field after the object header of CPython's PySSLContext, stable since 3.6). If that is
    not possible, the context is limited to P-256 with set_ecdh_curve (also compliant;
    TLS 1.3 clients leading with X25519 then need one more round trip).
    """
    try:
        import ctypes

        lib = ctypes.CDLL(ssl._ssl.__file__)  # type: ignore[attr-defined]
        ctrl = lib.SSL_CTX_ctrl
        ctrl.restype = ctypes.c_long
        ctrl.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_char_p)
        ssl_ctx = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
        if not ssl_ctx or ctrl(ssl_ctx, _SSL_CTRL_SET_GROUPS_LIST, 0, KEY_EXCHANGE_GROUPS) != 1:
            raise OSError("SSL_CTX_set1_groups_list failed")
    except (OSError, AttributeError, ValueError):
        ctx.set_ecdh_curve("prime256v1")
        return "P-256"
    return KEY_EXCHANGE_GROUPS.decode()


# OpenSSL's X509_V_FLAG_NO_CHECK_TIME: the ssl module has no name for it.
X509_V_FLAG_NO_CHECK_TIME = ssl.VerifyFlags(0x200000)


def build_context(cfg: TlsListenerConfig, material: ServerMaterial) -> ssl.SSLContext:
    """A server SSLContext for this listener; TlsConfigError if the settings cannot work."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    min_tls13 = cfg.protocol == "TLSv1.3"
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if min_tls13 else ssl.TLSVersion.TLSv1_2
    # No session tickets: a resumed session carries no client chain (X.509 auth needs it).
    ctx.options |= ssl.OP_NO_TICKET | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    ctx.num_tickets = 0
    var = cfg.var("ENABLED_CIPHER_SUITES")
    ciphers, warnings = resolve_cipher_suites(cfg.cipher_suites, var, min_tls13)
    for text in warnings:
        log.warning("%s", text)
    if ciphers is None:
        # Mozilla's "intermediate" profile instead of CPython's default string, which
        # still offers CBC-mode suites.
        ciphers = MOZILLA_INTERMEDIATE_CIPHERS
    restrict_groups(ctx)
    if ciphers is not None:
        try:
            ctx.set_ciphers(ciphers)
        except ssl.SSLError:
            raise TlsConfigError(f"{var}: OpenSSL accepts none of {cfg.cipher_suites!r}") from None
        if not min_tls13:
            auth = _key_auth(material)
            usable = [
                c
                for c in ctx.get_ciphers()
                if c["protocol"] != "TLSv1.3" and c["auth"] in (auth, "auth-any")
            ]
            if not usable:
                kind = "an EC" if auth == "auth-ecdsa" else "an RSA"
                raise TlsConfigError(
                    f"{var}: none of the TLS 1.2 suites listed can be used with {kind} server "
                    f"key ({material.source})"
                )
    try:
        _load_cert_chain(ctx, material)
    except ssl.SSLError as exc:
        why = exc.reason or exc
        raise TlsConfigError(
            f"{cfg.var('PEM_CERT')}: OpenSSL refused the server certificate or key: {why}"
        ) from None
    mode = cfg.client_auth
    ctx.verify_mode = {
        "NONE": ssl.CERT_NONE,
        "REQUESTED": ssl.CERT_OPTIONAL,
        "REQUIRED": ssl.CERT_REQUIRED,
    }[mode]
    if mode != "NONE":
        if material.trust:
            ctx.load_verify_locations(cadata=_pem(material.trust))
        # Any trusted certificate is an anchor, as in TBMQ (Java PKIX), not only roots.
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        if cfg.skip_client_cert_validity:
            ctx.verify_flags |= X509_V_FLAG_NO_CHECK_TIME
        if material.crls:
            crl_pem = "".join(
                c.public_bytes(serialization.Encoding.PEM).decode() for c in material.crls
            )
            # cadata takes certificates only; CRLs must come from a file.
            _with_memory_file(crl_pem.encode(), lambda path: ctx.load_verify_locations(path))
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    self_test(ctx, cfg)
    return ctx


def self_test(ctx: ssl.SSLContext, cfg: TlsListenerConfig) -> None:
    """Complete an in-memory handshake at each enabled TLS version, or refuse the context."""
    mode = ctx.verify_mode
    ctx.verify_mode = ssl.CERT_NONE  # the probe client has no certificate
    try:
        versions = [ssl.TLSVersion.TLSv1_3]
        if ctx.minimum_version <= ssl.TLSVersion.TLSv1_2:
            versions.insert(0, ssl.TLSVersion.TLSv1_2)
        for version in versions:
            error = _handshake_in_memory(ctx, version)
            if error is not None:
                shown = version.name[4:].replace("_", ".")
                raise TlsConfigError(
                    f"{cfg.var('PROTOCOL')}={cfg.protocol}: a TLS {shown} "
                    f"test handshake with these settings fails ({error}); check "
                    f"{cfg.var('ENABLED_CIPHER_SUITES')} and the server key type"
                )
    finally:
        ctx.verify_mode = mode


def _handshake_in_memory(server_ctx: ssl.SSLContext, version: ssl.TLSVersion) -> str | None:
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    client_ctx.minimum_version = client_ctx.maximum_version = version
    with contextlib.suppress(ssl.SSLError):
        client_ctx.set_ciphers("ALL:@SECLEVEL=0")
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_side=False)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done_c = done_s = False
    for _ in range(20):
        try:
            if not done_c:
                client.do_handshake()
                done_c = True
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            return str(exc.reason or exc)
        s_in.write(c_out.read())
        try:
            if not done_s:
                server.do_handshake()
                done_s = True
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            return str(exc.reason or exc)
        c_in.write(s_out.read())
        if done_c and done_s:
            return None
    return "no progress"


def files_digest(paths: Iterable[Path]) -> str:
    """A digest of the files' contents (missing files included), to notice any change."""
    h = hashlib.sha256()
    for path in paths:
        h.update(str(path).encode() + b"\0")
        try:
            h.update(path.read_bytes())
        except OSError as exc:
            h.update(f"<{type(exc).__name__}>".encode())
        h.update(b"\0")
    return h.hexdigest()


class TlsContextHolder:
    """The current SSLContext of one TLS listener, swapped whole on a successful reload."""

    def __init__(self, cfg: TlsListenerConfig) -> None:
        self.cfg = cfg
        self.material = load_material(cfg)
        self.context = build_context(cfg, self.material)
        self._digest = files_digest(cfg.watched_files())
        self.reloads = 0
        self.failed_reloads = 0
        self.loaded_at = time.time()  # when the material in use was loaded (wall clock)
        self.last_reload_at: float | None = None  # the last reload attempt, if any
        self.last_reload_reason = ""  # what triggered it: "SIGHUP", "files changed"
        self.last_reload_error: str | None = None  # why it failed (None: it worked)

    def describe(self) -> str:
        leaf = self.material.leaf
        return (
            f"certificate {subject_text(leaf)} from {self.material.source}, expires "
            f"{leaf.not_valid_after_utc:%Y-%m-%d}; client certificates {self.cfg.client_auth}, "
            f"{len(self.material.trust)} trust anchor(s)"
            + (f", {len(self.material.crls)} CRL(s)" if self.material.crls else "")
        )

    def changed(self) -> bool:
        return files_digest(self.cfg.watched_files()) != self._digest

    def reload(self, reason: str) -> bool:
        """Validate the files again and swap the context in; keep the old one on failure."""
        digest = files_digest(self.cfg.watched_files())
        self.last_reload_at = time.time()
        self.last_reload_reason = reason
        try:
            material = load_material(self.cfg)
            context = build_context(self.cfg, material)
        except TlsConfigError as exc:
            self.failed_reloads += 1
            self.last_reload_error = str(exc)
            self._digest = digest  # do not retry the same broken files every interval
            log.error(
                "%s: TLS reload failed (%s), keeping the current material: %s",
                self.cfg.name,
                reason,
                exc,
            )
            return False
        self.material, self.context, self._digest = material, context, digest
        self.reloads += 1
        self.loaded_at = self.last_reload_at
        self.last_reload_error = None
        log.info("%s: TLS material reloaded (%s): %s", self.cfg.name, reason, self.describe())
        return True
