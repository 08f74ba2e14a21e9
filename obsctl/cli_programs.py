"""The NCCS test programs as ``obsctl`` subcommands (``obsctl moni``, ``obsctl ze``, ...).

Each program lives in its own module ``opi/programs/<name>.py`` with a ``main(argv) -> int`` that owns its
argument parser (``obsctl moni --help``), its live display and its Ctrl-C handling.  This module only lists
them, so ``obsctl --help`` shows them without importing the device layer; the program module is imported
when its command runs.  This is part of the command-line top floor: it may import ``opi`` inside functions.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: program name -> one-line description (the module is opi.programs.<name>)
PROGRAMS: dict[str, str] = {
    "angle": "encoder angles and tachometer sign/magnitude, five times a second",
    "calt": "receiver and DVM test: diode steps through both DVMs",
    "corrtest": "correlator test in several modes",
    "srdio": "serial digital I/O test: write and read back the front-end selects",
    "dodecdn": "current Dec (and HA) pointing offsets",
    "fdvm": "sample HA, Dec, DVM1, DVM2 at an interval to a file",
    "hadc": "read HA and Dec",
    "hpib": "exercise an instrument by its commands",
    "hyp": "subreflector tilt and focus",
    "mandr": "manual drive: set rates or positions by hand",
    "moni": "commanded and actual position, error, sidereal time, approximate RA, once a second",
    "radsp": "radiometer power spectrum by FFT, with plot",
    "temps": "parameters through the DVMs: cryogenic and housekeeping temperatures",
    "thum": "outside temperature and humidity",
    "tsetp": "check and set the clock against station time",
    "ze": "park at zenith now",
}


def run_program(args: argparse.Namespace) -> int:
    """Import ``opi.programs.<command>`` and run its ``main`` with the remaining arguments."""
    module = importlib.import_module(f"opi.programs.{args.command}")
    argv = list(args.program_args)
    if args.state_dir:
        argv = ["--state-dir", args.state_dir, *argv]
    return int(module.main(argv) or 0)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add every test program to ``obsctl``; each parses its own arguments (``obsctl <name> --help``)."""
    for name, text in PROGRAMS.items():
        p = subparsers.add_parser(name, help=text, add_help=False, prefix_chars="\0",
                                  description=f"{name.upper()}: {text}")
        p.add_argument("program_args", nargs=argparse.REMAINDER)
        p.set_defaults(fn=run_program)


def main(argv: list[str] | None = None) -> int:
    """``python -m obsctl.cli_programs NAME [ARGS]``: run one program."""
    ap = argparse.ArgumentParser(prog="obsctl")
    ap.add_argument("--state-dir", default=None)
    register(ap.add_subparsers(dest="command", required=True))
    args = ap.parse_args(argv)
    return run_program(args)


if __name__ == "__main__":
    sys.exit(main())
