"""Parts of the drive device: the position packet's fields, the command Status, the offset positioners.

The position packet (``DRV:POS_PKT``, layout in :mod:`obsctl.positions`) is one consistent snapshot per control
cycle; :class:`PacketField` exposes one of its fields as a signal, :class:`DriveStatus` is the Status of a drive
command (with progress for progress bars), :class:`HaOffset`/:class:`DecOffset` are the coordinate offsets
(deg) as positioners whose ``set`` finishes when the drive has settled on them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, DeviceStatus, Kind, Signal
from ophyd.positioner import PositionerBase

from devices.common import (
    CommandRefused,
    DeviceFault,
    Readback,
    Setpoint,
    run_in_thread,
    watch,
)
from obsctl.positions import FIELDS, IDX, LENGTH

# Fields of the drive's position packet (layout in obsctl/positions.py).
PKT_T, PKT_HA_ENC, PKT_DEC_ENC, PKT_HA_OBS, PKT_DEC_OBS, PKT_HA_RATE, PKT_DEC_RATE, PKT_HA_SKY, PKT_DEC_SKY, \
    PKT_STATE, PKT_ON_SOURCE = (IDX[name] for name in FIELDS)
PKT_LENGTH = LENGTH

#: drive state reached, per command, once the command has been carried out
DONE_STATE = {"TRACK": "TRACKING", "SLEW": "PARKED", "ZENITH": "PARKED", "DRIFT": "DRIFTING", "STOW": "STOWED",
              "SCAN": "TRACKING", "STOP": "STOPPED", "RATE": "MANUAL"}
HALTED = ("STOPPED", "FAULT")
AT_REST_DEG_S = 1e-6


class PacketField(Signal):
    """One field of the drive's position packet (read-only, time-stamped with the packet's cycle)."""

    def __init__(self, *, packet: str = "pos_pkt", index: int, units: str = "deg", parent: Any = None,
                 **kwargs: Any):
        super().__init__(parent=parent, **kwargs)
        self._packet = getattr(parent, packet)
        self._index = index
        self.units = units
        self._packet.subscribe(self._packet_changed, run=False)

    def _field(self, pkt: Any) -> tuple[float, float | None]:
        """(field value, packet time) of a packet; NaN before the first packet."""
        v = np.asarray(pkt if pkt is not None else [], dtype=float).reshape(-1)
        return (float(v[self._index]), float(v[PKT_T])) if v.size == PKT_LENGTH else (math.nan, None)

    def _packet_changed(self, value: Any = None, timestamp: float | None = None, **_: Any) -> None:
        self._readback, t = self._field(value)
        self._metadata["timestamp"] = t if t is not None else timestamp
        self._run_subs(sub_type=self.SUB_VALUE, value=self._readback, timestamp=self._metadata["timestamp"])

    def get(self, **kwargs: Any) -> float:
        """The field of the newest packet; the time stamp (``.timestamp``) is that packet's cycle time."""
        self._readback, t = self._field(self._packet.get(**kwargs))
        self._metadata["timestamp"] = t if t is not None else self._packet.timestamp
        return self._readback

    @property
    def connected(self) -> bool:
        return self._packet.connected

    def wait_for_connection(self, timeout: float = 0.0) -> None:
        self._packet.wait_for_connection(timeout=timeout)

    def put(self, *args: Any, **kwargs: Any) -> None:
        raise PermissionError(f"{self.name} is a read-only packet field")

    def describe(self) -> dict[str, dict[str, Any]]:
        return {self.name: {"source": f"{self._packet.describe()[self._packet.name]['source']}[{self._index}]",
                            "dtype": "number", "shape": [], "units": self.units}}


class DriveStatus(DeviceStatus):
    """Status of a drive command, with progress for progress bars: the pointing error left (deg).

    ``watch(func)`` callbacks get ``name``, ``current`` (error left), ``initial``, ``target`` (0), ``unit``,
    ``fraction`` (of the error left, 1 -> 0) and ``time_elapsed`` (real s), like ophyd's MoveStatus.
    """

    def __init__(self, device: Any, **kwargs: Any):
        super().__init__(device, call_stop_on_failure=False, **kwargs)
        self._t0 = time.monotonic()
        self._initial: float | None = None
        self.command = ""

    def watch(self, func: Callable[..., None]) -> None:
        self._watchers.append(func)

    def progress(self, remaining_deg: float) -> None:
        """Tell the watchers how much pointing error is left (deg)."""
        if not self._watchers or not math.isfinite(remaining_deg):
            return
        if self._initial is None or remaining_deg > self._initial:
            self._initial = max(remaining_deg, 1e-9)
        for w in list(self._watchers):
            w(name=self.device.name, current=remaining_deg, initial=self._initial, target=0.0, unit="deg",
              precision=4, fraction=min(max(remaining_deg / self._initial, 0.0), 1.0),
              time_elapsed=time.monotonic() - self._t0)


class DriveOffset(Device, PositionerBase):
    """A coordinate offset of the drive (deg) as a positioner: ``set(x)`` finishes when settled again.

    Offsets act while the drive tracks or scans; otherwise ``set`` fails at once.  The readback is the
    offset in the command now (user + scan, ``OFF_*_RBV``).  ``stop()`` stops the whole drive.
    """

    _default_read_attrs = ("readback",)
    _default_configuration_attrs = ()

    def __init__(self, prefix: str = "", *, name: str, timeout: float | None = None, **kwargs: Any):
        super().__init__(prefix=prefix, name=name, timeout=timeout, **kwargs)
        self.readback.name = self.name
        self.readback.subscribe(self._readback_changed, run=False)

    @property
    def egu(self) -> str:
        return "deg"

    @property
    def limits(self) -> tuple[float, float]:
        return tuple(self.setpoint.limits)

    @property
    def position(self) -> float:
        return float(self.readback.get())

    def _readback_changed(self, value: Any = None, **kwargs: Any) -> None:
        self._set_position(value, timestamp=kwargs.get("timestamp"))

    def move(self, position: float, wait: bool = False, moved_cb: Callable | None = None,
             timeout: float | None = None) -> Any:
        """Write the offset; the MoveStatus finishes when the drive is on source and settled again."""
        drive: Any = self.parent  # the Drive
        status = super().move(position, moved_cb=moved_cb, timeout=timeout)

        inner = DeviceStatus(self, call_stop_on_failure=False)

        def work() -> None:
            state = drive.state.get()
            if state not in ("TRACKING", "SCANNING"):
                raise CommandRefused(f"{self.name}: offsets act only while tracking or scanning; drive is {state}")
            target_ts = drive.target.timestamp
            self.setpoint.checked_put(float(position))
            scanning = state == "SCANNING"
            t_last = float(np.asarray(drive.pos_pkt.fresh()[0], dtype=float).reshape(-1)[PKT_T]) if scanning \
                else -math.inf
            first: list[float] = []

            def settled() -> bool:
                drive.check_not_superseded(target_ts)
                pkt = drive.packet()
                if pkt is None or pkt[PKT_T] <= t_last:
                    return False
                state_now = drive.packet_state(pkt)
                if state_now in HALTED:
                    raise DeviceFault(drive.stop_reason(state_now))
                if pkt[PKT_ON_SOURCE] < 0.5:
                    return False
                if not scanning:
                    # OFF_RBV is the offset of the command of its cycle: a packet of that cycle or later that
                    # is settled has settled on the new offset
                    return abs(self.readback.get() - position) <= 1e-7 and pkt[PKT_T] >= self.readback.timestamp
                if not first:  # scanning: OFF_RBV holds user + scan offsets; skip the cycle that may predate
                    first.append(pkt[PKT_T])  # the write, accept the next settled one
                    return False
                return pkt[PKT_T] > first[0]

            watch(inner, [drive.pos_pkt, self.readback], settled)

        def finish(st: Any) -> None:
            if status.done:
                return
            if st.success:
                self._done_moving(success=True)
            else:
                self._reset_sub(self._SUB_REQ_DONE)
                status.set_exception(st.exception())

        inner.add_callback(finish)
        drive._track_pending(status)
        run_in_thread(inner, work, f"{self.name}-move", finish=False)
        if wait:
            status.wait()
        return status

    def stop(self, *, success: bool = False) -> None:
        """Stop the drive as :meth:`Drive.stop` does (offsets have no motion of their own).

        A move under way then fails (the drive was re-commanded), unless ``success`` is True.
        """
        self.parent.stop(success=success)


class HaOffset(DriveOffset):
    """Hour-angle offset (coordinate degrees)."""

    setpoint = Cpt(Setpoint, "OFF_HA_SP", kind=Kind.config)
    readback = Cpt(Readback, "OFF_HA_RBV", kind=Kind.hinted)


class DecOffset(DriveOffset):
    """Declination offset (deg)."""

    setpoint = Cpt(Setpoint, "OFF_DEC_SP", kind=Kind.config)
    readback = Cpt(Readback, "OFF_DEC_RBV", kind=Kind.hinted)
