"""Small certificate builders for PKI tests: good chains by default, one knob per way to break them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edge.pki.testpki import TEST_EMAID, KeyAlgorithm, PrivateKey, key_usage

#: a fixed "now" for deterministic tests
NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
CA_USAGE = ("keyCertSign", "cRLSign")
CONTRACT_USAGE = ("digitalSignature", "nonRepudiation", "keyAgreement")


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: PrivateKey

    @property
    def der(self) -> bytes:
        from cryptography.hazmat.primitives.serialization import Encoding

        return self.cert.public_bytes(Encoding.DER)


def generate_key(algorithm: KeyAlgorithm | str) -> PrivateKey:
    """A key for a KeyAlgorithm, or for "secp384r1" (a curve no ISO 15118 profile uses)."""
    if algorithm == "secp384r1":
        return ec.generate_private_key(ec.SECP384R1())
    assert isinstance(algorithm, KeyAlgorithm)
    return algorithm.generate()


def _hash_for(signing_key: PrivateKey) -> hashes.HashAlgorithm | None:
    if isinstance(signing_key, ed448.Ed448PrivateKey):
        return None
    size = signing_key.curve.key_size
    return hashes.SHA256() if size == 256 else hashes.SHA384() if size == 384 else hashes.SHA512()


def make_cert(
    common_name: str,
    issuer: Issued | None,
    *,
    algorithm: KeyAlgorithm | str = KeyAlgorithm.P256_SHA256,
    key: PrivateKey | None = None,
    ca: bool | None = True,
    path_length: int | None = None,
    usage: Iterable[str] | None = CA_USAGE,
    domain_component: str | None = "MO",
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    eku: list[x509.ObjectIdentifier] | None = None,
    sign_with: PrivateKey | None = None,
    serial: int | None = None,
    extensions: Iterable[tuple[x509.ExtensionType, bool]] = (),
) -> Issued:
    """One certificate. ``issuer`` None: self-signed. ``ca`` None: no basicConstraints at all; ``usage`` None:
    no keyUsage; ``sign_with``: sign with this key instead of the issuer's (a forged or broken link);
    ``extensions``: further (extension, critical) pairs."""
    key = key or generate_key(algorithm)
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name), x509.NameAttribute(NameOID.COUNTRY_NAME, "DE")]
    if domain_component is not None:
        attributes.append(x509.NameAttribute(NameOID.DOMAIN_COMPONENT, domain_component))
    subject = x509.Name(attributes)
    start = not_before or NOW - dt.timedelta(days=30)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(not_after or start + dt.timedelta(days=730))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca is not None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True
        )
    if usage is not None:
        builder = builder.add_extension(key_usage(usage), critical=True)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    signer = sign_with or (issuer.key if issuer else key)
    return Issued(builder.sign(signer, _hash_for(signer)), key)


@dataclass(frozen=True)
class Chain:
    root: Issued
    sub1: Issued
    sub2: Issued
    leaf: Issued

    @property
    def sub_cas(self) -> list[x509.Certificate]:
        return [self.sub2.cert, self.sub1.cert]


def contract_chain(
    algorithm: KeyAlgorithm = KeyAlgorithm.P256_SHA256,
    *,
    root_eku: list[x509.ObjectIdentifier] | None = None,
    emaid: str = TEST_EMAID,
) -> Chain:
    """A good MO chain: root -> sub-CA 1 (pathLen 1) -> sub-CA 2 (pathLen 0) -> contract leaf."""
    root = make_cert("MO Root", None, algorithm=algorithm, eku=root_eku)
    sub1 = make_cert("MO Sub1", root, algorithm=algorithm, path_length=1)
    sub2 = make_cert("MO Sub2", sub1, algorithm=algorithm, path_length=0)
    leaf = make_leaf(sub2, algorithm=algorithm, emaid=emaid)
    return Chain(root, sub1, sub2, leaf)


def make_leaf(issuer: Issued, *, algorithm: KeyAlgorithm | str = KeyAlgorithm.P256_SHA256,
              emaid: str = TEST_EMAID, **kw: object) -> Issued:
    """A contract leaf under ``issuer`` (keywords as for make_cert override the contract profile)."""
    options: dict[str, object] = {"ca": False, "usage": CONTRACT_USAGE, "algorithm": algorithm}
    options.update(kw)
    return make_cert(emaid, issuer, **options)  # type: ignore[arg-type]


def break_signature(cert: x509.Certificate) -> x509.Certificate:
    """The same certificate with one bit of its signature value flipped (still parseable DER)."""
    from cryptography.hazmat.primitives.serialization import Encoding

    der = bytearray(cert.public_bytes(Encoding.DER))
    der[-1] ^= 0x01  # the last byte belongs to the signature's s (ECDSA) or its raw value (EdDSA)
    return x509.load_der_x509_certificate(bytes(der))


HUBJECT_STYLE_ROOT_EKU = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
