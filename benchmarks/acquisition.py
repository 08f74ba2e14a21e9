"""Radiometer acquisition: samples (DVMs + position) delivered over CA per second, samples lost, stamp skew.

Starts TIME, DRV, RAD and NDI at speed 1 on free loopback ports, sets RAD:RATE_SP, commands a long slew so the
position changes fast (0.5 deg/s), and monitors RAD:BLK_RBV and DRV:POS_PKT with pyepics for a while.
Skew: at each drive packet time, the block's HA (interpolated between its samples) is compared with the packet's
observed HA; the difference divided by the axis rate is the time skew between DVM stamps and position.
Goal: 400 Hz, 0 lost, skew < 1 ms.  Usage: ``.venv/bin/python benchmarks/acquisition.py [--rate 400 --seconds 20]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_base_port, hermetic_env  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rate", type=float, default=400.0, help="RAD:RATE_SP (Hz)")
    ap.add_argument("--seconds", type=float, default=20.0, help="real seconds to monitor")
    args = ap.parse_args()
    base = free_base_port()
    hermetic_env(base)
    import epics
    import ophyd  # noqa: F401  (selects libca before epics.ca is used)

    from obsctl import blocks, launcher
    from obsctl.site import load_site

    site = load_site()
    state = Path(tempfile.mkdtemp(prefix="obsctl-acq-"))
    obs = launcher.start(site, state, only=["TIME", "DRV", "RAD", "NDI"], base_port=base, repeater_port=base - 1,
                   speed=1.0, epoch="2026-11-21T22:00:00")
    from obsctl.clock import ObservatoryClock

    clock = ObservatoryClock.from_env({"OBSCTL_CLOCK": obs.clock})
    try:
        pv = site.pv
        epics.caput(pv("RAD", "RATE_SP"), args.rate, wait=True)
        epics.caput(pv("DRV", "WATCHDOG_ENA_SP"), "DISABLED", wait=True)
        epics.caput(pv("DRV", "SLEW_FRAME_SP"), "HADEC", wait=True)
        epics.caput(pv("DRV", "SLEW_X_SP"), -60.0, wait=True)
        epics.caput(pv("DRV", "SLEW_Y_SP"), -25.0, wait=True)
        epics.caput(pv("DRV", "MODE_CMD"), "SLEW", wait=True)
        time.sleep(4.0)  # let the axis reach full rate
        lock = threading.Lock()
        tracker = blocks.LossTracker()
        blks: list = []
        pkts: list[np.ndarray] = []
        latency: list[float] = []

        def on_block(value=None, **_):
            b = blocks.try_unpack(value)
            if b is None or b.nsamp == 0:
                return
            with lock:
                if tracker.add(b):
                    blks.append(b)
                    latency.append(clock.now() - float(b.col("T")[-1]))

        def on_pkt(value=None, **_):
            with lock:
                pkts.append(np.array(value, dtype=float))

        bpv = epics.PV(pv("RAD", "BLK_RBV"), auto_monitor=True, callback=on_block)
        ppv = epics.PV(pv("DRV", "POS_PKT"), auto_monitor=True, callback=on_pkt)
        bpv.wait_for_connection(5)
        ppv.wait_for_connection(5)
        t0 = time.time()
        time.sleep(args.seconds)
        with lock:
            elapsed = time.time() - t0
            data = blocks.concat(blks)
            packets = np.array(pkts)
            n = tracker.samples
        bpv.clear_callbacks()
        ppv.clear_callbacks()
        t = data[blocks.C["T"]]
        ha = data[blocks.C["HA"]]
        skews = []
        for p in packets:
            tp, ha_obs, rate = p[0], p[3], p[5]
            if t[0] < tp < t[-1] and abs(rate) > 0.05:
                skews.append(abs(np.interp(tp, t, ha) - ha_obs) / abs(rate))
        grid = np.diff(t)
        print(f"rate {args.rate:g} Hz for {elapsed:.1f} s real: {n} samples delivered = {n / elapsed:.0f} samples/s, "
              f"lost {tracker.lost}, repeated {tracker.repeated}, blocks {tracker.blocks}")
        print(f"sample spacing {grid.mean() * 1e3:.3f} ms (sd {grid.std() * 1e6:.2f} us); delivery latency median "
              f"{np.median(latency) * 1e3:.0f} ms, max {np.max(latency) * 1e3:.0f} ms")
        if skews:
            print(f"position/stamp skew over {len(skews)} drive packets while slewing: max {max(skews) * 1e3:.3f} ms,"
                  f" median {np.median(skews) * 1e3:.3f} ms (goal < 1 ms)")
        else:
            print("no drive packets while slewing: skew not measured")
    finally:
        launcher.stop(state)


if __name__ == "__main__":
    main()
