"""CALT: receiver and DVM test — noise-diode steps seen through both DVMs, with the implied Tsys.

With the antenna on a fixed position, the selected receiver's noise diode is switched OFF, LOW, HIGH and OFF
again (NDI), and both DVMs (RAD, on the LCP and RCP total-power inputs for the test) are integrated for
``--time`` observatory seconds at each step.  Reported per step: the injected diode temperature
``ND_K_RBV`` (K), the mean and rms of each DVM (K) and the number of samples; then per DVM:

* the LOW and HIGH steps (DVM on minus the mean of the two OFF steps) against the diode temperatures of the
  site file, within 5 % or 4 standard errors;
* the linearity, HIGH step / LOW step against HIGH / LOW diode temperature (5 % or 4 standard errors);
* the implied system temperature ``Tsys = T_high * P_off / (P_high - P_off)``, which must agree with the DVM's
  own OFF reading within 5 % and lie within 0.5..3 times the receiver's nominal Tsys;
* the sample rms at OFF against the radiometer equation ``Tsys / sqrt(B tau)`` (B the receiver bandwidth,
  tau the output sample time), within 0.7..1.4 (only without a median filter);
* no clipped, missing or slewing samples, and LCP and RCP within 10 % of each other.

Every diode is switched off at the end, also after Ctrl-C or a failure, and the DVM selects (and the
receiver, with ``--receiver``) are restored.  Importable: :func:`run_calt` yields :class:`CaltReport`
snapshots; :func:`opi.programs.steps.run_steps` shows such a sequence.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from opi.programs import common
from opi.programs.steps import run_steps, verdict

NAME = "calt"
LEVELS = ("OFF", "LOW", "HIGH", "OFF")
RF_SELECTS = ("LCP total power", "RCP total power")
FLAG_CLIP_NODATA = (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6)   # obsctl.blocks FLAG_DVM*_CLIP, FLAG_DVM*_NODATA
FLAG_SLEWING = 1 << 7
STEP_TOL, TSYS_TOL, POL_TOL = 0.05, 0.05, 0.10
NOISE_RANGE = (0.7, 1.4)


# ---- the test ----------------------------------------------------------------------------------------------
@dataclass
class Step:
    """One diode step: level, injected diode temperature (K) and the DVM statistics (K)."""

    level: str
    nd_k: float
    dvm: tuple[float, float]
    std: tuple[float, float]
    nsamp: int
    flags: int
    t: float


@dataclass
class Check:
    """One expectation: name, DVM (1, 2 or 0 for both), measured and expected values, verdict, detail."""

    name: str
    dvm: int
    measured: float
    expected: float
    ok: bool | None
    detail: str = ""


@dataclass
class CaltReport:
    """State of a CALT run: receiver, settings, steps so far, checks and the verdict (once ``done``)."""

    receiver: str
    bandwidth_hz: float
    sample_time_s: float
    step_time_s: float
    nd_low_k: float
    nd_high_k: float
    tsys_nominal_k: float
    steps: list[Step] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    tsys_k: tuple[float, float] = (math.nan, math.nan)
    done: bool = False
    current: str = ""

    @property
    def passed(self) -> bool | None:
        """Whether every check passed (None until done)."""
        return all(c.ok is not False for c in self.checks) if self.done else None

    def as_dict(self) -> dict[str, Any]:
        """The report with its verdict."""
        d = asdict(self)
        d["passed"] = self.passed
        return d


def _expected_k(report: CaltReport, level: str) -> float:
    return {"OFF": 0.0, "LOW": report.nd_low_k, "HIGH": report.nd_high_k}[level]


def evaluate(report: CaltReport, median_filter: bool) -> list[Check]:
    """The checks of a complete run (four steps OFF, LOW, HIGH, OFF)."""
    s = {st.level: st for st in report.steps[1:3]}
    offs = (report.steps[0], report.steps[3])
    checks = []
    for st in report.steps:
        exp = _expected_k(report, st.level)
        checks.append(Check(f"ND_K {st.level}", 0, st.nd_k, exp, abs(st.nd_k - exp) < 1e-6))
    tsys = []
    for d in (0, 1):
        n = max(min(st.nsamp for st in report.steps), 1)
        off = 0.5 * (offs[0].dvm[d] + offs[1].dvm[d])
        steps = {}
        for level in ("LOW", "HIGH"):
            on = s[level]
            delta = on.dvm[d] - off
            err = math.sqrt(on.std[d] ** 2 / n + 0.25 * (offs[0].std[d] ** 2 + offs[1].std[d] ** 2) / n)
            exp = _expected_k(report, level)
            steps[level] = (delta, err)
            checks.append(Check(f"{level} step", d + 1, delta, exp, abs(delta - exp) <= max(STEP_TOL * exp, 4 * err),
                                f"+-{err:.4f} K"))
        (dl, el), (dh, eh) = steps["LOW"], steps["HIGH"]
        ratio = dh / dl if dl else math.nan
        exp_ratio = report.nd_high_k / report.nd_low_k
        r_err = abs(ratio) * math.hypot(el / dl, eh / dh) if dl and dh else math.inf
        checks.append(Check("linearity HIGH/LOW", d + 1, ratio, exp_ratio,
                            abs(ratio - exp_ratio) <= max(STEP_TOL * exp_ratio, 4 * r_err)))
        t_sys = report.nd_high_k * off / dh if dh else math.nan
        tsys.append(t_sys)
        agree = bool(off) and abs(t_sys / off - 1) <= TSYS_TOL
        checks.append(Check("Tsys (diode) vs DVM", d + 1, t_sys, off, agree, "Tsys = T_high P_off / (P_high - P_off)"))
        nominal = report.tsys_nominal_k
        checks.append(Check("Tsys plausible", d + 1, t_sys, nominal, 0.5 * nominal <= t_sys <= 3.0 * nominal,
                            "0.5..3 x receiver Tsys"))
        sigma_exp = off / math.sqrt(report.bandwidth_hz * report.sample_time_s)
        sigma = offs[0].std[d]
        checks.append(Check("noise vs radiometer eq.", d + 1, sigma, sigma_exp,
                            None if median_filter else NOISE_RANGE[0] <= sigma / sigma_exp <= NOISE_RANGE[1],
                            "Tsys/sqrt(B tau)" + (" (median filter on: not checked)" if median_filter else "")))
    flags = 0
    for st in report.steps:
        flags |= st.flags
    checks.append(Check("no clipped/missing samples", 0, flags & FLAG_CLIP_NODATA, 0, not flags & FLAG_CLIP_NODATA))
    checks.append(Check("antenna not slewing", 0, flags & FLAG_SLEWING, 0, not flags & FLAG_SLEWING))
    off1, off2 = (0.5 * (offs[0].dvm[d] + offs[1].dvm[d]) for d in (0, 1))
    checks.append(Check("LCP vs RCP", 0, off1 / off2 if off2 else math.nan, 1.0,
                        abs(off1 / off2 - 1) <= POL_TOL if off2 else False))
    report.tsys_k = (tsys[0], tsys[1])
    return checks


def run_calt(obs: common.Observatory, step_time_s: float = 2.0, receiver: str | None = None,
             timeout: float = 30.0) -> Iterator[CaltReport]:
    """Run the test, yielding the report after each step; restores the selects and switches diodes off.

    ``obs`` is a connected :class:`opi.programs.common.Observatory` with NDI and RAD running;
    ``step_time_s`` is the integration per step (observatory s); ``timeout`` bounds each step (real s).
    """
    ndi = obs.device("instrumentation")
    rad = obs.device("radiometer")
    old_rx = ndi.rx_sel.get()
    old_sel = (rad.sel1.get(), rad.sel2.get())
    try:
        if receiver:
            if receiver not in ndi.receivers:
                raise common.UsageError(f"--receiver {receiver!r}: not one of {', '.join(ndi.receivers)}")
            ndi.select_receiver(receiver).wait(timeout)
        rx = obs.site.receiver(ndi.rx_sel.get())
        for sig, sel in zip((rad.sel1, rad.sel2), RF_SELECTS, strict=True):
            if sig.get() != sel:
                sig.set(sel).wait(timeout)
        rate, avg = float(rad.rate.get()), int(rad.avg.get())
        report = CaltReport(receiver=rx.name, bandwidth_hz=rx.bandwidth_mhz * 1e6, sample_time_s=avg / rate,
                            step_time_s=step_time_s, nd_low_k=rx.noise_diode_low_k, nd_high_k=rx.noise_diode_high_k,
                            tsys_nominal_k=rx.tsys_k)
        for level in LEVELS:
            report.current = f"diode {level}"
            if not report.steps:
                yield report
            ndi.set_diode(level).wait(timeout)
            expected = _expected_k(report, level)
            deadline = time.monotonic() + timeout
            while abs(float(ndi.nd_k.get()) - expected) > 1e-6 and time.monotonic() < deadline:
                time.sleep(0.02)
            rad.integration_time.put(step_time_s)
            rad.trigger().wait(timeout + step_time_s / obs.clock.speed)
            r = rad.read()
            v = {k.removeprefix(rad.name + "_"): item["value"] for k, item in r.items()}
            report.steps.append(Step(level, float(ndi.nd_k.get()), (v["dvm1"], v["dvm2"]),
                                     (v["dvm1_std"], v["dvm2_std"]), int(v["nsamp"]), int(v["flags"]), v["time"]))
            more = len(report.steps) < len(LEVELS)
            report.current = f"diode {LEVELS[len(report.steps)]}" if more else "evaluating"
            yield report
        report.checks = evaluate(report, rad.filt.get() != "NONE")
        report.current = ""
        report.done = True
        yield report
    finally:
        ndi.diodes_off().wait(timeout)
        for sig, sel in zip((rad.sel1, rad.sel2), old_sel, strict=True):
            if sig.get() != sel:
                sig.set(sel).wait(timeout)
        if receiver and ndi.rx_sel.get() != old_rx:
            ndi.select_receiver(old_rx).wait(timeout)


# ---- display -----------------------------------------------------------------------------------------------
def line(r: CaltReport) -> str:
    """One text line per step, the verdict at the end."""
    if r.done:
        failed = [f"{c.name}{f' DVM{c.dvm}' if c.dvm else ''}" for c in r.checks if c.ok is False]
        return (f"CALT {r.receiver}: Tsys DVM1 {r.tsys_k[0]:.2f} K, DVM2 {r.tsys_k[1]:.2f} K  "
                + ("PASS" if r.passed else "FAIL: " + ", ".join(failed)))
    if not r.steps:
        return f"CALT {r.receiver}: {r.current}"
    s = r.steps[-1]
    return (f"step {len(r.steps)} diode {s.level:4s} ND_K {s.nd_k:7.3f} K  DVM1 {s.dvm[0]:9.4f} K (rms {s.std[0]:.4f})"
            f"  DVM2 {s.dvm[1]:9.4f} K (rms {s.std[1]:.4f})  n {s.nsamp}")


def render(r: CaltReport) -> Any:
    """Steps table and, when done, the checks."""
    from rich.console import Group  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    steps = Table(title=f"CALT: receiver {r.receiver}, {r.step_time_s:g} s per step"
                  + (f" — {r.current}" if r.current else ""))
    for col in ("step", "diode", "ND_K (K)", "DVM1 (K)", "rms1 (K)", "DVM2 (K)", "rms2 (K)", "samples"):
        steps.add_column(col, justify="right")
    for i, s in enumerate(r.steps, 1):
        steps.add_row(str(i), s.level, f"{s.nd_k:.3f}", f"{s.dvm[0]:.4f}", f"{s.std[0]:.4f}", f"{s.dvm[1]:.4f}",
                      f"{s.std[1]:.4f}", str(s.nsamp))
    parts: list[Any] = [steps]
    if r.done:
        checks = Table(title=f"Tsys: DVM1 {r.tsys_k[0]:.2f} K, DVM2 {r.tsys_k[1]:.2f} K — "
                       + ("[green]PASS[/]" if r.passed else "[bold red]FAIL[/]"))
        for col in ("check", "DVM", "measured", "expected", "result", "note"):
            checks.add_column(col, justify="left" if col in ("check", "note") else "right")
        for c in r.checks:
            checks.add_row(c.name, str(c.dvm or "-"), f"{c.measured:.4g}", f"{c.expected:.4g}", verdict(c.ok),
                           c.detail)
        parts.append(checks)
    return Group(*parts)


def build_parser() -> common.ProgramParser:
    """``obsctl calt`` arguments."""
    p = common.make_parser(
        NAME,
        "CALT: receiver and DVM test.  With the antenna on a fixed position, switch the selected\n"
        "receiver's noise diode OFF, LOW, HIGH, OFF and integrate both DVMs (LCP, RCP) at each step;\n"
        "report the steps, the diode temperatures (ND_K_RBV), the implied Tsys per DVM and PASS/FAIL\n"
        "against the site's diode temperatures and the radiometer equation.  Exit code 1 if a check\n"
        "fails.  Every diode is off at the end, also after Ctrl-C.",
        ["obsctl calt", "obsctl calt --time 5 --receiver 6cm", "obsctl calt --json"],
        count_help="repeat the test N times (default 1)")
    p.add_argument("--time", type=common.finite_float, default=2.0, metavar="S",
                   help="integration per step, observatory seconds (default 2)")
    p.add_argument("--receiver", default=None, metavar="NAME", help="receiver to test (default: the selected one)")
    p.add_argument("--timeout", type=common.finite_float, default=30.0, metavar="S",
                   help="real seconds allowed per step (default 30)")
    return p


def run(args: argparse.Namespace) -> int:
    """Run CALT ``--count`` times; exit code 1 if any check failed."""
    if not 0 < args.time <= 3600:
        raise common.UsageError(f"--time {args.time:g}: must be in 0..3600 s")
    if args.timeout <= 0:
        raise common.UsageError(f"--timeout {args.timeout:g}: must be positive")
    obs = common.connect(args, needs=["NDI", "RAD"])
    ok = True
    for _ in range(args.count or 1):
        report = run_steps(args, run_calt(obs, args.time, args.receiver, args.timeout), render=render, line=line,
                           record=CaltReport.as_dict)
        ok = ok and bool(report is not None and report.passed)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    """``obsctl calt``."""
    return common.run_main(NAME, build_parser(), argv, run)
