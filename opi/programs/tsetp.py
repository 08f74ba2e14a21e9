"""TSETP: check this computer's observatory clock against station time (TIME IOC), and set it.

The check listens to the station's UTC (``TIME:UNIX_RBV``, published ``RATE_SP`` times a second) and
notes the observatory clock of this computer (``obsctl.launcher.client_clock``: the running observatory's
clock with this computer's correction) as each update arrives.  Transport only ever delays an update, so
the smallest ``local - station`` over the samples is the best estimate of the clock difference (it still
includes the minimum delivery delay).  Differences are given in milliseconds of observatory time and,
divided by the speed factor, of real time.

Setting the clock changes this computer's clock correction (real s, ``obsctl.launcher``), which every
client of this computer started afterwards uses (programs, ``obsctl shell``, ``obsctl env``); the IOCs
and station time are not touched.
- ``--set``: from station time.  Only a clock that differs by more than the tolerance is set (the
  measured difference contains the delivery delay, so a clock within the tolerance is left alone); the
  correction changes by the measured difference, then a new check shows the result (exit 1 if it still
  differs).  A different speed factor cannot be corrected (exit 1).
- ``--set-to UTC``: by hand, so that the clock reads that UTC now (station time not needed).
- ``--reset``: no correction.

Importable: :func:`check_clock` gives a :class:`ClockCheck`; :func:`set_from_station`,
:func:`set_by_hand` and :func:`reset` change the correction.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from obsctl import launcher
from opi.programs import common

NAME = "tsetp"


@dataclass(frozen=True)
class ClockCheck:
    """Result of one clock check.

    Attributes
    ----------
    t_station : float
        Station time of the last update used (POSIX s, UTC).
    utc_station : str
        The station's UTC text of that update.
    offset_ms : float
        This computer's observatory clock minus station time (ms of observatory time; smallest over the
        samples, see the module doc).
    offset_real_ms : float
        The same in real milliseconds (offset / speed).
    spread_ms : float
        Median minus smallest difference (ms of observatory time): the delivery jitter.
    samples : int
        Station updates used.
    speed_station, speed_local : float
        Speed factors published by the TIME IOC and used by this computer's clock.
    pps, pps_offset_us : str, float
        The station's 1PPS state and its clock offset from the 1PPS edge (us).
    host_minus_station_s : float or None
        The host's system clock minus station time (s), only when the observatory runs in real time.
    tolerance_ms : float
        Real-time tolerance of ``ok``.
    correction_s : float
        This computer's clock correction during the check (real s).
    """

    t_station: float
    utc_station: str
    offset_ms: float
    offset_real_ms: float
    spread_ms: float
    samples: int
    speed_station: float
    speed_local: float
    pps: str
    pps_offset_us: float
    host_minus_station_s: float | None
    tolerance_ms: float
    correction_s: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether the clocks agree within the tolerance (real ms) and run at the same speed."""
        return abs(self.offset_real_ms) <= self.tolerance_ms and abs(self.speed_station - self.speed_local) < 1e-9

    def as_dict(self) -> dict[str, Any]:
        """The result with its verdict."""
        return {**asdict(self), "ok": self.ok}


def check_clock(station_time: Any, clock: Any, samples: int = 10, timeout: float = 10.0,
                tolerance_ms: float = 50.0, correction_s: float = 0.0) -> ClockCheck:
    """Compare ``clock`` (an ObservatoryClock) with ``samples`` updates of a connected StationTime device.

    ``correction_s`` is only reported: the clock correction already applied to ``clock`` (real s).

    Raises ProgramError if fewer than one update arrives within ``timeout`` real seconds.
    """
    pairs: list[tuple[float, float]] = []
    done = threading.Event()

    def on_update(value: Any = None, **_: Any) -> None:
        local = clock.now()
        if value is not None and not done.is_set():
            pairs.append((local, float(value)))
            if len(pairs) >= samples:
                done.set()

    cid = station_time.unix.subscribe(on_update, run=False)
    try:
        done.wait(timeout)
    finally:
        station_time.unix.unsubscribe(cid)
    got = list(pairs)
    if not got:
        raise common.ProgramError(f"no station time update from {station_time.unix.pvname} within {timeout:g} s")
    diffs = [loc - sta for loc, sta in got]
    best = min(diffs)
    speed = float(station_time.speed.get())
    host = time.time() - got[-1][1] if abs(clock.speed - 1.0) < 1e-12 else None
    return ClockCheck(t_station=got[-1][1], utc_station=str(station_time.utc.get()), offset_ms=best * 1e3,
                      offset_real_ms=best * 1e3 / clock.speed, spread_ms=(statistics.median(diffs) - best) * 1e3,
                      samples=len(got), speed_station=speed, speed_local=float(clock.speed),
                      pps=str(station_time.pps.get()), pps_offset_us=float(station_time.pps_offset.get()),
                      host_minus_station_s=host, tolerance_ms=tolerance_ms, correction_s=correction_s)


def _apply(obs: common.Observatory, real_offset_s: float, how: str) -> float:
    """Store the correction and give ``obs`` the clock it makes; return the correction (real s)."""
    try:
        launcher.set_clock_correction(obs.state_dir, real_offset_s, how)
    except ValueError as err:
        raise common.ProgramError(f"{err}; nothing was changed") from None
    obs.clock = launcher.client_clock(obs.state_dir, obs.state)
    os.environ["OBSCTL_CLOCK"] = obs.clock.to_env()  # devices made from here on use it too
    return real_offset_s


def set_from_station(obs: common.Observatory, check: ClockCheck) -> float | None:
    """Correct this computer's clock by the difference ``check`` measured; None if within the tolerance.

    Returns the new correction (real s).  ProgramError if the speed factors differ (a restart is needed).
    """
    if abs(check.speed_station - check.speed_local) >= 1e-9:
        raise common.ProgramError(f"station time runs at speed {check.speed_station:g}, this computer's clock at "
                                  f"{check.speed_local:g}: a correction cannot fix that; restart the observatory "
                                  "(obsctl down, obsctl up); nothing was changed")
    if check.ok:
        return None
    return _apply(obs, check.correction_s - check.offset_real_ms / 1e3,
                  f"tsetp --set: {check.offset_ms:+.1f} ms from station time {check.utc_station}")


def set_by_hand(obs: common.Observatory, utc: str) -> float:
    """Set this computer's clock so that it reads ``utc`` (ISO-8601 UTC) now; return the correction (real s)."""
    step = (parse_utc(utc) - obs.clock.now()) / obs.clock.speed
    return _apply(obs, launcher.clock_correction(obs.state_dir) + step, f"tsetp --set-to {utc}")


def parse_utc(text: str) -> float:
    """POSIX s of an ISO-8601 UTC text (or 'now'); UsageError naming the text."""
    from obsctl.clock import parse_epoch  # noqa: PLC0415

    try:
        return parse_epoch(text)
    except ValueError:
        raise common.UsageError(f"--set-to {text!r}: not an ISO-8601 UTC date (e.g. 2026-11-21T20:30:00) "
                                "or 'now'") from None


def reset(obs: common.Observatory) -> None:
    """Remove this computer's clock correction."""
    _apply(obs, 0.0, "tsetp --reset")


def line(c: ClockCheck) -> str:
    """One text line of a check."""
    verdict = "OK" if c.ok else "DIFFERS"
    host = f"  host-station {c.host_minus_station_s:+.3f} s" if c.host_minus_station_s is not None else ""
    return (f"station {c.utc_station}  observatory clock - station {c.offset_ms:+.1f} ms "
            f"({c.offset_real_ms:+.2f} ms real, jitter {c.spread_ms:.1f} ms, {c.samples} updates)  speed "
            f"{c.speed_station:g}/{c.speed_local:g}  1PPS {c.pps} {c.pps_offset_us:+.3f} us{host}  correction "
            f"{c.correction_s * 1e3:+.3f} ms  {verdict}")


def render(c: ClockCheck) -> Any:
    """The table of a check."""
    rows = [("station UTC", c.utc_station),
            ("observatory clock - station", f"{c.offset_ms:+.1f} ms"),
            ("  in real time", f"{c.offset_real_ms:+.2f} ms (tolerance {c.tolerance_ms:g})"),
            ("  delivery jitter", f"{c.spread_ms:.1f} ms over {c.samples} updates"),
            ("speed station / here", f"{c.speed_station:g} / {c.speed_local:g}"),
            ("1PPS", f"{c.pps}, {c.pps_offset_us:+.3f} us")]
    if c.host_minus_station_s is not None:
        rows.append(("host clock - station", f"{c.host_minus_station_s:+.3f} s"))
    rows.append(("clock correction here", f"{c.correction_s * 1e3:+.3f} ms real"))
    rows.append(("verdict", "[green]OK[/]" if c.ok else "[bold red]DIFFERS[/]"))
    return common.kv_table("TSETP: observatory clock against station time", rows)


def build_parser() -> common.ProgramParser:
    """``obsctl tsetp`` arguments."""
    p = common.make_parser(
        NAME,
        "TSETP: check this computer's observatory clock against station time (TIME IOC) and show the\n"
        "difference in milliseconds (observatory time, and real time).  One check by default.\n"
        "--set corrects this computer's clock from station time when it differs by more than the\n"
        "tolerance, then checks again; --set-to sets it by hand; --reset removes the correction.  The\n"
        "correction holds for the clients of this computer started afterwards (programs, obsctl shell).",
        ["obsctl tsetp", "obsctl tsetp --count 10 --interval 5", "obsctl tsetp --json", "obsctl tsetp --set",
         "obsctl tsetp --set-to 2026-11-21T20:30:00", "obsctl tsetp --reset"],
        interval=1.0, count_help="N checks (default 1)")
    p.add_argument("--samples", type=int, default=10, metavar="N",
                   help="station time updates per check (default 10)")
    p.add_argument("--tolerance-ms", type=common.finite_float, default=50.0, metavar="MS",
                   help="clocks agree when within this many real milliseconds (default 50)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--set", action="store_true",
                     help="set this computer's clock from station time if it differs (after the checks)")
    how.add_argument("--set-to", metavar="UTC", default=None,
                     help="set this computer's clock by hand to this ISO-8601 UTC now, then check")
    how.add_argument("--reset", action="store_true", help="remove this computer's clock correction, then check")
    return p


def run(args: argparse.Namespace) -> int:
    """Check the clock, setting it first (--set-to, --reset) or afterwards (--set) when asked."""
    if args.samples < 1:
        raise common.UsageError(f"--samples {args.samples}: must be at least 1")
    if args.tolerance_ms <= 0:
        raise common.UsageError(f"--tolerance-ms {args.tolerance_ms:g}: must be positive")
    if args.set_to is not None:
        parse_utc(args.set_to)
    obs = common.connect(args, needs=["TIME"])
    st = obs.device("station_time")
    if args.reset:
        reset(obs)
        common.note(args, "clock correction removed")
    elif args.set_to is not None:
        corr = set_by_hand(obs, args.set_to)
        common.note(args, f"clock set by hand: correction {corr * 1e3:+.3f} ms real")

    def check() -> ClockCheck:
        return check_clock(st, obs.clock, args.samples, tolerance_ms=args.tolerance_ms,
                           correction_s=launcher.clock_correction(obs.state_dir))

    last: list[ClockCheck] = []

    def read() -> ClockCheck:
        last[:] = [check()]
        return last[0]

    common.refresh_loop(args, read, render=render, line=line, record=ClockCheck.as_dict, count=args.count or 1)
    if not args.set or not last:
        return 0
    before = last[0].correction_s
    corr = set_from_station(obs, last[0])
    if corr is None:
        common.note(args, f"clock agrees with station time within {args.tolerance_ms:g} ms: not set")
        return 0
    common.note(args, f"clock set from station time: correction {corr * 1e3:+.3f} ms real (was "
                      f"{before * 1e3:+.3f}); checking again")
    common.refresh_loop(args, read, render=render, line=line, record=ClockCheck.as_dict, count=1)
    if not last[0].ok:
        raise common.ProgramError(f"the clock still differs from station time by {last[0].offset_real_ms:+.2f} ms "
                                  "real after setting")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``obsctl tsetp``."""
    return common.run_main(NAME, build_parser(), argv, run)
