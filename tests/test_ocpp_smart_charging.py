"""edge/ocpp/smart_charging.py: charging profiles to the one power command (K01-K08, 2.1 V2X modes)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from edge.ocpp.adapter import validate
from edge.ocpp.smart_charging import ChargingProfiles, ProfileRejected

T0 = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)


def profile(pid: int, purpose: str, periods: list[dict], *, stack: int = 0, kind: str = "Absolute",
            unit: str = "W", **extra) -> dict:
    schedule = {"id": pid, "chargingRateUnit": unit, "chargingSchedulePeriod": periods}
    if kind in ("Absolute", "Recurring"):
        schedule["startSchedule"] = "2026-12-04T10:00:00Z"
    for key in ("duration",):
        if key in extra:
            schedule[key] = extra.pop(key)
    return {"id": pid, "stackLevel": stack, "chargingProfilePurpose": purpose, "chargingProfileKind": kind,
            "chargingSchedule": [schedule], **extra}


def test_tx_profile_over_default_capped_by_station_max() -> None:
    p = ChargingProfiles()
    p.install(0, profile(1, "TxDefaultProfile", [{"startPeriod": 0, "limit": 11000}]), evse_ids={1},
              transaction_id=None)
    p.install(0, profile(2, "ChargingStationMaxProfile", [{"startPeriod": 0, "limit": 20000},
                                                           {"startPeriod": 600, "limit": 5000}]),
              evse_ids={1}, transaction_id=None)
    assert p.command(1, T0)[0].max_w == 11000
    p.install(1, profile(3, "TxProfile", [{"startPeriod": 0, "limit": 16000}]), evse_ids={1}, transaction_id="t1")
    command, change = p.command(1, T0 + timedelta(seconds=10), transaction_id="t1")
    assert command.max_w == 16000 and change == T0 + timedelta(seconds=600)
    assert p.command(1, T0 + timedelta(seconds=700), transaction_id="t1")[0].max_w == 5000  # the cap
    assert p.command(1, T0, transaction_id="other")[0].max_w == 11000  # TxProfile only for its transaction
    p.transaction_ended(1)
    assert 3 not in p.profiles


def test_higher_stack_level_wins_while_in_force() -> None:
    p = ChargingProfiles()
    p.install(1, profile(1, "TxDefaultProfile", [{"startPeriod": 0, "limit": 7000}]), evse_ids={1},
              transaction_id=None)
    p.install(1, profile(2, "TxDefaultProfile", [{"startPeriod": 0, "limit": 3000}], stack=2, duration=60),
              evse_ids={1}, transaction_id=None)
    assert p.command(1, T0 + timedelta(seconds=30))[0].max_w == 3000
    assert p.command(1, T0 + timedelta(seconds=61))[0].max_w == 7000


def test_relative_profile_counts_from_transaction_start() -> None:
    p = ChargingProfiles()
    p.install(1, profile(1, "TxProfile", [{"startPeriod": 0, "limit": 1000}, {"startPeriod": 100, "limit": 9000}],
                         kind="Relative"), evse_ids={1}, transaction_id="t")
    start = T0 + timedelta(hours=1)
    assert p.command(1, start + timedelta(seconds=50), transaction_id="t", tx_start=start)[0].max_w == 1000
    assert p.command(1, start + timedelta(seconds=150), transaction_id="t", tx_start=start)[0].max_w == 9000


def test_recurring_daily() -> None:
    p = ChargingProfiles()
    p.install(1, profile(1, "TxDefaultProfile", [{"startPeriod": 0, "limit": 1000},
                                                 {"startPeriod": 3600, "limit": 2000}],
                         kind="Recurring", recurrencyKind="Daily"), evse_ids={1}, transaction_id=None)
    assert p.command(1, T0 + timedelta(days=3, minutes=30))[0].max_w == 1000
    assert p.command(1, T0 + timedelta(days=3, hours=2))[0].max_w == 2000


def test_amperes_are_converted() -> None:
    p = ChargingProfiles()
    p.install(1, profile(1, "TxDefaultProfile", [{"startPeriod": 0, "limit": 16, "numberPhases": 1}], unit="A"),
              evse_ids={1}, transaction_id=None)
    assert p.command(1, T0)[0].max_w == pytest.approx(16 * 230)


@pytest.mark.parametrize(("evse", "wire", "tx", "code"), [
    (1, profile(1, "TxProfile", [{"startPeriod": 0, "limit": 1}]), None, "TxNotFound"),
    (0, profile(1, "TxProfile", [{"startPeriod": 0, "limit": 1}]), None, "InvalidValue"),
    (1, profile(1, "ChargingStationMaxProfile", [{"startPeriod": 0, "limit": 1}]), None, "InvalidValue"),
    (1, profile(1, "TxDefaultProfile", [{"startPeriod": 0, "limit": 1}], stack=99), None, "InvalidStackLevel"),
    (1, profile(1, "TxDefaultProfile", [{"startPeriod": 5, "limit": 1}]), None, "InvalidSchedule"),
    (1, profile(1, "TxDefaultProfile", [{"startPeriod": 0, "limit": 1}, {"startPeriod": 0, "limit": 2}]), None,
     "InvalidSchedule"),
    (7, profile(1, "TxDefaultProfile", [{"startPeriod": 0, "limit": 1}]), None, "UnknownEvse"),
    (1, profile(1, "TxDefaultProfile", [{"startPeriod": 0, "limit": -5000}]), None, "InvalidValue"),
])
def test_refusals(evse: int, wire: dict, tx: str | None, code: str) -> None:
    with pytest.raises(ProfileRejected) as e:
        ChargingProfiles().install(evse, wire, evse_ids={1}, transaction_id=tx)
    assert e.value.reason_code == code


def test_same_stack_level_and_purpose_is_refused_unless_same_id() -> None:
    p = ChargingProfiles()
    p.install(1, profile(1, "TxDefaultProfile", [{"startPeriod": 0, "limit": 1000}]), evse_ids={1},
              transaction_id=None)
    p.install(1, profile(1, "TxDefaultProfile", [{"startPeriod": 0, "limit": 2000}]), evse_ids={1},
              transaction_id=None)  # same id: replaces
    assert p.command(1, T0)[0].max_w == 2000
    with pytest.raises(ProfileRejected):
        p.install(1, profile(2, "TxDefaultProfile", [{"startPeriod": 0, "limit": 3000}]), evse_ids={1},
                  transaction_id=None)


def test_profile_count_is_bounded() -> None:
    p = ChargingProfiles(max_profiles=3)
    for i in range(3):
        p.install(1, profile(i, "TxDefaultProfile", [{"startPeriod": 0, "limit": 1000}], stack=i), evse_ids={1},
                  transaction_id=None)
    with pytest.raises(ProfileRejected):
        p.install(1, profile(9, "TxDefaultProfile", [{"startPeriod": 0, "limit": 1}], stack=5), evse_ids={1},
                  transaction_id=None)


def test_v21_central_setpoint_idle_and_unsupported_modes() -> None:
    p = ChargingProfiles(version="2.1")
    wire = profile(1, "TxProfile", [{"startPeriod": 0, "operationMode": "CentralSetpoint", "setpoint": -7000.0,
                                     "dischargeLimit": -9000.0, "limit": 11000.0},
                                    {"startPeriod": 60, "operationMode": "Idle"},
                                    {"startPeriod": 120, "operationMode": "ChargingOnly", "limit": 4000.0}])
    validate("2.1", "SetChargingProfile", "request", {"evseId": 1, "chargingProfile": wire})
    p.install(1, wire, evse_ids={1}, transaction_id="t")
    first = p.command(1, T0, transaction_id="t")[0]
    assert (first.target_w, first.min_w, first.max_w) == (-7000, -9000, 11000)
    idle = p.command(1, T0 + timedelta(seconds=61), transaction_id="t")[0]
    assert (idle.max_w, idle.min_w) == (0, 0)
    last = p.command(1, T0 + timedelta(seconds=200), transaction_id="t")[0]
    assert (last.max_w, last.min_w) == (4000, 0)
    with pytest.raises(ProfileRejected) as e:
        p.install(1, profile(2, "TxProfile", [{"startPeriod": 0, "operationMode": "LocalFrequency", "limit": 1.0}],
                             stack=1), evse_ids={1}, transaction_id="t")
    assert e.value.reason_code == "UnsupportedOperation"


def test_v201_negative_limit_only_when_allowed_and_custom_data() -> None:
    allowed = ChargingProfiles(version="2.0.1", negative_limit_discharges=lambda: True)
    allowed.install(1, profile(1, "TxProfile", [{"startPeriod": 0, "limit": -5000.0}]), evse_ids={1},
                    transaction_id="t")
    cmd = allowed.command(1, T0, transaction_id="t")[0]
    assert (cmd.max_w, cmd.min_w, cmd.target_w) == (0, -5000, -5000)
    custom = ChargingProfiles(version="2.0.1")
    wire = profile(1, "TxProfile", [{"startPeriod": 0, "limit": 11000.0, "customData": {
        "vendorId": "org.edge.v2x", "operationMode": "CentralSetpoint", "setpoint": -3000.0}}])
    validate("2.0.1", "SetChargingProfile", "request", {"evseId": 1, "chargingProfile": wire})
    custom.install(1, wire, evse_ids={1}, transaction_id="t")
    assert custom.command(1, T0, transaction_id="t")[0].target_w == -3000


@pytest.mark.parametrize("version", ["2.0.1", "2.1"])
def test_composite_schedule_is_schema_valid_and_merged(version: str) -> None:
    p = ChargingProfiles(version=version)
    p.install(0, profile(1, "ChargingStationMaxProfile", [{"startPeriod": 0, "limit": 20000},
                                                           {"startPeriod": 300, "limit": 20000},
                                                           {"startPeriod": 600, "limit": 5000}]),
              evse_ids={1}, transaction_id=None)
    schedule = p.composite(1, T0, 900, None, default_w=50000)
    assert [(q["startPeriod"], q["limit"]) for q in schedule["chargingSchedulePeriod"]] == [(0, 20000), (600, 5000)]
    validate(version, "GetCompositeSchedule", "response", {"status": "Accepted", "schedule": schedule})
    empty = ChargingProfiles(version=version).composite(1, T0, 60, "W", default_w=50000)
    assert empty["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 50000}]


def test_clear_and_report() -> None:
    p = ChargingProfiles()
    for i, (evse, purpose) in enumerate([(0, "TxDefaultProfile"), (1, "TxDefaultProfile"),
                                         (0, "ChargingStationMaxProfile")]):
        p.install(evse, profile(i + 1, purpose, [{"startPeriod": 0, "limit": 1000}]), evse_ids={1},
                  transaction_id=None)
    assert set(p.report({"requestId": 1, "chargingProfile": {"chargingProfilePurpose": "TxDefaultProfile"}})) == {0, 1}
    assert p.clear({"chargingProfileCriteria": {"evseId": 0, "chargingProfilePurpose": "TxDefaultProfile"}})
    assert sorted(p.profiles) == [2, 3]
    assert not p.clear({"chargingProfileId": 42})
    assert p.clear({}) and not p.profiles
