"""A-weighted frame power and the loudness measure used for mixture gains and RMS relabeling.

Measure (used for events and backgrounds alike): A-weighted mean power over the *gated* frames of the frame
grid (window 2400 / hop 1200 at 48 kHz), in dB. The gate is relative to the signal, as ITU-R BS.1770-4's
relative gate is, so that a gain of g dB changes the measured level by exactly g dB:

1. stage 1 drops frames more than ``gate_db`` (10 dB) below the mean power of all frames (digital silence,
   padding and the noise floor of a sparse file; BS.1770 uses an absolute -70 LKFS gate here, which would
   make the level depend on the gain);
2. stage 2 (BS.1770's relative gate) keeps the frames less than ``gate_db`` below the mean of stage 1;
3. the level is the mean power of the stage-2 frames. A level below ``silence_db`` (-70 dBFS) is reported
   as -inf: such a source is treated as silent (never boosted by 40 dB or more into an event).

Why frames and not BS.1770's 400 ms blocks: many sound effects are 50-300 ms long; the frames are the same
A-weighted frame power that relabeling thresholds (App. C.4), so "event 6 dB over the background" and "event
active" are judged by one ruler; and gating makes the level blind to silent padding (a 0.2 s click in a 3 s
file with 2.8 s of digital silence measures as the click, not 12 dB quieter).

Frame grid (shared with relabeling): frame i <-> samples [i*hop, (i+1)*hop); its window is centred on that
interval, samples [i*hop + hop/2 - win/2, i*hop + hop/2 + win/2), zero padded outside the signal; power =
mean of the squared A-weighted samples in the window; dB = 10*log10(max(power, 1e-20)).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import signal

try:  # scipy's in-place kernel behind signal.sosfilt (private; see sosfilt_inplace)
    from scipy.signal._sosfilt import _sosfilt
except ImportError:  # pragma: no cover - other scipy layouts
    _sosfilt = None

POWER_FLOOR = 1e-20  # dB floor: 10*log10(1e-20) = -200 dB
GATE_DB = -10.0  # BS.1770-4 relative gate: frames 10 dB below the gated mean do not count
SILENCE_DB = -70.0  # ours: a source whose gated level is below -70 dBFS is silent (level -inf)

# IEC 61672-1 analog A-weighting: four zeros at 0 Hz, poles (Hz) below; normalised to 0 dB at 1 kHz.
_A_POLES_HZ = (20.598997, 20.598997, 107.65265, 737.86223, 12194.217, 12194.217)


@lru_cache(maxsize=16)
def a_weighting_sos(sr: int) -> np.ndarray:
    """Digital A-weighting filter (bilinear transform of the IEC 61672 analog filter) as SOS, 0 dB at 1 kHz."""
    if sr <= 0:
        raise ValueError(f"a_weighting_sos: sample rate must be positive, got {sr}")
    poles = [-2 * math.pi * f for f in _A_POLES_HZ]
    z, p, k = signal.bilinear_zpk([0.0] * 4, poles, 1.0, fs=sr)
    sos = signal.zpk2sos(z, p, k)
    _, h = signal.sosfreqz(sos, worN=[1000.0], fs=sr)
    sos[0, :3] /= abs(h[0])
    return sos


def sosfilt_inplace(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Filter a C-contiguous float64 1-D array in place from rest and return it.

    scipy.signal.sosfilt spends more time validating and reshaping than filtering the short spans the
    renderer passes (~0.4 ms per call); this calls its in-place Cython kernel directly when present and
    falls back to the public function otherwise (identical results, tested).
    """
    if (
        _sosfilt is None
        or x.dtype != np.float64
        or x.ndim != 1
        or not x.flags.c_contiguous
        or not x.flags.writeable
    ):
        x[...] = signal.sosfilt(sos, x)
        return x
    _sosfilt(sos, x.reshape(1, -1), np.zeros((1, sos.shape[0], 2)))
    return x


def a_weight(x: np.ndarray, sr: int) -> np.ndarray:
    """A-weighted signal (float64), causal filter starting from rest."""
    return sosfilt_inplace(a_weighting_sos(sr), np.array(x, dtype=np.float64))


def n_frames_for(n_samples: int, hop: int) -> int:
    """Number of grid frames covering n_samples (400 for 10 s at 48 kHz, hop 1200)."""
    return -(-int(n_samples) // hop)


def frame_block(win: int = 2400, hop: int = 1200) -> int:
    """Largest block size that tiles every window of the grid: gcd(hop, win, window offset) (600)."""
    off = (hop - win) // 2
    return math.gcd(math.gcd(hop, win), abs(off)) if off else math.gcd(hop, win)


def block_energies(weighted: np.ndarray, start: int, blk: int) -> tuple[int, np.ndarray]:
    """(first block index j0, energies) of a span at sample `start`: E[k] = sum of squares in block j0+k."""
    n = len(weighted)
    j0 = start // blk
    n_blocks = -(-(start + n) // blk) - j0
    if start % blk == 0 and n % blk == 0:  # block-aligned span: no padding copy
        buf = np.asarray(weighted, dtype=np.float64)
    else:
        buf = np.zeros(n_blocks * blk, dtype=np.float64)
        buf[start - j0 * blk : start - j0 * blk + n] = weighted
    rows = buf.reshape(n_blocks, blk)
    return j0, np.einsum("ij,ij->i", rows, rows)


def frame_power_from_blocks(
    energies: np.ndarray, j0: int, n_frames: int, win: int = 2400, hop: int = 1200
) -> np.ndarray:
    """Frame power on the grid from block energies (blocks of frame_block(win, hop) samples from j0).

    Each window is win/block consecutive blocks; blocks outside the given range count as silence.
    """
    power = np.zeros(n_frames, dtype=np.float64)
    nb = len(energies)
    if nb == 0 or n_frames == 0:
        return power
    blk = frame_block(win, hop)
    off = (hop - win) // 2  # window of frame i starts at i*hop + off
    start, stop = j0 * blk, (j0 + nb) * blk
    lo = max(0, (start - off - win) // hop)
    hi = min(n_frames, (stop - off) // hop + 1)
    if hi <= lo:
        return power
    csum = np.zeros(nb + 1, dtype=np.float64)
    np.cumsum(energies, out=csum[1:])
    b = (np.arange(lo, hi, dtype=np.int64) * hop + off) // blk - j0
    e = np.minimum(b + win // blk, nb)  # np.minimum/maximum: np.clip's wrapper costs ~40 us a call
    np.maximum(b, 0, out=b)
    np.minimum(b, nb, out=b)
    np.maximum(e, 0, out=e)
    power[lo:hi] = (csum[e] - csum[b]) / win
    np.maximum(power, 0.0, out=power)  # cumsum round-off can give -1e-18
    return power


def span_frame_power(
    weighted: np.ndarray, start: int, n_frames: int, win: int = 2400, hop: int = 1200
) -> np.ndarray:
    """Frame power on the grid of a signal whose only non-zero samples are `weighted` at offset `start`.

    Vectorised: the span is cut into blocks of gcd(hop, win, window offset) samples (600 for 2400/1200),
    block energies come from one row-wise dot product, and each window sums win/block consecutive blocks.
    Frames whose windows miss the span get power 0.
    """
    if len(weighted) == 0:
        return np.zeros(n_frames, dtype=np.float64)
    j0, energies = block_energies(weighted, start, frame_block(win, hop))
    return frame_power_from_blocks(energies, j0, n_frames, win, hop)


def power_to_db(power: np.ndarray) -> np.ndarray:
    """10*log10(max(power, 1e-20))."""
    return 10.0 * np.log10(np.maximum(power, POWER_FLOOR))


def frame_power(x: np.ndarray, sr: int, win: int = 2400, hop: int = 1200) -> np.ndarray:
    """A-weighted mean power per grid frame of mono x (ceil(len(x)/hop) frames); raises on non-1-D input."""
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"loudness: expects mono audio (1-D), got shape {x.shape}")
    return span_frame_power(a_weight(x, sr), 0, n_frames_for(len(x), hop), win, hop)


def frame_power_db(x: np.ndarray, sr: int, win: int = 2400, hop: int = 1200) -> np.ndarray:
    """A-weighted RMS level in dBFS per grid frame of x (ceil(len(x)/hop) frames)."""
    return power_to_db(frame_power(x, sr, win, hop))


def loudness_from_power(power: np.ndarray, gate_db: float = GATE_DB, silence_db: float = SILENCE_DB) -> float:
    """Level in dB of frame powers with the two-stage relative gate (module doc); -inf when silent."""
    power = np.asarray(power, dtype=np.float64)
    if power.size == 0:
        return float("-inf")
    ratio = 10.0 ** (gate_db / 10.0)
    mean_all = float(power.mean())
    if not mean_all > 0.0:
        return float("-inf")
    stage1 = power[power > mean_all * ratio]
    gated = stage1[stage1 > float(stage1.mean()) * ratio]
    level = 10.0 * math.log10(float(gated.mean())) if gated.size else float("-inf")
    return level if level >= silence_db else float("-inf")


def measure_loudness_db(
    x: np.ndarray,
    sr: int,
    win: int = 2400,
    hop: int = 1200,
    gate_db: float = GATE_DB,
    silence_db: float = SILENCE_DB,
) -> float:
    """Loudness used for gains: A-weighted gated mean frame power (dB, module doc); -inf for a silent signal."""
    return loudness_from_power(frame_power(x, sr, win, hop), gate_db, silence_db)


def source_block_energies(x: np.ndarray, sr: int, win: int = 2400, hop: int = 1200) -> np.ndarray:
    """Energies of the A-weighted source (filtered from its first sample) in blocks of frame_block(win, hop)
    samples from sample 0 (float64, read-only): any block-aligned window's frame powers follow from it."""
    _, e = block_energies(a_weight(x, sr), 0, frame_block(win, hop))
    e.setflags(write=False)
    return e


@lru_cache(maxsize=16)
def _window_edges(n_blocks: int, n_frames: int, win: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """Block range [lo, hi) of each frame of a block-aligned window of n_blocks blocks (clipped to it)."""
    blk = frame_block(win, hop)
    starts = np.arange(n_frames, dtype=np.int64) * (hop // blk) + (hop - win) // 2 // blk
    lo, hi = np.clip(starts, 0, n_blocks), np.clip(starts + win // blk, 0, n_blocks)
    lo.setflags(write=False)
    hi.setflags(write=False)
    return lo, hi


def window_loudness_db(
    energies: np.ndarray,
    offset: int,
    n: int,
    win: int = 2400,
    hop: int = 1200,
    gate_db: float = GATE_DB,
    silence_db: float = SILENCE_DB,
) -> float:
    """Loudness of the source samples [offset, offset + n) on a clip grid starting at ``offset``.

    ``energies`` are :func:`source_block_energies` (the window keeps the A-weighting filter's state from the
    samples before it, as in the file); ``offset`` must be a multiple of the block (spec offsets are). Samples
    past the end of the source count as silence (as the renderer pads them). Frame powers are the block
    sums of :func:`frame_power_from_blocks`, from one cumulative sum (a few microseconds a window).
    """
    blk = frame_block(win, hop)
    if offset % blk or offset < 0:
        raise ValueError(f"window_loudness_db: offset {offset} is not a non-negative multiple of {blk}")
    j0, nb = offset // blk, -(-n // blk)
    csum = np.zeros(nb + 1, dtype=np.float64)
    e = energies[j0 : j0 + nb]
    np.cumsum(e, out=csum[1 : len(e) + 1])
    csum[len(e) + 1 :] = csum[len(e)]
    lo, hi = _window_edges(nb, n_frames_for(n, hop), win, hop)
    power = csum[hi] - csum[lo]
    power /= win
    np.maximum(power, 0.0, out=power)  # cumsum round-off
    return loudness_from_power(power, gate_db, silence_db)
