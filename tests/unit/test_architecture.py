"""Import boundaries: the protocol band and topic matching stay sans-I/O.

Every module under src/pytbmq/protocol/ and src/pytbmq/topics.py is parsed with `ast` (not
imported) and must not import I/O, clock or concurrency modules, so that the codec and the
protocol state machines remain pure functions of their inputs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "pytbmq"
FORBIDDEN = frozenset({"asyncio", "socket", "ssl", "time", "selectors", "threading"})


def sans_io_modules() -> list[Path]:
    paths = sorted((SRC / "protocol").glob("*.py"))
    topics = SRC / "topics.py"
    if topics.exists():
        paths.append(topics)
    return paths


def imported_top_level_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value.split(".")[0])
    return names


def test_there_are_modules_to_check() -> None:
    assert (SRC / "protocol" / "packets.py").exists()


@pytest.mark.parametrize("path", sans_io_modules(), ids=lambda p: p.name)
def test_sans_io_module_imports_no_io(path: Path) -> None:
    bad = imported_top_level_names(path) & FORBIDDEN
    assert not bad, f"{path.relative_to(SRC.parent)} imports {sorted(bad)}"


def test_checker_sees_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os, asyncio.events\n"
        "from time import monotonic\n"
        "from . import sibling\n"
        "def f():\n"
        "    import socket\n"
        "    __import__('ssl')\n",
        encoding="utf-8",
    )
    assert imported_top_level_names(sample) == {"os", "asyncio", "time", "socket", "ssl"}
