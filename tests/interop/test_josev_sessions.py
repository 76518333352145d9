"""Interop: Josev's EV simulator (PyPI ``iso15118`` 0.31.2) runs whole charging sessions against our
charger, over SDP and TCP/TLS between two network namespaces: DIN SPEC 70121 DC; ISO 15118-2 DC with
ExternalPayment over TCP and over TLS; ISO 15118-2 DC with Plug & Charge (Contract) over TLS; and
ISO 15118-2 AC (three phases) with ExternalPayment over TCP and with Plug & Charge over TLS; a
PnC session whose contract our backend refuses; and contract certificate installation before PnC.

Our charger runs in this process in one namespace (``run_secc`` on the simulated AC+DC charger; for
TLS only its TLS listener, with the SECC chain of one PKI folder from ``create_test_pki``); Josev's
EVCC runs as a subprocess in the other (``ip netns exec``) with ``PKI_PATH`` on the same folder, so
it trusts our SECC chain and presents its contract chain (MO sub-CAs, EMAID in the leaf's CN) from it.
Josev picks Contract whenever a TLS charger offers it; we offer it only with a PnC backend configured
(``LocalPlugAndCharge`` trusting the folder's MO and V2G roots), so ``iso2-tls`` stays EIM.

Facts about Josev's EV in these sessions (evcc/states/iso15118_2_states.py): it signs AuthorizationReq
(Id "id1", our GenChallenge) and, in AC only, a MeteringReceiptReq whenever ChargingStatusRes says
ReceiptRequired; in DC it ignores ReceiptRequired in CurrentDemandRes and never sends a receipt.

Certificate installation (``isCertInstallNeeded``, TLS and Contract only): Josev selects services 1 and
2 after a ServiceDetailReq(2), sends CertificateInstallationReq (Id "id1", its OEM leaf, the V2G root's
issuer as ``str(x509.Name)``, e.g. "<Name(CN=V2GRootCA,...)>", and serial) signed with the OEM key; it
checks our response's four digests (its elements encoded by EXIficient), the CPS signature and the CPS
chain to its V2G root, and decrypts the key without checking it against the new leaf. As shipped it then
throws the contract away (``SimEVController.store_contract_cert_and_priv_key`` is a no-op) and pays with
the OLD contract of its PKI folder (``iso2-pnc-install-as-shipped``). ``iso2-pnc-install`` runs it with a
controller that stores the contract in (a copy of) that folder, as a car would; the same code then pays
with the NEW contract, and signs AuthorizationReq with the key it decrypted.

Needs root, ``ip``, java/javac and PyPI (first run builds the EXIficient venv). In CI (env CI set) a
missing prerequisite fails the test instead of skipping it.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
from cryptography import x509

from edge.hardware import SimulatedCharger
from edge.pki.plug_and_charge import LocalPlugAndCharge
from edge.pki.testpki import TEST_EMAID, create_test_pki
from edge.v2g.charger import ChargerConnection, EvseConfig
from edge.v2g.iso2.session import Iso2Session
from edge.v2g.tls import server_context_from_pki
from tests.netns import charger_between_namespaces

from .josev_ev import (
    STORED_CONTRACT,
    SUCCESS,
    SUCCESS_ISO2,
    JosevResult,
    josev_python,
    run_josev_ev,
    write_config,
)

TIMEOUT = 120.0  # the whole Josev run, SDP to TCP close
RECEIPT_INTERVAL = 0.2  # s: PnC cases ask for a signed MeteringReceipt this often once power flows


@dataclass(frozen=True)
class Case:
    id: str
    josev_protocol: str
    ours: str  # our protocol label
    requests: tuple[str, ...]  # every request our session must have seen
    success: str  # Josev's stop-reason wording for a good end
    josev_config: dict = field(default_factory=dict)  # write_config's energy and loop settings
    tls: bool = False
    pnc: bool = False  # our charger offers Contract (PnC) with a local backend on the shared PKI
    receipt_interval: float | None = None
    receipts_expected: bool = False  # Josev answers ReceiptRequired with a signed MeteringReceiptReq
    cert_install: bool = False  # Josev asks our local issuer for a new contract first
    store_installed_contract: bool = False  # ... and keeps it (Josev's own controller discards it)


DC = {"energy_services": ("DC",), "energy_transfer_mode": "DC_extended"}
# more charge loops than DC: Josev's AC loop has no delay and the receipt interval must pass in it
AC = {"energy_services": ("AC",), "energy_transfer_mode": "AC_three_phase_core", "charge_loop_cycle": 30}
ISO2_START = ("SessionSetupReq", "ServiceDiscoveryReq", "PaymentServiceSelectionReq", "AuthorizationReq",
              "ChargeParameterDiscoveryReq")
ISO2_DC = (*ISO2_START, "CableCheckReq", "PreChargeReq", "PowerDeliveryReq", "CurrentDemandReq",
           "WeldingDetectionReq", "SessionStopReq")
ISO2_AC = (*ISO2_START, "PowerDeliveryReq", "ChargingStatusReq", "SessionStopReq")
INSTALLATION = ("ServiceDetailReq", "CertificateInstallationReq", "PaymentDetailsReq")
CASES = [
    Case("din", "DIN_SPEC_70121", "din",
         ("SessionSetupReq", "ServiceDiscoveryReq", "ServicePaymentSelectionReq", "ContractAuthenticationReq",
          "ChargeParameterDiscoveryReq", "CableCheckReq", "PreChargeReq", "PowerDeliveryReq", "CurrentDemandReq",
          "SessionStopReq"), SUCCESS),
    Case("iso2", "ISO_15118_2", "iso2", ISO2_DC, SUCCESS_ISO2, DC),
    Case("iso2-tls", "ISO_15118_2", "iso2", ISO2_DC, SUCCESS_ISO2, DC, tls=True),
    # DC PnC: we ask for receipts, Josev's DC loop ignores ReceiptRequired; the session must carry on
    Case("iso2-pnc", "ISO_15118_2", "iso2", (*ISO2_DC, "PaymentDetailsReq"), SUCCESS_ISO2, DC, tls=True,
         pnc=True, receipt_interval=RECEIPT_INTERVAL),
    Case("iso2-ac", "ISO_15118_2", "iso2", ISO2_AC, SUCCESS_ISO2, AC),
    Case("iso2-ac-pnc", "ISO_15118_2", "iso2", (*ISO2_AC, "PaymentDetailsReq", "MeteringReceiptReq"), SUCCESS_ISO2,
         AC, tls=True, pnc=True, receipt_interval=RECEIPT_INTERVAL, receipts_expected=True),
    Case("iso2-pnc-install", "ISO_15118_2", "iso2", (*ISO2_DC, *INSTALLATION), SUCCESS_ISO2, DC, tls=True, pnc=True,
         cert_install=True, store_installed_contract=True),
    Case("iso2-pnc-install-as-shipped", "ISO_15118_2", "iso2", (*ISO2_DC, *INSTALLATION), SUCCESS_ISO2, DC,
         tls=True, pnc=True, cert_install=True),
]


def check_pnc_decisions(pnc: LocalPlugAndCharge, session: Iso2Session, *, receipts_expected: bool,
                        emaid: str = TEST_EMAID) -> None:
    """Our PnC backend accepted Josev's contract chain (``emaid``), verified its AuthorizationReq signature
    and every MeteringReceiptReq signature, authorized the EMAID, and refused nothing."""
    decisions = pnc.decisions
    assert session.payment_option == "Contract"
    assert session.contract is not None and session.contract.emaid == emaid
    assert len(session.contract.sub_cas) == 2, "Josev sends MO sub-CA 2 and 1 with its contract leaf"
    refused = [(what, code) for what, code in decisions if code != "OK"]
    assert not refused, decisions
    whats = [what for what, _ in decisions]
    assert [w for w in whats if w.startswith(f"contract {emaid}: valid chain of 2 sub-CA(s)")], decisions
    assert whats.count("signature over AuthorizationReq") == 1, decisions
    assert f"authorize {emaid}" in whats, decisions
    assert whats.count("signature over MeteringReceiptReq") == session.receipts, decisions
    if receipts_expected:
        assert session.receipts >= 1, f"Josev sent no MeteringReceiptReq: {decisions}"


def check_installation(pnc: LocalPlugAndCharge, session: Iso2Session, result: JosevResult, josev_pki: Path, *,
                       stored: bool) -> None:
    """Josev's OEM-signed CertificateInstallationReq verified and answered by our local issuer, Josev
    accepted our signed response (no complaint, PaymentDetails next), and then: with ``stored`` the NEW
    contract paid and authorized, its key (decrypted by Josev) signing AuthorizationReq; as shipped the
    OLD one."""
    assert pnc.issuer is not None and len(pnc.issuer.issued) == 1, pnc.decisions
    new_emaid = pnc.issuer.issued[0]
    what, code = pnc.decisions[0]
    assert code == "OK" and what.startswith(f"installation: contract {new_emaid} for ") and "CN=OEMProvCert" in what, \
        pnc.decisions
    assert result.grep(r'"CertificateInstallationRes":\{"ResponseCode":"OK"'), result.tail()
    assert not result.grep("Signature verification of CertificateInstallationRes failed"), result.tail()
    paid_with = new_emaid if stored else TEST_EMAID
    check_pnc_decisions(pnc, session, receipts_expected=False, emaid=paid_with)
    assert pnc.decisions[1][0].startswith(f"contract {paid_with}: valid chain"), pnc.decisions
    stored_lines = [m for line in result.log if (m := STORED_CONTRACT.search(line))]
    contract_in_josev_folder = x509.load_der_x509_certificate(
        (josev_pki / "iso15118_2" / "certs" / "contractLeafCert.der").read_bytes())
    cn = contract_in_josev_folder.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value
    if stored:  # Josev decrypted the key we encrypted to its OEM certificate, and it fits the new leaf
        assert [(m["emaid"], m["match"]) for m in stored_lines] == [(new_emaid, "True")], result.tail()
        assert cn == new_emaid
    else:
        assert not stored_lines and cn == TEST_EMAID


async def run_against_josev(python: Path, tmp_path: Path, hw: SimulatedCharger, config: EvseConfig,
                            pki: Path | None, keylog: Path, *, store_installed_contract: bool = False
                            ) -> tuple[JosevResult, list[ChargerConnection]]:
    """Our charger (TLS only when ``pki`` is given) in one namespace, Josev's EVCC configured in
    ``tmp_path/josev`` in the other, until Josev has stopped; returns its result and our connections."""
    ssl_context = server_context_from_pki(pki, keylog=keylog) if pki is not None else None
    async with charger_between_namespaces(hw, config=config, ssl_context=ssl_context, tls_only=pki is not None
                                          ) as (ev_ns, (tcp_port, tls_port), connections):
        assert (tcp_port is None, tls_port is None) == (pki is not None, pki is None)
        result = await run_josev_ev(python, tmp_path / "josev", netns=ev_ns, timeout=TIMEOUT,
                                    log_path=tmp_path / "josev.log", store_installed_contract=store_installed_contract)
        await trio.sleep(0.2)  # let our side see the TCP close
    print(f"Josev ran {result.duration:.1f} s, stop reason: {result.stop_reason!r}")
    for c in connections:
        if c.session is not None:
            print("our response times (max ms):",
                  {k: round(max(v) * 1000, 1) for k, v in c.session.stats.items()})
    print(f"energy delivered: {hw.energy_wh():.2f} Wh")
    if config.pnc is not None:
        print("PnC decisions:", getattr(config.pnc, "decisions", None))
    return result, connections


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_josev_ev_session(case: Case, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    python = josev_python()
    caplog.set_level(logging.INFO, logger="edge")
    pki = tmp_path / "pki" if case.tls else None
    josev_pki = pki
    if pki is not None:
        create_test_pki(pki)  # one folder for both: Josev trusts its V2G root, we serve its SECC chain
    if pki is not None and case.store_installed_contract:  # Josev overwrites its contract: give it a copy
        josev_pki = tmp_path / "josev-pki"
        shutil.copytree(pki, josev_pki)
    write_config(tmp_path / "josev", "ev0", protocols=(case.josev_protocol,), use_tls=case.tls, pki_path=josev_pki,
                 cert_install=case.cert_install, **case.josev_config)
    hw = SimulatedCharger(voltage_tau=0.05, isolation_s=0.2)  # AC and DC: Josev picks its mode
    pnc = LocalPlugAndCharge.from_pki_folder(pki) if case.pnc and pki is not None else None
    config = EvseConfig(pnc=pnc, receipt_interval=case.receipt_interval)
    keylog = tmp_path / "tls-keys.log"
    result, connections = await run_against_josev(python, tmp_path, hw, config, pki, keylog,
                                                  store_installed_contract=case.store_installed_contract)

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
    if isinstance(session, Iso2Session):
        assert session.energy_mode == case.josev_config.get("energy_transfer_mode")
        assert session.payment_option == ("Contract" if case.pnc else "ExternalPayment")
    if pnc is not None and case.cert_install:
        assert isinstance(session, Iso2Session) and josev_pki is not None
        check_installation(pnc, session, result, josev_pki, stored=case.store_installed_contract)
    elif pnc is not None:
        assert isinstance(session, Iso2Session)
        check_pnc_decisions(pnc, session, receipts_expected=case.receipts_expected)
    if case.receipt_interval is not None:  # we did ask (Josev logs every message it decodes, as JSON)
        assert result.grep(r'"ReceiptRequired":\s*true'), "our charger never set ReceiptRequired"
    if case.tls:  # the session's keys are in the key log for Wireshark
        assert [line for line in keylog.read_text().splitlines() if re.match(r"CLIENT_RANDOM [0-9a-f]{64} ", line)]
    if result.tcp_closed:  # Josev closes TCP 5 s after the stop; our server must have seen it
        ended = [r.getMessage().split(" ended: ")[1] for r in caplog.records
                 if r.getMessage().startswith("V2G connection from ")]
        assert ended == ["closed by the car"], ended


@pytest.mark.slow
async def test_josev_ev_pnc_contract_refused(tmp_path: Path) -> None:
    """Our backend does not know Josev's EMAID: its chain and signature are fine, AuthorizationRes says
    FAILED_ContractCanceled, Josev stops with that code, and no power ever flows."""
    python = josev_python()
    pki = tmp_path / "pki"
    create_test_pki(pki)
    write_config(tmp_path / "josev", "ev0", protocols=("ISO_15118_2",), use_tls=True, pki_path=pki, **DC)
    hw = SimulatedCharger(voltage_tau=0.05, isolation_s=0.2)
    pnc = LocalPlugAndCharge.from_pki_folder(pki, allowed_emaids={"DEXYZ000000001"})
    result, connections = await run_against_josev(python, tmp_path, hw, EvseConfig(pnc=pnc), pki,
                                                  tmp_path / "tls-keys.log")

    assert not result.timed_out, f"Josev did not stop within {TIMEOUT} s:\n{result.tail()}"
    assert not result.successful and result.stop_reason is not None
    assert "Negative response code" in result.stop_reason and "AuthorizationRes" in result.stop_reason, \
        result.stop_reason
    assert result.grep(r'"AuthorizationRes":\{"ResponseCode":"FAILED_ContractCanceled"'), result.tail()
    assert len(connections) == 1 and isinstance(connections[0].session, Iso2Session)
    session = connections[0].session
    assert session.payment_option == "Contract" and session.state == "PaymentDetailsReq"
    assert pnc.decisions[1:] == [("signature over AuthorizationReq", "OK"),
                                 (f"authorize {TEST_EMAID}", "FAILED_ContractCanceled")], pnc.decisions
    assert pnc.decisions[0][1] == "OK", pnc.decisions
    assert "ChargeParameterDiscoveryReq" not in session.stats
    assert hw.energy_wh() == 0 and not hw.closed
