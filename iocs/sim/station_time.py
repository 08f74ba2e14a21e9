"""Station-time physics: the GPS-disciplined clock's offset from the 1PPS edge."""

from __future__ import annotations

from iocs.sim.noise import smooth


def pps_offset_us(t: float, seed: int) -> float:
    """Offset of the station clock from 1PPS (us): ~50 ns rms wander over tens of minutes."""
    return 0.05 * smooth(t, seed, "pps", 1800.0)
