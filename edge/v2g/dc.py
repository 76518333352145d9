"""The DC handlers DIN SPEC 70121 and ISO 15118-2 share: cable check, pre-charge, welding detection."""

from __future__ import annotations

from typing import Any

from edge.v2g.physical import from_physical
from edge.v2g.session import V2gSession


class DcSession(V2gSession):
    def _CableCheckReq(self, req: Any) -> tuple[Any, bool, str]:
        self.hardware.start_isolation_check()
        isolation = self.hardware.isolation()
        done = isolation in ("Valid", "Warning")  # a warning still allows charging (IEC 61851-23)
        if isolation == "Fault":
            self.hardware.set_dc_target(0, 0)
            return self._failed("CableCheckRes", "FAILED"), True, self.state
        if not done and self._overdue("cable check", self.timers.cable_check):
            return self._failed("CableCheckRes", "FAILED"), True, self.state
        if done:
            self.hardware.set_dc_target(0, 0)
        res = self.B.CableCheckResType(
            "OK", self._status("EVSE_Ready" if done else "EVSE_IsolationMonitoringActive"),
            "Finished" if done else "Ongoing")
        return res, False, "CableCheckReq" if done else "CableCheckReq:Ongoing"

    def _PreChargeReq(self, req: Any) -> tuple[Any, bool, str]:
        if self.hardware.isolation() not in ("Valid", "Warning"):  # the table ensures it; the board decides
            return self._failed("PreChargeRes", "FAILED"), True, self.state
        if self._overdue("pre-charge", self.timers.pre_charge):
            return self._failed("PreChargeRes", "FAILED"), True, self.state
        self.hardware.set_dc_target(min(from_physical(req.EVTargetVoltage), self.hardware.dc_limits().max_voltage),
                                    min(from_physical(req.EVTargetCurrent), 2.0))
        v, _ = self.hardware.present()
        return self.B.PreChargeResType("OK", self._status(), self.pv(v, "V")), False, "PreChargeReq"

    def _WeldingDetectionReq(self, req: Any) -> tuple[Any, bool, str]:
        v, _ = self.hardware.present()
        return self.B.WeldingDetectionResType("OK", self._status(), self.pv(v, "V")), False, "WeldingDetectionReq"

    def _SessionStopReq(self, req: Any) -> tuple[Any, bool, str]:
        return self.B.SessionStopResType("OK"), True, "stopped"
