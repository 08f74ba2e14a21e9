"""Run one IOC process: ``python -m iocs --site FILE [--prefix P] DEV [DEV ...]``.

The Channel Access port and search list come from the EPICS_CA_* environment and the observatory clock
from ``OBSCTL_CLOCK`` (both set by the launcher).  On start the process writes the names of the PVs it
serves to ``--pv-list`` (JSON) so that the launcher can wait for every one of them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from iocs.autosave import Autosave
from iocs.common import build_iocs, serve
from obsctl.clock import ObservatoryClock
from obsctl.site import SiteError, load_site


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    ap = argparse.ArgumentParser(prog="python -m iocs", description=__doc__)
    ap.add_argument("devs", nargs="+", help="device names from the site file, e.g. DRV WX")
    ap.add_argument("--site", default=None, help="site file (default: the reference site)")
    ap.add_argument("--prefix", default=None, help="override the site's PV prefix")
    ap.add_argument("--pv-list", default=None, help="write the served PV names to this JSON file")
    ap.add_argument("--autosave", default=None, metavar="DIR",
                    help="keep each IOC's settings in DIR/<DEV>.json across restarts (iocs.autosave)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("caproto").setLevel(logging.WARNING)
    try:
        site = load_site(args.site)
        if args.prefix:
            site = site.with_overrides(pv_prefix=args.prefix)
        clock = ObservatoryClock.from_env()
        iocs = build_iocs(site, args.devs, clock)
        for ioc in iocs:
            ioc.autosave = Autosave(args.autosave, ioc.dev) if args.autosave else None
    except (SiteError, KeyError, ValueError) as err:
        print(f"iocs: {err}", file=sys.stderr)
        return 2
    if args.pv_list:
        names = sorted(n for ioc in iocs for n in ioc.pvdb if "." not in n)
        tmp = Path(args.pv_list + ".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "pvs": names}))
        tmp.replace(args.pv_list)
    logging.getLogger("obsctl.ioc").info("serving %s on port %s", " ".join(args.devs),
                                         os.environ.get("EPICS_CA_SERVER_PORT", "5064"))
    asyncio.run(serve(iocs, interface=site.ca.interface))
    return 0


if __name__ == "__main__":
    sys.exit(main())
