"""COR: autocorrelation spectrometer (2048 lags, 3-level samplers, four quadrants).

PVs (prefix ``SITE:COR:``)
--------------------------
START_CMD      [IDLE, START] start an integration (rejected while integrating or if FREQ_SP is out of band)
RESET_CMD      [IDLE, RESET] abort an integration, clear DATA_RDY, back to IDLE
STATE_STS      [IDLE, INTEGRATING, READY]
DATA_RDY_STS   [NO, YES] a finished integration's data are published
PROGRESS_RBV   fraction of the integration done (%)
INT_TIME_SP    integration time, simulated (s, 0.1..3600)
BW_SP          bandwidth per section (MHz enum 0.5 .. 64)
NCHAN_SP       lags = channels per section (enum 256, 512, 1024, 2048; at most 2048 / sections)
QUAD_SP        quadrant configuration: 1x2048 | 2x1024 dual pol (L, R) | 4x512 2band dual pol
               (L, R below FREQ_SP and L, R above: two adjacent bands of BW each)
ATT1_SP..ATT4_SP  attenuator before sampler 1..4 (dB, 0..31.5 in 0.5 dB steps)
LEVEL1_RBV..LEVEL4_RBV  sampler statistic: fraction of samples outside the thresholds (0.54 optimum)
LEVEL_STS      [OK, UNDER-DRIVEN, CLIPPING] worst sampler of the current configuration
FREQ_SP        topocentric sky centre frequency (MHz, inside the selected receiver's band)
REST_SP        rest frequency for VEL_AXIS (MHz; 0 = the catalog line nearest FREQ_SP)
WINDOW_SP      lag window for SPECTRUM [HANN, UNIFORM, HAMMING]
RX_RBV         receiver feeding the correlator (NDI:RX_SEL_SP)
REST_RBV       rest frequency used (MHz);  LINE_RBV  its catalog line name
NSEC_RBV       sections in the data;  NSAMP_RBV  samples accumulated per lag (counts)
ACF_RAW        raw lag counts, sections concatenated (counts)
ACF            normalised, Van Vleck corrected ACF (ACFIN equivalent), sections concatenated
SPECTRUM       TSYS_RBV x FFT of the windowed ACF (K), sections concatenated
FREQ_AXIS      topocentric sky frequency of each channel (MHz)
VEL_AXIS       LSR radio velocity of each channel for REST_RBV (km/s)
TSYS_RBV       system temperature during the integration (K)
VLSR_CORR_RBV  LSR correction of the pointing direction at mid-integration (km/s)
RA_RBV/DEC_RBV ICRS direction of the pointing at mid-integration (deg)
DRV_LINK_STS   [DISCONNECTED, OK] drive position packets arriving;  NDI_LINK_STS  receiver-select link
INT_DONE_RBV   integrations completed since IOC start
TIME_RBV       mid-integration time (POSIX s, UTC)

The sky comes from the drive's true beam position (DRV:POS_PKT), the receiver selected by
NDI:RX_SEL_SP, the noise diode NDI:ND_K_RBV, the subreflector's focus gain and beam shift (iocs.backend) and
the weather; without a drive the beam is assumed at the stow position.  Options (site file): level_ref_k (60),
att_ref_db (12), receiver (first).
"""

from __future__ import annotations

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from iocs.backend import BackendIOC
from iocs.common import pv_enum, pv_float, pv_int, pv_str, pv_wave, require_finite
from iocs.sim import correlator as sim
from iocs.sim.noise import generator
from obsctl import astro, sky
from obsctl.clock import ObservatoryClock
from obsctl.site import InstrumentConfig, ReceiverConfig, Site

BW_STATES = ["0.5", "1", "2", "4", "8", "16", "32", "64"]
NCHAN_STATES = ["256", "512", "1024", "2048"]
QUAD_STATES = list(sim.QUADS)
STATES = ["IDLE", "INTEGRATING", "READY"]
LEVEL_LOW, LEVEL_HIGH = 0.25, 0.80
MAXLEN = sim.TOTAL_LAGS


@dataclass(frozen=True)
class Setup:
    """Correlator settings frozen at the start of an integration."""

    t0: float
    int_time: float
    bw_mhz: float
    nchan: int
    quad: str
    freq_mhz: float
    rest_mhz: float
    window: str
    att: tuple[float, float, float, float]
    rx: ReceiverConfig
    nd_k: float
    count: int


def _att(i: int) -> Any:
    return pv_float(f"ATT{i}_SP", f"Attenuator of sampler {i} (0.5 dB steps)", "dB", 12.0, lo=0.0,
                    hi=31.5, writable=True, precision=1)


def _lvl(i: int) -> Any:
    return pv_float(f"LEVEL{i}_RBV", f"Sampler {i}: fraction beyond threshold", "frac", 0.54, lo=0.0,
                    hi=1.0, alarm=(LEVEL_LOW, LEVEL_HIGH), warn=(0.40, 0.68), precision=4)


class CorrelatorIOC(BackendIOC):
    """Autocorrelation spectrometer: lags from 3-level samplers, Van Vleck correction, calibrated spectra."""

    start_cmd = pv_enum("START_CMD", "Start an integration", ["IDLE", "START"], writable=True)
    reset_cmd = pv_enum("RESET_CMD", "Abort and reset the correlator", ["IDLE", "RESET"], writable=True)
    state = pv_enum("STATE_STS", "Correlator state", STATES)
    data_rdy = pv_enum("DATA_RDY_STS", "Data of a finished integration published", ["NO", "YES"])
    progress = pv_float("PROGRESS_RBV", "Integration progress", "%", lo=0, hi=100, precision=1)
    int_time = pv_float("INT_TIME_SP", "Integration time (simulated)", "s", 10.0, lo=0.1, hi=3600.0,
                        writable=True, precision=2)
    bw = pv_enum("BW_SP", "Bandwidth per section (MHz)", BW_STATES, "1", writable=True)
    nchan = pv_enum("NCHAN_SP", "Lags (= channels) per section", NCHAN_STATES, "1024", writable=True)
    quad = pv_enum("QUAD_SP", "Quadrant configuration", QUAD_STATES, QUAD_STATES[0], writable=True)
    att1, att2, att3, att4 = _att(1), _att(2), _att(3), _att(4)
    level1, level2, level3, level4 = _lvl(1), _lvl(2), _lvl(3), _lvl(4)
    level_sts = pv_enum("LEVEL_STS", "Sampler levels of the configuration", ["OK", "UNDER-DRIVEN", "CLIPPING"])
    freq = pv_float("FREQ_SP", "Sky centre frequency (topocentric)", "MHz", 1666.0, lo=100.0, hi=50000.0,
                    writable=True, precision=6)
    rest = pv_float("REST_SP", "Rest freq for VEL_AXIS, 0 = nearest line", "MHz", 0.0, lo=0.0,
                    hi=50000.0, writable=True, precision=6)
    window = pv_enum("WINDOW_SP", "Lag window for SPECTRUM", list(sim.WINDOWS), writable=True)
    rx_rbv = pv_str("RX_RBV", "Receiver feeding the correlator")
    rest_rbv = pv_float("REST_RBV", "Rest frequency used for VEL_AXIS", "MHz", precision=6)
    line_rbv = pv_str("LINE_RBV", "Catalog line of REST_RBV")
    nsec = pv_int("NSEC_RBV", "Sections in the data", "sections", 1)
    nsamp = pv_float("NSAMP_RBV", "Samples accumulated per lag", "counts", precision=0)
    acf_raw = pv_wave("ACF_RAW", "Raw 3-level lag counts, all sections", "counts", MAXLEN)
    acf = pv_wave("ACF", "Van Vleck corrected ACF, all sections", "corr", MAXLEN)
    spectrum = pv_wave("SPECTRUM", "Calibrated spectrum, all sections", "K", MAXLEN)
    freq_axis = pv_wave("FREQ_AXIS", "Topocentric sky freq of each channel", "MHz", MAXLEN)
    vel_axis = pv_wave("VEL_AXIS", "LSR radio velocity of each channel", "km/s", MAXLEN)
    tsys = pv_float("TSYS_RBV", "System temperature of the integration", "K", lo=0, hi=1e5,
                    alarm=(1.0, 1000.0), precision=2)
    vlsr_corr = pv_float("VLSR_CORR_RBV", "LSR correction of the pointing (mid-int)", "km/s",
                         lo=-60, hi=60, precision=4)
    ra = pv_float("RA_RBV", "ICRS RA of the pointing (mid-int)", "deg", lo=0, hi=360)
    dec = pv_float("DEC_RBV", "ICRS Dec of the pointing (mid-int)", "deg", lo=-90, hi=90)
    int_done = pv_int("INT_DONE_RBV", "Integrations completed", "count")
    time_rbv = pv_float("TIME_RBV", "Mid-integration time (POSIX, UTC)", "s", precision=3)

    def __init__(self, site: Site, inst: InstrumentConfig, clock: ObservatoryClock, **kwargs: Any):
        super().__init__(site, inst, clock, **kwargs)
        opts = inst.options
        self.level_ref_k = float(opts.get("level_ref_k", 60.0))
        self.att_ref_db = float(opts.get("att_ref_db", 12.0))
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cor-sky")
        self.task: asyncio.Task | None = None
        self.count = 0
        self.t_in_k = self.default_rx.tsys_k  # latest sampler input temperature (K)
        self.warned_stow = False

    # ---- helpers -----------------------------------------------------------------------------
    def busy(self) -> bool:
        """Whether an integration is running."""
        return self.task is not None and not self.task.done()

    async def _not_busy(self, what: str) -> None:
        if self.busy():
            await self.reject(f"{what}: busy integrating; RESET_CMD first")

    def samplers(self, quad: str | None = None) -> list[int]:
        """Sampler indices (0..3) used by a quadrant configuration."""
        return sorted({s[1] for s in sim.QUADS[quad or self.quad.value]})

    def max_lags(self, quad: str) -> int:
        """Largest lags per section for a quadrant configuration."""
        return sim.TOTAL_LAGS // len(sim.QUADS[quad])

    async def publish_levels(self, levels: list[float], quad: str | None = None) -> None:
        """Write the four sampler levels and the summary status."""
        for pv, p in zip((self.level1, self.level2, self.level3, self.level4), levels, strict=True):
            await self.stamp(pv, float(p))
        used = [levels[i] for i in self.samplers(quad)]
        sts = "UNDER-DRIVEN" if min(used) < LEVEL_LOW else ("CLIPPING" if max(used) > LEVEL_HIGH else "OK")
        if self.level_sts.value != sts:
            await self.stamp(self.level_sts, sts)

    def levels_for(self, t_in_k: float, att: list[float]) -> list[float]:
        """Sampler levels for input temperature ``t_in_k`` and the four attenuators."""
        return [sim.level(sim.sampler_threshold(t_in_k, a, self.level_ref_k, self.att_ref_db)) for a in att]

    def att_values(self) -> list[float]:
        """Current attenuator settings (dB)."""
        return [float(p.value) for p in (self.att1, self.att2, self.att3, self.att4)]

    # ---- startup and the level monitor ---------------------------------------------------------
    @state.startup
    async def state(self, instance, async_lib):
        await self.stamp(self.freq, self.default_rx.freq_mhz, verify_value=False)
        await self.stamp(self.rx_rbv, self.default_rx.name)
        await self.link.start()
        loop = asyncio.get_running_loop()
        # load astropy's tables off the event loop before the first integration needs them
        await loop.run_in_executor(self.pool, sim.pointing_icrs, 0.0, 0.0, self.clock.now(), self.sky.loc)
        n = 0
        while True:
            rx = self.receiver()
            if self.rx_rbv.value != rx.name:
                await self.stamp(self.rx_rbv, rx.name)
            await self.update_links()
            if n % 4 == 0 and not self.busy():
                t = self.clock.now()
                ha, dec = self.pointing_at(t)[:2]
                t_in = await loop.run_in_executor(self.pool, self._input_temperature, t, ha, dec, rx, self.nd_k())
                self.t_in_k = t_in
                if not self.busy():
                    await self.publish_levels(self.levels_for(t_in, self.att_values()))
            n += 1
            await async_lib.library.sleep(0.5)


    def _input_temperature(self, t: float, ha: float, dec: float, rx: ReceiverConfig, nd_k: float) -> float:
        st = self.sky.system_temperature(np.array([ha]), np.array([dec]), np.array([t]), rx,
                                         self.weather(t), self.freq.value, self.optics())
        return float(st["total"][0]) + nd_k

    async def shutdown(self) -> None:
        """Stop the integration and the links."""
        if self.task is not None:
            self.task.cancel()
        await self.link.stop()
        self.pool.shutdown(wait=False, cancel_futures=True)

    # ---- setting putters -------------------------------------------------------------------------
    @int_time.putter
    async def int_time(self, instance, value):
        await self._not_busy("INT_TIME_SP")
        return require_finite(value, "INT_TIME_SP")

    @bw.putter
    async def bw(self, instance, value):
        await self._not_busy("BW_SP")
        return value

    @window.putter
    async def window(self, instance, value):
        await self._not_busy("WINDOW_SP")
        return value

    @rest.putter
    async def rest(self, instance, value):
        await self._not_busy("REST_SP")
        return require_finite(value, "REST_SP")

    @nchan.putter
    async def nchan(self, instance, value):
        await self._not_busy("NCHAN_SP")
        if int(value) > self.max_lags(self.quad.value):
            await self.reject(f"NCHAN_SP {value} > {self.max_lags(self.quad.value)} lags in {self.quad.value}")
        return value

    @quad.putter
    async def quad(self, instance, value):
        await self._not_busy("QUAD_SP")
        limit = self.max_lags(value)
        if int(self.nchan.value) > limit:
            await self.stamp(self.nchan, str(limit), verify_value=False)
            await self.say(f"NCHAN_SP reduced to {limit} for {value}")
        await self.publish_levels(self.levels_for(self.t_in_k, self.att_values()), value)
        return value

    @freq.putter
    async def freq(self, instance, value):
        await self._not_busy("FREQ_SP")
        f = require_finite(value, "FREQ_SP")
        rx = self.receiver()
        if not rx.freq_min_mhz <= f <= rx.freq_max_mhz:
            await self.reject(f"FREQ_SP {f:g} outside {rx.name} {rx.freq_min_mhz:g}-{rx.freq_max_mhz:g}")
        return f

    async def _put_att(self, i: int, value: Any) -> float:
        await self._not_busy(f"ATT{i}_SP")
        a = require_finite(value, f"ATT{i}_SP")
        if abs(a * 2 - round(a * 2)) > 1e-9:
            await self.reject(f"ATT{i}_SP {a:g} dB: not a 0.5 dB step")
        att = self.att_values()
        att[i - 1] = round(a * 2) / 2
        await self.publish_levels(self.levels_for(self.t_in_k, att))
        return att[i - 1]

    @att1.putter
    async def att1(self, instance, value):
        return await self._put_att(1, value)

    @att2.putter
    async def att2(self, instance, value):
        return await self._put_att(2, value)

    @att3.putter
    async def att3(self, instance, value):
        return await self._put_att(3, value)

    @att4.putter
    async def att4(self, instance, value):
        return await self._put_att(4, value)

    # ---- commands --------------------------------------------------------------------------------
    @reset_cmd.putter
    async def reset_cmd(self, instance, value):
        if value == "RESET":
            if self.busy():
                self.task.cancel()
            await self.stamp(self.data_rdy, "NO")
            await self.stamp(self.progress, 0.0)
            await self.stamp(self.state, "IDLE")
            await self.say("correlator reset")
        return "IDLE"

    @start_cmd.putter
    async def start_cmd(self, instance, value):
        if value != "START":
            return "IDLE"
        await self._not_busy("START_CMD")
        rx = self.receiver()
        f = float(self.freq.value)
        if not rx.freq_min_mhz <= f <= rx.freq_max_mhz:
            await self.reject(f"FREQ_SP {f:g} outside {rx.name} band; retune")
        self.count += 1
        setup = Setup(t0=self.clock.now(), int_time=float(self.int_time.value), bw_mhz=float(self.bw.value),
                      nchan=int(self.nchan.value), quad=self.quad.value, freq_mhz=f,
                      rest_mhz=float(self.rest.value), window=self.window.value,
                      att=tuple(self.att_values()), rx=rx, nd_k=self.nd_k(), count=self.count)
        await self.stamp(self.data_rdy, "NO")
        await self.stamp(self.progress, 0.0)
        await self.stamp(self.state, "INTEGRATING")
        self.task = asyncio.get_running_loop().create_task(self._integrate(setup))
        return "IDLE"

    async def _integrate(self, s: Setup) -> None:
        t_end = s.t0 + s.int_time
        recs = []
        while True:
            now = min(self.clock.now(), t_end)
            recs.append((now, *self.pointing_at(now)))
            await self.stamp(self.progress, 100.0 * (now - s.t0) / s.int_time)
            if now >= t_end:
                break
            await asyncio.sleep(min(0.1, (t_end - now) / self.clock.speed + 1e-3))
        t, pos = self.as_arrays(recs)
        if np.any(pos["MISSING"] > 0) and not self.warned_stow:
            self.warned_stow = True
            await self.say("no drive position: beam taken at stow")
        loop = asyncio.get_running_loop()
        try:
            out = await loop.run_in_executor(self.pool, self.compute, s, t, pos)
        except (ValueError, FloatingPointError) as err:
            self.log.exception("integration failed")
            await self.say(f"integration failed: {err}")
            await self.stamp(self.state, "IDLE")
            return
        await self.publish(out)

    def compute(self, s: Setup, t: np.ndarray, pos: dict[str, np.ndarray]) -> dict[str, Any]:
        """Simulate one integration (runs in the worker thread)."""
        seed = self.site.simulation.seed
        t_mid = s.t0 + 0.5 * s.int_time
        k = int(min(64, max(2, len(t))))
        tu = np.linspace(s.t0, s.t0 + s.int_time, k)
        ha = np.interp(tu, t, astro.wrap180(pos["HA_SKY"]))
        de = np.interp(tu, t, pos["DEC_SKY"])
        weather = self.weather(t_mid)
        optics = self.optics()
        st = self.sky.system_temperature(ha, de, tu, s.rx, weather, s.freq_mhz, optics)
        trans = sky.atmosphere(st["elevation"], st["tau_zenith"], self.site.simulation.t_atm_k)[1]
        t_cont = float(np.mean(st["total"])) + s.nd_k
        # masers in the beam, on up to 16 of the sample times
        cat = self.sky.catalog
        sub = np.unique(np.linspace(0, k - 1, min(k, 16)).round().astype(int))
        vcorr: dict[str, float] = {}
        lines: list[sim.Line] = []
        for i in sub:
            found = self.sky.sources_in_beam(float(ha[i]), float(de[i]), float(tu[i]), s.freq_mhz, "maser",
                                             optics=optics)
            for src, _w in found:
                if src.name not in vcorr:
                    vcorr[src.name] = astro.velocity_corrections_kms(src.coord, t_mid, self.sky.loc)[1]
            rest_of = {src.line: cat.line_rest_mhz(src.line) for src, _ in found}
            for ln in sim.maser_lines(found, rest_of, vcorr, s.rx.gain_k_per_jy, float(trans[i])):
                lines.append(sim.Line(ln.freq_mhz, ln.fwhm_mhz, ln.peak_k / len(sub)))
        # the pointing direction and its LSR correction
        ha_o = float(np.interp(t_mid, t, astro.wrap180(pos["HA_OBS"])))
        de_o = float(np.interp(t_mid, t, pos["DEC_OBS"]))
        coord = sim.pointing_icrs(ha_o, de_o, t_mid, self.sky.loc)
        v_corr = astro.velocity_corrections_kms(coord, t_mid, self.sky.loc)[1]
        if s.rest_mhz > 0:
            rest, line_name = s.rest_mhz, "user"
        else:
            line_name, rest = min(cat.lines.items(), key=lambda kv: abs(kv[1] - s.freq_mhz))
        # the sections
        n_samples = 2.0 * s.bw_mhz * 1e6 * s.int_time
        raw_all, acf_all, spec_all, f_all, v_all = [], [], [], [], []
        levels = self.levels_for(t_cont, list(s.att))
        gauss = generator(seed, f"COR:tsys:{s.count}").standard_normal(4) / math.sqrt(n_samples / 2.0)
        tsys_meas = []
        for j, (_pol, sampler, off) in enumerate(sim.QUADS[s.quad]):
            centre = s.freq_mhz + off * s.bw_mhz
            r_true = sim.true_acf(s.nchan, s.bw_mhz, centre, t_cont, lines)
            t_in = float(r_true[0] / sim.continuum_acf(s.nchan, s.bw_mhz * 1e6)[0])
            v = sim.sampler_threshold(t_in, s.att[sampler], self.level_ref_k, self.att_ref_db)
            levels[sampler] = sim.level(v)
            tsys_meas.append(t_in * (1.0 + gauss[j]))  # total power into the sampler, line included
            raw = sim.raw_counts(r_true, v, n_samples, generator(seed, f"COR:{s.count}:{j}"))
            rho, _ = sim.fix_acf(raw, n_samples)
            fr = sim.channel_freqs_mhz(centre, s.bw_mhz, s.nchan)
            raw_all.append(raw)
            acf_all.append(rho)
            spec_all.append(sim.acf_to_spectrum(rho, s.window) * tsys_meas[j])
            f_all.append(fr)
            v_all.append(sim.velocity_axis_kms(fr, rest, v_corr))
        return {"setup": s, "raw": np.concatenate(raw_all), "acf": np.concatenate(acf_all),
                "spec": np.concatenate(spec_all), "freq": np.concatenate(f_all), "vel": np.concatenate(v_all),
                "tsys": tsys_meas[0], "vcorr": v_corr, "ra": float(coord.ra.deg), "dec": float(coord.dec.deg),
                "rest": rest, "line": line_name, "levels": levels, "nsamp": n_samples, "t_mid": t_mid,
                "t_in": t_cont}

    async def publish(self, out: dict[str, Any]) -> None:
        """Publish an integration: waveforms first, then the counters, then READY / DATA_RDY."""
        s: Setup = out["setup"]
        self.t_in_k = out["t_in"]
        for pv, key in ((self.acf_raw, "raw"), (self.acf, "acf"), (self.spectrum, "spec"),
                        (self.freq_axis, "freq"), (self.vel_axis, "vel")):
            await self.stamp(pv, out[key])
        await self.stamp(self.nsec, len(sim.QUADS[s.quad]))
        await self.stamp(self.nsamp, out["nsamp"])
        await self.stamp(self.tsys, out["tsys"])
        await self.stamp(self.vlsr_corr, out["vcorr"])
        await self.stamp(self.ra, out["ra"])
        await self.stamp(self.dec, out["dec"])
        await self.stamp(self.rest_rbv, out["rest"])
        await self.stamp(self.line_rbv, out["line"])
        await self.stamp(self.time_rbv, out["t_mid"])
        await self.publish_levels(out["levels"], s.quad)
        await self.stamp(self.int_done, self.int_done.value + 1)
        await self.stamp(self.progress, 100.0)
        await self.stamp(self.state, "READY")
        await self.stamp(self.data_rdy, "YES")


def make_ioc(site: Site, inst: InstrumentConfig, clock: ObservatoryClock) -> CorrelatorIOC:
    """The COR IOC of a site."""
    return CorrelatorIOC(site, inst, clock)

