"""The one power and safety module, as properties: whatever a car asks and whatever the controller
commands, the power module is never told more than the charger's, the car's and the command's limits
allow, and never to export unless export was allowed; the sign converter round-trips."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edge.controller import PowerCommand
from edge.hardware import bidirectional_charger
from edge.v2g.power import CarAcLimits, CarDcLimits, PowerStage, SignConvention

amps = st.floats(-2000, 2000, allow_nan=False)
volts = st.floats(0, 1500, allow_nan=False)
watts = st.floats(0, 400_000, allow_nan=False)


@st.composite
def commands(draw: st.DrawFn) -> PowerCommand:
    max_w, min_w = draw(watts), -draw(watts)
    target = draw(st.none() | st.floats(min_w, max_w, allow_nan=False))
    return PowerCommand(max_w=max_w, min_w=min_w, target_w=target)


@given(volts, amps, commands(), st.booleans(), st.floats(-100, 1000), st.floats(0, 300), st.floats(0, 200))
def test_a_dc_demand_stays_within_every_limit(voltage: float, current: float, command: PowerCommand, export: bool,
                                               car_v: float, car_i: float, car_discharge_i: float) -> None:
    hw = bidirectional_charger(isolation_s=0.0)
    hw.update(1.0)
    stage = PowerStage(hw)
    if export:
        stage.allow_export()
    car = CarDcLimits(max_voltage=car_v, max_current=car_i, max_power=150_000, max_discharge_current=car_discharge_i,
                      max_discharge_power=60_000)
    stage.dc_demand(voltage, current, car, command)
    lim = hw.limits
    assert 0 <= hw.target_v <= min(lim.max_voltage, car_v) + 1e-9 or (car_v < 0 and hw.target_v == 0)
    assert hw.target_i <= min(lim.max_current, car_i) + 1e-9
    reference = max(hw.target_v, hw.voltage, 1.0)
    assert hw.target_i * reference <= min(lim.max_power, command.max_w, 150_000) + 1e-6
    if not export:
        assert hw.target_i >= 0
    else:
        assert -hw.target_i <= min(lim.max_discharge_current, car_discharge_i) + 1e-9
        assert -hw.target_i * reference <= min(lim.max_discharge_power, -command.min_w, 60_000) + 1e-6


@given(commands(), st.booleans(), st.floats(0, 50_000), st.floats(0, 50_000))
def test_ac_power_stays_within_every_limit(command: PowerCommand, export: bool, car_max: float,
                                          car_discharge: float) -> None:
    hw = bidirectional_charger()
    stage = PowerStage(hw)
    if export:
        stage.allow_export()
    setpoint = stage.ac_power(CarAcLimits(max_power=car_max, max_discharge_power=car_discharge), command)
    assert setpoint.power <= min(hw.ac.max_power, command.max_w, car_max) + 1e-6
    assert setpoint.power >= (-min(hw.ac.max_discharge_power, -command.min_w, car_discharge) - 1e-6 if export else 0)
    assert hw.ac_limit * hw.ac.nominal_voltage * hw.ac.phases == setpoint.power or abs(
        hw.ac_limit * hw.ac.nominal_voltage * hw.ac.phases - setpoint.power) < 1e-6


@given(st.floats(-1e6, 1e6, allow_nan=False), st.booleans(), st.booleans())
def test_the_sign_converter_round_trips(value: float, negative_limits: bool, inverted: bool) -> None:
    signs = SignConvention(negative_discharge_limits=negative_limits, inverted_targets=inverted)
    assert signs.target_from_wire(signs.target_to_wire(value)) == value
    assert signs.limit_from_wire(signs.limit_to_wire(abs(value))) == abs(value)
    assert (signs.limit_to_wire(abs(value)) <= 0) == negative_limits or value == 0
