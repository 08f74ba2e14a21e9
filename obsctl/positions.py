"""The drive's position packet: one waveform carrying a consistent snapshot of where the dish points.

The drive IOC publishes ``SITE:DRV:POS_PKT`` every control cycle.  Instruments that must tag samples
with position (radiometer, correlator, pulsar timer) monitor it and interpolate to their own sample
times with :class:`PositionTrack`, so each sample carries the position at its own instant.

Packet layout (doubles, index: meaning, unit):

====  =============  =========================================================================
 0    T              observatory time of the snapshot (POSIX s, UTC)
 1    HA_ENC         hour-angle encoder (deg)
 2    DEC_ENC        declination encoder 1 (deg)
 3    HA_OBS         observed apparent HA = encoder - pointing model - refraction (deg)
 4    DEC_OBS        observed apparent Dec (deg)
 5    HA_RATE        d(HA_OBS)/dt (deg/s)
 6    DEC_RATE       d(DEC_OBS)/dt (deg/s)
 7    HA_SKY         true apparent HA of the beam (simulation truth; = HA_OBS on hardware) (deg)
 8    DEC_SKY        true apparent Dec of the beam (deg)
 9    STATE          drive state index (DRV:STATE_STS)
10    ON_SOURCE      1 when on source and settled, else 0
====  =============  =========================================================================
"""

from __future__ import annotations

from collections import deque

import numpy as np

FIELDS = ("T", "HA_ENC", "DEC_ENC", "HA_OBS", "DEC_OBS", "HA_RATE", "DEC_RATE", "HA_SKY", "DEC_SKY",
          "STATE", "ON_SOURCE")
IDX = {name: i for i, name in enumerate(FIELDS)}
LENGTH = len(FIELDS)


def pack(**values: float) -> list[float]:
    """A packet from keyword fields (missing ones are 0)."""
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise KeyError(f"unknown packet fields {sorted(unknown)}")
    return [float(values.get(name, 0.0)) for name in FIELDS]


class PositionTrack:
    """Recent position packets, interpolated (or extrapolated at the packet rates) to any time.

    Keeps the last ``maxlen`` packets.  Between packets the position is interpolated linearly; past the
    newest packet it is extrapolated with that packet's rates, at most ``max_extrapolate_s`` seconds.
    """

    def __init__(self, maxlen: int = 256, max_extrapolate_s: float = 30.0):
        self.packets: deque[np.ndarray] = deque(maxlen=maxlen)
        self.max_extrapolate_s = max_extrapolate_s

    def add(self, packet: np.ndarray | list[float]) -> None:
        """Append a packet (ignored if not newer than the last one)."""
        p = np.asarray(packet, dtype=float)
        if p.size < LENGTH:
            return
        if self.packets and p[0] <= self.packets[-1][0]:
            return
        self.packets.append(p[:LENGTH])

    @property
    def latest(self) -> np.ndarray | None:
        """Newest packet, or None."""
        return self.packets[-1] if self.packets else None

    def at(self, t: np.ndarray) -> dict[str, np.ndarray]:
        """Fields at times ``t`` (POSIX s); NaN where no packet is close enough.

        Times between two packets are interpolated however far apart the packets are; only extrapolation
        (before the oldest or after the newest packet) is limited to ``max_extrapolate_s``.
        Returns arrays for HA_ENC, DEC_ENC, HA_OBS, DEC_OBS, HA_SKY, DEC_SKY and the nearest-packet
        STATE, ON_SOURCE and packet time PKT_T (for skew accounting).
        """
        t = np.atleast_1d(np.asarray(t, dtype=float))
        out: dict[str, np.ndarray] = {}
        if not self.packets:
            for k in ("HA_ENC", "DEC_ENC", "HA_OBS", "DEC_OBS", "HA_SKY", "DEC_SKY", "STATE", "ON_SOURCE",
                      "PKT_T"):
                out[k] = np.full(t.shape, np.nan)
            return out
        arr = np.array(self.packets)
        pt = arr[:, 0]
        i = np.clip(np.searchsorted(pt, t, side="right") - 1, 0, len(pt) - 1)
        dt = t - pt[i]
        nxt = np.minimum(i + 1, len(pt) - 1)
        span = pt[nxt] - pt[i]
        inside = (nxt > i) & (dt >= 0)
        frac = np.where(inside, dt / np.where(span > 0, span, 1.0), 0.0)
        too_far = ~inside & ((dt > self.max_extrapolate_s) | (dt < -self.max_extrapolate_s))
        for name, rate in (("HA", "HA_RATE"), ("DEC", "DEC_RATE")):
            for kind in ("ENC", "OBS", "SKY"):
                k = IDX[f"{name}_{kind}"]
                a, b = arr[i, k], arr[nxt, k]
                extrap = a + arr[i, IDX[rate]] * dt
                val = np.where(inside, a + (b - a) * frac, extrap)
                out[f"{name}_{kind}"] = np.where(too_far, np.nan, val)
        near = np.where(np.abs(t - pt[nxt]) < np.abs(dt), nxt, i)
        out["STATE"] = arr[near, IDX["STATE"]]
        out["ON_SOURCE"] = arr[near, IDX["ON_SOURCE"]]
        out["PKT_T"] = pt[near]
        return out
