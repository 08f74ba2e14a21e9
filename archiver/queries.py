"""Notebook queries on the run archive: find runs by their observing metadata and get their data back.

Every obsctl plan records these keys in its start document (see docs/analyst.md):
project, proposal, pi, observer, obs_number, obs_type, obs_class, source, ra_deg, dec_deg, receiver,
freq_mhz, plan_name, plan_args.  Searches run in the catalog database (SQLite or PostgreSQL); nothing is
read until a run's data are asked for.

    from archiver.archive import open_archive
    from archiver.queries import find_runs, run_summary, run_table

    archive = open_archive()
    runs = find_runs(archive.client, source="3C123", since="2026-11-21", freq_min_mhz=1600)
    df = run_table(runs[0])              # scalar columns as a pandas DataFrame (index: POSIX time, s)
    ds = run_data(runs[0])               # everything, waveforms too, as an xarray Dataset

Dates accept ``datetime`` (naive = UTC), ``date``, ISO 8601 strings (``"2026-11-21"``,
``"2026-11-21T20:00:00Z"``) or POSIX seconds; ``since`` is inclusive, ``until`` exclusive.
Run times are the RunEngine's ``start.time`` (wall-clock POSIX seconds when the run opened).
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Any

#: Observing-log keys our plans put in the start document.
START_KEYS = ("project", "proposal", "pi", "observer", "obs_number", "obs_type", "obs_class", "source",
              "ra_deg", "dec_deg", "receiver", "freq_mhz", "plan_name", "plan_args")

#: Summary fields of :func:`run_summary`, in table order.
SUMMARY_FIELDS = ("uid", "scan_id", "time", "plan", "source", "project", "pi", "obs_number", "obs_type",
                  "receiver", "freq_mhz", "exit_status", "reason", "num_events", "duration_s")


def to_timestamp(value: datetime | date | str | float, name: str = "time") -> float:
    """A date given as datetime / date / ISO 8601 string / POSIX seconds -> POSIX seconds (UTC).

    Raises ``ValueError`` naming ``name`` for anything else.
    """
    if isinstance(value, bool):
        raise ValueError(f"{name}: expected a datetime, an ISO 8601 string or POSIX seconds, got {value!r}")
    if isinstance(value, numbers.Real):
        t = float(value)
        if not math.isfinite(t):
            raise ValueError(f"{name}: POSIX time must be finite, got {value!r}")
        return t
    if isinstance(value, str):
        text = value.strip()
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{name}: not an ISO 8601 date/time: {text!r} (e.g. '2026-11-21' or "
                             f"'2026-11-21T20:00:00Z')") from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()
    raise ValueError(f"{name}: expected a datetime, an ISO 8601 string or POSIX seconds, "
                     f"got {type(value).__name__} {value!r}")


def _frequency(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name}: expected a finite frequency in MHz, got {value!r}")
    if value < 0:
        raise ValueError(f"{name}: frequency must be >= 0 MHz, got {value!r}")
    return float(value)


def _match(key: str, value: Any, name: str) -> Any:
    """Equality on a start/stop key; a list or tuple of values matches any of them."""
    from tiled.queries import Eq, In

    if isinstance(value, (list, tuple, set, frozenset)):
        values = list(value)
        if not values:
            raise ValueError(f"{name}: empty list of values")
        kinds = {type(v) for v in values}
        if len(kinds) > 1:
            raise ValueError(f"{name}: mixed value types {sorted(k.__name__ for k in kinds)}")
        return In(key, values)
    if value is None or isinstance(value, dict):
        raise ValueError(f"{name}: cannot match {value!r}")
    return Eq(key, value)


def build_queries(*, source: str | Sequence[str] | None = None, project: str | Sequence[str] | None = None,
                  pi: str | Sequence[str] | None = None, plan: str | Sequence[str] | None = None,
                  since: datetime | date | str | float | None = None,
                  until: datetime | date | str | float | None = None,
                  freq_min_mhz: float | None = None, freq_max_mhz: float | None = None,
                  obs_type: str | Sequence[str] | None = None, proposal: str | Sequence[str] | None = None,
                  observer: str | Sequence[str] | None = None, obs_class: str | Sequence[str] | None = None,
                  obs_number: int | Sequence[int] | None = None, receiver: str | Sequence[str] | None = None,
                  exit_status: str | Sequence[str] | None = None, where: dict[str, Any] | None = None) -> list[Any]:
    """The tiled queries for these filters (all must hold).  See :func:`find_runs`."""
    from tiled.queries import Comparison

    queries: list[Any] = []
    exact = {"source": source, "project": project, "pi": pi, "plan_name": plan, "obs_type": obs_type,
             "proposal": proposal, "observer": observer, "obs_class": obs_class, "obs_number": obs_number,
             "receiver": receiver}
    arg_name = {"plan_name": "plan"}
    for key, value in exact.items():
        if value is not None:
            queries.append(_match(f"start.{key}", value, arg_name.get(key, key)))
    if exit_status is not None:
        allowed = {"success", "abort", "fail"}
        bad = {exit_status} - allowed if isinstance(exit_status, str) else set(exit_status) - allowed
        if bad:
            raise ValueError(f"exit_status: must be among {sorted(allowed)}, got {sorted(bad)}")
        queries.append(_match("stop.exit_status", exit_status, "exit_status"))
    for key, value in (where or {}).items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"where: keys must be non-empty strings, got {key!r}")
        full = key if key.startswith(("start.", "stop.")) else f"start.{key}"
        queries.append(_match(full, value, f"where[{key!r}]"))
    t0 = to_timestamp(since, "since") if since is not None else None
    t1 = to_timestamp(until, "until") if until is not None else None
    if t0 is not None and t1 is not None and t1 <= t0:
        raise ValueError(f"until ({until!r}) must be later than since ({since!r})")
    if t0 is not None:
        queries.append(Comparison("ge", "start.time", t0))
    if t1 is not None:
        queries.append(Comparison("lt", "start.time", t1))
    f0 = _frequency(freq_min_mhz, "freq_min_mhz") if freq_min_mhz is not None else None
    f1 = _frequency(freq_max_mhz, "freq_max_mhz") if freq_max_mhz is not None else None
    if f0 is not None and f1 is not None and f1 < f0:
        raise ValueError(f"freq_max_mhz ({freq_max_mhz}) must be >= freq_min_mhz ({freq_min_mhz})")
    if f0 is not None:
        queries.append(Comparison("ge", "start.freq_mhz", f0))
    if f1 is not None:
        queries.append(Comparison("le", "start.freq_mhz", f1))
    return queries


def search_runs(client: Any, *, newest_first: bool = True, **filters: Any) -> Any:
    """The matching runs as a lazy tiled container (nothing fetched yet), sorted by start time.

    Takes the same filters as :func:`find_runs`.  Useful for large result sets: ``len(result)``,
    ``result.values()[:10]``, iteration page by page.
    """
    result = client
    for q in build_queries(**filters):
        result = result.search(q)
    return result.sort(("start.time", -1 if newest_first else 1))


def find_runs(client: Any, *, source: str | Sequence[str] | None = None, project: str | Sequence[str] | None = None,
              pi: str | Sequence[str] | None = None, plan: str | Sequence[str] | None = None,
              since: datetime | date | str | float | None = None, until: datetime | date | str | float | None = None,
              freq_min_mhz: float | None = None, freq_max_mhz: float | None = None,
              obs_type: str | Sequence[str] | None = None, limit: int | None = None, newest_first: bool = True,
              **more: Any) -> list[Any]:
    """Runs of the archive matching every given filter, newest first.

    Parameters
    ----------
    client : the archive's tiled client (``open_archive().client``).
    source, project, pi, plan, obs_type : exact match on the start document's ``source``, ``project``, ``pi``,
        ``plan_name``, ``obs_type``; a list matches any of its values.
    since, until : start time window (``since`` <= t < ``until``); datetime (naive = UTC), ISO string or POSIX s.
    freq_min_mhz, freq_max_mhz : observing frequency window on ``start.freq_mhz`` (MHz, inclusive).
    limit : at most this many runs (the newest ones unless ``newest_first=False``).
    more : further exact filters: ``proposal``, ``observer``, ``obs_class``, ``obs_number``, ``receiver``,
        ``exit_status`` (``"success"``, ``"abort"``, ``"fail"``), ``where={"any.start.key": value}``.

    Returns
    -------
    list of runs (databroker ``BlueskyRun``): ``run.start``, ``run.stop``, ``run["primary"].read()``.

    Raises
    ------
    ValueError : a bad filter value, naming the argument.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit: expected a positive integer, got {limit!r}")
    unknown = set(more) - {"proposal", "observer", "obs_class", "obs_number", "receiver", "exit_status", "where"}
    if unknown:
        raise TypeError(f"find_runs() got unexpected keyword argument(s) {sorted(unknown)}")
    result = search_runs(client, newest_first=newest_first, source=source, project=project, pi=pi, plan=plan,
                         since=since, until=until, freq_min_mhz=freq_min_mhz, freq_max_mhz=freq_max_mhz,
                         obs_type=obs_type, **more)
    values = result.values()
    return list(values[:limit] if limit is not None else values)


def last_runs(client: Any, n: int = 10) -> list[Any]:
    """The ``n`` most recent runs, newest first."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive integer, got {n!r}")
    return find_runs(client, limit=n)


def _utc(t: float | None) -> datetime | None:
    return datetime.fromtimestamp(t, tz=UTC) if t is not None else None


def run_summary(run: Any) -> dict[str, Any]:
    """One run's essentials.

    Keys: uid, scan_id, time (UTC datetime of the start), plan, source, project, pi, obs_number, obs_type,
    receiver, freq_mhz (None where the plan did not record them), exit_status (``"success"``, ``"abort"``,
    ``"fail"``, or None while the run has no stop document: still running, or its writer died),
    reason (why it aborted/failed), num_events (total events, None while running), events (per stream),
    duration_s.
    """
    md = run.metadata
    start = dict(md["start"])
    stop = dict(md["stop"]) if md.get("stop") else None      # no stop document yet: run.stop would raise
    events = dict(stop.get("num_events") or {}) if stop else None
    return {
        "uid": start["uid"],
        "scan_id": start.get("scan_id"),
        "time": _utc(start.get("time")),
        "plan": start.get("plan_name"),
        "source": start.get("source"),
        "project": start.get("project"),
        "pi": start.get("pi"),
        "obs_number": start.get("obs_number"),
        "obs_type": start.get("obs_type"),
        "receiver": start.get("receiver"),
        "freq_mhz": start.get("freq_mhz"),
        "exit_status": stop.get("exit_status") if stop else None,
        "reason": (stop.get("reason") or None) if stop else None,
        "num_events": sum(events.values()) if events is not None else None,
        "events": events,
        "duration_s": (stop["time"] - start["time"]) if stop and "time" in start else None,
    }


def summary_table(runs: Iterable[Any]) -> Any:
    """A pandas DataFrame with one :func:`run_summary` row per run (for a notebook overview)."""
    import pandas as pd

    rows = [run_summary(r) for r in runs]
    return pd.DataFrame(rows, columns=list(SUMMARY_FIELDS) + ["events"])


#: A run being written can be caught between two writes (arrays extended, table not yet): retry its reads.
LIVE_READ_ATTEMPTS = 5
LIVE_READ_PAUSE_S = 0.2


def run_data(run: Any, stream: str = "primary") -> Any:
    """A stream of a run as an ``xarray.Dataset`` (every data key, waveforms/spectra as 2-D arrays).

    The ``time`` coordinate is each event's POSIX time (s).  Raises ``KeyError`` naming the streams there are.
    For a run still being written it returns the events flushed so far (an empty Dataset before the first
    batch), retrying a read that met a write half-way.
    """
    import httpx
    import xarray

    for attempt in range(LIVE_READ_ATTEMPTS):
        try:
            node = run[stream]
        except KeyError:
            names = list(run)
            raise KeyError(f"run {run.start['uid'][:8]} has no stream {stream!r}; streams: {names}") from None
        try:
            return node.read()
        except (KeyError, ValueError, httpx.HTTPStatusError):
            run.refresh()
            if run.metadata.get("stop"):
                if attempt == 0:           # it has just finished: read the complete run once more
                    continue
                raise
            if len(node.base) == 0:
                return xarray.Dataset()    # no batch of events written yet
            if attempt == LIVE_READ_ATTEMPTS - 1:
                raise
            time.sleep(LIVE_READ_PAUSE_S)
    raise RuntimeError(f"could not read stream {stream!r} of run {run.start['uid'][:8]}")


def run_table(run: Any, stream: str = "primary") -> Any:
    """The scalar data of a stream as a pandas DataFrame, one row per event, indexed by POSIX time (s).

    Multi-dimensional keys (waveforms, spectra) are left out; their names are in ``df.attrs["arrays"]`` and
    their data in :func:`run_data`.
    """
    ds = run_data(run, stream)
    scalars = [k for k, v in ds.data_vars.items() if v.dims == ("time",)]
    arrays = [k for k in ds.data_vars if k not in scalars]
    if scalars:
        df = ds[scalars].to_dataframe()
    else:                                    # only arrays, or nothing written yet
        import pandas as pd

        times = ds["time"].values if "time" in ds.coords else []
        df = pd.DataFrame(index=pd.Index(times, name="time"))
    df.attrs["arrays"] = arrays
    df.attrs["uid"] = run.start["uid"]
    df.attrs["stream"] = stream
    return df


def find_quicklooks(client: Any, *, of: str | Sequence[str] | None = None, status: str | Sequence[str] | None = None,
                    parent_plan: str | Sequence[str] | None = None, complete: bool = True, limit: int | None = None,
                    newest_first: bool = True, **filters: Any) -> list[Any]:
    """Quick-look runs (``plan_name="quicklook"``, see archiver/quicklook.py), newest first.

    ``of``: uid(s) of the analysed runs; ``status``: ``"ok"``, ``"skipped"``, ``"failed"``; ``parent_plan``:
    plan name(s) of the analysed runs; ``complete``: only runs whose stop document is written (a quick-look
    run is visible from its start document on, its results a moment later); further filters as
    :func:`find_runs` (``source``, ``project``, ``pi``, ``since``, ...).  Their results:
    ``archiver.quicklook.quicklook_results(run)``.
    """
    if complete:
        filters.setdefault("exit_status", "success")
    if status is not None:
        bad = {status} - QUICKLOOK_STATUSES if isinstance(status, str) else set(status) - QUICKLOOK_STATUSES
        if bad:
            raise ValueError(f"status: must be among {sorted(QUICKLOOK_STATUSES)}, got {sorted(bad)}")
    where = dict(filters.pop("where", None) or {})
    for key, value in (("quicklook_of", of), ("status", status), ("parent_plan", parent_plan)):
        if value is not None:
            where[key] = list(value) if isinstance(value, (list, tuple, set, frozenset)) else value
    return find_runs(client, plan="quicklook", limit=limit, newest_first=newest_first, where=where, **filters)


QUICKLOOK_STATUSES = frozenset({"ok", "skipped", "failed"})
