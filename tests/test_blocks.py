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


# ---- IOC runs, replays and the stream assembler ---------------------------------------------------------
def _run(sizes: list[int], boot: int) -> list[blocks.Block]:
    """Blocks of one IOC run (boot id ``boot``), sequence numbers and indices from 0."""
    out, first = [], 0
    for seq, n in enumerate(sizes):
        out.append(blocks.unpack(blocks.pack(seq, first, _columns(n, seed=seq), rate_hz=50.0, boot=boot)))
        first += n
    return out


def _replayed(b: blocks.Block, request: int, answer: int | None = None) -> blocks.Block:
    """Block ``b`` as the IOC re-publishes it answering a replay request from block ``request`` with an answer
    that starts at block ``answer`` (default: the block requested, still held)."""
    wave = blocks.pack(b.seq, b.first, b.data, rate_hz=b.rate_hz, boot=b.boot, replay=request,
                       answer=request if answer is None else answer)
    return blocks.unpack(wave)


def test_boot_id_and_replay_mark_round_trip():
    boot = 1_795_315_692_750_954  # a real start time in microseconds: exact in a double
    b = blocks.unpack(blocks.pack(4, 40, _columns(3), rate_hz=50.0, boot=boot))
    assert b.boot == boot and b.replay == -1 and b.header["BOOT"] == float(boot)
    assert _replayed(b, 2).replay == 2 and _replayed(b, 2).boot == boot
    for bad in (-1, 2**53):
        with pytest.raises(blocks.BlockError, match="boot id"):
            blocks.pack(0, 0, _columns(1), rate_hz=1.0, boot=bad)


def test_loss_tracker_counts_a_new_run_from_index_zero():
    a, b = _run([5, 5, 5], boot=1), _run([4, 4, 4], boot=2)
    tr = blocks.LossTracker()
    for blk in (a[1], a[2], b[0], b[1], b[2]):  # joined run 1 mid-stream; run 2 seen from its start
        tr.add(blk)
    assert tr.ok and tr.restarts == 1 and tr.boots == [1, 2] and tr.samples == 10 + 12
    assert tr.add(a[0]) == 0 and tr.repeated == 5 and tr.boot == 2  # a late block of run 1 is only a repeat
    tr2 = blocks.LossTracker()
    for blk in (a[0], b[2]):  # run 2's first 8 samples never arrived: really lost, not a restart gap
        tr2.add(blk)
    assert tr2.lost == 8 and tr2.gaps == [(0, 8)] and tr2.restarts == 1


def _feed(asm: blocks.StreamAssembler, tr: blocks.LossTracker, blk: blocks.Block, now: float = 0.0,
          replayed: bool = False) -> tuple[list[int], blocks.ReplayRequest | None]:
    ready, req = asm.offer(blk, now, replayed)
    for r in ready:
        tr.add(r)
    return [r.seq for r in ready], req


def test_assembler_passes_an_unbroken_stream_through_and_joins_mid_stream():
    s = _run([3] * 6, boot=7)
    asm, tr = blocks.StreamAssembler(), blocks.LossTracker()
    assert _feed(asm, tr, _replayed(s[1], 0), replayed=True) == ([], None)  # a replay before any live block
    got = [_feed(asm, tr, b) for b in s[2:]]
    assert got == [([2], None), ([3], None), ([4], None), ([5], None)]
    assert tr.ok and asm.requests == 0 and not asm.waiting
    assert _feed(asm, tr, s[5]) == ([], None) and asm.duplicates == 2  # a re-sent monitor value


def test_assembler_fills_a_gap_from_the_replay_in_order():
    s = _run([3] * 8, boot=7)
    asm, tr = blocks.StreamAssembler(), blocks.LossTracker()
    _feed(asm, tr, s[0])
    _feed(asm, tr, s[1])
    seqs, req = _feed(asm, tr, s[4])  # 2 and 3 missed: 4 is held, the replay asked from 2
    assert seqs == [] and req == blocks.ReplayRequest(7, 2) and asm.waiting
    assert _feed(asm, tr, s[5]) == ([], None)  # the outstanding request covers it
    assert _feed(asm, tr, _replayed(s[2], 2), replayed=True) == ([2], None)
    assert _feed(asm, tr, _replayed(s[3], 2), replayed=True) == ([3, 4, 5], None)
    assert _feed(asm, tr, _replayed(s[4], 2), replayed=True) == ([], None)  # already handed over
    assert _feed(asm, tr, s[6]) == ([6], None)
    assert tr.ok and tr.samples == 7 * 3 and asm.recovered == 6 and asm.recovered_blocks == 2 and not asm.waiting


def test_assembler_asks_again_for_a_gap_after_the_answered_one():
    s = _run([2] * 10, boot=3)
    asm, tr = blocks.StreamAssembler(), blocks.LossTracker()
    _feed(asm, tr, s[0])
    assert _feed(asm, tr, s[2])[1] == blocks.ReplayRequest(3, 1)
    assert _feed(asm, tr, s[5])[1] is None  # 3 and 4 missed too, after the request was made
    seqs, req = _feed(asm, tr, _replayed(s[1], 1), replayed=True)
    assert seqs == [1, 2] and req == blocks.ReplayRequest(3, 3)  # the first answer cannot hold 3 and 4
    assert _feed(asm, tr, _replayed(s[3], 3), replayed=True)[0] == [3]
    assert _feed(asm, tr, _replayed(s[4], 3), replayed=True)[0] == [4, 5]
    assert tr.ok and asm.requests == 2 and not asm.waiting


def test_assembler_skips_blocks_the_history_no_longer_holds():
    s = _run([4] * 7, boot=9)
    asm, tr = blocks.StreamAssembler(), blocks.LossTracker()
    _feed(asm, tr, s[0])
    assert _feed(asm, tr, s[5])[1] == blocks.ReplayRequest(9, 1)
    # the answer starts at block 3: blocks 1 and 2 are gone, 3 and 4 recovered, the held 5 follows
    assert _feed(asm, tr, _replayed(s[3], 1, answer=3), replayed=True)[0] == [3]
    assert _feed(asm, tr, _replayed(s[4], 1, answer=3), replayed=True)[0] == [4, 5]
    assert asm.skipped == 2 and tr.lost == 8 and tr.gaps == [(4, 12)] and asm.recovered == 8
    # another client's replay starting later says nothing about this client's gaps
    asm2, tr2 = blocks.StreamAssembler(), blocks.LossTracker()
    _feed(asm2, tr2, s[0])
    _feed(asm2, tr2, s[3])
    assert _feed(asm2, tr2, _replayed(s[2], 2), replayed=True) == ([], None) and asm2.waiting
    assert _feed(asm2, tr2, _replayed(s[1], 1), replayed=True)[0] == [1, 2, 3] and tr2.ok


def test_assembler_takes_part_of_an_answer_without_giving_up_what_it_did_not_see():
    s = _run([3] * 8, boot=5)
    asm, tr = blocks.StreamAssembler(), blocks.LossTracker()
    _feed(asm, tr, s[0])
    assert _feed(asm, tr, s[6])[1] == blocks.ReplayRequest(5, 1)
    # the monitor came back after the IOC had answered from block 1: its first value is the answer's last block
    assert _feed(asm, tr, _replayed(s[5], 1), replayed=True) == ([], None)
    assert not asm.answered and asm.waiting and asm.skipped == 0  # blocks 1..4 are still held by the IOC
    # the request written again: the whole answer arrives
    assert _feed(asm, tr, _replayed(s[1], 1), replayed=True)[0] == [1] and asm.answered
    for k in (2, 3):
        assert _feed(asm, tr, _replayed(s[k], 1), replayed=True)[0] == [k]
    assert _feed(asm, tr, _replayed(s[4], 1), replayed=True)[0] == [4, 5, 6]
    assert tr.ok and tr.samples == 7 * 3 and not asm.waiting
    # part of an answer that started later than asked: what is before its start is gone, the rest is not
    asm2, tr2 = blocks.StreamAssembler(), blocks.LossTracker()
    _feed(asm2, tr2, s[0])
    _feed(asm2, tr2, s[7])
    assert _feed(asm2, tr2, _replayed(s[5], 1, answer=3), replayed=True) == ([], None)
    assert asm2.skipped == 2 and asm2.next_seq == 3 and not asm2.answered
    assert _feed(asm2, tr2, _replayed(s[3], 1, answer=3), replayed=True)[0] == [3] and asm2.answered
    assert _feed(asm2, tr2, _replayed(s[4], 1, answer=3), replayed=True)[0] == [4, 5]
    assert _feed(asm2, tr2, _replayed(s[6], 1, answer=3), replayed=True)[0] == [6, 7]
    assert tr2.lost == 6 and tr2.gaps == [(3, 9)]


def test_assembler_gives_a_gap_up_after_the_timeout():
    s = _run([5] * 5, boot=4)
    asm, tr = blocks.StreamAssembler(timeout_s=2.0), blocks.LossTracker()
    _feed(asm, tr, s[0], now=10.0)
    assert _feed(asm, tr, s[2], now=10.1)[1] == blocks.ReplayRequest(4, 1)
    assert _feed(asm, tr, s[3], now=11.0) == ([], None)
    assert asm.expire(11.9) == [] and asm.waiting
    assert [b.seq for b in asm.expire(12.2)] == [2, 3] and asm.expired == 1 and asm.request is None
    tr.add(s[2])
    tr.add(s[3])
    assert tr.lost == 5 and asm.skipped == 1
    assert _feed(asm, tr, s[4], now=12.3) == ([4], None)
    with pytest.raises(ValueError, match="timeout"):
        blocks.StreamAssembler(timeout_s=0)


def test_assembler_wants_a_restarted_run_from_its_first_block():
    old, new = _run([6] * 5, boot=100), _run([3] * 4, boot=200)
    asm, tr = blocks.StreamAssembler(), blocks.LossTracker()
    for b in old[:2]:
        _feed(asm, tr, b)
    assert _feed(asm, tr, old[3])[1] == blocks.ReplayRequest(100, 2)  # then the IOC was killed
    # the restarted IOC's first live block this client sees is its block 2: ask for its run from 0;
    # what was received of the dead run (block 3) is handed over first
    seqs, req = _feed(asm, tr, new[2])
    assert seqs == [3] and req == blocks.ReplayRequest(200, 0)
    assert _feed(asm, tr, _replayed(old[2], 2), replayed=True) == ([], None)  # the dead run is closed
    assert _feed(asm, tr, _replayed(new[0], 0), replayed=True)[0] == [0]
    assert _feed(asm, tr, _replayed(new[1], 0), replayed=True)[0] == [1, 2]
    assert _feed(asm, tr, new[3])[0] == [3]
    # the dead run's block 2 is really lost (it was published, never received, its history died);
    # the new run is complete from its first sample
    assert tr.restarts == 1 and tr.lost == 6 and tr.gaps == [(12, 18)] and asm.recovered == 6
