"""Batch text slots for the frame-wise losses (§3.3): normalised texts, stable ids, slot and label tensors.

* ``normalize_text``: Unicode NFKC, lower case (then NFKC once more, which makes the rule idempotent), whitespace
  runs collapsed to one space, then whitespace and punctuation (Unicode category P*, plus ``string.punctuation``)
  stripped at both ends. ``FLAM.tokenize`` applies it too, so training and inference share one text rule. Inner punctuation is
  kept ("dog's bark" stays, "Dog barks!" -> "dog barks").
* ``text_id``: blake2b (8-byte digest) of the UTF-8 normalised text, big-endian, masked to 63 bits, so ids
  are non-negative int64 and identical in every process (Python's ``hash()`` is salted per process and is
  never used). Padding slots and "no event" entries use ``-1``.
* ``build_text_slots``: the batch text union deduplicated by normalised text, padded to
  ``slots_per_clip × B`` slots (5 × B, §3.3) with a mask, plus ``event_ids [B, E]`` and
  ``event_frames [B, E, L]`` for any number of frames ``L``. The slot texts are the *normalised* strings,
  so equal ids always carry equal text (and hence equal text features) on every rank.
* Frame grid: frame ``l`` of ``L`` covers ``[l, l + 1) · duration / L``. A segment makes a frame active when
  their overlap is longer than ``min_overlap`` × frame length (default 0: any overlap of positive length;
  touching is not overlap). A tolerance of 1e-6 frame lengths absorbs float rounding at frame edges.
* Overflow (more unique texts than slots — frequent with 1..10 events per clip): ``overflow="drop"``
  (default) keeps texts round-robin over clips (first event of every clip, then second events, ...),
  so every clip keeps some of its texts; dropped texts only leave the text set — their events stay in
  ``event_ids`` (they are still true events of the clip, and are positives if another rank holds that text).
  ``"error"`` raises ValueError, ``"grow"`` uses as many slots as unique texts.
"""

from __future__ import annotations

import hashlib
import string
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

PAD_ID = -1
_ID_MASK = (1 << 63) - 1
_EDGE_TOL = 1e-6


def _is_edge_char(ch: str) -> bool:
    return ch.isspace() or ch in string.punctuation or unicodedata.category(ch).startswith("P")


def normalize_text(text: str) -> str:
    """NFKC, lower case, NFKC, collapse whitespace, strip whitespace and punctuation at both ends (idempotent).

    The one text rule of training (slot texts, ids) and inference (`FLAM.tokenize`)."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}: {text!r}")
    nfkc = unicodedata.normalize("NFKC", text)
    # NFKC again after lower(): a lower-case letter may compose where the upper-case one did not ("J" + U+030C
    # stays two code points, "j" + U+030C composes to "ǰ"), and without it a second call would change the text
    t = " ".join(unicodedata.normalize("NFKC", nfkc.lower()).split())
    start, end = 0, len(t)
    while start < end and _is_edge_char(t[start]):
        start += 1
    while end > start and _is_edge_char(t[end - 1]):
        end -= 1
    return t[start:end]


def text_id(text: str) -> int:
    """Stable non-negative 63-bit id of the normalised text (blake2b, 8 bytes)."""
    digest = hashlib.blake2b(normalize_text(text).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & _ID_MASK


def text_ids(texts: Sequence[str]) -> torch.Tensor:
    """int64 ids of ``texts`` (see ``text_id``)."""
    return torch.tensor([text_id(t) for t in texts], dtype=torch.int64)


def frame_activity(
    segments: Sequence[Sequence[float]], duration: float, n_frames: int, min_overlap: float = 0.0
) -> np.ndarray:
    """bool [n_frames]: frame l ([l, l+1)·duration/n_frames) is active if a segment overlaps it by more
    than ``min_overlap`` × frame length. Segments are clipped to [0, duration]."""
    if n_frames <= 0:
        raise ValueError(f"n_frames must be positive, got {n_frames}")
    if not (duration > 0 and np.isfinite(duration)):
        raise ValueError(f"duration must be a positive finite number, got {duration}")
    if not 0.0 <= min_overlap < 1.0:
        raise ValueError(f"min_overlap must be in [0, 1), got {min_overlap}")
    frame_len = duration / n_frames
    starts = np.arange(n_frames, dtype=np.float64) * frame_len
    ends = np.arange(1, n_frames + 1, dtype=np.float64) * frame_len
    active = np.zeros(n_frames, dtype=bool)
    threshold = max(min_overlap, _EDGE_TOL) * frame_len
    for seg in segments:
        if len(seg) != 2:
            raise ValueError(f"segment must be [onset, offset], got {seg!r}")
        on, off = float(seg[0]), float(seg[1])
        if not (np.isfinite(on) and np.isfinite(off)) or off < on:
            raise ValueError(f"invalid segment [{on}, {off}] (need finite onset <= offset)")
        on, off = max(on, 0.0), min(off, duration)
        overlap = np.minimum(ends, off) - np.maximum(starts, on)
        active |= overlap > threshold
    return active


@dataclass
class TextSlots:
    """Slot and label tensors of one (per-rank) batch; K = number of slots, E = max events per clip."""

    texts: list[str]  # [K] normalised slot texts ("" for padding) — feed these to the text encoder
    text_ids: torch.Tensor  # [K] int64, PAD_ID for padding
    text_mask: torch.Tensor  # [K] bool
    event_ids: torch.Tensor  # [B, E] int64, PAD_ID = no event
    event_frames: torch.Tensor  # [B, E, L] bool
    n_unique_texts: int  # unique texts in the batch before any drop
    n_dropped_texts: int  # unique texts left out of the slots (overflow="drop")


def _clip_events(events: Sequence[Mapping], duration: float, n_frames: int, min_overlap: float, where: str):
    """Merge a clip's events by normalised text: list of (norm_text, id, frames [L] bool) in first order."""
    merged: dict[str, tuple[int, np.ndarray]] = {}
    for j, ev in enumerate(events):
        if not isinstance(ev, Mapping) or "text" not in ev:
            raise ValueError(f"{where} event {j}: expected a mapping with 'text' and 'segments', got {ev!r}")
        norm = normalize_text(ev["text"])
        if not norm:
            raise ValueError(f"{where} event {j}: text {ev['text']!r} is empty after normalisation")
        try:
            frames = frame_activity(ev.get("segments", ()), duration, n_frames, min_overlap)
        except ValueError as e:
            raise ValueError(f"{where} event {j} ({ev['text']!r}): {e}") from None
        if norm in merged:
            merged[norm][1][:] |= frames
        else:
            merged[norm] = (text_id(norm), frames)
    return [(t, i, f) for t, (i, f) in merged.items()]


def build_text_slots(
    clips: Sequence[Sequence[Mapping]],
    duration: float | Sequence[float],
    n_frames: int,
    slots_per_clip: int = 5,  # §3.3: 5 × B text slots
    n_slots: int | None = None,
    max_events: int | None = None,
    min_overlap: float = 0.0,
    overflow: str = "drop",
) -> TextSlots:
    """Slots + labels from per-clip event records ``{text, segments: [[on, off], ...]}``.

    ``duration`` is the clip length in seconds (one value or one per clip); ``n_slots`` overrides
    ``slots_per_clip × B``; ``max_events`` fixes E (default: most events in a clip, at least 1; a clip with
    more distinct event texts than ``max_events`` raises ValueError).
    """
    if overflow not in ("drop", "error", "grow"):
        raise ValueError(f"overflow must be 'drop', 'error' or 'grow', got {overflow!r}")
    n_clips = len(clips)
    durations = [float(duration)] * n_clips if np.isscalar(duration) else [float(d) for d in duration]
    if len(durations) != n_clips:
        raise ValueError(f"got {len(durations)} durations for {n_clips} clips")
    per_clip = [
        _clip_events(evs, durations[b], n_frames, min_overlap, f"clip {b}") for b, evs in enumerate(clips)
    ]
    n_events = max([len(p) for p in per_clip] + [1])
    if max_events is None:
        max_events = n_events
    elif n_events > max_events:
        raise ValueError(f"a clip has {n_events} distinct event texts, more than max_events={max_events}")
    capacity = n_slots if n_slots is not None else slots_per_clip * n_clips

    # Unique texts round-robin over clips: clip 0 event 0, clip 1 event 0, ..., clip 0 event 1, ...
    order: list[str] = []
    seen: set[str] = set()
    for e in range(n_events):
        for p in per_clip:
            if e < len(p) and p[e][0] not in seen:
                seen.add(p[e][0])
                order.append(p[e][0])
    n_unique = len(order)
    if n_unique > capacity:
        if overflow == "error":
            raise ValueError(
                f"{n_unique} unique texts do not fit in {capacity} text slots (overflow='error')"
            )
        if overflow == "grow":
            capacity = n_unique
    kept = order[:capacity]

    ids = torch.full((capacity,), PAD_ID, dtype=torch.int64)
    ids[: len(kept)] = torch.tensor([text_id(t) for t in kept], dtype=torch.int64)
    mask = torch.zeros(capacity, dtype=torch.bool)
    mask[: len(kept)] = True
    event_ids = torch.full((n_clips, max_events), PAD_ID, dtype=torch.int64)
    event_frames = torch.zeros((n_clips, max_events, n_frames), dtype=torch.bool)
    for b, p in enumerate(per_clip):
        for e, (_, tid, frames) in enumerate(p):
            event_ids[b, e] = tid
            event_frames[b, e] = torch.from_numpy(frames)
    return TextSlots(
        texts=kept + [""] * (capacity - len(kept)),
        text_ids=ids,
        text_mask=mask,
        event_ids=event_ids,
        event_frames=event_frames,
        n_unique_texts=n_unique,
        n_dropped_texts=n_unique - len(kept),
    )
