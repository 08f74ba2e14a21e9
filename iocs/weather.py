"""WX: the weather station (temperature, humidity, pressure, wind, dew point).

Readings follow simulated time (``iocs.sim.weather``: the site's true weather plus sensor noise) and are
published at ``RATE_SP`` real Hz (1 Hz by default).  The drive links WIND_SPD_RBV for its wind stow; the
radiometer and correlator simulators compute the atmosphere from the same true weather.
"""

from __future__ import annotations

from iocs.common import ObsIOC, pv_float
from iocs.sim.weather import WeatherStation
from obsctl.clock import ObservatoryClock
from obsctl.site import InstrumentConfig, Site

#: wind speed above which the station warns (m/s); the major alarm is the site's wind_stow_m_s
WIND_WARN_M_S = 10.0


class WeatherIOC(ObsIOC):
    """Weather station.

    PVs (prefix ``SITE:WX:``)
    -------------------------
    TEMP_RBV      air temperature (degC); warning < -5 or > 35, major < -10 or > 40
    HUM_RBV       relative humidity (%); warning > 90 (condensation), major >= 99 (fog/rain)
    PRES_RBV      station pressure (hPa); warning outside 820..890, major outside 800..910
    WIND_SPD_RBV  wind speed (m/s); warning > 10, major >= the site's wind stow speed
    WIND_DIR_RBV  wind direction, where the wind blows from (deg, clockwise from north)
    DEWPT_RBV     dew point from TEMP_RBV and HUM_RBV, Magnus formula (degC)
    SIM_WIND_SP   simulation: force the wind speed (m/s), -1 = natural wind; 0..60 or -1
    RATE_SP       publication rate (Hz, real time)
    """

    temp = pv_float("TEMP_RBV", "Air temperature", "degC", 15.0, lo=-20, hi=50, alarm=(-10.0, 40.0),
                    warn=(-5.0, 35.0), precision=2)
    hum = pv_float("HUM_RBV", "Relative humidity", "%", 50.0, lo=0, hi=100, alarm=(-1.0, 99.0),
                   warn=(-0.5, 90.0), precision=1)
    pres = pv_float("PRES_RBV", "Station pressure (not at sea level)", "hPa", 850.0, lo=780, hi=920,
                    alarm=(800.0, 910.0), warn=(820.0, 890.0), precision=2)
    wind_spd = pv_float("WIND_SPD_RBV", "Wind speed", "m/s", 0.0, lo=0, hi=60, alarm=(-1.0, 15.0),
                        warn=(-0.5, WIND_WARN_M_S), precision=2)
    wind_dir = pv_float("WIND_DIR_RBV", "Wind direction (from), east of north", "deg", 0.0, lo=0,
                        hi=360, precision=1)
    dewpt = pv_float("DEWPT_RBV", "Dew point (Magnus, from TEMP and HUM)", "degC", 5.0, lo=-40, hi=40,
                     precision=2)
    sim_wind = pv_float("SIM_WIND_SP", "Simulated wind speed, -1 = natural", "m/s", -1.0,
                        lo=-1, hi=60, writable=True, precision=2)
    rate = pv_float("RATE_SP", "Publication rate (real time)", "Hz", 1.0, lo=0.1, hi=10.0, writable=True,
                    precision=2)
    rate.putter(ObsIOC.wake_on_put)

    def __init__(self, site: Site, inst: InstrumentConfig, clock: ObservatoryClock, **kwargs):
        super().__init__(site, inst, clock, **kwargs)
        self.station = WeatherStation(site.simulation.seed, longitude_deg=site.longitude_deg,
                                      latitude_deg=site.latitude_deg, height_m=site.height_m)

    @temp.startup
    async def temp(self, instance, async_lib):
        while True:
            await self.publish()
            await self.pacer.sleep(1.0 / self.rate.value)

    async def publish(self) -> None:
        """Read the sensors at the current simulated instant and publish every reading."""
        t = self.clock.now()
        r = self.station.read(t)
        await self.temp.write(r["temp_c"], timestamp=t)
        await self.hum.write(r["humidity_pct"], timestamp=t)
        await self.pres.write(r["pressure_hpa"], timestamp=t)
        await self.wind_spd.write(r["wind_m_s"], timestamp=t)
        await self.wind_dir.write(r["wind_dir_deg"], timestamp=t)
        await self.dewpt.write(r["dew_point_c"], timestamp=t)

    @sim_wind.putter
    async def sim_wind(self, instance, value):
        if -1.0 < value < 0.0:
            await self.reject(f"SIM_WIND_SP {value}: use -1 (natural) or 0..60 m/s")
        self.station.wind_override = float(value)
        await self.say("wind: natural" if value < 0 else f"wind forced to {value:.1f} m/s")
        return value


def weather_class(wind_stow_m_s: float) -> type[WeatherIOC]:
    """The weather IOC class whose wind-speed major alarm is the site's wind stow speed (m/s)."""
    if not wind_stow_m_s > WIND_WARN_M_S:
        raise ValueError(f"wind_stow_m_s {wind_stow_m_s} must exceed the {WIND_WARN_M_S} m/s wind warning")

    class SiteWeatherIOC(WeatherIOC):
        wind_spd = pv_float("WIND_SPD_RBV", f"Wind speed (stow at {wind_stow_m_s:g} m/s)", "m/s", 0.0, lo=0,
                            hi=60, alarm=(-1.0, wind_stow_m_s), warn=(-0.5, WIND_WARN_M_S), precision=2)

    SiteWeatherIOC.__doc__ = WeatherIOC.__doc__
    return SiteWeatherIOC


def make_ioc(site: Site, inst: InstrumentConfig, clock: ObservatoryClock) -> WeatherIOC:
    """The WX IOC of a site."""
    return weather_class(site.mount.wind_stow_m_s)(site, inst, clock)
