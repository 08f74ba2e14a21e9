"""Building blocks of the observing plans (bluesky plan stubs).

Device commands that are not a single ``set`` (drift, scan, stow, halt, diodes off) are run through
:class:`Command`, a small Movable whose ``set(*args)`` calls the command and returns its Status, so the
RunEngine waits on it like on any move (and calls ``stop`` on it when a plan ends or is aborted).

The safe state (:func:`safe_state`) is the drive stopped (``cleanup="stop"``) or stowed (``"stow"``) and every
noise diode off; plans wrap themselves with :func:`finalize_wrapper` around it, so the safe state is reached
whether the plan finishes, fails or is aborted.  The RunEngine's own ``stop(success=True)`` at the end of a plan
only stops an unfinished drive move, so this cleanup is what leaves the telescope safe.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any

import numpy as np
from bluesky import plan_stubs as bps
from bluesky.preprocessors import finalize_wrapper
from bluesky.utils import Msg
from ophyd.status import Status
from ophyd.utils import InvalidState

from devices.common import ResultSignal, watch

CLEANUP_ACTIONS = ("stop", "stow", "none")
RECEIVER_TIMEOUT_S = 10.0  # real s for a backend to follow the receiver select
_groups = itertools.count()
#: commands whose Status may still be pending (ended successfully by safe_state before it stops the drive)
_PENDING: weakref.WeakSet = weakref.WeakSet()


class Command:
    """A Movable around one device command: ``set(*args, **kwargs)`` returns the command's Status.

    ``stop(success)`` is passed to ``stopper`` (e.g. the drive's ``stop``) when given.
    """

    def __init__(self, name: str, func: Callable[..., Any], stopper: Callable[..., None] | None = None,
                 parent: Any = None):
        self.name = name
        self._func = func
        self._stopper = stopper
        self.parent = parent
        self.status: Any = None
        self.group = ""

    def set(self, *args: Any, **kwargs: Any) -> Status:
        """Run the command; the Status (kept in ``status``) follows the device's until :meth:`stop`."""
        inner = self._func(*args, **kwargs)
        outer = Status(obj=self)

        def follow(st: Any) -> None:
            if outer.done:
                return
            if st.success:
                outer.set_finished()
            else:
                outer.set_exception(st.exception() or RuntimeError(f"{self.name} failed"))

        inner.add_callback(follow)
        self.status = outer
        _PENDING.add(self)
        return outer

    def stop(self, *, success: bool = False) -> None:
        """Pass the RunEngine's stop on to the device.

        ``success=True`` (a plan ending or being suspended) also ends a pending command *successfully*, as
        ophyd's positioners do: the device's own Status fails when its command is cut short, which would
        otherwise fail a plan that is only being suspended (it re-issues the command when it resumes).
        """
        if self._stopper is not None:
            self._stopper(success=success)
        if success and self.status is not None and not self.status.done:
            self.status.set_finished()

    def __repr__(self) -> str:
        return f"Command({self.name})"


def run_command(name: str, func: Callable[..., Any], *args: Any, stopper: Callable[..., None] | None = None,
                wait: bool = True, **kwargs: Any) -> Generator[Msg, Any, Command]:
    """Plan: call a device command (returning a Status) and wait for it (unless ``wait=False``).

    Returns the :class:`Command` (its ``status`` and wait ``group``), e.g. to collect data while it runs.
    """
    cmd = Command(name, func, stopper)
    cmd.group = f"{name}-{next(_groups)}"
    yield Msg("set", cmd, *args, group=cmd.group, **kwargs)
    if wait:
        yield from bps.wait(group=cmd.group)
    return cmd


# ---- the receiver and the diodes ---------------------------------------------------------------------------
def select_receiver(instrumentation: Any, receiver: str) -> Generator[Msg, Any, None]:
    """Plan: route ``receiver`` (a site receiver name) to the backends; done when the NDI IOC accepted it."""
    if instrumentation.rx_sel.get() != receiver:
        yield from bps.mv(instrumentation.rx_sel, receiver)


def diodes_off(instrumentation: Any) -> Generator[Msg, Any, None]:
    """Plan: every noise diode and noise-adding diode off."""
    yield from run_command(f"{instrumentation.name}_diodes_off", instrumentation.diodes_off)


def set_diode(instrumentation: Any, level: str) -> Generator[Msg, Any, None]:
    """Plan: only ``level`` (OFF, LOW, HIGH, BOTH) on the selected receiver."""
    yield from bps.mv(instrumentation.diode, level)


# ---- the drive --------------------------------------------------------------------------------------------
def go_on_source(drive: Any, target: Any, off_ha: float = 0.0, off_dec: float = 0.0, *,
                 wait: bool = True) -> Generator[Msg, Any, None]:
    """Plan: track ``target`` (name or ICRS (ra_deg, dec_deg)) at the offsets (deg); done when settled on it.

    With ``wait=False`` the move is only started (see :func:`step_series`).
    """
    yield from run_command(f"{drive.name}_track", drive.track, target, off_ha=off_ha, off_dec=off_dec,
                           stopper=drive.stop, wait=wait)


def drift_park(drive: Any, target: Any, lead_deg: float) -> Generator[Msg, Any, None]:
    """Plan: park ``lead_deg`` of HA ahead of ``target``; done when parked and settled."""
    yield from run_command(f"{drive.name}_drift", drive.drift, target, lead_deg, stopper=drive.stop)


def offset_scan(drive: Any, *, rate_ha: float = 0.0, rate_dec: float = 0.0, duration: float,
                off_ha: float, off_dec: float, wait: bool = True) -> Generator[Msg, Any, Command]:
    """Plan: scan the offsets from (off_ha, off_dec) (deg) at the rates (deg/s) for ``duration`` s (obs. time).

    With ``wait=False`` the scan is only started; the returned :class:`Command` has its Status.
    """
    return (yield from run_command(f"{drive.name}_scan", drive.scan, rate_ha=rate_ha, rate_dec=rate_dec,
                                   duration=duration, off_ha=off_ha, off_dec=off_dec, stopper=drive.stop,
                                   wait=wait))


def slew(drive: Any, x_deg: float, y_deg: float, frame: str = "AZEL", *,
         wait: bool = True) -> Generator[Msg, Any, None]:
    """Plan: slew to a fixed position (Az/El or HA/Dec, deg); done when parked there (``wait=False``: started)."""
    yield from run_command(f"{drive.name}_slew", drive.slew, x_deg, y_deg, frame, stopper=drive.stop, wait=wait)


def stop_drive(drive: Any, stow: bool = False) -> Generator[Msg, Any, None]:
    """Plan: stop the drive (axes at rest) or stow it; done when carried out."""
    yield from run_command(f"{drive.name}_{'stow' if stow else 'halt'}", drive.stow if stow else drive.halt)


def safe_state(drive: Any | None, instrumentation: Any | None, cleanup: str = "stop") -> Generator[Msg, Any, None]:
    """Plan: the safe state: diodes off, drive stopped (``"stop"``), stowed (``"stow"``) or left (``"none"``).

    Both actions are attempted even if one fails; the first failure is raised afterwards.
    """
    if cleanup not in CLEANUP_ACTIONS:
        raise ValueError(f"cleanup {cleanup!r} is not one of {', '.join(CLEANUP_ACTIONS)}")
    errors: list[BaseException] = []
    for cmd in list(_PENDING):  # a command cut short by the cleanup is over, not failed (the run may be aborting)
        if cmd.status is not None and not cmd.status.done:
            cmd.status.set_finished()
    if instrumentation is not None:
        try:
            yield from diodes_off(instrumentation)
        except Exception as err:  # noqa: BLE001  (still make the drive safe; re-raised below)
            errors.append(err)
    if drive is not None and cleanup != "none":
        try:
            yield from stop_drive(drive, stow=cleanup == "stow")
        except Exception as err:  # noqa: BLE001  (re-raised below)
            errors.append(err)
    if errors:
        raise errors[0]


def with_safe_cleanup(plan: Generator[Msg, Any, Any], drive: Any | None, instrumentation: Any | None,
                      cleanup: str = "stop") -> Generator[Msg, Any, Any]:
    """``plan`` wrapped with :func:`finalize_wrapper` so that :func:`safe_state` runs however it ends."""
    if cleanup not in CLEANUP_ACTIONS:
        raise ValueError(f"cleanup {cleanup!r} is not one of {', '.join(CLEANUP_ACTIONS)}")
    return (yield from finalize_wrapper(plan, safe_state(drive, instrumentation, cleanup)))


# ---- step scans ---------------------------------------------------------------------------------------------
def trigger_and_read_then(devices: Sequence[Any], radiometer: Any,
                          then: Callable[[], Generator[Msg, Any, Any]] | None = None,
                          name: str = "primary") -> Generator[Msg, Any, None]:
    """Plan: ``bps.trigger_and_read(devices)`` (``radiometer`` among them) that runs ``then`` as soon as the
    radiometer's integration window is over, while its samples are still on the way.

    ``then`` is a plan that starts the next move without waiting for it.  The other devices are read at the
    window's end, before it; the radiometer once its trigger is done.  Without ``then``, exactly
    ``bps.trigger_and_read``.
    """
    if then is None:
        yield from bps.trigger_and_read(list(devices), name=name)
        return
    others = [d for d in devices if d is not radiometer]
    acq, rest = f"acquire-{next(_groups)}", f"trigger-{next(_groups)}"
    yield from bps.trigger(radiometer, group=acq)
    for d in others:
        if hasattr(d, "trigger"):
            yield from bps.trigger(d, group=rest)
    yield from bps.wait(group=rest)
    yield from run_command(f"{radiometer.name}_window", radiometer.window_over)
    yield from bps.create(name)
    for d in others:
        yield from bps.read(d)
    yield from then()
    yield from bps.wait(group=acq)
    yield from bps.read(radiometer)
    yield from bps.save()


def step_series(radiometer: Any, devices: Sequence[Any], moves: Sequence[Callable[..., Generator[Msg, Any, Any]]]
                ) -> Generator[Msg, Any, list[tuple[float, float]]]:
    """Plan: per move a checkpoint, the move (``move(wait=True)``: done when settled) and one integration
    (``trigger_and_read(devices)``), the next move starting as soon as the integration window is over.

    The wait for the window's last samples then overlaps the next move.  After a suspension the step is
    re-run from its checkpoint and re-commands its own move (the drive answers a move it is already making
    with that move's Status).  ``moves`` are plans taking ``wait``, e.g. ``partial(go_on_source, drive,
    source, x, y)``.  Returns per step the radiometer's mean temperature (K, mean of DVM1 and DVM2) and
    mean elevation (deg).
    """
    out = []
    for k, move in enumerate(moves):
        yield from bps.checkpoint()
        yield from move(wait=True)
        nxt = moves[k + 1] if k + 1 < len(moves) else None
        yield from trigger_and_read_then(devices, radiometer, (lambda m=nxt: m(wait=False)) if nxt else None)
        out.append(((float(radiometer.dvm1.get()) + float(radiometer.dvm2.get())) / 2, float(radiometer.el.get())))
    return out


# ---- recording ----------------------------------------------------------------------------------------------
def record(stream: str, values: dict[str, Any], units: dict[str, str] | None = None) -> Generator[Msg, Any, None]:
    """Plan: one event in ``stream`` holding ``values`` (numbers or text; data keys ``{stream}_{key}``)."""
    units = units or {}
    sigs = []
    for key, v in values.items():
        if isinstance(v, (np.floating, np.integer)):
            v = v.item()
        if v is None:
            v = float("nan")
        sigs.append(ResultSignal(name=f"{stream}_{key}", value=v, units=units.get(key, "")))
    yield from bps.create(name=stream)
    for sig in sigs:
        yield from bps.read(sig)
    yield from bps.save()


def collect_samples(radiometer: Any, into: dict[str, list], stream: str | None = None) -> Generator[Msg, Any, int]:
    """Plan: collect the radiometer's fly samples (emitting them) and append the columns to ``into``.

    Keys of ``into`` are the column names without the device prefix (``t``, ``ha``, ``dvm1``, ...).
    Returns the number of samples collected.
    """
    payload = yield from bps.collect(radiometer, name=stream)
    n = 0
    prefix = f"{radiometer.name}_"
    for item in _iter_payload(payload):
        data = item.get("data", {})
        for key, values in data.items():
            col = key[len(prefix):] if key.startswith(prefix) else key
            vals = values if isinstance(values, (list, tuple, np.ndarray)) else [values]
            into.setdefault(col, []).extend(vals)
        n = len(into.get("t", []))
    return n


def _iter_payload(payload: Any) -> Iterable[dict[str, Any]]:
    if payload is None:
        return []
    if isinstance(payload, dict):
        return [payload]
    return list(payload)


def status_when(signals: Sequence[Any], check: Any, timeout: float | None = None, what: str = "") -> Status:
    """A Status finishing when ``check()`` holds (evaluated on every update of ``signals``).

    With ``timeout`` (real s) it fails with a TimeoutError naming ``what`` if the condition never holds.
    """
    st = Status()
    watch(st, signals, check)
    if timeout is not None and not st.done:

        def expire() -> None:
            try:
                st.set_exception(TimeoutError(f"{what}: not within {timeout:g} s"))
            except InvalidState:  # finished meanwhile
                pass

        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timer.start()
        st.add_callback(lambda _st: timer.cancel())
    return st


def backend_receiver(backend: Any, receiver: str) -> Generator[Msg, Any, None]:
    """Plan: wait until ``backend`` (correlator, pulsar timer) reports being fed by ``receiver`` (RX_RBV)."""

    def fed() -> Status:
        return status_when([backend.rx], lambda: backend.rx.get() == receiver, RECEIVER_TIMEOUT_S,
                            f"{backend.name} fed by {receiver} (RX_RBV {backend.rx.get()!r}; NDI link up?)")

    yield from run_command(f"{backend.name}_receiver", fed)


def backend_idle(backend: Any, busy: Sequence[str]) -> Generator[Msg, Any, None]:
    """Plan: wait until ``backend``'s ``state`` is none of ``busy`` (an integration left running finishes).

    A device command (re-run when the RunEngine replays a step after a suspension), so an integration that
    the suspension interrupted is waited for before the step's own one starts.
    """

    def idle() -> Status:
        return status_when([backend.state], lambda: backend.state.get() not in busy)

    yield from run_command(f"{backend.name}_idle", idle)
