"""The whole observatory: every PV listed by ``obsctl pvs --json`` answers a pyepics caget with its units and
description, and every setpoint refuses bad values (wrong type, out of range, NaN, unknown enum) keeping the old
value."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import uuid
from collections.abc import Iterator

import epics
import pytest

from obsctl import launcher
from obsctl.site import load_site
from tests.conftest import Observatory
from tests.helpers import put_rejected

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fleet(ca_ports, tmp_path_factory) -> Iterator[Observatory]:
    """Every IOC of the reference site, started once for this module through the real launcher."""
    site = load_site().with_overrides(pv_prefix="FLEET" + uuid.uuid4().hex[:6].upper())
    state_dir = tmp_path_factory.mktemp("fleet")
    state = launcher.start(site, state_dir, speed=10, epoch="2026-11-21T20:00:00", base_port=ca_ports["base"],
                           repeater_port=ca_ports["repeater"], timeout=90)
    yield Observatory(site, state_dir, state)
    launcher.stop(state_dir)


def _pv_rows(prefix: str) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "obsctl.cli", "pvs", "--json", "--prefix", prefix],
                         capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout)


def test_every_listed_pv_reads_with_units_and_description(fleet):
    rows = _pv_rows(fleet.site.pv_prefix)
    served = set(launcher.served_pvs(fleet.state_dir))
    assert {r["name"] for r in rows} == served, "obsctl pvs and the running IOCs disagree"
    names = [r["name"] for r in rows]
    values = epics.caget_many(names, timeout=10.0)
    missing = [n for n, v in zip(names, values, strict=True) if v is None]
    assert not missing, f"{len(missing)} PVs did not answer: {missing[:10]}"
    descs = epics.caget_many([n + ".DESC" for n in names], timeout=10.0)
    egus = epics.caget_many([n + ".EGU" for n in names if any(r["name"] == n and r["type"] != "enum" and
                                                              r["type"] != "string" for r in rows)], timeout=10.0)
    problems = []
    for row, desc in zip(rows, descs, strict=True):
        if not row["description"]:
            problems.append(f"{row['name']}: no description")
        if desc != row["description"][:40]:
            problems.append(f"{row['name']}.DESC = {desc!r}")
    numeric = [r for r in rows if r["type"] not in ("enum", "string")]
    for row, egu in zip(numeric, egus, strict=True):
        if not row["units"]:
            problems.append(f"{row['name']}: no units")
        elif egu != row["units"]:
            problems.append(f"{row['name']}.EGU = {egu!r}, expected {row['units']!r}")
    assert not problems, "\n".join(problems[:40])


def _bad_values(row: dict) -> list[object]:
    if row["type"] == "enum":
        return [len(row["states"]), 999, "NOT_A_STATE"]
    if row["type"] == "string" or row["count"] > 1:
        return []
    lo, hi = row.get("lower_ctrl_limit"), row.get("upper_ctrl_limit")
    bad: list[object] = ["abc"]
    if row["type"].startswith("float"):
        bad.append(math.nan)
    if lo is not None and hi is not None and lo != hi:
        bad += [hi + max(1.0, abs(hi - lo)), lo - max(1.0, abs(hi - lo))]
    return bad


def test_every_setpoint_rejects_bad_values(fleet):
    rows = [r for r in _pv_rows(fleet.site.pv_prefix) if r["writable"]]
    assert rows
    problems = []
    checked = 0
    for row in rows:
        bad = _bad_values(row)
        if not bad:
            continue
        before = epics.caget(row["name"], use_monitor=False, timeout=5.0)
        for value in bad:
            err = put_rejected(row["name"], value)
            after = epics.caget(row["name"], use_monitor=False, timeout=5.0)
            if err is None:
                problems.append(f"{row['name']} accepted {value!r}")
            if after != before and not (isinstance(before, float) and math.isnan(before) and math.isnan(after)):
                problems.append(f"{row['name']} changed {before!r} -> {after!r} on bad {value!r}")
            checked += 1
    assert checked > 50
    assert not problems, "\n".join(problems[:40])
