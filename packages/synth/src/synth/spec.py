"""Mixture specs: the paper's event-placement distributions (§4.2, App. C.4) as a seeded sampler.

A spec is a JSON-serialisable plan for one 10-s mixture, deterministic from (seed, index) via
``np.random.default_rng([seed, index])``. Every time is sampled as an integer number of samples and stored
in seconds (``samples / sr``; ``round(t * sr)`` recovers the integer exactly).

Placement policy (hard constraints: <= 3 events sounding at any instant, every piece inside the clip,
split pieces >= 0.5 s):
- a single-piece event's onset is drawn uniformly from the exact set of feasible onsets (no retries);
- a split/repeated event draws its layout (lead, gaps) up to ``max_placement_tries`` times; if none fits
  it falls back to one piece (note ``multi_fallback_single``); a split asks for U{2,3} pieces and gets
  min(k, floor(length / 0.5 s)) when the source is too short for k;
- an event that fits nowhere is not placed (note ``unplaced``); a split whose source is shorter than
  2 x 0.5 s or a repeat whose copies do not fit in the clip becomes a single piece (notes
  ``split_too_short`` / ``repeat_too_long``); a source type with no sources falls back to the other type
  (note ``source_type_fallback``). Every note is a count in ``MixtureSpec.notes``.

Levels: the background is set to ``background_level_db`` (A-weighted active-frame loudness, see
synth.loudness, measured over the whole file: backgrounds are stationary ambiances, and a per-file value
can be precomputed in the manifest); each event to background level + U(6, 30) dB. Default -55 dBFS, the reference level of
the DESED / DCASE Task 4 Scaper recipes (ref_db=-55): on the dev corpus 12 % of mixtures then need clip
scaling (median -1.5 dB) against 68 % (median -5 dB) at -45 dBFS, and event levels (-49..-25 dBFS) stay
21-45 dB above the absolute -70 dB relabel threshold.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from synth.relabel import RelabelConfig

SPEC_VERSION = 1


@dataclass(frozen=True)
class MixtureConfig:
    sample_rate: int = 48000  # §4.2: 48 kHz mixtures
    duration_s: float = 10.0  # §4.2: 10-s clips
    min_events: int = 1  # §4.2: N ~ U{1..10}
    max_events: int = 10  # §4.2: N ~ U{1..10}
    sfx_fraction: float = 0.8  # App. C.4: 80 % of events from sound-effect sources
    max_concurrent: int = 3  # App. C.4: at most 3 events sounding at once
    split_prob: float = 0.1  # App. C.4: 10 % of events split into pieces
    split_pieces: tuple[int, int] = (2, 3)  # App. C.4: U{2,3} pieces
    min_piece_s: float = 0.5  # App. C.4: each piece >= 0.5 s
    repeat_prob: float = 0.1  # App. C.4: 10 % of events repeated
    repeat_count: tuple[int, int] = (2, 3)  # App. C.4: U{2,3} times
    snr_db: tuple[float, float] = (6.0, 30.0)  # App. C.4: event gain offset U(6, 30) dB over the background
    fade_s: float = 0.01  # App. C.4: 10 ms fades on each piece edge
    background_level_db: float = -55.0  # ours (DESED's ref_db): background reference loudness, module doc
    max_placement_tries: int = 50  # ours: layout draws for a split/repeated event before falling back
    max_peak: float = 1.0 - 2.0**-15  # ours: scale the mix down when its peak exceeds this (16-bit safe)
    relabel: RelabelConfig = field(default_factory=RelabelConfig)  # App. C.4 RMS relabel settings

    def __post_init__(self) -> None:
        if not 1 <= self.min_events <= self.max_events:
            raise ValueError(
                f"MixtureConfig: need 1 <= min_events <= max_events, got {self.min_events}..{self.max_events}"
            )
        if self.split_prob + self.repeat_prob > 1 or min(self.split_prob, self.repeat_prob) < 0:
            raise ValueError("MixtureConfig: split_prob and repeat_prob must be >= 0 and sum to <= 1")
        if self.max_concurrent < 1 or self.duration_s <= 0 or self.sample_rate <= 0:
            raise ValueError("MixtureConfig: max_concurrent, duration_s, sample_rate must be positive")

    @property
    def n_samples(self) -> int:
        return int(round(self.duration_s * self.sample_rate))


@dataclass(frozen=True)
class SourceInfo:
    id: str
    duration_s: float
    source_type: str = "sfx"
    captions: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    loudness_db: float | None = None


def _finite_or_none(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


@dataclass
class SourcePool:
    """Event sources by type and background sources of one split, sorted by id (row order never matters)."""

    sfx: list[SourceInfo]
    general: list[SourceInfo]
    backgrounds: list[SourceInfo]
    split: str | None = None
    skipped: Counter = field(default_factory=Counter)

    @classmethod
    def from_manifest(
        cls, table: Any, split: str | None = "train", min_background_s: float = 10.0
    ) -> SourcePool:
        """Pool from a manifest table (pyarrow Table or list of row dicts); split=None takes every split."""
        rows = table.to_pylist() if hasattr(table, "to_pylist") else list(table)
        skipped: Counter = Counter()
        sfx, general, bgs = [], [], []
        for row in rows:
            if split is not None and row.get("split") != split:
                continue
            kind = row.get("kind")
            if kind not in ("event", "background"):
                continue
            dur = row.get("duration_s")
            if dur is None or not math.isfinite(float(dur)) or float(dur) <= 0:
                skipped[f"{kind}_bad_duration"] += 1
                continue
            captions = tuple(c for c in (row.get("captions") or []) if c)
            if kind == "event" and not captions:
                skipped["event_no_caption"] += 1
                continue
            info = SourceInfo(
                id=str(row["id"]),
                duration_s=float(dur),
                source_type=row.get("source_type") or "general",
                captions=captions,
                tags=tuple(row.get("tags") or ()),
                loudness_db=_finite_or_none(row.get("loudness_db")),
            )
            if kind == "background":
                if info.duration_s < min_background_s:
                    skipped["background_too_short"] += 1
                    continue
                bgs.append(info)
            elif info.source_type == "sfx":
                sfx.append(info)
            else:
                general.append(info)
        key = lambda s: s.id  # noqa: E731
        pool = cls(sorted(sfx, key=key), sorted(general, key=key), sorted(bgs, key=key), split, skipped)
        if not pool.sfx and not pool.general:
            raise ValueError(
                f"SourcePool: no event sources with captions in split {split!r} ({len(rows)} rows)"
            )
        return pool


@dataclass
class BackgroundSpec:
    id: str
    offset: float  # seconds into the background file
    level_db: float  # target loudness
    loudness_db: float | None  # source loudness (None: measured at render time)
    gain_db: float | None  # level_db - loudness_db when known


@dataclass
class EventSpec:
    id: str
    caption: str
    tags: list[str]
    source_type: str
    mode: str  # single | split | repeat
    onset: float  # seconds, first piece's start in the clip
    snr_db: float  # level over the background
    level_db: float  # target loudness = background level + snr_db
    loudness_db: float | None
    gain_db: float | None
    pieces: list[list[float]]  # [[src_start, dst_start, dur], ...] seconds


@dataclass
class MixtureSpec:
    seed: int
    index: int
    sample_rate: int
    duration: float
    background: BackgroundSpec | None
    events: list[EventSpec]
    notes: dict[str, int] = field(default_factory=dict)
    version: int = SPEC_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, data: str | bytes | dict) -> MixtureSpec:
        d = json.loads(data) if isinstance(data, str | bytes) else dict(data)
        if d.get("version") != SPEC_VERSION:
            raise ValueError(f"MixtureSpec.from_json: unsupported spec version {d.get('version')!r}")
        bg = d.get("background")
        try:
            return cls._from_dict(d, bg)
        except (KeyError, TypeError) as e:
            raise ValueError(f"MixtureSpec.from_json: malformed spec ({e})") from e

    @classmethod
    def _from_dict(cls, d: dict, bg: dict | None) -> MixtureSpec:
        return cls(
            seed=int(d["seed"]),
            index=int(d["index"]),
            sample_rate=int(d["sample_rate"]),
            duration=float(d["duration"]),
            background=BackgroundSpec(**bg) if bg is not None else None,
            events=[EventSpec(**e) for e in d["events"]],
            notes={str(k): int(v) for k, v in d.get("notes", {}).items()},
            version=int(d["version"]),
        )


def full_regions(intervals: list[tuple[int, int]], limit: int) -> list[tuple[int, int]]:
    """Maximal [start, end) regions where at least `limit` of the half-open intervals overlap."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    out: list[tuple[int, int]] = []
    depth, region_start = 0, None
    for pos, step in edges:  # ends (-1) sort before starts (+1) at equal positions: touching never overlaps
        depth += step
        if depth >= limit and region_start is None:
            region_start = pos
        elif depth < limit and region_start is not None:
            if out and out[-1][1] == region_start:  # an end and a start at one position: keep one region
                out[-1] = (out[-1][0], pos)
            elif pos > region_start:
                out.append((region_start, pos))
            region_start = None
    return out


def max_concurrency(intervals: list[tuple[int, int]]) -> int:
    """Largest number of half-open intervals sharing an instant."""
    depth = best = 0
    for _, step in sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals]):
        depth += step
        best = max(best, depth)
    return best


def _fits(pieces: list[tuple[int, int]], full: list[tuple[int, int]]) -> bool:
    return all(not (s < fe and fs < e) for s, e in pieces for fs, fe in full)


def sample_feasible_onset(
    rng: np.random.Generator, length: int, n: int, full: list[tuple[int, int]]
) -> int | None:
    """Uniform integer onset o in [0, n - length] with [o, o + length) missing every full region."""
    if length > n:
        return None
    allowed = [(0, n - length + 1)]  # half-open integer ranges
    for fs, fe in full:
        lo, hi = fs - length + 1, fe  # forbidden onsets [lo, hi)
        nxt = []
        for a, b in allowed:
            if hi <= a or lo >= b:
                nxt.append((a, b))
                continue
            if a < lo:
                nxt.append((a, lo))
            if hi < b:
                nxt.append((hi, b))
        allowed = nxt
    total = sum(b - a for a, b in allowed)
    if total <= 0:
        return None
    k = int(rng.integers(total))
    for a, b in allowed:
        if k < b - a:
            return a + k
        k -= b - a
    raise AssertionError("unreachable")


def _partition(rng: np.random.Generator, total: int, parts: int) -> np.ndarray:
    """Random split of `total` samples into `parts` non-negative integers (uniform cut points)."""
    cuts = np.sort(rng.integers(0, total + 1, size=parts - 1))
    return np.diff(np.concatenate(([0], cuts, [total]))).astype(np.int64)


def _layout(rng: np.random.Generator, lengths: list[int], n: int) -> list[int]:
    """Piece start positions in order with random lead and gaps so that every piece is in [0, n)."""
    slack = n - sum(lengths)
    spaces = _partition(rng, slack, len(lengths) + 1)  # lead, gaps..., tail
    starts, pos = [], int(spaces[0])
    for i, ln in enumerate(lengths):
        starts.append(pos)
        pos += ln + int(spaces[i + 1])
    return starts


def _pick_type(
    rng: np.random.Generator, pool: SourcePool, cfg: MixtureConfig, notes: Counter
) -> list[SourceInfo]:
    want_sfx = rng.random() < cfg.sfx_fraction
    first, other = (pool.sfx, pool.general) if want_sfx else (pool.general, pool.sfx)
    if first:
        return first
    notes["source_type_fallback"] += 1
    return other


def sample_spec(pool: SourcePool, cfg: MixtureConfig, seed: int, index: int) -> MixtureSpec:
    """One mixture spec, deterministic from (seed, index)."""
    if seed < 0 or index < 0:
        raise ValueError(f"sample_spec: seed and index must be non-negative, got {seed}, {index}")
    rng = np.random.default_rng([seed, index])
    sr, n = cfg.sample_rate, cfg.n_samples
    notes: Counter = Counter()
    sec = lambda k: float(k) / sr  # noqa: E731

    background = None
    if pool.backgrounds:
        bg = pool.backgrounds[int(rng.integers(len(pool.backgrounds)))]
        bg_len = int(math.floor(bg.duration_s * sr))
        offset = int(rng.integers(0, max(0, bg_len - n) + 1))
        gain = None if bg.loudness_db is None else cfg.background_level_db - bg.loudness_db
        background = BackgroundSpec(bg.id, sec(offset), cfg.background_level_db, bg.loudness_db, gain)
    else:
        notes["no_background"] += 1

    n_events = int(rng.integers(cfg.min_events, cfg.max_events + 1))
    min_piece = int(round(cfg.min_piece_s * sr))
    placed: list[tuple[int, int]] = []
    events: list[EventSpec] = []
    for _ in range(n_events):
        sources = _pick_type(rng, pool, cfg, notes)
        src = sources[int(rng.integers(len(sources)))]
        caption = src.captions[int(rng.integers(len(src.captions)))]
        snr = float(rng.uniform(*cfg.snr_db))
        u = float(rng.random())
        k_multi = int(rng.integers(cfg.split_pieces[0], cfg.split_pieces[1] + 1))
        k_rep = int(rng.integers(cfg.repeat_count[0], cfg.repeat_count[1] + 1))
        src_len = max(1, int(math.floor(src.duration_s * sr)))
        seg_len = min(src_len, n)
        seg_start = int(rng.integers(0, src_len - seg_len + 1))

        mode = "single"
        if u < cfg.split_prob:
            k = min(k_multi, seg_len // min_piece)
            if k >= 2:
                mode, lengths = (
                    "split",
                    [int(x) + min_piece for x in _partition(rng, seg_len - k * min_piece, k)],
                )
                src_starts = list(seg_start + np.concatenate(([0], np.cumsum(lengths)[:-1])))
            else:
                notes["split_too_short"] += 1
        elif u < cfg.split_prob + cfg.repeat_prob:
            k = min(k_rep, n // seg_len)
            if k >= 2:
                mode, lengths, src_starts = "repeat", [seg_len] * k, [seg_start] * k
            else:
                notes["repeat_too_long"] += 1

        full = full_regions(placed, cfg.max_concurrent)
        dst_starts = None
        if mode != "single":
            for _ in range(cfg.max_placement_tries):
                cand = _layout(rng, lengths, n)
                if _fits([(s, s + ln) for s, ln in zip(cand, lengths, strict=True)], full):
                    dst_starts = cand
                    break
            if dst_starts is None:
                notes["multi_fallback_single"] += 1
                mode = "single"
        if mode == "single":
            lengths, src_starts = [seg_len], [seg_start]
            onset = sample_feasible_onset(rng, seg_len, n, full)
            if onset is None:
                notes["unplaced"] += 1
                continue
            dst_starts = [onset]

        placed += [(s, s + ln) for s, ln in zip(dst_starts, lengths, strict=True)]
        level = cfg.background_level_db + snr
        events.append(
            EventSpec(
                id=src.id,
                caption=caption,
                tags=list(src.tags),
                source_type=src.source_type,
                mode=mode,
                onset=sec(dst_starts[0]),
                snr_db=snr,
                level_db=level,
                loudness_db=src.loudness_db,
                gain_db=None if src.loudness_db is None else level - src.loudness_db,
                pieces=[
                    [sec(a), sec(b), sec(c)] for a, b, c in zip(src_starts, dst_starts, lengths, strict=True)
                ],
            )
        )
    return MixtureSpec(
        seed=int(seed),
        index=int(index),
        sample_rate=sr,
        duration=float(cfg.duration_s),
        background=background,
        events=events,
        notes=dict(sorted(notes.items())),
    )
