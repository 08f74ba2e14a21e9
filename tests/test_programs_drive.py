"""The NCCS test programs that talk to the drive, time and weather (ANGLE, HADC, DODECDN, MONI, MANDR, ZE,
FDVM, THUM, TSETP), run as ``obsctl`` subprocesses against one real observatory (module scope).

Readouts are checked against the PVs themselves: a recorder in this process keeps every monitor update
(time stamp, value) of the PVs a program reads, and each JSON record of a program must equal the update
with the same observatory time stamp (a control cycle of the drive, a weather reading).
"""

from __future__ import annotations

import csv
import json
import math
import os
import pty
import select
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from obsctl import launcher
from obsctl.clock import ObservatoryClock
from obsctl.site import load_site
from tests.conftest import Observatory, wait_for
from tests.helpers import Recorder, get, put

NIGHT = "2026-11-21T20:00:00"  # sun well below the horizon at the reference site
PROGRAMS = ("angle", "hadc", "dodecdn", "moni", "mandr", "ze", "fdvm", "thum", "tsetp")
_BIN = Path(sys.executable).with_name("obsctl")
OBSCTL = [str(_BIN)] if _BIN.exists() else [sys.executable, "-m", "obsctl.cli"]
SIDEREAL_DEG_S = 360.0 * 1.002737909350795 / 86400.0
DRV_RECORDED = ("HA_RBV", "DEC_RBV", "DEC2_RBV", "HA_VEL_RBV", "DEC_VEL_RBV", "HA_CMD_RBV", "DEC_CMD_RBV",
                "HA_ERR_RBV", "DEC_ERR_RBV", "LST_RBV", "RA_RBV", "HA_PM_RBV", "DEC_PM_RBV", "HA_REFR_RBV",
                "DEC_REFR_RBV")
WX_RECORDED = {"temp_c": "TEMP_RBV", "humidity_pct": "HUM_RBV", "pressure_hpa": "PRES_RBV",
               "wind_m_s": "WIND_SPD_RBV", "wind_dir_deg": "WIND_DIR_RBV", "dew_point_c": "DEWPT_RBV"}


@pytest.fixture(scope="module")
def obs(ca_ports, tmp_path_factory) -> Observatory:
    """One observatory (TIME, DRV, WX, RAD, NDI at 60x, at night) for the whole module."""
    prefix = f"PG{uuid.uuid4().hex[:6].upper()}"
    site = load_site().with_overrides(pv_prefix=prefix)
    state_dir = tmp_path_factory.mktemp("programs") / f"obs-{prefix}"
    t0 = time.monotonic()
    state = launcher.start(site, state_dir, speed=60, epoch=NIGHT, only=["TIME", "DRV", "WX", "RAD", "NDI"],
                           base_port=ca_ports["base"], repeater_port=ca_ports["repeater"], timeout=120)
    print(f"observatory up in {time.monotonic() - t0:.1f} s")
    o = Observatory(site, state_dir, state)
    put(o.pv("DRV", "WATCHDOG_ENA_SP"), "DISABLED")  # this test's own pyepics commands send no heartbeat
    yield o
    launcher.stop(state_dir)


def env() -> dict[str, str]:
    """The programs' environment: this session's, with timeouts a busy machine does not trip."""
    return {**os.environ, "EPICS_CA_CONN_TMO": "30", "OBSCTL_CONNECT_TIMEOUT": "90"}


def run(obs: Observatory | None, *args: str, timeout: float = 180.0) -> subprocess.CompletedProcess:
    """Run ``obsctl [--state-dir DIR] ARGS`` to the end."""
    pre = ["--state-dir", str(obs.state_dir)] if obs is not None else []
    return subprocess.run([*OBSCTL, *pre, *args], capture_output=True, text=True, timeout=timeout, env=env())


def spawn(obs: Observatory | None, *args: str, **kw) -> subprocess.Popen:
    """Start ``obsctl [--state-dir DIR] ARGS`` (text pipes unless given)."""
    pre = ["--state-dir", str(obs.state_dir)] if obs is not None else []
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([*OBSCTL, *pre, *args], text=True, env=env(), **kw)


def finish(proc: subprocess.Popen, timeout: float = 180.0) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def records(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def clean_exit(code: int, err: str, expect: int = 0) -> None:
    assert code == expect, f"exit code {code}, stderr:\n{err}"
    assert "Traceback" not in err, err


def one_error_line(err: str, name: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"obsctl {name}: "), err
    return lines[0]


def at(rec: Recorder, pv: str, t: float, timeout: float = 20.0) -> float:
    """The recorded value of ``pv`` whose time stamp is ``t`` (waits for late monitor updates)."""
    deadline = time.monotonic() + timeout
    while True:
        with rec.lock:
            data = list(rec.data[pv])
        match = [v for ts, v in data if abs(ts - t) < 1e-5]
        if match:
            return match[-1]
        if (data and data[-1][0] > t + 1.0) or time.monotonic() > deadline:
            pytest.fail(f"no update of {pv} stamped {t:.6f} (have {len(data)}, "
                        f"last {data[-1][0] if data else None})")
        time.sleep(0.05)


def track(obs: Observatory, source: str = "PictorA") -> None:
    """Track ``source`` (pyepics, no offsets) and wait until settled."""
    drv = lambda s: obs.pv("DRV", s)  # noqa: E731
    for name, value in (("OFF_HA_SP", 0.0), ("OFF_DEC_SP", 0.0), ("TRACK_NAME_SP", source)):
        put(drv(name), value)
    put(drv("MODE_CMD"), "TRACK")
    wait_for(lambda: get(drv("STATE_STS"), as_string=True) == "TRACKING"
             and get(drv("SETTLED_STS"), as_string=True) == "YES", 60, what=f"settled on {source}")


def test_help_and_bad_arguments(tmp_path, capsys):
    """--help for every program (subprocesses, through the dispatcher); bad arguments exit 2 with one line;
    no observatory: exit 1 with one line."""
    t0 = time.monotonic()
    helps = {name: spawn(None, name, "--help") for name in PROGRAMS}
    bads = {"mandr": spawn(None, "mandr", "--rate-ha", "0.1", "--stop"), "fdvm": spawn(None, "fdvm")}
    down = spawn(None, "--state-dir", str(tmp_path / "none"), "moni")
    for name, proc in helps.items():
        code, out, err = finish(proc, 120)
        clean_exit(code, err)
        assert out.startswith(f"usage: obsctl {name}") and name.upper() in out and "examples:" in out, out
        assert f"obsctl {name}" in out.split("examples:")[1]
    for name, proc in bads.items():
        code, out, err = finish(proc, 120)
        clean_exit(code, err, 2)
        one_error_line(err, name)
    code, out, err = finish(down, 120)
    clean_exit(code, err, 1)
    assert "observatory not running" in one_error_line(err, "moni")
    # the same checks in this process, for every program (no subprocess start-up cost)
    bad = {"angle": ["--interval", "0"], "hadc": ["--count", "0"], "dodecdn": ["--set-dec", "abc"],
           "moni": ["--bogus"], "mandr": ["--to-hadec", "1"], "ze": ["--count", "3"], "fdvm": ["x.csv", "--append",
                                                                                                 "--force"],
           "thum": ["--interval", "nan"], "tsetp": ["--samples", "x"]}
    import importlib

    for name, argv in bad.items():
        module = importlib.import_module(f"opi.programs.{name}")
        assert module.main(argv) == 2, name
        err = capsys.readouterr().err
        one_error_line(err, name)
        extra = {"fdvm": ["x.csv"], "mandr": ["--stop"]}.get(name, [])
        assert module.main(["--state-dir", str(tmp_path / "none"), *extra]) == 1, name
        assert "observatory not running" in one_error_line(capsys.readouterr().err, name)
    print(f"{len(helps) + 3} subprocess and {2 * len(bad)} in-process checks in {time.monotonic() - t0:.1f} s")


def test_readouts_match_the_pvs(obs):
    """HADC, ANGLE, MONI, THUM, DODECDN and TSETP (JSON) against the PV updates of the same cycle."""
    track(obs)
    rec = Recorder([obs.pv("DRV", s) for s in DRV_RECORDED] + [obs.pv("WX", s) for s in WX_RECORDED.values()])
    t0 = time.monotonic()
    try:
        argv = {"hadc": ["--json", "--count", "2", "--interval", "0.5"], "angle": ["--json", "--count", "5"],
                "moni": ["--json", "--count", "2"], "thum": ["--json", "--count", "2", "--interval", "0.5"],
                "dodecdn": ["--json"], "tsetp": ["--json"]}
        results = {}
        for batch in (("hadc", "angle", "moni"), ("thum", "dodecdn", "tsetp")):  # three at a time
            procs = {name: spawn(obs, name, *argv[name]) for name in batch}
            results.update({name: finish(p) for name, p in procs.items()})
        took = time.monotonic() - t0
        for code, _out, err in results.values():
            clean_exit(code, err)
        drv = lambda s: obs.pv("DRV", s)  # noqa: E731
        # HADC: encoders of the cycle, observed = encoder - pointing model - refraction
        hadc = records(results["hadc"][1])
        assert len(hadc) == 2
        for r in hadc:
            assert r["ha_enc_deg"] == pytest.approx(at(rec, drv("HA_RBV"), r["t"]), abs=1e-12)
            assert r["dec_enc_deg"] == pytest.approx(at(rec, drv("DEC_RBV"), r["t"]), abs=1e-12)
            obs_ha = r["ha_enc_deg"] - at(rec, drv("HA_PM_RBV"), r["t"]) - at(rec, drv("HA_REFR_RBV"), r["t"])
            assert r["ha_obs_deg"] == pytest.approx(obs_ha, abs=1e-9)
            assert r["state"] == "TRACKING"
        # ANGLE: encoders and tachometers of the cycle; tracking turns the HA axis at about the sidereal rate
        angle = records(results["angle"][1])
        assert len(angle) == 5
        for r in angle:
            assert r["ha_enc_deg"] == pytest.approx(at(rec, drv("HA_RBV"), r["t"]), abs=1e-12)
            assert r["ha_vel_deg_s"] == pytest.approx(at(rec, drv("HA_VEL_RBV"), r["t"]), abs=1e-12)
            assert r["dec_vel_deg_s"] == pytest.approx(at(rec, drv("DEC_VEL_RBV"), r["t"]), abs=1e-12)
            assert r["ha_tach_sign"] == "+" and r["ha_tach_deg_s"] == pytest.approx(SIDEREAL_DEG_S, rel=0.05)
            assert r["dec_tach_deg_s"] < 0.1 * SIDEREAL_DEG_S
        # MONI: one cycle per record; approximate RA = LST - encoder HA
        moni = records(results["moni"][1])
        assert len(moni) == 2 and all(r["consistent"] for r in moni)
        for r in moni:
            for key, pv in (("ha_cmd_deg", "HA_CMD_RBV"), ("dec_cmd_deg", "DEC_CMD_RBV"), ("ha_deg", "HA_RBV"),
                            ("dec_deg", "DEC_RBV"), ("ha_err_deg", "HA_ERR_RBV"), ("dec_err_deg", "DEC_ERR_RBV"),
                            ("lst_deg", "LST_RBV"), ("ra_deg", "RA_RBV")):
                assert r[key] == pytest.approx(at(rec, drv(pv), r["t"]), abs=1e-12), key
            assert r["ra_approx_deg"] == pytest.approx((r["lst_deg"] - r["ha_deg"]) % 360.0, abs=1e-9)
            assert r["lst_h"] == pytest.approx(r["lst_deg"] / 15.0)
            assert r["state"] == "TRACKING" and r["error_deg"] < 0.01
        assert moni[1]["t"] >= moni[0]["t"]
        # THUM: every quantity equals the station's update with its time stamp
        thum = records(results["thum"][1])
        assert len(thum) == 2
        for r in thum:
            for key, sig in WX_RECORDED.items():
                assert r[key] == pytest.approx(at(rec, obs.pv("WX", sig), r["stamps"][key]), abs=1e-12), key
            assert -20 < r["temp_c"] < 50 and 0 <= r["humidity_pct"] <= 100 and 780 < r["pressure_hpa"] < 920
        # DODECDN: offsets, and pointing-model and refraction terms the drive published
        (dd,) = records(results["dodecdn"][1])
        assert dd["off_dec_deg"] == 0.0 and dd["off_ha_deg"] == 0.0 and dd["state"] == "TRACKING"
        for key, pv in (("ha_pm_deg", "HA_PM_RBV"), ("dec_pm_deg", "DEC_PM_RBV"), ("ha_refr_deg", "HA_REFR_RBV"),
                        ("dec_refr_deg", "DEC_REFR_RBV")):
            wait_for(lambda pv=pv: rec.data[drv(pv)] and rec.data[drv(pv)][-1][0] >= dd["t"] - 1e-5, 20,
                     what=f"{pv} updates up to the DODECDN reading")
            with rec.lock:
                published = [v for ts, v in rec.data[drv(pv)] if ts <= dd["t"] + 1e-5]
            assert any(abs(v - dd[key]) < 1e-12 for v in published), (key, dd[key], published[-3:])
        assert dd["dec_total_deg"] == pytest.approx(dd["off_dec_deg"] + dd["dec_pm_deg"] + dd["dec_refr_deg"])
        # TSETP: one check, no clock correction
        code, out, err = results["tsetp"]
        (ts,) = records(out)
        assert ts["speed_station"] == get(obs.pv("TIME", "SPEED_RBV")) == ts["speed_local"] == 60.0
        assert ts["offset_real_ms"] == pytest.approx(ts["offset_ms"] / 60.0)
        assert ts["samples"] == 10 and abs(ts["offset_real_ms"]) < 1000.0 and ts["correction_s"] == 0.0
        print(f"six programs in {took:.1f} s; tsetp: clock - station {ts['offset_ms']:+.0f} ms "
              f"({ts['offset_real_ms']:+.1f} ms real)")
    finally:
        rec.stop()


def test_tsetp_sets_this_computers_clock(obs):
    """A clock set 10 real s (600 s of observatory time) ahead by hand is put right from station time."""
    path = obs.state_dir / launcher.CLOCK_CORRECTION_FILE
    try:
        base = ObservatoryClock.from_env({"OBSCTL_CLOCK": obs.state.clock})
        ahead = math.floor(base.now() + 600.0)
        utc = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ahead))
        code, out, err = finish(spawn(obs, "tsetp", "--set-to", utc, "--samples", "5", "--json"))
        clean_exit(code, err)
        assert err.startswith("clock set by hand: correction +"), err
        (r,) = records(out)
        saved = json.loads(path.read_text())
        assert saved["real_offset_s"] == r["correction_s"] and not r["ok"]
        assert base.sim_time(saved["set_real"] + saved["real_offset_s"]) == pytest.approx(ahead, abs=1.0)
        assert 8.0 < r["correction_s"] < 10.0  # 600 s of observatory time at 60x, less the program's start
        assert r["offset_ms"] == pytest.approx(r["correction_s"] * 60e3, abs=3e3)  # plus the delivery delay
        # every client of this computer started now gets the corrected clock: programs and 'obsctl env'
        code, out, err = finish(spawn(obs, "env"))
        clean_exit(code, err)
        exported = dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines())
        shell_clock = ObservatoryClock.from_env({"OBSCTL_CLOCK": exported["OBSCTL_CLOCK"].strip("'")})
        assert shell_clock.now() - base.now() == pytest.approx(r["correction_s"] * 60.0, abs=0.5)
        # --set: the check differs, the correction is changed by the difference, the new check agrees
        code, out, err = finish(spawn(obs, "tsetp", "--set", "--tolerance-ms", "200", "--json"))
        clean_exit(code, err)
        first, second = records(out)
        assert not first["ok"] and second["ok"], (first, second)
        assert abs(second["offset_real_ms"]) < 200.0 and abs(second["correction_s"]) < 0.2
        assert second["correction_s"] == pytest.approx(first["correction_s"] - first["offset_real_ms"] / 1e3)
        assert err.startswith("clock set from station time: correction "), err
        assert json.loads(path.read_text())["real_offset_s"] == second["correction_s"]
        # a clock within the tolerance is left as it is
        code, out, err = finish(spawn(obs, "tsetp", "--set", "--tolerance-ms", "200", "--json"))
        clean_exit(code, err)
        assert len(records(out)) == 1 and "not set" in err
        assert json.loads(path.read_text())["real_offset_s"] == second["correction_s"]
        # bad input changes nothing; --reset removes the correction
        for argv, text in ((["--set-to", "tomorrow"], "--set-to 'tomorrow': not an ISO-8601 UTC date"),
                           (["--set", "--reset"], "not allowed with argument")):
            code, out, err = finish(spawn(obs, "tsetp", *argv))
            clean_exit(code, err, 2)
            assert text in one_error_line(err, "tsetp")
        assert json.loads(path.read_text())["real_offset_s"] == second["correction_s"]
        code, out, err = finish(spawn(obs, "tsetp", "--reset", "--json"))
        clean_exit(code, err)
        assert records(out)[0]["correction_s"] == 0.0 and not path.exists()
        print(f"tsetp: 600 s ahead by hand, then set from station time: {second['offset_real_ms']:+.2f} ms real left, "
              f"correction {second['correction_s'] * 1e3:+.2f} ms")
    finally:
        launcher.set_clock_correction(obs.state_dir, 0.0, "test end")


def test_dodecdn_sets_the_dec_offset(obs):
    track(obs)
    drv = lambda s: obs.pv("DRV", s)  # noqa: E731
    good, bad = spawn(obs, "dodecdn", "--set-dec", "0.02", "--json"), spawn(obs, "dodecdn", "--set-dec", "12")
    code, out, err = finish(good)
    clean_exit(code, err)
    (r,) = records(out)
    assert r["off_dec_sp_deg"] == 0.02 and r["off_dec_deg"] == pytest.approx(0.02)  # acting: tracking
    assert get(drv("OFF_DEC_SP")) == 0.02 and get(drv("OFF_DEC_RBV")) == pytest.approx(0.02)
    assert get(drv("SETTLED_STS"), as_string=True) == "YES"  # waited until settled on it
    code, out, err = finish(bad)
    clean_exit(code, err, 2)
    assert "outside the drive's offset limits -10..10" in one_error_line(err, "dodecdn")
    assert get(drv("OFF_DEC_SP")) == 0.02
    put(drv("OFF_DEC_SP"), 0.0)


def test_mandr_refused_slew_and_rates(obs):
    drv = lambda s: obs.pv("DRV", s)  # noqa: E731
    # refused beyond the Dec limit: the IOC's reason is shown
    code, out, err = finish(spawn(obs, "mandr", "--to-hadec", "0", "75"))
    clean_exit(code, err, 1)
    line = one_error_line(err, "mandr")
    reason = get(drv("MSG_RBV"))
    assert "SLEW refused" in line and reason in line and f"> max {obs.site.mount.dec.max_deg:g}" in reason
    assert get(drv("LIMIT_STS"), as_string=True) == "DEC_HIGH"
    # a slew by hand (HA in hours), parked there
    code, out, err = finish(spawn(obs, "mandr", "--to-hadec", "-1:00:00", "-40", "--json"))
    clean_exit(code, err)
    last = records(out)[-1]
    assert last["done"] and last["state"] == "PARKED"
    assert last["ha_obs_deg"] == pytest.approx(-15.0, abs=0.01) and last["dec_obs_deg"] == pytest.approx(-40, abs=0.01)
    assert get(drv("STATE_STS"), as_string=True) == "PARKED"
    ha_obs = get(drv("HA_RBV")) - get(drv("HA_PM_RBV")) - get(drv("HA_REFR_RBV"))
    assert ha_obs == pytest.approx(-15.0, abs=0.01)
    # axis rates: the tachometers show them, the drive is stopped at the end
    code, out, err = finish(spawn(obs, "mandr", "--rate-ha", "-0.05", "--rate-dec", "0.02", "--count", "4",
                                  "--interval", "0.5", "--json"))
    clean_exit(code, err)
    moving = [r for r in records(out) if r["state"] == "MANUAL" and not r["what"].endswith("starting")]
    assert len(moving) == 4, out
    for r in moving:
        assert r["ha_vel_deg_s"] == pytest.approx(-0.05, abs=5e-4)
        assert r["dec_vel_deg_s"] == pytest.approx(0.02, abs=5e-4)
    assert get(drv("STATE_STS"), as_string=True) == "STOPPED"
    assert get(drv("HA_VEL_RBV")) == 0.0 and get(drv("DEC_VEL_RBV")) == 0.0
    # rates on the sky: a scan on top of sidereal tracking
    code, out, err = finish(spawn(obs, "mandr", "--rate-ha", "0.03", "--sky", "--count", "2", "--interval", "0.5",
                                  "--json"))
    clean_exit(code, err)
    moving = [r for r in records(out) if r["state"] == "SCANNING" and not r["what"].endswith("starting")]
    assert len(moving) == 2, out
    for r in moving:
        assert r["ha_vel_deg_s"] == pytest.approx(0.03 + SIDEREAL_DEG_S, abs=5e-4)
    assert get(drv("STATE_STS"), as_string=True) == "STOPPED"


def test_mandr_keys_steer_the_axes(obs):
    """MANDR --keys on a terminal: arrow keys change the axis rates live, + doubles the step, space holds,
    q stops the drive and quits."""
    drv = lambda s: obs.pv("DRV", s)  # noqa: E731
    main_fd, sub_fd = pty.openpty()
    proc = spawn(obs, "mandr", "--keys", "--step", "0.02", "--interval", "0.2", "--json", stdin=sub_fd)
    os.close(sub_fd)
    seen: list[dict] = []

    def until(pred, what: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            line = proc.stdout.readline() if ready else ""
            if line.strip():
                seen.append(json.loads(line))
                if pred(seen[-1]):
                    return seen[-1]
            elif ready or proc.poll() is not None:
                break
        raise AssertionError(f"MANDR --keys: no record with {what}; last {seen[-3:]}, stderr "
                             f"{proc.stderr.read() if proc.poll() is not None else ''}")

    def rates(ha: float, dec: float):
        return lambda r: (r["state"] == "MANUAL" and abs(r["ha_vel_deg_s"] - ha) < 1e-6
                          and abs(r["dec_vel_deg_s"] - dec) < 1e-6)

    try:
        until(lambda r: r["state"] == "MANUAL" and r["what"].startswith("keys:"), "the drive held in MANUAL")
        os.write(main_fd, b"\x1b[C\x1b[C")  # right, right: HA +0.04
        r = until(rates(0.04, 0.0), "HA at +0.04 deg/s")
        assert r["what"].startswith("keys: HA +0.0400 Dec +0.0000 deg/s, step 0.02"), r["what"]
        os.write(main_fd, b"\x1bOA")  # up (application cursor mode): Dec +0.02
        until(rates(0.04, 0.02), "Dec at +0.02 deg/s")
        os.write(main_fd, b"+\x1b[B\x1b[D")  # step 0.04; down: Dec -0.02; left: HA 0
        until(rates(0.0, -0.02), "HA at 0 and Dec at -0.02 deg/s")
        assert get(drv("RATE_HA_SP")) == 0.0 and get(drv("RATE_DEC_SP")) == pytest.approx(-0.02)
        os.write(main_fd, b" ")  # hold
        until(rates(0.0, 0.0), "both axes held")
        os.write(main_fd, b"q")
        code, _, err = finish(proc, 60)
        clean_exit(code, err)
        assert err.strip().endswith("drive stopped (STOPPED)"), err
        assert get(drv("STATE_STS"), as_string=True) == "STOPPED" and get(drv("HA_VEL_RBV")) == 0.0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main_fd)


def _pty_until(proc: subprocess.Popen, fd: int, text: bytes, timeout: float) -> bytes:
    buf = b""
    t0 = time.monotonic()
    while text not in buf and time.monotonic() - t0 < timeout and proc.poll() is None:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                buf += os.read(fd, 65536)
            except OSError:
                break
    return buf


def _drain(fd: int) -> bytes:
    buf = b""
    while True:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            return buf
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return buf
        if not chunk:
            return buf
        buf += chunk


def test_ctrl_c_stops_cleanly(obs):
    """SIGINT: MANDR stops the drive; MONI on a terminal restores it; both exit 0 without a traceback."""
    drv = lambda s: obs.pv("DRV", s)  # noqa: E731
    mandr = spawn(obs, "mandr", "--rate-ha", "0.05", "--json")
    main_fd, sub_fd = pty.openpty()
    moni = subprocess.Popen([*OBSCTL, "--state-dir", str(obs.state_dir), "moni"], stdin=sub_fd, stdout=sub_fd,
                            stderr=subprocess.PIPE, env={**env(), "COLUMNS": "100", "TERM": "xterm"})
    os.close(sub_fd)
    try:
        scanning = None
        for line in mandr.stdout:
            r = json.loads(line)
            if r["state"] == "MANUAL" and not r["what"].endswith("starting"):
                scanning = r
                break
        assert scanning is not None and scanning["ha_vel_deg_s"] == pytest.approx(0.05, abs=5e-4)
        screen = _pty_until(moni, main_fd, b"approx. RA", 120)
        assert b"MONI" in screen and b"approx. RA" in screen, screen[-500:]
        mandr.send_signal(signal.SIGINT)
        moni.send_signal(signal.SIGINT)
        code, _, err = finish(mandr, 60)
        clean_exit(code, err)
        assert err.splitlines() == ["Ctrl-C: drive stopped (STOPPED)", "stopped"], err
        assert get(drv("STATE_STS"), as_string=True) == "STOPPED" and get(drv("HA_VEL_RBV")) == 0.0
        code = moni.wait(60)
        err = moni.stderr.read().decode()
        clean_exit(code, err)
        assert err.strip() == "stopped"
        assert b"\x1b[?25h" in _drain(main_fd)  # the live display ended: cursor shown again
    finally:
        for p in (mandr, moni):
            if p.poll() is None:
                p.kill()
                p.wait()
        os.close(main_fd)


def test_ze_parks_at_the_zenith(obs):
    drv = lambda s: obs.pv("DRV", s)  # noqa: E731
    put(drv("SLEW_FRAME_SP"), "HADEC")
    put(drv("SLEW_X_SP"), 80.0)
    put(drv("SLEW_Y_SP"), -80.0)
    put(drv("MODE_CMD"), "SLEW")  # ZE has somewhere to come from: about 80 deg in HA
    t0 = time.monotonic()
    code, out, err = finish(spawn(obs, "ze", "--json", "--interval", "0.2"))
    took = time.monotonic() - t0
    clean_exit(code, err)
    recs = records(out)
    assert recs[-1]["done"] and recs[-1]["state"] == "PARKED" and recs[-1]["el_deg"] > 89.9
    assert any(r["state"] == "SLEWING" for r in recs)  # the progress display followed the move
    assert get(drv("STATE_STS"), as_string=True) == "PARKED" and get(drv("EL_RBV")) > 89.9
    print(f"ze: {len(recs)} progress records, parked at El {get(drv('EL_RBV')):.3f} deg in {took:.1f} s")


def test_fdvm_writes_rows(obs, tmp_path, capsys):
    path = tmp_path / "dvm.csv"
    dvm1 = get(obs.pv("RAD", "DVM1_RBV"))
    code, out, err = finish(spawn(obs, "fdvm", str(path), "--count", "4", "--interval", "0.3"))
    clean_exit(code, err)
    assert out.splitlines()[-1] == f"4 rows written to {path}"
    lines = path.read_text().splitlines()
    assert lines[0] == "utc,t_s,ha_deg,dec_deg,dvm1_K,dvm2_K,samples"
    rows = list(csv.DictReader(lines))
    assert len(rows) == 4
    t = [float(r["t_s"]) for r in rows]
    assert all(b > a for a, b in zip(t, t[1:], strict=False))
    ha = get(obs.pv("DRV", "HA_RBV")) - get(obs.pv("DRV", "HA_PM_RBV")) - get(obs.pv("DRV", "HA_REFR_RBV"))
    for r in rows:
        assert r["utc"].endswith("Z") and int(r["samples"]) >= 1
        assert float(r["ha_deg"]) == pytest.approx(ha, abs=0.01)  # the dish is parked (ZE, above)
        assert math.isfinite(float(r["dvm1_K"])) and float(r["dvm1_K"]) == pytest.approx(dvm1, abs=5.0)
        assert math.isfinite(float(r["dvm2_K"]))
    from opi.programs import fdvm

    assert fdvm.main(["--state-dir", str(obs.state_dir), str(path), "--count", "1"]) == 2  # not overwritten
    assert "exists" in one_error_line(capsys.readouterr().err, "fdvm")
    assert path.read_text().splitlines() == lines
