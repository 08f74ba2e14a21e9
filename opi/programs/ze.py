"""ZE: park the dish at the zenith now, with a progress display until it is parked.

Commands ZENITH (the drive slews to HA 0, Dec = latitude, corrected for the pointing model and refraction,
and holds that encoder position: state PARKED).  A refused command (wind stow) prints the IOC's reason
with exit code 1; Ctrl-C stops the drive.  Importable: :func:`park_at_zenith`.
"""

from __future__ import annotations

import argparse
from typing import Any

from opi.programs import common
from opi.programs.mandr import COMMAND_SIGNALS, MoveView, follow_move

NAME = "ze"


def park_at_zenith(args: argparse.Namespace, drive: Any) -> MoveView:
    """Command ZENITH and show the drive until parked (``args``: json, interval, timeout); return the last view."""
    status = drive.zenith(timeout=args.timeout)
    return follow_move(args, drive, status, "ZE: park at the zenith")


def build_parser() -> common.ProgramParser:
    """``obsctl ze`` arguments."""
    p = common.make_parser(
        NAME,
        "ZE: park the dish at the zenith now.  Shows the drive (state, position, elevation, error left)\n"
        "until it is parked; Ctrl-C stops the drive.  A refused command shows the drive's reason.",
        ["obsctl ze", "obsctl ze --json", "obsctl ze --timeout 600"],
        interval=0.5, count=False)
    p.add_argument("--timeout", type=common.finite_float, default=900.0, metavar="S",
                   help="real seconds the move may take (default 900)")
    return p


def run(args: argparse.Namespace) -> int:
    """Park at the zenith."""
    if args.timeout <= 0:
        raise common.UsageError(f"--timeout {args.timeout:g}: must be positive")
    obs = common.connect(args, needs=["DRV"])
    drive = obs.device("drive", heartbeat=True, signals=COMMAND_SIGNALS)
    v = park_at_zenith(args, drive)
    common.note(args, f"parked at the zenith: El {v.el_deg:.3f} deg (HA {v.ha_obs_deg:+.4f}, Dec "
                      f"{v.dec_obs_deg:+.4f} deg) after {v.elapsed_s:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``obsctl ze``."""
    return common.run_main(NAME, build_parser(), argv, run)
