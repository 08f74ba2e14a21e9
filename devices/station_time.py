"""TIME: the station-time device (UTC, MJD, LST, UT1-UTC, leap seconds, 1PPS)."""

from __future__ import annotations

from ophyd import Component as Cpt
from ophyd import Kind

from devices.common import ObsDevice, Readback, Setpoint


class StationTime(ObsDevice):
    """Station time (TIME IOC): UTC, MJD, local apparent sidereal time, IERS values, 1PPS status.

    Hinted: LST (h) and MJD.  ``now()`` returns the observatory time (POSIX s, UTC) read from the IOC.
    """

    utc = Cpt(Readback, "UTC_RBV", kind=Kind.normal, string=True)
    unix = Cpt(Readback, "UNIX_RBV", kind=Kind.normal)
    mjd = Cpt(Readback, "MJD_RBV", kind=Kind.hinted)
    doy = Cpt(Readback, "DOY_RBV", kind=Kind.omitted)
    lst = Cpt(Readback, "LST_RBV", kind=Kind.hinted)
    lst_str = Cpt(Readback, "LST_STR_RBV", kind=Kind.normal, string=True)
    ut1_utc = Cpt(Readback, "UT1_UTC_RBV", kind=Kind.config)
    tai_utc = Cpt(Readback, "TAI_UTC_RBV", kind=Kind.config)
    pps = Cpt(Readback, "PPS_STS", kind=Kind.normal, string=True)
    pps_offset = Cpt(Readback, "PPS_OFFSET_RBV", kind=Kind.omitted)
    speed = Cpt(Readback, "SPEED_RBV", kind=Kind.config)
    rate = Cpt(Setpoint, "RATE_SP", kind=Kind.config)

    def now(self) -> float:
        """Observatory time (POSIX s, UTC) as published by the IOC, read now."""
        return float(self.unix.fresh()[0])

