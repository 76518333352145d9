"""Line-oriented JSON server around the EXIficient codec in Josev's EXICodec.jar.

Runs INSIDE the exificient venv (see exificient_setup.py), started by
tests/interop/exificient.py.  One JVM (py4j gateway, -Xmx256m) for the whole life
of the process.  One JSON object per line on stdin, one JSON answer per line on
stdout, in order.  Every answer echoes the request's ``id`` if it had one.

Requests (``mode`` is optional: "default" (EXI default options, the default) or
"josev" (the factory exactly as Josev configures it, see README); ``proto`` is one of
the names answered by ``{"op": "info"}``, or ``xsd:/abs/path.xsd`` / ``xsd-fragment:/abs/path.xsd``
for grammars EXIficient builds from any XSD file at run time, in document or fragment mode):

    {"op": "encode", "proto": P, "xml": "<...>"[, "check": true][, "mode": M]}
        -> {"hex": "80..."}      EXI bytes incl. the 0x80 EXI header, no V2GTP header
        ``check`` (default true) first encodes with the strict grammars and fails on
        anything not schema-valid instead of letting non-strict EXI encode deviations.
    {"op": "decode", "proto": P, "hex": "80..."[, "mode": M]}
        -> {"xml": "<...>"}
    {"op": "bench", "kind": "encode"|"decode"|"decode-sax", "proto": P,
     "payload": XML or hex, "warmup": N, "iterations": N[, "mode": M]}
        -> {"median_ns": .., "min_ns": .., "mean_ns": ..}     timed inside the JVM
    {"op": "encode_json", "namespace": NS, "json": "{...}"} -> {"hex": ...}
    {"op": "decode_json", "namespace": NS, "hex": "..."}    -> {"json": "{...}"}
        Josev's own API (com.siemens.ct.exi.main.cmd.EXICodec, JSON in Josev's format).
    {"op": "info"} -> {"protocols": [...], "factory": {...}, "jar": ..., ...}
    {"op": "ping"} -> {"pong": true}

Any failure answers ``{"error": "..."}``; the server never dies on a bad request.
At start it prints ``{"ready": true, ...}`` once the JVM is up.

Arguments: ``--classes DIR`` (compiled EdgeExiBridge), optional ``--jar PATH``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
import traceback
from pathlib import Path

JVM_OPTS = [
    "-Xmx256m",
    "-XX:+UseSerialGC",
    "--add-opens",
    "java.base/java.lang=ALL-UNNAMED",
]


def default_jar() -> Path:
    spec = importlib.util.find_spec("iso15118")  # locates without importing Josev
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("iso15118 (Josev) is not installed in this interpreter")
    return Path(next(iter(spec.submodule_search_locations))) / "shared" / "EXICodec.jar"


class Server:
    def __init__(self, jar: Path, classes: Path):
        import logging

        from py4j.java_gateway import GatewayParameters, JavaGateway, launch_gateway

        logging.getLogger("py4j").setLevel(logging.CRITICAL)
        self.jar = jar
        self.t_start = time.perf_counter()
        port, token = launch_gateway(
            classpath=os.pathsep.join([str(jar), str(classes)]),
            javaopts=JVM_OPTS,
            die_on_exit=True,
            enable_auth=True,
            redirect_stderr=sys.stderr,
        )
        self.gateway = JavaGateway(
            gateway_parameters=GatewayParameters(port=port, auth_token=token, auto_convert=False)
        )
        self.jvm = self.gateway.jvm
        self.bridge = self.jvm.EdgeExiBridge()
        self.t_jvm = time.perf_counter() - self.t_start
        self._josev = None  # Josev's EXICodec, built lazily (JAXB context is slow)
        self.protocols = [str(p) for p in self.jvm.EdgeExiBridge.protocols()]

    # ---- helpers -------------------------------------------------------
    def _java_error(self, exc) -> str:
        from py4j.protocol import Py4JJavaError

        if isinstance(exc, Py4JJavaError):
            try:
                return str(self.jvm.EdgeExiBridge.describe(exc.java_exception))
            except Exception:  # pragma: no cover
                return str(exc.java_exception)
        return f"{type(exc).__name__}: {exc}"

    @staticmethod
    def _mode(req) -> str:
        mode = req.get("mode", "default")
        if mode not in ("default", "josev"):
            raise ValueError(f"unknown mode {mode!r} (default|josev)")
        return mode

    @staticmethod
    def _str(req, key) -> str:
        v = req.get(key)
        if not isinstance(v, str):
            raise ValueError(f"missing or non-string field {key!r}")
        return v

    def _proto(self, req) -> str:
        p = self._str(req, "proto")
        for prefix in ("xsd:", "xsd-fragment:"):  # grammars built from an XSD file at run time
            if p.startswith(prefix):
                if not Path(p[len(prefix):]).is_file():
                    raise ValueError(f"no XSD file {p[len(prefix):]!r}")
                return p
        if p not in self.protocols:
            raise ValueError(f"unknown proto {p!r}; known: {', '.join(self.protocols)}")
        return p

    @staticmethod
    def _hex(req, key="hex") -> bytes:
        v = req.get(key)
        if not isinstance(v, str):
            raise ValueError(f"missing or non-string field {key!r}")
        return bytes.fromhex(v)

    def josev(self):
        if self._josev is None:
            self._josev = self.jvm.com.siemens.ct.exi.main.cmd.EXICodec()
        return self._josev

    # ---- ops -----------------------------------------------------------
    def op_ping(self, req):
        return {"pong": True}

    def op_info(self, req):
        return {
            "protocols": self.protocols,
            "jar": str(self.jar),
            "jvm_start_s": round(self.t_jvm, 3),
            "java_version": str(self.jvm.System.getProperty("java.version")),
            "max_heap_bytes": int(self.jvm.Runtime.getRuntime().maxMemory()),
            "factory": {m: str(self.bridge.factoryInfo("iso2", m)) for m in ("default", "josev")},
        }

    def op_encode(self, req):
        proto, mode = self._proto(req), self._mode(req)
        xml = self._str(req, "xml")
        check = bool(req.get("check", True))
        data = self.bridge.encode(proto, xml, mode, check)
        return {"hex": bytes(data).hex()}

    def op_decode(self, req):
        proto, mode = self._proto(req), self._mode(req)
        data = self._hex(req)
        return {"xml": str(self.bridge.decode(proto, bytearray(data), mode))}

    def op_bench(self, req):
        proto, mode = self._proto(req), self._mode(req)
        kind = self._str(req, "kind")
        payload = self._str(req, "payload")
        warmup = int(req.get("warmup", 200))
        iterations = int(req.get("iterations", 1000))
        med, mn, mean = (int(x) for x in str(self.bridge.bench(kind, proto, payload, mode, warmup, iterations)).split())
        return {"median_ns": med, "min_ns": mn, "mean_ns": mean, "iterations": iterations}

    def op_encode_json(self, req):
        codec = self.josev()
        data = codec.encode(self._str(req, "json"), self._str(req, "namespace"))
        if data is None:
            raise ValueError(f"Josev EXICodec.encode: {codec.get_last_encoding_error()}")
        return {"hex": bytes(data).hex()}

    def op_decode_json(self, req):
        codec = self.josev()
        out = codec.decode(bytearray(self._hex(req)), self._str(req, "namespace"))
        if out is None:
            raise ValueError(f"Josev EXICodec.decode: {codec.get_last_decoding_error()}")
        return {"json": str(out)}

    def handle(self, line: str) -> dict:
        rid = None
        try:
            req = json.loads(line)
            if not isinstance(req, dict):
                raise ValueError("request must be a JSON object")
            rid = req.get("id")
            fn = getattr(self, "op_" + str(req.get("op")), None)
            if fn is None:
                raise ValueError(f"unknown op {req.get('op')!r}")
            resp = fn(req)
        except Exception as exc:  # one bad request must not kill the server
            from py4j.protocol import Py4JNetworkError

            if isinstance(exc, Py4JNetworkError):
                raise  # JVM gone: nothing sensible left to do
            resp = {"error": self._java_error(exc)}
        if rid is not None:
            resp["id"] = rid
        return resp


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--classes", required=True, type=Path)
    ap.add_argument("--jar", type=Path, default=None)
    args = ap.parse_args(argv)

    sys.stdin.reconfigure(encoding="utf-8")
    # The protocol owns the real stdout; anything else printed goes to stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", buffering=1)
    sys.stdout = sys.stderr

    def send(obj):
        out.write(json.dumps(obj, separators=(",", ":")) + "\n")
        out.flush()

    try:
        server = Server(args.jar or default_jar(), args.classes)
    except Exception:
        send({"ready": False, "error": traceback.format_exc()[-3000:]})
        return 1
    send({"ready": True, "jvm_start_s": round(server.t_jvm, 3), "protocols": server.protocols})
    for line in sys.stdin:
        if not line.strip():
            continue
        send(server.handle(line))
    server.gateway.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
