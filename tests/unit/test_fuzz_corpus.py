"""Replay the fuzzers' corpus (tests/fuzz/corpus/<target>/*) through their harness.

Every input the fuzzers kept as interesting, and every crash reproducer committed there,
must run clean: only ProtocolError (handled) inside pytbmq, no "internal error" log
record, no broken router invariant. The harness is tests/fuzz/harness.py; the fuzzers
themselves (atheris, scripts/fuzz) are not needed here. See docs/fuzzing.md.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from fuzz import harness  # noqa: E402  (tests/ is not otherwise on sys.path)

CORPUS = TESTS / "fuzz" / "corpus"
TARGETS: dict[str, Callable[[bytes], None]] = {
    "decoder": harness.run_decoder,
    "link": harness.run_link,
    "websocket": harness.run_websocket,
}


@pytest.fixture(scope="module", autouse=True)
def _harness_loop() -> Iterator[None]:
    yield
    harness.close_loop()


def _files(target: str) -> list[Path]:
    directory = CORPUS / target
    return sorted(p for p in directory.iterdir() if p.is_file()) if directory.is_dir() else []


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_corpus_is_present(target: str) -> None:
    assert _files(target), f"no corpus in {CORPUS / target}: run tests/fuzz/make_seeds.py"


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_corpus_replays_clean(target: str) -> None:
    run = TARGETS[target]
    failures: list[str] = []
    for path in _files(target):
        try:
            run(path.read_bytes())
        except Exception as exc:  # every kind of failure is a finding: collect them all
            failures.append(f"{path.relative_to(TESTS)}: {type(exc).__name__}: {exc}")
    assert not failures, f"{len(failures)} corpus input(s) fail:\n" + "\n".join(failures)


def test_harness_catches_what_it_should() -> None:
    """The harness itself fails on a broken round trip and on an internal error."""
    import logging

    with pytest.raises(AssertionError, match="logged an error"):

        async def noisy() -> None:
            logging.getLogger("pytbmq.link").error("internal error handling client x")

        harness._run(noisy())
    original = harness.encode
    try:
        harness.encode = lambda packet, version: b"\xc0\x00"  # type: ignore[assignment]
        with pytest.raises(AssertionError, match="round trip"):
            harness.run_decoder(bytes((19,)) + b"\x30\x04\x00\x01ab")  # 3.1.1 PUBLISH
    finally:
        harness.encode = original  # type: ignore[assignment]
