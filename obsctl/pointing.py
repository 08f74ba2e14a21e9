"""Pointing model: HA/Dec offsets as a 2D function of UT hour and day of year.

The table (CSV) has rows ``axis,doy,<one column per UT hour>`` with column names ``utHH`` (or
``utHH.H``); values are corrections in degrees added to the apparent position to give the commanded
encoder position.  Interpolation is bilinear and periodic in both UT (24 h) and day of year (365.25 d).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np


class PointingModelError(ValueError):
    """A pointing table that cannot be used (the message names the file, row and reason)."""


def _periodic_interp(x: float, xs: np.ndarray, ys: np.ndarray, period: float) -> np.ndarray:
    """Linear interpolation of rows ``ys`` (len(xs) x n) at ``x`` with period ``period``."""
    xs_ext = np.concatenate([xs[-1:] - period, xs, xs[:1] + period])
    ys_ext = np.concatenate([ys[-1:], ys, ys[:1]])
    x = x % period
    i = int(np.searchsorted(xs_ext, x, side="right") - 1)
    i = min(max(i, 0), len(xs_ext) - 2)
    w = (x - xs_ext[i]) / (xs_ext[i + 1] - xs_ext[i])
    return ys_ext[i] * (1 - w) + ys_ext[i + 1] * w


@dataclass(frozen=True)
class PointingModel:
    """Offset grids (deg) on a UT-hour x day-of-year lattice."""

    ut_hours: np.ndarray
    days: np.ndarray
    ha: np.ndarray  # shape (len(days), len(ut_hours))
    dec: np.ndarray
    source: str = ""

    @classmethod
    def load(cls, path: str | Path) -> PointingModel:
        """Read a pointing table; raise :class:`PointingModelError` naming the problem."""
        path = Path(path)
        try:
            lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        except OSError as err:
            raise PointingModelError(f"pointing model {path}: {err.strerror}") from None
        reader = csv.reader(lines)
        header = next(reader, None)
        if not header or header[:2] != ["axis", "doy"] or len(header) < 3:
            raise PointingModelError(f"pointing model {path}: header must be 'axis,doy,utHH,...'")
        try:
            uts = np.array([float(h.strip().lower().removeprefix("ut")) for h in header[2:]])
        except ValueError:
            raise PointingModelError(f"pointing model {path}: UT columns must be named utHH") from None
        if np.any(np.diff(uts) <= 0) or uts[0] < 0 or uts[-1] >= 24:
            raise PointingModelError(f"pointing model {path}: UT hours must increase within [0, 24)")
        rows: dict[str, dict[float, list[float]]] = {"HA": {}, "DEC": {}}
        for n, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise PointingModelError(f"pointing model {path}: row {n} has {len(row)} fields, "
                                         f"expected {len(header)}")
            axis = row[0].strip().upper()
            if axis not in rows:
                raise PointingModelError(f"pointing model {path}: row {n}: axis must be HA or DEC")
            try:
                doy = float(row[1])
                vals = [float(v) for v in row[2:]]
            except ValueError:
                raise PointingModelError(f"pointing model {path}: row {n}: not a number") from None
            if not 1 <= doy <= 366:
                raise PointingModelError(f"pointing model {path}: row {n}: doy {doy} outside 1..366")
            if not all(np.isfinite(vals)) or max(abs(v) for v in vals) > 1.0:
                raise PointingModelError(f"pointing model {path}: row {n}: offsets must be finite and "
                                         "below 1 deg")
            rows[axis][doy] = vals
        if sorted(rows["HA"]) != sorted(rows["DEC"]) or not rows["HA"]:
            raise PointingModelError(f"pointing model {path}: HA and DEC need rows for the same days")
        days = np.array(sorted(rows["HA"]))
        return cls(uts, days, np.array([rows["HA"][d] for d in days]),
                   np.array([rows["DEC"][d] for d in days]), str(path))

    @classmethod
    def zero(cls) -> PointingModel:
        """A model with no corrections."""
        z = np.zeros((1, 1))
        return cls(np.array([0.0]), np.array([1.0]), z, z, "zero")

    def offsets(self, t: float) -> tuple[float, float]:
        """(HA, Dec) corrections (deg) at POSIX time ``t``."""
        d = datetime.fromtimestamp(t, tz=UTC)
        ut = d.hour + d.minute / 60 + d.second / 3600 + d.microsecond / 3.6e9
        doy = d.timetuple().tm_yday + ut / 24.0
        out = []
        for grid in (self.ha, self.dec):
            by_day = _periodic_interp(doy, self.days, grid, 365.25)
            out.append(float(_periodic_interp(ut, self.ut_hours, by_day[:, None], 24.0)[0]))
        return out[0], out[1]
