"""``edge`` command line: EXI tools, SLAC, the charger (secc) and car (ev) for testbenches, the simulation."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from functools import partial
from pathlib import Path

import exi

V2GTP_PAYLOAD_TYPES = {0x8001, 0x8002, 0x8003, 0x8004, 0x8005, 0x8006, 0x8007, 0x8008}


def strip_v2gtp(data: bytes) -> bytes:
    """Drop an 8-byte V2GTP header (version 0x01, inverse 0xFE, payload type, length) if present."""
    if len(data) >= 8 and data[0] == 0x01 and data[1] == 0xFE:
        length = int.from_bytes(data[4:8], "big")
        if length != len(data) - 8:
            raise ValueError(f"V2GTP header says {length} payload bytes, {len(data) - 8} follow")
        return data[8:]
    return data


def _parse_hex(text: str) -> bytes:
    cleaned = "".join(text.split())
    try:
        return strip_v2gtp(bytes.fromhex(cleaned))
    except ValueError as e:
        raise ValueError(f"not hex EXI: {e}") from None


def _decode_one(proto: str, text: str, fragment: bool) -> str:
    return exi.to_xml(exi.decode(proto, _parse_hex(text), fragment=fragment), proto)


def _encode_one(proto: str, xml: str, fragment: bool) -> str:
    return exi.encode(proto, exi.from_xml(proto, xml, fragment=fragment), fragment=fragment).hex()


def _batch(lines: Iterable[str], fn, proto: str, fragment: bool, key: str) -> int:
    failures = 0
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            out = {key: fn(proto, line, fragment)}
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
            sys.stdout.write(_decode_one(args.proto, text, args.fragment))
        except (exi.ExiError, ValueError) as e:
            print(f"edge exi decode: {e}", file=sys.stderr)
            return 1
        return 0
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
    name, _, value = text.partition("=")
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=SECONDS, got {text!r}") from None


def _secc_command(args: argparse.Namespace) -> int:
    import logging

    import trio

    from edge.secc import run_secc

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        ssl_context = None
        if args.tls or args.tls_only:
            if args.pki is None:
                raise ValueError("--tls needs --pki DIR (a PKI folder, e.g. from `edge pki create`)")
            from edge.v2g.tls import server_context_from_pki

            ssl_context = server_context_from_pki(args.pki, keylog=args.keylog)
        trio.run(partial(run_secc, args.iface, args.port, ssl_context=ssl_context, tls_only=args.tls_only))
    except ValueError as e:
        print(f"edge secc: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def _ev_command(args: argparse.Namespace) -> int:
    import trio

    from edge.ev.din import DinCar
    from edge.secc import run_ev_din

    car = DinCar(soc=args.soc, target_soc=args.target_soc)
    try:
        trio.run(run_ev_din, args.iface, car)
    except (OSError, TimeoutError, RuntimeError) as e:
        print(json.dumps({"ok": False, "error": str(e), "messages": car.log}))
        return 1
    print(json.dumps({"ok": car.stopped_cleanly, "energy_wh": round(car.energy_wh, 2), "soc": round(car.soc, 2),
                      "messages": len(car.log)}))
    return 0 if car.stopped_cleanly else 1


def _simulate_command(args: argparse.Namespace) -> int:
    from edge.simulate import main as simulate

    return simulate(args.json)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="edge", description="ISO 15118 charger controller")
    sub = ap.add_subparsers(dest="command", required=True)
    exi_p = sub.add_parser("exi", help="decode/encode V2G EXI messages")
    exi_sub = exi_p.add_subparsers(dest="action", required=True)
    protos = [p for p in exi.PROTOCOLS]
    for action in ("decode", "encode"):
        p = exi_sub.add_parser(action, help=f"{action} one message (or --batch: one per stdin line)")
        p.add_argument("--proto", required=True, choices=protos)
        p.add_argument("--fragment", action="store_true", help="an EXI fragment (signed element)")
        p.add_argument("--batch", action="store_true",
                       help="one item per stdin line; one JSON object per output line")
        if action == "decode":
            p.add_argument("hex", nargs="?", help="EXI as hex (a V2GTP header is stripped); else stdin")
    exi_p.set_defaults(func=_exi_command)
    slac_p = sub.add_parser("slac", help="run one ISO 15118-3 SLAC match on an interface (testbench use)")
    slac_p.add_argument("role", choices=["evse", "ev"])
    slac_p.add_argument("--iface", required=True, help="the PLC modem's Ethernet interface")
    slac_p.add_argument("--atten-offset", type=float, default=0.0, help="dB added to measured attenuation (EVSE)")
    slac_p.add_argument("--timer", type=_timer_arg, action="append", metavar="NAME=SECONDS",
                        help="override a SLAC timer, e.g. TT_EVSE_SLAC_init=20 (repeatable)")
    slac_p.set_defaults(func=_slac_command)
    secc_p = sub.add_parser("secc", help="SDP and V2G sessions on an interface (no SLAC), simulated hardware")
    secc_p.add_argument("--iface", required=True)
    secc_p.add_argument("--port", type=int, default=0, help="TCP port (default: any free port, announced by SDP)")
    secc_p.add_argument("--tls", action="store_true", help="offer TLS too (ISO 15118-2: TLS 1.2, the SECC chain)")
    secc_p.add_argument("--tls-only", action="store_true", help="offer only TLS")
    secc_p.add_argument("--pki", type=Path, help="PKI folder (Josev's layout, as `edge pki create` writes)")
    secc_p.add_argument("--keylog", type=Path, help="write TLS session keys here (NSS key log, for Wireshark)")
    secc_p.set_defaults(func=_secc_command)
    ev_p = sub.add_parser("ev", help="the simulated car: SDP, TCP, one DIN DC session against any charger")
    ev_p.add_argument("--iface", required=True)
    ev_p.add_argument("--soc", type=float, default=40.0)
    ev_p.add_argument("--target-soc", type=float, default=41.0)
    ev_p.set_defaults(func=_ev_command)
    sim_p = sub.add_parser("simulate", help="charger and simulated car in one process over loopback")
    sim_p.add_argument("--json", action="store_true", help="print the summary as JSON")
    sim_p.set_defaults(func=_simulate_command)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
