"""Frame scores in the ``sed_scores_eval`` format: one DataFrame per clip with columns ``onset``, ``offset``
(seconds, contiguous frames) and one score column per text; on disk one ``<clip_id>.tsv`` per clip.

The model emits, per text, one probability per frame on a grid of 32 frames per 10 s (hop 0.3125 s, frame
``k`` covers ``[k, k + 1) · 0.3125`` s) for audio of any length (``model.inference``: ceil(samples / 15000)
frames at 48 kHz). Median filtering is part of the model side (``frame_probabilities_batch(...,
median_filter=3)`` / ``median_filter_frames``): the probabilities given here are written and scored as
they are; this module never filters, smooths or rescales them.

Score columns are the texts through ``model.text_slots.normalize_text``, the label rule of the readers,
so columns and ground-truth labels compare equal.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from model.text_slots import normalize_text

HOP_S = 0.3125  # 10 s / 32 frames
_TIME_TOL = 1e-6


def score_columns(texts: Sequence[str]) -> list[str]:
    """Normalised, distinct, non-empty column names for ``texts`` (ValueError otherwise)."""
    cols = [normalize_text(t) for t in texts]
    if any(not c for c in cols):
        raise ValueError(f"a text is empty after normalisation: {list(texts)!r}")
    if len(set(cols)) != len(cols):
        dup = sorted({c for c in cols if cols.count(c) > 1})
        raise ValueError(f"texts repeat after normalisation: {dup}")
    if any(c in ("onset", "offset") or "\t" in c or "\\" in c for c in cols):
        raise ValueError(f"a text cannot be used as a score column: {cols!r}")
    return cols


def frame_scores_frame(
    probs: np.ndarray, texts: Sequence[str], hop_s: float = HOP_S, duration: float | None = None
) -> pd.DataFrame:
    """[K, T] probabilities of K texts on T frames -> DataFrame ``onset, offset, <text 1>, ..., <text K>``.

    Frame k spans ``[k, k + 1) · hop_s``. With ``duration``, frames that start at or after it (padding)
    are dropped and the last offset is cut to ``duration``. Values are stored as float64, unchanged."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs must be [K texts, T frames], got shape {p.shape}")
    if p.shape[0] != len(texts):
        raise ValueError(f"probs has {p.shape[0]} rows but {len(texts)} texts were given")
    if not (hop_s > 0 and math.isfinite(hop_s)):
        raise ValueError(f"hop_s must be a positive number, got {hop_s}")
    cols = score_columns(texts)
    n = p.shape[1]
    if duration is not None:
        if not (duration > 0 and math.isfinite(duration)):
            raise ValueError(f"duration must be a positive finite number, got {duration}")
        n = min(n, math.ceil(round(duration / hop_s, 6)))
    if n < 1:
        raise ValueError("no frames")
    t = np.arange(n + 1, dtype=np.float64) * hop_s
    if duration is not None:
        t[-1] = min(t[-1], float(duration))
    data = np.empty((n, 2 + len(cols)))
    data[:, 0], data[:, 1], data[:, 2:] = t[:-1], t[1:], p[:, :n].T
    return pd.DataFrame(data, columns=["onset", "offset", *cols])


def check_scores_frame(df: pd.DataFrame, where: str = "scores") -> None:
    """ValueError unless ``df`` is a valid score DataFrame: ``onset, offset`` first, then >= 1 score
    column; contiguous frames of positive length; finite scores."""
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{where}: expected a pandas DataFrame, got {type(df).__name__}")
    cols = list(df.columns)
    if len(cols) < 3 or cols[0] != "onset" or cols[1] != "offset":
        raise ValueError(f"{where}: columns must be onset, offset, <text>...; got {cols[:5]}")
    if len(df) == 0:
        raise ValueError(f"{where}: no frames")
    a = df.to_numpy(dtype=np.float64, copy=False)
    on, off = a[:, 0], a[:, 1]
    if not np.isfinite(a).all():
        raise ValueError(f"{where}: non-finite times or scores")
    if (off <= on).any() or on[0] < 0:
        raise ValueError(f"{where}: frames must have positive length and start at >= 0")
    if len(on) > 1 and np.abs(off[:-1] - on[1:]).max() > _TIME_TOL:
        raise ValueError(f"{where}: frames are not contiguous (offset of one != onset of the next)")


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temp file + rename (the one atomic writer of the eval outputs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_clip_id(clip: str) -> None:
    if not clip or clip in (".", "..") or any(c in clip for c in "/\\\t\r\n\0") or clip.startswith("."):
        raise ValueError(f"clip id {clip!r} cannot be a score file name")


def write_scores_dir(out_dir: str | os.PathLike, scores: Mapping[str, pd.DataFrame]) -> None:
    """One ``<clip_id>.tsv`` per clip under ``out_dir`` (created), each written atomically (temp file +
    rename), with full float precision (``repr``), so ``read_scores_dir`` gives back the same numbers."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for clip, df in scores.items():
        _check_clip_id(clip)
        check_scores_frame(df, f"scores of {clip!r}")
        cols = [str(c) for c in df.columns]
        if any("\t" in c or "\n" in c for c in cols):
            raise ValueError(f"scores of {clip!r}: a column name contains a tab or line break")
        a = df.to_numpy(dtype=np.float64)
        lines = ["\t".join(cols)]
        lines.extend("\t".join(map(repr, row)) for row in a.tolist())
        atomic_write_text(out / f"{clip}.tsv", "\n".join(lines) + "\n")


def read_scores_file(path: str | os.PathLike) -> pd.DataFrame:
    """One score TSV -> DataFrame (validated; ValueError naming the file when it is not one)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read it ({e})") from None
    header, _, body = text.partition("\n")
    cols = header.rstrip("\r").split("\t")
    try:
        a = np.array(body.split(), dtype=np.float64)
    except ValueError:
        raise ValueError(f"{path}: a score or time is not a number") from None
    if len(cols) < 3 or a.size % len(cols) or not body.strip():
        raise ValueError(
            f"{path}: expected a header onset, offset, <text>... and rows of {len(cols)} numbers"
        )
    df = pd.DataFrame(a.reshape(-1, len(cols)), columns=cols)
    check_scores_frame(df, str(path))
    return df


# label files that `eval.run_all` writes beside the score files of a dataset; never clip ids
RESERVED_NAMES = frozenset({"ground_truth.tsv", "durations.tsv"})


def read_scores_dir(path: str | os.PathLike) -> dict[str, pd.DataFrame]:
    """Every ``*.tsv`` of a folder (not recursive; hidden and temp files ignored) -> clip id -> DataFrame,
    in sorted clip order. FileNotFoundError / NotADirectoryError / ValueError for bad input."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such directory")
    if not path.is_dir():
        raise NotADirectoryError(f"{path}: not a directory")
    with os.scandir(path) as it:  # names, not Paths: sorting 10k Path objects costs more than reading them
        names = sorted(
            e.name
            for e in it
            if e.name.endswith(".tsv") and not e.name.startswith(".") and e.name not in RESERVED_NAMES
        )
    if not names:
        raise ValueError(f"{path}: no .tsv score files")
    return {name[: -len(".tsv")]: read_scores_file(os.path.join(path, name)) for name in names}
