"""Mixture specs: the paper's event-placement distributions (§4.2) as a seeded sampler.

A spec is a JSON-serialisable plan for one 10-s mixture, deterministic from (seed, index) via
``np.random.default_rng([seed, index])``. Every time is sampled as an integer number of samples and stored
in seconds (``samples / sr``; ``round(t * sr)`` recovers the integer exactly).

Per event, in this order: the source type (80 % sfx), then the mode (split with probability ``split_prob``,
repeat with ``repeat_prob``, else single), then a source of that type that can honour the mode: a split
needs a source of at least 2 x 0.5 s, a repeat one whose copies fit the clip twice (<= 5 s). So the
realised mode shares match the configured ones even when most sources are short. When no source of the
type can honour the mode the event is single (note ``split_no_source`` / ``repeat_no_source``).

Placement policy (hard constraints: <= 3 events sounding at any instant, every piece inside the clip,
split pieces >= 0.5 s):
- a single-piece event's onset is drawn uniformly from the exact set of feasible onsets (no retries);
- a split/repeated event draws its layout (uniform lead and gaps) up to ``max_placement_tries`` times;
  in a crowded clip where none fits, it then places its pieces one by one, each uniformly among the free
  onsets that leave room for the rest (up to ``max_placement_tries`` times); if that fails too it falls
  back to one piece (note ``multi_fallback_single``); a split asks for U{2,3} pieces and gets
  min(k, floor(length / 0.5 s)) when the source is too short for k;
- all events are drawn first; the split/repeated ones are placed first (they need the room), then the
  single ones; the spec lists the events in their drawn order;
- an event that fits nowhere is not placed (note ``unplaced``); a source type with no sources falls back
  to the other type (note ``source_type_fallback``). Every note is a count in ``MixtureSpec.notes``.

Sources: event sources shorter than ``min_event_s`` (50 ms: the shortest labelled run, 2 frames) are left
out of the pool (counted as ``event_too_short``), so a 1-sample file never becomes a labelled event.

Levels: §4.2 sets each event U(6, 30) dB relative to the background. The background is set to
``background_level_db`` measured on the 10-s window actually used (its offset is drawn on the 600-sample
block grid of the loudness frames, so the renderer measures it from per-source block energies; see
synth.render), and each event to that level + U(6, 30) dB. The window level is not known when sampling:
``BackgroundSpec.loudness_db``/``gain_db`` are left None and the renderer records what it measured. Event
gains come from the manifest's ``loudness_db`` (the same measure, synth.loudness, over the whole source:
an event source is used whole) or, when absent, from the renderer. Default -55 dBFS, the reference level of
the DESED / DCASE Task 4 Scaper recipes (ref_db=-55): on the dev corpus 12 % of mixtures then need clip
scaling (median -1.5 dB) against 68 % (median -5 dB) at -45 dBFS, and event levels (-49..-25 dBFS) stay
21-45 dB above the -70 dBFS relabel threshold (synth.relabel, ``threshold_ref``).
"""

from __future__ import annotations

import json
import math
import numbers
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from synth.loudness import frame_block
from synth.relabel import RelabelConfig

SPEC_VERSION = 2
MODES = ("single", "split", "repeat")


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_finite(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _is_range(v: Any, item: Any) -> bool:
    """Whether `v` is an ordered pair [lo, hi] (lo <= hi) of values that pass `item`."""
    return isinstance(v, tuple | list) and len(v) == 2 and all(item(x) for x in v) and v[0] <= v[1]


def _require(name: str, value: Any, ok: bool, allowed: str) -> None:
    if not ok:
        raise ValueError(f"MixtureConfig.{name} must be {allowed}, got {value!r}")


@dataclass(frozen=True)
class MixtureConfig:
    sample_rate: int = 48000  # §4.2: 48 kHz mixtures
    duration_s: float = 10.0  # §4.2: 10-s clips
    min_events: int = 1  # §4.2: N ~ U{1..10}
    max_events: int = 10  # §4.2: N ~ U{1..10}
    sfx_fraction: float = 0.8  # §4.2: 80 % of events from sound-effect sources
    max_concurrent: int = 3  # §4.2: at most 3 events sounding at once
    split_prob: float = 0.1  # §4.2: 10 % of events split into pieces
    split_pieces: tuple[int, int] = (2, 3)  # §4.2: U{2,3} pieces
    min_piece_s: float = 0.5  # §4.2: each piece >= 0.5 s
    repeat_prob: float = 0.1  # §4.2: 10 % of events repeated
    repeat_count: tuple[int, int] = (2, 3)  # §4.2: U{2,3} times
    snr_db: tuple[float, float] = (6.0, 30.0)  # §4.2: event level U(6, 30) dB relative to the background
    fade_s: float = 0.01  # §4.2: 10 ms fades on each piece edge
    background_level_db: float = -55.0  # ours (DESED's ref_db): background reference loudness, module doc
    min_event_s: float = 0.05  # ours: shorter event sources are left out of the pool (module doc)
    max_placement_tries: int = 50  # ours: layout draws for a split/repeated event before falling back
    max_peak: float = 1.0 - 2.0**-15  # ours: scale the mix down when its peak exceeds this (16-bit safe)
    relabel: RelabelConfig = field(default_factory=RelabelConfig)  # App. C.4 RMS relabel settings

    def __post_init__(self) -> None:
        """Every field in its allowed range: one ValueError naming the field, its value and the range."""
        sr = self.sample_rate
        _require("sample_rate", sr, _is_int(sr) and sr > 0, "an integer > 0 (Hz)")
        _require("duration_s", self.duration_s, _is_finite(self.duration_s) and self.duration_s > 0,
                 "a finite number of seconds > 0")  # fmt: skip
        if not (
            _is_int(self.min_events) and _is_int(self.max_events) and 1 <= self.min_events <= self.max_events
        ):
            raise ValueError(
                f"MixtureConfig: need 1 <= min_events <= max_events, got {self.min_events}..{self.max_events}"
            )
        for name in ("max_concurrent", "max_placement_tries"):
            v = getattr(self, name)
            _require(name, v, _is_int(v) and v >= 1, "an integer >= 1")
        for name in ("sfx_fraction", "split_prob", "repeat_prob"):
            v = getattr(self, name)
            _require(name, v, _is_finite(v) and 0 <= v <= 1, "a probability in [0, 1]")
        if self.split_prob + self.repeat_prob > 1:
            raise ValueError(f"MixtureConfig: split_prob + repeat_prob must be <= 1, got {self.split_prob} + "
                             f"{self.repeat_prob}")  # fmt: skip
        for name in ("split_pieces", "repeat_count"):
            v = getattr(self, name)
            _require(
                name, v, _is_range(v, lambda x: _is_int(x) and x >= 1), "[lo, hi]: integers, 1 <= lo <= hi"
            )
        _require("snr_db", self.snr_db, _is_range(self.snr_db, _is_finite), "[lo, hi]: finite dB, lo <= hi")
        _require("min_piece_s", self.min_piece_s, _is_finite(self.min_piece_s) and self.min_piece_s * sr >= 1,
                 f"a finite number of seconds of at least one sample (>= 1 / sample_rate = {1 / sr:.3g} s)")  # fmt: skip
        for name in ("fade_s", "min_event_s"):
            v = getattr(self, name)
            _require(name, v, _is_finite(v) and v >= 0, "a finite number of seconds >= 0")
        _require("background_level_db", self.background_level_db, _is_finite(self.background_level_db),
                 "a finite level in dBFS")  # fmt: skip
        _require("max_peak", self.max_peak, _is_finite(self.max_peak) and self.max_peak > 0,
                 "a finite peak > 0 (1 - 2**-15, the default, keeps 16-bit output unclipped)")  # fmt: skip
        _require("relabel", self.relabel, isinstance(self.relabel, RelabelConfig), "a RelabelConfig")
        if self.relabel.sample_rate != self.sample_rate:
            raise ValueError(
                f"MixtureConfig: relabel.sample_rate {self.relabel.sample_rate} != sample_rate "
                f"{self.sample_rate}"
            )

    @property
    def n_samples(self) -> int:
        return int(round(self.duration_s * self.sample_rate))

    @property
    def offset_grid(self) -> int:
        """Background offsets are multiples of this many samples (the loudness frames' block, 600)."""
        return frame_block(self.relabel.win, self.relabel.hop)


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
    _by_mode: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def sources_for(self, source_type: str, mode: str, cfg: MixtureConfig) -> list[SourceInfo]:
        """The sources of a type that can honour a mode (module doc), in pool order; memoised."""
        key = (source_type, mode, cfg.sample_rate, cfg.n_samples, cfg.min_piece_s)
        got = self._by_mode.get(key)
        if got is None:
            sources = self.sfx if source_type == "sfx" else self.general
            if mode == "single":
                got = sources
            else:
                min_piece, n = int(round(cfg.min_piece_s * cfg.sample_rate)), cfg.n_samples
                lens = [min(_source_len(s, cfg.sample_rate), n) for s in sources]
                ok = (lambda ln: ln >= 2 * min_piece) if mode == "split" else (lambda ln: 2 * ln <= n)
                got = [s for s, ln in zip(sources, lens, strict=True) if ok(ln)]
            self._by_mode[key] = got
        return got

    @classmethod
    def from_manifest(
        cls,
        table: Any,
        split: str | None = "train",
        min_background_s: float = 10.0,
        min_event_s: float = MixtureConfig.min_event_s,
    ) -> SourcePool:
        """Pool from a manifest table (pyarrow Table or list of row dicts); split=None takes every split.

        Left out, counted in ``skipped``: rows with a bad duration, events without captions, events shorter
        than ``min_event_s`` (``event_too_short``) and backgrounds shorter than ``min_background_s``."""
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
            elif info.duration_s < min_event_s:
                skipped["event_too_short"] += 1
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
    offset: float  # seconds into the background file (a multiple of MixtureConfig.offset_grid samples)
    level_db: float  # target loudness of the window
    loudness_db: float | None  # loudness of the window used (None until the renderer measured it)
    gain_db: float | None  # level_db - loudness_db once measured


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
    loudness_db: float | None  # source loudness (None: measured by the renderer, which records it)
    gain_db: float | None  # level_db - loudness_db when known
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


def _source_len(src: SourceInfo, sr: int) -> int:
    return max(1, int(math.floor(src.duration_s * sr)))


def _sequential_layout(
    rng: np.random.Generator, lengths: list[int], n: int, full: list[tuple[int, int]]
) -> list[int] | None:
    """Piece starts in order, each uniform over the onsets that miss the full regions and leave room for
    the pieces after it; None when a piece finds none."""
    starts, lo = [], 0
    for i, ln in enumerate(lengths):
        hi = n - sum(lengths[i + 1 :])  # this piece must end by hi
        shifted = [(max(fs, lo) - lo, min(fe, hi) - lo) for fs, fe in full if fe > lo and fs < hi]
        o = sample_feasible_onset(rng, ln, hi - lo, shifted)
        if o is None:
            return None
        starts.append(lo + o)
        lo += o + ln
    return starts


def _pick_type(rng: np.random.Generator, pool: SourcePool, cfg: MixtureConfig, notes: Counter) -> str:
    want_sfx = rng.random() < cfg.sfx_fraction
    first, other = ("sfx", "general") if want_sfx else ("general", "sfx")
    if pool.sfx if first == "sfx" else pool.general:
        return first
    notes["source_type_fallback"] += 1
    return other


def _pick_mode(rng: np.random.Generator, cfg: MixtureConfig) -> str:
    u = float(rng.random())
    if u < cfg.split_prob:
        return "split"
    return "repeat" if u < cfg.split_prob + cfg.repeat_prob else "single"


@dataclass
class _Draw:
    """One event's draws before placement: source, caption, level, mode and its pieces' source cuts."""

    src: SourceInfo
    caption: str
    snr: float
    mode: str
    seg_start: int
    seg_len: int
    lengths: list[int]
    src_starts: list[int]


def _draw_event(rng: np.random.Generator, pool: SourcePool, cfg: MixtureConfig, notes: Counter) -> _Draw:
    """Type, mode, then a source that can honour the mode (module doc), caption, SNR and source cuts."""
    sr, n = cfg.sample_rate, cfg.n_samples
    source_type = _pick_type(rng, pool, cfg, notes)
    mode = _pick_mode(rng, cfg)
    sources = pool.sources_for(source_type, mode, cfg)
    if not sources:
        notes[f"{mode}_no_source"] += 1
        mode, sources = "single", pool.sources_for(source_type, "single", cfg)
    src = sources[int(rng.integers(len(sources)))]
    caption = src.captions[int(rng.integers(len(src.captions)))]
    snr = float(rng.uniform(*cfg.snr_db))
    k_multi = int(rng.integers(cfg.split_pieces[0], cfg.split_pieces[1] + 1))
    k_rep = int(rng.integers(cfg.repeat_count[0], cfg.repeat_count[1] + 1))
    src_len = _source_len(src, sr)
    seg_len = min(src_len, n)
    seg_start = int(rng.integers(0, src_len - seg_len + 1))
    lengths, src_starts = [seg_len], [seg_start]
    if mode == "split":  # the source can hold >= 2 pieces (sources_for)
        min_piece = int(round(cfg.min_piece_s * sr))
        k = min(k_multi, seg_len // min_piece)
        lengths = [int(x) + min_piece for x in _partition(rng, seg_len - k * min_piece, k)]
        src_starts = [int(v) for v in seg_start + np.concatenate(([0], np.cumsum(lengths)[:-1]))]
    elif mode == "repeat":  # >= 2 copies fit the clip (sources_for)
        k = min(k_rep, n // seg_len)
        lengths, src_starts = [seg_len] * k, [seg_start] * k
    return _Draw(src, caption, snr, mode, seg_start, seg_len, lengths, src_starts)


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
        grid = cfg.offset_grid
        offset = grid * int(rng.integers(0, max(0, bg_len - n) // grid + 1))
        background = BackgroundSpec(bg.id, sec(offset), cfg.background_level_db, None, None)
    else:
        notes["no_background"] += 1

    n_events = int(rng.integers(cfg.min_events, cfg.max_events + 1))
    draws = [_draw_event(rng, pool, cfg, notes) for _ in range(n_events)]
    # multi-piece events are placed first (they need the room); events keep their drawn order in the spec
    order = sorted(range(n_events), key=lambda i: draws[i].mode == "single")
    placed: list[tuple[int, int]] = []
    events: dict[int, EventSpec] = {}
    for i in order:
        d = draws[i]
        mode, lengths, src_starts = d.mode, d.lengths, d.src_starts
        full = full_regions(placed, cfg.max_concurrent)
        dst_starts = None
        if mode != "single":
            for _ in range(cfg.max_placement_tries):
                cand = _layout(rng, lengths, n)
                if _fits([(s, s + ln) for s, ln in zip(cand, lengths, strict=True)], full):
                    dst_starts = cand
                    break
            else:  # crowded clip: place the pieces one by one among the free onsets
                for _ in range(cfg.max_placement_tries):
                    dst_starts = _sequential_layout(rng, lengths, n, full)
                    if dst_starts is not None:
                        break
            if dst_starts is None:
                notes["multi_fallback_single"] += 1
                mode = "single"
        if mode == "single":
            lengths, src_starts = [d.seg_len], [d.seg_start]
            onset = sample_feasible_onset(rng, d.seg_len, n, full)
            if onset is None:
                notes["unplaced"] += 1
                continue
            dst_starts = [onset]

        placed += [(s, s + ln) for s, ln in zip(dst_starts, lengths, strict=True)]
        level = cfg.background_level_db + d.snr
        # an event source longer than the clip is used as a window: its whole-file loudness does not apply
        loud = d.src.loudness_db if d.seg_len == _source_len(d.src, sr) else None
        events[i] = EventSpec(
            id=d.src.id,
            caption=d.caption,
            tags=list(d.src.tags),
            source_type=d.src.source_type,
            mode=mode,
            onset=sec(dst_starts[0]),
            snr_db=d.snr,
            level_db=level,
            loudness_db=loud,
            gain_db=None if loud is None else level - loud,
            pieces=[
                [sec(a), sec(b), sec(c)] for a, b, c in zip(src_starts, dst_starts, lengths, strict=True)
            ],
        )
    return MixtureSpec(
        seed=int(seed),
        index=int(index),
        sample_rate=sr,
        duration=float(cfg.duration_s),
        background=background,
        events=[events[i] for i in sorted(events)],
        notes=dict(sorted(notes.items())),
    )


def mode_counts(events: list[EventSpec]) -> dict[str, int]:
    """``{"events_single": a, "events_split": b, "events_repeat": c}`` of a spec's placed events."""
    c = Counter(e.mode for e in events)
    return {f"events_{m}": c.get(m, 0) for m in MODES}
