"""TSETP: check this computer's observatory clock against station time (TIME IOC), and say whether it can be set.

The check listens to the station's UTC (``TIME:UNIX_RBV``, published ``RATE_SP`` times a second) and
notes the observatory clock of this computer (``obsctl.clock``, from the running observatory's state) as
each update arrives.  Transport only ever delays an update, so the smallest ``local - station`` over the
samples is the best estimate of the clock difference (it still includes the minimum delivery delay).
Differences are given in milliseconds of observatory time and, divided by the speed factor, of real time.

Setting the clock (``--set``): the TIME IOC publishes the observatory clock, which every process derives
from the same three numbers fixed when the observatory starts (``obsctl up --start/--speed``); the IOC
serves no PV to set it (its only setpoint, ``RATE_SP``, is the publication rate).  ``--set`` therefore
reports the check and says so, with exit code 1.

Importable: :func:`check_clock` gives a :class:`ClockCheck`.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from opi.programs import common

NAME = "tsetp"
SET_UNSUPPORTED = ("--set: the TIME IOC cannot set the clock: it publishes the observatory clock, which is fixed "
                   "when the observatory starts (obsctl up --start/--speed), and serves no clock-setting PV "
                   "(its only setpoint, RATE_SP, is the publication rate); nothing was changed")


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

    @property
    def ok(self) -> bool:
        """Whether the clocks agree within the tolerance (real ms) and run at the same speed."""
        return abs(self.offset_real_ms) <= self.tolerance_ms and abs(self.speed_station - self.speed_local) < 1e-9

    def as_dict(self) -> dict[str, Any]:
        """The result with its verdict."""
        return {**asdict(self), "ok": self.ok}


def check_clock(station_time: Any, clock: Any, samples: int = 10, timeout: float = 10.0,
                tolerance_ms: float = 50.0) -> ClockCheck:
    """Compare ``clock`` (an ObservatoryClock) with ``samples`` updates of a connected StationTime device.

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
                      host_minus_station_s=host, tolerance_ms=tolerance_ms)


def line(c: ClockCheck) -> str:
    """One text line of a check."""
    verdict = "OK" if c.ok else "DIFFERS"
    host = f"  host-station {c.host_minus_station_s:+.3f} s" if c.host_minus_station_s is not None else ""
    return (f"station {c.utc_station}  observatory clock - station {c.offset_ms:+.1f} ms "
            f"({c.offset_real_ms:+.2f} ms real, jitter {c.spread_ms:.1f} ms, {c.samples} updates)  speed "
            f"{c.speed_station:g}/{c.speed_local:g}  1PPS {c.pps} {c.pps_offset_us:+.3f} us{host}  {verdict}")


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
    rows.append(("verdict", "[green]OK[/]" if c.ok else "[bold red]DIFFERS[/]"))
    return common.kv_table("TSETP: observatory clock against station time", rows)


def build_parser() -> common.ProgramParser:
    """``obsctl tsetp`` arguments."""
    p = common.make_parser(
        NAME,
        "TSETP: check this computer's observatory clock against station time (TIME IOC) and show the\n"
        "difference in milliseconds (observatory time, and real time).  One check by default.\n"
        "--set would set the clock through the TIME IOC; that IOC has no clock-setting PV (the clock\n"
        "is fixed when the observatory starts), so --set reports the check and says so (exit code 1).",
        ["obsctl tsetp", "obsctl tsetp --count 10 --interval 5", "obsctl tsetp --json", "obsctl tsetp --set"],
        interval=1.0, count_help="N checks (default 1)")
    p.add_argument("--samples", type=int, default=10, metavar="N",
                   help="station time updates per check (default 10)")
    p.add_argument("--tolerance-ms", type=common.finite_float, default=50.0, metavar="MS",
                   help="clocks agree when within this many real milliseconds (default 50)")
    p.add_argument("--set", action="store_true", help="set the clock through the TIME IOC (not supported: see above)")
    return p


def run(args: argparse.Namespace) -> int:
    """Check (and refuse to set) the clock."""
    if args.samples < 1:
        raise common.UsageError(f"--samples {args.samples}: must be at least 1")
    if args.tolerance_ms <= 0:
        raise common.UsageError(f"--tolerance-ms {args.tolerance_ms:g}: must be positive")
    obs = common.connect(args, needs=["TIME"])
    st = obs.device("station_time")
    common.refresh_loop(args, lambda: check_clock(st, obs.clock, args.samples, tolerance_ms=args.tolerance_ms),
                        render=render, line=line, record=ClockCheck.as_dict, count=args.count or 1)
    if args.set:
        raise common.ProgramError(SET_UNSUPPORTED)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``obsctl tsetp``."""
    return common.run_main(NAME, build_parser(), argv, run)
