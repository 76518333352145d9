"""``edge trace plot FILE -o out.svg|png``: a session's power, voltage, current and state of charge over time.

Four panels sharing the time axis: power (present and target; import above zero, export below, the discharge
shaded), voltage, current (present and target), and the car's SoC. The values come from the trace's
``hardware`` records (the board at the loop rate) where there are any, else from the decoded messages (the
charger's present values from its responses, the car's targets from its requests); SoC always from the car's
requests. matplotlib is an optional extra (``pip install 'edge[plot]'``), imported only here, Agg backend.
Each plotted line has a gid ("power-present", "power-target", "voltage-present", ...) so tests and scripts can
find it in an SVG.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edge.trace import V2gDecoder, key_fields, read_trace

FORMATS = (".svg", ".png")


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


@dataclass
class Series:
    t: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def add(self, t: float, value: float | None) -> None:
        if value is not None:
            self.t.append(t)
            self.values.append(value)


@dataclass
class SessionCurves:
    present_power: Series = field(default_factory=Series)  # W, import positive
    target_power: Series = field(default_factory=Series)
    present_voltage: Series = field(default_factory=Series)
    target_voltage: Series = field(default_factory=Series)
    present_current: Series = field(default_factory=Series)
    target_current: Series = field(default_factory=Series)
    soc: Series = field(default_factory=Series)
    source: str = "hardware"  # or "messages"
    title: str = ""


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text.split()[0])
    except (ValueError, IndexError):
        return None


def curves(path: Path) -> SessionCurves:
    """The series of one trace (see the module docstring)."""
    reader = read_trace(path)
    out = SessionCurves()
    from_messages = SessionCurves(source="messages")
    decoder = V2gDecoder()
    for record in reader:
        t = record.t
        if record.kind == "hardware":
            values = record.get("values") or {}
            voltage, current = values.get("present_voltage"), values.get("present_current")
            out.present_voltage.add(t, voltage)
            out.present_current.add(t, current)
            out.present_power.add(t, values.get("power", voltage * current if voltage is not None and current
                                                 is not None else None))
            target_v, target_i = values.get("target_voltage"), values.get("target_current")
            out.target_voltage.add(t, target_v or None)
            out.target_current.add(t, target_i)
            if target_v and target_i is not None:
                out.target_power.add(t, target_v * target_i)
        elif record.kind == "connection" and record.get("event") == "open":
            decoder.connection_opened(record.get("conn"))
        elif record.kind == "v2gtp":
            fields = key_fields(decoder.decode(record))
            soc = _number(fields.get("EVRESSSOC") or fields.get("PresentSOC"))
            out.soc.add(t, soc)
            if record.get("dir") == "rx":
                target_v, target_i = _number(fields.get("EVTargetVoltage")), _number(fields.get("EVTargetCurrent"))
                from_messages.target_voltage.add(t, target_v)
                from_messages.target_current.add(t, target_i)
                if target_v is not None and target_i is not None:
                    from_messages.target_power.add(t, target_v * target_i)
            else:
                voltage = _number(fields.get("EVSEPresentVoltage"))
                current = _number(fields.get("EVSEPresentCurrent"))
                from_messages.present_voltage.add(t, voltage)
                from_messages.present_current.add(t, current)
                if voltage is not None and current is not None:
                    from_messages.present_power.add(t, voltage * current)
    header = reader.header or {}
    if not out.present_voltage.t:  # no board samples: what the messages said
        from_messages.soc = out.soc
        out = from_messages
    out.title = f"{header.get('evse', '?')} {header.get('session', '')} ({Path(path).name})"
    return out


def plot(path: Path, output: Path) -> SessionCurves:
    """Write the plot of trace ``path`` to ``output`` (.svg or .png); PlotUnavailable without matplotlib,
    ValueError for another suffix."""
    if output.suffix.lower() not in FORMATS:
        raise ValueError(f"{output}: the plot is written as .svg or .png, not {output.suffix or 'no suffix'!r}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise PlotUnavailable("edge trace plot needs matplotlib: pip install 'edge[plot]'") from e
    data = curves(path)
    figure, (power, voltage, current, soc) = plt.subplots(4, 1, sharex=True, figsize=(10, 9))
    try:
        figure.suptitle(f"edge session {data.title}  [values from {data.source}]", fontsize=10)
        kw = [d / 1000 for d in data.present_power.values]
        (line,) = power.plot(data.present_power.t, kw, label="present", color="tab:blue")
        line.set_gid("power-present")
        if data.target_power.t:
            (line,) = power.plot(data.target_power.t, [v / 1000 for v in data.target_power.values], label="target",
                                 color="tab:orange", linestyle="--")
            line.set_gid("power-target")
        power.axhline(0.0, color="black", linewidth=0.8).set_gid("power-zero")
        if kw:
            power.fill_between(data.present_power.t, kw, 0.0, where=[v < 0 for v in kw], color="tab:red", alpha=0.3,
                               label="discharge (export)")
            power.fill_between(data.present_power.t, kw, 0.0, where=[v > 0 for v in kw], color="tab:green",
                               alpha=0.2, label="charge (import)")
        power.set_ylabel("power / kW")
        power.set_title("power (import +, export -)", fontsize=9)
        power.legend(loc="upper right", fontsize=8)
        for axes, present, target, name, unit in ((voltage, data.present_voltage, data.target_voltage, "voltage", "V"),
                                                  (current, data.present_current, data.target_current, "current",
                                                   "A")):
            (line,) = axes.plot(present.t, present.values, label="present", color="tab:blue")
            line.set_gid(f"{name}-present")
            if target.t:
                (line,) = axes.plot(target.t, target.values, label="target", color="tab:orange", linestyle="--")
                line.set_gid(f"{name}-target")
            axes.set_ylabel(f"{name} / {unit}")
            axes.legend(loc="upper right", fontsize=8)
        current.axhline(0.0, color="black", linewidth=0.8)
        (line,) = soc.plot(data.soc.t, data.soc.values, color="tab:purple")
        line.set_gid("soc")
        soc.set_ylabel("SoC / %")
        soc.set_xlabel("time since the session's start / s")
        figure.tight_layout()
        figure.savefig(output)
    finally:
        plt.close(figure)
    return data
