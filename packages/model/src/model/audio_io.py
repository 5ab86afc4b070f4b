"""Reading audio files for inference (soundfile; any rate / channel count, resampled later by `inference`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def load_audio_file(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode a file → (float32 array [channels, samples], sample_rate). Raises ValueError naming the file."""
    import soundfile as sf

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"audio file not found: {p}")
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except Exception as e:  # noqa: BLE001 - soundfile raises several types; report which file
        raise ValueError(f"cannot decode audio file {p}: {type(e).__name__}: {e}") from e
    if data.shape[0] == 0:
        raise ValueError(f"audio file {p} has no samples")
    return np.ascontiguousarray(data.T), int(sr)
