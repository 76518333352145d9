"""ISO 15118-20 sessions: DC (Scheduled control mode) with EIM and Plug & Charge. AC, BPT and the
Dynamic control mode join as more rows of the same tables (:mod:`edge.v2g.iso20.session`)."""

from .session import Iso20DcSession, Iso20PausedSession, Iso20PausedSessions

__all__ = ["Iso20DcSession", "Iso20PausedSession", "Iso20PausedSessions"]
