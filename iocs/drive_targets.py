"""Drive targets: apparent positions, pointing corrections, goals and the safety checks on them.

The drive control system (like PC-STEER) turns a target into a commanded encoder position:

    commanded encoder = apparent HA/Dec + user offsets + pointing model + refraction

Apparent positions come from astropy (topocentric HADec frame, no refraction) at anchor times on a fixed
grid (every ``anchor_s`` seconds of observatory time); apparent RA = LST - HA at the anchors is
interpolated linearly in between, and HA = LST - RA.  Offsets are *coordinate* degrees (an HA offset of
1 deg moves the beam by cos(Dec) deg on the sky).  Angles deg, times POSIX seconds of observatory time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from astropy.coordinates import SkyCoord

from iocs.sim.drive import hadec_to_azel, refraction_offsets, sun_distance
from obsctl import astro
from obsctl.catalog import Catalog
from obsctl.pointing import PointingModel
from obsctl.site import MountConfig
from obsctl.sky import Weather


class TargetError(ValueError):
    """A target the drive refuses; ``limit`` names the LIMIT_STS state, the message says why (short)."""

    def __init__(self, message: str, limit: str = "OK"):
        super().__init__(message)
        self.limit = limit


class ApparentTrack:
    """Apparent HA/Dec of an ICRS direction or a solar-system body, anchored on astropy.

    Parameters
    ----------
    loc : obsctl.astro.Location
    lst : callable
        Local apparent sidereal time (deg) of a POSIX time.
    coord : SkyCoord, optional
        ICRS direction (catalog source or RA/Dec).
    body : str, optional
        Solar-system body name (see :data:`obsctl.astro.BODIES`), instead of ``coord``.
    anchor_s : float
        Spacing of the astropy anchors (s of observatory time).
    """

    def __init__(self, loc: astro.Location, lst: Callable[[float], float], coord: SkyCoord | None = None,
                 body: str | None = None, anchor_s: float = 300.0, label: str = ""):
        if (coord is None) == (body is None):
            raise ValueError("give exactly one of coord and body")
        self.loc, self.lst, self.coord, self.body = loc, lst, coord, body
        self.anchor_s = anchor_s
        self.label = label or body or ""
        self._anchors: dict[int, tuple[float, float]] = {}

    def _compute(self, ks: list[int]) -> None:
        times = np.array([k * self.anchor_s for k in ks], dtype=float)
        if self.body is not None:
            ha, dec = astro.body_hadec(self.body, times, self.loc)
        else:
            ha, dec = astro.apparent_hadec(self.coord, times, self.loc)
        for k, t, h, d in zip(ks, times, np.atleast_1d(ha), np.atleast_1d(dec), strict=True):
            self._anchors[k] = ((float(self.lst(t)) - float(h)) % 360.0, float(d))
        if len(self._anchors) > 64:  # keep the cache small: drop the anchors furthest from these
            for k in sorted(self._anchors, key=lambda j: abs(j - ks[0]))[48:]:
                del self._anchors[k]

    def radec(self, t: float) -> tuple[float, float]:
        """Apparent RA (0..360) and Dec (deg) at ``t``, interpolated between anchors."""
        k = math.floor(t / self.anchor_s)
        missing = [j for j in (k, k + 1) if j not in self._anchors]
        if missing:
            self._compute(missing)
        ra0, dec0 = self._anchors[k]
        ra1, dec1 = self._anchors[k + 1]
        f = t / self.anchor_s - k
        return (ra0 + f * float(astro.wrap180(ra1 - ra0))) % 360.0, dec0 + f * (dec1 - dec0)

    def __call__(self, t: float) -> tuple[float, float]:
        """Apparent HA (-180..180) and Dec (deg) at ``t``."""
        ra, dec = self.radec(t)
        return float(astro.wrap180(float(self.lst(t)) - ra)), dec


def resolve_track(name: str, ra_deg: float, dec_deg: float, catalog: Catalog, loc: astro.Location,
                  lst: Callable[[float], float]) -> ApparentTrack:
    """The track of a catalog source or body called ``name``, or of ICRS (ra, dec) if ``name`` is empty.

    Raises TargetError for an unknown name.
    """
    key = name.strip()
    if not key:
        return ApparentTrack(loc, lst, coord=astro.parse_radec(ra_deg, dec_deg),
                             label=f"RA {ra_deg:.3f} Dec {dec_deg:.3f}")
    if key.lower() in astro.BODIES:
        return ApparentTrack(loc, lst, body=key.lower(), anchor_s=120.0)
    try:
        src = catalog.get(key)
    except KeyError:
        raise TargetError(f"unknown source {key!r}") from None
    return ApparentTrack(loc, lst, coord=src.coord, label=src.name)


def known_target(name: str, catalog: Catalog) -> bool:
    """Whether ``name`` is empty, a body or a catalog source."""
    key = name.strip()
    if not key or key.lower() in astro.BODIES:
        return True
    try:
        catalog.get(key)
    except KeyError:
        return False
    return True


@dataclass(frozen=True)
class Pointing:
    """One commanded position and its parts (deg); ``el`` is the apparent elevation of the beam target."""

    ha_cmd: float
    dec_cmd: float
    ha_app: float
    dec_app: float
    ha_pm: float = 0.0
    dec_pm: float = 0.0
    ha_refr: float = 0.0
    dec_refr: float = 0.0
    off_ha: float = 0.0
    off_dec: float = 0.0
    el: float = 90.0


class Corrections:
    """Pointing model and refraction of the site; ``weather()`` gives the current surface weather."""

    def __init__(self, model: PointingModel, lat: float, weather: Callable[[], Weather]):
        self.model, self.lat, self.weather = model, lat, weather

    def pointing(self, ha_app: float, dec_app: float, t: float, off_ha: float = 0.0,
                 off_dec: float = 0.0) -> Pointing:
        """Commanded encoder position for an apparent target plus coordinate offsets at time ``t``."""
        ha, dec = ha_app + off_ha, dec_app + off_dec
        pm_h, pm_d = self.model.offsets(t)
        r_h, r_d, el = refraction_offsets(ha, dec, self.lat, self.weather())
        return Pointing(ha + pm_h + r_h, dec + pm_d + r_d, ha_app, dec_app, pm_h, pm_d, r_h, r_d,
                        off_ha, off_dec, el)

    def believed(self, ha_enc: float, dec_enc: float, t: float) -> Pointing:
        """What the control system believes an encoder position points at (apparent = enc - PM - refr).

        Refraction is evaluated at the position corrected for the pointing model (one iteration); ``el`` is
        the elevation of the believed apparent place, as for a commanded target.
        """
        pm_h, pm_d = self.model.offsets(t)
        r_h, r_d, _ = refraction_offsets(ha_enc - pm_h, dec_enc - pm_d, self.lat, self.weather())
        ha_app, dec_app = ha_enc - pm_h - r_h, dec_enc - pm_d - r_d
        return Pointing(ha_enc, dec_enc, ha_app, dec_app, pm_h, pm_d, r_h, r_d,
                        el=hadec_to_azel(ha_app, dec_app, self.lat)[1])


class FixedGoal:
    """Hold a fixed encoder position: slew target, drift park point, zenith, stow or a stop point."""

    sky = False
    sun_target = False

    def __init__(self, pointing: Pointing, moving: str, done: str, label: str, forced: bool = False,
                 safe: bool = False):
        self.pointing, self.moving, self.done, self.label = pointing, moving, done, label
        self.forced = forced  # commanded by the drive itself (wind stow): no watchdog
        self.safe = safe  # the safe position (stow): exempt from sun avoidance

    def samples(self, t: float) -> list[tuple[float, Pointing]]:
        """(time, position) pairs to check before accepting the goal."""
        return [(t, self.pointing)]

    def at(self, t: float) -> Pointing:
        """The (constant) commanded position."""
        return self.pointing

    def state(self, arrived: bool, t: float) -> str:
        """Drive state while moving / once arrived."""
        return self.done if arrived else self.moving


class SkyGoal:
    """Follow an apparent track plus offsets: TRACK (live offsets) or SCAN (offsets advancing at a rate).

    ``offsets()`` gives the user offsets OFF_HA/OFF_DEC (deg, read live).  A scan starts advancing when the
    axes first sit on the start point (:meth:`arrive`), for ``duration`` s (0 = until the next command),
    then holds the final offsets and the state returns to TRACKING.
    """

    sky = True
    forced = False
    safe = False

    def __init__(self, track: ApparentTrack, corr: Corrections, offsets: Callable[[], tuple[float, float]],
                 rates: tuple[float, float] = (0.0, 0.0), duration: float = 0.0, scan: bool = False):
        self.track, self.corr, self.offsets = track, corr, offsets
        self.rates, self.duration, self.scan = rates, duration, scan
        self.t_start: float | None = None
        self.label = ("SCAN " if scan else "") + track.label

    @property
    def sun_target(self) -> bool:
        """Whether the target is the sun itself (solar observing; see the drive's SUN_OBS_SP)."""
        return self.track.body == "sun"

    def scan_offsets(self, t: float) -> tuple[float, float]:
        """Offsets added by the scan so far (deg)."""
        if not self.scan or self.t_start is None:
            return 0.0, 0.0
        tau = max(t - self.t_start, 0.0)
        if self.duration > 0:
            tau = min(tau, self.duration)
        return self.rates[0] * tau, self.rates[1] * tau

    def at(self, t: float) -> Pointing:
        """Commanded position at ``t``."""
        ha, dec = self.track(t)
        oh, od = self.offsets()
        sh, sd = self.scan_offsets(t)
        return self.corr.pointing(ha, dec, t, oh + sh, od + sd)

    def arrive(self, t: float) -> None:
        """The axes sit on the commanded position at ``t``: start the scan clock."""
        if self.scan and self.t_start is None:
            self.t_start = t

    def finished(self, t: float) -> bool:
        """Whether a finite scan has run its duration."""
        return self.t_start is not None and self.duration > 0 and t - self.t_start >= self.duration

    def state(self, arrived: bool, t: float) -> str:
        """SCANNING until a finite scan is over, else TRACKING."""
        return "SCANNING" if self.scan and not self.finished(t) else "TRACKING"

    def samples(self, t: float, n: int = 12) -> list[tuple[float, Pointing]]:
        """(time, commanded position) pairs along the whole scan line, as if it started at ``t``."""
        if not self.scan or self.duration <= 0:
            return [(t, self.at(t))]
        probe = SkyGoal(self.track, self.corr, self.offsets, self.rates, self.duration, True)
        probe.t_start = t
        times = [t + self.duration * k / n for k in range(n + 1)]
        return [(x, probe.at(x)) for x in times]


#: how far inside an axis limit a manual move comes to rest, beyond the room the axis may need to catch up
#: with its command (deg)
LIMIT_MARGIN_DEG = 0.01
#: fraction of an axis's maximum acceleration with which a manual command brakes (the axis can follow it)
COMMAND_BRAKE_FRACTION = 0.9


class RateGoal:
    """Manual drive (RATE): the commanded encoder position moves at fixed axis rates from a start point.

    Commanded encoder = ``start + rates * (t - t0)`` (deg, rates deg/s of observatory time); the axes
    follow it within their own rate and acceleration limits.  Nothing on the sky is followed: rates of 0
    hold the position.  The command carries the axis limits itself: at ``t0 + hold`` it starts braking
    (both axes, each at COMMAND_BRAKE_FRACTION of its acceleration) so as to come to rest LIMIT_MARGIN_DEG
    plus the axis's catch-up room inside the first limit it runs towards, however late the control cycles
    come.  ``axes`` gives per axis (name, lower limit, upper limit, maximum acceleration).  Raises
    TargetError when an axis is already too near the limit it runs towards.
    """

    sky = False
    sun_target = False
    forced = False
    safe = False

    def __init__(self, start: tuple[float, float], rates: tuple[float, float], t0: float, corr: Corrections,
                 axes: tuple[tuple[str, float, float, float], ...]):
        self.start, self.rates, self.t0, self.corr = start, rates, t0, corr
        self.label = f"RATE HA {rates[0]:+.5f} Dec {rates[1]:+.5f} deg/s"
        self.brake = tuple(COMMAND_BRAKE_FRACTION * a for _, _, _, a in axes)
        self.hold, self.why, self.limit = math.inf, "", "OK"
        for s, r, (name, lo, hi, _), a in zip(start, rates, axes, self.brake, strict=True):
            if r == 0.0:
                continue
            stopping = r * r / (2.0 * a)
            edge = hi - LIMIT_MARGIN_DEG - stopping if r > 0 else lo + LIMIT_MARGIN_DEG + stopping
            hold = (edge - s - math.copysign(stopping, r)) / r
            if hold < self.hold:
                side = "max" if r > 0 else "min"
                self.hold, self.limit = hold, f"{name.upper()}_{'HIGH' if r > 0 else 'LOW'}"
                self.why = f"limit: {name} {side} {hi if r > 0 else lo:g} ahead"
        if self.hold < 0.0:
            raise TargetError(f"{self.why} within braking distance", self.limit)

    def braking(self, t: float) -> bool:
        """Whether the command brakes at ``t`` because a limit is ahead."""
        return t - self.t0 > self.hold

    def command(self, t: float) -> tuple[float, float]:
        """Commanded encoder HA and Dec at ``t`` (deg)."""
        tau = t - self.t0
        out = []
        for s, r, a in zip(self.start, self.rates, self.brake, strict=True):
            if tau <= self.hold:
                out.append(s + r * tau)
                continue
            u = min(tau - self.hold, abs(r) / a)
            out.append(s + r * self.hold + r * u - math.copysign(0.5 * a * u * u, r))
        return out[0], out[1]

    def at(self, t: float) -> Pointing:
        """Commanded position at ``t`` (what the control system believes it points at)."""
        h, d = self.command(t)
        return self.corr.believed(h, d, t)

    def samples(self, t: float) -> list[tuple[float, Pointing]]:
        """None: the axis limits are in the command, the horizon and sun are checked by the drive (a move
        back from beyond a limit is allowed)."""
        return []

    def state(self, arrived: bool, t: float) -> str:
        """MANUAL throughout."""
        return "MANUAL"


# ---- safety checks -----------------------------------------------------------------------------
def check_pointing(p: Pointing, mount: MountConfig, sun_hadec: tuple[float, float] | None) -> None:
    """Raise TargetError if a commanded position is outside the software limits or too near the sun."""
    ha_t, dec_t = p.ha_app + p.off_ha, p.dec_app + p.off_dec
    if sun_hadec is not None:
        d = sun_distance(ha_t, dec_t, *sun_hadec)
        if d < mount.sun_avoidance_deg:
            raise TargetError(f"sun: target {d:.1f} deg from sun (<{mount.sun_avoidance_deg:g})", "SUN")
    if p.ha_cmd < mount.ha.min_deg:
        raise TargetError(f"limit: HA {p.ha_cmd:.2f} < min {mount.ha.min_deg:g}", "HA_LOW")
    if p.ha_cmd > mount.ha.max_deg:
        raise TargetError(f"limit: HA {p.ha_cmd:.2f} > max {mount.ha.max_deg:g}", "HA_HIGH")
    if p.dec_cmd < mount.dec.min_deg:
        raise TargetError(f"limit: Dec {p.dec_cmd:.2f} < min {mount.dec.min_deg:g}", "DEC_LOW")
    if p.dec_cmd > mount.dec.max_deg:
        raise TargetError(f"limit: Dec {p.dec_cmd:.2f} > max {mount.dec.max_deg:g}", "DEC_HIGH")
    if p.el < mount.min_elevation_deg:
        raise TargetError(f"limit: el {p.el:.2f} < min {mount.min_elevation_deg:g}", "HORIZON")


def check_path(ts: np.ndarray, has: np.ndarray, decs: np.ndarray, sun: Callable[[float], tuple[float, float]],
               avoid_deg: float) -> None:
    """Raise TargetError if a sampled slew path (encoder HA/Dec at times ``ts``) comes too near the sun.

    The sun's motion during the slew is followed (linear between the path's first and last instants).
    A path that starts inside the zone may only move away: the threshold is then the starting distance.
    """
    (h0, d0), (h1, d1) = sun(float(ts[0])), sun(float(ts[-1]))
    span = max(float(ts[-1] - ts[0]), 1e-9)
    f = (ts - ts[0]) / span
    sun_ha = h0 + f * float(astro.wrap180(h1 - h0))
    sun_dec = d0 + f * (d1 - d0)
    dist = astro.angular_distance(has, decs, sun_ha, sun_dec)
    limit = min(avoid_deg, float(dist[0])) - 1e-6
    if np.any(dist < limit):
        raise TargetError(f"sun: slew path passes {float(np.min(dist)):.1f} deg from sun", "SUN")

