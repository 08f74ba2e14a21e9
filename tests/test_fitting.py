"""Quick-look fits recover known parameters from synthetic measurements with radiometer noise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from archiver import fitting

RNG = np.random.default_rng(11)
FWHM = 0.476  # deg, 18 cm beam of a 26 m dish


def beam(x, x0, peak=5.0, fwhm=FWHM):
    return peak * np.exp(-4 * math.log(2) * ((x - x0) / fwhm) ** 2)


def test_gaussian_fit_recovers_parameters():
    x = np.linspace(-1.5, 1.5, 121)
    y = beam(x, 0.03) + 40.0 + 0.2 * x + RNG.normal(0, 0.02, x.size)
    fit = fitting.fit_gaussian(x, y)
    assert fit.peak == pytest.approx(5.0, rel=0.01)
    assert fit.centre == pytest.approx(0.03, abs=FWHM / 100)
    assert fit.fwhm == pytest.approx(FWHM, rel=0.01)
    assert fit.base == pytest.approx(40.0, abs=0.02)
    assert fit.rms == pytest.approx(0.02, rel=0.2)
    with pytest.raises(ValueError, match="at least 7"):
        fitting.fit_gaussian([1, 2, 3], [1, 2, 3])


def test_drift_scan_converts_time_to_angle():
    dec = -45.0
    scale = fitting.SIDEREAL_DEG_PER_S * math.cos(math.radians(dec))
    t = np.arange(-600.0, 600.0, 1.0)
    offset_deg = 0.02  # the source peaks this far (true angle) after the expected transit
    y = beam(t * scale, offset_deg) + 30 + RNG.normal(0, 0.01, t.size)
    r = fitting.drift_scan(t + 1000.0, y, 1000.0, dec, gain_k_per_jy=0.1, fwhm_guess_deg=FWHM)
    assert r.offset_deg == pytest.approx(offset_deg, abs=FWHM / 100)
    assert r.fwhm_deg == pytest.approx(FWHM, rel=0.01)
    assert r.flux_jy == pytest.approx(50.0, rel=0.01)


def test_cross_scan_corrects_for_the_other_axis():
    dec = -30.0
    cosd = math.cos(math.radians(dec))
    off = np.linspace(-1.2, 1.2, 49)
    x0, y0 = 0.04, -0.03  # true-angle pointing error
    peak = 4.0
    ha_scan = peak * math.exp(-4 * math.log(2) * (y0 / FWHM) ** 2) * np.exp(
        -4 * math.log(2) * ((off * cosd - x0) / FWHM) ** 2) + 50
    dec_scan = peak * math.exp(-4 * math.log(2) * (x0 / FWHM) ** 2) * np.exp(
        -4 * math.log(2) * ((off - y0) / FWHM) ** 2) + 50
    ha, de = fitting.cross_scan(off, ha_scan, off, dec_scan, dec, 0.1)
    assert ha.offset_deg == pytest.approx(x0, abs=1e-4) and de.offset_deg == pytest.approx(y0, abs=1e-4)
    assert ha.peak_k == pytest.approx(peak, rel=1e-3) and de.peak_k == pytest.approx(peak, rel=1e-3)
    assert ha.flux_jy == pytest.approx(40.0, rel=1e-3)


def test_five_point_solves_the_beam():
    x0, y0, d = 0.03, -0.02, FWHM / 2
    e, w = beam(d, x0), beam(-d, x0)
    n, s = beam(d, y0), beam(-d, y0)
    dx, dy = fitting.five_point(d, beam(0, x0), n, s, e, w, FWHM)
    assert dx == pytest.approx(x0, abs=1e-9) and dy == pytest.approx(y0, abs=1e-9)
    with pytest.raises(ValueError, match="positive"):
        fitting.five_point(d, 1.0, 0.0, 1.0, 1.0, 1.0, FWHM)


def test_diode_calibration():
    tsys, tcal, k = 40.0, 16.0, 2000.0
    off = tsys * k + RNG.normal(0, 20, 500)
    on = (tsys + tcal) * k + RNG.normal(0, 20, 500)
    cal = fitting.tsys_from_diode(off, on, tcal)
    assert cal.tsys_k == pytest.approx(tsys, rel=0.001)
    assert cal.k_per_count == pytest.approx(1 / k, rel=0.001)
    with pytest.raises(ValueError, match="did not raise"):
        fitting.tsys_from_diode(on, off, tcal)


def test_sky_dip_recovers_tau():
    el = np.array([90, 70, 50, 40, 30, 25, 20, 15, 12.0])
    tau, tatm = 0.012, 270.0
    t = 38 + 2.7 + tatm * (1 - np.exp(-tau / np.sin(np.radians(el)))) + RNG.normal(0, 0.005, el.size)
    dip = fitting.tau_from_skydip(el, t, tatm)
    assert dip.tau_zenith == pytest.approx(tau, rel=0.02)
    with pytest.raises(ValueError, match="span"):
        fitting.tau_from_skydip([40, 41, 42, 43], [1, 2, 3, 4], tatm)


def test_spectral_line_velocity_and_baseline():
    v = np.linspace(-40, 40, 1024)
    spec = 60 + 0.02 * v + 0.0005 * v**2 + 500 * np.exp(-4 * math.log(2) * ((v - 1.3) / 0.5) ** 2)
    spec += RNG.normal(0, 0.3, v.size)
    line = fitting.spectral_line(v, spec)
    assert line.vlsr_kms == pytest.approx(1.3, abs=line.channel_kms / 4)
    assert line.peak_k == pytest.approx(500, rel=0.01)
    assert line.fwhm_kms == pytest.approx(0.5, rel=0.03)
    assert line.rms_k == pytest.approx(0.3, rel=0.15)


def test_pulse_profile_snr():
    n = 256
    phase = np.arange(n) / n
    prof = 0.5 * np.exp(-4 * math.log(2) * ((phase - 0.3) / 0.04) ** 2) + RNG.normal(0, 0.01, n)
    r = fitting.pulse_profile(prof)
    assert r.peak_phase == pytest.approx(0.3, abs=2 / n)
    assert r.snr == pytest.approx(50, rel=0.25)
    assert r.fwhm_phase == pytest.approx(0.04, abs=3 / n)
