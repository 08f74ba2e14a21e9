"""FDVM: sample HA, Dec, DVM1 and DVM2 every ``--interval`` seconds into a CSV file.

Each row is one radiometer integration (RAD IOC, :class:`devices.radiometer.Radiometer` triggered for
``--integration`` seconds of observatory time; 0, the default, takes the first synchronous sample at or
after the trigger): the mean observed HA and Dec of the beam (deg), the mean DVM1 and DVM2 readings (in
the units of the selected inputs, K on the RF inputs), and the number of samples averaged.  The file has
one header line naming every column with its unit::

    utc,t_s,ha_deg,dec_deg,dvm1_K,dvm2_K,samples

Rows are written (and flushed) as they come, ``--count`` of them or until Ctrl-C.  An existing non-empty
file is refused unless ``--append`` (rows added after its header) or ``--force`` (overwritten).
Importable: :func:`sample` and :func:`header`.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from opi.programs import common

NAME = "fdvm"
TRIGGER_TIMEOUT = 20.0  # real s for the samples of one integration to arrive (plus the integration itself)


@dataclass(frozen=True)
class DvmSample:
    """One FDVM row: observatory time (POSIX s), mean HA/Dec (deg), mean DVM readings, samples averaged."""

    t: float
    ha_deg: float
    dec_deg: float
    dvm1: float
    dvm2: float
    samples: int
    row: int = 0
    file: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The row as a record."""
        return {"utc": common.fmt_utc(self.t, 3), **asdict(self)}


def header(units1: str, units2: str) -> str:
    """The CSV header line: column names with their units."""
    return f"utc,t_s,ha_deg,dec_deg,dvm1_{units1 or 'V'},dvm2_{units2 or 'V'},samples"


def csv_row(s: DvmSample) -> str:
    """One CSV line of a sample (NaN written as ``nan``)."""
    return (f"{common.fmt_utc(s.t, 3).replace(' ', 'T')}Z,{s.t:.3f},{s.ha_deg:.6f},{s.dec_deg:.6f},"
            f"{s.dvm1:.5f},{s.dvm2:.5f},{s.samples}")


def sample(radiometer: Any, integration_s: float = 0.0, timeout: float = TRIGGER_TIMEOUT,
           speed: float = 1.0) -> DvmSample:
    """One integration of a connected radiometer (``integration_s`` observatory s; ``speed`` the clock's).

    ProgramError if the samples do not arrive within ``timeout`` real seconds plus the integration.
    """
    radiometer.integration_time.put(float(integration_s))
    status = radiometer.trigger()
    wait = timeout + integration_s / max(speed, 1e-9)
    try:
        status.wait(wait)
    except Exception as err:  # noqa: BLE001  (ophyd raises its own timeout/failure types; reported below)
        radiometer.stop()
        raise common.ProgramError(f"no radiometer samples within {wait:.0f} s ({type(err).__name__}: {err}); "
                                  f"acquisition {radiometer.acq_sts.get()}, drive position "
                                  f"{radiometer.pos.get()}") from None
    return DvmSample(t=float(radiometer.time.get()), ha_deg=float(radiometer.ha.get()),
                     dec_deg=float(radiometer.dec.get()), dvm1=float(radiometer.dvm1.get()),
                     dvm2=float(radiometer.dvm2.get()), samples=int(radiometer.nsamp.get()))


def _check_file(path: Path, append: bool, force: bool) -> None:
    if path.is_dir():
        raise common.UsageError(f"{path} is a directory")
    if path.exists() and path.stat().st_size > 0 and not (append or force):
        raise common.UsageError(f"{path} exists; use --append to add rows or --force to overwrite it")


def _open(path: Path, append: bool, force: bool, head: str) -> TextIO:
    _check_file(path, append, force)
    exists = path.exists() and path.stat().st_size > 0
    if exists and append:
        first = path.read_text().splitlines()[0] if path.read_text() else ""
        if first != head:
            raise common.UsageError(f"--append: {path} has another header ({first!r}), expected {head!r}")
        return path.open("a")
    try:
        fh = path.open("w")
    except OSError as err:
        raise common.UsageError(f"cannot write {path}: {err.strerror}") from None
    fh.write(head + "\n")
    fh.flush()
    return fh


def line(s: DvmSample) -> str:
    """One text line of a row."""
    return (f"{s.row:5d}  {common.fmt_utc(s.t)}  HA {s.ha_deg:+9.4f} Dec {s.dec_deg:+8.4f} deg  DVM1 "
            f"{s.dvm1:10.4f}  DVM2 {s.dvm2:10.4f}  ({s.samples} samples)")


def render(s: DvmSample) -> Any:
    """The live table."""
    f = common
    return f.kv_table(f"FDVM: {s.row} rows written to {s.file}", [
        ("UTC", f.fmt_utc(s.t)), ("HA", f"{f.fmt_num(s.ha_deg, '+9.4f', 'deg')}"),
        ("Dec", f"{f.fmt_num(s.dec_deg, '+9.4f', 'deg')}"), ("DVM1", f.fmt_num(s.dvm1, "10.4f")),
        ("DVM2", f.fmt_num(s.dvm2, "10.4f")), ("samples averaged", str(s.samples))], caption="Ctrl-C ends the file")


def build_parser() -> common.ProgramParser:
    """``obsctl fdvm`` arguments."""
    p = common.make_parser(
        NAME,
        "FDVM: sample HA, Dec, DVM1 and DVM2 every --interval real seconds into a CSV file (one header line\n"
        "with the units, then one row per sample), --count rows or until Ctrl-C.  Each row is one\n"
        "radiometer integration of --integration seconds of observatory time (0: one sample).",
        ["obsctl fdvm dvm.csv --interval 1 --count 60", "obsctl fdvm dvm.csv --append --integration 0.5",
         "obsctl fdvm /tmp/x.csv --force --count 5 --json"],
        interval=1.0, count_help="N rows, then exit (default: until Ctrl-C)")
    p.add_argument("file", help="CSV file to write")
    p.add_argument("--integration", type=common.finite_float, default=0.0, metavar="S",
                   help="integration per row, seconds of observatory time (default 0: one sample)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--append", action="store_true", help="add rows to an existing file with the same header")
    group.add_argument("--force", action="store_true", help="overwrite an existing file")
    return p


def run(args: argparse.Namespace) -> int:
    """Write the file."""
    if not (math.isfinite(args.integration) and args.integration >= 0):
        raise common.UsageError(f"--integration {args.integration:g}: must be 0 or positive")
    path = Path(args.file)
    _check_file(path, args.append, args.force)
    obs = common.connect(args, needs=["RAD"])
    rad = obs.device("radiometer")
    if str(rad.acq_sts.get()) != "RUN":
        raise common.ProgramError(f"the radiometer is not acquiring ({rad.acq_sts.pvname} = {rad.acq_sts.get()}); "
                                  f"start it with: caput {rad.acq_cmd.pvname} RUN")
    head = header(str(rad.dvm1_egu.get()), str(rad.dvm2_egu.get()))
    fh = _open(path, args.append, args.force, head)
    rows = 0

    def read() -> DvmSample:
        nonlocal rows
        s = sample(rad, args.integration, speed=obs.clock.speed)
        rows += 1
        s = DvmSample(**{**asdict(s), "row": rows, "file": str(path)})
        fh.write(csv_row(s) + "\n")
        fh.flush()
        return s

    try:
        common.refresh_loop(args, read, render=render, line=line, record=DvmSample.as_dict)
    finally:
        fh.close()
        common.note(args, f"{rows} rows written to {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``obsctl fdvm``."""
    return common.run_main(NAME, build_parser(), argv, run)
