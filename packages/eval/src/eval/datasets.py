"""Evaluation datasets: the config (`configs/eval/*.yaml`), and clips with their labels for every kind.

A dataset entry is ``NAME: {kind: K, ...paths}``:

| kind | task | keys |
| --- | --- | --- |
| `mixtures` | sed (open vocabulary: each clip scored on its own events' texts, §5.2) | `path` (mixture shards) |
| `desed`, `audioset-strong`, `urbansed` | sed (closed set: every clip scored on every class) | `labels`, `audio` (+ `label_names` for AudioSet) |
| `maestro` | sed, soft labels (MPAUC only) | `labels`, `audio` |
| `audio-text`, `clotho`, `audiocaps` | retrieval | `path` (audio-text shards) or `csv` + `audio` |
| `esc50`, `urbansound8k`, `vggsound`, `csv` | zeroshot | `csv`, `audio`, optional `template`, `folds`, `split` |

A dataset whose paths do not exist is skipped with one line, and the report lists it with the reason.
"""

from __future__ import annotations

import io
import json
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import yaml

from model.text_slots import normalize_text
from model.train.shards import expand_shards, iter_refs, open_shard, read_member
from synth.audio import read_audio, to_mono

log = logging.getLogger(__name__)

SED_KINDS = ("mixtures", "desed", "audioset-strong", "urbansed", "maestro")
RETRIEVAL_KINDS = ("audio-text", "clotho", "audiocaps")
ZEROSHOT_KINDS = ("esc50", "urbansound8k", "vggsound", "csv")
KINDS = SED_KINDS + RETRIEVAL_KINDS + ZEROSHOT_KINDS
_PATH_KEYS = ("path", "labels", "audio", "csv", "label_names")


def task_of(kind: str) -> str:
    if kind in SED_KINDS:
        return "sed"
    if kind in RETRIEVAL_KINDS:
        return "retrieval"
    return "zeroshot"


@dataclass
class Clip:
    """One evaluation clip: mono audio and its labels (events for SED, captions for retrieval, class id)."""

    id: str
    wave: np.ndarray
    sample_rate: int
    duration: float
    events: list[tuple[float, float, str]] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    label: int = -1


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    kind: str
    options: dict[str, Any]

    @property
    def task(self) -> str:
        return task_of(self.kind)

    def missing(self) -> str | None:
        """Why the dataset cannot be evaluated here (a path that does not exist), or None."""
        for key in _PATH_KEYS:
            v = self.options.get(key)
            if v is None:
                continue
            if key == "path":
                if not expand_shards(str(v)):
                    return f"{key} {v} matches no shard file"
            elif not Path(v).exists():
                return f"{key} {v} not found"
        return None


def parse_config(path: str | Path | None) -> tuple[list[DatasetSpec], dict[str, Any]]:
    """(datasets, settings) from an eval YAML: ``{datasets: {NAME: {kind, ...}}, settings: {...}}``."""
    if path is None:
        return [], {}
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"eval config not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{p}: not valid YAML ({e})") from None
    unknown = set(raw) - {"datasets", "settings"}
    if unknown:
        raise ValueError(f"{p}: unknown top-level key(s) {sorted(unknown)} (expected datasets, settings)")
    specs = []
    for name, entry in (raw.get("datasets") or {}).items():
        if not isinstance(entry, dict) or entry.get("kind") not in KINDS:
            raise ValueError(f"{p}: dataset {name!r} needs kind: one of {', '.join(KINDS)}")
        opts = {k: v for k, v in entry.items() if k != "kind"}
        specs.append(DatasetSpec(str(name), entry["kind"], opts))
    return specs, dict(raw.get("settings") or {})


# ------------------------------------------------------------------------------------------ shards


def _decode(data: bytes) -> tuple[np.ndarray, int]:
    x, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    if x.shape[0] == 0:
        raise ValueError("audio holds no samples")
    return x.mean(axis=1, dtype=np.float32), int(sr)


def shard_clips(spec: str, kind: str, skipped: Counter, limit: int = 0) -> Iterator[Clip]:
    """Clips of mixture shards (events) or audio-text shards (captions), in shard and tar order."""
    n = 0
    for shard in expand_shards(spec):
        try:
            f = open_shard(shard)
        except OSError as e:
            skipped["shard_unreadable"] += 1
            log.warning("skipped shard %s: %s", shard, e)
            continue
        with f:
            try:
                refs = list(iter_refs(shard, f))
            except Exception as e:  # noqa: BLE001 - a damaged tar: keep what was listed before the damage
                skipped["shard_damaged"] += 1
                log.warning("damaged shard %s: %s", shard, e)
                refs = []
            for ref in refs:
                if limit and n >= limit:
                    return
                clip_id = f"{Path(shard).stem}-{ref.key}"
                try:
                    files = {ext: read_member(f, off, size) for ext, off, size in ref.members}
                    rec = json.loads(files["json"].decode("utf-8"))
                    audio = files.get("flac", files.get("wav"))
                    if audio is None:
                        raise ValueError("no audio member")
                    wave, sr = _decode(audio)
                    duration = float(rec.get("duration") or len(wave) / sr)
                    if kind == "mixtures":
                        events = [
                            (float(on), float(off), normalize_text(ev["text"]))
                            for ev in rec["events"]
                            for on, off in ev["segments"]
                        ]
                        clip = Clip(clip_id, wave, sr, duration, events=events)
                    else:
                        caps = rec.get("text") or []
                        caps = [normalize_text(c) for c in ([caps] if isinstance(caps, str) else caps)]
                        caps = [c for c in caps if c]
                        if not caps:
                            raise ValueError("no caption")
                        clip = Clip(clip_id, wave, sr, duration, captions=caps)
                except Exception as e:  # noqa: BLE001 - any bad sample is a counted skip
                    skipped["bad_sample"] += 1
                    log.warning("skipped %s key %s: %s", shard, ref.key, e)
                    continue
                n += 1
                yield clip


def load_file(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono float32 audio at its own rate (the model resamples); raises synth.errors.AudioDecodeError."""
    x, sr = read_audio(path)
    return to_mono(x), sr
