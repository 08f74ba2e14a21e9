"""Run-archive rates on SQLite and PostgreSQL: event writes, read-back, metadata queries, open times.

Documents are composed with event_model (the same schema the RunEngine emits) and fed to the archive's
TiledWriter, so the figures are the archive's own cost.  Two event kinds:

* ``scalars``  - 12 float scalars per event (drive position, DVM channels, ...: a radiometer sample);
* ``waveform`` - a 1024-channel float64 spectrum plus 4 scalars per event (8.2 kB of data).

``--runengine`` also times a RunEngine ``count`` over ophyd.sim signals with and without the archive
subscribed (the end-to-end cost per event a plan pays for archiving).  PostgreSQL uses a fresh database on
127.0.0.1:5432 (dropped afterwards) unless ``--pg-url`` names one; it is skipped if no server answers.

Usage: ``.venv/bin/python benchmarks/archive.py [--events 3000] [--runs 100] [--backends sqlite postgresql]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from archiver.archive import DEFAULT_BATCH_SIZE, open_archive  # noqa: E402
from archiver.queries import find_runs  # noqa: E402

N_WAVE = 1024
N_SCALARS = 12


# ------------------------------------------------------------------ documents
def _data_keys(kind: str) -> dict:
    if kind == "scalars":
        return {f"ch{i}": {"source": "bench", "dtype": "number", "shape": [], "units": "K"} for i in range(N_SCALARS)}
    keys = {f"ch{i}": {"source": "bench", "dtype": "number", "shape": [], "units": "K"} for i in range(4)}
    keys["spectrum"] = {"source": "bench", "dtype": "array", "shape": [N_WAVE], "dtype_numpy": "<f8", "units": "K"}
    return keys


def write_run(writer, kind: str, n: int, rng: np.random.Generator, **md) -> tuple[str, float, float, int]:
    """Feed one run of ``n`` events to ``writer``.

    Returns (uid, seconds spent inside the writer in all, of which on Event documents, data bytes); the rest
    is the per-run cost (start, descriptor, stop: creating and closing the run's nodes).
    """
    from event_model import compose_run

    bundle = compose_run(metadata={"plan_name": f"bench_{kind}", **md})
    spent = 0.0
    t = time.perf_counter()
    writer("start", bundle.start_doc)
    keys = _data_keys(kind)
    desc = bundle.compose_descriptor(name="primary", data_keys=keys, validate=False)
    writer("descriptor", desc.descriptor_doc)
    spent += time.perf_counter() - t
    nbytes = 0
    on_events = 0.0
    for i in range(n):
        now = time.time()
        data = {k: float(rng.normal(100.0, 1.0)) for k in keys if k != "spectrum"}
        if "spectrum" in keys:
            data["spectrum"] = rng.normal(20.0, 1.0, N_WAVE)
        nbytes += 8 * (len(data) - 1 + N_WAVE) if "spectrum" in data else 8 * len(data)
        ev = desc.compose_event(data=data, timestamps={k: now for k in data}, seq_num=i + 1, validate=False)
        t = time.perf_counter()
        writer("event", ev)
        on_events += time.perf_counter() - t
    t = time.perf_counter()
    writer("stop", bundle.compose_stop(exit_status="success", validate=False))
    spent += time.perf_counter() - t
    return bundle.start_doc["uid"], spent + on_events, on_events, nbytes


# ------------------------------------------------------------------ PostgreSQL scratch database
class ScratchPg:
    def __init__(self) -> None:
        self.user = self.admin = self.name = None

    async def _exec(self, sql: str) -> None:
        import asyncpg

        c = await asyncpg.connect(host="127.0.0.1", port=5432, user=self.user, database=self.admin, timeout=5)
        try:
            await c.execute(sql)
        finally:
            await c.close()

    def create(self) -> str | None:
        import asyncpg

        for user in ("postgres", "root"):
            for admin in ("postgres", "test"):
                self.user, self.admin = user, admin
                try:
                    self.name = f"obsctl_bench_{uuid.uuid4().hex[:8]}"
                    asyncio.run(self._exec(f'CREATE DATABASE "{self.name}"'))
                    return f"postgresql://{user}@127.0.0.1:5432/{self.name}"
                except (OSError, TimeoutError, asyncpg.PostgresError):
                    self.name = None
        return None

    def drop(self) -> None:
        if self.name:
            asyncio.run(self._exec(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))


# ------------------------------------------------------------------ one backend
def bench_backend(backend: str, uri: str | None, args: argparse.Namespace) -> dict:
    out: dict = {"backend": backend}
    with tempfile.TemporaryDirectory(prefix=f"obsctl-archive-bench-{backend}-") as tmp:
        t0 = time.perf_counter()
        arch = open_archive(data_dir=tmp, uri=uri)
        out["open_init_s"] = time.perf_counter() - t0
        arch.close()
        t0 = time.perf_counter()
        arch = open_archive(data_dir=tmp, uri=uri)
        out["reopen_s"] = time.perf_counter() - t0
        rng = np.random.default_rng(1)
        try:
            # --- writes
            written = []
            configs = [(b, False) for b in args.batches] + [(DEFAULT_BATCH_SIZE, True)]
            for kind in ("scalars", "waveform"):
                for batch, validate in configs:
                    n = args.events if batch > 1 else min(args.events, 100)
                    w = arch.writer(batch_size=batch, validate_events=validate)
                    uid, spent, ev_s, nbytes = write_run(w, kind, n, rng, source=f"{kind}-{batch}", freq_mhz=1666.0)
                    label = f"{kind} batch {batch}" + (" +event schema check" if validate else "")
                    out.setdefault("write", {})[label] = (n / spent, nbytes / spent / 1e6, 1e3 * ev_s / n,
                                                          spent - ev_s)
                    written.append((kind, batch, validate, uid, n, nbytes))
            # --- read-back
            for kind, batch, validate, uid, n, nbytes in written:
                if batch != max(args.batches) or validate:
                    continue
                t0 = time.perf_counter()
                ds = arch.client[uid]["primary"].read()
                took = time.perf_counter() - t0
                assert ds.sizes["time"] == n, (ds.sizes, n)
                out[f"read_{kind}"] = (n / took, nbytes / took / 1e6, took)
            # --- metadata queries over a catalog of many small runs
            w = arch.writer(batch_size=50)
            sources = [f"SRC{i:03d}" for i in range(args.runs)]
            t0 = time.perf_counter()
            for i, src in enumerate(sources):
                write_run(w, "scalars", 10, rng, source=src, freq_mhz=1000.0 + 10 * i, project=f"P{i % 7}")
            out["small_run_s"] = (time.perf_counter() - t0) / args.runs
            lat = {}
            f0, f1 = 1000.0 + 10 * (args.runs // 4), 1000.0 + 10 * (args.runs // 2)
            for label, q in (("by source", {"source": sources[len(sources) // 2]}),
                             ("freq range + project", {"freq_min_mhz": f0, "freq_max_mhz": f1, "project": "P3"}),
                             ("last 10", {"limit": 10})):
                times = []
                for _ in range(5):
                    t0 = time.perf_counter()
                    res = find_runs(arch.client, **q)
                    times.append(time.perf_counter() - t0)
                lat[label] = (statistics.median(times), len(res))
            out["queries"] = lat
            out["n_runs"] = len(arch.client)
        finally:
            arch.close()
    return out


def bench_runengine(args: argparse.Namespace) -> dict:
    """Per-event cost of a RunEngine count over ophyd.sim signals, without and with the archive (SQLite)."""
    from bluesky import RunEngine
    from bluesky.plans import count
    from ophyd.sim import SynSignal

    rng = np.random.default_rng(2)
    sigs = [SynSignal(func=lambda: float(rng.normal()), name=f"s{i}") for i in range(4)]
    wave = SynSignal(func=lambda: rng.normal(size=N_WAVE), name="spectrum")
    out = {}
    n = args.re_events
    with tempfile.TemporaryDirectory(prefix="obsctl-archive-bench-re-") as tmp:
        arch = open_archive(data_dir=tmp)
        try:
            for label, subscribe in (("bare RunEngine", False), ("RunEngine + archive", True)):
                RE = RunEngine({})
                if subscribe:
                    arch.subscribe(RE, batch_size=50)
                RE(count([*sigs, wave], 5))              # warm-up
                t0 = time.perf_counter()
                RE(count([*sigs, wave], n))
                out[label] = 1e3 * (time.perf_counter() - t0) / n
        finally:
            arch.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=3000, help="events per write run (batch 1: at most 100)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 50, 100], help="TiledWriter batch sizes")
    ap.add_argument("--runs", type=int, default=100, help="small runs in the catalog for the query figures")
    ap.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    ap.add_argument("--pg-url", default="", help="existing PostgreSQL database to use (default: a scratch one)")
    ap.add_argument("--runengine", action="store_true", help="also time a RunEngine count with/without archive")
    ap.add_argument("--re-events", type=int, default=500)
    args = ap.parse_args()

    results = []
    for backend in args.backends:
        scratch = None
        uri = None
        if backend == "postgresql":
            uri = args.pg_url or None
            if uri is None:
                scratch = ScratchPg()
                uri = scratch.create()
                if uri is None:
                    print("postgresql: no server answers on 127.0.0.1:5432 - skipped")
                    continue
        try:
            results.append(bench_backend(backend, uri, args))
        finally:
            if scratch is not None:
                scratch.drop()

    for r in results:
        print(f"\n== {r['backend']}: first open (catalog init) {r['open_init_s']:.2f} s, reopen {r['reopen_s']:.2f} s")
        print(f"{'write (whole run)':<44}{'events/s':>10}{'MB/s':>9}{'ms/event':>10}{'run s':>8}")
        for label, (rate, mbs, ms, fixed) in r["write"].items():
            print(f"  {label:<42}{rate:>10.0f}{mbs:>9.2f}{ms:>10.2f}{fixed:>8.2f}")
        print("  (events/s, MB/s: whole run; ms/event: Event documents only; run s: start+descriptor+stop)")
        print(f"{'read-back (whole run)':<44}{'events/s':>10}{'MB/s':>9}{'s':>10}")
        for kind in ("scalars", "waveform"):
            if f"read_{kind}" in r:
                rate, mbs, took = r[f"read_{kind}"]
                print(f"  {kind:<42}{rate:>10.0f}{mbs:>9.2f}{took:>10.2f}")
        print(f"small run (10 events) written in {1e3 * r['small_run_s']:.0f} ms; "
              f"queries over {r['n_runs']} runs (median of 5):")
        for label, (sec, n) in r["queries"].items():
            print(f"  {label:<26}{1e3 * sec:>8.1f} ms  ({n} runs)")
    if args.runengine:
        re = bench_runengine(args)
        print(f"\nRunEngine count, 4 scalars + {N_WAVE}-channel waveform, {args.re_events} events (SQLite archive):")
        for label, ms in re.items():
            print(f"  {label:<26}{ms:>8.2f} ms/event")
        print(f"  archive cost per event    {re['RunEngine + archive'] - re['bare RunEngine']:>8.2f} ms")


if __name__ == "__main__":
    main()
