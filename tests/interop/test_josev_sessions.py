"""Interop: Josev's EV simulator (PyPI ``iso15118`` 0.31.2) runs a DIN SPEC 70121 DC session, an
ISO 15118-2 DC session (ExternalPayment) over TCP, and the same -2 session over TLS against our
charger, over SDP and TCP/TLS between two network namespaces.

Our charger runs in this process in one namespace (``run_secc``; for TLS the same SDP responder and
V2GTP server with a TLS context, both sides using one PKI folder from ``create_test_pki``); Josev's EVCC
runs as a subprocess in the other (``ip netns exec``). Over TLS Josev would pick PnC if we offered
Contract; our charger offers it only with a PnC backend configured, so this session is EIM.

Needs root, ``ip``, java/javac and PyPI (first run builds the EXIficient venv). In CI (env CI set) a
missing prerequisite fails the test instead of skipping it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

import edge.secc
import exi
from edge.hardware import ChargerHardware, SimulatedDcCharger
from edge.pki.testpki import create_test_pki
from edge.secc import link_local_address, run_secc
from edge.v2g.charger import ChargerConnection
from edge.v2g.net import serve_sdp
from edge.v2g.sdp import SdpServer
from edge.v2g.server import serve_tcp
from edge.v2g.tls import server_context_from_pki
from tests.netns import inside, link_local, two_namespaces

from .josev_ev import SUCCESS, SUCCESS_ISO2, josev_python, run_josev_ev, write_config

TIMEOUT = 120.0  # the whole Josev run, SDP to TCP close


@dataclass(frozen=True)
class Case:
    josev_protocol: str
    config: dict
    ours: str  # our protocol label
    requests: tuple[str, ...]  # every request our session must have seen
    success: str  # Josev's stop-reason wording for a good end
    tls: bool = False

    @property
    def id(self) -> str:
        return self.ours + ("-tls" if self.tls else "")


ISO2_DC_EIM = ("SessionSetupReq", "ServiceDiscoveryReq", "PaymentServiceSelectionReq", "AuthorizationReq",
               "ChargeParameterDiscoveryReq", "CableCheckReq", "PreChargeReq", "PowerDeliveryReq", "CurrentDemandReq",
               "WeldingDetectionReq", "SessionStopReq")
CASES = [
    Case("DIN_SPEC_70121", {}, "din",
         ("SessionSetupReq", "ServiceDiscoveryReq", "ServicePaymentSelectionReq", "ContractAuthenticationReq",
          "ChargeParameterDiscoveryReq", "CableCheckReq", "PreChargeReq", "PowerDeliveryReq", "CurrentDemandReq",
          "SessionStopReq"), SUCCESS),
    Case("ISO_15118_2", {"energy_services": ("DC",), "energy_transfer_mode": "DC_extended"}, "iso2",
         ISO2_DC_EIM, SUCCESS_ISO2),
    Case("ISO_15118_2", {"energy_services": ("DC",), "energy_transfer_mode": "DC_extended"}, "iso2",
         ISO2_DC_EIM, SUCCESS_ISO2, tls=True),
]


async def run_tls_secc(iface: str, hw: ChargerHardware, pki: Path, keylog: Path, make_connection, *,
                       task_status=trio.TASK_STATUS_IGNORED) -> None:
    """``run_secc`` with TLS only: SDP answers with the TLS port, the V2GTP server speaks TLS with
    the SECC chain and key of ``pki``."""
    for proto in ("apphand", "iso2", "din"):
        exi.load(proto)  # as run_secc does: the first SessionSetupRes must not pay for the import
    async with trio.open_nursery() as nursery:
        port = await nursery.start(lambda task_status: serve_tcp(
            0, lambda: make_connection(hw, tls=True), ssl_context=server_context_from_pki(pki, keylog=keylog),
            task_status=task_status))
        await nursery.start(serve_sdp, SdpServer(link_local_address(iface), tcp_port=None, tls_port=port), iface)
        task_status.started(port)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_josev_ev_dc_session(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   caplog: pytest.LogCaptureFixture) -> None:
    python = josev_python()
    connections: list[ChargerConnection] = []

    def recording_connection(*args, **kwargs) -> ChargerConnection:
        connections.append(ChargerConnection(*args, **kwargs))
        return connections[-1]

    monkeypatch.setattr(edge.secc, "ChargerConnection", recording_connection)
    caplog.set_level(logging.INFO, logger="edge")
    workdir = tmp_path / "josev"
    pki = tmp_path / "pki" if case.tls else None
    if pki is not None:
        create_test_pki(pki)  # one folder for both: Josev trusts its V2G root, we serve its SECC chain
    write_config(workdir, "ev0", protocols=(case.josev_protocol,), use_tls=case.tls, pki_path=pki, **case.config)
    hw = SimulatedDcCharger(voltage_tau=0.05, isolation_s=0.2)
    keylog = tmp_path / "tls-keys.log"

    with two_namespaces("secc0", "ev0") as (secc_ns, ev_ns):
        link_local(secc_ns, "secc0")
        link_local(ev_ns, "ev0")  # Josev refuses an interface whose link-local address is tentative
        async with trio.open_nursery() as nursery:
            with inside(secc_ns):
                if pki is not None:
                    await nursery.start(run_tls_secc, "secc0", hw, pki, keylog, recording_connection)
                else:
                    await nursery.start(run_secc, "secc0", 0, hw)
            result = await run_josev_ev(python, workdir, netns=ev_ns, timeout=TIMEOUT,
                                        log_path=tmp_path / "josev.log")
            await trio.sleep(0.2)  # let our side see the TCP close
            nursery.cancel_scope.cancel()

    print(f"Josev ran {result.duration:.1f} s, stop reason: {result.stop_reason!r}")
    for c in connections:
        if c.session is not None:
            print("our response times (max ms):",
                  {k: round(max(v) * 1000, 1) for k, v in c.session.stats.items()})
    print(f"energy delivered: {hw.energy_wh():.2f} Wh")
    assert not result.timed_out, f"Josev did not finish within {TIMEOUT} s:\n{result.tail()}"
    assert result.successful, f"Josev's session did not end successfully:\n{result.tail()}"
    assert result.grep(rf"Chosen protocol: {case.josev_protocol}"), result.tail()
    assert result.grep(f"Starting {'TLS' if case.tls else 'TCP'} client"), result.tail()

    # our side: one session that got SessionStopReq after delivering energy, contactors open
    assert len(connections) == 1, [c.session for c in connections]
    session = connections[0].session
    assert session is not None and connections[0].protocol is not None
    assert connections[0].protocol.name == case.ours
    assert session.state == "stopped" and session.done
    for name in case.requests:
        assert name in session.stats, f"our session never saw {name}: {sorted(session.stats)}"
    assert hw.energy_wh() > 0
    assert not hw.closed
    assert case.success in result.stop_reason
    assert connections[0].tls == case.tls
    if case.tls:  # the session's keys are in the key log for Wireshark
        assert [line for line in keylog.read_text().splitlines() if re.match(r"CLIENT_RANDOM [0-9a-f]{64} ", line)]
    if result.tcp_closed:  # Josev closes TCP 5 s after the stop; our server must have seen it
        ended = [r.getMessage() for r in caplog.records if "V2G connection ended" in r.getMessage()]
        assert ended == ["V2G connection ended: closed by the car"], ended
