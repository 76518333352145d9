"""`edge trace plot`: a session's power (charge and discharge), voltage, current and SoC as SVG or PNG, from the
board's samples or, without them, from the messages."""

from __future__ import annotations

import builtins
import re
import subprocess
import sys
from pathlib import Path

import cbor2
import pytest
from lxml import etree

from edge.trace import TraceDirectory
from edge.trace_plot import curves, plot

REPO = Path(__file__).resolve().parent.parent
SVG = "{http://www.w3.org/2000/svg}"


def _charge_then_discharge(folder: Path) -> Path:
    clock = [0.0]
    writer = TraceDirectory(folder, clock=lambda: clock[0]).open("evse1", "secc0", now=0.0)
    for n in range(40):
        clock[0] = n * 0.25
        current = 50.0 if n < 20 else -30.0  # charge, then export
        writer.hardware({"present_voltage": 400.0, "present_current": current, "power": 400.0 * current,
                         "target_voltage": 400.0, "target_current": current}, now=clock[0])
    writer.close("stopped", now=clock[0])
    return writer.path


def _path_points(root: etree._Element, gid: str) -> list[tuple[float, float]]:
    [group] = [g for g in root.iter(f"{SVG}g") if g.get("id") == gid]
    d = " ".join(p.get("d", "") for p in group.iter(f"{SVG}path"))
    numbers = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", d)]
    return list(zip(numbers[0::2], numbers[1::2], strict=False))


def test_the_svg_shows_charge_above_and_discharge_below_the_zero_line(tmp_path: Path) -> None:
    trace = _charge_then_discharge(tmp_path / "traces")
    data = plot(trace, tmp_path / "out.svg")
    assert data.source == "hardware" and min(data.present_power.values) < 0 < max(data.present_power.values)
    root = etree.parse(str(tmp_path / "out.svg")).getroot()
    text = etree.tostring(root).decode()
    for label in ("power / kW", "voltage / V", "current / A", "SoC / %"):
        assert all(word in text for word in label.split()), label
    zero_y = {y for _, y in _path_points(root, "power-zero")}
    assert len(zero_y) == 1
    (zero,) = zero_y
    ys = [y for _, y in _path_points(root, "power-present")]
    assert any(y < zero for y in ys) and any(y > zero for y in ys)  # SVG y grows downwards: both sides


def test_png_and_bad_suffix(tmp_path: Path) -> None:
    trace = _charge_then_discharge(tmp_path / "traces")
    plot(trace, tmp_path / "out.png")
    assert (tmp_path / "out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    done = subprocess.run([sys.executable, "-m", "edge.cli", "trace", "plot", str(trace), "-o",
                           str(tmp_path / "out.pdf")], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2 and "written as .svg or .png" in done.stderr and not (tmp_path / "out.pdf").exists()


def test_without_board_samples_the_messages_give_the_curves(tmp_path: Path) -> None:
    """A real -2 DC session's trace with its hardware records removed: present values from the charger's
    responses, targets from the car's requests, SoC from the car."""
    from edge.controller import ChargingController
    from edge.ev.iso2 import Iso2Car
    from edge.hardware import SimulatedCharger
    from edge.trace import EvseTrace
    from edge.v2g.charger import ChargerConnection, EvseConfig
    from edge.v2g.v2gtp import PayloadType, V2gtpMessage

    clock = [0.0]
    traces = TraceDirectory(tmp_path / "traces", clock=lambda: clock[0])
    config = EvseConfig(controller=ChargingController(), trace=EvseTrace(traces, "evse1", "lo"))
    conn = ChargerConnection(SimulatedCharger(voltage_tau=0.01, isolation_s=0.0), config=config)
    car = Iso2Car(soc=30.0, target_soc=31.0, capacity_wh=500.0)
    request = car.start()
    while request is not None:
        clock[0] += 0.05
        response = conn.handle(V2gtpMessage(PayloadType.EXI, request), clock[0])
        assert response is not None
        request = car.handle(response.payload, clock[0])
    conn.connection_lost("closed by the car")
    [path] = traces.traces()
    records = []
    with path.open("rb") as f:
        while True:
            try:
                records.append(cbor2.load(f))
            except (cbor2.CBORDecodeEOF, EOFError):
                break
    stripped = tmp_path / "stripped.cbor"
    stripped.write_bytes(b"".join(cbor2.dumps(r) for r in records if r["k"] != "hardware"))
    data = curves(stripped)
    assert data.source == "messages"
    assert max(data.present_current.values) > 10 and max(data.target_current.values) > 10
    assert data.soc.values[0] == pytest.approx(30.0, abs=0.5) and data.soc.values[-1] > data.soc.values[0]
    assert curves(path).source == "hardware"


def test_without_matplotlib_the_command_says_what_to_install(tmp_path: Path, monkeypatch, capsys) -> None:
    from edge.cli import main

    trace = _charge_then_discharge(tmp_path / "traces")
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert main(["trace", "plot", str(trace), "-o", str(tmp_path / "x.svg")]) == 2
    assert "edge trace plot needs matplotlib: pip install 'edge[plot]'" in capsys.readouterr().err
