"""Autosave: an IOC's settings survive a restart, as EPICS autosave keeps records' values across reboots.

An IOC names the setpoints worth keeping (``ObsIOC.AUTOSAVE``, PV names without prefix).  With an autosave
directory (``python -m iocs --autosave DIR``; the supervisor gives ``<state dir>/autosave``) the IOC writes
their values to ``DIR/<DEV>.json`` whenever one has changed (checked every ``period_s`` real seconds; the file
is replaced atomically) and, when it starts again, writes the saved values back through the PVs' own
validation (:meth:`Autosave.restore`), after its power-on defaults.  A value the IOC now refuses (the site
changed) is skipped with a warning; an unreadable file is set aside as ``.bad`` and the IOC starts with
its defaults.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("obsctl.ioc.autosave")


class Autosave:
    """The saved settings of one IOC: ``DIR/<dev>.json`` holding ``{pv name: value}``."""

    def __init__(self, directory: Path | str, dev: str, period_s: float = 1.0):
        self.path = Path(directory) / f"{dev}.json"
        self.period_s = float(period_s)
        self._last: dict[str, Any] | None = None

    def load(self) -> dict[str, Any]:
        """The saved values ({} when nothing was saved; an unreadable file is renamed ``.bad``)."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            bad = self.path.with_suffix(".bad")
            log.warning("%s unreadable (%s); set aside as %s, starting from defaults", self.path, err, bad.name)
            self.path.replace(bad)
            return {}
        if not isinstance(data, dict):
            log.warning("%s holds no settings table; ignored", self.path)
            return {}
        return data

    async def restore(self, pvs: Mapping[str, Any]) -> list[str]:
        """Write the saved values to ``pvs`` (name -> PV instance); returns the names restored."""
        done = []
        for name, value in self.load().items():
            pv = pvs.get(name)
            if pv is None:
                log.warning("%s: %s is no longer saved; ignored", self.path.name, name)
                continue
            if pv.value == value:
                done.append(name)
                continue
            try:
                await pv.write(value)
            except Exception as err:  # noqa: BLE001  (the PV's own validation refused it: keep the default)
                log.warning("%s: %s = %r refused (%s); keeping %r", self.path.name, name, value, err, pv.value)
                continue
            done.append(name)
        self._last = self.snapshot(pvs)
        return done

    @staticmethod
    def snapshot(pvs: Mapping[str, Any]) -> dict[str, Any]:
        """Current values, JSON-ready."""
        out = {}
        for name, pv in pvs.items():
            v = pv.value
            out[name] = v.item() if hasattr(v, "item") else v
        return out

    def save(self, values: dict[str, Any]) -> None:
        """Write ``values`` atomically (temporary file, fsync, rename)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w") as f:
            json.dump(values, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)
        self._last = values

    async def run(self, pvs: Mapping[str, Any]) -> None:
        """Save whenever a value changed, every ``period_s`` real seconds, until cancelled.

        Cancelled (the IOC shutting down), it saves a change made since the last check.
        """
        try:
            while True:
                self.save_if_changed(pvs)
                await asyncio.sleep(self.period_s)
        finally:
            self.save_if_changed(pvs)

    def save_if_changed(self, pvs: Mapping[str, Any]) -> None:
        """Save the current values if they differ from the last saved (a failure is logged, not raised)."""
        now = self.snapshot(pvs)
        if now != self._last:
            try:
                self.save(now)
            except OSError as err:
                log.warning("cannot save %s: %s", self.path, err)
