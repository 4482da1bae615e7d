"""Fixtures of the end-to-end suite: broker processes and MQTT clients.

* ``broker``       - a broker with default settings shared by the tests of one module
                     (restarted if a test killed or crashed it; a crash fails that test).
* ``start_broker`` - factory ``start_broker(**env)`` for a broker with its own settings,
                     stopped at the end of the test.
* ``clients``      - a :class:`ClientPool` creating paho / raw-socket clients that are all
                     disconnected and closed at the end of the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .helpers import BrokerProcess, ClientPool

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

    def get(self) -> BrokerProcess:
        if self.current is None or not self.current.alive():
            if self.current is not None:
                self.current.stop()
            self.count += 1
            self.current = BrokerProcess(self.base / f"broker{self.count}").start()
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
    _module_broker: _ModuleBroker, request: pytest.FixtureRequest
) -> Iterator[BrokerProcess]:
    """The module's default-settings broker."""
    proc = _module_broker.get()
    mark = proc.log_mark()
    yield proc
    if _test_failed(request):
        print(f"broker log since the test started ({proc!r}):")
        print("\n".join(proc.logs()[mark:][-200:]))
    if not proc.alive():
        pytest.fail(f"the shared broker died during the test\n{proc.tail()}")


@pytest.fixture
def start_broker(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., BrokerProcess]]:
    """``start_broker(**env)`` starts a broker with extra environment variables."""
    started: list[BrokerProcess] = []

    def start(**env: Any) -> BrokerProcess:
        proc = BrokerProcess(tmp_path / f"broker{len(started)}", env)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()
        if _test_failed(request):
            print(f"log of {proc!r}:")
            print("\n".join(proc.logs()[-200:]))


@pytest.fixture
def clients() -> Iterator[ClientPool]:
    pool = ClientPool()
    yield pool
    pool.close_all()
