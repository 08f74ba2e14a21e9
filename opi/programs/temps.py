"""TEMPS: cryogenic and housekeeping parameters read through the DVMs, with the TMS readings beside them.

The two DVMs of the radiometer (RAD) are switched in turn to the housekeeping inputs (cryostat diode sensors,
vacuum gauge, supply monitors, room and outside temperature sensors, and the 1 V / ground references), each
pair integrated for ``--time`` observatory seconds; the voltages are converted with the sensors' calibrations
(silicon diode curve at 10 uA, log vacuum gauge, LM35, TMP36; the supply monitors read in volts) and shown
beside the housekeeping IOC's own readings (TMS, and WX for the outside air).  Values are coloured by the
alarm limits of the TMS (WX) PVs: warnings yellow, alarms red.  The DVM input selects are restored when the
program ends (also after Ctrl-C).  ``--no-dvm`` shows the TMS readings only (RAD not needed).
Importable: :func:`read_housekeeping`, :func:`diode_temperature_k`, :func:`gauge_mbar`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from opi.programs import common

NAME = "temps"
# Silicon diode sensor of the cryostat stages at 10 uA (receiver calibration sheet): temperature (K) and
# forward voltage (V); the same curve as the simulated sensors (iocs/sim/radiometer.py).
_DIODE_T = np.array([1.4, 4.2, 10.0, 20.0, 25.0, 30.0, 50.0, 77.0, 100.0, 200.0, 300.0, 400.0])
_DIODE_V = np.array([1.644, 1.578, 1.40, 1.19, 1.12, 1.10, 1.07, 1.02, 0.98, 0.75, 0.56, 0.36])
SEVERITY = ("ok", "minor", "major", "invalid")
_STYLE = {1: "yellow", 2: "bold red", 3: "magenta"}


def diode_temperature_k(volts: float) -> float:
    """Temperature (K) of a cryostat silicon-diode sensor reading ``volts`` (V)."""
    return float(np.interp(volts, _DIODE_V[::-1], _DIODE_T[::-1])) if math.isfinite(volts) else math.nan


def gauge_mbar(volts: float) -> float:
    """Pressure (mbar) of the log vacuum gauge output ``volts``: p = 10^(1.667 U - 11.33)."""
    return 10.0 ** (1.667 * volts - 11.33) if math.isfinite(volts) else math.nan


@dataclass(frozen=True)
class Parameter:
    """One housekeeping parameter: DVM input, conversion from volts, the IOC PV (dev, signal) and display."""

    key: str
    label: str
    dvm_input: int
    convert: Callable[[float], float]
    dev: str | None
    signal: str | None
    units: str
    fmt: str


PARAMETERS: tuple[Parameter, ...] = (
    Parameter("cryo_15k", "cryostat 2nd stage (LNA)", 7, diode_temperature_k, "TMS", "CRYO_15K_RBV", "K", ".3f"),
    Parameter("cryo_70k", "cryostat 1st stage (shield)", 8, diode_temperature_k, "TMS", "CRYO_70K_RBV", "K", ".2f"),
    Parameter("vacuum", "dewar vacuum", 9, gauge_mbar, "TMS", "VAC_RBV", "mbar", ".3e"),
    Parameter("psu_p15", "+15 V supply", 10, lambda v: v, "TMS", "PSU_P15_RBV", "V", ".3f"),
    Parameter("psu_n15", "-15 V supply", 11, lambda v: v, "TMS", "PSU_N15_RBV", "V", ".3f"),
    Parameter("psu_p5", "+5 V supply", 12, lambda v: v, "TMS", "PSU_P5_RBV", "V", ".3f"),
    Parameter("psu_p28", "+28 V supply (noise diodes)", 13, lambda v: v, "TMS", "PSU_P28_RBV", "V", ".3f"),
    Parameter("room", "receiver room (LM35)", 14, lambda v: v / 0.010, "TMS", "ROOM_TEMP_RBV", "degC", ".2f"),
    Parameter("outside", "outside air (TMP36)", 15, lambda v: (v - 0.5) / 0.010, "WX", "TEMP_RBV", "degC", ".2f"),
    Parameter("ref_1v", "DVM reference 1 V", 5, lambda v: v, None, None, "V", ".5f"),
    Parameter("ground", "DVM ground", 6, lambda v: v, None, None, "V", ".6f"),
)


@dataclass
class Reading:
    """One parameter: DVM volts and converted value, the IOC's value, and alarm states (0 ok .. 3 invalid)."""

    key: str
    label: str
    units: str
    dvm_input: int | None
    dvm_volts: float = math.nan
    via_dvm: float = math.nan
    ioc: float = math.nan
    ioc_severity: int = 0
    dvm_severity: int = 0

    @property
    def difference(self) -> float:
        """Via the DVM minus the IOC's reading."""
        return self.via_dvm - self.ioc


@dataclass
class HousekeepingReading:
    """Every parameter at observatory time ``t``, and the compressor state."""

    t: float
    readings: list[Reading] = field(default_factory=list)
    compressor: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Values by parameter key, with their units and alarm states."""
        out: dict[str, Any] = {"t": self.t, "utc": common.fmt_utc(self.t, 3), "compressor": self.compressor}
        for r in self.readings:
            d = asdict(r)
            d["ioc_alarm"] = SEVERITY[min(r.ioc_severity, 3)]
            d["dvm_alarm"] = SEVERITY[min(r.dvm_severity, 3)]
            out[r.key] = d
        return out


def classify(value: float, limits: dict[str, float]) -> int:
    """Alarm severity of ``value`` against a PV's alarm limits (2 major, 1 minor, 0 none; 3 not a number)."""
    if not math.isfinite(value):
        return 3
    lolo, hihi = limits.get("lower_alarm_limit"), limits.get("upper_alarm_limit")
    low, high = limits.get("lower_warning_limit"), limits.get("upper_warning_limit")
    if lolo is not None and hihi is not None and lolo != hihi and not lolo <= value <= hihi:
        return 2
    if low is not None and high is not None and low != high and not low <= value <= high:
        return 1
    return 0


class Housekeeping:
    """The connections TEMPS reads through: radiometer (unless ``dvm`` is False), IOC signals and their limits."""

    def __init__(self, obs: common.Observatory, dvm: bool = True, step_s: float = 0.2, timeout: float = 10.0):
        import epics  # noqa: PLC0415  (after common.connect set the CA environment)

        from devices.common import Readback  # noqa: PLC0415

        self.obs = obs
        self.step_s = step_s
        self.timeout = timeout
        self.rad = obs.device("radiometer") if dvm else None
        self.saved = (self.rad.sel1.get(), self.rad.sel2.get()) if self.rad is not None else None
        self.labels = list(self.rad.sel1.enum_strs) if self.rad is not None else []
        self.signals: dict[str, Any] = {}
        self.limits: dict[str, dict[str, float]] = {}
        for p in PARAMETERS:
            if p.dev and obs.has(p.dev):
                sig = Readback(obs.pv(p.dev, p.signal), name=p.key)
                sig.wait_for_connection(timeout=timeout)
                self.signals[p.key] = sig
                ctrl = epics.get_pv(sig.pvname).get_ctrlvars(timeout=timeout) or {}
                self.limits[p.key] = {k: float(v) for k, v in ctrl.items() if k.endswith(("alarm_limit",
                                                                                           "warning_limit"))}
        self.comp = Readback(obs.pv("TMS", "COMP_STS"), name="comp", string=True) if obs.has("TMS") else None
        if self.comp is not None:
            self.comp.wait_for_connection(timeout=timeout)

    def pairs(self) -> list[tuple[Parameter, Parameter]]:
        """The parameters read through the DVMs, two at a time (DVM1, DVM2)."""
        ps = list(PARAMETERS)
        return [(ps[i], ps[i + 1] if i + 1 < len(ps) else ps[i]) for i in range(0, len(ps), 2)]

    def dvm_volts(self) -> dict[str, float]:
        """Volts of every parameter's DVM input, two inputs per integration."""
        rad = self.rad
        out: dict[str, float] = {}
        rad.integration_time.put(self.step_s)
        for a, b in self.pairs():
            rad.sel1.checked_put(self.labels[a.dvm_input], timeout=self.timeout)
            rad.sel2.checked_put(self.labels[b.dvm_input], timeout=self.timeout)
            rad.trigger().wait(self.timeout + self.step_s / self.obs.clock.speed)
            out[a.key] = float(rad.dvm1.get())
            out[b.key] = float(rad.dvm2.get())
        return out

    def restore(self) -> None:
        """Put the DVM input selects back as they were."""
        if self.rad is not None and self.saved is not None:
            for sig, value in zip((self.rad.sel1, self.rad.sel2), self.saved, strict=True):
                if sig.get() != value:
                    sig.checked_put(value, timeout=self.timeout)


def read_housekeeping(hk: Housekeeping) -> HousekeepingReading:
    """Read every parameter through the DVMs (if connected) and from the IOCs."""
    volts = hk.dvm_volts() if hk.rad is not None else {}
    snap = HousekeepingReading(t=hk.obs.now(), compressor=str(hk.comp.get()) if hk.comp is not None else "")
    for p in PARAMETERS:
        r = Reading(p.key, p.label, p.units, p.dvm_input if hk.rad is not None else None)
        if p.key in volts:
            r.dvm_volts = volts[p.key]
            r.via_dvm = p.convert(volts[p.key])
        sig = hk.signals.get(p.key)
        if sig is not None:
            r.ioc = float(sig.get())
            r.ioc_severity = int(sig.alarm_severity or 0)
            if math.isfinite(r.via_dvm):
                r.dvm_severity = classify(r.via_dvm, hk.limits.get(p.key, {}))
        elif hk.rad is None:
            continue
        snap.readings.append(r)
    return snap


# ---- display -------------------------------------------------------------------------------------------
def _fmt(value: float, fmt: str, units: str, severity: int = 0) -> str:
    text = common.fmt_num(value, fmt, units)
    style = _STYLE.get(severity)
    return f"[{style}]{text}[/]" if style and text != "—" else text


def line(s: HousekeepingReading) -> str:
    """One text line: every parameter via the DVM (IOC value in brackets)."""
    fmts = {p.key: p.fmt for p in PARAMETERS}
    parts = [common.fmt_utc(s.t)]
    for r in s.readings:
        flag = "!" * max(r.dvm_severity if r.dvm_severity < 3 else 0, r.ioc_severity)
        via = format(r.via_dvm, fmts[r.key]) if math.isfinite(r.via_dvm) else "-"
        ioc = format(r.ioc, fmts[r.key]) if math.isfinite(r.ioc) else "-"
        parts.append(f"{r.key} {via} ({ioc}) {r.units}{flag}")
    if s.compressor:
        parts.append(f"compressor {s.compressor}")
    return "  ".join(parts)


def render(s: HousekeepingReading) -> Any:
    """The live table with alarm colours."""
    from rich.table import Table  # noqa: PLC0415

    fmts = {p.key: p.fmt for p in PARAMETERS}
    comp = s.compressor
    caption = None
    if comp:
        caption = "helium compressor " + (f"[green]{comp}[/]" if comp == "RUNNING" else f"[bold red]{comp}[/]")
    table = Table(title=f"TEMPS: housekeeping through the DVMs  {common.fmt_utc(s.t)} UTC", caption=caption)
    for col in ("parameter", "input", "DVM", "via DVM", "IOC", "difference"):
        table.add_column(col, justify="left" if col == "parameter" else "right")
    for r in s.readings:
        fmt = fmts[r.key]
        table.add_row(r.label, "" if r.dvm_input is None else str(r.dvm_input),
                      _fmt(r.dvm_volts, ".6f", "V"), _fmt(r.via_dvm, fmt, r.units, r.dvm_severity),
                      _fmt(r.ioc, fmt, r.units, r.ioc_severity),
                      common.fmt_num(r.difference, "+" + fmt.removeprefix("+")))
    return table


def build_parser() -> common.ProgramParser:
    """``obsctl temps`` arguments."""
    p = common.make_parser(
        NAME,
        "TEMPS: cryogenic and housekeeping parameters through the DVMs: cryostat stages (K), dewar\n"
        "vacuum (mbar), supplies (V), receiver-room and outside temperature (degC), DVM references, each\n"
        "beside the housekeeping IOC's reading, coloured by its alarm limits (yellow warning, red alarm),\n"
        "refreshed in place until Ctrl-C.  The DVM selects are restored at the end.",
        ["obsctl temps", "obsctl temps --count 1 --json", "obsctl temps --no-dvm --interval 5"], interval=2.0)
    p.add_argument("--time", type=common.finite_float, default=0.2, metavar="S",
                   help="DVM integration per input pair, observatory seconds (default 0.2)")
    p.add_argument("--no-dvm", action="store_true", help="only the housekeeping IOC's readings (no DVM switching)")
    return p


def run(args: argparse.Namespace) -> int:
    """Show the housekeeping parameters."""
    if not 0 < args.time <= 60:
        raise common.UsageError(f"--time {args.time:g}: must be in 0..60 s")
    obs = common.connect(args, needs=["TMS"] if args.no_dvm else ["TMS", "RAD"])
    hk = Housekeeping(obs, dvm=not args.no_dvm, step_s=args.time)
    try:
        common.refresh_loop(args, lambda: read_housekeeping(hk), render=render, line=line,
                            record=HousekeepingReading.as_dict)
    finally:
        hk.restore()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``obsctl temps``."""
    return common.run_main(NAME, build_parser(), argv, run)
