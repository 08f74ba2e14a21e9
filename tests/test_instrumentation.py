"""NDI IOC: receiver and noise-diode selects against the site's receivers, selects, master fail."""

from __future__ import annotations

import epics
import pytest

from obsctl.site import write_site_variant
from tests.conftest import wait_for
from tests.helpers import check_pv_metadata, get, put, put_rejected, severity


def expected_diode_k(site, rx: int, register: int, nad18: bool = False, nad13: bool = False) -> float:
    """Diode temperature (K) the selected receiver sees, from the interface definition and the site file."""
    r = site.receivers[rx]
    k = 0.0
    if register & (1 << (2 * rx)):
        k += r.noise_diode_low_k
    if register & (1 << (2 * rx + 1)):
        k += r.noise_diode_high_k
    if (nad18 and r.name == "18cm") or (nad13 and r.name == "13cm"):
        k += r.noise_diode_low_k
    return k


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast")  # NaN put to a LONG
def test_ndi_diodes_selects_and_bad_input(observatory):
    obs = observatory(["NDI"])
    ndi = lambda sig: obs.pv("NDI", sig)  # noqa: E731
    check_pv_metadata(obs, "NDI")
    names = [r.name for r in obs.site.receivers]
    assert epics.get_pv(ndi("RX_SEL_SP")).get_ctrlvars()["enum_strs"] == tuple(names)
    assert get(ndi("ND_BITS_RBV")) == 12  # reference site: 12-bit register
    assert get(ndi("ND_K_RBV")) == 0.0
    # ND_K_RBV follows every input; compare with the site receivers' diode temperatures
    combos = [(1, 0b1000, False, False), (1, 0b1001, False, True), (0, 0b1001, False, True),
              (0, 0b0011, True, False), (2, 0b110000, True, True), (4, 0b11 << 8, False, False),
              (4, 0xFFF, True, True), (3, 0b01000000, False, False), (0, 0, True, True)]
    for rx, reg, n18, n13 in combos:
        put(ndi("RX_SEL_SP"), names[rx])
        put(ndi("ND_SEL_SP"), reg)
        put(ndi("NAD18_SP"), "ON" if n18 else "OFF")
        put(ndi("NAD13_SP"), "ON" if n13 else "OFF")
        assert get(ndi("ND_SEL_RBV")) == reg
        assert get(ndi("ND_K_RBV")) == pytest.approx(expected_diode_k(obs.site, rx, reg, n18, n13)), (rx, reg)
    # the receiver select alone recomputes the injected temperature
    put(ndi("ND_SEL_SP"), 0b1010)  # HIGH diodes of 18cm and 13cm
    for rx in (0, 1, 2):
        put(ndi("RX_SEL_SP"), rx)
        assert get(ndi("ND_K_RBV")) == pytest.approx(expected_diode_k(obs.site, rx, 0b1010, True, True))
    # IF bandwidth select publishes the bandwidth in MHz
    put(ndi("IF_BW_SP"), "32MHz")
    assert get(ndi("IF_BW_RBV")) == 32.0
    for sig, value in (("GPR_IN_SP", "SYN2"), ("MIXER_SP", "BYPASS"), ("CHART1_SP", "WIND"),
                       ("CHART2_SP", "CRYO_15K")):
        put(ndi(sig), value)
        assert get(ndi(sig), as_string=True) == value
    assert len(epics.get_pv(ndi("CHART1_SP")).get_ctrlvars()["enum_strs"]) == 16
    assert len(epics.get_pv(ndi("GPR_IN_SP")).get_ctrlvars()["enum_strs"]) == 8
    # bad inputs: rejected, old value kept, ND_K_RBV unchanged
    k_before = get(ndi("ND_K_RBV"))
    for sig, values in (("ND_SEL_SP", [4096, -1, 1e9, float("nan"), "abc"]),
                        ("RX_SEL_SP", ["99cm", len(names), -1, "x" * 30]),
                        ("NAD18_SP", ["MAYBE", 2]), ("IF_BW_SP", ["3MHz", 6]),
                        ("CHART1_SP", [16, "PEN"]), ("GPR_IN_SP", [8, "LCP2"]), ("MIXER_SP", [4, "MIX9"]),
                        ("MFAIL_RESET_CMD", ["NOW", 3]), ("SIM_FAIL_CMD", ["BROKEN", 2])):
        old = get(ndi(sig), as_string=True)
        for v in values:
            assert put_rejected(ndi(sig), v), f"{sig} accepted {v!r}"
            assert get(ndi(sig), as_string=True) == old, sig
    assert get(ndi("ND_K_RBV")) == k_before and get(ndi("ND_SEL_RBV")) == 0b1010
    put(ndi("ND_SEL_SP"), 4095)  # the full 12-bit register is accepted
    assert get(ndi("ND_SEL_RBV")) == 4095 and severity(ndi("ND_SEL_SP")) == 0
    # master fail: latched, major alarm, reset refused while the fault persists
    assert get(ndi("MFAIL_STS"), as_string=True) == "OK" and severity(ndi("MFAIL_STS")) == 0
    put(ndi("SIM_FAIL_CMD"), "FAIL")
    wait_for(lambda: get(ndi("MFAIL_STS"), as_string=True) == "FAIL", 3.0, what="master fail")
    assert severity(ndi("MFAIL_STS")) == 2 and "fault" in get(ndi("MFAIL_CAUSE_RBV"))
    assert put_rejected(ndi("MFAIL_RESET_CMD"), "RESET")
    assert "refused" in get(ndi("MSG_RBV"))
    put(ndi("SIM_FAIL_CMD"), "OK")
    assert get(ndi("MFAIL_STS"), as_string=True) == "FAIL"  # latched
    put(ndi("MFAIL_RESET_CMD"), "RESET")
    assert get(ndi("MFAIL_STS"), as_string=True) == "OK" and severity(ndi("MFAIL_STS")) == 0
    assert get(ndi("MFAIL_RESET_CMD"), as_string=True) == "IDLE"


def test_ndi_master_fail_follows_warm_cryostat(observatory):
    obs = observatory(["NDI", "TMS"], speed=600)
    mfail, cryo = obs.pv("NDI", "MFAIL_STS"), obs.pv("TMS", "CRYO_15K_RBV")
    assert get(cryo) < 20.0
    wait_for(lambda: get(obs.pv("NDI", "ALIVE_RBV")) >= 2, 5.0, what="NDI running with its TMS link")
    assert get(mfail, as_string=True) == "OK"
    put(obs.pv("TMS", "SIM_CRYO_FAIL_CMD"), "WARMUP")
    wait_for(lambda: get(mfail, as_string=True) == "FAIL", 20.0, what="master fail on a warm cryostat")
    assert get(cryo) > 30.0 and "LNA" in get(obs.pv("NDI", "MFAIL_CAUSE_RBV"))
    assert put_rejected(obs.pv("NDI", "MFAIL_RESET_CMD"), "RESET")  # still warm
    put(obs.pv("TMS", "SIM_CRYO_FAIL_CMD"), "OK")
    wait_for(lambda: get(cryo) < 25.0, 60.0, what="cryostat cold again")
    put(obs.pv("NDI", "MFAIL_RESET_CMD"), "RESET")
    assert get(mfail, as_string=True) == "OK"


def test_ndi_eight_bit_register_option(observatory, tmp_path):
    obs = observatory(["NDI"], site=write_site_variant(tmp_path, instrument_options={"NDI": {"nd_bits": 8}}))
    sel = obs.pv("NDI", "ND_SEL_SP")
    assert get(obs.pv("NDI", "ND_BITS_RBV")) == 8
    assert epics.get_pv(sel).get_ctrlvars()["upper_ctrl_limit"] == 255
    for bad in (256, 4095):
        assert put_rejected(sel, bad)
    put(sel, 255)
    put(obs.pv("NDI", "RX_SEL_SP"), "3.5cm")
    assert get(obs.pv("NDI", "ND_K_RBV")) == pytest.approx(expected_diode_k(obs.site, 3, 255))
