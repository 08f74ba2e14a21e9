"""RADSP: radiometer power spectrum by FFT of the DVM samples, with a plot, the 1/f knee and the white noise.

The radiometer (RAD) flies for ``--seconds`` of observatory time (every synchronous sample, through the
device's kickoff / complete / collect), then for each DVM the power spectral density of the samples is
estimated by Welch's method (scipy, Hann segments of ``--nperseg`` samples, half overlapping, linear detrend,
one-sided, K^2/Hz).  Reported per DVM:

* the white-noise level ``W``: the mean PSD over 20..90 % of the Nyquist frequency, and the rms per sample it
  implies, ``sigma = sqrt(W fs / 2)``;
* the radiometer equation for the same samples, ``sigma = Tsys / sqrt(B tau)`` with Tsys the mean of the
  samples, B the receiver's bandwidth (site file) and tau = 1/fs the sample time; the ratio must lie within
  0.9..1.1 (RF inputs, no median filter);
* the 1/f knee ``f_k`` and slope ``alpha`` of ``P(f) = W (1 + (f_k / f)^alpha)`` fitted to the spectrum below
  90 % of Nyquist (least squares on log P): where the slow gain drift equals the white noise.

The plot (matplotlib, Agg, PNG at ``--out``) shows both spectra, the white levels, the radiometer-equation
level and the fitted model with the knee.  Importable: :func:`collect_samples`, :func:`analyse`.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from opi.programs import common
from opi.programs.steps import run_steps, verdict

NAME = "radsp"
WHITE_BAND = (0.2, 0.9)   # fraction of Nyquist used for the white level
FIT_TOP = 0.9             # fit below this fraction of Nyquist
RATIO_RANGE = (0.9, 1.1)  # white sigma / radiometer equation
RF_UNITS = "K"


@dataclass
class DvmSpectrum:
    """Results for one DVM (levels in K or V as the input; PSD in unit^2/Hz, frequencies in Hz)."""

    dvm: int
    input: str
    units: str
    mean: float
    white_psd: float
    white_sigma: float
    expected_sigma: float | None
    ratio: float | None
    knee_hz: float
    alpha: float
    ok: bool | None

    def text(self) -> str:
        """One line of results."""
        exp = (f"radiometer eq. {self.expected_sigma:.5f} (ratio {self.ratio:.3f})" if self.expected_sigma
               else "radiometer eq. n/a")
        return (f"DVM{self.dvm} ({self.input}): mean {self.mean:.4f} {self.units}  white {self.white_psd:.4g} "
                f"{self.units}^2/Hz = {self.white_sigma:.5f} {self.units}/sample  {exp}  knee {self.knee_hz:.4g} Hz "
                f"(alpha {self.alpha:.2f})")


@dataclass
class RadspReport:
    """Progress of the collection, then the spectra (``done``)."""

    seconds: float
    elapsed: float = 0.0
    n: int = 0
    fs_hz: float = math.nan
    lost: int = 0
    receiver: str = ""
    bandwidth_hz: float = math.nan
    out: str = ""
    spectra: list[DvmSpectrum] = field(default_factory=list)
    done: bool = False
    note: str = ""

    @property
    def passed(self) -> bool | None:
        """Whether every checked DVM agrees with the radiometer equation (None until done)."""
        return all(s.ok is not False for s in self.spectra) if self.done else None

    def as_dict(self) -> dict[str, Any]:
        """The report with its verdict."""
        d = asdict(self)
        d["passed"] = self.passed
        return d


# ---- analysis ------------------------------------------------------------------------------------------
def welch_psd(x: np.ndarray, fs_hz: float, nperseg: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One-sided PSD (unit^2/Hz) of ``x`` sampled at ``fs_hz``: Welch, Hann, 50 % overlap, linear detrend.

    ``nperseg`` defaults to the largest power of two giving at least 8 segments (at least 64 samples).
    """
    from scipy.signal import welch  # noqa: PLC0415

    if nperseg is None:
        nperseg = max(64, 2 ** int(math.floor(math.log2(max(len(x) / 4.5, 64)))))
    nperseg = min(nperseg, len(x))
    f, p = welch(x, fs=fs_hz, window="hann", nperseg=nperseg, noverlap=nperseg // 2, detrend="linear",
                 scaling="density")
    return f, p


def fit_knee(f: np.ndarray, p: np.ndarray, white: float) -> tuple[float, float]:
    """(knee Hz, alpha) of ``P = white (1 + (f_k/f)^alpha)`` fitted in log P below ``FIT_TOP`` of Nyquist."""
    from scipy.optimize import curve_fit  # noqa: PLC0415

    sel = (f > 0) & (f < FIT_TOP * f[-1]) & (p > 0)
    if np.count_nonzero(sel) < 8 or not white > 0:
        return math.nan, math.nan
    ff, lp = f[sel], np.log(p[sel])

    def model(x: np.ndarray, log_fk: float, alpha: float) -> np.ndarray:
        return np.log(white) + np.log1p((np.exp(log_fk) / x) ** alpha)

    # start from where the spectrum first falls below twice the white level
    above = np.flatnonzero(p[sel] > 2 * white)
    fk0 = float(ff[above[-1]]) if above.size else float(ff[0])
    try:
        (log_fk, alpha), _ = curve_fit(model, ff, lp, p0=(math.log(fk0), 1.5),
                                       bounds=((math.log(ff[0] / 10), 0.2), (math.log(f[-1]), 5.0)))
    except (RuntimeError, ValueError):
        return math.nan, math.nan
    return float(math.exp(log_fk)), float(alpha)


def analyse(x: np.ndarray, fs_hz: float, bandwidth_hz: float | None, nperseg: int | None = None,
            ) -> dict[str, Any]:
    """PSD, white level, radiometer-equation sigma (if ``bandwidth_hz``) and knee of one DVM's samples."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    f, p = welch_psd(x, fs_hz, nperseg)
    nyq = fs_hz / 2.0
    band = (f >= WHITE_BAND[0] * nyq) & (f <= WHITE_BAND[1] * nyq)
    white = float(np.mean(p[band]))
    mean = float(np.mean(x))
    expected = mean / math.sqrt(bandwidth_hz / fs_hz) if bandwidth_hz else None
    knee, alpha = fit_knee(f, p, white)
    return {"f": f, "p": p, "mean": mean, "white_psd": white, "white_sigma": math.sqrt(white * fs_hz / 2.0),
            "expected_sigma": expected, "knee_hz": knee, "alpha": alpha}


def collect_samples(obs: common.Observatory, seconds: float, timeout: float,
                    progress: RadspReport | None = None) -> Iterator[dict[str, np.ndarray] | None]:
    """Fly the radiometer for ``seconds`` of observatory time; yields None while collecting (every 0.25 s real,
    updating ``progress.elapsed``), then the samples by column (``index``, ``t``, ``dvm1``, ``dvm2``,
    ``flags``)."""
    rad = obs.device("radiometer")
    rad.kickoff().wait(timeout)
    t0 = obs.now()
    try:
        while (elapsed := obs.now() - t0) < seconds:
            if progress is not None:
                progress.elapsed = elapsed
            yield None
            time.sleep(min(0.25, max((seconds - (obs.now() - t0)) / obs.clock.speed, 0.0) + 0.01))
        rad.complete().wait(timeout)
        cols: dict[str, list] = {}
        for page in rad.collect_pages():
            for key, values in page["data"].items():
                cols.setdefault(key.removeprefix(rad.name + "_"), []).extend(values)
    finally:
        rad.unstage()  # forgets a fly window left open (Ctrl-C)
    yield {k: np.asarray(v) for k, v in cols.items()}


def plot(report: RadspReport, curves: list[dict[str, Any]], out: Path) -> None:
    """Write the PSD plot (PNG) of the analysed DVMs to ``out``."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    colours = ("tab:blue", "tab:orange")
    for spec, c, col in zip(report.spectra, curves, colours, strict=False):
        sel = c["f"] > 0
        f, p = c["f"][sel], c["p"][sel]
        ax.loglog(f, p, color=col, lw=0.8, label=f"DVM{spec.dvm} {spec.input}")
        ax.axhline(spec.white_psd, color=col, ls=":", lw=1.0)
        if spec.expected_sigma:
            ax.axhline(2 * spec.expected_sigma**2 / report.fs_hz, color=col, ls="--", lw=1.0,
                       label=f"radiometer eq. DVM{spec.dvm}")
        if math.isfinite(spec.knee_hz):
            ax.loglog(f, spec.white_psd * (1 + (spec.knee_hz / f) ** spec.alpha), color=col, lw=1.5, alpha=0.6)
            ax.axvline(spec.knee_hz, color=col, ls="-.", lw=0.8, label=f"knee {spec.knee_hz:.3g} Hz")
    units = report.spectra[0].units if report.spectra else "K"
    ax.set_xlabel("frequency (Hz)")
    ax.set_ylabel(f"PSD ({units}$^2$/Hz)")
    ax.set_title(f"RADSP: {report.receiver}, {report.n} samples at {report.fs_hz:g} Hz "
                 f"({report.seconds:g} s)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    plt.close(fig)


def run_radsp(obs: common.Observatory, seconds: float, out: Path, dvms: tuple[int, ...] = (1, 2),
              nperseg: int | None = None, timeout: float = 60.0) -> Iterator[RadspReport]:
    """Collect, analyse and plot; yields the report while collecting and once done."""
    rad = obs.device("radiometer")
    report = RadspReport(seconds=seconds, out=str(out))
    report.receiver = str(rad.rx.get())
    try:
        report.bandwidth_hz = obs.site.receiver(report.receiver).bandwidth_mhz * 1e6
    except KeyError:
        report.bandwidth_hz = math.nan
    filtered = rad.filt.get() != "NONE"
    samples = None
    for item in collect_samples(obs, seconds, timeout + seconds / obs.clock.speed, report):
        if item is None:
            yield report
        else:
            samples = item
    idx, t = samples.get("index", np.empty(0)), samples.get("t", np.empty(0))
    report.n = int(t.size)
    if report.n < 64:
        raise common.ProgramError(f"only {report.n} samples in {seconds:g} s: too few for a spectrum")
    report.lost = int(idx[-1] - idx[0] + 1 - idx.size) if idx.size else 0
    report.fs_hz = float(1.0 / np.median(np.diff(t)))
    report.elapsed = float(t[-1] - t[0])
    curves = []
    for d in dvms:
        sig = getattr(rad, f"sel{d}")
        units = str(getattr(rad, f"dvm{d}_egu").get())
        rf = units == RF_UNITS
        a = analyse(samples[f"dvm{d}"], report.fs_hz, report.bandwidth_hz if rf else None, nperseg)
        ratio = a["white_sigma"] / a["expected_sigma"] if a["expected_sigma"] else None
        ok = None if ratio is None or filtered else RATIO_RANGE[0] <= ratio <= RATIO_RANGE[1]
        report.spectra.append(DvmSpectrum(d, str(sig.get()), units, a["mean"], a["white_psd"], a["white_sigma"],
                                          a["expected_sigma"], ratio, a["knee_hz"], a["alpha"], ok))
        curves.append(a)
    if filtered:
        report.note = "median filter on: the radiometer equation is not checked"
    plot(report, curves, out)
    report.done = True
    yield report


# ---- display -------------------------------------------------------------------------------------------
def line(r: RadspReport) -> str:
    """Progress while collecting; the results (one DVM per line) when done."""
    if not r.done:
        return f"RADSP: collecting {r.elapsed:6.1f} / {r.seconds:g} s"
    head = (f"RADSP {r.receiver}: {r.n} samples at {r.fs_hz:g} Hz, {r.lost} lost, B {r.bandwidth_hz / 1e6:g} MHz, "
            f"plot {r.out}  " + ("PASS" if r.passed else "FAIL"))
    return "\n".join([head] + [s.text() for s in r.spectra] + ([r.note] if r.note else []))


def render(r: RadspReport) -> Any:
    """Progress bar while collecting; the results table when done."""
    from rich.progress_bar import ProgressBar  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    if not r.done:
        table = Table(title=f"RADSP: collecting radiometer samples ({r.seconds:g} s observatory time)",
                      show_header=False)
        table.add_column("")
        table.add_column("")
        table.add_row(ProgressBar(total=r.seconds, completed=min(r.elapsed, r.seconds), width=40),
                      f"{r.elapsed:.1f} / {r.seconds:g} s")
        return table
    table = Table(title=f"RADSP: {r.receiver}, {r.n} samples at {r.fs_hz:g} Hz, {r.lost} lost — "
                  + ("[green]PASS[/]" if r.passed else "[bold red]FAIL[/]"),
                  caption=f"plot: {r.out}" + (f"  ({r.note})" if r.note else ""))
    for col in ("DVM", "input", "mean", "white PSD", "white rms/sample", "Tsys/sqrt(B tau)", "ratio", "1/f knee",
                "alpha", "result"):
        table.add_column(col, justify="left" if col in ("input", "result") else "right")
    for s in r.spectra:
        table.add_row(str(s.dvm), s.input, f"{s.mean:.4f} {s.units}", f"{s.white_psd:.4g} {s.units}²/Hz",
                      f"{s.white_sigma:.5f} {s.units}",
                      f"{s.expected_sigma:.5f} {s.units}" if s.expected_sigma else "n/a",
                      f"{s.ratio:.3f}" if s.ratio else "n/a", f"{s.knee_hz:.4g} Hz", f"{s.alpha:.2f}", verdict(s.ok))
    return table


def build_parser() -> common.ProgramParser:
    """``obsctl radsp`` arguments."""
    p = common.make_parser(
        NAME,
        "RADSP: radiometer power spectrum.  Collect --seconds of DVM samples (observatory time), estimate\n"
        "the PSD of each DVM (Welch, scipy), print the white-noise level against the radiometer equation\n"
        "Tsys/sqrt(B tau) and the 1/f knee, and plot the spectra to --out (PNG).  Exit code 1 if the\n"
        "white level disagrees with the radiometer equation by more than 10 %.",
        ["obsctl radsp", "obsctl radsp --seconds 600 --out /tmp/psd.png", "obsctl radsp --dvm 1 --json"],
        count=False)
    p.add_argument("--seconds", type=common.finite_float, default=300.0, metavar="S",
                   help="observatory seconds of samples (default 300)")
    p.add_argument("--dvm", default="both", choices=("1", "2", "both"), help="DVM(s) to analyse (default both)")
    p.add_argument("--out", default="radsp.png", metavar="FILE", help="PNG plot (default radsp.png)")
    p.add_argument("--nperseg", type=int, default=None, metavar="N",
                   help="samples per Welch segment (default: a power of two giving >= 8 segments)")
    p.add_argument("--timeout", type=common.finite_float, default=60.0, metavar="S",
                   help="real seconds allowed beyond the collection (default 60)")
    return p


def run(args: argparse.Namespace) -> int:
    """Collect, analyse, plot; exit code 1 if the white level disagrees with the radiometer equation."""
    if not 1.0 <= args.seconds <= 86400:
        raise common.UsageError(f"--seconds {args.seconds:g}: must be in 1..86400")
    if args.nperseg is not None and args.nperseg < 16:
        raise common.UsageError(f"--nperseg {args.nperseg}: must be at least 16")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise common.UsageError(f"--out {args.out}: the plot is a PNG file (*.png)")
    if out.parent and not out.parent.exists():
        raise common.UsageError(f"--out {args.out}: directory {out.parent} does not exist")
    dvms = (1, 2) if args.dvm == "both" else (int(args.dvm),)
    obs = common.connect(args, needs=["RAD"])
    report = run_steps(args, run_radsp(obs, args.seconds, out, dvms, args.nperseg, args.timeout), render=render,
                       line=line, record=RadspReport.as_dict)
    return 0 if report is not None and report.passed else 1


def main(argv: list[str] | None = None) -> int:
    """``obsctl radsp``."""
    return common.run_main(NAME, build_parser(), argv, run)
