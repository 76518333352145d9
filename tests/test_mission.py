"""`edge simulate`, the whole mission: the daemon built from a configuration with two EVSEs, three cars
(DIN, -2 Plug & Charge, -20 DC_BPT charge/discharge/charge) concurrently, the test CSMS; summaries built from
the traces and the CSMS's log."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

from edge.mission import run_mission
from edge.trace import read_trace, show

REPO = Path(__file__).resolve().parent.parent


async def test_the_mission_charges_three_cars_on_two_evses_with_the_csms(tmp_path: Path, tshark: str) -> None:
    lines: list[str] = []
    results = await run_mission(tmp_path, out=lines.append)
    assert [r.name.split(" ")[0] for r in results] == ["DIN", "ISO", "ISO"]
    assert all(r.ok for r in results), [r.text() for r in results]
    din, pnc, bpt = results
    assert (din.evse, pnc.evse, bpt.evse) == (1, 1, 2)
    assert din.imported_wh > 5 and pnc.imported_wh > 5 and din.exported_wh == pnc.exported_wh == 0
    assert bpt.imported_wh > 5 and bpt.exported_wh > 1  # charged, discharged, charged
    for result in results:
        assert result.transaction_events >= 2  # Started and Ended at least
        assert result.messages > 20 and " ms of " in result.slowest
        records = list(read_trace(Path(result.trace)))
        assert records[0].get("evse") == f"evse{result.evse}" and records[-1].kind == "end"
    assert any("authorized contract" in note and "Accepted" in note for note in pnc.notes), pnc.notes
    assert "setpoints from the test CSMS's TxDefaultProfile (OCPP 2.1 CentralSetpoint)" in bpt.notes
    # the sessions overlapped: EVSE 2 was charging or discharging while EVSE 1 was
    assert any("EVSE 1: DIN" in line and ": charging" in line for line in lines)
    assert any("EVSE 2: ISO" in line and ": discharging" in line for line in lines)
    for tls_session in (pnc, bpt):  # TLS bytes and their session keys are in the trace (a testbench setting)
        kinds = {r.kind for r in read_trace(Path(tls_session.trace))}
        assert {"wire", "tls", "hardware"} <= kinds, kinds
    # the daemon's TLS traces become captures that tshark decrypts with the embedded keys (V2GTP inside)
    from edge.trace_pcap import write_pcapng

    for tls_session in (pnc, bpt):
        capture = tmp_path / f"evse{tls_session.evse}-{tls_session.messages}.pcapng"
        write_pcapng(Path(tls_session.trace), capture)
        fields = subprocess.run([tshark, "-r", str(capture), "-Y", "data.data", "-T", "fields", "-e", "data.data"],
                                capture_output=True, text=True, check=True).stdout.split()
        assert len(fields) >= tls_session.messages // 2 and all(f.startswith("01fe") for f in fields), fields[:3]
    out = io.StringIO()
    show(Path(bpt.trace), out)
    assert "DC_ChargeLoopReq" in out.getvalue()


def test_edge_simulate_without_a_csms_says_so_and_charges(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "edge.cli", "simulate", "--no-csms", "--json", "--out",
                          str(tmp_path / "run")], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    document = json.loads(run.stdout.strip().splitlines()[-1])
    sessions = document["sessions"]
    assert len(sessions) == 3 and all(s["ok"] for s in sessions)
    assert all(s["transaction_events"] == 0 for s in sessions)  # no CSMS
    if os.geteuid() == 0:  # as root: network namespaces, SLAC through the emulator, SDP, `edge ev` processes
        assert all(any(n.startswith("SLAC matched") for n in s["notes"]) for s in sessions), sessions
        assert "plc_interface" in (tmp_path / "run" / "edge.toml").read_text()
        bpt = sessions[2]
        assert bpt["exported_wh"] > 1 and "setpoints from a local setpoint script" in bpt["notes"]
    assert "[ocpp]" not in (tmp_path / "run" / "edge.toml").read_text()
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "run" / "traces").glob("*.cbor")) == [
        "evse1", "evse1", "evse2"]
