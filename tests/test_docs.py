"""Docs that are generated from the code stay current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_pv_reference_is_current():
    out = subprocess.run([sys.executable, "-m", "obsctl.cli", "pvs", "--markdown"], capture_output=True,
                         text=True, check=True, timeout=120)
    doc = (ROOT / "docs" / "pv-reference.md").read_text()
    assert out.stdout == doc, "docs/pv-reference.md is stale: run `make docs`"


def test_docs_index_links_exist():
    index = (ROOT / "docs" / "index.md").read_text()
    import re

    for target in re.findall(r"\]\(([^)#]+)\)", index):
        assert (ROOT / "docs" / target).is_file(), f"docs/index.md links missing {target}"
