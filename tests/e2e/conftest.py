"""Fixtures of the end-to-end suite: broker processes and MQTT clients.

* ``broker``       - a broker with default settings shared by the tests of one module
                     (restarted if a test killed or crashed it; a crash fails that test).
* ``start_broker`` - factory ``start_broker(**env)`` for a broker with its own settings,
                     stopped at the end of the test.
* ``clients``      - a :class:`ClientPool` creating paho / raw-socket clients that are all
                     disconnected and closed at the end of the test.
* ``transport``    - how ``clients`` reach the broker: ``tcp`` unless the test (or its
                     module) is marked ``@pytest.mark.transports``; then the test runs once
                     per transport of ``PYTBMQ_E2E_TRANSPORTS`` (default ``tcp,ws,wss``):
                     paho's websockets transport and raw clients over WebSocket, to the
                     broker's WS / WSS listeners. ``transports("tcp", "ws")`` narrows it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .helpers import TRANSPORTS, BrokerProcess, ClientPool
from .pki import Pki, wss_env
from .pki import pki_fixture as pki_fixture  # the session fixture ``pki``

TRANSPORTS_ENV = "PYTBMQ_E2E_TRANSPORTS"
WS_ENV = {
    "LISTENER_WS_ENABLED": "true",
    "LISTENER_WS_BIND_ADDRESS": "127.0.0.1",
    "LISTENER_WS_BIND_PORT": "0",
}


def selected_transports() -> list[str]:
    """The transports of PYTBMQ_E2E_TRANSPORTS (comma-separated; default all three)."""
    raw = os.environ.get(TRANSPORTS_ENV, ",".join(TRANSPORTS))
    chosen = [t.strip().lower() for t in raw.split(",") if t.strip()]
    unknown = sorted(set(chosen) - set(TRANSPORTS))
    if unknown or not chosen:
        raise pytest.UsageError(f"{TRANSPORTS_ENV}={raw!r}: expected a list of {TRANSPORTS}")
    return [t for t in TRANSPORTS if t in chosen]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "transports(*names): run the test once per client transport (tcp, ws, wss) selected "
        f"by {TRANSPORTS_ENV}; with names, only those",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("transports")
    if marker is None or "transport" not in metafunc.fixturenames:
        return
    wanted = selected_transports()
    if marker.args:
        wanted = [t for t in wanted if t in marker.args]
    if not wanted:
        wanted = [marker.args[0]]  # the test needs a transport that was not selected
    metafunc.parametrize("transport", wanted, indirect=True)


@pytest.fixture
def transport(request: pytest.FixtureRequest) -> str:
    """``tcp``, ``ws`` or ``wss`` (see the module docstring)."""
    return str(getattr(request, "param", "tcp"))


def transport_env(request: pytest.FixtureRequest, transport: str) -> dict[str, Any]:
    """Broker environment that opens the listener ``transport`` needs (on 127.0.0.1:0)."""
    if transport == "tcp":
        return {}
    if transport == "ws":
        return dict(WS_ENV)
    pki: Pki = request.getfixturevalue("pki")
    return {**WS_ENV, **wss_env(pki)}


_report_key = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    item.stash.setdefault(_report_key, {})[report.when] = report
    return report


def _test_failed(request: pytest.FixtureRequest) -> bool:
    reports = request.node.stash.get(_report_key, {})
    return any(rep.failed for rep in reports.values())


class _ModuleBroker:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.count = 0
        self.current: BrokerProcess | None = None
        self.env: dict[str, Any] = {}

    def get(self, env: dict[str, Any]) -> BrokerProcess:
        """The module's broker, (re)started when it died or lacks a listener in ``env``
        (the environment only grows, so tests of alternating transports share one)."""
        current = self.current
        if current is None or not current.alive() or not env.items() <= self.env.items():
            if current is not None:
                current.stop()
            self.env.update(env)
            self.count += 1
            self.current = BrokerProcess(self.base / f"broker{self.count}", self.env).start()
        return self.current

    def stop(self) -> None:
        if self.current is not None:
            self.current.stop()


@pytest.fixture(scope="module")
def _module_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_ModuleBroker]:
    holder = _ModuleBroker(tmp_path_factory.mktemp("broker"))
    yield holder
    holder.stop()


@pytest.fixture
def broker(
    _module_broker: _ModuleBroker, request: pytest.FixtureRequest, transport: str
) -> Iterator[BrokerProcess]:
    """The module's default-settings broker (plus the listener ``transport`` needs)."""
    proc = _module_broker.get(transport_env(request, transport))
    mark = proc.log_mark()
    yield proc
    if _test_failed(request):
        print(f"broker log since the test started ({proc!r}):")
        print("\n".join(proc.logs()[mark:][-200:]))
    if not proc.alive():
        pytest.fail(f"the shared broker died during the test\n{proc.tail()}")


@pytest.fixture
def start_broker(
    tmp_path: Path, request: pytest.FixtureRequest, transport: str
) -> Iterator[Callable[..., BrokerProcess]]:
    """``start_broker(**env)`` starts a broker with extra environment variables (and the
    listener ``transport`` needs)."""
    started: list[BrokerProcess] = []
    listener_env = transport_env(request, transport)

    def start(**env: Any) -> BrokerProcess:
        if transport != "tcp" and "TCP_NETTY_MAX_PAYLOAD_SIZE" in env:
            # the packet size limit of the listener under test
            env.setdefault(
                f"{transport.upper()}_NETTY_MAX_PAYLOAD_SIZE", env["TCP_NETTY_MAX_PAYLOAD_SIZE"]
            )
        proc = BrokerProcess(tmp_path / f"broker{len(started)}", {**listener_env, **env})
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()
        if _test_failed(request):
            print(f"log of {proc!r}:")
            print("\n".join(proc.logs()[-200:]))


@pytest.fixture
def clients(request: pytest.FixtureRequest, transport: str) -> Iterator[ClientPool]:
    ca = request.getfixturevalue("pki").ca_pem if transport == "wss" else None
    pool = ClientPool(transport, ca)
    yield pool
    pool.close_all()
