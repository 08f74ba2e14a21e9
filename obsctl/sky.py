"""The simulated sky seen by a single dish: sources, sun, moon, planets, atmosphere, Doppler.

Conventions: positions are topocentric apparent (no refraction) HA/Dec in degrees; temperatures are
antenna temperatures in K; frequencies in MHz; flux densities in Jy.  The beam is a circular Gaussian of
FWHM 1.2 lambda/D; Gaussian sources are convolved analytically (peak scaled by
theta_b^2/(theta_b^2+theta_s^2), width sqrt(theta_b^2+theta_s^2)).  The atmosphere is plane-parallel:
opacity tau_z/sin(el), emission T_atm (1 - exp(-tau)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from astropy.coordinates import SkyCoord

from obsctl import astro
from obsctl.catalog import Catalog, Source, load_catalog
from obsctl.site import ReceiverConfig, Site

K_B = 1.380649e-23
C = 299_792_458.0
JY = 1e-26
FOUR_LN2 = 4.0 * math.log(2.0)

#: Brightness temperatures (K) of solar-system bodies at 1.4 GHz and their spectral slope.
_BODY_TB = {
    "sun": (1.2e5, -0.75),   # quiet sun, decreasing towards the photosphere's ~1e4 K at 22 GHz
    "moon": (225.0, 0.0),
    "venus": (600.0, -0.15),
    "mars": (200.0, 0.0),
    "jupiter": (350.0, -0.15),
    "saturn": (180.0, 0.0),
}
_BODY_SPAN_S = 600.0  # solar-system positions: anchors this far apart (s), linear in between
_BODY_RADIUS_KM = {"sun": 695_700.0, "moon": 1_737.4, "venus": 6_051.8, "mars": 3_389.5,
                   "jupiter": 69_911.0, "saturn": 58_232.0}


@dataclass(frozen=True)
class BeamOptics:
    """What the subreflector does to the beam (the SUB IOC's readbacks).

    ``gain`` is the gain relative to perfect focus: it scales what the sources contribute (not the
    atmosphere or the receiver).  ``dx_deg`` and ``dy_deg`` move where the beam looks, along hour angle
    (true angle on the sky) and along declination (deg).
    """

    gain: float = 1.0
    dx_deg: float = 0.0
    dy_deg: float = 0.0

    def aim(self, ha_deg: np.ndarray, dec_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where the beam looks (apparent HA, Dec in deg) when the dish points at ``ha_deg``, ``dec_deg``."""
        ha, dec = np.asarray(ha_deg, dtype=float), np.asarray(dec_deg, dtype=float)
        if self.dx_deg == 0.0 and self.dy_deg == 0.0:
            return ha, dec
        return ha + self.dx_deg / np.maximum(np.cos(np.radians(dec)), 1e-3), dec + self.dy_deg


PERFECT_OPTICS = BeamOptics()


@dataclass(frozen=True)
class Weather:
    """Surface weather: temperature (degC), pressure (hPa), relative humidity (%), wind (m/s, deg)."""

    temp_c: float = 15.0
    pressure_hpa: float = 850.0
    humidity_pct: float = 50.0
    wind_m_s: float = 3.0
    wind_dir_deg: float = 0.0


def saturation_pressure_hpa(temp_c: float) -> float:
    """Water-vapour saturation pressure over water (hPa), Buck's formula."""
    return 6.1121 * math.exp((18.678 - temp_c / 234.5) * (temp_c / (257.14 + temp_c)))


def tau_zenith(rx: ReceiverConfig, weather: Weather) -> float:
    """Zenith opacity (nepers) for a receiver's band in the given weather.

    The site value ``zenith_tau`` holds for 15 degC, 50 % humidity; its wet part (20 % at cm
    wavelengths, 80 % near the 22 GHz water line) scales with the water-vapour pressure.
    """
    wet = 0.8 if 18_000 < rx.freq_mhz < 26_000 else 0.2
    e = weather.humidity_pct / 100.0 * saturation_pressure_hpa(weather.temp_c)
    e_std = 0.5 * saturation_pressure_hpa(15.0)
    return rx.zenith_tau * ((1.0 - wet) * weather.pressure_hpa / 850.0 + wet * e / e_std)


def airmass(el_deg: float | np.ndarray) -> float | np.ndarray:
    """Plane-parallel airmass 1/sin(el), elevation clipped at 1 deg."""
    return 1.0 / np.sin(np.radians(np.maximum(el_deg, 1.0)))


def atmosphere(el_deg: float | np.ndarray, tau_z: float, t_atm_k: float):
    """(emission K, transmission) of the atmosphere at elevation(s) ``el_deg``."""
    tau = tau_z * airmass(el_deg)
    trans = np.exp(-tau)
    return t_atm_k * (1.0 - trans), trans


def beam_response(dist_deg: np.ndarray, fwhm_deg: float) -> np.ndarray:
    """Normalised Gaussian beam power at angular distance ``dist_deg``."""
    return np.exp(-FOUR_LN2 * (np.asarray(dist_deg) / fwhm_deg) ** 2)


def flux_from_tb(tb_k: float, radius_deg: float, freq_mhz: float) -> float:
    """Flux density (Jy) of a uniform disk of brightness temperature ``tb_k`` (Rayleigh-Jeans)."""
    lam = C / (freq_mhz * 1e6)
    omega = math.pi * math.radians(radius_deg) ** 2
    return 2 * K_B * tb_k * omega / lam**2 / JY


@dataclass
class _Emitters:
    """Continuum emitters at one epoch: apparent RA/Dec (deg), flux (Jy), Gaussian FWHM (deg)."""

    names: list[str]
    ra: np.ndarray
    dec: np.ndarray
    flux: np.ndarray
    size: np.ndarray


class SkyModel:
    """Antenna temperature of the sky for the site's dish.

    Catalog positions are precessed to apparent place and cached for ``refresh_s`` seconds of
    observatory time (600 s); solar-system bodies are interpolated between anchors 600 s apart.
    """

    def __init__(self, site: Site, catalog: Catalog | None = None, refresh_s: float = 600.0):
        self.site = site
        self.loc = astro.site_location(site)
        self.catalog = catalog or load_catalog(site.catalog_path)
        self.lst = astro.SiderealClock(self.loc)
        self.refresh_s = refresh_s
        self._cat_t = -math.inf
        self._body_t = -math.inf
        self._cat_app: dict[str, tuple[float, float]] = {}
        self._bodies: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}  # name -> (ra[2], dec[2], radius)
        self._sources = list(self.catalog.sources.values())

    # ---- positions -------------------------------------------------------------------------
    def _refresh(self, t: float) -> None:
        if abs(t - self._cat_t) > self.refresh_s:
            coords = SkyCoord([s.ra_deg for s in self._sources], [s.dec_deg for s in self._sources],
                              unit="deg", frame="icrs")
            ha, dec = astro.apparent_hadec(coords, t, self.loc)
            ra = (self.lst(t) - ha) % 360.0
            self._cat_app = {s.name: (float(r), float(d)) for s, r, d in zip(self._sources, ra, dec,
                                                                               strict=True)}
            self._cat_t = t
        if not self._body_t <= t <= self._body_t + _BODY_SPAN_S:
            # two anchors a span apart, interpolated linearly in between: one vectorised transform per body
            ts = np.array([t, t + _BODY_SPAN_S])
            lst = self.lst(ts)
            for name in _BODY_TB:
                c = astro.body_coord(name, ts, self.loc)
                ha, dec = astro.apparent_hadec(c, ts, self.loc)
                dist_km = np.asarray(c.distance.to_value("km"), dtype=float)
                ra = (lst - np.asarray(ha)) % 360.0
                ra[1] = ra[0] + astro.wrap180(ra[1] - ra[0])
                radius = float(np.degrees(np.arcsin(_BODY_RADIUS_KM[name] / dist_km[0])))
                self._bodies[name] = (ra, np.asarray(dec, dtype=float), radius)
            self._body_t = t

    def _body(self, name: str, t: float) -> tuple[float, float, float]:
        """Interpolated apparent RA, Dec (deg) and radius (deg) of a body at ``t`` (after _refresh)."""
        ra, dec, radius = self._bodies[name]
        w = (t - self._body_t) / _BODY_SPAN_S
        return float((ra[0] + (ra[1] - ra[0]) * w) % 360.0), float(dec[0] + (dec[1] - dec[0]) * w), radius

    def apparent_radec(self, name: str, t: float) -> tuple[float, float]:
        """Apparent RA/Dec (deg) of a catalog source or body at time ``t`` (cached)."""
        self._refresh(t)
        key = name.lower()
        if key in self._bodies:
            return self._body(key, t)[:2]
        return self._cat_app[self.catalog.get(name).name]

    def apparent_hadec(self, name: str, t: float) -> tuple[float, float]:
        """Apparent HA (-180..180)/Dec (deg) of a catalog source or body at time ``t``."""
        ra, dec = self.apparent_radec(name, t)
        return float(astro.wrap180(self.lst(t) - ra)), dec

    def _emitters(self, t: float, freq_mhz: float) -> _Emitters:
        self._refresh(t)
        names, ra, dec, flux, size = [], [], [], [], []
        for s in self._sources:
            if s.kind == "maser":
                continue
            r, d = self._cat_app[s.name]
            names.append(s.name)
            ra.append(r)
            dec.append(d)
            flux.append(s.flux_jy(freq_mhz))
            size.append(s.size_arcmin / 60.0)
        for name, (tb0, slope) in _BODY_TB.items():
            r, d, radius = self._body(name, t)
            names.append(name)
            ra.append(r)
            dec.append(d)
            flux.append(flux_from_tb(tb0 * (freq_mhz / 1400.0) ** slope, radius, freq_mhz))
            size.append(2 * radius * 0.85)  # Gaussian equivalent of a uniform disk
        return _Emitters(names, np.array(ra), np.array(dec), np.array(flux), np.array(size))

    # ---- temperatures ----------------------------------------------------------------------
    def source_temperature(self, ha_deg: np.ndarray, dec_deg: np.ndarray, t: np.ndarray,
                           rx: ReceiverConfig, freq_mhz: float | None = None) -> np.ndarray:
        """Antenna temperature (K, above the atmosphere) of all continuum emitters.

        ``ha_deg``, ``dec_deg`` and ``t`` (POSIX s) are arrays of equal length: where the beam points
        and when.
        """
        f = freq_mhz or rx.freq_mhz
        t = np.atleast_1d(np.asarray(t, dtype=float))
        em = self._emitters(float(t[0]), f)
        ra = (self.lst(t) - np.atleast_1d(ha_deg)) % 360.0
        dec = np.atleast_1d(dec_deg)
        fwhm = self.site.beam_fwhm_deg(f)
        eff = np.sqrt(fwhm**2 + em.size**2)
        peak = rx.gain_k_per_jy * em.flux * fwhm**2 / eff**2
        near = astro.angular_distance(ra[:, None], dec[:, None], em.ra[None, :], em.dec[None, :])
        return np.sum(peak[None, :] * np.exp(-FOUR_LN2 * (near / eff[None, :]) ** 2), axis=1)

    def system_temperature(self, ha_deg: np.ndarray, dec_deg: np.ndarray, t: np.ndarray,
                           rx: ReceiverConfig, weather: Weather, freq_mhz: float | None = None,
                           optics: BeamOptics = PERFECT_OPTICS):
        """Noise-free system temperature (K) and its parts, the dish pointing at ``ha_deg``, ``dec_deg``.

        ``optics`` (the subreflector) moves the beam and scales the sources' part.  Returns a dict with arrays
        ``total``, ``source``, ``atmosphere``, ``cmb``, ``receiver``, ``elevation`` (deg) and the scalar
        ``tau_zenith``.
        """
        sim = self.site.simulation
        ha_deg, dec_deg = optics.aim(ha_deg, dec_deg)
        _, el = astro.hadec_to_azel(np.atleast_1d(ha_deg), np.atleast_1d(dec_deg), self.site.latitude_deg)
        tau_z = tau_zenith(rx, weather)
        t_atm, trans = atmosphere(el, tau_z, sim.t_atm_k)
        src = self.source_temperature(ha_deg, dec_deg, t, rx, freq_mhz) * trans * optics.gain
        cmb = sim.t_cmb_k * trans
        total = rx.tsys_k + t_atm + cmb + src
        return {"total": total, "source": src, "atmosphere": t_atm, "cmb": cmb,
                "receiver": np.full_like(total, rx.tsys_k), "elevation": el, "tau_zenith": tau_z}

    def sources_in_beam(self, ha_deg: float, dec_deg: float, t: float, freq_mhz: float,
                        kind: str, cutoff: float = 1e-3,
                        optics: BeamOptics = PERFECT_OPTICS) -> list[tuple[Source, float]]:
        """Catalog sources of ``kind`` with their beam response (0..1, times the optics' gain) at this pointing."""
        self._refresh(t)
        ha, dec = optics.aim(ha_deg, dec_deg)
        ha_deg, dec_deg = float(ha), float(dec)
        ra = (float(self.lst(t)) - ha_deg) % 360.0
        fwhm = self.site.beam_fwhm_deg(freq_mhz)
        out = []
        for s in self.catalog.of_kind(kind):
            r, d = self._cat_app[s.name]
            w = float(beam_response(astro.angular_distance(ra, dec_deg, r, d), fwhm)) * optics.gain
            if w > cutoff:
                out.append((s, w))
        return out
