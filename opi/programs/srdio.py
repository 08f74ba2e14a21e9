"""SRDIO: serial digital I/O test — write patterns to the front-end select registers and read them back.

The front end's digital I/O (NDI IOC, the SDIO equivalent) latches the noise-diode select register and the
selects of the receiver, general-purpose receiver input, IF filter, mixer, chart pens and noise-adding
diodes.  For each register the test writes a sequence of patterns and reads every one back from the IOC:

* ``ND_SEL``: walking ones and walking zeros over the register width (``ND_BITS_RBV``), all zeros, all ones
  and the alternating patterns 0101... and 1010...; read back on ``ND_SEL_RBV`` (the latched register) and
  ``ND_K_RBV`` (the diode temperature the pattern injects into the selected receiver, from the site's diode
  temperatures), and a value one bit wider than the register must be refused, leaving the register as it was;
* the enum selects (``RX_SEL``, ``GPR_IN``, ``IF_BW`` with ``IF_BW_RBV``, ``MIXER``, ``CHART1``, ``CHART2``,
  ``NAD18``, ``NAD13``): every state in turn ("walking one" over the select lines), read back.

The original values are restored at the end (also after Ctrl-C or a failure).  Exit code 1 if a read-back
differs.  Importable: :func:`run_srdio` yields :class:`SrdioReport` snapshots; :func:`nd_patterns`.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from opi.programs import common
from opi.programs.steps import report_dict, run_steps, verdict

NAME = "srdio"
#: enum selects: (register name, Instrumentation component)
SELECTS = (("RX_SEL", "rx_sel"), ("GPR_IN", "gpr_in"), ("IF_BW", "if_bw"), ("MIXER", "mixer"),
           ("CHART1", "chart1"), ("CHART2", "chart2"), ("NAD18", "nad18"), ("NAD13", "nad13"))
REGISTERS = ("ND_SEL",) + tuple(name for name, _ in SELECTS)
MAX_ERRORS = 5  # mismatches listed per register


def nd_patterns(bits: int) -> list[int]:
    """Test patterns of a ``bits``-wide register: walking ones, walking zeros, 0, all ones, 0101..., 1010...."""
    full = (1 << bits) - 1
    alt = int("01" * (bits // 2) + "0" * (bits % 2), 2) & full
    ones = [1 << i for i in range(bits)]
    zeros = [full ^ (1 << i) for i in range(bits)]
    return ones + zeros + [0, full, alt, full ^ alt]


def diode_k(register: int, rx_index: int, low_k: float, high_k: float, nad_k: float = 0.0) -> float:
    """Diode temperature (K) a register value injects into receiver ``rx_index`` (bits 2i LOW, 2i+1 HIGH)."""
    k = nad_k
    if register >> (2 * rx_index) & 1:
        k += low_k
    if register >> (2 * rx_index + 1) & 1:
        k += high_k
    return k


@dataclass
class RegisterResult:
    """Patterns written to one register, how many read back correctly, and the first mismatches."""

    register: str
    written: int = 0
    correct: int = 0
    errors: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> bool:
        """Every pattern read back."""
        return self.written > 0 and self.correct == self.written and not self.errors

    def fail(self, text: str) -> None:
        """Record a mismatch."""
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(text)
        elif len(self.errors) == MAX_ERRORS:
            self.errors.append("...")


@dataclass
class SrdioReport:
    """Results per register; ``done`` once every register has been tested and the originals restored."""

    results: list[RegisterResult] = field(default_factory=list)
    restored: bool | None = None
    done: bool = False
    current: str = ""

    @property
    def passed(self) -> bool | None:
        """Whether every register read back every pattern and the originals were restored (None until done)."""
        return all(r.ok for r in self.results) and bool(self.restored) if self.done else None

    def as_dict(self) -> dict[str, Any]:
        """The report with per-register verdicts."""
        return report_dict(self)


def _test_nd(ndi: Any, receivers: list[Any], timeout: float) -> RegisterResult:
    from devices.common import CommandRefused  # noqa: PLC0415  (imports ophyd: only when testing)

    res = RegisterResult("ND_SEL")
    bits = int(ndi.nd_bits.get())
    rx_name = ndi.rx_sel.get()
    idx = [r.name for r in receivers].index(rx_name)
    rx = receivers[idx]
    nad = sum(rx.noise_diode_low_k for sig, name in ((ndi.nad18, "18cm"), (ndi.nad13, "13cm"))
              if name == rx.name and sig.get() == "ON")
    for pattern in nd_patterns(bits):
        res.written += 1
        ndi.nd_sel.checked_put(pattern, timeout=timeout)
        got = int(ndi.nd_sel_rbv.fresh()[0])
        k = float(ndi.nd_k.fresh()[0])
        exp_k = diode_k(pattern, idx, rx.noise_diode_low_k, rx.noise_diode_high_k, nad)
        if got != pattern:
            res.fail(f"wrote {pattern:#0{bits // 4 + 2}x}, read {got:#0{bits // 4 + 2}x}")
        elif abs(k - exp_k) > 1e-6:
            res.fail(f"{pattern:#x}: ND_K {k:g} K, expected {exp_k:g} K")
        else:
            res.correct += 1
    before = int(ndi.nd_sel_rbv.fresh()[0])
    res.written += 1
    try:
        ndi.nd_sel.checked_put(1 << bits, timeout=timeout)
        res.fail(f"{1 << bits:#x} beyond the {bits}-bit register was accepted")
    except CommandRefused as err:
        if int(ndi.nd_sel_rbv.fresh()[0]) == before:
            res.correct += 1
            res.note = f"{bits} bits; {1 << bits:#x} refused: {str(err).split('refused: ')[-1]}"
        else:
            res.fail("a refused value changed the register")
    return res


def _test_select(ndi: Any, name: str, comp: str, timeout: float) -> RegisterResult:
    res = RegisterResult(name)
    sig = getattr(ndi, comp)
    states = list(sig.enum_strs or ())
    for state in states:
        res.written += 1
        sig.checked_put(state, timeout=timeout)
        got = str(sig.fresh()[0])
        if got != state:
            res.fail(f"wrote {state}, read {got}")
            continue
        if comp == "if_bw":
            mhz = float(ndi.if_bw_rbv.fresh()[0])
            if abs(mhz - float(state.removesuffix("MHz"))) > 1e-9:
                res.fail(f"{state}: IF_BW_RBV {mhz:g} MHz")
                continue
        res.correct += 1
    res.note = f"{len(states)} states"
    return res


def run_srdio(obs: common.Observatory, registers: list[str] | None = None,
              timeout: float = 10.0) -> Iterator[SrdioReport]:
    """Test ``registers`` (default all of :data:`REGISTERS`) on NDI, yielding the report after each register;
    the original values are written back at the end."""
    ndi = obs.device("instrumentation")
    todo = list(registers or REGISTERS)
    comps = dict(SELECTS)
    original = {name: getattr(ndi, comps[name]).get() for name in todo if name in comps}
    original_nd = int(ndi.nd_sel.get())
    report = SrdioReport()
    try:
        for name in todo:
            report.current = name
            yield report
            if name == "ND_SEL":
                report.results.append(_test_nd(ndi, list(obs.site.receivers), timeout))
            else:
                report.results.append(_test_select(ndi, name, comps[name], timeout))
        report.current = "restoring"
        yield report
    finally:
        restored = True
        for name, value in original.items():
            sig = getattr(ndi, comps[name])
            sig.checked_put(value, timeout=timeout)
            restored = restored and str(sig.fresh()[0]) == str(value)
        if "ND_SEL" in todo:
            ndi.nd_sel.checked_put(original_nd, timeout=timeout)
            restored = restored and int(ndi.nd_sel_rbv.fresh()[0]) == original_nd
        report.restored = restored
    report.current = ""
    report.done = True
    yield report


# ---- display -------------------------------------------------------------------------------------------
def line(r: SrdioReport) -> str:
    """One text line per register, the verdict at the end."""
    if r.done:
        bad = [x.register for x in r.results if not x.ok]
        return (f"SRDIO: {len(r.results)} registers, originals {'restored' if r.restored else 'NOT restored'}  "
                + ("PASS" if r.passed else "FAIL: " + ", ".join(bad or ["restore"])))
    if not r.results:
        return f"SRDIO: testing {r.current}"
    x = r.results[-1]
    return (f"{x.register:8s} {x.correct}/{x.written} patterns read back  {'PASS' if x.ok else 'FAIL'}"
            + (f"  {x.note}" if x.note else "") + (f"  errors: {'; '.join(x.errors)}" if x.errors else ""))


def render(r: SrdioReport) -> Any:
    """Table of the registers tested so far."""
    from rich.table import Table  # noqa: PLC0415

    title = "SRDIO: front-end select registers (NDI)"
    if r.current:
        title += f" — {r.current}"
    elif r.done:
        title += " — " + ("[green]PASS[/]" if r.passed else "[bold red]FAIL[/]")
    table = Table(title=title, caption=None if r.restored is None else
                  ("originals restored" if r.restored else "[bold red]originals NOT restored[/]"))
    for col in ("register", "patterns", "read back", "result", "note / errors"):
        table.add_column(col, justify="right" if col in ("patterns", "read back") else "left")
    for x in r.results:
        table.add_row(x.register, str(x.written), str(x.correct), verdict(x.ok), "; ".join(x.errors) or x.note)
    return table


def build_parser() -> common.ProgramParser:
    """``obsctl srdio`` arguments."""
    p = common.make_parser(
        NAME,
        "SRDIO: serial digital I/O test of the front end (NDI).  Write walking-one / walking-zero and\n"
        "alternating patterns to the noise-diode select register and every state to the receiver, GPR\n"
        "input, IF filter, mixer, chart and noise-adding-diode selects; read each back and report\n"
        "PASS/FAIL per register.  The original values are restored at the end (also after Ctrl-C).\n"
        f"Registers: {', '.join(REGISTERS)}.",
        ["obsctl srdio", "obsctl srdio --registers ND_SEL,IF_BW", "obsctl srdio --json"],
        count_help="repeat the test N times (default 1)")
    p.add_argument("--registers", default=None, metavar="LIST", help="comma-separated registers (default: all)")
    return p


def run(args: argparse.Namespace) -> int:
    """Run SRDIO ``--count`` times; exit code 1 if a register failed."""
    registers = None
    if args.registers is not None:
        registers = [r.strip().upper() for r in args.registers.split(",") if r.strip()]
        unknown = [r for r in registers if r not in REGISTERS]
        if unknown or not registers:
            raise common.UsageError(f"--registers: unknown {', '.join(unknown) or 'empty list'}; "
                                    f"use {', '.join(REGISTERS)}")
    obs = common.connect(args, needs=["NDI"])
    ok = True
    for _ in range(args.count or 1):
        report = run_steps(args, run_srdio(obs, registers), render=render, line=line, record=SrdioReport.as_dict)
        ok = ok and bool(report is not None and report.passed)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    """``obsctl srdio``."""
    return common.run_main(NAME, build_parser(), argv, run)
