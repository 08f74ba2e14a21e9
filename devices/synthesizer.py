"""SYN1, SYN2: frequency synthesizers (HP 8662A, HP 3336B) as positioners in frequency (Hz).

``syn.set(f_hz)`` writes ``FREQ_SP`` (refused outside the model's range, with the IOC's reason) and
finishes when the synthesizer is phase-locked on the new frequency (``LOCK_STS`` back to LOCKED after the
model's re-lock time).  ``FREQ_RBV`` is the synthesised frequency, quantised to the model's resolution.
``program("FR 1420 MZ")`` sends an HP-IB program string in the instrument's own syntax.
"""

from __future__ import annotations

from typing import Any

from ophyd import Component as Cpt
from ophyd import DeviceStatus, Kind

from devices.common import CommandRefused, ObsDevice, Readback, Setpoint, run_in_thread, watch


class Synthesizer(ObsDevice):
    """Frequency synthesizer (SYN IOC).  Hinted: synthesised frequency (Hz) and output level (dBm)."""

    freq = Cpt(Setpoint, "FREQ_SP", kind=Kind.config)
    freq_rbv = Cpt(Readback, "FREQ_RBV", kind=Kind.hinted)
    freq_res = Cpt(Readback, "FREQ_RES_RBV", kind=Kind.config)
    power = Cpt(Setpoint, "POWER_SP", kind=Kind.config)
    power_rbv = Cpt(Readback, "POWER_RBV", kind=Kind.hinted)
    rf = Cpt(Setpoint, "RF_SP", string=True, kind=Kind.config)
    lock = Cpt(Readback, "LOCK_STS", string=True, kind=Kind.normal)
    settle = Cpt(Readback, "SETTLE_TIME_RBV", kind=Kind.config)
    model = Cpt(Readback, "MODEL_RBV", string=True, kind=Kind.config)
    command = Cpt(Setpoint, "COMMAND_SP", string=True, kind=Kind.omitted)

    @property
    def position(self) -> float:
        """Synthesised frequency (Hz), read now from the IOC (a monitor update may still be in flight)."""
        return float(self.freq_rbv.fresh()[0])

    def _locked_after(self, status: DeviceStatus) -> None:
        state, ts = self.lock.fresh()
        if state == "LOCKED":
            status.set_finished()
            return
        watch(status, [self.lock], lambda: self.lock.get() == "LOCKED" and (self.lock.timestamp or 0.0) >= ts)

    def set(self, freq_hz: float, *, timeout: float | None = None) -> DeviceStatus:
        """Tune to ``freq_hz``; done when phase-locked again."""
        status = DeviceStatus(self, timeout=timeout)

        def work() -> None:
            self.freq.checked_put(float(freq_hz))
            self._locked_after(status)

        run_in_thread(status, work, f"{self.name}-set", finish=False)
        return status

    def program(self, text: str, *, timeout: float | None = None) -> DeviceStatus:
        """Send an HP-IB program string (model syntax); done when locked.  Refused strings fail the Status."""
        status = DeviceStatus(self, timeout=timeout)

        def work() -> None:
            msg = self.message.fresh()
            self.command.put_wait(text)
            if not self.command.fresh()[0].strip() == text.strip() and self.message.fresh() != msg:
                raise CommandRefused(f"{self.name}: {text!r} refused: {self.last_message()}")
            self._locked_after(status)

        run_in_thread(status, work, f"{self.name}-program", finish=False)
        return status

    def stop(self, *, success: bool = False) -> None:
        """Nothing moves: a synthesizer has nothing to stop."""

    def describe_settings(self) -> dict[str, Any]:
        """Current frequency (Hz), level (dBm), RF state and lock, read now."""
        return {"freq_hz": self.freq_rbv.fresh()[0], "power_dbm": self.power_rbv.fresh()[0],
                "rf": self.rf.fresh()[0], "lock": self.lock.fresh()[0]}
