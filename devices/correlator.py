"""COR: the autocorrelation spectrometer as a triggerable detector.

``trigger()`` starts one integration (``START_CMD``; its length is ``INT_TIME_SP`` seconds of observatory
time) and finishes when the IOC has published the data (``DATA_RDY_STS`` YES with a new ``INT_DONE_RBV``
count); a refused start (busy, frequency outside the band) fails the Status with the IOC's reason, and an
integration that ends without data (reset, failure) fails it too.  ``read()`` then gives the calibrated
spectrum, its frequency and LSR-velocity axes, Tsys and the LSR correction, each read fresh from the IOC.
"""

from __future__ import annotations

from typing import Any

from ophyd import Component as Cpt
from ophyd import DeviceStatus, Kind

from devices.common import CommandRefused, DeviceFault, ObsDevice, Readback, Setpoint, run_in_thread, watch


class Correlator(ObsDevice):
    """Autocorrelation spectrometer (COR IOC).

    Hinted: Tsys of the integration.  Data (read fresh after each trigger): ``spectrum`` (K),
    ``freq_axis`` (MHz, topocentric sky frequency), ``vel_axis`` (km/s LSR, radio convention),
    ``vlsr_corr`` (km/s), pointing RA/Dec and the mid-integration time.  Settings are configuration.
    """

    start_cmd = Cpt(Setpoint, "START_CMD", string=True, kind=Kind.omitted)
    reset_cmd = Cpt(Setpoint, "RESET_CMD", string=True, kind=Kind.omitted)
    state = Cpt(Readback, "STATE_STS", string=True, kind=Kind.omitted)
    data_rdy = Cpt(Readback, "DATA_RDY_STS", string=True, kind=Kind.omitted)
    progress = Cpt(Readback, "PROGRESS_RBV", kind=Kind.omitted)
    int_time = Cpt(Setpoint, "INT_TIME_SP", kind=Kind.config)
    bw = Cpt(Setpoint, "BW_SP", string=True, kind=Kind.config)
    nchan = Cpt(Setpoint, "NCHAN_SP", string=True, kind=Kind.config)
    quad = Cpt(Setpoint, "QUAD_SP", string=True, kind=Kind.config)
    att1 = Cpt(Setpoint, "ATT1_SP", kind=Kind.config)
    att2 = Cpt(Setpoint, "ATT2_SP", kind=Kind.config)
    att3 = Cpt(Setpoint, "ATT3_SP", kind=Kind.config)
    att4 = Cpt(Setpoint, "ATT4_SP", kind=Kind.config)
    level1 = Cpt(Readback, "LEVEL1_RBV", kind=Kind.normal, auto_monitor=False)
    level2 = Cpt(Readback, "LEVEL2_RBV", kind=Kind.normal, auto_monitor=False)
    level3 = Cpt(Readback, "LEVEL3_RBV", kind=Kind.omitted, auto_monitor=False)
    level4 = Cpt(Readback, "LEVEL4_RBV", kind=Kind.omitted, auto_monitor=False)
    level_sts = Cpt(Readback, "LEVEL_STS", string=True, kind=Kind.normal, auto_monitor=False)
    freq = Cpt(Setpoint, "FREQ_SP", kind=Kind.config)
    rest = Cpt(Setpoint, "REST_SP", kind=Kind.config)
    window = Cpt(Setpoint, "WINDOW_SP", string=True, kind=Kind.config)
    rx = Cpt(Readback, "RX_RBV", string=True, kind=Kind.config)
    rest_rbv = Cpt(Readback, "REST_RBV", kind=Kind.normal, auto_monitor=False)
    line = Cpt(Readback, "LINE_RBV", string=True, kind=Kind.normal, auto_monitor=False)
    nsec = Cpt(Readback, "NSEC_RBV", kind=Kind.normal, auto_monitor=False)
    nsamp = Cpt(Readback, "NSAMP_RBV", kind=Kind.omitted, auto_monitor=False)
    acf_raw = Cpt(Readback, "ACF_RAW", kind=Kind.omitted, auto_monitor=False)
    acf = Cpt(Readback, "ACF", kind=Kind.omitted, auto_monitor=False)
    spectrum = Cpt(Readback, "SPECTRUM", kind=Kind.normal, auto_monitor=False)
    freq_axis = Cpt(Readback, "FREQ_AXIS", kind=Kind.normal, auto_monitor=False)
    vel_axis = Cpt(Readback, "VEL_AXIS", kind=Kind.normal, auto_monitor=False)
    tsys = Cpt(Readback, "TSYS_RBV", kind=Kind.hinted, auto_monitor=False)
    vlsr_corr = Cpt(Readback, "VLSR_CORR_RBV", kind=Kind.normal, auto_monitor=False)
    ra = Cpt(Readback, "RA_RBV", kind=Kind.normal, auto_monitor=False)
    dec = Cpt(Readback, "DEC_RBV", kind=Kind.normal, auto_monitor=False)
    drv_link = Cpt(Readback, "DRV_LINK_STS", string=True, kind=Kind.omitted)
    ndi_link = Cpt(Readback, "NDI_LINK_STS", string=True, kind=Kind.omitted)
    int_done = Cpt(Readback, "INT_DONE_RBV", kind=Kind.normal)
    time = Cpt(Readback, "TIME_RBV", kind=Kind.normal, auto_monitor=False)

    def trigger(self) -> DeviceStatus:
        """Start an integration; done when its data are published."""
        status = DeviceStatus(self)

        def work() -> None:
            state, _ = self.state.fresh()
            if state == "INTEGRATING":
                raise CommandRefused(f"{self.name}: busy integrating; reset() first")
            n0 = int(self.int_done.fresh()[0])
            self.start_cmd.put_wait("START")  # a command PV: it reads IDLE again once processed
            state, t_acc = self.state.fresh()
            if state != "INTEGRATING" and int(self.int_done.fresh()[0]) <= n0:
                raise CommandRefused(f"{self.name}: START refused: {self.last_message()}")

            def check() -> bool:
                if int(self.int_done.get()) > n0 and self.data_rdy.get() == "YES":
                    return True
                if self.state.get() == "IDLE" and (self.state.timestamp or 0.0) > t_acc:
                    raise DeviceFault(f"{self.name}: integration ended without data: {self.last_message()}")
                return False

            watch(status, [self.int_done, self.data_rdy, self.state], check)

        run_in_thread(status, work, f"{self.name}-trigger", finish=False)
        return status

    def reset(self) -> DeviceStatus:
        """Abort an integration and clear DATA_RDY; done when the correlator is IDLE."""
        status = DeviceStatus(self)

        def work() -> None:
            self.reset_cmd.put_wait("RESET")
            if self.state.fresh()[0] != "IDLE":
                raise DeviceFault(f"{self.name}: still {self.state.get()} after RESET: {self.last_message()}")

        run_in_thread(status, work, f"{self.name}-reset")
        return status

    def stop(self, *, success: bool = False) -> None:
        """Abort a running integration."""
        if self.state.get() == "INTEGRATING":
            self.reset_cmd.put("RESET")

    def configure_integration(self, **settings: Any) -> dict[str, tuple[Any, Any]]:
        """Write settings by component name (e.g. ``int_time=30, freq=1665.4, bw='2'``) with checking.

        Returns ``{name: (old, new)}``; a refused value raises CommandRefused with the IOC's reason.
        """
        out = {}
        for key, value in settings.items():
            sig = getattr(self, key)
            old = sig.get()
            out[key] = (old, sig.checked_put(value))
        return out
