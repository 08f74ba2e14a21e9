"""The site's devices, dodal style: one factory per device, named after it, building PV names from the site.

``drive()`` builds the drive of the reference site; ``drive(site)`` the drive of another site;
``drive(prefix="T1")`` the drive of a site whose PV prefix is overridden.  ``all_devices()`` builds every
instrument listed in the site file (connected unless ``connect=False``) and returns them by name:

=============  ==============  ===============================================
 name           IOC kind        device class
=============  ==============  ===============================================
 station_time   time            :class:`devices.station_time.StationTime`
 drive          drive           :class:`devices.drive.Drive`
 radiometer     radiometer      :class:`devices.radiometer.Radiometer`
 instrumentation instrumentation :class:`devices.instrumentation.Instrumentation`
 correlator     correlator      :class:`devices.correlator.Correlator`
 pulsar_timer   pulsar_timer    :class:`devices.pulsar_timer.PulsarTimer`
 syn1, syn2     synthesizer     :class:`devices.synthesizer.Synthesizer`
 weather        weather         :class:`devices.weather.Weather`
 housekeeping   housekeeping    :class:`devices.housekeeping.Housekeeping`
 subreflector   subreflector    :class:`devices.subreflector.Subreflector`
=============  ==============  ===============================================

A kind present once is named after the kind; a kind present several times (the synthesizers) by the
lower-case device name.  The radiometer takes the observatory clock (``clock``; default: the one in
``OBSCTL_CLOCK`` when set) to anchor its integration windows.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ophyd import Device

from devices.correlator import Correlator
from devices.drive import Drive
from devices.housekeeping import Housekeeping
from devices.instrumentation import Instrumentation
from devices.pulsar_timer import PulsarTimer
from devices.radiometer import Radiometer
from devices.station_time import StationTime
from devices.subreflector import Subreflector
from devices.synthesizer import Synthesizer
from devices.weather import Weather
from obsctl.clock import ENV_VAR, ObservatoryClock
from obsctl.site import InstrumentConfig, Site, load_site

#: instrument kind -> device class
DEVICE_CLASSES: dict[str, type[Device]] = {
    "time": StationTime,
    "drive": Drive,
    "radiometer": Radiometer,
    "instrumentation": Instrumentation,
    "correlator": Correlator,
    "pulsar_timer": PulsarTimer,
    "synthesizer": Synthesizer,
    "weather": Weather,
    "housekeeping": Housekeeping,
    "subreflector": Subreflector,
}
#: instrument kind -> device name when the site has one instrument of that kind
KIND_NAMES = {"time": "station_time", "drive": "drive", "radiometer": "radiometer",
              "instrumentation": "instrumentation", "correlator": "correlator", "pulsar_timer": "pulsar_timer",
              "synthesizer": "synthesizer", "weather": "weather", "housekeeping": "housekeeping",
              "subreflector": "subreflector"}
CONNECT_TIMEOUT = 10.0  # s


def _site(site: Site | None, prefix: str | None) -> Site:
    s = site if site is not None else load_site()
    return s.with_overrides(pv_prefix=prefix) if prefix and prefix != s.pv_prefix else s


def default_clock() -> ObservatoryClock | None:
    """The observatory clock described by ``OBSCTL_CLOCK``, or None when it is not set."""
    return ObservatoryClock.from_env() if os.environ.get(ENV_VAR) else None


def device_name(site: Site, inst: InstrumentConfig) -> str:
    """Name of the device for an instrument (its kind, or its lower-case device name if the kind repeats)."""
    same_kind = [i for i in site.instruments if i.kind == inst.kind]
    return KIND_NAMES[inst.kind] if len(same_kind) == 1 else inst.dev.lower()


def make_device(site: Site, inst: InstrumentConfig, *, name: str | None = None,
                clock: ObservatoryClock | None = None, **kwargs: Any) -> Device:
    """The (unconnected) device of one instrument of ``site``."""
    cls = DEVICE_CLASSES[inst.kind]
    if cls is Radiometer:
        kwargs.setdefault("clock", clock if clock is not None else default_clock())
    return cls(prefix=site.pv(inst.dev, ""), name=name or device_name(site, inst), **kwargs)


def _one(kind: str, dev: str | None = None) -> Callable[..., Device]:
    def factory(site: Site | None = None, prefix: str | None = None, *, connect: bool = True,
                timeout: float = CONNECT_TIMEOUT, **kwargs: Any) -> Device:
        s = _site(site, prefix)
        matches = [i for i in s.instruments if i.kind == kind and (dev is None or i.dev == dev)]
        if not matches:
            raise KeyError(f"site {s.name!r} has no {dev or kind} instrument")
        inst = matches[0]
        device = make_device(s, inst, name=factory.__name__, **kwargs)
        if connect:
            device.wait_for_connection(timeout=timeout)
        return device

    factory.__name__ = factory.__qualname__ = dev.lower() if dev else KIND_NAMES[kind]
    factory.__doc__ = (f"The {dev or kind} device of ``site`` (the reference site if None); ``prefix`` overrides "
                       "the PV prefix.  Connected (within ``timeout`` s) unless ``connect=False``.")
    return factory


station_time = _one("time")
drive = _one("drive")
radiometer = _one("radiometer")
instrumentation = _one("instrumentation")
correlator = _one("correlator")
pulsar_timer = _one("pulsar_timer")
syn1 = _one("synthesizer", "SYN1")
syn2 = _one("synthesizer", "SYN2")
weather = _one("weather")
housekeeping = _one("housekeeping")
subreflector = _one("subreflector")


def all_devices(site: Site | None = None, prefix: str | None = None, connect: bool = True,
                timeout: float = CONNECT_TIMEOUT, clock: ObservatoryClock | None = None) -> dict[str, Device]:
    """Every instrument of the site as a device, by name (connected within ``timeout`` s if ``connect``).

    Raises TimeoutError naming the devices whose PVs did not connect.
    """
    s = _site(site, prefix)
    devices = {device_name(s, inst): make_device(s, inst, name=device_name(s, inst), clock=clock)
               for inst in s.instruments}
    if connect:
        failed = []
        for name, dev in devices.items():
            try:
                dev.wait_for_connection(timeout=timeout)
            except TimeoutError as err:
                failed.append(f"{name}: {err}")
        if failed:
            raise TimeoutError("devices did not connect:\n  " + "\n  ".join(failed))
    return devices
