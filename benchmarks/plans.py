"""Plan-level figures: step cost against a bare ``count``, move-to-settled latency, drift-scan dead time, archive.

Starts its own observatory (DRV, WX, RAD, NDI at speed 60 from 2026-11-21T22:00:00, PictorA up) on free
loopback ports and measures, in this one process:

1. per-step cost: interleaved RunEngine ``count`` runs over (a) plain ``ophyd.EpicsSignalRO`` signals of the
   very PVs our radiometer and drive devices read (without monitors, as plain signals come, and with monitors,
   as our devices read them) and (b) our devices (``count([radiometer, drive])`` is the ``trigger_and_read``
   of the step plans).  A step is the interval between consecutive Event documents; the integration's real
   duration (integration_s / speed) is subtracted.  Then the ``stepping`` plan per step, less integration,
   slew to the within-tolerance point and settle time (goal for both: <= 1.5 x the bare count);
2. move-to-settled latency: offset steps of the drive (``drive.off_dec.set``, and ``go_on_source``) from the
   command to the settled readback, less the kinematic move time at the site's rate/acceleration limits and
   the settle time (goal: <= one control cycle + 20 ms);
3. drift-scan dead time: ``drift_scan`` on PictorA a few times (goal: < 1 % of the scan duration);
4. run-archive rates on SQLite and PostgreSQL (127.0.0.1:5432): ``benchmarks/archive.py``'s synthetic runs,
   plus the recorded drift scan written to each backend and read back with ``archiver.queries``.

Usage: ``.venv/bin/python benchmarks/plans.py [--quick]``  (5 minutes, ``--quick`` 4, on 2 busy cores)
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# this file is called plans.py: keep its directory from shadowing the project's ``plans`` package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))
sys.path.append(str(HERE))
from _common import free_base_port, hermetic_env  # noqa: E402

EPOCH = "2026-11-21T22:00:00"  # PictorA (Dec -45.8) well up at the reference site, sun down
SOURCE = "PictorA"
DEVS = ["DRV", "WX", "RAD", "NDI"]
EXTRA_GOAL_S = 0.020  # move-to-settled goal: one control cycle + 20 ms
RATIO_GOAL = 1.5
DEAD_GOAL = 0.01


@dataclass
class Figure:
    """One line of the summary: what, the measured value (text), the goal (text), met or not (None: no goal)."""

    name: str
    value: str
    goal: str = ""
    ok: bool | None = None


def med(x: list[float]) -> float:
    return statistics.median(x) if x else math.nan


def pct(x: list[float], q: float) -> float:
    return float(np.percentile(x, q)) if x else math.nan


def ms(x: float) -> str:
    return f"{1e3 * x:.1f} ms"


# ------------------------------------------------------------------ kinematics (site limits)
def move_time(q: float, accel: float, vmax: float) -> float:
    """Time-optimal rest-to-rest move of ``q`` deg (s): triangular or trapezoidal velocity profile."""
    q = abs(q)
    if q * accel <= vmax * vmax:
        return 2.0 * math.sqrt(q / accel)
    return q / vmax + vmax / accel


def time_to_tolerance(q: float, accel: float, vmax: float, tol: float) -> float:
    """Time (s) until a move of ``q`` deg comes within ``tol`` of its end (the on-source test)."""
    if abs(q) <= tol:
        return 0.0
    return move_time(q, accel, vmax) - math.sqrt(2.0 * tol / accel)


# ------------------------------------------------------------------ event timing
class StepTimer:
    """RunEngine callback: real time of every Event of the ``primary`` stream, per run label (``bench`` md)."""

    def __init__(self) -> None:
        self.events: dict[str, list[list[float]]] = {}
        self._primary: set[str] = set()
        self._cur: list[float] | None = None
        self.docs: list[tuple[str, dict]] = []
        self.keep_docs = False

    def __call__(self, name: str, doc: dict) -> None:
        now = time.perf_counter()
        if self.keep_docs:
            self.docs.append((name, doc))
        if name == "start":
            self._cur = []
            self.events.setdefault(doc.get("bench", doc.get("plan_name", "?")), []).append(self._cur)
        elif name == "descriptor" and doc.get("name") == "primary":
            self._primary.add(doc["uid"])
        elif name == "event" and doc["descriptor"] in self._primary and self._cur is not None:
            self._cur.append(now)

    def intervals(self, label: str) -> list[float]:
        """Intervals between consecutive primary Events of every run labelled ``label`` (s)."""
        return [float(d) for run in self.events.get(label, []) for d in np.diff(run)]


# ------------------------------------------------------------------ 1. per-step cost
def bare_signals(devices: list[Any], extra: list[str], monitor: bool, tag: str) -> list[Any]:
    """Plain EpicsSignalRO for every PV the devices read (from their ``describe()``) plus ``extra``."""
    from ophyd import EpicsSignalRO

    pvs: list[str] = []
    for dev in devices:
        for d in dev.describe().values():
            src = d.get("source", "")
            if src.startswith("PV:"):
                pvs.append(src[3:].split("[")[0])
    pvs = list(dict.fromkeys(pvs + extra))
    sigs = [EpicsSignalRO(pv, name=f"{tag}_{pv.replace(':', '_').lower()}", auto_monitor=monitor, timeout=10.0)
            for pv in pvs]
    for s in sigs:
        s.wait_for_connection(timeout=60)
    return sigs


def step_cost(RE: Any, timer: StepTimer, site: Any, clock: Any, drive: Any, radiometer: Any, instr: Any,
              args: argparse.Namespace) -> tuple[list[Figure], dict]:
    from bluesky.plans import count

    from plans import stepping

    rad_extra = [site.pv("RAD", "DVM1_RBV"), site.pv("RAD", "DVM2_RBV")]
    bare = bare_signals([radiometer, drive], rad_extra, False, "plain")
    bare_mon = bare_signals([radiometer, drive], rad_extra, True, "mon")
    bare_drv = bare_signals([drive], [], True, "mondrv")
    print(f"bare count over {len(bare)} PVs our radiometer+drive read ({len(bare_drv)} of them the drive's)")
    drive.track(SOURCE, off_ha=0.0, off_dec=0.0).wait(60)
    radiometer.integration_time.put(args.integration)
    integ_real = args.integration / clock.speed
    waits: list[float] = []  # from the window's end (real) to the trigger finishing

    def on_result(value: Any = None, **_: Any) -> None:
        t_end = radiometer.last_window[1]
        if t_end is not None:
            waits.append(time.time() - clock.real_time(t_end))

    sub = radiometer.dvm1.subscribe(on_result, run=False)
    runs = {"plain": bare, "monitored": bare_mon, "ours": [radiometer, drive], "mondrv": bare_drv,
            "ours_drv": [drive]}
    RE(count(bare_mon, 3), bench="warmup")
    RE(count([radiometer, drive], 3), bench="warmup")
    waits.clear()
    for rep in range(args.reps):
        order = list(runs) if rep % 2 == 0 else list(reversed(runs))
        for label in order:
            # plain signals read every PV with a round trip: fewer steps keep the run short
            RE(count(runs[label], max(3, args.steps // 3) if label == "plain" else args.steps), bench=label)
    # what-if: the RAD IOC publishing blocks at its fastest period (BLK_PERIOD_SP, real s) instead of the default
    period0 = float(radiometer.blk_period.get())
    n_default = len(waits)
    fast_waits: list[float] = []
    if args.fast_blocks:
        radiometer.blk_period.checked_put(0.02)
        try:
            RE(count([radiometer, drive], 3), bench="warmup")
            n0 = len(waits)
            RE(count([radiometer, drive], args.steps), bench="ours_fast")
            fast_waits = waits[n0:]
        finally:
            radiometer.blk_period.checked_put(period0)
    radiometer.dvm1.unsubscribe(sub)
    del waits[n_default:]
    iv = {k: timer.intervals(k) for k in runs}
    m = {k: med(v) for k, v in iv.items()}
    ours_net = m["ours"] - integ_real
    stream = med(waits)
    print(f"\n1. per-step cost, {args.reps} x {args.steps} steps each, runs interleaved (median, p90):")
    for k, label in (("plain", "bare count, EpicsSignalRO (no monitor)"),
                     ("monitored", "bare count, EpicsSignalRO (monitored)"),
                     ("ours", "count([radiometer, drive])"), ("mondrv", "bare count, drive PVs (monitored)"),
                     ("ours_drv", "count([drive])")):
        print(f"   {label:<42}{1e3 * m[k]:8.1f} ms  p90 {1e3 * pct(iv[k], 90):7.1f} ms  ({len(iv[k])} steps)")
    print(f"   our step less the integration ({args.integration:g} s obs = {1e3 * integ_real:.1f} ms real): "
          f"{1e3 * ours_net:.1f} ms, of which waiting for the sample stream after the window's end "
          f"{1e3 * stream:.1f} ms (median of {len(waits)}), the rest (RunEngine + devices) "
          f"{1e3 * (ours_net - stream):.1f} ms")
    if fast_waits:
        fast = med(timer.intervals("ours_fast")) - integ_real
        print(f"   what-if BLK_PERIOD_SP {period0:g} -> 0.02 s: step less integration {1e3 * fast:.1f} ms, stream wait "
              f"{1e3 * med(fast_waits):.1f} ms = {fast / m['monitored']:.2f}x the bare count (monitored)")
    r_plain, r_mon = ours_net / m["plain"], ours_net / m["monitored"]
    print(f"   ratio to the bare count: {r_plain:.2f}x (plain), {r_mon:.2f}x (monitored); without the stream wait "
          f"{(ours_net - stream) / m['monitored']:.2f}x; drive alone {m['ours_drv'] / m['mondrv']:.2f}x")
    figs = [Figure("bare count step (plain / monitored PVs)", f"{ms(m['plain'])} / {ms(m['monitored'])}"),
            Figure("count([radiometer, drive]) step less integration", ms(ours_net)),
            Figure("  of which waiting for the sample stream", ms(stream)),
            Figure("  step / bare count (plain PVs)", f"{r_plain:.2f}x", f"<= {RATIO_GOAL}x", r_plain <= RATIO_GOAL),
            Figure("  step / bare count (monitored PVs)", f"{r_mon:.2f}x", f"<= {RATIO_GOAL}x", r_mon <= RATIO_GOAL)]
    if fast_waits:
        figs.append(Figure("  what-if RAD:BLK_PERIOD_SP 0.02 s: step / bare count (monitored)",
                           f"{fast / m['monitored']:.2f}x"))

    # the stepping plan: off / on / off in Dec, each step a go_on_source then trigger_and_read (the next move
    # starting at the end of the integration window: plans.stubs.step_series)
    rx = site.receivers[0]
    fwhm = site.beam_fwhm_deg(rx.freq_mhz)
    off = 3.0 * fwhm
    mnt = site.mount
    settle_real = mnt.settle_time_s / clock.speed
    ys = [0.0] + [y for _ in range(args.cycles) for y in (-off, 0.0, off)]
    kin = [time_to_tolerance(b - a, mnt.dec.max_accel_deg_s2, mnt.dec.max_rate_deg_s,
                             mnt.on_source_tolerance_deg) / clock.speed for a, b in zip(ys[1:-1], ys[2:], strict=True)]
    step_iv: list[float] = []
    overhead: list[float] = []
    for _ in range(args.plan_reps):
        n0 = len(timer.events.get("stepping", []))
        drive.track(SOURCE, off_ha=0.0, off_dec=0.0).wait(60)
        RE(stepping(drive, radiometer, SOURCE, cycles=args.cycles, integration_s=args.integration,
                    instrumentation=instr, receiver=rx.name, cleanup="none"), bench="stepping")
        for run in timer.events["stepping"][n0:]:
            d = np.diff(run)
            step_iv += d.tolist()
            overhead += (d - integ_real - np.array(kin[:len(d)]) - settle_real).tolist()
    plan_net = med(step_iv) - integ_real
    ov = med(overhead)
    r_plan = ov / m["monitored"]
    print(f"   stepping plan ({args.plan_reps} x {args.cycles} cycles, off {off:.3f} deg in Dec): step "
          f"{1e3 * med(step_iv):.1f} ms, less integration {1e3 * plan_net:.1f} ms; less slew to tolerance "
          f"(median {1e3 * med(kin):.1f} ms) and settle time ({1e3 * settle_real:.1f} ms): {1e3 * ov:.1f} ms "
          f"= {r_plan:.2f}x the bare count (monitored)")
    figs += [Figure("stepping step less integration", ms(plan_net)),
             Figure("  less slew and settle time (step overhead)", ms(ov)),
             Figure("  overhead / bare count (monitored PVs)", f"{r_plan:.2f}x", f"<= {RATIO_GOAL}x",
                    r_plan <= RATIO_GOAL)]
    return figs, {"bare_mon_s": m["monitored"], "stream_wait_s": stream}


# ------------------------------------------------------------------ 2. move -> settled
def settle_latency(RE: Any, site: Any, clock: Any, drive: Any, args: argparse.Namespace) -> list[Figure]:
    from devices.drive import PKT_ON_SOURCE, PKT_T
    from plans.stubs import go_on_source

    mnt = site.mount
    cycle = 1.0 / mnt.control_rate_hz
    settle_real = mnt.settle_time_s / clock.speed
    q = args.step_deg
    kin_full = move_time(q, mnt.dec.max_accel_deg_s2, mnt.dec.max_rate_deg_s) / clock.speed
    kin_tol = time_to_tolerance(q, mnt.dec.max_accel_deg_s2, mnt.dec.max_rate_deg_s,
                                mnt.on_source_tolerance_deg) / clock.speed
    lock = threading.Lock()
    pkts: list[tuple[float, float]] = []  # (packet cycle time obs, settled flag)
    lags: list[float] = []  # packet arrival here (after ophyd's dispatch) less its cycle time (real s)
    offs: list[tuple[float, float]] = []  # (OFF_DEC_RBV value, its time stamp obs)

    def on_pkt(value: Any = None, **_: Any) -> None:
        v = np.asarray(value, dtype=float).reshape(-1)
        if v.size > PKT_ON_SOURCE:
            with lock:
                pkts.append((float(v[PKT_T]), float(v[PKT_ON_SOURCE])))
                lags.append(time.time() - clock.real_time(float(v[PKT_T])))

    def on_off(value: Any = None, timestamp: float | None = None, **_: Any) -> None:
        with lock:
            offs.append((float(value), float(timestamp or 0.0)))

    s1 = drive.pos_pkt.subscribe(on_pkt, run=False)
    s2 = drive.off_dec.readback.subscribe(on_off, run=False)
    drive.track(SOURCE, off_ha=0.0, off_dec=0.0).wait(60)
    total, ioc, client = [], [], []
    for i in range(args.moves):
        target = q if i % 2 == 0 else 0.0
        time.sleep(0.05 + 0.037 * (i % 5))  # spread the commands over the control cycle's phase
        t0 = time.time()
        drive.off_dec.set(target).wait(30)
        t1 = time.time()
        total.append(t1 - t0)
        time.sleep(0.15)  # let the monitors of this move arrive
        with lock:
            stamp = next((ts for v, ts in offs if abs(v - target) < 1e-7 and ts > clock.sim_time(t0) - 1.0), None)
            done = next((t for t, on in pkts if stamp is not None and t >= stamp and on > 0.5), None)
        if done is not None:
            ioc.append(clock.real_time(done) - t0)
            client.append(t1 - clock.real_time(done))
    stub = []
    for i in range(args.moves // 2):
        target = q if i % 2 == 0 else 0.0
        t0 = time.perf_counter()
        RE(go_on_source(drive, SOURCE, 0.0, target))
        stub.append(time.perf_counter() - t0)
    drive.pos_pkt.unsubscribe(s1)
    drive.off_dec.readback.unsubscribe(s2)
    lat = med(total)
    over_kin = lat - kin_full
    over = lat - kin_tol - settle_real
    goal = cycle + EXTRA_GOAL_S
    print(f"\n2. move to settled: {args.moves} Dec offset steps of {q:g} deg at speed {clock.speed:g}")
    print(f"   control cycle {1e3 * cycle:.0f} ms real; kinematic move {1e3 * kin_full:.1f} ms real "
          f"(within the {mnt.on_source_tolerance_deg:g} deg tolerance after {1e3 * kin_tol:.1f} ms); "
          f"settle time {mnt.settle_time_s:g} s obs = {1e3 * settle_real:.1f} ms real")
    print(f"   drive.off_dec.set -> settled: median {ms(lat)}, p90 {ms(pct(total, 90))}, min {ms(min(total))}, "
          f"max {ms(max(total))}")
    print(f"     IOC (command -> cycle time of the settled packet) median {ms(med(ioc))}; "
          f"then to the Status done {ms(med(client))} ({len(ioc)} matched), of which a packet's age on arrival "
          f"{ms(med(lags))} (median of {len(lags)}, p90 {ms(pct(lags, 90))})")
    print(f"   latency less kinematics {ms(over_kin)}; less time-to-tolerance and settle time {ms(over)} "
          f"(goal <= {ms(goal)})")
    print(f"   go_on_source (the source already tracked: offsets only; RunEngine call): median {ms(med(stub))}, "
          f"p90 {ms(pct(stub, 90))}")
    return [Figure("offset step -> settled (drive.off_dec.set)", ms(lat)),
            Figure("  IOC part / packet delivery + device part", f"{ms(med(ioc))} / {ms(med(client))}"),
            Figure("  age of a drive packet on arrival", ms(med(lags))),
            Figure("  less kinematic move time", ms(over_kin), f"<= {ms(goal)}", over_kin <= goal),
            Figure("  less time-to-tolerance and settle time", ms(over), f"<= {ms(goal)}", over <= goal),
            Figure("go_on_source offset step -> settled", ms(med(stub)))]


# ------------------------------------------------------------------ 3. drift scans
def drift_dead_time(RE: Any, timer: StepTimer, site: Any, clock: Any, drive: Any, radiometer: Any, instr: Any,
                    args: argparse.Namespace) -> tuple[list[Figure], list[tuple[str, dict]]]:
    from plans import drift_scan
    from plans.runs import SIDEREAL

    rx = site.receivers[0]
    fwhm = site.beam_fwhm_deg(rx.freq_mhz)
    drive.track(SOURCE, off_ha=0.0, off_dec=0.0).wait(60)
    rows = []
    docs: list[tuple[str, dict]] = []
    for _ in range(args.drifts):
        timer.docs = []
        timer.keep_docs = True
        t0 = time.perf_counter()
        res = RE(drift_scan(drive, radiometer, SOURCE, lead_deg=2.0 * fwhm, instrumentation=instr,
                            receiver=rx.name)).plan_result
        rows.append((res, time.perf_counter() - t0))
        timer.keep_docs = False
        docs = timer.docs
    lead = 2.0 * fwhm
    print(f"\n3. drift scans of {SOURCE} (lead {lead:.3f} deg = a {2 * lead / SIDEREAL:.0f} s obs window requested):")
    cover = []
    for i, (res, real) in enumerate(rows):
        window = 2.0 * res["lead_deg"] / SIDEREAL  # symmetric about the transit, from the lead left once parked
        cover.append(res["duration_s"] / window)
        print(f"   {'cold' if i == 0 else 'warm'}: lead left once parked {res['lead_deg']:.3f} deg -> window "
              f"{window:.0f} s obs, sampled {res['duration_s']:.1f} s obs ({cover[-1]:.1%}, ends "
              f"{(res['duration_s'] - window) / clock.speed:+.1f} s real off); {res['n_samples']} "
              f"samples at {res['rate_hz']:g} Hz ({res['n_samples'] / res['duration_s']:.2f} samples/s obs), lost "
              f"{res['lost']}, dead time {res['dead_time_s']:.3f} s = {res['dead_time_frac']:.3%}; {real:.1f} s real")
    frac = med([r["dead_time_frac"] for r, _ in rows])
    worst = max(r["dead_time_frac"] for r, _ in rows)
    lost = sum(r["lost"] + r["index_gaps"] for r, _ in rows)
    cover_txt = f"{cover[0]:.1%}" + (f" / {min(cover[1:]):.1%}..{max(cover[1:]):.1%}" if len(cover) > 1 else "")
    return [Figure("drift scan dead time (median / worst)", f"{frac:.3%} / {worst:.3%}", f"< {DEAD_GOAL:.0%}",
                   worst < DEAD_GOAL),
            Figure("drift scan window sampled (cold / warm runs)", cover_txt, "99 % .. 101 %",
                   all(0.99 <= c <= 1.01 for c in cover)),
            Figure("drift scan samples (median) / lost", f"{med([r['n_samples'] for r, _ in rows]):.0f} / {lost}")
            ], docs


# ------------------------------------------------------------------ 4. archive
def first_samples(docs: list[tuple[str, dict]], limit: int) -> list[tuple[str, dict]]:
    """A copy of a run's documents whose event pages hold only the first ``limit`` samples (a shorter scan)."""
    out, left = [], limit
    for name, doc in copy.deepcopy(docs):
        if name == "event_page":
            if left <= 0:
                continue
            n = len(doc["time"])
            if n > left:
                doc = {**doc, **{k: doc[k][:left] for k in ("time", "uid", "seq_num")},
                       **{k: {key: v[:left] for key, v in doc[k].items()} for k in ("data", "timestamps", "filled")
                          if k in doc}}
            left -= min(n, left)
        out.append((name, doc))
    return out


def _timed_read(arch: Any, uid: str, stream: str) -> tuple[int, float]:
    """Find a run by uid and read one stream back with archiver.queries: (events read, s)."""
    from archiver.queries import run_data

    t0 = time.perf_counter()
    ds = run_data(arch.client[uid], stream)
    return int(ds.sizes.get("time", 0)), time.perf_counter() - t0


def archive_backend(backend: str, uri: str | None, docs: list[tuple[str, dict]], args: argparse.Namespace) -> dict:
    """Synthetic runs (benchmarks/archive.py's ``write_run``) and the recorded drift scan, written and read back."""
    import archive as bench_archive

    from archiver.archive import open_archive
    from archiver.queries import find_runs

    out: dict[str, Any] = {}
    rng = np.random.default_rng(3)
    with tempfile.TemporaryDirectory(prefix=f"obsctl-plans-bench-{backend}-") as tmp:
        t0 = time.perf_counter()
        arch = open_archive(data_dir=tmp, uri=uri)
        out["open_s"] = time.perf_counter() - t0
        try:
            for kind in ("scalars", "waveform"):
                uid, spent, _, nbytes = bench_archive.write_run(arch.writer(batch_size=100), kind, args.archive_events,
                                                                rng, source=f"bench-{kind}")
                n, took = _timed_read(arch, uid, "primary")
                out[kind] = (args.archive_events / spent, nbytes / spent / 1e6, n / took, nbytes / took / 1e6,
                             n == args.archive_events)
            if docs:
                docs = first_samples(docs, args.replay_samples)
                n = sum(len(d["time"]) for name, d in docs if name == "event_page")  # the samples stream
                w = arch.writer()
                t0 = time.perf_counter()
                for name, doc in docs:
                    w(name, doc)
                write_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                (run,) = find_runs(arch.client, source=SOURCE, plan="drift_scan", limit=1)
                query_s = time.perf_counter() - t0
                n_read, read_s = _timed_read(arch, run.start["uid"], "samples")
                out["drift"] = (n, n / write_s, n_read / (query_s + read_s), query_s, n_read == n)
        finally:
            arch.close()
    return out


def archive_rates(docs: list[tuple[str, dict]], args: argparse.Namespace) -> list[Figure]:
    import archive as bench_archive

    figs = []
    for backend in args.backends:
        scratch, uri = None, None
        if backend == "postgresql":
            scratch = bench_archive.ScratchPg()
            uri = scratch.create()
            if uri is None:
                print("   postgresql: no server answers on 127.0.0.1:5432 - skipped")
                figs.append(Figure("postgresql archive", "no server", "", False))
                continue
        try:
            t0 = time.perf_counter()
            r = archive_backend(backend, uri, docs, args)
            took = time.perf_counter() - t0
        finally:
            if scratch is not None:
                scratch.drop()
        print(f"\n4. archive on {backend} ({took:.0f} s; catalog opened/initialised in {r['open_s']:.1f} s), "
              f"runs of {args.archive_events} events, batch 100:")
        for kind, label in (("scalars", "12 scalars"), ("waveform", "1024-channel spectrum + 4 scalars")):
            wr, wmb, rr, rmb, ok = r[kind]
            print(f"   {label:<36} write {wr:7.0f} events/s {wmb:6.2f} MB/s   read back {rr:7.0f} events/s "
                  f"{rmb:6.2f} MB/s{'' if ok else '  (INCOMPLETE)'}")
            figs.append(Figure(f"{backend}: write / read, {label}", f"{wr:.0f} / {rr:.0f} events/s", "",
                               None if ok else False))
        if "drift" in r:
            n, wr, rr, q_s, ok = r["drift"]
            print(f"   drift-scan run (its first {n} samples, event pages): write {wr:.0f} samples/s; find_runs "
                  f"{1e3 * q_s:.0f} ms, found + read back {rr:.0f} samples/s{'' if ok else '  (INCOMPLETE)'}")
            figs.append(Figure(f"{backend}: drift-scan run write / read", f"{wr:.0f} / {rr:.0f} samples/s",
                               "every sample read back", ok))
    return figs


# ------------------------------------------------------------------ main
def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time (s) the processes ``pids`` have used so far (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def summary(figs: list[Figure], title: str) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title)
    for col in ("figure", "measured", "goal", "met"):
        table.add_column(col)
    for f in figs:
        met = "" if f.ok is None else ("[green]pass[/green]" if f.ok else "[red]FAIL[/red]")
        table.add_row(escape(f.name), escape(f.value), escape(f.goal), met)
    Console(width=130).print(table)


def with_load(what: str, func: Callable[[], Any], loads: list[tuple[str, tuple[float, float, float]]]) -> Any:
    loads.append((what, os.getloadavg()))
    return func()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (about half the run time)")
    ap.add_argument("--speed", type=float, default=60.0, help="observatory clock speed factor")
    ap.add_argument("--integration", type=float, default=0.6, help="integration per step (s of obs. time)")
    ap.add_argument("--step-deg", type=float, default=0.02, help="offset step of the latency test (deg)")
    ap.add_argument("--no-fast-blocks", dest="fast_blocks", action="store_false",
                    help="skip the what-if run with RAD:BLK_PERIOD_SP at its 0.02 s minimum")
    ap.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    ap.add_argument("--control-rate", type=float, default=None, metavar="HZ",
                    help="what-if: the drive's control (and position packet) rate instead of the site's")
    args = ap.parse_args()
    q = args.quick
    args.reps, args.steps = (1, 15) if q else (2, 25)
    args.cycles, args.plan_reps = (2, 1) if q else (3, 2)
    args.moves = 10 if q else 20
    args.drifts = 2 if q else 3
    args.archive_events = 300 if q else 600
    args.replay_samples = 3000 if q else 6000

    base = free_base_port()
    hermetic_env(base)
    import ophyd  # noqa: F401  (selects libca before epics.ca is used)
    from bluesky import RunEngine

    from devices import registry
    from obsctl import launcher
    from obsctl.clock import ObservatoryClock
    from obsctl.site import load_site, write_site_variant

    loads: list[tuple[str, tuple[float, float, float]]] = [("start", os.getloadavg())]
    t_start = time.perf_counter()
    state = Path(tempfile.mkdtemp(prefix="obsctl-plans-bench-"))
    site = load_site() if args.control_rate is None else write_site_variant(state, control_rate_hz=args.control_rate)
    t0 = time.perf_counter()
    obs = launcher.start(site, state, only=DEVS, base_port=base, repeater_port=base - 1, speed=args.speed,
                         epoch=EPOCH, timeout=120)
    print(f"observatory {' '.join(DEVS)} up in {time.perf_counter() - t0:.1f} s (speed {args.speed:g}, {EPOCH}); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    figs: list[Figure] = []
    docs: list[tuple[str, dict]] = []
    try:
        clock = ObservatoryClock.from_env({"OBSCTL_CLOCK": obs.clock})
        drive = registry.drive(site, timeout=60)
        radiometer = registry.radiometer(site, clock=clock, timeout=60)
        instr = registry.instrumentation(site, timeout=60)
        RE = RunEngine({}, call_returns_result=True)
        timer = StepTimer()
        RE.subscribe(timer)
        f, _ = with_load("step cost", lambda: step_cost(RE, timer, site, clock, drive, radiometer, instr, args),
                         loads)
        figs += f
        figs += with_load("settle", lambda: settle_latency(RE, site, clock, drive, args), loads)
        f, docs = with_load("drift", lambda: drift_dead_time(RE, timer, site, clock, drive, radiometer, instr, args),
                            loads)
        figs += f
        st = launcher.ObservatoryState.load(state)
        wall = time.time() - st.started_real
        ioc_cpu = cpu_seconds([p.pid for p in st.processes])
        me = os.times()
        print(f"\nCPU while the observatory ran ({wall:.0f} s): its IOC processes {ioc_cpu / wall:.2f} cores, this "
              f"client {(me.user + me.system) / (time.perf_counter() - t_start):.2f} cores; the rest of the load "
              "average is other work on the machine")
    finally:
        launcher.stop(state)
    shutil.rmtree(state, ignore_errors=True)  # kept (IOC logs) when a section failed
    figs += with_load("archive", lambda: archive_rates(docs, args), loads)
    loads.append(("end", os.getloadavg()))
    load_txt = ", ".join(f"{w} {la[0]:.1f}" for w, la in loads)
    print(f"\nload average (1 min) at each section: {load_txt} ({os.cpu_count()} cores)")
    summary(figs, f"obsctl plan benchmarks ({'quick' if q else 'full'}, {time.perf_counter() - t_start:.0f} s, "
                  f"speed {args.speed:g}, drive control rate {site.mount.control_rate_hz:g} Hz)")


if __name__ == "__main__":
    main()
