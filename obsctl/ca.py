"""Channel Access client helpers for the command line (pyepics, the C libca).

libca reads the EPICS_CA_* environment once, when its context is created; :func:`use_env` must run
before the first PV is touched in a process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable


def use_env(env: dict[str, str]) -> None:
    """Put the observatory's CA settings into this process's environment (before pyepics starts)."""
    os.environ.update(env)


def connect_all(names: Iterable[str], env: dict[str, str] | None = None, timeout: float = 10.0) -> list[str]:
    """Connect to every PV; return the names that did not connect within ``timeout`` seconds."""
    if env:
        use_env(env)
    import epics  # noqa: PLC0415

    pvs = [epics.PV(n, auto_monitor=False, connection_timeout=timeout) for n in names]
    deadline = time.monotonic() + timeout
    pending = list(pvs)
    while pending and time.monotonic() < deadline:
        epics.ca.poll(0.02)
        pending = [p for p in pending if not p.connected]
    missing = [p.pvname for p in pending]
    for p in pvs:
        p.disconnect()
    return missing
