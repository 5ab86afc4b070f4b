"""Sample records of the rendered data sets: the mixture and audio-text JSON, clip policy, format version.

Everything here decides output bytes: change it only together with :data:`RENDER_FORMAT_VERSION`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

SAMPLE_RATE = 48000  # §4.2: 48 kHz
CLIP_S = 10.0  # §4.2: 10-s clips (mixtures and audio-text clips alike)
AUDIO_TEXT_KINDS = ("event", "background", "none")  # every captioned source file of the split

# Output-format version, part of every split folder's config fingerprint (so a re-run with another value into
# the same folder is refused, and complete shards from other code are never mixed with new ones).
# BUMP RULE: increment it in the same commit as any change that alters a shard byte for the same arguments:
# spec sampling (synth.spec), decoding/resampling (synth.audio), mixing, gains, fades, clip guard
# (synth.render, synth.loudness, synth.source_cache), RMS relabel (synth.relabel), FLAC encoding
# (synth.flac), tar writing (synth.shards), these records, or the skip policy (synth.shard_fns).
RENDER_FORMAT_VERSION = 3  # 2: issue 9 levels/modes/stereo; 3: audio-text clip guard + clip_scale


def json_record_bytes(obj: Any) -> bytes:
    """Compact canonical JSON bytes of a sample record."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def mixture_record(key: str, spec: Any, rendered: Any, sr: int) -> dict[str, Any]:
    """The mixture sample JSON: ``{key, sample_rate, duration, events, spec}``."""
    events = [
        {
            "text": str(e["text"]),
            "tags": [str(t) for t in e.get("tags", [])],
            "source_id": str(e["source_id"]),
            "segments": [[float(a), float(b)] for a, b in e["segments"]],
            **({"source_ids": [str(s) for s in e["source_ids"]]} if e.get("source_ids") else {}),
        }
        for e in rendered.event_labels
    ]
    events.sort(key=lambda e: (e["segments"][0][0] if e["segments"] else 0.0, e["text"]))
    return {
        "key": key,
        "sample_rate": int(sr),
        "duration": len(rendered.audio) / sr,
        "events": events,
        "spec": spec.to_dict(),
    }


def stable_int(text: str) -> int:
    """A 64-bit integer from ``text`` that is the same on every machine and Python (unlike ``hash``)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def audio_text_clip(
    audio: np.ndarray, sr: int, seed: int, source_id: str, clip_s: float = CLIP_S
) -> tuple[np.ndarray, float, float]:
    """Fixed-length audio-text clip: returns ``(clip, offset_s, valid_s)``.

    Files up to ``clip_s`` are kept whole and zero padded at the end; longer files are cropped to a
    ``clip_s`` window whose start is drawn uniformly from ``default_rng([seed, stable_int(id)])``.
    """
    n = int(round(clip_s * sr))
    if len(audio) <= n:
        clip = np.zeros(n, dtype=np.float32)
        clip[: len(audio)] = audio
        return clip, 0.0, len(audio) / sr
    start = int(np.random.default_rng([seed, stable_int(source_id)]).integers(0, len(audio) - n + 1))
    return np.ascontiguousarray(audio[start : start + n], dtype=np.float32), start / sr, n / sr


def audio_text_record(
    key: str, row: Mapping[str, Any], offset_s: float, valid_s: float, sr: int, clip_scale: float = 1.0
) -> dict[str, Any]:
    """LAION-CLAP style JSON (``text`` captions, ``tag`` list) plus provenance of the clip (``clip_scale``:
    the factor a source above full scale was scaled down by, 1.0 otherwise)."""
    return {
        "key": key,
        "text": [str(c) for c in row["captions"]],
        "tag": [str(t) for t in (row.get("tags") or [])],
        "source_id": str(row["id"]),
        "source": str(row.get("source") or ""),
        "license": str(row.get("license") or ""),
        "kind": str(row.get("kind") or ""),
        "caption_source": str(row.get("caption_source") or ""),
        "sample_rate": int(sr),
        "duration": CLIP_S,
        "offset": float(offset_s),
        "valid_duration": float(valid_s),
        "source_duration": float(row["duration_s"]),
        "clip_scale": float(clip_scale),
    }


def audio_text_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Rows that become audio-text clips, in key order: captioned files of :data:`AUDIO_TEXT_KINDS`, by id."""
    keep = [r for r in rows if r["kind"] in AUDIO_TEXT_KINDS and r.get("captions")]
    return sorted(keep, key=lambda r: str(r["id"]))
