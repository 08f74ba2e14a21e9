"""DRV: the telescope drive as an ophyd positioner.

``drive.set(target)`` tracks a catalog source or solar-system body (a name) or ICRS J2000 coordinates
(``(ra_deg, dec_deg)`` or anything with ``.ra.deg``/``.dec.deg``); its Status finishes when the drive
reports the new target tracked, on source and settled, and fails with the IOC's reason when the command is
refused (limits, sun avoidance, unknown source, wind stow) or when the drive stops on the way (limit, sun,
watchdog) or is re-commanded.  Offsets are positioners of their own (``drive.off_ha``, ``drive.off_dec``,
coordinate degrees) usable in bluesky scans.  ``slew``, ``drift``, ``scan``, ``stow``, ``zenith`` and
``halt`` return Statuses the same way; ``stop()`` commands STOP at once.  The RunEngine calls
``stop(success=True)`` on every device it moved whenever a plan ends, pauses or aborts: that stops the
drive only while one of this client's moves is under way, so a drive settled on its source keeps tracking.
A track or slew asked again while it is under way returns that move's Status, and once the drive holds it
settled a finished one (step plans start the next step's move early and then ask for it in the step).
The sun itself is tracked or scanned only when the command asks for solar observing
(``track("sun", sun_obs=True)``, ``scan(..., sun_obs=True)``); the drive's sun avoidance refuses it otherwise.

While the object lives, a daemon thread writes ``HEARTBEAT_SP`` every second of real time, so the drive's
watchdog stops the telescope when this client dies.

Settling is judged on the drive's position packet (``POS_PKT``, one consistent snapshot per control cycle
with the observatory time of the cycle): a move is done at the first packet *after* the command was
accepted that shows the expected state and ON_SOURCE (on source for the settle time).
"""

from __future__ import annotations

import math
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ophyd import Component as Cpt
from ophyd import EpicsSignal, Kind
from ophyd.utils import InvalidState

from devices.common import (
    PUT_TIMEOUT,
    CommandRefused,
    DeviceFault,
    ObsDevice,
    Readback,
    Setpoint,
    run_in_thread,
    watch,
)
from devices.drive_parts import (  # noqa: F401  (the packet layout is part of this module's interface)
    AT_REST_DEG_S,
    DONE_STATE,
    HALTED,
    PKT_DEC_ENC,
    PKT_DEC_OBS,
    PKT_DEC_RATE,
    PKT_DEC_SKY,
    PKT_HA_ENC,
    PKT_HA_OBS,
    PKT_HA_RATE,
    PKT_HA_SKY,
    PKT_LENGTH,
    PKT_ON_SOURCE,
    PKT_STATE,
    PKT_T,
    DecOffset,
    DriveStatus,
    HaOffset,
    PacketField,
)


class _Heartbeat:
    """Daemon thread writing a counter to a signal every ``period`` real seconds until stopped.

    Holds the signal weakly, so the thread ends when the device is garbage-collected.
    """

    def __init__(self, signal: EpicsSignal, period: float = 1.0):
        self._ref = weakref.ref(signal)
        self.period = period
        self._stop = threading.Event()
        self.beats = 0
        self.thread = threading.Thread(target=self._run, name=f"{signal.name}-thread", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            sig = self._ref()
            if sig is None:
                return
            try:
                if sig.connected:
                    sig.put(self.beats % 2_000_000_000)
                    self.beats += 1
            except (TimeoutError, RuntimeError, ValueError, OSError):  # a lost connection: keep trying
                pass
            del sig
            self._stop.wait(self.period)

    def stop(self) -> None:
        """End the thread (the drive's watchdog then applies)."""
        self._stop.set()

    @property
    def running(self) -> bool:
        """Whether the thread is alive."""
        return self.thread.is_alive() and not self._stop.is_set()


@dataclass
class _LastMove:
    """This client's newest track or slew: what it asked (``key``), its Status and how to see it still holds."""

    key: tuple
    status: DriveStatus
    final: str  # the drive state of the move done
    rbvs: list[tuple[Any, float]] = field(default_factory=list)  # readbacks that must still show these values
    target_ts: float | None = None  # TARGET_RBV time stamp when the move finished


class Drive(ObsDevice):
    """Telescope drive (DRV IOC) as a positioner over source names or ICRS coordinates.

    Hinted readbacks: observed apparent HA/Dec (``ha_obs``/``dec_obs``, deg, from the position packet),
    Az/El (deg) and ON_SOURCE.  Configuration: pointing-model and refraction corrections, target and the
    command setpoints.  ``set`` leaves the offsets as they are (see ``track(..., off_ha=0, off_dec=0)``).
    """

    # commands and setpoints
    mode = Cpt(EpicsSignal, "MODE_CMD", string=True, kind=Kind.omitted)
    slew_frame = Cpt(Setpoint, "SLEW_FRAME_SP", string=True, kind=Kind.omitted)
    slew_x = Cpt(Setpoint, "SLEW_X_SP", kind=Kind.omitted)
    slew_y = Cpt(Setpoint, "SLEW_Y_SP", kind=Kind.omitted)
    track_name = Cpt(Setpoint, "TRACK_NAME_SP", string=True, kind=Kind.config)
    track_ra = Cpt(Setpoint, "TRACK_RA_SP", kind=Kind.config)
    track_dec = Cpt(Setpoint, "TRACK_DEC_SP", kind=Kind.config)
    drift_lead = Cpt(Setpoint, "DRIFT_LEAD_SP", kind=Kind.config)
    off_ha = Cpt(HaOffset, "", kind=Kind.normal)
    off_dec = Cpt(DecOffset, "", kind=Kind.normal)
    rate_ha = Cpt(Setpoint, "RATE_HA_SP", kind=Kind.config)
    rate_dec = Cpt(Setpoint, "RATE_DEC_SP", kind=Kind.config)
    scan_dur = Cpt(Setpoint, "SCAN_DUR_SP", kind=Kind.config)
    watchdog = Cpt(Setpoint, "WATCHDOG_SP", kind=Kind.config)
    watchdog_ena = Cpt(Setpoint, "WATCHDOG_ENA_SP", string=True, kind=Kind.config)
    heartbeat = Cpt(EpicsSignal, "HEARTBEAT_SP", kind=Kind.omitted)
    sim_perr_ha = Cpt(Setpoint, "SIM_PERR_HA_SP", kind=Kind.omitted)
    sim_perr_dec = Cpt(Setpoint, "SIM_PERR_DEC_SP", kind=Kind.omitted)
    sun_obs = Cpt(Setpoint, "SUN_OBS_SP", string=True, kind=Kind.config)
    # status
    state = Cpt(Readback, "STATE_STS", string=True, kind=Kind.normal)
    on_source = Cpt(Readback, "ON_SOURCE_STS", string=True, kind=Kind.hinted)
    settled = Cpt(Readback, "SETTLED_STS", string=True, kind=Kind.normal)
    limit = Cpt(Readback, "LIMIT_STS", string=True, kind=Kind.normal)
    watchdog_sts = Cpt(Readback, "WATCHDOG_STS", string=True, kind=Kind.omitted)
    wind_sts = Cpt(Readback, "WIND_STS", string=True, kind=Kind.omitted)
    wx_link = Cpt(Readback, "WX_LINK_STS", string=True, kind=Kind.omitted)
    target = Cpt(Readback, "TARGET_RBV", string=True, kind=Kind.config)
    # positions
    pos_pkt = Cpt(Readback, "POS_PKT", kind=Kind.omitted)
    ha_obs = Cpt(PacketField, index=PKT_HA_OBS, kind=Kind.hinted)
    dec_obs = Cpt(PacketField, index=PKT_DEC_OBS, kind=Kind.hinted)
    az = Cpt(Readback, "AZ_RBV", kind=Kind.hinted)
    el = Cpt(Readback, "EL_RBV", kind=Kind.hinted)
    ha_app = Cpt(Readback, "HA_APP_RBV", kind=Kind.normal)
    dec_app = Cpt(Readback, "DEC_APP_RBV", kind=Kind.normal)
    ha_pm = Cpt(Readback, "HA_PM_RBV", kind=Kind.config)
    dec_pm = Cpt(Readback, "DEC_PM_RBV", kind=Kind.config)
    ha_refr = Cpt(Readback, "HA_REFR_RBV", kind=Kind.config)
    dec_refr = Cpt(Readback, "DEC_REFR_RBV", kind=Kind.config)
    ha_cmd = Cpt(Readback, "HA_CMD_RBV", kind=Kind.omitted)
    dec_cmd = Cpt(Readback, "DEC_CMD_RBV", kind=Kind.omitted)
    ha = Cpt(Readback, "HA_RBV", kind=Kind.normal)
    dec = Cpt(Readback, "DEC_RBV", kind=Kind.normal)
    dec2 = Cpt(Readback, "DEC2_RBV", kind=Kind.omitted)
    ha_err = Cpt(Readback, "HA_ERR_RBV", kind=Kind.normal)
    dec_err = Cpt(Readback, "DEC_ERR_RBV", kind=Kind.normal)
    ha_vel = Cpt(Readback, "HA_VEL_RBV", kind=Kind.omitted)
    dec_vel = Cpt(Readback, "DEC_VEL_RBV", kind=Kind.omitted)
    ra = Cpt(Readback, "RA_RBV", kind=Kind.normal)
    lst = Cpt(Readback, "LST_RBV", kind=Kind.normal)
    sun_dist = Cpt(Readback, "SUN_DIST_RBV", kind=Kind.normal)
    wind = Cpt(Readback, "WIND_RBV", kind=Kind.omitted)

    def __init__(self, prefix: str = "", *, name: str, heartbeat_period: float = 1.0, **kwargs: Any):
        super().__init__(prefix=prefix, name=name, **kwargs)
        self._pending: set[Any] = set()
        self._pending_lock = threading.Lock()
        self._last: _LastMove | None = None
        self._heartbeat = _Heartbeat(self.heartbeat, heartbeat_period)
        weakref.finalize(self, self._heartbeat.stop)

    @property
    def hints(self) -> dict[str, list[str]]:
        return {"fields": [s.name for s in (self.ha_obs, self.dec_obs, self.az, self.el, self.on_source)]}

    @property
    def position(self) -> str:
        """The current target (TARGET_RBV)."""
        return str(self.target.get())

    # ---- heartbeat ---------------------------------------------------------------------------
    @property
    def heartbeat_running(self) -> bool:
        """Whether the heartbeat thread is writing."""
        return self._heartbeat.running

    def stop_heartbeat(self) -> None:
        """Stop the heartbeat (the drive's watchdog then stops the telescope while it moves)."""
        self._heartbeat.stop()

    def start_heartbeat(self, period: float = 1.0) -> None:
        """(Re)start the heartbeat thread."""
        if not self._heartbeat.running:
            self._heartbeat = _Heartbeat(self.heartbeat, period)

    # ---- packets and reasons -----------------------------------------------------------------
    def packet(self) -> np.ndarray | None:
        """The newest position packet received (None before the first)."""
        v = np.asarray(self.pos_pkt.get(), dtype=float).reshape(-1)
        return v if v.size == PKT_LENGTH else None

    def packet_state(self, pkt: np.ndarray) -> str:
        """Drive state name of a packet."""
        names = self.state.enum_strs or ()
        i = int(pkt[PKT_STATE])
        return names[i] if 0 <= i < len(names) else f"state {i}"

    def stop_reason(self, state: str) -> str:
        """Why the drive stopped: the IOC's message, limit and watchdog status, read now."""
        msg = self.last_message()
        limit = self.limit.fresh()[0]
        wd = self.watchdog_sts.fresh()[0]
        extra = [f"limit {limit}"] if limit != "OK" else []
        extra += ["watchdog expired"] if wd == "EXPIRED" else []
        return f"drive {state}: {msg}" + (f" ({', '.join(extra)})" if extra else "")

    def pointing_error(self) -> float:
        """Commanded minus encoder position, as an angle on the sky (deg; cached monitor values)."""
        dec = math.radians(float(self.dec.get()))
        return math.hypot(float(self.ha_err.get()) * math.cos(dec), float(self.dec_err.get()))

    def check_not_superseded(self, target_ts: float) -> None:
        """Raise DeviceFault if a command newer than ``target_ts`` (TARGET_RBV time stamp) was accepted."""
        ts = self.target.timestamp
        if ts is not None and ts > target_ts + 1e-9:
            raise DeviceFault(f"re-commanded: drive now on {self.target.get()!r} ({self.last_message()})")

    # ---- commands ----------------------------------------------------------------------------
    def _send_mode(self, mode: str, timeout: float = PUT_TIMEOUT) -> float:
        """Write MODE_CMD; return the observatory time the IOC accepted it (CommandRefused if it did not)."""
        before = self.target.fresh()
        done = threading.Event()
        self.mode.put(mode, use_complete=True, callback=lambda *a, **k: done.set())
        if not done.wait(timeout):
            raise TimeoutError(f"{self.mode.pvname}: no answer to {mode} within {timeout} s")
        label, ts = self.target.fresh()
        if (label, ts) == before:
            raise CommandRefused(f"{mode} refused: {self.last_message()}")
        return ts

    def _command(self, what: str, puts: list[tuple[Setpoint, Any]], mode: str,
                 timeout: float | None = None, done_state: str | None = None) -> DriveStatus:
        """Write the setpoints, then MODE_CMD; the Status follows the drive to ``done_state`` + settled."""
        status = DriveStatus(self, timeout=timeout)
        final = done_state or DONE_STATE[mode]
        status.command = what
        self._last = None

        def work() -> None:
            for sig, value in puts:
                sig.checked_put(value)
            t_acc = self._send_mode(mode)

            def check() -> bool:
                self.check_not_superseded(t_acc)
                pkt = self.packet()
                if pkt is None or pkt[PKT_T] <= t_acc:
                    return False
                state = self.packet_state(pkt)
                status.progress(self.pointing_error())
                if mode == "STOP":
                    return state in HALTED and max(abs(pkt[PKT_HA_RATE]), abs(pkt[PKT_DEC_RATE])) < AT_REST_DEG_S
                if state in HALTED:
                    raise DeviceFault(self.stop_reason(state))
                return state == final and pkt[PKT_ON_SOURCE] > 0.5

            watch(status, [self.pos_pkt, self.target], check)

        self._track_pending(status)
        run_in_thread(status, work, f"{self.name}-{mode.lower()}", finish=False)
        return status

    def _target_puts(self, target: Any) -> tuple[list[tuple[Setpoint, Any]], str]:
        if isinstance(target, str):
            return [(self.track_name, target.strip())], target.strip()
        if hasattr(target, "ra") and hasattr(target, "dec"):  # SkyCoord-like (ICRS)
            icrs = target.icrs if hasattr(target, "icrs") else target
            ra, dec = float(icrs.ra.deg), float(icrs.dec.deg)
        else:
            try:
                ra, dec = (float(x) for x in target)
            except (TypeError, ValueError):
                raise ValueError(f"target must be a name, (ra_deg, dec_deg) or a SkyCoord, got {target!r}") from None
        return [(self.track_name, ""), (self.track_ra, ra % 360.0), (self.track_dec, dec)], \
            f"RA {ra:.4f} Dec {dec:+.4f}"

    @staticmethod
    def _offset_puts(off: tuple[Setpoint, Setpoint], off_ha: float | None,
                     off_dec: float | None) -> list[tuple[Setpoint, Any]]:
        return [(sig, float(v)) for sig, v in zip(off, (off_ha, off_dec), strict=True) if v is not None]

    def _sun_puts(self, sun_obs: bool) -> list[tuple[Setpoint, Any]]:
        """SUN_OBS_SP for a TRACK/SCAN: YES only when this command asks for it, else NO (written if not NO)."""
        if sun_obs:
            return [(self.sun_obs, "YES")]
        return [] if self.sun_obs.get() == "NO" else [(self.sun_obs, "NO")]

    def set(self, target: Any, *, timeout: float | None = None) -> DriveStatus:
        """Track ``target`` (name, (ra_deg, dec_deg) ICRS or SkyCoord); done when on source and settled."""
        return self.track(target, timeout=timeout)

    def track(self, target: Any, *, off_ha: float | None = None, off_dec: float | None = None,
              sun_obs: bool = False, timeout: float | None = None) -> DriveStatus:
        """Track ``target`` with optional new offsets (deg); the Status finishes when settled on it.

        ``sun_obs`` asks for solar observing: the drive then accepts the sun itself (``target="sun"``, with
        offsets) despite its sun avoidance, which still guards every other target; without it the sun is refused.
        When the drive already tracks this target (state TRACKING, same TARGET_RBV, no move of this client under
        way), only the offsets are written: the same move, without re-commanding TRACK.  Asked again for this
        client's newest track (same target, offsets and ``sun_obs``), it returns that move's Status while it is
        under way, or a finished one while the drive still holds it settled (``slew`` does the same).
        """
        puts, label = self._target_puts(target)
        offsets = self._offset_puts((self.off_ha.setpoint, self.off_dec.setpoint), off_ha, off_dec)
        key = ("TRACK", label, off_ha, off_dec, sun_obs)
        again = self._again(key)
        if again is not None:
            return again
        sun = self._sun_puts(sun_obs)
        if not sun and self._tracking(label):
            status = self._move_offsets(label, offsets, timeout)
        else:
            status = self._command(f"track {label}", puts + offsets + sun, "TRACK", timeout)
        rbvs = [(self.off_ha.readback if sig is self.off_ha.setpoint else self.off_dec.readback, v)
                for sig, v in offsets]
        return self._remember(key, status, "TRACKING", rbvs)

    def _again(self, key: tuple) -> DriveStatus | None:
        """This client's newest move if ``key`` asks for it again, else None.

        While it is under way, its own Status (a plan may start the next step's move early and then ask for
        it in the step); once done, a finished Status if the drive still holds it: no command accepted
        since (TARGET_RBV stamp), the move's final state in a settled packet, the offsets as asked.  Saves
        re-writing the command and waiting for a control cycle to confirm what the drive already reports.
        """
        last = self._last
        if last is None or last.key != key:
            return None
        if not last.status.done:
            return last.status
        pkt = self.packet()
        if not (last.status.success and last.target_ts is not None and self.target.timestamp == last.target_ts
                and pkt is not None and self.packet_state(pkt) == last.final and pkt[PKT_ON_SOURCE] > 0.5
                and all(abs(float(rbv.get()) - v) <= 1e-7 for rbv, v in last.rbvs)):
            return None
        status = DriveStatus(self)
        status.command = f"{last.status.command} (settled on it already)"
        status.set_finished()
        return status

    def _remember(self, key: tuple, status: DriveStatus, final: str,
                  rbvs: list[tuple[Any, float]] | None = None) -> DriveStatus:
        """Note ``status`` as the newest move, asked as ``key``; returns it."""
        last = _LastMove(key, status, final, rbvs or [])

        def finished(st: Any) -> None:
            if st.success:
                last.target_ts = self.target.timestamp

        self._last = last
        status.add_callback(finished)
        return status

    def _tracking(self, label: str) -> bool:
        """Whether the drive is tracking (not scanning, not re-commanded) the target ``label`` now."""
        pkt = self.packet()
        return (pkt is not None and self.packet_state(pkt) == "TRACKING" and self.target.get() == label
                and not self.moving)

    def _move_offsets(self, label: str, puts: list[tuple[Setpoint, Any]], timeout: float | None) -> DriveStatus:
        """Already tracking ``label``: write only the offsets; the Status finishes when settled on them.

        Saves the TRACK command's round trips and the IOC's rebuilding of its goal (the step of a stepping or
        pointing plan that stays on one source).
        """
        status = DriveStatus(self, timeout=timeout)
        status.command = f"track {label} (offsets)"
        target_ts = float(self.target.timestamp or 0.0)

        def work() -> None:
            t_cmd = -math.inf
            for sig, value in puts:
                sig.checked_put(value)
            pkt = self.packet()
            t_cmd = pkt[PKT_T] if pkt is not None else t_cmd
            rbvs = [(self.off_ha.readback, v) if sig is self.off_ha.setpoint else (self.off_dec.readback, v)
                    for sig, v in puts]

            def check() -> bool:
                self.check_not_superseded(target_ts)
                pkt = self.packet()
                if pkt is None or pkt[PKT_T] <= t_cmd:
                    return False
                state = self.packet_state(pkt)
                if state in HALTED:
                    raise DeviceFault(self.stop_reason(state))
                status.progress(self.pointing_error())
                # OFF_*_RBV are the offsets of their cycle's command: a settled packet of that cycle or later
                return pkt[PKT_ON_SOURCE] > 0.5 and all(
                    abs(rbv.get() - v) <= 1e-7 and pkt[PKT_T] >= (rbv.timestamp or math.inf) for rbv, v in rbvs)

            watch(status, [self.pos_pkt, self.target, self.off_ha.readback, self.off_dec.readback], check)

        self._track_pending(status)
        run_in_thread(status, work, f"{self.name}-offsets", finish=False)
        return status

    def slew(self, x_deg: float, y_deg: float, frame: str = "HADEC", *,
             timeout: float | None = None) -> DriveStatus:
        """Slew to a fixed apparent position: HA/Dec (``frame='HADEC'``) or Az/El (``'AZEL'``), deg."""
        frame = frame.upper()
        key = ("SLEW", frame, float(x_deg), float(y_deg))
        again = self._again(key)
        if again is not None:
            return again
        puts = [(self.slew_frame, frame), (self.slew_x, float(x_deg)), (self.slew_y, float(y_deg))]
        return self._remember(key, self._command(f"slew {frame} {x_deg:g} {y_deg:g}", puts, "SLEW", timeout),
                              DONE_STATE["SLEW"])

    def drift(self, target: Any, lead_deg: float = 0.5, *, timeout: float | None = None) -> DriveStatus:
        """Park ``lead_deg`` of HA ahead of ``target``; the Status finishes when parked and settled.

        The park point is the target's position at the command plus the lead, so the source crosses the beam
        about lead_deg / 15.04 hours after the command: a long slew to the park point uses up part of the lead.
        """
        puts, label = self._target_puts(target)
        puts.append((self.drift_lead, float(lead_deg)))
        return self._command(f"drift {label} lead {lead_deg:g}", puts, "DRIFT", timeout)

    def scan(self, target: Any = None, *, rate_ha: float = 0.0, rate_dec: float = 0.0, duration: float,
             off_ha: float | None = None, off_dec: float | None = None, sun_obs: bool = False,
             timeout: float | None = None) -> DriveStatus:
        """Scan the offsets at ``rate_*`` (deg/s of observatory time) for ``duration`` s from the start offsets.

        ``target`` None keeps the current source.  The Status finishes when the scan duration has
        elapsed (the drive returns to TRACKING); with ``duration`` 0 the scan runs until the next command
        and the Status finishes as soon as the drive scans on the line.  ``sun_obs`` as for :meth:`track`.
        """
        puts, label = self._target_puts(target) if target is not None else ([], self.target.get())
        puts += self._offset_puts((self.off_ha.setpoint, self.off_dec.setpoint), off_ha, off_dec)
        puts += [(self.rate_ha, float(rate_ha)), (self.rate_dec, float(rate_dec)), (self.scan_dur, float(duration))]
        puts += self._sun_puts(sun_obs)
        final = "TRACKING" if duration > 0 else "SCANNING"
        return self._command(f"scan {label}", puts, "SCAN", timeout, done_state=final)

    def rate(self, rate_ha: float, rate_dec: float, *, timeout: float | None = None) -> DriveStatus:
        """Manual drive: move the axes at ``rate_ha``, ``rate_dec`` (axis deg/s of observatory time).

        The axes start from where they are and follow nothing on the sky (state MANUAL) until the next
        command; asked again while MANUAL, the new rates go on from the current command.  The Status
        finishes once the axes run at the rates.  The drive refuses rates beyond 80 % of an axis maximum,
        and stops itself before a limit, the horizon limit or the sun zone (the Status then fails with the
        reason if it had not finished).
        """
        puts = [(self.rate_ha, float(rate_ha)), (self.rate_dec, float(rate_dec))]
        return self._command(f"rate HA {rate_ha:+g} Dec {rate_dec:+g} deg/s", puts, "RATE", timeout)

    def command_rates(self, rate_ha: float, rate_dec: float) -> float:
        """As :meth:`rate`, but return once the drive has accepted the command (its observatory time, s)
        without following the axes; CommandRefused with the drive's reason (a manual joystick's call)."""
        self._last = None
        self.rate_ha.checked_put(float(rate_ha))
        self.rate_dec.checked_put(float(rate_dec))
        return self._send_mode("RATE")

    def stow(self, *, timeout: float | None = None) -> DriveStatus:
        """Drive to the stow position; done when stowed."""
        return self._command("stow", [], "STOW", timeout)

    def zenith(self, *, timeout: float | None = None) -> DriveStatus:
        """Point at the zenith; done when parked there."""
        return self._command("zenith", [], "ZENITH", timeout)

    def halt(self, *, timeout: float | None = None) -> DriveStatus:
        """Command STOP; the Status finishes when both axes are at rest."""
        return self._command("stop", [], "STOP", timeout)

    def _track_pending(self, status: Any) -> None:
        with self._pending_lock:
            self._pending.add(status)
        status.add_callback(self._untrack)

    def _untrack(self, status: Any) -> None:
        with self._pending_lock:
            self._pending.discard(status)

    @property
    def moving(self) -> bool:
        """Whether a command or offset move of this client is still under way."""
        with self._pending_lock:
            return any(not st.done for st in self._pending)

    def stop(self, *, success: bool = False) -> None:
        """Command STOP now (no wait): the axes decelerate to rest.

        The RunEngine calls ``stop(success=True)`` on every device it moved when a plan ends, pauses or is
        aborted: then the drive is stopped only if a move of this client is still under way, and a drive
        settled on its target keeps tracking (plans stop or stow explicitly in their cleanup).
        """
        if success:
            if not self.moving:
                return
            # as ophyd positioners do: a move stopped with success=True (the RunEngine pausing or ending a plan)
            # counts as done, so a suspended plan is not failed; it re-issues the move when it resumes
            with self._pending_lock:
                pending = [st for st in self._pending if not st.done]
            for st in pending:
                try:
                    st.set_finished()
                except InvalidState:  # finished on its own meanwhile
                    pass
        self.mode.put("STOP")
