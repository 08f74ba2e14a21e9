"""The demo night: a short observing sequence on the simulated sky, run by ``obsctl run``.

The sequence is what an observer does at the start of a night: a pointing check on a calibrator, a drift
scan of it for its flux, a spectrum of a maser with the LO set for its VLSR, and a pulsar fold.  Each step is
an observing plan on one RunEngine writing to the run archive; quick-look results (fits and PNG plots) are
written back to the archive as linked runs.  :func:`run_demo` returns one row per step for the summary
table that :func:`summary_rows` / :func:`print_summary` show.

The reference epoch :data:`DEMO_EPOCH` puts every demo source above 30 deg elevation at the reference site
(checked by :func:`check_visibility` before anything moves).  Units: deg, K, Jy, km/s, s.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace
from typing import Any

from bluesky import RunEngine
from bluesky.utils import Msg

from obsctl import astro
from obsctl.catalog import load_catalog
from obsctl.clock import ObservatoryClock
from obsctl.site import Site
from plans import ObsMeta

#: simulated start of the demo night (UTC) and its speed factor
DEMO_EPOCH = "2026-11-21T23:00:00"
DEMO_SPEED = 60.0
MIN_ELEVATION_DEG = 30.0
DEMO_AVERAGING = 10  #: radiometer raw samples per output sample (50 Hz raw -> 5 Hz)
CALIBRATOR = "PictorA"
MASER = "OrionKL"
PULSAR = "J0835-4510"
PULSAR_RECEIVER = "18cm"  #: Vela's steep spectrum: brightest at the longest wavelength


@dataclass
class Step:
    """One observation of the demo: a label, its source, the plan factory and the results to show."""

    label: str
    source: str
    make_plan: Callable[[dict[str, Any], ObsMeta], Generator[Msg, Any, Any]]
    show: tuple[tuple[str, str, str], ...]  # (achieved key, label, format)
    result: dict[str, Any] = field(default_factory=dict)
    uid: str = ""
    status: str = "not run"
    seconds: float = 0.0
    error: str = ""


def demo_steps(site: Site) -> list[Step]:
    """The demo sequence (devices are passed to the plan factories at run time)."""
    import plans

    return [
        Step("pointing check", CALIBRATOR,
             lambda d, m: plans.pointing_check(d["drive"], d["radiometer"], CALIBRATOR, method="cross",
                                               instrumentation=d.get("instrumentation"), meta=m, site=site),
             (("ha_offset_deg", "HA offset", "{:+.4f} deg"), ("dec_offset_deg", "Dec offset", "{:+.4f} deg"))),
        Step("drift scan", CALIBRATOR,
             lambda d, m: plans.drift_scan(d["drive"], d["radiometer"], CALIBRATOR,
                                           instrumentation=d.get("instrumentation"), meta=m, site=site),
             (("flux_jy", "flux", "{:.2f} Jy"), ("peak_k", "peak", "{:.3f} K"),
              ("fwhm_deg", "beam", "{:.4f} deg"))),
        Step("spectrum", MASER,
             lambda d, m: plans.spectroscopy(d["drive"], d["correlator"], MASER,
                                             instrumentation=d.get("instrumentation"), meta=m, site=site),
             (("line_vlsr_kms", "line VLSR", "{:+.2f} km/s"), ("vlsr_catalog_kms", "catalog", "{:+.2f} km/s"),
              ("line_peak_k", "peak", "{:.2f} K"))),
        Step("pulsar", PULSAR,
             lambda d, m: plans.pulsar_timing(d["drive"], d["pulsar_timer"], PULSAR, receiver=PULSAR_RECEIVER,
                                              instrumentation=d.get("instrumentation"), meta=m, site=site),
             (("period_s", "period", "{:.9f} s"), ("snr", "S/N", "{:.1f}"), ("toa_mjd", "TOA", "MJD {:.8f}"))),
    ]


def check_visibility(site: Site, clock: ObservatoryClock, sources: list[str],
                     minimum_deg: float = MIN_ELEVATION_DEG) -> dict[str, float]:
    """Elevation (deg) of each source now; ValueError naming those below ``minimum_deg``."""
    loc = astro.site_location(site)
    cat = load_catalog(site.catalog_path)
    now = clock.now()
    els = {}
    for name in dict.fromkeys(sources):
        ha, dec = astro.apparent_hadec(cat.get(name).coord, now, loc)
        _, el = astro.hadec_to_azel(float(ha), float(dec), loc.latitude_deg)
        els[name] = float(el)
    low = [f"{n} at {e:.1f} deg" for n, e in els.items() if e < minimum_deg]
    if low:
        when = f"{clock.now_datetime():%Y-%m-%d %H:%M} UTC"
        raise ValueError(f"demo sources below {minimum_deg:g} deg elevation at {when}: {', '.join(low)}; "
                         f"start the observatory at the demo epoch ({DEMO_EPOCH})")
    return els


def run_demo(RE: RunEngine, devices: dict[str, Any], site: Site, clock: ObservatoryClock, *,  # noqa: N803
             meta: ObsMeta | None = None, steps: list[Step] | None = None,
             progress: Callable[[Step], None] | None = None) -> list[Step]:
    """Run the demo steps in order on ``RE``; a failing step is recorded and the next one runs.

    ``progress(step)`` is called before (status "running") and after each step.
    """
    meta = meta or ObsMeta(project="demo-night", pi="obsctl", observer="obsctl run", obs_class="commissioning")
    steps = steps if steps is not None else demo_steps(site)
    check_visibility(site, clock, [s.source for s in steps])
    for number, step in enumerate(steps, start=1):
        step.status = "running"
        if progress:
            progress(step)
        uids: list[str] = []

        def first_start(name: str, doc: dict, uids: list[str] = uids) -> None:
            if name == "start":
                uids.append(doc["uid"])

        token = RE.subscribe(first_start)
        t0 = time.monotonic()
        try:
            outcome = RE(step.make_plan(devices, replace(meta, obs_number=number)))
            step.result = getattr(outcome, "plan_result", None) or {}  # RunEngine(call_returns_result=True)
            step.status = "done"
        except Exception as err:  # noqa: BLE001  (a failed step is reported; the night goes on)
            step.status, step.error = "failed", f"{type(err).__name__}: {err}"
        finally:
            RE.unsubscribe(token)
        step.seconds = time.monotonic() - t0
        step.uid = uids[0] if uids else ""
        if progress:
            progress(step)
    return steps


def summary_rows(steps: list[Step], quicklook: dict[str, str] | None = None) -> list[list[str]]:
    """Table rows: step, source, status, run uid (8), results, quick-look PNG."""
    rows = []
    for s in steps:
        shown = []
        for key, label, fmt in s.show:
            v = s.result.get(key)
            if isinstance(v, (int, float)):
                shown.append(f"{label} {fmt.format(v)}")
        text = ", ".join(shown) if s.status == "done" else s.error or s.status
        rows.append([s.label, s.source, s.status, s.uid[:8], f"{s.seconds:.0f} s", text,
                     (quicklook or {}).get(s.uid, "")])
    return rows


def demo_night(state_dir: Any, *, archive_dir: str | None = None, console: Any = None) -> list[Step]:
    """Run the demo on the observatory started from ``state_dir``; print progress and the summary table.

    Every run goes to the archive (``archive_dir`` or the site's); quick-look runs and PNGs follow each
    step.  Returns the steps with their results.
    """
    from bluesky import plan_stubs as bps
    from rich.console import Console
    from rich.table import Table

    from archiver import quicklook
    from obsctl.cli_shell import session_namespace

    console = console or Console()
    ns = session_namespace(state_dir, archive_dir=archive_dir, live=False)
    RE, archive, site = ns["RE"], ns["archive"], ns["site"]  # noqa: N806
    clock = ObservatoryClock.from_env()
    worker = ns["quicklook_worker"]
    try:
        def progress(step: Step) -> None:
            if step.status == "running":
                console.print(f"[bold]{step.label}[/] on {step.source} ...")
            else:
                colour = "green" if step.status == "done" else "red"
                console.print(f"  [{colour}]{step.status}[/] in {step.seconds:.0f} s  run {step.uid[:8]}"
                              + (f"  {step.error}" if step.error else ""))

        console.print(f"Demo night at {clock.now_datetime():%Y-%m-%d %H:%M} UTC (x{clock.speed:g}), archive "
                      f"{archive.location.data_dir}")
        RE(bps.mv(ns["radiometer"].avg, DEMO_AVERAGING))  # 5 samples/s: the archive keeps up at 60x
        steps = run_demo(RE, ns["devices"], site, clock, progress=progress)
        pngs: dict[str, str] = {}
        for step in steps:
            if step.uid:
                ql = quicklook.wait_quicklook(archive.client, step.uid, timeout=60.0)
                png = str(ql.metadata["start"].get("png", "")) if ql is not None else ""
                if png:  # shown relative to the archive directory
                    pngs[step.uid] = os.path.relpath(png, archive.location.data_dir)
        table = Table(title="Demo night")
        for col in ("step", "source", "status", "run", "time", "results", "quick-look plot"):
            table.add_column(col, overflow="fold")
        for row in summary_rows(steps, pngs):
            table.add_row(*row)
        console.print(table)
        console.print(f"Archive (plots under it): {archive.location.data_dir}\n"
                      "Explore it with: obsctl shell   then  find_runs(catalog, project='demo-night')")
        return steps
    finally:
        worker.close()
        archive.close()
