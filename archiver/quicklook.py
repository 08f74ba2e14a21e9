"""Quick-look analysis of every finished run, written back into the run archive as a linked run.

A :class:`QuickLook` worker subscribed to a RunEngine (:func:`attach_quicklook`) notes each stop document
and, in a background thread (the RunEngine never waits for it), reads the run back from the archive by its
uid, analyses it according to the start document's ``plan_name`` (:data:`archiver.plots.ANALYSES`), renders
a PNG into ``<archive data dir>/quicklook/<YYYY-MM-DD>/<uid8>_<plan>.png`` (UTC date of the run's start) and
writes the results into the archive as a new *linked run*:

* start document: ``plan_name="quicklook"``, ``quicklook_of=<uid of the run>``, ``parent_plan``, ``status``
  (``"ok"``, ``"skipped"`` for runs of plans without an analysis and runs that did not end in success,
  ``"failed"`` when the analysis raised), ``reason`` (why skipped / the error), ``png`` (path or ``""``),
  and the parent's ``source``, ``project``, ``pi``, ``receiver``, ``proposal``, ``observer``,
  ``obs_number``, ``obs_class``;
* one event in the stream ``results``: every result as ``results_<name>`` (numbers or text, units from the
  name's suffix, see :mod:`archiver.plots`), plus ``results_status`` and ``results_reason``.

Usage::

    archive = open_archive(site)
    archive.subscribe(RE)
    ql = attach_quicklook(RE, archive)           # after archive.subscribe
    RE(drift_scan(...))
    record = ql.wait(uid)                        # or wait_quicklook(archive.client, uid) from anywhere
    run = quicklook_for(archive.client, uid)     # the linked run; quicklook_results(run) -> dict
    ql.close()                                   # before archive.close()

In a notebook, ``results, fig = analyse_run(archive.client[uid])`` analyses any archived run.
"""

from __future__ import annotations

import logging
import math
import numbers
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from archiver import plots
from archiver.queries import find_quicklooks, run_data

logger = logging.getLogger(__name__)

QUICKLOOK_PLAN = "quicklook"
RESULTS_STREAM = "results"
#: start-document keys copied from the analysed run into its quick-look run
PARENT_KEYS = ("source", "project", "pi", "receiver", "proposal", "observer", "obs_number", "obs_class")
#: how long the worker waits for a run's stop document to reach the archive (s)
ARCHIVE_WAIT_S = 30.0
#: units by result-name suffix (longest first)
SUFFIX_UNITS = (("_k_per_jy", "K/Jy"), ("_kms", "km/s"), ("_mhz", "MHz"), ("_mjd", "d"), ("_deg", "deg"),
                ("_ms", "ms"), ("_jy", "Jy"), ("_k", "K"), ("_s", "s"))


@dataclass(frozen=True)
class QuickLookRecord:
    """What the worker did for one run (times are POSIX wall-clock seconds)."""

    uid: str
    plan: str
    status: str  # "ok", "skipped", "failed"
    reason: str
    png: str
    quicklook_uid: str | None  # None when even the linked run could not be written
    t_stop: float  # the stop document reached the worker
    t_written: float  # the linked run's stop document was written
    read_s: float = math.nan  # waiting for the run in the archive (queue included) until it was there
    analysis_s: float = math.nan  # reading the streams, analysing, rendering the PNG
    write_s: float = math.nan  # writing the linked run

    @property
    def latency_s(self) -> float:
        """Seconds from the stop document to the quick-look run written."""
        return self.t_written - self.t_stop


def analyse_run(run: Any, site: Any = None) -> tuple[dict[str, Any], Any]:
    """Quick-look analysis of an archived run: ``(results, matplotlib Figure)``.

    ``run`` is a run of the archive (``archive.client[uid]``); ``site`` gives receiver gains, beam widths and
    the location (default :func:`obsctl.site.load_site`).  Raises ``ValueError`` for a plan without an analysis
    (naming the plans that have one) and whatever the analysis raises on data it cannot use.
    """
    start = dict(run.metadata["start"])
    plan = start.get("plan_name")
    analysis = plots.ANALYSES.get(plan)
    if analysis is None:
        raise ValueError(f"no quick-look analysis for plan {plan!r}; there is one for {', '.join(plots.ANALYSES)}")
    if site is None:
        from obsctl.site import load_site

        site = load_site()
    results, fig = analysis(run, start, site)
    return {k: _plain(k, v) for k, v in results.items()}, fig


def png_path(out_dir: str | Path, start: dict) -> Path:
    """``<out_dir>/<YYYY-MM-DD>/<uid8>_<plan>.png`` for a run's start document (UTC date of its start)."""
    day = datetime.fromtimestamp(float(start.get("time", 0.0)), tz=UTC).strftime("%Y-%m-%d")
    plan = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(start.get("plan_name") or "run"))
    return Path(out_dir) / day / f"{str(start['uid'])[:8]}_{plan}.png"


def save_png(fig: Any, path: Path, dpi: int = 110) -> Path:
    """Write ``fig`` as PNG at ``path`` (directories created; written to a temporary name, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=dpi)
    tmp.replace(path)
    return path


def _plain(key: str, value: Any) -> float | int | str:
    """A result as a document value: number or text (ValueError for anything else)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        return value
    raise ValueError(f"quick-look result {key!r} is not a number or text: {type(value).__name__}")


def _units(key: str) -> str:
    return next((u for suffix, u in SUFFIX_UNITS if key.endswith(suffix)), "")


#: a document write that meets the SQLite tables locked by another writer is retried this often, this far apart (s)
LOCKED_ATTEMPTS, LOCKED_PAUSE_S = 40, 0.25

def linked_run_documents(parent_start: dict, status: str, reason: str, png: str,
                         results: dict[str, Any]) -> list[tuple[str, dict]]:
    """The documents (start, descriptor, event, stop) of the quick-look run of a run with ``parent_start``."""
    from event_model import compose_run

    if status not in ("ok", "skipped", "failed"):
        raise ValueError(f"status must be 'ok', 'skipped' or 'failed', got {status!r}")
    md = {k: parent_start[k] for k in PARENT_KEYS if parent_start.get(k) is not None}
    md.update(plan_name=QUICKLOOK_PLAN, obs_type=QUICKLOOK_PLAN, quicklook_of=parent_start["uid"],
              parent_plan=str(parent_start.get("plan_name") or ""), status=status, reason=reason, png=png)
    bundle = compose_run(metadata=md)
    values = {"status": status, "reason": reason, **{k: _plain(k, v) for k, v in results.items()}}
    keys = {}
    for k, v in values.items():
        dtype = "string" if isinstance(v, str) else "integer" if isinstance(v, int) else "number"
        keys[f"{RESULTS_STREAM}_{k}"] = {"source": QUICKLOOK_PLAN, "dtype": dtype, "shape": [],
                                          "units": _units(k)}
    desc = bundle.compose_descriptor(name=RESULTS_STREAM, data_keys=keys)
    now = time.time()
    data = {f"{RESULTS_STREAM}_{k}": v for k, v in values.items()}
    event = desc.compose_event(data=data, timestamps={k: now for k in data})
    return [("start", bundle.start_doc), ("descriptor", desc.descriptor_doc), ("event", event),
            ("stop", bundle.compose_stop(exit_status="success"))]


def write_linked_run(archive: Any, parent_start: dict, status: str, reason: str = "", png: str = "",
                     results: dict[str, Any] | None = None) -> str:
    """Write the quick-look run of a run into ``archive`` (a RunArchive); returns the new run's uid."""
    writer = archive.writer(batch_size=1)
    docs = linked_run_documents(parent_start, status, reason, png, results or {})
    for name, doc in docs:
        for attempt in range(LOCKED_ATTEMPTS):
            try:
                writer(name, doc)
                break
            except Exception as err:  # the SQLite tables are locked while the RunEngine's writer appends
                if "locked" not in str(err) or attempt == LOCKED_ATTEMPTS - 1:
                    raise
                time.sleep(LOCKED_PAUSE_S)
    return docs[0][1]["uid"]


def quicklook_results(run: Any) -> dict[str, Any]:
    """The results event of a quick-look run as a plain dict (``results_`` prefix removed)."""
    ds = run_data(run, RESULTS_STREAM)
    out = {}
    for key, var in ds.data_vars.items():
        v = var.values[0]
        out[key.removeprefix(f"{RESULTS_STREAM}_")] = v.item() if hasattr(v, "item") else v
    return out


def _check_uid(uid: Any) -> str:
    if not isinstance(uid, str) or not uid.strip():
        raise ValueError(f"uid must be a run uid (non-empty text), got {uid!r}")
    return uid.strip()


def quicklook_for(catalog: Any, uid: str) -> Any | None:
    """The (newest) complete quick-look run of run ``uid`` (a full or partial uid), or None when it has none yet.

    Raises ``ValueError`` for a uid that is not text (or too short to look up) and ``KeyError`` when the archive
    has no run ``uid``.
    """
    uid = _check_uid(uid)
    try:
        full = catalog[uid].metadata["start"]["uid"]
    except KeyError:
        raise KeyError(f"no run {uid!r} in the archive") from None
    except ValueError as err:
        raise ValueError(f"uid {uid!r}: {err}") from None
    runs = find_quicklooks(catalog, of=full, limit=1)
    return runs[0] if runs else None


def wait_quicklook(catalog: Any, uid: str, timeout: float = 60.0, poll_s: float = 0.2) -> Any:
    """Poll the archive until run ``uid`` has its quick-look run; return it (``TimeoutError`` after ``timeout`` s).

    Works from any process that opened the archive.  A run that is not (yet) in the archive is waited for too.
    """
    uid = _check_uid(uid)
    deadline = time.monotonic() + timeout
    while True:
        try:
            run = quicklook_for(catalog, uid)
        except KeyError:
            run = None
        if run is not None:
            return run
        if time.monotonic() > deadline:
            raise TimeoutError(f"no quick-look run of {uid} in the archive after {timeout:g} s")
        time.sleep(poll_s)


class QuickLook:
    """RunEngine callback: analyse each finished run in a background thread and archive the results.

    Parameters
    ----------
    archive : the open :class:`archiver.archive.RunArchive` the runs are written to (subscribe it first).
    out_dir : PNG directory (default ``<archive data dir>/quicklook``).
    site : receiver gains, beams and location (default :func:`obsctl.site.load_site`, loaded in the worker).
    archive_wait_s : how long to wait for a run's stop document to reach the archive.
    """

    def __init__(self, archive: Any, out_dir: str | Path | None = None, *, site: Any = None,
                 archive_wait_s: float = ARCHIVE_WAIT_S) -> None:
        self.archive = archive
        self.out_dir = Path(out_dir) if out_dir is not None else Path(archive.location.data_dir) / "quicklook"
        self.site = site
        self.archive_wait_s = float(archive_wait_s)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="obsctl-quicklook")
        self._futures: dict[str, Future] = {}
        self._lock = threading.Lock()
        self._subscription: tuple[Any, int] | None = None
        self._pool.submit(self._warm_up)

    # -- RunEngine side: never blocks, never raises ------------------------------------------------------
    def __call__(self, name: str, doc: dict) -> None:
        """Document callback: hand each stop document to the worker thread."""
        if name != "stop":
            return
        uid, t_stop = doc.get("run_start"), time.time()
        with self._lock:
            if self._pool is None or not uid:
                return
            self._futures[uid] = self._pool.submit(self._process, uid, dict(doc), t_stop)

    # -- worker side ---------------------------------------------------------------------------------------
    def _warm_up(self) -> None:
        """Import the plotting and astronomy modules (and load the site) before the first run ends."""
        import matplotlib.backends.backend_agg  # noqa: F401
        import matplotlib.figure  # noqa: F401

        import obsctl.astro  # noqa: F401

        if self.site is None:
            from obsctl.site import load_site

            self.site = load_site()

    def _archived(self, uid: str) -> Any:
        """The run from the archive once its stop document is there."""
        deadline = time.monotonic() + self.archive_wait_s
        while True:
            try:
                run = self.archive.client[uid]
                if run.metadata.get("stop"):
                    return run
            except KeyError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {uid} did not reach the archive with its stop document within "
                                   f"{self.archive_wait_s:g} s")
            time.sleep(0.05)

    def _process(self, uid: str, stop: dict, t_stop: float) -> QuickLookRecord:
        t_read = t_analysed = time.time()
        start: dict = {"uid": uid}
        status, reason, png, results = "failed", "", "", {}
        try:
            run = self._archived(uid)
            t_read = time.time()
            start = dict(run.metadata["start"])
            plan = start.get("plan_name")
            exit_status = run.metadata["stop"].get("exit_status")
            if plan not in plots.ANALYSES:
                status, reason = "skipped", f"no quick-look analysis for plan {plan!r}"
            elif exit_status != "success":
                why = run.metadata["stop"].get("reason") or ""
                status, reason = "skipped", f"run ended with exit status {exit_status!r}" + (f": {why}" if why else "")
            else:
                results, fig = analyse_run(run, self.site)
                png = str(save_png(fig, png_path(self.out_dir, start)))
                status = "ok"
        except Exception as err:  # noqa: BLE001  (any analysis error is recorded in the archive, never raised)
            status, reason, results = "failed", f"{type(err).__name__}: {err}", {}
            logger.warning("quick-look of run %s failed: %s", uid[:8], reason)
        t_analysed = time.time()
        ql_uid = None
        try:
            ql_uid = write_linked_run(self.archive, start, status, reason, png, results)
        except Exception as err:  # noqa: BLE001  (the worker thread must survive an archive failure)
            reason = f"{reason}; writing the quick-look run failed: {type(err).__name__}: {err}".lstrip("; ")
            logger.error("quick-look run of %s not written: %s", uid[:8], err)
        t_written = time.time()
        return QuickLookRecord(uid, str(start.get("plan_name") or ""), status, reason, png, ql_uid, t_stop,
                               t_written, t_read - t_stop, t_analysed - t_read, t_written - t_analysed)

    # -- caller side ---------------------------------------------------------------------------------------
    def wait(self, uid: str, timeout: float = 60.0) -> QuickLookRecord:
        """The record of run ``uid`` once its quick-look run is written (``KeyError`` if no stop was seen)."""
        uid = _check_uid(uid)
        with self._lock:
            fut = self._futures.get(uid)
        if fut is None:
            raise KeyError(f"no stop document of run {uid!r} reached this quick-look worker")
        return fut.result(timeout=timeout)

    @property
    def records(self) -> dict[str, QuickLookRecord]:
        """Records of the runs done so far, by uid."""
        with self._lock:
            futs = dict(self._futures)
        return {u: f.result() for u, f in futs.items() if f.done()}

    def close(self, wait: bool = True) -> None:
        """Unsubscribe from the RunEngine and stop the worker (after the queued runs unless ``wait=False``)."""
        if self._subscription is not None:
            RE, token = self._subscription
            RE.unsubscribe(token)
            self._subscription = None
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=not wait)

    def __enter__(self) -> QuickLook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def attach_quicklook(RE: Any, archive: Any, out_dir: str | Path | None = None, *, site: Any = None,
                     archive_wait_s: float = ARCHIVE_WAIT_S) -> QuickLook:
    """Subscribe a :class:`QuickLook` worker to RunEngine ``RE`` (after ``archive.subscribe(RE)``)."""
    ql = QuickLook(archive, out_dir, site=site, archive_wait_s=archive_wait_s)
    ql._subscription = (RE, RE.subscribe(ql))
    return ql


__all__ = ["QUICKLOOK_PLAN", "QuickLook", "QuickLookRecord", "analyse_run", "attach_quicklook", "png_path",
           "quicklook_for", "quicklook_results", "wait_quicklook", "write_linked_run"]
