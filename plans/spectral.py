"""Spectral-line observing: a maser's line with the autocorrelation spectrometer (COR).

:func:`spectroscopy` is a bluesky plan (``RE(spectroscopy(drive, correlator, "G9.62+0.20"))``) that

* writes the observing log (:class:`plans.metadata.ObsMeta`) plus ``plan_name``/``plan_args``/``requested``
  into the start document and records what was achieved as one event of the stream ``achieved``,
* tunes the correlator so that the source's catalog LSR velocity lands at the band centre: ``FREQ_SP`` is the
  topocentric sky frequency of the line, Doppler-corrected with astropy (:mod:`obsctl.astro`) for the
  observatory's motion at the predicted mid-time of the observation (observatory clock), ``REST_SP`` the rest
  frequency,
* switches position (source / reference offset in Dec) or frequency (two ``FREQ_SP`` values +-throw/2, both
  on source), one ``trigger_and_read`` of the correlator per integration (stream ``primary``); an integration
  whose mid-integration pointing (``RA_RBV``/``DEC_RBV``) is more than a quarter beam from the intended one
  is taken again (it stays in ``primary`` but is not used),
* aligns the spectra in LSR velocity (the tuning is fixed, the Doppler shift is not) and calibrates them
  against the reference's continuum temperature,
* records the calibrated source-minus-reference spectrum (not baseline-subtracted) as one event of the
  stream ``reduced``, and fits the line (:func:`archiver.fitting.spectral_line`),
* is resumable after a suspension (every integration is a step after a checkpoint that re-commands the
  pointing and the tuning; an integration interrupted by the suspension is waited for and taken again), and
  leaves the telescope safe however it ends (:func:`plans.stubs.with_safe_cleanup`: drive stopped or stowed,
  diodes off).

An integration still running when a plan ends early (abort) is left to finish on its own: resetting it would
fail its trigger Status inside the run.  Plans wait for such an integration before they configure the
correlator (:func:`plans.stubs.backend_idle`).

Units: frequencies in MHz (topocentric sky frequency unless named rest), velocities in km/s (LSR, radio
convention), temperatures in K, angles in deg, times in s of observatory time.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

import numpy as np
from bluesky import plan_stubs as bps
from bluesky.utils import Msg

from archiver import fitting
from devices.correlator import Correlator
from devices.drive import Drive
from devices.instrumentation import Instrumentation
from obsctl import astro
from obsctl.catalog import Source, load_catalog
from obsctl.site import ReceiverConfig, Site, load_site
from plans.metadata import ObsMeta
from plans.runs import Plan, catalog_source, check_count, check_number, obs_time, plan_context, run_plan
from plans.stubs import backend_idle, backend_receiver, go_on_source, record

C_KMS = 299_792.458
BW_MHZ = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
NCHAN = (256, 512, 1024, 2048)
MODES = ("position", "frequency")
WINDOWS = ("HANN", "UNIFORM", "HAMMING")
QUAD = "1x2048"  # one section: every lag on the one band
DOPPLER_MARGIN_KMS = 100.0  # Earth's motion (< 60 km/s w.r.t. the LSR) plus headroom, for the band checks
REDUCED_STREAM = "reduced"
POINTING_TOL_BEAMS = 0.25  # an integration counts if the correlator's pointing was this close to the intended one
POINTING_TRIES = 3  # integrations per step before the plan gives up on the pointing

UNITS = {"line_vlsr_kms": "km/s", "line_vlsr_err_kms": "km/s", "line_peak_k": "K", "line_fwhm_kms": "km/s",
         "rest_mhz": "MHz", "vlsr_catalog_kms": "km/s", "channel_kms": "km/s", "channel_mhz": "MHz",
         "line_offset_channels": "channels", "freq_sp_mhz": "MHz", "freq_low_mhz": "MHz", "freq_high_mhz": "MHz",
         "freq_throw_mhz": "MHz", "doppler_kms": "km/s", "vlsr_corr_kms": "km/s", "t_mid": "s",
         "t_mid_planned": "s", "tsys_k": "K", "off_deg": "deg", "bw_mhz": "MHz", "snr": ""}


def line_receiver(site: Site, freq_mhz: float, receiver: str | None) -> ReceiverConfig:
    """The receiver ``receiver`` (its band must hold ``freq_mhz``), or by default the first that does."""
    if receiver is None:
        rx = next((r for r in site.receivers if r.freq_min_mhz <= freq_mhz <= r.freq_max_mhz), None)
        if rx is None:
            bands = ", ".join(f"{r.name} {r.freq_min_mhz:g}-{r.freq_max_mhz:g}" for r in site.receivers)
            raise ValueError(f"no receiver covers {freq_mhz:g} MHz (bands: {bands} MHz)")
        return rx
    rx = next((r for r in site.receivers if r.name == receiver), None)
    if rx is None:
        raise ValueError(f"receiver {receiver!r} is not one of {', '.join(r.name for r in site.receivers)}")
    if not rx.freq_min_mhz <= freq_mhz <= rx.freq_max_mhz:
        raise ValueError(f"receiver {rx.name} ({rx.freq_min_mhz:g}-{rx.freq_max_mhz:g} MHz) does not cover "
                         f"{freq_mhz:g} MHz")
    return rx


# ---- reduction ---------------------------------------------------------------------------------------------
def switched_spectrum(sig: np.ndarray, ref: np.ndarray, t_ref_k: float) -> np.ndarray:
    """Calibrated switched spectrum (K): ``(sig - ref) / ref * T_ref`` channel by channel.

    Dividing by the reference removes the bandpass shape; ``T_ref`` (K) is the reference's continuum (system)
    temperature, without line power (:func:`continuum_k`).
    """
    ref = np.asarray(ref, dtype=float)
    if np.any(ref <= 0):
        raise ValueError("reference spectrum has channels <= 0 K: cannot calibrate")
    return (np.asarray(sig, dtype=float) - ref) / ref * t_ref_k


def continuum_k(spec_k: np.ndarray, freq_mhz: np.ndarray, lines_mhz: Sequence[float], guard_mhz: float) -> float:
    """Mean of a spectrum (K) over the channels farther than ``guard_mhz`` from every line.

    The correlator's spectra average to its Tsys over the band, line power included; a strong line adds
    several K, so the continuum is taken from the line-free channels.
    """
    far = np.ones(np.shape(spec_k), bool)
    for f in lines_mhz:
        far &= np.abs(np.asarray(freq_mhz) - f) > guard_mhz
    if far.sum() < 16:
        raise ValueError(f"fewer than 16 line-free channels for the continuum (guard {guard_mhz:g} MHz)")
    return float(np.mean(np.asarray(spec_k)[far]))


def doppler_align(spec_k: np.ndarray, freq_mhz: np.ndarray, rest_mhz: float, corr_kms: float,
                  corr_ref_kms: float) -> np.ndarray:
    """A spectrum taken with LSR correction ``corr_kms`` resampled to the velocity frame of ``corr_ref_kms``.

    On a fixed topocentric tuning a line moves by ``rest (corr_ref - corr) / c`` in frequency between the two
    instants; the spectrum is shifted by that much (linear interpolation, edges held), so spectra of one
    observation add up at the same LSR velocity.
    """
    df = rest_mhz * (corr_ref_kms - corr_kms) / C_KMS
    f = np.asarray(freq_mhz, dtype=float)
    return np.interp(f - df, f, np.asarray(spec_k, dtype=float))


def fold_frequency_switched(low_k: np.ndarray, high_k: np.ndarray, shift_channels: int) -> np.ndarray:
    """Fold a frequency-switched pair onto the low phase's channels from ``shift_channels`` on.

    ``low_k`` is the low-frequency phase calibrated against the high one, ``high_k`` the reverse, each on its
    own channels; the throw is ``shift_channels`` channels, so sky frequency ``f`` is channel ``j`` of the low
    phase and ``j - shift`` of the high one, and the line's two positive images are averaged:
    ``(low[j] + high[j - shift]) / 2``.  Negative ghosts of the line remain one throw either side.
    """
    lo, hi = np.asarray(low_k, dtype=float), np.asarray(high_k, dtype=float)
    s = int(shift_channels)
    if lo.shape != hi.shape or not 0 < s < lo.size // 2:
        raise ValueError(f"cannot fold a throw of {s} channels: spectra of {lo.size} and {hi.size} channels")
    return 0.5 * (lo[s:] + hi[:-s])


# ---- the plan ----------------------------------------------------------------------------------------------
def spectroscopy(drive: Drive, correlator: Correlator, source: str, *, mode: str = "position",
                 integration_s: float = 30.0, cycles: int = 2, off_beams: float = 3.0,
                 freq_throw_mhz: float | None = None, rest_mhz: float | None = None, bw_mhz: float = 1.0,
                 nchan: int = 1024, window: str = "HANN", instrumentation: Instrumentation | None = None,
                 receiver: str | None = None, meta: ObsMeta | None = None, site: Site | None = None,
                 cleanup: str = "stop", md: dict[str, Any] | None = None) -> Plan:
    """Spectrum of a maser's line, position- or frequency-switched, calibrated in K and fitted.

    Parameters
    ----------
    drive, correlator : the DRV and COR devices.
    source : catalog maser (``obsctl/data/masers.csv``): its line and LSR velocity set the tuning.
    mode : ``"position"`` (per cycle: source, then reference ``off_beams`` beams north in Dec) or
        ``"frequency"`` (per cycle: ``FREQ_SP`` at the line minus, then plus ``freq_throw_mhz / 2``; both on
        source; the two spectra are folded).
    integration_s : each integration (s of observatory time, 0.1..3600).
    cycles : number of switching cycles (two integrations each).
    off_beams : reference offset (beam widths at the line frequency, Dec); position switching only.
    freq_throw_mhz : total frequency throw (MHz; default a quarter of the band), rounded to an even number
        of channels; frequency switching only.
    rest_mhz : rest frequency (MHz); default the catalog line of the maser (``obsctl/data/lines.csv``).
    bw_mhz, nchan, window : correlator bandwidth (MHz, one of 0.5 .. 64), channels (256 .. 2048) and lag
        window (HANN, UNIFORM, HAMMING); one section (quadrant configuration 1x2048).
    instrumentation, receiver : NDI device and the receiver to select; default receiver: the first whose band
        holds the line.  Without ``instrumentation`` the selected receiver must already be that one.
    meta : observing-log fields (source, position, receiver and rest frequency are filled in).
    cleanup : ``"stop"`` (default), ``"stow"`` or ``"none"``: what the drive does when the plan ends.

    Returns (and records in ``achieved``): the fitted line ``line_vlsr_kms`` (+- ``line_vlsr_err_kms``),
    ``line_peak_k``, ``line_fwhm_kms``, ``rms_k`` (baseline channels), ``snr``, ``channel_kms``,
    ``vlsr_catalog_kms``, ``line_offset_channels`` ((fit - catalog) / channel), ``rest_mhz``, the tuning
    ``freq_sp_mhz`` (line centre), ``freq_low_mhz``/``freq_high_mhz`` (the two FREQ_SP values: equal to the
    centre when position-switched), ``freq_throw_mhz``, ``doppler_kms`` (the LSR correction used to tune, at
    the planned mid-time ``t_mid_planned``), ``vlsr_corr_kms`` (at the achieved mid-time ``t_mid`` of the
    source integrations; the velocity axis uses it), ``tsys_k``, ``el_deg``, ``mode`` and ``integration_s``
    (achieved integration on the source, s), ``n_integrations`` (used) and ``retaken`` (integrations taken again
    because the correlator pointed elsewhere).  The stream ``reduced`` holds the spectrum: ``vel_kms``,
    ``freq_mhz`` (topocentric) and ``ta_k`` (source minus reference, K, not baseline-subtracted).
    """
    s = site or load_site()
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not 'position' or 'frequency'")
    src = catalog_source(s, source, "maser")
    t_int = check_number("integration_s", integration_s)
    if t_int < 0.1 or t_int > 3600.0:
        raise ValueError(f"integration_s must be within 0.1..3600 s, got {integration_s!r}")
    n_cycles = check_count("cycles", cycles)
    if check_number("bw_mhz", bw_mhz) not in BW_MHZ:
        raise ValueError(f"bw_mhz {bw_mhz!r} is not one of {', '.join(f'{b:g}' for b in BW_MHZ)}")
    if isinstance(nchan, bool) or nchan not in NCHAN:
        raise ValueError(f"nchan {nchan!r} is not one of {', '.join(map(str, NCHAN))}")
    if window not in WINDOWS:
        raise ValueError(f"window {window!r} is not one of {', '.join(WINDOWS)}")
    cat = load_catalog(s.catalog_path)
    rest = check_number("rest_mhz", rest_mhz) if rest_mhz is not None else cat.line_rest_mhz(src.line)
    chan_mhz = float(bw_mhz) / nchan
    shift = 0
    if mode == "frequency":
        throw_req = check_number("freq_throw_mhz", freq_throw_mhz) if freq_throw_mhz is not None else bw_mhz / 4
        shift = 2 * max(1, round(throw_req / (2 * chan_mhz)))  # even: each phase +-shift/2 whole channels
        if shift >= nchan // 2:
            raise ValueError(f"freq_throw_mhz {throw_req:g} must be less than half the band ({bw_mhz / 2:g} MHz)")
    else:
        check_number("off_beams", off_beams)
    throw = shift * chan_mhz
    f_est = rest * (1.0 - src.vlsr_kms / C_KMS)
    rx = line_receiver(s, f_est, receiver)
    margin = f_est * DOPPLER_MARGIN_KMS / C_KMS + throw / 2
    if not (rx.freq_min_mhz <= f_est - margin and f_est + margin <= rx.freq_max_mhz):
        raise ValueError(f"the line at {f_est:.3f} MHz (+- {margin:.3f} MHz Doppler and throw) is outside "
                         f"{rx.name} {rx.freq_min_mhz:g}-{rx.freq_max_mhz:g} MHz")
    if instrumentation is None and correlator.rx.get() != rx.name:
        raise ValueError(f"{correlator.name} is fed by {correlator.rx.get()!r}, not {rx.name}: pass "
                         "instrumentation= to select the receiver")
    ctx = plan_context(s, rx.name, instrumentation, source, (meta or ObsMeta()).filled(freq_mhz=rest))
    fwhm = s.beam_fwhm_deg(f_est)
    off = float(off_beams) * fwhm if mode == "position" else 0.0
    mount = s.mount
    move_s = 2 * (off / mount.dec.max_rate_deg_s + mount.dec.max_rate_deg_s / mount.dec.max_accel_deg_s2) \
        if off else 0.0
    step_s = t_int + mount.settle_time_s + move_s / 2  # one integration and its re-pointing (estimate)
    args = {"drive": drive, "correlator": correlator, "source": source, "mode": mode, "integration_s": integration_s,
            "cycles": cycles, "off_beams": off_beams, "freq_throw_mhz": freq_throw_mhz, "rest_mhz": rest_mhz,
            "bw_mhz": bw_mhz, "nchan": nchan, "window": window, "instrumentation": instrumentation,
            "receiver": receiver, "cleanup": cleanup}
    requested = {"mode": mode, "integration_s": t_int, "cycles": n_cycles, "rest_mhz": rest, "bw_mhz": bw_mhz,
                 "nchan": nchan, "off_deg": off, "freq_throw_mhz": throw, "vlsr_kms": src.vlsr_kms,
                 "line": src.line}

    def body() -> Plan:
        yield from backend_receiver(correlator, rx.name)
        yield from backend_idle(correlator, ("INTEGRATING",))
        for sig, value in ((correlator.int_time, t_int), (correlator.quad, QUAD), (correlator.bw, f"{bw_mhz:g}"),
                           (correlator.nchan, str(nchan)), (correlator.window, window), (correlator.rest, rest)):
            yield from bps.mv(sig, value)
        yield from go_on_source(drive, source, 0.0, 0.0)
        # tune: the catalog velocity at the band centre, Doppler-corrected at the planned mid-time
        t_plan = obs_time(drive) + n_cycles * step_s  # half of the 2 n_cycles steps
        corr_plan = astro.velocity_corrections_kms(src.coord, t_plan, ctx.loc)[1]
        f_c = astro.topocentric_freq_mhz(rest, src.vlsr_kms, corr_plan)
        f_lo, f_hi = f_c - throw / 2, f_c + throw / 2
        if mode == "position":
            steps = [("sig", 0.0, f_c), ("ref", off, f_c)] * n_cycles
            yield from bps.mv(correlator.freq, f_c)
        else:
            steps = [("sig", 0.0, f_lo), ("ref", 0.0, f_hi)] * n_cycles
        got, els, retaken = yield from _integrations(drive, correlator, source, src, steps, mode == "frequency",
                                                     nchan, POINTING_TOL_BEAMS * fwhm)
        return (yield from _reduce(got, src, rest, ctx.loc, mode, shift, chan_mhz, t_int, f_c, {
            "freq_sp_mhz": f_c, "freq_low_mhz": f_lo if mode == "frequency" else f_c,
            "freq_high_mhz": f_hi if mode == "frequency" else f_c, "freq_throw_mhz": throw, "off_deg": off,
            "doppler_kms": corr_plan, "t_mid_planned": t_plan, "el_deg": float(np.mean(els)),
            "bw_mhz": float(bw_mhz), "nchan": nchan, "line": src.line, "retaken": retaken}))

    return (yield from run_plan("spectroscopy", args, ctx, requested, md, body, drive, instrumentation, cleanup,
                                [correlator], UNITS))


def _integrations(drive: Drive, correlator: Correlator, source: str, src: Source,
                  steps: list[tuple[str, float, float]], retune: bool, nchan: int,
                  tol_deg: float) -> Generator[Msg, Any, tuple[dict[str, list[dict[str, Any]]], list[float], int]]:
    """Plan: one integration per step ``(phase, Dec offset deg, FREQ_SP MHz)``, each after a checkpoint.

    An integration whose mid-integration pointing (RA_RBV/DEC_RBV) misses the intended position by more than
    ``tol_deg`` is taken again (at most :data:`POINTING_TRIES` times).  Returns the readings by phase
    (``sig``/``ref``: spectrum, freq_axis, tsys, time, ra, dec), the elevations (deg) and the retakes.
    """
    got: dict[str, list[dict[str, Any]]] = {"sig": [], "ref": []}
    els, retaken = [], 0
    for phase, off_dec, freq in steps:
        for _attempt in range(POINTING_TRIES):
            yield from bps.checkpoint()
            yield from backend_idle(correlator, ("INTEGRATING",))
            yield from go_on_source(drive, source, 0.0, off_dec)
            if retune:
                yield from bps.mv(correlator.freq, freq)
            reading = yield from bps.trigger_and_read([correlator])
            value = {k: reading[getattr(correlator, k).name]["value"] for k in ("tsys", "time", "ra", "dec")}
            miss = abs(float(astro.angular_distance(value["ra"], value["dec"], src.ra_deg, src.dec_deg)) - off_dec)
            if miss <= tol_deg:
                break
            retaken += 1  # the correlator integrated elsewhere (its pointing lagged): take it again
        else:
            raise RuntimeError(f"{correlator.name}: integrations {miss:.4f} deg from the intended position "
                               f"{POINTING_TRIES} times (tolerance {tol_deg:.4f} deg)")
        for k in ("spectrum", "freq_axis"):  # one section of nchan channels
            value[k] = np.asarray(reading[getattr(correlator, k).name]["value"], float)[:nchan]
        got[phase].append(value)
        els.append(float(drive.el.get()))
    return got, els, retaken


def _reduce(got: dict[str, list[dict[str, Any]]], src: Source, rest: float, loc: astro.Location, mode: str,
            shift: int, chan_mhz: float, t_int: float, f_line: float, extra: dict[str, Any]) -> Plan:
    """Calibrate, align in velocity, fold, fit; record the ``reduced`` stream; return the achieved values.

    ``f_line`` is the tuned (catalog) sky frequency of the line (MHz).
    """
    def mean(phase: str) -> np.ndarray:
        return np.mean([r["spectrum"] for r in got[phase]], axis=0)

    def corr(t: float) -> float:
        return astro.velocity_corrections_kms(src.coord, t, loc)[1]

    freq = {ph: np.asarray(got[ph][0]["freq_axis"], float) for ph in ("sig", "ref")}
    on_source = got["sig"] + (got["ref"] if mode == "frequency" else [])
    t_mid = float(np.mean([r["time"] for r in on_source]))
    corr_mid = corr(t_mid)
    guard = max(8 * chan_mhz, 4 * rest * src.width_kms / C_KMS)

    def line_free_k(ph: str, spec: np.ndarray) -> float:
        lines = [f_line, freq[ph][int(np.argmax(spec - np.median(spec)))]] if mode == "frequency" else []
        return continuum_k(spec, freq[ph], lines, guard)

    def calibrated(ph: str, other: str) -> np.ndarray:
        ref = mean(other)
        t_ref = line_free_k(other, ref)
        return np.mean([doppler_align(switched_spectrum(r["spectrum"], ref, t_ref), freq[ph], rest,
                                      corr(float(r["time"])), corr_mid) for r in got[ph]], axis=0)

    ta, axis = calibrated("sig", "ref"), freq["sig"]
    if mode == "frequency":
        ta, axis = fold_frequency_switched(ta, calibrated("ref", "sig"), shift), axis[shift:]
    vel = C_KMS * (1.0 - axis / rest) + corr_mid
    chan_kms = C_KMS * chan_mhz / rest
    use = np.ones(ta.size, bool)
    if mode == "frequency":  # leave out the negative ghosts one throw either side of the line
        f_peak = axis[int(np.argmax(ta))]
        for ghost in (f_peak - shift * chan_mhz, f_peak + shift * chan_mhz):
            use &= np.abs(axis - ghost) > guard
    fit = fitting.spectral_line(vel[use], ta[use], line_halfwidth_kms=max(20 * chan_kms, 5 * src.width_kms))
    yield from record(REDUCED_STREAM, {"vel_kms": vel, "freq_mhz": axis, "ta_k": ta},
                      {"vel_kms": "km/s", "freq_mhz": "MHz", "ta_k": "K"})
    return {"line_vlsr_kms": fit.vlsr_kms, "line_vlsr_err_kms": fit.vlsr_err_kms, "line_peak_k": fit.peak_k,
            "line_fwhm_kms": fit.fwhm_kms, "rms_k": fit.rms_k, "snr": fit.snr, "channel_kms": chan_kms,
            "channel_mhz": chan_mhz, "vlsr_catalog_kms": src.vlsr_kms,
            "line_offset_channels": (fit.vlsr_kms - src.vlsr_kms) / chan_kms, "rest_mhz": rest,
            "vlsr_corr_kms": corr_mid, "t_mid": t_mid, "tsys_k": float(np.mean([r["tsys"] for r in on_source])),
            "mode": mode, "integration_s": t_int * len(on_source),
            "n_integrations": len(got["sig"]) + len(got["ref"]), **extra}
