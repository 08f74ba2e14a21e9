"""Weather physics: the true surface weather at the site and the weather-station sensors that read it.

``true_weather(t, seed)`` is deterministic (the same seed and instant give the same weather in every process),
so the radiometer and correlator simulators can use the atmosphere the weather station reports
(``site_weather(site, t)`` passes a site's location; ``true_weather(t, seed)`` alone is the reference site).
The defaults describe the reference site (HartRAO, 1415 m on the South African highveld: warm wet summers,
cool dry winters):

* temperature: seasonal mean plus a diurnal cycle that is coldest near sunrise and warmest at 14 h local apparent
  solar time (fast warming, slow cooling), damped on cloudy days, plus synoptic (days) and hourly variations;
* humidity: from a slowly varying dew point (the air mass), so relative humidity is anti-correlated with the
  temperature over the day (dew point never above the temperature: fog at 100 %);
* pressure: standard atmosphere at the site height (about 854 hPa), the semi-diurnal atmospheric tide
  (maxima near 10 h and 22 h local solar time, 1.2 hPa amplitude), seasonal and synoptic drift;
* wind: a mean of a few m/s, windier in the afternoon, with gusts on time scales of tens of seconds;
  the direction wanders around a prevailing direction.

Units: degC, %, hPa, m/s, deg (direction the wind blows from, clockwise from north).
"""

from __future__ import annotations

import math

import numpy as np

from iocs.sim.noise import generator, smooth
from obsctl.sky import Weather, saturation_pressure_hpa

REF_LONGITUDE_DEG = 27.6853
REF_LATITUDE_DEG = -25.8897
REF_HEIGHT_M = 1415.0

#: Magnus coefficients over water (Alduchov & Eskridge 1996): degC
MAGNUS_B = 17.625
MAGNUS_C = 243.04


def dew_point_magnus(temp_c: float, humidity_pct: float) -> float:
    """Dew point (degC) from temperature (degC) and relative humidity (%), Magnus formula."""
    rh = min(max(float(humidity_pct), 0.1), 100.0)
    gamma = math.log(rh / 100.0) + MAGNUS_B * temp_c / (MAGNUS_C + temp_c)
    return MAGNUS_C * gamma / (MAGNUS_B - gamma)


def standard_pressure_hpa(height_m: float) -> float:
    """Pressure of the ICAO standard atmosphere at ``height_m`` (hPa)."""
    return 1013.25 * (1.0 - 2.25577e-5 * height_m) ** 5.25588


def local_solar_hour(t: float | np.ndarray, longitude_deg: float) -> float | np.ndarray:
    """Local apparent solar time (h, 0..24) at POSIX time ``t`` (s), with the equation of time (~16 min)."""
    t = np.asarray(t, dtype=float)
    day = t / 86400.0 + 2440587.5 - 2451545.0  # days since J2000.0
    b = 2.0 * np.pi * ((day % 365.2422) - 80.0) / 365.2422
    eot_min = 9.87 * np.sin(2 * b) - 7.53 * np.cos(b) - 1.5 * np.sin(b)
    h = ((t % 86400.0) / 3600.0 + longitude_deg / 15.0 + eot_min / 60.0) % 24.0
    return float(h) if h.ndim == 0 else h


def season(t: float | np.ndarray, latitude_deg: float) -> float | np.ndarray:
    """+1 in local midsummer (mid-January in the south, mid-July in the north), -1 in midwinter."""
    t = np.asarray(t, dtype=float)
    doy = (t / 86400.0) % 365.2422
    s = np.cos(2.0 * np.pi * (doy - 15.0) / 365.2422) * (1.0 if latitude_deg < 0 else -1.0)
    return float(s) if s.ndim == 0 else s


def diurnal_shape(hour: float | np.ndarray, t_min_h: float | np.ndarray, t_max_h: float = 14.0):
    """Normalised diurnal temperature curve: -1 at ``t_min_h`` (sunrise), +1 at ``t_max_h`` (local solar h).

    Half-cosine warming from the minimum to the maximum and a slower half-cosine cooling through the night.
    """
    hour = np.asarray(hour, dtype=float)
    warm_len = t_max_h - t_min_h
    since_min = (hour - t_min_h) % 24.0
    warming = since_min < warm_len
    x_warm = -np.cos(np.pi * since_min / warm_len)
    x_cool = np.cos(np.pi * (since_min - warm_len) / (24.0 - warm_len))
    out = np.where(warming, x_warm, x_cool)
    return float(out) if out.ndim == 0 else out


def _sat(temp_c: np.ndarray) -> np.ndarray:
    return np.vectorize(saturation_pressure_hpa, otypes=[float])(temp_c)


def true_weather(t: float | np.ndarray, seed: int, *, longitude_deg: float = REF_LONGITUDE_DEG,
                 latitude_deg: float = REF_LATITUDE_DEG, height_m: float = REF_HEIGHT_M) -> Weather:
    """The true surface weather at POSIX time ``t`` (s); arrays of times give arrays in each field."""
    scalar = np.ndim(t) == 0
    t = np.asarray(t, dtype=float)
    hour = local_solar_hour(t, longitude_deg)
    s = season(t, latitude_deg)
    cloud = np.clip(0.35 + 0.15 * s + 0.35 * smooth(t, seed, "wx_cloud", 2.5 * 86400.0), 0.0, 1.0)
    # temperature: seasonal mean, diurnal cycle damped by cloud, synoptic and hourly weather
    mean_c = 17.5 + 4.5 * s - 4.5e-3 * (height_m - REF_HEIGHT_M)
    amp_c = (7.5 - 1.5 * s) * (1.0 - 0.4 * cloud)
    t_min_h = 6.0 - 0.7 * s  # minimum near sunrise: earlier in summer
    temp = (mean_c + amp_c * diurnal_shape(hour, t_min_h)
            + 2.5 * smooth(t, seed, "wx_temp_synoptic", 3.0 * 86400.0)
            + 0.4 * smooth(t, seed, "wx_temp_hourly", 3600.0))
    # humidity from the air mass's dew point (wetter in summer and under cloud)
    dew = 5.0 + 7.0 * s + 3.0 * cloud + 2.5 * smooth(t, seed, "wx_dew", 3.0 * 86400.0)
    dew = np.minimum(dew, temp)
    humidity = np.clip(100.0 * _sat(dew) / _sat(temp), 1.0, 100.0)
    # pressure: standard atmosphere, semi-diurnal tide, season and synoptic systems
    pressure = (standard_pressure_hpa(height_m) - 2.5 * s + 1.2 * np.cos(2.0 * np.pi * (hour - 10.0) / 12.0)
                + 3.0 * smooth(t, seed, "wx_pressure", 4.0 * 86400.0))
    # wind: afternoon maximum, day-to-day variation, gusts of tens of seconds
    mean_wind = np.maximum(0.3, 2.8 + 1.2 * np.cos(2.0 * np.pi * (hour - 15.0) / 24.0)
                           + 1.2 * smooth(t, seed, "wx_wind", 1.5 * 86400.0))
    gust = 1.0 + 0.25 * smooth(t, seed, "wx_gust", 20.0, n=8) + 0.12 * smooth(t, seed, "wx_gust_slow", 150.0)
    wind = np.maximum(0.0, mean_wind * gust)
    direction = (20.0 + 70.0 * smooth(t, seed, "wx_dir", 86400.0)
                 + 15.0 * smooth(t, seed, "wx_dir_fast", 300.0)) % 360.0
    fields = (temp, pressure, humidity, wind, direction)
    if scalar:
        fields = tuple(float(f) for f in fields)
    return Weather(temp_c=fields[0], pressure_hpa=fields[1], humidity_pct=fields[2], wind_m_s=fields[3],
                   wind_dir_deg=fields[4])


def site_weather(site: object, t: float | np.ndarray) -> Weather:
    """``true_weather`` for a site (anything with ``simulation.seed``, ``longitude_deg``, ``latitude_deg``,
    ``height_m``, e.g. :class:`obsctl.site.Site`) at POSIX time ``t`` (s)."""
    return true_weather(t, site.simulation.seed, longitude_deg=site.longitude_deg,  # type: ignore[attr-defined]
                        latitude_deg=site.latitude_deg, height_m=site.height_m)  # type: ignore[attr-defined]


class WeatherStation:
    """The station's sensors: true weather plus sensor noise, and the simulated wind override.

    Noise (1 sigma): temperature 0.05 degC, humidity 0.5 %, pressure 0.05 hPa, wind 2 % + 0.05 m/s,
    direction 2 deg.  ``wind_override`` (m/s) replaces the natural wind speed when >= 0.
    """

    def __init__(self, seed: int, *, longitude_deg: float = REF_LONGITUDE_DEG,
                 latitude_deg: float = REF_LATITUDE_DEG, height_m: float = REF_HEIGHT_M):
        self.seed = seed
        self.site_kw = {"longitude_deg": longitude_deg, "latitude_deg": latitude_deg, "height_m": height_m}
        self.rng = generator(seed, "wx_sensor")
        self.wind_override = -1.0

    def read(self, t: float) -> dict[str, float]:
        """Sensor readings at POSIX time ``t``: temp_c, humidity_pct, pressure_hpa, wind_m_s, wind_dir_deg,
        dew_point_c (Magnus, from the measured temperature and humidity)."""
        w = true_weather(t, self.seed, **self.site_kw)
        n = self.rng.standard_normal(5)
        wind = w.wind_m_s if self.wind_override < 0 else self.wind_override
        out = {
            "temp_c": w.temp_c + 0.05 * n[0],
            "humidity_pct": min(100.0, max(0.0, w.humidity_pct + 0.5 * n[1])),
            "pressure_hpa": w.pressure_hpa + 0.05 * n[2],
            "wind_m_s": max(0.0, wind + (0.02 * wind + 0.05) * n[3]),
            "wind_dir_deg": (w.wind_dir_deg + 2.0 * n[4]) % 360.0,
        }
        out["dew_point_c"] = dew_point_magnus(out["temp_c"], out["humidity_pct"])
        return out
