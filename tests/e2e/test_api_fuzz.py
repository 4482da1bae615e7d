"""OpenAPI-driven fuzzing of the admin REST API with schemathesis, against the broker process.

The broker serves its OpenAPI document at /v3/api-docs; schemathesis loads it from the
live server and, for every operation the document lists (whatever routers exist when the
test runs), sends the documented examples, its coverage cases (boundary values, missing
and wrong-typed parameters and bodies) and FUZZ_MAX_EXAMPLES random valid and invalid
requests. Every request carries an admin token, so the handlers run, not only the
authentication check. The property checked is "not_a_server_error": whatever comes in,
the API answers below 500 (bad input is a 400 naming the problem, never a crash).

schemathesis runs through its command line (`python -m schemathesis.cli run`), the
interface its documentation leads with; its pytest plugin does not work with pytest 9.2
(it sets `request.node._nodeid`, which pytest no longer has). One worker: with two,
Hypothesis' lambda descriptions call `ast.parse` from two threads, which CPython 3.11
rejects now and then ("AST constructor recursion depth mismatch"). The seed is fixed, so
a run is reproducible; on failure the output shows each failing request as a curl
command. About a minute on two cores; set FUZZ_MAX_EXAMPLES higher for a longer local run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .api_client import API_ENV, ApiClient
from .helpers import BrokerProcess

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "8"))
SEED = 20240601
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}

# Operations left out because a hit would lock the run out of the API (every later
# request a 401): changing the signed-in admin's password (the fuzzer sends the current
# one only by chance, but it is cheap to rule out), and removing an admin (the API
# refuses to remove the signed-in admin, but the fuzzer can learn its id from
# GET /api/auth/user, and a regression there would end the run).
EXCLUDED = ("POST /api/auth/changePassword", "DELETE /api/admin/{user_id}")


@pytest.fixture(scope="module")
def fuzz_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    broker = BrokerProcess(tmp_path_factory.mktemp("api-fuzz"), API_ENV).start()
    yield broker
    broker.stop()


def _operations(doc: dict[str, object]) -> set[str]:
    paths = doc["paths"]
    assert isinstance(paths, dict)
    return {f"{m.upper()} {p}" for p, ops in paths.items() for m in ops if m in METHODS}


@pytest.mark.timeout(600)
def test_no_operation_answers_a_server_error(fuzz_broker: BrokerProcess, tmp_path: Path) -> None:
    api = ApiClient(fuzz_broker)
    status, doc = api.raw("GET", "/v3/api-docs")
    assert status == 200
    operations = _operations(doc)
    assert not set(EXCLUDED) - operations, "an excluded operation is gone: update EXCLUDED"
    report = tmp_path / "schemathesis.json"
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{api.base}/v3/api-docs",
        "--header",
        f"X-Authorization: Bearer {api.token}",
        "--checks",
        "not_a_server_error",
        "--phases",
        "examples,coverage,fuzzing",  # stateful: operations are fuzzed one at a time
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--request-timeout",
        "15",
        "--suppress-health-check",
        "all",
        "--generation-database",
        "none",  # nothing written to .hypothesis, nothing carried between runs
        "--no-color",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    for name in EXCLUDED:
        command += ["--exclude-name", name]
    run = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=540, check=False
    )
    output = run.stdout[-20000:] + run.stderr[-5000:]
    assert report.exists(), f"schemathesis wrote no report (exit {run.returncode})\n{output}"
    result = json.loads(report.read_text())
    assert not result["failures"] and not result["errors"], output
    assert run.returncode == 0, output
    counts = result["operations"]
    # every operation of the document was fuzzed, except the excluded ones
    assert counts["total"] == len(operations), (counts, sorted(operations))
    assert counts["selected"] == len(operations) - len(EXCLUDED), counts
    assert counts["tested"] == counts["selected"], (counts, output)
    assert result["test_cases"]["generated"] >= counts["tested"] * MAX_EXAMPLES, result
    assert fuzz_broker.alive(), fuzz_broker.tail()
    assert not [line for line in fuzz_broker.logs() if "Traceback" in line], fuzz_broker.tail(200)


def test_the_document_lists_the_system_endpoints(fuzz_broker: BrokerProcess) -> None:
    """The fuzz run covers what the document lists; make sure that is the real API."""
    status, doc = ApiClient(fuzz_broker, username=None).raw("GET", "/v3/api-docs")
    assert status == 200
    operations = _operations(doc)
    for name in (
        "POST /api/auth/login",
        "GET /api/system/info",
        "GET /api/tls/status",
        "GET /actuator/health",
        "GET /actuator/prometheus",
        "GET /metrics",
    ):
        assert name in operations, name
