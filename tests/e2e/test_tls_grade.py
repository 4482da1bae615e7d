"""The MQTTS listener, with its default TLS settings, graded by sslyze against Mozilla's
"intermediate" server-side TLS profile (https://wiki.mozilla.org/Security/Server_Side_TLS).

sslyze scans the real broker (protocol versions, TLS 1.2 and 1.3 cipher suites, key
exchange groups, certificate, Heartbleed, ROBOT, CCS injection, compression,
renegotiation, fallback SCSV, extended master secret) and its
``check_server_against_tls_configuration`` lists every deviation from the profile. The test
fails with that list, verbatim.

sslyze (every release up to 6.3.1) needs ``cryptography<47`` while pytbmq pins
cryptography 50, so sslyze cannot live in the project's virtual environment. The test
makes a separate one, once, from the pins in :data:`SSLYZE_REQUIREMENTS`, under
``$PYTBMQ_TEST_CACHE`` (default ``~/.cache/pytbmq-tests``), and runs the scan there as a
child process. ``PYTBMQ_SSLYZE_PYTHON=/path/to/python`` uses an interpreter that already
has sslyze instead. Creating the environment takes about 20 s the first time (pip from
PyPI); a scan takes about 2 s.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .helpers import BrokerProcess
from .pki import (
    Pki,
    pki_fixture,  # noqa: F401  (the session fixture ``pki``)
    ssl_port,
    tls_env,
    write,
)

#: sslyze and everything it pulls in, pinned (pip install --dry-run --report on Python 3.11).
SSLYZE_REQUIREMENTS = """\
sslyze==6.3.1
nassl==5.4.0
cryptography==46.0.7
cffi==2.1.1
pycparser==3.12
pydantic==2.14.4
pydantic_core==2.50.5
annotated-types==0.8.0
typing-inspection==0.4.5
typing_extensions==4.16.0
tls_parser==2.0.2
"""

#: Runs in sslyze's environment: argv[1] is a JSON request, stdout a JSON report.
SCAN_SCRIPT = r"""
import json, sys, warnings
from pathlib import Path

warnings.simplefilter("ignore")  # sslyze's bundled trust stores trip cryptography warnings

from sslyze import (
    CertificateInfoExtraArgument, ClientAuthenticationCredentials, Scanner,
    ScanCommandsExtraArguments, ServerNetworkConfiguration, ServerNetworkLocation,
    ServerScanRequest, ServerScanStatusEnum,
)
from sslyze.__version__ import __version__
from sslyze.mozilla_tls_profile.tls_config_checker import (
    SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER, MozillaTlsConfiguration,
    ServerNotCompliantWithTlsConfiguration, ServerScanResultIncomplete,
    TlsConfigurationEnum, check_server_against_tls_configuration,
)

req = json.loads(sys.argv[1])
client = None
if req.get("client_cert"):
    client = ClientAuthenticationCredentials(
        certificate_chain_path=Path(req["client_cert"]), key_path=Path(req["client_key"])
    )
request = ServerScanRequest(
    server_location=ServerNetworkLocation(
        hostname=req["host"], port=req["port"], ip_address=req["host"]
    ),
    network_configuration=ServerNetworkConfiguration(
        tls_server_name_indication=req["sni"], tls_client_auth_credentials=client
    ),
    scan_commands=set(SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER),
    scan_commands_extra_arguments=ScanCommandsExtraArguments(
        certificate_info=CertificateInfoExtraArgument(custom_ca_file=Path(req["ca"]))
    ),
)
scanner = Scanner()
scanner.queue_scans([request])
(result,) = list(scanner.get_results())
report = {"sslyze": __version__, "profile": req["profile"], "status": result.scan_status.name}
if result.scan_status != ServerScanStatusEnum.COMPLETED:
    report["error"] = str(result.connectivity_error_trace)
else:
    scan = result.scan_result
    report["accepted"] = {
        name: [c.cipher_suite.name for c in getattr(scan, name).result.accepted_cipher_suites]
        for name in (
            "ssl_2_0_cipher_suites", "ssl_3_0_cipher_suites", "tls_1_0_cipher_suites",
            "tls_1_1_cipher_suites", "tls_1_2_cipher_suites", "tls_1_3_cipher_suites",
        )
        if getattr(scan, name).result is not None
    }
    curves = scan.elliptic_curves.result
    report["curves"] = sorted(c.name for c in (curves.supported_curves or [])) if curves else None
    report["commands_failed"] = {
        cmd.value: f"{attempt.error_reason}: {attempt.error_trace}"
        for cmd in SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER
        for attempt in [getattr(scan, cmd.value)]
        if attempt.error_reason is not None
    }
    profile = MozillaTlsConfiguration.get(TlsConfigurationEnum(req["profile"]))
    try:
        check_server_against_tls_configuration(result, profile)
        report["issues"] = {}
    except ServerNotCompliantWithTlsConfiguration as exc:
        report["issues"] = exc.issues
    except ServerScanResultIncomplete as exc:
        report["error"] = f"incomplete scan: {exc}"
print(json.dumps(report))
"""

PROFILE = "intermediate"
VENV_TIMEOUT = 240
SCAN_TIMEOUT = 90


def _cache_root() -> Path:
    base = os.environ.get("PYTBMQ_TEST_CACHE")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "pytbmq-tests"


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _make_sslyze_venv() -> Path:
    """sslyze's virtual environment (made once per set of pins; safe to race)."""
    key = f"{sys.version_info[:2]}\n{SSLYZE_REQUIREMENTS}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    root = _cache_root()
    root.mkdir(parents=True, exist_ok=True)
    venv = root / f"sslyze-{digest}"
    done = venv / ".complete"
    with open(root / f"sslyze-{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists() and _venv_python(venv).exists():
            return _venv_python(venv)
        shutil.rmtree(venv, ignore_errors=True)
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [
                str(_venv_python(venv)),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-input",
                "-r",
                str(write(venv.parent / f"sslyze-{digest}.txt", SSLYZE_REQUIREMENTS.encode())),
            ],
        ]
        for step in steps:
            proc = subprocess.run(
                step,
                capture_output=True,
                text=True,
                timeout=VENV_TIMEOUT,
                stdin=subprocess.DEVNULL,
            )
            if proc.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                pytest.fail(
                    f"could not make sslyze's environment in {venv}: {' '.join(step)} exited "
                    f"{proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
                )
        done.write_text(SSLYZE_REQUIREMENTS)
        return _venv_python(venv)


@pytest.fixture(scope="session")
def sslyze_python() -> Path:
    override = os.environ.get("PYTBMQ_SSLYZE_PYTHON")
    if override:
        return Path(override)
    return _make_sslyze_venv()


def scan(python: Path, port: int, pki: Pki, client: tuple[Path, Path] | None) -> dict[str, Any]:
    """sslyze's report on the TLS listener at 127.0.0.1:``port``."""
    request = {
        "host": "127.0.0.1",
        "port": port,
        "sni": "localhost",
        "ca": str(pki.ca_pem),
        "client_cert": str(client[0]) if client else None,
        "client_key": str(client[1]) if client else None,
        "profile": PROFILE,
    }
    proc = subprocess.run(
        [str(python), "-c", SCAN_SCRIPT, json.dumps(request)],
        capture_output=True,
        text=True,
        timeout=SCAN_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, f"sslyze failed ({proc.returncode}):\n{proc.stderr[-5000:]}"
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return report


@pytest.fixture
def tls_broker(
    start_broker: Callable[..., BrokerProcess], pki: Pki
) -> Callable[[str], BrokerProcess]:
    """``tls_broker(kind)``: a broker whose MQTTS listener has its default settings and an
    ``ec`` (P-256) or ``rsa`` (2048-bit) server certificate, with the root CA appended."""

    def start(kind: str) -> BrokerProcess:
        ident = pki.server if kind == "ec" else pki.server_rsa
        cert = write(pki.dir / f"grade-{kind}-chain.pem", ident.cert_pem(), pki.root.cert_pem())
        key = write(pki.dir / f"grade-{kind}-key.pem", ident.key_pem())
        return start_broker(
            **tls_env(pki, LISTENER_SSL_PEM_CERT=str(cert), LISTENER_SSL_PEM_KEY=str(key))
        )

    return start


def _explain(report: dict[str, Any]) -> str:
    lines = [f"sslyze {report.get('sslyze')} vs Mozilla {report.get('profile')!r}:"]
    for key, text in sorted((report.get("issues") or {}).items()):
        lines.append(f"  {key}: {text}")
    if report.get("error"):
        lines.append(f"  scan error: {report['error']}")
    for cmd, text in sorted((report.get("commands_failed") or {}).items()):
        lines.append(f"  scan command {cmd} failed: {text[:300]}")
    accepted = report.get("accepted") or {}
    for version in ("tls_1_2_cipher_suites", "tls_1_3_cipher_suites"):
        if version in accepted:
            lines.append(f"  accepted {version}: {', '.join(accepted[version])}")
    lines.append(f"  key exchange groups accepted: {report.get('curves')}")
    lines.append(
        "  (the profile allows TLS 1.2 suites ECDHE/DHE with AES-GCM or ChaCha20-Poly1305 "
        "only, and the groups X25519, P-256, P-384; the listener's defaults are set in "
        "pytbmq.tls.context.build_context)"
    )
    return "\n".join(lines)


@pytest.mark.timeout(VENV_TIMEOUT + 120)  # the first run makes sslyze's environment
@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_tls_listener_meets_mozilla_intermediate(
    sslyze_python: Path, tls_broker: Callable[[str], BrokerProcess], pki: Pki, kind: str
) -> None:
    """The default TLS settings meet Mozilla's intermediate profile, with an EC and with
    an RSA server certificate. The listener requests (but does not require) a client
    certificate by default; sslyze's renegotiation check cannot answer such a request
    without one, so sslyze presents client1's."""
    broker = tls_broker(kind)
    report = scan(sslyze_python, ssl_port(broker), pki, pki.client("client1"))
    print(json.dumps(report, indent=1))
    assert broker.alive(), f"the broker died during the scan\n{broker.tail()}"
    assert report.get("status") == "COMPLETED" and "error" not in report, _explain(report)
    assert not report["issues"], _explain(report)
    assert not report["commands_failed"], _explain(report)
