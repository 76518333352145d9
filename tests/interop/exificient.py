"""Project-side client for the EXIficient reference codec (Josev's EXICodec.jar).

Standard library only.  Starts ``exificient_server.py`` inside the private venv made
by :mod:`exificient_setup` and keeps that one JVM alive across calls::

    with ExificientPeer() as peer:                 # sets the venv up if needed
        data = peer.encode("iso2", xml_text)       # bytes, starting with 0x80
        xml_text = peer.decode("iso2", data)       # str

``proto`` is one of :data:`PROTOCOLS`, or ``"xsd:" + path`` / ``"xsd-fragment:" + path`` (absolute
path of any XSD file: EXIficient builds its grammars from it, for tests of our schema compiler).
XML is plain schema XML with the schemas' own namespaces (for apphand the children are unqualified:
``xmlns=""``).
``mode="default"`` (EXI default options) or ``mode="josev"`` (Josev's bounded
string table / no grammar learning, see README.md) can be set per peer or per call.
Errors (bad XML, not schema-valid, undecodable bytes, timeout, server death) raise
:class:`ExificientError`; the peer restarts the server on the next call if it died.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import tempfile
import threading
import time
from pathlib import Path

try:
    from .exificient_setup import DEFAULT_CACHE_DIR, classes_dir, ensure_venv, venv_python
except ImportError:  # imported as a top-level module
    from exificient_setup import DEFAULT_CACHE_DIR, classes_dir, ensure_venv, venv_python

SERVER_SCRIPT = Path(__file__).resolve().parent / "exificient_server.py"

PROTOCOLS = (
    "apphand",
    "din",
    "iso2",
    "iso20-common",
    "iso20-ac",
    "iso20-dc",
    "iso20-acdp",
    "iso20-wpt",
    # EXI fragment grammars (signature digests)
    "iso2-fragment",
    "iso20-fragment",
    "din-fragment",
    "xmldsig-fragment",
)
MODES = ("default", "josev")


class ExificientError(RuntimeError):
    """Any failure reported by (or about) the EXIficient peer."""


class ExificientPeer:
    def __init__(
        self,
        cache_dir: Path | None = None,
        *,
        mode: str = "default",
        timeout: float = 30.0,
        start_timeout: float = 120.0,
        setup: bool = True,
    ):
        """``cache_dir``: parent of ``exificient-venv`` (default ``<repo>/.cache``, or
        ``$EDGE_EXIFICIENT_CACHE``).  ``setup=False`` skips :func:`ensure_venv`."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        env_dir = os.environ.get("EDGE_EXIFICIENT_CACHE")
        self.cache_dir = Path(cache_dir or env_dir or DEFAULT_CACHE_DIR)
        self.mode = mode
        self.timeout = timeout
        self.start_timeout = start_timeout
        self.setup = setup
        self.info: dict = {}
        self.jvm_start_s: float | None = None
        self.start_s: float | None = None
        self._proc: subprocess.Popen | None = None
        self._buf = b""
        self._stderr = None
        self._next_id = 0
        self._lock = threading.Lock()

    # ---- life cycle ----------------------------------------------------
    def __enter__(self) -> ExificientPeer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # best effort; close() is the real API
        try:
            self.close()
        except Exception:
            pass

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> ExificientPeer:
        if self.running:
            return self
        self.close()  # reap a server that died on its own
        t0 = time.perf_counter()
        if self.setup:
            venv = ensure_venv(self.cache_dir)
        else:
            venv = self.cache_dir / "exificient-venv"
        python = venv_python(venv)
        if not python.exists():
            raise ExificientError(f"no venv at {venv}: run python -m tests.interop.exificient_setup")
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")
        self._proc = subprocess.Popen(
            [str(python), str(SERVER_SCRIPT), "--classes", str(classes_dir(venv))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            bufsize=0,
            env={k: v for k, v in os.environ.items() if k != "JAVA_TOOL_OPTIONS"},
        )
        self._buf = b""
        hello = self._read(self.start_timeout, "start")
        if not hello.get("ready"):
            err = hello.get("error", hello)
            self.close()
            raise ExificientError(f"EXIficient server failed to start: {err}")
        self.jvm_start_s = hello.get("jvm_start_s")
        self.start_s = time.perf_counter() - t0
        return self

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                if proc.poll() is None:
                    proc.stdin.close()  # EOF: server shuts the gateway down and exits
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(timeout=10)
            except (OSError, ValueError):
                proc.kill()
            for f in (proc.stdout, proc.stdin):
                try:
                    f.close()
                except (OSError, ValueError):
                    pass
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    # ---- transport -----------------------------------------------------
    def _stderr_tail(self, n: int = 2000) -> str:
        if self._stderr is None:
            return ""
        try:
            self._stderr.flush()
            self._stderr.seek(0)
            return self._stderr.read()[-n:]
        except (OSError, ValueError):
            return ""

    def _readline(self, timeout: float) -> bytes | None:
        """One line from the server's stdout; None on EOF; TimeoutError after timeout."""
        deadline = time.monotonic() + timeout
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def _read(self, timeout: float, what: str) -> dict:
        try:
            line = self._readline(timeout)
        except TimeoutError:
            tail = self._stderr_tail()
            self.close()
            raise ExificientError(f"EXIficient {what}: no answer within {timeout:g}s\n{tail}") from None
        if line is None:
            tail = self._stderr_tail()
            self.close()
            raise ExificientError(f"EXIficient server exited during {what}\n{tail}")
        try:
            return json.loads(line)
        except ValueError:
            self.close()
            raise ExificientError(f"EXIficient server sent garbage during {what}: {line[:300]!r}") from None

    def request(self, req: dict, timeout: float | None = None) -> dict:
        """Send one raw request (see exificient_server.py); return the answer or raise."""
        with self._lock:
            if not self.running:
                self.start()
            self._next_id += 1
            rid = self._next_id
            msg = dict(req, id=rid)
            what = str(req.get("op"))
            try:
                self._proc.stdin.write((json.dumps(msg) + "\n").encode("utf-8"))
            except (OSError, ValueError):
                tail = self._stderr_tail()
                self.close()
                raise ExificientError(f"EXIficient server is gone\n{tail}") from None
            resp = self._read(self.timeout if timeout is None else timeout, what)
            if resp.get("id") != rid:
                self.close()
                raise ExificientError(f"EXIficient answer out of order: {resp!r:.300}")
        if "error" in resp:
            raise ExificientError(resp["error"])
        return resp

    # ---- API -----------------------------------------------------------
    def encode(self, proto: str, xml: str, *, mode: str | None = None, check: bool = True) -> bytes:
        """XML -> EXI bytes (EXI header included, no V2GTP header).

        ``check`` first encodes with the strict grammars, so XML that is not
        schema-valid raises instead of being encoded through non-strict deviations."""
        resp = self.request({"op": "encode", "proto": proto, "xml": xml, "mode": mode or self.mode, "check": check})
        return bytes.fromhex(resp["hex"])

    def decode(self, proto: str, data: bytes, *, mode: str | None = None) -> str:
        """EXI bytes -> XML text (namespace prefixes are generated: ns3, ns4, ...)."""
        resp = self.request({"op": "decode", "proto": proto, "hex": bytes(data).hex(), "mode": mode or self.mode})
        return resp["xml"]

    def bench(
        self,
        kind: str,
        proto: str,
        payload: str | bytes,
        *,
        warmup: int = 200,
        iterations: int = 1000,
        mode: str | None = None,
    ) -> dict:
        """Time ``kind`` ("encode" with XML payload, "decode" / "decode-sax" with EXI
        bytes) inside the JVM; returns median_ns, min_ns, mean_ns."""
        if isinstance(payload, (bytes, bytearray)):
            payload = bytes(payload).hex()
        return self.request(
            {
                "op": "bench",
                "kind": kind,
                "proto": proto,
                "payload": payload,
                "warmup": warmup,
                "iterations": iterations,
                "mode": mode or self.mode,
            },
            timeout=max(self.timeout, 300.0),
        )

    def encode_josev_json(self, namespace: str, json_text: str) -> bytes:
        """Josev's own API: its JSON message format -> EXI (namespace selects the grammar,
        e.g. "urn:iso:15118:2:2013:MsgDef")."""
        return bytes.fromhex(self.request({"op": "encode_json", "namespace": namespace, "json": json_text})["hex"])

    def decode_josev_json(self, namespace: str, data: bytes) -> str:
        """Josev's own API: EXI -> its JSON message format."""
        return self.request({"op": "decode_json", "namespace": namespace, "hex": bytes(data).hex()})["json"]

    def server_info(self) -> dict:
        self.info = self.request({"op": "info"})
        return self.info
