"""THUM: the outside temperature and humidity (also pressure, wind and dew point), refreshed in place.

Values are the weather station's newest readings (WX IOC, published once a second); each carries its
observatory time stamp and alarm severity (warnings in yellow, alarms in red on the terminal).
Importable: :func:`read_weather` gives a :class:`WeatherReading` from a connected weather device.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from opi.programs import common

NAME = "thum"
#: (field, weather component, label, format, unit)
QUANTITIES = (("temp_c", "temp", "temperature", ".2f", "degC"), ("humidity_pct", "hum", "humidity", ".1f", "%"),
              ("pressure_hpa", "pres", "pressure", ".2f", "hPa"), ("wind_m_s", "wind_spd", "wind speed", ".2f", "m/s"),
              ("wind_dir_deg", "wind_dir", "wind from", ".1f", "deg"),
              ("dew_point_c", "dewpt", "dew point", ".2f", "degC"))
SEVERITY = {0: "ok", 1: "warning", 2: "alarm", 3: "invalid"}
_STYLE = {1: "yellow", 2: "bold red", 3: "magenta"}


@dataclass(frozen=True)
class WeatherReading:
    """Newest weather readings: values by field name, their observatory time stamps (POSIX s) and severities."""

    values: dict[str, float]
    stamps: dict[str, float]
    severity: dict[str, int] = field(default_factory=dict)

    @property
    def t(self) -> float:
        """Time stamp of the temperature reading (POSIX s)."""
        return self.stamps.get("temp_c", float("nan"))

    def as_dict(self) -> dict[str, Any]:
        """Values, time stamps and alarm states."""
        return {"utc": common.fmt_utc(self.t, 3), "t": self.t, **self.values,
                "stamps": self.stamps, "alarms": {k: SEVERITY.get(v, str(v)) for k, v in self.severity.items()}}


def read_weather(weather: Any) -> WeatherReading:
    """The newest readings of a connected :class:`devices.weather.Weather` (monitor values, no round trip)."""
    values, stamps, sev = {}, {}, {}
    for key, comp, *_ in QUANTITIES:
        sig = getattr(weather, comp)
        values[key] = float(sig.get())
        stamps[key] = float(sig.timestamp)
        sev[key] = int(sig.alarm_severity or 0)
    return WeatherReading(values, stamps, sev)


def line(r: WeatherReading) -> str:
    """One text line of a reading."""
    v = r.values
    flags = [k for k, s in r.severity.items() if s]
    return (f"{common.fmt_utc(r.t)}  T {v['temp_c']:6.2f} degC  RH {v['humidity_pct']:5.1f} %  P "
            f"{v['pressure_hpa']:7.2f} hPa  wind {v['wind_m_s']:5.2f} m/s from {v['wind_dir_deg']:5.1f} deg  "
            f"dew point {v['dew_point_c']:6.2f} degC" + (f"  ALARM {','.join(flags)}" if flags else ""))


def render(r: WeatherReading) -> Any:
    """The live table (warnings yellow, alarms red)."""
    rows = []
    for key, _, label, fmt, unit in QUANTITIES:
        text = common.fmt_num(r.values[key], fmt, unit)
        style = _STYLE.get(r.severity.get(key, 0))
        rows.append((label, f"[{style}]{text}[/]" if style else text))
    return common.kv_table(f"THUM: weather  {common.fmt_utc(r.t)} UTC", rows)


def build_parser() -> common.ProgramParser:
    """``obsctl thum`` arguments."""
    return common.make_parser(
        NAME,
        "THUM: outside air temperature and relative humidity, with pressure, wind speed and direction\n"
        "and dew point, from the weather station (WX), refreshed in place until Ctrl-C.  Readings in\n"
        "warning are shown yellow, in alarm red.",
        ["obsctl thum", "obsctl thum --count 1", "obsctl thum --json --interval 10 >> weather.jsonl"],
        interval=1.0)


def run(args: argparse.Namespace) -> int:
    """Show the weather."""
    obs = common.connect(args, needs=["WX"])
    wx = obs.device("weather")
    common.refresh_loop(args, lambda: read_weather(wx), render=render, line=line, record=WeatherReading.as_dict)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``obsctl thum``."""
    return common.run_main(NAME, build_parser(), argv, run)
