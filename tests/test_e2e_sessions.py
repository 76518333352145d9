"""Whole sessions between two network namespaces joined by a veth pair: the charger (``run_secc``:
SDP responder, TCP/TLS listeners, simulated hardware) in one, our simulated car (``run_ev``: SDP over
real IPv6 multicast, link-local TCP or TLS) in the other. Each session ends with the energy the
charger metered in the car's battery and a clean SessionStop, with no power flowing after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from edge.ev.base import SimulatedCar
from edge.ev.din import DinCar
from edge.ev.iso2 import ContractCredentials, Iso2Car
from edge.ev.run import EvRun, run_ev
from edge.hardware import SimulatedCharger
from edge.pki.plug_and_charge import LocalPlugAndCharge
from edge.v2g.charger import EvseConfig
from edge.v2g.tls import client_context_from_pki, server_context_combined, server_context_from_pki
from tests.netns import charger_between_namespaces, inside

CAPACITY_WH = 2_000.0  # a small battery: a few tenths of a percent take seconds, not minutes


async def between_namespaces(car: SimulatedCar, *, config: EvseConfig | None = None, tls: Path | None = None,
                             **run_options: Any) -> tuple[EvRun, SimulatedCharger]:
    """The charger in one namespace, ``car`` in the other; ``tls``: the PKI folder both use for TLS."""
    hw = SimulatedCharger(voltage_tau=0.05, isolation_s=0.2)
    server_tls = server_context_from_pki(tls) if tls else None
    async with charger_between_namespaces(hw, config=config, ssl_context=server_tls) as (ev_ns, _, _):
        with inside(ev_ns), trio.fail_after(60):
            run = await run_ev("ev0", car, ssl_context=client_context_from_pki(tls) if tls else None, **run_options)
    return run, hw


def assert_clean_and_metered(run: EvRun, hw: SimulatedCharger, start_soc: float) -> None:
    car = run.car
    assert car.stopped_cleanly and car.soc >= car.target_soc
    assert car.soc == pytest.approx(start_soc + 100 * car.energy_wh / CAPACITY_WH)
    assert car.energy_wh > 0 and hw.energy_wh() == pytest.approx(car.energy_wh, rel=0.2)
    assert not hw.closed and hw.target_i == 0 and hw.ac_limit == 0  # no power after the session


async def test_iso2_ac_eim() -> None:
    car = Iso2Car(mode="ac", soc=50, target_soc=50.5, capacity_wh=CAPACITY_WH)
    run, hw = await between_namespaces(car)
    assert_clean_and_metered(run, hw, 50)
    assert car.payment_used == "ExternalPayment" and "ChargingStatusReq" in car.log and run.tls == [False]


async def test_iso2_dc_eim_with_a_renegotiation() -> None:
    car = Iso2Car(soc=50, target_soc=51, renegotiate_at_soc=50.5, capacity_wh=CAPACITY_WH)
    run, hw = await between_namespaces(car)
    assert_clean_and_metered(run, hw, 50)
    assert car.renegotiations == 1 and car.log.count("ChargeParameterDiscoveryReq") == 2


async def test_iso2_pause_and_resume() -> None:
    car = Iso2Car(soc=50, target_soc=51, pause_at_soc=50.4, capacity_wh=CAPACITY_WH)
    run, hw = await between_namespaces(car, pause_s=0.5)
    assert_clean_and_metered(run, hw, 50)
    assert run.connections == 2 and car.resumed and car.log.count("SessionSetupReq") == 2
    assert car.log.count("CableCheckReq") >= 2  # the contactors were open: the cable is checked again


async def test_din_dc() -> None:
    car = DinCar(soc=50, target_soc=50.5, capacity_wh=CAPACITY_WH)
    run, hw = await between_namespaces(car)
    assert_clean_and_metered(run, hw, 50)
    assert "WeldingDetectionReq" in car.log


async def test_iso2_dc_pnc_over_tls(pki: Path) -> None:
    pnc = LocalPlugAndCharge.from_pki_folder(pki, local_install=False)
    car = Iso2Car(payment="pnc", contract=ContractCredentials.from_pki(pki), soc=50, target_soc=50.5,
                  capacity_wh=CAPACITY_WH)
    run, hw = await between_namespaces(car, config=EvseConfig(pnc=pnc), tls=pki)
    assert_clean_and_metered(run, hw, 50)
    assert run.tls == [True] and car.payment_used == "Contract"  # PnC offered: the connection is TLS
    assert ("signature over AuthorizationReq", "OK") in pnc.decisions


async def test_iso2_ac_pnc_receipts_and_pause_over_tls(pki: Path) -> None:
    pnc = LocalPlugAndCharge.from_pki_folder(pki, local_install=False)
    car = Iso2Car(mode="ac", payment="pnc", contract=ContractCredentials.from_pki(pki), soc=50, target_soc=50.6,
                  pause_at_soc=50.3, capacity_wh=CAPACITY_WH)
    run, hw = await between_namespaces(car, config=EvseConfig(pnc=pnc, receipt_interval=0.5), tls=pki, pause_s=0.5)
    assert_clean_and_metered(run, hw, 50)
    assert run.tls == [True, True] and car.resumed and car.receipts >= 2
    assert car.log.count("PaymentDetailsReq") == 2  # a resumed PnC session authorizes again
    assert [w for w, c in pnc.decisions if c == "OK"].count("signature over MeteringReceiptReq") == car.receipts


async def edge_ev_in_namespace(ev_args: list[str], *, config: EvseConfig | None = None,
                               tls: Path | None = None) -> tuple[subprocess.CompletedProcess, SimulatedCharger]:
    """``edge ev`` as a testbench runs it: its own process in the car's namespace; our charger (TLS on
    one port for -2 and -20 when ``tls``) in the other."""
    hw = SimulatedCharger(voltage_tau=0.05, isolation_s=0.2)
    ssl_context = server_context_combined(tls) if tls else None
    async with charger_between_namespaces(hw, config=config, ssl_context=ssl_context) as (ev_ns, _, _):
        argv = ["nsenter", f"--net=/var/run/netns/{ev_ns}", sys.executable, "-m", "edge.cli", "ev", "--iface",
                "ev0", *ev_args]
        with trio.fail_after(60):
            done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False,
                                          cwd=Path(__file__).parent.parent, env={**os.environ})
    assert done.returncode == 0, done.stderr.decode() + done.stdout.decode()
    assert not hw.closed
    return done, hw


async def test_edge_ev_command() -> None:
    done, _ = await edge_ev_in_namespace(["--mode", "ac", "--soc", "50", "--target-soc", "50.02",
                                          "--pause-at-soc", "50.01", "--pause-s", "0.2"])
    summary = json.loads(done.stdout)
    assert summary["ok"] and summary["stopped_cleanly"] and summary["resumed"] and summary["protocol"] == "iso2"
    assert summary["energy_wh"] > 0 and summary["soc"] >= 50.02 and summary["connections"] == 2


async def test_edge_ev_command_iso20_pnc_over_tls_13(pki: Path) -> None:
    pnc = LocalPlugAndCharge.from_pki_folder(pki)
    done, hw = await edge_ev_in_namespace(["--protocol", "iso20", "--payment", "pnc", "--tls", "--pki", str(pki),
                                           "--pki-folder", "iso15118_20_ed448", "--soc", "50", "--target-soc",
                                           "50.02"], config=EvseConfig(pnc=pnc), tls=pki)
    summary = json.loads(done.stdout)
    assert summary["ok"] and summary["protocol"] == "iso20-dc" and summary["authorization"] == "PnC"
    assert summary["tls"] and summary["energy_wh"] > 0 and hw.energy_wh() > 0
    assert ("signature over PnC_AReqAuthorizationMode", "OK") in pnc.decisions
