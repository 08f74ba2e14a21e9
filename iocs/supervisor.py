"""Supervisor of the IOC processes: start, watch, restart on crash, stop on SIGTERM.

Run by :func:`obsctl.launcher.start` as a detached process (``python -m iocs.supervisor``); it reads and
updates ``<state dir>/observatory.json`` and appends every start-up, shutdown and crash to ``obsctl.log``.
A crashed IOC is restarted after one second, at most five times in ten minutes.

Start-up cost is dominated by imports (caproto, numpy, astropy) and by loading the IERS tables, catalogs and
ephemerides.  The supervisor does that once, then forks each IOC process from its warm state, so the fleet
starts in a fraction of the time N fresh interpreters would take; each IOC is still its own process, with its
own port, log and pid.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from iocs.common import IOC_MODULES
from obsctl.launcher import ObservatoryState, log_event
from obsctl.site import load_site

RESTART_DELAY_S = 1.0
MAX_RESTARTS = 5
RESTART_WINDOW_S = 600.0


class ForkedIOC:
    """An IOC process forked from the supervisor, with the Popen methods the supervisor uses."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path):
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # child: never returns
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                os.close(fd)
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                os.close(null)
                os.environ.update(env)
                from iocs.__main__ import main

                code = main(args)
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else 1
            finally:  # the child must always reach os._exit; report whatever escaped main()
                if sys.exc_info()[0] not in (None, SystemExit):
                    traceback.print_exc()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """Exit code if the process ended, else None."""
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def terminate(self) -> None:
        """Send SIGTERM."""
        if self.poll() is None:
            os.kill(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        """Send SIGKILL."""
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit code; subprocess.TimeoutExpired after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
            time.sleep(0.02)
        return self.returncode


def warm_up(site_file: str | None) -> None:
    """Import every IOC module of the site and load the shared astronomy tables before forking."""
    from obsctl import astro
    from obsctl.catalog import load_catalog

    site = load_site(site_file or None)
    for kind in {i.kind for i in site.instruments}:
        importlib.import_module(IOC_MODULES[kind])
    loc = astro.site_location(site)
    now = time.time()
    astro.lst_deg(now, loc)  # IERS tables
    astro.ut1_minus_utc(now)
    astro.body_coord("sun", now, loc)  # ephemeris
    load_catalog(site.catalog_path)


class Supervisor:
    """Owns the repeater and the IOC processes of one observatory."""

    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.state = ObservatoryState.load(state_dir)
        self.procs: dict[str, ForkedIOC] = {}
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
        args = [*spec.devs, "--prefix", self.state.prefix, "--pv-list", str(self.state_dir / f"pvs-{name}.json"),
                "--autosave", str(self.state_dir / "autosave")]
        if self.state.site_file:
            args += ["--site", self.state.site_file]
        proc = ForkedIOC(args, self.state.server_env(spec), self.state_dir / f"ioc-{name}.log")
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
        # settings are kept across restarts of an IOC while the observatory is up; a new start begins from
        # the site's defaults
        shutil.rmtree(self.state_dir / "autosave", ignore_errors=True)
        self._spawn_repeater()
        warm_up(self.state.site_file)
        for spec in self.state.processes:
            if not self.stopping:
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
        if self.stopping:
            return
        spec.restarts += 1
        self._spawn(name)

    def _on_term(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _shutdown(self) -> None:
        for proc in self.procs.values():
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
    """Entry point of ``python -m iocs.supervisor``."""
    ap = argparse.ArgumentParser(prog="python -m iocs.supervisor")
    ap.add_argument("--state-dir", required=True)
    args = ap.parse_args(argv)
    return Supervisor(Path(args.state_dir)).run()


if __name__ == "__main__":
    sys.exit(main())
