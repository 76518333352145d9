"""bench/daemon.py runs (``--quick``, fewer starts still) and reports its numbers. No timing or size is asserted:
they are measured by the benchmark itself, never in a test; the test checks that every number is there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_daemon_benchmark_runs_and_reports_numbers(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(REPO / "bench" / "daemon.py"), "--quick", "--starts", "1",
                           "--messages", "100", "--json", str(tmp_path / "out.json")], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    numbers = json.loads((tmp_path / "out.json").read_text())
    for key in ("ready_s", "python_import_trio_s", "rss_idle_mb", "rss_peak_charging_mb", "bare_trio_rss_mb",
                "handle_us", "handle_traced_us", "trace_overhead_us", "trace_bytes_per_message"):
        assert isinstance(numbers[key], float) and numbers[key] == numbers[key], key  # a number, not NaN
    assert numbers["rss_peak_charging_mb"] >= numbers["rss_idle_mb"] > numbers["bare_trio_rss_mb"]
    assert numbers["trace_bytes_per_message"] > 50  # the traced session wrote its records
    assert "start to READY=1" in done.stdout and "trace overhead per charge-loop message" in done.stdout
