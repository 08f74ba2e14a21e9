"""The instrument test programs HYP, CALT, CORRTEST, SRDIO, HPIB, RADSP, TEMPS as `obsctl` subprocesses.

One observatory (NDI, RAD, COR, SUB, TMS, SYN1, SYN2, WX at 60x) serves the module; every program run leaves
it as it found it, which the tests check.  Results are compared with pyepics reads of the IOCs and with values
computed here from the site file (diode temperatures, the radiometer equation, the synthesizers' resolutions).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from obsctl import launcher
from obsctl.site import load_site
from tests.conftest import Observatory, wait_for
from tests.helpers import get, put

pytestmark = pytest.mark.slow

PROGRAMS = ("hyp", "calt", "corrtest", "srdio", "hpib", "radsp", "temps")
DEVS = ["NDI", "RAD", "COR", "SUB", "TMS", "SYN1", "SYN2", "WX"]
SPEED = 60
NIGHT = "2026-11-21T20:00:00"
BIN = Path(sys.executable).parent / "obsctl"
#: arguments each program refuses before it connects (exit 2)
BAD_ARGS = {"hyp": ["--focus", "abc"], "calt": ["--time", "-1"], "corrtest": ["--time", "0"],
            "srdio": ["--registers", "ND_SEL,BOGUS"], "hpib": ["--device", "SYN9", "FR1MZ"],
            "radsp": ["--out", "psd.txt"], "temps": ["--count", "0"]}


def _cmd(name: str, *args: str, state_dir: Path | None = None) -> list[str]:
    head = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "obsctl.cli"]
    return head + (["--state-dir", str(state_dir)] if state_dir else []) + [name, *args]


def run(obs: Observatory, name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``obsctl --state-dir DIR name args`` to completion (output captured)."""
    return subprocess.run(_cmd(name, *args, state_dir=obs.state_dir), capture_output=True, text=True,
                          timeout=timeout)


def last_json(out: str) -> dict:
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    assert lines, out
    return json.loads(lines[-1])


def interrupt(obs: Observatory, name: str, *args: str, when=lambda: True,
              timeout: float = 60) -> tuple[int, str, str]:
    """Start a program, wait for its first line of output and until ``when()`` holds, send SIGINT; return
    (exit code, stdout, stderr)."""
    proc = subprocess.Popen(_cmd(name, *args, state_dir=obs.state_dir), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        wait_for(lambda: (lines and when()) or proc.poll() is not None, timeout, what=f"{name} under way")
        assert proc.poll() is None, f"{name} ended before the interrupt: {proc.stderr.read()}"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        reader.join(5)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, "".join(lines), err


@pytest.fixture(scope="module")
def obs(ca_ports, tmp_path_factory) -> Iterator[Observatory]:
    """The instruments the programs need, started once for this module through the real launcher."""
    site = load_site().with_overrides(pv_prefix="PRG" + uuid.uuid4().hex[:6].upper())
    state_dir = tmp_path_factory.mktemp("programs")
    state = launcher.start(site, state_dir, speed=SPEED, epoch=NIGHT, only=DEVS, base_port=ca_ports["base"],
                           repeater_port=ca_ports["repeater"], timeout=120)
    yield Observatory(site, state_dir, state)
    launcher.stop(state_dir)


# ---- no observatory needed ------------------------------------------------------------------------------
def test_help_and_bad_arguments(tmp_path, capsys, monkeypatch):
    from obsctl.cli import main as obsctl_main

    monkeypatch.setenv("OBSCTL_STATE_DIR", str(tmp_path / "nothing"))
    monkeypatch.chdir(tmp_path)
    for name in PROGRAMS:
        assert obsctl_main([name, "--help"]) == 0, name
        out, err = capsys.readouterr()
        assert out.startswith(f"usage: obsctl {name}") and f"{name.upper()}:" in out, out[:200]
        assert "examples:" in out and "--json" in out and not err, name
        assert obsctl_main([name, *BAD_ARGS[name]]) == 2, name
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"obsctl {name}: "), (name, err)
    # without an observatory: a clear line, exit 1
    assert obsctl_main(["--state-dir", str(tmp_path / "nothing"), "hyp", "--count", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("obsctl hyp: observatory not running") and len(err.strip().splitlines()) == 1, err
    # the same through the command itself
    env = {**os.environ, "OBSCTL_STATE_DIR": str(tmp_path / "nothing")}
    p = subprocess.run(_cmd("hyp", "--focus", "abc"), capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 2 and p.stderr == "obsctl hyp: argument --focus: 'abc' is not a number\n", p.stderr


# ---- HYP ------------------------------------------------------------------------------------------------
def test_hyp_moves_shows_and_refuses(obs):
    sub = lambda sig: obs.pv("SUB", sig)  # noqa: E731
    t0 = time.monotonic()
    p = run(obs, "hyp", "--focus", "6", "--tilt-x", "-4", "--json")
    real = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    recs = [json.loads(ln) for ln in p.stdout.splitlines()]
    final = recs[-1]
    print(f"\nhyp move: {len(recs)} refreshes, {real:.1f} s real")
    assert final["in_position"] and final["state"] == "IN_POSITION"
    assert final["focus_progress"] == pytest.approx(1.0, abs=0.01)
    assert get(sub("STATE_STS"), as_string=True) == "IN_POSITION"
    assert get(sub("FOCUS_SP")) == 6.0 and get(sub("TILTX_SP")) == -4.0
    assert abs(get(sub("FOCUS_RBV")) - 6.0) < 0.02 and abs(final["focus_mm"] - 6.0) < 0.02
    assert final["gain_factor"] == pytest.approx(get(sub("GAIN_FACTOR_RBV")), rel=1e-9)
    assert final["beam_dx_deg"] == pytest.approx(get(sub("BEAM_DX_RBV")), rel=1e-9) and final["beam_dx_deg"] > 0
    if len(recs) > 1:  # seen while moving, with progress between 0 and 1
        assert recs[0]["state"] in ("MOVING", "SETTLING") and 0 <= recs[0]["focus_progress"] <= 1
    # display only: --count refreshes, the IOC's values
    p = run(obs, "hyp", "--count", "2", "--interval", "0.2", "--json")
    assert p.returncode == 0, p.stderr
    recs = [json.loads(ln) for ln in p.stdout.splitlines()]
    assert len(recs) == 2
    assert abs(recs[-1]["tilt_x_arcmin"] - get(sub("TILTX_RBV"))) < 0.1
    assert recs[-1]["receiver"] == get(sub("RX_RBV"))
    # outside the travel: the IOC's reason, exit 1, nothing moved
    p = run(obs, "hyp", "--tilt-y", "75")
    assert p.returncode == 1 and "outside -60..60" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert get(sub("TILTY_SP")) == 0.0


def test_hyp_interrupted_move_stops_the_subreflector(obs):
    sub = lambda sig: obs.pv("SUB", sig)  # noqa: E731
    put(sub("FOCUS_SP"), -25.0)  # far from where the program will send it
    wait_for(lambda: get(sub("STATE_STS"), as_string=True) == "IN_POSITION", 30, what="focus at -25")
    code, out, err = interrupt(obs, "hyp", "--focus", "25",
                               when=lambda: get(sub("STATE_STS"), as_string=True) == "MOVING")
    assert code == 0 and "stopped" in err and "Traceback" not in err, err
    stopped = get(sub("FOCUS_SP"))
    assert -25.0 < stopped < 25.0  # the setpoint became where it stopped
    wait_for(lambda: get(sub("STATE_STS"), as_string=True) == "IN_POSITION", 10, what="settled after stop")
    assert abs(get(sub("FOCUS_RBV")) - stopped) < 0.02


# ---- CALT -----------------------------------------------------------------------------------------------
def test_calt_reports_diode_steps_and_tsys(obs):
    rad = lambda sig: obs.pv("RAD", sig)  # noqa: E731
    sel_before = (get(rad("DVM1_SEL_SP"), as_string=True), get(rad("DVM2_SEL_SP"), as_string=True))
    put(rad("DVM2_SEL_SP"), "Ground")  # CALT must use the RF inputs and put this back
    t0 = time.monotonic()
    p = run(obs, "calt", "--json", "--time", "4")
    real = time.monotonic() - t0
    assert p.returncode == 0, p.stdout + p.stderr
    r = last_json(p.stdout)
    rx = obs.site.receiver(get(rad("RX_RBV")))
    print(f"\ncalt: Tsys {r['tsys_k']} K, {real:.1f} s real")
    assert r["passed"] is True and r["receiver"] == rx.name
    assert [s["level"] for s in r["steps"]] == ["OFF", "LOW", "HIGH", "OFF"]
    assert [s["nd_k"] for s in r["steps"]] == [0.0, rx.noise_diode_low_k, rx.noise_diode_high_k, 0.0]
    off = r["steps"][0]
    rate, avg = get(rad("RATE_SP")), get(rad("AVG_SP"))
    assert off["nsamp"] == pytest.approx(4 * rate / avg, abs=2)
    tsys_ioc = get(rad("TSYS_RBV"))  # mean of LCP and RCP now (diodes off again)
    for d in (0, 1):
        assert off["dvm"][d] == pytest.approx(tsys_ioc, rel=0.02)
        assert r["tsys_k"][d] == pytest.approx(tsys_ioc, rel=0.05)
        step = r["steps"][2]["dvm"][d] - 0.5 * (off["dvm"][d] + r["steps"][3]["dvm"][d])
        assert step == pytest.approx(rx.noise_diode_high_k, rel=0.05)
        sigma = tsys_ioc / math.sqrt(rx.bandwidth_mhz * 1e6 * avg / rate)  # radiometer equation
        assert off["std"][d] == pytest.approx(sigma, rel=0.25)
    # the diodes are off and the selects as before
    assert get(obs.pv("NDI", "ND_SEL_RBV")) == 0 and get(obs.pv("NDI", "ND_K_RBV")) == 0.0
    assert get(rad("DVM2_SEL_SP"), as_string=True) == "Ground"
    put(rad("DVM2_SEL_SP"), sel_before[1])


def test_calt_ctrl_c_switches_the_diodes_off(obs):
    nd = obs.pv("NDI", "ND_SEL_RBV")
    sel = get(obs.pv("RAD", "DVM1_SEL_SP"), as_string=True)
    code, out, err = interrupt(obs, "calt", "--time", "240", when=lambda: get(nd) != 0)
    assert code == 0 and err.strip().endswith("stopped") and "Traceback" not in err, err
    assert get(nd) == 0 and get(obs.pv("NDI", "ND_K_RBV")) == 0.0
    assert get(obs.pv("RAD", "DVM1_SEL_SP"), as_string=True) == sel


# ---- CORRTEST -------------------------------------------------------------------------------------------
def test_corrtest_modes_pass_and_an_underdriven_sampler_fails(obs):
    cor = lambda sig: obs.pv("COR", sig)  # noqa: E731
    before = {s: get(cor(s), as_string=True) for s in ("QUAD_SP", "NCHAN_SP", "BW_SP", "INT_TIME_SP")}
    t0 = time.monotonic()
    p = run(obs, "corrtest", "--bw", "16", "--time", "5", "--json")
    real = time.monotonic() - t0
    assert p.returncode == 0, p.stdout + p.stderr
    r = last_json(p.stdout)
    print(f"\ncorrtest: {len(r['results'])} modes in {real:.1f} s real")
    assert r["passed"] is True and len(r["results"]) == 3
    for res in r["results"]:
        n = {"1x2048": 1, "2x1024": 2, "4x512": 4}[res["quad"].split()[0]]
        assert (res["nsec"], res["nchan"], res["length"]) == (n, 2048 // n, 2048)
        assert res["level_sts"] == "OK" and all(0.25 < v < 0.8 for v in res["levels"][:n])
        assert res["rms"] < 1.5 * res["rms_expected"]
    last = r["results"][-1]
    # the IOC holds the last integration: compare with it
    assert get(cor("NSEC_RBV")) == last["nsec"] == 4
    assert len(get(cor("SPECTRUM"))) == last["length"]
    assert get(cor("TSYS_RBV")) == pytest.approx(last["tsys_k"], rel=1e-9)
    assert {s: get(cor(s), as_string=True) for s in before} == before  # settings restored
    # a sampler driven far too weakly fails the levels check, exit 1
    put(cor("ATT1_SP"), 31.5)
    try:
        p = run(obs, "corrtest", "--quads", "1x2048", "--bw", "2", "--time", "2", "--json")
    finally:
        put(cor("ATT1_SP"), 12.0)
    assert p.returncode == 1, p.stderr
    r = last_json(p.stdout)
    assert r["passed"] is False and r["results"][0]["level_sts"] == "UNDER-DRIVEN"
    assert r["results"][0]["checks"]["levels"] is False


# ---- SRDIO ----------------------------------------------------------------------------------------------
def test_srdio_walks_every_register_and_restores(obs):
    ndi = lambda sig: obs.pv("NDI", sig)  # noqa: E731
    sps = ["ND_SEL_SP", "RX_SEL_SP", "GPR_IN_SP", "IF_BW_SP", "MIXER_SP", "CHART1_SP", "CHART2_SP", "NAD18_SP",
           "NAD13_SP"]
    put(ndi("CHART2_SP"), "WIND")
    put(ndi("ND_SEL_SP"), 0b100)  # 13 cm LOW diode: not the selected receiver's
    before = {s: get(ndi(s), as_string=True) for s in sps}
    p = run(obs, "srdio", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    r = last_json(p.stdout)
    bits = get(ndi("ND_BITS_RBV"))
    res = {x["register"]: x for x in r["results"]}
    assert r["passed"] is True and r["restored"] is True and len(res) == 9
    assert res["ND_SEL"]["written"] == 2 * bits + 4 + 1 == res["ND_SEL"]["correct"]
    assert res["CHART1"]["written"] == 16 and res["IF_BW"]["written"] == 6
    assert res["RX_SEL"]["written"] == len(obs.site.receivers)
    assert {s: get(ndi(s), as_string=True) for s in sps} == before
    put(ndi("ND_SEL_SP"), 0)


# ---- HPIB -----------------------------------------------------------------------------------------------
def test_hpib_commands_readbacks_and_refusals(obs, tmp_path):
    s1 = lambda sig: obs.pv("SYN1", sig)  # noqa: E731
    s2 = lambda sig: obs.pv("SYN2", sig)  # noqa: E731
    p = run(obs, "hpib", "--json", "FR 1420.405 MZ", "FR 1000.123456789 MZ", "AP -10.04 DM")
    assert p.returncode == 1, p.stderr  # one refused
    r = last_json(p.stdout)
    bad, freq, amp = r["results"]
    assert not bad["ok"] and "1420.405 MHz outside" in bad["reason"]
    assert freq["ok"] and amp["ok"] and r["refused"] == 1
    f = round(1000.123456789e6 / 0.2) * 0.2  # HP 8662A: 0.2 Hz steps above 640 MHz
    assert freq["after"]["freq_hz"] == pytest.approx(f, abs=1e-3) == get(s1("FREQ_RBV"))
    assert amp["after"]["power_dbm"] == -10.0 == get(s1("POWER_RBV")) and amp["after"]["lock"] == "LOCKED"
    # a script for both instruments, piped: one line per command; the other model's syntax is refused
    script = tmp_path / "cmds.txt"
    script.write_text("# exercise\nFR 250 MZ\n@SYN2 FR10.7MHAM-20DB\nAP -3 DM   # back on SYN1\n@SYN2\nFR455KH\n"
                      "AP-3DM\n")
    p = run(obs, "hpib", "--script", str(script))
    assert p.returncode == 1, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert [ln.split(" <- ")[0] for ln in lines[1:]] == ["SYN1", "SYN2", "SYN1", "SYN2", "SYN2"], lines
    assert all(": OK  -> " in ln for ln in lines[1:5]), lines
    assert "REFUSED (" in lines[5] and "unknown code 'AP'" in lines[5] and "[5 sent, 1 refused]" in lines[5]
    assert get(s1("FREQ_RBV")) == 250e6 and get(s1("POWER_RBV")) == -3.0
    assert get(s2("FREQ_RBV")) == pytest.approx(455e3, abs=1e-6) and get(s2("POWER_RBV")) == -20.0
    assert "SYN2 HP3336B: 455 kHz" in lines[5]


# ---- RADSP ----------------------------------------------------------------------------------------------
def test_radsp_white_level_follows_the_radiometer_equation(obs, tmp_path):
    rad = lambda sig: obs.pv("RAD", sig)  # noqa: E731
    out = tmp_path / "psd.png"
    t0 = time.monotonic()
    p = run(obs, "radsp", "--seconds", "600", "--out", str(out), "--json", timeout=180)
    real = time.monotonic() - t0
    assert p.returncode == 0, p.stdout + p.stderr
    r = last_json(p.stdout)
    rate, avg = get(rad("RATE_SP")), get(rad("AVG_SP"))
    rx = obs.site.receiver(get(rad("RX_RBV")))
    tsys = get(rad("TSYS_RBV"))
    sigma = tsys / math.sqrt(rx.bandwidth_mhz * 1e6 * avg / rate)  # radiometer equation, per sample
    print(f"\nradsp: {r['n']} samples, white {[s['white_sigma'] for s in r['spectra']]} K vs {sigma:.5f} K, "
          f"knees {[round(s['knee_hz'], 4) for s in r['spectra']]} Hz; {real:.1f} s real")
    assert r["passed"] is True and r["lost"] == 0
    assert r["fs_hz"] == pytest.approx(rate / avg, rel=1e-3)
    assert r["n"] == pytest.approx(600 * rate / avg, rel=0.01)
    for s in r["spectra"]:
        assert s["mean"] == pytest.approx(tsys, rel=0.02)
        assert s["white_sigma"] == pytest.approx(sigma, rel=0.05)
        assert s["white_psd"] == pytest.approx(2 * tsys**2 / (rx.bandwidth_mhz * 1e6), rel=0.1)
        assert 0.01 < s["knee_hz"] < 1.0 and 1.0 < s["alpha"] < 3.0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


# ---- TEMPS ----------------------------------------------------------------------------------------------
def test_temps_through_the_dvms_matches_the_housekeeping_iocs(obs):
    tms = lambda sig: obs.pv("TMS", sig)  # noqa: E731
    sel = (get(obs.pv("RAD", "DVM1_SEL_SP"), as_string=True), get(obs.pv("RAD", "DVM2_SEL_SP"), as_string=True))
    p = run(obs, "temps", "--count", "1", "--json")
    assert p.returncode == 0, p.stderr
    r = last_json(p.stdout)
    # TMS publishes once a real second (a minute of observatory time): compare with a tolerance for that
    assert r["cryo_15k"]["via_dvm"] == pytest.approx(get(tms("CRYO_15K_RBV")), abs=0.5)
    assert r["cryo_70k"]["via_dvm"] == pytest.approx(get(tms("CRYO_70K_RBV")), abs=1.0)
    assert r["vacuum"]["via_dvm"] == pytest.approx(get(tms("VAC_RBV")), rel=0.2)
    for key, sig in (("psu_p15", "PSU_P15_RBV"), ("psu_n15", "PSU_N15_RBV"), ("psu_p5", "PSU_P5_RBV"),
                     ("psu_p28", "PSU_P28_RBV")):
        assert r[key]["via_dvm"] == pytest.approx(get(tms(sig)), abs=0.05), key
    assert r["room"]["via_dvm"] == pytest.approx(get(tms("ROOM_TEMP_RBV")), abs=0.5)
    assert r["outside"]["via_dvm"] == pytest.approx(get(obs.pv("WX", "TEMP_RBV")), abs=0.5)
    assert r["ref_1v"]["via_dvm"] == pytest.approx(1.0, abs=1e-3) and abs(r["ground"]["via_dvm"]) < 1e-3
    assert r["compressor"] == "RUNNING" and r["cryo_15k"]["dvm_alarm"] == "ok"
    assert (get(obs.pv("RAD", "DVM1_SEL_SP"), as_string=True),
            get(obs.pv("RAD", "DVM2_SEL_SP"), as_string=True)) == sel


def test_temps_alarm_colours():
    from opi.programs import temps

    limits = {"lower_alarm_limit": 2.0, "upper_alarm_limit": 30.0, "lower_warning_limit": 4.0,
              "upper_warning_limit": 20.0}
    assert [temps.classify(v, limits) for v in (15.0, 25.0, 35.0, 3.0, math.nan)] == [0, 1, 2, 1, 3]
    assert temps.diode_temperature_k(1.19) == pytest.approx(20.0) and temps.gauge_mbar(3.4) == pytest.approx(
        10 ** (1.667 * 3.4 - 11.33))
    snap = temps.HousekeepingReading(t=0.0, readings=[temps.Reading("cryo_15k", "LNA", "K", 7, 1.0, 35.0, 34.9, 2, 2)])
    import io

    from rich.console import Console

    con = Console(record=True, width=120, force_terminal=True, color_system="truecolor", file=io.StringIO())
    con.print(temps.render(snap))
    assert "\x1b[1;31m" in con.export_text(styles=True)  # bold red: an alarm
