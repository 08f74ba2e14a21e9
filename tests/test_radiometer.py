"""RAD IOC: sample blocks over Channel Access (pyepics), physics against independent computations.

The pure tests check the processing chain and the radiometer equation in-process; the others start real
IOC subprocesses (RAD with the real DRV, WX and NDI IOCs) and read the sample stream like any client.
"""

from __future__ import annotations

import math
import threading
import time

import epics
import numpy as np
import pytest

from iocs.radiometer import SamplePipeline
from iocs.sim import radiometer as rsim
from obsctl import blocks, sky
from obsctl.catalog import load_catalog
from obsctl.clock import ObservatoryClock
from obsctl.site import load_site
from tests.conftest import wait_for
from tests.helpers import get, put, put_rejected

try:
    from iocs.sim.weather import true_weather
except ImportError:  # the weather simulator is optional for the radiometer
    def true_weather(t: float, seed: int) -> sky.Weather:
        return sky.Weather()

C = blocks.C


class BlockMonitor:
    """A pyepics monitor on BLK_RBV that keeps every new block (callbacks run in libca's thread)."""

    def __init__(self, name: str):
        self.lock = threading.Lock()
        self.blocks: list[blocks.Block] = []
        self.arrivals: list[float] = []
        self.tracker = blocks.LossTracker()
        self.pv = epics.PV(name, auto_monitor=True, callback=self._on_value)
        self.pv.wait_for_connection(5.0)

    def _on_value(self, value=None, **kw) -> None:
        b = blocks.try_unpack(value)
        if b is None:
            return
        with self.lock:
            if self.tracker.add(b):
                self.blocks.append(b)
                self.arrivals.append(time.time())

    def data(self, where=None) -> np.ndarray:
        """Columns of every block received so far (only blocks with ``where(block)`` true), (NCOL, n)."""
        with self.lock:
            return blocks.concat([b for b in self.blocks if where is None or where(b)])

    def last_time(self) -> float:
        with self.lock:
            return float(self.blocks[-1].col("T")[-1]) if self.blocks and self.blocks[-1].nsamp else -math.inf

    def collect(self, select, n: int, timeout: float, what: str, where=None) -> np.ndarray:
        """Wait until at least ``n`` samples satisfy ``select(data) -> bool mask``; return the first n.

        ``where(block)`` restricts the search to blocks taken with given settings (header values).
        """
        out: list[np.ndarray] = []

        def enough() -> bool:
            d = self.data(where)
            if d.shape[1] == 0:
                return False
            out[:] = [d[:, select(d)]]
            return out[0].shape[1] >= n

        wait_for(enough, timeout, poll=0.05, what=what)
        return out[0][:, :n]

    def close(self) -> None:
        self.pv.clear_callbacks()
        self.pv.disconnect()


def _clock(obs) -> ObservatoryClock:
    return ObservatoryClock.from_env({"OBSCTL_CLOCK": obs.state.clock})


def _flags(d: np.ndarray, bits: int) -> np.ndarray:
    return (d[C["FLAGS"]].astype(np.int64) & bits) == bits


def _chunk_sigma(x: np.ndarray, per_chunk: int) -> float:
    """Standard error of the mean of ``x`` from the scatter of chunk means (keeps slow drifts in)."""
    m = len(x) // per_chunk
    means = x[:m * per_chunk].reshape(m, per_chunk).mean(axis=1)
    return float(np.std(means, ddof=1) / math.sqrt(m))


# ---- pure: processing chain and physics ---------------------------------------------------------
def _rows(n: int, counts: np.ndarray, flags: np.ndarray | None = None) -> np.ndarray:
    t = 1.8e9 + np.arange(n) / 100.0
    f = np.full(n, blocks.FLAG_POS_VALID | blocks.FLAG_ON_SOURCE) if flags is None else flags
    return np.vstack([t, np.linspace(0, 1, n), np.zeros(n), counts, counts + 1, f]).astype(float)


def test_pipeline_median_removes_spike_and_keeps_time_alignment():
    counts = np.full(40, 1000.0)
    counts[17] = 9e6  # one interference spike
    raw = _rows(40, counts)
    p = SamplePipeline(median=5, avg=1)
    out = np.hstack([p.push(raw[:, i:i + 7]) for i in range(0, 40, 7)])  # chunking must not matter
    assert out.shape[1] == 38  # the newest (5-1)/2 samples wait for context
    np.testing.assert_array_equal(out[0], raw[0, :38])  # a centred filter: no time shift
    assert np.all(out[3] == 1000.0) and np.all(out[4] == 1001.0)


def test_pipeline_boxcar_average_and_flags():
    counts = np.arange(12, dtype=float)
    flags = np.full(12, blocks.FLAG_POS_VALID | blocks.FLAG_ON_SOURCE)
    flags[5] = blocks.FLAG_DIODE_ON  # position invalid, off source, diode on in one raw sample
    raw = _rows(12, counts, flags)
    p = SamplePipeline(median=1, avg=4)
    out = np.hstack([p.push(raw[:, :5]), p.push(raw[:, 5:])])
    assert out.shape[1] == 3
    np.testing.assert_allclose(out[3], [1.5, 5.5, 9.5])
    np.testing.assert_allclose(out[0], raw[0].reshape(3, 4).mean(axis=1))  # time = centroid
    f = out[5].astype(int)
    assert f[0] == f[2] == blocks.FLAG_POS_VALID | blocks.FLAG_ON_SOURCE
    assert f[1] == blocks.FLAG_DIODE_ON  # AND for valid/on-source, OR for the rest


def test_radiometer_equation_and_independent_polarisations():
    site = load_site()
    rx = site.receivers[0]
    radio = rsim.Radiometer(site)
    rate, n = 400.0, 20000
    k0 = 10**12
    t = (k0 + np.arange(n)) / rate
    tsys = np.full(n, 45.0)
    m = radio.measure(t, k0, rate, tsys, np.zeros(n), rx)
    expected = 45.0 / math.sqrt(rx.bandwidth_mhz * 1e6 / rate)  # dT = T / sqrt(B tau)
    for pol in ("lcp", "rcp"):
        white = np.diff(m[pol]) / math.sqrt(2)  # differences remove the slow gain drift
        assert abs(np.std(white) / expected - 1) < 0.03
        assert abs(np.mean(m[pol]) / 45.0 - 1) < 0.01
    assert abs(np.corrcoef(np.diff(m["lcp"]), np.diff(m["rcp"]))[0, 1]) < 0.05
    # the gain drift has the documented amplitude: one_over_f_k at T = receiver temperature
    drift = (m["gain_lcp"] - 1) * rx.tsys_k
    assert 0.2 * site.simulation.one_over_f_k < np.std(drift) < 3 * site.simulation.one_over_f_k
    # deterministic: the same grid indices give the same noise in a fresh simulator
    again = rsim.Radiometer(site).measure(t[:100], k0, rate, tsys[:100], np.zeros(100), rx)
    np.testing.assert_array_equal(again["lcp"], m["lcp"][:100])


def test_adc_clips_and_calibrates():
    rx = load_site().receivers[0]
    per_k = 1.0 / rsim.calibration(0, rx)
    counts, clipped = rsim.adc(np.array([40.0, 1e6, -1e6, np.nan]), per_k, 1200.0)
    assert counts[0] == round(40.0 * rx.counts_per_k + 1200) and not clipped[0]
    assert counts[1] == blocks.ADC_MAX and counts[2] == blocks.ADC_MIN and clipped[1] and clipped[2]
    assert counts[3] == 0 and not clipped[3]
    assert rsim.calibration(10, rx) == pytest.approx(10.0 / 2**23 / 0.25)  # PSU rail behind a 1:4 divider


# ---- IOC: streaming ------------------------------------------------------------------------------
def test_loss_free_streaming_at_400_hz_synchronous_with_drive(observatory):
    obs = observatory(["DRV", "WX", "RAD"], speed=1, epoch="2026-11-21T22:00:00")
    rate = 400.0
    put(obs.pv("RAD", "RATE_SP"), rate)
    put(obs.pv("DRV", "WATCHDOG_ENA_SP"), "DISABLED")
    wait_for(lambda: get(obs.pv("RAD", "POS_STS"), as_string=True) == "OK", 10, what="drive position")
    time.sleep(0.5)  # let the stream switch to the new rate
    pkts: list[np.ndarray] = []
    pkt_pv = epics.PV(obs.pv("DRV", "POS_PKT"), auto_monitor=True,
                      callback=lambda value=None, **kw: pkts.append(np.array(value, dtype=float)))
    mon = BlockMonitor(obs.pv("RAD", "BLK_RBV"))
    ha0 = get(obs.pv("DRV", "HA_RBV"))
    dec0 = get(obs.pv("DRV", "DEC_RBV"))
    put(obs.pv("DRV", "SLEW_FRAME_SP"), "HADEC")
    put(obs.pv("DRV", "SLEW_X_SP"), ha0 - 3.0)
    put(obs.pv("DRV", "SLEW_Y_SP"), dec0 + 2.0)
    put(obs.pv("DRV", "MODE_CMD"), "SLEW")
    time.sleep(7.0)
    mon.close()
    pkt_pv.clear_callbacks()
    pkt_pv.disconnect()
    d = blocks.concat([b for b in mon.blocks if b.rate_hz == rate])
    assert mon.tracker.lost == 0, f"lost samples: gaps {mon.tracker.gaps}"
    assert d.shape[1] > 0.9 * 6.5 * rate
    t = d[C["T"]]
    k = t * rate
    assert np.max(np.abs(k - np.round(k))) < 1e-3, "sample times off the 1/rate grid"
    np.testing.assert_array_equal(np.diff(np.round(k)), 1.0)  # every grid point, none skipped or doubled
    arrivals = np.array(mon.arrivals)
    counts = np.cumsum([b.nsamp for b in mon.blocks])
    span = arrivals[-1] - arrivals[0]
    delivered = (counts[-1] - counts[0]) / span
    assert abs(delivered / rate - 1) < 0.1, f"{delivered:.1f} samples/s delivered"
    clock = _clock(obs)
    latency = arrivals - np.array([clock.real_time(b.col("T")[-1]) for b in mon.blocks])
    assert np.median(latency) < 0.5
    assert np.all(_flags(d, blocks.FLAG_POS_VALID))
    # position/time skew: the block's HA at each drive packet's time vs the packet, while slewing
    p = np.array([x for x in pkts if x.size >= 11])
    moving = (p[:, 0] > t[0]) & (p[:, 0] < t[-1]) & (np.abs(p[:, 5]) > 0.2)
    assert moving.sum() > 20, "the drive did not slew during the stream"
    ha_blk = np.interp(p[moving, 0], t, d[C["HA"]])
    dec_blk = np.interp(p[moving, 0], t, d[C["DEC"]])
    skew_s = np.abs(ha_blk - p[moving, 3]) / np.abs(p[moving, 5])
    print(f"\nRAD stream: {delivered:.1f} samples/s, 0 lost, latency median {np.median(latency) * 1e3:.0f} ms "
          f"max {latency.max() * 1e3:.0f} ms; max HA skew {skew_s.max() * 1e3:.3f} ms "
          f"({np.abs(ha_blk - p[moving, 3]).max() * 3600:.3f} arcsec) over {moving.sum()} packets")
    assert skew_s.max() < 1.0 / rate  # positions belong to the sample's own time to better than a sample
    assert np.max(np.abs(dec_blk - p[moving, 4])) < 1e-3
    # Az/El columns follow from the observed HA/Dec
    from obsctl import astro
    az, el = astro.hadec_to_azel(d[C["HA"]], d[C["DEC"]], obs.site.latitude_deg)
    np.testing.assert_allclose(d[C["EL"]], el, atol=1e-9)


# ---- IOC: acceptance on a calibrator ----------------------------------------------------------------
@pytest.mark.slow
def test_calibrator_deflection_matches_flux_gain_and_atmosphere(observatory):
    obs = observatory(["DRV", "WX", "RAD"], speed=60, epoch="2026-11-21T22:00:00")
    site = obs.site
    rx = site.receivers[0]  # RAD reads the first receiver while no NDI selects another
    src = load_catalog(site.catalog_path).get("PictorA")
    fwhm = site.beam_fwhm_deg(rx.freq_mhz)
    rate = get(obs.pv("RAD", "RATE_SP"))
    clock = _clock(obs)
    mon = BlockMonitor(obs.pv("RAD", "BLK_RBV"))
    put(obs.pv("DRV", "WATCHDOG_ENA_SP"), "DISABLED")
    put(obs.pv("DRV", "TRACK_NAME_SP"), src.name)
    dwell = int(20 * rate)  # 20 s of observatory time per phase
    phases: dict[float, list[np.ndarray]] = {}
    dec_on = None
    for off in (0.0, 3 * fwhm, 0.0, -3 * fwhm, 0.0):
        put(obs.pv("DRV", "OFF_DEC_SP"), off)
        t_cmd = clock.now()
        if dec_on is None:
            put(obs.pv("DRV", "MODE_CMD"), "TRACK")
            on = mon.collect(lambda d, t0=t_cmd: (d[C["T"]] > t0) & _flags(d, blocks.FLAG_ON_SOURCE), 1, 60,
                             "on source")
            dec_on = float(on[C["DEC"]][0])

        def sel(d, t0=t_cmd, dec=dec_on + off):
            return ((d[C["T"]] > t0) & _flags(d, blocks.FLAG_ON_SOURCE | blocks.FLAG_POS_VALID)
                    & (np.abs(d[C["DEC"]] - dec) < 0.01))

        phases.setdefault(off, []).append(mon.collect(sel, dwell, 60, f"{dwell} samples at offset {off:.3f}"))
    mon.close()
    on = np.hstack(phases[0.0])
    off_all = np.hstack(phases[3 * fwhm] + phases[-3 * fwhm])  # symmetric: elevation terms cancel
    per_chunk = int(rate)  # 1 s chunks
    # expected: point source, antenna gain, atmosphere at the observed elevation (independent of RAD)
    t_mid = float(np.mean(on[C["T"]]))
    tau_z = sky.tau_zenith(rx, true_weather(t_mid, site.simulation.seed))
    _, trans = sky.atmosphere(on[C["EL"]], tau_z, site.simulation.t_atm_k)
    expected = rx.gain_k_per_jy * src.flux_jy(rx.freq_mhz) * float(np.mean(trans))
    for dvm in ("DVM1", "DVM2"):  # LCP and RCP
        delta = float(np.mean(on[C[dvm]]) - np.mean(off_all[C[dvm]]))
        sigma = math.hypot(_chunk_sigma(on[C[dvm]], per_chunk), _chunk_sigma(off_all[C[dvm]], per_chunk))
        print(f"\n{dvm}: on-off {delta:.4f} K, expected {expected:.4f} K (ratio {delta / expected:.4f}), "
              f"sigma {sigma:.4f} K, el {np.mean(on[C['EL']]):.2f} deg, tau_z {tau_z:.5f}")
        assert abs(delta - expected) < 3 * sigma + 0.01 * expected


@pytest.mark.slow
def test_sky_dip_gives_zenith_opacity(observatory):
    obs = observatory(["DRV", "WX", "RAD"], speed=60, epoch="2026-11-21T22:00:00")
    site = obs.site
    rx = site.receivers[0]
    az = 0.0  # north, along the meridian: check independently that no source is near the dip
    model = sky.SkyModel(site)
    clock = _clock(obs)
    rate = get(obs.pv("RAD", "RATE_SP"))
    mon = BlockMonitor(obs.pv("RAD", "BLK_RBV"))
    put(obs.pv("DRV", "WATCHDOG_ENA_SP"), "DISABLED")
    put(obs.pv("DRV", "SLEW_FRAME_SP"), "AZEL")
    airmass, temps = [], []
    from obsctl import astro
    for el in (90.0, 60.0, 40.0, 30.0, 20.0, 15.0):
        ha, dec = astro.azel_to_hadec(az, el, site.latitude_deg)
        t_cmd = clock.now()
        src = model.source_temperature(np.array([ha]), np.array([dec]), np.array([t_cmd + 60.0]), rx)
        assert src[0] < 0.01, f"a source is in the dip at el {el}"
        put(obs.pv("DRV", "SLEW_X_SP"), az)
        put(obs.pv("DRV", "SLEW_Y_SP"), el)
        put(obs.pv("DRV", "MODE_CMD"), "SLEW")

        def sel(d, t0=t_cmd, el=el):
            return (d[C["T"]] > t0) & _flags(d, blocks.FLAG_ON_SOURCE) & (np.abs(d[C["EL"]] - el) < 0.05)

        d = mon.collect(sel, int(10 * rate), 60, f"10 s at el {el}")
        airmass.append(float(np.mean(sky.airmass(d[C["EL"]]))))
        temps.append(float(np.mean((d[C["DVM1"]] + d[C["DVM2"]]) / 2)))
    mon.close()
    slope, icpt = np.polyfit(airmass, temps, 1)
    resid = np.array(temps) - (slope * np.array(airmass) + icpt)
    tau_fit = slope / site.simulation.t_atm_k
    tau_z = sky.tau_zenith(rx, true_weather(t_cmd, site.simulation.seed))
    print(f"\nsky dip: T = {icpt:.3f} K + {slope:.4f} K x airmass (rms resid {np.std(resid) * 1e3:.1f} mK); "
          f"tau fit {tau_fit:.5f} vs tau_zenith {tau_z:.5f} ({tau_fit / tau_z - 1:+.1%})")
    assert np.std(resid) < 0.02 * (max(temps) - min(temps))  # linear in airmass
    assert abs(tau_fit / tau_z - 1) < 0.10
    # the intercept is the receiver plus the CMB (an airmass-0 atmosphere emits nothing)
    assert abs(icpt - (rx.tsys_k + site.simulation.t_cmb_k)) < 0.5


# ---- IOC: settings, inputs, rejections ---------------------------------------------------------
def test_bad_inputs_rejected_and_old_values_kept(observatory):
    obs = observatory(["RAD"])
    cases = {
        "RATE_SP": (50.0, [0.5, 2500.0, float("nan"), -1.0, "fast"]),
        "AVG_SP": (1, [0, 1001, -3]),
        "BLK_PERIOD_SP": (0.1, [0.0, 5.0, float("nan")]),
        "HIST_LEN_SP": (600, [5, 200_000, -1, "long"]),
        "REPLAY_SP": (0, [-1, 1_500_000_000, "all"]),
    }
    for signal, (good, bads) in cases.items():
        name = obs.pv("RAD", signal)
        for bad in bads:
            assert put_rejected(name, bad), f"{signal} accepted {bad!r}"
            assert get(name) == good, f"{signal} changed after rejecting {bad!r}"
    for signal, good, bads in (("FILTER_SP", "NONE", ["MEDIAN7", "median3x", 3, 99]),
                               ("DVM1_SEL_SP", "LCP total power", ["bogus", 16, 200]),
                               ("ACQ_CMD", "RUN", ["GO", 5])):
        name = obs.pv("RAD", signal)
        for bad in bads:
            assert put_rejected(name, bad), f"{signal} accepted {bad!r}"
            assert get(name, as_string=True) == good
    assert put_rejected(obs.pv("RAD", "RATE_SP"), 400.0) is None
    assert get(obs.pv("RAD", "RATE_SP")) == 400.0
    assert put_rejected(obs.pv("RAD", "FILTER_SP"), "MEDIAN5") is None
    assert "rate" in get(obs.pv("RAD", "RATE_SP.DESC")).lower() and get(obs.pv("RAD", "RATE_SP.EGU")) == "Hz"


def test_without_drive_inputs_average_and_acquisition_control(observatory):
    obs = observatory(["RAD"], speed=20)
    rad = {s: obs.pv("RAD", s) for s in ("POS_STS", "BLK_RBV", "AVG_SP", "DVM1_SEL_SP", "DVM2_SEL_SP", "ACQ_CMD",
                                         "ACQ_STS", "SAMPLES_RBV", "DVM1_RBV", "DVM1_EGU_RBV", "RATE_SP")}
    site = obs.site
    rx = site.receivers[0]
    assert get(rad["POS_STS"], as_string=True) == "NO_POSITION"
    mon = BlockMonitor(rad["BLK_RBV"])
    rate = get(rad["RATE_SP"])
    d = mon.collect(lambda d: np.ones(d.shape[1], bool), int(20 * rate), 30, "20 s of samples")
    assert np.all(np.isnan(d[C["HA"]])) and not np.any(_flags(d, blocks.FLAG_POS_VALID))
    # noise of the RF inputs from the radiometer equation, with the zenith sky as the physics fallback
    tsys = float(np.mean(d[C["DVM1"]]))
    tau_z = sky.tau_zenith(rx, true_weather(float(d[C["T"]][0]), site.simulation.seed))
    t_atm, trans = sky.atmosphere(90.0, tau_z, site.simulation.t_atm_k)
    assert abs(tsys - (rx.tsys_k + t_atm + site.simulation.t_cmb_k * trans)) < 0.2
    sigma = tsys / math.sqrt(rx.bandwidth_mhz * 1e6 / rate)
    white1 = np.std(np.diff(d[C["DVM1"]])) / math.sqrt(2)
    assert abs(white1 / sigma - 1) < 0.1
    # boxcar of 4: a quarter of the rate, half the noise, times at the centroid of the raw grid
    put(rad["AVG_SP"], 4)
    d4 = mon.collect(lambda d: np.ones(d.shape[1], bool), int(20 * rate / 4), 40, "averaged samples",
                     where=lambda b: b.avg == 4)
    assert mon.blocks[-1].rate_hz == rate / 4
    np.testing.assert_allclose(np.diff(d4[C["T"]]), 4 / rate, atol=1e-6)
    k = d4[C["T"]] * rate - 1.5
    assert np.max(np.abs(k - np.round(k))) < 1e-3
    white4 = np.std(np.diff(d4[C["DVM1"]])) / math.sqrt(2)
    assert abs(white4 / (sigma / 2) - 1) < 0.15
    put(rad["AVG_SP"], 1)
    # voltage inputs: calibration reference, ground, an unlinked sensor reads nothing
    put(rad["DVM1_SEL_SP"], "Cal reference 1 V")
    put(rad["DVM2_SEL_SP"], "Vacuum gauge")  # TMS is not running: no data
    wait_for(lambda: get(rad["DVM1_EGU_RBV"]) == "V", 5, what="DVM1 unit V")
    dv = mon.collect(lambda d: np.ones(d.shape[1], bool), 100, 20, "voltage samples", where=lambda b: b.sel == (5, 9))
    assert abs(np.mean(dv[C["DVM1"]]) - 1.0) < 1e-5 and np.std(dv[C["DVM1"]]) < 2e-5
    assert np.all(np.isnan(dv[C["DVM2"]])) and np.all(_flags(dv, blocks.FLAG_DVM2_NODATA))
    assert abs(get(rad["DVM1_RBV"]) - 1.0) < 1e-4
    # acquisition stop/run: no samples while stopped, indices stay contiguous, a time gap appears
    put(rad["ACQ_CMD"], "STOP")
    wait_for(lambda: get(rad["ACQ_STS"], as_string=True) == "STOP", 5, what="ACQ_STS STOP")
    time.sleep(0.3)
    n_stop = get(rad["SAMPLES_RBV"])
    time.sleep(1.0)
    assert get(rad["SAMPLES_RBV"]) == n_stop
    t_stop = mon.last_time()
    put(rad["ACQ_CMD"], "RUN")
    mon.collect(lambda d: d[C["T"]] > t_stop + 5.0, 10, 20, "samples after RUN")
    mon.close()
    assert mon.tracker.lost == 0
    t = blocks.concat(mon.blocks)[C["T"]]
    assert np.max(np.diff(t)) > 5.0  # the stop shows as a gap in time, not in the indices


def test_noise_diode_step_receiver_select_and_housekeeping_inputs(observatory):
    pytest.importorskip("iocs.instrumentation")
    pytest.importorskip("iocs.housekeeping")
    obs = observatory(["NDI", "TMS", "RAD"], speed=20)
    site = obs.site
    rx_name = site.receivers[0].name
    put(obs.pv("NDI", "RX_SEL_SP"), rx_name)
    put(obs.pv("NDI", "ND_SEL_SP"), 0)
    wait_for(lambda: get(obs.pv("RAD", "RX_RBV")) == rx_name, 10, what="RAD follows NDI:RX_SEL_SP")
    mon = BlockMonitor(obs.pv("RAD", "BLK_RBV"))
    rate = get(obs.pv("RAD", "RATE_SP"))
    t0 = mon.last_time() + 1.0
    off = mon.collect(lambda d: (d[C["T"]] > t0) & ~_flags(d, blocks.FLAG_DIODE_ON), int(20 * rate), 30, "diode off")
    put(obs.pv("NDI", "ND_SEL_SP"), 2)  # bit 1: receiver 0 HIGH diode
    wait_for(lambda: get(obs.pv("NDI", "ND_K_RBV")) > 0, 10, what="ND_K_RBV > 0")
    nd_k = get(obs.pv("NDI", "ND_K_RBV"))
    assert nd_k == pytest.approx(site.receivers[0].noise_diode_high_k, rel=0.05)
    t1 = mon.last_time() + 1.0
    on = mon.collect(lambda d: (d[C["T"]] > t1) & _flags(d, blocks.FLAG_DIODE_ON), int(20 * rate), 30, "diode on")
    mon.close()
    for dvm in ("DVM1", "DVM2"):
        delta = float(np.mean(on[C[dvm]]) - np.mean(off[C[dvm]]))
        sigma = math.hypot(_chunk_sigma(on[C[dvm]], int(rate)), _chunk_sigma(off[C[dvm]], int(rate)))
        print(f"\n{dvm}: diode step {delta:.4f} K vs ND_K_RBV {nd_k:.4f} K (sigma {sigma:.4f})")
        assert abs(delta - nd_k) < 3 * sigma + 0.005 * nd_k
    put(obs.pv("NDI", "ND_SEL_SP"), 0)
    # housekeeping inputs read the linked TMS sensors in volts
    put(obs.pv("RAD", "DVM1_SEL_SP"), "PSU +15 V")
    put(obs.pv("RAD", "DVM2_SEL_SP"), "Room temp LM35")
    wait_for(lambda: get(obs.pv("RAD", "DVM2_EGU_RBV")) == "V", 5, what="DVM2 unit V")
    mon = BlockMonitor(obs.pv("RAD", "BLK_RBV"))
    d = mon.collect(lambda d: ~_flags(d, blocks.FLAG_DVM1_NODATA | blocks.FLAG_DVM2_NODATA), 200, 20,
                    "housekeeping samples", where=lambda b: b.sel == (10, 14))
    mon.close()
    rail = get(obs.pv("TMS", "PSU_P15_RBV"))
    room = get(obs.pv("TMS", "ROOM_TEMP_RBV"))
    assert abs(np.mean(d[C["DVM1"]]) - rail) < 0.02  # the DVM reads the rail through its divider
    assert abs(np.mean(d[C["DVM2"]]) - 0.010 * room) < 0.005  # LM35: 10 mV/degC
    # counts behind the divider: rail/4 on a +-10 V, 24-bit converter
    offset = get(obs.pv("RAD", "DVM1_OFS_RBV"))
    assert abs(np.mean(d[C["DVM1_RAW"]]) - offset - rail / 4 * 2**23 / 10.0) < 0.02 / 4 * 2**23 / 10


# ---- IOC: boot id and the history of blocks for replay ----------------------------------------------
def test_history_replays_blocks_bit_identical_and_says_what_is_gone(observatory):
    t_start = time.time()
    obs = observatory(["RAD"], speed=20)
    pv = {s: obs.pv("RAD", s) for s in ("BLK_RBV", "HIST_RBV", "REPLAY_SP", "BOOT_RBV", "HIST_FIRST_RBV",
                                        "HIST_LEN_SP")}
    boot = int(get(pv["BOOT_RBV"]))
    assert t_start - 60 < boot / 1e6 < time.time(), "boot id is the IOC's real start time in us"
    live = BlockMonitor(pv["BLK_RBV"])
    wait_for(lambda: len(live.blocks) >= 30, 30, what="30 live blocks")
    replayed: list[blocks.Block] = []
    hist = epics.PV(pv["HIST_RBV"], auto_monitor=True,
                    callback=lambda value=None, **kw: replayed.append(b) if (b := blocks.try_unpack(value)) else None)
    assert hist.wait_for_connection(5.0)
    with live.lock:
        k = live.blocks[-20].seq
        assert all(b.boot == boot for b in live.blocks)
    put(pv["REPLAY_SP"], k)
    wait_for(lambda: len(replayed) >= 20, 10, what="20 replayed blocks")
    time.sleep(0.3)
    seqs = [b.seq for b in replayed]
    assert seqs[0] == k and np.all(np.diff(seqs) == 1), f"replay of {k}: {seqs[:5]}..."
    assert all(b.replay == k and b.answer == k and b.boot == boot for b in replayed)
    with live.lock:
        by_seq = {b.seq: b for b in live.blocks}
    for b in replayed:
        if b.seq in by_seq:  # the same samples, bit for bit
            assert b.first == by_seq[b.seq].first
            np.testing.assert_array_equal(b.data, by_seq[b.seq].data)
    # a short history: a replay from an evicted block starts at the oldest block held, saying the rest is gone
    put(pv["HIST_LEN_SP"], 10)
    wait_for(lambda: get(pv["HIST_FIRST_RBV"]) > k + 20, 10, what="the history to move on")
    replayed.clear()
    put(pv["REPLAY_SP"], k)
    oldest = int(get(pv["HIST_FIRST_RBV"]))
    wait_for(lambda: len(replayed) >= 10, 10, what="the short replay")
    time.sleep(0.3)
    assert replayed[0].seq > k and replayed[0].replay == k and len(replayed) == 10
    assert all(b.answer == replayed[0].seq for b in replayed), "every block says where the answer started"
    assert oldest - 5 <= replayed[0].seq <= oldest
    hist.clear_callbacks()
    hist.disconnect()
    live.close()
    assert live.tracker.ok


def test_settings_survive_a_restart_through_autosave(observatory):
    """RAD's settings are written to the autosave file and come back when the supervisor restarts the IOC."""
    import json
    import os
    import signal

    from obsctl import launcher

    obs = observatory(["RAD"], speed=60.0, epoch="2026-11-21T20:00:00")
    rad = lambda sig: obs.pv("RAD", sig)  # noqa: E731
    settings = {"RATE_SP": 40.0, "AVG_SP": 4, "FILTER_SP": "MEDIAN5", "DVM1_SEL_SP": "RCP total power",
                "BLK_PERIOD_SP": 0.2}
    for sig, value in settings.items():
        put(rad(sig), value)
    saved = obs.state_dir / "autosave" / "RAD.json"
    wait_for(lambda: saved.exists() and json.loads(saved.read_text())["AVG_SP"] == 4, 10, what="RAD autosave")
    assert json.loads(saved.read_text())["FILTER_SP"] == "MEDIAN5"
    proc = next(p for p in launcher.ObservatoryState.load(obs.state_dir).processes if "RAD" in p.devs)
    boot = get(rad("BOOT_RBV"))
    os.kill(proc.pid, signal.SIGKILL)

    def restarted() -> bool:
        try:
            return epics.caget(rad("BOOT_RBV"), timeout=1.0, use_monitor=False) not in (None, boot)
        except epics.ca.ChannelAccessGetFailure:  # the old circuit is still going down
            return False

    wait_for(restarted, 60, poll=0.2, what="the supervisor restarting RAD")
    wait_for(lambda: get(rad("AVG_SP")) == 4, 20, what="RAD's saved settings restored")
    for sig, value in settings.items():
        got = get(rad(sig), as_string=isinstance(value, str))
        assert got == value, (sig, got, value)
    ioc_log = (obs.state_dir / f"ioc-{proc.name}.log").read_text()
    assert f"restored {len(json.loads(saved.read_text()))} saved settings" in ioc_log

    # an orderly stop saves a change made since the last periodic check (every second)
    put(rad("AVG_SP"), 7)
    launcher.stop(obs.state_dir)
    assert json.loads(saved.read_text())["AVG_SP"] == 7
    assert "killed" not in (obs.state_dir / launcher.LOG_FILE).read_text()

    # a file the IOC cannot read is set aside, and the IOC starts from the site's defaults
    from iocs.autosave import Autosave

    bad = Autosave(obs.state_dir / "scratch", "XX")
    bad.path.parent.mkdir()
    bad.path.write_text("{not json")
    assert bad.load() == {} and bad.path.with_suffix(".bad").exists() and not bad.path.exists()
