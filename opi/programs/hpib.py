"""HPIB: exercise an instrument by its own commands — HP-IB program strings to a synthesizer.

Each command is sent as the instrument's program string (``COMMAND_SP`` of SYN1 / SYN2, through
:meth:`devices.synthesizer.Synthesizer.program`), e.g. ``"FR 1420.405 MZ"`` or ``"AP -10 DM"`` on the HP 8662A
(SYN1), ``"FR10.7MH"`` or ``"AM-20DB"`` on the HP 3336B (SYN2).  After each the readbacks are shown: the
synthesised frequency (quantised to the instrument's resolution), the output level, RF state and phase lock.
A string the instrument refuses (malformed, the other model's syntax, out of range) shows the IOC's reason and
changes nothing; the remaining commands still run, and the exit code is 1.

``--script FILE`` runs the lines of a file (``-`` reads standard input): blank lines and ``#`` comments are
skipped, a line ``@SYN2`` switches the instrument for the lines that follow, and ``@SYN2 FR10MH`` sends one line
to another instrument.  Without commands the readbacks are shown, refreshed in place until Ctrl-C.
Importable: :func:`send_commands` yields :class:`HpibLog` snapshots.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from opi.programs import common
from opi.programs.steps import run_steps

NAME = "hpib"
INSTRUMENTS = ("SYN1", "SYN2")


@dataclass
class SynthReadback:
    """Readbacks of one synthesizer: frequency (Hz), level (dBm), RF output, lock, model."""

    device: str
    model: str
    freq_hz: float
    freq_res_hz: float
    power_dbm: float
    rf: str
    lock: str

    def text(self) -> str:
        """One line of readbacks."""
        return (f"{self.device} {self.model}: {format_hz(self.freq_hz)} (res {self.freq_res_hz:g} Hz)  "
                f"{self.power_dbm:+.2f} dBm  RF {self.rf}  {self.lock}")


@dataclass
class CommandResult:
    """One program string sent: accepted or refused (with the IOC's reason) and the readbacks after it."""

    device: str
    command: str
    ok: bool
    reason: str
    after: SynthReadback


@dataclass
class HpibLog:
    """The commands sent so far; ``done`` after the last."""

    results: list[CommandResult] = field(default_factory=list)
    done: bool = False
    total: int = 0

    @property
    def refused(self) -> int:
        """Number of refused commands."""
        return sum(not r.ok for r in self.results)

    def as_dict(self) -> dict[str, Any]:
        """Every command with its outcome and readbacks."""
        return {"results": [asdict(r) for r in self.results], "sent": len(self.results), "refused": self.refused,
                "done": self.done}


def format_hz(freq_hz: float) -> str:
    """A frequency in MHz, kHz or Hz with every significant digit."""
    for unit, scale in (("MHz", 1e6), ("kHz", 1e3)):
        if abs(freq_hz) >= scale:
            return f"{freq_hz / scale:.12g} {unit}"
    return f"{freq_hz:.12g} Hz"


def read_synth(syn: Any) -> SynthReadback:
    """Readbacks of a connected :class:`devices.synthesizer.Synthesizer`, read now from the IOC."""
    return SynthReadback(device=syn.prefix.rstrip(":").split(":")[-1], model=str(syn.model.get()),
                         freq_hz=float(syn.freq_rbv.fresh()[0]), freq_res_hz=float(syn.freq_res.fresh()[0]),
                         power_dbm=float(syn.power_rbv.fresh()[0]), rf=str(syn.rf.fresh()[0]),
                         lock=str(syn.lock.fresh()[0]))


def parse_script(lines: Iterable[str], device: str) -> list[tuple[str, str]]:
    """(instrument, program string) pairs from script lines (see the module doc); ValueError on a bad line."""
    out = []
    for n, raw in enumerate(lines, 1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        if text.startswith("@"):
            head, _, rest = text[1:].partition(" ")
            dev = head.strip().upper()
            if dev not in INSTRUMENTS:
                known = ", ".join("@" + d for d in INSTRUMENTS)
                raise ValueError(f"line {n}: unknown instrument @{head} (use {known})")
            if rest.strip():
                out.append((dev, rest.strip()))
            else:
                device = dev
            continue
        out.append((device, text))
    return out


def send_commands(obs: common.Observatory, commands: list[tuple[str, str]],
                  timeout: float = 10.0) -> Iterator[HpibLog]:
    """Send each (instrument, program string) in turn; yield the log after each."""
    from devices.common import CommandRefused  # noqa: PLC0415  (imports ophyd: only when sending)

    log = HpibLog(total=len(commands), done=not commands)
    yield log
    for dev, text in commands:
        syn = obs.device(dev.lower())
        try:
            syn.program(text).wait(timeout)
            ok, reason = True, ""
        except CommandRefused:
            ok, reason = False, syn.last_message()
        log.results.append(CommandResult(dev, text, ok, reason, read_synth(syn)))
        log.done = len(log.results) == len(commands)
        yield log


# ---- display -------------------------------------------------------------------------------------------
def line(log: HpibLog) -> str:
    """One text line per command, a summary at the end."""
    if not log.results:
        return f"HPIB: {log.total} command(s) to send"
    r = log.results[-1]
    head = f"{r.device} <- {r.command!r}: " + ("OK" if r.ok else f"REFUSED ({r.reason})")
    tail = f"  [{len(log.results)} sent, {log.refused} refused]" if log.done else ""
    return f"{head}  -> {r.after.text()}{tail}"


def render(log: HpibLog) -> Any:
    """Table of the commands sent so far with the readbacks after each."""
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=f"HPIB: {len(log.results)}/{log.total} sent, {log.refused} refused")
    for col in ("#", "instrument", "command", "result", "frequency", "level", "RF", "lock"):
        table.add_column(col, justify="right" if col in ("#", "frequency", "level") else "left")
    for i, r in enumerate(log.results, 1):
        a = r.after
        result = "[green]OK[/]" if r.ok else f"[bold red]REFUSED[/] {r.reason}"
        table.add_row(str(i), f"{r.device} {a.model}", r.command, result, format_hz(a.freq_hz),
                      f"{a.power_dbm:+.2f} dBm", a.rf, a.lock)
    return table


def _status_render(readings: list[SynthReadback]) -> Any:
    from rich.table import Table  # noqa: PLC0415

    table = Table(title="HPIB: synthesizer readbacks")
    for col in ("instrument", "model", "frequency", "resolution", "level", "RF", "lock"):
        table.add_column(col, justify="right" if col in ("frequency", "resolution", "level") else "left")
    for r in readings:
        table.add_row(r.device, r.model, format_hz(r.freq_hz), f"{r.freq_res_hz:g} Hz", f"{r.power_dbm:+.2f} dBm",
                      r.rf, f"[green]{r.lock}[/]" if r.lock == "LOCKED" else f"[yellow]{r.lock}[/]")
    return table


# ---- the program ---------------------------------------------------------------------------------------
def build_parser() -> common.ProgramParser:
    """``obsctl hpib`` arguments."""
    p = common.make_parser(
        NAME,
        "HPIB: exercise an instrument by its commands.  Send HP-IB program strings to a synthesizer\n"
        "(SYN1 HP 8662A: 'FR 1420.405 MZ', 'AP -10 DM'; SYN2 HP 3336B: 'FR10.7MH', 'AM-20DB') and show the\n"
        "readbacks after each; a refused string shows the instrument's reason (exit code 1).  --script\n"
        "runs the lines of a file ('#' comments; '@SYN2' switches instrument).  Without commands, show\n"
        "the readbacks refreshed in place until Ctrl-C.",
        ["obsctl hpib 'FR 1420.405 MZ' 'AP -10 DM'", "obsctl hpib --device SYN2 FR10.7MHAM-20DB",
         "obsctl hpib --script sweep.txt --json", "obsctl hpib --count 1"], interval=1.0)
    p.add_argument("commands", nargs="*", metavar="COMMAND", help="HP-IB program string(s), one per argument")
    p.add_argument("--device", default="SYN1", type=str.upper, choices=INSTRUMENTS,
                   help="instrument the commands go to (default SYN1)")
    p.add_argument("--script", default=None, metavar="FILE", help="run the command lines of FILE ('-': stdin)")
    p.add_argument("--timeout", type=common.finite_float, default=10.0, metavar="S",
                   help="real seconds allowed per command, until locked (default 10)")
    return p


def _script_lines(path: str) -> list[str]:
    if path == "-":
        return sys.stdin.read().splitlines()
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().splitlines()
    except OSError as err:
        raise common.UsageError(f"--script {path}: {err.strerror or err}") from None


def run(args: argparse.Namespace) -> int:
    """Send the commands (or show the readbacks)."""
    commands = [(args.device, c) for c in args.commands if c.strip()]
    if args.script is not None:
        try:
            commands += parse_script(_script_lines(args.script), args.device)
        except ValueError as err:
            raise common.UsageError(f"--script {args.script}: {err}") from None
        if not commands:
            raise common.UsageError(f"--script {args.script}: no commands in it")
    if args.timeout <= 0:
        raise common.UsageError(f"--timeout {args.timeout:g}: must be positive")
    devs = sorted({d for d, _ in commands}) or [args.device]
    obs = common.connect(args, needs=devs)
    if not commands:
        syns = [obs.device(d.lower()) for d in devs]
        common.refresh_loop(args, lambda: [read_synth(s) for s in syns], render=_status_render,
                            line=lambda rs: "  ".join(r.text() for r in rs),
                            record=lambda rs: {"readbacks": [asdict(r) for r in rs]})
        return 0
    log = run_steps(args, send_commands(obs, commands, args.timeout), render=render, line=line,
                    record=HpibLog.as_dict)
    return 1 if log is None or log.refused else 0


def main(argv: list[str] | None = None) -> int:
    """``obsctl hpib``."""
    return common.run_main(NAME, build_parser(), argv, run)
