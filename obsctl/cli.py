"""The ``obsctl`` command line: bring the observatory up, inspect it, take it down.

Commands
--------
obsctl run      start the observatory, run the demo night (pointing check, drift scan, spectrum, pulsar)
                with its summary table, show live status until Ctrl-C, then stop it
obsctl up       start every IOC of the site file, wait until every PV answers, print a table
obsctl status   what runs and its health
obsctl down     stop every IOC cleanly
obsctl env      shell exports that let any CA client (caget, pyepics) reach the running observatory
obsctl pvs      every PV with type, units and description (--json, --markdown)
obsctl site     validate a site file
obsctl shell    IPython with the RunEngine, devices, plans and the run archive
obsctl azel, dprc2, pj2000, stnow, tstpln, updn
                coordinate utilities of the NCCS toolbox (see docs/programs/)
obsctl angle, calt, corrtest, dodecdn, fdvm, hadc, hpib, hyp, mandr, moni, radsp, srdio, temps, thum, tsetp, ze
                test programs of the NCCS toolbox, against the running observatory (obsctl/cli_programs.py)

This is the top floor of the package: it may import ``iocs`` (inside command functions only).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from obsctl import launcher
from obsctl.cli_programs import register as register_programs
from obsctl.cli_shell import register as register_shell
from obsctl.cli_utilities import register as register_utilities
from obsctl.site import SiteError, load_site


def _site(args: argparse.Namespace):
    site = load_site(args.site)
    if getattr(args, "prefix", None):
        site = site.with_overrides(pv_prefix=args.prefix)
    return site


def _state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir) if args.state_dir else launcher.default_state_dir()


def _print_table(title: str, columns: list[str], rows: list[list[object]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*[str(x) for x in r])
    Console().print(table)


def _only(args: argparse.Namespace) -> list[str] | None:
    return [d.strip().upper() for d in args.only.split(",") if d.strip()] if args.only else None


def cmd_up(args: argparse.Namespace) -> int:
    """Start the observatory and print its process table."""
    site = _site(args)
    state_dir = _state_dir(args)
    t0 = time.monotonic()
    state = launcher.start(site, state_dir, speed=args.speed, epoch=args.start, only=_only(args),
                           base_port=args.port, timeout=args.timeout)
    took = time.monotonic() - t0
    rows = launcher.status(state_dir)
    launcher.log_event(state_dir, f"obsctl up: {len(rows)} processes, {sum(r['pvs'] for r in rows)} PVs "
                                  f"connected in {took:.2f} s")
    _print_table(f"{site.name}: up in {took:.2f} s (every PV connected)",
                 ["process", "devices", "port", "pid", "PVs"],
                 [[r["process"], r["devices"], r["port"], r["pid"], r["pvs"]] for r in rows])
    print(f"state and logs: {state_dir}")
    print("reach it from a shell:  eval \"$(obsctl env)\"   (" + state.addr_list + ")")
    return 0


def _health(state: launcher.ObservatoryState, rows: list[dict]) -> dict[str, str]:
    """Per process: 'ok' if its ALIVE_RBV counter answers over CA, else why not."""
    from obsctl import ca

    ca.use_env(state.client_env())
    import epics

    out = {}
    for spec in state.processes:
        names = [f"{state.prefix}:{d}:ALIVE_RBV" for d in spec.devs]
        vals = [epics.caget(n, timeout=2.0, use_monitor=False) for n in names]
        out[spec.name] = "ok" if all(v is not None for v in vals) else "no CA answer"
    return out


def cmd_status(args: argparse.Namespace) -> int:
    """Show the processes, their pids, restarts and CA health."""
    state_dir = _state_dir(args)
    state = launcher.ObservatoryState.load(state_dir)
    rows = launcher.status(state_dir)
    health = _health(state, rows)
    sup = "running" if launcher.pid_alive(state.supervisor_pid) else "NOT RUNNING"
    launcher.log_event(state_dir, "obsctl status: " + ", ".join(
        f"{r['process']}={'up' if r['alive'] else 'down'}/{health[r['process']]}" for r in rows))
    if args.json:
        try:
            correction: float | None = launcher.clock_correction(state_dir)
        except launcher.LauncherError:
            correction = None  # unreadable: 'obsctl tsetp' says why
        print(json.dumps({"supervisor": sup, "clock": state.clock, "clock_correction_s": correction, "processes": [
            {**r, "health": health[r["process"]]} for r in rows]}, indent=1))
    else:
        _print_table(f"supervisor pid {state.supervisor_pid}: {sup}",
                     ["process", "devices", "port", "pid", "alive", "restarts", "PVs", "CA"],
                     [[r["process"], r["devices"], r["port"], r["pid"], "yes" if r["alive"] else "NO",
                       r["restarts"], r["pvs"], health[r["process"]]] for r in rows])
    bad = [r for r in rows if not r["alive"] or health[r["process"]] != "ok"]
    return 1 if bad or sup != "running" else 0


def cmd_down(args: argparse.Namespace) -> int:
    """Stop the observatory."""
    state_dir = _state_dir(args)
    if state_dir.exists():
        launcher.log_event(state_dir, "obsctl down requested")
    if launcher.stop(state_dir):
        print("observatory stopped")
        return 0
    print(f"nothing was running from {state_dir}")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    """Print shell exports for the running observatory."""
    state_dir = _state_dir(args)
    state = launcher.ObservatoryState.load(state_dir)
    for k, v in launcher.client_env(state_dir, state).items():
        print(f"export {k}='{v}'")
    return 0


def cmd_pvs(args: argparse.Namespace) -> int:
    """List every PV of the site (offline, from the IOC classes)."""
    from iocs.reference import describe_pvs, markdown

    site = _site(args)
    rows = describe_pvs(site, _only(args))
    if args.json:
        print(json.dumps(rows, indent=1))
    elif args.markdown:
        print(markdown(site, rows), end="")
    else:
        _print_table(f"{len(rows)} PVs", ["PV", "type", "units", "rw", "description"],
                     [[r["name"], r["type"] + (f"[{r['count']}]" if r["count"] > 1 else ""), r["units"],
                       "w" if r["writable"] else "", r["description"]] for r in rows])
    return 0


def cmd_site(args: argparse.Namespace) -> int:
    """Validate a site file and summarise it."""
    site = load_site(args.file)
    print(f"{args.file or 'reference site'}: valid — {site.name}, prefix {site.pv_prefix}, "
          f"{len(site.receivers)} receivers, {len(site.instruments)} instruments")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Bring the observatory up, run the demo night (unless --no-demo), show live status until Ctrl-C (or
    --duration), then stop it."""
    from obsctl.dashboard import live_status

    if not args.no_demo:
        from scheduler.demo import DEMO_EPOCH, DEMO_SPEED

        args.speed = args.speed or DEMO_SPEED
        args.start = args.start or DEMO_EPOCH
    cmd_up(args)
    state_dir = _state_dir(args)
    try:
        if not args.no_demo:
            from scheduler.demo import demo_night

            demo_night(state_dir, archive_dir=args.archive_dir)
        live_status(launcher.ObservatoryState.load(state_dir), state_dir, duration=args.duration)
    except KeyboardInterrupt:
        pass
    finally:
        launcher.log_event(state_dir, "obsctl run: stopping")
        launcher.stop(state_dir)
        print("observatory stopped")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``obsctl``."""
    ap = argparse.ArgumentParser(prog="obsctl", description="Observatory control: the simulated observatory.")
    ap.add_argument("--state-dir", default=os.environ.get("OBSCTL_STATE_DIR"),
                    help="where state and logs live (default ~/.local/state/obsctl)")
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--site", default=None, help="site file (default: the reference HartRAO-like site)")
        p.add_argument("--prefix", default=None, help="override the PV prefix")
        p.add_argument("--only", default=None, help="comma-separated instruments, e.g. TIME,DRV,WX")

    for name, fn, text in (("up", cmd_up, "start the observatory"), ("run", cmd_run, "start, watch, stop")):
        p = sub.add_parser(name, help=text)
        common(p)
        p.add_argument("--speed", type=float, default=None, help="simulation speed factor (default: site file)")
        p.add_argument("--start", default=None, help="simulated start epoch, ISO UTC or 'now'")
        p.add_argument("--port", type=int, default=None, help="first CA server port (default: site file, 5064)")
        p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for every PV")
        p.set_defaults(fn=fn)
        if name == "run":
            p.add_argument("--duration", type=float, default=None,
                           help="stop this many seconds after the demo (default: at Ctrl-C)")
            p.add_argument("--no-demo", action="store_true",
                           help="only bring the observatory up and watch it (no demo night)")
            p.add_argument("--archive-dir", default=None, help="run archive directory (default: the site's)")
    p = sub.add_parser("status", help="what runs and its health")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_status)
    sub.add_parser("down", help="stop the observatory").set_defaults(fn=cmd_down)
    sub.add_parser("env", help="print CA environment exports").set_defaults(fn=cmd_env)
    p = sub.add_parser("pvs", help="list every PV")
    common(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--markdown", action="store_true")
    p.set_defaults(fn=cmd_pvs)
    p = sub.add_parser("site", help="validate a site file")
    p.add_argument("file", nargs="?", default=None)
    p.set_defaults(fn=cmd_site)
    register_utilities(sub)
    register_shell(sub)
    register_programs(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``obsctl`` command."""
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (SiteError, launcher.LauncherError, ValueError, KeyError) as err:
        print(f"obsctl {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
