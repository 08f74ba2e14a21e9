"""MONI: once a second, the commanded and actual position, the error, the sidereal time and the approximate RA.

One reading is one drive control cycle: the newest set of monitor updates of the readbacks below that carry
the same time stamp (the cycle's observatory time), so the numbers belong together.

=============  =================================  ==========================================
 field           PV (``DRV:``)                      meaning
=============  =================================  ==========================================
 commanded       HA_CMD_RBV, DEC_CMD_RBV            commanded encoder position (deg)
 actual          HA_RBV, DEC_RBV                    encoders (deg)
 error           HA_ERR_RBV, DEC_ERR_RBV            commanded - encoder (deg)
 sidereal time   LST_RBV                            local apparent sidereal time (deg; shown in h)
 approx. RA      LST - HA_RBV                       from the encoder HA, no corrections (deg)
 RA              RA_RBV                             LST - observed HA (pointing model, refraction)
=============  =================================  ==========================================

Importable: :func:`read_moni` gives a :class:`Moni` from a connected drive.
"""

from __future__ import annotations

import argparse
import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from opi.programs import common

NAME = "moni"
#: (field, drive component) read in one control cycle
FIELDS = (("ha_cmd_deg", "ha_cmd"), ("dec_cmd_deg", "dec_cmd"), ("ha_deg", "ha"), ("dec_deg", "dec"),
          ("ha_err_deg", "ha_err"), ("dec_err_deg", "dec_err"), ("lst_deg", "lst"), ("ra_deg", "ra"))
SIGNALS = [c for _, c in FIELDS] + ["state", "target", "on_source"]


@dataclass(frozen=True)
class Moni:
    """One control cycle of the drive at observatory time ``t`` (POSIX s); angles in deg."""

    t: float
    ha_cmd_deg: float
    dec_cmd_deg: float
    ha_deg: float
    dec_deg: float
    ha_err_deg: float
    dec_err_deg: float
    lst_deg: float
    ra_deg: float
    state: str
    target: str
    on_source: str
    consistent: bool

    @property
    def ra_approx_deg(self) -> float:
        """Approximate RA = LST - encoder HA (deg, 0..360)."""
        return (self.lst_deg - self.ha_deg) % 360.0

    @property
    def error_deg(self) -> float:
        """Pointing error as an angle on the sky (deg): hypot(HA error x cos Dec, Dec error)."""
        return math.hypot(self.ha_err_deg * math.cos(math.radians(self.dec_deg)), self.dec_err_deg)

    def as_dict(self) -> dict[str, Any]:
        """The reading with the derived values."""
        return {"utc": common.fmt_utc(self.t, 3), **asdict(self), "ra_approx_deg": self.ra_approx_deg,
                "lst_h": self.lst_deg / 15.0, "error_deg": self.error_deg}


class CycleSnapshots:
    """The newest complete set of values that carry one time stamp, from monitored signals.

    An IOC writes the readbacks of one cycle with the cycle's observatory time stamp; monitor updates
    reach a client one by one and, on a busy machine, late.  This keeps the values of the last ``keep``
    time stamps as they arrive and offers the newest stamp for which every signal has arrived.

    Parameters
    ----------
    signals : dict
        Field name -> ophyd signal (monitored).
    keep : int
        Time stamps remembered.
    """

    def __init__(self, signals: dict[str, Any], keep: int = 64):
        self._signals = dict(signals)
        self._keep = keep
        self._cycles: dict[float, dict[str, Any]] = {}
        self._complete: tuple[float, dict[str, Any]] | None = None
        self._lock = threading.Lock()
        self._subs = [(sig, sig.subscribe(self._callback(key), run=True)) for key, sig in self._signals.items()]

    def _callback(self, key: str) -> Callable[..., None]:
        def update(value: Any = None, timestamp: float | None = None, **_: Any) -> None:
            if value is None or timestamp is None:
                return
            ts = float(timestamp)
            with self._lock:
                cycle = self._cycles.setdefault(ts, {})
                cycle[key] = value
                if len(cycle) == len(self._signals) and (self._complete is None or ts > self._complete[0]):
                    self._complete = (ts, dict(cycle))
                if len(self._cycles) > self._keep:
                    for old in sorted(self._cycles)[: len(self._cycles) - self._keep]:
                        del self._cycles[old]

        return update

    def latest(self, timeout: float = 5.0) -> tuple[float, dict[str, Any]] | None:
        """(time stamp, values) of the newest complete cycle, waiting up to ``timeout`` real s for one."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = self._complete
            if found is not None or time.monotonic() >= deadline:
                return found
            time.sleep(0.01)

    def newest(self) -> dict[str, tuple[Any, float]]:
        """Each signal's newest (value, time stamp), complete cycle or not."""
        return {key: (sig.get(), float(sig.timestamp or 0.0)) for key, sig in self._signals.items()}

    def close(self) -> None:
        """Stop listening."""
        for sig, cid in self._subs:
            sig.unsubscribe(cid)
        self._subs = []


class MoniReader:
    """Readings of a connected drive, each one control cycle (see :class:`CycleSnapshots`)."""

    def __init__(self, drive: Any):
        self.drive = drive
        self.cycles = CycleSnapshots({f: getattr(drive, c) for f, c in FIELDS})

    def read(self, timeout: float = 5.0) -> Moni:
        """The newest complete control cycle (waits up to ``timeout`` real s for one; else the newest values,
        marked not ``consistent``)."""
        d = self.drive
        found = self.cycles.latest(timeout)
        if found is not None:
            t, values, consistent = found[0], found[1], True
        else:
            newest = self.cycles.newest()
            t, values, consistent = max(ts for _, ts in newest.values()), {k: v for k, (v, _) in newest.items()}, False
        return Moni(t=t, **{k: float(v) for k, v in values.items()}, state=str(d.state.get()),
                    target=str(d.target.get()), on_source=str(d.on_source.get()), consistent=consistent)

    def close(self) -> None:
        """Stop listening to the drive."""
        self.cycles.close()


def read_moni(drive: Any, timeout: float = 5.0) -> Moni:
    """Commanded/actual position, error, LST and RA of one control cycle of a connected ``drive``."""
    reader = MoniReader(drive)
    try:
        return reader.read(timeout)
    finally:
        reader.close()


def line(m: Moni) -> str:
    """One text line of a reading."""
    f = common
    return (f"{f.fmt_utc(m.t)}  LST {f.fmt_hours(m.lst_deg, 1)}  cmd HA {m.ha_cmd_deg:+9.4f} Dec "
            f"{m.dec_cmd_deg:+8.4f}  act HA {m.ha_deg:+9.4f} Dec {m.dec_deg:+8.4f}  err HA "
            f"{m.ha_err_deg * 3600:+8.1f}\" Dec {m.dec_err_deg * 3600:+8.1f}\"  RA~ {f.fmt_hours(m.ra_approx_deg, 1)}"
            f"  {m.state}")


def render(m: Moni) -> Any:
    """The live display: a position table and a time/RA table."""
    from rich.table import Table  # noqa: PLC0415

    f = common
    pos = Table(title=f"MONI  {f.fmt_utc(m.t)} UTC   drive {m.state}, on source {m.on_source}",
                caption=f"target: {m.target}")
    for col in ("", "commanded", "actual", "error"):
        pos.add_column(col, justify="right")
    pos.add_row("HA", f"{f.fmt_ha(m.ha_cmd_deg)}  {m.ha_cmd_deg:+9.4f}", f"{f.fmt_ha(m.ha_deg)}  {m.ha_deg:+9.4f}",
                f"{m.ha_err_deg * 3600:+9.1f}\"")
    pos.add_row("Dec", f"{f.fmt_dms(m.dec_cmd_deg)}  {m.dec_cmd_deg:+9.4f}",
                f"{f.fmt_dms(m.dec_deg)}  {m.dec_deg:+9.4f}", f"{m.dec_err_deg * 3600:+9.1f}\"")
    pos.add_row("on sky", "", "", f"{m.error_deg * 3600:9.1f}\"")
    times = f.kv_table("time and RA", [
        ("sidereal time (LAST)", f.fmt_hours(m.lst_deg, 2)),
        ("approx. RA = LST - HA", f.fmt_hours(m.ra_approx_deg, 1)),
        ("RA (corrected)", f.fmt_hours(m.ra_deg, 1))])
    from rich.console import Group  # noqa: PLC0415

    return Group(pos, times)


def build_parser() -> common.ProgramParser:
    """``obsctl moni`` arguments."""
    return common.make_parser(
        NAME,
        "MONI: commanded and actual position of the dish, the error between them, the local apparent\n"
        "sidereal time and the approximate RA (LST - encoder HA), refreshed in place once a second until\n"
        "Ctrl-C.  Angles in degrees (HA and Dec also sexagesimal), errors in arcseconds.",
        ["obsctl moni", "obsctl moni --count 2 --json", "obsctl moni --interval 5 > moni.log"],
        interval=1.0)


def run(args: argparse.Namespace) -> int:
    """Show the drive once a second."""
    obs = common.connect(args, needs=["DRV"])
    drive = obs.device("drive", signals=SIGNALS)
    reader = MoniReader(drive)
    common.refresh_loop(args, reader.read, render=render, line=line, record=Moni.as_dict)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``obsctl moni``."""
    return common.run_main(NAME, build_parser(), argv, run)
