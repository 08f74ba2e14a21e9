"""ophyd devices against real IOC subprocesses: registry, drive positioner, radiometer detector and flyer,
correlator and pulsar-timer triggers, heartbeat watchdog.

Expected positions come from astropy directly; radiometer statistics are recomputed from an independent
pyepics monitor on the sample blocks.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import epics
import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import EarthLocation, HADec, SkyCoord, get_body
from astropy.time import Time

from devices import registry
from devices.common import CommandRefused, DeviceFault
from devices.drive import Drive
from obsctl import blocks
from obsctl.catalog import load_catalog
from obsctl.clock import ObservatoryClock
from tests.conftest import wait_for
from tests.helpers import get, put

NIGHT = "2026-11-21T20:00:00"  # sun well below the horizon at the reference site
SPEED = 60
C = blocks.C


def _clock(obs) -> ObservatoryClock:
    return ObservatoryClock.from_env({"OBSCTL_CLOCK": obs.state.clock})


def _location(site) -> EarthLocation:
    return EarthLocation.from_geodetic(site.longitude_deg * u.deg, site.latitude_deg * u.deg, site.height_m * u.m)


def _apparent_hadec(coord, t: float, site) -> tuple[float, float]:
    frame = HADec(obstime=Time(t, format="unix"), location=_location(site), pressure=0 * u.hPa)
    c = coord.transform_to(frame)
    return (c.ha.deg + 180.0) % 360.0 - 180.0, c.dec.deg


def _calibrator(site, t: float):
    """The brightest catalog calibrator well up, inside the HA limits, at observatory time ``t`` (astropy)."""
    lat = math.radians(site.latitude_deg)
    best = []
    for src in load_catalog(site.catalog_path).of_kind("calibrator"):
        ha, dec = _apparent_hadec(src.coord, t, site)
        el = math.degrees(math.asin(math.sin(math.radians(dec)) * math.sin(lat)
                                    + math.cos(math.radians(dec)) * math.cos(lat) * math.cos(math.radians(ha))))
        if el > 30 and abs(ha) < 60 and src.size_arcmin == 0:
            best.append((src.s_1400_jy, src))
    assert best, "no calibrator is up at the epoch"
    return max(best, key=lambda x: x[0])[1]


class BlockMonitor:
    """Independent pyepics monitor on BLK_RBV keeping every block (callbacks in libca's thread)."""

    def __init__(self, name: str):
        self.lock = threading.Lock()
        self.blocks: list[blocks.Block] = []
        self.tracker = blocks.LossTracker()
        self.pv = epics.PV(name, auto_monitor=True, callback=self._on_value)
        assert self.pv.wait_for_connection(5.0)

    def _on_value(self, value=None, **_):
        b = blocks.try_unpack(value)
        if b is not None:
            with self.lock:
                if self.tracker.add(b):
                    self.blocks.append(b)

    def data(self) -> np.ndarray:
        with self.lock:
            return blocks.concat(list(self.blocks))

    def close(self) -> None:
        self.pv.clear_callbacks()
        self.pv.disconnect()


# ---- registry: every device of the site ---------------------------------------------------------------
def test_registry_builds_every_device_and_each_reads(observatory):
    obs = observatory(speed=SPEED, epoch=NIGHT)
    site = obs.site
    devs = registry.all_devices(site, clock=_clock(obs), timeout=15)
    assert set(devs) == {"station_time", "drive", "radiometer", "instrumentation", "correlator", "pulsar_timer",
                         "syn1", "syn2", "weather", "housekeeping", "subreflector"}
    assert [registry.device_name(site, i) for i in site.instruments] == list(devs)
    for name, dev in devs.items():
        inst = next(i for i in site.instruments if registry.device_name(site, i) == name)
        assert dev.name == name and dev.prefix == site.pv(inst.dev, "")
        reading, desc = dev.read(), dev.describe()
        assert reading and set(reading) == set(desc), name
        conf = dev.read_configuration()
        assert set(conf) == set(dev.describe_configuration()), name
        for key, d in desc.items():
            assert d["source"].startswith(("PV:" + site.pv(inst.dev, ""), "SIM:")), (key, d["source"])
        assert dev.hints["fields"], f"{name} has no hinted field"
        assert set(dev.hints["fields"]) <= set(reading), name
        assert dev.sim.get() == "SIMULATION"
    # a factory builds the same device on its own, named after itself
    tm = registry.station_time(site)
    assert tm.name == "station_time" and abs(tm.now() - _clock(obs).now()) < 2 * SPEED
    assert 0 <= tm.lst.get() < 24

    # instrumentation: the diode handle writes the selected receiver's bits
    ndi = devs["instrumentation"]
    rx = site.receivers[0]
    ndi.select_receiver(rx.name).wait(10)
    ndi.diode.set("HIGH").wait(10)
    wait_for(lambda: abs(ndi.nd_k.get() - rx.noise_diode_high_k) < 1e-9, 5, what="ND_K = high diode")
    assert ndi.diode.get() == "HIGH" and int(ndi.nd_sel_rbv.get()) == 2
    ndi.diodes_off().wait(10)
    wait_for(lambda: ndi.nd_k.get() == 0.0, 5, what="diodes off")

    # synthesizer: a positioner in Hz, done when locked; a frequency outside the model is refused
    syn = devs["syn1"]
    syn.set(1.0e9).wait(10)
    assert syn.lock.get() == "LOCKED" and abs(syn.position - 1.0e9) <= syn.freq_res.get()
    lo, hi = syn.freq.limits
    st = syn.set(hi * 2)
    with pytest.raises(CommandRefused, match="refused"):
        st.wait(10)
    assert abs(syn.freq.get() - 1.0e9) < 1.0  # the old value stayed

    # correlator: one integration gives a spectrum on a frequency axis around FREQ_SP
    cor = devs["correlator"]
    cor.configure_integration(int_time=5.0, nchan="256", quad=cor.quad.enum_strs[0])
    n0 = int(cor.int_done.get())
    t0 = time.monotonic()
    cor.trigger().wait(30)
    t_cor = time.monotonic() - t0
    r = cor.read()
    spec, f = r["correlator_spectrum"]["value"], r["correlator_freq_axis"]["value"]
    assert int(cor.int_done.get()) == n0 + 1
    assert spec.shape == f.shape == r["correlator_vel_axis"]["value"].shape == (256,)
    assert np.all(np.isfinite(spec)) and np.all(np.diff(f) != 0)
    assert abs(np.mean(f) - cor.freq.get()) < 0.01 * float(cor.bw.get())
    tsys = r["correlator_tsys"]["value"]
    assert 10 < tsys < 500 and abs(np.median(spec) / tsys - 1) < 0.1
    # a second start while integrating is refused; a reset ends the first without data
    cor.int_time.set(30.0).wait(10)
    st = cor.trigger()
    wait_for(lambda: cor.state.get() == "INTEGRATING", 10, what="integrating")
    st2 = cor.trigger()
    with pytest.raises(CommandRefused, match="busy"):
        st2.wait(10)
    cor.reset().wait(10)
    with pytest.raises(DeviceFault, match="without data"):
        st.wait(10)

    # pulsar timer: fold J0835-4510 at its apparent period
    psr = devs["pulsar_timer"]
    src = load_catalog(site.catalog_path).get("J0835-4510")
    psr.configure_fold("J0835-4510", nbins=128, npulses=0, int_time_s=20.0)
    t_start = _clock(obs).now()
    t0 = time.monotonic()
    psr.trigger().wait(60)
    t_psr = time.monotonic() - t0
    r = psr.read()
    prof = r["pulsar_timer_profile"]["value"]
    assert prof.shape == (128,) and np.all(np.isfinite(prof))
    mjd0 = t_start / 86400.0 + 40587.0
    period = r["pulsar_timer_period_rbv"]["value"]
    assert abs(period / src.period_at(mjd0) - 1) < 1.5e-4  # the Doppler shift of the Earth's motion, < 1e-4
    # the timer clock is off by up to 30 s until SETUP_TIME
    assert abs(r["pulsar_timer_tstart"]["value"] - mjd0) * 86400 < 40
    assert r["pulsar_timer_psr"]["value"] == "J0835-4510" and r["pulsar_timer_tsys"]["value"] > 0
    print(f"\ncorrelator trigger (5 s obs.) {t_cor:.2f} s real; pulsar fold (20 s obs.) {t_psr:.2f} s real")


# ---- drive --------------------------------------------------------------------------------------------
def test_drive_set_settles_on_source_and_refusals_fail_with_reason(observatory):
    obs = observatory(["DRV"], speed=SPEED, epoch=NIGHT)
    site = obs.site
    drive = registry.drive(site)
    clock = _clock(obs)
    src = _calibrator(site, clock.now())
    t0 = time.monotonic()
    st = drive.set(src.name)
    progress: list[float] = []
    st.watch(lambda name, fraction=None, **kw: progress.append(fraction) if fraction is not None else None)
    st.wait(60)
    t_settle = time.monotonic() - t0
    assert progress and progress[-1] == 0.0 and any(0.0 < f < 1.0 for f in progress)  # a progress bar can follow
    assert get(obs.pv("DRV", "STATE_STS"), as_string=True) == "TRACKING"
    assert get(obs.pv("DRV", "SETTLED_STS"), as_string=True) == "YES"
    assert get(obs.pv("DRV", "TARGET_RBV")) == src.name
    # observed HA/Dec of the packet vs the DRV readbacks of the same cycle and vs astropy
    for _ in range(3):
        pkt = np.asarray(epics.caget(obs.pv("DRV", "POS_PKT"), use_monitor=False))
        ha_obs = drive.ha_obs.get()
        t = drive.ha_obs.timestamp  # the time of the packet's control cycle
        dec_obs = drive.dec_obs.get() if drive.dec_obs.timestamp == t else drive.packet()[4]
        ha_app, dec_app = _apparent_hadec(src.coord, t, site)
        assert abs(ha_obs - ha_app) < 2 * site.mount.on_source_tolerance_deg
        assert abs(dec_obs - dec_app) < 2 * site.mount.on_source_tolerance_deg
        assert abs(pkt[3] - ha_obs) < 0.01 and abs(pkt[4] - dec_obs) < 0.01  # a cycle or two apart
        enc, t_enc = drive.ha.fresh()
        ha_obs, t_pkt = drive.ha_obs.get(), drive.ha_obs.timestamp
        sidereal = 360.0 / 86164.0905  # deg/s: the HA of a tracked source grows at the sidereal rate
        assert abs(enc - drive.ha_pm.get() - drive.ha_refr.get() - ha_obs - sidereal * (t_enc - t_pkt)) < 0.003
        time.sleep(0.2)
    r = drive.read()
    assert set(drive.hints["fields"]) == {"drive_ha_obs", "drive_dec_obs", "drive_az", "drive_el", "drive_on_source"}
    assert r["drive_on_source"]["value"] == "YES" and r["drive_off_dec"]["value"] == 0.0

    # refused targets: the Status fails with the IOC's reason, the drive keeps tracking
    st = drive.set("sun")
    with pytest.raises(CommandRefused, match="sun"):
        st.wait(10)
    sun = get_body("sun", Time(clock.now(), format="unix"), location=_location(site))  # geocentric (GCRS)
    near = SkyCoord(ra=sun.ra + 5 * u.deg, dec=sun.dec, frame="icrs")  # GCRS and ICRS axes agree to arcsec
    with pytest.raises(CommandRefused, match="sun"):
        drive.set(near).wait(10)
    with pytest.raises(CommandRefused, match="unknown source"):
        drive.set("No Such Source").wait(10)
    assert drive.state.fresh()[0] == "TRACKING" and drive.target.fresh()[0] == src.name

    # offsets: a positioner, done when settled on the new offset
    drive.off_ha.set(0.2).wait(30)
    assert abs(drive.off_ha.position - 0.2) < 1e-9 and drive.settled.fresh()[0] == "YES"
    pkt = drive.packet()
    ha_app, _ = _apparent_hadec(src.coord, pkt[0], site)
    assert abs(pkt[3] - 0.2 - ha_app) < 2 * site.mount.on_source_tolerance_deg
    # tracking the source already tracked: only the offsets move (TRACK is not re-commanded)
    target_ts = drive.target.fresh()[1]
    st = drive.track(src.name, off_ha=0.0, off_dec=0.05)
    st.wait(30)
    assert st.command.endswith("(offsets)") and drive.target.fresh()[1] == target_ts
    pkt = drive.packet()
    ha_app, dec_app = _apparent_hadec(src.coord, pkt[0], site)
    assert pkt[10] == 1.0 and abs(pkt[4] - 0.05 - dec_app) < 2 * site.mount.on_source_tolerance_deg
    assert abs(pkt[3] - ha_app) < 2 * site.mount.on_source_tolerance_deg
    # asked again for what it holds settled: done at once; for the move under way: that move's Status
    again = drive.track(src.name, off_ha=0.0, off_dec=0.05)
    assert again.done and again.success and "already" in again.command
    st = drive.track(src.name, off_ha=0.0, off_dec=0.0)
    assert drive.track(src.name, off_ha=0.0, off_dec=0.0) is st and not st.done
    st.wait(30)
    # the drive no longer holds it (STOP written around this client's commands): the same request re-commands
    drive.mode.put("STOP")
    wait_for(lambda: drive.packet_state(drive.packet()) == "STOPPED", 10, what="a packet of the drive stopped")
    st = drive.track(src.name, off_ha=0.0, off_dec=0.0)
    assert not st.done
    st.wait(60)
    assert drive.state.fresh()[0] == "TRACKING" and drive.target.fresh()[1] > target_ts

    # a plan that fails during a slew: the RunEngine's stop(success=True) stops the drive that is moving
    from bluesky import RunEngine
    from bluesky import plan_stubs as bps

    def failing_slew():
        yield from bps.abs_set(drive, (src.ra_deg - 50.0, site.latitude_deg), group="slew")
        yield from bps.sleep(0.3)
        raise RuntimeError("plan failed mid-slew")

    with pytest.raises(RuntimeError, match="mid-slew"):
        RunEngine({})(failing_slew())
    wait_for(lambda: drive.state.fresh()[0] == "STOPPED", 5, what="drive stopped after the failed plan")
    drive.track(src.name).wait(60)

    # the drive stops on the way (watchdog, heartbeat stopped): the Status fails with that reason
    drive.stop_heartbeat()
    drive.watchdog.set(0.5).wait(10)
    st = drive.slew(0.0, site.latitude_deg + 40.0)
    with pytest.raises(DeviceFault, match="watchdog"):
        st.wait(30)
    drive.watchdog.set(site.mount.watchdog_s).wait(10)
    drive.start_heartbeat()
    drive.halt().wait(30)
    with pytest.raises(CommandRefused, match="tracking"):
        drive.off_dec.set(0.1).wait(10)
    print(f"\ndrive set({src.name}) -> settled: {t_settle:.2f} s real at speed {SPEED}")


# ---- radiometer + drive in a bluesky scan -------------------------------------------------------------
def test_offset_scan_peaks_on_source_and_trigger_matches_blocks(observatory):
    from bluesky import RunEngine
    from bluesky import plans as bp

    obs = observatory(["DRV", "RAD"], speed=SPEED, epoch=NIGHT)
    site = obs.site
    clock = _clock(obs)
    drive = registry.drive(site)
    rad = registry.radiometer(site, clock=clock)
    src = _calibrator(site, clock.now())
    drive.track(src.name, off_ha=0.0, off_dec=0.0).wait(60)

    # trigger/read: statistics of exactly the samples of the window, from an independent monitor
    mon = BlockMonitor(obs.pv("RAD", "BLK_RBV"))
    try:
        time.sleep(0.5)
        rad.integration_time.put(2.0)
        rad.trigger().wait(30)
        r = rad.read()
        t_start, t_end = rad.last_window
        assert abs(t_end - t_start - 2.0) < 1e-9
        wait_for(lambda: mon.data().shape[1] and mon.data()[C["T"], -1] >= t_end - 0.05, 10, what="monitor")
        d = mon.data()
        sel = (d[C["T"]] >= t_start - 1e-9) & (d[C["T"]] < t_end - 1e-9)
        rate = mon.blocks[-1].rate_hz
        assert r["radiometer_nsamp"]["value"] == np.count_nonzero(sel) == pytest.approx(2.0 * rate, abs=1)
        assert r["radiometer_dvm1"]["value"] == pytest.approx(np.mean(d[C["DVM1"]][sel]), rel=1e-12)
        assert r["radiometer_dvm2_std"]["value"] == pytest.approx(np.std(d[C["DVM2"]][sel], ddof=1), rel=1e-9)
        assert r["radiometer_ha"]["value"] == pytest.approx(np.mean(d[C["HA"]][sel]), abs=1e-9)
        assert r["radiometer_dvm1"]["timestamp"] == pytest.approx(np.mean(d[C["T"]][sel]), abs=1e-6)
        assert r["radiometer_lost"]["value"] == 0
    finally:
        mon.close()

    # a real RunEngine scan over the Dec offset with the radiometer as detector
    RE = RunEngine({})
    events = []
    RE.subscribe(lambda name, doc: events.append(doc) if name == "event" else None)
    rad.integration_time.put(1.0)
    beam = site.beam_fwhm_deg(site.receivers[0].freq_mhz)
    t0 = time.monotonic()
    RE(bp.scan([rad], drive.off_dec, -2 * beam, 2 * beam, 13))
    t_scan = time.monotonic() - t0
    x = np.array([e["data"]["drive_off_dec"] for e in events])
    y = np.array([e["data"]["radiometer_dvm1"] for e in events])
    assert len(x) == 13 and np.allclose(x, np.linspace(-2 * beam, 2 * beam, 13), atol=1e-9)
    assert abs(x[np.argmax(y)]) < 0.2 * beam
    assert y.max() - np.median(y[[0, 1, -2, -1]]) > 0.5 * src.flux_jy(site.receivers[0].freq_mhz) \
        * site.receivers[0].gain_k_per_jy
    # the RunEngine calls stop(success=True) on the offset it moved: a settled drive keeps tracking
    assert drive.state.fresh()[0] == "TRACKING"
    # Dec of the samples followed the offsets
    dec = np.array([e["data"]["radiometer_dec"] for e in events])
    assert np.allclose(np.diff(dec), np.diff(x), atol=0.01)

    # per-event cost of a bluesky count over the radiometer (0.1 s observatory integration)
    rad.integration_time.put(0.1)
    events.clear()
    t0 = time.monotonic()
    RE(bp.count([rad], num=20))
    per_event = (time.monotonic() - t0) / 20
    assert len(events) == 20 and per_event < 0.5
    print(f"\nscan of 13 points {t_scan:.2f} s real; count over the radiometer {1e3 * per_event:.0f} ms/event "
          f"(block period {rad.blk_period.get():g} s)")


def test_flyer_collects_every_sample_during_a_drift(observatory):
    from bluesky import RunEngine
    from bluesky import plan_stubs as bps

    obs = observatory(["DRV", "RAD"], speed=SPEED, epoch=NIGHT)
    site = obs.site
    clock = _clock(obs)
    drive = registry.drive(site)
    rad = registry.radiometer(site, clock=clock)
    src = _calibrator(site, clock.now())
    lead = 0.4  # deg of HA: the source reaches the beam lead / 15.04 deg/h after the DRIFT command
    drive.track(src.name, off_ha=0.0, off_dec=0.0).wait(60)  # on the source first: a short move to the park point
    drive.drift(src.name, lead).wait(60)
    RE = RunEngine({})
    docs: list[tuple[str, dict]] = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    window: list[float] = []

    def fly():
        yield from bps.open_run()
        window.append(clock.now())
        yield from bps.kickoff(rad, wait=True)
        yield from bps.sleep(2.0 * lead / 15.04 * 3600 / SPEED)
        yield from bps.complete(rad, wait=True)
        window.append(clock.now())
        yield from bps.collect(rad)
        yield from bps.close_run()

    RE(fly())
    pages = [d for n, d in docs if n == "event_page"]
    desc = next(d for n, d in docs if n == "descriptor")
    assert desc["name"] == "samples" and "radiometer_dvm1" in desc["data_keys"]
    idx = np.concatenate([p["data"]["radiometer_index"] for p in pages])
    t = np.concatenate([p["data"]["radiometer_t"] for p in pages])
    ts = np.concatenate([p["timestamps"]["radiometer_dvm1"] for p in pages])
    dvm = np.concatenate([p["data"]["radiometer_dvm1"] for p in pages])
    ha = np.concatenate([p["data"]["radiometer_ha"] for p in pages])
    rate = rad.last_block.rate_hz
    assert rad.lost.get() == 0 and np.all(np.diff(idx) == 1)
    assert np.allclose(np.diff(t), 1.0 / rate, atol=1e-6) and np.array_equal(ts, t)
    t_kick, t_stop = rad.last_fly_window  # the observatory clock at kickoff() and at complete()
    assert window[0] <= t_kick < t_stop <= window[1]
    assert t_kick - 1e-9 <= t[0] < t_kick + 1.0 / rate and t_stop - 1.0 / rate <= t[-1] < t_stop
    assert len(t) == pytest.approx((t_stop - t_kick) * rate, abs=1.0)
    # the source drifted through the beam where its apparent HA equals the beam's (Gaussian fit in time)
    from scipy.optimize import curve_fit

    def model(x, a, b, amp, x0, sigma):
        return a + b * x + amp * np.exp(-0.5 * ((x - x0) / sigma) ** 2)

    x = t - t[0]
    k = int(np.argmax(np.convolve(dvm, np.ones(25) / 25, mode="same")))
    p, _ = curve_fit(model, x, dvm, p0=(np.median(dvm), 0.0, dvm[k] - np.median(dvm), x[k], 60.0))
    t_peak = t[0] + p[3]
    ha_src, dec_src = _apparent_hadec(src.coord, t_peak, site)
    miss = (ha_src - np.interp(t_peak, t, ha)) * math.cos(math.radians(dec_src))  # true angle (deg)
    beam = site.beam_fwhm_deg(site.receivers[0].freq_mhz)
    assert abs(miss) < 0.1 * beam and p[2] > 3.0
    print(f"\nflyer: {len(t)} samples ({rate:g} Hz), 0 lost, drift peak {miss / beam:+.3f} beam from the source")


# ---- heartbeat ------------------------------------------------------------------------------------------
CLIENT = textwrap.dedent("""
    import sys, time
    from devices import registry
    from obsctl.site import load_site
    drive = registry.drive(load_site(), prefix=sys.argv[1])
    drive.track(sys.argv[2], off_ha=0.0, off_dec=0.0).wait(60)
    print("TRACKING", flush=True)
    time.sleep(600)
""")


@pytest.mark.slow
def test_heartbeat_keeps_watchdog_satisfied_and_a_killed_client_stops_the_drive(observatory):
    obs = observatory(["DRV"], speed=SPEED, epoch=NIGHT)
    site = obs.site
    put(obs.pv("DRV", "WATCHDOG_SP"), 2.0)
    src = _calibrator(site, _clock(obs).now())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site.base_dir.parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", CLIENT, site.pv_prefix, src.name], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = child.stdout.readline()
        assert line.strip() == "TRACKING", child.stderr.read()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 6.0:  # three watchdog periods: only the child's heartbeat keeps it alive
            assert get(obs.pv("DRV", "STATE_STS"), as_string=True) == "TRACKING"
            assert get(obs.pv("DRV", "WATCHDOG_STS"), as_string=True) == "OK"
            time.sleep(0.25)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        t_kill = time.monotonic()
        wait_for(lambda: get(obs.pv("DRV", "WATCHDOG_STS"), as_string=True) == "EXPIRED", 6, what="watchdog")
        t_stop = time.monotonic() - t_kill
        assert get(obs.pv("DRV", "STATE_STS"), as_string=True) in ("STOPPED",)
        assert "watchdog" in get(obs.pv("DRV", "MSG_RBV"))
        # the watchdog (2 s real) runs from the child's last beat, 0..1 s (its beat period) before the kill
        assert 2.0 - 1.0 - 0.2 < t_stop < 2.0 + 1.0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    print(f"\nkilled client: drive stopped {t_stop:.2f} s (real) later, watchdog 2 s")


def test_drive_is_a_bluesky_movable_without_ioc():
    from bluesky.protocols import EventPageCollectable, Flyable, Movable, Readable, Stageable, Triggerable

    from devices.correlator import Correlator
    from devices.radiometer import Radiometer

    rad, cor = Radiometer("NONE:RAD:", name="radiometer"), Correlator("NONE:COR:", name="correlator")
    assert isinstance(rad, Triggerable) and isinstance(rad, Flyable) and isinstance(rad, EventPageCollectable)
    assert isinstance(cor, Triggerable) and isinstance(cor, Readable)
    assert set(rad.describe_collect()["samples"]) == {f"radiometer_{k}" for k in
                                                      ("index", "boot", "t", "ha", "dec", "az", "el", "dvm1", "dvm2",
                                                       "dvm1_raw", "dvm2_raw", "flags")}
    d = Drive("NONE:DRV:", name="drive")
    try:
        assert isinstance(d, Movable) and isinstance(d, Readable) and isinstance(d, Stageable)
        assert isinstance(d.off_dec, Movable) and d.off_dec.readback.name == "drive_off_dec"
        with pytest.raises(ValueError, match="target"):
            d._target_puts(object())
        assert d._target_puts((10.0, -20.0))[0][1:] == [(d.track_ra, 10.0), (d.track_dec, -20.0)]
    finally:
        d.stop_heartbeat()


def test_stop_with_success_ends_a_move_without_failing_it(observatory):
    """The RunEngine pausing a plan calls stop(success=True): the move ends done (not failed), the dish stops."""
    obs = observatory(["DRV"], speed=5, epoch=NIGHT)
    drive = registry.drive(obs.site)
    try:
        status = drive.slew(-80.0, -25.0, "HADEC")  # a long slew: tens of seconds of simulated time
        wait_for(lambda: drive.state.get(as_string=True) == "SLEWING", 10, what="slewing")
        drive.stop(success=True)
        status.wait(10)
        assert status.done and status.success
        wait_for(lambda: drive.state.get(as_string=True) == "STOPPED", 10, what="drive stopped")
        drive.stop(success=True)  # nothing of ours under way: a settled or stopped drive is left alone
        later = drive.slew(-80.0, -25.0, "HADEC")
        wait_for(lambda: drive.state.get(as_string=True) == "SLEWING", 10, what="slewing again")
        drive.stop()
        with pytest.raises(DeviceFault):
            later.wait(10)
    finally:
        drive.stop_heartbeat()
