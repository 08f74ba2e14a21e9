"""Time and ephemeris utilities of the NCCS toolbox: STNOW, TSTPLN and UPDN, on astropy/ERFA, offline.

Angles are degrees, times POSIX seconds (UTC) unless stated.  UT1 and polar motion come from the IERS
tables bundled with astropy (configured by :mod:`obsctl.astro`); planets, sun and moon from astropy's
builtin ephemeris.  Positions are topocentric and unrefracted unless a function says otherwise.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import numpy as np
from astropy import units as u
from astropy.coordinates import TETE, SkyCoord
from astropy.time import Time

from obsctl.astro import (
    BODIES,
    Location,
    apparent_hadec,
    body_coord,
    body_hadec,
    body_radius_deg,
    hadec_to_azel,
    lst_deg,
    parse_radec,
    tai_minus_utc,
    to_time,
)
from obsctl.catalog import Catalog, load_catalog
from obsctl.clock import ObservatoryClock
from obsctl.coordinates import format_dms, format_hours, geometric_elevation, parse_angle

AU_KM = 149_597_870.7


# ---- time input ------------------------------------------------------------------------------
def parse_time(text: str, what: str = "time", clock: ObservatoryClock | None = None) -> float:
    """POSIX seconds (UTC) of a user-given time.

    Accepts ``now`` (the observatory clock, ``OBSCTL_CLOCK``, or ``clock``), an ISO-8601 UTC date or date-time
    (``2026-11-21``, ``2026-11-21T20:00:00``, ``...Z``) or a Julian/Besselian epoch (``J2026.9``, ``B1950``).
    Raises ValueError naming ``what`` and the text otherwise.
    """
    s = text.strip()
    if s.lower() == "now":
        return (clock or ObservatoryClock.from_env()).now()
    if re.fullmatch(r"[JjBb]\d{3,4}(\.\d*)?", s):
        return float(Time(s.upper()).unix)
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a date: give ISO-8601 UTC (2026-11-21T20:00:00), "
                         "an epoch (J2026.9, B1950) or 'now'") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def format_utc(t: float, precision: int = 3) -> str:
    """``YYYY-MM-DD HH:MM:SS.sss`` (UTC) of POSIX seconds."""
    return Time(t, format="unix", scale="utc", precision=precision).iso


# ---- STNOW -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SiderealTimes:
    """Universal and sidereal times at one instant (angles in degrees, 0..360)."""

    t: float  #: POSIX seconds (UTC)
    utc: str  #: ISO UTC to the millisecond
    ut1: str  #: ISO UT1 to the millisecond
    ut1_minus_utc_s: float
    tai_minus_utc_s: float
    mjd_utc: float
    day_of_year: int
    last_deg: float  #: local apparent sidereal time
    lmst_deg: float  #: local mean sidereal time
    gast_deg: float  #: Greenwich apparent sidereal time
    gmst_deg: float  #: Greenwich mean sidereal time

    def as_dict(self) -> dict:
        """JSON-ready dictionary, sidereal times also as hours."""
        d = asdict(self)
        for k in ("last", "lmst", "gast", "gmst"):
            d[f"{k}_h"] = d[f"{k}_deg"] / 15.0
        return d


def greenwich_sidereal_deg(t: float | np.ndarray, kind: str = "apparent") -> float | np.ndarray:
    """Greenwich sidereal time (deg, 0..360), ``apparent`` or ``mean`` (IAU 2006/2000A, UT1 from IERS)."""
    out = to_time(t).sidereal_time(kind, longitude="greenwich").to_value(u.deg)
    return float(out) if np.ndim(out) == 0 else np.asarray(out)


def sidereal_times(t: float, loc: Location) -> SiderealTimes:
    """STNOW: UTC, UT1 and the local and Greenwich, apparent and mean sidereal times at ``t`` (POSIX s)."""
    tm = Time(t, format="unix", scale="utc", precision=3)
    ut1 = tm.ut1
    return SiderealTimes(
        t=float(t), utc=tm.iso, ut1=ut1.iso, ut1_minus_utc_s=float(tm.delta_ut1_utc),
        tai_minus_utc_s=tai_minus_utc(t), mjd_utc=float(tm.mjd),
        day_of_year=int(tm.utc.yday.split(":")[1]),
        last_deg=float(lst_deg(t, loc, "apparent")), lmst_deg=float(lst_deg(t, loc, "mean")),
        gast_deg=float(greenwich_sidereal_deg(t, "apparent")), gmst_deg=float(greenwich_sidereal_deg(t, "mean")),
    )


# ---- TSTPLN ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class BodyPosition:
    """Where a solar-system body is, seen from the site (deg unless stated; no refraction)."""

    name: str
    t: float  #: POSIX seconds (UTC)
    ra_deg: float  #: topocentric apparent RA (true equator and equinox of date)
    dec_deg: float  #: topocentric apparent Dec (true equator and equinox of date)
    ha_deg: float  #: local hour angle, -180..180
    ha_dec_deg: float  #: declination in the local HA/Dec frame (polar motion applied)
    az_deg: float  #: azimuth from north through east
    el_deg: float  #: elevation (geometric)
    distance_au: float  #: distance from the site
    distance_km: float
    radius_deg: float  #: apparent angular radius (sun and moon; 0 for planets)

    def as_dict(self) -> dict:
        """JSON-ready dictionary."""
        return asdict(self)


def body_names(name: str | None = None) -> tuple[str, ...]:
    """All bodies, or the one called ``name`` (case-insensitive); ValueError naming the known ones."""
    if name is None:
        return BODIES
    key = name.strip().lower()
    if key not in BODIES:
        raise ValueError(f"unknown body {name!r}; known: {', '.join(BODIES)}")
    return (key,)


def body_position(name: str, t: float, loc: Location) -> BodyPosition:
    """TSTPLN for one body at ``t`` (POSIX s): apparent RA/Dec, HA/Dec, Az/El, distance."""
    key = body_names(name)[0]
    c = body_coord(key, t, loc)
    app = c.transform_to(TETE(obstime=to_time(t), location=loc.earth))
    ha, hdec = body_hadec(key, t, loc)
    az, el = hadec_to_azel(ha, hdec, loc.latitude_deg)
    dist_au = float(c.distance.to_value(u.AU))
    return BodyPosition(key, float(t), float(app.ra.to_value(u.deg)) % 360.0, float(app.dec.to_value(u.deg)),
                        float(ha), float(hdec), float(az), float(el), dist_au, dist_au * AU_KM,
                        body_radius_deg(key, t, loc))


def body_positions(t: float, loc: Location, name: str | None = None) -> list[BodyPosition]:
    """TSTPLN: positions of every body (sun, moon, planets) or of the one called ``name``."""
    return [body_position(n, t, loc) for n in body_names(name)]


# ---- UPDN ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """A direction to rise and set: a fixed ICRS source or a solar-system body."""

    name: str
    coord: SkyCoord | None = None  #: ICRS, for fixed sources
    body: str | None = None  #: body name, for the sun, moon and planets
    kind: str = "position"  #: "catalog", "body" or "position"

    def hadec(self, t: float | np.ndarray, loc: Location) -> tuple:
        """Topocentric apparent HA/Dec (deg, no refraction) at ``t``."""
        if self.body:
            return body_hadec(self.body, t, loc)
        return apparent_hadec(self.coord, t, loc)

    def elevation_deg(self, t: float | np.ndarray, loc: Location) -> float | np.ndarray:
        """Geometric elevation (deg) at ``t`` (POSIX s, scalar or array)."""
        ha, dec = self.hadec(t, loc)
        return hadec_to_azel(ha, dec, loc.latitude_deg)[1]


def resolve_target(spec: str | Sequence[str], catalog: Catalog | None = None) -> Target:
    """The :class:`Target` named by ``spec``.

    ``spec`` is a body name (``sun``, ``moon``, ``jupiter``...), a catalog source name (``"PKS 1934-638"``),
    ``"RA,Dec"`` in one string, or two strings RA and Dec (J2000/ICRS; RA in degrees or h:m:s).
    Raises ValueError naming what could not be understood.
    """
    parts = [p.strip() for p in ([spec] if isinstance(spec, str) else list(spec)) if p.strip()]
    name = " ".join(parts)
    if not name:
        raise ValueError("no source given: give a catalog name, a body, or RA and Dec")
    if name.lower() in BODIES:
        return Target(name.lower(), body=name.lower(), kind="body")
    cat = catalog or load_catalog()
    try:
        src = cat.get(name)
    except KeyError:
        pass
    else:
        return Target(src.name, coord=src.coord, kind="catalog")
    if len(parts) == 1 and "," in parts[0]:
        parts = [p.strip() for p in parts[0].split(",")]
    if len(parts) == 2 and re.match(r"[+-]?[\d.]", parts[0]):
        ra, dec = parse_angle(parts[0], "ra"), parse_angle(parts[1], "dec")
        return Target(f"RA {format_hours(ra, 2)} Dec {format_dms(dec, 1)} (J2000)", coord=parse_radec(ra, dec),
                      kind="position")
    raise ValueError(f"unknown source {name!r}: not in the catalog ({len(cat.sources)} sources, e.g. "
                     f"{', '.join(list(s.name for s in cat.sources.values())[:4])}), not a body "
                     f"({', '.join(BODIES)}), and not RA Dec")


@dataclass(frozen=True)
class Crossing:
    """One rise or set: the elevation limit crossed upwards or downwards."""

    kind: str  #: "rise" or "set"
    t: float  #: POSIX seconds (UTC)
    lst_deg: float  #: local apparent sidereal time at the event

    def as_dict(self) -> dict:
        """JSON-ready dictionary with the UTC and LST also as text."""
        return {**asdict(self), "utc": format_utc(self.t), "lst": format_hours(self.lst_deg, 0)}


@dataclass(frozen=True)
class RiseSet:
    """UPDN result: the crossings of an elevation limit during a window, and the elevation range."""

    target: str
    t_start: float  #: window start, POSIX s
    t_end: float  #: window end, POSIX s
    limit_deg: float  #: elevation limit (observed elevation if ``refraction``)
    refraction: bool
    events: list[Crossing] = field(default_factory=list)
    max_el_deg: float = math.nan  #: highest elevation in the window (geometric; approximate, ~0.01 deg)
    min_el_deg: float = math.nan  #: lowest elevation in the window

    @property
    def status(self) -> str:
        """``rises_sets``, ``always_up`` (circumpolar above the limit) or ``never_up`` (never rises)."""
        if self.events:
            return "rises_sets"
        return "always_up" if self.min_el_deg >= self._threshold() else "never_up"

    def _threshold(self) -> float:
        return float(geometric_elevation(self.limit_deg)) if self.refraction else self.limit_deg

    def as_dict(self) -> dict:
        """JSON-ready dictionary."""
        return {"target": self.target, "status": self.status, "window_start_utc": format_utc(self.t_start),
                "window_end_utc": format_utc(self.t_end), "t_start": self.t_start, "t_end": self.t_end,
                "limit_deg": self.limit_deg, "refraction": self.refraction,
                "max_el_deg": self.max_el_deg, "min_el_deg": self.min_el_deg,
                "events": [e.as_dict() for e in self.events]}


def _parabola_vertex(t: np.ndarray, f: np.ndarray) -> float:
    """Abscissa of the vertex of the parabola through three equally spaced points."""
    den = f[0] - 2.0 * f[1] + f[2]
    if den == 0.0:
        return float(t[1])
    return float(t[1] + 0.5 * (t[1] - t[0]) * (f[0] - f[2]) / den)


def rise_set(target: Target, t_start: float, loc: Location, limit_deg: float, refraction: bool = False,
             window_s: float = 86400.0, step_s: float = 600.0, tol_s: float = 0.5) -> RiseSet:
    """UPDN: when ``target`` rises above and sets below ``limit_deg`` between ``t_start`` and ``+window_s``.

    Elevation on a grid (``step_s``, vectorised astropy), sign changes refined by vectorised bisection to
    ``tol_s``; brief excursions between grid points are caught by a parabola through each local extremum.
    Without ``refraction`` the limit applies to the geometric elevation, with it to the observed (refracted)
    elevation in standard weather (:func:`obsctl.coordinates.apparent_elevation`).
    """
    if not -90.0 <= limit_deg <= 90.0:
        raise ValueError(f"elevation limit {limit_deg} is outside -90..90 deg")
    if not window_s > 0:
        raise ValueError(f"window {window_s} s must be positive")
    threshold = float(geometric_elevation(limit_deg)) if refraction else float(limit_deg)

    def f(t: np.ndarray) -> np.ndarray:
        return np.atleast_1d(target.elevation_deg(np.asarray(t, dtype=float), loc)) - threshold

    n = int(math.ceil(window_s / step_s))
    ts = t_start + step_s * np.arange(-1, n + 2)  # one step of margin each side
    fs = f(ts)
    lo_l, hi_l = [], []
    for i in range(len(ts) - 1):
        if (fs[i] >= 0) != (fs[i + 1] >= 0):
            lo_l.append(ts[i])
            hi_l.append(ts[i + 1])
    # local extrema of the grid: the vertex of a parabola through the three samples, evaluated in one call
    idx = [i for i in range(1, len(ts) - 1)
           if (fs[i] >= fs[i - 1] and fs[i] >= fs[i + 1]) or (fs[i] <= fs[i - 1] and fs[i] <= fs[i + 1])]
    tvs = np.array([_parabola_vertex(ts[i - 1:i + 2], fs[i - 1:i + 2]) for i in idx])
    fvs = f(tvs) if len(idx) else np.array([])
    extrema = list(zip(tvs.tolist(), fvs.tolist(), strict=True))
    for i, tv, fv in zip(idx, tvs, fvs, strict=True):
        same_side = (fs[i - 1] >= 0) == (fs[i] >= 0) == (fs[i + 1] >= 0)
        if same_side and (fv >= 0) != (fs[i] >= 0):  # grazing excursion across the limit between grid points
            lo_l += [ts[i - 1], tv]
            hi_l += [tv, ts[i + 1]]
    inside = (ts >= t_start) & (ts <= t_start + window_s)
    cand = [(float(t), float(v)) for t, v in zip(ts[inside], fs[inside], strict=True)]
    cand += [(t, v) for t, v in extrema if t_start <= t <= t_start + window_s]
    fmax = max(v for _, v in cand)
    fmin = min(v for _, v in cand)
    events: list[Crossing] = []
    if lo_l:
        lo, hi = np.array(lo_l), np.array(hi_l)
        rising = f(lo) < 0
        while np.max(hi - lo) > 2 * tol_s:
            mid = 0.5 * (lo + hi)
            below = f(mid) < 0
            move_lo = below == rising  # root lies above mid
            lo = np.where(move_lo, mid, lo)
            hi = np.where(move_lo, hi, mid)
        tev = 0.5 * (lo + hi)
        keep = (tev >= t_start) & (tev < t_start + window_s)
        tev, rising = tev[keep], rising[keep]
        order = np.argsort(tev)
        lsts = np.atleast_1d(lst_deg(tev[order], loc)) if len(tev) else []
        events = [Crossing("rise" if rising[k] else "set", float(tev[k]), float(lst))
                  for k, lst in zip(order, lsts, strict=True)]
    return RiseSet(target.name, float(t_start), float(t_start + window_s), float(limit_deg), refraction, events,
                   fmax + threshold, fmin + threshold)
