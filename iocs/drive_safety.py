"""Safety of the telescope drive: target and path checks, wind stow, watchdog, limits and sun avoidance.

A mixin of :class:`iocs.drive.DriveIOC` (it uses the drive's axes, corrections, sun track and PVs).
Angles deg, times POSIX s of observatory time unless said otherwise.
"""

from __future__ import annotations

import time
from typing import Any

from iocs.drive_targets import FixedGoal, RateGoal, TargetError, check_path, check_pointing
from iocs.sim.drive import Axis, predict_path, sun_distance


class DriveSafety:
    """Checks and protective stops of the drive (mixed into DriveIOC)."""

    def check_rates(self, rates: tuple[float, float], what: str) -> None:
        """Raise TargetError if an axis rate (deg/s) is beyond what a command may ask for."""
        for rate, axis in zip(rates, (self.mount.ha, self.mount.dec), strict=True):
            top = axis.command_rate_deg_s
            if abs(rate) > top:
                raise TargetError(f"{what} rate {rate:g} > {top:g} deg/s")

    def _sun_exempt(self, goal: Any) -> bool:
        """Whether ``goal`` is exempt from sun avoidance: the safe position, or the sun while SUN_OBS_SP is YES."""
        return goal.safe or (goal.sky and goal.sun_target and self.sun_obs.value == "YES")

    def _check(self, goal: Any, t: float, sun_check: bool = True) -> None:
        """Refuse a goal whose target or slew path breaks a limit or the sun avoidance."""
        sun_check = sun_check and not self._sun_exempt(goal)
        for tk, p in goal.samples(t):
            check_pointing(p, self.mount, self.sun(tk) if sun_check else None)
        if sun_check:
            def command(x: float) -> tuple[float, float]:
                c = goal.at(x)
                return c.ha_cmd, c.dec_cmd

            ts, has, decs = predict_path(self.axes[0], self.axes[1], command, t)
            check_path(ts, has, decs, self.sun, self.mount.sun_avoidance_deg)

    async def _safety(self, t: float) -> None:
        """Wind stow, watchdog, limits and sun avoidance of the motion under way (stops the drive if broken)."""
        m = self.mount
        wind = self.weather_now.wind_m_s
        if wind > m.wind_stow_m_s:
            self.wind_low_since = None
            if self.wind_sts.value != "STOW":
                await self.stamp(self.wind_sts, "STOW")
                b = self.corr.believed(m.stow_ha_deg, m.stow_dec_deg, t)
                self._set_goal(FixedGoal(b, "STOWING", "STOWED", "WIND STOW", forced=True, safe=True), t)
                await self.stamp(self.target, "WIND STOW")
                await self.say(f"wind stow: {wind:.1f} m/s > {m.wind_stow_m_s:g}")
        elif self.wind_sts.value == "STOW" and wind < 0.8 * m.wind_stow_m_s:
            self.wind_low_since = self.wind_low_since if self.wind_low_since is not None else t
            if t - self.wind_low_since >= self.wind_clear_s:
                await self.stamp(self.wind_sts, "OK")
                await self.say(f"wind low ({wind:.1f} m/s): stow released")
        if (self.watchdog_ena.value == "ENABLED" and self.moving()
                and time.monotonic() - self.last_beat > self.watchdog.value):
            await self.stamp(self.watchdog_sts, "EXPIRED")
            await self.stop(f"watchdog: no heartbeat for {self.watchdog.value:g} s")
            return
        if isinstance(self.goal, RateGoal):
            await self._manual_safety(t)
            return
        exempt = self._sun_exempt(self.goal)
        if self.goal.sky:
            try:
                check_pointing(self.cur, m, None if exempt else self.sun(t))
            except TargetError as err:
                await self.stop(str(err), err.limit)
                return
        if self.moving() and not self.arrived and not exempt:
            ends = [self._stop_short(ax, self.dt_last, target)
                    for ax, target in zip(self.axes, (self.cur.ha_cmd, self.cur.dec_cmd), strict=True)]
            now = self.corr.believed(self.axes[0].pos, self.axes[1].pos, t)
            d_stop = self._nearing_sun(self.corr.believed(ends[0], ends[1], t), now, self.sun(t))
            if d_stop is not None:
                await self.stop(f"sun: motion stopped {d_stop:.1f} deg from sun", "SUN")

    def _nearing_sun(self, end: Any, now: Any, sun: tuple[float, float]) -> float | None:
        """The distance from the sun (deg) of a motion's end point if it lies in the avoidance zone and nearer
        the sun than the beam is ``now`` (both believed Pointings), else None."""
        d_end = sun_distance(end.ha_app, end.dec_app, *sun)
        inside = d_end < self.mount.sun_avoidance_deg
        return d_end if inside and d_end < sun_distance(now.ha_app, now.dec_app, *sun) - 1e-6 else None

    @staticmethod
    def _stop_short(axis: Axis, look: float, target: float) -> float:
        """Where an axis would come to rest if braking after ``look`` s, but not past its target (deg).

        The profile never overshoots, so a stop point beyond the target is not reachable.
        """
        end = axis.stop_point(look)
        if (end - axis.pos) * (target - axis.pos) > 0 and abs(end - axis.pos) > abs(target - axis.pos):
            return target
        return end

    @staticmethod
    def _reach(axis: Axis, look: float, rate: float) -> float:
        """Where an axis comes to rest at the farthest if it speeds up towards ``rate``'s side (its motion's
        side when ``rate`` is 0) at full acceleration for ``look`` s, then brakes (deg)."""
        side = 1.0 if rate > 0 else -1.0 if rate < 0 else 1.0 if axis.vel > 0 else -1.0 if axis.vel < 0 else 0.0
        if side == 0.0:
            return axis.pos
        a, v = axis.spec.max_accel, axis.vel * side
        v1 = min(v + a * look, max(axis.spec.max_rate, v))
        t_acc = (v1 - v) / a
        run = v * t_acc + 0.5 * a * t_acc * t_acc + v1 * (look - t_acc)
        return axis.pos + side * (run + v1 * abs(v1) / (2.0 * a))

    def check_manual(self, rates: tuple[float, float], t: float) -> None:
        """Raise TargetError if the axes, speeding up towards ``rates`` (deg/s) for two control periods and
        then braking, or braking from their present motion, could end below the horizon limit or within the
        sun avoidance distance, and lower (nearer the sun) than now.  Axis limits: see RateGoal."""
        look = 2.0 * self.clock.speed / self.mount.control_rate_hz
        m = self.mount
        now = self.corr.believed(self.axes[0].pos, self.axes[1].pos, t)
        sun = self.sun(t)
        ends = ([self._reach(ax, look, rate) for ax, rate in zip(self.axes, rates, strict=True)],
                [ax.stop_point(look) for ax in self.axes])
        for ha, dec in ends:
            end = self.corr.believed(ha, dec, t)
            if end.el < m.min_elevation_deg and end.el < now.el - 1e-6:
                raise TargetError(f"limit: el {end.el:.2f} < min {m.min_elevation_deg:g}", "HORIZON")
            d_end = self._nearing_sun(end, now, sun)
            if d_end is not None:
                raise TargetError(f"sun: manual move ends {d_end:.1f} deg from sun", "SUN")

    async def _manual_safety(self, t: float) -> None:
        """RATE: stop the drive when its command brakes for an axis limit, or where :meth:`check_manual`
        fails for the rates under way."""
        if self.goal.braking(t):
            await self.stop(f"manual: {self.goal.why}", self.goal.limit)
            return
        try:
            self.check_manual(self.goal.rates, t)
        except TargetError as err:
            await self.stop(f"manual: {err}", err.limit)
