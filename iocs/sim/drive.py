"""Drive physics: axis kinematics, structure disturbances, refraction, encoder noise, sun-path sampling.

Plain functions and small state classes, no EPICS.  Angles are degrees, times seconds of simulated
(observatory) time, rates deg/s, accelerations deg/s^2.

Kinematics
----------
Each axis is a double integrator with a velocity limit ``max_rate`` and an acceleration limit
``max_accel``.  :meth:`Axis.step` moves it over ``dt`` towards a target that moves at constant velocity
(feed-forward), with the *time-optimal* bang-coast-bang profile in the target's frame.  The profile is
integrated exactly phase by phase (constant acceleration inside a phase), so a step of several simulated
seconds (clock speed 60x or more) neither overshoots nor oscillates: the axis arrives exactly on the
moving target and then moves with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from iocs.sim.noise import generator, smooth
from obsctl import astro
from obsctl.sky import Weather

#: position/velocity below which an axis counts as exactly on its target (deg, deg/s)
ARRIVE_POS = 1e-9
ARRIVE_VEL = 1e-9


@dataclass(frozen=True)
class AxisSpec:
    """Limits of one axis (deg, deg/s, deg/s^2)."""

    name: str
    min_deg: float
    max_deg: float
    max_rate: float
    max_accel: float


def _phase(p: float, u: float, a: float, umin: float, umax: float) -> tuple[float, float]:
    """First phase (acceleration deg/s^2, duration s) of the time-optimal move from relative state (p, u) to (0, 0).

    ``p`` is the position relative to the target (deg), ``u`` the relative velocity (deg/s); the relative
    velocity must stay within ``[umin, umax]`` (the absolute velocity limit seen in the target's frame).
    """
    if abs(p) < ARRIVE_POS and abs(u) < ARRIVE_VEL:
        return 0.0, math.inf
    brake = u * abs(u) / (2.0 * a)  # displacement while braking to rest now
    r = p + brake
    if u != 0.0 and abs(r) < ARRIVE_POS:  # on the braking curve
        return -math.copysign(a, u), abs(u) / a
    s = -1.0 if r > 0 else 1.0  # direction of the net move
    q = -s * p  # distance to go along s
    w = s * u  # speed along s (negative: moving away)
    w_lim = umax if s > 0 else -umin  # > 0
    if w > w_lim + 1e-12:  # above the speed limit (target velocity changed): slow down to it
        return -s * a, (w - w_lim) / a
    w_pk = math.sqrt(max(a * q + 0.5 * w * w, 0.0))  # peak speed of a triangular profile
    if w_pk <= w_lim:
        t_acc = (w_pk - w) / a
        if t_acc <= 1e-12:
            return -s * a, max(w, 0.0) / a
        return s * a, t_acc
    if w < w_lim - 1e-12:
        return s * a, (w_lim - w) / a
    cruise = q - w * w / (2.0 * a)
    if cruise <= 1e-12 or w <= 0.0:
        return -s * a, max(w, 0.0) / a
    return 0.0, cruise / w


class Axis:
    """One mount axis: position (deg) and velocity (deg/s), moved with rate and acceleration limits."""

    def __init__(self, spec: AxisSpec, pos: float, vel: float = 0.0):
        self.spec = spec
        self.pos = float(pos)
        self.vel = float(vel)
        self.arrived = True

    def copy(self) -> Axis:
        """An independent copy (for path prediction)."""
        out = Axis(self.spec, self.pos, self.vel)
        out.arrived = self.arrived
        return out

    def stop_point(self, lookahead_s: float = 0.0) -> float:
        """Where the axis comes to rest (deg) if it keeps its velocity ``lookahead_s`` and then brakes."""
        return self.pos + self.vel * lookahead_s + self.vel * abs(self.vel) / (2.0 * self.spec.max_accel)

    def step(self, dt: float, target: float, target_vel: float = 0.0) -> bool:
        """Advance ``dt`` seconds towards ``target`` (deg at the start of the step) moving at ``target_vel``.

        Returns True when the axis ends exactly on the moving target.
        """
        if dt <= 0.0:
            return self.arrived
        a, vmax = self.spec.max_accel, self.spec.max_rate
        vt = min(max(float(target_vel), -0.95 * vmax), 0.95 * vmax)
        p, u = self.pos - target, self.vel - vt
        left = dt
        for _ in range(24):
            acc, dur = _phase(p, u, a, -vmax - vt, vmax - vt)
            if math.isinf(dur):
                p = u = 0.0
                break
            h = min(dur, left)
            p += u * h + 0.5 * acc * h * h
            u += acc * h
            left -= h
            if left <= 0.0:
                break
        else:  # chattering around the target: coast what is left
            p += u * left
        self.arrived = abs(p) < ARRIVE_POS and abs(u) < ARRIVE_VEL
        if self.arrived:
            p = u = 0.0
        self.pos = target + vt * dt + p
        self.vel = vt + u
        return self.arrived


# ---- structure and sensors ---------------------------------------------------------------------
def wind_disturbance_deg(t: float, seed: int, axis: str, wind_m_s: float) -> float:
    """Servo error (deg) from wind torque on the structure: ~1 mdeg rms at 10 m/s, growing as wind^2.

    Smooth in time (gusts of ~5-20 s); deterministic given the seed.
    """
    amp = 0.001 * (max(wind_m_s, 0.0) / 10.0) ** 2
    return amp * smooth(t, seed, f"drv_wind_{axis}", 10.0) if amp > 0 else 0.0


class EncoderNoise:
    """White encoder noise (deg rms ``sigma``) for one read head, seeded."""

    def __init__(self, seed: int, key: str, sigma: float):
        self.rng = generator(seed, key)
        self.sigma = sigma

    def __call__(self) -> float:
        """One reading's noise (deg)."""
        return float(self.rng.normal(0.0, self.sigma)) if self.sigma > 0 else 0.0


# ---- corrections -------------------------------------------------------------------------------
def hadec_to_azel(ha: float, dec: float, lat: float) -> tuple[float, float]:
    """Scalar HA/Dec -> Az/El (deg), as :func:`obsctl.astro.hadec_to_azel`."""
    az, el = astro.hadec_to_azel(ha, dec, lat)
    return float(az), float(el)


def refraction_offsets(ha: float, dec: float, lat: float, weather: Weather) -> tuple[float, float, float]:
    """Refraction as HA/Dec corrections (deg): (dHA, dDec, elevation) at apparent position (ha, dec).

    Refraction lifts the apparent elevation by R (:func:`obsctl.astro.refraction_deg` from the surface
    weather) along the vertical; the corrections are the HA/Dec differences of that lifted direction.
    """
    az, el = hadec_to_azel(ha, dec, lat)
    r = float(astro.refraction_deg(el, weather.temp_c, weather.pressure_hpa, weather.humidity_pct))
    if r <= 0.0:
        return 0.0, 0.0, el
    ha2, dec2 = astro.azel_to_hadec(az, min(el + r, 90.0), lat)
    return float(astro.wrap180(float(ha2) - ha)), float(dec2) - dec, el


def sun_distance(ha: float, dec: float, sun_ha: float, sun_dec: float) -> float:
    """Angular distance (deg) between a pointing and the sun, both in apparent HA/Dec."""
    return float(astro.angular_distance(ha, dec, sun_ha, sun_dec))


def predict_path(ha_axis: Axis, dec_axis: Axis, command, t0: float, max_s: float = 7200.0,
                 max_step_deg: float = 0.25) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample the path the axes will follow towards ``command(t) -> (ha, dec)`` (encoder deg).

    Simulates copies of the axes in steps short enough that neither moves more than ``max_step_deg``
    per step, until both sit on the target (or ``max_s`` seconds).  Returns times (s), HA and Dec (deg).
    """
    ha, dec = ha_axis.copy(), dec_axis.copy()
    h = max_step_deg / max(ha.spec.max_rate, dec.spec.max_rate)
    ts, has, decs = [t0], [ha.pos], [dec.pos]
    t = t0
    c0 = command(t)
    while t - t0 < max_s:
        c1 = command(t + h)
        done_h = ha.step(h, c0[0], (c1[0] - c0[0]) / h)
        done_d = dec.step(h, c0[1], (c1[1] - c0[1]) / h)
        t += h
        c0 = c1
        ts.append(t)
        has.append(ha.pos)
        decs.append(dec.pos)
        if done_h and done_d:
            break
    return np.array(ts), np.array(has), np.array(decs)


def entry_time(axes0: list[Axis] | tuple[Axis, ...], cmds: tuple[tuple[float, float], ...], t0: float, dt: float,
               tol: float) -> float | None:
    """When both axes, stepped from ``axes0`` at ``t0`` for ``dt`` s, come within ``tol`` deg of their command.

    ``cmds`` holds each axis's command at ``t0`` and at ``t0 + dt`` (linear in between).  The kinematics are
    exact, so the instant is found by bisection on copies of the axes (to 1/1000 of the step): the servo
    judges "on source" continuously, not only at the control cycles that publish it.  Returns ``t0`` if the
    axes are within ``tol`` then, None if they are not by ``t0 + dt`` (s).  The profile never overshoots, so
    axes within the tolerance stay within it.
    """
    def within(h: float) -> bool:
        for ax0, (a0, a1) in zip(axes0, cmds, strict=True):
            ax, rate = ax0.copy(), (a1 - a0) / dt
            ax.step(h, a0, rate)
            if abs(a0 + rate * h - ax.pos) >= tol:
                return False
        return True

    lo, hi = 0.0, dt
    if within(lo):
        return t0
    if not within(hi):
        return None
    for _ in range(10):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if within(mid) else (mid, hi)
    return t0 + hi
