"""The OCPP 2.0.1 device model (Part 1 §4, Part 2 use cases B05-B08 and the appendix's controller components),
sans-IO: no sockets, no clock, no files.

A :class:`DeviceModel` holds components (name, optional instance, optional EVSE id / connector id), each with
variables (name, optional instance), each variable with attributes (``Actual``, ``Target``, ``MinSet``, ``MaxSet``)
that carry a value, a mutability (``ReadOnly``, ``WriteOnly``, ``ReadWrite``) and the persistent/constant flags, and
characteristics (dataType, unit, minLimit, maxLimit, valuesList, supportsMonitoring). Values are kept as the strings
OCPP sends; :meth:`DeviceModel.value` and the typed properties parse them for code.

What the CSMS gets, already in wire form (camelCase as the 2.0.1 schemas spell it; they also validate against 2.1):

- :meth:`DeviceModel.get_variables` answers a GetVariablesRequest payload, :meth:`DeviceModel.set_variables` a
  SetVariablesRequest payload (B05/B06); :meth:`DeviceModel.request_limit_error` says when a request is over
  ``ItemsPerMessage``/``BytesPerMessage`` and which CALLERROR the caller answers instead;
- :meth:`DeviceModel.base_report` (GetBaseReport, B07) and :meth:`DeviceModel.get_report` (GetReport, B08) give
  ``reportData`` items of NotifyReportRequest; :func:`report_pages` cuts them into NotifyReportRequest payloads
  (``seqNo``, ``tbc``).

Names are matched case-insensitively (the schemas say component and variable names are); answers echo the CSMS's
spelling. A WriteOnly value (``SecurityCtrlr.BasicAuthPassword``) is never read out or logged: GetVariables answers
Rejected (reasonCode ``WriteOnly``), reports omit its value; code reads it with :meth:`DeviceModel.value`. A supported
attribute without a value reads as ``""`` (B06.FR.13).

Persistence: each attribute has a stable key, ``Component[instance]@evse.connector/Variable[instance]:Attribute``
with the optional parts left out (``OCPPCommCtrlr/HeartbeatInterval``,
``OCPPCommCtrlr/MessageAttempts[TransactionEvent]``, ``EVSE@1/Power:MaxSet``, ``Connector@1.1/ConnectorType``). A
change to a persistent attribute (by SetVariables or by the station through :meth:`DeviceModel.update`) goes to the
``persist(key, value)`` callback before it takes effect; a new model takes the saved values back as ``stored``
(a value that no longer validates, or a key that is unknown, not persistent or a constant, is skipped with a
warning). ``overrides`` (same keys) is the integrator's configuration: applied before ``stored``, and an invalid one
is an error. Every accepted change also goes to the :meth:`DeviceModel.on_change` subscribers so the station can act
on it (a new HeartbeatInterval, a new BasicAuthPassword: reconnect, ...).

The specification's configuration-key names are not all wire names: ChargingProfileMaxStackLevel is
``SmartChargingCtrlr.ProfileStackLevel``, ChargingScheduleChargingRateUnit ``SmartChargingCtrlr.RateUnit``,
EntriesChargingProfiles ``SmartChargingCtrlr.Entries[ChargingProfiles]``, ItemsPerMessageGetVariables
``DeviceDataCtrlr.ItemsPerMessage[GetVariables]``, MessageAttemptsTransactionEvent
``OCPPCommCtrlr.MessageAttempts[TransactionEvent]``, ISO15118CtrlrSeccId ``ISO15118Ctrlr.SeccId``.

Decisions (see also :meth:`DeviceModel.standard`):

- ``SecurityCtrlr.SecurityProfile`` is ReadOnly (2.0.1 changes it through SetNetworkProfile plus
  NetworkConfigurationPriority, not SetVariables); the station updates it with :meth:`DeviceModel.update`.
- ``OCPPCommCtrlr.NetworkConfigurationPriority`` answers RebootRequired: the value is stored and persisted at once
  but the connection only follows it after a reset (B10); it is the only variable that does.
- ``MessageTimeout[Default]`` is ReadOnly (it comes with the network connection profile).
- Integers are ``-?[0-9]+`` (no spaces, ``+``, ``_`` or exponents), decimals ``-?[0-9]+(.[0-9]+)?``, booleans
  ``true``/``false`` in any case (stored lower case), dateTime RFC 3339 with an offset. For strings and the list types
  minLimit/maxLimit bound the length; MemberList/SequenceList members are comma separated, each from valuesList, no
  repeats, blanks around commas dropped; an empty list is allowed unless the variable says otherwise.
- Rejected sets carry a reasonCode from the appendix's list: ReadOnly, InvalidValue, ValueTooLow, ValueTooHigh,
  TooLargeElement (over ConfigurationValueSize or maxLimit), InternalError (the persist callback failed: the value is
  not taken), or what a check added with :meth:`DeviceModel.add_check` says.
- GetReport (:meth:`DeviceModel.get_report`): a component or variable field the CSMS leaves out matches anything
  (no evse: every EVSE, B08.FR.23); componentCriteria match when any criterion holds, a component without an
  Active/Available/Enabled variable counting as active/available/enabled, Problem only when it is "true".
- SummaryInventory: every AvailabilityState, plus Problem/Tripped/Overload/Fallback variables that are "true".
- supportsMonitoring is false everywhere: this station has no variable monitoring (block N) yet.

Not standard (ours, documented where defined): ``SmartChargingCtrlr.V2XNegativeLimitIsDischarge`` and
``SmartChargingCtrlr.V2XOfflineChargeOnlyAfter``; :attr:`Variable.standard` is False for them.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

log = logging.getLogger("edge.ocpp.device_model")

ATTRIBUTE_TYPES = ("Actual", "Target", "MinSet", "MaxSet")
MUTABILITIES = ("ReadOnly", "WriteOnly", "ReadWrite")
DATA_TYPES = ("string", "decimal", "integer", "dateTime", "boolean", "OptionList", "SequenceList", "MemberList")
REPORT_BASES = ("ConfigurationInventory", "FullInventory", "SummaryInventory")
COMPONENT_CRITERIA = ("Active", "Available", "Enabled", "Problem")

#: the schemas' caps: GetVariableResult.attributeValue / VariableAttribute.value, SetVariableData.attributeValue
MAX_REPORTED_VALUE = 2500
MAX_SET_VALUE = 1000

AVAILABILITY_STATES = ("Available", "Occupied", "Reserved", "Unavailable", "Faulted")
#: the measurands this station can sample (MeasurandEnumType spellings)
MEASURANDS = ("Current.Import", "Current.Export", "Current.Offered", "Energy.Active.Import.Register",
              "Energy.Active.Export.Register", "Power.Active.Import", "Power.Active.Export", "Power.Offered",
              "Voltage", "SoC")
#: TxStartPoint/TxStopPoint values this station can detect (no parking bay sensor, no signed meter data)
TX_POINTS = ("EVConnected", "Authorized", "PowerPathClosed", "EnergyTransfer")
FILE_TRANSFER_PROTOCOLS = ("FTP", "FTPS", "HTTP", "HTTPS", "SFTP")
TIME_SOURCES = ("Heartbeat", "NTP", "GPS", "RealTimeClock", "MobileNetwork", "RadioTimeTransmitter")
_PROBLEM_VARIABLES = ("problem", "tripped", "overload", "fallback")

#: the request arrays whose length ItemsPerMessage[action] bounds
_REQUEST_ITEMS = {"GetVariables": "getVariableData", "SetVariables": "setVariableData",
                  "GetReport": "componentVariable"}

_INTEGER = re.compile(r"-?[0-9]+")
_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
                      r"([Zz]|[+-][0-9]{2}:[0-9]{2})")

T = TypeVar("T")


class InvalidValue(ValueError):
    """A value the variable's characteristics refuse; ``reason`` is the StatusInfo reasonCode."""

    def __init__(self, reason: str, info: str) -> None:
        super().__init__(info)
        self.reason, self.info = reason, info


@dataclass(frozen=True, slots=True)
class Component:
    name: str
    instance: str | None = None
    evse: int | None = None
    connector: int | None = None  # only with evse

    def __post_init__(self) -> None:
        if self.connector is not None and self.evse is None:
            raise ValueError("a connector id needs an EVSE id")

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> Component:
        evse = wire.get("evse") or {}
        return cls(wire["name"], wire.get("instance"), evse.get("id"), evse.get("connectorId"))

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.instance is not None:
            out["instance"] = self.instance
        if self.evse is not None:
            out["evse"] = {"id": self.evse} if self.connector is None else {"id": self.evse,
                                                                           "connectorId": self.connector}
        return out

    def label(self) -> str:
        """The component part of a persistence key: ``Name[instance]@evse.connector``."""
        out = self.name + (f"[{self.instance}]" if self.instance is not None else "")
        if self.evse is not None:
            out += f"@{self.evse}" + (f".{self.connector}" if self.connector is not None else "")
        return out

    def index(self) -> tuple[str, str | None, int | None, int | None]:
        return (self.name.casefold(), _fold(self.instance), self.evse, self.connector)


@dataclass(slots=True)
class Attribute:
    type: str = "Actual"
    mutability: str = "ReadWrite"
    value: str | None = None  # None: supported but not set (reads as "")
    persistent: bool = False
    constant: bool = False

    def __post_init__(self) -> None:
        if self.type not in ATTRIBUTE_TYPES or self.mutability not in MUTABILITIES:
            raise ValueError(f"bad attribute {self.type}/{self.mutability}")


@dataclass(slots=True)
class Variable:
    component: Component
    name: str
    data_type: str
    attributes: dict[str, Attribute]
    instance: str | None = None
    unit: str | None = None
    min_limit: float | None = None
    max_limit: float | None = None
    values_list: tuple[str, ...] = ()
    supports_monitoring: bool = False
    #: a change is answered RebootRequired (stored at once, effective after a reset)
    reboot_required: bool = False
    #: False: not in OCPP 2.0.1 Part 2 (ours); the name still follows the appendix's style
    standard: bool = True
    #: MemberList/SequenceList: an empty list is refused
    non_empty: bool = False
    #: string: a further shape the value must have (full match), e.g. ISO 3166-1 alpha-2
    pattern: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.data_type not in DATA_TYPES:
            raise ValueError(f"unknown dataType {self.data_type!r}")
        if self.data_type in ("OptionList", "MemberList", "SequenceList") and not self.values_list:
            raise ValueError(f"{self.name}: a {self.data_type} needs a valuesList")
        if not self.attributes or any(kind != attr.type for kind, attr in self.attributes.items()):
            raise ValueError(f"{self.name}: attributes must be keyed by their type")

    def key(self, attribute: str = "Actual") -> str:
        """The stable persistence key of one attribute (module docstring)."""
        out = f"{self.component.label()}/{self.name}" + (f"[{self.instance}]" if self.instance is not None else "")
        return out if attribute == "Actual" else f"{out}:{attribute}"

    def wire(self) -> dict[str, Any]:
        return {"name": self.name} if self.instance is None else {"name": self.name, "instance": self.instance}

    def characteristics(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dataType": self.data_type, "supportsMonitoring": self.supports_monitoring}
        if self.unit is not None:
            out["unit"] = self.unit
        if self.min_limit is not None:
            out["minLimit"] = _number(self.min_limit)
        if self.max_limit is not None:
            out["maxLimit"] = _number(self.max_limit)
        if self.values_list:
            out["valuesList"] = ",".join(self.values_list)
        return out

    def validate(self, value: str, *, max_size: int | None = MAX_SET_VALUE) -> str:
        """The canonical form of ``value``, or :class:`InvalidValue`; ``max_size``: ConfigurationValueSize
        (None: no such bound, for the station's own values)."""
        if max_size is not None and len(value) > max_size:
            raise InvalidValue("TooLargeElement", f"longer than {max_size} characters")
        kind = self.data_type
        if kind == "integer" or kind == "decimal":
            if not (_INTEGER if kind == "integer" else _DECIMAL).fullmatch(value):
                raise InvalidValue("InvalidValue", f"not an {kind}" if kind == "integer" else "not a decimal")
            number = float(value)
            if self.min_limit is not None and number < self.min_limit:
                raise InvalidValue("ValueTooLow", f"below {_number(self.min_limit)}")
            if self.max_limit is not None and number > self.max_limit:
                raise InvalidValue("ValueTooHigh", f"above {_number(self.max_limit)}")
            return value
        if kind == "boolean":
            if value.lower() not in ("true", "false"):
                raise InvalidValue("InvalidValue", "not true or false")
            return value.lower()
        if kind == "dateTime":
            if not _RFC3339.fullmatch(value):
                raise InvalidValue("InvalidValue", "not an RFC 3339 date-time with an offset")
            try:
                datetime.fromisoformat(value.replace("z", "Z"))
            except ValueError:
                raise InvalidValue("InvalidValue", "not a valid date-time") from None
            return value
        if kind in ("OptionList", "MemberList", "SequenceList"):
            if kind == "OptionList":
                value = value.strip()
                if value not in self.values_list:
                    raise InvalidValue("InvalidValue", f"not one of {','.join(self.values_list)}")
            else:
                members = [m.strip() for m in value.split(",")] if value.strip() else []
                unknown = [m for m in members if m not in self.values_list]
                if unknown:
                    raise InvalidValue("InvalidValue", f"{unknown[0]!r} not one of {','.join(self.values_list)}")
                if len(set(members)) != len(members):
                    raise InvalidValue("InvalidValue", "a member repeats")
                if not members and self.non_empty:
                    raise InvalidValue("InvalidValue", "must not be empty")
                value = ",".join(members)
        if self.min_limit is not None and len(value) < self.min_limit:
            raise InvalidValue("InvalidValue", f"shorter than {_number(self.min_limit)} characters")
        if self.max_limit is not None and len(value) > self.max_limit:
            raise InvalidValue("TooLargeElement", f"longer than {_number(self.max_limit)} characters")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise InvalidValue("InvalidValue", "not of the expected form")
        return value


@dataclass(frozen=True, slots=True)
class Change:
    """An accepted change of one attribute, for :meth:`DeviceModel.on_change` subscribers."""

    variable: Variable
    attribute: str
    value: str  # the new value (also for WriteOnly ones: subscribers are station code, not the CSMS)
    source: str  # "csms" (SetVariables) or "station" (DeviceModel.update)
    reboot_required: bool

    @property
    def key(self) -> str:
        return self.variable.key(self.attribute)


Check = Callable[[str], str | None]
Persist = Callable[[str, str], None]


class DeviceModel:
    """Components, variables and their attributes; see the module docstring."""

    def __init__(self, variables: Iterable[Variable], *, overrides: Mapping[str, str] | None = None,
                 stored: Mapping[str, str] | None = None, persist: Persist | None = None) -> None:
        self._variables: list[Variable] = []
        self._index: dict[tuple[str, str | None, int | None, int | None],
                          dict[tuple[str, str | None], Variable]] = {}
        self._keys: dict[str, tuple[Variable, Attribute]] = {}  # casefolded key
        self._persist = persist
        self._subscribers: list[Callable[[Change], None]] = []
        self._checks: dict[str, list[Check]] = {}
        self._providers: dict[str, Callable[[], str | None]] = {}
        for var in variables:
            slot = self._index.setdefault(var.component.index(), {})
            vkey = (var.name.casefold(), _fold(var.instance))
            if vkey in slot:
                raise ValueError(f"{var.key()} defined twice")
            slot[vkey] = var
            self._variables.append(var)
            for attr in var.attributes.values():
                self._keys[var.key(attr.type).casefold()] = (var, attr)
                if attr.value is not None:
                    try:
                        attr.value = var.validate(attr.value, max_size=None)
                    except InvalidValue as e:
                        raise ValueError(f"{var.key(attr.type)} = {attr.value!r}: {e.info}") from None
        for key, value in (overrides or {}).items():
            var, attr = self._by_key(key)
            try:
                attr.value = var.validate(value, max_size=None)
            except InvalidValue as e:
                raise ValueError(f"override {key}: {e.info}") from None
        for key, value in (stored or {}).items():
            found = self._keys.get(key.casefold())
            if found is None or not found[1].persistent or found[1].constant:
                log.warning("stored %s ignored: %s", key, "no such variable" if found is None else
                            "constant (configuration, not stored)" if found[1].constant else "not persistent")
                continue
            var, attr = found
            try:
                attr.value = var.validate(value, max_size=None)
            except InvalidValue as e:
                log.warning("stored %s ignored: %s", key, e.info)

    # -- construction -------------------------------------------------------------------------------------------

    @classmethod
    def standard(cls, evse_count: int, *, model: str, vendor: str, secc_id: str | None = None,
                 identity: str | None = None, organization: str | None = None, country: str | None = None,
                 evse_max_power_w: float = 22_000.0, supply_phases: int = 3, connector_type: str = "cCCS2",
                 network_slots: Sequence[int] = (1,), overrides: Mapping[str, str] | None = None,
                 stored: Mapping[str, str] | None = None, persist: Persist | None = None) -> DeviceModel:
        """The station's device model: the controller components OCPP 2.0.1 asks for, ChargingStation, and per
        EVSE ``n`` (1..evse_count) an EVSE component and its Connector 1. ``identity`` is SecurityCtrlr.Identity,
        ``organization``/``country`` the SECC certificate's O and C (ISO15118Ctrlr; ``organization`` also
        SecurityCtrlr.OrganizationName), ``network_slots`` the configuration slots NetworkConfigurationPriority
        may name (its default: the first). Anything else: ``overrides`` by key."""
        if evse_count < 1:
            raise ValueError("a station has at least one EVSE")
        if not network_slots:
            raise ValueError("at least one network configuration slot")
        return cls(_standard_variables(evse_count, model=model, vendor=vendor, secc_id=secc_id, identity=identity,
                                       organization=organization, country=country,
                                       evse_max_power_w=evse_max_power_w, supply_phases=supply_phases,
                                       connector_type=connector_type, network_slots=network_slots),
                   overrides=overrides, stored=stored, persist=persist)

    # -- lookup and typed access for code ------------------------------------------------------------------------

    def variables(self) -> Iterator[Variable]:
        return iter(self._variables)

    def find(self, component: str, variable: str, *, instance: str | None = None,
             component_instance: str | None = None, evse: int | None = None,
             connector: int | None = None) -> Variable | None:
        slot = self._index.get(Component(component, component_instance, evse, connector).index())
        return None if slot is None else slot.get((variable.casefold(), _fold(instance)))

    def variable(self, component: str, variable: str, *, instance: str | None = None,
                 component_instance: str | None = None, evse: int | None = None,
                 connector: int | None = None) -> Variable:
        var = self.find(component, variable, instance=instance, component_instance=component_instance, evse=evse,
                        connector=connector)
        if var is None:
            raise KeyError(f"no variable {variable}[{instance}] in {component}")
        return var

    def value(self, component: str, variable: str, *, as_type: Callable[[str], T] = str,  # type: ignore[assignment]
              instance: str | None = None, component_instance: str | None = None, evse: int | None = None,
              connector: int | None = None, attribute: str = "Actual") -> T | None:
        """One attribute's value for code (WriteOnly ones too), parsed: ``as_type`` ``str`` (default), ``int``,
        ``float``, ``bool`` ("true"/"false") or ``list`` (the members of a list value, ``list[str]``); None when
        not set. KeyError for an unknown variable or attribute."""
        var = self.variable(component, variable, instance=instance, component_instance=component_instance,
                            evse=evse, connector=connector)
        if attribute not in var.attributes:
            raise KeyError(f"{var.key()} has no {attribute} attribute")
        raw = self._read(var, var.attributes[attribute])
        if raw is None:
            return None
        if as_type is bool:
            return raw == "true"  # type: ignore[return-value]
        if as_type is list:
            return [m for m in raw.split(",") if m]  # type: ignore[return-value]
        return as_type(raw)

    def update(self, component: str, variable: str, value: str, *, instance: str | None = None,
               component_instance: str | None = None, evse: int | None = None, connector: int | None = None,
               attribute: str = "Actual") -> None:
        """The station changes a value itself (AvailabilityState, CertificateEntries, the HeartbeatInterval a
        BootNotificationResponse gave, ...): any mutability but constants; validated (:class:`InvalidValue`),
        persisted when persistent, subscribers told."""
        var = self.variable(component, variable, instance=instance, component_instance=component_instance,
                            evse=evse, connector=connector)
        attr = var.attributes.get(attribute)
        if attr is None:
            raise KeyError(f"{var.key()} has no {attribute} attribute")
        if attr.constant:
            raise ValueError(f"{var.key(attribute)} is constant")
        self._commit(var, attr, var.validate(value, max_size=None), "station")

    def provide(self, key: str, getter: Callable[[], str | None]) -> None:
        """Compute a ReadOnly value on every read instead of storing it (``ClockCtrlr/DateTime``,
        ``EVSE@1/Power``); ``getter`` returns the current value in the variable's wire form."""
        var, attr = self._by_key(key)
        if attr.mutability != "ReadOnly":
            raise ValueError(f"{key} is not ReadOnly: only ReadOnly values can be computed")
        self._providers[var.key(attr.type).casefold()] = getter

    def add_check(self, key: str, check: Check) -> None:
        """A further condition on values the CSMS sets (e.g. NetworkConfigurationPriority names only slots that
        hold a profile): ``check(value)`` returns None to accept or the reasonCode to reject with."""
        var, attr = self._by_key(key)
        self._checks.setdefault(var.key(attr.type).casefold(), []).append(check)

    def on_change(self, callback: Callable[[Change], None]) -> Callable[[], None]:
        """Call ``callback`` after every accepted change; returns the function that unsubscribes it."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def persistent_values(self) -> dict[str, str]:
        """Every persistent attribute that has a value, by key (a full snapshot for the store)."""
        return {var.key(attr.type): attr.value for var in self._variables for attr in var.attributes.values()
                if attr.persistent and attr.value is not None}

    # -- B05/B06: SetVariables, GetVariables ---------------------------------------------------------------------

    def request_limit_error(self, action: str, payload: Mapping[str, Any], *,
                            frame_bytes: int | None = None) -> str | None:
        """The CALLERROR code to answer ``action`` (GetVariables, SetVariables, GetReport) with instead of a
        result: OccurrenceConstraintViolation for more entries than ItemsPerMessage[action] (B05/B06/B08),
        FormatViolation for a message over BytesPerMessage[action] (``frame_bytes``: the received frame's size;
        without it, the payload's compact JSON). None: within limits."""
        if action not in _REQUEST_ITEMS:
            raise ValueError(f"no message limits for {action}")
        items = payload.get(_REQUEST_ITEMS[action]) or ()
        limit = self.value("DeviceDataCtrlr", "ItemsPerMessage", instance=action, as_type=int)
        if limit is not None and len(items) > limit:
            return "OccurrenceConstraintViolation"
        size = frame_bytes if frame_bytes is not None else len(_compact(payload))
        limit = self.value("DeviceDataCtrlr", "BytesPerMessage", instance=action, as_type=int)
        if limit is not None and size > limit:
            return "FormatViolation"
        return None

    def get_variables(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """GetVariablesResponse payload for a (schema-checked) GetVariablesRequest payload: one result per entry,
        in order."""
        results = []
        for entry in request["getVariableData"]:
            kind = entry.get("attributeType", "Actual")
            result: dict[str, Any] = {"attributeType": kind, "component": _echo_component(entry["component"]),
                                      "variable": _echo_variable(entry["variable"])}
            status, var, attr = self._resolve(entry, kind)
            if attr is not None and var is not None:
                if attr.mutability == "WriteOnly":
                    status = "Rejected"
                    result["attributeStatusInfo"] = {"reasonCode": "WriteOnly"}
                else:
                    status = "Accepted"
                    result["attributeValue"] = self._reported(var, attr)
            result["attributeStatus"] = status
            results.append(result)
        return {"getVariableResult": results}

    def set_variables(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """SetVariablesResponse payload for a (schema-checked) SetVariablesRequest payload; entries are applied one
        by one, in order."""
        results = []
        for entry in request["setVariableData"]:
            kind = entry.get("attributeType", "Actual")
            result: dict[str, Any] = {"attributeType": kind, "component": _echo_component(entry["component"]),
                                      "variable": _echo_variable(entry["variable"])}
            status, var, attr = self._resolve(entry, kind)
            if attr is not None and var is not None:
                status, reason, info = self._set(var, attr, entry["attributeValue"])
                if reason is not None:
                    result["attributeStatusInfo"] = {"reasonCode": reason, "additionalInfo": info[:512]} if info \
                        else {"reasonCode": reason}
            result["attributeStatus"] = status
            results.append(result)
        return {"setVariableResult": results}

    # -- B07/B08: reports ----------------------------------------------------------------------------------------

    def base_report(self, report_base: str) -> list[dict[str, Any]]:
        """``reportData`` items for GetBaseReport: ConfigurationInventory (the attributes the CSMS can set, so a
        variable that is ReadOnly throughout is left out), FullInventory (everything), SummaryInventory
        (availability and active problems)."""
        out = []
        for var in self._variables:
            attrs = list(var.attributes.values())
            if report_base == "ConfigurationInventory":
                attrs = [a for a in attrs if a.mutability != "ReadOnly"]
            elif report_base == "SummaryInventory":
                if not (var.name.casefold() == "availabilitystate" or (
                        var.name.casefold() in _PROBLEM_VARIABLES
                        and self._read(var, var.attributes.get("Actual")) == "true")):
                    attrs = []
            elif report_base != "FullInventory":
                raise ValueError(f"unknown report base {report_base!r}")
            if attrs:
                out.append(self._report_item(var, attrs))
        return out

    def get_report(self, component_criteria: Sequence[str] | None = None,
                   component_variables: Sequence[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
        """``reportData`` items for GetReport (its ``componentCriteria`` and ``componentVariable``); empty: the
        caller answers EmptyResultSet."""
        out = []
        for var in self._variables:
            if component_variables and not any(_cv_matches(cv, var) for cv in component_variables):
                continue
            if component_criteria and not self._meets(var.component, component_criteria):
                continue
            out.append(self._report_item(var, var.attributes.values()))
        return out

    # -- typed properties ----------------------------------------------------------------------------------------

    @property
    def heartbeat_interval(self) -> int:
        return self._int("OCPPCommCtrlr", "HeartbeatInterval")

    @property
    def offline_threshold(self) -> int:
        return self._int("OCPPCommCtrlr", "OfflineThreshold")

    @property
    def message_timeout(self) -> int:
        return self._int("OCPPCommCtrlr", "MessageTimeout", "Default")

    @property
    def transaction_message_attempts(self) -> int:
        return self._int("OCPPCommCtrlr", "MessageAttempts", "TransactionEvent")

    @property
    def transaction_message_attempt_interval(self) -> int:
        return self._int("OCPPCommCtrlr", "MessageAttemptInterval", "TransactionEvent")

    @property
    def network_configuration_priority(self) -> list[int]:
        return [int(m) for m in self._list("OCPPCommCtrlr", "NetworkConfigurationPriority")]

    @property
    def network_profile_connection_attempts(self) -> int:
        return self._int("OCPPCommCtrlr", "NetworkProfileConnectionAttempts")

    @property
    def retry_back_off_wait_minimum(self) -> int:
        return self._int("OCPPCommCtrlr", "RetryBackOffWaitMinimum")

    @property
    def retry_back_off_random_range(self) -> int:
        return self._int("OCPPCommCtrlr", "RetryBackOffRandomRange")

    @property
    def retry_back_off_repeat_times(self) -> int:
        return self._int("OCPPCommCtrlr", "RetryBackOffRepeatTimes")

    @property
    def websocket_ping_interval(self) -> int:
        return self._int("OCPPCommCtrlr", "WebSocketPingInterval")

    @property
    def reset_retries(self) -> int:
        return self._int("OCPPCommCtrlr", "ResetRetries")

    @property
    def unlock_on_ev_side_disconnect(self) -> bool:
        return self._bool("OCPPCommCtrlr", "UnlockOnEVSideDisconnect")

    @property
    def security_profile(self) -> int:
        return self._int("SecurityCtrlr", "SecurityProfile")

    @property
    def basic_auth_password(self) -> str | None:
        return self.value("SecurityCtrlr", "BasicAuthPassword")

    @property
    def identity(self) -> str | None:
        return self.value("SecurityCtrlr", "Identity")

    @property
    def ev_connection_timeout(self) -> int:
        return self._int("TxCtrlr", "EVConnectionTimeOut")

    @property
    def stop_tx_on_ev_side_disconnect(self) -> bool:
        return self._bool("TxCtrlr", "StopTxOnEVSideDisconnect")

    @property
    def stop_tx_on_invalid_id(self) -> bool:
        return self._bool("TxCtrlr", "StopTxOnInvalidId")

    @property
    def max_energy_on_invalid_id(self) -> int:
        return self._int("TxCtrlr", "MaxEnergyOnInvalidId")

    @property
    def tx_start_points(self) -> list[str]:
        return self._list("TxCtrlr", "TxStartPoint")

    @property
    def tx_stop_points(self) -> list[str]:
        return self._list("TxCtrlr", "TxStopPoint")

    @property
    def tx_started_measurands(self) -> list[str]:
        return self._list("SampledDataCtrlr", "TxStartedMeasurands")

    @property
    def tx_updated_measurands(self) -> list[str]:
        return self._list("SampledDataCtrlr", "TxUpdatedMeasurands")

    @property
    def tx_updated_interval(self) -> int:
        return self._int("SampledDataCtrlr", "TxUpdatedInterval")

    @property
    def tx_ended_measurands(self) -> list[str]:
        return self._list("SampledDataCtrlr", "TxEndedMeasurands")

    @property
    def tx_ended_interval(self) -> int:
        return self._int("SampledDataCtrlr", "TxEndedInterval")

    @property
    def smart_charging_enabled(self) -> bool:
        return self._bool("SmartChargingCtrlr", "Enabled")

    @property
    def profile_stack_level(self) -> int:
        return self._int("SmartChargingCtrlr", "ProfileStackLevel")

    @property
    def periods_per_schedule(self) -> int:
        return self._int("SmartChargingCtrlr", "PeriodsPerSchedule")

    @property
    def limit_change_significance(self) -> float:
        return float(self._required("SmartChargingCtrlr", "LimitChangeSignificance"))

    @property
    def negative_limit_is_discharge(self) -> bool:
        """Ours (SmartChargingCtrlr.V2XNegativeLimitIsDischarge): on OCPP 2.0.1 a negative limit means discharge."""
        return self._bool("SmartChargingCtrlr", "V2XNegativeLimitIsDischarge")

    @property
    def offline_charge_only_after(self) -> int:
        """Ours (SmartChargingCtrlr.V2XOfflineChargeOnlyAfter): seconds offline before discharging stops."""
        return self._int("SmartChargingCtrlr", "V2XOfflineChargeOnlyAfter")

    @property
    def auth_enabled(self) -> bool:
        return self._bool("AuthCtrlr", "Enabled")

    @property
    def authorize_remote_start(self) -> bool:
        return self._bool("AuthCtrlr", "AuthorizeRemoteStart")

    @property
    def local_authorize_offline(self) -> bool:
        return self._bool("AuthCtrlr", "LocalAuthorizeOffline")

    @property
    def local_pre_authorize(self) -> bool:
        return self._bool("AuthCtrlr", "LocalPreAuthorize")

    @property
    def offline_tx_for_unknown_id_enabled(self) -> bool:
        return self._bool("AuthCtrlr", "OfflineTxForUnknownIdEnabled")

    @property
    def pnc_enabled(self) -> bool:
        return self._bool("ISO15118Ctrlr", "PnCEnabled")

    @property
    def contract_validation_offline(self) -> bool:
        return self._bool("ISO15118Ctrlr", "ContractValidationOffline")

    @property
    def central_contract_validation_allowed(self) -> bool:
        return self._bool("ISO15118Ctrlr", "CentralContractValidationAllowed")

    @property
    def v2g_certificate_installation_enabled(self) -> bool:
        return self._bool("ISO15118Ctrlr", "V2GCertificateInstallationEnabled")

    @property
    def contract_certificate_installation_enabled(self) -> bool:
        return self._bool("ISO15118Ctrlr", "ContractCertificateInstallationEnabled")

    @property
    def request_metering_receipt(self) -> bool:
        return self._bool("ISO15118Ctrlr", "RequestMeteringReceipt")

    @property
    def secc_id(self) -> str | None:
        return self.value("ISO15118Ctrlr", "SeccId")

    @property
    def max_schedule_entries(self) -> int:
        return self._int("ISO15118Ctrlr", "MaxScheduleEntries")

    def items_per_message(self, action: str) -> int:
        """DeviceDataCtrlr.ItemsPerMessage[action] (GetReport, GetVariables, SetVariables)."""
        return self._int("DeviceDataCtrlr", "ItemsPerMessage", action)

    def bytes_per_message(self, action: str) -> int:
        return self._int("DeviceDataCtrlr", "BytesPerMessage", action)

    # -- internals -----------------------------------------------------------------------------------------------

    def _required(self, component: str, variable: str, instance: str | None = None) -> str:
        raw = self.value(component, variable, instance=instance)
        if raw is None:
            raise LookupError(f"{component}.{variable} has no value")
        return raw

    def _int(self, component: str, variable: str, instance: str | None = None) -> int:
        return int(self._required(component, variable, instance))

    def _bool(self, component: str, variable: str) -> bool:
        return self._required(component, variable) == "true"

    def _list(self, component: str, variable: str) -> list[str]:
        return [m for m in self._required(component, variable).split(",") if m]

    def _by_key(self, key: str) -> tuple[Variable, Attribute]:
        found = self._keys.get(key.casefold())
        if found is None:
            raise KeyError(f"no variable attribute {key}")
        return found

    def _read(self, var: Variable, attr: Attribute | None) -> str | None:
        if attr is None:
            return None
        provider = self._providers.get(var.key(attr.type).casefold())
        return provider() if provider is not None else attr.value

    def _reported(self, var: Variable, attr: Attribute) -> str:
        size = self.value("DeviceDataCtrlr", "ReportingValueSize", as_type=int) \
            if self.find("DeviceDataCtrlr", "ReportingValueSize") else None
        return (self._read(var, attr) or "")[:min(size or MAX_REPORTED_VALUE, MAX_REPORTED_VALUE)]

    def _resolve(self, entry: Mapping[str, Any], kind: str) -> tuple[str, Variable | None, Attribute | None]:
        slot = self._index.get(Component.from_wire(entry["component"]).index())
        if slot is None:
            return "UnknownComponent", None, None
        wire = entry["variable"]
        var = slot.get((wire["name"].casefold(), _fold(wire.get("instance"))))
        if var is None:
            return "UnknownVariable", None, None
        attr = var.attributes.get(kind)
        if attr is None:
            return "NotSupportedAttributeType", var, None
        return "", var, attr

    def _set(self, var: Variable, attr: Attribute, value: str) -> tuple[str, str | None, str]:
        """(status, reasonCode, additionalInfo) of one SetVariableData for an existing attribute."""
        if attr.mutability == "ReadOnly":
            return "Rejected", "ReadOnly", ""
        size = self.value("DeviceDataCtrlr", "ConfigurationValueSize", as_type=int) \
            if self.find("DeviceDataCtrlr", "ConfigurationValueSize") else None
        try:
            canonical = var.validate(value, max_size=min(size or MAX_SET_VALUE, MAX_SET_VALUE))
        except InvalidValue as e:
            return "Rejected", e.reason, e.info
        for check in self._checks.get(var.key(attr.type).casefold(), ()):
            reason = check(canonical)
            if reason is not None:
                return "Rejected", reason, ""
        try:
            self._commit(var, attr, canonical, "csms")
        except Exception:
            log.exception("could not persist %s: the change is refused", var.key(attr.type))
            return "Rejected", "InternalError", "could not store the value"
        return ("RebootRequired" if var.reboot_required else "Accepted"), None, ""

    def _commit(self, var: Variable, attr: Attribute, value: str, source: str) -> None:
        key = var.key(attr.type)
        if attr.persistent and self._persist is not None:
            self._persist(key, value)  # first: a value that cannot be stored is not taken
        attr.value = value
        log.info("%s set by %s%s", key, source, "" if attr.mutability == "WriteOnly" else f" to {value!r}")
        change = Change(var, attr.type, value, source, var.reboot_required)
        for callback in list(self._subscribers):
            try:
                callback(change)
            except Exception:
                log.exception("a subscriber failed on the change of %s", key)

    def _report_item(self, var: Variable, attrs: Iterable[Attribute]) -> dict[str, Any]:
        wire_attrs = []
        for attr in attrs:
            item: dict[str, Any] = {"type": attr.type, "mutability": attr.mutability,
                                    "persistent": attr.persistent, "constant": attr.constant}
            if attr.mutability != "WriteOnly":
                item["value"] = self._reported(var, attr)
            wire_attrs.append(item)
        return {"component": var.component.wire(), "variable": var.wire(), "variableAttribute": wire_attrs,
                "variableCharacteristics": var.characteristics()}

    def _meets(self, component: Component, criteria: Sequence[str]) -> bool:
        slot = self._index.get(component.index(), {})
        for criterion in criteria:
            var = slot.get((criterion.casefold(), None))
            if var is None:
                if criterion != "Problem":
                    return True  # no Enabled variable: enabled (likewise Active, Available)
                continue
            if self._read(var, var.attributes.get("Actual")) == "true":
                return True
        return False


def report_pages(report_data: Sequence[Mapping[str, Any]], items_per_message: int, *, request_id: int,
                 generated_at: str, max_bytes: int | None = None) -> list[dict[str, Any]]:
    """NotifyReportRequest payloads carrying ``report_data`` in order: at most ``items_per_message`` items each
    and, with ``max_bytes``, at most that many bytes of compact UTF-8 JSON payload (an item too big alone still
    goes, alone). ``seqNo`` counts from 0; ``tbc`` is true on all but the last. No items: no messages."""
    if items_per_message < 1:
        raise ValueError("items_per_message must be at least 1")
    envelope = len(_compact({"requestId": request_id, "generatedAt": generated_at, "seqNo": 0, "tbc": False,
                             "reportData": []})) + 4  # seqNo digits to spare
    pages: list[list[Mapping[str, Any]]] = []
    page: list[Mapping[str, Any]] = []
    size = envelope
    for item in report_data:
        item_size = len(_compact(item)) + 1
        if page and (len(page) >= items_per_message or (max_bytes is not None and size + item_size > max_bytes)):
            pages.append(page)
            page, size = [], envelope
        page.append(item)
        size += item_size
    if page:
        pages.append(page)
    return [{"requestId": request_id, "generatedAt": generated_at, "seqNo": n, "tbc": n < len(pages) - 1,
             "reportData": [dict(item) for item in items]} for n, items in enumerate(pages)]


# -- helpers ---------------------------------------------------------------------------------------------------


def _fold(name: str | None) -> str | None:
    return None if name is None else name.casefold()


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _compact(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def _echo_component(wire: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": wire["name"]}
    if "instance" in wire:
        out["instance"] = wire["instance"]
    if "evse" in wire:
        out["evse"] = {k: v for k, v in wire["evse"].items() if k in ("id", "connectorId")}
    return out


def _echo_variable(wire: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in wire.items() if k in ("name", "instance")}


def _cv_matches(cv: Mapping[str, Any], var: Variable) -> bool:
    """A GetReport componentVariable against one variable: fields left out match anything."""
    comp, mine = cv["component"], var.component
    if comp["name"].casefold() != mine.name.casefold():
        return False
    if "instance" in comp and comp["instance"].casefold() != (mine.instance or "").casefold():
        return False
    evse = comp.get("evse")
    if evse is not None and (evse["id"] != mine.evse or evse.get("connectorId", mine.connector) != mine.connector):
        return False
    wanted = cv.get("variable")
    if wanted is None:
        return True
    if wanted["name"].casefold() != var.name.casefold():
        return False
    return "instance" not in wanted or wanted["instance"].casefold() == (var.instance or "").casefold()


def _variable(component: Component, name: str, data_type: str, value: str | None, *, kind: str = "config",
              instance: str | None = None, **characteristics: Any) -> Variable:
    """One variable with an Actual attribute. ``kind``: config (ReadWrite, persistent), secret (WriteOnly,
    persistent), fixed (ReadOnly, constant: the station's build or configuration), stored (ReadOnly, persistent:
    the station changes it, it survives a reboot), state (ReadOnly, neither: live state)."""
    mutability, persistent, constant = {"config": ("ReadWrite", True, False), "secret": ("WriteOnly", True, False),
                                        "fixed": ("ReadOnly", True, True), "stored": ("ReadOnly", True, False),
                                        "state": ("ReadOnly", False, False)}[kind]
    attr = Attribute("Actual", mutability, value, persistent, constant)
    return Variable(component, name, data_type, {"Actual": attr}, instance=instance, **characteristics)


def _standard_variables(evse_count: int, *, model: str, vendor: str, secc_id: str | None, identity: str | None,
                        organization: str | None, country: str | None, evse_max_power_w: float, supply_phases: int,
                        connector_type: str, network_slots: Sequence[int]) -> list[Variable]:
    v = _variable
    station, comm, security = Component("ChargingStation"), Component("OCPPCommCtrlr"), Component("SecurityCtrlr")
    tx, sampled, smart = Component("TxCtrlr"), Component("SampledDataCtrlr"), Component("SmartChargingCtrlr")
    auth, iso, data, clock = (Component("AuthCtrlr"), Component("ISO15118Ctrlr"), Component("DeviceDataCtrlr"),
                              Component("ClockCtrlr"))
    slots = tuple(str(s) for s in network_slots)
    out = [
        v(station, "AvailabilityState", "OptionList", "Available", kind="state", values_list=AVAILABILITY_STATES),
        v(station, "Available", "boolean", "true", kind="state"),
        v(station, "Model", "string", model, kind="fixed", max_limit=20),  # BootNotification's limits
        v(station, "VendorName", "string", vendor, kind="fixed", max_limit=50),
        v(station, "Problem", "boolean", "false", kind="state"),

        v(comm, "HeartbeatInterval", "integer", "300", unit="s", min_limit=1),
        v(comm, "NetworkConfigurationPriority", "SequenceList", slots[0], values_list=slots, non_empty=True,
          reboot_required=True),
        v(comm, "NetworkProfileConnectionAttempts", "integer", "3", min_limit=1),
        v(comm, "OfflineThreshold", "integer", "60", unit="s", min_limit=0),
        v(comm, "MessageTimeout", "integer", "30", kind="stored", instance="Default", unit="s", min_limit=1),
        v(comm, "MessageAttempts", "integer", "3", instance="TransactionEvent", min_limit=1),
        v(comm, "MessageAttemptInterval", "integer", "60", instance="TransactionEvent", unit="s", min_limit=1),
        v(comm, "RetryBackOffRepeatTimes", "integer", "3", min_limit=0),
        v(comm, "RetryBackOffRandomRange", "integer", "10", unit="s", min_limit=0),
        v(comm, "RetryBackOffWaitMinimum", "integer", "5", unit="s", min_limit=0),
        v(comm, "WebSocketPingInterval", "integer", "30", unit="s", min_limit=0),  # 0: no pings of ours
        v(comm, "ResetRetries", "integer", "2", min_limit=0),
        v(comm, "UnlockOnEVSideDisconnect", "boolean", "true"),
        v(comm, "FileTransferProtocols", "MemberList", "HTTP,HTTPS", kind="fixed",
          values_list=FILE_TRANSFER_PROTOCOLS, non_empty=True),

        v(security, "SecurityProfile", "integer", "1", kind="stored", min_limit=1, max_limit=3),
        v(security, "BasicAuthPassword", "string", None, kind="secret", min_limit=16, max_limit=40),
        v(security, "Identity", "string", identity, kind="fixed", max_limit=48),
        v(security, "OrganizationName", "string", organization, max_limit=64),
        v(security, "CertificateEntries", "integer", "0", kind="state", min_limit=0),
        v(security, "MaxCertificateChainSize", "integer", "10000", kind="fixed", min_limit=1, max_limit=10000),
        v(security, "AdditionalRootCertificateCheck", "boolean", "false", kind="fixed"),
        v(security, "CertSigningWaitMinimum", "integer", "60", unit="s", min_limit=1),
        v(security, "CertSigningRepeatTimes", "integer", "3", min_limit=0),

        v(tx, "EVConnectionTimeOut", "integer", "120", unit="s", min_limit=1),
        v(tx, "StopTxOnEVSideDisconnect", "boolean", "true", kind="fixed"),
        v(tx, "StopTxOnInvalidId", "boolean", "true"),
        v(tx, "TxStartPoint", "MemberList", "PowerPathClosed", values_list=TX_POINTS, non_empty=True),
        v(tx, "TxStopPoint", "MemberList", "EVConnected,Authorized", values_list=TX_POINTS, non_empty=True),
        v(tx, "MaxEnergyOnInvalidId", "integer", "0", unit="Wh", min_limit=0),

        v(sampled, "TxStartedMeasurands", "MemberList", "Energy.Active.Import.Register", values_list=MEASURANDS),
        v(sampled, "TxUpdatedMeasurands", "MemberList", "Energy.Active.Import.Register,Power.Active.Import",
          values_list=MEASURANDS),
        v(sampled, "TxUpdatedInterval", "integer", "60", unit="s", min_limit=0),
        v(sampled, "TxEndedMeasurands", "MemberList", "Energy.Active.Import.Register", values_list=MEASURANDS),
        v(sampled, "TxEndedInterval", "integer", "60", unit="s", min_limit=0),

        v(smart, "Enabled", "boolean", "true"),
        v(smart, "Available", "boolean", "true", kind="state"),
        v(smart, "ProfileStackLevel", "integer", "8", kind="fixed", min_limit=0),  # "ChargingProfileMaxStackLevel"
        v(smart, "RateUnit", "MemberList", "A,W", kind="fixed", values_list=("A", "W"), non_empty=True),
        v(smart, "PeriodsPerSchedule", "integer", "24", kind="fixed", min_limit=1),
        v(smart, "Entries", "integer", "0", kind="state", instance="ChargingProfiles", min_limit=0, max_limit=32),
        v(smart, "ExternalControlSignalsEnabled", "boolean", "false"),
        v(smart, "NotifyChargingLimitWithSchedules", "boolean", "false"),
        v(smart, "LimitChangeSignificance", "decimal", "5", unit="Percent", min_limit=0, max_limit=100),
        v(smart, "V2XNegativeLimitIsDischarge", "boolean", "false", standard=False,
          description="Not an OCPP variable (ours). OCPP 2.0.1 has no discharging; when true, a negative limit in "
                      "a charging schedule period is taken as a discharge limit (what OCPP 2.1 says natively). "
                      "False (default): negative limits are not discharge on 2.0.1."),
        v(smart, "V2XOfflineChargeOnlyAfter", "integer", "60", unit="s", min_limit=0, max_limit=86_400,
          standard=False,
          description="Not an OCPP variable (ours). After this many seconds without the CSMS, an EVSE that is "
                      "discharging on a CSMS schedule falls back to charge-only (0: at once)."),

        v(auth, "Enabled", "boolean", "true"),
        v(auth, "AuthorizeRemoteStart", "boolean", "true"),
        v(auth, "LocalAuthorizeOffline", "boolean", "true"),
        v(auth, "LocalPreAuthorize", "boolean", "false"),
        v(auth, "OfflineTxForUnknownIdEnabled", "boolean", "false"),

        v(iso, "PnCEnabled", "boolean", "true"),
        v(iso, "ContractValidationOffline", "boolean", "true"),
        v(iso, "CentralContractValidationAllowed", "boolean", "false"),
        v(iso, "V2GCertificateInstallationEnabled", "boolean", "true"),
        v(iso, "ContractCertificateInstallationEnabled", "boolean", "true"),
        v(iso, "SeccId", "string", secc_id, max_limit=64),
        v(iso, "OrganizationName", "string", organization, max_limit=64),
        v(iso, "CountryName", "string", country, min_limit=2, max_limit=2, pattern="[A-Z]{2}"),
        v(iso, "MaxScheduleEntries", "integer", "24", kind="fixed", min_limit=1),
        v(iso, "RequestMeteringReceipt", "boolean", "false"),

        v(clock, "DateTime", "dateTime", None, kind="state"),  # give it a provider: DeviceModel.provide
        v(clock, "TimeSource", "SequenceList", "Heartbeat", values_list=TIME_SOURCES, non_empty=True),
    ]
    for action in ("GetReport", "GetVariables", "SetVariables"):
        out.append(v(data, "ItemsPerMessage", "integer", "50", kind="fixed", instance=action, min_limit=1))
        out.append(v(data, "BytesPerMessage", "integer", "65536", kind="fixed", instance=action, unit="B",
                     min_limit=1))
    out.append(v(data, "ConfigurationValueSize", "integer", str(MAX_SET_VALUE), kind="fixed", min_limit=1,
                 max_limit=MAX_SET_VALUE))
    out.append(v(data, "ReportingValueSize", "integer", str(MAX_REPORTED_VALUE), kind="fixed", min_limit=1,
                 max_limit=MAX_REPORTED_VALUE))
    power = str(_number(evse_max_power_w))
    for n in range(1, evse_count + 1):
        evse, connector = Component("EVSE", evse=n), Component("Connector", evse=n, connector=1)
        out += [
            v(evse, "AvailabilityState", "OptionList", "Available", kind="state", values_list=AVAILABILITY_STATES),
            v(evse, "Available", "boolean", "true", kind="state"),
            Variable(evse, "Power", "decimal", {
                "Actual": Attribute("Actual", "ReadOnly", "0"),
                "MaxSet": Attribute("MaxSet", "ReadOnly", power, persistent=True, constant=True)},
                unit="W", max_limit=evse_max_power_w),
            v(evse, "SupplyPhases", "integer", str(supply_phases), kind="fixed", min_limit=0, max_limit=3),
            v(connector, "AvailabilityState", "OptionList", "Available", kind="state",
              values_list=AVAILABILITY_STATES),
            v(connector, "Available", "boolean", "true", kind="state"),
            v(connector, "ConnectorType", "string", connector_type, kind="fixed"),
            v(connector, "SupplyPhases", "integer", str(supply_phases), kind="fixed", min_limit=0, max_limit=3),
        ]
    return out
