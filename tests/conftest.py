"""Fixtures many test files share."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.logs import bind_log_fields, log_fields
from edge.pki.testpki import create_test_pki


@pytest.fixture(autouse=True)
def _no_log_fields_between_tests() -> Iterator[None]:
    """Sans-IO tests drive a session's handle() straight from the test's own context, where it binds that
    session's log fields (in the daemon each connection is its own task): clear them so no test sees another's."""
    yield
    bind_log_fields(**{key: None for key in log_fields()})


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One test PKI in Josev's layout (edge.pki.testpki, password 12345): iso15118_2 (P-256),
    iso15118_20 (P-521), iso15118_20_ed448. Tests read it; none writes to it."""
    out = tmp_path_factory.mktemp("pki")
    create_test_pki(out)
    return out


@pytest.fixture(scope="session")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another test PKI: the same names, other keys (roots nobody who trusts ``pki`` trusts)."""
    out = tmp_path_factory.mktemp("other-pki")
    create_test_pki(out)
    return out


@pytest.fixture(scope="session")
def tshark() -> str:
    """tshark's path (Debian package tshark, which CI's set-up installs): skipped without it, failed in CI."""
    found = shutil.which("tshark") or ("/usr/bin/tshark" if Path("/usr/bin/tshark").exists() else None)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("tshark is needed (Debian package tshark)")
        pytest.skip("no tshark")
    return found
