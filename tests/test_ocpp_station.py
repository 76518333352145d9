"""The OCPP station against ``edge csms`` (a separate process on loopback): boot, statuses, transactions
with meter values, the CSMS's calls, invalid frames, smart charging reaching the car, and the durable
queue across an outage."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from edge.ev.iso2 import Iso2Car
from edge.ev.iso20 import Iso20Car
from edge.ocpp.adapter import validate
from tests.ocpp_station_rig import StationRig, script, sent_by_station
from tests.test_ocpp_csms import CsmsProcess


async def _until(predicate, timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.05)


def _answers(log: list[dict]) -> dict[str, list]:
    """The CSMS's script steps' outcomes by action."""
    out: dict[str, list] = {}
    for r in log:
        if r.get("event") == "step":
            out.setdefault(r.get("action", ""), []).append(r)
    return out


async def test_boot_pending_then_accepted_and_a_transaction(tmp_path: Path) -> None:
    csms = CsmsProcess(tmp_path, 0, ["--boot", "pending:2", "--versions", "ocpp2.0.1"])
    try:
        rig = StationRig(csms.url, tmp_path / "state")
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.station.run)
            await _until(lambda: rig.station.online(), 15)
            await rig.charge(Iso2Car(soc=40, target_soc=40.2))
            await _until(lambda: not rig.station.store.queued() and not rig.station.pending)
            nursery.cancel_scope.cancel()
        log = csms.log()
    finally:
        csms.stop()
        rig.station.close()
    boots = sent_by_station(log, "BootNotification")
    assert len(boots) == 3  # Pending, Pending, Accepted
    in_order = [r["frame"][2] for r in log if r.get("dir") == "in" and r["frame"][0] == 2]
    first_other = next(i for i, a in enumerate(in_order) if a != "BootNotification")
    assert first_other == 3  # nothing but BootNotification before Accepted
    assert sent_by_station(log, "StatusNotification")[0]["connectorStatus"] == "Available"
    events = sent_by_station(log, "TransactionEvent")
    for e in events:
        validate("2.0.1", "TransactionEvent", "request", e)
    assert events[0]["eventType"] == "Started" and events[-1]["eventType"] == "Ended"
    assert [e["seqNo"] for e in events] == list(range(len(events)))
    assert any(e["triggerReason"] == "MeterValuePeriodic" for e in events)
    statuses = [s["connectorStatus"] for s in sent_by_station(log, "StatusNotification")]
    assert "Occupied" in statuses and statuses[-1] == "Available"
    assert sent_by_station(log, "NotifyEVChargingNeeds")


async def test_the_csms_calls_and_invalid_frames(tmp_path: Path) -> None:
    steps = [
        {"after": "BootAccepted", "delay": 0.2, "action": "GetVariables", "payload": {"getVariableData": [
            {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}]}},
        {"after": "BootAccepted", "delay": 0.2, "action": "SetVariables", "payload": {"setVariableData": [
            {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"},
             "attributeValue": "77"}]}},
        {"after": "BootAccepted", "delay": 0.2, "action": "GetVariables", "payload": {"getVariableData": "nope"}},
        {"after": "BootAccepted", "delay": 0.2, "action": "FlyToTheMoon", "payload": {}},
        {"after": "BootAccepted", "delay": 0.2, "raw": "[2, \"x\", \"Heartbeat\""},
        {"after": "BootAccepted", "delay": 0.2, "action": "DataTransfer", "payload": {"vendorId": "acme"}},
        {"after": "BootAccepted", "delay": 0.2, "action": "GetBaseReport",
         "payload": {"requestId": 7, "reportBase": "FullInventory"}},
        {"after": "BootAccepted", "delay": 0.2, "action": "TriggerMessage",
         "payload": {"requestedMessage": "StatusNotification", "evse": {"id": 1, "connectorId": 1}}},
        {"after": "BootAccepted", "delay": 0.2, "action": "UnlockConnector", "payload": {"evseId": 1,
                                                                                         "connectorId": 1}},
    ]
    csms = CsmsProcess(tmp_path, 0, ["--script", str(script(tmp_path, steps))])
    try:
        rig = StationRig(csms.url, tmp_path / "state")
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.station.run)
            await _until(lambda: len(sent_by_station(csms.log(), "NotifyReport")) > 0, 15)
            await _until(lambda: len(_answers(csms.log()).get("UnlockConnector", [])) == 1, 10)
            await trio.sleep(0.3)
            assert rig.station.connected_at is not None  # still the first connection
            nursery.cancel_scope.cancel()
        log = csms.log()
    finally:
        csms.stop()
        rig.station.close()
    answers = _answers(log)
    get = answers["GetVariables"]
    ok = next(a for a in get if a["result"] == "CALLRESULT")
    assert ok["payload"]["getVariableResult"][0]["attributeValue"] == "300"
    bad = next(a for a in get if a["result"] == "CALLERROR")
    assert bad["error_code"] == "TypeConstraintViolation"
    assert answers["FlyToTheMoon"][0]["error_code"] == "NotImplemented"
    assert answers["DataTransfer"][0]["payload"] == {"status": "UnknownVendorId"}
    assert answers["SetVariables"][0]["payload"]["setVariableResult"][0]["attributeStatus"] == "Accepted"
    assert rig.station.boot.heartbeat_interval == 77
    assert answers["UnlockConnector"][0]["payload"] == {"status": "Unlocked"}
    # the unreadable frame was answered with RpcFrameworkError and nothing closed the connection
    errors = [r["frame"] for r in log if r.get("dir") == "in" and r.get("frame", [0])[0] == 4]
    assert any(f[2] == "RpcFrameworkError" for f in errors)
    reports = sent_by_station(log, "NotifyReport")
    assert reports[-1]["tbc"] is False and all(r["requestId"] == 7 for r in reports)
    assert len([r for r in log if r.get("event") == "connected"]) == 1


async def test_a_profile_mid_session_changes_the_cars_power(tmp_path: Path) -> None:
    profile = {"evseId": 1, "chargingProfile": {
        "id": 5, "stackLevel": 1, "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Relative",
        "chargingSchedule": [{"id": 1, "chargingRateUnit": "W",
                              "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 4000.0}]}]}}
    steps = [{"after": "TransactionEvent:Started", "delay": 0.3, "action": "SetChargingProfile", "payload": profile}]
    csms = CsmsProcess(tmp_path, 0, ["--script", str(script(tmp_path, steps)), "--versions", "ocpp2.0.1"])
    try:
        rig = StationRig(csms.url, tmp_path / "state")
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.station.run)
            await _until(lambda: rig.station.online(), 15)
            car = Iso2Car(soc=40, target_soc=60)
            commands = await rig.charge(car, lose_after=250)
            nursery.cancel_scope.cancel()
        log = csms.log()
    finally:
        csms.stop()
        rig.station.close()
    assert _answers(log)["SetChargingProfile"][0]["payload"] == {"status": "Accepted"}
    assert any(c.max_w == 4000.0 for c in commands)  # the controller got the CSMS's limit
    # and the car was told: the -2 session's loop responses carry the lower limit
    assert car._evse.max_power == 4000.0


async def test_offline_session_is_delivered_after_the_csms_comes_back(tmp_path: Path) -> None:
    csms = CsmsProcess(tmp_path, 0, [])
    port = csms.port
    csms.stop()  # the CSMS is down while the car charges
    rig = StationRig(f"ws://127.0.0.1:{port}", tmp_path / "state")
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.station.run)
            await rig.charge(Iso20Car(service="dc_bpt", control="dynamic", soc=40, target_soc=40.2))
            queued = sum(m.action == "TransactionEvent" for m in rig.station.store.next_messages(1000))
            assert queued >= 2
            csms = CsmsProcess(tmp_path, 1, ["--port", str(port)])
            await _until(lambda: not rig.station.store.queued(), 20)
            nursery.cancel_scope.cancel()
        log = csms.log()
    finally:
        csms.stop()
        rig.station.close()
    events = sent_by_station(log, "TransactionEvent")
    assert len(events) == queued
    assert all(e["offline"] is True for e in events)
    assert [e["seqNo"] for e in events] == list(range(len(events)))


async def _pnc_session(tmp_path: Path, csms_args: list[str], *, csms_up: bool = True,
                       overrides: dict[str, str] | None = None) -> tuple[object, list[dict], StationRig]:
    """A -2 PnC car on a station whose contracts the CSMS authorizes; returns the car, the CSMS log, the rig."""
    from edge.ev.iso2 import ContractCredentials
    from edge.pki.plug_and_charge import LocalPlugAndCharge
    from edge.pki.testpki import create_test_pki

    pki = tmp_path / "pki"
    create_test_pki(pki)
    csms = CsmsProcess(tmp_path, 0, csms_args)
    url = csms.url
    if not csms_up:
        csms.stop()
    rig = StationRig(url, tmp_path / "state", overrides=overrides or {})
    rig.config.pnc = rig.station.use_pnc(LocalPlugAndCharge.from_pki_folder(pki))
    rig.config.pnc_without_tls = True
    car = Iso2Car(payment="pnc", contract=ContractCredentials.from_pki(pki), soc=40, target_soc=40.2)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.station.run)
            if csms_up:
                await _until(rig.station.online, 15)
            try:
                await rig.charge(car)
            except Exception as e:  # the car gives up when refused
                car.failure = str(e)
            await trio.sleep(0.2)
            nursery.cancel_scope.cancel()
        return car, csms.log(), rig
    finally:
        csms.stop()
        rig.station.close()


async def test_pnc_authorize_with_hash_data_and_the_contract_as_id_token(tmp_path: Path) -> None:
    car, log, _ = await _pnc_session(tmp_path, [])
    [authorize] = sent_by_station(log, "Authorize")
    validate("2.1", "Authorize", "request", authorize)
    assert authorize["idToken"]["type"] == "eMAID" and authorize["iso15118CertificateHashData"]
    started = next(e for e in sent_by_station(log, "TransactionEvent") if e["eventType"] == "Started")
    assert started["idToken"] == authorize["idToken"] and started["triggerReason"] == "Authorized"
    assert car.stopped_cleanly and car.energy_wh > 0


async def test_pnc_refused_by_the_csms_gets_no_power(tmp_path: Path) -> None:
    car, log, rig = await _pnc_session(tmp_path, ["--authorize", "invalid"])
    assert sent_by_station(log, "Authorize")
    assert "FAILED_ContractCanceled" in getattr(car, "failure", "") and car.energy_wh == 0
    assert not sent_by_station(log, "TransactionEvent") and rig.board.energy_wh() == 0


async def test_pnc_offline_follows_contract_validation_offline(tmp_path: Path) -> None:
    allowed, _, _ = await _pnc_session(tmp_path / "a", [], csms_up=False)
    assert allowed.stopped_cleanly and allowed.energy_wh > 0
    refused, _, rig = await _pnc_session(tmp_path / "b", [], csms_up=False,
                                          overrides={"ISO15118Ctrlr/ContractValidationOffline": "false"})
    assert "AuthorizationRes failed: FAILED" in getattr(refused, "failure", "") and refused.energy_wh == 0
    assert any("ContractValidationOffline is false" in d.why for d in rig.station.pnc.decisions)


async def test_a_central_setpoint_discharges_a_bpt_car_and_the_csms_sees_the_export(tmp_path: Path) -> None:
    profile = {"evseId": 1, "chargingProfile": {
        "id": 9, "stackLevel": 0, "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Relative",
        "chargingSchedule": [{"id": 1, "chargingRateUnit": "W", "chargingSchedulePeriod": [
            {"startPeriod": 0, "operationMode": "CentralSetpoint", "setpoint": -8000.0, "dischargeLimit": -8000.0}]}]}}
    steps = [{"after": "TransactionEvent:Started", "delay": 0.0, "action": "SetChargingProfile", "payload": profile}]
    csms = CsmsProcess(tmp_path, 0, ["--script", str(script(tmp_path, steps)), "--versions", "ocpp2.1"])
    try:
        rig = StationRig(csms.url, tmp_path / "state")
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.station.run)
            await _until(rig.station.online, 15)
            car = Iso20Car(service="dc_bpt", control="dynamic", soc=60.0, target_soc=95.0, capacity_wh=2_000.0,
                           max_discharge_power=15_000.0, max_discharge_current=50.0, transfer_s=4.0)
            await rig.charge(car)
            await _until(lambda: not rig.station.store.queued() and not rig.station.pending)
            nursery.cancel_scope.cancel()
        log = csms.log()
    finally:
        csms.stop()
        rig.station.close()
    assert _answers(log)["SetChargingProfile"][0]["payload"] == {"status": "Accepted"}
    assert rig.board.energy_exported_wh() > 1 and car.energy_exported_wh > 1  # the car fed the grid

    def register(event: dict, measurand: str) -> float:
        return next(s["value"] for s in event["meterValue"][0]["sampledValue"] if s["measurand"] == measurand)

    events = [e for e in sent_by_station(log, "TransactionEvent") if "meterValue" in e]
    exported = register(events[-1], "Energy.Active.Export.Register") - register(events[0],
                                                                                 "Energy.Active.Export.Register")
    assert exported == pytest.approx(rig.board.energy_exported_wh(), rel=0.05, abs=0.01)
    assert any(register(e, "Power.Active.Export") > 1000 for e in events)  # sampled while discharging
    needs = sent_by_station(log, "NotifyEVChargingNeeds")
    validate("2.1", "NotifyEVChargingNeeds", "request", needs[0])
    assert needs[0]["chargingNeeds"]["requestedEnergyTransfer"] == "DC_BPT"
    assert needs[0]["chargingNeeds"]["v2xChargingParameters"]["maxDischargePower"] > 0


def _cps_answer(pki: Path) -> str:
    """What a CPS behind the CSMS answers this PKI's -2 car (an exiResponse: the whole V2G message, base64):
    a contract for the car's OEM provisioning certificate, signed by the CPS."""
    import base64

    import exi
    from edge.ev.iso2 import OemCredentials
    from edge.pki.install import LocalContractIssuer
    from exi.model.iso2_msgbody import BodyType
    from exi.model.iso2_msgdef import V2G_Message
    from exi.model.iso2_msgheader import MessageHeaderType

    request, _ = OemCredentials.from_pki(pki).installation_request()
    answer = LocalContractIssuer.from_pki_folder(pki).install(request)
    header = MessageHeaderType(b"\x01" * 8, Signature=answer.signature)
    message = V2G_Message(header, BodyType(CertificateInstallationRes=answer.body))
    return base64.b64encode(exi.encode("iso2", message)).decode()


async def test_get_15118_ev_certificate_installs_a_contract_that_then_charges(tmp_path: Path) -> None:
    from edge.ev.iso2 import OemCredentials
    from edge.pki.plug_and_charge import LocalPlugAndCharge
    from edge.pki.testpki import create_test_pki

    pki = tmp_path / "pki"
    create_test_pki(pki)
    csms_script = tmp_path / "cps.json"
    import json
    csms_script.write_text(json.dumps({"exi_response": _cps_answer(pki), "steps": []}))
    csms = CsmsProcess(tmp_path, 0, ["--script", str(csms_script)])
    rig = StationRig(csms.url, tmp_path / "state")
    # no local issuer: only the CSMS can install the contract
    rig.config.pnc = rig.station.use_pnc(LocalPlugAndCharge.from_pki_folder(pki, local_install=False))
    rig.config.pnc_without_tls = True
    car = Iso2Car(payment="pnc", install_certificate=True, oem=OemCredentials.from_pki(pki), soc=40,
                  target_soc=40.2)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.station.run)
            await _until(rig.station.online, 15)
            await rig.charge(car)
            nursery.cancel_scope.cancel()
        log = csms.log()
    finally:
        csms.stop()
        rig.station.close()
    [request] = sent_by_station(log, "Get15118EVCertificate")
    validate("2.1", "Get15118EVCertificate", "request", request)
    assert request["action"] == "Install" and request["iso15118SchemaVersion"] == "urn:iso:15118:2:2013:MsgDef"
    assert car.installed is not None and car.stopped_cleanly and car.energy_wh > 0
    [authorize] = sent_by_station(log, "Authorize")
    assert authorize["idToken"]["idToken"] == car.installed.emaid  # the new contract charged


def test_charging_profiles_survive_a_restart_but_not_their_transaction(tmp_path: Path) -> None:
    from edge.controller import ChargingController
    from edge.ocpp.bridge import MeterReading
    from edge.ocpp.station import EvseLink, OcppStation, StationSettings

    def station() -> OcppStation:
        link = EvseLink(1, ChargingController(), lambda: MeterReading(0.0, 0.0, 0.0))
        return OcppStation(StationSettings("ws://127.0.0.1:1", "CS1", tmp_path), [link])

    def profile(pid: int, purpose: str, limit: float) -> dict:
        return {"evseId": 1 if purpose == "TxProfile" else 0, "chargingProfile": {
            "id": pid, "stackLevel": 0, "chargingProfilePurpose": purpose, "chargingProfileKind": "Relative",
            "chargingSchedule": [{"id": 1, "chargingRateUnit": "W",
                                  "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}]}]}}

    first = station()
    tx = first.evses[0].transactions
    assert tx is not None
    from edge.controller import CarSession, EnergyTransferStarted
    tx.on_event(EnergyTransferStarted(CarSession("11" * 8, "iso2")))
    assert first.handle_call("SetChargingProfile", profile(1, "TxDefaultProfile", 7000.0)) == {"status": "Accepted"}
    assert first.handle_call("SetChargingProfile", profile(2, "TxProfile", 3000.0)) == {"status": "Accepted"}
    first.close()  # a crash: the transaction stays open in the store
    second = station()
    try:
        assert sorted(second.profiles.profiles) == [1]  # the TxProfile went with its (interrupted) transaction
        report = second.handle_call("GetChargingProfiles", {"requestId": 1, "chargingProfile": {}})
        assert report == {"status": "Accepted"}
    finally:
        second.close()


def test_connection_failures_are_told_from_bugs() -> None:
    from edge.ocpp.station import connection_failure

    group = BaseExceptionGroup("nursery", [trio.BrokenResourceError("reset"), ConnectionResetError("peer")])
    assert "BrokenResourceError" in connection_failure(group) and "ConnectionResetError" in connection_failure(group)
    assert connection_failure(BaseExceptionGroup("x", [KeyError("bug"), OSError()])) is None
    assert connection_failure(KeyError("bug")) is None


async def test_the_csms_closing_the_connection_mid_session_loses_nothing(tmp_path: Path) -> None:
    steps = [{"after": "TransactionEvent:Started", "delay": 0.2, "close": True}]
    csms = CsmsProcess(tmp_path, 0, ["--script", str(script(tmp_path, steps))])
    try:
        rig = StationRig(csms.url, tmp_path / "state")
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.station.run)
            await _until(rig.station.online, 15)
            await rig.charge(Iso2Car(soc=40, target_soc=40.3))
            await _until(lambda: not rig.station.store.queued() and rig.station.online(), 20)
            nursery.cancel_scope.cancel()
        log = csms.log()
    finally:
        csms.stop()
        rig.station.close()
    assert len([r for r in log if r.get("event") == "connected"]) == 2 and rig.station.bugs == 0
    events = sent_by_station(log, "TransactionEvent")
    numbers = sorted({e["seqNo"] for e in events})
    assert numbers == list(range(len(numbers))) and events[-1]["eventType"] == "Ended"
    boots = sent_by_station(log, "BootNotification")
    assert len(boots) == 1  # once Accepted, a reconnect needs no new boot


async def test_more_power_from_the_csms_renegotiates_a_2_session(tmp_path: Path) -> None:
    def profile(pid: int, purpose: str, limit: float) -> dict:
        return {"evseId": 1, "chargingProfile": {
            "id": pid, "stackLevel": 1, "chargingProfilePurpose": purpose, "chargingProfileKind": "Relative",
            "chargingSchedule": [{"id": 1, "chargingRateUnit": "W",
                                  "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}]}]}}

    steps = [{"after": "BootAccepted", "delay": 0.0, "action": "SetChargingProfile",
              "payload": profile(1, "TxDefaultProfile", 3000.0)},
             {"after": "TransactionEvent:Started", "delay": 0.5, "action": "SetChargingProfile",
              "payload": profile(2, "TxProfile", 30000.0)}]
    csms = CsmsProcess(tmp_path, 0, ["--script", str(script(tmp_path, steps)), "--versions", "ocpp2.0.1"])
    try:
        rig = StationRig(csms.url, tmp_path / "state")
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.station.run)
            await _until(lambda: 1 in rig.station.profiles.profiles, 15)
            car = Iso2Car(soc=40, target_soc=60)
            commands = await rig.charge(car, lose_after=200)
            nursery.cancel_scope.cancel()
    finally:
        csms.stop()
        rig.station.close()
    assert commands[0].max_w == 3000.0 and commands[-1].max_w == 30000.0
    assert car._evse.max_power == 30000.0  # the car learnt the new limit ...
    assert car.log.count("ChargeParameterDiscoveryReq") >= 2  # ... through a renegotiation


async def test_certificate_management_through_the_csms(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from edge.pki.testpki import create_test_pki

    pki = tmp_path / "pki"
    create_test_pki(pki)
    root = x509.load_pem_x509_certificate((pki / "iso15118_2" / "certs" / "v2gRootCACert.pem").read_bytes())
    pem = root.public_bytes(Encoding.PEM).decode()
    steps = [
        {"after": "BootAccepted", "delay": 0.1, "action": "InstallCertificate",
         "payload": {"certificateType": "V2GRootCertificate", "certificate": pem}},
        {"after": "BootAccepted", "delay": 0.1, "action": "InstallCertificate",
         "payload": {"certificateType": "V2GRootCertificate", "certificate": "not a certificate"}},
        {"after": "BootAccepted", "delay": 0.1, "action": "GetInstalledCertificateIds",
         "payload": {"certificateType": ["V2GRootCertificate"]}},
        {"after": "BootAccepted", "delay": 0.1, "action": "TriggerMessage",
         "payload": {"requestedMessage": "SignV2GCertificate"}},
    ]
    csms = CsmsProcess(tmp_path, 0, ["--script", str(script(tmp_path, steps)), "--versions", "ocpp2.0.1"])
    try:
        rig = StationRig(csms.url, tmp_path / "state", overrides={})
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.station.run)
            await _until(lambda: sent_by_station(csms.log(), "SignCertificate"), 15)
            nursery.cancel_scope.cancel()
        log = csms.log()
    finally:
        csms.stop()
        rig.station.close()
    answers = _answers(log)
    installs = [a["payload"]["status"] for a in answers["InstallCertificate"]]
    assert sorted(installs) == ["Accepted", "Rejected"]
    ids = answers["GetInstalledCertificateIds"][0]["payload"]
    assert ids["status"] == "Accepted" and ids["certificateHashDataChain"][0]["certificateType"] == "V2GRootCertificate"
    [sign] = sent_by_station(log, "SignCertificate")
    csr = x509.load_pem_x509_csr(sign["csr"].encode())
    assert sign["certificateType"] == "V2GCertificate" and csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "CS1"  # the SeccId
    events = [e["type"] for e in sent_by_station(log, "SecurityEventNotification")]
    assert "StartupOfTheDevice" in events


async def test_the_composite_schedule_is_the_2_cars_schedule_and_its_plan_goes_back(tmp_path: Path) -> None:
    profile = {"evseId": 1, "chargingProfile": {
        "id": 3, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile", "chargingProfileKind": "Relative",
        "chargingSchedule": [{"id": 1, "chargingRateUnit": "W", "chargingSchedulePeriod": [
            {"startPeriod": 0, "limit": 5000.0}, {"startPeriod": 1800, "limit": 9000.0}]}]}}
    steps = [{"after": "BootAccepted", "delay": 0.0, "action": "SetChargingProfile", "payload": profile}]
    csms = CsmsProcess(tmp_path, 0, ["--script", str(script(tmp_path, steps)), "--versions", "ocpp2.0.1"])
    try:
        rig = StationRig(csms.url, tmp_path / "state")
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.station.run)
            await _until(lambda: 3 in rig.station.profiles.profiles, 15)
            await rig.charge(Iso2Car(mode="ac", soc=40, target_soc=40.1, capacity_wh=500.0))
            await _until(lambda: not rig.station.pending, 10)
            nursery.cancel_scope.cancel()
        log = csms.log()
    finally:
        csms.stop()
        rig.station.close()
    session = rig.connection.session
    assert session is not None
    plan = [(round(t - session.schedule_plan[0][0]), p) for t, p in session.schedule_plan]
    assert plan[0] == (0, 5000.0) and plan[1][1] == 9000.0 and 1790 <= plan[1][0] <= 1800
    [chosen] = sent_by_station(log, "NotifyEVChargingSchedule")
    validate("2.0.1", "NotifyEVChargingSchedule", "request", chosen)
    assert chosen["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] <= 5000.0


async def test_discharge_falls_back_to_charge_only_when_offline_too_long(tmp_path: Path) -> None:
    from edge.controller import CarSession, ChargingController, EnergyTransferStarted
    from edge.ocpp.bridge import MeterReading
    from edge.ocpp.station import EvseLink, OcppStation, StationSettings

    controller = ChargingController()
    link = EvseLink(1, controller, lambda: MeterReading(0.0, 0.0, 0.0))
    station = OcppStation(StationSettings("ws://127.0.0.1:1", "CS1", tmp_path), [link],
                          overrides={"SmartChargingCtrlr/V2XOfflineChargeOnlyAfter": "30"})
    try:
        station.version = station.profiles.version = "2.1"
        station.connected_at, station.offline_since = trio.current_time(), None  # online
        assert link.transactions is not None
        link.transactions.on_event(EnergyTransferStarted(CarSession("22" * 8, "iso20-dc")))
        profile = {"evseId": 1, "chargingProfile": {
            "id": 1, "stackLevel": 0, "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Relative",
            "chargingSchedule": [{"id": 1, "chargingRateUnit": "W", "chargingSchedulePeriod": [
                {"startPeriod": 0, "operationMode": "CentralSetpoint", "setpoint": -5000.0}]}]}}
        assert station.handle_call("SetChargingProfile", profile) == {"status": "Accepted"}
        assert controller.command(0.0).target_w == -5000.0
        station.connected_at, station.offline_since = None, trio.current_time() - 10  # offline for 10 s
        station.apply_profiles(link, force=True)
        assert controller.command(0.0).min_w == -5000.0  # still within V2XOfflineChargeOnlyAfter
        station.offline_since = trio.current_time() - 31
        station.apply_profiles(link, force=True)
        command = controller.command(0.0)
        assert command.min_w == 0.0 and command.target_w is None  # no discharge without the CSMS
    finally:
        station.close()


def test_a_refused_remote_start_leaves_no_token_for_the_next_car(tmp_path: Path) -> None:
    from edge.controller import ChargingController
    from edge.ocpp.bridge import MeterReading
    from edge.ocpp.station import EvseLink, OcppStation, StationSettings

    link = EvseLink(1, ChargingController(), lambda: MeterReading(0.0, 0.0, 0.0))
    station = OcppStation(StationSettings("ws://127.0.0.1:1", "CS1", tmp_path), [link])
    try:
        request = {"idToken": {"idToken": "04A1B2C3", "type": "ISO14443"}, "remoteStartId": 7, "evseId": 1}
        profile = {"id": 1, "stackLevel": 0, "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Relative",
                   "chargingSchedule": [{"id": 1, "chargingRateUnit": "W",
                                         "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 1000.0}]}]}
        refused = station.handle_call("RequestStartTransaction", {**request, "chargingProfile": profile})
        assert refused["status"] == "Rejected"
        assert link.transactions is not None and link.transactions._remote is None
        assert station.handle_call("RequestStartTransaction", request) == {"status": "Accepted"}
        assert link.transactions._remote == (request["idToken"], 7)
    finally:
        station.close()
