"""Quick-look analyses of archived runs, one per plan: results (numbers/text) and a matplotlib figure.

Each analysis takes a run read back from the archive (a databroker ``BlueskyRun``), its start document and
the site (receiver gains, beam widths, location) and returns ``(results, figure)``.  Figures are plain
``matplotlib.figure.Figure`` objects on the Agg canvas (no pyplot, no GUI: safe in a worker thread).
The streams and data keys read are those the plans write (docs/quicklook.md lists them).

Units follow the result names: ``_k`` K, ``_deg`` deg (true angle unless ``_coord``), ``_jy`` Jy, ``_s`` s,
``_kms`` km/s, ``_mhz`` MHz, ``_mjd`` MJD (d), ``_ms`` ms; ``tau_zenith`` in nepers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np

from archiver import fitting
from archiver.queries import run_data

Results = dict[str, Any]
Analysis = Callable[[Any, dict, Any], tuple[Results, Any]]

#: tolerance (in beams) for a fly sample to count as on a cross-scan cut (as the plans select them)
CUT_TOLERANCE_BEAMS = 0.02


# ---- reading ----------------------------------------------------------------------------------------------
def column(ds: Any, key: str) -> np.ndarray:
    """Data key ``key`` of a stream as a float array; ``KeyError`` naming the keys there are."""
    if key not in ds.data_vars:
        raise KeyError(f"no data key {key!r} in the stream; keys: {sorted(ds.data_vars)}")
    return np.asarray(ds[key].values, dtype=float)


def _first_event(run: Any, stream: str, key: str) -> np.ndarray:
    """The value of ``key`` in the first event of ``stream`` as a float array, read as an array (a square 2-D
    value would get duplicate dimension names in an xarray Dataset)."""
    if stream not in list(run):
        raise KeyError(f"run {run.metadata['start']['uid'][:8]} has no stream {stream!r}; streams: {list(run)}")
    node = run[stream]
    if key not in list(node):
        raise KeyError(f"no data key {key!r} in the stream {stream!r}; keys: {sorted(node)}")
    return np.asarray(node[key].read()[0], dtype=float)


def achieved(run: Any) -> Results:
    """The plan's own ``achieved`` event as a plain dict (key prefix removed); empty when there is none."""
    if "achieved" not in list(run):
        return {}
    ds = run_data(run, "achieved")
    out: Results = {}
    for key, var in ds.data_vars.items():
        if var.size == 0:
            continue
        v = var.values[0]
        out[key.removeprefix("achieved_")] = v.item() if np.ndim(v) == 0 else np.asarray(v)
    return out


def _receiver(start: dict, site: Any) -> Any:
    name = start.get("receiver")
    if not name:
        raise ValueError("the start document names no receiver: gain and beam width unknown")
    return site.receiver(name)


def _source_hadec(start: dict, site: Any, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apparent HA/Dec (deg) of the run's source (start ra_deg/dec_deg) at times ``t`` (linear between ends)."""
    from obsctl import astro

    if start.get("ra_deg") is None or start.get("dec_deg") is None:
        raise ValueError("the start document has no ra_deg/dec_deg: the source position is unknown")
    t = np.asarray(t, float)
    ends = np.array([t.min(), max(t.max(), t.min() + 1.0)])
    ha, dec = astro.apparent_hadec(astro.parse_radec(start["ra_deg"], start["dec_deg"]), ends,
                                   astro.site_location(site))
    ha = np.unwrap(np.radians(np.asarray(ha, float)))
    return (np.degrees(np.interp(t, ends, ha)) + 180.0) % 360.0 - 180.0, np.interp(t, ends, np.asarray(dec))


def _wrap180(a: np.ndarray) -> np.ndarray:
    return (np.asarray(a, float) + 180.0) % 360.0 - 180.0


def _mean_t(ds: Any) -> np.ndarray:
    """Mean of the two DVM channels (K)."""
    return (column(ds, "radiometer_dvm1") + column(ds, "radiometer_dvm2")) / 2.0


# ---- figures ----------------------------------------------------------------------------------------------
def new_figure(start: dict, nrows: int = 2, ncols: int = 1, height: float = 6.5, **kw: Any) -> tuple[Any, Any]:
    """A Figure on the Agg canvas with a title naming the run; returns (figure, axes)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    when = datetime.fromtimestamp(start.get("time", 0.0), tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    fig.suptitle(f"{start.get('plan_name', '?')}  {start.get('source') or ''}  {start.get('receiver') or ''}  "
                 f"{when}  run {str(start.get('uid', ''))[:8]}", fontsize=10)
    return fig, axes


def annotate(ax: Any, results: Results, keys: list[str]) -> None:
    """A box listing ``keys`` of ``results`` in the top-left corner of ``ax``."""
    lines = []
    for k in keys:
        v = results.get(k)
        if isinstance(v, float):
            lines.append(f"{k} = {v:.10f}" if abs(v) >= 1e4 else f"{k} = {v:.5g}")  # e.g. MJD to ~10 us
        elif v is not None:
            lines.append(f"{k} = {v}")
    ax.text(0.02, 0.97, "\n".join(lines), transform=ax.transAxes, va="top", ha="left", fontsize=8,
            family="monospace", bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8})


def _gauss(x: np.ndarray, fit: fitting.GaussFit) -> np.ndarray:
    return (fit.peak * np.exp(-fitting.FOUR_LN2 * ((x - fit.centre) / fit.fwhm) ** 2) + fit.base
            + fit.slope * (x - fit.centre))


def _scan_panel(ax: Any, rax: Any, x: np.ndarray, y: np.ndarray, fit: fitting.GaussFit, label: str) -> None:
    """Data, fitted Gaussian + baseline, and residuals of one scan."""
    order = np.argsort(x)
    ax.plot(x, y, ".", ms=2, color="tab:blue", label="samples")
    ax.plot(x[order], _gauss(x[order], fit), "-", color="tab:red", lw=1.2, label="Gaussian + baseline")
    ax.set_ylabel("T (K)")
    ax.legend(loc="upper right", fontsize=8)
    rax.plot(x, y - _gauss(x, fit), ".", ms=2, color="tab:gray")
    rax.axhline(0.0, color="k", lw=0.5)
    rax.set_xlabel(label)
    rax.set_ylabel("residual (K)")


# ---- continuum --------------------------------------------------------------------------------------------
def drift_scan(run: Any, start: dict, site: Any) -> tuple[Results, Any]:
    """Gaussian fit of the drift through the beam: peak, flux (peak / gain), offset and width (deg)."""
    s = run_data(run, "samples")
    t, ha, tk = column(s, "radiometer_t"), column(s, "radiometer_ha"), _mean_t(s)
    rx = _receiver(start, site)
    fwhm0 = site.beam_fwhm_deg(rx.freq_mhz)
    hs, ds = _source_hadec(start, site, t)
    diff = _wrap180(np.median(ha) - hs)
    if not np.all(np.diff(-diff) > 0):
        raise ValueError("drift scan: the source's hour angle does not increase through the samples")
    transit = float(np.interp(0.0, -diff, t))
    dec = float(np.mean(ds))
    fit = fitting.drift_scan(t, tk, transit, dec, rx.gain_k_per_jy, fwhm0)
    scale = fitting.SIDEREAL_DEG_PER_S * math.cos(math.radians(dec))
    res: Results = {"peak_k": fit.peak_k, "peak_err_k": fit.peak_err_k, "flux_jy": fit.flux_jy,
                    "offset_deg": fit.offset_deg, "offset_err_deg": fit.offset_err_deg, "fwhm_deg": fit.fwhm_deg,
                    "beam_fwhm_deg": fwhm0, "rms_k": fit.rms_k, "gain_k_per_jy": rx.gain_k_per_jy,
                    "transit_t": transit, "dec_offset_deg": float(np.median(column(s, "radiometer_dec")) - dec),
                    "el_deg": float(np.mean(column(s, "radiometer_el"))), "n_samples": int(t.size)}
    x = (t - transit) * scale
    g = fitting.fit_gaussian(x, tk, fwhm0, "drift scan")
    fig, ax = new_figure(start, height_ratios=[3, 1], sharex=True)
    _scan_panel(ax[0, 0], ax[1, 0], x, tk, g, "position relative to the source (deg, true angle; + later)")
    annotate(ax[0, 0], res, ["peak_k", "flux_jy", "offset_deg", "fwhm_deg", "rms_k", "n_samples"])
    return res, fig


def _cuts(start: dict, site: Any, s: Any, fwhm: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The HA and Dec cuts of a fly cross scan: (offset deg true angle, T) each, split at the window gap."""
    t, ha, dec, tk = column(s, "radiometer_t"), column(s, "radiometer_ha"), column(s, "radiometer_dec"), _mean_t(s)
    order = np.argsort(t)
    t, ha, dec, tk = t[order], ha[order], dec[order], tk[order]
    if t.size < 20:
        raise ValueError(f"cross scan: only {t.size} samples")
    gaps = np.diff(t)
    split = int(np.argmax(gaps)) + 1          # the HA window first, then the Dec window
    if gaps[split - 1] < 3 * np.median(gaps):
        raise ValueError("cross scan: cannot tell the HA scan's samples from the Dec scan's (no gap between)")
    hs, ds = _source_hadec(start, site, t)
    cosd = math.cos(math.radians(float(np.mean(ds))))
    dha, ddec = _wrap180(ha - hs) * cosd, dec - ds
    tol = CUT_TOLERANCE_BEAMS * fwhm
    window = np.arange(t.size) < split
    on_ha = window & (np.abs(ddec) < tol)
    on_dec = ~window & (np.abs(dha) < tol)
    return {"ha": (dha[on_ha], tk[on_ha]), "dec": (ddec[on_dec], tk[on_dec])}


def cross_scan(run: Any, start: dict, site: Any) -> tuple[Results, Any]:
    """Gaussian fits of the HA and Dec cuts; each peak corrected for the other axis' offset."""
    rx = _receiver(start, site)
    fwhm0 = site.beam_fwhm_deg(rx.freq_mhz)
    cuts = _cuts(start, site, run_data(run, "samples"), fwhm0)
    (xh, yh), (xd, yd) = cuts["ha"], cuts["dec"]
    ha, de = fitting.cross_scan(xh, yh, xd, yd, 0.0, rx.gain_k_per_jy, fwhm0)  # HA offsets already true angle
    res: Results = {"peak_k": (ha.peak_k + de.peak_k) / 2, "flux_jy": (ha.flux_jy + de.flux_jy) / 2,
                    "ha_peak_k": ha.peak_k, "dec_peak_k": de.peak_k, "ha_offset_deg": ha.offset_deg,
                    "ha_offset_err_deg": ha.offset_err_deg, "dec_offset_deg": de.offset_deg,
                    "dec_offset_err_deg": de.offset_err_deg, "ha_fwhm_deg": ha.fwhm_deg, "dec_fwhm_deg": de.fwhm_deg,
                    "ha_flux_jy": ha.flux_jy, "dec_flux_jy": de.flux_jy, "ha_rms_k": ha.rms_k, "dec_rms_k": de.rms_k,
                    "beam_fwhm_deg": fwhm0, "gain_k_per_jy": rx.gain_k_per_jy,
                    "ha_n_samples": int(xh.size), "dec_n_samples": int(xd.size)}
    fig, ax = new_figure(start, 2, 2, height_ratios=[3, 1])
    for col, (axis, (x, y)) in enumerate(cuts.items()):
        g = fitting.fit_gaussian(x, y, fwhm0, f"{axis} scan")
        _scan_panel(ax[0, col], ax[1, col], x, y, g, f"{axis.upper()} offset (deg, true angle)")
        ax[0, col].set_title(f"{axis.upper()} scan", fontsize=9)
        annotate(ax[0, col], res, [f"{axis}_peak_k", f"{axis}_offset_deg", f"{axis}_fwhm_deg", f"{axis}_flux_jy"])
    return res, fig


def _offsets(p: Any) -> tuple[np.ndarray, np.ndarray]:
    """Commanded HA/Dec offsets (coordinate deg) of each event of a step plan's primary stream."""
    return column(p, "drive_off_ha"), column(p, "drive_off_dec")


def pointing_check(run: Any, start: dict, site: Any) -> tuple[Results, Any]:
    """Pointing offsets: cross method as :func:`cross_scan`; five-point from the six integrations."""
    method = (start.get("plan_args") or {}).get("method", "cross")
    if method == "cross":
        res, fig = cross_scan(run, start, site)
        cosd = math.cos(math.radians(start["dec_deg"]))
        res["ha_offset_coord_deg"] = res["ha_offset_deg"] / cosd
        return res, fig
    rx = _receiver(start, site)
    fwhm = site.beam_fwhm_deg(rx.freq_mhz)
    p = run_data(run, "primary")
    oha, odec = _offsets(p)
    tk = _mean_t(p)
    cosd = math.cos(math.radians(start["dec_deg"]))
    x, y = oha * cosd, odec
    if x.size < 6:
        raise ValueError(f"five-point: expected 6 integrations, got {x.size}")
    ref = int(np.argmax(np.hypot(x, y)))
    rel = tk - tk[ref]
    d = float(np.median(np.hypot(x, y)[np.hypot(x, y) > 1e-6 * fwhm][:5])) if x.size else fwhm / 2

    def at(px: float, py: float) -> float:
        return float(rel[int(np.argmin(np.hypot(x - px, y - py)))])

    on, north, south = at(0, 0), at(0, d), at(0, -d)
    low_ha, high_ha = at(-d, 0), at(d, 0)
    ex, ey = fitting.five_point(d, on, north, south, high_ha, low_ha, fwhm)
    res = {"ha_offset_deg": ex, "dec_offset_deg": ey, "ha_offset_coord_deg": ex / cosd, "peak_k": on,
           "flux_jy": on / rx.gain_k_per_jy, "step_deg": d, "beam_fwhm_deg": fwhm, "ref_k": float(tk[ref])}
    fig, ax = new_figure(start, 1, 1, height=6.0)
    a = ax[0, 0]
    sel = np.arange(x.size) != ref
    sc = a.scatter(x[sel], y[sel], c=rel[sel], s=400, cmap="viridis")
    fig.colorbar(sc, ax=a, label="T - T(reference) (K)")
    a.plot([ex], [ey], "r+", ms=18, mew=2, label="fitted source position")
    a.set_xlabel("HA offset (deg, true angle)")
    a.set_ylabel("Dec offset (deg)")
    a.set_aspect("equal")
    a.legend(loc="lower right", fontsize=8)
    annotate(a, res, ["ha_offset_deg", "dec_offset_deg", "peak_k", "flux_jy"])
    return res, fig


def _on_off_figure(start: dict, tk: np.ndarray, on: np.ndarray, labels: tuple[str, str], xlabel: str,
                   res: Results, keys: list[str]) -> Any:
    """The temperature (K) of each integration of an on/off sequence, on and off marked, results annotated."""
    fig, ax = new_figure(start, 1, 1, height=5.5)
    a = ax[0, 0]
    n = np.arange(tk.size)
    a.plot(n, tk, "-", color="0.7")
    a.plot(n[on], tk[on], "o", color="tab:red", label=labels[0])
    a.plot(n[~on], tk[~on], "s", color="tab:blue", label=labels[1])
    a.set_xticks(n)
    a.set_xlabel(xlabel)
    a.set_ylabel("T (K)")
    a.legend(loc="center right", fontsize=8)
    annotate(a, res, keys)
    return fig


def stepping(run: Any, start: dict, site: Any) -> tuple[Results, Any]:
    """On/off flux: on minus the mean of the neighbouring offs, per cycle."""
    rx = _receiver(start, site)
    p = run_data(run, "primary")
    oha, odec = _offsets(p)
    tk = _mean_t(p)
    on = (np.abs(oha) < 1e-6) & (np.abs(odec) < 1e-6)
    deltas = []
    for i in np.flatnonzero(on):
        offs = [tk[j] for j in (i - 1, i + 1) if 0 <= j < tk.size and not on[j]]
        if offs:
            deltas.append(tk[i] - float(np.mean(offs)))
    if not deltas:
        raise ValueError("stepping: no on-source integration with an off-source neighbour")
    ta = float(np.mean(deltas))
    err = float(np.std(deltas, ddof=1) / math.sqrt(len(deltas))) if len(deltas) > 1 else math.nan
    res = {"ta_k": ta, "ta_err_k": err, "flux_jy": ta / rx.gain_k_per_jy, "cycles": len(deltas),
           "gain_k_per_jy": rx.gain_k_per_jy, "off_k": float(np.mean(tk[~on]))}
    return res, _on_off_figure(start, tk, on, ("on source", "off source"), "integration", res,
                               ["ta_k", "ta_err_k", "flux_jy", "cycles"])


def tsys_cal(run: Any, start: dict, site: Any) -> tuple[Results, Any]:
    """Tsys = T_diode * off / (on - off) from the noise-diode phases."""
    p = run_data(run, "primary")
    tk = _mean_t(p)
    on = column(p, "instrumentation_nd_sel_rbv") != 0
    diode_k = float(np.median(column(p, "instrumentation_nd_k")[on])) if on.any() else math.nan
    cal = fitting.tsys_from_diode(tk[~on], tk[on], diode_k)
    res = {"tsys_k": cal.tsys_k, "tsys_err_k": cal.tsys_err_k, "diode_k": diode_k, "k_per_count": cal.k_per_count,
           "off_k": float(np.mean(tk[~on])), "on_k": float(np.mean(tk[on])), "n_on": int(on.sum()),
           "n_off": int((~on).sum())}
    return res, _on_off_figure(start, tk, on, (f"diode on ({diode_k:.3g} K)", "diode off"), "phase", res,
                               ["tsys_k", "tsys_err_k", "diode_k", "k_per_count"])


def sky_dip(run: Any, start: dict, site: Any) -> tuple[Results, Any]:
    """Zenith opacity from T(el) = T0 + T_atm (1 - exp(-tau / sin el))."""
    p = run_data(run, "primary")
    el, tk = column(p, "radiometer_el"), _mean_t(p)
    t_atm = float((start.get("plan_args") or {}).get("t_atm_k") or 270.0)
    fit = fitting.tau_from_skydip(el, tk, t_atm)
    res = {"tau_zenith": fit.tau_zenith, "tau_err": fit.tau_err, "t_zero_airmass_k": fit.t_zero_airmass_k,
           "rms_k": fit.rms_k, "t_atm_k": t_atm, "n_points": int(el.size), "el_min_deg": float(el.min()),
           "el_max_deg": float(el.max())}
    fig, ax = new_figure(start, 1, 1, height=5.5)
    a = ax[0, 0]
    am = 1.0 / np.sin(np.radians(el))
    grid = np.linspace(1.0, max(am.max(), 1.5), 200)
    a.plot(am, tk, "o", color="tab:blue", label="measured")
    a.plot(grid, fit.t_zero_airmass_k + t_atm * (1 - np.exp(-fit.tau_zenith * grid)), "-", color="tab:red",
           label="fit")
    a.set_xlabel("airmass (1 / sin el)")
    a.set_ylabel("T (K)")
    a.legend(loc="lower right", fontsize=8)
    annotate(a, res, ["tau_zenith", "tau_err", "t_zero_airmass_k", "rms_k"])
    return res, fig


# ---- spectral line ----------------------------------------------------------------------------------------
def baseline_subtract(vel_kms: np.ndarray, spec_k: np.ndarray, order: int = 2, half_kms: float | None = None,
                      clip: float = 4.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Polynomial baseline fitted on line-free channels: ``(spectrum - baseline, baseline, line_free, rms)``.

    Line-free channels lie more than ``half_kms`` (default 20 channels or 5 % of the band) from the strongest
    channel and within ``clip`` rms of the baseline (iterated: frequency-switching ghosts and other lines are
    left out too).  ``vel_kms`` must be finite and sorted.
    """
    v, s = np.asarray(vel_kms, float), np.asarray(spec_k, float)
    chan = float(np.median(np.abs(np.diff(v))))
    half = half_kms if half_kms is not None else max(20 * chan, 0.05 * float(np.ptp(v)))
    u = (v - v.mean()) / max(float(np.ptp(v)) / 2, 1e-12)  # scaled axis: a well-conditioned fit
    i = int(np.argmax(s - np.median(s)))
    outside = np.abs(v - v[i]) > half
    free = outside.copy()
    for _ in range(6):
        if free.sum() < order + 4:
            raise ValueError(f"spectrum: only {int(free.sum())} line-free channels for an order-{order} baseline")
        base = np.polyval(np.polyfit(u[free], s[free], order), u)
        resid = s - base
        rms = float(np.std(resid[free]))
        new = outside & (np.abs(resid) < clip * rms)
        if np.array_equal(new, free):
            break
        free = new
    return resid, base, free, rms


def spectroscopy(run: Any, start: dict, site: Any) -> tuple[Results, Any]:
    """Baseline-subtracted spectrum (``reduced`` stream): line velocity, peak, width, rms, integral."""
    r = run_data(run, "reduced")
    vel, ta = column(r, "reduced_vel_kms")[0], column(r, "reduced_ta_k")[0]
    good = np.isfinite(vel) & np.isfinite(ta)
    if good.sum() < 16:
        raise ValueError(f"spectrum: only {int(good.sum())} finite channels")
    order = np.argsort(vel[good])
    v, s = vel[good][order], ta[good][order]
    resid, base, free, rms = baseline_subtract(v, s)
    chan = float(np.median(np.abs(np.diff(v))))
    i = int(np.argmax(np.where(free, -np.inf, resid)))
    half = max(20 * chan, 0.05 * float(np.ptp(v)))
    near = np.abs(v - v[i]) <= half
    fit = fitting.fit_gaussian(v[near], resid[near], 4 * chan, "line")
    window = np.abs(v - fit.centre) <= max(1.5 * fit.fwhm, 3 * chan)
    cat = (start.get("requested") or {}).get("vlsr_kms")
    res: Results = {"line_vlsr_kms": fit.centre, "line_vlsr_err_kms": fit.centre_err, "line_peak_k": fit.peak,
                    "line_fwhm_kms": fit.fwhm, "rms_k": rms, "snr": fit.peak / rms if rms > 0 else math.inf,
                    "integral_k_kms": float(np.sum(resid[window]) * chan), "channel_kms": chan,
                    "n_line_free": int(free.sum()), "baseline_order": 2, "n_channels": int(v.size)}
    if isinstance(cat, (int, float)):
        res["vlsr_catalog_kms"] = float(cat)
        res["vlsr_offset_kms"] = fit.centre - float(cat)
    fig, ax = new_figure(start, 2, 2, height=7.0)
    a, b, c = _span_top(fig, ax), ax[1, 0], ax[1, 1]
    a.plot(v, s, "-", lw=0.7, color="tab:blue", label="source - reference")
    a.plot(v, base, "-", lw=1.0, color="tab:orange", label="baseline (order 2)")
    a.plot(v[~free], s[~free], ".", ms=1.5, color="tab:red", label="excluded from the baseline")
    a.set_xlabel("V_LSR (km/s, radio)")
    a.set_ylabel("T_A (K)")
    a.legend(loc="upper right", fontsize=8)
    annotate(a, res, ["line_vlsr_kms", "line_peak_k", "line_fwhm_kms", "rms_k", "snr", "integral_k_kms"])
    b.plot(v, resid, "-", lw=0.6, color="k")
    b.axhspan(-rms, rms, color="0.85", zorder=0, label="+- rms")
    b.set_ylim(-8 * rms, 8 * rms)
    b.set_title("baseline-subtracted, whole band (line clipped)", fontsize=9)
    b.set_xlabel("V_LSR (km/s, radio)")
    b.set_ylabel("T_A (K)")
    b.legend(loc="upper right", fontsize=8)
    zoom = np.abs(v - fit.centre) <= max(6 * fit.fwhm, 10 * chan)
    c.plot(v[zoom], resid[zoom], ".-", lw=0.6, ms=3, color="k", label="baseline-subtracted")
    c.plot(v[zoom], _gauss(v[zoom], fit), "-", lw=1.2, color="tab:red", label="Gaussian fit")
    c.set_title("the line", fontsize=9)
    c.set_xlabel("V_LSR (km/s, radio)")
    c.legend(loc="upper right", fontsize=8)
    return res, fig


def _span_top(fig: Any, ax: Any) -> Any:
    """Replace the top row of a 2 x 2 axes grid by one axes spanning it; return that axes."""
    gs = ax[0, 0].get_gridspec()
    ax[0, 0].remove()
    ax[0, 1].remove()
    return fig.add_subplot(gs[0, :])


# ---- pulsar -----------------------------------------------------------------------------------------------
def _key_ending(ds: Any, suffix: str) -> str:
    keys = [k for k in ds.data_vars if k.endswith(suffix)]
    if not keys:
        raise KeyError(f"no data key ending in {suffix!r}; keys: {sorted(ds.data_vars)}")
    return keys[0]


def pulsar_timing(run: Any, start: dict, site: Any) -> tuple[Results, Any]:
    """Folds aligned on the first fold's phase origin and added: S/N, peak phase, width, and the TOA (MJD, UTC):
    the pulse peak nearest the mean of the folds' mid-times."""
    from obsctl import astro

    p = run_data(run, "primary")
    prefix = _key_ending(p, "_profile").removesuffix("profile")
    req = start.get("requested") or {}
    profiles = column(p, prefix + "profile")
    nbins = int(req.get("nbins") or profiles.shape[1])
    profiles = profiles[:, :nbins]
    period = float(np.mean(column(p, prefix + "period_rbv")))
    t0 = (column(p, prefix + "tstart") - 40587.0) * 86400.0  # fold starts, POSIX s
    shifts = ((t0 - t0[0]) / period) % 1.0
    total = fitting.add_profiles(list(profiles), list(shifts))
    peak = fitting.pulse_peak(total)
    fold_s = float(req.get("fold_s") or 0.0) or float(np.median(column(p, prefix + "npulse"))) * period
    t_mid = float(np.mean(t0)) + 0.5 * fold_s  # mean of the folds' mid-times
    t_peak = t0[0] + peak.peak_phase * period
    t_peak += round((t_mid - t_peak) / period) * period
    fold_snr = column(p, prefix + "snr")
    res: Results = {"snr": peak.snr, "pulse_phase": peak.peak_phase, "width_ms": 1e3 * peak.fwhm_phase * period,
                    "toa_mjd": float(astro.mjd(t_peak)), "period_s": period, "n_folds": int(profiles.shape[0]),
                    "nbins": nbins, "fold_snr_min": float(fold_snr.min()), "fold_snr_max": float(fold_snr.max()),
                    "off_rms_k": peak.off_rms}
    fig, ax = new_figure(start, 2, 2, height=7.0, height_ratios=[3, 2])
    a, b, c = _span_top(fig, ax), ax[1, 0], ax[1, 1]
    phase = (np.arange(nbins) + 0.5) / nbins
    mean = total / profiles.shape[0]
    mean = mean - np.median(mean)
    for k, prof in enumerate(profiles):
        aligned = fitting.shift_profile(prof, shifts[k])
        a.plot(phase, aligned - np.median(aligned), "-", lw=0.5, color="0.7", label="folds" if k == 0 else None)
    a.plot(phase, mean, "-", lw=1.3, color="tab:blue", label=f"mean of {profiles.shape[0]} aligned folds")
    a.axvline(peak.peak_phase, color="tab:red", lw=0.8, ls="--", label="peak")
    a.set_xlabel("pulse phase (turns, origin: start of the first fold)")
    a.set_ylabel("T - off-pulse median (K)")
    a.legend(loc="upper right", fontsize=8)
    annotate(a, res, ["snr", "pulse_phase", "width_ms", "toa_mjd", "period_s"])
    dphase = (phase - peak.peak_phase + 0.5) % 1.0 - 0.5
    near = np.abs(dphase) <= max(4 * peak.fwhm_phase, 8 / nbins)
    order = np.argsort(dphase[near])
    b.plot(1e3 * period * dphase[near][order], mean[near][order], ".-", ms=3, lw=0.8, color="tab:blue")
    b.set_xlabel("time from the peak (ms)")
    b.set_ylabel("T (K)")
    b.set_title("the pulse", fontsize=9)
    c.bar(np.arange(1, fold_snr.size + 1), fold_snr, color="tab:blue")
    c.set_xticks(np.arange(1, fold_snr.size + 1))
    c.set_xlabel("fold")
    c.set_ylabel("timer S/N")
    c.set_title("S/N of each fold", fontsize=9)
    return res, fig


# ---- maps -------------------------------------------------------------------------------------------------
def _gauss2d(xy: tuple[np.ndarray, np.ndarray], amp: float, x0: float, y0: float, fx: float, fy: float) -> np.ndarray:
    """Elliptical Gaussian (axes along x and y) on a zero baseline: the grid has its baseline removed."""
    x, y = xy
    return amp * np.exp(-fitting.FOUR_LN2 * (((x - x0) / fx) ** 2 + ((y - y0) / fy) ** 2))


def map_grid(run: Any, start: dict, site: Any) -> tuple[Results, Any]:
    """The gridded map (``grid`` stream): maximum, half-power centroid and width, rms; a raster map of a point
    source also gets a 2-D Gaussian fit of the grid (peak, position, widths, flux = peak / gain)."""
    from scipy.optimize import curve_fit

    xs, ys, img = (_first_event(run, "grid", f"grid_{k}") for k in ("x_deg", "y_deg", "t_k"))
    if img.shape != (ys.size, xs.size) or not np.isfinite(img).any():
        raise ValueError(f"map: grid of shape {img.shape} for {ys.size} x {xs.size} cells, or no finite cell")
    j, i = np.unravel_index(int(np.nanargmax(img)), img.shape)
    peak = float(img[j, i])
    cell = float(np.median(np.abs(np.diff(xs)))) if xs.size > 1 else math.nan
    cell_y = float(np.median(np.abs(np.diff(ys)))) if ys.size > 1 else cell
    xx, yy = np.meshgrid(xs, ys)
    hp = np.nan_to_num(img, nan=-np.inf) >= peak / 2
    w = np.where(hp, img, 0.0)
    area = float(hp.sum()) * cell * cell_y
    rx = _receiver(start, site)
    beam = site.beam_fwhm_deg(rx.freq_mhz)
    far = np.hypot(xx - xs[i], yy - ys[j]) > max(1.5 * beam, math.sqrt(area / math.pi) + beam)  # < 0.2 % of peak
    far &= np.isfinite(img)
    res: Results = {"peak_k": peak, "peak_x_deg": float(xs[i]), "peak_y_deg": float(ys[j]),
                    "centroid_x_deg": float(np.sum(w * xx) / np.sum(w)),
                    "centroid_y_deg": float(np.sum(w * yy) / np.sum(w)), "hpw_deg": 2 * math.sqrt(area / math.pi),
                    "rms_k": float(np.std(img[far])) if far.sum() > 4 else math.nan, "nx": int(xs.size),
                    "ny": int(ys.size), "cell_deg": cell, "beam_fwhm_deg": beam}
    if start.get("plan_name") == "raster_map":
        near = np.isfinite(img) & (np.hypot(xx - xs[i], yy - ys[j]) <= 1.5 * beam)
        try:
            popt, _ = curve_fit(_gauss2d, (xx[near], yy[near]), img[near],
                                   p0=[peak, xs[i], ys[j], beam, beam], maxfev=20000)
            res.update(fit_peak_k=float(popt[0]), fit_x_deg=float(popt[1]), fit_y_deg=float(popt[2]),
                       fit_fwhm_x_deg=abs(float(popt[3])), fit_fwhm_y_deg=abs(float(popt[4])),
                       flux_jy=float(popt[0]) / rx.gain_k_per_jy)
        except (RuntimeError, TypeError) as err:  # too few cells or no convergence: the map is still shown
            res["fit_error"] = str(err)
    fig, ax = new_figure(start, 1, 1, height=7.0)
    a = ax[0, 0]
    half_x, half_y = cell / 2, cell_y / 2
    im = a.imshow(img, origin="lower", cmap="inferno", interpolation="nearest", aspect="equal",
                  extent=(xs[0] - half_x, xs[-1] + half_x, ys[0] - half_y, ys[-1] + half_y))
    fig.colorbar(im, ax=a, label="T_A above baseline (K)")
    a.contour(xs, ys, np.nan_to_num(img, nan=0.0), levels=[peak / 2], colors="cyan", linewidths=0.8)
    a.plot([res["centroid_x_deg"]], [res["centroid_y_deg"]], "c+", ms=14, mew=1.5)
    a.set_xlabel("x: HA offset x cos Dec (deg, + west)")
    a.set_ylabel("y: Dec offset (deg, + north)")
    annotate(a, res, ["peak_k", "centroid_x_deg", "centroid_y_deg", "hpw_deg", "rms_k", "fit_peak_k", "flux_jy"])
    return res, fig


#: quick-look analysis by plan name
ANALYSES: dict[str, Analysis] = {
    "drift_scan": drift_scan, "cross_scan": cross_scan, "pointing_check": pointing_check, "stepping": stepping,
    "tsys_cal": tsys_cal, "sky_dip": sky_dip, "spectroscopy": spectroscopy, "pulsar_timing": pulsar_timing,
    "raster_map": map_grid, "sun_moon_map": map_grid,
}
