"""COR IOC: maser lines at the right Doppler-shifted frequency, ACF/spectrum relation, Van Vleck correction,
sampler levels, rejected inputs.

Real IOC subprocesses (DRV, NDI, WX, COR) over Channel Access.  Expected values come from astropy and
scipy directly (LSR correction from the B1900 standard solar motion, the 3-level correlation from the
bivariate normal distribution), not from the IOC's code.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import FK4, EarthLocation, SkyCoord
from astropy.time import Time
from scipy.optimize import brentq
from scipy.special import erfc, erfcinv
from scipy.stats import multivariate_normal

from obsctl import astro  # noqa: F401  (configures astropy for offline IERS before any Time is used)
from obsctl.catalog import load_catalog
from obsctl.clock import ObservatoryClock
from tests.conftest import wait_for
from tests.helpers import get, put, put_rejected

C_KMS = 299_792.458
MASER = "G9.62+0.20"
EPOCH = "2026-07-01T19:30:00"  # G9.62+0.20 transits near the zenith at 21:40 UTC; the sun is far away
ORION_EPOCH = "2026-11-21T22:00:00"  # OrionKL transits at 23:40 UTC, 69 deg up


def _sts(name: str) -> str:
    return get(name, as_string=True)


def _clock(obs) -> ObservatoryClock:
    return ObservatoryClock.from_env({"OBSCTL_CLOCK": obs.state.clock})


def _lsr_correction_kms(coord: SkyCoord, t: float, site) -> float:
    """Barycentric correction (astropy) + projection of the standard solar motion (20 km/s to 18h +30 B1900)."""
    loc = EarthLocation.from_geodetic(site.longitude_deg * u.deg, site.latitude_deg * u.deg, site.height_m * u.m)
    vb = coord.radial_velocity_correction(kind="barycentric", obstime=Time(t, format="unix"), location=loc)
    apex = SkyCoord(ra=270 * u.deg, dec=30 * u.deg, frame=FK4(equinox="B1900")).icrs
    return float(vb.to_value(u.km / u.s)) + 20.0 * math.cos(coord.separation(apex).rad)


def _integrate(c, timeout: float = 30.0) -> dict:
    done = get(c("INT_DONE_RBV"))
    put(c("START_CMD"), "START")
    assert _sts(c("STATE_STS")) == "INTEGRATING"
    wait_for(lambda: _sts(c("DATA_RDY_STS")) == "YES", timeout, what="DATA_RDY_STS == YES")
    assert get(c("INT_DONE_RBV")) == done + 1 and _sts(c("STATE_STS")) == "READY"
    out = {k: np.asarray(get(c(k))) for k in ("ACF_RAW", "ACF", "SPECTRUM", "FREQ_AXIS", "VEL_AXIS")}
    for k in ("TSYS_RBV", "NSAMP_RBV", "VLSR_CORR_RBV", "TIME_RBV", "NSEC_RBV", "LEVEL1_RBV", "LEVEL2_RBV"):
        out[k] = get(c(k))
    return out


def _three_level(rho: float, v: float) -> float:
    """<x y> of 3-level quantised unit Gaussians with correlation rho: 2 [P(x>v,y>v) - P(x>v,y<-v)]."""
    mvn = multivariate_normal(mean=[0.0, 0.0], cov=[[1.0, rho], [rho, 1.0]])
    both = mvn.cdf([-v, -v])                              # = P(x > v, y > v) by symmetry
    cross = 0.5 * erfc(v / math.sqrt(2)) - mvn.cdf([-v, v])  # P(x < -v, y > v)
    return 2.0 * (both - cross)


def _hann_spectrum(acf: np.ndarray) -> np.ndarray:
    n = len(acf)
    a = acf * 0.5 * (1 + np.cos(np.pi * np.arange(n) / n))
    sym = np.concatenate([a, [0.0], a[:0:-1]])
    return np.fft.fft(sym).real[:n]


def _diff_rms(x: np.ndarray) -> float:
    """Channel noise from channel-to-channel differences (for independent channels: UNIFORM window)."""
    d = np.diff(x) / math.sqrt(2)
    return float(1.4826 * np.median(np.abs(d - np.median(d))))


def _observe_maser(obs, name: str, rx_name: str, bw: str, offset_mhz: float) -> tuple[dict, int]:
    """Track a catalog maser, tune so its line is ``offset_mhz`` below the band centre, integrate 60 s and
    check the line against astropy; returns the data and the line's channel."""
    c = lambda s: obs.pv("COR", s)  # noqa: E731
    d = lambda s: obs.pv("DRV", s)  # noqa: E731
    wait_for(lambda: _sts(c("DRV_LINK_STS")) == "OK" and _sts(c("NDI_LINK_STS")) == "OK", 30, what="COR links")
    put(obs.pv("NDI", "RX_SEL_SP"), rx_name)
    wait_for(lambda: get(c("RX_RBV")) == rx_name, 10, what=f"COR sees the {rx_name} receiver")
    put(d("WATCHDOG_ENA_SP"), "DISABLED")  # no heartbeat client in this test
    put(d("TRACK_NAME_SP"), name)
    put(d("MODE_CMD"), "TRACK")
    wait_for(lambda: _sts(d("SETTLED_STS")) == "YES", 30, what=f"drive settled on {name}")

    cat = load_catalog()
    src = cat.get(name)
    rest = cat.line_rest_mhz(src.line)
    f_sky = rest * (1 - (src.vlsr_kms - _lsr_correction_kms(src.coord, _clock(obs).now(), obs.site)) / C_KMS)
    put(c("FREQ_SP"), round(f_sky + offset_mhz, 4))  # line off the band centre
    put(c("BW_SP"), bw)
    put(c("NCHAN_SP"), "1024")
    put(c("INT_TIME_SP"), 60.0)
    on = _integrate(c)

    # LSR correction of the pointing at mid-integration, against astropy
    vcorr = _lsr_correction_kms(src.coord, on["TIME_RBV"], obs.site)
    assert abs(on["VLSR_CORR_RBV"] - vcorr) < 0.01
    assert get(c("REST_RBV")) == pytest.approx(rest) and get(c("LINE_RBV")) == src.line

    # the line: peak channel refined by a parabola, on the velocity and on the frequency axis
    spec, vel, freq = on["SPECTRUM"], on["VEL_AXIS"], on["FREQ_AXIS"]
    chan = float(bw) / 1024
    i = int(np.argmax(spec))
    frac = 0.5 * (spec[i - 1] - spec[i + 1]) / (spec[i - 1] - 2 * spec[i] + spec[i + 1])
    dv = abs(vel[1] - vel[0])
    v_peak = vel[i] + frac * (vel[i + 1] - vel[i])
    f_peak = freq[i] + frac * (freq[i + 1] - freq[i])
    f_expect = rest * (1 - (src.vlsr_kms - vcorr) / C_KMS)
    assert abs(v_peak - src.vlsr_kms) < dv, f"line at {v_peak:.3f} km/s, catalog {src.vlsr_kms}"
    assert abs(f_peak - f_expect) < chan, f"line at {f_peak:.6f} MHz, expected {f_expect:.6f}"
    assert freq[1] - freq[0] == pytest.approx(chan) and freq[512] == pytest.approx(get(c("FREQ_SP")))
    # line temperature ~ peak flux x gain x atmosphere (opacity taken twice the standard: wet weather);
    # Hann smoothing ~2 %, the bandpass normalisation (spectrum mean = Tsys) +4 %, the drive's pointing
    # error (beam response 0.5..1 at 22 GHz)
    rx = obs.site.receiver(rx_name)
    el = 90 - abs(src.dec_deg - obs.site.latitude_deg) - 25  # at least (well within 2 h of transit)
    gain = src.peak_jy * rx.gain_k_per_jy * math.exp(-2 * rx.zenith_tau / math.sin(math.radians(el)))
    quiet = np.r_[100:i - 60, i + 60:924]
    base, noise = float(np.median(spec[quiet])), float(np.std(spec[quiet]))
    low = 0.75 if rx.freq_mhz < 10_000 else 0.4
    assert low < (spec[i] - base) / gain < 1.2
    print(f"COR {name} {rx_name}: line {v_peak:.3f} km/s (catalog {src.vlsr_kms}, channel {dv:.4f} km/s), f "
          f"{f_peak:.6f} MHz (astropy {f_expect:.6f}), vcorr {on['VLSR_CORR_RBV']:.4f} (astropy {vcorr:.4f}), "
          f"peak {spec[i] - base:.1f} K, Tsys {on['TSYS_RBV']:.2f} K, rms {noise:.3f} K")
    return on, i


def test_maser_line_doppler_acf_and_van_vleck(observatory):
    obs = observatory(["DRV", "NDI", "WX", "COR"], speed=120, epoch=EPOCH)
    c = lambda s: obs.pv("COR", s)  # noqa: E731
    d = lambda s: obs.pv("DRV", s)  # noqa: E731
    on, i = _observe_maser(obs, MASER, "6cm", "1", 0.13)
    spec = on["SPECTRUM"]
    f_sky = float(on["FREQ_AXIS"][i])

    # SPECTRUM is TSYS x the Hann-windowed cosine transform of ACF
    assert np.allclose(spec, on["TSYS_RBV"] * _hann_spectrum(on["ACF"]), rtol=1e-9, atol=1e-9)

    # Van Vleck: ACF from ACF_RAW by an independent inversion of the 3-level correlation
    raw, n = on["ACF_RAW"], on["NSAMP_RBV"]
    p = raw[0] / n
    v = math.sqrt(2) * erfcinv(p)
    assert abs(p - on["LEVEL1_RBV"]) < 1e-3
    lags = sorted(set(np.argsort(-np.abs(raw[1:]))[:12] + 1) | {1, 2, 3, 7, 100, 500, 1023})
    for k in lags:
        rho = brentq(lambda x, k=k: _three_level(x, v) - raw[k] / n, -0.999999, 0.999999, xtol=1e-12)
        assert abs(on["ACF"][k] - rho) < 2e-6, f"lag {k}: ACF {on['ACF'][k]} vs Van Vleck {rho}"
    k = lags[0] if abs(on["ACF"][lags[0]]) > 0.01 else int(np.argmax(np.abs(on["ACF"][1:]))) + 1
    assert abs(on["ACF"][k] / (raw[k] / raw[0]) - 1) > 0.05  # the correction matters: not just raw / raw0

    # five beams south the maser is gone
    fwhm = math.degrees(1.2 * C_KMS * 1e3 / (f_sky * 1e6) / obs.site.dish_diameter_m)
    put(d("OFF_DEC_SP"), -5 * fwhm)
    wait_for(lambda: abs(get(d("OFF_DEC_RBV")) + 5 * fwhm) < 1e-6, 10, what="offset applied")
    wait_for(lambda: _sts(d("SETTLED_STS")) == "YES", 30, what="settled off source")
    off = _integrate(c)
    s_off = off["SPECTRUM"][100:924]  # flat part of the band
    rms, med = float(np.std(s_off)), float(np.median(s_off))
    at_line = off["SPECTRUM"][i - 10:i + 11]
    assert np.max(np.abs(at_line - med)) < 5 * rms, "a line is still seen five beams off"
    assert s_off.max() - med < 5.5 * rms
    print(f"COR off source: rms {rms:.3f} K, at the line channel {(at_line.max() - med) / rms:.1f} sigma, "
          f"band max {(s_off.max() - med) / rms:.1f} sigma")


def test_attenuators_quadrants_and_bad_inputs(observatory):
    obs = observatory(["NDI", "COR"], speed=120, epoch=EPOCH)
    c = lambda s: obs.pv("COR", s)  # noqa: E731
    wait_for(lambda: _sts(c("NDI_LINK_STS")) == "OK", 30, what="COR link to NDI")
    assert get(c("RX_RBV")) == "18cm"

    # rejected inputs keep the old value
    put(c("FREQ_SP"), 1612.231)
    put(c("INT_TIME_SP"), 20.0)
    assert put_rejected(c("FREQ_SP"), 2270.0)
    assert "outside 18cm" in get(c("MSG_RBV"))
    for pv, bad, old in (("FREQ_SP", 5000.0, 1612.231), ("FREQ_SP", float("nan"), 1612.231),
                         ("FREQ_SP", 1299.0, 1612.231), ("INT_TIME_SP", -1.0, 20.0),
                         ("INT_TIME_SP", float("nan"), 20.0), ("INT_TIME_SP", 0.0, 20.0),
                         ("ATT1_SP", 12.3, 12.0), ("ATT1_SP", 32.0, 12.0), ("ATT2_SP", -0.5, 12.0),
                         ("REST_SP", -5.0, 0.0)):
        assert put_rejected(c(pv), bad), f"{pv} accepted {bad!r}"
        assert get(c(pv)) == pytest.approx(old), f"{pv} changed after a rejected put"
    for pv, bad, old in (("BW_SP", "3", "1"), ("BW_SP", 9, "1"), ("NCHAN_SP", "4096", "1024"),
                         ("QUAD_SP", "8x256", "1x2048"), ("WINDOW_SP", "KAISER", "HANN")):
        assert put_rejected(c(pv), bad), f"{pv} accepted {bad!r}"
        assert _sts(c(pv)) == old

    # sampler levels follow the attenuators: threshold ~ 10^(att/20), level = erfc(v / sqrt 2)
    levels = {}
    for att in (12.0, 20.0, 0.0, 31.5):
        put(c("ATT1_SP"), att)
        levels[att] = get(c("LEVEL1_RBV"))
    thr = {a: math.sqrt(2) * erfcinv(p) for a, p in levels.items()}
    assert thr[20.0] / thr[12.0] == pytest.approx(10 ** (8 / 20), rel=0.01)
    assert thr[12.0] / thr[0.0] == pytest.approx(10 ** (12 / 20), rel=0.01)
    assert 0.4 < levels[12.0] < 0.68 and levels[0.0] > 0.8 and levels[31.5] < 0.01
    assert _sts(c("LEVEL_STS")) == "UNDER-DRIVEN"
    put(c("ATT1_SP"), 0.0)
    assert _sts(c("LEVEL_STS")) == "CLIPPING" and get(c("LEVEL1_RBV.SEVR")) == 2
    put(c("ATT1_SP"), 12.0)
    assert _sts(c("LEVEL_STS")) == "OK" and get(c("LEVEL1_RBV.SEVR")) == 0

    # an under-driven sampler shows in the raw counts and costs sensitivity as the 3-level theory says
    put(c("WINDOW_SP"), "UNIFORM")  # independent channels
    rms, eff = {}, {}
    for att in (12.0, 24.0):
        put(c("ATT1_SP"), att)
        data = _integrate(c)
        p = data["ACF_RAW"][0] / data["NSAMP_RBV"]
        assert p == pytest.approx(data["LEVEL1_RBV"], abs=1e-3)
        v = math.sqrt(2) * erfcinv(p)
        eff[att] = 2 * math.exp(-v * v) / (math.pi * p)
        rms[att] = _diff_rms(data["SPECTRUM"][100:924]) / data["TSYS_RBV"]
    ratio = rms[24.0] / rms[12.0]
    assert ratio == pytest.approx(eff[12.0] / eff[24.0], rel=0.15)
    bw_hz, t_int = 1e6, 20.0
    assert rms[12.0] == pytest.approx(1 / (eff[12.0] * math.sqrt(bw_hz / 1024 * t_int)), rel=0.15)
    print(f"COR levels {levels}; rms/Tsys {rms[12.0]:.5f} at 12 dB, ratio 24/12 dB {ratio:.2f} "
          f"(theory {eff[12.0] / eff[24.0]:.2f})")
    put(c("ATT1_SP"), 12.0)

    # quadrants: 4x512 halves the lags per section and covers two adjacent bands in two polarisations
    assert put_rejected(c("NCHAN_SP"), "2048") is None
    put(c("QUAD_SP"), "4x512 2band dual pol")
    assert _sts(c("NCHAN_SP")) == "512"
    assert put_rejected(c("NCHAN_SP"), "1024"), "1024 lags accepted in 4x512"
    put(c("START_CMD"), "START")
    assert put_rejected(c("START_CMD"), "START"), "START accepted while integrating"
    assert put_rejected(c("BW_SP"), "2"), "BW_SP changed while integrating"
    wait_for(lambda: _sts(c("DATA_RDY_STS")) == "YES" and get(c("NSEC_RBV")) == 4
             and len(get(c("FREQ_AXIS"))) == 2048, 30, what="4x512 data")
    f = np.asarray(get(c("FREQ_AXIS")))
    assert get(c("NSEC_RBV")) == 4 and len(f) == 2048 and len(get(c("SPECTRUM"))) == 2048
    assert np.allclose(f[:512], f[512:1024]) and np.allclose(f[1024:1536], f[1536:])
    assert f[1024] - f[511] == pytest.approx(1.0 / 512) and f[1024] == pytest.approx(1612.231)

    # RESET aborts; an out-of-band FREQ_SP after a receiver change refuses START
    put(c("INT_TIME_SP"), 600.0)
    put(c("START_CMD"), "START")
    put(c("RESET_CMD"), "RESET")
    assert _sts(c("STATE_STS")) == "IDLE" and _sts(c("DATA_RDY_STS")) == "NO"
    put(obs.pv("NDI", "RX_SEL_SP"), "6cm")
    wait_for(lambda: get(c("RX_RBV")) == "6cm", 10, what="COR sees the 6cm receiver")
    assert put_rejected(c("START_CMD"), "START"), "START accepted with FREQ_SP outside the 6cm band"
    time.sleep(0.2)
    assert _sts(c("STATE_STS")) == "IDLE"


@pytest.mark.slow
def test_water_maser_orion_kl_through_the_subreflector(observatory):
    """The 22 GHz line of Orion KL at its catalog velocity with the subreflector at its best focus; 10 mm out of
    focus the line drops by SUB:GAIN_FACTOR_RBV, and the system temperature by a little (the source's
    continuum goes through the same optics; the receiver and the atmosphere do not)."""
    obs = observatory(["DRV", "NDI", "WX", "COR", "SUB"], speed=120, epoch=ORION_EPOCH)
    sub = lambda sig: obs.pv("SUB", sig)  # noqa: E731
    best = float(obs.site.instrument("SUB").options["best_focus_mm"])

    def focus(mm: float) -> None:
        put(sub("FOCUS_SP"), mm)
        wait_for(lambda: _sts(sub("STATE_STS")) == "IN_POSITION" and abs(get(sub("FOCUS_RBV")) - mm) < 0.05, 30,
                 what=f"SUB focus at {mm} mm")
        time.sleep(0.2)  # the newest gain factor reaches COR

    focus(best)
    on, i = _observe_maser(obs, "OrionKL", "1.3cm", "2", -0.31)
    focus(best + 10.0)
    gain = get(sub("GAIN_FACTOR_RBV"))
    out = _integrate(lambda s: obs.pv("COR", s))
    quiet = np.r_[100:i - 60, i + 60:924]
    line = [float(d["SPECTRUM"][i] - np.median(d["SPECTRUM"][quiet])) for d in (on, out)]
    print(f"focus +10 mm: line x{line[1] / line[0]:.3f}, gain factor {gain:.3f}; Tsys {on['TSYS_RBV']:.2f} -> "
          f"{out['TSYS_RBV']:.2f} K")
    assert gain < 0.8 and line[1] / line[0] == pytest.approx(gain, abs=0.05)
    assert 0.9 * on["TSYS_RBV"] < out["TSYS_RBV"] < on["TSYS_RBV"]
