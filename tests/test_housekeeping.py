"""TMS IOC: cryostat, vacuum, supplies and room within physical ranges; a compressor failure warms the cryostat
and trips the alarms; restarting the compressor cools it again."""

from __future__ import annotations

import threading
import time

import epics
import numpy as np

from tests.conftest import wait_for
from tests.helpers import check_pv_metadata, get, put, put_rejected, severity

UNITS = {"CRYO_15K_RBV": "K", "CRYO_70K_RBV": "K", "VAC_RBV": "mbar", "PSU_P15_RBV": "V", "PSU_N15_RBV": "V",
         "PSU_P5_RBV": "V", "PSU_P28_RBV": "V", "ROOM_TEMP_RBV": "degC"}
NOMINAL_V = {"PSU_P15_RBV": 15.0, "PSU_N15_RBV": -15.0, "PSU_P5_RBV": 5.0, "PSU_P28_RBV": 28.0}


def test_housekeeping_warmup_trips_alarms(observatory):
    speed = 300.0
    obs = observatory(["TMS"], speed=speed, epoch="2026-11-21T20:00:00")
    tms = lambda sig: obs.pv("TMS", sig)  # noqa: E731
    served = check_pv_metadata(obs, "TMS")
    for sig, unit in UNITS.items():
        assert tms(sig) in served and get(tms(sig + ".EGU")) == unit
        assert get(tms(sig + ".HIHI")) > get(tms(sig + ".HIGH")), f"{sig} lacks alarm limits"
    # nominal operation: every reading in its physical range, no alarm
    t15, t70, vac, room = (get(tms(s)) for s in ("CRYO_15K_RBV", "CRYO_70K_RBV", "VAC_RBV", "ROOM_TEMP_RBV"))
    print(f"TMS nominal: 15K stage {t15:.2f} K, 70K stage {t70:.1f} K, vacuum {vac:.2e} mbar, room {room:.1f} C")
    assert 10.0 < t15 < 20.0 and 40.0 < t70 < 90.0 and t15 < t70
    assert 1e-8 < vac < 1e-5 and 15.0 < room < 28.0
    for sig in UNITS:
        assert severity(tms(sig)) == 0, sig
    # supplies: near nominal, with ripple (successive readings differ by millivolts)
    samples = {s: [] for s in NOMINAL_V}
    for _ in range(4):
        for s in NOMINAL_V:
            samples[s].append(get(tms(s)))
        time.sleep(1.05)
    for s, v in samples.items():
        assert np.all(np.abs(np.array(v) / NOMINAL_V[s] - 1.0) < 0.01), (s, v)
        assert 1e-5 < np.std(v) < 0.05, (s, v)
    # bad input to the simulation command
    for bad in ("BROKEN", 2, -1, 3.5):
        assert put_rejected(tms("SIM_CRYO_FAIL_CMD"), bad), f"accepted {bad!r}"
        assert get(tms("SIM_CRYO_FAIL_CMD"), as_string=True) == "OK"
    # compressor failure: record the warm-up in simulated time (5 Hz: a reading per simulated minute)
    put(tms("RATE_SP"), 5.0)
    names = [tms("CRYO_15K_RBV"), tms("CRYO_70K_RBV"), tms("VAC_RBV")]
    data: dict[str, list[tuple[float, float, int]]] = {n: [] for n in names}
    guard = threading.Lock()

    def cb(pvname=None, value=None, timestamp=None, severity=None, **_):
        with guard:
            data[pvname].append((float(timestamp), float(value), int(severity)))

    mons = [epics.PV(n, callback=cb, form="time", auto_monitor=True) for n in names]
    for m in mons:
        assert m.wait_for_connection(5.0)
    put(tms("SIM_CRYO_FAIL_CMD"), "WARMUP")
    t_fail = epics.get_pv(tms("COMP_STS")).get_with_metadata(use_monitor=False, form="time")["timestamp"]
    assert get(tms("COMP_STS"), as_string=True) == "STOPPED" and severity(tms("COMP_STS")) == 2
    wait_for(lambda: severity(tms("CRYO_15K_RBV")) == 2, 20.0, what="15 K stage major alarm")
    wait_for(lambda: severity(tms("VAC_RBV")) == 2, 30.0, what="vacuum major alarm")
    for m in mons:
        m.clear_callbacks()
    c15 = np.array(data[names[0]])
    c70 = np.array(data[names[1]])
    after = c15[c15[:, 0] > t_fail]
    minutes_to_30k = (after[np.argmax(after[:, 1] > 30.0), 0] - t_fail) / 60.0
    minor_first = after[after[:, 2] == 1]
    print(f"TMS warm-up: 15K stage > 30 K after {minutes_to_30k:.1f} simulated min; "
          f"reached {after[-1, 1]:.1f} K, 70K stage {c70[-1, 1]:.1f} K")
    # the cold stage warms monotonically (beyond sensor noise), passing the warning before the major limit
    assert np.all(np.diff(after[:, 1]) > -0.05)
    assert len(minor_first) and minor_first[0, 0] < after[after[:, 2] == 2][0, 0]
    # copper's tiny heat capacity at 15 K: minutes, not seconds or hours
    assert 1.0 < minutes_to_30k < 30.0
    # the massive shield warms much more slowly than the LNA plate
    rise15 = after[-1, 1] - after[0, 1]
    c70_after = c70[c70[:, 0] > t_fail]
    assert 0.0 < c70_after[-1, 1] - c70_after[0, 1] < rise15
    # restart: the cryostat cools down again and the compressor alarm clears
    put(tms("SIM_CRYO_FAIL_CMD"), "OK")
    assert get(tms("COMP_STS"), as_string=True) == "RUNNING" and severity(tms("COMP_STS")) == 0
    warm = get(tms("CRYO_15K_RBV"))
    wait_for(lambda: get(tms("CRYO_15K_RBV")) < warm - 2.0, 20.0, what="cool-down after restart")
    assert severity(tms("SIM_CRYO_FAIL_CMD")) == 0
