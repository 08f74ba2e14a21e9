"""Shared set-up for benchmark scripts: hermetic loopback CA settings on free ports."""

from __future__ import annotations

import os

from obsctl.ca import free_port_block


def free_base_port(n: int = 8) -> int:
    """A base port with base-1 .. base+n-1 free on 127.0.0.1 (UDP and TCP), above the test suite's range."""
    return free_port_block(n, 41000, 60000)


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
