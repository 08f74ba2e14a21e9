"""PSR: the Mark I pulsar timer as a triggerable detector.

``trigger()`` commands SAMPLE (fold the total power at the apparent period of ``psr_name``, or at
``period`` when no pulsar is named, for ``npulses`` periods or ``int_time`` s of observatory time), waits
until the timer reports DONE, then commands OUTPUT_DATA so the profile is published, and finishes.
A refused command (timer busy, no data) fails the Status with the IOC's reason; a fold that ends without
data fails it too.  ``read()`` gives the profile (K per bin), its signal-to-noise, the time of arrival
(MJD on the timer clock), the folding period and Tsys, read fresh from the IOC.
"""

from __future__ import annotations

from typing import Any

from ophyd import Component as Cpt
from ophyd import DeviceStatus, Kind

from devices.common import CommandRefused, DeviceFault, ObsDevice, Readback, Setpoint, run_in_thread, watch

BUSY = ("WAITING", "SAMPLING")


class PulsarTimer(ObsDevice):
    """Mark I pulsar timer (PSR IOC).

    Hinted: signal-to-noise and time of arrival.  Data: ``profile`` (K per bin), ``period_rbv`` (s),
    ``phase`` (turns), ``width`` (ms), ``tsys`` (K), ``npulse`` and ``tstart`` (MJD).  Fold settings
    (``psr_name``, ``period``, ``nbins``, ``npulses``, ``int_time``, ``tau``) are configuration.
    """

    cmd = Cpt(Setpoint, "CMD", string=True, kind=Kind.omitted)
    state = Cpt(Readback, "STATE_STS", string=True, kind=Kind.omitted)
    test_sts = Cpt(Readback, "TEST_STS", string=True, kind=Kind.omitted)
    test_msg = Cpt(Readback, "TEST_MSG", string=True, kind=Kind.omitted)
    nbins = Cpt(Setpoint, "NBINS_SP", kind=Kind.config)
    period = Cpt(Setpoint, "PERIOD_SP", kind=Kind.config)
    psr_name = Cpt(Setpoint, "PSR_NAME_SP", string=True, kind=Kind.config)
    period_rbv = Cpt(Readback, "PERIOD_RBV", kind=Kind.normal, auto_monitor=False)
    tau = Cpt(Setpoint, "TAU_SP", kind=Kind.config)
    tau_rbv = Cpt(Readback, "TAU_RBV", kind=Kind.config)
    start = Cpt(Setpoint, "START_SP", string=True, kind=Kind.omitted)
    npulses = Cpt(Setpoint, "NPULSES_SP", kind=Kind.config)
    int_time = Cpt(Setpoint, "INT_TIME_SP", kind=Kind.config)
    sim_fault = Cpt(Setpoint, "SIM_FAULT_SP", string=True, kind=Kind.omitted)
    npulse = Cpt(Readback, "NPULSE_RBV", kind=Kind.normal, auto_monitor=False)
    progress = Cpt(Readback, "PROGRESS_RBV", kind=Kind.omitted)
    snr = Cpt(Readback, "SNR_RBV", kind=Kind.hinted, auto_monitor=False)
    phase = Cpt(Readback, "PHASE_RBV", kind=Kind.normal, auto_monitor=False)
    width = Cpt(Readback, "WIDTH_RBV", kind=Kind.normal, auto_monitor=False)
    toa = Cpt(Readback, "TOA_RBV", kind=Kind.hinted, auto_monitor=False)
    tstart = Cpt(Readback, "TSTART_RBV", kind=Kind.normal, auto_monitor=False)
    timer_time = Cpt(Readback, "TIME_RBV", string=True, kind=Kind.omitted)
    clock_sts = Cpt(Readback, "CLOCK_STS", string=True, kind=Kind.config)
    profile = Cpt(Readback, "PROFILE", kind=Kind.normal, auto_monitor=False)
    profile_raw = Cpt(Readback, "PROFILE_RAW", kind=Kind.omitted, auto_monitor=False)
    graph = Cpt(Readback, "GRAPH", kind=Kind.omitted, auto_monitor=False)
    tsys = Cpt(Readback, "TSYS_RBV", kind=Kind.normal, auto_monitor=False)
    rx = Cpt(Readback, "RX_RBV", string=True, kind=Kind.config)
    psr = Cpt(Readback, "PSR_RBV", string=True, kind=Kind.normal, auto_monitor=False)
    input_level = Cpt(Readback, "INPUT_RBV", kind=Kind.omitted)
    drv_link = Cpt(Readback, "DRV_LINK_STS", string=True, kind=Kind.omitted)
    ndi_link = Cpt(Readback, "NDI_LINK_STS", string=True, kind=Kind.omitted)
    smear = Cpt(Readback, "SMEAR_RBV", kind=Kind.config)

    def _command(self, command: str) -> float:
        """Write CMD; return the time stamp of the state it set (CommandRefused with the IOC's reason)."""
        before = self.state.fresh()
        self.cmd.put_wait(command)
        after = self.state.fresh()
        if after == before and command in ("SAMPLE", "SETUP_TIME"):
            raise CommandRefused(f"{self.name}: {command} refused: {self.last_message()}")
        return after[1]

    def _fold(self, command: str) -> DeviceStatus:
        status = DeviceStatus(self)

        def work() -> None:
            state, _ = self.state.fresh()
            if state in BUSY:
                raise CommandRefused(f"{self.name}: timer busy ({state})")
            t_acc = self._command(command)

            def check() -> bool:
                state_now, ts = self.state.get(), self.state.timestamp or 0.0
                if ts < t_acc:
                    return False
                if state_now == "DONE":
                    return True
                if state_now == "IDLE":
                    raise DeviceFault(f"{self.name}: {command} ended without data: {self.last_message()}")
                return False

            fold = DeviceStatus(self)
            watch(fold, [self.state], check)
            fold.wait()
            msg = self.message.fresh()
            self.cmd.put_wait("OUTPUT_DATA")
            if self.message.fresh() != msg and "OUTPUT_DATA" in self.last_message():
                raise CommandRefused(f"{self.name}: {self.last_message()}")

        run_in_thread(status, work, f"{self.name}-{command.lower()}")
        return status

    def trigger(self) -> DeviceStatus:
        """Fold (SAMPLE), then publish the profile (OUTPUT_DATA); done when the data are readable."""
        return self._fold("SAMPLE")

    def setup_time_and_fold(self, start: str = "now") -> DeviceStatus:
        """Set the timer clock to UTC at ``start`` ('now' or ISO UTC) and fold from that instant (SETUP_TIME)."""
        self.start.checked_put(start)
        return self._fold("SETUP_TIME")

    def configure_fold(self, pulsar: str | None = None, *, period_s: float | None = None,
                       nbins: int | None = None, npulses: int | None = None,
                       int_time_s: float | None = None) -> dict[str, Any]:
        """Write the fold settings given (checked); ``pulsar=''`` folds at ``period_s`` instead."""
        out: dict[str, Any] = {}
        for sig, value in ((self.psr_name, pulsar), (self.period, period_s), (self.nbins, nbins),
                           (self.npulses, npulses), (self.int_time, int_time_s)):
            if value is not None:
                out[sig.attr_name] = sig.checked_put(value)
        return out
