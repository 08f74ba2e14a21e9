"""Observing-log metadata of a run: who observes what, why, with which receiver.

:class:`ObsMeta` holds the observing-log fields and validates them (a bad value raises ``ValueError`` naming the
field).  :func:`start_metadata` builds the start-document dictionary of a plan from it: the log fields at the
top level (``project``, ``proposal``, ``pi``, ``observer``, ``obs_number``, ``obs_type``, ``obs_class``,
``source``, ``ra_deg``, ``dec_deg``, ``receiver``, ``freq_mhz``), ``plan_name``, ``plan_args`` (the requested
parameters, as plain values) and ``requested`` (requested scan parameters with units in the key names).

Achieved parameters (what the telescope really did: times, positions, sample counts, lost samples, fitted
results) cannot be known when the start document is emitted, so every plan records them at its end as one
event in the stream ``achieved`` (see :func:`plans.stubs.record`), with units in the data keys; the start
document names that stream under ``achieved_stream``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

#: classes of observation of the observing log
OBS_CLASSES = ("ROP", "thesis", "student", "commissioning", "maintenance", "test", "DDT", "VLBI", "survey")
LOG_KEYS = ("project", "proposal", "pi", "observer", "obs_number", "obs_type", "obs_class", "source", "ra_deg",
            "dec_deg", "receiver", "freq_mhz")
ACHIEVED_STREAM = "achieved"


@dataclass(frozen=True)
class ObsMeta:
    """Observing-log fields of one observation.

    Parameters
    ----------
    project, proposal, pi, observer : free text (project name, proposal number, principal investigator,
        observer); ``project`` must not be empty.
    obs_number : observation number (integer >= 0).
    obs_type : type of observation (the plans set their own name when it is empty).
    obs_class : one of :data:`OBS_CLASSES` (ROP = regular observing programme).
    source : source name; ``ra_deg`` (0..360) and ``dec_deg`` (-90..90) its ICRS J2000 position (deg); the
        plans fill them from the catalog when left as None.
    receiver, freq_mhz : receiver name and observing frequency (MHz, > 0); filled by the plans.
    """

    project: str = "obsctl"
    proposal: str = ""
    pi: str = ""
    observer: str = ""
    obs_number: int = 0
    obs_type: str = ""
    obs_class: str = "test"
    source: str = ""
    ra_deg: float | None = None
    dec_deg: float | None = None
    receiver: str = ""
    freq_mhz: float | None = None

    def __post_init__(self) -> None:
        for key in ("project", "proposal", "pi", "observer", "obs_type", "source", "receiver"):
            if not isinstance(getattr(self, key), str):
                raise ValueError(f"{key} must be text, got {getattr(self, key)!r}")
        if not self.project.strip():
            raise ValueError("project must not be empty")
        if isinstance(self.obs_number, bool) or not isinstance(self.obs_number, int) or self.obs_number < 0:
            raise ValueError(f"obs_number must be an integer >= 0, got {self.obs_number!r}")
        if self.obs_class not in OBS_CLASSES:
            raise ValueError(f"obs_class {self.obs_class!r} is not one of {', '.join(OBS_CLASSES)}")
        for key, lo, hi in (("ra_deg", 0.0, 360.0), ("dec_deg", -90.0, 90.0), ("freq_mhz", 0.0, math.inf)):
            v = getattr(self, key)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{key} must be a finite number, got {v!r}")
            if not (lo <= v <= hi) or (key == "freq_mhz" and v <= 0) or (key == "ra_deg" and v >= 360.0):
                raise ValueError(f"{key} = {v!r} is outside {lo:g}..{hi:g}")

    def filled(self, **values: Any) -> ObsMeta:
        """A copy with empty fields (``""`` or None) set from ``values`` (given fields are kept)."""
        new = {k: v for k, v in values.items() if getattr(self, k) in ("", None) and v is not None}
        return replace(self, **new)

    def as_dict(self) -> dict[str, Any]:
        """The observing-log fields as a plain dictionary (None fields left out)."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def _plain(value: Any) -> Any:
    """A document-safe form of a plan argument (devices by name, other objects by repr)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "name") and isinstance(value.name, str):
        return value.name
    return repr(value)


def start_metadata(plan_name: str, plan_args: dict[str, Any], meta: ObsMeta,
                   requested: dict[str, Any] | None = None, md: dict[str, Any] | None = None) -> dict[str, Any]:
    """The start-document metadata of a plan: log fields, plan name/args, requested parameters, ``md``."""
    out: dict[str, Any] = {**meta.filled(obs_type=plan_name).as_dict(), "plan_name": plan_name,
                           "plan_args": _plain(plan_args), "achieved_stream": ACHIEVED_STREAM}
    if requested:
        out["requested"] = _plain(requested)
    out.update(md or {})
    return out
