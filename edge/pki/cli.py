"""``edge pki create`` and ``edge pki verify-contract``.

``edge pki create --out DIR`` writes the -2 and -20 test PKI in Josev's layout (see edge.pki.testpki).
``edge pki verify-contract CHAIN.pem --roots DIR [--at TIME] [--protocol iso2|iso20] [--emaid E]`` judges a
contract chain (leaf first, then its sub-CAs, PEM or a DER leaf) and prints ``verdict: accept|reject`` and
``response_code: NAME`` (the -2 or -20 name), then the protocol, EMAID and reason. Exit status: 0 accept,
1 reject, 2 unusable input (one line on stderr, no traceback).

``--roots`` is a Josev-layout PKI folder (its MO and V2G roots of every protocol folder are trusted), one
protocol folder of it, or any folder of PEM/DER root certificates (*.pem, *.der, *.crt, *.cer).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable
from pathlib import Path

from cryptography import x509

from edge.pki.chain import ContractChainValidator, ContractProtocol, parse_certificates, protocol_for_leaf
from edge.pki.store import is_josev_pki, josev_contract_trust_anchors
from edge.pki.testpki import DEFAULT_PASSWORD, FOLDERS, create_test_pki

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


def load_roots(path: Path) -> list[x509.Certificate]:
    """Trust anchors from a Josev-layout PKI, one of its protocol folders, or a folder of root files."""
    if not path.is_dir():
        raise UnusableInput(f"--roots {path}: not a folder")
    try:
        if is_josev_pki(path):
            return josev_contract_trust_anchors(path)
        if (path / "certs").is_dir() and path.name in FOLDERS:  # one protocol folder, e.g. PKI/iso15118_2
            return josev_contract_trust_anchors(path.parent)
    except (OSError, ValueError) as e:
        raise UnusableInput(f"--roots {path}: cannot read the PKI: {e}") from None
    roots: list[x509.Certificate] = []
    for file in sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in ROOT_SUFFIXES):
        try:
            roots.extend(parse_certificates(file.read_bytes()))
        except (OSError, ValueError):
            raise UnusableInput(f"--roots: {file} is not a certificate file") from None
    if not roots:
        raise UnusableInput(f"--roots {path}: no certificate files ({', '.join(ROOT_SUFFIXES)}) and no Josev layout")
    return roots


def verify_contract(args: argparse.Namespace) -> int:
    """The ``edge pki verify-contract`` command (after argument parsing)."""
    leaf, sub_cas = load_chain(args.chain)
    roots = load_roots(args.roots)
    now = parse_time(args.at) if args.at else dt.datetime.now(dt.UTC)
    if args.protocol:
        protocol = ContractProtocol(args.protocol)
    else:
        try:
            protocol = protocol_for_leaf(leaf)
        except ValueError as e:
            raise UnusableInput(f"cannot infer the protocol from the leaf key ({e}); pass --protocol") from None
    verdict = ContractChainValidator(roots).validate(
        leaf, sub_cas, protocol=protocol, now=now, expected_emaid=args.emaid
    )
    print(f"verdict: {'accept' if verdict.ok else 'reject'}")
    print(f"response_code: {verdict.response_code.value}")
    print(f"protocol: {protocol.value}")
    print(f"emaid: {verdict.emaid or '-'}")
    print(f"reason: {verdict.reason}")
    return EXIT_ACCEPT if verdict.ok else EXIT_REJECT


def create(args: argparse.Namespace) -> int:
    """The ``edge pki create`` command."""
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise UnusableInput(f"--out {out}: exists and is not a folder")
    now = parse_time(args.not_before) if args.not_before else None
    try:
        create_test_pki(out, now=now, password=args.password)
    except OSError as e:
        raise UnusableInput(f"cannot write the PKI to {out}: {e.strerror or e}") from None
    except ValueError as e:
        raise UnusableInput(str(e)) from None
    for folder, algorithm in FOLDERS.items():
        print(f"{out / folder}: {algorithm.value}")
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


def main(argv: list[str] | None = None) -> int:
    """``edge pki ...`` on a parser of its own (tests, or before edge/cli.py wires it)."""
    parser = argparse.ArgumentParser(prog="edge")
    add_pki_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
