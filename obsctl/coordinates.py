"""Coordinate conversions of the NCCS utilities AZEL, DPRC2 and PJ2000, on astropy/ERFA, offline.

Angles are degrees and times POSIX seconds (UTC) unless stated.  Input angles may be given in degrees
(``"-45.5"``) or sexagesimal (``"-45:30:00"``, ``"-45d30m"``, ``"12h30m"``); right ascension and hour angle
in sexagesimal are hours.  Bad input raises ``ValueError`` with a one-line message naming the quantity.

Equator/equinox systems (:data:`SYSTEMS`):

``b1950``
    FK4, mean equator and equinox of B1950.0 (with the E-terms of aberration), positions at epoch B1950 and
    zero proper motion in FK5 (the usual assumption for old radio catalogues).
``j2000``
    FK5, mean equator and equinox of J2000.0 (within ~20 mas of ICRS).
``date``
    FK5, mean equator and equinox of the given date (IAU 2006 precession, as in astropy).
"""

from __future__ import annotations

import math
import re
from typing import Literal

import numpy as np
from astropy import units as u
from astropy.coordinates import FK4, FK5, Angle, SkyCoord

from obsctl.astro import azel_to_hadec, hadec_to_azel, refraction_deg, to_time, wrap180

AngleKind = Literal["ra", "ha", "dec", "az", "el"]
SYSTEMS: tuple[str, ...] = ("b1950", "j2000", "date")

_NAMES = {"ra": "RA", "ha": "HA", "dec": "Dec", "az": "Az", "el": "El"}
_HOURS_KINDS = ("ra", "ha")


# ---- parsing and formatting ------------------------------------------------------------------
def _sexagesimal(text: str) -> float:
    """'-12:30:15.5' or '-12 30 15.5' -> -12.504..., in the unit of the first field."""
    s = text.strip()
    negative = s.startswith("-")
    fields = re.split(r"[:\s]+", s.lstrip("+-").strip())
    if not 1 <= len(fields) <= 3 or any(f == "" for f in fields):
        raise ValueError("expected 1 to 3 fields")
    vals = [float(f) for f in fields]
    if any(not math.isfinite(v) or v < 0 for v in vals):
        raise ValueError("fields must be finite and unsigned after the first sign")
    if any(v >= 60.0 for v in vals[1:]):
        raise ValueError("minutes and seconds must be below 60")
    value = sum(v / 60.0**i for i, v in enumerate(vals))
    return -value if negative else value


def parse_angle(text: str | float, kind: AngleKind) -> float:
    """An angle in degrees from user input, range-checked for its kind.

    Parameters
    ----------
    text : str or float
        Degrees (``"12.5"``), sexagesimal with colons or spaces (hours for RA and HA, degrees otherwise),
        or astropy unit notation (``"1h30m"``, ``"-45d30m10s"``, ``"1.5h"``, ``"30deg"``).
    kind : {"ra", "ha", "dec", "az", "el"}
        What the angle is: sets the sexagesimal unit and the allowed range (RA 0..360, HA -360..360,
        Dec and El -90..90, Az -360..360 deg).

    Returns
    -------
    float
        Degrees; RA wrapped to [0, 360), HA to (-180, 180], Az to [0, 360).
    """
    name = _NAMES[kind]
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        s = str(text).strip()
        try:
            if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", s):
                value = float(s)
            elif re.search(r"[hdms°'\"]|deg|rad", s, re.IGNORECASE):
                value = Angle(s).to_value(u.deg)
            else:
                value = _sexagesimal(s) * (15.0 if kind in _HOURS_KINDS else 1.0)
        except (ValueError, TypeError, u.UnitsError):
            unit = "h:m:s" if kind in _HOURS_KINDS else "d:m:s"
            raise ValueError(f"{name} {text!r} is not an angle: give degrees (12.5) or {unit} "
                             f"({'1:30:00' if kind in _HOURS_KINDS else '-45:30:00'})") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} {text!r} is not a finite angle")
    limits = {"ra": (0.0, 360.0), "ha": (-360.0, 360.0), "dec": (-90.0, 90.0), "el": (-90.0, 90.0),
              "az": (-360.0, 360.0)}[kind]
    if not limits[0] <= value <= limits[1]:
        raise ValueError(f"{name} {text!r} = {value:.6g} deg is outside {limits[0]:g}..{limits[1]:g} deg")
    if kind in ("ra", "az"):
        return value % 360.0
    if kind == "ha":
        return float(wrap180(value))
    return value


def format_sexagesimal(value: float, precision: int = 1, signed: bool = False, width: int = 2,
                       wrap: int | None = None) -> str:
    """``[+-]DD:MM:SS.s`` of a value in its own unit (hours or degrees), rounded without a '60' field.

    ``wrap`` (e.g. 24) folds a non-negative value that rounds up to it back to 0.
    """
    scale = 10**precision
    total = round(abs(value) * 3600.0 * scale)
    if wrap is not None:
        total %= wrap * 3600 * scale
    whole, frac = divmod(total, scale)
    mins, secs = divmod(whole, 60)
    units, mins = divmod(mins, 60)
    sign = "-" if value < 0 and total else ("+" if signed else "")
    sec = f"{secs:02d}" + (f".{frac:0{precision}d}" if precision > 0 else "")
    return f"{sign}{units:0{width}d}:{mins:02d}:{sec}"


def format_hours(deg: float, precision: int = 2) -> str:
    """An angle in degrees as ``HH:MM:SS.ss`` hours (wrapped to 0..24 h)."""
    return format_sexagesimal((deg % 360.0) / 15.0, precision, wrap=24)


def format_ha(deg: float, precision: int = 2) -> str:
    """An hour angle in degrees as signed ``+HH:MM:SS.ss`` hours (-12..12 h)."""
    return format_sexagesimal(float(wrap180(deg)) / 15.0, precision, signed=True)


def format_dms(deg: float, precision: int = 1, signed: bool = True) -> str:
    """An angle in degrees as ``+DD:MM:SS.s``."""
    return format_sexagesimal(deg, precision, signed=signed)


# ---- refraction ------------------------------------------------------------------------------
def apparent_elevation(el_deg: float | np.ndarray, temp_c: float = 15.0, pressure_hpa: float = 850.0,
                       humidity_pct: float = 50.0) -> float | np.ndarray:
    """Refracted (observed) elevation (deg) of a geometric elevation, radio refraction of :mod:`obsctl.astro`.

    :func:`obsctl.astro.refraction_deg` is a function of the apparent elevation, so this solves
    ``e_app = e_geo + R(e_app)`` by fixed-point iteration (converges to < 1e-9 deg in a few steps).
    """
    geo = np.asarray(el_deg, dtype=float)
    app = geo.copy()
    for _ in range(20):
        new = geo + refraction_deg(app, temp_c, pressure_hpa, humidity_pct)
        done = np.max(np.abs(new - app)) < 1e-10
        app = new
        if done:
            break
    return float(app) if np.ndim(app) == 0 else app


def geometric_elevation(el_deg: float | np.ndarray, temp_c: float = 15.0, pressure_hpa: float = 850.0,
                        humidity_pct: float = 50.0) -> float | np.ndarray:
    """Geometric elevation (deg) of an observed (refracted) elevation: ``e_app - R(e_app)``."""
    out = np.asarray(el_deg, dtype=float) - refraction_deg(el_deg, temp_c, pressure_hpa, humidity_pct)
    return float(out) if np.ndim(out) == 0 else out


# ---- AZEL ------------------------------------------------------------------------------------
def azel_from_hadec(ha_deg: float | np.ndarray, dec_deg: float | np.ndarray, lat_deg: float,
                    refraction: bool = False, **weather: float) -> tuple:
    """(Az, El) in degrees of a topocentric HA/Dec (deg) at latitude ``lat_deg``.

    Azimuth from north through east, 0..360.  With ``refraction`` the elevation is the observed one,
    bent by the radio refraction for ``weather`` (``temp_c``, ``pressure_hpa``, ``humidity_pct``).
    """
    az, el = hadec_to_azel(ha_deg, dec_deg, lat_deg)
    if refraction:
        el = apparent_elevation(el, **weather)
    return az, el


def hadec_from_azel(az_deg: float | np.ndarray, el_deg: float | np.ndarray, lat_deg: float,
                    refraction: bool = False, **weather: float) -> tuple:
    """(HA -180..180, Dec) in degrees of an Az/El (deg) at latitude ``lat_deg``.

    With ``refraction`` the input elevation is taken as observed and the refraction is removed first.
    """
    if refraction:
        el_deg = geometric_elevation(el_deg, **weather)
    return azel_to_hadec(az_deg, el_deg, lat_deg)


# ---- DPRC2 / PJ2000 --------------------------------------------------------------------------
def _frame(system: str, t: float | None) -> FK4 | FK5:
    key = system.strip().lower()
    if key == "b1950":
        return FK4(equinox="B1950")
    if key == "j2000":
        return FK5(equinox="J2000")
    if key == "date":
        if t is None:
            raise ValueError("the 'date' system needs an epoch")
        return FK5(equinox=to_time(t))
    raise ValueError(f"unknown coordinate system {system!r}; known: {', '.join(SYSTEMS)}")


def convert_equinox(ra_deg: float | np.ndarray, dec_deg: float | np.ndarray, from_system: str, to_system: str,
                    t: float | None = None) -> tuple:
    """Mean RA/Dec (deg) converted between the systems ``b1950``, ``j2000`` and ``date``.

    Parameters
    ----------
    ra_deg, dec_deg : float or array
        Mean right ascension and declination in ``from_system`` (deg).
    from_system, to_system : {"b1950", "j2000", "date"}
        See the module docstring.
    t : float, optional
        The date (POSIX s, UTC) of the ``date`` system; needed only if one side is ``date``.

    Returns
    -------
    (ra_deg 0..360, dec_deg)
    """
    dec = np.asarray(dec_deg, dtype=float)
    if np.any(np.abs(dec) > 90.0):
        raise ValueError(f"Dec {dec_deg} is outside -90..90 deg")
    c = SkyCoord(np.asarray(ra_deg, dtype=float) * u.deg, dec * u.deg, frame=_frame(from_system, t))
    out = c.transform_to(_frame(to_system, t))
    ra, de = out.ra.to_value(u.deg) % 360.0, out.dec.to_value(u.deg)
    return (float(ra), float(de)) if np.ndim(ra) == 0 else (ra, de)


def precess_b1950_to_date(ra_deg: float | np.ndarray, dec_deg: float | np.ndarray, t: float) -> tuple:
    """DPRC2: B1950 (FK4) RA/Dec (deg) to the mean equator and equinox of the date ``t`` (POSIX s)."""
    return convert_equinox(ra_deg, dec_deg, "b1950", "date", t)
