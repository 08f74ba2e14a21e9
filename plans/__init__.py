"""Observing plans (bluesky): continuum, mapping, spectroscopy and pulsar plans, building blocks, observing-log
metadata and suspenders."""

from plans.continuum import cross_scan, drift_scan, pointing_check, sky_dip, stepping, tsys_cal
from plans.mapping import raster_map, sun_moon_map
from plans.metadata import OBS_CLASSES, ObsMeta, start_metadata
from plans.pulsar import pulsar_timing
from plans.spectral import spectroscopy
from plans.stubs import safe_state, with_safe_cleanup
from plans.suspenders import disconnect_suspenders, sun_suspender, wind_suspender

__all__ = ["OBS_CLASSES", "ObsMeta", "cross_scan", "disconnect_suspenders", "drift_scan", "pointing_check",
           "pulsar_timing", "raster_map", "safe_state", "sky_dip", "spectroscopy", "start_metadata", "stepping",
           "sun_moon_map", "sun_suspender", "tsys_cal", "wind_suspender", "with_safe_cleanup"]
