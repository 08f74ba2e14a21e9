"""Input links between IOCs over Channel Access (like an EPICS ``INP`` link with CP).

An IOC that needs another instrument's values (the drive needs the weather; the radiometer needs
the drive position and the noise diodes) monitors them with caproto's asyncio client.  A
:class:`CALink` keeps the latest value and timestamp of each PV and whether it is connected; readers
fall back to a documented default while a link is down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from caproto.asyncio.client import Context

log = logging.getLogger("obsctl.ioc.link")


@dataclass
class LinkValue:
    """Latest monitor update of one PV."""

    value: Any = None
    timestamp: float = 0.0
    connected: bool = False
    updates: int = 0


class CALink:
    """Monitor a set of PVs from inside an IOC.

    Parameters
    ----------
    names : iterable of str
        Full PV names.
    on_update : callable, optional
        ``on_update(name, LinkValue)`` called on every monitor update, in arrival order, on the event loop
        (keep it fast).  Coroutine callbacks are used because caproto runs plain ones in a thread pool,
        concurrently and possibly out of order.
    """

    def __init__(self, names: Iterable[str], on_update: Callable[[str, LinkValue], None] | None = None):
        self.names = list(names)
        self.values: dict[str, LinkValue] = {n: LinkValue() for n in self.names}
        self.on_update = on_update
        self._ctx: Context | None = None
        self._subs: list[Any] = []  # strong references: caproto holds callbacks weakly
        self._pvs: dict[str, Any] = {}

    async def start(self) -> None:
        """Search and subscribe (returns at once; connections complete in the background)."""
        self._ctx = Context()
        pvs = await self._ctx.get_pvs(*self.names, connection_state_callback=self._conn, timeout=None)
        for pv in pvs:
            self._pvs[pv.name] = pv
            sub = pv.subscribe(data_type="time")
            sub.add_callback(self._update)
            self._subs.append(sub)
        self._callbacks = (self._update, self._conn)

    async def _conn(self, pv: Any, state: str) -> None:
        lv = self.values.get(pv.name)
        if lv is not None:
            lv.connected = state == "connected"
            if not lv.connected:
                log.info("link %s %s", pv.name, state)

    async def _update(self, sub: Any, response: Any) -> None:
        name = sub.pv.name
        lv = self.values[name]
        data = response.data
        lv.value = data[0] if len(data) == 1 and not isinstance(data, (str, bytes)) else np.asarray(data)
        if isinstance(lv.value, bytes):
            lv.value = lv.value.decode()
        lv.timestamp = response.metadata.timestamp
        lv.connected = True
        lv.updates += 1
        if self.on_update is not None:
            self.on_update(name, lv)

    def get(self, name: str, default: Any = None) -> Any:
        """Latest value of ``name``, or ``default`` if never received or disconnected."""
        lv = self.values[name]
        return lv.value if lv.connected and lv.updates else default

    def connected(self, name: str | None = None) -> bool:
        """Whether ``name`` (or every linked PV) is connected and has a value."""
        items = [self.values[name]] if name else list(self.values.values())
        return all(v.connected and v.updates for v in items)

    async def write(self, name: str, value: Any) -> None:
        """Write to a linked PV (used for output links, e.g. the drive stowing on wind)."""
        pv = self._pvs[name]
        await pv.write(value, wait=False)

    async def stop(self) -> None:
        """Disconnect the client context."""
        if self._ctx is not None:
            await self._ctx.disconnect()
            self._ctx = None
