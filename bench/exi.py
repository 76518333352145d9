"""Speed of the pure-Python EXI codec on typical V2G messages, with reference comparisons.

    python bench/exi.py                  # full run (~2 min, most of it warming up EXIficient and Josev's JSON path)
    python bench/exi.py --quick          # fewer iterations, ~20 s; reference ratios not meaningful
    python bench/exi.py --json out.json  # also write every number as JSON
    python bench/exi.py --no-exificient  # skip the JVM reference (--no-josev-json skips only Josev's JSON path)

For every case the message is checked to round-trip once (real frames: ``encode(decode(b)) == b``;
built messages: ``decode(encode(m)) == m``), then ``exi.decode`` and ``exi.encode`` are timed with
``time.perf_counter_ns``: after a warm-up, ``batches`` batches of ``n`` calls each are timed, the
per-call time of each batch is ``batch_ns / n``, and the median and p90 over the batches are reported
(GC stays enabled, as in real use).

References, in the same run, for every case and both directions:

* EXIficient as Josev uses it (``EXICodec.jar`` through ``tests/interop/exificient.py``):
  (a) its in-JVM time, (b) the full path a Python caller pays through the bridge (pipe + py4j),
  (c) Josev's own py4j JSON API (``EXICodec.encode/decode``), which is what Josev pays per message
  (without its pydantic layer on top). (c) is timed per call from Python (median and p90 over the
  calls, after one warm-up shared by all cases); a case Josev's JSON codec cannot handle is listed
  with the reason.
* The C codecs (libcbv2g, OpenV2G): published ~1-2 µs per message, not measured here; we print the
  ratio to 1.5 µs per operation.

The side-by-side table gives, per case and direction, ours, EXIficient in-JVM and Josev's JSON path
with the ratios reference/ours (> 1: ours is faster), and the run ends with the list of messages where
ours is slower than EXIficient in-JVM.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
# `python bench/exi.py` puts bench/ first on sys.path, where this very file would shadow the
# `exi` package: drop it and put the repository root in front.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import exi  # noqa: E402
from exi.model import iso2_msgbody as b2  # noqa: E402
from exi.model import iso2_msgdatatypes as dt2  # noqa: E402
from exi.model import iso2_msgdef, iso2_msgheader  # noqa: E402
from exi.model import iso20_commontypes as ct20  # noqa: E402
from exi.model import iso20_dc as dc20  # noqa: E402

VECTORS = Path(__file__).resolve().parents[1].parent / "shared" / "vectors" / "exi_vectors.jsonl"

#: real frames used (ids in exi_vectors.jsonl)
FRAME_IDS = {
    "iso2_cd_req": "iso2:CurrentDemandReq:ca0c8424d1",  # Audi Q4 e-tron vs EVerest
    "iso2_cd_res": "iso2:CurrentDemandRes:9cb4471c01",  # same session, EVerest's answer
    "din_cd_req": "din:CurrentDemandReq:004a3bf1e8",  # VW ID.4 vs EVerest
    "iso20_cl_req": "iso20-dc:DC_ChargeLoopReq:c15f1d3fae",  # EDF eVDriveFlow session
    "iso20_cl_res": "iso20-dc:DC_ChargeLoopRes:0fa5ace9d6",  # EDF eVDriveFlow session
}

C_REF_US = 1.5  # libcbv2g / OpenV2G, published ~1-2 µs per message (not measured here)
HEADLINE_TARGET_US = 60.0
HEADLINE_AIM_US = 30.0
DIRECTIONS = ("decode", "encode")
#: the namespace Josev's EXICodec.encode/decode selects the grammar by, per proto of ours
JOSEV_NAMESPACES = {
    "apphand": "urn:iso:15118:2:2010:AppProtocol",
    "din": "urn:din:70121:2012:MsgDef",
    "iso2": "urn:iso:15118:2:2013:MsgDef",
    "iso20-common": "urn:iso:std:iso:15118:-20:CommonMessages",
    "iso20-ac": "urn:iso:std:iso:15118:-20:AC",
    "iso20-dc": "urn:iso:std:iso:15118:-20:DC",
    "iso20-acdp": "urn:iso:std:iso:15118:-20:ACDP",
    "iso20-wpt": "urn:iso:std:iso:15118:-20:WPT",
}


# --------------------------------------------------------------------------------------- timing


@dataclasses.dataclass(slots=True)
class Timing:
    median_us: float
    p90_us: float
    min_us: float
    cpu_median_us: float  # thread CPU time per call: shows how much of the wall time is contention
    calls: int

    def as_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


def _quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def measure(fn: Callable[[], object], *, batch_s: float, batches: int, warmup_s: float) -> Timing:
    """Median/p90 per-call time of ``fn()`` over ``batches`` batches of ~``batch_s`` seconds each."""
    perf = time.perf_counter_ns
    # warm-up, and calibrate the batch size on it
    n, t_end = 0, perf() + int(warmup_s * 1e9)
    t0 = perf()
    while True:
        fn()
        n += 1
        if perf() >= t_end and n >= 10:
            break
    per_call_ns = (perf() - t0) / n
    size = max(1, int(batch_s * 1e9 / per_call_ns))
    rng = range(size)
    cpu = time.thread_time_ns
    per_batch: list[float] = []
    cpu_batch: list[float] = []
    for _ in range(batches):
        c0 = cpu()
        t0 = perf()
        for _ in rng:
            fn()
        t1 = perf()
        cpu_batch.append((cpu() - c0) / size)
        per_batch.append((t1 - t0) / size)
    return Timing(
        median_us=statistics.median(per_batch) / 1000.0,
        p90_us=_quantile(per_batch, 0.9) / 1000.0,
        min_us=min(per_batch) / 1000.0,
        cpu_median_us=statistics.median(cpu_batch) / 1000.0,
        calls=size * batches,
    )


# ---------------------------------------------------------------------------------------- cases


@dataclasses.dataclass(slots=True)
class Case:
    name: str
    proto: str
    message: Any
    data: bytes
    source: str


def load_frames(path: Path) -> dict[str, dict[str, Any]]:
    wanted = set(FRAME_IDS.values())
    found: dict[str, dict[str, Any]] = {}
    with path.open() as fh:
        for line in fh:
            if line.strip():
                rec = json.loads(line)
                if rec["id"] in wanted:
                    found[rec["id"]] = rec
    missing = wanted - found.keys()
    if missing:
        raise SystemExit(f"vectors missing from {path}: {sorted(missing)}")
    return found


def pv(multiplier: int, unit: str, value: int) -> dt2.PhysicalValueType:
    return dt2.PhysicalValueType(Multiplier=multiplier, Unit=unit, Value=value)


def rn(exponent: int, value: int) -> ct20.RationalNumberType:
    return ct20.RationalNumberType(Exponent=exponent, Value=value)


def iso2_message(session_id: bytes, **body: Any) -> iso2_msgdef.V2G_Message:
    return iso2_msgdef.V2G_Message(
        Header=iso2_msgheader.MessageHeaderType(SessionID=session_id), Body=b2.BodyType(**body)
    )


def build_charge_parameter_discovery_res(session_id: bytes) -> iso2_msgdef.V2G_Message:
    """Full SAScheduleList: 3 tuples, each a 24-entry PMaxSchedule and a 6-entry SalesTariff."""
    tuples = []
    for t in range(1, 4):
        pmax = dt2.PMaxScheduleType(
            PMaxScheduleEntry=[
                dt2.PMaxScheduleEntryType(
                    RelativeTimeInterval=dt2.RelativeTimeIntervalType(
                        start=h * 3600, duration=3600 if h == 23 else None
                    ),
                    PMax=pv(1, "W", 15000 - 1000 * t - 100 * (h % 6)),
                )
                for h in range(24)
            ]
        )
        entries = []
        for e in range(6):
            costs = [dt2.CostType(costKind="relativePricePercentage", amount=80 + 10 * e, amountMultiplier=0)]
            if e % 2:
                costs.append(dt2.CostType(costKind="CarbonDioxideEmission", amount=350 + e, amountMultiplier=-1))
            cons = [dt2.ConsumptionCostType(startValue=pv(0, "Wh", 0), Cost=costs)]
            if e == 3:
                cons.append(
                    dt2.ConsumptionCostType(
                        startValue=pv(3, "Wh", 20),
                        Cost=[dt2.CostType(costKind="RenewableGenerationPercentage", amount=40, amountMultiplier=0)],
                    )
                )
            entries.append(
                dt2.SalesTariffEntryType(
                    RelativeTimeInterval=dt2.RelativeTimeIntervalType(
                        start=e * 4 * 3600, duration=4 * 3600 if e == 5 else None
                    ),
                    EPriceLevel=1 + e % 3,
                    ConsumptionCost=cons,
                )
            )
        tariff = dt2.SalesTariffType(
            Id=f"tariff{t}",
            SalesTariffID=t,
            SalesTariffDescription=f"Tariff {t} (day/night)",
            NumEPriceLevels=3,
            SalesTariffEntry=entries,
        )
        tuples.append(dt2.SAScheduleTupleType(SAScheduleTupleID=t, PMaxSchedule=pmax, SalesTariff=tariff))
    evse = dt2.DC_EVSEChargeParameterType(
        DC_EVSEStatus=dt2.DC_EVSEStatusType(
            NotificationMaxDelay=0, EVSENotification="None", EVSEIsolationStatus="Valid", EVSEStatusCode="EVSE_Ready"
        ),
        EVSEMaximumCurrentLimit=pv(0, "A", 500),
        EVSEMaximumPowerLimit=pv(2, "W", 1500),
        EVSEMaximumVoltageLimit=pv(0, "V", 920),
        EVSEMinimumCurrentLimit=pv(0, "A", 0),
        EVSEMinimumVoltageLimit=pv(0, "V", 150),
        EVSECurrentRegulationTolerance=pv(0, "A", 5),
        EVSEPeakCurrentRipple=pv(-1, "A", 20),
        EVSEEnergyToBeDelivered=pv(3, "Wh", 60),
    )
    return iso2_message(
        session_id,
        ChargeParameterDiscoveryRes=b2.ChargeParameterDiscoveryResType(
            ResponseCode="OK",
            EVSEProcessing="Finished",
            SAScheduleList=dt2.SAScheduleListType(SAScheduleTuple=tuples),
            DC_EVSEChargeParameter=evse,
        ),
    )


def build_payment_details_req(session_id: bytes, rnd: random.Random) -> iso2_msgdef.V2G_Message:
    """eMAID plus ContractSignatureCertChain: ~700-byte leaf and 2 sub-CA certificates."""
    chain = dt2.CertificateChainType(
        Certificate=rnd.randbytes(712),
        SubCertificates=dt2.SubCertificatesType(Certificate=[rnd.randbytes(645), rnd.randbytes(598)]),
    )
    return iso2_message(
        session_id,
        PaymentDetailsReq=b2.PaymentDetailsReqType(eMAID="DEABCC12345678", ContractSignatureCertChain=chain),
    )


def build_certificate_installation_res(session_id: bytes, rnd: random.Random) -> iso2_msgdef.V2G_Message:
    """SA provisioning chain (leaf + 2 sub-CAs), contract chain with Id, encrypted key, DH key, eMAID."""
    sa_chain = dt2.CertificateChainType(
        Certificate=rnd.randbytes(563),
        SubCertificates=dt2.SubCertificatesType(Certificate=[rnd.randbytes(611), rnd.randbytes(590)]),
    )
    contract_chain = dt2.CertificateChainType(
        Id="id1",
        Certificate=rnd.randbytes(706),
        SubCertificates=dt2.SubCertificatesType(Certificate=[rnd.randbytes(640), rnd.randbytes(602)]),
    )
    return iso2_message(
        session_id,
        CertificateInstallationRes=b2.CertificateInstallationResType(
            ResponseCode="OK",
            SAProvisioningCertificateChain=sa_chain,
            ContractSignatureCertChain=contract_chain,
            ContractSignatureEncryptedPrivateKey=dt2.ContractSignatureEncryptedPrivateKeyType(
                Id="id2", value=rnd.randbytes(48)
            ),
            DHpublickey=dt2.DiffieHellmanPublickeyType(Id="id3", value=b"\x04" + rnd.randbytes(64)),
            eMAID=dt2.EMAIDType(Id="id4", value="DEABCC12345678"),
        ),
    )


def build_iso20_charge_loop_req(real: dc20.DC_ChargeLoopReqType) -> dc20.DC_ChargeLoopReqType:
    """The real frame's header/display parameters with a fully populated dynamic BPT control mode."""
    mode = dc20.BPT_Dynamic_DC_CLReqControlModeType(
        DepartureTime=7200,
        EVTargetEnergyRequest=rn(1, 5360),
        EVMaximumEnergyRequest=rn(1, 6700),
        EVMinimumEnergyRequest=rn(0, 0),
        EVMaximumChargePower=rn(1, 4900),
        EVMinimumChargePower=rn(0, 245),
        EVMaximumChargeCurrent=rn(-2, 15806),
        EVMaximumVoltage=rn(0, 460),
        EVMinimumVoltage=rn(0, 310),
        EVMaximumDischargePower=rn(1, 1100),
        EVMinimumDischargePower=rn(0, 245),
        EVMaximumDischargeCurrent=rn(-1, 350),
        EVMaximumV2XEnergyRequest=rn(1, 2000),
        EVMinimumV2XEnergyRequest=rn(1, -1500),
    )
    return dataclasses.replace(
        real,
        BPT_Dynamic_DC_CLReqControlMode=mode,
        BPT_Scheduled_DC_CLReqControlMode=None,
        Dynamic_DC_CLReqControlMode=None,
        Scheduled_DC_CLReqControlMode=None,
        CLReqControlMode=None,
    )


def build_iso20_charge_loop_res(real: dc20.DC_ChargeLoopResType) -> dc20.DC_ChargeLoopResType:
    """The real frame's header/present values with EVSEStatus and a full dynamic BPT control mode."""
    mode = dc20.BPT_Dynamic_DC_CLResControlModeType(
        DepartureTime=7200,
        MinimumSOC=20,
        TargetSOC=80,
        AckMaxDelay=30,
        EVSEMaximumChargePower=rn(1, 5000),
        EVSEMinimumChargePower=rn(0, 0),
        EVSEMaximumChargeCurrent=rn(0, 200),
        EVSEMaximumVoltage=rn(0, 500),
        EVSEMaximumDischargePower=rn(1, 5000),
        EVSEMinimumDischargePower=rn(0, 0),
        EVSEMaximumDischargeCurrent=rn(0, 200),
        EVSEMinimumVoltage=rn(0, 50),
    )
    return dataclasses.replace(
        real,
        EVSEStatus=ct20.EVSEStatusType(NotificationMaxDelay=0, EVSENotification="MeteringConfirmation"),
        BPT_Dynamic_DC_CLResControlMode=mode,
        BPT_Scheduled_DC_CLResControlMode=None,
        Dynamic_DC_CLResControlMode=None,
        Scheduled_DC_CLResControlMode=None,
        CLResControlMode=None,
    )


def real_case(name: str, frames: dict[str, dict[str, Any]], key: str) -> Case:
    rec = frames[FRAME_IDS[key]]
    data = bytes.fromhex(rec["hex"])
    msg = exi.decode(rec["protocol"], data)
    if exi.encode(rec["protocol"], msg) != data:
        raise AssertionError(f"{name}: real frame does not re-encode to the same bytes")
    return Case(name, rec["protocol"], msg, data, f"real frame {rec['id']}")


def built_case(name: str, proto: str, msg: Any, source: str) -> Case:
    data = exi.encode(proto, msg)
    if exi.decode(proto, data) != msg:
        raise AssertionError(f"{name}: decode(encode(m)) != m")
    return Case(name, proto, msg, data, source)


def build_cases(frames: dict[str, dict[str, Any]]) -> list[Case]:
    rnd = random.Random(15118)
    cd_req = real_case("-2 CurrentDemandReq", frames, "iso2_cd_req")
    sid = cd_req.message.Header.SessionID
    cl_req = exi.decode("iso20-dc", bytes.fromhex(frames[FRAME_IDS["iso20_cl_req"]]["hex"]))
    cl_res = exi.decode("iso20-dc", bytes.fromhex(frames[FRAME_IDS["iso20_cl_res"]]["hex"]))
    return [
        cd_req,
        real_case("-2 CurrentDemandRes", frames, "iso2_cd_res"),
        built_case(
            "-2 ChargeParameterDiscoveryRes",
            "iso2",
            build_charge_parameter_discovery_res(sid),
            "built: 3 SAScheduleTuples x (24 PMax entries + SalesTariff with 6 entries), DC_EVSEChargeParameter",
        ),
        built_case(
            "-2 PaymentDetailsReq",
            "iso2",
            build_payment_details_req(sid, rnd),
            "built: eMAID + contract chain (712 B cert + 2 sub-CAs), random cert bytes",
        ),
        built_case(
            "-2 CertificateInstallationRes",
            "iso2",
            build_certificate_installation_res(sid, rnd),
            "built: SA prov. chain + contract chain (3 certs each), 48 B key, 65 B DH key, eMAID; no Signature",
        ),
        real_case("DIN CurrentDemandReq", frames, "din_cd_req"),
        built_case(
            "-20 DC_ChargeLoopReq BPT dyn",
            "iso20-dc",
            build_iso20_charge_loop_req(cl_req),
            f"built from {FRAME_IDS['iso20_cl_req']}, all BPT_Dynamic fields set",
        ),
        built_case(
            "-20 DC_ChargeLoopRes BPT dyn",
            "iso20-dc",
            build_iso20_charge_loop_res(cl_res),
            f"built from {FRAME_IDS['iso20_cl_res']}, EVSEStatus + all BPT_Dynamic fields set",
        ),
    ]


# ------------------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "loadavg": load,
        "platform": platform.platform(),
    }


# ---------------------------------------------------------------------------------- EXIficient


def _short(exc: BaseException, limit: int = 160) -> str:
    """First line of an exception's message, shortened: fits a table row, not a Java stack trace."""
    lines = str(exc).strip().splitlines()
    first = lines[0].strip() if lines else type(exc).__name__
    return first if len(first) <= limit else first[: limit - 3] + "..."


def _call_ns(fn: Callable[[], object]) -> int:
    t0 = time.perf_counter_ns()
    fn()
    return time.perf_counter_ns() - t0


def _call_stats(samples_ns: list[int]) -> dict[str, float | int]:
    return {
        "median_us": statistics.median(samples_ns) / 1000.0,
        "p90_us": _quantile([float(s) for s in samples_ns], 0.9) / 1000.0,
        "calls": len(samples_ns),
    }


@dataclasses.dataclass(slots=True)
class JosevCase:
    """A case Josev's JSON codec decodes: the namespace it is decoded with and Josev's JSON of it."""

    case: Case
    namespace: str
    json_text: str  # the encoder's input
    encodes: bool  # False: EXICodec.encode fails on Josev's own JSON, only decode is timed

    def one_round(self, peer: Any) -> tuple[int, int | None]:
        """Time one decode and (if it works) one encode through Josev's JSON API, in ns."""
        dec = _call_ns(lambda: peer.decode_josev_json(self.namespace, self.case.data))
        if not self.encodes:
            return dec, None
        return dec, _call_ns(lambda: peer.encode_josev_json(self.namespace, self.json_text))


def prepare_josev_case(peer: Any, case: Case) -> tuple[JosevCase | None, dict[str, Any]]:
    """Put ``case`` once through Josev's JSON codec (decode, re-encode, compare with the bytes).

    Returns the case to time (None if Josev cannot decode it) and its report row, in which a
    direction Josev's JSON API cannot do is ``{"unavailable": reason}``.
    """
    ns = JOSEV_NAMESPACES.get(case.proto)
    if ns is None:
        reason = f"Josev's JSON API has no namespace for proto {case.proto!r}"
        return None, {d: {"unavailable": reason} for d in DIRECTIONS}
    row: dict[str, Any] = {"namespace": ns}
    try:
        json_text = peer.decode_josev_json(ns, case.data)
    except Exception as exc:
        row["decode"] = {"unavailable": f"Josev's JSON decode fails: {_short(exc)}"}
        row["encode"] = {"unavailable": "no Josev JSON to encode (its decode fails)"}
        return None, row
    row["json_chars"] = len(json_text)
    try:
        back = peer.encode_josev_json(ns, json_text)
    except Exception as exc:
        row["encode"] = {"unavailable": f"Josev's JSON encode fails on its own decode output: {_short(exc)}"}
        return JosevCase(case, ns, json_text, encodes=False), row
    row["reencode_identical"] = back == case.data
    return JosevCase(case, ns, json_text, encodes=True), row


def bench_josev_json(
    peer: Any, cases: list[Case], *, warmup_s: float, measure_s: float, min_calls: int, max_calls: int
) -> dict[str, Any]:
    """Josev's own EXICodec.decode/encode (its JSON format) through py4j, timed from Python, per case.

    Every call is timed on its own (they take milliseconds): one warm-up shared by all cases
    (round-robin, the JIT mostly warms code they share: JAXB, EXIficient), then per case decode and
    encode calls alternate until ``measure_s`` has passed and ``min_calls`` are done, at most
    ``max_calls``; median and p90 over the calls.
    """
    rows: dict[str, dict[str, Any]] = {}
    todo: list[JosevCase] = []
    for c in cases:
        jc, rows[c.name] = prepare_josev_case(peer, c)
        if jc is not None:
            todo.append(jc)

    rounds, t_end = 0, time.perf_counter() + warmup_s
    while todo and (rounds == 0 or time.perf_counter() < t_end):
        for jc in todo:
            jc.one_round(peer)
        rounds += 1

    for jc in todo:
        row = rows[jc.case.name]
        dec: list[int] = []
        enc: list[int] = []
        t_end = time.perf_counter() + measure_s
        try:
            while len(dec) < max_calls and (len(dec) < min_calls or time.perf_counter() < t_end):
                d, e = jc.one_round(peer)
                dec.append(d)
                if e is not None:
                    enc.append(e)
        except Exception as exc:
            reason = f"failed while timing: {_short(exc)}"
            row["decode"] = {"unavailable": reason}
            row.setdefault("encode", {"unavailable": reason})
            continue
        row["decode"] = _call_stats(dec)
        if jc.encodes:
            row["encode"] = _call_stats(enc)
    return {
        "cases": rows,
        "warmup_s": warmup_s,
        "warmup_rounds": rounds,
        "settings": {"measure_s": measure_s, "min_calls": min_calls, "max_calls": max_calls},
    }


def run_exificient(cases: list[Case], quick: bool, josev_json: bool) -> dict[str, Any]:
    """EXIficient in-JVM and through the bridge for every case, then Josev's JSON path for every case."""
    from bench.exificient_ref import bench_exificient
    from tests.interop.exificient import ExificientPeer

    t0 = time.perf_counter()
    peer = ExificientPeer().start()
    try:
        # every case, also with --quick (there with little JIT warm-up); one shared warm-up over all cases
        kw: dict[str, int] = (
            {"warmup": 500, "iterations": 300, "rt_iterations": 30}
            if quick
            else {"warmup": 5000, "iterations": 3000, "rt_iterations": 100}
        )
        subset, full_list_error = cases, None
        try:
            ref = bench_exificient([(c.proto, c.data.hex()) for c in subset], peer=peer, **kw)
        except Exception as exc:
            if len(cases) <= 2:
                raise
            full_list_error = f"EXIficient failed on the full case list: {_short(exc)}"
            print(f"  {full_list_error}; retrying with CurrentDemandReq/Res only")
            subset = cases[:2]
            ref = bench_exificient([(c.proto, c.data.hex()) for c in subset], peer=peer, **kw)
        pings = []
        for _ in range(50):
            p0 = time.perf_counter_ns()
            peer.request({"op": "ping"})
            pings.append(time.perf_counter_ns() - p0)
        out: dict[str, Any] = {
            "jvm_start_s": peer.jvm_start_s,
            "cases": {c.name: row for c, row in zip(subset, ref["cases"], strict=True)},
            "settings": kw,
            "bridge_ping_us": statistics.median(pings) / 1000.0,
        }
        if full_list_error:
            out["full_list_error"] = full_list_error
        if not josev_json:
            out["josev_json"] = {"skipped": "--no-josev-json"}
        else:
            try:
                out["josev_json"] = bench_josev_json(
                    peer,
                    cases,
                    warmup_s=1.0 if quick else 30.0,
                    measure_s=0.3 if quick else 6.0,
                    min_calls=3 if quick else 10,
                    max_calls=20 if quick else 300,
                )
            except Exception as exc:
                print(f"  Josev py4j JSON path failed: {exc}")
                out["josev_json"] = {"error": _short(exc)}
        out["wall_s"] = time.perf_counter() - t0
        return out
    finally:
        peer.close()


# ---------------------------------------------------------------------------------- comparison


def _why_missing(block: dict[str, Any], what: str) -> str:
    """Why a whole reference has no numbers: ``{"skipped": flag}`` or ``{"error": message}``."""
    if "skipped" in block:
        return f"{what} skipped ({block['skipped']})"
    return f"{what} failed: {block.get('error', 'no result')}"


def build_comparison(cases: list[Case], ours: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    """Per case and direction: ours, EXIficient in-JVM / from Python, Josev's JSON path, ratios ref/ours.

    ``ref`` is run_exificient()'s result, or ``{"skipped": ...}`` / ``{"error": ...}``. Wherever a
    reference has no number, the entry says why (``exificient_unavailable``, ``josev_json_unavailable``).
    """
    jvm_rows: dict[str, Any] = ref.get("cases", {})
    if "cases" not in ref:
        jvm_missing = _why_missing(ref, "EXIficient")
    else:
        jvm_missing = ref.get("full_list_error", "not measured")
    josev = ref.get("josev_json", ref)
    josev_rows: dict[str, Any] = josev.get("cases", {})
    josev_missing = _why_missing(josev, "Josev's JSON path") if "cases" not in josev else "not measured"

    out: dict[str, Any] = {}
    for c in cases:
        jvm = jvm_rows.get(c.name)
        jrow = josev_rows.get(c.name)
        entry: dict[str, Any] = {"proto": c.proto, "bytes": len(c.data)}
        if jrow is not None and "reencode_identical" in jrow:
            entry["josev_reencode_identical"] = jrow["reencode_identical"]
        for d in DIRECTIONS:
            own = ours[c.name][d]
            e: dict[str, Any] = {"ours_us": own["median_us"], "ours_p90_us": own["p90_us"]}
            if jvm is not None:
                e["exificient_jvm_us"] = jvm[f"{d}_us"]
                e["ratio_jvm"] = jvm[f"{d}_us"] / own["median_us"]
                if f"rt_{d}_us" in jvm:
                    e["exificient_bridge_us"] = jvm[f"rt_{d}_us"]
                    e["ratio_bridge"] = jvm[f"rt_{d}_us"] / own["median_us"]
            else:
                e["exificient_unavailable"] = jvm_missing
            jd = (jrow or {}).get(d, {})
            if "median_us" in jd:
                e["josev_json_us"] = jd["median_us"]
                e["josev_json_p90_us"] = jd["p90_us"]
                e["josev_json_calls"] = jd["calls"]
                e["ratio_josev_json"] = jd["median_us"] / own["median_us"]
            else:
                e["josev_json_unavailable"] = jd.get("unavailable", josev_missing)
            entry[d] = e
        out[c.name] = entry
    return out


def slower_than_jvm(comparison: dict[str, Any]) -> list[dict[str, Any]]:
    """(case, direction, ratio) wherever EXIficient in-JVM is faster than ours (ratio < 1.0)."""
    return [
        {"case": name, "direction": d, "ratio_jvm": row[d]["ratio_jvm"]}
        for name, row in comparison.items()
        for d in DIRECTIONS
        if "ratio_jvm" in row[d] and row[d]["ratio_jvm"] < 1.0
    ]


# ---------------------------------------------------------------------------------------- main


def fmt_ratio(ref_us: float, ours_us: float) -> str:
    """ref/ours with 2 decimals below 10 (3 just below/above 1, so 0.998x is not printed as 1.00x), fewer above."""
    if ours_us <= 0:
        return "n/a"
    r = ref_us / ours_us
    if r < 10:
        return f"{r:.3f}x" if f"{r:.2f}" == "1.00" and r != 1.0 else f"{r:.2f}x"
    return f"{r:.1f}x" if r < 100 else f"{r:,.0f}x"


def fmt_us(us: float) -> str:
    return f"{us:.1f}" if us < 1000 else f"{us:,.0f}"


def speed_word(ref_us: float, ours_us: float) -> str:
    """'ours 2.3x faster' or 'ours 1.4x slower' (never a 'faster' ratio below 1)."""
    r = ref_us / ours_us
    return f"ours {r:.1f}x faster" if r >= 1 else f"ours {1 / r:.1f}x slower"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer iterations (whole run < 30 s)")
    ap.add_argument("--json", type=Path, metavar="OUT", help="write all numbers as JSON to OUT")
    ap.add_argument("--no-exificient", action="store_true", help="skip the EXIficient (JVM) reference")
    ap.add_argument("--no-josev-json", action="store_true", help="skip Josev's py4j JSON path (slow to warm up)")
    ap.add_argument("--vectors", type=Path, default=VECTORS)
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    # Many short batches: on a shared machine a batch that gets preempted is an outlier the median
    # ignores, while long batches would all absorb the same share of other processes' time slices.
    batch_s, batches, warmup_s = (0.003, 31, 0.05) if args.quick else (0.005, 201, 0.3)
    mach = machine_info()
    print("EXI codec benchmark (pure Python)" + (" --quick" if args.quick else ""))
    print(f"machine: {mach['python']} | CPU {mach['cpu']} x{mach['cpus']} | loadavg {mach['loadavg']}")
    print(f"timing: {batches} batches of ~{batch_s * 1000:.0f} ms after {warmup_s:.2f} s warm-up, per-call time")
    print("        per batch, median and p90 over batches, GC enabled; 'cpu' = median thread CPU time per call")
    if mach["loadavg"] and mach["cpus"] and mach["loadavg"][0] > 0.5 * mach["cpus"]:
        print(
            f"WARNING: machine is busy (load {mach['loadavg'][0]:.1f} on {mach['cpus']} CPUs): wall times are inflated"
        )
    print()

    cases = build_cases(load_frames(args.vectors))
    results: dict[str, Any] = {}
    print(
        f"{'case':32}{'proto':>9}{'bytes':>7}{'decode µs':>11}{'p90':>8}{'cpu':>8}{'encode µs':>11}{'p90':>8}{'cpu':>8}"
    )
    for c in cases:
        proto, data, msg = c.proto, c.data, c.message
        dec = measure(lambda p=proto, d=data: exi.decode(p, d), batch_s=batch_s, batches=batches, warmup_s=warmup_s)
        enc = measure(lambda p=proto, m=msg: exi.encode(p, m), batch_s=batch_s, batches=batches, warmup_s=warmup_s)
        results[c.name] = {
            "proto": proto,
            "bytes": len(data),
            "source": c.source,
            "decode": dec.as_dict(),
            "encode": enc.as_dict(),
        }
        print(
            f"{c.name:32}{proto:>9}{len(data):>7}{dec.median_us:>11.1f}{dec.p90_us:>8.1f}{dec.cpu_median_us:>8.1f}"
            f"{enc.median_us:>11.1f}{enc.p90_us:>8.1f}{enc.cpu_median_us:>8.1f}"
        )

    req, res = cases[0], cases[1]

    def headline_pair() -> None:
        exi.decode(req.proto, req.data)
        exi.encode(res.proto, res.message)

    head = measure(headline_pair, batch_s=batch_s, batches=batches, warmup_s=warmup_s)
    verdict = "OK" if head.median_us <= HEADLINE_TARGET_US else "OVER TARGET"
    if head.median_us <= HEADLINE_AIM_US:
        verdict = "OK, within aim"
    print(
        f"\ndecode CurrentDemandReq + encode CurrentDemandRes (-2): {head.median_us:.1f} µs median "
        f"(target <= {HEADLINE_TARGET_US:.0f}, aim {HEADLINE_AIM_US:.0f}) [{verdict}]; "
        f"p90 {head.p90_us:.1f}, cpu {head.cpu_median_us:.1f} µs"
    )

    dec_req = results[req.name]["decode"]["median_us"]
    enc_res = results[res.name]["encode"]["median_us"]
    print(
        f"vs C reference (published ~1-2 µs, not measured here): decode CurrentDemandReq "
        f"{dec_req / C_REF_US:.0f}x, encode CurrentDemandRes {enc_res / C_REF_US:.0f}x, "
        f"pair {head.median_us / (2 * C_REF_US):.0f}x slower than {C_REF_US} µs per message"
    )

    report: dict[str, Any] = {
        "machine": mach,
        "quick": args.quick,
        "timing": {"batch_s": batch_s, "batches": batches, "warmup_s": warmup_s},
        "cases": results,
        "headline": {
            "name": "decode CurrentDemandReq + encode CurrentDemandRes (-2)",
            **head.as_dict(),
            "target_us": HEADLINE_TARGET_US,
            "aim_us": HEADLINE_AIM_US,
        },
        "c_reference": {
            "assumed_us_per_message": C_REF_US,
            "measured": False,
            "ratio_decode_req": dec_req / C_REF_US,
            "ratio_encode_res": enc_res / C_REF_US,
            "ratio_pair": head.median_us / (2 * C_REF_US),
        },
    }

    if args.no_exificient:
        print("\nEXIficient reference: skipped (--no-exificient)")
        ref: dict[str, Any] = {"skipped": "--no-exificient"}
    else:
        print("\nEXIficient (Josev's EXICodec.jar, via tests/interop/exificient.py) ...")
        try:
            ref = run_exificient(cases, args.quick, not args.no_josev_json)
        except Exception as exc:
            bar = "!" * 100
            print(f"{bar}\n!! EXIficient REFERENCE COULD NOT RUN: {type(exc).__name__}: {exc}\n{bar}")
            ref = {"error": f"{type(exc).__name__}: {exc}"}
        else:
            print_exificient(ref, head.median_us, req.name, res.name)
            ref["speedup"] = speedups(ref, head.median_us, req.name, res.name)
    report["exificient"] = ref

    comparison = build_comparison(cases, results, ref)
    slower = slower_than_jvm(comparison) if "cases" in ref else None
    report["comparison"] = {
        "ratio": "reference_us / ours_us (median per call); > 1 means ours is faster",
        "cases": comparison,
        "slower_than_exificient_jvm": slower,
    }
    if "cases" in ref:
        print_comparison(comparison, ref)
        if args.quick:
            print(
                "  NOTE --quick: EXIficient gets far too little JIT warm-up (and Josev's JSON path a few calls),"
                "\n  so its times are pessimistic and the ratios flatter us; quote the full run instead."
            )

    total = time.perf_counter() - t_start
    report["wall_s"] = total
    print(f"\ntotal wall time {total:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {args.json}")
    print(slower_line(slower, ref, len(cases)))
    return 0


def josev_headline(ref: dict[str, Any], req: str, res: str) -> dict[str, float | int] | str:
    """Josev's JSON path on the headline pair (sum of the two per-case medians), or why there is none."""
    jj = ref.get("josev_json", {})
    if "cases" not in jj:
        return _why_missing(jj, "Josev's JSON path")
    dec = jj["cases"].get(req, {}).get("decode", {})
    enc = jj["cases"].get(res, {}).get("encode", {})
    if "median_us" not in dec or "median_us" not in enc:
        return "not available: " + "; ".join(x["unavailable"] for x in (dec, enc) if "unavailable" in x)
    return {
        "decode_req_us": dec["median_us"],
        "encode_res_us": enc["median_us"],
        "pair_us": dec["median_us"] + enc["median_us"],
        "decode_calls": dec["calls"],
        "encode_calls": enc["calls"],
    }


def speedups(ref: dict[str, Any], head_us: float, req: str, res: str) -> dict[str, float]:
    rows = ref["cases"]
    out = {
        "vs_in_jvm": (rows[req]["decode_us"] + rows[res]["encode_us"]) / head_us,
        "vs_python_bridge": (rows[req]["rt_decode_us"] + rows[res]["rt_encode_us"]) / head_us,
    }
    jj = josev_headline(ref, req, res)
    if isinstance(jj, dict):
        out["vs_josev_json"] = jj["pair_us"] / head_us
    return out


def print_exificient(ref: dict[str, Any], head_us: float, req: str, res: str) -> None:
    """Set-up of the references and the headline pair against (a), (b) and (c)."""
    print(f"  JVM start {ref['jvm_start_s']} s, reference wall time {ref['wall_s']:.1f} s, settings {ref['settings']}")
    print("  (a) in-JVM = System.nanoTime around EXIficient only (EXI <-> XML text)")
    print(
        "  (b) from Python = ExificientPeer.decode/encode round trip (JSON line over a pipe to the bridge"
        f" process, py4j into the JVM); bridge ping alone {ref['bridge_ping_us']:.0f} µs"
    )
    print(
        "  (c) Josev's EXICodec.encode/decode with its JSON, via the bridge (includes one pipe hop Josev"
        " does not pay,\n      excludes the pydantic model <-> JSON layer Josev adds on top); each call timed"
        " from Python"
    )
    jj = ref["josev_json"]
    if "cases" in jj:
        st = jj["settings"]
        print(
            f"      warm-up {jj['warmup_rounds']} rounds over all cases in >= {jj['warmup_s']:.0f} s, then per case"
            f" decode/encode alternating for {st['measure_s']} s, {st['min_calls']}..{st['max_calls']} calls each"
        )
    if req not in ref["cases"] or res not in ref["cases"]:
        return
    r_req, r_res = ref["cases"][req], ref["cases"][res]
    jvm = r_req["decode_us"] + r_res["encode_us"]
    py = r_req["rt_decode_us"] + r_res["rt_encode_us"]
    print(f"\n  decode CurrentDemandReq + encode CurrentDemandRes (-2), ours {head_us:.1f} µs:")
    print(f"    (a) EXIficient in-JVM          {jvm:>10.1f} µs   -> {speed_word(jvm, head_us)}")
    print(f"    (b) EXIficient from Python     {py:>10.1f} µs   -> {speed_word(py, head_us)}")
    head = josev_headline(ref, req, res)
    if isinstance(head, str):
        print(f"    (c) Josev py4j JSON path: {head}")
    else:
        print(
            f"    (c) Josev py4j JSON path       {head['pair_us']:>10.1f} µs   -> "
            f"{speed_word(head['pair_us'], head_us)}  (decode {head['decode_req_us']:.0f} "
            f"+ encode {head['encode_res_us']:.0f} µs, sum of the per-case medians)"
        )


def print_comparison(comparison: dict[str, Any], ref: dict[str, Any]) -> None:
    """Every case, both directions: ours against (a), (b) and (c), ratio = reference / ours."""
    josev_global = "cases" not in ref["josev_json"]
    print("\nEvery case side by side: median µs per call; ratio = reference / ours (> 1: ours is faster)")
    print(
        f"  {'case':31}{'dir':>4}{'ours':>9}{'p90':>8}{'(a) JVM':>10}{'ratio':>8}"
        f"{'(b) Py':>9}{'ratio':>8}{'(c) Josev':>11}{'ratio':>9}"
    )
    notes: list[str] = []
    for name, row in comparison.items():
        for i, d in enumerate(DIRECTIONS):
            e = row[d]
            ours = e["ours_us"]
            line = f"  {name if i == 0 else '':31}{d[:3]:>4}{fmt_us(ours):>9}{fmt_us(e['ours_p90_us']):>8}"
            if "exificient_jvm_us" in e:
                line += f"{fmt_us(e['exificient_jvm_us']):>10}{fmt_ratio(e['exificient_jvm_us'], ours):>8}"
            else:
                line += f"{'n/a':>10}{'':>8}"
                if e["exificient_unavailable"] not in notes:
                    notes.append(e["exificient_unavailable"])
            if "exificient_bridge_us" in e:
                line += f"{fmt_us(e['exificient_bridge_us']):>9}{fmt_ratio(e['exificient_bridge_us'], ours):>8}"
            else:
                line += f"{'n/a':>9}{'':>8}"
            if "josev_json_us" in e:
                star = "*" if d == "encode" and row.get("josev_reencode_identical") is False else ""
                line += f"{fmt_us(e['josev_json_us']) + star:>11}{fmt_ratio(e['josev_json_us'], ours):>9}"
            elif josev_global:
                line += f"{'n/a':>11}"
            else:
                line += f"{'n/a':>11}  ({e['josev_json_unavailable']})"
            print(line.rstrip())
    if josev_global:
        notes.append(_why_missing(ref["josev_json"], "(c) Josev's JSON path"))
    if any(row.get("josev_reencode_identical") is False for row in comparison.values()):
        notes.append("* Josev's EXICodec.encode of its own JSON gives other bytes than the case's EXI")
    for note in notes:
        print(f"  n/a: {note}" if not note.startswith("*") else f"  {note}")


def slower_line(slower: list[dict[str, Any]] | None, ref: dict[str, Any], n_cases: int) -> str:
    head = "ours slower than EXIficient in-JVM (ratio < 1.0):"
    if slower is None:
        return f"{head} not measured ({_why_missing(ref, 'EXIficient')})"
    listed = ", ".join(f"{s['case']} {s['direction']} {fmt_ratio(s['ratio_jvm'], 1.0)}" for s in slower) or "none"
    measured = len(ref["cases"])
    partial = f" (EXIficient measured only {measured} of {n_cases} cases)" if measured < n_cases else ""
    return f"{head} {listed}{partial}"


if __name__ == "__main__":
    sys.exit(main())
