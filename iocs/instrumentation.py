"""NDI: the front end's digital I/O (SDIO equivalent): receiver and noise-diode selects, IF and chart selects,
and the master-fail summary alarm.

Noise diodes: the select register ``ND_SEL_SP`` has two bits per receiver (bit 2i = receiver i's LOW diode,
bit 2i+1 = its HIGH diode); the register is ``nd_bits`` wide (``inst.options["nd_bits"]``, 12 by default, 8 on
the older SDIO).  ``ND_K_RBV`` is the diode temperature injected into the selected receiver, recomputed whenever
the receiver select, the register or the 18/13 cm noise-adding diodes change; the backends link it.

Master fail (``MFAIL_STS``, latched, major alarm): the front end's hardware-fault summary line.  It trips on
(1) a simulated hardware fault (``SIM_FAIL_CMD`` = FAIL, e.g. an IF-amplifier supply crowbar) and (2) a warm
cryostat: the LNA plate (linked ``TMS:CRYO_15K_RBV``) above ``inst.options["mfail_cryo_k"]`` (30 K by default),
where the LNAs no longer meet their noise specification.  ``MFAIL_RESET_CMD`` = RESET clears the latch once no
cause remains (a reset while a cause persists is refused, naming the cause).
"""

from __future__ import annotations

from collections.abc import Sequence

from caproto import AlarmSeverity, AlarmStatus

from iocs.common import ObsIOC, pv_enum, pv_float, pv_int, pv_str
from iocs.links import CALink
from obsctl.clock import ObservatoryClock
from obsctl.site import InstrumentConfig, ReceiverConfig, Site

GPR_INPUTS = ["LCP", "RCP", "LCP_OFFSET", "RCP_OFFSET", "NOISE_CAL", "SYN1", "SYN2", "TERM_50R"]
IF_BANDWIDTHS_MHZ = [2, 4, 8, 16, 32, 64]
MIXERS = ["SYN1_LO", "SYN2_LO", "FIXED_LO", "BYPASS"]
CHART_CHANNELS = ["OFF", "DVM1", "DVM2", "TPWR_LCP", "TPWR_RCP", "IF_LCP", "IF_RCP", "ND_MOD", "SYNC", "HA_ERR",
                  "DEC_ERR", "WIND", "CRYO_15K", "CRYO_70K", "VACUUM", "TEST_OSC"]
#: noise-adding diodes: PV -> receiver name they belong to
NADS = {"NAD18_SP": "18cm", "NAD13_SP": "13cm"}




def nd_bits(inst: InstrumentConfig) -> int:
    """Width of the noise-diode select register from ``inst.options["nd_bits"]`` (default 12)."""
    raw = inst.options.get("nd_bits", 12)
    try:
        bits = int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{inst.dev}: options.nd_bits {raw!r} is not an integer") from None
    if isinstance(raw, bool) or float(raw) != bits or bits not in range(2, 17, 2):
        raise ValueError(f"{inst.dev}: options.nd_bits must be an even integer 2..16, got {raw!r}")
    return bits


def diode_temperature_k(receivers: Sequence[ReceiverConfig], selected: int, register: int,
                        nads_on: Sequence[str] = ()) -> float:
    """Noise-diode temperature (K) injected into receiver ``selected``.

    Parameters
    ----------
    receivers : the site's receivers (index i owns register bits 2i (LOW) and 2i+1 (HIGH))
    selected : index of the receiver whose signal reaches the backends
    register : noise-diode select register value
    nads_on : names of receivers whose noise-adding diode is on (adds that receiver's LOW diode temperature)
    """
    rx = receivers[selected]
    k = 0.0
    if register >> (2 * selected) & 1:
        k += rx.noise_diode_low_k
    if register >> (2 * selected + 1) & 1:
        k += rx.noise_diode_high_k
    if rx.name in nads_on:
        k += rx.noise_diode_low_k
    return k


class InstrumentationIOC(ObsIOC):
    """Front-end digital I/O (SDIO equivalent).

    PVs (prefix ``SITE:NDI:``)
    --------------------------
    RX_SEL_SP        receiver whose signal reaches the backends (enum of the site's receiver names)
    ND_SEL_SP        noise-diode select register (bit 2i LOW, 2i+1 HIGH diode of receiver i), 0..2^nd_bits-1
    ND_SEL_RBV       noise-diode register as latched by the hardware
    ND_BITS_RBV      width of the noise-diode register (bits)
    NAD18_SP         18 cm noise-adding diode OFF/ON
    NAD13_SP         13 cm noise-adding diode OFF/ON
    ND_K_RBV         noise-diode temperature injected into the selected receiver (K)
    GPR_IN_SP        general-purpose receiver input select (8 inputs)
    IF_BW_SP         IF filter bandwidth select (2..64 MHz)
    IF_BW_RBV        selected IF filter bandwidth (MHz)
    MIXER_SP         mixer / LO select
    CHART1_SP        chart-recorder pen 1 channel (16 channels)
    CHART2_SP        chart-recorder pen 2 channel (16 channels)
    MFAIL_STS        master fail OK / FAIL (latched; major alarm when FAIL)
    MFAIL_CAUSE_RBV  what tripped the master fail
    MFAIL_RESET_CMD  IDLE / RESET: clear the master-fail latch (refused while a cause remains)
    SIM_FAIL_CMD     simulation: OK / FAIL = a front-end hardware fault
    """

    nd_sel_rbv = pv_int("ND_SEL_RBV", "Noise-diode select register readback", "mask")
    nd_bits_rbv = pv_int("ND_BITS_RBV", "Noise-diode register width", "bit")
    nad18 = pv_enum("NAD18_SP", "18 cm noise-adding diode", ["OFF", "ON"], writable=True)
    nad13 = pv_enum("NAD13_SP", "13 cm noise-adding diode", ["OFF", "ON"], writable=True)
    nd_k = pv_float("ND_K_RBV", "Noise-diode T in the selected receiver", "K", 0.0, lo=0,
                    hi=200, precision=3)
    gpr_in = pv_enum("GPR_IN_SP", "General-purpose receiver input select", GPR_INPUTS, writable=True)
    if_bw = pv_enum("IF_BW_SP", "IF filter bandwidth select", [f"{b}MHz" for b in IF_BANDWIDTHS_MHZ],
                    "16MHz", writable=True)
    if_bw_rbv = pv_float("IF_BW_RBV", "Selected IF filter bandwidth", "MHz", 16.0, lo=0, hi=64, precision=1)
    mixer = pv_enum("MIXER_SP", "Mixer / local-oscillator select", MIXERS, writable=True)
    chart1 = pv_enum("CHART1_SP", "Chart-recorder pen 1 channel", CHART_CHANNELS, writable=True)
    chart2 = pv_enum("CHART2_SP", "Chart-recorder pen 2 channel", CHART_CHANNELS, writable=True)
    mfail = pv_enum("MFAIL_STS", "Front-end master fail (latched)", ["OK", "FAIL"])
    mfail_cause = pv_str("MFAIL_CAUSE_RBV", "Cause of the master fail")
    mfail_reset = pv_enum("MFAIL_RESET_CMD", "Reset the master-fail latch", ["IDLE", "RESET"], writable=True)
    sim_fail = pv_enum("SIM_FAIL_CMD", "Simulation: front-end hardware fault", ["OK", "FAIL"], writable=True)

    def __init__(self, site: Site, inst: InstrumentConfig, clock: ObservatoryClock, **kwargs):
        super().__init__(site, inst, clock, **kwargs)
        self.receivers = list(site.receivers)
        self.bits = nd_bits(inst)
        self.cryo_limit_k = float(inst.options.get("mfail_cryo_k", 30.0))
        self.cryo_pv = site.pv("TMS", "CRYO_15K_RBV") if any(i.dev == "TMS" for i in site.instruments) else None
        self.link = CALink([self.cryo_pv]) if self.cryo_pv else None

    # ---- noise diodes ----------------------------------------------------------------------
    def selected_index(self, value: str | None = None) -> int:
        """Index of the selected receiver (of ``value`` if given)."""
        return self.rx_sel.enum_strings.index(value if value is not None else self.rx_sel.value)

    async def update_diodes(self, *, rx: str | None = None, register: int | None = None,
                            nad: tuple[str, str] | None = None) -> None:
        """Recompute ND_K_RBV with one input replaced by its new value (a putter runs before the write)."""
        reg = int(self.nd_sel.value if register is None else register)
        nad_state = {pv: getattr(self, attr).value for pv, attr in (("NAD18_SP", "nad18"), ("NAD13_SP", "nad13"))}
        if nad is not None:
            nad_state[nad[0]] = nad[1]
        on = [NADS[pv] for pv, state in nad_state.items() if state == "ON"]
        k = diode_temperature_k(self.receivers, self.selected_index(rx), reg, on)
        t = self.clock.now()
        await self.nd_sel_rbv.write(reg, timestamp=t)
        await self.nd_k.write(k, timestamp=t)

    @nd_k.startup
    async def nd_k(self, instance, async_lib):
        await self.nd_bits_rbv.write(self.bits, timestamp=self.clock.now())
        if len(self.receivers) * 2 > self.bits:
            self.log.warning("only %d of %d receivers have noise-diode bits", self.bits // 2, len(self.receivers))
        await self.update_diodes()

    async def put_rx_sel(self, instance, value):
        await self.update_diodes(rx=value)
        return value

    async def put_nd_sel(self, instance, value):
        if int(value) != value or not 0 <= value < 2**self.bits:
            await self.reject(f"ND_SEL_SP {value}: outside the {self.bits}-bit register 0..{2**self.bits - 1}")
        await self.update_diodes(register=int(value))
        return int(value)

    @nad18.putter
    async def nad18(self, instance, value):
        await self.update_diodes(nad=("NAD18_SP", value))
        return value

    @nad13.putter
    async def nad13(self, instance, value):
        await self.update_diodes(nad=("NAD13_SP", value))
        return value

    # ---- IF select ---------------------------------------------------------------------------
    @if_bw.putter
    async def if_bw(self, instance, value):
        await self.if_bw_rbv.write(float(value.removesuffix("MHz")), timestamp=self.clock.now())
        return value

    # ---- master fail -----------------------------------------------------------------------
    def fault_causes(self, sim_fail: str | None = None) -> list[str]:
        """The hardware faults present now."""
        causes = []
        if (sim_fail or self.sim_fail.value) == "FAIL":
            causes.append("front-end hardware fault")
        if self.link is not None:
            cryo = self.link.get(self.cryo_pv)
            if cryo is not None and cryo > self.cryo_limit_k:
                causes.append(f"LNA plate warm: {float(cryo):.1f} K")
        return causes

    async def trip(self, causes: list[str]) -> None:
        """Latch the master fail with the first cause (no-op if already failed)."""
        if self.mfail.value == "FAIL" or not causes:
            return
        t = self.clock.now()
        await self.mfail_cause.write(causes[0][:39], timestamp=t)
        await self.mfail.write("FAIL", timestamp=t, status=AlarmStatus.STATE, severity=AlarmSeverity.MAJOR_ALARM)
        await self.say(f"MASTER FAIL: {causes[0]}")

    @mfail.startup
    async def mfail(self, instance, async_lib):
        if self.link is not None:
            await self.link.start()
        while True:
            await self.trip(self.fault_causes())
            await async_lib.library.sleep(0.5)

    @sim_fail.putter
    async def sim_fail(self, instance, value):
        await self.trip(self.fault_causes(sim_fail=value))
        return value

    @mfail_reset.putter
    async def mfail_reset(self, instance, value):
        if value == "RESET":
            causes = self.fault_causes()
            if causes:
                await self.reject(f"reset refused: {causes[0]}")
            t = self.clock.now()
            if self.mfail.value == "FAIL":
                await self.mfail.write("OK", timestamp=t, status=AlarmStatus.NO_ALARM,
                                       severity=AlarmSeverity.NO_ALARM)
                await self.mfail_cause.write("", timestamp=t)
                await self.say("master fail reset")
        return "IDLE"

    async def shutdown(self) -> None:
        """Close the CA link (called by the server on exit)."""
        if self.link is not None:
            await self.link.stop()



def instrumentation_class(receiver_names: Sequence[str], bits: int) -> type[InstrumentationIOC]:
    """The NDI class for a site: RX_SEL_SP lists its receivers, ND_SEL_SP spans its ``bits``-bit register."""
    if not 1 <= len(receiver_names) <= 16:
        raise ValueError(f"RX_SEL_SP needs 1..16 receivers, the site has {len(receiver_names)}")

    class SiteInstrumentationIOC(InstrumentationIOC):
        rx_sel = pv_enum("RX_SEL_SP", "Receiver feeding the backends", list(receiver_names),
                         writable=True)
        nd_sel = pv_int("ND_SEL_SP", f"Noise-diode select register, {bits} bits", "mask",
                        0, lo=0, hi=2**bits - 1, writable=True)

        @rx_sel.putter
        async def rx_sel(self, instance, value):
            return await self.put_rx_sel(instance, value)

        @nd_sel.putter
        async def nd_sel(self, instance, value):
            return await self.put_nd_sel(instance, value)

    SiteInstrumentationIOC.__doc__ = InstrumentationIOC.__doc__
    return SiteInstrumentationIOC


def make_ioc(site: Site, inst: InstrumentConfig, clock: ObservatoryClock) -> InstrumentationIOC:
    """The NDI IOC of a site."""
    cls = instrumentation_class([r.name for r in site.receivers], nd_bits(inst))
    return cls(site, inst, clock)
