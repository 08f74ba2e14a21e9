"""Wire format of the radiometer's sample blocks (``SITE:RAD:BLK_RBV``): constants, pack, unpack, loss check.

The radiometer publishes its samples in blocks, each one packed into a single double waveform so that a
block arrives atomically with one Channel Access monitor update.  Pure numpy: no EPICS here, so the IOC,
ophyd devices, the archiver and analysis code all read the same definition.

Layout (float64, ``HEADER_LEN + NCOL * NSAMP`` elements; anything after that is padding)::

    header[0]  MAGIC          format identifier and version (FORMAT_MAGIC)
    header[1]  SEQ            block sequence number (0, 1, 2, ... per IOC run)
    header[2]  FIRST          global index of the block's first sample (0, 1, 2, ... per IOC run)
    header[3]  NSAMP          number of samples in the block
    header[4]  NCOL           number of columns (COLUMNS)
    header[5]  RATE_HZ        output sample rate (Hz of observatory time) = raw rate / AVG
    header[6]  AVG            raw samples averaged into one output sample (boxcar)
    header[7]  RX             receiver index (site.receivers order) the RF inputs came from
    header[8]  SEL1           DVM1 input select (index into DVM_INPUTS)
    header[9]  SEL2           DVM2 input select
    header[10] BOOT           boot id of the IOC run that took the samples (its real start time, us since 1970)
    header[11] REPLAY         -1 on the live stream; on a replayed block the first sequence number requested
    header[12] ANSWER         -1 on the live stream; on a replayed block the sequence number of the first block
                              of the answer it belongs to (> REPLAY when the history no longer held the rest)
    then NCOL columns of NSAMP values each, column-major: all T, then all HA, ...

Columns (``COLUMNS``):

=========  =====  ==============================================================================
 T         s      sample time, observatory clock (POSIX s, UTC); raw samples lie on the grid k/rate
 HA        deg    observed apparent hour angle (drive HA_OBS interpolated to T); NaN without position
 DEC       deg    observed apparent declination (drive DEC_OBS interpolated to T)
 AZ        deg    azimuth from the observed HA/Dec (north through east)
 EL        deg    elevation from the observed HA/Dec
 DVM1_RAW  count  DVM1 ADC counts (24-bit signed, see ADC_MIN/ADC_MAX)
 DVM2_RAW  count  DVM2 ADC counts
 DVM1      K|V    DVM1 calibrated: K for RF inputs, V for the others (DVM_INPUTS units)
 DVM2      K|V    DVM2 calibrated
 FLAGS     -      bit field, FLAG_* below
=========  =====  ==============================================================================

A full block is MAX_LENGTH doubles (112 kB): Channel Access clients need EPICS_CA_MAX_ARRAY_BYTES above that.
Global sample indices are contiguous across blocks; a client detects lost or repeated samples with
:class:`LossTracker`.  A gap in *time* with contiguous indices means acquisition was stopped, not lost.

Sequence numbers and indices start again at 0 when the IOC restarts; the boot id tells the runs apart.  The
IOC keeps its newest blocks and re-publishes them on request (``RAD:REPLAY_SP`` -> ``RAD:HIST_RBV``, with
REPLAY set to the request); :class:`StreamAssembler` hands a client every block in order, asking for the ones
it missed.  A replay that starts *after* the requested block says that the blocks before it are gone; every
block of an answer carries where that answer started (ANSWER), so a client that sees only part of an answer
(a monitor subscribed mid-answer gets the newest block as its first value) knows what it missed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FORMAT_MAGIC = 0x52414403  # "RAD" + version 3 (version 1 had no BOOT and REPLAY, version 2 no ANSWER)
HEADER = ("MAGIC", "SEQ", "FIRST", "NSAMP", "NCOL", "RATE_HZ", "AVG", "RX", "SEL1", "SEL2", "BOOT", "REPLAY",
          "ANSWER")
HEADER_LEN = len(HEADER)
H = {name: i for i, name in enumerate(HEADER)}
COLUMNS = ("T", "HA", "DEC", "AZ", "EL", "DVM1_RAW", "DVM2_RAW", "DVM1", "DVM2", "FLAGS")
NCOL = len(COLUMNS)
C = {name: i for i, name in enumerate(COLUMNS)}
#: samples per block: keeps one waveform under caproto's subscription-backlog warning (15 M elements)
MAX_SAMPLES = 1400
MAX_LENGTH = HEADER_LEN + NCOL * MAX_SAMPLES

# Flag bits of the FLAGS column.
FLAG_POS_VALID = 1 << 0   #: HA/DEC/AZ/EL come from drive packets (else NaN)
FLAG_DIODE_ON = 1 << 1    #: a noise diode was injecting during (part of) the sample
FLAG_ON_SOURCE = 1 << 2   #: the drive reported on source and settled for the whole sample
FLAG_DVM1_CLIP = 1 << 3   #: DVM1 ADC clipped (over/under range)
FLAG_DVM2_CLIP = 1 << 4   #: DVM2 ADC clipped
FLAG_DVM1_NODATA = 1 << 5  #: DVM1 input not available (sensor link down): value NaN, counts 0
FLAG_DVM2_NODATA = 1 << 6  #: DVM2 input not available
FLAG_SLEWING = 1 << 7     #: the drive was slewing or stowing during (part of) the sample

# The 24-bit DVM ADC (signed, two's complement range).
ADC_BITS = 24
ADC_MIN = -(1 << (ADC_BITS - 1))
ADC_MAX = (1 << (ADC_BITS - 1)) - 1

#: The 16-way DVM input select: (enum label <= 25 characters, unit of the calibrated value).
DVM_INPUTS: tuple[tuple[str, str], ...] = (
    ("LCP total power", "K"),
    ("RCP total power", "K"),
    ("Noise diode monitor", "V"),
    ("IF detector LCP", "V"),
    ("IF detector RCP", "V"),
    ("Cal reference 1 V", "V"),
    ("Ground", "V"),
    ("Cryo 15K diode sensor", "V"),
    ("Cryo 70K diode sensor", "V"),
    ("Vacuum gauge", "V"),
    ("PSU +15 V", "V"),
    ("PSU -15 V", "V"),
    ("PSU +5 V", "V"),
    ("PSU +28 V", "V"),
    ("Room temp LM35", "V"),
    ("Outside temp TMP36", "V"),
)
INPUT_LABELS = tuple(label for label, _ in DVM_INPUTS)


class BlockError(ValueError):
    """A waveform that is not a valid sample block (the message says why)."""


@dataclass
class Block:
    """One unpacked sample block.

    ``data`` has shape (NCOL, nsamp); ``col(name)`` returns one column.  ``header`` holds the raw header
    values by name (floats).  ``boot`` identifies the IOC run; ``replay`` is -1 for a live block, else the
    first sequence number of the replay request it answers, and ``answer`` the sequence number of the first
    block of that answer (-1 live).
    """

    seq: int
    first: int
    rate_hz: float
    avg: int
    rx: int
    sel: tuple[int, int]
    data: np.ndarray
    header: dict[str, float] = field(default_factory=dict)
    boot: int = 0
    replay: int = -1
    answer: int = -1

    @property
    def nsamp(self) -> int:
        """Number of samples."""
        return int(self.data.shape[1])

    @property
    def indices(self) -> np.ndarray:
        """Global sample indices of the block's samples."""
        return self.first + np.arange(self.nsamp, dtype=np.int64)

    @property
    def next_index(self) -> int:
        """Global index the following block should start with."""
        return self.first + self.nsamp

    def col(self, name: str) -> np.ndarray:
        """One column by name (see COLUMNS)."""
        return self.data[C[name]]

    def flags(self) -> np.ndarray:
        """The FLAGS column as integers."""
        return self.data[C["FLAGS"]].astype(np.int64)

    def units(self, dvm: int) -> str:
        """Unit of the calibrated value of DVM ``dvm`` (1 or 2) in this block."""
        return DVM_INPUTS[self.sel[dvm - 1]][1]


def pack(seq: int, first: int, columns: dict[str, np.ndarray] | np.ndarray, *, rate_hz: float,
         avg: int = 1, rx: int = 0, sel: tuple[int, int] = (0, 1), boot: int = 0, replay: int = -1,
         answer: int = -1) -> np.ndarray:
    """Pack samples into one waveform (float64 array of HEADER_LEN + NCOL * nsamp elements).

    ``columns`` is either a dict with every name of COLUMNS (equal-length 1-D arrays) or an array of
    shape (NCOL, nsamp).  ``boot`` (0 <= boot < 2**53, exact in a double) identifies the IOC run; ``replay``
    and ``answer`` mark a replayed block (see the layout; -1 on the live stream).  Raises
    BlockError when columns are missing, the block exceeds MAX_SAMPLES (use :func:`split` first) or a
    header value is out of range.
    """
    if isinstance(columns, dict):
        missing = [c for c in COLUMNS if c not in columns]
        if missing:
            raise BlockError(f"missing columns {missing}")
        data = np.vstack([np.asarray(columns[c], dtype=float).reshape(-1) for c in COLUMNS])
    else:
        data = np.asarray(columns, dtype=float)
        if data.ndim != 2 or data.shape[0] != NCOL:
            raise BlockError(f"column array must have shape ({NCOL}, n), got {data.shape}")
    n = data.shape[1]
    if n > MAX_SAMPLES:
        raise BlockError(f"{n} samples exceed MAX_SAMPLES={MAX_SAMPLES}; split the block")
    if seq < 0 or first < 0:
        raise BlockError(f"sequence number and first index must be >= 0, got {seq}, {first}")
    if not 0 <= boot < 2**53:
        raise BlockError(f"boot id must be in 0..2**53-1 (exact in a double), got {boot}")
    out = np.empty(HEADER_LEN + NCOL * n)
    out[:HEADER_LEN] = (FORMAT_MAGIC, seq, first, n, NCOL, rate_hz, avg, rx, sel[0], sel[1], boot, replay, answer)
    out[HEADER_LEN:] = data.reshape(-1)
    return out


def split(data: np.ndarray, max_samples: int = MAX_SAMPLES) -> list[np.ndarray]:
    """Split a (NCOL, n) column array into pieces of at most ``max_samples`` samples (n=0 gives [])."""
    n = data.shape[1]
    return [data[:, i:i + max_samples] for i in range(0, n, max_samples)]


def unpack(wave: np.ndarray | list[float]) -> Block:
    """The Block in a waveform; BlockError if the header is inconsistent or the waveform too short."""
    w = np.asarray(wave, dtype=float).reshape(-1)
    if w.size < HEADER_LEN:
        raise BlockError(f"waveform of {w.size} elements is shorter than the {HEADER_LEN}-element header")
    hdr = w[:HEADER_LEN]
    if hdr[H["MAGIC"]] != FORMAT_MAGIC:
        raise BlockError(f"not a sample block (magic {hdr[H['MAGIC']]!r}, expected {FORMAT_MAGIC})")
    n, ncol = int(hdr[H["NSAMP"]]), int(hdr[H["NCOL"]])
    if ncol != NCOL or n < 0 or n > MAX_SAMPLES:
        raise BlockError(f"bad block shape: {n} samples x {ncol} columns (expected {NCOL} columns)")
    if w.size < HEADER_LEN + n * ncol:
        raise BlockError(f"truncated block: {w.size} elements, header announces {HEADER_LEN + n * ncol}")
    data = w[HEADER_LEN:HEADER_LEN + n * ncol].reshape(ncol, n)
    return Block(seq=int(hdr[H["SEQ"]]), first=int(hdr[H["FIRST"]]), rate_hz=float(hdr[H["RATE_HZ"]]),
                 avg=int(hdr[H["AVG"]]), rx=int(hdr[H["RX"]]),
                 sel=(int(hdr[H["SEL1"]]), int(hdr[H["SEL2"]])), data=data,
                 header={k: float(v) for k, v in zip(HEADER, hdr, strict=True)},
                 boot=int(hdr[H["BOOT"]]), replay=int(hdr[H["REPLAY"]]), answer=int(hdr[H["ANSWER"]]))


def try_unpack(wave: np.ndarray | list[float]) -> Block | None:
    """The Block in a waveform, or None if it is not one (e.g. the PV's initial value before any block)."""
    w = np.asarray(wave, dtype=float).reshape(-1)
    if w.size < HEADER_LEN or w[H["MAGIC"]] != FORMAT_MAGIC:
        return None
    return unpack(w)


def concat(blocks: list[Block]) -> np.ndarray:
    """Columns of several blocks side by side, shape (NCOL, total samples)."""
    if not blocks:
        return np.empty((NCOL, 0))
    return np.hstack([b.data for b in blocks])


@dataclass
class LossTracker:
    """Follow a stream of blocks and count lost and repeated samples from the global indices.

    The first block seen sets the expected index (a client may connect mid-stream).  A block of another IOC
    run (boot id) starts that run: its indices count from 0, so samples the new run took before that block
    are lost unless they were handed over first (see :class:`StreamAssembler`).  ``lost`` counts samples
    whose indices were skipped, ``repeated`` samples already seen (e.g. a re-sent monitor value on
    reconnection, or a block of an earlier run), ``gaps`` lists (expected, got) pairs, ``restarts`` the IOC
    runs that followed the first one seen, ``boots`` the boot ids in order.
    """

    expected: int | None = None
    samples: int = 0
    blocks: int = 0
    lost: int = 0
    repeated: int = 0
    last_seq: int | None = None
    gaps: list[tuple[int, int]] = field(default_factory=list)
    boot: int | None = None
    restarts: int = 0
    boots: list[int] = field(default_factory=list)

    def add(self, block: Block) -> int:
        """Account for one block; return the number of new samples it brought (0 for a repeat)."""
        self.blocks += 1
        if block.boot != self.boot:
            if block.boot in self.boots:  # a late block of an earlier run
                self.repeated += block.nsamp
                return 0
            if self.boot is not None:
                self.restarts += 1
                self.expected = 0
            self.boot = block.boot
            self.boots.append(block.boot)
            self.last_seq = None
        if self.expected is None:
            self.expected = block.first
        if block.first > self.expected:
            self.lost += block.first - self.expected
            self.gaps.append((self.expected, block.first))
        elif block.first < self.expected:
            overlap = min(self.expected - block.first, block.nsamp)
            self.repeated += overlap
            if overlap == block.nsamp:
                return 0
        new = block.next_index - max(block.first, self.expected)
        self.samples += new
        self.expected = block.next_index
        self.last_seq = block.seq
        return new

    @property
    def ok(self) -> bool:
        """True while no sample was lost."""
        return self.lost == 0


@dataclass(frozen=True)
class ReplayRequest:
    """Ask the IOC run ``boot`` to publish its blocks again from sequence number ``first`` on."""

    boot: int
    first: int


class StreamAssembler:
    """Hand a client the blocks of one stream in sequence order, asking the IOC's history for missed ones.

    :meth:`offer` takes every block received, live or replayed, and returns the blocks now ready (in order)
    and, when a gap has just opened, the :class:`ReplayRequest` to send.  Blocks after a gap are held until
    replayed blocks fill it, or the IOC's answer shows the missing blocks are gone (the answer to a request
    starts after them), or ``timeout_s`` passes (:meth:`expire`; ``now`` is any monotonic clock in s, the
    same for every call).  Then the held blocks are handed over and the gap stays for :class:`LossTracker`
    to count as lost.

    Runs: the first live block sets the run (boot id) and the first sequence number wanted (a client joining
    mid-stream wants nothing earlier).  A block of a new run closes the old run (its held blocks are handed
    over: a dead IOC's history died with it) and wants the new run from sequence number 0, since every sample
    it took is acquired data.  Blocks already handed over and blocks of closed runs are dropped.

    Counters: ``requests`` (replay requests made), ``recovered_blocks``/``recovered`` (blocks/samples handed
    over from replays), ``skipped`` (blocks given up: gone from the history, timed out, or of a closed run),
    ``duplicates`` (blocks dropped), ``expired`` (gaps given up after the timeout).
    """

    def __init__(self, timeout_s: float = 5.0):
        if not timeout_s > 0:
            raise ValueError(f"replay timeout must be > 0 s, got {timeout_s!r}")
        self.timeout_s = float(timeout_s)
        self.boot: int | None = None
        self.next_seq = 0
        self.held: dict[int, tuple[Block, bool]] = {}
        self.request: ReplayRequest | None = None
        self.closed: set[int] = set()
        self._request_t = 0.0
        self._request_upto = -1     # newest sequence number known when the request was made
        self._answered = False      # a block answering the current request has arrived
        self.requests = self.recovered_blocks = self.recovered = self.skipped = 0
        self.duplicates = self.expired = 0

    @property
    def waiting(self) -> bool:
        """Whether blocks are held behind a gap."""
        return bool(self.held)

    @property
    def answered(self) -> bool:
        """Whether the first block of the IOC's answer to the current replay request has arrived."""
        return self._answered

    def offer(self, block: Block, now: float, replayed: bool = False) -> tuple[list[Block], ReplayRequest | None]:
        """Take one received block; return (blocks ready in order, replay request to send or None)."""
        out = self.expire(now)
        if block.boot != self.boot:
            if block.boot in self.closed or (self.boot is None and replayed):
                self.duplicates += 1
                return out, None
            if self.boot is None:
                self.next_seq = block.seq
            else:
                out += self._flush()
                self.closed.add(self.boot)
                self.next_seq = 0
            self.boot = block.boot
        req = self.request
        if (replayed and req is not None and not self._answered and block.boot == req.boot
                and block.replay == req.first):
            start = block.answer if block.answer >= 0 else block.seq
            if start > self.next_seq:  # the answer starts there: the IOC no longer holds the blocks before
                out += self._skip_to(start)
            # only the answer's first block shows it arriving from its start; a later block alone (a monitor
            # subscribed mid-answer gets the newest block as its first value) leaves the request open
            self._answered = block.seq == start
        if block.seq < self.next_seq or block.seq in self.held:
            self.duplicates += 1
        elif block.seq == self.next_seq:
            out.append(self._take(block, replayed))
            out += self._drain()
        else:
            self.held[block.seq] = (block, replayed)
        if not self.held:
            self.request = None
            return out, None
        if self.request is None or self.next_seq > self._request_upto:
            self.request = ReplayRequest(self.boot, self.next_seq)  # a gap no request covers yet
            self._request_t, self._request_upto, self._answered = now, max(self.held), False
            self.requests += 1
            return out, self.request
        return out, None

    def expire(self, now: float) -> list[Block]:
        """Give up a gap whose replay has not come within ``timeout_s``: the held blocks, in order."""
        if self.held and now - self._request_t > self.timeout_s:
            self.expired += 1
            return self._flush()
        return []

    def _take(self, block: Block, replayed: bool) -> Block:
        self.next_seq = block.seq + 1
        if replayed:
            self.recovered_blocks += 1
            self.recovered += block.nsamp
        return block

    def _drain(self) -> list[Block]:
        out = []
        while self.next_seq in self.held:
            out.append(self._take(*self.held.pop(self.next_seq)))
        return out

    def _skip_to(self, seq: int) -> list[Block]:
        """Hand over the held blocks below ``seq``; what is missing below it is gone."""
        out = []
        for s in sorted(k for k in self.held if k < seq):
            self.skipped += s - self.next_seq
            out.append(self._take(*self.held.pop(s)))
        self.skipped += max(seq - self.next_seq, 0)
        self.next_seq = max(self.next_seq, seq)
        return out + self._drain()

    def _flush(self) -> list[Block]:
        out = self._skip_to(max(self.held) + 1) if self.held else []
        self.request = None
        return out
