"""TMS: cryogenic and power housekeeping of the front end (cryostat stages, vacuum, supplies, room).

The physics is in ``iocs.sim.housekeeping``: a two-stage cryostat integrated in simulated time, so a compressor
failure (``SIM_CRYO_FAIL_CMD`` = WARMUP) warms the stages over tens of simulated minutes and the alarm limits
trip as they would on the real receiver.  Published at ``RATE_SP`` (1 Hz real by default).
"""

from __future__ import annotations

from caproto import AlarmSeverity, AlarmStatus

from iocs.common import ObsIOC, pv_enum, pv_float
from iocs.sim.housekeeping import Cryostat, psu_volts, room_temp_c, vacuum_mbar
from iocs.sim.noise import generator
from iocs.sim.weather import site_weather
from obsctl.clock import ObservatoryClock
from obsctl.site import InstrumentConfig, Site


def _psu(suffix: str, nominal: float, doc: str):
    lo, hi = sorted((nominal * 0.94, nominal * 1.06))
    wlo, whi = sorted((nominal * 0.97, nominal * 1.03))
    dlo, dhi = sorted((0.0, nominal * 1.2))
    return pv_float(f"PSU_{suffix}_RBV", doc, "V", nominal, lo=dlo, hi=dhi, alarm=(lo, hi), warn=(wlo, whi),
                    precision=3)


class HousekeepingIOC(ObsIOC):
    """Cryogenic and power housekeeping.

    PVs (prefix ``SITE:TMS:``)
    --------------------------
    CRYO_15K_RBV      cryostat second stage, LNA plate (K); warning > 20, major > 30
    CRYO_70K_RBV      cryostat first stage, radiation shield (K); warning > 90, major > 120
    VAC_RBV           dewar vacuum (mbar); warning > 1e-5, major > 1e-4
    PSU_P15_RBV       +15 V front-end supply (V); warning +-3 %, major +-6 %
    PSU_N15_RBV       -15 V front-end supply (V); warning +-3 %, major +-6 %
    PSU_P5_RBV        +5 V logic supply (V); warning +-3 %, major +-6 %
    PSU_P28_RBV       +28 V noise-diode supply (V); warning +-3 %, major +-6 %
    ROOM_TEMP_RBV     receiver-room temperature (degC); warning outside 15..28, major outside 10..32
    COMP_STS          helium compressor RUNNING / STOPPED (major alarm when stopped)
    SIM_CRYO_FAIL_CMD simulation: OK = compressor runs, WARMUP = compressor failure (the stages warm up)
    RATE_SP           publication rate (Hz, real time)
    """

    cryo_15k = pv_float("CRYO_15K_RBV", "Cryostat 2nd stage (LNA plate) temp.", "K", 15.0, lo=0, hi=320,
                        alarm=(2.0, 30.0), warn=(4.0, 20.0), precision=3)
    cryo_70k = pv_float("CRYO_70K_RBV", "Cryostat 1st stage (shield) temperature", "K", 70.0, lo=0,
                        hi=320, alarm=(20.0, 120.0), warn=(30.0, 90.0), precision=2)
    vac = pv_float("VAC_RBV", "Dewar vacuum pressure", "mbar", 1e-6, lo=0, hi=0.1, alarm=(0.0, 1e-4),
                   warn=(0.0, 1e-5), precision=9)
    psu_p15 = _psu("P15", 15.0, "+15 V front-end supply")
    psu_n15 = _psu("N15", -15.0, "-15 V front-end supply")
    psu_p5 = _psu("P5", 5.0, "+5 V logic supply")
    psu_p28 = _psu("P28", 28.0, "+28 V noise-diode supply")
    room = pv_float("ROOM_TEMP_RBV", "Receiver-room temperature", "degC", 21.0, lo=0, hi=45, alarm=(10.0, 32.0),
                    warn=(15.0, 28.0), precision=2)
    comp = pv_enum("COMP_STS", "Helium compressor state", ["RUNNING", "STOPPED"])
    sim_fail = pv_enum("SIM_CRYO_FAIL_CMD", "Simulation: WARMUP = compressor failure", ["OK", "WARMUP"],
                       writable=True)
    rate = pv_float("RATE_SP", "Publication rate (real time)", "Hz", 1.0, lo=0.1, hi=10.0, writable=True,
                    precision=2)
    rate.putter(ObsIOC.wake_on_put)

    def __init__(self, site: Site, inst: InstrumentConfig, clock: ObservatoryClock, **kwargs):
        super().__init__(site, inst, clock, **kwargs)
        self.seed = site.simulation.seed
        self.cryostat = Cryostat(self.seed, clock.now(), outside_c=lambda t: site_weather(site, t).temp_c)
        self.rng = generator(self.seed, "tms_sensors")

    @cryo_15k.startup
    async def cryo_15k(self, instance, async_lib):
        while True:
            await self.publish()
            await self.pacer.sleep(1.0 / self.rate.value)

    async def publish(self) -> None:
        """Advance the cryostat to now and publish every reading (sensor noise included)."""
        t = self.clock.now()
        c = self.cryostat
        c.step(t)
        n = self.rng.standard_normal(4)
        await self.cryo_15k.write(c.t2_k + 0.01 * n[0], timestamp=t)
        await self.cryo_70k.write(c.t1_k + 0.05 * n[1], timestamp=t)
        await self.vac.write(vacuum_mbar(t, c.t2_k, self.seed) * (1.0 + 0.03 * n[2]), timestamp=t)
        room_c = room_temp_c(t, self.seed, c.outside_c(t))
        await self.room.write(room_c + 0.05 * n[3], timestamp=t)
        for name, pv in (("P15", self.psu_p15), ("N15", self.psu_n15), ("P5", self.psu_p5),
                         ("P28", self.psu_p28)):
            await pv.write(psu_volts(t, self.seed, name, self.rng, room_c), timestamp=t)

    @sim_fail.putter
    async def sim_fail(self, instance, value):
        t = self.clock.now()
        self.cryostat.step(t)  # integrate up to the change with the old compressor state
        self.cryostat.running = value == "OK"
        if self.cryostat.running:
            await self.comp.write("RUNNING", timestamp=t, status=AlarmStatus.NO_ALARM,
                                  severity=AlarmSeverity.NO_ALARM)
            await self.say("compressor restarted: cooling down")
        else:
            await self.comp.write("STOPPED", timestamp=t, status=AlarmStatus.STATE,
                                  severity=AlarmSeverity.MAJOR_ALARM)
            await self.say("compressor failure: cryostat warming up")
        return value


def make_ioc(site: Site, inst: InstrumentConfig, clock: ObservatoryClock) -> HousekeepingIOC:
    """The TMS IOC of a site."""
    return HousekeepingIOC(site, inst, clock)
