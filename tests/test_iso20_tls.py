"""ISO 15118-20 Plug & Charge end to end over TLS 1.3 (issue 5): our -20 car and our charger over
loopback, one TLS port for -2 and -20 cars, real chains and signatures (P-521 and Ed448 PKIs), the
car's OEM certificate seen by the charger; and -20 is never offered over TLS 1.2 ([V2G20-2356])."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from cryptography import x509

from edge.ev import drive
from edge.ev.connect import open_v2g_stream
from edge.ev.iso2 import ContractCredentials, Iso2Car
from edge.ev.iso20 import Iso20ContractCredentials, Iso20DcCar
from edge.hardware import SimulatedCharger
from edge.pki.plug_and_charge import LocalPlugAndCharge
from edge.v2g import sap
from edge.v2g.charger import ChargerConnection, EvseConfig
from edge.v2g.server import serve_tcp
from edge.v2g.tls import client_context_from_pki, client_context_iso20, server_context_combined


def test_iso20_is_offered_over_tls_13_only() -> None:
    conn = ChargerConnection(SimulatedCharger())
    assert sap.ISO20_DC in conn.enabled_protocols()  # plain TCP
    conn.tls_established("TLSv1.2", None)
    assert sap.ISO20_DC not in conn.enabled_protocols() and sap.ISO2 in conn.enabled_protocols()
    conn.tls_established("TLSv1.3", b"\x30")
    assert sap.ISO20_DC in conn.enabled_protocols() and conn.tls


async def charge(pki: Path, car, client_context) -> tuple[ChargerConnection, LocalPlugAndCharge]:
    pnc = LocalPlugAndCharge.from_pki_folder(pki)
    connections: list[ChargerConnection] = []
    hw = SimulatedCharger(voltage_tau=0.05, isolation_s=0.2)

    def factory() -> ChargerConnection:
        connections.append(ChargerConnection(hw, config=EvseConfig(pnc=pnc)))
        return connections[-1]

    async with trio.open_nursery() as nursery:
        port = await nursery.start(lambda task_status: serve_tcp(
            0, factory, host="::1", ssl_context=server_context_combined(pki), task_status=task_status))
        with trio.fail_after(60):
            async with await open_v2g_stream("::1", port, 0, client_context) as stream:
                await drive(stream, car, loop_period=0.02, step=0.005)
        nursery.cancel_scope.cancel()
    assert not hw.closed and car.stopped_cleanly
    return connections[0], pnc


@pytest.mark.parametrize("folder", ["iso15118_20", "iso15118_20_ed448"])
async def test_iso20_dc_pnc_over_tls_13(pki: Path, folder: str) -> None:
    contract = Iso20ContractCredentials.from_pki(pki, folder)
    car = Iso20DcCar(soc=40, target_soc=40.5, capacity_wh=2_000, authorization="pnc", contract=contract)
    conn, pnc = await charge(pki, car, client_context_iso20(pki, folder=folder))
    assert conn.protocol is sap.ISO20_DC and conn.tls_version == "TLSv1.3"
    oem_leaf = x509.load_pem_x509_certificate((pki / folder / "certs" / "oemLeafCert.pem").read_bytes())
    assert x509.load_der_x509_certificate(conn.vehicle_certificate) == oem_leaf
    assert car.authorization_used == "PnC" and car.energy_wh > 0
    accepted = [what for what, code in pnc.decisions if code == "OK"]
    assert any(w.startswith("contract") for w in accepted), pnc.decisions
    assert "signature over PnC_AReqAuthorizationMode" in accepted, pnc.decisions


async def test_iso2_pnc_car_on_the_same_port_gets_tls_12(pki: Path) -> None:
    car = Iso2Car(payment="pnc", contract=ContractCredentials.from_pki(pki), soc=40, target_soc=40.5,
                  capacity_wh=2_000)
    conn, _ = await charge(pki, car, client_context_from_pki(pki))
    assert conn.protocol is sap.ISO2 and conn.tls_version == "TLSv1.2" and conn.vehicle_certificate is None
    assert conn.session.payment_option == "Contract" and car.energy_wh > 0
