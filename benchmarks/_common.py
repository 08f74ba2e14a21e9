"""Shared set-up for benchmark scripts: hermetic loopback CA settings on free ports."""

from __future__ import annotations

import os
import random
import socket


def free_base_port(n: int = 8) -> int:
    """A base port with base-1 .. base+n-1 free on 127.0.0.1 (UDP and TCP)."""
    for _ in range(200):
        base = random.randrange(41000, 60000)
        ok = True
        for p in range(base - 1, base + n):
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                with socket.socket(socket.AF_INET, kind) as s:
                    try:
                        s.bind(("127.0.0.1", p))
                    except OSError:
                        ok = False
        if ok:
            return base
    raise RuntimeError("no free port block")


def hermetic_env(base: int, n: int = 8) -> dict[str, str]:
    """CA client environment for IOCs on ports base..base+n-1, repeater on base-1."""
    env = {
        "EPICS_CA_ADDR_LIST": " ".join(f"127.0.0.1:{p}" for p in range(base, base + n)),
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_CA_REPEATER_PORT": str(base - 1),
        "EPICS_CA_MAX_ARRAY_BYTES": "10000000",
    }
    os.environ.update(env)
    return env
