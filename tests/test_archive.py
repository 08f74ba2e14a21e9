"""Run archive (archiver/archive.py, archiver/queries.py) on SQLite and PostgreSQL.

Real documents come from a bluesky RunEngine driving ophyd.sim devices (count, scan, a hand-made run with a
1024-channel waveform, an aborted run).  Each backend gets its own archive, populated once per module; the
same tests run on both.  PostgreSQL: a fresh database per test session on 127.0.0.1:5432 (dropped at the
end); the PostgreSQL tests are skipped, saying why, only when no server answers there.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from archiver.archive import ArchiveError, open_archive, resolve_location
from archiver.queries import find_runs, last_runs, run_data, run_summary, run_table, search_runs, summary_table
from obsctl.site import ArchiveConfig, load_site

ROOT = Path(__file__).resolve().parents[1]
PG_HOST, PG_PORT = "127.0.0.1", 5432
N_WAVE = 1024


# ---------------------------------------------------------------- PostgreSQL: one fresh database per session
class PgServer:
    """Creates databases on the local PostgreSQL server and drops them at the end of the session."""

    def __init__(self, user: str, admin_db: str):
        self.user, self.admin_db = user, admin_db
        self.created: list[str] = []

    async def _exec(self, sql: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=self.user, database=self.admin_db, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def new_database(self) -> str:
        name = f"obsctl_archive_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        asyncio.run(self._exec(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return f"postgresql://{self.user}@{PG_HOST}:{PG_PORT}/{name}"

    def drop_all(self) -> None:
        for name in self.created:
            asyncio.run(self._exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _find_pg() -> tuple[PgServer | None, str]:
    import asyncpg

    errors = []
    for user in ("postgres", "root"):
        for db in ("postgres", "test"):
            async def probe(user: str = user, db: str = db) -> None:
                conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=user, database=db, timeout=5)
                await conn.close()
            try:
                asyncio.run(probe())
                return PgServer(user, db), ""
            except (TimeoutError, OSError, asyncpg.PostgresError) as err:
                errors.append(f"{user}@{db}: {err}")
    return None, "; ".join(errors)


@pytest.fixture(scope="session")
def pg_server():
    server, why = _find_pg()
    if server is None:
        pytest.skip(f"no PostgreSQL server answers on {PG_HOST}:{PG_PORT} ({why})")
    yield server
    server.drop_all()


# ---------------------------------------------------------------- documents from a real RunEngine
class Collector:
    """Keeps what the RunEngine produced: event data per run uid and stream."""

    def __init__(self) -> None:
        self.descriptors: dict[str, tuple[str, str]] = {}
        self.data: dict[str, dict[str, dict[str, list]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))

    def __call__(self, name: str, doc: dict) -> None:
        if name == "descriptor":
            self.descriptors[doc["uid"]] = (doc["run_start"], doc["name"])
        elif name == "event":
            uid, stream = self.descriptors[doc["descriptor"]]
            for key, value in doc["data"].items():
                self.data[uid][stream][key].append(np.asarray(value))

    def array(self, uid: str, key: str, stream: str = "primary") -> np.ndarray:
        return np.array(self.data[uid][stream][key])


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a, dtype="<f8").tobytes()).hexdigest()


def _devices():
    from ophyd.sim import SynGauss, SynSignal, motor

    rng = np.random.default_rng(20261121)
    wave = SynSignal(func=lambda: rng.normal(20.0, 1.0, N_WAVE), name="spectrum")
    noisy = SynGauss("tant", motor, "motor", center=0.1, Imax=5.0, sigma=0.4, noise="uniform",
                     noise_multiplier=0.05, random_state=np.random.RandomState(7))
    return motor, noisy, wave


def _waveform_run(dets, n: int, pause_after: int | None = None, **md):
    """A run of ``n`` events of ``dets``; with ``pause_after``, a checkpoint + pause after that many events."""
    import bluesky.plan_stubs as bps
    from bluesky.preprocessors import run_decorator

    @run_decorator(md={"plan_name": md.pop("plan_name", "waveform_run"), **md})
    def inner():
        for i in range(n):
            if pause_after is not None and i == pause_after:
                yield from bps.checkpoint()
                yield from bps.pause()
            yield from bps.trigger_and_read(dets)

    return inner()


def _meta(i: int, **kw) -> dict:
    base = {"project": "PRJ-CAL", "proposal": "2026B-001", "pi": "M. Gaylard", "observer": "student",
            "obs_number": i, "obs_class": "ROP", "receiver": "18cm", "ra_deg": 15.0 * i, "dec_deg": -30.0}
    base.update(kw)
    return base


class Populated:
    """One backend's archive with known runs in it."""

    def __init__(self, backend: str, data_dir: Path, uri: str | None):
        from bluesky import RunEngine
        from bluesky.plans import count, scan
        from bluesky.utils import RunEngineInterrupted

        self.backend, self.data_dir, self.uri = backend, data_dir, uri
        t0 = time.perf_counter()
        self.archive = open_archive(data_dir=data_dir, uri=uri)
        self.open_s = time.perf_counter() - t0
        self.RE = RE = RunEngine({})
        self.collector = Collector()
        RE.subscribe(self.collector)
        self.token = self.archive.subscribe(RE, batch_size=50)
        motor, tant, wave = _devices()
        self.devices = (motor, tant, wave)
        self.t_begin = time.time()
        u = {}
        (u["drift"],) = RE(count([tant, wave], 75), **_meta(1, source="3C123", obs_type="drift_scan",
                                                            freq_mhz=1666.0))
        (u["cross"],) = RE(scan([tant], motor, -1.0, 1.0, 21), **_meta(2, source="3C123", obs_type="cross_scan",
                                                                         freq_mhz=1668.5, pi="J. Quick"))
        time.sleep(0.05)
        self.t_mid = time.time()
        time.sleep(0.05)
        (u["spectrum"],) = RE(_waveform_run([wave], 12, plan_name="spectroscopy"),
                              **_meta(3, source="G188.95+0.89", obs_type="spectroscopy", freq_mhz=6668.5,
                                      receiver="6cm", project="PRJ-MASER", obs_class="thesis"))
        with pytest.raises(RunEngineInterrupted):
            RE(_waveform_run([tant, wave], 30, pause_after=7, plan_name="pulsar_timing"),
               **_meta(4, source="J0835-4510", obs_type="pulsar", freq_mhz=2270.0, receiver="13cm",
                       project="PRJ-PSR", pi="J. Quick"))
        RE.abort(reason="operator abort: wind")
        u["aborted"] = self.archive.client[-1].start["uid"]
        self.t_end = time.time()
        self.uids = u

    def close(self) -> None:
        self.archive.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def pop(request, tmp_path_factory):
    if request.param == "postgresql":
        uri = request.getfixturevalue("pg_server").new_database()
    else:
        uri = None
    p = Populated(request.param, tmp_path_factory.mktemp(f"archive-{request.param}"), uri)
    yield p
    p.close()


def _uids(runs) -> set[str]:
    return {r.start["uid"] for r in runs}


# ---------------------------------------------------------------- location (no database)
def test_location_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("OBSCTL_ARCHIVE_DIR", str(tmp_path / "env"))
    assert resolve_location().data_dir == (tmp_path / "env").resolve()
    loc = resolve_location(ArchiveConfig(data_dir=str(tmp_path / "cfg")))
    assert loc.data_dir == tmp_path / "cfg" and loc.backend == "sqlite"
    assert loc.catalog_uri == f"sqlite:///{tmp_path / 'cfg' / 'catalog.db'}"
    assert resolve_location(ArchiveConfig(data_dir=str(tmp_path / "cfg")), data_dir=tmp_path / "arg").data_dir \
        == tmp_path / "arg"
    site = load_site()
    rel = site.with_overrides(archive={"data_dir": "runs", "catalog_uri": ""})
    assert resolve_location(rel).data_dir == site.base_dir / "runs"
    pg = resolve_location(site, uri="postgresql+asyncpg://u@db.example:5432/obs")
    assert pg.backend == "postgresql" and pg.catalog_uri == pg.tables_uri == "postgresql://u@db.example:5432/obs"
    monkeypatch.delenv("OBSCTL_ARCHIVE_DIR")
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert resolve_location().data_dir == Path("~/.local/share/obsctl/archive").expanduser().resolve()
    with pytest.raises(ValueError, match="uri"):
        resolve_location(uri="mysql://x/y")
    with pytest.raises(ValueError, match="name a database"):
        resolve_location(uri="postgresql://u@host:5432")


def test_init_false_on_empty_location(tmp_path, request):
    with pytest.raises(ArchiveError, match="no run archive catalog"):
        open_archive(data_dir=tmp_path, init=False)
    server, _ = _find_pg()
    if server is not None:
        uri = request.getfixturevalue("pg_server").new_database()
        with pytest.raises(ArchiveError, match="no run archive catalog"):
            open_archive(data_dir=tmp_path, uri=uri, init=False)


# ---------------------------------------------------------------- both backends
def test_runs_written_with_metadata_and_status(pop):
    c = pop.archive.client
    assert pop.archive.initialised and pop.archive.backend == pop.backend
    for name, uid in pop.uids.items():
        run = c[uid]
        assert run.start["uid"] == uid, name
    s = run_summary(c[pop.uids["drift"]])
    assert s["exit_status"] == "success" and s["plan"] == "count" and s["source"] == "3C123"
    assert s["num_events"] == 75 and s["events"] == {"primary": 75}
    assert s["obs_number"] == 1 and s["freq_mhz"] == 1666.0 and s["receiver"] == "18cm"
    assert abs(s["time"].timestamp() - c[pop.uids["drift"]].start["time"]) < 1e-3 and s["duration_s"] > 0
    ab = run_summary(c[pop.uids["aborted"]])
    assert ab["exit_status"] == "abort" and ab["plan"] == "pulsar_timing"
    assert ab["num_events"] == 7            # what was acquired before the abort is kept
    table = summary_table(find_runs(c, newest_first=False, where={"proposal": "2026B-001"}))
    assert list(table["exit_status"]) == ["success", "success", "success", "abort"]


def test_data_read_back_equal_to_what_was_produced(pop):
    c, col, u = pop.archive.client, pop.collector, pop.uids
    ds = run_data(c[u["drift"]])
    assert ds["spectrum"].shape == (75, N_WAVE)
    np.testing.assert_array_equal(ds["spectrum"].values, col.array(u["drift"], "spectrum"))
    np.testing.assert_array_equal(ds["tant"].values, col.array(u["drift"], "tant"))
    cross = c[u["cross"]]["primary"].read()
    np.testing.assert_array_equal(cross["motor"].values, np.linspace(-1, 1, 21))
    np.testing.assert_array_equal(cross["tant"].values, col.array(u["cross"], "tant"))
    # the cross scan really peaks where the simulated source is (not a constant)
    assert abs(float(cross["motor"].values[np.argmax(cross["tant"].values)]) - 0.1) <= 0.1
    df = run_table(c[u["cross"]])
    assert set(df.columns) >= {"tant", "motor"}
    np.testing.assert_array_equal(df["tant"].to_numpy(), col.array(u["cross"], "tant"))
    assert df.attrs["arrays"] == [] and len(df) == 21
    spec = run_table(c[u["spectrum"]])
    assert spec.attrs["arrays"] == ["spectrum"] and len(spec) == 12
    np.testing.assert_array_equal(run_data(c[u["aborted"]])["spectrum"].values, col.array(u["aborted"], "spectrum"))
    with pytest.raises(KeyError, match="streams"):
        run_data(c[u["drift"]], stream="baseline_nope")


def test_queries_by_each_key(pop):
    c, u = pop.archive.client, pop.uids
    assert _uids(find_runs(c, source="3C123")) == {u["drift"], u["cross"]}
    assert _uids(find_runs(c, source=["J0835-4510", "G188.95+0.89"])) == {u["aborted"], u["spectrum"]}
    assert _uids(find_runs(c, project="PRJ-MASER")) == {u["spectrum"]}
    assert _uids(find_runs(c, pi="J. Quick")) == {u["cross"], u["aborted"]}
    assert _uids(find_runs(c, plan="scan")) == {u["cross"]}
    assert _uids(find_runs(c, plan="count", source="3C123")) == {u["drift"]}
    assert _uids(find_runs(c, obs_type="pulsar")) == {u["aborted"]}
    assert _uids(find_runs(c, obs_class="thesis")) == {u["spectrum"]}
    assert _uids(find_runs(c, obs_number=2)) == {u["cross"]}
    assert _uids(find_runs(c, receiver="13cm")) == {u["aborted"]}
    assert _uids(find_runs(c, proposal="2026B-001")) == set(u.values())
    assert _uids(find_runs(c, observer="student", exit_status="abort")) == {u["aborted"]}
    assert _uids(find_runs(c, where={"dec_deg": -30.0, "ra_deg": 45.0})) == {u["spectrum"]}
    assert find_runs(c, source="3c123") == []          # exact match
    assert find_runs(c, source="nowhere") == []


def test_frequency_and_date_ranges(pop):
    c, u = pop.archive.client, pop.uids
    assert _uids(find_runs(c, freq_min_mhz=1600, freq_max_mhz=1700)) == {u["drift"], u["cross"]}
    assert _uids(find_runs(c, freq_min_mhz=1666.0, freq_max_mhz=1666.0)) == {u["drift"]}   # inclusive
    assert _uids(find_runs(c, freq_min_mhz=2000)) >= {u["spectrum"], u["aborted"]}
    assert _uids(find_runs(c, freq_max_mhz=1667)) >= {u["drift"]}
    assert u["cross"] not in _uids(find_runs(c, freq_max_mhz=1667))
    mid = datetime.fromtimestamp(pop.t_mid, tz=UTC)
    end = datetime.fromtimestamp(pop.t_end, tz=UTC)
    begin_iso = datetime.fromtimestamp(pop.t_begin, tz=UTC).isoformat()
    assert _uids(find_runs(c, since=begin_iso, until=mid)) == {u["drift"], u["cross"]}
    assert _uids(find_runs(c, since=mid, until=end.isoformat().replace("+00:00", "Z"))) \
        == {u["spectrum"], u["aborted"]}
    naive_mid = mid.replace(tzinfo=None)                         # naive = UTC
    assert _uids(find_runs(c, since=naive_mid, until=pop.t_end)) == {u["spectrum"], u["aborted"]}
    day = mid.date()
    assert set(u.values()) <= _uids(find_runs(c, since=day.isoformat()))
    assert find_runs(c, until="2001-01-01") == []
    combined = find_runs(c, since=mid, until=end, freq_min_mhz=2000, pi="J. Quick")
    assert _uids(combined) == {u["aborted"]}


def test_ordering_limit_and_last_runs(pop):
    c = pop.archive.client
    everything = sorted(c.values(), key=lambda r: r.start["time"], reverse=True)   # independent sort
    newest = [r.start["uid"] for r in everything]
    assert [r.start["uid"] for r in last_runs(c, 3)] == newest[:3]
    assert [r.start["uid"] for r in find_runs(c, project="PRJ-CAL", limit=1)] == [pop.uids["cross"]]
    oldest_first = find_runs(c, project="PRJ-CAL", newest_first=False)
    assert [r.start["uid"] for r in oldest_first] == [pop.uids["drift"], pop.uids["cross"]]
    assert len(search_runs(c, source="3C123")) == 2


@pytest.mark.parametrize("kwargs, name", [
    ({"since": "last tuesday"}, "since"), ({"until": "2026-13-01"}, "until"), ({"since": [2026]}, "since"),
    ({"since": True}, "since"), ({"since": "2026-11-22", "until": "2026-11-21"}, "until"),
    ({"freq_min_mhz": "1.4 GHz"}, "freq_min_mhz"), ({"freq_max_mhz": float("nan")}, "freq_max_mhz"),
    ({"freq_min_mhz": 1700, "freq_max_mhz": 1600}, "freq_max_mhz"), ({"limit": 0}, "limit"),
    ({"exit_status": "crashed"}, "exit_status"), ({"source": []}, "source"),
])
def test_bad_query_arguments_name_the_argument(kwargs, name):
    class NoClient:           # validation happens before any database access
        def search(self, q):  # pragma: no cover - must not be reached
            raise AssertionError("queried despite bad input")

    with pytest.raises(ValueError, match=name):
        find_runs(NoClient(), **kwargs)
    with pytest.raises(ValueError, match="n"):
        last_runs(NoClient(), 0)


def test_second_handle_in_process_shares_the_server(pop):
    """Opening an open location again shares its server; closing that handle leaves the first one working."""
    with open_archive(data_dir=pop.data_dir, uri=pop.uri) as again:
        assert not again.initialised and again.client is pop.archive.client
        assert _uids(find_runs(again.client, source="3C123")) == {pop.uids["drift"], pop.uids["cross"]}
    assert again.closed and not pop.archive.closed
    assert run_summary(pop.archive.client[pop.uids["drift"]])["num_events"] == 75
    with pytest.raises(ArchiveError, match="already open"):
        open_archive(data_dir=pop.data_dir / "elsewhere", uri=pop.uri or f"sqlite:///{pop.data_dir}/catalog.db")


def test_run_in_progress_before_first_batch(pop):
    """An open run with fewer events than one batch: no stop document, no data yet, then complete on resume."""
    from bluesky.utils import RunEngineInterrupted

    _, tant, wave = pop.devices
    with pytest.raises(RunEngineInterrupted):
        pop.RE(_waveform_run([tant, wave], 12, pause_after=10), source="EARLY-LIVE")
    run = pop.archive.client[-1]
    assert run.start["source"] == "EARLY-LIVE"
    s = run_summary(run)
    assert s["exit_status"] is None and s["num_events"] is None and s["duration_s"] is None
    assert dict(run_data(run).sizes) == {}                   # nothing flushed yet (batch of 50)
    assert len(run_table(run)) == 0
    pop.RE.resume()
    run.refresh()
    assert run_summary(run)["exit_status"] == "success"
    np.testing.assert_array_equal(run_data(run)["tant"].values, pop.collector.array(run.start["uid"], "tant"))


READER = r"""
import hashlib, json, sys
import numpy as np
from archiver.archive import open_archive
from archiver.queries import find_runs, run_data, run_summary
arch = open_archive(data_dir=sys.argv[1], uri=sys.argv[2] or None, init=False)
print(json.dumps({"ready": True, "initialised": arch.initialised}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] == "find":
        out = sorted(r.start["uid"] for r in find_runs(arch.client, **cmd["filters"]))
    elif cmd["op"] == "peek":
        run = arch.client[cmd["uid"]]
        s = run_summary(run)
        ds = run_data(run)
        out = {"exit_status": s["exit_status"], "num_events": s["num_events"], "rows": int(ds.sizes["time"]),
               "source": s["source"], "spectrum": hashlib.sha256(
                   np.ascontiguousarray(ds["spectrum"].values, dtype="<f8").tobytes()).hexdigest()}
    else:
        break
    print(json.dumps(out), flush=True)
arch.close()
"""


@pytest.mark.slow
def test_fresh_process_sees_runs_and_a_run_growing(pop, tmp_path):
    """A second Python process finds the runs by query, and sees an open run's flushed batches."""
    from bluesky.utils import RunEngineInterrupted

    errlog = tmp_path / "reader.err"
    with open(errlog, "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", READER, str(pop.data_dir), pop.uri or ""], cwd=ROOT,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)

    def ask(op: str, **kw):
        proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        assert line, f"reader died: {errlog.read_text()}"
        return json.loads(line)

    try:
        hello = proc.stdout.readline()
        assert hello, f"reader failed to open the archive: {errlog.read_text()}"
        assert json.loads(hello) == {"ready": True, "initialised": False}
        # a live run: 120 events written in batches of 50, then paused (still open)
        _, tant, wave = pop.devices
        with pytest.raises(RunEngineInterrupted):
            pop.RE(_waveform_run([tant, wave], 130, pause_after=120), **_meta(9, source="LIVE-TEST"))
        live = pop.archive.client[-1].start["uid"]
        seen = ask("peek", uid=live)
        assert seen["exit_status"] is None and seen["num_events"] is None and seen["rows"] == 100
        pop.RE.resume()
        done = ask("peek", uid=live)
        assert done["exit_status"] == "success" and done["rows"] == done["num_events"] == 130
        assert done["spectrum"] == _digest(pop.collector.array(live, "spectrum"))
        # queries from the fresh process agree with what was written here
        u = pop.uids
        assert ask("find", filters={"source": "3C123"}) == sorted([u["drift"], u["cross"]])
        assert ask("find", filters={"pi": "J. Quick", "freq_min_mhz": 2000}) == [u["aborted"]]
        assert ask("find", filters={"since": datetime.fromtimestamp(pop.t_mid, tz=UTC).isoformat(),
                                    "until": pop.t_end}) == sorted([u["spectrum"], u["aborted"]])
        assert ask("find", filters={"exit_status": "abort"}) == [u["aborted"]]
        ab = ask("peek", uid=u["aborted"])
        assert ab["exit_status"] == "abort" and ab["rows"] == 7 and ab["source"] == "J0835-4510"
        assert ab["spectrum"] == _digest(pop.collector.array(u["aborted"], "spectrum"))
        proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0, errlog.read_text()   # close() leaves nothing keeping it alive
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
        proc.stdout.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_location(request, tmp_path):
    uri = request.getfixturevalue("pg_server").new_database() if request.param == "postgresql" else None
    return tmp_path / "archive", uri


def test_reopen_close_and_unsubscribe(fresh_location):
    """First open creates the catalog; close stops the server threads and the RunEngine subscription;
    a later open finds the catalog (no init) and the run."""
    from bluesky import RunEngine
    from bluesky.plans import count
    from ophyd.sim import det

    data_dir, uri = fresh_location
    before = {t.ident for t in threading.enumerate()}
    RE = RunEngine({})
    t0 = time.perf_counter()
    arch = open_archive(data_dir=data_dir, uri=uri)
    first_s = time.perf_counter() - t0
    assert arch.initialised
    arch.subscribe(RE)
    (uid,) = RE(count([det], 3), source="close-test")
    assert arch.client[uid].stop["exit_status"] == "success"
    arch.close()
    arch.close()                                            # idempotent
    leftover = [t.name for t in threading.enumerate() if t.ident not in before and t.is_alive()
                and ("portal" in t.name or "_connection_worker" in t.name)]
    assert leftover == []
    RE(count([det], 2))                                     # unsubscribed: not written, and no error
    t0 = time.perf_counter()
    with open_archive(data_dir=data_dir, uri=uri) as again:
        reopen_s = time.perf_counter() - t0
        assert not again.initialised
        assert [r.start["uid"] for r in find_runs(again.client)] == [uid]
    assert again.closed
    print(f"first open (init) {first_s:.2f} s, reopen {reopen_s:.2f} s")
    assert reopen_s < first_s


@pytest.mark.slow
def test_analyst_guide_examples(tmp_path, monkeypatch):
    """docs/analyst.md: every python block runs, in order, on a fresh archive and prints what the page shows."""
    data_dir = tmp_path / "archive"
    monkeypatch.setenv("OBSCTL_ARCHIVE_DIR", str(data_dir))
    text = (ROOT / "docs" / "analyst.md").read_text()
    pieces = re.findall(r"```(python|text)\n(.*?)```", text, re.S)
    assert sum(kind == "python" for kind, _ in pieces) >= 5
    ns: dict = {"__name__": "analyst_md"}
    printed = None
    try:
        for i, (kind, body) in enumerate(pieces):
            if kind == "python":
                buf = io.StringIO()
                with contextlib.redirect_stdout(buf):
                    exec(compile(body, f"docs/analyst.md block {i}", "exec"), ns)
                printed = buf.getvalue()
            else:
                assert printed is not None, f"text block {i} follows no code"
                shown = body.replace("/home/me/.local/share/obsctl/archive", str(data_dir.resolve()))
                assert printed.rstrip() == shown.rstrip(), f"docs/analyst.md text block {i} is stale"
                printed = None
    finally:
        if "archive" in ns:
            ns["archive"].close()
