"""Observing plans (bluesky): continuum plans, building blocks, observing-log metadata and suspenders."""

from plans.continuum import cross_scan, drift_scan, pointing_check, sky_dip, stepping, tsys_cal
from plans.metadata import OBS_CLASSES, ObsMeta, start_metadata
from plans.stubs import safe_state, with_safe_cleanup
from plans.suspenders import disconnect_suspenders, sun_suspender, wind_suspender

__all__ = ["OBS_CLASSES", "ObsMeta", "cross_scan", "disconnect_suspenders", "drift_scan", "pointing_check",
           "safe_state", "sky_dip", "start_metadata", "stepping", "sun_suspender", "tsys_cal", "wind_suspender",
           "with_safe_cleanup"]
