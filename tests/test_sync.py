"""Position packets on request (DRV:SYNC_SP, RAD:SYNC_SP) and the settled cycle at a move's arrival.

The drive here runs its control loop slowly (2 Hz, or 0.25 Hz, real time), so that a packet or a settled
state brought forward by these mechanisms is told apart from the periodic cycles by a wide margin (hundreds
of real milliseconds), not by a timing race.  Times below are observatory seconds unless said otherwise.
"""

from __future__ import annotations

import threading

import epics
import numpy as np

from obsctl import blocks
from obsctl.clock import ObservatoryClock
from obsctl.positions import IDX
from obsctl.site import write_site_variant
from tests.conftest import wait_for
from tests.helpers import get, put, put_rejected

NIGHT = "2026-11-21T22:00:00"
SPEED = 60.0
LATE = 0.2 * SPEED  # 200 real ms: the most an answer may come after its instant (periodic cycles: 500 ms)


class _Monitor:
    """Every update of one PV, with its own contents decoded by ``decode``."""

    def __init__(self, name: str, decode):
        self.items: list = []
        self._lock = threading.Lock()
        self.decode = decode
        self.pv = epics.PV(name, callback=self._cb, auto_monitor=True, form="time")
        assert self.pv.wait_for_connection(10), f"{name} did not connect"

    def _cb(self, value=None, timestamp=None, **_):
        item = self.decode(value, timestamp)
        with self._lock:
            self.items.append(item)

    def since(self, n: int) -> list:
        with self._lock:
            return self.items[n:]


def test_drive_and_radiometer_answer_a_requested_instant(observatory, tmp_path):
    obs = observatory(["DRV", "RAD"], speed=SPEED, epoch=NIGHT, site=write_site_variant(tmp_path, control_rate_hz=2.0))
    clock = ObservatoryClock.from_env({"OBSCTL_CLOCK": obs.state.clock})
    put(obs.pv("DRV", "WATCHDOG_ENA_SP"), "DISABLED")
    put(obs.pv("DRV", "TRACK_NAME_SP"), "PictorA")
    put(obs.pv("DRV", "MODE_CMD"), "TRACK")
    wait_for(lambda: get(obs.pv("DRV", "SETTLED_STS"), as_string=True) == "YES", 60, what="settled on PictorA")
    packets = _Monitor(obs.pv("DRV", "POS_PKT"), lambda v, ts: float(v[IDX["T"]]))
    blks = _Monitor(obs.pv("RAD", "BLK_RBV"), lambda v, ts: (float(ts), blocks.unpack(v)))
    rng = np.random.default_rng(5)

    # the drive: a packet at (just after) each instant asked for, between its periodic ones (0.5 s apart)
    for _ in range(4):
        n0 = len(packets.items)
        t_req = clock.now() + (0.15 + 0.2 * rng.random()) * SPEED
        put(obs.pv("DRV", "SYNC_SP"), t_req)
        wait_for(lambda n0=n0, t_req=t_req: any(t >= t_req + 0.3 * SPEED for t in packets.since(n0)), 5,
                 what="the packets after the instant")
        first = min(t for t in packets.since(n0) if t >= t_req)
        print(f"DRV:SYNC_SP: packet {1e3 * (first - t_req) / SPEED:.1f} real ms after the instant")
        assert first - t_req < LATE, f"first packet {first - t_req:.3f} s after the instant asked for"
    # an instant already past: a packet at once
    n0 = len(packets.items)
    t_put = clock.now()
    put(obs.pv("DRV", "SYNC_SP"), t_put - 600.0)
    wait_for(lambda: packets.since(n0), 5, what="a packet")
    assert packets.since(n0)[0] - t_put < LATE
    assert put_rejected(obs.pv("DRV", "SYNC_SP"), -1.0)

    # the radiometer: the block holding the samples up to the instant is published right after it
    rate = float(get(obs.pv("RAD", "RATE_SP")))
    for _ in range(4):
        n0 = len(blks.items)
        t_req = clock.now() + (0.15 + 0.2 * rng.random()) * SPEED
        put(obs.pv("RAD", "SYNC_SP"), t_req)

        def covering(n0=n0, t_req=t_req):
            return [stamp for stamp, b in blks.since(n0) if b.nsamp and b.col("T")[-1] + 1.0 / rate >= t_req]

        wait_for(covering, 5, what="a block reaching the instant")
        print(f"RAD:SYNC_SP: block published {1e3 * (covering()[0] - t_req) / SPEED:.1f} real ms after the instant")
        assert covering()[0] - t_req < LATE, f"published {covering()[0] - t_req:.3f} s after the instant"


def test_a_short_move_is_settled_its_settle_time_after_arrival(observatory, tmp_path):
    """A control cycle every 4 real s (240 s at 60x), a settle time of 2 s: settled at arrival + 2 s all the same."""
    obs = observatory(["DRV"], speed=SPEED, epoch=NIGHT, site=write_site_variant(tmp_path, control_rate_hz=0.25))
    clock = ObservatoryClock.from_env({"OBSCTL_CLOCK": obs.state.clock})
    settle = obs.site.mount.settle_time_s
    assert settle == 2.0
    put(obs.pv("DRV", "WATCHDOG_ENA_SP"), "DISABLED")
    put(obs.pv("DRV", "TRACK_NAME_SP"), "PictorA")
    put(obs.pv("DRV", "MODE_CMD"), "TRACK")
    wait_for(lambda: get(obs.pv("DRV", "SETTLED_STS"), as_string=True) == "YES", 120, what="settled on PictorA")
    packets = _Monitor(obs.pv("DRV", "POS_PKT"), lambda v, ts: (float(v[IDX["T"]]), float(v[IDX["ON_SOURCE"]])))
    for step in (0.01, -0.01):
        n0 = len(packets.items)
        t_cmd = clock.now()
        put(obs.pv("DRV", "OFF_DEC_SP"), step)
        wait_for(lambda n0=n0, t_cmd=t_cmd: any(on > 0.5 and t > t_cmd for t, on in packets.since(n0)), 15,
                 what="settled again")
        t_settled = min(t for t, on in packets.since(n0) if on > 0.5 and t > t_cmd)
        print(f"offset step {step:+g} deg: settled {t_settled - t_cmd:.2f} s after the command (settle {settle:g} s)")
        # arrival within ~0.3 s (0.01 deg at the axis limits), then the settle time; the next periodic cycle
        # after the command would come 240 s later
        assert settle <= t_settled - t_cmd < settle + 0.3 + LATE, f"settled {t_settled - t_cmd:.2f} s after the command"
