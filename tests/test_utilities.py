"""NCCS coordinate utilities (AZEL, DPRC2, PJ2000, STNOW, TSTPLN, UPDN) against independent ERFA/astropy paths.

Every reference below is computed here, by a different route from the implementation: ERFA's hd2ae/ae2hd,
fk45z/fk54z and bp06 precession matrices, gst06a/gmst06 with UT1 from the IERS tables, astropy AltAz frames
and brute-force 1-second altitude scans.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import erfa
import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import TETE, AltAz, EarthLocation, SkyCoord, get_body
from astropy.time import Time
from astropy.utils import iers

from obsctl import astro, cli_utilities, coordinates, ephemeris
from obsctl.site import load_site

pytestmark = [pytest.mark.filterwarnings("ignore::erfa.ErfaWarning"),  # dubious (future) years in ERFA
              pytest.mark.filterwarnings("ignore:Tried to get polar motions")]  # past the bundled IERS table

SITE = load_site()
LOC = astro.site_location(SITE)
EARTH = EarthLocation.from_geodetic(SITE.longitude_deg * u.deg, SITE.latitude_deg * u.deg, SITE.height_m * u.m)
LAT = SITE.latitude_deg
N = 200
ARCSEC = 1.0 / 3600.0
T2026 = ephemeris.parse_time("2026-11-21T20:00:00")


def rng() -> np.random.Generator:
    return np.random.default_rng(20261121)


def sep_arcsec(lon1, lat1, lon2, lat2) -> np.ndarray:
    """Great-circle separation (arcsec), written out here (haversine)."""
    l1, b1, l2, b2 = (np.radians(np.asarray(x, dtype=float)) for x in (lon1, lat1, lon2, lat2))
    h = np.sin((b2 - b1) / 2) ** 2 + np.cos(b1) * np.cos(b2) * np.sin((l2 - l1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0, 1)))) * 3600.0


def random_sky(g: np.random.Generator, n: int = N) -> tuple[np.ndarray, np.ndarray]:
    return g.uniform(0, 360, n), np.degrees(np.arcsin(g.uniform(-1, 1, n)))


def random_epochs(g: np.random.Generator, n: int = N, y0: float = 1950.0, y1: float = 2050.0) -> np.ndarray:
    """POSIX seconds of random epochs between the years y0 and y1."""
    return Time(g.uniform(y0, y1, n), format="jyear", scale="utc").unix


# ---- AZEL ------------------------------------------------------------------------------------
def test_azel_matches_erfa_both_directions():
    g = rng()
    ha, dec = g.uniform(-180, 180, N), np.degrees(np.arcsin(g.uniform(-1, 1, N)))
    az, el = coordinates.azel_from_hadec(ha, dec, LAT)
    raz, rel = erfa.hd2ae(np.radians(ha), np.radians(dec), np.radians(LAT))
    assert sep_arcsec(az, el, np.degrees(raz), np.degrees(rel)).max() < 0.1
    assert np.all((az >= 0) & (az < 360))

    az2, el2 = g.uniform(0, 360, N), np.degrees(np.arcsin(g.uniform(-1, 1, N)))
    h2, d2 = coordinates.hadec_from_azel(az2, el2, LAT)
    rh, rd = erfa.ae2hd(np.radians(az2), np.radians(el2), np.radians(LAT))
    assert sep_arcsec(h2, d2, np.degrees(rh), np.degrees(rd)).max() < 0.1
    assert np.all(np.abs(h2) <= 180)


def test_azel_refraction_is_applied_and_removed():
    g = rng()
    ha, dec = g.uniform(-90, 90, N), g.uniform(-89, 60, N)
    _, geo = coordinates.azel_from_hadec(ha, dec, LAT)
    az, obs = coordinates.azel_from_hadec(ha, dec, LAT, refraction=True, pressure_hpa=870.0)
    up = geo > 0
    # observed = geometric + R(observed), R from the project's radio refraction model
    bend = astro.refraction_deg(obs[up], pressure_hpa=870.0)
    assert np.abs(obs[up] - geo[up] - bend).max() < 1e-8
    assert np.all(obs[up] > geo[up])
    back_h, back_d = coordinates.hadec_from_azel(az, obs, LAT, refraction=True, pressure_hpa=870.0)
    assert sep_arcsec(back_h[up], back_d[up], ha[up], dec[up]).max() < 1e-3


@pytest.mark.parametrize("text,kind,deg", [
    ("1:30:00", "ha", 22.5), ("-1:30:00", "ha", -22.5), ("1h30m", "ha", 22.5), ("22.5", "ha", 22.5),
    ("-00:30:00", "dec", -0.5), ("-63:42:45.6", "dec", -63.7126666667), ("-63d42m45.6s", "dec", -63.7126666667),
    ("19:39:25.026", "ra", 294.85427500), ("-10", "az", 350.0), ("1.5h", "ra", 22.5), ("90", "el", 90.0),
])
def test_angle_input_formats(text, kind, deg):
    assert coordinates.parse_angle(text, kind) == pytest.approx(deg, abs=1e-8)


@pytest.mark.parametrize("text,kind,words", [
    ("abc", "ha", "HA 'abc' is not an angle"), ("95", "dec", "Dec '95'"), ("-90.5", "el", "El '-90.5'"),
    ("1:61:00", "dec", "Dec '1:61:00'"), ("nan", "dec", "Dec 'nan'"), ("-5", "ra", "RA '-5'"),
    ("400", "az", "Az '400'"), ("", "dec", "Dec ''"),
])
def test_bad_angles_are_refused_with_their_name(text, kind, words):
    with pytest.raises(ValueError, match=words):
        coordinates.parse_angle(text, kind)


def test_sexagesimal_formatting_rounds_without_sixty():
    assert coordinates.format_hours(359.9999999) == "00:00:00.00"
    assert coordinates.format_dms(-0.5) == "-00:30:00.0"
    assert coordinates.format_dms(29.99999999, 1) == "+30:00:00.0"
    assert coordinates.format_ha(-22.5) == "-01:30:00.00"


# ---- DPRC2 / PJ2000 --------------------------------------------------------------------------
def _erfa_rp(t: float) -> np.ndarray:
    """IAU 2006 precession matrix, mean J2000 -> mean of date (without frame bias), from ERFA."""
    tt = Time(t, format="unix", scale="utc").tt
    return erfa.bp06(tt.jd1, tt.jd2)[1]


def _apply(m: np.ndarray, ra_deg: float, dec_deg: float) -> tuple[float, float]:
    r, d = erfa.c2s(m @ erfa.s2c(np.radians(ra_deg), np.radians(dec_deg)))
    return np.degrees(r) % 360.0, np.degrees(d)


def test_dprc2_b1950_to_date_matches_erfa():
    g = rng()
    ra, dec = random_sky(g)
    ts = random_epochs(g)
    r2000, d2000 = erfa.fk45z(np.radians(ra), np.radians(dec), 1950.0)  # FK4 B1950 -> FK5 J2000, zero FK5 pm
    worst = 0.0
    for i in range(N):
        got = coordinates.precess_b1950_to_date(ra[i], dec[i], ts[i])
        ref = _apply(_erfa_rp(ts[i]), np.degrees(r2000[i]), np.degrees(d2000[i]))
        worst = max(worst, float(sep_arcsec(got[0], got[1], ref[0], ref[1])))
    assert worst < 0.1, f"worst DPRC2 difference {worst:.4f} arcsec"


def test_pj2000_j2000_date_both_directions_matches_erfa():
    g = rng()
    ra, dec = random_sky(g)
    ts = random_epochs(g)
    worst = 0.0
    for i in range(N):
        rp = _erfa_rp(ts[i])
        fwd = coordinates.convert_equinox(ra[i], dec[i], "j2000", "date", ts[i])
        ref = _apply(rp, ra[i], dec[i])
        back = coordinates.convert_equinox(ra[i], dec[i], "date", "j2000", ts[i])
        ref_back = _apply(rp.T, ra[i], dec[i])
        worst = max(worst, float(sep_arcsec(*fwd, *ref)), float(sep_arcsec(*back, *ref_back)))
    assert worst < 0.1, f"worst J2000<->date difference {worst:.4f} arcsec"


def test_pj2000_b1950_j2000_both_directions_matches_erfa():
    g = rng()
    ra, dec = random_sky(g)
    to_j = coordinates.convert_equinox(ra, dec, "b1950", "j2000")
    r, d = erfa.fk45z(np.radians(ra), np.radians(dec), 1950.0)
    assert sep_arcsec(*to_j, np.degrees(r), np.degrees(d)).max() < 0.1
    to_b = coordinates.convert_equinox(ra, dec, "j2000", "b1950")
    r, d, *_ = erfa.fk54z(np.radians(ra), np.radians(dec), 1950.0)
    assert sep_arcsec(*to_b, np.degrees(r), np.degrees(d)).max() < 0.1
    # round trip
    back = coordinates.convert_equinox(*to_b, "b1950", "j2000")
    assert sep_arcsec(*back, ra, dec).max() < 0.01


def test_equinox_conversion_refuses_bad_input():
    with pytest.raises(ValueError, match="unknown coordinate system 'b1900'"):
        coordinates.convert_equinox(1.0, 2.0, "b1900", "j2000")
    with pytest.raises(ValueError, match="needs an epoch"):
        coordinates.convert_equinox(1.0, 2.0, "j2000", "date")
    with pytest.raises(ValueError, match="outside -90..90"):
        coordinates.convert_equinox(1.0, 91.0, "j2000", "b1950")


# ---- STNOW -----------------------------------------------------------------------------------
def test_sidereal_time_to_a_millisecond():
    """Greenwich ST against ERFA gst06a/gmst06 (UT1 from IERS), local ST against astropy; worst < 1 ms."""
    g = rng()
    ts = np.concatenate([random_epochs(g, 60, 1973.0, 2026.8), random_epochs(g, 10, 2026.8, 2050.0)])
    worst = 0.0
    for t in ts:
        st = ephemeris.sidereal_times(float(t), LOC)
        tm = Time(t, format="unix", scale="utc")
        ut1, tt = tm.ut1, tm.tt
        gast = np.degrees(erfa.gst06a(ut1.jd1, ut1.jd2, tt.jd1, tt.jd2))
        gmst = np.degrees(erfa.gmst06(ut1.jd1, ut1.jd2, tt.jd1, tt.jd2))
        last = tm.sidereal_time("apparent", longitude=SITE.longitude_deg * u.deg).deg
        lmst = tm.sidereal_time("mean", longitude=SITE.longitude_deg * u.deg).deg
        for got, ref in ((st.gast_deg, gast), (st.gmst_deg, gmst), (st.last_deg, last), (st.lmst_deg, lmst)):
            worst = max(worst, abs((got - ref + 180) % 360 - 180) * 240.0)  # deg -> s of time
        # local - Greenwich = longitude, up to polar motion (< 0.02 s)
        assert abs(((st.last_deg - st.gast_deg - SITE.longitude_deg) + 180) % 360 - 180) * 240 < 0.02
        assert st.ut1_minus_utc_s == pytest.approx(float(tm.delta_ut1_utc), abs=1e-9)
    assert worst < 1e-3, f"worst sidereal time difference {worst * 1e3:.4f} ms"


def test_sidereal_display_strings_to_a_millisecond():
    st = ephemeris.sidereal_times(T2026 + 0.4567, LOC)
    text = coordinates.format_hours(st.last_deg, 3)
    h, m, s = (float(x) for x in text.split(":"))
    assert abs((h + m / 60 + s / 3600) * 15 - st.last_deg) * 240 <= 0.0005 + 1e-9
    assert st.utc == "2026-11-21 20:00:00.457"
    # UT1 = UTC + (UT1-UTC), shown to the millisecond
    ut1 = datetime.fromisoformat(st.ut1).replace(tzinfo=UTC).timestamp()
    dut1 = float(iers.earth_orientation_table.get().ut1_utc(Time(T2026, format="unix")).to_value(u.s))
    assert abs(ut1 - (T2026 + 0.4567 + dut1)) <= 0.0005 + 1e-6


# ---- TSTPLN ----------------------------------------------------------------------------------
def test_tstpln_matches_astropy_frames():
    """RA/Dec vs get_body->TETE, Az/El vs the astropy AltAz frame (a different path), HA vs LAST - RA."""
    g = rng()
    worst = {"radec": 0.0, "azel": 0.0, "ha": 0.0}
    for t in random_epochs(g, 5, 1960.0, 2045.0):
        tm = Time(t, format="unix")
        positions = ephemeris.body_positions(float(t), LOC)
        assert [p.name for p in positions] == list(astro.BODIES)
        last = tm.sidereal_time("apparent", longitude=SITE.longitude_deg * u.deg).deg
        for p in positions:
            c = get_body(p.name, tm, location=EARTH)
            te = c.transform_to(TETE(obstime=tm, location=EARTH))
            aa = c.transform_to(AltAz(obstime=tm, location=EARTH, pressure=0 * u.hPa))
            worst["radec"] = max(worst["radec"], float(sep_arcsec(p.ra_deg, p.dec_deg, te.ra.deg, te.dec.deg)))
            worst["azel"] = max(worst["azel"], float(sep_arcsec(p.az_deg, p.el_deg, aa.az.deg, aa.alt.deg)))
            worst["ha"] = max(worst["ha"], abs((p.ha_deg - (last - p.ra_deg) + 180) % 360 - 180) * 3600)
            assert p.distance_au == pytest.approx(c.distance.to_value(u.AU), rel=1e-9)
    assert worst["radec"] < 0.1 and worst["azel"] < 0.1, worst
    assert worst["ha"] < 1.0, worst  # the local HA/Dec frame includes polar motion (< 1 arcsec)


def test_tstpln_known_geometry():
    moon, sun = ephemeris.body_positions(T2026, LOC, "Moon")[0], ephemeris.body_positions(T2026, LOC, "sun")[0]
    assert 356_000 < moon.distance_km < 407_000
    assert 0.983 < sun.distance_au < 1.017
    assert 0.24 < sun.radius_deg < 0.28 and 0.24 < moon.radius_deg < 0.29
    with pytest.raises(ValueError, match="unknown body 'pluto'"):
        ephemeris.body_positions(T2026, LOC, "pluto")


# ---- UPDN ------------------------------------------------------------------------------------
def ref_altitude(target: ephemeris.Target, ts: np.ndarray) -> np.ndarray:
    """Geometric altitude (deg) by the astropy AltAz frame: an independent code path."""
    tm = Time(ts, format="unix")
    frame = AltAz(obstime=tm, location=EARTH, pressure=0 * u.hPa)
    c = get_body(target.body, tm, location=EARTH) if target.body else \
        SkyCoord(target.coord.ra, target.coord.dec, frame="icrs")
    return c.transform_to(frame).alt.deg


def brute_force_crossing(target: ephemeris.Target, t_event: float, limit: float, half_s: int = 90) -> float:
    """Time of the limit crossing from a 1-second altitude scan around ``t_event``."""
    ts = t_event + np.arange(-half_s, half_s + 1, 1.0)
    f = ref_altitude(target, ts) - limit
    idx = np.nonzero(np.diff(np.sign(f)) != 0)[0]
    assert len(idx) == 1, f"expected one crossing near {t_event}, found {len(idx)}"
    i = idx[0]
    return float(ts[i] + f[i] / (f[i] - f[i + 1]))


UPDN_CASES = [
    ("PKS 1934-638", "2026-11-21", 2.0),
    ("3C286", "2031-03-05", 2.0),
    ("VirgoA", "1999-07-01", 10.0),
    ("sun", "2026-11-21", 2.0),
    ("moon", "2026-11-21", 2.0),
    ("jupiter", "2040-01-15", 5.0),
    ("05:00:00,-20:00:00", "2026-06-21", 20.0),
    ("moon", "2012-09-30", 0.0),
]


@pytest.mark.parametrize("spec,date,limit", UPDN_CASES)
def test_updn_events_agree_with_a_brute_force_scan(spec, date, limit):
    target = ephemeris.resolve_target(spec)
    t0 = ephemeris.parse_time(date)
    res = ephemeris.rise_set(target, t0, LOC, limit)
    # the number of crossings in the day agrees with an independent 2-minute scan
    ts = t0 + np.arange(0, 86400.0 + 1, 120.0)
    f = ref_altitude(target, ts) - limit
    assert len(res.events) == int(np.count_nonzero(np.diff(np.sign(f)) != 0))
    assert res.events, "every case here rises or sets on its date"
    for e in res.events:
        ref = brute_force_crossing(target, e.t, limit)
        assert abs(e.t - ref) < 30.0
        assert abs(e.t - ref) < 2.0, f"{spec} {e.kind}: {e.t - ref:+.2f} s"  # the design target (~1 s)
        slope = np.diff(ref_altitude(target, np.array([e.t - 30.0, e.t + 30.0])))[0]
        assert (slope > 0) == (e.kind == "rise")
        lst = Time(e.t, format="unix").sidereal_time("apparent", longitude=SITE.longitude_deg * u.deg).deg
        assert abs((e.lst_deg - lst + 180) % 360 - 180) * 240 < 1e-3
    kinds = [e.kind for e in res.events]
    assert all(a != b for a, b in zip(kinds, kinds[1:], strict=False)), "rises and sets alternate"


def test_updn_circumpolar_and_never_rises():
    day = ephemeris.parse_time("2026-11-21")
    south = ephemeris.rise_set(ephemeris.resolve_target(["10:00:00", "-80"]), day, LOC, 2.0)
    assert south.status == "always_up" and not south.events
    alt = ref_altitude(ephemeris.resolve_target("10:00:00,-80"), day + np.arange(0, 86401, 600.0))
    assert south.min_el_deg == pytest.approx(alt.min(), abs=0.05) and alt.min() > 2.0
    north = ephemeris.rise_set(ephemeris.resolve_target(["10:00:00", "+70"]), day, LOC, 2.0)
    assert north.status == "never_up" and not north.events
    assert north.max_el_deg < 2.0


def test_updn_catches_a_brief_grazing_pass():
    """A source that tops the limit for a few minutes, between the 10-minute grid points."""
    target = ephemeris.resolve_target("21:00:00,+62")
    day = ephemeris.parse_time("2026-11-21")
    ts = day + np.arange(0, 86400.0, 60.0)
    alt = ref_altitude(target, ts)
    k = int(np.argmax(alt))
    fine = ts[k] + np.arange(-120, 121, 1.0)
    top = ref_altitude(target, fine).max()
    limit = top - 0.002  # above the limit for about 4 minutes
    res = ephemeris.rise_set(target, day, LOC, limit)
    assert [e.kind for e in res.events] == ["rise", "set"], res.events
    for e in res.events:
        assert abs(e.t - brute_force_crossing(target, e.t, limit, half_s=150)) < 30.0
    assert 60 < res.events[1].t - res.events[0].t < 600


def test_updn_refraction_widens_the_day():
    sun = ephemeris.resolve_target("sun")
    day = ephemeris.parse_time("2026-11-21")
    geo = ephemeris.rise_set(sun, day, LOC, 0.0)
    obs = ephemeris.rise_set(sun, day, LOC, 0.0, refraction=True)
    (r0, s0), (r1, s1) = [e.t for e in geo.events], [e.t for e in obs.events]
    assert r1 < r0 - 60 and s1 > s0 + 60
    for t in (r1, s1):  # the observed elevation is on the limit at the refracted events
        el = float(ref_altitude(sun, np.array([t]))[0])
        assert abs(coordinates.apparent_elevation(el)) < 0.01


def test_updn_targets():
    assert ephemeris.resolve_target("pks 1934-638").name == "PKS1934-638"
    assert ephemeris.resolve_target(["PKS", "1934-638"]).name == "PKS1934-638"
    assert ephemeris.resolve_target("Jupiter").body == "jupiter"
    c = ephemeris.resolve_target(["19:39:25.026", "-63:42:45.63"]).coord
    assert sep_arcsec(c.ra.deg, c.dec.deg, 294.854275, -63.712675) < 0.01
    with pytest.raises(ValueError, match="unknown source 'nosuch'"):
        ephemeris.resolve_target("nosuch")
    with pytest.raises(ValueError, match="Dec '95'"):
        ephemeris.resolve_target("10:00:00,95")


# ---- command line ----------------------------------------------------------------------------
COMMANDS = ["azel", "dprc2", "pj2000", "stnow", "tstpln", "updn"]


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli_utilities.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_utilities.main([cmd, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert f"usage: obsctl {cmd}" in text and cmd.upper() in text and "--json" in text


def test_registered_in_obsctl_cli():
    """The lead wires cli_utilities.register into obsctl.cli: every utility is an obsctl subcommand."""
    from obsctl import cli

    parser = cli.build_parser()
    for cmd, argv in {"azel": ["1", "2"], "dprc2": ["1", "2"], "pj2000": ["1", "2"], "stnow": [],
                      "tstpln": [], "updn": ["sun"]}.items():
        assert parser.parse_args([cmd, *argv]).fn is getattr(cli_utilities, f"cmd_{cmd}")


BAD = [
    (["azel", "abc", "5"], "HA 'abc' is not an angle"),
    (["azel", "1:00:00", "95"], "Dec '95'"),
    (["azel", "--inverse", "10", "91"], "El '91'"),
    (["azel", "1", "2", "--site", "/no/such/site.toml"], "cannot read site file"),
    (["dprc2", "25:00:00", "10"], "RA '25:00:00'"),
    (["dprc2", "1", "2", "--at", "2026-13-01"], "--at '2026-13-01' is not a date"),
    (["pj2000", "1", "2", "--from", "b1950", "--to", "b1950"], "nothing to convert"),
    (["pj2000", "1", "-91"], "Dec '-91'"),
    (["stnow", "--count", "0"], "--count 0"),
    (["stnow", "--at", "yesterday"], "--at 'yesterday'"),
    (["tstpln", "pluto"], "unknown body 'pluto'"),
    (["updn", "nosuch"], "unknown source 'nosuch'"),
    (["updn", "sun", "--date", "2026-02-30"], "--date '2026-02-30'"),
    (["updn", "sun", "--limit", "95"], "--limit 95"),
]


@pytest.mark.parametrize("argv,words", BAD)
def test_bad_arguments_exit_2_with_one_line(argv, words, capsys):
    code, out, err = run(argv, capsys)
    assert code == 2
    assert err.startswith(f"obsctl {argv[0]}: ") and words in err
    assert err.count("\n") == 1 and out == ""


@pytest.mark.parametrize("argv", [["azel", "1"], ["pj2000", "1", "2", "--from", "fk4"], ["stnow", "--count", "x"]])
def test_unparseable_options_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_utilities.main(argv)
    assert exc.value.code == 2
    assert "obsctl " + argv[0] in capsys.readouterr().err


def test_json_outputs(capsys):
    at = ["--at", "2026-11-21T20:00:00"]
    code, out, _ = run(["azel", "-1:30:00", "-63:42:45", "--json"], capsys)
    d = json.loads(out)
    assert code == 0 and d["ha_deg"] == -22.5 and d["dec_deg"] == pytest.approx(-63.7125)
    raz, rel = erfa.hd2ae(np.radians(-22.5), np.radians(-63.7125), np.radians(LAT))
    assert sep_arcsec(d["az_deg"], d["el_deg"], np.degrees(raz), np.degrees(rel)) < 0.1

    code, out, _ = run(["dprc2", "19:35:47.8", "-63:48:59", "--json", *at], capsys)
    d = json.loads(out)
    assert [s["system"] for s in d["steps"]] == ["b1950", "j2000", "date"] and d["epoch_utc"].startswith("2026-11-21")
    r, dd = erfa.fk45z(np.radians(293.94916667), np.radians(-63.81638889), 1950.0)
    ref = _apply(_erfa_rp(T2026), np.degrees(r), np.degrees(dd))
    assert sep_arcsec(d["ra_deg"], d["dec_deg"], *ref) < 0.1

    code, out, _ = run(["pj2000", "10", "20", "--from", "j2000", "--to", "b1950", "--json"], capsys)
    d = json.loads(out)
    assert d["from"] == "j2000" and d["to"] == "b1950" and "epoch_utc" not in d

    code, out, _ = run(["stnow", "--json", *at], capsys)
    d = json.loads(out)
    assert d["utc"] == "2026-11-21 20:00:00.000" and 0 <= d["last_h"] < 24

    code, out, _ = run(["tstpln", "moon", "--json", *at], capsys)
    d = json.loads(out)
    assert [b["name"] for b in d["bodies"]] == ["moon"]

    code, out, _ = run(["updn", "-80", "--json", "--date", "2026-11-21"], capsys)
    assert code == 2  # one number is not a source
    code, out, _ = run(["updn", "10:00:00", "-80", "--json", "--date", "2026-11-21"], capsys)
    assert json.loads(out)["status"] == "always_up"
    code, out, _ = run(["updn", "PKS", "1934-638", "--json", "--date", "2026-11-21"], capsys)
    d = json.loads(out)
    assert d["status"] == "rises_sets" and d["limit_deg"] == SITE.mount.min_elevation_deg
    assert [e["kind"] for e in d["events"]] == ["set", "rise", "set"]


def test_human_outputs(capsys):
    code, out, _ = run(["updn", "10:00:00", "+70", "--date", "2026-11-21"], capsys)
    assert code == 0 and "never rises above 2 deg" in out
    code, out, _ = run(["updn", "10:00:00", "-80", "--date", "2026-11-21"], capsys)
    assert "circumpolar" in out
    code, out, _ = run(["tstpln", "--at", "2026-11-21T20:00:00"], capsys)
    assert code == 0 and all(b in out for b in astro.BODIES) and max(len(x) for x in out.splitlines()) <= 100
    code, out, _ = run(["azel", "--inverse", "180", "90"], capsys)
    assert "Dec -25:53:22.9" in out  # the zenith is at the site latitude


def test_stnow_count_and_ctrl_c(capsys, monkeypatch):
    monkeypatch.delenv("OBSCTL_CLOCK", raising=False)  # real time: one update per real second
    t0 = time.monotonic()
    code, out, _ = run(["stnow", "--count", "2"], capsys)
    assert code == 0 and len(out.splitlines()) == 2 and time.monotonic() - t0 < 5
    a, b = (line.split()[1:3] for line in out.splitlines())
    assert Time(" ".join(b)).unix - Time(" ".join(a)).unix == pytest.approx(1.0, abs=1.0)

    def interrupt(_s: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", interrupt)
    code, out, _ = run(["stnow"], capsys)
    assert code == 0 and len(out.strip().splitlines()) == 1


def test_stnow_live_display_in_a_terminal_exits_cleanly_on_ctrl_c():
    """Real process on a pseudo-terminal: the rich display refreshes, SIGINT ends it with exit code 0."""
    main_fd, sub_fd = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "obsctl.cli_utilities", "stnow"], stdin=sub_fd, stdout=sub_fd,
                            stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "100"})
    os.close(sub_fd)
    seen = b""
    deadline = time.monotonic() + 30
    try:
        while seen.count(b"local apparent sidereal") < 2 and time.monotonic() < deadline:
            if select.select([main_fd], [], [], 0.5)[0]:
                seen += os.read(main_fd, 65536)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main_fd)
    assert seen.count(b"local apparent sidereal") >= 2, seen[-500:]
    assert code == 0 and b"Traceback" not in proc.stderr.read()
