"""Showing a test as a sequence of steps (CALT, CORRTEST, SRDIO, HPIB, RADSP): refreshed in place on a terminal,
a line per step to a pipe, one JSON object with ``--json``; Ctrl-C closes the step generator so it cleans up."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from opi.programs import common


def run_steps(args: argparse.Namespace, steps: Iterator[Any], *, render: Callable[[Any], Any],
              line: Callable[[Any], str], record: Callable[[Any], dict[str, Any]]) -> Any:
    """Run a test shown step by step; return its last snapshot.

    ``steps`` yields a snapshot after each step (the generator does the work and its own pacing).  On a
    terminal the rich display ``render(snapshot)`` refreshes in place; to a pipe one ``line`` per step; with
    ``--json`` only the final snapshot is printed, as one JSON object (``record``).
    """
    try:
        return _show_steps(args, steps, render, line, record)
    finally:
        close = getattr(steps, "close", None)
        if close is not None:
            close()  # a generator left between steps (Ctrl-C) runs its clean-up now


def _show_steps(args: argparse.Namespace, steps: Iterator[Any], render: Callable[[Any], Any],
                line: Callable[[Any], str], record: Callable[[Any], dict[str, Any]]) -> Any:
    last = None
    if getattr(args, "json", False):
        for last in steps:  # noqa: B007  (the final snapshot is the report)
            pass
        if last is not None:
            print(common.json_line(record(last)), flush=True)
        return last
    box: list[Any] = []

    def read() -> Any:
        snap = next(steps, None)
        if snap is None:
            snap = box[-1] if box else None
            return _Done(snap)
        box.append(snap)
        return snap

    view_args = argparse.Namespace(json=False, count=None, interval=None)
    common.refresh_loop(view_args, read, render=lambda s: render(_unwrap(s)), line=lambda s: line(_unwrap(s)),
                        record=lambda s: record(_unwrap(s)), interval=1e-3,
                        until=lambda s: isinstance(s, _Done) or bool(getattr(s, "done", False)))
    return box[-1] if box else None


@dataclass(frozen=True)
class _Done:
    snapshot: Any


def _unwrap(s: Any) -> Any:
    return s.snapshot if isinstance(s, _Done) else s


def verdict(ok: bool | None) -> str:
    """PASS / FAIL / n/a, coloured for rich."""
    return "[dim]n/a[/]" if ok is None else ("[green]PASS[/]" if ok else "[bold red]FAIL[/]")


def report_dict(report: Any) -> dict[str, Any]:
    """A test report (a dataclass with ``results`` having ``ok``, and ``passed``) as a dict with every verdict."""
    d = asdict(report)
    for res, out in zip(report.results, d["results"], strict=True):
        out["ok"] = res.ok
    d["passed"] = report.passed
    return d
