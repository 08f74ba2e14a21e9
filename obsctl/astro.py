"""Astronomy helpers on astropy, fully offline.

Importing this module configures astropy never to download: the IERS tables come from the pinned
``astropy-iers-data`` package, and past the end of its predictions astropy warns instead of failing.
Angles are degrees, times POSIX seconds (UTC) unless stated.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache

import erfa
import numpy as np
from astropy import units as u
from astropy.coordinates import (
    EarthLocation as _EarthLocation,
)
from astropy.coordinates import (
    HADec,
    SkyCoord,
    get_body,
    solar_system_ephemeris,
)
from astropy.time import Time
from astropy.utils import iers
from astropy.utils.data import conf as _data_conf

iers.conf.auto_download = False
iers.conf.auto_max_age = None
iers.conf.iers_degraded_accuracy = "warn"
_data_conf.allow_internet = False
solar_system_ephemeris.set("builtin")
warnings.filterwarnings("ignore", category=erfa.ErfaWarning)

SIDEREAL_RATE = 1.002737909350795  # sidereal seconds per UT1 second
BODIES = ("sun", "moon", "mercury", "venus", "mars", "jupiter", "saturn", "uranus", "neptune")

#: Solar motion with respect to the kinematic LSR (standard: 20 km/s towards RA 18h, Dec +30, B1900).
_LSR_APEX = SkyCoord("18h03m50.29s", "+30d00m16.8s", frame="icrs")
_LSR_SPEED_KMS = 20.0


@dataclass(frozen=True)
class Location:
    """An observatory on the Earth (deg, deg, m)."""

    latitude_deg: float
    longitude_deg: float
    height_m: float

    @property
    def earth(self) -> _EarthLocation:
        """The astropy EarthLocation."""
        return _earth_location(self.latitude_deg, self.longitude_deg, self.height_m)


@lru_cache(maxsize=8)
def _earth_location(lat: float, lon: float, h: float) -> _EarthLocation:
    return _EarthLocation.from_geodetic(lon * u.deg, lat * u.deg, h * u.m)


def site_location(site: object) -> Location:
    """The :class:`Location` of a :class:`obsctl.site.Site`."""
    return Location(site.latitude_deg, site.longitude_deg, site.height_m)  # type: ignore[attr-defined]


def to_time(t: float | np.ndarray | Time) -> Time:
    """An astropy Time (UTC) from POSIX seconds."""
    return t if isinstance(t, Time) else Time(t, format="unix", scale="utc")


# ---- time scales -----------------------------------------------------------------------------
def mjd(t: float) -> float:
    """Modified Julian Date (UTC) of POSIX time ``t``."""
    return t / 86400.0 + 40587.0


def ut1_minus_utc(t: float) -> float:
    """UT1-UTC (s) from the bundled IERS tables."""
    return float(to_time(t).delta_ut1_utc)


def tai_minus_utc(t: float) -> float:
    """TAI-UTC, the accumulated leap seconds (s)."""
    d = to_time(t).utc.datetime
    frac = (d.hour * 3600 + d.minute * 60 + d.second + d.microsecond / 1e6) / 86400.0
    return float(erfa.dat(d.year, d.month, d.day, frac))


def lst_deg(t: float | np.ndarray, loc: Location, kind: str = "apparent") -> float | np.ndarray:
    """Local sidereal time (deg, 0..360), apparent by default, with UT1 from IERS."""
    st = to_time(t).sidereal_time(kind, longitude=loc.longitude_deg * u.deg)
    out = st.to_value(u.deg)
    return float(out) if np.ndim(out) == 0 else np.asarray(out)


class SiderealClock:
    """Fast local apparent sidereal time: astropy anchors, linear in between.

    Re-anchors every ``anchor_s`` seconds of time (default 600 s), which keeps the error far below 1 ms.
    """

    def __init__(self, loc: Location, anchor_s: float = 600.0):
        self.loc = loc
        self.anchor_s = anchor_s
        self._t0 = -math.inf
        self._lst0 = 0.0

    def __call__(self, t: float | np.ndarray) -> float | np.ndarray:
        """LAST (deg, 0..360) at POSIX time(s) ``t``."""
        tmin = float(np.min(t))
        if abs(tmin - self._t0) > self.anchor_s:
            self._t0 = tmin
            self._lst0 = lst_deg(tmin, self.loc)
        return (self._lst0 + (np.asarray(t, dtype=float) - self._t0) * SIDEREAL_RATE * 360.0 / 86400.0) % 360.0


# ---- positions -------------------------------------------------------------------------------
def wrap180(a: float | np.ndarray) -> float | np.ndarray:
    """Angle wrapped to (-180, 180] (deg)."""
    return (np.asarray(a) + 180.0) % 360.0 - 180.0 if np.ndim(a) else (a + 180.0) % 360.0 - 180.0


def hadec_to_azel(ha: float | np.ndarray, dec: float | np.ndarray, lat: float):
    """Geometric HA/Dec -> Az (from north through east)/El, all deg."""
    h, d, p = np.radians(ha), np.radians(dec), math.radians(lat)
    sin_el = np.sin(d) * math.sin(p) + np.cos(d) * math.cos(p) * np.cos(h)
    el = np.arcsin(np.clip(sin_el, -1.0, 1.0))
    y = -np.cos(d) * np.sin(h)
    x = np.sin(d) * math.cos(p) - np.cos(d) * math.sin(p) * np.cos(h)
    az = np.degrees(np.arctan2(y, x)) % 360.0
    return az, np.degrees(el)


def azel_to_hadec(az: float | np.ndarray, el: float | np.ndarray, lat: float):
    """Az/El -> geometric HA (-180..180)/Dec, all deg."""
    a, e, p = np.radians(az), np.radians(el), math.radians(lat)
    sin_d = np.sin(e) * math.sin(p) + np.cos(e) * math.cos(p) * np.cos(a)
    d = np.arcsin(np.clip(sin_d, -1.0, 1.0))
    y = -np.cos(e) * np.sin(a)
    x = np.sin(e) * math.cos(p) - np.cos(e) * math.sin(p) * np.cos(a)
    return np.degrees(np.arctan2(y, x)), np.degrees(d)


def angular_distance(ra1, dec1, ra2, dec2):
    """Great-circle distance between two directions (deg); works for HA/Dec pairs too."""
    r1, d1, r2, d2 = (np.radians(x) for x in (ra1, dec1, ra2, dec2))
    s = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r2 - r1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(s, 0.0, 1.0))))


def parse_radec(ra: str | float, dec: str | float) -> SkyCoord:
    """ICRS coordinate from sexagesimal strings ('19:39:25.0', '-63:42:45') or degrees."""
    if isinstance(ra, str) and ":" in ra:
        return SkyCoord(ra, dec, unit=(u.hourangle, u.deg), frame="icrs")
    return SkyCoord(float(ra) * u.deg, float(dec) * u.deg, frame="icrs")


def apparent_hadec(coord: SkyCoord, t: float | np.ndarray, loc: Location) -> tuple:
    """Topocentric apparent HA/Dec (deg) of an ICRS direction, no refraction (astropy HADec frame)."""
    frame = HADec(obstime=to_time(t), location=loc.earth, pressure=0 * u.hPa)
    c = coord.transform_to(frame)
    return wrap180(c.ha.to_value(u.deg)), c.dec.to_value(u.deg)


def body_coord(name: str, t: float | np.ndarray, loc: Location) -> SkyCoord:
    """Geocentric-GCRS position of a solar-system body (builtin ephemeris), name case-insensitive."""
    key = name.strip().lower()
    if key not in BODIES:
        raise ValueError(f"unknown body {name!r}; known: {', '.join(BODIES)}")
    return get_body(key, to_time(t), location=loc.earth)


def body_hadec(name: str, t: float | np.ndarray, loc: Location) -> tuple:
    """Topocentric apparent HA/Dec (deg) of a body (parallax included, no refraction)."""
    c = body_coord(name, t, loc)
    frame = HADec(obstime=to_time(t), location=loc.earth, pressure=0 * u.hPa)
    h = c.transform_to(frame)
    return wrap180(h.ha.to_value(u.deg)), h.dec.to_value(u.deg)


def body_radius_deg(name: str, t: float, loc: Location) -> float:
    """Apparent angular radius of the sun or moon (deg); planets are treated as points here (0)."""
    radii_km = {"sun": 695_700.0, "moon": 1_737.4}
    key = name.lower()
    if key not in radii_km:
        return 0.0
    dist_km = body_coord(key, t, loc).distance.to_value(u.km)
    return math.degrees(math.asin(radii_km[key] / float(dist_km)))


# ---- refraction ------------------------------------------------------------------------------
def refraction_deg(el_deg: float | np.ndarray, temp_c: float = 15.0, pressure_hpa: float = 850.0,
                   humidity_pct: float = 50.0, freq_mhz: float = 1666.0) -> float | np.ndarray:
    """Radio refraction (deg) at apparent elevation, from surface weather.

    Uses the radio refractivity N = 77.6 P/T + 3.73e5 e/T^2 (Smith-Weintraub) with a
    Bennett-style elevation dependence; radio refraction is frequency-independent below ~100 GHz.
    """
    t_k = temp_c + 273.15
    es = 6.1121 * math.exp(17.502 * temp_c / (temp_c + 240.97))  # saturation pressure (hPa)
    e = humidity_pct / 100.0 * es
    n = 77.6 * pressure_hpa / t_k + 3.73e5 * e / t_k**2  # N units (1e-6)
    el = np.maximum(np.asarray(el_deg, dtype=float), -1.0)
    # Bennett (1982) cot form scaled to refractivity: R(arcmin) = N/ N0 * cot(el + 7.31/(el+4.4))
    r_arcmin = (n / 313.0) * 1.0 / np.tan(np.radians(el + 7.31 / (el + 4.4)))
    r = np.clip(r_arcmin / 60.0, 0.0, 2.0)
    return float(r) if np.ndim(r) == 0 else r


# ---- Doppler ---------------------------------------------------------------------------------
def velocity_corrections_kms(coord: SkyCoord, t: float, loc: Location) -> tuple[float, float]:
    """(barycentric, LSR) corrections (km/s) for a direction at time ``t``.

    v_source_frame = v_topocentric + correction; the LSR correction includes the barycentric one.
    """
    vbary = coord.radial_velocity_correction(kind="barycentric", obstime=to_time(t), location=loc.earth)
    vb = float(vbary.to_value(u.km / u.s))
    lsr = _LSR_SPEED_KMS * float(np.cos(np.radians(coord.separation(_LSR_APEX).deg)))
    return vb, vb + lsr


def topocentric_freq_mhz(rest_mhz: float, vlsr_kms: float, v_lsr_correction_kms: float) -> float:
    """Observed (topocentric) frequency of a line at LSR velocity ``vlsr_kms`` (radio convention).

    The source moves at ``vlsr - correction`` with respect to the telescope.
    """
    v_topo = vlsr_kms - v_lsr_correction_kms
    return rest_mhz * (1.0 - v_topo / 299_792.458)
