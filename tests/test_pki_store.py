"""CertificateStore: roots by use, OCPP CertificateHashData, delete/list, CSR + CertificateSigned for the SECC
leaf, atomic writes, and reading a Josev-layout PKI."""

from __future__ import annotations

import datetime as dt
import hashlib
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from edge.pki.chain import ContractChainValidator, ContractProtocol
from edge.pki.store import (
    CertificateHashData,
    CertificateStore,
    CertificateUse,
    DeleteStatus,
    InstallStatus,
    atomic_write,
    certificate_hash_data,
    load_josev_pki,
)
from edge.pki.testpki import KeyAlgorithm, PkiPaths, create_test_pki
from tests.pki_builders import NOW, Issued, contract_chain, make_cert

PEM = serialization.Encoding.PEM


def pem(issued: Issued) -> str:
    return issued.cert.public_bytes(PEM).decode()


def cpo_pki(algorithm: KeyAlgorithm = KeyAlgorithm.P256_SHA256) -> tuple[Issued, Issued, Issued]:
    root = make_cert("V2G Root", None, algorithm=algorithm, domain_component="V2G")
    sub1 = make_cert("CPO Sub1", root, algorithm=algorithm, path_length=1, domain_component="V2G")
    sub2 = make_cert("CPO Sub2", sub1, algorithm=algorithm, path_length=0, domain_component="V2G")
    return root, sub1, sub2


def sign_csr(csr_pem: str, issuer: Issued, *, days: int = 60) -> x509.Certificate:
    """What the CSMS's CA does with our CSR: the requested subject and extensions (CA false, keyUsage)."""
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    assert csr.is_signature_valid
    builder = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(issuer.cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=days))
    )
    requested = {e.oid for e in csr.extensions}
    assert {x509.BasicConstraints.oid, x509.KeyUsage.oid} <= requested
    for extension in csr.extensions:
        builder = builder.add_extension(extension.value, critical=extension.critical)
    return builder.sign(issuer.key, None if csr.signature_hash_algorithm is None
                        else type(csr.signature_hash_algorithm)())


# --- roots ----------------------------------------------------------------------------------------------------

def test_install_list_and_delete_a_root(tmp_path: Path) -> None:
    store = CertificateStore(tmp_path)
    root = make_cert("MO Root", None)
    assert store.install_root(CertificateUse.MO_ROOT, pem(root), now=NOW).status is InstallStatus.ACCEPTED
    assert store.install_root(CertificateUse.MO_ROOT, root.der, now=NOW).ok  # again, as DER: idempotent
    assert store.roots(CertificateUse.MO_ROOT) == [root.cert]
    assert store.roots(CertificateUse.V2G_ROOT) == []
    files = list((tmp_path / "MORootCertificate").iterdir())
    assert [f.name for f in files] == [hashlib.sha256(root.der).hexdigest() + ".pem"]

    entries = store.installed([CertificateUse.MO_ROOT])
    assert [(e.use, e.certificate) for e in entries] == [(CertificateUse.MO_ROOT, root.cert)]
    assert store.installed([CertificateUse.V2G_ROOT]) == []
    hash_data = entries[0].hash_data
    # a CSMS may send upper-case hex and a zero-padded serial
    asked = CertificateHashData("SHA256", hash_data.issuer_name_hash.upper(), hash_data.issuer_key_hash.upper(),
                                "00" + hash_data.serial_number.upper())
    assert store.delete(asked).status is DeleteStatus.ACCEPTED
    assert store.roots(CertificateUse.MO_ROOT) == []
    assert store.delete(asked).status is DeleteStatus.NOT_FOUND


def test_roots_are_kept_apart_by_use(tmp_path: Path) -> None:
    store = CertificateStore(tmp_path)
    roots = {use: make_cert(f"{use.value} root", None) for use in
             (CertificateUse.V2G_ROOT, CertificateUse.MO_ROOT, CertificateUse.OEM_ROOT, CertificateUse.CSMS_ROOT)}
    for use, root in roots.items():
        assert store.install_root(use, pem(root), now=NOW).ok
    for use, root in roots.items():
        assert store.roots(use) == [root.cert]
    assert store.contract_trust_anchors() == [roots[CertificateUse.MO_ROOT].cert, roots[CertificateUse.V2G_ROOT].cert]
    assert {e.use for e in store.installed()} == set(roots)
    with pytest.raises(ValueError):
        store.install_root(CertificateUse.V2G_CERTIFICATE_CHAIN, pem(roots[CertificateUse.MO_ROOT]), now=NOW)


@pytest.mark.parametrize("case", ["garbage", "two certificates", "not a CA", "expired", "not yet valid"])
def test_install_root_rejects(tmp_path: Path, case: str) -> None:
    root = make_cert("MO Root", None)
    data = {
        "garbage": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        "two certificates": pem(root) + pem(make_cert("Other Root", None)),
        "not a CA": pem(make_cert("Leaf", root, ca=False, usage=("digitalSignature",))),
        "expired": pem(make_cert("Old Root", None, not_after=NOW - dt.timedelta(days=1))),
        "not yet valid": pem(make_cert("New Root", None, not_before=NOW + dt.timedelta(days=1))),
    }[case]
    result = CertificateStore(tmp_path).install_root(CertificateUse.V2G_ROOT, data, now=NOW)
    assert result.status is InstallStatus.REJECTED and result.reason
    assert CertificateStore(tmp_path).roots(CertificateUse.V2G_ROOT) == []


def test_install_root_storage_failure_is_failed(tmp_path: Path) -> None:
    (tmp_path / "MORootCertificate").write_text("a file where the folder should be")
    result = CertificateStore(tmp_path).install_root(CertificateUse.MO_ROOT, pem(make_cert("R", None)), now=NOW)
    assert result.status is InstallStatus.FAILED


# --- CertificateHashData ---------------------------------------------------------------------------------------

def test_hash_data_is_computed_as_ocsp_does() -> None:
    chain = contract_chain()
    data = certificate_hash_data(chain.leaf.cert, chain.sub2.cert)
    assert data.hash_algorithm == "SHA256"
    assert data.issuer_name_hash == hashlib.sha256(chain.sub2.cert.subject.public_bytes()).hexdigest()
    point = chain.sub2.cert.public_key().public_bytes(serialization.Encoding.X962,
                                                      serialization.PublicFormat.UncompressedPoint)
    assert data.issuer_key_hash == hashlib.sha256(point).hexdigest()
    assert int(data.serial_number, 16) == chain.leaf.cert.serial_number
    assert data.serial_number == data.serial_number.lower()
    self_signed = certificate_hash_data(chain.root.cert)
    assert self_signed.issuer_name_hash == hashlib.sha256(chain.root.cert.subject.public_bytes()).hexdigest()
    assert len(certificate_hash_data(chain.root.cert, None, "sha512").issuer_name_hash) == 128
    with pytest.raises(ValueError, match="SHA256"):
        certificate_hash_data(chain.root.cert, None, "MD5")


def test_hash_data_ocpp_round_trip() -> None:
    data = certificate_hash_data(make_cert("R", None).cert)
    ocpp = data.to_ocpp()
    assert set(ocpp) == {"hashAlgorithm", "issuerNameHash", "issuerKeyHash", "serialNumber"}
    assert CertificateHashData.from_ocpp(ocpp) == data
    with pytest.raises(ValueError, match="serialNumber"):
        CertificateHashData.from_ocpp({k: v for k, v in ocpp.items() if k != "serialNumber"})
    other = CertificateHashData(data.hash_algorithm, data.issuer_name_hash, data.issuer_key_hash, "not hex")
    assert not data.matches(other)


# --- SECC leaf: SignCertificate + CertificateSigned -------------------------------------------------------------

@pytest.mark.parametrize("algorithm", list(KeyAlgorithm))
def test_csr_then_certificate_signed(tmp_path: Path, algorithm: KeyAlgorithm) -> None:
    store = CertificateStore(tmp_path)
    v2g_root, sub1, sub2 = cpo_pki(algorithm)
    assert store.install_root(CertificateUse.V2G_ROOT, pem(v2g_root), now=NOW).ok
    csr_pem = store.create_secc_csr(common_name="DEABCS1234567890123456789012345678", organization="Edge",
                                    algorithm=algorithm)
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.DOMAIN_COMPONENT)[0].value == "CPO"
    pending = tmp_path / "secc" / algorithm.value / "pending.key"
    assert pending.stat().st_mode & 0o077 == 0
    assert store.secc_chain(algorithm) == [] and store.secc_files(algorithm) is None

    leaf = sign_csr(csr_pem, sub2)
    chain_pem = b"".join(c.public_bytes(PEM) for c in (leaf, sub2.cert, sub1.cert))
    result = store.install_secc_chain(chain_pem, now=NOW)
    assert result.status is InstallStatus.ACCEPTED, result.reason
    assert store.secc_chain(algorithm) == [leaf, sub2.cert, sub1.cert]
    assert not pending.exists()
    key = store.secc_key(algorithm)
    assert key is not None and key.public_key() == leaf.public_key()
    chain_file, key_file = store.secc_files(algorithm)
    assert key_file.stat().st_mode & 0o077 == 0
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(chain_file, key_file)

    [entry] = store.installed([CertificateUse.V2G_CERTIFICATE_CHAIN])
    assert entry.certificate == leaf
    assert entry.hash_data == certificate_hash_data(leaf, sub2.cert)
    assert entry.children == (certificate_hash_data(sub2.cert, sub1.cert),
                              certificate_hash_data(sub1.cert, v2g_root.cert))
    assert store.delete(entry.hash_data).status is DeleteStatus.ACCEPTED
    assert store.secc_chain(algorithm) == [] and store.secc_key(algorithm) is None


def test_a_reissued_leaf_for_the_installed_key_is_accepted(tmp_path: Path) -> None:
    store = CertificateStore(tmp_path)
    _, sub1, sub2 = cpo_pki()
    csr_pem = store.create_secc_csr(common_name="SECC", organization="Edge")
    assert store.install_secc_chain(b"".join(c.public_bytes(PEM) for c in (sign_csr(csr_pem, sub2), sub2.cert,
                                                                           sub1.cert)), now=NOW).ok
    renewed = sign_csr(csr_pem, sub2, days=90)
    assert store.install_secc_chain(b"".join(c.public_bytes(PEM) for c in (renewed, sub2.cert)), now=NOW).ok
    assert store.secc_chain() == [renewed, sub2.cert]


@pytest.mark.parametrize("case", ["garbage", "foreign key", "broken link", "expired", "unknown V2G root",
                                  "P-384 leaf"])
def test_certificate_signed_rejects(tmp_path: Path, case: str) -> None:
    store = CertificateStore(tmp_path)
    v2g_root, sub1, sub2 = cpo_pki()
    assert store.install_root(CertificateUse.V2G_ROOT, pem(v2g_root), now=NOW).ok
    csr_pem = store.create_secc_csr(common_name="SECC", organization="Edge")
    leaf = sign_csr(csr_pem, sub2)
    chain = [leaf, sub2.cert, sub1.cert]
    if case == "foreign key":
        chain[0] = make_cert("SECC", sub2, ca=False, usage=("digitalSignature",)).cert
    elif case == "broken link":
        chain = [leaf, sub2.cert, make_cert("CPO Sub1", v2g_root, path_length=1).cert]  # same name, other key
    elif case == "expired":
        chain[0] = sign_csr(csr_pem, sub2, days=-1)
    elif case == "unknown V2G root":
        _, other_sub1, other_sub2 = cpo_pki()
        chain = [sign_csr(csr_pem, other_sub2), other_sub2.cert, other_sub1.cert]
    elif case == "P-384 leaf":
        chain[0] = make_cert("SECC", sub2, algorithm="secp384r1", ca=False).cert
    data = b"junk" if case == "garbage" else b"".join(c.public_bytes(PEM) for c in chain)
    result = store.install_secc_chain(data, now=NOW)
    assert result.status is InstallStatus.REJECTED and result.reason
    assert store.secc_chain() == []
    assert (tmp_path / "secc" / "secp256r1" / "pending.key").exists()  # the CSR key waits for a good chain


# --- Josev layout -------------------------------------------------------------------------------------------------

def test_import_a_josev_layout_pki(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    create_test_pki(pki, now=NOW)
    contents = load_josev_pki(pki)
    assert [c.folder for c in contents] == ["iso15118_2", "iso15118_20", "iso15118_20_ed448"]
    store = CertificateStore(tmp_path / "store")
    imported = store.import_josev_pki(pki, now=NOW + dt.timedelta(days=1))
    assert len(imported) == 3 * 4  # V2G, MO and OEM root and the SECC chain of each folder
    assert len(store.roots(CertificateUse.MO_ROOT)) == 3 and len(store.roots(CertificateUse.OEM_ROOT)) == 3
    for folder, algorithm in (("iso15118_2", KeyAlgorithm.P256_SHA256), ("iso15118_20", KeyAlgorithm.P521_SHA512),
                              ("iso15118_20_ed448", KeyAlgorithm.ED448)):
        paths = PkiPaths(pki, folder)
        assert store.secc_chain(algorithm) == x509.load_pem_x509_certificates(
            (paths.certs / "cpoCertChain.pem").read_bytes())
        assert store.secc_key(algorithm).public_key() == store.secc_chain(algorithm)[0].public_key()
        leaf = x509.load_pem_x509_certificate(paths.cert("contractLeaf").read_bytes())
        subs = x509.load_pem_x509_certificates((paths.certs / "intermediateMOCACerts.pem").read_bytes())
        protocol = ContractProtocol.ISO2 if algorithm is KeyAlgorithm.P256_SHA256 else ContractProtocol.ISO20
        verdict = ContractChainValidator(store.contract_trust_anchors()).validate(
            leaf, subs, protocol=protocol, now=NOW + dt.timedelta(days=1))
        assert verdict.ok, verdict.reason
    chains = store.installed([CertificateUse.V2G_CERTIFICATE_CHAIN])
    assert len(chains) == 3 and all(len(e.children) == 2 for e in chains)


def test_load_josev_pki_of_an_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no Josev-layout PKI"):
        load_josev_pki(tmp_path)


# --- atomic writes ----------------------------------------------------------------------------------------------

def test_atomic_write_replaces_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.pem"
    atomic_write(target, b"one")
    atomic_write(target, b"two", mode=0o600)
    assert target.read_bytes() == b"two" and target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in target.parent.iterdir()] == ["file.pem"]


def test_atomic_write_failure_keeps_nothing_half_written(tmp_path: Path) -> None:
    target = tmp_path / "dir"
    target.mkdir()  # os.replace of a file over a folder fails
    with pytest.raises(OSError):
        atomic_write(target, b"data")
    assert [p.name for p in tmp_path.iterdir()] == ["dir"]
