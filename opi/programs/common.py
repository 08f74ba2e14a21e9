"""What every NCCS test program shares: arguments, the connection to the running observatory, the live
display and the exit codes.

A program module ``opi/programs/<name>.py`` has ``main(argv) -> int`` and is written like this::

    from opi.programs import common

    def build_parser() -> common.ProgramParser:
        p = common.make_parser("thum", "THUM: outside temperature and humidity ...",
                               examples=["obsctl thum", "obsctl thum --count 3 --json"], interval=1.0)
        return p

    def run(args) -> int:
        obs = common.connect(args, needs=["WX"])          # exit 1 with a clear line if not running
        wx = obs.device("weather")                        # connected ophyd device
        common.refresh_loop(args, read, render=..., line=..., record=...)   # Ctrl-C: exit 0
        return 0

    def main(argv=None) -> int:
        return common.run_main("thum", build_parser(), argv, run)

Exit codes: 0 done (also after Ctrl-C: the terminal is restored and ``stopped`` is printed on stderr),
1 failure (observatory not running, an IOC not answering, a command refused: the IOC's reason),
2 bad arguments.  Failures and bad arguments print one line ``obsctl <name>: <reason>`` on stderr.

Output modes of :func:`refresh_loop`: ``--json`` prints one JSON object per refresh (NaN as null); on a
terminal a rich table refreshes in place; otherwise (a pipe, a file) one plain text line per refresh.
Intervals are real seconds; times in the records are observatory time (POSIX s, UTC).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from obsctl import launcher
from obsctl.clock import ObservatoryClock
from obsctl.site import Site

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
#: real s for a device's PVs to connect (``OBSCTL_CONNECT_TIMEOUT`` overrides it on a slow machine)
CONNECT_TIMEOUT = float(os.environ.get("OBSCTL_CONNECT_TIMEOUT", "") or 30.0)
RETRY_S = 30.0  # real s a refresh keeps trying to read through Channel Access failures before giving up


# ---- errors ------------------------------------------------------------------------------------
class ProgramError(Exception):
    """A failure shown as ``obsctl <name>: <message>`` on stderr, with exit code ``code`` (default 1)."""

    def __init__(self, message: str, code: int = EXIT_FAIL):
        super().__init__(message)
        self.code = code


class UsageError(ProgramError):
    """Bad arguments: exit code 2."""

    def __init__(self, message: str):
        super().__init__(message, EXIT_USAGE)


# ---- arguments ---------------------------------------------------------------------------------
class ProgramParser(argparse.ArgumentParser):
    """An argument parser whose errors raise :class:`UsageError` (one line, exit 2) instead of printing usage."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def make_parser(name: str, description: str, examples: Sequence[str] = (), *, interval: float | None = None,
                count: bool = True, json_output: bool = True, count_help: str | None = None) -> ProgramParser:
    """The parser of ``obsctl <name>`` with the common options.

    Parameters
    ----------
    name : str
        Program name (lower case), used in ``prog`` and in error messages.
    description : str
        What the program does (shown by ``--help``; keep the line breaks).
    examples : sequence of str
        Example command lines, shown under "examples" at the end of ``--help``.
    interval : float or None
        Default refresh interval (real s) of ``--interval``; None leaves the option out.
    count : bool
        Add ``--count N`` (N refreshes, then exit; default: until Ctrl-C).
    json_output : bool
        Add ``--json`` (one JSON object per line).
    """
    epilog = ""
    if examples:
        epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples)
    p = ProgramParser(prog=f"obsctl {name}", description=description, epilog=epilog,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--state-dir", default=os.environ.get("OBSCTL_STATE_DIR"), metavar="DIR",
                   help="state directory of the running observatory (default: $OBSCTL_STATE_DIR or "
                        "~/.local/state/obsctl)")
    if count:
        p.add_argument("--count", type=int, default=None, metavar="N",
                       help=count_help or "N refreshes, then exit (default: until Ctrl-C)")
    if interval is not None:
        p.add_argument("--interval", type=float, default=interval, metavar="S",
                       help=f"real seconds between refreshes (default {interval:g})")
    if json_output:
        p.add_argument("--json", action="store_true", help="one JSON object per refresh (machine-readable)")
    return p


def finite_float(text: str) -> float:
    """argparse type: a finite number (``--rate-ha 0.1``)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return v


def check_common(args: argparse.Namespace) -> None:
    """Validate ``--count`` and ``--interval`` (UsageError naming the bad one)."""
    count = getattr(args, "count", None)
    if count is not None and count < 1:
        raise UsageError(f"--count {count}: must be at least 1")
    interval = getattr(args, "interval", None)
    if interval is not None and not (math.isfinite(interval) and interval > 0):
        raise UsageError(f"--interval {interval}: must be a positive number of seconds")


def allow_negative_values(parser: argparse.ArgumentParser) -> None:
    """Let values such as ``-25.5`` or ``-1:30:00`` follow an option instead of being taken for options."""
    import re

    parser._negative_number_matcher = re.compile(r"^-\.?\d")  # noqa: SLF001  (argparse has no public hook)


# ---- running a program -------------------------------------------------------------------------
def say_error(name: str, message: str) -> None:
    """Print ``obsctl <name>: <message>`` (first line only) on stderr."""
    text = " ".join(str(message).split("\n")[0].split()) or "failed"
    print(f"obsctl {name}: {text}", file=sys.stderr, flush=True)


def run_main(name: str, parser: argparse.ArgumentParser, argv: Sequence[str] | None,
             body: Callable[[argparse.Namespace], int | None]) -> int:
    """Parse ``argv``, run ``body(args)`` and turn its outcome into an exit code (see the module doc)."""
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
        check_common(args)
    except UsageError as err:
        say_error(name, str(err))
        return EXIT_USAGE
    except SystemExit as err:  # --help
        return int(err.code or 0) if isinstance(err.code, int) else EXIT_USAGE
    except KeyboardInterrupt:
        return _stopped()
    try:
        return _run_body(name, body, args)
    except KeyboardInterrupt:  # a second Ctrl-C while reporting
        return _stopped()


def _run_body(name: str, body: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    try:
        return _run_reported(name, body, args)
    finally:
        release_devices()


def _run_reported(name: str, body: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    quiet_client_logs()
    try:
        return int(body(args) or 0)
    except KeyboardInterrupt:
        return _stopped()
    except ProgramError as err:
        say_error(name, str(err))
        return err.code
    except launcher.LauncherError as err:
        say_error(name, f"observatory not running: {err}")
        return EXIT_FAIL
    except TimeoutError as err:
        say_error(name, f"no answer: {err}")
        return EXIT_FAIL
    except BrokenPipeError:  # output piped into a program that exited (head -1)
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (silence the flush at exit)
        except OSError:
            pass
        return EXIT_OK
    except Exception as err:  # noqa: BLE001  (re-raised unless it is a known device or Channel Access failure)
        if isinstance(err, _client_errors()):
            say_error(name, str(err) if "devices" in type(err).__module__ else
                      f"Channel Access failed (IOC gone or restarting?): {err}")
            return EXIT_FAIL
        raise


def _ca_errors() -> list[type[BaseException]]:
    eca = sys.modules.get("epics.ca")  # only if imported: paths that never reached a device stay cheap
    return [eca.ChannelAccessException, eca.ChannelAccessGetFailure] if eca is not None else []


def transient_errors() -> tuple[type[BaseException], ...]:
    """Channel Access failures that may pass (an IOC busy or restarting): a read is tried again."""
    err = sys.modules.get("ophyd.utils.errors")
    return (TimeoutError, *_ca_errors(), *([err.DisconnectedError] if err is not None else []))


def _client_errors() -> tuple[type[BaseException], ...]:
    """Failures of the device layer (a refused command, a drive that stopped) and of Channel Access."""
    dev = sys.modules.get("devices.common")
    return (*([dev.CommandRefused, dev.DeviceFault] if dev is not None else []), *_ca_errors())


def quiet_client_logs() -> None:
    """Keep ophyd's connection-callback log records (e.g. channels torn down while the process exits) off
    the terminal: the program reports what matters itself."""
    for name in ("ophyd", "ophyd.objects", "ophyd.signal"):
        lg = logging.getLogger(name)
        if not any(isinstance(h, logging.NullHandler) for h in lg.handlers):
            lg.addHandler(logging.NullHandler())
        lg.propagate = False
    warnings.filterwarnings("ignore", message=r"ca\.get\(.*\) timed out", category=UserWarning)


_OPEN: list[Observatory] = []


def release_devices() -> None:
    """Stop the drive heartbeats and disconnect every device the program made (before the process exits, so
    that no client thread still uses Channel Access while libca shuts down)."""
    while _OPEN:
        obs = _OPEN.pop()
        for dev in list(obs._devices.values()):  # noqa: SLF001  (our own registry)
            if hasattr(dev, "stop_heartbeat"):
                dev.stop_heartbeat()
            try:
                dev.destroy()
            except Exception:  # noqa: BLE001  (tearing down at exit must not mask the program's exit code)
                pass
        obs._devices.clear()  # noqa: SLF001


def _stopped() -> int:
    try:
        print("stopped", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass
    return EXIT_OK


# ---- the running observatory -------------------------------------------------------------------
@dataclass
class Observatory:
    """The observatory a program talks to: its state, the running site and the observatory clock.

    ``site`` is the site file with the running PV prefix and only the instruments whose IOCs run;
    ``full_site`` lists every instrument of the site file.
    """

    state_dir: Path
    state: launcher.ObservatoryState
    site: Site
    full_site: Site
    clock: ObservatoryClock
    _devices: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def running(self) -> list[str]:
        """Device names (DRV, TIME, ...) of the running IOCs."""
        return [d for p in self.state.processes for d in p.devs]

    def has(self, dev: str) -> bool:
        """Whether the IOC ``dev`` (e.g. "WX") runs."""
        return dev.upper() in self.running

    def require(self, *devs: str) -> None:
        """ProgramError naming the IOCs of ``devs`` that do not run."""
        missing = [d.upper() for d in devs if not self.has(d)]
        if missing:
            raise ProgramError(f"the running observatory has no {', '.join(missing)} IOC (it runs "
                               f"{', '.join(self.running)}); start it with e.g. 'obsctl up --only "
                               f"{','.join(sorted(set(self.running) | set(missing)))}'")

    def pv(self, dev: str, signal: str) -> str:
        """Full PV name ``PREFIX:DEV:SIGNAL``."""
        return self.site.pv(dev.upper(), signal)

    def now(self) -> float:
        """Observatory time now (POSIX s, UTC)."""
        return self.clock.now()

    def device(self, name: str, *, heartbeat: bool = False, timeout: float | None = None,
               signals: Sequence[str] | None = None) -> Any:
        """The connected ophyd device ``name`` ("drive", "weather", "station_time", "radiometer", ...).

        ``signals`` (component names, e.g. ``["pos_pkt", "state", "off_dec"]``) connects only those (see
        :func:`lean_class`): a program that reads a few PVs of a big device neither waits for the rest
        nor loads the IOC with their monitor updates (the drive publishes some 30 PVs 20 times a second).
        The drive's heartbeat (which keeps a moving drive alive against its watchdog) runs only with
        ``heartbeat=True``: programs that command the drive set it, read-only programs must not, so that
        they never keep a drive moving for a client that has gone.
        """
        if name in self._devices:
            return self._devices[name]
        import inspect  # noqa: PLC0415

        from devices.registry import DEVICE_CLASSES, device_name  # noqa: PLC0415

        timeout = CONNECT_TIMEOUT if timeout is None else timeout
        inst = next((i for i in self.site.instruments if device_name(self.site, i) == name), None)
        if inst is None:
            known = next((i.dev for i in self.full_site.instruments if device_name(self.full_site, i) == name),
                         None)
            if known:
                self.require(known)
            raise ProgramError(f"the site has no device {name!r}")
        cls = DEVICE_CLASSES[inst.kind]
        if signals is not None:
            cls = lean_class(cls, tuple(sorted({s.split(".")[0] for s in signals})))
        kwargs = {"clock": self.clock} if "clock" in inspect.signature(cls.__init__).parameters else {}
        dev = cls(prefix=self.site.pv(inst.dev, ""), name=name, **kwargs)
        if not heartbeat and hasattr(dev, "stop_heartbeat"):
            dev.stop_heartbeat()
        try:
            dev.wait_for_connection(timeout=timeout)
        except TimeoutError:
            raise ProgramError(f"{inst.dev} IOC ({self.site.pv(inst.dev, '')}*) did not answer within "
                               f"{timeout:g} s; is the observatory up? (obsctl status)") from None
        self._devices[name] = dev
        return dev


#: components a device's own constructor uses: never made lazy
_CONSTRUCTOR_NEEDS = ("heartbeat", "blk")


@functools.lru_cache(maxsize=32)
def lean_class(cls: type, keep: tuple[str, ...]) -> type:
    """A subclass of the device class ``cls`` whose components outside ``keep`` are lazy (ophyd): they are
    made, and connected, only if the program touches them.  Unknown names in ``keep`` are ignored."""
    import copy  # noqa: PLC0415

    wanted = set(keep) | set(_CONSTRUCTOR_NEEDS)
    namespace = {}
    for attr, cpt in cls._sig_attrs.items():  # noqa: SLF001  (ophyd's component registry)
        if attr in wanted or cpt.lazy:
            continue
        lazy = copy.copy(cpt)
        lazy.lazy = True
        namespace[attr] = lazy

    def _repr_info(self: Any) -> Iterable[tuple[str, Any]]:  # ophyd's lists every component: keep lazy ones lazy
        yield ("prefix", self.prefix)
        yield ("name", self.name)

    namespace["_repr_info"] = _repr_info
    return type(f"{cls.__name__}Lean", (cls,), namespace)


def connect(args: argparse.Namespace | str | Path | None, needs: Iterable[str] = ()) -> Observatory:
    """Attach to the observatory started from the state directory (``args.state_dir``, a path, or default).

    Sets this process's Channel Access environment (before anything touches a PV).  Raises ProgramError
    (exit 1) with a clear line when nothing runs there, the supervisor has gone, or an IOC of ``needs``
    (e.g. ``["DRV", "TIME"]``) is not part of the running observatory.
    """
    from obsctl import ca  # noqa: PLC0415
    from obsctl.site import load_site  # noqa: PLC0415

    raw = getattr(args, "state_dir", args) if isinstance(args, argparse.Namespace) else args
    state_dir = Path(raw) if raw else launcher.default_state_dir()
    try:
        state = launcher.ObservatoryState.load(state_dir)
    except launcher.LauncherError as err:
        raise ProgramError(f"observatory not running: {err}; start it with 'obsctl up'") from None
    if not launcher.pid_alive(state.supervisor_pid):
        raise ProgramError(f"observatory not running: its supervisor (pid {state.supervisor_pid}) in {state_dir} "
                           "has gone; start it with 'obsctl up'")
    try:
        env = launcher.client_env(state_dir, state)
    except launcher.LauncherError as err:
        raise ProgramError(str(err)) from None
    ca.use_env(env)
    os.environ.setdefault("EPICS_CA_MAX_ARRAY_BYTES", "10000000")
    full = load_site(state.site_file or None)
    running = {d for p in state.processes for d in p.devs}
    site = full.with_overrides(pv_prefix=state.prefix,
                               instruments=[i.model_dump() for i in full.instruments if i.dev in running])
    full = full.with_overrides(pv_prefix=state.prefix)
    obs = Observatory(state_dir, state, site, full, ObservatoryClock.from_env({"OBSCTL_CLOCK": env["OBSCTL_CLOCK"]}))
    obs.require(*needs)
    _OPEN.append(obs)
    return obs


# ---- output ------------------------------------------------------------------------------------
def clean(value: Any) -> Any:
    """A value fit for strict JSON: NaN/inf -> None, numpy scalars -> Python, containers recursively."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (ValueError, TypeError):
            value = value.tolist()
            return clean(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_line(record: dict[str, Any]) -> str:
    """One record as a line of strict JSON."""
    return json.dumps(clean(record), allow_nan=False)


def note(args: argparse.Namespace, text: str) -> None:
    """A message for the user: on stdout, or on stderr with ``--json`` (stdout then holds only JSON lines)."""
    print(text, file=sys.stderr if getattr(args, "json", False) else sys.stdout, flush=True)


def emit(args: argparse.Namespace, record: dict[str, Any], text: str) -> None:
    """Print ``record`` as JSON (``--json``) or ``text``."""
    print(json_line(record) if getattr(args, "json", False) else text, flush=True)


def is_terminal() -> bool:
    """Whether standard output is a terminal (then displays refresh in place)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def kv_table(title: str, rows: Iterable[tuple[str, str]], caption: str | None = None) -> Any:
    """A two-column rich table (label, value right-aligned) for a live display."""
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=title, show_header=False, caption=caption, min_width=40)
    table.add_column("item")
    table.add_column("value", justify="right", style="bold")
    for label, value in rows:
        table.add_row(label, value)
    return table


def refresh_loop(args: argparse.Namespace, read: Callable[[], T], *, render: Callable[[T], Any],
                 line: Callable[[T], str], record: Callable[[T], dict[str, Any]],
                 interval: float | None = None, count: int | None = None,
                 until: Callable[[T], bool] | None = None) -> int:
    """Call ``read()`` every ``interval`` real seconds and show each result; return the number shown.

    Parameters
    ----------
    args : Namespace
        The program's arguments; ``--json``, ``--count`` and ``--interval`` are used when present.
    read : callable
        Takes a snapshot (any object) of what to show.
    render : callable
        Snapshot -> rich renderable, refreshed in place on a terminal.
    line : callable
        Snapshot -> one line of text (output to a pipe or file).
    record : callable
        Snapshot -> dict, printed as one JSON line with ``--json``.
    interval, count : float, int, optional
        Override ``args.interval`` (real s) / ``args.count`` (None: until Ctrl-C or ``until``).
    until : callable, optional
        Snapshot -> True to stop after showing it (e.g. a move has finished).

    A read failing on Channel Access (an IOC busy or restarting) is tried again each interval for up to
    ``RETRY_S`` seconds before the failure is reported.

    Ctrl-C raises KeyboardInterrupt out of here after the terminal display has been closed;
    :func:`run_main` turns it into exit code 0.
    """
    interval = interval if interval is not None else getattr(args, "interval", None) or 1.0
    count = count if count is not None else getattr(args, "count", None)
    as_json = bool(getattr(args, "json", False))
    live_view = is_terminal() and not as_json
    shown = 0
    due = time.monotonic()

    def read_retrying() -> T:
        give_up = None
        while True:
            try:
                return read()
            except transient_errors():
                give_up = give_up if give_up is not None else time.monotonic() + RETRY_S
                if time.monotonic() > give_up:
                    raise
                time.sleep(min(interval, 1.0))

    def ticks() -> Iterable[T]:
        nonlocal shown, due
        while count is None or shown < count:
            data = read_retrying()
            yield data
            shown += 1
            if until is not None and until(data):
                return
            if count is not None and shown >= count:
                return
            due += interval
            delay = due - time.monotonic()
            if delay < 0:  # fell behind (slow reads): keep the rhythm from now on
                due, delay = time.monotonic(), 0.0
            time.sleep(delay)

    if live_view:
        from rich.live import Live  # noqa: PLC0415

        with Live(auto_refresh=False, redirect_stdout=False, redirect_stderr=False) as view:
            for data in ticks():
                view.update(render(data), refresh=True)
    else:
        for data in ticks():
            print(json_line(record(data)) if as_json else line(data), flush=True)
    return shown


# ---- formatting --------------------------------------------------------------------------------
def fmt_ha(deg: float, precision: int = 2) -> str:
    """Hour angle (deg) as ``+HH:MM:SS.ss`` hours, or ``—`` when unknown."""
    from obsctl.coordinates import format_ha  # noqa: PLC0415

    return format_ha(deg, precision) if _finite(deg) else "—"


def fmt_hours(deg: float, precision: int = 2) -> str:
    """RA or sidereal time (deg) as ``HH:MM:SS.ss``, or ``—`` when unknown."""
    from obsctl.coordinates import format_hours  # noqa: PLC0415

    return format_hours(deg, precision) if _finite(deg) else "—"


def fmt_dms(deg: float, precision: int = 1) -> str:
    """Declination-like angle (deg) as ``+DD:MM:SS.s``, or ``—`` when unknown."""
    from obsctl.coordinates import format_dms  # noqa: PLC0415

    return format_dms(deg, precision) if _finite(deg) else "—"


def fmt_num(value: float, spec: str = "+.4f", unit: str = "") -> str:
    """A number with a format spec and unit, or ``—`` when unknown."""
    if not _finite(value):
        return "—"
    return f"{value:{spec}}" + (f" {unit}" if unit else "")


def fmt_utc(t: float, decimals: int = 1) -> str:
    """POSIX time as ``YYYY-MM-DD HH:MM:SS.s`` UTC."""
    from datetime import UTC, datetime  # noqa: PLC0415

    if not _finite(t):
        return "—"
    text = datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return text[: len(text) - 6 + decimals] if decimals > 0 else text[:-7]


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False
