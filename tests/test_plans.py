"""Observing plans against real IOC subprocesses and a real RunEngine.

Expected values come from independent computations: the catalog flux at the receiver frequency times the
gain and the atmosphere's transmission (obsctl.sky with the simulator's true weather), astropy positions
(through the fitting of the plans, whose offsets are relative to astropy's apparent place), the injected
pointing error, and the simulator's zenith opacity.
"""

from __future__ import annotations

import math
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from bluesky import RunEngine
from bluesky import plan_stubs as bps

from devices import registry
from iocs.sim.weather import true_weather
from obsctl import sky
from obsctl.catalog import load_catalog
from obsctl.clock import ObservatoryClock
from plans import ObsMeta, cross_scan, drift_scan, pointing_check, sky_dip, stepping, tsys_cal
from plans.metadata import LOG_KEYS, start_metadata
from plans.stubs import with_safe_cleanup
from tests.conftest import wait_for
from tests.helpers import flaky_signal, get, put

EPOCH = "2026-11-21T22:00:00"  # PictorA (Dec -45.8) well up at the reference site, sun down
SPEED = 60
SOURCE = "PictorA"
META = ObsMeta(project="calibration", proposal="P2026-042", pi="A. Scientist", observer="B. Observer",
               obs_number=17, obs_class="ROP")


def _clock(obs) -> ObservatoryClock:
    return ObservatoryClock.from_env({"OBSCTL_CLOCK": obs.state.clock})


def _setup(observatory, devs=("DRV", "WX", "RAD", "NDI"), speed=SPEED):
    obs = observatory(list(devs), speed=speed, epoch=EPOCH)
    clock = _clock(obs)
    site = obs.site
    d = {"drive": registry.drive(site), "radiometer": registry.radiometer(site, clock=clock)}
    if "NDI" in devs:
        d["instrumentation"] = registry.instrumentation(site)
    RE = RunEngine({}, call_returns_result=True)
    docs: list[tuple[str, dict]] = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    return obs, site, clock, d, RE, docs


def _expected_peak(site, rx, src, t: float, el_deg: float) -> float:
    """gain * S(freq) * exp(-tau_z / sin el), tau_z from the simulator's weather at ``t``."""
    tau_z = sky.tau_zenith(rx, true_weather(t, site.simulation.seed))
    _, trans = sky.atmosphere(el_deg, tau_z, site.simulation.t_atm_k)
    return rx.gain_k_per_jy * src.flux_jy(rx.freq_mhz) * float(trans)


def _stop_doc(docs):
    return next(d for n, d in docs if n == "stop")


def _achieved(docs) -> dict:
    desc = {d["uid"]: d["name"] for n, d in docs if n == "descriptor"}
    ev = [d for n, d in docs if n == "event" and desc[d["descriptor"]] == "achieved"]
    assert len(ev) == 1
    return ev[0]["data"]


def test_metadata_validates_and_builds_start_document():
    m = META.filled(source="PictorA", ra_deg=79.96, dec_deg=-45.78, receiver="18cm", freq_mhz=1666.0)
    md = start_metadata("drift_scan", {"lead_deg": 0.5}, m, {"lead_deg": 0.5}, {"extra": 1})
    assert set(LOG_KEYS) <= set(md) and md["obs_type"] == "drift_scan" and md["plan_name"] == "drift_scan"
    assert md["plan_args"] == {"lead_deg": 0.5} and md["extra"] == 1 and md["achieved_stream"] == "achieved"
    for field, bad in (("obs_class", "hobby"), ("dec_deg", 91.0), ("ra_deg", 360.0), ("freq_mhz", -1.0),
                       ("obs_number", -3), ("project", " "), ("ra_deg", math.nan), ("obs_number", 1.5)):
        with pytest.raises(ValueError, match=field):
            ObsMeta(**{**META.as_dict(), field: bad})


def test_no_time_sleep_in_plans():
    for path in Path(__file__).parents[1].joinpath("plans").glob("*.py"):
        text = path.read_text()
        assert not re.search(r"\btime\.sleep\b|from time import sleep|import time\b", text), path


def test_drift_scan_recovers_flux_and_position(observatory):
    obs, site, clock, d, RE, docs = _setup(observatory)
    rx = site.receivers[0]
    src = load_catalog(site.catalog_path).get(SOURCE)
    fwhm = site.beam_fwhm_deg(rx.freq_mhz)
    d["drive"].track(SOURCE).wait(60)  # close to the source first: the park point is reached quickly
    t0 = time.monotonic()
    res = RE(drift_scan(d["drive"], d["radiometer"], SOURCE, lead_deg=2.0 * fwhm,
                        instrumentation=d["instrumentation"], receiver=rx.name, meta=META)).plan_result
    t_real = time.monotonic() - t0
    start = next(doc for n, doc in docs if n == "start")
    for key in LOG_KEYS:
        assert key in start, key
    assert start["source"] == SOURCE and start["receiver"] == rx.name and start["freq_mhz"] == rx.freq_mhz
    assert start["pi"] == "A. Scientist" and start["obs_class"] == "ROP" and start["plan_name"] == "drift_scan"
    assert abs(start["ra_deg"] - src.ra_deg) < 1e-9 and start["requested"]["lead_deg"] == pytest.approx(2 * fwhm)
    ach = _achieved(docs)
    assert ach["achieved_peak_k"] == pytest.approx(res["peak_k"]) and ach["achieved_n_samples"] == res["n_samples"]
    assert _stop_doc(docs)["exit_status"] == "success"
    # every sample of the window is in the samples stream, none lost
    desc = {doc["uid"]: doc["name"] for n, doc in docs if n == "descriptor"}
    pages = [doc for n, doc in docs if n == "event_page" and desc[doc["descriptor"]] == "samples"]
    idx = np.concatenate([p["data"]["radiometer_index"] for p in pages])
    assert idx.size == res["n_samples"] and np.all(np.diff(idx) == 1) and res["lost"] == res["index_gaps"] == 0
    assert len(pages) > 3  # collected during the drift, not only at the end
    expected = _expected_peak(site, rx, src, res["transit_t"], res["el_deg"])
    flux_err = res["peak_k"] / expected - 1
    pos_err = res["offset_deg"] / fwhm
    print(f"\ndrift scan {SOURCE}: peak {res['peak_k']:.4f} K vs {expected:.4f} K ({flux_err:+.2%}), "
          f"position {pos_err:+.4f} beam, fwhm {res['fwhm_deg']:.4f} vs {fwhm:.4f} deg, "
          f"{res['n_samples']} samples, dead time {res['dead_time_s']:.3f} s of {res['duration_s']:.1f} s "
          f"({res['dead_time_frac']:.3%}), {t_real:.1f} s real")
    assert abs(flux_err) < 0.03
    assert abs(pos_err) < 0.05 and abs(res["dec_offset_deg"]) < 0.05 * fwhm
    assert res["dead_time_frac"] < 0.01
    # safe state afterwards: drive stopped, diodes off
    assert get(obs.pv("DRV", "STATE_STS"), as_string=True) == "STOPPED"
    assert int(get(obs.pv("NDI", "ND_SEL_RBV"))) == 0


def test_cross_scan_and_pointing_check(observatory):
    obs, site, clock, d, RE, docs = _setup(observatory)
    rx = site.receivers[0]
    src = load_catalog(site.catalog_path).get(SOURCE)
    fwhm = site.beam_fwhm_deg(rx.freq_mhz)
    cosd = math.cos(math.radians(src.dec_deg))
    res = RE(cross_scan(d["drive"], d["radiometer"], SOURCE, duration_s=60.0,
                        instrumentation=d["instrumentation"], meta=META)).plan_result
    expected = _expected_peak(site, rx, src, clock.now() - 60.0, res["el_deg"])
    flux_err = res["peak_k"] / expected - 1
    print(f"\ncross scan {SOURCE}: peaks HA {res['ha_peak_k']:.4f} Dec {res['dec_peak_k']:.4f} K vs "
          f"{expected:.4f} K ({flux_err:+.2%}); offsets HA {res['ha_offset_deg'] / fwhm:+.4f} "
          f"Dec {res['dec_offset_fit_deg'] / fwhm:+.4f} beam; lost {res['ha_lost'] + res['dec_lost']}")
    assert abs(flux_err) < 0.03
    assert abs(res["ha_offset_deg"]) < 0.05 * fwhm and abs(res["dec_offset_fit_deg"]) < 0.05 * fwhm
    assert _stop_doc(docs)["exit_status"] == "success"

    # injected pointing error (simulation truth, unknown to the pointing model)
    perr_ha, perr_dec = 0.05, -0.04
    d["drive"].sim_perr_ha.set(perr_ha).wait(10)
    d["drive"].sim_perr_dec.set(perr_dec).wait(10)
    docs.clear()
    pc = RE(pointing_check(d["drive"], d["radiometer"], SOURCE, instrumentation=d["instrumentation"],
                           meta=META)).plan_result
    err_ha = (pc["ha_offset_deg"] - perr_ha * cosd) / fwhm
    err_dec = (pc["dec_offset_deg"] - perr_dec) / fwhm
    print(f"pointing check: found HA {pc['ha_offset_coord_deg']:+.4f} (coord) Dec {pc['dec_offset_deg']:+.4f} deg "
          f"vs injected {perr_ha:+.3f} {perr_dec:+.3f}: errors {err_ha:+.4f} {err_dec:+.4f} beam")
    assert abs(err_ha) < 0.05 and abs(err_dec) < 0.05
    assert _achieved(docs)["achieved_dec_offset_deg"] == pytest.approx(pc["dec_offset_deg"])
    # five-point (half-power points): coarser, the same offsets
    fp = RE(pointing_check(d["drive"], d["radiometer"], SOURCE, method="five_point", integration_s=4.0,
                           instrumentation=d["instrumentation"], meta=META)).plan_result
    fp_ha, fp_dec = (fp["ha_offset_deg"] - perr_ha * cosd) / fwhm, (fp["dec_offset_deg"] - perr_dec) / fwhm
    print(f"five-point: HA {fp['ha_offset_coord_deg']:+.4f} (coord) Dec {fp['dec_offset_deg']:+.4f} deg: errors "
          f"{fp_ha:+.4f} {fp_dec:+.4f} beam")
    assert abs(fp_ha) < 0.05 and abs(fp_dec) < 0.05
    assert get(obs.pv("DRV", "STATE_STS"), as_string=True) == "STOPPED"


@pytest.mark.slow
def test_sky_dip_recovers_zenith_opacity_and_tsys_cal(observatory):
    obs, site, clock, d, RE, docs = _setup(observatory)
    rx = site.receivers[0]
    t0 = clock.now()
    res = RE(sky_dip(d["drive"], d["radiometer"], integration_s=10.0, t_atm_k=site.simulation.t_atm_k,
                     instrumentation=d["instrumentation"], meta=META, cleanup="stow")).plan_result
    tau_true = sky.tau_zenith(rx, true_weather((t0 + clock.now()) / 2, site.simulation.seed))
    tau_err = res["tau_zenith"] / tau_true - 1
    print(f"\nsky dip: tau {res['tau_zenith']:.5f} +- {res['tau_err']:.5f} vs simulator {tau_true:.5f} "
          f"({tau_err:+.1%}); T0 {res['t_zero_airmass_k']:.2f} K")
    assert abs(tau_err) < 0.10
    wait_for(lambda: get(obs.pv("DRV", "STATE_STS"), as_string=True) == "STOWED", 30, what="stowed")

    docs.clear()
    cal = RE(tsys_cal(d["drive"], d["radiometer"], d["instrumentation"], integration_s=5.0, meta=META)).plan_result
    # at the stow position (zenith): receiver + atmosphere + CMB
    tau_z = sky.tau_zenith(rx, true_weather(clock.now(), site.simulation.seed))
    t_atm, trans = sky.atmosphere(cal["el_deg"], tau_z, site.simulation.t_atm_k)
    expected = rx.tsys_k + t_atm + site.simulation.t_cmb_k * trans
    print(f"tsys cal: {cal['tsys_k']:.2f} +- {cal['tsys_err_k']:.2f} K vs {expected:.2f} K, diode {cal['diode_k']} K")
    assert cal["diode_k"] == rx.noise_diode_high_k
    assert abs(cal["tsys_k"] / expected - 1) < 0.05
    assert int(get(obs.pv("NDI", "ND_SEL_RBV"))) == 0


def test_stepping_on_off(observatory):
    obs, site, clock, d, RE, docs = _setup(observatory)
    rx = site.receivers[0]
    src = load_catalog(site.catalog_path).get(SOURCE)
    msgs: list[tuple[str, str]] = []
    RE.msg_hook = lambda msg: msgs.append((msg.command, getattr(msg.obj, "name", "")))
    res = RE(stepping(d["drive"], d["radiometer"], SOURCE, cycles=2, integration_s=10.0, switch="ha",
                      instrumentation=d["instrumentation"], meta=META)).plan_result
    expected = _expected_peak(site, rx, src, clock.now(), res["el_deg"])
    print(f"\non/off: Ta {res['ta_k']:.4f} +- {res['ta_err_k']:.4f} K vs {expected:.4f} K "
          f"({res['ta_k'] / expected - 1:+.2%})")
    assert abs(res["ta_k"] / expected - 1) < 0.03
    assert _stop_doc(docs)["exit_status"] == "success"
    desc = {doc["uid"]: doc["name"] for n, doc in docs if n == "descriptor"}
    primary = [doc for n, doc in docs if n == "event" and desc[doc["descriptor"]] == "primary"]
    # each step's drive readings are of its own position (read at the window's end, before the next move);
    # its samples were taken there: their mean HA is the source's plus the offset
    off = 3.0 * site.beam_fwhm_deg(rx.freq_mhz) / math.cos(math.radians(src.dec_deg))
    assert [round(e["data"]["drive_off_ha"] / off, 6) for e in primary] == [-1.0, 0.0, 1.0] * 2
    for e in primary:  # the window's mean against its end: half the integration's sidereal drift apart
        assert abs(e["data"]["radiometer_ha"] - e["data"]["drive_ha_obs"]) < 0.1 * off
    # every step but the last starts the next move inside its event, before the radiometer is read
    steps = "".join("C" if c == "create" else "M" if (c, o) == ("set", "drive_track") else "R"
                    if (c, o) == ("read", "radiometer") else "S" if c == "save" else "" for c, o in msgs)
    assert steps.count("CMRS") == 5 and steps.count("CRS") == 1  # the last step: nothing to start


def _abort_when(RE, condition, what: str) -> threading.Thread:
    """A thread that calls RE.abort once ``condition()`` holds (polled every 50 ms, for up to 60 s)."""

    def run():
        t0 = time.monotonic()
        while not condition():
            if time.monotonic() - t0 > 60:
                return
            time.sleep(0.05)
        RE.abort(f"test abort: {what}")

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


@pytest.mark.slow
def test_abort_mid_plan_leaves_the_telescope_safe_and_the_run_marked(observatory, tmp_path):
    from bluesky.utils import RunEngineInterrupted

    from archiver.archive import open_archive

    obs, site, clock, d, RE, docs = _setup(observatory)
    ndi, drive = d["instrumentation"], d["drive"]
    archive = open_archive(data_dir=tmp_path / "archive")
    try:
        archive.subscribe(RE, batch_size=50)
        drive.track(SOURCE).wait(60)
        # 1. abort from another thread while the source drifts through (samples being collected)
        n_pages = lambda: sum(1 for n, _ in docs if n == "event_page")  # noqa: E731
        th = _abort_when(RE, lambda: n_pages() >= 2, "drift")
        with pytest.raises(RunEngineInterrupted):
            RE(drift_scan(drive, d["radiometer"], SOURCE, instrumentation=ndi, meta=META))
        th.join(5)
        stop = _stop_doc(docs)
        assert stop["exit_status"] == "abort"
        assert get(obs.pv("DRV", "STATE_STS"), as_string=True) == "STOPPED"
        assert int(get(obs.pv("NDI", "ND_SEL_RBV"))) == 0
        run = archive.client[stop["run_start"]]
        assert run.stop["exit_status"] == "abort" and run.start["plan_name"] == "drift_scan"
        assert run.start["pi"] == META.pi

        # 2. abort while the noise diode is on (tsys_cal), configured to stow
        docs.clear()
        th = _abort_when(RE, lambda: int(ndi.nd_sel_rbv.get()) != 0, "diode on")
        with pytest.raises(RunEngineInterrupted):
            RE(tsys_cal(drive, d["radiometer"], ndi, source=SOURCE, integration_s=30.0, meta=META,
                        cleanup="stow"))
        th.join(5)
        assert _stop_doc(docs)["exit_status"] == "abort"
        assert get(obs.pv("DRV", "STATE_STS"), as_string=True) == "STOWED"
        assert int(get(obs.pv("NDI", "ND_SEL_RBV"))) == 0

        # 3. a plan that raises: the same cleanup (stop), the exception reaches the caller
        docs.clear()

        def failing():
            yield from bps.open_run({"plan_name": "failing"})
            yield from bps.mv(ndi.diode, "HIGH")
            yield from bps.sleep(0.2)
            raise RuntimeError("plan failed")

        drive.track(SOURCE).wait(60)
        with pytest.raises(RuntimeError, match="plan failed"):
            RE(with_safe_cleanup(failing(), drive, ndi, "stop"))
        assert _stop_doc(docs)["exit_status"] == "fail"
        assert get(obs.pv("DRV", "STATE_STS"), as_string=True) == "STOPPED"
        assert int(get(obs.pv("NDI", "ND_SEL_RBV"))) == 0
    finally:
        archive.close()


def test_wind_suspender_pauses_and_resumes_a_plan(observatory):
    from plans.suspenders import wind_suspender

    obs, site, clock, d, RE, docs = _setup(observatory)
    wx = registry.weather(obs.site)
    sus = wind_suspender(wx, max_wind_m_s=10.0, resume_m_s=8.0)
    RE.install_suspender(sus)
    seen = []

    def gust():
        wait_for(lambda: any(n == "event" for n, _ in docs), 60, what="first event")
        put(obs.pv("WX", "SIM_WIND_SP"), 12.0)
        wait_for(lambda: sus.tripped, 10, what="suspender tripped")
        seen.append(len([1 for n, _ in docs if n == "event"]))
        time.sleep(2.0)
        seen.append(len([1 for n, _ in docs if n == "event"]))
        put(obs.pv("WX", "SIM_WIND_SP"), -1.0)

    th = threading.Thread(target=gust, daemon=True)
    th.start()
    res = RE(stepping(d["drive"], d["radiometer"], SOURCE, cycles=2, integration_s=5.0,
                      instrumentation=d["instrumentation"], meta=META))
    th.join(10)
    assert len(seen) == 2 and seen[1] - seen[0] <= 1  # nothing new while suspended (one read may finish)
    assert res.exit_status == "success" and len([1 for n, _ in docs if n == "event"]) >= 7
    # the step cut short was re-run at its own position: every event's samples lie where its drive reading says
    desc = {doc["uid"]: doc["name"] for n, doc in docs if n == "descriptor"}
    primary = [doc["data"] for n, doc in docs if n == "event" and desc[doc["descriptor"]] == "primary"]
    off = 3.0 * site.beam_fwhm_deg(site.receivers[0].freq_mhz)
    assert {round(e["drive_off_dec"] / off, 6) for e in primary} == {-1.0, 0.0, 1.0}
    src_dec = [e["radiometer_dec"] - e["drive_off_dec"] for e in primary]
    assert max(src_dec) - min(src_dec) < 2 * site.mount.on_source_tolerance_deg, src_dec
    assert float(get(obs.pv("WX", "WIND_SPD_RBV"))) < 8.0


def test_disconnect_suspender_pauses_until_the_signal_is_back():
    from plans.suspenders import SuspendDisconnected

    sig = flaky_signal()
    RE = RunEngine({})
    sus = SuspendDisconnected(sig)
    RE.install_suspender(sus)

    def flip():
        time.sleep(0.3)
        sig.set_connected(False)
        time.sleep(1.0)
        sig.set_connected(True)

    th = threading.Thread(target=flip, daemon=True)
    t0 = time.monotonic()
    th.start()
    RE(bps.repeat(lambda: bps.sleep(0.05), num=20))
    assert time.monotonic() - t0 > 1.2  # 1 s suspended on top of the plan's own 1 s
    th.join(5)
