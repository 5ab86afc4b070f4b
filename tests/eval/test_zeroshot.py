"""eval.metrics.zeroshot: perfect / shuffled embeddings, per-class numbers, prompts."""

from __future__ import annotations

import numpy as np
import pytest

from eval.metrics.zeroshot import class_prompts, zeroshot_metrics


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_perfect_and_shuffled():
    rng = np.random.default_rng(0)
    classes = _unit(rng.normal(size=(10, 32)))
    labels = rng.integers(0, 10, size=500)
    audio = _unit(classes[labels] + 0.05 * rng.normal(size=(500, 32)))
    m = zeroshot_metrics(audio, classes, labels, class_names=[f"c{i}" for i in range(10)])
    assert m["top1"] == 1.0 and m["top5"] == 1.0 and m["balanced_top1"] == 1.0
    assert m["n_clips"] == 500 and m["n_classes"] == 10
    assert set(m["per_class"]) == {f"c{i}" for i in range(10)}
    assert sum(v["n"] for v in m["per_class"].values()) == 500

    shuffled = rng.permutation(labels)
    s = zeroshot_metrics(audio, classes, shuffled)
    assert s["top1"] == pytest.approx(0.1, abs=0.05)
    assert s["top5"] == pytest.approx(0.5, abs=0.08)


def test_hand_case_and_top5_only_when_meaningful():
    classes = np.eye(3)
    audio = np.array([[1.0, 0.0, 0.0], [0.0, 0.9, 0.1], [0.7, 0.3, 0.0], [0.0, 0.0, 1.0]])
    m = zeroshot_metrics(audio, classes, np.array([0, 1, 1, 2]), class_names=["a", "b", "c"])
    assert m["top1"] == pytest.approx(0.75)
    assert "top5" not in m  # 3 classes: top-5 is trivially 1
    assert m["per_class"]["b"] == {"top1": 0.5, "n": 2}
    assert m["balanced_top1"] == pytest.approx((1 + 0.5 + 1) / 3)


def test_ties_average():
    m = zeroshot_metrics(np.ones((4, 2)), np.ones((4, 2)), np.array([0, 1, 2, 3]))
    assert m["top1"] == pytest.approx(0.25)


def test_class_prompts():
    assert class_prompts(["Dog_bark", "car_horn", "  Children_playing "]) == [
        "dog bark",
        "car horn",
        "children playing",
    ]
    assert class_prompts(["Dog_bark"], "The sound of {}.") == ["the sound of dog bark"]
    with pytest.raises(ValueError, match="exactly one"):
        class_prompts(["dog"], "sound")
    with pytest.raises(ValueError, match="both give the prompt"):
        class_prompts(["dog_bark", "Dog bark"])


def test_label_checks():
    with pytest.raises(ValueError, match="labels"):
        zeroshot_metrics(np.eye(2), np.eye(2), np.array([0, 2]))
    with pytest.raises(ValueError, match="class names"):
        zeroshot_metrics(np.eye(2), np.eye(2), np.array([0, 1]), class_names=["a"])
