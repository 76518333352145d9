"""OCPP 2.0.1/2.1: the charging station side (issue 11). So far: the OCPP-J RPC framing (:mod:`.rpc`)."""
