"""Terminal keys for programs steered by hand: escape sequences split across reads, unknown ones skipped."""

from __future__ import annotations

import os
import pty
import time

import pytest

from opi.programs.keys import KeyReader, parse_keys


def test_parse_keys():
    assert parse_keys(b"\x1b[A\x1b[Bq \x1bOC\x1bOD+") == (["up", "down", "q", "space", "right", "left", "+"], b"")
    assert parse_keys(b"x\x1b[") == (["x"], b"\x1b[")  # incomplete: kept for the next read
    assert parse_keys(b"\x1b[" + b"C") == (["right"], b"")
    assert parse_keys(b"\x1b[5~q") == (["q"], b"")  # page up: not a key here, skipped whole


def _keys(reader: KeyReader, n: int) -> list[str]:
    """The next ``n`` keys (a pty passes written bytes on at once, but give it up to 2 s)."""
    got: list[str] = []
    deadline = time.monotonic() + 2.0
    while len(got) < n and time.monotonic() < deadline:
        got += reader.pending()
        time.sleep(0.005)
    return got


def test_reader_on_a_terminal():
    main_fd, sub_fd = pty.openpty()
    try:
        with KeyReader(sub_fd) as keys:
            assert keys.pending() == []
            os.write(main_fd, b"\x1b[A\x1b")
            assert _keys(keys, 1) == ["up"]
            os.write(main_fd, b"[D ")
            assert _keys(keys, 2) == ["left", "space"]
        r, w = os.pipe()
        with pytest.raises(OSError, match="terminal"), KeyReader(r):
            pass
        os.close(r)
        os.close(w)
    finally:
        os.close(main_fd)
        os.close(sub_fd)
