"""Radiometer physics: what the two DVMs read at given sample times and beam positions.

The RF chain: the sky model (obsctl.sky) gives the noise-free system temperature at the TRUE beam
position (receiver + atmosphere(el, tau) + CMB + every source in the beam, attenuated); the noise diode
adds its temperature; each polarisation (LCP, RCP) has its own receiver chain with an AR(1) gain drift of
``site.simulation.one_over_f_k`` K rms (at T = receiver temperature, correlation time ``drift_s``) and
independent radiometer noise dT = T / sqrt(B tau) with B the receiver bandwidth and tau = 1/rate.

The DVM ADC is 24-bit signed (obsctl.blocks.ADC_MIN..ADC_MAX) with clipping:
RF inputs: counts = round(counts_per_k * T * gain + offset), calibrated K = (counts - offset) / counts_per_k;
voltage inputs: +-10 V full scale behind a per-input divider, calibrated in the sensor's volts.

Noise is counter-based (Philox keyed by the site seed, counter = absolute grid index k = t * rate), so a
sample's noise depends only on the seed, the rate and its time: deterministic in every process.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from obsctl import blocks
from obsctl.site import ReceiverConfig, Site
from obsctl.sky import PERFECT_OPTICS, BeamOptics, SkyModel, Weather

ADC_FULL_SCALE_V = 10.0
COUNTS_PER_VOLT = (1 << (blocks.ADC_BITS - 1)) / ADC_FULL_SCALE_V
DVM_NOISE_V = 5e-6          # DVM input noise (V rms)
IF_DET_V_PER_K = 0.02       # IF square-law detector responsivity (V per K of system temperature)
ND_MON_V_PER_K = 0.1        # noise-diode monitor coupler detector (V per K injected)

# Silicon diode sensor (DT-670-like) at 10 uA: temperature (K) -> forward voltage (V).
_DIODE_T = np.array([1.4, 4.2, 10.0, 20.0, 25.0, 30.0, 50.0, 77.0, 100.0, 200.0, 300.0, 400.0])
_DIODE_V = np.array([1.644, 1.578, 1.40, 1.19, 1.12, 1.10, 1.07, 1.02, 0.98, 0.75, 0.56, 0.36])


def _weather_source() -> Callable[[float, int], Weather]:
    try:
        from iocs.sim.weather import true_weather  # noqa: PLC0415  (written concurrently; optional)
    except ImportError:
        return lambda t, seed: Weather()
    return true_weather


weather_at: Callable[[float, int], Weather] = _weather_source()
"""True surface weather at time t (iocs.sim.weather.true_weather, or standard Weather() without it)."""


def diode_volts(temp_k: float | np.ndarray) -> float | np.ndarray:
    """Forward voltage (V) of the cryogenic silicon-diode sensor at ``temp_k`` (K)."""
    return np.interp(temp_k, _DIODE_T, _DIODE_V)


def gauge_volts(p_mbar: float) -> float:
    """Output (V) of the log vacuum gauge: p = 10^(1.667 U - 11.33) mbar."""
    return (math.log10(max(p_mbar, 1e-12)) + 11.33) / 1.667


@dataclass(frozen=True)
class InputSpec:
    """How one DVM input is read: a link (PV signal, or None) and value->volts at the DVM (divider)."""

    link: str | None
    to_volts: Callable[[float], float]
    divider: float = 1.0  # volts at the DVM per volt reported (calibrated value = volts / divider)


#: voltage inputs (select index -> spec); the link names the PV (DEV:SIGNAL) whose value is the sensor state
VOLT_INPUTS: dict[int, InputSpec] = {
    5: InputSpec(None, lambda _: 1.0),
    6: InputSpec(None, lambda _: 0.0),
    7: InputSpec("TMS:CRYO_15K_RBV", lambda k: float(diode_volts(k))),
    8: InputSpec("TMS:CRYO_70K_RBV", lambda k: float(diode_volts(k))),
    9: InputSpec("TMS:VAC_RBV", gauge_volts),
    10: InputSpec("TMS:PSU_P15_RBV", lambda v: v, 0.25),
    11: InputSpec("TMS:PSU_N15_RBV", lambda v: v, 0.25),
    12: InputSpec("TMS:PSU_P5_RBV", lambda v: v, 0.25),
    13: InputSpec("TMS:PSU_P28_RBV", lambda v: v, 0.25),
    14: InputSpec("TMS:ROOM_TEMP_RBV", lambda c: 0.010 * c),        # LM35: 10 mV/degC
    15: InputSpec("WX:TEMP_RBV", lambda c: 0.5 + 0.010 * c),        # TMP36: 500 mV + 10 mV/degC
}
RF_INPUTS = (0, 1)          # LCP, RCP total power (K)
IF_INPUTS = (3, 4)          # IF detectors LCP, RCP (V)
ND_MONITOR = 2


def calibration(sel: int, rx: ReceiverConfig) -> float:
    """Calibrated units per count of an input: K/count for RF inputs, V/count otherwise."""
    if sel in RF_INPUTS:
        return 1.0 / rx.counts_per_k
    divider = VOLT_INPUTS[sel].divider if sel in VOLT_INPUTS else 1.0
    return 1.0 / (COUNTS_PER_VOLT * divider)


def adc(value: np.ndarray, per_unit: float, offset: float) -> tuple[np.ndarray, np.ndarray]:
    """24-bit ADC: (counts, clipped) for values in calibrated units; NaN reads 0 counts, not clipped."""
    raw = np.asarray(value, dtype=float) * per_unit + offset
    bad = ~np.isfinite(raw)
    clipped = (raw < blocks.ADC_MIN) | (raw > blocks.ADC_MAX)
    counts = np.clip(np.round(np.where(bad, 0.0, raw)), blocks.ADC_MIN, blocks.ADC_MAX)
    return counts, clipped & ~bad


def ar1(w: np.ndarray, a: float, b: float, x0: float) -> np.ndarray:
    """AR(1) process x_k = a x_(k-1) + b w_k from x0, vectorised (chunks keep a^-k below e^10)."""
    out = np.empty(len(w))
    step = max(1, int(10.0 / max(-math.log(a), 1e-300))) if 0 < a < 1 else len(w) or 1
    for i in range(0, len(w), step):
        seg = w[i:i + step]
        p = a ** np.arange(1, len(seg) + 1)
        x = p * (x0 + b * np.cumsum(seg / p))
        out[i:i + len(seg)] = x
        x0 = float(x[-1])
    return out


def normals(seed: int, rate_hz: float, k0: int, n: int, streams: int = 4) -> np.ndarray:
    """Standard normals, shape (n, streams<=4), for grid indices k0..k0+n-1 (Philox + Box-Muller)."""
    key = [seed & 0xFFFFFFFFFFFFFFFF, int(round(rate_hz * 1000)) & 0xFFFFFFFFFFFFFFFF]
    bg = np.random.Philox(key=key, counter=[k0 & 0xFFFFFFFFFFFFFFFF, k0 >> 64, 0, 0])
    words = bg.random_raw(4 * n).reshape(n, 4)
    u = ((words >> np.uint64(11)).astype(float) + 0.5) * 2.0**-53
    r = np.sqrt(-2.0 * np.log(u[:, 0::2]))
    th = 2.0 * np.pi * u[:, 1::2]
    return np.hstack([r * np.cos(th), r * np.sin(th)])[:, :streams]


class Radiometer:
    """The two-polarisation radiometer of a site: sky, diode, gain drift, radiometer noise.

    ``max_physics_hz`` bounds how often (Hz of simulated time) the sky model is evaluated; samples in
    between are interpolated linearly (the sky changes on beam-crossing time scales, >= 0.07 s).
    """

    def __init__(self, site: Site, sky: SkyModel | None = None, drift_s: float = 20.0,
                 max_physics_hz: float = 100.0):
        self.site = site
        self.sky = sky or SkyModel(site)
        self.seed = int(site.simulation.seed)
        self.drift_s = drift_s
        self.max_physics_hz = max_physics_hz
        self._drift = np.zeros(2)  # AR(1) gain-drift state (unit rms) of LCP, RCP

    def reset_drift(self, k0: int, rate_hz: float) -> None:
        """Start the gain drift from its stationary distribution (deterministic in k0)."""
        self._drift = normals(self.seed + 1, rate_hz, k0, 1)[0, 2:4]

    def sky_temperature(self, t: np.ndarray, ha_sky: np.ndarray, dec_sky: np.ndarray, rx: ReceiverConfig,
                        weather: Weather, rate_hz: float,
                        optics: BeamOptics = PERFECT_OPTICS) -> dict[str, np.ndarray | float]:
        """Noise-free system temperature (K) without diode, on a decimated grid interpolated to ``t``.

        NaN positions (no drive) read the zenith sky.  ``rate_hz`` is the sample rate of ``t``.  ``optics`` is
        the subreflector's effect (SUB IOC): it moves where the beam looks and scales the sources' part.
        Returns ``total``, ``elevation`` and ``tau_zenith``.
        """
        t = np.asarray(t, dtype=float)
        n = t.size
        if n == 0:
            return {"total": np.empty(0), "elevation": np.empty(0), "tau_zenith": float("nan")}
        dec = np.where(np.isfinite(dec_sky), dec_sky, self.site.latitude_deg)
        ha = np.where(np.isfinite(ha_sky), ha_sky, 0.0)
        step = max(1, int(rate_hz / self.max_physics_hz))
        idx = np.unique(np.r_[np.arange(0, n, step), n - 1])
        parts = self.sky.system_temperature(ha[idx], dec[idx], t[idx], rx, weather, optics=optics)
        if idx.size == n:
            return parts
        x = np.arange(n)
        return {"total": np.interp(x, idx, parts["total"]), "elevation": np.interp(x, idx, parts["elevation"]),
                "tau_zenith": parts["tau_zenith"]}

    def measure(self, t: np.ndarray, k0: int, rate_hz: float, t_sky: np.ndarray, nd_k: np.ndarray,
                rx: ReceiverConfig) -> dict[str, np.ndarray]:
        """Measured LCP/RCP powers (K, as the ADC sees them: with drift and noise) at grid samples k0...

        ``t_sky`` is the noise-free system temperature without diode, ``nd_k`` the diode temperature
        injected at each sample.  Returns ``lcp``, ``rcp`` (K incl. gain), ``gain_lcp``, ``gain_rcp``.
        """
        n = len(t)
        z = normals(self.seed, rate_hz, k0, n)
        a = math.exp(-1.0 / (rate_hz * self.drift_s))
        b = math.sqrt(1.0 - a * a)
        frac = self.site.simulation.one_over_f_k / rx.tsys_k
        bw_tau = rx.bandwidth_mhz * 1e6 / rate_hz
        t_true = np.asarray(t_sky, dtype=float) + np.asarray(nd_k, dtype=float)
        out: dict[str, np.ndarray] = {}
        for p, name in enumerate(("lcp", "rcp")):
            x = ar1(z[:, 2 + p], a, b, float(self._drift[p]))
            self._drift[p] = x[-1] if n else self._drift[p]
            gain = 1.0 + frac * x
            out[f"gain_{name}"] = gain
            out[name] = gain * t_true * (1.0 + z[:, p] / math.sqrt(bw_tau))
        return out


def input_volts(sel: int, n: int, lcp_k: np.ndarray, rcp_k: np.ndarray, nd_k: np.ndarray,
                link_value: float | None, noise: np.ndarray) -> np.ndarray:
    """Calibrated value (V, before the input's divider) of a voltage input; NaN when its link is down.

    ``noise`` is unit-rms white noise per sample; the DVM adds DVM_NOISE_V rms at its terminals.
    """
    if sel == ND_MONITOR:
        v = ND_MON_V_PER_K * np.asarray(nd_k, dtype=float)
    elif sel in IF_INPUTS:
        v = IF_DET_V_PER_K * (lcp_k if sel == IF_INPUTS[0] else rcp_k)
    else:
        spec = VOLT_INPUTS[sel]
        if spec.link is not None and (link_value is None or not np.isfinite(link_value)):
            return np.full(n, np.nan)
        v = np.full(n, spec.to_volts(link_value if link_value is not None else 0.0))
        return v + DVM_NOISE_V / spec.divider * noise
    return v + DVM_NOISE_V * noise
