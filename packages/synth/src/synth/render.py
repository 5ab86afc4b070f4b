"""Render a MixtureSpec to audio + relabeled event segments.

- Each event is built on its own short track covering only its span (pieces with gain and fades), so
  relabeling A-weights just that span (plus 0.1 s of filter ring-down) instead of the whole clip; with an
  AudioCache, the middle of a long piece costs nothing per sample (see event_block_energies).
- Fades: raised-cosine ramps f[k] = 0.5 - 0.5*cos(pi*(k + 0.5)/L), L = 10 ms (or half the piece when
  shorter), fade-in on the first L samples and its mirror on the last L samples of every piece.
  f[k] + f[L-1-k] = 1, so a piece's fade-out and a butting piece's fade-in sum to unity.
- Levels (§4.2: events U(6, 30) dB relative to the background): the background gain sets the loudness of
  the 10-s window actually used (measured from the source's A-weighted block energies, see
  synth.loudness.window_loudness_db) to ``level_db``; an event without a gain in its spec is measured over
  the part of its source the pieces cover (the whole file for sources no longer than the clip). The
  measured values are written into the spec (``loudness_db``, ``gain_db``), so the stored spec says what
  was measured and re-renders the same bytes. A silent background window gets gain 0 (note
  ``background_silent``).
- Relabeling runs on the event's gained track BEFORE clip scaling: labels depend only on the spec (its
  gains), not on what the other events do to the mix peak; the threshold is -70 dBFS on that track by
  default, or relative to the event's level (RelabelConfig.threshold_ref, see synth.relabel). If the summed
  mix would exceed cfg.max_peak, the whole mix is scaled down (labels unchanged; RenderedMixture.clip_scale
  records the factor).
- Everything is deterministic numpy/scipy arithmetic: the same spec gives the same bytes.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from synth.loudness import (
    a_weighting_sos,
    block_energies,
    frame_block,
    frame_power_from_blocks,
    measure_loudness_db,
    n_frames_for,
    sosfilt_inplace,
    source_block_energies,
    window_loudness_db,
)
from synth.relabel import merge_labels_by_text, relabel_frame_power
from synth.spec import BackgroundSpec, EventSpec, MixtureConfig, MixtureSpec

SourceLoader = Callable[[str], np.ndarray]
WHOLE_SOURCE_SLACK = 0.1  # s: pieces covering all but this much of a decoded source use all of it


@dataclass
class RenderedMixture:
    audio: np.ndarray  # float32 [n]
    event_labels: list[dict]  # {text, tags, source_id, source_ids, segments: [[on, off], ...]}, one per text
    dropped_events: int  # events with no active frame (dropped from labels)
    clip_scale: float  # 1.0, or the factor the mix was scaled down by to avoid clipping
    notes: dict[str, int] = field(default_factory=dict)


@lru_cache(maxsize=64)
def fade_in_ramp(length: int) -> np.ndarray:
    """Raised-cosine fade-in of `length` samples: 0.5 - 0.5*cos(pi*(k + 0.5)/length)."""
    k = np.arange(length, dtype=np.float64)
    r = (0.5 - 0.5 * np.cos(np.pi * (k + 0.5) / length)).astype(np.float32)
    r.setflags(write=False)
    return r


def apply_fades(piece: np.ndarray, fade_len: int) -> None:
    """In place: fade-in on the first and mirrored fade-out on the last min(fade_len, len//2) samples."""
    L = min(int(fade_len), len(piece) // 2)
    if L <= 0:
        return
    r = fade_in_ramp(L)
    piece[:L] *= r
    piece[len(piece) - L :] *= r[::-1]


def db_to_gain(db: float) -> float:
    return 10.0 ** (db / 20.0)


def _samples(t: float, sr: int) -> int:
    return int(round(t * sr))


def event_gain(ev: EventSpec, x: np.ndarray, loader: SourceLoader, sr: int) -> float:
    """Linear gain of an event: from the spec, or measured now and recorded in ``ev`` (module doc)."""
    if ev.gain_db is None:
        a = min(_samples(p[0], sr) for p in ev.pieces)
        b = max(_samples(p[0], sr) + _samples(p[2], sr) for p in ev.pieces)
        meas = getattr(loader, "loudness_db", None)
        if b - a < len(x) - WHOLE_SOURCE_SLACK * sr:  # a window of a long source: measure what is used
            loud = measure_loudness_db(x[a:b], sr)
        else:
            loud = meas(ev.id) if callable(meas) else measure_loudness_db(x, sr)
        if not math.isfinite(loud):
            return 0.0  # silent source: contributes nothing (the event then gets dropped by relabel)
        ev.loudness_db, ev.gain_db = float(loud), float(ev.level_db - loud)
    return db_to_gain(ev.gain_db)


def background_gain(
    bg: BackgroundSpec, x: np.ndarray, loader: SourceLoader, cfg: MixtureConfig, notes: Counter
) -> float:
    """Linear gain of the background: from the spec, or from the loudness of the window used, measured now
    and recorded in ``bg``; 0 (note ``background_silent``) for a silent window."""
    if bg.gain_db is None:
        sr, n = cfg.sample_rate, cfg.n_samples
        offset = _samples(bg.offset, sr)
        if offset % cfg.offset_grid:
            raise ValueError(
                f"render_mixture: background {bg.id!r} offset {bg.offset} s is not on the "
                f"{cfg.offset_grid}-sample grid; give its gain_db in the spec"
            )
        blocks = getattr(loader, "block_energy", None)
        rc = cfg.relabel
        e = (
            blocks(bg.id, rc.win, rc.hop)
            if callable(blocks)
            else source_block_energies(x, sr, rc.win, rc.hop)
        )
        loud = window_loudness_db(e, offset, n, rc.win, rc.hop)
        if not math.isfinite(loud):
            notes["background_silent"] += 1
            return 0.0
        bg.loudness_db, bg.gain_db = float(loud), float(bg.level_db - loud)
    return db_to_gain(bg.gain_db)


def _slice(x: np.ndarray, start: int, length: int, notes: Counter) -> np.ndarray:
    seg = x[start : start + length]
    if len(seg) < length:  # decoded length can differ from the manifest duration by a few samples
        notes["source_short_padded"] += 1
        seg = np.concatenate([seg, np.zeros(length - len(seg), dtype=np.float32)])
    return seg


def scale_to_peak(x: np.ndarray, max_peak: float) -> float:
    """In place: scale float32 ``x`` down so that its peak is ``max_peak`` when it is above; the factor
    (1.0 when untouched). The one clip guard of mixtures and audio-text clips."""
    peak = float(max(x.max(initial=0.0), -x.min(initial=0.0)))
    if peak <= max_peak:
        return 1.0
    scale = max_peak / peak
    x *= np.float32(scale)
    np.clip(x, -max_peak, max_peak, out=x)  # float32 rounding of the product
    return scale


def build_event_track(
    x: np.ndarray, pieces: list[tuple[int, int, int]], gain: float, fade_len: int
) -> tuple[int, np.ndarray, Counter]:
    """(span start, float32 track over the event span) with every piece placed, gained and faded."""
    notes: Counter = Counter()
    span0 = min(d for _, d, _ in pieces)
    span1 = max(d + ln for _, d, ln in pieces)
    track = np.zeros(span1 - span0, dtype=np.float32)
    g = np.float32(gain)
    for s, d, ln in pieces:
        out = track[d - span0 : d - span0 + ln]
        np.multiply(_slice(x, s, ln, notes), g, out=out)
        apply_fades(out, fade_len)
    return span0, track, notes


def event_block_energies(
    track: np.ndarray,
    span0: int,
    pieces: list[tuple[int, int, int]],
    energy_csum: np.ndarray | None,
    gain: float,
    sr: int,
    tail: int,
    n: int,
    blk: int,
) -> tuple[int, np.ndarray]:
    """Block energies (blocks of `blk` samples from block j0) of an event's A-weighted track.

    By linearity the filtered track is the sum of each piece filtered from rest, plus `tail` samples of
    ring-down per piece. A piece longer than 4 x tail whose source has a cached cumulative A-weighted
    energy (`energy_csum[k]` = sum of A(x)^2 over the first k samples) costs no per-sample work in its
    middle: its first `tail` samples are filtered from rest (exact, includes the fade-in), its middle
    energy is gain^2 * (csum[b] - csum[a]) per block (the start-up transient that the cached filtering
    lacks has decayed by > 100 dB after 0.1 s: A-weighting's slowest poles sit at 20.6 Hz), and its last
    `tail` samples + ring-down are filtered after a `tail`-sample warm-up (includes the fade-out). These
    ranges never overlap a middle, so energies add. Other pieces are filtered whole. The clip ends at n.
    """
    sos = a_weighting_sos(sr)
    m = tail  # head/tail length = ring-down length: keeps every middle clear of other ranges
    stop = min(n, span0 + len(track) + tail)
    j0 = span0 // blk
    energies = np.zeros(max(0, -(-stop // blk) - j0), dtype=np.float64)
    parts: list[tuple[int, np.ndarray]] = []  # (clip sample, filtered samples)
    g2 = float(gain) * float(gain)
    for s, d, ln in pieces:
        seg = track[d - span0 : d - span0 + ln]
        if energy_csum is None or ln <= 4 * m or s + ln >= len(energy_csum):
            buf = np.zeros(ln + tail, dtype=np.float64)
            buf[:ln] = seg
            parts.append((d, sosfilt_inplace(sos, buf)))
            continue
        parts.append((d, sosfilt_inplace(sos, seg[:m].astype(np.float64))))
        c0, c1 = d + m, d + ln - m
        jlo, jhi = c0 // blk, -(-c1 // blk)
        edges = np.arange(jlo, jhi + 1, dtype=np.int64) * blk
        edges[0], edges[-1] = c0, c1  # inner block edges already lie in (c0, c1)
        edges += s - d
        energies[jlo - j0 : jhi - j0] += g2 * np.diff(energy_csum[edges])
        buf = np.zeros(2 * m + tail, dtype=np.float64)
        buf[: 2 * m] = seg[ln - 2 * m :]
        parts.append((d + ln - m, sosfilt_inplace(sos, buf)[m:]))
    merged: list[tuple[int, np.ndarray]] = []  # a ring-down can reach into the next piece's first samples
    for a, arr in sorted(parts, key=lambda p: p[0]):
        if merged and a < merged[-1][0] + len(merged[-1][1]):
            a0, prev = merged[-1]
            buf = np.zeros(max(a0 + len(prev), a + len(arr)) - a0, dtype=np.float64)
            buf[: len(prev)] = prev
            buf[a - a0 : a - a0 + len(arr)] += arr
            merged[-1] = (a0, buf)
        else:
            merged.append((a, arr))
    for a, arr in merged:
        if a < n:
            ja, e = block_energies(arr[: n - a], a, blk)
            energies[ja - j0 : ja - j0 + len(e)] += e
    return j0, energies


def render_mixture(
    spec: MixtureSpec,
    source_loader: SourceLoader,
    cfg: MixtureConfig | None = None,
    timings: dict[str, float] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> RenderedMixture:
    """Mix background + events of a spec, relabel every event (App. C.4), guard against clipping.

    Gains the spec lacks are measured and written into it (module doc). timings: when given, seconds (by
    `clock`) spent in "load", "mix" and "relabel" are added to it.
    """
    tick = clock
    t_start = tick()
    t_load = t_relabel = 0.0
    cfg = cfg or MixtureConfig()
    sr = spec.sample_rate
    if sr != cfg.sample_rate:
        raise ValueError(f"render_mixture: spec sample rate {sr} != config sample rate {cfg.sample_rate}")
    n = _samples(spec.duration, sr)
    fade_len = _samples(cfg.fade_s, sr)
    tail = _samples(cfg.relabel.tail_s, sr)
    blk = frame_block(cfg.relabel.win, cfg.relabel.hop)
    n_frames = n_frames_for(n, cfg.relabel.hop)
    notes: Counter = Counter()

    mix = np.zeros(n, dtype=np.float32)
    bg = spec.background
    if bg is not None:
        t0 = tick()
        x = source_loader(bg.id)
        t_load += tick() - t0
        g = background_gain(bg, x, source_loader, cfg, notes)
        np.multiply(_slice(x, _samples(bg.offset, sr), n, notes), np.float32(g), out=mix)

    labels, dropped = [], 0
    energy_fn = getattr(source_loader, "weighted_energy", None)
    energy_fn = energy_fn if callable(energy_fn) else None
    for ev in spec.events:
        t0 = tick()
        x = source_loader(ev.id)
        t_load += tick() - t0
        g = event_gain(ev, x, source_loader, sr)
        pieces = [(_samples(a, sr), _samples(b, sr), _samples(c, sr)) for a, b, c in ev.pieces]
        if not pieces or any(d < 0 or d + ln > n or ln <= 0 for _, d, ln in pieces):
            raise ValueError(
                f"render_mixture: event {ev.id!r} of spec {spec.index} has pieces outside the clip"
            )
        span0, track, tnotes = build_event_track(x, pieces, g, fade_len)
        notes.update(tnotes)
        mix[span0 : span0 + len(track)] += track
        t0 = tick()
        long_piece = any(ln > 4 * tail for _, _, ln in pieces)  # else the cached energy is not used
        csum = energy_fn(ev.id) if energy_fn is not None and long_piece else None
        j0, energies = event_block_energies(track, span0, pieces, csum, g, sr, tail, n, blk)
        power = frame_power_from_blocks(energies, j0, n_frames, cfg.relabel.win, cfg.relabel.hop)
        segments = relabel_frame_power(power, sr, n / sr, cfg.relabel, ev.level_db)
        t_relabel += tick() - t0
        if not segments:
            dropped += 1
            continue
        labels.append({"text": ev.caption, "tags": list(ev.tags), "source_id": ev.id, "segments": segments})

    clip_scale = scale_to_peak(mix, cfg.max_peak)
    t0 = tick()
    merged = merge_labels_by_text(labels)
    t_end = tick()
    if timings is not None:
        t_relabel += t_end - t0
        for key, val in (
            ("load", t_load),
            ("relabel", t_relabel),
            ("mix", t_end - t_start - t_load - t_relabel),
        ):
            timings[key] = timings.get(key, 0.0) + val
    return RenderedMixture(mix, merged, dropped, clip_scale, dict(sorted(notes.items())))
