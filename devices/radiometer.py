"""RAD: the radiometer as a triggerable detector and a flyer over its sample blocks.

The IOC publishes every synchronous sample (time, observed HA/Dec, Az/El, both DVMs, flags) in blocks on
``BLK_RBV`` (layout in :mod:`obsctl.blocks`).  This device keeps one monitor on that waveform and one on
``HIST_RBV`` (blocks the IOC replays on request), puts the blocks in order with
:class:`obsctl.blocks.StreamAssembler` and follows the global sample indices with
:class:`obsctl.blocks.LossTracker`, so a lost or repeated sample is seen.

Missed blocks are fetched again: when a block arrives after a gap in the sequence numbers (a reconnection
after a network drop, or a restarted IOC whose first blocks went out before this client reconnected), the
device writes the first missing number to ``REPLAY_SP`` and holds the newer blocks until the IOC's history
fills the gap (at most ``replay_timeout_s`` real seconds).  The guarantee, per IOC run (boot id):

* every sample from the first one this device received to the last one it received is handed over in
  order, unless the IOC's history (``HIST_LEN_SP`` blocks, 60 s at the defaults) no longer held it when
  asked; only those are counted in ``lost``;
* after a restart the new run is wanted from its very first sample (index 0), so samples it took while
  this client was still reconnecting are recovered too (counted in ``recovered``);
* a killed IOC's history dies with it: blocks it published in its last moments that never reached this
  client (at most those in flight, about one block period) cannot be fetched or even counted.  Everything
  received before the IOC died is kept.  Samples a dead IOC never took are not lost: they are a gap in time
  between the runs (a restart, counted in ``restarts``).

Step scans: ``trigger()`` collects every sample whose time lies in a window of ``integration_time``
seconds of *observatory* time (judged from the samples' own time stamps, not the wall clock) starting at
the trigger (the observatory clock's now; without a clock, the first sample that arrives); ``read()``
then gives the means (DVM1/DVM2, HA, Dec, Az, El), the standard deviations and the number of samples.
The window's end is written to ``SYNC_SP``, so that the IOC has the drive latch a position then and the
last samples of the window need not wait for the drive's next periodic packet (also the planned or actual
end of a fly window).

Fly scans: ``kickoff()`` starts keeping every sample, ``complete()`` ends the window at that instant and
finishes once the stream has passed it, ``collect_pages()`` hands the samples over as one Event per sample
(bluesky's EventPageCollectable interface; bluesky 1.15 only accepts pages, ``stream=False``).  Every
sample's own observatory time is its time stamp; the stream has the sample index and the boot id of the
IOC run that took it.  Lost samples are counted in ``lost`` and logged; with ``fail_on_loss`` set,
``complete()`` fails instead.  A fly window keeps at most ``max_fly_samples`` samples between collects
(older ones are dropped and counted as lost).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from ophyd import Component as Cpt
from ophyd import DeviceStatus, Kind, Signal
from ophyd.status import StatusBase
from ophyd.utils import InvalidState
from ophyd.utils.errors import OpException

from devices.common import ObsDevice, Readback, ResultSignal, SampleLoss, Setpoint
from obsctl import blocks
from obsctl.clock import ObservatoryClock

REPLAY_RESEND_S = 1.0  # real s without progress of the answer before a replay request is written again
log = logging.getLogger("obsctl.devices.radiometer")
C = blocks.C
EPS = 1e-9

#: flyer columns: (data key suffix, block column or None for the index and boot id, dtype, units)
SAMPLE_KEYS: tuple[tuple[str, str | None, str, str], ...] = (
    ("index", None, "integer", ""),
    ("boot", None, "integer", ""),
    ("t", "T", "number", "s"),
    ("ha", "HA", "number", "deg"),
    ("dec", "DEC", "number", "deg"),
    ("az", "AZ", "number", "deg"),
    ("el", "EL", "number", "deg"),
    ("dvm1", "DVM1", "number", "K"),
    ("dvm2", "DVM2", "number", "K"),
    ("dvm1_raw", "DVM1_RAW", "integer", "count"),
    ("dvm2_raw", "DVM2_RAW", "integer", "count"),
    ("flags", "FLAGS", "integer", ""),
)


class _Window:
    """Samples with ``t_start <= T < t_end`` (``t_start`` None: from the first sample offered)."""

    def __init__(self, t_start: float | None, duration: float | None, max_samples: int = 0):
        self.t_start = t_start
        self.duration = duration
        self.single = duration is not None and duration <= 0  # just the first sample at or after t_start
        self.t_end = None if t_start is None or duration is None or self.single else t_start + duration
        self.chunks: list[np.ndarray] = []
        self.index_chunks: list[np.ndarray] = []
        self.boot_chunks: list[np.ndarray] = []
        self.kept = 0
        self.max_samples = max_samples  # 0: no limit; beyond it the oldest kept samples are dropped
        self.dropped = 0
        self.lost_at_start = 0
        self.complete = False

    def close_at(self, t_end: float) -> None:
        """End the window at ``t_end`` (observatory s)."""
        self.t_end = t_end

    def feed(self, data: np.ndarray, index: np.ndarray, rate_hz: float, boot: int = 0) -> None:
        """Keep the samples inside the window; mark it complete once the stream has passed its end."""
        t = data[C["T"]]
        if self.t_start is None and t.size:
            self.t_start = float(t[0])
            if self.duration is not None and not self.single:
                self.t_end = self.t_start + self.duration
        sel = t >= self.t_start - EPS
        if self.single:
            first = np.flatnonzero(sel)[:1]
            sel = np.zeros_like(sel)
            sel[first] = True
            self.complete = bool(first.size)
        elif self.t_end is not None:
            sel &= t < self.t_end - EPS
            # complete when the next sample would not fall inside the window any more
            step = 1.0 / rate_hz if rate_hz > 0 else 0.0
            if t.size and t[-1] + step >= self.t_end - EPS:
                self.complete = True
        if np.any(sel):
            self.chunks.append(data[:, sel])
            self.index_chunks.append(index[sel])
            self.boot_chunks.append(np.full(int(np.count_nonzero(sel)), boot, dtype=np.int64))
            self.kept += int(np.count_nonzero(sel))
            while self.max_samples and self.kept > self.max_samples and len(self.chunks) > 1:
                n = self.chunks.pop(0).shape[1]
                self.index_chunks.pop(0)
                self.boot_chunks.pop(0)
                self.kept -= n
                self.dropped += n

    def take(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All samples kept so far (and forget them): (NCOL, n) columns, (n,) indices and (n,) boot ids."""
        data = np.hstack(self.chunks) if self.chunks else np.empty((blocks.NCOL, 0))
        idx = np.concatenate(self.index_chunks) if self.index_chunks else np.empty(0, dtype=np.int64)
        boot = np.concatenate(self.boot_chunks) if self.boot_chunks else np.empty(0, dtype=np.int64)
        self.chunks, self.index_chunks, self.boot_chunks = [], [], []
        self.kept = 0
        return data, idx, boot


def _circular_mean_deg(x: np.ndarray) -> float:
    r = np.radians(x[np.isfinite(x)])
    if r.size == 0:
        return math.nan
    return float(np.degrees(np.arctan2(np.mean(np.sin(r)), np.mean(np.cos(r)))) % 360.0)


def _nanmean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.mean(x)) if x.size else math.nan


def _nanstd(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.std(x, ddof=1)) if x.size > 1 else math.nan


class Radiometer(ObsDevice):
    """Two DVMs sampled synchronously with the drive (RAD IOC): step-scan detector and flyer.

    Hinted: mean DVM1 and DVM2 of the last trigger (K on the RF inputs).  ``integration_time`` is in
    seconds of observatory time.  ``clock`` (an :class:`ObservatoryClock`) anchors trigger and fly windows
    at "now"; without one a window starts at the first sample that arrives.
    """

    # the stream
    blk = Cpt(Readback, "BLK_RBV", kind=Kind.omitted)
    blk_seq = Cpt(Readback, "BLK_SEQ_RBV", kind=Kind.omitted, auto_monitor=False)
    samples = Cpt(Readback, "SAMPLES_RBV", kind=Kind.omitted, auto_monitor=False)
    lag = Cpt(Readback, "LAG_RBV", kind=Kind.omitted, auto_monitor=False)
    # newest values and calibration
    dvm1_rbv = Cpt(Readback, "DVM1_RBV", kind=Kind.omitted, auto_monitor=False)
    dvm2_rbv = Cpt(Readback, "DVM2_RBV", kind=Kind.omitted, auto_monitor=False)
    dvm1_raw = Cpt(Readback, "DVM1_RAW", kind=Kind.omitted, auto_monitor=False)
    dvm2_raw = Cpt(Readback, "DVM2_RAW", kind=Kind.omitted, auto_monitor=False)
    dvm1_egu = Cpt(Readback, "DVM1_EGU_RBV", kind=Kind.config, string=True)
    dvm2_egu = Cpt(Readback, "DVM2_EGU_RBV", kind=Kind.config, string=True)
    dvm1_cal = Cpt(Readback, "DVM1_CAL_RBV", kind=Kind.config)
    dvm2_cal = Cpt(Readback, "DVM2_CAL_RBV", kind=Kind.config)
    dvm1_ofs = Cpt(Readback, "DVM1_OFS_RBV", kind=Kind.config)
    dvm2_ofs = Cpt(Readback, "DVM2_OFS_RBV", kind=Kind.config)
    cal_k = Cpt(Readback, "CAL_K_PER_COUNT_RBV", kind=Kind.config)
    tsys = Cpt(Readback, "TSYS_RBV", kind=Kind.normal)
    pos = Cpt(Readback, "POS_STS", kind=Kind.omitted, string=True)
    rx = Cpt(Readback, "RX_RBV", kind=Kind.config, string=True)
    # settings
    rate = Cpt(Setpoint, "RATE_SP", kind=Kind.config)
    avg = Cpt(Setpoint, "AVG_SP", kind=Kind.config)
    filt = Cpt(Setpoint, "FILTER_SP", kind=Kind.config, string=True)
    acq_cmd = Cpt(Setpoint, "ACQ_CMD", kind=Kind.omitted, string=True)
    acq_sts = Cpt(Readback, "ACQ_STS", kind=Kind.omitted, string=True)
    sel1 = Cpt(Setpoint, "DVM1_SEL_SP", kind=Kind.config, string=True)
    sel2 = Cpt(Setpoint, "DVM2_SEL_SP", kind=Kind.config, string=True)
    blk_period = Cpt(Setpoint, "BLK_PERIOD_SP", kind=Kind.config)
    # the history of missed blocks
    hist = Cpt(Readback, "HIST_RBV", kind=Kind.omitted)
    replay = Cpt(Setpoint, "REPLAY_SP", kind=Kind.omitted, auto_monitor=False)
    boot = Cpt(Readback, "BOOT_RBV", kind=Kind.omitted, auto_monitor=False)
    hist_first = Cpt(Readback, "HIST_FIRST_RBV", kind=Kind.omitted, auto_monitor=False)
    hist_len = Cpt(Setpoint, "HIST_LEN_SP", kind=Kind.config)
    #: the end of a window this device waits for: the IOC has the drive latch a position then
    sync = Cpt(Setpoint, "SYNC_SP", kind=Kind.omitted, auto_monitor=False)
    # step-scan results (soft, time-stamped with the mean sample time)
    integration_time = Cpt(ResultSignal, value=1.0, units="s", kind=Kind.config)
    #: observatory time (s) at which the next fly window ends at the latest (NaN: at complete()); kickoff takes it
    fly_end = Cpt(ResultSignal, value=math.nan, units="s", kind=Kind.omitted)
    dvm1 = Cpt(ResultSignal, value=math.nan, units="K", kind=Kind.hinted)
    dvm2 = Cpt(ResultSignal, value=math.nan, units="K", kind=Kind.hinted)
    dvm1_std = Cpt(ResultSignal, value=math.nan, units="K", kind=Kind.normal)
    dvm2_std = Cpt(ResultSignal, value=math.nan, units="K", kind=Kind.normal)
    ha = Cpt(ResultSignal, value=math.nan, units="deg", kind=Kind.normal)
    dec = Cpt(ResultSignal, value=math.nan, units="deg", kind=Kind.normal)
    az = Cpt(ResultSignal, value=math.nan, units="deg", kind=Kind.normal)
    el = Cpt(ResultSignal, value=math.nan, units="deg", kind=Kind.normal)
    nsamp = Cpt(ResultSignal, value=0, units="sample", kind=Kind.normal)
    time = Cpt(ResultSignal, value=math.nan, units="s", kind=Kind.normal)
    flags = Cpt(ResultSignal, value=0, kind=Kind.normal)
    lost = Cpt(ResultSignal, value=0, units="sample", kind=Kind.normal)
    restarts = Cpt(Signal, value=0, kind=Kind.omitted)
    recovered = Cpt(Signal, value=0, kind=Kind.omitted)  # samples fetched again from the IOC's history

    def __init__(self, prefix: str = "", *, name: str, clock: ObservatoryClock | None = None,
                 stream_name: str = "samples", fail_on_loss: bool = False,
                 max_fly_samples: int = 5_000_000, replay_timeout_s: float = 10.0, **kwargs: Any):
        super().__init__(prefix=prefix, name=name, **kwargs)
        self.clock = clock
        self.stream_name = stream_name
        self.fail_on_loss = fail_on_loss
        self.max_fly_samples = max_fly_samples
        self.replay_timeout_s = replay_timeout_s
        self._lock = threading.RLock()  # status callbacks run under it and may trigger again
        self.tracker = blocks.LossTracker()
        self.assembler = blocks.StreamAssembler(replay_timeout_s)
        self._window: _Window | None = None
        self._window_status: DeviceStatus | None = None
        self._fly: _Window | None = None
        self._fly_status: DeviceStatus | None = None
        self._fly_lost0 = 0
        self.last_block: blocks.Block | None = None
        self.last_window: tuple[float | None, float | None] = (None, None)  # of the last trigger (obs. s)
        self.last_fly_window: tuple[float | None, float | None] = (None, None)  # of the last complete()
        self.last_fly_recovered = 0    # samples of the last fly window fetched again from the IOC's history
        self._fly_recovered0 = 0
        self.blk.subscribe(self._on_block, run=False)
        self.hist.subscribe(self._on_replayed, run=False)

    # ---- the stream ----------------------------------------------------------------------------
    @property
    def total_lost(self) -> int:
        """Samples lost since this device was made (all IOC runs)."""
        return self.tracker.lost

    def _on_block(self, value: Any = None, **_: Any) -> None:
        self._offer(value, replayed=False)

    def _on_replayed(self, value: Any = None, **_: Any) -> None:
        self._offer(value, replayed=True)

    def _offer(self, value: Any, replayed: bool) -> None:
        """Put a received block (live or replayed) in order; hand over what is ready; ask for missed blocks."""
        try:
            b = blocks.try_unpack(value)
        except blocks.BlockError as err:
            log.warning("%s: bad sample block ignored: %s", self.name, err)
            return
        if b is None:
            return
        with self._lock:
            expired = self.assembler.expired
            ready, request = self.assembler.offer(b, time.monotonic(), replayed)
            if self.assembler.expired != expired:
                log.warning("%s: no replay within %.1f s; the gap before block %d of IOC run %d is given up",
                            self.name, self.replay_timeout_s, b.seq, b.boot)
            for blk in ready:
                self._deliver(blk)
        if request is not None:
            log.info("%s: blocks missed from block %d of IOC run %d: asking the IOC to replay them", self.name,
                     request.first, request.boot)
            threading.Thread(target=self._ask_replay, args=(request,), name=f"{self.name}-replay",
                             daemon=True).start()

    def _ask_replay(self, request: blocks.ReplayRequest) -> None:
        """Write the replay request, then give the gap up if the IOC has not filled it within the timeout.

        The request is written once the replay channel (HIST_RBV) is connected, and again whenever
        ``REPLAY_RESEND_S`` pass without progress (no block of the answer handed over): after an IOC restart
        the channels reconnect one by one, and an answer published before this client's HIST_RBV monitor was
        back is never seen (or only its newest block, the monitor's first value).
        """
        deadline = time.monotonic() + self.replay_timeout_s
        sent = quiet_since = -math.inf
        progress: tuple[int, bool] | None = None
        while time.monotonic() < deadline:
            with self._lock:
                if self.assembler.request != request:  # filled, given up or superseded
                    return
                state = (self.assembler.next_seq, self.assembler.answered)
            now = time.monotonic()
            if progress is not None and state != progress:  # the answer is arriving
                quiet_since = now
            progress = state
            if now - max(sent, quiet_since) > REPLAY_RESEND_S and self.hist.connected:
                try:
                    self.replay.put_wait(request.first, timeout=max(deadline - now, 0.1))
                    sent = time.monotonic()
                except (TimeoutError, OpException) as err:  # not (re)connected yet: try again
                    log.debug("%s: replay request not sent yet: %s", self.name, err)
            time.sleep(0.05)
        with self._lock:
            if self.assembler.request == request:
                log.warning("%s: the IOC did not replay blocks from %d within %.1f s", self.name, request.first,
                            self.replay_timeout_s)
            for blk in self.assembler.expire(time.monotonic()):
                self._deliver(blk)

    def _deliver(self, b: blocks.Block) -> None:
        """Account for one block in order and feed its new samples to the open windows (lock held)."""
        t = self.tracker
        lost0, restarts0 = t.lost, t.restarts
        new = t.add(b)
        if t.restarts > restarts0:
            log.warning("%s: radiometer IOC restarted (run %d, first block %d)", self.name, b.boot, b.seq)
            self.restarts.put(t.restarts)
        if t.lost > lost0:
            log.warning("%s: %d samples lost before index %d", self.name, t.lost - lost0, b.first)
        if self.assembler.recovered != self.recovered.get():
            self.recovered.put(self.assembler.recovered)
        self.last_block = b
        if new <= 0:
            return
        data = b.data[:, b.nsamp - new:]
        index = b.indices[b.nsamp - new:]
        for win, st, finish in ((self._window, self._window_status, self._finish_trigger),
                                (self._fly, self._fly_status, self._finish_fly)):
            if win is None:
                continue
            win.feed(data, index, b.rate_hz, b.boot)
            if win.complete and st is not None and not st.done:
                finish()

    def _now(self) -> float | None:
        return self.clock.now() if self.clock is not None else None

    def _want_until(self, t_end: float | None) -> None:
        """Tell the IOC the stream is awaited up to ``t_end`` (observatory s; RAD:SYNC_SP), so that the samples
        up to then go out at that instant, not at the drive's next periodic packet.  A failed write only
        costs that wait."""
        if t_end is None or not math.isfinite(t_end):
            return
        try:
            self.sync.put(t_end, use_complete=False, connection_timeout=0.5)
        except (OpException, TimeoutError) as err:
            log.warning("%s: %s not written (%s): the window waits for the next drive packet",
                        self.name, self.sync.pvname, err)

    # ---- step scans ----------------------------------------------------------------------------
    def trigger(self) -> DeviceStatus:
        """Collect the samples of one integration window; done once the stream has passed its end."""
        status = DeviceStatus(self)
        with self._lock:
            if self._window_status is not None and not self._window_status.done:
                self._window_status.set_exception(RuntimeError(f"{self.name}: re-triggered"))
            self._window = _Window(self._now(), float(self.integration_time.get()))
            self._window.lost_at_start = self.total_lost
            self._window_status = status
            t_end = self._window.t_end
        self._want_until(t_end)
        return status

    def window_over(self) -> StatusBase:
        """A Status finishing when the observatory clock passes the end of the window being triggered.

        From then on the telescope may move on: the samples are those of the window, which the stream still
        has to deliver (the trigger's own Status).  Finished at once without a pending trigger or a clock.
        """
        status = StatusBase()
        with self._lock:
            win, trig = self._window, self._window_status
        t_end = win.t_end if win is not None else None
        delay = self.clock.real_duration(t_end - self.clock.now()) if t_end is not None and self.clock else 0.0
        if trig is None or trig.done or delay <= 0:
            status.set_finished()
            return status

        def over(*_: Any) -> None:
            if not status.done:
                try:
                    status.set_finished()
                except InvalidState:  # the other path finished it meanwhile
                    pass

        timer = threading.Timer(delay, over)
        timer.daemon = True
        timer.start()
        trig.add_callback(over)  # a trigger that ends (or fails) first ends the wait too
        status.add_callback(lambda _st: timer.cancel())
        return status

    def _finish_trigger(self) -> None:
        """Compute the statistics of the finished window and finish the trigger Status (lock held)."""
        win, status = self._window, self._window_status
        self._window, self._window_status = None, None
        self.last_window = (win.t_start, win.t_end)
        data, _, _ = win.take()
        t = data[C["T"]]
        ts = float(np.mean(t)) if t.size else (win.t_start or 0.0)
        values = {self.dvm1: _nanmean(data[C["DVM1"]]), self.dvm2: _nanmean(data[C["DVM2"]]),
                  self.dvm1_std: _nanstd(data[C["DVM1"]]), self.dvm2_std: _nanstd(data[C["DVM2"]]),
                  self.ha: _nanmean(data[C["HA"]]), self.dec: _nanmean(data[C["DEC"]]),
                  self.az: _circular_mean_deg(data[C["AZ"]]), self.el: _nanmean(data[C["EL"]]),
                  self.nsamp: int(t.size), self.time: ts,
                  self.flags: int(np.bitwise_or.reduce(data[C["FLAGS"]].astype(np.int64))) if t.size else 0,
                  self.lost: self.total_lost - win.lost_at_start}
        for sig, v in values.items():
            sig.put(v, timestamp=ts)
        status.set_finished()

    # ---- fly scans -----------------------------------------------------------------------------
    def kickoff(self) -> StatusBase:
        """Start keeping every sample from now on (the acquisition is switched on if it was stopped).

        With ``fly_end`` set (observatory s), the window ends there at the latest, however late complete() comes.
        """
        status = DeviceStatus(self)
        if self.acq_sts.get() != "RUN":
            self.acq_cmd.checked_put("RUN")
        end = float(self.fly_end.get())
        self.fly_end.put(math.nan)
        start = self._now()
        duration = None
        if math.isfinite(end) and start is not None:
            duration = end - start
            if duration <= 0:
                raise ValueError(f"{self.fly_end.name} {end:.3f} is not after now ({start:.3f}, observatory s)")
        with self._lock:
            self._fly = _Window(start, duration, self.max_fly_samples)
            self._fly_lost0 = self.total_lost
            self._fly_recovered0 = self.assembler.recovered
            self._fly_status = None
            t_end = self._fly.t_end
        self._want_until(t_end)
        status.set_finished()
        return status

    def complete(self) -> DeviceStatus:
        """End the fly window now (or at its planned end); done once every sample up to then has arrived."""
        status = DeviceStatus(self)
        with self._lock:
            if self._fly is None:
                raise RuntimeError(f"{self.name}: complete() without kickoff()")
            now = self._now()
            if now is None:  # no clock: end at the newest sample received
                b = self.last_block
                now = float(b.col("T")[-1]) + 0.5 / b.rate_hz if b is not None and b.nsamp else -math.inf
            if self._fly.t_end is not None:  # a planned end (fly_end): never later than that
                now = min(now, self._fly.t_end)
            self._fly.close_at(now)
            self._fly_status = status
            b = self.last_block
            if b is not None and b.nsamp and float(b.col("T")[-1]) + 1.0 / b.rate_hz >= now - EPS:
                self._finish_fly()
                now = None
        self._want_until(now)
        return status

    def _finish_fly(self) -> None:
        """Report losses and finish the complete() Status (lock held)."""
        status = self._fly_status
        self.last_fly_window = (self._fly.t_start, self._fly.t_end)
        self.last_fly_recovered = self.assembler.recovered - self._fly_recovered0
        lost = self.total_lost - self._fly_lost0 + self._fly.dropped
        self.lost.put(lost)
        if lost and self.fail_on_loss:
            status.set_exception(SampleLoss(f"{self.name}: {lost} samples lost during the fly scan"))
        else:
            if lost:
                log.warning("%s: %d samples lost during the fly scan", self.name, lost)
            status.set_finished()

    def describe_collect(self) -> dict[str, dict[str, dict[str, Any]]]:
        """One stream (``stream_name``) with one data key per sample column."""
        src = f"PV:{self.blk.pvname}"
        keys = {f"{self.name}_{k}": {"source": src, "dtype": dt, "shape": [], "units": u,
                                     "precision": 0 if dt == "integer" else 6}
                for k, _, dt, u in SAMPLE_KEYS}
        return {self.stream_name: keys}

    def collect_pages(self) -> Iterator[dict[str, Any]]:
        """Every sample kept since the last collect, as one EventPage (one Event per sample)."""
        with self._lock:
            if self._fly is None:
                return
            data, index, boot = self._fly.take()
            if self._fly_status is not None and self._fly_status.done:
                self._fly = None
        if index.size == 0:
            return
        t = data[C["T"]].tolist()
        page_data: dict[str, list] = {}
        for key, col, dt, _ in SAMPLE_KEYS:
            values = {"index": index, "boot": boot}[key] if col is None else data[C[col]]
            page_data[f"{self.name}_{key}"] = (values.astype(np.int64) if dt == "integer" else values).tolist()
        yield {"time": t, "data": page_data, "timestamps": {k: t for k in page_data}}

    def stop(self, *, success: bool = False) -> None:
        """Abandon a pending trigger or fly window (the IOC keeps sampling)."""
        with self._lock:
            for st in (self._window_status, self._fly_status):
                if st is not None and not st.done:
                    st.set_exception(RuntimeError(f"{self.name} stopped"))
            self._window = self._window_status = None
            self._fly = self._fly_status = None

    def unstage(self) -> list[Any]:
        """Forget an uncollected fly window (after a plan ends or aborts), then unstage."""
        with self._lock:
            self._fly = self._fly_status = None
        return super().unstage()
