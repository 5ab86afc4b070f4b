"""eval.metrics.calibration: f1_curve against a brute-force threshold loop; frame_labels uses the one rule."""

from __future__ import annotations

import time

import numpy as np
import pytest

from eval.metrics.calibration import f1_curve, frame_labels
from model.text_slots import frame_activity


def _brute(probs, labels, thresholds):
    p = np.concatenate([x.ravel() for x in probs])
    y = np.concatenate([x.ravel() for x in labels]).astype(bool)
    rows = []
    for t in thresholds:
        pred = p >= t
        tp = int(np.sum(pred & y))
        fp = int(np.sum(pred & ~y))
        fn = int(np.sum(~pred & y))
        prec = tp / (tp + fp) if tp + fp else 1.0
        rec = tp / (tp + fn)
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        rows.append((prec, rec, f1))
    return np.array(rows)


def test_matches_brute_force_on_random_data():
    rng = np.random.default_rng(0)
    probs, labels = [], []
    for _ in range(7):
        k, t = rng.integers(1, 6), rng.integers(1, 60)
        y = rng.random((k, t)) < 0.3
        p = np.clip(0.35 * y + 0.65 * rng.random((k, t)), 0, 1)
        p[rng.random((k, t)) < 0.1] = 0.5  # exact hits on a threshold
        probs.append(np.round(p, 2))
        labels.append(y)
    th = np.linspace(0, 1, 101)
    c = f1_curve(probs, labels, th)
    ref = _brute(probs, labels, th)
    np.testing.assert_allclose(c["precision"], ref[:, 0], atol=1e-12)
    np.testing.assert_allclose(c["recall"], ref[:, 1], atol=1e-12)
    np.testing.assert_allclose(c["f1"], ref[:, 2], atol=1e-12)
    i = int(np.argmax(ref[:, 2]))
    assert c["best_threshold"] == pytest.approx(th[i]) and c["best_f1"] == pytest.approx(ref[i, 2])
    assert c["f1_at_0.5"] == pytest.approx(_brute(probs, labels, [0.5])[0, 2])
    assert c["recall"][0] == 1.0  # threshold 0: every frame predicted
    assert c["n_frames"] == sum(p.size for p in probs)
    assert c["n_positive"] == sum(int(y.sum()) for y in labels)


def test_custom_thresholds_and_edge_cases():
    p = [np.array([[0.2, 0.8, 0.9]])]
    y = [np.array([[False, True, False]])]
    c = f1_curve(p, y, thresholds=[0.95, 0.85, 0.5])
    assert c["precision"] == [1.0, 0.0, 0.5]  # nothing predicted at 0.95 → precision 1.0 by definition
    assert c["recall"] == [0.0, 0.0, 1.0]
    assert c["f1"][0] == 0.0 and c["f1"][2] == pytest.approx(2 / 3)
    assert c["best_threshold"] == 0.5
    no_pos = f1_curve([np.array([0.1, 0.7])], [np.array([0, 0])])
    assert np.isnan(no_pos["best_f1"]) and np.isnan(no_pos["recall"][0])
    with pytest.raises(ValueError, match="shape"):
        f1_curve([np.zeros((2, 3))], [np.zeros((2, 4), dtype=bool)])
    with pytest.raises(ValueError, match="NaN"):
        f1_curve([np.array([np.nan])], [np.array([True])])


def test_fast_on_ten_million_frames():
    rng = np.random.default_rng(1)
    probs = [rng.random((10, 100_000), dtype=np.float32) for _ in range(10)]
    labels = [rng.random((10, 100_000)) < 0.2 for _ in range(10)]
    t0 = time.perf_counter()
    c = f1_curve(probs, labels)
    assert time.perf_counter() - t0 < 10.0
    assert c["n_frames"] == 10_000_000
    assert c["best_f1"] == pytest.approx(2 * 0.2 / 1.2, abs=0.01)  # random scores: best = predict all


def test_frame_labels_use_frame_activity():
    events = [(0.5, 1.0, "Dog bark"), (3.0, 3.1, "dog bark!"), (2.0, 9.0, "car")]
    lab = frame_labels(["dog bark", "siren", "Car"], events, n_frames=32)
    assert lab.shape == (3, 32) and lab.dtype == bool
    np.testing.assert_array_equal(lab[0], frame_activity([[0.5, 1.0], [3.0, 3.1]], 10.0, 32))
    assert not lab[1].any()
    np.testing.assert_array_equal(lab[2], frame_activity([[2.0, 9.0]], 10.0, 32))
    as_map = frame_labels(["car"], {"car": [[2.0, 9.0]]}, n_frames=32)
    np.testing.assert_array_equal(as_map[0], lab[2])
