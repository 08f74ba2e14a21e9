"""WX IOC: a simulated day of weather against independent physics (astropy solar time, Magnus dew point)."""

from __future__ import annotations

import math
import time

import numpy as np
from astropy.coordinates import get_sun
from astropy.time import Time

from obsctl import astro, launcher  # noqa: F401  (astro: offline IERS settings for astropy)
from tests.conftest import wait_for
from tests.helpers import Recorder, check_pv_metadata, get, put, put_rejected, severity

NUMERIC = ["TEMP_RBV", "HUM_RBV", "PRES_RBV", "WIND_SPD_RBV", "WIND_DIR_RBV", "DEWPT_RBV", "SIM_WIND_SP",
           "RATE_SP"]
UNITS = {"TEMP_RBV": "degC", "HUM_RBV": "%", "PRES_RBV": "hPa", "WIND_SPD_RBV": "m/s", "WIND_DIR_RBV": "deg",
         "DEWPT_RBV": "degC", "SIM_WIND_SP": "m/s", "RATE_SP": "Hz"}


def solar_hour(unix: np.ndarray, longitude_deg: float) -> np.ndarray:
    """Local apparent solar time (h) from the sun's hour angle, with astropy."""
    t = Time(unix, format="unix")
    lst = t.sidereal_time("apparent", longitude=longitude_deg).deg
    ha = lst - get_sun(t).ra.deg
    return (ha / 15.0 + 12.0) % 24.0


def magnus(temp_c: float, rh: float) -> float:
    """Dew point (degC), Magnus with the WMO coefficients (17.62, 243.12)."""
    g = math.log(rh / 100.0) + 17.62 * temp_c / (243.12 + temp_c)
    return 243.12 * g / (17.62 - g)


def test_weather_day_follows_sun_and_physics(observatory):
    speed, epoch = 10800.0, "2026-11-21T20:00:00"
    obs = observatory(["WX"], speed=speed, epoch=epoch)
    put(obs.pv("WX", "RATE_SP"), 8.0)
    names = [obs.pv("WX", s) for s in ("TEMP_RBV", "HUM_RBV", "DEWPT_RBV", "PRES_RBV", "WIND_SPD_RBV",
                                       "WIND_DIR_RBV")]
    rec = Recorder(names)
    r0 = time.time()
    served = check_pv_metadata(obs, "WX")
    for sig in NUMERIC:
        assert obs.pv("WX", sig) in served
        assert get(obs.pv("WX", sig + ".EGU")) == UNITS[sig], sig
    # analyse one fixed simulated day (30 to 54 h after the epoch), whatever the start-up took
    day0 = Time(epoch).unix + 30 * 3600.0
    wait_for(lambda: rec.data[names[0]] and rec.data[names[0]][-1][0] > day0 + 86400.0, 40.0,
             what="a simulated day of weather")
    r1 = time.time()
    rec.stop()
    temp, hum, dew, pres, wind, wdir = (np.array(rec.data[n]) for n in names)
    assert temp[0, 0] < day0, "the IOC started too late to record the whole day"
    # timestamps follow the observatory clock at the requested speed
    span = temp[-1, 0] - temp[0, 0]
    assert abs(span - speed * (r1 - r0)) < 0.1 * speed * (r1 - r0)
    temp, hum, dew, pres, wind, wdir = (x[(x[:, 0] >= day0) & (x[:, 0] < day0 + 86400.0)]
                                        for x in (temp, hum, dew, pres, wind, wdir))
    assert len(temp) > 40, f"only {len(temp)} temperature updates in a simulated day at 8 Hz"
    # diurnal cycle against the sun (local apparent solar time from astropy), after removing the day's linear
    # weather trend: the afternoon (12-17 h) is warmer than the hours before sunrise (3-7 h), and the daily
    # harmonic peaks in the afternoon
    day = temp
    hours = solar_hour(day[:, 0], obs.site.longitude_deg)
    dt = day[:, 0] - day[0, 0]
    detrended = day[:, 1] - np.polyval(np.polyfit(dt, day[:, 1], 1), dt)
    afternoon = detrended[(hours >= 12) & (hours <= 17)].mean()
    morning = detrended[(hours >= 3) & (hours <= 7)].mean()
    w = 2 * np.pi * hours / 24.0
    a, b, _ = np.linalg.lstsq(np.c_[np.cos(w), np.sin(w), np.ones_like(w)], detrended, rcond=None)[0]
    peak_h, amplitude = (np.degrees(np.arctan2(b, a)) / 15.0) % 24.0, 2 * np.hypot(a, b)
    print(f"WX day: T {day[:, 1].min():.1f}..{day[:, 1].max():.1f} degC, afternoon - pre-dawn "
          f"{afternoon - morning:.1f} degC, daily harmonic peak {peak_h:.1f} h solar, peak-to-peak {amplitude:.1f} "
          f"degC; RH {hum[:, 1].min():.0f}..{hum[:, 1].max():.0f} %; P {pres[:, 1].min():.1f}.."
          f"{pres[:, 1].max():.1f} hPa; wind mean {wind[:, 1].mean():.1f} m/s")
    assert afternoon - morning > 3.0, f"afternoon only {afternoon - morning:.1f} degC warmer than pre-dawn"
    assert 12.0 < peak_h < 18.0, f"daily temperature harmonic peaks at {peak_h:.1f} h local solar time"
    assert 2.0 < amplitude < 25.0, f"diurnal peak-to-peak {amplitude:.1f} degC"
    assert -10.0 < day[:, 1].min() and day[:, 1].max() < 40.0
    # humidity is anti-correlated with temperature over the day (same air mass, warmer air)
    n = min(len(temp), len(hum))
    assert np.corrcoef(temp[:n, 1], hum[:n, 1])[0, 1] < -0.5
    assert 0.0 < hum[:, 1].min() and hum[:, 1].max() <= 100.0
    # dew point = Magnus(T, RH) of the same reading (same timestamp), never above the temperature
    by_t = {ts: v for ts, v in temp}
    by_h = {ts: v for ts, v in hum}
    checked = 0
    for ts, d in dew:
        if ts in by_t and ts in by_h:
            assert abs(d - magnus(by_t[ts], by_h[ts])) < 0.15, (ts, d, by_t[ts], by_h[ts])
            assert d <= by_t[ts] + 0.01
            checked += 1
    assert checked > 30
    # station pressure: the standard atmosphere at the site height (barometric formula) within weather
    p_std = 1013.25 * math.exp(-9.80665 * 0.0289644 * obs.site.height_m / (8.31446 * 288.15))
    assert np.all(np.abs(pres[:, 1] - p_std) < 15.0), (p_std, pres[:, 1].min(), pres[:, 1].max())
    assert 0.3 < np.ptp(pres[:, 1]) < 15.0
    # wind: a few m/s on average, gusty, direction a compass angle
    assert 0.5 < wind[:, 1].mean() < 8.0 and wind[:, 1].std() > 0.2 and wind[:, 1].min() >= 0.0
    assert np.all((wdir[:, 1] >= 0.0) & (wdir[:, 1] < 360.0))


def test_weather_wind_override_alarms_and_bad_input(observatory):
    obs = observatory(["WX"], speed=60)
    spd, sim = obs.pv("WX", "WIND_SPD_RBV"), obs.pv("WX", "SIM_WIND_SP")
    assert get(sim) == -1.0
    assert get(obs.pv("WX", "WIND_SPD_RBV.HIGH")) == 10.0
    assert get(obs.pv("WX", "WIND_SPD_RBV.HIHI")) == obs.site.mount.wind_stow_m_s
    for forced, sev in ((12.0, 1), (obs.site.mount.wind_stow_m_s + 5.0, 2)):
        put(sim, forced)
        wait_for(lambda f=forced: abs(get(spd) - f) < 0.1 * f, 5.0, what=f"wind {forced} m/s")
        wait_for(lambda s=sev: severity(spd) == s, 5.0, what=f"wind severity {sev}")
    for bad in (-0.5, 61.0, -2.0, float("nan"), "windy"):
        assert put_rejected(sim, bad), f"SIM_WIND_SP accepted {bad!r}"
        assert get(sim) == obs.site.mount.wind_stow_m_s + 5.0
    put(sim, -1)
    wait_for(lambda: get(spd) < 10.0, 5.0, what="natural wind back")
    rate = obs.pv("WX", "RATE_SP")
    for bad in (0.0, 100.0, float("inf"), float("nan")):
        assert put_rejected(rate, bad), f"RATE_SP accepted {bad!r}"
        assert get(rate) == 1.0
