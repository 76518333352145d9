"""ISO 15118-3 SLAC timers and counters (Table A.1 and Table 3), in one place.

Values from the public transcriptions in ../shared/spec/timers.md. Times are seconds. Override any
of them from configuration with :meth:`SlacTimers.with_overrides`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace


@dataclass(frozen=True, slots=True)
class SlacTimers:
    TT_EVSE_SLAC_init: float = 50.0  # from plug-in (CP state B) to CM_SLAC_PARM.REQ
    TT_match_sequence: float = 0.4  # waiting for the next request of the sequence
    TT_match_response: float = 0.2  # waiting for a response to our request
    TT_EVSE_match_MNBC: float = 0.6  # collecting M-SOUNDs after CM_START_ATTEN_CHAR.IND
    TT_EVSE_match_session: float = 10.0  # CM_SLAC_PARM.CNF to CM_SLAC_MATCH.REQ
    TT_match_join: float = 12.0  # CM_SLAC_MATCH.CNF until the link is up
    TT_EVSE_vald_toggle: float = 3.5
    TP_match_leave: float = 1.0
    C_EV_match_MNBC: int = 10  # sounds the EV is asked to send
    C_sequ_retry: int = 2  # repetitions of a request that got no response
    C_EV_match_signalattn_direct: int = 10  # dB
    C_EV_match_signalattn_indirect: int = 20  # dB

    def with_overrides(self, **values: float) -> SlacTimers:
        """A copy with some values replaced; unknown names and non-positive values are config errors."""
        known = {f.name for f in fields(self)}
        for name, value in values.items():
            if name not in known:
                raise ValueError(f"unknown SLAC timer or counter {name!r}; known: {', '.join(sorted(known))}")
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"SLAC {name} must be a positive number, got {value!r}")
        return replace(self, **values)

    @property
    def mnbc_timeout_units(self) -> int:
        """TT_EVSE_match_MNBC as sent in CM_SLAC_PARM.CNF (units of 100 ms)."""
        return max(1, round(self.TT_EVSE_match_MNBC * 10))
