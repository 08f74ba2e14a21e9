"""Pulsar timing with the Mark I pulsar timer (PSR): folded profiles, S/N and times of arrival.

:func:`pulsar_timing` is a bluesky plan (``RE(pulsar_timing(drive, pulsar_timer, "J0835-4510"))``) that

* writes the observing log (:class:`plans.metadata.ObsMeta`) plus ``plan_name``/``plan_args``/``requested``
  into the start document and records what was achieved as one event of the stream ``achieved``,
* tracks the pulsar, sets the timer's clock to UTC (SETUP_TIME, a one-period fold) so that its times of
  arrival are UTC, and configures the fold (the settings of :meth:`devices.pulsar_timer.PulsarTimer.
  configure_fold`, written through the RunEngine): the catalog pulsar, so the timer folds at its apparent
  (ephemeris) period, ``nbins`` bins, ``npulses`` periods or ``int_time_s`` s per fold, and the detector
  time constant (SETUP_TAU),
* takes ``n_folds`` folds, one ``trigger_and_read`` of the timer each (stream ``primary``: profile, S/N,
  TOA, folding period ...), adds them on a common phase origin (the first fold's start, from the fold start
  times and the period) and measures the summed profile,
* is resumable after a suspension (every fold is a step after a checkpoint that re-commands the tracking; a
  fold the suspension interrupted is waited for and taken again) and leaves the telescope safe however it ends.

The timer has no command that abandons a fold: a fold still running when a plan ends early runs to its end,
and the next plan waits for it (:func:`plans.spectral.backend_idle`).

Units: times in s (POSIX UTC, observatory clock) or MJD (UTC) where named, periods in s, widths in ms,
phases in turns, temperatures in K.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from bluesky import plan_stubs as bps

from archiver import fitting
from devices.drive import Drive
from devices.instrumentation import Instrumentation
from devices.pulsar_timer import BUSY, PulsarTimer
from obsctl import astro
from obsctl.catalog import Source
from obsctl.site import Site, load_site
from plans.metadata import ObsMeta
from plans.runs import Plan, catalog_source, check_count, check_number, plan_context, run_plan
from plans.spectral import C_KMS
from plans.stubs import backend_idle, backend_receiver, go_on_source, run_command

NBINS_RANGE = (16, 4096)
INT_TIME_RANGE_S = (0.1, 36000.0)
TAU_MAX_MS = 100.0
UNITS = {"period_s": "s", "period_ephemeris_s": "s", "period_offset_ppb": "ppb", "snr": "", "toa_mjd": "MJD",
         "pulse_phase": "turns", "width_ms": "ms", "fold_s": "s", "t_mid": "s", "tsys_k": "K",
         "fold_snr_min": "", "phase_scatter_turns": "turns", "tau_ms": "ms", "nbins": "bins", "n_folds": "folds",
         "npulses": "pulses"}


def apparent_period_s(src: Source, t: float, loc: astro.Location) -> float:
    """Topocentric apparent period (s) of a catalog pulsar at POSIX time ``t`` (UTC).

    The catalog period spun down to the date (:meth:`obsctl.catalog.Source.period_at`), divided by
    ``1 + v_b / c`` with ``v_b`` the observatory's barycentric radial-velocity correction (astropy).
    """
    vb = astro.velocity_corrections_kms(src.coord, t, loc)[0]
    return src.period_at(astro.mjd(t)) / (1.0 + vb / C_KMS)


def pulsar_timing(drive: Drive, pulsar_timer: PulsarTimer, psr: str, *, n_folds: int = 4,
                  npulses: int | None = None, int_time_s: float | None = None, nbins: int = 256,
                  tau_ms: float | None = None, sync_clock: bool = True, instrumentation: Instrumentation | None = None,
                  receiver: str | None = None, meta: ObsMeta | None = None, site: Site | None = None,
                  cleanup: str = "stop", md: dict[str, Any] | None = None) -> Plan:
    """Fold a pulsar ``n_folds`` times at its apparent period; S/N, pulse phase, width and TOA of the sum.

    Parameters
    ----------
    drive, pulsar_timer : the DRV and PSR devices.
    psr : catalog pulsar (``obsctl/data/pulsars.csv``).
    n_folds : number of folds (one ``trigger_and_read`` each).
    npulses, int_time_s : length of each fold: ``npulses`` periods, or ``int_time_s`` s of observatory time
        (0.1..36000); give at most one (default: 60 s).
    nbins : bins per period (16..4096).
    tau_ms : detector time constant (ms, 0..100), applied with SETUP_TAU; default a fifth of a bin (at most
        1 ms).  The causal RC filter delays the pulse peak by a fraction of it, so it biases the TOAs.
    sync_clock : first set the timer clock to UTC (SETUP_TIME 'now' with a one-period fold); without it the
        TOAs carry the timer clock's error.
    instrumentation, receiver : NDI device and the receiver to select (default: the selected one).
    meta : observing-log fields (source, position, receiver and frequency are filled in).
    cleanup : ``"stop"`` (default), ``"stow"`` or ``"none"``: what the drive does when the plan ends.

    Returns (and records in ``achieved``): ``period_s`` (the timer's folding period, mean of the folds),
    ``period_ephemeris_s`` (apparent period from the catalog ephemeris at the mid-time ``t_mid``) and their
    difference ``period_offset_ppb``; of the summed profile ``snr``, ``pulse_phase`` (turns from the first
    fold's start), ``width_ms`` (FWHM) and ``toa_mjd`` (UTC MJD of the pulse peak nearest ``t_mid``);
    ``nbins``, ``n_folds``, ``npulses`` (periods folded in all), ``fold_s``, ``fold_snr_min``,
    ``phase_scatter_turns`` (rms of the folds' aligned peak phases), ``tau_ms``, ``tsys_k``, ``el_deg`` and
    ``clock`` (the timer clock's status, SET once synchronised).
    """
    s = site or load_site()
    src = catalog_source(s, psr, "pulsar")
    folds = check_count("n_folds", n_folds)
    if isinstance(nbins, bool) or not isinstance(nbins, (int, np.integer)) or \
            not NBINS_RANGE[0] <= nbins <= NBINS_RANGE[1]:
        raise ValueError(f"nbins must be an integer within {NBINS_RANGE[0]}..{NBINS_RANGE[1]}, got {nbins!r}")
    if npulses is not None and int_time_s is not None:
        raise ValueError("give npulses or int_time_s, not both")
    if npulses is not None:
        n_pulses = check_count("npulses", npulses)
        fold_s = n_pulses * src.period_s
    else:
        fold_s = check_number("int_time_s", int_time_s if int_time_s is not None else 60.0)
        if not INT_TIME_RANGE_S[0] <= fold_s <= INT_TIME_RANGE_S[1]:
            raise ValueError(f"int_time_s must be within {INT_TIME_RANGE_S[0]:g}..{INT_TIME_RANGE_S[1]:g} s, "
                             f"got {int_time_s!r}")
        n_pulses = 0
    if tau_ms is None:
        tau = round(min(1.0, 0.2e3 * src.period_s / nbins), 3)
    else:
        tau = check_number("tau_ms", tau_ms, strict=False)
        if tau > TAU_MAX_MS:
            raise ValueError(f"tau_ms must be within 0..{TAU_MAX_MS:g} ms, got {tau_ms!r}")
    ctx = plan_context(s, receiver, instrumentation, psr, meta)
    args = {"drive": drive, "pulsar_timer": pulsar_timer, "psr": psr, "n_folds": n_folds, "npulses": npulses,
            "int_time_s": int_time_s, "nbins": nbins, "tau_ms": tau_ms, "sync_clock": sync_clock,
            "instrumentation": instrumentation, "receiver": receiver, "cleanup": cleanup}
    requested = {"n_folds": folds, "npulses": n_pulses, "int_time_s": fold_s if not n_pulses else None,
                 "fold_s": fold_s, "nbins": int(nbins), "tau_ms": tau, "period_catalog_s": src.period_s}

    def body() -> Plan:
        yield from backend_receiver(pulsar_timer, ctx.rx.name)
        yield from backend_idle(pulsar_timer, BUSY)
        yield from go_on_source(drive, psr, 0.0, 0.0)
        yield from bps.mv(pulsar_timer.psr_name, src.name)
        yield from bps.mv(pulsar_timer.nbins, int(nbins))
        if abs(float(pulsar_timer.tau_rbv.get()) - tau) > 5e-4:
            yield from bps.mv(pulsar_timer.tau, tau)
            yield from bps.mv(pulsar_timer.cmd, "SETUP_TAU")
        if sync_clock:
            yield from bps.mv(pulsar_timer.npulses, 1)
            yield from run_command(f"{pulsar_timer.name}_setup_time", pulsar_timer.setup_time_and_fold, "now")
        yield from bps.mv(pulsar_timer.npulses, n_pulses)
        if not n_pulses:
            yield from bps.mv(pulsar_timer.int_time, fold_s)
        got: list[dict[str, Any]] = []
        els = []
        for _ in range(folds):
            yield from bps.checkpoint()
            yield from backend_idle(pulsar_timer, BUSY)
            yield from go_on_source(drive, psr, 0.0, 0.0)
            reading = yield from bps.trigger_and_read([pulsar_timer])
            got.append({k: reading[getattr(pulsar_timer, k).name]["value"]
                        for k in ("profile", "snr", "phase", "toa", "tstart", "period_rbv", "npulse", "tsys")})
            els.append(float(drive.el.get()))
        fold_len = n_pulses * float(got[0]["period_rbv"]) if n_pulses else fold_s
        out = _measure(got, src, ctx.loc, int(nbins), fold_len)
        out.update(el_deg=float(np.mean(els)), clock=str(pulsar_timer.clock_sts.get()),
                   tau_ms=float(pulsar_timer.tau_rbv.get()))
        return out

    return (yield from run_plan("pulsar_timing", args, ctx, requested, md, body, drive, instrumentation, cleanup,
                                [pulsar_timer], UNITS))


def _measure(got: list[dict[str, Any]], src: Source, loc: astro.Location, nbins: int,
             fold_len: float) -> dict[str, Any]:
    """Align and add the folds, measure the sum, compare the period with the ephemeris."""
    period = float(np.mean([g["period_rbv"] for g in got]))
    t0 = [(float(g["tstart"]) - 40587.0) * 86400.0 for g in got]  # fold starts, POSIX s (timer clock)
    # fold k started (t0_k - t0_0) / P turns after fold 0, so it shows the pulse that much earlier: rotate it on
    shifts = [((t - t0[0]) / period) % 1.0 for t in t0]
    profiles = [np.asarray(g["profile"], float)[:nbins] for g in got]
    total = fitting.add_profiles(profiles, shifts)
    res = fitting.pulse_peak(total)
    # each fold's own peak, aligned: how far from the sum's peak (turns)
    aligned = [(fitting.pulse_peak(p).peak_phase + sh - res.peak_phase + 0.5) % 1.0 - 0.5
               for p, sh in zip(profiles, shifts, strict=True)]
    t_mid = float(np.mean(t0)) + 0.5 * fold_len  # mean of the folds' mid-times
    # the pulse peak nearest the mid-time: phase origin t0_0, one pulse per period
    t_peak = t0[0] + res.peak_phase * period
    t_peak += round((t_mid - t_peak) / period) * period
    p_eph = apparent_period_s(src, t_mid, loc)
    return {"period_s": period, "period_ephemeris_s": p_eph, "period_offset_ppb": (period / p_eph - 1.0) * 1e9,
            "snr": res.snr, "pulse_phase": res.peak_phase, "width_ms": 1e3 * res.fwhm_phase * period,
            "toa_mjd": astro.mjd(t_peak), "t_mid": t_mid, "nbins": nbins, "n_folds": len(got),
            "npulses": int(sum(int(g["npulse"]) for g in got)), "fold_s": fold_len,
            "fold_snr_min": float(min(g["snr"] for g in got)),
            "phase_scatter_turns": float(np.std(aligned)) if len(aligned) > 1 else 0.0,
            "tsys_k": float(np.mean([g["tsys"] for g in got]))}
