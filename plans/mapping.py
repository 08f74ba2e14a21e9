"""Mapping plans: on-the-fly raster maps of a source and maps of the sun or the moon.

A map is a raster of rows scanned on the fly in offsets from the target (the drive's offset scan), the rows
``row_spacing_deg`` apart (default half a beam, about Nyquist: lambda / 2D = 0.42 beam).  Rows alternate in
direction (boustrophedon): each turnaround is a short step across to the next row, with no fly-back.  One
fly window covers the whole map, so every radiometer sample is kept (stream ``samples``, collected while
the telescope moves), the turnarounds included.

The samples on the rows (within a tenth of the row spacing of a row; the steps between rows are left out,
as are samples without a drive position, with a diode on, or with a clipped DVM) are reduced to true-angle
offsets from the target's apparent place (``x`` = HA offset x cos(Dec), positive towards larger HA, i.e.
west; ``y`` = Dec offset, positive north), a baseline plane is removed, and they are gridded with a Gaussian
kernel of a third of a beam (FWHM; cells of half the row spacing) into ONE event of the stream ``grid``:
``grid_x_deg`` (nx), ``grid_y_deg`` (ny), ``grid_t_k`` ((ny, nx), antenna temperature above the baseline, K;
NaN where no sample lies within reach of the kernel).  The gridded map is slightly broader than the beam
(x 1.05); the fitted quantities come from the samples themselves.

Like the continuum plans (:mod:`plans.continuum`) each plan writes the observing log into the start document,
records what it achieved as one event of the stream ``achieved`` and returns it, leaves the telescope safe
however it ends, and is not rewound after a suspension (a row cut short stays short; the map goes on with the
next row).  Units: angles in deg (true angle unless named coordinate), temperatures in K on the radiometer's
scale, times in s of observatory time, flux densities in Jy; the atmosphere's attenuation is not removed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
from bluesky import plan_stubs as bps
from bluesky import preprocessors as bpp
from bluesky.utils import Msg
from scipy import ndimage
from scipy.optimize import curve_fit
from scipy.special import erf

from devices.drive import Drive
from devices.instrumentation import Instrumentation
from devices.radiometer import Radiometer
from obsctl import astro, blocks
from obsctl.site import MountConfig, Site
from plans.metadata import ObsMeta
from plans.runs import (
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
from plans.stubs import CLEANUP_ACTIONS, Command, collect_samples, offset_scan, record, run_command

FOUR_LN2 = 4.0 * math.log(2.0)
DIRECTIONS = ("ha", "dec")
MAP_BODIES = ("sun", "moon")
KERNEL_BEAMS = 1.0 / 3.0  #: gridding kernel FWHM (beams)
MAX_ROWS = 500
MAX_AVG = 1000  #: the radiometer's largest averaging (AVG_SP)
MIN_CELLS = 17  #: grid cells a side at least (the run archive keeps only arrays of > 16 values as arrays)
MAX_OFFSET_DEG = 10.0  #: the drive's offset setpoint range (coordinate deg)
CLIPPED = blocks.FLAG_DVM1_CLIP | blocks.FLAG_DVM2_CLIP
BAD_FLAGS = blocks.FLAG_DIODE_ON | CLIPPED | blocks.FLAG_DVM1_NODATA | blocks.FLAG_DVM2_NODATA
K_B, C_M_S, JY = 1.380649e-23, 299_792_458.0, 1e-26
_DEG_KEYS = ("peak_x_deg peak_y_deg peak_x_err_deg peak_y_err_deg fwhm_x_deg fwhm_y_deg row_length_deg row_spacing_deg "
             "cell_deg centre_x_deg centre_y_deg hpw_deg diameter_deg diameter_ephem_deg width_deg height_deg")
MAP_UNITS = {**dict.fromkeys(_DEG_KEYS.split(), "deg"), "centre_ta_k": "K", "tb_centre_k": "K", "row_duration_s": "s"}


# ---- geometry --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MapGeometry:
    """The rows of a raster map.

    ``width``/``height``: extent in x (HA) and y (Dec), true angle (deg); rows run along ``direction``
    (``"ha"``: along x, stepping in y) for ``duration`` s each, ``spacing`` deg apart, centred on the target;
    ``cosd`` converts true-angle HA offsets to coordinate degrees.
    """

    width: float
    height: float
    spacing: float
    duration: float
    direction: str
    rows: int
    cosd: float

    @property
    def length(self) -> float:
        """Row length (deg, true angle)."""
        return self.width if self.direction == "ha" else self.height

    def perp(self, k: int) -> float:
        """Cross-row position of row ``k`` (deg, true angle)."""
        return (k - (self.rows - 1) / 2.0) * self.spacing

    def row(self, k: int) -> tuple[float, float, float, float]:
        """Start offsets and rates of row ``k`` in drive coordinates: (off_ha, off_dec, rate_ha, rate_dec).

        Rows alternate in direction; HA offsets and rates are coordinate deg and deg/s.
        """
        sign = 1.0 if k % 2 == 0 else -1.0
        start, rate = -sign * self.length / 2.0, sign * self.length / self.duration
        if self.direction == "ha":
            return start / self.cosd, self.perp(k), rate / self.cosd, 0.0
        return self.perp(k) / self.cosd, start, 0.0, rate


def map_geometry(width_deg: float, height_deg: float, spacing_deg: float, duration_s: float, direction: str,
                 dec_deg: float, mount: MountConfig) -> MapGeometry:
    """Validate the map parameters (ValueError naming the bad one) and lay out the rows."""
    for name, v in (("width_deg", width_deg), ("height_deg", height_deg), ("row_spacing_deg", spacing_deg),
                    ("row_duration_s", duration_s)):
        _positive(name, v)
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r} is not 'ha' or 'dec'")
    cosd = math.cos(math.radians(dec_deg))
    if cosd < 0.05:
        raise ValueError(f"Dec {dec_deg:.2f} is too near the pole for HA offsets")
    across = height_deg if direction == "ha" else width_deg
    rows = int(math.floor(across / spacing_deg + 1e-9)) + 1
    if rows < 3:
        raise ValueError(f"row_spacing_deg {spacing_deg:g} gives {rows} rows across {across:g} deg: need >= 3")
    if rows > MAX_ROWS:
        raise ValueError(f"row_spacing_deg {spacing_deg:g} gives {rows} rows: more than {MAX_ROWS}")
    if width_deg / 2 / cosd > MAX_OFFSET_DEG or height_deg / 2 > MAX_OFFSET_DEG:
        raise ValueError(f"map {width_deg:g} x {height_deg:g} deg needs offsets beyond {MAX_OFFSET_DEG:g} deg")
    geo = MapGeometry(float(width_deg), float(height_deg), float(spacing_deg), float(duration_s), direction,
                      rows, cosd)
    axis = mount.ha if direction == "ha" else mount.dec
    rate = geo.length / duration_s / (cosd if direction == "ha" else 1.0)
    if rate > 0.8 * axis.max_rate_deg_s:
        raise ValueError(f"row_duration_s {duration_s:g} needs a scan rate of {rate:.3f} deg/s, more than "
                         f"{0.8 * axis.max_rate_deg_s:g} deg/s: make the rows slower")
    return geo


# ---- reduction -----------------------------------------------------------------------------------------------
def tangent_offsets(ha: np.ndarray, dec: np.ndarray, ha0: np.ndarray, dec0: np.ndarray,
                    cosd: float) -> tuple[np.ndarray, np.ndarray]:
    """True-angle offsets (deg) of pointings from a reference: x = dHA cos(Dec0) (west +), y = dDec."""
    return np.asarray(astro.wrap180(np.asarray(ha) - ha0)) * cosd, np.asarray(dec) - dec0


def fit_plane(x: np.ndarray, y: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Least-squares plane v = a + b x + c y: the coefficients (a, b, c)."""
    a = np.column_stack([np.ones_like(x), x, y])
    return np.linalg.lstsq(a, v, rcond=None)[0]


def plane(coef: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Value of a plane (:func:`fit_plane`) at (x, y)."""
    return coef[0] + coef[1] * x + coef[2] * y


def grid_map(x: np.ndarray, y: np.ndarray, v: np.ndarray, half_x: float, half_y: float, cell: float,
             kernel_fwhm: float, support: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid samples (deg, deg, K) on square cells of ``cell`` deg covering +-half_x, +-half_y.

    Each cell is the mean of the samples within ``support`` deg of its centre, weighted by a Gaussian of
    FWHM ``kernel_fwhm`` (deg); NaN where there is none.  Returns the x axis (nx), y axis (ny), map (ny, nx).
    """
    nx, ny = 2 * int(math.ceil(half_x / cell - 1e-9)) + 1, 2 * int(math.ceil(half_y / cell - 1e-9)) + 1
    xs = (np.arange(nx) - (nx - 1) / 2) * cell
    ys = (np.arange(ny) - (ny - 1) / 2) * cell
    ix, iy = np.rint((x - xs[0]) / cell).astype(int), np.rint((y - ys[0]) / cell).astype(int)
    num, den = np.zeros(nx * ny), np.zeros(nx * ny)
    reach = int(math.ceil(support / cell))
    inv2s2 = FOUR_LN2 / kernel_fwhm**2
    for dj in range(-reach, reach + 1):
        for di in range(-reach, reach + 1):
            gx, gy = ix + di, iy + dj
            ok = (gx >= 0) & (gx < nx) & (gy >= 0) & (gy < ny)
            d2 = (x[ok] - xs[gx[ok]]) ** 2 + (y[ok] - ys[gy[ok]]) ** 2
            w = np.where(d2 <= support**2, np.exp(-np.minimum(d2 * inv2s2, 700.0)), 0.0)
            flat = gy[ok] * nx + gx[ok]
            num += np.bincount(flat, w * v[ok], minlength=nx * ny)
            den += np.bincount(flat, w, minlength=nx * ny)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, num / den, np.nan)
    return xs, ys, out.reshape(ny, nx)


def _gauss2d(xy: tuple[np.ndarray, np.ndarray], amp: float, x0: float, y0: float, fx: float, fy: float,
             c0: float, cx: float, cy: float) -> np.ndarray:
    x, y = xy
    return amp * np.exp(-FOUR_LN2 * (((x - x0) / fx) ** 2 + ((y - y0) / fy) ** 2)) + c0 + cx * x + cy * y


def fit_peak(x: np.ndarray, y: np.ndarray, v: np.ndarray, beam: float, seed: tuple[float, float],
             radius: float) -> tuple[dict[str, float], np.ndarray]:
    """Fit an axis-aligned elliptical 2-D Gaussian + plane to the samples within ``radius`` deg of ``seed``.

    Returns the fit (``peak_k``, ``peak_x_deg``, ``peak_y_deg``, ``fwhm_x_deg``, ``fwhm_y_deg``, their errors
    ``*_err_*`` and the residual ``rms_k``) and the plane's coefficients; ValueError if it fails.
    """
    sel = np.hypot(x - seed[0], y - seed[1]) <= radius
    if sel.sum() < 20:
        raise ValueError(f"peak fit: only {int(sel.sum())} samples within {radius:.3f} deg of the maximum")
    xs, ys, vs = x[sel], y[sel], v[sel]
    base = float(np.percentile(vs, 20))
    p0 = [float(np.max(vs) - base), seed[0], seed[1], beam, beam, base, 0.0, 0.0]
    lo = [-np.inf, seed[0] - radius, seed[1] - radius, 0.2 * beam, 0.2 * beam, -np.inf, -np.inf, -np.inf]
    hi = [np.inf, seed[0] + radius, seed[1] + radius, 10 * beam, 10 * beam, np.inf, np.inf, np.inf]
    try:
        popt, pcov = curve_fit(_gauss2d, (xs, ys), vs, p0=p0, bounds=(lo, hi), maxfev=20000)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"peak fit did not converge ({err})") from None
    err = np.sqrt(np.clip(np.diag(pcov), 0, None)) if np.all(np.isfinite(pcov)) else np.full(8, np.nan)
    names = ("peak_k", "peak_x_deg", "peak_y_deg", "fwhm_x_deg", "fwhm_y_deg")
    fit = {**dict(zip(names, map(float, popt), strict=False)), "peak_err_k": float(err[0]),
           "peak_x_err_deg": float(err[1]), "peak_y_err_deg": float(err[2]),
           "rms_k": float(np.std(vs - _gauss2d((xs, ys), *popt)))}
    return fit, np.asarray(popt[5:8])


def disk_hpw_deg(diameter: float, beam: float) -> float:
    """Half-power width (deg) of a uniform disc of ``diameter`` (deg) seen with a Gaussian beam of FWHM ``beam``.

    The cut through the centre of the disc convolved with the beam, integrated numerically.
    """
    if diameter <= 0:
        return beam
    q = diameter / beam  # in beams
    u = np.linspace(-q / 2, q / 2, max(201, int(q * 20) + 1))
    chord = erf(np.sqrt(np.clip(q * q / 4 - u * u, 0, None)) * math.sqrt(FOUR_LN2))  # beam power across it
    xs = np.concatenate([[0.0], np.linspace(max(q / 2 - 3.0, 0.0), q / 2 + 2.0, 250)])  # centre, then the edge
    prof = np.trapezoid(np.exp(-FOUR_LN2 * (xs[:, None] - u[None, :]) ** 2) * chord, u, axis=1)
    i = 1 + int(np.argmax(prof[1:] < prof[0] / 2))
    return 2.0 * beam * float(np.interp(prof[0] / 2, [prof[i], prof[i - 1]], [xs[i], xs[i - 1]]))


@functools.cache
def _disk_table() -> tuple[np.ndarray, np.ndarray]:
    """Half-power width vs diameter of a uniform disc, both in beams (0 to 30 beams)."""
    q = np.concatenate([np.linspace(0.0, 5.0, 51), np.geomspace(5.2, 30.0, 30)])
    return q, np.array([disk_hpw_deg(v, 1.0) for v in q])


def disk_diameter_deg(hpw: float, beam: float) -> float:
    """Diameter (deg) of the uniform disc whose half-power width with the beam is ``hpw`` (0 if unresolved)."""
    if not math.isfinite(hpw):
        return math.nan
    q, w = _disk_table()
    if hpw / beam >= w[-1]:
        return hpw  # beyond 30 beams the half-power width is the diameter (to < 0.2 %)
    return float(np.interp(hpw / beam, w, q)) * beam if hpw > beam else 0.0


def half_power_region(xs: np.ndarray, ys: np.ndarray, grid: np.ndarray, level: float, near: tuple[float, float],
                      upsample: int = 4) -> tuple[float, float, float]:
    """(area deg^2, centroid x, centroid y) of the connected region of ``grid`` >= ``level`` nearest ``near``.

    The map is interpolated linearly on cells ``upsample`` times finer first (NaN cells count as 0).
    """
    fine = ndimage.zoom(np.nan_to_num(grid, nan=0.0), upsample, order=1, grid_mode=False)
    fx = np.linspace(xs[0], xs[-1], fine.shape[1])
    fy = np.linspace(ys[0], ys[-1], fine.shape[0])
    labels, n = ndimage.label(fine >= level)
    if n == 0:
        return math.nan, math.nan, math.nan
    gx, gy = np.meshgrid(fx, fy)
    dist = np.where(labels > 0, np.hypot(gx - near[0], gy - near[1]), np.inf)
    mask = labels == labels.flat[int(np.argmin(dist))]
    cell = (fx[1] - fx[0]) * (fy[1] - fy[0])
    return float(mask.sum() * cell), float(gx[mask].mean()), float(gy[mask].mean())


def body_hadec(ctx: PlanContext, body: str, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apparent HA/Dec (deg) of a solar-system body at times ``t`` (astropy anchors <= 60 s apart, linear)."""
    t = np.asarray(t, float)
    t0, t1 = float(t.min()), max(float(t.max()), float(t.min()) + 1.0)
    anchors = np.linspace(t0, t1, max(3, int((t1 - t0) / 60.0) + 2))
    ha, dec = astro.body_hadec(body, anchors, ctx.loc)
    ha = np.unwrap(np.radians(np.asarray(ha, float)))
    return np.asarray(astro.wrap180(np.degrees(np.interp(t, anchors, ha)))), np.interp(t, anchors, dec)


# ---- the rows ------------------------------------------------------------------------------------------------
def _scan(drive: Drive, row: tuple[float, float, float, float], duration: float,
          sun_obs: bool) -> Generator[Msg, Any, Command]:
    """Plan: start the scan of one row (not waiting); the sun only with the solar-observing permission."""
    off_ha, off_dec, rate_ha, rate_dec = row
    if sun_obs:
        return (yield from run_command(f"{drive.name}_scan", drive.scan, rate_ha=rate_ha, rate_dec=rate_dec,
                                       duration=duration, off_ha=off_ha, off_dec=off_dec, sun_obs=True,
                                       stopper=drive.stop, wait=False))
    return (yield from offset_scan(drive, rate_ha=rate_ha, rate_dec=rate_dec, duration=duration, off_ha=off_ha,
                                   off_dec=off_dec, wait=False))


def _fly_rows(drive: Drive, radiometer: Radiometer, target: str, geo: MapGeometry, beam: float,
              samples_per_beam: float, poll_s: float,
              sun_obs: bool = False) -> Generator[Msg, Any, tuple[dict[str, np.ndarray], dict[str, Any]]]:
    """Settle on the start of the first row, then scan every row in one fly window: the samples and the window.

    The radiometer averages (AVG_SP) so that its samples lie about 1/``samples_per_beam`` beam apart along the
    rows.  Samples are collected while each row is scanned, then the end of the row is awaited directly (a row
    ends ``duration`` s after it starts at the earliest), so the next row follows at once.  However the map
    ends, a drive command still under way is ended (the plan's cleanup then stops the drive: its own STOP does
    not fail the command) and the radiometer's averaging is restored.
    """
    clock = fly_clock(radiometer)
    avg_before = int(radiometer.avg.get())
    want_hz = samples_per_beam * geo.length / geo.duration / beam  # output samples per s of observatory time
    avg = int(min(max(math.floor(float(radiometer.rate.get()) / want_hz), 1), MAX_AVG))
    into: dict[str, list] = {}
    stats: dict[str, Any] = {}
    pending: list[Command] = []

    def fly() -> Generator[Msg, Any, None]:
        off_ha, off_dec = geo.row(0)[:2]
        cmd = yield from run_command(f"{drive.name}_track", drive.track, target, off_ha=off_ha, off_dec=off_dec,
                                     sun_obs=sun_obs, stopper=drive.stop, wait=False)
        pending.append(cmd)
        yield from bps.wait(group=cmd.group)
        if avg != avg_before:
            yield from bps.mv(radiometer.avg, avg)
        yield from bps.kickoff(radiometer, wait=True)
        for k in range(geo.rows):
            t_cmd = clock.now()
            cmd = yield from _scan(drive, geo.row(k), geo.duration, sun_obs)
            pending.append(cmd)
            yield from fly_while(radiometer, clock, into, until_t=t_cmd + geo.duration, status_of=cmd,
                                 poll_s=poll_s)
        yield from bps.complete(radiometer, wait=True)
        yield from collect_samples(radiometer, into)
        stats.update(window_stats(radiometer, as_arrays(into)))  # at the map's sample rate

    def finish() -> Generator[Msg, Any, None]:
        for cmd in pending:
            if cmd.status is not None and not cmd.status.done:
                cmd.stop(success=True)  # as the RunEngine does when it pauses
        if int(radiometer.avg.get()) != avg_before:
            yield from bps.mv(radiometer.avg, avg_before)

    yield from bpp.finalize_wrapper(bpp.rewindable_wrapper(fly(), False), finish())
    return as_arrays(into), stats


def _on_rows(d: dict[str, np.ndarray], ha0: np.ndarray, dec0: np.ndarray,
             geo: MapGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Offsets (deg) and temperatures (K) of the good samples on the rows, and their counts."""
    x, y = tangent_offsets(d["ha"], d["dec"], ha0, dec0, geo.cosd)
    flags = d["flags"].astype(np.int64)
    v = mean_temperature(d)
    good = ((flags & blocks.FLAG_POS_VALID) > 0) & ((flags & BAD_FLAGS) == 0) & np.isfinite(x + y + v)
    across = y if geo.direction == "ha" else x
    k = np.clip(np.rint(across / geo.spacing + (geo.rows - 1) / 2), 0, geo.rows - 1)
    on = good & (np.abs(across - geo.perp(k)) < 0.1 * geo.spacing)
    counts = {"n_used": int(on.sum()), "n_clipped": int(np.sum((flags & CLIPPED) > 0))}
    return x[on], y[on], v[on], counts


def _map_stats(st: dict[str, Any], d: dict[str, np.ndarray], geo: MapGeometry) -> dict[str, Any]:
    st = dict(st)
    st.update(rows=geo.rows, row_length_deg=geo.length, row_spacing_deg=geo.spacing, width_deg=geo.width,
              height_deg=geo.height, row_duration_s=geo.duration, direction=geo.direction,
              row_time_frac=geo.rows * geo.duration / st["duration_s"] if st["duration_s"] else math.nan,
              el_deg=float(np.nanmean(d["el"])) if d.get("el", np.empty(0)).size else math.nan)
    return st


def _grid(x: np.ndarray, y: np.ndarray, v: np.ndarray, geo: MapGeometry, beam: float,
          cell: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    kernel = KERNEL_BEAMS * beam
    return grid_map(x, y, v, geo.width / 2, geo.height / 2, cell, kernel, max(1.5 * kernel, 0.75 * geo.spacing))


def _cell(cell_deg: float | None, geo: MapGeometry) -> float:
    """Grid cell (deg): ``cell_deg`` or half the row spacing, with at least MIN_CELLS cells a side."""
    most = min(geo.width, geo.height) / (MIN_CELLS - 1)
    if cell_deg is not None and cell_deg > most:
        raise ValueError(f"cell_deg {cell_deg:g} leaves fewer than {MIN_CELLS} cells a side: at most {most:.4g} deg")
    return float(cell_deg) if cell_deg is not None else min(geo.spacing / 2, most)


def _positive(name: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive number, got {v!r}")


def _check_common(cleanup: str, poll_s: float, cell_deg: float | None, samples_per_beam: float) -> None:
    if cleanup not in CLEANUP_ACTIONS:
        raise ValueError(f"cleanup {cleanup!r} is not one of {', '.join(CLEANUP_ACTIONS)}")
    _positive("poll_s", poll_s)
    if cell_deg is not None:
        _positive("cell_deg", cell_deg)
    if not (isinstance(samples_per_beam, (int, float)) and 2 <= samples_per_beam <= 100):
        raise ValueError(f"samples_per_beam must be 2..100, got {samples_per_beam!r}")


# ---- raster map ----------------------------------------------------------------------------------------------
def raster_map(drive: Drive, radiometer: Radiometer, source: str, *, width_deg: float | None = None,
               height_deg: float | None = None, row_spacing_deg: float | None = None, row_duration_s: float = 30.0,
               direction: str = "ha", cell_deg: float | None = None, samples_per_beam: float = 8.0,
               instrumentation: Instrumentation | None = None, receiver: str | None = None,
               meta: ObsMeta | None = None, site: Site | None = None, cleanup: str = "stop", poll_s: float = 0.5,
               md: dict[str, Any] | None = None) -> Plan:
    """On-the-fly raster map of a catalog ``source``, fitted with a 2-D Gaussian for its peak.

    Parameters
    ----------
    drive, radiometer : the DRV and RAD devices (the radiometer needs the observatory clock).
    source : catalog source name.
    width_deg, height_deg : map extent in HA and in Dec offsets, true angle (deg; default 4 beams each).
    row_spacing_deg : distance between rows (deg; default half a beam); there are floor(extent / spacing) + 1
        rows across, centred on the source (at least 3).
    row_duration_s : time to scan one row (s of observatory time); the rows run along ``direction``
        (``"ha"``: rows of constant Dec offset; ``"dec"``: rows of constant HA offset), alternating in sense.
    cell_deg : grid cell (deg; default half the row spacing, at most 1/16 of the map's smaller side).
    samples_per_beam : radiometer samples per beam width along the rows: the plan sets the radiometer's
        averaging (AVG_SP) for the map accordingly and restores it afterwards (default 8, >= 2 for Nyquist).
    instrumentation, receiver : NDI device and the receiver to select (default: the selected one).
    meta : observing-log fields (source, position, receiver and frequency are filled in).
    cleanup : ``"stop"`` (default), ``"stow"`` or ``"none"``: what the drive does when the plan ends.
    poll_s : how often samples are collected while the rows are scanned (real s).

    Returns (and records in ``achieved``): the fitted peak ``peak_k`` (K above the baseline) at ``peak_x_deg``,
    ``peak_y_deg`` (true-angle offsets from the source's apparent place, with errors), ``fwhm_x_deg``/``fwhm_y_deg``,
    ``flux_jy`` (peak / gain), ``rms_k``, ``el_deg``; the map's ``rows``, ``row_length_deg``, ``row_spacing_deg``,
    ``cell_deg``, ``nx``/``ny``; the samples ``n_samples`` (all kept), ``n_used`` (on the rows), ``lost``,
    ``dead_time_frac`` and ``row_time_frac`` (share of the window spent scanning rows).  ``fit`` is
    ``"gaussian"``, or ``"centroid"`` when the fit failed (then the peak is the grid's maximum).
    """
    _check_common(cleanup, poll_s, cell_deg, samples_per_beam)
    ctx = plan_context(site, receiver, instrumentation, source, meta)  # ValueError for an unknown source
    beam = ctx.fwhm
    spacing = float(row_spacing_deg) if row_spacing_deg is not None else beam / 2
    geo = map_geometry(width_deg if width_deg is not None else 4 * beam,
                       height_deg if height_deg is not None else 4 * beam, spacing, row_duration_s, direction,
                       ctx.src.dec_deg, ctx.site.mount)
    cell = _cell(cell_deg, geo)
    args = {"drive": drive, "radiometer": radiometer, "source": source, "width_deg": width_deg,
            "height_deg": height_deg, "row_spacing_deg": row_spacing_deg, "row_duration_s": row_duration_s,
            "direction": direction, "cell_deg": cell_deg, "samples_per_beam": samples_per_beam,
            "instrumentation": instrumentation, "receiver": receiver, "cleanup": cleanup}

    def body() -> Plan:
        d, window = yield from _fly_rows(drive, radiometer, source, geo, beam, samples_per_beam, poll_s)
        out = _map_stats(window, d, geo)
        ha0, dec0 = source_hadec(ctx, d["t"])
        x, y, v, counts = _on_rows(d, ha0, dec0, geo)
        out.update(n_used=counts["n_used"], n_clipped=counts["n_clipped"], cell_deg=cell)
        if x.size < 20:
            raise ValueError(f"raster map of {source}: only {x.size} usable samples on the rows")
        coef = fit_plane(x, y, v)
        resid = v - plane(coef, x, y)
        low = resid < np.percentile(resid, 60)  # the baseline without the source
        coef = fit_plane(x[low], y[low], v[low])
        xs, ys, grid = _grid(x, y, v - plane(coef, x, y), geo, beam, cell)
        j, i = np.unravel_index(int(np.nanargmax(grid)), grid.shape)
        try:
            fit, coef = fit_peak(x, y, v, beam, (float(xs[i]), float(ys[j])), 1.5 * beam)
            xs, ys, grid = _grid(x, y, v - plane(coef, x, y), geo, beam, cell)
            out.update(fit="gaussian", **fit)
        except ValueError:
            peak = float(grid[j, i])
            _, cx, cy = half_power_region(xs, ys, grid, peak / 2, (float(xs[i]), float(ys[j])))
            out.update(fit="centroid", peak_k=peak, peak_err_k=math.nan, peak_x_deg=cx, peak_x_err_deg=math.nan,
                       peak_y_deg=cy, peak_y_err_deg=math.nan, fwhm_x_deg=math.nan, fwhm_y_deg=math.nan,
                       rms_k=float(np.std(v[low] - plane(coef, x[low], y[low]))))
        out.update(flux_jy=out["peak_k"] / ctx.rx.gain_k_per_jy, nx=int(xs.size), ny=int(ys.size))
        yield from record("grid", {"x_deg": xs, "y_deg": ys, "t_k": grid}, {"x_deg": "deg", "y_deg": "deg",
                                                                          "t_k": "K"})
        return out

    requested = {"width_deg": geo.width, "height_deg": geo.height, "row_spacing_deg": geo.spacing,
                 "row_duration_s": geo.duration, "direction": direction, "rows": geo.rows, "cell_deg": cell}
    return (yield from run_plan("raster_map", args, ctx, requested, md, body, drive, instrumentation, cleanup,
                                [radiometer], MAP_UNITS))


# ---- sun and moon --------------------------------------------------------------------------------------------
def beam_filling(diameter: float, beam: float) -> float:
    """Share of a Gaussian beam's power (FWHM ``beam``) on a uniform disc of ``diameter`` centred in it."""
    return 1.0 - 2.0 ** (-((diameter / beam) ** 2)) if diameter > 0 else 0.0


def brightness_temperature(ta_k: float, gain_k_per_jy: float, freq_mhz: float, beam_deg: float,
                           filling: float) -> float:
    """Brightness temperature (K, Rayleigh-Jeans) of a uniform source giving ``ta_k`` (K) at the beam centre.

    T_A = gain * 2 k T_B Omega_beam f / lambda^2 (Jy), with the Gaussian beam's solid angle
    Omega = pi theta^2 / (4 ln 2) and ``filling`` f the share of the beam on the source.
    """
    lam = C_M_S / (freq_mhz * 1e6)
    omega = math.pi * math.radians(beam_deg) ** 2 / FOUR_LN2
    per_k = gain_k_per_jy * 2 * K_B * omega * filling / lam**2 / JY  # K of T_A per K of T_B
    return ta_k / per_k if per_k > 0 else math.nan


def sun_moon_map(drive: Drive, radiometer: Radiometer, body: str = "moon", *, width_deg: float | None = None,
                 height_deg: float | None = None, row_spacing_deg: float | None = None,
                 row_duration_s: float = 30.0, direction: str = "ha", cell_deg: float | None = None,
                 samples_per_beam: float = 8.0, instrumentation: Instrumentation | None = None,
                 receiver: str | None = None, meta: ObsMeta | None = None, site: Site | None = None,
                 cleanup: str = "stop", poll_s: float = 0.5, md: dict[str, Any] | None = None) -> Plan:
    """Raster map of the sun's or the moon's disc, in offsets from its ephemeris (apparent topocentric) place.

    Mapping the sun needs the drive's solar-observing permission, which this plan requests for its own
    commands (the drive's sun avoidance otherwise refuses the sun; it still guards every other target).
    Mind the DVM range: the quiet sun clips the ADC at cm wavelengths with a wide beam (``n_clipped``).  A
    stopped drive stays in the sun-avoidance zone, which it then leaves only by moving away from the sun:
    ``cleanup="stow"`` (always accepted) is the safe choice for the sun.

    Parameters
    ----------
    body : ``"sun"`` or ``"moon"``.
    width_deg, height_deg : map extent (deg, true angle); default 1.5 ephemeris diameters plus two beams, so
        that the map reaches a beam or more beyond the limb for the baseline.
    Other parameters as :func:`raster_map`.

    Returns (and records in ``achieved``): ``centre_x_deg``/``centre_y_deg`` (true-angle offset of the disc's
    centre, the centroid of its half-power region, from the ephemeris place), ``centre_ta_k`` (antenna
    temperature above the sky at the centre, K) and ``tb_centre_k`` (its Rayleigh-Jeans brightness temperature
    for a uniform disc, K, atmosphere not removed), ``hpw_deg`` (diameter of the circle of the half-power
    region's area), ``diameter_deg`` (the uniform disc with that half-power width in this beam),
    ``diameter_ephem_deg`` and ``diameter_ratio`` (measured / ephemeris); ``peak_k``, ``peak_x_deg``,
    ``peak_y_deg`` (the grid's maximum) and the map statistics of :func:`raster_map`.
    """
    if not isinstance(body, str) or body.strip().lower() not in MAP_BODIES:
        raise ValueError(f"body {body!r} is not one of {', '.join(MAP_BODIES)}")
    name = body.strip().lower()
    _check_common(cleanup, poll_s, cell_deg, samples_per_beam)
    ctx = plan_context(site, receiver, instrumentation, None, meta)
    beam = ctx.fwhm
    clock = fly_clock(radiometer)
    t_now = clock.now()
    c = astro.body_coord(name, t_now, ctx.loc)
    ctx.meta = ctx.meta.filled(source=name, ra_deg=float(c.ra.deg) % 360.0, dec_deg=float(c.dec.deg))
    _, dec_now = astro.body_hadec(name, t_now, ctx.loc)
    diam = 2 * astro.body_radius_deg(name, t_now, ctx.loc)
    size = 1.5 * diam + 2 * beam
    spacing = float(row_spacing_deg) if row_spacing_deg is not None else beam / 2
    geo = map_geometry(width_deg if width_deg is not None else size, height_deg if height_deg is not None else size,
                       spacing, row_duration_s, direction, float(dec_now), ctx.site.mount)
    cell = _cell(cell_deg, geo)
    args = {"drive": drive, "radiometer": radiometer, "body": name, "width_deg": width_deg,
            "height_deg": height_deg, "row_spacing_deg": row_spacing_deg, "row_duration_s": row_duration_s,
            "direction": direction, "cell_deg": cell_deg, "samples_per_beam": samples_per_beam,
            "instrumentation": instrumentation, "receiver": receiver, "cleanup": cleanup}

    def analyse() -> Plan:
        d, window = yield from _fly_rows(drive, radiometer, name, geo, beam, samples_per_beam, poll_s,
                                         sun_obs=name == "sun")
        out = _map_stats(window, d, geo)
        ha0, dec0 = body_hadec(ctx, name, d["t"])
        x, y, v, counts = _on_rows(d, ha0, dec0, geo)
        out.update(n_used=counts["n_used"], n_clipped=counts["n_clipped"], cell_deg=cell)
        if x.size < 20:
            raise ValueError(f"{name} map: only {x.size} usable samples on the rows")
        t_mid = float(np.median(d["t"]))
        diam_eph = 2 * astro.body_radius_deg(name, t_mid, ctx.loc)
        r = np.hypot(x, y)
        outside = r > diam_eph / 2 + 1.5 * beam
        if outside.sum() < 0.1 * r.size:  # a tight map: its outermost tenth
            outside = r >= np.percentile(r, 90)
        coef = fit_plane(x[outside], y[outside], v[outside])
        ta = v - plane(coef, x, y)
        xs, ys, grid = _grid(x, y, ta, geo, beam, cell)
        j, i = np.unravel_index(int(np.nanargmax(grid)), grid.shape)
        cx, cy = float(xs[i]), float(ys[j])
        t_c, area = math.nan, math.nan
        for _ in range(3):  # centre brightness and half-power region, refined together
            near = np.hypot(x - cx, y - cy) <= max(0.3 * beam, 0.6 * geo.spacing)
            t_c = float(np.mean(ta[near])) if near.any() else float(grid[j, i])
            area, cx, cy = half_power_region(xs, ys, grid, t_c / 2, (cx, cy))
            if not math.isfinite(cx):
                raise ValueError(f"{name} map: no half-power region around the maximum")
        hpw = 2 * math.sqrt(area / math.pi)
        diameter = disk_diameter_deg(hpw, beam)
        tb = brightness_temperature(t_c, ctx.rx.gain_k_per_jy, ctx.rx.freq_mhz, beam, beam_filling(diameter, beam))
        out.update(centre_x_deg=cx, centre_y_deg=cy, centre_ta_k=t_c, tb_centre_k=tb, hpw_deg=hpw,
                   diameter_deg=diameter, diameter_ephem_deg=diam_eph, diameter_ratio=diameter / diam_eph,
                   peak_k=float(grid[j, i]), peak_x_deg=float(xs[i]), peak_y_deg=float(ys[j]), body=name,
                   rms_k=float(np.std(ta[outside])), nx=int(xs.size), ny=int(ys.size))
        yield from record("grid", {"x_deg": xs, "y_deg": ys, "t_k": grid}, {"x_deg": "deg", "y_deg": "deg",
                                                                          "t_k": "K"})
        return out

    requested = {"width_deg": geo.width, "height_deg": geo.height, "row_spacing_deg": geo.spacing,
                 "row_duration_s": geo.duration, "direction": direction, "rows": geo.rows, "cell_deg": cell,
                 "diameter_ephem_deg": diam}
    return (yield from run_plan("sun_moon_map", args, ctx, requested, md, analyse, drive, instrumentation,
                                cleanup, [radiometer], MAP_UNITS))
