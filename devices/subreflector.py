"""SUB: the subreflector as three positioners: ``focus`` (mm), ``tilt_x`` and ``tilt_y`` (arcmin).

``sub.focus.set(2.0)`` writes ``FOCUS_SP`` (refused outside the travel, with the IOC's reason) and finishes
when the subreflector is in position again (``STATE_STS`` back to IN_POSITION after the move and the
settling time), so ``bps.mv(sub.focus, 2.0)`` and scans over the focus work as over any motor.  Every axis
shares the subreflector's one in-position state: a set finishes when *all* axes are in position.
``sub.move(focus=..., tilt_x=..., tilt_y=...)`` commands several axes and finishes when all have arrived.
The beam effects published by the IOC (gain factor, beam displacement) are readbacks of the device.
"""

from __future__ import annotations

from typing import Any

from ophyd import Component as Cpt
from ophyd import Device, DeviceStatus, Kind

from devices.common import ObsDevice, Readback, Setpoint, run_in_thread, watch

AXES = ("focus", "tilt_x", "tilt_y")


class SubreflectorAxis(Device):
    """One actuator: setpoint ``_SP`` and encoder readback ``_RBV`` (hinted); ``set()`` waits for in position."""

    setpoint = Cpt(Setpoint, "_SP", kind=Kind.config)
    readback = Cpt(Readback, "_RBV", kind=Kind.hinted)

    @property
    def position(self) -> float:
        """Encoder position (axis units), read now."""
        return float(self.readback.fresh()[0])

    @property
    def limits(self) -> tuple[float, float]:
        """Travel (lower, upper) from the setpoint's control limits."""
        return self.setpoint.limits

    @property
    def egu(self) -> str:
        """Axis units (mm or arcmin)."""
        return str(self.setpoint.describe()[self.setpoint.name].get("units", ""))

    def set(self, value: float, *, timeout: float | None = None) -> DeviceStatus:
        """Move to ``value``; done when the subreflector is in position (fails if the IOC refused it)."""
        status = DeviceStatus(self, timeout=timeout)

        def work() -> None:
            self.setpoint.checked_put(float(value))
            self.parent.in_position_after(status)

        run_in_thread(status, work, f"{self.name}-set", finish=False)
        return status

    def stop(self, *, success: bool = False) -> None:
        """Stop the whole subreflector (the axes share one controller)."""
        self.parent.stop(success=success)


class Subreflector(ObsDevice):
    """Subreflector tilt and focus (SUB IOC).  Hinted: the three encoder positions."""

    focus = Cpt(SubreflectorAxis, "FOCUS")
    tilt_x = Cpt(SubreflectorAxis, "TILTX")
    tilt_y = Cpt(SubreflectorAxis, "TILTY")
    state = Cpt(Readback, "STATE_STS", string=True, kind=Kind.normal)
    stop_cmd = Cpt(Setpoint, "STOP_CMD", string=True, kind=Kind.omitted)
    focus_rate = Cpt(Readback, "FOCUS_RATE_RBV", kind=Kind.config)
    tilt_rate = Cpt(Readback, "TILT_RATE_RBV", kind=Kind.config)
    settle = Cpt(Readback, "SETTLE_TIME_RBV", kind=Kind.config)
    gain = Cpt(Readback, "GAIN_FACTOR_RBV", kind=Kind.normal)
    beam_dx = Cpt(Readback, "BEAM_DX_RBV", kind=Kind.normal)
    beam_dy = Cpt(Readback, "BEAM_DY_RBV", kind=Kind.normal)
    rx = Cpt(Readback, "RX_RBV", string=True, kind=Kind.config)

    def in_position_after(self, status: DeviceStatus) -> None:
        """Finish ``status`` once the subreflector is in position after the command just processed."""
        state, ts = self.state.fresh()
        if state == "IN_POSITION":
            status.set_finished()
            return
        watch(status, [self.state],
              lambda: self.state.get() == "IN_POSITION" and (self.state.timestamp or 0.0) >= ts)

    def move(self, *, focus: float | None = None, tilt_x: float | None = None, tilt_y: float | None = None,
             timeout: float | None = None) -> DeviceStatus:
        """Command the given axes (mm, arcmin); done when all are in position.  A refused value fails it."""
        targets = {k: v for k, v in (("focus", focus), ("tilt_x", tilt_x), ("tilt_y", tilt_y)) if v is not None}
        status = DeviceStatus(self, timeout=timeout)

        def work() -> None:
            for key, value in targets.items():
                getattr(self, key).setpoint.checked_put(float(value))
            self.in_position_after(status)

        run_in_thread(status, work, f"{self.name}-move", finish=False)
        return status

    def positions(self) -> dict[str, float]:
        """Encoder positions of the three axes (mm, arcmin, arcmin), read now."""
        return {k: getattr(self, k).position for k in AXES}

    def stop(self, *, success: bool = False) -> None:
        """Stop every axis where it is."""
        self.stop_cmd.put("STOP")

    def describe_settings(self) -> dict[str, Any]:
        """Positions, targets, state and beam effects, read now."""
        out: dict[str, Any] = {k: getattr(self, k).position for k in AXES}
        out.update({f"{k}_sp": float(getattr(self, k).setpoint.fresh()[0]) for k in AXES})
        out.update({"state": self.state.fresh()[0], "gain": float(self.gain.fresh()[0]),
                    "beam_dx_deg": float(self.beam_dx.fresh()[0]), "beam_dy_deg": float(self.beam_dy.fresh()[0])})
        return out
