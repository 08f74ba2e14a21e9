"""Deterministic noise sources shared by the simulators.

``smooth(t, seed, ...)`` is a band-limited pseudo-random signal of time (sum of sines with seeded
phases and periods): the same seed and time give the same value in every process, so independent IOC
processes agree on the simulated world.
"""

from __future__ import annotations

import zlib

import numpy as np


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def smooth(t: float | np.ndarray, seed: int, key: str, period_s: float, n: int = 6) -> float | np.ndarray:
    """Zero-mean, unit-rms smooth random signal with variations on time scales ~``period_s`` (s).

    ``key`` names the quantity so different quantities with the same seed are independent.
    """
    rng = _rng(seed, key)
    periods = period_s * rng.uniform(0.3, 1.5, n)
    phases = rng.uniform(0, 2 * np.pi, n)
    amps = rng.uniform(0.5, 1.0, n)
    amps /= np.sqrt(np.sum(amps**2) / 2.0)
    t = np.asarray(t, dtype=float)
    out = np.sum(amps[:, None] * np.sin(2 * np.pi * t.reshape(-1)[None, :] / periods[:, None]
                                        + phases[:, None]), axis=0)
    return float(out[0]) if t.ndim == 0 else out.reshape(t.shape)


def generator(seed: int, key: str) -> np.random.Generator:
    """A seeded random generator for white noise of one quantity."""
    return _rng(seed, key)
