"""SUB: subreflector actuators (rates, settling, limits, stop), the beam effects and the ophyd device.

Rates, travel and the optics are the documented values (iocs/sim/subreflector.py); the expected gain is
recomputed here with an independent two-dimensional aperture integral, the beam shift from Lo's beam
deviation factor.
"""

from __future__ import annotations

import math
import time

import epics
import numpy as np
import pytest

from devices import registry
from devices.common import CommandRefused
from tests.conftest import wait_for
from tests.helpers import Recorder, check_pv_metadata, get, put, put_rejected

# documented actuator specification: travel, rate per simulated second, settling (s)
FOCUS_RATE, TILT_RATE, SETTLE_S = 0.5, 3.0, 1.5
FOCUS_TRAVEL, TILT_TRAVEL = (-30.0, 30.0), (-60.0, 60.0)
C = 299_792_458.0
STATES = ["IN_POSITION", "MOVING", "SETTLING"]


def _wait_state(sub, state: str, timeout: float) -> None:
    wait_for(lambda: get(sub("STATE_STS"), as_string=True) == state, timeout, what=f"SUB {state}")


def test_actuators_rates_settling_limits_and_stop(observatory):
    speed = 20
    obs = observatory(["SUB"], speed=speed)
    sub = lambda sig: obs.pv("SUB", sig)  # noqa: E731
    check_pv_metadata(obs, "SUB")
    for pv, travel in (("FOCUS_SP", FOCUS_TRAVEL), ("TILTX_SP", TILT_TRAVEL), ("TILTY_SP", TILT_TRAVEL)):
        ctrl = epics.get_pv(sub(pv)).get_ctrlvars()
        assert (ctrl["lower_ctrl_limit"], ctrl["upper_ctrl_limit"]) == travel
    assert get(sub("FOCUS_SP.EGU")) == "mm" and get(sub("TILTX_RBV.EGU")) == "arcmin"
    assert get(sub("FOCUS_RATE_RBV")) == FOCUS_RATE and get(sub("SETTLE_TIME_RBV")) == SETTLE_S
    _wait_state(sub, "IN_POSITION", 5)

    # a 6 mm focus move: MOVING for 12 s, SETTLING 1.5 s (simulated), readback ramps at the rate
    mon = Recorder([sub("STATE_STS"), sub("FOCUS_RBV")])
    t0 = time.monotonic()
    put(sub("FOCUS_SP"), 6.0)
    assert get(sub("STATE_STS"), as_string=True) == "MOVING"  # at once, before the put completed
    _wait_state(sub, "IN_POSITION", 10)
    real = time.monotonic() - t0
    time.sleep(0.3)
    mon.stop()
    states = [(t, STATES[int(s)]) for t, s in mon.data[sub("STATE_STS")]]
    names = [s for _, s in states]
    assert names[-3:] == ["MOVING", "SETTLING", "IN_POSITION"], names
    (t_mv, _), (t_st, _), (t_in, _) = states[-3:]
    print(f"\nfocus 6 mm: moving {t_st - t_mv:.3f} s, settling {t_in - t_st:.3f} s simulated; {real:.2f} s real")
    # the transitions carry the simulated instants of arrival and end of settling
    assert t_st - t_mv == pytest.approx(6.0 / FOCUS_RATE, abs=1e-5)
    assert t_in - t_st == pytest.approx(SETTLE_S, abs=1e-5)
    ramp = np.array([(t, v) for t, v in mon.data[sub("FOCUS_RBV")] if t_mv + 1 < t < t_st - 1])
    assert len(ramp) >= 5
    slope = np.polyfit(ramp[:, 0], ramp[:, 1], 1)[0]
    assert slope == pytest.approx(FOCUS_RATE, rel=0.03)
    rbv = np.array([get(sub("FOCUS_RBV")) for _ in range(3)])
    assert np.all(np.abs(rbv - 6.0) < 0.02)

    # out of travel, NaN, not a number: refused, nothing moves, the reason is published
    for pv, bad in (("FOCUS_SP", [30.5, -31.0, float("nan"), "abc"]), ("TILTX_SP", [61.0, -60.01]),
                    ("TILTY_SP", [1e3]), ("STOP_CMD", ["HALT", 5])):
        before = get(sub(pv), as_string=True)
        for v in bad:
            assert put_rejected(sub(pv), v), f"{pv} accepted {v!r}"
            assert get(sub(pv), as_string=True) == before
    assert put_rejected(sub("FOCUS_SP"), 45.0)
    assert "FOCUS_SP 45 outside -30..30" in get(sub("MSG_RBV"))
    assert get(sub("STATE_STS"), as_string=True) == "IN_POSITION"

    # a tilt move retargeted on the way, then stopped: the setpoint becomes where it stopped
    put(sub("TILTY_SP"), -50.0)
    time.sleep(0.3)
    put(sub("TILTY_SP"), 40.0)  # the other way: retarget while moving
    time.sleep(0.4)
    assert get(sub("STATE_STS"), as_string=True) == "MOVING"
    put(sub("STOP_CMD"), "STOP")
    assert get(sub("STATE_STS"), as_string=True) == "SETTLING"
    stopped = get(sub("TILTY_SP"))
    assert -50.0 < stopped < 40.0 and stopped != 0.0
    _wait_state(sub, "IN_POSITION", 5)
    assert abs(get(sub("TILTY_RBV")) - stopped) < 0.1
    assert get(sub("STOP_CMD"), as_string=True) == "IDLE"


def _aperture_gain(dz_m: float, lam: float, d: float = 26.0, f: float = 0.42 * 26.0, m: float = 8.0,
                   taper_db: float = 12.0, n: int = 801) -> float:
    """Phase efficiency of an axial subreflector defocus, on a Cartesian grid over the aperture."""
    x = np.linspace(-d / 2, d / 2, n)
    xx, yy = np.meshgrid(x, x)
    r = np.hypot(xx, yy)
    inside = r <= d / 2
    ped = 10 ** (-taper_db / 20)
    amp = np.where(inside, ped + (1 - ped) * (1 - (2 * r / d) ** 2), 0.0)
    half = np.arctan(r / (2 * f))
    path = dz_m * (np.cos(2 * half) + np.cos(2 * np.arctan(np.tan(half) / m)))
    return float(abs(np.sum(amp * np.exp(2j * np.pi * path / lam))) ** 2 / np.sum(amp) ** 2)


def _beam_shift_deg(tilt_arcmin: float, d: float = 26.0, f: float = 0.42 * 26.0, lever: float = 1.2) -> float:
    q = (d / (4 * f)) ** 2
    bdf = (1 + 0.36 * q) / (1 + q)
    return -math.degrees(bdf * math.radians(tilt_arcmin / 60) * lever / f)


def test_gain_factor_and_beam_shift(observatory):
    obs = observatory(["NDI", "SUB"], speed=60)
    sub = lambda sig: obs.pv("SUB", sig)  # noqa: E731
    best = float(obs.site.instrument("SUB").options["best_focus_mm"])
    wait_for(lambda: get(sub("NDI_LINK_STS"), as_string=True) == "OK", 10, what="NDI link")
    rx0, rxk = obs.site.receivers[0], obs.site.receivers[-1]
    assert get(sub("RX_RBV")) == rx0.name
    measured = {}
    for focus in (best, best + 8.0, best - 8.0):
        put(sub("FOCUS_SP"), focus)
        _wait_state(sub, "IN_POSITION", 10)
        for rx in (rx0, rxk):
            put(obs.pv("NDI", "RX_SEL_SP"), rx.name)
            wait_for(lambda rx=rx: get(sub("RX_RBV")) == rx.name, 5, what=f"SUB follows {rx.name}")
            measured[(focus, rx.name)] = get(sub("GAIN_FACTOR_RBV"))
    print("\ngain factors:", {k: round(v, 5) for k, v in measured.items()})
    for (focus, name), g in measured.items():
        lam = C / (obs.site.receiver(name).freq_mhz * 1e6)
        assert g == pytest.approx(_aperture_gain((focus - best) * 1e-3, lam), abs=2e-3), (focus, name)
    assert measured[(best, rx0.name)] == pytest.approx(1.0, abs=1e-9)
    # symmetric about the best focus; a short wavelength loses far more than a long one
    assert measured[(best + 8, rxk.name)] == pytest.approx(measured[(best - 8, rxk.name)], rel=1e-6)
    assert measured[(best + 8, rxk.name)] < 0.9 < 0.99 < measured[(best + 8, rx0.name)] < 1.0
    assert epics.caget(sub("GAIN_FACTOR_RBV.SEVR"), use_monitor=False) >= 1  # below 0.9: a warning

    # tilts shift the beam the other way, by BDF x lever / f
    put(sub("TILTX_SP"), 20.0)
    put(sub("TILTY_SP"), -12.0)
    _wait_state(sub, "IN_POSITION", 10)
    dx, dy = get(sub("BEAM_DX_RBV")), get(sub("BEAM_DY_RBV"))
    print(f"tilt 20/-12 arcmin: beam {dx * 3600:.1f}/{dy * 3600:.1f} arcsec")
    assert dx == pytest.approx(_beam_shift_deg(20.0), rel=1e-6) and dx < 0
    assert dy == pytest.approx(_beam_shift_deg(-12.0), rel=1e-6) and dy > 0


def test_device_positioner_and_scan(observatory):
    from bluesky import RunEngine
    from bluesky.plans import scan

    obs = observatory(["SUB"], speed=60)
    dev = registry.subreflector(obs.site)
    assert dev.focus.limits == FOCUS_TRAVEL and dev.tilt_x.egu == "arcmin"
    assert set(dev.hints["fields"]) == {"subreflector_focus_readback", "subreflector_tilt_x_readback",
                                        "subreflector_tilt_y_readback"}
    t0 = time.monotonic()
    dev.focus.set(4.0).wait(15)
    t_move = time.monotonic() - t0
    assert get(obs.pv("SUB", "STATE_STS"), as_string=True) == "IN_POSITION"
    assert abs(dev.focus.position - 4.0) < 0.02
    # 8 s of motion and 1.5 s of settling at speed 60 are about 0.16 s of real time
    assert t_move < 2.0
    # an already reached target finishes at once
    t0 = time.monotonic()
    dev.focus.set(4.0).wait(5)
    assert time.monotonic() - t0 < 1.0
    # a refused value fails with the IOC's reason; nothing moved
    with pytest.raises(CommandRefused, match="outside"):
        dev.tilt_x.set(75.0).wait(10)
    assert dev.tilt_x.setpoint.get() == 0.0
    # several axes at once
    dev.move(focus=-2.0, tilt_x=5.0, tilt_y=-5.0).wait(20)
    pos = dev.positions()
    assert pos == pytest.approx({"focus": -2.0, "tilt_x": 5.0, "tilt_y": -5.0}, abs=0.1)
    # a Bluesky scan over the focus reads the gain at each point
    RE = RunEngine({})
    docs: list = []
    RE(scan([dev], dev.focus, -1.0, 3.0, 3), lambda name, doc: docs.append((name, doc)))
    events = [d for n, d in docs if n == "event"]
    assert len(events) == 3
    foci = [e["data"]["subreflector_focus_readback"] for e in events]
    assert foci == pytest.approx([-1.0, 1.0, 3.0], abs=0.02)
    gains = [e["data"]["subreflector_gain"] for e in events]
    assert gains[1] > gains[0] and gains[1] > gains[2]  # closest to the best focus (1.8 mm)


def test_radiometer_sees_the_focus_and_the_tilts(observatory):
    """RAD's sky signal goes through the subreflector: defocus scales a calibrator's deflection by
    GAIN_FACTOR_RBV, a tilt moves the beam off the source, and a drive offset of the opposite sign brings the
    full deflection back."""
    from obsctl.catalog import load_catalog
    from obsctl.clock import ObservatoryClock
    from obsctl.sky import beam_response

    obs = observatory(["DRV", "RAD", "NDI", "SUB"], speed=60, epoch="2026-11-21T22:00:00")
    site = obs.site
    clock = ObservatoryClock.from_env({"OBSCTL_CLOCK": obs.state.clock})
    sub = lambda sig: obs.pv("SUB", sig)  # noqa: E731
    rx = site.receivers[-2]  # a short wavelength: the defocus loss is large
    put(obs.pv("NDI", "RX_SEL_SP"), rx.name)
    wait_for(lambda: get(sub("RX_RBV")) == rx.name and get(obs.pv("RAD", "RX_RBV")) == rx.name, 10,
             what=f"SUB and RAD on {rx.name}")
    best = float(site.instrument("SUB").options["best_focus_mm"])
    put(sub("FOCUS_SP"), best)
    _wait_state(sub, "IN_POSITION", 20)
    src = load_catalog(site.catalog_path).get("PictorA")
    fwhm = site.beam_fwhm_deg(rx.freq_mhz)
    drive = registry.drive(site)
    rad = registry.radiometer(site, clock=clock)
    rad.integration_time.put(10.0)

    def deflection(off_ha: float = 0.0) -> float:
        """On minus off source (K, mean of LCP and RCP): off, on, off 5 beams in Dec (a linear gain drift
        of the receiver cancels)."""
        out = []
        for off_dec in (5 * fwhm, 0.0, 5 * fwhm):
            drive.track(src.name, off_ha=off_ha, off_dec=off_dec).wait(60)
            time.sleep(0.2)  # the newest optics readbacks reach RAD
            rad.trigger().wait(30)
            out.append(0.5 * (float(rad.dvm1.get()) + float(rad.dvm2.get())))
        return out[1] - 0.5 * (out[0] + out[2])

    full = deflection()
    put(sub("FOCUS_SP"), best + 12.0)
    _wait_state(sub, "IN_POSITION", 30)
    gain = get(sub("GAIN_FACTOR_RBV"))
    defocused = deflection()
    put(sub("FOCUS_SP"), best)
    put(sub("TILTX_SP"), 30.0)
    _wait_state(sub, "IN_POSITION", 30)
    dx = get(sub("BEAM_DX_RBV"))  # deg along HA, true angle
    tilted = deflection()
    cos_dec = math.cos(math.radians(src.dec_deg))
    compensated = deflection(off_ha=-dx / cos_dec)
    expected_tilt = float(beam_response(abs(dx), fwhm))
    print(f"\n{rx.name}: deflection {full:.4f} K; focus +12 mm: x{defocused / full:.4f} (gain factor {gain:.4f}); "
          f"tilt X 30': beam {dx * 3600:.0f}\" = {abs(dx) / fwhm:.2f} beam, x{tilted / full:.4f} "
          f"(beam {expected_tilt:.4f}); drive offset back: x{compensated / full:.4f}")
    assert full > 0.2
    assert gain < 0.95 and defocused / full == pytest.approx(gain, abs=0.05)  # receiver gain drift: ~2 %
    assert 0.2 < expected_tilt < 0.9 and tilted / full == pytest.approx(expected_tilt, abs=0.05)
    assert compensated / full == pytest.approx(1.0, abs=0.05)
    drive.halt().wait(30)
