"""``edge run --config FILE``: the configuration (edge.config) made into the daemon (edge.daemon) with its
hardware, OCPP station, Plug & Charge backend, traces and control socket, run under systemd's eyes
(edge.systemd: READY=1 once every EVSE listens, STATUS= lines, WATCHDOG=1 while the main loop turns,
STOPPING=1 on SIGTERM).

What the configuration cannot say before the daemon runs (a PKI folder that does not give a TLS context,
a CSMS certificate that does not load) is a :class:`StartupError` naming the key, and the daemon does not
start: systemd shows the line and the unit fails, rather than a charger serving without what it was told
to offer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from edge.config import (
    EdgeConfig,
    EvseSection,
    evse_config,
    evse_protocols,
    keylog_path,
    power_safety_timers,
    slac_matcher_options,
    tls_server_context,
    to_station_settings,
    trace_directory,
)
from edge.controller import ChargingController
from edge.daemon import Daemon, DaemonEvse, OcppTraceRouter, run_until_signal
from edge.hardware import ChargerHardware, SimulatedCharger, bidirectional_charger
from edge.systemd import SystemdNotifier, feed_watchdog, watchdog_interval

if TYPE_CHECKING:
    from cryptography import x509

log = logging.getLogger("edge.run")


class StartupError(Exception):
    """The configuration checked out but something it names does not work: ``key: why``."""


@dataclass
class Built:
    daemon: Daemon
    config: EdgeConfig


def build_hardware(evse: EvseSection) -> ChargerHardware:
    """The EVSE's board adapter."""
    hw = evse.hardware
    if hw.adapter == "simulated":
        return bidirectional_charger() if hw.bidirectional else SimulatedCharger()
    if hw.adapter == "external":
        from edge.hardware.external import ExternalBoard

        assert hw.socket is not None  # the schema requires it
        return ExternalBoard(hw.socket, name=f"evse{evse.id}")
    raise StartupError(f"evse {evse.id}: hardware.adapter: unknown adapter {hw.adapter!r}")


def build_daemon(cfg: EdgeConfig) -> Daemon:
    """Every part of the daemon the configuration describes, nothing started yet."""
    from edge.chargingpoint import ChargingPoint

    traces = trace_directory(cfg, clock=trio.current_time)
    evses: list[DaemonEvse] = []
    # the station (built last) keeps the SECC certificates' OCSP responses fresh (GetCertificateStatus, M06); the
    # TLS contexts, built first, ask it through this late-bound source at each handshake that wants a staple
    ocsp_sources: list[Callable[[x509.Certificate], bytes | None]] = []

    def station_ocsp(cert: x509.Certificate) -> bytes | None:
        return next((der for source in ocsp_sources if (der := source(cert)) is not None), None)

    pnc_backends: dict[Path, object] = {}
    for section in cfg.evses:
        where = f"evse[{section.id}]"
        hardware = build_hardware(section)
        config = evse_config(cfg, section)
        config.controller = ChargingController()
        config.point = ChargingPoint(hardware, f"evse{section.id}", timers=power_safety_timers(section))
        try:
            ssl_context = tls_server_context(cfg, section, ocsp_fetched=station_ocsp)
        except (ValueError, OSError) as e:
            raise StartupError(f"{where}.tls.pki: no TLS server context from {section.tls.pki}: {e}") from e
        if section.pnc:
            assert section.tls.pki is not None  # the schema requires it
            if section.tls.pki not in pnc_backends:
                from edge.pki.plug_and_charge import LocalPlugAndCharge

                try:
                    pnc_backends[section.tls.pki] = LocalPlugAndCharge.from_pki_folder(section.tls.pki)
                except (ValueError, OSError) as e:
                    raise StartupError(f"{where}.tls.pki: no Plug & Charge trust from {section.tls.pki}: {e}") from e
            config.pnc = pnc_backends[section.tls.pki]  # type: ignore[assignment]
        if traces is not None:
            from edge.trace import EvseTrace

            config.trace = EvseTrace(traces, f"evse{section.id}", section.interface,
                                     keylog=cfg.trace.tls_keylog and section.tls.keylog,
                                     keylog_file=keylog_path(cfg, section))
        evses.append(DaemonEvse(section.id, section.interface, hardware, config, protocols=evse_protocols(section),
                                port=section.port, ssl_context=ssl_context, tls_only=section.tls.only,
                                plc_interface=section.plc_interface, slac_options=slac_matcher_options(section)))
    station = _station(cfg, evses)
    if station is not None:
        ocsp_sources.append(station.certificates.cached_ocsp)
    return Daemon(evses, station=station, control_socket=cfg.station.control_socket)


def _station(cfg: EdgeConfig, evses: list[DaemonEvse]):
    settings = to_station_settings(cfg)
    if settings is None:
        return None
    from edge.ocpp.bridge import hardware_meter
    from edge.ocpp.station import EvseLink, OcppStation

    try:
        settings.ssl_context()  # a certificate that does not load is an error now, not at the first connect
    except (ValueError, OSError) as e:
        raise StartupError(f"ocpp: the TLS settings do not work: {e}") from e
    links = []
    for evse in evses:
        board = evse.hardware
        limits = board.dc_limits() or board.ac_limits()
        max_power = limits.max_power if limits is not None else 0.0
        point = evse.point
        links.append(EvseLink(evse.evse_id, evse.config.controller, hardware_meter(board, lambda p=point: p.mode),
                              max_power))
    station = OcppStation(settings, links)
    station.frames = OcppTraceRouter(evses)  # each session's trace gets the OCPP frames about its EVSE
    # the CSMS authorizes contracts (C07): every PnC EVSE's sessions ask through the station
    shared = None
    for evse in evses:
        if evse.config.pnc is not None:
            if shared is None:
                shared = station.use_pnc(evse.config.pnc)  # type: ignore[arg-type]
            evse.config.pnc = shared
    return station


async def serve(daemon: Daemon, notifier: SystemdNotifier | None = None,
                task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> str:
    """The daemon until SIGTERM/SIGINT with systemd told what happens; returns the signal's name."""
    notifier = notifier or SystemdNotifier()
    period = watchdog_interval()
    daemon.ready = lambda: notifier.ready(daemon.summary())
    daemon.status = notifier.status
    if period is not None:
        daemon.tick = min(daemon.tick, period / 4)
    async with trio.open_nursery() as nursery:
        if period is not None and notifier.enabled:
            nursery.start_soon(feed_watchdog, notifier, period, lambda: daemon.alive(period))
        daemon.on_stop = lambda reason: notifier.stopping(reason)
        name = await run_until_signal(daemon, task_status=task_status)
        nursery.cancel_scope.cancel()
    return name
