"""Astronomy helpers: offline astropy, sidereal time, coordinates, refraction, Doppler, sky model."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import AltAz, SkyCoord
from astropy.time import Time

from obsctl import astro
from obsctl.clock import parse_epoch
from obsctl.site import load_site
from obsctl.sky import BeamOptics, SkyModel, Weather, atmosphere, tau_zenith

SITE = load_site()
LOC = astro.site_location(SITE)


def test_astropy_never_downloads_even_years_ahead():
    """In a fresh process, far past the bundled IERS predictions, transforms work without network."""
    code = (
        "import socket\n"
        "def deny(*a, **k): raise RuntimeError('network access attempted')\n"
        "socket.socket.connect = deny\n"
        "socket.create_connection = deny\n"
        "import warnings; warnings.simplefilter('ignore')\n"
        "from obsctl import astro\n"
        "from obsctl.site import load_site\n"
        "loc = astro.site_location(load_site())\n"
        "t = astro.to_time(2.2e9).unix  # year 2039\n"
        "print(astro.lst_deg(t, loc), astro.ut1_minus_utc(t), astro.tai_minus_utc(t))\n"
        "print(astro.apparent_hadec(astro.parse_radec(10.0, -30.0), t, loc))\n"
        "print(astro.body_hadec('sun', t, loc))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_ut1_and_leap_seconds_from_bundled_tables():
    t = parse_epoch("2026-11-21T20:00:00")
    assert astro.tai_minus_utc(t) == 37.0
    assert astro.tai_minus_utc(parse_epoch("2016-06-01T00:00:00")) == 36.0
    ref = float(Time("2026-11-21T20:00:00", scale="utc").delta_ut1_utc)
    assert astro.ut1_minus_utc(t) == pytest.approx(ref, abs=1e-9)
    assert abs(ref) < 0.9


def test_fast_sidereal_clock_within_a_millisecond():
    clock = astro.SiderealClock(LOC)
    t0 = parse_epoch("2026-11-21T18:00:00")
    ts = t0 + np.linspace(0, 6 * 3600, 37)
    fast = np.array([clock(t) for t in ts])
    exact = astro.lst_deg(ts, LOC)
    err_s = np.abs((fast - exact + 180) % 360 - 180) * 240.0  # deg -> seconds of time
    assert err_s.max() < 1e-3


def test_hadec_azel_roundtrip_and_against_astropy():
    rng = np.random.default_rng(3)
    ha = rng.uniform(-90, 90, 50)
    dec = rng.uniform(-85, 60, 50)
    az, el = astro.hadec_to_azel(ha, dec, SITE.latitude_deg)
    ha2, dec2 = astro.azel_to_hadec(az, el, SITE.latitude_deg)
    assert np.allclose(ha2, ha, atol=1e-9) and np.allclose(dec2, dec, atol=1e-9)
    # geometric transform agrees with astropy's AltAz of the apparent place to < 0.01 deg
    t = parse_epoch("2026-11-21T22:00:00")
    c = SkyCoord(83.6 * u.deg, 22.0 * u.deg)
    h, d = astro.apparent_hadec(c, t, LOC)
    a, e = astro.hadec_to_azel(h, d, SITE.latitude_deg)
    ref = c.transform_to(AltAz(obstime=astro.to_time(t), location=LOC.earth, pressure=0 * u.hPa))
    assert a == pytest.approx(ref.az.deg, abs=0.01)
    assert e == pytest.approx(ref.alt.deg, abs=0.01)


def test_refraction_magnitude_and_monotonic():
    r = astro.refraction_deg(np.array([5.0, 10.0, 20.0, 45.0, 89.0]), 15.0, 850.0, 50.0)
    assert np.all(np.diff(r) < 0)
    assert 0.1 < r[0] < 0.3  # several arcmin near the horizon
    assert r[-1] < 0.001
    assert astro.refraction_deg(10.0, humidity_pct=90.0) > astro.refraction_deg(10.0, humidity_pct=10.0)


def test_lsr_correction_sign_and_size():
    t = parse_epoch("2026-06-01T00:00:00")
    apex = SkyCoord("18h03m50.29s", "+30d00m16.8s")
    anti = SkyCoord("06h03m50.29s", "-30d00m16.8s")
    vb1, lsr1 = astro.velocity_corrections_kms(apex, t, LOC)
    vb2, lsr2 = astro.velocity_corrections_kms(anti, t, LOC)
    assert lsr1 - vb1 == pytest.approx(20.0, abs=1e-6)
    assert lsr2 - vb2 == pytest.approx(-20.0, abs=1e-6)
    assert abs(vb1) < 31.0
    # a line at the source's LSR velocity: observed frequency shifts by v/c
    f = astro.topocentric_freq_mhz(1420.405751768, 0.0, 0.0)
    assert f == pytest.approx(1420.405751768)
    assert astro.topocentric_freq_mhz(1000.0, 10.0, 0.0) < 1000.0


def test_sky_model_calibrator_and_atmosphere():
    sky = SkyModel(SITE)
    rx = SITE.receiver("18cm")
    t = parse_epoch("2026-11-22T03:30:00")  # Hydra A near transit
    ha, dec = sky.apparent_hadec("HydraA", t)
    assert abs(ha) < 20
    on = sky.system_temperature(np.array([ha]), np.array([dec]), np.array([t]), rx, Weather())
    fwhm = SITE.beam_fwhm_deg(rx.freq_mhz)
    off = sky.system_temperature(np.array([ha]), np.array([dec + 3 * fwhm]), np.array([t]), rx, Weather())
    tau = tau_zenith(rx, Weather())
    _, trans = atmosphere(on["elevation"], tau, SITE.simulation.t_atm_k)
    expected = rx.gain_k_per_jy * 43.0 * (rx.freq_mhz / 1400.0) ** -0.91 * trans[0]
    assert on["source"][0] - off["source"][0] == pytest.approx(expected, rel=0.01)
    assert on["total"][0] - off["total"][0] == pytest.approx(expected, rel=0.05)  # off is slightly lower
    # through the subreflector: defocus scales only the source; a beam shift of half the FWHM along HA (true
    # angle) leaves half the source, and pointing the dish back by the same amount recovers it
    optics = BeamOptics(gain=0.6, dx_deg=0.5 * fwhm, dy_deg=0.0)
    through = sky.system_temperature(np.array([ha]), np.array([dec]), np.array([t]), rx, Weather(),
                                     optics=BeamOptics(gain=0.6))
    assert through["source"][0] == pytest.approx(0.6 * on["source"][0], rel=1e-9)
    assert through["atmosphere"][0] == pytest.approx(on["atmosphere"][0], rel=1e-9)
    shifted = sky.system_temperature(np.array([ha]), np.array([dec]), np.array([t]), rx, Weather(), optics=optics)
    assert shifted["source"][0] == pytest.approx(0.6 * 0.5 * on["source"][0], rel=0.02)  # a point-like source
    back = ha - 0.5 * fwhm / np.cos(np.radians(dec))
    assert sky.system_temperature(np.array([back]), np.array([dec]), np.array([t]), rx, Weather(),
                                  optics=optics)["source"][0] == pytest.approx(0.6 * on["source"][0], rel=1e-3)
    # the catalog's pulsars and masers in the beam, through the same optics
    t_vela = parse_epoch("2026-11-22T03:00:00")
    vh, vd = sky.apparent_hadec("J0835-4510", t_vela)
    w_on = dict((s.name, w) for s, w in sky.sources_in_beam(vh, vd, t_vela, rx.freq_mhz, "pulsar"))
    w_opt = dict((s.name, w) for s, w in sky.sources_in_beam(vh, vd, t_vela, rx.freq_mhz, "pulsar", optics=optics))
    assert w_on["J0835-4510"] > 0.99 and w_opt["J0835-4510"] == pytest.approx(0.6 * 0.5 * w_on["J0835-4510"],
                                                                             rel=0.02)
    # the atmosphere rises as 1/sin(el)
    els = np.array([90.0, 60.0, 30.0, 20.0])
    emission, _ = atmosphere(els, tau, 270.0)
    airmass = 1 / np.sin(np.radians(els))
    slope = np.polyfit(airmass, emission, 1)[0]
    assert slope == pytest.approx(270.0 * tau, rel=0.02)
