"""``edge`` command line: EXI tools, SLAC, the charger (secc) and car (ev) for testbenches, the simulation,
a test CSMS (csms), session traces (trace list/show/pcap)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from functools import partial
from pathlib import Path

import exi
from edge.pki.cli import add_pki_parser

V2GTP_PAYLOAD_TYPES = {0x8001, 0x8002, 0x8003, 0x8004, 0x8005, 0x8006, 0x8007, 0x8008}


def strip_v2gtp(data: bytes) -> bytes:
    """Drop an 8-byte V2GTP header (version 0x01, inverse 0xFE, payload type, length) if present."""
    from edge.exi_detect import split_v2gtp

    return split_v2gtp(data)[1]


def _decode_one(proto: str | None, text: str, fragment: bool) -> tuple[str, str]:
    """(XML, the protocol it was decoded as). Without ``proto`` the protocol is found (edge.exi_detect); with a
    wrong one the error says what the bytes look like."""
    from edge.exi_detect import check_payload_type, decodes, detect, parse_hex, split_v2gtp

    payload_type, payload = split_v2gtp(parse_hex(text))
    if proto is None:
        if fragment:
            raise ValueError("--fragment needs --proto (a fragment cannot be recognised)")
        found = detect(payload, payload_type)
        if not found:
            where = f" (V2GTP payload type {payload_type:#06x})" if payload_type is not None else ""
            raise ValueError(f"these bytes decode as none of the V2G protocols{where}")
        proto = found[0]
    else:
        check_payload_type(proto, payload_type)
    found: list[exi.Deviation] = []
    try:
        message = exi.decode(proto, payload, fragment=fragment, deviations=found)
        if found and not fragment:  # bytes of another protocol can pass with deviations: name it if so
            better = [p for p in detect(payload, payload_type) if p != proto and decodes(p, payload)]
            if better:
                raise ValueError(f"these bytes are not {proto} EXI ({found[0]}); they decode as {better[0]}: "
                                 f"--proto {better[0]}")
        for deviation in found:  # decoded all the same: say what is outside the schema, on stderr
            print(f"edge: deviation from the {proto} schema: {deviation}", file=sys.stderr)
    except exi.DecodeError as e:
        others = [] if fragment else [p for p in detect(payload, payload_type) if p != proto]
        if others:
            raise ValueError(f"these bytes are not {proto} EXI ({e}); they decode as {others[0]}: "
                             f"--proto {others[0]}") from None
        raise
    return exi.to_xml(message, proto), proto


def _encode_one(proto: str, xml: str, fragment: bool) -> str:
    return exi.encode(proto, exi.from_xml(proto, xml, fragment=fragment), fragment=fragment).hex()


def _batch(lines: Iterable[str], fn, proto: str | None, fragment: bool, key: str) -> int:
    failures = 0
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            result = fn(proto, line, fragment)
            out = {key: result[0], "proto": result[1]} if isinstance(result, tuple) else {key: result}
        except (exi.ExiError, ValueError) as e:
            failures += 1
            out = {"error": str(e)}
        sys.stdout.write(json.dumps(out) + "\n")
    return 1 if failures else 0


def _exi_command(args: argparse.Namespace) -> int:
    if args.action == "decode":
        if args.batch:
            return _batch(sys.stdin, _decode_one, args.proto, args.fragment, "xml")
        text = args.hex if args.hex is not None else sys.stdin.read()
        try:
            xml, proto = _decode_one(args.proto, text, args.fragment)
        except (exi.ExiError, ValueError) as e:
            print(f"edge exi decode: {e}", file=sys.stderr)
            return 1
        if args.proto is None:
            print(f"edge exi decode: decoded as {proto}", file=sys.stderr)
        sys.stdout.write(xml)
        return 0
    if args.proto is None:
        print("edge exi encode: --proto is required (which schema the XML is for)", file=sys.stderr)
        return 2
    if args.batch:
        return _batch(sys.stdin, _encode_one, args.proto, args.fragment, "hex")
    try:
        print(_encode_one(args.proto, sys.stdin.read(), args.fragment))
    except (exi.ExiError, ValueError) as e:
        print(f"edge exi encode: {e}", file=sys.stderr)
        return 1
    return 0


async def slac_match(role: str, link, *, timers=None, atten_offset_db: float = 0.0) -> dict:
    """One SLAC match on ``link`` as ``role`` ("evse" or "ev"); the result as a JSON-able dict."""
    import trio

    from slac.ev import EvMatcher
    from slac.evse import EvseMatcher, Matched
    from slac.link import run_ev, run_evse
    from slac.timers import SlacTimers

    timers = timers or SlacTimers()
    start = trio.current_time()
    if role == "evse":
        result = await run_evse(link, EvseMatcher(link.mac, timers=timers, atten_offset_db=atten_offset_db))
    else:
        result = await run_ev(link, EvMatcher(link.mac, timers=timers))
    out: dict = {"role": role, "iface": link.iface, "mac": link.mac.hex(":"),
                 "duration_s": round(trio.current_time() - start, 3), "matched": isinstance(result, Matched)}
    if isinstance(result, Matched):
        out.update({("ev_mac" if role == "evse" else "evse_mac"): result.peer_mac.hex(":"),
                    "nid": result.nid.hex(), "attenuation_db": round(result.attenuation_db, 1)})
    else:
        out["reason"] = result.reason
    return out


def _slac_command(args: argparse.Namespace) -> int:
    import trio

    from slac.ifaces import wait_link_up
    from slac.link import RawLink
    from slac.timers import SlacTimers

    try:
        timers = SlacTimers().with_overrides(**dict(args.timer or []))
        trio.run(wait_link_up, args.iface, 10.0)  # the modem's Ethernet side must be up
        link = RawLink(args.iface)
    except (ValueError, TimeoutError) as e:
        print(f"edge slac {args.role}: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"edge slac {args.role}: cannot open a raw socket on {args.iface}: {e.strerror or e}", file=sys.stderr)
        return 2
    with link:
        out = trio.run(lambda: slac_match(args.role, link, timers=timers, atten_offset_db=args.atten_offset))
    print(json.dumps(out))
    return 0 if out["matched"] else 1


def _timer_arg(text: str) -> tuple[str, float]:
    """NAME=VALUE for a SLAC timer (seconds) or counter (C_*: a whole number)."""
    from slac.timers import SlacTimers

    name, _, value = text.partition("=")
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=SECONDS (or C_NAME=COUNT), got {text!r}") from None
    kind = SlacTimers.__dataclass_fields__.get(name)  # type: ignore[attr-defined]
    if kind is not None and kind.type in (int, "int"):
        if not number.is_integer():
            raise argparse.ArgumentTypeError(f"{name} is a count: a whole number, not {value}")
        return name, int(number)
    return name, number


def _require_interface(name: str) -> None:
    import socket

    try:
        socket.if_nametoindex(name)
    except OSError:
        raise ValueError(f"no network interface {name!r}") from None


def _secc_command(args: argparse.Namespace) -> int:
    import logging

    import trio

    from edge.chargingpoint import ChargingPoint
    from edge.controller import ChargingController, load_setpoints
    from edge.hardware import SimulatedCharger, bidirectional_charger
    from edge.secc import run_secc_until_signal
    from edge.v2g.charger import EvseConfig, parse_protocols
    from edge.v2g.net import InterfaceInUse
    from edge.v2g.power import SignConvention, SignQuirks

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    log = logging.getLogger("edge.secc")
    try:
        ssl_context = None
        if args.tls or args.tls_only:
            if args.pki is None:
                raise ValueError("--tls needs --pki DIR (a PKI folder, e.g. from `edge pki create`)")
            from edge.v2g.tls import ClientAuth, server_context_combined

            # one TLS port: -2 cars get TLS 1.2 and the P-256 chain, -20 cars TLS 1.3 and a -20 chain
            ssl_context = server_context_combined(args.pki, client_auth=ClientAuth(args.client_auth),
                                                  keylog=args.keylog)
        _require_interface(args.iface)
        from edge.v2g.timers import PowerSafetyTimers

        safety = PowerSafetyTimers()
        if args.watchdog is not None:
            if args.watchdog <= 0:
                raise ValueError("--watchdog must be a positive number of seconds")
            safety = PowerSafetyTimers(communication_watchdog=args.watchdog)
        protocols = parse_protocols(args.protocols) if args.protocols else None
        controller = ChargingController(script=load_setpoints(args.setpoints) if args.setpoints else ())
        board = SimulatedCharger() if args.charge_only else bidirectional_charger()
        point = ChargingPoint(board, name=args.iface, timers=safety)
        config = EvseConfig(receipt_interval=args.receipt_interval, point=point, controller=controller,
                            signs=SignConvention(negative_discharge_limits=args.negative_discharge_limits),
                            sign_quirks=SignQuirks(tuple((prefix, SignConvention(negative_discharge_limits=True))
                                                         for prefix in args.negative_discharge_limits_for or ())))
        if args.pnc:
            if args.pki is None:
                raise ValueError("--pnc needs --pki DIR (the MO/V2G roots and the local issuer)")
            from edge.pki.plug_and_charge import LocalPlugAndCharge

            config.pnc = LocalPlugAndCharge.from_pki_folder(args.pki)
        if args.trace_dir is not None:  # every session recorded (edge trace list/show read them)
            from edge.trace import EvseTrace, TraceDirectory

            config.trace = EvseTrace(TraceDirectory(args.trace_dir, clock=trio.current_time), "evse1", args.iface)
        station = _ocpp_station(args, [(1, config.controller, board, point)]) if args.csms else None
        if station is not None and config.pnc is not None:  # the CSMS authorizes contracts (C07)
            config.pnc = station.use_pnc(config.pnc)
        stopped_by = trio.run(partial(run_secc_until_signal, args.iface, args.port, config=config,
                                      protocols=protocols, ssl_context=ssl_context, tls_only=args.tls_only,
                                      station=station))
    except Exception as e:  # a bad option or interface, another server on it: one line, exit 2
        message = _expected(e, lambda leaf: str(leaf) if isinstance(leaf, ValueError | InterfaceInUse) else None)
        if message is None:
            raise
        print(f"edge secc: {message}", file=sys.stderr)
        return 2
    log.info("stopped (%s); power off on every charging point", stopped_by)
    return 0


def _ocpp_station(args: argparse.Namespace, evses: list):
    """The OCPP station of ``edge secc --csms``: one EVSE per (id, controller, board, charging point)."""
    from edge.ocpp.bridge import hardware_meter
    from edge.ocpp.station import EvseLink, OcppStation, StationSettings

    versions = tuple(v.strip() for v in args.ocpp_versions.split(","))
    if not set(versions) <= {"ocpp2.1", "ocpp2.0.1"} or not versions:
        raise ValueError(f"--ocpp-versions: choose from ocpp2.1, ocpp2.0.1, not {args.ocpp_versions!r}")
    if not args.csms.startswith(("ws://", "wss://")):
        raise ValueError(f"--csms must be a ws:// or wss:// URL, not {args.csms!r}")
    settings = StationSettings(args.csms, args.station_id or f"edge-{args.iface}", args.state_dir, versions,
                               security_profile=args.security_profile, password=args.ocpp_password,
                               ca_file=args.ocpp_ca, cert_file=args.ocpp_cert, key_file=args.ocpp_key)
    settings.ssl_context()  # a wrong profile or missing certificate is an error now, not at the first connect
    links = []
    for evse_id, controller, board, point in evses:
        max_power = board.dc_limits().max_power if board.dc_limits() else board.ac_limits().max_power
        links.append(EvseLink(evse_id, controller, hardware_meter(board, lambda p=point: p.mode), max_power))
    return OcppStation(settings, links)


def _ev_car(args: argparse.Namespace):
    """The simulated car the ``edge ev`` options describe; ValueError for options that do not fit."""
    from edge.ev.base import QUIRK_PROFILES
    from edge.ev.din import DinCar
    from edge.ev.iso2 import ContractCredentials, Iso2Car

    for name in ("soc", "target_soc", "pause_at_soc", "renegotiate_at_soc", "min_soc"):
        level = getattr(args, name)
        if level is not None and not 0 <= level <= 100:
            raise ValueError(f"--{name.replace('_', '-')} must be a state of charge in % (0-100), not {level:g}")
    for name in ("pause_s", "capacity_kwh", "max_power_kw", "max_discharge_kw", "transfer_s"):
        amount, may_be_zero = getattr(args, name), name == "pause_s"
        if amount is not None and (amount < 0 or (amount == 0 and not may_be_zero)):
            raise ValueError(f"--{name.replace('_', '-')} must be {'not negative' if may_be_zero else 'positive'}")
    if (args.payment == "pnc" or args.tls) and args.pki is None:
        raise ValueError("--payment pnc and --tls need --pki DIR (the contract and the V2G root)")
    if args.protocol != "iso20":
        extras = [flag for flag, value in (("--service", args.service), ("--control", args.control),
                                           ("--min-soc", args.min_soc), ("--max-power-kw", args.max_power_kw),
                                           ("--max-discharge-kw", args.max_discharge_kw),
                                           ("--transfer-s", args.transfer_s)) if value is not None]
        if extras:
            raise ValueError(f"{', '.join(extras)} are ISO 15118-20 options: add --protocol iso20")
    common = {"soc": args.soc, "target_soc": args.target_soc, "quirks": QUIRK_PROFILES[args.quirks],
              "capacity_wh": args.capacity_kwh * 1000}
    if args.protocol == "din":
        extras = [flag for flag, on in (("--mode ac", args.mode == "ac"), ("--payment pnc", args.payment == "pnc"),
                                        ("--pause-at-soc", args.pause_at_soc is not None),
                                        ("--renegotiate-at-soc", args.renegotiate_at_soc is not None)) if on]
        if extras:
            raise ValueError(f"DIN SPEC 70121 is DC with external payment only: {', '.join(extras)} "
                             "need --protocol iso2")
        return DinCar(**common)
    if args.protocol == "iso20":
        from edge.ev.iso20 import Iso20Car, Iso20ContractCredentials

        service = args.service or args.mode
        if args.mode == "ac" and not service.startswith("ac"):
            raise ValueError(f"--mode ac and --service {service} disagree (ac or ac_bpt is AC)")
        contract20 = Iso20ContractCredentials.from_pki(args.pki, args.pki_folder) if args.payment == "pnc" else None
        optional = {name: value for name, value in (
            ("min_soc", args.min_soc), ("transfer_s", args.transfer_s),
            ("max_power", args.max_power_kw * 1000 if args.max_power_kw is not None else None),
            ("max_discharge_power", args.max_discharge_kw * 1000 if args.max_discharge_kw is not None else None))
            if value is not None}
        return Iso20Car(service=service, control=args.control or "scheduled", authorization=args.payment,
                        contract=contract20, pause_at_soc=args.pause_at_soc, renegotiate_at_soc=args.renegotiate_at_soc,
                        **optional, **common)
    contract = ContractCredentials.from_pki(args.pki) if args.payment == "pnc" else None
    return Iso2Car(mode=args.mode, payment=args.payment, contract=contract, pause_at_soc=args.pause_at_soc,
                   renegotiate_at_soc=args.renegotiate_at_soc, **common)


def _expected(e: BaseException, describe) -> str | None:
    """``describe(leaf)`` for ``e``, or for every exception in its group (trio nurseries wrap them) joined
    in one line; None when any of them is not an expected failure (a bug: let its traceback show)."""
    if isinstance(e, BaseExceptionGroup):
        parts = [_expected(leaf, describe) for leaf in e.exceptions]
        return None if any(p is None for p in parts) else "; ".join(dict.fromkeys(parts))  # type: ignore[arg-type]
    return describe(e)


def _session_failure(e: BaseException) -> str | None:
    """What went wrong in one line, when ``e`` is a failure of the session or the network rather than a
    bug of ours (None then)."""
    import trio

    if isinstance(e, BaseExceptionGroup):
        return _expected(e, _session_failure)
    if isinstance(e, trio.BrokenResourceError):  # the charger reset or closed the connection mid-write
        return f"connection to the charger broken: {e.__cause__ or e or 'reset'}"
    if isinstance(e, trio.ClosedResourceError):
        return "connection to the charger closed"
    if isinstance(e, OSError | TimeoutError | RuntimeError):
        return str(e) or type(e).__name__
    return None


#: exit codes of ``edge ev`` stopped early: by a signal (128 + its number, as shells report it), by --timeout
EV_EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143, "timeout": 124}


def _ev_logging(verbosity: int) -> None:
    """``-v``: the car's notes and the message log (names and times); ``-vv``: each message's content too.
    On stderr: stdout carries only the JSON summary."""
    import logging

    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")


def _ev_command(args: argparse.Namespace) -> int:
    import trio

    from edge.ev.run import EvRun, run_ev_until_signal

    _ev_logging(args.verbose)
    try:
        _require_interface(args.iface)
        if args.timeout is not None and args.timeout <= 0:
            raise ValueError("--timeout must be a positive number of seconds")
        if args.timeout_factor <= 0:
            raise ValueError("--timeout-factor must be positive")
        car = _ev_car(args)
        ssl_context = None
        if args.tls and args.protocol == "iso20":  # TLS 1.3, presenting the folder's OEM chain
            from edge.v2g.tls import client_context_iso20

            ssl_context = client_context_iso20(args.pki, folder=args.pki_folder)
        elif args.tls:
            from edge.v2g.tls import client_context_from_pki

            ssl_context = client_context_from_pki(args.pki)
    except ValueError as e:
        print(f"edge ev: {e}", file=sys.stderr)
        return 2
    run = EvRun(car)
    try:
        stopped_by = trio.run(partial(run_ev_until_signal, args.iface, run, deadline_s=args.timeout,
                                           ssl_context=ssl_context, pause_s=args.pause_s,
                                           timeout_factor=args.timeout_factor))
    except KeyboardInterrupt:  # Ctrl-C before the signal receiver was open (still starting)
        stopped_by = "SIGINT"
    except Exception as e:  # no charger, connection or TLS failure, the charger reset us, session failed
        error = _session_failure(e)
        if error is None:
            raise
        print(json.dumps({**run.summary(), "ok": False, "outcome": "failed", "error": error,
                          "last_requests": car.log[-3:]}))
        return 1
    summary = run.summary()
    if stopped_by == "timeout":
        print(json.dumps({**summary, "ok": False, "outcome": "timeout", "last_requests": car.log[-3:],
                          "error": f"the run did not end within --timeout {args.timeout:g} s"}))
        return EV_EXIT_CODES[stopped_by]
    if stopped_by is not None:
        print(json.dumps({**summary, "ok": False, "outcome": "interrupted", "signal": stopped_by,
                          "last_requests": car.log[-3:]}))
        return EV_EXIT_CODES[stopped_by]
    ok = summary["stopped_cleanly"]
    out = {"ok": ok, "outcome": "completed" if ok else "failed", **summary}
    if not ok:
        out["error"] = summary.get("failure") or (f"authorization refused: {summary['refused']}"
                                                  if summary.get("refused") else "the session did not end cleanly")
    print(json.dumps(out))
    return 0 if ok else 1


def _simulate_command(args: argparse.Namespace) -> int:
    if args.scenarios:
        from edge.simulate import main as simulate

        return simulate(args.json)
    from edge.mission import main as mission

    return mission(as_json=args.json, csms_url=args.csms, use_csms=not args.no_csms, out_dir=args.out,
                   loopback=args.loopback)


def _csms_command(args: argparse.Namespace) -> int:
    from edge.ocpp.csms import main as csms

    return csms(args)


def _trace_command(args: argparse.Namespace) -> int:
    """``edge trace list [DIR]``: one line per session trace; ``edge trace show FILE``: its timeline; ``edge trace
    pcap FILE -o OUT``: its capture."""
    from edge import trace

    if args.action == "list":
        directory = args.dir if args.dir is not None else trace.DEFAULT_TRACE_DIR
        if not directory.is_dir():
            print(f"edge trace list: no directory {directory}", file=sys.stderr)
            return 2
        paths = trace.TraceDirectory(directory).traces()
        for line in trace.list_lines(paths):
            print(line)
        if not paths:
            print(f"edge trace list: no traces in {directory}", file=sys.stderr)
        return 0
    if args.action == "pcap":
        return _trace_pcap(args.file, args.output)
    if args.action == "plot":
        return _trace_plot(args.file, args.output)
    try:
        reader = trace.show(args.file, sys.stdout, full=args.full, as_json=args.json)
    except OSError as e:
        print(f"edge trace show: {args.file}: {e.strerror or e}", file=sys.stderr)
        return 2
    if reader.truncated_at is not None:  # what a crash (or a trace still being written) leaves: not an error
        print(f"edge trace show: the file ends inside a record at byte {reader.truncated_at} of {reader.size} "
              "(cut: every complete record before it is shown)", file=sys.stderr)
    if reader.error is not None:
        print(f"edge trace show: {reader.error}; the records after it are not shown", file=sys.stderr)
        return 1
    return 0


def _trace_plot(path: Path, output: Path) -> int:
    """``edge trace plot FILE -o OUT.svg|png``: power, voltage, current and SoC over the session."""
    from edge.trace_plot import PlotUnavailable, plot

    try:
        data = plot(path, output)
    except (PlotUnavailable, ValueError) as e:
        print(f"edge trace plot: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"edge trace plot: {e.filename or path}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(f"{output}: {len(data.present_power.t)} samples from {data.source}, {len(data.soc.t)} SoC values")
    return 0


def _trace_pcap(path: Path, output: Path) -> int:
    """``edge trace pcap FILE -o OUT``: the trace as a pcapng capture (a cut trace gives what it has)."""
    import logging

    from edge.trace_pcap import PcapExportError, write_pcapng

    trace_log = logging.getLogger("edge.trace")
    level = trace_log.level
    trace_log.setLevel(logging.ERROR)  # the reader's warning about a corrupt record: reported below, once
    try:
        summary = write_pcapng(path, output)
    except (OSError, PcapExportError) as e:
        text = f"{e.filename}: {e.strerror or e}" if isinstance(e, OSError) and e.filename else str(e)
        print(f"edge trace pcap: {text}", file=sys.stderr)
        return 2
    finally:
        trace_log.setLevel(level)
    if summary.error is not None:
        print(f"edge trace pcap: {path}: {summary.error}; {output} holds the records before it", file=sys.stderr)
        return 2
    if summary.truncated_at is not None:  # a crash (or a trace still being written): not an error
        print(f"edge trace pcap: {path} ends inside a record at byte {summary.truncated_at}; every complete record "
              "before it is exported", file=sys.stderr)
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(summary.packets.items()))
    print(f"{output}: {summary.total_packets} packets ({kinds}), {summary.comments} comments, "
          f"{summary.key_log_lines} TLS key-log lines")
    return 0


def _status_command(args: argparse.Namespace) -> int:
    """`edge status`: the running daemon's EVSEs and CSMS connection, from its control socket."""
    import json

    import trio

    from edge.control import query

    try:
        answer = trio.run(query, args.socket)
    except (OSError, trio.TooSlowError) as e:
        print(f"edge status: no daemon answers at {args.socket}: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(answer))
        return 0 if answer.get("ok") else 1
    for evse in answer.get("evses", []):
        slac = f", SLAC {evse['slac']}" if evse.get("plc_interface") else ""
        print(f"EVSE {evse['id']} ({evse['interface']}): {evse['state']}, CP {evse.get('cp', '?')}{slac}, "
              f"contactors {evse['contactors']}, "
              f"{evse['voltage_v']} V {evse['current_a']} A, {evse['energy_imported_wh']} Wh in / "
              f"{evse['energy_exported_wh']} Wh out" + (f", session {evse['session']}" if evse["session"] else "")
              + (f", {evse['restarts']} restart(s), last: {evse['last_error']}" if evse["restarts"] else ""))
    ocpp = answer.get("ocpp")
    if ocpp:
        print(f"CSMS {ocpp['url']}: {'online' if ocpp['online'] else 'offline'}, OCPP {ocpp['version']}, "
              f"boot {ocpp['boot']}, {ocpp['queued']} message(s) queued")
    return 0 if answer.get("ok") else 1


def _config_command(args: argparse.Namespace) -> int:
    """`edge config check FILE`: the problems of a daemon configuration, or one line saying what it runs."""
    from edge.config import ConfigError, load_config

    try:
        config = load_config(args.file, check_files=not args.no_files)
    except ConfigError as e:
        print(e)
        return 1
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        print(f"edge config check: {args.file}: {reason}", file=sys.stderr)
        return 2
    count = len(config.evses)
    ocpp = f"OCPP to {config.ocpp.url}" if config.ocpp is not None else "no OCPP"
    print(f"{args.file}: OK ({count} EVSE{'' if count == 1 else 's'}, {ocpp})")
    return 0


def _daemon_logging(verbose: bool) -> None:
    """journald natively (with EVSE, SESSION_ID, EVCCID, PROTOCOL fields) when stderr is the journal's stream,
    else stderr lines with those fields as a prefix."""
    import logging

    from edge.logs import LogFieldsFilter
    from edge.systemd import JournalHandler, journal_stream_connected

    handler: logging.Handler
    if journal_stream_connected():
        handler = JournalHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(fields)s%(message)s"))
        handler.addFilter(LogFieldsFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def _board_command(args: argparse.Namespace) -> int:
    """`edge board simulate --socket PATH`: the board side of the external adapter protocol, simulated."""
    import logging

    import trio

    from edge.hardware.board_sim import main as board_main

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        trio.run(board_main, args.socket, args.charge_only)
    except OSError as e:
        print(f"edge board simulate: {args.socket}: {e.strerror or e}", file=sys.stderr)
        return 2
    return 0


def _run_command(args: argparse.Namespace) -> int:
    """`edge run --config FILE`: the daemon. A configuration it cannot run is one line per problem, exit 1."""
    import trio

    from edge.config import ConfigError, load_config
    from edge.run import StartupError, build_daemon, serve

    try:
        config = load_config(args.config, check_files=True)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 1
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        print(f"edge run: {args.config}: {reason}", file=sys.stderr)
        return 1
    _daemon_logging(args.verbose)
    try:
        daemon = build_daemon(config)
    except StartupError as e:
        print(f"edge run: {args.config}: {e}", file=sys.stderr)
        return 1
    import logging

    stopped_by = trio.run(serve, daemon)
    logging.getLogger("edge.run").info("stopped (%s): power off on every EVSE, transactions ended", stopped_by)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="edge", description="ISO 15118 charger controller")
    sub = ap.add_subparsers(dest="command", required=True)
    exi_p = sub.add_parser("exi", help="decode/encode V2G EXI messages")
    exi_sub = exi_p.add_subparsers(dest="action", required=True)
    protos = [p for p in exi.PROTOCOLS]
    for action in ("decode", "encode"):
        p = exi_sub.add_parser(action, help=f"{action} one message (or --batch: one per stdin line)")
        p.add_argument("--proto", choices=protos, help="the schema" + (" (decode: found from the bytes when left "
                                                                       "out; said on stderr)" if action == "decode"
                                                                       else " (required)"))
        p.add_argument("--fragment", action="store_true", help="an EXI fragment (signed element)")
        p.add_argument("--batch", action="store_true",
                       help="one item per stdin line; one JSON object per output line")
        if action == "decode":
            p.add_argument("hex", nargs="?", help="EXI as hex (a V2GTP header is stripped); else stdin")
    exi_p.set_defaults(func=_exi_command)
    slac_p = sub.add_parser("slac", help="run one ISO 15118-3 SLAC match on an interface (testbench use)")
    slac_roles = slac_p.add_subparsers(dest="role", required=True)
    for role, what in (("evse", "the charger's side: listen for a car's CM_SLAC_PARM.REQ, match it"),
                       ("ev", "the car's side: start the match, sound, pick the charger with the least attenuation")):
        role_p = slac_roles.add_parser(role, help=what, description=f"One SLAC match as {what}; the result as JSON "
                                                                    "(exit 0 on a match, 1 without).")
        role_p.add_argument("--iface", required=True, help="the PLC modem's Ethernet interface")
        if role == "evse":
            role_p.add_argument("--atten-offset", type=float, default=0.0,
                                help="dB added to the measured attenuation (board and cable calibration)")
        role_p.add_argument("--timer", type=_timer_arg, action="append", metavar="NAME=VALUE",
                            help="override a SLAC timer in seconds (e.g. TT_EVSE_SLAC_init=20) or a counter C_* "
                                 "(a whole number); repeatable")
        role_p.set_defaults(func=_slac_command, atten_offset=0.0)
    secc_p = sub.add_parser("secc", help="SDP and V2G sessions on an interface (no SLAC), simulated hardware")
    secc_p.add_argument("--iface", required=True)
    secc_p.add_argument("--port", type=int, default=0, help="TCP port (default: any free port, announced by SDP)")
    secc_p.add_argument("--tls", action="store_true", help="offer TLS too (ISO 15118-2: TLS 1.2, the SECC chain)")
    secc_p.add_argument("--tls-only", action="store_true", help="offer only TLS")
    secc_p.add_argument("--pki", type=Path, help="PKI folder (Josev's layout, as `edge pki create` writes)")
    secc_p.add_argument("--keylog", type=Path, help="write TLS session keys here (NSS key log, for Wireshark)")
    secc_p.add_argument("--client-auth", choices=["required", "optional"], default="required",
                        help="ISO 15118-20 over TLS 1.3: must the car present its certificate (default: required)")
    secc_p.add_argument("--pnc", action="store_true",
                        help="offer Plug & Charge over TLS: contracts checked against the PKI's MO/V2G roots, "
                             "certificate installation answered locally")
    secc_p.add_argument("--receipt-interval", type=float, metavar="S",
                        help="PnC: ask for a signed MeteringReceipt every S seconds of charging")
    secc_p.add_argument("--watchdog", type=float, metavar="S",
                        help="DC: current to 0 and contactors open when the car sends nothing valid for S seconds "
                             "during energy transfer (default 1)")
    secc_p.add_argument("--protocols", metavar="LIST",
                        help="protocols offered, in priority order, from din, iso2, iso20-dc, iso20-ac "
                             "(default: iso20-dc,iso20-ac,iso2,din; the car's priorities decide among them)")
    secc_p.add_argument("--setpoints", type=Path, metavar="FILE",
                        help="a script of power commands: JSON list of {\"at\": s, \"target_w\": W, \"max_w\": W, "
                             "\"min_w\": W}, seconds from the start of energy transfer; import +, export - "
                             "(-20 dynamic control follows the target; other modes get the bounds)")
    secc_p.add_argument("--charge-only", action="store_true",
                        help="simulate a board that cannot export (default: a bidirectional board, so -20 cars "
                             "are offered DC_BPT/AC_BPT as well)")
    secc_p.add_argument("--negative-discharge-limits", action="store_true",
                        help="send discharge limits as negative numbers (a car quirk; default: positive magnitudes)")
    secc_p.add_argument("--negative-discharge-limits-for", action="append", metavar="EVCCID_PREFIX",
                        help="the same for the -20 cars whose EVCCID starts with this (repeatable; each use is "
                             "logged); the car quirk profiles of the daemon's config will declare these")
    status_p = sub.add_parser("status", help="the running daemon's EVSEs and CSMS connection (its control socket)")
    status_p.add_argument("--socket", type=Path, default=Path("/run/edge/control.sock"),
                          help="the daemon's control socket (default: /run/edge/control.sock)")
    status_p.add_argument("--json", action="store_true", help="the answer as one JSON object")
    status_p.set_defaults(func=_status_command)
    secc_p.add_argument("--trace-dir", type=Path, metavar="DIR",
                        help="record every session as a trace file here (edge trace list/show DIR)")
    ocpp = secc_p.add_argument_group("OCPP (the charger's CSMS)")
    ocpp.add_argument("--csms", metavar="URL", help="connect to this CSMS (ws:// or wss://; the station id is "
                                                    "appended) and report transactions, take profiles")
    ocpp.add_argument("--station-id", help="the charging station's identity (default: edge-IFACE)")
    ocpp.add_argument("--state-dir", type=Path, default=Path("edge-state"),
                      help="where the OCPP queue, transactions and device model live (default: ./edge-state)")
    ocpp.add_argument("--ocpp-versions", default="ocpp2.1,ocpp2.0.1",
                      help="subprotocols offered, preferred first (default: ocpp2.1,ocpp2.0.1)")
    ocpp.add_argument("--security-profile", type=int, choices=[1, 2, 3], default=1,
                      help="1: Basic auth (ws or wss), 2: TLS + Basic auth, 3: mutual TLS (default 1)")
    ocpp.add_argument("--ocpp-password", help="Basic auth password (profiles 1 and 2)")
    ocpp.add_argument("--ocpp-ca", type=Path, help="CA file that signed the CSMS's TLS certificate")
    ocpp.add_argument("--ocpp-cert", type=Path, help="the station certificate (profile 3), PEM")
    ocpp.add_argument("--ocpp-key", type=Path, help="its private key, PEM")
    secc_p.set_defaults(func=_secc_command)
    from edge.ev.base import QUIRK_PROFILES

    ev_p = sub.add_parser("ev", help="the simulated car: SDP, TCP or TLS, one DIN, ISO 15118-2 or -20 session "
                                     "against any charger; prints a JSON summary (exit 0 only for a clean stop)")
    ev_p.add_argument("--iface", required=True, help="the network interface the charger is on (SDP, then TCP/TLS)")
    ev_p.add_argument("--protocol", choices=["din", "iso2", "iso20"], default="iso2",
                      help="DIN SPEC 70121 (DC), ISO 15118-2 or ISO 15118-20 (default: iso2)")
    ev_p.add_argument("--mode", choices=["dc", "ac"], default="dc",
                      help="energy transfer (-2: DC_extended or AC_three_phase_core; -20: the plain service "
                           "unless --service; default: dc)")
    ev_p.add_argument("--service", choices=["dc", "ac", "dc_bpt", "ac_bpt"],
                      help="-20 energy service: a BPT car discharges too, and takes the plain service if the "
                           "charger offers no BPT (default: --mode)")
    ev_p.add_argument("--control", choices=["scheduled", "dynamic"],
                      help="-20 control mode: scheduled (the car follows the charger's schedule) or dynamic (the "
                           "charger sets the power) (default: scheduled)")
    ev_p.add_argument("--payment", choices=["eim", "pnc"], default="eim",
                      help="eim (external identification) or pnc (Plug & Charge contract, needs --pki) "
                           "(default: eim)")
    ev_p.add_argument("--pki", type=Path, metavar="DIR",
                      help="PKI folder in Josev's layout: contract, V2G root, as `edge pki create` writes "
                           "(default: none; needed by --payment pnc and --tls)")
    ev_p.add_argument("--pki-folder", choices=["iso15118_20", "iso15118_20_ed448"], default="iso15118_20",
                      help="-20: which of the PKI's -20 folders the car uses, P-521 or Ed448 (default: iso15118_20)")
    ev_p.add_argument("--tls", action="store_true", help="ask for TLS in SDP, trusting the V2G root of --pki "
                                                         "(default: no TLS)")
    ev_p.add_argument("--capacity-kwh", type=float, default=60.0, metavar="KWH",
                      help="battery capacity in kWh (default: 60)")
    ev_p.add_argument("--soc", type=float, default=40.0, metavar="PCT", help="state of charge at the start, %% "
                                                                              "(default: 40)")
    ev_p.add_argument("--target-soc", type=float, default=41.0, metavar="PCT",
                      help="the car ends the session once charged to this SoC, %% (default: 41)")
    ev_p.add_argument("--min-soc", type=float, metavar="PCT",
                      help="-20: below this SoC the car gives no energy (refuses to discharge), %% (default: 20)")
    ev_p.add_argument("--max-power-kw", type=float, metavar="KW",
                      help="-20: the most power the car takes, kW (default: 150 DC, 11 AC)")
    ev_p.add_argument("--max-discharge-kw", type=float, metavar="KW",
                      help="-20 BPT: the most power the car gives, kW (default: 10)")
    ev_p.add_argument("--transfer-s", type=float, metavar="S",
                      help="-20: end the energy transfer after S seconds, charging or discharging (default: at "
                           "the target SoC)")
    ev_p.add_argument("--pause-at-soc", type=float, metavar="PCT",
                      help="pause the session once at this SoC, %%, then resume it (default: no pause)")
    ev_p.add_argument("--pause-s", type=float, default=2.0, metavar="S",
                      help="seconds between pause and resume (default: 2)")
    ev_p.add_argument("--renegotiate-at-soc", type=float, metavar="PCT",
                      help="ask for a new schedule once at this SoC, %% (default: never)")
    ev_p.add_argument("--quirks", choices=sorted(QUIRK_PROFILES), default="none",
                      help="behave like a real car a charger has to survive; negative-discharge-limits: -20 BPT "
                           "discharge limits as negative numbers (default: none)")
    ev_p.add_argument("--timeout", type=float, metavar="S",
                      help="overall deadline for the whole run in seconds: on expiry a failure summary, exit "
                           "124 (default: none)")
    ev_p.add_argument("--timeout-factor", type=float, default=1.0, metavar="F",
                      help="multiply every response timeout (V2G_EVCC_Msg_Timeout, e.g. 2 s, 0.5 s in the -20 "
                           "charge loop) by F, to loosen them for a slow charger (default: 1)")
    ev_p.add_argument("-v", "--verbose", action="count", default=0,
                      help="on stderr: -v the car's notes and each request/response with its time in s since "
                           "the start; -vv each message's decoded content too, one line each (default: quiet)")
    ev_p.set_defaults(func=_ev_command)
    add_pki_parser(sub)
    sim_p = sub.add_parser("simulate", help="the whole mission: the daemon with two simulated EVSEs, three cars "
                                            "(DIN, -2 Plug & Charge, -20 DC_BPT charge/discharge/charge) and a test "
                                            "CSMS, over loopback")
    sim_p.add_argument("--json", action="store_true", help="print the summary as JSON")
    sim_p.add_argument("--csms", metavar="URL", help="use this CSMS (ws:// or wss://) instead of starting the test "
                                                    "CSMS on loopback")
    sim_p.add_argument("--no-csms", action="store_true", help="no OCPP: contracts are authorized locally")
    sim_p.add_argument("--out", type=Path, metavar="DIR", help="keep the run's configuration, traces and state here "
                                                               "(default: a new folder under /tmp)")
    sim_p.add_argument("--loopback", action="store_true", help="as root too: the cars over loopback (no network "
                                                                "namespaces, no SLAC, no SDP)")
    sim_p.add_argument("--scenarios", action="store_true",
                       help="instead: the eleven single-session scenarios (protocols, pause/resume, strangers, a "
                            "frozen car, the CSMS deciding BPT setpoints), one charging point each")
    sim_p.set_defaults(func=_simulate_command)
    csms_p = sub.add_parser("csms", help="a test OCPP 2.0.1/2.1 CSMS (asyncio, the ocpp package): answers a station, "
                                         "logs every frame as JSON lines, sends scripted CALLs")
    csms_p.add_argument("--port", type=int, required=True,
                        help="TCP port (0: any free one; stdout gets {\"event\": \"listening\", \"port\": P, ...})")
    csms_p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    csms_p.add_argument("--versions", default="ocpp2.1,ocpp2.0.1", metavar="LIST",
                        help="subprotocols accepted, in order of preference; a station offering none is refused "
                             "(default: ocpp2.1,ocpp2.0.1)")
    csms_p.add_argument("--script", type=Path, metavar="FILE",
                        help="JSON {\"exi_response\": B64, \"ocsp_result\": B64, \"steps\": [{\"after\": TRIGGER, "
                             "\"delay\": S, \"action\": NAME, \"payload\": {wire form}} or {..., \"raw\": TEXT} or "
                             "{..., \"close\": true}]}; TRIGGER: Connected, BootAccepted, TransactionEvent:Started|"
                             "Updated|Ended or an action the station sends (each step once per station)")
    csms_p.add_argument("--log", type=Path, metavar="FILE",
                        help="append the JSON-lines log of frames and connection events here (default: stdout)")
    csms_p.add_argument("--boot", default="accepted", metavar="accepted|pending:N|rejected",
                        help="BootNotification answers; pending:N: a station's first N Pending (default: accepted)")
    csms_p.add_argument("--interval", type=int, default=300, metavar="S",
                        help="heartbeat interval of an Accepted boot, seconds (default: 300)")
    csms_p.add_argument("--password", metavar="PW",
                        help="require HTTP Basic auth: the station id as user, this password (else 401)")
    csms_p.add_argument("--tls-cert", type=Path, metavar="F", help="serve wss with this certificate chain (PEM)")
    csms_p.add_argument("--tls-key", type=Path, metavar="F", help="the private key of --tls-cert (PEM)")
    csms_p.add_argument("--client-ca", type=Path, metavar="F",
                        help="mutual TLS: require a client certificate chaining to this CA (security profile 3)")
    csms_p.add_argument("--authorize", default="accepted", metavar="accepted|invalid|FILE.json",
                        help="Authorize answers: Accepted, Invalid, or per idToken from a JSON object "
                             "{idToken: status} (others Unknown) (default: accepted)")
    csms_p.set_defaults(func=_csms_command)
    trace_p = sub.add_parser("trace", help="session traces (CBOR files the charger records per session): "
                                           "list them, show one as a decoded timeline, "
                                           "export one as pcapng")
    trace_sub = trace_p.add_subparsers(dest="action", required=True)
    trace_list = trace_sub.add_parser("list", help="one line per trace: start, EVSE, protocol, duration, "
                                                   "V2G messages, energy, outcome")
    trace_list.add_argument("dir", nargs="?", type=Path, metavar="DIR",
                            help="the trace directory (default: /var/lib/edge/traces)")
    trace_show = trace_sub.add_parser("show", help="one line per record: time since the start, direction, "
                                                   "protocol, message, key fields, response time vs budget")
    trace_show.add_argument("file", type=Path, metavar="FILE")
    trace_show.add_argument("--full", action="store_true",
                            help="every message in full: V2G as XML, OCPP frames as sent, SLAC frames as hex")
    trace_show.add_argument("--json", action="store_true", help="one JSON object per record")
    trace_plot = trace_sub.add_parser("plot", help="power (charge and discharge), voltage, current and SoC over "
                                                   "the session, as SVG or PNG (needs matplotlib: edge[plot])")
    trace_plot.add_argument("file", type=Path, metavar="FILE")
    trace_plot.add_argument("-o", "--output", type=Path, required=True, metavar="OUT",
                            help="the file to write: .svg or .png")
    trace_pcap = trace_sub.add_parser("pcap", help="the trace as a pcapng capture for Wireshark: SLAC, SDP, V2GTP "
                                                   "in TCP, TLS with its keys embedded, OCPP as WebSocket")
    trace_pcap.add_argument("file", type=Path, metavar="FILE")
    trace_pcap.add_argument("-o", "--output", type=Path, required=True, metavar="OUT", help="the pcapng file to write")
    trace_p.set_defaults(func=_trace_command)
    board_p = sub.add_parser("board", help="the board side of the external hardware adapter (edge.hardware.external)")
    board_sub = board_p.add_subparsers(dest="action", required=True)
    board_sim = board_sub.add_parser("simulate", help="a simulated board behind a Unix socket (reference and test "
                                                      "board); stdin lines: plug, unplug, fault CODE TEXT, clear, quit")
    board_sim.add_argument("--socket", type=Path, required=True, help="the Unix socket to listen on")
    board_sim.add_argument("--charge-only", action="store_true", help="a board that cannot export")
    board_p.set_defaults(func=_board_command)
    run_p = sub.add_parser("run", help="the charger daemon: every EVSE of the configuration, its CSMS connection, "
                                       "traces and control socket, until SIGTERM (systemd: Type=notify)")
    run_p.add_argument("--config", type=Path, required=True, metavar="FILE",
                       help="the configuration (config/edge.toml is the documented example)")
    run_p.add_argument("-v", "--verbose", action="store_true", help="debug log lines too")
    run_p.set_defaults(func=_run_command)
    config_p = sub.add_parser("config", help="the daemon's configuration file (config/edge.toml is the example)")
    config_sub = config_p.add_subparsers(dest="action", required=True)
    config_check = config_sub.add_parser("check", help="check a configuration: every problem as FILE:LINE: key: "
                                                       "message on stdout, exit 1; else one OK line, exit 0 "
                                                       "(2: the file cannot be read)")
    config_check.add_argument("file", type=Path, metavar="FILE")
    config_check.add_argument("--no-files", action="store_true",
                              help="do not check that the PKI folders and certificate files exist (another "
                                   "machine's configuration)")
    config_p.set_defaults(func=_config_command)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
