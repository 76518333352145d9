"""supportedAppProtocol negotiation: which protocol a session speaks (one place decides).

The car offers namespaces with versions, SchemaIDs and priorities (1 = most wanted); real offers
come in any order and with namespaces we do not know (Tesla lists ``urn:tesla:din:2018:MsgDef``
first). We take the car's most wanted offer among the protocols enabled here whose major version we
speak; a different minor version is accepted with ``OK_SuccessfulNegotiationWithMinorDeviation``.
"""

from __future__ import annotations

from dataclasses import dataclass

from exi.model.apphand import AppProtocolType, responseCodeType, supportedAppProtocolReq, supportedAppProtocolRes


@dataclass(frozen=True, slots=True)
class Protocol:
    name: str  # our label: the exi protocol used for the session's messages
    namespace: str
    major: int
    minor: int


DIN = Protocol("din", "urn:din:70121:2012:MsgDef", 2, 0)
ISO2 = Protocol("iso2", "urn:iso:15118:2:2013:MsgDef", 2, 0)
ISO20_AC = Protocol("iso20-ac", "urn:iso:std:iso:15118:-20:AC", 1, 0)
ISO20_DC = Protocol("iso20-dc", "urn:iso:std:iso:15118:-20:DC", 1, 0)
ISO20_ACDP = Protocol("iso20-acdp", "urn:iso:std:iso:15118:-20:ACDP", 1, 0)
ISO20_WPT = Protocol("iso20-wpt", "urn:iso:std:iso:15118:-20:WPT", 1, 0)
KNOWN = {p.name: p for p in (DIN, ISO2, ISO20_AC, ISO20_DC, ISO20_ACDP, ISO20_WPT)}


@dataclass(frozen=True, slots=True)
class Negotiation:
    response: supportedAppProtocolRes
    protocol: Protocol | None  # None: no common protocol (the session ends after the response)
    offer: AppProtocolType | None


def negotiate(request: supportedAppProtocolReq, enabled: list[Protocol]) -> Negotiation:
    by_namespace = {p.namespace: p for p in enabled}
    candidates = []
    for offer in request.AppProtocol:
        ours = by_namespace.get(offer.ProtocolNamespace)
        if ours is not None and offer.VersionNumberMajor == ours.major:
            candidates.append((offer.Priority, offer, ours))
    if not candidates:
        return Negotiation(supportedAppProtocolRes(responseCodeType.Failed_NoNegotiation), None, None)
    # lowest Priority value wins; document order breaks ties (two offers with one priority are invalid
    # but seen: taking the first is what the car most likely meant)
    _, offer, ours = min(candidates, key=lambda c: c[0])
    code = (responseCodeType.OK_SuccessfulNegotiation if offer.VersionNumberMinor == ours.minor
            else responseCodeType.OK_SuccessfulNegotiationWithMinorDeviation)
    return Negotiation(supportedAppProtocolRes(code, offer.SchemaID), ours, offer)
