"""Backend observing plans (spectroscopy, pulsar timing) against real IOC subprocesses and a real RunEngine.

Expected values come from independent computations with astropy: the LSR correction (barycentric
correction plus the standard solar motion, 20 km/s towards 18h +30 B1900), the pulsar's apparent period
(spin-down and barycentric Doppler) and its pulse phase at a time of arrival (barycentric light travel time,
dispersion delay), and the catalog line velocities, not from the plans' or the IOCs' code.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import FK4, EarthLocation, SkyCoord
from astropy.time import Time
from bluesky import RunEngine
from bluesky.utils import RunEngineInterrupted

from archiver.fitting import add_profiles, pulse_peak
from devices import registry
from obsctl import astro  # (also configures astropy for offline IERS before any Time is used)
from obsctl.catalog import load_catalog
from plans import ObsMeta
from plans.metadata import LOG_KEYS
from plans.pulsar import pulsar_timing
from plans.spectral import continuum_k, doppler_align, fold_frequency_switched, spectroscopy, switched_spectrum
from tests.conftest import wait_for
from tests.helpers import get

C_KMS = 299_792.458
SPEED = 60
MASER = "G9.62+0.20"
MASER_EPOCH = "2026-07-01T19:30:00"  # G9.62+0.20 rises above 30 deg at 17:15 and transits at 21:40 UTC; night
VELA = "J0835-4510"
VELA_EPOCH = "2026-11-21T00:30:00"  # Vela transits at 02:40 UTC, 70 deg up; the sun is 100 deg away
WATCHDOG_S = 30.0  # real s without a heartbeat before the drive stops: generous, the test machine is shared
META = ObsMeta(project="masers", proposal="P2026-077", pi="C. Spectroscopist", observer="D. Observer",
               obs_number=3, obs_class="ROP")


def _setup(observatory, backend: str, epoch: str):
    obs = observatory(["DRV", "NDI", "WX", backend], speed=SPEED, epoch=epoch)
    site = obs.site
    d = {"drive": registry.drive(site), "instrumentation": registry.instrumentation(site)}
    d["backend"] = registry.correlator(site) if backend == "COR" else registry.pulsar_timer(site)
    d["drive"].watchdog.set(WATCHDOG_S).wait(10)
    wait_for(lambda: d["backend"].drv_link.get() == "OK" and d["backend"].ndi_link.get() == "OK", 30,
             what=f"{backend} links to DRV and NDI")
    RE = RunEngine({}, call_returns_result=True)
    docs: list[tuple[str, dict]] = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    return obs, site, d, RE, docs


def _location(site) -> EarthLocation:
    return EarthLocation.from_geodetic(site.longitude_deg * u.deg, site.latitude_deg * u.deg, site.height_m * u.m)


def _lsr_correction_kms(coord: SkyCoord, t: float, site) -> float:
    vb = coord.radial_velocity_correction(kind="barycentric", obstime=Time(t, format="unix"),
                                          location=_location(site))
    apex = SkyCoord(ra=270 * u.deg, dec=30 * u.deg, frame=FK4(equinox="B1900")).icrs
    return float(vb.to_value(u.km / u.s)) + 20.0 * math.cos(coord.separation(apex).rad)


def _apparent_period(src, t: float, site) -> float:
    vb = src.coord.radial_velocity_correction(kind="barycentric", obstime=Time(t, format="unix"),
                                              location=_location(site)).to_value(u.km / u.s)
    return (src.period_s + src.pdot * (t / 86400.0 + 40587.0 - src.epoch_mjd) * 86400.0) / (1.0 + vb / C_KMS)


def _phase_frac(src, mjd_utc: float, f_mhz: float, site) -> float:
    """Pulse phase (turns, -0.5..0.5) at a topocentric UTC instant: phase 0 = pulse peak."""
    t = Time(mjd_utc, format="mjd", scale="utc", location=_location(site))
    tb = t.tdb + t.light_travel_time(src.coord, kind="barycentric")
    dt = (tb - Time(src.epoch_mjd, format="mjd", scale="tdb")).to_value(u.s) - 4148.808 * src.dm / f_mhz**2
    return (math.log1p(src.pdot * dt / src.period_s) / src.pdot + 0.5) % 1.0 - 0.5


def _stream(docs, name: str) -> list[dict]:
    desc = {d["uid"]: d["name"] for n, d in docs if n == "descriptor"}
    return [d for n, d in docs if n == "event" and desc[d["descriptor"]] == name]


def _stop_doc(docs) -> dict:
    return next(d for n, d in docs if n == "stop")


def _assert_safe(obs) -> None:
    assert get(obs.pv("DRV", "STATE_STS"), as_string=True) == "STOPPED"
    assert int(get(obs.pv("NDI", "ND_SEL_RBV"))) == 0


def _bad_inputs_refused(RE, docs, obs, plans_and_reasons) -> None:
    """Each plan raises a ValueError matching its reason before any document or drive command."""
    target = get(obs.pv("DRV", "TARGET_RBV"), as_string=True)
    state = get(obs.pv("DRV", "STATE_STS"), as_string=True)
    for plan, reason in plans_and_reasons:
        with pytest.raises(ValueError, match=reason):
            RE(plan)
    assert docs == [], "a refused plan emitted documents"
    assert get(obs.pv("DRV", "TARGET_RBV"), as_string=True) == target
    assert get(obs.pv("DRV", "STATE_STS"), as_string=True) == state


def _check_line(res: dict, docs, src, rest: float, site, mode: str, nchan: int) -> None:
    """The line at the catalog velocity within a channel, tuning against astropy, streams as specified."""
    err_ch = (res["line_vlsr_kms"] - src.vlsr_kms) / res["channel_kms"]
    corr = _lsr_correction_kms(src.coord, res["t_mid_planned"], site)
    f_expect = rest * (1 - (src.vlsr_kms - corr) / C_KMS)
    print(f"\n{mode}-switched {src.name}: line {res['line_vlsr_kms']:.4f} +- {res['line_vlsr_err_kms']:.4f} km/s vs "
          f"catalog {src.vlsr_kms} ({err_ch:+.3f} channels of {res['channel_kms']:.4f} km/s), peak "
          f"{res['line_peak_k']:.1f} K, FWHM {res['line_fwhm_kms']:.3f} km/s (catalog {src.width_kms}), rms "
          f"{res['rms_k']:.3f} K, S/N {res['snr']:.0f}; FREQ_SP {res['freq_sp_mhz']:.6f} MHz (astropy "
          f"{f_expect:.6f}), Doppler {res['doppler_kms']:+.4f} km/s (astropy {corr:+.4f}), {res['retaken']} retaken")
    assert abs(err_ch) < 1.0
    assert abs(res["doppler_kms"] - corr) < 0.01 and abs(res["freq_sp_mhz"] - f_expect) < 1e-3 * res["channel_mhz"]
    assert res["line_fwhm_kms"] == pytest.approx(src.width_kms, rel=0.3) and res["snr"] > 20
    assert res["mode"] == mode and res["rest_mhz"] == pytest.approx(rest) and res["vlsr_catalog_kms"] == src.vlsr_kms
    (ach,) = _stream(docs, "achieved")
    assert ach["data"]["achieved_line_vlsr_kms"] == pytest.approx(res["line_vlsr_kms"])
    assert ach["data"]["achieved_mode"] == mode
    (red,) = _stream(docs, "reduced")
    vel, freq, ta = (np.asarray(red["data"][f"reduced_{k}"]) for k in ("vel_kms", "freq_mhz", "ta_k"))
    assert vel.size == freq.size == ta.size == (nchan if mode == "position" else nchan - round(
        res["freq_throw_mhz"] / res["channel_mhz"]))
    # the reduced spectrum peaks at the catalog velocity, at the tuned centre frequency
    i = int(np.argmax(ta))
    assert abs(vel[i] - src.vlsr_kms) < 2 * res["channel_kms"] and abs(freq[i] - res["freq_sp_mhz"]) < 3e-3
    assert np.all(np.diff(freq) > 0) and np.all(np.diff(vel) < 0)
    # calibration: the line height seen in the correlator's own spectra (K, bandpass ~flat near the centre)
    fwhm = site.beam_fwhm_deg(rest)
    on = [e for e in _stream(docs, "primary") if astro.angular_distance(
        e["data"]["correlator_ra"], e["data"]["correlator_dec"], src.ra_deg, src.dec_deg) < 0.25 * fwhm]
    assert len(on) >= (1 if mode == "position" else 2) * res["n_integrations"] // 2
    raw = np.mean([np.max(e["data"]["correlator_spectrum"]) - np.median(e["data"]["correlator_spectrum"])
                   for e in on])
    print(f"  line height in the raw spectra {raw:.1f} K, calibrated peak {res['line_peak_k']:.1f} K")
    assert res["line_peak_k"] == pytest.approx(raw, rel=0.08)
    assert _stop_doc(docs)["exit_status"] == "success"


# ---- reduction steps on synthetic data (no IOCs) ------------------------------------------------------------
def _spectrum(freq, t_cont, line_mhz, peak_k, fwhm_mhz, centre):
    """A correlator-like spectrum (K): (continuum x bandpass + Gaussian line) / mean bandpass (its mean is Tsys)."""
    x = (freq - centre) / (freq[-1] - freq[0])
    band = 1.0 / (1.0 + (x / 0.48) ** 32)
    return (t_cont * band + peak_k * np.exp(-4 * math.log(2) * ((freq - line_mhz) / fwhm_mhz) ** 2)) / band.mean()


def test_switched_calibration_fold_and_alignment_recover_a_strong_line():
    nchan, bw, f_line, peak, fwhm = 1024, 1.0, 6668.7, 500.0, 0.011
    chan = bw / nchan
    shift = 256  # 0.25 MHz throw
    f_lo, f_hi = f_line - shift * chan / 2, f_line + shift * chan / 2
    ax_lo = f_lo - bw / 2 + np.arange(nchan) * chan
    ax_hi = f_hi - bw / 2 + np.arange(nchan) * chan
    a = _spectrum(ax_lo, 60.0, f_line, peak, fwhm, f_lo)
    b = _spectrum(ax_hi, 60.0, f_line, peak, fwhm, f_hi)
    far = [f_line]
    low = switched_spectrum(a, b, continuum_k(b, ax_hi, far, 0.01))
    high = switched_spectrum(b, a, continuum_k(a, ax_lo, far, 0.01))
    folded = fold_frequency_switched(low, high, shift)
    axis = ax_lo[shift:]
    i = int(np.argmax(folded))
    assert abs(axis[i] - f_line) <= chan and folded[i] == pytest.approx(peak, rel=0.01)
    # a reference without the line (position switching) gives the same height
    on, off = _spectrum(ax_lo, 62.0, f_line, peak, fwhm, f_lo), _spectrum(ax_lo, 60.0, f_line, 0.0, fwhm, f_lo)
    ta = switched_spectrum(on, off, continuum_k(off, ax_lo, [], 0.01))
    assert ta.max() == pytest.approx(peak + 2.0, rel=0.01) and np.median(ta) == pytest.approx(2.0, rel=0.02)
    # Doppler alignment: a line taken 0.05 km/s (LSR correction) earlier moves back onto the reference frame
    late = _spectrum(ax_lo, 60.0, f_line - 6668.5 * 0.05 / C_KMS, peak, fwhm, f_lo)
    aligned = doppler_align(late, ax_lo, 6668.5, corr_kms=0.0, corr_ref_kms=0.05)
    assert abs(ax_lo[int(np.argmax(aligned))] - f_line) <= chan / 2
    with pytest.raises(ValueError, match="line-free"):
        continuum_k(off, ax_lo, [f_line], 1.0)


def test_folded_profiles_add_on_a_common_phase_origin():
    nbins, rng = 256, np.random.default_rng(3)
    x = (np.arange(nbins) + 0.5) / nbins
    pulse = lambda c: np.exp(-0.5 * (((x - c + 0.5) % 1.0 - 0.5) / 0.01) ** 2)  # noqa: E731
    starts = [0.0, 0.37, 0.81]  # fold start phases: each fold shows the pulse earlier by its start phase
    profiles = [pulse(0.30 - s) + 0.05 * rng.standard_normal(nbins) for s in starts]
    total = add_profiles(profiles, starts)
    res = pulse_peak(total)
    assert abs(res.peak_phase - 0.30) < 0.5 / nbins and res.snr > pulse_peak(profiles[0]).snr * 1.4
    assert res.fwhm_phase == pytest.approx(0.01 * 2.3548, rel=0.15)
    with pytest.raises(ValueError, match="differ in length"):
        add_profiles([profiles[0], profiles[1][:100]], [0.0, 0.0])


# ---- spectroscopy ------------------------------------------------------------------------------------------
def _when(condition, action, timeout: float = 90.0) -> threading.Thread:
    """A thread that calls ``action()`` once ``condition()`` holds (polled every 20 ms)."""

    def run():
        t0 = time.monotonic()
        while not condition():
            if time.monotonic() - t0 > timeout:
                return
            time.sleep(0.02)
        action()

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


@pytest.mark.slow
def test_spectroscopy_switched_spectra_refusals_and_abort(observatory):
    obs, site, d, RE, docs = _setup(observatory, "COR", MASER_EPOCH)
    drive, cor, ndi = d["drive"], d["backend"], d["instrumentation"]
    cat = load_catalog(site.catalog_path)
    src = cat.get(MASER)
    rest = cat.line_rest_mhz(src.line)

    # (d) bad input: refused before anything moves or any document is written
    _bad_inputs_refused(RE, docs, obs, [
        (spectroscopy(drive, cor, "NoSuchMaser", instrumentation=ndi), "unknown source 'NoSuchMaser'"),
        (spectroscopy(drive, cor, "PictorA", instrumentation=ndi), "PictorA is a calibrator, not a maser"),
        (spectroscopy(drive, cor, MASER, integration_s=-5.0, instrumentation=ndi), "integration_s"),
        (spectroscopy(drive, cor, MASER, mode="beam", instrumentation=ndi), "mode 'beam'"),
        (spectroscopy(drive, cor, MASER, bw_mhz=3.0, instrumentation=ndi), "bw_mhz 3.0"),
        (spectroscopy(drive, cor, MASER, receiver="18cm", instrumentation=ndi), "18cm .* does not cover"),
        (spectroscopy(drive, cor, MASER, mode="frequency", freq_throw_mhz=0.8, instrumentation=ndi),
         "freq_throw_mhz"),
    ])

    # (a) position switched: 20 s on source, 20 s on the reference 3 beams north
    t0 = time.monotonic()
    res = RE(spectroscopy(drive, cor, MASER, mode="position", integration_s=20.0, cycles=1, bw_mhz=1.0,
                          nchan=1024, instrumentation=ndi, meta=META)).plan_result
    t_pos = time.monotonic() - t0
    # (c) the start document carries the observing log, the achieved stream the results
    start = next(doc for n, doc in docs if n == "start")
    for key in LOG_KEYS:
        assert key in start, key
    assert start["plan_name"] == "spectroscopy" and start["source"] == MASER and start["receiver"] == "6cm"
    assert start["pi"] == META.pi and start["obs_class"] == "ROP" and start["freq_mhz"] == pytest.approx(rest)
    assert abs(start["dec_deg"] - src.dec_deg) < 1e-9 and start["requested"]["rest_mhz"] == pytest.approx(rest)
    assert start["plan_args"]["correlator"] == cor.name and start["plan_args"]["mode"] == "position"
    primary = _stream(docs, "primary")
    assert len(primary) == 2 + res["retaken"] and len(primary[0]["data"]["correlator_spectrum"]) == 1024
    assert res["integration_s"] == pytest.approx(20.0) and res["off_deg"] > 0
    _check_line(res, docs, src, rest, site, "position", 1024)
    _assert_safe(obs)
    print(f"  position-switched run: {t_pos:.1f} s real")

    # (e) abort from another thread during an integration: drive stopped, diodes off, run marked aborted
    docs.clear()
    integrating = lambda: cor.state.get() == "INTEGRATING" and any(n == "start" for n, _ in docs)  # noqa: E731
    th = _when(integrating, lambda: RE.abort("test abort: integrating"))
    with pytest.raises(RunEngineInterrupted):
        RE(spectroscopy(drive, cor, MASER, integration_s=120.0, cycles=2, instrumentation=ndi, meta=META))
    th.join(5)
    assert _stop_doc(docs)["exit_status"] == "abort"
    assert _stream(docs, "achieved") == [] and _stream(docs, "primary") == []
    _assert_safe(obs)

    # (a) frequency switched (+-0.125 MHz, both phases on source, folded), paused during its second
    # integration and resumed: the interrupted integration is waited for and taken again
    docs.clear()
    th = _when(lambda: integrating() and len(_stream(docs, "primary")) == 1, RE.request_pause)
    t0 = time.monotonic()
    with pytest.raises(RunEngineInterrupted):
        RE(spectroscopy(drive, cor, MASER, mode="frequency", integration_s=20.0, cycles=1, bw_mhz=1.0,
                        nchan=1024, freq_throw_mhz=0.25, instrumentation=ndi, meta=META))
    th.join(5)
    assert RE.state == "paused"
    out = RE.resume()
    t_freq = time.monotonic() - t0
    assert out.exit_status == "success"
    fres = out.plan_result
    assert fres["freq_high_mhz"] - fres["freq_low_mhz"] == pytest.approx(0.25, abs=1e-9)
    assert fres["integration_s"] == pytest.approx(40.0) and fres["off_deg"] == 0.0 and fres["n_integrations"] == 2
    _check_line(fres, docs, src, rest, site, "frequency", 1024)
    _assert_safe(obs)
    print(f"  frequency-switched run (paused and resumed): {t_freq:.1f} s real")


# ---- pulsar timing -----------------------------------------------------------------------------------------
def test_pulsar_timing_vela(observatory):
    obs, site, d, RE, docs = _setup(observatory, "PSR", VELA_EPOCH)
    drive, psr, ndi = d["drive"], d["backend"], d["instrumentation"]
    src = load_catalog(site.catalog_path).get(VELA)
    rx = site.receivers[0]

    # (d) bad input: refused before anything moves or any document is written
    _bad_inputs_refused(RE, docs, obs, [
        (pulsar_timing(drive, psr, "NoSuchPulsar", instrumentation=ndi), "unknown source 'NoSuchPulsar'"),
        (pulsar_timing(drive, psr, "HydraA", instrumentation=ndi), "HydraA is a calibrator, not a pulsar"),
        (pulsar_timing(drive, psr, "G9.62+0.20", instrumentation=ndi), "is a maser, not a pulsar"),
        (pulsar_timing(drive, psr, VELA, int_time_s=-10.0, instrumentation=ndi), "int_time_s"),
        (pulsar_timing(drive, psr, VELA, n_folds=0, instrumentation=ndi), "n_folds"),
        (pulsar_timing(drive, psr, VELA, nbins=8, instrumentation=ndi), "nbins"),
        (pulsar_timing(drive, psr, VELA, npulses=100, int_time_s=10.0, instrumentation=ndi), "not both"),
    ])

    # (b) two folds of 60 s at the apparent period
    t0 = time.monotonic()
    res = RE(pulsar_timing(drive, psr, VELA, n_folds=2, int_time_s=60.0, nbins=256, instrumentation=ndi,
                           receiver=rx.name, meta=META)).plan_result
    t_run = time.monotonic() - t0
    p_app = _apparent_period(src, res["t_mid"], site)
    frac = _phase_frac(src, res["toa_mjd"], rx.freq_mhz, site)
    print(f"\npulsar {VELA}: S/N {res['snr']:.1f} (folds >= {res['fold_snr_min']:.1f}), P {res['period_s']:.12f} s "
          f"(astropy {p_app:.12f}, {(res['period_s'] / p_app - 1) * 1e9:+.2f} ppb), width {res['width_ms']:.3f} ms "
          f"(duty x P {1e3 * src.duty * p_app:.3f}), TOA {res['toa_mjd']:.10f} at pulse phase {frac:+.5f} turns, "
          f"fold phase scatter {res['phase_scatter_turns']:.5f} turns; {t_run:.1f} s real")
    assert res["snr"] > 10 and res["fold_snr_min"] > 10
    assert res["period_s"] == pytest.approx(p_app, rel=1e-8)
    assert res["period_ephemeris_s"] == pytest.approx(p_app, rel=1e-9)
    assert abs(frac) < 0.01, f"TOA is {frac:.4f} turns from a pulse peak"
    assert res["phase_scatter_turns"] < 2.0 / res["nbins"]  # the folds line up: the period is right
    assert res["width_ms"] == pytest.approx(1e3 * src.duty * p_app, rel=0.3)
    assert res["n_folds"] == 2 and res["nbins"] == 256 and res["clock"] == "SET" and res["tau_ms"] < 0.1
    # per-fold TOAs are whole periods apart
    primary = _stream(docs, "primary")
    assert len(primary) == 2
    toas = np.array([e["data"]["pulsar_timer_toa"] for e in primary])
    turns = np.diff(toas) * 86400.0 / p_app
    assert np.all(np.abs(turns - np.round(turns)) < 0.02), turns
    assert len(primary[0]["data"]["pulsar_timer_profile"]) == 256
    # (c) start document and achieved stream
    start = next(doc for n, doc in docs if n == "start")
    for key in LOG_KEYS:
        assert key in start, key
    assert start["plan_name"] == "pulsar_timing" and start["source"] == VELA and start["receiver"] == rx.name
    assert start["requested"]["fold_s"] == 60.0 and start["plan_args"]["pulsar_timer"] == psr.name
    (ach,) = _stream(docs, "achieved")
    for key in ("period_s", "snr", "toa_mjd", "nbins", "n_folds", "pulse_phase", "width_ms"):
        assert ach["data"][f"achieved_{key}"] == pytest.approx(res[key]), key
    assert _stop_doc(docs)["exit_status"] == "success"
    _assert_safe(obs)

    # (e) pause during a fold, then abort: drive stopped, diodes off, run marked aborted
    docs.clear()
    th = _when(lambda: psr.state.get() == "SAMPLING" and len(_stream(docs, "primary")) == 0
               and any(n == "start" for n, _ in docs), RE.request_pause)
    with pytest.raises(RunEngineInterrupted):
        RE(pulsar_timing(drive, psr, VELA, n_folds=2, int_time_s=300.0, sync_clock=False, instrumentation=ndi,
                         meta=META))
    th.join(5)
    RE.abort("test abort: folding")
    assert _stop_doc(docs)["exit_status"] == "abort"
    _assert_safe(obs)
