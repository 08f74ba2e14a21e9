"""Correlation-spectrometer physics: sky power spectrum -> ACF -> 3-level sampling -> raw lag counts.

Conventions
-----------
* Each section samples a baseband of width ``B`` (Hz) at the Nyquist rate ``2B``; lag ``k`` is the delay
  ``tau_k = k / (2B)``.  The baseband maps to sky frequency ``f_sky = centre - B/2 + f_bb`` (upper
  sideband), so channel ``j`` of ``N`` is at ``centre - B/2 + j B / N``.
* The true autocorrelation of the sampler input is ``R(k) = T_c R_c(k) + sum_lines R_line(k)`` (K Hz),
  ``R_c`` the IF bandpass (a Butterworth-like filter), ``R_line`` a Gaussian line (analytic transform).
* The sampler is 3-level (-1, 0, +1) with thresholds +-v (v in units of the input rms).  The expected
  quantised correlation is (Price's theorem)
  ``r(rho) = 1/pi * int_0^asin(rho) [exp(-v^2/(1+sin t)) + exp(-v^2/(1-sin t))] dt``,
  with ``r(1) = p = erfc(v / sqrt 2)``, the fraction of non-zero samples ("sampler level").
* Raw counts over ``Ns = 2 B t`` samples: ``C_0 = Ns p``, ``C_k = Ns r(rho_k)`` plus counting noise
  (rms ``p sqrt(Ns)`` per lag, the 3-level efficiency 0.81 follows).  The Van Vleck correction inverts
  ``r`` to recover ``rho``; the spectrum is the (windowed) cosine transform of ``rho`` scaled by Tsys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from astropy import units as u
from astropy.coordinates import ICRS, HADec, SkyCoord
from scipy.fft import dct
from scipy.special import erfc, erfcinv

from obsctl import astro

C_KMS = 299_792.458
#: optimum 3-level threshold (units of the input rms): maximum sensitivity, efficiency 0.81
V_OPT = 0.6120
_GL_X, _GL_W = np.polynomial.legendre.leggauss(48)

#: quadrant configurations: name -> sections as (polarisation, sampler index 0..3, centre offset in BW)
QUADS: dict[str, tuple[tuple[str, int, float], ...]] = {
    "1x2048": (("L", 0, 0.0),),
    "2x1024 dual pol": (("L", 0, 0.0), ("R", 1, 0.0)),
    "4x512 2band dual pol": (("L", 0, -0.5), ("R", 1, -0.5), ("L", 2, 0.5), ("R", 3, 0.5)),
}
TOTAL_LAGS = 2048
WINDOWS = ("HANN", "UNIFORM", "HAMMING")


# ---- sampler -------------------------------------------------------------------------------------
def sampler_threshold(t_in_k: float, att_db: float, ref_k: float, att_ref_db: float) -> float:
    """Sampler threshold in units of the input rms.

    The threshold voltage is fixed; the input rms scales as sqrt(T) 10^(-att/20).  At ``ref_k`` K and
    ``att_ref_db`` dB the threshold is the optimum ``V_OPT``.
    """
    return V_OPT * math.sqrt(ref_k / max(t_in_k, 1e-6)) * 10.0 ** ((att_db - att_ref_db) / 20.0)


def level(v: float) -> float:
    """Fraction of samples outside +-v (the 3-level sampler statistic)."""
    return float(erfc(v / math.sqrt(2.0)))


def threshold_from_level(p: float) -> float:
    """Threshold (units of rms) that gives the non-zero fraction ``p``."""
    return float(math.sqrt(2.0) * erfcinv(min(max(p, 1e-300), 1.0 - 1e-16)))


def three_level_r(rho: np.ndarray, v: float) -> np.ndarray:
    """Expected 3-level correlation for true correlation ``rho`` (|rho| <= 1) and threshold ``v``."""
    rho = np.clip(np.asarray(rho, dtype=float), -1.0, 1.0)
    a = np.arcsin(rho)
    th = 0.5 * a[..., None] * (_GL_X + 1.0)
    s = np.sin(th)
    f = np.exp(-v * v / (1.0 + s)) + np.exp(-v * v / np.maximum(1.0 - s, 1e-300))
    return 0.5 * a * np.sum(_GL_W * f, axis=-1) / math.pi


def _dr_drho(rho: np.ndarray, v: float) -> np.ndarray:
    rho = np.clip(rho, -1 + 1e-12, 1 - 1e-12)
    return (np.exp(-v * v / (1 + rho)) + np.exp(-v * v / (1 - rho))) / (math.pi * np.sqrt(1 - rho * rho))


def van_vleck(r: np.ndarray, v: float, iterations: int = 40) -> np.ndarray:
    """Invert :func:`three_level_r`: true correlation from measured 3-level correlation ``r``.

    Newton steps from the small-correlation (linear) estimate, kept inside a bisection bracket.
    """
    p = level(v)
    r = np.clip(np.asarray(r, dtype=float), -p * (1 - 1e-12), p * (1 - 1e-12))
    lo, hi = np.full(r.shape, -1.0), np.full(r.shape, 1.0)
    x = np.clip(r * math.pi / (2.0 * math.exp(-v * v)), -0.999, 0.999)
    for _ in range(iterations):
        fx = three_level_r(x, v) - r
        lo = np.where(fx < 0, x, lo)
        hi = np.where(fx > 0, x, hi)
        step = fx / _dr_drho(x, v)
        nxt = x - step
        bad = (nxt <= lo) | (nxt >= hi) | ~np.isfinite(nxt)
        x = np.where(bad, 0.5 * (lo + hi), nxt)
        if np.max(np.abs(step)) < 1e-14:
            break
    return x


# ---- spectra and lags ----------------------------------------------------------------------------
def bandpass(f_bb_hz: np.ndarray, bw_hz: float, order: int = 16, edge: float = 0.02) -> np.ndarray:
    """IF filter power response over the baseband: flat, falling to -3 dB ``edge`` x B inside each edge."""
    half = 0.5 * bw_hz * (1.0 - 2.0 * edge)
    return 1.0 / (1.0 + ((np.asarray(f_bb_hz) - 0.5 * bw_hz) / half) ** (2 * order))


@lru_cache(maxsize=32)
def continuum_acf(nlag: int, bw_hz: float) -> np.ndarray:
    """ACF (Hz per K) of a flat-sky continuum through the bandpass: int_0^B H(f) cos(2 pi f tau_k) df."""
    m = 32 * nlag
    f = (np.arange(m) + 0.5) * bw_hz / m
    out = dct(bandpass(f, bw_hz), type=2)[:nlag] * bw_hz / (2 * m)
    out.setflags(write=False)
    return out


def line_acf(nlag: int, bw_hz: float, f0_hz: float, sigma_hz: float, amp_k: float) -> np.ndarray:
    """ACF (K Hz) of a Gaussian line of peak ``amp_k`` at baseband ``f0_hz`` (bandpass applied)."""
    tau = np.arange(nlag) / (2.0 * bw_hz)
    gain = float(bandpass(f0_hz, bw_hz))
    return (amp_k * gain * sigma_hz * math.sqrt(2 * math.pi) * np.exp(-2 * (math.pi * sigma_hz * tau) ** 2)
            * np.cos(2 * math.pi * f0_hz * tau))


def lag_window(nlag: int, kind: str) -> np.ndarray:
    """One-sided lag window w_k, k = 0..N-1 (HANN: 0.5 (1 + cos(pi k/N)), HAMMING: 0.54 + 0.46 cos)."""
    k = np.arange(nlag)
    if kind == "HANN":
        return 0.5 * (1.0 + np.cos(np.pi * k / nlag))
    if kind == "HAMMING":
        return 0.54 + 0.46 * np.cos(np.pi * k / nlag)
    if kind == "UNIFORM":
        return np.ones(nlag)
    raise ValueError(f"unknown window {kind!r}; known: {', '.join(WINDOWS)}")


def acf_to_spectrum(acf: np.ndarray, kind: str = "HANN") -> np.ndarray:
    """Normalised power spectrum S_j = w_0 a_0 + 2 sum_k w_k a_k cos(pi j k / N), j = 0..N-1.

    The real FFT of the symmetrised, windowed ACF of length 2N (element N set to 0).
    """
    n = len(acf)
    a = np.asarray(acf, dtype=float) * lag_window(n, kind)
    sym = np.concatenate([a, [0.0], a[:0:-1]])
    return np.fft.rfft(sym).real[:n]


def channel_freqs_mhz(centre_mhz: float, bw_mhz: float, nchan: int) -> np.ndarray:
    """Topocentric sky frequency (MHz) of each channel of a section centred at ``centre_mhz``."""
    return centre_mhz - 0.5 * bw_mhz + np.arange(nchan) * bw_mhz / nchan


def velocity_axis_kms(freq_mhz: np.ndarray, rest_mhz: float, v_lsr_corr_kms: float) -> np.ndarray:
    """LSR radio velocity (km/s) of topocentric frequencies for a line at ``rest_mhz``."""
    return C_KMS * (1.0 - np.asarray(freq_mhz) / rest_mhz) + v_lsr_corr_kms


# ---- one integration -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Line:
    """A spectral line as seen by the telescope: topocentric centre (MHz), FWHM (MHz), peak (K)."""

    freq_mhz: float
    fwhm_mhz: float
    peak_k: float


def true_acf(nlag: int, bw_mhz: float, centre_mhz: float, t_cont_k: float, lines: list[Line]) -> np.ndarray:
    """Noise-free ACF R(k) (K Hz) of the sampler input for one section."""
    bw = bw_mhz * 1e6
    r = t_cont_k * continuum_acf(nlag, bw)
    lo = centre_mhz - 0.5 * bw_mhz
    for ln in lines:
        sigma = ln.fwhm_mhz * 1e6 / (2 * math.sqrt(2 * math.log(2)))
        f0 = (ln.freq_mhz - lo) * 1e6
        if -5 * sigma < f0 < bw + 5 * sigma:
            r = r + line_acf(nlag, bw, f0, sigma, ln.peak_k)
    return r


def raw_counts(r_true: np.ndarray, v: float, n_samples: float, rng: np.random.Generator) -> np.ndarray:
    """Accumulated 3-level lag counts (integers as floats) for true ACF ``r_true`` and threshold ``v``."""
    rho = r_true / r_true[0]
    p = level(v)
    mean = n_samples * three_level_r(rho, v)
    mean[0] = n_samples * p
    noise = rng.standard_normal(len(rho)) * p * math.sqrt(n_samples)
    noise[0] = rng.standard_normal() * math.sqrt(n_samples * p * (1 - p))
    return np.clip(np.rint(mean + noise), -n_samples, n_samples)


def fix_acf(raw: np.ndarray, n_samples: float) -> tuple[np.ndarray, float]:
    """Normalise and Van Vleck-correct raw counts; returns (rho, threshold v).  Zero counts give zeros."""
    p = raw[0] / n_samples
    if not 0.0 < p < 1.0:
        return np.zeros(len(raw)), math.inf if p <= 0 else 0.0
    v = threshold_from_level(p)
    rho = van_vleck(raw / n_samples, v)
    rho[0] = 1.0
    return rho, v


def maser_lines(masers: list[tuple[object, float]], rest_of: dict[str, float], vcorr: dict[str, float],
                gain_k_per_jy: float, transmission: float) -> list[Line]:
    """Lines (topocentric) of masers in the beam.

    ``masers`` are (Source, beam response); ``rest_of`` maps the source's line name to its rest frequency
    (MHz) and ``vcorr`` the source name to its LSR correction (km/s).
    """
    out = []
    for src, w in masers:
        rest = rest_of[src.line]  # type: ignore[attr-defined]
        v_topo = src.vlsr_kms - vcorr[src.name]  # type: ignore[attr-defined]
        f = rest * (1.0 - v_topo / C_KMS)
        out.append(Line(f, rest * src.width_kms / C_KMS,  # type: ignore[attr-defined]
                        src.peak_jy * gain_k_per_jy * w * transmission))  # type: ignore[attr-defined]
    return out


def pointing_icrs(ha_deg: float, dec_deg: float, t: float, loc: astro.Location) -> SkyCoord:
    """ICRS direction of a topocentric apparent HA/Dec (deg) at POSIX time ``t``."""
    frame = HADec(obstime=astro.to_time(t), location=loc.earth, pressure=0 * u.hPa)
    c = SkyCoord(ha=ha_deg * u.deg, dec=dec_deg * u.deg, frame=frame).transform_to(ICRS())
    return SkyCoord(c.ra, c.dec, frame="icrs")
