"""The observatory clock: real time scaled by a speed factor from a start epoch.

Every simulator, IOC, plan and scheduler reads time from one :class:`ObservatoryClock`.  The clock is
fully described by three numbers (simulated start epoch, the real instant it corresponds to, speed), so
separate processes that share them agree to the microsecond; they travel in the ``OBSCTL_CLOCK``
environment variable.  Speed 1 with the epoch "now" is real time.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

ENV_VAR = "OBSCTL_CLOCK"


def parse_epoch(text: str) -> float:
    """POSIX seconds (UTC) for an ISO-8601 epoch, or now for ``"now"``.

    Raises ValueError naming the text if it is not a date.
    """
    if text.strip().lower() == "now":
        return time.time()
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"clock start {text!r} is not an ISO-8601 UTC date or 'now'") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


@dataclass(frozen=True)
class ObservatoryClock:
    """Simulated UTC = ``sim_epoch + (real_now - real_epoch) * speed``.

    Attributes
    ----------
    sim_epoch : float
        Simulated POSIX time (s, UTC) at ``real_epoch``.
    real_epoch : float
        Real POSIX time (s) the simulated epoch corresponds to.
    speed : float
        Simulated seconds per real second (1 = real time).
    """

    sim_epoch: float
    real_epoch: float
    speed: float = 1.0
    _realtime: object = field(default=time.time, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.speed > 0:
            raise ValueError(f"clock speed must be > 0, got {self.speed}")

    @classmethod
    def start(cls, epoch: str | float = "now", speed: float = 1.0) -> ObservatoryClock:
        """A clock whose simulated time starts at ``epoch`` (ISO UTC, POSIX s or 'now') at this instant."""
        real = time.time()
        sim = parse_epoch(epoch) if isinstance(epoch, str) else float(epoch)
        return cls(sim_epoch=sim, real_epoch=real, speed=float(speed))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ObservatoryClock:
        """The clock described by ``OBSCTL_CLOCK`` (real time if unset)."""
        env = os.environ if environ is None else environ
        text = env.get(ENV_VAR, "")
        if not text:
            now = time.time()
            return cls(sim_epoch=now, real_epoch=now, speed=1.0)
        try:
            sim, real, speed = (float(x) for x in text.split(","))
        except ValueError:
            raise ValueError(f"{ENV_VAR}={text!r} is not 'sim_epoch,real_epoch,speed'") from None
        return cls(sim_epoch=sim, real_epoch=real, speed=speed)

    def corrected(self, real_offset_s: float) -> ObservatoryClock:
        """This clock on a computer whose system clock reads ``real_offset_s`` real seconds too early.

        The offset is added to the system clock before it becomes observatory time, so the corrected clock
        is ahead by ``real_offset_s * speed`` seconds of observatory time.
        """
        return replace(self, real_epoch=self.real_epoch - float(real_offset_s))

    def to_env(self) -> str:
        """Value for ``OBSCTL_CLOCK`` describing this clock."""
        return f"{self.sim_epoch!r},{self.real_epoch!r},{self.speed!r}"

    def now(self) -> float:
        """Current simulated UTC as POSIX seconds."""
        return self.sim_epoch + (self._realtime() - self.real_epoch) * self.speed

    def sim_time(self, real: float) -> float:
        """Simulated POSIX time (s) at real POSIX time ``real``."""
        return self.sim_epoch + (real - self.real_epoch) * self.speed

    def real_time(self, sim: float) -> float:
        """Real POSIX time (s) at which simulated time ``sim`` occurs."""
        return self.real_epoch + (sim - self.sim_epoch) / self.speed

    def real_duration(self, sim_seconds: float) -> float:
        """Real seconds that ``sim_seconds`` of simulated time take."""
        return sim_seconds / self.speed

    def now_datetime(self) -> datetime:
        """Current simulated UTC as an aware datetime."""
        return datetime.fromtimestamp(self.now(), tz=UTC)
