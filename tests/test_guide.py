"""docs/scientist.md: every python block runs, in order, in the namespace ``obsctl shell`` gives, against a
simulated observatory at the demo epoch, and prints what the page shows (numbers free, words exact).

``OBSCTL_UPDATE_DOCS=1`` rewrites the page's output blocks with what the blocks printed.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import pytest

from scheduler.demo import DEMO_EPOCH, DEMO_SPEED

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "scientist.md"
DEVS = ["TIME", "DRV", "WX", "RAD", "NDI", "COR", "PSR"]
NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")


def shape(text: str) -> list[str]:
    """The lines of ``text`` with every number replaced by '#'."""
    return [NUMBER.sub("#", line.rstrip()) for line in text.strip().splitlines()]


def test_shape_compares_words_not_numbers():
    assert shape("peak 6.148 K at +0.0002 deg") == shape("peak 16.1 K at -3 deg")
    assert shape("peak 6.1 K") != shape("peak 6.1 Jy")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_scientist_guide_examples(observatory, tmp_path):
    from obsctl.cli_shell import session_namespace

    obs = observatory(DEVS, speed=DEMO_SPEED, epoch=DEMO_EPOCH)
    ns = session_namespace(obs.state_dir, archive_dir=str(tmp_path / "archive"), live=False)
    text = GUIDE.read_text()
    pieces = list(re.finditer(r"```(python|text)\n(.*?)```", text, re.S))
    assert sum(m.group(1) == "python" for m in pieces) >= 12
    printed: str | None = None
    outputs: list[tuple[re.Match, str]] = []
    try:
        for i, m in enumerate(pieces):
            kind, body = m.group(1), m.group(2)
            if kind == "python":
                buf = io.StringIO()
                with contextlib.redirect_stdout(buf):
                    exec(compile(body, f"docs/scientist.md block {i}", "exec"), ns)
                printed = buf.getvalue()
                print(printed, end="")
            else:
                assert printed is not None, f"text block {i} follows no code"
                outputs.append((m, printed))
                printed = None
    finally:
        for closer in ("quicklook_worker", "archive"):
            if closer in ns:
                ns[closer].close()
    if os.environ.get("OBSCTL_UPDATE_DOCS"):
        new, last = [], 0
        for m, out in outputs:
            new += [text[last:m.start(2)], out.rstrip() + "\n"]
            last = m.end(2)
        GUIDE.write_text("".join(new) + text[last:])
        return
    for m, out in outputs:
        assert shape(out) == shape(m.group(2)), f"docs/scientist.md output block is stale:\n{out}\nvs\n{m.group(2)}"
