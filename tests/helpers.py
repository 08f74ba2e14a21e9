"""Client helpers for tests: reads with pyepics, writes that surface server-side rejections."""

from __future__ import annotations

import sys
import threading
from typing import Any

import epics
from caproto import CaprotoError, ErrorResponseReceived
from caproto.sync.client import write as _sync_write

from obsctl import launcher


def get(name: str, **kw: Any) -> Any:
    """pyepics caget of the current value (not a cached monitor); fails loudly if not connected."""
    kw.setdefault("use_monitor", False)
    value = epics.caget(name, timeout=5.0, **kw)
    if value is None:
        raise AssertionError(f"caget {name} returned nothing (not connected?)")
    return value


def put(name: str, value: Any, wait: bool = True) -> None:
    """pyepics caput (completion waited for)."""
    epics.caput(name, value, wait=wait, timeout=10.0)


def put_rejected(name: str, value: Any) -> str | None:
    """Write with a put-callback; return the server's error text if the put failed, else None.

    pyepics reports success even for ECA_PUTFAIL, so rejections are checked with caproto's client.  That
    client searches from a new UDP socket for every write, bound to port 0 with SO_REUSEADDR; Linux may give
    such a socket a port another SO_REUSEADDR socket on the host already holds (3000 sockets bound that way
    got 2849 distinct ports), and the answer to the search then goes to the other socket: the search times
    out after 5 s.  That, or a circuit closed before its channel was made (seen once, cause unknown), is
    reported on stderr and the write made once more, from a new socket.
    """
    for attempt in (1, 2):
        try:
            _sync_write(name, value, notify=True, timeout=5.0, repeater=False)
        except ErrorResponseReceived as err:
            return str(err) or "rejected"
        except (ValueError, TypeError) as err:  # the client could not even encode it (wrong type)
            return f"client refused: {err}"
        except CaprotoError as err:  # no channel: search timed out, or the circuit closed while connecting
            if attempt == 2:
                raise
            print(f"put_rejected({name}, {value!r}): {type(err).__name__}: {err}; writing again", file=sys.stderr)
        else:
            return None
    return None


def severity(name: str) -> int:
    """Alarm severity of a PV (0 none, 1 minor, 2 major), fresh read."""
    md = epics.get_pv(name, connect=True, timeout=5.0).get_with_metadata(use_monitor=False, form="time",
                                                                         timeout=5.0)
    return int(md["severity"])


def check_pv_metadata(obs, dev: str) -> list[str]:
    """Every PV the IOC ``dev`` serves: readable, with a DESC, and with EGU if numeric; returns the names."""
    prefix = obs.pv(dev, "")
    names = [n for n in launcher.served_pvs(obs.state_dir) if n.startswith(prefix)]
    assert len(names) > 5, names
    for name in names:
        pv = epics.get_pv(name, connect=True, timeout=5.0)
        assert pv.connected, name
        assert get(name, as_string=True) is not None
        desc = get(name + ".DESC")
        assert isinstance(desc, str) and len(desc) > 3, f"{name} has no DESC"
        if epics.ca.field_type(pv.chid) not in (epics.dbr.ENUM, epics.dbr.STRING, epics.dbr.CHAR):
            assert get(name + ".EGU"), f"{name} has no EGU"
    return names


class Recorder:
    """Monitor several PVs and keep (timestamp, value) of every update."""

    def __init__(self, names: list[str]):
        self.data: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
        self.lock = threading.Lock()
        self.pvs = [epics.PV(n, callback=self._cb, form="time", auto_monitor=True) for n in names]
        for pv in self.pvs:
            assert pv.wait_for_connection(5.0), pv.pvname

    def _cb(self, pvname=None, value=None, timestamp=None, **_):
        with self.lock:
            self.data[pvname].append((float(timestamp), float(value)))

    def stop(self) -> None:
        for pv in self.pvs:
            pv.clear_callbacks()
            pv.disconnect()


def flaky_signal(name: str = "flaky") -> Any:
    """An ophyd Signal whose connection the test switches: ``sig.set_connected(False)`` reports a disconnection
    to its meta subscribers (as an IOC that stops answering does), ``set_connected(True)`` the reconnection."""
    from ophyd import Signal

    class FlakySignal(Signal):
        up = True

        @property
        def connected(self) -> bool:
            return self.up

        def set_connected(self, up: bool) -> None:
            self.up = up
            self._run_subs(sub_type=self.SUB_META, connected=up)

    return FlakySignal(name=name, value=0)
