"""DODECDN: the current Dec (and HA) pointing offsets, and setting the Dec offset by hand.

Shows, per axis, the user offset setpoint (``OFF_*_SP``), the offset in the command now (``OFF_*_RBV``:
user + scan), the pointing-model term (``*_PM_RBV``) and the refraction term (``*_REFR_RBV``), in degrees
and arcseconds; the commanded encoder position is apparent + offset + pointing model + refraction.

``--set-dec DEG`` (and ``--set-ha DEG``) write the user offset, checked: the value must be finite and inside
the setpoint's limits (exit 2 otherwise), the IOC must accept it (the IOC's reason and exit 1 otherwise),
and it is read back.  While the drive tracks or scans the offset acts at once and the program waits until
the drive has settled on it again; otherwise it is kept for the next TRACK or SCAN.
Importable: :func:`read_offsets` and :func:`set_offset`.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from typing import Any

from opi.programs import common

NAME = "dodecdn"
ARCSEC = 3600.0
SIGNALS = ["off_ha", "off_dec", "ha_pm", "dec_pm", "ha_refr", "dec_refr", "state", "target", "message", "pos_pkt"]


@dataclass(frozen=True)
class Offsets:
    """Pointing offsets and corrections of the drive (deg) at observatory time ``t`` (POSIX s)."""

    t: float
    off_ha_sp_deg: float
    off_dec_sp_deg: float
    off_ha_deg: float
    off_dec_deg: float
    ha_pm_deg: float
    dec_pm_deg: float
    ha_refr_deg: float
    dec_refr_deg: float
    state: str
    target: str

    @property
    def ha_total_deg(self) -> float:
        """Offset + pointing model + refraction in HA (deg): commanded minus apparent."""
        return self.off_ha_deg + self.ha_pm_deg + self.ha_refr_deg

    @property
    def dec_total_deg(self) -> float:
        """Offset + pointing model + refraction in Dec (deg)."""
        return self.off_dec_deg + self.dec_pm_deg + self.dec_refr_deg

    def as_dict(self) -> dict[str, Any]:
        """The offsets with the totals."""
        return {"utc": common.fmt_utc(self.t, 3), **asdict(self), "ha_total_deg": self.ha_total_deg,
                "dec_total_deg": self.dec_total_deg}


def _sig(drive: Any, dotted: str) -> Any:
    obj = drive
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def read_offsets(drive: Any) -> Offsets:
    """The offsets and corrections of a connected drive (newest monitor values)."""
    vals = {}
    t = 0.0
    for key, comp in (("off_ha_sp_deg", "off_ha.setpoint"), ("off_dec_sp_deg", "off_dec.setpoint"),
                      ("off_ha_deg", "off_ha.readback"), ("off_dec_deg", "off_dec.readback"),
                      ("ha_pm_deg", "ha_pm"), ("dec_pm_deg", "dec_pm"), ("ha_refr_deg", "ha_refr"),
                      ("dec_refr_deg", "dec_refr")):
        sig = _sig(drive, comp)
        vals[key] = float(sig.get())
        if not comp.endswith("setpoint"):  # setpoints carry the writer's wall clock, not observatory time
            t = max(t, float(sig.timestamp or 0.0))
    return Offsets(t=t, **vals, state=str(drive.state.get()), target=str(drive.target.get()))


def set_offset(drive: Any, axis: str, value_deg: float, wait: bool = True, timeout: float = 60.0) -> str:
    """Write the user offset of ``axis`` ("ha" or "dec", deg), checked; return what happened (text).

    Raises UsageError for a value outside the setpoint's limits, CommandRefused with the IOC's reason if
    the IOC refuses it, DeviceFault if the drive stops while settling.
    """
    positioner = drive.off_dec if axis == "dec" else drive.off_ha
    lo, hi = positioner.setpoint.limits
    if lo < hi and not lo <= value_deg <= hi:
        raise common.UsageError(f"--set-{axis} {value_deg:g}: outside the drive's offset limits {lo:g}..{hi:g} deg")
    state = str(drive.state.fresh()[0])
    if wait and state in ("TRACKING", "SCANNING"):
        positioner.move(value_deg, wait=False, timeout=timeout).wait(timeout)
        return f"{axis.upper()} offset {value_deg:+.5f} deg set; drive settled on it ({state})"
    accepted = positioner.setpoint.checked_put(value_deg)
    note = "acts at the next TRACK or SCAN" if state not in ("TRACKING", "SCANNING") else "acting now"
    return f"{axis.upper()} offset {float(accepted):+.5f} deg set (drive {state}: {note})"


def _pair(deg: float) -> str:
    return f"{deg:+9.5f} deg {deg * ARCSEC:+8.1f}\""


def line(o: Offsets) -> str:
    """One text line."""
    return (f"{common.fmt_utc(o.t)}  Dec offset {o.off_dec_deg:+.5f} (set {o.off_dec_sp_deg:+.5f}) PM "
            f"{o.dec_pm_deg:+.5f} refr {o.dec_refr_deg:+.5f}  HA offset {o.off_ha_deg:+.5f} (set "
            f"{o.off_ha_sp_deg:+.5f}) PM {o.ha_pm_deg:+.5f} refr {o.ha_refr_deg:+.5f} deg  {o.state}")


def render(o: Offsets) -> Any:
    """The offsets table."""
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=f"DODECDN: pointing offsets  {common.fmt_utc(o.t)} UTC",
                  caption=f"drive {o.state}, target {o.target}; commanded = apparent + offset + model + refraction")
    for col in ("", "Dec", "HA"):
        table.add_column(col, justify="right")
    for label, dec, ha in (("offset set", o.off_dec_sp_deg, o.off_ha_sp_deg),
                           ("offset now", o.off_dec_deg, o.off_ha_deg),
                           ("pointing model", o.dec_pm_deg, o.ha_pm_deg),
                           ("refraction", o.dec_refr_deg, o.ha_refr_deg),
                           ("total", o.dec_total_deg, o.ha_total_deg)):
        table.add_row(label, _pair(dec), _pair(ha))
    return table


def build_parser() -> common.ProgramParser:
    """``obsctl dodecdn`` arguments."""
    p = common.make_parser(
        NAME,
        "DODECDN: the current Dec and HA pointing offsets of the drive (user offset set and in the\n"
        "command, pointing-model and refraction terms), once by default.  --set-dec DEG sets the Dec\n"
        "offset (coordinate degrees; checked against the drive's limits and read back; while tracking,\n"
        "waits until the drive has settled on it).",
        ["obsctl dodecdn", "obsctl dodecdn --set-dec 0.012", "obsctl dodecdn --set-dec -0.5 --set-ha 0",
         "obsctl dodecdn --count 60 --interval 1 --json"],
        interval=1.0, count_help="N readings (default 1)")
    common.allow_negative_values(p)
    p.add_argument("--set-dec", type=common.finite_float, default=None, metavar="DEG",
                   help="set the Dec offset (deg)")
    p.add_argument("--set-ha", type=common.finite_float, default=None, metavar="DEG",
                   help="set the HA offset (coordinate deg)")
    p.add_argument("--no-wait", action="store_true", help="do not wait for the drive to settle on a new offset")
    p.add_argument("--timeout", type=common.finite_float, default=60.0, metavar="S",
                   help="real seconds to wait for the drive to settle (default 60)")
    return p


def run(args: argparse.Namespace) -> int:
    """Show (and set) the offsets."""
    obs = common.connect(args, needs=["DRV"])
    drive = obs.device("drive", signals=SIGNALS)
    for axis, value in (("dec", args.set_dec), ("ha", args.set_ha)):
        if value is not None:
            common.note(args, set_offset(drive, axis, value, wait=not args.no_wait, timeout=args.timeout))
    common.refresh_loop(args, lambda: read_offsets(drive), render=render, line=line, record=Offsets.as_dict,
                        count=args.count or 1)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``obsctl dodecdn``."""
    return common.run_main(NAME, build_parser(), argv, run)
