"""HADC: read the hour angle and declination of the dish, once or ``--count`` times.

Both come from one drive control cycle (the position packet ``DRV:POS_PKT``): the encoder angles and the
observed apparent place (encoder - pointing model - refraction).  Importable: :func:`read_hadc` gives a
:class:`HaDec` from a connected :class:`devices.drive.Drive`.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from opi.programs import common

NAME = "hadc"


@dataclass(frozen=True)
class HaDec:
    """Where the dish points in one control cycle.

    Attributes
    ----------
    t : float
        Observatory time of the control cycle (POSIX s, UTC).
    ha_enc_deg, dec_enc_deg : float
        Hour-angle and declination encoders (deg).
    ha_obs_deg, dec_obs_deg : float
        Observed apparent HA/Dec of the beam: encoder - pointing model - refraction (deg).
    state : str
        Drive state (STOPPED, SLEWING, TRACKING, ...).
    """

    t: float
    ha_enc_deg: float
    dec_enc_deg: float
    ha_obs_deg: float
    dec_obs_deg: float
    state: str

    def as_dict(self) -> dict[str, Any]:
        """The reading with its UTC text."""
        return {"utc": common.fmt_utc(self.t, 3), **asdict(self)}


def packet(drive: Any, fresh: bool = False) -> np.ndarray:
    """The drive's position packet, read now (``fresh``) or the newest monitor update.

    ProgramError if the drive has not published one yet.
    """
    from devices.drive import PKT_LENGTH  # noqa: PLC0415

    pkt = None if fresh else drive.packet()
    if pkt is None:  # read now: asked for, or just connected and the first monitor update is not here yet
        raw = drive.pos_pkt.fresh()[0]
        pkt = np.asarray(raw if raw is not None else [], dtype=float).reshape(-1)
    if pkt.size != PKT_LENGTH:
        raise common.ProgramError(f"the drive's position packet {drive.pos_pkt.pvname} is empty "
                                  "(drive IOC starting?)")
    return pkt


def read_hadc(drive: Any, fresh: bool = False) -> HaDec:
    """HA and Dec of the dish (encoders and observed) from the newest position packet of ``drive`` (monitored;
    ``fresh``: read now)."""
    from devices.drive import PKT_DEC_ENC, PKT_DEC_OBS, PKT_HA_ENC, PKT_HA_OBS, PKT_T  # noqa: PLC0415

    pkt = packet(drive, fresh)
    return HaDec(t=float(pkt[PKT_T]), ha_enc_deg=float(pkt[PKT_HA_ENC]), dec_enc_deg=float(pkt[PKT_DEC_ENC]),
                 ha_obs_deg=float(pkt[PKT_HA_OBS]), dec_obs_deg=float(pkt[PKT_DEC_OBS]),
                 state=drive.packet_state(pkt))


def line(r: HaDec) -> str:
    """One text line of a reading."""
    f = common
    return (f"{f.fmt_utc(r.t)} UTC  HA {f.fmt_ha(r.ha_enc_deg)} ({r.ha_enc_deg:+9.4f} deg)  "
            f"Dec {f.fmt_dms(r.dec_enc_deg)} ({r.dec_enc_deg:+8.4f} deg)  encoders; observed HA "
            f"{r.ha_obs_deg:+9.4f} Dec {r.dec_obs_deg:+8.4f} deg  {r.state}")


def render(r: HaDec) -> Any:
    """A table of a reading for the terminal."""
    f = common
    return f.kv_table("HADC: hour angle and declination", [
        ("UTC", f.fmt_utc(r.t)),
        ("HA encoder", f"{f.fmt_ha(r.ha_enc_deg)}  {r.ha_enc_deg:+9.4f} deg"),
        ("Dec encoder", f"{f.fmt_dms(r.dec_enc_deg)}  {r.dec_enc_deg:+8.4f} deg"),
        ("HA observed", f"{f.fmt_ha(r.ha_obs_deg)}  {r.ha_obs_deg:+9.4f} deg"),
        ("Dec observed", f"{f.fmt_dms(r.dec_obs_deg)}  {r.dec_obs_deg:+8.4f} deg"),
        ("drive", r.state)], caption="observed = encoder - pointing model - refraction")


def build_parser() -> common.ProgramParser:
    """``obsctl hadc`` arguments."""
    return common.make_parser(
        NAME,
        "HADC: read the hour angle and declination of the dish (encoders, and the observed apparent\n"
        "place = encoder - pointing model - refraction), from one drive control cycle.  One reading by\n"
        "default; --count N readings --interval seconds apart.",
        ["obsctl hadc", "obsctl hadc --count 10 --interval 0.5", "obsctl hadc --json"],
        interval=1.0, count_help="N readings (default 1)")


def run(args: argparse.Namespace) -> int:
    """Read and show HA/Dec."""
    obs = common.connect(args, needs=["DRV"])
    drive = obs.device("drive", signals=["pos_pkt", "state"])
    common.refresh_loop(args, lambda: read_hadc(drive), render=render, line=line, record=HaDec.as_dict,
                        count=args.count or 1)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``obsctl hadc``."""
    return common.run_main(NAME, build_parser(), argv, run)
