"""Decoding ahead of the model, and groups of files whose windows go through the model together.

`decode_ahead` runs a thread pool that decodes files (libsndfile through `synth.audio.read_audio`) and turns
them into the model's input (`model.inference.prepare_waveform`: channel mean, soxr to 48 kHz, NaN/Inf check —
the very steps `frame_probabilities` applies to a raw array), in input order, while the caller runs the model.
It keeps at most `max_ahead_bytes` of decoded 48-kHz audio (estimated from each file's header) waiting, but
always at least one file. libsndfile and soxr release the GIL, so the threads overlap the model's forward.

`group_files` packs consecutive decoded files into groups of at least `group_samples` samples of audio (a file
is never split): each group is one call of a `*_batch` inference function, whose windows from all the group's files
are batched together in chunks of `model.inference_batch_size`. Files that failed to decode travel in the
groups too (with `error` set), so the caller reports them in order.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import soundfile as sf
import torch

from model.detect.files import AudioInput
from model.inference import prepare_waveform
from synth.audio import read_audio


@dataclass
class Decoded:
    item: AudioInput
    signal: torch.Tensor | None  # mono float32 at the model rate; None when the file failed
    sample_rate: int = 0  # the file's own rate
    channels: int = 0
    duration_s: float = 0.0
    error: str | None = None


def decode_file(item: AudioInput, target_sr: int) -> Decoded:
    """Decode one file to the model's input; any failure becomes `error` (never raises for a bad file)."""
    try:
        x, sr = read_audio(item.path)
        sig = prepare_waveform(x.T, sr, target_sr)
    except Exception as e:  # noqa: BLE001 - AudioDecodeError, NaN/Inf ValueError, MemoryError: a counted skip
        reason = getattr(e, "reason", None) or str(e) or type(e).__name__
        return Decoded(item, None, error=reason)
    return Decoded(item, sig, int(sr), int(x.shape[1]), x.shape[0] / sr)


def _estimated_bytes(item: AudioInput, target_sr: int) -> int:
    """Bytes of the decoded mono float32 signal at `target_sr`, from the header (0 when unreadable)."""
    try:
        info = sf.info(str(item.path))
        return int(info.frames / max(info.samplerate, 1) * target_sr * 4)
    except Exception:  # noqa: BLE001 - the decode itself reports the error
        return 0


def decode_ahead(items: Sequence[AudioInput], target_sr: int, workers: int = 2,
                 max_ahead_bytes: int = 1 << 30) -> Iterator[Decoded]:  # fmt: skip
    """Decoded files in input order; up to `max_ahead_bytes` decoded ahead of the consumer by `workers` threads."""
    if workers < 1:
        yield from (decode_file(it, target_sr) for it in items)
        return
    pending: collections.deque[tuple[Future, int]] = collections.deque()
    ahead = 0
    nxt = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        try:
            while nxt < len(items) or pending:
                while nxt < len(items) and (not pending or ahead < max_ahead_bytes):
                    size = _estimated_bytes(items[nxt], target_sr)
                    pending.append((pool.submit(decode_file, items[nxt], target_sr), size))
                    ahead += size
                    nxt += 1
                fut, size = pending.popleft()
                ahead -= size
                yield fut.result()
        finally:
            for fut, _ in pending:
                fut.cancel()


def group_files(decoded: Iterable[Decoded], group_samples: int) -> Iterator[list[Decoded]]:
    """Consecutive files in groups of ≥ `group_samples` model-rate samples (the last group may hold fewer)."""
    group: list[Decoded] = []
    samples = 0
    for d in decoded:
        group.append(d)
        if d.signal is not None:
            samples += int(d.signal.shape[0])
        if samples >= group_samples:
            yield group
            group, samples = [], 0
    if group:
        yield group
