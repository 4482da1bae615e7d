"""A real browser: headless Chromium runs MQTT.js over WS and WSS against the broker.

The page (tests/browser/page.html) and MQTT.js's prebuilt browser bundle are served from
a local HTTP server on a free port, whose origin is the only one the broker allows
(WS_ALLOWED_ORIGINS). For MQTT 3.1.1 and 5 over WS and over WSS the page connects,
subscribes, gets its own message back, publishes to a Python subscriber and receives
what a Python publisher sends; it reports each step to the server (POST /event), which is
what the test waits on. The WSS certificate is trusted through Chromium's
--ignore-certificate-errors-spki-list, pinned to the test server key.

MQTT.js comes from npm (`npm install` in tests/browser, once); Chromium is Debian's
`chromium` (scripts/test installs it when run as root). Without node/npm or Chromium, or
when npm cannot fetch the package, the test is skipped and says why.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import json
import os
import queue
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from .conftest import WS_ENV
from .helpers import V5, BrokerProcess, ClientPool, uid
from .pki import Pki, wss_env

BROWSER_DIR = Path(__file__).resolve().parents[1] / "browser"
BUNDLE = BROWSER_DIR / "node_modules" / "mqtt" / "dist" / "mqtt.min.js"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CASES = ("ws-v311", "ws-v5", "wss-v311", "wss-v5")


@pytest.fixture(scope="session")
def mqtt_js() -> Path:
    """MQTT.js's browser bundle, installed with npm into tests/browser on first use."""
    if BUNDLE.is_file():
        return BUNDLE
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip("node and npm are not installed (apt-get install nodejs npm)")
    result = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--no-package-lock", "--loglevel=error"],
        cwd=BROWSER_DIR,
        capture_output=True,
        text=True,
        timeout=100,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0 or not BUNDLE.is_file():
        pytest.skip(f"npm install of MQTT.js failed: {(result.stderr or result.stdout)[-500:]}")
    return BUNDLE


@pytest.fixture(scope="session")
def chromium() -> str:
    if CHROMIUM is None:
        pytest.skip(
            "Chromium is not installed (apt-get install chromium; scripts/test does it as root)"
        )
    return CHROMIUM


class PageServer(http.server.ThreadingHTTPServer):
    """Serves the page and the bundle; queues every event the page posts."""

    daemon_threads = True

    def __init__(self, bundle: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.bundle = bundle
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: PageServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/":
            self._send(200, "text/html; charset=utf-8", (BROWSER_DIR / "page.html").read_bytes())
        elif path == "/mqtt.min.js":
            self._send(200, "text/javascript", self.server.bundle.read_bytes())
        else:
            self._send(404, "text/plain", b"not found")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.server.events.put(json.loads(self.rfile.read(length) or b"{}"))
        self._send(204, "text/plain", b"")

    def _send(self, status: int, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def page_server(mqtt_js: Path) -> Iterator[PageServer]:
    server = PageServer(mqtt_js)
    thread = threading.Thread(target=server.serve_forever, name="page-server", daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def spki_pin(pki: Pki) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of the test server key, for Chromium."""
    der = pki.server.cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@contextlib.contextmanager
def headless_chromium(
    binary: str, url: str, pin: str, profile: Path
) -> Iterator[subprocess.Popen[bytes]]:
    command = [
        binary,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        f"--user-data-dir={profile}",
        f"--ignore-certificate-errors-spki-list={pin}",
        url,
    ]
    log = (profile.parent / "chromium.log").open("wb")
    proc = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
    )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


def _next_event(
    server: PageServer, proc: subprocess.Popen[bytes], timeout: float = 30.0
) -> dict[str, Any]:
    try:
        return server.events.get(timeout=timeout)
    except queue.Empty:
        state = "running" if proc.poll() is None else f"exited with {proc.returncode}"
        raise AssertionError(
            f"the page reported nothing within {timeout}s (Chromium {state})"
        ) from None


def test_browser_mqtt_js_over_ws_and_wss(
    chromium: str,
    page_server: PageServer,
    start_broker,
    clients: ClientPool,
    pki: Pki,
    tmp_path: Path,
) -> None:
    # A browser asked for a client certificate (LISTENER_WSS_CLIENT_AUTH=REQUESTED) may
    # prompt its user; headless Chromium gives up instead, so the page's listener asks none.
    broker: BrokerProcess = start_broker(
        **WS_ENV,
        **wss_env(pki, LISTENER_WSS_CLIENT_AUTH="NONE"),
        WS_ALLOWED_ORIGINS=page_server.origin,
    )
    run = uid()
    python_side = clients.connected(broker, V5)
    python_side.subscribe(f"browser/{run}/out/#", 1)
    url = (
        f"{page_server.origin}/?run={run}"
        f"&ws=ws://127.0.0.1:{broker.ports['ws']}/mqtt"
        f"&wss=wss://127.0.0.1:{broker.ports['wss']}/mqtt"
    )
    results: dict[str, dict[str, Any]] = {}
    with headless_chromium(chromium, url, spki_pin(pki), tmp_path / "profile") as proc:
        while True:
            event = _next_event(page_server, proc)
            kind = event.get("kind")
            if kind == "ready":
                name = event["name"]
                msg = python_side.expect_message(timeout=10)
                assert (msg.topic, msg.payload) == (
                    f"browser/{run}/out/{name}",
                    f"hello from browser {name}".encode(),
                )
                python_side.publish(f"browser/{run}/in/{name}", f"from python {name}", qos=1)
            elif kind == "result":
                results[event["name"]] = event
            elif kind == "done":
                break
            elif kind == "error":
                raise AssertionError(f"JavaScript error in the page: {event}")
    assert list(results) == list(CASES)
    for name in CASES:
        result = results[name]
        assert result.get("ok"), f"{name}: {result}"
        assert result["echoed"] == f"echo {name}"
        assert result["received"] == f"from python {name}"
    logs = "\n".join(broker.logs())
    for listener, version in (("ws", "3.1.1"), ("ws", "5"), ("wss", "3.1.1"), ("wss", "5")):
        assert f"({listener}, MQTT {version}, " in logs, f"no {listener} MQTT {version} connection"
    assert "refused" not in logs
