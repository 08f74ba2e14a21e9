"""Supervisor of the IOC processes: start, watch, restart on crash, stop on SIGTERM.

Run by :func:`obsctl.launcher.start` as a detached process; it reads and updates
``<state dir>/observatory.json`` and appends every start-up, shutdown and crash to ``obsctl.log``.
A crashed IOC is restarted after one second, at most five times in ten minutes.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from obsctl.launcher import ObservatoryState, log_event

RESTART_DELAY_S = 1.0
MAX_RESTARTS = 5
RESTART_WINDOW_S = 600.0


class Supervisor:
    """Owns the repeater and the IOC processes of one observatory."""

    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.state = ObservatoryState.load(state_dir)
        self.procs: dict[str, subprocess.Popen] = {}
        self.crash_times: dict[str, list[float]] = {}
        self.repeater: subprocess.Popen | None = None
        self.stopping = False

    def _spawn_repeater(self) -> None:
        env = {**os.environ, **self.state.client_env()}
        log = (self.state_dir / "repeater.log").open("ab")
        self.repeater = subprocess.Popen([sys.executable, "-m", "caproto.commandline.repeater", "-q"],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        log.close()

    def _spawn(self, name: str) -> None:
        spec = next(p for p in self.state.processes if p.name == name)
        env = {**os.environ, **self.state.server_env(spec)}
        cmd = [sys.executable, "-m", "iocs", *spec.devs, "--prefix", self.state.prefix,
               "--pv-list", str(self.state_dir / f"pvs-{name}.json")]
        if self.state.site_file:
            cmd += ["--site", self.state.site_file]
        log = (self.state_dir / f"ioc-{name}.log").open("ab")
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        log.close()
        self.procs[name] = proc
        spec.pid = proc.pid
        self.state.save(self.state_dir)
        log_event(self.state_dir, f"start {name} ({' '.join(spec.devs)}) pid {proc.pid} port {spec.port}")

    def run(self) -> int:
        """Start everything and watch until SIGTERM; returns the exit code."""
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        self.state.supervisor_pid = os.getpid()
        self.state.save(self.state_dir)
        log_event(self.state_dir, f"observatory up: supervisor pid {os.getpid()}, clock {self.state.clock}")
        self._spawn_repeater()
        for spec in self.state.processes:
            self._spawn(spec.name)
        while not self.stopping:
            for name, proc in list(self.procs.items()):
                code = proc.poll()
                if code is None or self.stopping:
                    continue
                self._crashed(name, code)
            time.sleep(0.1)
        self._shutdown()
        return 0

    def _crashed(self, name: str, code: int) -> None:
        now = time.time()
        times = [t for t in self.crash_times.get(name, []) if now - t < RESTART_WINDOW_S] + [now]
        self.crash_times[name] = times
        tail = _tail(self.state_dir / f"ioc-{name}.log")
        log_event(self.state_dir, f"crash {name}: exit code {code}; last output: {tail}")
        spec = next(p for p in self.state.processes if p.name == name)
        if len(times) > MAX_RESTARTS:
            log_event(self.state_dir, f"{name} crashed {len(times)} times in {RESTART_WINDOW_S:.0f} s: "
                                      "not restarting")
            del self.procs[name]
            spec.pid = 0
            self.state.save(self.state_dir)
            return
        time.sleep(RESTART_DELAY_S)
        spec.restarts += 1
        self._spawn(name)

    def _on_term(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _shutdown(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 5.0
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                log_event(self.state_dir, f"stop {name}: exit code {proc.returncode}")
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                log_event(self.state_dir, f"stop {name}: did not exit in 5 s, killed")
        if self.repeater is not None:
            self.repeater.terminate()
            self.repeater.wait()
        log_event(self.state_dir, "observatory down")


def _tail(path: Path, n: int = 300) -> str:
    try:
        data = path.read_bytes()[-n:]
    except OSError:
        return "(no log)"
    return data.decode(errors="replace").strip().replace("\n", " | ")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m obsctl.supervisor``."""
    ap = argparse.ArgumentParser(prog="python -m obsctl.supervisor")
    ap.add_argument("--state-dir", required=True)
    args = ap.parse_args(argv)
    return Supervisor(Path(args.state_dir)).run()


if __name__ == "__main__":
    sys.exit(main())
