"""Mapping plans (raster_map, sun_moon_map) against real IOC subprocesses and a real RunEngine.

Expected values come from independent computations: the catalog flux at the receiver frequency times the
gain and the atmosphere's transmission (obsctl.sky with the simulator's true weather), an injected pointing
error (simulation truth, unknown to the pointing model), astropy's ephemeris for the sun and the moon (their
place and apparent diameter) and the sky model's antenna temperature at the moon's centre.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
from bluesky import RunEngine
from bluesky.utils import RunEngineInterrupted

from devices import registry
from iocs.sim.weather import true_weather
from obsctl import astro, sky
from obsctl.catalog import load_catalog
from obsctl.clock import ObservatoryClock
from plans import ObsMeta
from plans.mapping import (
    disk_diameter_deg,
    disk_hpw_deg,
    grid_map,
    half_power_region,
    raster_map,
    sun_moon_map,
)
from tests.helpers import get

SPEED = 60
NIGHT = "2026-11-21T22:00:00"  # PictorA (Dec -45.8) well up, sun down
MOON_NIGHT = "2026-11-18T18:00:00"  # moon at 66 deg elevation, 104 deg from the sun (set)
MORNING = "2026-11-21T08:00:00"  # sun at about 63 deg elevation
META = ObsMeta(project="mapping", pi="A. Scientist", observer="B. Observer", obs_number=3, obs_class="ROP")


def _setup(observatory, epoch: str, devs=("DRV", "WX", "RAD", "NDI")):
    obs = observatory(list(devs), speed=SPEED, epoch=epoch)
    clock = ObservatoryClock.from_env({"OBSCTL_CLOCK": obs.state.clock})
    d = {"drive": registry.drive(obs.site), "radiometer": registry.radiometer(obs.site, clock=clock),
         "instrumentation": registry.instrumentation(obs.site)}
    RE = RunEngine({}, call_returns_result=True)
    docs: list[tuple[str, dict]] = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    return obs, clock, d, RE, docs


def _streams(docs) -> dict[str, list[dict]]:
    """Events (and event pages) per stream name."""
    desc = {d["uid"]: d["name"] for n, d in docs if n == "descriptor"}
    out: dict[str, list[dict]] = {}
    for n, d in docs:
        if n in ("event", "event_page"):
            out.setdefault(desc[d["descriptor"]], []).append(d)
    return out


def _check_documents(docs, res: dict, plan_name: str) -> np.ndarray:
    """Start, achieved, grid and samples documents of a finished map; returns the grid map."""
    start = next(d for n, d in docs if n == "start")
    assert start["plan_name"] == plan_name and start["pi"] == META.pi and start["requested"]["rows"] == res["rows"]
    assert next(d for n, d in docs if n == "stop")["exit_status"] == "success"
    st = _streams(docs)
    (ach,) = st["achieved"]
    assert ach["data"]["achieved_peak_k"] == pytest.approx(res["peak_k"])
    assert ach["data"]["achieved_rows"] == res["rows"] and ach["data"]["achieved_n_samples"] == res["n_samples"]
    (grid,) = st["grid"]
    xs, ys, t_k = (np.asarray(grid["data"][f"grid_{k}"]) for k in ("x_deg", "y_deg", "t_k"))
    assert t_k.shape == (ys.size, xs.size) == (res["ny"], res["nx"])
    assert np.all(np.diff(xs) > 0) and np.all(np.diff(ys) > 0) and np.isfinite(t_k).mean() > 0.95
    idx = np.concatenate([p["data"]["radiometer_index"] for p in st["samples"]])
    assert idx.size == res["n_samples"] and np.all(np.diff(idx) == 1) and res["lost"] == 0
    assert len(st["samples"]) > res["rows"] // 2  # collected row by row, not only at the end
    return t_k


def test_disc_width_and_gridding_helpers():
    # a point source is the beam; a disc many beams wide is its own diameter; the inversion round-trips
    assert disk_hpw_deg(0.0, 0.2) == 0.2 and disk_hpw_deg(1e-4, 0.2) == pytest.approx(0.2, rel=1e-4)
    assert disk_hpw_deg(5.0, 0.1) == pytest.approx(5.0, rel=3e-3)
    for diam, beam in ((0.52, 0.476), (0.52, 0.159), (0.53, 0.027)):
        assert disk_diameter_deg(disk_hpw_deg(diam, beam), beam) == pytest.approx(diam, rel=2e-3)
    assert disk_diameter_deg(0.9 * 0.3, 0.3) == 0.0  # narrower than the beam: unresolved
    # gridding a plane keeps it (the kernel averages), cells without samples within reach are NaN
    rng = np.random.default_rng(3)
    x, y = rng.uniform(-1, 1, 4000), rng.uniform(-0.5, 0.5, 4000)
    xs, ys, g = grid_map(x, y, 2 + 3 * x - y, 1.0, 0.5, 0.1, 0.05, 0.12)
    err = np.abs(g - (2 + 3 * xs[None, :] - ys[:, None]))
    assert g.shape == (11, 21) and err[1:-1, 1:-1].max() < 0.05 and err.max() < 0.2  # edges: one-sided
    _, _, g = grid_map(x[x < 0], y[x < 0], x[x < 0], 1.0, 0.5, 0.1, 0.05, 0.12)
    assert np.isnan(g[:, -1]).all() and np.isfinite(g[:, 0]).all()
    # the half-power region of a Gaussian: its centre, and the area of a circle of diameter FWHM
    xs = ys = np.linspace(-1.0, 1.0, 41)
    gauss = 3.0 * np.exp(-4 * math.log(2) * ((xs[None, :] - 0.13) ** 2 + (ys[:, None] + 0.07) ** 2) / 0.5**2)
    area, cx, cy = half_power_region(xs, ys, gauss, 1.5, (0.0, 0.0))
    assert cx == pytest.approx(0.13, abs=0.005) and cy == pytest.approx(-0.07, abs=0.005)
    assert 2 * math.sqrt(area / math.pi) == pytest.approx(0.5, rel=0.02)


def test_raster_map_of_a_calibrator_finds_its_position_and_peak(observatory):
    obs, clock, d, RE, docs = _setup(observatory, NIGHT)
    site = obs.site
    rx = site.receivers[0]
    src = load_catalog(site.catalog_path).get("PictorA")
    beam = site.beam_fwhm_deg(rx.freq_mhz)
    cosd = math.cos(math.radians(src.dec_deg))
    perr_ha, perr_dec = 0.04, -0.03  # the beam truly points this far from where the drive believes (deg)
    d["drive"].sim_perr_ha.set(perr_ha).wait(10)
    d["drive"].sim_perr_dec.set(perr_dec).wait(10)
    t0 = time.monotonic()
    res = RE(raster_map(d["drive"], d["radiometer"], "PictorA", width_deg=3 * beam, height_deg=3 * beam,
                        row_duration_s=30.0, instrumentation=d["instrumentation"], receiver=rx.name,
                        meta=META)).plan_result
    t_real = time.monotonic() - t0
    t_k = _check_documents(docs, res, "raster_map")
    expected = _expected_peak(site, rx, src, (res["t_start"] + res["t_end"]) / 2, res["el_deg"])
    err_x, err_y = (res["peak_x_deg"] - perr_ha * cosd) / beam, (res["peak_y_deg"] - perr_dec) / beam
    peak_err = res["peak_k"] / expected - 1
    print(f"\nraster map PictorA {res['rows']} rows x {res['row_length_deg']:.3f} deg, {res['nx']}x{res['ny']} cells: "
          f"peak {res['peak_k']:.4f} K vs {expected:.4f} K ({peak_err:+.2%}); position error x {err_x:+.4f} "
          f"y {err_y:+.4f} beam; fwhm {res['fwhm_x_deg']:.4f} {res['fwhm_y_deg']:.4f} vs {beam:.4f} deg; "
          f"{res['n_samples']} samples ({res['n_used']} on rows), lost {res['lost']}, dead time "
          f"{res['dead_time_frac']:.3%}, rows {res['row_time_frac']:.1%} of {res['duration_s']:.0f} s; "
          f"{t_real:.1f} s real")
    assert res["fit"] == "gaussian" and res["rows"] == 7
    assert abs(err_x) < 0.05 and abs(err_y) < 0.05
    assert abs(peak_err) < 0.03
    assert abs(res["fwhm_x_deg"] / beam - 1) < 0.05 and abs(res["fwhm_y_deg"] / beam - 1) < 0.05
    assert res["dead_time_frac"] < 0.01
    assert int(get(obs.pv("RAD", "AVG_SP"))) == 1  # the averaging set for the map was restored
    # the grid shows the source where the fit found it, at about the fitted peak (smoothed by the kernel)
    j, i = np.unravel_index(int(np.nanargmax(t_k)), t_k.shape)
    assert 0.8 < t_k[j, i] / res["peak_k"] < 1.02
    assert get(obs.pv("DRV", "STATE_STS"), as_string=True) == "STOPPED"


def _expected_peak(site, rx, src, t: float, el_deg: float) -> float:
    """gain * S(freq) * exp(-tau_z / sin el), tau_z from the simulator's weather at ``t``."""
    tau_z = sky.tau_zenith(rx, true_weather(t, site.simulation.seed))
    _, trans = sky.atmosphere(el_deg, tau_z, site.simulation.t_atm_k)
    return rx.gain_k_per_jy * src.flux_jy(rx.freq_mhz) * float(trans)


def test_moon_map_centre_diameter_and_brightness(observatory):
    obs, clock, d, RE, docs = _setup(observatory, MOON_NIGHT)
    site = obs.site
    rx = site.receiver("6cm")
    beam = site.beam_fwhm_deg(rx.freq_mhz)
    t0 = time.monotonic()
    res = RE(sun_moon_map(d["drive"], d["radiometer"], "moon", row_duration_s=20.0,
                          instrumentation=d["instrumentation"], receiver=rx.name, meta=META)).plan_result
    t_real = time.monotonic() - t0
    _check_documents(docs, res, "sun_moon_map")
    start = next(doc for n, doc in docs if n == "start")
    assert start["source"] == "moon" and start["receiver"] == "6cm" and -90 <= start["dec_deg"] <= 90
    # the sky model's antenna temperature at the moon's centre, through the atmosphere
    t_mid = (res["t_start"] + res["t_end"]) / 2
    loc = astro.site_location(site)
    ha, dec = astro.body_hadec("moon", t_mid, loc)
    model = sky.SkyModel(site)
    t_src = float(model.source_temperature(np.array([ha]), np.array([dec]), np.array([t_mid]), rx)[0])
    tau_z = sky.tau_zenith(rx, true_weather(t_mid, site.simulation.seed))
    expected = t_src * float(sky.atmosphere(res["el_deg"], tau_z, site.simulation.t_atm_k)[1])
    diam = 2 * astro.body_radius_deg("moon", t_mid, loc)
    off = math.hypot(res["centre_x_deg"], res["centre_y_deg"]) / beam
    print(f"\nmoon map at {rx.name} ({res['rows']} rows, {res['width_deg']:.3f} deg): centre offset {off:.4f} beam; "
          f"centre {res['centre_ta_k']:.2f} K vs sky model {expected:.2f} K "
          f"({res['centre_ta_k'] / expected - 1:+.2%}), Tb {res['tb_centre_k']:.1f} K; half-power width "
          f"{res['hpw_deg']:.4f} deg, disc {res['diameter_deg']:.4f} vs ephemeris {diam:.4f} deg "
          f"({res['diameter_ratio'] - 1:+.2%}); {res['n_samples']} samples, dead time {res['dead_time_frac']:.3%}; "
          f"{t_real:.1f} s real")
    assert off < 0.1
    assert res["diameter_ephem_deg"] == pytest.approx(diam, rel=1e-3)
    assert abs(res["diameter_ratio"] - 1) < 0.10
    assert abs(res["centre_ta_k"] / expected - 1) < 0.05
    assert res["n_clipped"] == 0 and res["lost"] == 0
    assert get(obs.pv("DRV", "STATE_STS"), as_string=True) == "STOPPED"


@pytest.mark.slow
def test_sun_map_with_solar_observing(observatory):
    obs, clock, d, RE, docs = _setup(observatory, MORNING)
    site = obs.site
    rx = site.receiver("1.3cm")  # the quiet sun clips the DVM at the longer wavelengths
    beam = site.beam_fwhm_deg(rx.freq_mhz)
    drive = d["drive"]
    with pytest.raises(Exception, match="sun"):  # not without asking for solar observing
        drive.track("sun").wait(30)
    assert get(obs.pv("DRV", "LIMIT_STS"), as_string=True) == "SUN"
    t0 = time.monotonic()
    res = RE(sun_moon_map(drive, d["radiometer"], "sun", row_spacing_deg=0.06, cell_deg=0.01, direction="dec",
                          row_duration_s=30.0, samples_per_beam=4, instrumentation=d["instrumentation"],
                          receiver=rx.name, meta=META)).plan_result
    t_real = time.monotonic() - t0
    _check_documents(docs, res, "sun_moon_map")
    off_x, off_y = res["centre_x_deg"] / beam, res["centre_y_deg"] / beam
    print(f"\nsun map at {rx.name} ({res['rows']} rows along Dec, {res['width_deg']:.3f} deg): centre offset "
          f"x {off_x:+.3f} y {off_y:+.3f} beam (row spacing {res['row_spacing_deg'] / beam:.1f} beams); centre "
          f"{res['centre_ta_k']:.0f} K, Tb {res['tb_centre_k']:.0f} K; disc {res['diameter_deg']:.4f} vs ephemeris "
          f"{res['diameter_ephem_deg']:.4f} deg ({res['diameter_ratio'] - 1:+.2%}); clipped {res['n_clipped']}; "
          f"{t_real:.1f} s real")
    # rows 1.7 beams apart: centred along the rows within a tenth of a beam, across them within a fifth of the
    # row spacing (the disc's edges between rows are interpolated)
    assert abs(off_y) < 0.1 and abs(res["centre_x_deg"]) < 0.2 * res["row_spacing_deg"]
    assert res["n_clipped"] == 0 and res["centre_ta_k"] > 1000
    assert get(obs.pv("DRV", "STATE_STS"), as_string=True) == "STOPPED"
    assert get(obs.pv("DRV", "SUN_OBS_SP"), as_string=True) == "YES"  # the last command asked for it
    drive.track("VirgoA").wait(120)  # a later command without it withdraws the permission
    assert get(obs.pv("DRV", "SUN_OBS_SP"), as_string=True) == "NO"


def test_bad_input_raises_before_moving_and_abort_leaves_the_drive_stopped(observatory):
    obs, clock, d, RE, docs = _setup(observatory, NIGHT)
    drive, rad = d["drive"], d["radiometer"]
    beam = obs.site.beam_fwhm_deg(obs.site.receivers[0].freq_mhz)
    state, ha = get(obs.pv("DRV", "STATE_STS"), as_string=True), get(obs.pv("DRV", "HA_RBV"))
    bad = [(raster_map, ("PictorA",), {"width_deg": -1.0}, "width_deg"),
           (raster_map, ("PictorA",), {"row_spacing_deg": 0.0}, "row_spacing_deg"),
           (raster_map, ("PictorA",), {"direction": "az"}, "direction"),
           (raster_map, ("PictorA",), {"row_duration_s": 0.5}, "row_duration_s"),
           (raster_map, ("PictorA",), {"height_deg": beam, "row_spacing_deg": beam}, "rows"),
           (raster_map, ("PictorA",), {"width_deg": 30.0}, "offsets"),
           (raster_map, ("NoSuchSource",), {}, "unknown source"),
           (raster_map, ("PictorA",), {"cleanup": "park"}, "cleanup"),
           (raster_map, ("PictorA",), {"poll_s": 0}, "poll_s"),
           (raster_map, ("PictorA",), {"cell_deg": float("nan")}, "cell_deg"),
           (raster_map, ("PictorA",), {"cell_deg": beam}, "cells a side"),
           (raster_map, ("PictorA",), {"samples_per_beam": 1}, "samples_per_beam"),
           (sun_moon_map, ("mars",), {}, "body"),
           (sun_moon_map, ("moon",), {"width_deg": float("inf")}, "width_deg")]
    for plan, args, kwargs, what in bad:
        with pytest.raises(ValueError, match=what):
            RE(plan(drive, rad, *args, meta=META, **kwargs))
    assert not any(n == "start" for n, _ in docs)
    assert get(obs.pv("DRV", "STATE_STS"), as_string=True) == state
    assert get(obs.pv("DRV", "HA_RBV")) == pytest.approx(ha, abs=0.01)

    def abort_when_sampling():
        t0 = time.monotonic()
        while sum(1 for n, _ in docs if n == "event_page") < 3 and time.monotonic() - t0 < 60:
            time.sleep(0.05)
        RE.abort("test abort: mid-map")

    th = threading.Thread(target=abort_when_sampling, daemon=True)
    th.start()
    with pytest.raises(RunEngineInterrupted):
        RE(raster_map(drive, rad, "PictorA", row_duration_s=60.0, instrumentation=d["instrumentation"], meta=META))
    th.join(5)
    assert next(doc for n, doc in docs if n == "stop")["exit_status"] == "abort"
    assert get(obs.pv("DRV", "STATE_STS"), as_string=True) == "STOPPED"
    assert int(get(obs.pv("NDI", "ND_SEL_RBV"))) == 0
    assert int(get(obs.pv("RAD", "AVG_SP"))) == 1  # the radiometer's averaging restored
