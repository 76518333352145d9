"""BootNotification and Heartbeat rules (B01-B04, G02), sans-IO: nothing but BootNotification before
Accepted (only triggered messages while Pending), the CSMS's interval for retries and heartbeats (the
station's own when it says 0), answers it cannot act on treated as none."""

from __future__ import annotations

import math

import pytest

from edge.ocpp.boot import BootState


def state() -> BootState:
    return BootState(model="edge", vendor="edge", serial="SN1", default_retry=30)


def test_pending_then_accepted() -> None:
    s = state()
    assert s.boot_due(0.0) and s.boot_request()["chargingStation"] == {"model": "edge", "vendorName": "edge",
                                                                         "serialNumber": "SN1"}
    s.on_boot_answer({"status": "Pending", "interval": 10, "currentTime": "2026-12-04T00:00:00Z"}, 1.0)
    assert not s.boot_due(5.0) and s.boot_due(11.0) and s.next_wakeup() == 11.0
    assert not s.may_send("Heartbeat") and not s.may_send("StatusNotification")
    assert s.may_send("StatusNotification", triggered=True) and s.may_send("BootNotification")
    s.on_boot_answer({"status": "Accepted", "interval": 120, "currentTime": "2026-12-04T00:00:11Z"}, 11.0)
    assert s.status == "Accepted" and s.next_boot_at == math.inf and not s.boot_due(1e9)
    assert s.may_send("TransactionEvent") and not s.may_send("BootNotification")
    assert not s.heartbeat_due(130.0) and s.heartbeat_due(131.0)
    s.heard(125.0)  # any answer is a sign of life
    assert not s.heartbeat_due(131.0) and s.next_wakeup() == 245.0


def test_rejected_sends_nothing_and_retries_after_the_interval() -> None:
    s = state()
    s.on_boot_answer({"status": "Rejected", "interval": 0, "currentTime": "2026-12-04T00:00:00Z"}, 2.0)
    assert not s.may_send("StatusNotification", triggered=True) and not s.may_send("Heartbeat")
    assert s.boot_due(32.0) and not s.boot_due(31.9)  # interval 0: the station's own 30 s


@pytest.mark.parametrize("payload", [{}, {"status": "Maybe", "interval": 5}, {"status": "Accepted"},
                                     {"status": "Accepted", "interval": -1},
                                     {"status": "Accepted", "interval": True}])
def test_answers_it_cannot_act_on_count_as_none(payload: dict) -> None:
    s = state()
    s.on_boot_answer(payload, 1.0)
    assert s.status is None and s.boot_due(31.0) and not s.boot_due(30.0)


def test_a_lost_connection_boots_again_only_when_not_accepted() -> None:
    s = state()
    s.on_boot_failed(0.0)
    assert s.next_boot_at == 30.0
    s.connection_lost()
    assert s.boot_due(0.0)
    s.on_boot_answer({"status": "Accepted", "interval": 60, "currentTime": "2026-12-04T00:00:00Z"}, 1.0)
    s.connection_lost()
    assert not s.boot_due(1e9)
