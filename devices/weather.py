"""WX: the weather station (temperature, humidity, pressure, wind, dew point)."""

from __future__ import annotations

from ophyd import Component as Cpt
from ophyd import Kind

from devices.common import ObsDevice, Readback, Setpoint


class Weather(ObsDevice):
    """Weather station (WX IOC).  Hinted: wind speed (m/s) and air temperature (degC).

    Suspenders (plans) watch ``wind_spd``; ``sim_wind`` forces the simulated wind (m/s, -1 = natural).
    """

    temp = Cpt(Readback, "TEMP_RBV", kind=Kind.hinted)
    hum = Cpt(Readback, "HUM_RBV", kind=Kind.normal)
    pres = Cpt(Readback, "PRES_RBV", kind=Kind.normal)
    wind_spd = Cpt(Readback, "WIND_SPD_RBV", kind=Kind.hinted)
    wind_dir = Cpt(Readback, "WIND_DIR_RBV", kind=Kind.normal)
    dewpt = Cpt(Readback, "DEWPT_RBV", kind=Kind.normal)
    sim_wind = Cpt(Setpoint, "SIM_WIND_SP", kind=Kind.omitted)
    rate = Cpt(Setpoint, "RATE_SP", kind=Kind.config)
