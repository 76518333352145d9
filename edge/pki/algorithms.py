"""The key and signature algorithms of the ISO 15118 certificate profiles, in one place."""

from __future__ import annotations

from enum import Enum

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448

PrivateKey = ec.EllipticCurvePrivateKey | ed448.Ed448PrivateKey


class KeyAlgorithm(Enum):
    """The key and signature algorithm of one PKI folder."""

    P256_SHA256 = "secp256r1"  # ISO 15118-2
    P521_SHA512 = "secp521r1"  # ISO 15118-20
    ED448 = "ed448"  # ISO 15118-20

    def generate(self) -> PrivateKey:
        if self is KeyAlgorithm.ED448:
            return ed448.Ed448PrivateKey.generate()
        curve = ec.SECP256R1() if self is KeyAlgorithm.P256_SHA256 else ec.SECP521R1()
        return ec.generate_private_key(curve)

    def signature_hash(self) -> hashes.HashAlgorithm | None:
        """The hash for ``sign()``: None for Ed448, which hashes internally."""
        if self is KeyAlgorithm.ED448:
            return None
        return hashes.SHA256() if self is KeyAlgorithm.P256_SHA256 else hashes.SHA512()

    @classmethod
    def of(cls, public_key: object) -> KeyAlgorithm:
        """The algorithm of a public key; ValueError for keys no ISO 15118 profile uses."""
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            if isinstance(public_key.curve, ec.SECP256R1):
                return cls.P256_SHA256
            if isinstance(public_key.curve, ec.SECP521R1):
                return cls.P521_SHA512
            raise ValueError(f"no ISO 15118 protocol uses curve {public_key.curve.name}")
        if isinstance(public_key, ed448.Ed448PublicKey):
            return cls.ED448
        raise ValueError(f"no ISO 15118 protocol uses {type(public_key).__name__} keys")
