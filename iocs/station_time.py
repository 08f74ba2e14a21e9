"""TIME: station time from the observatory clock.

PVs (prefix ``SITE:TIME:``)
---------------------------
UTC_RBV        ISO-8601 UTC (string)
UNIX_RBV       UTC as POSIX seconds (s)
MJD_RBV        Modified Julian Date, UTC (d)
DOY_RBV        day of year, UTC (d)
LST_RBV        local apparent sidereal time (h)
LST_STR_RBV    local apparent sidereal time, HH:MM:SS.ss
UT1_UTC_RBV    UT1-UTC from the IERS tables (s)
TAI_UTC_RBV    leap seconds, TAI-UTC (s)
PPS_STS        1PPS synchronisation: LOCKED, HOLDOVER, UNLOCKED
PPS_OFFSET_RBV offset of the clock from the 1PPS edge (us)
SPEED_RBV      simulation speed factor (sim s per real s)
RATE_SP        publication rate (Hz)
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from iocs.common import ObsIOC, pv_enum, pv_float, pv_str
from iocs.sim.station_time import pps_offset_us
from obsctl import astro
from obsctl.clock import ObservatoryClock
from obsctl.site import InstrumentConfig, Site


def hms(hours: float, decimals: int = 2) -> str:
    """Hours as ``HH:MM:SS.ss``."""
    total = round((hours % 24.0) * 3600.0, decimals)
    h, rem = divmod(total, 3600.0)
    m, s = divmod(rem, 60.0)
    width = 3 + decimals if decimals else 2
    return f"{int(h) % 24:02d}:{int(m):02d}:{s:0{width}.{decimals}f}"


class StationTimeIOC(ObsIOC):
    """Station time: UTC, MJD, local apparent sidereal time, UT1-UTC, leap seconds, 1PPS status."""

    utc = pv_str("UTC_RBV", "UTC, ISO-8601")
    unix = pv_float("UNIX_RBV", "UTC as POSIX seconds", "s", precision=3)
    mjd = pv_float("MJD_RBV", "Modified Julian Date (UTC)", "d", precision=8)
    doy = pv_float("DOY_RBV", "Day of year (UTC), 1 = 1 January 00:00", "d", lo=1, hi=367, precision=5)
    lst = pv_float("LST_RBV", "Local apparent sidereal time", "h", lo=0, hi=24, precision=7)
    lst_str = pv_str("LST_STR_RBV", "Local apparent sidereal time HH:MM:SS.ss")
    ut1_utc = pv_float("UT1_UTC_RBV", "UT1-UTC from IERS tables", "s", lo=-0.9, hi=0.9, precision=6)
    tai_utc = pv_float("TAI_UTC_RBV", "TAI-UTC (leap seconds)", "s", lo=0, hi=100, precision=1)
    pps = pv_enum("PPS_STS", "1PPS synchronisation status", ["LOCKED", "HOLDOVER", "UNLOCKED"])
    pps_offset = pv_float("PPS_OFFSET_RBV", "Clock offset from the 1PPS edge", "us", lo=-50, hi=50,
                          alarm=(-10.0, 10.0), warn=(-1.0, 1.0), precision=3)
    speed = pv_float("SPEED_RBV", "Speed factor, sim s per real s", "x", lo=0, hi=10000, precision=2)
    rate = pv_float("RATE_SP", "Publication rate", "Hz", 10.0, lo=0.1, hi=50.0, writable=True, precision=1)
    rate.putter(ObsIOC.wake_on_put)

    def __init__(self, site: Site, inst: InstrumentConfig, clock: ObservatoryClock, **kwargs):
        super().__init__(site, inst, clock, **kwargs)
        self.loc = astro.site_location(site)
        self.sidereal = astro.SiderealClock(self.loc, anchor_s=60.0)
        self._slow_t = -math.inf

    @utc.startup
    async def utc(self, instance, async_lib):
        await self.speed.write(self.clock.speed, timestamp=self.clock.now())
        while True:
            await self.publish()
            await self.pacer.sleep(1.0 / self.rate.value)

    async def publish(self) -> None:
        """Publish every time PV for the current instant."""
        t = self.clock.now()
        if abs(t - self._slow_t) > 60.0:  # IERS values change slowly: refresh each simulated minute
            self._slow_t = t
            await self.ut1_utc.write(astro.ut1_minus_utc(t), timestamp=t)
            await self.tai_utc.write(astro.tai_minus_utc(t), timestamp=t)
            self.sidereal(t)  # re-anchor before taking the instant to publish
            t = self.clock.now()
        d = datetime.fromtimestamp(t, tz=UTC)
        lst_h = float(self.sidereal(t)) / 15.0
        offset = pps_offset_us(t, self.site.simulation.seed)
        await self.pps_offset.write(offset, timestamp=t)
        state = "LOCKED" if abs(offset) < 1.0 else ("HOLDOVER" if abs(offset) < 10.0 else "UNLOCKED")
        if self.pps.value != state:
            await self.pps.write(state, timestamp=t)
        await self.utc.write(d.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z", timestamp=t)
        await self.unix.write(t, timestamp=t)
        await self.mjd.write(astro.mjd(t), timestamp=t)
        await self.doy.write(d.timetuple().tm_yday + (t % 86400.0) / 86400.0, timestamp=t)
        await self.lst.write(lst_h, timestamp=t)
        await self.lst_str.write(hms(lst_h), timestamp=t)


def make_ioc(site: Site, inst: InstrumentConfig, clock: ObservatoryClock) -> StationTimeIOC:
    """The TIME IOC of a site."""
    return StationTimeIOC(site, inst, clock)
