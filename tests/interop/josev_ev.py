"""Josev's EV simulator (EVCC of PyPI ``iso15118`` 0.31.2) as a test peer, run as a subprocess.

Josev lives in the EXIficient venv (``exificient_setup.ensure_venv``). It reads ``./.env`` and an
EVCC config JSON from its working directory (a fresh temporary directory here), needs an interface
with a usable IPv6 link-local address, logs to stdout, exits 0 whatever happened and may not exit at
all after a session: :func:`run_josev_ev` watches its log for the stop reason, enforces its own time
limit and kills the whole process group (Josev and the JVM of its EXI codec) in every case.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from tests.netns import require_root

from .exificient_setup import DEFAULT_CACHE_DIR, ExificientSetupError, ensure_venv, venv_python

#: Josev logs this (as "Reason: ...") when it decides to stop a session
STOP_REASON = re.compile(r"Reason: (?P<reason>.*)$")
#: the reasons Josev gives with a *successful* stop notification, by protocol: DIN after SessionStopRes
#: (evcc/states/din_spec_states.py); ISO 15118-2 after SessionStopRes, "Communication session
#: {ChargingSession}d" (evcc/states/iso15118_2_states.py, SessionStop). Every other reason is a failure.
SUCCESS = "Communication session stopped successfully"
SUCCESS_ISO2 = "Communication session terminated"
SUCCESS_ISO2_PAUSED = "Communication session paused"
SUCCESS_REASONS = frozenset({SUCCESS, SUCCESS_ISO2, SUCCESS_ISO2_PAUSED})
#: logged 5 s after the stop, once it has closed TCP
TCP_CLOSED = "TCP connection closed to peer"
#: what the storing EVCC (``store_installed_contract``) prints once it has written the installed contract
STORED_CONTRACT = re.compile(r"STORED installed contract (?P<emaid>\S+), key matches certificate: (?P<match>\w+)")

#: Josev's EVCC entry point (iso15118/evcc/main.py) with one change. After a CertificateInstallationRes
#: Josev verifies the CPS signature and chain, decrypts the contract key and hands certificate and key to
#: ``SimEVController.store_contract_cert_and_priv_key`` -- a no-op (TODO) in 0.31.2 -- then builds
#: PaymentDetailsReq from ``PKI_PATH/iso15118_2/certs/contractLeafCert.der`` and signs AuthorizationReq with
#: ``private_keys/contractLeaf.key``: as shipped it pays with the OLD contract of its PKI folder. This
#: controller writes the new contract there first (DER certificate, PEM key under the folder's password),
#: as a car would store it, so the same code path then pays with the NEW contract.
STORING_EVCC = '''
import asyncio
import sys

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from iso15118.evcc import Config, EVCCHandler
from iso15118.evcc.controller.simulator import SimEVController
from iso15118.evcc.evcc_config import load_from_file
from iso15118.shared.exificient_exi_codec import ExificientEXICodec
from iso15118.shared.security import CertPath, KeyPasswordPath, KeyPath, load_priv_key_pass


class StoringEVController(SimEVController):
    async def store_contract_cert_and_priv_key(self, contract_cert, priv_key):
        key = ec.derive_private_key(int.from_bytes(priv_key, "big"), ec.SECP256R1())
        cert = x509.load_der_x509_certificate(contract_cert)
        password = load_priv_key_pass(KeyPasswordPath.CONTRACT_LEAF_KEY_PASSWORD)
        encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
        with open(CertPath.CONTRACT_LEAF_DER, "wb") as f:
            f.write(contract_cert)
        with open(KeyPath.CONTRACT_LEAF_PEM, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
        emaid = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value
        print(f"STORED installed contract {emaid}, key matches certificate: {cert.public_key() == key.public_key()}",
              flush=True)


async def main():
    config = Config()
    config.load_envs()
    config.ev_config_file_path = sys.argv[1]
    evcc_config = await load_from_file(config.ev_config_file_path)
    await EVCCHandler(evcc_config=evcc_config, iface=config.iface, exi_codec=ExificientEXICodec(),
                      ev_controller=StoringEVController(evcc_config)).start()


asyncio.run(main())
'''


def josev_python() -> Path:
    """The EXIficient venv's python with Josev in it (built on first use), for a test: skips it (fails
    it in CI, env CI set) when root, ``ip`` or java/javac are missing or EDGE_SKIP_EXIFICIENT=1."""
    stop = pytest.fail if os.environ.get("CI") else pytest.skip
    require_root()
    if os.environ.get("EDGE_SKIP_EXIFICIENT") == "1":
        stop("EDGE_SKIP_EXIFICIENT=1: interop with Josev NOT tested")
    if not shutil.which("ip"):
        stop("Josev interop NOT tested: it needs the ip command (apt-get install iproute2)")
    if not (shutil.which("java") and shutil.which("javac")):
        stop("Josev interop NOT tested: it needs java and javac (apt-get install openjdk-17-jdk-headless)")
    cache = Path(os.environ.get("EDGE_EXIFICIENT_CACHE") or DEFAULT_CACHE_DIR)
    try:
        return venv_python(ensure_venv(cache))
    except ExificientSetupError as e:
        pytest.fail(f"could not set up the Josev/EXIficient venv: {e}")


@dataclass
class JosevResult:
    log: list[str] = field(default_factory=list)
    stop_reason: str | None = None
    tcp_closed: bool = False
    timed_out: bool = False
    returncode: int | None = None
    duration: float = 0.0

    @property
    def successful(self) -> bool:
        return self.stop_reason in SUCCESS_REASONS

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.log[-n:])

    def grep(self, pattern: str) -> list[str]:
        rx = re.compile(pattern)
        return [line for line in self.log if rx.search(line)]


def write_config(workdir: Path, iface: str, *, protocols: tuple[str, ...] = ("DIN_SPEC_70121",),
                 energy_services: tuple[str, ...] = ("DC",), energy_transfer_mode: str = "DC_extended",
                 charge_loop_cycle: int = 10, log_level: str = "INFO", use_tls: bool = False,
                 pki_path: Path | None = None, cert_install: bool = False) -> Path:
    """The EVCC config JSON and ``.env`` in ``workdir``; returns the config's path.

    ``use_tls``: Josev asks SDP for TLS and insists on it (``enforceTls``), trusting the V2G root of
    ``pki_path`` (a PKI folder in Josev's layout, e.g. from ``edge.pki.testpki.create_test_pki``; the
    charger must use the same folder). TLS 1.2 only: ``ENABLE_TLS_1_3`` stays off, as for -2.

    ``cert_install`` (``isCertInstallNeeded``): with TLS and Contract, Josev selects the certificate
    service, asks ServiceDetail for it and sends a CertificateInstallationReq signed with its OEM leaf
    before PaymentDetails (evcc/states/iso15118_2_states.py)."""
    if use_tls and pki_path is None:
        raise ValueError("Josev with TLS needs the PKI folder whose V2G root it trusts (pki_path)")
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "evcc_config.json"
    config.write_text(json.dumps({
        "supportedProtocols": list(protocols),
        "supportedEnergyServices": list(energy_services),
        "energyTransferMode": energy_transfer_mode,
        "isCertInstallNeeded": cert_install,
        "useTls": use_tls,
        "enforceTls": use_tls,
        "chargeLoopCycle": charge_loop_cycle,
        "sdpRetryCycles": 1,
    }, indent=2) + "\n")
    (workdir / ".env").write_text(
        f"NETWORK_INTERFACE={iface}\nEVCC_CONFIG_PATH={config}\nLOG_LEVEL={log_level}\n"
        "MESSAGE_LOG_JSON=True\nMESSAGE_LOG_EXI=False\nENABLE_TLS_1_3=False\n"
        + (f"PKI_PATH={pki_path.resolve()}/\n" if pki_path is not None else ""))
    return config


def _kill_group(pid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        if sig == signal.SIGTERM:
            time.sleep(0.3)


async def run_josev_ev(python: Path, workdir: Path, *, netns: str | None = None, timeout: float = 120.0,
                       linger: float = 8.0, log_path: Path | None = None,
                       store_installed_contract: bool = False) -> JosevResult:
    """Run Josev's EVCC (``python -m iso15118.evcc.main``) in ``workdir`` (see :func:`write_config`),
    inside network namespace ``netns`` if given, until it logs its stop reason and then closes TCP
    (at most ``linger`` s more), or ``timeout`` s in all. The process group is always killed.

    ``store_installed_contract``: run :data:`STORING_EVCC` instead, which keeps an installed contract in
    Josev's PKI folder (give Josev a copy of the charger's folder: it is overwritten)."""
    if store_installed_contract:
        entry = workdir / "storing_evcc.py"
        entry.write_text(STORING_EVCC)
        cmd = [str(python), str(entry), str(workdir / "evcc_config.json")]
    else:
        cmd = [str(python), "-m", "iso15118.evcc.main", str(workdir / "evcc_config.json")]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    env = dict(os.environ)
    env["JAVA_TOOL_OPTIONS"] = (env.get("JAVA_TOOL_OPTIONS", "") + " -Xmx256m").strip()
    env["PYTHONUNBUFFERED"] = "1"
    for key in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):
        env.pop(key, None)
    result = JosevResult()
    stop_at = 0.0
    log_file = open(log_path, "w") if log_path else None
    t0 = time.monotonic()
    proc = await trio.lowlevel.open_process(cmd, cwd=str(workdir), env=env, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                            start_new_session=True)
    try:
        deadline = trio.current_time() + timeout
        buf = b""
        with trio.move_on_at(deadline) as overall:
            while True:
                if result.stop_reason is not None:
                    deadline = min(deadline, stop_at + linger)
                with trio.move_on_at(deadline):
                    data = await proc.stdout.receive_some(65536)
                if trio.current_time() >= deadline:
                    break
                if not data:
                    break
                buf += data
                *lines, buf = buf.split(b"\n")
                for raw in lines:
                    line = raw.decode("utf-8", "replace").rstrip()
                    result.log.append(line)
                    if log_file:
                        log_file.write(line + "\n")
                        log_file.flush()
                    m = STOP_REASON.search(line)
                    if m and result.stop_reason is None:
                        result.stop_reason = m.group("reason").strip()
                        stop_at = trio.current_time()
                    if TCP_CLOSED in line:
                        result.tcp_closed = True
                if result.tcp_closed:
                    break
        result.timed_out = overall.cancelled_caught or (result.stop_reason is None and proc.poll() is None)
    finally:
        _kill_group(proc.pid)
        with trio.move_on_after(5) as cs:
            cs.shield = True
            result.returncode = await proc.wait()
        if log_file:
            log_file.close()
        result.duration = time.monotonic() - t0
    return result
