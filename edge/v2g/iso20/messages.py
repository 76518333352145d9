"""What the ISO 15118-20 charger and car share about the messages themselves: which schema (and so
which EXI grammar and V2GTP payload type) each request lives in, the header, and RationalNumber values.

-20 has no V2G_Message envelope: every message is its own root element, the common ones in the
CommonMessages schema (payload type 0x8002), the AC ones in the AC schema (0x8003), the DC ones in the DC
schema (0x8004); a response goes in the schema (and with the payload type) of its request.
"""

from __future__ import annotations

from collections.abc import Mapping

from edge.v2g.v2gtp import PayloadType
from exi.model import iso20_ac as ac
from exi.model import iso20_commonmessages as cm
from exi.model import iso20_commontypes as ct
from exi.model import iso20_dc as dc

COMMON = "iso20-common"
AC = "iso20-ac"
DC = "iso20-dc"
#: EXI codec label -> V2GTP payload type of its messages
PAYLOAD_TYPES: Mapping[str, int] = {COMMON: PayloadType.ISO20_COMMON, AC: PayloadType.ISO20_AC,
                                    DC: PayloadType.ISO20_DC}
SCHEMA_OF_PAYLOAD_TYPE: Mapping[int, str] = {v: k for k, v in PAYLOAD_TYPES.items()}
#: the model module whose classes a schema's messages are
MODELS = {COMMON: cm, AC: ac, DC: dc}

COMMON_NS = "urn:iso:std:iso:15118:-20:CommonMessages"

#: every request a -20 session can receive, with the schema it comes in
REQUESTS: Mapping[str, str] = {
    **{name: COMMON for name in (
        "SessionSetupReq", "AuthorizationSetupReq", "AuthorizationReq", "ServiceDiscoveryReq", "ServiceDetailReq",
        "ServiceSelectionReq", "ScheduleExchangeReq", "PowerDeliveryReq", "MeteringConfirmationReq",
        "SessionStopReq", "CertificateInstallationReq", "VehicleCheckInReq", "VehicleCheckOutReq")},
    **{name: AC for name in ("AC_ChargeParameterDiscoveryReq", "AC_ChargeLoopReq")},
    **{name: DC for name in (
        "DC_ChargeParameterDiscoveryReq", "DC_CableCheckReq", "DC_PreChargeReq", "DC_ChargeLoopReq",
        "DC_WeldingDetectionReq")},
}

#: a new session's SessionID in SessionSetupReq (the -20 SessionID is always 8 bytes)
NO_SESSION = bytes(8)

# ServiceIDs (ISO 15118-20 Table 204): the energy transfer services; 4, 7 (ACDP) and 3 (WPT) are not offered
SERVICE_AC = 1
SERVICE_DC = 2
SERVICE_WPT = 3
SERVICE_DC_ACDP = 4
SERVICE_AC_BPT = 5
SERVICE_DC_BPT = 6
SERVICE_DC_ACDP_BPT = 7
ENERGY_SERVICES: Mapping[int, str] = {SERVICE_AC: "AC", SERVICE_DC: "DC", SERVICE_WPT: "WPT",
                                      SERVICE_DC_ACDP: "DC_ACDP", SERVICE_AC_BPT: "AC_BPT",
                                      SERVICE_DC_BPT: "DC_BPT", SERVICE_DC_ACDP_BPT: "DC_ACDP_BPT"}
#: the services each SAP namespace can carry (an AC session never selects DC, and the other way round)
SERVICES_OF_PROTOCOL: Mapping[str, frozenset[int]] = {
    "iso20-ac": frozenset({SERVICE_AC, SERVICE_AC_BPT}), "iso20-dc": frozenset({SERVICE_DC, SERVICE_DC_BPT})}
BPT_SERVICES = frozenset({SERVICE_AC_BPT, SERVICE_DC_BPT, SERVICE_DC_ACDP_BPT})

# service parameters (Tables 205-210): name -> integer value
CONTROL_MODE_SCHEDULED = 1
CONTROL_MODE_DYNAMIC = 2
MOBILITY_NEEDS_BY_EVCC = 1
MOBILITY_NEEDS_BY_EVCC_AND_SECC = 2
CONNECTOR_AC_SINGLE_PHASE = 1
CONNECTOR_AC_THREE_PHASE = 2
CONNECTOR_DC_CORE = 1
CONNECTOR_DC_EXTENDED = 2
PRICING_NONE = 0
BPT_CHANNEL_UNIFIED = 1
GENERATOR_MODE_GRID_FOLLOWING = 1
ISLANDING_DETECTION_ACTIVE = 1


def request_name(message: object) -> str | None:
    """"SessionSetupReq" for a SessionSetupReqType, None for anything that is not a -20 request."""
    name = type(message).__name__.removesuffix("Type")
    return name if name in REQUESTS else None


def response_class(request: str) -> type:
    """The model class of the response to ``request`` (same schema)."""
    return getattr(MODELS[REQUESTS[request]], request[:-3] + "ResType")


def header(session_id: bytes, timestamp: float, signature: object = None) -> ct.MessageHeaderType:
    return ct.MessageHeaderType(SessionID=session_id, TimeStamp=int(timestamp), Signature=signature)


# ------------------------------------------------------------------ RationalNumber (Value x 10^Exponent)
SHORT = range(-32768, 32768)


def rational(x: float) -> ct.RationalNumberType:
    """The finest RationalNumber whose Value fits a short, trailing zeros moved into the Exponent
    (400 V -> 4 x 10^2, 380.5 V -> 3805 x 10^-1)."""
    for exponent in range(-3, 20):
        value = round(x / 10**exponent)
        if value in SHORT:
            while value and value % 10 == 0:
                value //= 10
                exponent += 1
            return ct.RationalNumberType(Exponent=exponent if value else 0, Value=value)
    raise ValueError(f"{x} does not fit a RationalNumber")


def from_rational(r: ct.RationalNumberType | None) -> float:
    return 0.0 if r is None or r.Value is None else r.Value * 10.0 ** (r.Exponent or 0)
