"""DRV IOC, manual drive (MODE_CMD RATE): axis rates, live rate changes, and the stops before limits and sun.

Each test starts its own DRV process and talks to it over Channel Access (pyepics; caproto's client for
rejected puts).  Expected rates come from the position packets' times and encoder angles.
"""

from __future__ import annotations

import time

import epics
import numpy as np
import pytest

from iocs.drive_targets import LIMIT_MARGIN_DEG, RateGoal, TargetError
from iocs.sim.drive import Axis, AxisSpec
from obsctl.positions import IDX
from tests.conftest import wait_for
from tests.helpers import get, put, put_rejected
from tests.test_drive import MORNING, _clock, _start, _state, _sun_hadec, _wait_state


def _packets(pv, seconds: float) -> np.ndarray:
    """Position packets (rows) received during ``seconds`` real seconds."""
    got: list[np.ndarray] = []
    chan = epics.PV(pv("POS_PKT"), auto_monitor=True,
                    callback=lambda value=None, **_: got.append(np.array(value, dtype=float)))
    assert chan.wait_for_connection(5.0)
    time.sleep(seconds)
    chan.clear_callbacks()
    chan.disconnect()
    return np.array(got)


def _park(pv, ha: float, dec: float) -> None:
    """Slew to apparent (HA, Dec) (deg) and wait until parked there."""
    put(pv("SLEW_FRAME_SP"), "HADEC")
    put(pv("SLEW_X_SP"), ha)
    put(pv("SLEW_Y_SP"), dec)
    put(pv("MODE_CMD"), "SLEW")
    _wait_state(pv, "PARKED", 30)


def _at_rest(pv) -> bool:
    return _state(pv) == "STOPPED" and get(pv("HA_VEL_RBV")) == 0.0 and get(pv("DEC_VEL_RBV")) == 0.0


def test_axis_rates_and_live_change(observatory):
    obs, pv = _start(observatory, speed=60)
    put(pv("WATCHDOG_ENA_SP"), "DISABLED")
    put(pv("RATE_HA_SP"), 0.1)
    put(pv("RATE_DEC_SP"), -0.05)
    assert put_rejected(pv("MODE_CMD"), "RATE") is None, get(pv("MSG_RBV"))
    assert _state(pv) == "MANUAL"
    assert get(pv("TARGET_RBV")).startswith("RATE HA +0.10000 Dec -0.05000")
    wait_for(lambda: get(pv("ON_SOURCE_STS"), as_string=True) == "YES", 10, what="axes running at the rates")
    pk = _packets(pv, 1.0)
    t, ha, dec = pk[:, IDX["T"]], pk[:, IDX["HA_ENC"]], pk[:, IDX["DEC_ENC"]]
    assert len(t) > 5 and np.all(pk[:, IDX["STATE"]] == 9)  # MANUAL
    # the encoders advance at the rates (noise 1 mdeg over ~60 sim s)
    assert np.polyfit(t - t[0], ha, 1)[0] == pytest.approx(0.1, abs=2e-4)
    assert np.polyfit(t - t[0], dec, 1)[0] == pytest.approx(-0.05, abs=2e-4)
    assert np.allclose(pk[:, IDX["HA_RATE"]], 0.1, atol=1e-6) and np.allclose(pk[:, IDX["DEC_RATE"]], -0.05, atol=1e-6)
    # RATE again with a new rate goes on from the command: between two readbacks the command moved at the
    # old rate, then at the new one, and did not jump
    cmd = epics.PV(pv("DEC_CMD_RBV"), form="time", auto_monitor=False)
    assert cmd.wait_for_connection(5.0)
    put(pv("RATE_DEC_SP"), 0.08)
    assert get(pv("TARGET_RBV")).startswith("RATE HA +0.10000 Dec -0.05000")  # a setpoint alone does nothing
    before = cmd.get_with_metadata(use_monitor=False, form="time")
    assert put_rejected(pv("MODE_CMD"), "RATE") is None, get(pv("MSG_RBV"))
    wait_for(lambda: cmd.get_with_metadata(use_monitor=False, form="time")["timestamp"] > before["timestamp"] + 0.5,
             5, what="a later command readback")
    after = cmd.get_with_metadata(use_monitor=False, form="time")
    dt = after["timestamp"] - before["timestamp"]
    assert -0.05 * dt - 1e-6 <= after["value"] - before["value"] <= 0.08 * dt + 1e-6, (before, after)
    assert get(pv("TARGET_RBV")).startswith("RATE HA +0.10000 Dec +0.08000")
    wait_for(lambda: abs(get(pv("DEC_VEL_RBV")) - 0.08) < 1e-6, 10, what="Dec axis at the new rate")
    assert get(pv("HA_VEL_RBV")) == pytest.approx(0.1, abs=1e-6)
    # beyond 80 % of the axis maximum: refused, the motion goes on as it was
    top = obs.site.mount.ha.command_rate_deg_s
    put(pv("RATE_HA_SP"), top + 0.02)
    assert put_rejected(pv("MODE_CMD"), "RATE")
    assert "rate" in get(pv("MSG_RBV"))
    assert _state(pv) == "MANUAL" and get(pv("HA_VEL_RBV")) == pytest.approx(0.1, abs=1e-6)
    assert get(pv("DEC_VEL_RBV")) == pytest.approx(0.08, abs=1e-6)
    # rates of 0 hold the axes where they are
    put(pv("RATE_HA_SP"), 0.0)
    put(pv("RATE_DEC_SP"), 0.0)
    assert put_rejected(pv("MODE_CMD"), "RATE") is None, get(pv("MSG_RBV"))
    wait_for(lambda: get(pv("HA_VEL_RBV")) == 0.0 and get(pv("DEC_VEL_RBV")) == 0.0, 10, what="axes held")
    ha_held = get(pv("HA_RBV"))
    time.sleep(0.5)
    assert get(pv("HA_RBV")) == pytest.approx(ha_held, abs=0.01) and _state(pv) == "MANUAL"
    # STOP ends the manual move; rates written then change nothing
    put(pv("MODE_CMD"), "STOP")
    wait_for(lambda: _at_rest(pv), 10, what="stopped")
    put(pv("RATE_HA_SP"), 0.2)
    time.sleep(0.3)
    assert _at_rest(pv)


def test_stops_before_the_limits(observatory):
    obs, pv = _start(observatory, speed=60)
    m = obs.site.mount
    put(pv("WATCHDOG_ENA_SP"), "DISABLED")
    _park(pv, 0.0, m.dec.min_deg + 4.0)
    # towards the Dec limit (near the south pole; the northern one is below the horizon limit): the command
    # brakes, the drive stops and the axis comes to rest inside
    put(pv("RATE_HA_SP"), 0.0)
    put(pv("RATE_DEC_SP"), -0.3)
    assert put_rejected(pv("MODE_CMD"), "RATE") is None, get(pv("MSG_RBV"))
    wait_for(lambda: _at_rest(pv), 30, what="stopped before the Dec limit")
    assert get(pv("LIMIT_STS"), as_string=True) == "DEC_LOW"
    assert "limit" in get(pv("MSG_RBV"))
    dec_rest = get(pv("DEC_RBV"))
    assert m.dec.min_deg < dec_rest < m.dec.min_deg + 1.0, dec_rest
    # at the limit the same rate into it is refused at once; away from it is accepted
    assert put_rejected(pv("MODE_CMD"), "RATE"), "a rate into the Dec limit was accepted"
    assert get(pv("LIMIT_STS"), as_string=True) == "DEC_LOW"
    assert _at_rest(pv)
    put(pv("RATE_DEC_SP"), 0.2)
    assert put_rejected(pv("MODE_CMD"), "RATE") is None, get(pv("MSG_RBV"))
    assert get(pv("LIMIT_STS"), as_string=True) == "OK"
    wait_for(lambda: get(pv("DEC_RBV")) > dec_rest + 1.0, 10, what="moving away from the limit")
    # from the zenith west in HA: at the site's latitude the HA limit comes before the horizon
    put(pv("MODE_CMD"), "ZENITH")
    _wait_state(pv, "PARKED", 30)
    put(pv("RATE_DEC_SP"), 0.0)
    put(pv("RATE_HA_SP"), 0.4)
    assert put_rejected(pv("MODE_CMD"), "RATE") is None, get(pv("MSG_RBV"))
    wait_for(lambda: _at_rest(pv), 60, what="stopped before the HA limit")
    assert get(pv("LIMIT_STS"), as_string=True) == "HA_HIGH"
    ha_rest = get(pv("HA_RBV"))
    assert m.ha.max_deg - 4.0 < ha_rest < m.ha.max_deg, ha_rest
    # on the equator the horizon comes first: the beam stays above min_elevation_deg
    _park(pv, 60.0, 0.0)
    assert put_rejected(pv("MODE_CMD"), "RATE") is None, get(pv("MSG_RBV"))
    wait_for(lambda: _at_rest(pv), 60, what="stopped above the horizon")
    assert get(pv("LIMIT_STS"), as_string=True) == "HORIZON"
    el = get(pv("EL_RBV"))
    assert m.min_elevation_deg < el < m.min_elevation_deg + 6.0, el
    print(f"manual stops: Dec {dec_rest:.3f} (limit {m.dec.min_deg:g}), HA {ha_rest:.3f} (limit {m.ha.max_deg:g}), "
          f"El {el:.3f} (limit {m.min_elevation_deg:g}) deg, at 60x with a {1 / m.control_rate_hz:g} s cycle")


def test_stops_before_the_sun_and_obeys_the_watchdog(observatory):
    obs, pv = _start(observatory, speed=60, epoch=MORNING)
    site, clock = obs.site, _clock(obs)
    avoid = site.mount.sun_avoidance_deg
    put(pv("WATCHDOG_ENA_SP"), "DISABLED")
    sun_ha, sun_dec = _sun_hadec(clock.now(), site)
    _park(pv, sun_ha + avoid + 12.0, sun_dec)
    # east of the sun at its declination, then by hand towards it (HA decreasing)
    put(pv("RATE_HA_SP"), -0.3)
    put(pv("RATE_DEC_SP"), 0.0)
    assert put_rejected(pv("MODE_CMD"), "RATE") is None, get(pv("MSG_RBV"))
    wait_for(lambda: _at_rest(pv), 30, what="stopped before the sun")
    assert get(pv("LIMIT_STS"), as_string=True) == "SUN"
    dist = get(pv("SUN_DIST_RBV"))
    assert avoid < dist < avoid + 6.0, dist
    # moving away from the sun is allowed from there
    put(pv("RATE_HA_SP"), 0.2)
    assert put_rejected(pv("MODE_CMD"), "RATE") is None, get(pv("MSG_RBV"))
    wait_for(lambda: get(pv("SUN_DIST_RBV")) > dist + 1.0, 10, what="moving away from the sun")
    # a manual move is a client's motion: without heartbeats the watchdog stops it
    put(pv("WATCHDOG_SP"), 1.0)
    put(pv("WATCHDOG_ENA_SP"), "ENABLED")
    wait_for(lambda: _at_rest(pv), 5, what="watchdog stop")
    assert get(pv("WATCHDOG_STS"), as_string=True) == "EXPIRED"


def test_the_command_brakes_before_the_axis_limits():
    """RateGoal alone: the command comes to rest inside the first limit ahead, the axes following it end
    inside even when the control cycles come very late, and a move back from beyond a limit is allowed."""
    spec = AxisSpec("HA", -90.0, 90.0, 0.5, 0.2)
    axes = (("HA", -90.0, 90.0, 0.2), ("Dec", -89.9, 62.0, 0.2))
    goal = RateGoal((80.0, 0.0), (0.4, 0.0), 0.0, None, axes)
    assert goal.limit == "HA_HIGH" and goal.why == "limit: HA max 90 ahead"
    rest = goal.command(1e6)[0]
    assert 89.0 < rest < 90.0 - LIMIT_MARGIN_DEG
    ts = np.linspace(0.0, 200.0, 20001)
    ha = np.array([goal.command(t)[0] for t in ts])
    vel = np.diff(ha) / np.diff(ts)
    assert np.all(vel >= -1e-9) and np.max(vel) <= 0.4 + 1e-9  # no jump, no reversal
    assert np.max(np.abs(np.diff(vel) / np.diff(ts)[1:])) <= 0.2 * 0.9 * 1.01  # brakes within the axis's means
    for step in (0.05, 3.0, 40.0):  # cycles at 20 Hz in real time at 1x, at 60x, and a long stall
        axis, t = Axis(spec, 80.0), 0.0
        while t < 300.0:
            c0, c1 = goal.command(t)[0], goal.command(t + step)[0]
            axis.step(step, c0, (c1 - c0) / step)
            t += step
            assert axis.pos < 90.0, (step, t, axis.pos)
        assert abs(axis.pos - rest) < 1e-6 and axis.vel == 0.0
    with pytest.raises(TargetError, match="within braking distance"):
        RateGoal((89.8, 0.0), (0.4, 0.0), 0.0, None, axes)
    back = RateGoal((90.05, 0.0), (-0.4, 0.0), 0.0, None, axes)  # stopped just beyond the limit: back in
    assert back.limit == "HA_LOW" and back.command(10.0)[0] == pytest.approx(86.05)
