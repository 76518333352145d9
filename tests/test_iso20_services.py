"""ISO 15118-20 energy services beyond plain DC, on the sans-IO session with scripted requests: AC and
AC_BPT, DC_BPT, Scheduled and Dynamic control mode, the controller's power command reaching the car
(charge -> discharge -> charge, the sign at the car and on the meter), export never without BPT, the
discharge-limit sign quirk, and the charger-initiated stop and renegotiation."""

from __future__ import annotations

from typing import Any

import pytest

from edge.controller import ChargingController, PowerCommand
from edge.hardware import SimulatedCharger, bidirectional_charger
from edge.v2g.iso20.messages import SERVICE_AC, SERVICE_AC_BPT, SERVICE_DC, SERVICE_DC_BPT, from_rational, rational
from edge.v2g.iso20.session import Iso20Session
from edge.v2g.power import SignConvention
from exi.model import iso20_ac as ac
from exi.model import iso20_commonmessages as cm
from exi.model import iso20_dc as dc
from tests.test_iso20_session import Car

SCHEDULED, DYNAMIC = 1, 2  # ParameterSetIDs: one set per control mode


def session(hw: SimulatedCharger, protocol: str = "iso20-dc", **kw: Any) -> Iso20Session:
    return Iso20Session(hw, protocol=protocol, **kw)


def select(car: Car, service: int, parameter_set: int) -> dict[str, int]:
    """Setup, EIM, discovery, detail and selection; returns the chosen set's parameters."""
    car.setup(), car.eim()
    offered = [s.ServiceID for s in car.send(cm.ServiceDiscoveryReqType()).EnergyTransferServiceList.Service]
    assert service in offered, offered
    detail = car.send(cm.ServiceDetailReqType(ServiceID=service))
    sets = {p.ParameterSetID: {x.Name: x.intValue for x in p.Parameter}
            for p in detail.ServiceParameterList.ParameterSet}
    chosen = cm.SelectedServiceType(ServiceID=service, ParameterSetID=parameter_set)
    assert car.send(cm.ServiceSelectionReqType(SelectedEnergyTransferService=chosen)).ResponseCode == "OK"
    return sets[parameter_set]


def dc_bpt_parameters(car: Car, discharge_power: float = 20_000, discharge_current: float = 50) -> Any:
    mode = dc.BPT_DC_CPDReqEnergyTransferModeType(
        EVMaximumChargePower=rational(100_000), EVMinimumChargePower=rational(0),
        EVMaximumChargeCurrent=rational(200), EVMinimumChargeCurrent=rational(0), EVMaximumVoltage=rational(450),
        EVMinimumVoltage=rational(200), EVMaximumDischargePower=rational(discharge_power),
        EVMinimumDischargePower=rational(0), EVMaximumDischargeCurrent=rational(discharge_current),
        EVMinimumDischargeCurrent=rational(0))
    return car.send(dc.DC_ChargeParameterDiscoveryReqType(BPT_DC_CPDReqEnergyTransferMode=mode))


def dynamic_schedule(car: Car) -> cm.ScheduleExchangeResType:
    mode = cm.Dynamic_SEReqControlModeType(DepartureTime=7200, EVTargetEnergyRequest=rational(30_000),
                                           EVMaximumEnergyRequest=rational(40_000),
                                           EVMinimumEnergyRequest=rational(-10_000))
    return car.send(cm.ScheduleExchangeReqType(MaximumSupportingPoints=24, Dynamic_SEReqControlMode=mode))


def dynamic_start(car: Car) -> cm.PowerDeliveryResType:
    profile = cm.EVPowerProfileType(
        TimeAnchor=0, Dynamic_EVPPTControlMode=cm.Dynamic_EVPPTControlModeType(),
        EVPowerProfileEntries=cm.EVPowerProfileEntryListType([cm.PowerScheduleEntryType(3600, rational(11_000))]))
    return car.send(cm.PowerDeliveryReqType(EVProcessing="Finished", ChargeProgress="Start", EVPowerProfile=profile))


def bpt_dynamic_loop(car: Car, dt: float = 0.25) -> dc.DC_ChargeLoopResType:
    mode = dc.BPT_Dynamic_DC_CLReqControlModeType(
        EVTargetEnergyRequest=rational(30_000), EVMaximumEnergyRequest=rational(40_000),
        EVMinimumEnergyRequest=rational(-10_000), EVMaximumChargePower=rational(100_000),
        EVMinimumChargePower=rational(0), EVMaximumChargeCurrent=rational(200), EVMaximumVoltage=rational(450),
        EVMinimumVoltage=rational(200), EVMaximumDischargePower=rational(20_000), EVMinimumDischargePower=rational(0),
        EVMaximumDischargeCurrent=rational(50))
    return car.send(dc.DC_ChargeLoopReqType(EVPresentVoltage=rational(380), MeterInfoRequested=True,
                                            BPT_Dynamic_DC_CLReqControlMode=mode), dt=dt)


def ac_parameters(car: Car, bpt: bool, max_power: float = 11_000, discharge: float = 7_000) -> Any:
    if bpt:
        mode = ac.BPT_AC_CPDReqEnergyTransferModeType(
            EVMaximumChargePower=rational(max_power), EVMinimumChargePower=rational(1_400),
            EVMaximumDischargePower=rational(discharge), EVMinimumDischargePower=rational(0))
        return car.send(ac.AC_ChargeParameterDiscoveryReqType(BPT_AC_CPDReqEnergyTransferMode=mode))
    mode = ac.AC_CPDReqEnergyTransferModeType(EVMaximumChargePower=rational(max_power),
                                              EVMinimumChargePower=rational(1_400))
    return car.send(ac.AC_ChargeParameterDiscoveryReqType(AC_CPDReqEnergyTransferMode=mode))


def ac_loop(car: Car, bpt: bool, dynamic: bool, present: float = 0.0) -> ac.AC_ChargeLoopResType:
    kind = ("BPT_" if bpt else "") + ("Dynamic" if dynamic else "Scheduled") + "_AC_CLReqControlMode"
    fields: dict[str, Any] = {"EVTargetEnergyRequest": rational(20_000), "EVMaximumChargePower": rational(11_000),
                              "EVMinimumChargePower": rational(1_400), "EVPresentActivePower": rational(present),
                              "EVPresentReactivePower": rational(0)}
    if dynamic:
        fields |= {"DepartureTime": 3600, "EVMaximumEnergyRequest": rational(30_000),
                   "EVMinimumEnergyRequest": rational(0)}
    if bpt:
        fields |= {"EVMaximumDischargePower": rational(7_000), "EVMinimumDischargePower": rational(0)}
    mode = getattr(ac, kind + "Type")(**fields)
    return car.send(ac.AC_ChargeLoopReqType(MeterInfoRequested=False, **{kind: mode}), dt=0.25)


# ---------------------------------------------------------------------------------------------- DC_BPT dynamic


def to_dc_bpt_loop(car: Car) -> None:
    params = select(car, SERVICE_DC_BPT, DYNAMIC)
    assert params["ControlMode"] == 2 and params["BPTChannel"] == 1 and params["GeneratorMode"] == 1
    res = dc_bpt_parameters(car)
    assert res.ResponseCode == "OK" and from_rational(res.BPT_DC_CPDResEnergyTransferMode.EVSEMaximumDischargePower) > 0
    assert dynamic_schedule(car).Dynamic_SEResControlMode.DepartureTime == 7200
    car.cable_check_and_pre_charge()
    assert dynamic_start(car).ResponseCode == "OK"


def test_dc_bpt_dynamic_follows_the_controller_charge_discharge_charge() -> None:
    hw = bidirectional_charger(isolation_s=0.5, voltage_tau=0.1)
    controller = ChargingController()
    car = Car(session(hw, controller=controller))
    to_dc_bpt_loop(car)
    phases = [(10_000, 1), (-8_000, -1), (6_000, 1)]
    meter: list[tuple[int, int]] = []
    for target, sign in phases:
        controller.set_command(PowerCommand(max_w=50_000, min_w=-20_000, target_w=target))
        for _ in range(12):
            res = bpt_dynamic_loop(car)
        assert res.ResponseCode == "OK" and res.BPT_Dynamic_DC_CLResControlMode is not None
        present = from_rational(res.EVSEPresentCurrent)
        assert present * sign > 5, (target, present)  # the sign at the car: import +, export -
        assert hw.target_i * sign > 0 and abs(hw.target_i * hw.voltage - target) < 0.05 * abs(target)
        meter.append((res.MeterInfo.ChargedEnergyReadingWh, res.MeterInfo.BPT_DischargedEnergyReadingWh))
    assert meter[1][1] > meter[0][1] == 0  # export counted only while discharging
    assert meter[2][0] > meter[1][0] and hw.energy_exported_wh() > 0
    limits = res.BPT_Dynamic_DC_CLResControlMode
    assert from_rational(limits.EVSEMaximumDischargePower) == 20_000  # the command's export bound, positive


def test_export_is_refused_without_bpt_and_noted() -> None:
    """Plain DC dynamic on a bidirectional board: a discharge command is clamped to 0 and noted."""
    hw = bidirectional_charger(isolation_s=0.5, voltage_tau=0.1)
    controller = ChargingController()
    s = session(hw, controller=controller)
    car = Car(s)
    select(car, SERVICE_DC, DYNAMIC)
    mode = dc.DC_CPDReqEnergyTransferModeType(
        EVMaximumChargePower=rational(100_000), EVMinimumChargePower=rational(0), EVMaximumChargeCurrent=rational(200),
        EVMinimumChargeCurrent=rational(0), EVMaximumVoltage=rational(450), EVMinimumVoltage=rational(200))
    assert car.send(dc.DC_ChargeParameterDiscoveryReqType(DC_CPDReqEnergyTransferMode=mode)).ResponseCode == "OK"
    dynamic_schedule(car)
    car.cable_check_and_pre_charge()
    assert dynamic_start(car).ResponseCode == "OK"
    controller.set_command(PowerCommand(max_w=50_000, min_w=-20_000, target_w=-8_000))
    loop = dc.Dynamic_DC_CLReqControlModeType(
        EVTargetEnergyRequest=rational(30_000), EVMaximumEnergyRequest=rational(40_000),
        EVMinimumEnergyRequest=rational(0), EVMaximumChargePower=rational(100_000), EVMinimumChargePower=rational(0),
        EVMaximumChargeCurrent=rational(200), EVMaximumVoltage=rational(450), EVMinimumVoltage=rational(200))
    for _ in range(8):
        res = car.send(dc.DC_ChargeLoopReqType(EVPresentVoltage=rational(380), MeterInfoRequested=False,
                                               Dynamic_DC_CLReqControlMode=loop), dt=0.25)
    assert res.ResponseCode == "OK" and hw.target_i == 0 and hw.energy_exported_wh() == 0
    assert any("without bidirectional power transfer" in n for n in s.notes)


def test_a_negative_target_current_without_bpt_is_clamped() -> None:
    hw = bidirectional_charger(isolation_s=0.5, voltage_tau=0.1)
    car = Car(session(hw))
    car.to_charge_loop()
    res = car.loop(current=-50)
    assert res.ResponseCode == "OK" and hw.target_i == 0 and from_rational(res.EVSEPresentCurrent) >= 0


def test_negative_discharge_limits_are_read_as_magnitudes_and_sent_as_the_quirk_says() -> None:
    hw = bidirectional_charger(isolation_s=0.5, voltage_tau=0.1)
    plain = session(hw)
    car = Car(plain)
    select(car, SERVICE_DC_BPT, DYNAMIC)
    res = dc_bpt_parameters(car, discharge_power=-20_000, discharge_current=-50)  # a car of the other convention
    assert res.ResponseCode == "OK" and plain.ev_limits is not None
    assert (plain.ev_limits.max_discharge_power, plain.ev_limits.max_discharge_current) == (20_000, 50)
    assert any("unexpected sign" in n for n in plain.notes)
    assert from_rational(res.BPT_DC_CPDResEnergyTransferMode.EVSEMaximumDischargePower) > 0  # we send ours

    quirky = session(bidirectional_charger(isolation_s=0.5), signs=SignConvention(negative_discharge_limits=True))
    car = Car(quirky)
    select(car, SERVICE_DC_BPT, DYNAMIC)
    res = dc_bpt_parameters(car, discharge_power=-20_000, discharge_current=-50)
    assert from_rational(res.BPT_DC_CPDResEnergyTransferMode.EVSEMaximumDischargePower) < 0
    assert not any("unexpected sign" in n for n in quirky.notes)


def test_bpt_is_not_offered_by_a_charge_only_board() -> None:
    car = Car(session(SimulatedCharger()))
    car.setup(), car.eim()
    offered = [s.ServiceID for s in car.send(cm.ServiceDiscoveryReqType()).EnergyTransferServiceList.Service]
    assert offered == [SERVICE_DC]
    res = car.send(cm.ServiceDetailReqType(ServiceID=SERVICE_DC_BPT))
    assert res.ResponseCode == "FAILED_ServiceIDInvalid" and car.ended


@pytest.mark.parametrize("service_id", [3, 4, 7, SERVICE_AC])  # WPT, DC_ACDP, DC_ACDP_BPT, AC in a DC session
def test_services_not_offered_get_service_id_invalid(service_id: int) -> None:
    car = Car(session(bidirectional_charger()))
    car.setup(), car.eim(), car.send(cm.ServiceDiscoveryReqType())
    res = car.send(cm.ServiceDetailReqType(ServiceID=service_id))
    assert res.ResponseCode == "FAILED_ServiceIDInvalid" and res.ServiceID == service_id and car.ended


# ---------------------------------------------------------------------------------------------- AC


@pytest.mark.parametrize(("bpt", "dynamic"), [(False, False), (False, True), (True, False), (True, True)])
def test_ac_session_from_setup_to_stop(bpt: bool, dynamic: bool) -> None:
    hw = bidirectional_charger()
    controller = ChargingController()
    s = session(hw, "iso20-ac", controller=controller)
    car = Car(s)
    params = select(car, SERVICE_AC_BPT if bpt else SERVICE_AC, DYNAMIC if dynamic else SCHEDULED)
    assert params["Connector"] == 2 and params["EVSENominalVoltage"] == 230  # three phases
    if bpt:
        assert params["GridCodeIslandingDetectionMethod"] == 1
    res = ac_parameters(car, bpt)
    assert res.ResponseCode == "OK"
    evse = res.BPT_AC_CPDResEnergyTransferMode if bpt else res.AC_CPDResEnergyTransferMode
    assert from_rational(evse.EVSEMaximumChargePower) == hw.ac.max_power
    if dynamic:
        assert dynamic_schedule(car).ResponseCode == "OK"
        assert dynamic_start(car).ResponseCode == "OK"  # AC: no cable check or pre-charge
    else:
        sched = car.schedule().Scheduled_SEResControlMode.ScheduleTuple[0].ChargingSchedule.PowerSchedule
        assert from_rational(sched.PowerScheduleEntries.PowerScheduleEntry[0].Power) == 11_000  # the car's max
        assert car.start(power=11_000).ResponseCode == "OK"
    assert s.sequence_timeout() == 60
    res = ac_loop(car, bpt, dynamic)
    assert s.sequence_timeout() == 0.5  # after an AC ChargeLoopRes too
    mode = getattr(res, ("BPT_" if bpt else "") + ("Dynamic" if dynamic else "Scheduled") + "_AC_CLResControlMode")
    assert from_rational(mode.EVSETargetActivePower) == 11_000 and hw.ac_limit == pytest.approx(11_000 / 690)
    if bpt and dynamic:  # the controller commands export: the target turns negative, the meter counts export
        controller.set_command(PowerCommand(max_w=11_000, min_w=-7_000, target_w=-5_000))
        for _ in range(8):
            res = ac_loop(car, bpt, dynamic)
        assert from_rational(res.BPT_Dynamic_AC_CLResControlMode.EVSETargetActivePower) == -5_000
        assert hw.ac_limit < 0 and hw.energy_exported_wh() > 0
    assert car.progress("Stop").ResponseCode == "OK" and not hw.closed
    assert car.send(cm.SessionStopReqType(ChargingSession="Terminate")).ResponseCode == "OK" and car.ended


def test_ac_session_refuses_dc_requests_and_dc_services() -> None:
    hw = bidirectional_charger()
    car = Car(session(hw, "iso20-ac"))
    car.setup(), car.eim()
    offered = [s.ServiceID for s in car.send(cm.ServiceDiscoveryReqType()).EnergyTransferServiceList.Service]
    assert offered == [SERVICE_AC_BPT, SERVICE_AC]
    chosen = cm.SelectedServiceType(ServiceID=SERVICE_AC, ParameterSetID=SCHEDULED)
    car.send(cm.ServiceSelectionReqType(SelectedEnergyTransferService=chosen))
    ac_parameters(car, bpt=False)
    car.schedule()
    res = car.send(dc.DC_CableCheckReqType())  # a DC request in an AC session: out of sequence
    assert res.ResponseCode == "FAILED_SequenceError" and car.ended and not hw.closed


def test_ac_plain_service_with_bpt_parameters_is_wrong_charge_parameter() -> None:
    car = Car(session(bidirectional_charger(), "iso20-ac"))
    select(car, SERVICE_AC, SCHEDULED)
    res = ac_parameters(car, bpt=True)
    assert res.ResponseCode == "FAILED_WrongChargeParameter" and car.ended


# ---------------------------------------------------------------------------------------------- charger-initiated


def test_controller_stop_reaches_the_car_as_terminate_and_no_power_follows() -> None:
    hw = SimulatedCharger(isolation_s=0.5, voltage_tau=0.1)
    controller = ChargingController()
    car = Car(session(hw, controller=controller))
    car.to_charge_loop()
    assert car.loop().EVSEStatus is None
    controller.request_stop("the CSMS ended the transaction")
    res = car.loop()
    assert res.EVSEStatus.EVSENotification == "Terminate" and hw.target_i == 0
    assert car.progress("Stop").ResponseCode == "OK" and not hw.closed


def test_scheduled_mode_renegotiates_when_the_controller_allows_more() -> None:
    hw = SimulatedCharger(isolation_s=0.5, voltage_tau=0.1)
    controller = ChargingController(limit=PowerCommand(max_w=20_000))
    s = session(hw, controller=controller)
    car = Car(s)
    car.setup(), car.eim(), car.services(), car.parameters(), car.schedule()
    car.cable_check_and_pre_charge()
    assert car.start(power=20_000).ResponseCode == "OK"
    assert car.loop().EVSEStatus is None and s.schedule_power == 20_000
    controller.set_command(PowerCommand(max_w=60_000))
    res = car.loop(current=200)
    assert res.EVSEStatus.EVSENotification == "ScheduleRenegotiation"
    assert car.loop().EVSEStatus is None  # told once
    assert car.progress("ScheduleRenegotiation").ResponseCode == "OK"
    sched = car.schedule().Scheduled_SEResControlMode.ScheduleTuple[0].ChargingSchedule.PowerSchedule
    assert from_rational(sched.PowerScheduleEntries.PowerScheduleEntry[0].Power) == 60_000
    assert car.start(power=60_000).ResponseCode == "OK"


def test_a_lower_limit_is_enforced_at_once_without_a_renegotiation() -> None:
    hw = SimulatedCharger(isolation_s=0.5, voltage_tau=0.1)
    controller = ChargingController()
    s = session(hw, controller=controller)
    car = Car(s)
    car.to_charge_loop()
    assert car.loop().EVSEStatus is None and s.schedule_power == 100_000
    controller.set_command(PowerCommand(max_w=20_000))
    res = car.loop(current=200)
    assert res.EVSEStatus is None  # no renegotiation: not every car supports one
    assert from_rational(res.Scheduled_DC_CLResControlMode.EVSEMaximumChargePower) == 20_000
    assert hw.target_i * max(hw.target_v, 1.0) <= 20_000 * 1.01 and res.EVSEPowerLimitAchieved


def test_a_discharge_command_renegotiates_a_scheduled_bpt_car() -> None:
    hw = bidirectional_charger(isolation_s=0.5, voltage_tau=0.1)
    controller = ChargingController(limit=PowerCommand(max_w=50_000, min_w=-20_000))
    car = Car(session(hw, controller=controller))
    select(car, SERVICE_DC_BPT, SCHEDULED)
    dc_bpt_parameters(car)
    car.schedule()
    car.cable_check_and_pre_charge()
    car.start(power=50_000)
    controller.set_command(PowerCommand(max_w=50_000, min_w=-20_000, target_w=-10_000))
    mode = dc.BPT_Scheduled_DC_CLReqControlModeType(
        EVTargetCurrent=rational(50), EVTargetVoltage=rational(380), EVMaximumChargePower=rational(100_000),
        EVMaximumChargeCurrent=rational(200), EVMaximumVoltage=rational(450),
        EVMaximumDischargePower=rational(20_000), EVMaximumDischargeCurrent=rational(50))
    res = car.send(dc.DC_ChargeLoopReqType(EVPresentVoltage=rational(380), MeterInfoRequested=False,
                                           BPT_Scheduled_DC_CLReqControlMode=mode), dt=0.25)
    assert res.EVSEStatus.EVSENotification == "ScheduleRenegotiation"


# ---------------------------------------------------------------------------------------------- the shell


@pytest.mark.parametrize("service", ["ac_bpt", "dc_bpt"])
async def test_a_car_silent_after_a_charge_loop_response_is_cut_off_after_half_a_second(
        service: str, autojump_clock: Any) -> None:
    """[V2G20-1500]/[V2G20-1502]: after an AC or DC ChargeLoopRes the next request is due within 0.5 s;
    the server closes the connection then and the power goes off (60 s anywhere else)."""
    import trio
    import trio.testing

    from edge.v2g.charger import ChargerConnection, EvseConfig
    from edge.v2g.server import serve_connection

    hw = bidirectional_charger(isolation_s=0.5, voltage_tau=0.1)
    conn = ChargerConnection(hw, config=EvseConfig())
    s = session(conn.power, "iso20-ac" if service == "ac_bpt" else "iso20-dc")
    conn.session = s
    car = Car(s)
    if service == "ac_bpt":
        select(car, SERVICE_AC_BPT, DYNAMIC)
        ac_parameters(car, bpt=True)
        dynamic_schedule(car)
        dynamic_start(car)
        ac_loop(car, bpt=True, dynamic=True)
    else:
        to_dc_bpt_loop(car)
        bpt_dynamic_loop(car)
    assert hw.closed and conn.idle_timeout == 0.5
    _, server_side = trio.testing.memory_stream_pair()
    start = trio.current_time()
    with trio.fail_after(5):
        why = await serve_connection(server_side, conn, idle_timeout=60.0)
    assert "sequence timeout" in why and trio.current_time() - start == pytest.approx(0.5)
    assert not hw.closed and hw.target_i == 0 and hw.ac_limit == 0


def test_dc_bpt_scheduled_discharge_follows_a_negative_schedule_and_out_of_range_targets_are_clamped() -> None:
    """Scheduled mode with a discharging schedule entry: the car's negative power profile is accepted,
    its negative target current flows (within the discharge limits), a target beyond them is clamped."""
    hw = bidirectional_charger(isolation_s=0.5, voltage_tau=0.1)
    controller = ChargingController(limit=PowerCommand(max_w=50_000, min_w=-15_000, target_w=-10_000))
    s = session(hw, controller=controller)
    car = Car(s)
    select(car, SERVICE_DC_BPT, SCHEDULED)
    dc_bpt_parameters(car, discharge_power=20_000, discharge_current=50)
    sched = car.schedule().Scheduled_SEResControlMode.ScheduleTuple[0].ChargingSchedule.PowerSchedule
    assert from_rational(sched.PowerScheduleEntries.PowerScheduleEntry[0].Power) == -10_000
    car.cable_check_and_pre_charge()
    assert car.start(power=-10_000).ResponseCode == "OK"  # a discharging profile inside the schedule

    def loop(current: float) -> dc.DC_ChargeLoopResType:
        mode = dc.BPT_Scheduled_DC_CLReqControlModeType(
            EVTargetCurrent=rational(current), EVTargetVoltage=rational(380), EVMaximumChargePower=rational(100_000),
            EVMaximumChargeCurrent=rational(200), EVMaximumVoltage=rational(450),
            EVMaximumDischargePower=rational(20_000), EVMaximumDischargeCurrent=rational(50))
        return car.send(dc.DC_ChargeLoopReqType(EVPresentVoltage=rational(380), MeterInfoRequested=False,
                                                BPT_Scheduled_DC_CLReqControlMode=mode), dt=0.25)

    for _ in range(8):
        res = loop(-20)
    assert res.ResponseCode == "OK" and hw.target_i == pytest.approx(-20) and from_rational(res.EVSEPresentCurrent) < 0
    res = loop(-1000)  # far beyond every discharge limit: the schedule's 10 kW at 380 V bounds it
    assert hw.target_i == pytest.approx(-10_000 / 380, rel=0.02) and res.EVSECurrentLimitAchieved
    res = loop(150)  # charging against a discharging schedule: no import allowed
    assert hw.target_i == 0 and res.EVSEPowerLimitAchieved
    assert hw.energy_exported_wh() > 0 and not any("unexpected sign" in n for n in s.notes)


def test_a_iso20_car_that_ignores_terminate_is_cut_off_after_notification_max_delay() -> None:
    import dataclasses

    from edge.v2g.timers import ISO20

    hw = SimulatedCharger(isolation_s=0.5, voltage_tau=0.1)
    controller = ChargingController()
    s = session(hw, controller=controller, timers=dataclasses.replace(ISO20, notification_max_delay=1.0))
    car = Car(s)
    car.to_charge_loop()
    controller.request_stop("fault on the site")
    res = car.loop()
    assert res.EVSEStatus.EVSENotification == "Terminate" and res.EVSEStatus.NotificationMaxDelay == 1
    for _ in range(2):  # 0.6 s more: within the delay
        assert car.loop(dt=0.3).ResponseCode == "OK" and hw.target_i == 0
    assert car.loop(dt=0.5).ResponseCode == "FAILED" and car.ended and not hw.closed  # 1.1 s after


def to_ac_loop(car: Car, bpt: bool, dynamic: bool) -> None:
    select(car, SERVICE_AC_BPT if bpt else SERVICE_AC, DYNAMIC if dynamic else SCHEDULED)
    ac_parameters(car, bpt)
    if dynamic:
        dynamic_schedule(car)
        dynamic_start(car)
    else:
        car.schedule()
        car.start(power=11_000)


@pytest.mark.parametrize(("case", "code"), [
    ("a scheduled loop request in a dynamic session", "FAILED"),
    ("a plain loop request in a BPT session", "FAILED"),
    ("another session's SessionID", "FAILED_UnknownSession"),
    ("a DC loop request in an AC session", "FAILED_SequenceError"),
])
def test_bad_ac_loop_requests_end_the_session_with_the_power_off(case: str, code: str) -> None:
    hw = bidirectional_charger()
    car = Car(session(hw, "iso20-ac"))
    to_ac_loop(car, bpt=True, dynamic=True)
    ac_loop(car, bpt=True, dynamic=True)
    if case.startswith("a scheduled"):
        res = ac_loop(car, bpt=True, dynamic=False)
    elif case.startswith("a plain"):
        res = ac_loop(car, bpt=False, dynamic=True)
    elif case.startswith("another"):
        mode = ac.BPT_Dynamic_AC_CLReqControlModeType(
            EVTargetEnergyRequest=rational(1), EVMaximumEnergyRequest=rational(1), EVMinimumEnergyRequest=rational(0),
            EVMaximumChargePower=rational(11_000), EVMinimumChargePower=rational(0),
            EVPresentActivePower=rational(0), EVPresentReactivePower=rational(0),
            EVMaximumDischargePower=rational(0), EVMinimumDischargePower=rational(0), DepartureTime=1)
        res = car.send(ac.AC_ChargeLoopReqType(MeterInfoRequested=False, BPT_Dynamic_AC_CLReqControlMode=mode),
                       sid=b"\x42" * 8)
    else:
        res = car.send(dc.DC_CableCheckReqType())
    assert res.ResponseCode == code and car.ended and not hw.closed and hw.ac_limit == 0


def test_ac_charge_parameters_out_of_range_are_refused() -> None:
    car = Car(session(bidirectional_charger(), "iso20-ac"))
    select(car, SERVICE_AC, SCHEDULED)
    res = ac_parameters(car, bpt=False, max_power=-5_000)
    assert res.ResponseCode == "FAILED_WrongChargeParameter" and car.ended


def test_dynamic_schedule_exchange_in_a_scheduled_session_is_refused() -> None:
    car = Car(session(bidirectional_charger(), "iso20-ac"))
    select(car, SERVICE_AC, SCHEDULED)
    ac_parameters(car, bpt=False)
    assert dynamic_schedule(car).ResponseCode == "FAILED" and car.ended


def test_the_chargers_wishes_reach_a_dynamic_car() -> None:
    from edge.controller import ChargingWishes

    hw = bidirectional_charger(isolation_s=0.5, voltage_tau=0.1)
    controller = ChargingController(wishes=ChargingWishes(departure_time=5400, minimum_soc=30, target_soc=80))
    car = Car(session(hw, controller=controller))
    select(car, SERVICE_DC_BPT, DYNAMIC)
    dc_bpt_parameters(car)
    schedule = dynamic_schedule(car).Dynamic_SEResControlMode
    assert (schedule.DepartureTime, schedule.MinimumSOC, schedule.TargetSOC) == (5400, 30, 80)
    car.cable_check_and_pre_charge()
    dynamic_start(car)
    loop = bpt_dynamic_loop(car).BPT_Dynamic_DC_CLResControlMode
    assert (loop.DepartureTime, loop.MinimumSOC, loop.TargetSOC) == (5400, 30, 80)
    with pytest.raises(ValueError, match="percentage"):
        ChargingWishes(minimum_soc=120)


def test_a_charging_schedule_allows_no_export_even_with_bpt() -> None:
    """Scheduled DC_BPT with a charging schedule (the controller would allow export, but set no target): a
    negative target current from the car gets 0 A."""
    hw = bidirectional_charger(isolation_s=0.5, voltage_tau=0.1)
    car = Car(session(hw, controller=ChargingController(limit=PowerCommand(max_w=50_000, min_w=-20_000))))
    select(car, SERVICE_DC_BPT, SCHEDULED)
    dc_bpt_parameters(car)
    car.schedule()
    car.cable_check_and_pre_charge()
    assert car.start(power=50_000).ResponseCode == "OK"
    mode = dc.BPT_Scheduled_DC_CLReqControlModeType(
        EVTargetCurrent=rational(-40), EVTargetVoltage=rational(380), EVMaximumChargePower=rational(100_000),
        EVMaximumChargeCurrent=rational(200), EVMaximumVoltage=rational(450),
        EVMaximumDischargePower=rational(20_000), EVMaximumDischargeCurrent=rational(50))
    res = car.send(dc.DC_ChargeLoopReqType(EVPresentVoltage=rational(380), MeterInfoRequested=False,
                                           BPT_Scheduled_DC_CLReqControlMode=mode), dt=0.25)
    assert res.ResponseCode == "OK" and hw.target_i == 0


def test_a_car_declared_by_its_evccid_gets_its_sign_convention() -> None:
    from edge.v2g.power import SignQuirks

    quirks = SignQuirks((("WMIV", SignConvention(negative_discharge_limits=True)),))
    declared = session(bidirectional_charger(isolation_s=0.5), sign_quirks=quirks)
    car = Car(declared)  # EVCCID WMIV1234567890ABCDEX
    select(car, SERVICE_DC_BPT, DYNAMIC)
    res = dc_bpt_parameters(car, discharge_power=-20_000, discharge_current=-50)
    assert from_rational(res.BPT_DC_CPDResEnergyTransferMode.EVSEMaximumDischargePower) < 0
    assert any("sign quirk for EVCCID WMIV" in n for n in declared.notes)
    assert not any("unexpected sign" in n for n in declared.notes)
    other = session(bidirectional_charger(isolation_s=0.5), sign_quirks=quirks)
    car = Car(other, evccid="OTHER00000000000001")
    select(car, SERVICE_DC_BPT, DYNAMIC)
    res = dc_bpt_parameters(car)
    assert from_rational(res.BPT_DC_CPDResEnergyTransferMode.EVSEMaximumDischargePower) > 0
    assert not any("sign quirk" in n for n in other.notes)
