"""Import layers (DESIGN.md): core <- iocs ; core <- devices <- plans <- scheduler/opi ; archiver/transfer
read documents, not devices (plans may use the archive's analysis).  Only the command-line front
(obsctl/cli.py, obsctl/cli_shell.py) may reach up, inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["obsctl", "iocs", "devices", "plans", "archiver", "transfer", "opi", "scheduler"]

FORBIDDEN = {
    "obsctl": {"iocs", "devices", "plans", "archiver", "transfer", "opi", "scheduler"},
    "iocs": {"devices", "plans", "archiver", "transfer", "opi", "scheduler"},
    "devices": {"iocs", "plans", "archiver", "transfer", "opi", "scheduler"},
    "plans": {"iocs", "transfer", "opi", "scheduler"},
    "archiver": {"iocs", "devices", "plans", "opi", "scheduler"},
    "transfer": {"iocs", "devices", "plans", "opi", "scheduler"},
    "scheduler": {"iocs", "opi"},
    "opi": {"iocs"},
}
TOP_FLOOR = {"obsctl/cli.py", "obsctl/cli_shell.py", "obsctl/cli_programs.py"}


def _imports(tree: ast.AST, top_level_only: bool) -> list[tuple[int, str]]:
    out = []
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module.split(".")[0]))
    return out


def test_import_layers():
    problems = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")) if (ROOT / pkg).is_dir() else []:
            rel = path.relative_to(ROOT).as_posix()
            tree = ast.parse(path.read_text(), rel)
            # the top floor may import upwards inside functions, never at module level
            for line, mod in _imports(tree, top_level_only=rel in TOP_FLOOR):
                if mod in FORBIDDEN[pkg]:
                    problems.append(f"{rel}:{line} imports {mod}")
    assert not problems, "layer violations:\n" + "\n".join(problems)


def test_import_obsctl_stays_cheap():
    import subprocess
    import sys

    code = "import sys, obsctl, obsctl.cli; print(sorted(m for m in sys.modules if m.split('.')[0] in " \
           "('iocs','devices','plans','astropy','caproto','epics','bluesky')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
