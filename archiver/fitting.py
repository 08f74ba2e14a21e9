"""Quick-look fits of single-dish measurements: pure numpy/scipy, no archive or EPICS.

Units: angles and offsets in degrees, temperatures in K, times in seconds, velocities in km/s.
Each function returns a small dataclass of results with 1-sigma uncertainties where a fit provides them,
and raises ValueError naming the problem when the data cannot support the fit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import curve_fit

FOUR_LN2 = 4.0 * math.log(2.0)
SIDEREAL_DEG_PER_S = 360.0 / 86164.0905  # Earth rotation (deg of HA per second of time)


def _clean(x: np.ndarray, y: np.ndarray, what: str, min_points: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"{what}: x and y differ in length ({x.size} vs {y.size})")
    good = np.isfinite(x) & np.isfinite(y)
    if good.sum() < min_points:
        raise ValueError(f"{what}: need at least {min_points} finite points, got {int(good.sum())}")
    return x[good], y[good]


def _gauss_line(x, peak, centre, fwhm, base, slope):
    return peak * np.exp(-FOUR_LN2 * ((x - centre) / fwhm) ** 2) + base + slope * (x - centre)


@dataclass(frozen=True)
class GaussFit:
    """Gaussian on a linear baseline: peak (K), centre and FWHM (x units), baseline, residual rms."""

    peak: float
    centre: float
    fwhm: float
    base: float
    slope: float
    peak_err: float
    centre_err: float
    fwhm_err: float
    rms: float
    n: int

    def as_dict(self) -> dict[str, float]:
        """Plain dictionary (for documents)."""
        return asdict(self)


def fit_gaussian(x: np.ndarray, y: np.ndarray, fwhm_guess: float | None = None, what: str = "scan") -> GaussFit:
    """Least-squares Gaussian + linear baseline; starts at the data's maximum."""
    x, y = _clean(x, y, what, 7)
    span = float(x.max() - x.min())
    if span <= 0:
        raise ValueError(f"{what}: x does not vary")
    order = np.argsort(x)
    x, y = x[order], y[order]
    edge = max(2, len(x) // 10)
    base0 = float(np.median(np.r_[y[:edge], y[-edge:]]))
    i = int(np.argmax(y))
    p0 = [float(y[i] - base0), float(x[i]), fwhm_guess or span / 4, base0, 0.0]
    try:
        popt, pcov = curve_fit(_gauss_line, x, y, p0=p0, maxfev=20000)
    except RuntimeError as err:
        raise ValueError(f"{what}: Gaussian fit did not converge ({err})") from None
    resid = y - _gauss_line(x, *popt)
    err = np.sqrt(np.clip(np.diag(pcov), 0, None)) if np.all(np.isfinite(pcov)) else np.full(5, np.nan)
    return GaussFit(float(popt[0]), float(popt[1]), abs(float(popt[2])), float(popt[3]), float(popt[4]),
                    float(err[0]), float(err[1]), float(err[2]), float(np.std(resid)), len(x))


@dataclass(frozen=True)
class ScanResult:
    """Result of a drift or cross scan on a point source."""

    peak_k: float
    peak_err_k: float
    offset_deg: float  # position of the peak relative to the expected source position (deg, true angle)
    offset_err_deg: float
    fwhm_deg: float  # beam width along the scan (deg, true angle)
    flux_jy: float  # peak / gain (Jy), corrected for the offset in the other axis when given
    rms_k: float


def drift_scan(t_s: np.ndarray, t_k: np.ndarray, transit_s: float, dec_deg: float, gain_k_per_jy: float,
               fwhm_guess_deg: float | None = None) -> ScanResult:
    """Fit a drift scan: temperature vs time as the source drifts through a parked beam.

    ``transit_s`` is when the source's expected position crosses the beam centre; a later peak means the
    source lies east of where the dish expected it (positive HA offset of the beam).  Widths and offsets are
    converted to true angle with cos(dec).
    """
    scale = SIDEREAL_DEG_PER_S * math.cos(math.radians(dec_deg))
    guess = fwhm_guess_deg / scale if fwhm_guess_deg else None
    fit = fit_gaussian(np.asarray(t_s, float) - transit_s, t_k, guess, "drift scan")
    return ScanResult(fit.peak, fit.peak_err, fit.centre * scale, fit.centre_err * scale, fit.fwhm * scale,
                      fit.peak / gain_k_per_jy, fit.rms)


def cross_scan(off_ha_deg: np.ndarray, ha_k: np.ndarray, off_dec_deg: np.ndarray, dec_k: np.ndarray,
               dec_deg: float, gain_k_per_jy: float, fwhm_guess_deg: float | None = None
               ) -> tuple[ScanResult, ScanResult]:
    """Fit orthogonal scans through a source: (HA scan, Dec scan).

    HA offsets are coordinate degrees (converted to true angle with cos(dec)).  Each peak is corrected for the
    pointing error found by the other scan, so the flux is that of the source on the beam axis.
    """
    cosd = math.cos(math.radians(dec_deg))
    ha = fit_gaussian(np.asarray(off_ha_deg, float) * cosd, ha_k, fwhm_guess_deg, "HA scan")
    de = fit_gaussian(off_dec_deg, dec_k, fwhm_guess_deg, "Dec scan")
    corr_ha = math.exp(FOUR_LN2 * (de.centre / de.fwhm) ** 2)  # HA scan passed de.centre away in Dec
    corr_de = math.exp(FOUR_LN2 * (ha.centre / ha.fwhm) ** 2)
    return (
        ScanResult(ha.peak * corr_ha, ha.peak_err * corr_ha, ha.centre, ha.centre_err, ha.fwhm,
                   ha.peak * corr_ha / gain_k_per_jy, ha.rms),
        ScanResult(de.peak * corr_de, de.peak_err * corr_de, de.centre, de.centre_err, de.fwhm,
                   de.peak * corr_de / gain_k_per_jy, de.rms),
    )


def five_point(offsets_deg: float, on: float, north: float, south: float, east: float, west: float,
               fwhm_deg: float) -> tuple[float, float]:
    """Pointing offsets (deg, true angle: east, north) from a five-point half-power check.

    Solves the Gaussian beam for the source position from the ratio of opposite points:
    x = fwhm^2 ln(E/W) / (16 ln2 d); ``on`` is used only to check the source was seen.
    """
    if min(on, north, south, east, west) <= 0:
        raise ValueError("five-point: all five temperatures must be positive (source above baseline)")
    k = fwhm_deg**2 / (4 * FOUR_LN2 * offsets_deg)
    return k * math.log(east / west), k * math.log(north / south)


@dataclass(frozen=True)
class DiodeCal:
    """Noise-diode calibration: system temperature and the counts-to-K scale."""

    tsys_k: float
    k_per_count: float
    tsys_err_k: float


def tsys_from_diode(off_counts: np.ndarray, on_counts: np.ndarray, diode_k: float,
                    zero_counts: float = 0.0) -> DiodeCal:
    """Tsys = T_diode * (off - zero) / (on - off), from samples with the diode off and on."""
    off = np.asarray(off_counts, float) - zero_counts
    on = np.asarray(on_counts, float) - zero_counts
    if off.size < 2 or on.size < 2:
        raise ValueError("diode cal: need at least two samples with the diode off and two with it on")
    step = on.mean() - off.mean()
    if step <= 0:
        raise ValueError("diode cal: the diode did not raise the output (on <= off)")
    tsys = diode_k * off.mean() / step
    step_err = math.hypot(off.std(ddof=1) / math.sqrt(off.size), on.std(ddof=1) / math.sqrt(on.size))
    return DiodeCal(float(tsys), float(diode_k / step), float(tsys * step_err / step))


@dataclass(frozen=True)
class SkyDip:
    """Sky-dip result: zenith opacity and the temperature at zero airmass."""

    tau_zenith: float
    tau_err: float
    t_zero_airmass_k: float
    rms_k: float


def tau_from_skydip(el_deg: np.ndarray, t_k: np.ndarray, t_atm_k: float) -> SkyDip:
    """Fit T(el) = T0 + T_atm (1 - exp(-tau / sin el)) for the zenith opacity tau."""
    el, t = _clean(el_deg, t_k, "sky dip", 4)
    if np.ptp(el) < 10:
        raise ValueError("sky dip: elevations must span at least 10 deg")
    airmass = 1.0 / np.sin(np.radians(el))

    def model(a, t0, tau):
        return t0 + t_atm_k * (1.0 - np.exp(-tau * a))

    slope, t0 = np.polyfit(airmass, t, 1)
    popt, pcov = curve_fit(model, airmass, t, p0=[t0, max(slope / t_atm_k, 1e-4)])
    rms = float(np.std(t - model(airmass, *popt)))
    return SkyDip(float(popt[1]), float(np.sqrt(pcov[1, 1])), float(popt[0]), rms)


@dataclass(frozen=True)
class LineResult:
    """A spectral line after baseline subtraction: peak (K), velocity and width (km/s), noise."""

    peak_k: float
    vlsr_kms: float
    vlsr_err_kms: float
    fwhm_kms: float
    rms_k: float
    snr: float
    channel_kms: float


def spectral_line(vel_kms: np.ndarray, spec_k: np.ndarray, baseline_order: int = 2,
                  line_halfwidth_kms: float | None = None) -> LineResult:
    """Subtract a polynomial baseline (fitted away from the strongest line) and fit the line."""
    v, s = _clean(vel_kms, spec_k, "spectrum", 16)
    order = np.argsort(v)
    v, s = v[order], s[order]
    chan = float(np.median(np.abs(np.diff(v))))
    i = int(np.argmax(s - np.median(s)))
    half = line_halfwidth_kms or max(20 * chan, 0.05 * np.ptp(v))
    off = np.abs(v - v[i]) > half
    if off.sum() < baseline_order + 4:
        raise ValueError("spectrum: too few channels outside the line for a baseline")
    coef = np.polyfit(v[off] - v.mean(), s[off], baseline_order)
    resid = s - np.polyval(coef, v - v.mean())
    rms = float(np.std(resid[off]))
    near = np.abs(v - v[i]) <= half
    fit = fit_gaussian(v[near], resid[near], 4 * chan, "line")
    return LineResult(fit.peak, fit.centre, fit.centre_err, fit.fwhm, rms, fit.peak / rms if rms > 0 else math.inf,
                      chan)


@dataclass(frozen=True)
class PulseResult:
    """Folded pulse profile: signal-to-noise, peak phase (turns) and width (turns, FWHM)."""

    snr: float
    peak_phase: float
    fwhm_phase: float
    off_rms: float


def pulse_profile(profile: np.ndarray) -> PulseResult:
    """S/N of a folded profile: peak above the off-pulse median over the off-pulse rms."""
    p = np.asarray(profile, dtype=float)
    if p.size < 8 or not np.all(np.isfinite(p)):
        raise ValueError("pulse profile: need at least 8 finite bins")
    n = p.size
    i = int(np.argmax(p))
    rolled = np.roll(p, n // 2 - i)  # peak in the middle
    off = np.r_[rolled[: n // 4], rolled[-n // 4:]]
    base, rms = float(np.median(off)), float(np.std(off))
    peak = float(rolled[n // 2] - base)
    above = rolled - base >= peak / 2
    lo = hi = n // 2
    while lo > 0 and above[lo - 1]:
        lo -= 1
    while hi < n - 1 and above[hi + 1]:
        hi += 1
    return PulseResult(peak / rms if rms > 0 else math.inf, i / n, (hi - lo + 1) / n, rms)


def shift_profile(profile: np.ndarray, turns: float) -> np.ndarray:
    """A periodic profile rotated by ``turns`` of phase (content moves to larger phase; Fourier shift)."""
    p = np.asarray(profile, dtype=float)
    k = np.arange(p.size // 2 + 1)
    return np.fft.irfft(np.fft.rfft(p) * np.exp(-2j * math.pi * k * turns), n=p.size)


def add_profiles(profiles: list[np.ndarray], shifts_turns: list[float]) -> np.ndarray:
    """Sum of folded profiles, each first rotated by its shift (turns) onto a common phase origin."""
    if not profiles or len(profiles) != len(shifts_turns):
        raise ValueError(f"add_profiles: {len(profiles)} profiles but {len(shifts_turns)} shifts")
    sizes = {np.asarray(p).size for p in profiles}
    if len(sizes) != 1:
        raise ValueError(f"add_profiles: profiles differ in length ({sorted(sizes)} bins)")
    return np.sum([shift_profile(p, s) for p, s in zip(profiles, shifts_turns, strict=True)], axis=0)


def pulse_peak(profile: np.ndarray) -> PulseResult:
    """:func:`pulse_profile` with sub-bin precision: peak phase and FWHM in turns.

    The phase is that of the peak's bin centre (bin ``i`` covers ``i/n .. (i+1)/n``) refined by a parabola
    through the highest bin and its neighbours; the FWHM interpolates the half-maximum crossings above the
    off-pulse median.
    """
    coarse = pulse_profile(profile)
    p = np.asarray(profile, dtype=float)
    n = p.size
    i = int(np.argmax(p))
    a, b, c = p[(i - 1) % n], p[i], p[(i + 1) % n]
    den = a - 2 * b + c
    frac = 0.5 * (a - c) / den if den < 0 else 0.0
    rolled = np.roll(p, n // 2 - i)
    base = float(np.median(np.r_[rolled[: n // 4], rolled[-n // 4:]]))
    half = base + 0.5 * (b - base)
    edges = []
    for step in (1, -1):
        j = 0
        while j < n // 2 and rolled[(n // 2 + step * (j + 1)) % n] > half:
            j += 1
        y0, y1 = rolled[(n // 2 + step * j) % n], rolled[(n // 2 + step * (j + 1)) % n]
        edges.append(j + (min(max((y0 - half) / (y0 - y1), 0.0), 1.0) if y0 > y1 else 0.0))
    return PulseResult(coarse.snr, float((i + 0.5 + frac) / n % 1.0), float(min(sum(edges) / n, 1.0)),
                       coarse.off_rms)
