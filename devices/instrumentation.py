"""NDI: front-end digital I/O — receiver select, noise diodes, IF and chart selects, master fail.

The noise-diode register ``ND_SEL_SP`` has two bits per receiver (bit 2i the LOW diode of receiver i,
bit 2i+1 its HIGH diode; receivers in the order of ``RX_SEL_SP``'s states, i.e. the site file).  The soft
``diode`` signal hides the bits: ``bps.mv(ndi.diode, "HIGH")`` switches the selected receiver's HIGH diode
on (and every other diode off); ``"OFF"`` switches all off.  ``ND_K_RBV`` is the diode temperature injected
into the selected receiver (K).
"""

from __future__ import annotations

from typing import Any

from ophyd import Component as Cpt
from ophyd import Kind, Signal
from ophyd.status import Status

from devices.common import CommandRefused, ObsDevice, Readback, Setpoint, run_in_thread

DIODE_LEVELS = ("OFF", "LOW", "HIGH", "BOTH")
_LEVEL_BITS = {"OFF": 0, "LOW": 1, "HIGH": 2, "BOTH": 3}


def diode_register(receiver_index: int, level: str) -> int:
    """Noise-diode register value with ``level`` (OFF, LOW, HIGH, BOTH) on receiver ``receiver_index`` only."""
    key = level.strip().upper()
    if key not in _LEVEL_BITS:
        raise ValueError(f"diode level {level!r} is not one of {', '.join(DIODE_LEVELS)}")
    return _LEVEL_BITS[key] << (2 * receiver_index)


def diode_level(register: int, receiver_index: int) -> str:
    """The diode level of receiver ``receiver_index`` in a register value."""
    return DIODE_LEVELS[(int(register) >> (2 * receiver_index)) & 3]


class DiodeSignal(Signal):
    """Noise diodes of the selected receiver as one value: OFF, LOW, HIGH or BOTH (writes ND_SEL_SP)."""

    def get(self, **kwargs: Any) -> str:
        ndi = self.parent
        rx = ndi.rx_sel.get()
        names = ndi.rx_sel.enum_strs or (rx,)
        self._readback = diode_level(int(ndi.nd_sel_rbv.get()), names.index(rx) if rx in names else 0)
        self._metadata["timestamp"] = ndi.nd_sel_rbv.timestamp
        return self._readback

    def put(self, value: Any, **kwargs: Any) -> None:
        self.set(value).wait()

    def set(self, value: Any, *, timeout: float | None = None, settle_time: float | None = None) -> Status:
        ndi = self.parent
        status = Status(obj=self, timeout=timeout, settle_time=settle_time)
        rx = ndi.rx_sel.get()
        register = diode_register(list(ndi.rx_sel.enum_strs).index(rx), str(value))
        run_in_thread(status, lambda: ndi.nd_sel.checked_put(register), f"{self.name}-set")
        return status

    def describe(self) -> dict[str, dict[str, Any]]:
        return {self.name: {"source": f"PV:{self.parent.nd_sel.pvname}", "dtype": "string", "shape": [],
                            "enum_strs": list(DIODE_LEVELS)}}


class Instrumentation(ObsDevice):
    """Front-end digital I/O (NDI IOC).

    Hinted: injected diode temperature ``nd_k`` (K).  ``select_receiver(name)`` and ``diode``
    (OFF/LOW/HIGH/BOTH on the selected receiver) are the convenient handles; ``diodes_off()`` is the safe
    state plans return to.
    """

    rx_sel = Cpt(Setpoint, "RX_SEL_SP", string=True, kind=Kind.config)
    nd_sel = Cpt(Setpoint, "ND_SEL_SP", kind=Kind.config)
    nd_sel_rbv = Cpt(Readback, "ND_SEL_RBV", kind=Kind.normal)
    nd_bits = Cpt(Readback, "ND_BITS_RBV", kind=Kind.config)
    nad18 = Cpt(Setpoint, "NAD18_SP", string=True, kind=Kind.config)
    nad13 = Cpt(Setpoint, "NAD13_SP", string=True, kind=Kind.config)
    nd_k = Cpt(Readback, "ND_K_RBV", kind=Kind.hinted)
    diode = Cpt(DiodeSignal, kind=Kind.normal)
    gpr_in = Cpt(Setpoint, "GPR_IN_SP", string=True, kind=Kind.config)
    if_bw = Cpt(Setpoint, "IF_BW_SP", string=True, kind=Kind.config)
    if_bw_rbv = Cpt(Readback, "IF_BW_RBV", kind=Kind.config)
    mixer = Cpt(Setpoint, "MIXER_SP", string=True, kind=Kind.config)
    chart1 = Cpt(Setpoint, "CHART1_SP", string=True, kind=Kind.omitted)
    chart2 = Cpt(Setpoint, "CHART2_SP", string=True, kind=Kind.omitted)
    mfail = Cpt(Readback, "MFAIL_STS", string=True, kind=Kind.normal)
    mfail_cause = Cpt(Readback, "MFAIL_CAUSE_RBV", string=True, kind=Kind.omitted)
    mfail_reset = Cpt(Setpoint, "MFAIL_RESET_CMD", string=True, kind=Kind.omitted)
    sim_fail = Cpt(Setpoint, "SIM_FAIL_CMD", string=True, kind=Kind.omitted)

    @property
    def receivers(self) -> tuple[str, ...]:
        """Receiver names in register order."""
        return tuple(self.rx_sel.enum_strs or ())

    def select_receiver(self, name: str) -> Status:
        """Route receiver ``name`` to the backends (the diodes keep their register bits)."""
        return self.rx_sel.set(name)

    def set_diode(self, level: str, receiver: str | None = None) -> Status:
        """Only ``level`` (OFF, LOW, HIGH, BOTH) on ``receiver`` (default: the selected one)."""
        rx = receiver or self.rx_sel.get()
        return self.nd_sel.set(diode_register(self.receivers.index(rx), level))

    def diodes_off(self) -> Status:
        """Every noise diode and noise-adding diode off."""
        status = Status(obj=self)

        def work() -> None:
            self.nd_sel.checked_put(0)
            self.nad18.checked_put("OFF")
            self.nad13.checked_put("OFF")

        run_in_thread(status, work, f"{self.name}-diodes-off")
        return status

    def reset_master_fail(self) -> Status:
        """Clear the master-fail latch (refused, with the cause, while a fault persists)."""
        status = Status(obj=self)

        def work() -> None:
            msg = self.message.fresh()
            self.mfail_reset.put_wait("RESET")
            if self.message.fresh() != msg and "refused" in self.last_message():
                raise CommandRefused(f"{self.name}: {self.last_message()}")

        run_in_thread(status, work, f"{self.name}-mfail-reset")
        return status
