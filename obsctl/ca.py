"""Channel Access client helpers for the command line (pyepics, the C libca).

libca reads the EPICS_CA_* environment once, when its context is created; :func:`use_env` must run
before the first PV is touched in a process.
"""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Iterable


def use_env(env: dict[str, str]) -> None:
    """Put the observatory's CA settings into this process's environment (before pyepics starts).

    The address list is merged with any already set, so a process that watches several observatories (or a
    test session that set a wider list first) keeps reaching all of them.
    """
    env = dict(env)
    addrs = env.pop("EPICS_CA_ADDR_LIST", "")
    have = os.environ.get("EPICS_CA_ADDR_LIST", "").split()
    merged = have + [a for a in addrs.split() if a not in have]
    os.environ.update(env)
    if merged:
        os.environ["EPICS_CA_ADDR_LIST"] = " ".join(merged)


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


def free_port_block(n: int, low: int = 20000, high: int = 60000, interface: str = "127.0.0.1") -> int:
    """A base port B such that B-1 (for the repeater) .. B+n-1 are free for UDP and TCP on ``interface``."""
    for _ in range(200):
        base = random.randrange(low + 1, high - n)
        if all(_bindable(p, kind, interface) for p in range(base - 1, base + n)
               for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM)):
            return base
    raise RuntimeError(f"no block of {n + 1} free ports between {low} and {high}")


def _bindable(port: int, kind: int, interface: str) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((interface, port))
        except OSError:
            return False
    return True
