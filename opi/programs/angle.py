"""ANGLE: the encoder angles and the tachometers (axis velocities, sign and magnitude), five times a second.

Every reading is one drive control cycle (the position packet ``DRV:POS_PKT``): HA and Dec encoders and
the HA and Dec axis velocities (deg/s of observatory time), plus the second Dec encoder (``DEC2_RBV``,
newest monitor value).  Importable: :func:`read_angles` gives an :class:`Angles` from a connected drive.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any

from opi.programs import common
from opi.programs.hadc import packet

NAME = "angle"
ARCSEC = 3600.0
#: a tachometer below this (deg/s) reads as at rest ("0")
AT_REST_DEG_S = 1e-6


def sign(v: float) -> str:
    """``+``, ``-`` or ``0`` (at rest, below 1e-6 deg/s) for a velocity (deg/s)."""
    if not math.isfinite(v):
        return "?"
    return "0" if abs(v) < AT_REST_DEG_S else ("+" if v > 0 else "-")


@dataclass(frozen=True)
class Angles:
    """Encoder angles (deg) and axis velocities (deg/s) of one control cycle at observatory time ``t`` (POSIX s)."""

    t: float
    ha_enc_deg: float
    dec_enc_deg: float
    dec2_enc_deg: float
    ha_vel_deg_s: float
    dec_vel_deg_s: float
    state: str

    def as_dict(self) -> dict[str, Any]:
        """The reading, with the tachometer signs and magnitudes."""
        return {"utc": common.fmt_utc(self.t, 3), "t": self.t, "ha_enc_deg": self.ha_enc_deg,
                "dec_enc_deg": self.dec_enc_deg, "dec2_enc_deg": self.dec2_enc_deg,
                "ha_vel_deg_s": self.ha_vel_deg_s, "dec_vel_deg_s": self.dec_vel_deg_s,
                "ha_tach_sign": sign(self.ha_vel_deg_s), "ha_tach_deg_s": abs(self.ha_vel_deg_s),
                "dec_tach_sign": sign(self.dec_vel_deg_s), "dec_tach_deg_s": abs(self.dec_vel_deg_s),
                "state": self.state}


def read_angles(drive: Any, fresh: bool = False) -> Angles:
    """Encoders and tachometers of ``drive`` from its newest position packet (``fresh``: read now)."""
    from devices.drive import PKT_DEC_ENC, PKT_DEC_RATE, PKT_HA_ENC, PKT_HA_RATE, PKT_T  # noqa: PLC0415

    pkt = packet(drive, fresh)
    dec2 = drive.dec2.get()
    return Angles(t=float(pkt[PKT_T]), ha_enc_deg=float(pkt[PKT_HA_ENC]), dec_enc_deg=float(pkt[PKT_DEC_ENC]),
                  dec2_enc_deg=float(dec2) if dec2 is not None else math.nan,
                  ha_vel_deg_s=float(pkt[PKT_HA_RATE]), dec_vel_deg_s=float(pkt[PKT_DEC_RATE]),
                  state=drive.packet_state(pkt))


def _tach(v: float) -> str:
    return f"{sign(v)} {abs(v):.6f} deg/s ({abs(v) * ARCSEC:8.2f} arcsec/s)"


def line(a: Angles) -> str:
    """One text line of a reading."""
    return (f"{common.fmt_utc(a.t)}  HA {a.ha_enc_deg:+10.5f}  Dec {a.dec_enc_deg:+9.5f}  Dec2 "
            f"{a.dec2_enc_deg:+9.5f} deg   tach HA {sign(a.ha_vel_deg_s)}{abs(a.ha_vel_deg_s):.6f}  Dec "
            f"{sign(a.dec_vel_deg_s)}{abs(a.dec_vel_deg_s):.6f} deg/s  {a.state}")


def render(a: Angles) -> Any:
    """The live table."""
    return common.kv_table("ANGLE: encoders and tachometers", [
        ("UTC", common.fmt_utc(a.t)),
        ("HA encoder", f"{a.ha_enc_deg:+10.5f} deg"),
        ("Dec encoder", f"{a.dec_enc_deg:+10.5f} deg"),
        ("Dec encoder 2", f"{a.dec2_enc_deg:+10.5f} deg"),
        ("HA tachometer", _tach(a.ha_vel_deg_s)),
        ("Dec tachometer", _tach(a.dec_vel_deg_s)),
        ("drive", a.state)], caption="velocities in deg per second of observatory time")


def build_parser() -> common.ProgramParser:
    """``obsctl angle`` arguments."""
    return common.make_parser(
        NAME,
        "ANGLE: HA and Dec encoder angles (and the second Dec encoder) and the tachometers: sign and\n"
        "magnitude of each axis velocity, refreshed in place five times a second until Ctrl-C.",
        ["obsctl angle", "obsctl angle --count 25 --json > angles.jsonl", "obsctl angle --interval 1"],
        interval=0.2)


def run(args: argparse.Namespace) -> int:
    """Show encoders and tachometers."""
    obs = common.connect(args, needs=["DRV"])
    drive = obs.device("drive", signals=["pos_pkt", "dec2", "state"])
    packet(drive)  # fails clearly if the drive publishes no packet
    common.refresh_loop(args, lambda: read_angles(drive), render=render, line=line, record=Angles.as_dict)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``obsctl angle``."""
    return common.run_main(NAME, build_parser(), argv, run)
