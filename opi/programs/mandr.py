"""MANDR: drive the dish by hand — axis rates, a slew to a position, or a stop.

``--rate-ha R --rate-dec R``
    Move the axes at these rates (deg/s of observatory time) until Ctrl-C, ``--count`` refreshes or
    ``--duration`` real seconds, then stop.  MANDR commands the drive's RATE mode (state MANUAL): the axes
    turn at the rates from where they are, following nothing on the sky.  ``--sky`` gives rates relative
    to the sky instead: a SCAN about the sky point under the beam, from zero offsets, on top of sidereal
    tracking.  The drive's safety still applies: the drive stops itself before an axis limit, the
    horizon limit or the sun zone, and MANDR shows the IOC's reason (exit 1).
``--keys``
    Steer by hand from the terminal: the drive holds in RATE (MANUAL) and the arrow keys change the axis
    rates by ``--step`` (left/right: HA -/+, up/down: Dec +/-); ``+``/``-`` double or halve the step, space
    holds (rates 0), ``x`` stops the drive (a rate key starts again), ``q`` or Ctrl-C stops and quits.
    A rate the drive refuses, or a stop by the drive's safety, is shown and steering goes on.
``--to-hadec HA DEC`` / ``--to-azel AZ EL``
    Slew to a fixed apparent position and park there (the drive holds the encoder position).
``--stop``
    Stop the drive (both axes brake to rest).

Refused commands print the IOC's reason (sun avoidance, limits, wind stow) with exit code 1.  Ctrl-C
stops the drive.  :func:`follow_move` and :func:`stop_drive` are shared with ZE.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from opi.programs import common
from opi.programs.hadc import packet

NAME = "mandr"
SIDEREAL_DEG_S = 360.0 * 1.002737909350795 / 86400.0  # apparent HA rate of a fixed sky point (deg/s)
#: drive components a manual command uses (the others are released: less load on the drive IOC)
COMMAND_SIGNALS = ["mode", "slew_frame", "slew_x", "slew_y", "track_name", "track_ra", "track_dec", "off_ha",
                   "off_dec", "rate_ha", "rate_dec", "scan_dur", "state", "target", "message", "limit",
                   "watchdog_sts", "pos_pkt", "ha_err", "dec_err", "dec", "el", "sun_obs"]
CMD_LEAD_S = 0.3  # real s between reading the position and the command taking effect (--sky)


@dataclass(frozen=True)
class MoveView:
    """The drive during a manual move, from one position packet (angles deg, rates deg/s, t POSIX s)."""

    t: float
    state: str
    ha_obs_deg: float
    dec_obs_deg: float
    ha_enc_deg: float
    dec_enc_deg: float
    ha_vel_deg_s: float
    dec_vel_deg_s: float
    el_deg: float
    error_deg: float
    settled: bool
    elapsed_s: float
    what: str
    done: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The view as a record."""
        return {"utc": common.fmt_utc(self.t, 3), **asdict(self)}


def read_view(drive: Any, what: str, t0: float, done: bool = False) -> MoveView:
    """Snapshot of ``drive`` (newest packet and monitors) for the move ``what`` started at monotonic ``t0``."""
    from devices.drive import (  # noqa: PLC0415
        PKT_DEC_ENC,
        PKT_DEC_OBS,
        PKT_DEC_RATE,
        PKT_HA_ENC,
        PKT_HA_OBS,
        PKT_HA_RATE,
        PKT_ON_SOURCE,
        PKT_T,
    )

    pkt = packet(drive, fresh=False)
    el = drive.el.get()
    return MoveView(t=float(pkt[PKT_T]), state=drive.packet_state(pkt), ha_obs_deg=float(pkt[PKT_HA_OBS]),
                    dec_obs_deg=float(pkt[PKT_DEC_OBS]), ha_enc_deg=float(pkt[PKT_HA_ENC]),
                    dec_enc_deg=float(pkt[PKT_DEC_ENC]), ha_vel_deg_s=float(pkt[PKT_HA_RATE]),
                    dec_vel_deg_s=float(pkt[PKT_DEC_RATE]), el_deg=float(el) if el is not None else math.nan,
                    error_deg=float(drive.pointing_error()), settled=bool(pkt[PKT_ON_SOURCE] > 0.5),
                    elapsed_s=time.monotonic() - t0, what=what, done=done)


def line(v: MoveView) -> str:
    """One text line of a view."""
    return (f"{common.fmt_utc(v.t)}  {v.state:<9} HA {v.ha_obs_deg:+9.4f} Dec {v.dec_obs_deg:+8.4f} El "
            f"{v.el_deg:6.2f} deg  rates HA {v.ha_vel_deg_s:+.5f} Dec {v.dec_vel_deg_s:+.5f} deg/s  error "
            f"{v.error_deg:.4f} deg  {v.elapsed_s:5.1f} s  {v.what}")


def render(v: MoveView, caption: str = "Ctrl-C stops the drive") -> Any:
    """The live table of a move."""
    f = common
    return f.kv_table(f"{v.what}  ({v.elapsed_s:.1f} s)", [
        ("drive", v.state + (", settled" if v.settled else "")),
        ("HA observed", f"{f.fmt_ha(v.ha_obs_deg)}  {v.ha_obs_deg:+9.4f} deg"),
        ("Dec observed", f"{f.fmt_dms(v.dec_obs_deg)}  {v.dec_obs_deg:+9.4f} deg"),
        ("elevation", f"{v.el_deg:.3f} deg"),
        ("HA rate", f"{v.ha_vel_deg_s:+.5f} deg/s"),
        ("Dec rate", f"{v.dec_vel_deg_s:+.5f} deg/s"),
        ("error left", f"{v.error_deg:.4f} deg"),
        ("UTC", f.fmt_utc(v.t))], caption=caption)


# ---- shared with ZE ----------------------------------------------------------------------------
def stop_drive(drive: Any, timeout: float = 10.0) -> str:
    """Command STOP now and wait (at most ``timeout`` real s) until both axes are at rest; return the state."""
    from devices.drive import HALTED, PKT_DEC_RATE, PKT_HA_RATE  # noqa: PLC0415

    done = threading.Event()
    drive.mode.put("STOP", use_complete=True, callback=lambda *a, **k: done.set())
    done.wait(min(timeout, 5.0))
    deadline = time.monotonic() + timeout
    state = "?"
    while time.monotonic() < deadline:
        pkt = packet(drive)
        state = drive.packet_state(pkt)
        if state in HALTED and max(abs(pkt[PKT_HA_RATE]), abs(pkt[PKT_DEC_RATE])) < 1e-6:
            break
        time.sleep(0.05)
    return state


def raise_failure(status: Any, what: str) -> None:
    """Raise ProgramError with the reason if a finished drive Status failed."""
    from ophyd.utils import StatusTimeoutError  # noqa: PLC0415

    exc = status.exception()
    if exc is None:
        return
    if isinstance(exc, StatusTimeoutError):
        raise common.ProgramError(f"{what}: not done within the timeout; drive left as it is")
    raise common.ProgramError(str(exc))


def follow_move(args: argparse.Namespace, drive: Any, status: Any, what: str) -> MoveView:
    """Show the drive until ``status`` finishes (refreshed every ``args.interval`` s); return the last view.

    Ctrl-C stops the drive (then KeyboardInterrupt goes on).  A failed Status raises ProgramError with the
    IOC's reason.
    """
    t0 = time.monotonic()
    last: list[MoveView] = []

    def read() -> MoveView:
        done = status.done
        v = read_view(drive, what, t0, done)
        last.append(v)
        del last[:-1]
        return v

    try:
        common.refresh_loop(args, read, render=render, line=line, record=MoveView.as_dict, count=None,
                            until=lambda v: v.done)
    except KeyboardInterrupt:
        common.note(args, f"Ctrl-C: drive stopped ({stop_drive(drive)})")
        raise
    raise_failure(status, what)
    return last[-1]


# ---- the three modes -------------------------------------------------------------------------
def icrs_of_apparent(ha_deg: float, dec_deg: float, t: float, site: Any) -> tuple[float, float]:
    """ICRS (RA, Dec) (deg) of the topocentric apparent place (HA, Dec) (deg) at POSIX time ``t``."""
    from astropy import units as u  # noqa: PLC0415
    from astropy.coordinates import ICRS, HADec, SkyCoord  # noqa: PLC0415

    from obsctl import astro  # noqa: PLC0415  (offline astropy settings)

    loc = astro.site_location(site)
    frame = HADec(obstime=astro.to_time(t), location=loc.earth, pressure=0 * u.hPa)
    c = SkyCoord(ha=ha_deg * u.deg, dec=dec_deg * u.deg, frame=frame).transform_to(ICRS())
    return float(c.ra.deg) % 360.0, float(c.dec.deg)


def rate_limits(site: Any) -> dict[str, tuple[float, float]]:
    """Allowed requested rates per axis (deg/s): what the drive accepts for RATE and SCAN."""
    lim_h, lim_d = site.mount.ha.command_rate_deg_s, site.mount.dec.command_rate_deg_s
    return {"ha": (-lim_h, lim_h), "dec": (-lim_d, lim_d)}


def sky_under_beam(obs: common.Observatory, drive: Any) -> tuple[float, float]:
    """ICRS (RA, Dec) (deg) of the sky point under the beam when a command sent now lands."""
    from devices.drive import PKT_DEC_OBS, PKT_HA_OBS  # noqa: PLC0415

    icrs_of_apparent(0.0, 0.0, obs.now(), obs.site)  # astropy imported and warm before timing matters
    pkt = packet(drive)
    t_pos = obs.now()
    ra, dec = icrs_of_apparent(float(pkt[PKT_HA_OBS]), float(pkt[PKT_DEC_OBS]), t_pos, obs.site)
    # the sky turns on while the command travels
    return (ra + SIDEREAL_DEG_S * (obs.now() + CMD_LEAD_S * obs.clock.speed - t_pos)) % 360.0, dec


def check_rates(args: argparse.Namespace, site: Any) -> tuple[float, float]:
    """The requested (HA, Dec) rates (deg/s); UsageError if beyond what the drive accepts."""
    r_ha = args.rate_ha if args.rate_ha is not None else 0.0
    r_dec = args.rate_dec if args.rate_dec is not None else 0.0
    max_rate = {"ha": site.mount.ha.max_rate_deg_s, "dec": site.mount.dec.max_rate_deg_s}
    for axis, r in (("ha", r_ha), ("dec", r_dec)):
        lo, hi = rate_limits(site)[axis]
        if not lo <= r <= hi:
            raise common.UsageError(f"--rate-{axis} {r:g}: outside {lo:.4f}..{hi:.4f} deg/s (the drive moves an "
                                    f"axis by hand at most {hi / max_rate[axis]:.0%} of its maximum rate)")
    return r_ha, r_dec


class Superseded(common.ProgramError):
    """Another client re-commanded the drive during a manual move (MANDR then leaves the drive alone)."""


def run_rates(args: argparse.Namespace, obs: common.Observatory, drive: Any) -> int:
    """Move the axes at the requested rates until the end condition, then stop."""
    from devices.common import DeviceFault  # noqa: PLC0415
    from devices.drive import HALTED  # noqa: PLC0415

    r_ha, r_dec = check_rates(args, obs.site)
    what = f"manual rates HA {r_ha:+g} Dec {r_dec:+g} deg/s" + (" on the sky" if args.sky else "")
    if args.sky:
        status = drive.scan(sky_under_beam(obs, drive), rate_ha=r_ha, rate_dec=r_dec, duration=0.0, off_ha=0.0,
                            off_dec=0.0, timeout=args.timeout)
        running = "SCANNING"
    else:
        status = drive.rate(r_ha, r_dec, timeout=args.timeout)
        running = "MANUAL"
    follow_move(args, drive, status, what + ": starting")
    t0 = time.monotonic()
    deadline = t0 + args.duration if args.duration is not None else math.inf

    def read() -> MoveView:
        v = read_view(drive, what, t0)
        if status.done and status.exception() is not None:
            raise_failure(status, what)
        if status.done and v.state in HALTED:
            raise DeviceFault(drive.stop_reason(v.state))
        if status.done and v.state != running:
            raise Superseded(f"the drive was re-commanded ({v.state}, target {drive.target.get()}); "
                             "MANDR leaves it as it is")
        return v

    return steer_then_stop(args, drive, lambda: common.refresh_loop(
        args, read, render=render, line=line, record=MoveView.as_dict, until=lambda v: time.monotonic() >= deadline))


def steer_then_stop(args: argparse.Namespace, drive: Any, loop: Callable[[], Any]) -> int:
    """Run ``loop`` (a display loop while the drive moves by hand), then stop the drive and say so.

    Ctrl-C and any failure stop the drive too (then go on), except :class:`Superseded`: the drive then
    belongs to the client that re-commanded it.
    """
    try:
        loop()
    except KeyboardInterrupt:
        common.note(args, f"Ctrl-C: drive stopped ({stop_drive(drive)})")
        raise
    except Superseded:
        raise
    except BaseException:
        stop_drive(drive)
        raise
    common.note(args, f"drive stopped ({stop_drive(drive)})")
    return 0


KEY_HELP = "arrows: HA -/+ (left/right), Dec +/- (up/down); +/-: step x2 or /2; space: hold; x: stop; q: quit"


class Steering:
    """Rates asked by keys (deg/s), the step, and the last message; applies them to the drive."""

    def __init__(self, drive: Any, site: Any, step: float):
        lim = rate_limits(site)
        self.drive, self.top = drive, (lim["ha"][1], lim["dec"][1])
        self.rates, self.step, self.message, self.quit = [0.0, 0.0], step, "", False

    def label(self) -> str:
        """What the display's title says."""
        text = f"keys: HA {self.rates[0]:+.4f} Dec {self.rates[1]:+.4f} deg/s, step {self.step:g}"
        return text + (f"; {self.message}" if self.message else "")

    def key(self, name: str) -> None:
        """Act on one key."""
        moves = {"left": (0, -1), "right": (0, 1), "up": (1, 1), "down": (1, -1)}
        if name in moves:
            axis, sign = moves[name]
            new = list(self.rates)
            new[axis] = max(-self.top[axis], min(self.top[axis], round(new[axis] + sign * self.step, 9)))
            self.apply(new)
        elif name == "space":
            self.apply([0.0, 0.0])
        elif name in ("+", "="):
            self.step = min(self.step * 2.0, max(self.top))
        elif name in ("-", "_"):
            self.step = max(self.step / 2.0, 1e-4)
        elif name == "x":
            self.message = f"stopped ({stop_drive(self.drive)}); a rate key starts again"
            self.rates = [0.0, 0.0]
        elif name in ("q", "Q"):
            self.quit = True

    def apply(self, new: list[float]) -> None:
        """Ask the drive for ``new`` rates (RATE again: on from the current command while MANUAL, else a new
        manual move from where the axes rest); a refusal is shown."""
        from devices.common import CommandRefused  # noqa: PLC0415

        try:
            self.drive.command_rates(new[0], new[1])
        except CommandRefused as err:
            self.message = f"refused: {self.drive.last_message() or err}"
            return
        self.rates, self.message = new, ""


def run_keys(args: argparse.Namespace, obs: common.Observatory, drive: Any) -> int:
    """Steer the axes with the arrow keys until q, Ctrl-C, --count refreshes or --duration, then stop."""
    from opi.programs.keys import KeyReader  # noqa: PLC0415

    steer = Steering(drive, obs.site, args.step)
    follow_move(args, drive, drive.rate(0.0, 0.0, timeout=args.timeout), "manual drive by keys: starting")
    t0 = time.monotonic()
    deadline = t0 + args.duration if args.duration is not None else math.inf

    def loop() -> None:
        with KeyReader() as keys:
            def read() -> MoveView:
                for name in keys.pending():
                    steer.key(name)
                v = read_view(drive, "", t0)
                if v.state != "MANUAL" and not steer.message:
                    steer.message = f"drive {v.state}: {drive.last_message()}"
                return replace(v, what=steer.label())

            common.refresh_loop(args, read, render=lambda v: render(v, KEY_HELP), line=line,
                                record=MoveView.as_dict, until=lambda v: steer.quit or time.monotonic() >= deadline)

    return steer_then_stop(args, drive, loop)


def slew_target(args: argparse.Namespace) -> tuple[float, float, str]:
    """(x, y, frame) of --to-hadec / --to-azel in degrees; UsageError naming a bad angle."""
    from obsctl.coordinates import parse_angle  # noqa: PLC0415

    try:
        if args.to_hadec:
            return parse_angle(args.to_hadec[0], "ha"), parse_angle(args.to_hadec[1], "dec"), "HADEC"
        return parse_angle(args.to_azel[0], "az"), parse_angle(args.to_azel[1], "el"), "AZEL"
    except ValueError as err:
        raise common.UsageError(str(err)) from None


def run_slew(args: argparse.Namespace, drive: Any) -> int:
    """Slew to --to-hadec or --to-azel and park there."""
    x, y, frame = slew_target(args)
    what = f"slew to {'HA' if frame == 'HADEC' else 'Az'} {x:+.4f} {'Dec' if frame == 'HADEC' else 'El'} {y:+.4f} deg"
    status = drive.slew(x, y, frame, timeout=args.timeout)
    v = follow_move(args, drive, status, what)
    common.note(args, f"parked: HA {v.ha_obs_deg:+.4f} Dec {v.dec_obs_deg:+.4f} El {v.el_deg:.3f} deg")
    return 0


def run_stop(args: argparse.Namespace, drive: Any) -> int:
    """Stop the drive and show it until at rest."""
    status = drive.halt(timeout=args.timeout)
    follow_move(args, drive, status, "stop")
    return 0


def build_parser() -> common.ProgramParser:
    """``obsctl mandr`` arguments."""
    p = common.make_parser(
        NAME,
        "MANDR: manual drive.  Move the axes at given rates (deg/s of observatory time) until Ctrl-C,\n"
        "--count refreshes or --duration seconds, then stop; or steer with the arrow keys (--keys); or\n"
        "slew to an apparent HA/Dec or Az/El and park; or stop.  Refused commands show the drive's reason\n"
        "(sun, limits, wind).  Ctrl-C stops the drive.  Angles: degrees, or sexagesimal (HA in h:m:s, the\n"
        "others d:m:s).",
        ["obsctl mandr --rate-ha 0.1 --rate-dec 0", "obsctl mandr --rate-dec -0.05 --duration 30",
         "obsctl mandr --keys --step 0.02", "obsctl mandr --to-hadec -1:30:00 -45", "obsctl mandr --to-azel 180 30",
         "obsctl mandr --stop"],
        interval=0.5)
    common.allow_negative_values(p)
    p.add_argument("--rate-ha", type=common.finite_float, default=None, metavar="DEG_S",
                   help="HA axis rate (deg/s; default 0 when --rate-dec is given)")
    p.add_argument("--rate-dec", type=common.finite_float, default=None, metavar="DEG_S",
                   help="Dec axis rate (deg/s; default 0 when --rate-ha is given)")
    p.add_argument("--to-hadec", nargs=2, metavar=("HA", "DEC"), help="slew to apparent HA, Dec and park")
    p.add_argument("--to-azel", nargs=2, metavar=("AZ", "EL"), help="slew to apparent Az, El and park")
    p.add_argument("--stop", action="store_true", help="stop the drive")
    p.add_argument("--keys", action="store_true", help="steer with the arrow keys (needs a terminal on stdin)")
    p.add_argument("--step", type=common.finite_float, default=0.01, metavar="DEG_S",
                   help="--keys: rate change per key press (deg/s; default 0.01)")
    p.add_argument("--sky", action="store_true", help="rates relative to the sky (added to sidereal tracking)")
    p.add_argument("--duration", type=common.finite_float, default=None, metavar="S",
                   help="rate mode: stop after this many real seconds")
    p.add_argument("--timeout", type=common.finite_float, default=900.0, metavar="S",
                   help="real seconds a slew or stop may take (default 900)")
    return p


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse (tests and scripts); UsageError on bad arguments."""
    args = build_parser().parse_args(argv)
    _check(args)
    return args


def _check(args: argparse.Namespace) -> None:
    rates = args.rate_ha is not None or args.rate_dec is not None
    modes = [name for name, given in (("--rate-ha/--rate-dec", rates), ("--keys", args.keys),
                                      ("--to-hadec", bool(args.to_hadec)), ("--to-azel", bool(args.to_azel)),
                                      ("--stop", args.stop)) if given]
    if len(modes) != 1:
        raise common.UsageError("give one of --rate-ha/--rate-dec, --keys, --to-hadec, --to-azel or --stop" +
                                (f", not {' and '.join(modes)}" if modes else ""))
    if args.sky and not rates:
        raise common.UsageError("--sky goes with --rate-ha/--rate-dec only")
    if args.duration is not None and not (rates or args.keys):
        raise common.UsageError("--duration goes with --rate-ha/--rate-dec or --keys only")
    if not 0 < args.step <= 1.0:
        raise common.UsageError(f"--step {args.step:g}: must be above 0 and at most 1 deg/s")
    if args.keys and not os.isatty(sys.stdin.fileno()):
        raise common.UsageError("--keys needs a terminal on standard input")
    if args.duration is not None and args.duration <= 0:
        raise common.UsageError(f"--duration {args.duration:g}: must be positive")
    if args.timeout <= 0:
        raise common.UsageError(f"--timeout {args.timeout:g}: must be positive")
    if args.to_hadec or args.to_azel:
        slew_target(args)


def run(args: argparse.Namespace) -> int:
    """Carry out the manual command."""
    _check(args)
    obs = common.connect(args, needs=["DRV"])
    if not (args.stop or args.to_hadec or args.to_azel or args.keys):
        check_rates(args, obs.site)  # before touching the drive
    drive = obs.device("drive", heartbeat=True, signals=COMMAND_SIGNALS)
    if args.stop:
        return run_stop(args, drive)
    if args.keys:
        return run_keys(args, obs, drive)
    if args.to_hadec or args.to_azel:
        return run_slew(args, drive)
    return run_rates(args, obs, drive)


def main(argv: list[str] | None = None) -> int:
    """``obsctl mandr``."""
    return common.run_main(NAME, build_parser(), argv, run)
