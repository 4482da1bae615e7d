"""atheris target: pytbmq's link (the harness is tests/fuzz/harness.py, run_link).

Run it with ./scripts/fuzz link SECONDS (see docs/fuzzing.md); extra arguments go to
libFuzzer, e.g. a corpus directory or -runs=N.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: "fuzz" is a package

with atheris.instrument_imports(include=["pytbmq", "fuzz"]):
    from fuzz.harness import run_link


def TestOneInput(data: bytes) -> None:
    run_link(data)


if __name__ == "__main__":
    # argv[0] as a shell command: libFuzzer's -merge=1 re-runs it for its inner processes.
    atheris.Setup([f"{sys.executable} {Path(__file__).resolve()}", *sys.argv[1:]], TestOneInput)
    atheris.Fuzz()
