"""The daemon's configuration: one TOML file (``config/edge.toml`` is the documented example), read into
typed, frozen dataclasses, every problem reported at once with its place in the file.

Schema (the defaults live in the dataclasses below, and only there; the example shows each one)::

    [station]        StationConfig: id, state_dir, model, vendor, serial, control_socket
    [[evse]]         EvseSection (one per charging point): id, interface, plc_interface, evseid, protocols,
                     port, pnc, pnc_without_tls, receipt_interval, watchdog, deviations, timers
      [evse.hardware]  HardwareSection: adapter, bidirectional (simulated), socket (external)
      [evse.tls]       TlsSection: enabled, only, pki, client_auth, keylog
      [evse.slac]      SlacSection: atten_offset_db, validate, restart_on_new_run, modem quirks, timers
    [ocpp]           OcppSection (optional: no section, no CSMS): url, station_id, security_profile,
                     password, ca, cert, key, versions
    [trace]          TraceSection: enabled, dir, max_bytes, max_age_days, max_file_bytes, tls_keylog
    [[quirk]]        QuirkProfile (car quirk profiles): name, match {evccid_prefix | mac_oui |
                     sap_namespace}, deviations (names from DEVIATIONS)

Problems are :class:`ConfigProblem` (path such as ``evse[1].tls.pki``, with 0-based array indices as in
the parsed document, the line, a message): unknown keys (with a "did you mean"), wrong types (naming the
expected one), values out of range, cross-field rules, and with ``check_files`` the files and folders that
must exist. tomllib gives no positions for values, so :func:`key_lines` scans the text for table headers and
keys; a problem whose own key is not in the text (a required key left out) gets its table's line.

Relative paths are relative to the configuration file's folder (``base_dir``). The wiring helpers at the
end turn a config into what the daemon's parts take today (StationSettings, protocols, SignQuirks, timers);
they import the heavy modules only when called, so importing this module costs the stdlib and the two
timer modules.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from edge.v2g.timers import PowerSafetyTimers, SessionTimers
from slac.timers import SlacTimers

if TYPE_CHECKING:
    from cryptography import x509

    from edge.ocpp.station import StationSettings
    from edge.trace import TraceDirectory
    from edge.v2g import sap
    from edge.v2g.charger import EvseConfig
    from edge.v2g.power import SignConvention, SignQuirks
    from edge.v2g.quirks import CarQuirks
    from edge.v2g.tls import CombinedServerContext

#: what an EVSE offers unless told otherwise (edge.v2g.charger.DEFAULT_PROTOCOLS by name; a test keeps them equal)
DEFAULT_PROTOCOLS = ("iso20-dc", "iso20-ac", "iso2", "din")
#: OCPP subprotocols the station speaks (edge.ocpp.connection.OCPP_SUBPROTOCOLS; a test keeps them equal)
OCPP_VERSIONS = ("ocpp2.1", "ocpp2.0.1")
#: PKI folders (Josev's layout, edge.pki.testpki) of which a TLS EVSE's pki folder needs at least one
PKI_PROTOCOL_FOLDERS = ("iso15118_2", "iso15118_20", "iso15118_20_ed448")
HARDWARE_ADAPTERS = ("simulated", "external")
CLIENT_AUTH = ("required", "optional")
MATCH_KINDS = ("evccid_prefix", "mac_oui", "sap_namespace")


@dataclass(frozen=True, slots=True)
class Deviation:
    """A named way some cars differ from the standard that the charger already knows how to handle.
    ``matched_by``: the match kinds the sessions apply it by today (a profile matching otherwise would
    silently do nothing, so it is refused)."""

    description: str
    matched_by: frozenset[str]


#: the registry of deviations a [[quirk]] profile (or an EVSE's ``deviations``) may name: both are
#: edge.v2g.power.SignConvention fields, applied by EVCCID prefix at the -20 SessionSetupReq
#: (edge.v2g.power.SignQuirks) or by MAC OUI / offered namespace when the car connects (edge.v2g.quirks)
DEVIATIONS: dict[str, Deviation] = {
    "negative_discharge_limits": Deviation(
        "-20 BPT discharge limits sent and read as negative numbers (cars built on EVerest's "
        "negative_bidirectional_limits)", frozenset(MATCH_KINDS)),
    "inverted_targets": Deviation(
        "-20 target and present power/current read and written export-positive", frozenset(MATCH_KINDS)),
}

#: evse.timers names: the session timers (applied to every protocol's defaults) and the power-safety ones
#: (``communication_watchdog`` is ``evse.watchdog``; per-request performance budgets are not configurable)
SESSION_TIMER_NAMES = tuple(f.name for f in fields(SessionTimers) if f.name != "performance")
SAFETY_TIMER_NAMES = tuple(f.name for f in fields(PowerSafetyTimers) if f.name != "communication_watchdog")
SLAC_TIMER_NAMES = tuple(f.name for f in fields(SlacTimers))


# ----------------------------------------------------------------------------------------------- problems


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    path: str  # "evse[1].tls.pki"; "" for a problem of the file as a whole (TOML syntax)
    line: int | None
    message: str

    def format(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line is not None else source
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """Every problem found in one configuration; ``str()`` is one ``FILE:LINE: path: message`` per line."""

    def __init__(self, source: str, problems: list[ConfigProblem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(p.format(source) for p in problems))


# ------------------------------------------------------------------------------------------------- schema


@dataclass(frozen=True, slots=True)
class StationConfig:
    id: str  # the charging station's identity (OCPP's station id unless ocpp.station_id says otherwise)
    state_dir: Path = Path("/var/lib/edge")  # OCPP queue, transactions, device model; traces by default
    model: str = "edge"  # BootNotification
    vendor: str = "edge"
    serial: str | None = None
    control_socket: Path = Path("/run/edge/control.sock")  # `edge status` asks the running daemon here


@dataclass(frozen=True, slots=True)
class HardwareSection:
    adapter: str = "simulated"  # HARDWARE_ADAPTERS
    bidirectional: bool = True  # simulated only: a board that can export (-20 cars are offered BPT)
    socket: Path | None = None  # external only (required there): the board adapter's Unix socket


@dataclass(frozen=True, slots=True)
class TlsSection:
    enabled: bool = False  # offer TLS (ISO 15118-2: TLS 1.2; -20: TLS 1.3) besides plain TCP
    only: bool = False  # offer only TLS (needs enabled)
    pki: Path | None = None  # PKI folder in Josev's layout (`edge pki create`): needed by TLS and PnC
    client_auth: str = "required"  # -20 over TLS 1.3: must the car present its certificate (CLIENT_AUTH)
    keylog: bool = False  # write the TLS session keys (NSS key log) to keylog_path(): they decrypt sessions


@dataclass(frozen=True, slots=True)
class SlacSection:
    """ISO 15118-3 SLAC on the EVSE's plc_interface (slac.evse.EvseMatcher options)."""

    atten_offset_db: float = 0.0  # added to the measured attenuation (board and cable calibration)
    validate: bool = False  # take part in CM_VALIDATE (count the car's CP toggles)
    restart_on_new_run: bool = True  # follow a car that starts over with a new RunID mid-match
    set_key_rejected_means_applied: bool = False  # modem quirk: some Qualcomm firmware
    missing_attenuation_db: float | None = None  # modem quirk: use this for value-less profiles (None: ignore them)
    timers: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))  # SLAC_TIMER_NAMES


@dataclass(frozen=True, slots=True)
class EvseSection:
    id: int  # >= 1, unique: the OCPP EVSE id
    interface: str  # network interface of the car's traffic (SDP, TCP/TLS)
    plc_interface: str | None = None  # the PLC modem's Ethernet interface: SLAC runs on it when set
    evseid: str | None = None  # ISO 15118 EVSEID sent to cars (None: DE*EDG*E0001*<id>)
    protocols: tuple[str, ...] = DEFAULT_PROTOCOLS  # offered, in priority order (edge.v2g.charger.SESSIONS)
    port: int = 0  # TCP (and TLS) port; 0: any free one, announced by SDP
    hardware: HardwareSection = field(default_factory=HardwareSection)
    tls: TlsSection = field(default_factory=TlsSection)
    pnc: bool = False  # Plug & Charge: contracts checked against the PKI's MO/V2G roots (needs TLS and pki)
    pnc_without_tls: bool = False  # testbench override: PnC over plain TCP too (ISO 15118-2 forbids it)
    receipt_interval: float | None = None  # PnC: a signed MeteringReceipt every this many seconds of charging
    watchdog: float = PowerSafetyTimers().communication_watchdog or 1.0  # DC: power off after this long silent
    deviations: tuple[str, ...] = ()  # DEVIATIONS applied to every car at this EVSE
    timers: Mapping[str, float | None] = field(default_factory=lambda: MappingProxyType({}))  # timer overrides
    slac: SlacSection = field(default_factory=SlacSection)


@dataclass(frozen=True, slots=True)
class OcppSection:
    url: str  # ws:// or wss:// CSMS endpoint; the station id is appended as the last path segment
    station_id: str  # default: station.id
    security_profile: int = 1  # 1: Basic auth, 2: TLS + Basic auth, 3: mutual TLS
    password: str | None = None  # Basic auth (profiles 1 and 2); the device model's BasicAuthPassword wins
    ca: Path | None = None  # CA file that signed the CSMS's certificate (wss; default: the system's)
    cert: Path | None = None  # profile 3: the station certificate (PEM) ...
    key: Path | None = None  # ... and its private key
    versions: tuple[str, ...] = OCPP_VERSIONS  # subprotocols offered, preferred first


@dataclass(frozen=True, slots=True)
class TraceSection:
    enabled: bool = True  # every session recorded (edge trace list/show read them)
    dir: Path | None = None  # None: <station.state_dir>/traces; resolved by EdgeConfig.trace_dir
    max_bytes: int = 512 * 1024 * 1024  # beyond this total the oldest traces are deleted
    max_age_days: float = 30.0  # and those last written longer ago
    max_file_bytes: int | None = None  # one trace stops growing here (None: a quarter of max_bytes, <= 64 MiB)
    tls_keylog: bool = False  # copy the TLS key-log lines into the traces (needs tls.keylog on TLS EVSEs)


@dataclass(frozen=True, slots=True)
class QuirkMatch:
    """Exactly one of these says which cars a profile is about."""

    evccid_prefix: str | None = None  # the EVCCID the car sends in SessionSetupReq starts with this
    mac_oui: str | None = None  # "AA:BB:CC": the first three bytes of the car's MAC
    sap_namespace: str | None = None  # the car offers this namespace in supportedAppProtocolReq


@dataclass(frozen=True, slots=True)
class QuirkProfile:
    name: str
    match: QuirkMatch
    deviations: tuple[str, ...]  # names from DEVIATIONS


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    station: StationConfig
    evses: tuple[EvseSection, ...]  # [[evse]]
    ocpp: OcppSection | None = None  # None: no CSMS
    trace: TraceSection = field(default_factory=TraceSection)
    quirks: tuple[QuirkProfile, ...] = ()  # [[quirk]]
    source: str = "<config>"

    @property
    def trace_dir(self) -> Path:
        return self.trace.dir if self.trace.dir is not None else self.station.state_dir / "traces"


#: top-level TOML keys and the EdgeConfig fields they fill
TOP_LEVEL = {"station": "station", "evse": "evses", "ocpp": "ocpp", "trace": "trace", "quirk": "quirks"}


def _default(cls: type, name: str) -> Any:
    f = cls.__dataclass_fields__[name]  # type: ignore[attr-defined]
    return f.default_factory() if f.default is MISSING else f.default


def _keys(cls: type, *leave_out: str) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls) if f.name not in leave_out)


# ----------------------------------------------------------------------------------------- line numbers

_HEADER = re.compile(r"\s*(\[\[?)\s*(.*?)\s*(\]\]?)\s*(#.*)?$")


def _split_key(text: str) -> list[str]:
    """The components of a TOML key (``a."b.c".d``), unquoted; a malformed key gives what it can."""
    parts, current, quote, i = [], "", "", 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\" and quote == '"' and i + 1 < len(text):
                current += text[i + 1]
                i += 1
            elif c == quote:
                quote = ""
            else:
                current += c
        elif c in "\"'":
            quote = c
        elif c == ".":
            parts.append(current.strip())
            current = ""
        else:
            current += c
        i += 1
    parts.append(current.strip())
    return parts


class _ValueScan:
    """Follows one value over its lines (comments and strings skipped): open while a bracket or a multi-line
    string is; the line of each element of an array value is noted as ``path[i]``."""

    def __init__(self, path: str, lines: dict[str, int]) -> None:
        self.path = path
        self.lines = lines
        self.depth = 0
        self.in_string = ""
        self.index = -1
        self.expect_element = False

    @property
    def open(self) -> bool:
        return self.depth > 0 or bool(self.in_string)

    def feed(self, text: str, number: int) -> None:
        i = 0
        while i < len(text):
            if self.in_string:
                end = text.find(self.in_string, i)
                if end < 0:
                    return
                i, self.in_string = end + 3, ""
                continue
            c = text[i]
            if c == "#":
                return
            if self.depth == 1 and self.expect_element and c not in " \t,]":
                self.index += 1
                self.lines.setdefault(f"{self.path}[{self.index}]", number)
                self.expect_element = False
            if text.startswith(('"""', "'''"), i):
                self.in_string, i = text[i:i + 3], i + 3
                continue
            if c in "\"'":  # a one-line string: skip to its end
                j = i + 1
                while j < len(text) and text[j] != c:
                    j += 2 if c == '"' and text[j] == "\\" else 1
                i = j + 1
                continue
            if c in "[{":
                self.expect_element = self.depth == 0 and c == "["
                self.depth += 1
            elif c in "]}":
                self.depth -= 1
            elif c == "," and self.depth == 1:
                self.expect_element = True
            i += 1


def _key_end(line: str) -> int:
    """The index of the ``=`` that ends a key on ``line`` (outside quotes), or -1."""
    quote = ""
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        elif c == "=":
            return i
    return -1


def key_lines(text: str) -> dict[str, int]:
    """The line of every table header and key of a TOML text, by path (``evse[1].tls.pki``, array tables
    numbered from 0): enough to place a problem, not a TOML parser (keys inside inline tables and arrays
    get their value's line through :func:`line_of`)."""
    lines: dict[str, int] = {}
    arrays: dict[str, int] = {}  # path of an array of tables -> index of its last element
    table = ""
    value: _ValueScan | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if value is not None and value.open:  # inside a multi-line array or string value
            value.feed(line, number)
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        header = _HEADER.match(line) if stripped.startswith("[") else None
        if header is not None:
            is_array = header.group(1) == "[["
            parts = _split_key(header.group(2))
            path = ""
            for k, part in enumerate(parts):
                path = f"{path}.{part}" if path else part
                if k == len(parts) - 1 and is_array:
                    arrays[path] = arrays.get(path, -1) + 1
                    path = f"{path}[{arrays[path]}]"
                elif path in arrays:
                    path = f"{path}[{arrays[path]}]"
                lines.setdefault(path, number)
            table = path
            continue
        end = _key_end(line)
        if end < 0:
            continue
        path = table
        for part in _split_key(line[:end]):
            path = f"{path}.{part}" if path else part
            lines.setdefault(path, number)
        value = _ValueScan(path, lines)
        value.feed(line[end + 1:], number)
    return lines


def line_of(lines: Mapping[str, int], path: str) -> int | None:
    """The line of ``path`` or of its nearest enclosing key or table that is in the text."""
    while path:
        if path in lines:
            return lines[path]
        if path.endswith("]"):
            path = path[: path.rindex("[")]
        else:
            path = path.rpartition(".")[0]
    return None


# ---------------------------------------------------------------------------------------------- reading

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "a table",
               list: "an array"}
_MAC_OUI = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){2}$")


def _describe(value: Any) -> str:
    kind = next((name for t, name in _TYPE_NAMES.items() if type(value) is t), type(value).__name__)
    shown = repr(value) if not isinstance(value, dict | list) else ""
    return f"{kind} ({shown})" if shown and len(shown) <= 40 else kind


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else f"choose from {', '.join(choices)}"


class _Reader:
    """Reads one parsed document: each accessor checks a value, records a problem and returns a stand-in
    (the default) when it is wrong, so that reading goes on and every problem is found in one pass."""

    def __init__(self, lines: Mapping[str, int], base_dir: Path | None) -> None:
        self.lines = lines
        self.base_dir = base_dir
        self.problems: list[ConfigProblem] = []
        self.files: list[tuple[str, Path, str]] = []  # (path, file, "file" | "pki") to check when asked

    def problem(self, path: str, message: str) -> None:
        self.problems.append(ConfigProblem(path, line_of(self.lines, path), message))

    def has_problem(self, path: str) -> bool:
        return any(p.path == path or p.path.startswith((path + ".", path + "[")) for p in self.problems)

    def table(self, value: Any, path: str, known: Iterable[str], what: str = "a table") -> dict[str, Any]:
        """``value`` as a table with only ``known`` keys (an unknown key is a problem, with a suggestion)."""
        if not isinstance(value, dict):
            self.problem(path, f"expected {what}, got {_describe(value)}")
            return {}
        known = list(known)
        for key in value:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}?" if close else f"known keys here: {', '.join(known)}"
                self.problem(f"{path}.{key}" if path else key, f"unknown key; {hint}")
        return value

    def value(self, table: Mapping[str, Any], path: str, key: str, kind: type, default: Any,
              required: str | None = None) -> Any:
        """``table[key]`` of type ``kind`` (int accepted as float, bool never as a number), else ``default``;
        ``required``: what the key is, for the problem when it is missing."""
        where = f"{path}.{key}" if path else key
        if key not in table:
            if required is not None:
                self.problem(where, f"required: {required}")
            return default
        value = table[key]
        ok = (type(value) is kind or (kind is float and type(value) is int)
              or (kind is Path and type(value) is str))
        if not ok:
            self.problem(where, f"expected {_TYPE_NAMES.get(kind, 'a path (string)')}, got {_describe(value)}")
            return default
        if kind is float:
            return float(value)
        if kind is str and not value.strip():
            self.problem(where, "must not be empty")
            return default
        if kind is Path:
            if not value.strip():
                self.problem(where, "must not be empty")
                return default
            path_value = Path(value).expanduser()
            return path_value if self.base_dir is None or path_value.is_absolute() else self.base_dir / path_value
        return value

    def number(self, table: Mapping[str, Any], path: str, key: str, default: Any, *, minimum: float = 0.0,
               above: bool = True, integer: bool = False, required: str | None = None) -> Any:
        """A number ``> minimum`` (``>=`` unless ``above``)."""
        before = len(self.problems)
        value = self.value(table, path, key, int if integer else float, default, required)
        if key in table and len(self.problems) == before and (value <= minimum if above else value < minimum):
            self.problem(f"{path}.{key}", f"must be {'above' if above else 'at least'} {minimum:g}, got {value:g}")
            return default
        return value

    def choice(self, table: Mapping[str, Any], path: str, key: str, choices: tuple[str, ...], default: str) -> str:
        before = len(self.problems)
        value = self.value(table, path, key, str, default)
        if key in table and len(self.problems) == before and value not in choices:
            self.problem(f"{path}.{key}", f"{value!r} is not one of {', '.join(choices)}; "
                                          f"{_did_you_mean(value, choices)}")
            return default
        return value

    def names(self, table: Mapping[str, Any], path: str, key: str, known: Mapping[str, Any] | tuple[str, ...],
              default: tuple[str, ...], what: str) -> tuple[str, ...]:
        """A list of names from ``known``, each once; an unknown one is named with the known ones."""
        where = f"{path}.{key}"
        value = self.value(table, path, key, list, default)
        if value is default:
            return default
        names: list[str] = []
        for i, name in enumerate(value):
            if not isinstance(name, str):
                self.problem(f"{where}[{i}]", f"expected a string, got {_describe(name)}")
            elif name not in known:
                close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.problem(f"{where}[{i}]", f"unknown {what} {name!r}; {hint}known: {', '.join(known)}")
            elif name in names:
                self.problem(f"{where}[{i}]", f"{name!r} is listed twice")
            else:
                names.append(name)
        return tuple(names)

    def file(self, path: str, value: Path | None, kind: str = "file") -> None:
        if value is not None:
            self.files.append((path, value, kind))

    def timers(self, table: Mapping[str, Any], path: str, key: str, kinds: Mapping[str, str], what: str,
               elsewhere: Mapping[str, str] | None = None) -> Mapping[str, Any]:
        """``{name: seconds}`` overrides; ``kinds[name]`` is "float", "int" or "optional" (``false``: off);
        ``elsewhere``: names configured by another key (name -> that key)."""
        raw = table.get(key, {})
        where = f"{path}.{key}"
        if not isinstance(raw, dict):
            self.problem(where, f"expected a table of {what} = seconds, got {_describe(raw)}")
            return MappingProxyType({})
        values: dict[str, Any] = {}
        for name, value in raw.items():
            at = f"{where}.{name}"
            if elsewhere and name in elsewhere:
                self.problem(at, f"set it as {elsewhere[name]}")
            elif name not in kinds:
                close = difflib.get_close_matches(name, list(kinds), n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.problem(at, f"unknown {what}; {hint}known: {', '.join(kinds)}")
            elif value is False and kinds[name] == "optional":
                values[name] = None
            elif type(value) not in (int, float) or (kinds[name] == "int" and type(value) is not int):
                expected = "an integer" if kinds[name] == "int" else "a number of seconds"
                off = " or false (off)" if kinds[name] == "optional" else ""
                self.problem(at, f"expected {expected}{off}, got {_describe(value)}")
            elif value <= 0:
                self.problem(at, f"must be positive, got {value:g}")
            else:
                values[name] = value
        return MappingProxyType(values)


def _timer_kinds(cls: type, names: Iterable[str]) -> dict[str, str]:
    """Per timer: "optional" (may be None), "int" (a counter) or "float", from its dataclass annotation."""
    by_name = {f.name: str(f.type) for f in fields(cls)}
    return {n: "optional" if "None" in by_name[n] else "int" if by_name[n] == "int" else "float" for n in names}


EVSE_TIMER_KINDS = {**_timer_kinds(SessionTimers, SESSION_TIMER_NAMES),
                    **_timer_kinds(PowerSafetyTimers, SAFETY_TIMER_NAMES)}
SLAC_TIMER_KINDS = _timer_kinds(SlacTimers, SLAC_TIMER_NAMES)


def _read_station(r: _Reader, raw: Any) -> StationConfig:
    t = r.table(raw, "station", _keys(StationConfig))
    c = StationConfig
    return StationConfig(
        id=r.value(t, "station", "id", str, "", required="the charging station's identity, e.g. \"edge-0001\""),
        state_dir=r.value(t, "station", "state_dir", Path, _default(c, "state_dir")),
        model=r.value(t, "station", "model", str, _default(c, "model")),
        vendor=r.value(t, "station", "vendor", str, _default(c, "vendor")),
        serial=r.value(t, "station", "serial", str, None),
        control_socket=r.value(t, "station", "control_socket", Path, _default(c, "control_socket")))


def _read_hardware(r: _Reader, raw: Any, path: str) -> HardwareSection:
    t = r.table(raw, path, _keys(HardwareSection))
    adapter = r.choice(t, path, "adapter", HARDWARE_ADAPTERS, _default(HardwareSection, "adapter"))
    bidirectional = r.value(t, path, "bidirectional", bool, _default(HardwareSection, "bidirectional"))
    socket = r.value(t, path, "socket", Path, None)
    if adapter == "external" and "bidirectional" in t:
        r.problem(f"{path}.bidirectional", "only for adapter = \"simulated\" (an external board says what it can do)")
    if adapter == "simulated" and socket is not None:
        r.problem(f"{path}.socket", "only for adapter = \"external\"")
    if adapter == "external" and socket is None and "socket" not in t:
        r.problem(f"{path}.socket", "required with adapter = \"external\": the board adapter's Unix socket")
    return HardwareSection(adapter, bidirectional, socket)


def _read_tls(r: _Reader, raw: Any, path: str) -> TlsSection:
    t = r.table(raw, path, _keys(TlsSection))
    tls = TlsSection(enabled=r.value(t, path, "enabled", bool, False), only=r.value(t, path, "only", bool, False),
                     pki=r.value(t, path, "pki", Path, None),
                     client_auth=r.choice(t, path, "client_auth", CLIENT_AUTH, _default(TlsSection, "client_auth")),
                     keylog=r.value(t, path, "keylog", bool, False))
    r.file(f"{path}.pki", tls.pki, "pki")
    return tls


def _read_slac(r: _Reader, raw: Any, path: str) -> SlacSection:
    t = r.table(raw, path, _keys(SlacSection))
    c = SlacSection
    missing = r.value(t, path, "missing_attenuation_db", float, None)
    if missing is not None and missing < 0:
        r.problem(f"{path}.missing_attenuation_db", f"must be at least 0 dB, got {missing:g}")
    return SlacSection(atten_offset_db=r.value(t, path, "atten_offset_db", float, _default(c, "atten_offset_db")),
                       validate=r.value(t, path, "validate", bool, _default(c, "validate")),
                       restart_on_new_run=r.value(t, path, "restart_on_new_run", bool,
                                                  _default(c, "restart_on_new_run")),
                       set_key_rejected_means_applied=r.value(t, path, "set_key_rejected_means_applied", bool,
                                                              _default(c, "set_key_rejected_means_applied")),
                       missing_attenuation_db=missing,
                       timers=r.timers(t, path, "timers", SLAC_TIMER_KINDS, "SLAC timer or counter"))


def _read_protocols(r: _Reader, t: Mapping[str, Any], path: str) -> tuple[str, ...]:
    from edge.v2g.charger import SESSIONS, parse_protocols
    from edge.v2g.sap import KNOWN

    where = f"{path}.protocols"
    value = r.value(t, path, "protocols", list, None)
    if value is None:
        return DEFAULT_PROTOCOLS
    if not value:
        r.problem(where, f"offer at least one protocol from {', '.join(SESSIONS)}")
        return DEFAULT_PROTOCOLS
    before = len(r.problems)
    for i, name in enumerate(value):
        if not isinstance(name, str):
            r.problem(f"{where}[{i}]", f"expected a protocol name (string), got {_describe(name)}")
        elif name in KNOWN and name not in SESSIONS:
            r.problem(f"{where}[{i}]", f"{name} has no session implementation here; choose from {', '.join(SESSIONS)}")
        elif name not in SESSIONS:
            r.problem(f"{where}[{i}]", f"unknown protocol {name!r}; {_did_you_mean(name, SESSIONS)}")
        elif name in value[:i]:
            r.problem(f"{where}[{i}]", f"{name} is listed twice")
    if len(r.problems) > before:
        return DEFAULT_PROTOCOLS
    try:  # what `edge secc --protocols` accepts, so both stay one rule
        parse_protocols(",".join(value))
    except ValueError as e:
        r.problem(where, str(e))
        return DEFAULT_PROTOCOLS
    return tuple(value)


def _read_evse(r: _Reader, raw: Any, path: str) -> EvseSection:
    t = r.table(raw, path, _keys(EvseSection))
    c = EvseSection
    evse_id = r.number(t, path, "id", 0, minimum=1, above=False, integer=True,
                       required="the EVSE's number (1, 2, ...; OCPP's evseId)")
    evseid = r.value(t, path, "evseid", str, None)
    if evseid is not None and len(evseid) > 37:  # evseIDType of ISO 15118-2 (the -20 one allows 255)
        r.problem(f"{path}.evseid", f"at most 37 characters (ISO 15118-2), got {len(evseid)}")
    port = r.number(t, path, "port", 0, minimum=0, above=False, integer=True)
    if port > 65535:
        r.problem(f"{path}.port", f"must be a TCP port (0-65535), got {port}")
    section = EvseSection(
        id=evse_id,
        interface=r.value(t, path, "interface", str, "", required="the network interface the car's traffic uses"),
        plc_interface=r.value(t, path, "plc_interface", str, None),
        evseid=evseid,
        protocols=_read_protocols(r, t, path),
        port=port,
        hardware=_read_hardware(r, t.get("hardware", {}), f"{path}.hardware"),
        tls=_read_tls(r, t.get("tls", {}), f"{path}.tls"),
        pnc=r.value(t, path, "pnc", bool, False),
        pnc_without_tls=r.value(t, path, "pnc_without_tls", bool, False),
        receipt_interval=r.number(t, path, "receipt_interval", None),
        watchdog=r.number(t, path, "watchdog", _default(c, "watchdog")),
        deviations=r.names(t, path, "deviations", tuple(DEVIATIONS), (), "deviation"),
        timers=r.timers(t, path, "timers", EVSE_TIMER_KINDS, "timer",
                        elsewhere={"communication_watchdog": f"{path}.watchdog"}),
        slac=_read_slac(r, t.get("slac", {}), f"{path}.slac"))
    _evse_rules(r, section, t, path)
    return section


def _evse_rules(r: _Reader, evse: EvseSection, t: Mapping[str, Any], path: str) -> None:
    """What one EVSE's settings need of each other."""
    tls = evse.tls
    if tls.only and not tls.enabled:
        r.problem(f"{path}.tls.only", "needs tls.enabled = true")
    if tls.enabled and tls.pki is None and not r.has_problem(f"{path}.tls.pki"):
        r.problem(f"{path}.tls.pki", "TLS needs pki: a PKI folder (e.g. from `edge pki create`)")
    if tls.only and "din" in t.get("protocols", ()):
        r.problem(f"{path}.protocols", "DIN SPEC 70121 has no TLS: a tls.only EVSE cannot serve din")
    if evse.pnc:
        if not tls.enabled and not evse.pnc_without_tls:
            r.problem(f"{path}.pnc", "Plug & Charge needs tls.enabled = true (a testbench may set "
                                     "pnc_without_tls = true; ISO 15118-2 forbids PnC without TLS)")
        if tls.pki is None and not r.has_problem(f"{path}.tls.pki"):
            r.problem(f"{path}.pnc", "Plug & Charge needs tls.pki (the MO/V2G roots and the local contract issuer)")
    elif evse.pnc_without_tls:
        r.problem(f"{path}.pnc_without_tls", "only matters with pnc = true")
    if evse.receipt_interval is not None and not evse.pnc:
        r.problem(f"{path}.receipt_interval", "metering receipts are signed with the contract: needs pnc = true")
    if "slac" in t and evse.plc_interface is None:
        r.problem(f"{path}.slac", "SLAC runs on plc_interface: set it, or leave out [evse.slac]")


def _read_ocpp(r: _Reader, raw: Any, station: StationConfig) -> OcppSection:
    path = "ocpp"
    t = r.table(raw, path, _keys(OcppSection))
    url = r.value(t, path, "url", str, "", required="the CSMS's ws:// or wss:// URL")
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            r.problem(f"{path}.url", f"must be a ws:// or wss:// URL with a host, not {url!r}")
    profile = r.value(t, path, "security_profile", int, 1)
    if profile not in (1, 2, 3):
        r.problem(f"{path}.security_profile", f"must be 1 (Basic auth), 2 (TLS + Basic auth) or 3 (mutual TLS), "
                                              f"got {profile}")
    ocpp = OcppSection(url=url, station_id=r.value(t, path, "station_id", str, station.id),
                       security_profile=profile, password=r.value(t, path, "password", str, None),
                       ca=r.value(t, path, "ca", Path, None), cert=r.value(t, path, "cert", Path, None),
                       key=r.value(t, path, "key", Path, None),
                       versions=r.names(t, path, "versions", OCPP_VERSIONS, OCPP_VERSIONS, "OCPP version"))
    if "versions" in t and isinstance(t["versions"], list) and not t["versions"]:
        r.problem(f"{path}.versions", f"offer at least one of {', '.join(OCPP_VERSIONS)}")
    for name in ("ca", "cert", "key"):
        r.file(f"{path}.{name}", getattr(ocpp, name))
    secure = url.startswith("wss://")
    if profile in (2, 3) and url and not secure:
        r.problem(f"{path}.security_profile", f"profile {profile} is TLS: ocpp.url must be wss://")
    if profile == 3:
        for name in ("cert", "key"):
            if getattr(ocpp, name) is None and not r.has_problem(f"{path}.{name}"):
                r.problem(f"{path}.{name}", f"security profile 3 (mutual TLS) needs {path}.{name}")
    elif (ocpp.cert is None) != (ocpp.key is None):
        r.problem(f"{path}.{'key' if ocpp.key is None else 'cert'}", "cert and key go together")
    if not secure and url:
        for name in ("ca", "cert", "key"):
            if name in t:
                r.problem(f"{path}.{name}", "only used with a wss:// URL")
    return ocpp


def _read_trace(r: _Reader, raw: Any) -> TraceSection:
    path = "trace"
    t = r.table(raw, path, _keys(TraceSection))
    c = TraceSection
    trace = TraceSection(enabled=r.value(t, path, "enabled", bool, _default(c, "enabled")),
                         dir=r.value(t, path, "dir", Path, None),
                         max_bytes=r.number(t, path, "max_bytes", _default(c, "max_bytes"), minimum=4096,
                                            above=False, integer=True),
                         max_age_days=r.number(t, path, "max_age_days", _default(c, "max_age_days")),
                         max_file_bytes=r.number(t, path, "max_file_bytes", None, minimum=4096, above=False,
                                                 integer=True),
                         tls_keylog=r.value(t, path, "tls_keylog", bool, False))
    if trace.tls_keylog and not trace.enabled:
        r.problem(f"{path}.tls_keylog", "needs trace.enabled = true")
    return trace


def _read_quirk(r: _Reader, raw: Any, path: str) -> QuirkProfile:
    t = r.table(raw, path, _keys(QuirkProfile))
    name = r.value(t, path, "name", str, "", required="a name for the profile (it appears in the logs)")
    m = r.table(t.get("match", {}), f"{path}.match", MATCH_KINDS, "a table like { evccid_prefix = \"...\" }")
    match = QuirkMatch(**{kind: r.value(m, f"{path}.match", kind, str, None) for kind in MATCH_KINDS})
    given = [kind for kind in MATCH_KINDS if kind in m]
    if len(given) != 1 and isinstance(t.get("match", {}), dict):
        r.problem(f"{path}.match", f"exactly one of {', '.join(MATCH_KINDS)}"
                                   + (f", not {len(given)}" if given else " is required"))
    if match.mac_oui is not None and not _MAC_OUI.match(match.mac_oui):
        r.problem(f"{path}.match.mac_oui", f"expected three bytes as \"AA:BB:CC\", got {match.mac_oui!r}")
    if match.sap_namespace is not None and not match.sap_namespace.startswith("urn:"):
        r.problem(f"{path}.match.sap_namespace",
                  f"expected a protocol namespace (urn:...), got {match.sap_namespace!r}")
    deviations = r.names(t, path, "deviations", tuple(DEVIATIONS), (), "deviation")
    if "deviations" not in t:
        r.problem(f"{path}.deviations", f"required: what these cars do differently, from {', '.join(DEVIATIONS)}")
    elif not deviations and not r.has_problem(f"{path}.deviations"):
        r.problem(f"{path}.deviations", f"name at least one of {', '.join(DEVIATIONS)}")
    if len(given) == 1:
        for deviation in deviations:
            if given[0] not in DEVIATIONS[deviation].matched_by:
                r.problem(f"{path}.match.{given[0]}",
                          f"{deviation} is applied by {' or '.join(sorted(DEVIATIONS[deviation].matched_by))} only "
                          f"so far (matching cars by {given[0]} is not wired into the sessions yet)")
    return QuirkProfile(name, match, deviations)


def _array_of_tables(r: _Reader, raw: Any, path: str) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        r.problem(path, f"expected an array of tables ([[{path}]] sections), got {_describe(raw)}")
        return []
    return raw


def _cross_rules(r: _Reader, cfg: EdgeConfig) -> None:
    """Rules between sections: unique EVSE ids and interfaces, unique profile names, key logs for traces."""
    for attribute, what in (("id", "id"), ("interface", "interface"), ("plc_interface", "plc_interface")):
        seen: dict[Any, int] = {}
        for i, evse in enumerate(cfg.evses):
            value = getattr(evse, attribute)
            if value in (None, "", 0) or (attribute == "interface" and value == "lo"):
                continue  # loopback serves no SDP: several EVSEs may share it (testbenches, `edge simulate`)
            if value in seen:
                r.problem(f"evse[{i}].{attribute}", f"EVSE {what} {value!r} is used by evse[{seen[value]}] too")
            else:
                seen[value] = i
    interfaces: dict[str, int] = {}
    for i, evse in enumerate(cfg.evses):
        interfaces.setdefault(evse.interface, i)
    for i, evse in enumerate(cfg.evses):
        other = interfaces.get(evse.plc_interface) if evse.plc_interface is not None else None
        if other is not None and other != i:
            r.problem(f"evse[{i}].plc_interface", f"{evse.plc_interface!r} is evse[{other}]'s interface")
    names: dict[str, int] = {}
    for i, quirk in enumerate(cfg.quirks):
        if quirk.name in names:
            r.problem(f"quirk[{i}].name", f"profile name {quirk.name!r} is used by quirk[{names[quirk.name]}] too")
        elif quirk.name:
            names[quirk.name] = i
    if cfg.trace.tls_keylog and cfg.trace.enabled:
        missing = [f"evse[{i}]" for i, evse in enumerate(cfg.evses) if evse.tls.enabled and not evse.tls.keylog]
        if missing:
            r.problem("trace.tls_keylog", f"the traces copy the TLS key log: set tls.keylog = true on "
                                          f"{', '.join(missing)}")
        elif not any(evse.tls.enabled for evse in cfg.evses):
            r.problem("trace.tls_keylog", "no EVSE has TLS enabled")


def _check_files(r: _Reader) -> None:
    for path, file, kind in r.files:
        if r.has_problem(path):
            continue
        if kind == "pki":
            if not file.is_dir():
                r.problem(path, f"no folder {file}")
            elif not any((file / folder).is_dir() for folder in PKI_PROTOCOL_FOLDERS):
                r.problem(path, f"{file} has none of the PKI folders {', '.join(PKI_PROTOCOL_FOLDERS)} "
                                "(`edge pki create` writes them)")
        elif not file.is_file():
            r.problem(path, f"no file {file}")


_TOML_POSITION = re.compile(r"^(.*?)\s*\(at (?:line (\d+), column \d+|end of document)\)$")


def parse_config(text: str, source: str = "<config>", *, check_files: bool = False,
                 base_dir: Path | None = None) -> EdgeConfig:
    """The configuration in ``text`` (``source`` names it in problems); ConfigError with every problem.
    ``check_files``: the PKI folders and OCPP certificate files must exist. ``base_dir``: what relative
    paths are relative to (None: the working directory)."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        found = _TOML_POSITION.match(str(e))
        line = int(found.group(2)) if found and found.group(2) else None
        if found and found.group(2) is None:
            line = text.count("\n") + 1
        raise ConfigError(source, [ConfigProblem("", line, found.group(1) if found else str(e))]) from None
    r = _Reader(key_lines(text), base_dir)
    for key in document:
        if key not in TOP_LEVEL:
            close = difflib.get_close_matches(key, list(TOP_LEVEL), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(TOP_LEVEL)}"
            r.problem(key, f"unknown key; {hint}")
    if "station" not in document:
        r.problem("station", "required: a [station] section with at least id = \"...\"")
    station = _read_station(r, document.get("station", {})) if "station" in document else StationConfig("")
    raw_evses = _array_of_tables(r, document.get("evse"), "evse")
    if not raw_evses and not r.has_problem("evse"):
        r.problem("evse", "at least one [[evse]] section is required")
    evses = tuple(_read_evse(r, raw, f"evse[{i}]") for i, raw in enumerate(raw_evses))
    ocpp = _read_ocpp(r, document["ocpp"], station) if "ocpp" in document else None
    trace = _read_trace(r, document.get("trace", {}))
    quirks = tuple(_read_quirk(r, raw, f"quirk[{i}]") for i, raw in enumerate(_array_of_tables(
        r, document.get("quirk"), "quirk")))
    config = EdgeConfig(station, evses, ocpp, trace, quirks, source)
    _cross_rules(r, config)
    if check_files:
        _check_files(r)
    if r.problems:
        raise ConfigError(source, sorted(r.problems, key=lambda p: p.line if p.line is not None else 1 << 30))
    return config


def load_config(path: Path | str, *, check_files: bool = False) -> EdgeConfig:
    """The configuration file at ``path``; OSError when it cannot be read, UnicodeDecodeError when it is not
    UTF-8 (TOML's encoding), ConfigError for its problems.
    Relative paths in it are relative to its folder."""
    path = Path(path)
    text = path.read_bytes().decode("utf-8", errors="strict")
    return parse_config(text, str(path), check_files=check_files, base_dir=path.parent)


# ------------------------------------------------------------------------------------ wiring the daemon


def to_station_settings(cfg: EdgeConfig) -> StationSettings | None:
    """The OCPP station's settings (None without an [ocpp] section)."""
    if cfg.ocpp is None:
        return None
    from edge.ocpp.station import StationSettings

    o = cfg.ocpp
    return StationSettings(o.url, o.station_id, cfg.station.state_dir, o.versions, security_profile=o.security_profile,
                           password=o.password, ca_file=o.ca, cert_file=o.cert, key_file=o.key,
                           model=cfg.station.model, vendor=cfg.station.vendor, serial=cfg.station.serial)


def evse_protocols(evse: EvseSection) -> list[sap.Protocol]:
    """The protocols the EVSE offers, in priority order."""
    from edge.v2g.charger import parse_protocols

    return parse_protocols(",".join(evse.protocols))


def evse_signs(evse: EvseSection) -> SignConvention:
    """How every car at this EVSE is taken to write discharge values (its ``deviations``)."""
    from edge.v2g.power import SignConvention

    return SignConvention(**{name: True for name in evse.deviations})


def sign_quirks(cfg: EdgeConfig) -> SignQuirks:
    """The [[quirk]] profiles as the -20 sessions apply them (by EVCCID prefix, first match wins)."""
    from edge.v2g.power import SignConvention, SignQuirks

    return SignQuirks(tuple((q.match.evccid_prefix, SignConvention(**{name: True for name in q.deviations}))
                            for q in cfg.quirks if q.match.evccid_prefix is not None))


def car_quirks(cfg: EdgeConfig) -> CarQuirks:
    """The [[quirk]] profiles matched when a car connects (by MAC OUI or offered namespace), in order."""
    from edge.v2g.power import SignConvention
    from edge.v2g.quirks import CarQuirkProfile, CarQuirks

    profiles = []
    for q in cfg.quirks:
        for kind in ("mac_oui", "sap_namespace"):
            value = getattr(q.match, kind)
            if value is not None:
                profiles.append(CarQuirkProfile(q.name, kind, value,
                                                SignConvention(**{name: True for name in q.deviations})))
    return CarQuirks(tuple(profiles))


def session_timers(evse: EvseSection) -> dict[str, SessionTimers]:
    """Per offered protocol, its default session timers with the EVSE's overrides ({} without any: the
    sessions keep their defaults)."""
    from edge.v2g import timers

    overrides = {name: value for name, value in evse.timers.items() if name in SESSION_TIMER_NAMES}
    if not overrides:
        return {}
    defaults = {"din": timers.DIN, "iso2": timers.ISO2}
    return {name: replace(defaults.get(name, timers.ISO20), **overrides) for name in evse.protocols}


def power_safety_timers(evse: EvseSection) -> PowerSafetyTimers:
    overrides = {name: value for name, value in evse.timers.items() if name in SAFETY_TIMER_NAMES}
    return PowerSafetyTimers(communication_watchdog=evse.watchdog, **overrides)


def slac_timers(evse: EvseSection) -> SlacTimers:
    return replace(SlacTimers(), **evse.slac.timers)


def slac_matcher_options(evse: EvseSection) -> dict[str, Any]:
    """Keyword arguments of slac.evse.EvseMatcher besides the MAC."""
    s = evse.slac
    return {"timers": slac_timers(evse), "atten_offset_db": s.atten_offset_db, "validate": s.validate,
            "restart_on_new_run": s.restart_on_new_run,
            "set_key_rejected_means_applied": s.set_key_rejected_means_applied,
            "missing_attenuation_db": s.missing_attenuation_db}


def keylog_path(cfg: EdgeConfig, evse: EvseSection) -> Path | None:
    """Where the EVSE's TLS session keys go when tls.keylog is on (NSS key log format, for Wireshark)."""
    return cfg.station.state_dir / "tls-keys" / f"evse{evse.id}.keylog" if evse.tls.keylog else None


def tls_server_context(cfg: EdgeConfig, evse: EvseSection,
                       ocsp_fetched: Callable[[x509.Certificate], bytes | None] | None = None,
                       ) -> CombinedServerContext | None:
    """The EVSE's TLS context (one port for -2 and -20 cars), None without TLS; ValueError/OSError when
    the PKI folder does not give one. ``ocsp_fetched``: the station's OCSP responses to staple (else the PKI
    folder's ``ocsp/`` files only)."""
    if not evse.tls.enabled or evse.tls.pki is None:
        return None
    from edge.v2g.tls import ClientAuth, server_context_combined

    keylog = keylog_path(cfg, evse)
    if keylog is not None:
        keylog.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # session keys: the daemon's eyes only
    return server_context_combined(evse.tls.pki, client_auth=ClientAuth(evse.tls.client_auth), keylog=keylog,
                                   ocsp_fetched=ocsp_fetched)


def evse_config(cfg: EdgeConfig, evse: EvseSection) -> EvseConfig:
    """What the EVSE's sessions share, as far as the configuration says: EVSEID, receipts, signs and sign
    quirks, timers. The daemon adds the charging point, controller, PnC backend (``pnc``) and trace."""
    from edge.v2g.charger import EvseConfig

    return EvseConfig(evse_id=evse.evseid or f"DE*EDG*E0001*{evse.id}", pnc_without_tls=evse.pnc_without_tls,
                      receipt_interval=evse.receipt_interval, timers=session_timers(evse), signs=evse_signs(evse),
                      sign_quirks=sign_quirks(cfg), quirks=car_quirks(cfg))


def trace_directory(cfg: EdgeConfig, clock: Callable[[], float] | None = None) -> TraceDirectory | None:
    """The daemon's trace directory with its limits (None when traces are off)."""
    if not cfg.trace.enabled:
        return None
    from edge.trace import TraceDirectory

    extra = {"clock": clock} if clock is not None else {}
    return TraceDirectory(cfg.trace_dir, max_bytes_total=cfg.trace.max_bytes, max_age_days=cfg.trace.max_age_days,
                          max_file_bytes=cfg.trace.max_file_bytes, **extra)
