"""``edge ev`` as a testbench runs it: the options it maps onto the cars, its help, and, between two
network namespaces with our charger, a run stopped by SIGTERM or SIGINT (a partial JSON summary, exit
143/130, no traceback), by --timeout (exit 124), its message log (-v, -vv), and a -20 AC_BPT car."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from pathlib import Path

import pytest
import trio

from edge.cli import _ev_car, build_parser
from edge.ev import one_line
from edge.ev.iso20 import Iso20Car
from edge.hardware import SimulatedCharger, bidirectional_charger
from edge.v2g.iso20.messages import rational
from exi.model import iso20_dc as dc
from tests.netns import charger_between_namespaces

ROOT = Path(__file__).parent.parent


def ev_args(*argv: str):
    return build_parser().parse_args(["ev", "--iface", "lo", *argv])


def test_iso20_options_make_the_car_they_say() -> None:
    car = _ev_car(ev_args("--protocol", "iso20", "--service", "ac_bpt", "--control", "dynamic", "--capacity-kwh",
                          "50", "--soc", "70", "--min-soc", "30", "--max-power-kw", "7.4", "--max-discharge-kw", "5",
                          "--transfer-s", "60", "--quirks", "negative-discharge-limits"))
    assert isinstance(car, Iso20Car) and (car.service, car.control, car.kind) == ("ac_bpt", "dynamic", "ac")
    assert (car.capacity_wh, car.soc, car.min_soc, car.max_power, car.max_discharge_power, car.transfer_s) == \
        (50_000, 70, 30, 7_400, 5_000, 60)
    assert car.quirks.negative_discharge_limits
    assert _ev_car(ev_args("--protocol", "iso20", "--mode", "ac")).service == "ac"  # --mode picks the plain service


@pytest.mark.parametrize("argv, message", [
    (["--service", "dc_bpt"], "--service are ISO 15118-20 options: add --protocol iso20"),
    (["--protocol", "din", "--control", "dynamic"], "--control are ISO 15118-20 options"),
    (["--protocol", "iso20", "--mode", "ac", "--service", "dc"], "--mode ac and --service dc disagree"),
    (["--protocol", "iso20", "--min-soc", "120"], "--min-soc must be a state of charge in % (0-100)"),
    (["--capacity-kwh", "0"], "--capacity-kwh must be positive"),
])
def test_options_that_do_not_fit_are_refused(argv: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _ev_car(ev_args(*argv))


def test_every_ev_option_says_its_default() -> None:
    ev = next(a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "ev")[1]
    undocumented = [a.option_strings[-1] for a in ev._actions
                    if a.option_strings and a.dest not in ("help", "iface") and "default" not in (a.help or "")]
    assert undocumented == []


def test_the_message_log_has_one_line_per_message() -> None:
    mode = dc.Scheduled_DC_CLReqControlModeType(EVTargetCurrent=rational(-20.5), EVTargetVoltage=rational(390))
    line = one_line(dc.DC_ChargeLoopReqType(EVPresentVoltage=rational(380), Scheduled_DC_CLReqControlMode=mode))
    assert line == ("DC_ChargeLoopReq(EVPresentVoltage=380, Scheduled_DC_CLReqControlMode="
                    "Scheduled_DC_CLReqControlMode(EVTargetCurrent=-20.5, EVTargetVoltage=390))")
    assert "\n" not in one_line(b"\x01" * 40) and one_line(b"\x01" * 40).endswith("...")


# ------------------------------------------------------------------ between namespaces


async def edge_ev(ev_ns: str, *argv: str, stop_when: str | None = None, sig: int | None = None
                  ) -> tuple[int, dict, str]:
    """``edge ev`` in the car's namespace; with ``stop_when``, ``sig`` is sent once that text is on its
    stderr (it needs -v). Returns the exit code, the JSON summary and stderr."""
    command = ["nsenter", f"--net=/var/run/netns/{ev_ns}", sys.executable, "-m", "edge.cli", "ev", "--iface", "ev0",
               *argv]
    process = await trio.lowlevel.open_process(command, stdout=-1, stderr=-1, cwd=ROOT, env={**os.environ})
    err, out = b"", b""
    assert process.stdout is not None and process.stderr is not None
    try:
        async with trio.open_nursery() as nursery:

            async def read_stdout() -> None:
                nonlocal out
                async for chunk in process.stdout:
                    out += chunk

            nursery.start_soon(read_stdout)
            async for chunk in process.stderr:
                err += chunk
                if stop_when is not None and stop_when.encode() in err:
                    stop_when = None
                    process.send_signal(sig)
        await process.wait()
    finally:
        if process.returncode is None:  # the test failed or timed out: no car left running
            process.kill()
            await process.wait()
    return process.returncode, json.loads(out), err.decode()


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
async def test_a_signal_mid_charge_prints_what_happened_so_far(sig: int, code: int) -> None:
    hw = SimulatedCharger(voltage_tau=0.05, isolation_s=0.2)
    async with charger_between_namespaces(hw) as (ev_ns, _, _):
        with trio.fail_after(60):
            rc, summary, err = await edge_ev(ev_ns, "--protocol", "iso20", "--soc", "40", "--target-soc", "90", "-v",
                                             stop_when="-> DC_ChargeLoopReq\n", sig=sig)
    assert rc == code and "Traceback" not in err, err
    assert summary["outcome"] == "interrupted" and summary["signal"] == signal.Signals(sig).name
    assert not summary["ok"] and summary["messages"] >= 10 and "DC_ChargeLoopReq" in summary["last_requests"]
    assert summary["connections"] == 1 and not summary["stopped_cleanly"]


async def test_the_overall_timeout_and_the_message_log() -> None:
    hw = SimulatedCharger(voltage_tau=0.05, isolation_s=0.2)
    async with charger_between_namespaces(hw) as (ev_ns, _, _):
        with trio.fail_after(60):
            rc, summary, err = await edge_ev(ev_ns, "--protocol", "iso20", "--soc", "40", "--target-soc", "90",
                                             "--timeout", "3", "-vv")
    assert rc == 124 and summary["outcome"] == "timeout" and "--timeout 3 s" in summary["error"]
    assert summary["energy_imported_wh"] > 0 and "Traceback" not in err
    assert " -> SessionSetupReq\n" in err and " <- SessionSetupRes\n" in err  # names, times ...
    assert re.search(r" <- SessionSetupRes\(Header=MessageHeader\(SessionID=\w{16}, .*ResponseCode=OK", err)  # -vv


async def test_an_ac_bpt_car_in_dynamic_mode_through_the_command() -> None:
    hw = bidirectional_charger(voltage_tau=0.05, isolation_s=0.2)
    async with charger_between_namespaces(hw) as (ev_ns, _, _):
        with trio.fail_after(60):
            rc, summary, err = await edge_ev(ev_ns, "--protocol", "iso20", "--service", "ac_bpt", "--control",
                                             "dynamic", "--capacity-kwh", "2", "--soc", "50", "--target-soc", "50.1",
                                             "--timeout-factor", "2")
    assert rc == 0 and summary["ok"] and summary["outcome"] == "completed", err
    assert summary["protocol"] == "iso20-ac" and summary["service"] == "AC_BPT" and summary["control"] == "dynamic"
    assert summary["soc_end"] >= 50.1 and summary["energy_imported_wh"] > 0 and hw.energy_wh() > 0
