"""DRV: the telescope drive (PC-STEER equivalent) of an equatorial mount (HA/Dec axes).

PVs (prefix ``SITE:DRV:``); angles in degrees, "sim s" = seconds of observatory time
------------------------------------------------------------------------------------------
Commands and setpoints
  MODE_CMD        command enum STOP, SLEW, TRACK, DRIFT, SCAN, STOW, ZENITH, RATE (acts on the setpoints below)
  SLEW_FRAME_SP   frame of the SLEW target: HADEC (apparent HA/Dec) or AZEL (apparent Az/El)
  SLEW_X_SP       SLEW target HA (-180..180) or azimuth (0..360) (deg)
  SLEW_Y_SP       SLEW target Dec or elevation (deg)
  TRACK_NAME_SP   source for TRACK/DRIFT/SCAN: catalog name or sun/moon/planet; empty = TRACK_RA/DEC_SP
  TRACK_RA_SP     target RA, ICRS J2000 (deg)
  TRACK_DEC_SP    target Dec, ICRS J2000 (deg)
  DRIFT_LEAD_SP   DRIFT: park this far ahead of the target in HA (deg; reached after lead/15.04 h)
  OFF_HA_SP       offset in HA, coordinate degrees (not true angle), live in TRACK and SCAN (deg)
  OFF_DEC_SP      offset in Dec (deg)
  RATE_HA_SP      SCAN rate of the HA offset (deg/s of sim time, coordinate); RATE: HA axis rate
  RATE_DEC_SP     SCAN rate of the Dec offset (deg/s); RATE: Dec axis rate
  SCAN_DUR_SP     SCAN duration (sim s; 0 = until the next command)
  WATCHDOG_SP     heartbeat timeout while moving (s of REAL time)
  WATCHDOG_ENA_SP ENABLED / DISABLED
  HEARTBEAT_SP    client heartbeat; any write (as any MODE_CMD write) counts
  SIM_PERR_HA_SP  simulation truth: extra pointing error of the structure in HA, unknown to the model (deg)
  SIM_PERR_DEC_SP same in Dec (deg)
  SUN_OBS_SP      NO / YES: the sun itself (TRACK_NAME_SP "sun", with offsets) allowed as a TRACK/SCAN target
  SYNC_SP         a position packet wanted at this instant (Unix s of sim time; a past one: at once)
Readbacks
  STATE_STS       STOPPED, SLEWING, TRACKING, DRIFTING, SCANNING, STOWING, STOWED, PARKED, FAULT, MANUAL
  ON_SOURCE_STS   NO/YES: |commanded - encoder| < on_source_tolerance on both axes (tracking/parked states)
  SETTLED_STS     NO/YES: on source continuously for settle_time_s (sim s)
  LIMIT_STS       OK, HA_LOW, HA_HIGH, DEC_LOW, DEC_HIGH, HORIZON, SUN: last limit that stopped/refused
  WATCHDOG_STS    OK / EXPIRED       WIND_STS OK / STOW       WX_LINK_STS OK / DISCONNECTED
  TARGET_RBV      current target (string)
  HA_APP_RBV, DEC_APP_RBV    apparent target, no offsets or corrections (deg)
  OFF_HA_RBV, OFF_DEC_RBV    offsets in the command now, user + scan (deg)
  HA_PM_RBV, DEC_PM_RBV      pointing-model corrections (deg)
  HA_REFR_RBV, DEC_REFR_RBV  refraction corrections (deg)
  HA_CMD_RBV, DEC_CMD_RBV    commanded encoder = APP + OFF + PM + REFR (deg)
  HA_RBV, DEC_RBV            encoders (deg); DEC2_RBV second Dec encoder (deg)
  HA_ERR_RBV, DEC_ERR_RBV    commanded - encoder (deg)
  HA_VEL_RBV, DEC_VEL_RBV    axis velocities (deg/s)
  AZ_RBV, EL_RBV             apparent azimuth/elevation of the beam, from HA/Dec_OBS (deg)
  RA_RBV          apparent RA of the beam = LST - HA_OBS (deg)
  LST_RBV         local apparent sidereal time (deg, not hours)
  SUN_DIST_RBV    distance of the beam from the sun (deg)
  WIND_RBV        wind speed used for the wind-stow decision (m/s)
  POS_PKT         position packet, obsctl/positions.py layout, every control cycle

HA_OBS = encoder - PM - refraction (what the control system believes); HA_SKY = HA_OBS - SIM_PERR (where
the beam truly points; computed from the noise-free axis angle).  Same for Dec.  Safety lives here:
software limits, sun avoidance (targets and sampled slew paths), a real-time heartbeat watchdog, and a
wind stow driven by the WX IOC.  STOW is exempt from sun avoidance (it is the safe position); so are TRACK
and SCAN of the sun itself (solar observing) while SUN_OBS_SP is YES, and only those.

Behaviour
---------
- SLEW, ZENITH and DRIFT hold a fixed encoder position computed when commanded (apparent target + pointing
  model + refraction at that instant): SLEWING -> PARKED (DRIFTING throughout for DRIFT).  STOW goes to the
  site's mechanical stow encoder position: STOWING -> STOWED.  STOP brakes at maximum acceleration: STOPPED.
- TRACK and SCAN follow the apparent place continuously; OFF_*_SP apply live (a change unsettles the
  drive).  A SCAN's offsets start advancing once the axes sit on the start point; when SCAN_DUR_SP has
  passed the final offsets are held and the state returns to TRACKING.
- RATE (manual drive) moves the axes at RATE_HA/DEC_SP (axis deg/s of sim time, at most 80 % of the axis
  maximum) from where they are, following nothing on the sky: MANUAL throughout, "on source" once the axes
  run on the moving command.  RATE again while MANUAL changes the rates from the current command, without
  a jump.  The command itself brakes before the first axis limit ahead (drive_targets.RateGoal), so the
  axes come to rest inside it however late a cycle comes; the drive then stops (LIMIT_STS says which).
  Horizon and sun: a rate is refused, and a manual move stopped, when the axes, speeding up towards the
  rates at full acceleration for two control periods and then braking (or braking from their present
  motion), could end below min_elevation_deg or within sun_avoidance_deg of the sun, and lower or nearer
  the sun than now.  From beyond a limit, a move back inside is allowed.
- Refused targets: outside the axis limits, below min_elevation_deg, within sun_avoidance_deg of the sun, or
  a sampled slew path (axis kinematics simulated ahead, sun motion included) passing within it; a path that
  starts inside the zone may only move away.  A tracked target that leaves the limits or nears the sun
  stops the drive (LIMIT_STS says which).  Moving axes whose stopping point would enter the zone are stopped.
- Solar observing: with SUN_OBS_SP = YES a TRACK or SCAN of the body "sun" (offsets included) is accepted and
  followed without the sun checks, the slew onto it included; every other target, slew and stop point is
  checked as always.  Setting SUN_OBS_SP back to NO while on the sun stops the drive (LIMIT_STS SUN); from
  inside the zone only paths that move away from the sun are then accepted (STOW always is).
- Watchdog (real time) while SLEWING, TRACKING, SCANNING, STOWING, MANUAL or moving to a DRIFT park point.  A wind
  stow is the drive's own action: no watchdog, and only STOP/STOW are accepted until the wind has stayed
  below 80 % of wind_stow_m_s for ``inst.options["wind_clear_s"]`` sim s (default 300).
- Control cycles run every 1/control_rate_hz real s, at once when a command or an offset is written, when
  the settle time of an axis pair on source runs out, and at the instants written to SYNC_SP (the radiometer
  asks for the end of an integration, so that its samples need not wait for the next periodic packet).
  "On source" starts at the instant the axes came within on_source_tolerance_deg of the command (found from
  the exact kinematics between cycles), so SETTLED_STS and the packet's ON_SOURCE say YES in the first cycle
  after that instant + settle_time_s.
- The drive starts STOPPED at the stow position.  Encoders carry white noise (encoder_noise_deg) and a
  smooth wind-buffeting error (~1 mdeg rms at 10 m/s, growing as wind^2; none when stowed).
"""

from __future__ import annotations

import time
from typing import Any

from iocs.common import ObsIOC, pv_enum, pv_float, pv_int, pv_str, pv_wave
from iocs.drive_safety import DriveSafety
from iocs.drive_targets import (
    ApparentTrack,
    Corrections,
    FixedGoal,
    Pointing,
    RateGoal,
    SkyGoal,
    TargetError,
    known_target,
    resolve_track,
)
from iocs.links import CALink
from iocs.sim.drive import (
    Axis,
    AxisSpec,
    EncoderNoise,
    entry_time,
    hadec_to_azel,
    sun_distance,
    wind_disturbance_deg,
)
from obsctl import astro
from obsctl.catalog import load_catalog
from obsctl.clock import ObservatoryClock
from obsctl.pointing import PointingModel
from obsctl.positions import LENGTH, pack
from obsctl.site import InstrumentConfig, Site
from obsctl.sky import Weather

MODES = ["STOP", "SLEW", "TRACK", "DRIFT", "SCAN", "STOW", "ZENITH", "RATE"]
STATES = ["STOPPED", "SLEWING", "TRACKING", "DRIFTING", "SCANNING", "STOWING", "STOWED", "PARKED", "FAULT",
          "MANUAL"]
LIMITS = ["OK", "HA_LOW", "HA_HIGH", "DEC_LOW", "DEC_HIGH", "HORIZON", "SUN"]
ON_SOURCE_STATES = {"TRACKING", "SCANNING", "DRIFTING", "PARKED", "STOWED", "MANUAL"}
NO_YES = ["NO", "YES"]
#: real s a cycle due at an instant (settle time over, SYNC_SP) comes late, so that its time is not before it
DUE_MARGIN_S = 0.0002
_I32 = 2**31 - 1


def _deg(name: str, doc: str, lo: float = -180.0, hi: float = 180.0, units: str = "deg", **kw: Any):
    return pv_float(name, doc, units, lo=lo, hi=hi, precision=5, **kw)


class DriveIOC(DriveSafety, ObsIOC):
    """Telescope drive: commands, safety, kinematics and pointing corrections (PV list in the module doc)."""

    mode = pv_enum("MODE_CMD", "Drive command, acts on the setpoints", MODES, writable=True)
    slew_frame = pv_enum("SLEW_FRAME_SP", "Frame of SLEW_X/Y_SP: HADEC or AZEL", ["HADEC", "AZEL"],
                         writable=True)
    slew_x = pv_float("SLEW_X_SP", "SLEW target HA (HADEC) or azimuth (AZEL)", "deg", 0.0, lo=-180, hi=360,
                      precision=5, writable=True)
    slew_y = pv_float("SLEW_Y_SP", "SLEW target Dec (HADEC) or elevation", "deg", -25.0, lo=-90,
                      hi=90, precision=5, writable=True)
    track_name = pv_str("TRACK_NAME_SP", "Catalog source or body; empty = RA/Dec", writable=True)
    track_ra = pv_float("TRACK_RA_SP", "Target RA, ICRS J2000 (if no name)", "deg", 0.0, lo=0, hi=360,
                        precision=5, writable=True)
    track_dec = pv_float("TRACK_DEC_SP", "Target Dec, ICRS J2000 (if no name)", "deg", 0.0, lo=-90, hi=90,
                         precision=5, writable=True)
    drift_lead = pv_float("DRIFT_LEAD_SP", "DRIFT: park ahead of the target in HA", "deg", 0.5, lo=-30, hi=30,
                          precision=4, writable=True)
    off_ha = pv_float("OFF_HA_SP", "HA offset, coordinate deg (TRACK/SCAN)", "deg", lo=-10, hi=10,
                      precision=5, writable=True)
    off_dec = pv_float("OFF_DEC_SP", "Dec offset (TRACK/SCAN)", "deg", lo=-10, hi=10, precision=5,
                       writable=True)
    rate_ha = pv_float("RATE_HA_SP", "SCAN HA offset / RATE HA axis rate", "deg/s", lo=-1, hi=1,
                       precision=6, writable=True)
    rate_dec = pv_float("RATE_DEC_SP", "SCAN Dec offset / RATE Dec axis rate", "deg/s", lo=-1, hi=1,
                        precision=6, writable=True)
    scan_dur = pv_float("SCAN_DUR_SP", "SCAN duration, sim s (0 = no end)", "s", lo=0, hi=86400,
                        precision=2, writable=True)
    watchdog = pv_float("WATCHDOG_SP", "Heartbeat timeout while moving (real s)", "s", 5.0, lo=0.5, hi=600,
                        precision=2, writable=True)
    watchdog_ena = pv_enum("WATCHDOG_ENA_SP", "Heartbeat watchdog ENABLED/DISABLED", ["ENABLED", "DISABLED"],
                           writable=True)
    heartbeat = pv_int("HEARTBEAT_SP", "Client heartbeat: any write counts", "count", lo=-_I32, hi=_I32,
                       writable=True)
    perr_ha = pv_float("SIM_PERR_HA_SP", "Sim truth: unmodelled HA pointing error", "deg", lo=-1, hi=1,
                       precision=5, writable=True)
    perr_dec = pv_float("SIM_PERR_DEC_SP", "Sim truth: unmodelled Dec pointing error", "deg", lo=-1, hi=1,
                        precision=5, writable=True)
    sun_obs = pv_enum("SUN_OBS_SP", "Sun itself allowed as TRACK/SCAN target", NO_YES, writable=True)
    sync = pv_float("SYNC_SP", "Position packet wanted at this instant", "s", lo=0, hi=1e11, precision=6,
                    writable=True)

    state = pv_enum("STATE_STS", "Drive state", STATES)
    on_source = pv_enum("ON_SOURCE_STS", "Within tolerance of command, both axes", NO_YES)
    settled = pv_enum("SETTLED_STS", "On source for the settle time", NO_YES)
    limit = pv_enum("LIMIT_STS", "Limit that stopped/refused last motion", LIMITS)
    watchdog_sts = pv_enum("WATCHDOG_STS", "Heartbeat watchdog status", ["OK", "EXPIRED"])
    wind_sts = pv_enum("WIND_STS", "Wind status (STOW = wind stow forced)", ["OK", "STOW"])
    wx_link = pv_enum("WX_LINK_STS", "Link to the weather IOC", ["OK", "DISCONNECTED"], "DISCONNECTED")
    target = pv_str("TARGET_RBV", "Current target")
    ha_app = _deg("HA_APP_RBV", "Apparent target HA, no corrections")
    dec_app = _deg("DEC_APP_RBV", "Apparent target Dec, no corrections", -90, 90)
    off_ha_rbv = _deg("OFF_HA_RBV", "HA offset in the command (user+scan)", -20, 20)
    off_dec_rbv = _deg("OFF_DEC_RBV", "Dec offset in the command (user+scan)", -20, 20)
    ha_pm = _deg("HA_PM_RBV", "Pointing-model HA correction", -1, 1, alarm=(-1.0, 1.0))
    dec_pm = _deg("DEC_PM_RBV", "Pointing-model Dec correction", -1, 1, alarm=(-1.0, 1.0))
    ha_refr = _deg("HA_REFR_RBV", "Refraction HA correction", -2, 2)
    dec_refr = _deg("DEC_REFR_RBV", "Refraction Dec correction", -2, 2)
    ha_cmd = _deg("HA_CMD_RBV", "Commanded HA encoder")
    dec_cmd = _deg("DEC_CMD_RBV", "Commanded Dec encoder", -90, 90)
    ha = _deg("HA_RBV", "HA encoder")
    dec = _deg("DEC_RBV", "Dec encoder", -90, 90)
    dec2 = _deg("DEC2_RBV", "Second Dec encoder", -90, 90)
    ha_err = _deg("HA_ERR_RBV", "HA error, commanded - encoder", -1, 1)
    dec_err = _deg("DEC_ERR_RBV", "Dec error, commanded - encoder", -1, 1)
    ha_vel = _deg("HA_VEL_RBV", "HA axis velocity", -1, 1, units="deg/s")
    dec_vel = _deg("DEC_VEL_RBV", "Dec axis velocity", -1, 1, units="deg/s")
    az = _deg("AZ_RBV", "Apparent azimuth of beam (N through E)", 0, 360)
    el = _deg("EL_RBV", "Apparent elevation of the beam", -90, 90)
    ra = _deg("RA_RBV", "Apparent RA of the beam, LST - HA_OBS", 0, 360)
    lst = _deg("LST_RBV", "Local apparent sidereal time (deg)", 0, 360)
    sun_dist = _deg("SUN_DIST_RBV", "Distance of the beam from the sun", 0, 180)
    wind = pv_float("WIND_RBV", "Wind speed for the stow decision", "m/s", lo=0, hi=60, precision=1)
    pos_pkt = pv_wave("POS_PKT", "Position packet, obsctl/positions.py", "packet", LENGTH)

    def __init__(self, site: Site, inst: InstrumentConfig, clock: ObservatoryClock, **kwargs: Any):
        super().__init__(site, inst, clock, **kwargs)
        m = self.mount = site.mount
        self.lat = site.latitude_deg
        self.loc = astro.site_location(site)
        self.sidereal = astro.SiderealClock(self.loc)
        self.catalog = load_catalog(site.catalog_path)
        self.weather_now = Weather()
        self.corr = Corrections(PointingModel.load(site.resolve(m.pointing_model_file)), self.lat,
                                lambda: self.weather_now)
        self.axes = (Axis(AxisSpec("HA", m.ha.min_deg, m.ha.max_deg, m.ha.max_rate_deg_s, m.ha.max_accel_deg_s2),
                          m.stow_ha_deg),
                     Axis(AxisSpec("DEC", m.dec.min_deg, m.dec.max_deg, m.dec.max_rate_deg_s,
                                   m.dec.max_accel_deg_s2), m.stow_dec_deg))
        self.sun = ApparentTrack(self.loc, self.sidereal, body="sun", anchor_s=600.0)
        self.sun(clock.now())  # also warms astropy up (~1.5 s) so that the first command is quick
        seed = site.simulation.seed
        sigma = site.simulation.encoder_noise_deg
        self.noise = (EncoderNoise(seed, "drv_enc_ha", sigma), EncoderNoise(seed, "drv_enc_dec", sigma),
                      EncoderNoise(seed, "drv_enc_dec2", sigma))
        self.t = clock.now()
        self.dt_last = 0.0
        self.last_step: tuple | None = None  # (t0, dt, axes at t0, command at t0, at t0 + dt)
        self._cache: tuple[Any, float, Pointing] | None = None
        self.goal: Any = self._stop_goal(self.t, "startup")
        self.cur = self.goal.at(self.t)
        self.arrived = True
        self.state_name = "STOPPED"
        self.on_since: float | None = None
        self.settle_due: float | None = None  # observatory time a settled cycle is due (s)
        self.last_beat = time.monotonic()
        self.wind_low_since: float | None = None
        self.wind_clear_s = float(inst.options.get("wind_clear_s", 300.0))
        wx = next((i.dev for i in site.instruments if i.kind == "weather"), None)
        self.wx_names = {k: site.pv(wx, f"{k}_RBV") for k in ("WIND_SPD", "TEMP", "HUM", "PRES")} if wx else {}
        self.link = CALink(self.wx_names.values()) if wx else None

    # ---- goals and kinematics ------------------------------------------------------------------
    def _eval(self, goal: Any, t: float) -> Pointing:
        if self._cache is not None and self._cache[0] is goal and self._cache[1] == t:
            return self._cache[2]
        p = goal.at(t)
        self._cache = (goal, t, p)
        return p

    def advance(self, t: float) -> None:
        """Move the axes from the last instant to ``t`` towards the current goal (exact kinematics)."""
        dt = t - self.t
        if dt <= 0:
            return
        c0 = self._eval(self.goal, self.t)
        c1 = self._eval(self.goal, t)
        self.last_step = (self.t, dt, [ax.copy() for ax in self.axes], c0, c1)
        done_h = self.axes[0].step(dt, c0.ha_cmd, (c1.ha_cmd - c0.ha_cmd) / dt)
        done_d = self.axes[1].step(dt, c0.dec_cmd, (c1.dec_cmd - c0.dec_cmd) / dt)
        self.t, self.dt_last, self.cur, self.arrived = t, dt, c1, done_h and done_d

    def entry_time(self, tol: float) -> float:
        """When, during the last :meth:`advance`, both axes came within ``tol`` (deg) of their command (s)."""
        if self.last_step is None:
            return self.t
        t0, dt, axes0, c0, c1 = self.last_step
        t_in = entry_time(axes0, ((c0.ha_cmd, c1.ha_cmd), (c0.dec_cmd, c1.dec_cmd)), t0, dt, tol)
        return self.t if t_in is None else t_in

    def next_entry(self, tol: float, horizon: float) -> float | None:
        """When the axes will come within ``tol`` (deg) of the command in the next ``horizon`` s, or None."""
        c0, c1 = self._eval(self.goal, self.t), self.goal.at(self.t + horizon)
        return entry_time(self.axes, ((c0.ha_cmd, c1.ha_cmd), (c0.dec_cmd, c1.dec_cmd)), self.t, horizon, tol)

    def _stop_goal(self, t: float, why: str) -> FixedGoal:
        b = self.corr.believed(self.axes[0].stop_point(), self.axes[1].stop_point(), t)
        return FixedGoal(b, "STOPPED", "STOPPED", f"STOP ({why})")

    def _set_goal(self, goal: Any, t: float) -> None:
        self.goal = goal
        self.cur = self._eval(goal, t)
        self.arrived = False
        self.on_since = None
        self.state_name = goal.state(False, t)

    def moving(self) -> bool:
        """Whether the drive is moving under a client's command (the watchdog then applies)."""
        if self.goal.forced or self.state_name in ("STOPPED", "STOWED", "PARKED", "FAULT"):
            return False
        return not (self.state_name == "DRIFTING" and self.arrived)

    async def stop(self, why: str, limit: str | None = None) -> None:
        """Decelerate both axes at maximum acceleration to rest (state STOPPED)."""
        t = self.clock.now()
        self.advance(t)
        self._set_goal(self._stop_goal(t, why), t)
        if limit is not None:
            await self.stamp(self.limit, limit)
        await self.say(why)

    # ---- commands ------------------------------------------------------------------------------
    def _offsets(self) -> tuple[float, float]:
        return self.off_ha.value, self.off_dec.value

    def _track(self) -> ApparentTrack:
        return resolve_track(self.track_name.value, self.track_ra.value, self.track_dec.value, self.catalog,
                             self.loc, self.sidereal)

    def build_goal(self, mode: str, t: float) -> Any:
        """The goal for a MODE_CMD value at time ``t`` (TargetError if refused)."""
        m = self.mount
        if mode == "STOP":
            return self._stop_goal(t, "command")
        if mode == "STOW":
            b = self.corr.believed(m.stow_ha_deg, m.stow_dec_deg, t)
            return FixedGoal(b, "STOWING", "STOWED", "STOW", safe=True)
        if mode == "SLEW":
            x, y = self.slew_x.value, self.slew_y.value
            if self.slew_frame.value == "AZEL":
                if y < m.min_elevation_deg:
                    raise TargetError(f"limit: el {y:.2f} < min {m.min_elevation_deg:g}", "HORIZON")
                h, d = astro.azel_to_hadec(x % 360.0, y, self.lat)
                x, y, label = float(h), float(d), f"SLEW Az {x:.3f} El {y:.3f}"
            else:
                x, label = float(astro.wrap180(x)), f"SLEW HA {x:.3f} Dec {y:.3f}"
            goal = FixedGoal(self.corr.pointing(x, y, t), "SLEWING", "PARKED", label)
        elif mode == "ZENITH":
            goal = FixedGoal(self.corr.pointing(0.0, self.lat, t), "SLEWING", "PARKED", "ZENITH")
        elif mode == "DRIFT":
            track = self._track()
            h, d = track(t)
            lead = self.drift_lead.value
            goal = FixedGoal(self.corr.pointing(h + lead, d, t), "DRIFTING", "DRIFTING",
                             f"DRIFT {track.label} lead {lead:g}")
        elif mode == "TRACK":
            goal = SkyGoal(self._track(), self.corr, self._offsets)
        elif mode == "RATE":
            goal = self._rate_goal((self.rate_ha.value, self.rate_dec.value), t)
        else:  # SCAN
            rates = (self.rate_ha.value, self.rate_dec.value)
            self.check_rates(rates, "scan")
            goal = SkyGoal(self._track(), self.corr, self._offsets, rates, self.scan_dur.value, scan=True)
        self._check(goal, t)
        return goal

    @mode.putter
    async def mode(self, instance, value):
        self.last_beat = time.monotonic()
        t = self.clock.now()
        self.advance(t)
        if self.wind_sts.value == "STOW" and value not in ("STOP", "STOW"):
            await self.reject(f"wind stow: {self.wind.value:.1f} m/s, only STOP/STOW")
        try:
            goal = self.build_goal(value, t)
        except TargetError as err:
            if err.limit != "OK":
                await self.stamp(self.limit, err.limit)
            await self.reject(str(err))
        self._set_goal(goal, self.t)
        await self.stamp(self.limit, "OK")
        await self.stamp(self.watchdog_sts, "OK")
        await self.stamp(self.target, goal.label[:39])
        await self.say(goal.label)
        await self._unsettle()
        return value

    async def _unsettle(self) -> None:
        """The command changed: not on source (nor settled) until a control cycle says so."""
        self.on_since = None
        self.pacer.wake()
        t = self.clock.now()
        for pv, v in ((self.state, self.state_name), (self.on_source, "NO"), (self.settled, "NO")):
            if pv.value != v:
                await pv.write(v, timestamp=t)

    @off_ha.putter
    async def off_ha(self, instance, value):
        return await self._offset_changed(instance, value)

    @off_dec.putter
    async def off_dec(self, instance, value):
        return await self._offset_changed(instance, value)

    async def _offset_changed(self, instance: Any, value: float) -> float:
        """A live offset change (TRACK/SCAN): the axes move from now on, and must settle again."""
        if value != instance.value and self.goal.sky:
            self.advance(self.clock.now())
            self._cache = None
            self.arrived = False
            await self._unsettle()
        return value

    def _rate_goal(self, rates: tuple[float, float], t: float) -> RateGoal:
        """A manual move at axis ``rates`` (deg/s) from where the axes are, or on from the current one."""
        self.check_rates(rates, "axis")
        self.check_manual(rates, t)
        m = self.mount
        axes = (("HA", m.ha.min_deg, m.ha.max_deg, m.ha.max_accel_deg_s2),
                ("Dec", m.dec.min_deg, m.dec.max_deg, m.dec.max_accel_deg_s2))
        if isinstance(self.goal, RateGoal):  # no jump in the command
            return RateGoal(self.goal.command(t), rates, t, self.corr, axes)
        return RateGoal((self.axes[0].pos, self.axes[1].pos), rates, t, self.corr, axes)

    def _cycle_at(self, t: float) -> None:
        """Ask for a control cycle at observatory time ``t`` (s; a past one: at once), DUE_MARGIN_S late so
        that the cycle's time is not before ``t``."""
        self.pacer.at(time.monotonic() + (t - self.clock.now()) / self.clock.speed + DUE_MARGIN_S)

    @sync.putter
    async def sync(self, instance, value):
        self._cycle_at(value)
        return value

    @heartbeat.putter
    async def heartbeat(self, instance, value):
        self.last_beat = time.monotonic()
        return value

    @track_name.putter
    async def track_name(self, instance, value):
        if not known_target(value, self.catalog):
            await self.reject(f"unknown source {value.strip()!r}")
        return value.strip()

    # ---- control loop --------------------------------------------------------------------------
    @pos_pkt.startup
    async def pos_pkt(self, instance, async_lib):
        m = self.mount
        t = self.clock.now()
        await self.watchdog.write(min(max(m.watchdog_s, 0.5), 600.0), timestamp=t)
        for pv in (self.ha, self.ha_cmd):
            await pv.write_metadata(lower_alarm_limit=m.ha.min_deg, upper_alarm_limit=m.ha.max_deg)
        for pv in (self.dec, self.dec2, self.dec_cmd):
            await pv.write_metadata(lower_alarm_limit=m.dec.min_deg, upper_alarm_limit=m.dec.max_deg)
        await self.el.write_metadata(lower_alarm_limit=m.min_elevation_deg, upper_alarm_limit=91.0)
        await self.sun_dist.write_metadata(lower_alarm_limit=m.sun_avoidance_deg, upper_alarm_limit=181.0)
        await self.wind.write_metadata(lower_alarm_limit=-1.0, upper_alarm_limit=m.wind_stow_m_s)
        for pv, spec in zip((self.ha_vel, self.dec_vel), (m.ha, m.dec), strict=True):
            lim = 1.001 * spec.max_rate_deg_s
            await pv.write_metadata(lower_alarm_limit=-lim, upper_alarm_limit=lim)
        await self.stamp(self.target, self.goal.label)
        if self.link is not None:
            await self.link.start()
        period = 1.0 / m.control_rate_hz
        asked = None
        while True:
            r0 = time.monotonic()
            await self.cycle()
            if self.settle_due is not None and self.settle_due != asked:
                asked = self.settle_due
                self._cycle_at(self.settle_due)
            await self.pacer.sleep(period - (time.monotonic() - r0))  # a new command: a cycle at once

    async def shutdown(self) -> None:
        """Close the weather link (called by iocs.common.serve)."""
        if self.link is not None:
            await self.link.stop()

    def _weather(self) -> Weather:
        if self.link is None:
            return Weather()
        d = Weather()
        g = self.link.get
        return Weather(temp_c=float(g(self.wx_names["TEMP"], d.temp_c)),
                       pressure_hpa=float(g(self.wx_names["PRES"], d.pressure_hpa)),
                       humidity_pct=float(g(self.wx_names["HUM"], d.humidity_pct)),
                       wind_m_s=float(g(self.wx_names["WIND_SPD"], d.wind_m_s)))

    async def cycle(self) -> None:
        """One control cycle: weather, kinematics, safety, state, readbacks."""
        self.weather_now = self._weather()
        linked = self.link is not None and self.link.connected()
        t = self.clock.now()
        try:
            self.advance(t)
            await self._safety(t)
        except (ValueError, ArithmeticError, KeyError) as err:  # keep the loop alive; hold the axes
            self.log.exception("control cycle failed")
            self._set_goal(self._stop_goal(t, "fault"), t)
            self.state_name = "FAULT"
            await self.say(f"fault: {err}"[:39])
        if self.arrived and self.state_name != "FAULT":
            if self.goal.sky:
                self.goal.arrive(t)
            self.state_name = self.goal.state(True, t)
        elif self.goal.sky and self.state_name != "FAULT":
            self.state_name = self.goal.state(False, t)
        await self._publish(t, linked)

    async def _publish(self, t: float, linked: bool) -> None:
        m, sim = self.mount, self.site.simulation
        p = self.cur
        wind = self.weather_now.wind_m_s
        gusts = 0.0 if self.state_name == "STOWED" else wind  # stowed: the stow pins hold the structure
        act_h = self.axes[0].pos + wind_disturbance_deg(t, sim.seed, "ha", gusts)
        act_d = self.axes[1].pos + wind_disturbance_deg(t, sim.seed, "dec", gusts)
        enc_h, enc_d = act_h + self.noise[0](), act_d + self.noise[1]()
        enc_d2 = act_d + sim.dec_encoder_offset_deg + self.noise[2]()
        corr = p if self.goal.sky else self.corr.believed(act_h, act_d, t)
        pm_h, pm_d, r_h, r_d = corr.ha_pm, corr.dec_pm, corr.ha_refr, corr.dec_refr
        ha_obs, dec_obs = enc_h - pm_h - r_h, enc_d - pm_d - r_d
        ha_sky = act_h - pm_h - r_h - self.perr_ha.value
        dec_sky = act_d - pm_d - r_d - self.perr_dec.value
        err_h, err_d = p.ha_cmd - enc_h, p.dec_cmd - enc_d
        tol = m.on_source_tolerance_deg
        on = bool(self.state_name in ON_SOURCE_STATES and abs(err_h) < tol and abs(err_d) < tol)
        if not on:
            self.on_since = None
        elif self.on_since is None:
            self.on_since = min(self.entry_time(tol), t)
        settled = bool(on and t - self.on_since >= m.settle_time_s)
        # the next cycle comes when the settle time is over, also when the axes will arrive before the next
        # periodic cycle (exact kinematics): a short move is settled the settle time after its arrival
        entry = self.on_since if on else None
        if not on and self.state_name not in ("STOPPED", "FAULT"):
            entry = self.next_entry(tol, self.clock.speed / m.control_rate_hz)
            entry = entry if entry is not None and entry > t else None  # within already: no extra cycle
        self.settle_due = entry + m.settle_time_s if entry is not None and not settled else None
        az, el = hadec_to_azel(ha_obs, dec_obs, self.lat)
        lst = float(self.sidereal(t))
        sun = self.sun(t)
        v_h, v_d = self.axes[0].vel, self.axes[1].vel
        # the packet first: clients waiting for a settled position get it before the scalar readbacks
        await self.pos_pkt.write(pack(T=t, HA_ENC=enc_h, DEC_ENC=enc_d, HA_OBS=ha_obs, DEC_OBS=dec_obs,
                                      HA_RATE=v_h, DEC_RATE=v_d, HA_SKY=ha_sky, DEC_SKY=dec_sky,
                                      STATE=STATES.index(self.state_name), ON_SOURCE=float(settled)),
                                 timestamp=t)
        for pv, value in ((self.ha_app, p.ha_app), (self.dec_app, p.dec_app), (self.off_ha_rbv, p.off_ha),
                          (self.off_dec_rbv, p.off_dec), (self.ha_pm, pm_h), (self.dec_pm, pm_d),
                          (self.ha_refr, r_h), (self.dec_refr, r_d), (self.ha_cmd, p.ha_cmd),
                          (self.dec_cmd, p.dec_cmd), (self.ha, enc_h), (self.dec, enc_d), (self.dec2, enc_d2),
                          (self.ha_err, err_h), (self.dec_err, err_d), (self.ha_vel, v_h), (self.dec_vel, v_d),
                          (self.az, az), (self.el, el), (self.ra, (lst - ha_obs) % 360.0), (self.lst, lst),
                          (self.sun_dist, sun_distance(ha_obs, dec_obs, *sun)), (self.wind, wind)):
            await pv.write(value, timestamp=t)
        for pv, value in ((self.state, self.state_name), (self.on_source, NO_YES[on]),
                          (self.settled, NO_YES[settled]), (self.wx_link, "OK" if linked else "DISCONNECTED")):
            if pv.value != value:
                await pv.write(value, timestamp=t)


def make_ioc(site: Site, inst: InstrumentConfig, clock: ObservatoryClock) -> DriveIOC:
    """The DRV IOC of a site."""
    return DriveIOC(site, inst, clock)

