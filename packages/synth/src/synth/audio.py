"""Audio reading for the synth stages: probe a file's format and decode it to 48 kHz mono float32.

Choices:
- Decoding is libsndfile through ``soundfile`` (WAV incl. PCM_U8/MS_ADPCM, FLAC up to 24 bit, OGG/Vorbis,
  MP3 with libsndfile >= 1.1). Samples come back as float32 in [-1, 1].
- Downmix = mean over channels, unless the channels cancel: when the mean's energy is more than
  ``DOWNMIX_MAX_LOSS_DB`` (6 dB) below the channels' mean energy (anti-phase or partly out-of-phase
  channels; uncorrelated channels lose 3 dB, one silent channel 3 dB, identical channels 0 dB), the channel
  with the most energy is used instead (:func:`downmix`; :func:`decode_mono` says which channel).
- Resampling = ``soxr`` (quality ``HQ`` by default; soxr is deterministic: the same input gives the same
  output bytes on every run).
- Truncated files are refused (reason ``truncated``): a RIFF/RF64 WAV or AIFF whose data chunk promises more
  bytes than the file holds (libsndfile would decode the shorter sound as if whole), and an Ogg file whose
  last page is cut or lacks the end-of-stream flag. A truncated FLAC fails to decode (``decode_error``);
  MP3 has no length field to compare with.
- Paths that look like URIs (``scheme://...``) other than ``file://`` are read whole through
  ``apache_beam.io.filesystems.FileSystems`` into memory (gs://, s3://, ...); everything else is a local path.
- Every failure (missing file, undecodable bytes, no samples) raises :class:`AudioDecodeError` with the
  path, a readable reason and a ``reason_code`` for skip counting.
"""

from __future__ import annotations

import io
import os
import struct
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
DOWNMIX_MAX_LOSS_DB = 6.0  # ours: a down-mix more than 6 dB below the channels' energy is cancellation
OGG_MAX_PAGE = 65307  # largest Ogg page: 27 + 255 + 255 * 255 bytes


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


def _count_frames(f: sf.SoundFile, name: str = "", block: int = 1 << 16, check_finite: bool = False) -> int:
    n = 0
    while True:
        data = f.read(block, dtype="float32", always_2d=True)
        if check_finite and not np.isfinite(data).all():
            raise AudioDecodeError(name, "decoded samples contain NaN or infinity", "decode_error")
        n += data.shape[0]
        if data.shape[0] < block:
            return n


def _size_of(fh: io.BufferedIOBase | io.BytesIO) -> int:
    fh.seek(0, io.SEEK_END)
    return fh.tell()


def _chunk_shortfall(fh: io.BufferedIOBase | io.BytesIO, size: int) -> tuple[int, int]:
    """(bytes the data chunk of a RIFF/RF64 WAV or AIFF misses, bytes per frame); (0, 1) for other files
    or when the header gives no length (streaming placeholders 0 / 0xFFFFFFFF)."""
    fh.seek(0)
    head = fh.read(12)
    if len(head) < 12:
        return 0, 1
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        end, data_id = "<", b"data"
    elif head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        end, data_id = ">", b"SSND"
    else:
        return 0, 1
    pos, ds64_size, frame_bytes = 12, None, 1
    while pos + 8 <= size:
        fh.seek(pos)
        hdr = fh.read(8)
        cid, (csize,) = hdr[:4], struct.unpack(end + "I", hdr[4:8])
        body = fh.read(18)
        if cid == b"ds64" and len(body) >= 16:
            ds64_size = struct.unpack("<Q", body[8:16])[0]
        elif cid == b"fmt " and len(body) >= 14:
            frame_bytes = max(1, struct.unpack("<H", body[12:14])[0])  # block align
        elif cid == b"COMM" and len(body) >= 8:
            channels, bits = struct.unpack(">H", body[0:2])[0], struct.unpack(">H", body[6:8])[0]
            frame_bytes = max(1, channels * -(-bits // 8))
        if cid == data_id:
            if csize == 0xFFFFFFFF and ds64_size is not None:
                csize = ds64_size
            if csize in (0, 0xFFFFFFFF):
                return 0, frame_bytes
            return max(0, csize - (size - pos - 8)), frame_bytes
        pos += 8 + csize + (csize & 1)
    return 0, frame_bytes


def _ogg_complete(fh: io.BufferedIOBase | io.BytesIO, size: int) -> bool:
    """True when the file's last Ogg page ends exactly at the end of the file and carries end-of-stream."""
    start = max(0, size - OGG_MAX_PAGE)
    fh.seek(start)
    tail = fh.read(size - start)
    pos = len(tail)
    for _ in range(64):  # candidates from the end; a capture pattern inside packet data does not parse
        pos = tail.rfind(b"OggS", 0, pos)
        if pos < 0:
            return False
        if pos + 27 <= len(tail) and tail[pos + 4] == 0:
            nseg = tail[pos + 26]
            table = tail[pos + 27 : pos + 27 + nseg]
            if len(table) == nseg and pos + 27 + nseg + sum(table) == len(tail):
                return bool(tail[pos + 5] & 0x04)
    return False


def check_complete(src: str | io.BytesIO, name: str, fmt: str) -> None:
    """Raise AudioDecodeError ``truncated`` when the container says the file is cut short (module doc)."""
    fh = open(src, "rb") if isinstance(src, str) else src  # noqa: SIM115 - closed below
    try:
        size = _size_of(fh)
        if fmt == "OGG":
            if not _ogg_complete(fh, size):
                raise AudioDecodeError(
                    name, "the last Ogg page is cut or lacks the end-of-stream flag", "truncated"
                )
            return
        short, frame_bytes = _chunk_shortfall(fh, size)
        if short >= frame_bytes:
            raise AudioDecodeError(
                name,
                f"header promises {short} more bytes of audio data than the file holds "
                f"({-(-short // frame_bytes)} frames missing)",
                "truncated",
            )
    finally:
        if isinstance(src, str):
            fh.close()
        else:
            fh.seek(0)


def probe_audio(path: str | os.PathLike, verify: bool = True, full: bool = False) -> AudioInfo:
    """Duration, rate, channels and encoding of an audio file, read from its header.

    Always: the container is checked for truncation (:func:`check_complete`, reason ``truncated``). With
    ``verify`` the first and last few thousand frames are also decoded and must be finite, which catches
    corrupt bodies cheaply; with ``full`` every frame is decoded, must be finite (NaN/inf: ``decode_error``)
    and be as many as the header says (fewer: ``truncated``) - the check :func:`load_audio` makes when a
    file is used. MP3 files are decoded whole to count their frames exactly. Raises AudioDecodeError
    (missing, undecodable, truncated, or no samples).
    """
    src = _open_source(path)
    name = str(path)
    try:
        with sf.SoundFile(src) as f:
            frames, sr, ch = int(f.frames), int(f.samplerate), int(f.channels)
            fmt, subtype = str(f.format), str(f.subtype)
            if fmt in EXACT_COUNT_FORMATS:
                frames = _count_frames(f, name, check_finite=full)
            elif full and frames > 0:
                got = _count_frames(f, name, check_finite=True)
                if got < frames:
                    raise AudioDecodeError(
                        name, f"header says {frames} frames but only {got} decode", "truncated"
                    )
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
                if not (np.isfinite(head).all() and np.isfinite(tail).all()):
                    raise AudioDecodeError(name, "decoded samples contain NaN or infinity", "decode_error")
        check_complete(src, name, fmt)
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


def downmix(x: np.ndarray, max_loss_db: float = DOWNMIX_MAX_LOSS_DB) -> tuple[np.ndarray, int | None]:
    """``[frames, channels]`` (or ``[frames]``) -> (mono float32, channel used or None for the mean).

    The channel mean, unless its energy is more than ``max_loss_db`` below the channels' mean energy (the
    channels cancel): then the channel with the most energy (the first on a tie).
    """
    if x.ndim == 1 or x.shape[1] == 1:
        return np.ascontiguousarray(x.reshape(len(x)), dtype=np.float32), None
    mono = np.ascontiguousarray(x.mean(axis=1, dtype=np.float32), dtype=np.float32)
    per_channel = np.einsum("ij,ij->j", x, x, dtype=np.float64)
    mean_energy = float(per_channel.mean())
    if mean_energy > 0.0:
        mono_energy = float(np.dot(mono.astype(np.float64), mono.astype(np.float64)))
        if mono_energy < mean_energy * 10.0 ** (-max_loss_db / 10.0):
            c = int(np.argmax(per_channel))
            return np.ascontiguousarray(x[:, c], dtype=np.float32), c
    return mono, None


def to_mono(x: np.ndarray) -> np.ndarray:
    """Downmix ``[frames, channels]`` (or ``[frames]``) to mono float32 (:func:`downmix`)."""
    return downmix(x)[0]


def resample(
    x: np.ndarray, sr: int, target_sr: int = TARGET_SR, quality: str = RESAMPLE_QUALITY
) -> np.ndarray:
    """Resample mono float32 audio with soxr (identity when the rates match)."""
    if sr == target_sr:
        return np.ascontiguousarray(x, dtype=np.float32)
    y = soxr.resample(np.ascontiguousarray(x, dtype=np.float32), sr, target_sr, quality=quality)
    return np.ascontiguousarray(y, dtype=np.float32)


@dataclass(frozen=True)
class MonoAudio:
    """A decoded source: mono float32 at the target rate, and the channel used when the mean cancelled."""

    audio: np.ndarray
    channel: int | None = None  # None: the channel mean (or a mono file)


def decode_mono(
    path: str | os.PathLike, target_sr: int = TARGET_SR, quality: str = RESAMPLE_QUALITY
) -> MonoAudio:
    """Decode ``path`` (local path or URI) to mono float32 at ``target_sr``; the usability check every
    stage shares: raises AudioDecodeError when the file is missing, undecodable, truncated, empty, or
    decodes to NaN/inf samples."""
    if target_sr <= 0:
        raise ValueError(f"target_sr must be positive, got {target_sr}")
    src = _open_source(path)
    try:
        with sf.SoundFile(src) as f:
            fmt, header_frames = str(f.format), int(f.frames)
            x = f.read(dtype="float32", always_2d=True)
            sr = int(f.samplerate)
    except Exception as exc:
        raise AudioDecodeError(str(path), f"libsndfile cannot decode it ({exc})", "decode_error") from exc
    if x.shape[0] == 0:
        raise AudioDecodeError(str(path), "file holds no samples", "empty_audio")
    if fmt not in EXACT_COUNT_FORMATS and x.shape[0] < header_frames:
        raise AudioDecodeError(
            str(path), f"header says {header_frames} frames but only {x.shape[0]} decode", "truncated"
        )
    check_complete(src, str(path), fmt)
    mono, channel = downmix(x)
    y = resample(mono, sr, target_sr, quality)
    if not np.all(np.isfinite(y)):
        raise AudioDecodeError(str(path), "decoded samples contain NaN or infinity", "decode_error")
    return MonoAudio(y, channel)


def load_audio(
    path: str | os.PathLike, target_sr: int = TARGET_SR, quality: str = RESAMPLE_QUALITY
) -> np.ndarray:
    """Decode ``path`` (local path or URI) to mono float32 at ``target_sr`` (:func:`decode_mono`)."""
    return decode_mono(path, target_sr, quality).audio
