"""The building blocks every obsctl ophyd device is made of.

Every device talks Channel Access through classic ophyd over pyepics (importing ophyd first selects the
pyepics control layer and its libca before anything touches ``epics.ca``).  The building blocks:

:class:`ObsDevice`
    Base of every device: prefix ``SITE:DEV:``, the IOC's liveness counter, backend and message PVs.
:class:`Readback`
    A read-only PV that can also be read *fresh* (a Channel Access round trip, with its timestamp).
:class:`Setpoint`
    A writable PV whose ``set()`` finishes when the IOC has processed the write, and *fails* with the
    IOC's reason when the IOC refused it.  pyepics reports success even for a refused put (ECA_PUTFAIL),
    so acceptance is checked by reading the value back: a refused write leaves the old value.
:func:`watch`
    Finish (or fail) a Status from monitor updates of one or more signals.

Time stamps of readbacks are observatory time (the IOCs stamp them with ``obsctl.clock``); values written
by clients carry the IOC host's wall clock instead, so logic here never compares those two.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import ophyd  # noqa: F401  (first: selects the pyepics control layer and its libca)
from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO, Kind, Signal
from ophyd.status import Status, StatusBase

PUT_TIMEOUT = 10.0  # s (real) for the IOC to answer a write


class CommandRefused(RuntimeError):
    """The IOC refused a command or a setpoint; the message is the IOC's reason."""


class DeviceFault(RuntimeError):
    """The instrument stopped, failed or was re-commanded while a Status was pending."""


class SampleLoss(RuntimeError):
    """Samples of a continuous stream were lost between the IOC and this client."""


# ---- signals -------------------------------------------------------------------------------------
class FreshMixin:
    """``fresh()``: value and time stamp read now from the IOC (not a cached monitor value)."""

    def fresh(self, timeout: float = 5.0) -> tuple[Any, float]:
        """(value, time stamp) read from the IOC now; TimeoutError if it does not answer."""
        self.wait_for_connection(timeout=timeout)
        info = self._read_pv.get_with_metadata(use_monitor=False, form="time", as_string=self.as_string,
                                               timeout=timeout)
        if info is None:
            raise TimeoutError(f"{self.pvname}: no answer within {timeout} s")
        value = info["value"]
        if self.as_string and not isinstance(value, str):
            value = str(value)
        return value, float(info["timestamp"])


class Readback(FreshMixin, EpicsSignalRO):
    """A read-only PV (monitored unless ``auto_monitor=False``), with :meth:`fresh`."""

    def __init__(self, read_pv: str, *, auto_monitor: bool = True, **kwargs: Any):
        super().__init__(read_pv, auto_monitor=auto_monitor, **kwargs)


def _same(a: Any, b: Any) -> bool:
    """Whether two PV values are equal (strings ignoring case and outer blanks, floats to 1e-9)."""
    if isinstance(a, str) or isinstance(b, str):
        return str(a).strip().casefold() == str(b).strip().casefold()
    try:
        fa, fb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    except (TypeError, ValueError):
        return bool(a == b)
    if fa.shape != fb.shape:
        return False
    return bool(np.all((fa == fb) | np.isclose(fa, fb, rtol=1e-9, atol=1e-12) | (np.isnan(fa) & np.isnan(fb))))


def _root_message(signal: Signal) -> Any:
    root = signal.root
    return getattr(root, "message", None) if root is not signal else None


class Setpoint(FreshMixin, EpicsSignal):
    """A writable PV whose ``set()`` Status finishes once the IOC accepted the value.

    A refused value (out of the control limits, or rejected by the IOC's validation) fails the Status
    with :class:`CommandRefused` carrying the IOC's message (``MSG_RBV``) or the limits.
    """

    def __init__(self, write_pv: str, *, auto_monitor: bool = True, **kwargs: Any):
        super().__init__(write_pv, auto_monitor=auto_monitor, **kwargs)

    def put_wait(self, value: Any, timeout: float = PUT_TIMEOUT) -> None:
        """Write ``value`` and wait until the IOC has processed it (accepted or not)."""
        done = threading.Event()
        self.put(value, use_complete=True, callback=lambda *a, **k: done.set())
        if not done.wait(timeout):
            raise TimeoutError(f"{self.pvname}: the IOC did not complete the write of {value!r} in {timeout} s")

    def checked_put(self, value: Any, timeout: float = PUT_TIMEOUT) -> Any:
        """Write ``value``, wait for the IOC, read it back; return the accepted value.

        Raises CommandRefused (with the IOC's reason) if the IOC kept the old value.
        """
        if self.enum_strs and isinstance(value, str) and value not in self.enum_strs:
            raise CommandRefused(f"{self.pvname}: {value!r} is not one of {', '.join(self.enum_strs)}")
        msg = _root_message(self)
        msg_before = (msg.get(), msg.timestamp) if msg is not None else None  # monitored: no round trip
        before = self.get()
        self.put_wait(value, timeout)
        after, _ = self.fresh()
        if _same(after, value) or not _same(after, before) or _same(value, before):
            return after
        reason = ""
        if msg is not None:
            text, ts = msg.fresh()
            if (text, ts) != msg_before:
                reason = text
        if not reason:
            lo, hi = self.limits
            reason = f"outside {lo:g}..{hi:g}" if lo is not None and hi is not None and lo < hi else "refused"
        raise CommandRefused(f"{self.pvname} = {value!r} refused: {reason}")

    def set(self, value: Any, *, timeout: float | None = None, settle_time: float | None = None) -> Status:
        """Write ``value``; the Status finishes when the IOC accepted it (fails with the reason if not)."""
        status = Status(obj=self, timeout=timeout, settle_time=settle_time)
        run_in_thread(status, lambda: self.checked_put(value), f"{self.name}-set")
        return status


class ResultSignal(Signal):
    """A soft signal holding a value computed by the device (with units in its description)."""

    def __init__(self, *, units: str = "", dtype: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.units = units
        self._dtype = dtype

    def describe(self) -> dict[str, dict[str, Any]]:
        d = super().describe()
        if self.units:
            d[self.name]["units"] = self.units
        if self._dtype:
            d[self.name]["dtype"] = self._dtype
        return d


# ---- statuses ------------------------------------------------------------------------------------
def run_in_thread(status: StatusBase, work: Callable[[], Any], name: str, finish: bool = True) -> threading.Thread:
    """Run ``work`` in a daemon thread; an exception fails ``status``, a return finishes it if ``finish``.

    With ``finish=False`` the work hands the Status on (e.g. to :func:`watch`) and only failures end it here.
    """

    def target() -> None:
        try:
            work()
        except Exception as exc:  # noqa: BLE001  (any failure is the Status' failure, reported to the caller)
            if not status.done:
                status.set_exception(exc)
        else:
            if finish and not status.done:
                status.set_finished()

    th = threading.Thread(target=target, name=name, daemon=True)
    th.start()
    return th


def watch(status: StatusBase, signals: Iterable[Signal], check: Callable[[], bool | None]) -> None:
    """Evaluate ``check()`` now and on every monitor update of ``signals`` until ``status`` is done.

    ``check`` returns True to finish the Status, or raises to fail it (its exception is the reason).
    Subscriptions are removed once the Status is done.
    """
    lock = threading.Lock()
    subs: list[tuple[Signal, int]] = []

    def evaluate(*_: Any, **__: Any) -> None:
        with lock:
            if status.done:
                return
            try:
                ok = check()
            except Exception as exc:  # noqa: BLE001  (the check's exception is the Status' failure reason)
                status.set_exception(exc)
                return
            if ok:
                status.set_finished()

    def cleanup(_status: StatusBase) -> None:
        for sig, cid in subs:
            sig.unsubscribe(cid)

    for sig in signals:
        subs.append((sig, sig.subscribe(evaluate, event_type=sig.SUB_VALUE, run=False)))
    status.add_callback(cleanup)
    evaluate()


# ---- base device ---------------------------------------------------------------------------------
class ObsDevice(Device):
    """Base of every obsctl device: prefix ``SITE:DEV:`` plus the IOC's liveness, backend and message."""

    alive = Cpt(Readback, "ALIVE_RBV", kind=Kind.omitted, auto_monitor=False)
    sim = Cpt(Readback, "SIM_STS", kind=Kind.config, string=True)
    message = Cpt(Readback, "MSG_RBV", kind=Kind.omitted, string=True)

    def last_message(self) -> str:
        """The IOC's last message or rejection reason, read now."""
        return str(self.message.fresh()[0])


# ---- TIME ----------------------------------------------------------------------------------------
