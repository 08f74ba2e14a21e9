"""Base of the signal backends (correlator, pulsar timer): what the beam sees and where it points.

A backend follows other IOCs over Channel Access: the drive's position packets (``DRV:POS_PKT``), the
receiver select and the injected noise-diode temperature on NDI, and, when the site has a subreflector,
its effect on the beam (``SUB:GAIN_FACTOR_RBV``, ``BEAM_DX_RBV``, ``BEAM_DY_RBV``: the sources' signal is
scaled by the focus gain and the beam looks where the tilts moved it; perfect optics while SUB is not
reachable).  This class holds those links, the position track and the sky model, and publishes whether the
drive and NDI links are up (``DRV_LINK_STS``, ``NDI_LINK_STS``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from iocs.common import ObsIOC, pv_enum
from iocs.links import CALink, LinkValue
from iocs.sim.weather import true_weather
from iocs.subreflector import beam_optics, optics_pvs
from obsctl import sky
from obsctl.clock import ObservatoryClock
from obsctl.positions import PositionTrack
from obsctl.site import InstrumentConfig, ReceiverConfig, Site


class BackendIOC(ObsIOC):
    """An instrument fed by the selected receiver while the drive points the beam."""

    drv_link = pv_enum("DRV_LINK_STS", "Drive position packets arriving", ["DISCONNECTED", "OK"])
    ndi_link = pv_enum("NDI_LINK_STS", "Receiver select link to NDI", ["DISCONNECTED", "OK"])

    def __init__(self, site: Site, inst: InstrumentConfig, clock: ObservatoryClock, **kwargs: Any):
        super().__init__(site, inst, clock, **kwargs)
        self.sky = sky.SkyModel(site)
        self.default_rx = site.receiver(str(inst.options.get("receiver", site.receivers[0].name)))
        # hold positions across at least a few control cycles of simulated time
        self.track = PositionTrack(maxlen=512, max_extrapolate_s=max(30.0, 5.0 * clock.speed
                                                                     / site.mount.control_rate_hz))
        self.pkt_name = site.pv("DRV", "POS_PKT")
        self.rx_name = site.pv("NDI", "RX_SEL_SP")
        self.nd_name = site.pv("NDI", "ND_K_RBV")
        self.optics_pvs = optics_pvs(site)
        self.link = CALink([self.pkt_name, self.rx_name, self.nd_name, *self.optics_pvs], on_update=self._on_link)
        self.last_pos: tuple[float, float, float, float] | None = None

    def _on_link(self, name: str, lv: LinkValue) -> None:
        if name == self.pkt_name:
            self.track.add(lv.value)

    def receiver(self) -> ReceiverConfig:
        """The receiver selected on NDI (the default one while NDI is not reachable)."""
        idx = self.link.get(self.rx_name)
        try:
            return self.site.receivers[int(idx)] if idx is not None else self.default_rx
        except (IndexError, ValueError, TypeError):
            return self.default_rx

    def nd_k(self) -> float:
        """Noise-diode temperature injected into the selected receiver (K)."""
        v = self.link.get(self.nd_name, 0.0)
        return float(v) if v is not None and math.isfinite(float(v)) else 0.0

    def optics(self) -> sky.BeamOptics:
        """The subreflector's effect on the beam now (perfect optics without a SUB link)."""
        return beam_optics([self.link.get(pv) for pv in self.optics_pvs])

    def weather(self, t: float) -> sky.Weather:
        """The true weather at observatory time ``t`` (drives the atmosphere)."""
        return true_weather(t, self.site.simulation.seed)

    def pointing_at(self, t: float) -> tuple[float, float, float, float, bool]:
        """(HA_SKY, DEC_SKY, HA_OBS, DEC_OBS, missing) in deg at time ``t`` from the drive's packets.

        While the packets are stale the last known position is held; without any, the stow position
        (``missing`` True).
        """
        p = self.track.at(np.array([t]))
        vals = tuple(float(p[k][0]) for k in ("HA_SKY", "DEC_SKY", "HA_OBS", "DEC_OBS"))
        if all(math.isfinite(v) for v in vals):
            self.last_pos = vals
        if self.last_pos is not None:
            return (*self.last_pos, False)
        m = self.site.mount
        return (m.stow_ha_deg, m.stow_dec_deg, m.stow_ha_deg, m.stow_dec_deg, True)

    @staticmethod
    def as_arrays(recs: list[tuple]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Times and pointing arrays from (t, HA_SKY, DEC_SKY, HA_OBS, DEC_OBS, missing) records."""
        a = np.array(recs, dtype=float)
        keys = ("HA_SKY", "DEC_SKY", "HA_OBS", "DEC_OBS", "MISSING")
        return a[:, 0], {k: a[:, i + 1] for i, k in enumerate(keys)}

    async def update_links(self) -> None:
        """Publish whether the drive packets are fresh and the receiver select is linked."""
        latest = self.track.latest
        fresh = latest is not None and self.clock.now() - latest[0] < self.track.max_extrapolate_s
        for pv, ok in ((self.drv_link, fresh), (self.ndi_link, self.link.connected(self.rx_name))):
            sts = "OK" if ok else "DISCONNECTED"
            if pv.value != sts:
                await self.stamp(pv, sts)
