"""Suspenders: pause a running plan while conditions are unsafe and resume it when they clear.

* :func:`wind_suspender` — the weather station's wind speed (``WX:WIND_SPD_RBV``, m/s) above a ceiling;
  resumes below a lower threshold (hysteresis), after ``sleep`` s.
* :func:`sun_suspender` — the drive's distance from the sun (``DRV:SUN_DIST_RBV``, deg) below a floor.
* :class:`SuspendDisconnected` / :func:`disconnect_suspenders` — a device's IOC stops answering (its
  message PV disconnects: the IOC died or the network is down); resumes when the IOC is back, e.g. restarted
  by the supervisor.  Its ``history`` keeps what happened, with real times: ``disconnected``/``connected``
  as seen on the PV, ``suspended``/``resumed`` when the RunEngine actually paused and resumed the plan.
  A radiometer fly scan loses no sample it can recover across such a suspension
  (:mod:`devices.radiometer`: missed blocks are fetched from the IOC's history).

The drive IOC enforces wind stow and sun avoidance itself; the suspenders keep a plan from failing on them
and let it resume.  Install with ``RE.install_suspender(s)`` or :func:`install`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator, Iterable
from datetime import UTC, datetime
from typing import Any

from bluesky.suspenders import SuspendCeil, SuspenderBase, SuspendFloor
from bluesky.utils import Msg, ensure_generator


def wind_suspender(weather: Any, max_wind_m_s: float = 12.0, resume_m_s: float | None = None,
                   sleep: float = 0.0) -> SuspendCeil:
    """Suspend while the wind speed (m/s) exceeds ``max_wind_m_s``; resume below ``resume_m_s`` (default 80 %)."""
    resume = 0.8 * max_wind_m_s if resume_m_s is None else resume_m_s
    return SuspendCeil(weather.wind_spd, max_wind_m_s, resume_thresh=resume, sleep=sleep,
                       tripped_message=f"wind above {max_wind_m_s:g} m/s")


def sun_suspender(drive: Any, min_dist_deg: float = 25.0, resume_deg: float | None = None,
                  sleep: float = 0.0) -> SuspendFloor:
    """Suspend while the pointing is closer than ``min_dist_deg`` (deg) to the sun; resume beyond ``resume_deg``."""
    resume = min_dist_deg + 1.0 if resume_deg is None else resume_deg
    return SuspendFloor(drive.sun_dist, min_dist_deg, resume_thresh=resume, sleep=sleep,
                        tripped_message=f"pointing within {min_dist_deg:g} deg of the sun")


class SuspendDisconnected(SuspenderBase):
    """Suspend while ``signal`` is disconnected (its IOC is down); resume when it connects again.

    ``sleep`` (real s) is the wait between the reconnection and the resumption.  ``pre_plan``/``post_plan``
    run before suspending and before resuming, as for any bluesky suspender.  ``history`` lists
    ``(real time, event)`` pairs: ``disconnected``, ``connected``, ``suspended``, ``resumed``.
    """

    def __init__(self, signal: Any, *, sleep: float = 0.0, pre_plan: Any = None, post_plan: Any = None,
                 tripped_message: str = ""):
        self.history: list[tuple[float, str]] = []
        self._up: bool | None = None
        self._user_plans = (pre_plan, post_plan)
        super().__init__(signal, sleep=sleep, pre_plan=self._suspending, post_plan=self._resuming,
                         tripped_message=tripped_message)

    def __repr__(self) -> str:
        # the base class shows pre_plan/post_plan, here bound methods of self: that would recurse
        pre, post = self._user_plans
        return (f"{type(self).__name__}({self._sig!r}, sleep={self._sleep}, pre_plan={pre!r}, post_plan={post!r}, "
                f"tripped_message={self._tripped_message!r})")

    def _note(self, event: str) -> None:
        self.history.append((datetime.now(UTC).timestamp(), event))

    def _suspending(self) -> Generator[Msg, Any, None]:
        """Plan run by the RunEngine as it suspends: notes the time, then runs the given pre_plan."""
        self._note("suspended")
        user = self._user_plans[0]
        if user is not None:
            yield from ensure_generator(user() if callable(user) else user)

    def _resuming(self) -> Generator[Msg, Any, None]:
        """Plan run by the RunEngine just before it resumes: notes the time, then runs the given post_plan."""
        self._note("resumed")
        user = self._user_plans[1]
        if user is not None:
            yield from ensure_generator(user() if callable(user) else user)

    def _SuspenderBase__make_event(self) -> asyncio.Event:  # noqa: N802  (replaces the base class's private step)
        """The event the suspension waits for, made here in the caller's thread.

        bluesky's own version asks the RunEngine's loop to make it and gives up after 0.1 s, raising in the
        connection callback: while the loop is busy (writing a page of samples to the archive on a loaded
        machine) a disconnection was then never turned into a suspension.  Since Python 3.10 an asyncio.Event
        binds to its loop only when first awaited, so making it outside the loop is safe; it is set from the
        loop (``call_soon_threadsafe``) as before.
        """
        if self._ev is None and self.RE is not None:
            self._ev = asyncio.Event()
        return self._ev

    def install(self, RE: Any, *, event_type: str | None = None) -> None:
        """Watch the signal's connection state (ophyd ``meta`` subscription)."""
        super().install(RE, event_type=event_type or self._sig.SUB_META)

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        connected = kwargs.get("connected")
        up = bool(self._sig.connected if connected is None else connected)
        if up != self._up and (self._up is not None or not up):  # a change (or down when installed)
            self._note("connected" if up else "disconnected")
        self._up = up
        super().__call__(up)

    def _should_suspend(self, value: Any) -> bool:
        return not value

    def _should_resume(self, value: Any) -> bool:
        return bool(value)

    def _get_justification(self) -> str:
        return f"{self._sig.name} ({getattr(self._sig, 'pvname', '')}) disconnected: IOC not answering"


def disconnect_suspenders(devices: Iterable[Any], sleep: float = 1.0) -> list[SuspendDisconnected]:
    """One :class:`SuspendDisconnected` per device, on its message PV (monitored, so the loss is seen).

    ``sleep``: real seconds between the IOC answering again and the plan resuming.
    """
    return [SuspendDisconnected(dev.message, sleep=sleep) for dev in devices]


def install(RE: Any, suspenders: Iterable[SuspenderBase]) -> list[SuspenderBase]:
    """Install the suspenders on RunEngine ``RE``; returns them (for ``RE.remove_suspender``)."""
    out = list(suspenders)
    for s in out:
        RE.install_suspender(s)
    return out
