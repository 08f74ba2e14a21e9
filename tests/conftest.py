"""Test harness: real IOC subprocesses on loopback, talked to with pyepics (the C libca).

Channel Access is pinned to 127.0.0.1 with a block of free ports chosen once per test session (libca
reads its address list once per process).  Every test that needs IOCs starts its own observatory through
the real launcher with a unique PV prefix, so no test sees another's state.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from obsctl import launcher
from obsctl.ca import free_port_block
from obsctl.site import Site, load_site

N_PORTS = 8


@pytest.fixture(scope="session")
def ca_ports() -> Iterator[dict[str, int]]:
    """Session CA settings: repeater port and a block of IOC ports, exported for pyepics."""
    base = free_port_block(N_PORTS, 20000, 40000)
    rep = base - 1
    env = {
        "EPICS_CA_ADDR_LIST": " ".join(f"127.0.0.1:{p}" for p in range(base, base + N_PORTS)),
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_CA_REPEATER_PORT": str(rep),
        "EPICS_CA_SERVER_PORT": str(base),
        "EPICS_CA_MAX_ARRAY_BYTES": "10000000",
        "EPICS_CA_CONN_TMO": "5",
    }
    os.environ.update(env)
    repeater = subprocess.Popen([sys.executable, "-m", "caproto.commandline.repeater", "-q"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    import ophyd  # noqa: F401  (switches pyepics to the right libca before epics.ca is used)

    yield {"base": base, "repeater": rep}
    repeater.terminate()
    repeater.wait()


class Observatory:
    """A running test observatory: its site (with a unique prefix), state directory and PV helpers."""

    def __init__(self, site: Site, state_dir: Path, state: launcher.ObservatoryState):
        self.site = site
        self.state_dir = state_dir
        self.state = state

    def pv(self, dev: str, signal: str) -> str:
        """Full PV name of ``dev:signal`` in this observatory."""
        return self.site.pv(dev, signal)

    @property
    def log_text(self) -> str:
        """The observatory log so far."""
        return (self.state_dir / launcher.LOG_FILE).read_text()


_counter = itertools.count()


def _observatory_factory(ca_ports: dict[str, int], tmp_path: Path) -> Iterator[Callable[..., Observatory]]:
    started: list[Path] = []

    def start(only: list[str] | None = None, *, speed: float = 1.0, epoch: str = "now",
              site: Site | None = None, timeout: float = 60.0, **overrides) -> Observatory:
        prefix = f"T{next(_counter)}X{uuid.uuid4().hex[:6].upper()}"
        base_site = site or load_site()
        s = base_site.with_overrides(pv_prefix=prefix, **overrides)
        state_dir = tmp_path / f"obs-{prefix}"
        started.append(state_dir)
        state = launcher.start(s, state_dir, speed=speed, epoch=epoch, only=only,
                               base_port=ca_ports["base"], repeater_port=ca_ports["repeater"], timeout=timeout)
        return Observatory(s, state_dir, state)

    yield start
    for d in started:
        launcher.stop(d)


@pytest.fixture
def observatory(ca_ports, tmp_path) -> Iterator[Callable[..., Observatory]]:
    """Factory: ``observatory(["DRV", "WX"], speed=60, epoch="2026-11-21T20:00:00")`` starts IOCs."""
    yield from _observatory_factory(ca_ports, tmp_path)


@pytest.fixture(scope="module")
def module_observatory(ca_ports, tmp_path_factory) -> Iterator[Callable[..., Observatory]]:
    """As :func:`observatory`, but the IOCs live until the test module ends (share one for many checks)."""
    yield from _observatory_factory(ca_ports, tmp_path_factory.mktemp("obs"))


def wait_for(predicate: Callable[[], bool], timeout: float, poll: float = 0.05, what: str = "condition") -> None:
    """Poll ``predicate`` until true; fail the test naming ``what`` after ``timeout`` seconds."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)
