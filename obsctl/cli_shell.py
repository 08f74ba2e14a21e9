"""``obsctl shell``: an IPython session connected to the running observatory.

The namespace holds ``RE`` (a bluesky RunEngine writing every run to the archive, with a live table/plot
callback and progress bars for long moves; ``RE(plan).plan_result`` is what the plan achieved; a quick-look
worker analyses each finished run: ``wait_quicklook(catalog, uid)``), every device of the site by name
(``drive``, ``radiometer``, ...), the public plans (``import plans``), ``bps``/``bp`` (bluesky plan stubs and
plans), ``archive`` and its ``catalog``, and ``site``.

Part of the command-line top floor: it imports devices, plans and the archive inside its functions.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from obsctl import launcher


def session_namespace(state_dir: Path, *, archive_dir: str | None = None, live: bool = True) -> dict[str, Any]:
    """Build the interactive namespace for the observatory started from ``state_dir``."""
    from obsctl import ca
    from obsctl.site import load_site

    state = launcher.ObservatoryState.load(state_dir)
    ca.use_env(launcher.client_env(state_dir, state))
    import bluesky.plan_stubs as bps
    import bluesky.plans as bp
    from bluesky import RunEngine

    import plans
    from archiver import queries
    from archiver.archive import open_archive
    from devices.registry import all_devices

    running = {d for p in state.processes for d in p.devs}
    full = load_site(state.site_file or None)
    site = full.with_overrides(pv_prefix=state.prefix, instruments=[
        i.model_dump() for i in full.instruments if i.dev in running])  # devices of the running IOCs only
    devices = all_devices(site)
    archive = open_archive(site, data_dir=archive_dir)
    RE = RunEngine({"observatory": site.name}, call_returns_result=True)  # noqa: N806  (bluesky convention)
    archive.subscribe(RE)
    from archiver import quicklook

    worker = quicklook.attach_quicklook(RE, archive, site=site)
    ns: dict[str, Any] = {"RE": RE, "bps": bps, "bp": bp, "plans": plans, "archive": archive,
                          "catalog": archive.client, "site": site, "devices": devices, "quicklook_worker": worker,
                          **devices}
    ns.update({name: getattr(plans, name) for name in getattr(plans, "__all__", [])})
    ns.update({name: getattr(queries, name) for name in ("find_runs", "last_runs", "run_summary", "run_table",
                                                          "summary_table")})
    ns.update({name: getattr(quicklook, name) for name in ("analyse_run", "quicklook_for", "wait_quicklook")})
    if live:
        from bluesky.callbacks.best_effort import BestEffortCallback
        from bluesky.utils import ProgressBarManager

        bec = BestEffortCallback()
        RE.subscribe(bec)
        RE.waiting_hook = ProgressBarManager()
        ns["bec"] = bec
    return ns


BANNER = """obsctl shell — {site} (prefix {prefix})
  RE(plan)              run a plan; every run goes to the archive ({archive})
  devices               {devices}
  plans                 {plans}
  catalog               the run archive: find_runs(catalog, source=...), last_runs(catalog, 5)
  quick-look            wait_quicklook(catalog, uid), quicklook_for(catalog, uid), analyse_run(run)
"""


def cmd_shell(args: argparse.Namespace) -> int:
    """Open IPython with the observatory's RunEngine, devices, plans and archive."""
    import IPython

    state_dir = Path(args.state_dir) if args.state_dir else launcher.default_state_dir()
    ns = session_namespace(state_dir, archive_dir=args.archive_dir, live=not args.no_live)
    banner = BANNER.format(site=ns["site"].name, prefix=ns["site"].pv_prefix, archive=ns["archive"].location,
                           devices=", ".join(ns["devices"]),
                           plans=", ".join(getattr(ns["plans"], "__all__", [])) or "(none)")
    print(banner)
    try:
        IPython.start_ipython(argv=[], user_ns=ns, display_banner=False)
    finally:
        ns["quicklook_worker"].close()
        ns["archive"].close()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``obsctl shell`` to the command line."""
    p = sub.add_parser("shell", help="IPython with RunEngine, devices, plans and the archive")
    p.add_argument("--archive-dir", default=None, help="archive directory (default: the site's)")
    p.add_argument("--no-live", action="store_true", help="no live table/plot callback")
    p.set_defaults(fn=cmd_shell)
