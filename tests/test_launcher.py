"""Launcher, supervisor and CLI: start, status, crash logging and restart, clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from obsctl import launcher
from obsctl.site import load_site
from tests.conftest import wait_for
from tests.helpers import get


def _obsctl(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "obsctl.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_plan_groups_and_ports():
    site = load_site()
    specs = launcher.plan_processes(site, base_port=5064, repeater_port=5065)
    names = [s.name for s in specs]
    assert names == ["TIME", "aux", "DRV", "RAD", "COR", "PSR"]
    assert next(s for s in specs if s.name == "aux").devs == ["WX", "NDI", "SYN1", "SYN2", "TMS", "SUB"]
    ports = [s.port for s in specs]
    assert 5065 not in ports and len(set(ports)) == len(ports)
    with pytest.raises(launcher.LauncherError, match="unknown instruments"):
        launcher.plan_processes(site, only=["NOPE"])


def test_clock_correction_file(tmp_path):
    """This computer's clock correction: stored, applied to the clients' clock, bad values and files refused."""
    state = launcher.ObservatoryState(site_file="", prefix="X", interface="127.0.0.1", repeater_port=5065,
                                      clock="1795000000.0,1700000000.0,60.0",
                                      processes=[launcher.ProcessSpec("TIME", ["TIME"], 5064)])
    assert launcher.clock_correction(tmp_path) == 0.0
    base = launcher.client_clock(tmp_path, state)
    launcher.set_clock_correction(tmp_path, 2.5, "test")
    corrected = launcher.client_clock(tmp_path, state)
    assert corrected.sim_time(1700000100.0) - base.sim_time(1700000100.0) == pytest.approx(2.5 * 60.0)
    assert launcher.client_env(tmp_path, state)["OBSCTL_CLOCK"] == corrected.to_env()
    assert state.client_env()["OBSCTL_CLOCK"] == state.clock  # the IOCs keep the observatory's clock
    for bad in (float("nan"), float("inf"), 2e5):
        with pytest.raises(ValueError, match="clock correction"):
            launcher.set_clock_correction(tmp_path, bad, "test")
    assert launcher.clock_correction(tmp_path) == 2.5
    path = tmp_path / launcher.CLOCK_CORRECTION_FILE
    for text in ("{", '{"real_offset_s": "soon"}', '{"other": 1}', '{"real_offset_s": 1e9}'):
        path.write_text(text)
        with pytest.raises(launcher.LauncherError, match="tsetp --reset"):
            launcher.clock_correction(tmp_path)
    launcher.set_clock_correction(tmp_path, 0.0, "test")
    assert not path.exists() and launcher.clock_correction(tmp_path) == 0.0


def test_crash_is_logged_and_ioc_restarted(observatory):
    obs = observatory(["TIME"])
    spec = obs.state.processes[0]
    first = get(obs.pv("TIME", "ALIVE_RBV"))
    assert first >= 0
    os.kill(spec.pid, signal.SIGKILL)
    wait_for(lambda: "crash TIME" in obs.log_text, 10, what="crash logged")
    wait_for(lambda: launcher.ObservatoryState.load(obs.state_dir).processes[0].restarts == 1, 10,
             what="restart recorded")
    new_pid = launcher.ObservatoryState.load(obs.state_dir).processes[0].pid
    assert new_pid != spec.pid and launcher.pid_alive(new_pid)
    wait_for(lambda: launcher.status(obs.state_dir)[0]["alive"], 10, what="restarted IOC alive")
    # the restarted IOC answers again over CA
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            get(obs.pv("TIME", "UTC_RBV"))
            break
        except AssertionError:
            time.sleep(0.2)
    else:
        pytest.fail("restarted IOC never answered")
    assert launcher.stop(obs.state_dir)
    assert not launcher.pid_alive(new_pid)
    log = (obs.state_dir / launcher.LOG_FILE).read_text()
    assert "start TIME" in log and "stop TIME" in log and "observatory down" in log


def test_second_start_refused_and_ports_checked(observatory, ca_ports, tmp_path):
    obs = observatory(["TIME"])
    with pytest.raises(launcher.LauncherError, match="already running"):
        launcher.start(obs.site, obs.state_dir, only=["TIME"], base_port=ca_ports["base"],
                       repeater_port=ca_ports["repeater"])
    with pytest.raises(launcher.LauncherError, match="in use"):
        launcher.start(obs.site, tmp_path / "other", only=["TIME"], base_port=ca_ports["base"],
                       repeater_port=ca_ports["repeater"])


def test_cli_up_status_env_down(ca_ports, tmp_path):
    state = tmp_path / "state"
    env = {"OBSCTL_STATE_DIR": str(state)}
    up = _obsctl("up", "--only", "TIME,WX", "--prefix", "CLITEST", "--port", str(ca_ports["base"]), env=env)
    try:
        assert up.returncode == 0, up.stderr
        assert "every PV connected" in up.stdout
        st = _obsctl("status", "--json", env=env)
        assert st.returncode == 0, st.stdout + st.stderr
        data = json.loads(st.stdout)
        assert data["supervisor"] == "running"
        assert {p["process"] for p in data["processes"]} == {"TIME", "aux"}
        assert all(p["health"] == "ok" and p["alive"] for p in data["processes"])
        envout = _obsctl("env", env=env).stdout
        assert f"127.0.0.1:{ca_ports['base']}" in envout and "EPICS_CA_AUTO_ADDR_LIST='NO'" in envout
    finally:
        down = _obsctl("down", env=env)
    assert down.returncode == 0 and "stopped" in down.stdout
    st = _obsctl("status", env=env)
    assert st.returncode == 2 and "no observatory is running" in st.stderr
    log = (state / launcher.LOG_FILE).read_text()
    for word in ("obsctl up", "obsctl status", "obsctl down requested", "observatory down"):
        assert word in log


def test_cli_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n')
    r = _obsctl("site", str(bad))
    assert r.returncode == 2 and "pv_prefix" in r.stderr and "Field required" in r.stderr
    r = _obsctl("up", "--only", "NOPE", env={"OBSCTL_STATE_DIR": str(tmp_path / "s")})
    assert r.returncode == 2 and "unknown instruments" in r.stderr
    r = _obsctl("up", "--start", "not-a-date", "--only", "TIME", env={"OBSCTL_STATE_DIR": str(tmp_path / "t")})
    assert r.returncode == 2 and "not an ISO-8601" in r.stderr
    assert _obsctl("--help").returncode == 0
