"""RAD: the radiometer — two DVMs with 16-way input selects, sampled synchronously with the drive position.

Raw samples lie on the observatory-clock grid t_k = k / RATE_SP (k integer).  Each sample carries the
drive's observed HA/Dec interpolated to t_k (from DRV:POS_PKT, :class:`obsctl.positions.PositionTrack`),
Az/El, both DVM readings and flags.  Samples are generated only up to the newest drive packet, so
positions are interpolated, never extrapolated, while the drive is alive; without the drive (link down or
packets older than ``stale_real_s``) they run up to now with NaN positions and POS_STS = NO_POSITION.
The processing chain per DVM is: ADC counts -> median filter (FILTER_SP, centred, delays the stream by
(M-1)/2 raw samples) -> boxcar average of AVG_SP raw samples -> calibration.  Output samples go out in
blocks (obsctl.blocks) as soon as a drive packet has extended the stream, and at least every BLK_PERIOD_SP
real seconds; global sample indices are contiguous, blocks
longer than obsctl.blocks.MAX_SAMPLES are split.  Changing RATE/AVG/FILTER/a select or the receiver
restarts the chain: raw samples still inside the filter/average are dropped (indices stay contiguous).

Every block carries the boot id of this IOC run (its real start time in microseconds, BOOT_RBV), since
sequence numbers and indices start again at 0 after a restart.  The IOC keeps its newest HIST_LEN_SP blocks
(at most ``history_mb`` MB; site option ``history_blocks`` sets the initial length) in memory: writing K to
REPLAY_SP publishes every block held with sequence number >= K on HIST_RBV, in order, with the header's
REPLAY set to K and ANSWER to the first block sent.  A replay that starts after K says that the blocks before
it are no longer held.  A client that missed blocks (a reconnection after a network drop or after this IOC
restarted) fetches them this way (devices.radiometer, obsctl.blocks.StreamAssembler).  The history lives in
this process: blocks of an earlier run of the IOC are gone with it.

Site options (``[[instruments]] options`` of RAD) set the power-on settings: ``rate_hz`` (RATE_SP), ``avg``
(AVG_SP), ``history_blocks`` (HIST_LEN_SP), ``history_mb``.  Settings written over CA are kept across a
restart of the IOC (``AUTOSAVE``, iocs.autosave).

When the site has a subreflector (SUB), the sky signal goes through its optics: the source's contribution is
scaled by ``SUB:GAIN_FACTOR_RBV`` (defocus) and the beam looks ``SUB:BEAM_DX_RBV``/``BEAM_DY_RBV`` away from the
drive's position (tilts); perfect optics while SUB is not reachable.

PVs (prefix ``SITE:RAD:``)
---------------------------
BLK_RBV        sample block waveform (obsctl.blocks layout)
DVM1_RBV       DVM1 newest calibrated value (K on RF inputs, V otherwise; see DVM1_EGU_RBV)
DVM2_RBV       DVM2 newest calibrated value
DVM1_RAW       DVM1 newest ADC reading (count)
DVM2_RAW       DVM2 newest ADC reading (count)
DVM1_EGU_RBV   unit of DVM1_RBV for the selected input (K or V)
DVM2_EGU_RBV   unit of DVM2_RBV
DVM1_CAL_RBV   DVM1 calibration (K or V per count)
DVM2_CAL_RBV   DVM2 calibration (K or V per count)
DVM1_OFS_RBV   DVM1 ADC offset (count)
DVM2_OFS_RBV   DVM2 ADC offset (count)
CAL_K_PER_COUNT_RBV  RF calibration of the selected receiver, 1/counts_per_k (K/count)
TSYS_RBV       system temperature, mean of LCP and RCP over the last block period (K)
SAMPLES_RBV    output samples published since start (= next global index)
BLK_SEQ_RBV    sequence number of the newest block
LAG_RBV        age of the newest published sample (observatory s)
POS_STS        drive position: OK, NO_POSITION
RX_RBV         receiver feeding the RF inputs (NDI:RX_SEL_SP)
RATE_SP        raw sample rate (Hz of observatory time, 1..2000)
AVG_SP         raw samples averaged into one output sample (boxcar, 1..1000)
FILTER_SP      median filter on the raw counts: NONE, MEDIAN3, MEDIAN5
ACQ_CMD        acquisition command: STOP, RUN
ACQ_STS        acquisition state: STOP, RUN
DVM1_SEL_SP    DVM1 input select (16 inputs, obsctl.blocks.DVM_INPUTS)
DVM2_SEL_SP    DVM2 input select
BLK_PERIOD_SP  longest real time between blocks (s); a drive packet publishes one sooner
BOOT_RBV       boot id of this IOC run (real start time, us since 1970)
HIST_RBV       a replayed block (obsctl.blocks layout, REPLAY set)
REPLAY_SP      replay the history from this block sequence number on
HIST_FIRST_RBV sequence number of the oldest block held for replay
HIST_LEN_SP    blocks kept for replay (10..100000)
SYNC_SP        samples wanted up to this instant (Unix s of observatory time, e.g. the end of an integration):
               RAD writes DRV:SYNC_SP for the instant its chain (filter, average) has every raw sample needed,
               so that the block holding them goes out then instead of after the next periodic drive packet
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from caproto import AlarmSeverity, AlarmStatus
from caproto.asyncio.client import Context

from iocs.common import ObsIOC, pv_enum, pv_float, pv_int, pv_str, pv_wave
from iocs.links import CALink
from iocs.sim import radiometer as rsim
from iocs.subreflector import beam_optics, optics_pvs
from obsctl import astro, blocks
from obsctl.clock import ObservatoryClock
from obsctl.positions import PositionTrack
from obsctl.site import InstrumentConfig, Site
from obsctl.sky import BeamOptics

FILTERS = ("NONE", "MEDIAN3", "MEDIAN5")
MEDIAN_LEN = {"NONE": 1, "MEDIAN3": 3, "MEDIAN5": 5}
ACQ = ("STOP", "RUN")
SLEWING_STATES = (1, 5)           # DRV:STATE_STS indices SLEWING, STOWING
MAX_RAW_PER_TICK = 200_000        # bound on one tick's work; the rest follows next tick (nothing skipped)
AND_FLAGS = blocks.FLAG_POS_VALID | blocks.FLAG_ON_SOURCE  # must hold for every raw sample of an average
HISTORY_BLOCKS = 600              # default blocks kept for replay: 60 s real at the default block period
HISTORY_MB = 64.0                 # default bound on the memory the history uses (MB)
MAX_SEQ = 1_000_000_000           # largest block number a replay request may name
# pipeline rows: T, HA_OBS, DEC_OBS, COUNTS1, COUNTS2, FLAGS
_T, _HA, _DEC, _C1, _C2, _F = range(6)



@dataclass(frozen=True)
class Settings:
    """Everything that shapes the sample stream; a change restarts the filter/average chain."""

    rate: float
    avg: int
    median: int
    sel: tuple[int, int]
    rx: int


class SamplePipeline:
    """Centred median filter of M raw samples on the two count rows, then a boxcar of N samples.

    Rows are (T, HA, DEC, COUNTS1, COUNTS2, FLAGS).  The median needs (M-1)/2 samples of context either
    side, so the newest (M-1)/2 raw samples wait for the next push.  Averages: T, HA, DEC and counts by
    mean, FLAGS by AND for AND_FLAGS and OR for the others.
    """

    def __init__(self, median: int = 1, avg: int = 1):
        self.h = (median - 1) // 2
        self.avg = avg
        self._carry: np.ndarray | None = None   # context + pending rows of the median
        self._acc = np.empty((6, 0))            # filtered rows not yet averaged

    def push(self, raw: np.ndarray) -> np.ndarray:
        """Feed raw rows (6, n); return output rows (6, m) ready now."""
        h = self.h
        if h:
            if self._carry is None:
                raw = np.hstack([np.repeat(raw[:, :1], h, axis=1), raw]) if raw.shape[1] else raw
                buf = raw
            else:
                buf = np.hstack([self._carry, raw])
            n = buf.shape[1]
            if n < 2 * h + 1:
                self._carry = buf
                return np.empty((6, 0))
            win = np.lib.stride_tricks.sliding_window_view(buf[_C1:_C2 + 1], 2 * h + 1, axis=1)
            out = buf[:, h:n - h].copy()
            out[_C1:_C2 + 1] = np.median(win, axis=2)
            self._carry = buf[:, n - 2 * h:]
        else:
            out = raw
        acc = np.hstack([self._acc, out]) if self._acc.shape[1] else out
        m = acc.shape[1] // self.avg
        self._acc = acc[:, m * self.avg:]
        if self.avg == 1:
            return acc[:, :m]
        g = acc[:, :m * self.avg].reshape(6, m, self.avg)
        res = g.mean(axis=2)
        f = g[_F].astype(np.int64)
        res[_F] = (np.bitwise_and.reduce(f, axis=1) & AND_FLAGS) | (np.bitwise_or.reduce(f, axis=1) & ~AND_FLAGS)
        return res


class TimedInputs:
    """Ordered monitors of the timing-critical links (drive packet, diode, receiver select).

    caproto runs plain callbacks in a thread pool, possibly out of order; coroutine callbacks run in
    order on the event loop, so these monitors keep exact update order and timestamps.
    """

    def __init__(self, pkt: str | None, nd_k: str | None, rx_sel: str | None):
        self.names = {k: v for k, v in (("pkt", pkt), ("nd", nd_k), ("rx", rx_sel)) if v}
        self.packets: list[np.ndarray] = []       # inbox drained by the IOC every tick
        self.nd_hist: list[tuple[float, float]] = [(-math.inf, 0.0)]
        self.rx: int | None = None
        self.connected: dict[str, bool] = dict.fromkeys(self.names.values(), False)
        self._ctx: Context | None = None
        self._subs: list[Any] = []
        #: called on the event loop when a drive packet arrives (the IOC publishes the samples it allows)
        self.on_packet: Callable[[], None] | None = None

    async def start(self) -> None:
        """Search and subscribe; connections complete in the background."""
        self._ctx = Context()
        pvs = await self._ctx.get_pvs(*self.names.values(), connection_state_callback=self._conn, timeout=None)
        for pv in pvs:
            sub = pv.subscribe(data_type="time")
            sub.add_callback(self._update)
            self._subs.append(sub)

    async def stop(self) -> None:
        """Disconnect."""
        if self._ctx is not None:
            await self._ctx.disconnect()
            self._ctx = None

    async def _conn(self, pv: Any, state: str) -> None:
        self.connected[pv.name] = state == "connected"

    async def _update(self, sub: Any, response: Any) -> None:
        name = sub.pv.name
        if name == self.names.get("pkt"):
            self.packets.append(np.asarray(response.data, dtype=float).copy())
            if self.on_packet is not None:
                self.on_packet()
        elif name == self.names.get("nd"):
            ts = float(response.metadata.timestamp)
            self.nd_hist = [*self.nd_hist[-63:], (ts, float(response.data[0]))]
        elif name == self.names.get("rx"):
            self.rx = int(response.data[0])

    def nd_at(self, t: np.ndarray) -> np.ndarray:
        """Diode temperature (K) injected at times ``t``: the newest ND_K update stamped at or before t."""
        ts = np.array([h[0] for h in self.nd_hist])
        vals = np.array([h[1] for h in self.nd_hist])
        i = np.clip(np.searchsorted(ts, t, side="right") - 1, 0, len(ts) - 1)
        return vals[i]

    def up(self, key: str) -> bool:
        """Whether link ``key`` ('pkt', 'nd', 'rx') is connected."""
        name = self.names.get(key)
        return bool(name and self.connected.get(name))


class RadiometerIOC(ObsIOC):
    """Radiometer/DVM: two DVMs sampled synchronously with the drive, published as sample blocks."""

    blk = pv_wave("BLK_RBV", "Sample block (obsctl.blocks layout)", "block", blocks.MAX_LENGTH)
    dvm1 = pv_float("DVM1_RBV", "DVM1 newest value: K (RF) or V", "K", lo=-50, hi=5000)
    dvm2 = pv_float("DVM2_RBV", "DVM2 newest value: K (RF) or V", "K", lo=-50, hi=5000)
    dvm1_raw = pv_int("DVM1_RAW", "DVM1 newest ADC reading (24 bit)", "count")
    dvm2_raw = pv_int("DVM2_RAW", "DVM2 newest ADC reading (24 bit)", "count")
    dvm1_egu = pv_str("DVM1_EGU_RBV", "Unit of DVM1_RBV for the selected input", "K")
    dvm2_egu = pv_str("DVM2_EGU_RBV", "Unit of DVM2_RBV for the selected input", "K")
    dvm1_cal = pv_float("DVM1_CAL_RBV", "DVM1 calibration (K or V per count)", "/count", precision=9)
    dvm2_cal = pv_float("DVM2_CAL_RBV", "DVM2 calibration (K or V per count)", "/count", precision=9)
    dvm1_ofs = pv_float("DVM1_OFS_RBV", "DVM1 ADC offset", "count", precision=0)
    dvm2_ofs = pv_float("DVM2_OFS_RBV", "DVM2 ADC offset", "count", precision=0)
    cal_k = pv_float("CAL_K_PER_COUNT_RBV", "RF calibration of the selected receiver", "K/count",
                               precision=9)
    tsys = pv_float("TSYS_RBV", "Tsys, mean of LCP and RCP, last block", "K", lo=0,
                              hi=5000, alarm=(1.0, 4000.0), warn=(5.0, 1000.0), precision=3)
    samples = pv_float("SAMPLES_RBV", "Samples published = next global index", "sample", precision=0)
    blk_seq = pv_int("BLK_SEQ_RBV", "Sequence number of the newest block", "block")
    lag = pv_float("LAG_RBV", "Age of the newest published sample", "s", lo=0, hi=120, precision=3)
    pos = pv_enum("POS_STS", "Drive position for the samples", ["OK", "NO_POSITION"],
                            "NO_POSITION")
    rx_name = pv_str("RX_RBV", "Receiver feeding the RF inputs")
    rate = pv_float("RATE_SP", "Raw sample rate (observatory time)", "Hz", 50.0, lo=1.0, hi=2000.0,
                              writable=True, precision=2)
    avg = pv_int("AVG_SP", "Raw samples per output sample (boxcar)", "sample", 1, lo=1, hi=1000,
                           writable=True)
    filt = pv_enum("FILTER_SP", "Median filter on the raw counts", FILTERS, writable=True)
    acq_cmd = pv_enum("ACQ_CMD", "Acquisition command", ACQ, "RUN", writable=True)
    acq_sts = pv_enum("ACQ_STS", "Acquisition state", ACQ, "RUN")
    sel1 = pv_enum("DVM1_SEL_SP", "DVM1 input select", blocks.INPUT_LABELS, blocks.INPUT_LABELS[0],
                             writable=True)
    sel2 = pv_enum("DVM2_SEL_SP", "DVM2 input select", blocks.INPUT_LABELS, blocks.INPUT_LABELS[1],
                             writable=True)
    AUTOSAVE = ("RATE_SP", "AVG_SP", "FILTER_SP", "DVM1_SEL_SP", "DVM2_SEL_SP", "BLK_PERIOD_SP", "HIST_LEN_SP")

    blk_period = pv_float("BLK_PERIOD_SP", "Block publication period (real time)", "s", 0.1, lo=0.02,
                                    hi=2.0, writable=True, precision=3)
    boot = pv_float("BOOT_RBV", "Boot id: start of this IOC run (real)", "us", precision=0)
    hist = pv_wave("HIST_RBV", "Replayed sample block (obsctl.blocks)", "block", blocks.MAX_LENGTH)
    replay = pv_int("REPLAY_SP", "Replay history from this block number", "block", 0, lo=0, hi=MAX_SEQ,
                    writable=True)
    hist_first = pv_int("HIST_FIRST_RBV", "Oldest block number held for replay", "block")
    hist_len = pv_int("HIST_LEN_SP", "Blocks kept for replay", "block", HISTORY_BLOCKS, lo=10, hi=100_000,
                      writable=True)
    sync = pv_float("SYNC_SP", "Samples wanted up to this instant", "s", lo=0, hi=1e11, precision=6,
                    writable=True)

    def __init__(self, site: Site, inst: InstrumentConfig, clock: ObservatoryClock, **kwargs: Any):
        super().__init__(site, inst, clock, **kwargs)
        opt = inst.options
        self.offsets = (float(opt.get("dvm1_offset_counts", 1200)), float(opt.get("dvm2_offset_counts", -800)))
        self.stale_real_s = float(opt.get("stale_real_s", 1.0))
        self.radio = rsim.Radiometer(site, drift_s=float(opt.get("drift_s", 20.0)),
                                     max_physics_hz=float(opt.get("max_physics_hz", 100.0)))
        self.rx_default = int(opt.get("receiver_index", 0))
        devs = {i.kind: i.dev for i in site.instruments}

        def name(kind: str, signal: str) -> str | None:
            return site.pv(devs[kind], signal) if kind in devs else None

        self.inputs = TimedInputs(name("drive", "POS_PKT"), name("instrumentation", "ND_K_RBV"),
                                  name("instrumentation", "RX_SEL_SP"))
        self.inputs.on_packet = lambda: self.pacer.wake(settle=False)
        self.sensor_pvs: dict[int, str] = {}
        kinds = {"TMS": "housekeeping", "WX": "weather"}
        for sel, spec in rsim.VOLT_INPUTS.items():
            if spec.link:
                dev, signal = spec.link.split(":")
                full = name(kinds[dev], signal)
                if full:
                    self.sensor_pvs[sel] = full
        #: the subreflector's effect on the beam (gain factor, beam shift along HA and Dec), when there is a SUB
        self.optics_pvs = optics_pvs(site)
        self.drive_sync = name("drive", "SYNC_SP")  # output link: a drive packet wanted at an instant
        self.sensors = CALink(sorted(set(self.sensor_pvs.values()) | set(self.optics_pvs)
                                     | ({self.drive_sync} if self.drive_sync else set())))
        self.track = PositionTrack(maxlen=512)
        self.settings: Settings | None = None
        self.pipeline = SamplePipeline()
        self.k_next: int | None = None      # next raw grid index k (t = k / rate)
        self.t_last = -math.inf             # time of the newest raw sample taken
        self.index = 0                      # next global output sample index
        self.seq = 0
        self.tsys_acc: list[float] = []
        self.boot_id = time.time_ns() // 1000  # real start time (us): tells this run's blocks from others'
        self.history: deque[np.ndarray] = deque()
        self.history_bytes = 0
        self.history_max_bytes = int(float(opt.get("history_mb", HISTORY_MB)) * 1e6)
        self.history_blocks = _option(opt, "history_blocks", HISTORY_BLOCKS, 10, 100_000)
        self.power_on = {self.rate: _option(opt, "rate_hz", 50.0, 1.0, 2000.0),
                         self.avg: int(_option(opt, "avg", 1, 1, 1000))}

    # ---- main loop ---------------------------------------------------------------------------
    @blk.startup
    async def blk(self, instance, async_lib):
        await self.inputs.start()
        await self.sensors.start()
        await self._publish_settings()
        await self.boot.write(float(self.boot_id), timestamp=self.clock.now())
        for pv, value in ((self.hist_len, int(self.history_blocks)), *self.power_on.items()):
            if pv.value != value:
                await pv.write(value, timestamp=self.clock.now())
        await self.restore_settings()
        now = np.array([self.clock.now()])  # warm astropy up (~1.5 s) off the event loop, before sampling
        rx = self.site.receivers[self.rx_default]
        await asyncio.to_thread(self.radio.sky.system_temperature, np.zeros(1), np.full(1, self.site.latitude_deg),
                                now, rx, rsim.weather_at(float(now[0]), self.radio.seed))
        while True:
            t0 = time.monotonic()
            await self.tick()
            await self.pacer.sleep(max(0.005, self.blk_period.value - (time.monotonic() - t0)))

    async def shutdown(self) -> None:
        """Close the client links (called by iocs.common.serve)."""
        await self.inputs.stop()
        await self.sensors.stop()

    def _current_settings(self) -> Settings:
        rx = self.inputs.rx if self.inputs.up("rx") and self.inputs.rx is not None else self.rx_default
        rx = min(max(int(rx), 0), len(self.site.receivers) - 1)
        return Settings(rate=float(self.rate.value), avg=int(self.avg.value),
                        median=MEDIAN_LEN[self.filt.value],
                        sel=(blocks.INPUT_LABELS.index(self.sel1.value), blocks.INPUT_LABELS.index(self.sel2.value)),
                        rx=rx)

    def _horizon(self, now: float) -> tuple[float, bool]:
        """Latest time samples may be taken now, and whether drive positions back it."""
        latest = self.track.latest
        if self.inputs.up("pkt") and latest is not None and now - latest[0] < self.stale_real_s * self.clock.speed:
            return float(latest[0]), True
        return now, False

    async def tick(self) -> None:
        """Take every raw sample due, run the chain, publish blocks and the scalar readbacks."""
        for p in sorted(self.inputs.packets, key=lambda p: p[0]):
            self.track.add(p)
        self.inputs.packets = []
        now = self.clock.now()
        horizon, pos_ok = self._horizon(now)
        state = "OK" if pos_ok else "NO_POSITION"
        if self.pos.value != state:
            await self.stamp(self.pos, state)
        st = self._current_settings()
        if st != self.settings:
            await self._apply_settings(st)
        if self.acq_sts.value != "RUN":
            return
        if self.k_next is None:
            start = max(horizon, self.t_last)
            self.k_next = math.floor(start * st.rate) + 1
            if self.index == 0:
                self.radio.reset_drift(self.k_next, st.rate)
        k_end = math.floor(horizon * st.rate)
        n = min(k_end - self.k_next + 1, MAX_RAW_PER_TICK)
        if n > 0:
            k0 = self.k_next
            t = (k0 + np.arange(n, dtype=np.float64)) / st.rate
            pos = self.track.at(t)
            nd = self.inputs.nd_at(t)
            hk = {sel: self.sensors.get(pv) for sel, pv in self.sensor_pvs.items()}
            out, tsys = await asyncio.to_thread(self._acquire, st, k0, t, pos, nd, hk, self.optics())
            self.k_next = k0 + n
            self.t_last = float(t[-1])
            self.tsys_acc.append(tsys)
            await self._publish(st, out, now)

    def optics(self) -> BeamOptics:
        """The subreflector's effect on the beam now; perfect optics without a SUB link."""
        return beam_optics([self.sensors.get(pv) for pv in self.optics_pvs])

    def _acquire(self, st: Settings, k0: int, t: np.ndarray, pos: dict[str, np.ndarray], nd: np.ndarray,
                 hk: dict[int, Any], optics: BeamOptics) -> tuple[np.ndarray, float]:
        """Raw samples k0.. (worker thread): physics, ADC, chain. Returns (output rows, mean Tsys K)."""
        n = t.size
        rx = self.site.receivers[st.rx]
        weather = rsim.weather_at(float(t[n // 2]), self.radio.seed)
        sky = self.radio.sky_temperature(t, pos["HA_SKY"], pos["DEC_SKY"], rx, weather, st.rate, optics)
        meas = self.radio.measure(t, k0, st.rate, sky["total"], nd, rx)
        flags = np.zeros(n, dtype=np.int64)
        flags |= np.where(np.isfinite(pos["HA_OBS"]) & np.isfinite(pos["DEC_OBS"]), blocks.FLAG_POS_VALID, 0)
        flags |= np.where(nd > 0, blocks.FLAG_DIODE_ON, 0)
        flags |= np.where(pos["ON_SOURCE"] > 0.5, blocks.FLAG_ON_SOURCE, 0)
        flags |= np.where(np.isin(pos["STATE"], SLEWING_STATES), blocks.FLAG_SLEWING, 0)
        rows = np.empty((6, n))
        rows[_T], rows[_HA], rows[_DEC] = t, pos["HA_OBS"], pos["DEC_OBS"]
        noise = rsim.normals(self.radio.seed + 7, st.rate, k0, n, 2)
        bits = ((blocks.FLAG_DVM1_CLIP, blocks.FLAG_DVM1_NODATA), (blocks.FLAG_DVM2_CLIP, blocks.FLAG_DVM2_NODATA))
        for d, sel in enumerate(st.sel):
            if sel in rsim.RF_INPUTS:
                value = meas["lcp"] if sel == rsim.RF_INPUTS[0] else meas["rcp"]
            else:
                value = rsim.input_volts(sel, n, meas["lcp"], meas["rcp"], nd, hk.get(sel), noise[:, d])
            counts, clipped = rsim.adc(value, 1.0 / rsim.calibration(sel, rx), self.offsets[d])
            rows[_C1 + d] = counts
            flags |= np.where(clipped, bits[d][0], 0) | np.where(np.isfinite(value), 0, bits[d][1])
        rows[_F] = flags
        return self.pipeline.push(rows), float(np.mean(meas["lcp"] + meas["rcp"]) / 2.0)

    async def _publish(self, st: Settings, rows: np.ndarray, now: float) -> None:
        """Calibrate, pack and publish output rows as blocks, then the scalar readbacks."""
        m = rows.shape[1]
        if m == 0:
            return
        rx = self.site.receivers[st.rx]
        cal = [rsim.calibration(s, rx) for s in st.sel]
        az, el = astro.hadec_to_azel(rows[_HA], rows[_DEC], self.site.latitude_deg)
        cols = np.vstack([rows[_T], rows[_HA], rows[_DEC], az, el, rows[_C1], rows[_C2],
                          (rows[_C1] - self.offsets[0]) * cal[0], (rows[_C2] - self.offsets[1]) * cal[1],
                          rows[_F]])
        nodata = (blocks.FLAG_DVM1_NODATA, blocks.FLAG_DVM2_NODATA)
        flags = rows[_F].astype(np.int64)
        for d in (0, 1):
            cols[blocks.C[f"DVM{d + 1}"]][(flags & nodata[d]) != 0] = np.nan
        for piece in blocks.split(cols):
            wave = blocks.pack(self.seq, self.index, piece, rate_hz=st.rate / st.avg, avg=st.avg, rx=st.rx,
                               sel=st.sel, boot=self.boot_id)
            self._remember(wave)
            await self.blk.write(wave, timestamp=now)
            await self.blk_seq.write(self.seq, timestamp=now)
            self.seq += 1
            self.index += piece.shape[1]
        await self._publish_history_first(now)
        last = cols[:, -1]
        for pv, raw_pv, d in ((self.dvm1, self.dvm1_raw, 0), (self.dvm2, self.dvm2_raw, 1)):
            val = float(last[blocks.C[f"DVM{d + 1}"]])
            ok = math.isfinite(val)
            await pv.write(val if ok else 0.0, timestamp=now, status=AlarmStatus.NO_ALARM if ok else AlarmStatus.UDF,
                           severity=AlarmSeverity.NO_ALARM if ok else AlarmSeverity.INVALID_ALARM)
            await raw_pv.write(int(round(last[blocks.C[f"DVM{d + 1}_RAW"]])), timestamp=now)
        await self.samples.write(float(self.index), timestamp=now)
        await self.lag.write(min(max(self.clock.now() - float(last[0]), 0.0), 120.0), timestamp=now)
        if self.tsys_acc:
            await self.tsys.write(float(np.mean(self.tsys_acc)), timestamp=now)
            self.tsys_acc = []

    async def _apply_settings(self, st: Settings) -> None:
        """Restart the chain for new settings (a new rate starts a new grid after the last sample)."""
        old = self.settings
        self.settings = st
        self.pipeline = SamplePipeline(st.median, st.avg)
        if old is not None and old.rate != st.rate and self.k_next is not None:
            self.k_next = math.floor(self.t_last * st.rate) + 1 if math.isfinite(self.t_last) else None
        await self._publish_settings()

    async def _publish_settings(self) -> None:
        st = self.settings or self._current_settings()
        rx = self.site.receivers[st.rx]
        now = self.clock.now()
        await self.rx_name.write(rx.name, timestamp=now)
        await self.cal_k.write(1.0 / rx.counts_per_k, timestamp=now)
        for d, (egu, cal, ofs) in enumerate(((self.dvm1_egu, self.dvm1_cal, self.dvm1_ofs),
                                            (self.dvm2_egu, self.dvm2_cal, self.dvm2_ofs))):
            await egu.write(blocks.DVM_INPUTS[st.sel[d]][1], timestamp=now)
            await cal.write(rsim.calibration(st.sel[d], rx), timestamp=now)
            await ofs.write(self.offsets[d], timestamp=now)

    # ---- history -----------------------------------------------------------------------------
    def _remember(self, wave: np.ndarray) -> None:
        """Keep a published block for replay, dropping the oldest beyond HIST_LEN_SP blocks or the byte bound."""
        self.history.append(wave)
        self.history_bytes += wave.nbytes
        self._trim_history()

    def _trim_history(self, limit: int | None = None) -> None:
        limit = int(self.hist_len.value) if limit is None else limit
        while self.history and (len(self.history) > limit or self.history_bytes > self.history_max_bytes):
            self.history_bytes -= self.history.popleft().nbytes

    async def _publish_history_first(self, now: float) -> None:
        first = int(self.history[0][blocks.H["SEQ"]]) if self.history else self.seq
        if first != self.hist_first.value:
            await self.hist_first.write(first, timestamp=now)

    @replay.putter
    async def replay(self, instance, value):
        """Publish every block held with sequence number >= value on HIST_RBV, oldest first."""
        first = int(value)
        now = self.clock.now()
        answer = [w for w in self.history if w[blocks.H["SEQ"]] >= first]  # a snapshot: sampling goes on
        for wave in answer:
            out = wave.copy()
            out[blocks.H["REPLAY"]] = first
            out[blocks.H["ANSWER"]] = answer[0][blocks.H["SEQ"]]
            await self.hist.write(out, timestamp=now)
        sent = len(answer)
        self.log.info("replayed %d blocks from block %d", sent, first)
        return first

    @hist_len.putter
    async def hist_len(self, instance, value):
        self._trim_history(int(value))  # the PV takes the new value only after the putter returns
        await self._publish_history_first(self.clock.now())
        return int(value)

    @sync.putter
    async def sync(self, instance, value):
        """Ask the drive for a position packet at the instant output samples up to ``value`` can be made.

        That is the last raw sample before ``value``, plus what the median filter and the average still need.
        """
        if self.drive_sync and self.sensors.connected(self.drive_sync):
            st = self.settings or self._current_settings()
            k_last = math.ceil(value * st.rate) - 1 + self.pipeline.h + st.avg - 1
            await self.sensors.write(self.drive_sync, k_last / st.rate)
        return value

    # ---- putters -----------------------------------------------------------------------------
    @acq_cmd.putter
    async def acq_cmd(self, instance, value):
        if value == "RUN" and self.acq_sts.value != "RUN":
            self.k_next = None
            self.pipeline = SamplePipeline(self.pipeline.h * 2 + 1, self.pipeline.avg)
        await self.acq_sts.write(value, timestamp=self.clock.now())
        await self.say(f"acquisition {value}")
        return value


def _option(options: dict[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    """A numeric site option of RAD within lo..hi (ValueError naming the option otherwise)."""
    value = options.get(name, default)
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"RAD option {name}: {value!r} is not a number") from None
    if not lo <= v <= hi:
        raise ValueError(f"RAD option {name}: {value!r} outside {lo:g}..{hi:g}")
    return v


def make_ioc(site: Site, inst: InstrumentConfig, clock: ObservatoryClock) -> RadiometerIOC:
    """The RAD IOC of a site."""
    return RadiometerIOC(site, inst, clock)
