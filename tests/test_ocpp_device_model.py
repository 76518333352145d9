"""The OCPP 2.0.1 device model, sans-IO: GetVariables/SetVariables answers (every status), value checks against the
characteristics, persistence through the callback and back, base reports and GetReport, NotifyReport pages. Every
payload the module makes is checked against the ocpp package's 2.0.1 and 2.1 JSON schemas."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from ocpp.messages import get_validator
from ocpp.v201 import enums

from edge.ocpp.device_model import (
    Attribute,
    Change,
    Component,
    DeviceModel,
    InvalidValue,
    Variable,
    report_pages,
)

VERSIONS = ("2.0.1", "2.1")
NOW = "2026-12-04T10:00:00Z"


def station(**kw: Any) -> DeviceModel:
    kw.setdefault("model", "edge-dc")
    kw.setdefault("vendor", "edge")
    kw.setdefault("secc_id", "DE*EDG*E1")
    return DeviceModel.standard(2, **kw)


def response_ok(action: str, payload: dict) -> dict:
    for version in VERSIONS:
        get_validator(3, action, version).validate(payload)
    return payload


def request_ok(action: str, payload: dict) -> dict:
    for version in VERSIONS:
        get_validator(2, action, version).validate(payload)
    return payload


def get(model: DeviceModel, *entries: dict) -> list[dict]:
    request = request_ok("GetVariables", {"getVariableData": list(entries)})
    return response_ok("GetVariables", model.get_variables(request))["getVariableResult"]


def put(model: DeviceModel, *entries: dict) -> list[dict]:
    request = request_ok("SetVariables", {"setVariableData": list(entries)})
    return response_ok("SetVariables", model.set_variables(request))["setVariableResult"]


def cv(component: str, variable: str, *, instance: str | None = None, evse: int | None = None,
       connector: int | None = None, attribute: str | None = None, value: str | None = None) -> dict:
    comp: dict[str, Any] = {"name": component}
    if evse is not None:
        comp["evse"] = {"id": evse} if connector is None else {"id": evse, "connectorId": connector}
    var: dict[str, Any] = {"name": variable} if instance is None else {"name": variable, "instance": instance}
    out: dict[str, Any] = {"component": comp, "variable": var}
    if attribute is not None:
        out["attributeType"] = attribute
    if value is not None:
        out["attributeValue"] = value
    return out


# -- GetVariables ---------------------------------------------------------------------------------------------------


def test_get_variables_answers_every_status_in_order() -> None:
    m = station()
    results = get(m,
                  cv("OCPPCommCtrlr", "HeartbeatInterval"),
                  cv("NoSuchCtrlr", "HeartbeatInterval"),
                  cv("OCPPCommCtrlr", "NoSuchVariable"),
                  cv("OCPPCommCtrlr", "HeartbeatInterval", attribute="MaxSet"),
                  cv("SecurityCtrlr", "BasicAuthPassword"),
                  cv("EVSE", "Power", evse=1, attribute="MaxSet"),
                  cv("EVSE", "AvailabilityState", evse=3),
                  cv("Connector", "ConnectorType", evse=2, connector=1),
                  cv("Connector", "ConnectorType", evse=2))  # the EVSE, not its connector: no such component
    assert [r["attributeStatus"] for r in results] == [
        "Accepted", "UnknownComponent", "UnknownVariable", "NotSupportedAttributeType", "Rejected", "Accepted",
        "UnknownComponent", "Accepted", "UnknownComponent"]
    assert results[0]["attributeValue"] == "300" and results[0]["attributeType"] == "Actual"
    assert results[4]["attributeStatusInfo"] == {"reasonCode": "WriteOnly"} and "attributeValue" not in results[4]
    assert results[5]["attributeValue"] == "22000" and results[5]["attributeType"] == "MaxSet"
    assert results[7]["attributeValue"] == "cCCS2"
    assert all("attributeValue" not in r for r in results if r["attributeStatus"] != "Accepted")
    assert results[7]["component"] == {"name": "Connector", "evse": {"id": 2, "connectorId": 1}}


def test_names_match_case_insensitively_and_the_answer_echoes_the_request() -> None:
    [result] = get(station(), cv("ocppcommctrlr", "heartbeatinterval"))
    assert result["attributeStatus"] == "Accepted" and result["attributeValue"] == "300"
    assert result["component"] == {"name": "ocppcommctrlr"} and result["variable"] == {"name": "heartbeatinterval"}


def test_instances_must_match() -> None:
    m = station()
    with_instance, without, wrong = get(m, cv("OCPPCommCtrlr", "MessageAttempts", instance="TransactionEvent"),
                                        cv("OCPPCommCtrlr", "MessageAttempts"),  # B06.FR.15
                                        cv("OCPPCommCtrlr", "MessageAttempts", instance="Other"))
    assert with_instance["attributeStatus"] == "Accepted" and with_instance["attributeValue"] == "3"
    assert without["attributeStatus"] == wrong["attributeStatus"] == "UnknownVariable"


def test_an_unset_value_reads_as_empty() -> None:
    [country] = get(station(), cv("ISO15118Ctrlr", "CountryName"))  # B06.FR.13
    assert country["attributeStatus"] == "Accepted" and country["attributeValue"] == ""


def test_a_write_only_value_is_never_read_out_even_once_set() -> None:
    m = station()
    assert put(m, cv("SecurityCtrlr", "BasicAuthPassword", value="0123456789abcdef"))[0]["attributeStatus"] \
        == "Accepted"
    [result] = get(m, cv("SecurityCtrlr", "BasicAuthPassword"))
    assert result["attributeStatus"] == "Rejected" and "attributeValue" not in result
    assert m.basic_auth_password == "0123456789abcdef"  # code reads it
    for base in ("FullInventory", "ConfigurationInventory"):
        [item] = [i for i in m.base_report(base) if i["variable"]["name"] == "BasicAuthPassword"]
        assert item["variableAttribute"] == [{"type": "Actual", "mutability": "WriteOnly", "persistent": True,
                                              "constant": False}]


def test_reporting_value_size_truncates() -> None:
    m = station(overrides={"DeviceDataCtrlr/ReportingValueSize": "4"})
    [secc] = get(m, cv("ISO15118Ctrlr", "SeccId"))
    assert secc["attributeValue"] == "DE*E" and m.secc_id == "DE*EDG*E1"


def test_a_provided_value_is_computed_on_every_read() -> None:
    m = station()
    now = iter(["2026-12-04T10:00:00Z", "2026-12-04T10:00:05Z"])
    m.provide("ClockCtrlr/DateTime", lambda: next(now))
    assert get(m, cv("ClockCtrlr", "DateTime"))[0]["attributeValue"] == "2026-12-04T10:00:00Z"
    assert get(m, cv("ClockCtrlr", "DateTime"))[0]["attributeValue"] == "2026-12-04T10:00:05Z"
    with pytest.raises(ValueError, match="not ReadOnly"):
        m.provide("OCPPCommCtrlr/HeartbeatInterval", lambda: "1")


# -- SetVariables ---------------------------------------------------------------------------------------------------


def test_set_variables_statuses_and_reasons() -> None:
    m = station()
    results = put(m,
                  cv("OCPPCommCtrlr", "HeartbeatInterval", value="120"),
                  cv("NoSuchCtrlr", "HeartbeatInterval", value="120"),
                  cv("OCPPCommCtrlr", "NoSuchVariable", value="1"),
                  cv("OCPPCommCtrlr", "HeartbeatInterval", attribute="Target", value="120"),
                  cv("SecurityCtrlr", "SecurityProfile", value="3"),
                  cv("ChargingStation", "AvailabilityState", value="Unavailable"),
                  cv("OCPPCommCtrlr", "NetworkConfigurationPriority", value="1"))
    assert [r["attributeStatus"] for r in results] == [
        "Accepted", "UnknownComponent", "UnknownVariable", "NotSupportedAttributeType", "Rejected", "Rejected",
        "RebootRequired"]
    assert results[4]["attributeStatusInfo"]["reasonCode"] == "ReadOnly"
    assert results[5]["attributeStatusInfo"]["reasonCode"] == "ReadOnly"
    assert all(r["attributeType"] == "Actual" for r in results if r is not results[3])  # B05.FR.12
    assert m.heartbeat_interval == 120 and m.security_profile == 1
    assert m.value("ChargingStation", "AvailabilityState") == "Available"


@pytest.mark.parametrize("value", ["abc", "1.5", " 5", "5 ", "+5", "1_0", "1e3", "", "٣"])
def test_integers_must_be_plain_digits(value: str) -> None:
    m = station()
    [result] = put(m, cv("OCPPCommCtrlr", "HeartbeatInterval", value=value))
    assert result["attributeStatus"] == "Rejected" and result["attributeStatusInfo"]["reasonCode"] == "InvalidValue"
    assert m.heartbeat_interval == 300


@pytest.mark.parametrize(("component", "variable", "value", "reason"), [
    ("OCPPCommCtrlr", "HeartbeatInterval", "0", "ValueTooLow"),
    ("OCPPCommCtrlr", "HeartbeatInterval", "-5", "ValueTooLow"),
    ("SmartChargingCtrlr", "LimitChangeSignificance", "100.5", "ValueTooHigh"),
    ("SmartChargingCtrlr", "LimitChangeSignificance", "-0.1", "ValueTooLow"),
    ("SmartChargingCtrlr", "V2XOfflineChargeOnlyAfter", "86401", "ValueTooHigh"),
    ("SecurityCtrlr", "BasicAuthPassword", "short", "InvalidValue"),
    ("SecurityCtrlr", "BasicAuthPassword", "x" * 41, "TooLargeElement"),
    ("ISO15118Ctrlr", "CountryName", "de", "InvalidValue"),
    ("ISO15118Ctrlr", "CountryName", "DEU", "TooLargeElement"),
    ("AuthCtrlr", "LocalPreAuthorize", "yes", "InvalidValue"),
    ("AuthCtrlr", "LocalPreAuthorize", "1", "InvalidValue"),
])
def test_values_outside_the_characteristics_are_rejected(component: str, variable: str, value: str,
                                                         reason: str) -> None:
    m = station()
    before = m.value(component, variable)
    [result] = put(m, cv(component, variable, value=value))
    assert result["attributeStatus"] == "Rejected" and result["attributeStatusInfo"]["reasonCode"] == reason
    assert m.value(component, variable) == before


@pytest.mark.parametrize(("component", "variable", "value", "stored"), [
    ("OCPPCommCtrlr", "HeartbeatInterval", "1", "1"),
    ("SmartChargingCtrlr", "LimitChangeSignificance", "100", "100"),
    ("SmartChargingCtrlr", "LimitChangeSignificance", "2.5", "2.5"),
    ("AuthCtrlr", "LocalPreAuthorize", "TRUE", "true"),
    ("ISO15118Ctrlr", "CountryName", "NL", "NL"),
    ("SampledDataCtrlr", "TxUpdatedMeasurands", "SoC, Voltage", "SoC,Voltage"),
    ("SampledDataCtrlr", "TxUpdatedMeasurands", "", ""),
    ("TxCtrlr", "TxStartPoint", "EVConnected,Authorized", "EVConnected,Authorized"),
])
def test_values_inside_the_characteristics_are_accepted_in_canonical_form(component: str, variable: str,
                                                                          value: str, stored: str) -> None:
    m = station()
    [result] = put(m, cv(component, variable, value=value))
    assert result["attributeStatus"] == "Accepted" and "attributeStatusInfo" not in result
    assert m.value(component, variable) == stored


@pytest.mark.parametrize(("component", "variable", "value"), [
    ("SampledDataCtrlr", "TxUpdatedMeasurands", "SoC,Bogus"),
    ("SampledDataCtrlr", "TxUpdatedMeasurands", "SoC,SoC"),
    ("SampledDataCtrlr", "TxUpdatedMeasurands", "soc"),  # members are case-sensitive enum values
    ("TxCtrlr", "TxStartPoint", ""),  # must not be empty
    ("TxCtrlr", "TxStopPoint", "ParkingBayOccupancy"),  # no parking bay sensor here
    ("OCPPCommCtrlr", "NetworkConfigurationPriority", "3"),
    ("OCPPCommCtrlr", "NetworkConfigurationPriority", "1,1"),
    ("ClockCtrlr", "TimeSource", "Sundial"),
])
def test_list_members_must_come_from_the_values_list(component: str, variable: str, value: str) -> None:
    m = station()
    [result] = put(m, cv(component, variable, value=value))
    assert result["attributeStatus"] == "Rejected" and result["attributeStatusInfo"]["reasonCode"] == "InvalidValue"


def test_a_sequence_list_keeps_its_order_and_answers_reboot_required() -> None:
    m = station(network_slots=(1, 2))
    [result] = put(m, cv("OCPPCommCtrlr", "NetworkConfigurationPriority", value="2,1"))
    assert result["attributeStatus"] == "RebootRequired"
    assert m.network_configuration_priority == [2, 1]


def test_option_list_membership() -> None:
    comp = Component("AuthCacheCtrlr")
    policy = Variable(comp, "Policy", "OptionList", {"Actual": Attribute("Actual", "ReadWrite", "LRU", True)},
                      values_list=("LRU", "LFU", "FIFO", "CUSTOM"))
    m = DeviceModel([policy])
    good, bad, two = put(m, cv("AuthCacheCtrlr", "Policy", value="FIFO"), cv("AuthCacheCtrlr", "Policy", value="MRU"),
                         cv("AuthCacheCtrlr", "Policy", value="LRU,LFU"))
    assert good["attributeStatus"] == "Accepted"
    assert bad["attributeStatus"] == two["attributeStatus"] == "Rejected"
    assert m.value("AuthCacheCtrlr", "Policy") == "FIFO"
    s = station()  # the station's OptionLists are ReadOnly state: the station sets them, and only to listed values
    s.update("EVSE", "AvailabilityState", "Occupied", evse=1)
    assert s.value("EVSE", "AvailabilityState", evse=1) == "Occupied"
    with pytest.raises(InvalidValue):
        s.update("EVSE", "AvailabilityState", "Broken", evse=1)


def test_date_times_need_an_offset() -> None:
    comp = Component("Ctrlr")
    when = Variable(comp, "When", "dateTime", {"Actual": Attribute()})
    m = DeviceModel([when])
    ok, no_zone, bad_month, text = put(m, cv("Ctrlr", "When", value="2026-12-04T10:00:00.5+01:00"),
                                       cv("Ctrlr", "When", value="2026-12-04T10:00:00"),
                                       cv("Ctrlr", "When", value="2026-13-04T10:00:00Z"),
                                       cv("Ctrlr", "When", value="tomorrow"))
    assert ok["attributeStatus"] == "Accepted"
    assert no_zone["attributeStatus"] == bad_month["attributeStatus"] == text["attributeStatus"] == "Rejected"


def test_configuration_value_size_bounds_what_the_csms_sets() -> None:
    m = station(overrides={"DeviceDataCtrlr/ConfigurationValueSize": "8"})
    [result] = put(m, cv("ISO15118Ctrlr", "SeccId", value="DE*EDG*E12"))
    assert result["attributeStatusInfo"]["reasonCode"] == "TooLargeElement"
    assert put(m, cv("ISO15118Ctrlr", "SeccId", value="DE*EDG*2"))[0]["attributeStatus"] == "Accepted"


def test_an_added_check_can_refuse() -> None:
    m = station(network_slots=(1, 2))
    m.add_check("OCPPCommCtrlr/NetworkConfigurationPriority",
                lambda value: None if value.split(",")[0] == "1" else "InvalidNetworkConf")
    refused, taken = put(m, cv("OCPPCommCtrlr", "NetworkConfigurationPriority", value="2"),
                         cv("OCPPCommCtrlr", "NetworkConfigurationPriority", value="1,2"))
    assert refused["attributeStatus"] == "Rejected"
    assert refused["attributeStatusInfo"] == {"reasonCode": "InvalidNetworkConf"}
    assert taken["attributeStatus"] == "RebootRequired" and m.network_configuration_priority == [1, 2]


def test_request_limits() -> None:
    m = station(overrides={"DeviceDataCtrlr/ItemsPerMessage[GetVariables]": "2",
                           "DeviceDataCtrlr/BytesPerMessage[SetVariables]": "200"})
    two = {"getVariableData": [cv("OCPPCommCtrlr", "HeartbeatInterval")] * 2}
    three = {"getVariableData": [cv("OCPPCommCtrlr", "HeartbeatInterval")] * 3}
    assert m.request_limit_error("GetVariables", two) is None
    assert m.request_limit_error("GetVariables", three) == "OccurrenceConstraintViolation"
    small = {"setVariableData": [cv("OCPPCommCtrlr", "HeartbeatInterval", value="60")]}
    assert m.request_limit_error("SetVariables", small) is None
    assert m.request_limit_error("SetVariables", small, frame_bytes=201) == "FormatViolation"
    big = {"setVariableData": [cv("ISO15118Ctrlr", "SeccId", value="x" * 200)]}
    assert m.request_limit_error("SetVariables", big) == "FormatViolation"
    assert m.items_per_message("GetVariables") == 2 and m.items_per_message("SetVariables") == 50


# -- persistence and subscribers ------------------------------------------------------------------------------------


def test_persistence_round_trip() -> None:
    saved: dict[str, str] = {}
    m = station(persist=saved.__setitem__, network_slots=(1, 2))
    put(m, cv("OCPPCommCtrlr", "HeartbeatInterval", value="120"),
        cv("OCPPCommCtrlr", "MessageAttempts", instance="TransactionEvent", value="7"),
        cv("SecurityCtrlr", "BasicAuthPassword", value="0123456789abcdef"),
        cv("SmartChargingCtrlr", "V2XNegativeLimitIsDischarge", value="true"),
        cv("OCPPCommCtrlr", "NetworkConfigurationPriority", value="2,1"),
        cv("OCPPCommCtrlr", "HeartbeatInterval", value="x"))  # refused: not persisted
    m.update("EVSE", "AvailabilityState", "Occupied", evse=2)  # live state: not persisted
    m.update("SecurityCtrlr", "SecurityProfile", "2")  # ReadOnly but persistent: the station changed it
    assert saved == {"OCPPCommCtrlr/HeartbeatInterval": "120",
                     "OCPPCommCtrlr/MessageAttempts[TransactionEvent]": "7",
                     "SecurityCtrlr/BasicAuthPassword": "0123456789abcdef",
                     "SmartChargingCtrlr/V2XNegativeLimitIsDischarge": "true",
                     "OCPPCommCtrlr/NetworkConfigurationPriority": "2,1",
                     "SecurityCtrlr/SecurityProfile": "2"}
    again = station(stored=saved, network_slots=(1, 2))
    assert again.heartbeat_interval == 120 and again.transaction_message_attempts == 7
    assert again.basic_auth_password == "0123456789abcdef" and again.negative_limit_is_discharge
    assert again.network_configuration_priority == [2, 1] and again.security_profile == 2
    assert again.value("EVSE", "AvailabilityState", evse=2) == "Available"
    assert {k: v for k, v in again.persistent_values().items() if k in saved} == saved


def test_corrupt_stored_values_are_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    stored = {"OCPPCommCtrlr/HeartbeatInterval": "soon",  # no longer validates
              "OCPPCommCtrlr/OfflineThreshold": "90",  # fine
              "OCPPCommCtrlr/NetworkConfigurationPriority": "2",  # slot 2 is gone
              "OCPPCommCtrlr/RemovedVariable": "1",
              "SecurityCtrlr/CertificateEntries": "5",  # not persistent
              "ChargingStation/Model": "old-model"}  # constant: the configuration says
    with caplog.at_level(logging.WARNING, logger="edge.ocpp.device_model"):
        m = station(stored=stored)
    assert m.heartbeat_interval == 300 and m.offline_threshold == 90 and m.network_configuration_priority == [1]
    assert m.value("SecurityCtrlr", "CertificateEntries") == "0" and m.value("ChargingStation", "Model") == "edge-dc"
    warned = caplog.text
    for key in ("HeartbeatInterval", "NetworkConfigurationPriority", "RemovedVariable", "CertificateEntries",
                "ChargingStation/Model"):
        assert key in warned
    assert "OfflineThreshold" not in warned


def test_overrides_set_the_station_configuration_and_must_be_valid() -> None:
    m = station(overrides={"SecurityCtrlr/SecurityProfile": "3", "EVSE@2/Power:MaxSet": "11000",
                           "SecurityCtrlr/Identity": "CS-0001"})
    assert m.security_profile == 3 and m.identity == "CS-0001"
    assert m.value("EVSE", "Power", evse=2, attribute="MaxSet", as_type=float) == 11000.0
    assert m.value("EVSE", "Power", evse=1, attribute="MaxSet", as_type=float) == 22000.0
    with pytest.raises(ValueError, match="SecurityProfile"):
        station(overrides={"SecurityCtrlr/SecurityProfile": "4"})
    with pytest.raises(KeyError):
        station(overrides={"SecurityCtrlr/NoSuch": "1"})
    with pytest.raises(ValueError, match="Model"):
        station(model="a-model-name-longer-than-twenty")


def test_subscribers_hear_accepted_changes_only() -> None:
    m = station()
    heard: list[Change] = []
    stop = m.on_change(heard.append)
    put(m, cv("OCPPCommCtrlr", "HeartbeatInterval", value="90"), cv("OCPPCommCtrlr", "HeartbeatInterval", value="0"))
    m.update("SecurityCtrlr", "CertificateEntries", "4")
    assert [(c.key, c.value, c.source) for c in heard] == [("OCPPCommCtrlr/HeartbeatInterval", "90", "csms"),
                                                           ("SecurityCtrlr/CertificateEntries", "4", "station")]
    stop()
    put(m, cv("OCPPCommCtrlr", "HeartbeatInterval", value="91"))
    assert len(heard) == 2


def test_a_failing_store_refuses_the_change(caplog: pytest.LogCaptureFixture) -> None:
    def broken(key: str, value: str) -> None:
        raise OSError("disk full")

    m = station(persist=broken)
    heard: list[Change] = []
    m.on_change(heard.append)
    with caplog.at_level(logging.ERROR, logger="edge.ocpp.device_model"):
        [result] = put(m, cv("OCPPCommCtrlr", "HeartbeatInterval", value="90"))
    assert result["attributeStatus"] == "Rejected" and result["attributeStatusInfo"]["reasonCode"] == "InternalError"
    assert m.heartbeat_interval == 300 and heard == []


def test_a_failing_subscriber_does_not_undo_the_change(caplog: pytest.LogCaptureFixture) -> None:
    m = station()
    heard: list[Change] = []

    def broken(change: Change) -> None:
        raise RuntimeError("bug")

    m.on_change(broken)
    m.on_change(heard.append)
    with caplog.at_level(logging.ERROR, logger="edge.ocpp.device_model"):
        [result] = put(m, cv("OCPPCommCtrlr", "HeartbeatInterval", value="90"))
    assert result["attributeStatus"] == "Accepted" and m.heartbeat_interval == 90 and len(heard) == 1
    assert "subscriber failed" in caplog.text


def test_the_password_is_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    m = station()
    with caplog.at_level(logging.DEBUG, logger="edge.ocpp.device_model"):
        put(m, cv("SecurityCtrlr", "BasicAuthPassword", value="secret-password-123"))
    assert "BasicAuthPassword" in caplog.text and "secret-password-123" not in caplog.text


def test_constants_cannot_be_updated() -> None:
    m = station()
    with pytest.raises(ValueError, match="constant"):
        m.update("ChargingStation", "Model", "other")


# -- typed getters --------------------------------------------------------------------------------------------------


def test_typed_getters() -> None:
    m = station(country="DE", organization="Edge GmbH")
    assert m.value("OCPPCommCtrlr", "HeartbeatInterval", as_type=int) == 300
    assert m.value("ISO15118Ctrlr", "PnCEnabled", as_type=bool) is True
    assert m.value("ISO15118Ctrlr", "CentralContractValidationAllowed", as_type=bool) is False
    assert m.value("TxCtrlr", "TxStopPoint", as_type=list) == ["EVConnected", "Authorized"]
    assert m.value("SecurityCtrlr", "BasicAuthPassword") is None
    assert m.value("ISO15118Ctrlr", "CountryName") == "DE"
    assert m.value("SecurityCtrlr", "OrganizationName") == m.value("ISO15118Ctrlr", "OrganizationName") == "Edge GmbH"
    assert (m.pnc_enabled, m.contract_validation_offline, m.central_contract_validation_allowed) == (True, True, False)
    assert (m.message_timeout, m.transaction_message_attempt_interval, m.websocket_ping_interval) == (30, 60, 30)
    assert m.tx_start_points == ["PowerPathClosed"] and m.tx_ended_measurands == ["Energy.Active.Import.Register"]
    assert m.negative_limit_is_discharge is False and m.offline_charge_only_after == 60
    assert m.limit_change_significance == 5.0 and m.profile_stack_level == 8
    with pytest.raises(KeyError):
        m.value("OCPPCommCtrlr", "NoSuch")
    with pytest.raises(KeyError):
        m.value("OCPPCommCtrlr", "HeartbeatInterval", attribute="MaxSet")


# -- reports --------------------------------------------------------------------------------------------------------


def names(report: list[dict]) -> set[tuple[str, str]]:
    return {(i["component"]["name"], i["variable"]["name"]) for i in report}


def test_configuration_inventory_holds_what_the_csms_can_set() -> None:
    m = station()
    report = m.base_report("ConfigurationInventory")
    assert all(a["mutability"] != "ReadOnly" for item in report for a in item["variableAttribute"])
    got = names(report)
    assert {("OCPPCommCtrlr", "HeartbeatInterval"), ("SecurityCtrlr", "BasicAuthPassword"),
            ("SmartChargingCtrlr", "V2XOfflineChargeOnlyAfter"), ("ISO15118Ctrlr", "PnCEnabled")} <= got
    assert not got & {("ChargingStation", "Model"), ("SecurityCtrlr", "SecurityProfile"), ("EVSE", "Power"),
                      ("DeviceDataCtrlr", "ItemsPerMessage"), ("TxCtrlr", "StopTxOnEVSideDisconnect")}
    writable = {(v.component.name, v.name) for v in m.variables()
                if any(a.mutability != "ReadOnly" for a in v.attributes.values())}
    assert got == writable


def test_full_inventory_holds_everything_with_characteristics() -> None:
    m = station()
    report = m.base_report("FullInventory")
    assert len(report) == len(list(m.variables()))
    [power] = [i for i in report if i["variable"]["name"] == "Power" and i["component"]["evse"] == {"id": 2}]
    assert [a["type"] for a in power["variableAttribute"]] == ["Actual", "MaxSet"]
    assert power["variableCharacteristics"] == {"dataType": "decimal", "supportsMonitoring": False, "unit": "W",
                                                "maxLimit": 22000}
    [model] = [i for i in report if i["variable"]["name"] == "Model"]
    assert model["variableAttribute"] == [{"type": "Actual", "mutability": "ReadOnly", "persistent": True,
                                           "constant": True, "value": "edge-dc"}]
    [measurands] = [i for i in report if i["variable"]["name"] == "TxUpdatedMeasurands"]
    assert "SoC" in measurands["variableCharacteristics"]["valuesList"].split(",")
    [attempts] = [i for i in report if i["variable"]["name"] == "MessageAttempts"]
    assert attempts["variable"] == {"name": "MessageAttempts", "instance": "TransactionEvent"}
    pages = report_pages(report, 25, request_id=7, generated_at=NOW)
    for page in pages:
        request_ok("NotifyReport", page)


def test_summary_inventory_is_availability_and_problems() -> None:
    m = station()
    summary = m.base_report("SummaryInventory")
    assert {(i["component"]["name"], i["variable"]["name"]) for i in summary} == {
        ("ChargingStation", "AvailabilityState"), ("EVSE", "AvailabilityState"), ("Connector", "AvailabilityState")}
    assert len(summary) == 5  # the station, 2 EVSEs, 2 connectors
    m.update("ChargingStation", "Problem", "true")
    m.update("EVSE", "AvailabilityState", "Faulted", evse=2)
    summary = m.base_report("SummaryInventory")
    assert ("ChargingStation", "Problem") in names(summary)
    [faulted] = [i for i in summary if i["component"] == {"name": "EVSE", "evse": {"id": 2}}]
    assert faulted["variableAttribute"][0]["value"] == "Faulted"
    request_ok("NotifyReport", report_pages(summary, 100, request_id=1, generated_at=NOW)[0])
    with pytest.raises(ValueError):
        m.base_report("Everything")


def test_get_report_filters() -> None:
    m = station()
    evse_1 = m.get_report(component_variables=[{"component": {"name": "EVSE", "evse": {"id": 1}}}])
    assert names(evse_1) == {("EVSE", "AvailabilityState"), ("EVSE", "Available"), ("EVSE", "Power"),
                             ("EVSE", "SupplyPhases")}
    assert all(i["component"]["evse"] == {"id": 1} for i in evse_1)
    every_evse = m.get_report(component_variables=[{"component": {"name": "evse"},
                                                    "variable": {"name": "AvailabilityState"}}])
    assert [i["component"]["evse"]["id"] for i in every_evse] == [1, 2]  # B08.FR.23
    all_instances = m.get_report(component_variables=[{"component": {"name": "DeviceDataCtrlr"},
                                                       "variable": {"name": "ItemsPerMessage"}}])
    assert {i["variable"]["instance"] for i in all_instances} == {"GetReport", "GetVariables", "SetVariables"}
    assert m.get_report(component_variables=[{"component": {"name": "NoSuch"}}]) == []
    assert m.get_report(component_criteria=["Problem"]) == []
    m.update("EVSE", "Available", "false", evse=2)
    available = m.get_report(component_criteria=["Available"])
    assert not any(i["component"].get("evse") == {"id": 2} for i in available)
    assert any(i["component"].get("evse") == {"id": 1} for i in available)
    assert any(i["component"]["name"] == "OCPPCommCtrlr" for i in available)  # no Available variable: available
    m.update("ChargingStation", "Problem", "true")
    problem = m.get_report(component_criteria=["Problem"])
    assert {i["component"]["name"] for i in problem} == {"ChargingStation"}
    request = request_ok("GetReport", {"requestId": 3, "componentCriteria": ["Problem"],
                                       "componentVariable": [{"component": {"name": "ChargingStation"},
                                                              "variable": {"name": "Model"}}]})
    [model] = m.get_report(request["componentCriteria"], request["componentVariable"])
    assert model["variableAttribute"][0]["value"] == "edge-dc"


def test_report_pages() -> None:
    items = station().base_report("FullInventory")[:7]
    pages = report_pages(items, 3, request_id=42, generated_at=NOW)
    assert [len(p["reportData"]) for p in pages] == [3, 3, 1]
    assert [p["seqNo"] for p in pages] == [0, 1, 2] and [p["tbc"] for p in pages] == [True, True, False]
    assert [i for p in pages for i in p["reportData"]] == items
    assert all(p["requestId"] == 42 and p["generatedAt"] == NOW for p in pages)
    for page in pages:
        request_ok("NotifyReport", page)
    assert report_pages([], 3, request_id=1, generated_at=NOW) == []
    [single] = report_pages(items, 100, request_id=1, generated_at=NOW)
    assert single["tbc"] is False and len(single["reportData"]) == 7
    with pytest.raises(ValueError):
        report_pages(items, 0, request_id=1, generated_at=NOW)


def test_report_pages_by_size() -> None:
    import json

    items = station().base_report("FullInventory")
    limit = 2000
    pages = report_pages(items, 1000, request_id=1, generated_at=NOW, max_bytes=limit)
    assert len(pages) > 1 and [i for p in pages for i in p["reportData"]] == items
    sizes = [len(json.dumps(p, separators=(",", ":"), ensure_ascii=False).encode()) for p in pages]
    assert max(sizes) <= limit
    assert all(sizes[n] + len(json.dumps(pages[n + 1]["reportData"][0], separators=(",", ":"))) > limit - 10
               for n in range(len(pages) - 1))  # pages are filled, not cut early
    [alone] = report_pages(items[:1], 10, request_id=1, generated_at=NOW, max_bytes=10)  # too big: goes alone
    assert len(alone["reportData"]) == 1


# -- names ----------------------------------------------------------------------------------------------------------


def _standard_names(component: str) -> set[str]:
    """The variable names the ocpp package (from the 2.0.1 appendix CSVs) lists for a component."""
    per_component = getattr(enums, f"{component}VariableName", None)
    found = {e.value for e in enums.StandardizedVariableName}
    if per_component is not None:
        found |= {e.value for e in per_component}
    return found


def test_variable_names_are_the_standard_ones_but_ours() -> None:
    m = station()
    controllers = {e.value for e in enums.ControllerComponentName}
    physical = {e.value for e in enums.PhysicalComponentName}
    ours = []
    for var in m.variables():
        assert var.component.name in controllers | physical, var.component.name
        if var.standard:
            assert var.name in _standard_names(var.component.name), var.key()
        else:
            ours.append(var.key())
            assert "Not an OCPP variable" in var.description
    assert ours == ["SmartChargingCtrlr/V2XNegativeLimitIsDischarge", "SmartChargingCtrlr/V2XOfflineChargeOnlyAfter"]
    measurands = {e.value for e in enums.MeasurandEnumType}
    assert set(m.variable("SampledDataCtrlr", "TxUpdatedMeasurands").values_list) <= measurands
    connector_types = {e.value for e in enums.ConnectorEnumType}
    assert m.value("Connector", "ConnectorType", evse=1, connector=1) in connector_types


def test_the_required_variables_are_there() -> None:
    m = station()
    required = [("OCPPCommCtrlr", n, None) for n in (
        "HeartbeatInterval", "NetworkConfigurationPriority", "NetworkProfileConnectionAttempts", "OfflineThreshold",
        "RetryBackOffRepeatTimes", "RetryBackOffRandomRange", "RetryBackOffWaitMinimum", "WebSocketPingInterval",
        "ResetRetries", "UnlockOnEVSideDisconnect", "FileTransferProtocols")] + [
        ("OCPPCommCtrlr", "MessageTimeout", "Default"), ("OCPPCommCtrlr", "MessageAttempts", "TransactionEvent"),
        ("OCPPCommCtrlr", "MessageAttemptInterval", "TransactionEvent"),
        ("SmartChargingCtrlr", "Entries", "ChargingProfiles")] + [
        ("SecurityCtrlr", n, None) for n in ("SecurityProfile", "BasicAuthPassword", "Identity", "OrganizationName",
                                             "CertificateEntries", "MaxCertificateChainSize",
                                             "AdditionalRootCertificateCheck")] + [
        ("TxCtrlr", n, None) for n in ("EVConnectionTimeOut", "StopTxOnEVSideDisconnect", "StopTxOnInvalidId",
                                       "TxStartPoint", "TxStopPoint", "MaxEnergyOnInvalidId")] + [
        ("SampledDataCtrlr", n, None) for n in ("TxUpdatedInterval", "TxUpdatedMeasurands", "TxEndedMeasurands",
                                                "TxEndedInterval", "TxStartedMeasurands")] + [
        ("SmartChargingCtrlr", n, None) for n in ("Enabled", "Available", "ProfileStackLevel", "RateUnit",
                                                  "PeriodsPerSchedule", "ExternalControlSignalsEnabled",
                                                  "NotifyChargingLimitWithSchedules", "LimitChangeSignificance")] + [
        ("AuthCtrlr", n, None) for n in ("Enabled", "AuthorizeRemoteStart", "LocalAuthorizeOffline",
                                         "LocalPreAuthorize", "OfflineTxForUnknownIdEnabled")] + [
        ("ISO15118Ctrlr", n, None) for n in ("PnCEnabled", "ContractValidationOffline",
                                             "CentralContractValidationAllowed", "V2GCertificateInstallationEnabled",
                                             "ContractCertificateInstallationEnabled", "SeccId", "OrganizationName",
                                             "CountryName", "MaxScheduleEntries", "RequestMeteringReceipt")] + [
        ("DeviceDataCtrlr", n, i) for n in ("ItemsPerMessage", "BytesPerMessage")
        for i in ("GetReport", "GetVariables", "SetVariables")] + [
        ("ChargingStation", n, None) for n in ("AvailabilityState", "Available", "Model", "VendorName")]
    missing = [(c, n, i) for c, n, i in required if m.find(c, n, instance=i) is None]
    assert missing == []
    for evse in (1, 2):
        for name in ("AvailabilityState", "Available", "Power", "SupplyPhases"):
            assert m.find("EVSE", name, evse=evse) is not None
        for name in ("AvailabilityState", "Available", "ConnectorType", "SupplyPhases"):
            assert m.find("Connector", name, evse=evse, connector=1) is not None
    assert m.find("EVSE", "Power", evse=3) is None
    assert m.variable("SecurityCtrlr", "BasicAuthPassword").attributes["Actual"].mutability == "WriteOnly"
    with pytest.raises(ValueError):
        DeviceModel.standard(0, model="m", vendor="v")
