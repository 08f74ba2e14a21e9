"""Frequency-synthesizer behaviour: model limits, resolution, settling, and the HP-IB command syntax.

Two instruments are emulated:

* HP 8662A synthesized signal generator: 10 kHz..1280 MHz, resolution 0.1 Hz below 640 MHz and 0.2 Hz above,
  output -130..+13 dBm in 0.1 dB steps.  HP-IB codes ``FR <value> GZ|MZ|KZ|HZ`` (frequency) and
  ``AP <value> DM`` (amplitude in dBm), e.g. ``"FR 1420.405 MZ"``, ``"AP -10 DM"``, ``"FR10MZAP-5DM"``.
* HP 3336B synthesizer/level generator: 10 Hz..20.999999999 MHz in 1 uHz steps, output -72..+10 dBm in
  0.01 dB steps.  HP-IB codes ``FR <value> MH|KH|HZ`` and ``AM <value> DB`` (dBm), e.g. ``"FR10.7MH"``,
  ``"AM-20DB"``.

Spaces are ignored and letters may be lower case (as on the instruments); several codes may follow each other in
one string; a value may carry a decimal exponent (``1.4204E3MZ``).  A malformed string or an out-of-range value
raises :class:`CommandError` and changes nothing.  Frequencies are in Hz, levels in dBm, times in s.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field


class CommandError(ValueError):
    """An HP-IB command string the instrument would not accept (message says why)."""


def format_hz(freq_hz: float) -> str:
    """A frequency in the largest of Hz, kHz, MHz that keeps it >= 1, e.g. ``"1420.405 MHz"``."""
    for unit, scale in (("MHz", 1e6), ("kHz", 1e3)):
        if abs(freq_hz) >= scale:
            return f"{freq_hz / scale:.12g} {unit}"
    return f"{freq_hz:.12g} Hz"


@dataclass(frozen=True)
class SynthModel:
    """Limits and command syntax of one synthesizer model."""

    name: str
    f_min_hz: float
    f_max_hz: float
    p_min_dbm: float
    p_max_dbm: float
    p_res_db: float
    settle_s: float  # time to re-lock after a frequency change
    freq_code: str
    freq_units: dict[str, float] = field(default_factory=dict)  # unit code -> Hz
    amp_code: str = ""
    amp_unit: str = ""
    #: frequency resolution (Hz) below and from ``res_break_hz``
    res_low_hz: float = 0.1
    res_high_hz: float = 0.1
    res_break_hz: float = math.inf
    default_freq_hz: float = 100e6
    default_power_dbm: float = -10.0

    def resolution_hz(self, freq_hz: float) -> float:
        """Frequency step (Hz) at ``freq_hz``."""
        return self.res_low_hz if freq_hz < self.res_break_hz else self.res_high_hz

    def quantise_freq(self, freq_hz: float) -> float:
        """The frequency (Hz) the instrument actually synthesises for a request of ``freq_hz``."""
        res = self.resolution_hz(freq_hz)
        decimals = max(0, -math.floor(math.log10(res)))
        return round(round(freq_hz / res) * res, decimals)

    def quantise_power(self, power_dbm: float) -> float:
        """The output level (dBm) the attenuator and vernier deliver for a request of ``power_dbm``."""
        decimals = max(0, -math.floor(math.log10(self.p_res_db)))
        return round(round(power_dbm / self.p_res_db) * self.p_res_db, decimals)

    def check_freq(self, freq_hz: float) -> None:
        """CommandError unless ``freq_hz`` is a finite frequency within the model's range."""
        if not math.isfinite(freq_hz) or not self.f_min_hz <= freq_hz <= self.f_max_hz:
            raise CommandError(f"{format_hz(freq_hz)} outside {format_hz(self.f_min_hz)}..{format_hz(self.f_max_hz)}")

    def check_power(self, power_dbm: float) -> None:
        """CommandError unless ``power_dbm`` is within the output range."""
        if not math.isfinite(power_dbm) or not self.p_min_dbm <= power_dbm <= self.p_max_dbm:
            raise CommandError(f"{power_dbm:g} dBm outside {self.p_min_dbm:g}..{self.p_max_dbm:g} dBm")


MODELS: dict[str, SynthModel] = {
    "HP8662A": SynthModel(
        name="HP8662A", f_min_hz=10e3, f_max_hz=1280e6, p_min_dbm=-130.0, p_max_dbm=13.0, p_res_db=0.1,
        settle_s=5e-3, freq_code="FR", freq_units={"GZ": 1e9, "MZ": 1e6, "KZ": 1e3, "HZ": 1.0},
        amp_code="AP", amp_unit="DM", res_low_hz=0.1, res_high_hz=0.2, res_break_hz=640e6,
        default_freq_hz=100e6, default_power_dbm=-10.0),
    "HP3336B": SynthModel(
        name="HP3336B", f_min_hz=10.0, f_max_hz=20_999_999.999, p_min_dbm=-72.0, p_max_dbm=10.0, p_res_db=0.01,
        settle_s=10e-3, freq_code="FR", freq_units={"MH": 1e6, "KH": 1e3, "HZ": 1.0},
        amp_code="AM", amp_unit="DB", res_low_hz=1e-6, res_high_hz=1e-6,
        default_freq_hz=10e6, default_power_dbm=0.0),
}

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:E[+-]?\d+)?")


def parse_command(model: SynthModel, text: str) -> dict[str, float]:
    """Parse an HP-IB program string for ``model``.

    Returns ``{"freq_hz": ..., "power_dbm": ...}`` with the keys the string set (the last code of a kind
    wins).  Raises :class:`CommandError` for an empty or malformed string, an unknown code or unit, or an
    out-of-range value.
    """
    s = "".join(str(text).split()).upper()
    if not s:
        raise CommandError("empty command")
    out: dict[str, float] = {}
    pos = 0
    while pos < len(s):
        code = s[pos:pos + 2]
        if code == model.freq_code:
            units, key = model.freq_units, "freq_hz"
        elif code == model.amp_code:
            units, key = {model.amp_unit: 1.0}, "power_dbm"
        else:
            raise CommandError(f"unknown code {code!r} at {pos + 1} (use {model.freq_code}, {model.amp_code})")
        m = _NUMBER.match(s, pos + 2)
        if m is None:
            raise CommandError(f"{code} needs a number at {pos + 3}")
        unit = s[m.end():m.end() + 2]
        if unit not in units:
            raise CommandError(f"{code}: unit {unit or 'missing'!r}, use {'/'.join(units)}")
        value = float(m.group()) * units[unit]
        (model.check_freq if key == "freq_hz" else model.check_power)(value)
        out[key] = value
        pos = m.end() + 2
    return out


def format_command(model: SynthModel, freq_hz: float | None = None, power_dbm: float | None = None) -> str:
    """The HP-IB string setting ``freq_hz`` and/or ``power_dbm`` on ``model`` (in MHz and dBm)."""
    parts = []
    mhz_unit = next(u for u, f in model.freq_units.items() if f == 1e6)
    if freq_hz is not None:
        parts.append(f"{model.freq_code}{freq_hz / 1e6:.12g}{mhz_unit}")
    if power_dbm is not None:
        parts.append(f"{model.amp_code}{power_dbm:g}{model.amp_unit}")
    return "".join(parts)
