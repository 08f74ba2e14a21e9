"""SYN1 (HP 8662A) and SYN2 (HP 3336B): limits, quantisation, re-lock in simulated time, HP-IB commands."""

from __future__ import annotations

import threading
import time

import epics
import pytest

from tests.conftest import wait_for
from tests.helpers import check_pv_metadata, get, put, put_rejected, severity

# published instrument specifications (Hz, dBm), independent of the implementation
SPEC = {
    "HP8662A": {"f": (10e3, 1280e6), "p": (-130.0, 13.0), "res": lambda f: 0.1 if f < 640e6 else 0.2, "pres": 0.1},
    "HP3336B": {"f": (10.0, 20.999999999e6), "p": (-72.0, 10.0), "res": lambda f: 1e-6, "pres": 0.01},
}


def quantised(f: float, res: float) -> float:
    return round(f / res) * res


def test_synthesizer_limits_quantisation_and_lock(observatory):
    speed = 0.01  # slow clock: a few ms of settling become a fraction of a real second
    obs = observatory(["SYN1", "SYN2"], speed=speed)
    for dev in ("SYN1", "SYN2"):
        check_pv_metadata(obs, dev)
        model = obs.site.instrument(dev).model
        spec = SPEC[model]
        assert get(obs.pv(dev, "MODEL_RBV")) == model
        ctrl = epics.get_pv(obs.pv(dev, "FREQ_SP")).get_ctrlvars()
        assert (ctrl["lower_ctrl_limit"], ctrl["upper_ctrl_limit"]) == spec["f"]
        ctrl = epics.get_pv(obs.pv(dev, "POWER_SP")).get_ctrlvars()
        assert (ctrl["lower_ctrl_limit"], ctrl["upper_ctrl_limit"]) == spec["p"]
        assert get(obs.pv(dev, "FREQ_SP.EGU")) == "Hz" and get(obs.pv(dev, "POWER_RBV.EGU")) == "dBm"
        assert get(obs.pv(dev, "LOCK_STS"), as_string=True) == "LOCKED"
    # frequency quantisation to the model's resolution (8662A: 0.1 Hz below 640 MHz, 0.2 Hz above)
    cases = {"SYN1": [123.45678912e6, 1000.12345678e6, 639.99999996e6, 1280e6],
             "SYN2": [10.1234567891234e6, 10.0, 20.999999999e6, 1234.5678901234567]}
    for dev, freqs in cases.items():
        spec = SPEC[obs.site.instrument(dev).model]
        for f in freqs:
            put(obs.pv(dev, "FREQ_SP"), f)
            res = spec["res"](f)
            got = get(obs.pv(dev, "FREQ_RBV"))
            assert abs(got - quantised(f, res)) < 0.01 * res, (dev, f, got)
            assert get(obs.pv(dev, "FREQ_RES_RBV")) == pytest.approx(res)
        for p in (-10.04, -10.046, 3.333):
            put(obs.pv(dev, "POWER_SP"), p)
            assert get(obs.pv(dev, "POWER_RBV")) == pytest.approx(quantised(p, spec["pres"]), abs=1e-9)
    # re-lock after a frequency change lasts the settling time in simulated time
    lock = obs.pv("SYN1", "LOCK_STS")
    events: list[tuple[float, float, int]] = []
    guard = threading.Lock()

    def cb(value=None, timestamp=None, **_):
        with guard:
            events.append((time.time(), float(timestamp), int(value)))

    wait_for(lambda: get(lock) == 0, 10.0, what="SYN1 locked after the last frequency change")
    mon = epics.PV(lock, callback=cb, form="time", auto_monitor=True)
    assert mon.wait_for_connection(5.0)
    wait_for(lambda: len(events) >= 1, 5.0, what="initial lock monitor")
    put(obs.pv("SYN1", "FREQ_SP"), 500e6)
    wait_for(lambda: len(events) >= 3, 10.0, what="UNLOCKED then LOCKED")
    mon.clear_callbacks()
    (_, _, s0), (r1, t1, s1), (r2, t2, s2) = events[:3]
    settle_s = get(obs.pv("SYN1", "SETTLE_TIME_RBV")) * 1e-3
    print(f"SYN1 re-lock: {t2 - t1:.4f} s simulated, {r2 - r1:.3f} s real at speed {speed}")
    assert (s0, s1, s2) == (0, 1, 0)
    assert 1e-3 <= settle_s <= 20e-3  # "a few ms"
    assert settle_s * 0.9 <= t2 - t1 <= settle_s * 1.5 + 0.2 * speed
    assert settle_s / speed * 0.8 <= r2 - r1 <= settle_s / speed * 1.5 + 0.2


def test_synthesizer_hpib_commands_and_bad_input(observatory):
    obs = observatory(["SYN1", "SYN2"], speed=1000)
    s1, s2 = (lambda sig, d=d: obs.pv(d, sig) for d in ("SYN1", "SYN2"))
    # HP 8662A syntax: FR <v> GZ/MZ/KZ/HZ, AP <v> DM
    put(s1("COMMAND_SP"), "FR 1220.405 MZ")
    assert get(s1("FREQ_SP")) == 1220.405e6 and get(s1("FREQ_RBV")) == pytest.approx(1220.405e6, abs=1e-6)
    put(s1("COMMAND_SP"), "AP -10.04 DM")
    assert get(s1("POWER_SP")) == pytest.approx(-10.04) and get(s1("POWER_RBV")) == pytest.approx(-10.0)
    put(s1("COMMAND_SP"), "fr 10.0000001 mz ap-5dm")
    assert get(s1("FREQ_RBV")) == pytest.approx(10000000.1, abs=1e-6) and get(s1("POWER_RBV")) == -5.0
    # HP 3336B syntax: FR <v> MH/KH/HZ, AM <v> DB
    put(s2("COMMAND_SP"), "FR10.7MHAM-20DB")
    assert get(s2("FREQ_RBV")) == pytest.approx(10.7e6, abs=1e-6) and get(s2("POWER_RBV")) == -20.0
    put(s2("COMMAND_SP"), "FR 455.000001 KH")
    assert get(s2("FREQ_RBV")) == pytest.approx(455000.001, abs=1e-7)
    # malformed, other model's syntax or out of range: rejected, nothing changes, the reason is published
    bad = {
        "SYN1": ["FR 1420.405 MZ", "FR10MH", "XX1", "", "AP 20 DM", "FR MZ", "FR10", "AP-10DB", "FR5KZ"],
        "SYN2": ["FR1420.405MH", "AP-3DM", "FR10.7MZ", "AM-80DB", "FR-5HZ", "FR 21 MH", "AM"],
    }
    for dev, cmds in bad.items():
        pv = (s1 if dev == "SYN1" else s2)
        before = (get(pv("FREQ_SP")), get(pv("FREQ_RBV")), get(pv("POWER_RBV")), get(pv("COMMAND_SP")))
        for cmd in cmds:
            assert put_rejected(pv("COMMAND_SP"), cmd), f"{dev} accepted {cmd!r}"
            after = (get(pv("FREQ_SP")), get(pv("FREQ_RBV")), get(pv("POWER_RBV")), get(pv("COMMAND_SP")))
            assert after == before, (dev, cmd)
    assert put_rejected(s1("COMMAND_SP"), "FR 1420.405 MZ")
    assert "1420.405 MHz outside" in get(s1("MSG_RBV"))
    assert put_rejected(s2("COMMAND_SP"), "AP-3DM")
    assert "unknown code 'AP'" in get(s2("MSG_RBV"))
    # direct setpoints: out of range, NaN, wrong type, unknown enum
    for pv, values in ((s1("FREQ_SP"), [0.0, 5e3, 1.3e9, float("nan"), "abc"]),
                       (s2("FREQ_SP"), [5.0, 21e6, float("inf")]),
                       (s1("POWER_SP"), [13.1, -131.0, float("nan")]),
                       (s2("POWER_SP"), [10.5, -73.0]),
                       (s1("RF_SP"), ["MAYBE", 2, -1])):
        old = get(pv, as_string=True)
        for v in values:
            assert put_rejected(pv, v), f"{pv} accepted {v!r}"
            assert get(pv, as_string=True) == old
    # a good put after rejections leaves no alarm on the setpoint
    put(s1("RF_SP"), "OFF")
    assert get(s1("RF_SP"), as_string=True) == "OFF" and severity(s1("RF_SP")) == 0
    put(s1("FREQ_SP"), 100e6)
    assert severity(s1("FREQ_SP")) == 0
