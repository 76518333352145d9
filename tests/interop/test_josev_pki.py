"""Josev's own PKI code accepts the test PKI that ``edge.pki.testpki.create_test_pki`` writes.

A script runs inside Josev's venv (PyPI ``iso15118`` 0.31.2, its pinned cryptography) with
``PKI_PATH`` pointing at a PKI we created, and uses Josev's functions from
``iso15118/shared/security.py`` unchanged: its SSL contexts (server: cpoCertChain.pem + seccLeaf.key +
password file; client: trusts v2gRootCACert.pem) and a real in-memory TLS handshake between them (TLS
1.2 as Josev's -2 EV does, and TLS 1.3 with the OEM client chain), its key loader for every leaf key
Josev reads, ``verify_certs`` on the contract, CPO, CPS and OEM chains (and a wrong root, which it
must refuse), the EMAID from the contract leaf's CN, the OCSP hash data of the contract chain, and
the PKCS#12 container. That proves layout, names, passwords and profiles against an independent
implementation.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from edge.pki.testpki import ISO2_FOLDER, TEST_EMAID, create_test_pki
from tests.interop.exificient_setup import DEFAULT_CACHE_DIR, ExificientSetupError, ensure_venv, venv_python

JOSEV_CHECK = r'''
import json, os, ssl, sys
from iso15118.shared.settings import load_shared_settings, shared_settings, SettingKey
load_shared_settings()
from cryptography.hazmat.primitives.serialization import pkcs12
from iso15118.shared.exceptions import CertSignatureError
from iso15118.shared.messages.enums import Protocol
from iso15118.shared.security import (
    CertPath, KeyEncoding, KeyPasswordPath, KeyPath, get_cert_cn, get_certificate_hash_data, get_ssl_context,
    load_cert, load_cert_chain, load_priv_key, verify_certs,
)

out = {}

def handshake(server_ctx, client_ctx):
    """A TLS handshake over memory BIOs: (version, cipher, server cert CN, client cert CN or None)."""
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_side=False)
    done = {"s": False, "c": False}
    for _ in range(20):
        for name, conn in (("c", client), ("s", server)):
            if not done[name]:
                try:
                    conn.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        if c_out.pending:
            s_in.write(c_out.read())
        if s_out.pending:
            c_in.write(s_out.read())
        if all(done.values()):
            break
    def common_name(conn):
        peer = conn.getpeercert()
        return [v for rdn in peer["subject"] for k, v in rdn if k == "commonName"][0] if peer else None
    return client.version(), client.cipher()[0], common_name(client), common_name(server)

for tls13 in (False, True):
    shared_settings[SettingKey.ENABLE_TLS_1_3] = tls13
    server_ctx, client_ctx = get_ssl_context(True), get_ssl_context(False)
    if server_ctx is None or client_ctx is None:
        out["tls13" if tls13 else "tls12"] = "no SSL context"
        continue
    out["tls13" if tls13 else "tls12"] = list(handshake(server_ctx, client_ctx))
shared_settings[SettingKey.ENABLE_TLS_1_3] = False

out["keys"] = {}
for key_path, pass_path in (
    (KeyPath.SECC_LEAF_PEM, KeyPasswordPath.SECC_LEAF_KEY_PASSWORD),
    (KeyPath.CONTRACT_LEAF_PEM, KeyPasswordPath.CONTRACT_LEAF_KEY_PASSWORD),
    (KeyPath.OEM_LEAF_PEM, KeyPasswordPath.OEM_LEAF_KEY_PASSWORD),
    (KeyPath.CPS_LEAF_PEM, KeyPasswordPath.CPS_LEAF_KEY_PASSWORD),
    (KeyPath.MO_SUB_CA2_PEM, KeyPasswordPath.MO_SUB_CA2_PASSWORD),
):
    out["keys"][os.path.basename(key_path)] = load_priv_key(key_path, KeyEncoding.PEM, pass_path).curve.name

def check(leaf, sub2, sub1, root):
    chain = load_cert_chain(Protocol.ISO_15118_2, leaf, sub2, sub1)
    try:
        verify_certs(chain.certificate, chain.sub_certificates.certificates, load_cert(root))
        return "ok"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"

out["chains"] = {
    "contract": check(
        CertPath.CONTRACT_LEAF_DER, CertPath.MO_SUB_CA2_DER, CertPath.MO_SUB_CA1_DER, CertPath.MO_ROOT_DER),
    "cpo": check(CertPath.SECC_LEAF_DER, CertPath.CPO_SUB_CA2_DER, CertPath.CPO_SUB_CA1_DER, CertPath.V2G_ROOT_DER),
    "cps": check(CertPath.CPS_LEAF_DER, CertPath.CPS_SUB_CA2_DER, CertPath.CPS_SUB_CA1_DER, CertPath.V2G_ROOT_DER),
    "oem": check(CertPath.OEM_LEAF_DER, CertPath.OEM_SUB_CA2_DER, CertPath.OEM_SUB_CA1_DER, CertPath.OEM_ROOT_DER),
    # negative control: Josev must refuse the contract chain under the V2G root
    "contract_under_v2g_root": check(
        CertPath.CONTRACT_LEAF_DER, CertPath.MO_SUB_CA2_DER, CertPath.MO_SUB_CA1_DER, CertPath.V2G_ROOT_DER),
}
contract_chain = load_cert_chain(
    Protocol.ISO_15118_2, CertPath.CONTRACT_LEAF_DER, CertPath.MO_SUB_CA2_DER, CertPath.MO_SUB_CA1_DER)
out["emaid"] = get_cert_cn(contract_chain.certificate)
hash_data = get_certificate_hash_data(contract_chain, load_cert(CertPath.MO_ROOT_DER))
out["hash_data"] = hash_data
certs_dir = os.path.dirname(CertPath.CONTRACT_LEAF_DER)
with open(os.path.join(certs_dir, "moCertChain.p12"), "rb") as f:
    key, cert, extra = pkcs12.load_key_and_certificates(f.read(), b"12345")
out["p12"] = [cert.subject.rfc4514_string()] + [c.subject.rfc4514_string() for c in extra]
print("RESULT " + json.dumps(out))
'''


def _josev_python() -> Path:
    """Josev's venv python; skips (fails in CI) when java/javac are missing or EDGE_SKIP_EXIFICIENT=1."""
    stop = pytest.fail if os.environ.get("CI") else pytest.skip
    if os.environ.get("EDGE_SKIP_EXIFICIENT") == "1":
        stop("EDGE_SKIP_EXIFICIENT=1: PKI interop with Josev NOT tested")
    if not (shutil.which("java") and shutil.which("javac")):
        stop("Josev PKI interop NOT tested: its venv setup needs java and javac")
    cache = Path(os.environ.get("EDGE_EXIFICIENT_CACHE") or DEFAULT_CACHE_DIR)
    try:
        return venv_python(ensure_venv(cache))
    except ExificientSetupError as e:
        pytest.fail(f"could not set up the Josev venv: {e}")


def _run_josev_check(pki: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PKI_PATH"] = str(pki) + "/"
    proc = subprocess.run(
        [str(_josev_python()), "-c", JOSEV_CHECK], cwd=pki, env=env, capture_output=True, text=True, timeout=120
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"Josev check failed (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.mark.slow
def test_josev_accepts_our_iso2_pki(tmp_path: Path) -> None:
    create_test_pki(tmp_path)
    assert (tmp_path / ISO2_FOLDER / "certs" / "cpoCertChain.pem").is_file()
    result = _run_josev_check(tmp_path)

    # TLS as Josev's -2 EV does it (TLS 1.2, ECDHE-ECDSA-AES128-SHA256, trusting v2gRootCACert.pem) ...
    assert result["tls12"] == ["TLSv1.2", "ECDHE-ECDSA-AES128-SHA256", "SECCCert", None]
    # ... and TLS 1.3 with mutual authentication (Josev's server verifies our OEM chain under oemRootCACert.pem)
    assert result["tls13"] == ["TLSv1.3", "TLS_AES_256_GCM_SHA384", "SECCCert", "OEMProvCert"]
    assert result["keys"] == {
        name: "secp256r1"
        for name in ("seccLeaf.key", "contractLeaf.key", "oemLeaf.key", "cpsLeaf.key", "moSubCA2.key")
    }
    chains = result["chains"]
    for name in ("contract", "cpo", "cps", "oem"):
        assert chains[name] == "ok", name
    assert chains["contract_under_v2g_root"].startswith("CertSignatureError")
    assert result["emaid"] == TEST_EMAID
    # OCSP request data for leaf, sub-CA 2, sub-CA 1 and root, each with the responder URL from our AIA
    assert len(result["hash_data"]) == 4
    assert all(h["hash_algorithm"] == "SHA256" and h["responder_url"] for h in result["hash_data"])
    assert [h["serial_number"] for h in result["hash_data"]] == ["12356", "12355", "12354", "12353"]
    assert result["p12"] == [
        f"DC=MO,C=UK,O=Switch,CN={TEST_EMAID}",
        "DC=MO,C=UK,O=Switch,CN=PKI-Ext_CRT_MO_SUB2_VALID",
        "DC=MO,C=UK,O=Switch,CN=PKI-Ext_CRT_MO_SUB1_VALID",
    ]
