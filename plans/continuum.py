"""Continuum observing plans: drift scan, cross scan, pointing check, on/off stepping, sky dip, Tsys cal.

Every plan is a bluesky plan (``RE(drift_scan(drive, radiometer, "PictorA"))``) that

* writes the observing log (:class:`plans.metadata.ObsMeta`) plus ``plan_name``/``plan_args``/``requested``
  into the start document,
* records what was achieved (times, positions, sample counts and losses, quick-look fit results) as one
  event of the stream ``achieved`` at its end, and returns the same values as a dict,
* is resumable after a suspension: step plans rewind to the checkpoint before the current step, which
  re-commands the pointing (a suspension stops a moving drive); fly sections are not rewound (the samples
  already collected are kept and sampling goes on; a scan cut short by the suspension stays short),
* leaves the telescope safe however it ends (drive stopped, or stowed with ``cleanup="stow"``, diodes off:
  :func:`plans.stubs.with_safe_cleanup`), and never sleeps outside the RunEngine (``bps.sleep``).

Step plans (stepping, sky dip, five-point pointing, step cross scans) run :func:`plans.stubs.step_series`: the
next move starts as soon as an integration window is over, while the window's last samples are still on
the way.

Fly scans (drift and cross scans) keep every radiometer sample (stream ``samples``, one event per sample)
and collect them *while* the telescope moves, so the device's buffer stays small.  Units: angles in deg
(HA offsets in coordinate degrees unless named "true angle"), temperatures in K on the radiometer's scale,
times in s of observatory time, flux densities in Jy.  Fluxes are ``peak / gain``: the atmosphere's
attenuation exp(-tau/sin el) is *not* removed (the mean elevation is recorded so an analysis can).
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from functools import partial
from typing import Any

import numpy as np
from bluesky import plan_stubs as bps
from bluesky import preprocessors as bpp
from bluesky.utils import Msg

from archiver import fitting
from devices.drive import Drive
from devices.instrumentation import Instrumentation
from devices.radiometer import Radiometer
from obsctl import astro
from obsctl.site import Site
from plans.metadata import ObsMeta
from plans.runs import (
    SIDEREAL,
    Plan,
    PlanContext,
    as_arrays,
    fly_clock,
    fly_while,
    mean_temperature,
    plan_context,
    run_plan,
    source_hadec,
    window_stats,
)
from plans.stubs import (
    collect_samples,
    diodes_off,
    drift_park,
    go_on_source,
    offset_scan,
    set_diode,
    slew,
    step_series,
)


# ---- drift scan -------------------------------------------------------------------------------------------
def drift_scan(drive: Drive, radiometer: Radiometer, source: str, *, lead_deg: float | None = None,
               instrumentation: Instrumentation | None = None, receiver: str | None = None,
               meta: ObsMeta | None = None, site: Site | None = None, cleanup: str = "stop", poll_s: float = 0.5,
               md: dict[str, Any] | None = None) -> Plan:
    """Drift scan: park ahead of ``source`` and sample every radiometer sample while it drifts through.

    Parameters
    ----------
    drive, radiometer : the DRV and RAD devices (the radiometer needs the observatory clock).
    source : catalog source name.
    lead_deg : how far ahead in HA the dish parks (deg); default two beam widths.  The source crosses the
        beam about ``lead_deg / 15.04`` h later; sampling lasts twice that (symmetric about the transit).
    instrumentation, receiver : NDI device and the receiver to select (default: the selected one).
    meta : observing-log fields (source, position, receiver and frequency are filled in).
    cleanup : ``"stop"`` (default), ``"stow"`` or ``"none"``: what the drive does when the plan ends.
    poll_s : how often samples are collected during the drift (real s).

    Returns (and records in the ``achieved`` stream): park position (deg), achieved lead (deg), window,
    samples, losses and dead time, and the Gaussian fit: ``peak_k``, ``offset_deg`` (true angle; peak
    relative to the predicted transit), ``fwhm_deg``, ``flux_jy`` (peak / gain), ``el_deg``.
    """
    ctx = plan_context(site, receiver, instrumentation, source, meta)
    lead = float(lead_deg) if lead_deg is not None else 2.0 * ctx.fwhm
    clock = fly_clock(radiometer)
    args = {"drive": drive, "radiometer": radiometer, "source": source, "lead_deg": lead_deg,
            "instrumentation": instrumentation, "receiver": receiver, "cleanup": cleanup}

    def body() -> Plan:
        source_hadec(ctx, np.array([clock.now()]))  # the first astropy transform of a process takes seconds
        yield from drift_park(drive, source, lead)
        now = clock.now()
        ha_beam, dec_beam = float(drive.ha_obs.get()), float(drive.dec_obs.get())
        ha_src, _ = source_hadec(ctx, np.array([now]))
        ahead = float(astro.wrap180(ha_beam - ha_src[0]))
        t_transit = now + ahead / SIDEREAL
        into: dict[str, list] = {}

        t_end = t_transit + (t_transit - now)  # symmetric about the transit

        def fly() -> Generator[Msg, Any, None]:
            yield from bps.mv(radiometer.fly_end, t_end)  # the window ends there even if the loop lags
            yield from bps.kickoff(radiometer, wait=True)
            yield from fly_while(radiometer, clock, into, until_t=t_end, poll_s=poll_s)
            yield from bps.complete(radiometer, wait=True)
            yield from collect_samples(radiometer, into)

        yield from bpp.rewindable_wrapper(fly(), False)
        d = as_arrays(into)
        out = {**window_stats(radiometer, d), "lead_deg": ahead, "park_ha_deg": ha_beam, "park_dec_deg": dec_beam}
        # predicted transit: the source's apparent HA equals the beam's (median sample HA)
        hs, ds = source_hadec(ctx, d["t"])
        diff = astro.wrap180(np.median(d["ha"]) - hs)
        transit = float(np.interp(0.0, -diff, d["t"])) if np.all(np.diff(-diff) > 0) else t_transit
        out["transit_t"] = transit
        out["dec_offset_deg"] = float(np.median(d["dec"]) - np.mean(ds))
        out["el_deg"] = float(np.mean(d["el"]))
        fit = fitting.drift_scan(d["t"], mean_temperature(d), transit, float(np.mean(ds)), ctx.rx.gain_k_per_jy,
                                 ctx.fwhm)
        out.update(peak_k=fit.peak_k, peak_err_k=fit.peak_err_k, offset_deg=fit.offset_deg,
                   offset_err_deg=fit.offset_err_deg, fwhm_deg=fit.fwhm_deg, flux_jy=fit.flux_jy, rms_k=fit.rms_k)
        return out

    return (yield from run_plan("drift_scan", args, ctx, {"lead_deg": lead, "duration_s": 2 * lead / SIDEREAL}, md,
                             body, drive, instrumentation, cleanup, [radiometer]))


# ---- cross scan / pointing check --------------------------------------------------------------------------
def _cross_body(drive: Drive, radiometer: Radiometer, ctx: PlanContext, source: str, half: float, duration: float,
                mode: str, npoints: int, integration_s: float, poll_s: float) -> Plan:
    """The two orthogonal scans and their fits (shared by cross_scan and pointing_check)."""
    cosd = math.cos(math.radians(ctx.src.dec_deg))
    yield from go_on_source(drive, source, 0.0, 0.0)
    cuts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    stats: dict[str, Any] = {}
    if mode == "fly":
        clock = fly_clock(radiometer)
        for axis in ("ha", "dec"):
            into: dict[str, list] = {}

            def fly(axis: str = axis, into: dict[str, list] = into) -> Generator[Msg, Any, None]:
                yield from bps.kickoff(radiometer, wait=True)
                if axis == "ha":
                    cmd = yield from offset_scan(drive, rate_ha=2 * half / cosd / duration, duration=duration,
                                                 off_ha=-half / cosd, off_dec=0.0, wait=False)
                else:
                    cmd = yield from offset_scan(drive, rate_dec=2 * half / duration, duration=duration,
                                                 off_ha=0.0, off_dec=-half, wait=False)
                yield from fly_while(radiometer, clock, into, status_of=cmd, poll_s=poll_s)
                yield from bps.complete(radiometer, wait=True)
                yield from collect_samples(radiometer, into)

            yield from bpp.rewindable_wrapper(fly(), False)
            d = as_arrays(into)
            st = window_stats(radiometer, d)
            for k in ("n_samples", "lost", "index_gaps", "dead_time_s", "duration_s"):
                stats[f"{axis}_{k}"] = st[k]
            hs, ds = source_hadec(ctx, d["t"])
            dha, ddec = astro.wrap180(d["ha"] - hs), d["dec"] - ds
            other = ddec if axis == "ha" else dha * cosd
            sel = np.abs(other) < 0.02 * ctx.fwhm  # on the cut (the move to the start line is off it)
            cuts[axis] = ((dha if axis == "ha" else ddec)[sel], mean_temperature(d)[sel])
            stats["el_deg"] = float(np.mean(d["el"]))
    elif mode == "step":
        yield from bps.mv(radiometer.integration_time, integration_s)
        for axis in ("ha", "dec"):
            scale = cosd if axis == "ha" else 1.0
            xs = [float(x) for x in np.linspace(-half, half, npoints) / scale]
            moves = [partial(go_on_source, drive, source, *((x, 0.0) if axis == "ha" else (0.0, x))) for x in xs]
            got = yield from step_series(radiometer, [radiometer, drive], moves)
            stats["el_deg"] = got[-1][1]
            cuts[axis] = (np.array(xs), np.array([t for t, _ in got]))
    else:
        raise ValueError(f"mode {mode!r} is not 'fly' or 'step'")
    ha_fit, dec_fit = fitting.cross_scan(cuts["ha"][0], cuts["ha"][1], cuts["dec"][0], cuts["dec"][1],
                                         ctx.src.dec_deg, ctx.rx.gain_k_per_jy, ctx.fwhm)
    out = {**stats, "half_width_deg": half, "ha_peak_k": ha_fit.peak_k, "dec_peak_k": dec_fit.peak_k,
           "ha_offset_deg": ha_fit.offset_deg, "ha_offset_err_deg": ha_fit.offset_err_deg,
           "dec_offset_fit_deg": dec_fit.offset_deg, "dec_offset_err_deg": dec_fit.offset_err_deg,
           "ha_fwhm_deg": ha_fit.fwhm_deg, "dec_fwhm_deg": dec_fit.fwhm_deg, "ha_flux_jy": ha_fit.flux_jy,
           "dec_flux_jy": dec_fit.flux_jy, "flux_jy": (ha_fit.flux_jy + dec_fit.flux_jy) / 2,
           "peak_k": (ha_fit.peak_k + dec_fit.peak_k) / 2}
    return out


def cross_scan(drive: Drive, radiometer: Radiometer, source: str, *, half_width_deg: float | None = None,
               duration_s: float = 60.0, mode: str = "fly", npoints: int = 15, integration_s: float = 1.0,
               instrumentation: Instrumentation | None = None, receiver: str | None = None,
               meta: ObsMeta | None = None, site: Site | None = None, cleanup: str = "stop", poll_s: float = 0.5,
               md: dict[str, Any] | None = None) -> Plan:
    """Cross scan: orthogonal scans through ``source`` in HA and in Dec offsets.

    Parameters
    ----------
    half_width_deg : each scan runs from -half to +half true-angle degrees about the source (default 2.5 beams).
    duration_s : duration of each fly scan (s of observatory time).
    mode : ``"fly"`` (continuous scans, every sample kept) or ``"step"`` (``npoints`` per axis, each
        integrated ``integration_s`` s of observatory time).
    Other parameters as :func:`drift_scan`.

    Returns (and records): per axis the fitted peak (K), offset (deg, true angle; HA in ``ha_offset_deg``,
    Dec in ``dec_offset_fit_deg``), FWHM (deg) and flux (Jy, corrected for the other axis' offset), their
    mean ``flux_jy``, sample counts, losses and dead time of the fly scans.
    """
    ctx = plan_context(site, receiver, instrumentation, source, meta)
    half = float(half_width_deg) if half_width_deg is not None else 2.5 * ctx.fwhm
    args = {"drive": drive, "radiometer": radiometer, "source": source, "half_width_deg": half_width_deg,
            "duration_s": duration_s, "mode": mode, "npoints": npoints, "integration_s": integration_s,
            "instrumentation": instrumentation, "receiver": receiver, "cleanup": cleanup}

    def body() -> Plan:
        return (yield from _cross_body(drive, radiometer, ctx, source, half, duration_s, mode, npoints,
                                       integration_s, poll_s))

    return (yield from run_plan("cross_scan", args, ctx, {"half_width_deg": half, "duration_s": duration_s,
                                                       "mode": mode}, md, body, drive, instrumentation, cleanup,
                             [radiometer]))


def pointing_check(drive: Drive, radiometer: Radiometer, source: str, *, method: str = "cross",
                   half_width_deg: float | None = None, duration_s: float = 60.0, integration_s: float = 2.0,
                   instrumentation: Instrumentation | None = None, receiver: str | None = None,
                   meta: ObsMeta | None = None, site: Site | None = None, cleanup: str = "stop", poll_s: float = 0.5,
                   md: dict[str, Any] | None = None) -> Plan:
    """Pointing check on a calibrator: offsets of the source from where the dish believes it points.

    Parameters
    ----------
    method : ``"cross"`` (fly cross scans of +-``half_width_deg``, default 2 beams, fitted with Gaussians)
        or ``"five_point"`` (on source and half a beam N, S, E, W plus an off-source reference at 4 beams,
        each integrated ``integration_s`` s, solved with :func:`archiver.fitting.five_point`).
    Other parameters as :func:`cross_scan`.

    Returns (and records): ``ha_offset_deg`` and ``dec_offset_deg`` — the true-angle offsets (deg) at which
    the source was found (positive HA: the source appears at larger HA than commanded); ``ha_offset_coord_deg``
    the HA offset in coordinate degrees (what to add to ``off_ha`` to centre the beam); beam widths for
    the cross method.
    """
    ctx = plan_context(site, receiver, instrumentation, source, meta)
    args = {"drive": drive, "radiometer": radiometer, "source": source, "method": method,
            "half_width_deg": half_width_deg, "duration_s": duration_s, "integration_s": integration_s,
            "instrumentation": instrumentation, "receiver": receiver, "cleanup": cleanup}
    cosd = math.cos(math.radians(ctx.src.dec_deg))

    def body() -> Plan:
        if method == "cross":
            half = float(half_width_deg) if half_width_deg is not None else 2.0 * ctx.fwhm
            out = yield from _cross_body(drive, radiometer, ctx, source, half, duration_s, "fly", 0, 0.0, poll_s)
            out["dec_offset_deg"] = out.pop("dec_offset_fit_deg")
        elif method == "five_point":
            d = ctx.fwhm / 2
            yield from go_on_source(drive, source, 0.0, 0.0)
            yield from bps.mv(radiometer.integration_time, integration_s)
            points = {"ref": (0.0, 4 * ctx.fwhm), "on": (0.0, 0.0), "north": (0.0, d), "south": (0.0, -d),
                      "east": (-d / cosd, 0.0), "west": (d / cosd, 0.0)}
            got = yield from step_series(radiometer, [radiometer, drive],
                                         [partial(go_on_source, drive, source, x, y) for x, y in points.values()])
            temps = {key: t for key, (t, _) in zip(points, got, strict=True)}
            ref = temps.pop("ref")
            rel = {k: v - ref for k, v in temps.items()}
            # "east" here is the smaller HA; fitting.five_point gives ln(E/W): positive towards larger HA
            x, y = fitting.five_point(d, rel["on"], rel["north"], rel["south"], rel["west"], rel["east"], ctx.fwhm)
            out = {"ha_offset_deg": x, "dec_offset_deg": y, "peak_k": rel["on"],
                   "el_deg": float(radiometer.el.get())}
        else:
            raise ValueError(f"method {method!r} is not 'cross' or 'five_point'")
        out["ha_offset_coord_deg"] = out["ha_offset_deg"] / cosd
        return out

    return (yield from run_plan("pointing_check", args, ctx, {"method": method}, md, body, drive, instrumentation,
                             cleanup, [radiometer]))


# ---- on/off, sky dip, Tsys --------------------------------------------------------------------------------
def stepping(drive: Drive, radiometer: Radiometer, source: str, *, cycles: int = 2, integration_s: float = 10.0,
             off_beams: float = 3.0, switch: str = "dec", instrumentation: Instrumentation | None = None,
             receiver: str | None = None, meta: ObsMeta | None = None, site: Site | None = None,
             cleanup: str = "stop", md: dict[str, Any] | None = None) -> Plan:
    """On/off source flux measurement: per cycle off (-), on, off (+), each integrated ``integration_s`` s.

    Parameters
    ----------
    cycles : number of off-on-off cycles.
    integration_s : integration per position (s of observatory time).
    off_beams : the reference positions lie this many beam widths away (true angle).
    switch : ``"dec"`` or ``"ha"``: the axis along which the reference positions lie (beam switching).
    Other parameters as :func:`drift_scan`.

    Returns (and records): antenna temperature ``ta_k`` (on minus the mean of the off positions, K), its
    error ``ta_err_k`` (scatter of the cycles), ``flux_jy`` (ta / gain) and ``el_deg``.
    """
    if switch not in ("dec", "ha"):
        raise ValueError(f"switch {switch!r} is not 'dec' or 'ha'")
    if cycles < 1:
        raise ValueError(f"cycles must be >= 1, got {cycles}")
    ctx = plan_context(site, receiver, instrumentation, source, meta)
    cosd = math.cos(math.radians(ctx.src.dec_deg))
    off = off_beams * ctx.fwhm
    args = {"drive": drive, "radiometer": radiometer, "source": source, "cycles": cycles,
            "integration_s": integration_s, "off_beams": off_beams, "switch": switch,
            "instrumentation": instrumentation, "receiver": receiver, "cleanup": cleanup}

    def body() -> Plan:
        yield from go_on_source(drive, source, 0.0, 0.0)
        yield from bps.mv(radiometer.integration_time, integration_s)
        signs = [-1.0, 0.0, 1.0] * cycles
        moves = [partial(go_on_source, drive, source, *((s * off / cosd, 0.0) if switch == "ha" else (0.0, s * off)))
                 for s in signs]
        got = yield from step_series(radiometer, [radiometer, drive], moves)
        vals = [t for t, _ in got]
        els = [el for _, el in got]
        deltas = [vals[i + 1] - (vals[i] + vals[i + 2]) / 2 for i in range(0, len(vals), 3)]
        ta = float(np.mean(deltas))
        err = float(np.std(deltas, ddof=1) / math.sqrt(len(deltas))) if len(deltas) > 1 else math.nan
        return {"ta_k": ta, "ta_err_k": err, "flux_jy": ta / ctx.rx.gain_k_per_jy, "el_deg": float(np.mean(els)),
                "cycles": cycles, "integration_s": integration_s}

    return (yield from run_plan("stepping", args, ctx, {"cycles": cycles, "integration_s": integration_s,
                                                     "off_deg": off, "switch": switch}, md, body, drive,
                             instrumentation, cleanup, [radiometer]))


def sky_dip(drive: Drive, radiometer: Radiometer, *,
            elevations_deg: Sequence[float] = (90.0, 60.0, 40.0, 30.0, 20.0, 15.0), az_deg: float = 0.0,
            integration_s: float = 10.0, t_atm_k: float = 270.0, instrumentation: Instrumentation | None = None,
            receiver: str | None = None, meta: ObsMeta | None = None, site: Site | None = None,
            cleanup: str = "stop", md: dict[str, Any] | None = None) -> Plan:
    """Sky dip: system temperature vs elevation at fixed azimuth, fitted for the zenith opacity.

    Parameters
    ----------
    elevations_deg : elevations visited, in order (deg; must span at least 10 deg).
    az_deg : azimuth of the dip (deg); choose one free of sources.
    integration_s : integration per elevation (s of observatory time).
    t_atm_k : mean physical temperature of the atmosphere (K) of the model
        T(el) = T0 + T_atm (1 - exp(-tau / sin el)).

    Returns (and records): ``tau_zenith`` (nepers) and its error, ``t_zero_airmass_k`` (K), ``rms_k``.
    """
    ctx = plan_context(site, receiver, instrumentation, None, meta)
    els = [float(e) for e in elevations_deg]
    args = {"drive": drive, "radiometer": radiometer, "elevations_deg": els, "az_deg": az_deg,
            "integration_s": integration_s, "t_atm_k": t_atm_k, "instrumentation": instrumentation,
            "receiver": receiver, "cleanup": cleanup}

    def body() -> Plan:
        yield from bps.mv(radiometer.integration_time, integration_s)
        got = yield from step_series(radiometer, [radiometer, drive],
                                     [partial(slew, drive, az_deg, el, "AZEL") for el in els])
        fit = fitting.tau_from_skydip(np.array([el for _, el in got]), np.array([t for t, _ in got]), t_atm_k)
        return {"tau_zenith": fit.tau_zenith, "tau_err": fit.tau_err, "t_zero_airmass_k": fit.t_zero_airmass_k,
                "rms_k": fit.rms_k, "integration_s": integration_s, "n_points": len(els)}

    return (yield from run_plan("sky_dip", args, ctx, {"elevations_deg": els, "az_deg": az_deg}, md, body, drive,
                             instrumentation, cleanup, [radiometer]))


def tsys_cal(drive: Drive, radiometer: Radiometer, instrumentation: Instrumentation, *, source: str | None = None,
             level: str = "HIGH", cycles: int = 2, integration_s: float = 5.0, receiver: str | None = None,
             meta: ObsMeta | None = None, site: Site | None = None, cleanup: str = "stop",
             md: dict[str, Any] | None = None) -> Plan:
    """Noise-diode calibration: the diode ``level`` switched off/on ``cycles`` times (off, on, ..., off).

    Parameters
    ----------
    source : track this source first (None: stay where the telescope points).
    level : diode level, ``"LOW"`` or ``"HIGH"`` (its temperature ``ND_K_RBV`` is the calibration, K).
    cycles : on phases (there are ``cycles + 1`` off phases).
    integration_s : integration per phase (s of observatory time).

    Returns (and records): ``tsys_k`` = T_diode * off / (on - off) (K), ``tsys_err_k``, ``diode_k``
    and ``k_per_count`` (K per radiometer unit: 1 when the radiometer is already calibrated in K).
    """
    ctx = plan_context(site, receiver, instrumentation, source, meta)
    args = {"drive": drive, "radiometer": radiometer, "instrumentation": instrumentation, "source": source,
            "level": level, "cycles": cycles, "integration_s": integration_s, "receiver": receiver,
            "cleanup": cleanup}

    def body() -> Plan:
        if source:
            yield from go_on_source(drive, source, 0.0, 0.0)
        yield from bps.mv(radiometer.integration_time, integration_s)
        on, off, diode_k = [], [], math.nan
        for phase in ["OFF", level] * cycles + ["OFF"]:
            yield from bps.checkpoint()
            if source:  # (again after a suspension, which stops the drive)
                yield from go_on_source(drive, source, 0.0, 0.0)
            yield from set_diode(instrumentation, phase)
            yield from bps.trigger_and_read([radiometer, instrumentation])
            if phase != "OFF":  # read from the IOC now: the monitor may lag the register change
                diode_k = float(instrumentation.nd_k.fresh()[0])
            (on if phase != "OFF" else off).append((radiometer.dvm1.get() + radiometer.dvm2.get()) / 2)
        yield from diodes_off(instrumentation)
        cal = fitting.tsys_from_diode(np.array(off), np.array(on), diode_k)
        return {"tsys_k": cal.tsys_k, "tsys_err_k": cal.tsys_err_k, "diode_k": diode_k,
                "k_per_count": cal.k_per_count, "el_deg": float(radiometer.el.get())}

    return (yield from run_plan("tsys_cal", args, ctx, {"level": level, "cycles": cycles}, md, body, drive,
                             instrumentation, cleanup, [radiometer]))
