from __future__ import annotations

import io
import json
import sys

import pytest

from edge.cli import main, strip_v2gtp
from tests.vectors import load_vectors

CURRENT_DEMAND = next(v for v in load_vectors() if v["protocol"] == "iso2" and v["message"] == "CurrentDemandReq")


def run(argv: list[str], stdin: str = "", capsys=None) -> tuple[int, str, str]:
    old = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        rc = main(argv)
    finally:
        sys.stdin = old
    out, err = capsys.readouterr()
    return rc, out, err


def test_decode_prints_xml_and_encode_reverses_it(capsys) -> None:
    rc, xml, _ = run(["exi", "decode", "--proto", "iso2", CURRENT_DEMAND["hex"]], capsys=capsys)
    assert rc == 0 and "CurrentDemandReq" in xml and "EVTargetCurrent" in xml
    rc, hexout, _ = run(["exi", "encode", "--proto", "iso2"], xml, capsys)
    assert rc == 0 and hexout.strip() == CURRENT_DEMAND["hex"]


def test_decode_strips_v2gtp_header(capsys) -> None:
    payload = bytes.fromhex(CURRENT_DEMAND["hex"])
    framed = bytes([1, 0xFE, 0x80, 0x01]) + len(payload).to_bytes(4, "big") + payload
    assert strip_v2gtp(framed) == payload
    rc, xml, _ = run(["exi", "decode", "--proto", "iso2", framed.hex()], capsys=capsys)
    assert rc == 0 and "CurrentDemandReq" in xml


def test_batch_reports_errors_per_line(capsys) -> None:
    lines = f"{CURRENT_DEMAND['hex']}\nzz\n8000\n"
    rc, out, _ = run(["exi", "decode", "--proto", "iso2", "--batch"], lines, capsys)
    rows = [json.loads(x) for x in out.splitlines()]
    assert rc == 1 and len(rows) == 3
    assert "xml" in rows[0] and "error" in rows[1] and "error" in rows[2]
    xml_line = rows[0]["xml"].replace("\n", "")
    rc, out, _ = run(["exi", "encode", "--proto", "iso2", "--batch"], xml_line + "\n<bad/>\n", capsys)
    rows = [json.loads(x) for x in out.splitlines()]
    assert rows[0] == {"hex": CURRENT_DEMAND["hex"]} and "error" in rows[1]


def test_bad_input_is_a_clear_error(capsys) -> None:
    rc, _, err = run(["exi", "decode", "--proto", "din", "80"], capsys=capsys)
    assert rc == 1 and "truncated" in err
    with pytest.raises(SystemExit):
        run(["exi", "decode", "--proto", "nope", "80"], capsys=capsys)


def test_simulate_scenarios_run_every_scenario_cleanly(capsys) -> None:
    rc, out, _ = run(["simulate", "--scenarios", "--json"], capsys=capsys)
    summaries = {s["scenario"].split(" (")[0]: s for s in map(json.loads, out.splitlines())}
    assert rc == 0 and list(summaries) == ["DIN SPEC 70121 DC", "ISO 15118-2 DC EIM", "ISO 15118-2 AC EIM",
                                           "ISO 15118-2 DC PnC over TLS", "ISO 15118-20 DC PnC over TLS 1.3",
                                           "ISO 15118-20 DC_BPT dynamic over TLS 1.3: charge, discharge, charge",
                                           "ISO 15118-20 AC_BPT dynamic: charge, then discharge",
                                           "ISO 15118-20 AC scheduled",
                                           "ISO 15118-20 DC_BPT dynamic, the CSMS decides",
                                           "ISO 15118-2 DC with strangers on the link",
                                           "ISO 15118-2 DC, the car freezes mid-charge"]
    for summary in summaries.values():  # the test CSMS got every session as one transaction, nothing left
        assert "boot Accepted; 1 transaction(s)" in summary["ocpp"], summary["ocpp"]
        assert "1 Started" in summary["ocpp"] and "1 Ended" in summary["ocpp"]
        assert "seqNo contiguous from 0" in summary["ocpp"] and "still queued" not in summary["ocpp"]
    frozen = summaries.pop("ISO 15118-2 DC, the car freezes mid-charge")
    assert frozen["ok"] and not frozen["clean_stop"] and frozen["outcome"] == "power cut by the watchdog"
    assert "(within the 1.5 s watchdog + ramp)" in frozen["notes"][0]
    strangers = summaries["ISO 15118-2 DC with strangers on the link"]
    assert strangers["connections"] == 4 and strangers["notes"][0].endswith("power kept")
    assert "second car (CableCheckRes failed: FAILED)" in strangers["notes"][0]
    central = summaries["ISO 15118-20 DC_BPT dynamic, the CSMS decides"]
    assert "the CSMS sent 1 SetChargingProfile" in central["ocpp"] and central["notes"][1] == "the CSMS's setpoints"
    for name in ("ISO 15118-20 DC_BPT dynamic over TLS 1.3: charge, discharge, charge",
                 "ISO 15118-20 AC_BPT dynamic: charge, then discharge",
                 "ISO 15118-20 DC_BPT dynamic, the CSMS decides"):
        bpt = summaries[name]  # the meter counted both ways; the car saw the same
        assert bpt["ok"] and bpt["exported_wh"] > 1 and bpt["imported_wh"] > bpt["exported_wh"]
        assert bpt["notes"][0].startswith(("DC_BPT dynamic", "AC_BPT dynamic")), bpt["notes"]
    for summary in summaries.values():
        assert summary["ok"]
        assert summary["clean_stop"] and summary["energy_wh"] > 1 and summary["soc"][1] > summary["soc"][0]
        assert summary["slowest"][0].endswith("Req")  # reported; timing itself is for bench/, not tests
    assert summaries["ISO 15118-2 DC EIM"]["notes"] == ["1 renegotiation(s)"]
    ac = summaries["ISO 15118-2 AC EIM"]
    assert ac["connections"] == 2 and ac["notes"] == ["resumed with OK_OldSessionJoined"]
    pnc = summaries["ISO 15118-2 DC PnC over TLS"]["notes"]
    assert pnc[0] == "contract UKSWI123456791A accepted" and int(pnc[1].split()[0]) >= 1
    assert summaries["ISO 15118-20 DC PnC over TLS 1.3"]["notes"] == [
        "TLSv1.3, car certificate presented", "authorization PnC", "Authorize: OK (CSMS: Accepted)"]
    assert pnc[2] == "Authorize: OK (CSMS: Accepted)"  # the CSMS decided (C07), not the charger alone
    assert "1 Authorize" in summaries["ISO 15118-2 DC PnC over TLS"]["ocpp"]


@pytest.mark.parametrize("argv, message", [
    (["--tls"], "--tls needs --pki DIR"),
    (["--pnc"], "--pnc needs --pki DIR"),
    (["--tls", "--pki", "/nonexistent/pki"], "/nonexistent/pki"),
])
def test_secc_configuration_errors_are_one_line(capsys, argv: list[str], message: str) -> None:
    rc, _, err = run(["secc", "--iface", "lo", *argv], capsys=capsys)
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_charger_that_resets_the_car_is_a_one_line_failure() -> None:
    """``edge ev`` once printed a BrokenResourceError traceback when the charger reset the connection:
    network and session failures (also inside trio's exception groups) are one line; bugs are not hidden."""
    import trio

    from edge.cli import _session_failure

    reset = trio.BrokenResourceError()
    reset.__cause__ = ConnectionResetError(104, "Connection reset by peer")
    assert _session_failure(reset) == "connection to the charger broken: [Errno 104] Connection reset by peer"
    group = ExceptionGroup("nursery", [reset, TimeoutError("no SDP response on ev0 after 50 requests")])
    assert _session_failure(group) == ("connection to the charger broken: [Errno 104] Connection reset by peer; "
                                       "no SDP response on ev0 after 50 requests")
    assert _session_failure(ExceptionGroup("nursery", [reset, KeyError("bug")])) is None
    assert _session_failure(ZeroDivisionError()) is None
