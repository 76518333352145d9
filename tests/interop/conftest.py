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
    if os.environ.get("EDGE_SKIP_EXIFICIENT") == "1":
        pytest.skip("EDGE_SKIP_EXIFICIENT=1")
    if not (shutil.which("java") and shutil.which("javac")):
        pytest.skip("EXIficient bridge needs java and javac (apt-get install openjdk-17-jdk-headless)")
    peer = ExificientPeer()
    try:
        peer.start()
    except ExificientSetupError as e:
        pytest.fail(f"could not set up the EXIficient venv: {e}")
    yield peer
    peer.close()
