"""ISO 15118-20 contract certificate installation between our -20 car and our charger, in memory:
installation then a PnC charge with the new contract (P-521 and Ed448 PKIs, metering confirmations
signed with the installed key), the charger offering it only when it can install, a tampered
SignedInstallationData caught by the car, a request signed with a wrong key refused by the charger, an
unknown OEM root answered with a WARNING the car survives, and the session's table and Ongoing rounds."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

import exi
from edge.ev.base import SessionFailed
from edge.ev.iso20 import Iso20ContractCredentials, Iso20DcCar, Iso20OemCredentials
from edge.hardware import SimulatedCharger
from edge.pki.algorithms import KeyAlgorithm
from edge.pki.install20 import Ed448ScalarKey
from edge.pki.plug_and_charge import LocalPlugAndCharge
from edge.pki.testpki import ISO20_ED448_FOLDER, ISO20_FOLDER, TEST_EMAID
from edge.v2g.charger import ChargerConnection, EvseConfig
from edge.v2g.iso20.messages import NO_SESSION, PAYLOAD_TYPES, REQUESTS, header
from edge.v2g.iso20.session import NEXT, Iso20DcSession
from edge.v2g.pnc import CertificateResponse
from exi.model import iso20_commonmessages as cm
from tests.inmemory import run

FOLDERS = [ISO20_FOLDER, ISO20_ED448_FOLDER]


def charger(pnc: Any, **config: Any) -> tuple[SimulatedCharger, ChargerConnection]:
    hw = SimulatedCharger(isolation_s=0.5, voltage_tau=0.1)
    return hw, ChargerConnection(hw, config=EvseConfig(pnc=pnc, pnc_without_tls=True, **config))


def power_off(hw: SimulatedCharger) -> bool:
    return not hw.closed and hw.target_i == 0


def installing_car(oem: Iso20OemCredentials, **kw: Any) -> Iso20DcCar:
    return Iso20DcCar(**{"soc": 40, "target_soc": 40.8, "capacity_wh": 2_000, "authorization": "pnc",
                         "install_certificate": True, "oem": oem, **kw})


@pytest.mark.parametrize("folder", FOLDERS)
def test_installation_then_pnc_charge_with_the_new_contract(pki: Path, folder: str) -> None:
    pnc = LocalPlugAndCharge.from_pki_folder(pki)
    hw, conn = charger(pnc, receipt_interval=0.5)
    car = installing_car(Iso20OemCredentials.from_pki(pki, folder))
    run(car, conn)
    assert car.installed is not None and car.contract is car.installed
    emaid = car.installed.emaid
    assert emaid.startswith("DEEDGT") and emaid != TEST_EMAID
    assert car.log[:4] == ["SessionSetupReq", "AuthorizationSetupReq", "CertificateInstallationReq", "AuthorizationReq"]
    assert car.authorization_used == "PnC" and car.refused is None and car.stopped_cleanly and power_off(hw)
    assert car.energy_wh > 0 and car.receipts >= 1  # metering confirmations signed with the installed key
    leaf = x509.load_der_x509_certificate(car.installed.leaf)
    assert KeyAlgorithm.of(leaf.public_key()) is KeyAlgorithm.of(car.oem.key.public_key())  # type: ignore[union-attr]
    assert isinstance(car.installed.key, Ed448ScalarKey) == (folder == ISO20_ED448_FOLDER)
    session = conn.session
    assert isinstance(session, Iso20DcSession) and session.contract is not None
    assert session.contract.leaf == car.installed.leaf and session.receipts == car.receipts
    notes = [what for what, code in pnc.decisions if code == "OK"]
    assert any(what.startswith(f"installation (-20): contract {emaid}") for what in notes)
    assert f"authorize {emaid}" in notes and not [d for d in pnc.decisions if d[1] != "OK"]
    assert car.summary()["installed_emaid"] == emaid


def test_installation_is_offered_only_with_an_issuer(pki: Path) -> None:
    oem = Iso20OemCredentials.from_pki(pki)
    # local_install=False: no -20 issuer, so CertificateInstallationService=false; the car has no contract
    pnc = LocalPlugAndCharge.from_pki_folder(pki, local_install=False)
    assert not pnc.installs_certificates("iso20")
    hw, conn = charger(pnc)
    car = installing_car(oem)
    run(car, conn)
    assert "CertificateInstallationReq" not in car.log and car.installed is None
    assert car.authorization_used == "EIM" and car.stopped_cleanly and power_off(hw)
    assert "the charger offers no certificate installation" in car.notes
    # a car that has a contract already goes on with it
    hw, conn = charger(pnc)
    car = installing_car(oem, contract=Iso20ContractCredentials.from_pki(pki))
    run(car, conn)
    assert car.authorization_used == "PnC" and car.contract is not None and car.contract.emaid == TEST_EMAID


class TamperingPnc(LocalPlugAndCharge):
    """Changes SignedInstallationData after the CPS signed it (a man in the middle, or a broken SA)."""

    def install_certificate(self, proto: str, request: Any, signature: Any,
                            raw: bytes | None = None) -> CertificateResponse:
        answer = super().install_certificate(proto, request, signature)
        data = answer.body.SignedInstallationData
        other = bytes([4]) + bytes(reversed(data.DHPublicKey[1:]))
        answer.body.SignedInstallationData = dataclasses.replace(data, DHPublicKey=other)
        return answer


@pytest.mark.parametrize("folder", FOLDERS)
def test_car_detects_tampered_signed_installation_data(pki: Path, folder: str) -> None:
    base = LocalPlugAndCharge.from_pki_folder(pki)
    pnc = TamperingPnc(base.validator, base.issuer, base.issuer20)
    hw, conn = charger(pnc)
    car = installing_car(Iso20OemCredentials.from_pki(pki, folder))
    with pytest.raises(SessionFailed, match=r"CertificateInstallationRes rejected: .*digest mismatch"):
        run(car, conn)
    assert car.log[-1] == "CertificateInstallationReq" and car.installed is None and car.contract is None
    assert power_off(hw) and not hw.closed


@pytest.mark.parametrize("folder", FOLDERS)
def test_request_signed_with_a_wrong_key_is_refused(pki: Path, other_pki: Path, folder: str) -> None:
    oem = Iso20OemCredentials.from_pki(pki, folder)
    forged = dataclasses.replace(oem, key=Iso20OemCredentials.from_pki(other_pki, folder).key)
    pnc = LocalPlugAndCharge.from_pki_folder(pki)
    hw, conn = charger(pnc)
    car = installing_car(forged)
    with pytest.raises(SessionFailed, match="CertificateInstallationRes failed: FAILED_SignatureError"):
        run(car, conn)
    assert conn.session is not None and conn.session.done and power_off(hw)
    assert pnc.decisions[-1][1] == "FAILED_SignatureError" and pnc.issuer20 is not None
    assert not pnc.issuer20.issued  # nothing was issued for a request the OEM key did not sign


def test_unknown_oem_root_gets_a_warning_and_the_car_goes_on(pki: Path, other_pki: Path) -> None:
    pnc = LocalPlugAndCharge.from_pki_folder(pki)
    hw, conn = charger(pnc)
    car = installing_car(Iso20OemCredentials.from_pki(other_pki))
    run(car, conn)
    assert car.installation_refused == "WARNING_CertificateValidationError" and car.installed is None
    assert car.log.count("CertificateInstallationReq") == 1
    assert car.authorization_used == "EIM" and car.stopped_cleanly and power_off(hw)
    assert "no contract to authorize with; falling back to EIM" in car.notes


def test_car_arguments(pki: Path) -> None:
    with pytest.raises(ValueError, match="OEM provisioning credentials"):
        Iso20DcCar(install_certificate=True)
    Iso20DcCar(authorization="pnc", install_certificate=True, oem=Iso20OemCredentials.from_pki(pki))
    with pytest.raises(ValueError, match="cannot read"):
        Iso20OemCredentials.from_pki(pki, "no-such-folder")


# ------------------------------------------------------------------ the session directly
class OngoingPnc(LocalPlugAndCharge):
    """A backend that needs one more round before it answers the installation."""

    rounds: int = 0

    def install_certificate(self, proto: str, request: Any, signature: Any,
                            raw: bytes | None = None) -> CertificateResponse:
        self.rounds += 1
        if self.rounds == 1:
            return CertificateResponse("Ongoing")
        return super().install_certificate(proto, request, signature)


def send(session: Iso20DcSession, sid: bytes, req: Any, now: float, signature: Any = None) -> Any:
    schema = REQUESTS[type(req).__name__.removesuffix("Type")]
    req.Header = header(sid, time.time(), signature)
    _, out, _ = session.handle(PAYLOAD_TYPES[schema], exi.encode(schema, req), now)
    assert out is not None
    return exi.decode(schema, out)


def test_session_ongoing_round_then_the_answer(pki: Path) -> None:
    base = LocalPlugAndCharge.from_pki_folder(pki)
    pnc = OngoingPnc(base.validator, base.issuer, base.issuer20)
    session = Iso20DcSession(SimulatedCharger(), pnc=pnc)
    oem = Iso20OemCredentials.from_pki(pki)
    sid = send(session, NO_SESSION, cm.SessionSetupReqType(EVCCID="WMIV1234567890ABCDEX"), 0.1).Header.SessionID
    setup = send(session, sid, cm.AuthorizationSetupReqType(), 0.2)
    assert setup.CertificateInstallationService is True and session.state == "AuthorizationSetupReq:install"
    req, signature = oem.installation_request()
    first = send(session, sid, req, 0.3, signature)
    assert (first.ResponseCode, first.EVSEProcessing) == ("OK", "Ongoing")
    assert session.state == "CertificateInstallationReq:Ongoing"
    assert NEXT[session.state] == {"CertificateInstallationReq", "SessionStopReq"}  # not AuthorizationReq yet
    second = send(session, sid, req, 0.4, signature)
    assert (second.ResponseCode, second.EVSEProcessing) == ("OK", "Finished") and pnc.rounds == 2
    assert oem.accept(second, dt.datetime.now(dt.UTC)).emaid == pnc.issuer20.issued[-1]  # type: ignore[union-attr]
    assert send(session, sid, cm.AuthorizationSetupReqType(), 0.5).ResponseCode == "FAILED_SequenceError"
    assert session.done


def test_session_answers_and_loops(pki: Path) -> None:
    pnc = LocalPlugAndCharge.from_pki_folder(pki)
    session = Iso20DcSession(SimulatedCharger(), pnc=pnc)
    oem = Iso20OemCredentials.from_pki(pki, ISO20_ED448_FOLDER)
    sid = send(session, NO_SESSION, cm.SessionSetupReqType(EVCCID="WMIV1234567890ABCDEX"), 0.1).Header.SessionID
    send(session, sid, cm.AuthorizationSetupReqType(), 0.2)
    req, signature = oem.installation_request()
    emaids = []
    for step in range(2):  # the looping mechanism: one more chain per request
        res = send(session, sid, req, 0.3 + step / 10, signature)
        assert res.ResponseCode == "OK" and res.EVSEProcessing == "Finished"
        assert res.Header.Signature is not None  # the CPS signature travels in the response header
        emaids.append(oem.accept(res, dt.datetime.now(dt.UTC)).emaid)
    assert len(set(emaids)) == 2 and session.state == "CertificateInstallationReq" and not session.done
    assert NEXT["CertificateInstallationReq"] == {"CertificateInstallationReq", "AuthorizationReq", "SessionStopReq"}

