"""Local contract installation (-2): the contract key encryption (V2G2-818) both ways and against
Josev's implementation, and a CertificateInstallationRes issued from a test PKI."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edge.pki.install import ContractKeyError, decrypt_contract_key, encrypt_contract_key


def test_contract_key_round_trip_and_wrong_recipient() -> None:
    contract = ec.generate_private_key(ec.SECP256R1())
    car = ec.generate_private_key(ec.SECP256R1())
    dh, encrypted = encrypt_contract_key(contract, car.public_key())
    assert len(dh) == 65 and dh[0] == 4 and len(encrypted) == 48
    got = decrypt_contract_key(encrypted, dh, car)
    assert got.private_numbers() == contract.private_numbers()
    _, again = encrypt_contract_key(contract, car.public_key())
    assert again[:16] != encrypted[:16]  # a fresh IV (and ephemeral key) each time
    other = ec.generate_private_key(ec.SECP256R1())
    try:
        wrong = decrypt_contract_key(encrypted, dh, other)
    except ContractKeyError:
        pass
    else:
        assert wrong.private_numbers() != contract.private_numbers()
    with pytest.raises(ContractKeyError, match="48 bytes"):
        decrypt_contract_key(encrypted[:40], dh, car)
    with pytest.raises(ContractKeyError, match="secp256r1 point"):
        decrypt_contract_key(encrypted, b"\x04" + bytes(64), car)
    with pytest.raises(ContractKeyError, match="secp256r1"):
        encrypt_contract_key(contract, ec.generate_private_key(ec.SECP384R1()).public_key())


JOSEV_DECRYPT = """
import sys
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from iso15118.shared.security import decrypt_priv_key
encrypted, dh, key_pem = (bytes.fromhex(x) for x in sys.argv[1:4])
peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), dh)
scalar = decrypt_priv_key(encrypted, load_pem_private_key(key_pem, None), peer)
print(int.from_bytes(scalar, "big"))
"""


def test_josev_decrypts_our_contract_key(tmp_path: Path) -> None:
    from tests.interop.josev_ev import josev_python

    python = josev_python()
    contract = ec.generate_private_key(ec.SECP256R1())
    car = ec.generate_private_key(ec.SECP256R1())
    dh, encrypted = encrypt_contract_key(contract, car.public_key())
    pem = car.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    out = subprocess.run([str(python), "-c", JOSEV_DECRYPT, encrypted.hex(), dh.hex(), pem.hex()],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[-1]) == contract.private_numbers().private_value


