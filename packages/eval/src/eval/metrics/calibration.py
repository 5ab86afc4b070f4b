"""Frame-wise calibration (paper Fig. 3): precision, recall and F1 of thresholded frame probabilities.

All frames of all clips and texts are pooled (micro average). A frame is predicted active when its probability
is ``>= threshold`` (the rule of ``FLAM.detect``), so threshold 0 predicts every frame and recall is 1.

* precision = TP / (TP + FP); when nothing is predicted it is defined as **1.0** (no false alarms; the
  scikit-learn convention), so the curve stays finite; F1 is then 0 whenever there are positive frames.
* recall = TP / (TP + FN); NaN when there is no positive frame at all (then F1 is NaN too).
* F1 = 2·TP / (2·TP + FP + FN).
* ``best_threshold``: the threshold of the largest F1 (the lowest such threshold on a tie); ``f1_at_0.5`` is
  evaluated at 0.5 exactly, whether or not 0.5 is among ``thresholds``.

Counting is vectorised: the pooled scores and the positive scores are sorted once and every threshold is a
binary search, O((n + n_thresholds) log n) for n frames (10^7 frames take about a second).

Frame labels must follow the project's one frame rule; ``frame_labels`` builds them with
``model.text_slots.frame_activity`` on the model's output grid (frame l covers [l, l+1)·hop_s).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from model.text_slots import frame_activity, normalize_text

HOP_S = 0.3125  # FLAM output frame hop (32 frames per 10 s)


def _pool(probs: Sequence[np.ndarray] | np.ndarray, labels: Sequence[np.ndarray] | np.ndarray):  # noqa: ANN202
    if isinstance(probs, np.ndarray):
        probs = [probs]
    if isinstance(labels, np.ndarray):
        labels = [labels]
    if len(probs) != len(labels):
        raise ValueError(f"{len(probs)} probability arrays but {len(labels)} label arrays")
    ps, ys = [], []
    for i, (p, y) in enumerate(zip(probs, labels, strict=True)):
        p = np.asarray(p, dtype=np.float64)
        y = np.asarray(y)
        if p.shape != y.shape:
            raise ValueError(f"item {i}: probabilities {p.shape} and labels {y.shape} differ in shape")
        if not np.all(np.isfinite(p)):
            raise ValueError(f"item {i}: probabilities contain NaN or infinite values")
        if y.dtype != bool:
            if not np.all((y == 0) | (y == 1)):
                raise ValueError(f"item {i}: labels must be boolean or 0/1")
            y = y.astype(bool)
        ps.append(p.ravel())
        ys.append(y.ravel())
    if not ps:
        return np.zeros(0), np.zeros(0, dtype=bool)
    return np.concatenate(ps), np.concatenate(ys)


def _counts(sorted_all: np.ndarray, sorted_pos: np.ndarray, thresholds: np.ndarray):  # noqa: ANN202
    """(predicted, true positives) for ``score >= threshold`` at each threshold."""
    predicted = sorted_all.size - np.searchsorted(sorted_all, thresholds, side="left")
    tp = sorted_pos.size - np.searchsorted(sorted_pos, thresholds, side="left")
    return predicted.astype(np.int64), tp.astype(np.int64)


def _prf(predicted: np.ndarray, tp: np.ndarray, n_pos: int):  # noqa: ANN202
    predicted = predicted.astype(np.float64)
    tp = tp.astype(np.float64)
    precision = np.divide(tp, predicted, out=np.ones_like(tp), where=predicted > 0)
    if n_pos > 0:
        recall = tp / n_pos
        f1 = 2 * tp / (predicted + n_pos)
    else:
        recall = np.full_like(tp, np.nan)
        f1 = np.full_like(tp, np.nan)
    return precision, recall, f1


def f1_curve(
    probs: Sequence[np.ndarray] | np.ndarray,
    labels: Sequence[np.ndarray] | np.ndarray,
    thresholds: Iterable[float] | np.ndarray | None = None,
) -> dict:
    """Pooled frame-wise precision / recall / F1 against threshold.

    ``probs``: list of [K, T] probability arrays (any shapes, one per clip), ``labels``: matching bool arrays.
    ``thresholds`` default ``np.linspace(0, 1, 101)``. Returns ``{"threshold", "precision", "recall", "f1"}``
    (lists), ``"best_threshold"``, ``"best_f1"``, ``"f1_at_0.5"``, ``"precision_at_0.5"``, ``"recall_at_0.5"``,
    ``"n_frames"``, ``"n_positive"``."""
    th = np.linspace(0.0, 1.0, 101) if thresholds is None else np.asarray(list(thresholds), dtype=np.float64)
    if th.ndim != 1 or th.size == 0 or not np.all(np.isfinite(th)):
        raise ValueError("thresholds must be a non-empty 1-D sequence of finite numbers")
    p, y = _pool(probs, labels)
    sorted_all = np.sort(p)
    sorted_pos = np.sort(p[y])
    n_pos = int(sorted_pos.size)
    precision, recall, f1 = _prf(*_counts(sorted_all, sorted_pos, th), n_pos)
    p05, r05, f05 = (float(v[0]) for v in _prf(*_counts(sorted_all, sorted_pos, np.array([0.5])), n_pos))
    if np.all(np.isnan(f1)):
        best_threshold, best_f1 = float("nan"), float("nan")
    else:
        i = int(np.nanargmax(f1))
        best_threshold, best_f1 = float(th[i]), float(f1[i])
    return {
        "threshold": th.tolist(),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "best_threshold": best_threshold,
        "best_f1": best_f1,
        "f1_at_0.5": f05,
        "precision_at_0.5": p05,
        "recall_at_0.5": r05,
        "n_frames": int(p.size),
        "n_positive": n_pos,
    }


def frame_labels(
    texts: Sequence[str],
    events: Iterable[Sequence] | Mapping[str, Sequence[Sequence[float]]],
    n_frames: int,
    hop_s: float = HOP_S,
) -> np.ndarray:
    """bool [len(texts), n_frames] frame labels on the model's output grid (frame l = [l, l+1)·hop_s).

    ``events``: ``(onset, offset, label)`` triples or a mapping ``label -> [[onset, offset], ...]``; labels
    are matched to ``texts`` by ``normalize_text``; events of other labels are ignored. Activity is
    ``model.text_slots.frame_activity(segments, n_frames * hop_s, n_frames)`` (the project's one rule)."""
    segs: dict[str, list[list[float]]] = {}
    items = events.items() if isinstance(events, Mapping) else ((ev[2], [ev[:2]]) for ev in events)
    for label, seg_list in items:
        segs.setdefault(normalize_text(str(label)), []).extend([float(s[0]), float(s[1])] for s in seg_list)
    out = np.zeros((len(texts), n_frames), dtype=bool)
    for i, text in enumerate(texts):
        found = segs.get(normalize_text(text))
        if found:
            out[i] = frame_activity(found, n_frames * hop_s, n_frames)
    return out
