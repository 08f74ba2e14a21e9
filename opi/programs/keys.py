"""Keys pressed on the terminal, read without waiting: for programs steered by hand (``obsctl mandr --keys``).

:class:`KeyReader` puts the terminal on standard input in cbreak mode (keys arrive at once, without echo;
Ctrl-C still interrupts) while it is in use, and restores the terminal afterwards, also on errors.
:meth:`KeyReader.pending` returns the keys pressed since the last call as names: ``"up"``, ``"down"``,
``"left"``, ``"right"`` for the arrow keys, ``"space"``, or the character itself (``"q"``, ``"+"``).
"""

from __future__ import annotations

import os
import select
import sys
import termios
import tty
from typing import Any

#: escape sequences of the arrow keys (normal and application cursor mode)
ARROWS = {b"[A": "up", b"[B": "down", b"[C": "right", b"[D": "left",
          b"OA": "up", b"OB": "down", b"OC": "right", b"OD": "left"}
ESC = 0x1B


def parse_keys(data: bytes) -> tuple[list[str], bytes]:
    """Key names in ``data``, and the bytes of an escape sequence not complete yet (to prepend next time).

    Unknown escape sequences are skipped (up to their final letter); other bytes are decoded as UTF-8.
    """
    names: list[str] = []
    i = 0
    while i < len(data):
        b = data[i]
        if b == ESC:
            rest = data[i + 1:]
            if len(rest) < 2:
                return names, data[i:]
            seq = rest[:2]
            if seq in ARROWS:
                names.append(ARROWS[seq])
                i += 3
                continue
            j = i + 1
            while j < len(data) and not (0x40 <= data[j] <= 0x7E and j > i + 1):  # CSI ends with a letter
                j += 1
            i = j + 1
            continue
        if b == 0x20:
            names.append("space")
            i += 1
            continue
        ch = data[i:i + 1].decode("utf-8", errors="replace")
        names.append(ch)
        i += 1
    return names, b""


class KeyReader:
    """Keys from a terminal (``fd`` defaults to standard input), in cbreak mode while the reader is open."""

    def __init__(self, fd: int | None = None):
        self.fd = sys.stdin.fileno() if fd is None else fd
        self._saved: Any = None
        self._partial = b""

    def __enter__(self) -> KeyReader:
        if not os.isatty(self.fd):
            raise OSError("keys need a terminal on standard input")
        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            self._saved = None

    def pending(self) -> list[str]:
        """Names of the keys pressed since the last call (does not wait)."""
        data = self._partial
        while select.select([self.fd], [], [], 0.0)[0]:
            chunk = os.read(self.fd, 256)
            if not chunk:
                break
            data += chunk
        names, self._partial = parse_keys(data)
        return names
