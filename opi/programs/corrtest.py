"""CORRTEST: the autocorrelation spectrometer in several modes — sampler levels, spectrum length and flatness.

For every quadrant configuration (``--quads``: 1x2048, 2x1024 dual polarisation, 4x512 two bands dual
polarisation, each with the most lags it allows) and every bandwidth (``--bw``, MHz per section) the correlator
(COR) integrates ``--time`` observatory seconds on the sky, or with ``--diode LOW|HIGH`` on the noise diode
added to it, and the result is checked:

* sampler levels: ``LEVEL_STS`` OK (every sampler of the configuration inside its thresholds);
* spectrum length: ``NSEC_RBV`` sections of ``NCHAN_SP`` channels each (spectrum and frequency axis), each
  section's frequency axis spanning the bandwidth;
* flatness: on each section (10 % of the channels dropped at either edge: the IF filter skirts) the
  spectrum divided by its median has a linear trend below 2 % across the band and an rms about that trend
  below 1.5 times the radiometer noise expected of a 3-level correlator, ``1.23 w / sqrt(B_ch tau)`` (B_ch
  the channel width, tau the integration, w the rms of the lag window: 0.61 for HANN);
* level: the median of the spectrum within 5 % of ``TSYS_RBV``, and Tsys within 0.5..3 times the receiver's.

The correlator settings and the noise-diode register are restored at the end (also after Ctrl-C).
Exit code 1 if a mode fails.  Importable: :func:`run_corrtest` yields :class:`CorrReport` snapshots;
:func:`flatness` measures one section.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from opi.programs import common
from opi.programs.steps import report_dict, run_steps, verdict

NAME = "corrtest"
QUAD_KEYS = ("1x2048", "2x1024", "4x512")
TOTAL_LAGS = 2048
EDGE = 0.10            # fraction of channels dropped at either edge (the IF filter skirts)
SLOPE_MAX = 0.02       # largest linear trend across a section (fraction of the level)
QUANT_FACTOR = 1.23    # noise of a 3-level correlator relative to an ideal one
RIPPLE_FACTOR = 1.5    # allowed rms / expected rms
LEVEL_TOL = 0.05


def window_noise_factor(kind: str, nlag: int = 1024) -> float:
    """rms of the lag window (HANN, HAMMING, UNIFORM, as documented for WINDOW_SP): the factor by which the
    window lowers the channel noise of the spectrum."""
    k = np.arange(nlag)
    w = {"HANN": 0.5 * (1 + np.cos(np.pi * k / nlag)), "HAMMING": 0.54 + 0.46 * np.cos(np.pi * k / nlag),
         "UNIFORM": np.ones(nlag)}.get(kind.upper())
    if w is None:
        raise ValueError(f"unknown lag window {kind!r}")
    return float(np.sqrt(np.mean(w**2)))


def flatness(spectrum: np.ndarray) -> tuple[float, float]:
    """(trend, rms) of one section: the linear trend across the band and the rms about it, both as fractions
    of the median level, with ``EDGE`` of the channels dropped at either edge."""
    s = np.asarray(spectrum, dtype=float)
    k = int(len(s) * EDGE)
    core = s[k:len(s) - k] if len(s) - 2 * k >= 8 else s
    norm = core / np.median(core)
    x = np.linspace(-0.5, 0.5, len(norm))
    slope, icpt = np.polyfit(x, norm, 1)
    resid = norm - (slope * x + icpt)
    return float(slope), float(np.std(resid, ddof=2))


@dataclass
class ModeResult:
    """One correlator mode: settings, what was measured and the checks."""

    quad: str
    bw_mhz: float
    nsec: int
    nchan: int
    length: int
    levels: list[float]
    level_sts: str
    tsys_k: float
    median_k: float
    trend: float
    rms: float
    rms_expected: float
    checks: dict[str, bool] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Every check passed."""
        return bool(self.checks) and all(self.checks.values())


@dataclass
class CorrReport:
    """Modes tested so far; ``done`` once all have been and the settings were restored."""

    receiver: str
    int_time_s: float
    diode: str
    total: int
    results: list[ModeResult] = field(default_factory=list)
    done: bool = False
    current: str = ""

    @property
    def passed(self) -> bool | None:
        """Whether every mode passed (None until done)."""
        return all(r.ok for r in self.results) if self.done else None

    def as_dict(self) -> dict[str, Any]:
        """The report with per-mode verdicts."""
        return report_dict(self)


def quad_state(states: list[str], key: str) -> str:
    """The QUAD_SP state named by ``key`` (its start, e.g. "2x1024"); ValueError if none or several."""
    match = [s for s in states if s.lower().startswith(key.strip().lower())]
    if len(match) != 1:
        raise ValueError(f"{key!r} is not one of {', '.join(states)}")
    return match[0]


def measure_mode(cor: Any, quad: str, bw: str, int_time_s: float, tsys_nominal_k: float,
                 timeout: float) -> ModeResult:
    """Configure one mode, integrate, and check the result."""
    cor.quad.checked_put(quad, timeout=timeout)
    nsec_exp = {k: n for k, n in zip(QUAD_KEYS, (1, 2, 4), strict=True)}[quad.split()[0]]
    nchan = TOTAL_LAGS // nsec_exp
    cor.nchan.checked_put(str(nchan), timeout=timeout)
    cor.bw.checked_put(bw, timeout=timeout)
    cor.int_time.checked_put(int_time_s, timeout=timeout)
    cor.trigger().wait(timeout)
    spec = np.asarray(cor.spectrum.fresh()[0], dtype=float)
    freq = np.asarray(cor.freq_axis.fresh()[0], dtype=float)
    nsec = int(cor.nsec.fresh()[0])
    tsys = float(cor.tsys.fresh()[0])
    levels = [float(getattr(cor, f"level{i}").fresh()[0]) for i in range(1, 5)]
    level_sts = str(cor.level_sts.fresh()[0])
    bw_mhz = float(bw)
    expected_rms = (QUANT_FACTOR * window_noise_factor(str(cor.window.get()), nchan)
                    / math.sqrt(bw_mhz * 1e6 / nchan * int_time_s))
    trends, rmss, spans = [], [], []
    for j in range(min(nsec, len(spec) // max(nchan, 1))):
        sec = spec[j * nchan:(j + 1) * nchan]
        tr, rms = flatness(sec)
        trends.append(tr)
        rmss.append(rms)
        f = freq[j * nchan:(j + 1) * nchan]
        spans.append(abs(f[-1] - f[0]) * nchan / max(nchan - 1, 1))
    median = float(np.median(spec)) if spec.size else math.nan
    res = ModeResult(quad=quad, bw_mhz=bw_mhz, nsec=nsec, nchan=nchan, length=int(spec.size),
                     levels=levels, level_sts=level_sts, tsys_k=tsys, median_k=median,
                     trend=max(trends, key=abs) if trends else math.nan, rms=max(rmss) if rmss else math.nan,
                     rms_expected=expected_rms)
    res.checks = {
        "levels": level_sts == "OK",
        "length": nsec == nsec_exp and spec.size == freq.size == nsec * nchan
        and all(abs(s / bw_mhz - 1) < 0.02 for s in spans),
        "flat": bool(trends) and max(abs(t) for t in trends) < SLOPE_MAX
        and max(rmss) < RIPPLE_FACTOR * expected_rms,
        "level": tsys > 0 and abs(median / tsys - 1) < LEVEL_TOL and 0.5 * tsys_nominal_k < tsys < 3 * tsys_nominal_k,
    }
    return res


def run_corrtest(obs: common.Observatory, quads: list[str], bws: list[str], int_time_s: float = 10.0,
                 diode: str = "OFF", timeout: float = 60.0) -> Iterator[CorrReport]:
    """Test every (quadrant configuration, bandwidth); yield the report after each; restore the settings."""
    cor = obs.device("correlator")
    ndi = obs.device("instrumentation") if obs.has("NDI") else None
    saved = {k: getattr(cor, k).get() for k in ("quad", "nchan", "bw", "int_time")}
    nd_saved = int(ndi.nd_sel.get()) if ndi is not None else None
    rx_name = str(cor.rx.get())
    rx = obs.site.receiver(rx_name)
    report = CorrReport(receiver=rx_name, int_time_s=int_time_s, diode=diode, total=len(quads) * len(bws))
    try:
        if diode != "OFF":
            if ndi is None:
                raise common.ProgramError("--diode needs the NDI IOC")
            ndi.set_diode(diode).wait(timeout)
        for quad in quads:
            for bw in bws:
                report.current = f"{quad}, {bw} MHz"
                yield report
                report.results.append(measure_mode(cor, quad, bw, int_time_s, rx.tsys_k, timeout))
        report.current = "restoring"
        yield report
    finally:
        if cor.state.get() == "INTEGRATING":
            cor.reset().wait(timeout)
        # quad first: it bounds the number of lags
        for key in ("quad", "nchan", "bw", "int_time"):
            getattr(cor, key).checked_put(saved[key], timeout=timeout)
        if ndi is not None and nd_saved is not None:
            ndi.nd_sel.checked_put(nd_saved, timeout=timeout)
    report.current = ""
    report.done = True
    yield report


# ---- display -------------------------------------------------------------------------------------------
def _row(r: ModeResult) -> list[str]:
    return [r.quad, f"{r.bw_mhz:g}", f"{r.nsec}x{r.nchan}", str(r.length),
            " ".join(f"{v:.2f}" for v in r.levels[:max(r.nsec, 1)]), r.level_sts, f"{r.tsys_k:.2f}",
            f"{r.trend:+.4f}", f"{r.rms:.5f} / {r.rms_expected:.5f}"]


def line(r: CorrReport) -> str:
    """One text line per mode, the verdict at the end."""
    if r.done:
        bad = [f"{x.quad} {x.bw_mhz:g} MHz" for x in r.results if not x.ok]
        return f"CORRTEST {r.receiver}: {len(r.results)} modes  " + ("PASS" if r.passed else "FAIL: " + ", ".join(bad))
    if not r.results:
        return f"CORRTEST {r.receiver}: {r.total} modes, {r.int_time_s:g} s each, diode {r.diode}"
    x = r.results[-1]
    failed = [k for k, v in x.checks.items() if not v]
    cells = _row(x)
    return (f"{cells[0]:22s} BW {cells[1]:>4s} MHz  {cells[2]:>7s} ch  levels {cells[4]} {cells[5]}  Tsys {cells[6]} K"
            f"  trend {cells[7]}  rms {cells[8]}  " + ("PASS" if x.ok else "FAIL " + ",".join(failed)))


def render(r: CorrReport) -> Any:
    """The table of modes tested so far."""
    from rich.table import Table  # noqa: PLC0415

    title = f"CORRTEST: {r.receiver}, {r.int_time_s:g} s per mode, diode {r.diode}"
    if r.current:
        title += f" — {r.current}"
    elif r.done:
        title += " — " + ("[green]PASS[/]" if r.passed else "[bold red]FAIL[/]")
    table = Table(title=title)
    for col in ("mode", "BW MHz", "sections", "length", "levels", "LEVEL_STS", "Tsys K", "trend", "rms / expected",
                "result"):
        table.add_column(col, justify="left" if col in ("mode", "levels", "result") else "right")
    for x in r.results:
        failed = [k for k, v in x.checks.items() if not v]
        table.add_row(*_row(x), verdict(x.ok) + (f" {','.join(failed)}" if failed else ""))
    return table


def build_parser() -> common.ProgramParser:
    """``obsctl corrtest`` arguments."""
    p = common.make_parser(
        NAME,
        "CORRTEST: run the correlator in several modes (quadrant configurations x bandwidths), one\n"
        "integration each on the sky or the noise diode, and check the sampler levels (LEVEL_STS OK), the\n"
        "spectrum length (sections x channels) and its flatness against the radiometer noise; report a\n"
        "table PASS/FAIL.  The settings are restored at the end.  Exit code 1 if a mode fails.",
        ["obsctl corrtest", "obsctl corrtest --quads 4x512 --bw 2,16,64 --time 30",
         "obsctl corrtest --diode HIGH --json"], count_help="repeat the test N times (default 1)")
    p.add_argument("--quads", default=",".join(QUAD_KEYS), metavar="LIST",
                   help=f"quadrant configurations (default {','.join(QUAD_KEYS)})")
    p.add_argument("--bw", default="1,16", metavar="LIST", help="bandwidths per section, MHz (default 1,16)")
    p.add_argument("--time", type=common.finite_float, default=10.0, metavar="S",
                   help="integration per mode, observatory seconds (default 10)")
    p.add_argument("--diode", default="OFF", type=str.upper, choices=("OFF", "LOW", "HIGH"),
                   help="noise diode during the integrations (default OFF: the sky)")
    p.add_argument("--timeout", type=common.finite_float, default=120.0, metavar="S",
                   help="real seconds allowed per mode (default 120)")
    return p


def run(args: argparse.Namespace) -> int:
    """Run CORRTEST ``--count`` times; exit code 1 if a mode failed."""
    if not 0.1 <= args.time <= 3600:
        raise common.UsageError(f"--time {args.time:g}: must be in 0.1..3600 s")
    keys = [q.strip() for q in args.quads.split(",") if q.strip()]
    bws = [b.strip() for b in args.bw.split(",") if b.strip()]
    if not keys or not bws:
        raise common.UsageError("--quads and --bw need at least one value each")
    obs = common.connect(args, needs=["COR"])
    cor = obs.device("correlator")
    try:
        quads = [quad_state(list(cor.quad.enum_strs), k) for k in keys]
    except ValueError as err:
        raise common.UsageError(f"--quads: {err}") from None
    bad = [b for b in bws if b not in cor.bw.enum_strs]
    if bad:
        raise common.UsageError(f"--bw {','.join(bad)}: not one of {', '.join(cor.bw.enum_strs)} MHz")
    ok = True
    for _ in range(args.count or 1):
        report = run_steps(args, run_corrtest(obs, quads, bws, args.time, args.diode, args.timeout), render=render,
                           line=line, record=CorrReport.as_dict)
        ok = ok and bool(report is not None and report.passed)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    """``obsctl corrtest``."""
    return common.run_main(NAME, build_parser(), argv, run)
