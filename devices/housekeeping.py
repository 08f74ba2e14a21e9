"""TMS: cryogenic and power housekeeping of the front end."""

from __future__ import annotations

from ophyd import Component as Cpt
from ophyd import Kind

from devices.common import ObsDevice, Readback, Setpoint


class Housekeeping(ObsDevice):
    """Cryostat, vacuum, supplies and room temperature (TMS IOC).  Hinted: the two cryostat stages (K).

    ``sim_cryo_fail`` ("OK" / "WARMUP") simulates a compressor failure.
    """

    cryo_15k = Cpt(Readback, "CRYO_15K_RBV", kind=Kind.hinted)
    cryo_70k = Cpt(Readback, "CRYO_70K_RBV", kind=Kind.hinted)
    vac = Cpt(Readback, "VAC_RBV", kind=Kind.normal)
    psu_p15 = Cpt(Readback, "PSU_P15_RBV", kind=Kind.normal)
    psu_n15 = Cpt(Readback, "PSU_N15_RBV", kind=Kind.normal)
    psu_p5 = Cpt(Readback, "PSU_P5_RBV", kind=Kind.normal)
    psu_p28 = Cpt(Readback, "PSU_P28_RBV", kind=Kind.normal)
    room = Cpt(Readback, "ROOM_TEMP_RBV", kind=Kind.normal)
    comp = Cpt(Readback, "COMP_STS", string=True, kind=Kind.normal)
    sim_cryo_fail = Cpt(Setpoint, "SIM_CRYO_FAIL_CMD", string=True, kind=Kind.omitted)
    rate = Cpt(Setpoint, "RATE_SP", kind=Kind.config)
