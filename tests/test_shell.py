"""The interactive session: RunEngine, devices and archive wired to the running observatory."""

from __future__ import annotations

import subprocess
import sys

import bluesky.plans as bp

from archiver.queries import find_runs
from obsctl.cli_shell import session_namespace


def test_session_runs_a_plan_into_the_archive(observatory, tmp_path):
    obs = observatory(["TIME", "WX"], speed=10)
    ns = session_namespace(obs.state_dir, archive_dir=str(tmp_path / "archive"), live=False)
    try:
        assert {"RE", "plans", "catalog", "weather", "station_time"} <= set(ns)
        (uid,) = ns["RE"](bp.count([ns["weather"]], 3), source="none", project="shell-test").run_start_uids
        runs = find_runs(ns["catalog"], project="shell-test")
        assert [r.start["uid"] for r in runs] == [uid]
        data = runs[0]["primary"].read()
        assert data.sizes["time"] == 3
        ql = ns["wait_quicklook"](ns["catalog"], uid, timeout=60)  # a count has no analysis: skipped, recorded
        assert ql.metadata["start"]["quicklook_of"] == uid
    finally:
        ns["quicklook_worker"].close()
        ns["archive"].close()


def test_shell_help():
    out = subprocess.run([sys.executable, "-m", "obsctl.cli", "shell", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "archive" in out.stdout
