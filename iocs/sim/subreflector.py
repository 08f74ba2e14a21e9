"""Subreflector physics: three actuators (tilt X, tilt Y, focus Z) and what they do to the beam.

Motion
    Each axis moves toward its target at its maximum rate (no overshoot) within its travel; once every axis
    has arrived the structure settles for ``settle_s`` before the subreflector counts as in position.  The
    readbacks are the true positions plus encoder noise (Gaussian, seeded).  Tilts are in arcmin, focus in
    mm, times in seconds of simulated time.

Optics (a Cassegrain with primary focal length ``f`` and magnification ``M``)
    * Axial defocus ``dz`` (focus position minus the best focus): the path error across the aperture is
      ``delta(r) = dz (cos(tp) + cos(ts))`` with ``tan(tp/2) = r / 2f`` and ``tan(ts/2) = tan(tp/2) / M``
      (the ray angles at the prime and the secondary focus).  The gain relative to perfect focus is the
      phase efficiency ``|sum A(r) exp(i k delta) r dr|^2 / |sum A(r) r dr|^2`` for a parabolic-on-pedestal
      illumination ``A(r)`` with the given edge taper; for small errors it is Ruze's ``exp(-(k sigma)^2)``
      with ``sigma`` the rms path error (piston removed).
    * Tilt ``a`` (about the vertex) moves the image of the feed laterally by ``d = a L`` (``L`` the lever arm);
      the beam moves the other way by ``BDF d / f`` with the beam deviation factor of Lo (1960),
      ``BDF = (1 + 0.36 (D/4f)^2) / (1 + (D/4f)^2)``.  Tilt X moves the beam along X (hour angle, true
      angle on the sky), tilt Y along Y (declination).  The coma loss of a tilt is neglected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from iocs.sim.noise import generator

ARCMIN = math.pi / (180.0 * 60.0)  # rad per arcmin
C_M_S = 299_792_458.0
BDF_K = 0.36  # beam deviation factor constant (Lo 1960) for a typical 10-12 dB taper


@dataclass(frozen=True)
class AxisSpec:
    """One actuator: travel limits, rate, in-position tolerance and encoder noise (axis units)."""

    name: str
    units: str
    lo: float
    hi: float
    rate: float        # units per simulated second
    tolerance: float   # |readback - target| that counts as in position
    noise: float       # encoder noise (rms)

    def check(self, value: float) -> float:
        """``value`` as a float inside the travel, else ValueError naming the axis and its range."""
        v = float(value)
        if not math.isfinite(v) or not self.lo <= v <= self.hi:
            raise ValueError(f"{self.name} {value} outside {self.lo:g}..{self.hi:g} {self.units}")
        return v


#: default actuators: tilt X, tilt Y (arcmin), focus Z (mm)
AXES: dict[str, AxisSpec] = {
    "TILTX": AxisSpec("TILTX", "arcmin", -60.0, 60.0, rate=3.0, tolerance=0.1, noise=0.01),
    "TILTY": AxisSpec("TILTY", "arcmin", -60.0, 60.0, rate=3.0, tolerance=0.1, noise=0.01),
    "FOCUS": AxisSpec("FOCUS", "mm", -30.0, 30.0, rate=0.5, tolerance=0.02, noise=0.003),
}


@dataclass(frozen=True)
class Optics:
    """Geometry of the antenna seen by the subreflector (lengths in m, taper in dB)."""

    diameter_m: float = 26.0
    focal_m: float = 10.92           # primary focal length (f/D 0.42)
    magnification: float = 8.0      # Cassegrain magnification M
    lever_m: float = 1.2             # lateral feed-image displacement per radian of tilt
    edge_taper_db: float = 12.0      # illumination at the rim relative to the centre

    @property
    def bdf(self) -> float:
        """Beam deviation factor (Lo 1960)."""
        q = (self.diameter_m / (4.0 * self.focal_m)) ** 2
        return (1.0 + BDF_K * q) / (1.0 + q)

    def _aperture(self, n: int = 400) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Radii (m), illumination-area weights and the path factor (cos tp + cos ts) on a radial grid."""
        r = (np.arange(n) + 0.5) * (self.diameter_m / 2.0) / n
        pedestal = 10.0 ** (-self.edge_taper_db / 20.0)
        amp = pedestal + (1.0 - pedestal) * (1.0 - (2.0 * r / self.diameter_m) ** 2)
        tp = 2.0 * np.arctan(r / (2.0 * self.focal_m))
        ts = 2.0 * np.arctan(np.tan(tp / 2.0) / self.magnification)
        return r, amp * r, np.cos(tp) + np.cos(ts)

    def defocus_gain(self, dz_mm: float, wavelength_m: float) -> float:
        """Gain relative to perfect focus for an axial focus error ``dz_mm`` (mm) at ``wavelength_m`` (m)."""
        _, w, path = self._aperture()
        k = 2.0 * math.pi / wavelength_m
        phase = k * (dz_mm * 1e-3) * path
        field_ = np.sum(w * np.exp(1j * phase))
        return float(abs(field_) ** 2 / np.sum(w) ** 2)

    def ruze_gain(self, dz_mm: float, wavelength_m: float) -> float:
        """Ruze's small-error approximation ``exp(-(k sigma)^2)`` of :meth:`defocus_gain`."""
        _, w, path = self._aperture()
        delta = dz_mm * 1e-3 * path
        mean = np.sum(w * delta) / np.sum(w)
        sigma = math.sqrt(float(np.sum(w * (delta - mean) ** 2) / np.sum(w)))
        return math.exp(-((2.0 * math.pi * sigma / wavelength_m) ** 2))

    def beam_offset_deg(self, tilt_arcmin: float) -> float:
        """Beam displacement (deg on the sky, true angle) for a subreflector tilt ``tilt_arcmin``."""
        d = tilt_arcmin * ARCMIN * self.lever_m
        return -math.degrees(self.bdf * d / self.focal_m)


def wavelength_m(freq_mhz: float) -> float:
    """Wavelength (m) at ``freq_mhz`` (MHz)."""
    return C_M_S / (freq_mhz * 1e6)


@dataclass
class Subreflector:
    """The three actuators moving in simulated time.

    ``command(axis, target)`` retargets one axis; ``advance(t)`` integrates the motion to observatory time
    ``t`` and returns the state: ``MOVING`` (an axis is travelling), ``SETTLING`` (all arrived, settling) or
    ``IN_POSITION``.
    """

    axes: dict[str, AxisSpec] = field(default_factory=lambda: dict(AXES))
    settle_s: float = 1.5
    seed: int = 1
    start: dict[str, float] = field(default_factory=dict)
    t: float | None = None

    def __post_init__(self) -> None:
        self.pos = {k: float(self.start.get(k, 0.0)) for k in self.axes}
        self.target = dict(self.pos)
        self.arrived_at: float | None = -math.inf   # time every axis reached its target (None: moving)
        self.stopped = False
        self._rng = generator(self.seed, "SUB:encoders")

    def command(self, axis: str, target: float, t: float) -> bool:
        """Send ``axis`` toward ``target`` (checked against the travel); True if anything has to move."""
        spec = self.axes[axis]
        value = spec.check(target)
        self.advance(t)
        self.target[axis] = value
        if abs(self.pos[axis] - value) > 1e-12:
            self.arrived_at = None
            return True
        return False

    def stop(self, t: float) -> None:
        """Stop every axis where it is now (targets become the positions; the structure settles)."""
        self.advance(t)
        moving = self.arrived_at is None
        self.target = dict(self.pos)
        if moving:
            self.arrived_at = t

    def advance(self, t: float) -> str:
        """Move the axes to time ``t`` (observatory s); returns the state at ``t``."""
        if self.t is None:
            self.t = t
        dt = max(0.0, t - self.t)
        t_arrive = self.t
        for k, spec in self.axes.items():
            gap = self.target[k] - self.pos[k]
            if gap == 0.0:
                continue
            need = abs(gap) / spec.rate
            if need <= dt:
                self.pos[k] = self.target[k]
                t_arrive = max(t_arrive, self.t + need)
            else:
                self.pos[k] += math.copysign(spec.rate * dt, gap)
        if self.arrived_at is None and all(self.pos[k] == self.target[k] for k in self.axes):
            self.arrived_at = t_arrive
        self.t = max(self.t, t)
        return self.state(t)

    def state(self, t: float) -> str:
        """MOVING, SETTLING or IN_POSITION at time ``t`` (after :meth:`advance`)."""
        if self.arrived_at is None:
            return "MOVING"
        return "SETTLING" if t < self.arrived_at + self.settle_s else "IN_POSITION"

    def time_to_next_event(self, t: float) -> float:
        """Simulated seconds until the next state change (inf when in position)."""
        if self.arrived_at is None:
            return max(abs(self.target[k] - self.pos[k]) / s.rate for k, s in self.axes.items())
        left = self.arrived_at + self.settle_s - t
        return left if left > 0 else math.inf

    def readback(self) -> dict[str, float]:
        """Encoder readings: true positions plus encoder noise (axis units)."""
        z = self._rng.standard_normal(len(self.axes))
        return {k: self.pos[k] + s.noise * float(z[i]) for i, (k, s) in enumerate(self.axes.items())}
