"""Create the private virtualenv that hosts the EXIficient reference codec.

EXIficient comes from Josev (PyPI ``iso15118==0.31.2``), which ships it as
``iso15118/shared/EXICodec.jar`` driven through py4j.  Josev pins pydantic and
cryptography exactly and imports ``aiofile`` without declaring it, so it lives in
its own venv, never in the project's environment.

Layout (``cache_dir`` is normally ``<repo>/.cache``)::

    <cache_dir>/exificient-venv/                 the venv (returned by ensure_venv)
        bin/python
        lib/python3.X/site-packages/iso15118/shared/EXICodec.jar
        edge-bridge/classes/EdgeExiBridge.class  compiled from java/EdgeExiBridge.java
        .edge-exificient.json                    marker: what was installed/compiled

Needs ``java`` and ``javac`` (JDK >= 11) on PATH, and PyPI.  Idempotent: a second
call only reads the marker.  Usage::

    python -m tests.interop.exificient_setup [--cache-dir DIR] [--force]

Standard library only (this runs in the project's interpreter).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
DEFAULT_CACHE_DIR = REPO_ROOT / ".cache"
VENV_NAME = "exificient-venv"
JAVA_SOURCE = HERE / "java" / "EdgeExiBridge.java"

# What goes into the venv.  iso15118 brings py4j; aiofile is imported by Josev
# but not declared.  Bump SETUP_VERSION to force a rebuild everywhere.
PIP_REQUIREMENTS = ("iso15118==0.31.2", "aiofile>=3.8,<4")
SETUP_VERSION = 1
MARKER_NAME = ".edge-exificient.json"
CLASSES_SUBDIR = Path("edge-bridge") / "classes"


class ExificientSetupError(RuntimeError):
    pass


def venv_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / VENV_NAME


def venv_python(venv_path: Path) -> Path:
    if os.name == "nt":  # pragma: no cover - not a target
        return venv_path / "Scripts" / "python.exe"
    return venv_path / "bin" / "python"


def classes_dir(venv_path: Path) -> Path:
    return venv_path / CLASSES_SUBDIR


def _java_digest() -> str:
    return hashlib.sha256(JAVA_SOURCE.read_bytes()).hexdigest()


def _read_marker(venv_path: Path) -> dict:
    try:
        return json.loads((venv_path / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return {}


def _write_marker(venv_path: Path, data: dict) -> None:
    tmp = venv_path / (MARKER_NAME + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(venv_path / MARKER_NAME)


def _pip_key() -> dict:
    return {"setup_version": SETUP_VERSION, "requirements": list(PIP_REQUIREMENTS)}


def _run(cmd: list[str], what: str, log=None, **kw) -> subprocess.CompletedProcess:
    if log:
        log(f"[exificient-setup] {what}: {' '.join(map(str, cmd))}")
    proc = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if proc.returncode != 0:
        raise ExificientSetupError(f"{what} failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}")
    return proc


def find_jar(venv_path: Path) -> Path:
    """Path of Josev's EXICodec.jar inside the venv."""
    hits = sorted(venv_path.glob("lib/python3*/site-packages/iso15118/shared/EXICodec.jar"))
    hits += sorted(venv_path.glob("Lib/site-packages/iso15118/shared/EXICodec.jar"))
    if not hits:
        raise ExificientSetupError(f"EXICodec.jar not found under {venv_path}")
    return hits[0]


@contextlib.contextmanager
def _lock(path: Path):
    """Exclusive inter-process lock (pytest-xdist workers may race to set up)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX
            yield
            return
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _check_tools() -> tuple[str, str]:
    java = shutil.which("java")
    javac = shutil.which("javac")
    if not java or not javac:
        raise ExificientSetupError(
            "EXIficient bridge needs a JDK (java and javac on PATH); "
            "on Debian: apt-get install -y openjdk-17-jdk-headless"
        )
    return java, javac


def is_ready(cache_dir: Path) -> bool:
    """True when ensure_venv(cache_dir) would do nothing."""
    vp = venv_dir(cache_dir)
    m = _read_marker(vp)
    return (
        m.get("pip") == _pip_key()
        and m.get("java_sha256") == _java_digest()
        and venv_python(vp).exists()
        and (classes_dir(vp) / "EdgeExiBridge.class").exists()
    )


def ensure_venv(cache_dir: Path, *, force: bool = False, log=None) -> Path:
    """Create/refresh ``<cache_dir>/exificient-venv`` and return its path.

    Creates the venv with the running interpreter, pip-installs Josev and friends,
    and compiles the Java bridge against the jar.  Skips every step whose marker
    entry is current.  ``log`` is an optional ``print``-like callable.
    """
    cache_dir = Path(cache_dir).resolve()
    vp = venv_dir(cache_dir)
    if not force and is_ready(cache_dir):
        return vp
    _, javac = _check_tools()
    if not cache_dir.exists():
        cache_dir.mkdir(parents=True)
        (cache_dir / ".gitignore").write_text("# created by tests/interop/exificient_setup.py\n*\n")
    with _lock(cache_dir / (VENV_NAME + ".lock")):
        if not force and is_ready(cache_dir):  # another process finished meanwhile
            return vp
        t0 = time.monotonic()
        marker = {} if force else _read_marker(vp)
        py = venv_python(vp)
        if force or marker.get("pip") != _pip_key() or not py.exists():
            if vp.exists():
                shutil.rmtree(vp)
            if log:
                log(f"[exificient-setup] creating venv {vp} with {sys.executable}")
            venv.EnvBuilder(with_pip=True, clear=True).create(vp)
            _run(
                [py, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q", *PIP_REQUIREMENTS],
                "pip install",
                log,
            )
            marker = {"pip": _pip_key()}
            _write_marker(vp, marker)
        jar = find_jar(vp)
        if marker.get("java_sha256") != _java_digest() or not (classes_dir(vp) / "EdgeExiBridge.class").exists():
            out = classes_dir(vp)
            if out.exists():
                shutil.rmtree(out)
            out.mkdir(parents=True)
            _run(
                [javac, "-nowarn", "-encoding", "UTF-8", "-cp", jar, "-d", out, JAVA_SOURCE],
                "javac EdgeExiBridge",
                log,
            )
            marker["java_sha256"] = _java_digest()
        marker["jar"] = str(jar.relative_to(vp))
        marker["jar_sha256"] = hashlib.sha256(jar.read_bytes()).hexdigest()
        marker["python"] = sys.version.split()[0]
        _write_marker(vp, marker)
        if log:
            log(f"[exificient-setup] ready in {time.monotonic() - t0:.1f}s: {vp}")
    return vp


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE_DIR,
        help=f"parent of {VENV_NAME}/ (default: {DEFAULT_CACHE_DIR})",
    )
    ap.add_argument("--force", action="store_true", help="rebuild from scratch")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    try:
        vp = ensure_venv(args.cache_dir, force=args.force, log=lambda m: print(m, flush=True))
    except ExificientSetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{vp} ({time.monotonic() - t0:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
