"""pytest fixtures for interop tests against EXIficient (Josev's EXICodec.jar).

``exificient`` is one ExificientPeer (one JVM) for the whole test session.  The first
use builds ``<repo>/.cache/exificient-venv`` (about 16 s with PyPI reachable; later
runs reuse it).  Skipped when no JDK is on PATH or EDGE_SKIP_EXIFICIENT=1.
"""

from __future__ import annotations

import os
import shutil

import pytest

from .exificient import ExificientPeer
from .exificient_setup import ExificientSetupError


@pytest.fixture(scope="session")
def exificient():
    # CI must run the interop tests: there, anything that would skip them fails instead.
    stop = pytest.fail if os.environ.get("CI") else pytest.skip
    if os.environ.get("EDGE_SKIP_EXIFICIENT") == "1":
        stop("EDGE_SKIP_EXIFICIENT=1: interop with EXIficient NOT tested")
    if not (shutil.which("java") and shutil.which("javac")):
        stop("EXIficient interop NOT tested: it needs java and javac (apt-get install openjdk-17-jdk-headless)")
    peer = ExificientPeer()
    try:
        peer.start()
    except ExificientSetupError as e:
        pytest.fail(f"could not set up the EXIficient venv: {e}")
    yield peer
    peer.close()
