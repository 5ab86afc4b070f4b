"""What `model.detect` writes: scored segments, DCASE TSV, per-file JSON, the detection figure; atomic writes.

Segments are the runs of frames whose (median-filtered) probability is ≥ the threshold
(`model.inference.segments_from_probabilities`, the rule of `FLAM.detect`); a segment's score is the highest
frame probability inside it.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.inference import segments_from_probabilities
from synth.relabel import runs  # the run finder of segments_from_probabilities

_UMASK = os.umask(0o022)
os.umask(_UMASK)
TSV_HEADER = "filename\tonset\toffset\tevent_label\tscore\n"


def atomic_write_bytes(path: Path, data: bytes, fsync: bool = False) -> None:
    """Write through a temp file beside `path` + rename: a reader sees the old file or the new one, never a
    part. With `fsync` the data (and the rename) are on disk when this returns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if fsync:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def scored_segments(probs: np.ndarray, threshold: float, hop_s: float,
                    duration_s: float) -> list[tuple[float, float, float]]:  # fmt: skip
    """(onset_s, offset_s, score) of the runs of one text's frame probabilities ≥ threshold; score = run maximum."""
    p = np.asarray(probs)
    segs = segments_from_probabilities(p[None], threshold, hop_s, duration_s)[0]
    idx = runs(p >= threshold)
    return [(a_s, b_s, float(p[a:b].max())) for (a_s, b_s), (a, b) in zip(segs, idx.tolist(), strict=True)]


def _num(x: float) -> str:
    return f"{x:.4f}"


def tsv_rows(filename: str, detections: Sequence[dict[str, Any]]) -> str:
    """DCASE rows (no header), sorted by onset, then label."""
    rows = sorted(detections, key=lambda d: (d["onset"], d["offset"], d["event_label"]))
    return "".join(
        f"{filename}\t{_num(d['onset'])}\t{_num(d['offset'])}\t{d['event_label']}\t{d['score']:.6f}\n"
        for d in rows
    )


def write_tsv(path: Path, filename: str, detections: Sequence[dict[str, Any]]) -> None:
    atomic_write_bytes(path, (TSV_HEADER + tsv_rows(filename, detections)).encode("utf-8"))


def write_json(path: Path, record: dict[str, Any]) -> None:
    atomic_write_bytes(path, json.dumps(record, ensure_ascii=False, indent=1).encode("utf-8"))


def read_json(path: Path) -> dict[str, Any] | None:
    """A previous run's per-file record, or None when absent or unreadable."""
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def render_png(audio_path: str, png_path: str, probs: np.ndarray, queries: list[str],
               detections: list[tuple[float, float, str]], hop_s: float, threshold: float, title: str) -> str:  # fmt: skip
    """The detection figure (runs in the plot thread or a plot worker process): the file's log-mel spectrogram, one probability
    curve per query, the detected segments shaded, time in seconds (`model.figures.plot_detection`)."""
    from model.figures import plot_detection
    from synth.audio import read_audio, to_mono

    x, sr = read_audio(audio_path)
    out = Path(png_path)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}-{threading.get_ident()}.tmp.png")
    try:
        plot_detection(to_mono(x), sr, probs, queries, detections, tmp, hop_s=hop_s, title=title,
                       threshold=threshold)  # fmt: skip
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return png_path
