"""Site configuration: the observatory described by one validated TOML file.

The reference site is ``obsctl/sites/hartrao.toml`` (a HartRAO-like 26 m equatorial dish).  Every
number carries its unit in the field name (``_deg``, ``_mhz``, ``_k``, ...).  A bad file raises
:class:`SiteError` naming the field and the reason.
"""

from __future__ import annotations

import math
import re
import shutil
import tomllib
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SITES_DIR = Path(__file__).parent / "sites"
DEFAULT_SITE_FILE = SITES_DIR / "hartrao.toml"
DATA_DIR = Path(__file__).parent / "data"

C_M_S = 299_792_458.0

#: Instrument kinds known to the IOC fleet, with the PV device name they default to.
INSTRUMENT_KINDS: dict[str, str] = {
    "time": "TIME",
    "drive": "DRV",
    "radiometer": "RAD",
    "instrumentation": "NDI",
    "correlator": "COR",
    "pulsar_timer": "PSR",
    "synthesizer": "SYN",
    "weather": "WX",
    "housekeeping": "TMS",
    "subreflector": "SUB",
}


class SiteError(ValueError):
    """A site file that cannot be used; the message names the field and the reason."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: fraction of an axis's maximum rate that a drive command may ask for (AxisConfig.command_rate_deg_s)
COMMAND_RATE_FRACTION = 0.8


class AxisConfig(_Model):
    """One mount axis: software limits and motion capability."""

    min_deg: float = Field(description="lower software limit (deg)")
    max_deg: float = Field(description="upper software limit (deg)")
    max_rate_deg_s: float = Field(gt=0, le=10, description="maximum slew rate (deg/s)")
    max_accel_deg_s2: float = Field(gt=0, le=10, description="maximum acceleration (deg/s^2)")

    @property
    def command_rate_deg_s(self) -> float:
        """Largest axis rate a SCAN or manual RATE command may ask for (deg/s): a margin below the maximum,
        so that the axis can still catch up with its command."""
        return COMMAND_RATE_FRACTION * self.max_rate_deg_s

    @model_validator(mode="after")
    def _ordered(self) -> AxisConfig:
        if self.min_deg >= self.max_deg:
            raise ValueError(f"min_deg ({self.min_deg}) must be below max_deg ({self.max_deg})")
        return self


class MountConfig(_Model):
    """Mount geometry, limits and safety settings."""

    type: Literal["equatorial"] = Field(description="mount type (only equatorial is modelled)")
    ha: AxisConfig = Field(description="hour-angle axis (deg)")
    dec: AxisConfig = Field(description="declination axis (deg)")
    min_elevation_deg: float = Field(ge=0, lt=90, description="horizon limit (deg)")
    stow_ha_deg: float = Field(description="stow position, hour angle (deg)")
    stow_dec_deg: float = Field(description="stow position, declination (deg)")
    sun_avoidance_deg: float = Field(ge=0, le=90, description="minimum distance to the sun (deg)")
    watchdog_s: float = Field(gt=0, description="client heartbeat timeout while moving (s)")
    wind_stow_m_s: float = Field(gt=0, description="wind speed that forces a stow (m/s)")
    on_source_tolerance_deg: float = Field(gt=0, description="position error counted as on source (deg)")
    settle_time_s: float = Field(ge=0, description="time within tolerance before 'settled' (s)")
    control_rate_hz: float = Field(gt=0, le=200, description="drive control loop rate, real time (Hz)")
    pointing_model_file: str = Field(description="HA/Dec offset table (UT x day-of-year), relative to the site file")

    @field_validator("pointing_model_file")
    @classmethod
    def _nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must name a file")
        return v


class ReceiverConfig(_Model):
    """A receiver on the dish: band, system temperature, gain and noise diodes."""

    name: str = Field(description="band name, e.g. '18cm'")
    freq_mhz: float = Field(gt=0, description="nominal centre frequency (MHz)")
    freq_min_mhz: float = Field(gt=0, description="lowest tunable sky frequency (MHz)")
    freq_max_mhz: float = Field(gt=0, description="highest tunable sky frequency (MHz)")
    bandwidth_mhz: float = Field(gt=0, description="continuum (radiometer) bandwidth (MHz)")
    tsys_k: float = Field(gt=0, description="receiver + spillover system temperature at zenith, no sky (K)")
    gain_k_per_jy: float = Field(gt=0, description="antenna gain, point source (K/Jy)")
    noise_diode_low_k: float = Field(ge=0, description="low noise-diode temperature (K)")
    noise_diode_high_k: float = Field(ge=0, description="high noise-diode temperature (K)")
    zenith_tau: float = Field(ge=0, lt=2, description="zenith opacity in standard weather (nepers)")
    counts_per_k: float = Field(gt=0, description="DVM counts per kelvin of system temperature")

    @model_validator(mode="after")
    def _band(self) -> ReceiverConfig:
        if not self.freq_min_mhz <= self.freq_mhz <= self.freq_max_mhz:
            raise ValueError(
                f"freq_mhz {self.freq_mhz} is outside [{self.freq_min_mhz}, {self.freq_max_mhz}]"
            )
        return self

    @property
    def wavelength_m(self) -> float:
        """Wavelength at the nominal frequency (m)."""
        return C_M_S / (self.freq_mhz * 1e6)


class InstrumentConfig(_Model):
    """One IOC of the fleet."""

    dev: str = Field(pattern=r"^[A-Z][A-Z0-9]{0,7}$", description="PV device name, e.g. DRV")
    kind: str = Field(description="instrument kind: " + ", ".join(INSTRUMENT_KINDS))
    process: str = Field(default="", description="process group; empty means a process of its own")
    model: str = Field(default="", description="hardware model this IOC emulates, e.g. HP8662A")
    options: dict[str, float | int | str | bool] = Field(
        default_factory=dict, description="instrument-specific settings"
    )

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        if v not in INSTRUMENT_KINDS:
            raise ValueError(f"unknown instrument kind {v!r}; known: {', '.join(INSTRUMENT_KINDS)}")
        return v


class CAConfig(_Model):
    """Channel Access network settings (loopback by default)."""

    interface: str = Field(default="127.0.0.1", description="interface the IOCs bind to")
    server_port: int = Field(default=5064, ge=1024, le=65000, description="first IOC server port")
    repeater_port: int = Field(default=5065, ge=1024, le=65535, description="CA repeater port")


class ClockConfig(_Model):
    """Observatory clock defaults."""

    speed: float = Field(default=1.0, gt=0, le=10000, description="simulation speed factor")
    start: str = Field(default="now", description="start epoch (ISO UTC) or 'now'")


class SimulationConfig(_Model):
    """Physical parameters of the simulated world (not used by hardware drivers)."""

    seed: int = Field(default=1, description="random seed for noise")
    t_atm_k: float = Field(default=270.0, gt=0, description="effective atmospheric temperature (K)")
    t_cmb_k: float = Field(default=2.725, ge=0, description="cosmic background (K)")
    t_ground_k: float = Field(default=280.0, gt=0, description="ground temperature seen in spillover (K)")
    one_over_f_k: float = Field(default=0.02, ge=0, description="1/f gain-drift amplitude (K rms)")
    encoder_noise_deg: float = Field(default=0.0005, ge=0, description="encoder jitter (deg rms)")
    dec_encoder_offset_deg: float = Field(default=0.002, description="second Dec encoder offset (deg)")


class ArchiveConfig(_Model):
    """Where runs are archived: an embedded SQLite catalog by default, PostgreSQL when a URL is given."""

    data_dir: str = Field(default="", description="archive directory; empty = ~/.local/share/obsctl/archive")
    catalog_uri: str = Field(default="", description="catalog database URL (postgresql://...); empty = SQLite "
                                                     "in data_dir")

    @field_validator("catalog_uri")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        if v and not v.startswith(("sqlite", "postgresql")):
            raise ValueError(f"catalog_uri must be a sqlite:// or postgresql:// URL, got {v!r}")
        return v


class Site(_Model):
    """The observatory: location, mount, receivers and IOC fleet."""

    name: str = Field(description="observatory name")
    pv_prefix: str = Field(pattern=r"^[A-Z][A-Z0-9_]{0,15}$", description="PV prefix (SITE in SITE:DEV:SIGNAL)")
    latitude_deg: float = Field(ge=-90, le=90, description="geodetic latitude (deg, north positive)")
    longitude_deg: float = Field(ge=-180, le=360, description="longitude (deg, east positive)")
    height_m: float = Field(ge=-500, le=9000, description="height above the ellipsoid (m)")
    dish_diameter_m: float = Field(gt=0, le=1000, description="dish diameter (m)")
    mount: MountConfig
    receivers: list[ReceiverConfig] = Field(min_length=1)
    instruments: list[InstrumentConfig] = Field(min_length=1)
    ca: CAConfig = Field(default_factory=CAConfig)
    clock: ClockConfig = Field(default_factory=ClockConfig)
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)
    archive: ArchiveConfig = Field(default_factory=ArchiveConfig)
    catalog_dir: str = Field(default="", description="catalog CSV directory; empty = the packaged catalogs")
    source_file: str = Field(default="", description="path this site was read from (set by the loader)")

    @model_validator(mode="after")
    def _unique(self) -> Site:
        for what, names in (
            ("receivers", [r.name for r in self.receivers]),
            ("instruments", [i.dev for i in self.instruments]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{what}: duplicate names {dupes}")
        return self

    # ---- derived helpers -------------------------------------------------------------------
    def receiver(self, name: str) -> ReceiverConfig:
        """The receiver called ``name`` (KeyError naming the known ones otherwise)."""
        for r in self.receivers:
            if r.name == name:
                return r
        raise KeyError(f"no receiver {name!r}; this site has {[r.name for r in self.receivers]}")

    def instrument(self, dev: str) -> InstrumentConfig:
        """The instrument whose device name is ``dev``."""
        for i in self.instruments:
            if i.dev == dev:
                return i
        raise KeyError(f"no instrument {dev!r}; this site has {[i.dev for i in self.instruments]}")

    def pv(self, dev: str, signal: str) -> str:
        """Full PV name ``SITE:DEV:SIGNAL``."""
        return f"{self.pv_prefix}:{dev}:{signal}"

    def beam_fwhm_deg(self, freq_mhz: float) -> float:
        """Half-power beam width, 1.2 lambda/D (deg)."""
        return math.degrees(1.2 * C_M_S / (freq_mhz * 1e6) / self.dish_diameter_m)

    @cached_property
    def base_dir(self) -> Path:
        """Directory of the site file (relative paths are resolved against it)."""
        return Path(self.source_file).parent if self.source_file else SITES_DIR

    def resolve(self, path: str) -> Path:
        """Resolve a path given in the site file."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    @property
    def catalog_path(self) -> Path:
        """Directory holding calibrators.csv, pulsars.csv, masers.csv, lines.csv."""
        return self.resolve(self.catalog_dir) if self.catalog_dir else DATA_DIR

    def with_overrides(self, **changes: object) -> Site:
        """A copy with top-level fields replaced (validated again)."""
        data = self.model_dump()
        data.update(changes)
        return Site.model_validate(data)


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid site file {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {loc}: {e['msg']}")
    return "\n".join(lines)


def parse_site(data: dict, source: str = "<memory>") -> Site:
    """Validate a site dictionary; raise :class:`SiteError` naming each bad field."""
    try:
        return Site.model_validate({**data, "source_file": source if source != "<memory>" else ""})
    except ValidationError as err:
        raise SiteError(_format_errors(err, source)) from None


def load_site(path: str | Path | None = None) -> Site:
    """Load and validate a site file (TOML); ``None`` gives the reference site."""
    p = Path(path) if path else DEFAULT_SITE_FILE
    try:
        text = p.read_text()
    except OSError as err:
        raise SiteError(f"cannot read site file {p}: {err.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SiteError(f"invalid site file {p}: TOML syntax: {err}") from None
    site = parse_site(data, str(p.resolve()))
    if not site.resolve(site.mount.pointing_model_file).is_file():
        raise SiteError(
            f"invalid site file {p}:\n  mount.pointing_model_file: "
            f"{site.resolve(site.mount.pointing_model_file)} does not exist"
        )
    return site


def write_site_variant(directory: str | Path, source: str | Path | None = None, *,
                       instrument_options: dict[str, dict[str, float | int | str | bool]] | None = None,
                       **values: float | str) -> Site:
    """A copy of a site file with some ``key = value`` lines changed, written to ``directory`` and loaded.

    IOC processes read their site from a file, so a site that differs from the reference one (a slower drive
    loop for a test, a what-if for a benchmark) is written out: ``write_site_variant(d, control_rate_hz=2)``.
    Each key must name exactly one line of the file (SiteError otherwise).  ``instrument_options`` merges
    options into instruments' ``options`` tables by device name (``{"RAD": {"avg": 4}}``; a device the file
    does not list is a SiteError).  The files next to the source (the pointing model) are copied along so
    that relative paths still hold.
    """
    src = Path(source) if source else DEFAULT_SITE_FILE
    text = src.read_text()
    for key, value in values.items():
        rendered = f'"{value}"' if isinstance(value, str) else repr(float(value))
        text, n = re.subn(rf"(?m)^{re.escape(key)}\s*=[^#\n]*", f"{key} = {rendered} ", text)
        if n != 1:
            raise SiteError(f"{src}: {n} lines set {key!r}; a variant needs exactly one")
    for dev, options in (instrument_options or {}).items():
        text = _with_options(text, dev, options, src)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for f in src.parent.iterdir():
        if f.is_file() and f.suffix != ".toml":
            shutil.copy2(f, out / f.name)
    (out / src.name).write_text(text)
    return load_site(out / src.name)


def _toml_value(value: float | int | str | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value) if isinstance(value, int) else repr(float(value))


def _with_options(text: str, dev: str, options: dict[str, float | int | str | bool], src: Path) -> str:
    """``text`` with ``options`` merged into the ``options`` table of the ``[[instruments]]`` entry of ``dev``."""
    blocks = re.split(r"(?m)^(?=\[)", text)  # one piece per table
    entries = [(i, tomllib.loads(b.replace("[[instruments]]", "", 1))) for i, b in enumerate(blocks)
               if b.startswith("[[instruments]]")]
    hits = [(i, entry) for i, entry in entries if entry.get("dev") == dev]
    if len(hits) != 1:
        raise SiteError(f"{src}: {len(hits)} instruments named {dev!r}; options need exactly one")
    i, entry = hits[0]
    merged = {**entry.get("options", {}), **options}
    line = "options = { " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in merged.items()) + " }\n"
    block = re.sub(r"(?m)^options\s*=.*\n", "", blocks[i])
    blocks[i] = re.sub(r"(?m)^(dev\s*=.*\n)", lambda m: m.group(1) + line, block, count=1)
    return "".join(blocks)
