"""PSR IOC: Vela folded at its apparent period, SETUP TIME, TOAs, period errors smearing the pulse, self-tests
and rejected inputs.

Real IOC subprocesses (DRV, NDI, WX, PSR) over Channel Access.  The apparent period and the pulse phase
are computed here with astropy from the catalog ephemeris (spin-down, barycentric light travel time,
Doppler, dispersion delay), not with the IOC's code.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import epics
import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import EarthLocation
from astropy.time import Time

from obsctl import astro  # noqa: F401  (configures astropy for offline IERS before any Time is used)
from obsctl.catalog import load_catalog
from obsctl.clock import ObservatoryClock
from tests.conftest import wait_for
from tests.helpers import get, put, put_rejected

VELA = "J0835-4510"
EPOCH = "2026-11-21T00:30:00"  # Vela transits at 02:40 UTC, 70 deg up; the sun is 100 deg away
SPEED = 600
C_KMS = 299_792.458


def _sts(name: str) -> str:
    return get(name, as_string=True)


def _clock(obs) -> ObservatoryClock:
    return ObservatoryClock.from_env({"OBSCTL_CLOCK": obs.state.clock})


def _location(site) -> EarthLocation:
    return EarthLocation.from_geodetic(site.longitude_deg * u.deg, site.latitude_deg * u.deg, site.height_m * u.m)


def _apparent_period(src, t: float, site) -> float:
    vb = src.coord.radial_velocity_correction(kind="barycentric", obstime=Time(t, format="unix"),
                                              location=_location(site)).to_value(u.km / u.s)
    p_bary = src.period_s + src.pdot * (t / 86400.0 + 40587.0 - src.epoch_mjd) * 86400.0
    return p_bary / (1.0 + vb / C_KMS)


def _phase_frac(src, mjd_utc: float, f_mhz: float, site) -> float:
    """Pulse phase (turns, -0.5..0.5) at a topocentric UTC instant: phase 0 = pulse peak."""
    t = Time(mjd_utc, format="mjd", scale="utc", location=_location(site))
    tb = t.tdb + t.light_travel_time(src.coord, kind="barycentric")
    dt = (tb - Time(src.epoch_mjd, format="mjd", scale="tdb")).to_value(u.s) - 4148.808 * src.dm / f_mhz**2
    phi = math.log1p(src.pdot * dt / src.period_s) / src.pdot
    return (phi + 0.5) % 1.0 - 0.5


def _start_tracking(obs):
    p, d = (lambda s: obs.pv("PSR", s)), (lambda s: obs.pv("DRV", s))
    wait_for(lambda: _sts(p("DRV_LINK_STS")) == "OK" and _sts(p("NDI_LINK_STS")) == "OK", 30, what="PSR links")
    put(d("WATCHDOG_ENA_SP"), "DISABLED")  # no heartbeat client in these tests
    put(d("TRACK_NAME_SP"), VELA)
    put(d("MODE_CMD"), "TRACK")
    wait_for(lambda: _sts(d("SETTLED_STS")) == "YES", 30, what="drive settled on Vela")
    return p


def _sample(p, timeout: float = 30.0) -> dict:
    put(p("CMD"), "SAMPLE")
    assert _sts(p("STATE_STS")) == "SAMPLING"
    return _finish(p, timeout)


def _finish(p, timeout: float = 30.0) -> dict:
    wait_for(lambda: _sts(p("STATE_STS")) == "DONE", timeout, what="STATE_STS == DONE")
    put(p("CMD"), "OUTPUT_DATA")
    out = {k: get(p(k)) for k in ("SNR_RBV", "PHASE_RBV", "WIDTH_RBV", "TOA_RBV", "PERIOD_RBV", "NPULSE_RBV",
                                  "TSTART_RBV", "TSYS_RBV")}
    out["PROFILE"] = np.asarray(get(p("PROFILE")))
    out["RAW"] = np.asarray(get(p("PROFILE_RAW")))
    return out


def _snr(profile: np.ndarray) -> tuple[float, float, float]:
    """(S/N, off-pulse mean, off-pulse rms) with the off-pulse region > 0.15 turns from the peak."""
    n = len(profile)
    dist = (np.arange(n) - int(np.argmax(profile)) + n / 2) % n - n / 2
    off = profile[np.abs(dist) > 0.15 * n]
    return float((profile.max() - off.mean()) / off.std()), float(off.mean()), float(off.std())


def test_vela_setup_time_profile_period_and_toa(observatory):
    obs = observatory(["DRV", "NDI", "WX", "PSR"], speed=SPEED, epoch=EPOCH)
    p = _start_tracking(obs)
    clock, site = _clock(obs), obs.site
    src = load_catalog().get(VELA)
    assert _sts(p("CLOCK_STS")) == "UNSET" and get(p("RX_RBV")) == "18cm"
    put(p("PSR_NAME_SP"), "j0835-4510")
    assert get(p("PSR_NAME_SP")) == VELA
    put(p("TAU_SP"), 0.1)
    assert get(p("TAU_RBV")) == pytest.approx(1.0)  # not applied before SETUP_TAU
    put(p("CMD"), "SETUP_TAU")
    assert get(p("TAU_RBV")) == pytest.approx(0.1)
    nbins, t_int = 256, 120.0
    put(p("NBINS_SP"), nbins)
    put(p("INT_TIME_SP"), t_int)

    # SETUP TIME: wait (WAITING) until the start time, set the clock, then fold from exactly then
    start = math.ceil(clock.now()) + 900.0
    put(p("START_SP"), datetime.fromtimestamp(start, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    put(p("CMD"), "SETUP_TIME")
    waiting_seen, first_sampling = [], None
    while first_sampling is None:
        before = clock.now()
        state = _sts(p("STATE_STS"))
        after = clock.now()
        if state == "WAITING":
            assert before <= start + 0.2 * SPEED, "still WAITING well after the start time"
            waiting_seen.append(after)
        elif state in ("SAMPLING", "DONE"):
            first_sampling = before
        assert after < start + 60 * SPEED, "SETUP_TIME never started"
    assert waiting_seen and min(waiting_seen) < start - 300, "SETUP_TIME did not wait"
    assert first_sampling >= start, "sampling began before the start time"
    r = _finish(p)
    assert r["TSTART_RBV"] == pytest.approx(start / 86400.0 + 40587.0, abs=2e-9)  # 0.2 ms
    assert _sts(p("CLOCK_STS")) == "SET"

    # the folding period: spun down to the date and Doppler shifted (astropy), at mid-integration
    t_mid = start + 0.5 * t_int
    p_app = _apparent_period(src, t_mid, site)
    assert r["PERIOD_RBV"] == pytest.approx(p_app, rel=2e-9)
    assert r["NPULSE_RBV"] == int(t_int / p_app)

    # profile: S/N, noise by the radiometer equation (with the RC filter), width ~ duty x P, mean flux
    prof, rx = r["PROFILE"], site.receiver("18cm")
    assert len(prof) == nbins
    snr, base, rms = _snr(prof)
    assert snr > 10 and r["SNR_RBV"] == pytest.approx(snr, rel=0.1)
    tau_turns = 0.1e-3 / p_app
    k = np.fft.fftfreq(nbins, 1.0 / nbins)
    rc_power = float(np.mean(1.0 / (1.0 + (2 * np.pi * k * tau_turns) ** 2)))
    expect_rms = r["TSYS_RBV"] / math.sqrt(rx.bandwidth_mhz * 1e6 * t_int / nbins) * math.sqrt(rc_power)
    assert rms == pytest.approx(expect_rms, rel=0.15)
    width_ms = r["WIDTH_RBV"]
    assert width_ms == pytest.approx(1e3 * src.duty * p_app, rel=0.25)
    mean_k = float(np.sum(prof - base)) / nbins
    expect_k = rx.gain_k_per_jy * src.s_1400_jy * (rx.freq_mhz / 1400.0) ** src.alpha
    assert 0.7 < mean_k / expect_k < 1.1  # beam (pointing error) and atmosphere losses only
    raw = r["RAW"]
    assert np.all(np.diff(raw[np.argsort(prof)]) >= 0)  # raw counts are the calibrated profile's ADC sums

    # TOA: the pulse phase there (astropy, catalog ephemeris, dispersion delay at 1666 MHz) is ~0
    frac = _phase_frac(src, r["TOA_RBV"], rx.freq_mhz, site)
    assert abs(frac) < 0.01, f"TOA is {frac:.4f} turns from a pulse peak"
    assert abs((r["TOA_RBV"] - 40587.0) * 86400.0 - t_mid) <= 0.5 * p_app + 1e-4
    print(f"PSR 18cm: S/N {snr:.1f} (IOC {r['SNR_RBV']:.1f}), rms {rms * 1e3:.2f} mK (theory "
          f"{expect_rms * 1e3:.2f}), FWHM {width_ms:.3f} ms (duty x P {1e3 * src.duty * p_app:.3f}), mean "
          f"{mean_k * 1e3:.1f} mK (flux x gain {expect_k * 1e3:.1f}), P {r['PERIOD_RBV']:.12f} s, TOA phase "
          f"{frac:+.5f} turns")

    # PRINT TIME after SETUP TIME shows UTC
    before = clock.now()
    put(p("CMD"), "PRINT_TIME")
    after = clock.now()
    shown = datetime.strptime(get(p("TIME_RBV")), "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC).timestamp()
    assert before - 1e-3 <= shown <= after + 1e-3
    put(p("CMD"), "GRAPH_DATA")
    graph = np.asarray(get(p("GRAPH")))
    assert graph.max() == 255 and graph.min() == 0 and int(np.argmax(graph)) == int(np.argmax(prof))

    # 13 cm: a fresh SAMPLE, the TOA again on a pulse peak (the timer clock stays set)
    put(obs.pv("NDI", "RX_SEL_SP"), "13cm")
    wait_for(lambda: get(p("RX_RBV")) == "13cm", 10, what="PSR sees the 13cm receiver")
    r13 = _sample(p)
    snr13 = _snr(r13["PROFILE"])[0]
    frac13 = _phase_frac(src, r13["TOA_RBV"], site.receiver("13cm").freq_mhz, site)
    assert snr13 > 10 and abs(frac13) < 0.01
    assert r13["WIDTH_RBV"] == pytest.approx(1e3 * src.duty * r13["PERIOD_RBV"], rel=0.25)
    print(f"PSR 13cm: S/N {snr13:.1f}, FWHM {r13['WIDTH_RBV']:.3f} ms, TOA phase {frac13:+.5f} turns")


def test_period_error_smears_self_tests_and_bad_inputs(observatory):
    obs = observatory(["DRV", "NDI", "WX", "PSR"], speed=SPEED, epoch=EPOCH)
    p = lambda s: obs.pv("PSR", s)  # noqa: E731

    # rejected inputs keep the old value
    for pv, bad, old in (("NBINS_SP", 8, 256), ("NBINS_SP", 5000, 256), ("INT_TIME_SP", -1.0, 60.0),
                         ("INT_TIME_SP", float("nan"), 60.0), ("PERIOD_SP", 0.0, 1.0),
                         ("PERIOD_SP", float("nan"), 1.0), ("TAU_SP", -1.0, 1.0), ("NPULSES_SP", -5, 0)):
        assert put_rejected(p(pv), bad), f"{pv} accepted {bad!r}"
        assert get(p(pv)) == pytest.approx(old)
    for pv, bad in (("PSR_NAME_SP", "J9999+9999"), ("PSR_NAME_SP", "PKS1934-638"), ("START_SP", "tomorrow"),
                    ("CMD", "FOLD"), ("CMD", 42), ("SIM_FAULT_SP", "CPU")):
        assert put_rejected(p(pv), bad), f"{pv} accepted {bad!r}"
    assert get(p("PSR_NAME_SP")) == "" and get(p("START_SP")) == "now"
    assert put_rejected(p("CMD"), "OUTPUT_DATA"), "OUTPUT_DATA accepted without data"
    put(p("START_SP"), "2026-01-01T00:00:00")
    assert put_rejected(p("CMD"), "SETUP_TIME"), "SETUP_TIME accepted a start in the past"
    assert _sts(p("STATE_STS")) == "IDLE"

    # self-tests run over simulated time and pass; an injected fault fails the matching test
    states = ["IDLE", "RUNNING", "PASS", "FAIL"]
    seen: list[str] = []
    monitor = epics.PV(p("TEST_STS"), auto_monitor=True, callback=lambda value=None, **kw: seen.append(states[value]))
    assert monitor.wait_for_connection(5.0)
    for test in ("LED_TEST", "RAM_TEST", "DA_TEST", "INPUT_VIEW", "BUS_TEST"):
        seen.clear()
        put(p("CMD"), test)
        wait_for(lambda: seen[-1:] in (["PASS"], ["FAIL"]), 10, what=f"{test} finished ({seen})")
        assert seen[-2:] == ["RUNNING", "PASS"], f"{test}: {seen} {get(p('TEST_MSG'))}"
    monitor.disconnect()
    assert 0.02 * 4095 < get(p("INPUT_RBV")) < 0.95 * 4095
    put(p("SIM_FAULT_SP"), "RAM")
    put(p("CMD"), "RAM_TEST")
    assert put_rejected(p("CMD"), "SAMPLE"), "SAMPLE accepted during a self-test"
    wait_for(lambda: _sts(p("TEST_STS")) != "RUNNING", 10, what="RAM_TEST finished")
    assert _sts(p("TEST_STS")) == "FAIL" and "RAM" in get(p("TEST_MSG"))
    put(p("SIM_FAULT_SP"), "NONE")

    # a SETUP_TIME a day ahead blocks the timer until a new SETUP_TIME replaces it ("now": start at once)
    put(p("START_SP"), datetime.fromtimestamp(_clock(obs).now() + 86400, tz=UTC).isoformat())
    put(p("CMD"), "SETUP_TIME")
    assert _sts(p("STATE_STS")) == "WAITING"
    assert put_rejected(p("CMD"), "SAMPLE"), "SAMPLE accepted while WAITING"
    put(p("START_SP"), "now")
    put(p("CMD"), "SETUP_TIME")
    wait_for(lambda: _sts(p("STATE_STS")) == "DONE", 10, what="the re-armed SETUP_TIME to sample")

    # a long fold at the right period, then at a period off by 1e-4: the pulse drifts through the bins
    _start_tracking(obs)
    put(p("PSR_NAME_SP"), VELA)
    t_int = 600.0
    put(p("INT_TIME_SP"), t_int)
    good = _sample(p)
    p_app = good["PERIOD_RBV"]
    put(p("PSR_NAME_SP"), "")
    put(p("PERIOD_SP"), p_app * (1 + 1e-4))
    bad = _sample(p)
    assert bad["PERIOD_RBV"] == pytest.approx(p_app * (1 + 1e-4), rel=1e-12)
    snr_good, _, rms_good = _snr(good["PROFILE"])
    prof_bad = bad["PROFILE"]
    snr_bad = float((prof_bad.max() - np.percentile(prof_bad, 5)) / rms_good)  # same noise, smeared pulse
    drift_turns = t_int * (1 / p_app - 1 / bad["PERIOD_RBV"])  # pulses lost over the integration
    assert snr_good > 100 and snr_bad < 0.3 * snr_good and bad["SNR_RBV"] < 0.3 * good["SNR_RBV"]
    assert bad["WIDTH_RBV"] > 0.4 * drift_turns * p_app * 1e3 > 5 * good["WIDTH_RBV"]
    print(f"PSR 600 s: S/N {snr_good:.1f} at the apparent period, {snr_bad:.1f} with P off by 1e-4 (drift "
          f"{drift_turns:.2f} turns, FWHM {bad['WIDTH_RBV']:.1f} ms vs {good['WIDTH_RBV']:.2f} ms)")
