"""The main job's demo night against real IOCs: every step succeeds, its results are right, the summary
table names the runs and plots, and every run is found again from a fresh Python process."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from obsctl.catalog import load_catalog
from scheduler.demo import CALIBRATOR, DEMO_EPOCH, DEMO_SPEED, MASER, PULSAR, demo_night

ROOT = Path(__file__).resolve().parents[1]
DEVS = ["TIME", "DRV", "WX", "RAD", "NDI", "COR", "PSR"]

FRESH_QUERY = """
import json, sys
from archiver.archive import open_archive
from archiver.queries import find_runs, run_data
with open_archive(data_dir=sys.argv[1]) as archive:
    out = []
    for run in find_runs(archive.client, project="demo-night"):
        start = run.metadata["start"]
        ach = run_data(run, "achieved") if "achieved" in run else None
        out.append({"uid": start["uid"], "plan": start["plan_name"], "source": start.get("source"),
                    "pi": start.get("pi"), "exit": run.metadata["stop"]["exit_status"],
                    "achieved_keys": sorted(ach.keys()) if ach is not None else []})
    print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_demo_night(observatory, tmp_path):
    obs = observatory(DEVS, speed=DEMO_SPEED, epoch=DEMO_EPOCH)
    buf = io.StringIO()
    archive_dir = tmp_path / "archive"
    steps = demo_night(obs.state_dir, archive_dir=str(archive_dir), console=Console(file=buf, width=200))
    text = buf.getvalue()
    print(text)
    assert [s.status for s in steps] == ["done"] * 4, [(s.label, s.error) for s in steps]
    by = {s.label: s.result for s in steps}
    beam = obs.site.beam_fwhm_deg(obs.site.receivers[0].freq_mhz)
    assert abs(by["pointing check"]["ha_offset_deg"]) < 0.05 * beam
    assert abs(by["pointing check"]["dec_offset_deg"]) < 0.05 * beam
    assert by["drift scan"]["flux_jy"] > 0
    cat = load_catalog()
    assert abs(by["spectrum"]["line_vlsr_kms"] - cat.get(MASER).vlsr_kms) <= abs(by["spectrum"]["channel_kms"])
    assert by["pulsar"]["snr"] > 10
    # folded at the apparent period: catalog P and Pdot at the epoch, Doppler-shifted (plans.pulsar)
    assert by["pulsar"]["period_s"] == pytest.approx(by["pulsar"]["period_ephemeris_s"], rel=1e-8)
    assert by["pulsar"]["period_s"] == pytest.approx(cat.get(PULSAR).period_s, rel=2e-3)
    # the summary table names every run, its results and its quick-look plot
    assert "Demo night" in text and str(archive_dir) in text
    for s in steps:
        assert s.uid[:8] in text
    assert text.count(".png") >= 4, text
    # every run found again from a fresh process, with its metadata and data
    out = subprocess.run([sys.executable, "-c", FRESH_QUERY, str(archive_dir)], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    runs = {r["uid"]: r for r in json.loads(out.stdout)}
    for s in steps:
        r = runs[s.uid]
        assert r["exit"] == "success" and r["pi"] == "obsctl"
        assert r["source"] == s.source
        assert r["achieved_keys"], r
    assert {runs[s.uid]["source"] for s in steps} == {CALIBRATOR, MASER, PULSAR}
