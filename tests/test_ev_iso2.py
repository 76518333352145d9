"""The simulated ISO 15118-2 car: against our charger in-process (AC/DC, EIM/PnC with real signatures
and chain checks, metering receipts, renegotiation, pause/resume), and against scripted responses for
what our charger never does (notifications, odd answers)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import exi
from edge.ev import drive
from edge.ev.base import QUIRK_PROFILES, TESLA_DIN_OFFERS, SessionFailed
from edge.ev.din import DinCar
from edge.ev.iso2 import INSTALLATION_SIGNED, ContractCredentials, Iso2Car, OemCredentials
from edge.hardware import AcLimits, SimulatedCharger
from edge.pki.install import LocalContractIssuer
from edge.pki.plug_and_charge import LocalPlugAndCharge
from edge.pki.signature import SignatureError, sign, verify, verify_authorization_req
from edge.pki.testpki import TEST_EMAID, create_test_pki
from edge.v2g import sap
from edge.v2g.charger import ChargerConnection, EvseConfig
from edge.v2g.iso2.session import MSG_BODY_NS, pv
from edge.v2g.pnc import CertificateResponse
from exi.model import iso2_msgbody as b
from exi.model import iso2_msgdatatypes as t
from exi.model.iso2_msgbody import BodyType
from exi.model.iso2_msgdef import V2G_Message
from exi.model.iso2_msgheader import MessageHeaderType
from tests.inmemory import STEP, run


@pytest.fixture(scope="module")
def contract(pki: Path) -> ContractCredentials:
    return ContractCredentials.from_pki(pki)


def local_pnc(pki: Path, **kw: Any) -> LocalPlugAndCharge:
    """Plug & Charge decided for real: the chain against the PKI's MO root, signatures with the leaf's key."""
    return LocalPlugAndCharge.from_pki_folder(pki, local_install=False, **kw)


def signatures_checked(pnc: LocalPlugAndCharge) -> list[str]:
    """The elements whose signature verified, in order (a failure ends the session anyway)."""
    return [what.removeprefix("signature over ") for what, code in pnc.decisions
            if what.startswith("signature over") and code == "OK"]


def charger(**config: Any) -> tuple[SimulatedCharger, EvseConfig]:
    return SimulatedCharger(isolation_s=0.5, voltage_tau=0.1), EvseConfig(**config)


def power_off(hw: SimulatedCharger) -> bool:
    return not hw.closed and hw.target_i == 0 and hw.ac_limit == 0


# ---------------------------------------------------------------------------------------- against our charger


def test_ac_eim_session() -> None:
    hw, config = charger()
    car = Iso2Car(mode="ac", soc=40, target_soc=41, capacity_wh=2_000, ac_max_current=16)
    run(car, ChargerConnection(hw, config=config))
    assert car.stopped_cleanly and car.payment_used == "ExternalPayment" and power_off(hw)
    # 1 % of 2 kWh at 3 x 230 V x 16 A (11 kW): the car's model and the charger's meter agree
    assert car.soc >= 41 and car.energy_wh >= 20 and hw.energy_wh() == pytest.approx(car.energy_wh, rel=0.15)
    assert car.soc == pytest.approx(40 + 100 * car.energy_wh / 2_000)
    assert "CableCheckReq" not in car.log and "WeldingDetectionReq" not in car.log
    i = car.log.index("PowerDeliveryReq")
    assert car.log[i - 1] == "ChargeParameterDiscoveryReq" and car.log[i + 1] == "ChargingStatusReq"
    assert car.log[-3:] == ["ChargingStatusReq", "PowerDeliveryReq", "SessionStopReq"]


def test_ac_current_follows_the_smaller_limit() -> None:
    # the charger allows 10 A per phase: the car draws 10 A although it could take 16 A
    hw = SimulatedCharger(limits=None, ac=AcLimits(230.0, 10.0, 3))
    car = Iso2Car(mode="ac", soc=40, target_soc=40.5, capacity_wh=2_000, ac_max_current=16)
    end = run(car, ChargerConnection(hw))
    charging_s = car.log.count("ChargingStatusReq") * STEP
    assert car.stopped_cleanly and car._ac_current() == 10
    assert car.energy_wh == pytest.approx(3 * 230 * 10 * charging_s / 3600, rel=0.1) and end > charging_s


def test_dc_pnc_session_with_real_signatures(pki: Path, contract: ContractCredentials) -> None:
    pnc = local_pnc(pki, ongoing_rounds=1)
    hw, config = charger(pnc=pnc, pnc_without_tls=True)
    car = Iso2Car(payment="pnc", contract=contract, soc=40, target_soc=40.5, capacity_wh=2_000)
    conn = ChargerConnection(hw, config=config)
    run(car, conn)
    assert car.stopped_cleanly and car.payment_used == "Contract" and power_off(hw)
    assert contract.emaid == TEST_EMAID and conn.session.contract.emaid == TEST_EMAID
    assert car.log[3:6] == ["PaymentDetailsReq", "AuthorizationReq", "AuthorizationReq"]  # Ongoing, then OK
    assert signatures_checked(pnc) == ["AuthorizationReq"]  # the first one verified; the repeat only asks the backend
    assert car.soc >= 40.5 and hw.energy_wh() == pytest.approx(car.energy_wh, rel=0.2)


def test_ac_pnc_with_metering_receipts(pki: Path, contract: ContractCredentials) -> None:
    pnc = local_pnc(pki)
    hw, config = charger(pnc=pnc, pnc_without_tls=True, receipt_interval=1.0)
    car = Iso2Car(mode="ac", payment="pnc", contract=contract, soc=40, target_soc=41, capacity_wh=2_000)
    conn = ChargerConnection(hw, config=config)
    run(car, conn)
    assert car.stopped_cleanly and car.receipts >= 3 and conn.session.receipts == car.receipts
    checked = signatures_checked(pnc)
    assert checked.count("MeteringReceiptReq") == car.receipts and checked[0] == "AuthorizationReq"
    i = car.log.index("MeteringReceiptReq")
    assert car.log[i - 1] == "ChargingStatusReq" and car.log[i + 1] == "ChargingStatusReq"
    assert hw.energy_wh() == pytest.approx(car.energy_wh, rel=0.15)


def test_the_signature_covers_the_challenge(contract: ContractCredentials) -> None:
    """The signed AuthorizationReq verifies with the contract key and binds the GenChallenge."""
    from cryptography import x509

    car = Iso2Car(payment="pnc", contract=contract)
    car._last, car._negotiated = "PaymentDetailsReq", True
    challenge = bytes(range(16))
    out = car.handle(_res("PaymentDetailsRes", b.PaymentDetailsResType("OK", challenge, 0)), 1.0)
    msg = exi.decode("iso2", out)
    leaf = x509.load_der_x509_certificate(contract.leaf)
    verify_authorization_req("iso2", msg.Header.Signature, msg.Body.AuthorizationReq, challenge, leaf)
    with pytest.raises(SignatureError):
        verify_authorization_req("iso2", msg.Header.Signature, msg.Body.AuthorizationReq, bytes(16), leaf)


@pytest.mark.parametrize("mode", ["dc", "ac"])
def test_renegotiation(mode: str) -> None:
    hw, config = charger()
    car = Iso2Car(mode=mode, soc=40, target_soc=40.6, renegotiate_at_soc=40.3, capacity_wh=2_000)
    conn = ChargerConnection(hw, config=config)
    run(car, conn)
    assert car.stopped_cleanly and car.renegotiated and conn.session.renegotiations == 1 and car.renegotiations == 1
    loop = "CurrentDemandReq" if mode == "dc" else "ChargingStatusReq"
    i = car.log.index("PowerDeliveryReq", car.log.index(loop))
    assert car.log[i:i + 4] == ["PowerDeliveryReq", "ChargeParameterDiscoveryReq", "PowerDeliveryReq", loop]
    assert car.soc >= 40.6


@pytest.mark.parametrize(("mode", "payment"), [("dc", "eim"), ("ac", "pnc")])
def test_pause_and_resume(mode: str, payment: str, pki: Path, contract: ContractCredentials) -> None:
    hw, config = charger(pnc=local_pnc(pki), pnc_without_tls=True)
    car = Iso2Car(mode=mode, payment=payment, contract=contract, soc=40, target_soc=41, pause_at_soc=40.4,
                  capacity_wh=2_000)
    now = run(car, ChargerConnection(hw, config=config))
    assert car.paused and not car.stopped_cleanly and power_off(hw)
    first_part = list(car.log)
    assert first_part[-1] == "SessionStopReq" and 40.4 <= car.soc < 41
    session_id, energy = car.session_id, car.energy_wh
    car.resume()
    second = ChargerConnection(hw, config=config)
    run(car, second, now + 30)  # a new connection after the pause
    assert car.resumed and second.session.resumed and car.session_id == session_id == second.session.session_id
    assert car.stopped_cleanly and car.soc >= 41 and car.energy_wh > energy and power_off(hw)
    resumed_part = car.log[len(first_part):]
    # the whole sequence again: same payment option; PnC authorizes anew; DC checks the cable again
    assert resumed_part[:3] == ["SessionSetupReq", "ServiceDiscoveryReq", "PaymentServiceSelectionReq"]
    assert ("PaymentDetailsReq" in resumed_part) == (payment == "pnc")
    assert ("CableCheckReq" in resumed_part) == (mode == "dc")
    assert car.summary()["resumed"] and car.summary()["payment"] == ("Contract" if payment == "pnc" else
                                                                      "ExternalPayment")


def test_quirks_our_charger_survives() -> None:
    hw, config = charger()
    car = Iso2Car(quirks=QUIRK_PROFILES["audi-q4"])
    run(car, ChargerConnection(hw, config=config))
    assert car.log == ["SessionSetupReq", "SessionStopReq"] and car.stopped_cleanly
    assert car.notes == ["quirk stop_after_session_setup"]
    car = Iso2Car(quirks=QUIRK_PROFILES["no-welding-detection"], soc=40, target_soc=40.2, capacity_wh=2_000)
    run(car, ChargerConnection(hw, config=config))
    assert car.stopped_cleanly and "WeldingDetectionReq" not in car.log and power_off(hw)


def test_tesla_offer_gets_din() -> None:
    hw, config = charger()
    car = DinCar(offers=TESLA_DIN_OFFERS, soc=40, target_soc=40.2, capacity_wh=2_000)
    conn = ChargerConnection(hw, config=config)
    run(car, conn)
    assert conn.protocol is sap.DIN and car.stopped_cleanly


# ---------------------------------------------------------------------------------------- scripted responses

SID = bytes.fromhex("0102030405060708")


def _res(name: str, res: Any, sid: bytes = SID) -> bytes:
    return exi.encode("iso2", V2G_Message(MessageHeaderType(sid), BodyType(**{name: res})))


def _charging(car: Iso2Car, *, notification: str = "None", receipt: bool = False,
              meter: t.MeterInfoType | None = None) -> b.ChargingStatusResType:
    """An AC car in its charge loop, and a ChargingStatusRes to answer its ChargingStatusReq with."""
    car._last, car._negotiated, car._phase, car.session_id = "ChargingStatusReq", True, "charging", SID
    car._start_metering(0.0)
    return b.ChargingStatusResType("OK", "DE*EDG*E0001*1", 1, None, meter, receipt,
                                   t.AC_EVSEStatusType(0, notification, False))


def _next(car: Iso2Car, name: str, res: Any, now: float = 1.0) -> Any:
    out = car.handle(_res(name, res), now)
    return None if out is None else exi.decode("iso2", out).Body


def test_charger_notifications_are_honoured() -> None:
    car = Iso2Car(mode="ac", soc=40, target_soc=90)
    body = _next(car, "ChargingStatusRes", _charging(car, notification="StopCharging"))
    assert body.PowerDeliveryReq.ChargeProgress == "Stop" and "StopCharging" in car.notes[-1]
    body = _next(car, "PowerDeliveryRes", b.PowerDeliveryResType("OK", t.AC_EVSEStatusType(0, "None", False)))
    assert body.SessionStopReq.ChargingSession == "Terminate"
    car = Iso2Car(mode="ac", soc=40, target_soc=90)
    body = _next(car, "ChargingStatusRes", _charging(car, notification="ReNegotiation"))
    assert body.PowerDeliveryReq.ChargeProgress == "Renegotiate" and car.renegotiations == 1
    body = _next(car, "PowerDeliveryRes", b.PowerDeliveryResType("OK", t.AC_EVSEStatusType(0, "None", False)))
    assert body.ChargeParameterDiscoveryReq.AC_EVChargeParameter is not None
    # no notification: the loop goes on, and the SoC has risen with 1 s of charging
    car = Iso2Car(mode="ac", soc=40, target_soc=90, capacity_wh=2_000)
    body = _next(car, "ChargingStatusRes", _charging(car))
    assert body.ChargingStatusReq is not None and car.energy_wh == pytest.approx(3 * 230 * 16 / 3600)


def test_receipt_required(contract: ContractCredentials) -> None:
    meter = t.MeterInfoType("m1", 1234, None, None, 1_700_000_000)
    car = Iso2Car(mode="ac", payment="pnc", contract=contract, payment_used="Contract")
    body = _next(car, "ChargingStatusRes", _charging(car, receipt=True, meter=meter))
    req = body.MeteringReceiptReq
    assert req.SessionID == SID and req.MeterInfo == meter and req.SAScheduleTupleID == 1 and req.Id
    # with EIM there is no key to sign with: noted, the loop goes on
    car = Iso2Car(mode="ac", payment_used="ExternalPayment", target_soc=90)
    body = _next(car, "ChargingStatusRes", _charging(car, receipt=True, meter=meter))
    assert body.ChargingStatusReq is not None and "ReceiptRequired" in car.notes[-1]
    car = Iso2Car(mode="ac", payment="pnc", contract=contract, payment_used="Contract")
    with pytest.raises(SessionFailed, match="no MeterInfo"):
        _next(car, "ChargingStatusRes", _charging(car, receipt=True))


def test_odd_answers_are_clear_errors() -> None:
    car = Iso2Car(mode="ac")
    car._last, car._negotiated = "ServiceDiscoveryReq", True
    dc_only = b.ServiceDiscoveryResType("OK", t.PaymentOptionListType(["ExternalPayment"]), t.ChargeServiceType(
        1, None, "EVCharging", None, False, t.SupportedEnergyTransferModeType(["DC_extended"])))
    with pytest.raises(SessionFailed, match="does not offer AC_three_phase_core"):
        car.handle(_res("ServiceDiscoveryRes", dc_only), 1.0)
    car._last = "SessionSetupReq"
    with pytest.raises(SessionFailed, match="expected SessionSetupRes, got ServiceDiscoveryRes"):
        car.handle(_res("ServiceDiscoveryRes", dc_only), 1.0)
    with pytest.raises(SessionFailed, match="undecodable"):
        car.handle(b"\x80\x00", 1.0)
    with pytest.raises(ValueError, match="contract credentials"):
        Iso2Car(payment="pnc")
    with pytest.raises(ValueError, match="mode must be"):
        Iso2Car(mode="wireless")


def test_pnc_falls_back_to_eim_when_contract_is_not_offered(contract: ContractCredentials) -> None:
    hw, config = charger()  # no PnC configured: the charger offers ExternalPayment only
    car = Iso2Car(payment="pnc", contract=contract, soc=40, target_soc=40.2, capacity_wh=2_000)
    run(car, ChargerConnection(hw, config=config))
    assert car.stopped_cleanly and car.payment_used == "ExternalPayment" and "PaymentDetailsReq" not in car.log
    assert any("falling back" in n for n in car.notes)


def test_resume_refused_starts_a_new_session() -> None:
    car = Iso2Car(mode="ac", pause_at_soc=40, soc=40, target_soc=41)
    car.paused, car.session_id = True, SID
    car.resume()
    car.start()
    out = car.handle(_sap_ok(), 0.1)
    assert exi.decode("iso2", out).Header.SessionID == SID  # the old SessionID, to be joined
    new_sid = bytes(8)
    body = exi.decode("iso2", car.handle(_res("SessionSetupRes", b.SessionSetupResType(
        "OK_NewSessionEstablished", "DE*EDG*E0001*1", 0), new_sid), 0.2)).Body
    assert body.ServiceDiscoveryReq is not None and not car.resumed and car.session_id == new_sid
    assert "did not join" in car.notes[-1]
    with pytest.raises(RuntimeError, match="no paused session"):
        car.resume()


def _sap_ok() -> bytes:
    from exi.model.apphand import supportedAppProtocolRes

    return exi.encode("apphand", supportedAppProtocolRes("OK_SuccessfulNegotiation", 1))


def test_contract_credentials_errors(tmp_path: Path, pki: Path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        ContractCredentials.from_pki(tmp_path)
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(pki, copy)
    (copy / "iso15118_2/private_keys/contractLeafPassword.txt").write_text("wrong\n")
    with pytest.raises(ValueError, match="wrong or missing password"):
        ContractCredentials.from_pki(copy)


async def test_drive_gives_up_when_the_charger_is_silent(autojump_clock: trio.abc.Clock) -> None:
    car_side, _charger_side = trio.testing.memory_stream_pair()
    car = Iso2Car()
    start = trio.current_time()
    with pytest.raises(TimeoutError, match="no response to supportedAppProtocolReq within 2 s"):
        await drive(car_side, car, timeout_factor=1.0)
    assert 2.0 <= trio.current_time() - start < 3.0


def test_dc_cars_stop_when_the_charger_asks() -> None:
    """CurrentDemandRes with EVSENotification=StopCharging: PowerDelivery Stop at once (-2 and DIN)."""
    from edge.v2g.din.session import pv as din_pv
    from exi.model import din_msgbody as din_b
    from exi.model import din_msgdatatypes as din_t
    from exi.model.din_msgdef import BodyType as DinBody
    from exi.model.din_msgdef import V2G_Message as DinMessage
    from exi.model.din_msgheader import MessageHeaderType as DinHeader

    car = Iso2Car(soc=40, target_soc=90)
    car._last, car._negotiated, car._phase, car.session_id = "CurrentDemandReq", True, "charging", SID
    car._start_metering(0.0)
    status = t.DC_EVSEStatusType(0, "StopCharging", "Valid", "EVSE_Ready")
    res = b.CurrentDemandResType("OK", status, pv(400, "V"), pv(100, "A"), False, False, False,
                                 EVSEID="DE*EDG*E0001*1", SAScheduleTupleID=1)
    body = _next(car, "CurrentDemandRes", res, now=0.5)
    assert body.PowerDeliveryReq.ChargeProgress == "Stop" and car.energy_wh == pytest.approx(400 * 100 * 0.5 / 3600)
    assert "StopCharging" in car.notes[-1]

    din = DinCar(soc=40, target_soc=90)
    din._last, din._negotiated, din._phase, din.session_id = "CurrentDemandReq", True, "charging", SID
    din_status = din_t.DC_EVSEStatusType("Valid", "EVSE_Ready", 0, "StopCharging")
    din_res = din_b.CurrentDemandResType("OK", din_status, din_pv(400, "V"), din_pv(100, "A"), False, False, False)
    out = din.handle(exi.encode("din", DinMessage(DinHeader(SID), DinBody(CurrentDemandRes=din_res))), 1.0)
    assert exi.decode("din", out).Body.PowerDeliveryReq.ReadyToChargeState is False
    assert "StopCharging" in din.notes[-1]


# ---------------------------------------------------------------------------------------- certificate installation


@pytest.fixture(scope="module")
def oem(pki: Path) -> OemCredentials:
    return OemCredentials.from_pki(pki)


def installing_car(oem: OemCredentials, **kw: Any) -> Iso2Car:
    return Iso2Car(**{"payment": "pnc", "install_certificate": True, "oem": oem, "soc": 40, "target_soc": 40.3,
                      "capacity_wh": 2_000, **kw})


@pytest.mark.parametrize("ask_detail", [True, False])
def test_certificate_installation_then_charging(pki: Path, oem: OemCredentials, ask_detail: bool) -> None:
    pnc = LocalPlugAndCharge.from_pki_folder(pki)  # with the local issuer (MO sub-CA 2 and CPS keys)
    hw, config = charger(pnc=pnc, pnc_without_tls=True)
    car = installing_car(oem, ask_certificate_service_detail=ask_detail)
    conn = ChargerConnection(hw, config=config)
    run(car, conn)
    expected = ["SessionSetupReq", "ServiceDiscoveryReq", "ServiceDetailReq", "PaymentServiceSelectionReq",
                "CertificateInstallationReq", "PaymentDetailsReq", "AuthorizationReq", "ChargeParameterDiscoveryReq"]
    if not ask_detail:
        expected.remove("ServiceDetailReq")
    assert car.log[:len(expected)] == expected
    new = car.installed
    assert new is not None and car.contract is new and new.emaid == pnc.issuer.issued[-1] != TEST_EMAID
    # the charger saw the new contract in PaymentDetailsReq, checked its chain and the signature made with
    # the key the car decrypted, and authorized it
    assert conn.session.contract.emaid == new.emaid and conn.session.contract.leaf == new.leaf
    assert [code for _, code in pnc.decisions] == ["OK"] * 4, pnc.decisions
    assert pnc.decisions[0][0].startswith(f"installation: contract {new.emaid} for ")
    assert pnc.decisions[1][0].startswith(f"contract {new.emaid}: valid chain")
    assert signatures_checked(pnc) == ["AuthorizationReq"] and pnc.decisions[3][0] == f"authorize {new.emaid}"
    assert car.stopped_cleanly and car.soc >= 40.3 and hw.energy_wh() > 0 and power_off(hw)
    assert car.summary()["installed_emaid"] == new.emaid and any("installed" in n for n in car.notes)


def test_installed_contract_is_kept_on_resume(pki: Path, oem: OemCredentials) -> None:
    """Installation happens once per car: the resumed session pays with the installed contract."""
    pnc = LocalPlugAndCharge.from_pki_folder(pki)
    hw, config = charger(pnc=pnc, pnc_without_tls=True)
    car = installing_car(oem, mode="ac", target_soc=41, pause_at_soc=40.4)
    now = run(car, ChargerConnection(hw, config=config))
    assert car.paused and car.installed is not None
    first = len(car.log)
    car.resume()
    second = ChargerConnection(hw, config=config)
    run(car, second, now + 30)
    assert car.stopped_cleanly and "CertificateInstallationReq" not in car.log[first:]
    assert second.session.contract.emaid == car.installed.emaid and len(pnc.issuer.issued) == 1


def test_charger_without_issuer_ends_the_installation(pki: Path, oem: OemCredentials) -> None:
    pnc = LocalPlugAndCharge.from_pki_folder(pki, local_install=False)
    hw, config = charger(pnc=pnc, pnc_without_tls=True)
    car = installing_car(oem)
    conn = ChargerConnection(hw, config=config)
    with pytest.raises(SessionFailed, match="CertificateInstallationRes failed: FAILED_NoCertificateAvailable"):
        run(car, conn)
    assert car.log[-1] == "CertificateInstallationReq" and car.installed is None and car.contract is None
    assert pnc.decisions == [("installation: no issuer", "FAILED_NoCertificateAvailable")]
    assert conn.session.done and power_off(hw) and hw.energy_wh() == 0


def test_no_certificate_service(contract: ContractCredentials, oem: OemCredentials) -> None:
    """A charger offering Contract but no certificate service: a car with a contract goes on with it,
    one without has nothing to pay with."""
    offer = b.ServiceDiscoveryResType("OK", t.PaymentOptionListType(["Contract"]), t.ChargeServiceType(
        1, None, "EVCharging", None, False, t.SupportedEnergyTransferModeType(["DC_extended"])))
    car = installing_car(oem, contract=contract)
    car._last, car._negotiated = "ServiceDiscoveryReq", True
    body = _next(car, "ServiceDiscoveryRes", offer)
    assert [s.ServiceID for s in body.PaymentServiceSelectionReq.SelectedServiceList.SelectedService] == [1]
    assert "no ContractCertificate service" in car.notes[-1]
    assert _next(car, "PaymentServiceSelectionRes", b.PaymentServiceSelectionResType("OK")).PaymentDetailsReq.eMAID \
        == TEST_EMAID
    car = installing_car(oem)
    car._last, car._negotiated = "ServiceDiscoveryReq", True
    with pytest.raises(SessionFailed, match=r"no ContractCertificate service.*the car has none"):
        _next(car, "ServiceDiscoveryRes", offer)
    # a certificate service that only updates
    car = installing_car(oem)
    car._last, car._negotiated, car._certificate_service = "ServiceDetailReq", True, 2
    update = t.ParameterType("Service", stringValue="Update")
    update_only = t.ServiceParameterListType([t.ParameterSetType(2, [update])])
    with pytest.raises(SessionFailed, match="offers no Installation"):
        _next(car, "ServiceDetailRes", b.ServiceDetailResType("OK", 2, update_only))


def test_installation_request_is_signed_with_the_oem_key(pki: Path, oem: OemCredentials) -> None:
    from cryptography import x509

    req, signature = oem.installation_request()
    v2g_root = x509.load_pem_x509_certificate((pki / "iso15118_2/certs/v2gRootCACert.pem").read_bytes())
    assert req.OEMProvisioningCert == oem.leaf and req.Id
    assert [(r.X509IssuerName, r.X509SerialNumber) for r in req.ListOfRootCertificateIDs.RootCertificateID] == \
        [(v2g_root.issuer.rfc4514_string(), v2g_root.serial_number)]
    fragment = [exi.Fragment(MSG_BODY_NS, "CertificateInstallationReq", req)]
    verify("iso2", signature, fragment, x509.load_der_x509_certificate(oem.leaf))
    req.OEMProvisioningCert = req.OEMProvisioningCert[:-1] + bytes([req.OEMProvisioningCert[-1] ^ 1])
    with pytest.raises(SignatureError, match="digest mismatch"):
        verify("iso2", signature, fragment, x509.load_der_x509_certificate(oem.leaf))


@dataclass
class TamperingPnc(LocalPlugAndCharge):
    """Answers installation like the local backend, then changes the signed response on the way."""

    tamper: Callable[[b.CertificateInstallationResType], None] = lambda res: None

    def install_certificate(self, proto: str, request: Any, signature: Any,
                            raw: bytes | None = None) -> CertificateResponse:
        answer = super().install_certificate(proto, request, signature)
        self.tamper(answer.body)
        return answer


def _flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


TAMPERINGS: dict[str, Callable[[b.CertificateInstallationResType], None]] = {
    "eMAID": lambda res: setattr(res.eMAID, "value", "DEEDGC99999999X"),
    "ContractSignatureEncryptedPrivateKey": lambda res: setattr(res.ContractSignatureEncryptedPrivateKey, "value",
                                                                _flip_last_byte(res.ContractSignatureEncryptedPrivateKey
                                                                                .value)),
    "DHpublickey": lambda res: setattr(res.DHpublickey, "value", _flip_last_byte(res.DHpublickey.value)),
    "ContractSignatureCertChain": lambda res: setattr(
        res.ContractSignatureCertChain, "Certificate", _flip_last_byte(res.ContractSignatureCertChain.Certificate)),
}


@pytest.mark.parametrize("element", list(TAMPERINGS))
def test_tampered_installation_response_is_refused(pki: Path, oem: OemCredentials, element: str) -> None:
    pnc = TamperingPnc.from_pki_folder(pki, tamper=TAMPERINGS[element])
    hw, config = charger(pnc=pnc, pnc_without_tls=True)
    car = installing_car(oem)
    conn = ChargerConnection(hw, config=config)
    with pytest.raises(SessionFailed, match=f"signature not valid: digest mismatch: {element} #"):
        run(car, conn)
    assert pnc.decisions[0][1] == "OK" and car.installed is None and car.log[-1] == "CertificateInstallationReq"
    assert hw.energy_wh() == 0


# scripted CertificateInstallationRes: what a correctly signed but wrong answer looks like to the car

def _installation_res(pki: Path, oem: OemCredentials, change: Callable[[Any], None] = lambda res: None,
                      signing_key: Any = None, recipient: bytes | None = None) -> bytes:
    """A CertificateInstallationRes from the PKI's local issuer, changed by ``change``, then signed
    over the four elements with ``signing_key`` (default: the CPS key)."""
    issuer = LocalContractIssuer.from_pki_folder(pki)
    answer = issuer.install(b.CertificateInstallationReqType("id1", recipient or oem.leaf))
    change(answer.body)
    signed = [exi.Fragment(MSG_BODY_NS, n, getattr(answer.body, n)) for n in INSTALLATION_SIGNED]
    signature = sign("iso2", signed, signing_key or issuer.cps_key)
    return exi.encode("iso2", V2G_Message(MessageHeaderType(SID, Signature=signature),
                                          BodyType(CertificateInstallationRes=answer.body)))


def _waiting_for_installation(oem: OemCredentials, **kw: Any) -> Iso2Car:
    car = installing_car(oem, **kw)
    car._last, car._negotiated, car.session_id, car.payment_used = "CertificateInstallationReq", True, SID, "Contract"
    return car


def _pem(pki: Path, name: str) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificate((pki / "iso15118_2/certs" / f"{name}.pem").read_bytes())
    return cert.public_bytes(serialization.Encoding.DER)


def test_installation_response_checks(pki: Path, oem: OemCredentials, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    # the well-formed answer is accepted: PaymentDetailsReq with the new contract
    car = _waiting_for_installation(oem)
    body = exi.decode("iso2", car.handle(_installation_res(pki, oem), 1.0)).Body
    assert body.PaymentDetailsReq.eMAID == car.installed.emaid and car.installed.emaid.startswith("DEEDG")
    assert body.PaymentDetailsReq.ContractSignatureCertChain.Certificate == car.installed.leaf

    def refused(match: str, payload: bytes, **kw: Any) -> None:
        car = _waiting_for_installation(oem, **kw)
        with pytest.raises(SessionFailed, match=match):
            car.handle(payload, 1.0)
        assert car.installed is None and car.contract is None

    mo_key = serialization.load_pem_private_key((pki / "iso15118_2/private_keys/moSubCA2.key").read_bytes(), b"12345")
    refused("SignatureValue does not verify", _installation_res(pki, oem, signing_key=mo_key))
    # the old contract's leaf in place of the new one, signed by the CPS: the key does not fit
    refused("does not belong to the new contract certificate", _installation_res(
        pki, oem, lambda res: setattr(res.ContractSignatureCertChain, "Certificate", _pem(pki, "contractLeafCert"))))
    refused("eMAID 'DEEDGC99999999X' is not the new contract certificate's CN", _installation_res(
        pki, oem, lambda res: setattr(res.eMAID, "value", "DEEDGC99999999X")))
    # encrypted to another certificate's key (the SECC leaf): the car cannot recover the contract key
    refused("does not belong|cannot decrypt", _installation_res(pki, oem, recipient=_pem(pki, "seccLeafCert")))
    refused("encrypted contract key must be 48 bytes", _installation_res(
        pki, oem, lambda res: setattr(res.ContractSignatureEncryptedPrivateKey, "value", bytes(32))))
    # a CPS chain the car cannot trust: from another PKI, cut short, or out of date
    other = tmp_path / "other"
    create_test_pki(other)
    refused("CPS chain does not lead to a trusted root", _installation_res(other, oem))
    refused("CPS chain does not lead to a trusted root", _installation_res(
        pki, oem, lambda res: setattr(res.SAProvisioningCertificateChain, "SubCertificates",
                                      t.SubCertificatesType([res.SAProvisioningCertificateChain.SubCertificates
                                                            .Certificate[0]]))))
    refused("CPS certificate .* expired at", _installation_res(pki, oem), wall_clock=lambda: 4_000_000_000.0)
    # sub-CAs in another order are still a path (as for contract chains)
    car = _waiting_for_installation(oem)
    car.handle(_installation_res(
        pki, oem, lambda res: res.SAProvisioningCertificateChain.SubCertificates.Certificate.reverse()), 1.0)
    assert car.installed is not None


def test_installation_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs payment 'pnc' and the OEM provisioning credentials"):
        Iso2Car(payment="eim", install_certificate=True)
    with pytest.raises(ValueError, match="needs payment 'pnc' and the OEM"):
        Iso2Car(payment="pnc", install_certificate=True)
    with pytest.raises(ValueError, match=r"cannot read .*oemLeafCert\.pem"):
        OemCredentials.from_pki(tmp_path)
