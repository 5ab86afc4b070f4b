"""Audio reading for the synth stages: probe a file's format and decode it to 48 kHz mono float32.

Choices:
- Decoding is libsndfile through ``soundfile`` (WAV incl. PCM_U8/MS_ADPCM, FLAC up to 24 bit, OGG/Vorbis,
  MP3 with libsndfile >= 1.1). Samples come back as float32 in [-1, 1].
- Downmix = mean over channels. Resampling = ``soxr`` (quality ``HQ`` by default; soxr is deterministic:
  the same input gives the same output bytes on every run).
- Paths that look like URIs (``scheme://...``) other than ``file://`` are read whole through
  ``apache_beam.io.filesystems.FileSystems`` into memory (gs://, s3://, ...); everything else is a local path.
- Every failure (missing file, undecodable bytes, no samples) raises :class:`AudioDecodeError` with the
  path, a readable reason and a ``reason_code`` for skip counting.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from synth.errors import AudioDecodeError
from synth.paths import is_uri, local_path

TARGET_SR = 48000  # §4.2 / App. C.4: mixtures are rendered at 48 kHz
RESAMPLE_QUALITY = "HQ"  # soxr quality; "VHQ" is also accepted by load_audio
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".au", ".opus")

# Containers whose header frame count is an estimate (MP3: off by up to ~50 ms): frames are counted by
# decoding the whole file instead.
EXACT_COUNT_FORMATS = frozenset({"MP3"})


@dataclass(frozen=True)
class AudioInfo:
    """What libsndfile reports about a file without decoding it."""

    duration_s: float
    sample_rate: int
    channels: int
    format: str
    subtype: str
    frames: int


def _open_source(path: str | os.PathLike) -> str | io.BytesIO:
    """A local path string, or the bytes of a remote URI wrapped in BytesIO (raises AudioDecodeError)."""
    if is_uri(path):
        from apache_beam.io.filesystems import FileSystems  # heavy import: only when a URI is read

        try:
            with FileSystems.open(str(path)) as fh:
                data = fh.read()
        except Exception as exc:  # Beam raises BeamIOError/OSError/... depending on the filesystem
            raise AudioDecodeError(str(path), f"cannot open URI: {exc}", "missing_file") from exc
        return io.BytesIO(data)
    p = local_path(path)
    if not Path(p).is_file():
        raise AudioDecodeError(p, "file does not exist", "missing_file")
    return p


def _count_frames(f: sf.SoundFile, block: int = 1 << 16) -> int:
    n = 0
    while True:
        got = f.read(block, dtype="float32", always_2d=True).shape[0]
        n += got
        if got < block:
            return n


def probe_audio(path: str | os.PathLike, verify: bool = True) -> AudioInfo:
    """Duration, rate, channels and encoding of an audio file, read from its header.

    With ``verify`` the first and last few thousand frames are also decoded, which catches truncated or
    corrupt bodies cheaply. MP3 files are decoded whole to count their frames exactly. Raises AudioDecodeError (missing, undecodable, or no samples).
    """
    src = _open_source(path)
    name = str(path)
    try:
        with sf.SoundFile(src) as f:
            frames, sr, ch = int(f.frames), int(f.samplerate), int(f.channels)
            fmt, subtype = str(f.format), str(f.subtype)
            if fmt in EXACT_COUNT_FORMATS:
                frames = _count_frames(f)
            elif verify and frames > 0:
                n = min(frames, 4096)
                head = f.read(n, dtype="float32", always_2d=True)
                if f.seekable() and frames > n:
                    f.seek(frames - n)
                    tail = f.read(n, dtype="float32", always_2d=True)
                else:
                    tail = head
                if head.shape[0] == 0 or tail.shape[0] == 0:
                    raise AudioDecodeError(name, "header announces samples but none decode", "decode_error")
    except AudioDecodeError:
        raise
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise AudioDecodeError(name, f"libsndfile cannot decode it ({exc})", "decode_error") from exc
    if sr <= 0 or ch <= 0:
        raise AudioDecodeError(name, f"invalid header (sample_rate={sr}, channels={ch})", "decode_error")
    if frames <= 0:
        raise AudioDecodeError(name, "file holds no samples", "empty_audio")
    return AudioInfo(
        duration_s=frames / sr, sample_rate=sr, channels=ch, format=fmt, subtype=subtype, frames=frames
    )


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode a whole file at its native rate: float32 array ``[frames, channels]`` and the rate."""
    src = _open_source(path)
    try:
        x, sr = sf.read(src, dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioDecodeError(str(path), f"libsndfile cannot decode it ({exc})", "decode_error") from exc
    if x.shape[0] == 0:
        raise AudioDecodeError(str(path), "file holds no samples", "empty_audio")
    return x, int(sr)


def to_mono(x: np.ndarray) -> np.ndarray:
    """Downmix ``[frames, channels]`` (or ``[frames]``) to mono float32 by the channel mean."""
    if x.ndim == 1:
        return np.ascontiguousarray(x, dtype=np.float32)
    return np.ascontiguousarray(x.mean(axis=1, dtype=np.float32), dtype=np.float32)


def resample(
    x: np.ndarray, sr: int, target_sr: int = TARGET_SR, quality: str = RESAMPLE_QUALITY
) -> np.ndarray:
    """Resample mono float32 audio with soxr (identity when the rates match)."""
    if sr == target_sr:
        return np.ascontiguousarray(x, dtype=np.float32)
    y = soxr.resample(np.ascontiguousarray(x, dtype=np.float32), sr, target_sr, quality=quality)
    return np.ascontiguousarray(y, dtype=np.float32)


def load_audio(
    path: str | os.PathLike, target_sr: int = TARGET_SR, quality: str = RESAMPLE_QUALITY
) -> np.ndarray:
    """Decode ``path`` (local path or URI) to mono float32 at ``target_sr`` (raises AudioDecodeError)."""
    if target_sr <= 0:
        raise ValueError(f"target_sr must be positive, got {target_sr}")
    x, sr = read_audio(path)
    y = resample(to_mono(x), sr, target_sr, quality)
    if not np.all(np.isfinite(y)):
        raise AudioDecodeError(str(path), "decoded samples contain NaN or infinity", "decode_error")
    return y
