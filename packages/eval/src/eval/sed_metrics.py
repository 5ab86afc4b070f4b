"""SED metrics of frame scores against strong labels: PSDS1, MPAUC, frame AUROC and frame Spearman ρ.

    uv run python -m eval.sed_metrics --scores DIR --ground-truth TSV --durations TSV [--open-vocab] [--out JSON]

prints the JSON metrics block (what a report puts under ``metrics``); bad input is a one-line error on
stderr and exit code 2.

Inputs: ``scores`` — clip id -> score DataFrame (``eval.scores``: ``onset, offset, <text>...``) or a folder
of ``<clip_id>.tsv``; ``ground_truth`` — clip id -> [(onset, offset, label), ...] (or ``Event``s), a list of
``Event``s, or a TSV (``eval.readers.write_ground_truth_tsv``); ``durations`` — clip id -> seconds or a
``filename duration`` TSV. The clips evaluated are those of ``durations``; every one needs scores, and
ground truth may leave out clips without events (ground truth or scores for a clip not in ``durations``
is an error). Labels and score columns go through ``normalize_text``. Events are cut at the clip's
duration; overlapping or touching events of one label in a clip are merged (``sed_scores_eval`` requires
it; frame labels do not change).

Metrics (all threshold-free):

* ``psds1`` — PSDS scenario 1 (DTC = GTC = 0.7, no cross-triggers: alpha_ct = 0, alpha_st = 1,
  max eFPR 100/h) by ``sed_scores_eval.intersection_based.psds``. Closed set only (undefined when each
  clip has its own texts), over the classes that have events.
* ``mpauc`` — segment-based partial AUROC up to FPR 0.1 on 1-s segments, mean over classes with both
  positive and negative segments: DCASE's MAESTRO metric, equal to
  ``sed_scores_eval.segment_based.auroc(..., segment_length=1, max_fpr=0.1)`` (pAUC / max_fpr, no McClish
  correction), computed here vectorised. ``mpauc_mcclish`` is the McClish-corrected value
  (``sklearn.metrics.roc_auc_score(max_fpr=0.1)``). A segment's score is the largest score of the frames
  that overlap it (the ``sed_scores_eval`` rule); its label comes from ``frame_activity`` on the 1-s grid.
  Closed set only, like PSDS.
* ``auroc`` — frame-level AUROC on the model's frame grid (``hop_s`` = 0.3125 s; n = ceil(duration / hop)
  frames of ``[l, l + 1) · hop``): labels from ``model.text_slots.frame_activity(segments, n · hop, n)`` (the
  project's one frame-label rule; segments cut at the clip's duration), scores the score frames on that
  grid (score files written by ``eval.scores.frame_scores_frame`` are on it already; other grids take the
  largest overlapping score). Closed set: pooled over every (clip, class, frame); ``per_class`` per class.
  Open vocabulary (§5.2): TPR and FPR are counted only over the events present in each clip — only the
  (clip, text) pairs whose text is one of the clip's events contribute frames (other columns of a clip's
  scores are ignored), pooled over all of them.
* ``spearman`` — alignment (App. C.11): Spearman ρ between a captioned event's frame probabilities and its
  binary frame labels in its clip, for every (clip, text) pair with the text among the clip's events, mean
  over the pairs whose labels have both values. Pairs whose labels are constant (the event covers the
  whole clip) are left out (counted in ``spearman_counts.constant_labels``); a constant score vector
  against non-constant labels has no ranking information and counts as ρ = 0 (``constant_scores``;
  scipy would give NaN). Ties are ranked by their average rank, as in ``scipy.stats.spearmanr``.

Undefined values (no positives or no negatives) are JSON ``null``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from eval.readers import Event, merge_segments, read_durations_tsv, read_ground_truth_tsv
from eval.scores import HOP_S, read_scores_dir
from model.text_slots import frame_activity, normalize_text

MPAUC_SEGMENT_S = 1.0
MPAUC_MAX_FPR = 0.1
PSDS1 = dict(
    dtc_threshold=0.7, gtc_threshold=0.7, cttc_threshold=None, alpha_ct=0.0, alpha_st=1.0, max_efpr=100.0
)
TIME_DECIMALS = 6


# ---------------------------------------------------------------- inputs


@dataclass
class ClipData:
    clip: str
    duration: float
    times: np.ndarray  # [T + 1] frame boundaries (s)
    values: np.ndarray  # [T, K] scores, column order = columns
    columns: list[str]  # normalised score columns
    col: dict[str, int]  # column -> index
    events: dict[str, list[tuple[float, float]]]  # label -> merged segments inside [0, duration]


@dataclass
class EvalData:
    """Validated inputs of one evaluation (``prepare``); frame/segment arrays are built on first use."""

    clips: list[ClipData]
    open_vocab: bool
    hop_s: float
    classes: list[str] | None  # closed set: the score columns (all clips share them)
    skipped: dict[str, Counter] = field(default_factory=dict)
    _frames: dict | None = None
    _segments: tuple | None = None

    @property
    def n_events(self) -> int:
        return sum(len(s) for c in self.clips for s in c.events.values())

    @property
    def classes_with_events(self) -> list[str]:
        present = {lab for c in self.clips for lab in c.events}
        return [c for c in (self.classes or []) if c in present]


def _load_durations(durations: Any, skipped: dict[str, Counter]) -> dict[str, float]:
    if isinstance(durations, str | os.PathLike):
        res = read_durations_tsv(durations)
        if res.skipped:
            skipped["durations"] = res.skipped
        durations = res.durations
    if not isinstance(durations, Mapping):
        raise ValueError(f"durations must be a dict or a TSV path, got {type(durations).__name__}")
    out = {}
    for clip, d in durations.items():
        d = float(d)
        if not (math.isfinite(d) and d > 0):
            raise ValueError(f"duration of clip {clip!r} must be a positive finite number, got {d}")
        out[str(clip)] = d
    if not out:
        raise ValueError("no clips: durations is empty")
    return out


def _load_ground_truth(ground_truth: Any, skipped: dict[str, Counter]) -> dict[str, list]:
    if isinstance(ground_truth, str | os.PathLike):
        res = read_ground_truth_tsv(ground_truth)
        if res.skipped:
            skipped["ground_truth"] = res.skipped
        return res.ground_truth()
    if isinstance(ground_truth, Mapping):
        return {str(k): list(v) for k, v in ground_truth.items()}
    if isinstance(ground_truth, Iterable):
        out: dict[str, list] = {}
        for ev in ground_truth:
            if not isinstance(ev, Event):
                raise ValueError(f"ground truth items must be Events, got {type(ev).__name__}")
            out.setdefault(ev.filename, []).append(ev.as_tuple())
        return out
    raise ValueError(
        f"ground_truth must be a dict, a list of Events or a TSV path, got {type(ground_truth).__name__}"
    )


def _event_tuple(clip: str, ev: Any) -> tuple[float, float, str]:
    if isinstance(ev, Event):
        return ev.as_tuple()
    try:
        on, off, label = ev
        on, off = float(on), float(off)
    except (TypeError, ValueError):
        raise ValueError(f"clip {clip!r}: ground-truth event {ev!r} is not (onset, offset, label)") from None
    if not isinstance(label, str):
        raise ValueError(f"clip {clip!r}: event label {label!r} is not a string")
    if not (math.isfinite(on) and math.isfinite(off)) or off < on:
        raise ValueError(f"clip {clip!r}: invalid event [{on}, {off}] {label!r}")
    return on, off, label


def _ids_error(what: str, ids: Iterable[str]) -> ValueError:
    ids = sorted(ids)
    more = f" and {len(ids) - 5} more" if len(ids) > 5 else ""
    return ValueError(f"{what}: {', '.join(repr(i) for i in ids[:5])}{more}")


def prepare(
    scores: Mapping[str, pd.DataFrame] | str | os.PathLike,
    ground_truth: Any,
    durations: Mapping[str, float] | str | os.PathLike,
    *,
    open_vocab: bool = False,
    hop_s: float = HOP_S,
) -> EvalData:
    """Load (paths) and validate the inputs of ``sed_metrics``; ValueError / FileNotFoundError on bad input."""
    if not (hop_s > 0 and math.isfinite(hop_s)):
        raise ValueError(f"hop_s must be a positive number, got {hop_s}")
    skipped: dict[str, Counter] = {}
    durs = _load_durations(durations, skipped)
    gt = _load_ground_truth(ground_truth, skipped)
    if isinstance(scores, str | os.PathLike):
        scores = read_scores_dir(scores)
    if not isinstance(scores, Mapping):
        raise ValueError(f"scores must be a dict of DataFrames or a folder path, got {type(scores).__name__}")
    if missing := durs.keys() - scores.keys():
        raise _ids_error(f"{len(missing)} clips have a duration but no scores", missing)
    if extra := scores.keys() - durs.keys():
        raise _ids_error(f"{len(extra)} clips have scores but no duration", extra)
    if extra := gt.keys() - durs.keys():
        raise _ids_error(f"{len(extra)} clips have ground truth but no duration", extra)

    norm_cache: dict[tuple, list[str]] = {}
    label_cache: dict[str, str] = {}
    classes: list[str] | None = None
    dropped = 0
    clips = []
    for clip in sorted(durs):
        df = scores[clip]
        if not isinstance(df, pd.DataFrame):
            raise ValueError(f"scores of {clip!r}: expected a DataFrame, got {type(df).__name__}")
        raw_cols = tuple(df.columns)
        cols = norm_cache.get(raw_cols)
        if cols is None:
            if len(raw_cols) < 3 or raw_cols[0] != "onset" or raw_cols[1] != "offset":
                raise ValueError(
                    f"scores of {clip!r}: columns must be onset, offset, <text>...; got {list(raw_cols)[:5]}"
                )
            cols = [normalize_text(str(c)) for c in raw_cols[2:]]
            if len(set(cols)) != len(cols) or not all(cols):
                raise ValueError(f"scores of {clip!r}: score columns are empty or repeat after normalisation")
            norm_cache[raw_cols] = cols
        if not open_vocab:
            if classes is None:
                classes = cols
            elif cols != classes:
                if set(cols) != set(classes):
                    diff = sorted(set(cols) ^ set(classes))[:5]
                    raise ValueError(
                        f"scores of {clip!r}: columns differ from the other clips' (e.g. {diff}); "
                        "use open_vocab for per-clip texts"
                    )
        a = df.to_numpy(dtype=np.float64)
        if a.shape[0] == 0:
            raise ValueError(f"scores of {clip!r}: no frames")
        if not np.isfinite(a).all():
            raise ValueError(f"scores of {clip!r}: non-finite times or scores")
        times = np.concatenate([a[:, 0], a[-1:, 1]])
        if (np.diff(times) <= 0).any() or (a.shape[0] > 1 and np.abs(a[:-1, 1] - a[1:, 0]).max() > 1e-6):
            raise ValueError(f"scores of {clip!r}: frames must be contiguous with positive length")
        values = a[:, 2:]
        col = {c: i for i, c in enumerate(cols)}
        if not open_vocab and cols != classes:
            values = values[:, [col[c] for c in classes]]
            cols, col = classes, {c: i for i, c in enumerate(classes)}
        d = durs[clip]
        by_label: dict[str, list[tuple[float, float]]] = {}
        for ev in gt.get(clip, []):
            on, off, raw = _event_tuple(clip, ev)
            label = label_cache.get(raw)
            if label is None:
                label = label_cache[raw] = normalize_text(raw)
            if label not in col:
                where = "the score columns" if not open_vocab else f"the score columns of clip {clip!r}"
                raise ValueError(f"clip {clip!r}: ground-truth label {label!r} is not among {where}")
            on, off = max(on, 0.0), min(off, d)
            if off > on:
                by_label.setdefault(label, []).append((on, off))
            else:
                dropped += 1
        events = {lab: merge_segments(segs) for lab, segs in by_label.items()}
        clips.append(ClipData(clip, d, times, values, cols, col, events))
    if dropped:
        skipped.setdefault("ground_truth", Counter())["event_outside_clip"] += dropped
    return EvalData(clips, open_vocab, float(hop_s), classes, skipped)


# ---------------------------------------------------------------- grids


def n_grid(duration: float, step: float) -> int:
    """Frames of ``step`` seconds that cover ``duration`` (ceil, robust to float rounding)."""
    return max(1, math.ceil(round(duration / step, TIME_DECIMALS)))


def segment_max(times: np.ndarray, values: np.ndarray, step: float, n: int) -> np.ndarray:
    """[n, K] scores on the grid ``[i, i + 1) · step``: per grid cell the largest score of the frames that
    overlap it, 0 where none does — the rule of ``sed_scores_eval.segment_based`` (times rounded to
    6 decimals)."""
    ts = np.round(times, TIME_DECIMALS)
    t_frames = len(ts) - 1
    if n == t_frames and np.abs(ts[:-1] - np.arange(n) * step).max() <= 1e-6:
        return values  # already on the grid (the last frame may be cut at the duration)
    b = np.round(np.arange(n + 1) * step, TIME_DECIMALS)
    lo = np.maximum(np.searchsorted(ts, b[:-1], side="right") - 1, 0)
    hi = np.minimum(np.searchsorted(ts, b[1:], side="left"), t_frames)
    padded = np.concatenate([values, np.zeros((1, values.shape[1]))])
    red = np.maximum.reduceat(padded, np.stack([lo, hi], 1).ravel(), axis=0)[::2]
    red[hi <= lo] = 0.0
    return red


def grid_labels(events: Sequence[tuple[float, float]], step: float, n: int) -> np.ndarray:
    """bool [n] labels of the grid ``[i, i + 1) · step`` by ``frame_activity`` (segments already cut at the
    clip's duration)."""
    return frame_activity(events, n * step, n)


# ---------------------------------------------------------------- ranking helpers


def auroc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve (ties count 1/2: equal to ``sklearn.metrics.roc_auc_score``); None when
    the labels have one value only."""
    labels = np.asarray(labels, dtype=bool).ravel()
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    r = rankdata(np.asarray(scores, dtype=np.float64).ravel())
    return float((r[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_points(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct threshold, from (0, 0), sorted by fpr then tpr."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(y, dtype=np.int64)[last]
    fps = last + 1 - tps
    return np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]]


def partial_auroc(scores: np.ndarray, labels: np.ndarray, max_fpr: float) -> tuple[float, float] | None:
    """(pAUC / max_fpr, McClish-corrected pAUC) of the ROC curve up to ``max_fpr`` (linear interpolation at
    max_fpr); None when the labels have one value only. The first equals
    ``sed_scores_eval``'s ``auroc(max_fpr=...)``, the second ``sklearn``'s ``roc_auc_score(max_fpr=...)``."""
    labels = np.asarray(labels, dtype=bool).ravel()
    n_pos = int(labels.sum())
    if n_pos == 0 or n_pos == labels.size:
        return None
    fpr, tpr = roc_points(np.asarray(scores, dtype=np.float64).ravel(), labels)
    stop = int(np.searchsorted(fpr, max_fpr, side="right"))
    x0, x1, y0, y1 = fpr[stop - 1], fpr[stop], tpr[stop - 1], tpr[stop]
    y_cut = y0 + (max_fpr - x0) / (x1 - x0) * (y1 - y0)
    x, y = np.r_[fpr[:stop], max_fpr], np.r_[tpr[:stop], y_cut]
    area = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))
    min_area, max_area = 0.5 * max_fpr**2, max_fpr
    return area / max_fpr, 0.5 * (1.0 + (area - min_area) / (max_area - min_area))


def rowwise_spearman(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Spearman ρ per row of [R, n] scores against [R, n] binary labels (each row with both label values);
    a row of constant scores gives 0."""
    n = scores.shape[1]
    rs = rankdata(scores, axis=1)
    k = labels.sum(1, keepdims=True).astype(np.float64)
    # average ranks of a binary vector: the n - k zeros share (n - k + 1) / 2, the k ones n - k + (k + 1) / 2
    ry = np.where(labels, n - k + (k + 1) / 2.0, (n - k + 1) / 2.0)
    rs = rs - rs.mean(1, keepdims=True)
    ry = ry - ry.mean(1, keepdims=True)
    den = np.sqrt((rs * rs).sum(1) * (ry * ry).sum(1))
    num = (rs * ry).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return np.clip(rho, -1.0, 1.0)


# ---------------------------------------------------------------- frame rows


def frame_rows(data: EvalData) -> dict[int, dict[str, np.ndarray]]:
    """Per frame count n: ``scores`` [R, n], ``labels`` bool [R, n], ``cls`` [R] (class index, closed set;
    -1 in open vocabulary), ``present`` bool [R] — one row per evaluated (clip, text) pair on the frame grid."""
    if data._frames is not None:
        return data._frames
    hop = data.hop_s
    groups: dict[int, dict[str, list]] = {}
    for c in data.clips:
        n = n_grid(c.duration, hop)
        grid = segment_max(c.times, c.values, hop, n)
        g = groups.setdefault(n, {"scores": [], "labels": [], "cls": [], "present": []})
        if data.open_vocab:
            labels = list(c.events)
            idx = [c.col[lab] for lab in labels]
            g["scores"].append(grid[:, idx].T)
            g["labels"].append(
                np.stack([grid_labels(c.events[lab], hop, n) for lab in labels])
                if labels
                else np.zeros((0, n), dtype=bool)
            )
            g["cls"].append(np.full(len(labels), -1))
            g["present"].append(np.ones(len(labels), dtype=bool))
        else:
            y = np.zeros((len(c.columns), n), dtype=bool)
            present = np.zeros(len(c.columns), dtype=bool)
            for lab, segs in c.events.items():
                y[c.col[lab]] = grid_labels(segs, hop, n)
                present[c.col[lab]] = True
            g["scores"].append(grid.T)
            g["labels"].append(y)
            g["cls"].append(np.arange(len(c.columns)))
            g["present"].append(present)
    data._frames = {n: {k: np.concatenate(v) for k, v in g.items()} for n, g in sorted(groups.items())}
    return data._frames


def segment_rows(data: EvalData) -> tuple[np.ndarray, np.ndarray]:
    """Closed set: [S, K] scores and bool labels of every 1-s segment of every clip (rows of all clips)."""
    if data._segments is not None:
        return data._segments
    step = MPAUC_SEGMENT_S
    s_list, y_list = [], []
    for c in data.clips:
        n = n_grid(c.duration, step)
        s_list.append(segment_max(c.times, c.values, step, n))
        y = np.zeros((n, len(c.columns)), dtype=bool)
        for lab, segs in c.events.items():
            y[:, c.col[lab]] = grid_labels(segs, step, n)
        y_list.append(y)
    data._segments = (np.concatenate(s_list), np.concatenate(y_list))
    return data._segments


# ---------------------------------------------------------------- metrics


def _mean(values: Iterable[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def _psds_deltas(data: EvalData, keep: list[str]) -> dict[str, dict[str, tuple]] | None:
    """The per-(clip, class) intersection-based deltas of ``sed_scores_eval`` computed from our arrays: the
    loop of ``sed_scores_eval.base_modules.statistics._worker`` calling the library's own functions
    (acceleration_fn, onset_offset_curves, statistics_fn, _deltas_from_intermediate_statistics), without
    its per-clip DataFrame validation and column selection (half of its time). ``psds(deltas=...)`` is the
    library's documented entry for precomputed deltas. None when those functions cannot be imported (a
    changed library): the caller then lets ``psds`` compute everything."""
    try:
        from sed_scores_eval.base_modules.cy_detection import onset_offset_curves
        from sed_scores_eval.base_modules.statistics import _deltas_from_intermediate_statistics
        from sed_scores_eval.intersection_based.intermediate_statistics import acceleration_fn, statistics_fn
    except ImportError:  # pragma: no cover
        return None
    kw = {k: PSDS1[k] for k in ("dtc_threshold", "gtc_threshold", "cttc_threshold")}
    kw["time_decimals"] = TIME_DECIMALS
    assert kw["cttc_threshold"] is None  # other classes' events only matter for cross-triggers
    empty = np.empty(0)
    deltas = {}
    for c in data.clips:
        per_class = {}
        for name in keep:
            x = c.values[:, c.col[name]]
            segs = c.events.get(name)
            on, off = np.asarray(segs, dtype=np.float64).T if segs else (empty, empty)
            gt_kw = dict(
                target_onset_times=on, target_offset_times=off, other_onset_times={}, other_offset_times={}
            )
            candidates, cp_scores, d = acceleration_fn(scores=x, timestamps=c.times, **gt_kw, **kw)
            if cp_scores is None:
                unique, det_on, det_off = onset_offset_curves(x, c.times, candidates)
                stats = statistics_fn(
                    detection_onset_times=det_on, detection_offset_times=det_off, **gt_kw, **kw
                )
                cp_scores, d = _deltas_from_intermediate_statistics(unique, stats)
            per_class[name] = (cp_scores, d)
        deltas[c.clip] = per_class
    return deltas


def psds1_score(data: EvalData) -> tuple[float | None, dict[str, float]]:
    """PSDS1 and per-class PSDS by ``sed_scores_eval.intersection_based.psds`` over the classes that have
    events (closed set)."""
    if data.open_vocab:
        raise ValueError("PSDS is undefined in open-vocabulary evaluation")
    import sed_scores_eval

    keep = data.classes_with_events
    if not keep:
        return None, {}
    gt = {c.clip: [(on, off, lab) for lab, segs in c.events.items() for on, off in segs] for c in data.clips}
    durs = {c.clip: c.duration for c in data.clips}
    deltas = _psds_deltas(data, keep)
    scores = None
    if deltas is None:  # pragma: no cover
        scores = {}
        for c in data.clips:
            arr = np.concatenate(
                [c.times[:-1, None], c.times[1:, None], c.values[:, [c.col[k] for k in keep]]], 1
            )
            scores[c.clip] = pd.DataFrame(arr, columns=["onset", "offset", *keep])
    value, per_class, *_ = sed_scores_eval.intersection_based.psds(scores, gt, durs, deltas=deltas, **PSDS1)
    return float(value), {k: float(v) for k, v in per_class.items()}


def mpauc_score(data: EvalData) -> tuple[float | None, float | None, dict[str, float], dict[str, float]]:
    """(mpauc, mpauc_mcclish, per-class pAUC, per-class McClish pAUC) on 1-s segments (closed set)."""
    if data.open_vocab:
        raise ValueError("MPAUC is a class average; undefined in open-vocabulary evaluation")
    s, y = segment_rows(data)
    plain, mcc = {}, {}
    for k, cls in enumerate(data.classes or []):
        r = partial_auroc(s[:, k], y[:, k], MPAUC_MAX_FPR)
        if r is not None:
            plain[cls], mcc[cls] = r
    return _mean(plain.values()), _mean(mcc.values()), plain, mcc


def frame_auroc(data: EvalData) -> tuple[float | None, dict[str, float], int]:
    """(pooled frame AUROC, per-class AUROC (closed set), number of frames pooled)."""
    groups = list(frame_rows(data).values())
    if not groups:
        return None, {}, 0
    s = np.concatenate([g["scores"].ravel() for g in groups])
    y = np.concatenate([g["labels"].ravel() for g in groups])
    per_class = {}
    if not data.open_vocab:
        for k, name in enumerate(data.classes or []):
            rows = [g["cls"] == k for g in groups]
            v = auroc(
                np.concatenate([g["scores"][r].ravel() for g, r in zip(groups, rows, strict=True)]),
                np.concatenate([g["labels"][r].ravel() for g, r in zip(groups, rows, strict=True)]),
            )
            if v is not None:
                per_class[name] = v
    return auroc(s, y), per_class, int(s.size)


def frame_spearman(data: EvalData) -> tuple[float | None, dict[str, float], dict[str, int]]:
    """(mean Spearman ρ over captioned events, per-class mean (closed set), counts)."""
    rhos, classes = [], []
    counts = Counter(events=0, constant_labels=0, constant_scores=0)
    for n, g in frame_rows(data).items():
        sel = g["present"]
        s, y, cls = g["scores"][sel], g["labels"][sel], g["cls"][sel]
        k = y.sum(1)
        ok = (k > 0) & (k < n)
        counts["constant_labels"] += int((~ok).sum())
        if not ok.any():
            continue
        s, y, cls = s[ok], y[ok], cls[ok]
        counts["constant_scores"] += int((s.max(1) == s.min(1)).sum())
        rhos.append(rowwise_spearman(s, y))
        classes.append(cls)
    rho = np.concatenate(rhos) if rhos else np.zeros(0)
    cls = np.concatenate(classes) if classes else np.zeros(0, dtype=int)
    counts["events"] = int(rho.size)
    per_class = {}
    if not data.open_vocab and rho.size:
        sums = np.bincount(cls, weights=rho, minlength=len(data.classes or []))
        nums = np.bincount(cls, minlength=len(data.classes or []))
        per_class = {name: float(sums[i] / nums[i]) for i, name in enumerate(data.classes or []) if nums[i]}
    return (float(rho.mean()) if rho.size else None), per_class, dict(counts)


def sed_metrics(
    scores: Mapping[str, pd.DataFrame] | str | os.PathLike,
    ground_truth: Any,
    durations: Mapping[str, float] | str | os.PathLike,
    *,
    open_vocab: bool = False,
    hop_s: float = HOP_S,
    psds: bool = True,
) -> dict[str, Any]:
    """The metrics block (see the module docstring): ``psds1`` (closed set, with ``psds``), ``mpauc`` and
    ``mpauc_mcclish`` (closed set), ``auroc``, ``spearman`` (+ ``spearman_counts``), ``per_class`` (closed
    set), ``n_clips``, ``n_events``, ``n_frames``, and ``skipped`` rows of input files when there were any."""
    data = prepare(scores, ground_truth, durations, open_vocab=open_vocab, hop_s=hop_s)
    out: dict[str, Any] = {
        "n_clips": len(data.clips),
        "n_events": data.n_events,
        "open_vocab": open_vocab,
        "hop_s": data.hop_s,
    }
    per_class: dict[str, dict[str, float]] = {}
    if not open_vocab:
        out["n_classes"] = len(data.classes or [])
        out["classes_without_events"] = [
            c for c in data.classes or [] if c not in set(data.classes_with_events)
        ]
        if psds:
            out["psds1"], per_class["psds1"] = psds1_score(data)
        out["mpauc"], out["mpauc_mcclish"], per_class["mpauc"], per_class["mpauc_mcclish"] = mpauc_score(data)
    out["auroc"], auroc_pc, out["n_frames"] = frame_auroc(data)
    out["spearman"], spearman_pc, out["spearman_counts"] = frame_spearman(data)
    if not open_vocab:
        per_class["auroc"], per_class["spearman"] = auroc_pc, spearman_pc
        out["per_class"] = per_class
    if data.skipped:
        out["skipped"] = {k: dict(v) for k, v in data.skipped.items()}
    return out


# ---------------------------------------------------------------- CLI


def _write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eval.sed_metrics", description=__doc__.split("\n")[0])
    ap.add_argument("--scores", required=True, help="folder of <clip_id>.tsv score files")
    ap.add_argument("--ground-truth", required=True, help="TSV: filename onset offset event_label")
    ap.add_argument("--durations", required=True, help="TSV: filename duration (the clips evaluated)")
    ap.add_argument(
        "--open-vocab", action="store_true", help="score each clip only against its own events' texts"
    )
    ap.add_argument("--hop-s", type=float, default=HOP_S, help="frame grid of the frame-level metrics (s)")
    ap.add_argument("--no-psds", action="store_true", help="leave out PSDS1 (the slowest metric)")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)
    try:
        metrics = sed_metrics(
            args.scores,
            args.ground_truth,
            args.durations,
            open_vocab=args.open_vocab,
            hop_s=args.hop_s,
            psds=not args.no_psds,
        )
        if args.out:
            _write_json_atomic(Path(args.out), metrics)
    except (OSError, ValueError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
