"""Start-up time: from ``obsctl up`` to every PV of the reference site connected (goal <= 10 s on 2 cores).

Runs the real command line several times on free loopback ports and prints the wall-clock figures.
Usage: ``.venv/bin/python benchmarks/startup.py [--runs 3]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_base_port, hermetic_env  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    times = []
    for i in range(args.runs):
        base = free_base_port()
        env = hermetic_env(base)
        state = Path(tempfile.mkdtemp(prefix="obsctl-bench-"))
        cli = [sys.executable, "-m", "obsctl.cli", "--state-dir", str(state)]
        t0 = time.perf_counter()
        up = subprocess.run([*cli, "up", "--port", str(base)], capture_output=True, text=True,
                            env={**__import__("os").environ, **env})
        took = time.perf_counter() - t0
        try:
            if up.returncode != 0:
                print(up.stdout, up.stderr)
                raise SystemExit("obsctl up failed")
            npv = sum(len(json.loads(f.read_text())["pvs"]) for f in state.glob("pvs-*.json"))
            nproc = len(list(state.glob("pvs-*.json")))
            times.append(took)
            print(f"run {i + 1}: obsctl up -> {npv} PVs in {nproc} IOC processes connected in {took:.2f} s")
        finally:
            subprocess.run([*cli, "down"], capture_output=True)
    print(f"start-up: best {min(times):.2f} s, median {sorted(times)[len(times) // 2]:.2f} s, "
          f"worst {max(times):.2f} s (goal <= 10 s)")


if __name__ == "__main__":
    main()
