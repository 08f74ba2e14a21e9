"""Command-line front of the NCCS coordinate utilities: ``obsctl azel|dprc2|pj2000|stnow|tstpln|updn``.

A thin layer over :mod:`obsctl.coordinates` and :mod:`obsctl.ephemeris`: parse, call, print (``--json`` for
machines).  Bad input raises ValueError/KeyError, which ``obsctl.cli.main`` turns into exit code 2 and a
one-line message.  Astropy is imported only inside the command functions, so ``import obsctl.cli`` stays
cheap.  ``python -m obsctl.cli_utilities`` runs the six commands on their own.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time

#: Let negative sexagesimal values ("-63:42:45", "-1h30m") be arguments, not options (Python < 3.13 only
#: recognises plain negative numbers; 3.13 uses this same rule).
_NEGATIVE_VALUE = re.compile(r"^-\.?\d")


def _load(args: argparse.Namespace):
    """(site, Location) of ``--site``."""
    from obsctl.astro import site_location
    from obsctl.site import load_site

    site = load_site(args.site)
    return site, site_location(site)


def _when(args: argparse.Namespace) -> float:
    """POSIX time of ``--at`` (default: now on the observatory clock)."""
    from obsctl.ephemeris import parse_time

    return parse_time(args.at or "now", "--at")


def _emit(args: argparse.Namespace, data: dict, lines: list[str]) -> int:
    if args.json:
        print(json.dumps(data, indent=1))
    else:
        print("\n".join(lines))
    return 0


def _weather(args: argparse.Namespace) -> dict[str, float]:
    return {"temp_c": args.temp_c, "pressure_hpa": args.pressure_hpa, "humidity_pct": args.humidity_pct}


# ---- AZEL ------------------------------------------------------------------------------------
def cmd_azel(args: argparse.Namespace) -> int:
    """HA,Dec -> Az,El (or Az,El -> HA,Dec with --inverse) at the site."""
    from obsctl.coordinates import azel_from_hadec, format_dms, format_ha, hadec_from_azel, parse_angle

    site, loc = _load(args)
    refr = "observed (radio refraction, standard weather)" if args.refraction else "geometric (no refraction)"
    if args.inverse:
        az, el = parse_angle(args.first, "az"), parse_angle(args.second, "el")
        ha, dec = hadec_from_azel(az, el, loc.latitude_deg, args.refraction, **_weather(args))
        ha, dec = float(ha), float(dec)
    else:
        ha, dec = parse_angle(args.first, "ha"), parse_angle(args.second, "dec")
        az, el = azel_from_hadec(ha, dec, loc.latitude_deg, args.refraction, **_weather(args))
        az, el = float(az), float(el)
    data = {"site": site.name, "latitude_deg": loc.latitude_deg, "refraction": args.refraction,
            "ha_deg": ha, "dec_deg": dec, "az_deg": az, "el_deg": el,
            "ha": format_ha(ha), "dec": format_dms(dec), "az": format_dms(az, signed=False), "el": format_dms(el)}
    hadec = f"HA {format_ha(ha)} ({ha:+.5f} deg)  Dec {format_dms(dec)} ({dec:+.5f} deg)"
    azel = f"Az {format_dms(az, signed=False)} ({az:.5f} deg)  El {format_dms(el)} ({el:+.5f} deg)"
    lines = [f"{site.name}, latitude {loc.latitude_deg:+.4f} deg; elevation {refr}",
             *((azel, f"  -> {hadec}") if args.inverse else (hadec, f"  -> {azel}"))]
    return _emit(args, data, lines)


# ---- DPRC2 / PJ2000 --------------------------------------------------------------------------
_SYSTEM_LABEL = {"b1950": "B1950 (FK4)", "j2000": "J2000 (FK5)", "date": "mean of date (FK5)"}


def _radec_text(ra: float, dec: float) -> str:
    from obsctl.coordinates import format_dms, format_hours

    return f"RA {format_hours(ra, 3)}  Dec {format_dms(dec, 2)}   ({ra:.6f}, {dec:+.6f} deg)"


def _convert(args: argparse.Namespace, chain: list[str]) -> int:
    from obsctl.coordinates import convert_equinox, parse_angle
    from obsctl.ephemeris import format_utc

    ra, dec = parse_angle(args.ra, "ra"), parse_angle(args.dec, "dec")
    t = _when(args) if "date" in chain else None
    steps = [(chain[0], ra, dec)]
    for a, b in zip(chain, chain[1:], strict=False):
        ra, dec = convert_equinox(ra, dec, a, b, t)
        steps.append((b, ra, dec))
    data: dict = {"from": chain[0], "to": chain[-1]}
    if t is not None:
        from astropy.time import Time

        data.update(epoch_utc=format_utc(t), epoch_jyear=float(Time(t, format="unix").tt.jyear), t=t)
    data["steps"] = [{"system": s, "ra_deg": r, "dec_deg": d} for s, r, d in steps]
    data.update(ra_deg=ra, dec_deg=dec)
    lines = [f"{_SYSTEM_LABEL[s]:<20} {_radec_text(r, d)}" for s, r, d in steps]
    if t is not None:
        lines.append(f"{'':<20} date {data['epoch_utc']} UTC = J{data['epoch_jyear']:.4f}")
    return _emit(args, data, lines)


def cmd_dprc2(args: argparse.Namespace) -> int:
    """Precess B1950 (FK4) coordinates to the mean equator and equinox of date."""
    return _convert(args, ["b1950", "j2000", "date"])


def cmd_pj2000(args: argparse.Namespace) -> int:
    """Convert between J2000, B1950 and mean of date."""
    src, dst = args.from_system, args.to_system
    if src == dst:
        raise ValueError(f"--from and --to are both {src!r}; nothing to convert")
    return _convert(args, [src, dst])


# ---- STNOW -----------------------------------------------------------------------------------
def _st_line(st) -> str:
    from obsctl.coordinates import format_hours

    return (f"UTC {st.utc}  UT1 {st.ut1[11:]}  LAST {format_hours(st.last_deg, 3)}  "
            f"LMST {format_hours(st.lmst_deg, 3)}  GAST {format_hours(st.gast_deg, 3)}  "
            f"GMST {format_hours(st.gmst_deg, 3)}  MJD {st.mjd_utc:.5f}")


def _st_table(st, site_name: str):
    from rich.table import Table

    from obsctl.coordinates import format_hours

    table = Table(title=f"{site_name}: sidereal and universal time", show_header=False)
    table.add_column(justify="left")
    table.add_column(justify="right", style="bold")
    for label, value in (("UTC", st.utc), ("UT1", st.ut1), ("UT1-UTC", f"{st.ut1_minus_utc_s:+.4f} s"),
                         ("TAI-UTC", f"{st.tai_minus_utc_s:.0f} s"), ("MJD (UTC)", f"{st.mjd_utc:.6f}"),
                         ("day of year", str(st.day_of_year)),
                         ("local apparent sidereal", format_hours(st.last_deg, 3)),
                         ("local mean sidereal", format_hours(st.lmst_deg, 3)),
                         ("Greenwich apparent sidereal", format_hours(st.gast_deg, 3)),
                         ("Greenwich mean sidereal", format_hours(st.gmst_deg, 3))):
        table.add_row(label, value)
    return table


def cmd_stnow(args: argparse.Namespace) -> int:
    """Sidereal and universal time, refreshed every --interval seconds until Ctrl-C (or --count updates)."""
    from obsctl.clock import ObservatoryClock
    from obsctl.ephemeris import sidereal_times

    site, loc = _load(args)
    if args.at:
        start = _when(args)
        clock = ObservatoryClock(sim_epoch=start, real_epoch=time.time())
    else:
        clock = ObservatoryClock.from_env()
        start = clock.now()
    count = args.count if args.count is not None else (1 if args.at else None)
    if count is not None and count < 1:
        raise ValueError(f"--count {count} must be at least 1")
    if not (args.interval > 0 and math.isfinite(args.interval)):
        raise ValueError(f"--interval {args.interval} must be a positive number of seconds")

    def ticks():
        """Simulated instants to show: now, then every ``interval`` real seconds, on whole multiples of
        ``interval * speed`` simulated seconds (whole seconds of UTC in real time)."""
        step = args.interval * clock.speed
        n, t = 0, start
        while count is None or n < count:
            yield t
            n += 1
            if count is not None and n >= count:
                return
            t = (math.floor(clock.now() / step) + 1) * step
            time.sleep(max(0.0, clock.real_time(t) - time.time()))

    live = sys.stdout.isatty() and not args.json
    try:
        if live:
            from rich.live import Live

            with Live(auto_refresh=False) as view:
                for t in ticks():
                    view.update(_st_table(sidereal_times(t, loc), site.name), refresh=True)
        else:
            for t in ticks():
                st = sidereal_times(t, loc)
                print(json.dumps(st.as_dict()) if args.json else _st_line(st), flush=True)
    except KeyboardInterrupt:
        print()
    return 0


# ---- TSTPLN ----------------------------------------------------------------------------------
def cmd_tstpln(args: argparse.Namespace) -> int:
    """Apparent RA/Dec, HA/Dec, Az/El and distance of the sun, moon and planets (or one of them)."""
    from obsctl.coordinates import format_dms, format_ha, format_hours
    from obsctl.ephemeris import body_names, body_positions, format_utc

    body_names(args.body)  # unknown body -> ValueError before any work
    site, loc = _load(args)
    t = _when(args)
    pos = body_positions(t, loc, args.body)
    data = {"site": site.name, "utc": format_utc(t), "t": t, "bodies": [p.as_dict() for p in pos]}
    rows = []
    for p in pos:
        dist = f"{p.distance_km:,.0f} km" if p.name == "moon" else f"{p.distance_au:.5f} AU"
        radius = f"{p.radius_deg * 60:.2f}'" if p.radius_deg else ""
        rows.append([p.name, format_hours(p.ra_deg, 2), format_dms(p.dec_deg, 1), format_ha(p.ha_deg, 1),
                     f"{p.az_deg:.3f}", f"{p.el_deg:+.3f}", dist, radius])
    lines = [f"{site.name} at {format_utc(t, 0)} UTC",
             "topocentric apparent RA/Dec (true equator and equinox of date), hour angle,",
             "azimuth from north through east, elevation without refraction", "",
             *_columns(["body", "RA", "Dec", "HA", "Az/deg", "El/deg", "distance", "radius"], rows)]
    return _emit(args, data, lines)


def _columns(header: list[str], rows: list[list[str]]) -> list[str]:
    """A plain text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        cells = (c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        return "  ".join(cells).rstrip()

    return [line(header), *(line(r) for r in rows)]


# ---- UPDN ------------------------------------------------------------------------------------
def cmd_updn(args: argparse.Namespace) -> int:
    """Rise and set times (UTC and LST) of a source above an elevation limit on a date."""
    from obsctl.coordinates import format_dms, format_hours
    from obsctl.ephemeris import format_utc, parse_time, resolve_target, rise_set

    target = resolve_target(args.source)
    site, loc = _load(args)
    limit = site.mount.min_elevation_deg if args.limit is None else args.limit
    if not (math.isfinite(limit) and -90.0 <= limit <= 90.0):
        raise ValueError(f"--limit {limit} is outside -90..90 deg")
    if args.date:
        t0 = parse_time(args.date, "--date")
    else:
        t0 = math.floor(parse_time("now") / 86400.0) * 86400.0
    res = rise_set(target, t0, loc, limit, refraction=args.refraction)
    data = {"site": site.name, **res.as_dict()}
    kind = "observed elevation (radio refraction)" if args.refraction else "geometric elevation (no refraction)"
    where = "" if target.kind != "catalog" else f" (J2000 RA {format_hours(target.coord.ra.deg, 1)} Dec " \
                                   f"{format_dms(target.coord.dec.deg, 0)})"
    head = [f"{target.name}{where} at {site.name}",
            f"above {limit:g} deg {kind}, {format_utc(res.t_start, 0)} to {format_utc(res.t_end, 0)} UTC"]
    span = f"elevation {res.min_el_deg:+.2f} .. {res.max_el_deg:+.2f} deg"
    if res.status == "always_up":
        body = [f"  circumpolar: above {limit:g} deg the whole time ({span})"]
    elif res.status == "never_up":
        body = [f"  never rises above {limit:g} deg (highest elevation {res.max_el_deg:+.2f} deg)"]
    else:
        body = [f"  {e.kind:<4}  {format_utc(e.t, 0)} UTC   LST {format_hours(e.lst_deg, 0)}" for e in res.events]
        body.append(f"  ({span})")
    return _emit(args, data, [*head, *body])


# ---- argument parsing ------------------------------------------------------------------------
def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the six utility subcommands (azel, dprc2, pj2000, stnow, tstpln, updn) to ``obsctl``."""

    def add(name: str, fn, text: str, description: str, site: bool = True, at: bool = True):
        p = subparsers.add_parser(name, help=text, description=description,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        p._negative_number_matcher = _NEGATIVE_VALUE  # "-63:42:45" is a value, not an option
        if site:
            p.add_argument("--site", default=None, help="site file (default: the reference HartRAO-like site)")
        if at:
            p.add_argument("--at", default=None, metavar="EPOCH",
                           help="ISO UTC time (2026-11-21T20:00:00), epoch (J2026.9) or 'now' "
                                "(default: now on the observatory clock)")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(fn=fn)
        return p

    angles = ("Angles: degrees (-63.7125) or sexagesimal, h:m:s for RA and HA (19:39:25.03, 1h30m),\n"
              "d:m:s otherwise (-63:42:45.6, -63d42m45.6s).")
    p = add("azel", cmd_azel, "HA,Dec <-> Az,El at the site",
            "AZEL: topocentric HA,Dec -> Az,El at the site latitude (Az from north through east), or\n"
            "Az,El -> HA,Dec with --inverse.\n" + angles, at=False)
    p.add_argument("first", metavar="HA|AZ", help="hour angle (or azimuth with --inverse)")
    p.add_argument("second", metavar="DEC|EL", help="declination (or elevation with --inverse)")
    p.add_argument("--inverse", action="store_true", help="input is Az El, output HA Dec")
    p.add_argument("--refraction", action="store_true",
                   help="elevation is observed (radio refraction applied/removed); default geometric")
    p.add_argument("--temp-c", type=float, default=15.0, help="refraction: air temperature (degC, default 15)")
    p.add_argument("--pressure-hpa", type=float, default=850.0, help="refraction: pressure (hPa, default 850)")
    p.add_argument("--humidity-pct", type=float, default=50.0, help="refraction: humidity (%%, default 50)")

    p = add("dprc2", cmd_dprc2, "precess B1950 coordinates to the mean equinox of date",
            "DPRC2: B1950 (FK4) RA,Dec -> J2000 (FK5) -> mean equator and equinox of date (FK5) at --at.\n"
            + angles, site=False)
    p.add_argument("ra", help="B1950 right ascension")
    p.add_argument("dec", help="B1950 declination")

    p = add("pj2000", cmd_pj2000, "convert RA,Dec between J2000, B1950 and mean of date",
            "PJ2000: mean RA,Dec from one system to another: j2000 (FK5), b1950 (FK4), date (FK5 mean\n"
            "equator and equinox of --at).\n" + angles, site=False)
    p.add_argument("ra", help="right ascension in the --from system")
    p.add_argument("dec", help="declination in the --from system")
    p.add_argument("--from", dest="from_system", choices=("j2000", "b1950", "date"), default="j2000",
                   help="system of the input (default j2000)")
    p.add_argument("--to", dest="to_system", choices=("j2000", "b1950", "date"), default="date",
                   help="system of the output (default date)")

    p = add("stnow", cmd_stnow, "sidereal and universal time every second",
            "STNOW: UTC, UT1, local and Greenwich apparent and mean sidereal time (to 1 ms, UT1 from the\n"
            "bundled IERS tables), refreshed in place every second until Ctrl-C.")
    p.add_argument("--count", type=int, default=None, help="show N updates, then exit (default: until Ctrl-C; "
                                                           "1 with --at)")
    p.add_argument("--interval", type=float, default=1.0, help="real seconds between updates (default 1)")

    p = add("tstpln", cmd_tstpln, "planet, sun and moon coordinates",
            "TSTPLN: topocentric apparent RA/Dec (true equator and equinox of date), HA, Az/El (no\n"
            "refraction) and distance of the sun, moon and planets, now or --at.")
    p.add_argument("body", nargs="?", default=None, help="one body (sun, moon, mercury ... neptune); default all")

    p = add("updn", cmd_updn, "rise and set times of a source above an elevation limit",
            "UPDN: rise and set times (UTC and LST) above an elevation limit during one UTC day (or 24 h from\n"
            "a given time); circumpolar and never-rising sources are reported as such.\n"
            "SOURCE: catalog name ('PKS 1934-638'), body (sun, moon, jupiter...) or RA Dec (J2000).\n"
            + angles, at=False)
    p.add_argument("source", nargs="+", help="catalog name, body, or RA Dec")
    p.add_argument("--date", default=None, help="UTC date (2026-11-21), or a start time for 24 h "
                                                "(default: today on the observatory clock)")
    p.add_argument("--limit", type=float, default=None, help="elevation limit (deg, default: site min_elevation_deg)")
    p.add_argument("--refraction", action="store_true", help="limit applies to the refracted elevation")


def build_parser() -> argparse.ArgumentParser:
    """A stand-alone parser with only the utility commands (``python -m obsctl.cli_utilities``)."""
    ap = argparse.ArgumentParser(prog="obsctl", description="NCCS coordinate utilities.")
    register(ap.add_subparsers(dest="command", required=True))
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run one utility command; bad input gives exit code 2 and a one-line message (as ``obsctl.cli.main``)."""
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, KeyError) as err:
        print(f"obsctl {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
