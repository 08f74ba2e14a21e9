"""PSR: Mark I pulsar timer (folding total-power detector with its own clock).

PVs (prefix ``SITE:PSR:``)
--------------------------
CMD            command enum: SAMPLE, SETUP_TIME, PRINT_TIME, OUTPUT_DATA, SETUP_TAU, GRAPH_DATA, LED_TEST,
               RAM_TEST, DA_TEST, INPUT_VIEW, BUS_TEST (the value shows the last command accepted)
                 SAMPLE      fold now for NPULSES_SP periods (or INT_TIME_SP s when NPULSES_SP = 0)
                 SETUP_TIME  wait (WAITING) until START_SP ("now" or ISO UTC), set the timer clock to UTC
                             at that instant, then fold as SAMPLE does, starting exactly then; a
                             SETUP_TIME while WAITING replaces the start ("now" ends the wait)
                 PRINT_TIME  publish the timer clock (TIME_RBV, CLOCK_STS)
                 OUTPUT_DATA publish PROFILE and PROFILE_RAW of the last SAMPLE
                 SETUP_TAU   apply TAU_SP to the detector time constant (TAU_RBV)
                 GRAPH_DATA  publish GRAPH, the profile scaled to the 8-bit display D-A (0..255)
                 *_TEST, INPUT_VIEW  self-tests over simulated time -> TEST_STS, TEST_MSG
STATE_STS      [IDLE, WAITING, SAMPLING, DONE]
TEST_STS       [IDLE, RUNNING, PASS, FAIL];  TEST_MSG  self-test result text
NBINS_SP       bins per period (16..4096)
PERIOD_SP      folding period when PSR_NAME_SP is empty (s)
PSR_NAME_SP    catalog pulsar: SAMPLE folds at its apparent period (empty: PERIOD_SP)
PERIOD_RBV     folding period of the last SAMPLE (s)
TAU_SP/TAU_RBV detector time constant requested / applied (ms)
START_SP       SETUP_TIME start, "now" or ISO-8601 UTC
NPULSES_SP     periods to fold (0: use INT_TIME_SP);  INT_TIME_SP  integration (simulated s)
SIM_FAULT_SP   simulation: hardware fault for the self-tests [NONE, LED, RAM, DA, INPUT, BUS]
NPULSE_RBV     periods folded so far;  PROGRESS_RBV  integration progress (%)
SNR_RBV        peak / off-pulse rms of the last profile;  PHASE_RBV  fold phase of the peak (turns)
WIDTH_RBV      FWHM of the peak (ms);  TOA_RBV  MJD (timer clock, UTC) of the peak nearest mid-integration
TSTART_RBV     MJD (timer clock) of the first bin of the last SAMPLE
TIME_RBV       timer clock, "YYYY-MM-DD HH:MM:SS.ffffff" (PRINT_TIME);  CLOCK_STS  [UNSET, SET]
PROFILE        folded profile (K per bin);  PROFILE_RAW  accumulated ADC counts per bin;  GRAPH  0..255
TSYS_RBV       system temperature (K);  RX_RBV  receiver (NDI:RX_SEL_SP);  PSR_RBV  pulsar folded
INPUT_RBV      detector input level seen by INPUT_VIEW (ADC counts, 12 bit)
DRV_LINK_STS   [DISCONNECTED, OK] drive position packets arriving;  NDI_LINK_STS  receiver-select link
SMEAR_RBV      dispersion smearing of PSR_NAME_SP across the receiver band (ms)

The timer clock runs from power-on with an unknown offset and a crystal rate error until SETUP_TIME sets
it, so TOAs before SETUP_TIME are off by that offset.  The sky is seen where the drive points, through the
subreflector's focus gain and beam shift (iocs.backend).  Options: adc_counts_per_k (10), adc_offset (200),
receiver (first of the site).
"""

from __future__ import annotations

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from iocs.backend import BackendIOC
from iocs.common import pv_enum, pv_float, pv_int, pv_str, pv_wave, require_finite
from iocs.sim import pulsar_timer as sim
from iocs.sim.noise import generator
from obsctl import astro, sky
from obsctl.catalog import Source
from obsctl.clock import ObservatoryClock, parse_epoch
from obsctl.site import InstrumentConfig, ReceiverConfig, Site

COMMANDS = ["SAMPLE", "SETUP_TIME", "PRINT_TIME", "OUTPUT_DATA", "SETUP_TAU", "GRAPH_DATA", "LED_TEST",
            "RAM_TEST", "DA_TEST", "INPUT_VIEW", "BUS_TEST"]
FAULTS = ["NONE", "LED", "RAM", "DA", "INPUT", "BUS"]
#: self-test -> (simulated duration s, fault that fails it, message when it passes)
SELF_TESTS = {
    "LED_TEST": (10.0, "LED", "LED: 16 lamps cycled OK"),
    "RAM_TEST": (120.0, "RAM", "RAM: 4096 x 24 bit words OK"),
    "DA_TEST": (30.0, "DA", "D-A: ramp 0..255 linear"),
    "INPUT_VIEW": (5.0, "INPUT", ""),
    "BUS_TEST": (20.0, "BUS", "BUS: 16 data, 12 address lines OK"),
}
ADC_FULL = 4095
MAXBINS = 4096


@dataclass(frozen=True)
class Fold:
    """Settings of one SAMPLE."""

    t0: float
    t_end: float
    p_fold: float
    nbins: int
    tau_s: float
    pulsar: Source | None
    rx: ReceiverConfig
    nd_k: float
    timer_t0: float
    count: int


class PulsarTimerIOC(BackendIOC):
    """Mark I pulsar timer: folds the receiver's total power at a pulsar's apparent period."""

    cmd = pv_enum("CMD", "Timer command", COMMANDS, writable=True)
    state = pv_enum("STATE_STS", "Timer state", ["IDLE", "WAITING", "SAMPLING", "DONE"])
    test_sts = pv_enum("TEST_STS", "Self-test status", ["IDLE", "RUNNING", "PASS", "FAIL"])
    test_msg = pv_str("TEST_MSG", "Self-test result")
    nbins = pv_int("NBINS_SP", "Bins per period", "bins", 256, lo=16, hi=MAXBINS, writable=True)
    period = pv_float("PERIOD_SP", "Folding period without PSR_NAME_SP", "s", 1.0, lo=0.001, hi=100.0,
                      writable=True, precision=12)
    psr_name = pv_str("PSR_NAME_SP", "Catalog pulsar folded at apparent period", writable=True)
    period_rbv = pv_float("PERIOD_RBV", "Folding period of the last SAMPLE", "s", precision=12)
    tau = pv_float("TAU_SP", "Detector time constant for SETUP_TAU", "ms", 1.0, lo=0.0, hi=100.0,
                   writable=True, precision=3)
    tau_rbv = pv_float("TAU_RBV", "Detector time constant applied", "ms", 1.0, precision=3)
    start = pv_str("START_SP", "SETUP_TIME start: now or ISO UTC", "now", writable=True)
    npulses = pv_int("NPULSES_SP", "Periods to fold, 0 = use INT_TIME_SP", "pulses", 0, lo=0, hi=100_000_000,
                     writable=True)
    int_time = pv_float("INT_TIME_SP", "Integration time (simulated)", "s", 60.0, lo=0.1, hi=36000.0,
                        writable=True, precision=2)
    sim_fault = pv_enum("SIM_FAULT_SP", "Simulation: fault seen by self-tests", FAULTS,
                        writable=True)
    npulse = pv_int("NPULSE_RBV", "Periods folded", "pulses")
    progress = pv_float("PROGRESS_RBV", "Integration progress", "%", lo=0, hi=100, precision=1)
    snr_rbv = pv_float("SNR_RBV", "Peak signal-to-noise of the profile", "ratio", precision=2)
    phase = pv_float("PHASE_RBV", "Fold phase of the pulse peak", "turns", lo=0, hi=1, precision=5)
    width = pv_float("WIDTH_RBV", "FWHM of the pulse peak", "ms", precision=4)
    toa = pv_float("TOA_RBV", "Pulse peak nearest mid-int (timer clock)", "MJD", precision=12)
    tstart = pv_float("TSTART_RBV", "Start of the last SAMPLE, timer clock", "MJD", precision=12)
    time_rbv = pv_str("TIME_RBV", "Timer clock (PRINT_TIME)")
    clock_sts = pv_enum("CLOCK_STS", "Timer clock set by SETUP_TIME", ["UNSET", "SET"])
    profile = pv_wave("PROFILE", "Folded profile", "K", MAXBINS)
    profile_raw = pv_wave("PROFILE_RAW", "Accumulated ADC counts per bin", "counts", MAXBINS, dtype=int)
    graph = pv_wave("GRAPH", "Profile scaled to the display D-A", "DAC", MAXBINS, dtype=int)
    tsys = pv_float("TSYS_RBV", "System temperature of the integration", "K", lo=0, hi=1e5,
                    alarm=(1.0, 1000.0), precision=2)
    rx_rbv = pv_str("RX_RBV", "Receiver feeding the timer")
    psr_rbv = pv_str("PSR_RBV", "Pulsar folded by the last SAMPLE")
    input_rbv = pv_float("INPUT_RBV", "Detector input level (INPUT_VIEW)", "counts", lo=0, hi=ADC_FULL,
                         alarm=(0.02 * ADC_FULL, 0.95 * ADC_FULL), precision=0)
    smear = pv_float("SMEAR_RBV", "Dispersion smearing across the band", "ms", precision=4)

    def __init__(self, site: Site, inst: InstrumentConfig, clock: ObservatoryClock, **kwargs: Any):
        super().__init__(site, inst, clock, **kwargs)
        opts = inst.options
        self.adc_gain = float(opts.get("adc_counts_per_k", 10.0))
        self.adc_offset = float(opts.get("adc_offset", 200.0))
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="psr-sky")
        self.task: asyncio.Task | None = None
        self.test_task: asyncio.Task | None = None
        self.count = 0
        self.data: dict[str, Any] | None = None
        g = generator(site.simulation.seed, "PSR:clock")
        self.clk_offset = float(g.uniform(-30.0, 30.0))  # s, power-on clock error
        self.clk_rate = float(g.normal(0.0, 5e-8))  # crystal frequency error
        self.clk_ref = clock.now()

    # ---- links, clock and pointing ------------------------------------------------------------

    def timer_clock(self, t: float | np.ndarray) -> float | np.ndarray:
        """Timer clock reading (POSIX s) at observatory time ``t``."""
        return t + self.clk_offset + self.clk_rate * (np.asarray(t) - self.clk_ref)


    def busy(self) -> bool:
        """Whether a SETUP_TIME wait, a SAMPLE or a self-test is running."""
        return any(x is not None and not x.done() for x in (self.task, self.test_task))

    def tsys_at(self, t: float, ha: float, dec: float, rx: ReceiverConfig, nd_k: float) -> float:
        """System temperature (K) with the beam at apparent HA/Dec (deg) at time ``t``."""
        st = self.sky.system_temperature(np.array([ha]), np.array([dec]), np.array([t]), rx, self.weather(t),
                                         optics=self.optics())
        return float(st["total"][0]) + nd_k

    # ---- startup / shutdown ----------------------------------------------------------------------
    @state.startup
    async def state(self, instance, async_lib):
        await self.stamp(self.rx_rbv, self.default_rx.name)
        await self.link.start()
        loop = asyncio.get_running_loop()
        first = next(iter(self.sky.catalog.of_kind("pulsar")), None)
        if first is not None:  # load astropy's ephemerides and IERS tables before the first SAMPLE
            t = self.clock.now()
            await loop.run_in_executor(self.pool, sim.pulse_phase, first, np.array([t, t + 60.0]), self.sky.loc,
                                       1400.0)
        while True:
            rx = self.receiver()
            if self.rx_rbv.value != rx.name:
                await self.stamp(self.rx_rbv, rx.name)
            await self.update_links()
            await async_lib.library.sleep(0.5)


    async def shutdown(self) -> None:
        """Stop running work and the links."""
        for x in (self.task, self.test_task):
            if x is not None:
                x.cancel()
        await self.link.stop()
        self.pool.shutdown(wait=False, cancel_futures=True)

    # ---- setting putters -------------------------------------------------------------------------
    @psr_name.putter
    async def psr_name(self, instance, value):
        name = str(value).strip()
        if not name:
            await self.stamp(self.smear, 0.0)
            return ""
        try:
            src = self.sky.catalog.get(name)
        except KeyError:
            await self.reject(f"PSR_NAME_SP: unknown source {name!r}")
        if src.kind != "pulsar":
            await self.reject(f"PSR_NAME_SP: {src.name} is not a pulsar")
        rx = self.receiver()
        await self.stamp(self.smear, 1e3 * sim.dispersion_smear_s(src.dm, rx.bandwidth_mhz, rx.freq_mhz))
        return src.name

    @start.putter
    async def start(self, instance, value):
        text = str(value).strip()
        try:
            parse_epoch(text)
        except ValueError:
            await self.reject(f"START_SP: {text!r} is not 'now' or an ISO UTC time")
        return text

    @period.putter
    async def period(self, instance, value):
        return require_finite(value, "PERIOD_SP")

    @int_time.putter
    async def int_time(self, instance, value):
        return require_finite(value, "INT_TIME_SP")

    @tau.putter
    async def tau(self, instance, value):
        return require_finite(value, "TAU_SP")

    # ---- commands --------------------------------------------------------------------------------
    @cmd.putter
    async def cmd(self, instance, value):
        rearm = value == "SETUP_TIME" and self.state.value == "WAITING"  # a new start replaces the wait
        if value in ("SAMPLE", "SETUP_TIME") or value in SELF_TESTS or value == "SETUP_TAU":
            if self.busy() and not rearm:
                await self.reject(f"{value}: timer busy ({self.state.value}, test {self.test_sts.value})")
        loop = asyncio.get_running_loop()
        if value == "SAMPLE":
            await self.stamp(self.state, "SAMPLING")
            self.task = loop.create_task(self._run(None))
        elif value == "SETUP_TIME":
            text = str(self.start.value).strip()
            t_start = parse_epoch(text) if text.lower() != "now" else self.clock.now()
            if t_start < self.clock.now() - 1.0:
                await self.reject(f"SETUP_TIME: START_SP {text} is in the past")
            if rearm and self.task is not None:
                self.task.cancel()
            await self.stamp(self.state, "WAITING")
            self.task = loop.create_task(self._run(t_start))
        elif value == "PRINT_TIME":
            t = float(self.timer_clock(self.clock.now()))
            text = datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
            await self.stamp(self.time_rbv, text)
        elif value == "SETUP_TAU":
            await self.stamp(self.tau_rbv, float(self.tau.value))
            await self.say(f"detector time constant {self.tau.value:g} ms")
        elif value in ("OUTPUT_DATA", "GRAPH_DATA"):
            if self.data is None:
                await self.reject(f"{value}: no data; SAMPLE first")
            if value == "OUTPUT_DATA":
                await self.stamp(self.profile, self.data["profile"])
                await self.stamp(self.profile_raw, self.data["raw"])
            else:
                p = self.data["profile"]
                span = float(np.max(p) - np.min(p)) or 1.0
                await self.stamp(self.graph, np.rint(255.0 * (p - np.min(p)) / span).astype(int))
        elif value in SELF_TESTS:
            await self.stamp(self.test_sts, "RUNNING")
            await self.stamp(self.test_msg, f"{value} running")
            self.test_task = loop.create_task(self._self_test(value))
        return value

    async def _sleep_until(self, t_sim: float) -> None:
        while (now := self.clock.now()) < t_sim:
            await asyncio.sleep(min(0.05, (t_sim - now) / self.clock.speed + 1e-3))

    async def _run(self, t_start: float | None) -> None:
        loop = asyncio.get_running_loop()
        if t_start is not None:
            await self._sleep_until(t_start)
            self.clk_offset, self.clk_ref = 0.0, t_start
            await self.stamp(self.clock_sts, "SET")
            await self.say("timer clock set")
        t0 = t_start if t_start is not None else self.clock.now()
        name = str(self.psr_name.value).strip()
        pulsar = self.sky.catalog.get(name) if name else None
        rx = self.receiver()
        nbins, npulses = int(self.nbins.value), int(self.npulses.value)
        if pulsar is not None:
            guess = npulses * pulsar.period_s if npulses else float(self.int_time.value)
            p_fold = await loop.run_in_executor(self.pool, sim.apparent_period_s, pulsar, t0 + 0.5 * guess,
                                                self.sky.loc)
        else:
            p_fold = float(self.period.value)
        t_end = t0 + (npulses * p_fold if npulses else float(self.int_time.value))
        self.count += 1
        fold = Fold(t0, t_end, p_fold, nbins, float(self.tau_rbv.value) * 1e-3, pulsar, rx, self.nd_k(),
                    float(self.timer_clock(t0)), self.count)
        await self.stamp(self.period_rbv, p_fold)
        await self.stamp(self.psr_rbv, pulsar.name if pulsar else "")
        await self.stamp(self.tstart, astro.mjd(fold.timer_t0))
        await self.stamp(self.state, "SAMPLING")
        recs = []
        while True:
            now = min(self.clock.now(), t_end)
            recs.append((now, *self.pointing_at(now)))
            await self.stamp(self.npulse, int((now - t0) / p_fold))
            await self.stamp(self.progress, 100.0 * (now - t0) / (t_end - t0))
            if now >= t_end:
                break
            await asyncio.sleep(min(0.1, (t_end - now) / self.clock.speed + 1e-3))
        t, pos = self.as_arrays(recs)
        try:
            out = await loop.run_in_executor(self.pool, self.compute, fold, t, pos)
        except (ValueError, FloatingPointError) as err:
            self.log.exception("SAMPLE failed")
            await self.say(f"SAMPLE failed: {err}")
            await self.stamp(self.state, "IDLE")
            return
        self.data = out
        for pv, key in ((self.snr_rbv, "snr"), (self.phase, "phase"), (self.width, "width_ms"),
                        (self.toa, "toa"), (self.tsys, "tsys")):
            await self.stamp(pv, out[key])
        await self.stamp(self.npulse, out["npulse"])
        await self.stamp(self.state, "DONE")

    def compute(self, f: Fold, t: np.ndarray, pos: dict[str, np.ndarray]) -> dict[str, Any]:
        """Fold one integration (runs in the worker thread)."""
        seed = self.site.simulation.seed
        dur = f.t_end - f.t0
        k = int(min(64, max(2, len(t))))
        tu = np.linspace(f.t0, f.t_end, k)
        ha = np.interp(tu, t, astro.wrap180(pos["HA_SKY"]))
        de = np.interp(tu, t, pos["DEC_SKY"])
        optics = self.optics()
        st = self.sky.system_temperature(ha, de, tu, f.rx, self.weather(0.5 * (f.t0 + f.t_end)), optics=optics)
        trans = sky.atmosphere(st["elevation"], st["tau_zenith"], self.site.simulation.t_atm_k)[1]
        tsys = float(np.mean(st["total"])) + f.nd_k
        sub = np.unique(np.linspace(0, k - 1, min(k, 16)).round().astype(int))
        amps: dict[str, np.ndarray] = {}
        sources: dict[str, Source] = {}
        for j, i in enumerate(sub):
            for src, w in self.sky.sources_in_beam(float(ha[i]), float(de[i]), float(tu[i]), f.rx.freq_mhz,
                                                    "pulsar", optics=optics):
                sources[src.name] = src
                amps.setdefault(src.name, np.zeros(len(sub)))[j] = (f.rx.gain_k_per_jy * src.flux_jy(f.rx.freq_mhz)
                                                                     * w * trans[i])
        pulse = np.zeros(f.nbins)
        for name, a in amps.items():
            src = sources[name]
            p_true = sim.apparent_period_s(src, 0.5 * (f.t0 + f.t_end), self.sky.loc)
            drift = dur * abs(1.0 / f.p_fold - 1.0 / p_true)
            nseg = int(np.clip(math.ceil(4.0 * drift * f.nbins) + 64, 64, 8192))
            ts = f.t0 + (np.arange(nseg) + 0.5) * dur / nseg
            phi, _ = sim.pulse_phase(src, ts, self.sky.loc, f.rx.freq_mhz)
            psi = ((self.timer_clock(ts) - f.timer_t0) / f.p_fold - phi) % 1.0
            smear = sim.dispersion_smear_s(src.dm, f.rx.bandwidth_mhz, f.rx.freq_mhz)
            pulse += sim.folded_pulse(f.nbins, psi, np.interp(ts, tu[sub], a), src.duty, smear / p_true,
                                      f.tau_s / p_true)
        rng = generator(seed, f"PSR:{f.count}")
        prof = tsys + pulse + sim.bin_noise(f.nbins, tsys, f.rx.bandwidth_mhz * 1e6, dur, f.tau_s / f.p_fold, rng)
        npulse = max(1, int(dur / f.p_fold))
        raw = np.clip(np.rint(npulse * (self.adc_offset + self.adc_gain * prof)), 0, npulse * ADC_FULL)
        cal = (raw / npulse - self.adc_offset) / self.adc_gain
        ph = sim.peak_phase(cal)
        t_first = f.timer_t0 + ph * f.p_fold
        mid = float(self.timer_clock(0.5 * (f.t0 + f.t_end)))
        toa = t_first + round((mid - t_first) / f.p_fold) * f.p_fold
        return {"profile": cal, "raw": raw.astype(np.int64), "snr": sim.snr(cal), "phase": ph,
                "width_ms": 1e3 * sim.fwhm_turns(cal) * f.p_fold, "toa": astro.mjd(toa), "tsys": tsys,
                "npulse": npulse}

    async def _self_test(self, which: str) -> None:
        dur, fault, ok_msg = SELF_TESTS[which]
        await self._sleep_until(self.clock.now() + dur)
        failed = self.sim_fault.value == fault
        seed = self.site.simulation.seed
        if which == "INPUT_VIEW":
            loop = asyncio.get_running_loop()
            t = self.clock.now()
            ha, dec = self.pointing_at(t)[:2]
            tsys = await loop.run_in_executor(self.pool, self.tsys_at, t, ha, dec, self.receiver(), self.nd_k())
            level = 0.0 if failed else min(self.adc_offset + self.adc_gain * tsys, ADC_FULL)
            await self.stamp(self.input_rbv, level)
            if failed or level < 0.02 * ADC_FULL:
                failed, msg = True, f"INPUT: no detector signal ({level:.0f} counts)"
            elif level > 0.95 * ADC_FULL:
                failed, msg = True, f"INPUT: ADC saturated ({level:.0f} counts)"
            else:
                msg = f"INPUT: {level:.0f} counts ({tsys:.1f} K) OK"
        elif failed:
            word = int(generator(seed, "PSR:fault").integers(0, 4096))
            msg = {"LED": "LED: lamp 11 does not light", "RAM": f"RAM: word {word:03X} bit 7 stuck at 0",
                   "DA": "D-A: step 128 missing (MSB)", "BUS": "BUS: data line 5 stuck high"}[fault]
        else:
            msg = ok_msg
        await self.stamp(self.test_msg, msg)
        await self.stamp(self.test_sts, "FAIL" if failed else "PASS")


def make_ioc(site: Site, inst: InstrumentConfig, clock: ObservatoryClock) -> PulsarTimerIOC:
    """The PSR IOC of a site."""
    return PulsarTimerIOC(site, inst, clock)
