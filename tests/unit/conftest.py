"""Fixtures shared by the unit tests that run a broker in-process (see inprocess.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from inprocess import make_pki


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(CA file, server chain, server key), made once per test module."""
    return make_pki(tmp_path_factory.mktemp("pki"))
