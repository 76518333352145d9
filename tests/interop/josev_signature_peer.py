"""Josev's own XML-signature code (PyPI ``iso15118`` 0.31.2) as an independent signer and verifier.

Runs INSIDE the exificient venv (interpreter from ``exificient_setup``), never in the project's:
``python josev_signature_peer.py REQUEST.json RESULT.json``. Josev logs to stdout/stderr, so the answer
goes to RESULT.json. It uses exactly the calls Josev's EVCC and SECC make for ISO 15118-2 PnC
(evcc/states/iso15118_2_states.py, secc/states/iso15118_2_states.py): ``create_signature`` over
``EXI().to_exi(element, Namespace.ISO_V2_MSG_DEF)`` and ``verify_signature`` with the leaf certificate,
with Josev's EXIficient codec (EXICodec.jar through py4j).

REQUEST: {"key_pem": PEM of a P-256 key, "session_id": hex, "gen_challenge": hex,
          "meter_info": {"MeterID": str, "MeterReading": int, ...}, "sa_schedule_tuple_id": int,
          "cert_der": hex (for verify), "verify": [{"kind": "authorization"|"metering", "hex": EXI}]}
RESULT:  {"signed": {"authorization": hex, "metering": hex},
          "verified": [{"ok": bool, "digest_match": bool, "element_exi": hex, "signed_info_exi": hex}]}
"""

from __future__ import annotations

import hashlib
import json
import sys


def main(request_path: str, result_path: str) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from iso15118.shared.exi_codec import EXI
    from iso15118.shared.exificient_exi_codec import ExificientEXICodec
    from iso15118.shared.messages.enums import Namespace
    from iso15118.shared.messages.iso15118_2.body import AuthorizationReq, Body, MeteringReceiptReq
    from iso15118.shared.messages.iso15118_2.datatypes import MeterInfo
    from iso15118.shared.messages.iso15118_2.header import MessageHeader
    from iso15118.shared.messages.iso15118_2.msgdef import V2GMessage
    from iso15118.shared.security import create_signature, verify_signature
    from iso15118.shared.settings import load_shared_settings

    load_shared_settings()  # Josev's EXI layer reads its logging switches from here (./.env, environment)
    request = json.loads(open(request_path).read())
    EXI().set_exi_codec(ExificientEXICodec())
    ns = Namespace.ISO_V2_MSG_DEF
    result: dict = {"signed": {}, "verified": []}

    def signed_message(element, name: str, signature) -> str:
        header = MessageHeader(session_id=request["session_id"].upper(), signature=signature)
        body = Body.parse_obj({name: element.dict()})
        return EXI().to_exi(V2GMessage(header=header, body=body), ns).hex()

    if "key_pem" in request:
        key = load_pem_private_key(request["key_pem"].encode(), password=None)
        auth = AuthorizationReq(id="id1", gen_challenge=bytes.fromhex(request["gen_challenge"]))
        sig = create_signature([(auth.id, EXI().to_exi(auth, ns))], key)
        result["signed"]["authorization"] = signed_message(auth, "AuthorizationReq", sig)
        receipt = MeteringReceiptReq(
            id="id2", session_id=request["session_id"].upper(),
            sa_schedule_tuple_id=request["sa_schedule_tuple_id"],
            meter_info=MeterInfo.parse_obj(request["meter_info"]),
        )
        sig = create_signature([(receipt.id, EXI().to_exi(receipt, ns))], key)
        result["signed"]["metering"] = signed_message(receipt, "MeteringReceiptReq", sig)

    for item in request.get("verify", []):
        msg = EXI().from_exi(bytes.fromhex(item["hex"]), ns)
        element = msg.body.authorization_req if item["kind"] == "authorization" else msg.body.metering_receipt_req
        element_exi = EXI().to_exi(element, ns)
        signature = msg.header.signature
        reference = signature.signed_info.reference[0]
        ok = verify_signature(signature, [(element.id, element_exi)], bytes.fromhex(request["cert_der"]))
        result["verified"].append({
            "ok": bool(ok),
            "digest_match": hashlib.sha256(element_exi).digest() == reference.digest_value,
            "element_exi": element_exi.hex(),
            "signed_info_exi": EXI().to_exi(signature.signed_info, Namespace.XML_DSIG).hex(),
        })

    with open(result_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
