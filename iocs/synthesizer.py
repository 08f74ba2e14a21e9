"""SYN1, SYN2: frequency synthesizers (HP 8662A signal generator, HP 3336B synthesizer/level generator).

The behaviour follows ``inst.model`` (``iocs.sim.synthesizer.MODELS``): frequency and level limits, frequency
resolution (FREQ_RBV is the synthesised, quantised frequency), re-lock time after a frequency change (in
simulated time) and the instrument's own HP-IB command syntax on COMMAND_SP, so a test program can drive the
instrument by its commands.  Frequencies are in Hz, levels in dBm.
"""

from __future__ import annotations

import asyncio
import math

from caproto import AlarmSeverity, AlarmStatus

from iocs.common import ObsIOC, pv_enum, pv_float, pv_str
from iocs.sim.synthesizer import MODELS, CommandError, SynthModel, parse_command
from obsctl.clock import ObservatoryClock
from obsctl.site import InstrumentConfig, Site


class SynthesizerIOC(ObsIOC):
    """Frequency synthesizer.

    PVs (prefix ``SITE:SYN1:`` / ``SITE:SYN2:``)
    -------------------------------------------
    FREQ_SP          requested frequency (Hz), limits of the model
    FREQ_RBV         synthesised frequency, quantised to the resolution (Hz)
    FREQ_RES_RBV     frequency resolution at the current frequency (Hz)
    POWER_SP         requested output level (dBm), limits of the model
    POWER_RBV        output level, quantised to the attenuator step (dBm)
    RF_SP            RF output OFF / ON
    LOCK_STS         LOCKED / UNLOCKED (unlocked, minor alarm, for the settling time after a frequency change)
    SETTLE_TIME_RBV  re-lock time after a frequency change (ms, simulated time)
    MODEL_RBV        instrument model
    COMMAND_SP       HP-IB program string in the model's syntax (HP8662A "FR 1420 MZ", "AP -10 DM";
                     HP3336B "FR10.7MH", "AM-20DB"); malformed or out-of-range strings are rejected
    """

    freq_rbv = pv_float("FREQ_RBV", "Synthesised frequency", "Hz", 0.0, lo=0, hi=1.28e9, precision=6)
    freq_res = pv_float("FREQ_RES_RBV", "Frequency resolution", "Hz", 0.1, lo=0, hi=1, precision=6)
    power_rbv = pv_float("POWER_RBV", "Output level", "dBm", 0.0, lo=-140, hi=20, precision=2)
    rf = pv_enum("RF_SP", "RF output", ["OFF", "ON"], "ON", writable=True)
    lock = pv_enum("LOCK_STS", "Synthesizer phase lock", ["LOCKED", "UNLOCKED"])
    settle = pv_float("SETTLE_TIME_RBV", "Re-lock time after a frequency change", "ms", 0.0, lo=0, hi=100,
                      precision=1)
    model_rbv = pv_str("MODEL_RBV", "Instrument model")
    command = pv_str("COMMAND_SP", "HP-IB program string (model syntax)", writable=True)

    model: SynthModel  # set by synthesizer_class

    def __init__(self, site: Site, inst: InstrumentConfig, clock: ObservatoryClock, **kwargs):
        super().__init__(site, inst, clock, **kwargs)
        self._relock: asyncio.Task | None = None

    @model_rbv.startup
    async def model_rbv(self, instance, async_lib):
        t = self.clock.now()
        await instance.write(self.model.name, timestamp=t)
        await self.settle.write(self.model.settle_s * 1e3, timestamp=t)
        await self.apply(freq_hz=self.freq_sp.value, power_dbm=self.power_sp.value, relock=False)

    async def apply(self, freq_hz: float | None = None, power_dbm: float | None = None, *,
                    relock: bool = True) -> None:
        """Program the synthesiser (values already validated): update readbacks, start the re-lock."""
        t = self.clock.now()
        m = self.model
        if power_dbm is not None:
            await self.power_rbv.write(m.quantise_power(power_dbm), timestamp=t)
        if freq_hz is not None:
            f = m.quantise_freq(freq_hz)
            changed = f != self.freq_rbv.value
            await self.freq_rbv.write(f, timestamp=t)
            await self.freq_res.write(m.resolution_hz(freq_hz), timestamp=t)
            if relock and changed:
                await self.lock.write("UNLOCKED", timestamp=t, status=AlarmStatus.STATE,
                                      severity=AlarmSeverity.MINOR_ALARM)
                if self._relock is not None:
                    self._relock.cancel()
                self._relock = asyncio.create_task(self._lock_after(m.settle_s))
            elif not relock:
                await self.lock.write("LOCKED", timestamp=t, status=AlarmStatus.NO_ALARM,
                                      severity=AlarmSeverity.NO_ALARM)

    async def _lock_after(self, settle_s: float) -> None:
        await asyncio.sleep(self.clock.real_duration(settle_s))
        await self.lock.write("LOCKED", timestamp=self.clock.now(), status=AlarmStatus.NO_ALARM,
                              severity=AlarmSeverity.NO_ALARM)

    async def put_freq(self, instance, value):
        try:
            self.model.check_freq(float(value))
        except CommandError as err:
            await self.reject(str(err))
        await self.apply(freq_hz=float(value))
        return value

    async def put_power(self, instance, value):
        try:
            self.model.check_power(float(value))
        except CommandError as err:
            await self.reject(str(err))
        await self.apply(power_dbm=float(value))
        return value

    @rf.putter
    async def rf(self, instance, value):
        await self.say(f"RF output {value}")
        return value

    @command.putter
    async def command(self, instance, value):
        try:
            settings = parse_command(self.model, value)
        except CommandError as err:
            await self.reject(str(err))
            return None  # not reached: reject raises
        t = self.clock.now()
        if "freq_hz" in settings:
            await self.freq_sp.write(settings["freq_hz"], timestamp=t, verify_value=False)
        if "power_dbm" in settings:
            await self.power_sp.write(settings["power_dbm"], timestamp=t, verify_value=False)
        await self.apply(freq_hz=settings.get("freq_hz"), power_dbm=settings.get("power_dbm"))
        return value

    async def shutdown(self) -> None:
        """Cancel a pending re-lock (called by the server on exit)."""
        if self._relock is not None:
            self._relock.cancel()


def synthesizer_class(model: SynthModel) -> type[SynthesizerIOC]:
    """The IOC class for one synthesizer model: FREQ_SP and POWER_SP carry the model's limits."""
    digits = max(1, -math.floor(math.log10(model.res_low_hz)))

    class ModelSynthesizerIOC(SynthesizerIOC):
        freq_sp = pv_float("FREQ_SP", "Requested frequency", "Hz", model.default_freq_hz, lo=model.f_min_hz,
                           hi=model.f_max_hz, writable=True, precision=digits)
        power_sp = pv_float("POWER_SP", "Requested output level", "dBm", model.default_power_dbm,
                            lo=model.p_min_dbm, hi=model.p_max_dbm, writable=True, precision=2)

        @freq_sp.putter
        async def freq_sp(self, instance, value):
            return await self.put_freq(instance, value)

        @power_sp.putter
        async def power_sp(self, instance, value):
            return await self.put_power(instance, value)

    ModelSynthesizerIOC.model = model
    ModelSynthesizerIOC.__name__ = ModelSynthesizerIOC.__qualname__ = f"Synthesizer{model.name}IOC"
    ModelSynthesizerIOC.__doc__ = SynthesizerIOC.__doc__
    return ModelSynthesizerIOC


def make_ioc(site: Site, inst: InstrumentConfig, clock: ObservatoryClock) -> SynthesizerIOC:
    """The synthesizer IOC for ``inst`` (its ``model`` must be one of ``MODELS``)."""
    key = inst.model.replace(" ", "").upper()
    if key not in MODELS:
        raise ValueError(f"{inst.dev}: unknown synthesizer model {inst.model!r}; known: {', '.join(MODELS)}")
    return synthesizer_class(MODELS[key])(site, inst, clock)
