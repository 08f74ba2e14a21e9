"""TIME IOC against astropy, read over CA with pyepics."""

from __future__ import annotations

import time

import epics
from astropy.time import Time

from obsctl import astro
from tests.helpers import get, put_rejected


def test_time_pvs_match_astropy(observatory):
    obs = observatory(["TIME"], speed=60, epoch="2026-11-21T20:00:00")
    loc = astro.site_location(obs.site)
    unix = get(obs.pv("TIME", "UNIX_RBV"))
    # LST is stamped with the observatory time it was computed for: compare with astropy at that instant
    md = epics.get_pv(obs.pv("TIME", "LST_RBV")).get_with_metadata(use_monitor=False, form="time", timeout=5.0)
    lst_h, stamp = md["value"], md["timestamp"]
    expected = Time(stamp, format="unix").sidereal_time("apparent", longitude=loc.longitude_deg).hour
    assert abs((lst_h - expected + 12) % 24 - 12) * 3600 < 0.002  # 2 ms of sidereal time (stamp resolution)
    t = Time(unix, format="unix")
    assert abs(unix - Time("2026-11-21T20:00:00").unix) < 3600  # started at the requested epoch
    assert get(obs.pv("TIME", "TAI_UTC_RBV")) == 37.0
    assert abs(get(obs.pv("TIME", "UT1_UTC_RBV")) - float(t.delta_ut1_utc)) < 1e-3
    assert abs(get(obs.pv("TIME", "MJD_RBV")) - astro.mjd(unix)) < 0.01
    assert get(obs.pv("TIME", "SPEED_RBV")) == 60.0
    assert get(obs.pv("TIME", "PPS_STS"), as_string=True) == "LOCKED"
    assert get(obs.pv("TIME", "LST_RBV.EGU")) == "h"
    assert "sidereal" in get(obs.pv("TIME", "LST_RBV.DESC"))


def test_time_runs_at_speed(observatory):
    obs = observatory(["TIME"], speed=100)
    name = obs.pv("TIME", "UNIX_RBV")
    get(name)  # connect first
    r0, a = time.time(), get(name)
    time.sleep(2.0)
    r1, b = time.time(), get(name)
    # 10 Hz publication: each reading may lag by up to 0.1 s real = 10 s simulated
    assert abs((b - a) - 100 * (r1 - r0)) < 25


def test_time_rejects_bad_rate(observatory):
    obs = observatory(["TIME"])
    name = obs.pv("TIME", "RATE_SP")
    for bad in (1000.0, float("nan"), -1.0, "fast"):
        assert put_rejected(name, bad), f"RATE_SP accepted {bad!r}"
        assert get(name) == 10.0
    assert put_rejected(name, 5.0) is None
    assert get(name) == 5.0


def test_rejection_reason_published(observatory):
    obs = observatory(["TIME"])
    assert put_rejected(obs.pv("TIME", "RATE_SP"), 1000.0)
    assert get(obs.pv("TIME", "MSG_RBV")) == "RATE_SP 1000 outside 0.1..50"
    assert get(obs.pv("TIME", "RATE_SP")) == 10.0
