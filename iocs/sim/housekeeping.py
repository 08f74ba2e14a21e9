"""Housekeeping physics: a two-stage closed-cycle (Gifford-McMahon) cryostat, its vacuum, the receiver room
and the front-end power supplies.

Cryostat model (lumped, two thermal masses; SI units, temperatures in K, powers in W):

* stage 1 (radiation shield, ~70 K): radiation from the 300 K dewar wall through MLI plus conduction through
  supports and cables; cooled by the cold head's first stage, capacity ``a1 (T1 - T1_0)``;
* stage 2 (LNA plate, ~15 K): conduction from stage 1, LNA dissipation; cooled with ``a2 (T2 - T2_0)``;
* cooling capacity drifts slowly (helium charge, compressor) and falls as the outside air warms (the compressor
  rejects its heat outdoors); the dewar wall is at the receiver-room temperature;
* heat capacities are those of copper (NIST table), which fall steeply at low temperature, so after a compressor
  failure the 15 K stage warms quickly at first (tens of K within tens of minutes) and then follows the
  massive shield; a stopped cold head also conducts heat into both stages.

The state is integrated with explicit Euler sub-steps of at most ``MAX_STEP_S`` simulated seconds.
Vacuum: a slowly rising base pressure (outgassing since the last pump-down, on a 90-day maintenance cycle)
times the gas the cold stage releases as it warms (cryopumping stops).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from iocs.sim.noise import generator, smooth
from iocs.sim.weather import true_weather

SIGMA = 5.670374e-8  # Stefan-Boltzmann (W m^-2 K^-4)
MAX_STEP_S = 5.0

#: specific heat of copper (J kg^-1 K^-1) against temperature (K), NIST cryogenic data (rounded)
_CU_T = (4.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 70.0, 100.0, 150.0, 200.0, 300.0, 400.0)
_CU_C = (0.09, 0.86, 2.4, 7.7, 27.0, 60.0, 99.0, 173.0, 254.0, 323.0, 356.0, 385.0, 397.0)


_LOG_T = [math.log(x) for x in _CU_T]
_LOG_C = [math.log(x) for x in _CU_C]


def copper_heat_capacity(temp_k: float) -> float:
    """Specific heat of copper (J/(kg K)) at ``temp_k`` (log-log interpolation of the NIST table)."""
    x = math.log(min(max(temp_k, _CU_T[0]), _CU_T[-1]))
    i = min(max(bisect.bisect_right(_LOG_T, x) - 1, 0), len(_LOG_T) - 2)
    f = (x - _LOG_T[i]) / (_LOG_T[i + 1] - _LOG_T[i])
    return math.exp(_LOG_C[i] + f * (_LOG_C[i + 1] - _LOG_C[i]))


@dataclass(frozen=True)
class CryostatParams:
    """Thermal parameters of the receiver cryostat (SI units)."""

    m1_kg: float = 6.0          # stage-1 radiation shield, copper equivalent
    m2_kg: float = 1.5          # stage-2 plate with LNAs
    emis_area1_m2: float = 0.0075  # effective emissivity x area of the MLI-wrapped shield
    g_support1_w_k: float = 0.015  # dewar wall -> stage 1 (supports, cables)
    g_12_w_k: float = 0.008     # stage 1 -> stage 2
    q_lna_w: float = 0.3        # LNA and sensor dissipation on stage 2
    a1_w_k: float = 0.16        # stage-1 cooling capacity slope
    t1_0_k: float = 32.0        # stage-1 no-load temperature
    a2_w_k: float = 0.12        # stage-2 cooling capacity slope
    t2_0_k: float = 9.0         # stage-2 no-load temperature
    g_head1_w_k: float = 0.04   # stopped cold head: wall -> stage 1
    g_head2_w_k: float = 0.01   # stopped cold head: stage 1 -> stage 2


class Cryostat:
    """Two-stage cryostat state: ``t1_k`` (~70 K), ``t2_k`` (~15 K) and whether the compressor runs."""

    def __init__(self, seed: int, t: float, params: CryostatParams | None = None,
                 outside_c: Callable[[float], float] | None = None):
        self.seed = seed
        self.p = params or CryostatParams()
        #: outside air temperature (degC) at a time (s); the reference site's true weather by default
        self.outside_c = outside_c or (lambda tt: true_weather(tt, seed).temp_c)
        self.running = True
        self.t = t
        self.t1_k, self.t2_k = 70.0, 15.0
        self.settle(t)

    def capacity_factor(self, t: float) -> float:
        """Cooling capacity relative to nominal: slow drift and outside-temperature dependence."""
        outside = self.outside_c(t)
        return (1.0 + 0.04 * float(smooth(t, self.seed, "cryo_capacity", 8 * 3600.0))) * (
            1.0 - 0.004 * (outside - 20.0))

    def derivatives(self, t1: float, t2: float, wall_k: float, k: float) -> tuple[float, float]:
        """dT1/dt, dT2/dt (K/s) for stage temperatures, dewar-wall temperature and capacity factor ``k``."""
        p = self.p
        q1 = p.emis_area1_m2 * SIGMA * (wall_k**4 - t1**4) + p.g_support1_w_k * (wall_k - t1)
        q12 = p.g_12_w_k * (t1 - t2)
        q2 = q12 + p.q_lna_w
        if self.running:
            q1 -= k * max(0.0, p.a1_w_k * (t1 - p.t1_0_k))
            q2 -= k * max(0.0, p.a2_w_k * (t2 - p.t2_0_k))
        else:
            q1 += p.g_head1_w_k * (wall_k - t1)
            q2 += p.g_head2_w_k * (t1 - t2)
        q1 -= q12
        return (q1 / (p.m1_kg * copper_heat_capacity(t1)), q2 / (p.m2_kg * copper_heat_capacity(t2)))

    def step(self, t: float) -> None:
        """Advance the state to simulated time ``t`` (s); the environment is taken at the step start."""
        dt_total = t - self.t
        if dt_total <= 0:
            return
        dt_total = min(dt_total, 2 * 86400.0)  # longer gaps: the cryostat has long reached its steady state
        wall_k = room_temp_c(self.t, self.seed, self.outside_c(self.t)) + 273.15
        k = self.capacity_factor(self.t)
        n = max(1, math.ceil(dt_total / MAX_STEP_S))
        h = dt_total / n
        t1, t2 = self.t1_k, self.t2_k
        for _ in range(n):
            d1, d2 = self.derivatives(t1, t2, wall_k, k)
            t1 = min(max(t1 + h * d1, 4.0), wall_k)
            t2 = min(max(t2 + h * d2, 4.0), wall_k)
        self.t1_k, self.t2_k, self.t = t1, t2, t

    def settle(self, t: float, hours: float = 24.0) -> None:
        """Put the cryostat in its steady state at ``t`` (runs the model for ``hours`` with fixed environment)."""
        self.t = t - hours * 3600.0
        saved = self.capacity_factor
        k = saved(t)
        self.capacity_factor = lambda _t: k  # type: ignore[method-assign]
        try:
            self.step(t)
        finally:
            self.capacity_factor = saved  # type: ignore[method-assign]


def room_temp_c(t: float, seed: int, outside_c: float) -> float:
    """Receiver-room temperature (degC): air-conditioned to 21 degC, following a quarter of the outside
    temperature's (``outside_c``, degC) departure from 18 degC, with the air conditioner's slow cycling."""
    return 21.0 + 0.25 * (outside_c - 18.0) + 0.4 * float(smooth(t, seed, "room_hvac", 5400.0))


def vacuum_mbar(t: float, t2_k: float, seed: int) -> float:
    """Dewar vacuum (mbar): outgassing since the last pump-down (90-day cycle, ~5e-7 rising to ~2e-6)
    multiplied by the gas the 15 K stage releases when it warms above ~20 K (capped at 0.05 mbar)."""
    phase_d = float(generator(seed, "vac_cycle").uniform(0.0, 90.0))
    age_d = (t / 86400.0 + phase_d) % 90.0
    base = 5e-7 * (1.0 + age_d / 30.0)
    release = 1.0 + math.exp(min((t2_k - 22.0) / 3.5, 50.0))
    return min(base * release, 0.05)


#: front-end supplies: PV suffix -> nominal voltage (V) and ripple noise (V rms)
PSU_NOMINAL: dict[str, tuple[float, float]] = {
    "P15": (15.0, 0.003), "N15": (-15.0, 0.003), "P5": (5.0, 0.002), "P28": (28.0, 0.008),
}


def psu_volts(t: float, seed: int, name: str, rng: np.random.Generator, room_c: float) -> float:
    """Output voltage (V) of supply ``name`` at time ``t``: nominal, a 100 ppm/K temperature coefficient on the
    room temperature ``room_c`` (degC), a 0.1 % slow drift and ripple noise."""
    nominal, ripple = PSU_NOMINAL[name]
    drift = 1.0 + 1e-4 * (room_c - 21.0) + 1e-3 * float(smooth(t, seed, f"psu_{name}", 6 * 3600.0))
    return nominal * drift + ripple * float(rng.standard_normal())
