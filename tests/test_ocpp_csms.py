"""``edge csms``, the test CSMS (edge/ocpp/csms.py), run as its own process; the tests play the station with
websockets' synchronous client."""

from __future__ import annotations

import datetime as dt
import json
import re
import select
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import ExtendedKeyUsageOID
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.headers import build_authorization_basic
from websockets.sync.client import ClientConnection, connect

from edge.cli import main
from edge.ocpp.csms import CsmsScript, ScriptError, check_frame, station_id_from_path
from tests.pki_builders import Issued, make_cert

REPO = Path(__file__).resolve().parent.parent
BOOT = {"chargingStation": {"model": "Edge", "vendorName": "Test"}, "reason": "PowerUp"}
TOKEN = {"idToken": "04A1B2C3", "type": "ISO14443"}
UTC_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


class CsmsProcess:
    """One ``edge csms --port 0`` subprocess, its port read from the line it prints on stdout."""

    def __init__(self, tmp_path: Path, index: int, args: list[str], netns: str | None = None) -> None:
        self.log_path = tmp_path / f"csms{index}.jsonl"
        self.stderr_path = tmp_path / f"csms{index}.stderr"
        inside = ["nsenter", f"--net=/var/run/netns/{netns}"] if netns else []  # a test's network namespace
        with self.stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen([*inside, sys.executable, "-m", "edge.cli", "csms", "--port", "0",
                                          "--log", str(self.log_path), *args],
                                         stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=REPO)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 10)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.stop()
            raise AssertionError(f"edge csms did not start: {self.stderr_path.read_text()}")
        announced = json.loads(line)
        assert announced["event"] == "listening"
        self.port: int = announced["port"]
        self.url: str = announced["url"]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    def log(self) -> list[dict[str, Any]]:
        text = self.log_path.read_text() if self.log_path.exists() else ""
        return [json.loads(line) for line in text.splitlines()]

    def wait_for_log(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.log() if predicate(r)]
            if found:
                return found[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no such log line in {self.log()}")
            time.sleep(0.02)


@pytest.fixture
def start_csms(tmp_path: Path) -> Iterator[Callable[..., CsmsProcess]]:
    """Start ``edge csms`` with these options; every process started is stopped after the test, pass or fail."""
    started: list[CsmsProcess] = []

    def start(*args: str) -> CsmsProcess:
        started.append(CsmsProcess(tmp_path, len(started), list(args)))
        return started[-1]

    yield start
    for process in started:
        process.stop()


def station(url: str, station_id: str = "CP1", versions: tuple[str, ...] = ("ocpp2.1", "ocpp2.0.1"),
            **options: Any) -> ClientConnection:
    return connect(f"{url}/{station_id}", subprotocols=list(versions), open_timeout=5, **options)  # type: ignore[arg-type]


def receive(ws: ClientConnection, timeout: float = 5.0) -> list[Any]:
    return json.loads(ws.recv(timeout=timeout))


def call(ws: ClientConnection, action: str, payload: dict[str, Any], unique_id: str = "1") -> list[Any]:
    """Send a CALL and return the answer (a CALLRESULT or CALLERROR frame)."""
    ws.send(json.dumps([2, unique_id, action, payload]))
    answer = receive(ws)
    assert answer[1] == unique_id, answer
    return answer


def transaction_event(event_type: str, seq_no: int, **extra: Any) -> dict[str, Any]:
    return {"eventType": event_type, "timestamp": "2025-06-01T12:00:00Z", "triggerReason": "CablePluggedIn",
            "seqNo": seq_no, "transactionInfo": {"transactionId": "T-1"}, **extra}


def test_boot_pending_then_accepted_then_heartbeat(start_csms) -> None:
    csms = start_csms("--boot", "pending:2", "--interval", "17")
    with station(csms.url) as ws:
        answers = [call(ws, "BootNotification", BOOT, f"b{i}") for i in range(2)]
        assert [(a[0], a[2]["status"], a[2]["interval"]) for a in answers] == [(3, "Pending", 1)] * 2
    with station(csms.url) as ws:  # the count is per station, across its connections
        accepted = call(ws, "BootNotification", BOOT, "b2")
        assert (accepted[2]["status"], accepted[2]["interval"]) == ("Accepted", 17)
        assert UTC_TIME.match(accepted[2]["currentTime"])
        heartbeat = call(ws, "Heartbeat", {}, "h")
        assert heartbeat[0] == 3 and UTC_TIME.match(heartbeat[2]["currentTime"])
        # the ocpp package answers nothing to an unhandled 2.1 action; the CSMS does
        assert call(ws, "GetVariables", {}, "u1")[:3] == [4, "u1", "NotImplemented"]
        assert call(ws, "NoSuchAction", {}, "u2")[:3] == [4, "u2", "NotSupported"]
        assert call(ws, "Heartbeat", {"bogus": 1}, "v")[:3] == [4, "v", "FormatViolation"]  # schema-checked
        ws.send("{not json")
        assert receive(ws)[:3] == [4, "-1", "RpcFrameworkError"]
        # 2.1 V2X names (maxChargePower_L2) the package's snake_case conversion mangles: answered all the same
        needs = {"requestedEnergyTransfer": "DC_BPT", "v2xChargingParameters": {
            "maxChargePower": 50000, "maxChargePower_L2": 0, "maxDischargePower_L2": 0, "targetSoC": 80}}
        answer = call(ws, "NotifyEVChargingNeeds", {"evseId": 1, "chargingNeeds": needs}, "n")
        assert answer[2] == {"status": "Accepted"}
        # nothing in the script: certificate services fail
        assert call(ws, "Get15118EVCertificate", {"iso15118SchemaVersion": "urn:iso:15118:2:2013:MsgDef",
                                                  "action": "Install", "exiRequest": "AAAA"})[2] == \
            {"status": "Failed", "exiResponse": ""}
        ocsp = {"hashAlgorithm": "SHA256", "issuerNameHash": "00", "issuerKeyHash": "11", "serialNumber": "1",
                "responderURL": "http://ocsp.example"}
        assert call(ws, "GetCertificateStatus", {"ocspRequestData": ocsp})[2] == {"status": "Failed"}
    with station(csms.url, "CP2") as ws:  # another station starts its own count
        assert call(ws, "BootNotification", BOOT)[2]["status"] == "Pending"


def test_boot_rejected(start_csms) -> None:
    csms = start_csms("--boot", "rejected")
    with station(csms.url) as ws:
        for i in range(2):
            answer = call(ws, "BootNotification", BOOT, f"b{i}")
            assert (answer[2]["status"], answer[2]["interval"]) == ("Rejected", 1)


def test_authorize_per_token_file(start_csms, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"04A1B2C3": "Accepted", "DEADBEEF": "Blocked"}))
    csms = start_csms("--authorize", str(tokens))
    with station(csms.url) as ws:
        assert call(ws, "BootNotification", BOOT)[2]["status"] == "Accepted"

        def authorize(token: str, **extra: Any) -> dict[str, Any]:
            answer = call(ws, "Authorize", {"idToken": {"idToken": token, "type": "ISO14443"}, **extra}, token)
            assert answer[0] == 3, answer
            return answer[2]

        assert authorize("04A1B2C3") == {"idTokenInfo": {"status": "Accepted"}}
        assert authorize("DEADBEEF") == {"idTokenInfo": {"status": "Blocked"}}
        assert authorize("CAFE") == {"idTokenInfo": {"status": "Unknown"}}
        hash_data = [{"hashAlgorithm": "SHA256", "issuerNameHash": "ab", "issuerKeyHash": "cd", "serialNumber": "01",
                      "responderURL": "http://ocsp.example"}]
        assert authorize("04A1B2C3", iso15118CertificateHashData=hash_data) == \
            {"idTokenInfo": {"status": "Accepted"}, "certificateStatus": "Accepted"}


def test_script_steps_reach_the_station_as_written_and_the_log_has_both_directions(start_csms,
                                                                                   tmp_path: Path) -> None:
    # a 2.1 V2X period: names such as setpoint_L2 the ocpp package's snake/camel conversion would mangle
    profile = {"evseId": 1, "chargingProfile": {
        "id": 7, "stackLevel": 0, "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Dynamic",
        "transactionId": "T-1", "chargingSchedule": [{"id": 1, "chargingRateUnit": "W", "chargingSchedulePeriod": [
            {"startPeriod": 0, "limit": 11000.5, "setpoint": -3000, "setpoint_L2": -3000, "dischargeLimit_L2": -7000,
             "operationMode": "CentralSetpoint"}]}]}}
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"exi_response": "RVhJ", "ocsp_result": "T0NTUA==", "steps": [
        {"after": "TransactionEvent:Started", "delay": 0.05, "action": "SetChargingProfile", "payload": profile},
        {"after": "TransactionEvent:Ended", "delay": 0, "raw": "[2,\"broken\""},
        {"after": "TransactionEvent:Ended", "delay": 0.05, "close": True},
    ]}))
    csms = start_csms("--script", str(script))
    with station(csms.url, "CP7") as ws:
        assert call(ws, "BootNotification", BOOT)[2]["status"] == "Accepted"
        assert call(ws, "Heartbeat", {}, "h")[0] == 3  # no step before its trigger
        assert call(ws, "Get15118EVCertificate", {"iso15118SchemaVersion": "urn:iso:std:iso:15118:-20:CommonMessages",
                                                  "action": "Install", "exiRequest": "AAAA"}, "g")[2] == \
            {"status": "Accepted", "exiResponse": "RVhJ"}
        ocsp = {"hashAlgorithm": "SHA256", "issuerNameHash": "00", "issuerKeyHash": "11", "serialNumber": "1",
                "responderURL": "http://ocsp.example"}
        assert call(ws, "GetCertificateStatus", {"ocspRequestData": ocsp}, "o")[2] == \
            {"status": "Accepted", "ocspResult": "T0NTUA=="}
        started = call(ws, "TransactionEvent", transaction_event("Started", 0, idToken=TOKEN), "t0")
        assert started == [3, "t0", {"idTokenInfo": {"status": "Accepted"}}]
        step = receive(ws)
        assert step[0] == 2 and step[2] == "SetChargingProfile" and step[3] == profile
        ws.send(json.dumps([3, step[1], {"status": "Accepted"}]))
        assert call(ws, "TransactionEvent", transaction_event("Updated", 1), "t1") == [3, "t1", {}]
        csms.wait_for_log(lambda r: r.get("event") == "step" and r.get("result") == "CALLRESULT")
        call(ws, "TransactionEvent", transaction_event("Started", 2), "t2")  # a step fires once per station
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)
        assert call(ws, "TransactionEvent", transaction_event("Ended", 3), "t3") == [3, "t3", {}]
        assert ws.recv(timeout=5) == "[2,\"broken\""  # verbatim
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    csms.wait_for_log(lambda r: r.get("event") == "disconnected")
    log = csms.log()
    assert {"event": "connected", "station": "CP7", "version": "ocpp2.1"}.items() <= log[0].items()
    frames = [(r["dir"], r.get("frame") or r.get("raw")) for r in log if "dir" in r]
    assert ("in", [2, "1", "BootNotification", BOOT]) in frames
    assert any(d == "out" and f[:2] == [3, "1"] and f[2]["status"] == "Accepted" for d, f in frames)
    assert ("out", step) in frames and ("in", [3, step[1], {"status": "Accepted"}]) in frames
    assert ("out", "[2,\"broken\"") in frames
    assert all(r["station"] == "CP7" and r["version"] == "ocpp2.1" and isinstance(r["t"], float)
               for r in log if "dir" in r)
    outcome = next(r for r in log if r.get("event") == "step" and r.get("kind") == "call")
    assert outcome["action"] == "SetChargingProfile" and outcome["payload"] == {"status": "Accepted"}


def test_close_step_fires_once_so_the_station_can_reconnect(start_csms, tmp_path: Path) -> None:
    script = tmp_path / "close.json"
    script.write_text(json.dumps({"steps": [{"after": "BootAccepted", "delay": 0.05, "close": True}]}))
    csms = start_csms("--script", str(script))
    with station(csms.url) as ws:
        assert call(ws, "BootNotification", BOOT)[2]["status"] == "Accepted"
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    with station(csms.url) as ws:
        assert call(ws, "BootNotification", BOOT)[2]["status"] == "Accepted"
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)
        assert call(ws, "Heartbeat", {}, "h")[0] == 3
        assert [r["event"] for r in csms.log() if r.get("event") in ("connected", "disconnected")] == \
            ["connected", "disconnected", "connected"]


def test_basic_auth_required(start_csms) -> None:
    csms = start_csms("--password", "s3cret-password")

    def auth(user: str, password: str) -> dict[str, Any]:
        return {"additional_headers": {"Authorization": build_authorization_basic(user, password)}}

    for options in ({}, auth("CP1", "wrong"), auth("CP9", "s3cret-password")):
        with pytest.raises(InvalidStatus) as refused:
            station(csms.url, "CP1", **options)
        assert refused.value.response.status_code == 401
    with station(csms.url, "CP1", **auth("CP1", "s3cret-password")) as ws:
        assert call(ws, "BootNotification", BOOT)[2]["status"] == "Accepted"
    assert [r["status"] for r in csms.log() if r.get("event") == "refused"] == [401] * 3


def test_version_negotiation(start_csms) -> None:
    both = start_csms()
    with station(both.url, versions=("ocpp2.0.1", "ocpp2.1")) as ws:  # the CSMS's preference decides
        assert ws.subprotocol == "ocpp2.1"
    only_201 = start_csms("--versions", "ocpp2.0.1", "--authorize", "invalid")
    with station(only_201.url) as ws:
        assert ws.subprotocol == "ocpp2.0.1"
        assert call(ws, "BootNotification", BOOT)[2]["status"] == "Accepted"
        assert call(ws, "Authorize", {"idToken": TOKEN}, "a")[2] == {"idTokenInfo": {"status": "Invalid"}}
        assert call(ws, "NotifyEVChargingNeeds", {"evseId": 1, "chargingNeeds": {"requestedEnergyTransfer": "DC"}},
                    "n")[2] == {"status": "Accepted"}
    with pytest.raises(InvalidStatus) as refused:
        station(only_201.url, versions=("ocpp2.1", "ocpp1.6"))
    assert refused.value.response.status_code == 400


def _pem_files(tmp_path: Path, name: str, issued: Issued) -> tuple[Path, Path]:
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert.write_bytes(issued.cert.public_bytes(Encoding.PEM))
    key.write_bytes(issued.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return cert, key


def test_mutual_tls_refuses_a_station_without_a_client_certificate(start_csms, tmp_path: Path) -> None:
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    dates = {"not_before": start, "not_after": start + dt.timedelta(days=30), "domain_component": None}
    ca = make_cert("CSMS Test CA", None, **dates)
    server = make_cert("127.0.0.1", ca, ca=False, usage=("digitalSignature",), eku=[ExtendedKeyUsageOID.SERVER_AUTH],
                       **dates)
    client = make_cert("CP1", ca, ca=False, usage=("digitalSignature",), eku=[ExtendedKeyUsageOID.CLIENT_AUTH],
                       **dates)
    stranger = make_cert("CP1", make_cert("Other CA", None, **dates), ca=False, usage=("digitalSignature",), **dates)
    ca_pem, _ = _pem_files(tmp_path, "ca", ca)
    server_pem, server_key = _pem_files(tmp_path, "server", server)
    csms = start_csms("--tls-cert", str(server_pem), "--tls-key", str(server_key), "--client-ca", str(ca_pem))
    assert csms.url.startswith("wss://")

    def context(identity: Issued | None = None) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False  # the test server certificate has no subjectAltName
        ctx.load_verify_locations(cafile=ca_pem)
        if identity is not None:
            ctx.load_cert_chain(*_pem_files(tmp_path, f"client-{id(identity)}", identity))
        return ctx

    for refused in (None, stranger):
        with pytest.raises((OSError, ConnectionClosed, InvalidHandshake)):
            with station(csms.url, ssl=context(refused)) as ws:
                call(ws, "BootNotification", BOOT)  # TLS 1.3: the refusal may come after the client's handshake
    with station(csms.url, ssl=context(client)) as ws:
        assert call(ws, "BootNotification", BOOT)[2]["status"] == "Accepted"


def test_sigterm_closes_connections_and_exits_0(start_csms) -> None:
    csms = start_csms()
    with station(csms.url) as ws:
        assert call(ws, "BootNotification", BOOT)[2]["status"] == "Accepted"
        assert csms.stop() == 0
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    assert csms.log()[-1]["event"] == "disconnected"


def test_script_errors_are_clear() -> None:
    def error(data: Any) -> str:
        with pytest.raises(ScriptError) as e:
            CsmsScript.from_json(data)
        return str(e.value)

    assert "steps[0]" in error({"steps": [{"after": "Boot", "action": "Reset"}]})
    assert "exactly one of" in error({"steps": [{"after": "Authorize", "action": "Reset", "raw": "x"}]})
    assert "'paylod'" in error({"steps": [{"after": "Authorize", "action": "Reset", "paylod": {}}]})
    assert "'payload' must be a JSON object" in error({"steps": [{"after": "Connected", "action": "X", "payload": []}]})
    assert "delay" in error({"steps": [{"after": "Connected", "delay": -1, "close": True}]})
    assert "'stepz'" in error({"stepz": []})
    script = CsmsScript.from_json({"steps": [
        {"after": "TransactionEvent:Started", "delay": 1, "action": "Reset", "payload": {"type": "Immediate"}},
        {"after": "Connected", "close": True}]})
    assert [s.kind for s in script.steps] == ["call", "close"]
    assert script.steps_after("TransactionEvent:Started")[0].payload == {"type": "Immediate"}


def test_bad_options_exit_2(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"steps": [{"after": "Nope"}]}')
    for argv in (["--script", str(bad)], ["--boot", "pending:x"], ["--versions", "ocpp1.6"],
                 ["--authorize", str(tmp_path / "missing.json")], ["--client-ca", str(bad)]):
        assert main(["csms", "--port", "0", *argv]) == 2
        assert capsys.readouterr().err.startswith("edge csms: ")


def test_frame_checks_and_station_ids() -> None:
    assert check_frame([2, "1", "Heartbeat", {}], "ocpp2.1").route
    assert check_frame([6, "1", "NotifyPeriodicEventStream", {}], "ocpp2.1") == (False, None)  # SEND: no answer
    assert json.loads(check_frame([6, "1", "X", {}], "ocpp2.0.1").answer or "")[:3] == \
        [4, "1", "MessageTypeNotSupported"]
    assert json.loads(check_frame([2, 5, "Heartbeat", {}], "ocpp2.1").answer or "")[:3] == \
        [4, "-1", "RpcFrameworkError"]
    assert json.loads(check_frame([2, "7", "Heartbeat", []], "ocpp2.1").answer or "")[:3] == \
        [4, "7", "FormatViolation"]
    assert check_frame([3, "1"], "ocpp2.1") == (False, None)
    assert station_id_from_path("/ocpp/CP%201/") == "CP 1" and station_id_from_path("/?x=1") == ""
