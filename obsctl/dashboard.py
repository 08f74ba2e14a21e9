"""Live terminal status of the running observatory (``obsctl run``), refreshed in place once a second.

Reads PVs over Channel Access with pyepics monitors; a PV that does not answer shows as "—" and the
process table marks the IOC down, so a crashed instrument is visible at a glance.
"""

from __future__ import annotations

import time
from pathlib import Path

from obsctl import launcher
from obsctl.launcher import ObservatoryState

#: (section, label, device, signal, format); rows of absent devices are left out.
PANEL: list[tuple[str, str, str, str, str]] = [
    ("Time", "UTC", "TIME", "UTC_RBV", "{}"),
    ("Time", "LST", "TIME", "LST_STR_RBV", "{}"),
    ("Time", "MJD", "TIME", "MJD_RBV", "{:.5f}"),
    ("Time", "1PPS", "TIME", "PPS_STS", "{}"),
    ("Time", "speed", "TIME", "SPEED_RBV", "{:g}x"),
    ("Drive", "state", "DRV", "STATE_STS", "{}"),
    ("Drive", "HA / deg", "DRV", "HA_RBV", "{:+.4f}"),
    ("Drive", "Dec / deg", "DRV", "DEC_RBV", "{:+.4f}"),
    ("Drive", "El / deg", "DRV", "EL_RBV", "{:.3f}"),
    ("Drive", "on source", "DRV", "ON_SOURCE_STS", "{}"),
    ("Drive", "sun dist / deg", "DRV", "SUN_DIST_RBV", "{:.1f}"),
    ("Drive", "message", "DRV", "MSG_RBV", "{}"),
    ("Radiometer", "DVM1 / K", "RAD", "DVM1_RBV", "{:.3f}"),
    ("Radiometer", "DVM2 / K", "RAD", "DVM2_RBV", "{:.3f}"),
    ("Radiometer", "samples", "RAD", "SAMPLES_RBV", "{}"),
    ("Front end", "receiver", "NDI", "RX_SEL_SP", "{}"),
    ("Front end", "noise diode / K", "NDI", "ND_K_RBV", "{:.2f}"),
    ("Backends", "correlator", "COR", "STATE_STS", "{}"),
    ("Backends", "pulsar timer", "PSR", "STATE_STS", "{}"),
    ("Weather", "temperature / degC", "WX", "TEMP_RBV", "{:.1f}"),
    ("Weather", "humidity / %", "WX", "HUM_RBV", "{:.0f}"),
    ("Weather", "wind / m/s", "WX", "WIND_SPD_RBV", "{:.1f}"),
    ("Housekeeping", "15 K stage / K", "TMS", "CRYO_15K_RBV", "{:.2f}"),
    ("Housekeeping", "70 K stage / K", "TMS", "CRYO_70K_RBV", "{:.1f}"),
    ("Housekeeping", "vacuum / mbar", "TMS", "VAC_RBV", "{:.2e}"),
]

_SEVERITY_STYLE = {0: "", 1: "yellow", 2: "bold red", 3: "magenta"}


def live_status(state: ObservatoryState, state_dir: Path, duration: float | None = None,
                refresh_s: float = 1.0) -> None:
    """Show the live panel until Ctrl-C (or for ``duration`` real seconds)."""
    from obsctl import ca

    ca.use_env(launcher.client_env(state_dir, state))
    import epics
    from rich.columns import Columns
    from rich.live import Live
    from rich.table import Table

    devs = {d for p in state.processes for d in p.devs}
    rows = [r for r in PANEL if r[2] in devs]
    pvs = {(d, s): epics.PV(f"{state.prefix}:{d}:{s}", auto_monitor=True) for _, _, d, s, _ in rows}

    def render() -> Columns:
        sections: dict[str, Table] = {}
        for section, label, dev, sig, fmt in rows:
            table = sections.get(section)
            if table is None:
                table = sections[section] = Table(title=section, show_header=False, min_width=34)
                table.add_column("item")
                table.add_column("value", justify="right")
            pv = pvs[(dev, sig)]
            if not pv.connected:
                text, style = "—", "dim"
            else:
                value = pv.get(as_string=pv.type.endswith("enum") or pv.type.endswith("string"),
                               use_monitor=True)
                try:
                    text = fmt.format(value)
                except (TypeError, ValueError):
                    text = str(value)
                style = _SEVERITY_STYLE.get(pv.severity or 0, "")
            table.add_row(label, f"[{style}]{text}[/]" if style else text)
        procs = Table(title="IOC processes")
        for c in ("process", "pid", "alive", "restarts"):
            procs.add_column(c)
        try:
            for r in launcher.status(state_dir):
                procs.add_row(r["process"], str(r["pid"]), "yes" if r["alive"] else "[bold red]NO[/]",
                              str(r["restarts"]))
        except launcher.LauncherError:
            procs.add_row("(state missing)", "", "", "")
        return Columns([*sections.values(), procs])

    t0 = time.monotonic()
    with Live(render(), refresh_per_second=4, screen=False) as live:
        while duration is None or time.monotonic() - t0 < duration:
            time.sleep(refresh_s)
            live.update(render())
