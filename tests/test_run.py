"""``edge run --config``: the daemon from its configuration under systemd's protocols (edge.run, edge.systemd).

The end-to-end test runs ``edge run`` as its own process in a charger namespace with NOTIFY_SOCKET and
WATCHDOG_USEC set as systemd sets them, reads the notify socket (READY=1 once listening, WATCHDOG=1 while
running, STATUS= lines, STOPPING=1 on SIGTERM), charges a car, asks ``edge status``, and checks the trace."""

from __future__ import annotations

import contextvars
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from edge.logs import LogFieldsFilter, bind_log_fields, log_fields
from edge.systemd import (
    JournalHandler,
    SystemdNotifier,
    encode_journal_fields,
    journal_stream_connected,
    watchdog_interval,
)
from edge.trace import read_trace
from tests.netns import charger_and_cars, require_root

REPO = Path(__file__).resolve().parent.parent


def _datagram_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    return sock


# ------------------------------------------------------------------------------------------- sd_notify


def test_notifier_sends_ready_status_and_watchdog_datagrams(tmp_path: Path) -> None:
    sock = _datagram_socket(tmp_path / "notify")
    notifier = SystemdNotifier(str(tmp_path / "notify"))
    assert notifier.ready("EVSE 1: listening\nEVSE 2: listening")
    assert notifier.watchdog()
    assert notifier.stopping("SIGTERM received")
    got = [sock.recv(4096).decode() for _ in range(3)]
    assert got[0] == "READY=1\nSTATUS=EVSE 1: listening EVSE 2: listening"  # STATUS is one line
    assert got[1] == "WATCHDOG=1"
    assert got[2] == "STOPPING=1\nSTATUS=SIGTERM received"


def test_notifier_reaches_an_abstract_socket_and_does_nothing_outside_systemd() -> None:
    name = f"edge-test-notify-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(5)
    assert SystemdNotifier("@" + name).ready()
    assert sock.recv(100) == b"READY=1"
    quiet = SystemdNotifier("")
    assert not quiet.enabled and not quiet.ready()


def test_a_notify_socket_that_is_gone_does_not_stop_the_daemon(tmp_path: Path) -> None:
    notifier = SystemdNotifier(str(tmp_path / "nobody-listens"))
    assert notifier.enabled and notifier.watchdog() is False


def test_watchdog_interval_is_systemds_and_only_for_this_process() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "10000000"}) == 10.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}) == 4.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}) is None  # meant for another
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "ten"}) is None
    assert watchdog_interval({}) is None


# ------------------------------------------------------------------------------------------------ journald


def _parse_journal(datagram: bytes) -> dict[str, str]:
    fields, rest = {}, datagram
    while rest:
        line, _, after = rest.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields[key.decode()] = value.decode()
            rest = after
        else:  # binary-safe form: KEY \n length(le64) value \n
            (length,) = struct.unpack("<Q", after[:8])
            fields[line.decode()] = after[8:8 + length].decode()
            assert after[8 + length:9 + length] == b"\n"
            rest = after[9 + length:]
    return fields


def test_journal_fields_round_trip_including_multi_line_values() -> None:
    encoded = encode_journal_fields({"MESSAGE": "Traceback:\n  line 1\n", "EVSE": "2"})
    assert _parse_journal(encoded) == {"MESSAGE": "Traceback:\n  line 1\n", "EVSE": "2"}


async def test_journal_records_carry_the_evse_and_session_fields_of_their_task(tmp_path: Path) -> None:
    sock = _datagram_socket(tmp_path / "journal")
    handler = JournalHandler(str(tmp_path / "journal"))
    logger = logging.getLogger("edge.test.journal")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

    async def evse_task(evse_id: int, session: str | None) -> None:
        bind_log_fields(EVSE=evse_id)
        if session is not None:
            bind_log_fields(SESSION_ID=session, PROTOCOL="iso2", EVCCID="0A0B0C0D0E0F")
        logger.warning("hello from %d", evse_id)

    # sessions handled outside a task of their own (earlier tests call handle() directly) leave fields behind
    bind_log_fields(EVSE=None, SESSION_ID=None, PROTOCOL=None, EVCCID=None)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(evse_task, 1, "A1B2C3D4E5F60708")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(evse_task, 2, None)
        logger.info("from the station")
    finally:
        logger.removeHandler(handler)
        handler.close()
    first, second, third = (_parse_journal(sock.recv(65536)) for _ in range(3))
    assert first["MESSAGE"] == "hello from 1" and first["PRIORITY"] == "4"
    assert (first["EVSE"], first["SESSION_ID"], first["PROTOCOL"], first["EVCCID"]) == (
        "1", "A1B2C3D4E5F60708", "iso2", "0A0B0C0D0E0F")
    assert second["EVSE"] == "2" and "SESSION_ID" not in second  # one task's fields do not leak into another
    assert "EVSE" not in third and third["PRIORITY"] == "6" and third["LOGGER"] == "edge.test.journal"
    assert log_fields() == {}


def test_stderr_lines_get_the_fields_as_a_prefix() -> None:
    def in_a_fresh_context() -> None:  # a task's context starts without fields, whatever ran before
        record = logging.LogRecord("edge", logging.INFO, __file__, 1, "m", (), None)
        LogFieldsFilter().filter(record)
        assert record.fields == ""  # type: ignore[attr-defined]
        bind_log_fields(EVSE=3)
        LogFieldsFilter().filter(record)
        assert record.fields == "[EVSE=3] "  # type: ignore[attr-defined]

    contextvars.Context().run(in_a_fresh_context)
    assert "EVSE" not in log_fields()  # what the fresh context bound stayed there


def test_journal_stream_is_recognised_by_device_and_inode(tmp_path: Path) -> None:
    with open(tmp_path / "stream", "w") as stream:
        st = os.fstat(stream.fileno())
        assert journal_stream_connected({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, stream)
        assert not journal_stream_connected({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}, stream)
        assert not journal_stream_connected({}, stream)


# ------------------------------------------------------------------------------------------ the unit file


def test_the_systemd_unit_verifies_and_keeps_least_privilege(tmp_path: Path) -> None:
    analyze = Path("/usr/bin/systemd-analyze")
    if not analyze.exists():
        pytest.fail("systemd-analyze is needed (Debian package systemd)") if os.environ.get("CI") else pytest.skip(
            "no systemd-analyze")
    unit = (REPO / "systemd" / "edge.service").read_text()
    assert "/opt/edge/bin/edge run --config /etc/edge/edge.toml" in unit
    # verify with this checkout's edge in place of the installed path (verify checks the executable exists)
    edge = Path(sys.executable).with_name("edge")
    (tmp_path / "edge.service").write_text(unit.replace("/opt/edge/bin/edge", str(edge)))
    result = subprocess.run([str(analyze), "verify", str(tmp_path / "edge.service")], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    settings = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#"))
    assert settings["Type"] == "notify" and int(settings["WatchdogSec"]) > 0
    assert settings["AmbientCapabilities"].split() == ["CAP_NET_RAW", "CAP_NET_ADMIN"]
    assert settings["CapabilityBoundingSet"].split() == ["CAP_NET_RAW", "CAP_NET_ADMIN"]
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert settings[key] == "yes", key
    assert settings["ProtectSystem"] == "strict" and settings["User"] == "edge"
    for key in ("StateDirectory", "LogsDirectory", "ConfigurationDirectory", "RuntimeDirectory"):
        assert settings[key] == "edge", key
    sysusers = (REPO / "systemd" / "edge.sysusers.conf").read_text()
    assert any(line.split()[:2] == ["u", "edge"] for line in sysusers.splitlines() if line.strip())


# ----------------------------------------------------------------------------------- edge run end to end


def test_edge_run_refuses_a_bad_configuration_with_the_same_message_as_config_check(tmp_path: Path) -> None:
    config = tmp_path / "edge.toml"
    config.write_text('[station]\nid = "x"\n\n[[evse]]\nid = 1\ninterface = "eth9"\nprotocol = ["din"]\n')
    run = subprocess.run([sys.executable, "-m", "edge.cli", "run", "--config", str(config)], capture_output=True,
                         text=True, cwd=REPO, timeout=60)
    check = subprocess.run([sys.executable, "-m", "edge.cli", "config", "check", str(config)], capture_output=True,
                           text=True, cwd=REPO, timeout=60)
    assert run.returncode == 1 and check.returncode == 1
    assert f"{config}:7: evse[0].protocol: unknown key" in run.stderr
    assert run.stderr.strip() == check.stdout.strip()


def test_edge_run_says_which_key_names_a_pki_that_gives_no_tls(tmp_path: Path) -> None:
    (tmp_path / "pki" / "iso15118_2").mkdir(parents=True)  # the folder exists, its certificates do not
    config = tmp_path / "edge.toml"
    config.write_text(f'[station]\nid = "x"\nstate_dir = "{tmp_path}/state"\n\n[[evse]]\nid = 1\n'
                      'interface = "lo"\n[evse.tls]\nenabled = true\npki = "pki"\n')
    run = subprocess.run([sys.executable, "-m", "edge.cli", "run", "--config", str(config)], capture_output=True,
                         text=True, cwd=REPO, timeout=60)
    assert run.returncode == 1, run.stderr
    assert "evse[1].tls.pki: no TLS server context" in run.stderr


def _daemon_config(tmp_path: Path, csms_url: str | None = None) -> Path:
    config = tmp_path / "edge.toml"
    text = (f'[station]\nid = "edge-run-test"\nstate_dir = "{tmp_path}/state"\n'
            f'control_socket = "{tmp_path}/control.sock"\n\n'
            '[[evse]]\nid = 1\ninterface = "secc0"\nprotocols = ["iso2", "din"]\n\n'
            '[[evse]]\nid = 2\ninterface = "secc1"\nprotocols = ["din"]\n[evse.hardware]\nbidirectional = false\n')
    if csms_url:
        text += f'\n[ocpp]\nurl = "{csms_url}"\nversions = ["ocpp2.0.1"]\n'
    config.write_text(text)
    return config


async def _drain(stream: trio.abc.ReceiveStream | None, into: bytearray) -> None:
    assert stream is not None
    while chunk := await stream.receive_some(65536):
        into += chunk


async def _notifications(sock: trio.socket.SocketType, until: str, timeout: float, seen: list[str]) -> None:
    with trio.fail_after(timeout):
        while True:
            datagram = (await sock.recv(4096)).decode()
            seen.append(datagram)
            if until in datagram.splitlines():
                return


async def test_edge_run_under_systemds_protocols_charges_a_car_feeds_the_watchdog_and_stops_on_sigterm(
        tmp_path: Path) -> None:
    require_root()
    notify = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await notify.bind(str(tmp_path / "notify"))
    config = _daemon_config(tmp_path)
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"}
    env.pop("WATCHDOG_PID", None)
    env.pop("JOURNAL_STREAM", None)
    seen: list[str] = []
    stderr = bytearray()
    with charger_and_cars(2) as (charger, cars):
        daemon = await trio.lowlevel.open_process(
            ["nsenter", f"--net=/var/run/netns/{charger}", sys.executable, "-m", "edge.cli", "run", "--config",
             str(config)], cwd=REPO, env=env, stderr=subprocess.PIPE)
        try:
            async with trio.open_nursery() as nursery:
                # drained all along: a daemon whose stderr pipe fills up blocks in its logging (a loaded machine
                # logs more), and could then not answer SIGTERM
                nursery.start_soon(_drain, daemon.stderr, stderr)
                await _notifications(notify, "READY=1", 60, seen)
                assert any(line.startswith("STATUS=EVSE 1 (secc0): listening") for line in seen[-1].splitlines())
                count_before = len(seen)
                with trio.move_on_after(1.0):  # 400 ms watchdog: fed every 200 ms
                    await _notifications(notify, "never", 2, seen)
                assert sum(d == "WATCHDOG=1" for d in seen[count_before:]) >= 3
                car = await trio.run_process(
                    ["nsenter", f"--net=/var/run/netns/{cars[0]}", sys.executable, "-m", "edge.cli", "ev", "--iface",
                     "ev0", "--protocol", "iso2", "--capacity-kwh", "2", "--soc", "40", "--target-soc", "41"],
                    cwd=REPO, capture_stdout=True, check=False)
                result = json.loads(car.stdout.decode().strip().splitlines()[-1])
                assert result["outcome"] == "completed", result
                status = await trio.run_process([sys.executable, "-m", "edge.cli", "status", "--socket",
                                                 str(tmp_path / "control.sock"), "--json"], cwd=REPO,
                                                capture_stdout=True)
                document = json.loads(status.stdout)
                assert [e["state"] for e in document["evses"]] == ["listening", "listening"]
                energy = [e["energy_imported_wh"] for e in document["evses"]]
                assert energy[0] > 0 and energy[1] == 0
                daemon.send_signal(signal.SIGTERM)
                await _notifications(notify, "STOPPING=1", 20, seen)
                with trio.fail_after(20):
                    code = await daemon.wait()
        finally:
            if daemon.returncode is None:
                daemon.kill()
                await daemon.wait()
    log = stderr.decode()
    assert code == 0, log
    assert "[EVSE=1 PROTOCOL=iso2 SESSION_ID=" in log  # the session's lines carry its fields
    traces = sorted((tmp_path / "state" / "traces").glob("*.cbor"))
    assert len(traces) == 1 and traces[0].name.startswith("evse1")
    records = list(read_trace(traces[0]))
    assert any(r.kind == "v2gtp" for r in records)


async def _board_process(path: Path, *extra: str) -> trio.Process:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "edge.cli", "board", "simulate", "--socket", str(path), *extra], cwd=REPO,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    with trio.fail_after(20):
        line = await process.stdout.receive_some(4096)
    assert line.startswith(b"listening"), line
    return process


async def _status(tmp_path: Path) -> dict:
    result = await trio.run_process([sys.executable, "-m", "edge.cli", "status", "--socket",
                                     str(tmp_path / "control.sock"), "--json"], cwd=REPO, capture_stdout=True)
    return json.loads(result.stdout)


async def test_edge_run_with_external_boards_ends_a_charge_when_the_car_is_unplugged(tmp_path: Path) -> None:
    """Two EVSEs on external boards (each its own `edge board simulate` process); the first car's cable is
    pulled mid-charge (the board says CP A): its connection is closed at once, its transaction ends as
    EVDisconnected; the second car charges to its end, untouched."""
    require_root()
    from tests.ocpp_station_rig import sent_by_station
    from tests.test_ocpp_csms import CsmsProcess

    boards = [await _board_process(tmp_path / "board1.sock"), await _board_process(tmp_path / "board2.sock",
                                                                                   "--charge-only")]
    notify = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await notify.bind(str(tmp_path / "notify"))
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")}
    env.pop("WATCHDOG_USEC", None)
    seen: list[str] = []
    try:
        with charger_and_cars(2) as (charger, cars):
            csms = CsmsProcess(tmp_path, 0, [], netns=charger)
            try:
                config = tmp_path / "edge.toml"
                config.write_text(
                    f'[station]\nid = "CS1"\nstate_dir = "{tmp_path}/state"\n'
                    f'control_socket = "{tmp_path}/control.sock"\n'
                    f'[[evse]]\nid = 1\ninterface = "secc0"\nprotocols = ["iso2"]\n'
                    f'[evse.hardware]\nadapter = "external"\nsocket = "{tmp_path}/board1.sock"\n'
                    f'[[evse]]\nid = 2\ninterface = "secc1"\nprotocols = ["din"]\n'
                    f'[evse.hardware]\nadapter = "external"\nsocket = "{tmp_path}/board2.sock"\n'
                    f'[ocpp]\nurl = "{csms.url}"\n')
                daemon = await trio.lowlevel.open_process(
                    ["nsenter", f"--net=/var/run/netns/{charger}", sys.executable, "-m", "edge.cli", "run",
                     "--config", str(config)], cwd=REPO, env=env, stderr=subprocess.DEVNULL)
                try:
                    await _notifications(notify, "READY=1", 60, seen)
                    with trio.fail_after(20):
                        while [e["cp"] for e in (await _status(tmp_path))["evses"]] != ["B", "B"]:
                            await trio.sleep(0.1)
                    doomed = await trio.lowlevel.open_process(
                        ["nsenter", f"--net=/var/run/netns/{cars[0]}", sys.executable, "-m", "edge.cli", "ev",
                         "--iface", "ev0", "--protocol", "iso2", "--capacity-kwh", "500", "--soc", "10",
                         "--target-soc", "90"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                    steady = await trio.lowlevel.open_process(
                        ["nsenter", f"--net=/var/run/netns/{cars[1]}", sys.executable, "-m", "edge.cli", "ev",
                         "--iface", "ev0", "--protocol", "din", "--capacity-kwh", "2", "--soc", "40",
                         "--target-soc", "42"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                    with trio.fail_after(60):
                        while not (document := await _status(tmp_path))["evses"][0]["current_a"] > 10:
                            await trio.sleep(0.2)
                    assert document["evses"][0]["contactors"] == "closed"
                    assert boards[0].stdin is not None
                    await boards[0].stdin.send_all(b"unplug\n")
                    pulled = trio.current_time()
                    with trio.fail_after(10):  # the connection is closed at once, not at a sequence timeout
                        await doomed.wait()
                    assert trio.current_time() - pulled < 5
                    document = await _status(tmp_path)
                    first = document["evses"][0]
                    assert (first["cp"], first["session"], first["contactors"]) == ("A", None, "open")
                    with trio.fail_after(90):
                        await steady.wait()
                    assert steady.returncode == 0
                    assert (await _status(tmp_path))["evses"][1]["energy_imported_wh"] > 0
                    daemon.send_signal(signal.SIGTERM)
                    with trio.fail_after(20):
                        assert await daemon.wait() == 0
                finally:
                    if daemon.returncode is None:
                        daemon.kill()
                        await daemon.wait()
                log = csms.log()
            finally:
                csms.stop()
    finally:
        for board in boards:
            board.kill()
            await board.wait()
    started = [e for e in sent_by_station(log, "TransactionEvent") if e["eventType"] == "Started"]
    assert len(started) == 2
    by_tx = {e["transactionInfo"]["transactionId"]: e for e in sent_by_station(log, "TransactionEvent")
             if e["eventType"] == "Ended"}
    reasons = sorted((e["triggerReason"], e["transactionInfo"].get("stoppedReason")) for e in by_tx.values())
    assert reasons == [("ChargingStateChanged", "StoppedByEV"), ("EVDeparted", "EVDisconnected")], reasons
