"""Which of several installed V2G roots a car trusts, and so which SECC chain and which certificate installation
answer it can verify (sans-IO).

A charger may hold chains under more than one V2G root (two V2G PKIs, or a root and its successor). The car says
which roots it holds:

* in TLS: -20 cars name them in the ClientHello's ``certificate_authorities`` ([V2G20-2379]) and may send RFC 6066
  ``trusted_ca_keys`` (identifiers: the root's DER name, the SHA-1 of its key, or of the whole certificate), which
  a -2 car's TLS 1.2 ClientHello can carry too;
* in CertificateInstallationReq (-2 and -20) and CertificateUpdateReq (-2): ``ListOfRootCertificateIDs``, each an
  X509IssuerSerial (the root's issuer name as a string and its serial number).

The charger then serves the chain, and signs the installation answer with the CPS chain, that leads to a root the
car named; with no match, the default one (the car may hold a root it did not name, or named it in a form we do
not recognise; it checks the chain itself either way).

A PKI folder holds the extra chains as further protocol folders named ``<protocol folder>@<label>`` beside the
standard ones (``iso15118_2@other``, ``iso15118_20@other``), each in the same layout.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

T = TypeVar("T")

#: separates a protocol folder's name from the label of an extra chain's folder
VARIANT_SEPARATOR = "@"

# RFC 6066 TrustedAuthority identifier types
PRE_AGREED, KEY_SHA1_HASH, X509_NAME, CERT_SHA1_HASH = 0, 1, 2, 3


def protocol_folders(pki_dir: Path, base: str) -> list[str]:
    """``base`` (when present) then its variant folders ``base@label`` in name order."""
    pki_dir = Path(pki_dir)
    folders = [base] if (pki_dir / base).is_dir() else []
    try:
        variants = sorted(p.name for p in pki_dir.iterdir()
                          if p.is_dir() and p.name.startswith(base + VARIANT_SEPARATOR))
    except OSError:
        variants = []
    return folders + variants


def _attributes(name: str) -> frozenset[tuple[str, str]]:
    """An RFC 4514-ish name string as a set of (TYPE, value): order, spaces around separators and the case of
    attribute types do not matter (cars write ``CN=X, O=Y`` or ``C=DE,O=Y,CN=X``)."""
    parts = re.split(r"(?<!\\)[,+]", name)
    pairs = set()
    for part in parts:
        key, sep, value = part.partition("=")
        if sep:
            pairs.add((key.strip().upper(), value.strip().replace("\\,", ",")))
    return frozenset(pairs)


_SHORT = {"2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.10": "O", "2.5.4.11": "OU", "0.9.2342.19200300.100.1.25": "DC",
          "2.5.4.7": "L", "2.5.4.8": "ST"}


def _name_attributes(name: x509.Name) -> frozenset[tuple[str, str]]:
    return frozenset((_SHORT.get(a.oid.dotted_string, a.oid.dotted_string), str(a.value)) for a in name)


def issuer_serial_names(root: x509.Certificate, issuer_name: str, serial: int) -> bool:
    """Whether an X509IssuerSerial (as a car sends it for one of its roots) names ``root``: same serial number and
    issuer name attributes that the root's issuer has (a root is self-signed: its issuer is its subject). Cars
    that shorten the name (``CN=V2GRootCA`` alone) still match: liberal, the serial must match anyway."""
    wanted = _attributes(issuer_name)
    return serial == root.serial_number and bool(wanted) and wanted <= _name_attributes(root.issuer)


def car_root_ids(id_list: object) -> list[tuple[str, int]]:
    """(issuer name, serial) pairs from a -2 or -20 ListOfRootCertificateIDs (None: none named)."""
    if id_list is None:
        return []
    return [(str(i.X509IssuerName), int(i.X509SerialNumber)) for i in getattr(id_list, "RootCertificateID", [])
            if i.X509IssuerName is not None and i.X509SerialNumber is not None]


def named_by_ids(root: x509.Certificate | None, ids: Iterable[tuple[str, int]]) -> bool:
    return root is not None and any(issuer_serial_names(root, name, serial) for name, serial in ids)


def pick_for_car(candidates: Sequence[T], root_of: Callable[[T], x509.Certificate | None],
                 ids: Sequence[tuple[str, int]]) -> tuple[T, bool]:
    """The first candidate whose root the car named in ``ids``, and True; else the first (default) candidate and
    False: the car named none of our roots, or named them in a way we do not recognise, and may still hold the
    default one (judgement: try, rather than refuse a contract the car might have verified)."""
    if not candidates:
        raise ValueError("no candidate to pick from")
    found = next((c for c in candidates if named_by_ids(root_of(c), ids)), None)
    return (found, True) if found is not None else (candidates[0], False)


def trusted_ca_key_names(root: x509.Certificate | None, root_name: bytes,
                         trusted_ca_keys: Iterable[tuple[int, bytes]]) -> bool:
    """Whether an RFC 6066 trusted_ca_keys list names this root (``root_name``: its DER name, used when the root
    certificate itself is not at hand)."""
    for kind, data in trusted_ca_keys:
        if kind == X509_NAME and data == root_name:
            return True
        if root is None:
            continue
        if kind == KEY_SHA1_HASH and data == x509.SubjectKeyIdentifier.from_public_key(root.public_key()).digest:
            return True  # SHA-1 of the subjectPublicKey bits (RFC 6066 §6, the same as RFC 5280's key id method 1)
        if kind == CERT_SHA1_HASH and data == hashlib.sha1(root.public_bytes(Encoding.DER)).digest():
            return True  # SHA-1 because RFC 6066 says so
    return False
