"""obsctl.blocks: the radiometer's sample-block wire format (pure unit tests, no EPICS)."""

from __future__ import annotations

import numpy as np
import pytest

from obsctl import blocks


def _columns(n: int, t0: float = 1.8e9, rate: float = 400.0, seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    k = np.arange(n)
    return {
        "T": t0 + k / rate, "HA": rng.uniform(-90, 90, n), "DEC": rng.uniform(-90, 60, n),
        "AZ": rng.uniform(0, 360, n), "EL": rng.uniform(0, 90, n),
        "DVM1_RAW": rng.integers(blocks.ADC_MIN, blocks.ADC_MAX, n).astype(float),
        "DVM2_RAW": rng.integers(blocks.ADC_MIN, blocks.ADC_MAX, n).astype(float),
        "DVM1": rng.normal(40, 1, n), "DVM2": rng.normal(41, 1, n),
        "FLAGS": rng.integers(0, 256, n).astype(float),
    }


def test_round_trip_is_exact():
    cols = _columns(123)
    wave = blocks.pack(7, 1_000_000_123, cols, rate_hz=400.0, avg=2, rx=3, sel=(0, 9))
    assert wave.size == blocks.HEADER_LEN + blocks.NCOL * 123 <= blocks.MAX_LENGTH
    padded = np.r_[wave, np.zeros(50)]  # a CA client may receive the waveform padded to its max length
    b = blocks.unpack(padded)
    assert (b.seq, b.first, b.nsamp, b.rate_hz, b.avg, b.rx, b.sel) == (7, 1_000_000_123, 123, 400.0, 2, 3, (0, 9))
    for name in blocks.COLUMNS:
        np.testing.assert_array_equal(b.col(name), cols[name])  # float64 throughout: bit-exact
    assert b.units(1) == "K" and b.units(2) == "V"
    np.testing.assert_array_equal(b.indices, 1_000_000_123 + np.arange(123))
    assert b.next_index == 1_000_000_246
    # sample times keep sub-microsecond resolution at POSIX epochs: on the 1/rate grid
    k = b.col("T") * 400.0
    assert np.max(np.abs(k - np.round(k))) < 1e-3


def test_array_input_empty_block_and_split():
    data = np.vstack([_columns(3000)[c] for c in blocks.COLUMNS])
    pieces = blocks.split(data)
    assert [p.shape[1] for p in pieces] == [blocks.MAX_SAMPLES, blocks.MAX_SAMPLES, 3000 - 2 * blocks.MAX_SAMPLES]
    first, waves = 0, []
    for seq, p in enumerate(pieces):
        waves.append(blocks.pack(seq, first, p, rate_hz=400.0))
        first += p.shape[1]
    np.testing.assert_array_equal(blocks.concat([blocks.unpack(w) for w in waves]), data)
    empty = blocks.unpack(blocks.pack(0, 5, np.empty((blocks.NCOL, 0)), rate_hz=1.0))
    assert empty.nsamp == 0 and empty.next_index == 5
    assert blocks.split(np.empty((blocks.NCOL, 0))) == []


@pytest.mark.parametrize("bad, message", [
    (np.zeros(3), "shorter"),
    (np.r_[0.0, np.zeros(blocks.HEADER_LEN)], "not a sample block"),
])
def test_unpack_rejects_garbage(bad, message):
    with pytest.raises(blocks.BlockError, match=message):
        blocks.unpack(bad)


def test_try_unpack_skips_non_blocks():
    assert blocks.try_unpack([0.0]) is None  # the PV's initial value before the first block
    assert blocks.try_unpack(np.zeros(blocks.HEADER_LEN + 5)) is None
    b = blocks.try_unpack(blocks.pack(3, 9, _columns(2), rate_hz=50.0))
    assert b is not None and b.seq == 3 and b.first == 9


def test_unpack_rejects_truncated_and_pack_rejects_bad_input():
    wave = blocks.pack(0, 0, _columns(10), rate_hz=50.0)
    with pytest.raises(blocks.BlockError, match="truncated"):
        blocks.unpack(wave[:-1])
    wrong = wave.copy()
    wrong[blocks.H["NCOL"]] = 4
    with pytest.raises(blocks.BlockError, match="shape"):
        blocks.unpack(wrong)
    cols = _columns(5)
    del cols["FLAGS"]
    with pytest.raises(blocks.BlockError, match="missing"):
        blocks.pack(0, 0, cols, rate_hz=1.0)
    with pytest.raises(blocks.BlockError, match="split"):
        blocks.pack(0, 0, _columns(blocks.MAX_SAMPLES + 1), rate_hz=1.0)
    with pytest.raises(blocks.BlockError, match=">= 0"):
        blocks.pack(0, -1, _columns(2), rate_hz=1.0)


def _stream(sizes: list[int], start: int = 0) -> list[blocks.Block]:
    out, first = [], start
    for seq, n in enumerate(sizes):
        out.append(blocks.unpack(blocks.pack(seq, first, _columns(n, seed=seq), rate_hz=50.0)))
        first += n
    return out


def test_loss_tracker_contiguous_stream_mid_stream_start():
    tr = blocks.LossTracker()
    for b in _stream([5, 7, 1, 0, 9], start=1000):  # a client connecting mid-stream starts at 1000
        tr.add(b)
    assert tr.ok and tr.lost == 0 and tr.repeated == 0
    assert tr.samples == 22 and tr.expected == 1022 and tr.blocks == 5


def test_loss_tracker_detects_lost_and_repeated_blocks():
    s = _stream([5, 7, 3, 4, 6])
    tr = blocks.LossTracker()
    for b in (s[0], s[2], s[3], s[3], s[4]):  # block 1 lost (7 samples), block 3 delivered twice
        tr.add(b)
    assert not tr.ok
    assert tr.lost == 7 and tr.gaps == [(5, 12)]
    assert tr.repeated == 4
    assert tr.samples == 5 + 3 + 4 + 6 and tr.expected == 25
    # a partial overlap counts only the new samples
    tr2 = blocks.LossTracker()
    tr2.add(s[0])
    overlap = blocks.unpack(blocks.pack(9, 3, _columns(4), rate_hz=50.0))  # indices 3..6, 3 and 4 seen
    assert tr2.add(overlap) == 2 and tr2.repeated == 2 and tr2.expected == 7
