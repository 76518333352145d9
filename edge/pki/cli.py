"""``edge pki create`` and ``edge pki verify-contract``.

``edge pki create --out DIR`` writes the -2 and -20 test PKI in Josev's layout (see edge.pki.testpki).
``edge pki verify-contract CHAIN.pem --roots DIR [--at TIME] [--protocol iso2|iso20] [--emaid E]`` judges a
contract chain (leaf first, then its sub-CAs, PEM or a DER leaf) and prints ``verdict: accept|reject`` and
``response_code: NAME`` (the -2 or -20 name), then the protocol, EMAID, the rule that refused and the reason.
``edge pki ocsp --pki DIR`` writes fresh OCSP responses for the SECC leaves, which ``edge secc --tls`` staples.
``edge pki verify-chain --kind secc|oem|cps|contract CHAIN.pem --roots DIR`` judges any other chain of the
ISO 15118 PKIs by its own profile. Exit status: 0 accept, 1 reject, 2 unusable input (one line on stderr, no
traceback).

``--roots`` is a Josev-layout PKI folder (the roots of that kind from every protocol folder are trusted: MO and
V2G roots for contracts, V2G roots for SECC and CPS chains, OEM roots for OEM chains), one protocol folder of
it, or any folder of PEM/DER root certificates (*.pem, *.der, *.crt, *.cer). A folder without any root is a
trust store with no trust anchor: the chain is judged (rejected with NoCertificateAvailable), not refused as input.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable
from pathlib import Path

from cryptography import x509

from edge.pki.chain import (
    CertificateChainValidator,
    ChainKind,
    ContractProtocol,
    parse_certificates,
    protocol_for_leaf,
)
from edge.pki.testpki import (
    DEFAULT_PASSWORD,
    FOLDERS,
    OCSP_VALIDITY,
    PkiPaths,
    create_test_pki,
    write_secc_ocsp_responses,
)

ROOT_SUFFIXES = (".pem", ".der", ".crt", ".cer")
EXIT_ACCEPT, EXIT_REJECT, EXIT_UNUSABLE = 0, 1, 2


class UnusableInput(Exception):
    """Input the command cannot work with; its message is the one line the user sees."""


def parse_time(text: str) -> dt.datetime:
    """ISO 8601 (``2025-06-01``, ``2025-06-01T12:00:00Z``, with an offset); a time without zone is UTC."""
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UnusableInput(f"--at: not an ISO 8601 time: {text!r} (e.g. 2025-06-01T12:00:00Z)") from None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def load_chain(path: Path) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """The leaf (first certificate) and the rest of a chain file."""
    try:
        certs = parse_certificates(path.read_bytes())
    except OSError as e:
        raise UnusableInput(f"cannot read {path}: {e.strerror or e}") from None
    except ValueError:
        raise UnusableInput(f"{path} holds no PEM or DER certificate") from None
    if not certs:
        raise UnusableInput(f"{path} holds no certificate")
    return certs[0], certs[1:]


#: the root certificates of a Josev-layout protocol folder that anchor each kind of chain
ROOTS_BY_KIND = {
    ChainKind.CONTRACT: ("moRootCA", "v2gRootCA"),
    ChainKind.SECC: ("v2gRootCA",),
    ChainKind.CPS: ("v2gRootCA",),
    ChainKind.OEM: ("oemRootCA",),
}


def load_roots(path: Path, kind: ChainKind = ChainKind.CONTRACT) -> list[x509.Certificate]:
    """Trust anchors from a Josev-layout PKI, one of its protocol folders, or a folder of root files (an empty
    list when the folder holds none: a trust-store state the verdict reports, not unusable input)."""
    if not path.is_dir():
        raise UnusableInput(f"--roots {path}: not a folder")
    if (path / "certs").is_dir() and path.name in FOLDERS:  # one protocol folder, e.g. PKI/iso15118_2
        folders = [PkiPaths(path.parent, path.name)]
    else:
        folders = [PkiPaths(path, name) for name in FOLDERS if (path / name / "certs").is_dir()]
    roots: list[x509.Certificate] = []
    files = [paths.cert(name) for paths in folders for name in ROOTS_BY_KIND[kind]] if folders else \
        sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in ROOT_SUFFIXES)
    for file in files:
        if not file.is_file():
            continue  # a Josev folder without that root: fewer anchors, judged as such
        try:
            roots.extend(parse_certificates(file.read_bytes()))
        except OSError as e:
            raise UnusableInput(f"--roots: cannot read {file}: {e.strerror or e}") from None
        except ValueError:
            raise UnusableInput(f"--roots: {file} is not a certificate file") from None
    return roots


def verify_contract(args: argparse.Namespace) -> int:
    """The ``edge pki verify-contract`` command (after argument parsing)."""
    return _verify(args, ChainKind.CONTRACT)


def verify_chain(args: argparse.Namespace) -> int:
    """The ``edge pki verify-chain`` command."""
    return _verify(args, ChainKind(args.kind))


def _verify(args: argparse.Namespace, kind: ChainKind) -> int:
    leaf, sub_cas = load_chain(args.chain)
    roots = load_roots(args.roots, kind)
    now = parse_time(args.at) if args.at else dt.datetime.now(dt.UTC)
    if args.protocol:
        protocol = ContractProtocol(args.protocol)
    else:
        try:
            protocol = protocol_for_leaf(leaf)
        except ValueError as e:
            raise UnusableInput(f"cannot infer the protocol from the leaf key ({e}); pass --protocol") from None
    verdict = CertificateChainValidator(roots, kind=kind).validate(
        leaf, sub_cas, protocol=protocol, now=now, expected_emaid=getattr(args, "emaid", None)
    )
    print(f"verdict: {'accept' if verdict.ok else 'reject'}")
    print(f"response_code: {verdict.response_code.value}")
    print(f"protocol: {protocol.value}")
    print(f"kind: {kind.value}")
    if kind is ChainKind.CONTRACT:
        print(f"emaid: {verdict.emaid or '-'}")
    print(f"rule: {verdict.rule.name if verdict.rule else '-'}")
    print(f"reason: {verdict.reason}")
    return EXIT_ACCEPT if verdict.ok else EXIT_REJECT


def create(args: argparse.Namespace) -> int:
    """The ``edge pki create`` command."""
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise UnusableInput(f"--out {out}: exists and is not a folder")
    now = parse_time(args.not_before) if args.not_before else None
    try:
        create_test_pki(out, now=now, password=args.password, organization=args.organization, label=args.label)
    except OSError as e:
        raise UnusableInput(f"cannot write the PKI to {out}: {e.strerror or e}") from None
    except ValueError as e:
        raise UnusableInput(str(e)) from None
    for folder, algorithm in FOLDERS.items():
        print(f"{out / (folder + (f'@{args.label}' if args.label else ''))}: {algorithm.value}")
    return EXIT_ACCEPT


def ocsp_responses(args: argparse.Namespace) -> int:
    """The ``edge pki ocsp`` command: fresh OCSP responses for the test PKI's SECC leaves (to staple)."""
    if not args.pki.is_dir():
        raise UnusableInput(f"--pki {args.pki}: not a folder")
    now = parse_time(args.at) if args.at else None
    try:
        written = write_secc_ocsp_responses(args.pki, now=now, password=args.password, revoked=args.revoked,
                                            valid_for=dt.timedelta(days=args.valid_days))
    except (OSError, ValueError, TypeError) as e:
        raise UnusableInput(f"cannot sign OCSP responses with the PKI at {args.pki}: {e}") from None
    if not written:
        raise UnusableInput(f"--pki {args.pki}: no SECC leaf (certs/seccLeafCert.pem) in any protocol folder")
    for path in written:
        print(f"{path}: {'revoked' if args.revoked else 'good'}, current for {args.valid_days:g} day(s)")
    return EXIT_ACCEPT


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a command; unusable input becomes one line on stderr and exit status 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except UnusableInput as e:
            print(f"edge pki: error: {e}", file=sys.stderr)
            return EXIT_UNUSABLE

    return run


def add_pki_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``pki`` with its subcommands to the ``edge`` command line (each sets ``func``)."""
    pki = subparsers.add_parser("pki", help="test PKI and contract certificate chain checks (Plug & Charge)")
    actions = pki.add_subparsers(dest="pki_action", required=True)

    create_p = actions.add_parser("create", help="write a -2 and -20 test PKI in Josev's folder layout")
    create_p.add_argument("--out", type=Path, required=True, help="folder to write (created; files overwritten)")
    create_p.add_argument("--password", default=DEFAULT_PASSWORD, help="private key password (default %(default)s)")
    create_p.add_argument("--not-before", metavar="TIME", help="notBefore of every certificate (default: now)")
    create_p.add_argument("--label", help="write the folders as <folder>@LABEL: a second PKI (another V2G root) "
                          "beside the default one; the charger serves each car the chain of a root it names")
    create_p.add_argument("--organization", default="Switch",
                          help="O of every subject (default %(default)s; give a second PKI its own)")
    create_p.set_defaults(func=_guarded(create))

    verify_p = actions.add_parser("verify-contract", help="validate a contract certificate chain")
    verify_p.add_argument("chain", type=Path, help="PEM file: contract leaf first, then its sub-CAs (or a DER leaf)")
    verify_p.add_argument("--roots", type=Path, required=True,
                          help="Josev-layout PKI folder, or a folder of PEM/DER root certificates")
    verify_p.add_argument("--at", metavar="TIME", help="judge at this ISO 8601 time (default: now)")
    verify_p.add_argument("--protocol", choices=[p.value for p in ContractProtocol],
                          help="iso2 or iso20 (default: from the leaf's key algorithm)")
    verify_p.add_argument("--emaid", help="the eMAID the car sent; must match the leaf's CN")
    verify_p.set_defaults(func=_guarded(verify_contract))

    ocsp_p = actions.add_parser("ocsp", help="write fresh OCSP responses for the test PKI's SECC certificates "
                                "(what edge secc --tls staples), signed by CPO Sub-CA 2")
    ocsp_p.add_argument("--pki", type=Path, required=True, help="the PKI folder (edge pki create's layout)")
    ocsp_p.add_argument("--at", metavar="TIME", help="thisUpdate (default: now)")
    ocsp_p.add_argument("--valid-days", type=float, default=OCSP_VALIDITY.days,
                        help="days until nextUpdate (default %(default)s)")
    ocsp_p.add_argument("--revoked", action="store_true", help="say the SECC certificate is revoked (tests)")
    ocsp_p.add_argument("--password", default=DEFAULT_PASSWORD, help="private key password (default %(default)s)")
    ocsp_p.set_defaults(func=_guarded(ocsp_responses))

    chain_p = actions.add_parser("verify-chain", help="validate a SECC, OEM provisioning, CPS or contract chain")
    chain_p.add_argument("chain", type=Path, help="PEM file: leaf first, then its sub-CAs (or a DER leaf)")
    chain_p.add_argument("--kind", required=True, choices=[k.value for k in ChainKind],
                         help="which chain: its profile and, from a Josev-layout PKI, which roots anchor it")
    chain_p.add_argument("--roots", type=Path, required=True,
                         help="Josev-layout PKI folder, or a folder of PEM/DER root certificates")
    chain_p.add_argument("--at", metavar="TIME", help="judge at this ISO 8601 time (default: now)")
    chain_p.add_argument("--protocol", choices=[p.value for p in ContractProtocol],
                         help="iso2 or iso20 (default: from the leaf's key algorithm)")
    chain_p.set_defaults(func=_guarded(verify_chain))


def main(argv: list[str] | None = None) -> int:
    """``edge pki ...`` on a parser of its own (tests, or before edge/cli.py wires it)."""
    parser = argparse.ArgumentParser(prog="edge")
    add_pki_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
