"""Bring the simulated observatory up, check it, take it down.

Process layout: one IOC process per instrument, except the low-rate instruments that the site file puts in
a shared ``process`` group (the reference site groups WX, NDI, SYN1, SYN2 and TMS as ``aux``).  Separate
processes isolate crashes and let one IOC be restarted alone (the radiometer during a scan) and spread
the fast IOCs (drive, radiometer, correlator) over the cores; grouping the slow ones saves start-up time.

Each process serves Channel Access on its own UDP/TCP port on loopback (``server_port``, +1, ... skipping
the repeater port), because several servers sharing one port are found unreliably by unicast searches.
Clients list every port in ``EPICS_CA_ADDR_LIST``; ``obsctl env`` prints the settings.

A detached supervisor (``python -m iocs.supervisor``) owns the IOC processes: it logs start-ups,
shutdowns and crashes to ``<state dir>/obsctl.log`` and restarts a crashed IOC.  The state directory holds
``observatory.json`` (ports, pids, clock) and one log per IOC process.

The clients of this computer (programs, sessions, the panel) read the observatory clock through
:func:`client_clock`, which adds this computer's clock correction (``clock-correction.json``, set by
``obsctl tsetp`` against station time; none when the observatory starts).  The IOCs keep the clock the
observatory started with: station time (TIME) is the reference the correction is measured against.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from obsctl.clock import ObservatoryClock
from obsctl.site import Site

STATE_FILE = "observatory.json"
LOG_FILE = "obsctl.log"
CLOCK_CORRECTION_FILE = "clock-correction.json"
MAX_CLOCK_CORRECTION_S = 86400.0  # real s


class LauncherError(RuntimeError):
    """The observatory could not be started, reached or stopped (the message says why)."""


def default_state_dir() -> Path:
    """``$OBSCTL_STATE_DIR`` or ``$XDG_STATE_HOME/obsctl`` (``~/.local/state/obsctl``)."""
    env = os.environ.get("OBSCTL_STATE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "obsctl"


@dataclass
class ProcessSpec:
    """One IOC process: its group name, the devices it serves and its CA port."""

    name: str
    devs: list[str]
    port: int
    pid: int = 0
    restarts: int = 0


@dataclass
class ObservatoryState:
    """What ``obsctl up`` started (persisted as JSON in the state directory)."""

    site_file: str
    prefix: str
    interface: str
    repeater_port: int
    clock: str
    processes: list[ProcessSpec]
    supervisor_pid: int = 0
    started_real: float = 0.0
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def addr_list(self) -> str:
        """Value of EPICS_CA_ADDR_LIST reaching every IOC process."""
        return " ".join(f"{self.interface}:{p.port}" for p in self.processes)

    def client_env(self) -> dict[str, str]:
        """Environment a CA client needs to reach this observatory."""
        return {
            "EPICS_CA_ADDR_LIST": self.addr_list,
            "EPICS_CA_AUTO_ADDR_LIST": "NO",
            "EPICS_CA_REPEATER_PORT": str(self.repeater_port),
            "EPICS_CA_SERVER_PORT": str(self.processes[0].port),
            "OBSCTL_CLOCK": self.clock,
        }

    def server_env(self, spec: ProcessSpec) -> dict[str, str]:
        """Environment of one IOC process."""
        env = self.client_env()
        env.update({
            "EPICS_CA_SERVER_PORT": str(spec.port),
            "EPICS_CAS_INTF_ADDR_LIST": self.interface,
            "EPICS_CAS_BEACON_ADDR_LIST": self.interface,
            "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
            "EPICS_CAS_BEACON_PORT": str(self.repeater_port),
            "EPICS_CA_MAX_ARRAY_BYTES": "10000000",
        })
        env.update(self.extra_env)
        return env

    def save(self, state_dir: Path) -> None:
        """Write the state atomically."""
        tmp = state_dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        tmp.replace(state_dir / STATE_FILE)

    @classmethod
    def load(cls, state_dir: Path) -> ObservatoryState:
        """Read the state; LauncherError if nothing was started there."""
        path = Path(state_dir) / STATE_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise LauncherError(f"no observatory is running from {state_dir} (no {STATE_FILE})") from None
        data["processes"] = [ProcessSpec(**p) for p in data["processes"]]
        return cls(**data)


def clock_correction(state_dir: Path) -> float:
    """Real seconds this computer's clients add to the system clock (0 when none is set).

    LauncherError if the correction file cannot be read or holds no usable value.
    """
    path = Path(state_dir) / CLOCK_CORRECTION_FILE
    try:
        value = json.loads(path.read_text())["real_offset_s"]
    except FileNotFoundError:
        return 0.0
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise LauncherError(f"clock correction {path} is unreadable ({err}); "
                            "'obsctl tsetp --reset' clears it") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not abs(value) <= MAX_CLOCK_CORRECTION_S:
        raise LauncherError(f"clock correction {path}: real_offset_s {value!r} is not a number of seconds within "
                            f"+-{MAX_CLOCK_CORRECTION_S:g}; 'obsctl tsetp --reset' clears it")
    return float(value)


def set_clock_correction(state_dir: Path, real_offset_s: float, how: str) -> None:
    """Store this computer's clock correction (real s; 0 removes it); ``how`` says where it came from.

    ValueError (nothing written) if the value is not finite or beyond +-MAX_CLOCK_CORRECTION_S.
    """
    if not abs(real_offset_s) <= MAX_CLOCK_CORRECTION_S:
        raise ValueError(f"clock correction {real_offset_s!r} s: must be within +-{MAX_CLOCK_CORRECTION_S:g} s")
    path = Path(state_dir) / CLOCK_CORRECTION_FILE
    if real_offset_s == 0.0:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"real_offset_s": float(real_offset_s), "set_real": time.time(), "how": how}))
    tmp.replace(path)


def client_clock(state_dir: Path, state: ObservatoryState) -> ObservatoryClock:
    """The observatory clock of this computer's clients: the observatory's, with the clock correction."""
    return ObservatoryClock.from_env({"OBSCTL_CLOCK": state.clock}).corrected(clock_correction(state_dir))


def client_env(state_dir: Path, state: ObservatoryState) -> dict[str, str]:
    """Environment of a client of this computer: Channel Access settings and the corrected clock."""
    return {**state.client_env(), "OBSCTL_CLOCK": client_clock(state_dir, state).to_env()}


def plan_processes(site: Site, only: list[str] | None = None, base_port: int | None = None,
                   repeater_port: int | None = None) -> list[ProcessSpec]:
    """Group the site's instruments into processes and give each its port."""
    wanted = [i for i in site.instruments if not only or i.dev in only]
    if only:
        missing = sorted(set(only) - {i.dev for i in site.instruments})
        if missing:
            raise LauncherError(f"unknown instruments {missing}; site has {[i.dev for i in site.instruments]}")
    groups: dict[str, list[str]] = {}
    for inst in wanted:
        groups.setdefault(inst.process or inst.dev, []).append(inst.dev)
    port = base_port if base_port is not None else site.ca.server_port
    rep = repeater_port if repeater_port is not None else site.ca.repeater_port
    specs = []
    for name, devs in groups.items():
        if port == rep:
            port += 1
        specs.append(ProcessSpec(name=name, devs=devs, port=port))
        port += 1
    return specs


def port_free(port: int, interface: str = "127.0.0.1") -> bool:
    """Whether a UDP port can be bound on ``interface`` (nobody serves CA there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((interface, port))
        except OSError:
            return False
    return True


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (and is not a zombie)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def log_event(state_dir: Path, text: str) -> None:
    """Append a time-stamped line to the observatory log."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"
    with (Path(state_dir) / LOG_FILE).open("a") as fh:
        fh.write(f"{stamp} {text}\n")


def start(site: Site, state_dir: Path, *, speed: float | None = None, epoch: str | None = None,
          only: list[str] | None = None, base_port: int | None = None, repeater_port: int | None = None,
          timeout: float = 60.0, extra_env: dict[str, str] | None = None) -> ObservatoryState:
    """Start the supervisor and every IOC; return once every PV answers (LauncherError otherwise)."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        old = ObservatoryState.load(state_dir)
        if pid_alive(old.supervisor_pid):
            raise LauncherError(f"an observatory is already running from {state_dir} "
                                f"(supervisor pid {old.supervisor_pid}); run 'obsctl down' first")
    except LauncherError as err:
        if "already running" in str(err):
            raise
    specs = plan_processes(site, only, base_port, repeater_port)
    busy = [s.port for s in specs if not port_free(s.port, site.ca.interface)]
    if busy:
        raise LauncherError(f"CA ports {busy} are in use on {site.ca.interface}: another observatory or "
                            "IOC is running; stop it or choose --port")
    clock = ObservatoryClock.start(epoch or site.clock.start, speed or site.clock.speed)
    state = ObservatoryState(
        site_file=site.source_file, prefix=site.pv_prefix, interface=site.ca.interface,
        repeater_port=repeater_port if repeater_port is not None else site.ca.repeater_port,
        clock=clock.to_env(), processes=specs, started_real=time.time(), extra_env=dict(extra_env or {}))
    for f in state_dir.glob("pvs-*.json"):
        f.unlink()
    set_clock_correction(state_dir, 0.0, "observatory started")  # a new clock: no correction measured yet
    state.save(state_dir)
    log = (state_dir / "supervisor.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "iocs.supervisor", "--state-dir", str(state_dir)],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    log.close()
    state.supervisor_pid = proc.pid
    try:
        wait_ready(state_dir, timeout=timeout, supervisor=proc)
    except LauncherError:
        stop(state_dir)
        raise
    return ObservatoryState.load(state_dir)


def served_pvs(state_dir: Path) -> list[str]:
    """Every PV name the running IOC processes reported serving."""
    names: list[str] = []
    for f in sorted(Path(state_dir).glob("pvs-*.json")):
        names.extend(json.loads(f.read_text())["pvs"])
    return names


def wait_ready(state_dir: Path, timeout: float = 60.0, supervisor: subprocess.Popen | None = None) -> float:
    """Wait until every IOC process has started and each of its PVs connects; return seconds taken."""
    t0 = time.monotonic()
    state_dir = Path(state_dir)
    state = ObservatoryState.load(state_dir)
    expected = {p.name for p in state.processes}
    while True:
        have = {f.stem.removeprefix("pvs-") for f in state_dir.glob("pvs-*.json")}
        if expected <= have:
            break
        crashed = _crashed_before_ready(state_dir, expected - have)
        if crashed:
            raise LauncherError(f"IOC process {crashed[0]} failed to start: {crashed[1]}")
        if supervisor is not None and supervisor.poll() is not None:
            raise LauncherError(f"supervisor exited with code {supervisor.returncode}; see "
                                f"{state_dir / 'supervisor.log'}")
        if time.monotonic() - t0 > timeout:
            raise LauncherError(f"IOC processes {sorted(expected - have)} did not start within {timeout} s; "
                                f"see {state_dir}/ioc-*.log")
        time.sleep(0.05)
    from obsctl import ca  # noqa: PLC0415  (pyepics needs the environment first)

    names = served_pvs(state_dir)
    ca_env = {k: v for k, v in state.client_env().items() if k.startswith("EPICS_")}  # not this caller's clock
    missing = ca.connect_all(names, ca_env, timeout=max(1.0, timeout - (time.monotonic() - t0)))
    if missing:
        raise LauncherError(f"{len(missing)} PVs did not connect, e.g. {missing[:5]}")
    return time.monotonic() - t0


def _crashed_before_ready(state_dir: Path, pending: set[str]) -> tuple[str, str] | None:
    """(process, last output) of a pending IOC process that already crashed, else None."""
    try:
        lines = (state_dir / LOG_FILE).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[1] == "crash" and parts[2].rstrip(":") in pending:
            return parts[2].rstrip(":"), parts[3]
    return None


def stop(state_dir: Path, timeout: float = 15.0) -> bool:
    """Stop the supervisor (which stops its IOCs); return False if nothing was running."""
    state_dir = Path(state_dir)
    try:
        state = ObservatoryState.load(state_dir)
    except LauncherError:
        return False
    pid = state.supervisor_pid
    running = pid_alive(pid)
    if running:
        os.kill(pid, signal.SIGTERM)
        t0 = time.monotonic()
        while pid_alive(pid) and time.monotonic() - t0 < timeout:
            time.sleep(0.05)
        if pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)
            log_event(state_dir, f"supervisor {pid} did not stop in {timeout} s: killed")
    for spec in state.processes:  # anything the supervisor could not stop
        if spec.pid and pid_alive(spec.pid):
            os.kill(spec.pid, signal.SIGKILL)
            log_event(state_dir, f"{spec.name}: pid {spec.pid} left behind: killed")
    (state_dir / STATE_FILE).rename(state_dir / (STATE_FILE + ".last"))
    return running


def status(state_dir: Path) -> list[dict[str, object]]:
    """One row per IOC process: name, devices, port, pid, alive, restarts, PVs."""
    state = ObservatoryState.load(Path(state_dir))
    rows = []
    for spec in state.processes:
        pv_file = Path(state_dir) / f"pvs-{spec.name}.json"
        npv = len(json.loads(pv_file.read_text())["pvs"]) if pv_file.exists() else 0
        rows.append({"process": spec.name, "devices": " ".join(spec.devs), "port": spec.port,
                     "pid": spec.pid, "alive": pid_alive(spec.pid), "restarts": spec.restarts, "pvs": npv})
    return rows
