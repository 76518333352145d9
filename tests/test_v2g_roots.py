"""More than one V2G root installed: the SECC chain in TLS (-2 by RFC 6066 trusted_ca_keys, -20 by
certificate_authorities) and the CPS chain of a certificate installation answer (-2 and -20, by the car's
ListOfRootCertificateIDs) are the ones leading to a root the car named; otherwise the default ones."""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from edge.pki.install import LocalContractIssuer
from edge.pki.install20 import LocalContractIssuer20
from edge.pki.roots import (
    CERT_SHA1_HASH,
    KEY_SHA1_HASH,
    X509_NAME,
    car_root_ids,
    issuer_serial_names,
    protocol_folders,
    trusted_ca_key_names,
)
from edge.pki.testpki import ISO2_FOLDER, ISO20_FOLDER, PkiPaths, create_test_pki
from edge.v2g.tls import (
    VehiclePkiFiles,
    client_context_from_pki,
    client_context_iso20_from_files,
    parse_client_hello,
    server_context_combined,
)
from exi.model import iso2_msgbody as b
from exi.model import iso2_msgdatatypes as t
from exi.model.xmldsig import X509IssuerSerialType

OTHER = "@other"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test PKI, plus every protocol folder of a second, independent PKI as ``<folder>@other``."""
    out = tmp_path_factory.mktemp("pki")
    create_test_pki(out)
    create_test_pki(out, label=OTHER[1:], organization="Other V2G PKI")
    return out


def cert(pki: Path, folder: str, name: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(PkiPaths(pki, folder).cert(name).read_bytes())


def der(c: x509.Certificate) -> bytes:
    return c.public_bytes(Encoding.DER)


def test_variant_folders_are_found(pki: Path) -> None:
    assert protocol_folders(pki, ISO2_FOLDER) == [ISO2_FOLDER, ISO2_FOLDER + OTHER]
    assert protocol_folders(pki, ISO20_FOLDER) == [ISO20_FOLDER, ISO20_FOLDER + OTHER]  # not iso15118_20_ed448


def test_issuer_serial_matching_is_liberal_in_form_strict_in_substance(pki: Path) -> None:
    root = cert(pki, ISO2_FOLDER, "v2gRootCA")  # CN=V2GRootCA,O=Switch,C=UK,DC=V2G, serial 12345
    assert issuer_serial_names(root, root.issuer.rfc4514_string(), root.serial_number)
    assert issuer_serial_names(root, "CN = V2GRootCA, O=Switch, C=UK, DC=V2G", root.serial_number)  # spaces, order
    assert issuer_serial_names(root, "CN=V2GRootCA", root.serial_number)  # a car that shortens the name
    assert not issuer_serial_names(root, "CN=V2GRootCA", root.serial_number + 1)  # the serial must match
    assert not issuer_serial_names(root, "CN=OtherRoot,O=Switch", root.serial_number)
    assert not issuer_serial_names(root, "", root.serial_number)
    ids = t.ListOfRootCertificateIDsType([X509IssuerSerialType("CN=A", 1), X509IssuerSerialType(None, 2)])
    assert car_root_ids(ids) == [("CN=A", 1)] and car_root_ids(None) == []


def test_trusted_ca_keys_identifiers(pki: Path) -> None:
    root = cert(pki, ISO2_FOLDER, "v2gRootCA")
    name = root.subject.public_bytes()
    key_hash = x509.SubjectKeyIdentifier.from_public_key(root.public_key()).digest
    cert_hash = hashlib.sha1(der(root)).digest()
    for kind, data in ((X509_NAME, name), (KEY_SHA1_HASH, key_hash), (CERT_SHA1_HASH, cert_hash)):
        assert trusted_ca_key_names(root, name, [(kind, data)])
        assert not trusted_ca_key_names(root, name, [(kind, bytes(len(data)))])
    assert trusted_ca_key_names(None, name, [(X509_NAME, name)])  # by name even without the certificate
    assert not trusted_ca_key_names(None, name, [(KEY_SHA1_HASH, key_hash)])


# --- TLS -----------------------------------------------------------------------------------------------------

def _with_trusted_ca_keys(hello_record: bytes, authorities: list[tuple[int, bytes]]) -> bytes:
    """A real ClientHello (one TLS record) with an RFC 6066 trusted_ca_keys extension added (OpenSSL clients
    cannot send one)."""
    entries = b""
    for kind, data in authorities:
        entries += bytes([kind]) + (len(data).to_bytes(2, "big") + data if kind == X509_NAME else data)
    extension = (3).to_bytes(2, "big") + (len(entries) + 2).to_bytes(2, "big") + len(entries).to_bytes(2, "big") + \
        entries
    body = hello_record[9:]
    at = 2 + 32
    at += 1 + body[at]  # session id
    at += 2 + int.from_bytes(body[at:at + 2], "big")  # cipher suites
    at += 1 + body[at]  # compression methods
    extensions = body[at + 2:at + 2 + int.from_bytes(body[at:at + 2], "big")] + extension
    body = body[:at] + len(extensions).to_bytes(2, "big") + extensions
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return hello_record[:3] + len(handshake).to_bytes(2, "big") + handshake


def _server_flight(server: ssl.SSLContext, hello: bytes) -> bytes:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    connection = server.wrap_bio(incoming, outgoing, server_side=True)
    incoming.write(hello)
    with pytest.raises(ssl.SSLWantReadError):
        connection.do_handshake()
    return outgoing.read()


def _client_hello(client: ssl.SSLContext) -> bytes:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    with pytest.raises(ssl.SSLWantReadError):
        client.wrap_bio(incoming, outgoing).do_handshake()
    return outgoing.read()


def test_iso2_car_naming_the_other_root_in_trusted_ca_keys_gets_the_other_chain(pki: Path) -> None:
    server = server_context_combined(pki)
    assert [c.label for c in (server.iso2, *server.iso2_more)] == [ISO2_FOLDER, ISO2_FOLDER + OTHER]
    hello = _client_hello(client_context_from_pki(pki))  # a TLS 1.2 car
    default_leaf, other_leaf = (der(cert(pki, f, "seccLeaf")) for f in (ISO2_FOLDER, ISO2_FOLDER + OTHER))
    flight = _server_flight(server, hello)  # TLS 1.2: the Certificate message is in the clear
    assert default_leaf in flight and other_leaf not in flight
    other_root = cert(pki, ISO2_FOLDER + OTHER, "v2gRootCA")
    for identifier in ((KEY_SHA1_HASH, x509.SubjectKeyIdentifier.from_public_key(other_root.public_key()).digest),
                       (X509_NAME, other_root.subject.public_bytes()),
                       (CERT_SHA1_HASH, hashlib.sha1(der(other_root)).digest())):
        named = _with_trusted_ca_keys(hello, [(0, b""), identifier])
        assert parse_client_hello(named).trusted_ca_keys[-1] == identifier  # type: ignore[union-attr]
        flight = _server_flight(server, named)
        assert other_leaf in flight and default_leaf not in flight, identifier[0]
    # a root nobody installed: the default chain
    stranger = _with_trusted_ca_keys(hello, [(KEY_SHA1_HASH, bytes(20))])
    assert default_leaf in _server_flight(server, stranger)


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> ssl.SSLObject:
    """A whole handshake through memory BIOs; the client's end."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_end = client.wrap_bio(to_client, to_server)
    server_end = server.wrap_bio(to_server, to_client, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, end in (("client", client_end), ("server", server_end)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        if all(done.values()):
            return client_end
    raise AssertionError("the handshake did not finish")


def test_iso20_car_holding_only_the_other_root_gets_the_other_chain(pki: Path) -> None:
    server = server_context_combined(pki)
    files = VehiclePkiFiles.in_folder(pki, ISO20_FOLDER)
    for folder in (ISO20_FOLDER + OTHER, ISO20_FOLDER):
        client = client_context_iso20_from_files(files.chain, files.key, key_password=files.key_password(),
                                                 v2g_roots=[PkiPaths(pki, folder).cert("v2gRootCA")],
                                                 signature_algorithms=("ecdsa_secp521r1_sha512",))
        end = _handshake(server, client)  # it verifies the chain against the one root it holds
        assert end.version() == "TLSv1.3"
        assert end.getpeercert(binary_form=True) == der(cert(pki, folder, "seccLeaf"))


# --- certificate installation ------------------------------------------------------------------------------

def _ids(*roots: x509.Certificate) -> t.ListOfRootCertificateIDsType:
    return t.ListOfRootCertificateIDsType([X509IssuerSerialType(r.issuer.rfc4514_string(), r.serial_number)
                                           for r in roots])


def test_iso2_installation_answer_leads_to_a_root_the_car_named(pki: Path) -> None:
    issuer = LocalContractIssuer.from_pki_folder(pki)
    assert len(issuer.alternatives) == 1
    oem = der(cert(pki, ISO2_FOLDER, "oemLeaf"))
    for folder, named in ((ISO2_FOLDER + OTHER, [cert(pki, ISO2_FOLDER + OTHER, "v2gRootCA")]),
                          (ISO2_FOLDER, [cert(pki, ISO2_FOLDER, "v2gRootCA")]),
                          (ISO2_FOLDER, [cert(pki, "iso15118_20", "v2gRootCA")])):  # none of ours: the default
        answer = issuer.install(b.CertificateInstallationReqType("ID1", oem, _ids(*named)))
        assert answer.response_code == "OK"
        body = answer.body
        assert body.SAProvisioningCertificateChain.Certificate == der(cert(pki, folder, "cpsLeaf"))
        contract = x509.load_der_x509_certificate(body.ContractSignatureCertChain.Certificate)
        assert contract.issuer == cert(pki, folder, "moSubCA2").subject  # that PKI's MO issued it


def test_iso20_installation_answer_leads_to_a_root_the_car_named(pki: Path) -> None:
    import dataclasses
    import datetime as dt

    from edge.ev.iso20 import Iso20OemCredentials
    from exi.model import iso20_commontypes as ct

    issuer = LocalContractIssuer20.from_pki_folder(pki)
    assert [len(v) for v in issuer.alternatives.values()] == [1, 1]  # P-521 and Ed448 variants
    base = Iso20OemCredentials.from_pki(pki, ISO20_FOLDER)
    for folder in (ISO20_FOLDER + OTHER, ISO20_FOLDER):
        car = dataclasses.replace(base, v2g_roots=(der(cert(pki, folder, "v2gRootCA")),))
        request, signature = car.installation_request()
        answer, why = issuer.install(request, signature)
        assert answer.response_code == "OK", why
        assert answer.body.CPSCertificateChain.Certificate == der(cert(pki, folder, "cpsLeaf"))
        res = dataclasses.replace(answer.body, Header=ct.MessageHeaderType(bytes(8), 0, answer.signature))
        car.accept(res, dt.datetime.now(dt.UTC))  # the car verifies it against the one root it holds
