"""edge.config: the daemon's TOML configuration (schema, problems with their places, wiring helpers) and
`edge config check`."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from edge import config as cfgmod
from edge.cli import main
from edge.config import (
    ConfigError,
    ConfigProblem,
    EdgeConfig,
    key_lines,
    load_config,
    parse_config,
)
from edge.v2g import timers as v2g_timers
from edge.v2g.timers import PowerSafetyTimers
from slac.timers import SlacTimers

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "config" / "edge.toml"

MINIMAL = """\
[station]
id = "cs-1"

[[evse]]
id = 1
interface = "eth1"
"""


def problems(text: str, **kw) -> list[tuple[str, int | None, str]]:
    """(path, line, message) of every problem ``text`` has; fails when it has none."""
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.toml", **kw)
    return [(p.path, p.line, p.message) for p in info.value.problems]


def places(text: str, **kw) -> list[tuple[str, int | None]]:
    return [(path, line) for path, line, _ in problems(text, **kw)]


def message(text: str, path: str) -> str:
    found = [m for p, _, m in problems(text) if p == path]
    assert len(found) == 1, problems(text)
    return found[0]


# ------------------------------------------------------------------------------------------- the example


def test_example_parses_with_two_evses_ocpp_trace_and_a_quirk() -> None:
    cfg = load_config(EXAMPLE, check_files=False)
    assert isinstance(cfg, EdgeConfig)
    assert [e.id for e in cfg.evses] == [1, 2]
    first, second = cfg.evses
    assert first.tls.enabled and first.pnc and first.tls.pki == Path("/etc/edge/pki")
    assert first.plc_interface == "eth1" and first.protocols == ("iso20-dc", "iso20-ac", "iso2", "din")
    assert second.protocols == ("iso2", "din") and second.port == 15118 and not second.hardware.bidirectional
    assert cfg.ocpp is not None and cfg.ocpp.url == "wss://csms.example.com/ocpp" and cfg.ocpp.security_profile == 2
    assert cfg.ocpp.station_id == cfg.station.id == "edge-0001"
    assert cfg.trace.enabled and cfg.trace_dir == Path("/var/lib/edge/traces")
    assert [(q.name, q.match.evccid_prefix, q.deviations) for q in cfg.quirks] == [
        ("bpt-negative-limits", "DEEVX", ("negative_discharge_limits",))]


def _every_key() -> set[str]:
    keys: set[str] = set(cfgmod.TOP_LEVEL)
    for cls in (cfgmod.StationConfig, cfgmod.EvseSection, cfgmod.HardwareSection, cfgmod.TlsSection,
                cfgmod.SlacSection, cfgmod.OcppSection, cfgmod.TraceSection, cfgmod.QuirkProfile, cfgmod.QuirkMatch):
        keys |= {f for f in cls.__dataclass_fields__}
    return keys | set(cfgmod.EVSE_TIMER_KINDS) | set(cfgmod.SLAC_TIMER_KINDS)


def test_example_shows_every_option_and_every_deviation() -> None:
    text = EXAMPLE.read_text()
    shown = set(re.findall(r"^#? ?([A-Za-z_]\w*) = ", text, re.M)) | set(re.findall(r"\[+([\w.]+)\]+", text))
    shown |= {part for name in list(shown) for part in name.split(".")}
    shown |= set(re.findall(r"\{ (\w+) = ", text))  # the inline match table
    shown |= set(re.findall(r"\b(mac_oui|sap_namespace)\b", text))
    missing = _every_key() - shown - {"evses", "quirks"}  # the fields behind [[evse]] and [[quirk]]
    assert not missing, f"config/edge.toml does not show {sorted(missing)}"
    for deviation in cfgmod.DEVIATIONS:
        assert deviation in text


def _uncomment_defaults(text: str) -> str:
    """The example with every commented ``# key = value`` line that claims to be the default uncommented
    (not those whose own comment or the comment line above says "(default: ...)": examples)."""
    out: list[str] = []
    previous = ""
    for line in text.splitlines():
        found = re.match(r"# ([A-Za-z_]\w* = .*?)(\s+#.*)?$", line)
        if found and "(default:" not in (found.group(2) or "") and "(default:" not in previous:
            line = found.group(1)
        out.append(line)
        previous = line
    return "\n".join(out) + "\n"


def test_example_commented_lines_are_the_defaults() -> None:
    text = EXAMPLE.read_text()
    uncommented = _uncomment_defaults(text)
    assert uncommented.count("\n") == text.count("\n") and uncommented != text
    assert "\nsequence_timeout = 60.0" in uncommented and "\nTT_EVSE_SLAC_init = 50.0" in uncommented
    plain, explicit = parse_config(text), parse_config(uncommented)
    first = explicit.evses[0]
    assert first.timers and first.slac.timers  # the overrides are there, each equal to its default
    assert cfgmod.session_timers(first) == {"iso20-dc": v2g_timers.ISO20, "iso20-ac": v2g_timers.ISO20,
                                            "iso2": v2g_timers.ISO2, "din": v2g_timers.DIN}
    assert cfgmod.power_safety_timers(first) == PowerSafetyTimers()
    assert cfgmod.slac_timers(first) == SlacTimers()
    without_timers = replace(first, timers=plain.evses[0].timers,
                             slac=replace(first.slac, timers=plain.evses[0].slac.timers))
    assert replace(explicit, evses=(without_timers, *explicit.evses[1:])) == plain


def test_example_check_files_refuses_the_missing_pki_folder() -> None:
    found = problems(EXAMPLE.read_text(), check_files=True)
    assert [(p, m) for p, _, m in found] == [("evse[0].tls.pki", "no folder /etc/edge/pki")]


def test_minimal_config_takes_the_documented_defaults() -> None:
    cfg = parse_config(MINIMAL)
    evse = cfg.evses[0]
    assert cfg.ocpp is None and cfg.quirks == () and cfg.station.state_dir == Path("/var/lib/edge")
    assert evse.protocols == cfgmod.DEFAULT_PROTOCOLS and evse.port == 0 and evse.watchdog == 1.0
    assert evse.hardware.adapter == "simulated" and evse.hardware.bidirectional
    assert not evse.tls.enabled and evse.tls.client_auth == "required" and not evse.pnc
    assert cfg.trace.max_bytes == 512 * 1024 * 1024 and cfg.trace.max_age_days == 30.0


def test_defaults_agree_with_the_modules_they_stand_for() -> None:
    from edge.ocpp.connection import OCPP_SUBPROTOCOLS
    from edge.pki.testpki import ISO2_FOLDER, ISO20_ED448_FOLDER, ISO20_FOLDER
    from edge.trace import DEFAULT_TRACE_DIR, TraceDirectory
    from edge.v2g.charger import DEFAULT_PROTOCOLS

    assert cfgmod.DEFAULT_PROTOCOLS == tuple(p.name for p in DEFAULT_PROTOCOLS)
    assert cfgmod.OCPP_VERSIONS == OCPP_SUBPROTOCOLS
    assert cfgmod.PKI_PROTOCOL_FOLDERS == (ISO2_FOLDER, ISO20_FOLDER, ISO20_ED448_FOLDER)
    cfg = parse_config(MINIMAL)
    assert cfg.trace_dir == DEFAULT_TRACE_DIR
    assert cfg.trace.max_bytes == TraceDirectory(Path("x")).max_bytes_total
    assert cfg.trace.max_age_days == TraceDirectory(Path("x")).max_age_days


# ------------------------------------------------------------------------------- problems and their places


def test_several_problems_at_once_each_with_its_path_and_line() -> None:
    text = """\
[station]
id = "cs-1"
modle = "x"

[[evse]]
id = 1
interface = "eth1"
port = "8080"

[[evse]]
id = 2
interface = "eth2"
protocols = ["iso2",
             "iso20-dcc"]

[evse.tls]
enabled = "yes"
"""
    assert places(text) == [("station.modle", 3), ("evse[0].port", 8), ("evse[1].protocols[1]", 14),
                            ("evse[1].tls.enabled", 17)]
    assert message(text, "evse[0].port") == "expected an integer, got a string ('8080')"
    assert message(text, "evse[1].tls.enabled") == "expected true or false, got a string ('yes')"


def test_error_text_is_one_problem_per_line_file_line_path_message() -> None:
    text = MINIMAL + "watchdog = 0\nport = 70000\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "edge.toml")
    assert str(info.value).splitlines() == [
        "edge.toml:7: evse[0].watchdog: must be above 0, got 0",
        "edge.toml:8: evse[0].port: must be a TCP port (0-65535), got 70000"]
    assert ConfigProblem("", None, "broken").format("f.toml") == "f.toml: broken"


def test_a_missing_required_key_is_placed_at_its_table() -> None:
    text = '[station]\nid = "cs-1"\n\n[[evse]]\nid = 1\n\n[[evse]]\ninterface = "eth2"\n'
    assert places(text) == [("evse[0].interface", 4), ("evse[1].id", 7)]
    assert message(text, "evse[1].id").startswith("required: ")


def test_toml_syntax_errors_keep_tomllib_s_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config('[station]\nid = "cs-1"\nport = \n', "bad.toml")
    (problem,) = info.value.problems
    assert problem.line == 3 and problem.path == "" and str(info.value) == "bad.toml:3: Invalid value"


def test_unknown_keys_get_a_did_you_mean_or_the_known_keys() -> None:
    text = MINIMAL.replace('interface = "eth1"', 'interfce = "eth1"\nzzz = 1') + "\n[evses]\n"
    found = {path: (line, msg) for path, line, msg in problems(text)}
    assert found["evse[0].interfce"] == (6, "unknown key; did you mean 'interface'?")
    assert found["evse[0].zzz"][1].startswith("unknown key; known keys here: id, interface, plc_interface")
    assert found["evses"] == (9, "unknown key; did you mean 'evse'?")
    assert found["evse[0].interface"][1].startswith("required")


def test_wrong_types_name_the_expected_type() -> None:
    text = MINIMAL + 'watchdog = true\nreceipt_interval = "60"\n[evse.tls]\npki = 3\n[evse.hardware]\nadapter = 1\n'
    assert message(text, "evse[0].watchdog") == "expected a number, got true or false (True)"
    assert message(text, "evse[0].tls.pki") == "expected a path (string), got an integer (3)"
    assert message(text, "evse[0].hardware.adapter") == "expected a string, got an integer (1)"
    assert message(MINIMAL.replace("id = 1", "id = 1.5"), "evse[0].id") == "expected an integer, got a number (1.5)"
    assert message(MINIMAL.replace("id = 1", "id = 0"), "evse[0].id") == "must be at least 1, got 0"
    assert message(MINIMAL.replace("[[evse]]", "[evse]"), "evse").startswith("expected an array of tables")


def test_choices_suggest_the_nearest() -> None:
    text = MINIMAL + '[evse.hardware]\nadapter = "simulted"\n[evse.tls]\nclient_auth = "none"\n'
    assert message(text, "evse[0].hardware.adapter") == ("'simulted' is not one of simulated, external; "
                                                         "did you mean 'simulated'?")
    assert message(text, "evse[0].tls.client_auth") == ("'none' is not one of required, optional; "
                                                        "choose from required, optional")


def test_station_and_an_evse_are_required() -> None:
    assert places("") == [("station", None), ("evse", None)]
    assert [p for p, _ in places('[station]\nid = ""\n')] == ["station.id", "evse"]


# ------------------------------------------------------------------------------------------- protocols


@pytest.mark.parametrize("name", ["din", "iso2", "iso20-dc", "iso20-ac"])
def test_every_implemented_protocol_is_accepted(name: str) -> None:
    cfg = parse_config(MINIMAL + f'protocols = ["{name}"]\n')
    assert [p.name for p in cfgmod.evse_protocols(cfg.evses[0])] == [name]


def test_protocols_are_validated_against_the_sessions() -> None:
    text = MINIMAL + 'protocols = ["iso2", "iso20-wpt", "iso20", "iso2", 7]\n'
    found = [(p, m) for p, _, m in problems(text)]
    assert found == [
        ("evse[0].protocols[1]", "iso20-wpt has no session implementation here; choose from din, iso2, iso20-dc, "
                                 "iso20-ac"),
        ("evse[0].protocols[2]", "unknown protocol 'iso20'; did you mean 'iso2'?"),
        ("evse[0].protocols[3]", "iso2 is listed twice"),
        ("evse[0].protocols[4]", "expected a protocol name (string), got an integer (7)")]
    assert message(MINIMAL + "protocols = []\n", "evse[0].protocols").startswith("offer at least one protocol")


def test_protocol_priority_order_is_kept() -> None:
    cfg = parse_config(MINIMAL + 'protocols = ["din", "iso20-ac", "iso2"]\n')
    assert [p.name for p in cfgmod.evse_protocols(cfg.evses[0])] == ["din", "iso20-ac", "iso2"]


# ---------------------------------------------------------------------------------------- cross-field rules

PKI = '[evse.tls]\nenabled = true\npki = "/pki"\n'


def test_tls_needs_a_pki_and_only_needs_enabled() -> None:
    text = MINIMAL + "[evse.tls]\nenabled = true\n"
    assert places(text) == [("evse[0].tls.pki", 7)]
    assert message(MINIMAL + "[evse.tls]\nonly = true\n", "evse[0].tls.only") == "needs tls.enabled = true"
    parse_config(MINIMAL + PKI)


def test_tls_only_cannot_serve_din() -> None:
    text = MINIMAL + 'protocols = ["iso2", "din"]\n' + PKI + "only = true\n"
    assert message(text, "evse[0].protocols").startswith("DIN SPEC 70121 has no TLS")
    parse_config(MINIMAL + 'protocols = ["iso2"]\n' + PKI + "only = true\n")


def test_pnc_needs_tls_and_pki_unless_the_testbench_override() -> None:
    no_tls = [(p, m.partition(" (")[0]) for p, _, m in problems(MINIMAL + "pnc = true\n")]
    assert no_tls == [("evse[0].pnc", "Plug & Charge needs tls.enabled = true"),
                      ("evse[0].pnc", "Plug & Charge needs tls.pki")]
    bench = MINIMAL + "pnc = true\npnc_without_tls = true\n"
    assert message(bench, "evse[0].pnc").startswith("Plug & Charge needs tls.pki")
    cfg = parse_config(bench + '[evse.tls]\npki = "/pki"\n')  # the documented testbench override
    assert cfg.evses[0].pnc_without_tls and cfgmod.evse_config(cfg, cfg.evses[0]).pnc_without_tls
    parse_config(MINIMAL + "pnc = true\nreceipt_interval = 30\n" + PKI)
    assert message(MINIMAL + "pnc_without_tls = true\n", "evse[0].pnc_without_tls") == "only matters with pnc = true"
    assert message(MINIMAL + "receipt_interval = 30\n", "evse[0].receipt_interval").endswith("needs pnc = true")


def test_duplicate_evse_ids_and_interfaces() -> None:
    text = MINIMAL + '\n[[evse]]\nid = 1\ninterface = "eth1"\nplc_interface = "eth1"\n'
    assert places(text) == [("evse[1].id", 9), ("evse[1].interface", 10), ("evse[1].plc_interface", 11)]
    assert message(text, "evse[1].id") == "EVSE id 1 is used by evse[0] too"
    assert message(text, "evse[1].plc_interface") == "'eth1' is evse[0]'s interface"
    parse_config(MINIMAL + 'plc_interface = "eth1"\n\n[[evse]]\nid = 2\ninterface = "eth2"\nplc_interface = "eth2"\n')
    # loopback has no SDP: testbench EVSEs may share it
    shared = '[station]\nid = "s"\n[[evse]]\nid = 1\ninterface = "lo"\n[[evse]]\nid = 2\ninterface = "lo"\n'
    assert [e.interface for e in parse_config(shared).evses] == ["lo", "lo"]


def test_hardware_adapter_options_belong_to_their_adapter() -> None:
    external = MINIMAL + '[evse.hardware]\nadapter = "external"\n'
    assert message(external, "evse[0].hardware.socket").startswith("required with adapter = \"external\"")
    assert parse_config(external + 'socket = "/run/b.sock"\n').evses[0].hardware.socket == Path("/run/b.sock")
    assert places(external + 'socket = "/run/b.sock"\nbidirectional = false\n') == [
        ("evse[0].hardware.bidirectional", 10)]
    assert places(MINIMAL + '[evse.hardware]\nsocket = "/run/b.sock"\n') == [("evse[0].hardware.socket", 8)]


def test_slac_options_need_a_plc_interface() -> None:
    assert places(MINIMAL + "[evse.slac]\nvalidate = true\n") == [("evse[0].slac", 7)]
    cfg = parse_config(MINIMAL + 'plc_interface = "eth1"\n[evse.slac]\nvalidate = true\natten_offset_db = 3\n')
    options = cfgmod.slac_matcher_options(cfg.evses[0])
    assert options["validate"] is True and options["atten_offset_db"] == 3.0


def test_ocpp_security_profiles() -> None:
    station = MINIMAL + "[ocpp]\n"
    assert message(station + 'url = "ws://csms/ocpp"\nsecurity_profile = 2\n',
                   "ocpp.security_profile") == "profile 2 is TLS: ocpp.url must be wss://"
    assert places(station + 'url = "wss://csms/ocpp"\nsecurity_profile = 3\n') == [("ocpp.cert", 7), ("ocpp.key", 7)]
    assert places(station + 'url = "wss://csms/ocpp"\ncert = "c.pem"\n') == [("ocpp.key", 7)]
    assert places(station + 'url = "ws://csms/ocpp"\nca = "ca.pem"\n') == [("ocpp.ca", 9)]
    assert message(station + 'url = "http://csms/ocpp"\n', "ocpp.url").startswith("must be a ws:// or wss:// URL")
    assert message(station + 'url = "wss://c/o"\nsecurity_profile = 4\n', "ocpp.security_profile").startswith(
        "must be 1 (Basic auth)")
    assert places(station + 'url = "wss://c/o"\nversions = ["ocpp1.6", "ocpp2.1"]\n') == [("ocpp.versions[0]", 9)]
    assert message(station, "ocpp.url").startswith("required")
    cfg = parse_config(station + 'url = "wss://c/o"\nsecurity_profile = 3\ncert = "c.pem"\nkey = "k.pem"\n')
    assert cfg.ocpp is not None and cfg.ocpp.security_profile == 3


def test_trace_tls_keylog_needs_the_key_logs() -> None:
    text = MINIMAL + PKI + "[trace]\ntls_keylog = true\n"
    assert message(text, "trace.tls_keylog") == ("the traces copy the TLS key log: set tls.keylog = true on "
                                                 "evse[0]")
    cfg = parse_config(MINIMAL + PKI + "keylog = true\n[trace]\ntls_keylog = true\n")
    assert cfgmod.keylog_path(cfg, cfg.evses[0]) == Path("/var/lib/edge/tls-keys/evse1.keylog")
    assert message(MINIMAL + "[trace]\nenabled = false\ntls_keylog = true\n",
                   "trace.tls_keylog") == "needs trace.enabled = true"


# ---------------------------------------------------------------------------------------------- timers


def test_evse_timer_overrides_use_the_real_names() -> None:
    text = MINIMAL + "[evse.timers]\nsequence_timout = 30\npre_charge = -1\ncommunication_watchdog = 2\n" \
                     "ramp_down = false\n"
    found = {p: (line, m) for p, line, m in problems(text)}
    assert found["evse[0].timers.sequence_timout"][0] == 8
    assert "did you mean 'sequence_timeout'?" in found["evse[0].timers.sequence_timout"][1]
    assert found["evse[0].timers.pre_charge"] == (9, "must be positive, got -1")
    assert found["evse[0].timers.communication_watchdog"] == (10, "set it as evse[0].watchdog")
    assert found["evse[0].timers.ramp_down"][1] == "expected a number of seconds, got true or false (False)"


def test_timer_overrides_reach_every_protocol_and_the_safety_layer() -> None:
    cfg = parse_config(MINIMAL + 'protocols = ["iso20-dc", "din"]\nwatchdog = 0.5\n[evse.timers]\n'
                                 "sequence_timeout = 30\nenergized_watchdog = false\nac_communication_watchdog = 2\n")
    evse = cfg.evses[0]
    per_protocol = cfgmod.session_timers(evse)
    assert set(per_protocol) == {"iso20-dc", "din"}
    assert per_protocol["din"].sequence_timeout == 30 and per_protocol["din"].performance == v2g_timers.DIN.performance
    assert per_protocol["iso20-dc"].pre_charge == 8.0  # -20's own default kept
    assert cfgmod.power_safety_timers(evse) == PowerSafetyTimers(communication_watchdog=0.5, energized_watchdog=None,
                                                                 ac_communication_watchdog=2)
    assert cfgmod.session_timers(parse_config(MINIMAL).evses[0]) == {}


def test_slac_timer_overrides_use_the_slac_names() -> None:
    base = MINIMAL + 'plc_interface = "eth1"\n[evse.slac.timers]\n'
    cfg = parse_config(base + "TT_EVSE_SLAC_init = 20\nC_sequ_retry = 3\n")
    assert cfgmod.slac_timers(cfg.evses[0]) == SlacTimers(TT_EVSE_SLAC_init=20, C_sequ_retry=3)
    found = {p: m for p, _, m in problems(base + "TT_EVSE_SLAC_int = 20\nC_sequ_retry = 2.5\n")}
    assert "did you mean 'TT_EVSE_SLAC_init'?" in found["evse[0].slac.timers.TT_EVSE_SLAC_int"]
    assert found["evse[0].slac.timers.C_sequ_retry"] == "expected an integer, got a number (2.5)"


# ---------------------------------------------------------------------------------------------- quirks

QUIRK = '\n[[quirk]]\nname = "q"\n'


def test_unknown_deviations_list_the_known_ones() -> None:
    text = MINIMAL + QUIRK + 'match = { evccid_prefix = "WVW" }\ndeviations = ["negative_discharge_limit", "x"]\n'
    found = {p: (line, m) for p, line, m in problems(text)}
    assert found["quirk[0].deviations[0]"] == (11, "unknown deviation 'negative_discharge_limit'; did you mean "
                                                   "'negative_discharge_limits'? known: negative_discharge_limits, "
                                                   "inverted_targets")
    assert found["quirk[0].deviations[1]"][1] == "unknown deviation 'x'; known: negative_discharge_limits, " \
                                                 "inverted_targets"


def test_quirk_match_rules() -> None:
    two = MINIMAL + QUIRK + 'match = { evccid_prefix = "W", mac_oui = "AA:BB:CC" }\ndeviations = ["inverted_targets"]\n'
    assert message(two, "quirk[0].match") == "exactly one of evccid_prefix, mac_oui, sap_namespace, not 2"
    bad_oui = MINIMAL + QUIRK + 'match = { mac_oui = "AABBCC" }\ndeviations = ["negative_discharge_limits"]\n'
    assert {p for p, _ in places(bad_oui)} == {"quirk[0].match.mac_oui"}
    assert "expected three bytes" in problems(bad_oui)[0][2]
    by_oui = MINIMAL + QUIRK + 'match = { mac_oui = "AA:BB:CC" }\ndeviations = ["negative_discharge_limits"]\n'
    profile = cfgmod.car_quirks(parse_config(by_oui)).profiles[0]  # matched when the car connects
    assert (profile.kind, profile.value, profile.signs.negative_discharge_limits) == ("mac_oui", "AA:BB:CC", True)
    assert cfgmod.sign_quirks(parse_config(by_oui)).cars == ()  # not an EVCCID profile
    no_deviations = MINIMAL + QUIRK + 'match = { evccid_prefix = "W" }\n'
    assert message(no_deviations, "quirk[0].deviations").startswith("required")
    twice = MINIMAL + (QUIRK + 'match = { evccid_prefix = "W" }\ndeviations = ["inverted_targets"]\n') * 2
    assert places(twice) == [("quirk[1].name", 14)]


def test_quirk_profiles_become_sign_quirks_and_evse_deviations_the_signs() -> None:
    from edge.v2g.power import SignConvention, SignQuirks

    text = MINIMAL + 'deviations = ["negative_discharge_limits"]\n' + QUIRK + \
        'match = { evccid_prefix = "WVW" }\ndeviations = ["negative_discharge_limits", "inverted_targets"]\n'
    cfg = parse_config(text)
    both = SignConvention(negative_discharge_limits=True, inverted_targets=True)
    assert cfgmod.sign_quirks(cfg) == SignQuirks((("WVW", both),))
    assert cfgmod.sign_quirks(cfg).for_car("WVW123") == both and cfgmod.sign_quirks(cfg).for_car("X") is None
    assert cfgmod.evse_signs(cfg.evses[0]) == SignConvention(negative_discharge_limits=True)
    config = cfgmod.evse_config(cfg, cfg.evses[0])
    assert config.sign_quirks == cfgmod.sign_quirks(cfg) and config.evse_id == "DE*EDG*E0001*1"


# --------------------------------------------------------------------------------------------- files


def test_check_files_needs_a_pki_with_protocol_folders_and_the_ocpp_files(pki: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    ocpp = '[ocpp]\nurl = "wss://c/o"\nca = "{}"\n'
    good = MINIMAL + f'[evse.tls]\nenabled = true\npki = "{pki}"\n' + ocpp.format(pki / "iso15118_2" / "x.pem")
    assert load_config_text(good, tmp_path, check_files=False).evses[0].tls.pki == pki
    assert places(good, check_files=True) == [("ocpp.ca", 12)]
    bad = MINIMAL + f'[evse.tls]\nenabled = true\npki = "{empty}"\n'
    assert message_with_files(bad, "evse[0].tls.pki").startswith(f"{empty} has none of the PKI folders")
    missing = MINIMAL + f'[evse.tls]\nenabled = true\npki = "{tmp_path / "nope"}"\n'
    assert message_with_files(missing, "evse[0].tls.pki") == f"no folder {tmp_path / 'nope'}"
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    parse_config(MINIMAL + f'[evse.tls]\nenabled = true\npki = "{pki}"\n' + ocpp.format(ca), check_files=True)


def load_config_text(text: str, folder: Path, **kw) -> EdgeConfig:
    path = folder / "edge.toml"
    path.write_text(text)
    return load_config(path, **kw)


def message_with_files(text: str, path: str) -> str:
    found = [m for p, _, m in problems(text, check_files=True) if p == path]
    assert len(found) == 1
    return found[0]


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    cfg = load_config_text(MINIMAL + '[evse.tls]\npki = "pki"\n[ocpp]\nurl = "wss://c/o"\nca = "ca.pem"\n', tmp_path)
    assert cfg.evses[0].tls.pki == tmp_path / "pki" and cfg.ocpp is not None and cfg.ocpp.ca == tmp_path / "ca.pem"
    assert parse_config(MINIMAL + '[evse.tls]\npki = "/abs"\n', base_dir=tmp_path).evses[0].tls.pki == Path("/abs")


# ---------------------------------------------------------------------------------------------- wiring


def test_to_station_settings() -> None:
    cfg = parse_config(MINIMAL.replace('id = "cs-1"', 'id = "cs-1"\nstate_dir = "/tmp/s"\nserial = "42"')
                       + '[ocpp]\nurl = "wss://c/o"\nsecurity_profile = 2\npassword = "pw"\nversions = ["ocpp2.0.1"]\n')
    settings = cfgmod.to_station_settings(cfg)
    assert settings is not None
    assert (settings.url(), settings.state_dir, settings.versions, settings.security_profile, settings.password,
            settings.serial) == ("wss://c/o/cs-1", Path("/tmp/s"), ("ocpp2.0.1",), 2, "pw", "42")
    named = parse_config(MINIMAL + '[ocpp]\nurl = "ws://c/o"\nstation_id = "other"\n')
    assert cfgmod.to_station_settings(named).station_id == "other"  # type: ignore[union-attr]
    assert cfgmod.to_station_settings(parse_config(MINIMAL)) is None


def test_tls_context_and_trace_directory(pki: Path, tmp_path: Path) -> None:
    cfg = parse_config(MINIMAL + f'[evse.tls]\nenabled = true\npki = "{pki}"\nclient_auth = "optional"\n'
                       f'[trace]\ndir = "{tmp_path}"\nmax_bytes = 10000\n')
    assert cfgmod.tls_server_context(cfg, cfg.evses[0]) is not None
    assert cfgmod.tls_server_context(parse_config(MINIMAL), parse_config(MINIMAL).evses[0]) is None
    directory = cfgmod.trace_directory(cfg)
    assert directory is not None and directory.path == tmp_path and directory.max_bytes_total == 10000
    assert cfgmod.trace_directory(parse_config(MINIMAL + "[trace]\nenabled = false\n")) is None


def test_importing_the_config_module_leaves_the_heavy_modules_alone() -> None:
    code = ("import sys, edge.config; heavy = [m for m in ('edge.v2g.charger', 'edge.ocpp.station', 'edge.trace', "
            "'exi', 'trio', 'cryptography') if m in sys.modules]; print(heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------- lines


def test_key_lines_follow_tables_arrays_and_multiline_values() -> None:
    text = """\
top = "a = [b]"   # not a table
[[evse]]
protocols = [
  "iso2",   # first
  "din",
]
notes = '''
[not.a.table]
fake = 1
'''
tls.pki = "p"
[evse.tls]
"quoted.key" = 1
[[evse]]
id = 2
"""
    lines = key_lines(text)
    assert lines["top"] == 1 and lines["evse[0]"] == 2 and lines["evse[0].protocols"] == 3
    assert lines["evse[0].protocols[0]"] == 4 and lines["evse[0].protocols[1]"] == 5
    assert "not.a.table" not in lines and "evse[0].fake" not in lines
    assert lines["evse[0].tls.pki"] == 11 and lines["evse[0].tls"] == 11
    assert lines["evse[0].tls.quoted.key"] == 13 and lines["evse[1]"] == 14 and lines["evse[1].id"] == 15
    assert cfgmod.line_of(lines, "evse[1].hardware.socket") == 14


# ------------------------------------------------------------------------------------------------- CLI


def test_cli_ok_line_and_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(MINIMAL + '[ocpp]\nurl = "ws://csms:9000/ocpp"\n')
    assert main(["config", "check", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: OK (1 EVSE, OCPP to ws://csms:9000/ocpp)\n"
    assert main(["config", "check", "--no-files", str(EXAMPLE)]) == 0
    assert capsys.readouterr().out == f"{EXAMPLE}: OK (2 EVSEs, OCPP to wss://csms.example.com/ocpp)\n"
    path.write_text(MINIMAL)
    assert main(["config", "check", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: OK (1 EVSE, no OCPP)\n"


def test_cli_prints_every_problem_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(MINIMAL + "prot = 1\n[evse.tls]\nenabled = true\n")
    assert main(["config", "check", str(path)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{path}:7: evse[0].prot: unknown key; did you mean 'port'?",
        f"{path}:8: evse[0].tls.pki: TLS needs pki: a PKI folder (e.g. from `edge pki create`)"]
    assert main(["config", "check", str(EXAMPLE)]) == 1  # its PKI folder is not on this machine
    assert "evse[0].tls.pki: no folder /etc/edge/pki" in capsys.readouterr().out


def test_cli_unreadable_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(tmp_path / "missing.toml")]) == 2
    assert "No such file or directory" in capsys.readouterr().err
    assert main(["config", "check", str(tmp_path)]) == 2  # a folder
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe")
    assert main(["config", "check", str(binary)]) == 2
    assert capsys.readouterr().out == ""
