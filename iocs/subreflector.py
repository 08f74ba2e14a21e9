"""SUB: the subreflector — tilt X, tilt Y (arcmin) and focus Z (mm) actuators, and their effect on the beam.

The physics is in ``iocs.sim.subreflector``: each axis moves at its rate within its travel, the structure
settles after the last axis arrives, the encoders read with a little noise.  A setpoint outside the travel
is refused (the reason in MSG_RBV); a new setpoint while moving retargets the axis.  ``STATE_STS`` goes
MOVING when a setpoint is accepted that moves an axis, SETTLING when every axis has arrived, IN_POSITION
after the settling time (simulated time); each transition is stamped with the simulated instant it happened.

The effect on the beam is published for the backends: ``GAIN_FACTOR_RBV`` is the gain relative to perfect
focus at the selected receiver's frequency (linked ``NDI:RX_SEL_SP``; the first receiver, or
``options.receiver_index``, while NDI is not reachable), ``BEAM_DX_RBV``/``BEAM_DY_RBV`` the displacement of
the beam on the sky caused by the tilts.  Site options: ``best_focus_mm`` (where the focus error is zero,
0 by default), ``settle_s``, ``focal_m``, ``magnification``, ``lever_m``, ``edge_taper_db``.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from iocs.common import ObsIOC, pv_enum, pv_float, pv_str
from iocs.links import CALink
from iocs.sim import subreflector as ssim
from obsctl.clock import ObservatoryClock
from obsctl.site import InstrumentConfig, ReceiverConfig, Site
from obsctl.sky import PERFECT_OPTICS, BeamOptics

STATES = ["IN_POSITION", "MOVING", "SETTLING"]
#: the readbacks through which the backends see the subreflector's effect on the beam (obsctl.sky.BeamOptics)
OPTICS_READBACKS = ("GAIN_FACTOR_RBV", "BEAM_DX_RBV", "BEAM_DY_RBV")
IDLE_PERIOD_S = 0.5     # real s between readback updates while in position
MOVING_PERIOD_S = 0.05  # real s between updates while moving or settling
FOCUS = ssim.AXES["FOCUS"]
TILTX = ssim.AXES["TILTX"]


def optics_pvs(site: Site) -> list[str]:
    """Full names of the site's OPTICS_READBACKS ([] when the site has no subreflector)."""
    sub = next((i.dev for i in site.instruments if i.kind == "subreflector"), None)
    return [site.pv(sub, r) for r in OPTICS_READBACKS] if sub else []


def beam_optics(values: list[Any]) -> BeamOptics:
    """The beam optics from the OPTICS_READBACKS values (in that order); perfect optics if one is missing."""
    if len(values) != len(OPTICS_READBACKS) or any(v is None or not math.isfinite(float(v)) for v in values):
        return PERFECT_OPTICS
    gain, dx, dy = (float(v) for v in values)
    return BeamOptics(gain, dx, dy)


def _axis_sp(spec: ssim.AxisSpec, doc: str) -> Any:
    return pv_float(f"{spec.name}_SP", doc, spec.units, 0.0, lo=spec.lo, hi=spec.hi, writable=True, precision=3)


def _axis_rbv(spec: ssim.AxisSpec, doc: str) -> Any:
    return pv_float(f"{spec.name}_RBV", doc, spec.units, 0.0, lo=spec.lo, hi=spec.hi, precision=3)


class SubreflectorIOC(ObsIOC):
    """Subreflector positioner.

    PVs (prefix ``SITE:SUB:``)
    --------------------------
    FOCUS_SP         focus (axial) position requested (mm), travel -30..30
    FOCUS_RBV        focus position, encoder (mm)
    TILTX_SP         tilt about X requested (arcmin), travel -60..60; moves the beam in hour angle
    TILTX_RBV        tilt X, encoder (arcmin)
    TILTY_SP         tilt about Y requested (arcmin), travel -60..60; moves the beam in declination
    TILTY_RBV        tilt Y, encoder (arcmin)
    STATE_STS        IN_POSITION / MOVING / SETTLING
    STOP_CMD         IDLE / STOP: stop every axis where it is (the setpoints become the positions)
    FOCUS_RATE_RBV   focus rate (mm/s, simulated time)
    TILT_RATE_RBV    tilt rate (arcmin/s, simulated time)
    SETTLE_TIME_RBV  settling time after the last axis arrives (s, simulated time)
    GAIN_FACTOR_RBV  gain relative to perfect focus at the selected receiver (defocus loss)
    BEAM_DX_RBV      beam displacement by the tilts, along hour angle (deg, true angle)
    BEAM_DY_RBV      beam displacement by the tilts, along declination (deg)
    RX_RBV           receiver whose frequency GAIN_FACTOR_RBV is computed for
    NDI_LINK_STS     DISCONNECTED / OK: the receiver-select link to NDI
    """

    focus_sp = _axis_sp(FOCUS, "Focus (axial) position requested")
    focus_rbv = _axis_rbv(FOCUS, "Focus (axial) position, encoder")
    tiltx_sp = _axis_sp(TILTX, "Tilt X requested (beam in hour angle)")
    tiltx_rbv = _axis_rbv(TILTX, "Tilt X, encoder")
    tilty_sp = _axis_sp(ssim.AXES["TILTY"], "Tilt Y requested (beam in declination)")
    tilty_rbv = _axis_rbv(ssim.AXES["TILTY"], "Tilt Y, encoder")
    state = pv_enum("STATE_STS", "Subreflector state", STATES)
    stop_cmd = pv_enum("STOP_CMD", "Stop every axis where it is", ["IDLE", "STOP"], writable=True)
    focus_rate = pv_float("FOCUS_RATE_RBV", "Focus rate (simulated time)", "mm/s", FOCUS.rate, lo=0, hi=10,
                          precision=3)
    tilt_rate = pv_float("TILT_RATE_RBV", "Tilt rate (simulated time)", "arcmin/s", TILTX.rate, lo=0, hi=60,
                         precision=3)
    settle = pv_float("SETTLE_TIME_RBV", "Settling time after the axes arrive", "s", 0.0, lo=0, hi=60,
                      precision=2)
    gain = pv_float("GAIN_FACTOR_RBV", "Gain relative to perfect focus", "frac", 1.0, lo=0, hi=1,
                    warn=(0.9, 2.0), alarm=(0.5, 2.0), precision=5)
    beam_dx = pv_float("BEAM_DX_RBV", "Beam shift by the tilts, along HA", "deg", 0.0, lo=-1, hi=1,
                       precision=6)
    beam_dy = pv_float("BEAM_DY_RBV", "Beam shift by the tilts, along Dec", "deg", 0.0, lo=-1, hi=1,
                       precision=6)
    rx_rbv = pv_str("RX_RBV", "Receiver of GAIN_FACTOR_RBV")
    ndi_link = pv_enum("NDI_LINK_STS", "Receiver select link to NDI", ["DISCONNECTED", "OK"])

    def __init__(self, site: Site, inst: InstrumentConfig, clock: ObservatoryClock, **kwargs: Any):
        super().__init__(site, inst, clock, **kwargs)
        opt = inst.options
        self.best_focus_mm = float(opt.get("best_focus_mm", 0.0))
        self.optics = ssim.Optics(diameter_m=site.dish_diameter_m,
                                  focal_m=float(opt.get("focal_m", 0.42 * site.dish_diameter_m)),
                                  magnification=float(opt.get("magnification", 8.0)),
                                  lever_m=float(opt.get("lever_m", 1.2)),
                                  edge_taper_db=float(opt.get("edge_taper_db", 12.0)))
        self.sub = ssim.Subreflector(settle_s=float(opt.get("settle_s", 1.5)), seed=int(site.simulation.seed))
        self.default_rx = site.receivers[min(int(opt.get("receiver_index", 0)), len(site.receivers) - 1)]
        devs = {i.kind: i.dev for i in site.instruments}
        self.rx_pv = site.pv(devs.get("instrumentation", "NDI"), "RX_SEL_SP")
        self.link = CALink([self.rx_pv])
        self.wake = asyncio.Event()
        self._gain_key: tuple[float, float] | None = None

    # ---- the loop ------------------------------------------------------------------------------
    @state.startup
    async def state(self, instance, async_lib):
        t = self.clock.now()
        await self.settle.write(self.sub.settle_s, timestamp=t)
        await self.focus_rate.write(self.sub.axes["FOCUS"].rate, timestamp=t)
        await self.tilt_rate.write(self.sub.axes["TILTX"].rate, timestamp=t)
        await self.link.start()
        while True:
            await self.update()
            left = self.sub.time_to_next_event(self.clock.now())
            period = IDLE_PERIOD_S if math.isinf(left) else min(MOVING_PERIOD_S,
                                                                 self.clock.real_duration(left) + 1e-3)
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=max(period, 1e-3))
            except TimeoutError:
                pass

    def receiver(self) -> ReceiverConfig:
        """The receiver selected on NDI (the default one while NDI is not reachable)."""
        idx = self.link.get(self.rx_pv)
        try:
            return self.site.receivers[int(idx)] if idx is not None else self.default_rx
        except (IndexError, ValueError, TypeError):
            return self.default_rx

    async def update(self) -> None:
        """Move the axes to now and publish readbacks, state and the beam effects."""
        t = self.clock.now()
        st = self.sub.advance(t)
        rb = self.sub.readback()
        for pv, key in ((self.focus_rbv, "FOCUS"), (self.tiltx_rbv, "TILTX"), (self.tilty_rbv, "TILTY")):
            await pv.write(rb[key], timestamp=t)
        st = self.sub.state(t)  # a setpoint accepted during those writes has made the axes move again
        if self.state.value != st:
            # transitions carry the simulated instant they happened (arrival, end of settling), not the tick's
            arrived = self.sub.arrived_at if self.sub.arrived_at is not None else t
            if st == "IN_POSITION" and self.state.value == "MOVING":  # arrived and settled within one tick
                await self.state.write("SETTLING", timestamp=min(arrived, t) if math.isfinite(arrived) else t)
            event = {"SETTLING": arrived, "IN_POSITION": arrived + self.sub.settle_s}.get(st, t)
            await self.state.write(st, timestamp=min(event, t) if math.isfinite(event) else t)
            if st == "IN_POSITION":
                await self.say(f"in position: focus {self.sub.pos['FOCUS']:.3f} mm, tilt "
                               f"{self.sub.pos['TILTX']:.2f}/{self.sub.pos['TILTY']:.2f} arcmin")
        rx = self.receiver()
        if self.rx_rbv.value != rx.name:
            await self.rx_rbv.write(rx.name, timestamp=t)
        link = "OK" if self.link.connected(self.rx_pv) else "DISCONNECTED"
        if self.ndi_link.value != link:
            await self.ndi_link.write(link, timestamp=t)
        dz = self.sub.pos["FOCUS"] - self.best_focus_mm
        if self._gain_key != (dz, rx.freq_mhz):
            self._gain_key = (dz, rx.freq_mhz)
            await self.gain.write(self.optics.defocus_gain(dz, ssim.wavelength_m(rx.freq_mhz)), timestamp=t)
        for pv, key in ((self.beam_dx, "TILTX"), (self.beam_dy, "TILTY")):
            dx = self.optics.beam_offset_deg(self.sub.pos[key])
            if pv.value != dx:
                await pv.write(dx, timestamp=t)

    async def move(self, axis: str, value: float) -> float:
        """Command ``axis`` to ``value`` (already within the travel); MOVING at once if it has to move."""
        t = self.clock.now()
        try:
            moved = self.sub.command(axis, value, t)
        except ValueError as err:
            await self.reject(str(err))
        if moved:
            await self.state.write("MOVING", timestamp=t)
            await self.say(f"{axis} to {value:g} {self.sub.axes[axis].units}")
        self.wake.set()
        return float(value)

    # ---- putters -------------------------------------------------------------------------------
    @focus_sp.putter
    async def focus_sp(self, instance, value):
        return await self.move("FOCUS", value)

    @tiltx_sp.putter
    async def tiltx_sp(self, instance, value):
        return await self.move("TILTX", value)

    @tilty_sp.putter
    async def tilty_sp(self, instance, value):
        return await self.move("TILTY", value)

    @stop_cmd.putter
    async def stop_cmd(self, instance, value):
        if value == "STOP":
            t = self.clock.now()
            moving = self.sub.state(t) == "MOVING"
            self.sub.stop(t)
            for pv, key in ((self.focus_sp, "FOCUS"), (self.tiltx_sp, "TILTX"), (self.tilty_sp, "TILTY")):
                await pv.write(self.sub.target[key], timestamp=t, verify_value=False)
            if moving:
                await self.state.write("SETTLING", timestamp=t)
            await self.say("stopped")
            self.wake.set()
        return "IDLE"

    async def shutdown(self) -> None:
        """Close the NDI link (called by the server on exit)."""
        await self.link.stop()


def make_ioc(site: Site, inst: InstrumentConfig, clock: ObservatoryClock) -> SubreflectorIOC:
    """The SUB IOC of a site."""
    return SubreflectorIOC(site, inst, clock)
