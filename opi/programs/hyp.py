"""HYP: subreflector tilt and focus — show the positions, set them and wait with progress until in position.

Without a setting the positions (encoders), setpoints and state of the subreflector (SUB IOC) are shown,
refreshed in place until Ctrl-C (or ``--count``), with the beam effects the IOC publishes: the gain factor
at the selected receiver (focus error) and the beam displacement by the tilts.  With ``--focus MM``,
``--tilt-x ARCMIN`` and/or ``--tilt-y ARCMIN`` the axes are commanded (a value outside the travel is refused
with the IOC's reason, exit code 1) and the display follows the move, with a progress bar per axis, until
the subreflector reports in position; Ctrl-C during a move stops the subreflector where it is.
``--stop`` stops a move in progress.  Importable: :func:`read_subreflector`, :func:`command_subreflector`.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from typing import Any

from opi.programs import common

NAME = "hyp"
#: (key, device component, label, units)
AXES = (("focus", "focus", "focus Z", "mm"), ("tilt_x", "tilt_x", "tilt X", "arcmin"),
        ("tilt_y", "tilt_y", "tilt Y", "arcmin"))
_STATE_STYLE = {"IN_POSITION": "green", "MOVING": "yellow", "SETTLING": "cyan"}


@dataclass
class SubreflectorReading:
    """Positions (encoders) and setpoints (mm / arcmin), state and beam effects at observatory time ``t``."""

    t: float
    position: dict[str, float]
    target: dict[str, float]
    state: str
    gain: float
    beam_dx_deg: float
    beam_dy_deg: float
    receiver: str
    start: dict[str, float] = field(default_factory=dict)  # positions when a move started
    moving: bool = False   # a move commanded by this program is under way

    def progress(self, key: str) -> float | None:
        """Fraction (0..1) of the commanded travel done on axis ``key`` (None without a move on it)."""
        if key not in self.start:
            return None
        span = self.target[key] - self.start[key]
        if abs(span) < 1e-9:
            return 1.0
        return min(max((self.position[key] - self.start[key]) / span, 0.0), 1.0)

    @property
    def in_position(self) -> bool:
        """Whether the subreflector reports in position."""
        return self.state == "IN_POSITION"

    def as_dict(self) -> dict[str, Any]:
        """Values in their units (mm, arcmin, deg) with the state."""
        d: dict[str, Any] = {"t": self.t, "utc": common.fmt_utc(self.t, 3), "state": self.state,
                             "in_position": self.in_position}
        for key, _, _, units in AXES:
            unit = "mm" if units == "mm" else "arcmin"
            d[f"{key}_{unit}"] = self.position[key]
            d[f"{key}_sp_{unit}"] = self.target[key]
            p = self.progress(key)
            if p is not None:
                d[f"{key}_progress"] = p
        d.update({"gain_factor": self.gain, "beam_dx_deg": self.beam_dx_deg, "beam_dy_deg": self.beam_dy_deg,
                  "receiver": self.receiver})
        return d


def read_subreflector(sub: Any, start: dict[str, float] | None = None, moving: bool = False,
                      fresh: bool = False) -> SubreflectorReading:
    """The newest values of a connected :class:`devices.subreflector.Subreflector`: monitored values, or with
    ``fresh`` read now from the IOC (a round trip per PV; for a final report after a move)."""
    def value(sig: Any) -> Any:
        return sig.fresh()[0] if fresh else sig.get()

    pos = {key: float(value(getattr(sub, comp).readback)) for key, comp, _, _ in AXES}
    target = {key: float(value(getattr(sub, comp).setpoint)) for key, comp, _, _ in AXES}
    t = float(sub.focus.readback.fresh()[1] if fresh else sub.focus.readback.timestamp or math.nan)
    return SubreflectorReading(t=t, position=pos, target=target, state=str(value(sub.state)),
                               gain=float(value(sub.gain)), beam_dx_deg=float(value(sub.beam_dx)),
                               beam_dy_deg=float(value(sub.beam_dy)), receiver=str(value(sub.rx)),
                               start=dict(start or {}), moving=moving)


def command_subreflector(sub: Any, targets: dict[str, float], timeout: float = 10.0) -> Any:
    """Write the setpoints of ``targets`` (focus mm, tilt_x / tilt_y arcmin) and return a Status finishing when
    the subreflector is in position.  A refused value raises CommandRefused (IOC's reason) before anything else
    is written."""
    from ophyd import DeviceStatus  # noqa: PLC0415

    for key, value in targets.items():
        getattr(sub, key).setpoint.checked_put(float(value), timeout=timeout)
    status = DeviceStatus(sub)
    sub.in_position_after(status)
    return status


# ---- display -------------------------------------------------------------------------------------------
def line(r: SubreflectorReading) -> str:
    """One text line of a reading."""
    parts = [f"{common.fmt_utc(r.t)}  {r.state:11s}"]
    for key, _, label, units in AXES:
        p = r.progress(key)
        parts.append(f"{label} {r.position[key]:+8.3f} {units}" + (f" (-> {r.target[key]:+.3f}, {p:4.0%})"
                                                                   if p is not None else ""))
    parts.append(f"gain {r.gain:.5f} ({r.receiver})  beam {r.beam_dx_deg * 3600:+.1f}/{r.beam_dy_deg * 3600:+.1f} "
                 "arcsec")
    return "  ".join(parts)


def render(r: SubreflectorReading) -> Any:
    """The live table: one row per axis with a progress bar during a move, then state and beam."""
    from rich.progress_bar import ProgressBar  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    style = _STATE_STYLE.get(r.state, "bold red")
    table = Table(title=f"HYP: subreflector  {common.fmt_utc(r.t)} UTC",
                  caption=f"state [{style}]{r.state}[/]   gain factor {r.gain:.5f} at {r.receiver}   beam shift "
                          f"{r.beam_dx_deg * 3600:+.1f} / {r.beam_dy_deg * 3600:+.1f} arcsec (HA / Dec)")
    for col in ("axis", "position", "setpoint", "error", "progress"):
        table.add_column(col, justify="left" if col in ("axis", "progress") else "right")
    for key, _, label, units in AXES:
        p = r.progress(key)
        bar: Any = ProgressBar(total=1.0, completed=p, width=24) if p is not None else ""
        table.add_row(label, f"{r.position[key]:+.3f} {units}", f"{r.target[key]:+.3f} {units}",
                      f"{r.position[key] - r.target[key]:+.3f}", bar)
    return table


# ---- the program ---------------------------------------------------------------------------------------
def build_parser() -> common.ProgramParser:
    """``obsctl hyp`` arguments."""
    p = common.make_parser(
        NAME,
        "HYP: subreflector tilt and focus.  Without a setting, show the encoder positions, setpoints,\n"
        "state, gain factor and beam shift, refreshed in place until Ctrl-C.  With --focus / --tilt-x /\n"
        "--tilt-y, move the subreflector and follow the move with a progress bar until it is in position\n"
        "(Ctrl-C during a move stops it where it is).  Focus in mm, tilts in arcmin.",
        ["obsctl hyp", "obsctl hyp --focus 2.5", "obsctl hyp --tilt-x -3 --tilt-y 1.5", "obsctl hyp --stop",
         "obsctl hyp --count 1 --json"], interval=0.5)
    p.add_argument("--focus", type=common.finite_float, default=None, metavar="MM", help="focus (axial) position, mm")
    p.add_argument("--tilt-x", type=common.finite_float, default=None, metavar="ARCMIN",
                   help="tilt X, arcmin (moves the beam in hour angle)")
    p.add_argument("--tilt-y", type=common.finite_float, default=None, metavar="ARCMIN",
                   help="tilt Y, arcmin (moves the beam in declination)")
    p.add_argument("--stop", action="store_true", help="stop a move in progress")
    p.add_argument("--timeout", type=common.finite_float, default=300.0, metavar="S",
                   help="real seconds allowed for a move (default 300)")
    common.allow_negative_values(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Show the subreflector, or move it and follow the move."""
    targets = {k: v for k, v in (("focus", args.focus), ("tilt_x", args.tilt_x), ("tilt_y", args.tilt_y))
               if v is not None}
    if args.stop and targets:
        raise common.UsageError("--stop cannot be combined with --focus / --tilt-x / --tilt-y")
    if args.timeout <= 0:
        raise common.UsageError(f"--timeout {args.timeout:g}: must be positive")
    obs = common.connect(args, needs=["SUB"])
    sub = obs.device("subreflector")
    if args.stop:
        sub.stop()
    if not targets:
        common.refresh_loop(args, lambda: read_subreflector(sub), render=render, line=line,
                            record=SubreflectorReading.as_dict)
        return 0
    start = {k: float(getattr(sub, k).position) for k in targets}
    status = command_subreflector(sub, targets)
    deadline = time.monotonic() + args.timeout
    view = argparse.Namespace(json=args.json, count=None, interval=None)

    def read() -> SubreflectorReading:
        if time.monotonic() > deadline and not status.done:
            r = read_subreflector(sub, start)
            raise common.ProgramError(f"not in position after {args.timeout:g} s: {r.state}, "
                                      + ", ".join(f"{k} {r.position[k]:+.3f}" for k in targets))
        done = status.done
        return read_subreflector(sub, start, moving=not done, fresh=done)

    try:
        common.refresh_loop(view, read, render=render, line=line, record=SubreflectorReading.as_dict,
                            interval=min(args.interval, 0.2), until=lambda r: not r.moving)
    except (KeyboardInterrupt, common.ProgramError):
        sub.stop()
        common.say_error(NAME, "subreflector stopped")
        raise
    status.wait(5.0)  # raises if the move failed
    return 0


def main(argv: list[str] | None = None) -> int:
    """``obsctl hyp``."""
    return common.run_main(NAME, build_parser(), argv, run)
