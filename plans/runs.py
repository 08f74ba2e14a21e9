"""Shared machinery of the observing plans: the plan context, the run wrapper, fly-scan sampling.

* :func:`plan_context` resolves the receiver, the catalog source and the observing log of a plan;
* :func:`run_plan` runs a plan body inside one run (start metadata, staging, the ``achieved`` event, safe
  cleanup) and returns what the body achieved;
* :func:`fly_while`, :func:`window_stats` collect radiometer fly samples and account for losses and dead time.

Units: angles in deg, temperatures in K, times in s of observatory time, flux densities in Jy.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from bluesky import plan_stubs as bps
from bluesky import preprocessors as bpp
from bluesky.utils import Msg

from archiver import fitting
from devices.drive import PKT_T, Drive
from obsctl import astro
from obsctl.catalog import Source, load_catalog
from obsctl.site import ReceiverConfig, Site, load_site
from plans.metadata import ACHIEVED_STREAM, ObsMeta, start_metadata
from plans.stubs import collect_samples, diodes_off, record, select_receiver, with_safe_cleanup

SIDEREAL = fitting.SIDEREAL_DEG_PER_S  # deg of HA per s
Plan = Generator[Msg, Any, dict[str, Any]]


@dataclass
class PlanContext:
    """What a plan resolved before it runs: site, receiver, beam FWHM (deg), source, location, log."""

    site: Site
    rx: ReceiverConfig
    fwhm: float
    src: Source | None
    loc: astro.Location
    meta: ObsMeta


def plan_context(site: Site | None, receiver: str | None, instrumentation: Any, source: str | None,
                 meta: ObsMeta | None) -> PlanContext:
    """Resolve the receiver (default: the selected one), the catalog ``source`` and the observing log."""
    s = site or load_site()
    name = receiver or (instrumentation.rx_sel.get() if instrumentation is not None else s.receivers[0].name)
    rx = next((r for r in s.receivers if r.name == name), None)
    if rx is None:
        raise ValueError(f"receiver {name!r} is not one of {', '.join(r.name for r in s.receivers)}")
    try:
        src = load_catalog(s.catalog_path).get(source) if source else None
    except KeyError as err:  # an unknown source is bad input like any other
        raise ValueError(str(err.args[0]) if err.args else f"unknown source {source!r}") from None
    m = (meta or ObsMeta()).filled(source=source or "", ra_deg=src.ra_deg if src else None,
                                    dec_deg=src.dec_deg if src else None, receiver=rx.name, freq_mhz=rx.freq_mhz)
    return PlanContext(s, rx, s.beam_fwhm_deg(rx.freq_mhz), src, astro.site_location(s), m)


def setup_receiver(ctx: PlanContext, instrumentation: Any) -> Generator[Msg, Any, None]:
    """Plan: select the context's receiver and switch the diodes off (nothing without instrumentation)."""
    if instrumentation is not None:
        yield from select_receiver(instrumentation, ctx.rx.name)
        yield from diodes_off(instrumentation)


def fly_clock(radiometer: Any) -> Any:
    """The observatory clock of ``radiometer`` (fly scans time their windows with it)."""
    if getattr(radiometer, "clock", None) is None:
        raise ValueError(f"{radiometer.name} has no observatory clock: fly scans need one (registry clock=...)")
    return radiometer.clock


def source_hadec(ctx: PlanContext, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apparent HA/Dec (deg) of the plan's source at times ``t`` (linear between the ends: minutes apart)."""
    t = np.asarray(t, float)
    ends = np.array([t.min(), max(t.max(), t.min() + 1.0)])
    ha, dec = astro.apparent_hadec(ctx.src.coord, ends, ctx.loc)
    ha = np.unwrap(np.radians(np.asarray(ha, float)))
    return (np.degrees(np.interp(t, ends, ha)) + 180.0) % 360.0 - 180.0, np.interp(t, ends, np.asarray(dec))


def fly_while(radiometer: Any, clock: Any, into: dict[str, list], *, until_t: float | None = None,
               status_of: Any = None, poll_s: float = 0.5) -> Generator[Msg, Any, None]:
    """Collect samples every ``poll_s`` (real s) until observatory time ``until_t`` or the command is done."""
    while True:
        if status_of is not None and status_of.status is not None and status_of.status.done:
            break
        if until_t is not None:
            left = until_t - clock.now()
            if left <= 0:
                break
            yield from bps.sleep(min(poll_s, max(left / clock.speed, 0.005)))
        else:
            yield from bps.sleep(poll_s)
        yield from collect_samples(radiometer, into)
    if status_of is not None:
        yield from bps.wait(group=status_of.group)


def as_arrays(into: dict[str, list]) -> dict[str, np.ndarray]:
    """Collected sample columns as numpy arrays."""
    return {k: np.asarray(v) for k, v in into.items()}


def window_stats(radiometer: Any, d: dict[str, np.ndarray]) -> dict[str, float]:
    """Sample count, rate, window, losses and dead time (window time without a sample) of a fly scan.

    ``lost``: samples the IOC took that never arrived; ``index_gaps``: missing sample indices seen in the data;
    ``ioc_restarts``: new IOC runs (boot ids) in the data (samples a dead IOC never took are not lost);
    ``recovered``: samples fetched again from the IOC's block history after a reconnection.
    """
    t0, t1 = radiometer.last_fly_window
    n = int(d["t"].size) if "t" in d else 0
    rate = float(radiometer.last_block.rate_hz) if radiometer.last_block is not None else math.nan
    dur = float(t1 - t0) if t0 is not None and t1 is not None else math.nan
    dead = max(dur - n / rate, 0.0) if n and rate > 0 else dur
    idx = d.get("index", np.empty(0))
    boot = d.get("boot", np.zeros(idx.size, dtype=np.int64))
    same = np.diff(boot) == 0 if idx.size > 1 else np.empty(0, dtype=bool)
    step = np.diff(idx) if idx.size > 1 else np.empty(0)
    return {"t_start": t0, "t_end": t1, "duration_s": dur, "n_samples": n, "rate_hz": rate,
            "lost": int(radiometer.lost.get()), "index_gaps": int(np.sum(step[same & (step > 1)] - 1)),
            "ioc_restarts": int(np.sum(~same)), "recovered": int(getattr(radiometer, "last_fly_recovered", 0)),
            "dead_time_s": dead,
            "dead_time_frac": dead / dur if dur and dur > 0 else math.nan}


def run_plan(name: str, args: dict[str, Any], ctx: PlanContext, requested: dict[str, Any], md: dict | None,
          body: Any, drive: Any, instrumentation: Any, cleanup: str, stage: Sequence[Any] = (),
             units: dict[str, str] | None = None) -> Plan:
    """Run ``body()`` (returning the achieved dict) inside a run, staged, with safe cleanup.

    The start document holds the observing log of ``ctx.meta``, ``name``, ``args`` and ``requested``; the
    achieved dict is recorded as one event of the ``achieved`` stream (units from :data:`UNITS` and
    ``units``) and returned.
    """
    start = start_metadata(name, args, ctx.meta, requested, md)
    result: dict[str, Any] = {}

    @bpp.stage_decorator(list(stage))
    @bpp.run_decorator(md=start)
    def inner() -> Plan:
        yield from setup_receiver(ctx, instrumentation)
        achieved = yield from body()
        units_of = {**UNITS, **(units or {})}
        units_ = {k: u for k, u in units_of.items() if k in achieved}
        yield from record(ACHIEVED_STREAM, achieved, units_)
        result.update(achieved)
        return achieved

    yield from with_safe_cleanup(inner(), drive, instrumentation, cleanup)  # run_wrapper returns the run uid
    return result


UNITS = {"t_start": "s", "t_end": "s", "duration_s": "s", "rate_hz": "Hz", "dead_time_s": "s", "lead_deg": "deg",
          "park_ha_deg": "deg", "park_dec_deg": "deg", "dec_offset_deg": "deg", "el_deg": "deg",
          "peak_k": "K", "peak_err_k": "K", "offset_deg": "deg", "offset_err_deg": "deg", "fwhm_deg": "deg",
          "flux_jy": "Jy", "rms_k": "K", "ha_offset_deg": "deg", "dec_offset_fit_deg": "deg",
          "ha_peak_k": "K", "dec_peak_k": "K", "ha_fwhm_deg": "deg", "dec_fwhm_deg": "deg", "ha_flux_jy": "Jy",
          "dec_flux_jy": "Jy", "half_width_deg": "deg", "rate_deg_s": "deg/s", "ta_k": "K", "ta_err_k": "K",
          "tau_zenith": "", "tau_err": "", "t_zero_airmass_k": "K", "tsys_k": "K", "tsys_err_k": "K",
          "diode_k": "K", "k_per_count": "K/count", "integration_s": "s", "transit_t": "s",
          "ha_offset_err_deg": "deg", "dec_offset_err_deg": "deg"}


def mean_temperature(d: dict[str, np.ndarray]) -> np.ndarray:
    """Mean of the two DVM channels (K)."""
    return (d["dvm1"] + d["dvm2"]) / 2.0


def catalog_source(site: Site, name: str, kind: str) -> Source:
    """The catalog source ``name``, which must be of ``kind`` ('maser', 'pulsar', ...); ValueError otherwise."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"source must be a catalog name, got {name!r}")
    try:
        src = load_catalog(site.catalog_path).get(name)
    except KeyError as err:
        raise ValueError(str(err.args[0])) from None
    if src.kind != kind:
        known = ", ".join(s.name for s in load_catalog(site.catalog_path).of_kind(kind))
        raise ValueError(f"{src.name} is a {src.kind}, not a {kind}; catalog {kind}s: {known}")
    return src


def check_number(name: str, value: Any, lo: float = 0.0, strict: bool = True) -> float:
    """``value`` as a finite float above ``lo`` (ValueError naming ``name`` otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or (v <= lo if strict else v < lo):
        raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} {lo:g}, got {value!r}")
    return v


def check_count(name: str, value: Any, lo: int = 1) -> int:
    """``value`` as an integer >= ``lo`` (ValueError naming ``name`` otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


def obs_time(drive: Drive) -> float:
    """Observatory time (POSIX s, UTC) of the drive's newest position packet (one per control cycle)."""
    pkt = drive.packet()
    if pkt is None:
        raise RuntimeError(f"{drive.name}: no position packet yet (drive IOC not answering?)")
    return float(pkt[PKT_T])
