"""Closed-set SED datasets in their published formats (DESED, AudioSet-strong, URBAN-SED, MAESTRO) as clips.

Labels come from `eval.readers`; audio files are found in the dataset's `audio` folder (searched recursively)
by clip id, with or without AudioSet's leading "Y". MAESTRO's soft labels become hard events at confidence
> 0.5 (the DCASE rule), which is what its MPAUC is computed on. A clip without audio, or whose audio cannot be
decoded, is skipped and counted.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from eval.datasets import Clip, DatasetSpec, load_file
from eval.readers import (
    ReadResult,
    read_audioset_label_names,
    read_audioset_strong_tsv,
    read_desed_tsv,
    read_maestro_soft,
    read_urbansed_dir,
)

log = logging.getLogger(__name__)
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".aiff", ".aif")


def read_labels(spec: DatasetSpec) -> ReadResult:
    o = spec.options
    if spec.kind == "desed":
        return read_desed_tsv(o["labels"])
    if spec.kind == "audioset-strong":
        names = read_audioset_label_names(o["label_names"]) if o.get("label_names") else None
        return read_audioset_strong_tsv(o["labels"], names)
    if spec.kind == "urbansed":
        return read_urbansed_dir(o["labels"])
    if spec.kind == "maestro":
        return read_maestro_soft(o["labels"]).to_result(0.5)
    raise ValueError(f"{spec.name}: {spec.kind} is not a closed-set SED format")


def audio_index(folder: str | Path) -> dict[str, Path]:
    """Clip id (file stem) → audio file, over the folder and its subfolders (first in sorted order wins)."""
    index: dict[str, Path] = {}
    for p in sorted(Path(folder).rglob("*")):
        if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file():
            index.setdefault(p.stem, p)
    return index


def _find(index: dict[str, Path], clip: str) -> Path | None:
    stem = Path(clip).stem if Path(clip).suffix.lower() in AUDIO_SUFFIXES else clip
    for cand in (stem, f"Y{stem}", stem[1:] if stem.startswith("Y") else None):
        if cand and cand in index:
            return index[cand]
    return None


def sed_file_clips(spec: DatasetSpec, skipped: Counter, limit: int = 0) -> list[Clip]:
    labels = read_labels(spec)
    skipped.update({f"labels_{k}": v for k, v in labels.skipped.items()})
    gt = labels.ground_truth()
    index = audio_index(spec.options["audio"])
    out: list[Clip] = []
    for clip_id in labels.clips:
        if limit and len(out) >= limit:
            break
        path = _find(index, clip_id)
        if path is None:
            skipped["missing_audio"] += 1
            continue
        try:
            wave, sr = load_file(path)
        except Exception as e:  # noqa: BLE001 - undecodable audio: counted skip
            skipped["decode_error"] += 1
            log.warning("%s: skipped %s (%s)", spec.name, path, e)
            continue
        duration = labels.durations.get(clip_id) or len(wave) / sr
        out.append(Clip(clip_id, wave, sr, float(duration), events=list(gt.get(clip_id, []))))
    return out
