"""The simulated ISO 15118-20 DC car against our charger: in memory (EIM, PnC with P-521 and Ed448
contracts and metering confirmations, refusals, pause/resume, renegotiation, the charger's stop) and
over a V2GTP stream with :func:`edge.ev.drive`, which frames each request with its payload type."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import ed448

import exi
from edge.ev import drive
from edge.ev.base import QUIRK_PROFILES, SessionFailed
from edge.ev.iso2 import Iso2Car
from edge.ev.iso20 import Iso20ContractCredentials, Iso20DcCar
from edge.hardware import SimulatedCharger
from edge.pki.plug_and_charge import LocalPlugAndCharge
from edge.pki.testpki import TEST_EMAID
from edge.v2g import sap
from edge.v2g.charger import ChargerConnection, EvseConfig
from edge.v2g.iso20.session import Iso20DcSession
from edge.v2g.server import serve_connection
from edge.v2g.v2gtp import PayloadType, V2gtpDecoder, V2gtpMessage, frame
from exi.model.apphand import supportedAppProtocolRes
from tests.inmemory import run

DC_REQUESTS = ["SessionSetupReq", "AuthorizationSetupReq", "AuthorizationReq", "ServiceDiscoveryReq",
               "ServiceDetailReq", "ServiceSelectionReq", "DC_ChargeParameterDiscoveryReq", "ScheduleExchangeReq",
               "DC_CableCheckReq", "DC_PreChargeReq", "PowerDeliveryReq", "DC_ChargeLoopReq", "PowerDeliveryReq",
               "DC_WeldingDetectionReq", "SessionStopReq"]


def charger(**config: Any) -> tuple[SimulatedCharger, EvseConfig]:
    return SimulatedCharger(isolation_s=0.5, voltage_tau=0.1), EvseConfig(**config)


def power_off(hw: SimulatedCharger) -> bool:
    return not hw.closed and hw.target_i == 0


def local_pnc(pki: Path, **kw: Any) -> LocalPlugAndCharge:
    return LocalPlugAndCharge.from_pki_folder(pki, local_install=False, **kw)


def test_eim_session() -> None:
    hw, config = charger()
    conn = ChargerConnection(hw, config=config)
    car = Iso20DcCar(soc=40, target_soc=40.5, capacity_wh=2_000)
    run(car, conn)
    assert car.stopped_cleanly and car.authorization_used == "EIM" and power_off(hw)
    assert conn.protocol is sap.ISO20_DC and isinstance(conn.session, Iso20DcSession)
    assert conn.session.state == "stopped" and conn.session.evcc_id == car.evccid
    assert [n for i, n in enumerate(car.log) if i == 0 or car.log[i - 1] != n] == DC_REQUESTS
    # 0.5 % of 2 kWh: the car's battery model and the charger's meter agree
    assert car.soc >= 40.5 and car.energy_wh >= 10 and hw.energy_wh() == pytest.approx(car.energy_wh, rel=0.2)
    assert set(conn.session.stats) == set(DC_REQUESTS)
    assert car.log[car.log.index("DC_ChargeLoopReq") - 1] == "PowerDeliveryReq" and not hw.closed


@pytest.mark.parametrize("folder", ["iso15118_20", "iso15118_20_ed448"])
def test_pnc_session_with_metering_confirmations(pki: Path, folder: str) -> None:
    contract = Iso20ContractCredentials.from_pki(pki, folder)
    assert contract.emaid == TEST_EMAID
    assert isinstance(contract.key, ed448.Ed448PrivateKey) == (folder == "iso15118_20_ed448")
    pnc = local_pnc(pki, ongoing_rounds=1)
    hw, config = charger(pnc=pnc, pnc_without_tls=True, receipt_interval=0.5)
    conn = ChargerConnection(hw, config=config)
    car = Iso20DcCar(soc=40, target_soc=41, capacity_wh=2_000, authorization="pnc", contract=contract)
    run(car, conn)
    assert car.stopped_cleanly and car.authorization_used == "PnC" and power_off(hw)
    assert car.log[2:4] == ["AuthorizationReq", "AuthorizationReq"]  # Ongoing (the backend), then decided
    assert car.receipts >= 2 and conn.session.receipts == car.receipts
    checked = [what for what, code in pnc.decisions if code == "OK" and what.startswith("signature over")]
    receipts = ["signature over SignedMeteringData"] * car.receipts
    assert checked == ["signature over PnC_AReqAuthorizationMode", *receipts]
    assert not [d for d in pnc.decisions if d[1] != "OK"]


def test_pnc_contract_refused_the_car_stops_without_power(pki: Path) -> None:
    contract = Iso20ContractCredentials.from_pki(pki)
    hw, config = charger(pnc=local_pnc(pki, allowed_emaids={"DEXYZ000000001"}), pnc_without_tls=True)
    conn = ChargerConnection(hw, config=config)
    car = Iso20DcCar(authorization="pnc", contract=contract)
    run(car, conn)
    assert car.refused == "WARNING_GeneralPnCAuthorizationError" and not car.stopped_cleanly
    assert car.log == ["SessionSetupReq", "AuthorizationSetupReq", "AuthorizationReq", "SessionStopReq"]
    assert conn.session.state == "stopped" and hw.energy_wh() == 0 and power_off(hw) and hw.target_v == 0


def test_pnc_signed_with_another_key_fails(pki: Path) -> None:
    contract = Iso20ContractCredentials.from_pki(pki, "iso15118_20_ed448")
    stranger = dataclasses.replace(contract, key=ed448.Ed448PrivateKey.generate())
    hw, config = charger(pnc=local_pnc(pki), pnc_without_tls=True)
    conn = ChargerConnection(hw, config=config)
    with pytest.raises(SessionFailed, match="AuthorizationRes failed: FAILED_SignatureError"):
        run(car := Iso20DcCar(authorization="pnc", contract=stranger), conn)
    assert conn.closing and conn.session.done and power_off(hw) and car.energy_wh == 0


def test_pnc_falls_back_to_eim_without_tls(pki: Path) -> None:
    hw, config = charger(pnc=local_pnc(pki))  # PnC configured, but this connection is plain TCP
    conn = ChargerConnection(hw, config=config)
    car = Iso20DcCar(soc=40, target_soc=40.2, capacity_wh=2_000, authorization="pnc",
                     contract=Iso20ContractCredentials.from_pki(pki))
    run(car, conn)
    assert car.stopped_cleanly and car.authorization_used == "EIM"
    assert "the charger does not offer PnC; falling back to EIM" in car.notes


def test_pause_and_resume() -> None:
    hw, config = charger()
    car = Iso20DcCar(soc=40, target_soc=40.6, capacity_wh=2_000, pause_at_soc=40.2)
    now = run(car, ChargerConnection(hw, config=config))
    assert car.paused and not car.stopped_cleanly and power_off(hw) and len(config.paused_iso20.sessions) == 1
    paused_id = car.session_id
    car.resume()
    second = ChargerConnection(hw, config=config)
    run(car, second, now + 2)
    assert car.resumed and car.stopped_cleanly and car.soc >= 40.6
    assert second.session.resumed and second.session.session_id == paused_id and not config.paused_iso20.sessions
    assert car.log.count("DC_CableCheckReq") >= 2  # the contactors were open: cable check again


def test_schedule_renegotiation() -> None:
    hw, config = charger()
    conn = ChargerConnection(hw, config=config)
    car = Iso20DcCar(soc=40, target_soc=40.6, capacity_wh=2_000, renegotiate_at_soc=40.2)
    run(car, conn)
    assert car.stopped_cleanly and car.renegotiations == 1 and conn.session.renegotiations == 1
    i = car.log.index("ScheduleExchangeReq", car.log.index("DC_ChargeLoopReq"))
    assert car.log[i - 1:i + 3] == ["PowerDeliveryReq", "ScheduleExchangeReq", "PowerDeliveryReq", "DC_ChargeLoopReq"]


def test_the_charger_stops_the_charge() -> None:
    hw, config = charger()
    conn = ChargerConnection(hw, config=config)
    car = Iso20DcCar(soc=40, target_soc=90, capacity_wh=2_000)

    def stop_after_a_while(now: float) -> None:
        if car.log.count("DC_ChargeLoopReq") == 5:
            conn.session.request_stop()

    run(car, conn, each=stop_after_a_while)
    assert car.stopped_cleanly and "the charger asked to stop (EVSENotification Terminate)" in car.notes
    assert car.log.count("DC_ChargeLoopReq") == 5 and car.soc < 90 and power_off(hw)


def test_quirk_stop_after_session_setup() -> None:
    hw, config = charger()
    conn = ChargerConnection(hw, config=config)
    car = Iso20DcCar(quirks=QUIRK_PROFILES["audi-q4"])
    run(car, conn)
    assert car.log == ["SessionSetupReq", "SessionStopReq"] and conn.session.state == "stopped"


def test_car_arguments_and_credentials_errors(tmp_path: Path, pki: Path) -> None:
    with pytest.raises(ValueError, match="contract credentials"):
        Iso20DcCar(authorization="pnc")
    with pytest.raises(ValueError, match="authorization must be one of"):
        Iso20DcCar(authorization="card")
    with pytest.raises(ValueError, match="cannot read"):
        Iso20ContractCredentials.from_pki(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(pki / "iso15118_20", copy / "iso15118_20")
    shutil.copy(pki / "iso15118_20_ed448/private_keys/contractLeaf.key", copy / "iso15118_20/private_keys/")
    with pytest.raises(ValueError, match="is not the key of"):
        Iso20ContractCredentials.from_pki(copy)


# ---------------------------------------------------------------------------------------------- over a stream


async def test_drive_frames_each_request_with_its_payload_type(autojump_clock: trio.abc.Clock) -> None:
    hw, config = charger()
    conn = ChargerConnection(hw, config=config)
    seen: list[int] = []
    handle = conn.handle

    def recording(message: V2gtpMessage, now: float) -> V2gtpMessage | None:
        seen.append(message.payload_type)
        return handle(message, now)

    conn.handle = recording  # type: ignore[method-assign]
    car_side, charger_side = trio.testing.memory_stream_pair()
    car = Iso20DcCar(soc=40, target_soc=40.3, capacity_wh=2_000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_connection, charger_side, conn)
        sent = await drive(car_side, car, timeout_factor=1.0)
        await car_side.aclose()
    assert car.stopped_cleanly and sent == len(car.log) + 1 == len(seen)
    kinds = {name: ptype for name, ptype in zip(["supportedAppProtocolReq", *car.log], seen, strict=True)}
    assert kinds["supportedAppProtocolReq"] == PayloadType.EXI
    assert kinds["SessionSetupReq"] == kinds["PowerDeliveryReq"] == PayloadType.ISO20_COMMON
    assert kinds["DC_CableCheckReq"] == kinds["DC_ChargeLoopReq"] == PayloadType.ISO20_DC
    assert conn.ended == "closed by the car" and power_off(hw)


async def test_drive_still_frames_iso2_as_before(autojump_clock: trio.abc.Clock) -> None:
    hw, config = charger()
    car_side, charger_side = trio.testing.memory_stream_pair()
    car = Iso2Car(soc=40, target_soc=40.3, capacity_wh=2_000, offer_din_too=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_connection, charger_side, ChargerConnection(hw, config=config))
        await drive(car_side, car, timeout_factor=1.0)
        await car_side.aclose()
    assert car.stopped_cleanly


async def test_drive_refuses_a_response_in_another_message_set(autojump_clock: trio.abc.Clock) -> None:
    car_side, charger_side = trio.testing.memory_stream_pair()

    async def wrong_charger() -> None:
        decoder = V2gtpDecoder()
        for message in decoder.feed(await charger_side.receive_some(65536)):  # supportedAppProtocolReq
            assert message.payload_type == PayloadType.EXI
        ok = exi.encode("apphand", supportedAppProtocolRes("OK_SuccessfulNegotiation", 1))
        await charger_side.send_all(frame(PayloadType.EXI, ok))
        [setup] = decoder.feed(await charger_side.receive_some(65536))
        assert setup.payload_type == PayloadType.ISO20_COMMON
        await charger_side.send_all(frame(PayloadType.EXI, b"\x80"))  # -2 framing for a -20 answer

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wrong_charger)
        with pytest.raises(ConnectionError, match="answered SessionSetupReq with payload type 0x8001, not 0x8002"):
            await drive(car_side, Iso20DcCar(), timeout_factor=1.0)
