"""Building blocks shared by every IOC: documented PV factories, the IOC base class, the server runner.

Every PV made here has a DESC (``doc=``), units (EGU), display limits and, where given, alarm limits;
setpoints also carry control limits, so the server rejects out-of-range and NaN values and keeps the
old value.  Readbacks are written with timestamps from the observatory clock (``ObsIOC.stamp``).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import signal
import socket
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from caproto import ChannelType
from caproto._data import CannotExceedLimits
from caproto.asyncio.server import Context as _CaprotoServer
from caproto.server import PVGroup, pvproperty
from caproto.server.server import PvpropertyDouble, PvpropertyEnum, PvpropertyInteger, PvpropertyString

from iocs.autosave import Autosave
from obsctl.clock import ObservatoryClock
from obsctl.site import InstrumentConfig, Site

log = logging.getLogger("obsctl.ioc")

#: instrument kind -> module in ``iocs`` defining ``make_ioc(site, inst, clock)``
IOC_MODULES: dict[str, str] = {
    "time": "iocs.station_time",
    "drive": "iocs.drive",
    "radiometer": "iocs.radiometer",
    "instrumentation": "iocs.instrumentation",
    "correlator": "iocs.correlator",
    "pulsar_timer": "iocs.pulsar_timer",
    "synthesizer": "iocs.synthesizer",
    "weather": "iocs.weather",
    "housekeeping": "iocs.housekeeping",
    "subreflector": "iocs.subreflector",
}


class InputError(ValueError):
    """A client wrote a value the instrument cannot accept (reported to the client as a put failure)."""


DESC_MAX = 40  # characters an EPICS DESC field holds


def _desc(doc: str) -> str:
    """A PV description that fits the DESC field (ValueError otherwise, so it is never cut silently)."""
    if not doc or len(doc) > DESC_MAX:
        raise ValueError(f"PV description must be 1..{DESC_MAX} characters, got {len(doc)}: {doc!r}")
    return doc


class _KeepAlarmOnReject:
    """Mixin for setpoints: a refused client write leaves the PV's alarm state as it was (caproto would latch
    WRITE/MAJOR) and publishes the reason in the IOC's MSG_RBV, whether the putter or the limits refused it."""

    async def write(self, value: Any, **kwargs: Any) -> Any:
        before = (self.alarm.status, self.alarm.severity)
        try:
            return await super().write(value, **kwargs)
        except Exception as err:  # re-raised below: only restores the alarm and records the reason
            if (self.alarm.status, self.alarm.severity) != before:
                await self.alarm.write(status=before[0], severity=before[1])
            group = getattr(self, "group", None)
            message = getattr(group, "message", None)
            if message is not None and self is not message:
                name = self.pvspec.name
                if isinstance(err, CannotExceedLimits):
                    v = np.atleast_1d(value)[0]
                    text = f"{name} {v:.6g} outside {self.lower_ctrl_limit:g}..{self.upper_ctrl_limit:g}"
                else:
                    text = f"{name}: {err}" if str(err) else f"{name}: {type(err).__name__}"
                await message.write(text[:39])
            raise


class _Double(_KeepAlarmOnReject, PvpropertyDouble):
    pass


class _Long(_KeepAlarmOnReject, PvpropertyInteger):
    pass


class _Enum(_KeepAlarmOnReject, PvpropertyEnum):
    """Enum setpoint that refuses states it does not have (caproto would store an unknown string)."""

    async def verify_value(self, data: Any) -> Any:
        states = self.enum_strings
        state = states[int(data)] if isinstance(data, (int, np.integer)) and 0 <= data < len(states) else data
        if state not in states:
            raise InputError(f"{self.pvspec.name}: {data!r} is not one of {', '.join(states)}")
        return await super().verify_value(data)


class _String(_KeepAlarmOnReject, PvpropertyString):
    pass


UNITS_MAX = 8  # characters of units a Channel Access client receives (MAX_UNITS_SIZE)
CLOSE_TIMEOUT_S = 2.0  # real s an IOC's shutdown (closing its client links) may take before the process ends


def _units(units: str) -> str:
    """Engineering units that fit a CA control structure (ValueError otherwise, so they are never cut)."""
    if len(units) > UNITS_MAX:
        raise ValueError(f"PV units must be at most {UNITS_MAX} characters, got {units!r}")
    return units


def _limits(lo: float | None, hi: float | None, alarm: tuple | None, warn: tuple | None,
            writable: bool) -> dict[str, float]:
    kw: dict[str, float] = {}
    if lo is not None and hi is not None:
        if not lo < hi:
            raise ValueError(f"display limits must satisfy lo < hi, got {lo}, {hi}")
        kw.update(lower_disp_limit=lo, upper_disp_limit=hi)
        if writable:
            kw.update(lower_ctrl_limit=lo, upper_ctrl_limit=hi)
    elif writable:
        raise ValueError("a writable numeric PV needs lo and hi limits")
    if alarm:
        kw.update(lower_alarm_limit=alarm[0], upper_alarm_limit=alarm[1])
    if warn:
        kw.update(lower_warning_limit=warn[0], upper_warning_limit=warn[1])
    return kw


def pv_float(name: str, doc: str, units: str, value: float = 0.0, *, lo: float | None = None,
             hi: float | None = None, alarm: tuple[float, float] | None = None,
             warn: tuple[float, float] | None = None, precision: int = 4,
             writable: bool = False) -> pvproperty:
    """A double PV (``ai``/``ao`` record). Setpoints need ``lo``/``hi``, enforced by the server."""
    return pvproperty(name=name, value=float(value), dtype=ChannelType.DOUBLE, doc=_desc(doc), units=_units(units),
                      precision=precision, alarm_group=name, read_only=not writable, record="ao" if writable else "ai",
                      **_limits(lo, hi, alarm, warn, writable))


def pv_int(name: str, doc: str, units: str = "", value: int = 0, *, lo: int | None = None,
           hi: int | None = None, alarm: tuple[int, int] | None = None, writable: bool = False) -> pvproperty:
    """A long-integer PV (``longin``/``longout`` record)."""
    return pvproperty(name=name, value=int(value), dtype=ChannelType.LONG, doc=_desc(doc), units=_units(units),
                      alarm_group=name, read_only=not writable, record="longout" if writable else "longin",
                      **_limits(lo, hi, alarm, None, writable))


def pv_enum(name: str, doc: str, states: Sequence[str], value: str | None = None, *,
            writable: bool = False) -> pvproperty:
    """An enum PV (``mbbo``/``mbbi`` record, at most 16 states); unknown states are rejected."""
    if not 1 <= len(states) <= 16:
        raise ValueError(f"{name}: an enum needs 1..16 states, got {len(states)}")
    return pvproperty(name=name, value=value or states[0], dtype=ChannelType.ENUM,
                      enum_strings=list(states), doc=_desc(doc), read_only=not writable, alarm_group=name,
                      record="mbbo" if writable else "mbbi")


def pv_str(name: str, doc: str, value: str = "", *, writable: bool = False) -> pvproperty:
    """A string PV (40 characters, ``stringout``/``stringin`` record)."""
    return pvproperty(name=name, value=value, dtype=ChannelType.STRING, doc=_desc(doc), alarm_group=name,
                      read_only=not writable, record="stringout" if writable else "stringin")


def pv_wave(name: str, doc: str, units: str, length: int, *, dtype: type = float,
            lo: float | None = None, hi: float | None = None, writable: bool = False) -> pvproperty:
    """A waveform PV of up to ``length`` elements (double by default)."""
    ctype = ChannelType.DOUBLE if dtype is float else ChannelType.LONG
    zero = [0.0] if dtype is float else [0]
    kw = _limits(lo, hi, None, None, False) if lo is not None else {}
    return pvproperty(name=name, value=zero, dtype=ctype, max_length=length, doc=_desc(doc), units=_units(units),
                      alarm_group=name, read_only=not writable, record="waveform", **kw)


def require_finite(value: Any, what: str) -> float:
    """``value`` as a finite float, else :class:`InputError` naming ``what``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what}: {value!r} is not a number") from None
    if not math.isfinite(v):
        raise InputError(f"{what}: {value!r} is not finite")
    return v


class Pacer:
    """The sleep between the passes of a periodic IOC loop, cut short when something new is to be done.

    A loop calls ``await pacer.sleep(period)`` after each pass; a putter (a rate or a command changed) or an
    input monitor (a new drive packet) calls :meth:`wake`, and the next pass starts at once instead of at the
    end of the period.  A wake that comes during a pass is kept: the following sleep returns at once.
    :meth:`at` asks for a pass at a given real instant as well (e.g. a position wanted at an instant): the
    sleep ends then, unless the period ends first.
    """

    #: real s a woken loop still waits, so that the putter that woke it has committed its value
    SETTLE_S = 0.001
    #: instants held at most; beyond it the latest are forgotten (a misbehaving client cannot grow the heap)
    MAX_INSTANTS = 64

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._woken = False
        self._settle = False
        self._instants: list[float] = []

    def wake(self, settle: bool = True) -> None:
        """Start the loop's next pass now (callable from the event loop only).

        ``settle`` False: the waker's data are already in place (an input monitor), no :attr:`SETTLE_S` wait.
        """
        self._woken = True
        self._settle = self._settle or settle
        self._event.set()

    def at(self, when: float) -> None:
        """Run a pass at the real instant ``when`` (``time.monotonic()`` s; a past instant: at once)."""
        heapq.heappush(self._instants, when)
        if len(self._instants) > self.MAX_INSTANTS:
            self._instants = heapq.nsmallest(self.MAX_INSTANTS, self._instants)
        self._event.set()

    async def sleep(self, seconds: float) -> bool:
        """Sleep ``seconds`` (real s, <= 0: just yield), until an instant asked for, or until woken.

        Returns True if woken early by :meth:`wake`.
        """
        end = time.monotonic() + seconds
        while not self._woken:
            limit = min(end, self._instants[0]) if self._instants else end
            remaining = limit - time.monotonic()
            if remaining <= 0:
                now = time.monotonic()
                while self._instants and self._instants[0] <= now:
                    heapq.heappop(self._instants)
                await asyncio.sleep(0)
                return False
            self._event.clear()
            try:
                await asyncio.wait_for(self._event.wait(), remaining)
            except TimeoutError:
                pass
        self._woken = False
        self._event.clear()
        await asyncio.sleep(self.SETTLE_S if self._settle else 0)
        self._settle = False
        return True


class ObsIOC(PVGroup):
    """Base of every obsctl IOC: prefix ``SITE:DEV:``, the site, the clock and a liveness counter.

    Subclasses publish readbacks with ``await self.stamp(pv, value)`` so that timestamps come from the
    observatory clock.
    """

    type_map = {**PVGroup.type_map, ChannelType.DOUBLE: _Double, ChannelType.LONG: _Long,
                ChannelType.ENUM: _Enum, ChannelType.STRING: _String}

    #: setpoints kept across restarts when the IOC has an autosave directory (iocs.autosave), names without prefix
    AUTOSAVE: tuple[str, ...] = ()

    alive = pv_int("ALIVE_RBV", "IOC liveness counter, +1 per real s", "count")
    sim_mode = pv_enum("SIM_STS", "Backend behind these PVs", ["SIMULATION", "HARDWARE"])
    message = pv_str("MSG_RBV", "Last message or rejection reason")

    def __init__(self, site: Site, inst: InstrumentConfig, clock: ObservatoryClock, **kwargs: Any):
        self.site = site
        self.inst = inst
        self.clock = clock
        self.dev = inst.dev
        self.log = logging.getLogger(f"obsctl.ioc.{inst.dev}")
        self.pacer = Pacer()
        self.autosave: Autosave | None = None  # set by the IOC runner when given an autosave directory
        self._autosave_task: asyncio.Task | None = None
        super().__init__(prefix=f"{site.pv_prefix}:{inst.dev}:", **kwargs)

    @alive.scan(period=1.0)
    async def alive(self, instance, async_lib):
        await instance.write(instance.value + 1, timestamp=self.clock.now())

    async def restore_settings(self) -> list[str]:
        """Write back the autosaved ``AUTOSAVE`` setpoints and keep saving them (after the power-on defaults).

        Returns the names restored ([] without an autosave directory).
        """
        if self.autosave is None or not self.AUTOSAVE:
            return []
        pvs = {name: self.pvdb[self.prefix + name] for name in self.AUTOSAVE}
        done = await self.autosave.restore(pvs)
        if done:
            await self.say(f"restored {len(done)} saved settings")
        self._autosave_task = asyncio.create_task(self.autosave.run(pvs))
        return done

    async def stop_autosave(self) -> None:
        """Stop saving settings; a change since the last periodic check is saved as the task ends."""
        task, self._autosave_task = self._autosave_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def wake_on_put(self, instance: Any, value: Any) -> Any:
        """Putter of a setpoint the IOC's loop paces itself by (``RATE_SP``): the new value applies at once."""
        self.pacer.wake()
        return value

    async def stamp(self, pv: Any, value: Any, **metadata: Any) -> None:
        """Write ``value`` to a PV instance with an observatory-clock timestamp (skips no-op scalars)."""
        await pv.write(value, timestamp=self.clock.now(), **metadata)

    async def say(self, text: str) -> None:
        """Publish a message (truncated to 39 characters) and log it."""
        self.log.info(text)
        await self.message.write(text[:39], timestamp=self.clock.now())

    async def reject(self, text: str) -> None:
        """Publish a rejection reason and raise :class:`InputError` so the client's put fails."""
        self.log.warning("rejected: %s", text)
        await self.message.write(text[:39], timestamp=self.clock.now())
        raise InputError(text)


# ---- server --------------------------------------------------------------------------------
async def _fill_record_fields(pvdb: dict[str, Any]) -> None:
    """Copy units into the EGU field of each record (caproto leaves it empty)."""
    for pv in pvdb.values():
        fields = getattr(pv, "field_inst", None)
        units = getattr(pv, "units", "")
        egu = getattr(fields, "engineering_units", None) if fields is not None else None
        if egu is not None and units:
            await egu.write(units)


def build_iocs(site: Site, devs: Sequence[str], clock: ObservatoryClock) -> list[ObsIOC]:
    """Instantiate the IOCs named by ``devs`` (device names from the site file)."""
    import importlib

    out = []
    for dev in devs:
        inst = site.instrument(dev)
        module = importlib.import_module(IOC_MODULES[inst.kind])
        out.append(module.make_ioc(site, inst, clock))
    return out


def merged_pvdb(iocs: Sequence[PVGroup]) -> dict[str, Any]:
    """One pvdb for several groups; duplicate names are an error."""
    pvdb: dict[str, Any] = {}
    for ioc in iocs:
        clash = set(pvdb) & set(ioc.pvdb)
        if clash:
            raise ValueError(f"duplicate PV names: {sorted(clash)[:5]}")
        pvdb.update(ioc.pvdb)
    return pvdb


class _Server(_CaprotoServer):
    """caproto's asyncio server with Nagle's algorithm off on every client circuit.

    caproto binds its listening socket with protocol 0, so asyncio does not switch TCP_NODELAY on for the
    sockets it accepts.  A monitor update written shortly after another (a sample block right after the
    previous one) then waits for the client's delayed acknowledgement, up to 40 ms on Linux.  The EPICS
    servers and libca switch Nagle off; so do these circuits.
    """

    async def tcp_handler(self, client: Any, addr: Any) -> None:
        sock = client.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await super().tcp_handler(client, addr)


async def serve(iocs: Sequence[PVGroup], interface: str = "127.0.0.1") -> None:
    """Serve the groups until SIGTERM/SIGINT; the port comes from EPICS_CA_SERVER_PORT."""
    pvdb = merged_pvdb(iocs)
    await _fill_record_fields(pvdb)
    loop = asyncio.get_running_loop()
    server_task = asyncio.create_task(_Server(pvdb, [interface]).run(log_pv_names=False))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    done_wait = asyncio.create_task(stop.wait())
    finished, _ = await asyncio.wait({server_task, done_wait}, return_when=asyncio.FIRST_COMPLETED)
    for ioc in iocs:
        if isinstance(ioc, ObsIOC):
            await ioc.stop_autosave()
        closer = getattr(ioc, "shutdown", None)
        if closer is not None:
            try:  # a link to an IOC already gone may not close cleanly; the process must still end
                await asyncio.wait_for(closer(), CLOSE_TIMEOUT_S)
            except TimeoutError:
                log.warning("%s: links not closed within %g s; exiting anyway", type(ioc).__name__, CLOSE_TIMEOUT_S)
    server_task.cancel()
    try:
        await server_task
    except asyncio.CancelledError:
        pass
    if server_task in finished and server_task.exception() is not None:
        raise server_task.exception()


def as_array(value: Any) -> np.ndarray:
    """A PV value (scalar or sequence) as a 1-D numpy array."""
    return np.atleast_1d(np.asarray(value))
