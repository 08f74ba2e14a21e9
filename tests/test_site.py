"""Site file validation, pointing model, clock, catalog."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from obsctl.catalog import Catalog, load_catalog
from obsctl.clock import ObservatoryClock, parse_epoch
from obsctl.pointing import PointingModel, PointingModelError
from obsctl.site import DEFAULT_SITE_FILE, SITES_DIR, SiteError, load_site, parse_site, write_site_variant

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _reference() -> dict:
    return tomllib.loads(DEFAULT_SITE_FILE.read_text())


def test_every_site_file_in_the_repo_is_valid():
    files = sorted(SITES_DIR.glob("*.toml"))
    assert files
    for f in files:
        site = load_site(f)
        assert site.pv_prefix
        assert site.resolve(site.mount.pointing_model_file).is_file()


def test_reference_site_values():
    site = load_site()
    assert (site.latitude_deg, site.longitude_deg, site.height_m) == (-25.8897, 27.6853, 1415.0)
    assert site.dish_diameter_m == 26.0
    assert [r.name for r in site.receivers] == ["18cm", "13cm", "6cm", "3.5cm", "1.3cm"]
    assert {i.dev for i in site.instruments} == {"TIME", "WX", "DRV", "RAD", "NDI", "COR", "PSR", "SYN1",
                                                  "SYN2", "TMS", "SUB"}
    # 1.2 lambda / D at 1666 MHz on a 26 m dish: 0.476 deg
    assert site.beam_fwhm_deg(1666.0) == pytest.approx(0.4759, abs=1e-3)


@pytest.mark.parametrize(
    ("path", "value", "field", "reason"),
    [
        (("latitude_deg",), 123.0, "latitude_deg", "less than or equal to 90"),
        (("mount", "ha", "max_rate_deg_s"), -1.0, "mount.ha.max_rate_deg_s", "greater than 0"),
        (("mount", "dec", "min_deg"), 70.0, "mount.dec", "must be below max_deg"),
        (("mount", "type"), "altaz-ish", "mount.type", "equatorial"),
        (("pv_prefix",), "hrt lower", "pv_prefix", "pattern"),
        (("receivers", 0, "freq_mhz"), 5000.0, "receivers.0", "outside"),
        (("instruments", 0, "kind"), "toaster", "instruments.0.kind", "unknown instrument kind"),
        (("mount", "watchdog_s"), "five", "mount.watchdog_s", "valid number"),
        (("mount", "bogus_field"), 1, "mount.bogus_field", "Extra inputs"),
    ],
)
def test_bad_site_is_rejected_naming_field_and_reason(path, value, field, reason):
    data = _reference()
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(SiteError) as err:
        parse_site(data, "bad.toml")
    text = str(err.value)
    assert field in text and reason in text, text


def test_duplicate_devices_rejected():
    data = _reference()
    data["instruments"].append(dict(data["instruments"][0]))
    with pytest.raises(SiteError, match="duplicate"):
        parse_site(data)


def test_bad_toml_and_missing_files(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed")
    with pytest.raises(SiteError, match="TOML syntax"):
        load_site(bad)
    with pytest.raises(SiteError, match="cannot read"):
        load_site(tmp_path / "missing.toml")
    good = tmp_path / "site.toml"
    good.write_text(DEFAULT_SITE_FILE.read_text())  # pointing table is relative: missing next to the copy
    with pytest.raises(SiteError, match="pointing_model_file"):
        load_site(good)


def test_pointing_model_interpolates_periodically():
    site = load_site()
    pm = PointingModel.load(site.resolve(site.mount.pointing_model_file))
    # at a grid node (day 1.0 = 1 Jan 00:00 UT, ut00) the value is the table's
    t = parse_epoch("2027-01-01T00:00:00")
    assert pm.offsets(t) == pytest.approx((0.0120, -0.0080), abs=1e-9)
    # half-way between 03 and 06 UT on day 1: mean of the nodes (bilinear)
    t2 = parse_epoch("2027-01-01T04:30:00")
    assert pm.offsets(t2)[0] == pytest.approx((0.0135 + 0.0150) / 2, abs=2e-5)
    # periodic in UT: 22:30 lies between ut21 and ut00 of the same table row
    ha_2230 = pm.offsets(parse_epoch("2027-01-01T22:30:00"))[0]
    assert min(0.0110, 0.0120) - 1e-4 <= ha_2230 <= max(0.0110, 0.0120) + 1e-4
    assert PointingModel.zero().offsets(t) == (0.0, 0.0)


def test_pointing_model_rejects_bad_tables(tmp_path):
    f = tmp_path / "pm.csv"
    f.write_text("axis,doy,ut00,ut12\nHA,1,0.01,0.02\nDEC,1,0.01\n")
    with pytest.raises(PointingModelError, match="row 3 has 3 fields"):
        PointingModel.load(f)
    f.write_text("axis,doy,ut00,ut12\nHA,1,0.01,5\nDEC,1,0.01,0.0\n")
    with pytest.raises(PointingModelError, match="below 1 deg"):
        PointingModel.load(f)
    f.write_text("axis,doy,ut00,ut12\nAZ,1,0.01,0.0\n")
    with pytest.raises(PointingModelError, match="HA or DEC"):
        PointingModel.load(f)


def test_clock_speed_and_env_roundtrip():
    fake = [1000.0]
    clock = ObservatoryClock(sim_epoch=parse_epoch("2026-11-21T18:00:00"), real_epoch=1000.0, speed=60.0,
                             _realtime=lambda: fake[0])
    t0 = clock.now()
    fake[0] += 10.0
    assert clock.now() - t0 == pytest.approx(600.0)
    assert clock.real_duration(600.0) == pytest.approx(10.0)
    again = ObservatoryClock.from_env({"OBSCTL_CLOCK": clock.to_env()})
    assert (again.sim_epoch, again.real_epoch, again.speed) == (clock.sim_epoch, clock.real_epoch, 60.0)
    with pytest.raises(ValueError, match="speed"):
        ObservatoryClock(0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="not an ISO-8601"):
        parse_epoch("yesterday-ish")
    with pytest.raises(ValueError, match="OBSCTL_CLOCK"):
        ObservatoryClock.from_env({"OBSCTL_CLOCK": "1,2"})


def test_catalog_matches_shared_reference_data():
    cat = load_catalog()
    assert cat.get("pks 1934-638").name == "PKS1934-638"
    assert cat.get("J0835-4510").kind == "pulsar"
    assert cat.line_rest_mhz("CH3OH-6668") == pytest.approx(6668.5192)
    with pytest.raises(KeyError, match="unknown source"):
        cat.get("no such source")
    hydra = cat.get("HydraA")
    assert hydra.flux_jy(1400.0) == 43.0
    assert hydra.flux_jy(2800.0) == pytest.approx(43.0 * 2 ** -0.91)
    if SHARED_DATA.is_dir():  # the packaged copy must not drift from the project's reference data
        shared = Catalog(SHARED_DATA)
        assert shared.lines == cat.lines
        assert {k: (s.ra_deg, s.dec_deg, s.s_1400_jy, s.period_s) for k, s in shared.sources.items()} == \
            {k: (s.ra_deg, s.dec_deg, s.s_1400_jy, s.period_s) for k, s in cat.sources.items()}


def test_pulsar_spin_down():
    vela = load_catalog().get("J0835-4510")
    p = vela.period_at(vela.epoch_mjd + 10000)
    assert p - vela.period_s == pytest.approx(vela.pdot * 10000 * 86400, rel=1e-12)
    assert np.isfinite(p)


def test_site_variant_changes_values_and_merges_instrument_options(tmp_path):
    site = write_site_variant(tmp_path / "a", control_rate_hz=2.0,
                              instrument_options={"RAD": {"avg": 4}, "NDI": {"extra": "x y"}})
    ref = load_site()
    assert site.mount.control_rate_hz == 2.0 and ref.mount.control_rate_hz != 2.0
    opts = {i.dev: i.options for i in site.instruments}
    ref_opts = {i.dev: i.options for i in ref.instruments}
    assert opts["RAD"] == {**ref_opts["RAD"], "avg": 4}
    assert opts["NDI"] == {**ref_opts["NDI"], "extra": "x y"}  # merged: nd_bits kept
    assert {k: v for k, v in opts.items() if k not in ("RAD", "NDI")} == \
        {k: v for k, v in ref_opts.items() if k not in ("RAD", "NDI")}
    model = site.resolve(site.mount.pointing_model_file)  # copied along: the relative path still holds
    assert model.read_bytes() == ref.resolve(ref.mount.pointing_model_file).read_bytes()
    with pytest.raises(SiteError, match="'NOPE'"):
        write_site_variant(tmp_path / "b", instrument_options={"NOPE": {"a": 1}})
    with pytest.raises(SiteError, match="no_such_key"):
        write_site_variant(tmp_path / "c", no_such_key=1.0)
