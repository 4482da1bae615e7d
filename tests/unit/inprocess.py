"""A real Broker in the test's own process: its environment and its certificates.

Tests that need the event loop's real behaviour (uvloop's transports, TLS, reference
cycles, loop turns) start `pytbmq.broker.Broker` in-process with these settings: every
listener on 127.0.0.1 port 0, no admin API, a data folder under the test's tmp_path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

from pytbmq.cli import main as cli_main

LISTENERS = ("TCP", "WS", "SSL", "WSS")


def make_pki(d: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for localhost: (CA file, server chain, server key)."""
    assert cli_main(["certs", "ca", "--out", str(d / "ca"), "--days", "2"]) == 0
    argv = ["certs", "server", "--ca", str(d / "ca"), "--host", "localhost", "--out"]
    assert cli_main([*argv, str(d / "server"), "--days", "2"]) == 0
    return d / "ca" / "ca.pem", d / "server" / "serverChain.pem", d / "server" / "server_key.pem"


def broker_env(data_dir: Path, listeners: Iterable[str], chain: Path, key: Path) -> dict[str, str]:
    """Settings with exactly `listeners` enabled (names from LISTENERS), TLS from PEM."""
    wanted = set(listeners)
    env = {"PYTBMQ_DATA_DIR": str(data_dir), "PYTBMQ_LOG_LEVEL": "ERROR", "HTTP_ENABLED": "false"}
    for name in LISTENERS:
        env[f"LISTENER_{name}_ENABLED"] = "true" if name in wanted else "false"
        env[f"LISTENER_{name}_BIND_ADDRESS"] = "127.0.0.1"
        env[f"LISTENER_{name}_BIND_PORT"] = "0"
    for name in ("SSL", "WSS"):
        env[f"LISTENER_{name}_CREDENTIALS_TYPE"] = "PEM"
        env[f"LISTENER_{name}_PEM_CERT"] = str(chain)
        env[f"LISTENER_{name}_PEM_KEY"] = str(key)
    return env


class LoopTurns:
    """Counts event-loop iterations while started: a callback that schedules itself again
    with call_soon runs exactly once per iteration."""

    def __init__(self) -> None:
        self.n = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.call_soon(self._tick)

    def stop(self) -> None:
        self._loop = None

    def _tick(self) -> None:
        self.n += 1
        if self._loop is not None:
            self._loop.call_soon(self._tick)
