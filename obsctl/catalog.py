"""Source catalogs: continuum calibrators, pulsars, masers and spectral lines.

The CSV files (ICRS J2000 coordinates) live in ``obsctl/data`` (or the site's ``catalog_dir``); the
simulator and the analysis read the same numbers from here.  Names are matched case-insensitively and
ignoring spaces, dashes and underscores, so ``"pks 1934-638"`` finds ``PKS1934-638``.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

from astropy.coordinates import SkyCoord

from obsctl.astro import parse_radec
from obsctl.site import DATA_DIR


def normalize(name: str) -> str:
    """Catalog lookup key: lower case without spaces, dashes, underscores or '+'."""
    return re.sub(r"[\s_\-+]", "", name).lower()


@dataclass(frozen=True)
class Source:
    """A catalog entry. Flux densities in Jy, sizes in arcmin, velocities in km/s, periods in s."""

    name: str
    kind: str  # "calibrator" | "pulsar" | "maser"
    ra_deg: float
    dec_deg: float
    s_1400_jy: float = 0.0
    alpha: float = 0.0
    size_arcmin: float = 0.0
    # pulsars
    period_s: float = 0.0
    pdot: float = 0.0
    epoch_mjd: float = 0.0
    dm: float = 0.0
    duty: float = 0.0
    # masers / lines
    line: str = ""
    vlsr_kms: float = 0.0
    peak_jy: float = 0.0
    width_kms: float = 0.0
    note: str = ""

    @cached_property
    def coord(self) -> SkyCoord:
        """ICRS coordinate."""
        return parse_radec(self.ra_deg, self.dec_deg)

    def flux_jy(self, freq_mhz: float) -> float:
        """Continuum flux density (Jy) at ``freq_mhz``: S1400 (nu/1400)^alpha."""
        return self.s_1400_jy * (freq_mhz / 1400.0) ** self.alpha

    def period_at(self, mjd: float) -> float:
        """Intrinsic (barycentric) pulsar period (s) at ``mjd``, spun down from the epoch."""
        return self.period_s + self.pdot * (mjd - self.epoch_mjd) * 86400.0


class Catalog:
    """All catalog sources and spectral lines of one directory."""

    def __init__(self, directory: str | Path = DATA_DIR):
        self.directory = Path(directory)
        self.sources: dict[str, Source] = {}
        self.lines: dict[str, float] = {}
        self._load()

    def _rows(self, fname: str) -> list[dict[str, str]]:
        path = self.directory / fname
        try:
            with path.open(newline="") as fh:
                return list(csv.DictReader(fh))
        except OSError as err:
            raise FileNotFoundError(f"catalog file {path}: {err.strerror}") from None

    def _add(self, src: Source) -> None:
        self.sources[normalize(src.name)] = src

    def _load(self) -> None:
        for r in self._rows("calibrators.csv"):
            c = parse_radec(r["ra_hms"], r["dec_dms"])
            self._add(Source(r["name"], "calibrator", c.ra.deg, c.dec.deg, float(r["s_1400_jy"]),
                             float(r["alpha"]), float(r["size_arcmin"]), note=r.get("note", "")))
        for r in self._rows("pulsars.csv"):
            c = parse_radec(r["ra_hms"], r["dec_dms"])
            self._add(Source(r["name"], "pulsar", c.ra.deg, c.dec.deg, float(r["s_1400_mjy"]) / 1000.0,
                             -1.6, 0.0, period_s=float(r["period_s"]), pdot=float(r["pdot"]),
                             epoch_mjd=float(r["epoch_mjd"]), dm=float(r["dm"]), duty=float(r["duty"])))
        for r in self._rows("masers.csv"):
            c = parse_radec(r["ra_hms"], r["dec_dms"])
            self._add(Source(r["name"], "maser", c.ra.deg, c.dec.deg, line=r["line"],
                             vlsr_kms=float(r["vlsr_kms"]), peak_jy=float(r["peak_jy"]),
                             width_kms=float(r["width_kms"])))
        for r in self._rows("lines.csv"):
            self.lines[r["name"]] = float(r["rest_mhz"])

    def get(self, name: str) -> Source:
        """The source called ``name``; KeyError listing the catalog otherwise."""
        try:
            return self.sources[normalize(name)]
        except KeyError:
            known = ", ".join(s.name for s in self.sources.values())
            raise KeyError(f"unknown source {name!r}; catalog has: {known}") from None

    def of_kind(self, kind: str) -> list[Source]:
        """All sources of one kind ('calibrator', 'pulsar', 'maser')."""
        return [s for s in self.sources.values() if s.kind == kind]

    def line_rest_mhz(self, line: str) -> float:
        """Rest frequency (MHz) of a named line."""
        try:
            return self.lines[line]
        except KeyError:
            raise KeyError(f"unknown line {line!r}; known: {', '.join(self.lines)}") from None


@lru_cache(maxsize=4)
def load_catalog(directory: str | Path = DATA_DIR) -> Catalog:
    """The (cached) catalog of a directory."""
    return Catalog(directory)
