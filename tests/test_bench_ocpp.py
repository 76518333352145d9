"""bench/ocpp.py runs (``--quick``, smaller still) and reports its numbers and checks. No timing is asserted:
speed is measured by the benchmark itself, never in a test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_ocpp_benchmark_runs_and_reports_numbers(tmp_path: Path) -> None:
    out = tmp_path / "ocpp.json"
    done = subprocess.run([sys.executable, str(REPO / "bench" / "ocpp.py"), "--quick", "--rounds", "5",
                           "--events", "50", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "Plug & Charge" in done.stdout and "Durable queue" in done.stdout
    data = json.loads(out.read_text())
    assert data["problems"] == []  # every decision from the CSMS; every event delivered once, in order
    pnc = data["pnc"]
    assert pnc["rounds"] == 5
    assert pnc["local_ms"]["p50"] > 0 and pnc["ocpp_ms"]["p50"] > 0
    replay = data["replay"]
    assert replay["events"] == 50
    assert replay["queue_events_per_s"] > 0 and replay["replay_events_per_s"] > 0
    assert set(replay["references"]) == {"TransactionEvent", "Heartbeat"}
    assert all(ref["events_per_s"] > 0 for ref in replay["references"].values())
