"""V2G communication: V2GTP framing, SDP, protocol negotiation, and (next) the session cores."""
