"""Suspenders: pause a running plan while conditions are unsafe and resume it when they clear.

* :func:`wind_suspender` — the weather station's wind speed (``WX:WIND_SPD_RBV``, m/s) above a ceiling;
  resumes below a lower threshold (hysteresis), after ``sleep`` s.
* :func:`sun_suspender` — the drive's distance from the sun (``DRV:SUN_DIST_RBV``, deg) below a floor.
* :class:`SuspendDisconnected` / :func:`disconnect_suspenders` — a device's IOC stops answering (its
  liveness PV disconnects); resumes when the IOC is back.

The drive IOC enforces wind stow and sun avoidance itself; the suspenders keep a plan from failing on them
and let it resume.  Install with ``RE.install_suspender(s)`` or :func:`install`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bluesky.suspenders import SuspendCeil, SuspenderBase, SuspendFloor


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
    """Suspend while ``signal`` is disconnected (its IOC is down); resume when it connects again."""

    def install(self, RE: Any, *, event_type: str | None = None) -> None:
        """Watch the signal's connection state (ophyd ``meta`` subscription)."""
        super().install(RE, event_type=event_type or self._sig.SUB_META)

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        connected = kwargs.get("connected")
        super().__call__(bool(self._sig.connected if connected is None else connected))

    def _should_suspend(self, value: Any) -> bool:
        return not value

    def _should_resume(self, value: Any) -> bool:
        return bool(value)

    def _get_justification(self) -> str:
        return f"{self._sig.name} ({getattr(self._sig, 'pvname', '')}) disconnected: IOC not answering"


def disconnect_suspenders(devices: Iterable[Any], sleep: float = 1.0) -> list[SuspendDisconnected]:
    """One :class:`SuspendDisconnected` per device, on its message PV (monitored, so the loss is seen)."""
    return [SuspendDisconnected(dev.message, sleep=sleep) for dev in devices]


def install(RE: Any, suspenders: Iterable[SuspenderBase]) -> list[SuspenderBase]:
    """Install the suspenders on RunEngine ``RE``; returns them (for ``RE.remove_suspender``)."""
    out = list(suspenders)
    for s in out:
        RE.install_suspender(s)
    return out
