"""edge/ocpp/adapter.py: schema validation both ways with the right CALLERROR codes, and names that survive
the snake/camel round trip where the ocpp package's own converter breaks them."""

from __future__ import annotations

import dataclasses
import json
import os

import ocpp
import pytest
from ocpp.charge_point import snake_to_camel_case

from edge.ocpp import adapter
from edge.ocpp.adapter import NameMap, SchemaViolation, UnknownAction, validate

BOOT = {"chargingStation": {"model": "edge", "vendorName": "edge"}, "reason": "PowerUp"}


@pytest.mark.parametrize("version", ["2.0.1", "2.1"])
def test_valid_payloads_pass(version: str) -> None:
    validate(version, "BootNotification", "request", BOOT)
    validate(version, "BootNotification", "response",
             {"currentTime": "2026-12-04T10:00:00Z", "interval": 300, "status": "Accepted"})


@pytest.mark.parametrize(("payload", "code"), [
    ({"chargingStation": {"model": "edge"}, "reason": "PowerUp"}, "OccurrenceConstraintViolation"),
    ({**BOOT, "reason": "Bored"}, "PropertyConstraintViolation"),
    ({**BOOT, "reason": 3}, "TypeConstraintViolation"),
    ({**BOOT, "extra": 1}, "FormatViolation"),
    ({"chargingStation": {"model": "x" * 21, "vendorName": "e"}, "reason": "PowerUp"}, "PropertyConstraintViolation"),
])
def test_each_fault_has_its_callerror_code(payload: dict, code: str) -> None:
    with pytest.raises(SchemaViolation) as e:
        validate("2.0.1", "BootNotification", "request", payload)
    assert e.value.code == code


def test_fault_path_names_the_field() -> None:
    with pytest.raises(SchemaViolation) as e:
        validate("2.0.1", "BootNotification", "request",
                 {"chargingStation": {"model": "edge", "vendorName": 5}, "reason": "PowerUp"})
    assert e.value.path == "chargingStation/vendorName"


@pytest.mark.parametrize("action", ["../../../etc/passwd", "Boot Notification", "", "A" * 100, "Nope"])
def test_unknown_or_hostile_action_names_are_unknown(action: str) -> None:
    with pytest.raises(UnknownAction):
        validate("2.0.1", action, "request", {})


def test_versions_differ_where_they_should() -> None:
    assert "NotifyDERAlarm" in adapter.actions("2.1") and "NotifyDERAlarm" not in adapter.actions("2.0.1")
    assert adapter.send_actions("2.1") == {"NotifyPeriodicEventStream"}
    validate("2.1", "NotifyPeriodicEventStream", "send", {"id": 1, "pending": 0, "basetime": "2026-12-04T10:00:00Z",
                                                          "data": [{"t": 0.0, "v": "1"}]})
    with pytest.raises(UnknownAction):
        validate("2.0.1", "NotifyDERAlarm", "request", {})


def _wire_names_with_underscore(version: str) -> set[str]:
    folder = os.path.join(os.path.dirname(ocpp.__file__), "v" + version.replace(".", ""), "schemas")
    names: set[str] = set()
    for file in os.listdir(folder):
        with open(os.path.join(folder, file), encoding="utf-8-sig") as f:
            text = f.read()
        for d in json.loads(text).get("definitions", {}).values():
            names |= {n for n in d.get("properties", {}) if "_" in n}
    return names


def test_the_package_converter_breaks_v2x_names_and_ours_does_not() -> None:
    broken = _wire_names_with_underscore("2.1")
    assert {"setpoint_L2", "dischargeLimit_L2"} <= broken
    # the defect this module exists for: the package's converter loses the underscore
    assert snake_to_camel_case({"setpoint_l2": 1}) == {"setpointL2": 1}
    period = {"startPeriod": 0, "operationMode": "CentralSetpoint", "setpoint": -7000.0, "setpoint_L2": -1.0,
              "dischargeLimit_L2": -3.0, "numberPhases": 3}
    request = {"evseId": 1, "chargingProfile": {
        "id": 1, "stackLevel": 0, "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Absolute",
        "chargingSchedule": [{"id": 1, "chargingRateUnit": "W", "chargingSchedulePeriod": [period]}]}}
    validate("2.1", "SetChargingProfile", "request", request)
    names = NameMap.of("2.1", "SetChargingProfile", "request")
    snake = names.from_wire(request)
    sp = snake["charging_profile"]["charging_schedule"][0]["charging_schedule_period"][0]
    assert sp["setpoint_l2"] == -1.0 and sp["discharge_limit_l2"] == -3.0
    assert names.to_wire(snake) == request


def test_snake_names_build_the_package_dataclasses() -> None:
    from ocpp.v21 import call
    wire = {"evseId": 1, "chargingNeeds": {"requestedEnergyTransfer": "DC_BPT", "v2xChargingParameters": {
        "maxChargePower": 11000.0, "maxDischargePower_L2": 3000.0}}}
    validate("2.1", "NotifyEVChargingNeeds", "request", wire)
    snake = NameMap.of("2.1", "NotifyEVChargingNeeds", "request").from_wire(wire)
    message = call.NotifyEVChargingNeeds(**snake)
    back = NameMap.of("2.1", "NotifyEVChargingNeeds", "request").to_wire(
        {k: v for k, v in dataclasses.asdict(message).items() if v is not None})
    assert back == wire


# ------------------------------------------------------------------ the compiled validator agrees with jsonschema
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from edge.ocpp.adapter import _fast_validator, _schema_name, _validator  # noqa: E402

SAMPLES = [
    ("2.0.1", "TransactionEvent", "request", {
        "eventType": "Updated", "timestamp": "2026-12-04T10:00:00Z", "triggerReason": "MeterValuePeriodic",
        "seqNo": 3, "offline": True, "transactionInfo": {"transactionId": "t-1", "chargingState": "Charging"},
        "evse": {"id": 1, "connectorId": 1}, "idToken": {"idToken": "DEEDGC0000001", "type": "eMAID"},
        "meterValue": [{"timestamp": "2026-12-04T10:00:00Z", "sampledValue": [
            {"value": 12.5, "measurand": "Energy.Active.Import.Register", "context": "Sample.Periodic",
             "unitOfMeasure": {"unit": "Wh"}}]}]}),
    ("2.1", "SetChargingProfile", "request", {"evseId": 1, "chargingProfile": {
        "id": 1, "stackLevel": 0, "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Relative",
        "chargingSchedule": [{"id": 1, "chargingRateUnit": "W", "chargingSchedulePeriod": [
            {"startPeriod": 0, "operationMode": "CentralSetpoint", "setpoint": -7000.0,
             "dischargeLimit_L2": -1.0}]}]}}),
    ("2.0.1", "BootNotification", "request", BOOT),
    ("2.1", "GetVariables", "response", {"getVariableResult": [{
        "attributeStatus": "Accepted", "attributeValue": "300", "component": {"name": "OCPPCommCtrlr"},
        "variable": {"name": "HeartbeatInterval"}}]}),
]
JUNK = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=False),
                 st.text(max_size=60), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5),
                                                                                          st.integers(), max_size=2))


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _mutate(value, path, how, junk):
    if not path:
        return junk if how == "replace" else value
    head, rest = path[0], path[1:]
    copy = dict(value) if isinstance(value, dict) else list(value)
    if not rest and how == "delete":
        del copy[head]
    elif not rest and how == "add" and isinstance(copy, dict):
        copy["x" + str(head)] = junk
    else:
        copy[head] = _mutate(copy[head], rest, how, junk)
    return copy


@settings(max_examples=400, deadline=None)
@given(sample=st.sampled_from(SAMPLES), pick=st.integers(0, 10**6), how=st.sampled_from(["replace", "delete", "add"]),
       junk=JUNK)
def test_the_compiled_validator_never_accepts_what_jsonschema_refuses(sample, pick, how, junk) -> None:
    version, action, kind, payload = sample
    paths = [p for p in _paths(payload) if p]
    mutated = _mutate(payload, paths[pick % len(paths)], how, junk)
    fast = _fast_validator(version, _schema_name(version, action, kind))
    assert fast is not None
    slow_ok = not list(_validator(version, action, kind).iter_errors(mutated))
    try:
        fast(mutated)
        fast_ok = True
    except Exception:
        fast_ok = False
    assert fast_ok == slow_ok, (mutated, fast_ok, slow_ok)
