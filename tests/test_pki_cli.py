"""``edge pki create`` (the test PKI in Josev's layout) and ``edge pki verify-contract`` (exit 0/1/2)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtensionOID, NameOID

from edge.pki.cli import main
from edge.pki.testpki import (
    FOLDERS,
    P12_BUNDLES,
    PASSWORD_FILES,
    PEM_BUNDLES,
    PROFILES,
    TEST_EMAID,
    KeyAlgorithm,
    PkiPaths,
)
from tests.pki_builders import NOW, contract_chain, make_leaf

NOT_BEFORE = "2025-06-01T00:00:00Z"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pki")
    assert main(["pki", "create", "--out", str(out), "--not-before", NOT_BEFORE]) == 0
    return out


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, str], str]:
    code = main(["pki", *argv])
    captured = capsys.readouterr()
    fields = dict(line.split(": ", 1) for line in captured.out.splitlines() if ": " in line)
    return code, fields, captured.err


def write_chain(path: Path, certs: list[x509.Certificate]) -> Path:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
    return path


def chain_file(pki: Path, folder: str, tmp_path: Path) -> Path:
    paths = PkiPaths(pki, folder)
    data = paths.cert("contractLeaf").read_bytes() + (paths.certs / "intermediateMOCACerts.pem").read_bytes()
    target = tmp_path / f"{folder}-chain.pem"
    target.write_bytes(data)
    return target


# --- edge pki create -----------------------------------------------------------------------------------------

def test_create_writes_josevs_layout_for_every_folder(pki: Path) -> None:
    for folder in FOLDERS:
        paths = PkiPaths(pki, folder)
        expected_certs = {f"{p.cert_stem}.{ext}" for p in PROFILES for ext in ("pem", "der")}
        expected_certs |= set(PEM_BUNDLES) | set(P12_BUNDLES)
        assert {p.name for p in paths.certs.iterdir()} == expected_certs
        expected_keys = {f"{p.name}.key" for p in PROFILES} | set(PASSWORD_FILES) | {"moSubCA2.pkcs8.der"}
        assert {p.name for p in paths.private_keys.iterdir()} == expected_keys
        assert {p.name for p in paths.csrs.iterdir()} == {f"{p.csr_stem}.csr" for p in PROFILES}
    # the names other parts of the project (TLS, EV simulator) rely on
    for name in ("cpoCertChain.pem", "v2gRootCACert.pem", "contractLeafCert.pem", "intermediateMOCACerts.pem"):
        assert (pki / "iso15118_2" / "certs" / name).is_file()
    for name in ("seccLeaf.key", "seccLeafPassword.txt", "contractLeaf.key", "contractLeafPassword.txt"):
        assert (pki / "iso15118_2" / "private_keys" / name).is_file()


@pytest.mark.parametrize(("folder", "algorithm"), list(FOLDERS.items()))
def test_every_certificate_follows_its_profile(pki: Path, folder: str, algorithm: KeyAlgorithm) -> None:
    paths = PkiPaths(pki, folder)
    start = dt.datetime.fromisoformat(NOT_BEFORE)
    certs = {}
    for profile in PROFILES:
        pem = x509.load_pem_x509_certificate(paths.cert(profile.name).read_bytes())
        assert pem == x509.load_der_x509_certificate(paths.cert(profile.name, "der").read_bytes())
        certs[profile.name] = pem
        subject = pem.subject
        root_suffix = {KeyAlgorithm.P256_SHA256: "", KeyAlgorithm.P521_SHA512: "-P521", KeyAlgorithm.ED448: "-Ed448"}
        expected_cn = profile.common_name + (root_suffix[algorithm] if profile.issuer is None else "")
        assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == expected_cn
        assert subject.get_attributes_for_oid(NameOID.DOMAIN_COMPONENT)[0].value == profile.domain_component
        assert [a.oid for a in subject] == [NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME, NameOID.COUNTRY_NAME,
                                            NameOID.DOMAIN_COMPONENT]
        assert pem.serial_number == profile.serial
        assert pem.not_valid_before_utc == start
        assert pem.not_valid_after_utc == start + dt.timedelta(days=profile.validity_days)
        constraints = pem.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS)
        assert constraints.critical and constraints.value.ca is profile.is_ca
        assert constraints.value.path_length == profile.path_length
        usage = pem.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE)
        assert usage.critical and usage.value.key_cert_sign is profile.is_ca
        assert usage.value.digital_signature is ("digitalSignature" in profile.key_usage)
        has_aia = any(e.oid == ExtensionOID.AUTHORITY_INFORMATION_ACCESS for e in pem.extensions)
        assert has_aia is profile.with_aia
        key = pem.public_key()
        if algorithm is KeyAlgorithm.ED448:
            assert isinstance(key, ed448.Ed448PublicKey)
        else:
            assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == algorithm.value
        issuer = certs[profile.issuer] if profile.issuer else pem
        pem.verify_directly_issued_by(issuer)
        if profile.issuer:
            aki = pem.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
            ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            assert aki.key_identifier == ski.digest
    assert certs["contractLeaf"].subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == TEST_EMAID


@pytest.mark.parametrize("folder", list(FOLDERS))
def test_bundles_keys_and_passwords(pki: Path, folder: str) -> None:
    paths = PkiPaths(pki, folder)
    chain = x509.load_pem_x509_certificates((paths.certs / "cpoCertChain.pem").read_bytes())
    assert [c.serial_number for c in chain] == [12348, 12347, 12346]  # SECC leaf, CPO sub-CA 2, sub-CA 1
    for name in ("seccLeaf", "contractLeaf", "oemLeaf", "cpsLeaf", "moSubCA2"):
        password = paths.password_file(name).read_text().strip().encode()
        assert password == b"12345"
        key = serialization.load_pem_private_key(paths.key(name).read_bytes(), password)
        cert = x509.load_pem_x509_certificate(paths.cert(name).read_bytes())
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        assert key.public_key().public_bytes(serialization.Encoding.DER, spki) == cert.public_key().public_bytes(
            serialization.Encoding.DER, spki)
        with pytest.raises((TypeError, ValueError)):  # really encrypted
            serialization.load_pem_private_key(paths.key(name).read_bytes(), None)
        assert paths.key(name).stat().st_mode & 0o077 == 0
    key, cert, extra = pkcs12.load_key_and_certificates((paths.certs / "moCertChain.p12").read_bytes(), b"12345")
    assert cert.serial_number == 12356 and [c.serial_number for c in extra] == [12355, 12354]
    serialization.load_der_private_key((paths.private_keys / "moSubCA2.pkcs8.der").read_bytes(), b"12345")


def test_create_with_an_empty_password_writes_plain_keys(tmp_path: Path) -> None:
    assert main(["pki", "create", "--out", str(tmp_path), "--password", ""]) == 0
    paths = PkiPaths(tmp_path)
    assert paths.password_file("seccLeaf").read_text() == "\n"
    serialization.load_pem_private_key(paths.key("seccLeaf").read_bytes(), None)


def test_create_into_a_file_is_unusable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    code, _, err = run(capsys, "create", "--out", str(target))
    assert code == 2 and err.count("\n") == 1 and "not a folder" in err


# --- edge pki verify-contract ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("folder", "protocol"), [("iso15118_2", "iso2"), ("iso15118_20", "iso20"),
                                                  ("iso15118_20_ed448", "iso20")])
def test_verify_accepts_the_test_pki_chains(pki: Path, tmp_path: Path, capsys, folder: str, protocol: str) -> None:
    code, fields, err = run(capsys, "verify-contract", str(chain_file(pki, folder, tmp_path)), "--roots", str(pki),
                            "--at", "2025-07-01T00:00:00Z", "--emaid", "UK-SWI-123456791-A")
    assert (code, err) == (0, "")
    assert fields["verdict"] == "accept" and fields["response_code"] == "OK"
    assert fields["protocol"] == protocol and fields["emaid"] == TEST_EMAID


@pytest.mark.parametrize(("folder", "code_name"), [("iso15118_2", "FAILED_CertificateExpired"),
                                                   ("iso15118_20", "WARNING_CertificateExpired")])
def test_verify_rejects_expired_with_the_protocols_code(pki: Path, tmp_path: Path, capsys, folder, code_name) -> None:
    code, fields, _ = run(capsys, "verify-contract", str(chain_file(pki, folder, tmp_path)), "--roots", str(pki),
                          "--at", "2030-01-01")
    assert code == 1
    assert fields["verdict"] == "reject" and fields["response_code"] == code_name


def test_verify_not_yet_valid_and_emaid_mismatch(pki: Path, tmp_path: Path, capsys) -> None:
    chain = str(chain_file(pki, "iso15118_20_ed448", tmp_path))
    code, fields, _ = run(capsys, "verify-contract", chain, "--roots", str(pki), "--at", "2025-05-31T23:59:59Z")
    assert (code, fields["response_code"]) == (1, "WARNING_CertificateNotYetValid")
    chain2 = str(chain_file(pki, "iso15118_2", tmp_path))
    code, fields, _ = run(capsys, "verify-contract", chain2, "--roots", str(pki), "--at", "2025-07-01",
                          "--emaid", "DE8ACC12E456783")
    assert (code, fields["response_code"]) == (1, "FAILED_CertChainError")
    assert "DE8ACC12E456783" in fields["reason"]


def test_verify_protocol_override_checks_the_algorithm(pki: Path, tmp_path: Path, capsys) -> None:
    code, fields, _ = run(capsys, "verify-contract", str(chain_file(pki, "iso15118_20", tmp_path)),
                          "--roots", str(pki), "--at", "2025-07-01", "--protocol", "iso2")
    assert (code, fields["verdict"], fields["response_code"]) == (1, "reject", "FAILED_CertChainError")
    assert "secp256r1" in fields["reason"]


def test_verify_with_a_folder_of_der_roots_and_a_der_leaf(tmp_path: Path, capsys) -> None:
    chain = contract_chain()
    roots = tmp_path / "roots"
    roots.mkdir()
    (roots / "mo.der").write_bytes(chain.root.der)
    (roots / "notes.txt").write_text("ignored: not a certificate suffix")
    pem = write_chain(tmp_path / "chain.pem", [chain.leaf.cert, chain.sub2.cert, chain.sub1.cert])
    at = NOW.isoformat()
    code, fields, _ = run(capsys, "verify-contract", str(pem), "--roots", str(roots), "--at", at)
    assert (code, fields["verdict"]) == (0, "accept")
    leaf_only = tmp_path / "leaf.der"
    leaf_only.write_bytes(chain.leaf.der)
    code, fields, _ = run(capsys, "verify-contract", str(leaf_only), "--roots", str(roots), "--at", at)
    assert (code, fields["response_code"]) == (1, "FAILED_CertChainError")  # sub-CAs missing


def test_verify_cannot_infer_the_protocol_of_a_p384_leaf(tmp_path: Path, capsys) -> None:
    chain = contract_chain()
    p384 = make_leaf(chain.sub2, algorithm="secp384r1")
    pem = write_chain(tmp_path / "chain.pem", [p384.cert, *chain.sub_cas])
    roots = tmp_path / "roots"
    roots.mkdir()
    write_chain(roots / "root.pem", [chain.root.cert])
    code, fields, err = run(capsys, "verify-contract", str(pem), "--roots", str(roots))
    assert code == 2 and not fields and "--protocol" in err and err.count("\n") == 1
    code, fields, err = run(capsys, "verify-contract", str(pem), "--roots", str(roots), "--protocol", "iso2",
                            "--at", NOW.isoformat())
    assert (code, fields["response_code"]) == (1, "FAILED_CertChainError")


def _roots_folder(tmp_path: Path, *roots: x509.Certificate) -> Path:
    folder = tmp_path / "roots"
    folder.mkdir(exist_ok=True)
    for number, root in enumerate(roots):
        write_chain(folder / f"root{number}.pem", [root])
    return folder


# the classes of defect a security review found (issue 13): each gets a verdict, its rule and its ResponseCode
@pytest.mark.parametrize(("case", "code_name", "rule"), [
    ("unknown critical extension in the leaf", "FAILED_CertChainError", "CRITICAL_EXTENSION"),
    ("leaf signed directly by the MO root", "FAILED_CertChainError", "ISSUED_BY_SUB_CA"),
    ("certificate over 800 bytes in -2", "FAILED_CertChainError", "CERTIFICATE_SIZE"),
    ("empty trust store", "FAILED_NoCertificateAvailable", "TRUST_STORE"),
    ("leaf without DC=MO", "OK", "-"),
])
def test_verify_contract_defect_classes(tmp_path: Path, capsys, case: str, code_name: str, rule: str) -> None:
    chain = contract_chain()
    leaf, subs, roots = chain.leaf.cert, chain.sub_cas, _roots_folder(tmp_path, chain.root.cert)
    unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.3"), b"\x05\x00")
    if case == "unknown critical extension in the leaf":
        leaf = make_leaf(chain.sub2, extensions=[(unknown, True)]).cert
    elif case == "leaf signed directly by the MO root":
        leaf, subs = make_leaf(chain.root).cert, []
    elif case == "certificate over 800 bytes in -2":
        padding = x509.UnrecognizedExtension(unknown.oid, b"\x04\x82\x02\x80" + bytes(640))
        leaf = make_leaf(chain.sub2, extensions=[(padding, False)]).cert
        assert 800 < len(leaf.public_bytes(serialization.Encoding.DER)) <= 1600
    elif case == "empty trust store":
        for file in roots.iterdir():
            file.unlink()
    elif case == "leaf without DC=MO":
        leaf = make_leaf(chain.sub2, domain_component=None).cert
    pem = write_chain(tmp_path / "chain.pem", [leaf, *subs])
    code, fields, err = run(capsys, "verify-contract", str(pem), "--roots", str(roots), "--at", NOW.isoformat())
    assert err == "" and code == (0 if code_name == "OK" else 1), fields
    assert (fields["response_code"], fields["rule"]) == (code_name, rule), fields["reason"]
    assert fields["verdict"] == ("accept" if code_name == "OK" else "reject")


@pytest.mark.parametrize(("kind", "bundle", "folder"), [
    ("secc", "cpoCertChain.pem", "iso15118_2"), ("oem", "oemCertChain.pem", "iso15118_20"),
    ("secc", "cpoCertChain.pem", "iso15118_20_ed448"), ("oem", "oemCertChain.pem", "iso15118_20_ed448"),
])
def test_verify_chain_judges_secc_and_oem_chains_by_their_profile(pki: Path, capsys, kind: str, bundle: str,
                                                                   folder: str) -> None:
    chain = str(pki / folder / "certs" / bundle)
    code, fields, err = run(capsys, "verify-chain", "--kind", kind, chain, "--roots", str(pki / folder),
                            "--at", "2025-07-01")
    assert (code, err, fields["verdict"], fields["kind"]) == (0, "", "accept", kind), fields
    # the same chain judged as another kind: other roots anchor it, or its profile does not fit
    other = "oem" if kind == "secc" else "secc"
    code, fields, _ = run(capsys, "verify-chain", "--kind", other, chain, "--roots", str(pki / folder),
                          "--at", "2025-07-01")
    assert (code, fields["verdict"]) == (1, "reject")
    assert fields["rule"] in ("PATH_TO_ANCHOR", "SIGNATURE", "DOMAIN_COMPONENT"), fields


def test_verify_chain_cps(pki: Path, tmp_path: Path, capsys) -> None:
    certs = pki / "iso15118_2" / "certs"
    pem = tmp_path / "cps.pem"
    pem.write_bytes((certs / "cpsLeafCert.pem").read_bytes() + (certs / "intermediateCPSCACerts.pem").read_bytes())
    code, fields, _ = run(capsys, "verify-chain", "--kind", "cps", str(pem), "--roots", str(pki), "--at", "2025-07-01")
    assert (code, fields["verdict"], fields["protocol"]) == (0, "accept", "iso2"), fields


@pytest.mark.parametrize("case", ["missing chain", "garbage chain", "roots not a folder", "bad root file",
                                  "bad time"])
def test_unusable_input_is_one_line_and_exit_2(pki: Path, tmp_path: Path, capsys, case: str) -> None:
    good_chain = str(chain_file(pki, "iso15118_2", tmp_path))
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    bad_roots = tmp_path / "bad"
    bad_roots.mkdir()
    (bad_roots / "root.pem").write_text("hello")
    argv = {
        "missing chain": [str(tmp_path / "nope.pem"), "--roots", str(pki)],
        "garbage chain": [str(garbage), "--roots", str(pki)],
        "roots not a folder": [good_chain, "--roots", good_chain],
        "bad root file": [good_chain, "--roots", str(bad_roots)],
        "bad time": [good_chain, "--roots", str(pki), "--at", "soon"],
    }[case]
    code, fields, err = run(capsys, "verify-contract", *argv)
    assert code == 2 and fields == {}
    assert err.startswith("edge pki: error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_missing_required_option_is_an_argparse_error(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["pki", "verify-contract", "chain.pem"])
    assert exc.value.code == 2
    assert "--roots" in capsys.readouterr().err
