"""DRV IOC: tracking against astropy, sun avoidance, limits, watchdog, kinematics, wind stow, POS_PKT.

Every test starts its own IOC processes and talks to them over Channel Access (pyepics, and caproto's
client for rejected puts).  Expected positions come from astropy directly, not from obsctl.astro.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import epics
import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import HADec, get_body
from astropy.time import Time

from obsctl.catalog import load_catalog
from obsctl.clock import ObservatoryClock
from obsctl.pointing import PointingModel
from obsctl.positions import IDX
from obsctl.site import load_site
from tests.conftest import wait_for
from tests.helpers import get, put, put_rejected

NIGHT = "2026-11-21T20:00:00"  # sun well below the horizon at the reference site
MORNING = "2026-11-21T08:00:00"  # sun at about 63 deg elevation, east of the meridian
SCALARS = ("HA_RBV", "DEC_RBV", "HA_PM_RBV", "DEC_PM_RBV", "HA_REFR_RBV", "DEC_REFR_RBV", "HA_VEL_RBV",
           "DEC_VEL_RBV", "STATE_STS", "SETTLED_STS")


def _drv(obs):
    return lambda signal_name: obs.pv("DRV", signal_name)


def _start(observatory, speed=100, epoch=NIGHT, devs=("DRV",)):
    obs = observatory(list(devs), speed=speed, epoch=epoch)
    return obs, _drv(obs)


def _state(pv):
    return get(pv("STATE_STS"), as_string=True)


def _wait_state(pv, state, timeout=20.0):
    wait_for(lambda: _state(pv) == state, timeout, what=f"STATE_STS == {state} (now {_state(pv)})")


def _clock(obs) -> ObservatoryClock:
    return ObservatoryClock.from_env({"OBSCTL_CLOCK": obs.state.clock})


def _snapshot(pv, names=SCALARS, extra=("POS_PKT",), tries=40):
    """Values (and the common timestamp) of PVs written in the same control cycle."""
    chans = {n: epics.PV(pv(n), form="time") for n in names + tuple(extra)}
    for c in chans.values():
        assert c.wait_for_connection(5.0), f"{c.pvname} did not connect"
    for _ in range(tries):
        data = {n: c.get_with_metadata(use_monitor=False, as_string=n.endswith("_STS"), form="time")
                for n, c in chans.items()}
        stamps = {d["timestamp"] for n, d in data.items() if not n.endswith("_STS")}  # enums: on change
        if len(stamps) == 1:
            return {n: d["value"] for n, d in data.items()}, stamps.pop()
    pytest.fail("could not read one control cycle's readbacks consistently")


def _location(site):
    from astropy.coordinates import EarthLocation

    return EarthLocation.from_geodetic(site.longitude_deg * u.deg, site.latitude_deg * u.deg, site.height_m * u.m)


def _apparent_hadec(coord, t, site):
    frame = HADec(obstime=Time(t, format="unix"), location=_location(site), pressure=0 * u.hPa)
    c = coord.transform_to(frame)
    return (c.ha.deg + 180.0) % 360.0 - 180.0, c.dec.deg


def _sun_hadec(t, site):
    sun = get_body("sun", Time(t, format="unix"), location=_location(site))
    frame = HADec(obstime=Time(t, format="unix"), location=_location(site), pressure=0 * u.hPa)
    c = sun.transform_to(frame)
    return (c.ha.deg + 180.0) % 360.0 - 180.0, c.dec.deg


def _el(ha, dec, lat):
    h, d, p = np.radians(ha), np.radians(dec), np.radians(lat)
    return np.degrees(np.arcsin(np.sin(d) * np.sin(p) + np.cos(d) * np.cos(p) * np.cos(h)))


def _dha(a, b):
    return (a - b + 180.0) % 360.0 - 180.0


def test_track_calibrator_matches_astropy(observatory):
    obs, pv = _start(observatory, speed=100)
    site = obs.site
    t0 = Time(NIGHT).unix
    m = site.mount
    # a calibrator that is up, inside the axis limits and far from the sun at the epoch
    usable = []
    for src in load_catalog(site.catalog_path).of_kind("calibrator"):
        ha, dec = _apparent_hadec(src.coord, t0, site)
        if (_el(ha, dec, site.latitude_deg) > 25 and m.ha.min_deg + 20 < ha < m.ha.max_deg - 20
                and m.dec.min_deg < dec < m.dec.max_deg):
            usable.append(src)
    assert usable, "no calibrator is up at the epoch"
    src = usable[0]
    put(pv("WATCHDOG_ENA_SP"), "DISABLED")
    put(pv("TRACK_NAME_SP"), src.name)
    assert put_rejected(pv("MODE_CMD"), "TRACK") is None
    wait_for(lambda: get(pv("SETTLED_STS"), as_string=True) == "YES", 30, what="SETTLED_STS == YES")
    assert _state(pv) == "TRACKING"
    assert get(pv("TARGET_RBV")) == src.name
    model = PointingModel.load(site.resolve(m.pointing_model_file))
    for _ in range(3):
        vals, ts = _snapshot(pv)
        ha_exp, dec_exp = _apparent_hadec(src.coord, ts, site)
        ha_obs = vals["HA_RBV"] - vals["HA_PM_RBV"] - vals["HA_REFR_RBV"]
        dec_obs = vals["DEC_RBV"] - vals["DEC_PM_RBV"] - vals["DEC_REFR_RBV"]
        assert abs(_dha(ha_obs, ha_exp)) < 0.01, (ha_obs, ha_exp)
        assert abs(dec_obs - dec_exp) < 0.01, (dec_obs, dec_exp)
        pm_h, pm_d = model.offsets(ts)
        assert abs(vals["HA_PM_RBV"] - pm_h) < 1e-9 and abs(vals["DEC_PM_RBV"] - pm_d) < 1e-9
        # refraction lifts the beam: the corrected direction is higher by about the refraction angle
        el_app = _el(ha_exp, dec_exp, site.latitude_deg)
        el_ref = _el(ha_exp + vals["HA_REFR_RBV"], dec_exp + vals["DEC_REFR_RBV"], site.latitude_deg)
        assert 0.0 < el_ref - el_app < 0.05
        # the axis follows the sidereal motion (HA rate ~15.04 deg/h, in sim time)
        assert abs(vals["HA_VEL_RBV"] - 15.041 / 3600) < 2e-4
    errs = []
    for _ in range(20):
        errs.append((get(pv("HA_ERR_RBV")), get(pv("DEC_ERR_RBV"))))
        time.sleep(0.05)
    rms = np.sqrt(np.mean(np.square(errs), axis=0))
    print(f"tracking {src.name}: error rms HA {rms[0] * 3600:.2f} arcsec, Dec {rms[1] * 3600:.2f} arcsec")
    assert np.all(rms < m.on_source_tolerance_deg)


def test_sun_avoidance(observatory):
    obs, pv = _start(observatory, speed=60, epoch=MORNING)
    site, clock = obs.site, _clock(obs)
    put(pv("WATCHDOG_ENA_SP"), "DISABLED")
    # a target 10 deg north of the sun (geocentric place; aberration is far below a degree)
    sun = get_body("sun", Time(MORNING)).gcrs
    put(pv("TRACK_NAME_SP"), "")
    put(pv("TRACK_RA_SP"), float(sun.ra.deg))
    put(pv("TRACK_DEC_SP"), float(sun.dec.deg) + 10.0)
    err = put_rejected(pv("MODE_CMD"), "TRACK")
    assert err, "a target 10 deg from the sun was accepted"
    assert "sun" in get(pv("MSG_RBV")).lower()
    assert get(pv("LIMIT_STS"), as_string=True) == "SUN"
    assert get(pv("MODE_CMD"), as_string=True) == "STOP"
    assert _state(pv) == "STOPPED"
    assert get(pv("HA_VEL_RBV")) == 0.0
    # a slew across the sun: park east of it at its declination, then ask for the west side
    sun_ha, sun_dec = _sun_hadec(clock.now(), site)
    put(pv("SLEW_FRAME_SP"), "HADEC")
    put(pv("SLEW_X_SP"), sun_ha + 35.0)
    put(pv("SLEW_Y_SP"), sun_dec)
    assert put_rejected(pv("MODE_CMD"), "SLEW") is None, get(pv("MSG_RBV"))
    _wait_state(pv, "PARKED")
    assert get(pv("SUN_DIST_RBV")) > site.mount.sun_avoidance_deg
    sun_ha, sun_dec = _sun_hadec(clock.now(), site)
    put(pv("SLEW_X_SP"), sun_ha - 35.0)
    ha_before = get(pv("HA_RBV"))
    assert put_rejected(pv("MODE_CMD"), "SLEW"), "a slew through the sun was accepted"
    msg = get(pv("MSG_RBV")).lower()
    assert "sun" in msg and "path" in msg, msg
    assert _state(pv) == "PARKED"
    time.sleep(0.3)
    assert abs(get(pv("HA_RBV")) - ha_before) < 0.01  # did not move


def test_solar_observing_allows_the_sun_itself_only(observatory):
    obs, pv = _start(observatory, speed=60, epoch=MORNING)
    site, clock = obs.site, _clock(obs)
    put(pv("WATCHDOG_ENA_SP"), "DISABLED")
    assert get(pv("SUN_OBS_SP"), as_string=True) == "NO"
    put(pv("TRACK_NAME_SP"), "sun")
    assert put_rejected(pv("MODE_CMD"), "TRACK"), "the sun was tracked without SUN_OBS_SP"
    assert get(pv("LIMIT_STS"), as_string=True) == "SUN" and _state(pv) == "STOPPED"
    put(pv("SUN_OBS_SP"), "YES")
    # every other target near the sun is still refused
    sun = get_body("sun", Time(MORNING)).gcrs
    put(pv("TRACK_NAME_SP"), "")
    put(pv("TRACK_RA_SP"), float(sun.ra.deg))
    put(pv("TRACK_DEC_SP"), float(sun.dec.deg) + 10.0)
    assert put_rejected(pv("MODE_CMD"), "TRACK"), "a target 10 deg from the sun was accepted with SUN_OBS_SP"
    assert "sun" in get(pv("MSG_RBV")).lower()
    # the sun itself, with an offset, is tracked (the slew onto it included)
    put(pv("TRACK_NAME_SP"), "sun")
    put(pv("OFF_DEC_SP"), 0.2)
    assert put_rejected(pv("MODE_CMD"), "TRACK") is None, get(pv("MSG_RBV"))
    wait_for(lambda: get(pv("SETTLED_STS"), as_string=True) == "YES", 30, what="settled on the sun")
    assert _state(pv) == "TRACKING" and get(pv("LIMIT_STS"), as_string=True) == "OK"
    vals, t_cycle = _snapshot(pv, ("HA_APP_RBV", "DEC_APP_RBV"), extra=())
    sun_ha, sun_dec = _sun_hadec(t_cycle, site)
    assert abs(_dha(vals["HA_APP_RBV"], sun_ha)) < 0.01 and abs(vals["DEC_APP_RBV"] - sun_dec) < 0.01
    assert 0.1 < get(pv("SUN_DIST_RBV")) < 0.3
    # and scanned across
    put(pv("OFF_DEC_SP"), -0.3)
    put(pv("RATE_DEC_SP"), 0.01)
    put(pv("SCAN_DUR_SP"), 60.0)
    assert put_rejected(pv("MODE_CMD"), "SCAN") is None, get(pv("MSG_RBV"))
    _wait_state(pv, "TRACKING", 30)
    assert abs(get(pv("OFF_DEC_RBV")) - 0.3) < 1e-6
    # withdrawing the permission on the sun stops the drive; it may then leave the zone (not approach the sun)
    put(pv("SUN_OBS_SP"), "NO")
    _wait_state(pv, "STOPPED", 10)
    assert get(pv("LIMIT_STS"), as_string=True) == "SUN"
    sun_ha, sun_dec = _sun_hadec(clock.now(), site)
    put(pv("SLEW_FRAME_SP"), "HADEC")
    put(pv("SLEW_X_SP"), sun_ha + 35.0)
    put(pv("SLEW_Y_SP"), sun_dec - 5.0)  # a path that first closes in on the sun's Dec would be refused
    assert put_rejected(pv("MODE_CMD"), "SLEW"), "a path towards the sun from inside the zone was accepted"
    put(pv("SLEW_Y_SP"), sun_dec + 5.0)
    assert put_rejected(pv("MODE_CMD"), "SLEW") is None, get(pv("MSG_RBV"))
    _wait_state(pv, "PARKED", 30)
    assert get(pv("SUN_DIST_RBV")) > site.mount.sun_avoidance_deg
    assert put_rejected(pv("SUN_OBS_SP"), "MAYBE")


def test_limits_and_bad_input(observatory):
    obs, pv = _start(observatory, speed=60)
    m = obs.site.mount
    put(pv("WATCHDOG_ENA_SP"), "DISABLED")
    put(pv("SLEW_FRAME_SP"), "AZEL")
    put(pv("SLEW_X_SP"), 180.0)
    put(pv("SLEW_Y_SP"), -5.0)
    assert put_rejected(pv("MODE_CMD"), "SLEW"), "slew below the horizon accepted"
    assert get(pv("LIMIT_STS"), as_string=True) == "HORIZON"
    assert "el" in get(pv("MSG_RBV"))
    put(pv("SLEW_FRAME_SP"), "HADEC")
    put(pv("SLEW_X_SP"), 0.0)
    put(pv("SLEW_Y_SP"), m.dec.max_deg + 5.0)
    assert put_rejected(pv("MODE_CMD"), "SLEW"), "slew beyond the Dec limit accepted"
    assert get(pv("LIMIT_STS"), as_string=True) == "DEC_HIGH"
    put(pv("SLEW_Y_SP"), -30.0)
    put(pv("SLEW_X_SP"), m.ha.max_deg + 5.0)
    assert put_rejected(pv("MODE_CMD"), "SLEW"), "slew beyond the HA limit accepted"
    assert get(pv("LIMIT_STS"), as_string=True) == "HA_HIGH"
    assert _state(pv) == "STOPPED" and get(pv("HA_VEL_RBV")) == 0.0
    # bad values are rejected by the server and the old value stays
    cases = [("MODE_CMD", "FLY"), ("MODE_CMD", 99), ("SLEW_FRAME_SP", "GALACTIC"), ("SLEW_X_SP", float("nan")),
             ("SLEW_Y_SP", 95.0), ("OFF_HA_SP", 50.0), ("RATE_DEC_SP", float("inf")), ("WATCHDOG_SP", 0.0),
             ("TRACK_DEC_SP", -91.0), ("SIM_PERR_HA_SP", 2.0), ("TRACK_NAME_SP", "NoSuchSource"),
             ("WATCHDOG_ENA_SP", 7)]
    for name, bad in cases:
        before = get(pv(name), as_string=True)
        assert put_rejected(pv(name), bad), f"{name} accepted {bad!r}"
        assert get(pv(name), as_string=True) == before, f"{name} changed after a rejected put"
    assert "NoSuchSource" in get(pv("MSG_RBV")) or "unknown" in get(pv("MSG_RBV"))
    # a scan faster than the axes can follow is refused when commanded
    put(pv("TRACK_NAME_SP"), "PictorA")
    put(pv("RATE_HA_SP"), 0.9)
    assert put_rejected(pv("MODE_CMD"), "SCAN")
    assert "rate" in get(pv("MSG_RBV"))
    for name in ("HA_RBV", "SLEW_X_SP", "OFF_HA_SP"):
        assert get(pv(name + ".EGU")) == "deg"
    assert get(pv("HA_VEL_RBV.EGU")) == "deg/s"
    assert "sidereal" in get(pv("LST_RBV.DESC")).lower()


_CLIENT = """
import sys, time, epics
pfx = sys.argv[1]
for name, value in (("SLEW_FRAME_SP", "HADEC"), ("SLEW_X_SP", float(sys.argv[2])), ("SLEW_Y_SP", float(sys.argv[3]))):
    epics.caput(pfx + name, value, wait=True, timeout=5)
epics.caput(pfx + "MODE_CMD", "SLEW", wait=True, timeout=5)
print("commanded", flush=True)
n = 0
while True:
    epics.caput(pfx + "HEARTBEAT_SP", n, wait=True, timeout=5)
    n += 1
    time.sleep(0.5)
"""


def test_watchdog_stops_when_client_dies(observatory):
    obs, pv = _start(observatory, speed=60)
    lat = obs.site.latitude_deg
    put(pv("WATCHDOG_ENA_SP"), "DISABLED")
    put(pv("SLEW_X_SP"), 85.0)
    put(pv("SLEW_Y_SP"), lat)
    put(pv("MODE_CMD"), "SLEW")
    _wait_state(pv, "PARKED", 15)
    put(pv("WATCHDOG_SP"), 2.0)
    put(pv("WATCHDOG_ENA_SP"), "ENABLED")
    prefix = pv("")
    client = subprocess.Popen([sys.executable, "-c", _CLIENT, prefix, "-85", str(lat)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=os.environ.copy(), text=True)
    try:
        line = client.stdout.readline()
        assert line.strip() == "commanded", client.stderr.read() if client.poll() is not None else line
        t_cmd = time.monotonic()
        # the heartbeats keep a 170-deg slew going for longer than the watchdog period
        time.sleep(2.4)
        assert _state(pv) == "SLEWING", get(pv("MSG_RBV"))
        assert get(pv("WATCHDOG_STS"), as_string=True) == "OK"
        client.send_signal(signal.SIGKILL)
        client.wait(5)
        t_kill = time.monotonic()
        wait_for(lambda: _state(pv) == "STOPPED" and get(pv("HA_VEL_RBV")) == 0.0, 3.0 + 0.5,
                 what="drive stopped after the client died")
        elapsed = time.monotonic() - t_kill
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    print(f"watchdog: stopped {elapsed:.2f} s after the client was killed "
          f"({time.monotonic() - t_cmd:.1f} s after the slew command)")
    assert elapsed < 2.0 + 1.0
    assert get(pv("WATCHDOG_STS"), as_string=True) == "EXPIRED"
    assert "watchdog" in get(pv("MSG_RBV"))
    assert get(pv("DEC_VEL_RBV")) == 0.0
    assert get(pv("HA_RBV")) > -80.0  # stopped well before the target


def test_kinematics_stow_and_zenith(observatory):
    obs, pv = _start(observatory, speed=100)
    site = obs.site
    m = site.mount
    put(pv("WATCHDOG_ENA_SP"), "DISABLED")
    packets = []
    chan = epics.PV(pv("POS_PKT"), auto_monitor=True)
    chan.add_callback(lambda value=None, **kw: packets.append(np.array(value, dtype=float)))
    assert chan.wait_for_connection(5.0)
    put(pv("SLEW_X_SP"), -80.0)
    put(pv("SLEW_Y_SP"), -60.0)
    put(pv("MODE_CMD"), "SLEW")
    _wait_state(pv, "PARKED", 20)
    time.sleep(0.3)
    p = np.array([x for x in packets if x.size >= len(IDX)])
    assert len(p) > 20
    t, ha, dec = p[:, IDX["T"]], p[:, IDX["HA_ENC"]], p[:, IDX["DEC_ENC"]]
    v_h, v_d = p[:, IDX["HA_RATE"]], p[:, IDX["DEC_RATE"]]
    assert np.max(np.abs(v_h)) <= m.ha.max_rate_deg_s + 1e-9
    assert np.max(np.abs(v_d)) <= m.dec.max_rate_deg_s + 1e-9
    assert np.max(np.abs(v_h)) > 0.99 * m.ha.max_rate_deg_s  # an 80-deg slew cruises at full rate
    dt = np.diff(t)
    ok = dt > 0
    assert np.all(np.abs(np.diff(v_h))[ok] <= m.ha.max_accel_deg_s2 * dt[ok] * (1 + 1e-6) + 1e-9)
    assert np.all(np.abs(np.diff(v_d))[ok] <= m.dec.max_accel_deg_s2 * dt[ok] * (1 + 1e-6) + 1e-9)
    noise = 10 * site.simulation.encoder_noise_deg + 0.002
    assert np.all(np.diff(ha) < noise) and np.min(ha) > get(pv("HA_CMD_RBV")) - noise  # no overshoot
    assert np.min(dec) > get(pv("DEC_CMD_RBV")) - noise
    assert abs(get(pv("HA_RBV")) - get(pv("HA_CMD_RBV"))) < m.on_source_tolerance_deg
    # ZENITH: the beam (encoder - pointing model - refraction) at HA 0, Dec = latitude
    assert put_rejected(pv("MODE_CMD"), "ZENITH") is None
    _wait_state(pv, "PARKED", 20)
    vals, _ = _snapshot(pv)
    assert abs(vals["HA_RBV"] - vals["HA_PM_RBV"] - vals["HA_REFR_RBV"]) < 0.005
    assert abs(vals["DEC_RBV"] - vals["DEC_PM_RBV"] - vals["DEC_REFR_RBV"] - site.latitude_deg) < 0.005
    assert get(pv("EL_RBV")) > 89.99
    # STOW: the mechanical stow position
    assert put_rejected(pv("MODE_CMD"), "STOW") is None
    _wait_state(pv, "STOWED", 20)
    assert abs(get(pv("HA_RBV")) - m.stow_ha_deg) < 0.002
    assert abs(get(pv("DEC_RBV")) - m.stow_dec_deg) < 0.002
    assert get(pv("HA_VEL_RBV")) == 0.0 and get(pv("DEC_VEL_RBV")) == 0.0
    chan.clear_callbacks()
    chan.disconnect()


def test_scan_and_drift(observatory):
    obs, pv = _start(observatory, speed=100)
    site = obs.site
    put(pv("WATCHDOG_ENA_SP"), "DISABLED")
    put(pv("TRACK_NAME_SP"), "PictorA")
    put(pv("OFF_HA_SP"), 0.3)
    put(pv("RATE_HA_SP"), -0.01)
    put(pv("SCAN_DUR_SP"), 60.0)
    assert put_rejected(pv("MODE_CMD"), "SCAN") is None
    assert _state(pv) == "SCANNING"
    _wait_state(pv, "TRACKING", 20)  # the scan ran its 60 sim s and holds the final offsets
    wait_for(lambda: get(pv("ON_SOURCE_STS"), as_string=True) == "YES", 10, what="on source after the scan")
    assert abs(get(pv("OFF_HA_RBV")) - (0.3 - 0.6)) < 1e-6
    for axis in ("HA", "DEC"):
        parts = tuple(f"{axis}_{k}_RBV" for k in ("CMD", "APP", "PM", "REFR"))
        vals, _ = _snapshot(pv, parts + (f"OFF_{axis}_RBV",), extra=())
        assert vals[parts[0]] == pytest.approx(sum(vals[n] for n in vals if n != parts[0]), abs=1e-9)
    # DRIFT: park 0.5 deg of HA ahead of the source and stand still
    put(pv("OFF_HA_SP"), 0.0)
    put(pv("DRIFT_LEAD_SP"), 0.5)
    assert put_rejected(pv("MODE_CMD"), "DRIFT") is None
    t_cmd = _clock(obs).now()
    wait_for(lambda: get(pv("ON_SOURCE_STS"), as_string=True) == "YES" and get(pv("HA_VEL_RBV")) == 0.0, 20,
             what="parked for the drift")
    assert _state(pv) == "DRIFTING"
    src = load_catalog(site.catalog_path).get("PictorA")
    ha_src, dec_src = _apparent_hadec(src.coord, t_cmd, site)
    assert abs(_dha(get(pv("HA_APP_RBV")), ha_src + 0.5)) < 0.05  # command time known to ~0.1 s real
    assert abs(get(pv("DEC_APP_RBV")) - dec_src) < 0.01


def test_wind_stow(observatory):
    pytest.importorskip("iocs.weather")
    # DRV and WX share one IOC process here: the link then works whatever CA address list this test
    # process's libca locked in (see the note in the drive report; a second port may be unreachable)
    site = load_site()
    insts = [i.model_copy(update={"process": "drvwx"}) if i.dev in ("DRV", "WX") else i for i in site.instruments]
    obs = observatory(["DRV", "WX"], speed=100, epoch=NIGHT, instruments=insts)
    pv = _drv(obs)
    m = obs.site.mount
    wait_for(lambda: get(pv("WX_LINK_STS"), as_string=True) == "OK", 10, what="weather link")
    put(obs.pv("WX", "SIM_WIND_SP"), 2.0)
    put(pv("WATCHDOG_ENA_SP"), "DISABLED")
    put(pv("SLEW_X_SP"), -40.0)
    put(pv("SLEW_Y_SP"), -50.0)
    assert put_rejected(pv("MODE_CMD"), "SLEW") is None
    time.sleep(0.5)
    put(obs.pv("WX", "SIM_WIND_SP"), m.wind_stow_m_s + 10.0)
    wait_for(lambda: get(pv("WIND_STS"), as_string=True) == "STOW", 5, what="WIND_STS == STOW")
    _wait_state(pv, "STOWED", 20)
    assert abs(get(pv("HA_RBV")) - m.stow_ha_deg) < 0.002
    assert abs(get(pv("DEC_RBV")) - m.stow_dec_deg) < 0.002
    assert put_rejected(pv("MODE_CMD"), "SLEW"), "a slew was accepted during a wind stow"
    assert "wind" in get(pv("MSG_RBV"))
    assert _state(pv) == "STOWED"
    put(obs.pv("WX", "SIM_WIND_SP"), 2.0)  # calm again: released after the hold time (300 sim s)
    wait_for(lambda: get(pv("WIND_STS"), as_string=True) == "OK", 10, what="wind stow released")
    assert put_rejected(pv("MODE_CMD"), "SLEW") is None


def test_position_packet_matches_readbacks(observatory):
    obs, pv = _start(observatory, speed=60)
    site, clock = obs.site, _clock(obs)
    put(pv("WATCHDOG_ENA_SP"), "DISABLED")
    put(pv("SIM_PERR_HA_SP"), 0.1)
    put(pv("SIM_PERR_DEC_SP"), -0.05)
    put(pv("TRACK_NAME_SP"), "PictorA")
    put(pv("MODE_CMD"), "TRACK")
    wait_for(lambda: get(pv("SETTLED_STS"), as_string=True) == "YES", 30, what="SETTLED_STS == YES")
    names = SCALARS + ("RA_RBV", "LST_RBV")
    for _ in range(3):
        vals, ts = _snapshot(pv, names)
        now = clock.now()
        pkt = np.asarray(vals["POS_PKT"], dtype=float)
        assert pkt[IDX["T"]] == pytest.approx(ts, abs=1e-6)
        assert 0 <= now - pkt[IDX["T"]] < 60 * 0.5  # a cycle at most half a real second old
        assert pkt[IDX["HA_ENC"]] == pytest.approx(vals["HA_RBV"], abs=1e-9)
        assert pkt[IDX["DEC_ENC"]] == pytest.approx(vals["DEC_RBV"], abs=1e-9)
        assert pkt[IDX["HA_OBS"]] == pytest.approx(vals["HA_RBV"] - vals["HA_PM_RBV"] - vals["HA_REFR_RBV"],
                                                   abs=1e-9)
        assert pkt[IDX["DEC_OBS"]] == pytest.approx(
            vals["DEC_RBV"] - vals["DEC_PM_RBV"] - vals["DEC_REFR_RBV"], abs=1e-9)
        assert pkt[IDX["HA_RATE"]] == pytest.approx(vals["HA_VEL_RBV"], abs=1e-9)
        assert pkt[IDX["DEC_RATE"]] == pytest.approx(vals["DEC_VEL_RBV"], abs=1e-9)
        noise = 5 * site.simulation.encoder_noise_deg
        assert pkt[IDX["HA_SKY"]] == pytest.approx(pkt[IDX["HA_OBS"]] - 0.1, abs=noise)
        assert pkt[IDX["DEC_SKY"]] == pytest.approx(pkt[IDX["DEC_OBS"]] + 0.05, abs=noise)
        assert pkt[IDX["STATE"]] == ("STOPPED SLEWING TRACKING DRIFTING SCANNING STOWING STOWED PARKED "
                                     "FAULT").split().index(vals["STATE_STS"])
        assert pkt[IDX["ON_SOURCE"]] == (1.0 if vals["SETTLED_STS"] == "YES" else 0.0)
        assert abs(_dha(vals["RA_RBV"], vals["LST_RBV"] - pkt[IDX["HA_OBS"]])) < 1e-6
        lst_exp = Time(ts, format="unix").sidereal_time("apparent", longitude=site.longitude_deg * u.deg).deg
        assert abs(_dha(vals["LST_RBV"], lst_exp)) < 1e-3
    dec2 = get(pv("DEC2_RBV")) - get(pv("DEC_RBV"))
    assert abs(dec2 - site.simulation.dec_encoder_offset_deg) < 10 * site.simulation.encoder_noise_deg


# ---- physics and check helpers, in-process (no EPICS) --------------------------------------------
def test_axis_profile_is_exact_for_long_steps():
    from iocs.sim.drive import Axis, AxisSpec

    spec = AxisSpec("HA", -90, 90, 0.5, 0.2)
    ideal = 160 / 0.5 + 0.5 / 0.2  # cruise time + one acceleration ramp (s)
    for dt in (0.05, 3.0, 10.0):
        ax, t, pos = Axis(spec, -80.0), 0.0, []
        while not (ax.step(dt, 80.0) and t > 0):
            t += dt
            pos.append(ax.pos)
            assert abs(ax.vel) <= 0.5 + 1e-12
        assert ax.pos == 80.0 and ax.vel == 0.0
        assert max(pos) <= 80.0 and np.all(np.diff(pos) >= 0)  # no overshoot, no oscillation
        assert ideal - dt <= t + dt <= ideal + 2 * dt
    # a moving target is caught exactly and then followed, whatever the step
    rate = 15.041 / 3600
    for dt in (0.05, 3.0):
        ax, t = Axis(spec, 10.0, vel=-0.5), 0.0
        for _ in range(int(600 / dt)):
            ax.step(dt, rate * t, rate)
            t += dt
        assert abs(ax.pos - rate * t) < 1e-9 and abs(ax.vel - rate) < 1e-12


def test_sun_path_check():
    from iocs.drive_targets import TargetError, check_path

    def sun(_t):
        return -30.0, -20.0

    ts = np.linspace(0, 100, 101)
    through = np.linspace(0.0, -60.0, 101)
    with pytest.raises(TargetError, match="sun"):
        check_path(ts, through, np.full(101, -20.0), sun, 20.0)
    check_path(ts, np.linspace(0.0, 20.0, 101), np.full(101, -20.0), sun, 20.0)  # moving away: fine
    check_path(ts, np.linspace(-35.0, -80.0, 101), np.full(101, -20.0), sun, 20.0)  # starts inside, leaves
