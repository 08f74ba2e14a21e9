"""Pulsar-timer physics: pulse arrival phases, the folded profile, and what the timer derives from it.

Pulse phase model (the simulated truth)
---------------------------------------
A pulsar's barycentric period grows linearly from its catalog epoch, ``P(t_b) = P0 + Pdot (t_b - T0)``
(:meth:`obsctl.catalog.Source.period_at`), so its rotational phase is
``phi = ln(1 + Pdot (t_b - T0) / P0) / Pdot`` turns (``(t_b - T0) / P0`` for Pdot = 0) with phase 0 at the
epoch ``T0`` (MJD, TDB).  A pulse (peak, phase integer) observed at topocentric UTC ``t`` and frequency
``f`` left the pulsar at ``t_b = TDB(t) + light travel time to the barycentre (astropy) - 4148.808 s DM /
f_MHz^2``.  Its apparent period is ``P(t) / (1 + v_b / c)`` with ``v_b`` the observatory's barycentric
radial-velocity correction.

Folded profile
--------------
The timer folds at ``P_fold`` from its start; a pulse that arrives when the fold phase is ``psi(t)`` and
the pulse phase ``phi(t)`` lands at fold phase ``psi - phi (mod 1)``, which drifts when ``P_fold`` is wrong.
The pulse shape is a Gaussian of FWHM ``duty`` turns, smeared by dispersion across the band (boxcar
8.3 us DM B_MHz / f_GHz^3) and by the detector's RC time constant ``tau`` (causal exponential); all are
applied as Fourier coefficients of the periodic profile.  Radiometer noise per bin is
``Tsys / sqrt(B t_bin_total)``, passed through the same RC filter.
"""

from __future__ import annotations

import math

import numpy as np
from astropy import units as u
from astropy.time import Time
from scipy.interpolate import CubicSpline

from obsctl import astro
from obsctl.catalog import Source

C_KMS = 299_792.458
K_DM_S = 4.148808e3  # dispersion constant (s MHz^2 cm^3 / pc)
FWHM_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def dispersion_delay_s(dm: float, f_mhz: float) -> float:
    """Dispersion delay (s) at ``f_mhz`` relative to infinite frequency."""
    return K_DM_S * dm / f_mhz**2


def dispersion_smear_s(dm: float, bw_mhz: float, f_mhz: float) -> float:
    """Dispersion smearing (s) across a band ``bw_mhz`` wide centred on ``f_mhz``: 8.3 us DM B / f_GHz^3."""
    return 8.3e-6 * dm * bw_mhz / (f_mhz / 1000.0) ** 3


def apparent_period_s(src: Source, t: float, loc: astro.Location) -> float:
    """Topocentric apparent period (s) at POSIX time ``t``: spun down to the date, Doppler shifted."""
    vb, _ = astro.velocity_corrections_kms(src.coord, t, loc)
    return src.period_at(astro.mjd(t)) / (1.0 + vb / C_KMS)


def _phase_exact(src: Source, t: np.ndarray, loc: astro.Location, f_mhz: float) -> np.ndarray:
    tt = Time(np.asarray(t, dtype=float), format="unix", scale="utc", location=loc.earth)
    tb = tt.tdb + tt.light_travel_time(src.coord, kind="barycentric")
    dt = (tb - Time(src.epoch_mjd, format="mjd", scale="tdb")).to_value(u.s) - dispersion_delay_s(src.dm, f_mhz)
    x = src.pdot * dt / src.period_s
    return np.log1p(x) / src.pdot if src.pdot != 0 else dt / src.period_s


def pulse_phase(src: Source, t: np.ndarray, loc: astro.Location, f_mhz: float) -> tuple[np.ndarray, float]:
    """Pulse phase (turns) at topocentric times ``t`` (POSIX s), as (phase - n0, n0) with n0 an integer.

    Exact (astropy) on anchors at most 30 s apart, cubic spline in between.
    """
    t = np.asarray(t, dtype=float)
    t0, t1 = float(t.min()), float(t.max())
    n = int(min(257, max(4, math.ceil((t1 - t0) / 30.0) + 1)))
    anchors = np.linspace(t0, t1 + 1e-3, n)
    ph = _phase_exact(src, anchors, loc, f_mhz)
    n0 = math.floor(ph[0])
    spline = CubicSpline(anchors - t0, ph - n0)
    return spline(t - t0), float(n0)


def template_coeffs(k: np.ndarray, duty: float, smear_turns: float, tau_turns: float) -> np.ndarray:
    """Fourier coefficients (harmonics ``k``) of the unit-mean pulse: Gaussian x dispersion boxcar x RC."""
    sigma = duty / FWHM_SIGMA
    return (np.exp(-2.0 * (math.pi * sigma * k) ** 2) * np.sinc(k * smear_turns)
            / (1.0 + 2j * math.pi * k * tau_turns))


def rc_filter(x: np.ndarray, tau_turns: float) -> np.ndarray:
    """Circular RC low-pass of a periodic sequence sampled at ``len(x)`` points per turn."""
    if tau_turns <= 0:
        return np.asarray(x, dtype=float)
    k = np.arange(len(x) // 2 + 1)
    return np.fft.irfft(np.fft.rfft(x) / (1.0 + 2j * math.pi * k * tau_turns), n=len(x))


def folded_pulse(nbins: int, psi: np.ndarray, amp_k: np.ndarray, duty: float, smear_turns: float,
                 tau_turns: float) -> np.ndarray:
    """Mean folded pulse (K per bin) of one pulsar.

    ``psi`` are the fold phases (turns) at which the pulse sat in successive equal-length segments of the
    integration and ``amp_k`` its mean antenna temperature in each segment.  Bins integrate the profile.
    """
    over = max(4, math.ceil(8192 / nbins))
    m = nbins * over
    sigma = duty / FWHM_SIGMA
    kmax = int(min(m // 2, math.ceil(math.sqrt(30.0 / (2 * math.pi**2)) / max(sigma, 1e-6)) + 1))
    k = np.arange(kmax + 1)
    coef = np.zeros(m // 2 + 1, complex)
    acc = np.zeros(kmax + 1, complex)
    for chunk in range(0, len(psi), 512):
        ph = np.exp(-2j * math.pi * np.outer(psi[chunk:chunk + 512], k))
        acc += amp_k[chunk:chunk + 512] @ ph
    coef[:kmax + 1] = template_coeffs(k, duty, smear_turns, tau_turns) * acc / len(psi)
    fine = np.fft.irfft(coef, n=m) * m
    return fine.reshape(nbins, over).mean(axis=1)


def bin_noise(nbins: int, tsys_k: float, bw_hz: float, t_int_s: float, tau_turns: float,
              rng: np.random.Generator) -> np.ndarray:
    """Radiometer noise per bin (K): white rms Tsys / sqrt(B T / nbins), then the RC filter."""
    white = rng.standard_normal(nbins) * tsys_k / math.sqrt(bw_hz * t_int_s / nbins)
    return rc_filter(white, tau_turns)


# ---- what the timer derives from a profile ---------------------------------------------------------
def peak_phase(profile: np.ndarray) -> float:
    """Fold phase (turns, 0..1) of the profile's peak: parabola through the highest bin and its neighbours."""
    n = len(profile)
    i = int(np.argmax(profile))
    a, b, c = profile[(i - 1) % n], profile[i], profile[(i + 1) % n]
    den = a - 2 * b + c
    frac = 0.5 * (a - c) / den if den < 0 else 0.0
    return ((i + 0.5 + frac) / n) % 1.0


def off_pulse(profile: np.ndarray, exclude_turns: float = 0.15) -> np.ndarray:
    """Bins farther than ``exclude_turns`` from the peak."""
    n = len(profile)
    d = (np.arange(n) - int(np.argmax(profile)) + n / 2) % n - n / 2
    return profile[np.abs(d) > exclude_turns * n]


def snr(profile: np.ndarray) -> float:
    """Peak signal-to-noise: (peak - off-pulse mean) / off-pulse rms."""
    off = off_pulse(profile)
    rms = float(np.std(off))
    return float((np.max(profile) - np.mean(off)) / rms) if rms > 0 else 0.0


def fwhm_turns(profile: np.ndarray) -> float:
    """Full width at half maximum of the peak above the off-pulse mean (turns; linear interpolation)."""
    n = len(profile)
    base = float(np.mean(off_pulse(profile)))
    i = int(np.argmax(profile))
    half = base + 0.5 * (profile[i] - base)
    if profile[i] <= base:
        return 0.0
    edges = []
    for step in (1, -1):
        j = 0
        while j < n // 2 and profile[(i + step * (j + 1)) % n] > half:
            j += 1
        y0, y1 = profile[(i + step * j) % n], profile[(i + step * (j + 1)) % n]
        frac = (y0 - half) / (y0 - y1) if y0 > y1 else 0.0
        edges.append(j + min(max(frac, 0.0), 1.0))
    return min(float(sum(edges)) / n, 1.0)
