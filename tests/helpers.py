"""Client helpers for tests: reads with pyepics, writes that surface server-side rejections."""

from __future__ import annotations

from typing import Any

import epics
from caproto import ErrorResponseReceived
from caproto.sync.client import write as _sync_write


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

    pyepics reports success even for ECA_PUTFAIL, so rejections are checked with caproto's client.
    """
    try:
        _sync_write(name, value, notify=True, timeout=5.0, repeater=False)
    except ErrorResponseReceived as err:
        return str(err) or "rejected"
    except (ValueError, TypeError) as err:  # the client could not even encode it (wrong type)
        return f"client refused: {err}"
    return None
