"""Wire format of the radiometer's sample blocks (``SITE:RAD:BLK_RBV``): constants, pack, unpack, loss check.

The radiometer publishes its samples in blocks, each one packed into a single double waveform so that a
block arrives atomically with one Channel Access monitor update.  Pure numpy: no EPICS here, so the IOC,
ophyd devices, the archiver and analysis code all read the same definition.

Layout (float64, ``HEADER_LEN + NCOL * NSAMP`` elements; anything after that is padding)::

    header[0]  MAGIC          format identifier and version (FORMAT_MAGIC)
    header[1]  SEQ            block sequence number (0, 1, 2, ... per IOC start)
    header[2]  FIRST          global index of the block's first sample (0, 1, 2, ... per IOC start)
    header[3]  NSAMP          number of samples in the block
    header[4]  NCOL           number of columns (COLUMNS)
    header[5]  RATE_HZ        output sample rate (Hz of observatory time) = raw rate / AVG
    header[6]  AVG            raw samples averaged into one output sample (boxcar)
    header[7]  RX             receiver index (site.receivers order) the RF inputs came from
    header[8]  SEL1           DVM1 input select (index into DVM_INPUTS)
    header[9]  SEL2           DVM2 input select
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
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FORMAT_MAGIC = 0x52414401  # "RAD" + version 1
HEADER = ("MAGIC", "SEQ", "FIRST", "NSAMP", "NCOL", "RATE_HZ", "AVG", "RX", "SEL1", "SEL2")
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
    values by name (floats).
    """

    seq: int
    first: int
    rate_hz: float
    avg: int
    rx: int
    sel: tuple[int, int]
    data: np.ndarray
    header: dict[str, float] = field(default_factory=dict)

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
         avg: int = 1, rx: int = 0, sel: tuple[int, int] = (0, 1)) -> np.ndarray:
    """Pack samples into one waveform (float64 array of HEADER_LEN + NCOL * nsamp elements).

    ``columns`` is either a dict with every name of COLUMNS (equal-length 1-D arrays) or an array of
    shape (NCOL, nsamp).  Raises BlockError when columns are missing or the block exceeds MAX_SAMPLES
    (use :func:`split` first).
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
    out = np.empty(HEADER_LEN + NCOL * n)
    out[:HEADER_LEN] = (FORMAT_MAGIC, seq, first, n, NCOL, rate_hz, avg, rx, sel[0], sel[1])
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
                 header={k: float(v) for k, v in zip(HEADER, hdr, strict=True)})


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

    The first block seen sets the expected index (a client may connect mid-stream).  ``lost`` counts
    samples whose indices were skipped, ``repeated`` samples already seen (e.g. a re-sent monitor value
    on reconnection), ``gaps`` lists (expected, got) pairs.
    """

    expected: int | None = None
    samples: int = 0
    blocks: int = 0
    lost: int = 0
    repeated: int = 0
    last_seq: int | None = None
    gaps: list[tuple[int, int]] = field(default_factory=list)

    def add(self, block: Block) -> int:
        """Account for one block; return the number of new samples it brought (0 for a repeat)."""
        self.blocks += 1
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
